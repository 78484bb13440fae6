//! Restore points recorded from the WAL archive. archive-push scans each segment it stores for
//! `XLOG_RESTORE_POINT` records (crate::pg::walrec) and, when it finds any, stores them in one
//! sealed document beside the WAL: `<stanza>/point/<NNNN>/<TTTTTTTTLLLLLLLL>/<segment file>`,
//! the segment's own path with `point` for `wal`. A point is filed under the segment its record
//! ends in: recovery can stop at it only once that segment is restored.
//!
//! The document is written before the segment, so a stored segment's points are stored too, and
//! expire removes it with its segment.

use super::Repository;
use super::crypto::{Kind, Opener, Sealer};
use super::stanza::StanzaDb;
use crate::error::{Error, Result};
use crate::pg::wal::{WalFile, format_lsn, parse_lsn};
use crate::pg::walrec::RestorePoint;
use crate::store::Put;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

pub const POINTS_FORMAT: &str = "pgfrost-restore-points";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PointsDoc {
    pub format: String,
    pub version: u32,
    /// The WAL file the points' records end in (its name, as stored under `wal/`).
    pub wal: String,
    pub timeline: u32,
    pub points: Vec<PointEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PointEntry {
    /// As given to pg_create_restore_point(): at most 63 bytes.
    pub name: String,
    /// Where the record starts and ends, as PostgreSQL prints an LSN.
    pub lsn: String,
    pub end_lsn: String,
    /// The record's `rp_time` in microseconds since the Unix epoch, and as RFC 3339 (UTC).
    pub time_us: i64,
    pub time: String,
}

/// A restore point and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub db_id: u32,
    pub timeline: u32,
    pub wal: String,
    pub point: RestorePoint,
}

pub fn path(stanza: &str, db: &StanzaDb, file: &WalFile) -> String {
    super::wal::filed_path(stanza, super::wal::POINT, db.id, file)
}

fn rfc3339_us(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default()
}

pub fn document(file: &WalFile, points: &[RestorePoint]) -> PointsDoc {
    PointsDoc {
        format: POINTS_FORMAT.into(),
        version: 1,
        wal: file.to_string(),
        timeline: file.tli(),
        points: points
            .iter()
            .map(|p| PointEntry {
                name: p.name.clone(),
                lsn: format_lsn(p.lsn),
                end_lsn: format_lsn(p.end_lsn),
                time_us: p.time_us,
                time: rfc3339_us(p.time_us),
            })
            .collect(),
    }
}

/// Stores the points found in `file` (nothing when there are none); the path when this call
/// created the document. Create-once: a document already there came from the same WAL (the
/// segment itself is compared on a second push, and a document written for a refused segment is
/// deleted by its writer).
pub async fn write(
    repo: &Repository,
    stanza: &str,
    db: &StanzaDb,
    file: &WalFile,
    points: &[RestorePoint],
) -> Result<Option<String>> {
    if points.is_empty() {
        return Ok(None);
    }
    let p = path(stanza, db, file);
    let json = serde_json::to_vec(&document(file, points)).expect("points serialize");
    let sealed = Sealer::new(None).seal(&repo.keys, Kind::RestorePoints, p.as_bytes(), &json);
    if repo.store.put_new(&p, sealed.into()).await? == Put::AlreadyExists {
        log::debug!("restore points of {file} were already stored");
        return Ok(None);
    }
    Ok(Some(p))
}

/// Opens and checks one stored document: its path must be where its WAL file's points belong.
pub fn open(repo: &Repository, path: &str, db_id: u32, sealed: &[u8]) -> Result<Vec<Recorded>> {
    let bad = |m: String| {
        Error::corrupt(format!(
            "restore points '{path}' in repository {}: {m}",
            repo.store.location()
        ))
    };
    let plain = Opener::new()
        .open(
            &repo.keys,
            Kind::RestorePoints,
            path.as_bytes(),
            sealed,
            1 << 20,
        )
        .map_err(|e| bad(e.to_string()))?;
    let doc: PointsDoc =
        serde_json::from_slice(&plain).map_err(|e| bad(format!("does not parse: {e}")))?;
    if doc.format != POINTS_FORMAT || doc.version != 1 {
        return Err(bad(format!(
            "format {} version {} is not supported",
            doc.format, doc.version
        )));
    }
    let file = WalFile::parse(&doc.wal)
        .filter(|f| f.tli() == doc.timeline && f.has_pages())
        .ok_or_else(|| bad(format!("names WAL file '{}'", doc.wal)))?;
    if !path.ends_with(&format!("/{}", doc.wal)) {
        return Err(bad(format!("is filed away from its WAL file {}", doc.wal)));
    }
    doc.points
        .into_iter()
        .map(|e| {
            let lsn = parse_lsn(&e.lsn).ok_or_else(|| bad(format!("LSN '{}'", e.lsn)))?;
            let end_lsn =
                parse_lsn(&e.end_lsn).ok_or_else(|| bad(format!("LSN '{}'", e.end_lsn)))?;
            Ok(Recorded {
                db_id,
                timeline: file.tli(),
                wal: doc.wal.clone(),
                point: RestorePoint {
                    name: e.name,
                    lsn,
                    end_lsn,
                    time_us: e.time_us,
                },
            })
        })
        .collect()
}

/// Every stored document's path, with the cluster record and WAL file it belongs to; paths
/// that are not where a document belongs are left out (verify reports them).
pub async fn list_objects(
    repo: &Repository,
    stanza: &str,
) -> Result<Vec<(crate::store::Listed, u32, WalFile)>> {
    Ok(repo
        .store
        .list(&super::wal::area_dir(stanza, super::wal::POINT))
        .await?
        .into_iter()
        .filter_map(|l| {
            let (db, file) = parse_path(stanza, &l.path)?;
            Some((l, db, file))
        })
        .collect())
}

/// The cluster record and WAL file of a document's path, when it is one.
pub fn parse_path(stanza: &str, path: &str) -> Option<(u32, WalFile)> {
    // Only segments hold records, so only they (filed under their directory) have points.
    super::wal::parse_filed(stanza, super::wal::POINT, path).filter(|(_, f)| f.has_pages())
}

/// Every recorded restore point of the stanza, by cluster record and LSN, and what could not
/// be read (each naming its object): one damaged document must not hide every other point.
pub async fn list(repo: &Repository, stanza: &str) -> Result<(Vec<Recorded>, Vec<String>)> {
    let listed = repo
        .store
        .list(&super::wal::area_dir(stanza, super::wal::POINT))
        .await?;
    let mut out: Vec<Recorded> = Vec::new();
    let mut bad = Vec::new();
    let mut reads = futures::stream::iter(listed.into_iter().map(|l| async move {
        let Some((db, _)) = parse_path(stanza, &l.path) else {
            return Err(Error::corrupt(format!(
                "'{}' is not where restore points are filed",
                l.path
            )));
        };
        let b = repo.store.get(&l.path).await?;
        open(repo, &l.path, db, &b)
    }))
    .buffer_unordered(16);
    while let Some(r) = reads.next().await {
        match r {
            Ok(v) => out.extend(v),
            Err(e) if e.kind == crate::error::ErrorKind::Corrupt => bad.push(e.message),
            Err(e) => return Err(e),
        }
    }
    // A timeline's first segment repeats its parent's WAL up to the switch point, and with
    // it the parent's points there: one point, kept on the lowest timeline.
    out.sort_by_key(|r| (r.db_id, r.point.lsn, r.timeline));
    out.dedup_by(|b, a| a.db_id == b.db_id && a.point == b.point);
    Ok((out, bad))
}
