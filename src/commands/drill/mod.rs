//! drill: prove that a backup restores. Restore it into a scratch directory, start PostgreSQL
//! there on a private socket with no TCP listener, let it replay WAL to the end of the archive
//! (or a target), check the result, and report how long it all took. PostgreSQL is stopped and
//! the scratch directory removed whatever happens, Ctrl-C included.
//!
//! The phases, in order: options; scratch (the directory and the binaries); restore (the
//! restore command's own code, every path inside the scratch directory); start (PostgreSQL on
//! a private socket, until recovery ends); checks; outcome (the report, and the outcome
//! document kept in the repository); cleanup (scratch).

mod archive;
mod checks;
mod outcome;
mod scratch;
mod start;

pub use archive::primary_timeline;
pub use outcome::{Check, Report};

use super::restore::{self, RecoveryTarget, RestoreOptions};
use super::{emit, open_repo};
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result};
use crate::repo::stanza;
use scratch::Scratch;
use std::path::PathBuf;
use std::time::Instant;

/// What a drill needs from the options.
struct DrillOptions {
    restore: RestoreOptions,
    /// `--pg-bin`: the directory of pg_ctl and postgres.
    pg_bin: Option<PathBuf>,
    /// Where scratch directories go: `--drill-path`, else the system's temporary directory.
    base: PathBuf,
    /// The target in words, for the report.
    target_words: String,
}

pub async fn run(settings: &Settings) -> Result<()> {
    let opts = options(settings)?;
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Err(
            Error::config("the drill starts PostgreSQL, which refuses to run as root")
                .hint("run it as the postgres user"),
        );
    }
    let stanza_name = opts.restore.stanza.clone();
    let repo = open_repo(settings).await?;
    let db = stanza::current(&repo, &stanza_name).await?;
    let bin = scratch::find_bin(opts.pg_bin.as_deref(), db.pg_major)?;
    let scratch = Scratch::create(&opts.base, bin)?;
    // Ctrl-C or SIGTERM: clean up, then leave with the conventional code.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::internal(format!("cannot watch SIGTERM: {e}")))?;
    let started = Instant::now();
    let started_unix = crate::clock::now_unix();
    let result = tokio::select! {
        r = drill(&opts, &scratch, &repo, &db) => r,
        _ = tokio::signal::ctrl_c() => Err(Error::new(ErrorKind::DrillFailed, "drill interrupted (Ctrl-C)")),
        _ = term.recv() => Err(Error::new(ErrorKind::DrillFailed, "drill interrupted (SIGTERM)")),
    };
    scratch.cleanup();
    outcome::record(&repo, &stanza_name, &result, started_unix, started).await;
    let report = result?;
    emit(
        settings,
        &outcome::text(&report),
        serde_json::to_value(&report).expect("serializes"),
    );
    outcome::verdict(&report)
}

/// The drill's options, read and checked before anything is read or written.
fn options(settings: &Settings) -> Result<DrillOptions> {
    let restore = restore::options(settings)?;
    let mut target_words = settings
        .string("type")
        .unwrap_or("end of archive")
        .to_string();
    if let Some(t) = settings.string("target") {
        target_words = format!("{target_words} {t}");
    }
    Ok(DrillOptions {
        restore,
        pg_bin: settings.string("pg-bin").map(PathBuf::from),
        base: settings
            .string("drill-path")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir),
        target_words,
    })
}

async fn drill(
    opts: &DrillOptions,
    s: &Scratch,
    repo: &crate::repo::Repository,
    db: &stanza::StanzaDb,
) -> Result<Report> {
    let mut rep = Report {
        target: opts.target_words.clone(),
        ..Default::default()
    };
    let stanza_name = opts.restore.stanza.as_str();
    let given = opts.restore.timeline_given.as_deref();
    let started = Instant::now();
    // The timeline the stanza's primary is on, not the newest the archive holds: a test restore
    // promoted with archiving on leaves a branch there that the primary never took, and
    // following it ("latest", PostgreSQL's default) cannot find the checkpoints of the backups
    // taken on the primary since. The backup is chosen for that timeline too.
    let timeline = match given {
        Some(t) => t.parse::<u32>().ok(),
        None => primary_timeline(repo, stanza_name, db).await?,
    };
    // Every path of the restored cluster inside the scratch directory, archiving off: a drill
    // must never write into the cluster it came from, nor into its stanza.
    let placement = restore::Placement::Scratch(&s.dir, timeline);
    let restored = match restore::restore(repo, &opts.restore, &s.data, placement).await {
        Ok(r) => r,
        Err(e) => {
            rep.check("restore", false, e.to_string());
            return Ok(rep);
        }
    };
    rep.backup = restored.label.clone();
    rep.restore_seconds = started.elapsed().as_secs_f64();
    rep.check(
        "restore",
        true,
        format!(
            "{} MiB in {:.1}s",
            restored.bytes >> 20,
            rep.restore_seconds
        ),
    );

    let port = start::free_port();
    start::configure(s, port, timeline.filter(|_| given.is_none()))?;
    let recovery_started = Instant::now();
    let Some(client) = start::start(&mut rep, s, port).await? else {
        return Ok(rep);
    };
    let log_path = s.dir.join("server.log");
    if !start::wait_for_recovery(&mut rep, &client, &log_path).await {
        return Ok(rep);
    }
    rep.recovery_seconds = recovery_started.elapsed().as_secs_f64();
    // Where replay ended, from the server log.
    let reached = start::reached_point(&log_path);
    if let Some((lsn, time)) = &reached {
        rep.reached_lsn = Some(lsn.clone());
        rep.reached_time = time.clone();
    }
    rep.check(
        "recovery",
        true,
        format!(
            "consistent and promoted in {:.1}s, replay ended at {}",
            rep.recovery_seconds,
            rep.reached_lsn.as_deref().unwrap_or("?")
        ),
    );

    // Did replay reach the end of the archive? A missing segment ends recovery early and silently.
    if opts.restore.target == RecoveryTarget::EndOfArchive
        && let Some((lsn, _)) = &reached
    {
        checks::end_of_archive(&mut rep, repo, stanza_name, db, timeline, lsn).await?;
    }
    checks::databases(&mut rep, &client, s, port).await;
    checks::amcheck(&mut rep, s, port);
    checks::relation_sizes(&mut rep, s, &restored);
    rep.passed = rep.checks.iter().all(|c| c.ok);
    Ok(rep)
}
