//! restore: rebuild a data directory from a backup and configure recovery.
//!
//! Every block is authenticated and its id recomputed as it is written. `global/pg_control` is
//! written last, after everything else has been synced to disk: a restore that stops halfway
//! leaves a directory PostgreSQL refuses to start, never one that starts with missing files.

use super::{emit, open_repo};
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result};
use crate::fsx;
use crate::pg::page::BLCKSZ;
use crate::pg::wal::WalFile as WalFileName;
use crate::repo::Repository;
use crate::repo::blockstore::{BlockId, BlockStore, Placed};
use crate::repo::format::hex_array;
use crate::repo::manifest::{self, Manifest};
use crate::repo::points::Recorded;
use crate::repo::stanza;
use std::collections::{HashMap, HashSet};
use std::io::{Seek, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

const PG_CONTROL: &str = "global/pg_control";
/// Blocks decoded and written at a time while restoring one file (1 MiB). Small enough that the
/// decoded bytes are still in the CPU cache when write() copies them into the page cache: with
/// 8 MiB batches that copy ran from memory and took several times as much system time.
const BATCH: usize = 128;

/// A `recovery_target_time` as PostgreSQL reads it: a date and time with an offset or a zone
/// name, or with neither (then read in the restored cluster's `timezone`).
#[derive(Debug, Clone, PartialEq)]
pub enum TargetTime {
    /// Unix milliseconds.
    At(i64),
    /// A wall-clock time with no zone.
    Local(jiff::civil::DateTime),
}

/// How a time target may be written, for hints.
pub const TIME_FORMS: &str = "2026-11-21 09:30:00+09, +0900, +09:00, 'Z', a zone name ('2026-11-21 09:30:00 Asia/Tokyo', UTC) or no zone (the restored cluster's timezone setting); 'T' may separate date and time, seconds may have a fraction";

/// Parses a time target in the forms PostgreSQL's timestamptz input takes for it
/// (`YYYY-MM-DD[ T]HH:MM[:SS[.frac]]` then `Z`, `+HH`, `+HHMM`, `+HH:MM[:SS]`, a zone name, or
/// nothing). The reason when it does not read.
pub fn parse_target_time(s: &str) -> std::result::Result<TargetTime, String> {
    let s = s.trim();
    let bad = |why: &str| format!("cannot read the target time '{s}': {why}");
    let num = |t: &str, what: &str| -> std::result::Result<i64, String> {
        if t.is_empty() || t.len() > 4 || !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad(&format!("'{t}' is not a {what}")));
        }
        Ok(t.parse().unwrap())
    };
    let (date, rest) = s
        .split_once([' ', 'T'])
        .ok_or_else(|| bad("expected a date and a time"))?;
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, da] = d[..] else {
        return Err(bad("the date must be YYYY-MM-DD"));
    };
    let rest = rest.trim_start();
    let tend = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))
        .unwrap_or(rest.len());
    let (time, zone) = rest.split_at(tend);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<&str> = hms.split(':').collect();
    if !(2..=3).contains(&t.len()) {
        return Err(bad("the time must be HH:MM[:SS[.fraction]]"));
    }
    let nanos = if frac.is_empty() {
        0
    } else if frac.len() <= 9 && frac.bytes().all(|c| c.is_ascii_digit()) {
        format!("{frac:0<9}").parse::<i32>().unwrap()
    } else {
        return Err(bad("the fraction of a second must be digits"));
    };
    let dt = jiff::civil::DateTime::new(
        num(y, "year")? as i16,
        num(mo, "month")? as i8,
        num(da, "day")? as i8,
        num(t[0], "hour")? as i8,
        num(t[1], "minute")? as i8,
        t.get(2).map(|x| num(x, "second")).transpose()?.unwrap_or(0) as i8,
        nanos,
    )
    .map_err(|e| bad(&e.to_string()))?;
    let zone = zone.trim();
    let offset = |z: &str, sign: i64| -> std::result::Result<i64, String> {
        let parts: Vec<&str> = if z.contains(':') {
            z.split(':').collect()
        } else if z.len() <= 2 {
            vec![z]
        } else if z.len() == 4 || z.len() == 6 {
            (0..z.len()).step_by(2).map(|i| &z[i..i + 2]).collect()
        } else {
            return Err(bad(&format!("cannot read the offset '{z}'")));
        };
        let mut secs = 0;
        for (i, p) in parts.iter().enumerate() {
            let limit = if i == 0 { 15 } else { 59 };
            let v = num(p, "offset")
                .ok()
                .filter(|v| *v <= limit && i < 3 && (i == 0 || p.len() == 2))
                .ok_or_else(|| bad(&format!("cannot read the offset '{z}'")))?;
            secs += v * [3600, 60, 1][i];
        }
        Ok(sign * secs)
    };
    let at = |tz: jiff::tz::TimeZone| -> std::result::Result<TargetTime, String> {
        tz.to_timestamp(dt)
            .map(|ts| TargetTime::At(ts.as_millisecond()))
            .map_err(|e| bad(&e.to_string()))
    };
    match zone {
        "" => Ok(TargetTime::Local(dt)),
        "Z" | "z" => at(jiff::tz::TimeZone::UTC),
        z if z.starts_with('+') || z.starts_with('-') => {
            let secs = offset(&z[1..], if z.starts_with('-') { -1 } else { 1 })?;
            at(jiff::tz::TimeZone::fixed(
                jiff::tz::Offset::from_seconds(secs as i32).map_err(|e| bad(&e.to_string()))?,
            ))
        }
        z => at(zone_named(z).map_err(|e| bad(&e))?),
    }
}

/// A time zone by name, as PostgreSQL's `timezone` setting or a timestamp may give it.
fn zone_named(z: &str) -> std::result::Result<jiff::tz::TimeZone, String> {
    match z.to_ascii_uppercase().as_str() {
        "UTC" | "GMT" | "Z" | "ZULU" | "UCT" => return Ok(jiff::tz::TimeZone::UTC),
        _ => {}
    }
    jiff::tz::TimeZone::get(z)
        .or_else(|_| jiff::tz::TimeZone::posix(z))
        .map_err(|_| format!("'{z}' is not a time zone this host's time zone database knows"))
}

impl TargetTime {
    /// Unix milliseconds, a zone-less time read in `zone`.
    pub fn millis(&self, zone: &str) -> std::result::Result<i64, String> {
        match self {
            TargetTime::At(ms) => Ok(*ms),
            TargetTime::Local(dt) => zone_named(zone)?
                .to_timestamp(*dt)
                .map(|t| t.as_millisecond())
                .map_err(|e| e.to_string()),
        }
    }
}

/// `timezone` as the configuration files of a data directory set it (the last setting wins, and
/// postgresql.auto.conf is read after postgresql.conf); None when neither sets it.
pub fn timezone_setting(conf: &str, auto: &str) -> Option<String> {
    let mut zone = None;
    for line in conf.lines().chain(auto.lines()) {
        if setting_name(line).as_deref() != Some("timezone") {
            continue;
        }
        let v = line.trim_start()[8..].trim_start();
        let v = v.strip_prefix('=').unwrap_or(v).trim();
        let v = match v.strip_prefix('\'') {
            Some(q) => q.split('\'').next().unwrap_or(""),
            None => v.split(['#', ' ']).next().unwrap_or(""),
        };
        zone = Some(v.to_string());
    }
    zone
}

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut r| r.next().is_none())
        .unwrap_or(true)
}

/// The timeline recovery follows, as `--target-timeline` says.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TargetTimeline {
    Latest,
    Current,
    Number(u32),
}

/// The backup restore uses, and what it was chosen for.
struct Chosen {
    m: Manifest,
    /// The timeline recovery will follow from it.
    timeline: u32,
    /// For a time target without a zone: the zone it is read in (the restored cluster's).
    zone: Option<String>,
}

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

/// Why backup `m` cannot reach the restore's target (Ok(Err(reason))), or what it reaches.
/// What every candidate backup is judged against.
struct Judge<'a> {
    repo: &'a Repository,
    stanza: &'a str,
    dbs: &'a [stanza::StanzaDb],
    bs: &'a BlockStore,
    /// The recorded restore points of a `--type name` target's name.
    named: &'a [Recorded],
}

