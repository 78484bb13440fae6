//! `sealed_roundtrip`: authentic objects with adversarial payloads, so the fuzzer reaches the
//! decompression path that random bytes never get to (they fail authentication first).
//!
//! Input layout:
//! ```text
//! byte 0   mode: even = raw, odd = sealer
//! byte 1   kind: the n-th of the kinds `Kind::from_u8` knows (value % their count)
//! raw mode (seal_raw with a fuzzer-chosen compression byte and an already "compressed" payload):
//!   byte 2      compression byte, as is (0 none, 1 zstd, anything else must be refused)
//!   byte 3      limit for open: 1 << (value % 25), at most 16 MiB
//!   bytes 4..7  plaintext length for open_exact, u24 LE
//!   rest        the payload (for zstd: the frame(s) the opener will decompress)
//! sealer mode (Sealer::seal of a fuzzer-chosen plaintext, then open: must round-trip):
//!   byte 2      zstd level: none, -5, 1, 3 (value % 4)
//!   rest        the plaintext
//! ```
//! Whatever the opener returns must stay within the limit (open) or the length asked (open_exact),
//! and so must its largest allocation. Opened index segments, pack trailers and stanza records
//! are handed on to their parsers (`decode_segment`, `decode_trailer`, `StanzaDb`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgfrost::repo::crypto::{
    self, COMPRESSION_NONE, COMPRESSION_ZSTD, Keys, Kind, MAX_OBJECT_PLAINTEXT, OpenError, Opener,
    Sealer,
};
use pgfrost::repo::stanza::StanzaDb;
use pgfrost::repo::{index, pack};
use pgfrost_fuzz::{self as fx, Cursor};

#[global_allocator]
static ALLOC: fx::PeakAlloc = fx::PeakAlloc;

const NAME: &[u8] = b"fuzz object";

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let mode = c.u8();
    let kind = fx::kind(c.u8());
    if mode.is_multiple_of(2) {
        let compression = c.u8();
        let limit = 1u64 << (c.u8() % 25);
        let len = c.le(3) as usize;
        raw(fx::keys(), kind, compression, limit, len, c.rest());
    } else {
        let level = [None, Some(-5), Some(1), Some(3)][c.u8() as usize % 4];
        sealer(fx::keys(), kind, level, c.rest());
    }
});

fn raw(keys: &Keys, kind: Kind, compression: u8, limit: u64, len: usize, payload: &[u8]) {
    let mut sealed = Vec::new();
    crypto::seal_raw(
        keys,
        kind,
        NAME,
        compression,
        &fx::NONCE,
        payload,
        &mut sealed,
    );
    let mut opener = Opener::new();

    fx::reset_largest_alloc();
    let opened = opener.open(keys, kind, NAME, &sealed, limit);
    let peak = fx::largest_alloc();
    assert!(
        peak <= sealed.len().max(limit as usize) + fx::ALLOC_SLACK,
        "open allocated {peak} bytes for a {}-byte object with limit {limit}",
        sealed.len()
    );
    match compression {
        COMPRESSION_NONE => {
            assert_eq!(opened.as_deref(), Ok(payload));
            let mut out = vec![0u8; payload.len()];
            assert_eq!(
                opener.open_exact_into(keys, kind, NAME, &sealed, &mut out),
                Ok(())
            );
            assert_eq!(out, payload);
        }
        COMPRESSION_ZSTD => {
            if let Ok(p) = &opened {
                assert!(p.len() as u64 <= limit);
                // open decodes to the frame's declared size; open_exact at that size must agree.
                let again = opener.open_exact(keys, kind, NAME, &sealed, p.len());
                assert_eq!(again.as_ref(), Ok(p), "open_exact disagrees with open");
                // So must open_exact_into, the allocation-free path restores use.
                let mut out = vec![0u8; p.len()];
                let into = opener.open_exact_into(keys, kind, NAME, &sealed, &mut out);
                assert_eq!(into, Ok(()), "open_exact_into disagrees with open");
                assert_eq!(&out, p, "open_exact_into decoded differently");
            }
            // Where open fails, open_exact_into at any length fails too.
            if opened.is_err() {
                let mut out = vec![0u8; (limit as usize).min(1 << 16)];
                assert!(
                    opener
                        .open_exact_into(keys, kind, NAME, &sealed, &mut out)
                        .is_err()
                );
            }
            // Anything else is an authentic but undecodable payload: an error, never AuthFailed.
            if let Err(e) = &opened {
                assert!(
                    matches!(
                        e,
                        OpenError::Decompress(_)
                            | OpenError::TooLarge(_)
                            | OpenError::SizeMismatch { .. }
                    ),
                    "{e:?}"
                );
            }
        }
        _ => assert_eq!(opened, Err(OpenError::BadHeader)),
    }

    fx::reset_largest_alloc();
    let exact = opener.open_exact(keys, kind, NAME, &sealed, len);
    let peak = fx::largest_alloc();
    assert!(
        peak <= sealed.len().max(len) + fx::ALLOC_SLACK,
        "open_exact allocated {peak} bytes for a {}-byte object of length {len}",
        sealed.len()
    );
    if let Ok(p) = &exact {
        assert_eq!(p.len(), len);
        if let Ok(q) = &opened {
            assert_eq!(p, q, "open and open_exact decoded differently");
        }
    }

    if let Ok(plain) = &opened {
        parse_plaintext(kind, plain);
    }
}

