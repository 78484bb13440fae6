//! drill: prove that a backup restores. Restore it into a scratch directory, start PostgreSQL
//! there on a private socket with no TCP listener, let it replay WAL to the end of the archive
//! (or a target), check the result, and report how long it all took. PostgreSQL is stopped and
//! the scratch directory removed whatever happens, Ctrl-C included.

use super::{emit, open_repo, restore};
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result};
use crate::pg::wal::{self, WalFile};
use crate::repo::stanza;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub backup: String,
    pub target: String,
    pub passed: bool,
    pub restore_seconds: f64,
    pub recovery_seconds: f64,
    /// Where replay ended: LSN and the time of the last replayed transaction.
    pub reached_lsn: Option<String>,
    pub reached_time: Option<String>,
    pub checks: Vec<Check>,
}

impl Report {
    fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        if ok {
            log::info!("drill: {name}: ok ({detail})");
        } else {
            log::error!("drill: {name}: FAILED: {detail}");
        }
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail,
        });
    }
}

/// The PostgreSQL binaries of `major`: --pg-bin, else the usual Debian and RPM locations, else
/// whatever pg_ctl on PATH is, if it is that major.
fn find_bin(settings: &Settings, major: u32) -> Result<PathBuf> {
    if let Some(p) = settings.string("pg-bin") {
        return Ok(PathBuf::from(p));
    }
    let candidates = [
        format!("/usr/lib/postgresql/{major}/bin"),
        format!("/usr/pgsql-{major}/bin"),
    ];
    for c in &candidates {
        if Path::new(c).join("pg_ctl").is_file() {
            return Ok(PathBuf::from(c));
        }
    }
    if let Ok(out) = Command::new("pg_ctl").arg("--version").output()
        && String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.split('.').next())
            == Some(&major.to_string())
        && let Ok(path) = Command::new("sh")
            .args(["-c", "command -v pg_ctl"])
            .output()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&path.stdout).trim());
        return Ok(p.parent().unwrap_or(Path::new("/usr/bin")).to_path_buf());
    }
    Err(Error::config(format!(
        "cannot find the binaries of PostgreSQL {major} (looked in {})",
        candidates.join(", ")
    ))
    .hint("give --pg-bin DIR, the directory holding pg_ctl and postgres of that version"))
}

struct Scratch {
    dir: PathBuf,
    data: PathBuf,
    bin: PathBuf,
}

impl Scratch {
    fn pg_ctl(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(args)
            .output()
    }

