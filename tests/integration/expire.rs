//! Retention and upkeep against real PostgreSQL: a scripted month of backups under a policy,
//! expire racing backups and archive-push, verify naming every problem, and a lone incremental
//! that restores after everything else has gone.

use crate::common;

use common::fixture::*;
use common::pg::*;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// 2026-01-01T00:00:00Z: in the past, as the test clock must be (clock.rs).
const MONTH_START: i64 = 1_767_225_600;
const DAY: i64 = 86_400;

fn json_of(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"))
}

/// Bytes of every object in a local repository (staging and dot files are not objects).
fn repo_bytes(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            !n.starts_with('.') && !n.contains('#')
        })
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

fn labels(a: &Archive) -> Vec<String> {
    let r = run(a.cmd(&["info", "--output", "json"]));
    assert_eq!(r.code, 0, "{r:?}");
    let v = json_of(&r);
    v["stanzas"][0]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap().to_string())
        .collect()
}

fn backup_at(a: &Archive, c: &Cluster, kind: &str, clock: i64) -> Value {
    backup_with(a, c, kind, &[("PGFROST_TEST_CLOCK", &clock.to_string())])
}

/// A local store in a temporary directory, for tests of the storage-level mechanisms.
fn scratch_store() -> (tempfile::TempDir, pgfrost::store::Store) {
    let dir = tempfile::tempdir().unwrap();
    let loc = pgfrost::store::Location::Local(dir.path().to_path_buf());
    let store = pgfrost::store::Store::open(&loc, false).unwrap();
    (dir, store)
}

const COUNT: &str = "SELECT count(*) || '/' || coalesce(sum(n), 0) FROM t";
/// What pgbench has done: equal on source and restore only if every transaction came back.
const HISTORY: &str = "SELECT sum(delta) || '/' || count(*) FROM pgbench_history";

