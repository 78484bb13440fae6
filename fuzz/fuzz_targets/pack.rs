//! `pack`: pack files, whole (`parse_pack`) and their plaintext parts (`decode_entries` for the
//! trailer, `parse_footer` for the footer), which are reachable after authentication.
//!
//! Input layout, byte 0 = mode (value % 4):
//! ```text
//! 0  rest = a whole pack                                   -> parse_pack, then every block
//! 1  bytes 1..9 blobs_end u64 LE, rest = trailer plaintext -> decode_entries
//! 2  bytes 1..9 pack_len u64 LE, rest = footer bytes       -> parse_footer
//! 3  byte 1 trailer compression byte, bytes 2..4 body length k (u16 LE), rest = body (first k
//!    bytes, after the pack header) then trailer payload; the target seals the trailer with the
//!    fixture keys and writes the footer, so the trailer is authentic -> parse_pack, every block
//! ```
//! Entries that parse must lie inside the blob area, in order and without overlap, so slicing
//! the pack with them (as `BlockStore::check_pack` does) cannot panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgfrost::repo::crypto::{self, Kind, OVERHEAD, Opener};
use pgfrost::repo::index::Entry;
use pgfrost::repo::pack::{
    self, FOOTER_LEN, FOOTER_MAGIC, PACK_HEADER_LEN, PACK_MAGIC, PACK_VERSION,
};
use pgfrost_fuzz::{self as fx, Cursor};

#[global_allocator]
static ALLOC: fx::PeakAlloc = fx::PeakAlloc;

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    match c.u8() % 4 {
        0 => whole(c.rest()),
        1 => {
            let blobs_end = c.le(8);
            let trailer = c.rest();
            fx::reset_largest_alloc();
            let r = pack::decode_entries(trailer, blobs_end);
            let peak = fx::largest_alloc();
            assert!(
                peak <= trailer.len() + fx::ALLOC_SLACK,
                "decode_entries allocated {peak}"
            );
            if let Ok(entries) = r {
                check_entries(&entries, blobs_end);
                assert_eq!(pack::encode_entries(&entries), trailer);
            }
        }
        2 => {
            let pack_len = c.le(8);
            let footer = c.rest();
            if let Ok((tlen, start)) = pack::parse_footer(footer, pack_len) {
                assert_eq!(footer.len(), FOOTER_LEN);
                assert!(start >= PACK_HEADER_LEN as u64);
                assert_eq!(start + tlen as u64 + FOOTER_LEN as u64, pack_len);
            }
        }
        _ => {
            let compression = c.u8();
            let k = c.le(2) as usize;
            let rest = c.rest();
            let (body, trailer) = rest.split_at(k.min(rest.len()));
            let mut p = Vec::with_capacity(rest.len() + 64);
            p.extend_from_slice(&PACK_MAGIC);
            p.extend_from_slice(&[PACK_VERSION, 0, 0, 0]);
            p.extend_from_slice(body);
            let start = p.len();
            crypto::seal_raw(
                fx::keys(),
                Kind::PackTrailer,
                b"",
                compression,
                &fx::NONCE,
                trailer,
                &mut p,
            );
            let tlen = (p.len() - start) as u32;
            p.extend_from_slice(&tlen.to_le_bytes());
            p.extend_from_slice(&FOOTER_MAGIC);
            whole(&p);
        }
    }
});

fn whole(p: &[u8]) {
    let keys = fx::keys();
    let mut opener = Opener::new();
    let Ok(entries) = pack::parse_pack(keys, &mut opener, p) else {
        return;
    };
    let (_, blobs_end) = pack::parse_footer(&p[p.len() - FOOTER_LEN..], p.len() as u64)
        .expect("parse_pack accepted a pack whose footer does not parse");
    check_entries(&entries, blobs_end);
    for e in &entries {
        let blob = &p[e.offset as usize..e.offset as usize + e.length as usize];
        // raw_length comes from the authenticated trailer and open_exact allocates it up front;
        // past the fuzzing limit only a key holder's own bug could put it there, so skip.
        if u64::from(e.raw_length) > fx::FUZZ_PLAINTEXT_LIMIT {
            continue;
        }
        if let Ok(b) = opener.open_exact(keys, Kind::Block, &e.id, blob, e.raw_length as usize) {
            assert_eq!(b.len(), e.raw_length as usize);
        }
    }
}

fn check_entries(entries: &[Entry], blobs_end: u64) {
    let mut prev_end = PACK_HEADER_LEN as u64;
    for e in entries {
        let (start, end) = (
            u64::from(e.offset),
            u64::from(e.offset) + u64::from(e.length),
        );
        assert!(
            start >= prev_end,
            "entry at {start} overlaps the one before"
        );
        assert!(
            end <= blobs_end,
            "entry ends at {end}, past the blob area ({blobs_end})"
        );
        assert!(e.length as usize >= OVERHEAD);
        prev_end = end;
    }
}
