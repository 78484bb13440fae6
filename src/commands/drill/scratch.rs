//! The drill's scratch directory and the PostgreSQL binaries it runs there.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The PostgreSQL binaries of `major`: --pg-bin (`given`), else the usual Debian and RPM
/// locations, else whatever pg_ctl on PATH is, if it is that major.
pub fn find_bin(given: Option<&Path>, major: u32) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let candidates = [
        format!("/usr/lib/postgresql/{major}/bin"),
        format!("/usr/pgsql-{major}/bin"),
    ];
    for c in &candidates {
        if Path::new(c).join("pg_ctl").is_file() {
            return Ok(PathBuf::from(c));
        }
    }
    if let Ok(out) = Command::new("pg_ctl").arg("--version").output()
        && String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.split('.').next())
            == Some(&major.to_string())
        && let Ok(path) = Command::new("sh")
            .args(["-c", "command -v pg_ctl"])
            .output()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&path.stdout).trim());
        return Ok(p.parent().unwrap_or(Path::new("/usr/bin")).to_path_buf());
    }
    Err(Error::config(format!(
        "cannot find the binaries of PostgreSQL {major} (looked in {})",
        candidates.join(", ")
    ))
    .hint("give --pg-bin DIR, the directory holding pg_ctl and postgres of that version"))
}

/// A directory of the drill's own: the restored data directory, its tablespaces and links, the
/// archive-get queue, the server's socket and log.
pub struct Scratch {
    pub dir: PathBuf,
    pub data: PathBuf,
    pub bin: PathBuf,
}

impl Scratch {
    /// A new scratch directory below `base` (made if absent), named for this process and time.
    pub fn create(base: &Path, bin: PathBuf) -> Result<Scratch> {
        std::fs::create_dir_all(base).map_err(|e| Error::io("create", base, e))?;
        let dir = base.join(format!(
            "pgfrost-drill-{}-{}",
            std::process::id(),
            crate::repo::format::now_rfc3339().replace(':', "")
        ));
        std::fs::create_dir(&dir).map_err(|e| Error::io("create", &dir, e))?;
        Ok(Scratch {
            data: dir.join("data"),
            dir,
            bin,
        })
    }

    pub fn pg_ctl(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(args)
            .output()
    }

    /// Stops PostgreSQL (fast, then immediate) and removes the directory. Idempotent.
    pub fn cleanup(&self) {
        if self.data.join("postmaster.pid").exists() {
            let ok = self
                .pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"])
                .map(|o| o.status.success())
                .unwrap_or(false);
            if !ok {
                let _ = self.pg_ctl(&["-m", "immediate", "-w", "-t", "30", "stop"]);
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log::warn!("drill: could not remove {}: {e}", self.dir.display());
        }
    }
}
