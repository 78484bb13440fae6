//! One conformance suite for the storage layer and the block store, run on local disk, on a
//! real S3-compatible server (s3s-fs on 127.0.0.1) and on Azurite (Azure Blob Storage), each
//! started by the test. Google Cloud Storage has no emulator here that speaks the XML API
//! object_store uses (docs/repositories.md says which were tried).

use crate::common;

use bytes::Bytes;
use common::*;
use pgfrost::error::ErrorKind;
use pgfrost::repo::Repository;
use pgfrost::repo::blockstore::BlockStore;
use pgfrost::store::{Location, Put, Store};
use std::sync::Arc;

async fn storage_suite(store: &Store) {
    // Create-once: the second write of the same name is refused and changes nothing.
    assert_eq!(
        store
            .put_new("t/a", Bytes::from_static(b"first"))
            .await
            .unwrap(),
        Put::Created
    );
    assert_eq!(
        store
            .put_new("t/a", Bytes::from_static(b"second"))
            .await
            .unwrap(),
        Put::AlreadyExists
    );
    assert_eq!(&store.get("t/a").await.unwrap()[..], b"first");

    // Missing objects: a NotFound error that names the object, or None.
    let e = store.get("t/missing").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert!(e.message.contains("t/missing"), "{e}");
    assert!(store.get_opt("t/missing").await.unwrap().is_none());

    // Ranges.
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    store
        .put_new("t/r", Bytes::from(body.clone()))
        .await
        .unwrap();
    assert_eq!(store.size("t/r").await.unwrap(), 100_000);
    assert_eq!(
        &store.get_range("t/r", 10..20).await.unwrap()[..],
        &body[10..20]
    );
    let parts = store
        .get_ranges("t/r", &[0..1, 5000..6000, 99_990..100_000])
        .await
        .unwrap();
    assert_eq!(&parts[0][..], &body[0..1]);
    assert_eq!(&parts[1][..], &body[5000..6000]);
    assert_eq!(&parts[2][..], &body[99_990..100_000]);

    // Listing is recursive, sorted, scoped to the prefix, with sizes.
    store
        .put_new("t/sub/b", Bytes::from_static(b"xy"))
        .await
        .unwrap();
    store
        .put_new("u/c", Bytes::from_static(b"z"))
        .await
        .unwrap();
    let l = store.list("t").await.unwrap();
    let names: Vec<_> = l.iter().map(|x| x.path.as_str()).collect();
    assert_eq!(names, ["t/a", "t/r", "t/sub/b"]);
    assert_eq!(l[2].size, 2);
    assert!(store.list("nothing-here").await.unwrap().is_empty());

    // Delete, and deleting what is gone is not an error.
    store.delete("u/c").await.unwrap();
    store.delete("u/c").await.unwrap();
    assert!(store.get_opt("u/c").await.unwrap().is_none());

    // A large object (a pack is tens of MiB) round-trips intact.
    let big: Vec<u8> = (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    store
        .put_new("t/big", Bytes::from(big.clone()))
        .await
        .unwrap();
    assert!(store.get("t/big").await.unwrap() == big);
}

/// Racing create-once writers: exactly one wins and the stored bytes are the winner's. Run on
/// local disk only: s3s-fs checks for the object and then writes it, so two racing PUTs can both
/// succeed there, whereas S3 itself arbitrates `If-None-Match: *` atomically (one 200, the others
/// 412). Sequential create-once is covered on both backends above.
async fn create_race(store: &Store) {
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            (
                i,
                s.put_new("t/race", Bytes::from(vec![i; 1000]))
                    .await
                    .unwrap(),
            )
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        if r == Put::Created {
            winners.push(i);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "create-once let {} writers win",
        winners.len()
    );
    assert_eq!(
        &store.get("t/race").await.unwrap()[..],
        &vec![winners[0]; 1000][..]
    );
}

async fn block_store_suite(store: Store) {
    let repo = Repository::create(store.clone(), PASS.as_bytes(), cheap(), "test")
        .await
        .unwrap();
    let keys = repo.keys.clone();
    let bs = BlockStore::open(store.clone(), "main", keys.clone())
        .await
        .unwrap()
        .with_pack_size(256 << 10);
    let blocks: Vec<Vec<u8>> = (0..300u32)
        .map(|i| {
            // Half text, half noise: compressible like a table, but not to nothing.
            let mut b = format!("block {i} ").repeat(400).into_bytes();
            b.truncate(4096);
            let mut x = 0x9E37_79B9u32 ^ i;
            b.extend((0..4096 - (i as usize % 3) * 100).map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            }));
            b
        })
        .collect();
    let mut w = bs.writer(pgfrost::repo::lease::MayWrite::alone());
    let mut ids = Vec::new();
    for b in &blocks {
        ids.push(w.add(b).await.unwrap());
    }
    // The same blocks again, in the same writer: no new bytes.
    for b in &blocks[..50] {
        w.add(b).await.unwrap();
    }
    let st = w.finish().await.unwrap();
    assert_eq!(st.blocks, 350);
    assert_eq!(st.new_blocks, 300);
    assert!(st.packs >= 2, "pack size limit not applied: {st:?}");

    // A second handle (another process, in effect) sees every block, reads them back exactly,
    // and stores nothing again.
    let bs2 = BlockStore::open(store.clone(), "main", keys.clone())
        .await
        .unwrap();
    assert_eq!(bs2.counts().0, 300);
    let back = bs2.read_blocks(&ids).await.unwrap();
    assert!(back == blocks);
    let mut w2 = bs2.writer(pgfrost::repo::lease::MayWrite::alone());
    for b in &blocks {
        w2.add(b).await.unwrap();
    }
    let st2 = w2.finish().await.unwrap();
    assert_eq!((st2.new_blocks, st2.packs, st2.segments), (0, 0, 0));
    let mut runs = 0;
    for p in bs2.indexed_packs() {
        for r in bs2.check_pack(&p).await.unwrap() {
            runs += 1;
            assert!(r.raw_length() <= 128 << 10, "run too long: {r:?}");
        }
    }
    // Blocks of about 8 KiB share runs: 300 of them need at least 19 runs, and fewer than 300.
    assert!((19..100).contains(&runs), "{runs} runs for 300 blocks");

    // Runs are opened whole but read piecemeal: any subset, in any order, with repeats, comes
    // back exactly (a restore of an incremental wants a few blocks of many runs).
    let mut order: Vec<usize> = (0..300).rev().step_by(7).collect();
    order.extend([5, 5, 6, 4, 299, 0, 150, 151, 150]);
    order.extend(20..60);
    let want: Vec<_> = order.iter().map(|&i| ids[i]).collect();
    let back = bs2.read_blocks(&want).await.unwrap();
    for (got, &i) in back.iter().zip(&order) {
        assert!(*got == blocks[i], "block {i} read back wrong");
    }
    let mut buf = vec![0xAAu8; 3 << 20];
    let lens = bs2.read_blocks_into(&want, &mut buf).await.unwrap();
    let mut at = 0;
    for (n, &i) in lens.iter().zip(&order) {
        assert!(
            buf[at..at + *n as usize] == blocks[i][..],
            "block {i} in buffer"
        );
        at += *n as usize;
    }

    // Another stanza's store is separate.
    let other = BlockStore::open(store.clone(), "other", keys.clone())
        .await
        .unwrap();
    assert_eq!(other.counts(), (0, 0));

    // A pack uploaded by a writer that died before its index segment is adopted from its trailer.
    let mut w3 = bs2.writer(pgfrost::repo::lease::MayWrite::alone());
    let extra: Vec<u8> = b"orphan block ".repeat(600);
    let extra_id = w3.add(&extra).await.unwrap();
    drop(w3); // never finished: nothing uploaded, nothing indexed
    let fresh = BlockStore::open(store.clone(), "main", keys.clone())
        .await
        .unwrap();
    assert!(!fresh.contains(&extra_id));
    let segs_before = store.list("main/index").await.unwrap().len();
    // Simulate the crash window: a pack on storage with no index segment naming it.
    let mut sealer = pgfrost::repo::crypto::Sealer::new(Some(3));
    let mut pb = pgfrost::repo::pack::PackBuilder::new();
    let run = vec![pgfrost::repo::index::RunBlock {
        id: extra_id,
        raw_length: extra.len() as u32,
    }];
    pb.add_run(&mut sealer, &keys, run, &extra);
    let (bytes, pack_id, _) = pb.finish(&mut sealer, &keys);
    store
        .put_new(&fresh.pack_path(&pack_id), bytes.into())
        .await
        .unwrap();
    assert_eq!(fresh.adopt_orphan_packs().await.unwrap(), 1);
    assert_eq!(
        store.list("main/index").await.unwrap().len(),
        segs_before + 1
    );
    let again = BlockStore::open(store.clone(), "main", keys).await.unwrap();
    assert_eq!(again.read_block(&extra_id).await.unwrap(), extra);
    assert_eq!(again.adopt_orphan_packs().await.unwrap(), 0);

    // Opening the repository again with the passphrase gives the same keys.
    let reopened = Repository::open_with_passphrase(store.clone(), PASS.as_bytes())
        .await
        .unwrap();
    assert_eq!(reopened.config.repo_id, repo.config.repo_id);
    let bs3 = BlockStore::open(store, "main", Arc::clone(&reopened.keys))
        .await
        .unwrap();
    assert_eq!(bs3.read_block(&ids[7]).await.unwrap(), blocks[7]);
}

