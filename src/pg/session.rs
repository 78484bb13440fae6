//! The SQL the commands run, on one session each: what a cluster says about itself and its
//! archiver (check, stanza-*), and a backup's start, stop and WAL summaries (`BackupSession`).

use super::conn::{self, PgTarget, pg_err, query_one};
use crate::error::Result;
use std::collections::HashMap;
use std::path::PathBuf;
use tokio_postgres::Client;

/// One connection to the cluster, whose session never times out (conn::connect).
pub struct Session {
    client: Client,
    target: PgTarget,
}

/// What pg_stat_archiver says after a segment failed to arrive.
pub struct Archiver {
    pub failed: i64,
    pub last_failed: String,
    pub last_failed_time: String,
    pub last_archived: String,
}

impl Session {
    pub async fn connect(target: &PgTarget) -> Result<Session> {
        Ok(Session {
            client: conn::connect(target).await?,
            target: target.clone(),
        })
    }

    pub fn target(&self) -> &PgTarget {
        &self.target
    }

    /// A server setting, as current_setting shows it.
    pub async fn setting(&self, name: &str) -> Result<String> {
        query_one(&self.client, &format!("SELECT current_setting('{name}')")).await
    }

    pub async fn version_num(&self) -> Result<i32> {
        query_one(
            &self.client,
            "SELECT current_setting('server_version_num')::int",
        )
        .await
    }

    pub async fn system_id(&self) -> Result<u64> {
        let id: i64 = query_one(
            &self.client,
            "SELECT system_identifier FROM pg_control_system()",
        )
        .await?;
        Ok(id as u64)
    }

    pub async fn in_recovery(&self) -> Result<bool> {
        query_one(&self.client, "SELECT pg_is_in_recovery()").await
    }

    pub async fn wal_segment_size(&self) -> Result<String> {
        query_one(
            &self.client,
            "SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'",
        )
        .await
    }

    /// The data directory: pg-path when given, else where the server says it is.
    pub async fn pg_path(&self) -> Result<PathBuf> {
        match &self.target.path {
            Some(p) => Ok(p.clone()),
            None => Ok(PathBuf::from(self.setting("data_directory").await?)),
        }
    }

    /// The name of the WAL segment holding an LSN (given as text).
    pub async fn walfile_name(&self, lsn: &str) -> Result<String> {
        Ok(self
            .client
            .query_one("SELECT pg_walfile_name($1::text::pg_lsn)", &[&lsn])
            .await
            .map_err(|e| pg_err("pg_walfile_name failed", e))?
            .get(0))
    }

    /// The name of the WAL segment being written now.
    pub async fn current_walfile(&self) -> Result<String> {
        Ok(self
            .client
            .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
            .await
            .map_err(|e| pg_err("pg_walfile_name failed", e))?
            .get(0))
    }

    pub async fn archiver_failed_count(&self) -> Result<i64> {
        query_one(&self.client, "SELECT failed_count FROM pg_stat_archiver").await
    }

    pub async fn archiver(&self) -> Result<Archiver> {
        let row = self
            .client
            .query_one(
                "SELECT failed_count, coalesce(last_failed_wal, ''), coalesce(last_failed_time::text, ''), \
                 coalesce(last_archived_wal, '') FROM pg_stat_archiver",
                &[],
            )
            .await
            .map_err(|e| pg_err("cannot read pg_stat_archiver", e))?;
        Ok(Archiver {
            failed: row.get(0),
            last_failed: row.get(1),
            last_failed_time: row.get(2),
            last_archived: row.get(3),
        })
    }

    /// Ends the current WAL segment and returns its name.
    pub async fn switch_wal(&self) -> Result<String> {
        // A switch with no WAL written since the last one switches nothing: write a record first.
        self.client
            .batch_execute("SELECT pg_logical_emit_message(false, 'pgfrost', 'check')")
            .await
            .map_err(|e| pg_err("cannot write a WAL record", e))?;
        query_one(&self.client, "SELECT pg_walfile_name(pg_switch_wal())").await
    }
}

/// Blocks changed since the parent, per relation fork: (tablespace, database, relfilenode, fork).
pub type RelKey = (u32, u32, u32, i16);

/// One row of pg_wal_summary_contents: a changed block, or the limit block a fork was
/// truncated to.
pub struct SummaryEntry {
    pub rel: RelKey,
    pub block: u64,
    pub is_limit: bool,
}

