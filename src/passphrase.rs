//! Where passphrases and key files come from. A passphrase never comes from argv (it would be
//! visible in `ps` and shell history): only from the environment, a file, or a terminal prompt.

use crate::error::{Error, ErrorKind, Result};
use crate::repo::format::KeyFile;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

pub const ENV_PASSPHRASE: &str = "PGFROST_PASSPHRASE";
pub const ENV_NEW_PASSPHRASE: &str = "PGFROST_NEW_PASSPHRASE";

fn read_file(path: &str, option: &str) -> Result<Zeroizing<String>> {
    let raw = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        Error::config(format!("cannot read {option} {path}: {e}"))
            .hint(format!("check the path given to {option}"))
    })?);
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o004 != 0
    {
        log::warn!("{option} {path} is readable by every user; HINT: chmod o-r {path}");
    }
    // One line; the newline an editor adds is not part of the passphrase.
    let pw = raw
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&raw);
    if pw.is_empty() {
        return Err(Error::config(format!("{option} {path} is empty")));
    }
    Ok(Zeroizing::new(pw.to_string()))
}

fn prompt(msg: &str) -> Result<Zeroizing<String>> {
    rpassword::prompt_password(msg)
        .map(Zeroizing::new)
        .map_err(|e| Error::config(format!("cannot read the passphrase from the terminal: {e}")))
}

fn no_source(env: &str, option: &str) -> Error {
    Error::config("no passphrase given, and no terminal to ask on").hint(format!(
        "set {env}, or give --{option} PATH (a file holding the passphrase)"
    ))
}

/// Where a passphrase comes from besides its environment variable and the terminal: the file
/// an option names, read from the settings by the command's entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// `passphrase-file`, or `new-passphrase-file` for a passphrase being set.
    pub file: Option<String>,
}

/// The passphrase of the repository (`source`: passphrase-file).
pub fn current(source: &Source, repo: &str) -> Result<Zeroizing<String>> {
    if let Ok(p) = std::env::var(ENV_PASSPHRASE)
        && !p.is_empty()
    {
        return Ok(Zeroizing::new(p));
    }
    if let Some(path) = source.file.as_deref() {
        return read_file(path, "passphrase-file");
    }
    if std::io::stdin().is_terminal() {
        return prompt(&format!("Passphrase for repository {repo}: "));
    }
    Err(no_source(ENV_PASSPHRASE, "passphrase-file"))
}

/// A passphrase being set: from its own sources, or asked twice on a terminal.
/// `source` is the file named by `option`.
pub fn new(source: &Source, env: &str, option: &str, what: &str) -> Result<Zeroizing<String>> {
    let pw = if let Some(p) = std::env::var(env).ok().filter(|p| !p.is_empty()) {
        Zeroizing::new(p)
    } else if let Some(path) = source.file.as_deref() {
        read_file(path, option)?
    } else if std::io::stdin().is_terminal() {
        let a = prompt(&format!("{what}: "))?;
        let b = prompt(&format!("{what} (again): "))?;
        if *a != *b {
            return Err(Error::config("the two passphrases differ"));
        }
        a
    } else {
        return Err(no_source(env, option));
    };
    if pw.chars().count() < 12 {
        log::warn!(
            "the new passphrase has fewer than 12 characters; anyone who obtains the repository can try guesses offline"
        );
    }
    Ok(pw)
}

/// The key file path: `key_file` (`--key-file`), else ~/.config/pgfrost/keys/<repository
/// id>.json.
pub fn key_file_path(key_file: Option<&Path>, repo_id: &str) -> Result<PathBuf> {
    if let Some(p) = key_file {
        return Ok(p.to_path_buf());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| {
            Error::config("neither HOME nor XDG_CONFIG_HOME is set").hint("give --key-file PATH")
        })?;
    Ok(base
        .join("pgfrost")
        .join("keys")
        .join(format!("{repo_id}.json")))
}

/// Reads a key file if it exists. It must be a regular file owned by this user and readable by
/// no one else: it is the repository's master key in the clear.
pub fn read_key_file(path: &Path) -> Result<Option<KeyFile>> {
    let shown = path.display();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::new(
                ErrorKind::KeyFile,
                format!("cannot read key file {shown}: {e}"),
            ));
        }
    };
    if !meta.file_type().is_file() {
        return Err(Error::new(
            ErrorKind::KeyFile,
            format!("key file {shown} is not a regular file"),
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    // Root may use the key file of the user it acts for (a restore run as root with the
    // postgres user's config): it can read that file anyway, and only that user or root can
    // have written it.
    if meta.uid() != euid && euid != 0 {
        return Err(Error::new(
            ErrorKind::KeyFile,
            format!("key file {shown} is owned by uid {}, not by this user (uid {euid})", meta.uid()),
        )
        .hint("run 'pgfrost key unlock' as the user that runs pgfrost (for archive-push: the postgres user)"));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::new(
            ErrorKind::KeyFile,
            format!(
                "key file {shown} has mode {:o}: it must not be readable by group or others",
                meta.permissions().mode() & 0o777
            ),
        )
        .hint(format!("chmod 600 {shown}")));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        Error::new(
            ErrorKind::KeyFile,
            format!("cannot read key file {shown}: {e}"),
        )
    })?;
    let kf: KeyFile = serde_json::from_slice(&bytes).map_err(|e| {
        Error::new(
            ErrorKind::KeyFile,
            format!("key file {shown} does not parse: {e}"),
        )
    })?;
    Ok(Some(kf))
}

/// Writes a key file atomically with mode 0600 (directory 0700), fsynced.
pub fn write_key_file(path: &Path, kf: &KeyFile) -> Result<()> {
    let err = |e: std::io::Error| {
        Error::new(
            ErrorKind::KeyFile,
            format!("cannot write key file {}: {e}", path.display()),
        )
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let mut body = Zeroizing::new(serde_json::to_vec_pretty(kf).expect("key file serializes"));
    body.push(b'\n');
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(&body).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}
