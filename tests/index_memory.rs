//! The block index in bounded memory: beyond `index-memory` it goes to sorted tables on local
//! disk, and every block is still found, read back and deduplicated.

mod common;

use common::*;
use pgfrost::repo::Repository;
use pgfrost::repo::blockmap::{BlockMap, Limits, Loc};
use pgfrost::repo::blockstore::BlockStore;
use pgfrost::repo::index::{PackEntries, Run, RunBlock};
use pgfrost::store::{Location, Store};
use std::sync::Mutex;

/// The memory test must not see another test's allocations.
static SERIAL: Mutex<()> = Mutex::new(());

fn limit(dir: &std::path::Path, memory: usize) -> Limits {
    Limits {
        dir: dir.to_path_buf(),
        memory,
    }
}

fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn blocks_beyond_the_index_memory_are_found_read_and_deduplicated() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spill = tempfile::tempdir().unwrap();
    // Room for a few hundred entries in memory; 3000 blocks make several tables and merges.
    let limits = limit(spill.path(), 64 << 10);
    assert!(BlockMap::<Loc>::capacity_for(64 << 10) < 1000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Location::Local(dir.path().join("repo")), true).unwrap();
    rt().block_on(async {
        let repo = Repository::create(store.clone(), PASS.as_bytes(), cheap(), "test")
            .await
            .unwrap();
        let keys = repo.keys.clone();
        let bs = BlockStore::open_with(store.clone(), "main", keys.clone(), limits.clone())
            .await
            .unwrap()
            .with_pack_size(1 << 20);
        let blocks: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| format!("block {i} ").repeat(1100).into_bytes()[..8192].to_vec())
            .collect();
        let mut w = bs.writer(pgfrost::repo::lease::MayWrite::alone());
        let mut ids = Vec::new();
        for (i, b) in blocks.iter().enumerate() {
            ids.push(w.add(b).await.unwrap());
            if i % 7 == 6 {
                w.end_run().await.unwrap();
            }
        }
        let st = w.finish().await.unwrap();
        assert_eq!(st.new_blocks, 3000);

        // Another process: its index is built from the segments, mostly on disk.
        let bs2 = BlockStore::open_with(store.clone(), "main", keys.clone(), limits.clone())
            .await
            .unwrap();
        let (tables, bytes) = bs2.index_tables();
        assert!(
            tables >= 1 && bytes >= 2400 * 56,
            "{tables} tables, {bytes} bytes"
        );
        let mut order: Vec<usize> = (0..3000).rev().step_by(3).collect();
        order.extend([0, 1, 2, 2999, 1500, 1500]);
        let want: Vec<_> = order.iter().map(|&i| ids[i]).collect();
        let back = bs2.read_blocks(&want).await.unwrap();
        for (got, &i) in back.iter().zip(&order) {
            assert!(*got == blocks[i], "block {i} read back wrong");
        }
        // Dedup against blocks that are only in the tables: nothing stored again.
        let mut w2 = bs2.writer(pgfrost::repo::lease::MayWrite::alone());
        for b in &blocks {
            w2.add(b).await.unwrap();
        }
        let st2 = w2.finish().await.unwrap();
        assert_eq!((st2.new_blocks, st2.packs), (0, 0), "{st2:?}");
    });
    // The table files were unlinked when created: nothing is left behind.
    assert_eq!(std::fs::read_dir(spill.path()).unwrap().count(), 0);
}

#[test]
fn index_memory_stays_bounded_as_the_index_grows() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spill = tempfile::tempdir().unwrap();
    const LIMIT: usize = 4 << 20;
    const BLOCKS: u32 = 1_000_000;
    let limits = limit(spill.path(), LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Location::Local(dir.path().join("repo")), true).unwrap();
    let repo = rt()
        .block_on(Repository::create(
            store.clone(),
            PASS.as_bytes(),
            cheap(),
            "test",
        ))
        .unwrap();
    let bs = BlockStore::open_empty(store, "main", repo.keys.clone(), limits);
    let id = |n: u32| *blake3::hash(&n.to_le_bytes()).as_bytes();
    let pack = |p: u32| *blake3::hash(format!("pack {p}").as_bytes()).as_bytes();
    let before = rss_anon_kib();
    // A million blocks (8 GiB of pages) in packs of 4096 blocks, runs of 16, one segment per
    // pack: what loading a large repository's index does. All in memory this would take about
    // 110 MiB.
    let mut peak = before;
    for p in 0..BLOCKS / 4096 {
        let runs = (0..256u32)
            .map(|r| Run {
                offset: 8 + r * 70_000,
                length: 70_000,
                blocks: (0..16)
                    .map(|b| RunBlock {
                        id: id(p * 4096 + r * 16 + b),
                        raw_length: 8192,
                    })
                    .collect(),
            })
            .collect();
        bs.add_to_index(
            &format!("main/index/{p}"),
            &[PackEntries {
                pack: pack(p),
                runs,
            }],
        )
        .unwrap();
        peak = peak.max(rss_anon_kib());
    }
    let grew_mib = (peak - before) as f64 / 1024.0;
    let (tables, bytes) = bs.index_tables();
    eprintln!(
        "{} entries: anonymous memory grew {grew_mib:.1} MiB at most; {tables} tables, {:.1} MiB on disk",
        bs.counts().0,
        bytes as f64 / 1048576.0
    );
    // The map's limit, one table's 256 KiB fan-out per table, the pack list and allocator slack.
    assert!(
        grew_mib < 24.0,
        "index memory grew by {grew_mib:.1} MiB under a limit of 4 MiB"
    );
    assert!(
        tables >= 1 && bytes >= 50 << 20,
        "{tables} tables, {bytes} bytes"
    );
    for n in (0..BLOCKS / 4096 * 4096).step_by(997) {
        assert_eq!(bs.locate(&id(n)), Some(pack(n / 4096)), "block {n}");
    }
    assert_eq!(bs.locate(&id(BLOCKS + 5)), None);
}
