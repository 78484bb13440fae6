//! Command-line definitions only. Options come from the table in config.rs, so the flags, their
//! environment variables and the config file keys are the same set.

use crate::config::{self, OPTIONS};
use clap::{Arg, ArgAction, ArgMatches, Command};
use std::collections::HashMap;

fn option_arg(o: &config::OptDef) -> Arg {
    let mut help = o.help.to_string();
    help.push_str(&format!(" [env: {}]", config::env_name(o.name)));
    if let Some(d) = o.default {
        help.push_str(&format!(" [default: {d}]"));
    }
    let arg = Arg::new(o.name)
        .long(o.name)
        .value_name(o.value)
        .help_heading(o.group.heading())
        .action(if o.multi {
            ArgAction::Append
        } else {
            ArgAction::Set
        });
    if o.value == "y|n" {
        // As pgBackRest users type them: `--delta` alone is y, `--no-delta` is n (rewritten by
        // `flags_as_typed` before clap sees it), and `--delta y` still works.
        help.push_str(&format!(" --{0} alone means y, --no-{0} means n.", o.name));
        return arg.help(help).num_args(0..=1).default_missing_value("y");
    }
    arg.help(help)
}

/// How many of `args` are positional words: not options, nor the values options take.
fn positionals_in(args: &[std::ffi::OsString]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < args.len() {
        let t = args[i].to_str().unwrap_or("");
        if let Some(name) = t.strip_prefix("--") {
            let valued =
                OPTIONS.iter().any(|o| o.name == name && o.value != "y|n") || name == "config";
            let bool_word = OPTIONS.iter().any(|o| o.name == name && o.value == "y|n")
                && args
                    .get(i + 1)
                    .and_then(|a| a.to_str())
                    .is_some_and(|a| config::parse_bool(a).is_some());
            if valued || bool_word {
                i += 1;
            }
        } else if !t.starts_with('-') {
            n += 1;
        }
        i += 1;
    }
    n
}

/// Rewrites yes/no flags as users type them into what clap parses: `--no-X` becomes `--X=n`,
/// and a bare `--X` followed by a command's positional argument becomes `--X=y` (clap would
/// otherwise take `pgfrost archive-push --archive-async %p`'s path as the flag's value). A bare
/// flag followed by a yes/no word keeps it as its value (`--delta y`), and anything else is left
/// to clap and to option validation (`--delta maybe` is an invalid value, exit 3).
pub fn flags_as_typed(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let root = build();
    let is_bool = |n: &str| OPTIONS.iter().any(|o| o.name == n && o.value == "y|n");
    let mut cur = &root;
    let mut out = Vec::with_capacity(args.len());
    for (i, a) in args.iter().enumerate() {
        let Some(t) = a.to_str() else {
            out.push(a.clone());
            continue;
        };
        if let Some(name) = t.strip_prefix("--no-").filter(|n| is_bool(n)) {
            out.push(format!("--{name}=n").into());
            continue;
        }
        if let Some(name) = t.strip_prefix("--").filter(|n| is_bool(n)) {
            let next = args.get(i + 1).and_then(|n| n.to_str());
            let word = next.is_some_and(|n| config::parse_bool(n).is_some());
            // The next word is the command's argument only if the words left are no more than
            // the arguments it takes: `--archive-async often %p` still gives `often` to the
            // flag, for validation to refuse by name.
            let wanted = cur.get_positionals().count();
            let positional = next.is_some_and(|n| !n.starts_with('-'))
                && wanted > 0
                && positionals_in(&args[i + 1..]) <= wanted;
            if positional && !word {
                out.push(format!("--{name}=y").into());
                continue;
            }
        }
        if let Some(sub) = cur.find_subcommand(t) {
            cur = sub;
        }
        out.push(a.clone());
    }
    out
}

fn with_options(mut cmd: Command, name: &str) -> Command {
    for o in OPTIONS.iter().filter(|o| o.commands.contains(&name)) {
        cmd = cmd.arg(option_arg(o).global(true));
    }
    cmd
}

/// `pgfrost --version`: the crate version, the commit it was built from (build.rs) and the
/// repository format it writes, which is what decides whether two builds can share a repository.
pub fn version() -> String {
    format!(
        "{} (commit {}, repository format {})",
        env!("CARGO_PKG_VERSION"),
        env!("PGFROST_GIT_COMMIT"),
        crate::repo::format::CONFIG_VERSION
    )
}

