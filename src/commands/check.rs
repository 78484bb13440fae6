//! check: proves that archiving works end to end, and says in plain words what is wrong if not.

use super::{emit, open_repo};
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result};
use crate::pg::conn;
use crate::pg::wal::WalFile;
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
        let (code, line, json) = probe(settings, &name, &limits).await;
        emit(settings, &line, json);
        if code != 0 {
            std::process::exit(code);
        }
        return Ok(());
    }
    let target = conn::Target::from_settings(settings)?;
    let client = conn::connect(&target).await?;
    let setting = |n: &'static str| {
        let client = &client;
        async move { conn::query_one::<String>(client, &format!("SELECT current_setting('{n}')")).await }
    };
    let archive_mode = setting("archive_mode").await?;
    let archive_command = setting("archive_command").await?;
    let wal_level = setting("wal_level").await?;
    let in_recovery: bool = conn::query_one(&client, "SELECT pg_is_in_recovery()").await?;
    let pg = |m: String, h: &str| Err(Error::new(ErrorKind::Postgres, m).hint(h.to_string()));
    if in_recovery {
        return pg(
            format!(
                "the cluster at {} is a standby; check must run against the primary",
                target.describe()
            ),
            "point pg-host/pg-port at the primary",
        );
    }
    if wal_level == "minimal" {
        return pg(
            "wal_level is 'minimal': WAL cannot be archived".into(),
            "set wal_level = replica (or logical) and restart PostgreSQL",
        );
    }
    if archive_mode == "off" {
        return pg(
            "archive_mode is off: PostgreSQL archives nothing".into(),
            "set archive_mode = on and restart PostgreSQL",
        );
    }
    if !(archive_command.contains("pgfrost") && archive_command.contains("archive-push")) {
        return pg(
            format!(
                "archive_command is '{archive_command}': it does not call pgfrost archive-push"
            ),
            "set archive_command = 'pgfrost archive-push %p' (with --stanza or a config file naming it) and reload PostgreSQL",
        );
    }
    if !archive_command.contains("%p") {
        return pg(
            format!("archive_command '{archive_command}' does not pass %p"),
            "archive_command = 'pgfrost archive-push %p'",
        );
    }

    let repo = open_repo(settings).await?;
    let db = stanza::current(&repo, &name).await?;
    let sysid: i64 =
        conn::query_one(&client, "SELECT system_identifier FROM pg_control_system()").await?;
    if db.system_id() != sysid as u64 {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "stanza '{name}' belongs to system identifier {}, the cluster is {}",
                db.system_id, sysid as u64
            ),
        )
        .hint("check --stanza; after pg_upgrade run stanza-upgrade"));
    }

    let failed_before: i64 =
        conn::query_one(&client, "SELECT failed_count FROM pg_stat_archiver").await?;
    // A switch with no WAL written since the last one switches nothing: write a record first.
    client
        .batch_execute("SELECT pg_logical_emit_message(false, 'pgfrost', 'check')")
        .await
        .map_err(|e| conn::pg_err("cannot write a WAL record", e))?;
    let segment: String =
        conn::query_one(&client, "SELECT pg_walfile_name(pg_switch_wal())").await?;
    let file = WalFile::parse(&segment)
        .ok_or_else(|| Error::internal(format!("unexpected segment name {segment}")))?;
    let obj = super::archive::object_path(&name, &db, &file);
    let timeout = Duration::from_secs(settings.u32("archive-timeout") as u64);
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
            let row = client
                .query_one(
                    "SELECT failed_count, coalesce(last_failed_wal, ''), coalesce(last_failed_time::text, ''), \
                     coalesce(last_archived_wal, '') FROM pg_stat_archiver",
                    &[],
                )
                .await
                .map_err(|e| conn::pg_err("cannot read pg_stat_archiver", e))?;
            let (failed, last_failed, when, last_ok): (i64, String, String, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            // PostgreSQL counts a failure only for exit codes up to 125: when the shell cannot
            // run the command at all (126 not executable, 127 not found, e.g. pgfrost not on the
            // server's PATH) its archiver exits and restarts without counting one. A segment it
            // never reports archived is therefore not proof that archive_command ran.
            let archived = last_ok.len() >= 24 && last_ok[..24] >= *segment;
            let (why, hint) = if failed > failed_before {
                (
                    format!(
                        "archive_command failed {} time(s) meanwhile, last for {last_failed} at {when}",
                        failed - failed_before
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
                    format!(
                        "PostgreSQL reports it archived ('{last_ok}'), but it is not in this stanza"
                    ),
                    "archive_command archives into another repository or stanza than this check reads: compare their options (config file, environment of the server)",
                )
            };
            return Err(Error::new(
                ErrorKind::Postgres,
                format!("WAL segment {segment} did not reach stanza '{name}' in repository {} within {}s: {why}", repo.store.location(), timeout.as_secs()),
            )
            .hint(hint));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    emit(
        settings,
        &format!("WAL segment {segment} reached stanza '{name}' in {secs:.1}s: archiving works"),
        json!({"stanza": name, "segment": segment, "seconds": secs}),
    );
    Ok(())
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
async fn probe(
    settings: &Settings,
    name: &str,
    limits: &Limits,
) -> (i32, String, serde_json::Value) {
    let now = crate::clock::now_unix();
    let mut out = json!({"stanza": name});
    let read = async {
        let repo = open_repo(settings).await?;
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
