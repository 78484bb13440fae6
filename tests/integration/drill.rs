//! The restore drill on real clusters: it passes on a healthy repository, fails naming the object
//! when a pack is damaged, fails with the point it reached when a WAL segment is missing, and never
//! leaves a PostgreSQL process or a scratch directory behind.

use crate::common;

use common::fixture::*;
use common::pg::*;
use common::*;

fn drill(a: &Archive, scratch: &std::path::Path) -> (Run, serde_json::Value) {
    let r = run(a.cmd(&[
        "drill",
        "--drill-path",
        scratch.to_str().unwrap(),
        "--output",
        "json",
    ]));
    let v = serde_json::from_str(&r.stdout).unwrap_or(serde_json::Value::Null);
    (r, v)
}

fn info(a: &Archive) -> serde_json::Value {
    let r = run(a.cmd(&["info", "--output", "json"]));
    assert_eq!(r.code, 0, "{r:?}");
    serde_json::from_str(&r.stdout).unwrap()
}

/// Nothing of a drill may outlive it: no scratch directory, no postgres running from one.
fn assert_clean(scratch: &std::path::Path) {
    let left: Vec<_> = std::fs::read_dir(scratch)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "scratch directories left behind: {left:?}");
    for p in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        if let Ok(cmd) = std::fs::read(p.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            assert!(
                !cmd.contains(&*scratch.to_string_lossy()) || cmd.contains("drill"),
                "process left behind: {cmd}"
            );
        }
    }
}

