//! Self-test of the PostgreSQL fixture (tests/common/pg.rs): for each version under test, a
//! cluster archives WAL with a plain `cp`, a base backup is taken, and a second cluster recovers
//! it from the archive and promotes, with the same data.

use crate::common;

use common::pg::*;
use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The archived WAL segments (24 hex digits) in `dir`, sorted.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.len() == 24 && name.chars().all(|c| c.is_ascii_hexdigit())
        })
        .collect();
    out.sort();
    out
}

/// xlp_magic: the first two bytes (little-endian) of every WAL page.
fn wal_magic(segment: &Path) -> u16 {
    let bytes = std::fs::read(segment).unwrap();
    u16::from_le_bytes([bytes[0], bytes[1]])
}

fn archive_backup_recover(bin: &PgBin) -> u16 {
    let t0 = Instant::now();
    let lap = |what: &str| eprintln!("PostgreSQL {}: {what} at {:?}", bin.major, t0.elapsed());

    let archive = postgres_dir();
    let a = archive.path().display();
    let archive_command = format!("'test ! -f {a}/%f && cp %p {a}/%f'");
    let mut primary = Cluster::init(
        bin,
        &[
            ("wal_level", "replica"),
            ("archive_mode", "on"),
            ("archive_command", &archive_command),
        ],
    );
    lap("initdb");
    primary.start();
    lap("started");
    assert!(primary.is_running());
    assert!(
        primary
            .sql("select version()")
            .starts_with(&format!("PostgreSQL {}.", bin.major))
    );
    assert_eq!(primary.sql("show data_checksums"), "on");
    assert_eq!(primary.sql("show fsync"), "on");
    // conninfo() works for tokio-postgres too (what pgfrost itself uses).
    let conninfo = primary.conninfo();
    let user = common::rt().block_on(async {
        let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let row = client
            .query_one("select current_user::text", &[])
            .await
            .unwrap();
        row.get::<_, String>(0)
    });
    assert_eq!(user, "postgres");
    primary.pgbench_init(1);
    lap("pgbench -i -s 1");
    primary.sql("select pg_switch_wal()");
    assert!(
        wait_until(Duration::from_secs(30), || !segments(archive.path())
            .is_empty()),
        "no segment archived within 30 s\n{}",
        primary.log_tail(50)
    );
    lap("first segment archived");

    let backups = postgres_dir();
    let base = backups.path().join("base");
    primary.basebackup(&base);
    lap("pg_basebackup");
    assert_eq!(
        primary.sql("select count(*) from pgbench_accounts"),
        "100000"
    );
    primary.stop();
    assert!(!primary.is_running());
    lap("primary stopped");

    std::fs::write(base.join("recovery.signal"), "").unwrap();
    let restore_command = format!("'cp {a}/%f %p'");
    let mut restored = Cluster::from_data_dir(
        bin,
        &base,
        &[
            ("restore_command", &restore_command),
            ("archive_mode", "off"),
        ],
    );
    restored.start();
    lap("restored cluster started");
    assert!(
        wait_until(Duration::from_secs(60), || restored
            .try_sql("select pg_is_in_recovery()")
            .as_deref()
            == Ok("f")),
        "the restored cluster did not promote within 60 s\n{}",
        restored.log_tail(50)
    );
    lap("promoted");
    assert_eq!(
        restored.sql("select count(*) from pgbench_accounts"),
        "100000"
    );
    // It is a writable primary on a new timeline.
    restored.sql("create table after_recovery(x int)");
    let tli = restored.sql("select timeline_id from pg_control_checkpoint()");
    assert_ne!(tli, "1", "recovery should have switched timeline");
    restored.restart();
    assert_eq!(restored.sql("select count(*) from after_recovery"), "0");
    restored.stop_immediate();
    assert!(!restored.is_running());
    lap("done");

    let segs = segments(archive.path());
    let magic = wal_magic(&segs[0]);
    for s in &segs {
        assert_eq!(wal_magic(s), magic, "{}", s.display());
    }
    eprintln!(
        "PostgreSQL {}: WAL page magic 0x{magic:04X} ({} segments archived)",
        bin.major,
        segs.len()
    );
    magic
}

#[test]
fn versions_are_15_and_18() {
    let majors: Vec<u32> = versions_under_test().iter().map(|b| b.major).collect();
    assert_eq!(majors, vec![15, 18]);
    for b in versions_under_test() {
        for tool in [
            "initdb",
            "pg_ctl",
            "postgres",
            "psql",
            "pg_basebackup",
            "pgbench",
            "pg_waldump",
        ] {
            assert!(b.tool(tool).is_file(), "{}", b.tool(tool).display());
        }
    }
}

#[test]
fn pg15_archive_backup_recover() {
    assert_eq!(archive_backup_recover(&PgBin::pg15()), 0xD110);
}

#[test]
fn pg18_archive_backup_recover() {
    let magic = archive_backup_recover(&PgBin::pg18());
    eprintln!("observed PostgreSQL 18 WAL magic: 0x{magic:04X}");
    assert_eq!(magic, 0xD118);
}

#[test]
#[should_panic(expected = "invalid value for parameter")]
fn a_failed_start_reports_the_server_log() {
    let mut c = Cluster::init(&PgBin::pg15(), &[("shared_buffers", "'lots'")]);
    c.start();
}

#[test]
fn postgres_can_run_pgfrost() {
    let exe = pgfrost_for_postgres();
    let out = as_postgres(&exe)
        .arg("--help")
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} --help as postgres: {}",
        exe.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unreachable_executables_are_published_for_postgres() {
    // A small executable in a private directory (tempfile makes 0755 ones: make it 0700).
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), Permissions::from_mode(0o700)).unwrap();
    let exe = private.path().join("true-copy");
    std::fs::copy("/bin/true", &exe).unwrap();
    let published = executable_for_postgres(&exe);
    if !is_root() {
        assert_eq!(published, exe);
        return;
    }
    assert_ne!(published, exe);
    assert_eq!(executable_for_postgres(&exe), published, "made once");
    let ok = as_postgres(&published)
        .current_dir("/")
        .status()
        .unwrap()
        .success();
    std::fs::remove_dir_all(published.parent().unwrap()).unwrap();
    assert!(ok, "postgres cannot run {}", published.display());
}

#[test]
fn pg_tools_of_each_version_run() {
    // The other tools of each version run too (pg_waldump here, with PG18's library path).
    for bin in versions_under_test() {
        let out = bin.client("pg_waldump").arg("--version").output().unwrap();
        assert!(out.status.success(), "{:?}", out);
        let v = String::from_utf8_lossy(&out.stdout);
        assert!(v.contains(&format!(" {}.", bin.major)), "{v}");
    }
}
