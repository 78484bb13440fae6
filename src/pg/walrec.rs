//! Restore points in WAL: a scan of a segment's records for `XLOG_RESTORE_POINT`, the record
//! `pg_create_restore_point()` writes. Pure functions over bytes.
//!
//! The layouts (src/include/access/xlog_internal.h, xlogrecord.h; unchanged from 13 to 18):
//! every 8 KiB page starts with a header (24 bytes, 40 on a segment's first page), whose
//! `xlp_rem_len` says how much of a record begun on an earlier page continues here. A record
//! starts at an 8-aligned LSN with a 24-byte header (`xl_tot_len`, `xl_xid`, `xl_prev`,
//! `xl_info`, `xl_rmid`, `xl_crc`) and may be split across pages, its header included; only its
//! first 8 bytes are sure to be on its first page. A restore point is a 98-byte record of the
//! XLOG resource manager: header, a short main-data header (`255`, length 72) and
//! `xl_restore_point` (`TimestampTz rp_time`, `char rp_name[64]`).
//!
//! The scan walks records by their lengths and checks every page header it crosses; only
//! restore-point candidates pay for a CRC, and a candidate whose CRC fails is no restore point
//! (the rest of a recycled segment can hold anything).

use super::wal::format_lsn;

const PAGE: u64 = 8192;
const SHORT_HEADER: u64 = 24;
const LONG_HEADER: u64 = 40;
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const RECORD_HEADER: usize = 24;
const RM_XLOG_ID: u8 = 0;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_RESTORE_POINT: u8 = 0x70;
const XLR_INFO_MASK: u8 = 0x0F;
/// Header, `XLR_BLOCK_ID_DATA_SHORT` and its length byte, `xl_restore_point`.
pub const RESTORE_POINT_LEN: u32 = 24 + 2 + 8 + 64;
/// The same with the headers XLogRecordAssemble may add to any record: the top-level xid of a
/// subtransaction (`XLR_BLOCK_ID_TOPLEVEL_XID`, 1 + 4 bytes, with wal_level = logical) and a
/// replication origin (`XLR_BLOCK_ID_ORIGIN`, 1 + 2; never set for restore points today).
pub const RESTORE_POINT_MAX_LEN: u32 = RESTORE_POINT_LEN + 5 + 3;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// A restore point found in WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePoint {
    pub name: String,
    /// Where its record starts, and where the next one does: the LSN pg_create_restore_point()
    /// returns and the server log names ("created at").
    pub lsn: u64,
    pub end_lsn: u64,
    /// `rp_time`, in microseconds since the Unix epoch.
    pub time_us: i64,
}

/// What a scan found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Restore points whose records end inside the scanned segment, in LSN order.
    pub points: Vec<RestorePoint>,
    /// The segment starts with the rest of a record begun in the previous one, short enough
    /// (`xlp_rem_len` bytes) that the record could be a restore point: the previous segment's
    /// last page is needed to tell (see `scan_segment`'s `prev_page`).
    pub needs_prev_page: Option<u32>,
    /// Records read, the end of the last one, and why the scan stopped.
    pub records: u64,
    pub end: u64,
    pub stopped: Stop,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// CRC-32C (Castagnoli, reflected), as PostgreSQL's pg_crc32c.
fn crc32c(parts: &[&[u8]]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut crc = !0u32;
    for p in parts {
        for &b in *p {
            crc = t[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
        }
    }
    !crc
}

/// Pages laid end to end from `base` (page-aligned LSN).
struct Pages<'a> {
    bytes: &'a [u8],
    base: u64,
}

/// A page header's fields the scan uses; None when the page is not the one expected there.
struct PageHeader {
    len: u64,
    contrecord: bool,
    rem_len: u32,
}

