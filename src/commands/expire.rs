//! expire: apply the retention policy (retention.rs), then delete what nothing retained needs:
//! expired manifests first (a backup is gone once its manifest is), then WAL older than every
//! retained backup needs, then unreferenced blocks (repo/gc.rs), under a `gc` lease.

use super::{emit, open_repo};
use crate::clock;
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result};
use crate::repo::Repository;
use crate::repo::gc::{self, GcReport};
use crate::repo::lease::{self, Lease, LeaseKind};
use crate::repo::manifest::{self, BackupType, Manifest};
use crate::repo::stanza::{self, StanzaDb};
use crate::retention::{self, FullRetention, Policy, WalKeep};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Expired {
    pub label: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ExpireReport {
    pub stanza: String,
    pub dry_run: bool,
    pub expired: Vec<Expired>,
    pub kept: Vec<String>,
    pub manifest_bytes: u64,
    pub wal_files: u64,
    pub wal_bytes: u64,
    /// First and last WAL file removed, per cluster record.
    pub wal_ranges: BTreeMap<u32, (String, String)>,
    /// Restore-point documents removed with their WAL segments, and their bytes.
    pub restore_points: u64,
    pub restore_point_bytes: u64,
    pub gc: Option<GcReport>,
    /// Why garbage collection did not run this time.
    pub gc_postponed: Option<String>,
    pub stale_leases_removed: u64,
    pub warnings: Vec<String>,
    /// What the repository shrank by (or would, with --dry-run: an estimate for rewritten packs).
    pub freed_bytes: i64,
}

impl ExpireReport {
    pub fn summary_lines(&self) -> Vec<String> {
        let would = if self.dry_run {
            "would expire"
        } else {
            "expired"
        };
        let mut out = Vec::new();
        for e in &self.expired {
            out.push(format!("{would} backup {}: {}", e.label, e.reason));
        }
        if self.wal_files > 0 {
            for (db, (a, b)) in &self.wal_ranges {
                out.push(format!(
                    "{would} WAL of cluster {db:04} from {a} to {b} (not needed by any retained backup)"
                ));
            }
            out.push(format!(
                "{would} {} WAL file(s), {}",
                self.wal_files,
                mib(self.wal_bytes as i64)
            ));
        }
        if self.restore_points > 0 {
            out.push(format!(
                "{would} the restore points recorded in {} of those WAL file(s)",
                self.restore_points
            ));
        }
        if let Some(g) = &self.gc {
            out.push(format!(
                "garbage collection{}: {} live blocks; {} of {} packs deleted, {} rewritten ({} of live blocks moved), {} orphaned pack(s), {} index segment(s) replaced",
                if self.dry_run { " (dry run)" } else { "" },
                g.live_blocks,
                g.packs_deleted,
                g.packs_total,
                g.packs_rewritten,
                mib(g.bytes_moved as i64),
                g.orphan_packs,
                g.segments_replaced
            ));
        }
        if let Some(g) = self.gc.as_ref().filter(|g| g.staging_files > 0) {
            out.push(format!(
                "removed {} staging file(s) left by killed writers ({})",
                g.staging_files,
                mib(g.staging_bytes as i64)
            ));
        }
        if let Some(p) = &self.gc_postponed {
            out.push(format!("garbage collection postponed: {p}"));
        }
        out.push(format!(
            "{} {} ({} bytes)",
            if self.dry_run { "would free" } else { "freed" },
            mib(self.freed_bytes),
            self.freed_bytes
        ));
        out
    }
}

fn mib(b: i64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

pub fn policy(settings: &Settings) -> Result<Policy> {
    let num = |name: &str| -> Result<Option<u32>> {
        match settings.get(name) {
            None => Ok(None),
            Some(v) => match v.value.trim().parse::<u32>() {
                Ok(n) if (1..=9999).contains(&n) => Ok(Some(n)),
                _ => Err(Error::config(format!(
                    "invalid value '{}' for option {name} (from {}): expected a whole number from 1 to 9999",
                    v.value, v.source
                ))),
            },
        }
    };
    let full = match (
        num("retention-full")?,
        settings.string("retention-full-type"),
    ) {
        (None, _) => None,
        (Some(n), None | Some("count")) => Some(FullRetention::Count(n)),
        (Some(n), Some("time")) => Some(FullRetention::Days(n)),
        (_, Some(other)) => {
            return Err(Error::config(format!(
                "invalid retention-full-type '{other}': expected count or time"
            )));
        }
    };
    let archive_type = match settings.string("retention-archive-type").unwrap_or("full") {
        "full" => BackupType::Full,
        "diff" => BackupType::Diff,
        "incr" => BackupType::Incr,
        other => {
            return Err(Error::config(format!(
                "invalid retention-archive-type '{other}': expected full, diff or incr"
            )));
        }
    };
    Ok(Policy {
        full,
        diff: num("retention-diff")?,
        archive: num("retention-archive")?.map(|n| (n, archive_type)),
    })
}

/// Reads every manifest of the stanza, oldest label first. Garbage collection must know every
/// reference, so an unreadable manifest stops expire rather than being skipped.
pub async fn read_all(repo: &Repository, stanza: &str) -> Result<Vec<Manifest>> {
    let (good, bad) = manifest::read_each(repo, stanza).await?;
    match bad.into_iter().next() {
        None => Ok(good),
        Some((_, e)) => Err(e.hint(
            "expire needs every manifest to know which blocks are in use; run 'pgfrost verify', and remove a backup that cannot be repaired with 'pgfrost expire --set LABEL'",
        )),
    }
}

pub fn segno_of(name: &str, seg_size: u64) -> u64 {
    crate::pg::wal::WalFile::parse(name)
        .and_then(|f| f.segno(seg_size))
        .unwrap_or(0)
}

pub fn retention_view(m: &Manifest, dbs: &[StanzaDb]) -> retention::Backup {
    let seg_size = stanza::seg_size(dbs, m.db_id);
    retention::Backup {
        label: m.label.clone(),
        kind: m.kind,
        parent: m.parent.clone(),
        db_id: m.db_id,
        timeline: m.timeline,
        start_unix: m.start_unix,
        stop_unix: m.stop_unix,
        start_segno: segno_of(&m.start_wal, seg_size),
        stop_segno: segno_of(&m.stop_wal, seg_size),
    }
}

/// What one expire run is asked to do beyond the policy.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    pub dry_run: bool,
    /// Backups named with --set: exactly these expire, instead of what the policy says.
    pub sets: Vec<String>,
}

/// What expire is asked, read from the settings before any work.
#[derive(Debug, Clone)]
pub struct ExpireOptions {
    pub policy: Policy,
    pub ask: Ask,
    pub store: super::StoreOptions,
}

impl ExpireOptions {
    /// The policy and store options from the settings, with `ask` (what the command line asks
    /// beyond the policy; nothing for expire-auto).
    pub fn from_settings(settings: &Settings, ask: Ask) -> Result<ExpireOptions> {
        Ok(ExpireOptions {
            policy: policy(settings)?,
            ask,
            store: super::StoreOptions::from_settings(settings)?,
        })
    }
}

pub async fn run(settings: &Settings) -> Result<()> {
    let stanza_name = settings.required("stanza")?.to_string();
    let ask = Ask {
        dry_run: settings.flag("dry-run")?,
        sets: settings
            .string("set")
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    };
    let opts = ExpireOptions::from_settings(settings, ask)?;
    let repo = open_repo(settings).await?;
    let r = expire_with(&opts, &repo, &stanza_name).await?;
    emit(
        settings,
        &r.summary_lines().join("\n"),
        serde_json::to_value(&r).expect("report serializes"),
    );
    Ok(())
}

/// Applies retention and collects garbage; also run after every backup (expire-auto, whose
/// options the backup reads before it starts).
pub async fn expire_with(
    opts: &ExpireOptions,
    repo: &Repository,
    stanza: &str,
) -> Result<ExpireReport> {
    let dry_run = opts.ask.dry_run;
    let dbs = stanza::history(repo, stanza).await?;
    let current = dbs.last().ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!("stanza '{stanza}' does not exist"),
        )
        .hint("create it with 'pgfrost stanza-create'")
    })?;
    let mut report = ExpireReport {
        stanza: stanza.to_string(),
        dry_run,
        ..Default::default()
    };
    // A dry run changes nothing, so it needs no lease.
    let lease = if dry_run {
        None
    } else {
        Some(Lease::acquire(&repo.store, stanza, LeaseKind::Gc, "expire").await?)
    };
    let at = Cluster {
        repo,
        stanza,
        dbs: &dbs,
        current_db: current.id,
    };
    let r = expire_leased(opts, &at, lease.as_ref(), &mut report).await;
    if let Some(l) = lease {
        l.release().await;
    }
    r?;
    for w in &report.warnings {
        log::warn!("{w}");
    }
    Ok(report)
}

