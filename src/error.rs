//! Error kinds, operator-facing messages with hints, and the documented exit codes.
//!
//! Every failure that reaches `main` is an [`Error`]: a kind (which fixes the exit code), a message
//! that names what failed, and an optional `HINT:` line for the operator. The exit codes are part of
//! the interface (scripts and systemd units test them) and are listed in docs/cli.md.

use std::fmt;

/// What went wrong, coarsely: each kind has its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A bad option, a bad value, a missing required option, a bad config file.
    Config,
    /// No repository at the configured location.
    RepoMissing,
    /// `repo-create` found a repository already there.
    RepoExists,
    /// The passphrase opens none of the repository's key slots.
    WrongPassphrase,
    /// A stored object failed authentication, did not parse, or is truncated.
    Corrupt,
    /// An object the repository should hold is not there.
    NotFound,
    /// Reading or writing the storage failed (I/O, network, permissions, full disk).
    Storage,
    /// A key file is missing, unsafe or does not belong to this repository.
    KeyFile,
    /// The operation would overwrite or conflict with something already stored.
    Conflict,
    /// PostgreSQL refused a connection or a query, or the cluster is not what the stanza says.
    Postgres,
    /// drill: the restored cluster did not pass its checks.
    DrillFailed,
    /// verify: the repository has problems (each one is listed).
    VerifyFailed,
    /// archive-get: the WAL file PostgreSQL asked for is not in the repository (exit 1, which
    /// PostgreSQL reads as "end of the archive").
    ArchiveMissing,
    /// A bug: an invariant that should hold did not.
    Internal,
}

impl ErrorKind {
    /// The process exit code for this kind (docs/cli.md lists them).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Config => 3,
            ErrorKind::RepoMissing => 10,
            ErrorKind::RepoExists => 11,
            ErrorKind::WrongPassphrase => 12,
            ErrorKind::Corrupt => 13,
            ErrorKind::NotFound => 14,
            ErrorKind::Storage => 15,
            ErrorKind::KeyFile => 16,
            ErrorKind::Conflict => 17,
            ErrorKind::Postgres => 20,
            ErrorKind::ArchiveMissing => 1,
            ErrorKind::DrillFailed => 21,
            ErrorKind::VerifyFailed => 22,
            ErrorKind::Internal => 70,
        }
    }
}

/// An error with a message for the operator and, where they can fix it, a hint.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
    /// What caused it (an `io::Error`, a backend's error), for code that must tell causes apart
    /// (a full disk, a permission) without reading the message. Shared so errors stay `Clone`.
    pub source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
            source: None,
        }
    }

    /// Keeps `cause` as this error's source.
    pub fn with_source(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(std::sync::Arc::new(cause));
        self
    }

    /// A failed file system call: names what was done and the path, keeps the `io::Error` as
    /// its source, and on a full disk says so in a hint (the one thing the operator can fix
    /// that the message does not already say).
    pub fn io(what: &str, path: &std::path::Path, e: std::io::Error) -> Self {
        let full = e.kind() == std::io::ErrorKind::StorageFull;
        let err = Self::storage(format!("cannot {what} {}: {e}", path.display()));
        let err = if full {
            err.hint(format!(
                "the file system holding {} is full: free space there and run the command again",
                path.display()
            ))
        } else {
            err
        };
        err.with_source(e)
    }

    /// The `io::Error` behind this error, if one is.
    pub fn io_cause(&self) -> Option<&std::io::Error> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_deref().map(|e| e as _);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return Some(io);
            }
            cur = e.source();
        }
        None
    }

    /// Adds (or replaces) the `HINT:` line.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Prefixes the message with what was being done, keeping kind and hint.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }
    pub fn storage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Storage, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\nHINT: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct() {
        let kinds = [
            ErrorKind::Config,
            ErrorKind::RepoMissing,
            ErrorKind::RepoExists,
            ErrorKind::WrongPassphrase,
            ErrorKind::Corrupt,
            ErrorKind::NotFound,
            ErrorKind::Storage,
            ErrorKind::KeyFile,
            ErrorKind::Conflict,
            ErrorKind::Postgres,
            ErrorKind::ArchiveMissing,
            ErrorKind::DrillFailed,
            ErrorKind::VerifyFailed,
            ErrorKind::Internal,
        ];
        let mut codes: Vec<i32> = kinds.iter().map(|k| k.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
        // 1 is reserved for archive-get's "segment not in the repository", 2 for usage errors.
        assert!(!codes.contains(&2) && !codes.contains(&0));
        assert_eq!(ErrorKind::ArchiveMissing.exit_code(), 1);
    }

    #[test]
    fn io_errors_keep_their_cause_and_say_when_the_disk_is_full() {
        let p = std::path::Path::new("/data/base/1/1259");
        let full = Error::io(
            "write",
            p,
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        assert_eq!(full.kind, ErrorKind::Storage);
        assert!(
            full.message.contains("cannot write /data/base/1/1259"),
            "{full}"
        );
        assert!(full.hint.as_deref().unwrap().contains("full"), "{full}");
        assert_eq!(
            full.io_cause().map(|e| e.kind()),
            Some(std::io::ErrorKind::StorageFull)
        );
        let denied = Error::io(
            "open",
            p,
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        )
        .context("restore failed");
        assert!(denied.hint.is_none());
        assert!(std::error::Error::source(&denied).is_some());
        assert_eq!(
            denied.io_cause().map(|e| e.kind()),
            Some(std::io::ErrorKind::PermissionDenied)
        );
    }

    #[test]
    fn display_has_hint_line() {
        let e = Error::config("bad").hint("fix it");
        assert_eq!(e.to_string(), "bad\nHINT: fix it");
    }
}
