//! Starting the restored cluster privately and waiting for it to recover.

use super::outcome::Report;
use super::scratch::Scratch;
use crate::error::{Error, Result};
use crate::pg::probe;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(54329)
}

pub fn os_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres".into())
}

/// The server's settings for the drill, and stand-ins for the configuration files a backup
/// may lack. `timeline`: the timeline recovery follows, when the drill chose it.
pub fn configure(s: &Scratch, port: u16, timeline: Option<u32>) -> Result<()> {
    // Private: a socket in the scratch directory, no TCP, no archiving, modest memory, promote at
    // the target so the checks can write (pg_amcheck installs its extension).
    let mut conf = format!(
        "\n# pgfrost drill\nport = {port}\nlisten_addresses = ''\nunix_socket_directories = '{}'\narchive_mode = off\n\
         shared_buffers = '128MB'\nlogging_collector = off\nrecovery_target_action = 'promote'\nhot_standby = on\n",
        s.dir.display()
    );
    if let Some(t) = timeline {
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
    Ok(())
}

/// Starts PostgreSQL and connects to it; None (with the failed check in `rep`) when it does
/// not start or take a connection.
pub async fn start(rep: &mut Report, s: &Scratch, port: u16) -> Result<Option<Client>> {
    let log_path = s.dir.join("server.log");
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
    if !out.status.success() {
        rep.check(
            "recovery",
            false,
            format!("PostgreSQL did not start: {}", log_tail(&log_path)),
        );
        return Ok(None);
    }
    match probe::connect(&s.dir, port, &os_user(), "postgres").await {
        Ok(c) => Ok(Some(c)),
        Err(e) => {
            // Hot standby lets pg_ctl return once the restore is consistent; recovery that then
            // stops (a gap in the archive is FATAL) resets our connection: the log says why.
            tokio::time::sleep(Duration::from_millis(300)).await;
            rep.check(
                "recovery",
                false,
                format!("cannot connect: {e}; server log: {}", log_tail(&log_path)),
            );
            Ok(None)
        }
    }
}

/// Waits for the end of recovery (promotion at the target or the end of the archive); false
/// (with the failed check in `rep`) when it does not come.
pub async fn wait_for_recovery(rep: &mut Report, client: &Client, log_path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(24 * 3600);
    loop {
        match probe::in_recovery(client).await {
            Ok(false) => return true,
            Ok(true) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(true) => {
                rep.check("recovery", false, "still recovering after 24 hours");
                return false;
            }
            Err(e) => {
                rep.check("recovery", false, format!("{e}: {}", log_tail(log_path)));
                return false;
            }
        }
    }
}

/// The server log's last errors, for a failed check.
fn log_tail(log_path: &Path) -> String {
    let t = std::fs::read_to_string(log_path).unwrap_or_default();
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
}

/// From the server log: where redo ended and the last transaction it replayed.
pub fn reached_point(log: &Path) -> Option<(String, Option<String>)> {
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
