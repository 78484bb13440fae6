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
//! allocation request).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgfrost::repo::crypto::{self, Kind, MAX_OBJECT_PLAINTEXT, Opener};
use pgfrost::repo::index;
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
    // PackEntries is 56 bytes for every 36 input bytes, Entry 44 for 44: at most 2x the input.
    assert!(
        peak <= 2 * plain.len() + fx::ALLOC_SLACK,
        "decode_segment allocated {peak} bytes for {} bytes of input",
        plain.len()
    );
    if let Ok(packs) = r {
        assert_eq!(
            index::encode_segment(&packs),
            plain,
            "segment did not re-encode to its bytes"
        );
    }
}
