//! Writing the backup's files: the pool of workers that decode blocks and write them in place,
//! and the syncer thread that flushes each file once written.

use super::places::Places;
use super::roots::Roots;
use crate::commands::pool;
use crate::error::{Error, ErrorKind, Result};
use crate::pg::page::BLCKSZ;
use crate::repo::blockstore::{BlockId, BlockStore, Placed};
use crate::repo::format::hex_array;
use crate::repo::manifest::{FileEntry, Manifest};
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

pub const PG_CONTROL: &str = "global/pg_control";
/// Blocks decoded and written at a time while restoring one file (1 MiB). Small enough that the
/// decoded bytes are still in the CPU cache when write() copies them into the page cache: with
/// 8 MiB batches that copy ran from memory and took several times as much system time.
const BATCH: usize = 128;

/// One file to write.
pub struct Job {
    /// For messages; the file is reached through `root` and `sub`, never through this path.
    pub path: PathBuf,
    pub root: PathBuf,
    pub sub: PathBuf,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    list: String,
}

impl Job {
    /// The job that writes the manifest's file `f` where `places` put it.
    pub fn new(f: &FileEntry, places: &Places) -> Job {
        let (root, sub) = places.locate(&f.path);
        Job::below(f, places.target_of(&f.path), root, sub)
    }

    /// The job that writes `f` at `sub` below the place `root` (`path` for messages).
    pub fn below(f: &FileEntry, path: PathBuf, root: &std::path::Path, sub: PathBuf) -> Job {
        Job {
            path,
            root: root.to_path_buf(),
            sub,
            size: f.size,
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
            mtime: f.mtime,
            list: f.list.clone(),
        }
    }
}

/// What every worker writes with.
pub struct Shared {
    pub bs: BlockStore,
    pub rt: tokio::runtime::Handle,
    pub delta: bool,
    pub chown: bool,
    /// The places, opened, and the cluster's owner.
    pub roots: Roots,
    pub written: AtomicU64,
}

pub fn ids_of(bs_list: &[u8]) -> Result<Vec<BlockId>> {
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

/// Writes one file and sets its metadata; returns it open, for the syncer to flush.
pub fn restore_file(sh: &Shared, j: &Job, buf: &mut Vec<u8>) -> Result<std::fs::File> {
    // Written in place, never through a link: the cluster's owner may have left one at the
    // path or at any directory above it (--delta, --force), and as root that would hand them
    // whatever it points to. fsx reaches the file without following any.
    let f = sh
        .roots
        .open_below(&j.root, &j.sub, !sh.delta)
        .map_err(|e| Error::io("create", &j.path, e))?;
    let ids: Vec<BlockId> = if j.list.is_empty() {
        Vec::new()
    } else {
        let list_id = hex_array::<32>(&j.list, "list").map_err(Error::corrupt)?;
        ids_of(&sh.rt.block_on(sh.bs.read_block(&list_id))?)?
    };
    let keep = unchanged_blocks(sh, &f, &ids);
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
    write_blocks(sh, j, &f, &ids, &keep, buf)?;
    set_metadata(sh, j, &f)?;
    Ok(f)
}

/// Which blocks the file already holds as the backup has them.
fn unchanged_blocks(sh: &Shared, f: &std::fs::File, ids: &[BlockId]) -> Vec<bool> {
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
    keep
}

/// Decodes and writes every block not kept.
fn write_blocks(
    sh: &Shared,
    j: &Job,
    f: &std::fs::File,
    ids: &[BlockId],
    keep: &[bool],
    buf: &mut Vec<u8>,
) -> Result<()> {
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
        let blocks: Vec<usize> = order[i..end].iter().map(|&n| want[n]).collect();
        write_batch(sh, j, f, &blocks, &lens, buf)?;
        i = end;
    }
    Ok(())
}

