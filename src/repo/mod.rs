//! The repository: config, key slots and the block store, over a [`Store`].
//!
//! ```text
//! config                         plaintext JSON (format::RepoConfig), written once by repo-create
//! keys/<slot id>                 JSON key slots (format::KeySlot), each written once
//! <stanza>/pack/<xx>/<pack id>   packs (pack.rs)
//! <stanza>/index/<segment id>    index segments (index.rs)
//! <stanza>/wal/..., point/...    the WAL archive and restore points (wal.rs)
//! ```

pub mod blockmap;
pub mod blockstore;
pub mod crypto;
pub mod format;
pub mod gc;
pub mod index;
pub mod keys;
pub mod lease;
pub mod manifest;
pub mod outcome;
pub mod pack;
pub mod points;
pub mod stanza;
pub mod wal;

use crate::error::{Error, ErrorKind, Result};
use crate::store::{Put, Store};
use bytes::Bytes;
use crypto::{Keys, MasterKey};
use format::{KeyFile, KeySlot, RepoConfig};
use keys::{Cost, SlotOpen, SlotRandom, SlotSpec};
use std::sync::Arc;

pub const CONFIG_PATH: &str = "config";
pub const KEYS_DIR: &str = "keys";

/// An opened repository: its config and the keys derived from its master key.
pub struct Repository {
    pub store: Store,
    pub config: RepoConfig,
    config_bytes: Bytes,
    master: MasterKey,
    pub keys: Arc<Keys>,
    /// The slot the passphrase opened (None when a key file was used).
    pub slot_id: Option<String>,
}

/// Reads and checks `config`; a missing one means there is no repository here.
pub async fn read_config(store: &Store) -> Result<(RepoConfig, Bytes)> {
    let Some(bytes) = store.get_opt(CONFIG_PATH).await? else {
        return Err(Error::new(
            ErrorKind::RepoMissing,
            format!(
                "no repository at {}: it has no 'config' object",
                store.location()
            ),
        )
        .hint("check --repo, or create the repository with 'pgfrost repo-create'"));
    };
    let config: RepoConfig = serde_json::from_slice(&bytes).map_err(|e| {
        Error::corrupt(format!(
            "object 'config' in repository {} does not parse: {e}",
            store.location()
        ))
    })?;
    if config.format != format::CONFIG_FORMAT {
        return Err(Error::corrupt(format!(
            "object 'config' in {} is not a pgfrost repository config (format '{}')",
            store.location(),
            config.format
        )));
    }
    // Field syntax is checked here, so a damaged config is reported as the config, not as
    // whichever key slot happens to parse it next.
    let bad_field = |e: String| {
        Error::corrupt(format!(
            "object 'config' in repository {}: {e}",
            store.location()
        ))
        .hint("restore 'config' from a copy of the repository")
    };
    format::hex_array::<16>(&config.repo_id, "repo_id").map_err(bad_field)?;
    format::hex_array::<32>(&config.key_check, "key_check").map_err(bad_field)?;
    if config.version != format::CONFIG_VERSION {
        return Err(Error::config(format!(
            "repository {} has format version {}; this pgfrost reads version {}",
            store.location(),
            config.version,
            format::CONFIG_VERSION
        ))
        .hint(if config.version < format::CONFIG_VERSION {
            // Version 1 (one sealed object per block) only ever existed before the first
            // release; there is nothing to migrate in the field.
            "this repository was written by a development build of pgfrost that stored each block on its own; create a new repository ('pgfrost repo-create') and take a new full backup"
        } else {
            "use the pgfrost release that created the repository, or a newer one"
        }));
    }
    Ok((config, bytes))
}

/// The object name of key slot `id`.
pub fn slot_path(id: &str) -> String {
    format!("{KEYS_DIR}/{id}")
}

