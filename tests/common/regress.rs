//! PostgreSQL 15's own regression database as a dataset: the regression suite leaves behind,
//! in database `regression`, far more kinds of objects than a test would think of creating
//! (partitioned tables and indexes, TOAST, unlogged tables and sequences, materialized views,
//! indexes of every built-in access method, large objects...).
//!
//! `.ci/pg-regress` installs the suite (pg_regress, regress.so, the SQL scripts and data) into
//! `/opt/pgfrost/regress-15`, or `PGFROST_REGRESS_DIR`.
#![allow(dead_code)]

use super::pg::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The settings to give [`Cluster::init`] for a cluster that will hold the regression database.
///
/// The suite itself needs nothing beyond what `Cluster::init` already does: the C locale and
/// UTF8 (the expected output assumes them), trust authentication for `postgres` over the
/// socket. pg_regress sets the session's time zone (PGTZ=PST8PDT) and date style itself, the
/// tablespace test turns `allow_in_place_tablespaces` on in its own session, prepared_xacts has
/// expected output both for `max_prepared_transactions = 0` (the default) and above, and
/// publication hides the warning that depends on `wal_level`; so a backup test may add its
/// archiving settings. With `Cluster::init`'s defaults plus these, all 217 tests of PostgreSQL
/// 15.18 pass (as they do without `synchronous_commit = off`).
///
/// `synchronous_commit = off` halves the run time here (about 1 minute instead of 2 on 2 cores:
/// each of the suite's many small transactions otherwise waits for its WAL flush). It cannot
/// corrupt anything; a crash of the OS could lose the last commits, which no test cares about.
pub const REGRESS_SETTINGS: &[(&str, &str)] = &[("synchronous_commit", "off")];

/// Tests run in parallel at most (per group of the schedule): enough to keep 2 cores busy
/// while others wait on I/O, few enough not to starve a shared machine.
const MAX_CONNECTIONS: u32 = 4;

/// Where `.ci/pg-regress` installed the suite.
pub fn regress_dir() -> PathBuf {
    std::env::var_os("PGFROST_REGRESS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/pgfrost/regress-15"))
}

/// What [`regression_database`] left in database `regression`. Counts are of user objects
/// (OID 16384 and above), TOAST tables included.
#[derive(Debug, Clone)]
pub struct RegressionDb {
    /// Tests that pg_regress ran.
    pub tests: usize,
    /// Tests whose output differed from the expected (their diffs were printed).
    pub failed: Vec<String>,
    /// How long pg_regress took.
    pub elapsed: Duration,
    /// Relations by `pg_class.relkind` (`r` table, `i` index, `S` sequence, `t` TOAST table,
    /// `v` view, `m` materialized view, `c` composite type, `f` foreign table, `p` partitioned
    /// table, `I` partitioned index).
    pub relkinds: BTreeMap<char, u64>,
    /// Unlogged relations (tables, their indexes, TOAST tables and sequences).
    pub unlogged: u64,
    /// Unlogged tables (`relkind = 'r'`).
    pub unlogged_tables: u64,
    /// TOAST tables whose file is not empty.
    pub toast_with_data: u64,
    /// Tablespaces created with `LOCATION ''` (in `pg_tblspc/` itself). The tablespace test
    /// drops its own at the end, so expect none unless a caller makes one.
    pub in_place_tablespaces: u64,
    /// Relations whose name needs quoting (capitals, spaces, keywords...).
    pub quoted_relation_names: u64,
    /// Columns of user relations whose name needs quoting.
    pub quoted_column_names: u64,
    /// The access methods of the indexes (btree, hash, gist, spgist, gin, brin).
    pub index_methods: Vec<String>,
    /// Large objects.
    pub large_objects: u64,
    /// `pg_database_size('regression')`.
    pub size_bytes: u64,
}

impl RegressionDb {
    /// All user relations.
    pub fn relations(&self) -> u64 {
        self.relkinds.values().sum()
    }

    /// Relations of one relkind.
    pub fn count(&self, relkind: char) -> u64 {
        self.relkinds.get(&relkind).copied().unwrap_or(0)
    }
}

