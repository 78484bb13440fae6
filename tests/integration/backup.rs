//! Base backups and restores against real PostgreSQL clusters (15 and 18), local disk and S3:
//! full, incr and diff each restore to a cluster that starts and holds the data of that moment.

use crate::common;

use common::fixture::*;
use common::pg::*;
use common::*;
use std::path::Path;
use std::time::Duration;

const FINGERPRINT: &str = "SELECT md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) \
     || '/' || (SELECT count(*) FROM pgbench_history) || '/' || (SELECT coalesce(sum(n), 0) FROM extra) FROM pgbench_accounts";

#[test]
fn full_incr_diff_each_restore_to_their_moment() {
    let server = S3Server::start();
    let runs: Vec<(PgBin, bool)> = versions_under_test()
        .into_iter()
        .map(|b| (b, false))
        .chain([(PgBin::pg15(), true)])
        .collect();
    for (bin, s3) in runs {
        let label = format!("PG{} {}", bin.major, if s3 { "s3" } else { "local" });
        let a = Archive::new(if s3 { Repo::S3(&server) } else { Repo::Local }, &[]);
        let c = cluster(&bin, &a);
        c.pgbench_init(5);
        c.sql("CREATE TABLE extra(n int); INSERT INTO extra SELECT generate_series(1, 1000)");
        // An unlogged table: its data is not backed up, its definition (init fork) is.
        c.sql("CREATE UNLOGGED TABLE scratch AS SELECT generate_series(1, 50000) AS n");

        let full = backup(&a, &c, "full");
        let f_full = c.sql(FINGERPRINT);
        assert_eq!(full["type"], "full");
        assert!(full["label"].as_str().unwrap().ends_with('F'));

        c.pgbench(&["-t", "300", "-c", "2"]);
        c.sql("INSERT INTO extra SELECT generate_series(1, 10)");
        let incr = backup(&a, &c, "incr");
        let f_incr = c.sql(FINGERPRINT);
        assert_eq!(incr["parent"], full["label"]);
        // Block-level dedup: far less new data than the cluster holds.
        let (logical, new) = (
            incr["stats"]["logical_bytes"].as_u64().unwrap(),
            incr["stats"]["new_bytes"].as_u64().unwrap(),
        );
        assert!(
            new * 4 < logical,
            "{label}: incr stored {new} new bytes of {logical}"
        );
        assert!(
            incr["stats"]["reused_files"].as_u64().unwrap() > 100,
            "{label}: no unchanged file was reused"
        );

        c.pgbench(&["-t", "300", "-c", "2"]);
        c.sql("UPDATE extra SET n = n + 1 WHERE n < 100");
        let diff = backup(&a, &c, "diff");
        let f_diff = c.sql(FINGERPRINT);
        assert_eq!(
            diff["parent"], full["label"],
            "{label}: a diff builds on the last full"
        );
        assert!(diff["label"].as_str().unwrap().ends_with('D'));
        assert!(f_full != f_incr && f_incr != f_diff);
        assert!(
            full["checksum_errors"].as_array().unwrap().is_empty(),
            "{label}: {:?}",
            full["checksum_errors"]
        );

        for (m, expected) in [(&full, &f_full), (&incr, &f_incr), (&diff, &f_diff)] {
            let l = m["label"].as_str().unwrap();
            let (r, _dir) = restore_at(&a, &bin, l, &[]);
            assert_eq!(
                &r.sql(FINGERPRINT),
                expected,
                "{label}: restore of {l} holds other data"
            );
            assert_eq!(
                r.sql("SELECT count(*) FROM scratch"),
                "0",
                "{label}: unlogged table came back with data"
            );
            // Nothing PostgreSQL says to leave out came back.
            assert!(!r.data.join("postmaster.opts").exists() || r.is_running());
            drop(r);
        }
    }
}

