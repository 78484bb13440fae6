//! restore: rebuild a data directory from a backup and configure recovery.
//!
//! Every block is authenticated and its id recomputed as it is written. `global/pg_control` is
//! written last, after everything else has been synced to disk: a restore that stops halfway
//! leaves a directory PostgreSQL refuses to start, never one that starts with missing files.
//!
//! The phases, in order (each in its own file):
//! 1. options: the settings read into [`RestoreOptions`] before any I/O;
//! 2. prepare (check): no server running in the target, empty unless `--delta` or `--force`;
//! 3. choose: the backup set that can reach the target (`--set`, else the newest that can),
//!    with named_points for `--type name`;
//! 4. places: where tablespaces and links go, each place checked (never another cluster's);
//! 5. prepare: the data directory, links and directories made, what the backup lacks removed;
//! 6. files: every file written by the worker pool, each flushed by the syncer;
//! 7. dir_modes: directory modes and owners, after their contents;
//! 8. recovery: backup_label, tablespace_map, postgresql.auto.conf (restore_command, the
//!    target), the signal file;
//! 9. pg_control: directory entries flushed, then pg_control, last;
//! 10. report: what was done.

mod choose;
mod conf;
mod dir_modes;
mod files;
mod named_points;
mod options;
mod pg_control;
mod places;
mod prepare;
mod recovery;
mod report;
mod restore_command;
mod roots;
mod target_time;

pub use conf::{disable_recovery_settings, timezone_setting};
pub use options::{
    ArchiveMode, Overwrite, Placement, RecoveryTarget, RestoreOptions, TargetTimeline,
};
pub use report::Restored;
pub use restore_command::{ArchiveGet, RESTORE_COMMAND_OPTIONS, WITHHELD_OPTIONS, restore_command};
pub use target_time::{TIME_FORMS, TargetTime, parse_target_time};

use super::{StoreOptions, emit, open_repo};
use crate::config::Settings;
use crate::error::Result;
use crate::repo::Repository;
use crate::repo::stanza;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub async fn run(settings: &Settings) -> Result<()> {
    let pg_path = PathBuf::from(settings.required("pg-path")?);
    let opts = options(settings)?;
    let started = Instant::now();
    prepare::check_target(&pg_path, &opts)?;
    let repo = open_repo(settings).await?;
    let r = restore_into(&repo, &opts, &pg_path, Placement::Operator, started).await?;
    emit(
        settings,
        &report::result_text(&r, &opts),
        serde_json::to_value(&r).expect("serializes"),
    );
    Ok(())
}

/// The restore options, read and checked before anything is read or written.
pub fn options(settings: &Settings) -> Result<RestoreOptions> {
    let stanza = settings.required("stanza")?.to_string();
    let kind = settings.string("type").unwrap_or("default");
    RecoveryTarget::check_type(kind)?;
    let text = if RecoveryTarget::takes_target(kind) {
        Some(settings.required("target")?)
    } else {
        settings.string("target")
    };
    let target = RecoveryTarget::parse(kind, text)?;
    let timeline = TargetTimeline::parse(settings.string("target-timeline"))?;
    let tablespace_map = settings
        .map("tablespace-map")?
        .into_iter()
        .map(|(oid, dir)| (oid.parse().expect("checked by Settings::map"), dir))
        .collect();
    Ok(RestoreOptions {
        stanza,
        target,
        set: settings.string("set").map(str::to_string),
        timeline,
        timeline_given: settings.string("target-timeline").map(str::to_string),
        target_action: settings.string("target-action").map(str::to_string),
        target_exclusive: settings.flag("target-exclusive")?,
        overwrite: Overwrite::from_flags(settings.flag("delta")?, settings.flag("force")?),
        archive: if settings.string("archive-mode") == Some("off") {
            ArchiveMode::Off
        } else {
            ArchiveMode::Preserve
        },
        tablespace_map,
        link_map: settings.map("link-map")?,
        process_max: settings.u32("process-max"),
        store: StoreOptions::from_settings(settings)?,
        archive_get: archive_get(settings),
    })
}

