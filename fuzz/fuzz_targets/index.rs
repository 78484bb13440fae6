//! `index`: index segments, as plaintext (`decode_segment`) and sealed (open, then decode).
//!
//! Input layout, byte 0 = mode (value % 3):
//! ```text
//! 0  rest = segment plaintext           -> decode_segment; what parses must re-encode to the input
//! 1  rest = a sealed segment            -> Opener::open(Kind::Index, MAX_OBJECT_PLAINTEXT) -> decode_segment
//! 2  byte 1 compression byte, rest = payload; the target seals it with the fixture keys, so it
//!    is authentic                       -> Opener::open(Kind::Index, 16 MiB) -> decode_segment
//! ```
//! decode_segment must not allocate more than its input justifies (a count is a claim, not an
//! allocation request). What parses must re-encode to its bytes; each pack's run list must
//! re-encode and decode on its own (it is the same bytes as the pack's trailer), every run must
//! hold at least one block and less than 4 GiB of plaintext (the reader's u32 arithmetic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgfrost::repo::crypto::{self, Kind, MAX_OBJECT_PLAINTEXT, Opener};
use pgfrost::repo::index::{self, PackEntries, Reader, Run, RunBlock};
use pgfrost_fuzz::{self as fx, Cursor};

#[global_allocator]
static ALLOC: fx::PeakAlloc = fx::PeakAlloc;

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let keys = fx::keys();
    match c.u8() % 3 {
        0 => decode(c.rest()),
        1 => {
            if let Ok(plain) =
                Opener::new().open(keys, Kind::Index, b"", c.rest(), MAX_OBJECT_PLAINTEXT)
            {
                decode(&plain);
            }
        }
        _ => {
            let compression = c.u8();
            let mut sealed = Vec::new();
            crypto::seal_raw(
                keys,
                Kind::Index,
                b"",
                compression,
                &fx::NONCE,
                c.rest(),
                &mut sealed,
            );
            if let Ok(plain) =
                Opener::new().open(keys, Kind::Index, b"", &sealed, fx::FUZZ_PLAINTEXT_LIMIT)
            {
                decode(&plain);
            }
        }
    }
});

fn decode(plain: &[u8]) {
    fx::reset_largest_alloc();
    let r = index::decode_segment(plain);
    let peak = fx::largest_alloc();
    // Every vector is sized from a count checked against the bytes left, and the largest single
    // allocation is one of them: a PackEntries (56 bytes) per 36 input bytes (pack id and run
    // count), a Run (32) per 48 (run head and one block), a RunBlock (36) per 36. So at most
    // 56/36 of the input; `SIZES` keeps these numbers honest.
    assert_eq!(
        SIZES,
        [56, 32, 36],
        "index structures changed size: recompute the bound"
    );
    assert!(
        peak <= plain.len() / 36 * 56 + fx::ALLOC_SLACK,
        "decode_segment allocated {peak} bytes for {} bytes of input",
        plain.len()
    );
    let Ok(packs) = r else {
        return;
    };
    assert_eq!(
        index::encode_segment(&packs),
        plain,
        "segment did not re-encode to its bytes"
    );
    for p in &packs {
        // A pack's run list is the same bytes as its trailer's: it must stand on its own.
        let mut list = Vec::new();
        index::encode_runs(&p.runs, &mut list);
        assert_eq!(list.len(), index::encoded_runs_len(&p.runs));
        let mut reader = Reader::new(&list);
        assert_eq!(index::decode_runs(&mut reader).as_ref(), Ok(&p.runs));
        assert_eq!(reader.remaining(), 0);
        for run in &p.runs {
            assert!(!run.blocks.is_empty(), "a run of no blocks was accepted");
            // The reader places each block in its run with u32 arithmetic (blockstore::Index):
            // decode_segment refuses runs whose plaintext does not fit.
            let mut raw_offset = 0u32;
            for b in &run.blocks {
                raw_offset = raw_offset
                    .checked_add(b.raw_length)
                    .expect("a block's place in its run overflows u32");
            }
            assert_eq!(u64::from(raw_offset), run.raw_length());
        }
        assert_eq!(p.blocks().count(), p.block_count());
    }
}

const SIZES: [usize; 3] = [
    size_of::<PackEntries>(),
    size_of::<Run>(),
    size_of::<RunBlock>(),
];
