//! The restore's options, typed and checked before anything is read or written.

use super::restore_command::ArchiveGet;
use super::target_time::{TIME_FORMS, TargetTime, parse_target_time};
use crate::commands::StoreOptions;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Everything a restore needs from the options.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub stanza: String,
    pub target: RecoveryTarget,
    /// `--set`: the backup to restore. What cannot be known about it is warned of, not refused.
    pub set: Option<String>,
    pub timeline: TargetTimeline,
    /// `--target-timeline` as given: written into recovery_target_timeline as it is.
    pub timeline_given: Option<String>,
    /// `--target-action` (pause, promote, shutdown).
    pub target_action: Option<String>,
    /// `--target-exclusive`: stop just before the target.
    pub target_exclusive: bool,
    pub overwrite: Overwrite,
    pub archive: ArchiveMode,
    pub tablespace_map: Vec<(u32, PathBuf)>,
    pub link_map: Vec<(String, PathBuf)>,
    /// Files written at a time.
    pub process_max: u32,
    pub store: StoreOptions,
    /// What restore_command passes on to archive-get.
    pub archive_get: ArchiveGet,
}

/// Where recovery stops (`--type`, with `--target` for the four that take one). The target is
/// kept as given too: the recovery settings carry it to PostgreSQL as it was written.
#[derive(Debug, Clone, PartialEq)]
pub enum RecoveryTarget {
    /// `default`: the end of the archive.
    EndOfArchive,
    /// `standby`: no end; the cluster stays a standby.
    Standby,
    /// `immediate`: the end of the backup.
    Immediate,
    Time {
        text: String,
        time: TargetTime,
    },
    Xid {
        text: String,
        xid: u64,
    },
    Lsn {
        text: String,
        lsn: u64,
    },
    Name(String),
}

/// The restore types `--type` takes.
const TYPES: [&str; 7] = [
    "default",
    "immediate",
    "time",
    "xid",
    "lsn",
    "name",
    "standby",
];

impl RecoveryTarget {
    /// Refuses a restore type that does not exist.
    pub fn check_type(kind: &str) -> Result<()> {
        if !TYPES.contains(&kind) {
            return Err(Error::config(format!("invalid restore type '{kind}'"))
                .hint(format!("use --type {}", TYPES.join(", "))));
        }
        Ok(())
    }

    /// Whether restore type `kind` needs `--target`.
    pub fn takes_target(kind: &str) -> bool {
        ["time", "xid", "lsn", "name"].contains(&kind)
    }

    /// The target of restore type `kind` (checked by [`Self::check_type`]), from `--target`.
    pub fn parse(kind: &str, target: Option<&str>) -> Result<RecoveryTarget> {
        let Some(t) = target else {
            return Ok(match kind {
                "immediate" => RecoveryTarget::Immediate,
                "standby" => RecoveryTarget::Standby,
                _ => RecoveryTarget::EndOfArchive,
            });
        };
        if !Self::takes_target(kind) {
            return Err(Error::config(format!(
                "option target is given, but restore type {kind} takes none"
            ))
            .hint("give --type time, xid, lsn or name with --target"));
        }
        let text = t.to_string();
        Ok(match kind {
            "time" => RecoveryTarget::Time {
                time: parse_target_time(t).map_err(|e| {
                    Error::config(format!("invalid value for option target: {e}"))
                        .hint(format!("write a time target as {TIME_FORMS}"))
                })?,
                text,
            },
            "lsn" => RecoveryTarget::Lsn {
                lsn: parse_lsn_target(t)?,
                text,
            },
            "xid" => {
                if t.is_empty()
                    || !t.bytes().all(|c| c.is_ascii_digit())
                    || t.parse::<u64>().is_err()
                {
                    return Err(Error::config(format!(
                        "invalid value for option target: '{t}' is not a transaction id"
                    ))
                    .hint("write an xid target as a number, as txid_current() or pg_current_xact_id() returns it"));
                }
                RecoveryTarget::Xid {
                    xid: t.parse().expect("checked above"),
                    text,
                }
            }
            _ => {
                if t.is_empty() || t.len() > 63 {
                    return Err(Error::config(format!(
                        "invalid value for option target: a restore point name is 1 to 63 bytes, '{t}' is {}",
                        t.len()
                    ))
                    .hint("give the name pg_create_restore_point() was called with"));
                }
                RecoveryTarget::Name(text)
            }
        })
    }

    /// The restore type, as `--type` names it.
    pub fn kind(&self) -> &'static str {
        match self {
            RecoveryTarget::EndOfArchive => "default",
            RecoveryTarget::Standby => "standby",
            RecoveryTarget::Immediate => "immediate",
            RecoveryTarget::Time { .. } => "time",
            RecoveryTarget::Xid { .. } => "xid",
            RecoveryTarget::Lsn { .. } => "lsn",
            RecoveryTarget::Name(_) => "name",
        }
    }

    /// The target as given, or "" for the types that take none.
    pub fn text(&self) -> &str {
        match self {
            RecoveryTarget::Time { text, .. }
            | RecoveryTarget::Xid { text, .. }
            | RecoveryTarget::Lsn { text, .. }
            | RecoveryTarget::Name(text) => text,
            _ => "",
        }
    }

    pub fn time(&self) -> Option<&TargetTime> {
        match self {
            RecoveryTarget::Time { time, .. } => Some(time),
            _ => None,
        }
    }

    pub fn lsn(&self) -> Option<u64> {
        match self {
            RecoveryTarget::Lsn { lsn, .. } => Some(*lsn),
            _ => None,
        }
    }

    pub fn xid(&self) -> Option<u64> {
        match self {
            RecoveryTarget::Xid { xid, .. } => Some(*xid),
            _ => None,
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            RecoveryTarget::Name(n) => Some(n),
            _ => None,
        }
    }
}

