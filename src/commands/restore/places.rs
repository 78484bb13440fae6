//! Where a restore puts what lies outside the data directory (tablespaces, the directories of
//! the data directory's links), and the checks every such place passes before anything is
//! written.

use super::options::{Placement, RestoreOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::repo::manifest::{LinkEntry, Manifest};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Where the restore puts things: the data directory, each tablespace's location, and the
/// directories the data directory's links point to (links restored as plain directories are
/// not here: what is under them goes inside the data directory).
pub struct Places {
    pub pg_path: PathBuf,
    pub spc: HashMap<u32, PathBuf>,
    pub links: HashMap<String, PathBuf>,
}

impl Places {
    /// The path a manifest path lands on.
    pub fn target_of(&self, rel: &str) -> PathBuf {
        let (root, sub) = self.locate(rel);
        if sub.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(sub)
        }
    }

    /// The place a manifest path lands in (the data directory, a tablespace's or a link's
    /// directory) and the path below it.
    pub fn locate(&self, rel: &str) -> (&Path, PathBuf) {
        let under = |prefix: &str| -> Option<PathBuf> {
            let sub = rel.strip_prefix(prefix)?;
            match sub.strip_prefix('/') {
                Some(sub) => Some(PathBuf::from(sub)),
                None => sub.is_empty().then(PathBuf::new),
            }
        };
        if let Some(rest) = rel.strip_prefix("pg_tblspc/") {
            let oid = rest.split('/').next().unwrap_or(rest);
            if let Some(loc) = oid.parse::<u32>().ok().and_then(|o| self.spc.get(&o)) {
                return (loc, under(&format!("pg_tblspc/{oid}")).unwrap_or_default());
            }
        }
        for (link, loc) in &self.links {
            if let Some(p) = under(link) {
                return (loc, p);
            }
        }
        (&self.pg_path, PathBuf::from(rel))
    }

    /// Every directory outside the data directory that the restore writes into.
    pub fn outside(&self) -> impl Iterator<Item = &PathBuf> {
        self.spc.values().chain(self.links.values())
    }
}

/// Where each link of the data directory now points, or None when it is restored as a plain
/// directory: for the report.
pub type LinkReport = BTreeMap<String, Option<String>>;

pub fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut r| r.next().is_none())
        .unwrap_or(true)
}

/// The data directory's links, tablespaces aside.
pub fn data_links(m: &Manifest) -> Vec<&LinkEntry> {
    m.links
        .iter()
        .filter(|l| !l.path.starts_with("pg_tblspc/"))
        .collect()
}

/// Decides where tablespaces and links go, and checks every such place before anything is
/// written.
pub fn place(
    m: &Manifest,
    pg_path: &Path,
    placement: Placement,
    opts: &RestoreOptions,
) -> Result<(Places, LinkReport)> {
    let spc = place_tablespaces(m, pg_path, placement, opts)?;
    let (links, report) = place_links(m, pg_path, placement, opts)?;
    Ok((
        Places {
            pg_path: pg_path.to_path_buf(),
            spc,
            links,
        },
        report,
    ))
}

/// Each tablespace's location: mapped, in the scratch directory, or where it was.
fn place_tablespaces(
    m: &Manifest,
    pg_path: &Path,
    placement: Placement,
    opts: &RestoreOptions,
) -> Result<HashMap<u32, PathBuf>> {
    for (oid, _) in &opts.tablespace_map {
        if !m.tablespaces.iter().any(|t| t.oid == *oid) {
            return Err(Error::config(format!(
                "backup {} has no tablespace with OID {oid}",
                m.label
            ))
            .hint(tablespace_list(m)));
        }
    }
    let mut spc: HashMap<u32, PathBuf> = HashMap::new();
    for t in &m.tablespaces {
        let mapped = opts.tablespace_map.iter().find(|(o, _)| *o == t.oid);
        let loc = match (mapped, placement) {
            (_, Placement::Scratch(dir, _)) => dir.join("tablespaces").join(t.oid.to_string()),
            (Some((_, dir)), _) => dir.clone(),
            (None, Placement::Operator) => PathBuf::from(&t.location),
        };
        if let Some(why) = foreign_cluster(&loc, pg_path) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "tablespace {} ({}) cannot go to {}: {why}",
                    t.name,
                    t.oid,
                    loc.display()
                ),
            )
            .hint("map it elsewhere with --tablespace-map OID=DIR"));
        }
        if !dir_is_empty(&loc) && !opts.overwrite.allowed() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "tablespace {} ({}) location {} is not empty",
                    t.name,
                    t.oid,
                    loc.display()
                ),
            )
            .hint("map it elsewhere with --tablespace-map OID=DIR, or give --delta or --force"));
        }
        spc.insert(t.oid, loc);
    }
    Ok(spc)
}

