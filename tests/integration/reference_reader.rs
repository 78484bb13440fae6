//! The independent Python reader in proto/reference/ (written from docs/format.md alone) must
//! accept the test vectors and read back what the binary writes. Python with the packages of
//! proto/reference/requirements.txt is required: the tests fail, not skip, without them.

use crate::common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL: &str = "bash .ci/setup (a virtual environment in /opt/pgfrost/venv; or PY -m pip install -r proto/reference/requirements.txt)";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> String {
    common::python()
}

/// Fails the test (with the install hint) unless the interpreter and every module import.
fn require_python() -> String {
    let py = python();
    let out = Command::new(&py)
        .args([
            "-c",
            "import sys; assert sys.version_info >= (3, 11), sys.version\n\
             import blake3, nacl.bindings, zstandard, argon2.low_level, jsonschema",
        ])
        .output();
    match out {
        Err(e) => panic!(
            "cannot run Python interpreter {py:?} ({e}); install Python 3.11+ and then: {INSTALL} \
             (or set PGFROST_PYTHON)"
        ),
        Ok(o) if !o.status.success() => panic!(
            "Python {py:?} lacks what proto/reference needs; run: {INSTALL}\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Ok(_) => py,
    }
}

fn run_py(mut c: Command) -> Run {
    c.current_dir(root());
    run(c)
}

#[test]
fn reference_reader_accepts_the_vectors() {
    let py = require_python();
    let mut c = Command::new(py);
    c.arg(root().join("proto/reference/check_vectors.py"))
        .arg(root().join("proto/vectors/v2.json"));
    let r = run_py(c);
    assert_eq!(r.code, 0, "check_vectors.py failed:\n{r:?}");
    assert!(!r.stdout.contains("FAIL"), "{r:?}");
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough to be stored raw.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

#[test]
fn reference_reader_rebuilds_what_pgfrost_wrote() {
    let py = require_python();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let src = tmp.path().join("src");
    let repo = tmp.path().join("repo");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&home).unwrap();

    // A few files: random (stored raw), compressible text, zeros, an unaligned tail, repeated
    // content within and across files (dedup), and an empty file.
    let random = noise(7, 200 * 1024);
    let text: Vec<u8> = b"pgfrost reference reader round trip\n"
        .iter()
        .copied()
        .cycle()
        .take(50_000)
        .collect();
    let mut mixed = random[..64 * 1024].to_vec();
    mixed.extend_from_slice(&text[..10_000]);
    mixed.extend_from_slice(&random[..16 * 1024]);
    write(&src.join("random.bin"), &random);
    write(&src.join("text.txt"), &text);
    write(&src.join("sub/mixed.bin"), &mixed);
    write(&src.join("sub/copy-of-random.bin"), &random);
    write(&src.join("sub/deeper/zeros.bin"), &vec![0u8; 3 * 8192 + 5]);
    write(&src.join("sub/deeper/small.txt"), b"seven\n");
    write(&src.join("empty"), b"");

    let mut c = pgfrost(&home);
    c.arg("repo-create")
        .arg("--repo")
        .arg(&repo)
        .env("PGFROST_PASSPHRASE", PASS);
    let r = run(c);
    assert_eq!(r.code, 0, "repo-create: {r:?}");

    let mut c = pgfrost(&home);
    c.args(["dev", "put-dir", "--repo"])
        .arg(&repo)
        .args(["--stanza", "main"])
        .arg(&src)
        .env("PGFROST_PASSPHRASE", PASS);
    let r = run(c);
    assert_eq!(r.code, 0, "put-dir: {r:?}");
    let catalog = tmp.path().join("catalog.json");
    std::fs::write(&catalog, &r.stdout).unwrap();

    // Dedup actually happened: fewer distinct blocks than block references.
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("catalog is JSON");
    let files = v["catalog"]["files"].as_array().expect("catalog.files");
    let refs: Vec<&str> = files
        .iter()
        .flat_map(|f| f["blocks"].as_array().unwrap())
        .map(|b| b.as_str().unwrap())
        .collect();
    let distinct: std::collections::HashSet<_> = refs.iter().collect();
    assert!(distinct.len() < refs.len(), "no dedup in {refs:?}");

    let mut c = Command::new(&py);
    c.arg(root().join("proto/reference/read_repo.py"))
        .arg("--repo")
        .arg(&repo)
        .args(["--stanza", "main", "--catalog"])
        .arg(&catalog)
        .arg("--out")
        .arg(&out)
        .env("PGFROST_PASSPHRASE", PASS);
    let r = run_py(c);
    assert_eq!(r.code, 0, "read_repo.py: {r:?}");

    let sources = files_under(&src);
    let rebuilt = files_under(&out);
    let rel = |base: &Path, v: &[PathBuf]| -> Vec<PathBuf> {
        v.iter()
            .map(|p| p.strip_prefix(base).unwrap().to_path_buf())
            .collect()
    };
    assert_eq!(
        rel(&src, &sources),
        rel(&out, &rebuilt),
        "file lists differ"
    );
    for s in &sources {
        let o = out.join(s.strip_prefix(&src).unwrap());
        assert!(
            std::fs::read(s).unwrap() == std::fs::read(&o).unwrap(),
            "{} differs after the round trip",
            o.display()
        );
    }

    // A wrong passphrase is reported as such (exit 3), not as corruption.
    let mut c = Command::new(&py);
    c.arg(root().join("proto/reference/read_repo.py"))
        .arg("--repo")
        .arg(&repo)
        .args(["--stanza", "main", "--catalog"])
        .arg(&catalog)
        .arg("--out")
        .arg(tmp.path().join("out2"))
        .env("PGFROST_PASSPHRASE", "not the passphrase");
    let r = run_py(c);
    assert_eq!(r.code, 3, "wrong passphrase: {r:?}");
    assert!(r.stderr.contains("wrong passphrase"), "{r:?}");
}
