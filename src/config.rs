//! Options, pgBackRest's way: each can come from the config file (TOML), the environment
//! (`PGFROST_<OPTION>`), or the command line (`--<option>`); the command line wins over the
//! environment, which wins over the file. In the file, top-level keys and the `[global]` table
//! apply to every stanza; a table named after a stanza overrides them for that stanza.
//!
//! One table ([`OPTIONS`]) drives the command-line flags, the environment names, the keys the
//! file accepts and the help text, so the four cannot drift apart.

use crate::error::{Error, Result};
use crate::store::Location;
use crate::store::cloud::{AzureCredentials, GcsCredentials};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "/etc/pgfrost/pgfrost.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    General,
    Repository,
    Postgres,
    Keys,
    Archive,
    Backup,
    Retention,
}

impl Group {
    pub fn heading(self) -> &'static str {
        match self {
            Group::General => "General options",
            Group::Repository => "Repository options",
            Group::Postgres => "PostgreSQL options",
            Group::Keys => "Key options",
            Group::Archive => "Archive options",
            Group::Backup => "Backup and restore options",
            Group::Retention => "Retention options",
        }
    }
}

pub struct OptDef {
    pub name: &'static str,
    pub value: &'static str,
    pub help: &'static str,
    pub group: Group,
    pub default: Option<&'static str>,
    /// Commands the option appears on; empty means every command.
    pub commands: &'static [&'static str],
    /// May be given several times on the command line; the values are joined with commas.
    pub multi: bool,
}

const fn opt(name: &'static str, value: &'static str, group: Group, help: &'static str) -> OptDef {
    OptDef {
        name,
        value,
        help,
        group,
        default: None,
        commands: &[],
        multi: false,
    }
}

const KEY_CMDS: &[&str] = &["repo-create", "key"];
const ARCHIVE_CMDS: &[&str] = &["archive-push", "archive-get", "check", "backup"];
const RESTORE: &[&str] = &["restore", "drill"];
const EXPIRE_CMDS: &[&str] = &["backup", "expire", "verify"];
const INDEX_CMDS: &[&str] = &["backup", "restore", "drill", "verify", "expire"];