#[test]
fn drill_passes_then_catches_a_damaged_pack_and_a_missing_segment() {
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[]);
    let c = cluster(&bin, &a);
    c.pgbench_init(3);
    let r = a.on(&c, &["backup", "--type", "full", "--start-fast", "y"]);
    assert_eq!(r.code, 0, "{r:?}");
    c.pgbench(&["-t", "300", "-c", "2"]);
    switch_segments(&c, 3);
    assert_eq!(a.on(&c, &["check"]).code, 0);
    let scratch = postgres_dir();

    // Healthy: passes, with times and the point reached.
    let (r, v) = drill(&a, scratch.path());
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(v["passed"], true);
    assert!(
        v["restore_seconds"].as_f64().unwrap() > 0.0
            && v["recovery_seconds"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert!(v["reached_lsn"].is_string(), "{v}");
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for want in [
        "restore",
        "recovery",
        "end of archive",
        "database postgres",
        "pg_amcheck",
        "relation sizes",
    ] {
        assert!(names.contains(&want), "missing check {want}: {names:?}");
    }
    assert_clean(scratch.path());

    // The pass is kept in the repository: a probe reading only the repository says so, and
    // warns once it is older than the limit (the clock moved 90 minutes on).
    assert_eq!(run(a.cmd(&["verify"])).code, 0);
    let r = a.probe(0, &["--max-drill-age", "1h", "--max-verify-age", "1h"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.starts_with("PGFROST OK")
            && r.stdout.contains("last drill passed")
            && r.stdout.contains("last verify passed")
            && r.stdout.contains("drill_age="),
        "{r:?}"
    );
    let r = a.probe(90 * 60, &["--max-drill-age", "1h"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("STALE: last drill passed"), "{r:?}");
    let passed_at = info(&a)["stanzas"][0]["drill"]["last"]["ended_unix"]
        .as_i64()
        .unwrap();

    // A missing segment in the middle of the archive: a gap, which archive-get reports as fatal
    // (never as the end of the archive), so recovery stops there and the drill names it.
    let wal_dir = a.dir.path().join("repo/main/wal/0001/0000000100000000");
    let mut segs: Vec<_> = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().len() == 24)
        .collect();
    segs.sort();
    let victim = segs[segs.len() - 3].clone();
    let saved = std::fs::read(&victim).unwrap();
    std::fs::remove_file(&victim).unwrap();
    let (r, v) = drill(&a, scratch.path());
    assert_eq!(r.code, 21, "{r:?}");
    assert_eq!(v["passed"], false);
    let victim_name = victim.file_name().unwrap().to_string_lossy().to_string();
    let failed = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ok"] == false)
        .expect("a failed check");
    assert!(
        failed["name"] == "recovery"
            && failed["detail"].as_str().unwrap().contains(&victim_name)
            && failed["detail"].as_str().unwrap().contains("gap"),
        "{v}"
    );
    assert_clean(scratch.path());

    // The failure is what info, the metrics and the probe now report, with the last success.
    let r = run(a.cmd(&["verify"]));
    assert_ne!(r.code, 0, "verify passed with {victim_name} missing: {r:?}");
    let r = a.probe(0, &["--max-drill-age", "1h", "--max-verify-age", "1h"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stdout.starts_with("PGFROST CRITICAL")
            && r.stdout.contains("last drill FAILED")
            && r.stdout.contains(&victim_name)
            && r.stdout.contains("last verify FAILED")
            && r.stdout.contains("last passed"),
        "{r:?}"
    );
    let v = info(&a);
    let d = &v["stanzas"][0]["drill"];
    assert_eq!(d["last"]["passed"], false, "{d}");
    assert_eq!(d["last_success_unix"].as_i64(), Some(passed_at), "{d}");
    assert_eq!(v["stanzas"][0]["verify"]["last"]["passed"], false, "{v}");
    let text = run(a.cmd(&["info"])).stdout;
    assert!(
        text.contains("last drill: FAILED") && text.contains("last verify: FAILED"),
        "{text}"
    );
    let prom = run(a.cmd(&["info", "--output", "prometheus"])).stdout;
    let repo = v["repository"].as_str().unwrap();
    for want in [
        format!("pgfrost_drill_last_run_success{{repo=\"{repo}\",stanza=\"main\"}} 0\n"),
        format!(
            "pgfrost_drill_last_success_timestamp_seconds{{repo=\"{repo}\",stanza=\"main\"}} {passed_at}\n"
        ),
        format!("pgfrost_verify_last_run_success{{repo=\"{repo}\",stanza=\"main\"}} 0\n"),
    ] {
        assert!(prom.contains(&want), "{want}\n{prom}");
    }
    promtool_check(&prom);
    std::fs::write(&victim, saved).unwrap();

    // A damaged pack: the restore inside the drill fails and names it.
    let pack = files_under(&a.dir.path().join("repo/main/pack"))
        .into_iter()
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap();
    let orig = std::fs::read(&pack).unwrap();
    let mut bad = orig.clone();
    bad[orig.len() / 3] ^= 0x40;
    std::fs::write(&pack, &bad).unwrap();
    let (r, v) = drill(&a, scratch.path());
    assert_eq!(r.code, 21, "{r:?}");
    let pack_name = pack.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        v.to_string().contains(&pack_name),
        "the damaged pack is not named: {v}"
    );
    assert_clean(scratch.path());
    std::fs::write(&pack, &orig).unwrap();
}

#[test]
fn interrupted_drill_still_cleans_up() {
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[]);
    let c = cluster(&bin, &a);
    c.pgbench_init(10);
    assert_eq!(
        a.on(&c, &["backup", "--type", "full", "--start-fast", "y"])
            .code,
        0
    );
    // Enough WAL after the backup that recovery takes a moment.
    c.pgbench(&["-t", "3000", "-c", "2"]);
    switch_segments(&c, 2);
    assert_eq!(a.on(&c, &["check"]).code, 0);
    let scratch = postgres_dir();
    let mut cmd = a.cmd(&["drill", "--drill-path", scratch.path().to_str().unwrap()]);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once PostgreSQL runs in the scratch directory.
    let running = wait_until(std::time::Duration::from_secs(120), || {
        std::fs::read_dir(scratch.path())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .any(|e| e.path().join("data/postmaster.pid").exists())
            })
            .unwrap_or(false)
    });
    assert!(running, "PostgreSQL never started in the drill");
    // To the drill's process group, as a terminal's Ctrl-C would.
    signal_group(&child, libc::SIGINT);
    let _ = child.wait();
    let clean = wait_until(std::time::Duration::from_secs(90), || {
        std::fs::read_dir(scratch.path())
            .map(|mut d| d.next().is_none())
            .unwrap_or(false)
    });
    assert!(clean, "the interrupted drill left its scratch directory");
    assert_clean(scratch.path());
}