#[test]
fn corrupt_page_is_reported_by_file_and_block() {
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[]);
    let mut c = cluster(&bin, &a);
    c.sql("CREATE TABLE victim AS SELECT g AS id, repeat('v', 200) AS pad FROM generate_series(1, 20000) g");
    c.sql("CHECKPOINT");
    let rel = c.sql("SELECT pg_relation_filepath('victim')");
    c.stop();
    // Damage block 3 on disk while the cluster is stopped (a silent disk error).
    let path = c.data.join(&rel);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[3 * 8192 + 4000] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    c.start();
    // A checksum failure must not fail the backup by default.
    let (r, v) = backup_run(&a, &c, "full", &[], &[]);
    let errs = v["checksum_errors"].as_array().unwrap();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0]["file"], rel.as_str());
    assert_eq!(errs[0]["block"], 3);
    assert!(r.stderr.contains(&format!("{rel} block 3")), "{r:?}");
    // The manifest, as stored, validates against proto/manifest.schema.json.
    let label = v["label"].as_str().unwrap().to_string();
    let m = rt().block_on(async {
        let store = pgfrost::store::Store::open(&a.location, false).unwrap();
        let repo = pgfrost::repo::Repository::open_with_passphrase(store, PASS.as_bytes())
            .await
            .unwrap();
        pgfrost::repo::manifest::read(&repo, "main", &label)
            .await
            .unwrap()
    });
    assert_eq!(m.checksum_errors.len(), 1);
    let doc = a.dir.path().join("manifest.json");
    std::fs::write(&doc, serde_json::to_vec(&m).unwrap()).unwrap();
    assert_matches_schema(&doc, "manifest.schema.json");
    // Asked to, the backup fails (and is still recorded, with the page listed).
    let r = a.on(
        &c,
        &[
            "backup",
            "--type",
            "full",
            "--start-fast",
            "y",
            "--fail-on-page-error",
            "y",
        ],
    );
    assert_eq!(r.code, 13, "{r:?}");
    assert!(r.stderr.contains("checksum"), "{r:?}");
}

#[test]
fn killed_backup_leaves_nothing_and_the_next_reuses_its_blocks() {
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[("process-max", "1")]);
    let c = cluster(&bin, &a);
    c.pgbench_init(2);
    // Data that does not compress to nothing, so the backup spans several 32 MiB packs.
    c.sql("CREATE TABLE rnd AS SELECT md5(random()::text) || md5(random()::text) || md5(random()::text) AS t FROM generate_series(1, 1500000)");
    c.sql("CHECKPOINT");
    let mut cmd = a.cmd(&["backup", "--type", "full", "--start-fast", "y"]);
    cmd.args(Archive::pg_args(&c));
    let mut child = spawn_group(cmd);
    // Kill it as soon as its first pack is stored (before any index segment names it).
    let repo = a.dir.path().join("repo/main");
    // Complete packs only: the local store stages a write as `<name>#<n>` until it is whole.
    let stored = || {
        if !repo.join("pack").exists() {
            return 0;
        }
        files_under(&repo.join("pack"))
            .iter()
            .filter(|p| p.file_name().unwrap().len() == 64)
            .map(|p| p.metadata().map(|m| m.len()).unwrap_or(0))
            .sum::<u64>()
    };
    let reached = wait_until(Duration::from_secs(120), || {
        stored() > 0 || child.try_wait().unwrap().is_some()
    });
    assert!(reached);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the backup finished before it could be killed"
    );
    signal_group(&child, libc::SIGKILL);
    let _ = child.wait();
    let before = stored();
    assert!(
        !repo.join("backup").exists() || files_under(&repo.join("backup")).is_empty(),
        "a killed backup left a manifest"
    );
    // The server-side backup ended with the session.
    assert!(wait_until(Duration::from_secs(10), || {
        c.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND query ILIKE '%backup_start%'") == "0"
    }));
    let (r, v) = backup_run(&a, &c, "full", &[], &[]);
    assert!(
        r.stderr.contains("left by an interrupted run"),
        "the interrupted run's pack was not adopted: {r:?}"
    );
    // The adopted pack holds at least its size in raw block bytes; none of them is new again.
    let (read, new) = (
        v["stats"]["read_bytes"].as_u64().unwrap(),
        v["stats"]["new_bytes"].as_u64().unwrap(),
    );
    assert!(
        new + before <= read,
        "read {read}, {new} new although {before} bytes were already stored"
    );
    let (r, _d) = restore_at(&a, &bin, v["label"].as_str().unwrap(), &[]);
    assert_eq!(r.sql("SELECT count(*) FROM rnd"), "1500000");
    assert_eq!(r.sql("SELECT count(*) FROM pgbench_accounts"), "200000");
}