pub const OPTIONS: &[OptDef] = &[
    opt(
        "stanza",
        "NAME",
        Group::General,
        "Stanza: the name under which one PostgreSQL cluster's backups and WAL are kept.",
    ),
    OptDef {
        default: Some("info"),
        ..opt(
            "log-level",
            "LEVEL",
            Group::General,
            "Log level on stderr: error, warn, info, debug or trace.",
        )
    },
    OptDef {
        default: Some("2"),
        ..opt(
            "process-max",
            "N",
            Group::General,
            "Parallel worker processes for compression, encryption and transfer (1-64).",
        )
    },
    OptDef {
        default: Some("text"),
        ..opt(
            "output",
            "FORMAT",
            Group::General,
            "Output format for results on stdout: text or json (info also prometheus, the text exposition format).",
        )
    },
    opt(
        "repo",
        "LOCATION",
        Group::Repository,
        "Repository: an absolute path or file:///path for local disk, s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] (Google Cloud Storage) or az://CONTAINER[/PREFIX] (Azure Blob Storage).",
    ),
    opt(
        "repo-s3-endpoint",
        "URL",
        Group::Repository,
        "S3 endpoint, e.g. https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000.",
    ),
    opt(
        "repo-s3-region",
        "REGION",
        Group::Repository,
        "S3 region (default us-east-1).",
    ),
    opt(
        "repo-s3-ca-file",
        "PATH",
        Group::Repository,
        "PEM file of CA certificates trusted for the S3 endpoint, besides the system's (a private CA, or a container or chroot without /etc/ssl).",
    ),
    opt(
        "repo-s3-key",
        "KEY",
        Group::Repository,
        "S3 access key id (else AWS_ACCESS_KEY_ID).",
    ),
    opt(
        "repo-s3-key-secret",
        "SECRET",
        Group::Repository,
        "S3 secret access key (else AWS_SECRET_ACCESS_KEY). Prefer the config file or the environment: the command line is visible to other users.",
    ),
    OptDef {
        default: Some("path"),
        ..opt(
            "repo-s3-uri-style",
            "STYLE",
            Group::Repository,
            "S3 addressing: path (endpoint/bucket/key) or host (bucket.endpoint/key).",
        )
    },
    opt(
        "repo-gcs-key-file",
        "PATH",
        Group::Repository,
        "GCS: a service account's JSON key file. Without it, application default credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's login, or the machine's metadata server).",
    ),
    opt(
        "repo-gcs-key-type",
        "TYPE",
        Group::Repository,
        "GCS credentials: service (repo-gcs-key-file; the default when it is set), token (repo-gcs-token; the default when it is set) or auto (application default credentials; the default otherwise).",
    ),
    opt(
        "repo-gcs-token",
        "TOKEN",
        Group::Repository,
        "GCS: an OAuth access token used as it is (e.g. from 'gcloud auth print-access-token'; it is not refreshed), or any text for an emulator.",
    ),
    opt(
        "repo-gcs-endpoint",
        "URL",
        Group::Repository,
        "GCS base URL instead of https://storage.googleapis.com (an emulator, e.g. http://127.0.0.1:4443).",
    ),
    opt(
        "repo-azure-account",
        "NAME",
        Group::Repository,
        "Azure storage account (else AZURE_STORAGE_ACCOUNT_NAME).",
    ),
    opt(
        "repo-azure-key",
        "KEY",
        Group::Repository,
        "Azure storage account shared key (else AZURE_STORAGE_ACCOUNT_KEY). Prefer the config file or the environment.",
    ),
    opt(
        "repo-azure-sas-token",
        "TOKEN",
        Group::Repository,
        "Azure shared access signature for the container (needs read, add, create, write, delete and list).",
    ),
    opt(
        "repo-azure-key-type",
        "TYPE",
        Group::Repository,
        "Azure credentials: shared (repo-azure-key), sas (repo-azure-sas-token) or auto (workload or managed identity, or the Azure CLI's login). Default: the one whose option is set, else auto.",
    ),
    opt(
        "repo-azure-endpoint",
        "URL",
        Group::Repository,
        "Azure blob endpoint instead of https://ACCOUNT.blob.core.windows.net (Azurite: http://127.0.0.1:10000/devstoreaccount1).",
    ),
    OptDef {
        default: Some("3"),
        ..opt(
            "compress-level",
            "N",
            Group::Repository,
            "zstd level for new data (1-19; 0 stores it uncompressed).",
        )
    },
    OptDef {
        commands: &["backup", "expire"],
        default: Some("32MiB"),
        ..opt(
            "pack-size",
            "SIZE",
            Group::Repository,
            "Size new packs aim at (64KiB to 1GiB). Larger means fewer objects and requests; smaller means less rewritten when garbage collection compacts a mostly-dead pack.",
        )
    },
    OptDef {
        commands: INDEX_CMDS,
        default: Some("/var/tmp"),
        ..opt(
            "index-path",
            "DIR",
            Group::Backup,
            "Local directory for the on-disk part of the block index (about 60 bytes per stored block, in files removed as soon as they are opened). Prefer a disk to a tmpfs.",
        )
    },
    OptDef {
        commands: INDEX_CMDS,
        default: Some("64MiB"),
        ..opt(
            "index-memory",
            "SIZE",
            Group::Backup,
            "Memory the block index may hold (64KiB to 64GiB); beyond it the index goes to sorted files in index-path. With the default, a repository of up to about 450,000 distinct blocks (3.5 GiB of 8 KiB pages) never touches disk.",
        )
    },
    opt(
        "pg-path",
        "DIR",
        Group::Postgres,
        "PostgreSQL data directory.",
    ),
    opt(
        "pg-host",
        "HOST",
        Group::Postgres,
        "PostgreSQL host (else PGHOST; a path means a Unix socket directory).",
    ),
    opt(
        "pg-port",
        "PORT",
        Group::Postgres,
        "PostgreSQL port (else PGPORT, 5432).",
    ),
    opt(
        "pg-socket-path",
        "DIR",
        Group::Postgres,
        "Unix socket directory of PostgreSQL (else PGHOST, /var/run/postgresql).",
    ),
    opt(
        "pg-user",
        "USER",
        Group::Postgres,
        "PostgreSQL user (else PGUSER, the OS user).",
    ),
    opt(
        "pg-database",
        "DB",
        Group::Postgres,
        "Database to connect to (else PGDATABASE, postgres).",
    ),
    opt(
        "passphrase-file",
        "PATH",
        Group::Keys,
        "File holding the repository passphrase (one line). Else PGFROST_PASSPHRASE, else a prompt on a terminal.",
    ),
    opt(
        "key-file",
        "PATH",
        Group::Keys,
        "Key file written by 'key unlock' (default ~/.config/pgfrost/keys/<repository id>.json). Used instead of the passphrase when present.",
    ),
    OptDef {
        commands: KEY_CMDS,
        ..opt(
            "new-passphrase-file",
            "PATH",
            Group::Keys,
            "File holding the new passphrase for 'key add' and 'key change'. Else PGFROST_NEW_PASSPHRASE, else a prompt.",
        )
    },
    OptDef {
        commands: KEY_CMDS,
        default: Some("65536"),
        ..opt(
            "kdf-memory",
            "KIB",
            Group::Keys,
            "Argon2id memory for a new key slot, in KiB (at least 1024).",
        )
    },
    OptDef {
        commands: KEY_CMDS,
        default: Some("3"),
        ..opt(
            "kdf-iterations",
            "N",
            Group::Keys,
            "Argon2id passes for a new key slot.",
        )
    },
    OptDef {
        commands: &["repo-create"],
        ..opt(
            "repo-owner",
            "USER[:GROUP]",
            Group::Keys,
            "repo-create run as root, local repository: the user that owns it (default postgres, the user archive_command and backup run as, when that user exists and the directory is root's); root keeps it root's.",
        )
    },
    OptDef {
        commands: KEY_CMDS,
        ..opt(
            "key-comment",
            "TEXT",
            Group::Keys,
            "A note stored with a new key slot (who or what holds this passphrase).",
        )
    },
    OptDef {
        commands: ARCHIVE_CMDS,
        default: Some("/var/spool/pgfrost"),
        ..opt(
            "spool-path",
            "DIR",
            Group::Archive,
            "Local directory for the archive queues: acknowledgements of segments pushed ahead (archive-async) and segments fetched ahead (archive-get). Must be writable by the user running PostgreSQL.",
        )
    },
    OptDef {
        commands: ARCHIVE_CMDS,
        default: Some("n"),
        ..opt(
            "archive-async",
            "y|n",
            Group::Archive,
            "archive-push ships the segments PostgreSQL has queued (pg_wal/archive_status/*.ready) along with the one asked for, process-max at a time; later calls for them return at once.",
        )
    },
    OptDef {
        commands: ARCHIVE_CMDS,
        ..opt(
            "archive-push-queue-max",
            "SIZE",
            Group::Archive,
            "Safety valve, off by default: when more than SIZE of WAL waits to be archived, archive-push reports segments archived WITHOUT storing them so pg_wal cannot fill the disk. Loses point-in-time recovery across the dropped WAL; see docs/archive.md.",
        )
    },
    OptDef {
        commands: ARCHIVE_CMDS,
        default: Some("128MiB"),
        ..opt(
            "archive-get-queue-max",
            "SIZE",
            Group::Archive,
            "How much WAL archive-get fetches ahead into spool-path during recovery (0 turns prefetch off).",
        )
    },
    OptDef {
        commands: ARCHIVE_CMDS,
        default: Some("60"),
        ..opt(
            "archive-timeout",
            "SECONDS",
            Group::Archive,
            "How long check (and backup) wait for a WAL segment to reach the repository.",
        )
    },
    OptDef {
        commands: &["info"],
        ..opt(
            "output-file",
            "PATH",
            Group::General,
            "info: write the output to this file, atomically (a temporary file renamed into place), e.g. for node_exporter's textfile collector.",
        )
    },
    OptDef {
        commands: &["check"],
        ..opt(
            "max-backup-age",
            "DURATION",
            Group::Archive,
            "check as a monitoring probe (no PostgreSQL needed): WARNING (exit 1) when the newest backup ended longer ago than this (26h, 8d), CRITICAL (exit 2) at twice it or with no backup.",
        )
    },
    OptDef {
        commands: &["check"],
        ..opt(
            "max-wal-age",
            "DURATION",
            Group::Archive,
            "check as a monitoring probe: WARNING (exit 1) when the newest archived WAL segment was stored longer ago than this (15m), CRITICAL (exit 2) at twice it or with none.",
        )
    },
    OptDef {
        commands: &["check"],
        ..opt(
            "max-verify-age",
            "DURATION",
            Group::Archive,
            "check as a monitoring probe: WARNING (exit 1) when the newest recorded verify ended longer ago than this (8d), CRITICAL (exit 2) at twice it, when it failed, or with none recorded.",
        )
    },
    OptDef {
        commands: &["check"],
        ..opt(
            "max-drill-age",
            "DURATION",
            Group::Archive,
            "check as a monitoring probe: WARNING (exit 1) when the newest recorded drill ended longer ago than this (8d), CRITICAL (exit 2) at twice it, when it failed, or with none recorded.",
        )
    },
    OptDef {
        commands: &["backup"],
        default: Some("y"),
        ..opt(
            "wal-summary",
            "y|n",
            Group::Backup,
            "PostgreSQL 17+ with summarize_wal = on: an incremental or differential reads only the blocks the WAL summaries name as changed since its parent (n: compare every block by hash instead).",
        )
    },
    OptDef {
        commands: &["drill"],
        ..opt(
            "pg-bin",
            "DIR",
            Group::Backup,
            "drill: directory of the PostgreSQL binaries (pg_ctl, postgres) of the stanza's major version; found automatically in the usual places.",
        )
    },
    OptDef {
        commands: &["drill"],
        ..opt(
            "drill-path",
            "DIR",
            Group::Backup,
            "drill: where the scratch directory is made (default: the system temporary directory). It needs room for the restored cluster.",
        )
    },
    OptDef {
        commands: EXPIRE_CMDS,
        ..opt(
            "retention-full",
            "N",
            Group::Retention,
            "Full backups to keep (with retention-full-type time: days). An older full expires with the backups built on it.",
        )
    },
    OptDef {
        commands: EXPIRE_CMDS,
        default: Some("count"),
        ..opt(
            "retention-full-type",
            "count|time",
            Group::Retention,
            "count: retention-full is a number of full backups; time: a number of days (fulls from that many days back are kept, plus the newest older one).",
        )
    },
    OptDef {
        commands: EXPIRE_CMDS,
        ..opt(
            "retention-diff",
            "N",
            Group::Retention,
            "Differential backups to keep. An older differential expires with the incrementals built on it.",
        )
    },
    OptDef {
        commands: EXPIRE_CMDS,
        ..opt(
            "retention-archive",
            "N",
            Group::Retention,
            "Keep the WAL for point-in-time recovery from the oldest of the N newest backups of retention-archive-type on; older retained backups keep only the WAL they need to be consistent. Default: follows retention-full.",
        )
    },
    OptDef {
        commands: EXPIRE_CMDS,
        default: Some("full"),
        ..opt(
            "retention-archive-type",
            "full|diff|incr",
            Group::Retention,
            "Which backups retention-archive counts (diff counts fulls too; incr counts every backup).",
        )
    },
    OptDef {
        commands: &["backup"],
        default: Some("y"),
        ..opt(
            "expire-auto",
            "y|n",
            Group::Retention,
            "Run expire after a successful backup.",
        )
    },
    OptDef {
        commands: &["expire"],
        default: Some("n"),
        ..opt(
            "dry-run",
            "y|n",
            Group::Retention,
            "Say what would be expired and collected, and why, without changing anything.",
        )
    },
    OptDef {
        commands: &["restore", "drill", "expire"],
        multi: true,
        ..opt(
            "set",
            "LABEL",
            Group::Backup,
            "restore, drill: the backup to restore (default: the newest that can reach the target). expire: the backups to expire (repeatable), exactly those: every manifest is complete on its own, so nothing else is affected.",
        )
    },
    OptDef {
        commands: RESTORE,
        ..opt(
            "target",
            "VALUE",
            Group::Backup,
            "Recovery target for --type time (a timestamp with time zone), xid, lsn or name.",
        )
    },
    OptDef {
        commands: RESTORE,
        ..opt(
            "target-action",
            "ACTION",
            Group::Backup,
            "What PostgreSQL does at the target: pause (PostgreSQL's default), promote or shutdown.",
        )
    },
    OptDef {
        commands: RESTORE,
        default: Some("n"),
        ..opt(
            "target-exclusive",
            "y|n",
            Group::Backup,
            "Stop just before the target instead of just after it.",
        )
    },
    OptDef {
        commands: RESTORE,
        ..opt(
            "target-timeline",
            "TLI",
            Group::Backup,
            "Timeline to follow: current, latest (PostgreSQL's default) or a number.",
        )
    },
    OptDef {
        commands: RESTORE,
        default: Some("n"),
        ..opt(
            "delta",
            "y|n",
            Group::Backup,
            "Restore over an existing data directory: rewrite only blocks that differ, remove files that do not belong.",
        )
    },
    OptDef {
        commands: RESTORE,
        default: Some("n"),
        ..opt(
            "force",
            "y|n",
            Group::Backup,
            "Restore into a non-empty directory, overwriting every file (the server must be stopped).",
        )
    },
    OptDef {
        commands: &["restore"],
        multi: true,
        ..opt(
            "tablespace-map",
            "OID=DIR",
            Group::Backup,
            "restore: put tablespace OID in DIR instead of its original location (repeatable, or comma-separated). drill ignores it: its tablespaces stay in the scratch directory.",
        )
    },
    OptDef {
        commands: &["restore"],
        multi: true,
        ..opt(
            "link-map",
            "PATH=DIR",
            Group::Backup,
            "restore: recreate the data directory's link PATH (pg_wal, say) as a link to DIR (repeatable, or comma-separated). Links not mapped are restored as plain directories inside the data directory. drill ignores it.",
        )
    },
    OptDef {
        commands: &["restore"],
        default: Some("preserve"),
        ..opt(
            "archive-mode",
            "off|preserve",
            Group::Backup,
            "restore: off writes archive_mode = off for the restored cluster, so that once promoted it never archives into the stanza (use it for test restores); preserve keeps the backup's setting. drill always turns archiving off.",
        )
    },
    OptDef {
        commands: &["backup", "restore", "drill"],
        ..opt(
            "type",
            "TYPE",
            Group::Backup,
            "backup: full, diff (files changed since the last full) or incr (since the last backup); a full is taken when none exists. restore: default, immediate, time, xid, lsn, name or standby.",
        )
    },
    OptDef {
        commands: &["backup"],
        default: Some("n"),
        ..opt(
            "start-fast",
            "y|n",
            Group::Backup,
            "Ask PostgreSQL for an immediate checkpoint instead of waiting for the next one.",
        )
    },
    OptDef {
        commands: &["backup"],
        default: Some("n"),
        ..opt(
            "fail-on-page-error",
            "y|n",
            Group::Backup,
            "Exit non-zero (13) when page checksums fail; the backup is kept either way and the pages are listed in its manifest.",
        )
    },
];

