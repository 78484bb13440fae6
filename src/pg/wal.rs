//! WAL file names and segment headers: pure functions over names and bytes.
//!
//! PostgreSQL hands archive_command four kinds of files: segments (`TTTTTTTTLLLLLLLLSSSSSSSS`),
//! partial segments left at a timeline switch (`<segment>.partial`), timeline history files
//! (`TTTTTTTT.history`) and backup history files (`<segment>.XXXXXXXX.backup`).

use std::fmt;

/// What a WAL file name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalFile {
    Segment {
        tli: u32,
        log: u32,
        seg: u32,
    },
    Partial {
        tli: u32,
        log: u32,
        seg: u32,
    },
    History {
        tli: u32,
    },
    Backup {
        tli: u32,
        log: u32,
        seg: u32,
        offset: u32,
    },
}

fn hex8(s: &str) -> Option<u32> {
    if s.len() == 8
        && s.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
    {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

fn parse_segment(s: &str) -> Option<(u32, u32, u32)> {
    if s.len() != 24 {
        return None;
    }
    Some((hex8(&s[0..8])?, hex8(&s[8..16])?, hex8(&s[16..24])?))
}

impl WalFile {
    /// Parses a bare file name (no directory).
    pub fn parse(name: &str) -> Option<WalFile> {
        if let Some((tli, log, seg)) = parse_segment(name) {
            return Some(WalFile::Segment { tli, log, seg });
        }
        if let Some(base) = name.strip_suffix(".partial") {
            let (tli, log, seg) = parse_segment(base)?;
            return Some(WalFile::Partial { tli, log, seg });
        }
        if let Some(t) = name.strip_suffix(".history") {
            return Some(WalFile::History { tli: hex8(t)? });
        }
        if let Some(base) = name.strip_suffix(".backup") {
            let (segname, off) = base.split_once('.')?;
            let (tli, log, seg) = parse_segment(segname)?;
            return Some(WalFile::Backup {
                tli,
                log,
                seg,
                offset: hex8(off)?,
            });
        }
        None
    }

    pub fn tli(&self) -> u32 {
        match *self {
            WalFile::Segment { tli, .. }
            | WalFile::Partial { tli, .. }
            | WalFile::History { tli }
            | WalFile::Backup { tli, .. } => tli,
        }
    }

    /// The 16-character timeline+log directory that segment-like files are filed under; history
    /// files have none.
    pub fn directory(&self) -> Option<String> {
        match *self {
            WalFile::Segment { tli, log, .. }
            | WalFile::Partial { tli, log, .. }
            | WalFile::Backup { tli, log, .. } => Some(format!("{tli:08X}{log:08X}")),
            WalFile::History { .. } => None,
        }
    }

    /// Segments and partial segments carry page headers that can be checked; the others are text.
    pub fn has_pages(&self) -> bool {
        matches!(self, WalFile::Segment { .. } | WalFile::Partial { .. })
    }

    /// The segment number (LSN / segment size) of a segment-like file.
    pub fn segno(&self, seg_size: u64) -> Option<u64> {
        match *self {
            WalFile::Segment { log, seg, .. }
            | WalFile::Partial { log, seg, .. }
            | WalFile::Backup { log, seg, .. } => {
                Some(log as u64 * segments_per_log(seg_size) + seg as u64)
            }
            WalFile::History { .. } => None,
        }
    }
}

impl fmt::Display for WalFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WalFile::Segment { tli, log, seg } => write!(f, "{tli:08X}{log:08X}{seg:08X}"),
            WalFile::Partial { tli, log, seg } => write!(f, "{tli:08X}{log:08X}{seg:08X}.partial"),
            WalFile::History { tli } => write!(f, "{tli:08X}.history"),
            WalFile::Backup {
                tli,
                log,
                seg,
                offset,
            } => write!(f, "{tli:08X}{log:08X}{seg:08X}.{offset:08X}.backup"),
        }
    }
}

pub fn segments_per_log(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size
}