pub fn build() -> Command {
    let mut root = Command::new("pgfrost")
        .version(&*Box::leak(version().into_boxed_str()))
        .about("Encrypted, deduplicating backup and WAL archiving for PostgreSQL")
        .after_help(
            "Every option can also be set as PGFROST_<OPTION> in the environment or in the config file \
             (TOML; top-level keys and [global] for all stanzas, [<stanza>] tables per stanza). \
             Precedence: command line, then environment, then config file.\n\
             Passphrases never go on the command line: use PGFROST_PASSPHRASE, --passphrase-file, or the prompt.",
        )
        .subcommand_required(true)
        .arg_required_else_help(true)
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("PATH")
                .global(true)
                .help_heading("General options")
                .help(format!("Config file [env: PGFROST_CONFIG] [default: {}]", config::DEFAULT_CONFIG)),
        );
    for o in OPTIONS.iter().filter(|o| o.commands.is_empty()) {
        root = root.arg(option_arg(o).global(true));
    }
    let [repo_create, key, dev] = repository_commands();
    let [
        stanza_create,
        stanza_upgrade,
        archive_push,
        archive_get,
        check,
    ] = cluster_commands();
    let [backup, restore, drill] = backup_commands();
    let [expire, info, verify] = upkeep_commands();
    root.subcommand(repo_create)
        .subcommand(backup)
        .subcommand(restore)
        .subcommand(drill)
        .subcommand(expire)
        .subcommand(info)
        .subcommand(verify)
        .subcommand(key)
        .subcommand(stanza_create)
        .subcommand(stanza_upgrade)
        .subcommand(archive_push)
        .subcommand(archive_get)
        .subcommand(check)
        .subcommand(dev)
}

/// repo-create, key and the hidden developer tools.
fn repository_commands() -> [Command; 3] {
    [
        with_options(
            Command::new("repo-create")
                .about("Create a repository and its first key slot")
                .long_about(
                    "Create an empty repository at --repo, protected by the passphrase from PGFROST_PASSPHRASE, \
                     --passphrase-file or a prompt. Refuses when a repository already exists there.",
                ),
            "repo-create",
        ),
        with_options(
            Command::new("key")
                .about("Manage the passphrases (key slots) that open the repository")
                .subcommand_required(true)
                .subcommand(Command::new("list").about("List the key slots (no passphrase needed)"))
                .subcommand(Command::new("add").about("Add a passphrase: a new key slot for the same master key"))
                .subcommand(
                    Command::new("remove")
                        .about("Remove a key slot (never the last one)")
                        .arg(Arg::new("slot").required(true).value_name("SLOT_ID").help("Slot id, as 'key list' shows it")),
                )
                .subcommand(Command::new("change").about("Change the passphrase that opens the repository: writes a new slot, removes the old"))
                .subcommand(
                    Command::new("unlock")
                        .about("Write a key file (mode 0600) so later commands, archive-push above all, need no passphrase"),
                )
                .subcommand(Command::new("lock").about("Remove the key file written by 'key unlock'")),
            "key",
        ),
        Command::new("dev")
            .about("Developer tools for the block store (unstable)")
            .hide(true)
            .subcommand_required(true)
            .subcommand(
                Command::new("put-dir")
                    .about("Store every file of DIR as 8 KiB blocks; print a catalog (JSON) on stdout")
                    .arg(Arg::new("dir").required(true).value_name("DIR")),
            )
            .subcommand(
                Command::new("get-dir")
                    .about("Rebuild the files of a catalog under DEST")
                    .arg(Arg::new("catalog").required(true).value_name("CATALOG"))
                    .arg(Arg::new("dest").required(true).value_name("DEST")),
            )
            .subcommand(
                Command::new("check")
                    .about("Read and authenticate every pack and index segment of the stanza"),
            ),
    ]
}