/// An LSN target as PostgreSQL prints one (two hexadecimal halves of at most 8 digits).
fn parse_lsn_target(t: &str) -> Result<u64> {
    let hex = |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|c| c.is_ascii_hexdigit());
    t.split_once('/')
        .filter(|(h, l)| hex(h) && hex(l))
        .and_then(|_| crate::pg::wal::parse_lsn(t))
        .ok_or_else(|| {
            Error::config(format!(
                "invalid value for option target: '{t}' is not an LSN"
            ))
            .hint("write an LSN target as PostgreSQL prints one: 0/16B3748")
        })
}

/// The timeline recovery follows, as `--target-timeline` says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TargetTimeline {
    Latest,
    Current,
    Number(u32),
}

impl TargetTimeline {
    pub fn parse(given: Option<&str>) -> Result<TargetTimeline> {
        Ok(match given {
            None | Some("latest") => TargetTimeline::Latest,
            Some("current") => TargetTimeline::Current,
            Some(t) => {
                let n = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                    Some(h) => u32::from_str_radix(h, 16).ok(),
                    None => t.parse::<u32>().ok(),
                };
                match n.filter(|n| *n >= 1) {
                    Some(n) => TargetTimeline::Number(n),
                    None => {
                        return Err(Error::config(format!(
                            "invalid value for option target-timeline: '{t}'"
                        ))
                        .hint("use current, latest or a timeline number (2, or 0x2)"));
                    }
                }
            }
        })
    }
}

/// What a restore may do to a target that is not empty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Overwrite {
    /// Neither `--delta` nor `--force`: the target must be empty.
    Never,
    /// `--delta`: keep the blocks that already match, rewrite the rest.
    Delta,
    /// `--force`: rewrite every file.
    Force,
}

impl Overwrite {
    /// `--delta` with `--force` is a delta restore: `--force` only allows a target that is not
    /// empty, which `--delta` does too.
    pub fn from_flags(delta: bool, force: bool) -> Overwrite {
        match (delta, force) {
            (true, _) => Overwrite::Delta,
            (false, true) => Overwrite::Force,
            (false, false) => Overwrite::Never,
        }
    }

    pub fn delta(self) -> bool {
        self == Overwrite::Delta
    }

    /// `--delta` or `--force`: what is there may be overwritten, and what the backup does not
    /// have is removed.
    pub fn allowed(self) -> bool {
        self != Overwrite::Never
    }
}

/// `--archive-mode`: whether the restored cluster archives as the backup's did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArchiveMode {
    Off,
    Preserve,
}

impl ArchiveMode {
    pub fn name(self) -> &'static str {
        match self {
            ArchiveMode::Off => "off",
            ArchiveMode::Preserve => "preserve",
        }
    }
}

/// Where a restore may put what lies outside the data directory.
#[derive(Clone, Copy)]
pub enum Placement<'a> {
    /// restore: tablespaces at their original locations unless `--tablespace-map` moves them;
    /// links as `--link-map` says, else plain directories inside the data directory.
    Operator,
    /// drill: everything inside this scratch directory (tablespaces in `tablespaces/<oid>`,
    /// links as plain directories, the archive-get queue in `spool`), whatever the maps say;
    /// the backup chosen for recovery along this timeline when one is given (the primary's).
    Scratch(&'a Path, Option<u32>),
}

impl RestoreOptions {
    /// The options as a restore with `placement` applies them: a drill keeps every path in its
    /// scratch directory and never archives.
    pub fn placed(&self, placement: Placement) -> RestoreOptions {
        let mut o = self.clone();
        if let Placement::Scratch(_, tli) = placement {
            if o.timeline_given.is_none()
                && let Some(t) = tli
            {
                o.timeline = TargetTimeline::Number(t);
            }
            if !o.tablespace_map.is_empty() || !o.link_map.is_empty() {
                log::info!(
                    "drill: tablespace-map and link-map are ignored; a drill keeps every path inside its scratch directory"
                );
            }
            o.tablespace_map.clear();
            o.link_map.clear();
            o.archive = ArchiveMode::Off;
        }
        o
    }

    /// The target in words, for messages.
    pub fn describe(&self) -> String {
        let t = self.target.text();
        let tl = match self.timeline {
            TargetTimeline::Latest => "the latest timeline".to_string(),
            TargetTimeline::Current => "the backup's timeline".to_string(),
            TargetTimeline::Number(n) => format!("timeline {n}"),
        };
        match self.target.kind() {
            "default" | "standby" => format!("the end of the archive on {tl}"),
            "immediate" => format!("the end of a backup on {tl}"),
            k => format!("the {k} target '{t}' on {tl}"),
        }
    }

    /// The directory a restore with `placement` spools archive-get's queue in, when not the
    /// configured one.
    pub fn spool(placement: Placement) -> Option<PathBuf> {
        match placement {
            Placement::Scratch(dir, _) => Some(dir.join("spool")),
            Placement::Operator => None,
        }
    }
}
