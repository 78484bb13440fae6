//! Packs: immutable files of sealed block runs with a sealed trailer that lists them.
//!
//! ```text
//! "PGFP" | version u8 = 2 | 3 zero bytes            8-byte header
//! sealed run | sealed run | ...                      each kind=block run, AD name empty
//! sealed trailer                                     kind=pack trailer, AD name empty
//! trailer length u32 LE | "PGFE"                     8-byte footer
//! ```
//!
//! A run is one or more blocks compressed and sealed together (a writer puts neighbouring new
//! blocks of one file in a run). The trailer makes a pack self-describing, so the index can be
//! rebuilt from packs alone (and a pack uploaded by a process killed before it wrote its index
//! segment is not lost). A pack's name is the BLAKE3 hash of its bytes.

use super::crypto::{Keys, Kind, MAX_OBJECT_PLAINTEXT, Opener, Sealer};
use super::index::{Run, RunBlock};

pub const PACK_MAGIC: [u8; 4] = *b"PGFP";
pub const FOOTER_MAGIC: [u8; 4] = *b"PGFE";
pub const PACK_VERSION: u8 = 2;
pub const PACK_HEADER_LEN: usize = 8;
pub const FOOTER_LEN: usize = 8;

/// Accumulates sealed runs into one pack in memory.
pub struct PackBuilder {
    buf: Vec<u8>,
    runs: Vec<Run>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    pub fn new() -> PackBuilder {
        let mut buf = Vec::new();
        buf.extend_from_slice(&PACK_MAGIC);
        buf.extend_from_slice(&[PACK_VERSION, 0, 0, 0]);
        PackBuilder {
            buf,
            runs: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn reserve(&mut self, n: usize) {
        self.buf.reserve(n);
    }

    /// Seals `data`, the plaintexts of `blocks` back to back, as one run straight into the pack
    /// buffer; returns the sealed length.
    pub fn add_run(
        &mut self,
        sealer: &mut Sealer,
        keys: &Keys,
        blocks: Vec<RunBlock>,
        data: &[u8],
    ) -> usize {
        debug_assert!(!blocks.is_empty());
        debug_assert_eq!(
            blocks.iter().map(|b| b.raw_length as usize).sum::<usize>(),
            data.len()
        );
        let offset = self.buf.len();
        sealer.seal_into(keys, Kind::Run, b"", data, &mut self.buf);
        let length = self.buf.len() - offset;
        self.runs.push(Run {
            offset: offset as u32,
            length: length as u32,
            blocks,
        });
        length
    }

    /// Writes trailer and footer; returns (pack bytes, pack id, runs).
    pub fn finish(mut self, sealer: &mut Sealer, keys: &Keys) -> (Vec<u8>, [u8; 32], Vec<Run>) {
        let mut trailer = Vec::with_capacity(super::index::encoded_runs_len(&self.runs));
        super::index::encode_runs(&self.runs, &mut trailer);
        let start = self.buf.len();
        sealer.seal_into(keys, Kind::PackTrailer, b"", &trailer, &mut self.buf);
        let tlen = (self.buf.len() - start) as u32;
        self.buf.extend_from_slice(&tlen.to_le_bytes());
        self.buf.extend_from_slice(&FOOTER_MAGIC);
        let id = *blake3::hash(&self.buf).as_bytes();
        (self.buf, id, self.runs)
    }
}

/// Parses a trailer's plaintext: a run list whose runs tile the blob area `[8, blobs_end)`
/// exactly, in order, each at least a sealed object long. A pack holds nothing its trailer does
/// not list.
pub fn decode_trailer(b: &[u8], blobs_end: u64) -> Result<Vec<Run>, String> {
    let mut r = super::index::Reader::new(b);
    let runs = super::index::decode_runs(&mut r)?;
    if r.remaining() != 0 {
        return Err(format!("{} bytes after the run list", r.remaining()));
    }
    check_runs(&runs, blobs_end)?;
    Ok(runs)
}

/// Checks that `runs` tile the blob area `[8, blobs_end)` of a pack exactly.
pub fn check_runs(runs: &[Run], blobs_end: u64) -> Result<(), String> {
    if blobs_end < PACK_HEADER_LEN as u64 {
        return Err(format!(
            "the blob area ends at {blobs_end}, inside the pack header"
        ));
    }
    let mut prev_end = PACK_HEADER_LEN as u64;
    for run in runs {
        let (start, end) = (run.offset as u64, run.offset as u64 + run.length as u64);
        if start != prev_end || end > blobs_end || (run.length as usize) < super::crypto::OVERHEAD {
            return Err(format!(
                "run at offset {} length {} is out of place",
                run.offset, run.length
            ));
        }
        prev_end = end;
    }
    if prev_end != blobs_end {
        return Err(format!(
            "{} bytes between the last run and the trailer are unlisted",
            blobs_end - prev_end
        ));
    }
    Ok(())
}

/// Splits a whole pack into its runs, checking header, footer and trailer.
pub fn parse_pack(keys: &Keys, opener: &mut Opener, pack: &[u8]) -> Result<Vec<Run>, String> {
    if pack.len() < PACK_HEADER_LEN + FOOTER_LEN {
        return Err(format!("truncated: {} bytes", pack.len()));
    }
    check_header(&pack[..PACK_HEADER_LEN])?;
    let (tlen, body_end) = parse_footer(&pack[pack.len() - FOOTER_LEN..], pack.len() as u64)?;
    let trailer = &pack[body_end as usize..body_end as usize + tlen as usize];
    let plain = opener
        .open(keys, Kind::PackTrailer, b"", trailer, MAX_OBJECT_PLAINTEXT)
        .map_err(|e| format!("trailer: {e}"))?;
    decode_trailer(&plain, body_end)
}

/// Checks a pack's 8-byte header.
pub fn check_header(h: &[u8]) -> Result<(), String> {
    if h.len() < PACK_HEADER_LEN || h[0..4] != PACK_MAGIC {
        return Err("not a pgfrost pack (bad magic)".into());
    }
    if h[4] != PACK_VERSION || h[5..8] != [0, 0, 0] {
        return Err(format!(
            "pack version {} is not supported (this pgfrost reads version {PACK_VERSION})",
            h[4]
        ));
    }
    Ok(())
}

/// Reads the footer of a pack of `pack_len` bytes: (trailer length, offset where the trailer starts).
pub fn parse_footer(footer: &[u8], pack_len: u64) -> Result<(u32, u64), String> {
    if footer.len() != FOOTER_LEN || footer[4..8] != FOOTER_MAGIC {
        return Err("bad footer (truncated pack?)".into());
    }
    let tlen = u32::from_le_bytes(footer[0..4].try_into().unwrap());
    let start = pack_len
        .checked_sub(FOOTER_LEN as u64 + tlen as u64)
        .filter(|s| *s >= PACK_HEADER_LEN as u64)
        .ok_or_else(|| format!("footer claims a {tlen}-byte trailer in a {pack_len}-byte pack"))?;
    Ok((tlen, start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::crypto::MasterKey;

    #[test]
    fn build_and_parse() {
        let keys = Keys::new(&MasterKey::from_bytes([3; 32]));
        let mut s = Sealer::new(Some(3));
        let mut o = Opener::new();
        let mut p = PackBuilder::new();
        let blocks: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 8192]).collect();
        // Runs of 1, 2, 3 and 4 blocks.
        let mut at = 0;
        for n in 1..=4 {
            let run = &blocks[at..at + n];
            let ids = run
                .iter()
                .map(|b| RunBlock {
                    id: keys.block_id(b),
                    raw_length: b.len() as u32,
                })
                .collect();
            p.add_run(&mut s, &keys, ids, &run.concat());
            at += n;
        }
        let (bytes, id, runs) = p.finish(&mut s, &keys);
        assert_eq!(id, *blake3::hash(&bytes).as_bytes());
        let parsed = parse_pack(&keys, &mut o, &bytes).unwrap();
        assert_eq!(parsed, runs);
        assert_eq!(parsed.len(), 4);
        let mut next = blocks.iter();
        for r in &parsed {
            let blob = &bytes[r.offset as usize..(r.offset + r.length) as usize];
            let plain = o
                .open_exact(&keys, Kind::Run, b"", blob, r.raw_length() as usize)
                .unwrap();
            for (b, chunk) in r.blocks.iter().zip(plain.chunks(8192)) {
                assert_eq!(chunk, next.next().unwrap().as_slice());
                assert_eq!(keys.block_id(chunk), b.id);
            }
        }
        assert!(parse_pack(&keys, &mut o, &bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 12] ^= 1;
        assert!(parse_pack(&keys, &mut o, &bad).is_err());
        let mut v1 = bytes.clone();
        v1[4] = 1;
        assert!(
            parse_pack(&keys, &mut o, &v1)
                .unwrap_err()
                .contains("version 1")
        );
    }
}
