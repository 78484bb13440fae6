//! The storage layer: a thin wrapper over `object_store` that knows paths and bytes, never
//! repository format types. It maps every backend error once, naming the object and the
//! repository, and gives the repository the two primitives it builds on: create-once writes and
//! authenticated-elsewhere reads.

use crate::error::{Error, ErrorKind, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

pub mod cloud;

/// Where a repository lives, parsed from `--repo` and the `repo-s3-*` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(std::path::PathBuf),
    S3(S3Location),
    /// Process memory (object_store's `InMemory`), named for messages: tests of the repository
    /// logic that need no disk and no PostgreSQL.
    Memory(String),
    Gcs(cloud::GcsLocation),
    Azure(cloud::AzureLocation),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub key: Option<String>,
    pub key_secret: Option<String>,
    /// Extra trusted CA certificates (PEM), merged with the system's.
    pub ca_file: Option<PathBuf>,
    /// true: `https://endpoint/bucket/key`; false: `https://bucket.endpoint/key`.
    pub path_style: bool,
}

/// TLS roots and name resolution of the S3 client: the operator's CA file merged with the system's
/// roots, and names resolved in the process when the binary is static (crate::net says why).
fn client_options(s3: &S3Location) -> Result<object_store::ClientOptions> {
    tls_options(s3.ca_file.as_deref())
}

/// The HTTP client's options for every cloud: extra trusted roots, in-process name resolution.
fn tls_options(ca_file: Option<&std::path::Path>) -> Result<object_store::ClientOptions> {
    let mut o = object_store::ClientOptions::new();
    if let Some(f) = ca_file {
        let pem = std::fs::read(f).map_err(|e| {
            Error::config(format!("cannot read repo-s3-ca-file {}: {e}", f.display()))
        })?;
        let certs = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
            Error::config(format!(
                "repo-s3-ca-file {} holds no usable PEM certificate: {}",
                f.display(),
                chain(&e)
            ))
            .hint("give a file of '-----BEGIN CERTIFICATE-----' blocks")
        })?;
        if certs.is_empty() {
            return Err(Error::config(format!(
                "repo-s3-ca-file {} holds no certificate",
                f.display()
            ))
            .hint("give a file of '-----BEGIN CERTIFICATE-----' blocks"));
        }
        for c in certs {
            o = o.with_root_certificate(c);
        }
    }
    if crate::net::IN_PROCESS {
        o = o.with_dns_resolver(Arc::new(crate::net::Dns));
    }
    Ok(o)
}

impl Location {
    /// Parses `/path`, `file:///path` or `s3://bucket[/prefix]`. S3 settings are filled in by the
    /// caller.
    pub fn parse(repo: &str) -> Result<Location> {
        if let Some(rest) = repo.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(
                    Error::config(format!("repository '{repo}' names no bucket"))
                        .hint("write it as s3://BUCKET or s3://BUCKET/PREFIX"),
                );
            }
            return Ok(Location::S3(S3Location {
                bucket: bucket.into(),
                prefix: prefix.trim_matches('/').into(),
                endpoint: None,
                region: None,
                key: None,
                key_secret: None,
                ca_file: None,
                path_style: true,
            }));
        }
        if let Some(loc) = cloud::parse(repo)? {
            return Ok(loc);
        }
        let path = repo.strip_prefix("file://").unwrap_or(repo);
        if path.contains("://") {
            return Err(
                Error::config(format!("repository '{repo}': unsupported scheme"))
                    .hint("use a local path, file:///path, s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] or az://CONTAINER[/PREFIX]"),
            );
        }
        if !path.starts_with('/') {
            return Err(
                Error::config(format!("repository path '{repo}' is not absolute"))
                    .hint("give the full path, e.g. /var/lib/pgfrost"),
            );
        }
        Ok(Location::Local(path.into()))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3(s) if s.prefix.is_empty() => write!(f, "s3://{}", s.bucket),
            Location::S3(s) => write!(f, "s3://{}/{}", s.bucket, s.prefix),
            Location::Memory(name) => write!(f, "memory:{name}"),
            Location::Gcs(g) => write!(f, "{}", cloud::url("gs", &g.bucket, &g.prefix)),
            Location::Azure(a) => write!(f, "{}", cloud::url("az", &a.container, &a.prefix)),
        }
    }
}

