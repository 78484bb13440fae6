//! Leases: how garbage collection and the commands that rely on blocks staying put keep out of
//! each other's way, on local disk and on object storage alike (no locking primitive needed
//! beyond strongly consistent PUT, LIST and DELETE).
//!
//! Each such command writes `<stanza>/lock/<kind>-<id>` first, then lists the others:
//! - a backup (kind `backup`) dedups against blocks already stored, and a restore, verify or
//!   drill (kind `read`) reads them; both wait while a live `gc` lease exists;
//! - garbage collection (kind `gc`) deletes packs only when it finds no other live lease, and
//!   otherwise postpones (never waits, so nothing can deadlock).
//!
//! Because both sides write before they look, two that start together cannot both miss each
//! other: at least one sees the other and stands back. A lease is renewed every
//! [`RENEW_SECONDS`]; one not renewed for [`TTL_SECONDS`] belongs to a process that died, and
//! garbage collection deletes it before reading the manifests. A backup that was merely paused
//! that long finds its lease gone when it checks after writing its manifest, and withdraws the
//! backup (the blocks it relied on may have been collected).
//!
//! archive-push takes no lease and never waits: it only adds WAL, and expire only deletes WAL
//! older than every retained backup needs.

use crate::clock;
use crate::error::{Error, Result};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const FORMAT: &str = "pgfrost-lease";
pub const TTL_SECONDS: i64 = 300;
pub const RENEW_SECONDS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseKind {
    Backup,
    Read,
    Gc,
}

impl LeaseKind {
    pub fn name(self) -> &'static str {
        match self {
            LeaseKind::Backup => "backup",
            LeaseKind::Read => "read",
            LeaseKind::Gc => "gc",
        }
    }
}

/// The stored document. Not encrypted: it says only that some process of some kind is at work.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LeaseDoc {
    pub format: String,
    pub version: u32,
    pub kind: LeaseKind,
    pub id: String,
    /// The pgfrost command holding it (backup, restore, expire, ...).
    pub command: String,
    /// Which process space `pid` belongs to: a hash of the host name, machine id, boot id and
    /// PID namespace, so that a reader in the same one can tell a dead holder at once.
    pub host: String,
    pub pid: u32,
    /// Real Unix seconds (never the test clock).
    pub created_unix: i64,
    pub renewed_unix: i64,
    pub ttl_seconds: i64,
}

impl LeaseDoc {
    /// Renewed within its TTL, and, when it was taken in this process space, its holder is
    /// still running (a killed holder does not block others for the whole TTL).
    pub fn live(&self, now_unix: i64) -> bool {
        if now_unix.saturating_sub(self.renewed_unix) >= self.ttl_seconds {
            return false;
        }
        if self.host == host_id() && self.pid > 0 && self.pid <= i32::MAX as u32 {
            // SAFETY: kill with signal 0 only checks whether the process exists.
            let r = unsafe { libc::kill(self.pid as i32, 0) };
            // EPERM: it exists, under another user.
            let exists =
                r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
            // A killed holder whose parent died with it stays a zombie until init reaps it,
            // and in a container whose init never reaps, kill() finds it for ever.
            return exists && !zombie(self.pid);
        }
        true
    }
}

/// Whether process `pid` has exited and waits to be reaped (state Z or X in /proc/<pid>/stat).
fn zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "<pid> (<comm>) <state> ...": comm may hold spaces and parentheses, the state follows
    // the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_some_and(|c| c == 'Z' || c == 'X')
}

/// The process space this process runs in. Containers sharing a host name still differ in
/// their PID namespace; a reboot changes the boot id (and with it, what a pid means).
pub fn host_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let mut h = blake3::Hasher::new();
        h.update(b"pgfrost lease host v1");
        for part in [
            std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default(),
            std::fs::read_to_string("/etc/machine-id").unwrap_or_default(),
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            std::fs::read_link("/proc/self/ns/pid")
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ] {
            h.update(part.trim().as_bytes());
            h.update(&[0]);
        }
        h.finalize().to_hex()[..32].to_string()
    })
    .clone()
}

