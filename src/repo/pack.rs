//! Packs: immutable files of sealed blocks with a sealed trailer that lists them.
//!
//! ```text
//! "PGFP" | version u8 = 1 | 3 zero bytes            8-byte header
//! sealed block | sealed block | ...                  each kind=block, AD name = block id
//! sealed trailer                                     kind=pack trailer, AD name empty
//! trailer length u32 LE | "PGFE"                     8-byte footer
//! ```
//!
//! The trailer makes a pack self-describing, so the index can be rebuilt from packs alone (and a
//! pack uploaded by a process killed before it wrote its index segment is not lost). A pack's name
//! is the BLAKE3 hash of its bytes.

use super::crypto::{Keys, Kind, MAX_OBJECT_PLAINTEXT, Opener, Sealer};
use super::index::Entry;

pub const PACK_MAGIC: [u8; 4] = *b"PGFP";
pub const FOOTER_MAGIC: [u8; 4] = *b"PGFE";
pub const PACK_VERSION: u8 = 1;
pub const PACK_HEADER_LEN: usize = 8;
pub const FOOTER_LEN: usize = 8;
/// block id, offset, sealed length, plaintext length.
pub const ENTRY_LEN: usize = 32 + 4 + 4 + 4;

/// Accumulates sealed blocks into one pack in memory.
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<Entry>,
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
            entries: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn reserve(&mut self, n: usize) {
        self.buf.reserve(n);
    }

    /// Seals `data` as block `id` straight into the pack buffer.
    pub fn add(&mut self, sealer: &mut Sealer, keys: &Keys, id: [u8; 32], data: &[u8]) {
        let offset = self.buf.len();
        sealer.seal_into(keys, Kind::Block, &id, data, &mut self.buf);
        self.entries.push(Entry {
            id,
            offset: offset as u32,
            length: (self.buf.len() - offset) as u32,
            raw_length: data.len() as u32,
        });
    }

    /// Appends an already sealed block (sealed elsewhere, e.g. on a worker thread).
    pub fn add_sealed(&mut self, id: [u8; 32], sealed: &[u8], raw_length: u32) {
        let offset = self.buf.len();
        self.buf.extend_from_slice(sealed);
        self.entries.push(Entry {
            id,
            offset: offset as u32,
            length: sealed.len() as u32,
            raw_length,
        });
    }

    /// Writes trailer and footer; returns (pack bytes, pack id, entries).
    pub fn finish(mut self, sealer: &mut Sealer, keys: &Keys) -> (Vec<u8>, [u8; 32], Vec<Entry>) {
        let trailer = encode_entries(&self.entries);
        let start = self.buf.len();
        sealer.seal_into(keys, Kind::PackTrailer, b"", &trailer, &mut self.buf);
        let tlen = (self.buf.len() - start) as u32;
        self.buf.extend_from_slice(&tlen.to_le_bytes());
        self.buf.extend_from_slice(&FOOTER_MAGIC);
        let id = *blake3::hash(&self.buf).as_bytes();
        (self.buf, id, self.entries)
    }
}

/// count u32 LE, then count × (id[32] | offset u32 | length u32 | raw_length u32), all LE.
pub fn encode_entries(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + entries.len() * ENTRY_LEN);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        e.encode(&mut out);
    }
    out
}

/// Parses a trailer's plaintext. The entries must tile the blob area `[8, blobs_end)` exactly,
/// in order, each at least a sealed object long: a pack holds nothing its trailer does not list.
pub fn decode_entries(b: &[u8], blobs_end: u64) -> Result<Vec<Entry>, String> {
    if blobs_end < PACK_HEADER_LEN as u64 {
        return Err(format!(
            "the blob area ends at {blobs_end}, inside the pack header"
        ));
    }
    let mut r = super::index::Reader::new(b);
    let n = r.u32()? as usize;
    if n.checked_mul(ENTRY_LEN)
        .is_none_or(|need| need != r.remaining())
    {
        return Err(format!(
            "trailer lists {n} entries but holds {} bytes of them",
            r.remaining()
        ));
    }
    let mut out = Vec::with_capacity(n);
    let mut prev_end = PACK_HEADER_LEN as u64;
    for _ in 0..n {
        let e = Entry::decode(&mut r)?;
        let (start, end) = (e.offset as u64, e.offset as u64 + e.length as u64);
        if start != prev_end || end > blobs_end || (e.length as usize) < super::crypto::OVERHEAD {
            return Err(format!(
                "entry at offset {} length {} is out of place",
                e.offset, e.length
            ));
        }
        prev_end = end;
        out.push(e);
    }
    if prev_end != blobs_end {
        return Err(format!(
            "{} bytes between the last block and the trailer are unlisted",
            blobs_end - prev_end
        ));
    }
    Ok(out)
}

/// Splits a whole pack into its trailer entries, checking header, footer and trailer.
pub fn parse_pack(keys: &Keys, opener: &mut Opener, pack: &[u8]) -> Result<Vec<Entry>, String> {
    if pack.len() < PACK_HEADER_LEN + FOOTER_LEN {
        return Err(format!("truncated: {} bytes", pack.len()));
    }
    if pack[0..4] != PACK_MAGIC {
        return Err("not a pgfrost pack (bad magic)".into());
    }
    if pack[4] != PACK_VERSION || pack[5..8] != [0, 0, 0] {
        return Err(format!("pack version {} is not supported", pack[4]));
    }
    let (tlen, body_end) = parse_footer(&pack[pack.len() - FOOTER_LEN..], pack.len() as u64)?;
    let trailer = &pack[body_end as usize..body_end as usize + tlen as usize];
    let plain = opener
        .open(keys, Kind::PackTrailer, b"", trailer, MAX_OBJECT_PLAINTEXT)
        .map_err(|e| format!("trailer: {e}"))?;
    decode_entries(&plain, body_end)
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
        for b in &blocks {
            p.add(&mut s, &keys, keys.block_id(b), b);
        }
        let (bytes, id, entries) = p.finish(&mut s, &keys);
        assert_eq!(id, *blake3::hash(&bytes).as_bytes());
        let parsed = parse_pack(&keys, &mut o, &bytes).unwrap();
        assert_eq!(parsed, entries);
        for (e, b) in parsed.iter().zip(&blocks) {
            let blob = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(
                &o.open_exact(&keys, Kind::Block, &e.id, blob, e.raw_length as usize)
                    .unwrap(),
                b
            );
        }
        assert!(parse_pack(&keys, &mut o, &bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 12] ^= 1;
        assert!(parse_pack(&keys, &mut o, &bad).is_err());
    }
}
