//! Writes the seed corpora in `seeds/<target>/`: real, valid objects of the fixture repository
//! (see `src/lib.rs`), so the fuzzer starts past magic numbers, versions and AEAD tags.
//!
//! Deterministic (fixed keys, nonces and slot randomness): running it again rewrites the same
//! bytes unless the format or the zstd version changed.
//!
//! ```text
//! cd fuzz && cargo run --example make_seeds
//! ```

use pgfrost::repo::crypto::{self, Kind, MAX_OBJECT_PLAINTEXT, MasterKey, Opener};
use pgfrost::repo::format::{self, KeySlot, RepoConfig};
use pgfrost::repo::index::{self, PackEntries, Run, RunBlock};
use pgfrost::repo::keys::{self, SlotOpen, SlotRandom};
use pgfrost::repo::pack::{self, FOOTER_MAGIC, PACK_MAGIC, PACK_VERSION};
use pgfrost::repo::stanza::{self, StanzaDb};
use pgfrost_fuzz as fx;
use std::path::{Path, PathBuf};

const TARGETS: [&str; 7] = [
    "config",
    "key_slot",
    "key_file",
    "sealed",
    "sealed_roundtrip",
    "pack",
    "index",
];

/// Kind selector bytes of the `sealed` and `sealed_roundtrip` layouts.
fn kind_sel(kind: Kind) -> u8 {
    fx::kind_selector(kind)
}

struct Seeds {
    root: PathBuf,
    count: usize,
}

impl Seeds {
    fn write(&mut self, target: &str, name: &str, bytes: &[u8]) {
        assert!(TARGETS.contains(&target), "unknown target {target}");
        assert!(
            bytes.len() <= 65536,
            "seed {target}/{name} exceeds -max_len"
        );
        std::fs::write(self.root.join(target).join(name), bytes).expect("write seed");
        self.count += 1;
    }
}

/// Incompressible but deterministic bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn zstd_frame(plain: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(plain, 3).expect("zstd compress")
}

/// Seals like `Sealer` (zstd level 3 when it helps) but with a fixed nonce.
fn seal(kind: Kind, name: &[u8], plain: &[u8], nonce: u8) -> Vec<u8> {
    let z = zstd_frame(plain);
    let (c, payload) = if z.len() < plain.len() {
        (crypto::COMPRESSION_ZSTD, &z[..])
    } else {
        (crypto::COMPRESSION_NONE, plain)
    };
    let mut out = Vec::new();
    crypto::seal_raw(fx::keys(), kind, name, c, &[nonce; 24], payload, &mut out);
    out
}

fn pretty<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("serialize");
    b.push(b'\n');
    b
}

/// The run list entry of a run holding `blocks`, sealed at `offset` in `length` bytes.
fn run_of(offset: usize, length: usize, blocks: &[Vec<u8>]) -> Run {
    Run {
        offset: offset as u32,
        length: length as u32,
        blocks: blocks
            .iter()
            .map(|b| RunBlock {
                id: fx::keys().block_id(b),
                raw_length: b.len() as u32,
            })
            .collect(),
    }
}

/// A pack like `PackBuilder` makes (each run's blocks concatenated and sealed as one object of
/// kind `Run` with an empty name), with fixed nonces; returns (pack, trailer plaintext).
fn make_pack(runs: &[&[Vec<u8>]]) -> (Vec<u8>, Vec<u8>) {
    let keys = fx::keys();
    let mut buf = Vec::new();
    buf.extend_from_slice(&PACK_MAGIC);
    buf.extend_from_slice(&[PACK_VERSION, 0, 0, 0]);
    let mut list = Vec::new();
    for (i, blocks) in runs.iter().enumerate() {
        assert!(!blocks.is_empty());
        let offset = buf.len();
        buf.extend_from_slice(&seal(Kind::Run, b"", &blocks.concat(), i as u8 + 1));
        list.push(run_of(offset, buf.len() - offset, blocks));
    }
    let mut trailer = Vec::new();
    index::encode_runs(&list, &mut trailer);
    let start = buf.len();
    buf.extend_from_slice(&seal(Kind::PackTrailer, b"", &trailer, 0xee));
    let tlen = (buf.len() - start) as u32;
    buf.extend_from_slice(&tlen.to_le_bytes());
    buf.extend_from_slice(&FOOTER_MAGIC);
    let mut o = Opener::new();
    let parsed = pack::parse_pack(keys, &mut o, &buf).expect("seed pack parses");
    assert_eq!(parsed, list);
    // Every run opens and cuts into blocks with their ids, as a reader checks.
    for (r, blocks) in parsed.iter().zip(runs) {
        let blob = &buf[r.offset as usize..(r.offset + r.length) as usize];
        let plain = o
            .open_exact(keys, Kind::Run, b"", blob, r.raw_length() as usize)
            .expect("seed run opens");
        assert_eq!(plain, blocks.concat());
        let mut at = 0;
        for b in &r.blocks {
            let data = &plain[at..at + b.raw_length as usize];
            assert_eq!(keys.block_id(data), b.id);
            at += data.len();
        }
    }
    (buf, trailer)
}

