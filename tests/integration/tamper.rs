//! What an attacker with the bucket, or a failing disk, can do to the repository: read it (no
//! plaintext), alter it (every kind of object refuses to open, naming itself), truncate it.

use crate::common;

use common::*;
use pgfrost::error::ErrorKind;
use pgfrost::repo::Repository;
use pgfrost::repo::blockstore::{BlockId, BlockStore};
use pgfrost::store::{Location, Store};
use std::path::{Path, PathBuf};

const MARKER: &str = "PGFROST-MARKER-7f3a9c";

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: Store,
    ids: Vec<BlockId>,
    blocks: Vec<Vec<u8>>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let store = Store::open(&Location::Local(root.clone()), true).unwrap();
    let repo = Repository::create(store.clone(), PASS.as_bytes(), cheap(), "")
        .await
        .unwrap();
    let bs = BlockStore::open(store.clone(), "main", repo.keys.clone())
        .await
        .unwrap();
    let mut w = bs.writer(pgfrost::repo::lease::MayWrite::alone());
    let mut ids = Vec::new();
    let mut blocks = Vec::new();
    for i in 0..64 {
        // Compressible blocks (zstd keeps literal runs of the marker) and incompressible ones
        // (stored raw, so only the cipher hides them).
        let mut b = format!("{MARKER} row {i} ").repeat(300).into_bytes();
        b.truncate(8192);
        if i % 2 == 1 {
            let mut noise = vec![0u8; 8192 - MARKER.len()];
            noise_fill(&mut noise, i);
            b = [MARKER.as_bytes(), &noise].concat();
        }
        ids.push(w.add(&b).await.unwrap());
        blocks.push(b);
    }
    w.finish().await.unwrap();
    Fixture {
        _dir: dir,
        root,
        store,
        ids,
        blocks,
    }
}

