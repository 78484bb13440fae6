//! Process: decide what must be read (diff/incr reuse unchanged files, and on PostgreSQL 17+
//! read only the blocks the WAL summaries name), then read, checksum-check and store it on the
//! worker pool.

use super::BackupOptions;
use super::incremental::{self, RelChange};
use super::init::Cluster;
use super::start::Started;
use super::walk::{Task, Walk};
use super::worker::{Shared, Worker};
use crate::commands::pool;
use crate::error::{Error, Result};
use crate::pg::layout::RelFile;
use crate::pg::session::{BackupSession, RelKey};
use crate::repo::blockstore::BlockStore;
use crate::repo::lease::MayWrite;
use crate::repo::manifest::{ChecksumError, FileEntry, Manifest, Stats};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// What the backup holds once every file is read: reused and read files, the pages that
/// failed their checksum, and what reading and storing them took.
pub(super) struct Read {
    pub files: Vec<FileEntry>,
    pub errors: Vec<ChecksumError>,
    pub stats: Stats,
}

/// Reads the walked files (taking them and the walk's roots out of `walked`).
// The phase takes what the phases before it produced, each once; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    opts: &BackupOptions,
    pg: &BackupSession,
    bs: &BlockStore,
    may: MayWrite<'_>,
    cluster: &Cluster,
    parent: Option<&Manifest>,
    started: &Started,
    walked: &mut Walk,
) -> Result<Read> {
    let label = &started.label;
    let walk_roots = std::mem::take(&mut walked.roots);
    let pg_path = &cluster.pg_path;
    let pg_meta = std::fs::metadata(pg_path).map_err(|e| Error::io("stat", pg_path, e))?;
    let parent_files: HashMap<&str, &FileEntry> = parent
        .map(|p| p.files.iter().map(|f| (f.path.as_str(), f)).collect())
        .unwrap_or_default();
    let tasks = std::mem::take(&mut walked.tasks);
    let (reused, mut to_read) = split_unchanged(tasks, parent, &parent_files);
    // PostgreSQL 17+: relation files are read only where the WAL summaries say they changed.
    let changes = match parent {
        Some(p) if cluster.major >= 17 && p.timeline == started.timeline && opts.wal_summary => {
            incremental::summaries(pg, p, started.timeline, started.lsn, opts.archive_timeout)
                .await?
        }
        _ => None,
    };
    if let Some(changes) = &changes {
        mark_from_parent(&mut to_read, changes, &parent_files, label);
    }
    let total: u64 = to_read.iter().map(|t| t.size).sum();
    log::info!(
        "backup {label}: {} files to read ({} MiB), {} unchanged files reused",
        to_read.len(),
        total >> 20,
        reused.len()
    );
    // Largest last: workers pop from the end, so big files start first and the tail is short.
    to_read.sort_by_key(|t| t.size);
    let shared = Arc::new(Shared {
        bs: bs.clone(),
        start_lsn: started.lsn,
        checksums: cluster.checksums,
        rt: tokio::runtime::Handle::current(),
        roots: walk_roots,
        owner: (pg_meta.uid(), pg_meta.gid()),
        // SAFETY: geteuid cannot fail.
        as_root: unsafe { libc::geteuid() } == 0,
    });
    let workers = (0..opts.process_max)
        .map(|_| Worker::new(Arc::clone(&shared), may))
        .collect();
    let jobs = pool::Jobs {
        queue: to_read,
        what: "backup",
        total,
        done: Arc::new(AtomicU64::new(0)),
    };
    let outs = pool::run(jobs, workers).await.map_err(|e| {
        // Leaving the session aborts the non-exclusive backup on the server.
        e.context(format!(
            "backup {label} failed (nothing was recorded; blocks already stored will be reused)"
        ))
    })?;
    let mut read = Read {
        files: reused,
        errors: Vec::new(),
        stats: Stats::default(),
    };
    for o in outs {
        read.files.extend(o.files);
        read.errors.extend(o.errors);
        read.stats.read_bytes += o.read_bytes;
        read.stats.new_blocks += o.stats.new_blocks;
        read.stats.new_bytes += o.stats.new_bytes;
        read.stats.stored_bytes += o.stats.stored_bytes;
    }
    Ok(read)
}

/// Splits the walked files into those reused from the parent as they are and those to read.
fn split_unchanged(
    tasks: Vec<Task>,
    parent: Option<&Manifest>,
    parent_files: &HashMap<&str, &FileEntry>,
) -> (Vec<FileEntry>, Vec<Task>) {
    // diff/incr: an unchanged file (same size, same mtime, and last modified before the parent
    // started, so the parent's copy cannot predate a change made in the same second) is not read.
    let mut reused: Vec<FileEntry> = Vec::new();
    let mut to_read: Vec<Task> = Vec::new();
    for t in tasks {
        match parent_files.get(t.rel.as_str()) {
            Some(f)
                if f.size == t.size
                    && f.mtime == t.mtime
                    && t.mtime < parent.unwrap().start_unix =>
            {
                let mut e = (*f).clone();
                e.reused = true;
                e.mode = t.mode;
                e.uid = t.uid;
                e.gid = t.gid;
                reused.push(e);
            }
            _ => to_read.push(t),
        }
    }
    (reused, to_read)
}

/// Marks the relation files the WAL summaries let the workers build from the parent's blocks.
fn mark_from_parent(
    to_read: &mut [Task],
    changes: &HashMap<RelKey, RelChange>,
    parent_files: &HashMap<&str, &FileEntry>,
    label: &str,
) {
    let mut whole = 0usize;
    for t in to_read {
        let Some(r) = RelFile::parse(&t.rel).filter(|r| !r.temp) else {
            continue;
        };
        t.from_parent = parent_files
            .get(t.rel.as_str())
            .and_then(|pf| incremental::from_parent(changes, &r, pf, t.size));
        whole += usize::from(t.from_parent.is_none());
    }
    log::info!(
        "backup {label}: {whole} relation file(s) read whole (new, recreated, truncated away or the free space map), the rest from the WAL summaries"
    );
}
