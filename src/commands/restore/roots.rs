//! The places a restore writes into, each opened once: everything below them is reached from
//! these descriptors without following links.

use crate::error::Error;
use crate::fsx;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The places a restore writes into, opened.
pub struct Roots {
    /// Each place's directory, opened once: what lies below is reached from these descriptors
    /// without following links.
    dirs: HashMap<PathBuf, fsx::Dir>,
    /// The cluster's owner, for directories the restore creates (as root).
    pub owner: Option<(u32, u32)>,
}

impl Roots {
    pub fn new(owner: Option<(u32, u32)>) -> Roots {
        Roots {
            dirs: HashMap::new(),
            owner,
        }
    }

    /// Opens the place `root` (a directory that exists).
    pub fn open(&mut self, root: &Path) -> crate::error::Result<()> {
        let d = fsx::Dir::open(root).map_err(fs_err("open", root))?;
        self.dirs.insert(root.to_path_buf(), d);
        Ok(())
    }

    /// The directory of the place `root`, opened.
    pub fn get(&self, root: &Path) -> Option<&fsx::Dir> {
        self.dirs.get(root)
    }

    /// The directory `sub` below the place `root`, made (with its missing parents) if absent.
    pub fn dir_below(&self, root: &Path, sub: &Path, create: bool) -> std::io::Result<fsx::Dir> {
        let r = self
            .dirs
            .get(root)
            .ok_or_else(|| std::io::Error::other(format!("{} is not open", root.display())))?;
        let owner = self.owner;
        let mk = |d: &fsx::Dir| give_dir(d, owner);
        r.descend(sub, create.then_some(&mk as fsx::OnCreate))
    }

    /// The regular file `sub` below the place `root`, opened read-write without following links.
    pub fn open_below(
        &self,
        root: &Path,
        sub: &Path,
        truncate: bool,
    ) -> std::io::Result<std::fs::File> {
        let (dir, name) = fsx::split(sub)?;
        self.dir_below(root, dir, true)?.file(name, truncate)
    }
}

/// Gives a directory the restore created (as root) to the cluster's owner.
pub fn give_dir(d: &fsx::Dir, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    match owner {
        Some((uid, gid)) => d.chown(uid, gid),
        None => Ok(()),
    }
}

/// Turns an io::Error of `what` on `p` into an Error naming both.
pub fn fs_err(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let (what, p) = (what.to_string(), p.to_path_buf());
    move |e: std::io::Error| Error::io(&what, &p, e)
}
