//! Point-in-time recovery: a full backup, then a time, an xid, a named restore point and an LSN
//! recorded between rounds of writes, an incremental, more writes; every target restores to a
//! cluster that starts, holds exactly what pg_dump saw at that moment, and passes pg_amcheck.

use crate::common;

use common::fixture::*;
use common::pg::*;
use common::*;
use std::time::Duration;

fn dump(c: &Cluster) -> String {
    // A fixed \restrict key: pg_dump otherwise writes a random one into every dump.
    let out = c
        .bin
        .command("pg_dump")
        .args(c.conn_args())
        .args(["-d", "postgres", "--no-sync", "--restrict-key=pgfrost"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn amcheck(c: &Cluster) {
    let out = c
        .bin
        .command("pg_amcheck")
        .args(c.conn_args())
        .args(["-d", "postgres", "--install-missing", "--heapallindexed"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_amcheck found problems: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn round(c: &Cluster, n: u32) {
    c.sql(&format!(
        "INSERT INTO events SELECT g, {n}, md5(g::text || '{n}') FROM generate_series({}, {}) g; \
         UPDATE accounts SET balance = balance + {n} WHERE id % 7 = {};",
        n * 1000,
        n * 1000 + 999,
        n % 7
    ));
}

#[test]
fn every_target_restores_exactly_what_pg_dump_saw() {
    for bin in versions_under_test() {
        let a = Archive::new(Repo::Local, &[]);
        let c = cluster(&bin, &a);
        c.sql("CREATE TABLE events(id int PRIMARY KEY, round int, payload text); CREATE TABLE accounts(id int PRIMARY KEY, balance bigint)");
        c.sql("INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 5000) g");
        let full = backup(&a, &c, "full");
        let full_label = full["label"].as_str().unwrap().to_string();
        let dump_immediate = dump(&c);

        round(&c, 1);
        // Time: everything committed so far, nothing after.
        std::thread::sleep(Duration::from_millis(50));
        let t = c.sql("SELECT clock_timestamp()::text");
        let dump_time = dump(&c);
        std::thread::sleep(Duration::from_millis(50));

        round(&c, 2);
        // xid: the transaction that writes the marker, inclusive.
        let xid = c.sql("BEGIN; INSERT INTO events VALUES (-1, -1, 'xid marker'); SELECT txid_current(); COMMIT;");
        let xid = xid
            .lines()
            .find(|l| l.chars().all(|c| c.is_ascii_digit()) && !l.is_empty())
            .unwrap()
            .to_string();
        let dump_xid = dump(&c);

        round(&c, 3);
        c.sql("SELECT pg_create_restore_point('after_round_3')");
        let dump_name = dump(&c);

        round(&c, 4);
        let lsn = c.sql("SELECT pg_current_wal_lsn()::text");
        let dump_lsn = dump(&c);

        round(&c, 5);
        backup(&a, &c, "incr");
        round(&c, 6);
        let dump_end = dump(&c);
        // Every segment with the writes above is archived before the restores read them.
        assert_eq!(a.on(&c, &["check"]).code, 0);

        let cases: Vec<(&str, Vec<&str>, &String)> = vec![
            (
                "immediate",
                vec!["--set", &full_label, "--type", "immediate"],
                &dump_immediate,
            ),
            ("time", vec!["--type", "time", "--target", &t], &dump_time),
            (
                "xid",
                vec!["--set", &full_label, "--type", "xid", "--target", &xid],
                &dump_xid,
            ),
            (
                "name",
                vec![
                    "--set",
                    &full_label,
                    "--type",
                    "name",
                    "--target",
                    "after_round_3",
                ],
                &dump_name,
            ),
            ("lsn", vec!["--type", "lsn", "--target", &lsn], &dump_lsn),
            ("end of archive", vec![], &dump_end),
        ];
        for (what, args, expected) in cases {
            let dir = postgres_dir();
            let data = dir.path().join("data");
            let mut all = vec![
                "restore",
                "--pg-path",
                data.to_str().unwrap(),
                "--target-action",
                "promote",
                "--output",
                "json",
            ];
            all.extend(args);
            let r = run(a.cmd(&all));
            assert_eq!(r.code, 0, "PG{} {what}: {r:?}", bin.major);
            let out: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            if what == "time" || what == "lsn" {
                assert_eq!(
                    out["label"],
                    full_label.as_str(),
                    "PG{} {what}: only the full ended before the target",
                    bin.major
                );
            }
            let mut rc = Cluster::from_data_dir(&bin, &data, &[("archive_mode", "off")]);
            rc.start();
            let promoted = wait_promoted(&rc);
            assert!(
                promoted,
                "PG{} {what}: recovery did not end\n{}",
                bin.major,
                rc.log_tail(30)
            );
            let got = dump(&rc);
            assert!(
                got == *expected,
                "PG{} {what}: the restored cluster differs from pg_dump at that point",
                bin.major
            );
            amcheck(&rc);
            rc.stop();
        }
    }
}
