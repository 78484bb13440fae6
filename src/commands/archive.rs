//! archive-push and archive-get: PostgreSQL's archive_command and restore_command.
//!
//! PostgreSQL recycles a WAL segment once archive_command exits 0, so archive-push returns 0 only
//! after the segment is durable in the repository (fsynced file and directory on local disk, a
//! completed PUT on object storage), and never overwrites what is stored.

use super::open_repo;
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result};
use crate::pg::timeline;
use crate::pg::wal::{self, WalFile};
use crate::pg::walrec;
use crate::repo::Repository;
use crate::repo::crypto::{Kind, Opener, Sealer};
use crate::repo::points;
use crate::repo::stanza::{self, StanzaDb};
use crate::repo::wal as repo_wal;
use crate::store::Put;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Most segments one archive-push call ships ahead in async mode (1 GiB of 16 MiB segments).
const ASYNC_BATCH_MAX: usize = 64;
/// Largest WAL file accepted (PostgreSQL allows segments up to 1 GiB).
const MAX_WAL_FILE: u64 = 1 << 30;

/// Where a WAL file is stored: segment-like files under their timeline+log directory
/// (repo/wal.rs).
pub fn object_path(stanza: &str, db: &StanzaDb, file: &WalFile) -> String {
    repo_wal::object_path(stanza, db.id, file)
}

fn parse_name(name: &str) -> Result<WalFile> {
    WalFile::parse(name).ok_or_else(|| {
        Error::config(format!(
            "'{name}' is not a WAL file name (segment, .partial, .history or .backup)"
        ))
        .hint("archive_command must pass %p and restore_command %f and %p")
    })
}

/// What archive-push and archive-get share, read from the settings before any work.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    pub stanza: String,
    /// spool-path: where acknowledgements, dropped-file markers and the prefetch queue live.
    pub spool: PathBuf,
    /// `repo` as given: acknowledgements name the repository they were stored in.
    pub repo: String,
    /// process-max.
    pub workers: u32,
}

impl ArchiveOptions {
    pub fn from_settings(settings: &Settings) -> Result<ArchiveOptions> {
        Ok(ArchiveOptions {
            stanza: settings.required("stanza")?.to_string(),
            spool: PathBuf::from(
                settings
                    .string("spool-path")
                    .unwrap_or("/var/spool/pgfrost"),
            ),
            repo: settings.string("repo").unwrap_or("").to_string(),
            workers: settings.u32("process-max"),
        })
    }

    fn spool_dir(&self, queue: &str) -> PathBuf {
        self.spool.join(&self.stanza).join(queue)
    }
}

/// What archive-push is asked.
#[derive(Debug, Clone)]
pub struct PushOptions {
    pub archive: ArchiveOptions,
    /// archive-async: ship the files waiting behind this one ahead.
    pub async_mode: bool,
    /// archive-push-queue-max, in bytes.
    pub queue_max: Option<u64>,
    /// compress-level; None stores uncompressed.
    pub level: Option<i32>,
}

impl PushOptions {
    pub fn from_settings(settings: &Settings) -> Result<PushOptions> {
        let level = settings.u32("compress-level") as i32;
        Ok(PushOptions {
            archive: ArchiveOptions::from_settings(settings)?,
            async_mode: settings.flag("archive-async")?,
            queue_max: settings.size("archive-push-queue-max")?,
            level: (level > 0).then_some(level),
        })
    }
}

