//! WAL archiving against real PostgreSQL clusters (15 and 18), with the repository on local disk
//! and on a real S3-compatible server: archive_command = pgfrost archive-push, restore_command =
//! pgfrost archive-get.

use crate::common;

use common::fixture::*;
use common::pg::*;
use common::*;
use std::time::Duration;

#[test]
fn archive_push_then_get_byte_for_byte_local_and_s3() {
    let server = S3Server::start();
    for bin in versions_under_test() {
        for repo in [Repo::Local, Repo::S3(&server)] {
            let label = format!(
                "PG{} {}",
                bin.major,
                if matches!(repo, Repo::Local) {
                    "local"
                } else {
                    "s3"
                }
            );
            let a = Archive::new(repo, &[]);
            let c = cluster(&bin, &a);
            c.pgbench_init(3);
            c.pgbench(&["-T", "2", "-c", "2"]);
            c.sql("SELECT pg_switch_wal()");
            switch_segments(&c, 2);
            wait_archived(&c);
            let done = status_files(&c, ".done");
            let segs = segments(&done);
            assert!(segs.len() >= 4, "{label}: only {done:?} archived");
            // Every file PostgreSQL completed reached the repository and comes back exact.
            for name in &done {
                let (r, got) = a.get(name);
                assert_eq!(r.code, 0, "{label} {name}: {r:?}");
                let orig = c.wal_dir().join(name);
                if orig.exists() {
                    assert!(
                        got.unwrap() == std::fs::read(&orig).unwrap(),
                        "{label}: {name} differs"
                    );
                }
            }
            // Stored compressed and encrypted: nothing in the repository is a plain segment.
            if let pgfrost::store::Location::Local(dir) = &a.location {
                let stored: u64 = files_under(&dir.join("main/wal"))
                    .iter()
                    .map(|p| p.metadata().unwrap().len())
                    .sum();
                assert!(
                    stored < segs.len() as u64 * (16 << 20) / 2,
                    "{label}: WAL not compressed ({stored} bytes)"
                );
            }
            // Not in the repository: exit 1, which PostgreSQL reads as the end of the archive.
            let (r, _) = a.get("0000000100000000000000FE");
            assert_eq!(r.code, 1, "{label}: {r:?}");
        }
    }
}

#[test]
fn recovery_replays_the_archive() {
    let server = S3Server::start();
    let runs: Vec<(PgBin, bool)> = versions_under_test()
        .into_iter()
        .map(|b| (b, false))
        .chain([(PgBin::pg15(), true)])
        .collect();
    for (bin, s3) in runs {
        let a = Archive::new(
            if s3 { Repo::S3(&server) } else { Repo::Local },
            &[("archive-get-queue-max", "64MB")],
        );
        let mut c = cluster(&bin, &a);
        c.pgbench_init(2);
        let base = postgres_dir();
        let base_data = base.path().join("data");
        c.basebackup(&base_data);
        // Work after the base backup, only in the archive.
        c.pgbench(&["-t", "500", "-c", "2"]);
        switch_segments(&c, 4);
        c.sql("CREATE TABLE marker AS SELECT 42 AS v");
        let q = "SELECT md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts";
        let expected = c.sql(q);
        // check switches WAL and waits until that segment is in the repository.
        let r = a.on(&c, &["check"]);
        assert_eq!(r.code, 0, "check: {r:?}\n{}", c.log_tail(20));
        assert!(r.stdout.contains("archiving works"), "{r:?}");
        c.stop();

        std::fs::write(base_data.join("recovery.signal"), "").unwrap();
        let settings = archive_settings(&a);
        let mut s: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let rc = a.restore_command();
        s.push(("restore_command", &rc));
        let mut r = Cluster::from_data_dir(&bin, &base_data, &s);
        r.start();
        let promoted = wait_promoted(&r);
        assert!(
            promoted,
            "PG{}: recovery did not finish\n{}",
            bin.major,
            r.log_tail(40)
        );
        assert_eq!(
            r.sql(q),
            expected,
            "PG{}: recovered data differs",
            bin.major
        );
        assert_eq!(r.sql("SELECT v FROM marker"), "42");
        let log = std::fs::read_to_string(r.server_log()).unwrap();
        assert!(
            log.contains("from the prefetch queue"),
            "PG{}: prefetch never served a segment",
            bin.major
        );
        // The promoted cluster archives its new timeline's history file into the same stanza.
        let got = wait_until(Duration::from_secs(60), || {
            a.get("00000002.history").0.code == 0
        });
        assert!(
            got,
            "PG{}: 00000002.history not archived\n{}",
            bin.major,
            r.log_tail(20)
        );
        r.stop();
    }
}

