//! A stanza's history of clusters: one sealed record per PostgreSQL cluster the stanza has served
//! (`<stanza>/db/<id>`), the newest being the current one. stanza-create writes id 1;
//! stanza-upgrade, after pg_upgrade, adds the next. Records are write-once like everything else, so
//! two racing upgrades cannot both claim the same id, and the WAL of each cluster stays filed
//! under its own id (`<stanza>/wal/<id>/...`): the new cluster's timeline 1 never collides with
//! the old one's.

use super::Repository;
use super::crypto::{Kind, Opener, Sealer};
use crate::error::{Error, ErrorKind, Result};
use crate::store::Put;
use serde::{Deserialize, Serialize};

pub const DB_FORMAT: &str = "pgfrost-stanza-db";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StanzaDb {
    pub format: String,
    pub version: u32,
    /// 1, 2, ...: also the object's name, zero-padded to 4 digits.
    pub id: u32,
    /// The cluster's system identifier, as a decimal string (it does not fit a JSON double).
    pub system_id: String,
    /// Major version, e.g. 15.
    pub pg_major: u32,
    /// server_version_num when the record was written, e.g. 150018.
    pub pg_version_num: u32,
    pub wal_segment_size: u64,
    pub control_version: u32,
    pub catalog_version: u32,
    pub created: String,
}

impl StanzaDb {
    pub fn system_id(&self) -> u64 {
        self.system_id.parse().unwrap_or(0)
    }
    /// The directory name under `wal/` and `db/`.
    pub fn dir(&self) -> String {
        format!("{:04}", self.id)
    }
    /// True when both describe the same cluster (same system identifier and major version).
    pub fn same_cluster(&self, other: &StanzaDb) -> bool {
        self.system_id == other.system_id && self.pg_major == other.pg_major
    }
}

/// The WAL segment size of record `id` among `dbs` (PostgreSQL's default when the record is
/// unknown, which verify reports separately).
pub fn seg_size(dbs: &[StanzaDb], id: u32) -> u64 {
    dbs.iter()
        .find(|d| d.id == id)
        .map(|d| d.wal_segment_size)
        .unwrap_or(16 << 20)
}

pub fn db_path(stanza: &str, id: u32) -> String {
    format!("{stanza}/db/{id:04}")
}

/// Reads every record, oldest first. Each is authenticated with its path as the sealed name.
pub async fn history(repo: &Repository, stanza: &str) -> Result<Vec<StanzaDb>> {
    let mut out: Vec<StanzaDb> = Vec::new();
    for l in repo.store.list(&format!("{stanza}/db")).await? {
        let bytes = repo.store.get(&l.path).await?;
        let bad = |m: String| {
            Error::corrupt(format!(
                "stanza record '{}' in repository {}: {m}",
                l.path,
                repo.store.location()
            ))
        };
        let plain = Opener::new()
            .open(
                &repo.keys,
                Kind::StanzaDb,
                l.path.as_bytes(),
                &bytes,
                1 << 20,
            )
            .map_err(|e| bad(e.to_string()))?;
        let db: StanzaDb =
            serde_json::from_slice(&plain).map_err(|e| bad(format!("does not parse: {e}")))?;
        if db.format != DB_FORMAT || db.version != 1 {
            return Err(bad(format!(
                "format {} version {} is not supported",
                db.format, db.version
            )));
        }
        if db_path(stanza, db.id) != l.path {
            return Err(bad(format!("claims id {}", db.id)));
        }
        out.push(db);
    }
    out.sort_by_key(|d| d.id);
    Ok(out)
}

/// The current record, or an error telling the operator to create the stanza.
pub async fn current(repo: &Repository, stanza: &str) -> Result<StanzaDb> {
    history(repo, stanza).await?.pop().ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "stanza '{stanza}' does not exist in repository {}",
                repo.store.location()
            ),
        )
        .hint(format!(
            "create it with 'pgfrost stanza-create --stanza {stanza}' while the cluster runs"
        ))
    })
}

/// Writes `db` as the record with id `db.id`; false when that id is taken (someone else won).
pub async fn write(repo: &Repository, stanza: &str, db: &StanzaDb) -> Result<bool> {
    let path = db_path(stanza, db.id);
    let json = serde_json::to_vec_pretty(db).expect("record serializes");
    let sealed = Sealer::new(Some(3)).seal(&repo.keys, Kind::StanzaDb, path.as_bytes(), &json);
    Ok(repo.store.put_new(&path, sealed.into()).await? == Put::Created)
}

/// One object of the WAL archive.
#[derive(Debug, Clone)]
pub struct WalObject {
    pub path: String,
    pub size: u64,
    /// When it was stored (Unix seconds, the storage's clock).
    pub modified: i64,
    /// The stanza record it is filed under.
    pub db_id: u32,
    pub file: crate::pg::wal::WalFile,
}

/// Lists the stanza's WAL archive, oldest first within each cluster and timeline. Objects whose
/// path is not a WAL file filed where it belongs are returned separately (verify reports them).
pub async fn list_wal(
    repo: &Repository,
    stanza: &str,
) -> Result<(Vec<WalObject>, Vec<crate::store::Listed>)> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for l in repo.store.list(&super::wal::archive_dir(stanza)).await? {
        match super::wal::parse_path(stanza, &l.path) {
            Some((db_id, file)) => good.push(WalObject {
                path: l.path,
                size: l.size,
                modified: l.modified,
                db_id,
                file,
            }),
            None => bad.push(l),
        }
    }
    Ok((good, bad))
}