/// Fewer user relations than this means the suite did not really run (a full run leaves about
/// 1460).
const NEARLY_EMPTY: u64 = 200;

/// Runs PostgreSQL's regression suite (`parallel_schedule`, as `make installcheck-parallel`
/// does) against the running PostgreSQL 15 cluster `c`, which creates (dropping it first if it
/// exists) database `regression`, plus the roles, tablespaces and large objects the tests
/// leave behind. Create `c` with [`REGRESS_SETTINGS`]; see there for what the suite needs.
///
/// pg_regress runs as the `postgres` OS user with `c`'s own psql (`--bindir`), in a scratch
/// output directory that is removed afterwards. Takes about a minute on 2 cores.
///
/// A test whose output differs does not fail this function (only the dataset matters): the
/// failed tests are returned and the start of their diffs printed. It panics, with the end of
/// pg_regress's output, if the suite is not installed (run `bash .ci/pg-regress`), if
/// pg_regress cannot run or stops before its summary, or if `regression` ends up missing or
/// nearly empty.
pub fn regression_database(c: &Cluster) -> RegressionDb {
    assert_eq!(
        c.bin.major,
        15,
        "the regression suite in {} is PostgreSQL 15's; the cluster is PostgreSQL {}",
        regress_dir().display(),
        c.bin.major
    );
    let dir = regress_dir();
    let pg_regress = dir.join("pg_regress");
    assert!(
        dir.join(".complete").is_file() && pg_regress.is_file(),
        "PostgreSQL 15's regression suite is not installed in {} (no .complete stamp or no \
         pg_regress).\nInstall it with: bash .ci/pg-regress   (as root; bash .ci/setup runs \
         it too; PGFROST_REGRESS_DIR chooses another directory)",
        dir.display()
    );

    let out_dir = postgres_dir();
    let mut cmd = as_postgres(&pg_regress);
    for v in LIBPQ_ENV {
        cmd.env_remove(v);
    }
    if let Some(p) = c.bin.ld_library_path() {
        cmd.env("LD_LIBRARY_PATH", p);
    }
    cmd.arg(format!("--bindir={}", c.bin.bin.display()))
        .arg(format!("--dlpath={}", dir.join("lib").display()))
        .arg(format!("--inputdir={}", dir.display()))
        .arg(format!("--outputdir={}", out_dir.path().display()))
        .arg(format!(
            "--schedule={}",
            dir.join("parallel_schedule").display()
        ))
        .arg(format!("--max-connections={MAX_CONNECTIONS}"))
        .arg(format!("--host={}", c.socket_dir.display()))
        .arg(format!("--port={}", c.port))
        .arg("--user=postgres")
        .current_dir("/")
        .stdin(std::process::Stdio::null());
    let started = Instant::now();
    let run = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {}: {e}\nReinstall the suite: bash .ci/pg-regress",
            pg_regress.display()
        )
    });
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    let tail = || {
        let lines: Vec<&str> = stdout.lines().collect();
        format!(
            "--- last 40 lines of pg_regress's output\n{}\n--- stderr\n{}",
            lines[lines.len().saturating_sub(40)..].join("\n"),
            stderr.trim()
        )
    };

    let (tests, failed) = parse_results(&stdout);
    // pg_regress exits 1 when some test differs, and also on most errors; only the summary
    // line tells a finished run from one that stopped.
    let finished = stdout.contains(" tests passed") || stdout.contains(" tests failed");
    if !finished || tests == 0 {
        panic!(
            "pg_regress did not run the regression suite ({}) against {} port {}.\n{}\n\
             Hint: the cluster must be running and reachable by the postgres OS user; the \
             suite in {} must be readable by it (bash .ci/pg-regress rebuilds it).",
            run.status,
            c.socket_dir.display(),
            c.port,
            tail(),
            dir.display()
        );
    }
    if !failed.is_empty() {
        let diffs =
            std::fs::read_to_string(out_dir.path().join("regression.diffs")).unwrap_or_default();
        let head: Vec<&str> = diffs.lines().take(80).collect();
        eprintln!(
            "regression suite: {} of {tests} tests differ from the expected output (the \
             dataset is still used): {}\n--- start of regression.diffs\n{}\n---",
            failed.len(),
            failed.join(" "),
            head.join("\n")
        );
    }

    let has_db = c
        .try_sql("SELECT 1 FROM pg_database WHERE datname = 'regression'")
        .unwrap_or_default();
    if has_db != "1" {
        panic!(
            "pg_regress finished but database regression does not exist.\n{}",
            tail()
        );
    }
    let mut db = summarize(c);
    db.tests = tests;
    db.failed = failed;
    db.elapsed = elapsed;
    if db.relations() < NEARLY_EMPTY {
        panic!(
            "database regression holds only {} user relations ({:?}); the suite did not build \
             it.\n{}",
            db.relations(),
            db.relkinds,
            tail()
        );
    }
    eprintln!(
        "regression suite: {tests} tests in {:.0?}, {} failed; database regression: {} \
         relations, {} MiB",
        elapsed,
        db.failed.len(),
        db.relations(),
        db.size_bytes >> 20
    );
    db
}

