//! The backup's workers (on commands/pool.rs): each takes files off the queue, reads them in
//! 1 MiB chunks, verifies page checksums, and adds their 8 KiB blocks to its own writer (so
//! sealing runs on process-max cores).

use super::incremental::FromParent;
use super::walk::Task;
use crate::commands::{pool, read_full};
use crate::error::{Error, Result};
use crate::pg::layout::RelFile;
use crate::pg::page::{self, BLCKSZ, PageCheck};
use crate::repo::blockstore::{BlockStore, BlockWriter, WriteStats, hex_id};
use crate::repo::lease::MayWrite;
use crate::repo::manifest::{ChecksumError, FileEntry};
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes read from a file per system call: large enough to amortise the call, small enough
/// that process-max workers stay within a few MiB.
const READ_CHUNK: usize = 1 << 20;

/// What every worker reads with.
pub(super) struct Shared {
    pub bs: BlockStore,
    pub start_lsn: u64,
    pub checksums: bool,
    pub rt: tokio::runtime::Handle,
    pub roots: Vec<crate::fsx::Dir>,
    /// The data directory's owner, and whether we run as root.
    pub owner: (u32, u32),
    pub as_root: bool,
}

/// What a worker backed up.
pub(super) struct Out {
    pub files: Vec<FileEntry>,
    pub errors: Vec<ChecksumError>,
    pub stats: WriteStats,
    pub read_bytes: u64,
}

pub(super) struct Worker {
    shared: Arc<Shared>,
    writer: BlockWriter,
    buf: Vec<u8>,
    out: Out,
}

impl Worker {
    pub fn new(shared: Arc<Shared>, may: MayWrite<'_>) -> Worker {
        let writer = shared.bs.writer(may);
        Worker {
            shared,
            writer,
            buf: vec![0u8; READ_CHUNK],
            out: Out {
                files: Vec::new(),
                errors: Vec::new(),
                stats: WriteStats::default(),
                read_bytes: 0,
            },
        }
    }
}

impl pool::Worker for Worker {
    type Job = Task;
    type Out = Out;

    fn work(&mut self, t: Task, done: &AtomicU64) -> Result<()> {
        let Some((mut f, t)) = open_task(&self.shared, t)? else {
            return Ok(());
        };
        let rel = RelFile::parse(&t.rel).filter(|r| !r.temp);
        let mut ids: Vec<u8> = Vec::new();
        let (read, size) = match &t.from_parent {
            Some(fp) => self.copy_from_parent(&t, fp, &mut f, rel.as_ref(), &mut ids, done)?,
            None => self.copy_whole(&t, &mut f, rel.as_ref(), &mut ids, done)?,
        };
        self.out.read_bytes += read;
        let rt = &self.shared.rt;
        // A file's new blocks share runs with each other only, and its block list (read by a
        // restore before the blocks) gets a run of its own.
        rt.block_on(self.writer.end_run())?;
        let list = if ids.is_empty() {
            String::new()
        } else {
            let id = rt.block_on(self.writer.add(&ids))?;
            rt.block_on(self.writer.end_run())?;
            hex_id(&id)
        };
        self.out.files.push(FileEntry {
            path: t.rel,
            size,
            mode: t.mode,
            uid: t.uid,
            gid: t.gid,
            mtime: t.mtime,
            list,
            blocks: (ids.len() / 32) as u32,
            reused: false,
        });
        Ok(())
    }

    fn finish(self) -> Result<Out> {
        let mut out = self.out;
        out.stats = self.shared.rt.block_on(self.writer.finish())?;
        Ok(out)
    }
}

impl Worker {
    /// Reads a whole file. Returns (bytes read, file size).
    fn copy_whole(
        &mut self,
        t: &Task,
        f: &mut std::fs::File,
        rel: Option<&RelFile>,
        ids: &mut Vec<u8>,
        done: &AtomicU64,
    ) -> Result<(u64, u64)> {
        let shared = &self.shared;
        let buf = &mut self.buf;
        let mut size = 0u64;
        let mut block_no = rel.map_or(0, |r| r.first_block());
        loop {
            let n = read_full(f, buf).map_err(|e| Error::io("read", &t.abs, e))?;
            if n == 0 {
                break;
            }
            for chunk in buf[..n].chunks(BLCKSZ) {
                if shared.checksums && rel.is_some() && chunk.len() == BLCKSZ {
                    check_page(shared, t, f, size, chunk, block_no, &mut self.out.errors);
                }
                let id = shared.rt.block_on(self.writer.add(chunk))?;
                ids.extend_from_slice(&id);
                size += chunk.len() as u64;
                block_no = block_no.wrapping_add(1);
            }
            done.fetch_add(n as u64, Ordering::Relaxed);
            if n < buf.len() {
                break;
            }
        }
        Ok((size, size))
    }

