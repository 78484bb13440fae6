//! Every supported PostgreSQL major (13 to 18) restores exactly: full, diff and incr backups of a
//! cluster with a history of ordinary changes (updates, deletes that truncate, TRUNCATE and
//! VACUUM FULL giving relations new files, tables created and dropped, TOAST, partitions, an
//! unlogged table, a materialized view, GIN and hash indexes, a second database, an in-place
//! tablespace on 15, 17 and 18), each restored
//! and compared with the source at the backup's end: pg_dumpall identical, amcheck clean, every
//! page checksum valid.
//!
//! On 17 and 18 with `summarize_wal = on`, incrementals are driven by the WAL summaries; the
//! changes that the summaries describe only indirectly (a database moved to another tablespace
//! and back, a database dropped and re-created under the same OID with STRATEGY FILE_COPY) once
//! made such incrementals restore stale catalogs and indexes, and are part of the history there.

use crate::common;

use common::exact::*;
use common::fixture::*;
use common::pg::*;
use common::*;
use serde_json::Value;

/// A backup and what the source looked like when it ended.
struct Taken {
    label: String,
    dump: String,
    /// The OID and location of tablespace `ts`, when the backup has it.
    ts: Option<(String, String)>,
}

/// Runs each `;`-terminated line of `script` on its own (psql -c runs a string as one
/// transaction, and VACUUM and CREATE DATABASE refuse that).
fn each(c: &Cluster, db: &str, script: &str) {
    for stmt in script.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        c.sql_db(db, stmt);
    }
}

/// The objects every major gets, in `postgres` and a second database `app`.
fn dataset(c: &Cluster) {
    c.pgbench_init(2);
    c.sql(
        "CREATE TABLE docs(id int PRIMARY KEY, body text);
         ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;
         INSERT INTO docs SELECT g, (SELECT string_agg(md5((g * 100 + i)::text), '')
             FROM generate_series(1, 120) i) FROM generate_series(1, 400) g;
         CREATE TABLE events(id bigserial, at date NOT NULL, v int) PARTITION BY RANGE (at);
         CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         CREATE TABLE events_rest PARTITION OF events DEFAULT;
         INSERT INTO events(at, v) SELECT date '2026-01-01' + (g % 600), g FROM generate_series(1, 20000) g;
         CREATE INDEX events_v ON events(v);
         CREATE TABLE tags(id int, t text[]);
         INSERT INTO tags SELECT g, ARRAY['a' || g % 50, 'b' || g % 7] FROM generate_series(1, 5000) g;
         CREATE INDEX tags_gin ON tags USING gin(t);
         CREATE INDEX tags_hash ON tags USING hash(id);
         CREATE UNLOGGED TABLE cache AS SELECT g FROM generate_series(1, 1000) g;
         CREATE MATERIALIZED VIEW totals AS SELECT bid, sum(abalance) AS s FROM pgbench_accounts GROUP BY bid;
         CREATE SEQUENCE ticket;",
    );
    c.sql("CREATE DATABASE app");
    c.sql_db(
        "app",
        "CREATE TABLE items(id serial PRIMARY KEY, name text, v int);
         INSERT INTO items(name, v) SELECT 'item ' || g, g % 100 FROM generate_series(1, 20000) g;
         CREATE INDEX items_v_idx ON items(v, name);",
    );
}

/// One round of ordinary changes between backups.
fn workload(c: &Cluster, round: u32) {
    c.pgbench(&["-t", "150", "-c", "2", "postgres"]);
    each(
        c,
        "postgres",
        &format!(
            "UPDATE docs SET body = md5(body) || body WHERE id % 7 = {round};
         DELETE FROM events WHERE id % 10 = {round};
         INSERT INTO events(at, v) SELECT date '2025-06-01' + g, g FROM generate_series(1, 300) g;
         TRUNCATE cache;
         INSERT INTO cache SELECT generate_series(1, {round} * 100);
         VACUUM FULL tags;
         UPDATE tags SET t = t || ARRAY['r{round}'] WHERE id % 5 = 0;
         DELETE FROM pgbench_history WHERE mtime < now() - interval '1 second' OR aid % 2 = 0;
         VACUUM pgbench_history;
         CREATE TABLE t_{round} AS SELECT g AS n FROM generate_series(1, 2000) g;
         DROP TABLE IF EXISTS t_{};
         REFRESH MATERIALIZED VIEW totals;
         SELECT nextval('ticket') FROM generate_series(1, {round});",
            round - 1
        ),
    );
    c.sql_db(
        "app",
        &format!(
            "UPDATE items SET v = v + {round} WHERE id % 9 = 0;
             DELETE FROM items WHERE id % 31 = {round};
             INSERT INTO items(name, v) SELECT 'new ' || g, g FROM generate_series(1, 500) g;"
        ),
    );
}

/// What WAL summaries describe only by a database-wide entry: `app` moved to a tablespace,
/// changed there, and moved back; `scratch` dropped and re-created under its old OID from
/// template0 with STRATEGY FILE_COPY, then given other contents.
fn database_moves(c: &Cluster, ts_dir: &std::path::Path) {
    c.sql(&format!(
        "CREATE TABLESPACE ts LOCATION '{}'",
        ts_dir.display()
    ));
    c.sql_db(
        "app",
        "UPDATE items SET name = name || ' before move' WHERE id % 4 = 0",
    );
    c.sql("ALTER DATABASE app SET TABLESPACE ts");
    c.sql_db(
        "app",
        "UPDATE items SET v = -v WHERE id % 3 = 0; CREATE INDEX items_name ON items(name)",
    );
    c.sql("ALTER DATABASE app SET TABLESPACE pg_default");
    c.sql_db("app", "DELETE FROM items WHERE id % 11 = 0");
    let oid = c.sql("SELECT oid FROM pg_database WHERE datname = 'scratch'");
    c.sql("DROP DATABASE scratch");
    c.sql(&format!(
        "CREATE DATABASE scratch OID {oid} TEMPLATE template0 STRATEGY FILE_COPY"
    ));
    c.sql_db(
        "scratch",
        "CREATE TABLE other(k int PRIMARY KEY, w text); INSERT INTO other SELECT g, 'w' || g FROM generate_series(1, 3000) g",
    );
}