/// The plain BLAKE3 of a WAL file, as operators can compute it themselves (`b3sum`).
fn checksum(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

struct Pusher {
    repo: Repository,
    stanza: String,
    db: StanzaDb,
    level: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pushed {
    Stored,
    AlreadyThere,
}

impl Pusher {
    /// Stores one WAL file. `zstd_workers` > 0 compresses it on that many threads (a lone
    /// segment with idle cores); 0 when several files are pushed in parallel.
    async fn push(self: &Arc<Self>, path: &Path, zstd_workers: u32) -> Result<Pushed> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let file = parse_name(name)?;
        let me = Arc::clone(self);
        let obj = object_path(&self.stanza, &self.db, &file);
        let (obj2, file2, path2) = (obj.clone(), file.clone(), path.to_path_buf());
        // Reading, checking, compressing and sealing 16 MiB: one trip to a blocking thread,
        // not one per step (each handoff costs a context switch on a busy host).
        type Scanned = (Vec<u8>, Vec<u8>, Option<walrec::Scan>);
        let (bytes, sealed, scan) = tokio::task::spawn_blocking(move || -> Result<Scanned> {
            let bytes = read_wal(&path2)?;
            let ss = me.db.wal_segment_size;
            let mut scan = None;
            if file2.has_pages() {
                wal::check_segment(&file2, &bytes, me.db.pg_major, me.db.system_id(), ss)
                    .map_err(|p| refused(&file2, &me.stanza, p.to_string()))?;
                let start = file2.segno(ss).unwrap_or(0) * ss;
                let blcksz = wal::long_header(&bytes).map(|h| h.blcksz).unwrap_or(0);
                if blcksz == 8192 {
                    let mut s = walrec::scan_segment(&bytes, start, None);
                    if s.needs_prev_page.is_some()
                        && let Some(page) = local_prev_page(&path2, &file2, ss)
                    {
                        s = walrec::scan_segment(&bytes, start, Some(&page));
                    }
                    scan = Some(s);
                } else {
                    // The scan knows PostgreSQL's default WAL page size only.
                    log::warn!(
                        "archive-push: {file2} has {blcksz}-byte WAL pages; restore points in it are not recorded (--type name needs --set)"
                    );
                }
            }
            let mut sealer = Sealer::new(me.level);
            if zstd_workers > 1 {
                sealer.set_workers(zstd_workers);
            }
            let sealed = sealer.seal(&me.repo.keys, Kind::Wal, obj2.as_bytes(), &bytes);
            Ok((bytes, sealed, scan))
        })
        .await
        .map_err(|e| Error::internal(format!("sealing task failed: {e}")))??;
        let mut points_created = None;
        if let Some(mut s) = scan {
            if s.needs_prev_page.is_some() {
                s = self.scan_with_stored_prev(&file, &bytes).await.unwrap_or(s);
            }
            if let Some(rem) = s.needs_prev_page {
                log::warn!(
                    "archive-push: {file} begins with the last {rem} bytes of a record that could be a restore point, \
                     and the segment before it is neither beside it nor in the repository; a restore point there is not recorded"
                );
            }
            if matches!(file, WalFile::Segment { .. })
                && let walrec::Stop::Zeros(at) | walrec::Stop::BadPage(at) = s.stopped
            {
                log::warn!(
                    "archive-push: the records of {file} could not be followed past {} ({:?}); restore points after it are not recorded",
                    wal::format_lsn(at),
                    s.stopped
                );
            }
            for p in &s.points {
                log::info!("archive-push: {file} holds restore point {}", p.describe());
            }
            // Before the segment: a stored segment always has its points stored.
            points_created =
                points::write(&self.repo, &self.stanza, &self.db, &file, &s.points).await?;
        }
        match self.repo.store.put_new(&obj, sealed.into()).await? {
            Put::Created => Ok(Pushed::Stored),
            Put::AlreadyExists => {
                // Rare (PostgreSQL retrying after a crash): only now are checksums worth computing.
                let stored = self.open_stored(&obj, &file).await?;
                let (theirs, sum) = (checksum(&stored), checksum(&bytes));
                if theirs == sum {
                    log::warn!(
                        "WAL file {file} was already archived with the same content (BLAKE3 {sum}); nothing stored"
                    );
                    Ok(Pushed::AlreadyThere)
                } else {
                    // The points just written came from the refused file: they must not steer
                    // a restore of the stanza.
                    if let Some(p) = &points_created {
                        self.repo.store.delete(p).await?;
                    }
                    Err(Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "WAL file {file} is already archived with different content: repository has BLAKE3 {theirs}, {} has {sum}; the stored copy was left untouched",
                            path.display()
                        ),
                    )
                    .hint("two clusters may be archiving into one stanza, or the cluster was restored without a new timeline; check archive_command and the stanza"))
                }
            }
        }
    }

    /// Scans `bytes` again with the last page of the segment before it, as stored in the
    /// repository (async pushes ahead may store segments out of order; a restarted archiver
    /// may find the previous segment already recycled). None when it is not stored.
    async fn scan_with_stored_prev(&self, file: &WalFile, bytes: &[u8]) -> Option<walrec::Scan> {
        let ss = self.db.wal_segment_size;
        let segno = file.segno(ss)?;
        let prev = WalFile::parse(&wal::segment_name(file.tli(), segno.checked_sub(1)?, ss))?;
        let obj = object_path(&self.stanza, &self.db, &prev);
        let sealed = self.repo.store.get_opt(&obj).await.ok()??;
        let plain = open_wal(&self.repo, &obj, &prev, &sealed).ok()?;
        let page = plain.get(plain.len().checked_sub(8192)?..)?;
        Some(walrec::scan_segment(bytes, segno * ss, Some(page)))
    }

    async fn open_stored(&self, obj: &str, file: &WalFile) -> Result<Vec<u8>> {
        let sealed = self.repo.store.get(obj).await?;
        open_wal(&self.repo, obj, file, &sealed)
    }
}