/// How often a create-once write is tried when the transport fails.
const PUT_ATTEMPTS: u32 = 4;

/// Result of a create-once write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    /// Something is already stored under that name; it was left untouched.
    AlreadyExists,
}

/// A listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Path relative to the repository root, `/`-separated.
    pub path: String,
    pub size: u64,
    /// When it was stored, in Unix seconds (the storage's clock).
    pub modified: i64,
}

#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    location: Location,
}

impl Store {
    /// Connects to the repository's storage. For local disk, `create` makes the directory (only
    /// `repo-create` passes true: every other command must find the repository where it was).
    pub fn open(location: &Location, create: bool) -> Result<Store> {
        let inner: Arc<dyn ObjectStore> = match location {
            Location::Local(dir) => {
                if create {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        Error::storage(format!(
                            "cannot create repository directory {}: {e}",
                            dir.display()
                        ))
                    })?;
                } else if !dir.is_dir() {
                    return Err(Error::new(
                        ErrorKind::RepoMissing,
                        format!(
                            "no repository at {}: the directory does not exist",
                            dir.display()
                        ),
                    )
                    .hint("check --repo, or create the repository with 'pgfrost repo-create'"));
                }
                // fsync on: a write that returned is on disk, file and directory entry both; the
                // WAL archive's contract with PostgreSQL depends on it.
                let fs = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| Error::storage(format!("repository {}: {e}", dir.display())))?
                    .with_fsync(true);
                Arc::new(fs)
            }
            Location::S3(s3) => {
                // Client options first: setting them replaces all of them, allow_http included.
                let mut b = AmazonS3Builder::from_env()
                    .with_client_options(client_options(s3)?)
                    .with_bucket_name(&s3.bucket);
                if let Some(ep) = &s3.endpoint {
                    let ep = if ep.contains("://") {
                        ep.clone()
                    } else {
                        format!("https://{ep}")
                    };
                    b = b
                        .with_allow_http(ep.starts_with("http://"))
                        .with_endpoint(ep);
                }
                b = b.with_region(s3.region.clone().unwrap_or_else(|| "us-east-1".into()));
                if let Some(k) = &s3.key {
                    b = b.with_access_key_id(k);
                }
                if let Some(k) = &s3.key_secret {
                    b = b.with_secret_access_key(k);
                }
                b = b.with_virtual_hosted_style_request(!s3.path_style);
                let s = b.build().map_err(|e| {
                    Error::config(format!("repository {location}: {}", chain(&e)))
                        .hint("check repo-s3-endpoint, repo-s3-region, repo-s3-key and repo-s3-key-secret")
                })?;
                if s3.prefix.is_empty() {
                    Arc::new(s)
                } else {
                    Arc::new(PrefixStore::new(s, s3.prefix.as_str()))
                }
            }
            // Each open is a new, empty store: clone the Store to share one.
            Location::Memory(_) => Arc::new(object_store::memory::InMemory::new()),
            Location::Gcs(g) => cloud::open_gcs(g, location)?,
            Location::Azure(a) => cloud::open_azure(a, location)?,
        };
        Ok(Store {
            inner,
            location: location.clone(),
        })
    }

    /// An empty repository storage in process memory, named `name` in messages. Create-once
    /// writes are honoured as on the other backends; clones share the objects.
    pub fn memory(name: &str) -> Store {
        Store {
            inner: Arc::new(object_store::memory::InMemory::new()),
            location: Location::Memory(name.to_string()),
        }
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    fn err(&self, op: &str, path: &str, e: object_store::Error) -> Error {
        let msg = format!(
            "{op} '{path}' in repository {}: {}",
            self.location,
            chain(&e)
        );
        match e {
            object_store::Error::NotFound { .. } => Error::new(ErrorKind::NotFound, msg),
            object_store::Error::AlreadyExists { .. } => Error::new(ErrorKind::Conflict, msg),
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                Error::storage(msg).hint("check the repository's permissions or credentials")
            }
            // LocalFileSystem reports EACCES as a generic error with the io::Error below it.
            _ if permission_denied(&e) => match &self.location {
                Location::Local(dir) => Error::storage(msg).hint(denied_hint(dir)),
                _ => Error::storage(msg),
            },
            _ => Error::storage(msg),
        }
    }

    /// Writes `bytes` under `path` unless something is already there. Never overwrites: on local
    /// disk a hard link of a fully written, fsynced temporary file; on S3 `If-None-Match: *`.
    pub async fn put_new(&self, path: &str, bytes: Bytes) -> Result<Put> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let mut attempt = 0;
        loop {
            let e = match self
                .inner
                .put_opts(
                    &Path::from(path),
                    PutPayload::from_bytes(bytes.clone()),
                    opts.clone(),
                )
                .await
            {
                Ok(_) => {
                    self.settle(path).await?;
                    return Ok(Put::Created);
                }
                Err(object_store::Error::AlreadyExists { .. }) => return Ok(Put::AlreadyExists),
                Err(e) => e,
            };
            // A conditional PUT is not retried by object_store. Servers may answer 412 before
            // reading the body and close the socket (the client then sees a broken pipe), and a
            // response can be lost after the object was created. So look: our own bytes mean our
            // write landed; other bytes mean the name was taken; nothing means try again.
            attempt += 1;
            match self.get_opt(path).await {
                Ok(Some(stored)) if stored == bytes => {
                    self.settle(path).await?;
                    return Ok(Put::Created);
                }
                Ok(Some(_)) => return Ok(Put::AlreadyExists),
                Ok(None) | Err(_) if attempt < PUT_ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
                }
                _ => return Err(self.err("cannot write", path, e)),
            }
        }
    }

    /// Writes `bytes` under `path`, replacing what is there. Only for leases, the one kind of
    /// object that changes (its renewal time); readers see the old or the new bytes, never a mix.
    pub async fn put_overwrite(&self, path: &str, bytes: Bytes) -> Result<()> {
        self.inner
            .put(&Path::from(path), PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.err("cannot write", path, e))?;
        self.settle(path).await
    }

    /// Local disk: gives a new object, and the directories above it, the repository's one rule
    /// (docs/format.md, Ownership and modes): owned like the repository directory, objects
    /// 0640, directories 0750. Without it an object written by a command run as root is
    /// root's, and the next command run as postgres (archive-push, verify, expire) cannot read
    /// it or write beside it. Reached without following links: the directory's owner must not
    /// be able to point root's chown at another file.
    async fn settle(&self, path: &str) -> Result<()> {
        let Location::Local(dir) = &self.location else {
            return Ok(());
        };
        let (dir, owned) = (dir.clone(), path.to_string());
        let r = tokio::task::spawn_blocking(move || settle_local(&dir, &owned))
            .await
            .map_err(|e| Error::internal(format!("settling an object failed: {e}")))?;
        r.map_err(|e| {
            Error::storage(format!(
                "cannot set the owner and mode of '{}' in repository {}: {e}",
                path, self.location
            ))
            .hint("check the repository directory's owner and permissions")
        })
    }

    pub async fn get(&self, path: &str) -> Result<Bytes> {
        let r = self
            .inner
            .get(&Path::from(path))
            .await
            .map_err(|e| self.err("cannot read", path, e))?;
        r.bytes()
            .await
            .map_err(|e| self.err("cannot read", path, e))
    }

    /// Like [`Store::get`], but a missing object is `None` rather than an error.
    pub async fn get_opt(&self, path: &str) -> Result<Option<Bytes>> {
        match self.get(path).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn get_ranges(&self, path: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner
            .get_ranges(&Path::from(path), ranges)
            .await
            .map_err(|e| self.err("cannot read", path, e))
    }

    pub async fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        self.inner
            .get_range(&Path::from(path), range)
            .await
            .map_err(|e| self.err("cannot read", path, e))
    }

    /// Whether an object exists, without reading it.
    pub async fn exists(&self, path: &str) -> Result<bool> {
        match self.inner.head(&Path::from(path)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err("cannot stat", path, e)),
        }
    }

    pub async fn size(&self, path: &str) -> Result<u64> {
        let m = self
            .inner
            .head(&Path::from(path))
            .await
            .map_err(|e| self.err("cannot stat", path, e))?;
        Ok(m.size)
    }

    /// Every object under `prefix` (a folder name without trailing slash; "" for all).
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let p = if prefix.is_empty() {
            None
        } else {
            Some(Path::from(prefix))
        };
        let mut out: Vec<Listed> = self
            .inner
            .list(p.as_ref())
            .map_ok(|m| Listed {
                path: m.location.to_string(),
                size: m.size,
                modified: m.last_modified.timestamp(),
            })
            .try_collect()
            .await
            .map_err(|e| self.err("cannot list", prefix, e))?;
        // Dot-files are not objects (editor and tool droppings on a local repository). The local
        // store's own staging files (`<name>#<n>`) are already hidden by object_store.
        out.retain(|l| !l.path.rsplit('/').next().unwrap_or("").starts_with('.'));
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Removes the local backend's staging files (`<name>#<n>`, hidden from listings) under
    /// `prefix` that are older than `min_age`: a writer killed between writing one and linking
    /// it into place leaves it behind. Younger ones may belong to a writer at work. Object
    /// storage has no such files. Returns (files, bytes) removed.
    pub async fn sweep_staging(
        &self,
        prefix: &str,
        min_age: std::time::Duration,
    ) -> Result<(u64, u64)> {
        let Location::Local(dir) = &self.location else {
            return Ok((0, 0));
        };
        let root = dir.join(prefix);
        tokio::task::spawn_blocking(move || {
            let mut removed = (0u64, 0u64);
            for entry in walkdir::WalkDir::new(&root).into_iter().flatten() {
                let name = entry.file_name().to_string_lossy();
                let staging = name
                    .rsplit_once('#')
                    .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()));
                if !staging || !entry.file_type().is_file() {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= min_age);
                if old && std::fs::remove_file(entry.path()).is_ok() {
                    removed.0 += 1;
                    removed.1 += meta.len();
                }
            }
            removed
        })
        .await
        .map_err(|e| Error::internal(format!("staging sweep failed: {e}")))
    }

    /// The names directly under `prefix` that have objects below them (one level, no recursion).
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let p = (!prefix.is_empty()).then(|| Path::from(prefix));
        let r = self
            .inner
            .list_with_delimiter(p.as_ref())
            .await
            .map_err(|e| self.err("cannot list", prefix, e))?;
        let mut out: Vec<String> = r
            .common_prefixes
            .iter()
            .filter_map(|d| d.filename().map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .collect();
        out.sort();
        Ok(out)
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        match self.inner.delete(&Path::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("cannot delete", path, e)),
        }
    }
}

