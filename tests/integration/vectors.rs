//! The test vectors in proto/vectors/ and the byte layouts in proto/layouts.json are part of the
//! format's definition: this test checks that the code still produces and accepts exactly them.
//!
//! Regenerate (only on a deliberate format change, with docs/format.md updated in the same
//! commit): `PGFROST_WRITE_VECTORS=1 cargo test --test integration vectors::`.

use pgfrost::repo::crypto::{self, Keys, Kind, MasterKey, Opener};
use pgfrost::repo::format::{KeySlot, RepoConfig};
use pgfrost::repo::index::{self, PackEntries, Run, RunBlock};
use pgfrost::repo::keys::{self, Cost, SlotOpen, SlotRandom, SlotSpec};
use pgfrost::repo::pack;
use serde_json::{Value, json};
use std::path::PathBuf;

type BlockIdRef<'a> = &'a [u8; 32];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto")
}

fn seq(n: usize, mul: u8, add: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(mul).wrapping_add(add))
        .collect()
}

fn arr<const N: usize>(mul: u8, add: u8) -> [u8; N] {
    seq(N, mul, add).try_into().unwrap()
}

fn h(b: &[u8]) -> String {
    hex::encode(b)
}

fn seal(
    keys: &Keys,
    kind: Kind,
    name: &[u8],
    compression: u8,
    nonce: &[u8; 24],
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    crypto::seal_raw(keys, kind, name, compression, nonce, payload, &mut out);
    out
}

const STANZA_DB: &str = r#"{"format":"pgfrost-stanza-db","version":1,"id":1,"system_id":"7710549730298423552","pg_major":15,"pg_version_num":150018,"wal_segment_size":16777216,"control_version":1300,"catalog_version":202209061,"created":"2026-11-21T00:00:00Z"}"#;

const OUTCOME: &str = r#"{"format":"pgfrost-outcome","version":1,"command":"drill","passed":true,"started_unix":1796190249,"ended_unix":1796190301,"duration_seconds":51.8,"backup":"20261202-054409F","summary":"to end of archive: 6 check(s) passed; restore 9.1s, recovery 30.2s, reached 0/5000110","pgfrost":"0.1.0 (commit 73112ec, repository format 2)"}"#;

const POINTS: &str = r#"{"format":"pgfrost-restore-points","version":1,"wal":"000000010000000000000003","timeline":1,"points":[{"name":"before_migration","lsn":"0/3003A18","end_lsn":"0/3003A80","time_us":1796190249872791,"time":"2026-12-02T05:44:09.872791Z"}]}"#;

/// A sealed object named by its path (WAL files, stanza records), uncompressed, fixed nonce.
fn named(keys: &Keys, kind: Kind, path: &str, plain: &[u8], nonce_seed: u8) -> Value {
    let nonce: [u8; 24] = arr(nonce_seed, 1);
    let sealed = seal(keys, kind, path.as_bytes(), 0, &nonce, plain);
    json!({"kind": kind as u8, "name": h(path.as_bytes()), "path": path, "compression": 0, "nonce": h(&nonce),
           "payload": h(plain), "plaintext": h(plain), "sealed": h(&sealed)})
}

