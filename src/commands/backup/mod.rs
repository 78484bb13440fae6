//! backup: full, differential and incremental base backups through pg_backup_start /
//! pg_backup_stop, held on one session, with block-level dedup against the whole stanza.
//!
//! Order is what makes a backup trustworthy: blocks (packs, then index segments) are durable
//! first, then the WAL from the start to the stop segment is confirmed in the repository, and only
//! then is the manifest written. A backup killed or disconnected at any point before that has no
//! manifest, so it does not exist; the blocks it stored are reused by the next run.
//!
//! The phases, in order, one file each:
//! - init: the lease, the cluster's identity, the parent of a diff/incr;
//! - start: the label, pg_backup_start;
//! - walk: the data directory and tablespaces;
//! - process: read, checksum-check and store the files on the worker pool (worker), diff/incr
//!   from the parent and, on PostgreSQL 17+, from the WAL summaries (incremental);
//! - stop: pg_backup_stop, backup_label, tablespace_map;
//! - archive_check: wait for the WAL the backup needs;
//! - complete: the manifest, the result, expire-auto.

mod archive_check;
mod complete;
mod incremental;
mod init;
mod process;
mod start;
mod stop;
mod walk;
mod worker;

use super::{StoreOptions, emit, open_repo};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::pg::conn::PgTarget;
use crate::pg::session::BackupSession;
use crate::repo::Repository;
use crate::repo::lease::{Lease, LeaseKind};
use crate::repo::manifest::{self, BackupType, Manifest};
use crate::repo::stanza::{self, StanzaDb};
use std::time::{Duration, Instant};

/// The backup's options, read before any work.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub stanza: String,
    /// What was asked for: a diff or incr with no parent to build on becomes a full.
    pub kind: BackupType,
    /// start-fast: an immediate checkpoint instead of the next spread one.
    pub start_fast: bool,
    /// wal-summary: on PostgreSQL 17+, read only the blocks the WAL summaries name.
    pub wal_summary: bool,
    pub fail_on_page_error: bool,
    /// process-max: how many workers read and store files.
    pub process_max: usize,
    /// archive-timeout: how long to wait for the WAL the backup needs (and the summarizer).
    pub archive_timeout: Duration,
    /// expire-auto: the retention applied after the backup, read with the rest so that a bad
    /// policy fails before the backup, not after an hour of it.
    pub expire_auto: Option<super::expire::ExpireOptions>,
    pub store: StoreOptions,
}

impl BackupOptions {
    pub fn from_settings(settings: &Settings) -> Result<BackupOptions> {
        let stanza = settings.required("stanza")?.to_string();
        let kind = match settings.string("type").unwrap_or("incr") {
            "full" => BackupType::Full,
            "diff" => BackupType::Diff,
            "incr" => BackupType::Incr,
            other => {
                return Err(Error::config(format!("invalid backup type '{other}'"))
                    .hint("use --type full, diff or incr"));
            }
        };
        Ok(BackupOptions {
            stanza,
            kind,
            start_fast: settings.flag("start-fast")?,
            wal_summary: settings.flag("wal-summary")?,
            fail_on_page_error: settings.flag("fail-on-page-error")?,
            process_max: settings.u32("process-max") as usize,
            archive_timeout: Duration::from_secs(settings.u32("archive-timeout") as u64),
            // It asks for nothing but the policy: a `set` or `dry-run` left in the environment or
            // the config file for other commands must not steer it.
            expire_auto: match settings.flag("expire-auto")? {
                true => Some(super::expire::ExpireOptions::from_settings(
                    settings,
                    super::expire::Ask::default(),
                )?),
                false => None,
            },
            store: StoreOptions::from_settings(settings)?,
        })
    }
}

pub async fn run(settings: &Settings) -> Result<()> {
    let started = Instant::now();
    let opts = BackupOptions::from_settings(settings)?;
    let target = super::pg_target(settings)?;
    let stanza_name = opts.stanza.as_str();
    let repo = open_repo(settings).await?;
    let db = stanza::current(&repo, stanza_name).await?;
    // The lease comes before the index is read: garbage collection must either see this backup
    // and stand back, or be seen and waited for (repo/lease.rs).
    let lease = Lease::acquire(&repo.store, stanza_name, LeaseKind::Backup, "backup").await?;
    let taken = async {
        init::refuse_others(&lease, stanza_name).await?;
        lease.wait_for_gc(stanza_name).await?;
        let m = take(&opts, &target, &repo, &db, lease.may_write()?, started).await?;
        complete::withdraw_unless_held(&lease, &repo, stanza_name, &m).await?;
        Ok::<_, Error>(m)
    }
    .await;
    lease.release().await;
    let m = taken?;
    let expired = match &opts.expire_auto {
        Some(e) => expire_after(e, &repo, stanza_name, &m.label).await,
        None => None,
    };
    let (text, json) = complete::result(&m, expired.as_ref());
    emit(settings, &text, json);
    complete::page_errors(&m, opts.fail_on_page_error)
}

/// Takes the backup and records its manifest: init, start, walk, process, stop, archive check,
/// manifest. `started` is when the command began.
async fn take(
    opts: &BackupOptions,
    target: &PgTarget,
    repo: &Repository,
    db: &StanzaDb,
    may: crate::repo::lease::MayWrite<'_>,
    started: Instant,
) -> Result<Manifest> {
    let stanza_name = opts.stanza.as_str();
    let pg = BackupSession::connect(target).await?;
    let cluster = init::cluster(&pg, stanza_name, db).await?;
    let labels = manifest::list(repo, stanza_name).await?;
    let (kind, parent) = init::parent(
        &pg,
        repo,
        stanza_name,
        db,
        opts.kind,
        &cluster.pg_path,
        &labels,
    )
    .await?;
    let bs = opts.store.open(repo, stanza_name).await?;
    let adopted = bs.adopt_orphan_packs().await?;
    if adopted > 0 {
        log::info!("backup: reusing {adopted} pack(s) left by an interrupted run");
    }

    let (label, start_time) = start::label(&labels, parent.as_ref(), kind).await;
    let begun = start::start(&pg, label, start_time, kind, opts.start_fast, db.pg_major).await?;
    let mut walked = walk::run(&cluster.pg_path, db.pg_major).await?;
    let read = process::run(
        opts,
        &pg,
        &bs,
        may,
        &cluster,
        parent.as_ref(),
        &begun,
        &mut walked,
    )
    .await?;
    let stopped = stop::stop(&pg, db.pg_major).await?;
    archive_check::wait_for_wal(
        repo,
        stanza_name,
        db,
        (&begun.wal, &stopped.wal),
        &begun.label,
        opts.archive_timeout,
    )
    .await?;

    let m = complete::manifest(complete::Parts {
        db,
        cluster: &cluster,
        kind,
        parent: parent.as_ref(),
        started: begun,
        stopped,
        walked,
        read,
        began: started,
    });
    manifest::write(repo, stanza_name, &m).await?;
    Ok(m)
}

/// expire-auto: retention and garbage collection after the backup.
async fn expire_after(
    opts: &super::expire::ExpireOptions,
    repo: &Repository,
    stanza_name: &str,
    label: &str,
) -> Option<super::expire::ExpireReport> {
    match super::expire::expire_with(opts, repo, stanza_name).await {
        Ok(r) => Some(r),
        Err(e) => {
            // The backup itself is complete and recorded; a failed expire only delays upkeep.
            log::warn!("expire after backup {label} failed: {e}");
            None
        }
    }
}
