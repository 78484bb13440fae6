//! What a restore did, and how it says so.

use super::options::{ArchiveMode, RestoreOptions};

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    pub label: String,
    pub pg_path: String,
    pub bytes: u64,
    pub written_bytes: u64,
    pub seconds: f64,
    #[serde(rename = "type")]
    pub kind: String,
    pub stop_time: String,
    /// The timeline recovery follows from the backup.
    pub timeline: u32,
    /// A time target without a zone: the zone it was read in (the restored cluster's).
    pub target_zone: Option<String>,
    /// off, or preserve (the backup's own archive_mode and archive_command).
    pub archive_mode: String,
    /// The data directory's links: where each one now points, or null when it was restored as
    /// a plain directory.
    pub links: std::collections::BTreeMap<String, Option<String>>,
    /// The manifest's relation files: path and size, for checks after recovery.
    #[serde(skip)]
    pub files: Vec<(String, u64)>,
    #[serde(skip)]
    pub pg_major: u32,
    /// The backup has no postgresql.conf: its cluster read its configuration from elsewhere
    /// (Debian's /etc/postgresql/<major>/<name>/).
    pub config_outside: bool,
}

/// Said when a restore into a new directory keeps the source's archiving.
pub fn archiving_warning(stanza: &str) -> String {
    format!(
        "WARNING: the restored cluster keeps the backup's archive_mode and archive_command: once \
         promoted it will archive its WAL and timeline history into stanza '{stanza}', as if it were \
         the cluster the backup came from\nHINT: for a test restore or a copy, restore with \
         --archive-mode off"
    )
}

/// The result line (and the notes after it) a restore prints.
pub fn result_text(r: &Restored, opts: &RestoreOptions) -> String {
    let target = opts.target.text();
    let mut text = format!(
        "restored backup {} into {} ({:.1} MiB, {:.1} MiB written) in {:.1}s; start PostgreSQL to recover{}",
        r.label,
        r.pg_path,
        r.bytes as f64 / 1048576.0,
        r.written_bytes as f64 / 1048576.0,
        r.seconds,
        match r.kind.as_str() {
            "default" => " to the end of the archive".to_string(),
            "standby" => " as a standby".to_string(),
            "immediate" => " to the end of the backup".to_string(),
            k => format!(" to {k} {target}"),
        }
    );
    if let Some(z) = &r.target_zone {
        text.push_str(&format!(
            "\nthe target time has no zone: read, as PostgreSQL will read it, in time zone {z} (the restored cluster's timezone setting)"
        ));
    }
    for (link, to) in &r.links {
        match to {
            Some(dir) => text.push_str(&format!("\nlink {link} -> {dir}")),
            None => text.push_str(&format!(
                "\n{link}: a directory inside the data directory (the backup had a link; map it with --link-map {link}=DIR)"
            )),
        }
    }
    if r.config_outside {
        text.push_str(&format!(
            "\nNOTE: the backup has no postgresql.conf: its cluster read its configuration from outside the data directory (Debian and Ubuntu: /etc/postgresql/{}/<cluster>/, with pg_hba.conf)\nHINT: start the restored cluster with that configuration (pg_ctlcluster, or postgres -c config_file=...), or copy postgresql.conf and pg_hba.conf into {}",
            r.pg_major, r.pg_path
        ));
    }
    if r.archive_mode == ArchiveMode::Preserve.name() && !opts.overwrite.allowed() {
        text.push('\n');
        text.push_str(&archiving_warning(&opts.stanza));
    }
    text
}

impl Restored {
    pub fn new(
        chosen: &super::choose::Chosen,
        opts: &RestoreOptions,
        pg_path: &std::path::Path,
        links: super::places::LinkReport,
        written_bytes: u64,
        seconds: f64,
    ) -> Restored {
        let m = &chosen.m;
        Restored {
            label: m.label.clone(),
            pg_path: pg_path.display().to_string(),
            bytes: m.stats.logical_bytes,
            written_bytes,
            seconds,
            kind: opts.target.kind().to_string(),
            timeline: chosen.timeline,
            target_zone: chosen.zone.clone(),
            stop_time: m.stop_time.clone(),
            archive_mode: opts.archive.name().into(),
            links,
            files: m.files.iter().map(|f| (f.path.clone(), f.size)).collect(),
            pg_major: m.pg_major,
            config_outside: !m.files.iter().any(|f| f.path == "postgresql.conf"),
        }
    }
}