    /// Stops PostgreSQL (fast, then immediate) and removes the directory. Idempotent.
    fn cleanup(&self) {
        if self.data.join("postmaster.pid").exists() {
            let ok = self
                .pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"])
                .map(|o| o.status.success())
                .unwrap_or(false);
            if !ok {
                let _ = self.pg_ctl(&["-m", "immediate", "-w", "-t", "30", "stop"]);
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log::warn!("drill: could not remove {}: {e}", self.dir.display());
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(54329)
}

async fn connect(dir: &Path, port: u16, db: &str) -> std::result::Result<Client, String> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(dir)
        .port(port)
        .user(os_user())
        .dbname(db)
        .application_name("pgfrost drill");
    let (client, conn) = cfg
        .connect(NoTls)
        .await
        .map_err(|e| crate::store::chain(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn os_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres".into())
}

pub async fn run(settings: &Settings) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Err(
            Error::config("the drill starts PostgreSQL, which refuses to run as root")
                .hint("run it as the postgres user"),
        );
    }
    let stanza_name = settings.required("stanza")?.to_string();
    let repo = open_repo(settings).await?;
    let db = stanza::current(&repo, &stanza_name).await?;
    let bin = find_bin(settings, db.pg_major)?;
    let base = settings
        .string("drill-path")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).map_err(|e| Error::io("create", &base, e))?;
    let dir = base.join(format!(
        "pgfrost-drill-{}-{}",
        std::process::id(),
        crate::repo::format::now_rfc3339().replace(':', "")
    ));
    std::fs::create_dir(&dir).map_err(|e| Error::io("create", &dir, e))?;
    let scratch = Scratch {
        data: dir.join("data"),
        dir,
        bin,
    };
    // Ctrl-C or SIGTERM: clean up, then leave with the conventional code.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::internal(format!("cannot watch SIGTERM: {e}")))?;
    let started = Instant::now();
    let started_unix = crate::clock::now_unix();
    let result = tokio::select! {
        r = drill(settings, &scratch, &stanza_name, &repo, &db) => r,
        _ = tokio::signal::ctrl_c() => Err(Error::new(ErrorKind::DrillFailed, "drill interrupted (Ctrl-C)")),
        _ = term.recv() => Err(Error::new(ErrorKind::DrillFailed, "drill interrupted (SIGTERM)")),
    };
    scratch.cleanup();
    record(&repo, &stanza_name, &result, started_unix, started).await;
    let report = result?;
    let mut text = format!(
        "drill of backup {} to {}: {}\nrestore {:.1}s, recovery {:.1}s; reached {} ({})",
        report.backup,
        report.target,
        if report.passed { "PASSED" } else { "FAILED" },
        report.restore_seconds,
        report.recovery_seconds,
        report.reached_lsn.as_deref().unwrap_or("?"),
        report
            .reached_time
            .as_deref()
            .unwrap_or("no transaction replayed")
    );
    for c in &report.checks {
        text.push_str(&format!(
            "\n  [{}] {}: {}",
            if c.ok { "ok" } else { "FAILED" },
            c.name,
            c.detail
        ));
    }
    emit(
        settings,
        &text,
        serde_json::to_value(&report).expect("serializes"),
    );
    if report.passed {
        Ok(())
    } else {
        let failed: Vec<_> = report
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        Err(Error::new(
            ErrorKind::DrillFailed,
            format!(
                "drill of backup {} failed: {}",
                report.backup,
                failed.join("; ")
            ),
        ))
    }
}

/// Keeps the drill's outcome in the repository for info and check: a drill that could not run
/// (interrupted, restore refused) is a failed drill too.
async fn record(
    repo: &crate::repo::Repository,
    stanza_name: &str,
    result: &Result<Report>,
    started_unix: i64,
    started: Instant,
) {
    use crate::repo::outcome::{OutcomeDoc, record_or_warn};
    let (passed, summary, backup) = match result {
        Ok(r) => {
            let failed: Vec<String> = r
                .checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            let summary = if failed.is_empty() {
                format!(
                    "to {}: {} check(s) passed; restore {:.1}s, recovery {:.1}s, reached {}",
                    r.target,
                    r.checks.len(),
                    r.restore_seconds,
                    r.recovery_seconds,
                    r.reached_lsn.as_deref().unwrap_or("?")
                )
            } else {
                format!("to {}: {}", r.target, failed.join("; "))
            };
            (
                r.passed,
                summary,
                Some(r.backup.clone()).filter(|b| !b.is_empty()),
            )
        }
        Err(e) => (false, e.to_string(), None),
    };
    let mut doc = OutcomeDoc::new(
        "drill",
        passed,
        started_unix,
        started.elapsed().as_secs_f64(),
        &summary,
    );
    doc.backup = backup;
    record_or_warn(repo, stanza_name, &doc).await;
}

async fn drill(
    settings: &Settings,
    s: &Scratch,
    stanza_name: &str,
    repo: &crate::repo::Repository,
    db: &stanza::StanzaDb,
) -> Result<Report> {
    let mut rep = Report {
        target: settings
            .string("type")
            .unwrap_or("end of archive")
            .to_string(),
        ..Default::default()
    };
    if let Some(t) = settings.string("target") {
        rep.target = format!("{} {t}", rep.target);
    }
    let started = Instant::now();
    // The timeline the stanza's primary is on, not the newest the archive holds: a test restore
    // promoted with archiving on leaves a branch there that the primary never took, and
    // following it ("latest", PostgreSQL's default) cannot find the checkpoints of the backups
    // taken on the primary since. The backup is chosen for that timeline too.
    let timeline = match settings.string("target-timeline") {
        Some(t) => t.parse::<u32>().ok(),
        None => primary_timeline(repo, stanza_name, db).await?,
    };
    // Every path of the restored cluster inside the scratch directory, archiving off: a drill
    // must never write into the cluster it came from, nor into its stanza.
    let restored = match restore::restore(
        settings,
        &s.data,
        restore::Placement::Scratch(&s.dir, timeline),
    )
    .await
    {
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

    // Private: a socket in the scratch directory, no TCP, no archiving, modest memory, promote at
    // the target so the checks can write (pg_amcheck installs its extension).
    let port = free_port();
    let mut conf = format!(
        "\n# pgfrost drill\nport = {port}\nlisten_addresses = ''\nunix_socket_directories = '{}'\narchive_mode = off\n\
         shared_buffers = '128MB'\nlogging_collector = off\nrecovery_target_action = 'promote'\nhot_standby = on\n",
        s.dir.display()
    );
    if settings.string("target-timeline").is_none()
        && let Some(t) = timeline
    {
        conf.push_str(&format!("recovery_target_timeline = '{t}'\n"));
    }
    // Debian and Ubuntu keep postgresql.conf and pg_hba.conf in /etc/postgresql/<major>/<name>/,
    // outside the data directory the backup holds; PostgreSQL will not start without them. The
    // drill's own settings are all it needs, and its socket is in a directory only this user
    // can enter, so trust is as private as peer.
    let stand_in = [
        (
            "postgresql.conf",
            "# pgfrost drill: the backup has no postgresql.conf (its cluster reads one from elsewhere,\n# e.g. /etc/postgresql/); the drill's settings are in postgresql.auto.conf.\n",
        ),
        (
            "pg_hba.conf",
            "# pgfrost drill: the backup has no pg_hba.conf; only the drill's private socket.\nlocal all all trust\n",
        ),
    ];
    for (file, text) in stand_in {
        if !s.data.join(file).exists() {
            log::info!(
                "drill: the backup has no {file} (kept outside the data directory); using a minimal one"
            );
            std::fs::write(s.data.join(file), text).map_err(|e| {
                Error::storage(format!("cannot write {}: {e}", s.data.join(file).display()))
            })?;
        }
    }
    let auto = s.data.join("postgresql.auto.conf");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&auto)
        .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
        .map_err(|e| Error::storage(format!("cannot write {}: {e}", auto.display())))?;
    let log_path = s.dir.join("server.log");
    let recovery_started = Instant::now();
    let out = s
        .pg_ctl(&[
            "-l",
            log_path.to_str().unwrap(),
            "-w",
            "-t",
            "3600",
            "start",
        ])
        .map_err(|e| {
            Error::config(format!(
                "cannot run {}: {e}",
                s.bin.join("pg_ctl").display()
            ))
        })?;
    let log_tail = || {
        let t = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = t
            .lines()
            .filter(|l| l.contains("FATAL") || l.contains("ERROR") || l.contains("PANIC"))
            .collect();
        // Before logging starts (no configuration file, a bad setting) postgres writes plain
        // lines with no level: the last of them say why.
        let lines = if lines.is_empty() {
            t.lines().filter(|l| !l.trim().is_empty()).collect()
        } else {
            lines
        };
        lines[lines.len().saturating_sub(3)..].join(" | ")
    };
    if !out.status.success() {
        rep.check(
            "recovery",
            false,
            format!("PostgreSQL did not start: {}", log_tail()),
        );
        return Ok(rep);
    }
    let client = match connect(&s.dir, port, "postgres").await {
        Ok(c) => c,
        Err(e) => {
            // Hot standby lets pg_ctl return once the restore is consistent; recovery that then
            // stops (a gap in the archive is FATAL) resets our connection: the log says why.
            tokio::time::sleep(Duration::from_millis(300)).await;
            rep.check(
                "recovery",
                false,
                format!("cannot connect: {e}; server log: {}", log_tail()),
            );
            return Ok(rep);
        }
    };
    // Wait for the end of recovery (promotion at the target or the end of the archive).
    let deadline = Instant::now() + Duration::from_secs(24 * 3600);
    loop {
        match client.query_one("SELECT pg_is_in_recovery()", &[]).await {
            Ok(r) if !r.get::<_, bool>(0) => break,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(_) => {
                rep.check("recovery", false, "still recovering after 24 hours");
                return Ok(rep);
            }
            Err(e) => {
                rep.check("recovery", false, format!("{e}: {}", log_tail()));
                return Ok(rep);
            }
        }
    }
    rep.recovery_seconds = recovery_started.elapsed().as_secs_f64();
    // Where replay ended, from the server log.
    let reached = reached_point(&log_path);
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
    if settings.string("type").is_none_or(|t| t == "default")
        && let Some((lsn, _)) = &reached
        && let Some(end) = archive_end(repo, stanza_name, db, timeline).await?
    {
        let reached_lsn = wal::parse_lsn(lsn).unwrap_or(0);
        let seg = db.wal_segment_size;
        let (end_name, end_lsn) = end;
        if reached_lsn / seg < end_lsn / seg {
            let next = wal::segment_name(
                WalFile::parse(&end_name).map_or(1, |f| f.tli()),
                reached_lsn / seg + 1,
                seg,
            );
            rep.check(
                "end of archive",
                false,
                format!(
                    "replay stopped at {lsn}{} but the archive holds WAL up to {end_name}: segment {next} or one after it is missing or unreadable",
                    rep.reached_time.as_ref().map(|t| format!(" (last transaction {t})")).unwrap_or_default()
                ),
            );
        } else {
            rep.check(
                "end of archive",
                true,
                format!("replayed through {end_name}"),
            );
        }
    }

    // Every database accepts connections; its largest tables read end to end.
    let dbs: Vec<String> = match client
        .query(
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1",
            &[],
        )
        .await
    {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) => {
            rep.check("databases", false, e.to_string());
            Vec::new()
        }
    };
    for d in &dbs {
        match connect(&s.dir, port, d).await {
            Err(e) => rep.check(
                &format!("database {d}"),
                false,
                format!("does not accept connections: {e}"),
            ),
            Ok(c) => {
                let tables = c
                    .query(
                        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE c.relkind IN ('r', 'm') AND c.relpersistence = 'p' ORDER BY pg_relation_size(c.oid) DESC LIMIT 5",
                        &[],
                    )
                    .await;
                match tables {
                    Err(e) => rep.check(&format!("database {d}"), false, e.to_string()),
                    Ok(rows) => {
                        let mut read = Vec::new();
                        let mut failed = None;
                        for r in rows {
                            let t: String = r.get(0);
                            match c.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await {
                                Ok(row) => {
                                    read.push(format!("{t} ({} rows)", row.get::<_, i64>(0)))
                                }
                                Err(e) => {
                                    failed =
                                        Some(format!("reading {t}: {}", crate::store::chain(&e)));
                                    break;
                                }
                            }
                        }
                        match failed {
                            Some(f) => rep.check(&format!("database {d}"), false, f),
                            None => rep.check(
                                &format!("database {d}"),
                                true,
                                format!("largest tables read: {}", read.join(", ")),
                            ),
                        }
                    }
                }
            }
        }
    }