pub fn find(name: &str) -> Option<&'static OptDef> {
    OPTIONS.iter().find(|o| o.name == name)
}

pub fn env_name(name: &str) -> String {
    format!("PGFROST_{}", name.to_uppercase().replace('-', "_"))
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    CommandLine,
    Env(String),
    File(PathBuf, String),
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::CommandLine => write!(f, "the command line"),
            Source::Env(n) => write!(f, "environment variable {n}"),
            Source::File(p, s) => write!(f, "{} [{s}]", p.display()),
            Source::Default => write!(f, "the default"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Value {
    pub value: String,
    pub source: Source,
}

/// The resolved options of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: HashMap<&'static str, Value>,
    pub config_file: Option<PathBuf>,
}

type Table = HashMap<String, String>;

/// Parses a config file into (global, per-stanza) tables of option name -> value.
fn parse_file(path: &Path, text: &str) -> Result<(Table, HashMap<String, Table>)> {
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Error::config(format!(
            "config file {} does not parse: {}",
            path.display(),
            e.message()
        ))
    })?;
    let mut global = Table::new();
    let mut stanzas = HashMap::new();
    for (k, v) in doc {
        match v {
            toml::Value::Table(t) => {
                let section = if k == "global" {
                    &mut global
                } else {
                    stanzas.entry(k.clone()).or_default()
                };
                for (ok, ov) in t {
                    let s = scalar(path, &k, &ok, ov)?;
                    section.insert(ok, s);
                }
            }
            v => {
                let s = scalar(path, "global", &k, v)?;
                global.insert(k, s);
            }
        }
    }
    for (section, t) in std::iter::once(("global".to_string(), &global))
        .chain(stanzas.iter().map(|(k, v)| (k.clone(), v)))
    {
        for k in t.keys() {
            if find(k).is_none() {
                return Err(Error::config(format!(
                    "config file {} [{section}]: unknown option '{k}'",
                    path.display()
                ))
                .hint(
                    "'pgfrost help' lists the options; names use dashes, e.g. repo-s3-endpoint",
                ));
            }
            if k == "stanza" && section != "global" {
                return Err(Error::config(format!(
                    "config file {} [{section}]: 'stanza' belongs in [global]; a table's name is its stanza",
                    path.display()
                )));
            }
        }
    }
    Ok((global, stanzas))
}

