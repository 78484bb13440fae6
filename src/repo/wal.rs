//! Where the WAL archive and the restore points filed beside it live, and how a stored path
//! is read back: every such path is built and parsed here.
//!
//! ```text
//! <stanza>/wal/<db>/<tli><log>/<segment, .partial or .backup>
//! <stanza>/wal/<db>/<tli>.history
//! <stanza>/point/<db>/<tli><log>/<segment>    restore points found in that segment (points.rs)
//! ```
//!
//! `<db>` is the stanza record (cluster) the file belongs to, zero-padded to 4 digits: after
//! pg_upgrade the new cluster's timeline 1 never collides with the old one's.

use crate::pg::wal::WalFile;

/// The folder of WAL files under a stanza.
pub const WAL: &str = "wal";
/// The folder of restore point documents under a stanza.
pub const POINT: &str = "point";

/// The folder of `area` (`WAL`, `POINT`) of the stanza, without trailing slash (a list prefix).
pub fn area_dir(stanza: &str, area: &str) -> String {
    format!("{stanza}/{area}")
}

/// The stanza's whole WAL archive.
pub fn archive_dir(stanza: &str) -> String {
    area_dir(stanza, WAL)
}

/// The WAL archive of stanza record `db_id`.
pub fn db_dir(stanza: &str, db_id: u32) -> String {
    format!("{}/{db_id:04}", archive_dir(stanza))
}

/// The object of `file` in `area`, filed under record `db_id`: segment-like files under their
/// timeline+log directory, history files beside those directories.
pub fn filed_path(stanza: &str, area: &str, db_id: u32, file: &WalFile) -> String {
    match file.directory() {
        Some(d) => format!("{}/{db_id:04}/{d}/{file}", area_dir(stanza, area)),
        None => format!("{}/{db_id:04}/{file}", area_dir(stanza, area)),
    }
}

/// Where a WAL file (segment, partial segment, history or backup history) is archived.
pub fn object_path(stanza: &str, db_id: u32, file: &WalFile) -> String {
    filed_path(stanza, WAL, db_id, file)
}

/// The record and file of a path in `area`, when it is a WAL file name filed where it belongs.
pub fn parse_filed(stanza: &str, area: &str, path: &str) -> Option<(u32, WalFile)> {
    let rest = path
        .strip_prefix(&area_dir(stanza, area))?
        .strip_prefix('/')?;
    let (db, dir, name) = match rest.split('/').collect::<Vec<_>>().as_slice() {
        [db, name] => (*db, None, *name),
        [db, dir, name] => (*db, Some(*dir), *name),
        _ => return None,
    };
    if db.len() != 4 || !db.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let file = WalFile::parse(name)?;
    (file.directory().as_deref() == dir).then_some(())?;
    Some((db.parse().ok()?, file))
}

/// The record and WAL file an archived object holds, when its path is one.
pub fn parse_path(stanza: &str, path: &str) -> Option<(u32, WalFile)> {
    parse_filed(stanza, WAL, path)
}

/// The last part of an object's path: a WAL file's name when it is filed in the archive.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_back() {
        for name in [
            "000000010000000A000000FE",
            "000000020000000A000000FE.partial",
            "000000010000000A000000FE.00000028.backup",
            "00000003.history",
        ] {
            let f = WalFile::parse(name).unwrap();
            let p = object_path("main", 2, &f);
            assert!(p.starts_with("main/wal/0002/"), "{p}");
            assert!(p.ends_with(name), "{p}");
            assert_eq!(file_name(&p), name);
            assert_eq!(parse_path("main", &p), Some((2, f.clone())));
            assert!(parse_path("other", &p).is_none());
            let point = filed_path("main", POINT, 2, &f);
            assert!(point.starts_with("main/point/0002/"), "{point}");
            assert_eq!(parse_filed("main", POINT, &point), Some((2, f.clone())));
            assert!(parse_path("main", &point).is_none());
        }
        assert_eq!(
            object_path("s", 1, &WalFile::parse("000000010000000A000000FE").unwrap()),
            "s/wal/0001/000000010000000A/000000010000000A000000FE"
        );
        assert_eq!(
            object_path("s", 1, &WalFile::parse("00000002.history").unwrap()),
            "s/wal/0001/00000002.history"
        );
        assert_eq!(db_dir("s", 12), "s/wal/0012");
        for bad in [
            "s/wal/0001/000000010000000A000000FE",
            "s/wal/0001/000000010000000B/000000010000000A000000FE",
            "s/wal/1/000000010000000A/000000010000000A000000FE",
            "s/wal/0001/000000010000000A/junk",
            "s/wal/0001/x/y/000000010000000A000000FE",
            "s/walx/0001/00000002.history",
            "s/wal0001/00000002.history",
        ] {
            assert!(parse_path("s", bad).is_none(), "{bad}");
        }
    }
}
