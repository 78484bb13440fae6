//! Archive check: the backup is recorded only once the WAL from its start to its stop segment
//! is in the repository.

use crate::commands::archive;
use crate::error::{Error, ErrorKind, Result};
use crate::pg::wal::{self, WalFile};
use crate::repo::Repository;
use crate::repo::stanza::StanzaDb;
use std::time::{Duration, Instant};

/// Waits (up to `timeout`, archive-timeout) until every WAL segment from the backup's start to
/// its stop is in the repository: without them the backup cannot be restored to a consistent
/// state.
pub(super) async fn wait_for_wal(
    repo: &Repository,
    stanza: &str,
    db: &StanzaDb,
    (start_wal, stop_wal): (&str, &str),
    label: &str,
    timeout: Duration,
) -> Result<()> {
    let seg = db.wal_segment_size;
    let (first, last) = (WalFile::parse(start_wal), WalFile::parse(stop_wal));
    let (Some(first), Some(last)) = (first, last) else {
        return Err(Error::internal(format!(
            "unexpected WAL names {start_wal}..{stop_wal}"
        )));
    };
    let tli = last.tli();
    let started = Instant::now();
    let from = first.segno(seg).unwrap();
    let to = last.segno(seg).unwrap();
    for n in from..=to {
        let name = wal::segment_name(tli, n, seg);
        let obj = archive::object_path(stanza, db, &WalFile::parse(&name).unwrap());
        loop {
            if repo.store.exists(&obj).await? {
                break;
            }
            if started.elapsed() > timeout {
                return Err(Error::new(
                    ErrorKind::Postgres,
                    format!(
                        "backup {label} is not complete: WAL segment {name}, needed to make it consistent, did not reach the repository within {}s; the backup was not recorded",
                        timeout.as_secs()
                    ),
                )
                .hint("run 'pgfrost check' to see whether archive_command works; raise archive-timeout if archiving is just slow"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    log::info!("backup {label}: WAL {start_wal}..{stop_wal} is in the repository");
    Ok(())
}
