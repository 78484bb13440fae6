//! Garbage collection of the block store: packs whose blocks no retained manifest references.
//!
//! Order is what makes a SIGKILL at any point harmless (every step leaves a repository in which
//! every index entry names an existing pack and every referenced block is indexed):
//! 1. live blocks of mostly-dead packs are copied into new packs, indexed by a new segment;
//! 2. every index segment that names a pack about to go is replaced: a new segment naming that
//!    segment's surviving packs is written, then the old one is deleted;
//! 3. only then are the dead, rewritten and orphaned packs deleted.
//!
//! A kill after 1 or 2 leaves duplicates in the index (allowed); a kill in 3 leaves unindexed
//! packs, which are orphans. The caller must hold a `gc` lease and have found no other live lease
//! (see lease.rs): nothing may be adding references while the live set is computed.
//!
//! The rule that keeps an incomplete index from destroying data: **no pack goes while a live
//! block is unlocated.** Orphan packs (an index segment lost or never written) are adopted from
//! their self-describing trailers before the live set is computed, so their blocks count like
//! any other; if a block that a retained manifest references is still in no stored pack,
//! collection stops with an error naming it and deletes nothing.

use super::blockmap::{BlockMap, Limits, RunFile, RunsAt};
use super::blockstore::{BlockId, BlockStore};
use super::index::{PackEntries, Run};
use super::lease::{MayCollect, MayWrite};
use super::manifest::Manifest;
use crate::error::Result;
use crate::store::Store;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// Staging files younger than this may belong to a writer at work.
pub const STAGING_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);
/// A pack is rewritten when at least this share of its bytes is dead.
pub const REWRITE_DEAD_SHARE: f64 = 0.5;
/// Index segments written by garbage collection name at most this many packs each.
const PACKS_PER_NEW_SEGMENT: usize = 256;

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct GcReport {
    pub live_blocks: u64,
    pub packs_total: u64,
    pub packs_deleted: u64,
    pub packs_rewritten: u64,
    pub orphan_packs: u64,
    /// Orphan packs indexed again from their trailers (the ones holding live blocks stay, under a
    /// new index segment).
    pub packs_adopted: u64,
    pub segments_replaced: u64,
    /// Live bytes copied out of rewritten packs (sealed sizes).
    pub bytes_moved: u64,
    /// Sizes of the objects deleted and written; freed = deleted - written.
    pub bytes_deleted: u64,
    pub bytes_written: u64,
    /// Staging files of killed writers removed (local disk; not objects, so not in freed).
    pub staging_files: u64,
    pub staging_bytes: u64,
}

impl GcReport {
    pub fn freed(&self) -> i64 {
        self.bytes_deleted as i64 - self.bytes_written as i64
    }
}

/// Every block the manifests reference: the block lists and the blocks they list. Held in a
/// [`BlockMap`], so in bounded memory; each id is held once.
pub async fn live_blocks(bs: &BlockStore, manifests: &[Manifest]) -> Result<BlockMap<()>> {
    let mut live = BlockMap::new(bs.limits().clone());
    let mut lists: Vec<BlockId> = Vec::new();
    for m in manifests {
        for f in &m.files {
            if !f.list.is_empty()
                && let Ok(id) = super::format::hex_array::<32>(&f.list, "block list id")
                && live.insert_new(id, ())?
            {
                lists.push(id);
            }
        }
    }
    for chunk in lists.chunks(1024) {
        for plain in bs.read_blocks(chunk).await? {
            for id in plain.chunks_exact(32) {
                live.insert_new(id.try_into().expect("32 bytes"), ())?;
            }
        }
    }
    Ok(live)
}