    /// Builds a relation file from its parent's blocks and the blocks the WAL summaries name as
    /// changed (read from disk), so an incremental reads only what changed. Returns (bytes read,
    /// file size).
    fn copy_from_parent(
        &mut self,
        t: &Task,
        fp: &FromParent,
        f: &mut std::fs::File,
        rel: Option<&RelFile>,
        ids: &mut Vec<u8>,
        done: &AtomicU64,
    ) -> Result<(u64, u64)> {
        let shared = &self.shared;
        let list_id =
            crate::repo::format::hex_array::<32>(&fp.list, "list").map_err(Error::corrupt)?;
        let parent = shared.rt.block_on(shared.bs.read_block(&list_id))?;
        let parent_blocks = parent.len() / 32;
        let size = f
            .metadata()
            .map_err(|e| Error::io("stat", &t.abs, e))?
            .len();
        // Relation files are whole pages; a torn tail is read like any changed block.
        let nblocks = size.div_ceil(BLCKSZ as u64) as u32;
        let first = rel.map_or(0, |r| r.first_block());
        let mut page = vec![0u8; BLCKSZ];
        let (mut read, mut total) = (0u64, 0u64);
        for b in 0..nblocks {
            let end = (b as u64 + 1) * BLCKSZ as u64;
            // Only whole pages, whole in the parent's copy too, are taken from it.
            let unchanged = (b as usize) < parent_blocks
                && !fp.changed.contains(&b)
                && fp.limit.is_none_or(|l| b < l)
                && end <= size
                && end <= fp.parent_size;
            if unchanged {
                ids.extend_from_slice(&parent[b as usize * 32..(b as usize + 1) * 32]);
                total += BLCKSZ as u64;
                continue;
            }
            f.seek(SeekFrom::Start(b as u64 * BLCKSZ as u64))
                .map_err(|e| Error::io("seek in", &t.abs, e))?;
            let n = read_full(f, &mut page).map_err(|e| Error::io("read", &t.abs, e))?;
            if n == 0 {
                break;
            }
            if shared.checksums && n == BLCKSZ && rel.is_some() {
                check_page(
                    shared,
                    t,
                    f,
                    b as u64 * BLCKSZ as u64,
                    &page[..n],
                    first.wrapping_add(b),
                    &mut self.out.errors,
                );
            }
            let id = shared.rt.block_on(self.writer.add(&page[..n]))?;
            ids.extend_from_slice(&id);
            read += n as u64;
            total += n as u64;
            done.fetch_add(n as u64, Ordering::Relaxed);
            if n < BLCKSZ {
                break;
            }
        }
        Ok((read, total))
    }
}

/// Opens what the walk saw at a task's path, and takes its mode and owner from the open file.
/// None when it is gone, or when what is there now is not what the walk saw and may not be
/// read: as root, a name the cluster's owner swapped for a link after the walk would
/// otherwise make us read (and restore as theirs) a file only root may read.
fn open_task(shared: &Shared, mut t: Task) -> Result<Option<(std::fs::File, Task)>> {
    let skip = |why: &str| {
        log::warn!("backup: {} not backed up: {why}", t.abs.display());
        Ok(None)
    };
    let opened = crate::fsx::split(&t.sub).and_then(|(dir, name)| {
        shared.roots[t.root]
            .descend(dir, None)?
            .open_read(name, t.linked)
    });
    let (f, st) = match opened {
        Ok(o) => o,
        // Dropped or truncated away since the walk (a dropped table): WAL replay agrees.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e)
            if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR))
                || e.kind() == std::io::ErrorKind::InvalidInput =>
        {
            return skip(
                "it (or a directory above it) was replaced by a link or another kind of file after the walk",
            );
        }
        Err(e) => return Err(Error::io("open", &t.abs, e)),
    };
    let same = st.st_dev == t.dev && st.st_ino == t.ino;
    if t.linked && !same {
        return skip("the link now points to another file than the walk saw");
    }
    // A plain file replaced under the same name (PostgreSQL renames new versions of some files
    // into place) is the cluster's as much as the old one: reached with no link, it is read.
    if t.linked && shared.as_root {
        let (uid, gid) = shared.owner;
        let m = st.st_mode;
        let readable = st.st_uid == uid || m & 0o004 != 0 || (st.st_gid == gid && m & 0o040 != 0);
        if !readable {
            return skip(&format!(
                "it links to a file the cluster's owner ({uid}) cannot read; a backup run as root does not hand it to them"
            ));
        }
    }
    t.mode = st.st_mode & 0o7777;
    t.uid = st.st_uid;
    t.gid = st.st_gid;
    t.mtime = st.st_mtime;
    Ok(Some((f, t)))
}

/// A page that fails is read again once before it is reported: PostgreSQL may have been writing
/// it at the moment we read it (a torn read), in which case the second read shows either the
/// complete page or an LSN past the backup start.
fn check_page(
    shared: &Shared,
    t: &Task,
    f: &mut std::fs::File,
    offset: u64,
    chunk: &[u8],
    blkno: u32,
    errors: &mut Vec<ChecksumError>,
) {
    let PageCheck::Bad { .. } = page::verify(chunk, blkno, shared.start_lsn) else {
        return;
    };
    let mut again = vec![0u8; BLCKSZ];
    let pos = f.stream_position().ok();
    let reread = f.seek(SeekFrom::Start(offset)).is_ok() && f.read_exact(&mut again).is_ok();
    if let Some(p) = pos {
        let _ = f.seek(SeekFrom::Start(p));
    }
    let verdict = if reread {
        page::verify(&again, blkno, shared.start_lsn)
    } else {
        page::verify(chunk, blkno, shared.start_lsn)
    };
    if let PageCheck::Bad { expected, found } = verdict {
        log::warn!(
            "page checksum failure: {} block {} (file offset {offset}): stored {found:#06x}, computed {expected:#06x}",
            t.rel,
            blkno
        );
        errors.push(ChecksumError {
            file: t.rel.clone(),
            block: blkno,
            expected,
            found,
        });
    }
}
