//! Wall-clock time for what the repository records and for retention decisions.
//!
//! `PGFROST_TEST_CLOCK` (Unix seconds) moves this clock: a test can take a month of daily
//! backups in minutes and have each one recorded, labelled and aged as if taken on its day. The
//! clock still advances in real time from the given instant, so durations and label ordering
//! within one run stay true. It must be set in the past: diff and incr trust a file unchanged
//! when it was last modified before their parent's recorded start, so a parent recorded in the
//! future would make them skip files that did change. Leases (liveness between processes) never use it: they compare
//! real times written by concurrently running processes.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const TEST_CLOCK_ENV: &str = "PGFROST_TEST_CLOCK";

fn base() -> &'static Option<(SystemTime, Instant)> {
    static BASE: OnceLock<Option<(SystemTime, Instant)>> = OnceLock::new();
    BASE.get_or_init(|| {
        let secs: u64 = std::env::var(TEST_CLOCK_ENV).ok()?.trim().parse().ok()?;
        Some((UNIX_EPOCH + Duration::from_secs(secs), Instant::now()))
    })
}

/// Now, as the repository should record it.
pub fn now() -> SystemTime {
    match base() {
        Some((t, at)) => *t + at.elapsed(),
        None => SystemTime::now(),
    }
}

pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn now_unix() -> i64 {
    unix(now())
}

/// Real time in Unix seconds, whatever the test clock says.
pub fn real_unix() -> i64 {
    unix(SystemTime::now())
}

/// RFC 3339 in UTC with seconds.
pub fn rfc3339(unix_secs: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix_secs.max(0) as u64))
        .to_string()
}