/// The segment file name holding segment number `segno` on timeline `tli`.
pub fn segment_name(tli: u32, segno: u64, seg_size: u64) -> String {
    let per = segments_per_log(seg_size);
    format!("{tli:08X}{:08X}{:08X}", segno / per, segno % per)
}

/// Parses an LSN written as PostgreSQL does (`16/B374D848`).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// XLOG_PAGE_MAGIC of each supported major version (src/include/access/xlog_internal.h).
pub fn page_magic(major: u32) -> Option<u16> {
    Some(match major {
        13 => 0xD106,
        14 => 0xD10D,
        15 => 0xD110,
        16 => 0xD113,
        17 => 0xD116,
        18 => 0xD118,
        _ => return None,
    })
}

const XLP_LONG_HEADER: u16 = 0x0002;
/// XLogLongPageHeaderData: magic u16, info u16, tli u32, pageaddr u64, rem_len u32 (+4 padding),
/// sysid u64, seg_size u32, xlog_blcksz u32.
pub const LONG_HEADER_LEN: usize = 40;

/// The fields of a segment's first (long) page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongHeader {
    pub magic: u16,
    pub info: u16,
    pub tli: u32,
    pub pageaddr: u64,
    pub sysid: u64,
    pub seg_size: u32,
    pub blcksz: u32,
}

pub fn long_header(b: &[u8]) -> Option<LongHeader> {
    if b.len() < LONG_HEADER_LEN {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    Some(LongHeader {
        magic: u16_at(0),
        info: u16_at(2),
        tli: u32_at(4),
        pageaddr: u64_at(8),
        sysid: u64_at(24),
        seg_size: u32_at(32),
        blcksz: u32_at(36),
    })
}

/// Why a segment does not belong where it is being put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentProblem {
    TooShort(usize),
    NotWal { magic: u16 },
    OtherVersion { magic: u16, expected: u16 },
    NoLongHeader,
    OtherCluster { found: u64, expected: u64 },
    OtherSegSize { found: u32, expected: u64 },
    WrongAddress { found: u64, expected: u64 },
    WrongLength { found: usize, expected: u64 },
}

impl fmt::Display for SegmentProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SegmentProblem::TooShort(n) => {
                write!(f, "it is {n} bytes long, too short for a WAL page header")
            }
            SegmentProblem::NotWal { magic } => write!(
                f,
                "it does not start with a WAL page header (magic {magic:#06x})"
            ),
            SegmentProblem::OtherVersion { magic, expected } => write!(
                f,
                "its page magic {magic:#06x} is that of another PostgreSQL major version (expected {expected:#06x})"
            ),
            SegmentProblem::NoLongHeader => write!(
                f,
                "its first page lacks the long header a segment starts with"
            ),
            SegmentProblem::OtherCluster { found, expected } => write!(
                f,
                "it was written by the cluster with system identifier {found}, but the stanza belongs to system identifier {expected}"
            ),
            SegmentProblem::OtherSegSize { found, expected } => {
                write!(
                    f,
                    "its segment size is {found} bytes, the stanza's is {expected}"
                )
            }
            SegmentProblem::WrongAddress { found, expected } => write!(
                f,
                "its first page is at LSN {} but its name says {} (renamed or copied file?)",
                format_lsn(*found),
                format_lsn(*expected)
            ),
            SegmentProblem::WrongLength { found, expected } => {
                write!(f, "it is {found} bytes long, a segment is {expected}")
            }
        }
    }
}