#[test]
fn a_scripted_month_keeps_exactly_what_the_policy_says() {
    let bin = PgBin::pg15();
    // Auto-expire after every backup under retention-full=3, retention-diff=1.
    let a = Archive::new(
        Repo::Local,
        &[("retention-full", "3"), ("retention-diff", "1")],
    );
    let c = cluster(&bin, &a);
    c.sql("CREATE TABLE t(day int, n int)");
    assert_eq!(a.on(&c, &["stanza-create"]).code, 0);
    let mut by_day: Vec<(String, String)> = Vec::new();
    let mut expired_on_the_way = BTreeSet::new();
    for day in 0..30i64 {
        c.sql(&format!(
            "INSERT INTO t SELECT {day}, g FROM generate_series(1, 2000) g; \
             UPDATE t SET n = n + 1 WHERE day = {} AND n % 10 = 0; DELETE FROM t WHERE day = {} AND n % 97 = 0",
            (day + 29) % 30,
            (day + 15) % 30
        ));
        if day % 5 == 0 {
            c.sql("VACUUM t");
        }
        if day == 2 || day == 20 {
            c.sql(&format!("SELECT pg_create_restore_point('day {day}')"));
        }
        let kind = if day % 14 == 0 {
            "full"
        } else if day % 7 == 0 {
            "diff"
        } else {
            "incr"
        };
        let v = backup_at(&a, &c, kind, MONTH_START + day * DAY + 3600);
        assert_eq!(v["type"], kind);
        for e in v["expire"]["expired"].as_array().unwrap() {
            expired_on_the_way.insert(e["label"].as_str().unwrap().to_string());
        }
        by_day.push((v["label"].as_str().unwrap().to_string(), c.sql(COUNT)));
    }
    // Labels carry the injected days.
    assert!(by_day[0].0.starts_with("20260101-01"), "{:?}", by_day[0]);
    assert!(by_day[29].0.ends_with('I') && by_day[29].0.contains("_20260130-01"));

    // Fulls on days 0, 14, 28 (all kept: retention-full=3); diffs on 7 and 21, and only the
    // newest diff stays, so day 7 went with the incrementals built on it (8..13).
    let expect: Vec<String> = by_day
        .iter()
        .enumerate()
        .filter(|(d, _)| !(7..=13).contains(d))
        .map(|(_, (l, _))| l.clone())
        .collect();
    assert_eq!(labels(&a), expect);
    let gone: BTreeSet<String> = (7..=13).map(|d| by_day[d].0.clone()).collect();
    assert_eq!(expired_on_the_way, gone);

    // Then the policy tightens to two fulls. The dry run says exactly what the real run does.
    let now = (MONTH_START + 30 * DAY).to_string();
    let expire = |dry: &str| {
        let mut cmd = a.cmd(&[
            "expire",
            "--retention-full",
            "2",
            "--dry-run",
            dry,
            "--output",
            "json",
        ]);
        cmd.env("PGFROST_TEST_CLOCK", &now);
        let r = run(cmd);
        assert_eq!(r.code, 0, "{r:?}");
        json_of(&r)
    };
    let dry = expire("y");
    let before = repo_bytes(&a.dir.path().join("repo"));
    let real = expire("n");
    let after = repo_bytes(&a.dir.path().join("repo"));
    assert_eq!(dry["expired"], real["expired"]);
    assert_eq!(dry["wal_files"], real["wal_files"]);
    let day0: Vec<String> = (0..=6).map(|d| by_day[d].0.clone()).collect();
    let expired: Vec<String> = real["expired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["label"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(expired, day0, "{real:#}");
    assert!(real["wal_files"].as_u64().unwrap() > 0, "{real:#}");
    // Day 2's restore point went with the WAL it was found in; day 20's stays.
    assert_eq!(dry["restore_points"], 1, "{dry:#}");
    assert_eq!(real["restore_points"], 1, "{real:#}");
    let info = run(a.cmd(&["info", "--output", "json"]));
    let points: Vec<String> = json_of(&info)["stanzas"][0]["restore_points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(points, ["day 20"]);
    let gc = &real["gc"];
    assert!(
        gc["packs_deleted"].as_u64().unwrap() + gc["packs_rewritten"].as_u64().unwrap() > 0,
        "{real:#}"
    );
    let freed = real["freed_bytes"].as_i64().unwrap();
    assert!(freed > 0);
    assert_eq!(
        before as i64 - after as i64,
        freed,
        "the repository shrank by a different amount than expire reported"
    );
    let kept: Vec<String> = by_day
        .iter()
        .enumerate()
        .filter(|(d, _)| *d >= 14)
        .map(|(_, (l, _))| l.clone())
        .collect();
    assert_eq!(labels(&a), kept);

    // The WAL kept starts at the oldest retained full: nothing older is left, nothing newer is
    // missing (verify checks continuity from there).
    let info = json_of(&run(a.cmd(&["info", "--output", "json"])));
    let oldest_start = info["stanzas"][0]["backups"][0]["start_wal"]
        .as_str()
        .unwrap()
        .to_string();
    let wal: Vec<String> = files_under(&a.dir.path().join("repo/main/wal"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .filter(|n| n.len() == 24)
        .collect();
    assert!(!wal.is_empty());
    assert!(
        wal.iter().all(|n| n[8..] >= oldest_start[8..]),
        "WAL older than {oldest_start} survived"
    );
    let w = &info["stanzas"][0]["wal"][0];
    assert_eq!(w["first"].as_str().unwrap(), oldest_start);
    assert_eq!(w["missing"], 0);
    assert!(
        info["stanzas"][0]["recovery_window"]["from_backup"]
            .as_str()
            .is_some()
    );
    let v = run(a.cmd(&["verify", "--retention-full", "2"]));
    assert_eq!(v.code, 0, "{v:?}");

    // Every retained backup restores to what the cluster held when it was taken.
    c.sql("SELECT pg_switch_wal()");
    wait_archived(&c);
    let expected: BTreeMap<&str, &str> = by_day
        .iter()
        .map(|(l, f)| (l.as_str(), f.as_str()))
        .collect();
    for l in &kept {
        let (r, _dir) = restore_at(&a, &bin, l, &[]);
        assert_eq!(r.sql(COUNT), expected[l.as_str()], "backup {l}");
    }
}

#[test]
fn backup_expire_and_archive_push_together_lose_nothing() {
    let server = S3Server::start();
    let bin = PgBin::pg15();
    let a = Archive::new(
        Repo::S3(&server),
        &[("retention-full", "1"), ("retention-diff", "1")],
    );
    let c = cluster(&bin, &a);
    c.pgbench_init(10);
    assert_eq!(a.on(&c, &["stanza-create"]).code, 0);
    backup(&a, &c, "full");
    c.pgbench(&["-t", "500", "-c", "2"]);
    backup(&a, &c, "full");

    let stop = AtomicBool::new(false);
    let store = pgfrost::store::Store::open(&a.location, false).unwrap();
    let mut expires: Vec<Value> = Vec::new();
    std::thread::scope(|s| {
        // WAL keeps coming: writes, and segment switches so archive-push runs all along.
        let load = s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                c.pgbench(&["-T", "2", "-c", "2"]);
                c.sql("SELECT pg_switch_wal()");
            }
        });
        for kind in ["incr", "diff", "incr", "full", "incr"] {
            let mut cmd = a.cmd(&["backup", "--type", kind, "--start-fast", "y"]);
            cmd.args(Archive::pg_args(&c)).arg("--expire-auto").arg("n");
            let child = cmd
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            // Expire while the backup holds its lease: blocks must not be collected.
            let leased = wait_until(Duration::from_secs(60), || {
                rt().block_on(store.list("main/lock"))
                    .unwrap()
                    .iter()
                    .any(|l| l.path.contains("/backup-"))
            });
            let during = run(a.cmd(&["expire", "--output", "json"]));
            assert_eq!(during.code, 0, "{during:?}");
            // A lease there before the expire started and still there after it ended was there
            // all along (a backup takes one lease, once).
            let leased = leased
                && rt()
                    .block_on(store.list("main/lock"))
                    .unwrap()
                    .iter()
                    .any(|l| l.path.contains("/backup-"));
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "backup {kind}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v = json_of(&during);
            if leased {
                assert!(
                    v["gc_postponed"].as_str().is_some(),
                    "expire collected while a backup held its lease: {v:#}"
                );
            }
            expires.push(v);
            // And once it is done, expire collects.
            let after = run(a.cmd(&["expire", "--output", "json"]));
            assert_eq!(after.code, 0, "{after:?}");
            expires.push(json_of(&after));
        }
        stop.store(true, Ordering::SeqCst);
        load.join().unwrap();
    });
    assert!(expires.iter().any(|v| v["gc_postponed"].is_string()));
    assert!(
        expires
            .iter()
            .any(|v| v["gc"]["packs_deleted"].as_u64().unwrap_or(0)
                + v["gc"]["packs_rewritten"].as_u64().unwrap_or(0)
                > 0
                && v["freed_bytes"].as_i64().unwrap() > 0),
        "no expire collected anything: {expires:#?}"
    );
    assert!(
        expires
            .iter()
            .any(|v| !v["expired"].as_array().unwrap().is_empty())
    );

    c.sql("SELECT pg_switch_wal()");
    wait_archived(&c);
    let source = c.sql(HISTORY);
    let v = run(a.cmd(&["verify"]));
    assert_eq!(v.code, 0, "{v:?}");
    // Every retained backup restores; the newest replays to the end of the archive and holds
    // exactly what the source holds.
    let kept = labels(&a);
    assert!(!kept.is_empty());
    for l in &kept {
        let (r, _d) = restore_at(&a, &bin, l, &[]);
        assert!(
            r.sql("SELECT count(*) FROM pgbench_accounts")
                .parse::<i64>()
                .unwrap()
                > 0
        );
    }
    let dir = postgres_dir();
    let data = dir.path().join("data");
    let r = run(a.cmd(&[
        "restore",
        "--pg-path",
        data.to_str().unwrap(),
        "--target-action",
        "promote",
    ]));
    assert_eq!(r.code, 0, "{r:?}");
    let mut restored = Cluster::from_data_dir(&bin, &data, &[("archive_mode", "off")]);
    restored.start();
    assert!(wait_promoted(&restored), "{}", restored.log_tail(30));
    assert_eq!(restored.sql(HISTORY), source);
}

#[test]
fn verify_names_every_problem() {
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[]);
    let c = cluster(&bin, &a);
    c.pgbench_init(2);
    assert_eq!(a.on(&c, &["stanza-create"]).code, 0);
    let full = backup(&a, &c, "full");
    c.pgbench(&["-t", "200"]);
    let incr = backup(&a, &c, "incr");
    c.sql("SELECT pg_switch_wal()");
    c.pgbench(&["-t", "50"]);
    c.sql("SELECT pg_switch_wal()");
    wait_archived(&c);
    assert_eq!(run(a.cmd(&["verify"])).code, 0);
    let repo = a.dir.path().join("repo/main");

    // 1. A pack the full backup needs is deleted (the incr's own pack is the newest one).
    let mut packs: Vec<_> = files_under(&repo.join("pack"));
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    let deleted = packs[0].clone();
    std::fs::remove_file(&deleted).unwrap();
    // 2. A byte flipped in the newest WAL segment (outside both backups).
    let mut segs: Vec<_> = files_under(&repo.join("wal"))
        .into_iter()
        .filter(|p| p.file_name().unwrap().len() == 24)
        .collect();
    segs.sort();
    let flipped = segs.last().unwrap().clone();
    let mut b = std::fs::read(&flipped).unwrap();
    let n = b.len();
    b[n / 2] ^= 0x10;
    std::fs::write(&flipped, b).unwrap();
    // 3. The incr's first WAL segment is deleted.
    let start = incr["start_wal"].as_str().unwrap();
    let missing = segs
        .iter()
        .find(|p| p.file_name().unwrap().to_string_lossy() == start)
        .unwrap()
        .clone();
    std::fs::remove_file(&missing).unwrap();

    let r = run(a.cmd(&["verify", "--output", "json"]));
    assert_eq!(r.code, 22, "{r:?}");
    let v = json_of(&r);
    let problems: Vec<String> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}: {}", p["object"], p["problem"]))
        .collect();
    let all = problems.join("\n");
    let rel = |p: &Path| {
        p.strip_prefix(a.dir.path().join("repo"))
            .unwrap()
            .display()
            .to_string()
    };
    assert!(
        all.contains(&rel(&deleted)) && all.contains("missing"),
        "deleted pack not named:\n{all}"
    );
    assert!(
        all.contains(full["label"].as_str().unwrap()) && all.contains("cannot be restored"),
        "{all}"
    );
    assert!(
        all.contains(&rel(&flipped)) && all.contains("authentication failed"),
        "flipped WAL not named:\n{all}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains(incr["label"].as_str().unwrap()) && p.contains(start)),
        "missing WAL not named:\n{all}"
    );
    // Text output says the same.
    let t = run(a.cmd(&["verify"]));
    assert_eq!(t.code, 22);
    assert!(
        t.stdout.contains("PROBLEM") && t.stderr.contains("problem(s)"),
        "{t:?}"
    );

    // A damaged manifest: info still shows the rest and names it; verify names it too.
    let m = repo.join("backup").join(full["label"].as_str().unwrap());
    let mut b = std::fs::read(&m).unwrap();
    let n = b.len();
    b[n - 20] ^= 1;
    std::fs::write(&m, b).unwrap();
    let i = run(a.cmd(&["info", "--output", "json"]));
    assert_eq!(i.code, 0, "{i:?}");
    let iv = json_of(&i);
    let st = &iv["stanzas"][0];
    assert_eq!(st["backups"].as_array().unwrap().len(), 1, "{iv:#}");
    assert!(
        st["unreadable"][0]
            .as_str()
            .unwrap()
            .contains(full["label"].as_str().unwrap())
    );
    let v = run(a.cmd(&["verify"]));
    assert_eq!(v.code, 22);
    assert!(
        v.stdout
            .contains(&format!("main/backup/{}", full["label"].as_str().unwrap())),
        "{v:?}"
    );
}

