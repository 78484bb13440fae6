//! The drill's outcome: its checks, the report it prints, and the outcome document it keeps in
//! the repository.

use crate::error::{Error, ErrorKind, Result};
use serde::Serialize;
use std::time::Instant;

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
    pub fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
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

/// The report as text.
pub fn text(report: &Report) -> String {
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
    text
}

/// What the drill exits with: Ok when it passed, else an error naming the failed checks.
pub fn verdict(report: &Report) -> Result<()> {
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
pub async fn record(
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
