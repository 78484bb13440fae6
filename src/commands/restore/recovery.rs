//! The recovery settings: the backup's own label and tablespace map, restore_command and the
//! target in postgresql.auto.conf (with the recovery settings left in the restored files
//! commented out), then the signal file.

use super::conf::{disable_recovery_settings, quote};
use super::options::{ArchiveMode, Placement, RecoveryTarget, RestoreOptions};
use super::places::Places;
use super::restore_command::restore_command;
use super::roots::{Roots, fs_err};
use crate::error::Result;
use crate::repo::manifest::Manifest;
use std::io::{Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes every file that tells PostgreSQL how to recover.
pub fn write_recovery_files(
    m: &Manifest,
    places: &Places,
    roots: &Roots,
    opts: &RestoreOptions,
    placement: Placement,
) -> Result<()> {
    // Recovery: the backup's own label and map, then the settings, then the signal file.
    write(roots, &places.pg_path, "backup_label", &m.backup_label)?;
    if m.tablespace_map.is_some() {
        // PostgreSQL recreates pg_tblspc/<oid> from this file when recovery starts, so it must
        // name where the tablespaces are now, not where they were.
        let mut text = String::new();
        for t in &m.tablespaces {
            text.push_str(&format!("{} {}\n", t.oid, places.spc[&t.oid].display()));
        }
        write(roots, &places.pg_path, "tablespace_map", &text)?;
    }
    let conf = recovery_settings(m, opts, placement);
    rewrite_config_files(m, &places.pg_path, roots, &conf)?;
    let signal = if opts.target == RecoveryTarget::Standby {
        "standby.signal"
    } else {
        "recovery.signal"
    };
    write(roots, &places.pg_path, signal, "")
}

/// The recovery files: written without following links, the cluster owner's, and on disk.
fn write(roots: &Roots, pg_path: &Path, rel: &str, text: &str) -> Result<()> {
    let p = pg_path.join(rel);
    let mut f = roots
        .open_below(pg_path, Path::new(rel), true)
        .map_err(fs_err("open", &p))?;
    f.write_all(text.as_bytes()).map_err(fs_err("write", &p))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fs_err("chmod", &p))?;
    if let Some((uid, gid)) = roots.owner {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(fs_err("chown", &p))?;
    }
    f.sync_all().map_err(fs_err("sync", &p))
}

/// The settings appended to postgresql.auto.conf.
fn recovery_settings(m: &Manifest, opts: &RestoreOptions, placement: Placement) -> String {
    let mut conf = format!(
        "\n# Recovery settings written by pgfrost restore of backup {} on {}\nrestore_command = {}\n",
        m.label,
        crate::repo::format::now_rfc3339(),
        quote(&restore_command(
            &opts.archive_get,
            &opts.stanza,
            RestoreOptions::spool(placement).as_deref()
        ))
    );
    if opts.archive == ArchiveMode::Off {
        // After the settings of the backup's postgresql.auto.conf, so this one wins; a
        // postgresql.conf outside the data directory is read before this file too.
        conf.push_str("archive_mode = off\n");
    }
    let target = opts.target.text();
    match opts.target.kind() {
        "immediate" => conf.push_str("recovery_target = 'immediate'\n"),
        "time" => conf.push_str(&format!("recovery_target_time = {}\n", quote(target))),
        "xid" => conf.push_str(&format!("recovery_target_xid = {}\n", quote(target))),
        "lsn" => conf.push_str(&format!("recovery_target_lsn = {}\n", quote(target))),
        "name" => conf.push_str(&format!("recovery_target_name = {}\n", quote(target))),
        _ => {}
    }
    if let Some(a) = &opts.target_action {
        conf.push_str(&format!("recovery_target_action = '{a}'\n"));
    }
    if opts.target_exclusive {
        conf.push_str("recovery_target_inclusive = off\n");
    }
    if let Some(t) = &opts.timeline_given {
        conf.push_str(&format!("recovery_target_timeline = {}\n", quote(t)));
    }
    conf
}

/// Comments out the recovery settings of postgresql.conf and postgresql.auto.conf, and appends
/// `conf` to postgresql.auto.conf.
fn rewrite_config_files(m: &Manifest, pg_path: &Path, roots: &Roots, conf: &str) -> Result<()> {
    // Recovery settings an earlier restore (or the operator) left in the restored files would
    // still apply: a cluster once restored to a time would stop at that time again, promote,
    // and lose everything written since. They are commented out first, as pgBackRest does.
    // Both files are read and rewritten through handles that follow no link (fsx).
    let stamp = format!(
        "disabled by pgfrost restore of backup {} on {}",
        m.label,
        crate::repo::format::now_rfc3339()
    );
    for file in ["postgresql.conf", "postgresql.auto.conf"] {
        let p = pg_path.join(file);
        let exists = std::fs::symlink_metadata(&p).is_ok_and(|md| md.is_file());
        if !exists && file == "postgresql.conf" {
            continue;
        }
        let mut f = roots
            .open_below(pg_path, Path::new(file), false)
            .map_err(fs_err("open", &p))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut f, &mut text).map_err(fs_err("read", &p))?;
        let (mut text, disabled) = disable_recovery_settings(&text, &stamp);
        if !disabled.is_empty() {
            log::info!(
                "restore: {file}: commented out the recovery settings it held ({})",
                disabled.join(", ")
            );
        }
        if file == "postgresql.auto.conf" {
            text.push_str(conf);
        } else if disabled.is_empty() {
            continue;
        }
        f.set_len(0).map_err(fs_err("write", &p))?;
        f.seek(std::io::SeekFrom::Start(0))
            .map_err(fs_err("write", &p))?;
        f.write_all(text.as_bytes()).map_err(fs_err("write", &p))?;
        if let Some((uid, gid)) = roots.owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(fs_err("chown", &p))?;
        }
        f.sync_all().map_err(fs_err("sync", &p))?;
    }
    Ok(())
}
