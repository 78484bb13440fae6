//! Walk: lists what the backup copies, between pg_backup_start and the reads: the data
//! directory, and each tablespace's directory for this major version, under `pg_tblspc/<oid>/`.

use super::incremental::FromParent;
use crate::error::{Error, Result};
use crate::pg::layout::{self, Include, RelFile};
use crate::repo::manifest::{DirEntry, LinkEntry};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One file to back up, as the walk found it.
#[derive(Debug, Clone)]
pub(super) struct Task {
    pub rel: String,
    pub abs: PathBuf,
    /// The walk's root this file is under (an index into `Walk::roots`), and its path below it.
    pub root: usize,
    pub sub: PathBuf,
    /// What the walk saw at the path (through a link to a file, what it points to): the worker
    /// reads only that file.
    pub dev: u64,
    pub ino: u64,
    pub linked: bool,
    pub size: u64,
    pub mtime: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Set when WAL summaries say which blocks changed since the parent: read only those (and
    /// blocks past the parent's copy), take the rest from the parent's block list.
    pub from_parent: Option<FromParent>,
}

pub(super) struct Walk {
    pub tasks: Vec<Task>,
    pub dirs: Vec<DirEntry>,
    pub links: Vec<LinkEntry>,
    pub tablespaces: Vec<(u32, String)>,
    /// The directories walked, opened as the walk began: workers reach files from these
    /// without following links in between.
    pub roots: Vec<crate::fsx::Dir>,
}

/// The walk, on a blocking thread, then the test hook.
pub(super) async fn run(pg_path: &Path, major: u32) -> Result<Walk> {
    let walked = tokio::task::spawn_blocking({
        let p = pg_path.to_path_buf();
        move || walk(&p, major)
    })
    .await
    .map_err(|e| Error::internal(format!("walk failed: {e}")))??;
    after_walk_hook().await;
    Ok(walked)
}

/// Test hook: with `PGFROST_TEST_AFTER_WALK=PATH`, the backup creates `PATH.walked` after its
/// walk and waits (up to two minutes) for PATH to exist, so a test can change the data directory
/// exactly between the walk and the reads.
async fn after_walk_hook() {
    let Some(gate) = std::env::var_os("PGFROST_TEST_AFTER_WALK").map(PathBuf::from) else {
        return;
    };
    let _ = std::fs::write(gate.with_extension("walked"), "");
    for _ in 0..1200 {
        if gate.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn walk(pg_path: &Path, major: u32) -> Result<Walk> {
    let mut w = Walk {
        tasks: Vec::new(),
        dirs: Vec::new(),
        links: Vec::new(),
        tablespaces: Vec::new(),
        roots: Vec::new(),
    };
    let mut roots: Vec<(PathBuf, String)> = vec![(pg_path.to_path_buf(), String::new())];
    roots.extend(tablespaces(&mut w, pg_path, major)?);
    for (root_no, (root, prefix)) in roots.into_iter().enumerate() {
        walk_root(&mut w, root_no, &root, &prefix)?;
    }
    // Unlogged relations: keep only their init forks.
    let init: HashSet<(String, u64)> = w
        .tasks
        .iter()
        .filter_map(|t| RelFile::parse(&t.rel))
        .filter(|r| r.fork == layout::Fork::Init)
        .map(|r| (r.dir, r.relfilenode))
        .collect();
    if !init.is_empty() {
        w.tasks.retain(|t| !layout::unlogged_skip(&t.rel, &init));
    }
    Ok(w)
}

/// Records each tablespace link and returns the directories to walk below them, with the
/// prefix their files get.
fn tablespaces(w: &mut Walk, pg_path: &Path, major: u32) -> Result<Vec<(PathBuf, String)>> {
    let mut roots = Vec::new();
    let tblspc = pg_path.join("pg_tblspc");
    let Ok(rd) = std::fs::read_dir(&tblspc) else {
        return Ok(roots);
    };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_string();
        let Ok(oid) = name.parse::<u32>() else {
            continue;
        };
        let link = e.path();
        // An in-place tablespace (allow_in_place_tablespaces, which PostgreSQL's own tests
        // use) is a plain directory: the walk of the data directory copies it, and
        // pg_backup_stop leaves it out of tablespace_map.
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let target = std::fs::read_link(&link)
            .map_err(|err| Error::io("read tablespace link", &link, err))?;
        w.tablespaces.push((oid, target.display().to_string()));
        w.links.push(LinkEntry {
            path: format!("pg_tblspc/{name}"),
            target: target.display().to_string(),
        });
        // Only this major version's directory: after pg_upgrade the old one may still be there.
        let prefix = format!("PG_{major}_");
        for v in std::fs::read_dir(&target)
            .map_err(|err| Error::io("read tablespace", &target, err))?
            .filter_map(|e| e.ok())
        {
            let vname = v.file_name().to_string_lossy().to_string();
            if vname.starts_with(&prefix) {
                roots.push((v.path(), format!("pg_tblspc/{name}/{vname}")));
            }
        }
    }
    Ok(roots)
}

/// Walks one root (the data directory, or a tablespace's version directory under `prefix`).
fn walk_root(w: &mut Walk, root_no: usize, root: &Path, prefix: &str) -> Result<()> {
    w.roots
        .push(crate::fsx::Dir::open(root).map_err(|e| Error::io("open", root, e))?);
    if !prefix.is_empty() {
        let m = std::fs::metadata(root).map_err(|e| Error::io("stat", root, e))?;
        w.dirs.push(DirEntry {
            path: prefix.to_string(),
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        });
    }
    let mut it = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = it.next() {
        let entry = match entry {
            Ok(e) => e,
            // Files and directories vanish while a live cluster is being read: normal.
            Err(e)
                if e.io_error()
                    .is_some_and(|i| i.kind() == std::io::ErrorKind::NotFound) =>
            {
                continue;
            }
            Err(e) => {
                return Err(Error::storage(format!(
                    "cannot read {}: {e}",
                    root.display()
                )));
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        let sub = entry.path().strip_prefix(root).unwrap();
        let rel = if prefix.is_empty() {
            sub.to_string_lossy().to_string()
        } else {
            format!("{prefix}/{}", sub.to_string_lossy())
        };
        let sub = sub.to_path_buf();
        if let Some(Include::No | Include::EmptyDir) = visit(w, &entry, rel, root_no, sub)? {
            it.skip_current_dir();
        }
    }
    Ok(())
}

/// Records one entry of the walk. For a directory, returns whether to walk into it.
fn visit(
    w: &mut Walk,
    entry: &walkdir::DirEntry,
    rel: String,
    root_no: usize,
    sub: PathBuf,
) -> Result<Option<Include>> {
    let ft = entry.file_type();
    // A link to a file (a postgresql.conf kept elsewhere) is backed up as that file and
    // restored as a plain one: a restore never links into the source's files.
    let linked_file = ft.is_symlink()
        && !rel.starts_with("pg_tblspc/")
        && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
    if ft.is_symlink() && !linked_file {
        if !rel.starts_with("pg_tblspc/") {
            let target = std::fs::read_link(entry.path())
                .map_err(|e| Error::io("read link", entry.path(), e))?;
            w.links.push(LinkEntry {
                path: rel,
                target: target.display().to_string(),
            });
        }
        return Ok(None);
    }
    let meta = match if linked_file {
        std::fs::metadata(entry.path())
    } else {
        entry.metadata().map_err(std::io::Error::from)
    } {
        Ok(m) => m,
        Err(_) => return Ok(None),
    };
    if ft.is_dir() {
        let include = layout::include(&rel, true);
        if include != Include::No {
            w.dirs.push(DirEntry {
                path: rel,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            });
        }
        return Ok(Some(include));
    }
    if !(ft.is_file() || linked_file) || layout::include(&rel, false) != Include::Yes {
        return Ok(None);
    }
    w.tasks.push(Task {
        rel,
        abs: entry.path().to_path_buf(),
        root: root_no,
        sub,
        dev: meta.dev(),
        ino: meta.ino(),
        linked: linked_file,
        size: meta.len(),
        mtime: meta.mtime(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        from_parent: None,
    });
    Ok(None)
}