fn sealer(keys: &Keys, kind: Kind, level: Option<i32>, plaintext: &[u8]) {
    let sealed = Sealer::new(level).seal(keys, kind, NAME, plaintext);
    let mut opener = Opener::new();
    let opened = opener.open(keys, kind, NAME, &sealed, MAX_OBJECT_PLAINTEXT);
    assert_eq!(
        opened.as_deref(),
        Ok(plaintext),
        "sealed object did not round-trip"
    );
    let exact = opener.open_exact(keys, kind, NAME, &sealed, plaintext.len());
    assert_eq!(
        exact.as_deref(),
        Ok(plaintext),
        "open_exact did not round-trip"
    );
    // The name and the kind are bound.
    assert_eq!(
        opener.open(keys, kind, b"another name", &sealed, MAX_OBJECT_PLAINTEXT),
        Err(OpenError::AuthFailed)
    );
    let other = fx::other_kind(kind);
    assert!(matches!(
        opener.open(keys, other, NAME, &sealed, MAX_OBJECT_PLAINTEXT),
        Err(OpenError::WrongKind { .. })
    ));
    parse_plaintext(kind, plaintext);
}

fn parse_plaintext(kind: Kind, plain: &[u8]) {
    match kind {
        Kind::Index => {
            if let Ok(packs) = index::decode_segment(plain) {
                assert_eq!(index::encode_segment(&packs), plain);
            }
        }
        Kind::PackTrailer => {
            // The runs must tile [8, blobs_end): take blobs_end from the last run listed.
            let mut r = index::Reader::new(plain);
            let blobs_end = match index::decode_runs(&mut r).as_deref() {
                Ok([.., last]) => u64::from(last.offset) + u64::from(last.length),
                _ => pack::PACK_HEADER_LEN as u64,
            };
            if let Ok(runs) = pack::decode_trailer(plain, blobs_end) {
                let mut again = Vec::new();
                index::encode_runs(&runs, &mut again);
                assert_eq!(again, plain);
            }
        }
        Kind::StanzaDb => {
            if let Ok(db) = serde_json::from_slice::<StanzaDb>(plain) {
                let _ = (db.system_id(), db.dir(), db.same_cluster(&db));
                let again = serde_json::to_vec(&db).expect("a parsed record serializes");
                let back: StanzaDb = serde_json::from_slice(&again).expect("and parses back");
                assert_eq!(back, db);
            }
        }
        _ => {}
    }
}