#[test]
fn local_disk() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    rt.block_on(async {
        let s = Store::open(&Location::Local(dir.path().join("a")), true).unwrap();
        storage_suite(&s).await;
        create_race(&s).await;
        let s = Store::open(&Location::Local(dir.path().join("b")), true).unwrap();
        block_store_suite(s).await;
    });
    // Create-once writes stage as `<name>#<n>`; completed writes leave none behind.
    for f in files_under(dir.path()) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !name.contains('#'),
            "staging file left behind: {}",
            f.display()
        );
    }
}

#[test]
fn s3_server() {
    let server = S3Server::start();
    let rt = rt();
    rt.block_on(async {
        let s = Store::open(&server.location("conf/a"), true).unwrap();
        storage_suite(&s).await;
        let s = Store::open(&server.location("conf/b"), true).unwrap();
        block_store_suite(s).await;
    });
    // The objects really are on the server, under the prefix.
    let on_server = files_under(&server.bucket_dir());
    assert!(
        on_server.iter().any(|p| p.ends_with("conf/a/t/big")),
        "{on_server:?}"
    );
    assert!(
        on_server
            .iter()
            .any(|p| p.to_string_lossy().contains("conf/b/main/pack/")),
        "{on_server:?}"
    );
    assert!(
        on_server.iter().any(|p| p.ends_with("conf/b/config")),
        "{on_server:?}"
    );
}