fn open_wal(repo: &Repository, obj: &str, file: &WalFile, sealed: &[u8]) -> Result<Vec<u8>> {
    Opener::new()
        .open(&repo.keys, Kind::Wal, obj.as_bytes(), sealed, MAX_WAL_FILE)
        .map_err(|e| {
            Error::corrupt(format!(
                "WAL file {file} (object '{obj}' in repository {}): {e}",
                repo.store.location()
            ))
        })
}

/// The last page of the segment before `file`, from the directory it is archived from: the
/// same timeline's, or at a timeline's first segment the parent's (the newest lower timeline
/// with that segment). None when there is none of full size.
fn local_prev_page(path: &Path, file: &WalFile, seg_size: u64) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let segno = file.segno(seg_size)?.checked_sub(1)?;
    let want = wal::segment_name(file.tli(), segno, seg_size);
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut best: Option<(u32, PathBuf)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(WalFile::Segment { tli, .. }) = WalFile::parse(name)
            && name[8..] == want[8..]
            && tli <= file.tli()
            && best.as_ref().is_none_or(|(t, _)| tli > *t)
        {
            best = Some((tli, e.path()));
        }
    }
    let f = std::fs::File::open(best?.1).ok()?;
    if f.metadata().ok()?.len() != seg_size {
        return None;
    }
    let mut page = vec![0u8; 8192];
    f.read_exact_at(&mut page, seg_size - 8192).ok()?;
    Some(page)
}

fn refused(file: &WalFile, stanza: &str, why: String) -> Error {
    Error::new(ErrorKind::Conflict, format!("refusing WAL file {file} for stanza '{stanza}': {why}; nothing was stored")).hint(
        "archive_command may name the wrong stanza or repository; after pg_upgrade or a re-initialised cluster run 'pgfrost stanza-upgrade'",
    )
}

