//! Recovery on a stanza with a history (issue 18): a cluster restored to a time and promoted
//! (timeline 2) archives into the same stanza as the primary it came from, which goes on on
//! timeline 1. Restores to times, ends of archive and timelines each give exactly the rows of
//! that moment; time targets are read as PostgreSQL reads them; bad targets are refused before
//! anything is written; a WAL gap is never taken for the end of the archive.

use crate::common;

use common::fixture::*;
use common::pg::*;
use common::*;
use std::path::Path;
use std::time::Duration;

/// The rounds of rows a cluster holds, as "1,2,4".
fn rounds(c: &Cluster) -> String {
    c.sql("SELECT string_agg(r::text, ',' ORDER BY r) FROM (SELECT DISTINCT r FROM t) s")
}

fn round(c: &Cluster, n: u32) {
    c.sql(&format!(
        "INSERT INTO t SELECT {n}, g FROM generate_series(1, 100) g"
    ));
}

/// `restore` into `data` with `args` and `--output json`: the run and its output.
fn restore(a: &Archive, data: &Path, args: &[&str]) -> (Run, serde_json::Value) {
    let mut all = vec![
        "restore",
        "--pg-path",
        data.to_str().unwrap(),
        "--output",
        "json",
    ];
    if !args.contains(&"--target-action") {
        all.extend(["--target-action", "promote"]);
    }
    all.extend_from_slice(args);
    let r = run(a.cmd(&all));
    let v = serde_json::from_str(&r.stdout).unwrap_or(serde_json::Value::Null);
    (r, v)
}

/// Restores with `args` (archiving off), recovers, and returns the rounds the cluster holds
/// and the backup used.
fn recovered(a: &Archive, bin: &PgBin, args: &[&str]) -> (String, String) {
    let dir = postgres_dir();
    let data = dir.path().join("data");
    let mut all = vec!["--archive-mode", "off"];
    all.extend_from_slice(args);
    let (r, out) = restore(a, &data, &all);
    assert_eq!(r.code, 0, "restore {args:?}: {r:?}");
    let mut rc = Cluster::from_data_dir(bin, &data, &[]);
    rc.start();
    assert!(
        wait_promoted(&rc),
        "restore {args:?}: recovery did not end\n{}",
        rc.log_tail(30)
    );
    let got = rounds(&rc);
    rc.stop();
    (got, out["label"].as_str().unwrap().to_string())
}

/// A PostgreSQL 15 primary archiving into `a`'s stanza (created), with the table `t` the rounds
/// go into.
fn primary(a: &Archive, bin: &PgBin, extra: &[(&str, &str)]) -> Cluster {
    let s = archive_settings(a);
    let mut s: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
    s.extend_from_slice(extra);
    let mut c = Cluster::init(bin, &s);
    c.start();
    assert_eq!(a.on(&c, &["stanza-create"]).code, 0);
    c.sql("CREATE TABLE t(r int, i int)");
    c
}