fn noise_fill(b: &mut [u8], seed: u64) {
    let mut x: u64 = 0x243F_6A88_85A3_08D3 ^ (seed + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for v in b.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *v = x as u8;
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn only(root: &Path, part: &str) -> PathBuf {
    let v: Vec<_> = files_under(root)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(part))
        .collect();
    assert_eq!(v.len(), 1, "expected one {part} object: {v:?}");
    v[0].clone()
}

fn flip(path: &Path, at: usize) -> Vec<u8> {
    let orig = std::fs::read(path).unwrap();
    let mut b = orig.clone();
    b[at] ^= 0x20;
    std::fs::write(path, b).unwrap();
    orig
}

#[test]
fn no_plaintext_in_any_stored_byte() {
    let rt = rt();
    let f = rt.block_on(fixture());
    let files = files_under(&f.root);
    assert!(files.len() >= 4, "{files:?}");
    let mut bytes = 0;
    for p in &files {
        let b = std::fs::read(p).unwrap();
        bytes += b.len();
        for needle in [
            MARKER.as_bytes(),
            &MARKER.as_bytes()[..12],
            b"row 1 ",
            PASS.as_bytes(),
        ] {
            assert!(
                !contains(&b, needle),
                "{} holds plaintext {:?}",
                p.display(),
                String::from_utf8_lossy(needle)
            );
        }
        // Nor the marker's hex or a plain BLAKE3 of a block: ids are keyed.
        assert!(!contains(&b, hex::encode(MARKER).as_bytes()));
        assert!(!contains(&b, blake3::hash(&f.blocks[0]).as_bytes()));
    }
    assert!(bytes > 64 * 4096 / 2, "suspiciously little stored: {bytes}");
    // And the blocks do come back.
    let back = rt.block_on(async {
        let repo = Repository::open_with_passphrase(f.store.clone(), PASS.as_bytes())
            .await
            .unwrap();
        let bs = BlockStore::open(f.store.clone(), "main", repo.keys.clone())
            .await
            .unwrap();
        bs.read_blocks(&f.ids).await.unwrap()
    });
    assert!(back == f.blocks);
}

#[test]
fn every_kind_of_object_refuses_a_flipped_byte() {
    let rt = rt();
    rt.block_on(async {
        let f = fixture().await;
        let open = || Repository::open_with_passphrase(f.store.clone(), PASS.as_bytes());

        // config: every byte is bound into the key slots.
        let config = f.root.join("config");
        let len = std::fs::metadata(&config).unwrap().len() as usize;
        for at in 0..len {
            let orig = flip(&config, at);
            let e = open()
                .await
                .err()
                .unwrap_or_else(|| panic!("config flip at {at} accepted"));
            assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");
            assert!(e.message.contains("config"), "flip at {at}: {e}");
            std::fs::write(&config, orig).unwrap();
        }

        // key slot: a flip anywhere in the wrapped key, nonce or check.
        let slot = only(&f.root.join("keys"), "keys/");
        let text = std::fs::read_to_string(&slot).unwrap();
        for field in [
            "\"wrapped_key\": \"",
            "\"nonce\": \"",
            "\"check\": \"",
            "\"salt\": \"",
        ] {
            // Another hex digit, not a case change: hex decoding ignores case.
            let at = text.find(field).unwrap() + field.len() + 3;
            let orig = std::fs::read(&slot).unwrap();
            let mut b = orig.clone();
            b[at] = if b[at] == b'0' { b'1' } else { b'0' };
            std::fs::write(&slot, b).unwrap();
            let e = open()
                .await
                .err()
                .unwrap_or_else(|| panic!("slot flip in {field} accepted"));
            // Every field is covered by the slot's integrity value, so a changed salt or check
            // (which change or test the key derived from the passphrase) is damage too, named
            // as the slot, never a wrong passphrase.
            assert_eq!(e.kind, ErrorKind::Corrupt, "{field}: {e}");
            assert!(e.message.contains("key slot"), "{field}: {e}");
            std::fs::write(&slot, orig).unwrap();
        }

        let repo = open().await.unwrap();
        let keys = repo.keys.clone();

        // index segment: named on open.
        let seg = only(&f.root, "main/index/");
        let seg_name = seg.file_name().unwrap().to_string_lossy().to_string();
        let seg_len = std::fs::metadata(&seg).unwrap().len() as usize;
        for at in [0, 5, 40, seg_len / 2, seg_len - 1] {
            let orig = flip(&seg, at);
            let e = BlockStore::open(f.store.clone(), "main", keys.clone())
                .await
                .err()
                .expect("index flip accepted");
            assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");
            assert!(e.message.contains(&seg_name), "{e}");
            std::fs::write(&seg, orig).unwrap();
        }

        // pack: a flip in a block is caught by reading that block (naming block and pack); a flip
        // anywhere (header, block, trailer, footer) by checking the pack.
        let bs = BlockStore::open(f.store.clone(), "main", keys.clone())
            .await
            .unwrap();
        let pack = only(&f.root, "main/pack/");
        let pack_name = pack.file_name().unwrap().to_string_lossy().to_string();
        let pack_id = bs.indexed_packs()[0];
        let plen = std::fs::metadata(&pack).unwrap().len() as usize;
        let orig = flip(&pack, 100);
        let e = bs
            .read_blocks(&f.ids)
            .await
            .expect_err("block flip accepted");
        assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");
        assert!(
            e.message.contains(&pack_name) && e.message.contains("block "),
            "{e}"
        );
        std::fs::write(&pack, &orig).unwrap();
        for at in [0, 4, 100, plen / 2, plen - 40, plen - 6, plen - 1] {
            let orig = flip(&pack, at);
            let e = bs
                .check_pack(&pack_id)
                .await
                .err()
                .unwrap_or_else(|| panic!("pack flip at {at} accepted"));
            assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");
            assert!(e.message.contains(&pack_name), "{e}");
            std::fs::write(&pack, orig).unwrap();
        }
        // The trailer on its own (what index rebuilds read) also refuses a flip.
        let orig = flip(&pack, plen - 40);
        let e = bs
            .read_trailer(&pack_id)
            .await
            .expect_err("trailer flip accepted");
        assert!(e.message.contains(&pack_name), "{e}");
        std::fs::write(&pack, orig).unwrap();

        // Everything restored: all reads succeed again (the test altered nothing for good).
        assert!(bs.read_blocks(&f.ids).await.unwrap() == f.blocks);
        bs.check_pack(&pack_id).await.unwrap();
    });
}

#[test]
fn truncated_objects_are_refused() {
    let rt = rt();
    rt.block_on(async {
        let f = fixture().await;
        let repo = Repository::open_with_passphrase(f.store.clone(), PASS.as_bytes())
            .await
            .unwrap();
        let bs = BlockStore::open(f.store.clone(), "main", repo.keys.clone())
            .await
            .unwrap();
        let pack = only(&f.root, "main/pack/");
        let orig = std::fs::read(&pack).unwrap();
        for keep in [0, 7, 100, orig.len() / 2, orig.len() - 1] {
            std::fs::write(&pack, &orig[..keep]).unwrap();
            assert!(
                bs.check_pack(&bs.indexed_packs()[0]).await.is_err(),
                "pack cut to {keep} accepted"
            );
            assert!(
                bs.read_trailer(&bs.indexed_packs()[0]).await.is_err(),
                "pack cut to {keep} accepted"
            );
        }
        std::fs::write(&pack, &orig[..orig.len() / 2]).unwrap();
        let e = bs
            .read_blocks(&f.ids)
            .await
            .expect_err("read past a truncation accepted");
        assert!(
            matches!(e.kind, ErrorKind::Corrupt | ErrorKind::Storage),
            "{e}"
        );
        std::fs::write(&pack, &orig).unwrap();

        let seg = only(&f.root, "main/index/");
        let orig = std::fs::read(&seg).unwrap();
        std::fs::write(&seg, &orig[..orig.len() - 1]).unwrap();
        assert_eq!(
            BlockStore::open(f.store.clone(), "main", repo.keys.clone())
                .await
                .err()
                .unwrap()
                .kind,
            ErrorKind::Corrupt
        );
        std::fs::write(&seg, &orig).unwrap();

        let config = f.root.join("config");
        let orig = std::fs::read(&config).unwrap();
        std::fs::write(&config, &orig[..orig.len() / 2]).unwrap();
        let e = Repository::open_with_passphrase(f.store.clone(), PASS.as_bytes())
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");
        assert!(e.message.contains("'config'"), "{e}");
    });
}

#[test]
fn cli_check_names_the_damaged_pack() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("repo");
    let mut c = pgfrost(home.path());
    c.args(["repo-create", "--repo"])
        .arg(&repo)
        .env("PGFROST_PASSPHRASE", PASS);
    assert_eq!(run(c).code, 0);
    let data = home.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("t"), b"a heap page, more or less ".repeat(2000)).unwrap();
    let cmd = |args: &[&str]| {
        let mut c = pgfrost(home.path());
        c.args(args)
            .arg("--repo")
            .arg(&repo)
            .env("PGFROST_PASSPHRASE", PASS);
        run(c)
    };
    assert_eq!(
        cmd(&["dev", "put-dir", "--stanza", "main", data.to_str().unwrap()]).code,
        0
    );
    assert_eq!(cmd(&["dev", "check", "--stanza", "main"]).code, 0);
    let pack = only(&repo, "main/pack/");
    flip(&pack, 60);
    let r = cmd(&["dev", "check", "--stanza", "main"]);
    assert_eq!(r.code, 13, "{r:?}");
    assert!(
        r.stderr
            .contains(&*pack.file_name().unwrap().to_string_lossy()),
        "{r:?}"
    );
}
