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
use crate::repo::Repository;
use crate::repo::blockstore::{BlockId, BlockStore, Placed};
use crate::repo::format::hex_array;
use crate::repo::manifest::{self, Manifest};
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

/// Parses a PostgreSQL-style timestamp: `2026-11-21 09:30:00[.123456][Z|+HH[:MM]|-HH[:MM]]`
/// (or with `T`). Without a zone it is taken as UTC. Returns Unix milliseconds.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() < 19 {
        return None;
    }
    let (date, rest) = s.split_at(10);
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let rest = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('T'))?;
    let (time, mut zone) = rest.split_at(8);
    let t: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if d.len() != 3 || t.len() != 3 {
        return None;
    }
    let mut millis = 0i64;
    if let Some(z) = zone.strip_prefix('.') {
        let digits: String = z.chars().take_while(|c| c.is_ascii_digit()).collect();
        millis = format!("{digits:0<3}")[..3].parse().ok()?;
        zone = &z[digits.len()..];
    }
    let offset = match zone.trim() {
        "" | "Z" | "UTC" | "+00" | "+00:00" => 0,
        z => {
            let sign = match z.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = z[1..].split_once(':').unwrap_or((&z[1..], "0"));
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m, day) = (d[0] - (d[1] <= 2) as i64, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some((days * 86400 + t[0] * 3600 + t[1] * 60 + t[2] - offset) * 1000 + millis)
}

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut r| r.next().is_none())
        .unwrap_or(true)
}

fn io(what: &str, p: &Path, e: std::io::Error) -> Error {
    let hint = (e.kind() == std::io::ErrorKind::StorageFull)
        .then_some("free space on the target file system and run the restore again");
    let err = Error::storage(format!("cannot {what} {}: {e}", p.display()));
    match hint {
        Some(h) => err.hint(h),
        None => err,
    }
}

/// Picks the backup: `--set`, else the newest that can reach the target (for a time target, the
/// newest that finished before it).
async fn choose(
    repo: &Repository,
    stanza: &str,
    settings: &Settings,
    kind: &str,
) -> Result<Manifest> {
    if let Some(set) = settings.string("set") {
        return manifest::read(repo, stanza, set).await;
    }
    let labels = manifest::list(repo, stanza).await?;
    if labels.is_empty() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("stanza '{stanza}' has no backups"),
        )
        .hint(format!("take one with 'pgfrost backup --stanza {stanza}'")));
    }
    // Recovery cannot go back before the end of a backup: for a time or LSN target, only backups
    // that ended before it qualify. xid and restore-point targets cannot be placed without
    // reading WAL: the newest backup is used, and --set picks an older one.
    let target = settings.string("target").unwrap_or("");
    let before_time = match kind {
        "time" => Some(parse_time(target).ok_or_else(|| {
            Error::config(format!("cannot read the target time '{target}'"))
                .hint("write it as 2026-11-21 09:30:00+00")
        })?),
        _ => None,
    };
    let before_lsn = match kind {
        "lsn" => Some(crate::pg::wal::parse_lsn(target).ok_or_else(|| {
            Error::config(format!("cannot read the target LSN '{target}'"))
                .hint("write it as 0/16B3748")
        })?),
        _ => None,
    };
    for l in labels.iter().rev() {
        let m = manifest::read(repo, stanza, l).await?;
        let stop_lsn = crate::pg::wal::parse_lsn(&m.stop_lsn).unwrap_or(u64::MAX);
        if before_time.is_some_and(|t| m.stop_ms >= t) || before_lsn.is_some_and(|t| stop_lsn > t) {
            continue;
        }
        return Ok(m);
    }
    Err(Error::new(ErrorKind::NotFound, format!("no backup of stanza '{stanza}' ended before the target {target}")).hint(
        "choose a later target, or a backup with --set (recovery cannot go back before the end of a backup)",
    ))
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
        .map_err(|e| io("create", &j.path, e))?;
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
                .map_err(|e| io("write", &j.path, e))?;
            sh.written.fetch_add(len as u64, Ordering::Relaxed);
            from += len;
            s = e;
        }
        i = end;
    }
    f.set_len(j.size).map_err(|e| io("truncate", &j.path, e))?;
    f.set_permissions(std::fs::Permissions::from_mode(j.mode))
        .map_err(|e| io("chmod", &j.path, e))?;
    let mtime = UNIX_EPOCH + Duration::from_secs(j.mtime.max(0) as u64);
    f.set_modified(mtime)
        .map_err(|e| io("set the time of", &j.path, e))?;
    if sh.chown {
        std::os::unix::fs::fchown(&f, Some(j.uid), Some(j.gid))
            .map_err(|e| io("chown", &j.path, e))?;
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
        f.sync_all().map_err(|e| io("sync", &path, e))?;
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
    /// links as plain directories, the archive-get queue in `spool`), whatever the maps say.
    Scratch(&'a Path),
}

/// The restore's options, read and checked before anything is written.
struct Plan {
    kind: String,
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
        if ["time", "xid", "lsn", "name"].contains(&kind.as_str()) {
            settings.required("target")?;
        }
        let tablespace_map = settings
            .map("tablespace-map")?
            .into_iter()
            .map(|(oid, dir)| (oid.parse().expect("checked by Settings::map"), dir))
            .collect();
        let mut plan = Plan {
            kind,
            delta: settings.flag("delta")?,
            force: settings.flag("force")?,
            archive_off: settings.string("archive-mode") == Some("off"),
            tablespace_map,
            link_map: settings.map("link-map")?,
        };
        if let Placement::Scratch(_) = placement {
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
            std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|e| io("chown", p, e))
        }
        None => Ok(()),
    }
}

