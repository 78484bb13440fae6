//! Checking and preparing the target: no server running, empty unless `--delta` or `--force`,
//! then the data directory, tablespace links, links and directories made, and what the backup
//! does not have removed.

use super::files::PG_CONTROL;
use super::options::RestoreOptions;
use super::places::{Places, data_links, dir_is_empty};
use super::roots::{Roots, fs_err, give_dir};
use crate::error::{Error, ErrorKind, Result};
use crate::fsx;
use crate::repo::manifest::Manifest;
use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Refuses a target a server runs in, and one that is not empty unless `--delta` or
/// `--force` allow it.
pub fn check_target(pg_path: &Path, opts: &RestoreOptions) -> Result<()> {
    if pg_path.join("postmaster.pid").exists() {
        let pid = std::fs::read_to_string(pg_path.join("postmaster.pid")).unwrap_or_default();
        let pid: i32 = pid
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        // SAFETY: kill with signal 0 only checks whether the process exists.
        if pid > 0 && unsafe { libc::kill(pid, 0) } == 0 {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("PostgreSQL is running in {} (pid {pid})", pg_path.display()),
            )
            .hint("stop it first; pgfrost never restores under a running server"));
        }
    }
    if !dir_is_empty(pg_path) && !opts.overwrite.allowed() {
        return Err(Error::new(ErrorKind::Conflict, format!("{} is not empty", pg_path.display()))
            .hint("restore into an empty directory, or give --delta (rewrite what differs) or --force (overwrite)"));
    }
    Ok(())
}

/// Who the restored cluster belongs to.
#[derive(Clone, Copy)]
pub struct ClusterOwner {
    /// Running as root: files and directories are given their recorded owners.
    pub chown: bool,
    /// As root, the cluster's owner (uid, gid).
    pub owner: Option<(u32, u32)>,
    /// The mode of the directories the restore makes for the cluster.
    pub dir_mode: u32,
}

impl ClusterOwner {
    pub fn of(m: &Manifest) -> Result<ClusterOwner> {
        // SAFETY: geteuid cannot fail.
        let chown = unsafe { libc::geteuid() } == 0;
        // The cluster's owner, as the backup recorded it: what root hands the new directories and
        // the files it writes itself to, so that the owner can start the cluster as it is.
        let version = m
            .files
            .iter()
            .find(|f| f.path == "PG_VERSION" || f.path == PG_CONTROL)
            .ok_or_else(|| Error::corrupt(format!("backup {} has no PG_VERSION", m.label)))?;
        let owner = chown.then_some((version.uid, version.gid));
        // PostgreSQL accepts 0750 only when the cluster allows group access, which its files say.
        let dir_mode = if version.mode & 0o040 != 0 {
            0o750
        } else {
            0o700
        };
        Ok(ClusterOwner {
            chown,
            owner,
            dir_mode,
        })
    }
}

/// Makes the data directory and everything the files go into: tablespace links, links, the
/// backup's directories. With `--delta` or `--force`, first removes what the backup does not
/// have. Returns every place, opened.
pub fn prepare(
    m: &Manifest,
    places: &Places,
    who: ClusterOwner,
    opts: &RestoreOptions,
) -> Result<Roots> {
    let pg_path = &places.pg_path;
    let owner = who.owner;
    make_cluster_dir(pg_path, who.dir_mode, owner)?;
    let mut roots = Roots::new(owner);
    roots.open(pg_path)?;
    // pg_control goes first of all out of the way: until the restore ends, the directory must
    // not look like a cluster that could be started.
    if let Ok(g) = roots
        .get(pg_path)
        .unwrap()
        .descend(Path::new("global"), None)
    {
        let _ = g.remove(std::ffi::OsStr::new("pg_control"));
    }
    if opts.overwrite.allowed() {
        remove_what_the_backup_lacks(m, places);
    }
    let pg_dir = fsx::Dir::open(pg_path).map_err(fs_err("open", pg_path))?;
    make_tablespace_links(m, places, &pg_dir, owner)?;
    make_links(m, places, &pg_dir, who)?;
    for loc in places.outside() {
        roots.open(loc)?;
    }
    for d in &m.dirs {
        let (root, sub) = places.locate(&d.path);
        roots
            .dir_below(root, &sub, true)
            .map_err(fs_err("create", &places.target_of(&d.path)))?;
    }
    Ok(roots)
}