impl Pages<'_> {
    fn end(&self) -> u64 {
        self.base + self.bytes.len() as u64
    }

    fn header(&self, page_lsn: u64) -> Option<PageHeader> {
        let o = (page_lsn - self.base) as usize;
        let b = self.bytes.get(o..o + LONG_HEADER as usize)?;
        if u64_at(b, 8) != page_lsn {
            return None;
        }
        let info = u16_at(b, 2);
        Some(PageHeader {
            len: if info & XLP_LONG_HEADER != 0 {
                LONG_HEADER
            } else {
                SHORT_HEADER
            },
            contrecord: info & XLP_FIRST_IS_CONTRECORD != 0,
            rem_len: u32_at(b, 16),
        })
    }

    /// `len` bytes of the record starting at `lsn`, across page boundaries. None when they
    /// cannot all be followed (see `walk`).
    fn record(&self, lsn: u64, len: u64) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(len as usize);
        self.walk(lsn, len, |b| out.extend_from_slice(b)).ok()?;
        Some(out)
    }

    /// The LSN just after `len` record bytes starting at `lsn` (page headers skipped).
    fn advance(&self, lsn: u64, len: u64) -> Result<u64, Cross> {
        self.walk(lsn, len, |_| {})
    }

    /// Follows `len` record bytes from `lsn`, handing each page's part to `part`, and returns
    /// the LSN after them. Every page crossed must say it continues this record with what is
    /// left of it.
    fn walk(&self, lsn: u64, len: u64, mut part: impl FnMut(&[u8])) -> Result<u64, Cross> {
        let mut at = lsn;
        let mut left = len;
        while left > 0 {
            if at.is_multiple_of(PAGE) {
                if at >= self.end() {
                    return Err(Cross::Beyond);
                }
                let h = self.header(at).ok_or(Cross::Bad(at))?;
                if !h.contrecord {
                    // The record was never finished (a crash or promotion while it was being
                    // written; PostgreSQL 15+, 14.4+ and 13.8+ mark the page
                    // XLP_FIRST_IS_OVERWRITE_CONTRECORD): the page starts afresh after its header.
                    return Err(Cross::Restart(at + h.len));
                }
                if h.rem_len as u64 != left {
                    return Err(Cross::Bad(at));
                }
                at += h.len;
            }
            let page_end = (at / PAGE + 1) * PAGE;
            let take = (page_end - at).min(left);
            if at + take > self.end() {
                return Err(Cross::Beyond);
            }
            let o = (at - self.base) as usize;
            part(&self.bytes[o..o + take as usize]);
            at += take;
            left -= take;
        }
        Ok(at)
    }
}

/// Why a record's bytes could not be followed across a page boundary.
enum Cross {
    /// It goes on past the bytes scanned (into the next segment).
    Beyond,
    /// A page does not continue it: the record was abandoned, records start again here.
    Restart(u64),
    /// A page header is not the one expected there.
    Bad(u64),
}

/// Where and why a scan stopped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A switch record: the rest of the segment is padding.
    Switch,
    /// The end of the bytes, or a record that goes on into the next segment.
    #[default]
    End,
    /// Zeros where a record should start: the end of the WAL written (normal in a partial
    /// segment, not in a full one).
    Zeros(u64),
    /// A page header that does not fit: not WAL this scan can follow.
    BadPage(u64),
}

fn maxalign(x: u64) -> u64 {
    (x + 7) & !7
}

/// Decodes a whole record as a restore point, if it is one with a good CRC.
fn restore_point(rec: &[u8], lsn: u64, end_lsn: u64) -> Option<RestorePoint> {
    if !(RESTORE_POINT_LEN as usize..=RESTORE_POINT_MAX_LEN as usize).contains(&rec.len())
        || rec[17] != RM_XLOG_ID
        || rec[16] & !XLR_INFO_MASK != XLOG_RESTORE_POINT
    {
        return None;
    }
    if crc32c(&[&rec[RECORD_HEADER..], &rec[..20]]) != u32_at(rec, 20) {
        return None;
    }
    // The headers after the record header: optional top-level xid and origin, then the main
    // data's (72 bytes, xl_restore_point). A block reference would make it another record.
    let mut o = RECORD_HEADER;
    loop {
        match *rec.get(o)? {
            XLR_BLOCK_ID_TOPLEVEL_XID => o += 5,
            XLR_BLOCK_ID_ORIGIN => o += 3,
            XLR_BLOCK_ID_DATA_SHORT if rec.get(o + 1) == Some(&72) => {
                o += 2;
                break;
            }
            _ => return None,
        }
    }
    if rec.len() != o + 72 {
        return None;
    }
    let data = &rec[o..];
    let pg_us = i64::from_le_bytes(data[..8].try_into().unwrap());
    let raw = &data[8..72];
    let name = &raw[..raw.iter().position(|&c| c == 0).unwrap_or(raw.len())];
    Some(RestorePoint {
        name: String::from_utf8_lossy(name).into_owned(),
        lsn,
        end_lsn,
        time_us: pg_us.saturating_add(PG_EPOCH_US),
    })
}