/// The commands that speak to the cluster or are PostgreSQL's own: stanza-create, stanza-upgrade, archive-push, archive-get, check.
fn cluster_commands() -> [Command; 5] {
    [
        Command::new("stanza-create")
            .about("Register the cluster as --stanza: its system identifier and major version, read from the running cluster and from pg_control")
            .long_about(
                "Register the cluster as --stanza. Connects to the running cluster (pg-host/pg-socket-path, pg-port, pg-user) \
                 and reads global/pg_control under pg-path; both must agree. Running it again for the same cluster does nothing; \
                 for another cluster it refuses.",
            ),
        Command::new("stanza-upgrade")
            .about("After pg_upgrade: record the new cluster (system identifier, major version) for --stanza, keeping the history"),
        with_options(
            Command::new("archive-push")
                .about("archive_command: store one WAL file, durably, and exit 0 only then")
                .long_about(
                    "Use as archive_command = 'pgfrost archive-push %p'. Checks the file belongs to the stanza's cluster, compresses, \
                     encrypts and stores it, and exits 0 only once it is durable. A file already stored with the same content is \
                     success; with different content it is an error naming both checksums.",
                )
                .arg(Arg::new("wal").required(true).value_name("WAL_PATH").help("%p: the WAL file's path")),
            "archive-push",
        ),
        with_options(
            Command::new("archive-get")
                .about("restore_command: fetch one WAL file from the repository; exit 1 if it is not there")
                .long_about(
                    "Use as restore_command = 'pgfrost archive-get %f \"%p\"'. Exit 0: the file was written to %p, authenticated and \
                     checked. Exit 1: it is not in the repository (PostgreSQL ends recovery there). During targeted recovery any \
                     other failure exits with 128 + the error's code, which makes PostgreSQL stop recovery instead of ending it early; \
                     on a standby (standby.signal) the plain code is used and PostgreSQL retries.",
                )
                .arg(Arg::new("name").required(true).value_name("WAL_NAME").help("%f: the file PostgreSQL wants"))
                .arg(Arg::new("dest").required(true).value_name("DEST_PATH").help("%p: where to write it")),
            "archive-get",
        ),
        with_options(
            Command::new("check").about("Switch WAL on the cluster and wait for the segment to reach the repository; explain what is wrong if it does not"),
            "check",
        ),
    ]
}

/// backup, restore and drill.
fn backup_commands() -> [Command; 3] {
    [
        with_options(
            Command::new("backup")
                .about("Take a full, differential or incremental base backup (--type full|diff|incr; default incr)")
                .long_about(
                    "Take a base backup through pg_backup_start/pg_backup_stop on one session. full reads every file; diff reuses files \
                     unchanged since the last full, incr since the last backup (same size and modification time). Every block is \
                     stored once per stanza whatever the type. Page checksums are verified while reading when the cluster has them. \
                     The backup is recorded (its manifest written) only once the WAL it needs is in the repository.",
                ),
            "backup",
        ),
        with_options(
            Command::new("restore")
                .about("Restore a backup into --pg-path and configure recovery (--type default|immediate|time|xid|lsn|name|standby)")
                .long_about(
                    "Restore a backup (--set, default the newest that can reach the target) into --pg-path, which must be empty unless \
                     --delta or --force. Writes backup_label, tablespace_map, restore_command calling pgfrost archive-get, the recovery \
                     target and recovery.signal (standby.signal for --type standby), and global/pg_control last, so a restore that \
                     stops halfway leaves a directory that will not start. Links of the data directory (pg_wal on its own disk) \
                     become plain directories inside it unless --link-map maps them; --archive-mode off keeps the restored cluster \
                     from archiving into the stanza. Run as root, everything it writes is left to the cluster's owner.",
                ),
            "restore",
        ),
        with_options(
            Command::new("drill")
                .about("Prove a backup restores: restore into a scratch directory, start PostgreSQL privately, replay, check, clean up")
                .long_about(
                    "Restores a backup (--set, default the newest) into a scratch directory, starts PostgreSQL of the stanza's major \
                     version there on a private socket with no TCP listener, replays WAL to the end of the archive or the target \
                     (--type/--target as for restore), then checks that it is consistent, that every database accepts connections, \
                     that the largest tables read end to end, that pg_amcheck finds nothing (where installed) and that relation sizes \
                     are in line with the backup. PostgreSQL is stopped and the directory removed whatever happens. Exit 0: passed; \
                     21: a check failed. Run it as the postgres user.",
                ),
            "drill",
        ),
    ]
}