fn permission_denied(e: &dyn std::error::Error) -> bool {
    let mut cur = e.source();
    while let Some(c) = cur {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Who owns a local repository and who is asking: the usual cause is a repository created by
/// root that the postgres user (archive_command, backup) cannot read.
fn denied_hint(dir: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid cannot fail.
    let me = crate::users::name_of(unsafe { libc::geteuid() });
    match std::fs::metadata(dir) {
        Ok(m) => {
            let owner = crate::users::name_of(m.uid());
            format!(
                "the repository directory {} belongs to {owner} (mode {:04o}) and this command runs as {me}; run it as {owner}, or give the repository to the user that runs PostgreSQL: chown -R postgres: {}",
                dir.display(),
                m.mode() & 0o7777,
                dir.display()
            )
        }
        Err(_) => format!(
            "this command runs as {me} and cannot reach {}: check the permissions of the directories above it",
            dir.display()
        ),
    }
}

/// Mode of every object in a local repository.
pub const OBJECT_MODE: u32 = 0o640;
/// Mode of every directory in a local repository.
pub const DIR_MODE: u32 = 0o750;

fn settle_local(dir: &std::path::Path, path: &str) -> std::io::Result<()> {
    use crate::fsx::Dir;
    use std::os::unix::fs::MetadataExt;
    let top = Dir::open(dir)?;
    let want = std::fs::metadata(dir)?;
    let (uid, gid) = (want.uid(), want.gid());
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let root = me == 0;
    let fix = |st: &libc::stat,
               mode: u32,
               chmod: &dyn Fn(u32) -> std::io::Result<()>,
               chown: &dyn Fn() -> std::io::Result<()>| {
        if root && (st.st_uid != uid || st.st_gid != gid) {
            chown()?;
        }
        // Another user's directory (a shared, group-writable repository) is theirs to set.
        if st.st_mode & 0o7777 != mode && (root || st.st_uid == me) {
            chmod(mode)?;
        }
        Ok::<(), std::io::Error>(())
    };
    let rel = std::path::Path::new(path);
    let (parent, name) = crate::fsx::split(rel)?;
    let mut cur = top;
    for c in parent.components() {
        let std::path::Component::Normal(n) = c else {
            continue;
        };
        let st = cur
            .lstat(n)?
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        let d = cur.descend(std::path::Path::new(n), None)?;
        fix(&st, DIR_MODE, &|m| d.chmod(m), &|| d.chown(uid, gid))?;
        cur = d;
    }
    let (f, st) = cur.open_read(name, false)?;
    use std::os::unix::fs::PermissionsExt;
    fix(
        &st,
        OBJECT_MODE,
        &|m| f.set_permissions(std::fs::Permissions::from_mode(m)),
        &|| std::os::unix::fs::fchown(&f, Some(uid), Some(gid)),
    )
}

/// An error with its sources, one line: backend errors bury the useful part (ENOSPC, a 403)
/// several levels down.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_locations() {
        assert_eq!(Location::parse("/r").unwrap(), Location::Local("/r".into()));
        assert_eq!(
            Location::parse("file:///r/x").unwrap(),
            Location::Local("/r/x".into())
        );
        match Location::parse("s3://b/p/q/").unwrap() {
            Location::S3(s) => {
                assert_eq!(s.bucket, "b");
                assert_eq!(s.prefix, "p/q");
            }
            l => panic!("{l:?}"),
        }
        assert!(Location::parse("relative").is_err());
        assert!(Location::parse("s3://").is_err());
        assert!(Location::parse("ftp://x").is_err());
    }

    #[tokio::test]
    async fn memory_store_is_create_once_and_shared_by_clones() {
        let s = Store::memory("t");
        assert_eq!(s.location().to_string(), "memory:t");
        assert_eq!(
            s.put_new("a/b", Bytes::from_static(b"1")).await.unwrap(),
            Put::Created
        );
        assert_eq!(
            s.put_new("a/b", Bytes::from_static(b"2")).await.unwrap(),
            Put::AlreadyExists
        );
        let other = s.clone();
        assert_eq!(other.get("a/b").await.unwrap(), Bytes::from_static(b"1"));
        other
            .put_overwrite("a/b", Bytes::from_static(b"3"))
            .await
            .unwrap();
        assert_eq!(s.get("a/b").await.unwrap(), Bytes::from_static(b"3"));
        assert_eq!(s.list("a").await.unwrap().len(), 1);
        assert!(s.get_opt("a/c").await.unwrap().is_none());
        s.delete("a/b").await.unwrap();
        assert!(!s.exists("a/b").await.unwrap());
        assert!(Store::memory("u").get_opt("a/b").await.unwrap().is_none());
    }
}