fn read_wal(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| read_error(path, e))?;
    if meta.len() > MAX_WAL_FILE {
        return Err(Error::config(format!(
            "{} is {} bytes: not a WAL file",
            path.display(),
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|e| read_error(path, e))
}

fn read_error(path: &Path, e: std::io::Error) -> Error {
    Error::storage(format!("cannot read WAL file {}: {e}", path.display()))
        .hint("archive_command must pass %p; PostgreSQL runs it from the data directory")
}

/// An acknowledgement left in the spool for a file pushed ahead: the file's identity (device,
/// inode, size, modification and change times to the nanosecond) and the repository. PostgreSQL
/// never rewrites a completed segment in place, so a file whose identity still matches is the one
/// that was stored; anything else (a recycled or replaced file) is pushed again. Cheaper than
/// hashing 16 MiB on every call, which would cost the catch-up as much as it saves.
fn ack_line(path: &Path, repo: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(format!(
        "{} {} {} {}.{} {}.{} {}\n",
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        repo
    ))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

pub async fn push(settings: &Settings, wal_path: &str) -> Result<()> {
    let opts = PushOptions::from_settings(settings)?;
    let path = PathBuf::from(wal_path);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(wal_path)
        .to_string();
    parse_name(&name)?;
    // Opened only when the file must be stored: an acknowledged or dropped file needs no
    // repository (nor its passphrase).
    push_with(&opts, &path, &name, || open_repo(settings)).await
}

/// archive-push of the WAL file at `path` (named `name`), with its options read; `open` opens
/// the repository.
async fn push_with<F>(
    opts: &PushOptions,
    path: &Path,
    name: &str,
    open: impl FnOnce() -> F,
) -> Result<()>
where
    F: std::future::Future<Output = Result<Repository>>,
{
    let a = &opts.archive;
    let stanza_name = a.stanza.clone();
    let started = Instant::now();
    let async_mode = opts.async_mode;
    let ack_dir = a.spool_dir("push");

    // Fast path: an earlier call shipped this file ahead and left an acknowledgement.
    if async_mode {
        let ack = ack_dir.join(format!("{name}.ok"));
        if let Ok(line) = std::fs::read_to_string(&ack) {
            let _ = std::fs::remove_file(&ack);
            if ack_line(path, &a.repo).as_deref() == Some(line.as_str()) {
                log::info!("archive-push: {name} was already archived ahead (async)");
                return Ok(());
            }
            log::warn!(
                "archive-push: the acknowledgement for {name} does not match the file; pushing it again"
            );
        }
    }

    let status_dir = path
        .parent()
        .unwrap_or(Path::new("."))
        .join("archive_status");
    let ready = ready_files(&status_dir, name);
    if let Some(max) = opts.queue_max {
        // Every queued segment is the size of this one (history files are tiny).
        let seg = std::fs::metadata(path).map(|m| m.len()).unwrap_or(16 << 20);
        let queued = (ready.len() as u64 + 1) * seg;
        if queued > max {
            // The documented trade-off (docs/archive.md): keep PostgreSQL alive, lose PITR across
            // this WAL. Loud, and recorded where check can see it.
            log::error!(
                "archive-push: {} of WAL waits to be archived, more than archive-push-queue-max ({max} bytes): \
                 DROPPING {name} WITHOUT ARCHIVING IT; point-in-time recovery across it is no longer possible \
                 and backups older than it cannot be recovered past it",
                queued
            );
            let dropped = a.spool_dir("dropped");
            let _ = std::fs::create_dir_all(&dropped)
                .and_then(|()| std::fs::write(dropped.join(name), b""));
            return Ok(());
        }
    }

    let repo = open().await?;
    let db = stanza::current(&repo, &stanza_name).await?;
    let pusher = Arc::new(Pusher {
        repo,
        stanza: stanza_name.clone(),
        db,
        level: opts.level,
    });
    let outcome = pusher.push(path, a.workers).await?;
    log::info!(
        "archive-push: {name} {} in {:.0} ms",
        if outcome == Pushed::Stored {
            "stored"
        } else {
            "was already stored"
        },
        started.elapsed().as_secs_f64() * 1000.0
    );

    if async_mode && !ready.is_empty() {
        push_ahead(a, &pusher, path, ready, &ack_dir).await;
    }
    Ok(())
}

/// Names with a `.ready` file, in archiving order, without `skip`; history files first, as
/// PostgreSQL's archiver orders them.
fn ready_files(status_dir: &Path, skip: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(status_dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".ready"))
                .map(str::to_string)
        })
        .filter(|n| n != skip && WalFile::parse(n).is_some())
        .collect();
    names.sort_by_key(|n| (!n.ends_with(".history"), n.clone()));
    names
}