/// Finds the restore points whose records end in `segment` (a whole segment or partial
/// segment, starting at LSN `seg_start`). `prev_page` is the previous segment's last page, when
/// the caller has it: a restore point begun there and ended here is then found too.
pub fn scan_segment(segment: &[u8], seg_start: u64, prev_page: Option<&[u8]>) -> Scan {
    let mut scan = Scan::default();
    let joined;
    let pages = match prev_page {
        Some(p) if p.len() as u64 == PAGE && seg_start >= PAGE => {
            joined = [p, segment].concat();
            Pages {
                bytes: &joined,
                base: seg_start - PAGE,
            }
        }
        _ => Pages {
            bytes: segment,
            base: seg_start,
        },
    };
    let Some(first) = pages.header(pages.base) else {
        scan.stopped = Stop::BadPage(pages.base);
        return scan;
    };
    // Skip what continues a record begun before the first page.
    let mut at = pages.base + first.len;
    if first.contrecord {
        if pages.base == seg_start && first.rem_len <= RESTORE_POINT_MAX_LEN - 8 {
            scan.needs_prev_page = Some(first.rem_len);
        }
        match pages.advance(at, first.rem_len as u64) {
            Ok(end) => at = maxalign(end),
            Err(Cross::Restart(r)) => at = r,
            Err(Cross::Beyond) => return scan,
            Err(Cross::Bad(p)) => {
                scan.stopped = Stop::BadPage(p);
                return scan;
            }
        }
    }
    loop {
        if at.is_multiple_of(PAGE) {
            if at >= pages.end() {
                break;
            }
            match pages.header(at) {
                Some(h) => at += h.len,
                None => {
                    scan.stopped = Stop::BadPage(at);
                    break;
                }
            }
        }
        if at + 8 > pages.end() {
            break;
        }
        let o = (at - pages.base) as usize;
        let tot_len = u32_at(pages.bytes, o);
        if (tot_len as usize) < RECORD_HEADER {
            scan.stopped = Stop::Zeros(at);
            break;
        }
        let end = match pages.advance(at, tot_len as u64) {
            Ok(end) => end,
            // Goes on into the next segment: found when that one is scanned.
            Err(Cross::Beyond) => break,
            Err(Cross::Restart(r)) => {
                at = r;
                continue;
            }
            Err(Cross::Bad(p)) => {
                scan.stopped = Stop::BadPage(p);
                break;
            }
        };
        scan.records += 1;
        scan.end = end;
        if (RESTORE_POINT_LEN..=RESTORE_POINT_MAX_LEN).contains(&tot_len)
            && end > seg_start
            && let Some(rec) = pages.record(at, tot_len as u64)
            && let Some(p) = restore_point(&rec, at, maxalign(end))
        {
            scan.points.push(p);
        }
        // The rest of the segment after a switch record is padding, not records.
        let head_on_page = at % PAGE + 18 <= PAGE;
        if head_on_page
            && pages.bytes[o + 17] == RM_XLOG_ID
            && pages.bytes[o + 16] & !XLR_INFO_MASK == XLOG_SWITCH
        {
            scan.stopped = Stop::Switch;
            break;
        }
        at = maxalign(end);
    }
    scan
}

impl RestorePoint {
    /// For messages: `'name' at 0/3000090 (2026-12-02 06:01:12.345678 UTC)`, with the LSN
    /// PostgreSQL reported when it created the point.
    pub fn describe(&self) -> String {
        let when = jiff::Timestamp::from_microsecond(self.time_us)
            .map(|t| t.strftime("%Y-%m-%d %H:%M:%S%.6f UTC").to_string())
            .unwrap_or_else(|_| format!("{} us", self.time_us));
        format!("'{}' at {} ({when})", self.name, format_lsn(self.end_lsn))
    }
}

