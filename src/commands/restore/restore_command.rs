//! The restore_command a restore writes: pgfrost archive-get with the same repository and keys.

use std::path::{Path, PathBuf};

/// Quotes a word for the shell PostgreSQL runs restore_command with, when it needs it.
fn sh_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/._-:=@%+,".contains(&c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Options that restore_command passes on to archive-get when the restore had them from the
/// command line or the environment: PostgreSQL runs restore_command with its own environment,
/// and the config file is passed whole. All are options archive-get accepts (a test parses the
/// command as the CLI does). Secrets stay out ([`WITHHELD_OPTIONS`]): postgresql.auto.conf is
/// no place for them.
pub const RESTORE_COMMAND_OPTIONS: &[&str] = &[
    "repo",
    "repo-s3-endpoint",
    "repo-s3-region",
    "repo-s3-uri-style",
    "repo-s3-ca-file",
    "repo-gcs-endpoint",
    "repo-gcs-key-type",
    "repo-gcs-key-file",
    "repo-azure-endpoint",
    "repo-azure-account",
    "repo-azure-key-type",
    "key-file",
    "passphrase-file",
    "spool-path",
    "archive-get-queue-max",
    "process-max",
];

/// Secrets a restore may have from its command line or environment: never written into
/// restore_command, and the operator is told where to put them instead.
pub const WITHHELD_OPTIONS: &[&str] = &[
    "repo-s3-key",
    "repo-s3-key-secret",
    "repo-gcs-token",
    "repo-azure-key",
    "repo-azure-sas-token",
];

/// Options whose values are paths: made absolute, since restore_command runs in the data
/// directory.
const PATH_OPTIONS: &[&str] = &[
    "repo-s3-ca-file",
    "repo-gcs-key-file",
    "key-file",
    "passphrase-file",
    "spool-path",
];

