//! Which backups and which WAL to keep, given a policy and "now". Pure: no I/O, so every rule is
//! tested directly and `expire --dry-run` shows exactly what `expire` would do.
//!
//! The rules follow pgBackRest's, so operators' configurations mean what they expect:
//! - `retention-full N` keeps the N newest full backups; an older full expires together with the
//!   differentials and incrementals taken on top of it. With `retention-full-type time`, N is a
//!   number of days: fulls that finished within the last N days are kept, plus the newest one
//!   older than that, so that any point of the window can still be recovered.
//! - `retention-diff N` keeps the N newest differentials (of retained fulls); an older one expires
//!   with the incrementals taken on top of it.
//! - `retention-archive N` with `retention-archive-type full|diff|incr` keeps the WAL needed for
//!   point-in-time recovery from the oldest of the N newest backups of that type onwards; older
//!   retained backups keep only the WAL from their start to their stop (enough to be consistent).
//!   Without it, WAL follows `retention-full`.
//!
//! Unlike pgBackRest, an expired backup never breaks a retained one: every manifest is complete on
//! its own. Dependents expire with their base only because that is what the policy words mean.
//! Ages come from the times the backups recorded, never from their labels.

use crate::repo::manifest::BackupType;
use std::collections::{BTreeMap, HashMap, HashSet};

/// What retention needs to know of one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub label: String,
    pub kind: BackupType,
    pub parent: Option<String>,
    pub db_id: u32,
    pub timeline: u32,
    pub start_unix: i64,
    pub stop_unix: i64,
    /// Segment numbers (LSN / segment size) of the first and last WAL segment it needs.
    pub start_segno: u64,
    pub stop_segno: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullRetention {
    Count(u32),
    Days(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    pub full: Option<FullRetention>,
    pub diff: Option<u32>,
    pub archive: Option<(u32, BackupType)>,
}

impl Policy {
    /// The WAL rule: `retention-archive` when set, else what `retention-full` implies (its
    /// count of fulls; with time-based retention, every retained full). None keeps all WAL.
    pub fn archive_rule(&self) -> Option<(u32, BackupType)> {
        self.archive.or(match self.full {
            Some(FullRetention::Count(n)) => Some((n, BackupType::Full)),
            Some(FullRetention::Days(_)) => Some((u32::MAX, BackupType::Full)),
            None => None,
        })
    }
}

/// The WAL one cluster (stanza record) keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalKeep {
    /// Everything (no backup-based rule applies, or no policy for WAL).
    All,
    /// Nothing: no retained backup was taken from this cluster and it is not the current one.
    Nothing,
    /// Segments at or after `from` (any timeline: a branch can start anywhere after it), plus the
    /// listed (timeline, first, last) ranges that older retained backups need for consistency.
    From {
        from: u64,
        ranges: Vec<(u32, u64, u64)>,
    },
}