/// Writes one decoded batch: `blocks[n]` is the file's block number of the n-th block in
/// `buf`, `lens[n]` its length.
fn write_batch(
    sh: &Shared,
    j: &Job,
    f: &std::fs::File,
    blocks: &[usize],
    lens: &[u32],
    buf: &[u8],
) -> Result<()> {
    let expected = |k: usize| (j.size - k as u64 * BLCKSZ as u64).min(BLCKSZ as u64) as u32;
    // The blocks sit back to back in `buf`; each stretch of them that is contiguous in
    // the file too goes out in one write (a syscall per 8 KiB block costs more than
    // decoding).
    let mut from = 0usize;
    let mut s = 0;
    while s < lens.len() {
        let k0 = blocks[s];
        let (at, mut len) = (from, 0usize);
        let mut e = s;
        while e < lens.len() && blocks[e] == k0 + (e - s) {
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
    Ok(())
}

/// The file's size, mode, time and (as root) owner, as the backup recorded them.
fn set_metadata(sh: &Shared, j: &Job, f: &std::fs::File) -> Result<()> {
    f.set_len(j.size)
        .map_err(|e| Error::io("truncate", &j.path, e))?;
    f.set_permissions(std::fs::Permissions::from_mode(j.mode))
        .map_err(|e| Error::io("chmod", &j.path, e))?;
    let mtime = UNIX_EPOCH + Duration::from_secs(j.mtime.max(0) as u64);
    f.set_modified(mtime)
        .map_err(|e| Error::io("set the time of", &j.path, e))?;
    if sh.chown {
        std::os::unix::fs::fchown(f, Some(j.uid), Some(j.gid))
            .map_err(|e| Error::io("chown", &j.path, e))?;
    }
    Ok(())
}

/// Files written and waiting to be flushed. Bounded, so that open descriptors stay few (a
/// cluster has thousands of small files) and a slow disk slows the workers down.
type SyncQueue = std::sync::mpsc::SyncSender<(std::fs::File, PathBuf)>;
const SYNC_QUEUE: usize = 64;

/// What a worker says when the syncer has stopped: the syncer's own failure is the one to report.
const SYNCER_STOPPED: &str = "restore: the syncer stopped";

/// A restore worker: writes files and hands each to the syncer.
struct FileWriter {
    sh: Arc<Shared>,
    /// One decode buffer per worker for the whole restore: no allocation (or page fault) per
    /// block.
    buf: Vec<u8>,
    sync: SyncQueue,
}

impl pool::Worker for FileWriter {
    type Job = Job;
    type Out = ();

    fn work(&mut self, j: Job, done: &AtomicU64) -> Result<()> {
        let f = restore_file(&self.sh, &j, &mut self.buf)?;
        done.fetch_add(j.size, Ordering::Relaxed);
        // The syncer stops only after a failed flush, which it reports: no use writing on.
        self.sync
            .send((f, j.path))
            .map_err(|_| Error::internal(SYNCER_STOPPED))
    }

    fn finish(self) -> Result<()> {
        Ok(())
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

/// Writes every file of `m` but pg_control on `workers` workers, and flushes them all.
pub async fn write_files(
    sh: &Arc<Shared>,
    m: &Manifest,
    places: &Places,
    workers: u32,
) -> Result<()> {
    let mut jobs: Vec<Job> = m
        .files
        .iter()
        .filter(|f| f.path != PG_CONTROL)
        .map(|f| Job::new(f, places))
        .collect();
    jobs.sort_by_key(|j| j.size);
    log::debug!(
        "restore: index loaded ({} blocks), {} files to write",
        sh.bs.counts().0,
        jobs.len()
    );
    let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel(SYNC_QUEUE);
    let flusher = tokio::task::spawn_blocking(move || syncer(sync_rx));
    let writers = (0..workers)
        .map(|_| FileWriter {
            sh: Arc::clone(sh),
            buf: Vec::new(),
            sync: sync_tx.clone(),
        })
        .collect();
    drop(sync_tx);
    let jobs = pool::Jobs {
        queue: jobs,
        what: "restore",
        total: m.stats.logical_bytes,
        // Bytes of the files done, written or (delta) found unchanged: what progress counts.
        done: Arc::new(AtomicU64::new(0)),
    };
    let written = pool::run(jobs, writers).await;
    log::debug!("restore: every file written");
    // Every file flushed before anything that follows (pg_control last of all).
    let flushed = flusher
        .await
        .map_err(|e| Error::internal(format!("restore syncer failed: {e}")))?;
    log::debug!("restore: every file flushed");
    match (written, flushed) {
        (Err(e), Err(f)) if e.kind == ErrorKind::Internal && e.message == SYNCER_STOPPED => Err(f),
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        (Ok(_), Ok(())) => Ok(()),
    }
}
