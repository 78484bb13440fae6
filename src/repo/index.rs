//! Index segments: immutable sealed objects mapping block ids to their place in packs.
//!
//! Plaintext layout (all integers little-endian):
//! ```text
//! pack count u32
//! per pack: pack id [32] | entry count u32 | entry count × (block id [32] | offset u32 | length u32 | raw_length u32)
//! ```
//! A segment's name is the BLAKE3 hash of its sealed bytes.

use super::pack::ENTRY_LEN;

/// Where one sealed block lies in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub id: [u8; 32],
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

impl Entry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.raw_length.to_le_bytes());
    }
    pub fn decode(r: &mut Reader) -> Result<Entry, String> {
        Ok(Entry {
            id: r.array()?,
            offset: r.u32()?,
            length: r.u32()?,
            raw_length: r.u32()?,
        })
    }
}

/// One pack's worth of index entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackEntries {
    pub pack: [u8; 32],
    pub entries: Vec<Entry>,
}

pub fn encode_segment(packs: &[PackEntries]) -> Vec<u8> {
    let n: usize = packs.iter().map(|p| 36 + p.entries.len() * ENTRY_LEN).sum();
    let mut out = Vec::with_capacity(4 + n);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        out.extend_from_slice(&p.pack);
        out.extend_from_slice(&(p.entries.len() as u32).to_le_bytes());
        for e in &p.entries {
            e.encode(&mut out);
        }
    }
    out
}

pub fn decode_segment(b: &[u8]) -> Result<Vec<PackEntries>, String> {
    let mut r = Reader::new(b);
    let np = r.u32()? as usize;
    // Each pack needs at least 36 bytes: a count beyond that is a lie, not an allocation request.
    if np > r.remaining() / 36 {
        return Err(format!(
            "segment claims {np} packs in {} bytes",
            r.remaining()
        ));
    }
    let mut packs = Vec::with_capacity(np);
    for _ in 0..np {
        let pack = r.array()?;
        let ne = r.u32()? as usize;
        if ne > r.remaining() / ENTRY_LEN {
            return Err(format!(
                "segment claims {ne} entries in {} bytes",
                r.remaining()
            ));
        }
        let mut entries = Vec::with_capacity(ne);
        for _ in 0..ne {
            entries.push(Entry::decode(&mut r)?);
        }
        packs.push(PackEntries { pack, entries });
    }
    if r.remaining() != 0 {
        return Err(format!(
            "{} trailing bytes after the last pack",
            r.remaining()
        ));
    }
    Ok(packs)
}

/// A bounds-checked little-endian reader over untrusted bytes.
pub struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.remaining() < n {
            return Err(format!("truncated at byte {} (wanted {n} more)", self.pos));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_roundtrip_and_garbage() {
        let packs = vec![
            PackEntries {
                pack: [9; 32],
                entries: vec![Entry {
                    id: [1; 32],
                    offset: 8,
                    length: 100,
                    raw_length: 8192,
                }],
            },
            PackEntries {
                pack: [8; 32],
                entries: vec![],
            },
        ];
        let b = encode_segment(&packs);
        assert_eq!(decode_segment(&b).unwrap(), packs);
        for cut in 0..b.len() {
            assert!(decode_segment(&b[..cut]).is_err());
        }
        let mut extra = b.clone();
        extra.push(0);
        assert!(decode_segment(&extra).is_err());
        assert!(decode_segment(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