/// Counts the tests in pg_regress's output and names those that failed. Result lines look like
/// `test tablespace ... ok 610 ms`, `     boolean ... FAILED 12 ms`, or `... failed (ignored)`.
fn parse_results(stdout: &str) -> (usize, Vec<String>) {
    let mut tests = 0;
    let mut failed = Vec::new();
    for line in stdout.lines() {
        let Some((name, status)) = line.split_once(" ... ") else {
            continue;
        };
        let name = name.trim().trim_start_matches("test ").trim();
        let status = status.trim_start();
        tests += 1;
        if !status.starts_with("ok") {
            failed.push(name.to_string());
        }
    }
    (tests, failed)
}

/// What database `regression` holds (see [`RegressionDb`]).
fn summarize(c: &Cluster) -> RegressionDb {
    const USER: &str = "oid >= 16384";
    let kinds = c.sql_db(
        "regression",
        &format!("SELECT relkind, count(*) FROM pg_class WHERE {USER} GROUP BY 1 ORDER BY 1"),
    );
    let relkinds = kinds
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(k, n)| (k.chars().next().unwrap(), n.parse().unwrap()))
        .collect();
    let counts = c.sql_db(
        "regression",
        &format!(
            "SELECT (SELECT count(*) FROM pg_class WHERE {USER} AND relpersistence = 'u'), \
             (SELECT count(*) FROM pg_class WHERE {USER} AND relpersistence = 'u' \
                AND relkind = 'r'), \
             (SELECT count(*) FROM pg_class WHERE {USER} AND relkind = 't' \
                AND pg_relation_size(oid) > 0), \
             (SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') \
                AND pg_tablespace_location(oid) NOT LIKE '/%'), \
             (SELECT count(*) FROM pg_class WHERE {USER} \
                AND quote_ident(relname) <> relname::text), \
             (SELECT count(*) FROM pg_attribute WHERE attrelid >= 16384 AND attnum > 0 \
                AND NOT attisdropped AND quote_ident(attname) <> attname::text), \
             (SELECT count(*) FROM pg_largeobject_metadata), \
             pg_database_size(current_database())"
        ),
    );
    let n: Vec<u64> = counts.split('|').map(|v| v.parse().unwrap()).collect();
    let methods = c.sql_db(
        "regression",
        &format!(
            "SELECT DISTINCT amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam \
             WHERE c.{USER} AND c.relkind = 'i' ORDER BY 1"
        ),
    );
    RegressionDb {
        tests: 0,
        failed: Vec::new(),
        elapsed: Duration::ZERO,
        relkinds,
        unlogged: n[0],
        unlogged_tables: n[1],
        toast_with_data: n[2],
        in_place_tablespaces: n[3],
        quoted_relation_names: n[4],
        quoted_column_names: n[5],
        index_methods: methods.lines().map(str::to_string).collect(),
        large_objects: n[6],
        size_bytes: n[7],
    }
}
