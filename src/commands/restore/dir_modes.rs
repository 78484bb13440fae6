//! Directory modes and owners, set after the files are in place.

use super::places::Places;
use super::roots::{Roots, fs_err};
use crate::error::Result;
use crate::repo::manifest::Manifest;

/// Gives each directory of the backup its recorded mode and (as root) owner.
pub fn set_dir_modes(m: &Manifest, places: &Places, roots: &Roots, chown: bool) -> Result<()> {
    // Directory modes and owners after their contents (a 0500 directory would refuse files).
    for d in &m.dirs {
        let p = places.target_of(&d.path);
        let (root, sub) = places.locate(&d.path);
        let dir = roots
            .dir_below(root, &sub, false)
            .map_err(fs_err("open", &p))?;
        dir.chmod(d.mode).map_err(fs_err("chmod", &p))?;
        if chown {
            dir.chown(d.uid, d.gid).map_err(fs_err("chown", &p))?;
        }
    }
    Ok(())
}