/// expire, info and verify.
fn upkeep_commands() -> [Command; 3] {
    [
        with_options(
            Command::new("expire")
                .about("Apply the retention policy: expire backups, the WAL no retained backup needs, and unreferenced blocks")
                .long_about(
                    "Expires the backups the retention options (retention-full, retention-full-type, retention-diff) no longer keep, \
                     or exactly the backups named with --set; deletes the WAL no retained backup needs (retention-archive, \
                     retention-archive-type); then deletes packs whose blocks no retained backup references and rewrites packs that \
                     are mostly dead. Safe while backups and archive-push run: block collection is postponed while another \
                     pgfrost command holds a lease. --dry-run says what would go and why. Runs after every backup unless \
                     expire-auto=n.",
                ),
            "expire",
        ),
        with_options(
            Command::new("info")
                .about("Show the backups, the WAL archive, the recovery window and the repository size (--output text|json)")
                .long_about(
                    "For --stanza (or every stanza in the repository): each backup with its type, times, LSNs, size, what it added to \
                     the repository, its dedup ratio, duration and page checksum errors; the WAL archived per timeline; the span of \
                     time that point-in-time recovery can reach; and the repository's size.",
                ),
            "info",
        ),
        with_options(
            Command::new("verify")
                .about("Read and check every object of the stanza, every backup's blocks and WAL, and WAL continuity; list every problem")
                .long_about(
                    "Reads every object (key slots, stanza records, index segments, packs and every block in them, manifests, WAL \
                     files), authenticates and checks each, then checks that every block each backup names is stored, that every \
                     backup's WAL is there, and that WAL is continuous on each timeline from where point-in-time recovery must \
                     start. Every problem is listed, not only the first. Exit 0: all is well; 22: problems were found.",
                ),
            "verify",
        ),
    ]
}

/// The options given on the command line, from every level of subcommand.
pub fn given_options(m: &ArgMatches) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut cur = Some(m);
    while let Some(level) = cur {
        // The table's options carry no clap defaults (defaults are applied after the environment
        // and the file), so any value clap holds was typed on the command line.
        for o in OPTIONS {
            if o.multi {
                if let Ok(Some(vs)) = level.try_get_many::<String>(o.name) {
                    out.insert(
                        o.name.to_string(),
                        vs.cloned().collect::<Vec<_>>().join(","),
                    );
                }
            } else if let Ok(Some(v)) = level.try_get_one::<String>(o.name) {
                out.insert(o.name.to_string(), v.clone());
            }
        }
        cur = level.subcommand().map(|(_, s)| s);
    }
    out
}

/// The chain of subcommand names, e.g. ["key", "add"], and the innermost matches.
pub fn command_path(m: &ArgMatches) -> (Vec<String>, &ArgMatches) {
    let mut names = Vec::new();
    let mut cur = m;
    while let Some((n, s)) = cur.subcommand() {
        names.push(n.to_string());
        cur = s;
    }
    (names, cur)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        super::build().debug_assert();
    }

    fn given(args: &[&str]) -> std::collections::HashMap<String, String> {
        let argv = super::flags_as_typed(args.iter().map(|a| a.into()).collect());
        let m = super::build().try_get_matches_from(argv).unwrap();
        super::given_options(&m)
    }

    #[test]
    fn yes_no_flags_as_users_type_them() {
        let g = given(&["pgfrost", "restore", "--delta", "--force"]);
        assert_eq!((g["delta"].as_str(), g["force"].as_str()), ("y", "y"));
        let g = given(&["pgfrost", "restore", "--no-delta", "--force", "n"]);
        assert_eq!((g["delta"].as_str(), g["force"].as_str()), ("n", "n"));
        let g = given(&["pgfrost", "backup", "--start-fast", "yes", "--type", "full"]);
        assert_eq!(
            (g["start-fast"].as_str(), g["type"].as_str()),
            ("yes", "full")
        );
        let g = given(&["pgfrost", "expire", "--dry-run"]);
        assert_eq!(g["dry-run"], "y");
        // A bare flag before a positional argument does not swallow it.
        let g = given(&[
            "pgfrost",
            "archive-push",
            "--archive-async",
            "pg_wal/000000010000000000000001",
        ]);
        assert_eq!(g["archive-async"], "y");
        let g = given(&[
            "pgfrost",
            "archive-push",
            "--no-archive-async",
            "pg_wal/000000010000000000000001",
        ]);
        assert_eq!(g["archive-async"], "n");
        let g = given(&[
            "pgfrost",
            "archive-push",
            "--archive-async",
            "pg_wal/000000010000000000000001",
            "--stanza",
            "main",
        ]);
        assert_eq!(
            (g["archive-async"].as_str(), g["stanza"].as_str()),
            ("y", "main")
        );
        // Garbage stays the flag's value, for validation to refuse by name.
        let g = given(&["pgfrost", "restore", "--delta", "maybe"]);
        assert_eq!(g["delta"], "maybe");
        let g = given(&[
            "pgfrost",
            "archive-push",
            "--archive-async",
            "often",
            "x/000000010000000000000001",
        ]);
        assert_eq!(g["archive-async"], "often");
    }
}
