//! The text of PostgreSQL's configuration files (postgresql.conf, postgresql.auto.conf): which
//! setting a line sets, the restored cluster's time zone, the recovery settings a restore must
//! not leave behind.

/// `timezone` as the configuration files of a data directory set it (the last setting wins, and
/// postgresql.auto.conf is read after postgresql.conf); None when neither sets it.
pub fn timezone_setting(conf: &str, auto: &str) -> Option<String> {
    let mut zone = None;
    for line in conf.lines().chain(auto.lines()) {
        if setting_name(line).as_deref() != Some("timezone") {
            continue;
        }
        let v = line.trim_start()[8..].trim_start();
        let v = v.strip_prefix('=').unwrap_or(v).trim();
        let v = match v.strip_prefix('\'') {
            Some(q) => q.split('\'').next().unwrap_or(""),
            None => v.split(['#', ' ']).next().unwrap_or(""),
        };
        zone = Some(v.to_string());
    }
    zone
}

/// The settings that steer recovery: restore writes its own, and any left in the restored
/// configuration files must not outlive the restore that wrote them.
const RECOVERY_SETTINGS: &[&str] = &[
    "restore_command",
    "archive_cleanup_command",
    "recovery_end_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "recovery_target_action",
];

/// The setting a configuration-file line sets (lowercased, as PostgreSQL's names are
/// case-insensitive), if it sets one.
fn setting_name(line: &str) -> Option<String> {
    let l = line.trim_start();
    let end = l
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(l.len());
    let (name, rest) = l.split_at(end);
    let rest = rest.trim_start();
    (!name.is_empty() && (rest.starts_with('=') || end < l.len() && !rest.is_empty()))
        .then(|| name.to_ascii_lowercase())
}

/// Comments out every recovery setting in a configuration file's text, each with `stamp`
/// saying who did it; returns the new text and the names disabled.
pub fn disable_recovery_settings(text: &str, stamp: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut disabled = Vec::new();
    for line in text.split_inclusive('\n') {
        match setting_name(line) {
            Some(n) if RECOVERY_SETTINGS.contains(&n.as_str()) => {
                out.push_str(&format!("# {stamp}: {line}"));
                disabled.push(n);
            }
            _ => out.push_str(line),
        }
    }
    (out, disabled)
}

pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_recovery_settings_are_commented_out() {
        let text = "shared_buffers = 128MB\nrestore_command = 'old'\n  Recovery_Target_Time='2026-11-21 09:30:00+00'\nrecovery_target_action promote\n# recovery_target_name = 'x'\nrecovery_target_xidx = 1\narchive_mode = off\nrecovery_min_apply_delay = 0";
        let (out, names) = disable_recovery_settings(text, "disabled by test");
        assert_eq!(
            names,
            [
                "restore_command",
                "recovery_target_time",
                "recovery_target_action"
            ]
        );
        assert_eq!(
            out,
            "shared_buffers = 128MB\n# disabled by test: restore_command = 'old'\n# disabled by test:   Recovery_Target_Time='2026-11-21 09:30:00+00'\n# disabled by test: recovery_target_action promote\n# recovery_target_name = 'x'\nrecovery_target_xidx = 1\narchive_mode = off\nrecovery_min_apply_delay = 0"
        );
    }

    #[test]
    fn timezone_of_a_data_directory() {
        assert_eq!(timezone_setting("", ""), None);
        assert_eq!(
            timezone_setting(
                "timezone = 'Etc/UTC'\t# set by initdb\n",
                "TimeZone='Asia/Tokyo'\n"
            )
            .as_deref(),
            Some("Asia/Tokyo")
        );
        assert_eq!(
            timezone_setting("timezone = Europe/Berlin # x\n#timezone = 'UTC'\n", "").as_deref(),
            Some("Europe/Berlin")
        );
    }
}