#[test]
fn a_lone_incremental_restores_after_everything_else_expired() {
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[]);
    let c = cluster(&bin, &a);
    c.pgbench_init(3);
    assert_eq!(a.on(&c, &["stanza-create"]).code, 0);
    let full = backup(&a, &c, "full");
    c.pgbench(&["-t", "300"]);
    let i1 = backup(&a, &c, "incr");
    c.pgbench(&["-t", "300"]);
    // A `set` meant for another command, left in the environment, never steers the expire
    // that follows a backup.
    let i2 = backup_with(
        &a,
        &c,
        "incr",
        &[("PGFROST_SET", full["label"].as_str().unwrap())],
    );
    assert_eq!(labels(&a).len(), 3);
    let fp = c.sql(HISTORY);
    let newest = i2["label"].as_str().unwrap();
    // The newest cannot be expired by hand.
    let r = run(a.cmd(&["expire", "--set", newest]));
    assert_eq!(r.code, 3, "{r:?}");
    let set = format!(
        "{},{}",
        full["label"].as_str().unwrap(),
        i1["label"].as_str().unwrap()
    );
    // While a restore (a read lease) is at work, the backups go but their blocks stay.
    let rt = rt();
    let store = pgfrost::store::Store::open(&a.location, false).unwrap();
    let reader = rt
        .block_on(pgfrost::repo::lease::Lease::acquire(
            &store,
            "main",
            pgfrost::repo::lease::LeaseKind::Read,
            "restore",
        ))
        .unwrap();
    let r = run(a.cmd(&["expire", "--set", &set, "--output", "json"]));
    assert_eq!(r.code, 0, "{r:?}");
    let v = json_of(&r);
    assert_eq!(v["expired"].as_array().unwrap().len(), 2);
    assert!(v["gc"].is_null(), "{v:#}");
    assert!(
        v["gc_postponed"].as_str().unwrap().contains("read lease"),
        "{v:#}"
    );
    rt.block_on(reader.release());
    // Once it has finished, the next expire collects.
    let r = run(a.cmd(&["expire", "--output", "json"]));
    assert_eq!(r.code, 0, "{r:?}");
    let v = json_of(&r);
    assert!(v["gc"]["live_blocks"].as_u64().unwrap() > 0);
    assert!(v["freed_bytes"].as_i64().unwrap() > 0, "{v:#}");
    assert_eq!(labels(&a), vec![newest.to_string()]);
    assert_eq!(run(a.cmd(&["verify"])).code, 0);
    let (r, _d) = restore_at(&a, &bin, newest, &[]);
    assert_eq!(r.sql(HISTORY), fp);
}