/// The error for live blocks that no stored pack holds: names the first few, with the backup and
/// file that reference them. Nothing has been deleted when it is returned.
async fn unlocated(
    bs: &BlockStore,
    retained: &[Manifest],
    located: &BlockMap<u32>,
    missing: usize,
) -> crate::error::Error {
    let mut named: Vec<String> = Vec::new();
    'manifests: for m in retained {
        for f in m.files.iter().filter(|f| !f.list.is_empty()) {
            let Ok(list) = super::format::hex_array::<32>(&f.list, "block list id") else {
                continue;
            };
            let ids: Vec<BlockId> = if located.contains(&list) {
                match bs.read_block(&list).await {
                    Ok(plain) => plain
                        .chunks_exact(32)
                        .map(|c| c.try_into().expect("32 bytes"))
                        .collect(),
                    Err(_) => vec![list],
                }
            } else {
                vec![list]
            };
            if let Some(id) = ids.iter().find(|id| !located.contains(id)) {
                named.push(format!(
                    "block {} of {} in backup {}",
                    super::blockstore::hex_id(id),
                    f.path,
                    m.label
                ));
                if named.len() == 5 {
                    break 'manifests;
                }
            }
        }
    }
    unlocated_error(missing, &named)
}

fn unlocated_error(missing: usize, named: &[String]) -> crate::error::Error {
    crate::error::Error::corrupt(format!(
        "garbage collection stopped before deleting anything: {missing} block(s) that retained \
         backups reference are in no stored pack (an index segment or pack is missing or \
         unreadable): {}",
        named.join("; ")
    ))
    .hint(
        "run `pgfrost verify` to list every damaged backup; put back a lost pack or index \
         segment if you have a copy, or expire the damaged backups with --set",
    )
}

/// An index segment as collection remembers it: its packs' run lists are in [`RunLists`].
struct Segment {
    path: String,
    size: u64,
    packs: Vec<BlockId>,
}

/// Every indexed pack's run list, as the first segment naming it gives it, kept on disk.
struct RunLists {
    file: RunFile,
    at: HashMap<BlockId, RunsAt>,
}

impl RunLists {
    fn new(limits: &Limits) -> Result<RunLists> {
        Ok(RunLists {
            file: RunFile::new(&limits.dir, "garbage collection's run lists")?,
            at: HashMap::new(),
        })
    }

    fn put(&mut self, p: &PackEntries) -> Result<()> {
        if !self.at.contains_key(&p.pack) {
            let at = self.file.append(&p.runs)?;
            self.at.insert(p.pack, at);
        }
        Ok(())
    }

    fn get(&self, pack: &BlockId) -> Result<Vec<Run>> {
        self.file.runs(self.at[pack])
    }
}

/// Lets the packs `order` names (positions in `candidates`), in that order, claim the live
/// blocks they hold that no pack has claimed yet. Returns, per pack in `order`, how many blocks
/// it claimed and the bytes of its runs holding them (a run is live while any block in it is:
/// it is sealed as one piece).
fn claim(
    lists: &RunLists,
    live: &BlockMap<()>,
    claimed: &mut BlockMap<u32>,
    candidates: &[(BlockId, u64)],
    order: &[usize],
) -> Result<Vec<(usize, u64)>> {
    let mut out = Vec::with_capacity(order.len());
    for &n in order {
        let mut mine = 0usize;
        let mut live_bytes = 0u64;
        for r in lists.get(&candidates[n].0)? {
            let mut run_live = false;
            for b in &r.blocks {
                if live.contains(&b.id) && claimed.insert_new(b.id, n as u32)? {
                    mine += 1;
                    run_live = true;
                }
            }
            if run_live {
                live_bytes += r.length as u64;
            }
        }
        out.push((mine, live_bytes));
    }
    Ok(out)
}