/// The stanza expire works on: its repository, name and cluster records.
struct Cluster<'a> {
    repo: &'a Repository,
    stanza: &'a str,
    dbs: &'a [StanzaDb],
    current_db: u32,
}

async fn expire_leased(
    opts: &ExpireOptions,
    at: &Cluster<'_>,
    lease: Option<&Lease>,
    report: &mut ExpireReport,
) -> Result<()> {
    let dry_run = lease.is_none();
    let (repo, stanza) = (at.repo, at.stanza);
    // Stale leases go before the manifests are read: a backup whose lease is removed here
    // withdraws itself if it ever resumes (repo/lease.rs).
    let (others, stale) =
        lease::others_removing_stale(&repo.store, stanza, lease, !dry_run).await?;
    report.stale_leases_removed += stale;

    let manifests = read_all(repo, stanza).await?;
    let backups: Vec<retention::Backup> = manifests
        .iter()
        .map(|m| retention_view(m, at.dbs))
        .collect();
    let sets: Vec<&str> = opts.ask.sets.iter().map(String::as_str).collect();
    let pol = &opts.policy;
    let plan = if sets.is_empty() {
        retention::plan(&backups, pol, clock::now_unix(), at.current_db)
    } else {
        named(&backups, &sets, pol, at.current_db)?
    };
    report.warnings.extend(plan.warnings.iter().cloned());
    report.kept = plan.keep.clone();
    expire_manifests(repo, stanza, &plan, dry_run, report).await?;

    // WAL: only with a policy that speaks about it (or backups named by hand).
    if pol.archive_rule().is_some() {
        expire_wal(at, &plan, dry_run, report).await?;
    }

    // Blocks: only when nothing else holds a lease (a backup could be about to reference a
    // block that looks dead; a restore could be reading a pack that is being rewritten).
    if let Some(busy) = others.first() {
        report.gc_postponed = Some(format!(
            "{} is active; the next expire collects what this one could not",
            busy.describe()
        ));
    } else {
        let retained: Vec<Manifest> = manifests
            .into_iter()
            .filter(|m| plan.keep.contains(&m.label))
            .collect();
        let may = match lease {
            Some(l) => l.may_collect()?,
            None => lease::MayCollect::dry_run(),
        };
        report.gc = Some(collect_blocks(opts, repo, stanza, &retained, may, dry_run).await?);
    }
    report.freed_bytes = (report.manifest_bytes + report.wal_bytes + report.restore_point_bytes)
        as i64
        + report.gc.as_ref().map(GcReport::freed).unwrap_or(0);
    Ok(())
}