#[test]
fn duplicate_mismatched_foreign_and_corrupt() {
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[]);
    let mut c = cluster(&bin, &a);
    c.pgbench_init(1);
    c.basebackup(&postgres_dir().path().join("b"));
    switch_segments(&c, 2);
    wait_archived(&c);
    let done = status_files(&c, ".done");
    assert!(
        done.iter().any(|n| n.ends_with(".backup")),
        "no backup history file archived: {done:?}"
    );
    let seg = segments(&done)[0].clone();
    let orig = std::fs::read(c.wal_dir().join(&seg)).unwrap();

    let work = a.dir.path().join("pg_wal");
    std::fs::create_dir_all(&work).unwrap();
    give_to_postgres(&work);
    let put = |bytes: &[u8], name: &str| {
        let p = work.join(name);
        std::fs::write(&p, bytes).unwrap();
        give_to_postgres(&p);
        run(a.cmd(&["archive-push", p.to_str().unwrap()]))
    };

    // The same content again: success, with a warning.
    let r = put(&orig, &seg);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("already archived with the same content"),
        "{r:?}"
    );

    // Other content under the same name: refused, both checksums named, stored copy untouched.
    let mut changed = orig.clone();
    changed[1 << 20] ^= 0xff;
    let r = put(&changed, &seg);
    assert_eq!(r.code, 17, "{r:?}");
    let (a_sum, b_sum) = (
        blake3::hash(&orig).to_hex().to_string(),
        blake3::hash(&changed).to_hex().to_string(),
    );
    assert!(
        r.stderr.contains(&a_sum) && r.stderr.contains(&b_sum),
        "{r:?}"
    );
    assert!(a.get(&seg).1.unwrap() == orig);

    // A segment of another cluster: refused before anything is stored.
    let mut other = Cluster::init(&bin, &[]);
    other.start();
    other.sql("SELECT pg_switch_wal()");
    let foreign_name = "0000000100000000000000A0";
    let first = std::fs::read_dir(other.wal_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().len() == 24)
        .min()
        .unwrap();
    let foreign = std::fs::read(first).unwrap();
    other.stop();
    let r = put(&foreign, foreign_name);
    assert_eq!(r.code, 17, "{r:?}");
    assert!(
        r.stderr.contains("system identifier") && r.stderr.contains("nothing was stored"),
        "{r:?}"
    );
    assert_eq!(a.get(foreign_name).0.code, 1);
    // Not WAL at all, and a renamed segment of this cluster.
    let r = put(&vec![7u8; 16 << 20], "0000000100000000000000A1");
    assert_eq!(r.code, 17, "{r:?}");
    assert!(r.stderr.contains("WAL page header"), "{r:?}");
    let r = put(&orig, "0000000100000000000000A2");
    assert_eq!(r.code, 17, "{r:?}");
    assert!(r.stderr.contains("its name says"), "{r:?}");
    assert_eq!(a.get("0000000100000000000000A2").0.code, 1);

    // A corrupt object: during recovery archive-get must not look like "end of archive".
    let obj = files_under(&a.dir.path().join("repo/main/wal"))
        .into_iter()
        .find(|p| p.ends_with(&seg))
        .unwrap();
    let stored = std::fs::read(&obj).unwrap();
    let mut bad = stored.clone();
    let n = bad.len();
    bad[n / 2] ^= 1;
    std::fs::write(&obj, &bad).unwrap();
    let (r, got) = a.get(&seg);
    assert_eq!(r.code, 128 + 13, "{r:?}");
    assert!(got.is_none(), "a corrupt segment was handed over");
    assert!(
        r.stderr.contains(&seg) && r.stderr.contains("authentication failed"),
        "{r:?}"
    );
    // On a standby (standby.signal in the working directory) the plain code lets it retry.
    std::fs::write(a.dir.path().join("standby.signal"), "").unwrap();
    assert_eq!(a.get(&seg).0.code, 13);
    std::fs::remove_file(a.dir.path().join("standby.signal")).unwrap();
    std::fs::write(&obj, &stored).unwrap();
    assert!(a.get(&seg).1.unwrap() == orig);
    c.stop();
}