/// A lease found in the repository.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: String,
    /// None when the object does not parse (treated as stale).
    pub doc: Option<LeaseDoc>,
}

impl Found {
    pub fn live(&self, now_unix: i64) -> bool {
        self.doc.as_ref().is_some_and(|d| d.live(now_unix))
    }

    pub fn describe(&self) -> String {
        match &self.doc {
            Some(d) => format!(
                "{} lease of '{}' (pid {}, renewed {})",
                d.kind.name(),
                d.command,
                d.pid,
                clock::rfc3339(d.renewed_unix)
            ),
            None => format!("unreadable lease {}", self.path),
        }
    }
}

/// A lease document, or None when it is not one of ours (treated as a dead lease).
pub fn parse(b: &[u8]) -> Option<LeaseDoc> {
    serde_json::from_slice::<LeaseDoc>(b)
        .ok()
        .filter(|d| d.format == FORMAT && d.version == 1)
}

pub fn dir(stanza: &str) -> String {
    format!("{stanza}/lock")
}

/// Every lease of the stanza.
pub async fn list(store: &Store, stanza: &str) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    for l in store.list(&dir(stanza)).await? {
        let doc = match store.get_opt(&l.path).await? {
            Some(b) => parse(&b),
            // Released between the listing and the read.
            None => continue,
        };
        out.push(Found { path: l.path, doc });
    }
    Ok(out)
}

/// The live leases of the stanza other than `own`, and how many stale ones were removed (with
/// `remove_stale`; a dry run leaves them). Garbage collection calls it before reading the
/// manifests: a backup whose lease is removed here withdraws itself if it ever resumes.
pub async fn others_removing_stale(
    store: &Store,
    stanza: &str,
    own: Option<&Lease>,
    remove_stale: bool,
) -> Result<(Vec<Found>, u64)> {
    let now_real = clock::real_unix();
    let (mut others, mut removed) = (Vec::new(), 0);
    for f in list(store, stanza).await? {
        if own.is_some_and(|l| l.path == f.path) {
            continue;
        }
        if f.live(now_real) {
            others.push(f);
        } else if remove_stale {
            log::warn!("removing stale {}", f.describe());
            store.delete(&f.path).await?;
            removed += 1;
        }
    }
    Ok((others, removed))
}

/// Permission to add blocks to a stanza's block store ([`BlockStore::writer`]): only a held
/// backup or garbage-collection lease gives it. Collection decides what is garbage from the
/// manifests and leases it sees; a writer it cannot see could have its new blocks deleted under
/// it, so there is no writer without a lease that collection waits for.
///
/// [`BlockStore::writer`]: super::blockstore::BlockStore::writer
#[derive(Clone, Copy)]
pub struct MayWrite<'a> {
    _held: Option<&'a Lease>,
}

impl MayWrite<'static> {
    /// For a process that is alone with its store by construction (a test, a bench, on a
    /// store nobody else can reach): nothing to exclude, so no lease.
    pub fn alone() -> MayWrite<'static> {
        MayWrite { _held: None }
    }
}

/// Permission to collect garbage ([`super::gc::collect`]): only a held gc lease gives it, the
/// one lease that excludes backups and readers.
#[derive(Clone, Copy)]
pub struct MayCollect<'a> {
    held: Option<&'a Lease>,
    only_look: bool,
}

impl<'a> MayCollect<'a> {
    /// Collection rewrites packs, so it writes too.
    pub fn may_write(self) -> MayWrite<'a> {
        MayWrite { _held: self.held }
    }
}

impl MayCollect<'_> {
    /// Without a lease, collection may only report what it would do.
    pub fn only_look(&self) -> bool {
        self.only_look
    }
}