/// The manifests of the backups the plan expires: a backup is gone once its manifest is.
async fn expire_manifests(
    repo: &Repository,
    stanza: &str,
    plan: &retention::Plan,
    dry_run: bool,
    report: &mut ExpireReport,
) -> Result<()> {
    for (label, reason) in &plan.expire {
        let p = manifest::path(stanza, label);
        report.manifest_bytes += repo.store.size(&p).await.unwrap_or(0);
        if !dry_run {
            repo.store.delete(&p).await?;
            // The report says it (and backup's, after an auto-expire): debug, not twice.
            log::debug!("expire: backup {label} expired: {reason}");
        }
        report.expired.push(Expired {
            label: label.clone(),
            reason: reason.clone(),
        });
    }
    Ok(())
}

/// WAL no retained backup needs, with the restore points found in it.
async fn expire_wal(
    at: &Cluster<'_>,
    plan: &retention::Plan,
    dry_run: bool,
    report: &mut ExpireReport,
) -> Result<()> {
    let (repo, stanza, dbs, current_db) = (at.repo, at.stanza, at.dbs, at.current_db);
    let (wal, _) = stanza::list_wal(repo, stanza).await?;
    let seg_size = |db: u32| stanza::seg_size(dbs, db);
    let keeps = |db: u32, file: &crate::pg::wal::WalFile| {
        let rule = plan.wal.get(&db).cloned().unwrap_or(if db == current_db {
            WalKeep::All
        } else {
            WalKeep::Nothing
        });
        match file.segno(seg_size(db)) {
            Some(n) => rule.keeps(file.tli(), n),
            None => rule != WalKeep::Nothing,
        }
    };
    let mut doomed: Vec<_> = wal.iter().filter(|w| !keeps(w.db_id, &w.file)).collect();
    // A restore point goes with the segment it was found in: recovery cannot reach it
    // without that segment.
    let doomed_points: Vec<crate::store::Listed> = crate::repo::points::list_objects(repo, stanza)
        .await?
        .into_iter()
        .filter(|(_, db, f)| !keeps(*db, f))
        .map(|(l, _, _)| l)
        .collect();
    doomed.sort_by_key(|w| (w.db_id, w.file.segno(seg_size(w.db_id)), w.file.tli()));
    for w in &doomed {
        let name = w.file.to_string();
        let e = report
            .wal_ranges
            .entry(w.db_id)
            .or_insert((name.clone(), name.clone()));
        e.1 = name;
        report.wal_files += 1;
        report.wal_bytes += w.size;
    }
    report.restore_points = doomed_points.len() as u64;
    report.restore_point_bytes = doomed_points.iter().map(|l| l.size).sum();
    if !dry_run {
        // Points first: a point always has its segment stored, even if expire dies between.
        futures::future::try_join_all(doomed_points.iter().map(|l| repo.store.delete(&l.path)))
            .await?;
        futures::future::try_join_all(doomed.iter().map(|w| repo.store.delete(&w.path))).await?;
    }
    Ok(())
}

