//! Init: before anything is read, make sure this is the only backup of the stanza, that the
//! cluster connected to is the stanza's, and which backup (for diff/incr) this one builds on.

use crate::error::{Error, ErrorKind, Result};
use crate::pg::session::BackupSession;
use crate::pg::{control, wal};
use crate::repo::Repository;
use crate::repo::lease::{self, Lease, LeaseKind};
use crate::repo::manifest::{self, BackupType, Manifest};
use crate::repo::stanza::StanzaDb;
use std::path::PathBuf;
use std::time::Duration;

/// Refuses to go on when another backup of the stanza holds a lease.
pub(super) async fn refuse_others(lease: &Lease, stanza_name: &str) -> Result<()> {
    // Two backups of one stanza would pick the same label in the same second and the
    // loser would find out only when writing its manifest. Each writes its lease before
    // it lists. Of two started together the later one (creation time, then id) refuses
    // at once when it sees the other. But the lists need not agree: the earlier one may
    // have listed before the later one's lease existed, while the later one saw it; then
    // neither finds a lease before its own. So a backup that sees only later leases waits
    // for their holders to decide: one that saw us refuses and deletes its lease; one
    // still there after that went on without seeing us, and we refuse instead.
    let backups = || async {
        Ok::<_, Error>(
            lease
                .others(stanza_name)
                .await?
                .into_iter()
                .filter(|f| f.doc.as_ref().is_some_and(|d| d.kind == LeaseKind::Backup))
                .collect::<Vec<_>>(),
        )
    };
    let refuse = |f: &lease::Found| {
        Error::new(
            ErrorKind::Conflict,
            format!(
                "another backup of stanza '{stanza_name}' is running: {}",
                f.describe()
            ),
        )
        .hint(format!(
            "wait for it to finish; a lease left by a killed backup stops counting after {} s (at once on its own host)",
            lease::TTL_SECONDS
        ))
    };
    let seen = backups().await?;
    if let Some(f) = seen
        .iter()
        .find(|f| f.doc.as_ref().is_some_and(|d| lease.preceded_by(d)))
    {
        return Err(refuse(f));
    }
    if !seen.is_empty() {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let again = backups().await?;
        if let Some(f) = again.iter().find(|f| seen.iter().any(|s| s.path == f.path)) {
            return Err(refuse(f));
        }
    }
    Ok(())
}

/// What the backup needs to know of the connected cluster.
pub(super) struct Cluster {
    pub pg_path: PathBuf,
    pub major: u32,
    pub version_num: i32,
    pub checksums: bool,
}

/// Checks that the connected cluster is the stanza's, a primary, and that pg-path is its data
/// directory.
pub(super) async fn cluster(
    pg: &BackupSession,
    stanza_name: &str,
    db: &StanzaDb,
) -> Result<Cluster> {
    let sysid = pg.system_id().await?;
    let version_num = pg.version_num().await?;
    if sysid != db.system_id() || version_num as u32 / 10000 != db.pg_major {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "stanza '{stanza_name}' belongs to system identifier {} (PostgreSQL {}), the cluster at {} is {} (PostgreSQL {})",
                db.system_id,
                db.pg_major,
                pg.target().describe(),
                sysid,
                version_num / 10000
            ),
        )
        .hint("check --stanza and the pg-* options; after pg_upgrade run stanza-upgrade"));
    }
    if pg.in_recovery().await? {
        return Err(Error::new(
            ErrorKind::Postgres,
            "backups from a standby are not supported yet",
        )
        .hint("point pg-host/pg-port at the primary"));
    }
    let pg_path = pg.pg_path().await?;
    if control::read_control(&pg_path)?.system_id != sysid {
        return Err(Error::new(
            ErrorKind::Postgres,
            format!(
                "pg-path {} is not the data directory of the connected cluster",
                pg_path.display()
            ),
        ));
    }
    let checksums = pg.setting("data_checksums").await? == "on";
    Ok(Cluster {
        pg_path,
        major: db.pg_major,
        version_num,
        checksums,
    })
}

/// The parent: incr builds on the newest backup, diff on the newest full, of this cluster
/// and on its line of history. A promoted standby and the old primary may both archive into
/// the stanza: each must build on its own backups, never on a timeline it did not come from.
/// With none, the backup is a full one.
pub(super) async fn parent(
    pg: &BackupSession,
    repo: &Repository,
    stanza_name: &str,
    db: &StanzaDb,
    kind: BackupType,
    pg_path: &std::path::Path,
    labels: &[String],
) -> Result<(BackupType, Option<Manifest>)> {
    if kind == BackupType::Full {
        return Ok((kind, None));
    }
    let current = pg.current_walfile().await?;
    let current = u32::from_str_radix(&current[0..8], 16).unwrap_or(1);
    let mut tl = crate::commands::archive::Timelines::new(repo, stanza_name).await?;
    // The cluster's own pg_wal holds its history file, should the archive not have it yet.
    let local = std::fs::read_to_string(pg_path.join(format!("pg_wal/{current:08X}.history")))
        .ok()
        .and_then(|t| crate::pg::timeline::parse_history(&t));
    let history = match tl.history(current).await? {
        Some(h) => h,
        None => local.unwrap_or_default(),
    };
    for l in labels.iter().rev() {
        let m = manifest::read(repo, stanza_name, l).await?;
        if m.db_id != db.id || (kind == BackupType::Diff && m.kind != BackupType::Full) {
            continue;
        }
        let stop = wal::parse_lsn(&m.stop_lsn).unwrap_or(u64::MAX);
        if let Some(why) = crate::pg::timeline::unreachable(current, &history, m.timeline, stop) {
            log::info!("backup: {l} cannot be the parent: {why}");
            continue;
        }
        return Ok((kind, Some(m)));
    }
    log::warn!(
        "no earlier full backup of this cluster in stanza '{stanza_name}': taking a full backup"
    );
    Ok((BackupType::Full, None))
}
