//! What in a data directory a backup copies, following PostgreSQL's documentation on base
//! backups ("Making a Base Backup Using the Low Level API") and what pg_basebackup leaves out.

/// Directories kept (empty) but whose contents are never copied: they are recreated, rebuilt
/// or meaningless after a restore.
pub const EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_xlog",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
    "pg_replslot",
];

/// Files never copied, in any directory of the cluster.
const SKIP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    // Written by restore itself (from the backup's own label and map), and recovery settings are
    // the restore's business, not the source's.
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "recovery.signal",
    "standby.signal",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    // Relation cache init files are rebuilt at startup.
    "pg_internal.init",
];

/// How a path relative to the data directory is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    Yes,
    No,
    /// A directory that is kept but not descended into.
    EmptyDir,
}

/// Decides for a path relative to the data directory (`/`-separated). `is_dir` tells files from
/// directories.
pub fn include(rel: &str, is_dir: bool) -> Include {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    if is_dir {
        if EMPTY_DIRS.contains(&rel) || name == "pgsql_tmp" || name.starts_with("pgsql_tmp") {
            return Include::EmptyDir;
        }
        return Include::Yes;
    }
    if SKIP_FILES.contains(&name) || name.starts_with("pgsql_tmp") {
        return Include::No;
    }
    if let Some(rel_file) = RelFile::parse(rel)
        && rel_file.temp
    {
        return Include::No;
    }
    Include::Yes
}

/// A relation data file: `<dir>/<relfilenode>[_fork][.segno]` under `global/`, `base/<db>/` or
/// `pg_tblspc/<oid>/<version dir>/<db>/`; temporary relations are `t<backend>_<relfilenode>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelFile {
    /// Directory part (`base/5`), to group a relation's forks.
    pub dir: String,
    pub relfilenode: u64,
    pub fork: Fork,
    pub segno: u32,
    pub temp: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    Main,
    Fsm,
    Vm,
    Init,
}

impl RelFile {
    pub fn parse(rel: &str) -> Option<RelFile> {
        let (dir, name) = rel.rsplit_once('/')?;
        let parts: Vec<&str> = dir.split('/').collect();
        let in_db = match parts.as_slice() {
            ["global"] => true,
            ["base", db] => db.bytes().all(|c| c.is_ascii_digit()),
            ["pg_tblspc", oid, _version, db] => {
                oid.bytes().all(|c| c.is_ascii_digit()) && db.bytes().all(|c| c.is_ascii_digit())
            }
            _ => false,
        };
        if !in_db {
            return None;
        }
        let (temp, name) = match name.strip_prefix('t') {
            Some(rest) => (true, rest.split_once('_')?.1),
            None => (false, name),
        };
        let (name, segno) = match name.split_once('.') {
            Some((n, s)) => (n, s.parse().ok()?),
            None => (name, 0),
        };
        let (node, fork) = match name.split_once('_') {
            Some((n, "fsm")) => (n, Fork::Fsm),
            Some((n, "vm")) => (n, Fork::Vm),
            Some((n, "init")) => (n, Fork::Init),
            Some(_) => return None,
            None => (name, Fork::Main),
        };
        if node.is_empty() || !node.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        Some(RelFile {
            dir: dir.to_string(),
            relfilenode: node.parse().ok()?,
            fork,
            segno,
            temp,
        })
    }

    /// The block number of the first block of this file (segments continue numbering).
    pub fn first_block(&self) -> u32 {
        self.segno.wrapping_mul(super::page::RELSEG_BLOCKS)
    }
}

/// Unlogged relations are identified by their init fork; every other fork of such a relation
/// is left out (PostgreSQL resets them from the init fork at the end of recovery).
pub fn unlogged_skip(rel: &str, init_forks: &std::collections::HashSet<(String, u64)>) -> bool {
    match RelFile::parse(rel) {
        Some(r) if r.fork != Fork::Init => init_forks.contains(&(r.dir.clone(), r.relfilenode)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert_eq!(include("pg_wal", true), Include::EmptyDir);
        assert_eq!(include("base/5/pgsql_tmp", true), Include::EmptyDir);
        assert_eq!(include("base", true), Include::Yes);
        assert_eq!(include("postmaster.pid", false), Include::No);
        assert_eq!(include("global/pg_internal.init", false), Include::No);
        assert_eq!(include("base/5/t3_16384", false), Include::No);
        assert_eq!(include("base/5/16384", false), Include::Yes);
        assert_eq!(include("PG_VERSION", false), Include::Yes);
        assert_eq!(include("postgresql.auto.conf", false), Include::Yes);
    }

    #[test]
    fn relation_files() {
        let r = RelFile::parse("base/5/16384_vm.3").unwrap();
        assert_eq!(
            (r.relfilenode, r.fork, r.segno, r.temp),
            (16384, Fork::Vm, 3, false)
        );
        assert_eq!(r.first_block(), 3 * 131072);
        assert!(RelFile::parse("base/5/t12_16384").unwrap().temp);
        assert!(RelFile::parse("global/1262").is_some());
        assert!(RelFile::parse("pg_tblspc/16500/PG_15_202209061/5/16501.1").is_some());
        assert!(RelFile::parse("base/5/PG_VERSION").is_none());
        assert!(RelFile::parse("base/5/16384_foo").is_none());
        assert!(RelFile::parse("pg_xact/0000").is_none());
        let mut init = std::collections::HashSet::new();
        init.insert(("base/5".to_string(), 16390));
        assert!(unlogged_skip("base/5/16390", &init));
        assert!(unlogged_skip("base/5/16390_fsm", &init));
        assert!(!unlogged_skip("base/5/16390_init", &init));
        assert!(!unlogged_skip("base/5/16391", &init));
    }
}