#[test]
fn sigkill_at_random_points_never_leaves_a_bad_segment() {
    let server = S3Server::start();
    let bin = PgBin::pg15();
    for repo in [Repo::Local, Repo::S3(&server)] {
        let a = Archive::new(repo, &[]);
        let mut c = cluster(&bin, &a);
        c.pgbench_init(2);
        switch_segments(&c, 2);
        wait_archived(&c);
        let segs = segments(&status_files(&c, ".done"));
        let work = a.dir.path().join("pg_wal");
        std::fs::create_dir_all(&work).unwrap();
        give_to_postgres(&work);
        let mut copies = Vec::new();
        for s in segs.iter().take(3) {
            let p = work.join(s);
            std::fs::copy(c.wal_dir().join(s), &p).unwrap();
            give_to_postgres(&p);
            copies.push((s.clone(), p, std::fs::read(c.wal_dir().join(s)).unwrap()));
        }
        c.stop();
        let mut clock = KillClock::new("sigkill");
        // Kills are drawn within the time one push really takes here, so most land mid-way.
        // The fastest of three pushes: the first one runs with cold caches, and a busy machine
        // makes any single one slow, which would put most kills after the push had finished.
        let (name0, path0, _) = &copies[0];
        let mut push_ms = u64::MAX;
        for _ in 0..3 {
            a.delete_object(&format!("main/wal/0001/{}/{name0}", &name0[..16]));
            let timed = std::time::Instant::now();
            let r = run(a.cmd(&["archive-push", path0.to_str().unwrap()]));
            assert_eq!(r.code, 0, "{r:?}");
            push_ms = push_ms.min(timed.elapsed().as_millis() as u64);
        }
        let push_ms = push_ms.max(20);
        eprintln!("one archive-push takes {push_ms} ms here");
        let mut killed_mid_way = 0;
        // Rounds go on (up to 60) until enough kills have landed mid-way.
        for i in 0..60 {
            if i >= 18 && killed_mid_way >= 6 {
                break;
            }
            let (name, path, bytes) = &copies[i % copies.len()];
            let obj = format!("main/wal/0001/{}/{name}", &name[..16]);
            a.delete_object(&obj);
            let delay = clock.below(push_ms);
            let mut child = spawn_group(a.cmd(&["archive-push", path.to_str().unwrap()]));
            std::thread::sleep(delay);
            let finished = child.try_wait().unwrap().is_some();
            signal_group(&child, libc::SIGKILL);
            let _ = child.wait();
            if !finished {
                killed_mid_way += 1;
            }
            // Either nothing is stored, or the whole segment is.
            let (r, got) = a.get(name);
            match r.code {
                // Not stored: the end of the archive, or (later segments of earlier rounds
                // are stored) a gap, which archive-get names as such so recovery stops there.
                1 => {}
                142 => assert!(r.stderr.contains("a gap in the archive"), "{r:?}"),
                0 => assert!(
                    got.as_ref() == Some(bytes),
                    "killed after {delay:?}: stored segment differs"
                ),
                _ => panic!("killed after {delay:?}: archive-get says {r:?}"),
            }
            // PostgreSQL's retry succeeds.
            let r = run(a.cmd(&["archive-push", path.to_str().unwrap()]));
            assert_eq!(r.code, 0, "retry after a kill at {delay:?}: {r:?}");
            assert!(a.get(name).1.as_ref() == Some(bytes));
        }
        assert!(
            killed_mid_way >= 3,
            "only {killed_mid_way} kills landed before the push finished"
        );
        // A kill can leave a staging file behind (garbage), but never a visible partial object:
        // everything the repository lists under wal/ is a whole, valid WAL file name.
        let store = pgfrost::store::Store::open(&a.location, false).unwrap();
        for l in rt().block_on(store.list("main/wal")).unwrap() {
            let name = l.path.rsplit('/').next().unwrap();
            assert!(
                pgfrost::pg::wal::WalFile::parse(name).is_some(),
                "listed object {}",
                l.path
            );
        }
    }
}