#[test]
fn a_lease_as_stored_matches_its_schema_and_goes_when_released() {
    let (dir, store) = scratch_store();
    rt().block_on(async {
        use pgfrost::repo::lease::{Lease, LeaseKind, list};
        let l = Lease::acquire(&store, "main", LeaseKind::Backup, "backup")
            .await
            .unwrap();
        let found = list(&store, "main").await.unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].live(pgfrost::clock::real_unix()));
        let doc = dir.path().join(&found[0].path);
        assert_matches_schema(&doc, "lease.schema.json");
        // A gc lease written now makes a reader wait; released, the wait ends.
        let gc = Lease::acquire(&store, "main", LeaseKind::Gc, "expire")
            .await
            .unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(700), l.wait_for_gc("main")).await;
        assert!(waited.is_err(), "did not wait for the gc lease");
        gc.release().await;
        tokio::time::timeout(Duration::from_secs(5), l.wait_for_gc("main"))
            .await
            .expect("still waiting after the gc lease was released")
            .unwrap();
        assert!(l.still_held().await.unwrap());
        l.release().await;
        assert!(list(&store, "main").await.unwrap().is_empty());
    });
}

#[test]
fn expire_killed_at_random_points_leaves_a_consistent_repository() {
    let server = S3Server::start();
    killed_expires(Repo::Local, 6);
    killed_expires(Repo::S3(&server), 4);
}