impl WalKeep {
    /// Whether a segment-like file (segment, partial, backup history) at `segno` on `tli` stays.
    /// Timeline history files always stay while anything of their cluster does.
    pub fn keeps(&self, tli: u32, segno: u64) -> bool {
        match self {
            WalKeep::All => true,
            WalKeep::Nothing => false,
            WalKeep::From { from, ranges } => {
                segno >= *from
                    || ranges
                        .iter()
                        .any(|&(t, a, b)| t == tli && (a..=b).contains(&segno))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Labels to expire, oldest first, each with the reason.
    pub expire: Vec<(String, String)>,
    /// Labels kept, oldest first.
    pub keep: Vec<String>,
    /// Per stanza record id.
    pub wal: BTreeMap<u32, WalKeep>,
    /// Policy gaps worth a warning (nothing set, so nothing expires).
    pub warnings: Vec<String>,
}

/// Oldest first by the recorded stop time (labels only break ties).
fn chronological(backups: &[Backup]) -> Vec<&Backup> {
    let mut v: Vec<&Backup> = backups.iter().collect();
    v.sort_by(|a, b| {
        (a.stop_unix, a.start_unix, &a.label).cmp(&(b.stop_unix, b.start_unix, &b.label))
    });
    v
}

/// The label of the full backup a backup was built on (itself for a full).
fn root_full(label: &str) -> &str {
    label.split('_').next().unwrap_or(label)
}

/// Every backup that builds on `base`, directly or through others.
fn dependents<'a>(base: &str, backups: &'a [Backup]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    let mut frontier: Vec<&str> = vec![base];
    while let Some(b) = frontier.pop() {
        for x in backups {
            if x.parent.as_deref() == Some(b) && !out.contains(&x.label.as_str()) {
                out.push(&x.label);
                frontier.push(&x.label);
            }
        }
    }
    out
}

pub fn plan(backups: &[Backup], policy: &Policy, now_unix: i64, current_db: u32) -> Plan {
    let order = chronological(backups);
    let mut reasons: HashMap<String, String> = HashMap::new();
    let mut warnings = Vec::new();
    let fulls: Vec<&Backup> = order
        .iter()
        .copied()
        .filter(|b| b.kind == BackupType::Full)
        .collect();
    if let Some(w) = expire_fulls(backups, &fulls, policy.full, now_unix, &mut reasons) {
        warnings.push(w);
    }
    if let Some(n) = policy.diff {
        let diffs: Vec<&Backup> = order
            .iter()
            .copied()
            .filter(|b| b.kind == BackupType::Diff && !reasons.contains_key(&b.label))
            .collect();
        let keep_from = diffs.len().saturating_sub(n as usize);
        for d in &diffs[..keep_from] {
            mark(
                &mut reasons,
                backups,
                &d.label,
                format!("differential backup beyond retention-diff={n}"),
            );
        }
    }

    let mut expire = Vec::new();
    let mut keep = Vec::new();
    for b in &order {
        match reasons.get(&b.label) {
            Some(r) => expire.push((b.label.clone(), r.clone())),
            None => keep.push(b.label.clone()),
        }
    }
    let kept: Vec<&Backup> = order
        .iter()
        .copied()
        .filter(|b| !reasons.contains_key(&b.label))
        .collect();
    Plan {
        expire,
        keep,
        wal: wal_rules(backups, &kept, policy.archive_rule(), current_db),
        warnings,
    }
}

/// Expires backup `b` for `why`, and with it every backup that builds on it.
fn mark(reasons: &mut HashMap<String, String>, backups: &[Backup], b: &str, why: String) {
    reasons.entry(b.to_string()).or_insert(why);
    for d in dependents(b, backups) {
        reasons
            .entry(d.to_string())
            .or_insert(format!("builds on expired backup {b}"));
    }
    // A diff or incr whose parent field is missing still belongs to its full by label.
    if !b.contains('_') {
        for x in backups {
            if x.label != b && root_full(&x.label) == b {
                reasons
                    .entry(x.label.clone())
                    .or_insert(format!("builds on expired full backup {b}"));
            }
        }
    }
}

/// The full backups (`fulls`, oldest first) that retention-full expires, with what builds on
/// them. Returns the warning when retention-full is not set.
fn expire_fulls(
    backups: &[Backup],
    fulls: &[&Backup],
    full: Option<FullRetention>,
    now_unix: i64,
    reasons: &mut HashMap<String, String>,
) -> Option<String> {
    match full {
        None => {
            return Some(
                "retention-full is not set: no backup expires by policy (set retention-full, or expire chosen backups with --set)"
                    .to_string(),
            );
        }
        Some(FullRetention::Count(n)) => {
            let keep_from = fulls.len().saturating_sub(n as usize);
            for f in &fulls[..keep_from] {
                mark(
                    reasons,
                    backups,
                    &f.label,
                    format!(
                        "full backup beyond retention-full={n} ({} newer full backups)",
                        fulls.len() - 1 - fulls.iter().position(|x| x.label == f.label).unwrap()
                    ),
                );
            }
        }
        Some(FullRetention::Days(days)) => {
            let cutoff = now_unix - days as i64 * 86400;
            // The newest full that finished before the window opened stays: without it, the
            // start of the window could not be recovered.
            let older: Vec<&&Backup> = fulls.iter().filter(|f| f.stop_unix < cutoff).collect();
            if older.len() > 1 {
                for f in &older[..older.len() - 1] {
                    mark(
                        reasons,
                        backups,
                        &f.label,
                        format!(
                            "full backup older than retention-full={days} days, and a newer one ({}) also predates the window",
                            older[older.len() - 1].label
                        ),
                    );
                }
            }
        }
    }
    None
}

/// The WAL each cluster keeps: what the retained backups (`kept`) need under the archive rule.
fn wal_rules(
    backups: &[Backup],
    kept: &[&Backup],
    archive: Option<(u32, BackupType)>,
    current_db: u32,
) -> BTreeMap<u32, WalKeep> {
    let mut wal = BTreeMap::new();
    let dbs: HashSet<u32> = backups
        .iter()
        .map(|b| b.db_id)
        .chain([current_db])
        .collect();
    for db in dbs {
        let mine: Vec<&Backup> = kept.iter().copied().filter(|b| b.db_id == db).collect();
        let rule = match archive {
            _ if mine.is_empty() && db != current_db => WalKeep::Nothing,
            _ if mine.is_empty() => WalKeep::All,
            None => WalKeep::All,
            Some((n, ty)) => {
                let counts = |b: &&Backup| match ty {
                    BackupType::Full => b.kind == BackupType::Full,
                    BackupType::Diff => b.kind != BackupType::Incr,
                    BackupType::Incr => true,
                };
                let typed: Vec<&Backup> = mine.iter().copied().filter(counts).collect();
                // With no more than N backups of that type, every retained backup is within
                // reach: WAL from the oldest retained one (of any type) on.
                let oldest = if typed.len() > n as usize {
                    typed[typed.len() - n as usize]
                } else {
                    mine[0]
                };
                let from = oldest.start_segno;
                let ranges = mine
                    .iter()
                    .filter(|b| b.start_segno < from)
                    .map(|b| (b.timeline, b.start_segno, b.stop_segno))
                    .collect();
                WalKeep::From { from, ranges }
            }
        };
        wal.insert(db, rule);
    }
    wal
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86400;

    /// A month: a full every 14 days, a diff every 7 (when not a full), an incr every other day.
    fn month() -> Vec<Backup> {
        let mut v = Vec::new();
        let mut full = String::new();
        let mut last = String::new();
        for day in 0..30i64 {
            let t = 1_700_000_000 + day * DAY;
            let stamp = format!("202611{:02}-010000", day % 28 + 1);
            let (kind, label, parent) = if day % 14 == 0 {
                full = format!("{stamp}F{day}");
                (BackupType::Full, full.clone(), None)
            } else if day % 7 == 0 {
                let l = format!("{full}_{stamp}D");
                let p = Some(full.clone());
                (BackupType::Diff, l, p)
            } else {
                let l = format!("{full}_{stamp}I{day}");
                (BackupType::Incr, l, Some(last.clone()))
            };
            last = label.clone();
            v.push(Backup {
                label,
                kind,
                parent,
                db_id: 1,
                timeline: 1,
                start_unix: t,
                stop_unix: t + 60,
                start_segno: 10 + day as u64 * 5,
                stop_segno: 11 + day as u64 * 5,
            });
        }
        v
    }

    fn labels_of(p: &Plan) -> Vec<&str> {
        p.keep.iter().map(String::as_str).collect()
    }

    #[test]
    fn count_retention_expires_fulls_with_their_dependents() {
        let bs = month();
        let now = 1_700_000_000 + 30 * DAY;
        let p = plan(
            &bs,
            &Policy {
                full: Some(FullRetention::Count(2)),
                ..Default::default()
            },
            now,
            1,
        );
        // Fulls on days 0, 14, 28: the day-0 full and its 13 dependents go.
        assert_eq!(p.expire.len(), 14);
        assert!(p.keep.iter().all(|l| !l.contains("F0")));
        assert_eq!(p.keep.len(), 16);
        // WAL from the oldest retained full (day 14) onwards.
        assert_eq!(
            p.wal[&1],
            WalKeep::From {
                from: 10 + 14 * 5,
                ranges: vec![]
            }
        );
    }

    #[test]
    fn diff_retention_expires_older_diffs_and_their_incrs() {
        let bs = month();
        let p = plan(
            &bs,
            &Policy {
                full: Some(FullRetention::Count(3)),
                diff: Some(1),
                archive: None,
            },
            1_700_000_000 + 30 * DAY,
            1,
        );
        // Diffs on days 7 and 21; only day 21's stays. Day 7's incrs (8..13) go with it.
        let expired: Vec<&str> = p.expire.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(expired.len(), 7, "{expired:?}");
        assert!(expired.iter().any(|l| l.ends_with("D")));
        assert!(labels_of(&p).iter().any(|l| l.ends_with("D")));
        assert!(
            p.expire
                .iter()
                .all(|(_, r)| r.contains("retention-diff") || r.contains("builds on expired"))
        );
    }

    #[test]
    fn time_retention_keeps_the_newest_full_before_the_window() {
        let bs = month();
        let now = 1_700_000_000 + 30 * DAY;
        // Window of 10 days opens on day 20: fulls on 0 and 14 predate it; 14 stays.
        let p = plan(
            &bs,
            &Policy {
                full: Some(FullRetention::Days(10)),
                ..Default::default()
            },
            now,
            1,
        );
        assert_eq!(p.expire.len(), 14);
        assert!(labels_of(&p).iter().any(|l| l.contains("F14")));
        // 40 days: nothing predates the window except... nothing at all.
        let p = plan(
            &bs,
            &Policy {
                full: Some(FullRetention::Days(40)),
                ..Default::default()
            },
            now,
            1,
        );
        assert!(p.expire.is_empty());
    }

    #[test]
    fn archive_retention_keeps_consistency_ranges_of_older_backups() {
        let bs = month();
        let p = plan(
            &bs,
            &Policy {
                full: Some(FullRetention::Count(3)),
                diff: None,
                archive: Some((1, BackupType::Diff)),
            },
            1_700_000_000 + 30 * DAY,
            1,
        );
        assert!(p.expire.is_empty());
        let WalKeep::From { from, ranges } = &p.wal[&1] else {
            panic!("{:?}", p.wal)
        };
        // The newest full-or-diff is day 28's full.
        assert_eq!(*from, 10 + 28 * 5);
        assert_eq!(ranges.len(), 28);
        assert!(p.wal[&1].keeps(1, 11));
        assert!(!p.wal[&1].keeps(1, 12));
        assert!(!p.wal[&1].keeps(2, 11));
        assert!(p.wal[&1].keeps(2, 10 + 28 * 5));
    }

    #[test]
    fn no_policy_expires_nothing_and_says_so() {
        let bs = month();
        let p = plan(&bs, &Policy::default(), 0, 1);
        assert!(p.expire.is_empty());
        assert_eq!(p.wal[&1], WalKeep::All);
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn a_cluster_without_retained_backups_keeps_no_wal_unless_current() {
        let mut bs = month();
        for b in bs.iter_mut().take(14) {
            b.db_id = 1;
        }
        for b in bs.iter_mut().skip(14) {
            b.db_id = 2;
        }
        let p = plan(
            &bs,
            &Policy {
                full: Some(FullRetention::Count(1)),
                ..Default::default()
            },
            0,
            2,
        );
        assert_eq!(p.wal[&1], WalKeep::Nothing);
        assert!(matches!(p.wal[&2], WalKeep::From { .. }));
        // No backups at all for the current cluster: keep its WAL.
        let p = plan(&[], &Policy::default(), 0, 3);
        assert_eq!(p.wal[&3], WalKeep::All);
    }

    #[test]
    fn order_comes_from_recorded_times_not_labels() {
        let mut bs = month();
        // Labels that sort the other way round from the times.
        for (i, b) in bs.iter_mut().enumerate() {
            if b.kind == BackupType::Full {
                b.label = format!("{}F", 99 - i);
            }
        }
        for b in bs.iter_mut() {
            if b.kind != BackupType::Full {
                b.parent = None;
            }
        }
        let p = plan(
            &bs,
            &Policy {
                full: Some(FullRetention::Count(1)),
                ..Default::default()
            },
            0,
            1,
        );
        // The day-28 full (label "71F") is the one kept.
        assert!(p.keep.contains(&"71F".to_string()), "{:?}", p.keep);
        assert!(p.expire.iter().any(|(l, _)| l == "99F"));
    }
}
