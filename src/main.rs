//! The `pgfrost` binary: parse, set up logging, run, map errors to the documented exit codes.

use pgfrost::{cli, commands, config::Settings, logging};
use std::collections::HashMap;

fn main() {
    logging::init();
    let matches = cli::build().get_matches();
    let code = match run(&matches) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ERROR: {}", e.message);
            if let Some(h) = &e.hint {
                eprintln!("HINT: {h}");
            }
            e.kind.exit_code()
        }
    };
    std::process::exit(code);
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