    // pg_amcheck, where this installation has it.
    let amcheck = s.bin.join("pg_amcheck");
    if amcheck.is_file() {
        let out = Command::new(&amcheck)
            .args(["--all", "--install-missing", "-h"])
            .arg(&s.dir)
            .args(["-p", &port.to_string(), "-U", &os_user()])
            .output();
        match out {
            Ok(o) if o.status.success() => rep.check("pg_amcheck", true, "no corruption found"),
            Ok(o) => {
                let msg = String::from_utf8_lossy(&o.stdout).to_string()
                    + &String::from_utf8_lossy(&o.stderr);
                rep.check(
                    "pg_amcheck",
                    false,
                    msg.lines().take(5).collect::<Vec<_>>().join(" | "),
                )
            }
            Err(e) => rep.check("pg_amcheck", false, format!("cannot run it: {e}")),
        }
    }

    // Relation files as large as the backup recorded (replay may grow them, rarely shrink them).
    let mut small = Vec::new();
    let mut rels = restored
        .files
        .iter()
        .filter(|(p, _)| crate::pg::layout::RelFile::parse(p).is_some())
        .collect::<Vec<_>>();
    rels.sort_by_key(|(_, sz)| std::cmp::Reverse(*sz));
    for (p, sz) in rels.iter().take(20) {
        let now = std::fs::metadata(s.data.join(p)).map(|m| m.len());
        match now {
            Ok(n) if n * 2 >= *sz => {}
            Ok(n) => small.push(format!("{p}: {n} bytes, backup had {sz}")),
            // Dropped or rewritten by WAL replay after the backup: normal for a relation.
            Err(_) => {}
        }
    }
    rep.check(
        "relation sizes",
        small.is_empty(),
        if small.is_empty() {
            format!(
                "largest {} relation files in line with the backup",
                rels.len().min(20)
            )
        } else {
            small.join("; ")
        },
    );
    rep.passed = rep.checks.iter().all(|c| c.ok);
    Ok(rep)
}

