//! PostgreSQL 15's regression database (tests/common/regress.rs) backed up and restored
//! exactly: pg_regress runs against an archiving cluster and leaves every kind of relation, TOAST,
//! partitioning, unlogged tables, large objects and keyword-named columns; a full and an
//! incremental of it each restore to a cluster whose pg_dumpall is the source's at the backup's
//! end, that pg_amcheck finds clean and whose page checksums all verify.

use crate::common;

use common::exact::*;
use common::fixture::*;
use common::pg::*;
use common::regress::*;

#[test]
fn regression_database_restores_exactly() {
    let a = Archive::new(Repo::Local, &[]);
    let mut settings: Vec<(&str, String)> = archive_settings(&a);
    settings.extend(REGRESS_SETTINGS.iter().map(|(k, v)| (*k, v.to_string())));
    let s: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut c = Cluster::init(&PgBin::pg15(), &s);
    c.start();
    let r = a.on(&c, &["stanza-create"]);
    assert_eq!(r.code, 0, "stanza-create: {r:?}");
    let db = regression_database(&c);
    eprintln!("{db:#?}");

    // With the documented settings the whole suite passes; a failure here means the settings
    // or the suite's installation changed, and the dataset may lack what the failed test makes.
    assert!(db.tests > 200, "only {} tests ran", db.tests);
    assert!(
        db.failed.is_empty(),
        "regression tests failed: {:?}",
        db.failed
    );

    assert!(db.relations() > 1000, "{} user relations", db.relations());
    for (kind, what) in [
        ('r', "tables"),
        ('i', "indexes"),
        ('S', "sequences"),
        ('t', "TOAST tables"),
        ('v', "views"),
        ('m', "materialized views"),
        ('c', "composite types"),
        ('p', "partitioned tables"),
        ('I', "partitioned indexes"),
    ] {
        assert!(db.count(kind) > 0, "no {what} (relkind {kind}): {db:?}");
    }
    for am in ["btree", "hash", "gist", "spgist", "gin", "brin"] {
        assert!(
            db.index_methods.iter().any(|m| m == am),
            "no {am} index: {:?}",
            db.index_methods
        );
    }
    assert!(db.toast_with_data > 0, "no TOAST table holds data: {db:?}");
    assert!(db.unlogged_tables > 0, "no unlogged table: {db:?}");
    // The suite drops its relations with odd names; what it leaves are columns named after
    // keywords ("time", "char"...), which a restore must still get right.
    assert!(
        db.quoted_column_names > 0,
        "no column whose name needs quoting: {db:?}"
    );
    assert!(db.large_objects > 0, "no large object: {db:?}");

    // The dataset is usable: a query over one of the suite's tables reads its data back.
    assert_eq!(
        c.sql_db("regression", "SELECT count(*) FROM tenk1"),
        "10000"
    );

    // What the suite drops before it ends: an odd-named relation in an in-place tablespace.
    // (Set only now: the suite's tablespace test expects it off.)
    c.sql("ALTER SYSTEM SET allow_in_place_tablespaces = on");
    c.sql("SELECT pg_reload_conf()");
    assert!(wait_until(std::time::Duration::from_secs(30), || {
        c.sql("SHOW allow_in_place_tablespaces") == "on"
    }));
    c.sql("CREATE TABLESPACE \"odd space\" LOCATION ''");
    c.sql_db(
        "regression",
        "CREATE TABLE \"Odd \"\"name\"\" ü.x\" TABLESPACE \"odd space\" AS SELECT g AS \"Key\", repeat('v', g) AS \"select\" FROM generate_series(1, 3000) g",
    );

    let full = backup(&a, &c, "full");
    let full_dump = dumpall(&c);
    // A day of changes across the suite's tables: updates, deletes, a rewrite, new and dropped
    // relations, and large objects.
    for q in [
        "UPDATE tenk1 SET stringu1 = stringu2 WHERE unique1 % 13 = 0",
        "DELETE FROM onek WHERE unique1 % 17 = 0",
        "VACUUM FULL tenk2",
        "VACUUM onek",
        "CREATE TABLE added AS SELECT * FROM tenk1 WHERE unique1 < 500",
        "DROP TABLE IF EXISTS a_star CASCADE",
        "SELECT lo_unlink(oid) FROM pg_largeobject_metadata LIMIT 1",
        "SELECT lo_from_bytea(0, 'a new large object')",
        "UPDATE \"Odd \"\"name\"\" ü.x\" SET \"select\" = 'w' WHERE \"Key\" % 5 = 0",
    ] {
        c.sql_db("regression", q);
    }
    let incr = backup(&a, &c, "incr");
    let incr_dump = dumpall(&c);
    assert_ne!(full_dump, incr_dump);
    for (m, dump) in [(&full, &full_dump), (&incr, &incr_dump)] {
        let label = m["label"].as_str().unwrap();
        let what = format!("regression database, backup {label}");
        let (mut r, _dir) = restore_at(&a, &PgBin::pg15(), label, &[]);
        assert_same_dump(&what, dump, &dumpall(&r));
        assert_amcheck_clean(&r, &what);
        assert_checksums_clean(&mut r, &what);
    }
    c.stop();
}