/// Lists and parses the key slots. A slot that does not parse is reported, not skipped: a
/// damaged key slot is something the operator must hear about.
pub async fn read_slots(store: &Store) -> Result<Vec<KeySlot>> {
    let mut slots = Vec::new();
    for l in store.list(KEYS_DIR).await? {
        let b = store.get(&l.path).await?;
        let slot: KeySlot = serde_json::from_slice(&b).map_err(|e| {
            Error::corrupt(format!(
                "key slot '{}' in repository {} does not parse: {e}",
                l.path,
                store.location()
            ))
        })?;
        if slot_path(&slot.id) != l.path {
            return Err(Error::corrupt(format!(
                "key slot '{}' claims to be slot {}: it was renamed or copied",
                l.path, slot.id
            )));
        }
        slots.push(slot);
    }
    Ok(slots)
}

async fn cpu<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("worker failed: {e}")))
}

impl Repository {
    /// Creates a repository: `config` first (create-once, so two concurrent repo-create calls
    /// cannot both win), then the first key slot.
    pub async fn create(
        store: Store,
        passphrase: &[u8],
        cost: Cost,
        comment: &str,
    ) -> Result<Repository> {
        if store.get_opt(CONFIG_PATH).await?.is_some() {
            return Err(exists_error(&store));
        }
        let master = MasterKey::generate();
        let mut repo_id = [0u8; 16];
        getrandom::fill(&mut repo_id)
            .map_err(|e| Error::internal(format!("random source: {e}")))?;
        let config = RepoConfig {
            format: format::CONFIG_FORMAT.into(),
            version: format::CONFIG_VERSION,
            repo_id: hex::encode(repo_id),
            created: format::now_rfc3339(),
            key_check: hex::encode(master.key_check(&repo_id)),
        };
        let mut bytes = serde_json::to_vec_pretty(&config).expect("config serializes");
        bytes.push(b'\n');
        let bytes = Bytes::from(bytes);
        if store.put_new(CONFIG_PATH, bytes.clone()).await? == Put::AlreadyExists {
            return Err(exists_error(&store));
        }
        let mut repo = Repository {
            store,
            config,
            config_bytes: bytes,
            keys: Arc::new(Keys::new(&master)),
            master,
            slot_id: None,
        };
        let slot = repo.add_slot(passphrase, cost, comment).await?;
        repo.slot_id = Some(slot.id);
        Ok(repo)
    }

    /// Opens with a passphrase, trying every key slot.
    pub async fn open_with_passphrase(store: Store, passphrase: &[u8]) -> Result<Repository> {
        let (config, config_bytes) = read_config(&store).await?;
        let slots = read_slots(&store).await?;
        if slots.is_empty() {
            return Err(Error::corrupt(format!("repository {} has no key slots", store.location())).hint(
                "'keys/' is empty: repo-create was interrupted, or the slots were deleted; restore them from a copy",
            ));
        }
        let n = slots.len();
        // Integrity first, for every slot and without the KDF: a damaged slot cannot be tried, but
        // the passphrase may be another slot's (one damaged slot must not lock out every
        // passphrase), and the operator hears about the damage whichever slot opens.
        let (mut damaged, mut intact) = (Vec::new(), Vec::new());
        for slot in slots {
            match keys::verify_integrity(&slot, &slot_path(&slot.id)) {
                Ok(()) => intact.push(slot),
                Err(e) => damaged.push(e),
            }
        }
        let intact_n = intact.len();
        for slot in intact {
            let (pw, cfg, cb) = (passphrase.to_vec(), config.clone(), config_bytes.clone());
            let name = slot_path(&slot.id);
            let id = slot.id.clone();
            let r = cpu(move || keys::open_slot(&slot, &pw, &cfg, &cb, &name)).await??;
            if let SlotOpen::Opened(master) = r {
                for e in &damaged {
                    match &e.hint {
                        Some(h) => log::warn!("{}; HINT: {h}", e.message),
                        None => log::warn!("{}", e.message),
                    }
                }
                return Ok(Repository {
                    store,
                    config,
                    config_bytes,
                    keys: Arc::new(Keys::new(&master)),
                    master,
                    slot_id: Some(id),
                });
            }
        }
        // The passphrase may well be a damaged slot's: saying "wrong passphrase" would send the
        // operator looking for a typo.
        if let Some(first) = damaged.first().cloned() {
            let mut e = first;
            if damaged.len() > 1 {
                e.message.push_str(&format!(
                    " ({} key slots of repository {} are damaged)",
                    damaged.len(),
                    store.location()
                ));
            }
            if intact_n > 0 {
                e = e.context(format!(
                    "the passphrase opens none of the {intact_n} intact key slot(s) of repository {}",
                    store.location()
                ));
            }
            return Err(e);
        }
        Err(Error::new(
            ErrorKind::WrongPassphrase,
            format!(
                "wrong passphrase: it opens none of the {n} key slot(s) of repository {}",
                store.location()
            ),
        )
        .hint("check PGFROST_PASSPHRASE or the file named by --passphrase-file"))
    }