fn killed_expires(repo: Repo, rounds: usize) {
    let bin = PgBin::pg15();
    // Small packs, so that collection rewrites and deletes many objects and a kill lands mid-way.
    let a = Archive::new(repo, &[("pack-size", "128KiB")]);
    let c = cluster(&bin, &a);
    c.pgbench_init(3);
    assert_eq!(a.on(&c, &["stanza-create"]).code, 0);
    backup(&a, &c, "full");
    let mut clock = KillClock::new("expire kill");
    let mut killed_mid_way = 0;
    for round in 0..rounds {
        c.pgbench(&["-t", "1500", "-c", "2"]);
        let newest = backup(&a, &c, if round % 3 == 0 { "full" } else { "incr" });
        let all = labels(&a);
        let older: Vec<&String> = all
            .iter()
            .filter(|l| l.as_str() != newest["label"].as_str().unwrap())
            .collect();
        let set = older
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",");
        // Kills are drawn within what this expire takes here (its dry run, and half again for
        // the deletions), so most land mid-way.
        let timed = std::time::Instant::now();
        let dry = run(a.cmd(&["expire", "--set", &set, "--dry-run", "y"]));
        assert_eq!(dry.code, 0, "{dry:?}");
        let span = timed.elapsed().as_millis() as u64 * 3 / 2 + 20;
        let delay = clock.below(span);
        let mut child = spawn_group(a.cmd(&["expire", "--set", &set]));
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed_mid_way += 1;
        }
        signal_group(&child, libc::SIGKILL);
        let _ = child.wait();
        // Whatever the kill interrupted: every backup still listed is whole.
        let v = run(a.cmd(&["verify"]));
        assert_eq!(v.code, 0, "round {round}, killed after {delay:?}: {v:?}");
        // The dead expire's lease does not hold anyone up, and the next expire finishes the job.
        let r = run(a.cmd(&["expire", "--output", "json"]));
        assert_eq!(r.code, 0, "{r:?}");
        let j = json_of(&r);
        assert!(j["gc_postponed"].is_null(), "{j:#}");
        // (Packs orphaned by the kill are part of what it collected.) Nothing is left over.
        let d = json_of(&run(a.cmd(&[
            "expire",
            "--dry-run",
            "y",
            "--output",
            "json",
        ])));
        assert_eq!(d["gc"]["orphan_packs"], 0, "{d:#}");
        assert_eq!(d["gc"]["packs_deleted"], 0, "{d:#}");
        assert_eq!(d["gc"]["segments_replaced"], 0, "{d:#}");
    }
    assert!(
        killed_mid_way >= 2,
        "only {killed_mid_way} kills landed before expire finished"
    );
    // The survivor restores to what the cluster holds now.
    let last = labels(&a).pop().unwrap();
    let fp = c.sql(HISTORY);
    let (r, _d) = restore_at(&a, &bin, &last, &[]);
    assert_eq!(r.sql(HISTORY), fp);
}