/// The timeline of the newest backup of the stanza's current cluster: the one its primary (the
/// cluster that runs `backup`) was on when it last did.
pub async fn primary_timeline(
    repo: &crate::repo::Repository,
    stanza_name: &str,
    db: &stanza::StanzaDb,
) -> Result<Option<u32>> {
    for label in crate::repo::manifest::list(repo, stanza_name)
        .await?
        .iter()
        .rev()
    {
        let m = crate::repo::manifest::read(repo, stanza_name, label).await?;
        if m.db_id == db.id {
            return Ok(Some(m.timeline));
        }
    }
    Ok(None)
}

/// The last WAL segment of the stanza's current cluster in the repository, on `timeline` or
/// the timelines before it (a branch the drill does not follow is not the end of its archive):
/// (name, start LSN).
async fn archive_end(
    repo: &crate::repo::Repository,
    stanza_name: &str,
    db: &stanza::StanzaDb,
    timeline: Option<u32>,
) -> Result<Option<(String, u64)>> {
    let listed = repo
        .store
        .list(&format!("{stanza_name}/wal/{}", db.dir()))
        .await?;
    let mut best: Option<(u32, u64, String)> = None;
    for l in listed {
        let name = l.path.rsplit('/').next().unwrap_or("");
        if let Some(f @ WalFile::Segment { .. }) = WalFile::parse(name)
            && timeline.is_none_or(|t| f.tli() <= t)
        {
            let key = (f.tli(), f.segno(db.wal_segment_size).unwrap_or(0));
            if best.as_ref().is_none_or(|b| (b.0, b.1) < key) {
                best = Some((key.0, key.1, name.to_string()));
            }
        }
    }
    Ok(best.map(|(_, segno, name)| (name, segno * db.wal_segment_size)))
}

/// From the server log: where redo ended and the last transaction it replayed.
fn reached_point(log: &Path) -> Option<(String, Option<String>)> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| l.contains("redo done at "))?;
    let lsn = line
        .split("redo done at ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .to_string();
    let time = text
        .lines()
        .rev()
        .find(|l| l.contains("last completed transaction was at log time "))
        .and_then(|l| {
            l.split("last completed transaction was at log time ")
                .nth(1)
        })
        .map(|t| t.trim().to_string());
    Some((lsn, time))
}
