//! backup: full, differential and incremental base backups through pg_backup_start /
//! pg_backup_stop, held on one session, with block-level dedup against the whole stanza.
//!
//! Order is what makes a backup trustworthy: blocks (packs, then index segments) are durable
//! first, then the WAL from the start to the stop segment is confirmed in the repository, and only
//! then is the manifest written. A backup killed or disconnected at any point before that has no
//! manifest, so it does not exist; the blocks it stored are reused by the next run.

use super::{archive, emit, open_repo, read_full};
use crate::clock;
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result};
use crate::pg::layout::{self, Include, RelFile};
use crate::pg::page::{self, BLCKSZ, PageCheck};
use crate::pg::wal::{self, WalFile};
use crate::pg::{conn, control};
use crate::repo::blockstore::{BlockStore, BlockWriter, WriteStats, hex_id};
use crate::repo::lease::{Lease, LeaseKind};
use crate::repo::manifest::{
    self, BackupType, ChecksumError, DirEntry, FileEntry, LinkEntry, Manifest, Stats, Tablespace,
};
use crate::repo::stanza;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes read from a file per system call: large enough to amortise the call, small enough
/// that process-max workers stay within a few MiB.
const READ_CHUNK: usize = 1 << 20;

/// One file to back up, as the walk found it.
#[derive(Debug, Clone)]
struct Task {
    rel: String,
    abs: PathBuf,
    /// The walk's root this file is under (an index into `Walk::roots`), and its path below it.
    root: usize,
    sub: PathBuf,
    /// What the walk saw at the path (through a link to a file, what it points to): the worker
    /// reads only that file.
    dev: u64,
    ino: u64,
    linked: bool,
    size: u64,
    mtime: i64,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Set when WAL summaries say which blocks changed since the parent: read only those (and
    /// blocks past the parent's copy), take the rest from the parent's block list.
    from_parent: Option<FromParent>,
}

#[derive(Debug, Clone)]
struct FromParent {
    list: String,
    parent_size: u64,
    /// Changed block numbers, local to this file (0 = its first block).
    changed: HashSet<u32>,
    /// The relation was truncated to this many blocks (local) at some point since the parent.
    limit: Option<u32>,
}

/// Blocks changed since the parent, per relation fork: (tablespace, database, relfilenode, fork).
type RelKey = (u32, u32, u32, i16);

#[derive(Debug, Default)]
struct RelChange {
    blocks: HashSet<u64>,
    limit: Option<u64>,
}

struct Walk {
    tasks: Vec<Task>,
    dirs: Vec<DirEntry>,
    links: Vec<LinkEntry>,
    tablespaces: Vec<(u32, String)>,
    /// The directories walked, opened as the walk began: workers reach files from these
    /// without following links in between.
    roots: Vec<crate::fsx::Dir>,
}

/// Lists what the backup copies: the data directory, and each tablespace's directory for this
/// major version, under `pg_tblspc/<oid>/`.
fn walk(pg_path: &Path, major: u32) -> Result<Walk> {
    let mut w = Walk {
        tasks: Vec::new(),
        dirs: Vec::new(),
        links: Vec::new(),
        tablespaces: Vec::new(),
        roots: Vec::new(),
    };
    let mut roots: Vec<(PathBuf, String)> = vec![(pg_path.to_path_buf(), String::new())];
    let tblspc = pg_path.join("pg_tblspc");
    if let Ok(rd) = std::fs::read_dir(&tblspc) {
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().to_string();
            let Ok(oid) = name.parse::<u32>() else {
                continue;
            };
            let link = e.path();
            // An in-place tablespace (allow_in_place_tablespaces, which PostgreSQL's own tests
            // use) is a plain directory: the walk of the data directory copies it, and
            // pg_backup_stop leaves it out of tablespace_map.
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let target = std::fs::read_link(&link)
                .map_err(|err| Error::io("read tablespace link", &link, err))?;
            w.tablespaces.push((oid, target.display().to_string()));
            w.links.push(LinkEntry {
                path: format!("pg_tblspc/{name}"),
                target: target.display().to_string(),
            });
            // Only this major version's directory: after pg_upgrade the old one may still be there.
            let prefix = format!("PG_{major}_");
            for v in std::fs::read_dir(&target)
                .map_err(|err| Error::io("read tablespace", &target, err))?
                .filter_map(|e| e.ok())
            {
                let vname = v.file_name().to_string_lossy().to_string();
                if vname.starts_with(&prefix) {
                    roots.push((v.path(), format!("pg_tblspc/{name}/{vname}")));
                }
            }
        }
    }
    for (root_no, (root, prefix)) in roots.into_iter().enumerate() {
        w.roots
            .push(crate::fsx::Dir::open(&root).map_err(|e| Error::io("open", &root, e))?);
        if !prefix.is_empty() {
            let m = std::fs::metadata(&root).map_err(|e| Error::io("stat", &root, e))?;
            w.dirs.push(DirEntry {
                path: prefix.clone(),
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            });
        }
        let mut it = walkdir::WalkDir::new(&root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter();
        while let Some(entry) = it.next() {
            let entry = match entry {
                Ok(e) => e,
                // Files and directories vanish while a live cluster is being read: normal.
                Err(e)
                    if e.io_error()
                        .is_some_and(|i| i.kind() == std::io::ErrorKind::NotFound) =>
                {
                    continue;
                }
                Err(e) => {
                    return Err(Error::storage(format!(
                        "cannot read {}: {e}",
                        root.display()
                    )));
                }
            };
            if entry.depth() == 0 {
                continue;
            }
            let sub = entry
                .path()
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let rel = if prefix.is_empty() {
                sub
            } else {
                format!("{prefix}/{sub}")
            };
            let ft = entry.file_type();
            // A link to a file (a postgresql.conf kept elsewhere) is backed up as that file and
            // restored as a plain one: a restore never links into the source's files.
            let linked_file = ft.is_symlink()
                && !rel.starts_with("pg_tblspc/")
                && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
            if ft.is_symlink() && !linked_file {
                if !rel.starts_with("pg_tblspc/") {
                    let target = std::fs::read_link(entry.path())
                        .map_err(|e| Error::io("read link", entry.path(), e))?;
                    w.links.push(LinkEntry {
                        path: rel,
                        target: target.display().to_string(),
                    });
                }
                continue;
            }
            let meta = match if linked_file {
                std::fs::metadata(entry.path())
            } else {
                entry.metadata().map_err(std::io::Error::from)
            } {
                Ok(m) => m,
                Err(_) => continue,
            };
            if ft.is_dir() {
                match layout::include(&rel, true) {
                    Include::No => {
                        it.skip_current_dir();
                        continue;
                    }
                    Include::EmptyDir => it.skip_current_dir(),
                    Include::Yes => {}
                }
                w.dirs.push(DirEntry {
                    path: rel,
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                });
                continue;
            }
            if !(ft.is_file() || linked_file) || layout::include(&rel, false) != Include::Yes {
                continue;
            }
            w.tasks.push(Task {
                rel,
                abs: entry.path().to_path_buf(),
                root: root_no,
                sub: entry.path().strip_prefix(&root).unwrap().to_path_buf(),
                dev: meta.dev(),
                ino: meta.ino(),
                linked: linked_file,
                size: meta.len(),
                mtime: meta.mtime(),
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                from_parent: None,
            });
        }
    }
    // Unlogged relations: keep only their init forks.
    let init: HashSet<(String, u64)> = w
        .tasks
        .iter()
        .filter_map(|t| RelFile::parse(&t.rel))
        .filter(|r| r.fork == layout::Fork::Init)
        .map(|r| (r.dir, r.relfilenode))
        .collect();
    if !init.is_empty() {
        w.tasks.retain(|t| !layout::unlogged_skip(&t.rel, &init));
    }
    Ok(w)
}

struct Shared {
    queue: Mutex<Vec<Task>>,
    bs: BlockStore,
    done_bytes: Arc<AtomicU64>,
    start_lsn: u64,
    checksums: bool,
    rt: tokio::runtime::Handle,
    roots: Vec<crate::fsx::Dir>,
    /// The data directory's owner, and whether we run as root.
    owner: (u32, u32),
    as_root: bool,
}

struct WorkerOut {
    files: Vec<FileEntry>,
    errors: Vec<ChecksumError>,
    stats: WriteStats,
    read_bytes: u64,
}

/// Test hook: with `PGFROST_TEST_AFTER_WALK=PATH`, the backup creates `PATH.walked` after its
/// walk and waits (up to two minutes) for PATH to exist, so a test can change the data directory
/// exactly between the walk and the reads.
async fn after_walk_hook() {
    let Some(gate) = std::env::var_os("PGFROST_TEST_AFTER_WALK").map(PathBuf::from) else {
        return;
    };
    let _ = std::fs::write(gate.with_extension("walked"), "");
    for _ in 0..1200 {
        if gate.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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

/// One worker: takes files off the queue, reads them in 1 MiB chunks, verifies page checksums,
/// and adds their 8 KiB blocks to its own writer (so sealing runs on process-max cores).
fn worker(shared: Arc<Shared>, mut writer: BlockWriter) -> Result<WorkerOut> {
    let mut out = WorkerOut {
        files: Vec::new(),
        errors: Vec::new(),
        stats: WriteStats::default(),
        read_bytes: 0,
    };
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let Some(t) = shared.queue.lock().unwrap().pop() else {
            break;
        };
        let Some((mut f, t)) = open_task(&shared, t)? else {
            continue;
        };
        let rel = RelFile::parse(&t.rel).filter(|r| !r.temp);
        let mut ids: Vec<u8> = Vec::new();
        let (read, size) = match &t.from_parent {
            Some(fp) => copy_from_parent(
                &shared,
                &t,
                fp,
                &mut f,
                rel.as_ref(),
                &mut writer,
                &mut ids,
                &mut out.errors,
            )?,
            None => {
                let mut size = 0u64;
                let mut block_no = rel.as_ref().map_or(0, |r| r.first_block());
                loop {
                    let n =
                        read_full(&mut f, &mut buf).map_err(|e| Error::io("read", &t.abs, e))?;
                    if n == 0 {
                        break;
                    }
                    for chunk in buf[..n].chunks(BLCKSZ) {
                        if shared.checksums && rel.is_some() && chunk.len() == BLCKSZ {
                            check_page(&shared, &t, &mut f, size, chunk, block_no, &mut out.errors);
                        }
                        let id = shared.rt.block_on(writer.add(chunk))?;
                        ids.extend_from_slice(&id);
                        size += chunk.len() as u64;
                        block_no = block_no.wrapping_add(1);
                    }
                    shared.done_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    if n < buf.len() {
                        break;
                    }
                }
                (size, size)
            }
        };
        out.read_bytes += read;
        // A file's new blocks share runs with each other only, and its block list (read by a
        // restore before the blocks) gets a run of its own.
        shared.rt.block_on(writer.end_run())?;
        let list = if ids.is_empty() {
            String::new()
        } else {
            let id = shared.rt.block_on(writer.add(&ids))?;
            shared.rt.block_on(writer.end_run())?;
            hex_id(&id)
        };
        out.files.push(FileEntry {
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
    }
    out.stats = shared.rt.block_on(writer.finish())?;
    Ok(out)
}

/// Builds a relation file from its parent's blocks and the blocks the WAL summaries name as
/// changed (read from disk), so an incremental reads only what changed. Returns (bytes read,
/// file size).
#[allow(clippy::too_many_arguments)]
fn copy_from_parent(
    shared: &Shared,
    t: &Task,
    fp: &FromParent,
    f: &mut std::fs::File,
    rel: Option<&RelFile>,
    writer: &mut BlockWriter,
    ids: &mut Vec<u8>,
    errors: &mut Vec<ChecksumError>,
) -> Result<(u64, u64)> {
    let list_id = crate::repo::format::hex_array::<32>(&fp.list, "list").map_err(Error::corrupt)?;
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
                errors,
            );
        }
        let id = shared.rt.block_on(writer.add(&page[..n]))?;
        ids.extend_from_slice(&id);
        read += n as u64;
        total += n as u64;
        shared.done_bytes.fetch_add(n as u64, Ordering::Relaxed);
        if n < BLCKSZ {
            break;
        }
    }
    Ok((read, total))
}

/// (tablespace, database) of a relation file's directory: pg_global and pg_default are 1664 and
/// 1663, as pg_wal_summary_contents reports them.
fn rel_key(r: &RelFile) -> Option<RelKey> {
    let parts: Vec<&str> = r.dir.split('/').collect();
    let (spc, db) = match parts.as_slice() {
        ["global"] => (1664, 0),
        ["base", db] => (1663, db.parse().ok()?),
        ["pg_tblspc", spc, _, db] => (spc.parse().ok()?, db.parse().ok()?),
        _ => return None,
    };
    let fork = match r.fork {
        layout::Fork::Main => 0,
        layout::Fork::Fsm => 1,
        layout::Fork::Vm => 2,
        layout::Fork::Init => 3,
    };
    Some((spc, db, r.relfilenode as u32, fork))
}

/// How a relation file is read when WAL summaries cover the range since the parent, following
/// the rules of PostgreSQL's own incremental backup (basebackup_incremental.c,
/// GetFileBackupMethod): `Some` to take unchanged blocks from the parent's copy and read only
/// the changed ones, `None` to read the whole file. A summary names changes by relation, so
/// anything it describes only indirectly must be read whole:
/// - the free space map, which is not WAL-logged;
/// - a file the parent did not have, or had empty;
/// - a database (or, for `global/`, the cluster) with a database-wide entry truncated to 0:
///   it was created, copied (`CREATE DATABASE ... STRATEGY FILE_COPY`, `ALTER DATABASE ... SET
///   TABLESPACE`) or dropped since the parent, and its files were copied without per-block WAL;
/// - a relation fork truncated to 0 (created or recreated since: the same relfilenode may now
///   name another relation);
/// - a file shorter than the parent's copy, or not a whole number of pages: something happened
///   that the summary's block list alone does not explain, and reading it costs little.
fn from_parent(
    changes: &HashMap<RelKey, RelChange>,
    r: &RelFile,
    parent: &FileEntry,
    size: u64,
) -> Option<FromParent> {
    if r.fork == layout::Fork::Fsm || parent.list.is_empty() || parent.size == 0 {
        return None;
    }
    if size < parent.size || !size.is_multiple_of(BLCKSZ as u64) {
        return None;
    }
    let key = rel_key(r)?;
    let database = (key.0, key.1, 0, 0);
    if changes.get(&database).is_some_and(|c| c.limit == Some(0)) {
        return None;
    }
    let c = changes.get(&key);
    if c.is_some_and(|c| c.limit == Some(0)) {
        return None;
    }
    let first = r.first_block() as u64;
    let local = |b: u64| {
        b.checked_sub(first)
            .filter(|l| *l < page::RELSEG_BLOCKS as u64)
            .map(|l| l as u32)
    };
    Some(FromParent {
        list: parent.list.clone(),
        parent_size: parent.size,
        changed: c
            .map(|c| c.blocks.iter().filter_map(|b| local(*b)).collect())
            .unwrap_or_default(),
        limit: c
            .and_then(|c| c.limit)
            .map(|l| l.saturating_sub(first).min(page::RELSEG_BLOCKS as u64) as u32),
    })
}

/// The blocks changed between the parent's start and this backup's start, from PostgreSQL's WAL
/// summaries (17+, summarize_wal = on). None when they are off or do not cover the whole range
/// on this timeline: the caller then compares blocks by hash, which is always correct.
async fn summaries(
    client: &tokio_postgres::Client,
    settings: &Settings,
    parent: &Manifest,
    timeline: u32,
    start_lsn: u64,
) -> Result<Option<HashMap<RelKey, RelChange>>> {
    let parent_start = wal::parse_lsn(&parent.start_lsn).unwrap_or(u64::MAX);
    if parent.timeline != timeline || !settings.flag("wal-summary")? {
        return Ok(None);
    }
    let on: String = conn::query_one(client, "SELECT current_setting('summarize_wal')").await?;
    if on != "on" {
        log::info!("backup: summarize_wal is off; comparing every block by hash");
        return Ok(None);
    }
    // The summarizer trails WAL: wait until it has covered everything up to this backup's start.
    // PostgreSQL's own incremental backup waits the same way (WaitForWalSummarization).
    let wait = settings.u32("archive-timeout");
    let deadline = Instant::now() + Duration::from_secs(wait as u64);
    let mut said = false;
    loop {
        let done: String = conn::query_one(
            client,
            "SELECT summarized_lsn::text FROM pg_get_wal_summarizer_state()",
        )
        .await?;
        if wal::parse_lsn(&done).is_some_and(|l| l >= start_lsn) {
            break;
        }
        if Instant::now() > deadline {
            log::warn!(
                "backup: WAL summaries stop at {done}, before this backup's start {} after {wait} s (archive-timeout); comparing every block by hash",
                wal::format_lsn(start_lsn)
            );
            return Ok(None);
        }
        if !said {
            log::info!(
                "backup: waiting up to {wait} s for the WAL summarizer to reach this backup's start {} (it is at {done})",
                wal::format_lsn(start_lsn)
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = client
        .query(
            "SELECT start_lsn::text, end_lsn::text FROM pg_available_wal_summaries() \
             WHERE tli = $1 AND end_lsn > $2::text::pg_lsn AND start_lsn < $3::text::pg_lsn ORDER BY start_lsn",
            &[&(timeline as i64), &parent.start_lsn, &wal::format_lsn(start_lsn)],
        )
        .await
        .map_err(|e| conn::pg_err("cannot list WAL summaries", e))?;
    let ranges: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    // Coverage: the first summary starts at or before the parent's start, each starts where the
    // one before ends, the last ends at or after this backup's start.
    let lsn = |s: &str| wal::parse_lsn(s).unwrap_or(0);
    let covered = !ranges.is_empty()
        && lsn(&ranges[0].0) <= parent_start
        && ranges.windows(2).all(|w| lsn(&w[0].1) == lsn(&w[1].0))
        && lsn(&ranges.last().unwrap().1) >= start_lsn;
    if !covered {
        log::info!(
            "backup: the WAL summaries do not cover {}..{}; comparing every block by hash",
            parent.start_lsn,
            wal::format_lsn(start_lsn)
        );
        return Ok(None);
    }
    let mut changes: HashMap<RelKey, RelChange> = HashMap::new();
    for (from, to) in &ranges {
        let rows = client
            .query(
                "SELECT reltablespace, reldatabase, relfilenode, relforknumber, relblocknumber, is_limit_block \
                 FROM pg_wal_summary_contents($1, $2::text::pg_lsn, $3::text::pg_lsn)",
                &[&(timeline as i64), from, to],
            )
            .await
            .map_err(|e| conn::pg_err("cannot read a WAL summary", e))?;
        for r in rows {
            let key: RelKey = (
                r.get::<_, u32>(0),
                r.get::<_, u32>(1),
                r.get::<_, u32>(2),
                r.get::<_, i16>(3),
            );
            let block = r.get::<_, i64>(4) as u64;
            let e = changes.entry(key).or_default();
            if r.get::<_, bool>(5) {
                e.limit = Some(e.limit.map_or(block, |l| l.min(block)));
            } else {
                e.blocks.insert(block);
            }
        }
    }
    log::info!(
        "backup: WAL summaries name {} changed block(s) in {} relation fork(s) since the parent",
        changes.values().map(|c| c.blocks.len()).sum::<usize>(),
        changes.len()
    );
    Ok(Some(changes))
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

fn label_stamp(t: SystemTime) -> String {
    // RFC 3339 "2026-11-21T09:26:06Z" -> "20261121-092606" (UTC).
    let s = humantime::format_rfc3339_seconds(t).to_string();
    format!(
        "{}{}{}-{}{}{}",
        &s[0..4],
        &s[5..7],
        &s[8..10],
        &s[11..13],
        &s[14..16],
        &s[17..19]
    )
}

pub async fn run(settings: &Settings) -> Result<()> {
    let started = Instant::now();
    let stanza_name = settings.required("stanza")?.to_string();
    let kind = match settings.string("type").unwrap_or("incr") {
        "full" => BackupType::Full,
        "diff" => BackupType::Diff,
        "incr" => BackupType::Incr,
        other => {
            return Err(Error::config(format!("invalid backup type '{other}'"))
                .hint("use --type full, diff or incr"));
        }
    };
    let repo = open_repo(settings).await?;
    let db = stanza::current(&repo, &stanza_name).await?;
    // The lease comes before the index is read: garbage collection must either see this backup
    // and stand back, or be seen and waited for (repo/lease.rs).
    let lease = Lease::acquire(&repo.store, &stanza_name, LeaseKind::Backup, "backup").await?;
    let taken = async {
        // Two backups of one stanza would pick the same label in the same second and the
        // loser would find out only when writing its manifest. Each writes its lease before
        // it lists. Of two started together the later one (creation time, then id) refuses
        // at once when it sees the other. But the lists need not agree: the earlier one may
        // have listed before the later one's lease existed, while the later one saw it; then
        // neither finds a lease before its own. So a backup that sees only later leases waits
        // for their holders to decide: one that saw us refuses and deletes its lease; one
        // still there after that went on without seeing us, and we refuse instead.
        let backups = || async {
            Ok::<_, Error>(
                lease
                    .others(&stanza_name)
                    .await?
                    .into_iter()
                    .filter(|f| f.doc.as_ref().is_some_and(|d| d.kind == LeaseKind::Backup))
                    .collect::<Vec<_>>(),
            )
        };
        let refuse = |f: &crate::repo::lease::Found| {
            Error::new(
                ErrorKind::Conflict,
                format!(
                    "another backup of stanza '{stanza_name}' is running: {}",
                    f.describe()
                ),
            )
            .hint(format!(
                "wait for it to finish; a lease left by a killed backup stops counting after {} s (at once on its own host)",
                crate::repo::lease::TTL_SECONDS
            ))
        };
        let seen = backups().await?;
        if let Some(f) = seen
            .iter()
            .find(|f| f.doc.as_ref().is_some_and(|d| lease.preceded_by(d)))
        {
            return Err(refuse(f));
        }
        if !seen.is_empty() {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let again = backups().await?;
            if let Some(f) = again.iter().find(|f| seen.iter().any(|s| s.path == f.path)) {
                return Err(refuse(f));
            }
        }
        lease.wait_for_gc(&stanza_name).await?;
        let m = take(settings, &repo, &stanza_name, &db, kind, started).await?;
        if !lease.still_held().await? {
            // Collected as dead while paused: blocks this backup relies on may be gone.
            let _ = repo
                .store
                .delete(&manifest::path(&stanza_name, &m.label))
                .await;
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "backup {} withdrawn: its lease {} expired while it ran (the process was stopped for more than {} s), so garbage collection may have removed blocks it references",
                    m.label,
                    lease.path,
                    crate::repo::lease::TTL_SECONDS
                ),
            )
            .hint("take the backup again"));
        }
        Ok(m)
    }
    .await;
    lease.release().await;
    let m = taken?;
    let label = m.label.clone();
    let kind = m.kind;
    let expired = if settings.flag("expire-auto")? {
        match super::expire::expire(
            settings,
            &repo,
            &stanza_name,
            &super::expire::Ask::default(),
        )
        .await
        {
            Ok(r) => Some(r),
            Err(e) => {
                // The backup itself is complete and recorded; a failed expire only delays upkeep.
                log::warn!("expire after backup {label} failed: {e}");
                None
            }
        }
    } else {
        None
    };
    let s = &m.stats;
    // The result line says it; an INFO line would print it twice.
    log::debug!(
        "backup {label} complete: {} files, {:.1} MiB, {:.1} MiB read, {:.1} MiB new, {:.1} MiB stored, in {:.1}s",
        s.files,
        s.logical_bytes as f64 / 1048576.0,
        s.read_bytes as f64 / 1048576.0,
        s.new_bytes as f64 / 1048576.0,
        s.stored_bytes as f64 / 1048576.0,
        s.duration_ms as f64 / 1000.0
    );
    let mut text = format!(
        "backup {label} ({}): {} files, {:.1} MiB; {:.1} MiB new, {:.1} MiB added to the repository; WAL {}..{}",
        kind.name(),
        s.files,
        s.logical_bytes as f64 / 1048576.0,
        s.new_bytes as f64 / 1048576.0,
        s.stored_bytes as f64 / 1048576.0,
        m.start_wal,
        m.stop_wal
    );
    for e in &m.checksum_errors {
        text.push_str(&format!(
            "\npage checksum failure: {} block {}",
            e.file, e.block
        ));
    }
    // Expire's lines only when it did something: a quiet night stays quiet.
    if let Some(r) = expired
        .as_ref()
        .filter(|r| !r.expired.is_empty() || r.wal_files > 0 || r.freed_bytes != 0)
    {
        for line in r.summary_lines() {
            text.push_str(&format!("\n{line}"));
        }
    }
    emit(
        settings,
        &text,
        json!({"label": label, "type": kind.name(), "parent": m.parent, "stats": m.stats, "start_wal": m.start_wal,
               "stop_wal": m.stop_wal, "checksum_errors": m.checksum_errors, "expire": expired}),
    );
    if !m.checksum_errors.is_empty() && settings.flag("fail-on-page-error")? {
        return Err(Error::corrupt(format!(
            "backup {label} found {} page(s) with checksum failures (listed above and in its manifest)",
            m.checksum_errors.len()
        )));
    }
    Ok(())
}

/// Takes the backup and records its manifest.
async fn take(
    settings: &Settings,
    repo: &crate::repo::Repository,
    stanza_name: &str,
    db: &stanza::StanzaDb,
    mut kind: BackupType,
    started: Instant,
) -> Result<Manifest> {
    let stanza_name = stanza_name.to_string();
    let target = conn::Target::from_settings(settings)?;
    let client = conn::connect(&target).await?;
    let sysid: i64 =
        conn::query_one(&client, "SELECT system_identifier FROM pg_control_system()").await?;
    let version_num: i32 =
        conn::query_one(&client, "SELECT current_setting('server_version_num')::int").await?;
    if sysid as u64 != db.system_id() || version_num as u32 / 10000 != db.pg_major {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "stanza '{stanza_name}' belongs to system identifier {} (PostgreSQL {}), the cluster at {} is {} (PostgreSQL {})",
                db.system_id,
                db.pg_major,
                target.describe(),
                sysid as u64,
                version_num / 10000
            ),
        )
        .hint("check --stanza and the pg-* options; after pg_upgrade run stanza-upgrade"));
    }
    if conn::query_one::<bool>(&client, "SELECT pg_is_in_recovery()").await? {
        return Err(Error::new(
            ErrorKind::Postgres,
            "backups from a standby are not supported yet",
        )
        .hint("point pg-host/pg-port at the primary"));
    }
    let pg_path = match settings.string("pg-path") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(
            conn::query_one::<String>(&client, "SELECT current_setting('data_directory')").await?,
        ),
    };
    if control::read_control(&pg_path)?.system_id != sysid as u64 {
        return Err(Error::new(
            ErrorKind::Postgres,
            format!(
                "pg-path {} is not the data directory of the connected cluster",
                pg_path.display()
            ),
        ));
    }
    let checksums = conn::query_one::<String>(&client, "SELECT current_setting('data_checksums')")
        .await?
        == "on";

    // The parent: incr builds on the newest backup, diff on the newest full, of this cluster
    // and on its line of history. A promoted standby and the old primary may both archive into
    // the stanza: each must build on its own backups, never on a timeline it did not come from.
    let labels = manifest::list(repo, &stanza_name).await?;
    let mut parent: Option<Manifest> = None;
    if kind != BackupType::Full {
        let current: String = client
            .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
            .await
            .map_err(|e| conn::pg_err("pg_walfile_name failed", e))?
            .get(0);
        let current = u32::from_str_radix(&current[0..8], 16).unwrap_or(1);
        let mut tl = super::archive::Timelines::new(repo, &stanza_name).await?;
        // The cluster's own pg_wal holds its history file, should the archive not have it yet.
        let local = std::fs::read_to_string(pg_path.join(format!("pg_wal/{current:08X}.history")))
            .ok()
            .and_then(|t| crate::pg::timeline::parse_history(&t));
        let history = match tl.history(current).await? {
            Some(h) => h,
            None => local.unwrap_or_default(),
        };
        for l in labels.iter().rev() {
            let m = manifest::read(repo, &stanza_name, l).await?;
            if m.db_id != db.id || (kind == BackupType::Diff && m.kind != BackupType::Full) {
                continue;
            }
            let stop = wal::parse_lsn(&m.stop_lsn).unwrap_or(u64::MAX);
            if let Some(why) = crate::pg::timeline::unreachable(current, &history, m.timeline, stop)
            {
                log::info!("backup: {l} cannot be the parent: {why}");
                continue;
            }
            parent = Some(m);
            break;
        }
        if parent.is_none() {
            log::warn!(
                "no earlier full backup of this cluster in stanza '{stanza_name}': taking a full backup"
            );
            kind = BackupType::Full;
        }
    }
    let bs = super::StoreOptions::from_settings(settings)?
        .open(repo, &stanza_name)
        .await?;
    let adopted = bs.adopt_orphan_packs().await?;
    if adopted > 0 {
        log::info!("backup: reusing {adopted} pack(s) left by an interrupted run");
    }

    // Labels have one-second resolution: a backup right after another waits for the next second
    // rather than fail (two timers firing together, or a script taking two in a row).
    let make = |t: SystemTime| {
        let stamp = label_stamp(t);
        match &parent {
            None => format!("{stamp}F"),
            Some(p) => format!(
                "{}_{stamp}{}",
                p.label.split('_').next().unwrap(),
                kind.letter()
            ),
        }
    };
    let taken = |l: &str| {
        labels
            .iter()
            .any(|x| x.rsplit('_').next().map(|t| &t[..15]) == Some(&l[l.len() - 16..l.len() - 1]))
    };
    let mut start_time = clock::now();
    let mut label = make(start_time);
    while taken(&label) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        start_time = clock::now();
        label = make(start_time);
    }
    let fast = settings.flag("start-fast")?;
    let start_sql = if db.pg_major >= 15 {
        "SELECT pg_backup_start($1, $2)::text"
    } else {
        "SELECT pg_start_backup($1, $2, false)::text"
    };
    if fast {
        log::info!(
            "backup {label}: starting ({} backup, immediate checkpoint)",
            kind.name()
        );
    } else {
        // A spread checkpoint takes up to checkpoint_timeout x checkpoint_completion_target
        // (4.5 min by default), and pg_backup_start says nothing until it ends.
        let timeout: String =
            conn::query_one(&client, "SELECT current_setting('checkpoint_timeout')")
                .await
                .unwrap_or_else(|_| "?".into());
        log::info!(
            "backup {label}: starting ({} backup); waiting for PostgreSQL's next checkpoint, which it spreads over up to checkpoint_timeout ({timeout}) x checkpoint_completion_target to spare the I/O. HINT: --start-fast y checkpoints at once",
            kind.name()
        );
    }
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&label, &fast];
    let start = client.query_one(start_sql, &params);
    tokio::pin!(start);
    let waited = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    tick.tick().await;
    let row = loop {
        tokio::select! {
            r = &mut start => break r,
            _ = tick.tick() => log::info!(
                "backup {label}: still waiting for the checkpoint ({:.0}s; --start-fast y skips the wait)",
                waited.elapsed().as_secs_f64()
            ),
        }
    };
    let start_lsn_text: String = row
        .map_err(|e| conn::pg_err("pg_backup_start failed", e))?
        .get(0);
    let start_lsn = wal::parse_lsn(&start_lsn_text)
        .ok_or_else(|| Error::internal(format!("bad start LSN {start_lsn_text}")))?;
    let start_wal: String = client
        .query_one(
            "SELECT pg_walfile_name($1::text::pg_lsn)",
            &[&start_lsn_text],
        )
        .await
        .map_err(|e| conn::pg_err("pg_walfile_name failed", e))?
        .get(0);
    let timeline = u32::from_str_radix(&start_wal[0..8], 16).unwrap_or(1);

    let walked = tokio::task::spawn_blocking({
        let (p, major) = (pg_path.clone(), db.pg_major);
        move || walk(&p, major)
    })
    .await
    .map_err(|e| Error::internal(format!("walk failed: {e}")))??;
    let mut walked = walked;
    after_walk_hook().await;
    let walk_roots = std::mem::take(&mut walked.roots);
    let pg_meta = std::fs::metadata(&pg_path).map_err(|e| Error::io("stat", &pg_path, e))?;

    // diff/incr: an unchanged file (same size, same mtime, and last modified before the parent
    // started, so the parent's copy cannot predate a change made in the same second) is not read.
    let mut reused: Vec<FileEntry> = Vec::new();
    let mut to_read: Vec<Task> = Vec::new();
    let parent_files: HashMap<&str, &FileEntry> = parent
        .as_ref()
        .map(|p| p.files.iter().map(|f| (f.path.as_str(), f)).collect())
        .unwrap_or_default();
    for t in walked.tasks {
        match parent_files.get(t.rel.as_str()) {
            Some(f)
                if f.size == t.size
                    && f.mtime == t.mtime
                    && t.mtime < parent.as_ref().unwrap().start_unix =>
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
    // PostgreSQL 17+: relation files are read only where the WAL summaries say they changed.
    let changes = match (&parent, kind) {
        (Some(p), BackupType::Diff | BackupType::Incr) if db.pg_major >= 17 => {
            summaries(&client, settings, p, timeline, start_lsn).await?
        }
        _ => None,
    };
    if let Some(changes) = &changes {
        let mut whole = 0usize;
        for t in &mut to_read {
            let Some(r) = RelFile::parse(&t.rel).filter(|r| !r.temp) else {
                continue;
            };
            t.from_parent = parent_files
                .get(t.rel.as_str())
                .and_then(|pf| from_parent(changes, &r, pf, t.size));
            whole += usize::from(t.from_parent.is_none());
        }
        log::info!(
            "backup {label}: {whole} relation file(s) read whole (new, recreated, truncated away or the free space map), the rest from the WAL summaries"
        );
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
        queue: Mutex::new(to_read),
        bs: bs.clone(),
        done_bytes: Arc::new(AtomicU64::new(0)),
        start_lsn,
        checksums,
        rt: tokio::runtime::Handle::current(),
        roots: walk_roots,
        owner: (pg_meta.uid(), pg_meta.gid()),
        // SAFETY: geteuid cannot fail.
        as_root: unsafe { libc::geteuid() } == 0,
    });
    let reporter = crate::progress::report("backup", total, Arc::clone(&shared.done_bytes));
    let workers = settings.u32("process-max") as usize;
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (s, w) = (Arc::clone(&shared), bs.writer());
        handles.push(tokio::task::spawn_blocking(move || worker(s, w)));
    }
    let mut files = reused;
    let mut errors = Vec::new();
    let mut stats = Stats::default();
    let mut first_err = None;
    for h in handles {
        match h
            .await
            .map_err(|e| Error::internal(format!("backup worker failed: {e}")))?
        {
            Ok(o) => {
                files.extend(o.files);
                errors.extend(o.errors);
                stats.read_bytes += o.read_bytes;
                stats.new_blocks += o.stats.new_blocks;
                stats.new_bytes += o.stats.new_bytes;
                stats.stored_bytes += o.stats.stored_bytes;
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    drop(reporter);
    if let Some(e) = first_err {
        // Leaving the session aborts the non-exclusive backup on the server.
        return Err(e.context(format!(
            "backup {label} failed (nothing was recorded; blocks already stored will be reused)"
        )));
    }

    let stop_sql = if db.pg_major >= 15 {
        "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)"
    } else {
        "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, false)"
    };
    let row = client
        .query_one(stop_sql, &[])
        .await
        .map_err(|e| conn::pg_err("pg_backup_stop failed", e))?;
    let (stop_lsn_text, backup_label, spcmap): (String, String, Option<String>) =
        (row.get(0), row.get(1), row.get(2));
    let stop_time = clock::now();
    let stop_wal: String = client
        .query_one(
            "SELECT pg_walfile_name($1::text::pg_lsn)",
            &[&stop_lsn_text],
        )
        .await
        .map_err(|e| conn::pg_err("pg_walfile_name failed", e))?
        .get(0);
    // A transaction id assigned after the stop: every transaction at or past it was assigned,
    // and so committed, after the backup's end, where recovery is consistent. A snapshot's
    // xmax would not do: a transaction whose commit record is written but which still waits
    // for a synchronous standby counts as running, and may lie before the end. Costs one xid
    // and one commit record per backup.
    let stop_next_xid: String = client
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .map_err(|e| conn::pg_err("cannot read the next transaction id", e))?
        .get(0);
    let names: HashMap<u32, String> = client
        .query("SELECT oid, spcname FROM pg_tablespace", &[])
        .await
        .map_err(|e| conn::pg_err("cannot list tablespaces", e))?
        .into_iter()
        .map(|r| (r.get::<_, u32>(0), r.get::<_, String>(1)))
        .collect();

    wait_for_wal(
        settings,
        repo,
        &stanza_name,
        db,
        &start_wal,
        &stop_wal,
        &label,
    )
    .await?;

    files.sort_by(|a, b| a.path.cmp(&b.path));
    stats.files = files.len() as u64;
    stats.logical_bytes = files.iter().map(|f| f.size).sum();
    stats.reused_files = files.iter().filter(|f| f.reused).count() as u64;
    stats.duration_ms = started.elapsed().as_millis() as u64;
    errors.sort_by(|a, b| (&a.file, a.block).cmp(&(&b.file, b.block)));
    let m = Manifest {
        format: manifest::FORMAT.into(),
        version: 1,
        label: label.clone(),
        kind,
        parent: parent.as_ref().map(|p| p.label.clone()),
        db_id: db.id,
        system_id: db.system_id.clone(),
        pg_major: db.pg_major,
        pg_version_num: version_num as u32,
        timeline,
        start_lsn: start_lsn_text,
        stop_lsn: stop_lsn_text,
        start_wal,
        stop_wal,
        start_time: humantime::format_rfc3339_seconds(start_time).to_string(),
        stop_time: humantime::format_rfc3339_seconds(stop_time).to_string(),
        start_unix: clock::unix(start_time),
        stop_unix: clock::unix(stop_time),
        stop_ms: stop_time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        stop_next_xid: Some(stop_next_xid),
        backup_label,
        tablespace_map: spcmap.filter(|s| !s.is_empty()),
        checksums,
        tablespaces: walked
            .tablespaces
            .iter()
            .map(|(oid, loc)| Tablespace {
                oid: *oid,
                name: names.get(oid).cloned().unwrap_or_default(),
                location: loc.clone(),
            })
            .collect(),
        dirs: walked.dirs,
        links: walked.links,
        files,
        checksum_errors: errors,
        stats,
    };
    manifest::write(repo, &stanza_name, &m).await?;
    Ok(m)
}

/// Waits until every WAL segment from the backup's start to its stop is in the repository:
/// without them the backup cannot be restored to a consistent state.
#[allow(clippy::too_many_arguments)]
async fn wait_for_wal(
    settings: &Settings,
    repo: &crate::repo::Repository,
    stanza: &str,
    db: &stanza::StanzaDb,
    start_wal: &str,
    stop_wal: &str,
    label: &str,
) -> Result<()> {
    let seg = db.wal_segment_size;
    let (first, last) = (WalFile::parse(start_wal), WalFile::parse(stop_wal));
    let (Some(first), Some(last)) = (first, last) else {
        return Err(Error::internal(format!(
            "unexpected WAL names {start_wal}..{stop_wal}"
        )));
    };
    let tli = last.tli();
    let timeout = Duration::from_secs(settings.u32("archive-timeout") as u64);
    let started = Instant::now();
    let from = first.segno(seg).unwrap();
    let to = last.segno(seg).unwrap();
    for n in from..=to {
        let name = wal::segment_name(tli, n, seg);
        let obj = archive::object_path(stanza, db, &WalFile::parse(&name).unwrap());
        loop {
            if repo.store.exists(&obj).await? {
                break;
            }
            if started.elapsed() > timeout {
                return Err(Error::new(
                    ErrorKind::Postgres,
                    format!(
                        "backup {label} is not complete: WAL segment {name}, needed to make it consistent, did not reach the repository within {}s; the backup was not recorded",
                        timeout.as_secs()
                    ),
                )
                .hint("run 'pgfrost check' to see whether archive_command works; raise archive-timeout if archiving is just slow"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    log::info!("backup {label}: WAL {start_wal}..{stop_wal} is in the repository");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = BLCKSZ as u64;

    fn parent(path: &str, blocks: u64) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: blocks * PAGE,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime: 0,
            list: "ab".repeat(32),
            blocks: 1,
            reused: false,
        }
    }

    /// A summary entry: (relation fork, changed blocks, limit block).
    type Entry<'a> = (RelKey, &'a [u64], Option<u64>);

    fn method(
        changes: &[Entry],
        path: &str,
        parent_blocks: u64,
        blocks: u64,
    ) -> Option<FromParent> {
        let changes: HashMap<RelKey, RelChange> = changes
            .iter()
            .map(|(k, b, limit)| {
                let blocks = b.iter().copied().collect();
                (
                    *k,
                    RelChange {
                        blocks,
                        limit: *limit,
                    },
                )
            })
            .collect();
        let r = RelFile::parse(path).unwrap();
        from_parent(&changes, &r, &parent(path, parent_blocks), blocks * PAGE)
    }

    #[test]
    fn unchanged_relation_comes_from_the_parent() {
        let m = method(&[], "base/5/16384", 10, 10).unwrap();
        assert!(m.changed.is_empty() && m.limit.is_none());
    }

    #[test]
    fn changed_blocks_are_local_to_the_segment() {
        let seg = page::RELSEG_BLOCKS as u64;
        let c = [((1663, 5, 16384, 0), &[3, seg + 7][..], Some(seg + 2))];
        let first = method(&c, "base/5/16384", 10, 10).unwrap();
        assert_eq!(first.changed, HashSet::from([3]));
        assert_eq!(first.limit, Some(page::RELSEG_BLOCKS));
        let second = method(&c, "base/5/16384.1", 10, 10).unwrap();
        assert_eq!(second.changed, HashSet::from([7]));
        assert_eq!(second.limit, Some(2));
    }

    #[test]
    fn a_database_created_copied_or_dropped_since_is_read_whole() {
        // CREATE DATABASE ... STRATEGY FILE_COPY and ALTER DATABASE ... SET TABLESPACE leave
        // only this entry: (tablespace, database, relfilenumber 0), limit block 0.
        let db = [((1663, 5, 0, 0), &[][..], Some(0))];
        assert!(method(&db, "base/5/1259", 10, 10).is_none());
        assert!(method(&db, "base/6/1259", 10, 10).is_some());
        let moved = [((16400, 5, 0, 0), &[][..], Some(0))];
        assert!(method(&moved, "pg_tblspc/16400/PG_17_1/5/1259", 10, 10).is_none());
        assert!(method(&moved, "base/5/1259", 10, 10).is_some());
        let global = [((1664, 0, 0, 0), &[][..], Some(0))];
        assert!(method(&global, "global/1262", 10, 10).is_none());
    }

    #[test]
    fn a_relation_created_since_or_shorter_or_new_is_read_whole() {
        let created = [((1663, 5, 16384, 0), &[1][..], Some(0))];
        assert!(method(&created, "base/5/16384", 10, 10).is_none());
        // Another fork's truncation does not make the main fork whole.
        let vm = [((1663, 5, 16384, 2), &[][..], Some(0))];
        assert!(method(&vm, "base/5/16384", 10, 10).is_some());
        assert!(method(&vm, "base/5/16384_vm", 1, 1).is_none());
        assert!(method(&[], "base/5/16384", 10, 9).is_none(), "shorter");
        assert!(
            method(&[], "base/5/16384", 0, 9).is_none(),
            "empty in the parent"
        );
        assert!(
            method(&[], "base/5/16384_fsm", 3, 3).is_none(),
            "free space map"
        );
        let r = RelFile::parse("base/5/16384").unwrap();
        let torn = from_parent(
            &HashMap::new(),
            &r,
            &parent("base/5/16384", 2),
            2 * PAGE + 100,
        );
        assert!(torn.is_none(), "not whole pages");
        let mut none = parent("base/5/16384", 2);
        none.list.clear();
        assert!(from_parent(&HashMap::new(), &r, &none, 2 * PAGE).is_none());
    }
}
