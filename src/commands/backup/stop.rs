//! Stop: pg_backup_stop on the session that started the backup, which returns the backup_label
//! and tablespace_map a restore writes; and what else the manifest needs from the server.

use crate::clock;
use crate::error::Result;
use crate::pg::session::BackupSession;
use std::collections::HashMap;
use std::time::SystemTime;

/// Where the backup stopped.
pub(super) struct Stopped {
    pub lsn_text: String,
    pub backup_label: String,
    pub tablespace_map: Option<String>,
    pub time: SystemTime,
    pub wal: String,
    pub next_xid: String,
    /// Tablespace names by oid.
    pub tablespace_names: HashMap<u32, String>,
}

pub(super) async fn stop(pg: &BackupSession, major: u32) -> Result<Stopped> {
    let stopped = pg.stop(major).await?;
    let time = clock::now();
    let wal = pg.walfile_name(&stopped.lsn).await?;
    // A transaction id assigned after the stop: every transaction at or past it was assigned,
    // and so committed, after the backup's end, where recovery is consistent. A snapshot's
    // xmax would not do: a transaction whose commit record is written but which still waits
    // for a synchronous standby counts as running, and may lie before the end. Costs one xid
    // and one commit record per backup.
    let next_xid = pg.next_xid().await?;
    let tablespace_names = pg.tablespace_names().await?;
    Ok(Stopped {
        lsn_text: stopped.lsn,
        backup_label: stopped.backup_label,
        tablespace_map: stopped.tablespace_map,
        time,
        wal,
        next_xid,
        tablespace_names,
    })
}
