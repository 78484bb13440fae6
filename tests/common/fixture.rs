//! A pgfrost repository with a config file, usable by the `postgres` OS user, and helpers for
//! clusters that archive into it.
#![allow(dead_code)]

use super::pg::*;
use super::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub enum Repo<'a> {
    Local,
    S3(&'a S3Server),
    Azure(&'a super::clouds::Azurite),
}

/// A repository, a pgfrost config file naming it, and a key file, all usable by `postgres`.
pub struct Archive {
    pub dir: tempfile::TempDir,
    pub cfg: PathBuf,
    pub bin: PathBuf,
    pub location: pgfrost::store::Location,
}

impl Archive {
    pub fn new(repo: Repo, extra: &[(&str, &str)]) -> Archive {
        let dir = postgres_dir();
        let d = dir.path().display().to_string();
        let mut toml = format!(
            "stanza = 'main'\nspool-path = '{d}/spool'\nkey-file = '{d}/key.json'\nlog-level = 'info'\n\
             kdf-memory = 1024\nkdf-iterations = 1\n"
        );
        let location = match repo {
            Repo::Local => {
                toml.push_str(&format!("repo = '{d}/repo'\n"));
                pgfrost::store::Location::Local(dir.path().join("repo"))
            }
            Repo::S3(s) => {
                let prefix = dir
                    .path()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                toml.push_str(&format!(
                    "repo = 's3://{}/{prefix}'\nrepo-s3-endpoint = '{}'\nrepo-s3-key = '{S3_KEY}'\nrepo-s3-key-secret = '{S3_SECRET}'\n",
                    s.bucket, s.endpoint
                ));
                s.location(&prefix)
            }
            Repo::Azure(az) => {
                let prefix = dir
                    .path()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                toml.push_str(&format!(
                    "repo = 'az://{}/{prefix}'\nrepo-azure-endpoint = '{}'\nrepo-azure-account = '{}'\nrepo-azure-key = '{}'\n",
                    az.container,
                    az.endpoint,
                    super::clouds::AZURITE_ACCOUNT,
                    super::clouds::AZURITE_KEY
                ));
                az.location(&prefix)
            }
        };
        for (k, v) in extra {
            toml.push_str(&format!("{k} = '{v}'\n"));
        }
        let cfg = dir.path().join("pgfrost.toml");
        std::fs::write(&cfg, toml).unwrap();
        give_to_postgres(&cfg);
        let a = Archive {
            dir,
            cfg,
            bin: pgfrost_for_postgres(),
            location,
        };
        for args in [&["repo-create"][..], &["key", "unlock"]] {
            let mut c = a.cmd(args);
            c.env("PGFROST_PASSPHRASE", PASS);
            let r = run(c);
            assert!(r.code == 0, "{args:?}: {r:?}");
        }
        a
    }

    /// `check` as a monitoring probe, its clock moved `after_secs` on; nothing listens on the
    /// PostgreSQL port, so the probe proves it reads the repository alone.
    pub fn probe(&self, after_secs: i64, args: &[&str]) -> Run {
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        let mut cmd = self.cmd(&all);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        cmd.env("PGFROST_TEST_CLOCK", (now + after_secs).to_string())
            .env("PGFROST_PG_PORT", "1");
        run(cmd)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = as_postgres(&self.bin);
        c.arg("--config")
            .arg(&self.cfg)
            .args(args)
            .env_remove("PGFROST_PASSPHRASE")
            .current_dir(self.dir.path());
        c
    }

    pub fn archive_command(&self) -> String {
        format!(
            "'{} --config {} archive-push %p'",
            self.bin.display(),
            self.cfg.display()
        )
    }

    pub fn restore_command(&self) -> String {
        format!(
            "'{} --config {} archive-get %f \"%p\"'",
            self.bin.display(),
            self.cfg.display()
        )
    }

    pub fn pg_args(c: &Cluster) -> Vec<String> {
        vec![
            "--pg-socket-path".into(),
            c.socket_dir.display().to_string(),
            "--pg-port".into(),
            c.port.to_string(),
            "--pg-user".into(),
            "postgres".into(),
            "--pg-path".into(),
            c.data.display().to_string(),
        ]
    }

    pub fn on(&self, c: &Cluster, args: &[&str]) -> Run {
        let mut cmd = self.cmd(args);
        cmd.args(Self::pg_args(c));
        run(cmd)
    }

    /// archive-get NAME into a scratch file; returns (exit code, bytes).
    pub fn get(&self, name: &str) -> (Run, Option<Vec<u8>>) {
        let out = self.dir.path().join("out");
        let _ = std::fs::create_dir(&out);
        give_to_postgres(&out);
        let dest = out.join(name);
        let _ = std::fs::remove_file(&dest);
        let r = run(self.cmd(&["archive-get", name, dest.to_str().unwrap()]));
        let bytes = std::fs::read(&dest).ok();
        (r, bytes)
    }

    pub fn delete_object(&self, path: &str) {
        let store = pgfrost::store::Store::open(&self.location, false).unwrap();
        rt().block_on(store.delete(path)).unwrap();
    }
}

pub fn archive_settings(a: &Archive) -> Vec<(&'static str, String)> {
    vec![
        ("archive_mode", "on".into()),
        ("archive_command", a.archive_command()),
        // Keep archived segments in pg_wal so the test can compare them with the archive.
        ("wal_keep_size", "'1GB'".into()),
        ("archive_timeout", "0".into()),
    ]
}

pub fn cluster(bin: &PgBin, a: &Archive) -> Cluster {
    let s = archive_settings(a);
    let s: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut c = Cluster::init(bin, &s);
    c.start();
    let r = a.on(&c, &["stanza-create"]);
    assert_eq!(r.code, 0, "stanza-create: {r:?}");
    c
}

pub fn status_files(c: &Cluster, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(c.wal_dir().join("archive_status"))
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(suffix)
                .map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

pub fn wait_archived(c: &Cluster) {
    let ok = wait_until(Duration::from_secs(90), || {
        status_files(c, ".ready").is_empty()
    });
    assert!(
        ok,
        "segments still waiting: {:?}\n{}",
        status_files(c, ".ready"),
        c.log_tail(30)
    );
}

/// Writes some WAL and switches segment, `n` times.
pub fn switch_segments(c: &Cluster, n: usize) {
    c.sql("CREATE TABLE IF NOT EXISTS churn(i int, t text)");
    for i in 0..n {
        c.sql(&format!("INSERT INTO churn SELECT g, repeat('x', 100) FROM generate_series(1, 2000) g; SELECT pg_switch_wal(); -- {i}"));
    }
}

pub fn segments(names: &[String]) -> Vec<String> {
    names.iter().filter(|n| n.len() == 24).cloned().collect()
}

/// Takes a backup with an immediate checkpoint and returns its JSON report.
pub fn backup(a: &Archive, c: &Cluster, kind: &str) -> serde_json::Value {
    backup_with(a, c, kind, &[])
}

/// A backup with extra environment variables (the test clock, say).
pub fn backup_with(
    a: &Archive,
    c: &Cluster,
    kind: &str,
    env: &[(&str, &str)],
) -> serde_json::Value {
    backup_run(a, c, kind, &[], env).1
}

/// A backup that must succeed, with extra flags and environment: the run (for its log on
/// stderr) and its JSON output.
pub fn backup_run(
    a: &Archive,
    c: &Cluster,
    kind: &str,
    flags: &[&str],
    env: &[(&str, &str)],
) -> (Run, serde_json::Value) {
    let mut cmd = a.cmd(&[
        "backup",
        "--type",
        kind,
        "--start-fast",
        "y",
        "--output",
        "json",
    ]);
    cmd.args(Archive::pg_args(c)).args(flags);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let r = run(cmd);
    assert_eq!(r.code, 0, "backup {kind}: {r:?}\n{}", c.log_tail(20));
    let v = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    (r, v)
}

/// Waits (up to two minutes) until a recovering cluster has finished recovery and promoted.
pub fn wait_promoted(c: &Cluster) -> bool {
    wait_until(Duration::from_secs(120), || {
        c.try_sql("SELECT pg_is_in_recovery()").as_deref() == Ok("f")
    })
}

/// `restore --pg-path DATA --target-action promote` and `extra`, as postgres; the run.
pub fn restore_promoted(a: &Archive, data: &std::path::Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "restore",
        "--pg-path",
        data.to_str().unwrap(),
        "--target-action",
        "promote",
    ];
    args.extend_from_slice(extra);
    run(a.cmd(&args))
}

/// Restores `label` into a fresh directory, to the end of that backup, starts it, and returns the
/// running cluster.
pub fn restore_at(
    a: &Archive,
    bin: &PgBin,
    label: &str,
    extra: &[&str],
) -> (Cluster, tempfile::TempDir) {
    let dir = postgres_dir();
    let data = dir.path().join("data");
    let mut args = vec![
        "restore",
        "--set",
        label,
        "--pg-path",
        data.to_str().unwrap(),
        "--type",
        "immediate",
        "--target-action",
        "promote",
    ];
    args.extend_from_slice(extra);
    let r = run(a.cmd(&args));
    assert_eq!(r.code, 0, "restore {label}: {r:?}");
    assert!(
        data.join("global/pg_control").exists()
            && data.join("backup_label").exists()
            && data.join("recovery.signal").exists()
    );
    let mut c = Cluster::from_data_dir(bin, &data, &[("archive_mode", "off")]);
    c.start();
    let ok = wait_promoted(&c);
    assert!(
        ok,
        "restored {label} did not finish recovery\n{}",
        c.log_tail(40)
    );
    (c, dir)
}
