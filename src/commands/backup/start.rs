//! Start: pick the backup's label, then pg_backup_start on the session that will also stop it.

use crate::clock;
use crate::error::{Error, Result};
use crate::pg::session::BackupSession;
use crate::pg::wal;
use crate::repo::manifest::{BackupType, Manifest};
use std::time::{Duration, Instant, SystemTime};

/// Where the backup started.
pub(super) struct Started {
    pub label: String,
    pub time: SystemTime,
    pub lsn_text: String,
    pub lsn: u64,
    pub wal: String,
    pub timeline: u32,
}

fn label_stamp(t: SystemTime) -> String {
    // RFC 3339 "2026-11-21T09:26:06Z" -> "20261121-092606" (UTC).
    let s = humantime::format_rfc3339_seconds(t).to_string();
    format!(
        "{}{}{}-{}{}{}",
        &s[0..4],
        &s[5..7],
        &s[8..10],
        &s[11..13],
        &s[14..16],
        &s[17..19]
    )
}

/// The backup's label and its start time: `<stamp>F` for a full, `<full's stamp>_<stamp>D|I`
/// for one built on a parent.
pub(super) async fn label(
    labels: &[String],
    parent: Option<&Manifest>,
    kind: BackupType,
) -> (String, SystemTime) {
    // Labels have one-second resolution: a backup right after another waits for the next second
    // rather than fail (two timers firing together, or a script taking two in a row).
    let make = |t: SystemTime| {
        let stamp = label_stamp(t);
        match parent {
            None => format!("{stamp}F"),
            Some(p) => format!(
                "{}_{stamp}{}",
                p.label.split('_').next().unwrap(),
                kind.letter()
            ),
        }
    };
    let taken = |l: &str| {
        labels
            .iter()
            .any(|x| x.rsplit('_').next().map(|t| &t[..15]) == Some(&l[l.len() - 16..l.len() - 1]))
    };
    let mut start_time = clock::now();
    let mut label = make(start_time);
    while taken(&label) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        start_time = clock::now();
        label = make(start_time);
    }
    (label, start_time)
}

/// pg_backup_start, saying every 30 s that it still waits for the checkpoint.
pub(super) async fn start(
    pg: &BackupSession,
    label: String,
    time: SystemTime,
    kind: BackupType,
    fast: bool,
    major: u32,
) -> Result<Started> {
    if fast {
        log::info!(
            "backup {label}: starting ({} backup, immediate checkpoint)",
            kind.name()
        );
    } else {
        // A spread checkpoint takes up to checkpoint_timeout x checkpoint_completion_target
        // (4.5 min by default), and pg_backup_start says nothing until it ends.
        let timeout = pg
            .setting("checkpoint_timeout")
            .await
            .unwrap_or_else(|_| "?".into());
        log::info!(
            "backup {label}: starting ({} backup); waiting for PostgreSQL's next checkpoint, which it spreads over up to checkpoint_timeout ({timeout}) x checkpoint_completion_target to spare the I/O. HINT: --start-fast y checkpoints at once",
            kind.name()
        );
    }
    let lsn_text = {
        let start = pg.start(&label, fast, major);
        tokio::pin!(start);
        let waited = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.tick().await;
        loop {
            tokio::select! {
                r = &mut start => break r?,
                _ = tick.tick() => log::info!(
                    "backup {label}: still waiting for the checkpoint ({:.0}s; --start-fast y skips the wait)",
                    waited.elapsed().as_secs_f64()
                ),
            }
        }
    };
    let lsn = wal::parse_lsn(&lsn_text)
        .ok_or_else(|| Error::internal(format!("bad start LSN {lsn_text}")))?;
    let start_wal = pg.walfile_name(&lsn_text).await?;
    let timeline = u32::from_str_radix(&start_wal[0..8], 16).unwrap_or(1);
    Ok(Started {
        label,
        time,
        lsn_text,
        lsn,
        wal: start_wal,
        timeline,
    })
}