/// Segments laid out as PostgreSQL lays them out, for the unit tests below and the bench's smoke
/// run (which has no real WAL to read when `cargo test` starts it).
#[doc(hidden)]
pub mod synthetic {
    use super::*;

    pub const SEG: u64 = 1 << 20;

    /// A segment of pages with headers, records placed as PostgreSQL places them.
    pub struct Writer {
        pub seg: Vec<u8>,
        pub start: u64,
        pub at: u64,
    }

    impl Writer {
        pub fn new(start: u64, first_rem: u32) -> Writer {
            Writer::sized(start, first_rem, SEG)
        }

        pub fn sized(start: u64, first_rem: u32, size: u64) -> Writer {
            let mut w = Writer {
                seg: vec![0; size as usize],
                start,
                at: start,
            };
            w.page_header(start, first_rem);
            w.at = start + LONG_HEADER + maxalign(first_rem as u64);
            w
        }

        pub fn page_header(&mut self, lsn: u64, rem: u32) {
            let o = (lsn - self.start) as usize;
            let mut info = if rem > 0 { XLP_FIRST_IS_CONTRECORD } else { 0 };
            if lsn == self.start {
                info |= XLP_LONG_HEADER;
            }
            self.seg[o..o + 2].copy_from_slice(&0xD110u16.to_le_bytes());
            self.seg[o + 2..o + 4].copy_from_slice(&info.to_le_bytes());
            self.seg[o + 4..o + 8].copy_from_slice(&1u32.to_le_bytes());
            self.seg[o + 8..o + 16].copy_from_slice(&lsn.to_le_bytes());
            self.seg[o + 16..o + 20].copy_from_slice(&rem.to_le_bytes());
        }

        /// Writes a record; returns its LSN, or None when it does not fit the segment.
        pub fn record(&mut self, rec: &[u8]) -> Option<u64> {
            // A record starting on a new page starts after its header (that is its LSN), and
            // continues nothing.
            if self.at.is_multiple_of(PAGE) {
                if self.at >= self.start + self.seg.len() as u64 {
                    return None;
                }
                self.page_header(self.at, 0);
                self.at += SHORT_HEADER;
            }
            let lsn = self.at;
            let mut i = 0;
            while i < rec.len() {
                if self.at.is_multiple_of(PAGE) {
                    if self.at >= self.start + self.seg.len() as u64 {
                        return None;
                    }
                    self.page_header(self.at, (rec.len() - i) as u32);
                    self.at += SHORT_HEADER;
                }
                let room = ((self.at / PAGE + 1) * PAGE - self.at) as usize;
                let n = room.min(rec.len() - i);
                let o = (self.at - self.start) as usize;
                self.seg[o..o + n].copy_from_slice(&rec[i..i + n]);
                self.at += n as u64;
                i += n;
            }
            self.at = maxalign(self.at);
            Some(lsn)
        }

        /// Page headers on the pages no record reached, as a switch's padding has.
        pub fn finish(mut self) -> Vec<u8> {
            let mut p = self.at.div_ceil(PAGE) * PAGE;
            while p < self.start + self.seg.len() as u64 {
                self.page_header(p, 0);
                p += PAGE;
            }
            self.seg
        }
    }

    pub fn with_crc(mut rec: Vec<u8>) -> Vec<u8> {
        let len = rec.len() as u32;
        rec[0..4].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c(&[&rec[RECORD_HEADER..], &rec[..20]]);
        rec[20..24].copy_from_slice(&crc.to_le_bytes());
        rec
    }

    pub fn point_record(name: &str, pg_us: i64) -> Vec<u8> {
        let mut r = vec![0u8; RESTORE_POINT_LEN as usize];
        r[16] = XLOG_RESTORE_POINT;
        r[17] = RM_XLOG_ID;
        r[24] = 255;
        r[25] = 72;
        r[26..34].copy_from_slice(&pg_us.to_le_bytes());
        r[34..34 + name.len()].copy_from_slice(name.as_bytes());
        with_crc(r)
    }

    pub fn other_record(len: usize, rmid: u8) -> Vec<u8> {
        let mut r = vec![0xA5u8; len];
        r[16] = 0;
        r[17] = rmid;
        with_crc(r)
    }
}