async fn fit(
    m: Manifest,
    plan: &Plan,
    tl: &mut crate::commands::archive::Timelines<'_>,
    j: &Judge<'_>,
) -> Result<std::result::Result<Chosen, String>> {
    let Judge {
        repo,
        stanza,
        dbs,
        bs,
        named,
    } = *j;
    let target = match plan.timeline {
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
    let mut zone = None;
    if let Some(t) = &plan.time {
        if let TargetTime::Local(_) = t {
            let read = |p| backup_file(bs, &m, p);
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
    }
    if let Some(lsn) = plan.lsn
        && stop_lsn > lsn
    {
        return Ok(Err(format!("it ended at {}, after the target", m.stop_lsn)));
    }
    if let Some(x) = plan.xid {
        match m
            .stop_next_xid
            .as_deref()
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(next) if xid_precedes(x, next) => {
                let why = format!(
                    "transaction {x} began before it was consistent (transactions from {next} on had not completed when it ended), so its commit may lie before the backup's end"
                );
                if !plan.set {
                    return Ok(Err(why));
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
    if let Some(name) = &plan.name
        && !named.is_empty()
    {
        let history = tl.history(target).await?.unwrap_or_default();
        if let Err(why) = reaches_point(name, named, &m, target, &history, plan.set) {
            return Ok(Err(why));
        }
    }
    // The WAL that makes the backup consistent must all be there, or recovery fails (or worse,
    // ends early) after every file has been written.
    if let Some(db) = dbs.iter().find(|d| d.id == m.db_id) {
        let ss = db.wal_segment_size;
        let segno = |w: &str| WalFileName::parse(w).and_then(|f| f.segno(ss));
        if let (Some(a), Some(b)) = (segno(&m.start_wal), segno(&m.stop_wal)) {
            for n in a..=b {
                let name = crate::pg::wal::segment_name(m.timeline, n, ss);
                let f = WalFileName::parse(&name).unwrap();
                let obj = crate::commands::archive::object_path(stanza, db, &f);
                if !repo.store.exists(&obj).await? {
                    return Ok(Err(format!(
                        "WAL segment {name}, which it needs to be consistent, is not in the repository"
                    )));
                }
            }
        }
    }
    Ok(Ok(Chosen {
        m,
        timeline: target,
        zone,
    }))
}

/// Picks the backup: `--set` if it can reach the target, else the newest that can: on the
/// history of the timeline recovery follows (ended before the branch point when on an
/// ancestor), ended before a time or LSN target, with the WAL that makes it consistent.
async fn choose(
    repo: &Repository,
    stanza: &str,
    settings: &Settings,
    plan: &Plan,
    bs: &BlockStore,
) -> Result<Chosen> {
    let set = settings.string("set");
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
    let mut tl = crate::commands::archive::Timelines::new(repo, stanza).await?;
    let dbs = stanza::history(repo, stanza).await?;
    let named = match &plan.name {
        Some(name) => named_points(repo, stanza, name, plan.set).await?,
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
        match fit(m, plan, &mut tl, &judge).await? {
            Ok(c) => return Ok(c),
            Err(why) => rejected.push(format!("{l}: {why}")),
        }
    }
    let what = plan.describe(settings);
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

/// The recorded restore points called `name`, oldest first. None recorded is an error naming
/// the known ones, except with `--set`, where it is only a warning (WAL archived by a version
/// that did not record points).
async fn named_points(
    repo: &Repository,
    stanza: &str,
    name: &str,
    set: bool,
) -> Result<Vec<Recorded>> {
    let (all, unreadable) = crate::repo::points::list(repo, stanza).await?;
    for u in &unreadable {
        log::warn!(
            "restore: {u}; a restore point it records is not known (HINT: run pgfrost verify)"
        );
    }
    let named: Vec<Recorded> = all
        .iter()
        .filter(|r| r.point.name == name)
        .cloned()
        .collect();
    if !named.is_empty() {
        return Ok(named);
    }
    let known = if all.is_empty() {
        "no restore points are recorded in this stanza".to_string()
    } else {
        let mut v: Vec<String> = all
            .iter()
            .rev()
            .take(20)
            .map(|r| format!("{} on timeline {}", r.point.describe(), r.timeline))
            .collect();
        if all.len() > 20 {
            v.push(format!("and {} older", all.len() - 20));
        }
        format!(
            "the recorded restore points, newest first: {}",
            v.join("; ")
        )
    };
    let mut msg = format!("restore point '{name}' is not recorded in stanza '{stanza}'");
    if !unreadable.is_empty() {
        msg.push_str(&format!(
            " (or is in one of {} restore-point document(s) that cannot be read: {})",
            unreadable.len(),
            unreadable.join("; ")
        ));
    }
    if set {
        log::warn!(
            "restore: {msg}; going on with the backup --set names: recovery fails if the point is not in the WAL after it"
        );
        return Ok(Vec::new());
    }
    Err(Error::new(ErrorKind::NotFound, format!("{msg}; nothing was written")).hint(format!(
        "{known}. A point is recorded when the WAL segment holding it is archived: after \
         pg_create_restore_point(), run SELECT pg_switch_wal() on the primary and wait for archiving"
    )))
}

/// Whether recovery from backup `m` along timeline `target` (ancestors `history`) stops at the
/// newest restore point `name` on that history: PostgreSQL stops at the first point of that
/// name it replays, and fails if it meets one before the backup is consistent.
fn reaches_point(
    name: &str,
    named: &[Recorded],
    m: &Manifest,
    target: u32,
    history: &[crate::pg::timeline::Ancestor],
    set: bool,
) -> std::result::Result<(), String> {
    let on_path: Vec<&Recorded> = named
        .iter()
        .filter(|r| {
            r.db_id == m.db_id
                && (r.timeline == target
                    || history
                        .iter()
                        .any(|a| a.tli == r.timeline && r.point.end_lsn <= a.switchpoint))
        })
        .collect();
    let Some(newest) = on_path.last() else {
        return Err(format!(
            "no restore point '{name}' lies on the history of timeline {target} (recorded on timeline(s) {})",
            named
                .iter()
                .map(|r| r.timeline.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let lsn = |s: &str| crate::pg::wal::parse_lsn(s).unwrap_or(u64::MAX);
    let (start, stop) = (lsn(&m.start_lsn), lsn(&m.stop_lsn));
    let first = on_path.iter().find(|r| r.point.lsn >= start);
    match first {
        None => Err(format!(
            "it started at {}, after restore point {}",
            m.start_lsn,
            newest.point.describe()
        )),
        Some(p) if p.point.lsn < stop => Err(format!(
            "restore point {} lies between its start and its end ({}), where recovery cannot stop",
            p.point.describe(),
            m.stop_lsn
        )),
        // With --set the operator chose the backup: the first point after it is the one meant
        // (last week's 'before_deploy', say), said aloud.
        Some(p) if p.point.lsn != newest.point.lsn && set => {
            log::warn!(
                "restore: recovery from backup {} stops at restore point {}, not at the newest of that name, {}",
                m.label,
                p.point.describe(),
                newest.point.describe()
            );
            Ok(())
        }
        Some(p) if p.point.lsn != newest.point.lsn => Err(format!(
            "recovery from it would stop at the earlier restore point {}, not the newest {} (give --set to mean the earlier one)",
            p.point.describe(),
            newest.point.describe()
        )),
        Some(_) => Ok(()),
    }
}

struct Job {
    /// For messages; the file is reached through `root` and `sub`, never through this path.
    path: PathBuf,
    root: PathBuf,
    sub: PathBuf,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    list: String,
}

struct Shared {
    jobs: Mutex<Vec<Job>>,
    bs: BlockStore,
    rt: tokio::runtime::Handle,
    delta: bool,
    chown: bool,
    /// The cluster's owner, for directories the restore creates (as root).
    owner: Option<(u32, u32)>,
    /// Each place's directory, opened once: what lies below is reached from these descriptors
    /// without following links.
    roots: HashMap<PathBuf, fsx::Dir>,
    written: AtomicU64,
    /// Bytes of the files done, written or (delta) found unchanged: what progress counts.
    done: Arc<AtomicU64>,
}

fn ids_of(bs_list: &[u8]) -> Result<Vec<BlockId>> {
    if !bs_list.len().is_multiple_of(32) {
        return Err(Error::corrupt(
            "a file's block list is not a whole number of ids",
        ));
    }
    Ok(bs_list
        .chunks_exact(32)
        .map(|c| c.try_into().unwrap())
        .collect())
}

/// Gives a directory the restore created (as root) to the cluster's owner.
fn give_dir(d: &fsx::Dir, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    match owner {
        Some((uid, gid)) => d.chown(uid, gid),
        None => Ok(()),
    }
}

/// The directory `sub` below the place `root`, made (with its missing parents) if absent.
fn dir_below(
    roots: &HashMap<PathBuf, fsx::Dir>,
    owner: Option<(u32, u32)>,
    root: &Path,
    sub: &Path,
    create: bool,
) -> std::io::Result<fsx::Dir> {
    let r = roots
        .get(root)
        .ok_or_else(|| std::io::Error::other(format!("{} is not open", root.display())))?;
    let mk = |d: &fsx::Dir| give_dir(d, owner);
    r.descend(sub, create.then_some(&mk as fsx::OnCreate))
}

/// The regular file `sub` below the place `root`, opened read-write without following links.
fn open_below(
    roots: &HashMap<PathBuf, fsx::Dir>,
    owner: Option<(u32, u32)>,
    root: &Path,
    sub: &Path,
    truncate: bool,
) -> std::io::Result<std::fs::File> {
    let (dir, name) = fsx::split(sub)?;
    dir_below(roots, owner, root, dir, true)?.file(name, truncate)
}

/// Writes one file and sets its metadata; returns it open, for the syncer to flush.
fn restore_file(sh: &Shared, j: &Job, buf: &mut Vec<u8>) -> Result<std::fs::File> {
    // Written in place, never through a link: the cluster's owner may have left one at the
    // path or at any directory above it (--delta, --force), and as root that would hand them
    // whatever it points to. fsx reaches the file without following any.
    let f = open_below(&sh.roots, sh.owner, &j.root, &j.sub, !sh.delta)
        .map_err(|e| Error::io("create", &j.path, e))?;
    let ids: Vec<BlockId> = if j.list.is_empty() {
        Vec::new()
    } else {
        let list_id = hex_array::<32>(&j.list, "list").map_err(Error::corrupt)?;
        ids_of(&sh.rt.block_on(sh.bs.read_block(&list_id))?)?
    };
    // --delta: keep the blocks that already match (compared by keyed hash), rewrite the rest.
    let mut keep = vec![false; ids.len()];
    if sh.delta {
        let mut buf = vec![0u8; BLCKSZ];
        for (i, id) in ids.iter().enumerate() {
            let n = f.read_at(&mut buf, (i * BLCKSZ) as u64).unwrap_or(0);
            if n == 0 {
                break;
            }
            keep[i] = sh.bs.keys().block_id(&buf[..n]) == *id;
        }
    }
    // A backup cuts every file into BLCKSZ blocks, the last one shorter: block k lies at
    // k * BLCKSZ, whatever order it is written in.
    if ids.len() as u64 != j.size.div_ceil(BLCKSZ as u64) {
        return Err(Error::corrupt(format!(
            "{}: the backup lists {} blocks for a file of {} bytes",
            j.path.display(),
            ids.len(),
            j.size
        )));
    }
    let expected = |k: usize| (j.size - k as u64 * BLCKSZ as u64).min(BLCKSZ as u64) as u32;
    // Blocks are asked for run by run (runs in the order of their first block in the file,
    // blocks in run order), and a request never splits a run. An incremental's scattered
    // changes leave runs partly wanted and spread over the file; read in file order, such a
    // run was decoded again for every batch that touched it.
    let want: Vec<usize> = (0..ids.len()).filter(|k| !keep[*k]).collect();
    let placed = sh
        .bs
        .place(&want.iter().map(|&k| ids[k]).collect::<Vec<_>>())?;
    let mut first_of_run: HashMap<(u32, u32), usize> = HashMap::new();
    for (n, p) in placed.iter().enumerate() {
        first_of_run.entry(p.run()).or_insert(n);
    }
    let mut order: Vec<usize> = (0..want.len()).collect();
    order.sort_by_key(|&n| {
        let p = &placed[n];
        (first_of_run[&p.run()], p.offset_in_run(), n)
    });
    let mut i = 0;
    while i < order.len() {
        let mut end = (i + BATCH).min(order.len());
        while end < order.len() && placed[order[end]].run() == placed[order[end - 1]].run() {
            end += 1;
        }
        let batch: Vec<Placed> = order[i..end].iter().map(|&n| placed[n]).collect();
        let lens = sh.rt.block_on(sh.bs.read_placed_into(&batch, buf))?;
        // The blocks sit back to back in `buf`; each stretch of them that is contiguous in
        // the file too goes out in one write (a syscall per 8 KiB block costs more than
        // decoding).
        let mut from = 0usize;
        let mut s = 0;
        while s < lens.len() {
            let k0 = want[order[i + s]];
            let (at, mut len) = (from, 0usize);
            let mut e = s;
            while e < lens.len() && want[order[i + e]] == k0 + (e - s) {
                let k = k0 + (e - s);
                if lens[e] != expected(k) {
                    return Err(Error::corrupt(format!(
                        "{}: block {k} of the backup is {} bytes, the file's size says {}",
                        j.path.display(),
                        lens[e],
                        expected(k)
                    )));
                }
                len += lens[e] as usize;
                e += 1;
            }
            f.write_all_at(&buf[at..at + len], k0 as u64 * BLCKSZ as u64)
                .map_err(|e| Error::io("write", &j.path, e))?;
            sh.written.fetch_add(len as u64, Ordering::Relaxed);
            from += len;
            s = e;
        }
        i = end;
    }
    f.set_len(j.size)
        .map_err(|e| Error::io("truncate", &j.path, e))?;
    f.set_permissions(std::fs::Permissions::from_mode(j.mode))
        .map_err(|e| Error::io("chmod", &j.path, e))?;
    let mtime = UNIX_EPOCH + Duration::from_secs(j.mtime.max(0) as u64);
    f.set_modified(mtime)
        .map_err(|e| Error::io("set the time of", &j.path, e))?;
    if sh.chown {
        std::os::unix::fs::fchown(&f, Some(j.uid), Some(j.gid))
            .map_err(|e| Error::io("chown", &j.path, e))?;
    }
    Ok(f)
}

/// Files written and waiting to be flushed. Bounded, so that open descriptors stay few (a
/// cluster has thousands of small files) and a slow disk slows the workers down.
type SyncQueue = std::sync::mpsc::SyncSender<(std::fs::File, PathBuf)>;
const SYNC_QUEUE: usize = 64;

fn worker(sh: Arc<Shared>, sync: SyncQueue) -> Result<()> {
    // One decode buffer per worker for the whole restore: no allocation (or page fault) per block.
    let mut buf = Vec::new();
    loop {
        let Some(j) = sh.jobs.lock().unwrap().pop() else {
            return Ok(());
        };
        let f = restore_file(&sh, &j, &mut buf)?;
        sh.done.fetch_add(j.size, Ordering::Relaxed);
        // The syncer stops only after a failed flush, which it reports: no use writing on.
        if sync.send((f, j.path)).is_err() {
            return Ok(());
        }
    }
}

/// Flushes written files one after another on its own thread, so that a worker never waits
/// for the disk while it could decode (an fsync inline cost a fifth of the restore's wall time).
/// Returns the first failure; after one, it stops taking files.
fn syncer(queue: std::sync::mpsc::Receiver<(std::fs::File, PathBuf)>) -> Result<()> {
    for (f, path) in queue {
        f.sync_all().map_err(|e| Error::io("sync", &path, e))?;
    }
    Ok(())
}

/// Where the restore puts things: the data directory, each tablespace's location, and the
/// directories the data directory's links point to (links restored as plain directories are
/// not here: what is under them goes inside the data directory).
struct Places {
    pg_path: PathBuf,
    spc: HashMap<u32, PathBuf>,
    links: HashMap<String, PathBuf>,
}

impl Places {
    /// The path a manifest path lands on.
    fn target_of(&self, rel: &str) -> PathBuf {
        let (root, sub) = self.locate(rel);
        if sub.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(sub)
        }
    }

    /// The place a manifest path lands in (the data directory, a tablespace's or a link's
    /// directory) and the path below it.
    fn locate(&self, rel: &str) -> (&Path, PathBuf) {
        let under = |prefix: &str| -> Option<PathBuf> {
            let sub = rel.strip_prefix(prefix)?;
            match sub.strip_prefix('/') {
                Some(sub) => Some(PathBuf::from(sub)),
                None => sub.is_empty().then(PathBuf::new),
            }
        };
        if let Some(rest) = rel.strip_prefix("pg_tblspc/") {
            let oid = rest.split('/').next().unwrap_or(rest);
            if let Some(loc) = oid.parse::<u32>().ok().and_then(|o| self.spc.get(&o)) {
                return (loc, under(&format!("pg_tblspc/{oid}")).unwrap_or_default());
            }
        }
        for (link, loc) in &self.links {
            if let Some(p) = under(link) {
                return (loc, p);
            }
        }
        (&self.pg_path, PathBuf::from(rel))
    }

    /// Every directory outside the data directory that the restore writes into.
    fn outside(&self) -> impl Iterator<Item = &PathBuf> {
        self.spc.values().chain(self.links.values())
    }
}

/// Where a restore may put what lies outside the data directory.
#[derive(Clone, Copy)]
pub enum Placement<'a> {
    /// restore: tablespaces at their original locations unless `--tablespace-map` moves them;
    /// links as `--link-map` says, else plain directories inside the data directory.
    Operator,
    /// drill: everything inside this scratch directory (tablespaces in `tablespaces/<oid>`,
    /// links as plain directories, the archive-get queue in `spool`), whatever the maps say;
    /// the backup chosen for recovery along this timeline when one is given (the primary's).
    Scratch(&'a Path, Option<u32>),
}

/// The restore's options, read and checked before anything is written.
struct Plan {
    kind: String,
    time: Option<TargetTime>,
    lsn: Option<u64>,
    xid: Option<u64>,
    name: Option<String>,
    /// `--set` names the backup: what cannot be known about it is warned of, not refused.
    set: bool,
    timeline: TargetTimeline,
    delta: bool,
    force: bool,
    archive_off: bool,
    tablespace_map: Vec<(u32, PathBuf)>,
    link_map: Vec<(String, PathBuf)>,
}

impl Plan {
    fn read(settings: &Settings, placement: Placement) -> Result<Plan> {
        let kind = settings.string("type").unwrap_or("default").to_string();
        let allowed = [
            "default",
            "immediate",
            "time",
            "xid",
            "lsn",
            "name",
            "standby",
        ];
        if !allowed.contains(&kind.as_str()) {
            return Err(Error::config(format!("invalid restore type '{kind}'"))
                .hint(format!("use --type {}", allowed.join(", "))));
        }
        let targeted = ["time", "xid", "lsn", "name"].contains(&kind.as_str());
        let target = if targeted {
            Some(settings.required("target")?.to_string())
        } else {
            if settings.string("target").is_some() {
                return Err(Error::config(format!(
                    "option target is given, but restore type {kind} takes none"
                ))
                .hint("give --type time, xid, lsn or name with --target"));
            }
            None
        };
        let (mut time, mut lsn) = (None, None);
        match (kind.as_str(), target.as_deref()) {
            ("time", Some(t)) => {
                time = Some(parse_target_time(t).map_err(|e| {
                    Error::config(format!("invalid value for option target: {e}"))
                        .hint(format!("write a time target as {TIME_FORMS}"))
                })?);
            }
            ("lsn", Some(t)) => {
                let hex = |p: &str| {
                    !p.is_empty() && p.len() <= 8 && p.bytes().all(|c| c.is_ascii_hexdigit())
                };
                lsn = t
                    .split_once('/')
                    .filter(|(h, l)| hex(h) && hex(l))
                    .and_then(|_| crate::pg::wal::parse_lsn(t));
                if lsn.is_none() {
                    return Err(Error::config(format!(
                        "invalid value for option target: '{t}' is not an LSN"
                    ))
                    .hint("write an LSN target as PostgreSQL prints one: 0/16B3748"));
                }
            }
            ("xid", Some(t))
                if t.is_empty()
                    || !t.bytes().all(|c| c.is_ascii_digit())
                    || t.parse::<u64>().is_err() =>
            {
                return Err(Error::config(format!(
                    "invalid value for option target: '{t}' is not a transaction id"
                ))
                .hint("write an xid target as a number, as txid_current() or pg_current_xact_id() returns it"));
            }
            ("name", Some(t)) if t.is_empty() || t.len() > 63 => {
                return Err(Error::config(format!(
                    "invalid value for option target: a restore point name is 1 to 63 bytes, '{t}' is {}",
                    t.len()
                ))
                .hint("give the name pg_create_restore_point() was called with"));
            }
            _ => {}
        }
        let timeline = match settings.string("target-timeline") {
            None | Some("latest") => TargetTimeline::Latest,
            Some("current") => TargetTimeline::Current,
            Some(t) => {
                let n = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                    Some(h) => u32::from_str_radix(h, 16).ok(),
                    None => t.parse::<u32>().ok(),
                };
                match n.filter(|n| *n >= 1) {
                    Some(n) => TargetTimeline::Number(n),
                    None => {
                        return Err(Error::config(format!(
                            "invalid value for option target-timeline: '{t}'"
                        ))
                        .hint("use current, latest or a timeline number (2, or 0x2)"));
                    }
                }
            }
        };
        let tablespace_map = settings
            .map("tablespace-map")?
            .into_iter()
            .map(|(oid, dir)| (oid.parse().expect("checked by Settings::map"), dir))
            .collect();
        let xid = (kind == "xid")
            .then(|| target.as_deref().and_then(|t| t.parse().ok()))
            .flatten();
        let name = (kind == "name").then(|| target.clone()).flatten();
        let mut plan = Plan {
            kind,
            time,
            lsn,
            xid,
            name,
            set: settings.string("set").is_some(),
            timeline,
            delta: settings.flag("delta")?,
            force: settings.flag("force")?,
            archive_off: settings.string("archive-mode") == Some("off"),
            tablespace_map,
            link_map: settings.map("link-map")?,
        };
        if let Placement::Scratch(_, tli) = placement {
            if settings.string("target-timeline").is_none()
                && let Some(t) = tli
            {
                plan.timeline = TargetTimeline::Number(t);
            }
            if !plan.tablespace_map.is_empty() || !plan.link_map.is_empty() {
                log::info!(
                    "drill: tablespace-map and link-map are ignored; a drill keeps every path inside its scratch directory"
                );
            }
            plan.tablespace_map.clear();
            plan.link_map.clear();
            plan.archive_off = true;
        }
        Ok(plan)
    }
}

impl Plan {
    /// The target in words, for messages.
    fn describe(&self, settings: &Settings) -> String {
        let t = settings.string("target").unwrap_or("");
        let tl = match self.timeline {
            TargetTimeline::Latest => "the latest timeline".to_string(),
            TargetTimeline::Current => "the backup's timeline".to_string(),
            TargetTimeline::Number(n) => format!("timeline {n}"),
        };
        match self.kind.as_str() {
            "default" | "standby" => format!("the end of the archive on {tl}"),
            "immediate" => format!("the end of a backup on {tl}"),
            k => format!("the {k} target '{t}' on {tl}"),
        }
    }
}

/// What a restored cluster would write into if `dir` (a link's or a tablespace's new place)
/// lies in, or is, the data or WAL directory of a cluster other than the one restored into
/// `pg_path`: a restore from production must never reach into production.
fn foreign_cluster(dir: &Path, pg_path: &Path) -> Option<String> {
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    let own = canon(pg_path);
    // The WAL directory the target's pg_wal already is or links to (a --delta restore over the
    // cluster's own data directory) is this cluster's.
    let own_wal = canon(&pg_path.join("pg_wal"));
    for a in dir.ancestors().filter(|a| a.exists()) {
        let c = canon(a);
        if c.is_some() && c == own {
            return None;
        }
        if a.join("PG_VERSION").is_file() && a.join("global").is_dir() {
            return Some(format!(
                "{} is the data directory of another cluster",
                a.display()
            ));
        }
        if a.join("archive_status").is_dir() && (c.is_none() || c != own_wal) {
            return Some(format!(
                "{} is the WAL directory of another cluster",
                a.display()
            ));
        }
    }
    None
}

/// As root, gives `p` (a link itself, not its target) to the cluster's owner.
fn give(p: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    match owner {
        Some((uid, gid)) => {
            std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|e| Error::io("chown", p, e))
        }
        None => Ok(()),
    }
}

/// A directory of the cluster's own (the data directory, a link's plain directory): created,
/// with the cluster's directory mode and, as root, its owner.
fn make_cluster_dir(dir: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    make_dir(dir, owner)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", dir, e))?;
    give(dir, owner)
}

/// Creates `dir` and its missing parents; as root, gives what it created to the cluster's
/// owner (root's umask would leave them root's and closed to the postgres user).
fn make_dir(dir: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    missing.into_iter().try_for_each(|d| give(d, owner))
}

/// The settings that steer recovery: restore writes its own, and any left in the restored
/// configuration files must not outlive the restore that wrote them.
const RECOVERY_SETTINGS: &[&str] = &[
    "restore_command",
    "archive_cleanup_command",
    "recovery_end_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "recovery_target_action",
];

/// The setting a configuration-file line sets (lowercased, as PostgreSQL's names are
/// case-insensitive), if it sets one.
fn setting_name(line: &str) -> Option<String> {
    let l = line.trim_start();
    let end = l
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(l.len());
    let (name, rest) = l.split_at(end);
    let rest = rest.trim_start();
    (!name.is_empty() && (rest.starts_with('=') || end < l.len() && !rest.is_empty()))
        .then(|| name.to_ascii_lowercase())
}

/// Comments out every recovery setting in a configuration file's text, each with `stamp`
/// saying who did it; returns the new text and the names disabled.
pub fn disable_recovery_settings(text: &str, stamp: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut disabled = Vec::new();
    for line in text.split_inclusive('\n') {
        match setting_name(line) {
            Some(n) if RECOVERY_SETTINGS.contains(&n.as_str()) => {
                out.push_str(&format!("# {stamp}: {line}"));
                disabled.push(n);
            }
            _ => out.push_str(line),
        }
    }
    (out, disabled)
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Quotes a word for the shell PostgreSQL runs restore_command with, when it needs it.
fn sh_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/._-:=@%+,".contains(&c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Options that restore_command passes on to archive-get when the restore had them from the
/// command line or the environment: PostgreSQL runs restore_command with its own environment,
/// and the config file is passed whole. All are options archive-get accepts (a test parses the
/// command as the CLI does). S3 credentials stay out: postgresql.auto.conf is no place for
/// secrets.
pub const RESTORE_COMMAND_OPTIONS: &[&str] = &[
    "repo",
    "repo-s3-endpoint",
    "repo-s3-region",
    "repo-s3-uri-style",
    "repo-s3-ca-file",
    "key-file",
    "passphrase-file",
    "spool-path",
    "archive-get-queue-max",
    "process-max",
];

/// Options whose values are paths: made absolute, since restore_command runs in the data
/// directory.
const PATH_OPTIONS: &[&str] = &[
    "repo-s3-ca-file",
    "key-file",
    "passphrase-file",
    "spool-path",
];

/// The restore_command that fetches this stanza's WAL with the same repository and keys:
/// every option after `archive-get` (the subcommand's own options are not accepted before
/// it). `spool` replaces spool-path (a drill's queue stays in its scratch directory).
pub fn restore_command(settings: &Settings, stanza: &str, spool: Option<&Path>) -> String {
    // Linux names a binary replaced while it runs (a package upgrade) "<path> (deleted)"; the
    // path is still where the current pgfrost lives.
    let exe = std::env::current_exe()
        .map(|p| {
            p.display()
                .to_string()
                .trim_end_matches(" (deleted)")
                .to_string()
        })
        .unwrap_or_else(|_| "pgfrost".into());
    let absolute = |p: &str| {
        std::path::absolute(p)
            .map(|a| a.display().to_string())
            .unwrap_or_else(|_| p.to_string())
    };
    // PostgreSQL replaces %f, %p, %r and %% in restore_command: a literal % must be doubled.
    let word = |s: &str| sh_word(s).replace('%', "%%");
    let mut cmd = format!("{} archive-get", word(&exe));
    if let Some(cfg) = &settings.config_file {
        cmd.push_str(&format!(
            " --config {}",
            word(&absolute(&cfg.display().to_string()))
        ));
    }
    cmd.push_str(&format!(" --stanza {}", word(stanza)));
    for &o in RESTORE_COMMAND_OPTIONS {
        let value = match (o, spool) {
            ("spool-path", Some(dir)) => dir.display().to_string(),
            _ => match settings.get(o) {
                Some(v)
                    if !matches!(
                        v.source,
                        crate::config::Source::Default | crate::config::Source::File(..)
                    ) =>
                {
                    let local = o == "repo" && !v.value.contains("://");
                    if PATH_OPTIONS.contains(&o) || local {
                        absolute(&v.value)
                    } else {
                        v.value.clone()
                    }
                }
                _ => continue,
            },
        };
        cmd.push_str(&format!(" --{o} {}", word(&value)));
    }
    for o in ["repo-s3-key", "repo-s3-key-secret"] {
        if settings.get(o).is_some_and(|v| {
            matches!(
                v.source,
                crate::config::Source::CommandLine | crate::config::Source::Env(_)
            )
        }) {
            log::warn!(
                "restore_command does not carry {o} (it would be written into postgresql.auto.conf); \
                 HINT: set it in the config file or in the environment PostgreSQL runs with"
            );
        }
    }
    cmd.push_str(" %f \"%p\"");
    cmd
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    pub label: String,
    pub pg_path: String,
    pub bytes: u64,
    pub written_bytes: u64,
    pub seconds: f64,
    #[serde(rename = "type")]
    pub kind: String,
    pub stop_time: String,
    /// The timeline recovery follows from the backup.
    pub timeline: u32,
    /// A time target without a zone: the zone it was read in (the restored cluster's).
    pub target_zone: Option<String>,
    /// off, or preserve (the backup's own archive_mode and archive_command).
    pub archive_mode: String,
    /// The data directory's links: where each one now points, or null when it was restored as
    /// a plain directory.
    pub links: std::collections::BTreeMap<String, Option<String>>,
    /// The manifest's relation files: path and size, for checks after recovery.
    #[serde(skip)]
    pub files: Vec<(String, u64)>,
    #[serde(skip)]
    pub pg_major: u32,
    /// The backup has no postgresql.conf: its cluster read its configuration from elsewhere
    /// (Debian's /etc/postgresql/<major>/<name>/).
    pub config_outside: bool,
}

/// Said when a restore into a new directory keeps the source's archiving.
fn archiving_warning(stanza: &str) -> String {
    format!(
        "WARNING: the restored cluster keeps the backup's archive_mode and archive_command: once \
         promoted it will archive its WAL and timeline history into stanza '{stanza}', as if it were \
         the cluster the backup came from\nHINT: for a test restore or a copy, restore with \
         --archive-mode off"
    )
}

pub async fn run(settings: &Settings) -> Result<()> {
    let pg_path = PathBuf::from(settings.required("pg-path")?);
    let r = restore(settings, &pg_path, Placement::Operator).await?;
    let target = settings.string("target").unwrap_or("");
    let mut text = format!(
        "restored backup {} into {} ({:.1} MiB, {:.1} MiB written) in {:.1}s; start PostgreSQL to recover{}",
        r.label,
        r.pg_path,
        r.bytes as f64 / 1048576.0,
        r.written_bytes as f64 / 1048576.0,
        r.seconds,
        match r.kind.as_str() {
            "default" => " to the end of the archive".to_string(),
            "standby" => " as a standby".to_string(),
            "immediate" => " to the end of the backup".to_string(),
            k => format!(" to {k} {target}"),
        }
    );
    if let Some(z) = &r.target_zone {
        text.push_str(&format!(
            "\nthe target time has no zone: read, as PostgreSQL will read it, in time zone {z} (the restored cluster's timezone setting)"
        ));
    }
    for (link, to) in &r.links {
        match to {
            Some(dir) => text.push_str(&format!("\nlink {link} -> {dir}")),
            None => text.push_str(&format!(
                "\n{link}: a directory inside the data directory (the backup had a link; map it with --link-map {link}=DIR)"
            )),
        }
    }
    if r.config_outside {
        text.push_str(&format!(
            "\nNOTE: the backup has no postgresql.conf: its cluster read its configuration from outside the data directory (Debian and Ubuntu: /etc/postgresql/{}/<cluster>/, with pg_hba.conf)\nHINT: start the restored cluster with that configuration (pg_ctlcluster, or postgres -c config_file=...), or copy postgresql.conf and pg_hba.conf into {}",
            r.pg_major, r.pg_path
        ));
    }
    if r.archive_mode == "preserve" && !settings.flag("delta")? && !settings.flag("force")? {
        text.push('\n');
        text.push_str(&archiving_warning(settings.required("stanza")?));
    }
    emit(
        settings,
        &text,
        serde_json::to_value(&r).expect("serializes"),
    );
    Ok(())
}

/// Restores into `pg_path` with the restore options in `settings`, putting what lies outside
/// the data directory as `placement` says.
pub async fn restore(
    settings: &Settings,
    pg_path: &Path,
    placement: Placement<'_>,
) -> Result<Restored> {
    let started = Instant::now();
    let stanza_name = settings.required("stanza")?.to_string();
    let plan = Plan::read(settings, placement)?;
    if pg_path.join("postmaster.pid").exists() {
        let pid = std::fs::read_to_string(pg_path.join("postmaster.pid")).unwrap_or_default();
        let pid: i32 = pid
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        // SAFETY: kill with signal 0 only checks whether the process exists.
        if pid > 0 && unsafe { libc::kill(pid, 0) } == 0 {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("PostgreSQL is running in {} (pid {pid})", pg_path.display()),
            )
            .hint("stop it first; pgfrost never restores under a running server"));
        }
    }
    if !dir_is_empty(pg_path) && !plan.delta && !plan.force {
        return Err(Error::new(ErrorKind::Conflict, format!("{} is not empty", pg_path.display()))
            .hint("restore into an empty directory, or give --delta (rewrite what differs) or --force (overwrite)"));
    }

    let repo = open_repo(settings).await?;
    stanza::current(&repo, &stanza_name).await?;
    let lease = super::read_lease(&repo, &stanza_name, "restore").await?;
    let r = restore_from(
        settings,
        &repo,
        &stanza_name,
        pg_path,
        placement,
        &plan,
        started,
    )
    .await;
    if let Some(l) = lease {
        l.release().await;
    }
    r
}

/// Decides where tablespaces and links go, and checks every such place before anything is
/// written.
fn place(
    m: &Manifest,
    pg_path: &Path,
    placement: Placement,
    plan: &Plan,
) -> Result<(Places, std::collections::BTreeMap<String, Option<String>>)> {
    let (delta, force) = (plan.delta, plan.force);
    for (oid, _) in &plan.tablespace_map {
        if !m.tablespaces.iter().any(|t| t.oid == *oid) {
            return Err(Error::config(format!(
                "backup {} has no tablespace with OID {oid}",
                m.label
            ))
            .hint(tablespace_list(m)));
        }
    }
    let mut spc: HashMap<u32, PathBuf> = HashMap::new();
    for t in &m.tablespaces {
        let mapped = plan.tablespace_map.iter().find(|(o, _)| *o == t.oid);
        let loc = match (mapped, placement) {
            (_, Placement::Scratch(dir, _)) => dir.join("tablespaces").join(t.oid.to_string()),
            (Some((_, dir)), _) => dir.clone(),
            (None, Placement::Operator) => PathBuf::from(&t.location),
        };
        if let Some(why) = foreign_cluster(&loc, pg_path) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "tablespace {} ({}) cannot go to {}: {why}",
                    t.name,
                    t.oid,
                    loc.display()
                ),
            )
            .hint("map it elsewhere with --tablespace-map OID=DIR"));
        }
        if !dir_is_empty(&loc) && !delta && !force {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "tablespace {} ({}) location {} is not empty",
                    t.name,
                    t.oid,
                    loc.display()
                ),
            )
            .hint("map it elsewhere with --tablespace-map OID=DIR, or give --delta or --force"));
        }
        spc.insert(t.oid, loc);
    }

    let links: Vec<&manifest::LinkEntry> = m
        .links
        .iter()
        .filter(|l| !l.path.starts_with("pg_tblspc/"))
        .collect();
    let names = || {
        if links.is_empty() {
            "it has none besides tablespaces".to_string()
        } else {
            format!(
                "its links: {}",
                links
                    .iter()
                    .map(|l| l.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    for (path, _) in &plan.link_map {
        if !links.iter().any(|l| l.path == *path) {
            return Err(
                Error::config(format!("backup {} has no link {path} to map", m.label))
                    .hint(names()),
            );
        }
    }
    let mut linked: HashMap<String, PathBuf> = HashMap::new();
    let mut report = std::collections::BTreeMap::new();
    for l in &links {
        let here = pg_path.join(&l.path);
        let mapped = plan.link_map.iter().find(|(p, _)| *p == l.path);
        let to = match (mapped, placement) {
            (Some((_, dir)), Placement::Operator) => {
                if let Some(why) = foreign_cluster(dir, pg_path) {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!("link {} cannot point to {}: {why}", l.path, dir.display()),
                    )
                    .hint(format!(
                        "map it to a directory of the restored cluster's own (--link-map {}=DIR), or leave it out to restore it as a plain directory",
                        l.path
                    )));
                }
                if !dir_is_empty(dir)
                    && !delta
                    && !force
                    && std::fs::read_link(&here).ok().as_deref() != Some(dir.as_path())
                {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!("link {} target {} is not empty", l.path, dir.display()),
                    )
                    .hint("map it to an empty directory, or give --delta or --force"));
                }
                Some(dir.clone())
            }
            // Over the cluster's own data directory, a link already pointing where the backup
            // recorded is the operator's layout, kept as it is.
            (None, Placement::Operator)
                if (delta || force)
                    && std::fs::read_link(&here).ok().as_deref() == Some(Path::new(&l.target)) =>
            {
                Some(PathBuf::from(&l.target))
            }
            _ => None,
        };
        if to.is_none() {
            log::info!(
                "restore: link {} (to {}) restored as a plain directory{}",
                l.path,
                l.target,
                match placement {
                    Placement::Operator => format!("; map it with --link-map {}=DIR", l.path),
                    Placement::Scratch(..) => String::new(),
                }
            );
        }
        report.insert(l.path.clone(), to.as_ref().map(|d| d.display().to_string()));
        if let Some(d) = to {
            linked.insert(l.path.clone(), d);
        }
    }
    Ok((
        Places {
            pg_path: pg_path.to_path_buf(),
            spc,
            links: linked,
        },
        report,
    ))
}