/// Collects the stanza's garbage. With `dry_run`, computes and reports without changing anything.
///
/// Memory is bounded as a backup's is (docs/retention.md): the index, the live set and the set
/// of claimed blocks are [`BlockMap`]s, and run lists wait in a local file; what stays in memory
/// is a few dozen bytes per pack and per segment.
pub async fn collect(
    bs: &BlockStore,
    may: MayCollect<'_>,
    store: &Store,
    stanza: &str,
    retained: &[Manifest],
    dry_run: bool,
) -> Result<GcReport> {
    let dry_run = dry_run || may.only_look();
    let (mut lists, segments) = load_index(bs, store, stanza).await?;
    // Packs as stored, and as indexed (each segment agrees with the pack's trailer; the first
    // segment naming a pack is as good as any).
    let stored = bs.list_packs().await?;
    let adopted = adopt_orphans(bs, &stored, &mut lists).await?;
    check_lists_stored(bs, retained, &stored)?;
    let live = live_blocks(bs, retained).await.map_err(|e| {
        e.context(
            "garbage collection cannot read the block lists of the retained backups; nothing was deleted",
        )
        .hint("run `pgfrost verify`: an index segment or a pack may be missing")
    })?;
    let mut report = GcReport {
        live_blocks: live.len() as u64,
        packs_adopted: adopted.len() as u64,
        ..Default::default()
    };
    report.packs_total = stored.len() as u64;
    let fate = decide(bs, retained, &lists, &stored, live).await?;
    report.bytes_moved = fate.bytes_moved;
    let orphans: Vec<BlockId> = stored
        .keys()
        .filter(|p| !lists.at.contains_key(*p))
        .copied()
        .collect();
    report.packs_deleted = fate.delete.len() as u64;
    report.packs_rewritten = fate.rewrite.len() as u64;
    report.orphan_packs = orphans.len() as u64;
    let going: HashSet<BlockId> = fate
        .delete
        .iter()
        .chain(orphans.iter())
        .chain(fate.rewrite.iter().map(|(p, _)| p))
        .copied()
        .collect();
    report.bytes_deleted = going.iter().map(|p| stored[p]).sum();
    let affected: Vec<&Segment> = segments
        .iter()
        .filter(|s| s.packs.iter().any(|p| going.contains(p)))
        .collect();
    report.segments_replaced = affected.len() as u64;
    report.bytes_deleted += affected.iter().map(|s| s.size).sum::<u64>();
    if dry_run {
        // What the rewritten packs' live blocks will take again, roughly.
        report.bytes_written = report.bytes_moved;
        return Ok(report);
    }

    // 1. Live blocks out of mostly-dead packs.
    report.bytes_written += rewrite_packs(bs, may.may_write(), &fate).await?;
    // 2. Segments naming a pack that goes are replaced by segments without it.
    report.bytes_written += replace_segments(bs, &lists, &affected, &adopted, &going).await?;
    for s in &affected {
        store.delete(&s.path).await?;
    }
    (report.staging_files, report.staging_bytes) =
        store.sweep_staging(stanza, STAGING_MIN_AGE).await?;
    // 3. Packs.
    futures::stream::iter(going.iter())
        .map(|p| {
            let path = bs.pack_path(p);
            async move { store.delete(&path).await }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(report)
}

/// Every segment, loaded once: into `bs` to read the block lists, and remembered per segment
/// to know which segments name a pack that goes.
async fn load_index(
    bs: &BlockStore,
    store: &Store,
    stanza: &str,
) -> Result<(RunLists, Vec<Segment>)> {
    let mut lists = RunLists::new(bs.limits())?;
    let mut segments: Vec<Segment> = Vec::new();
    let listed = store.list(&format!("{stanza}/index")).await?;
    let mut loaded = bs.load_segments(listed);
    while let Some((l, packs)) = loaded.try_next().await? {
        bs.add_to_index(&l.path, &packs)?;
        for p in &packs {
            lists.put(p)?;
        }
        segments.push(Segment {
            path: l.path,
            size: l.size,
            packs: packs.iter().map(|p| p.pack).collect(),
        });
    }
    Ok((lists, segments))
}

/// Orphans are adopted before anything else: a lost segment must not make live blocks look
/// dead, nor make the block lists that name them unreadable.
async fn adopt_orphans(
    bs: &BlockStore,
    stored: &HashMap<BlockId, u64>,
    lists: &mut RunLists,
) -> Result<Vec<PackEntries>> {
    let mut adopted: Vec<PackEntries> = Vec::new();
    for p in stored.keys().filter(|p| !lists.at.contains_key(*p)) {
        match bs.read_trailer(p).await {
            Ok(runs) => adopted.push(PackEntries { pack: *p, runs }),
            Err(e) => log::warn!("expire: cannot adopt orphan pack: {e}"),
        }
    }
    if !adopted.is_empty() {
        bs.add_to_index("(orphan packs adopted by garbage collection)", &adopted)?;
        for p in &adopted {
            lists.put(p)?;
        }
        log::info!(
            "expire: {} pack(s) named by no index segment were indexed from their trailers",
            adopted.len()
        );
    }
    Ok(adopted)
}

/// Block lists first: one that no stored pack holds cannot even be read.
fn check_lists_stored(
    bs: &BlockStore,
    retained: &[Manifest],
    stored: &HashMap<BlockId, u64>,
) -> Result<()> {
    let mut named: Vec<String> = Vec::new();
    let mut missing = 0usize;
    for m in retained {
        for f in m.files.iter().filter(|f| !f.list.is_empty()) {
            let Ok(list) = super::format::hex_array::<32>(&f.list, "block list id") else {
                continue;
            };
            if !bs.locate(&list).is_some_and(|p| stored.contains_key(&p)) {
                missing += 1;
                if named.len() < 5 {
                    named.push(format!(
                        "block {} (the block list of {}) in backup {}",
                        f.list, f.path, m.label
                    ));
                }
            }
        }
    }
    if missing > 0 {
        return Err(unlocated_error(missing, &named));
    }
    Ok(())
}

/// What becomes of the indexed packs: deleted (no live block is theirs), rewritten (their live
/// blocks, claimed under their position in the candidates, are copied out) or kept.
struct Fate {
    delete: Vec<BlockId>,
    rewrite: Vec<(BlockId, u32)>,
    /// Block -> the candidate that claimed it.
    claimed: BlockMap<u32>,
    /// Live bytes of the rewritten packs (sealed sizes).
    bytes_moved: u64,
}

async fn decide(
    bs: &BlockStore,
    retained: &[Manifest],
    lists: &RunLists,
    stored: &HashMap<BlockId, u64>,
    live: BlockMap<()>,
) -> Result<Fate> {
    // Where several packs hold the same live block, one copy is enough: packs with the most live
    // bytes claim their blocks first, so copies in emptier packs count as dead.
    let mut candidates: Vec<(BlockId, u64)> = Vec::new();
    for p in lists.at.keys().filter(|p| stored.contains_key(*p)) {
        let bytes = lists
            .get(p)?
            .iter()
            .filter(|r| r.blocks.iter().any(|b| live.contains(&b.id)))
            .map(|r| r.length as u64)
            .sum();
        candidates.push((*p, bytes));
    }
    candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    // Block -> the candidate (its position in `candidates`) that claimed it.
    let mut claimed: BlockMap<u32> = BlockMap::new(bs.limits().clone());
    let all: Vec<usize> = (0..candidates.len()).collect();
    let got = claim(lists, &live, &mut claimed, &candidates, &all)?;
    if claimed.len() < live.len() {
        return Err(unlocated(bs, retained, &claimed, live.len() - claimed.len()).await);
    }
    let mut delete: Vec<BlockId> = Vec::new();
    let mut rewrite: Vec<usize> = Vec::new();
    let mut kept: Vec<usize> = Vec::new();
    for (n, (p, _)) in candidates.iter().enumerate() {
        let (mine, live_bytes) = got[n];
        let size = stored[p];
        if mine == 0 {
            delete.push(*p);
        } else if (size - live_bytes.min(size)) as f64 >= REWRITE_DEAD_SHARE * size as f64 {
            rewrite.push(n);
        } else {
            kept.push(n);
        }
    }
    // A block that a pack about to be rewritten claimed, but that a pack staying as it is also
    // holds, stays there rather than being copied. Else the copy (a small, wholly live pack)
    // ranks below that pack in the next collection, loses the block to it, and goes then:
    // collection would not reach a fixed point. So claims are made again, the packs that stay
    // first; they only gain blocks, and a rewritten pack left with none is deleted instead.
    let mut moved: Vec<(usize, u64)> = Vec::new();
    if !rewrite.is_empty() {
        claimed = BlockMap::new(bs.limits().clone());
        claim(lists, &live, &mut claimed, &candidates, &kept)?;
        let again = claim(lists, &live, &mut claimed, &candidates, &rewrite)?;
        for (&n, (mine, live_bytes)) in rewrite.iter().zip(again) {
            if mine == 0 {
                delete.push(candidates[n].0);
            } else {
                moved.push((n, live_bytes));
            }
        }
    }
    Ok(Fate {
        delete,
        rewrite: moved
            .iter()
            .map(|&(n, _)| (candidates[n].0, n as u32))
            .collect(),
        claimed,
        bytes_moved: moved.iter().map(|(_, b)| b).sum(),
    })
}

/// Copies the live blocks of the packs to rewrite into new packs, indexed by a new segment.
/// Returns the bytes written.
async fn rewrite_packs(bs: &BlockStore, may: MayWrite<'_>, fate: &Fate) -> Result<u64> {
    if fate.rewrite.is_empty() {
        return Ok(0);
    }
    let mut w = bs.writer(may).forcing();
    for (p, n) in &fate.rewrite {
        let mine = |id: &BlockId| fate.claimed.get(id) == Some(*n);
        let (_, kept) = bs.pack_blocks(p, mine).await?;
        // Blocks of one old run stay together (they are neighbours in one file); blocks of
        // different old runs do not share a new one.
        let mut last_run = None;
        for (run, plain) in kept {
            if last_run.is_some_and(|l| l != run) {
                w.end_run().await?;
            }
            last_run = Some(run);
            w.add(&plain).await?;
        }
        w.end_run().await?;
    }
    let st = w.finish().await?;
    log::info!(
        "expire: moved the live blocks of {} mostly-dead pack(s) into {} new pack(s)",
        fate.rewrite.len(),
        st.packs
    );
    Ok(st.pack_bytes + st.index_bytes)
}

/// Writes segments naming the surviving packs of the `affected` segments, and the adopted packs
/// that stay. Returns the bytes written.
async fn replace_segments(
    bs: &BlockStore,
    lists: &RunLists,
    affected: &[&Segment],
    adopted: &[PackEntries],
    going: &HashSet<BlockId>,
) -> Result<u64> {
    let mut written = 0;
    let mut keep: Vec<PackEntries> = Vec::new();
    let mut seen: HashSet<BlockId> = HashSet::new();
    for s in affected {
        for p in &s.packs {
            if !going.contains(p) && seen.insert(*p) {
                keep.push(PackEntries {
                    pack: *p,
                    runs: lists.get(p)?,
                });
                if keep.len() == PACKS_PER_NEW_SEGMENT {
                    written += bs.write_segment(&keep).await?;
                    keep.clear();
                }
            }
        }
    }
    // Adopted packs that stay get a segment of their own, so readers find their blocks.
    for p in adopted.iter().filter(|p| !going.contains(&p.pack)) {
        if seen.insert(p.pack) {
            keep.push(p.clone());
            if keep.len() == PACKS_PER_NEW_SEGMENT {
                written += bs.write_segment(&keep).await?;
                keep.clear();
            }
        }
    }
    if !keep.is_empty() {
        written += bs.write_segment(&keep).await?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::blockstore::tests::{data, memory_store};
    use crate::repo::manifest::{BackupType, FileEntry, Stats};

    /// Backups of one file each, through one writer: per backup its blocks, then its block
    /// list, each closing a run. Returns each backup's manifest and block ids (the list last).
    async fn backups(
        bs: &BlockStore,
        each: &[(&str, Vec<Vec<u8>>)],
    ) -> Vec<(Manifest, Vec<BlockId>)> {
        let mut w = bs.writer(MayWrite::alone());
        let mut out = Vec::new();
        for (label, blocks) in each {
            let mut ids = Vec::new();
            for b in blocks {
                ids.push(w.add(b).await.unwrap());
            }
            w.end_run().await.unwrap();
            let list = w.add(&ids.concat()).await.unwrap();
            w.end_run().await.unwrap();
            ids.push(list);
            out.push((manifest(label, &list), ids));
        }
        w.finish().await.unwrap();
        out
    }

    fn manifest(label: &str, list: &BlockId) -> Manifest {
        Manifest {
            format: "pgfrost-manifest".into(),
            version: 1,
            label: label.into(),
            kind: BackupType::Full,
            parent: None,
            db_id: 1,
            system_id: "1".into(),
            pg_major: 16,
            pg_version_num: 160000,
            timeline: 1,
            start_lsn: "0/0".into(),
            stop_lsn: "0/0".into(),
            start_wal: String::new(),
            stop_wal: String::new(),
            start_time: String::new(),
            stop_time: String::new(),
            start_unix: 0,
            stop_unix: 0,
            stop_ms: 0,
            stop_next_xid: None,
            backup_label: String::new(),
            tablespace_map: None,
            checksums: false,
            tablespaces: Vec::new(),
            dirs: Vec::new(),
            links: Vec::new(),
            files: vec![FileEntry {
                path: "base/1/1".into(),
                size: 0,
                mode: 0o600,
                uid: 0,
                gid: 0,
                mtime: 0,
                list: hex::encode(list),
                blocks: 0,
                reused: false,
            }],
            checksum_errors: Vec::new(),
            stats: Stats::default(),
        }
    }

    async fn objects(store: &Store) -> Vec<String> {
        store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.path)
            .collect()
    }

    /// A handle with an empty index, as expire gives collection.
    fn collector(store: &Store, bs: &BlockStore) -> BlockStore {
        BlockStore::open_empty(store.clone(), "st", bs.keys().clone(), bs.limits().clone())
    }

    /// A fresh handle, as the next command would open it.
    async fn reopened(store: &Store, bs: &BlockStore) -> BlockStore {
        let s = collector(store, bs);
        s.refresh().await.unwrap();
        s
    }

    fn blocks(seed: &str, n: usize, len: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| data(&format!("{seed}{i}"), len)).collect()
    }

    #[tokio::test]
    async fn keeps_what_retained_backups_need_and_frees_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, bs) = memory_store(&tmp);
        // One run per pack: every run ends a pack.
        let bs = bs.with_pack_size(1);
        let mut b = backups(
            &bs,
            &[
                ("20260101-000000F", blocks("k", 3, 5000)),
                ("20260102-000000F", blocks("g", 3, 5000)),
            ],
        )
        .await;
        let (_, gone_ids) = b.pop().unwrap();
        let (keep, keep_ids) = b.pop().unwrap();
        let before = objects(&store).await;

        let dry = collect(
            &collector(&store, &bs),
            MayCollect::alone(),
            &store,
            "st",
            std::slice::from_ref(&keep),
            true,
        )
        .await
        .unwrap();
        assert_eq!(objects(&store).await, before, "a dry run changes nothing");
        assert_eq!(dry.packs_total, 4);
        assert_eq!(dry.packs_deleted, 2);
        assert_eq!(dry.live_blocks, 4, "three blocks and their list");

        let r = collect(
            &collector(&store, &bs),
            MayCollect::alone(),
            &store,
            "st",
            std::slice::from_ref(&keep),
            false,
        )
        .await
        .unwrap();
        assert_eq!(
            (r.packs_deleted, r.packs_rewritten, r.orphan_packs),
            (2, 0, 0)
        );
        assert_eq!(r.segments_replaced, dry.segments_replaced);
        assert!(r.freed() > 0);
        assert_eq!(store.list("st/pack").await.unwrap().len(), 2);
        let after = reopened(&store, &bs).await;
        for id in &keep_ids {
            assert!(after.contains(id));
        }
        assert_eq!(
            after.read_blocks(&keep_ids[..3]).await.unwrap(),
            blocks("k", 3, 5000)
        );
        for id in &gone_ids {
            assert!(!after.contains(id), "no longer indexed");
        }

        // A fixed point: nothing more to do.
        let settled = objects(&store).await;
        let again = collect(
            &collector(&store, &bs),
            MayCollect::alone(),
            &store,
            "st",
            &[keep],
            false,
        )
        .await
        .unwrap();
        assert_eq!(
            (
                again.packs_deleted,
                again.packs_rewritten,
                again.segments_replaced
            ),
            (0, 0, 0)
        );
        assert_eq!(objects(&store).await, settled);
    }

    #[tokio::test]
    async fn rewrites_a_mostly_dead_pack_and_settles() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, bs) = memory_store(&tmp);
        // Both backups in one pack; the dropped one holds most of its bytes.
        let mut b = backups(
            &bs,
            &[
                ("20260101-000000F", blocks("k", 2, 4000)),
                ("20260102-000000F", blocks("g", 8, 30000)),
            ],
        )
        .await;
        let (_, gone_ids) = b.pop().unwrap();
        let (keep, keep_ids) = b.pop().unwrap();
        let packs = store.list("st/pack").await.unwrap();
        assert_eq!(packs.len(), 1);

        let dry = collect(
            &collector(&store, &bs),
            MayCollect::alone(),
            &store,
            "st",
            std::slice::from_ref(&keep),
            true,
        )
        .await
        .unwrap();
        assert_eq!((dry.packs_deleted, dry.packs_rewritten), (0, 1));
        let r = collect(
            &collector(&store, &bs),
            MayCollect::alone(),
            &store,
            "st",
            std::slice::from_ref(&keep),
            false,
        )
        .await
        .unwrap();
        assert_eq!((r.packs_deleted, r.packs_rewritten), (0, 1));
        assert_eq!(r.segments_replaced, 1);
        assert!(r.bytes_moved > 0 && r.freed() > 0);
        let now = store.list("st/pack").await.unwrap();
        assert_eq!(now.len(), 1);
        assert_ne!(
            now[0].path, packs[0].path,
            "the old pack went, a new one holds the rest"
        );
        assert!(now[0].size * 2 < packs[0].size);
        let after = reopened(&store, &bs).await;
        assert_eq!(
            after.read_blocks(&keep_ids[..2]).await.unwrap(),
            blocks("k", 2, 4000)
        );
        assert!(after.contains(&keep_ids[2]), "the block list moved too");
        assert!(gone_ids.iter().all(|id| !after.contains(id)));

        let settled = objects(&store).await;
        let again = collect(
            &collector(&store, &bs),
            MayCollect::alone(),
            &store,
            "st",
            &[keep],
            false,
        )
        .await
        .unwrap();
        assert_eq!(
            (
                again.packs_deleted,
                again.packs_rewritten,
                again.bytes_moved
            ),
            (0, 0, 0)
        );
        assert_eq!(objects(&store).await, settled, "a fixed point");
    }

    #[tokio::test]
    async fn adopts_orphans_and_deletes_nothing_while_a_live_block_is_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, bs) = memory_store(&tmp);
        let bs = bs.with_pack_size(1);
        let mut b = backups(&bs, &[("20260101-000000F", blocks("k", 2, 5000))]).await;
        let (keep, ids) = b.pop().unwrap();
        // The segment lost: its packs are orphans whose blocks are still live.
        for s in store.list("st/index").await.unwrap() {
            store.delete(&s.path).await.unwrap();
        }
        let r = collect(
            &collector(&store, &bs),
            MayCollect::alone(),
            &store,
            "st",
            std::slice::from_ref(&keep),
            false,
        )
        .await
        .unwrap();
        assert_eq!(
            (r.packs_adopted, r.packs_deleted, r.orphan_packs),
            (2, 0, 0)
        );
        let after = reopened(&store, &bs).await;
        assert_eq!(
            after.read_blocks(&ids[..2]).await.unwrap(),
            blocks("k", 2, 5000)
        );

        // A pack holding a live block is gone: collection refuses and deletes nothing.
        let lost = after.locate(&ids[0]).unwrap();
        store.delete(&after.pack_path(&lost)).await.unwrap();
        let before = objects(&store).await;
        let e = collect(
            &collector(&store, &bs),
            MayCollect::alone(),
            &store,
            "st",
            &[keep],
            false,
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Corrupt, "{e}");
        assert!(e.message.contains("before deleting anything"), "{e}");
        assert_eq!(objects(&store).await, before);
    }
}