#[test]
fn staging_files_of_killed_writers_are_swept_once_old() {
    let (dir, store) = scratch_store();
    let d = dir.path().join("main/pack/ab");
    std::fs::create_dir_all(&d).unwrap();
    let old = d.join("abcd#7");
    let young = d.join("abce#8");
    let object = d.join("abcf");
    for p in [&old, &young, &object] {
        std::fs::write(p, b"0123456789").unwrap();
    }
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    for p in [&old, &object] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }
    let (n, bytes) = rt()
        .block_on(store.sweep_staging("main", Duration::from_secs(3600)))
        .unwrap();
    assert_eq!((n, bytes), (1, 10));
    assert!(!old.exists() && young.exists() && object.exists());
}

/// Every object of the repository: path -> size.
fn objects(a: &Archive) -> BTreeMap<String, u64> {
    let store = pgfrost::store::Store::open(&a.location, false).unwrap();
    rt().block_on(store.list(""))
        .unwrap()
        .into_iter()
        .filter(|l| !l.path.contains("/lock/"))
        .map(|l| (l.path, l.size))
        .collect()
}

/// The newest object under `prefix` (one the last backup wrote).
fn newest(a: &Archive, prefix: &str) -> String {
    let store = pgfrost::store::Store::open(&a.location, false).unwrap();
    let mut all = rt().block_on(store.list(prefix)).unwrap();
    all.sort_by_key(|l| l.modified);
    all.pop().unwrap().path
}