fn scalar(path: &Path, section: &str, key: &str, v: toml::Value) -> Result<String> {
    match v {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        _ => Err(Error::config(format!(
            "config file {} [{section}]: option '{key}' must be a string, number or boolean",
            path.display()
        ))),
    }
}

impl Settings {
    /// Resolves every option. `cli` holds what was given on the command line; `config` is the
    /// `--config` value; `env` is the process environment (passed in so tests can control it).
    pub fn resolve(
        cli: &HashMap<String, String>,
        config: Option<&str>,
        env: &HashMap<String, String>,
    ) -> Result<Settings> {
        let (path, required) = match (config, env.get("PGFROST_CONFIG")) {
            (Some(p), _) => (PathBuf::from(p), true),
            (None, Some(p)) => (PathBuf::from(p), true),
            (None, None) => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let (global, stanzas, config_file) = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let (g, s) = parse_file(&path, &text)?;
                (g, s, Some(path.clone()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                (Table::new(), HashMap::new(), None)
            }
            Err(e) => {
                return Err(Error::config(format!(
                    "cannot read config file {}: {e}",
                    path.display()
                ))
                .hint("check --config or PGFROST_CONFIG"));
            }
        };
        let file_src = |section: &str| Source::File(path.clone(), section.to_string());
        let mut values = HashMap::new();
        // The stanza picks which file table applies, so it is resolved first.
        let stanza = cli
            .get("stanza")
            .map(|v| Value {
                value: v.clone(),
                source: Source::CommandLine,
            })
            .or_else(|| {
                env.get(&env_name("stanza")).map(|v| Value {
                    value: v.clone(),
                    source: Source::Env(env_name("stanza")),
                })
            })
            .or_else(|| {
                global.get("stanza").map(|v| Value {
                    value: v.clone(),
                    source: file_src("global"),
                })
            });
        let section = stanza
            .as_ref()
            .and_then(|s| stanzas.get(&s.value).map(|t| (s.value.clone(), t)));
        for o in OPTIONS {
            let v = if let Some(v) = cli.get(o.name) {
                Some(Value {
                    value: v.clone(),
                    source: Source::CommandLine,
                })
            } else if let Some(v) = env.get(&env_name(o.name)) {
                Some(Value {
                    value: v.clone(),
                    source: Source::Env(env_name(o.name)),
                })
            } else if let Some(v) = section
                .as_ref()
                .and_then(|(n, t)| t.get(o.name).map(|v| (n, v)))
            {
                Some(Value {
                    value: v.1.clone(),
                    source: file_src(v.0),
                })
            } else if let Some(v) = global.get(o.name) {
                Some(Value {
                    value: v.clone(),
                    source: file_src("global"),
                })
            } else {
                o.default.map(|d| Value {
                    value: d.to_string(),
                    source: Source::Default,
                })
            };
            if let Some(v) = v {
                values.insert(o.name, v);
            }
        }
        let s = Settings {
            values,
            config_file,
        };
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<()> {
        self.choice("log-level", &["error", "warn", "info", "debug", "trace"])?;
        self.choice("output", &["text", "json", "prometheus"])?;
        self.choice("repo-s3-uri-style", &["path", "host"])?;
        self.choice("repo-gcs-key-type", &["auto", "service", "token"])?;
        self.choice("repo-azure-key-type", &["auto", "shared", "sas"])?;
        self.number("process-max", 1, 64)?;
        self.number("compress-level", 0, 19)?;
        self.number("kdf-memory", 1024, 4 * 1024 * 1024)?;
        self.number("kdf-iterations", 1, 1000)?;
        self.number("archive-timeout", 1, 86400)?;
        self.flag("archive-async")?;
        self.size("archive-push-queue-max")?;
        self.size("archive-get-queue-max")?;
        if let Some(n) = self.size("pack-size")?
            && !(64 << 10..=1 << 30).contains(&n)
        {
            return Err(Error::config(format!(
                "invalid value for option pack-size: {n} bytes is outside 64KiB to 1GiB"
            )));
        }
        if let Some(n) = self.size("index-memory")?
            && !(64 << 10..=64 << 30).contains(&n)
        {
            return Err(Error::config(format!(
                "invalid value for option index-memory: {n} bytes is outside 64KiB to 64GiB"
            )));
        }
        self.choice("retention-full-type", &["count", "time"])?;
        self.choice("retention-archive-type", &["full", "diff", "incr"])?;
        self.flag("expire-auto")?;
        self.flag("dry-run")?;
        self.choice("archive-mode", &["off", "preserve"])?;
        self.choice("target-action", &["pause", "promote", "shutdown"])?;
        self.flag("delta")?;
        self.flag("force")?;
        self.flag("target-exclusive")?;
        self.map("tablespace-map")?;
        self.map("link-map")?;
        // Every yes/no option and every number, whichever command reads it and however late:
        // a backup must not run for an hour and then trip over fail-on-page-error=maybe, nor
        // auto-expire refuse retention-full=two after the backup is stored.
        for o in OPTIONS.iter().filter(|o| o.value == "y|n") {
            self.flag(o.name)?;
        }
        for name in ["retention-full", "retention-diff", "retention-archive"] {
            self.number(name, 1, 9999)?;
        }
        self.number("pg-port", 1, 65535)?;
        self.duration("max-backup-age")?;
        self.duration("max-wal-age")?;
        self.duration("max-verify-age")?;
        self.duration("max-drill-age")?;
        if let Some(v) = self.get("repo") {
            Location::parse(&v.value)
                .map_err(|e| e.context(format!("option repo (from {})", v.source)))?;
        }
        for (name, example) in [
            (
                "repo-s3-endpoint",
                "https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000",
            ),
            ("repo-gcs-endpoint", "http://127.0.0.1:4443"),
            (
                "repo-azure-endpoint",
                "https://ACCOUNT.blob.core.windows.net or http://127.0.0.1:10000/devstoreaccount1",
            ),
        ] {
            if let Some(v) = self.get(name)
                && !(v.value.starts_with("http://") || v.value.starts_with("https://"))
            {
                return Err(Error::config(format!(
                    "invalid value '{}' for option {name} (from {}): expected an http:// or https:// URL",
                    v.value, v.source
                ))
                .hint(format!("e.g. {example}")));
            }
        }
        // expire takes several (repeated, joined with commas).
        if let Some(v) = self.get("set")
            && let Some(bad) = v
                .value
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .find(|l| !crate::repo::manifest::is_label(l))
        {
            return Err(Error::config(format!(
                "invalid value '{bad}' for option set (from {}): not a backup label",
                v.source
            ))
            .hint("labels look like 20261121-010000F or 20261121-010000F_20261122-010000I; 'pgfrost info' lists them"));
        }
        if let Some(s) = self.get("stanza") {
            let ok = !s.value.is_empty()
                && s.value.len() <= 64
                && s.value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(Error::config(format!(
                    "invalid stanza name '{}' (from {})",
                    s.value, s.source
                ))
                .hint("use letters, digits, '-' and '_' (at most 64)"));
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        debug_assert!(find(name).is_some(), "option {name} is not in OPTIONS");
        self.values.get(name)
    }

    pub fn string(&self, name: &str) -> Option<&str> {
        self.get(name).map(|v| v.value.as_str())
    }

    pub fn required(&self, name: &str) -> Result<&str> {
        self.string(name).ok_or_else(|| {
            Error::config(format!("option {name} is required")).hint(format!(
                "give --{name}, set {}, or set {name} in the config file",
                env_name(name)
            ))
        })
    }

    fn choice(&self, name: &str, allowed: &[&str]) -> Result<()> {
        if let Some(v) = self.get(name)
            && !allowed.contains(&v.value.as_str())
        {
            return Err(Error::config(format!(
                "invalid value '{}' for option {name} (from {}): expected one of {}",
                v.value,
                v.source,
                allowed.join(", ")
            ))
            .hint(format!("set {name} to one of {}", allowed.join(", "))));
        }
        Ok(())
    }

    fn number(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        match v.value.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(Error::config(format!(
                "invalid value '{}' for option {name} (from {}): expected a whole number from {min} to {max}",
                v.value, v.source
            ))
            .hint(format!("set {name} to a number from {min} to {max}"))),
        }
    }

    /// A yes/no option: y, n, yes, no, true, false, on, off (any case).
    pub fn flag(&self, name: &str) -> Result<bool> {
        let Some(v) = self.get(name) else {
            return Ok(false);
        };
        match parse_bool(&v.value) {
            Some(b) => Ok(b),
            None => Err(Error::config(format!(
                "invalid value '{}' for option {name} (from {}): expected y or n",
                v.value, v.source
            ))
            .hint(format!(
                "set {name} to y or n (yes, no, true, false, on, off)"
            ))),
        }
    }

    /// A map option: comma-separated `KEY=DIR` pairs, DIR absolute. Keys are checked as the
    /// option needs: a tablespace OID, or a path relative to the data directory.
    pub fn map(&self, name: &str) -> Result<Vec<(String, PathBuf)>> {
        let Some(v) = self.get(name) else {
            return Ok(Vec::new());
        };
        let bad = |pair: &str, why: &str| {
            Error::config(format!(
                "invalid value '{pair}' for option {name} (from {}): {why}",
                v.source
            ))
            .hint(match name {
                "tablespace-map" => "write it as OID=DIR, e.g. 16400=/mnt/new/space",
                _ => "write it as PATH=DIR, e.g. pg_wal=/mnt/wal/pg_wal",
            })
        };
        let mut out: Vec<(String, PathBuf)> = Vec::new();
        for pair in v.value.split(',').filter(|p| !p.trim().is_empty()) {
            let Some((key, dir)) = pair.split_once('=') else {
                return Err(bad(pair, "expected KEY=DIR"));
            };
            let (key, dir) = (key.trim().trim_end_matches('/'), PathBuf::from(dir.trim()));
            if !dir.is_absolute() {
                return Err(bad(pair, "the directory must be an absolute path"));
            }
            let key_ok = match name {
                "tablespace-map" => key.parse::<u32>().is_ok(),
                _ => {
                    let p = Path::new(key);
                    !key.is_empty()
                        && p.is_relative()
                        && p.components()
                            .all(|c| matches!(c, std::path::Component::Normal(_)))
                }
            };
            if !key_ok {
                return Err(bad(
                    pair,
                    match name {
                        "tablespace-map" => "the key must be a tablespace OID",
                        _ => "the key must be a path inside the data directory, without '..'",
                    },
                ));
            }
            if out.iter().any(|(k, _)| k == key) {
                return Err(bad(pair, "the same key is mapped twice"));
            }
            out.push((key.to_string(), dir));
        }
        Ok(out)
    }

    /// A size: bytes, or a number with KB, MB, GB, TB (powers of 1024, as pgBackRest reads them;
    /// KiB, MiB, ... are accepted too).
    pub fn size(&self, name: &str) -> Result<Option<u64>> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        parse_size(&v.value).map(Some).ok_or_else(|| {
            Error::config(format!(
                "invalid value '{}' for option {name} (from {}): expected a size such as 512MB or 4GB",
                v.value, v.source
            ))
            .hint(format!("set {name} to bytes or a number with KB, MB, GB or TB"))
        })
    }

    /// A duration as people write one: `26h`, `15m`, `8d`, `1h 30m` (humantime), not zero.
    pub fn duration(&self, name: &str) -> Result<Option<std::time::Duration>> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        match humantime::parse_duration(&v.value) {
            Ok(d) if !d.is_zero() => Ok(Some(d)),
            _ => Err(Error::config(format!(
                "invalid value '{}' for option {name} (from {}): expected a duration such as 26h, 15m or 8d",
                v.value, v.source
            ))
            .hint(format!("set {name} to a number with s, m, h or d (1h 30m works too)"))),
        }
    }