fn segment() -> Vec<u8> {
    let pages: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 8192]).collect();
    let packs = vec![
        PackEntries {
            pack: [9; 32],
            runs: vec![
                run_of(8, 300, &pages[..3]),
                run_of(308, 100, &pages[3..]),
                run_of(408, 60, &[noise(20, 4)]),
            ],
        },
        PackEntries {
            pack: [8; 32],
            runs: vec![],
        },
    ];
    let b = index::encode_segment(&packs);
    assert_eq!(index::decode_segment(&b).unwrap(), packs);
    b
}

const WAL_NAME: &[u8] = b"main/wal/0001/0000000100000000/000000010000000000000001";
const DB_NAME: &[u8] = b"main/db/0001";

/// A small stand-in for a WAL file: mostly zeros, like a fresh segment.
fn wal_file() -> Vec<u8> {
    let mut w = vec![0u8; 16384];
    w[..64].copy_from_slice(&noise(64, 3));
    w
}

fn stanza_db() -> Vec<u8> {
    let db = StanzaDb {
        format: stanza::DB_FORMAT.into(),
        version: 1,
        id: 1,
        system_id: "7301234567890123456".into(),
        pg_major: 17,
        pg_version_num: 170004,
        wal_segment_size: 16 << 20,
        control_version: 1700,
        catalog_version: 202406281,
        created: "2026-11-21T00:00:00Z".into(),
    };
    serde_json::to_vec_pretty(&db).unwrap()
}

fn config_seeds(s: &mut Seeds) {
    let (config, bytes) = fx::config();
    s.write("config", "fixture.json", bytes);
    s.write(
        "config",
        "compact.json",
        &serde_json::to_vec(config).unwrap(),
    );
    let other = MasterKey::from_bytes([8; 32]);
    let foreign = RepoConfig {
        repo_id: hex::encode([0x11; 16]),
        key_check: hex::encode(other.key_check(&[0x11; 16])),
        ..config.clone()
    };
    s.write("config", "foreign.json", &pretty(&foreign));
    // A version this build does not read, and a repo id that is not hex.
    let odd = RepoConfig {
        version: format::CONFIG_VERSION + 1,
        repo_id: "not hex".into(),
        ..config.clone()
    };
    s.write("config", "odd.json", &pretty(&odd));
}

fn slot_seeds(s: &mut Seeds) {
    let (config, bytes) = fx::config();
    let open = |slot: &KeySlot| keys::open_slot(slot, fx::PASSPHRASE, config, bytes, "seed");
    let slot = fx::slot();
    assert!(matches!(open(slot), Ok(SlotOpen::Opened(_))));
    s.write("key_slot", "fixture.json", &pretty(slot));

    let other = fx::make_slot(
        b"another passphrase",
        "ops laptop",
        SlotRandom {
            slot_id: [0x61; 16],
            salt: [0x6a; 16],
            nonce: [0x6e; 24],
        },
    );
    assert!(matches!(open(&other), Ok(SlotOpen::WrongPassphrase)));
    s.write("key_slot", "other_passphrase.json", &pretty(&other));

    // The passphrase matches but the wrapped key was altered: reported as corruption.
    let mut tampered = slot.clone();
    let flipped = if tampered.wrapped_key.starts_with('0') {
        "1"
    } else {
        "0"
    };
    tampered.wrapped_key.replace_range(0..1, flipped);
    // A matching integrity value, so the seed gets past it to the AEAD.
    tampered.integrity = Some(hex::encode(keys::slot_integrity(&tampered).unwrap()));
    assert!(open(&tampered).is_err());
    s.write("key_slot", "tampered.json", &pretty(&tampered));

    // A damaged salt: refused by the integrity value before Argon2id runs.
    let mut salt = slot.clone();
    salt.kdf.salt.replace_range(0..2, "00");
    assert!(open(&salt).is_err());
    s.write("key_slot", "damaged_salt.json", &pretty(&salt));

    let mut costly = slot.clone();
    costly.kdf.memory_kib = 65536;
    s.write(
        "key_slot",
        "costly.json",
        &serde_json::to_vec(&costly).unwrap(),
    );
}

