use super::{emit, kdf_cost};
use crate::config::Settings;
use crate::error::Result;
use crate::passphrase;
use crate::repo::Repository;
use crate::store::Store;
use serde_json::json;

pub async fn run(settings: &Settings) -> Result<()> {
    let location = settings.location()?;
    let store = Store::open(&location, true)?;
    // Refuse before asking for a passphrase: nobody should type one for nothing.
    if store.get_opt(crate::repo::CONFIG_PATH).await?.is_some() {
        return Err(crate::repo::exists_error(&store));
    }
    let pw = passphrase::new(
        settings,
        passphrase::ENV_PASSPHRASE,
        "passphrase-file",
        "New repository passphrase",
    )?;
    let repo = Repository::create(
        store,
        pw.as_bytes(),
        kdf_cost(settings),
        settings.string("key-comment").unwrap_or(""),
    )
    .await?;
    log::info!("created repository {} at {location}", repo.config.repo_id);
    emit(
        settings,
        &format!(
            "created repository {} at {location}\nkey slot: {}",
            repo.config.repo_id,
            repo.slot_id.as_deref().unwrap_or("")
        ),
        json!({"repository": location.to_string(), "repo_id": repo.config.repo_id, "slot": repo.slot_id}),
    );
    Ok(())
}