impl MayCollect<'static> {
    /// As [`MayWrite::alone`].
    pub fn alone() -> MayCollect<'static> {
        MayCollect {
            held: None,
            only_look: false,
        }
    }

    /// A dry run: it writes and deletes nothing, so it needs no lease, and gets none of the
    /// rights one gives.
    pub fn dry_run() -> MayCollect<'static> {
        MayCollect {
            held: None,
            only_look: true,
        }
    }
}

pub struct Lease {
    store: Store,
    pub path: String,
    doc: LeaseDoc,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// What this lease allows a writer: a backup or gc lease; a read lease allows no writing.
    pub fn may_write(&self) -> Result<MayWrite<'_>> {
        match self.doc.kind {
            LeaseKind::Backup | LeaseKind::Gc => Ok(MayWrite { _held: Some(self) }),
            k => Err(Error::internal(format!(
                "a {} lease does not allow adding blocks",
                k.name()
            ))),
        }
    }

    /// What this lease allows collection: a gc lease only.
    pub fn may_collect(&self) -> Result<MayCollect<'_>> {
        match self.doc.kind {
            LeaseKind::Gc => Ok(MayCollect {
                held: Some(self),
                only_look: false,
            }),
            k => Err(Error::internal(format!(
                "a {} lease does not allow collecting garbage",
                k.name()
            ))),
        }
    }

    pub async fn acquire(
        store: &Store,
        stanza: &str,
        kind: LeaseKind,
        command: &str,
    ) -> Result<Lease> {
        let mut idb = [0u8; 16];
        getrandom::fill(&mut idb).map_err(|e| Error::internal(format!("getrandom: {e}")))?;
        let id = hex::encode(idb);
        let now = clock::real_unix();
        let doc = LeaseDoc {
            format: FORMAT.into(),
            version: 1,
            kind,
            id: id.clone(),
            command: command.into(),
            host: host_id(),
            pid: std::process::id(),
            created_unix: now,
            renewed_unix: now,
            ttl_seconds: TTL_SECONDS,
        };
        let path = format!("{}/{}-{id}", dir(stanza), kind.name());
        store
            .put_overwrite(&path, serde_json::to_vec(&doc).expect("lease").into())
            .await?;
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = {
            let (store, path, mut doc, lost) =
                (store.clone(), path.clone(), doc.clone(), lost.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(RENEW_SECONDS)).await;
                    // Never bring back a lease that garbage collection declared dead: the
                    // holder must find out, not carry on.
                    match store.exists(&path).await {
                        Ok(false) => {
                            lost.store(true, Ordering::SeqCst);
                            log::error!("lease {path} was removed as stale");
                            return;
                        }
                        Ok(true) => {}
                        Err(e) => {
                            log::warn!("cannot renew lease {path}: {e}");
                            continue;
                        }
                    }
                    doc.renewed_unix = clock::real_unix();
                    if let Err(e) = store
                        .put_overwrite(&path, serde_json::to_vec(&doc).expect("lease").into())
                        .await
                    {
                        log::warn!("cannot renew lease {path}: {e}");
                    }
                }
            })
        };
        Ok(Lease {
            store: store.clone(),
            path,
            doc,
            lost,
            renewer,
        })
    }

    /// Live leases other than this one.
    pub async fn others(&self, stanza: &str) -> Result<Vec<Found>> {
        let now = clock::real_unix();
        Ok(list(&self.store, stanza)
            .await?
            .into_iter()
            .filter(|f| f.path != self.path && f.live(now))
            .collect())
    }

    /// Waits while a live `gc` lease exists (garbage collection at work).
    pub async fn wait_for_gc(&self, stanza: &str) -> Result<()> {
        let mut said = false;
        loop {
            let gcs: Vec<Found> = self
                .others(stanza)
                .await?
                .into_iter()
                .filter(|f| f.doc.as_ref().is_some_and(|d| d.kind == LeaseKind::Gc))
                .collect();
            let Some(g) = gcs.first() else {
                return Ok(());
            };
            if !said {
                log::info!("waiting for garbage collection to finish: {}", g.describe());
                said = true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// False once garbage collection has removed this lease as stale.
    pub async fn still_held(&self) -> Result<bool> {
        Ok(!self.lost.load(Ordering::SeqCst) && self.store.exists(&self.path).await?)
    }

    /// Whether `other` (another holder's lease) was taken before this one: older creation
    /// time, ties broken by id, so two holders always agree which of them came first.
    pub fn preceded_by(&self, other: &LeaseDoc) -> bool {
        (other.created_unix, other.id.as_str()) < (self.doc.created_unix, self.doc.id.as_str())
    }

    pub fn kind(&self) -> LeaseKind {
        self.doc.kind
    }

    pub async fn release(self) {
        self.renewer.abort();
        if let Err(e) = self.store.delete(&self.path).await {
            log::warn!("cannot remove lease {}: {e}", self.path);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(found: &[Found]) -> Vec<LeaseKind> {
        found
            .iter()
            .filter_map(|f| f.doc.as_ref().map(|d| d.kind))
            .collect()
    }

    /// A lease left by a holder elsewhere that stopped renewing it `age` seconds ago.
    async fn left_behind(store: &Store, kind: LeaseKind, age: i64) -> String {
        let now = clock::real_unix();
        let doc = LeaseDoc {
            format: FORMAT.into(),
            version: 1,
            kind,
            id: "0".repeat(32),
            command: "backup".into(),
            host: "another host".into(),
            pid: 1,
            created_unix: now - age,
            renewed_unix: now - age,
            ttl_seconds: TTL_SECONDS,
        };
        let path = format!("{}/{}-{}", dir("st"), kind.name(), doc.id);
        store
            .put_overwrite(&path, serde_json::to_vec(&doc).unwrap().into())
            .await
            .unwrap();
        path
    }

    #[tokio::test]
    async fn a_gc_lease_keeps_readers_and_writers_waiting_until_released() {
        let store = Store::memory("lease");
        let gc = Lease::acquire(&store, "st", LeaseKind::Gc, "expire")
            .await
            .unwrap();
        let backup = Lease::acquire(&store, "st", LeaseKind::Backup, "backup")
            .await
            .unwrap();
        let read = Lease::acquire(&store, "st", LeaseKind::Read, "restore")
            .await
            .unwrap();
        // Collection sees both and must postpone.
        let mut seen = kinds(&gc.others("st").await.unwrap());
        seen.sort_by_key(|k| k.name());
        assert_eq!(seen, [LeaseKind::Backup, LeaseKind::Read]);
        let (others, removed) = others_removing_stale(&store, "st", Some(&gc), true)
            .await
            .unwrap();
        assert_eq!((others.len(), removed), (2, 0));
        // Writers and readers wait for it.
        for l in [&backup, &read] {
            let waited =
                tokio::time::timeout(Duration::from_millis(1200), l.wait_for_gc("st")).await;
            assert!(waited.is_err(), "{} did not wait", l.kind().name());
        }
        // Taken in the same second, maybe: the ids break the tie, and both agree on it.
        assert_ne!(backup.preceded_by(&gc.doc), gc.preceded_by(&backup.doc));
        let gc_path = gc.path.clone();
        gc.release().await;
        assert!(!store.exists(&gc_path).await.unwrap(), "release removes it");
        for l in [&backup, &read] {
            tokio::time::timeout(Duration::from_secs(5), l.wait_for_gc("st"))
                .await
                .expect("no gc lease left")
                .unwrap();
        }
        assert_eq!(list(&store, "st").await.unwrap().len(), 2);
        backup.release().await;
        read.release().await;
        assert!(list(&store, "st").await.unwrap().is_empty());
    }

    /// Writing blocks takes a backup or gc lease, collecting a gc lease: a reader's lease gives
    /// neither, a backup's no collecting, and a dry run's permission forces a dry run.
    #[tokio::test]
    async fn only_the_right_lease_lets_its_holder_write_or_collect() {
        let store = Store::memory("leases");
        for (kind, write, collect) in [
            (LeaseKind::Read, false, false),
            (LeaseKind::Backup, true, false),
            (LeaseKind::Gc, true, true),
        ] {
            let l = Lease::acquire(&store, "st", kind, "test").await.unwrap();
            assert_eq!(l.may_write().is_ok(), write, "{kind:?}");
            assert_eq!(l.may_collect().is_ok(), collect, "{kind:?}");
            if let Ok(c) = l.may_collect() {
                assert!(!c.only_look());
            }
            l.release().await;
        }
        assert!(MayCollect::dry_run().only_look());
    }

    #[tokio::test]
    async fn a_stale_lease_is_ignored_then_taken_over() {
        let store = Store::memory("lease");
        let stale_gc = left_behind(&store, LeaseKind::Gc, TTL_SECONDS + 1).await;
        let stale_backup = left_behind(&store, LeaseKind::Backup, TTL_SECONDS).await;
        let fresh = left_behind(&store, LeaseKind::Read, TTL_SECONDS - 30).await;
        store
            .put_overwrite(&format!("{}/gc-garbage", dir("st")), "{".into())
            .await
            .unwrap();

        // A writer does not wait for a dead collector.
        let backup = Lease::acquire(&store, "st", LeaseKind::Backup, "backup")
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), backup.wait_for_gc("st"))
            .await
            .expect("a stale gc lease does not block")
            .unwrap();

        // A dry run removes nothing; collection removes the stale and unreadable ones.
        let gc = Lease::acquire(&store, "st", LeaseKind::Gc, "expire")
            .await
            .unwrap();
        let (others, removed) = others_removing_stale(&store, "st", Some(&gc), false)
            .await
            .unwrap();
        assert_eq!(removed, 0);
        assert_eq!(list(&store, "st").await.unwrap().len(), 6);
        let mut live: Vec<String> = others.iter().map(|f| f.path.clone()).collect();
        live.sort();
        let mut want = vec![fresh.clone(), backup.path.clone()];
        want.sort();
        assert_eq!(live, want);
        let (_, removed) = others_removing_stale(&store, "st", Some(&gc), true)
            .await
            .unwrap();
        assert_eq!(removed, 3);
        for p in [&stale_gc, &stale_backup] {
            assert!(!store.exists(p).await.unwrap());
        }
        assert!(store.exists(&gc.path).await.unwrap(), "its own lease stays");
        assert!(store.exists(&fresh).await.unwrap());

        // A holder whose lease was taken over finds out.
        assert!(backup.still_held().await.unwrap());
        store.delete(&backup.path).await.unwrap();
        assert!(!backup.still_held().await.unwrap());
        gc.release().await;
    }

    #[test]
    fn a_holder_in_this_process_space_is_live_while_it_runs() {
        let now = clock::real_unix();
        let mut d = LeaseDoc {
            format: FORMAT.into(),
            version: 1,
            kind: LeaseKind::Read,
            id: "1".into(),
            command: "verify".into(),
            host: host_id(),
            pid: std::process::id(),
            created_unix: now,
            renewed_unix: now,
            ttl_seconds: TTL_SECONDS,
        };
        assert!(d.live(now));
        assert!(!d.live(now + TTL_SECONDS), "expired");
        // No such process: dead at once, without waiting for the TTL.
        d.pid = i32::MAX as u32;
        assert!(!d.live(now));
        assert!(parse(&serde_json::to_vec(&d).unwrap()).is_some());
        d.format = "other".into();
        assert!(parse(&serde_json::to_vec(&d).unwrap()).is_none());
    }
}