/// An index segment lost (a failed copy, an operator's mistake): garbage collection adopts the
/// packs it named from their trailers instead of deleting them as orphans, so the retained
/// backups stay whole; with a pack lost as well, it stops, names what is missing and deletes
/// nothing. On local disk and on S3.
#[test]
fn collection_never_deletes_what_a_lost_index_segment_named() {
    let server = S3Server::start();
    let bin = PgBin::pg15();
    for s3 in [false, true] {
        // Small, uncompressed packs: each backup writes many, under many index segments.
        let repo = if s3 { Repo::S3(&server) } else { Repo::Local };
        let a = Archive::new(repo, &[("pack-size", "64KiB"), ("compress-level", "0")]);
        let c = cluster(&bin, &a);
        c.pgbench_init(3);
        backup(&a, &c, "full");
        // Both backends keep objects as files here (s3s-fs too): their mtimes order the
        // segments to the nanosecond.
        let root = if s3 {
            server.bucket_dir().join(a.dir.path().file_name().unwrap())
        } else {
            a.dir.path().join("repo")
        };
        let mut first_segments: Vec<(std::time::SystemTime, String)> =
            files_under(&root.join("main/index"))
                .iter()
                .map(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().to_string();
                    (
                        p.metadata().unwrap().modified().unwrap(),
                        format!("main/index/{name}"),
                    )
                })
                .collect();
        first_segments.sort();
        assert!(first_segments.len() > 8, "{first_segments:?}");
        c.pgbench(&["-t", "300"]);
        backup(&a, &c, "full");
        c.pgbench(&["-t", "300"]);
        let incr = backup(&a, &c, "incr");
        let fp = c.sql(HISTORY);
        let label = incr["label"].as_str().unwrap();

        // One of the first full's segments is lost. The packs it named hold the first pages of
        // the largest files (each worker starts with one; a file's block list comes at its
        // end), pages the second full and the incr share by dedup: once the first full
        // expires, those packs look like orphans holding nothing anyone needs.
        a.delete_object(&first_segments[0].1);
        let r = run(a.cmd(&["expire", "--retention-full", "1", "--output", "json"]));
        assert_eq!(r.code, 0, "s3={s3}: {r:?}");
        let v = json_of(&r);
        assert_eq!(v["expired"].as_array().unwrap().len(), 1, "{v:#}");
        let r = run(a.cmd(&["verify"]));
        assert_eq!(r.code, 0, "s3={s3}: verify after collection: {r:?}\n{v:#}");
        assert!(v["gc"]["packs_adopted"].as_u64().unwrap() > 0, "{v:#}");
        let (restored, _d) = restore_at(&a, &bin, label, &[]);
        assert_eq!(restored.sql(HISTORY), fp, "s3={s3}");
        drop(restored);

        // Now a pack is lost too, with the segment naming it: nothing can locate its blocks.
        c.pgbench(&["-t", "300"]);
        backup(&a, &c, "incr");
        let pack = newest(&a, "main/pack");
        a.delete_object(&pack);
        a.delete_object(&newest(&a, "main/index"));
        let before = objects(&a);
        let r = run(a.cmd(&["expire", "--retention-full", "1"]));
        assert_ne!(r.code, 0, "s3={s3}: {r:?}");
        assert!(
            r.stderr.contains("stopped before deleting anything")
                && r.stderr.contains("in no stored pack")
                && r.stderr.contains("HINT"),
            "s3={s3}: {r:?}"
        );
        assert_eq!(
            objects(&a),
            before,
            "s3={s3}: a failed collection changed the repository"
        );
    }
}
