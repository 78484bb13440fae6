//! `sealed`: the sealed-object envelope (header check, AEAD open, decompression), on raw bytes.
//!
//! Input layout:
//! ```text
//! byte 0      kind: the n-th of the kinds `Kind::from_u8` knows (value % their count)
//! byte 1      name length n
//! bytes 2..4  plaintext length for open_exact, u16 LE
//! byte 4      limit for open: 0 = MAX_OBJECT_PLAINTEXT, else 1 << (value % 31)
//! n bytes     the name bound into the AD
//! rest        the sealed object
//! ```
//! Keys are the fixture's (master key [7; 32]). Random bytes essentially never authenticate, so
//! past the header this target mostly checks that nothing panics or over-allocates before the tag
//! is checked; the seeds are authentic objects, which `sealed_roundtrip` then goes deeper on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgfrost::repo::crypto::{self, MAX_OBJECT_PLAINTEXT, OVERHEAD, OpenError, Opener};
use pgfrost_fuzz::{self as fx, Cursor};

#[global_allocator]
static ALLOC: fx::PeakAlloc = fx::PeakAlloc;

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let kind = fx::kind(c.u8());
    let name_len = c.u8() as usize;
    let len = c.le(2) as usize;
    let limit = match c.u8() {
        0 => MAX_OBJECT_PLAINTEXT,
        b => 1u64 << (b % 31),
    };
    let name = c.take(name_len);
    let sealed = c.rest();
    let keys = fx::keys();

    let header = crypto::check_header(sealed, kind);
    if sealed.len() < OVERHEAD {
        assert_eq!(header, Err(OpenError::Truncated(sealed.len())));
    }
    let raw = crypto::open_raw(keys, kind, name, sealed);
    match (&header, &raw) {
        (Err(h), Err(r)) => assert_eq!(h, r, "open_raw and check_header disagree"),
        (Err(h), Ok(_)) => panic!("open_raw accepted what check_header refused: {h}"),
        (Ok(c), Ok((rc, payload))) => {
            assert_eq!(c, rc);
            assert_eq!(payload.len() + OVERHEAD, sealed.len());
        }
        (Ok(_), Err(r)) => assert_eq!(*r, OpenError::AuthFailed),
    }

    let mut opener = Opener::new();
    fx::reset_largest_alloc();
    let opened = opener.open(keys, kind, name, sealed, limit);
    let peak = fx::largest_alloc();
    if let Ok(p) = &opened {
        assert!(raw.is_ok());
        assert!(p.len() as u64 <= limit || header == Ok(crypto::COMPRESSION_NONE));
    }
    assert!(
        peak <= sealed.len().max(limit as usize) + fx::ALLOC_SLACK,
        "open allocated {peak} bytes for a {}-byte object with limit {limit}",
        sealed.len()
    );

    fx::reset_largest_alloc();
    let exact = opener.open_exact(keys, kind, name, sealed, len);
    let peak = fx::largest_alloc();
    if let Ok(p) = &exact {
        assert_eq!(p.len(), len);
        if let Ok(q) = &opened {
            assert_eq!(p, q, "open and open_exact decoded differently");
        }
    }
    assert!(
        peak <= sealed.len().max(len) + fx::ALLOC_SLACK,
        "open_exact allocated {peak} bytes for a {}-byte object of length {len}",
        sealed.len()
    );
});