#[test]
fn recovery_follows_timelines_targets_and_gaps() {
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[]);
    let mut c = primary(&a, &bin, &[("timezone", "'Asia/Tokyo'")]);
    round(&c, 1);
    let b1 = backup(&a, &c, "full")["label"]
        .as_str()
        .unwrap()
        .to_string();
    round(&c, 2);
    std::thread::sleep(Duration::from_millis(50));
    c.sql("CREATE TABLE mark AS SELECT clock_timestamp() AS ts");
    let at = |zone: &str| {
        c.sql(&format!(
            "SELECT to_char(ts AT TIME ZONE '{zone}', 'YYYY-MM-DD HH24:MI:SS.US') FROM mark"
        ))
    };
    let (tokyo, utc) = (at("Asia/Tokyo"), at("UTC"));
    std::thread::sleep(Duration::from_millis(50));
    round(&c, 3);
    assert_eq!(a.on(&c, &["check"]).code, 0);

    // Bad targets and options: exit 3, naming the option, before anything is written.
    let untouched = postgres_dir();
    let data = untouched.path().join("data");
    for args in [
        &["--type", "time", "--target", "garbage"][..],
        &["--type", "time", "--target", "2026-13-45 99:99:99"],
        &[
            "--type",
            "time",
            "--target",
            "2026-11-21 09:30:00 Mars/Olympus",
        ],
        &["--set", &b1, "--type", "time", "--target", "garbage"],
        &["--type", "xid", "--target", "12ab"],
        &["--type", "lsn", "--target", "0/XYZ"],
        &["--type", "name", "--target", &"x".repeat(64)],
        &["--type", "default", "--target", "0/1000000"],
        &["--target-timeline", "sideways"],
        &["--target-action", "explode"],
    ] {
        let (r, _) = restore(&a, &data, args);
        assert_eq!(r.code, 3, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("target") && r.stderr.contains("HINT"),
            "{args:?}: {r:?}"
        );
        assert!(!data.exists(), "{args:?} wrote {}", data.display());
    }
    // --set with a backup that cannot reach the target: refused, nothing written.
    let (r, _) = restore(
        &a,
        &data,
        &[
            "--set",
            &b1,
            "--type",
            "time",
            "--target",
            "2000-01-01 00:00:00+00",
        ],
    );
    assert_eq!(r.code, 14, "{r:?}");
    assert!(
        r.stderr.contains(&b1) && r.stderr.contains("not before the target"),
        "{r:?}"
    );
    assert!(!data.exists());

    // One moment in four notations and two zones; the zone-less one is read in the restored
    // cluster's timezone (Asia/Tokyo), as PostgreSQL reads it, and the output says so.
    for target in [
        format!("{utc}+00"),
        format!("{tokyo}+0900"),
        format!("{tokyo} Asia/Tokyo"),
        tokyo.clone(),
    ] {
        let (got, label) = recovered(&a, &bin, &["--type", "time", "--target", &target]);
        assert_eq!(got, "1,2", "--target '{target}'");
        assert_eq!(label, b1);
    }
    {
        let dir = postgres_dir();
        let data = dir.path().join("data");
        let (r, out) = restore(
            &a,
            &data,
            &[
                "--archive-mode",
                "off",
                "--type",
                "time",
                "--target",
                &tokyo,
            ],
        );
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(out["target_zone"], "Asia/Tokyo", "{r:?}");
    }

    // A PITR to that moment, promoted with archiving on: timeline 2 in the same stanza, while
    // the old primary goes on on timeline 1.
    let d1 = postgres_dir();
    let data1 = d1.path().join("data");
    let (r, _) = restore(
        &a,
        &data1,
        &["--type", "time", "--target", &format!("{utc}+00")],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let mut p2 = Cluster::from_data_dir(&bin, &data1, &[]);
    p2.start();
    assert!(wait_promoted(&p2), "{}", p2.log_tail(30));
    assert_eq!(rounds(&p2), "1,2");
    assert_eq!(
        p2.sql("SELECT timeline_id FROM pg_control_checkpoint()"),
        "2"
    );
    let b2 = backup(&a, &p2, "incr");
    let b2_label = b2["label"].as_str().unwrap().to_string();
    assert_eq!(b2["parent"], b1.as_str(), "timeline 1 before the branch");
    round(&p2, 4);
    std::thread::sleep(Duration::from_millis(50));
    let t2 = p2.sql("SELECT clock_timestamp()::text");
    std::thread::sleep(Duration::from_millis(50));
    round(&p2, 6);
    assert_eq!(a.on(&p2, &["check"]).code, 0);

    // The old primary's next incremental: never on the other timeline's backup.
    round(&c, 5);
    let b3 = backup(&a, &c, "incr");
    let b3_label = b3["label"].as_str().unwrap().to_string();
    assert_eq!(b3["parent"], b1.as_str(), "{b3}");
    assert_eq!(a.on(&c, &["check"]).code, 0);

    // End of the archive follows the latest timeline (2): the newest backup (b3, timeline 1
    // after the branch) cannot reach it, the standby's can; the old recovery_target_time the
    // PITR left in postgresql.auto.conf is commented out, so every row is there.
    let (got, label) = recovered(&a, &bin, &[]);
    assert_eq!(
        (got.as_str(), label.as_str()),
        ("1,2,4,6", b2_label.as_str())
    );
    {
        let dir = postgres_dir();
        let data = dir.path().join("data");
        let (r, _) = restore(&a, &data, &["--archive-mode", "off"]);
        assert_eq!(r.code, 0, "{r:?}");
        let auto = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
        let live: Vec<&str> = auto
            .lines()
            .filter(|l| l.trim_start().starts_with("recovery_target_time"))
            .collect();
        assert!(live.is_empty(), "{auto}");
        assert!(
            auto.contains("# disabled by pgfrost restore of backup")
                && auto.contains("recovery_target_time"),
            "{auto}"
        );
    }
    // A time on timeline 2.
    let (got, label) = recovered(&a, &bin, &["--type", "time", "--target", &t2]);
    assert_eq!((got.as_str(), label.as_str()), ("1,2,4", b2_label.as_str()));
    // Timeline 1 to its end: the old primary's own backup.
    let (got, label) = recovered(&a, &bin, &["--target-timeline", "1"]);
    assert_eq!(
        (got.as_str(), label.as_str()),
        ("1,2,3,5", b3_label.as_str())
    );
    // The standby's backup cannot reach timeline 1's end: refused, naming why.
    let (r, _) = restore(&a, &data, &["--set", &b2_label, "--target-timeline", "1"]);
    assert_eq!(r.code, 14, "{r:?}");
    assert!(
        r.stderr.contains("not in the history of timeline 1"),
        "{r:?}"
    );
    assert!(!data.exists());

    // A gap: a segment of timeline 1 missing while later ones are stored.
    switch_segments(&c, 3);
    assert_eq!(a.on(&c, &["check"]).code, 0);
    let last = c.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    let seg = |n: i64| {
        c.sql(&format!(
            "SELECT pg_walfile_name(pg_current_wal_lsn() - {n} * 16 * 1024 * 1024)"
        ))
    };
    let hole = seg(2);
    a.delete_object(&format!("main/wal/0001/{}/{hole}", &hole[..16]));
    let (r, _) = a.get(&hole);
    assert!(r.code > 125, "{r:?}");
    assert!(r.stderr.contains("gap"), "{r:?}");
    // Past the end is still the end.
    let next = format!(
        "{}{:08X}",
        &last[..16],
        u32::from_str_radix(&last[16..], 16).unwrap() + 5
    );
    let (r, _) = a.get(&next);
    assert_eq!(r.code, 1, "{r:?}");
    // A backup whose own WAL is missing is not chosen; with --set it is refused.
    let start = b3["start_wal"].as_str().unwrap();
    a.delete_object(&format!("main/wal/0001/{}/{start}", &start[..16]));
    let (r, _) = restore(&a, &data, &["--set", &b3_label, "--target-timeline", "1"]);
    assert_eq!(r.code, 14, "{r:?}");
    assert!(r.stderr.contains(start), "{r:?}");
    assert!(!data.exists());
    let (r, out) = restore(
        &a,
        &data,
        &[
            "--archive-mode",
            "off",
            "--target-timeline",
            "1",
            "--type",
            "immediate",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(out["label"], b1.as_str(), "{r:?}");
    p2.stop();
    c.stop();
}

/// `INSERT`s round `n` in one transaction and returns its xid (64-bit, with its epoch).
fn round_xid(c: &Cluster, n: u32) -> String {
    let out = c.sql(&format!(
        "INSERT INTO t SELECT {n}, g FROM generate_series(1, 100) g RETURNING pg_current_xact_id()"
    ));
    out.lines().next().unwrap().to_string()
}

fn point(c: &Cluster, name: &str) {
    c.sql(&format!("SELECT pg_create_restore_point('{name}')"));
}

/// Restore points and xids on a stanza with two timelines: `--type name` and `--type xid` pick
/// the newest backup that can reach the target (a nightly backup taken after the point is not
/// it), follow the target timeline's history (a point of the old primary after the branch is
/// refused on the new timeline, reached on its own), the newest of two points of one name wins,
/// and an unknown name names the known ones. Each restore holds exactly the rows of that moment.
#[test]
fn restore_points_and_xids_on_each_timeline() {
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[]);
    let mut c = primary(&a, &bin, &[]);
    let b0 = backup(&a, &c, "full")["label"]
        .as_str()
        .unwrap()
        .to_string();
    let x1 = round_xid(&c, 1);
    point(&c, "before_migration");
    round(&c, 2);
    let lsn2 = c.sql("SELECT pg_current_wal_lsn()");
    // The nightly backup, after the point.
    let b1 = backup(&a, &c, "full")["label"]
        .as_str()
        .unwrap()
        .to_string();
    let x3 = round_xid(&c, 3);
    point(&c, "tl1_late");
    assert_eq!(a.on(&c, &["check"]).code, 0);

    let info = |want: &[&str]| {
        let r = run(a.cmd(&["info", "--output", "json"]));
        assert_eq!(r.code, 0, "{r:?}");
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let mut got: Vec<String> = v["stanzas"][0]["restore_points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| format!("{}@{}", p["name"].as_str().unwrap(), p["timeline"]))
            .collect();
        got.sort();
        let mut want: Vec<String> = want.iter().map(|w| w.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{v:#}");
    };
    info(&["before_migration@1", "tl1_late@1"]);

    // The point before the nightly backup is reached from the backup before it, without --set.
    let (got, label) = recovered(
        &a,
        &bin,
        &["--type", "name", "--target", "before_migration"],
    );
    assert_eq!((got.as_str(), label.as_str()), ("1", b0.as_str()));
    let (got, label) = recovered(&a, &bin, &["--type", "xid", "--target", &x1]);
    assert_eq!((got.as_str(), label.as_str()), ("1", b0.as_str()));
    // The same xid given without its epoch, as xid (32-bit) values print.
    let x1_32 = (x1.parse::<u64>().unwrap() & 0xFFFF_FFFF).to_string();
    let (got, label) = recovered(&a, &bin, &["--type", "xid", "--target", &x1_32]);
    assert_eq!((got.as_str(), label.as_str()), ("1", b0.as_str()));
    let (got, label) = recovered(&a, &bin, &["--type", "lsn", "--target", &lsn2]);
    assert_eq!((got.as_str(), label.as_str()), ("1,2", b0.as_str()));
    let (got, label) = recovered(&a, &bin, &["--type", "xid", "--target", &x3]);
    assert_eq!((got.as_str(), label.as_str()), ("1,2,3", b1.as_str()));
    // --set of a backup the point cannot be reached from: refused, naming why.
    let dir = postgres_dir();
    let data = dir.path().join("data");
    let (r, _) = restore(
        &a,
        &data,
        &[
            "--set",
            &b1,
            "--type",
            "name",
            "--target",
            "before_migration",
        ],
    );
    assert_eq!(r.code, 14, "{r:?}");
    assert!(r.stderr.contains("after restore point"), "{r:?}");
    assert!(!data.exists());
    // An unknown name: refused before anything is written, the known ones listed.
    let (r, _) = restore(
        &a,
        &data,
        &["--type", "name", "--target", "befor_migration"],
    );
    assert_eq!(r.code, 14, "{r:?}");
    assert!(
        r.stderr.contains("'befor_migration' is not recorded")
            && r.stderr.contains("HINT")
            && r.stderr.contains("'before_migration' at")
            && r.stderr.contains("'tl1_late' at"),
        "{r:?}"
    );
    assert!(!data.exists());

    // A PITR to the late point, promoted with archiving on: timeline 2 in the same stanza.
    let d2 = postgres_dir();
    let data2 = d2.path().join("data");
    let (r, out) = restore(&a, &data2, &["--type", "name", "--target", "tl1_late"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(out["label"], b1.as_str());
    let mut p2 = Cluster::from_data_dir(&bin, &data2, &[]);
    p2.start();
    assert!(wait_promoted(&p2), "{}", p2.log_tail(30));
    assert_eq!(rounds(&p2), "1,2,3");
    let x4 = round_xid(&p2, 4);
    let lsn4 = p2.sql("SELECT pg_current_wal_lsn()");
    point(&p2, "tl2_point");
    round(&p2, 5);
    // The name used again, later, on timeline 2.
    point(&p2, "before_migration");
    round(&p2, 7);
    assert_eq!(a.on(&p2, &["check"]).code, 0);
    // The old primary goes on on timeline 1.
    round(&c, 6);
    point(&c, "tl1_after_fork");
    assert_eq!(a.on(&c, &["check"]).code, 0);
    info(&[
        "before_migration@1",
        "tl1_late@1",
        "tl2_point@2",
        "before_migration@2",
        "tl1_after_fork@1",
    ]);

    let (got, label) = recovered(&a, &bin, &["--type", "name", "--target", "tl2_point"]);
    assert_eq!((got.as_str(), label.as_str()), ("1,2,3,4", b1.as_str()));
    let (got, _) = recovered(&a, &bin, &["--type", "xid", "--target", &x4]);
    assert_eq!(got, "1,2,3,4");
    let (got, label) = recovered(&a, &bin, &["--type", "lsn", "--target", &lsn4]);
    assert_eq!((got.as_str(), label.as_str()), ("1,2,3,4", b1.as_str()));
    // The newest point of the name on timeline 2's history is timeline 2's own.
    let (got, label) = recovered(
        &a,
        &bin,
        &["--type", "name", "--target", "before_migration"],
    );
    assert_eq!((got.as_str(), label.as_str()), ("1,2,3,4,5", b1.as_str()));
    // With --set of the backup before the first one, the first point after it is meant (said
    // in a warning): the older 'before_migration', reached along timeline 2.
    let (got, label) = recovered(
        &a,
        &bin,
        &[
            "--set",
            &b0,
            "--type",
            "name",
            "--target",
            "before_migration",
        ],
    );
    assert_eq!((got.as_str(), label.as_str()), ("1", b0.as_str()));
    // On timeline 1 it is the old one, before the nightly backup.
    let (got, label) = recovered(
        &a,
        &bin,
        &[
            "--type",
            "name",
            "--target",
            "before_migration",
            "--target-timeline",
            "1",
        ],
    );
    assert_eq!((got.as_str(), label.as_str()), ("1", b0.as_str()));
    // The old primary's point after the branch is not on timeline 2's history...
    let (r, _) = restore(&a, &data, &["--type", "name", "--target", "tl1_after_fork"]);
    assert_eq!(r.code, 14, "{r:?}");
    assert!(r.stderr.contains("history of timeline 2"), "{r:?}");
    assert!(!data.exists());
    // ...and is reached on timeline 1.
    let (got, _) = recovered(
        &a,
        &bin,
        &[
            "--type",
            "name",
            "--target",
            "tl1_after_fork",
            "--target-timeline",
            "1",
        ],
    );
    assert_eq!(got, "1,2,3,6");
    p2.stop();
    c.stop();
}

/// The first story of issue 18: a standby restored from the repository follows the primary's
/// archive, is promoted (timeline 2) and archives and backs up into the same stanza while the
/// old primary goes on on timeline 1. Each line of history restores with exactly its own rows,
/// from its own backups, and each side's incrementals are parented on its own history.
#[test]
fn a_promoted_standby_and_the_old_primary_share_the_stanza() {
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[]);
    let mut c = primary(&a, &bin, &[]);
    round(&c, 1);
    let ba = backup(&a, &c, "full")["label"]
        .as_str()
        .unwrap()
        .to_string();
    round(&c, 2);
    assert_eq!(a.on(&c, &["check"]).code, 0);

    // The standby: restored as one, archiving kept, replaying the archive until promoted.
    let ds = postgres_dir();
    let datas = ds.path().join("data");
    let r = run(a.cmd(&[
        "restore",
        "--type",
        "standby",
        "--pg-path",
        datas.to_str().unwrap(),
    ]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(datas.join("standby.signal").exists());
    let mut sb = Cluster::from_data_dir(&bin, &datas, &[]);
    sb.start();
    assert!(
        wait_until(Duration::from_secs(120), || {
            sb.try_sql("SELECT count(*) FROM t").as_deref() == Ok("200")
        }),
        "the standby did not replay the archive\n{}",
        sb.log_tail(30)
    );
    assert_eq!(sb.sql("SELECT pg_is_in_recovery()"), "t");
    sb.sql("SELECT pg_promote()");
    assert!(wait_promoted(&sb), "{}", sb.log_tail(30));
    // Promotion does not wait for a checkpoint: the timeline shows in the WAL being written.
    assert_eq!(
        sb.sql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"),
        "00000002"
    );
    round(&sb, 3);
    let bs = backup(&a, &sb, "incr");
    assert_eq!(
        bs["parent"],
        ba.as_str(),
        "timeline 1 before the branch: {bs}"
    );
    let bs = bs["label"].as_str().unwrap().to_string();
    round(&sb, 5);
    assert_eq!(a.on(&sb, &["check"]).code, 0);

    // The old primary, unaware, goes on on timeline 1.
    round(&c, 4);
    let bc = backup(&a, &c, "incr");
    assert_eq!(
        bc["parent"],
        ba.as_str(),
        "never the standby's backup: {bc}"
    );
    let bc = bc["label"].as_str().unwrap().to_string();
    round(&c, 6);
    assert_eq!(a.on(&c, &["check"]).code, 0);

    // The end of the archive follows the latest timeline: the promoted standby's, from its
    // backup (the old primary's newer one is after the branch).
    let (got, label) = recovered(&a, &bin, &[]);
    assert_eq!((got.as_str(), label.as_str()), ("1,2,3,5", bs.as_str()));
    // Timeline 1 to its end, from the old primary's own backup.
    let (got, label) = recovered(&a, &bin, &["--target-timeline", "1"]);
    assert_eq!((got.as_str(), label.as_str()), ("1,2,4,6", bc.as_str()));
    // Timeline 2 from before the standby's own backup: the shared full, across the branch.
    let (got, label) = recovered(&a, &bin, &["--target-timeline", "2", "--type", "immediate"]);
    assert_eq!(label, bs);
    assert_eq!(got, "1,2,3");
    let r = run(a.cmd(&["verify"]));
    assert_eq!(r.code, 0, "{r:?}");
    sb.stop();
    c.stop();
}
