//! Incremental from WAL summaries (PostgreSQL 17+): which blocks of each relation changed since
//! the parent, and so which relation files are built from the parent's blocks plus the changed
//! ones instead of being read whole.

use crate::error::Result;
use crate::pg::layout::{self, RelFile};
use crate::pg::page::{self, BLCKSZ};
use crate::pg::session::{BackupSession, RelKey};
use crate::pg::wal;
use crate::repo::manifest::{FileEntry, Manifest};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(super) struct FromParent {
    pub list: String,
    pub parent_size: u64,
    /// Changed block numbers, local to this file (0 = its first block).
    pub changed: HashSet<u32>,
    /// The relation was truncated to this many blocks (local) at some point since the parent.
    pub limit: Option<u32>,
}

#[derive(Debug, Default)]
pub(super) struct RelChange {
    blocks: HashSet<u64>,
    limit: Option<u64>,
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
pub(super) fn from_parent(
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
/// `wait` bounds the wait for the summarizer (archive-timeout).
pub(super) async fn summaries(
    pg: &BackupSession,
    parent: &Manifest,
    timeline: u32,
    start_lsn: u64,
    wait: Duration,
) -> Result<Option<HashMap<RelKey, RelChange>>> {
    let on = pg.setting("summarize_wal").await?;
    if on != "on" {
        log::info!("backup: summarize_wal is off; comparing every block by hash");
        return Ok(None);
    }
    if !summarized_to(pg, start_lsn, wait).await? {
        return Ok(None);
    }
    let ranges = pg
        .wal_summaries(timeline, &parent.start_lsn, &wal::format_lsn(start_lsn))
        .await?;
    // Coverage: the first summary starts at or before the parent's start, each starts where the
    // one before ends, the last ends at or after this backup's start.
    let parent_start = wal::parse_lsn(&parent.start_lsn).unwrap_or(u64::MAX);
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
        for r in pg.wal_summary_contents(timeline, from, to).await? {
            let e = changes.entry(r.rel).or_default();
            if r.is_limit {
                e.limit = Some(e.limit.map_or(r.block, |l| l.min(r.block)));
            } else {
                e.blocks.insert(r.block);
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

/// Whether the summarizer reached `start_lsn` within `wait`.
async fn summarized_to(pg: &BackupSession, start_lsn: u64, wait: Duration) -> Result<bool> {
    // The summarizer trails WAL: wait until it has covered everything up to this backup's start.
    // PostgreSQL's own incremental backup waits the same way (WaitForWalSummarization).
    let wait_s = wait.as_secs();
    let deadline = Instant::now() + wait;
    let mut said = false;
    loop {
        let done = pg.summarized_lsn().await?;
        if wal::parse_lsn(&done).is_some_and(|l| l >= start_lsn) {
            return Ok(true);
        }
        if Instant::now() > deadline {
            log::warn!(
                "backup: WAL summaries stop at {done}, before this backup's start {} after {wait_s} s (archive-timeout); comparing every block by hash",
                wal::format_lsn(start_lsn)
            );
            return Ok(false);
        }
        if !said {
            log::info!(
                "backup: waiting up to {wait_s} s for the WAL summarizer to reach this backup's start {} (it is at {done})",
                wal::format_lsn(start_lsn)
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