/// Garbage collection of the blocks the retained backups do not reference.
async fn collect_blocks(
    opts: &ExpireOptions,
    repo: &Repository,
    stanza: &str,
    retained: &[Manifest],
    may: lease::MayCollect<'_>,
    dry_run: bool,
) -> Result<GcReport> {
    // Empty: collection loads every index segment itself, once.
    let bs = opts.store.open_empty(repo, stanza);
    gc::collect(&bs, may, &repo.store, stanza, retained, dry_run)
        .await
        .map_err(|e| {
            let e = e.context("garbage collection stopped (the repository stays consistent; the next expire resumes)");
            if e.hint.is_some() {
                e
            } else {
                e.hint("run 'pgfrost verify' to find what is damaged or missing")
            }
        })
}

/// `--set`: exactly the named backups expire, whatever depends on them (every manifest is
/// complete on its own). The newest backup is refused: expiring it by hand is almost always a
/// slip, and it is what the next incremental would build on.
fn named(
    backups: &[retention::Backup],
    sets: &[&str],
    pol: &Policy,
    current_db: u32,
) -> Result<retention::Plan> {
    let newest = backups
        .iter()
        .max_by_key(|b| (b.stop_unix, b.start_unix, b.label.clone()));
    for s in sets {
        if !backups.iter().any(|b| b.label == *s) {
            return Err(
                Error::new(ErrorKind::NotFound, format!("no backup {s} to expire"))
                    .hint("'pgfrost info' lists the backups"),
            );
        }
        if newest.is_some_and(|n| n.label == *s) {
            return Err(Error::config(format!(
                "backup {s} is the newest backup; expire refuses to remove it by hand"
            ))
            .hint("take a newer backup first"));
        }
    }
    let kept: Vec<retention::Backup> = backups
        .iter()
        .filter(|b| !sets.contains(&b.label.as_str()))
        .cloned()
        .collect();
    // WAL follows the policy over what remains (nothing further expires by policy here).
    let mut plan = retention::plan(
        &kept,
        &Policy {
            full: None,
            diff: None,
            archive: pol.archive_rule(),
        },
        0,
        current_db,
    );
    plan.warnings.clear();
    plan.expire = sets
        .iter()
        .map(|s| (s.to_string(), "named with --set".to_string()))
        .collect();
    Ok(plan)
}