#[test]
fn async_mode_ships_the_backlog_and_queue_max_drops_it_loudly() {
    let bin = PgBin::pg15();
    for (extra, drop) in [
        (vec![("archive-async", "y")], false),
        (vec![("archive-push-queue-max", "20MB")], true),
    ] {
        let a = Archive::new(Repo::Local, &extra);
        // A backlog: archiving fails until the command is switched to pgfrost.
        let mut c = Cluster::init(
            &bin,
            &[
                ("archive_mode", "on"),
                ("archive_command", "'/bin/false'"),
                ("wal_keep_size", "'1GB'"),
            ],
        );
        c.start();
        assert_eq!(a.on(&c, &["stanza-create"]).code, 0);
        switch_segments(&c, 6);
        assert!(
            status_files(&c, ".ready").len() >= 5,
            "{:?}",
            status_files(&c, ".ready")
        );
        let backlog = segments(&status_files(&c, ".ready"));
        c.sql(&format!(
            "ALTER SYSTEM SET archive_command = {}",
            a.archive_command()
        ));
        c.sql("SELECT pg_reload_conf()");
        wait_archived(&c);
        let log = std::fs::read_to_string(c.server_log()).unwrap();
        if drop {
            assert!(log.contains("DROPPING"), "queue-max never fired");
            let dropped: Vec<_> = std::fs::read_dir(a.dir.path().join("spool/main/dropped"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect();
            assert!(!dropped.is_empty());
            // Later segments were shipped, so each dropped one is a gap: archive-get says so
            // (exit 142, fatal to recovery) rather than "not there", which would let
            // PostgreSQL end recovery early and promote (docs/archive.md, "Gaps are not the end of the archive").
            for d in &dropped {
                let (r, got) = a.get(d);
                assert!(got.is_none(), "dropped {d} is in the repository");
                assert_eq!(r.code, 142, "dropped {d}: {r:?}");
                assert!(r.stderr.contains("a gap in the archive"), "{r:?}");
            }
        } else {
            assert!(
                log.contains("shipped") && log.contains("already archived ahead"),
                "async path not taken:\n{log}"
            );
            for s in &backlog {
                let (r, got) = a.get(s);
                assert_eq!(r.code, 0, "{s}: {r:?}");
                assert!(got.unwrap() == std::fs::read(c.wal_dir().join(s)).unwrap());
            }
        }
        c.stop();
    }
}

#[test]
fn check_explains_what_is_wrong() {
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[]);
    let mut off = Cluster::init(&bin, &[]);
    off.start();
    assert_eq!(a.on(&off, &["stanza-create"]).code, 0);
    let r = a.on(&off, &["check"]);
    assert_eq!(r.code, 20, "{r:?}");
    assert!(
        r.stderr.contains("archive_mode is off") && r.stderr.contains("HINT:"),
        "{r:?}"
    );
    off.stop();

    let mut other = Cluster::init(
        &bin,
        &[("archive_mode", "on"), ("archive_command", "'/bin/true'")],
    );
    other.start();
    let r = a.on(&other, &["check"]);
    assert_eq!(r.code, 20, "{r:?}");
    assert!(
        r.stderr.contains("does not call pgfrost archive-push"),
        "{r:?}"
    );
    // stanza-create for a different cluster on the same stanza is refused.
    let r = a.on(&other, &["stanza-create"]);
    assert_eq!(r.code, 17, "{r:?}");
    assert!(r.stderr.contains("stanza-upgrade"), "{r:?}");
    other.stop();

    // An archive_command that calls pgfrost but fails (wrong stanza): check times out and says so.
    let b = Archive::new(Repo::Local, &[("archive-timeout", "5")]);
    let bad_cmd = format!(
        "'{} --config {} --stanza nosuch archive-push %p'",
        b.bin.display(),
        b.cfg.display()
    );
    let mut c = Cluster::init(
        &bin,
        &[("archive_mode", "on"), ("archive_command", &bad_cmd)],
    );
    c.start();
    assert_eq!(b.on(&c, &["stanza-create"]).code, 0);
    let r = b.on(&c, &["check"]);
    assert_eq!(r.code, 20, "{r:?}");
    assert!(r.stderr.contains("archive_command failed"), "{r:?}");
    c.stop();

    // pgfrost not on the server's PATH: the shell exits 127, which PostgreSQL does not count as
    // a failure (its archiver just restarts). check must point at the log and the full path,
    // not at the stanza.
    let not_found = format!(
        "'pgfrost-not-installed-here --config {} archive-push %p'",
        b.cfg.display()
    );
    let mut c = Cluster::init(
        &bin,
        &[("archive_mode", "on"), ("archive_command", &not_found)],
    );
    c.start();
    let b2 = Archive::new(Repo::Local, &[("archive-timeout", "5")]);
    assert_eq!(b2.on(&c, &["stanza-create"]).code, 0);
    let r = b2.on(&c, &["check"]);
    assert_eq!(r.code, 20, "{r:?}");
    assert!(
        r.stderr.contains("counts no failure")
            && r.stderr.contains("exit code 127")
            && r.stderr.contains("full path"),
        "{r:?}"
    );
    c.stop();
}

#[test]
fn stanza_upgrade_keeps_the_history() {
    let a = Archive::new(Repo::Local, &[]);
    let mut old = cluster(&PgBin::pg15(), &a);
    switch_segments(&old, 4);
    wait_archived(&old);
    let old_segs = segments(&status_files(&old, ".done"));
    let last_old = old_segs.last().unwrap().clone();
    let last_old_bytes = std::fs::read(old.wal_dir().join(&last_old)).unwrap();
    old.stop();

    // "pg_upgrade": a new cluster of another major version takes over the stanza.
    let settings = archive_settings(&a);
    let s: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut new = Cluster::init(&PgBin::pg18(), &s);
    new.start();
    let r = a.on(&new, &["stanza-create"]);
    assert_eq!(r.code, 17, "{r:?}");
    let r = a.on(&new, &["stanza-upgrade", "--output", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["db_id"], 2);
    assert_eq!(v["pg_major"], 18);
    assert_eq!(
        a.on(&new, &["stanza-upgrade"]).code,
        0,
        "a second upgrade must be a no-op"
    );
    let r = a.on(&new, &["check"]);
    assert_eq!(r.code, 0, "{r:?}\n{}", new.log_tail(20));
    assert!(!files_under(&a.dir.path().join("repo/main/wal/0002")).is_empty());
    // The old cluster's WAL is still there, found under its own record.
    let (r, got) = a.get(&last_old);
    assert_eq!(r.code, 0, "{r:?}");
    if !new.wal_dir().join(&last_old).exists() {
        assert!(got.unwrap() == last_old_bytes);
    }
    new.stop();
}

#[test]
fn prefetch_queue_serves_only_its_own_repository() {
    let bin = PgBin::pg15();
    let q = [("archive-get-queue-max", "64MB")];
    let a = Archive::new(Repo::Local, &q);
    let b = Archive::new(Repo::Local, &q);
    // B: another repository with the same stanza name ('main') and A's spool-path.
    let spool = a.dir.path().join("spool");
    let toml: String = std::fs::read_to_string(&b.cfg)
        .unwrap()
        .lines()
        .map(|l| match l.starts_with("spool-path") {
            true => format!("spool-path = '{}'\n", spool.display()),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&b.cfg, toml).unwrap();
    let mut c = cluster(&bin, &a);
    assert_eq!(b.on(&c, &["stanza-create"]).code, 0);
    switch_segments(&c, 6);
    wait_archived(&c);
    let segs = segments(&status_files(&c, ".done"));
    assert!(segs.len() >= 4, "only {segs:?} archived");
    let orig = |s: &str| std::fs::read(c.wal_dir().join(s)).unwrap();

    // Fill A's queue.
    let (r, got) = a.get(&segs[0]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(got.unwrap() == orig(&segs[0]));
    let get_dir = spool.join("main/get");
    let queues: Vec<_> = std::fs::read_dir(&get_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(queues.len(), 1, "{queues:?}");
    let queue = &queues[0];
    assert!(queue.is_dir() && queue.join(&segs[1]).is_file() && queue.join(&segs[2]).is_file());

    // What an older version left: the segment itself, flat under get/.
    std::fs::write(get_dir.join(&segs[1]), orig(&segs[1])).unwrap();
    // B does not hold segs[1]: neither A's queue nor the flat file answers for it.
    let (r, got) = b.get(&segs[1]);
    assert_eq!(r.code, 1, "B served a segment it does not hold: {r:?}");
    assert!(got.is_none());
    assert!(!r.stderr.contains("from the prefetch queue"), "{r:?}");

    // A's own queue still serves A.
    let (r, got) = a.get(&segs[1]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("from the prefetch queue"), "{r:?}");
    assert!(got.unwrap() == orig(&segs[1]));

    // A queued file altered in place is discarded and fetched from the repository.
    let p = queue.join(&segs[2]);
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&p, &bytes).unwrap();
    let (r, got) = a.get(&segs[2]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("does not authenticate"), "{r:?}");
    assert!(!r.stderr.contains("from the prefetch queue"), "{r:?}");
    assert!(got.unwrap() == orig(&segs[2]), "tampered bytes served");
    // That fetch prefetched again, and removed the flat file of the older version.
    assert!(!get_dir.join(&segs[1]).exists());
    assert!(queue.join(&segs[3]).is_file());
    c.stop();
}
