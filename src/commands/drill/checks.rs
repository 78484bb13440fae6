//! The checks a drill runs once the restored cluster has recovered.

use super::archive::archive_end;
use super::outcome::Report;
use super::scratch::Scratch;
use super::start::os_user;
use crate::commands::restore::Restored;
use crate::error::Result;
use crate::pg::probe;
use crate::pg::wal::{self, WalFile};
use crate::repo::stanza;
use std::process::Command;
use tokio_postgres::Client;

/// Did replay reach the end of the archive? `reached`: where it ended.
pub async fn end_of_archive(
    rep: &mut Report,
    repo: &crate::repo::Repository,
    stanza_name: &str,
    db: &stanza::StanzaDb,
    timeline: Option<u32>,
    reached: &str,
) -> Result<()> {
    let Some((end_name, end_lsn)) = archive_end(repo, stanza_name, db, timeline).await? else {
        return Ok(());
    };
    let lsn = reached;
    let reached_lsn = wal::parse_lsn(lsn).unwrap_or(0);
    let seg = db.wal_segment_size;
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
    Ok(())
}

/// Every database accepts connections; its largest tables read end to end.
pub async fn databases(rep: &mut Report, client: &Client, s: &Scratch, port: u16) {
    let dbs: Vec<String> = match probe::databases(client).await {
        Ok(names) => names,
        Err(e) => {
            rep.check("databases", false, e.to_string());
            Vec::new()
        }
    };
    for d in &dbs {
        match probe::connect(&s.dir, port, &os_user(), d).await {
            Err(e) => rep.check(
                &format!("database {d}"),
                false,
                format!("does not accept connections: {e}"),
            ),
            Ok(c) => match probe::largest_tables(&c).await {
                Err(e) => rep.check(&format!("database {d}"), false, e.to_string()),
                Ok(tables) => match read_tables(&c, tables).await {
                    Err(f) => rep.check(&format!("database {d}"), false, f),
                    Ok(read) => rep.check(
                        &format!("database {d}"),
                        true,
                        format!("largest tables read: {}", read.join(", ")),
                    ),
                },
            },
        }
    }
}

/// Reads each table end to end: what was read, or the first failure.
async fn read_tables(c: &Client, tables: Vec<String>) -> std::result::Result<Vec<String>, String> {
    let mut read = Vec::new();
    for t in tables {
        match probe::row_count(c, &t).await {
            Ok(n) => read.push(format!("{t} ({n} rows)")),
            Err(e) => return Err(format!("reading {t}: {}", crate::store::chain(&e))),
        }
    }
    Ok(read)
}

/// pg_amcheck, where this installation has it.
pub fn amcheck(rep: &mut Report, s: &Scratch, port: u16) {
    let amcheck = s.bin.join("pg_amcheck");
    if !amcheck.is_file() {
        return;
    }
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

/// Relation files as large as the backup recorded (replay may grow them, rarely shrink them).
pub fn relation_sizes(rep: &mut Report, s: &Scratch, restored: &Restored) {
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
}