/// Ships queued files in parallel and acknowledges each one once it is durable. Failures here
/// are not the caller's failure: PostgreSQL will ask for those files itself and get the error.
async fn push_ahead(
    a: &ArchiveOptions,
    pusher: &Arc<Pusher>,
    path: &Path,
    ready: Vec<String>,
    ack_dir: &Path,
) {
    if let Err(e) = std::fs::create_dir_all(ack_dir) {
        log::warn!(
            "archive-push: cannot use spool-path {}: {e}; async mode needs it, so each segment is pushed alone (slower, nothing lost)\nHINT: create the spool directory, writable by the user running PostgreSQL (install -d -o postgres -g postgres /var/spool/pgfrost), or set spool-path to one",
            ack_dir.display()
        );
        return;
    }
    clean_stale(ack_dir, Duration::from_secs(3600));
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let workers = a.workers as usize;
    let started = Instant::now();
    let n = ready.len().min(ASYNC_BATCH_MAX);
    // One more in flight than workers: while one file waits on its read or fsync, the others
    // keep the cores busy sealing.
    let results: Vec<(String, Option<String>, u64, Result<Pushed>)> =
        futures::stream::iter(ready.into_iter().take(n))
            .map(|name| {
                let p = Arc::clone(pusher);
                let file = dir.join(&name);
                // The identity is taken before the file is read: if it changes meanwhile, the
                // acknowledgement will not match it and the file is pushed again.
                let ident = ack_line(&file, &a.repo);
                let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                async move {
                    let r = p.push(&file, 0).await;
                    (name, ident, size, r)
                }
            })
            .buffer_unordered(workers + 1)
            .collect()
            .await;
    let mut shipped = 0u64;
    for (name, ident, size, r) in results {
        match (r, ident) {
            (Ok(_), Some(line)) => {
                if write_atomic(&ack_dir.join(format!("{name}.ok")), line.as_bytes()).is_ok() {
                    shipped += size;
                }
            }
            (Ok(_), None) => {}
            (Err(e), _) => log::warn!("archive-push: could not ship {name} ahead: {e}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    log::info!(
        "archive-push: shipped {n} queued file(s) ahead, {:.0} MiB in {secs:.2} s ({:.0} MiB/s)",
        shipped as f64 / 1048576.0,
        shipped as f64 / 1048576.0 / secs.max(1e-6)
    );
}

fn clean_stale(dir: &Path, age: Duration) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() > age)
            .unwrap_or(false);
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// archive-get's "this file is not in the repository": PostgreSQL ends recovery (or, on a
/// standby, tries streaming and asks again later).
pub fn missing(name: &str, repo: &str) -> Error {
    Error::new(
        ErrorKind::ArchiveMissing,
        format!("WAL file {name} is not in the repository {repo}"),
    )
}

/// archive-get's "this file is missing but WAL after it is stored": never the end of the
/// archive (main.rs turns it into an exit above 125, which stops recovery).
pub fn gap(name: &str, later: &str, repo: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!(
            "WAL file {name} is missing from the repository {repo}, but later WAL ({later}) is there: a gap in the archive, not its end; recovery stops here rather than promote without the WAL after the gap"
        ),
    )
    .hint(format!(
        "put {name} back into the repository (it may still be in the source cluster's pg_wal: archive it with 'pgfrost archive-push'), or recover to a target before the gap; 'pgfrost verify' lists every gap"
    ))
}

pub async fn get(settings: &Settings, name: &str, dest: &str) -> Result<()> {
    let a = ArchiveOptions::from_settings(settings)?;
    let file = parse_name(name)?;
    let queue_max = settings.size("archive-get-queue-max")?.unwrap_or(0);
    // The repository is opened before the queue is looked at: the queue is only trusted for the
    // repository and cluster that filled it, and only this repository's key tells them apart.
    let repo = open_repo(settings).await?;
    get_with(&a, queue_max, &repo, name, file, Path::new(dest)).await
}

