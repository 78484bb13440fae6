//! `--type name`: the restore points recorded in the stanza, and whether recovery from a backup
//! stops at the one meant.

use crate::error::{Error, ErrorKind, Result};
use crate::repo::Repository;
use crate::repo::manifest::Manifest;
use crate::repo::points::Recorded;

/// The recorded restore points called `name`, oldest first. None recorded is an error naming
/// the known ones, except with `--set`, where it is only a warning (WAL archived by a version
/// that did not record points).
pub async fn named_points(
    repo: &Repository,
    stanza: &str,
    name: &str,
    set: bool,
) -> Result<Vec<Recorded>> {
    let (all, unreadable) = crate::repo::points::list(repo, stanza).await?;
    for u in &unreadable {
        log::warn!(
            "restore: {u}; a restore point it records is not known (HINT: run pgfrost verify)"
        );
    }
    let named: Vec<Recorded> = all
        .iter()
        .filter(|r| r.point.name == name)
        .cloned()
        .collect();
    if !named.is_empty() {
        return Ok(named);
    }
    let known = if all.is_empty() {
        "no restore points are recorded in this stanza".to_string()
    } else {
        let mut v: Vec<String> = all
            .iter()
            .rev()
            .take(20)
            .map(|r| format!("{} on timeline {}", r.point.describe(), r.timeline))
            .collect();
        if all.len() > 20 {
            v.push(format!("and {} older", all.len() - 20));
        }
        format!(
            "the recorded restore points, newest first: {}",
            v.join("; ")
        )
    };
    let mut msg = format!("restore point '{name}' is not recorded in stanza '{stanza}'");
    if !unreadable.is_empty() {
        msg.push_str(&format!(
            " (or is in one of {} restore-point document(s) that cannot be read: {})",
            unreadable.len(),
            unreadable.join("; ")
        ));
    }
    if set {
        log::warn!(
            "restore: {msg}; going on with the backup --set names: recovery fails if the point is not in the WAL after it"
        );
        return Ok(Vec::new());
    }
    Err(Error::new(ErrorKind::NotFound, format!("{msg}; nothing was written")).hint(format!(
        "{known}. A point is recorded when the WAL segment holding it is archived: after \
         pg_create_restore_point(), run SELECT pg_switch_wal() on the primary and wait for archiving"
    )))
}

/// Whether recovery from backup `m` along timeline `target` (ancestors `history`) stops at the
/// newest restore point `name` on that history: PostgreSQL stops at the first point of that
/// name it replays, and fails if it meets one before the backup is consistent.
pub fn reaches_point(
    name: &str,
    named: &[Recorded],
    m: &Manifest,
    target: u32,
    history: &[crate::pg::timeline::Ancestor],
    set: bool,
) -> std::result::Result<(), String> {
    let on_path: Vec<&Recorded> = named
        .iter()
        .filter(|r| {
            r.db_id == m.db_id
                && (r.timeline == target
                    || history
                        .iter()
                        .any(|a| a.tli == r.timeline && r.point.end_lsn <= a.switchpoint))
        })
        .collect();
    let Some(newest) = on_path.last() else {
        return Err(format!(
            "no restore point '{name}' lies on the history of timeline {target} (recorded on timeline(s) {})",
            named
                .iter()
                .map(|r| r.timeline.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let lsn = |s: &str| crate::pg::wal::parse_lsn(s).unwrap_or(u64::MAX);
    let (start, stop) = (lsn(&m.start_lsn), lsn(&m.stop_lsn));
    let first = on_path.iter().find(|r| r.point.lsn >= start);
    match first {
        None => Err(format!(
            "it started at {}, after restore point {}",
            m.start_lsn,
            newest.point.describe()
        )),
        Some(p) if p.point.lsn < stop => Err(format!(
            "restore point {} lies between its start and its end ({}), where recovery cannot stop",
            p.point.describe(),
            m.stop_lsn
        )),
        // With --set the operator chose the backup: the first point after it is the one meant
        // (last week's 'before_deploy', say), said aloud.
        Some(p) if p.point.lsn != newest.point.lsn && set => {
            log::warn!(
                "restore: recovery from backup {} stops at restore point {}, not at the newest of that name, {}",
                m.label,
                p.point.describe(),
                newest.point.describe()
            );
            Ok(())
        }
        Some(p) if p.point.lsn != newest.point.lsn => Err(format!(
            "recovery from it would stop at the earlier restore point {}, not the newest {} (give --set to mean the earlier one)",
            p.point.describe(),
            newest.point.describe()
        )),
        Some(_) => Ok(()),
    }
}