/// A repository whose block index is far beyond `index-memory`: backups dedup against, and
/// restores read through, the index's tables on disk, and give the same data.
#[test]
fn backups_and_restores_with_the_index_on_disk() {
    let bin = PgBin::pg15();
    let idx = postgres_dir();
    let idx_path = idx.path().display().to_string();
    // 64 KiB holds about 600 entries; the cluster has about ten thousand blocks.
    let a = Archive::new(
        Repo::Local,
        &[("index-memory", "64KiB"), ("index-path", &idx_path)],
    );
    let c = cluster(&bin, &a);
    c.pgbench_init(5);
    c.sql("CREATE TABLE extra(n int); INSERT INTO extra SELECT generate_series(1, 1000)");
    let full = backup(&a, &c, "full");
    c.pgbench(&["-t", "300", "-c", "2"]);
    let (r, incr) = backup_run(&a, &c, "incr", &["--log-level", "debug"], &[]);
    let f_incr = c.sql(FINGERPRINT);
    assert!(
        r.stderr.contains("written to a table"),
        "the index never left memory: {}",
        r.stderr
    );
    let (logical, new) = (
        incr["stats"]["logical_bytes"].as_u64().unwrap(),
        incr["stats"]["new_bytes"].as_u64().unwrap(),
    );
    assert!(
        new * 4 < logical,
        "incr stored {new} new bytes of {logical}: dedup missed blocks held on disk"
    );
    let (r, _d) = restore_at(&a, &bin, incr["label"].as_str().unwrap(), &[]);
    assert_eq!(r.sql(FINGERPRINT), f_incr);
    drop(r);
    let v = run(a.cmd(&["verify"]));
    assert_eq!(v.code, 0, "{v:?}");
    assert_ne!(full["label"], incr["label"]);

    // Garbage collection, with its live set and claims on disk too: a new full, then only it
    // is kept. Packs go, and what is left verifies and restores.
    c.sql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 3 = 0");
    c.sql("VACUUM FULL pgbench_accounts");
    let full2 = backup(&a, &c, "full");
    let f_full2 = c.sql(FINGERPRINT);
    let e = run(a.cmd(&["expire", "--retention-full", "1", "--output", "json"]));
    assert_eq!(e.code, 0, "{e:?}");
    let e: serde_json::Value = serde_json::from_str(&e.stdout).unwrap();
    let gc = &e["gc"];
    assert!(
        gc["packs_deleted"].as_u64().unwrap() + gc["packs_rewritten"].as_u64().unwrap() > 0,
        "{e}"
    );
    assert!(e["freed_bytes"].as_i64().unwrap() > 0, "{e}");
    let v = run(a.cmd(&["verify"]));
    assert_eq!(v.code, 0, "{v:?}");
    let (r, _d) = restore_at(&a, &bin, full2["label"].as_str().unwrap(), &[]);
    assert_eq!(r.sql(FINGERPRINT), f_full2);
    drop(r);
    // The table files are unlinked as they are made: nothing stays behind.
    assert_eq!(std::fs::read_dir(idx.path()).unwrap().count(), 0);
}

#[test]
fn tablespaces_and_delta_restore() {
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[]);
    let c = cluster(&bin, &a);
    let spc = postgres_dir();
    c.sql(&format!(
        "CREATE TABLESPACE far LOCATION '{}'",
        spc.path().display()
    ));
    c.sql("CREATE TABLE remote(n int) TABLESPACE far; INSERT INTO remote SELECT generate_series(1, 30000)");
    c.pgbench_init(2);
    let v = backup(&a, &c, "full");
    let label = v["label"].as_str().unwrap().to_string();
    let oid = c.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'far'");
    let moved = postgres_dir();
    let map = format!("{oid}={}", moved.path().display());
    let (mut r, dir) = restore_at(&a, &bin, &label, &["--tablespace-map", &map]);
    assert_eq!(r.sql("SELECT count(*) FROM remote"), "30000");
    assert_eq!(
        std::fs::read_link(r.data.join(format!("pg_tblspc/{oid}"))).unwrap(),
        moved.path()
    );
    let fp = r.sql(
        FINGERPRINT
            .replace(" || '/' || (SELECT coalesce(sum(n), 0) FROM extra)", "")
            .as_str(),
    );

    // Change the restored cluster, then --delta it back: same data, far fewer bytes written.
    r.sql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid < 3000; CREATE TABLE junk AS SELECT 1");
    r.stop();
    let data = r.data.clone();
    drop(r);
    std::fs::write(data.join("stray-file"), b"not in the backup").unwrap();
    let mut args = vec![
        "restore",
        "--set",
        &label,
        "--pg-path",
        data.to_str().unwrap(),
        "--type",
        "immediate",
        "--target-action",
        "promote",
        "--tablespace-map",
        &map,
    ];
    let r_plain = run(a.cmd(&args));
    assert_eq!(
        r_plain.code, 17,
        "a non-empty directory must be refused without --delta: {r_plain:?}"
    );
    args.extend(["--delta", "y", "--output", "json"]);
    let rr = run(a.cmd(&args));
    assert_eq!(rr.code, 0, "{rr:?}");
    let out: serde_json::Value = serde_json::from_str(&rr.stdout).unwrap();
    let (total, written) = (
        out["bytes"].as_u64().unwrap(),
        out["written_bytes"].as_u64().unwrap(),
    );
    assert!(
        written * 5 < total,
        "delta wrote {written} of {total} bytes"
    );
    eprintln!("delta restore wrote {written} of {total} bytes");
    assert!(!data.join("stray-file").exists());
    let mut again = Cluster::from_data_dir(&bin, &data, &[("archive_mode", "off")]);
    again.start();
    assert!(wait_promoted(&again));
    assert_eq!(
        again.sql(
            FINGERPRINT
                .replace(" || '/' || (SELECT coalesce(sum(n), 0) FROM extra)", "")
                .as_str()
        ),
        fp
    );
    assert_eq!(
        again.sql("SELECT count(*) FROM pg_class WHERE relname = 'junk'"),
        "0"
    );
    drop(dir);
    let _ = Path::new("");
}

