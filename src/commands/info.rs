//! info: what the repository holds, per stanza, for people (text) and scripts (json).

use super::expire::segno_of;
use super::{emit, open_repo};
use crate::clock;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::pg::wal;
use crate::repo::Repository;
use crate::repo::manifest::{self, Manifest};
use crate::repo::outcome;
use crate::repo::stanza::{self, StanzaDb, WalObject, seg_size};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct BackupInfo {
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub parent: Option<String>,
    pub db_id: u32,
    pub timeline: u32,
    pub start_time: String,
    pub stop_time: String,
    /// The same, in Unix seconds (for scripts and metrics).
    pub stop_unix: i64,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub start_wal: String,
    pub stop_wal: String,
    pub logical_bytes: u64,
    /// Bytes this backup added to the repository (sealed, compressed, new blocks only).
    pub stored_bytes: u64,
    /// logical_bytes / stored_bytes: how much restorable data each stored byte bought.
    pub dedup_ratio: f64,
    pub duration_seconds: f64,
    pub files: u64,
    pub checksum_errors: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineInfo {
    pub db_id: u32,
    pub timeline: u32,
    pub first: String,
    pub last: String,
    pub segments: u64,
    /// Segments missing between first and last.
    pub missing: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// The timeline recovery follows to reach this window's end.
    pub timeline: u32,
    /// The earliest point reachable: the end of the oldest backup from which WAL is continuous
    /// to the end of the archive.
    pub from_time: String,
    pub from_unix: i64,
    pub from_backup: String,
    pub from_lsn: String,
    /// The end of the archive: the last WAL segment and when it was stored.
    pub to_time: String,
    pub to_unix: i64,
    pub to_wal: String,
    pub to_lsn: String,
}

/// A restore point recorded from the WAL archive (`--type name` targets).
#[derive(Debug, Clone, Serialize)]
pub struct PointInfo {
    pub name: String,
    pub db_id: u32,
    pub timeline: u32,
    /// Where its record starts, and where it ends: the LSN pg_create_restore_point() returned
    /// and the server logged ("created at"), which the text output shows.
    pub lsn: String,
    pub end_lsn: String,
    /// When pg_create_restore_point() ran (RFC 3339, UTC, microseconds).
    pub time: String,
    /// The WAL segment its record ends in.
    pub wal: String,
}

/// The newest recorded verify or drill, and the newest that passed (crate::repo::outcome).
#[derive(Debug, Clone, Serialize, Default)]
pub struct RunInfo {
    pub last: Option<RunOutcome>,
    pub last_success_unix: Option<i64>,
    pub last_success_time: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub passed: bool,
    pub ended_unix: i64,
    pub ended_time: String,
    pub duration_seconds: f64,
    /// The drill's backup.
    pub backup: Option<String>,
    pub summary: String,
}

impl RunInfo {
    fn from(l: outcome::Latest) -> RunInfo {
        RunInfo {
            last: l.last.map(|d| RunOutcome {
                passed: d.passed,
                ended_unix: d.ended_unix,
                ended_time: clock::rfc3339(d.ended_unix),
                duration_seconds: d.duration_seconds,
                backup: d.backup,
                summary: d.summary,
            }),
            last_success_unix: l.last_passed.as_ref().map(|d| d.ended_unix),
            last_success_time: l.last_passed.as_ref().map(|d| clock::rfc3339(d.ended_unix)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Sizes {
    pub packs: u64,
    pub index: u64,
    pub manifests: u64,
    pub wal: u64,
    pub other: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StanzaInfo {
    pub name: String,
    pub system_id: String,
    pub pg_major: u32,
    pub backups: Vec<BackupInfo>,
    pub wal: Vec<TimelineInfo>,
    /// The timeline of the newest backup: the one the cluster that last ran `backup` (the
    /// primary) was on. A timeline without backups is a branch a restored cluster made.
    pub primary_timeline: Option<u32>,
    /// The window on the primary's timeline (recovery to the end of its archive).
    pub recovery_window: Option<Window>,
    /// The window on each timeline of the current cluster's WAL.
    pub recovery_windows: Vec<Window>,
    /// Restore points, oldest first.
    pub restore_points: Vec<PointInfo>,
    /// When the newest WAL segment of the current cluster was stored (Unix seconds).
    pub newest_wal_unix: Option<i64>,
    /// Backups whose manifest cannot be read (run verify).
    pub unreadable: Vec<String>,
    pub size: Sizes,
    pub verify: RunInfo,
    pub drill: RunInfo,
}

pub async fn run(settings: &Settings) -> Result<()> {
    let repo = open_repo(settings).await?;
    let names = match settings.string("stanza") {
        Some(s) => vec![s.to_string()],
        None => {
            let mut v = Vec::new();
            for d in repo.store.list_dirs("").await? {
                if !repo.store.list(&format!("{d}/db")).await?.is_empty() {
                    v.push(d);
                }
            }
            v
        }
    };
    let mut stanzas = Vec::new();
    for n in &names {
        stanzas.push(stanza_info(&repo, n).await?);
    }
    let repo_total: u64 = repo.store.list("").await?.iter().map(|l| l.size).sum();
    if settings.string("output") == Some("prometheus") {
        let text = prometheus(&repo.store.location().to_string(), repo_total, &stanzas);
        return match settings.string("output-file") {
            Some(f) => write_atomic(Path::new(f), &text),
            None => {
                print!("{text}");
                Ok(())
            }
        };
    }
    let mut text = String::new();
    for s in &stanzas {
        text.push_str(&render(s));
    }
    text.push_str(&format!(
        "repository {}: {}",
        repo.store.location(),
        human(repo_total)
    ));
    emit(
        settings,
        &text,
        json!({"repository": repo.store.location().to_string(), "size_bytes": repo_total, "stanzas": stanzas}),
    );
    Ok(())
}

fn human(b: u64) -> String {
    let f = b as f64;
    if f >= 1073741824.0 {
        format!("{:.2} GiB", f / 1073741824.0)
    } else if f >= 1048576.0 {
        format!("{:.1} MiB", f / 1048576.0)
    } else {
        format!("{:.1} KiB", f / 1024.0)
    }
}

fn render(s: &StanzaInfo) -> String {
    let mut t = format!(
        "stanza {}: system identifier {}, PostgreSQL {}\n",
        s.name, s.system_id, s.pg_major
    );
    match &s.recovery_window {
        Some(_) => {}
        None => t.push_str(
            "  recovery window: none (no backup has continuous WAL to the end of the archive)\n",
        ),
    }
    for w in &s.recovery_windows {
        let primary = if Some(w.timeline) == s.primary_timeline {
            " (the primary's: the cluster that last ran backup is on it)"
        } else {
            " (not the primary's: a branch, e.g. a restored cluster that was promoted)"
        };
        t.push_str(&format!(
            "  recovery window on timeline {}{primary}: you can recover to any point between {} (end of backup {}, LSN {}) and {} (end of WAL {}, LSN {})\n",
            w.timeline, w.from_time, w.from_backup, w.from_lsn, w.to_time, w.to_wal, w.to_lsn
        ));
    }
    if s.backups.is_empty() {
        t.push_str("  no backups\n");
    }
    for b in &s.backups {
        t.push_str(&format!(
            "  {} {}: {} .. {} ({:.0}s), LSN {} .. {}, WAL {} .. {}\n      {} in {} files, {} stored, dedup {:.1}x{}{}\n",
            b.kind,
            b.label,
            b.start_time,
            b.stop_time,
            b.duration_seconds,
            b.start_lsn,
            b.stop_lsn,
            b.start_wal,
            b.stop_wal,
            human(b.logical_bytes),
            b.files,
            human(b.stored_bytes),
            b.dedup_ratio,
            b.parent
                .as_ref()
                .map(|p| format!(", parent {p}"))
                .unwrap_or_default(),
            if b.checksum_errors > 0 {
                format!(", {} PAGE CHECKSUM ERRORS", b.checksum_errors)
            } else {
                String::new()
            }
        ));
    }
    for p in &s.restore_points {
        t.push_str(&format!(
            "  restore point '{}': LSN {} on timeline {}, {}\n",
            p.name, p.end_lsn, p.timeline, p.time
        ));
    }
    for (command, run) in [("verify", &s.verify), ("drill", &s.drill)] {
        t.push_str(&format!("  last {command}: "));
        match &run.last {
            None => t.push_str("never recorded\n"),
            Some(o) => {
                t.push_str(&format!(
                    "{} at {} ({:.0}s){}: {}\n",
                    if o.passed { "passed" } else { "FAILED" },
                    o.ended_time,
                    o.duration_seconds,
                    o.backup
                        .as_ref()
                        .map(|b| format!(", backup {b}"))
                        .unwrap_or_default(),
                    o.summary
                ));
                if !o.passed {
                    t.push_str(&format!(
                        "    last passed: {}\n",
                        run.last_success_time.as_deref().unwrap_or("never")
                    ));
                }
            }
        }
    }
    for u in &s.unreadable {
        t.push_str(&format!("  UNREADABLE {u}\n"));
    }
    for w in &s.wal {
        t.push_str(&format!(
            "  WAL cluster {:04} timeline {}: {} .. {}, {} segment(s){}\n",
            w.db_id,
            w.timeline,
            w.first,
            w.last,
            w.segments,
            if w.missing > 0 {
                format!(", {} MISSING in between", w.missing)
            } else {
                String::new()
            }
        ));
    }
    let z = &s.size;
    t.push_str(&format!(
        "  size: {} (packs {}, index {}, manifests {}, WAL {})\n",
        human(z.total),
        human(z.packs),
        human(z.index),
        human(z.manifests),
        human(z.wal)
    ));
    t
}

/// The recorded runs of `command`; what cannot be read is listed, not fatal.
async fn run_info(
    repo: &Repository,
    stanza: &str,
    command: &str,
    unreadable: &mut Vec<String>,
) -> RunInfo {
    match outcome::latest(repo, stanza, command).await {
        Ok(l) => {
            unreadable.extend(l.unreadable.iter().cloned());
            RunInfo::from(l)
        }
        Err(e) => {
            unreadable.push(format!("{command} outcomes: {e}"));
            RunInfo::default()
        }
    }
}

pub async fn stanza_info(repo: &Repository, name: &str) -> Result<StanzaInfo> {
    let dbs = stanza::history(repo, name).await?;
    let current = dbs.last().cloned();
    // info shows what it can: an unreadable manifest is listed, not fatal.
    let (manifests, bad) = manifest::read_each(repo, name).await?;
    let mut unreadable: Vec<String> = bad
        .into_iter()
        .map(|(l, e)| format!("backup {l}: {e}"))
        .collect();
    let restore_points = match crate::repo::points::list(repo, name).await {
        Ok((v, bad)) => {
            unreadable.extend(bad);
            v.into_iter()
                .map(|r| PointInfo {
                    name: r.point.name.clone(),
                    db_id: r.db_id,
                    timeline: r.timeline,
                    lsn: wal::format_lsn(r.point.lsn),
                    end_lsn: wal::format_lsn(r.point.end_lsn),
                    time: jiff::Timestamp::from_microsecond(r.point.time_us)
                        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
                        .unwrap_or_default(),
                    wal: r.wal,
                })
                .collect()
        }
        Err(e) => {
            unreadable.push(format!("restore points: {e}"));
            Vec::new()
        }
    };
    let verify = run_info(repo, name, "verify", &mut unreadable).await;
    let drill = run_info(repo, name, "drill", &mut unreadable).await;
    let (wal, _) = stanza::list_wal(repo, name).await?;
    let mut size = Sizes::default();
    for l in repo.store.list(name).await? {
        let rest = l.path[name.len()..].trim_start_matches('/');
        let slot = match rest.split('/').next().unwrap_or("") {
            "pack" => &mut size.packs,
            "index" => &mut size.index,
            "backup" => &mut size.manifests,
            "wal" | "point" => &mut size.wal,
            _ => &mut size.other,
        };
        *slot += l.size;
        size.total += l.size;
    }
    let mut backups: Vec<&Manifest> = manifests.iter().collect();
    backups.sort_by_key(|m| (m.stop_unix, m.start_unix));
    let primary_timeline = current.as_ref().and_then(|db| {
        backups
            .iter()
            .rev()
            .find(|m| m.db_id == db.id)
            .map(|m| m.timeline)
    });
    let recovery_windows: Vec<Window> = match &current {
        Some(db) => segments_by_timeline(&wal, &dbs)
            .keys()
            .filter(|(d, _)| *d == db.id)
            .filter_map(|(_, tli)| window(&backups, &wal, db, *tli))
            .collect(),
        None => Vec::new(),
    };
    // Without a backup on the current cluster, the newest timeline's window.
    let recovery_window = recovery_windows
        .iter()
        .find(|w| Some(w.timeline) == primary_timeline)
        .or(recovery_windows.last())
        .cloned();
    Ok(StanzaInfo {
        name: name.to_string(),
        system_id: current
            .as_ref()
            .map(|d| d.system_id.clone())
            .unwrap_or_default(),
        pg_major: current.as_ref().map(|d| d.pg_major).unwrap_or(0),
        backups: backups.iter().map(|m| backup_info(m)).collect(),
        wal: timelines(&wal, &dbs),
        primary_timeline,
        recovery_window,
        recovery_windows,
        restore_points,
        newest_wal_unix: current.as_ref().and_then(|db| {
            wal.iter()
                .filter(|w| w.db_id == db.id && w.file.has_pages())
                .map(|w| w.modified)
                .max()
        }),
        unreadable,
        size,
        verify,
        drill,
    })
}

fn backup_info(m: &Manifest) -> BackupInfo {
    let s = &m.stats;
    BackupInfo {
        label: m.label.clone(),
        kind: m.kind.name().to_string(),
        parent: m.parent.clone(),
        db_id: m.db_id,
        timeline: m.timeline,
        start_time: m.start_time.clone(),
        stop_time: m.stop_time.clone(),
        stop_unix: m.stop_unix,
        start_lsn: m.start_lsn.clone(),
        stop_lsn: m.stop_lsn.clone(),
        start_wal: m.start_wal.clone(),
        stop_wal: m.stop_wal.clone(),
        logical_bytes: s.logical_bytes,
        stored_bytes: s.stored_bytes,
        dedup_ratio: s.logical_bytes as f64 / s.stored_bytes.max(1) as f64,
        duration_seconds: s.duration_ms as f64 / 1000.0,
        files: s.files,
        checksum_errors: m.checksum_errors.len(),
    }
}

/// Full segments (not partial or backup history files) per (cluster, timeline).
pub fn segments_by_timeline(
    wal: &[WalObject],
    dbs: &[StanzaDb],
) -> BTreeMap<(u32, u32), BTreeSet<u64>> {
    let mut per: BTreeMap<(u32, u32), BTreeSet<u64>> = BTreeMap::new();
    for w in wal {
        if let wal::WalFile::Segment { tli, .. } = w.file
            && let Some(n) = w.file.segno(seg_size(dbs, w.db_id))
        {
            per.entry((w.db_id, tli)).or_default().insert(n);
        }
    }
    per
}

fn timelines(wal: &[WalObject], dbs: &[StanzaDb]) -> Vec<TimelineInfo> {
    segments_by_timeline(wal, dbs)
        .into_iter()
        .map(|((db, tli), segs)| {
            let ss = seg_size(dbs, db);
            let (first, last) = (*segs.first().unwrap(), *segs.last().unwrap());
            TimelineInfo {
                db_id: db,
                timeline: tli,
                first: wal::segment_name(tli, first, ss),
                last: wal::segment_name(tli, last, ss),
                segments: segs.len() as u64,
                missing: (last - first + 1) - segs.len() as u64,
            }
        })
        .collect()
}

/// On timeline `tli`: from the end of the oldest backup whose WAL runs unbroken to the end of
/// that timeline's WAL, to there. Segments of earlier timelines count (a promoted branch
/// continues its parent); later ones, and backups taken on them, do not.
fn window(backups: &[&Manifest], wal: &[WalObject], db: &StanzaDb, tli: u32) -> Option<Window> {
    let ss = db.wal_segment_size;
    let mut have: BTreeSet<u64> = BTreeSet::new();
    let mut last: Option<&WalObject> = None;
    for w in wal
        .iter()
        .filter(|w| w.db_id == db.id && w.file.tli() <= tli)
    {
        if let wal::WalFile::Segment { .. } = w.file
            && let Some(n) = w.file.segno(ss)
        {
            have.insert(n);
            let newer =
                w.file.tli() == tli && last.is_none_or(|l| n > l.file.segno(ss).unwrap_or(0));
            if newer {
                last = Some(w);
            }
        }
    }
    let last = last?;
    let end = last.file.segno(ss)?;
    let from = backups
        .iter()
        .filter(|m| m.db_id == db.id && m.timeline <= tli)
        .find(|m| {
            let s = segno_of(&m.start_wal, ss);
            s <= end && (s..=end).all(|n| have.contains(&n))
        })?;
    Some(Window {
        timeline: tli,
        from_time: from.stop_time.clone(),
        from_unix: from.stop_unix,
        from_backup: from.label.clone(),
        from_lsn: from.stop_lsn.clone(),
        to_time: clock::rfc3339(last.modified),
        to_unix: last.modified,
        to_wal: last.file.to_string(),
        to_lsn: wal::format_lsn((end + 1) * ss),
    })
}

/// Writes `text` to `path` through a temporary file in the same directory and a rename, so that
/// node_exporter's textfile collector never reads a half-written file.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("metrics"),
        std::process::id()
    ));
    let fail = |what: &str, p: &Path, e: std::io::Error| {
        Error::storage(format!("cannot {what} {}: {e}", p.display()))
            .hint("output-file must be in a directory the user running pgfrost can write")
    };
    std::fs::write(&tmp, text).map_err(|e| fail("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail("rename into place", path, e)
    })
}

/// A label value as the exposition format escapes it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition format (version 0.0.4): every family with HELP and TYPE, one
/// sample per stanza (and backup type), times as Unix seconds.
fn prometheus(location: &str, total: u64, stanzas: &[StanzaInfo]) -> String {
    let mut out = Exposition {
        text: String::new(),
        repo: format!("repo=\"{}\"", label(location)),
    };
    let repo = out.repo.clone();
    out.family(
        "pgfrost_repository_size_bytes",
        "Bytes stored in the repository.",
        "gauge",
        vec![(repo.clone(), total.to_string())],
    );
    backup_families(&mut out, stanzas);
    archive_families(&mut out, stanzas);
    run_families(&mut out, stanzas);
    out.family(
        "pgfrost_unreadable_objects",
        "Manifests and other objects info could not read (run verify).",
        "gauge",
        stanzas
            .iter()
            .map(|s| (out.stanza(s), s.unreadable.len().to_string()))
            .collect(),
    );
    out.text
}

/// The exposition being written, and the repository's label.
struct Exposition {
    text: String,
    repo: String,
}

impl Exposition {
    /// One family with HELP and TYPE, then its samples.
    fn family(&mut self, name: &str, help: &str, kind: &str, samples: Vec<(String, String)>) {
        self.text
            .push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            self.text.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
    }

    /// The labels of a stanza's samples.
    fn stanza(&self, s: &StanzaInfo) -> String {
        format!("{},stanza=\"{}\"", self.repo, label(&s.name))
    }
}

/// The newest backup of each type, and how many there are.
fn backup_families(out: &mut Exposition, stanzas: &[StanzaInfo]) {
    let repo = out.repo.clone();
    let st = |s: &StanzaInfo| format!("{repo},stanza=\"{}\"", label(&s.name));
    let by_type = |f: &dyn Fn(&BackupInfo) -> String| {
        let mut v = Vec::new();
        for s in stanzas {
            for kind in ["full", "diff", "incr"] {
                if let Some(b) = s
                    .backups
                    .iter()
                    .filter(|b| b.kind == kind)
                    .max_by_key(|b| (b.stop_unix, b.label.clone()))
                {
                    v.push((format!("{},type=\"{kind}\"", st(s)), f(b)));
                }
            }
        }
        v
    };
    out.family(
        "pgfrost_backup_last_completion_timestamp_seconds",
        "When the newest backup of each type ended.",
        "gauge",
        by_type(&|b| b.stop_unix.to_string()),
    );
    out.family(
        "pgfrost_backup_last_duration_seconds",
        "How long the newest backup of each type took.",
        "gauge",
        by_type(&|b| format!("{}", b.duration_seconds)),
    );
    out.family(
        "pgfrost_backup_last_size_bytes",
        "Bytes of the cluster the newest backup of each type holds.",
        "gauge",
        by_type(&|b| b.logical_bytes.to_string()),
    );
    out.family(
        "pgfrost_backup_last_stored_bytes",
        "Bytes the newest backup of each type added to the repository.",
        "gauge",
        by_type(&|b| b.stored_bytes.to_string()),
    );
    let count = |s: &StanzaInfo, kind: &str| s.backups.iter().filter(|b| b.kind == kind).count();
    out.family(
        "pgfrost_backups",
        "Backups in the repository, by type.",
        "gauge",
        stanzas
            .iter()
            .flat_map(|s| {
                ["full", "diff", "incr"]
                    .into_iter()
                    .map(move |k| (format!("{},type=\"{k}\"", st(s)), count(s, k).to_string()))
            })
            .collect(),
    );
}

/// The WAL archive, the recovery window and the stanza's size.
fn archive_families(out: &mut Exposition, stanzas: &[StanzaInfo]) {
    let repo = out.repo.clone();
    let st = |s: &StanzaInfo| format!("{repo},stanza=\"{}\"", label(&s.name));
    out.family(
        "pgfrost_wal_last_archive_timestamp_seconds",
        "When the newest WAL segment of the current cluster was stored.",
        "gauge",
        stanzas
            .iter()
            .filter_map(|s| s.newest_wal_unix.map(|t| (st(s), t.to_string())))
            .collect(),
    );
    let window = |f: &dyn Fn(&Window) -> i64| {
        stanzas
            .iter()
            .filter_map(|s| {
                s.recovery_window.as_ref().map(|w| {
                    (
                        format!("{},timeline=\"{}\"", st(s), w.timeline),
                        f(w).to_string(),
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    out.family(
        "pgfrost_recovery_window_start_timestamp_seconds",
        "The earliest moment point-in-time recovery can reach on the primary's timeline.",
        "gauge",
        window(&|w| w.from_unix),
    );
    out.family(
        "pgfrost_recovery_window_end_timestamp_seconds",
        "The latest moment point-in-time recovery can reach on the primary's timeline (the newest WAL stored).",
        "gauge",
        window(&|w| w.to_unix),
    );
    out.family(
        "pgfrost_stanza_size_bytes",
        "Bytes stored for the stanza.",
        "gauge",
        stanzas
            .iter()
            .map(|s| (st(s), s.size.total.to_string()))
            .collect(),
    );
}

/// The recorded outcomes of verify and drill.
fn run_families(out: &mut Exposition, stanzas: &[StanzaInfo]) {
    let repo = out.repo.clone();
    let st = |s: &StanzaInfo| format!("{repo},stanza=\"{}\"", label(&s.name));
    type Pick = fn(&StanzaInfo) -> &RunInfo;
    let runs: [(&str, Pick); 2] = [("verify", |s| &s.verify), ("drill", |s| &s.drill)];
    for (command, run) in runs {
        let last = |f: &dyn Fn(&RunOutcome) -> String| {
            stanzas
                .iter()
                .filter_map(|s| run(s).last.as_ref().map(|o| (st(s), f(o))))
                .collect::<Vec<_>>()
        };
        out.family(
            &format!("pgfrost_{command}_last_run_timestamp_seconds"),
            &format!("When the newest recorded {command} ended."),
            "gauge",
            last(&|o| o.ended_unix.to_string()),
        );
        out.family(
            &format!("pgfrost_{command}_last_run_success"),
            &format!("1 if the newest recorded {command} passed, 0 if it failed."),
            "gauge",
            last(&|o| u8::from(o.passed).to_string()),
        );
        out.family(
            &format!("pgfrost_{command}_last_run_duration_seconds"),
            &format!("How long the newest recorded {command} took."),
            "gauge",
            last(&|o| format!("{}", o.duration_seconds)),
        );
        out.family(
            &format!("pgfrost_{command}_last_success_timestamp_seconds"),
            &format!("When the newest {command} that passed ended."),
            "gauge",
            stanzas
                .iter()
                .filter_map(|s| run(s).last_success_unix.map(|t| (st(s), t.to_string())))
                .collect(),
        );
    }
}
