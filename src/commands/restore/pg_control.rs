//! The last step: every directory entry on disk, then `global/pg_control`, the file that makes
//! the directory a cluster PostgreSQL will start.

use super::files::{Job, PG_CONTROL, Shared, restore_file};
use super::places::{Places, data_links};
use super::roots::fs_err;
use crate::error::{Error, Result};
use crate::repo::manifest::Manifest;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Flushes the directory entries of everything written.
pub fn sync_dirs(m: &Manifest, places: &Places, sh: &Shared) -> Result<()> {
    let pg_path = &places.pg_path;
    // Everything on disk before pg_control: the files were flushed as they were written, the
    // recovery files just above; their directory entries are flushed here.
    let mut dirs: Vec<(&Path, PathBuf)> = m.dirs.iter().map(|d| places.locate(&d.path)).collect();
    dirs.push((pg_path, PathBuf::new()));
    dirs.extend(places.outside().map(|p| (p.as_path(), PathBuf::new())));
    // The directories links became (those that point elsewhere are in `outside`).
    dirs.extend(
        data_links(m)
            .iter()
            .filter(|l| !places.links.contains_key(&l.path))
            .map(|l| (pg_path.as_path(), PathBuf::from(&l.path))),
    );
    for (root, sub) in &dirs {
        sh.roots
            .dir_below(root, sub, false)
            .and_then(|d| d.sync())
            .map_err(fs_err("sync", &root.join(sub)))?;
    }
    Ok(())
}

/// Writes pg_control and flushes it and its directory.
pub async fn write_pg_control(m: &Manifest, places: &Places, sh: &Arc<Shared>) -> Result<()> {
    let ctl = m
        .files
        .iter()
        .find(|f| f.path == PG_CONTROL)
        .ok_or_else(|| Error::corrupt(format!("backup {} has no {PG_CONTROL}", m.label)))?;
    let pg_path = &places.pg_path;
    let ctl_job = Job::below(
        ctl,
        pg_path.join(PG_CONTROL),
        pg_path,
        PathBuf::from(PG_CONTROL),
    );
    let sh2 = Arc::clone(sh);
    tokio::task::spawn_blocking(move || -> Result<()> {
        restore_file(&sh2, &ctl_job, &mut Vec::new())?
            .sync_all()
            .map_err(|e| Error::io("sync", &ctl_job.path, e))?;
        let g = ctl_job.path.parent().unwrap();
        sh2.roots
            .dir_below(&ctl_job.root, Path::new("global"), false)
            .and_then(|d| d.sync())
            .map_err(|e| Error::io("sync", g, e))
    })
    .await
    .map_err(|e| Error::internal(format!("restore failed: {e}")))?
}
