//! Progress of long work: a bar on a terminal, a log line every 10 s otherwise (a systemd journal,
//! a cron mail, PostgreSQL's log). What is counted is the caller's; the reporter only reads it.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A running reporter; dropping it stops it and clears the bar.
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
    bar: Option<indicatif::ProgressBar>,
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Starts reporting `done` bytes out of `total` for `what` ("backup", "restore"). Off below
/// `--log-level info`, like the log lines it stands for.
pub fn report(what: &'static str, total: u64, done: Arc<AtomicU64>) -> Reporter {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal() && log::max_level() >= log::LevelFilter::Info;
    let bar = tty.then(|| {
        let b = indicatif::ProgressBar::new(total);
        let template =
            format!("{what} {{bar:40}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} ETA {{eta}}");
        b.set_style(indicatif::ProgressStyle::with_template(&template).expect("template"));
        b
    });
    let shown = bar.clone();
    let task = tokio::spawn(async move {
        if let Some(bar) = shown {
            loop {
                bar.set_position(done.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            log::info!(
                "{}",
                line(what, total, done.load(Ordering::Relaxed), started.elapsed())
            );
        }
    });
    Reporter { task, bar }
}

/// `backup: 512 of 2048 MiB (25%), 85 MiB/s, ETA 18s`.
fn line(what: &str, total: u64, done: u64, took: Duration) -> String {
    let secs = took.as_secs_f64().max(0.001);
    let rate = done as f64 / secs;
    let eta = if rate > 0.0 {
        format!("{:.0}s", total.saturating_sub(done) as f64 / rate)
    } else {
        "?".into()
    };
    format!(
        "{what}: {} of {} MiB ({:.0}%), {:.0} MiB/s, ETA {eta}",
        done >> 20,
        total >> 20,
        100.0 * done as f64 / total.max(1) as f64,
        rate / 1048576.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(
            line("backup", 2048 << 20, 512 << 20, Duration::from_secs(4)),
            "backup: 512 of 2048 MiB (25%), 128 MiB/s, ETA 12s"
        );
        assert_eq!(
            line("verify", 10 << 20, 0, Duration::from_secs(4)),
            "verify: 0 of 10 MiB (0%), 0 MiB/s, ETA ?"
        );
    }
}
