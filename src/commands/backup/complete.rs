//! Complete: the manifest, written last, makes the backup exist; then the result line, and
//! expire-auto's upkeep.

use super::init::Cluster;
use super::process::Read;
use super::start::Started;
use super::stop::Stopped;
use super::walk::Walk;
use crate::clock;
use crate::commands::expire::ExpireReport;
use crate::error::{Error, ErrorKind, Result};
use crate::repo::Repository;
use crate::repo::lease::{self, Lease};
use crate::repo::manifest::{self, BackupType, Manifest, Tablespace};
use crate::repo::stanza::StanzaDb;
use serde_json::json;
use std::time::{Instant, UNIX_EPOCH};

/// Everything the phases learnt, for the manifest.
pub(super) struct Parts<'a> {
    pub db: &'a StanzaDb,
    pub cluster: &'a Cluster,
    pub kind: BackupType,
    pub parent: Option<&'a Manifest>,
    pub started: Started,
    pub stopped: Stopped,
    pub walked: Walk,
    pub read: Read,
    /// When the command began, for the duration in the stats.
    pub began: Instant,
}

/// The backup's manifest.
pub(super) fn manifest(p: Parts) -> Manifest {
    let Parts {
        db,
        cluster,
        kind,
        parent,
        started,
        stopped,
        walked,
        read,
        began,
    } = p;
    let Read {
        mut files,
        mut errors,
        mut stats,
    } = read;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    stats.files = files.len() as u64;
    stats.logical_bytes = files.iter().map(|f| f.size).sum();
    stats.reused_files = files.iter().filter(|f| f.reused).count() as u64;
    stats.duration_ms = began.elapsed().as_millis() as u64;
    errors.sort_by(|a, b| (&a.file, a.block).cmp(&(&b.file, b.block)));
    let (start_time, stop_time) = (started.time, stopped.time);
    Manifest {
        format: manifest::FORMAT.into(),
        version: 1,
        label: started.label,
        kind,
        parent: parent.map(|p| p.label.clone()),
        db_id: db.id,
        system_id: db.system_id.clone(),
        pg_major: db.pg_major,
        pg_version_num: cluster.version_num as u32,
        timeline: started.timeline,
        start_lsn: started.lsn_text,
        stop_lsn: stopped.lsn_text,
        start_wal: started.wal,
        stop_wal: stopped.wal,
        start_time: humantime::format_rfc3339_seconds(start_time).to_string(),
        stop_time: humantime::format_rfc3339_seconds(stop_time).to_string(),
        start_unix: clock::unix(start_time),
        stop_unix: clock::unix(stop_time),
        stop_ms: stop_time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        stop_next_xid: Some(stopped.next_xid),
        backup_label: stopped.backup_label,
        tablespace_map: stopped.tablespace_map.filter(|s| !s.is_empty()),
        checksums: cluster.checksums,
        tablespaces: walked
            .tablespaces
            .iter()
            .map(|(oid, loc)| Tablespace {
                oid: *oid,
                name: stopped
                    .tablespace_names
                    .get(oid)
                    .cloned()
                    .unwrap_or_default(),
                location: loc.clone(),
            })
            .collect(),
        dirs: walked.dirs,
        links: walked.links,
        files,
        checksum_errors: errors,
        stats,
    }
}

/// Withdraws the backup just recorded when its lease did not hold to the end.
pub(super) async fn withdraw_unless_held(
    lease: &Lease,
    repo: &Repository,
    stanza_name: &str,
    m: &Manifest,
) -> Result<()> {
    if lease.still_held().await? {
        return Ok(());
    }
    // Collected as dead while paused: blocks this backup relies on may be gone.
    let _ = repo
        .store
        .delete(&manifest::path(stanza_name, &m.label))
        .await;
    Err(Error::new(
        ErrorKind::Conflict,
        format!(
            "backup {} withdrawn: its lease {} expired while it ran (the process was stopped for more than {} s), so garbage collection may have removed blocks it references",
            m.label,
            lease.path,
            lease::TTL_SECONDS
        ),
    )
    .hint("take the backup again"))
}

/// The result, as text and as JSON.
pub(super) fn result(m: &Manifest, expired: Option<&ExpireReport>) -> (String, serde_json::Value) {
    let label = &m.label;
    let kind = m.kind;
    let s = &m.stats;
    // The result line says it; an INFO line would print it twice.
    log::debug!(
        "backup {label} complete: {} files, {:.1} MiB, {:.1} MiB read, {:.1} MiB new, {:.1} MiB stored, in {:.1}s",
        s.files,
        s.logical_bytes as f64 / 1048576.0,
        s.read_bytes as f64 / 1048576.0,
        s.new_bytes as f64 / 1048576.0,
        s.stored_bytes as f64 / 1048576.0,
        s.duration_ms as f64 / 1000.0
    );
    let mut text = format!(
        "backup {label} ({}): {} files, {:.1} MiB; {:.1} MiB new, {:.1} MiB added to the repository; WAL {}..{}",
        kind.name(),
        s.files,
        s.logical_bytes as f64 / 1048576.0,
        s.new_bytes as f64 / 1048576.0,
        s.stored_bytes as f64 / 1048576.0,
        m.start_wal,
        m.stop_wal
    );
    for e in &m.checksum_errors {
        text.push_str(&format!(
            "\npage checksum failure: {} block {}",
            e.file, e.block
        ));
    }
    // Expire's lines only when it did something: a quiet night stays quiet.
    if let Some(r) =
        expired.filter(|r| !r.expired.is_empty() || r.wal_files > 0 || r.freed_bytes != 0)
    {
        for line in r.summary_lines() {
            text.push_str(&format!("\n{line}"));
        }
    }
    let json = json!({"label": label, "type": kind.name(), "parent": m.parent, "stats": m.stats, "start_wal": m.start_wal,
               "stop_wal": m.stop_wal, "checksum_errors": m.checksum_errors, "expire": expired});
    (text, json)
}

/// With fail-on-page-error, pages that failed their checksum fail the command (the backup is
/// kept either way).
pub(super) fn page_errors(m: &Manifest, fail_on_page_error: bool) -> Result<()> {
    if !m.checksum_errors.is_empty() && fail_on_page_error {
        return Err(Error::corrupt(format!(
            "backup {} found {} page(s) with checksum failures (listed above and in its manifest)",
            m.label,
            m.checksum_errors.len()
        )));
    }
    Ok(())
}