fn key_file_seeds(s: &mut Seeds) {
    let (config, bytes) = fx::config();
    let kf = keys::key_file_for(&fx::master(), config, bytes);
    keys::open_key_file(&kf, config, bytes, "seed").expect("fixture key file opens");
    s.write("key_file", "fixture.json", &pretty(&kf));
    let mut foreign = kf.clone();
    foreign.master_key = hex::encode([8u8; 32]);
    s.write("key_file", "foreign_key.json", &pretty(&foreign));
    let mut stale = kf.clone();
    stale.config_hash = hex::encode([0u8; 32]);
    s.write("key_file", "stale_config.json", &pretty(&stale));
    assert_eq!(format::KEY_FILE_VERSION, kf.version);
}

fn sealed_seeds(s: &mut Seeds) {
    let keys = fx::keys();
    let pages = [b"PostgreSQL page ".repeat(512), vec![0u8; 8192]];
    let run = pages.concat();
    let noisy = [noise(300, 1)];
    let (_, trailer) = make_pack(&[&pages, &noisy]);
    let wal = wal_file();
    let db = stanza_db();
    // (seed name, kind, object name, plaintext, limit selector)
    type Case<'a> = (&'a str, Kind, &'a [u8], &'a [u8], u8);
    let cases: [Case; 6] = [
        ("run_zstd", Kind::Run, b"", &run, 0),
        ("run_raw", Kind::Run, b"", &noisy[0], 20),
        ("index_zstd", Kind::Index, b"", &segment(), 0),
        ("trailer", Kind::PackTrailer, b"", &trailer, 16),
        ("wal", Kind::Wal, WAL_NAME, &wal, 0),
        ("stanza_db", Kind::StanzaDb, DB_NAME, &db, 20),
    ];
    for (name, kind, obj_name, plain, limit) in cases {
        let sealed = seal(kind, obj_name, plain, 3);
        let mut o = Opener::new();
        assert_eq!(
            o.open(keys, kind, obj_name, &sealed, MAX_OBJECT_PLAINTEXT)
                .unwrap(),
            plain
        );
        let mut b = vec![kind_sel(kind), obj_name.len() as u8];
        b.extend_from_slice(&(plain.len() as u16).to_le_bytes());
        b.push(limit);
        b.extend_from_slice(obj_name);
        b.extend_from_slice(&sealed);
        s.write("sealed", name, &b);
    }
}

fn roundtrip_seeds(s: &mut Seeds) {
    let raw = |kind: Kind, compression: u8, len: usize, payload: &[u8]| {
        let mut b = vec![0, kind_sel(kind), compression, 24];
        b.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
        b.extend_from_slice(payload);
        b
    };
    let seg = segment();
    let page = b"PostgreSQL page ".repeat(512);
    let run = [page.clone(), noise(100, 5), vec![0u8; 8192]].concat();
    let (_, trailer) = make_pack(&[&[page.clone(), vec![0u8; 8192]], &[noise(100, 5)]]);
    let seg_z = zstd_frame(&seg);
    let run_z = zstd_frame(&run);
    s.write(
        "sealed_roundtrip",
        "raw_index_zstd",
        &raw(Kind::Index, 1, seg.len(), &seg_z),
    );
    s.write(
        "sealed_roundtrip",
        "raw_run_zstd",
        &raw(Kind::Run, 1, run.len(), &run_z),
    );
    s.write(
        "sealed_roundtrip",
        "raw_trailer_none",
        &raw(Kind::PackTrailer, 0, trailer.len(), &trailer),
    );
    // Two frames back to back: open sizes the output from the first frame only.
    let two = [zstd_frame(b"first"), zstd_frame(b"second frame")].concat();
    s.write(
        "sealed_roundtrip",
        "raw_two_frames",
        &raw(Kind::Run, 1, 17, &two),
    );
    // A skippable frame (magic 0x184D2A50, 4-byte length) in front of a real one.
    let mut skip = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
    skip.extend_from_slice(&seg_z);
    s.write(
        "sealed_roundtrip",
        "raw_skippable",
        &raw(Kind::Index, 1, seg.len(), &skip),
    );
    // A frame without its content size (open refuses those).
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))
        .unwrap();
    let nosize = c.compress(&run).unwrap();
    s.write(
        "sealed_roundtrip",
        "raw_no_content_size",
        &raw(Kind::Run, 1, run.len(), &nosize),
    );
    s.write(
        "sealed_roundtrip",
        "raw_stanza_db_zstd",
        &raw(
            Kind::StanzaDb,
            1,
            stanza_db().len(),
            &zstd_frame(&stanza_db()),
        ),
    );
    s.write(
        "sealed_roundtrip",
        "raw_wal_zstd",
        &raw(Kind::Wal, 1, wal_file().len(), &zstd_frame(&wal_file())),
    );
    let mut sealer = vec![1, kind_sel(Kind::Index), 3];
    sealer.extend_from_slice(&seg);
    s.write("sealed_roundtrip", "sealer_index", &sealer);
    let mut sealer = vec![1, kind_sel(Kind::Run), 2];
    sealer.extend_from_slice(&run);
    s.write("sealed_roundtrip", "sealer_run", &sealer);
}