/// PostgreSQL 17+: an incremental driven by the WAL summaries reads only the changed blocks, and
/// records exactly the same content as an incremental that compares every block by hash.
#[test]
fn wal_summary_incremental_equals_hashing_incremental() {
    for bin in versions_under_test().into_iter().filter(|b| b.major >= 17) {
        let a = Archive::new(Repo::Local, &[]);
        let settings = archive_settings(&a);
        let mut s: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // No background writes between the two incrementals.
        s.extend([("summarize_wal", "on"), ("autovacuum", "off")]);
        let mut c = Cluster::init(&bin, &s);
        c.start();
        assert_eq!(a.on(&c, &["stanza-create"]).code, 0);
        c.pgbench_init(5);
        c.sql("CREATE TABLE extra(n int); INSERT INTO extra SELECT generate_series(1, 1000)");
        backup(&a, &c, "full");
        c.pgbench(&["-t", "300", "-c", "2"]);
        c.sql("DELETE FROM pgbench_history WHERE aid % 3 = 0; TRUNCATE extra; INSERT INTO extra VALUES (7)");
        // Settle every page first (hint bits, pruning): reads between the two backups, ours
        // included, would otherwise legitimately change pages and the two could not be compared.
        c.sql("VACUUM");
        let fingerprint = c.sql(FINGERPRINT);
        c.sql("VACUUM");
        let (r, by_summary) = backup_run(&a, &c, "incr", &[], &[]);
        assert!(
            r.stderr.contains("WAL summaries name"),
            "the summary path was not taken: {r:?}"
        );
        let (_, by_hash) = backup_run(&a, &c, "incr", &["--wal-summary", "n"], &[]);
        let read = |v: &serde_json::Value| v["stats"]["read_bytes"].as_u64().unwrap();
        assert!(
            read(&by_summary) * 3 < read(&by_hash),
            "summaries read {} bytes, hashing {}",
            read(&by_summary),
            read(&by_hash)
        );

        // Same relation content: every relation file has the same block list in both.
        let manifests = rt().block_on(async {
            let store = pgfrost::store::Store::open(&a.location, false).unwrap();
            let repo = pgfrost::repo::Repository::open_with_passphrase(store, PASS.as_bytes())
                .await
                .unwrap();
            let mut out = Vec::new();
            for v in [&by_summary, &by_hash] {
                out.push(
                    pgfrost::repo::manifest::read(&repo, "main", v["label"].as_str().unwrap())
                        .await
                        .unwrap(),
                );
            }
            out
        });
        let lists =
            |m: &pgfrost::repo::manifest::Manifest| -> std::collections::HashMap<String, String> {
                m.files
                    .iter()
                    .filter(|f| {
                        pgfrost::pg::layout::RelFile::parse(&f.path).is_some()
                            && !f.path.contains("_fsm")
                    })
                    .map(|f| (f.path.clone(), f.list.clone()))
                    .collect()
            };
        let (x, y) = (lists(&manifests[0]), lists(&manifests[1]));
        assert!(x.len() > 100);
        let differing: Vec<_> = x
            .iter()
            .filter(|(p, l)| y.get(*p) != Some(l))
            .map(|(p, _)| p.clone())
            .collect();
        assert!(
            differing.is_empty(),
            "PG{}: relation files differ between the two incrementals: {differing:?}",
            bin.major
        );
        let (r, _d) = restore_at(&a, &bin, by_summary["label"].as_str().unwrap(), &[]);
        assert_eq!(r.sql(FINGERPRINT), fingerprint);
        c.stop();
    }
}