/// What restore_command passes on to archive-get, as the restore had it: read from the options
/// before any work, turned into a command line when the recovery settings are written.
#[derive(Debug, Clone, Default)]
pub struct ArchiveGet {
    /// The config file the restore read: passed whole.
    pub config_file: Option<PathBuf>,
    /// The [`RESTORE_COMMAND_OPTIONS`] the restore had from the command line or the
    /// environment, with their values as given.
    pub given: Vec<(&'static str, String)>,
    /// S3 credentials given on the command line or in the environment: not carried, and said so.
    pub withheld: Vec<&'static str>,
}

/// The restore_command that fetches this stanza's WAL with the same repository and keys:
/// every option after `archive-get` (the subcommand's own options are not accepted before
/// it). `spool` replaces spool-path (a drill's queue stays in its scratch directory).
pub fn restore_command(call: &ArchiveGet, stanza: &str, spool: Option<&Path>) -> String {
    // Linux names a binary replaced while it runs (a package upgrade) "<path> (deleted)"; the
    // path is still where the current pgfrost lives.
    let exe = std::env::current_exe()
        .map(|p| {
            p.display()
                .to_string()
                .trim_end_matches(" (deleted)")
                .to_string()
        })
        .unwrap_or_else(|_| "pgfrost".into());
    let absolute = |p: &str| {
        std::path::absolute(p)
            .map(|a| a.display().to_string())
            .unwrap_or_else(|_| p.to_string())
    };
    // PostgreSQL replaces %f, %p, %r and %% in restore_command: a literal % must be doubled.
    let word = |s: &str| sh_word(s).replace('%', "%%");
    let mut cmd = format!("{} archive-get", word(&exe));
    if let Some(cfg) = &call.config_file {
        cmd.push_str(&format!(
            " --config {}",
            word(&absolute(&cfg.display().to_string()))
        ));
    }
    cmd.push_str(&format!(" --stanza {}", word(stanza)));
    for &o in RESTORE_COMMAND_OPTIONS {
        let value = match (o, spool) {
            ("spool-path", Some(dir)) => dir.display().to_string(),
            _ => match call.given.iter().find(|(g, _)| *g == o) {
                Some((_, v)) => {
                    let local = o == "repo" && !v.contains("://");
                    if PATH_OPTIONS.contains(&o) || local {
                        absolute(v)
                    } else {
                        v.clone()
                    }
                }
                None => continue,
            },
        };
        cmd.push_str(&format!(" --{o} {}", word(&value)));
    }
    for o in &call.withheld {
        log::warn!(
            "restore_command does not carry {o} (it would be written into postgresql.auto.conf); \
             HINT: set it in the config file or in the environment PostgreSQL runs with"
        );
    }
    cmd.push_str(" %f \"%p\"");
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use std::collections::HashMap;

    #[test]
    fn shell_words() {
        assert_eq!(sh_word("/usr/bin/pgfrost"), "/usr/bin/pgfrost");
        assert_eq!(sh_word("/opt/my dir/pgfrost"), "'/opt/my dir/pgfrost'");
        assert_eq!(sh_word("it's"), "'it'\\''s'");
    }

    /// What PostgreSQL does to restore_command before the shell sees it.
    fn substitute(cmd: &str, f: &str, p: &str) -> String {
        let mut out = String::new();
        let mut it = cmd.chars().peekable();
        while let Some(c) = it.next() {
            match (c, it.peek()) {
                ('%', Some('f')) => out.push_str(f),
                ('%', Some('p')) => out.push_str(p),
                ('%', Some('%')) => out.push('%'),
                _ => {
                    out.push(c);
                    continue;
                }
            }
            it.next();
        }
        out
    }

    /// restore_command, with every option it can carry given on the command line or in the
    /// environment (some of them awkward: spaces, quotes, %), is a command line archive-get
    /// accepts, in that position, with the values the restore had.
    #[test]
    fn restore_command_is_an_archive_get_the_cli_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("pgfrost's.toml");
        std::fs::write(&cfg, "stanza = 'main'\n").unwrap();
        let value = |o: &str| match o {
            "repo" => "/srv/pg frost/100%repo".to_string(),
            "repo-s3-endpoint" => "http://127.0.0.1:9000".into(),
            "repo-s3-region" => "eu-west-1".into(),
            "repo-s3-uri-style" => "host".into(),
            "repo-s3-ca-file" => "/etc/pgfrost/private ca.pem".into(),
            "repo-gcs-endpoint" => "http://127.0.0.1:4443".into(),
            "repo-gcs-key-type" => "service".into(),
            "repo-gcs-key-file" => "/etc/pgfrost/gcs key's.json".into(),
            "repo-azure-endpoint" => "http://127.0.0.1:10000/devstoreaccount1".into(),
            "repo-azure-account" => "devstoreaccount1".into(),
            "repo-azure-key-type" => "auto".into(),
            "key-file" => "/etc/pgfrost/it's key.json".into(),
            "passphrase-file" => "/etc/pgfrost/pass".into(),
            "spool-path" => "/var/spool/pgfrost %p".into(),
            "archive-get-queue-max" => "64MiB".into(),
            "process-max" => "3".into(),
            o => panic!("no test value for {o}"),
        };
        let (mut cli, mut env) = (HashMap::new(), HashMap::new());
        for (i, o) in RESTORE_COMMAND_OPTIONS.iter().enumerate() {
            if i % 2 == 0 {
                cli.insert(o.to_string(), value(o));
            } else {
                env.insert(crate::config::env_name(o), value(o));
            }
        }
        let settings = Settings::resolve(&cli, cfg.to_str(), &env).unwrap();
        let cmd = restore_command(&super::super::archive_get(&settings), "main", None);
        let line = substitute(&cmd, "000000010000000000000002", "pg_wal/RECOVERYXLOG");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("for a in {line}; do printf '%s\\0' \"$a\"; done"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}");
        let words: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .split_terminator('\0')
            .map(str::to_string)
            .collect();
        assert_eq!(words[1], "archive-get", "{cmd}");
        let m = crate::cli::build()
            .try_get_matches_from(&words)
            .unwrap_or_else(|e| panic!("{cmd}: {e}"));
        let (path, leaf) = crate::cli::command_path(&m);
        assert_eq!(path, ["archive-get"]);
        assert_eq!(
            leaf.get_one::<String>("name").unwrap(),
            "000000010000000000000002"
        );
        assert_eq!(
            leaf.get_one::<String>("dest").unwrap(),
            "pg_wal/RECOVERYXLOG"
        );
        let given = crate::cli::given_options(&m);
        for o in RESTORE_COMMAND_OPTIONS {
            assert_eq!(given.get(*o), Some(&value(o)), "{o} in {cmd}");
        }
        assert_eq!(given.get("stanza").map(String::as_str), Some("main"));
        let config = m
            .get_one::<String>("config")
            .or(leaf.get_one::<String>("config"));
        assert_eq!(config.map(PathBuf::from), Some(cfg.clone()));

        // A drill's queue goes to its scratch directory whatever spool-path says.
        let cmd = restore_command(
            &super::super::archive_get(&settings),
            "main",
            Some(Path::new("/tmp/drill/spool")),
        );
        assert!(cmd.contains("--spool-path /tmp/drill/spool"), "{cmd}");
        assert!(!cmd.contains("pgfrost %"), "{cmd}");
    }
}
