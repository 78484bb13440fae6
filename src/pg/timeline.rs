//! Timeline history files (`0000000N.history`) and which backups a timeline can be recovered
//! from: pure functions over their text.
//!
//! A history file of timeline N lists, oldest first, each ancestor timeline and the LSN where N's
//! line of history left it (`parentTLI <tab> switchpoint <tab> reason`). PostgreSQL recovers a
//! backup along timeline N only if the backup's timeline is N or one of those ancestors, and
//! the backup ended before the ancestor's switch point (timeline.c, xlogrecovery.c).

use super::wal::{format_lsn, parse_lsn};

/// One ancestor of a timeline: `tli` was left at `switchpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ancestor {
    pub tli: u32,
    pub switchpoint: u64,
}

/// Parses a history file as PostgreSQL's readTimeLineHistory does: blank lines and `#` comments
/// skipped, each other line a parent timeline and a switch point. None when a line does not
/// read.
pub fn parse_history(text: &str) -> Option<Vec<Ancestor>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let tli: u32 = words.next()?.parse().ok()?;
        let switchpoint = parse_lsn(words.next()?)?;
        out.push(Ancestor { tli, switchpoint });
    }
    Some(out)
}

/// Why a backup on `tli` that ended at `stop_lsn` cannot be recovered along `target` (whose
/// ancestors are `history`); None when it can.
pub fn unreachable(target: u32, history: &[Ancestor], tli: u32, stop_lsn: u64) -> Option<String> {
    if tli == target {
        return None;
    }
    match history.iter().find(|a| a.tli == tli) {
        Some(a) if stop_lsn <= a.switchpoint => None,
        Some(a) => Some(format!(
            "it ended at {} on timeline {tli}, after timeline {target} branched off it at {}",
            format_lsn(stop_lsn),
            format_lsn(a.switchpoint)
        )),
        None => Some(format!(
            "its timeline {tli} is not in the history of timeline {target}{}",
            if history.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    history
                        .iter()
                        .map(|a| a.tli.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_files_and_reachability() {
        let h = parse_history(
            "1\t0/5000060\tno recovery target specified\n\n# note\n2\t0/9000000\tbefore 2026-11-21\n",
        )
        .unwrap();
        assert_eq!(
            h,
            [
                Ancestor {
                    tli: 1,
                    switchpoint: 0x5000060
                },
                Ancestor {
                    tli: 2,
                    switchpoint: 0x9000000
                }
            ]
        );
        assert_eq!(parse_history("1 nonsense"), None);
        assert_eq!(unreachable(3, &h, 3, u64::MAX), None);
        assert_eq!(unreachable(3, &h, 1, 0x5000060), None);
        assert_eq!(unreachable(3, &h, 2, 0x8000000), None);
        let after = unreachable(3, &h, 1, 0x6000000).unwrap();
        assert!(
            after.contains("after timeline 3 branched off it at 0/5000060"),
            "{after}"
        );
        // The old primary's timeline 1 knows nothing of the standby's timeline 2.
        let other = unreachable(1, &[], 2, 0x100).unwrap();
        assert!(
            other.contains("not in the history of timeline 1"),
            "{other}"
        );
    }
}