fn take(a: &Archive, c: &Cluster, kind: &str, flags: &[&str]) -> (Run, Value, Taken) {
    let (r, v) = backup_run(a, c, kind, flags, &[]);
    let label = v["label"].as_str().unwrap().to_string();
    assert!(
        v["checksum_errors"].as_array().is_none_or(|e| e.is_empty()),
        "PG{} {label}: {}",
        c.bin.major,
        v["checksum_errors"]
    );
    let dump = dumpall(c);
    let ts = c
        .sql("SELECT oid || '|' || pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts'")
        .split_once('|')
        .map(|(o, l)| (o.to_string(), l.to_string()));
    (r, v, Taken { label, dump, ts })
}

fn matrix(major: u32) {
    let bin = PgBin::major(major);
    let a = Archive::new(Repo::Local, &[]);
    let mut settings = archive_settings(&a);
    if major >= 17 {
        settings.push(("summarize_wal", "on".into()));
    }
    // An in-place tablespace (a directory in pg_tblspc, as PostgreSQL's own regression suite
    // makes) where a pg_checksums can read it: 13, 14 and 16 are checked by 15's pg_checksums,
    // which looks for its own version's directory in every tablespace.
    let in_place = [15, 17, 18].contains(&major);
    if in_place {
        settings.push(("allow_in_place_tablespaces", "on".into()));
    }
    let s: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut c = Cluster::init(&bin, &s);
    c.start();
    let r = a.on(&c, &["stanza-create"]);
    assert_eq!(r.code, 0, "stanza-create: {r:?}");
    dataset(&c);
    if in_place {
        c.sql("CREATE TABLESPACE inplace LOCATION ''");
        c.sql(
            "CREATE TABLE placed TABLESPACE inplace AS SELECT g AS k, md5(g::text) AS v FROM generate_series(1, 5000) g",
        );
        c.sql("CREATE INDEX placed_k ON placed(k) TABLESPACE inplace");
    }
    if major >= 17 {
        c.sql("CREATE DATABASE scratch");
        c.sql_db(
            "scratch",
            "CREATE TABLE old(x int); INSERT INTO old SELECT generate_series(1, 5000)",
        );
    }

    let mut taken = Vec::new();
    let (_, full, t) = take(&a, &c, "full", &[]);
    assert_eq!(full["type"], "full");
    taken.push(t);
    workload(&c, 1);
    let (_, diff, t) = take(&a, &c, "diff", &[]);
    assert_eq!(diff["parent"], full["label"]);
    taken.push(t);
    workload(&c, 2);
    if in_place {
        c.sql("UPDATE placed SET v = md5(v) WHERE k % 3 = 0");
    }
    let (_, incr, t) = take(&a, &c, "incr", &[]);
    assert_eq!(incr["parent"], diff["label"]);
    taken.push(t);

    let ts_dir = postgres_dir();
    if major >= 17 {
        workload(&c, 3);
        database_moves(&c, ts_dir.path());
        // The same moment three ways: an incr and a diff from the summaries (the diff's range
        // spans every round), and an incr that compares every block by hash.
        let (r, _, by_summary) = take(&a, &c, "incr", &[]);
        assert!(
            r.stderr.contains("WAL summaries name"),
            "PG{major}: the summary path was not taken: {r:?}"
        );
        let (r, _, diff_summary) = take(&a, &c, "diff", &[]);
        assert!(r.stderr.contains("WAL summaries name"), "PG{major}: {r:?}");
        let (r, _, by_hash) = take(&a, &c, "incr", &["--wal-summary", "n"]);
        assert!(!r.stderr.contains("WAL summaries name"), "PG{major}: {r:?}");
        taken.extend([by_summary, diff_summary, by_hash]);
    }

    for t in &taken {
        let what = format!("PG{major} {}", t.label);
        // Tablespaces go to a fresh location of their own: never the source's.
        let new_ts = postgres_dir();
        let mut flags = Vec::new();
        if let Some((oid, _)) = &t.ts {
            flags = vec![
                "--tablespace-map".to_string(),
                format!("{oid}={}", new_ts.path().join("ts").display()),
            ];
        }
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let (mut r, _dir) = restore_at(&a, &bin, &t.label, &flags);
        let mut got = dumpall(&r);
        if let Some((_, old)) = &t.ts {
            got = got.replace(&new_ts.path().join("ts").display().to_string(), old);
        }
        assert_same_dump(&what, &t.dump, &got);
        assert_amcheck_clean(&r, &what);
        assert_checksums_clean(&mut r, &what);
    }
    let v = run(a.cmd(&["verify"]));
    assert_eq!(v.code, 0, "PG{major}: verify: {v:?}");
    c.stop();
}

#[test]
fn pg13_restores_exactly() {
    matrix(13);
}

#[test]
fn pg14_restores_exactly() {
    matrix(14);
}

#[test]
fn pg15_restores_exactly() {
    matrix(15);
}

#[test]
fn pg16_restores_exactly() {
    matrix(16);
}

#[test]
fn pg17_restores_exactly() {
    matrix(17);
}

#[test]
fn pg18_restores_exactly() {
    matrix(18);
}
