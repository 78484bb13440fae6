//! A restore is a cluster of its own: it never writes into the cluster it came from (its WAL
//! directory behind a link) nor, with `--archive-mode off`, into the stanza; its restore_command
//! works with every option archive-get takes, from the config file or the environment; and a
//! restore run as root leaves a directory the cluster's owner starts as it is.

use crate::common;

use common::fixture::*;
use common::pg::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A cluster whose pg_wal is a link to a directory outside the data directory (WAL on a disk
/// of its own), and pg_ident.conf a link to a file outside it, archiving into `a`. Returns it
/// running, with that WAL directory.
fn cluster_with_links(bin: &PgBin, a: &Archive) -> (Cluster, PathBuf) {
    let s = archive_settings(a);
    let s: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut c = Cluster::init(bin, &s);
    let wal = c.root.join("wal-disk");
    std::fs::rename(c.data.join("pg_wal"), &wal).unwrap();
    std::os::unix::fs::symlink(&wal, c.data.join("pg_wal")).unwrap();
    let ident = c.root.join("pg_ident.conf");
    std::fs::rename(c.data.join("pg_ident.conf"), &ident).unwrap();
    std::os::unix::fs::symlink(&ident, c.data.join("pg_ident.conf")).unwrap();
    if is_root() {
        let (uid, gid) = postgres_ids();
        for l in ["pg_wal", "pg_ident.conf"] {
            std::os::unix::fs::lchown(c.data.join(l), Some(uid), Some(gid)).unwrap();
        }
    }
    c.start();
    let r = a.on(&c, &["stanza-create"]);
    assert_eq!(r.code, 0, "stanza-create: {r:?}");
    (c, wal)
}

fn is_empty_or_absent(p: &Path) -> bool {
    std::fs::read_dir(p).map_or(true, |mut d| d.next().is_none())
}

/// Starts a restored cluster with nothing but what the restore wrote (no archive_mode
/// override from the harness) and waits for its promotion.
fn start_restored(bin: &PgBin, data: &Path) -> Cluster {
    let mut rc = Cluster::from_data_dir(bin, data, &[]);
    rc.start();
    assert!(
        wait_promoted(&rc),
        "the restored cluster did not finish recovery\n{}",
        rc.log_tail(40)
    );
    rc
}

/// Writes on a promoted cluster and fills and switches a few WAL segments, so that whatever it
/// would archive or write in its WAL directory is written.
fn write_on(rc: &Cluster) {
    for i in 0..3 {
        rc.sql(&format!(
            "CREATE TABLE IF NOT EXISTS written_after_restore(i int); \
             INSERT INTO written_after_restore SELECT g FROM generate_series(1, 20000) g; \
             SELECT pg_switch_wal(); -- {i}"
        ));
    }
    rc.sql("CHECKPOINT");
}

#[test]
fn a_linked_pg_wal_is_restored_inside_the_target_and_the_source_wal_is_untouched() {
    for bin in versions_under_test() {
        let a = Archive::new(Repo::Local, &[]);
        let (mut c, wal) = cluster_with_links(&bin, &a);
        c.pgbench_init(1);
        backup(&a, &c, "full");
        c.pgbench(&["-t", "200", "-c", "2"]);
        switch_segments(&c, 2);
        assert_eq!(a.on(&c, &["check"]).code, 0);
        let rows = c.sql("SELECT count(*) FROM churn");
        c.stop();
        let before = snapshot(&wal);
        assert!(
            before.keys().any(|k| k.starts_with("00000001")),
            "{before:?}"
        );

        // Mapped onto the source's live WAL directory: refused, nothing written.
        let dir = postgres_dir();
        let data = dir.path().join("data");
        let map = format!("pg_wal={}", wal.display());
        let r = restore_promoted(&a, &data, &["--link-map", &map]);
        assert_eq!(r.code, 17, "{r:?}");
        assert!(
            r.stderr.contains("WAL directory of another cluster") && r.stderr.contains("HINT:"),
            "{r:?}"
        );
        assert!(
            is_empty_or_absent(&data),
            "the refused restore wrote into {data:?}"
        );
        // Bad maps: exit 3, nothing written.
        for bad in [
            "pg_xact=/tmp/elsewhere",
            "pg_wal=relative/dir",
            "../pg_wal=/tmp/x",
        ] {
            let r = restore_promoted(&a, &data, &["--link-map", bad]);
            assert_eq!(r.code, 3, "{bad}: {r:?}");
            assert!(r.stderr.contains("HINT:"), "{bad}: {r:?}");
            assert!(is_empty_or_absent(&data), "{bad}: wrote into {data:?}");
        }

        // Unmapped: a plain directory inside the target.
        let r = restore_promoted(&a, &data, &["--archive-mode", "off", "--output", "json"]);
        assert_eq!(r.code, 0, "{r:?}");
        let out: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(out["links"]["pg_wal"], serde_json::Value::Null, "{out}");
        let md = std::fs::symlink_metadata(data.join("pg_wal")).unwrap();
        assert!(md.is_dir() && !md.file_type().is_symlink(), "{md:?}");
        // A linked file comes back as a plain file with its content.
        let md = std::fs::symlink_metadata(data.join("pg_ident.conf")).unwrap();
        assert!(md.is_file(), "{md:?}");
        assert_eq!(
            std::fs::read(data.join("pg_ident.conf")).unwrap(),
            std::fs::read(c.root.join("pg_ident.conf")).unwrap()
        );
        let mut rc = start_restored(&bin, &data);
        assert_eq!(rc.sql("SELECT count(*) FROM churn"), rows);
        write_on(&rc);
        assert!(data.join("pg_wal/00000002.history").is_file());
        rc.stop();
        let after = snapshot(&wal);
        assert!(
            after == before,
            "the restore wrote into the source's WAL directory: {:?}",
            snapshot_diff(&before, &after)
        );

        // Mapped to a new place: a link there, where the restored cluster writes its WAL.
        let dir2 = postgres_dir();
        let (data2, wal2) = (dir2.path().join("data"), dir2.path().join("wal/pg_wal"));
        let map = format!("pg_wal={}", wal2.display());
        let r = restore_promoted(
            &a,
            &data2,
            &[
                "--link-map",
                &map,
                "--archive-mode",
                "off",
                "--output",
                "json",
            ],
        );
        assert_eq!(r.code, 0, "{r:?}");
        let out: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(out["links"]["pg_wal"], wal2.display().to_string(), "{out}");
        assert_eq!(std::fs::read_link(data2.join("pg_wal")).unwrap(), wal2);
        let mut rc = start_restored(&bin, &data2);
        write_on(&rc);
        assert!(wal2.join("00000002.history").is_file());
        rc.stop();
        assert!(
            snapshot(&wal) == before,
            "the mapped restore wrote into the source's WAL"
        );

        // A drill: everything in its scratch directory.
        let scratch = postgres_dir();
        let mut cmd = a.cmd(&[
            "drill",
            "--drill-path",
            scratch.path().to_str().unwrap(),
            "--pg-bin",
            bin.bin.to_str().unwrap(),
        ]);
        if let Some(p) = bin.ld_library_path() {
            cmd.env("LD_LIBRARY_PATH", p);
        }
        let r = run(cmd);
        assert_eq!(r.code, 0, "PostgreSQL {}: {r:?}", bin.major);
        let after = snapshot(&wal);
        assert!(
            after == before,
            "the drill wrote into the source's WAL directory: {:?}",
            snapshot_diff(&before, &after)
        );
    }
}

#[test]
fn a_promoted_test_restore_with_archive_mode_off_leaves_the_stanza_as_it_was() {
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[]);
    let mut c = cluster(&bin, &a);
    c.pgbench_init(1);
    backup(&a, &c, "full");
    switch_segments(&c, 2);
    assert_eq!(a.on(&c, &["check"]).code, 0);
    c.stop();
    let stanza = a.dir.path().join("repo/main");
    let before = snapshot(&stanza);

    let dir = postgres_dir();
    let data = dir.path().join("data");
    let r = restore_promoted(&a, &data, &["--archive-mode", "off"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains("WARNING"), "{r:?}");
    let auto = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("archive_mode = off"), "{auto}");
    // The backup's postgresql.conf archives into the stanza; the restore's setting wins.
    let conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
    assert!(conf.contains("archive_mode = on"), "{conf}");
    let mut rc = start_restored(&bin, &data);
    assert_eq!(rc.sql("SHOW archive_mode"), "off");
    write_on(&rc);
    assert_eq!(
        rc.sql("SELECT timeline_id FROM pg_control_checkpoint()"),
        "2"
    );
    rc.stop();
    let after = snapshot(&stanza);
    assert!(
        after == before,
        "the test restore changed the stanza: {:?}",
        snapshot_diff(&before, &after)
    );
}

