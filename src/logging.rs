//! A minimal stderr logger. Lines carry a UTC timestamp and the level; archive-push output lands
//! in PostgreSQL's log, where a plain, greppable line is what operators want.

use log::{Level, LevelFilter, Metadata, Record};

struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &Record) {
        if self.enabled(r.metadata()) && r.target().starts_with("pgfrost") {
            let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now());
            let lvl = match r.level() {
                Level::Error => "ERROR",
                Level::Warn => "WARN",
                Level::Info => "INFO",
                Level::Debug => "DEBUG",
                Level::Trace => "TRACE",
            };
            eprintln!("{ts} {lvl}: {}", r.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

pub fn init() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Warn);
}

pub fn set_level(level: &str) {
    log::set_max_level(match level {
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => LevelFilter::Info,
    });
}