    /// A numeric option that has a default (so is always present).
    pub fn u32(&self, name: &str) -> u32 {
        self.values
            .get(name)
            .and_then(|v| v.value.parse().ok())
            .expect("validated option with a default")
    }

    /// The repository location with its S3 settings.
    pub fn location(&self) -> Result<Location> {
        let repo = self.required("repo")?;
        let mut loc = Location::parse(repo)?;
        if let Location::S3(s3) = &mut loc {
            s3.endpoint = self.string("repo-s3-endpoint").map(str::to_string);
            s3.region = self.string("repo-s3-region").map(str::to_string);
            s3.key = self.string("repo-s3-key").map(str::to_string);
            s3.key_secret = self.string("repo-s3-key-secret").map(str::to_string);
            s3.ca_file = self.string("repo-s3-ca-file").map(PathBuf::from);
            s3.path_style = self.string("repo-s3-uri-style") != Some("host");
        }
        if let Location::Gcs(g) = &mut loc {
            g.endpoint = self.string("repo-gcs-endpoint").map(str::to_string);
            g.credentials = self.gcs_credentials()?;
        }
        if let Location::Azure(a) = &mut loc {
            a.endpoint = self.string("repo-azure-endpoint").map(str::to_string);
            a.account = self.string("repo-azure-account").map(str::to_string);
            a.credentials = self.azure_credentials()?;
        }
        Ok(loc)
    }