/// `--delta`, `--force`: removes whatever the backup does not have.
fn remove_what_the_backup_lacks(m: &Manifest, places: &Places) {
    let pg_path = &places.pg_path;
    // Whatever the backup does not have goes: stale WAL, dropped relations, old labels.
    // An entry of another type than the backup's (a link where it has a directory or a
    // file) goes too, so that nothing below is ever reached through it.
    let files: HashSet<PathBuf> = m.files.iter().map(|f| places.target_of(&f.path)).collect();
    let dirs: HashSet<PathBuf> = m.dirs.iter().map(|d| places.target_of(&d.path)).collect();
    let linked: HashSet<PathBuf> = m.links.iter().map(|l| pg_path.join(&l.path)).collect();
    let mut todo = vec![pg_path.clone()];
    todo.extend(places.outside().cloned());
    let mut removed = 0;
    for root in todo {
        let Ok(top) = fsx::Dir::open(&root) else {
            continue;
        };
        for e in walkdir::WalkDir::new(&root)
            .follow_links(false)
            .contents_first(true)
            .into_iter()
            .filter_map(|e| e.ok())
        {
            let (p, ft) = (e.path(), e.file_type());
            let wanted = if ft.is_symlink() {
                linked.contains(p)
            } else if ft.is_dir() {
                dirs.contains(p) || linked.contains(p)
            } else {
                ft.is_file() && files.contains(p)
            };
            if e.depth() == 0 || wanted {
                continue;
            }
            let rel = p.strip_prefix(&root).unwrap_or(p);
            let Ok((parent, name)) = fsx::split(rel) else {
                continue;
            };
            // Removed through its directory's descriptor: a directory above it swapped
            // for a link since the walk saw it makes this fail, never remove elsewhere.
            if top
                .descend(parent, None)
                .and_then(|d| d.remove(name))
                .is_ok()
            {
                removed += 1;
            }
        }
    }
    log::info!("restore: removed {removed} file(s) and directories the backup does not have");
}

/// Each tablespace's location, and `pg_tblspc/<oid>` pointing to it.
fn make_tablespace_links(
    m: &Manifest,
    places: &Places,
    pg_dir: &fsx::Dir,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let mk = |d: &fsx::Dir| give_dir(d, owner);
    for t in &m.tablespaces {
        let loc = &places.spc[&t.oid];
        make_dir(loc, owner)?;
        let link = places.pg_path.join(format!("pg_tblspc/{}", t.oid));
        let name = std::ffi::OsString::from(t.oid.to_string());
        let tb = pg_dir
            .descend(Path::new("pg_tblspc"), Some(&mk))
            .map_err(fs_err("create", link.parent().unwrap()))?;
        if tb
            .read_link(&name)
            .map_err(fs_err("read", &link))?
            .as_deref()
            != Some(loc.as_path())
        {
            tb.symlink(loc, &name).map_err(fs_err("link", &link))?;
        }
        if let Some((uid, gid)) = owner {
            tb.lchown(&name, uid, gid).map_err(fs_err("chown", &link))?;
        }
    }
    Ok(())
}

/// The data directory's links: each one pointing where `places` says, or a plain directory.
fn make_links(m: &Manifest, places: &Places, pg_dir: &fsx::Dir, who: ClusterOwner) -> Result<()> {
    let owner = who.owner;
    let mk = |d: &fsx::Dir| give_dir(d, owner);
    for l in data_links(m) {
        let p = places.pg_path.join(&l.path);
        let (parent, name) = fsx::split(Path::new(&l.path)).map_err(fs_err("create", &p))?;
        let pd = pg_dir
            .descend(parent, Some(&mk))
            .map_err(fs_err("create", &p))?;
        let current = pd.read_link(name).map_err(fs_err("read", &p))?;
        match places.links.get(&l.path) {
            Some(dir) => {
                make_dir(dir, owner)?;
                // A plain directory left by an earlier restore (--delta, --force) is replaced.
                if current.as_deref() != Some(dir.as_path()) {
                    pd.symlink(dir, name).map_err(fs_err("link", &p))?;
                }
                if let Some((uid, gid)) = owner {
                    pd.lchown(name, uid, gid).map_err(fs_err("chown", &p))?;
                }
            }
            None => {
                // Only the link goes, never what it points to.
                if current.is_some() {
                    pd.remove(name).map_err(fs_err("remove", &p))?;
                }
                let d = pd
                    .descend(Path::new(name), Some(&mk))
                    .map_err(fs_err("create", &p))?;
                d.chmod(who.dir_mode).map_err(fs_err("chmod", &p))?;
                give_dir(&d, owner).map_err(fs_err("chown", &p))?;
            }
        }
    }
    Ok(())
}

/// As root, gives `p` (a link itself, not its target) to the cluster's owner.
fn give(p: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    match owner {
        Some((uid, gid)) => {
            std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|e| Error::io("chown", p, e))
        }
        None => Ok(()),
    }
}

/// A directory of the cluster's own (the data directory, a link's plain directory): created,
/// with the cluster's directory mode and, as root, its owner.
fn make_cluster_dir(dir: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    make_dir(dir, owner)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", dir, e))?;
    give(dir, owner)
}

/// Creates `dir` and its missing parents; as root, gives what it created to the cluster's
/// owner (root's umask would leave them root's and closed to the postgres user).
fn make_dir(dir: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    missing.into_iter().try_for_each(|d| give(d, owner))
}