#[test]
fn recovery_works_with_every_archive_get_option_from_the_file_and_the_environment() {
    let bin = PgBin::pg15();
    let s3 = S3Server::start();
    let extra = postgres_dir();
    let pass = extra.path().join("passphrase");
    std::fs::write(&pass, PASS).unwrap();
    give_to_postgres(&pass);
    std::fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let pass_s = pass.display().to_string();
    // A CA file: the endpoint is plain http, but the option must reach archive-get all the same.
    let ca = extra.path().join("private ca.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=pgfrost-test-ca",
            "-keyout",
        ])
        .arg(extra.path().join("ca.key"))
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("openssl (Debian package openssl) is needed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    give_to_postgres(&ca);
    let ca_s = ca.display().to_string();
    // Every option restore_command can carry, in the config file (spool-path, key-file and the
    // repository's are there already).
    let a = Archive::new(
        Repo::S3(&s3),
        &[
            ("passphrase-file", &pass_s),
            ("archive-get-queue-max", "32MiB"),
            ("process-max", "3"),
            ("repo-s3-region", "us-east-1"),
            ("repo-s3-uri-style", "path"),
            ("repo-s3-ca-file", &ca_s),
        ],
    );
    let c = cluster(&bin, &a);
    c.pgbench_init(1);
    backup(&a, &c, "full");
    c.pgbench(&["-t", "300", "-c", "2"]);
    switch_segments(&c, 4);
    assert_eq!(a.on(&c, &["check"]).code, 0);
    let rows = c.sql("SELECT count(*) FROM churn");
    let toml = std::fs::read_to_string(&a.cfg).unwrap();
    let value = |k: &str| {
        toml.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = '")))
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or_else(|| panic!("{k} not in {toml}"))
            .to_string()
    };

    // From the config file.
    let dir = postgres_dir();
    let data = dir.path().join("data");
    let r = restore_promoted(&a, &data, &["--archive-mode", "off"]);
    assert_eq!(r.code, 0, "{r:?}");
    let mut rc = start_restored(&bin, &data);
    assert_eq!(rc.sql("SELECT count(*) FROM churn"), rows);
    rc.stop();
    assert!(
        Path::new(&value("spool-path")).join("main/get").is_dir(),
        "archive-get did not use the spool-path of the config file"
    );

    // From the environment, which PostgreSQL's restore_command does not have.
    let spool = extra.path().join("spool from env");
    let env = [
        ("PGFROST_REPO", value("repo")),
        ("PGFROST_REPO_S3_ENDPOINT", value("repo-s3-endpoint")),
        ("PGFROST_REPO_S3_REGION", "us-east-1".into()),
        ("PGFROST_REPO_S3_URI_STYLE", "path".into()),
        ("PGFROST_REPO_S3_CA_FILE", ca_s.clone()),
        ("PGFROST_KEY_FILE", value("key-file")),
        ("PGFROST_PASSPHRASE_FILE", pass_s.clone()),
        ("PGFROST_SPOOL_PATH", spool.display().to_string()),
        ("PGFROST_ARCHIVE_GET_QUEUE_MAX", "48MiB".into()),
        ("PGFROST_PROCESS_MAX", "2".into()),
    ];
    let dir = postgres_dir();
    let data = dir.path().join("data");
    let mut cmd = a.cmd(&[
        "restore",
        "--pg-path",
        data.to_str().unwrap(),
        "--target-action",
        "promote",
        "--archive-mode",
        "off",
    ]);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let r = run(cmd);
    assert_eq!(r.code, 0, "{r:?}");
    let auto = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    let line = auto
        .lines()
        .find(|l| l.starts_with("restore_command"))
        .unwrap();
    let at = |w: &str| line.find(w).unwrap_or_else(|| panic!("{w} not in {line}"));
    for o in [
        "--spool-path",
        "--archive-get-queue-max",
        "--process-max",
        "--key-file",
        "--passphrase-file",
        "--repo-s3-endpoint",
        "--repo-s3-region",
        "--repo-s3-uri-style",
        "--repo-s3-ca-file",
        "--repo ",
    ] {
        assert!(
            at(o) > at(" archive-get "),
            "{o} before archive-get: {line}"
        );
    }
    let mut rc = start_restored(&bin, &data);
    assert_eq!(rc.sql("SELECT count(*) FROM churn"), rows);
    rc.stop();
    assert!(
        spool.join("main/get").is_dir(),
        "archive-get did not use PGFROST_SPOOL_PATH"
    );

    // drill, with the same environment.
    let scratch = postgres_dir();
    let mut cmd = a.cmd(&["drill", "--drill-path", scratch.path().to_str().unwrap()]);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let r = run(cmd);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn a_restore_run_as_root_is_started_by_the_clusters_owner_as_it_is() {
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[]);
    let c = cluster(&bin, &a);
    c.sql("CREATE TABLE kept AS SELECT generate_series(1, 1000) g");
    backup(&a, &c, "full");
    assert_eq!(a.on(&c, &["check"]).code, 0);
    let owner = if is_root() {
        postgres_ids()
    } else {
        // SAFETY: getuid and getgid cannot fail.
        unsafe { (libc::getuid(), libc::getgid()) }
    };

    // A directory of root's that postgres may traverse; the target and its parent do not exist.
    let top = tempfile::tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(
        top.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let data = top.path().join("new/data");
    let mut cmd = Command::new(&a.bin);
    cmd.arg("--config")
        .arg(&a.cfg)
        .args(["restore", "--pg-path", data.to_str().unwrap()])
        .args(["--archive-mode", "off", "--type", "immediate"])
        .args(["--target-action", "promote"])
        .env_remove("PGFROST_PASSPHRASE")
        .current_dir(a.dir.path());
    let r = run(cmd);
    assert_eq!(r.code, 0, "{r:?}");
    let mut wrong = Vec::new();
    let mut stack = vec![top.path().join("new")];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        use std::os::unix::fs::MetadataExt;
        if (md.uid(), md.gid()) != owner {
            wrong.push(format!("{} {}:{}", p.display(), md.uid(), md.gid()));
        }
        if md.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(wrong.is_empty(), "not owned by {owner:?}: {wrong:?}");
    for f in ["backup_label", "recovery.signal", "postgresql.auto.conf"] {
        assert!(data.join(f).is_file(), "{f}");
    }

    // Started by postgres with no chown.
    let mut rc = Cluster::from_data_dir_as_is(&bin, &data, &[]);
    rc.start();
    assert!(
        wait_until(Duration::from_secs(120), || rc
            .try_sql("SELECT pg_is_in_recovery()")
            .as_deref()
            == Ok("f")),
        "{}",
        rc.log_tail(40)
    );
    assert_eq!(rc.sql("SELECT count(*) FROM kept"), "1000");
    rc.stop();
}
