//! What the data directory itself says: `global/pg_control` and `PG_VERSION`.

use crate::error::{Error, Result};
use std::path::Path;

/// The version-independent head of ControlFileData: system_identifier u64, pg_control_version
/// u32, catalog_version_no u32. (Later fields move between versions; nothing here needs them.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    pub system_id: u64,
    pub control_version: u32,
    pub catalog_version: u32,
}

pub fn parse_control(b: &[u8]) -> Option<Control> {
    if b.len() < 16 {
        return None;
    }
    Some(Control {
        system_id: u64::from_le_bytes(b[0..8].try_into().unwrap()),
        control_version: u32::from_le_bytes(b[8..12].try_into().unwrap()),
        catalog_version: u32::from_le_bytes(b[12..16].try_into().unwrap()),
    })
}

pub fn read_control(pg_path: &Path) -> Result<Control> {
    let p = pg_path.join("global/pg_control");
    let b = std::fs::read(&p).map_err(|e| {
        Error::config(format!("cannot read {}: {e}", p.display()))
            .hint("check pg-path: it must name the cluster's data directory")
    })?;
    parse_control(&b)
        .ok_or_else(|| Error::corrupt(format!("{} is truncated ({} bytes)", p.display(), b.len())))
}

/// The major version from `PG_VERSION` ("15\n").
pub fn read_major(pg_path: &Path) -> Result<u32> {
    let p = pg_path.join("PG_VERSION");
    let s = std::fs::read_to_string(&p).map_err(|e| {
        Error::config(format!("cannot read {}: {e}", p.display()))
            .hint("check pg-path: it must name the cluster's data directory")
    })?;
    s.trim().parse().map_err(|_| {
        Error::corrupt(format!(
            "{} holds '{}', not a major version",
            p.display(),
            s.trim()
        ))
    })
}