fn pack_seeds(s: &mut Seeds) {
    let page = b"PostgreSQL page ".repeat(512);
    let zeros = vec![0u8; 8192];
    // Runs of two blocks, one block (incompressible, stored raw) and three blocks.
    let (p, trailer) = make_pack(&[
        &[page.clone(), zeros.clone()],
        &[noise(200, 2)],
        &[zeros.clone(), noise(64, 6), page.clone()],
    ]);
    let with_mode = |mode: u8, rest: &[&[u8]]| {
        let mut b = vec![mode];
        for r in rest {
            b.extend_from_slice(r);
        }
        b
    };
    s.write("pack", "whole", &with_mode(0, &[&p]));
    let (empty, empty_trailer) = make_pack(&[]);
    s.write("pack", "whole_empty", &with_mode(0, &[&empty]));

    let tlen = u32::from_le_bytes(p[p.len() - 8..p.len() - 4].try_into().unwrap());
    let blobs_end = (p.len() - 8 - tlen as usize) as u64;
    s.write(
        "pack",
        "trailer",
        &with_mode(1, &[&blobs_end.to_le_bytes(), &trailer]),
    );
    s.write(
        "pack",
        "trailer_empty",
        &with_mode(1, &[&8u64.to_le_bytes(), &empty_trailer]),
    );
    s.write(
        "pack",
        "footer",
        &with_mode(2, &[&(p.len() as u64).to_le_bytes(), &p[p.len() - 8..]]),
    );

    // Mode 3: body and trailer plaintext; the target seals the trailer itself.
    let body = &p[8..blobs_end as usize];
    let k = (body.len() as u16).to_le_bytes();
    s.write(
        "pack",
        "authentic_trailer",
        &with_mode(3, &[&[0], &k, body, &trailer]),
    );
    s.write(
        "pack",
        "authentic_trailer_zstd",
        &with_mode(3, &[&[1], &k, body, &zstd_frame(&trailer)]),
    );
    // The same runs, but the first run's two blocks split at another place: the run opens to
    // the same length, the blocks slice, and their ids no longer match (a reader refuses them).
    let mut runs = index::decode_runs(&mut index::Reader::new(&trailer)).unwrap();
    runs[0].blocks[0].raw_length -= 100;
    runs[0].blocks[1].raw_length += 100;
    let mut resplit = Vec::new();
    index::encode_runs(&runs, &mut resplit);
    s.write(
        "pack",
        "authentic_trailer_resplit",
        &with_mode(3, &[&[0], &k, body, &resplit]),
    );
}

fn index_seeds(s: &mut Seeds) {
    let seg = segment();
    let keys = fx::keys();
    s.write("index", "plain", &[&[0u8][..], &seg].concat());
    s.write("index", "plain_empty", &[0, 0, 0, 0, 0]);
    let sealed = seal(Kind::Index, b"", &seg, 5);
    assert_eq!(sealed[6], crypto::COMPRESSION_ZSTD);
    let plain = Opener::new()
        .open(keys, Kind::Index, b"", &sealed, MAX_OBJECT_PLAINTEXT)
        .unwrap();
    assert_eq!(plain, seg);
    s.write("index", "sealed_zstd", &[&[1u8][..], &sealed].concat());
    let mut raw = Vec::new();
    crypto::seal_raw(keys, Kind::Index, b"", 0, &[6; 24], &seg, &mut raw);
    s.write("index", "sealed_raw", &[&[1u8][..], &raw].concat());
    s.write(
        "index",
        "authentic_zstd",
        &[&[2u8, 1][..], &zstd_frame(&seg)].concat(),
    );
    s.write("index", "authentic_raw", &[&[2u8, 0][..], &seg].concat());
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for t in TARGETS {
        let dir = root.join(t);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("clear old seeds");
        }
        std::fs::create_dir_all(&dir).expect("create seed directory");
    }
    let mut s = Seeds { root, count: 0 };
    config_seeds(&mut s);
    slot_seeds(&mut s);
    key_file_seeds(&mut s);
    sealed_seeds(&mut s);
    roundtrip_seeds(&mut s);
    pack_seeds(&mut s);
    index_seeds(&mut s);
    println!("wrote {} seeds under {}", s.count, s.root.display());
}
