//! `pack`: pack files, whole (`parse_pack`) and their plaintext parts (`decode_trailer` for the
//! trailer's run list, `parse_footer` for the footer), which are reachable after authentication.
//!
//! Input layout, byte 0 = mode (value % 4):
//! ```text
//! 0  rest = a whole pack                                   -> parse_pack, then every run
//! 1  bytes 1..9 blobs_end u64 LE, rest = trailer plaintext -> decode_trailer (and check_runs)
//! 2  bytes 1..9 pack_len u64 LE, rest = footer bytes       -> parse_footer
//! 3  byte 1 trailer compression byte, bytes 2..4 body length k (u16 LE), rest = body (first k
//!    bytes, after the pack header) then trailer payload; the target seals the trailer with the
//!    fixture keys and writes the footer, so the trailer is authentic -> parse_pack, every run
//! ```
//! Whatever parses must obey docs/format.md ("Packs"), checked here independently of
//! `check_runs`: every run holds at least one block and at most 4 GiB - 1 of plaintext, and the
//! runs tile the blob area `[8, blobs_end)` exactly, each at least a sealed object long. So
//! slicing the pack with the runs, opening each run to the sum of its blocks' lengths and slicing
//! that into blocks (as `BlockStore::pack_blocks` and the index do) cannot panic, which the
//! target then does. `check_runs` must accept exactly the run lists that obey the rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgfrost::repo::crypto::{self, Kind, OVERHEAD, Opener};
use pgfrost::repo::index::{self, Reader, Run};
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
            trailer(blobs_end, c.rest());
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

/// A trailer's plaintext on its own: `decode_trailer` accepts it exactly when it is a run list
/// (nothing after it) that obeys the rules, and what it accepts re-encodes to the same bytes.
fn trailer(blobs_end: u64, plain: &[u8]) {
    fx::reset_largest_alloc();
    let r = pack::decode_trailer(plain, blobs_end);
    let peak = fx::largest_alloc();
    // decode_runs sizes its vectors from counts it has checked against the bytes left: a Run
    // (32 bytes) for every 48 input bytes at most, a RunBlock (36 bytes) for every 36.
    assert!(
        peak <= plain.len() + fx::ALLOC_SLACK,
        "decode_trailer allocated {peak} bytes for {} bytes of input",
        plain.len()
    );
    // The same bytes as a bare run list, with the rules checked here.
    let mut reader = Reader::new(plain);
    let listed = index::decode_runs(&mut reader)
        .ok()
        .filter(|_| reader.remaining() == 0);
    if let Some(runs) = &listed {
        check_encoding(runs);
        let rules = obeys_rules(runs, blobs_end);
        assert_eq!(
            pack::check_runs(runs, blobs_end).is_ok(),
            rules.is_ok(),
            "check_runs disagrees with the format's rules ({rules:?})"
        );
    }
    match (&r, &listed) {
        (Ok(runs), Some(l)) => {
            assert_eq!(runs, l);
            if let Err(e) = obeys_rules(runs, blobs_end) {
                panic!("decode_trailer accepted a run list that breaks the rules: {e}");
            }
            let mut again = Vec::new();
            index::encode_runs(runs, &mut again);
            assert_eq!(again, plain, "trailer did not re-encode to its bytes");
        }
        (Ok(_), None) => panic!("decode_trailer accepted what is not a run list"),
        (Err(e), Some(l)) => assert!(
            obeys_rules(l, blobs_end).is_err(),
            "decode_trailer refused a run list that obeys the rules: {e}"
        ),
        (Err(_), None) => {}
    }
}

fn whole(p: &[u8]) {
    let keys = fx::keys();
    let mut opener = Opener::new();
    let Ok(runs) = pack::parse_pack(keys, &mut opener, p) else {
        return;
    };
    pack::check_header(&p[..PACK_HEADER_LEN]).expect("parse_pack accepted a bad header");
    let (_, blobs_end) = pack::parse_footer(&p[p.len() - FOOTER_LEN..], p.len() as u64)
        .expect("parse_pack accepted a pack whose footer does not parse");
    check_encoding(&runs);
    if let Err(e) = obeys_rules(&runs, blobs_end) {
        panic!("parse_pack accepted a run list that breaks the rules: {e}");
    }
    // Open every run and cut it into its blocks, as BlockStore::pack_blocks does. The run's
    // name is empty: only the block ids (recomputed below, as a reader does) tie a run's bytes
    // to the blocks the trailer lists, so a mismatch here is a detected error, not a bug.
    let mut plain = Vec::new();
    for r in &runs {
        let blob = &p[r.offset as usize..r.offset as usize + r.length as usize];
        let raw = r.raw_length();
        // The plaintext length comes from the authenticated trailer and the reader allocates it
        // up front; past the fuzzing limit only a key holder's own bug could put it there.
        if raw > fx::FUZZ_PLAINTEXT_LIMIT {
            continue;
        }
        plain.resize(raw as usize, 0);
        if opener
            .open_exact_into(keys, Kind::Run, b"", blob, &mut plain)
            .is_err()
        {
            continue;
        }
        // The index's arithmetic: each block's place in the run as a u32 (blockstore::Index).
        let mut raw_offset = 0u32;
        for b in &r.blocks {
            let data = &plain[raw_offset as usize..][..b.raw_length as usize];
            std::hint::black_box(keys.block_id(data) == b.id);
            raw_offset = raw_offset
                .checked_add(b.raw_length)
                .expect("a block's place in its run overflows u32");
        }
        assert_eq!(raw_offset as usize, plain.len());
    }
}

/// What `decode_runs` guarantees about any run list it returns, whatever the pack.
fn check_encoding(runs: &[Run]) {
    for r in runs {
        assert!(!r.blocks.is_empty(), "a run of no blocks was accepted");
        assert!(
            r.raw_length() <= u64::from(u32::MAX),
            "a run of {} bytes of plaintext was accepted",
            r.raw_length()
        );
    }
}

/// docs/format.md, "Packs": the runs tile `[8, blobs_end)` exactly, in order, each at least
/// `OVERHEAD` bytes long.
fn obeys_rules(runs: &[Run], blobs_end: u64) -> Result<(), String> {
    if blobs_end < PACK_HEADER_LEN as u64 {
        return Err(format!("blob area ends at {blobs_end}, inside the header"));
    }
    let mut next = PACK_HEADER_LEN as u64;
    for r in runs {
        let (start, len) = (u64::from(r.offset), u64::from(r.length));
        if start != next {
            return Err(format!("run at {start}, expected at {next}"));
        }
        if len < OVERHEAD as u64 {
            return Err(format!(
                "run at {start} is {len} bytes, shorter than {OVERHEAD}"
            ));
        }
        next = start + len;
        if next > blobs_end {
            return Err(format!("run at {start} ends at {next}, past {blobs_end}"));
        }
    }
    if next != blobs_end {
        return Err(format!("runs end at {next}, the blob area at {blobs_end}"));
    }
    Ok(())
}