/// Builds every vector from fixed inputs. `zstd_frame` is the compressed payload of the
/// compressed-object vector: taken from the stored file when checking (zstd's output may differ
/// between library versions; the format only requires a valid frame with its content size).
fn build(zstd_frame: Option<Vec<u8>>) -> Value {
    let master = MasterKey::from_bytes(arr(1, 0));
    let keys = Keys::new(&master);
    let derived = json!({
        "block_id_key": h(&*master.derive(crypto::CTX_BLOCK_ID)),
        "seal_key": h(&*master.derive(crypto::CTX_SEAL)),
        "key_check_key": h(&*master.derive(crypto::CTX_KEY_CHECK)),
    });
    let block_a = b"pgfrost test vector block".to_vec();
    let block_b = seq(8192, 7, 3);
    let block_ids = json!([
        {"plaintext": "", "id": h(&keys.block_id(b""))},
        {"plaintext": h(&block_a), "id": h(&keys.block_id(&block_a))},
        {"plaintext": h(&block_b), "id": h(&keys.block_id(&block_b))},
    ]);

    // Sealed objects: a raw run of one block, a zstd-compressed run of one block.
    let id_a = keys.block_id(&block_a);
    let nonce1: [u8; 24] = arr(3, 1);
    let sealed_block = seal(
        &keys,
        Kind::Run,
        b"",
        crypto::COMPRESSION_NONE,
        &nonce1,
        &block_a,
    );
    let plain_c = b"a compressible block, a compressible block, a compressible block".repeat(4);
    let id_c = keys.block_id(&plain_c);
    let frame = zstd_frame.unwrap_or_else(|| zstd::bulk::compress(&plain_c, 3).unwrap());
    let nonce2: [u8; 24] = arr(5, 2);
    let sealed_z = seal(
        &keys,
        Kind::Run,
        b"",
        crypto::COMPRESSION_ZSTD,
        &nonce2,
        &frame,
    );
    let sealed = json!([
        {"kind": Kind::Run as u8, "name": "", "compression": 0, "nonce": h(&nonce1),
         "payload": h(&block_a), "plaintext": h(&block_a), "sealed": h(&sealed_block)},
        {"kind": Kind::Run as u8, "name": "", "compression": 1, "nonce": h(&nonce2),
         "payload": h(&frame), "plaintext": h(&plain_c), "sealed": h(&sealed_z)},
        named(&keys, Kind::Wal, "main/wal/0001/00000002.history", b"1\t0/3000060\tno recovery target specified\n", 31),
        named(&keys, Kind::StanzaDb, "main/db/0001", STANZA_DB.as_bytes(), 37),
        named(&keys, Kind::RestorePoints, "main/point/0001/0000000100000000/000000010000000000000003", POINTS.as_bytes(), 41),
        named(&keys, Kind::Outcome, "main/outcome/drill/20261202T054501.621000Z-1a2b3c4d", OUTCOME.as_bytes(), 43),
    ]);

    // A pack of two runs (uncompressed, fixed nonces): block a alone, then blocks b and c
    // sealed together; and its trailer.
    let id_b = keys.block_id(&block_b);
    let mut p = Vec::new();
    p.extend_from_slice(&pack::PACK_MAGIC);
    p.extend_from_slice(&[pack::PACK_VERSION, 0, 0, 0]);
    let mut runs = Vec::new();
    let contents: [&[(BlockIdRef, &Vec<u8>)]; 2] = [
        &[(&id_a, &block_a)],
        &[(&id_b, &block_b), (&id_c, &plain_c)],
    ];
    for (i, blocks) in contents.into_iter().enumerate() {
        let off = p.len();
        let plain: Vec<u8> = blocks.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        p.extend(seal(&keys, Kind::Run, b"", 0, &arr(11, i as u8), &plain));
        runs.push(Run {
            offset: off as u32,
            length: (p.len() - off) as u32,
            blocks: blocks
                .iter()
                .map(|(id, d)| RunBlock {
                    id: **id,
                    raw_length: d.len() as u32,
                })
                .collect(),
        });
    }
    let mut trailer_plain = Vec::new();
    index::encode_runs(&runs, &mut trailer_plain);
    let tstart = p.len();
    p.extend(seal(
        &keys,
        Kind::PackTrailer,
        b"",
        0,
        &arr(13, 9),
        &trailer_plain,
    ));
    let tlen = (p.len() - tstart) as u32;
    p.extend_from_slice(&tlen.to_le_bytes());
    p.extend_from_slice(&pack::FOOTER_MAGIC);
    let pack_id = *blake3::hash(&p).as_bytes();
    let rj = |r: &Run| {
        json!({"offset": r.offset, "length": r.length,
               "blocks": r.blocks.iter().map(|b| json!({"id": h(&b.id), "raw_length": b.raw_length})).collect::<Vec<_>>()})
    };
    let pack_v = json!({
        "name": h(&pack_id),
        "bytes": h(&p),
        "trailer_plaintext": h(&trailer_plain),
        "trailer_nonce": h(&arr::<24>(13, 9)),
        "runs": runs.iter().map(rj).collect::<Vec<_>>(),
        "blocks": [h(&block_a), h(&block_b), h(&plain_c)],
    });

    // An index segment naming that pack, sealed uncompressed with a fixed nonce.
    let seg_plain = index::encode_segment(&[PackEntries {
        pack: pack_id,
        runs: runs.clone(),
    }]);
    let seg_nonce: [u8; 24] = arr(17, 4);
    let seg_sealed = seal(&keys, Kind::Index, b"", 0, &seg_nonce, &seg_plain);
    let index_v = json!({
        "name": blake3::hash(&seg_sealed).to_hex().to_string(),
        "compression": 0,
        "nonce": h(&seg_nonce),
        "sealed": h(&seg_sealed),
        "plaintext": h(&seg_plain),
        "packs": [{"pack": h(&pack_id), "runs": runs.iter().map(rj).collect::<Vec<_>>()}],
    });

    // config, a key slot with a cheap KDF, and a key file.
    let repo_id: [u8; 16] = arr(9, 5);
    let config = RepoConfig {
        format: "pgfrost-repository".into(),
        version: pgfrost::repo::format::CONFIG_VERSION,
        repo_id: h(&repo_id),
        created: "2026-11-21T00:00:00Z".into(),
        key_check: h(&master.key_check(&repo_id)),
    };
    let mut config_bytes = serde_json::to_vec_pretty(&config).unwrap();
    config_bytes.push(b'\n');
    let passphrase = "vector passphrase";
    let slot = keys::make_slot(
        &master,
        passphrase.as_bytes(),
        &config,
        &config_bytes,
        SlotSpec {
            cost: Cost {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
            comment: "test vector".into(),
            created: "2026-11-21T00:00:00Z".into(),
            random: SlotRandom {
                slot_id: arr(19, 1),
                salt: arr(23, 2),
                nonce: arr(29, 3),
            },
        },
    )
    .unwrap();
    let kek = keys::derive_kek(passphrase.as_bytes(), &slot.kdf).unwrap();
    let key_file = keys::key_file_for(&master, &config, &config_bytes);
    json!({
        "format": "pgfrost-test-vectors",
        "version": 2,
        "master_key": h(master.as_bytes()),
        "contexts": {"block_id": crypto::CTX_BLOCK_ID, "seal": crypto::CTX_SEAL, "key_check": crypto::CTX_KEY_CHECK},
        "derived": derived,
        "block_ids": block_ids,
        "sealed": sealed,
        "pack": pack_v,
        "index_segment": index_v,
        "config": {"bytes": String::from_utf8(config_bytes).unwrap()},
        "key_slot": {"passphrase": passphrase, "kek": h(&*kek),
                     "integrity_message": h(&keys::integrity_message(&slot).unwrap()), "slot": slot},
        "key_file": key_file,
    })
}

#[test]
fn vectors_match() {
    let path = dir().join("vectors/v2.json");
    if std::env::var_os("PGFROST_WRITE_VECTORS").is_some() {
        let v = build(None);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
    }
    let stored: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("proto/vectors/v2.json")).unwrap();
    let frame = hex::decode(stored["sealed"][1]["payload"].as_str().unwrap()).unwrap();
    let built = build(Some(frame));
    assert!(
        built == stored,
        "the code no longer produces proto/vectors/v2.json; a format change?"
    );

    // And the reading side accepts them, independently of how they were built.
    let master = MasterKey::from_bytes(
        hex::decode(stored["master_key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap(),
    );
    let keys = Keys::new(&master);
    let mut o = Opener::new();
    for s in stored["sealed"].as_array().unwrap() {
        let kind = Kind::from_u8(s["kind"].as_u64().unwrap() as u8).unwrap();
        let name = hex::decode(s["name"].as_str().unwrap()).unwrap();
        let sealed = hex::decode(s["sealed"].as_str().unwrap()).unwrap();
        let plain = hex::decode(s["plaintext"].as_str().unwrap()).unwrap();
        assert_eq!(o.open(&keys, kind, &name, &sealed, 1 << 20).unwrap(), plain);
    }
    let p = hex::decode(stored["pack"]["bytes"].as_str().unwrap()).unwrap();
    let runs = pack::parse_pack(&keys, &mut o, &p).unwrap();
    let mut blocks = stored["pack"]["blocks"].as_array().unwrap().iter();
    for r in &runs {
        let blob = &p[r.offset as usize..(r.offset + r.length) as usize];
        let plain = o
            .open_exact(&keys, Kind::Run, b"", blob, r.raw_length() as usize)
            .unwrap();
        let mut at = 0;
        for b in &r.blocks {
            let data = &plain[at..at + b.raw_length as usize];
            assert_eq!(keys.block_id(data), b.id);
            assert_eq!(h(data), blocks.next().unwrap().as_str().unwrap());
            at += b.raw_length as usize;
        }
    }
    assert!(blocks.next().is_none());
    let seg = hex::decode(stored["index_segment"]["sealed"].as_str().unwrap()).unwrap();
    let seg_plain = o.open(&keys, Kind::Index, b"", &seg, 1 << 20).unwrap();
    assert_eq!(index::decode_segment(&seg_plain).unwrap()[0].runs, runs);
    let config_bytes = stored["config"]["bytes"].as_str().unwrap().as_bytes();
    let config: RepoConfig = serde_json::from_slice(config_bytes).unwrap();
    let slot: KeySlot = serde_json::from_value(stored["key_slot"]["slot"].clone()).unwrap();
    let pw = stored["key_slot"]["passphrase"].as_str().unwrap();
    match keys::open_slot(&slot, pw.as_bytes(), &config, config_bytes, "vector").unwrap() {
        SlotOpen::Opened(m) => assert_eq!(m.as_bytes(), master.as_bytes()),
        SlotOpen::WrongPassphrase => panic!("vector slot refused its passphrase"),
    }
    assert!(keys::master_matches(&master, &config).unwrap());
    assert_eq!(
        slot.integrity.as_deref(),
        Some(h(&keys::slot_integrity(&slot).unwrap()).as_str()),
        "the vector slot must carry its integrity value"
    );
    keys::verify_integrity(&slot, "vector").unwrap();
}

/// proto/layouts.json describes the binary objects field by field; the constants of the code must
/// agree with it.
#[test]
fn layouts_match_code() {
    let l: Value =
        serde_json::from_slice(&std::fs::read(dir().join("layouts.json")).unwrap()).unwrap();
    let size = |obj: &str| -> usize {
        l[obj]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["size"].as_u64().unwrap() as usize)
            .sum()
    };
    let magic = |obj: &str| {
        l[obj]["fields"][0]["value"]
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec()
    };
    assert_eq!(size("sealed_header"), crypto::HEADER_LEN);
    assert_eq!(magic("sealed_header"), crypto::MAGIC);
    assert_eq!(
        l["sealed_object"]["fields"][1]["size"].as_u64().unwrap() as usize,
        crypto::NONCE_LEN
    );
    assert_eq!(
        l["sealed_object"]["overhead"].as_u64().unwrap() as usize,
        crypto::OVERHEAD
    );
    assert_eq!(size("pack_header"), pack::PACK_HEADER_LEN);
    assert_eq!(magic("pack_header"), pack::PACK_MAGIC);
    assert_eq!(size("pack_footer"), pack::FOOTER_LEN);
    assert_eq!(
        l["pack_footer"]["fields"][1]["value"]
            .as_str()
            .unwrap()
            .as_bytes(),
        pack::FOOTER_MAGIC
    );
    assert_eq!(size("run_head"), index::RUN_HEAD_LEN);
    assert_eq!(size("run_block"), index::RUN_BLOCK_LEN);
    let kinds = &l["sealed_header"]["kinds"];
    for k in [
        Kind::Run,
        Kind::PackTrailer,
        Kind::Index,
        Kind::Wal,
        Kind::StanzaDb,
        Kind::Manifest,
        Kind::RestorePoints,
        Kind::Outcome,
    ] {
        assert_eq!(
            kinds[k.name()].as_u64().unwrap() as u8,
            k as u8,
            "{}",
            k.name()
        );
    }
    let contexts = &l["key_derivation"];
    assert_eq!(contexts["block_id"], crypto::CTX_BLOCK_ID);
    assert_eq!(contexts["seal"], crypto::CTX_SEAL);
    assert_eq!(contexts["key_check"], crypto::CTX_KEY_CHECK);
    assert_eq!(
        contexts["slot_ad_prefix"],
        std::str::from_utf8(keys::SLOT_AD_PREFIX).unwrap()
    );
    assert_eq!(
        contexts["slot_check_message"],
        std::str::from_utf8(keys::SLOT_CHECK_MSG).unwrap()
    );
    assert_eq!(contexts["slot_integrity"], keys::CTX_SLOT_INTEGRITY);
}
