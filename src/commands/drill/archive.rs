//! What the drill reads of the stanza's repository besides the backup: the timeline its
//! primary is on, and where its archive ends.

use crate::error::Result;
use crate::pg::wal::WalFile;
use crate::repo::stanza;

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
pub async fn archive_end(
    repo: &crate::repo::Repository,
    stanza_name: &str,
    db: &stanza::StanzaDb,
    timeline: Option<u32>,
) -> Result<Option<(String, u64)>> {
    let listed = repo
        .store
        .list(&crate::repo::wal::db_dir(stanza_name, db.id))
        .await?;
    let mut best: Option<(u32, u64, String)> = None;
    for l in listed {
        let name = crate::repo::wal::file_name(&l.path);
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
