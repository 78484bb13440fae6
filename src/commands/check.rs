//! check: proves that archiving works end to end, and says in plain words what is wrong if not.

use super::{emit, open_repo};
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result};
use crate::pg::session::{Archiver, Session};
use crate::pg::wal::WalFile;
use crate::repo::Repository;
use crate::repo::stanza::StanzaDb;
use crate::repo::{outcome, stanza};
use serde_json::json;
use std::time::{Duration, Instant};

pub async fn run(settings: &Settings) -> Result<()> {
    let name = settings.required("stanza")?.to_string();
    let limits = Limits {
        backup: settings.duration("max-backup-age")?,
        wal: settings.duration("max-wal-age")?,
        verify: settings.duration("max-verify-age")?,
        drill: settings.duration("max-drill-age")?,
    };
    if limits.any() {
        let (code, line, json) = probe(open_repo(settings).await, &name, &limits).await;
        emit(settings, &line, json);
        if code != 0 {
            std::process::exit(code);
        }
        return Ok(());
    }
    let target = super::pg_target(settings)?;
    let timeout = Duration::from_secs(settings.u32("archive-timeout") as u64);
    let pg = Session::connect(&target).await?;
    archiving_configured(&pg).await?;
    let repo = open_repo(settings).await?;
    let db = stanza::current(&repo, &name).await?;
    let sysid = pg.system_id().await?;
    if db.system_id() != sysid {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "stanza '{name}' belongs to system identifier {}, the cluster is {}",
                db.system_id, sysid
            ),
        )
        .hint("check --stanza; after pg_upgrade run stanza-upgrade"));
    }
    let (segment, secs) = switch_and_wait(&pg, &repo, &name, &db, timeout).await?;
    emit(
        settings,
        &format!("WAL segment {segment} reached stanza '{name}' in {secs:.1}s: archiving works"),
        json!({"stanza": name, "segment": segment, "seconds": secs}),
    );
    Ok(())
}

/// The server's settings that archiving needs, in plain words when one is wrong.
async fn archiving_configured(pg: &Session) -> Result<()> {
    let archive_mode = pg.setting("archive_mode").await?;
    let archive_command = pg.setting("archive_command").await?;
    let wal_level = pg.setting("wal_level").await?;
    let in_recovery = pg.in_recovery().await?;
    let pg_fail = |m: String, h: &str| Err(Error::new(ErrorKind::Postgres, m).hint(h.to_string()));
    if in_recovery {
        return pg_fail(
            format!(
                "the cluster at {} is a standby; check must run against the primary",
                pg.target().describe()
            ),
            "point pg-host/pg-port at the primary",
        );
    }
    if wal_level == "minimal" {
        return pg_fail(
            "wal_level is 'minimal': WAL cannot be archived".into(),
            "set wal_level = replica (or logical) and restart PostgreSQL",
        );
    }
    if archive_mode == "off" {
        return pg_fail(
            "archive_mode is off: PostgreSQL archives nothing".into(),
            "set archive_mode = on and restart PostgreSQL",
        );
    }
    if !(archive_command.contains("pgfrost") && archive_command.contains("archive-push")) {
        return pg_fail(
            format!(
                "archive_command is '{archive_command}': it does not call pgfrost archive-push"
            ),
            "set archive_command = 'pgfrost archive-push %p' (with --stanza or a config file naming it) and reload PostgreSQL",
        );
    }
    if !archive_command.contains("%p") {
        return pg_fail(
            format!("archive_command '{archive_command}' does not pass %p"),
            "archive_command = 'pgfrost archive-push %p'",
        );
    }
    Ok(())
}