#[cfg(test)]
mod tests {
    use super::synthetic::*;
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(&[b"123456789"]), 0xE306_9283);
        assert_eq!(crc32c(&[b"1234", b"56789"]), 0xE306_9283);
    }

    #[test]
    fn finds_points_among_other_records_and_across_pages() {
        let start = 3 * SEG;
        let mut w = Writer::new(start, 0);
        let mut expect = Vec::new();
        let mut n = 0;
        // Records of many lengths, so that points land at every offset of a page, split
        // inside their header, inside their data and not at all.
        'fill: for round in 0..4000 {
            let len = 24 + (round * 37) % 300;
            if w.record(&other_record(len, 10)).is_none() {
                break 'fill;
            }
            if round % 7 == 0 {
                let name = format!("point {n}");
                let rec = point_record(&name, 1_000_000 * n as i64);
                match w.record(&rec) {
                    Some(lsn) => expect.push((name, lsn)),
                    None => break 'fill,
                }
                n += 1;
            }
        }
        let seg = w.finish();
        let scan = scan_segment(&seg, start, None);
        let got: Vec<(String, u64)> = scan
            .points
            .iter()
            .map(|p| (p.name.clone(), p.lsn))
            .collect();
        // The last point may have been cut by the segment's end.
        assert!(
            got.len() + 1 >= expect.len() && got.len() > 300,
            "{}",
            got.len()
        );
        let first_wrong = got.iter().zip(&expect).position(|(g, e)| g != e);
        assert_eq!(
            first_wrong,
            None,
            "{:?}",
            first_wrong.map(|i| (&got[i], &expect[i]))
        );
        let p = &scan.points[1];
        assert_eq!(p.time_us, PG_EPOCH_US + 1_000_000);
        assert!(p.end_lsn > p.lsn + RESTORE_POINT_LEN as u64 - 1);
        assert_eq!(scan.needs_prev_page, None);
    }

    #[test]
    fn a_bad_crc_or_another_record_of_the_same_length_is_no_point() {
        let start = SEG;
        let mut w = Writer::new(start, 0);
        let mut bad = point_record("x", 0);
        bad[40] ^= 1;
        w.record(&bad).unwrap();
        let mut other = point_record("y", 0);
        other[17] = 11; // another resource manager, same length
        w.record(&with_crc(other)).unwrap();
        let good = w.record(&point_record("z", 5)).unwrap();
        let scan = scan_segment(&w.finish(), start, None);
        assert_eq!(scan.points.len(), 1);
        assert_eq!(
            (scan.points[0].name.as_str(), scan.points[0].lsn),
            ("z", good)
        );
    }

    #[test]
    fn stops_after_a_switch_and_at_zeros() {
        let start = SEG;
        let mut w = Writer::new(start, 0);
        w.record(&point_record("before", 0)).unwrap();
        let mut sw = other_record(24, RM_XLOG_ID);
        sw[16] = XLOG_SWITCH;
        w.record(&with_crc(sw)).unwrap();
        // What a recycled segment still holds after the switch is not read as records.
        w.record(&point_record("stale", 0)).unwrap();
        let scan = scan_segment(&w.finish(), start, None);
        let names: Vec<&str> = scan.points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["before"]);
        assert_eq!(scan.stopped, Stop::Switch);
        let zeros = scan_segment(&vec![0; SEG as usize], start, None);
        assert!(zeros.points.is_empty());
        assert_eq!(zeros.stopped, Stop::BadPage(start));
    }

    /// A restore point made inside a subtransaction with wal_level = logical carries the
    /// top-level xid header (103 bytes); one with an origin header too (106).
    #[test]
    fn points_with_optional_headers_are_found() {
        let start = SEG;
        let mut w = Writer::new(start, 0);
        let plain = point_record("plain", 1);
        let mut with_xid = plain[..24].to_vec();
        with_xid.extend_from_slice(&[XLR_BLOCK_ID_TOPLEVEL_XID, 1, 2, 3, 4]);
        with_xid.extend_from_slice(&plain[24..]);
        with_xid[34 + 5..34 + 5 + 5].copy_from_slice(b"xid\0\0");
        let mut both = plain[..24].to_vec();
        both.extend_from_slice(&[
            XLR_BLOCK_ID_TOPLEVEL_XID,
            1,
            2,
            3,
            4,
            XLR_BLOCK_ID_ORIGIN,
            7,
            0,
        ]);
        both.extend_from_slice(&plain[24..]);
        both[34 + 8..34 + 8 + 5].copy_from_slice(b"both\0");
        // A block reference in a record of that size is another record.
        let mut block = plain[..24].to_vec();
        block.extend_from_slice(&[0, 1, 2, 3, 4]);
        block.extend_from_slice(&plain[24..]);
        for r in [
            plain.clone(),
            with_crc(with_xid),
            with_crc(both),
            with_crc(block),
        ] {
            w.record(&r).unwrap();
        }
        let scan = scan_segment(&w.finish(), start, None);
        let names: Vec<&str> = scan.points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["plain", "xid", "both"]);
    }

    /// A record abandoned at a crash or promotion: the next page does not continue it (no
    /// XLP_FIRST_IS_CONTRECORD, rem_len 0) and records start again after its header. The scan
    /// must pick up there, not skip the page's records as the rest of the abandoned one.
    #[test]
    fn records_after_an_abandoned_one_are_read() {
        let start = 2 * SEG;
        let mut w = Writer::new(start, 0);
        while w.at < start + PAGE - 400 {
            w.record(&other_record(100, 10)).unwrap();
        }
        // A 1000-byte record of which only the first page's part was written.
        let cut = (start + PAGE - w.at) as usize;
        let long = other_record(1000, 10);
        let o = (w.at - start) as usize;
        w.seg[o..o + cut].copy_from_slice(&long[..cut]);
        w.at = start + PAGE;
        let after = w.record(&point_record("after the crash", 3)).unwrap();
        assert_eq!(after, start + PAGE + SHORT_HEADER);
        let scan = scan_segment(&w.finish(), start, None);
        assert_eq!(scan.points.len(), 1, "{scan:?}");
        assert_eq!(scan.points[0].lsn, after);
        assert_eq!(
            scan.stopped,
            Stop::Zeros(maxalign(after + RESTORE_POINT_LEN as u64))
        );
    }

    #[test]
    fn a_point_split_between_segments_is_found_with_the_previous_page() {
        // The previous segment ends with the first 40 bytes of a restore point.
        let start = 5 * SEG;
        let rec = point_record("across", 7);
        let mut prev = Writer::new(start - SEG, 0);
        while prev.at < start - PAGE - 400 {
            prev.record(&other_record(200, 10)).unwrap();
        }
        // One record across the last page's header, ending 40 bytes before the segment's end.
        let len = (start - 40 - prev.at - SHORT_HEADER) as usize;
        prev.record(&other_record(len, 10)).unwrap();
        assert_eq!(prev.at, start - 40);
        let lsn = prev.at;
        let cut = 40;
        let prev_seg = {
            let mut p = prev;
            let o = (p.at - p.start) as usize;
            p.seg[o..o + cut].copy_from_slice(&rec[..cut]);
            p.seg
        };
        let mut next = Writer::new(start, (rec.len() - cut) as u32);
        let o = LONG_HEADER as usize;
        next.seg[o..o + rec.len() - cut].copy_from_slice(&rec[cut..]);
        next.record(&point_record("after", 8)).unwrap();
        let next_seg = next.finish();

        let alone = scan_segment(&next_seg, start, None);
        assert_eq!(alone.needs_prev_page, Some((rec.len() - cut) as u32));
        assert_eq!(alone.points.len(), 1);
        let last_page = &prev_seg[(SEG - PAGE) as usize..];
        let with = scan_segment(&next_seg, start, Some(last_page));
        let got: Vec<(&str, u64)> = with
            .points
            .iter()
            .map(|p| (p.name.as_str(), p.lsn))
            .collect();
        assert_eq!(got[0], ("across", lsn));
        assert_eq!(got[1].0, "after");
        // The previous segment's own scan does not claim the point it could not finish.
        assert!(scan_segment(&prev_seg, start - SEG, None).points.is_empty());
    }
}