/// archive-get of `file` (named `name`) into `dest`, with its options read (`queue_max`:
/// archive-get-queue-max, 0 for no prefetch).
async fn get_with(
    a: &ArchiveOptions,
    queue_max: u64,
    repo: &Repository,
    name: &str,
    file: WalFile,
    dest: &Path,
) -> Result<()> {
    let stanza_name = a.stanza.as_str();
    let history = stanza::history(repo, stanza_name).await?;
    if history.is_empty() {
        stanza::current(repo, stanza_name).await?;
    }
    let queue = match history.last() {
        Some(db) if queue_max > 0 => Some(Queue::new(&a.spool_dir("get"), repo, stanza_name, db)),
        _ => None,
    };
    if let Some(q) = &queue
        && let Some(bytes) = q.take(repo, name)
    {
        write_file(dest, &bytes)?;
        log::info!("archive-get: {name} from the prefetch queue");
        return Ok(());
    }

    let started = Instant::now();
    let Some((db, bytes)) = fetch(repo, stanza_name, &history, &file).await? else {
        // A hole in the archive is not its end: answered "no such file", PostgreSQL would end
        // recovery at the hole and promote, silently without everything archived after it.
        if let (WalFile::Segment { tli, .. }, Some(db)) = (&file, history.last()) {
            let segno = file.segno(db.wal_segment_size).unwrap();
            let mut tl = Timelines::new(repo, stanza_name).await?;
            if let Some(later) = tl.later_than(*tli, segno).await? {
                return Err(gap(name, &later, &repo.store.location().to_string()));
            }
        }
        return Err(missing(name, &repo.store.location().to_string()));
    };
    write_file(dest, &bytes)?;
    log::info!(
        "archive-get: {name} in {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );

    if let (WalFile::Segment { tli, .. }, Some(q)) = (&file, &queue) {
        let seg = db.wal_segment_size;
        let ahead = (queue_max / seg).min(64);
        if ahead > 0 {
            prefetch(
                a.workers,
                repo,
                stanza_name,
                &history,
                q,
                *tli,
                file.segno(seg).unwrap(),
                seg,
                ahead,
            )
            .await;
        }
    }
    Ok(())
}

/// Looks a file up under every cluster the stanza has had, newest first, and returns it
/// authenticated and checked.
async fn fetch(
    repo: &Repository,
    stanza: &str,
    history: &[StanzaDb],
    file: &WalFile,
) -> Result<Option<(StanzaDb, Vec<u8>)>> {
    for db in history.iter().rev() {
        let obj = object_path(stanza, db, file);
        let Some(sealed) = repo.store.get_opt(&obj).await? else {
            continue;
        };
        let bytes = open_checked(repo, db, &obj, file, &sealed)?;
        return Ok(Some((db.clone(), bytes)));
    }
    Ok(None)
}

/// Authenticates a stored WAL file and, for segments, checks its page headers against the
/// cluster it is filed under.
pub fn open_checked(
    repo: &Repository,
    db: &StanzaDb,
    obj: &str,
    file: &WalFile,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    let bytes = open_wal(repo, obj, file, sealed)?;
    if file.has_pages() {
        wal::check_segment(
            file,
            &bytes,
            db.pg_major,
            db.system_id(),
            db.wal_segment_size,
        )
        .map_err(|p| {
            Error::corrupt(format!(
                "WAL file {file} (object '{obj}') authenticated but does not check out: {p}"
            ))
        })?;
    }
    Ok(bytes)
}

#[allow(clippy::too_many_arguments)]
async fn prefetch(
    process_max: u32,
    repo: &Repository,
    stanza: &str,
    history: &[StanzaDb],
    queue: &Queue,
    tli: u32,
    segno: u64,
    seg: u64,
    ahead: u64,
) {
    let spool = queue.dir.as_path();
    queue.remove_legacy();
    if let Err(e) = std::fs::create_dir_all(spool) {
        log::warn!(
            "archive-get: no prefetch, cannot use spool-path {}: {e}; each segment is fetched when asked for (slower recovery, nothing lost)\nHINT: create the spool directory, writable by the user running PostgreSQL (install -d -o postgres -g postgres /var/spool/pgfrost), or set spool-path to one",
            spool.display()
        );
        return;
    }
    // Files for segments already replayed will never be asked for again.
    if let Ok(rd) = std::fs::read_dir(spool) {
        for e in rd.filter_map(|e| e.ok()) {
            let stale = e
                .file_name()
                .to_str()
                .and_then(WalFile::parse)
                .and_then(|f| f.segno(seg))
                .is_none_or(|n| n <= segno);
            if stale {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let wanted: Vec<WalFile> = (1..=ahead)
        .map(|i| WalFile::parse(&wal::segment_name(tli, segno + i, seg)).unwrap())
        .filter(|f| !spool.join(f.to_string()).exists())
        .collect();
    let workers = (process_max as usize * 2).max(4);
    let got: Vec<_> = futures::stream::iter(wanted)
        .map(|f| async move {
            let r = fetch(repo, stanza, history, &f).await;
            (f, r)
        })
        .buffer_unordered(workers)
        .collect()
        .await;
    let mut n = 0;
    for (f, r) in got {
        match r {
            Ok(Some((_, bytes))) => {
                let name = f.to_string();
                if write_file(&spool.join(&name), &queue.seal(repo, &name, &bytes)).is_ok() {
                    n += 1;
                }
            }
            Ok(None) => {}
            Err(e) => log::warn!("archive-get: prefetch of {f} failed: {e}"),
        }
    }
    log::debug!("archive-get: prefetched {n} segment(s)");
}

/// Writes through a temporary name in the destination directory and renames, so PostgreSQL never
/// sees a partial file.
fn write_file(dest: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = dest.with_file_name(format!(
        ".{}.pgfrost-tmp",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal")
    ));
    let io = |e: std::io::Error| Error::io("write", dest, e);
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, dest).map_err(io)
}

/// archive-get's prefetch queue: `spool-path/<stanza>/get/<repo id>-<system id>/`, one file per
/// segment, its keyed MAC (32 bytes) followed by the segment.
///
/// The spool is shared by every repository and cluster configured with the same stanza name, and
/// it is writable by the database user. A file there is served only when its MAC, under this
/// repository's key, checks for this repository, stanza, cluster and file name: anything else
/// (another repository's queue, a flat file left by an older version, an edited file) is not
/// WAL this repository holds, and serving it would let PostgreSQL replay it as ours.
struct Queue {
    dir: PathBuf,
    /// The directory older versions queued into, keyed by stanza name only.
    legacy: PathBuf,
    repo_id: String,
    stanza: String,
    system_id: String,
}

const QUEUE_MAC_LEN: usize = 32;

impl Queue {
    /// `spool`: spool-path/<stanza>/get.
    fn new(spool: &Path, repo: &Repository, stanza: &str, db: &StanzaDb) -> Queue {
        let legacy = spool.to_path_buf();
        Queue {
            dir: legacy.join(format!("{}-{}", repo.config.repo_id, db.system_id)),
            legacy,
            repo_id: repo.config.repo_id.clone(),
            stanza: stanza.to_string(),
            system_id: db.system_id.clone(),
        }
    }

    fn mac(&self, repo: &Repository, name: &str, bytes: &[u8]) -> blake3::Hash {
        blake3::Hash::from(repo.keys.spool_mac(
            &[
                self.repo_id.as_bytes(),
                self.stanza.as_bytes(),
                self.system_id.as_bytes(),
                name.as_bytes(),
            ],
            bytes,
        ))
    }

    fn seal(&self, repo: &Repository, name: &str, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(QUEUE_MAC_LEN + bytes.len());
        out.extend_from_slice(self.mac(repo, name, bytes).as_bytes());
        out.extend_from_slice(bytes);
        out
    }

    /// Takes `name` out of the queue: its bytes when the MAC checks. The file is read once and
    /// the checked copy is what gets served, so it cannot be swapped between check and use.
    fn take(&self, repo: &Repository, name: &str) -> Option<Vec<u8>> {
        let path = self.dir.join(name);
        let mut bytes = std::fs::read(&path).ok()?;
        // Served or not, a queued file is used once: one that does not check is gone, and the
        // next prefetch fills the slot from the repository.
        let _ = std::fs::remove_file(&path);
        if bytes.len() >= QUEUE_MAC_LEN {
            let stored = <[u8; QUEUE_MAC_LEN]>::try_from(&bytes[..QUEUE_MAC_LEN]).unwrap();
            // blake3::Hash compares in constant time.
            if blake3::Hash::from(stored) == self.mac(repo, name, &bytes[QUEUE_MAC_LEN..]) {
                bytes.drain(..QUEUE_MAC_LEN);
                return Some(bytes);
            }
        }
        log::warn!(
            "archive-get: {name} in the prefetch queue {} does not authenticate for repository {} (another repository's or cluster's, or altered): discarded, fetching it from the repository",
            self.dir.display(),
            repo.store.location()
        );
        None
    }

    /// Removes the flat files older versions queued directly under `get/`: nothing says which
    /// repository or cluster they came from, so they are never served.
    fn remove_legacy(&self) {
        if let Ok(rd) = std::fs::read_dir(&self.legacy) {
            for e in rd.filter_map(|e| e.ok()) {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// Timeline histories read from the repository's `.history` files, each read once.
pub struct Timelines<'a> {
    repo: &'a Repository,
    stanza: &'a str,
    dbs: Vec<StanzaDb>,
    read: std::collections::HashMap<u32, Option<Vec<timeline::Ancestor>>>,
}

impl<'a> Timelines<'a> {
    pub async fn new(repo: &'a Repository, stanza: &'a str) -> Result<Timelines<'a>> {
        Ok(Timelines {
            repo,
            stanza,
            dbs: stanza::history(repo, stanza).await?,
            read: Default::default(),
        })
    }

    /// The ancestors of `tli` (none for timeline 1), or None when the repository has no history
    /// file for it.
    pub async fn history(&mut self, tli: u32) -> Result<Option<Vec<timeline::Ancestor>>> {
        if tli <= 1 {
            return Ok(Some(Vec::new()));
        }
        if let Some(h) = self.read.get(&tli) {
            return Ok(h.clone());
        }
        let file = WalFile::History { tli };
        let h = match fetch(self.repo, self.stanza, &self.dbs, &file).await? {
            None => None,
            Some((_, bytes)) => Some(
                timeline::parse_history(&String::from_utf8_lossy(&bytes)).ok_or_else(|| {
                    Error::corrupt(format!(
                        "timeline history file {file} in stanza '{}' does not read as one",
                        self.stanza
                    ))
                })?,
            ),
        };
        self.read.insert(tli, h.clone());
        Ok(h)
    }

    /// The timeline PostgreSQL's `recovery_target_timeline = latest` picks for a backup on
    /// `from`: it probes for history files `from + 1`, `from + 2`, ... and takes the last one
    /// found before the first missing (findNewestTimeLine).
    pub async fn latest(&mut self, from: u32) -> Result<u32> {
        let mut t = from;
        while self.history(t + 1).await?.is_some() {
            t += 1;
        }
        Ok(t)
    }

    /// The stored segment, partial segment or history that shows WAL past segment `segno` of
    /// timeline `tli` was archived: a later segment of the same timeline, or a timeline that
    /// branched off it after that segment. None when `segno` is past the end of the archive.
    pub async fn later_than(&mut self, tli: u32, segno: u64) -> Result<Option<String>> {
        for db in self.dbs.clone().iter().rev() {
            let seg = db.wal_segment_size;
            let log = segno / wal::segments_per_log(seg);
            let base = repo_wal::db_dir(self.stanza, db.id);
            for d in self.repo.store.list_dirs(&base).await? {
                let ours = d.len() == 16
                    && d[..8] == format!("{tli:08X}")
                    && u64::from_str_radix(&d[8..], 16).is_ok_and(|l| l >= log);
                if !ours {
                    continue;
                }
                for l in self.repo.store.list(&format!("{base}/{d}")).await? {
                    let name = repo_wal::file_name(&l.path);
                    if let Some(f) = WalFile::parse(name)
                        && f.has_pages()
                        && f.tli() == tli
                        && f.segno(seg).is_some_and(|n| n > segno)
                    {
                        return Ok(Some(name.to_string()));
                    }
                }
            }
            let mut t = tli + 1;
            while let Some(h) = self.history(t).await? {
                if h.iter()
                    .any(|a| a.tli == tli && a.switchpoint / seg > segno)
                {
                    return Ok(Some(format!("{t:08X}.history")));
                }
                t += 1;
            }
        }
        Ok(None)
    }
}
