//! Choosing the backup set: `--set` if it can reach the target, else the newest that can.

use super::conf::timezone_setting;
use super::files::ids_of;
use super::named_points::{named_points, reaches_point};
use super::options::{RestoreOptions, TargetTimeline};
use super::target_time::TargetTime;
use crate::commands::archive::Timelines;
use crate::error::{Error, ErrorKind, Result};
use crate::pg::wal::WalFile as WalFileName;
use crate::repo::Repository;
use crate::repo::blockstore::BlockStore;
use crate::repo::format::hex_array;
use crate::repo::manifest::{self, Manifest};
use crate::repo::points::Recorded;
use crate::repo::stanza;

/// The backup restore uses, and what it was chosen for.
pub struct Chosen {
    pub m: Manifest,
    /// The timeline recovery will follow from it.
    pub timeline: u32,
    /// For a time target without a zone: the zone it is read in (the restored cluster's).
    pub zone: Option<String>,
}

/// Why a backup cannot reach the target (Err(reason)), or what it reaches.
type Verdict<T> = std::result::Result<T, String>;

/// A file of a backup, read whole from the block store.
async fn backup_file(bs: &BlockStore, m: &Manifest, path: &str) -> Result<Option<Vec<u8>>> {
    let Some(f) = m.files.iter().find(|f| f.path == path) else {
        return Ok(None);
    };
    if f.list.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let list_id = hex_array::<32>(&f.list, "list").map_err(Error::corrupt)?;
    let ids = ids_of(&bs.read_block(&list_id).await?)?;
    let mut out = Vec::new();
    for b in bs.read_blocks(&ids).await? {
        out.extend_from_slice(&b);
    }
    Ok(Some(out))
}

/// What every candidate backup is judged against.
struct Judge<'a> {
    repo: &'a Repository,
    stanza: &'a str,
    dbs: &'a [stanza::StanzaDb],
    bs: &'a BlockStore,
    /// The recorded restore points of a `--type name` target's name.
    named: &'a [Recorded],
}

/// Why backup `m` cannot reach the restore's target (Ok(Err(reason))), or what it reaches.
async fn fit(
    m: Manifest,
    opts: &RestoreOptions,
    tl: &mut Timelines<'_>,
    j: &Judge<'_>,
) -> Result<Verdict<Chosen>> {
    let target = match follows_timeline(&m, opts, tl).await? {
        Ok(t) => t,
        Err(why) => return Ok(Err(why)),
    };
    let zone = match ends_before_time(&m, opts, j.bs).await? {
        Ok(z) => z,
        Err(why) => return Ok(Err(why)),
    };
    if let Err(why) = ends_before_lsn_or_xid(&m, opts) {
        return Ok(Err(why));
    }
    if let Some(name) = opts.target.name()
        && !j.named.is_empty()
    {
        let history = tl.history(target).await?.unwrap_or_default();
        if let Err(why) = reaches_point(name, j.named, &m, target, &history, opts.set.is_some()) {
            return Ok(Err(why));
        }
    }
    if let Err(why) = has_its_wal(&m, j).await? {
        return Ok(Err(why));
    }
    Ok(Ok(Chosen {
        m,
        timeline: target,
        zone,
    }))
}

/// The timeline recovery from `m` follows, when `m` lies on its history.
async fn follows_timeline(
    m: &Manifest,
    opts: &RestoreOptions,
    tl: &mut Timelines<'_>,
) -> Result<Verdict<u32>> {
    let target = match opts.timeline {
        TargetTimeline::Latest => tl.latest(m.timeline).await?,
        TargetTimeline::Current => m.timeline,
        TargetTimeline::Number(n) => n,
    };
    let stop_lsn = crate::pg::wal::parse_lsn(&m.stop_lsn).unwrap_or(u64::MAX);
    if target != m.timeline {
        let Some(history) = tl.history(target).await? else {
            return Ok(Err(format!(
                "timeline {target} has no history file ({target:08X}.history) in the repository"
            )));
        };
        if let Some(why) = crate::pg::timeline::unreachable(target, &history, m.timeline, stop_lsn)
        {
            return Ok(Err(why));
        }
    }
    Ok(Ok(target))
}

/// For a time target: whether `m` ended before it, and for one without a zone the zone it is
/// read in.
async fn ends_before_time(
    m: &Manifest,
    opts: &RestoreOptions,
    bs: &BlockStore,
) -> Result<Verdict<Option<String>>> {
    let mut zone = None;
    let Some(t) = opts.target.time() else {
        return Ok(Ok(zone));
    };
    if let TargetTime::Local(_) = t {
        let read = |p| backup_file(bs, m, p);
        let conf = read("postgresql.conf").await?.unwrap_or_default();
        let auto = read("postgresql.auto.conf").await?.unwrap_or_default();
        // PostgreSQL's own default when nothing sets it.
        zone = Some(
            timezone_setting(
                &String::from_utf8_lossy(&conf),
                &String::from_utf8_lossy(&auto),
            )
            .unwrap_or_else(|| "GMT".into()),
        );
    }
    let z = zone.as_deref().unwrap_or("UTC");
    let ms = t.millis(z).map_err(|e| {
        Error::config(format!(
            "cannot read the target time in time zone {z}, the restored cluster's timezone setting: {e}"
        ))
        .hint("give the target with an offset or a zone name (2026-11-21 09:30:00+09, 2026-11-21 09:30:00 Asia/Tokyo)")
    })?;
    if m.stop_ms >= ms {
        return Ok(Err(format!(
            "it ended at {}, not before the target{}",
            m.stop_time,
            zone.as_deref()
                .map(|z| format!(" (read in time zone {z})"))
                .unwrap_or_default()
        )));
    }
    Ok(Ok(zone))
}