/// Switches WAL and waits (up to `timeout`) for the segment to reach the stanza. Returns its
/// name and the seconds it took.
async fn switch_and_wait(
    pg: &Session,
    repo: &Repository,
    name: &str,
    db: &StanzaDb,
    timeout: Duration,
) -> Result<(String, f64)> {
    let failed_before = pg.archiver_failed_count().await?;
    let segment = pg.switch_wal().await?;
    let file = WalFile::parse(&segment)
        .ok_or_else(|| Error::internal(format!("unexpected segment name {segment}")))?;
    let obj = super::archive::object_path(name, db, &file);
    let started = Instant::now();
    log::info!(
        "check: switched WAL; waiting up to {}s for {segment} to reach the repository",
        timeout.as_secs()
    );
    loop {
        if repo.store.get_opt(&obj).await?.is_some() {
            break;
        }
        if started.elapsed() > timeout {
            let (why, hint) = not_archived(&pg.archiver().await?, failed_before, &segment);
            return Err(Error::new(
                ErrorKind::Postgres,
                format!("WAL segment {segment} did not reach stanza '{name}' in repository {} within {}s: {why}", repo.store.location(), timeout.as_secs()),
            )
            .hint(hint));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok((segment, started.elapsed().as_secs_f64()))
}

/// Why a segment did not arrive, from what pg_stat_archiver says, and what to do about it.
fn not_archived(a: &Archiver, failed_before: i64, segment: &str) -> (String, &'static str) {
    let last_ok = &a.last_archived;
    // PostgreSQL counts a failure only for exit codes up to 125: when the shell cannot
    // run the command at all (126 not executable, 127 not found, e.g. pgfrost not on the
    // server's PATH) its archiver exits and restarts without counting one. A segment it
    // never reports archived is therefore not proof that archive_command ran.
    let archived = last_ok.len() >= 24 && last_ok[..24] >= *segment;
    if a.failed > failed_before {
        (
            format!(
                "archive_command failed {} time(s) meanwhile, last for {} at {}",
                a.failed - failed_before,
                a.last_failed,
                a.last_failed_time
            ),
            "PostgreSQL's log holds archive-push's error message; run the archive_command by hand as the postgres user to see it",
        )
    } else if !archived {
        (
            format!(
                "PostgreSQL has not archived it and counts no failure (the last segment it archived is '{last_ok}'): archive_command does not run at all, or hangs"
            ),
            "look in PostgreSQL's log for 'archive command failed with exit code 127' (or 126): the server cannot find or execute the command; use the full path of the binary in archive_command (e.g. /usr/local/bin/pgfrost archive-push %p) and make it executable by the postgres user",
        )
    } else {
        (
            format!("PostgreSQL reports it archived ('{last_ok}'), but it is not in this stanza"),
            "archive_command archives into another repository or stanza than this check reads: compare their options (config file, environment of the server)",
        )
    }
}

/// The probe's thresholds; any of them makes check a probe.
struct Limits {
    backup: Option<Duration>,
    wal: Option<Duration>,
    verify: Option<Duration>,
    drill: Option<Duration>,
}

impl Limits {
    fn any(&self) -> bool {
        self.backup.is_some() || self.wal.is_some() || self.verify.is_some() || self.drill.is_some()
    }
}

/// Nagios plugin statuses, which any monitoring system understands by exit code.
const STATUS: [&str; 3] = ["OK", "WARNING", "CRITICAL"];

fn ago(secs: i64) -> String {
    humantime::format_duration(Duration::from_secs(secs.max(0) as u64)).to_string()
}

/// A status line stays one readable line: a long finding is cut (info has all of it).
fn short(s: &str, max: usize) -> String {
    let one = s.replace('\n', " ");
    match one.char_indices().nth(max) {
        Some((i, _)) => format!("{} ...", &one[..i]),
        None => one,
    }
}

/// How old `age` is against `max`: 0 within it, 1 past it, 2 past twice it.
fn grade(age: i64, max: Duration) -> i32 {
    let max = max.as_secs() as i64;
    if age > 2 * max {
        2
    } else if age > max {
        1
    } else {
        0
    }
}

/// The probe's findings: the worst status, the words and performance data of each age.
struct Grades {
    code: i32,
    said: Vec<String>,
    perf: Vec<String>,
    out: serde_json::Value,
}

impl Grades {
    /// One age against its limit: `what` says what it is the age of, `newest` names it.
    fn age(&mut self, key: &str, what: String, newest: &str, age: i64, max: Duration) {
        let g = grade(age, max);
        self.code = self.code.max(g);
        let stale = if g > 0 { "STALE: " } else { "" };
        self.said.push(format!("{stale}{what} {} ago", ago(age)));
        self.perf.push(format!(
            "{key}_age={age}s;{};{}",
            max.as_secs(),
            2 * max.as_secs()
        ));
        self.out[format!("{key}_age_seconds")] = age.into();
        self.out[format!("newest_{key}")] = newest.into();
    }

    /// Nothing to measure an age of: nothing proves the job still runs.
    fn missing(&mut self, what: &str) {
        self.code = 2;
        self.said.push(what.to_string());
    }
}

/// check as a monitoring probe: the age of the newest backup and of the newest archived WAL of
/// the stanza's current cluster, read from the repository alone (so it runs on a monitoring host,
/// and tells a stopped backup timer or a broken archive_command from a healthy one). One status
/// line in the plugin convention, `PGFROST <STATUS> - <what> | <perfdata>`, and exit 0, 1 or 2.
/// What cannot be read (no repository, wrong key, no stanza) is CRITICAL: nothing proves that
/// backups still happen.
/// `repo` is the result of opening the repository: a failure is CRITICAL too.
async fn probe(
    repo: Result<Repository>,
    name: &str,
    limits: &Limits,
) -> (i32, String, serde_json::Value) {
    let now = crate::clock::now_unix();
    let mut out = json!({"stanza": name});
    let read = async {
        let repo = repo?;
        let db = stanza::current(&repo, name).await?;
        let (manifests, _) = crate::repo::manifest::read_each(&repo, name).await?;
        let (wal, _) = stanza::list_wal(&repo, name).await?;
        // Only the runs a limit asks about: a backup-age probe reads no outcomes.
        let mut runs = Vec::new();
        for (command, max) in outcome::COMMANDS
            .into_iter()
            .zip([limits.verify, limits.drill])
        {
            if let Some(max) = max {
                runs.push((command, max, outcome::latest(&repo, name, command).await?));
            }
        }
        Ok::<_, Error>((db, manifests, wal, runs))
    }
    .await;
    let (db, manifests, wal, runs) = match read {
        Ok(v) => v,
        Err(e) => {
            let line = format!("PGFROST CRITICAL - stanza {name}: {}", e.message);
            out["status"] = "CRITICAL".into();
            out["code"] = 2.into();
            out["problems"] = json!([e.message]);
            return (2, line, out);
        }
    };
    let mut g = Grades {
        code: 0,
        said: Vec::new(),
        perf: Vec::new(),
        out,
    };
    if let Some(max) = limits.backup {
        let newest = manifests
            .iter()
            .filter(|m| m.db_id == db.id)
            .max_by_key(|m| (m.stop_unix, m.label.clone()));
        match newest {
            Some(m) => g.age(
                "backup",
                format!("newest backup {} {} ended", m.kind.name(), m.label),
                &m.label,
                now - m.stop_unix,
                max,
            ),
            None => g.missing("no backup of the current cluster"),
        }
    }
    if let Some(max) = limits.wal {
        let newest = wal
            .iter()
            .filter(|w| w.db_id == db.id && w.file.has_pages())
            .max_by_key(|w| w.modified);
        match newest {
            Some(w) => g.age(
                "wal",
                format!("newest WAL {} stored", w.file),
                &w.file.to_string(),
                now - w.modified,
                max,
            ),
            None => g.missing("no WAL archived for the current cluster"),
        }
    }
    for (command, max, run) in &runs {
        let (command, max) = (*command, *max);
        match &run.last {
            None => g.missing(&format!("no {command} recorded")),
            Some(d) if !d.passed => {
                g.code = 2;
                g.said.push(format!(
                    "last {command} FAILED {} ago ({}), last passed {}",
                    ago(now - d.ended_unix),
                    short(&d.summary, 300),
                    run.last_passed
                        .as_ref()
                        .map(|p| format!("{} ago", ago(now - p.ended_unix)))
                        .unwrap_or_else(|| "never".into())
                ));
                g.out[format!("{command}_passed")] = false.into();
            }
            Some(d) => {
                g.age(
                    command,
                    format!("last {command} passed"),
                    &d.summary,
                    now - d.ended_unix,
                    max,
                );
                g.out[format!("{command}_passed")] = true.into();
            }
        }
    }
    let Grades {
        code,
        said,
        perf,
        mut out,
    } = g;
    let status = STATUS[code as usize];
    out["status"] = status.into();
    out["code"] = code.into();
    let line = format!(
        "PGFROST {status} - stanza {name}: {} | {}",
        said.join(", "),
        perf.join(" ")
    );
    (code, line, out)
}