/// A test restore promoted with archiving on (the default, and said loudly) pushes a timeline
/// the primary never took into the stanza; the drill still follows the primary's timeline and
/// passes, and info shows each timeline's window and which one the primary is on.
#[test]
fn drill_follows_the_primary_after_a_test_restore_archived_a_branch() {
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[]);
    let c = cluster(&bin, &a);
    c.pgbench_init(1);
    backup(&a, &c, "full");
    c.pgbench(&["-t", "200", "-c", "2"]);
    switch_segments(&c, 2);
    assert_eq!(a.on(&c, &["check"]).code, 0);

    let dir = postgres_dir();
    let data = dir.path().join("data");
    let r = restore_promoted(&a, &data, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("WARNING") && r.stdout.contains("--archive-mode off"),
        "{r:?}"
    );
    assert!(r.stderr.contains("WARN"), "{r:?}");
    let mut rc = Cluster::from_data_dir(&bin, &data, &[]);
    rc.start();
    assert!(wait_promoted(&rc), "{}", rc.log_tail(40));
    assert_eq!(rc.sql("SHOW archive_mode"), "on");
    switch_segments(&rc, 3);
    let wal = a.dir.path().join("repo/main/wal/0001");
    let branched = wait_until(std::time::Duration::from_secs(90), || {
        wal.join("00000002.history").is_file()
            && files_under(&wal).iter().any(|p| {
                p.file_name()
                    .is_some_and(|n| n.len() == 24 && n.to_string_lossy().starts_with("00000002"))
            })
    });
    assert!(branched, "the promoted restore did not archive timeline 2");
    rc.stop();

    // The primary goes on, on timeline 1, and backs up again.
    c.pgbench(&["-t", "200", "-c", "2"]);
    backup(&a, &c, "incr");
    switch_segments(&c, 2);
    assert_eq!(a.on(&c, &["check"]).code, 0);

    let scratch = postgres_dir();
    let (r, v) = drill(&a, scratch.path());
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(v["passed"], true, "{v}");
    let end = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "end of archive")
        .expect("end-of-archive check");
    assert!(
        end["detail"]
            .as_str()
            .unwrap()
            .contains("replayed through 00000001"),
        "{end}"
    );
    assert_clean(scratch.path());

    let r = run(a.cmd(&["info", "--output", "json"]));
    assert_eq!(r.code, 0, "{r:?}");
    let info: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let s = &info["stanzas"][0];
    assert_eq!(s["primary_timeline"], 1, "{s}");
    assert_eq!(s["recovery_window"]["timeline"], 1, "{s}");
    let tlis: Vec<u64> = s["recovery_windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["timeline"].as_u64().unwrap())
        .collect();
    assert_eq!(tlis, [1, 2], "{s}");
    let r = run(a.cmd(&["info"]));
    assert!(
        r.stdout
            .contains("recovery window on timeline 1 (the primary's"),
        "{r:?}"
    );
}

/// Debian's layout (pg_createcluster): postgresql.conf and pg_hba.conf live in
/// /etc/postgresql/<major>/<name>/, so the backup has neither. The drill still starts and checks
/// the restored cluster, and a restore says where the configuration went.
#[test]
fn drill_and_restore_a_cluster_configured_outside_its_data_directory() {
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[]);
    let mut c = cluster(&bin, &a);
    c.stop();
    let etc = c.root.join("etc");
    std::fs::create_dir(&etc).unwrap();
    for f in ["postgresql.conf", "pg_hba.conf"] {
        std::fs::rename(c.data.join(f), etc.join(f)).unwrap();
    }
    let conf = etc.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!(
        "\nhba_file = '{}'\n",
        etc.join("pg_hba.conf").display()
    ));
    std::fs::write(&conf, text).unwrap();
    give_to_postgres(&etc);
    c.start_with(&format!("-c config_file={}", conf.display()));
    c.pgbench_init(1);
    backup(&a, &c, "full");
    switch_segments(&c, 2);
    assert_eq!(a.on(&c, &["check"]).code, 0);

    let scratch = postgres_dir();
    let (r, v) = drill(&a, scratch.path());
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(v["passed"], true, "{v}");
    assert_clean(scratch.path());

    let dir = postgres_dir();
    let data = dir.path().join("data");
    let r = run(a.cmd(&[
        "restore",
        "--pg-path",
        data.to_str().unwrap(),
        "--archive-mode",
        "off",
    ]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("has no postgresql.conf") && r.stdout.contains("config_file"),
        "{r:?}"
    );
    assert!(!data.join("postgresql.conf").exists());
    c.stop();
}