fn tablespace_list(m: &Manifest) -> String {
    if m.tablespaces.is_empty() {
        return format!("backup {} has no tablespaces", m.label);
    }
    format!(
        "its tablespaces: {}",
        m.tablespaces
            .iter()
            .map(|t| format!("{} ({})", t.oid, t.name))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

async fn restore_from(
    settings: &Settings,
    repo: &Repository,
    stanza_name: &str,
    pg_path: &Path,
    placement: Placement<'_>,
    plan: &Plan,
    started: Instant,
) -> Result<Restored> {
    let stanza_name = stanza_name.to_string();
    let (kind, delta, force) = (plan.kind.clone(), plan.delta, plan.force);
    let pg_path = pg_path.to_path_buf();
    let bs = super::StoreOptions::from_settings(settings)?
        .open(repo, &stanza_name)
        .await?;
    let chosen = choose(repo, &stanza_name, settings, plan, &bs).await?;
    let m = chosen.m;
    log::info!(
        "restore: backup {} ({}, timeline {}, finished {}) into {}, recovering along timeline {}{}",
        m.label,
        m.kind.name(),
        m.timeline,
        m.stop_time,
        pg_path.display(),
        chosen.timeline,
        chosen
            .zone
            .as_deref()
            .map(|z| format!(
                "; the target time has no zone and is read in {z}, the restored cluster's timezone"
            ))
            .unwrap_or_default()
    );
    let (places, link_report) = place(&m, &pg_path, placement, plan)?;
    if !plan.archive_off && !delta && !force {
        log::warn!("{}", archiving_warning(&stanza_name).replace('\n', "; "));
    }

    // SAFETY: geteuid cannot fail.
    let chown = unsafe { libc::geteuid() } == 0;
    // The cluster's owner, as the backup recorded it: what root hands the new directories and
    // the files it writes itself to, so that the owner can start the cluster as it is.
    let version = m
        .files
        .iter()
        .find(|f| f.path == "PG_VERSION" || f.path == PG_CONTROL)
        .ok_or_else(|| Error::corrupt(format!("backup {} has no PG_VERSION", m.label)))?;
    let owner = chown.then_some((version.uid, version.gid));
    // PostgreSQL accepts 0750 only when the cluster allows group access, which its files say.
    let dir_mode = if version.mode & 0o040 != 0 {
        0o750
    } else {
        0o700
    };
    make_cluster_dir(&pg_path, dir_mode, owner)?;
    let fs_err = |what: &str, p: &Path| {
        let (what, p) = (what.to_string(), p.to_path_buf());
        move |e: std::io::Error| Error::io(&what, &p, e)
    };
    let mut roots: HashMap<PathBuf, fsx::Dir> = HashMap::new();
    roots.insert(
        pg_path.clone(),
        fsx::Dir::open(&pg_path).map_err(fs_err("open", &pg_path))?,
    );
    // pg_control goes first of all out of the way: until the restore ends, the directory must
    // not look like a cluster that could be started.
    if let Ok(g) = roots[&pg_path].descend(Path::new("global"), None) {
        let _ = g.remove(std::ffi::OsStr::new("pg_control"));
    }

    let links: Vec<&manifest::LinkEntry> = m
        .links
        .iter()
        .filter(|l| !l.path.starts_with("pg_tblspc/"))
        .collect();
    if delta || force {
        // Whatever the backup does not have goes: stale WAL, dropped relations, old labels.
        // An entry of another type than the backup's (a link where it has a directory or a
        // file) goes too, so that nothing below is ever reached through it.
        let files: HashSet<PathBuf> = m.files.iter().map(|f| places.target_of(&f.path)).collect();
        let dirs: HashSet<PathBuf> = m.dirs.iter().map(|d| places.target_of(&d.path)).collect();
        let linked: HashSet<PathBuf> = m.links.iter().map(|l| pg_path.join(&l.path)).collect();
        let mut todo = vec![pg_path.clone()];
        todo.extend(places.outside().cloned());
        let mut removed = 0;
        for root in todo {
            let Ok(top) = fsx::Dir::open(&root) else {
                continue;
            };
            for e in walkdir::WalkDir::new(&root)
                .follow_links(false)
                .contents_first(true)
                .into_iter()
                .filter_map(|e| e.ok())
            {
                let (p, ft) = (e.path(), e.file_type());
                let wanted = if ft.is_symlink() {
                    linked.contains(p)
                } else if ft.is_dir() {
                    dirs.contains(p) || linked.contains(p)
                } else {
                    ft.is_file() && files.contains(p)
                };
                if e.depth() == 0 || wanted {
                    continue;
                }
                let rel = p.strip_prefix(&root).unwrap_or(p);
                let Ok((parent, name)) = fsx::split(rel) else {
                    continue;
                };
                // Removed through its directory's descriptor: a directory above it swapped
                // for a link since the walk saw it makes this fail, never remove elsewhere.
                if top
                    .descend(parent, None)
                    .and_then(|d| d.remove(name))
                    .is_ok()
                {
                    removed += 1;
                }
            }
        }
        log::info!("restore: removed {removed} file(s) and directories the backup does not have");
    }
    let mk = |d: &fsx::Dir| give_dir(d, owner);
    let pg_dir = fsx::Dir::open(&pg_path).map_err(fs_err("open", &pg_path))?;
    for t in &m.tablespaces {
        let loc = &places.spc[&t.oid];
        make_dir(loc, owner)?;
        let link = pg_path.join(format!("pg_tblspc/{}", t.oid));
        let name = std::ffi::OsString::from(t.oid.to_string());
        let tb = pg_dir
            .descend(Path::new("pg_tblspc"), Some(&mk))
            .map_err(fs_err("create", link.parent().unwrap()))?;
        if tb
            .read_link(&name)
            .map_err(fs_err("read", &link))?
            .as_deref()
            != Some(loc.as_path())
        {
            tb.symlink(loc, &name).map_err(fs_err("link", &link))?;
        }
        if let Some((uid, gid)) = owner {
            tb.lchown(&name, uid, gid).map_err(fs_err("chown", &link))?;
        }
    }
    for l in &links {
        let p = pg_path.join(&l.path);
        let (parent, name) = fsx::split(Path::new(&l.path)).map_err(fs_err("create", &p))?;
        let pd = pg_dir
            .descend(parent, Some(&mk))
            .map_err(fs_err("create", &p))?;
        let current = pd.read_link(name).map_err(fs_err("read", &p))?;
        match places.links.get(&l.path) {
            Some(dir) => {
                make_dir(dir, owner)?;
                // A plain directory left by an earlier restore (--delta, --force) is replaced.
                if current.as_deref() != Some(dir.as_path()) {
                    pd.symlink(dir, name).map_err(fs_err("link", &p))?;
                }
                if let Some((uid, gid)) = owner {
                    pd.lchown(name, uid, gid).map_err(fs_err("chown", &p))?;
                }
            }
            None => {
                // Only the link goes, never what it points to.
                if current.is_some() {
                    pd.remove(name).map_err(fs_err("remove", &p))?;
                }
                let d = pd
                    .descend(Path::new(name), Some(&mk))
                    .map_err(fs_err("create", &p))?;
                d.chmod(dir_mode).map_err(fs_err("chmod", &p))?;
                give_dir(&d, owner).map_err(fs_err("chown", &p))?;
            }
        }
    }
    for loc in places.outside() {
        roots.insert(
            loc.clone(),
            fsx::Dir::open(loc).map_err(fs_err("open", loc))?,
        );
    }
    for d in &m.dirs {
        let (root, sub) = places.locate(&d.path);
        dir_below(&roots, owner, root, &sub, true)
            .map_err(fs_err("create", &places.target_of(&d.path)))?;
    }

    let mut jobs: Vec<Job> = m
        .files
        .iter()
        .filter(|f| f.path != PG_CONTROL)
        .map(|f| Job {
            path: places.target_of(&f.path),
            root: places.locate(&f.path).0.to_path_buf(),
            sub: places.locate(&f.path).1,
            size: f.size,
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
            mtime: f.mtime,
            list: f.list.clone(),
        })
        .collect();
    jobs.sort_by_key(|j| j.size);
    log::debug!(
        "restore: index loaded ({} blocks), {} files to write",
        bs.counts().0,
        jobs.len()
    );
    let total: u64 = m.stats.logical_bytes;
    let sh = Arc::new(Shared {
        jobs: Mutex::new(jobs),
        bs: bs.clone(),
        rt: tokio::runtime::Handle::current(),
        delta,
        chown,
        owner,
        roots,
        written: AtomicU64::new(0),
        done: Arc::new(AtomicU64::new(0)),
    });
    let reporter = crate::progress::report("restore", total, Arc::clone(&sh.done));
    let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel(SYNC_QUEUE);
    let flusher = tokio::task::spawn_blocking(move || syncer(sync_rx));
    let mut hs = Vec::new();
    for _ in 0..settings.u32("process-max") {
        let (s, tx) = (Arc::clone(&sh), sync_tx.clone());
        hs.push(tokio::task::spawn_blocking(move || worker(s, tx)));
    }
    drop(sync_tx);
    let mut first = None;
    for h in hs {
        if let Err(e) = h
            .await
            .map_err(|e| Error::internal(format!("restore worker failed: {e}")))?
        {
            first.get_or_insert(e);
        }
    }
    log::debug!("restore: every file written");
    // Every file flushed before anything that follows (pg_control last of all).
    if let Err(e) = flusher
        .await
        .map_err(|e| Error::internal(format!("restore syncer failed: {e}")))?
    {
        first.get_or_insert(e);
    }
    log::debug!("restore: every file flushed");
    drop(reporter);
    if let Some(e) = first {
        return Err(e.context(format!(
            "restore of {} into {} failed; the directory will not start",
            m.label,
            pg_path.display()
        )));
    }
    // Directory modes and owners after their contents (a 0500 directory would refuse files).
    for d in &m.dirs {
        let p = places.target_of(&d.path);
        let (root, sub) = places.locate(&d.path);
        let dir = dir_below(&sh.roots, owner, root, &sub, false).map_err(fs_err("open", &p))?;
        dir.chmod(d.mode).map_err(fs_err("chmod", &p))?;
        if chown {
            dir.chown(d.uid, d.gid).map_err(fs_err("chown", &p))?;
        }
    }

    // Recovery: the backup's own label and map, then the settings, then the signal file.
    // The recovery files: written without following links, the cluster owner's, and on disk.
    let write = |rel: &str, text: &str| -> Result<()> {
        let p = pg_path.join(rel);
        let mut f = open_below(&sh.roots, owner, &pg_path, Path::new(rel), true)
            .map_err(fs_err("open", &p))?;
        f.write_all(text.as_bytes()).map_err(fs_err("write", &p))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(fs_err("chmod", &p))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(fs_err("chown", &p))?;
        }
        f.sync_all().map_err(fs_err("sync", &p))
    };
    write("backup_label", &m.backup_label)?;
    if m.tablespace_map.is_some() {
        // PostgreSQL recreates pg_tblspc/<oid> from this file when recovery starts, so it must
        // name where the tablespaces are now, not where they were.
        let mut text = String::new();
        for t in &m.tablespaces {
            text.push_str(&format!("{} {}\n", t.oid, places.spc[&t.oid].display()));
        }
        write("tablespace_map", &text)?;
    }
    let mut conf = format!(
        "\n# Recovery settings written by pgfrost restore of backup {} on {}\nrestore_command = {}\n",
        m.label,
        crate::repo::format::now_rfc3339(),
        quote(&restore_command(
            settings,
            &stanza_name,
            match placement {
                Placement::Scratch(dir, _) => Some(dir.join("spool")),
                Placement::Operator => None,
            }
            .as_deref()
        ))
    );
    if plan.archive_off {
        // After the settings of the backup's postgresql.auto.conf, so this one wins; a
        // postgresql.conf outside the data directory is read before this file too.
        conf.push_str("archive_mode = off\n");
    }
    let target = settings.string("target").unwrap_or("");
    match kind.as_str() {
        "immediate" => conf.push_str("recovery_target = 'immediate'\n"),
        "time" => conf.push_str(&format!("recovery_target_time = {}\n", quote(target))),
        "xid" => conf.push_str(&format!("recovery_target_xid = {}\n", quote(target))),
        "lsn" => conf.push_str(&format!("recovery_target_lsn = {}\n", quote(target))),
        "name" => conf.push_str(&format!("recovery_target_name = {}\n", quote(target))),
        _ => {}
    }
    if let Some(a) = settings.string("target-action") {
        conf.push_str(&format!("recovery_target_action = '{a}'\n"));
    }
    if settings.flag("target-exclusive")? {
        conf.push_str("recovery_target_inclusive = off\n");
    }
    if let Some(t) = settings.string("target-timeline") {
        conf.push_str(&format!("recovery_target_timeline = {}\n", quote(t)));
    }
    // Recovery settings an earlier restore (or the operator) left in the restored files would
    // still apply: a cluster once restored to a time would stop at that time again, promote,
    // and lose everything written since. They are commented out first, as pgBackRest does.
    // Both files are read and rewritten through handles that follow no link (fsx).
    let stamp = format!(
        "disabled by pgfrost restore of backup {} on {}",
        m.label,
        crate::repo::format::now_rfc3339()
    );
    for file in ["postgresql.conf", "postgresql.auto.conf"] {
        let p = pg_path.join(file);
        let exists = std::fs::symlink_metadata(&p).is_ok_and(|md| md.is_file());
        if !exists && file == "postgresql.conf" {
            continue;
        }
        let mut f = open_below(&sh.roots, owner, &pg_path, Path::new(file), false)
            .map_err(fs_err("open", &p))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut f, &mut text).map_err(fs_err("read", &p))?;
        let (mut text, disabled) = disable_recovery_settings(&text, &stamp);
        if !disabled.is_empty() {
            log::info!(
                "restore: {file}: commented out the recovery settings it held ({})",
                disabled.join(", ")
            );
        }
        if file == "postgresql.auto.conf" {
            text.push_str(&conf);
        } else if disabled.is_empty() {
            continue;
        }
        f.set_len(0).map_err(fs_err("write", &p))?;
        f.seek(std::io::SeekFrom::Start(0))
            .map_err(fs_err("write", &p))?;
        f.write_all(text.as_bytes()).map_err(fs_err("write", &p))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(fs_err("chown", &p))?;
        }
        f.sync_all().map_err(fs_err("sync", &p))?;
    }
    let signal = if kind == "standby" {
        "standby.signal"
    } else {
        "recovery.signal"
    };
    write(signal, "")?;
    // Everything on disk before pg_control: the files were flushed as they were written, the
    // recovery files just above; their directory entries are flushed here.
    let mut dirs: Vec<(&Path, PathBuf)> = m.dirs.iter().map(|d| places.locate(&d.path)).collect();
    dirs.push((&pg_path, PathBuf::new()));
    dirs.extend(places.outside().map(|p| (p.as_path(), PathBuf::new())));
    // The directories links became (those that point elsewhere are in `outside`).
    dirs.extend(
        links
            .iter()
            .filter(|l| !places.links.contains_key(&l.path))
            .map(|l| (pg_path.as_path(), PathBuf::from(&l.path))),
    );
    for (root, sub) in &dirs {
        dir_below(&sh.roots, owner, root, sub, false)
            .and_then(|d| d.sync())
            .map_err(fs_err("sync", &root.join(sub)))?;
    }
    let ctl = m
        .files
        .iter()
        .find(|f| f.path == PG_CONTROL)
        .ok_or_else(|| Error::corrupt(format!("backup {} has no {PG_CONTROL}", m.label)))?;
    let ctl_job = Job {
        path: pg_path.join(PG_CONTROL),
        root: pg_path.clone(),
        sub: PathBuf::from(PG_CONTROL),
        size: ctl.size,
        mode: ctl.mode,
        uid: ctl.uid,
        gid: ctl.gid,
        mtime: ctl.mtime,
        list: ctl.list.clone(),
    };
    let sh2 = Arc::clone(&sh);
    tokio::task::spawn_blocking(move || -> Result<()> {
        restore_file(&sh2, &ctl_job, &mut Vec::new())?
            .sync_all()
            .map_err(|e| Error::io("sync", &ctl_job.path, e))?;
        let g = ctl_job.path.parent().unwrap();
        dir_below(
            &sh2.roots,
            sh2.owner,
            &ctl_job.root,
            Path::new("global"),
            false,
        )
        .and_then(|d| d.sync())
        .map_err(|e| Error::io("sync", g, e))
    })
    .await
    .map_err(|e| Error::internal(format!("restore failed: {e}")))??;

    let written = sh.written.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    // The result line says it; an INFO line would print it twice.
    log::debug!(
        "restore: {} restored in {secs:.1}s, {:.1} MiB written",
        m.label,
        written as f64 / 1048576.0
    );
    Ok(Restored {
        label: m.label.clone(),
        pg_path: pg_path.display().to_string(),
        bytes: total,
        written_bytes: written,
        seconds: secs,
        kind,
        timeline: chosen.timeline,
        target_zone: chosen.zone.clone(),
        stop_time: m.stop_time.clone(),
        archive_mode: if plan.archive_off { "off" } else { "preserve" }.into(),
        links: link_report,
        files: m.files.iter().map(|f| (f.path.clone(), f.size)).collect(),
        pg_major: m.pg_major,
        config_outside: !m.files.iter().any(|f| f.path == "postgresql.conf"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words() {
        assert_eq!(sh_word("/usr/bin/pgfrost"), "/usr/bin/pgfrost");
        assert_eq!(sh_word("/opt/my dir/pgfrost"), "'/opt/my dir/pgfrost'");
        assert_eq!(sh_word("it's"), "'it'\\''s'");
    }

    /// What PostgreSQL does to restore_command before the shell sees it.
    fn substitute(cmd: &str, f: &str, p: &str) -> String {
        let mut out = String::new();
        let mut it = cmd.chars().peekable();
        while let Some(c) = it.next() {
            match (c, it.peek()) {
                ('%', Some('f')) => out.push_str(f),
                ('%', Some('p')) => out.push_str(p),
                ('%', Some('%')) => out.push('%'),
                _ => {
                    out.push(c);
                    continue;
                }
            }
            it.next();
        }
        out
    }

    /// restore_command, with every option it can carry given on the command line or in the
    /// environment (some of them awkward: spaces, quotes, %), is a command line archive-get
    /// accepts, in that position, with the values the restore had.
    #[test]
    fn restore_command_is_an_archive_get_the_cli_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("pgfrost's.toml");
        std::fs::write(&cfg, "stanza = 'main'\n").unwrap();
        let value = |o: &str| match o {
            "repo" => "/srv/pg frost/100%repo".to_string(),
            "repo-s3-endpoint" => "http://127.0.0.1:9000".into(),
            "repo-s3-region" => "eu-west-1".into(),
            "repo-s3-uri-style" => "host".into(),
            "repo-s3-ca-file" => "/etc/pgfrost/private ca.pem".into(),
            "key-file" => "/etc/pgfrost/it's key.json".into(),
            "passphrase-file" => "/etc/pgfrost/pass".into(),
            "spool-path" => "/var/spool/pgfrost %p".into(),
            "archive-get-queue-max" => "64MiB".into(),
            "process-max" => "3".into(),
            o => panic!("no test value for {o}"),
        };
        let (mut cli, mut env) = (HashMap::new(), HashMap::new());
        for (i, o) in RESTORE_COMMAND_OPTIONS.iter().enumerate() {
            if i % 2 == 0 {
                cli.insert(o.to_string(), value(o));
            } else {
                env.insert(crate::config::env_name(o), value(o));
            }
        }
        let settings = Settings::resolve(&cli, cfg.to_str(), &env).unwrap();
        let cmd = restore_command(&settings, "main", None);
        let line = substitute(&cmd, "000000010000000000000002", "pg_wal/RECOVERYXLOG");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("for a in {line}; do printf '%s\\0' \"$a\"; done"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}");
        let words: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .split_terminator('\0')
            .map(str::to_string)
            .collect();
        assert_eq!(words[1], "archive-get", "{cmd}");
        let m = crate::cli::build()
            .try_get_matches_from(&words)
            .unwrap_or_else(|e| panic!("{cmd}: {e}"));
        let (path, leaf) = crate::cli::command_path(&m);
        assert_eq!(path, ["archive-get"]);
        assert_eq!(
            leaf.get_one::<String>("name").unwrap(),
            "000000010000000000000002"
        );
        assert_eq!(
            leaf.get_one::<String>("dest").unwrap(),
            "pg_wal/RECOVERYXLOG"
        );
        let given = crate::cli::given_options(&m);
        for o in RESTORE_COMMAND_OPTIONS {
            assert_eq!(given.get(*o), Some(&value(o)), "{o} in {cmd}");
        }
        assert_eq!(given.get("stanza").map(String::as_str), Some("main"));
        let config = m
            .get_one::<String>("config")
            .or(leaf.get_one::<String>("config"));
        assert_eq!(config.map(PathBuf::from), Some(cfg.clone()));

        // A drill's queue goes to its scratch directory whatever spool-path says.
        let cmd = restore_command(&settings, "main", Some(Path::new("/tmp/drill/spool")));
        assert!(cmd.contains("--spool-path /tmp/drill/spool"), "{cmd}");
        assert!(!cmd.contains("pgfrost %"), "{cmd}");
    }

    #[test]
    fn places_follow_tablespaces_and_mapped_links() {
        let p = Places {
            pg_path: "/data".into(),
            spc: HashMap::from([(16400, PathBuf::from("/spc"))]),
            links: HashMap::from([("pg_wal".to_string(), PathBuf::from("/wal"))]),
        };
        assert_eq!(p.target_of("base/1/1259"), Path::new("/data/base/1/1259"));
        assert_eq!(p.target_of("pg_tblspc/16400"), Path::new("/spc"));
        assert_eq!(
            p.target_of("pg_tblspc/16400/PG_15_1/5/16401"),
            Path::new("/spc/PG_15_1/5/16401")
        );
        assert_eq!(
            p.target_of("pg_wal/archive_status"),
            Path::new("/wal/archive_status")
        );
        assert_eq!(p.target_of("pg_wal"), Path::new("/wal"));
        assert_eq!(p.target_of("pg_walx"), Path::new("/data/pg_walx"));
    }

    #[test]
    fn another_clusters_directories_are_foreign() {
        let d = tempfile::tempdir().unwrap();
        let other = d.path().join("other");
        std::fs::create_dir_all(other.join("global")).unwrap();
        std::fs::write(other.join("PG_VERSION"), "15\n").unwrap();
        let wal = d.path().join("wal");
        std::fs::create_dir_all(wal.join("archive_status")).unwrap();
        let mine = d.path().join("mine");
        assert!(foreign_cluster(&other.join("pg_wal"), &mine).is_some());
        assert!(foreign_cluster(&other, &mine).is_some());
        assert!(foreign_cluster(&wal, &mine).is_some());
        assert!(foreign_cluster(&wal.join("sub/deeper"), &mine).is_some());
        assert!(foreign_cluster(&d.path().join("new"), &mine).is_none());
        // The WAL directory the target's own pg_wal links to is its own.
        std::fs::create_dir_all(&mine).unwrap();
        std::os::unix::fs::symlink(&wal, mine.join("pg_wal")).unwrap();
        assert!(foreign_cluster(&wal, &mine).is_none());
        // So is anything inside the target itself.
        assert!(foreign_cluster(&mine.join("pg_wal2"), &mine).is_none());
    }

    #[test]
    fn old_recovery_settings_are_commented_out() {
        let text = "shared_buffers = 128MB\nrestore_command = 'old'\n  Recovery_Target_Time='2026-11-21 09:30:00+00'\nrecovery_target_action promote\n# recovery_target_name = 'x'\nrecovery_target_xidx = 1\narchive_mode = off\nrecovery_min_apply_delay = 0";
        let (out, names) = disable_recovery_settings(text, "disabled by test");
        assert_eq!(
            names,
            [
                "restore_command",
                "recovery_target_time",
                "recovery_target_action"
            ]
        );
        assert_eq!(
            out,
            "shared_buffers = 128MB\n# disabled by test: restore_command = 'old'\n# disabled by test:   Recovery_Target_Time='2026-11-21 09:30:00+00'\n# disabled by test: recovery_target_action promote\n# recovery_target_name = 'x'\nrecovery_target_xidx = 1\narchive_mode = off\nrecovery_min_apply_delay = 0"
        );
    }

    #[test]
    fn times_as_postgresql_reads_them() {
        let ms = |s: &str| match parse_target_time(s).unwrap() {
            TargetTime::At(ms) => ms,
            TargetTime::Local(_) => panic!("{s} has a zone"),
        };
        assert_eq!(ms("1970-01-01 00:00:00+00"), 0);
        assert_eq!(ms("2026-11-21 09:30:00.123456+00"), 1795253400123);
        assert_eq!(ms("2026-11-21 09:30:00.5+00"), 1795253400500);
        assert_eq!(ms("2026-11-21T10:30:00+01"), 1795253400000);
        assert_eq!(ms("2026-11-21 04:00:00-05:30"), 1795253400000);
        assert_eq!(ms("2026-11-21 09:30:00Z"), 1795253400000);
        for s in [
            "2026-11-21 18:30:00+09",
            "2026-11-21 18:30:00+0900",
            "2026-11-21 18:30:00+09:00",
            "2026-11-21 18:30:00 +09:00",
            "2026-11-21 18:30:00 Asia/Tokyo",
            "2026-11-21 09:30:00 UTC",
            "2026-11-21 09:30 utc",
        ] {
            assert_eq!(ms(s), 1795253400000, "{s}");
        }
        let local = parse_target_time("2026-11-21 18:30:00").unwrap();
        assert_eq!(local.millis("Asia/Tokyo"), Ok(1795253400000));
        assert_eq!(local.millis("GMT"), Ok(1795253400000 + 9 * 3600 * 1000));
        // Daylight saving time follows the zone's rules.
        let summer = parse_target_time("2026-07-01 12:00:00").unwrap();
        assert_eq!(
            summer.millis("Europe/Berlin").unwrap(),
            ms("2026-07-01 10:00:00+00")
        );
        for bad in [
            "garbage",
            "yesterday",
            "2026-13-45 99:99:99",
            "2026-02-30 10:00:00",
            "2026-11-21 09:30:00+99",
            "2026-11-21 09:30:00 Mars/Olympus",
            "2026-11-21",
        ] {
            assert!(parse_target_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timezone_of_a_data_directory() {
        assert_eq!(timezone_setting("", ""), None);
        assert_eq!(
            timezone_setting(
                "timezone = 'Etc/UTC'\t# set by initdb\n",
                "TimeZone='Asia/Tokyo'\n"
            )
            .as_deref(),
            Some("Asia/Tokyo")
        );
        assert_eq!(
            timezone_setting("timezone = Europe/Berlin # x\n#timezone = 'UTC'\n", "").as_deref(),
            Some("Europe/Berlin")
        );
    }
}
