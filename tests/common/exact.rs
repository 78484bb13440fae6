//! "Restores exactly": the checks a restored cluster must pass against its source, with
//! PostgreSQL's own tools. pg_dumpall of both must be identical, pg_amcheck must find nothing,
//! and every page's checksum must verify.
#![allow(dead_code)]

use super::pg::*;

/// Fixed key for pg_dumpall's `\restrict` lines (18.x and the latest minors of older majors
/// write a random one per run otherwise, and two dumps of one cluster would differ).
const RESTRICT_KEY: &str = "pgfrosttestkey";

/// `pg_dumpall` of the whole cluster (roles, tablespaces, every database's schema and rows),
/// by PostgreSQL 18's pg_dumpall whatever the server's major, so two dumps compare as text.
/// Unlogged tables' rows are left out: a restore brings them back empty, as crash recovery does.
pub fn dumpall(c: &Cluster) -> String {
    let mut cmd = c.bin.client("pg_dumpall");
    cmd.args(c.conn_args())
        .arg(format!("--restrict-key={RESTRICT_KEY}"))
        .arg("--no-unlogged-table-data");
    let out = run_checked(
        &mut cmd,
        &format!("pg_dumpall (PostgreSQL {})", c.bin.major),
    );
    String::from_utf8(out.stdout).expect("pg_dumpall output is UTF-8")
}

/// Panics unless two dumps are identical, showing the first lines that differ.
pub fn assert_same_dump(what: &str, expected: &str, got: &str) {
    if expected == got {
        return;
    }
    let (e, g): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    let first = e
        .iter()
        .zip(&g)
        .position(|(a, b)| a != b)
        .unwrap_or(e.len().min(g.len()));
    let from = first.saturating_sub(3);
    let show = |v: &[&str]| v[from.min(v.len())..(first + 12).min(v.len())].join("\n");
    panic!(
        "{what}: pg_dumpall of the restore differs from the source's ({} vs {} lines), first at \
         line {}\n--- source\n{}\n--- restored\n{}",
        e.len(),
        g.len(),
        first + 1,
        show(&e),
        show(&g)
    );
}

/// The databases a client can connect to.
fn databases(c: &Cluster) -> Vec<String> {
    c.sql("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")
        .lines()
        .map(str::to_string)
        .collect()
}

/// amcheck over every database: `pg_amcheck --all --heapallindexed --rootdescend` (heap
/// tables and TOAST, and every B-tree index against its table and from its root). PostgreSQL
/// 13's amcheck (1.2) has no heap checks, which pg_amcheck needs: there every B-tree index is
/// checked with `bt_index_parent_check(index, heapallindexed, rootdescend)` and every table is
/// read whole. Installs the amcheck extension, so call it after [`dumpall`].
pub fn assert_amcheck_clean(c: &Cluster, what: &str) {
    if c.bin.major >= 14 {
        let mut cmd = c.bin.client("pg_amcheck");
        cmd.args(c.conn_args()).args([
            "--all",
            "--install-missing",
            "--heapallindexed",
            "--rootdescend",
        ]);
        let out = cmd.output().expect("run pg_amcheck");
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success() && so.trim().is_empty(),
            "{what}: pg_amcheck found problems ({}):\n{so}\n{se}",
            out.status
        );
        return;
    }
    for db in databases(c) {
        c.sql_db(&db, "CREATE EXTENSION IF NOT EXISTS amcheck");
        let indexes = c.sql_db(
            &db,
            "SELECT count(bt_index_parent_check(i.oid, true, true)) FROM pg_class i \
             JOIN pg_am a ON a.oid = i.relam JOIN pg_index x ON x.indexrelid = i.oid \
             WHERE a.amname = 'btree' AND i.relkind = 'i' AND i.relpersistence <> 't' AND x.indisvalid",
        );
        assert!(
            indexes.parse::<u32>().unwrap() > 0,
            "{what}: {db}: no index checked"
        );
        let tables = c.sql_db(
            &db,
            "SELECT format('SELECT count(*) FROM %s', c.oid::regclass) FROM pg_class c \
             WHERE c.relkind IN ('r', 'm', 't') AND c.relpersistence <> 't'",
        );
        for q in tables.lines() {
            c.try_sql_db(&db, q)
                .unwrap_or_else(|e| panic!("{what}: {db}: {q}: {e}"));
        }
    }
}

/// Every page's checksum verifies. With a pg_checksums that reads this cluster's pg_control
/// version (PostgreSQL 15's serves 13, 14, 15 and 16, which share version 1300; 18 has its
/// own), the cluster is stopped and checked with `pg_checksums --check`, then started again.
/// PostgreSQL 17's pg_checksums is not packaged for these machines: there the server itself
/// verifies, reading every fork of every relation of every database through shared buffers
/// (pg_prewarm 'buffer' mode) after a restart, so no page is already cached unverified.
pub fn assert_checksums_clean(c: &mut Cluster, what: &str) {
    let tool = match c.bin.major {
        13..=16 => Some(PgBin::pg15()),
        18 => Some(PgBin::pg18()),
        _ => None,
    };
    if let Some(tool) = tool {
        c.stop();
        let mut cmd = tool.command("pg_checksums");
        cmd.arg("--check").arg("-D").arg(&c.data);
        let out = cmd.output().expect("run pg_checksums");
        let so = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && so.contains("Bad checksums:  0"),
            "{what}: pg_checksums --check failed ({}):\n{so}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        c.start();
        return;
    }
    c.restart();
    for db in databases(c) {
        c.sql_db(&db, "CREATE EXTENSION IF NOT EXISTS pg_prewarm");
        let pages = c
            .try_sql_db(
                &db,
                "SELECT sum(pg_prewarm(c.oid, 'buffer', f)) FROM pg_class c, \
                 unnest(ARRAY['main', 'fsm', 'vm', 'init']) f \
                 WHERE c.relkind IN ('r', 'i', 'S', 't', 'm') AND c.relpersistence <> 't' \
                 AND pg_relation_size(c.oid, f) > 0",
            )
            .unwrap_or_else(|e| panic!("{what}: {db}: reading every page failed: {e}"));
        assert!(
            pages.parse::<u64>().unwrap_or(0) > 0,
            "{what}: {db}: no page read"
        );
    }
}