/// Checks a segment (or partial segment) against the cluster it is claimed to come from.
pub fn check_segment(
    file: &WalFile,
    bytes: &[u8],
    major: u32,
    sysid: u64,
    seg_size: u64,
) -> Result<(), SegmentProblem> {
    let h = long_header(bytes).ok_or(SegmentProblem::TooShort(bytes.len()))?;
    if let Some(expected) = page_magic(major)
        && h.magic != expected
    {
        // Any known magic means WAL of another version; anything else is not WAL at all.
        let known = (13..=18).filter_map(page_magic).any(|m| m == h.magic);
        return Err(if known {
            SegmentProblem::OtherVersion {
                magic: h.magic,
                expected,
            }
        } else {
            SegmentProblem::NotWal { magic: h.magic }
        });
    }
    if h.info & XLP_LONG_HEADER == 0 {
        return Err(SegmentProblem::NoLongHeader);
    }
    if h.sysid != sysid {
        return Err(SegmentProblem::OtherCluster {
            found: h.sysid,
            expected: sysid,
        });
    }
    if h.seg_size as u64 != seg_size {
        return Err(SegmentProblem::OtherSegSize {
            found: h.seg_size,
            expected: seg_size,
        });
    }
    if let Some(segno) = file.segno(seg_size) {
        let expected = segno * seg_size;
        if h.pageaddr != expected {
            return Err(SegmentProblem::WrongAddress {
                found: h.pageaddr,
                expected,
            });
        }
    }
    // A partial segment is still written at full size by PostgreSQL; both must be whole.
    if bytes.len() as u64 != seg_size {
        return Err(SegmentProblem::WrongLength {
            found: bytes.len(),
            expected: seg_size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        for n in [
            "000000010000000A000000FF",
            "000000020000000000000003.partial",
            "0000000A.history",
            "000000010000000000000002.00000028.backup",
        ] {
            let f = WalFile::parse(n).unwrap_or_else(|| panic!("{n}"));
            assert_eq!(f.to_string(), n);
        }
        for bad in [
            "00000001000000000000000",
            "000000010000000000000003.done",
            "0000000g.history",
            "000000010000000a000000ff",
            "RECOVERYXLOG",
        ] {
            assert_eq!(WalFile::parse(bad), None, "{bad}");
        }
        assert_eq!(
            WalFile::parse("000000010000000A000000FF")
                .unwrap()
                .directory()
                .unwrap(),
            "000000010000000A"
        );
    }

    #[test]
    fn segment_arithmetic() {
        let s = 16 << 20;
        assert_eq!(segments_per_log(s), 256);
        let f = WalFile::parse("0000000100000002000000FF").unwrap();
        assert_eq!(f.segno(s), Some(2 * 256 + 255));
        assert_eq!(
            segment_name(1, 2 * 256 + 256, s),
            "000000010000000300000000"
        );
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nonsense"), None);
    }

    fn seg(magic: u16, sysid: u64, pageaddr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[0..2].copy_from_slice(&magic.to_le_bytes());
        b[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..16].copy_from_slice(&pageaddr.to_le_bytes());
        b[24..32].copy_from_slice(&sysid.to_le_bytes());
        b[32..36].copy_from_slice(&(1u32 << 20).to_le_bytes());
        b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        b
    }

    #[test]
    fn segment_checks() {
        let size = 1u64 << 20;
        let f = WalFile::parse("000000010000000000000003").unwrap();
        let good = seg(0xD110, 42, 3 << 20, size as usize);
        assert_eq!(check_segment(&f, &good, 15, 42, size), Ok(()));
        assert!(matches!(
            check_segment(&f, &good, 15, 43, size),
            Err(SegmentProblem::OtherCluster {
                found: 42,
                expected: 43
            })
        ));
        assert!(matches!(
            check_segment(&f, &good, 16, 42, size),
            Err(SegmentProblem::OtherVersion { .. })
        ));
        let other = WalFile::parse("000000010000000000000004").unwrap();
        assert!(matches!(
            check_segment(&other, &good, 15, 42, size),
            Err(SegmentProblem::WrongAddress { .. })
        ));
        assert!(matches!(
            check_segment(&f, &good[..1000], 15, 42, size),
            Err(SegmentProblem::WrongLength { .. })
        ));
        assert!(matches!(
            check_segment(&f, &vec![0u8; size as usize], 15, 42, size),
            Err(SegmentProblem::NotWal { .. })
        ));
        assert!(matches!(
            check_segment(&f, &good[..10], 15, 42, size),
            Err(SegmentProblem::TooShort(10))
        ));
    }
}