/// What pg_backup_stop returns.
pub struct BackupStop {
    pub lsn: String,
    pub backup_label: String,
    pub tablespace_map: Option<String>,
}

/// The session a backup holds from pg_backup_start to pg_backup_stop: a non-exclusive backup
/// belongs to its session, and leaving the session aborts it on the server.
pub struct BackupSession {
    session: Session,
}

impl std::ops::Deref for BackupSession {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl BackupSession {
    pub async fn connect(target: &PgTarget) -> Result<BackupSession> {
        Ok(BackupSession {
            session: Session::connect(target).await?,
        })
    }

    /// pg_backup_start (pg_start_backup before 15); returns the start LSN as text.
    pub async fn start(&self, label: &str, fast: bool, major: u32) -> Result<String> {
        let sql = if major >= 15 {
            "SELECT pg_backup_start($1, $2)::text"
        } else {
            "SELECT pg_start_backup($1, $2, false)::text"
        };
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&label, &fast];
        Ok(self
            .session
            .client
            .query_one(sql, &params)
            .await
            .map_err(|e| pg_err("pg_backup_start failed", e))?
            .get(0))
    }

    /// pg_backup_stop (pg_stop_backup before 15), without waiting for the archiver: the backup
    /// waits for its WAL in the repository itself.
    pub async fn stop(&self, major: u32) -> Result<BackupStop> {
        let sql = if major >= 15 {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)"
        } else {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, false)"
        };
        let row = self
            .session
            .client
            .query_one(sql, &[])
            .await
            .map_err(|e| pg_err("pg_backup_stop failed", e))?;
        Ok(BackupStop {
            lsn: row.get(0),
            backup_label: row.get(1),
            tablespace_map: row.get(2),
        })
    }

    /// Assigns a transaction id and returns it (costs one xid and one commit record).
    pub async fn next_xid(&self) -> Result<String> {
        Ok(self
            .session
            .client
            .query_one("SELECT pg_current_xact_id()::text", &[])
            .await
            .map_err(|e| pg_err("cannot read the next transaction id", e))?
            .get(0))
    }

    /// Tablespace names by oid.
    pub async fn tablespace_names(&self) -> Result<HashMap<u32, String>> {
        Ok(self
            .session
            .client
            .query("SELECT oid, spcname FROM pg_tablespace", &[])
            .await
            .map_err(|e| pg_err("cannot list tablespaces", e))?
            .into_iter()
            .map(|r| (r.get::<_, u32>(0), r.get::<_, String>(1)))
            .collect())
    }

    /// How far the WAL summarizer has got (PostgreSQL 17+), as text.
    pub async fn summarized_lsn(&self) -> Result<String> {
        query_one(
            &self.session.client,
            "SELECT summarized_lsn::text FROM pg_get_wal_summarizer_state()",
        )
        .await
    }

    /// The WAL summaries on `timeline` that overlap `from..to` (LSNs as text), in order.
    pub async fn wal_summaries(
        &self,
        timeline: u32,
        from: &str,
        to: &str,
    ) -> Result<Vec<(String, String)>> {
        let rows = self
            .session
            .client
            .query(
                "SELECT start_lsn::text, end_lsn::text FROM pg_available_wal_summaries() \
                 WHERE tli = $1 AND end_lsn > $2::text::pg_lsn AND start_lsn < $3::text::pg_lsn ORDER BY start_lsn",
                &[&(timeline as i64), &from, &to],
            )
            .await
            .map_err(|e| pg_err("cannot list WAL summaries", e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// What one WAL summary (`from..to` on `timeline`) says changed.
    pub async fn wal_summary_contents(
        &self,
        timeline: u32,
        from: &str,
        to: &str,
    ) -> Result<Vec<SummaryEntry>> {
        let rows = self
            .session
            .client
            .query(
                "SELECT reltablespace, reldatabase, relfilenode, relforknumber, relblocknumber, is_limit_block \
                 FROM pg_wal_summary_contents($1, $2::text::pg_lsn, $3::text::pg_lsn)",
                &[&(timeline as i64), &from, &to],
            )
            .await
            .map_err(|e| pg_err("cannot read a WAL summary", e))?;
        Ok(rows
            .iter()
            .map(|r| SummaryEntry {
                rel: (
                    r.get::<_, u32>(0),
                    r.get::<_, u32>(1),
                    r.get::<_, u32>(2),
                    r.get::<_, i16>(3),
                ),
                block: r.get::<_, i64>(4) as u64,
                is_limit: r.get::<_, bool>(5),
            })
            .collect())
    }
}
