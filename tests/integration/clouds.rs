//! A cluster whose only repository is in Azure Blob Storage (Azurite on 127.0.0.1): WAL archived
//! by archive_command, a full and an incremental backup, then a restore of the incremental and
//! a point-in-time recovery, each giving exactly the rows of its moment; verify passes.

use crate::common;

use common::clouds::Azurite;
use common::fixture::*;
use common::pg::*;
use common::*;
use std::time::Duration;

const ROWS: &str = "SELECT count(*) || '/' || coalesce(sum(balance), 0) || '/' || \
     md5(coalesce(string_agg(id || ':' || balance, ',' ORDER BY id), '')) FROM accounts";

fn restore_and_read(a: &Archive, bin: &PgBin, args: &[&str]) -> String {
    let dir = postgres_dir();
    let data = dir.path().join("data");
    let mut all = vec![
        "restore",
        "--pg-path",
        data.to_str().unwrap(),
        "--target-action",
        "promote",
    ];
    all.extend_from_slice(args);
    let r = run(a.cmd(&all));
    assert_eq!(r.code, 0, "restore {args:?}: {r:?}");
    let mut rc = Cluster::from_data_dir(bin, &data, &[("archive_mode", "off")]);
    rc.start();
    assert!(
        wait_promoted(&rc),
        "{args:?}: recovery did not end\n{}",
        rc.log_tail(30)
    );
    rc.sql(ROWS)
}

#[test]
fn archive_backup_restore_and_pitr_through_azure() {
    let az = Azurite::start();
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Azure(&az), &[]);
    let c = cluster(&bin, &a);
    c.sql("CREATE TABLE accounts(id int PRIMARY KEY, balance bigint)");
    c.sql("INSERT INTO accounts SELECT g, g FROM generate_series(1, 20000) g");
    let full = backup(&a, &c, "full");
    assert_eq!(full["type"], "full");

    c.sql("UPDATE accounts SET balance = balance + 7 WHERE id % 3 = 0");
    std::thread::sleep(Duration::from_millis(50));
    let t = c.sql("SELECT clock_timestamp()::text");
    let at_t = c.sql(ROWS);
    std::thread::sleep(Duration::from_millis(50));

    c.sql("DELETE FROM accounts WHERE id > 15000");
    let incr = backup(&a, &c, "incr");
    assert_eq!(incr["parent"], full["label"]);
    let at_incr = c.sql(ROWS);
    c.sql("INSERT INTO accounts SELECT g, -g FROM generate_series(30001, 31000) g");
    switch_segments(&c, 2);
    wait_archived(&c);
    assert_eq!(a.on(&c, &["check"]).code, 0, "check through Azure");

    // The objects are in the container: the repository lives nowhere else.
    let rt = rt();
    let listed = rt.block_on(async {
        let s = pgfrost::store::Store::open(&a.location, false).unwrap();
        s.list("main").await.unwrap()
    });
    for part in ["main/backup/", "main/pack/", "main/wal/"] {
        assert!(
            listed.iter().any(|l| l.path.starts_with(part)),
            "no {part} in the Azure container"
        );
    }

    let incr_label = incr["label"].as_str().unwrap();
    assert_eq!(
        restore_and_read(&a, &bin, &["--set", incr_label, "--type", "immediate"]),
        at_incr,
        "the incremental restored from Azure"
    );
    assert_eq!(
        restore_and_read(&a, &bin, &["--type", "time", "--target", &t]),
        at_t,
        "point in time recovered from Azure"
    );
    let v = run(a.cmd(&["verify"]));
    assert_eq!(v.code, 0, "verify on Azure: {v:?}");
}