/// Where each link of the data directory points after the restore (only those that stay
/// links), and the report of them all.
fn place_links(
    m: &Manifest,
    pg_path: &Path,
    placement: Placement,
    opts: &RestoreOptions,
) -> Result<(HashMap<String, PathBuf>, LinkReport)> {
    let links = data_links(m);
    let names = || {
        if links.is_empty() {
            "it has none besides tablespaces".to_string()
        } else {
            format!(
                "its links: {}",
                links
                    .iter()
                    .map(|l| l.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    for (path, _) in &opts.link_map {
        if !links.iter().any(|l| l.path == *path) {
            return Err(
                Error::config(format!("backup {} has no link {path} to map", m.label))
                    .hint(names()),
            );
        }
    }
    let mut linked: HashMap<String, PathBuf> = HashMap::new();
    let mut report = BTreeMap::new();
    for l in &links {
        let to = link_target(l, pg_path, placement, opts)?;
        if to.is_none() {
            log::info!(
                "restore: link {} (to {}) restored as a plain directory{}",
                l.path,
                l.target,
                match placement {
                    Placement::Operator => format!("; map it with --link-map {}=DIR", l.path),
                    Placement::Scratch(..) => String::new(),
                }
            );
        }
        report.insert(l.path.clone(), to.as_ref().map(|d| d.display().to_string()));
        if let Some(d) = to {
            linked.insert(l.path.clone(), d);
        }
    }
    Ok((linked, report))
}

/// Where link `l` points after the restore, checked; None when it becomes a plain directory.
fn link_target(
    l: &LinkEntry,
    pg_path: &Path,
    placement: Placement,
    opts: &RestoreOptions,
) -> Result<Option<PathBuf>> {
    let here = pg_path.join(&l.path);
    let mapped = opts.link_map.iter().find(|(p, _)| *p == l.path);
    Ok(match (mapped, placement) {
        (Some((_, dir)), Placement::Operator) => {
            if let Some(why) = foreign_cluster(dir, pg_path) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("link {} cannot point to {}: {why}", l.path, dir.display()),
                )
                .hint(format!(
                    "map it to a directory of the restored cluster's own (--link-map {}=DIR), or leave it out to restore it as a plain directory",
                    l.path
                )));
            }
            if !dir_is_empty(dir)
                && !opts.overwrite.allowed()
                && std::fs::read_link(&here).ok().as_deref() != Some(dir.as_path())
            {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("link {} target {} is not empty", l.path, dir.display()),
                )
                .hint("map it to an empty directory, or give --delta or --force"));
            }
            Some(dir.clone())
        }
        // Over the cluster's own data directory, a link already pointing where the backup
        // recorded is the operator's layout, kept as it is.
        (None, Placement::Operator)
            if opts.overwrite.allowed()
                && std::fs::read_link(&here).ok().as_deref() == Some(Path::new(&l.target)) =>
        {
            Some(PathBuf::from(&l.target))
        }
        _ => None,
    })
}

fn tablespace_list(m: &Manifest) -> String {
    if m.tablespaces.is_empty() {
        return format!("backup {} has no tablespaces", m.label);
    }
    format!(
        "its tablespaces: {}",
        m.tablespaces
            .iter()
            .map(|t| format!("{} ({})", t.oid, t.name))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// What a restored cluster would write into if `dir` (a link's or a tablespace's new place)
/// lies in, or is, the data or WAL directory of a cluster other than the one restored into
/// `pg_path`: a restore from production must never reach into production.
pub fn foreign_cluster(dir: &Path, pg_path: &Path) -> Option<String> {
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    let own = canon(pg_path);
    // The WAL directory the target's pg_wal already is or links to (a --delta restore over the
    // cluster's own data directory) is this cluster's.
    let own_wal = canon(&pg_path.join("pg_wal"));
    for a in dir.ancestors().filter(|a| a.exists()) {
        let c = canon(a);
        if c.is_some() && c == own {
            return None;
        }
        if a.join("PG_VERSION").is_file() && a.join("global").is_dir() {
            return Some(format!(
                "{} is the data directory of another cluster",
                a.display()
            ));
        }
        if a.join("archive_status").is_dir() && (c.is_none() || c != own_wal) {
            return Some(format!(
                "{} is the WAL directory of another cluster",
                a.display()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_follow_tablespaces_and_mapped_links() {
        let p = Places {
            pg_path: "/data".into(),
            spc: HashMap::from([(16400, PathBuf::from("/spc"))]),
            links: HashMap::from([("pg_wal".to_string(), PathBuf::from("/wal"))]),
        };
        assert_eq!(p.target_of("base/1/1259"), Path::new("/data/base/1/1259"));
        assert_eq!(p.target_of("pg_tblspc/16400"), Path::new("/spc"));
        assert_eq!(
            p.target_of("pg_tblspc/16400/PG_15_1/5/16401"),
            Path::new("/spc/PG_15_1/5/16401")
        );
        assert_eq!(
            p.target_of("pg_wal/archive_status"),
            Path::new("/wal/archive_status")
        );
        assert_eq!(p.target_of("pg_wal"), Path::new("/wal"));
        assert_eq!(p.target_of("pg_walx"), Path::new("/data/pg_walx"));
    }

    #[test]
    fn another_clusters_directories_are_foreign() {
        let d = tempfile::tempdir().unwrap();
        let other = d.path().join("other");
        std::fs::create_dir_all(other.join("global")).unwrap();
        std::fs::write(other.join("PG_VERSION"), "15\n").unwrap();
        let wal = d.path().join("wal");
        std::fs::create_dir_all(wal.join("archive_status")).unwrap();
        let mine = d.path().join("mine");
        assert!(foreign_cluster(&other.join("pg_wal"), &mine).is_some());
        assert!(foreign_cluster(&other, &mine).is_some());
        assert!(foreign_cluster(&wal, &mine).is_some());
        assert!(foreign_cluster(&wal.join("sub/deeper"), &mine).is_some());
        assert!(foreign_cluster(&d.path().join("new"), &mine).is_none());
        // The WAL directory the target's own pg_wal links to is its own.
        std::fs::create_dir_all(&mine).unwrap();
        std::os::unix::fs::symlink(&wal, mine.join("pg_wal")).unwrap();
        assert!(foreign_cluster(&wal, &mine).is_none());
        // So is anything inside the target itself.
        assert!(foreign_cluster(&mine.join("pg_wal2"), &mine).is_none());
    }
}
