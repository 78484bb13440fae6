//! Index segments: immutable sealed objects mapping block ids to their place in packs.
//!
//! Plaintext layout (all integers little-endian):
//! ```text
//! pack count u32
//! per pack: pack id [32] | run list
//! run list: run count u32 | per run: offset u32 | length u32 | block count u32
//!                                    | block count × (block id [32] | raw_length u32)
//! ```
//! A pack's trailer holds the same run list. A segment's name is the BLAKE3 hash of its sealed
//! bytes.

/// Bytes a run takes in a run list before its blocks: offset, length, block count.
pub const RUN_HEAD_LEN: usize = 12;
/// Bytes each block takes in a run list: id, raw length.
pub const RUN_BLOCK_LEN: usize = 36;

/// One block of a run: its id and plaintext length. Its place in the run's plaintext is the sum
/// of the lengths of the blocks before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunBlock {
    pub id: [u8; 32],
    pub raw_length: u32,
}

/// One sealed run in a pack: neighbouring blocks compressed and sealed together, so that zstd
/// builds its tables once per run rather than once per 8 KiB page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub offset: u32,
    pub length: u32,
    pub blocks: Vec<RunBlock>,
}

impl Run {
    /// Length of the run's plaintext: its blocks back to back.
    pub fn raw_length(&self) -> u64 {
        self.blocks.iter().map(|b| b.raw_length as u64).sum()
    }

    /// Each block with where it starts in the run's plaintext.
    pub fn placed(&self) -> impl Iterator<Item = (u32, &RunBlock)> {
        self.blocks.iter().scan(0u32, |at, b| {
            let start = *at;
            *at += b.raw_length;
            Some((start, b))
        })
    }
}

/// One pack's worth of index entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackEntries {
    pub pack: [u8; 32],
    pub runs: Vec<Run>,
}

impl PackEntries {
    pub fn block_count(&self) -> usize {
        self.runs.iter().map(|r| r.blocks.len()).sum()
    }
    /// Every block with the run that holds it.
    pub fn blocks(&self) -> impl Iterator<Item = (&Run, &RunBlock)> {
        self.runs
            .iter()
            .flat_map(|r| r.blocks.iter().map(move |b| (r, b)))
    }
}

pub fn encoded_runs_len(runs: &[Run]) -> usize {
    4 + runs
        .iter()
        .map(|r| RUN_HEAD_LEN + r.blocks.len() * RUN_BLOCK_LEN)
        .sum::<usize>()
}

pub fn encode_runs(runs: &[Run], out: &mut Vec<u8>) {
    out.extend_from_slice(&(runs.len() as u32).to_le_bytes());
    for r in runs {
        out.extend_from_slice(&r.offset.to_le_bytes());
        out.extend_from_slice(&r.length.to_le_bytes());
        out.extend_from_slice(&(r.blocks.len() as u32).to_le_bytes());
        for b in &r.blocks {
            out.extend_from_slice(&b.id);
            out.extend_from_slice(&b.raw_length.to_le_bytes());
        }
    }
}

/// Parses a run list. Only the encoding is checked here; where the runs lie in their pack is
/// checked by [`super::pack::check_runs`].
pub fn decode_runs(r: &mut Reader) -> Result<Vec<Run>, String> {
    let n = r.u32()? as usize;
    // Each run needs at least 48 bytes: a count beyond that is a lie, not an allocation request.
    if n > r.remaining() / (RUN_HEAD_LEN + RUN_BLOCK_LEN) {
        return Err(format!("claims {n} runs in {} bytes", r.remaining()));
    }
    let mut runs = Vec::with_capacity(n);
    for _ in 0..n {
        let (offset, length, nb) = (r.u32()?, r.u32()?, r.u32()? as usize);
        if nb == 0 {
            return Err(format!("the run at offset {offset} holds no block"));
        }
        if nb > r.remaining() / RUN_BLOCK_LEN {
            return Err(format!(
                "the run at offset {offset} claims {nb} blocks in {} bytes",
                r.remaining()
            ));
        }
        let mut blocks = Vec::with_capacity(nb);
        for _ in 0..nb {
            blocks.push(RunBlock {
                id: r.array()?,
                raw_length: r.u32()?,
            });
        }
        let run = Run {
            offset,
            length,
            blocks,
        };
        if run.raw_length() > u32::MAX as u64 {
            return Err(format!(
                "the run at offset {offset} holds {} bytes of plaintext (at most 4 GiB - 1)",
                run.raw_length()
            ));
        }
        runs.push(run);
    }
    Ok(runs)
}

pub fn encode_segment(packs: &[PackEntries]) -> Vec<u8> {
    let n: usize = packs.iter().map(|p| 32 + encoded_runs_len(&p.runs)).sum();
    let mut out = Vec::with_capacity(4 + n);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        out.extend_from_slice(&p.pack);
        encode_runs(&p.runs, &mut out);
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
        let runs = decode_runs(&mut r).map_err(|e| format!("pack {}: {e}", hex::encode(pack)))?;
        packs.push(PackEntries { pack, runs });
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
                runs: vec![Run {
                    offset: 8,
                    length: 100,
                    blocks: vec![
                        RunBlock {
                            id: [1; 32],
                            raw_length: 8192,
                        },
                        RunBlock {
                            id: [2; 32],
                            raw_length: 100,
                        },
                    ],
                }],
            },
            PackEntries {
                pack: [8; 32],
                runs: vec![],
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
        // A run of no blocks is refused.
        let mut empty_run = 1u32.to_le_bytes().to_vec();
        empty_run.extend_from_slice(&[7; 32]);
        empty_run.extend_from_slice(&1u32.to_le_bytes());
        empty_run.extend_from_slice(&[8, 0, 0, 0, 48, 0, 0, 0, 0, 0, 0, 0]);
        empty_run.extend_from_slice(&[0; 36]);
        assert!(decode_segment(&empty_run).unwrap_err().contains("no block"));
    }
}
