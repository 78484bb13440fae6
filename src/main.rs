//! The `pgfrost` binary: parse, set up logging, run, map errors to the documented exit codes.

use pgfrost::error::ErrorKind;
use pgfrost::{cli, commands, config::Settings, logging};
use std::collections::HashMap;

fn main() {
    // Repository files, key files and spool files are nobody else's business: group may read
    // (a backup operators' group), others nothing. PostgreSQL's own umask (0077) is stricter and
    // archive-push inherits it.
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe {
        libc::umask(libc::umask(0o027) | 0o027);
    }
    logging::init();
    let matches = cli::build().get_matches_from(cli::flags_as_typed(std::env::args_os().collect()));
    let code = match run(&matches) {
        Ok(()) => 0,
        Err(e) if e.kind == ErrorKind::ArchiveMissing => {
            // Not an error for PostgreSQL: the end of the archive. Said once, quietly.
            eprintln!("INFO: {}", e.message);
            1
        }
        Err(e) => {
            eprintln!("ERROR: {}", e.message);
            if let Some(h) = &e.hint {
                eprintln!("HINT: {h}");
            }
            let code = e.kind.exit_code();
            if matches.subcommand_name() == Some("archive-get") && !standby() {
                // PostgreSQL reads exit codes 1..=125 from restore_command as "no such file" and
                // would end targeted recovery early, promoting a cluster that lacks the rest of the
                // archive. Above 125 it stops recovery instead: an error must never be taken for
                // the end of the archive.
                128 + code
            } else {
                code
            }
        }
    };
    std::process::exit(code);
}

/// restore_command runs in the data directory: a standby keeps retrying after a failure, so
/// there the ordinary exit codes are right.
fn standby() -> bool {
    std::path::Path::new("standby.signal").exists()
}

fn run(matches: &clap::ArgMatches) -> pgfrost::error::Result<()> {
    let given = cli::given_options(matches);
    let env: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("PGFROST_"))
        .collect();
    let settings = Settings::resolve(
        &given,
        matches.get_one::<String>("config").map(String::as_str),
        &env,
    )?;
    logging::set_level(settings.string("log-level").unwrap_or("info"));
    if given.contains_key("repo-s3-key-secret") {
        log::warn!(
            "--repo-s3-key-secret on the command line is visible to other users; \
             HINT: set it in the config file or in PGFROST_REPO_S3_KEY_SECRET"
        );
    }
    let (path, leaf) = cli::command_path(matches);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.u32("process-max").max(2) as usize)
        .enable_all()
        .build()
        .map_err(|e| {
            pgfrost::error::Error::internal(format!("cannot start the async runtime: {e}"))
        })?;
    rt.block_on(commands::run(&path, leaf, &settings))
}
