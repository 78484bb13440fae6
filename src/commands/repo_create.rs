use super::{emit, kdf_cost};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::passphrase;
use crate::repo::Repository;
use crate::store::{Location, Store};
use crate::users;
use serde_json::json;

pub async fn run(settings: &Settings) -> Result<()> {
    let location = settings.location()?;
    // repo-owner is checked before anything is created: a bad one must leave no directory.
    let asked = owner_asked(settings.string("repo-owner"), &location)?;
    let store = Store::open(&location, true)?;
    // Refuse before asking for a passphrase: nobody should type one for nothing.
    if store.get_opt(crate::repo::CONFIG_PATH).await?.is_some() {
        return Err(crate::repo::exists_error(&store));
    }
    let owner = give_away(asked, &location)?;
    let pw = passphrase::new(
        &super::passphrase_source(settings),
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
    let owned = owner
        .as_ref()
        .map(|name| format!("\nowned by {name} (mode 0750; every object written later, by root too, is given to it)"))
        .unwrap_or_default();
    emit(
        settings,
        &format!(
            "created repository {} at {location}\nkey slot: {}{owned}",
            repo.config.repo_id,
            repo.slot_id.as_deref().unwrap_or("")
        ),
        json!({"repository": location.to_string(), "repo_id": repo.config.repo_id, "slot": repo.slot_id,
               "owner": owner}),
    );
    Ok(())
}

/// The owner repo-owner names, checked without touching anything: (name, uid, gid).
fn owner_asked(spec: Option<&str>, location: &Location) -> Result<Option<(String, u32, u32)>> {
    let Some(s) = spec else {
        return Ok(None);
    };
    if !matches!(location, Location::Local(_)) {
        return Err(Error::config(
            "repo-owner applies to a local repository; object storage has no owners",
        )
        .hint("leave repo-owner out for this repository"));
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::config(format!(
            "repo-owner {s}: only root can give a repository to another user"
        ))
        .hint("run repo-create as the user who should own the repository, without --repo-owner"));
    }
    let (uid, gid) = users::parse_owner(s)?;
    Ok(Some((s.to_string(), uid, gid)))
}

/// Run as root, a new local repository belongs to root and the postgres user (archive_command,
/// backup) could read nothing of it. Its directory is given to `repo-owner`, by default to
/// `postgres` when the directory is still root's; every object written later follows the
/// directory's owner (store::settle). `spec` is repo-owner. The owner chosen, when one was.
fn give_away(asked: Option<(String, u32, u32)>, location: &Location) -> Result<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let Location::Local(dir) = location else {
        return Ok(None);
    };
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let st = std::fs::metadata(dir).map_err(|e| Error::io("stat", dir, e))?;
    let (name, uid, gid) = match asked {
        Some(o) => o,
        // An operator who prepared the directory for another user has chosen already.
        None if st.uid() != 0 => return Ok(None),
        None => match users::user("postgres") {
            Some((uid, gid)) => ("postgres".to_string(), uid, gid),
            None => {
                log::warn!(
                    "the repository {} belongs to root, and there is no postgres user to give it to\nHINT: give it to the user PostgreSQL runs as with --repo-owner USER",
                    dir.display()
                );
                return Ok(None);
            }
        },
    };
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .and_then(|_| {
            std::fs::set_permissions(
                dir,
                std::os::unix::fs::PermissionsExt::from_mode(crate::store::DIR_MODE),
            )
        })
        .map_err(|e| {
            Error::storage(format!(
                "cannot give repository directory {} to {name}: {e}",
                dir.display()
            ))
        })?;
    Ok(Some(name))
}