/// `check --max-backup-age/--max-wal-age` as a monitoring probe (issue 16): one status line and
/// the Nagios exit codes, read from the repository alone. Within the limits OK (0), past one
/// WARNING (1), past twice it or with nothing to show CRITICAL (2), a bad duration exit 3. The
/// probe's clock is moved with PGFROST_TEST_CLOCK; nothing listens on the PostgreSQL port.
#[test]
fn check_as_a_monitoring_probe_grades_backup_and_wal_age() {
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[]);
    let c = cluster(&bin, &a);
    assert_eq!(a.on(&c, &["stanza-create"]).code, 0);
    let probe = |after_secs: i64, args: &[&str]| a.probe(after_secs, args);
    let both = ["--max-backup-age", "1h", "--max-wal-age", "30m"];
    // No backup yet: CRITICAL, saying so.
    let r = probe(0, &both);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stdout.starts_with("PGFROST CRITICAL - stanza main:") && r.stdout.contains("no backup"),
        "{r:?}"
    );
    let label = backup(&a, &c, "full")["label"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(a.on(&c, &["check"]).code, 0);
    let r = probe(0, &both);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.starts_with("PGFROST OK - stanza main:")
            && r.stdout.contains(&label)
            && r.stdout.contains("| backup_age=")
            && r.stdout.contains("wal_age="),
        "{r:?}"
    );
    // 45 minutes on: the WAL is stale (30m), the backup not yet (1h).
    let r = probe(45 * 60, &both);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.starts_with("PGFROST WARNING")
            && r.stdout.contains("STALE: newest WAL")
            && !r.stdout.contains("STALE: newest backup"),
        "{r:?}"
    );
    // 90 minutes: both past their limit, the WAL past twice it.
    let r = probe(90 * 60, &both);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stdout.starts_with("PGFROST CRITICAL"), "{r:?}");
    let r = probe(90 * 60, &["--max-backup-age", "1h", "--output", "json"]);
    assert_eq!(r.code, 1, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["status"], "WARNING");
    assert_eq!(v["newest_backup"], label.as_str());
    assert!(v["backup_age_seconds"].as_i64().unwrap() >= 90 * 60);
    // The same facts as metrics: the exposition format promtool accepts, written atomically
    // for node_exporter's textfile collector.
    let info = run(a.cmd(&["info", "--output", "json"]));
    let v: serde_json::Value = serde_json::from_str(&info.stdout).unwrap();
    let stop = v["stanzas"][0]["backups"][0]["stop_unix"].as_i64().unwrap();
    let prom = a.dir.path().join("textfile/pgfrost.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    give_to_postgres(prom.parent().unwrap());
    let r = run(a.cmd(&[
        "info",
        "--output",
        "prometheus",
        "--output-file",
        prom.to_str().unwrap(),
    ]));
    assert_eq!(r.code, 0, "{r:?}");
    let text = std::fs::read_to_string(&prom).unwrap();
    let want = format!(
        "pgfrost_backup_last_completion_timestamp_seconds{{repo=\"{}\",stanza=\"main\",type=\"full\"}} {stop}\n",
        v["repository"].as_str().unwrap()
    );
    assert!(text.contains(&want), "{want}\n{text}");
    for family in [
        "pgfrost_wal_last_archive_timestamp_seconds{",
        "pgfrost_recovery_window_start_timestamp_seconds{",
        "pgfrost_recovery_window_end_timestamp_seconds{",
        "pgfrost_repository_size_bytes{",
        "pgfrost_backup_last_duration_seconds{",
    ] {
        assert!(text.contains(family), "{family}\n{text}");
    }
    promtool_check(&text);
    let leftovers: Vec<_> = std::fs::read_dir(prom.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    // Other commands refuse the format rather than print something else.
    let r = run(a.cmd(&["verify", "--output", "prometheus"]));
    assert_eq!(r.code, 3, "{r:?}");
    // A bad threshold is a configuration error, before anything is read.
    let r = probe(0, &["--max-wal-age", "soon"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains("max-wal-age") && r.stderr.contains("HINT"),
        "{r:?}"
    );
    // An unreadable repository proves nothing: CRITICAL.
    let mut cmd = a.cmd(&["check", "--max-backup-age", "1h"]);
    cmd.env("PGFROST_PASSPHRASE", "not it")
        .env("PGFROST_KEY_FILE", a.dir.path().join("no-key.json"));
    let r = run(cmd);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stdout.starts_with("PGFROST CRITICAL"), "{r:?}");
}