/// A directory of the cluster's own (the data directory, a link's plain directory): created,
/// with the cluster's directory mode and, as root, its owner.
fn make_cluster_dir(dir: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    make_dir(dir, owner)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io("chmod", dir, e))?;
    give(dir, owner)
}

/// Creates `dir` and its missing parents; as root, gives what it created to the cluster's
/// owner (root's umask would leave them root's and closed to the postgres user).
fn make_dir(dir: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    missing.into_iter().try_for_each(|d| give(d, owner))
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
    "key-file",
    "passphrase-file",
    "spool-path",
    "archive-get-queue-max",
    "process-max",
];

/// Options whose values are paths: made absolute, since restore_command runs in the data
/// directory.
const PATH_OPTIONS: &[&str] = &["key-file", "passphrase-file", "spool-path"];

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
    for (link, to) in &r.links {
        match to {
            Some(dir) => text.push_str(&format!("\nlink {link} -> {dir}")),
            None => text.push_str(&format!(
                "\n{link}: a directory inside the data directory (the backup had a link; map it with --link-map {link}=DIR)"
            )),
        }
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
            (_, Placement::Scratch(dir)) => dir.join("tablespaces").join(t.oid.to_string()),
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
                    Placement::Scratch(_) => String::new(),
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
    let m = choose(repo, &stanza_name, settings, &kind).await?;
    log::info!(
        "restore: backup {} ({}, finished {}) into {}",
        m.label,
        m.kind.name(),
        m.stop_time,
        pg_path.display()
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
        move |e: std::io::Error| io(&what, &p, e)
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

    let bs = BlockStore::open(repo.store.clone(), &stanza_name, repo.keys.clone()).await?;
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
    });
    let reporter = {
        let sh = Arc::clone(&sh);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                log::info!(
                    "restore: {} MiB written of {} MiB",
                    sh.written.load(Ordering::Relaxed) >> 20,
                    total >> 20
                );
            }
        })
    };
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
    reporter.abort();
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
    let write_as = |rel: &str, text: &str, append: bool| -> Result<()> {
        let p = pg_path.join(rel);
        let mut f = open_below(&sh.roots, owner, &pg_path, Path::new(rel), !append)
            .map_err(fs_err("open", &p))?;
        if append {
            f.seek(std::io::SeekFrom::End(0))
                .map_err(fs_err("write", &p))?;
        }
        f.write_all(text.as_bytes()).map_err(fs_err("write", &p))?;
        if !append {
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(fs_err("chmod", &p))?;
        }
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(fs_err("chown", &p))?;
        }
        f.sync_all().map_err(fs_err("sync", &p))
    };
    let write = |rel: &str, text: &str| write_as(rel, text, false);
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
                Placement::Scratch(dir) => Some(dir.join("spool")),
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
    write_as("postgresql.auto.conf", &conf, true)?;
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
            .map_err(|e| io("sync", &ctl_job.path, e))?;
        let g = ctl_job.path.parent().unwrap();
        dir_below(
            &sh2.roots,
            sh2.owner,
            &ctl_job.root,
            Path::new("global"),
            false,
        )
        .and_then(|d| d.sync())
        .map_err(|e| io("sync", g, e))
    })
    .await
    .map_err(|e| Error::internal(format!("restore failed: {e}")))??;

    let written = sh.written.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    log::info!(
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
        stop_time: m.stop_time.clone(),
        archive_mode: if plan.archive_off { "off" } else { "preserve" }.into(),
        links: link_report,
        files: m.files.iter().map(|f| (f.path.clone(), f.size)).collect(),
        pg_major: m.pg_major,
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
    fn times() {
        assert_eq!(parse_time("1970-01-01 00:00:00+00"), Some(0));
        assert_eq!(
            parse_time("2026-11-21 09:30:00.123456+00"),
            Some(1795253400123)
        );
        assert_eq!(parse_time("2026-11-21 09:30:00.5+00"), Some(1795253400500));
        assert_eq!(parse_time("2026-11-21T10:30:00+01"), Some(1795253400000));
        assert_eq!(parse_time("2026-11-21 04:00:00-05:30"), Some(1795253400000));
        assert_eq!(parse_time("2026-11-21 09:30:00Z"), Some(1795253400000));
        assert_eq!(parse_time("yesterday"), None);
    }
}
