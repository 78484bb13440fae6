//! One module per command: orchestration only. Formats, crypto and storage live in repo/ and
//! store/.

pub mod archive;
pub mod backup;
pub mod check;
pub mod dev;
pub mod drill;
pub mod expire;
pub mod info;
pub mod key;
pub mod pool;
pub mod repo_create;
pub mod restore;
pub mod stanza;
pub mod verify;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::passphrase;
use crate::repo::blockstore::BlockStore;
use crate::repo::{self, Repository};
use crate::store::Store;
use clap::ArgMatches;

pub async fn run(path: &[String], leaf: &ArgMatches, settings: &Settings) -> Result<()> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    if settings.string("output") == Some("prometheus") && p != ["info"] {
        return Err(Error::config(format!(
            "--output prometheus is for info; {} prints text or json",
            path.join(" ")
        ))
        .hint(
            "use --output text or json here, and 'pgfrost info --output prometheus' for metrics",
        ));
    }
    match p.as_slice() {
        ["repo-create"] => repo_create::run(settings).await,
        ["stanza-create"] => stanza::run(false, settings).await,
        ["stanza-upgrade"] => stanza::run(true, settings).await,
        ["archive-push"] => archive::push(settings, arg(leaf, "wal")).await,
        ["archive-get"] => archive::get(settings, arg(leaf, "name"), arg(leaf, "dest")).await,
        ["check"] => check::run(settings).await,
        ["backup"] => backup::run(settings).await,
        ["restore"] => restore::run(settings).await,
        ["drill"] => drill::run(settings).await,
        ["expire"] => expire::run(settings).await,
        ["info"] => info::run(settings).await,
        ["verify"] => verify::run(settings).await,
        ["key", sub] => key::run(sub, leaf, settings).await,
        ["dev", sub] => dev::run(sub, leaf, settings).await,
        _ => Err(Error::internal(format!(
            "unhandled command {}",
            path.join(" ")
        ))),
    }
}

fn arg<'a>(m: &'a ArgMatches, name: &str) -> &'a str {
    m.get_one::<String>(name)
        .map(String::as_str)
        .expect("required by clap")
}

/// Opens the repository: through the key file when one exists for it, else with the passphrase.
pub async fn open_repo(settings: &Settings) -> Result<Repository> {
    let store = Store::open(&settings.location()?, false)?;
    let (config, _) = repo::read_config(&store).await?;
    let kf_path = passphrase::key_file_path(key_file(settings), &config.repo_id)?;
    if let Some(kf) = passphrase::read_key_file(&kf_path)? {
        log::debug!("using key file {}", kf_path.display());
        return Repository::open_with_key_file(store, &kf, &kf_path.display().to_string()).await;
    }
    let pw = passphrase::current(&passphrase_source(settings), &store.location().to_string())?;
    Repository::open_with_passphrase(store, pw.as_bytes()).await
}

/// `key-file`, when given.
pub fn key_file(settings: &Settings) -> Option<&std::path::Path> {
    settings.string("key-file").map(std::path::Path::new)
}

/// The file the passphrase may come from (`passphrase-file`).
pub fn passphrase_source(settings: &Settings) -> passphrase::Source {
    passphrase::Source {
        file: settings.string("passphrase-file").map(str::to_string),
    }
}

/// Opens the repository with the passphrase only (commands that manage keys must prove it).
pub async fn open_repo_with_passphrase(settings: &Settings) -> Result<Repository> {
    let store = Store::open(&settings.location()?, false)?;
    // A repository this user cannot read fails before anyone types a passphrase for it.
    repo::read_config(&store).await?;
    let pw = passphrase::current(&passphrase_source(settings), &store.location().to_string())?;
    Repository::open_with_passphrase(store, pw.as_bytes()).await
}

/// How a command's block store writes packs and holds its index (compress-level, pack-size,
/// index-path, index-memory), read from the options before any work.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub compress_level: Option<i32>,
    pub pack_size: usize,
    pub limits: crate::repo::blockmap::Limits,
}

impl StoreOptions {
    pub fn from_settings(settings: &Settings) -> Result<StoreOptions> {
        use crate::repo::blockmap::{DEFAULT_DIR, DEFAULT_MEMORY, Limits};
        let level = settings.u32("compress-level") as i32;
        Ok(StoreOptions {
            compress_level: (level > 0).then_some(level),
            pack_size: settings.size("pack-size")?.unwrap_or(32 << 20) as usize,
            limits: Limits {
                dir: settings.string("index-path").unwrap_or(DEFAULT_DIR).into(),
                memory: settings
                    .size("index-memory")?
                    .map_or(DEFAULT_MEMORY, |n| n as usize),
            },
        })
    }

    /// The stanza's block store with its index loaded.
    pub async fn open(&self, repo: &Repository, stanza: &str) -> Result<BlockStore> {
        let bs = BlockStore::open_with(
            repo.store.clone(),
            stanza,
            repo.keys.clone(),
            self.limits.clone(),
        )
        .await?;
        Ok(self.configure(bs))
    }

    /// A handle with an empty index, for a caller that loads (and judges) segments itself.
    pub fn open_empty(&self, repo: &Repository, stanza: &str) -> BlockStore {
        self.configure(BlockStore::open_empty(
            repo.store.clone(),
            stanza,
            repo.keys.clone(),
            self.limits.clone(),
        ))
    }

    fn configure(&self, bs: BlockStore) -> BlockStore {
        bs.with_compression(self.compress_level)
            .with_pack_size(self.pack_size)
    }
}

/// Where the commands that talk to PostgreSQL (backup, check, stanza-*) connect, and its data
/// directory (pg-path), from the pg-* options before any work.
pub fn pg_target(settings: &Settings) -> Result<crate::pg::conn::PgTarget> {
    let opt = |name: &str| settings.string(name).map(str::to_string);
    crate::pg::conn::PgTarget::resolve(crate::pg::conn::PgOptions {
        host: opt("pg-host"),
        socket_path: opt("pg-socket-path"),
        port: opt("pg-port"),
        user: opt("pg-user"),
        database: opt("pg-database"),
        path: settings.string("pg-path").map(std::path::PathBuf::from),
    })
}

/// A `read` lease for a command that reads blocks (restore, drill, verify): garbage collection
/// waits for it to end before rewriting or deleting packs. Without write access to the
/// repository the command still runs, unprotected, with a warning.
pub async fn read_lease(
    repo: &Repository,
    stanza: &str,
    command: &str,
) -> Result<Option<crate::repo::lease::Lease>> {
    use crate::repo::lease::{Lease, LeaseKind};
    match Lease::acquire(&repo.store, stanza, LeaseKind::Read, command).await {
        Ok(l) => {
            l.wait_for_gc(stanza).await?;
            Ok(Some(l))
        }
        Err(e) => {
            log::warn!(
                "{command} runs without a lease ({e}); an expire running at the same time could remove packs it reads"
            );
            Ok(None)
        }
    }
}

/// Reads until `buf` is full or the file ends (a short read is not the end of a file).
pub(crate) fn read_full(f: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Prints a command's result on stdout, as text or as one JSON document.
pub fn emit(settings: &Settings, text: &str, json: serde_json::Value) {
    if settings.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("json serializes")
        );
    } else if !text.is_empty() {
        println!("{text}");
    }
}

pub fn kdf_cost(settings: &Settings) -> repo::keys::Cost {
    repo::keys::Cost {
        memory_kib: settings.u32("kdf-memory"),
        iterations: settings.u32("kdf-iterations"),
        parallelism: 1,
    }
}
