//! Backup manifests: `<stanza>/backup/<label>`, a sealed JSON document written last, so that a
//! backup exists if and only if its manifest does. Every manifest is complete on its own: it lists
//! every file of the backup with the id of its block list, whatever the backup type, so restoring
//! or expiring one backup never needs another's manifest.

use super::Repository;
use super::crypto::{Kind, Opener, Sealer};
use crate::error::{Error, ErrorKind, Result};
use crate::store::Put;
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "pgfrost-manifest";

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    Full,
    Diff,
    Incr,
}

impl BackupType {
    pub fn letter(self) -> char {
        match self {
            BackupType::Full => 'F',
            BackupType::Diff => 'D',
            BackupType::Incr => 'I',
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Diff => "diff",
            BackupType::Incr => "incr",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub label: String,
    #[serde(rename = "type")]
    pub kind: BackupType,
    /// diff/incr: the backup whose unchanged files this one reused (informational: this manifest
    /// lists those files itself).
    pub parent: Option<String>,
    /// The stanza record (cluster) the backup was taken from.
    pub db_id: u32,
    pub system_id: String,
    pub pg_major: u32,
    pub pg_version_num: u32,
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    /// First and last WAL segment needed for consistency.
    pub start_wal: String,
    pub stop_wal: String,
    pub start_time: String,
    pub stop_time: String,
    pub start_unix: i64,
    pub stop_unix: i64,
    /// When pg_backup_stop returned, in Unix milliseconds: recovery to a time target needs a
    /// backup that ended before it, and targets are often within the same second.
    pub stop_ms: i64,
    /// A transaction id assigned just after pg_backup_stop returned (pg_current_xact_id(), epoch
    /// included, decimal): a transaction with this id or a later one commits after the backup is
    /// consistent, so recovery from it can reach an xid target that is not older. Absent in
    /// manifests written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_next_xid: Option<String>,
    /// backup_label as pg_backup_stop returned it; restore writes it verbatim.
    pub backup_label: String,
    pub tablespace_map: Option<String>,
    pub checksums: bool,
    pub tablespaces: Vec<Tablespace>,
    pub dirs: Vec<DirEntry>,
    pub links: Vec<LinkEntry>,
    pub files: Vec<FileEntry>,
    pub checksum_errors: Vec<ChecksumError>,
    pub stats: Stats,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Tablespace {
    pub oid: u32,
    pub name: String,
    /// Where the tablespace lived on the source host.
    pub location: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DirEntry {
    /// Relative to the data directory; tablespace directories are under `pg_tblspc/<oid>/`.
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LinkEntry {
    pub path: String,
    pub target: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, seconds since the epoch (what diff/incr compare).
    pub mtime: i64,
    /// Hex id of the block holding this file's block list (32-byte ids, in order); empty for an
    /// empty file.
    pub list: String,
    pub blocks: u32,
    /// True when the content came from the parent backup unread (unchanged size and mtime).
    #[serde(default)]
    pub reused: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChecksumError {
    pub file: String,
    pub block: u32,
    pub expected: u16,
    pub found: u16,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    pub files: u64,
    /// Sum of file sizes: what a restore writes.
    pub logical_bytes: u64,
    /// Bytes read from the data directory (unchanged files are not read in diff/incr).
    pub read_bytes: u64,
    pub new_blocks: u64,
    pub new_bytes: u64,
    /// Bytes added to the repository by this backup (sealed, compressed).
    pub stored_bytes: u64,
    pub reused_files: u64,
    pub duration_ms: u64,
}

pub fn path(stanza: &str, label: &str) -> String {
    format!("{stanza}/backup/{label}")
}

/// Labels in pgBackRest's form: `20261121-010000F`, `20261121-010000F_20261122-010000I`.
pub fn is_label(s: &str) -> bool {
    let stamp = |t: &str| {
        t.len() == 15
            && t.as_bytes()[8] == b'-'
            && t.bytes()
                .enumerate()
                .all(|(i, c)| i == 8 || c.is_ascii_digit())
    };
    match s.split_once('_') {
        None => s.len() == 16 && s.ends_with('F') && stamp(&s[..15]),
        Some((full, rest)) => {
            is_label(full)
                && rest.len() == 16
                && (rest.ends_with('D') || rest.ends_with('I'))
                && stamp(&rest[..15])
        }
    }
}

pub async fn write(repo: &Repository, stanza: &str, m: &Manifest) -> Result<()> {
    let p = path(stanza, &m.label);
    let json = serde_json::to_vec(m).expect("manifest serializes");
    let sealed = Sealer::new(Some(3)).seal(&repo.keys, Kind::Manifest, p.as_bytes(), &json);
    match repo.store.put_new(&p, sealed.into()).await? {
        Put::Created => Ok(()),
        Put::AlreadyExists => Err(Error::new(
            ErrorKind::Conflict,
            format!("backup {} already exists", m.label),
        )),
    }
}

pub async fn read(repo: &Repository, stanza: &str, label: &str) -> Result<Manifest> {
    let p = path(stanza, label);
    let bytes = repo.store.get_opt(&p).await?.ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!("no backup {label} in stanza '{stanza}'"),
        )
        .hint("'pgfrost info' lists the backups")
    })?;
    let bad = |m: String| {
        Error::corrupt(format!(
            "manifest '{p}' in repository {}: {m}",
            repo.store.location()
        ))
    };
    let plain = Opener::new()
        .open(&repo.keys, Kind::Manifest, p.as_bytes(), &bytes, 1 << 30)
        .map_err(|e| bad(e.to_string()))?;
    let m: Manifest =
        serde_json::from_slice(&plain).map_err(|e| bad(format!("does not parse: {e}")))?;
    if m.format != FORMAT || m.version != 1 {
        return Err(bad(format!(
            "format {} version {} is not supported",
            m.format, m.version
        )));
    }
    if m.label != label {
        return Err(bad(format!("claims to be backup {}", m.label)));
    }
    Ok(m)
}

/// Labels of the stanza's backups, oldest first (labels sort by time).
pub async fn list(repo: &Repository, stanza: &str) -> Result<Vec<String>> {
    let mut v: Vec<String> = repo
        .store
        .list(&format!("{stanza}/backup"))
        .await?
        .into_iter()
        .filter_map(|l| l.path.rsplit('/').next().map(str::to_string))
        .filter(|n| is_label(n))
        .collect();
    v.sort();
    Ok(v)
}

/// Reads every manifest of the stanza, oldest label first, and the labels whose manifest could
/// not be read with why. A manifest expired between the listing and the read is simply gone.
pub async fn read_each(
    repo: &Repository,
    stanza: &str,
) -> Result<(Vec<Manifest>, Vec<(String, Error)>)> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for l in list(repo, stanza).await? {
        match read(repo, stanza, &l).await {
            Ok(m) => good.push(m),
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => bad.push((l, e)),
        }
    }
    Ok((good, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(is_label("20261121-010000F"));
        assert!(is_label("20261121-010000F_20261122-010000I"));
        assert!(is_label("20261121-010000F_20261122-010000D"));
        assert!(!is_label("20261121-010000I"));
        assert!(!is_label("20261121-010000F_20261122-010000F"));
        assert!(!is_label("2026112-010000F"));
        assert!(!is_label("../../etc"));
    }
}
