use super::{emit, kdf_cost, open_repo_with_passphrase};
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result};
use crate::passphrase;
use crate::repo::{self, read_slots};
use crate::store::Store;
use clap::ArgMatches;
use serde_json::json;

/// The passphrase being added (`key add`) or replacing the current one (`key change`), from
/// its file (new-passphrase-file) when it comes from none of the other sources.
fn new_passphrase(source: &passphrase::Source) -> Result<zeroize::Zeroizing<String>> {
    passphrase::new(
        source,
        passphrase::ENV_NEW_PASSPHRASE,
        "new-passphrase-file",
        "New passphrase",
    )
}

pub async fn run(sub: &str, leaf: &ArgMatches, settings: &Settings) -> Result<()> {
    let new_source = passphrase::Source {
        file: settings.string("new-passphrase-file").map(str::to_string),
    };
    let key_file = super::key_file(settings);
    match sub {
        "list" => {
            let (text, j) = list(&settings.location()?).await?;
            emit(settings, &text, j);
            Ok(())
        }
        "add" => {
            let repo = open_repo_with_passphrase(settings).await?;
            let pw = new_passphrase(&new_source)?;
            let slot = repo
                .add_slot(
                    pw.as_bytes(),
                    kdf_cost(settings),
                    settings.string("key-comment").unwrap_or(""),
                )
                .await?;
            emit(
                settings,
                &format!("added key slot {}", slot.id),
                json!({"added": slot.id}),
            );
            Ok(())
        }
        "remove" => {
            let id = leaf.get_one::<String>("slot").expect("required by clap");
            let repo = open_repo_with_passphrase(settings).await?;
            repo.remove_slot(id).await?;
            emit(
                settings,
                &format!("removed key slot {id}"),
                json!({"removed": id}),
            );
            Ok(())
        }
        "change" => {
            let repo = open_repo_with_passphrase(settings).await?;
            let old = repo.slot_id.clone().expect("opened with a passphrase");
            let comment = read_slots(&repo.store)
                .await?
                .into_iter()
                .find(|s| s.id == old)
                .map(|s| s.comment)
                .unwrap_or_default();
            let comment = settings
                .string("key-comment")
                .map(str::to_string)
                .unwrap_or(comment);
            let pw = new_passphrase(&new_source)?;
            // New slot first: if we die in between, both passphrases work, never neither.
            let slot = repo
                .add_slot(pw.as_bytes(), kdf_cost(settings), &comment)
                .await?;
            repo.remove_slot(&old).await?;
            emit(
                settings,
                &format!("passphrase changed: key slot {old} replaced by {}", slot.id),
                json!({"removed": old, "added": slot.id}),
            );
            Ok(())
        }
        "unlock" => {
            let repo = open_repo_with_passphrase(settings).await?;
            let path = passphrase::key_file_path(key_file, &repo.config.repo_id)?;
            passphrase::write_key_file(&path, &repo.key_file())?;
            emit(
                settings,
                &format!(
                    "wrote key file {} (mode 0600); commands run by this user now need no passphrase",
                    path.display()
                ),
                json!({"key_file": path.display().to_string()}),
            );
            Ok(())
        }
        "lock" => {
            let store = Store::open(&settings.location()?, false)?;
            let (config, _) = repo::read_config(&store).await?;
            let path = passphrase::key_file_path(key_file, &config.repo_id)?;
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("no key file at {}", path.display()),
                    ));
                }
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::KeyFile,
                        format!("cannot remove key file {}: {e}", path.display()),
                    ));
                }
            }
            emit(
                settings,
                &format!("removed key file {}", path.display()),
                json!({"removed": path.display().to_string()}),
            );
            Ok(())
        }
        _ => Err(Error::internal(format!("unhandled key command {sub}"))),
    }
}

/// The key slots, as text and as JSON.
async fn list(location: &crate::store::Location) -> Result<(String, serde_json::Value)> {
    let store = Store::open(location, false)?;
    repo::read_config(&store).await?;
    let slots = read_slots(&store).await?;
    let mut text = format!(
        "{:<32}  {:<20}  {:>9}  {:>5}  comment",
        "slot", "created", "kdf KiB", "iter"
    );
    for s in &slots {
        text.push_str(&format!(
            "\n{:<32}  {:<20}  {:>9}  {:>5}  {}",
            s.id, s.created, s.kdf.memory_kib, s.kdf.iterations, s.comment
        ));
    }
    let j: Vec<_> = slots
        .iter()
        .map(|s| json!({"id": s.id, "created": s.created, "comment": s.comment, "kdf_memory_kib": s.kdf.memory_kib, "kdf_iterations": s.kdf.iterations}))
        .collect();
    Ok((text, json!({ "slots": j })))
}