    fn gcs_credentials(&self) -> Result<GcsCredentials> {
        let file = self.string("repo-gcs-key-file").map(PathBuf::from);
        let token = self.string("repo-gcs-token").map(str::to_string);
        let missing = |what: &str, opt: &str| {
            Error::config(format!("repo-gcs-key-type={what} needs {opt}")).hint(format!(
                "set {opt}, or use repo-gcs-key-type=auto for application default credentials"
            ))
        };
        match self.string("repo-gcs-key-type") {
            Some("auto") => Ok(GcsCredentials::Auto),
            Some("service") => file
                .map(GcsCredentials::Service)
                .ok_or_else(|| missing("service", "repo-gcs-key-file")),
            Some(_) => token
                .map(GcsCredentials::Token)
                .ok_or_else(|| missing("token", "repo-gcs-token")),
            None => Ok(match (file, token) {
                (Some(f), _) => GcsCredentials::Service(f),
                (None, Some(t)) => GcsCredentials::Token(t),
                (None, None) => GcsCredentials::Auto,
            }),
        }
    }

    fn azure_credentials(&self) -> Result<AzureCredentials> {
        let key = self.string("repo-azure-key").map(str::to_string);
        let sas = self.string("repo-azure-sas-token").map(str::to_string);
        let missing = |what: &str, opt: &str| {
            Error::config(format!("repo-azure-key-type={what} needs {opt}")).hint(format!(
                "set {opt}, or use repo-azure-key-type=auto for a managed identity"
            ))
        };
        match self.string("repo-azure-key-type") {
            Some("auto") => Ok(AzureCredentials::Auto),
            Some("shared") => key
                .map(AzureCredentials::Shared)
                .ok_or_else(|| missing("shared", "repo-azure-key")),
            Some(_) => sas
                .map(AzureCredentials::Sas)
                .ok_or_else(|| missing("sas", "repo-azure-sas-token")),
            None => Ok(match (key, sas) {
                (Some(k), _) => AzureCredentials::Shared(k),
                (None, Some(t)) => AzureCredentials::Sas(t),
                (None, None) => AzureCredentials::Auto,
            }),
        }
    }

