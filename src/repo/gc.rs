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
//! packs, which are orphans: the next collection deletes them (a backup may adopt them first,
//! which is harmless). The caller must hold a `gc` lease and have found no other live lease
//! (see lease.rs): nothing may be adding references while the live set is computed.

use super::blockstore::{BlockId, BlockStore};
use super::index::{PackEntries, Run};
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

/// Every block the manifests reference: the block lists and the blocks they list.
pub async fn live_blocks(bs: &BlockStore, manifests: &[Manifest]) -> Result<HashSet<BlockId>> {
    let mut lists: HashSet<BlockId> = HashSet::new();
    for m in manifests {
        for f in &m.files {
            if !f.list.is_empty()
                && let Ok(id) = super::format::hex_array::<32>(&f.list, "block list id")
            {
                lists.insert(id);
            }
        }
    }
    let mut live = lists.clone();
    let lists: Vec<BlockId> = lists.into_iter().collect();
    for chunk in lists.chunks(1024) {
        for plain in bs.read_blocks(chunk).await? {
            for id in plain.chunks_exact(32) {
                live.insert(id.try_into().expect("32 bytes"));
            }
        }
    }
    Ok(live)
}

struct Segment {
    path: String,
    size: u64,
    packs: Vec<PackEntries>,
}

async fn load_segments(store: &Store, bs: &BlockStore, stanza: &str) -> Result<Vec<Segment>> {
    let listed = store.list(&format!("{stanza}/index")).await?;
    futures::stream::iter(listed)
        .map(|l| async move {
            let bytes = store.get(&l.path).await?;
            let packs = bs.decode_segment(&l.path, &bytes)?;
            Ok::<_, crate::error::Error>(Segment {
                path: l.path,
                size: l.size,
                packs,
            })
        })
        .buffer_unordered(8)
        .try_collect()
        .await
}

/// Collects the stanza's garbage. With `dry_run`, computes and reports without changing anything.
pub async fn collect(
    bs: &BlockStore,
    store: &Store,
    stanza: &str,
    retained: &[Manifest],
    dry_run: bool,
) -> Result<GcReport> {
    // Every segment, loaded once: into `bs` to read the block lists, and kept per segment to
    // know which segments name a pack that goes.
    let segments = load_segments(store, bs, stanza).await?;
    for s in &segments {
        bs.add_to_index(&s.path, &s.packs)?;
    }
    let live = live_blocks(bs, retained).await?;
    let mut report = GcReport {
        live_blocks: live.len() as u64,
        ..Default::default()
    };

    // Packs as stored, and as indexed (each segment agrees with the pack's trailer; the first
    // segment naming a pack is as good as any).
    let stored = bs.list_packs().await?;
    report.packs_total = stored.len() as u64;
    let mut indexed: HashMap<BlockId, &[Run]> = HashMap::new();
    for s in &segments {
        for p in &s.packs {
            indexed.entry(p.pack).or_insert(&p.runs);
        }
    }

    // Where several packs hold the same live block, one copy is enough: packs with the most live
    // bytes claim their blocks first, so copies in emptier packs count as dead. A run's bytes
    // are live while any block in it is (a run is sealed as one piece).
    let mut candidates: Vec<(BlockId, u64)> = indexed
        .iter()
        .filter(|(p, _)| stored.contains_key(*p))
        .map(|(p, runs)| {
            let bytes = runs
                .iter()
                .filter(|r| r.blocks.iter().any(|b| live.contains(&b.id)))
                .map(|r| r.length as u64)
                .sum();
            (*p, bytes)
        })
        .collect();
    candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut claimed: HashSet<BlockId> = HashSet::new();
    let mut delete: Vec<BlockId> = Vec::new();
    let mut rewrite: Vec<(BlockId, HashSet<BlockId>)> = Vec::new();
    for (p, _) in &candidates {
        let mut mine = HashSet::new();
        let mut live_bytes = 0u64;
        for r in indexed[p] {
            let mut run_live = false;
            for b in &r.blocks {
                if live.contains(&b.id) && claimed.insert(b.id) {
                    mine.insert(b.id);
                    run_live = true;
                }
            }
            if run_live {
                live_bytes += r.length as u64;
            }
        }
        let size = stored[p];
        if mine.is_empty() {
            delete.push(*p);
        } else if (size - live_bytes.min(size)) as f64 >= REWRITE_DEAD_SHARE * size as f64 {
            report.bytes_moved += live_bytes;
            rewrite.push((*p, mine));
        }
    }
    let orphans: Vec<BlockId> = stored
        .keys()
        .filter(|p| !indexed.contains_key(*p))
        .copied()
        .collect();
    report.packs_deleted = delete.len() as u64;
    report.packs_rewritten = rewrite.len() as u64;
    report.orphan_packs = orphans.len() as u64;
    let going: HashSet<BlockId> = delete
        .iter()
        .chain(orphans.iter())
        .chain(rewrite.iter().map(|(p, _)| p))
        .copied()
        .collect();
    report.bytes_deleted = going.iter().map(|p| stored[p]).sum();
    let affected: Vec<&Segment> = segments
        .iter()
        .filter(|s| s.packs.iter().any(|p| going.contains(&p.pack)))
        .collect();
    report.segments_replaced = affected.len() as u64;
    report.bytes_deleted += affected.iter().map(|s| s.size).sum::<u64>();
    if dry_run {
        // What the rewritten packs' live blocks will take again, roughly.
        report.bytes_written = report.bytes_moved;
        return Ok(report);
    }

    // 1. Live blocks out of mostly-dead packs.
    if !rewrite.is_empty() {
        let mut w = bs.writer().forcing();
        for (p, mine) in &rewrite {
            let (_, kept) = bs.pack_blocks(p, |id| mine.contains(id)).await?;
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
        report.bytes_written += st.pack_bytes + st.index_bytes;
        log::info!(
            "expire: moved the live blocks of {} mostly-dead pack(s) into {} new pack(s)",
            rewrite.len(),
            st.packs
        );
    }
    // 2. Segments naming a pack that goes are replaced by segments without it.
    let mut keep: Vec<PackEntries> = Vec::new();
    let mut seen: HashSet<BlockId> = HashSet::new();
    for s in &affected {
        for p in &s.packs {
            if !going.contains(&p.pack) && seen.insert(p.pack) {
                keep.push(p.clone());
            }
        }
    }
    for chunk in keep.chunks(PACKS_PER_NEW_SEGMENT) {
        report.bytes_written += bs.write_segment(chunk).await?;
    }
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
