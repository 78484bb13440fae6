//! PostgreSQL 15's regression database as a dataset (tests/common/regress.rs): pg_regress runs
//! against a fresh cluster and leaves the variety of relations that backup and restore tests
//! rely on.

mod common;

use common::pg::*;
use common::regress::*;

#[test]
fn regression_database_holds_every_kind_of_relation() {
    let mut c = Cluster::init(&PgBin::pg15(), REGRESS_SETTINGS);
    c.start();
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
}