    /// Opens with a master key taken from a key file.
    pub async fn open_with_key_file(store: Store, kf: &KeyFile, path: &str) -> Result<Repository> {
        let (config, config_bytes) = read_config(&store).await?;
        let master = keys::open_key_file(kf, &config, &config_bytes, path)?;
        Ok(Repository {
            store,
            config,
            config_bytes,
            keys: Arc::new(Keys::new(&master)),
            master,
            slot_id: None,
        })
    }

    /// Writes a new slot for `passphrase`. Slots are separate write-once objects so that adding
    /// one never rewrites anything another process might be reading.
    pub async fn add_slot(&self, passphrase: &[u8], cost: Cost, comment: &str) -> Result<KeySlot> {
        if cost.memory_kib < keys::MIN_MEMORY_KIB || cost.iterations < 1 {
            return Err(Error::config(format!(
                "KDF cost too low: at least {} KiB and 1 iteration",
                keys::MIN_MEMORY_KIB
            )));
        }
        let (master, cfg, cb) = (
            self.master.clone(),
            self.config.clone(),
            self.config_bytes.clone(),
        );
        let (pw, comment) = (passphrase.to_vec(), comment.to_string());
        let spec = SlotSpec {
            cost,
            comment,
            created: format::now_rfc3339(),
            random: SlotRandom::generate(),
        };
        let slot = cpu(move || keys::make_slot(&master, &pw, &cfg, &cb, spec)).await??;
        let mut b = serde_json::to_vec_pretty(&slot).expect("slot serializes");
        b.push(b'\n');
        if self.store.put_new(&slot_path(&slot.id), b.into()).await? == Put::AlreadyExists {
            return Err(Error::internal(format!("key slot id {} collided", slot.id)));
        }
        Ok(slot)
    }

    /// Removes a slot; refuses to remove the last one (that would make the data unreadable).
    pub async fn remove_slot(&self, id: &str) -> Result<()> {
        let slots = read_slots(&self.store).await?;
        if !slots.iter().any(|s| s.id == id) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no key slot '{id}' in repository {}", self.store.location()),
            )
            .hint("'pgfrost key list' shows the slots"));
        }
        if slots.len() == 1 {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("key slot '{id}' is the repository's only key slot; removing it would make every backup unreadable"),
            )
            .hint("add another passphrase first with 'pgfrost key add'"));
        }
        self.store.delete(&slot_path(id)).await
    }

    pub fn key_file(&self) -> KeyFile {
        keys::key_file_for(&self.master, &self.config, &self.config_bytes)
    }
}

pub fn exists_error(store: &Store) -> Error {
    Error::new(
        ErrorKind::RepoExists,
        format!("a repository already exists at {}", store.location()),
    )
    .hint("use it as it is, or choose another --repo; pgfrost never overwrites a repository")
}