    pub fn json(&self) -> bool {
        self.string("output") == Some("json")
    }
}

/// A yes/no word: y, yes, true, on, 1 or n, no, false, off, 0 (any case).
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "on" | "1" => Some(true),
        "n" | "no" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("128MiB"), Some(128 << 20));
        assert_eq!(parse_size("4GB"), Some(4 << 30));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1 kb"), Some(1024));
        assert_eq!(parse_size("1.5GB"), None);
        assert_eq!(parse_size("GB"), None);
        assert_eq!(parse_size("99999999999TB"), None);
    }

    fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn precedence_cli_env_stanza_global_default() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "repo = '/top'\nprocess-max = 3\n[global]\ncompress-level = 5\nstanza='main'\n[main]\nrepo = '/stanza'\npg-path = '/pg'\n[other]\nrepo='/o'\n",
        )
        .unwrap();
        let cfg = f.to_str().unwrap();
        let s = Settings::resolve(&map(&[]), Some(cfg), &map(&[])).unwrap();
        assert_eq!(s.string("repo"), Some("/stanza"));
        assert_eq!(s.string("pg-path"), Some("/pg"));
        assert_eq!(s.u32("process-max"), 3);
        assert_eq!(s.u32("compress-level"), 5);
        assert_eq!(s.string("log-level"), Some("info"));
        let s = Settings::resolve(
            &map(&[]),
            Some(cfg),
            &map(&[("PGFROST_REPO", "/env"), ("PGFROST_STANZA", "other")]),
        )
        .unwrap();
        assert_eq!(s.string("repo"), Some("/env"));
        assert_eq!(
            s.get("repo").unwrap().source,
            Source::Env("PGFROST_REPO".into())
        );
        assert_eq!(s.string("pg-path"), None);
        let s = Settings::resolve(
            &map(&[("repo", "/cli")]),
            Some(cfg),
            &map(&[("PGFROST_REPO", "/env")]),
        )
        .unwrap();
        assert_eq!(s.string("repo"), Some("/cli"));
        let s = Settings::resolve(&map(&[("stanza", "other")]), Some(cfg), &map(&[])).unwrap();
        assert_eq!(s.string("repo"), Some("/o"));
    }

    #[test]
    fn bad_inputs_name_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "repo-s3-endpiont = 'x'\n").unwrap();
        let e = Settings::resolve(&map(&[]), f.to_str(), &map(&[])).unwrap_err();
        assert!(
            e.message.contains("unknown option 'repo-s3-endpiont'"),
            "{e}"
        );
        let e = Settings::resolve(&map(&[]), None, &map(&[("PGFROST_PROCESS_MAX", "zero")]))
            .unwrap_err();
        assert!(e.message.contains("PGFROST_PROCESS_MAX"), "{e}");
        let e = Settings::resolve(&map(&[]), Some("/nonexistent/x.toml"), &map(&[])).unwrap_err();
        assert!(e.message.contains("/nonexistent/x.toml"), "{e}");
        let e = Settings::resolve(&map(&[("stanza", "a/b")]), None, &map(&[])).unwrap_err();
        assert!(e.message.contains("stanza"), "{e}");
        std::fs::write(&f, "[main\n").unwrap();
        assert!(Settings::resolve(&map(&[]), f.to_str(), &map(&[])).is_err());
    }

    #[test]
    fn every_option_has_help_and_env_name() {
        for o in OPTIONS {
            assert!(!o.help.is_empty());
            assert!(env_name(o.name).starts_with("PGFROST_"));
        }
    }
}