/// For an LSN target, whether `m` ended before it; for an xid target, whether the
/// transaction can commit after `m` is consistent.
fn ends_before_lsn_or_xid(m: &Manifest, opts: &RestoreOptions) -> Verdict<()> {
    let stop_lsn = crate::pg::wal::parse_lsn(&m.stop_lsn).unwrap_or(u64::MAX);
    if let Some(lsn) = opts.target.lsn()
        && stop_lsn > lsn
    {
        return Err(format!("it ended at {}, after the target", m.stop_lsn));
    }
    if let Some(x) = opts.target.xid() {
        match m
            .stop_next_xid
            .as_deref()
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(next) if xid_precedes(x, next) => {
                let why = format!(
                    "transaction {x} began before it was consistent (transactions from {next} on had not completed when it ended), so its commit may lie before the backup's end"
                );
                if opts.set.is_none() {
                    return Err(why);
                }
                log::warn!("restore: backup {}: {why}; going on as --set asks", m.label);
            }
            Some(_) => {}
            None => log::warn!(
                "restore: backup {} predates recording the next transaction id at its end; whether it can reach transaction {x} is known only at recovery",
                m.label
            ),
        }
    }
    Ok(())
}

/// Whether the repository holds every WAL segment from `m`'s start to its end.
async fn has_its_wal(m: &Manifest, j: &Judge<'_>) -> Result<Verdict<()>> {
    // The WAL that makes the backup consistent must all be there, or recovery fails (or worse,
    // ends early) after every file has been written.
    if let Some(db) = j.dbs.iter().find(|d| d.id == m.db_id) {
        let ss = db.wal_segment_size;
        let segno = |w: &str| WalFileName::parse(w).and_then(|f| f.segno(ss));
        if let (Some(a), Some(b)) = (segno(&m.start_wal), segno(&m.stop_wal)) {
            for n in a..=b {
                let name = crate::pg::wal::segment_name(m.timeline, n, ss);
                let f = WalFileName::parse(&name).unwrap();
                let obj = crate::commands::archive::object_path(j.stanza, db, &f);
                if !j.repo.store.exists(&obj).await? {
                    return Ok(Err(format!(
                        "WAL segment {name}, which it needs to be consistent, is not in the repository"
                    )));
                }
            }
        }
    }
    Ok(Ok(()))
}

/// Picks the backup: `--set` if it can reach the target, else the newest that can: on the
/// history of the timeline recovery follows (ended before the branch point when on an
/// ancestor), ended before a time or LSN target, with the WAL that makes it consistent.
pub async fn choose(repo: &Repository, opts: &RestoreOptions, bs: &BlockStore) -> Result<Chosen> {
    let stanza = opts.stanza.as_str();
    let set = opts.set.as_deref();
    let labels: Vec<String> = match set {
        Some(l) => vec![l.to_string()],
        None => manifest::list(repo, stanza)
            .await?
            .into_iter()
            .rev()
            .collect(),
    };
    if labels.is_empty() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("stanza '{stanza}' has no backups"),
        )
        .hint(format!("take one with 'pgfrost backup --stanza {stanza}'")));
    }
    let mut tl = Timelines::new(repo, stanza).await?;
    let dbs = stanza::history(repo, stanza).await?;
    let named = match opts.target.name() {
        Some(name) => named_points(repo, stanza, name, set.is_some()).await?,
        None => Vec::new(),
    };
    let mut rejected = Vec::new();
    for l in &labels {
        let m = manifest::read(repo, stanza, l).await?;
        let judge = Judge {
            repo,
            stanza,
            dbs: &dbs,
            bs,
            named: &named,
        };
        match fit(m, opts, &mut tl, &judge).await? {
            Ok(c) => return Ok(c),
            Err(why) => rejected.push(format!("{l}: {why}")),
        }
    }
    let what = opts.describe();
    Err(match set {
        Some(l) => Error::new(
            ErrorKind::NotFound,
            format!("backup {l} cannot reach {what}: {}; nothing was written", &rejected[0][l.len() + 2..]),
        )
        .hint("choose another backup with --set, or leave --set out and restore picks the newest that can reach the target"),
        None => Error::new(
            ErrorKind::NotFound,
            format!(
                "no backup of stanza '{stanza}' can reach {what}; nothing was written. Backups considered, newest first:\n  {}",
                rejected.join("\n  ")
            ),
        )
        .hint("choose a later target, another --target-timeline, or take a backup (recovery cannot go back before the end of a backup)"),
    })
}

/// The log line that says which backup is restored, and how recovery will go on from it.
pub fn announce(c: &Chosen, pg_path: &std::path::Path) {
    let m = &c.m;
    log::info!(
        "restore: backup {} ({}, timeline {}, finished {}) into {}, recovering along timeline {}{}",
        m.label,
        m.kind.name(),
        m.timeline,
        m.stop_time,
        pg_path.display(),
        c.timeline,
        c.zone
            .as_deref()
            .map(|z| format!(
                "; the target time has no zone and is read in {z}, the restored cluster's timezone"
            ))
            .unwrap_or_default()
    );
}

/// True when transaction `x` is older than `next`. A 64-bit id (with its epoch, as
/// pg_current_xact_id() and txid_current() return it) compares as is; a 32-bit one, as
/// PostgreSQL compares xids, modulo 2^32.
fn xid_precedes(x: u64, next: u64) -> bool {
    if x > u32::MAX as u64 {
        x < next
    } else {
        ((x as u32).wrapping_sub(next as u32) as i32) < 0
    }
}