#[test]
fn azure_blob_storage() {
    let server = common::clouds::Azurite::start();
    let rt = rt();
    rt.block_on(async {
        let s = Store::open(&server.location("conf/a"), true).unwrap();
        assert_eq!(s.location().to_string(), "az://pgfrost-test/conf/a");
        storage_suite(&s).await;
        // Azure arbitrates If-None-Match: * on the server, and so does Azurite.
        create_race(&s).await;
        let s = Store::open(&server.location("conf/b"), true).unwrap();
        block_store_suite(s).await;
        // Wrong key: a storage error naming the object and the repository, with a hint.
        let mut loc = server.location("conf/b");
        if let Location::Azure(a) = &mut loc {
            a.credentials = pgfrost::store::cloud::AzureCredentials::Shared(
                "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXk=".into(),
            );
        }
        let e = Store::open(&loc, false)
            .unwrap()
            .get("config")
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Storage, "{e}");
        assert!(
            e.message.contains("config") && e.message.contains("az://pgfrost-test/conf/b"),
            "{e}"
        );
        assert!(e.hint.is_some(), "{e}");
    });
}

#[test]
fn s3_errors_are_clear() {
    let server = S3Server::start();
    let rt = rt();
    rt.block_on(async {
        // Wrong credentials: a storage error naming the object and the repository, with a hint.
        let mut loc = server.location("x");
        if let Location::S3(s) = &mut loc {
            s.key_secret = Some("wrong".into());
        }
        let s = Store::open(&loc, true).unwrap();
        let e = s.get("config").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Storage, "{e}");
        assert!(
            e.message.contains("config") && e.message.contains("s3://pgfrost-test/x"),
            "{e}"
        );
    });
}

/// A repository of format version 1 (blocks sealed one by one; development builds only) is
/// refused with a message that says what to do, before anything in it is read or changed.
#[test]
fn format_1_repository_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let rt = rt();
    let store = Store::open(&Location::Local(root.clone()), true).unwrap();
    rt.block_on(Repository::create(
        store.clone(),
        PASS.as_bytes(),
        cheap(),
        "old",
    ))
    .unwrap();
    let cfg = root.join("config");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("\"version\": 2"), "{text}");
    let old = text.replace("\"version\": 2", "\"version\": 1");
    std::fs::write(&cfg, &old).unwrap();
    let before = files_under(&root);
    let e = rt
        .block_on(Repository::open_with_passphrase(store, PASS.as_bytes()))
        .err()
        .expect("a format 1 repository must be refused");
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("format version 1"), "{e}");
    let hint = e.hint.clone().unwrap_or_default();
    assert!(hint.contains("create a new repository"), "{hint}");
    assert_eq!(files_under(&root), before);
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), old);
}
