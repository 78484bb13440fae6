//! PostgreSQL data pages: checksum verification while a backup reads them.
//!
//! The algorithm is PostgreSQL's (src/include/storage/checksum_impl.h): 32 parallel FNV-1a-like
//! lanes over the page read as u32 words with pd_checksum zeroed, two extra rounds of zeros, the
//! lanes XOR-folded, XORed with the block number, then `% 65535 + 1` so it is never 0.

pub const BLCKSZ: usize = 8192;
/// Blocks per relation segment file (1 GiB / 8 KiB): block numbers continue across `.1`, `.2`...
pub const RELSEG_BLOCKS: u32 = 131072;
const N_SUMS: usize = 32;
const FNV_PRIME: u32 = 16777619;
const PD_CHECKSUM_OFFSET: usize = 8;

const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

#[inline(always)]
fn comp(sum: &mut u32, value: u32) {
    let tmp = *sum ^ value;
    *sum = tmp.wrapping_mul(FNV_PRIME) ^ (tmp >> 17);
}

/// The checksum PostgreSQL stores in pd_checksum for `page` as block `blkno`.
pub fn checksum(page: &[u8], blkno: u32) -> u16 {
    assert_eq!(page.len(), BLCKSZ);
    let mut sums = BASE_OFFSETS;
    for (i, chunk) in page.chunks_exact(4 * N_SUMS).enumerate() {
        for (j, w) in chunk.chunks_exact(4).enumerate() {
            let mut v = u32::from_le_bytes(w.try_into().unwrap());
            // pd_checksum (bytes 8..10) counts as zero: it is word 2 of row 0, low half.
            if i == 0 && j == PD_CHECKSUM_OFFSET / 4 {
                v &= 0xFFFF_0000;
            }
            comp(&mut sums[j], v);
        }
    }
    for _ in 0..2 {
        for s in sums.iter_mut() {
            comp(s, 0);
        }
    }
    let folded = sums.iter().fold(0u32, |a, s| a ^ s) ^ blkno;
    ((folded % 65535) + 1) as u16
}

/// pd_lsn: the LSN of the last WAL record that changed the page.
pub fn page_lsn(page: &[u8]) -> u64 {
    let hi = u32::from_le_bytes(page[0..4].try_into().unwrap()) as u64;
    let lo = u32::from_le_bytes(page[4..8].try_into().unwrap()) as u64;
    (hi << 32) | lo
}

pub fn stored_checksum(page: &[u8]) -> u16 {
    u16::from_le_bytes(
        page[PD_CHECKSUM_OFFSET..PD_CHECKSUM_OFFSET + 2]
            .try_into()
            .unwrap(),
    )
}

/// What verifying one page found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageCheck {
    Ok,
    /// An all-zero page: PostgreSQL extends relations with these; nothing to verify.
    New,
    /// Changed after the backup started (pd_lsn at or past the start LSN): it may be torn, and WAL
    /// replay rewrites it from a full-page image, so its checksum proves nothing either way.
    ChangedDuringBackup,
    Bad {
        expected: u16,
        found: u16,
    },
}

/// Verifies a page read during a backup that started at `start_lsn`.
pub fn verify(page: &[u8], blkno: u32, start_lsn: u64) -> PageCheck {
    if page.len() != BLCKSZ {
        return PageCheck::Ok;
    }
    // pd_upper == 0 marks a new page; PostgreSQL accepts it only if it is all zeros.
    let pd_upper = u16::from_le_bytes(page[14..16].try_into().unwrap());
    if pd_upper == 0 && page.iter().all(|&b| b == 0) {
        return PageCheck::New;
    }
    if page_lsn(page) >= start_lsn {
        return PageCheck::ChangedDuringBackup;
    }
    let found = stored_checksum(page);
    let expected = checksum(page, blkno);
    if found == expected {
        PageCheck::Ok
    } else {
        PageCheck::Bad { expected, found }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page as PostgreSQL writes it: header with lsn, lower/upper/special, version 4, and the
    /// checksum set with PostgreSQL's own algorithm.
    pub fn fake_page(blkno: u32, lsn: u64, fill: u8) -> Vec<u8> {
        let mut p = vec![0u8; BLCKSZ];
        p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
        p[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
        p[12..14].copy_from_slice(&28u16.to_le_bytes());
        p[14..16].copy_from_slice(&8000u16.to_le_bytes());
        p[16..18].copy_from_slice(&8192u16.to_le_bytes());
        p[18..20].copy_from_slice(&(8192u16 | 4).to_le_bytes());
        for (i, b) in p[8000..].iter_mut().enumerate() {
            *b = fill.wrapping_add(i as u8);
        }
        let c = checksum(&p, blkno);
        p[8..10].copy_from_slice(&c.to_le_bytes());
        p
    }

    #[test]
    fn checksum_is_stable_and_position_dependent() {
        let p = fake_page(7, 0x1_0000_0000, 3);
        assert_eq!(verify(&p, 7, u64::MAX), PageCheck::Ok);
        assert!(
            matches!(verify(&p, 8, u64::MAX), PageCheck::Bad { .. }),
            "block number must matter"
        );
        let mut q = p.clone();
        q[5000] ^= 1;
        assert!(matches!(verify(&q, 7, u64::MAX), PageCheck::Bad { .. }));
        // Changed after the start of the backup: not judged.
        assert_eq!(verify(&q, 7, 0x1_0000_0000), PageCheck::ChangedDuringBackup);
        assert_eq!(verify(&vec![0u8; BLCKSZ], 3, 0), PageCheck::New);
        // The checksum field itself does not feed the checksum.
        let mut r = p.clone();
        r[8] ^= 0xff;
        assert_eq!(checksum(&r, 7), checksum(&p, 7));
        assert_ne!(checksum(&p, 7), 0);
    }
}