/// What restore_command passes on to archive-get: the options the restore had from the
/// command line or the environment (PostgreSQL runs restore_command with its own environment,
/// and the config file is passed whole).
pub(crate) fn archive_get(settings: &Settings) -> ArchiveGet {
    use crate::config::Source;
    let given = RESTORE_COMMAND_OPTIONS
        .iter()
        .filter_map(|&o| match settings.get(o) {
            Some(v) if !matches!(v.source, Source::Default | Source::File(..)) => {
                Some((o, v.value.clone()))
            }
            _ => None,
        })
        .collect();
    let withheld = WITHHELD_OPTIONS
        .iter()
        .copied()
        .filter(|o| {
            settings
                .get(o)
                .is_some_and(|v| matches!(v.source, Source::CommandLine | Source::Env(_)))
        })
        .collect();
    ArchiveGet {
        config_file: settings.config_file.clone(),
        given,
        withheld,
    }
}

/// Restores into `pg_path` with `opts`, putting what lies outside the data directory as
/// `placement` says.
pub async fn restore(
    repo: &Repository,
    opts: &RestoreOptions,
    pg_path: &Path,
    placement: Placement<'_>,
) -> Result<Restored> {
    let started = Instant::now();
    let opts = opts.placed(placement);
    prepare::check_target(pg_path, &opts)?;
    restore_into(repo, &opts, pg_path, placement, started).await
}

/// The restore itself, under a read lease.
async fn restore_into(
    repo: &Repository,
    opts: &RestoreOptions,
    pg_path: &Path,
    placement: Placement<'_>,
    started: Instant,
) -> Result<Restored> {
    stanza::current(repo, &opts.stanza).await?;
    let lease = super::read_lease(repo, &opts.stanza, "restore").await?;
    let r = restore_from(repo, opts, pg_path, placement, started).await;
    if let Some(l) = lease {
        l.release().await;
    }
    r
}

async fn restore_from(
    repo: &Repository,
    opts: &RestoreOptions,
    pg_path: &Path,
    placement: Placement<'_>,
    started: Instant,
) -> Result<Restored> {
    let bs = opts.store.open(repo, &opts.stanza).await?;
    let chosen = choose::choose(repo, opts, &bs).await?;
    choose::announce(&chosen, pg_path);
    let m = &chosen.m;
    let (places, link_report) = places::place(m, pg_path, placement, opts)?;
    if opts.archive == ArchiveMode::Preserve && !opts.overwrite.allowed() {
        log::warn!(
            "{}",
            report::archiving_warning(&opts.stanza).replace('\n', "; ")
        );
    }
    let who = prepare::ClusterOwner::of(m)?;
    let roots = prepare::prepare(m, &places, who, opts)?;
    let sh = Arc::new(files::Shared {
        bs,
        rt: tokio::runtime::Handle::current(),
        delta: opts.overwrite.delta(),
        chown: who.chown,
        roots,
        written: AtomicU64::new(0),
    });
    files::write_files(&sh, m, &places, opts.process_max)
        .await
        .map_err(|e| {
            e.context(format!(
                "restore of {} into {} failed; the directory will not start",
                m.label,
                pg_path.display()
            ))
        })?;
    dir_modes::set_dir_modes(m, &places, &sh.roots, who.chown)?;
    recovery::write_recovery_files(m, &places, &sh.roots, opts, placement)?;
    pg_control::sync_dirs(m, &places, &sh)?;
    pg_control::write_pg_control(m, &places, &sh).await?;

    let written = sh.written.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    // The result line says it; an INFO line would print it twice.
    log::debug!(
        "restore: {} restored in {secs:.1}s, {:.1} MiB written",
        m.label,
        written as f64 / 1048576.0
    );
    Ok(Restored::new(
        &chosen,
        opts,
        pg_path,
        link_report,
        written,
        secs,
    ))
}
