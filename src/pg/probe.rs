//! The SQL a drill runs against the cluster it restored: whether recovery has ended, which
//! databases accept connections, and reading their largest tables end to end.

use std::path::Path;
use tokio_postgres::{Client, Error, NoTls};

/// Connects over the Unix socket in `dir`, as `user`, to `db`. The reason when it cannot.
pub async fn connect(
    dir: &Path,
    port: u16,
    user: &str,
    db: &str,
) -> std::result::Result<Client, String> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(dir)
        .port(port)
        .user(user)
        .dbname(db)
        .application_name("pgfrost drill");
    let (client, conn) = cfg
        .connect(NoTls)
        .await
        .map_err(|e| crate::store::chain(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Whether the server is still recovering (has not promoted yet).
pub async fn in_recovery(c: &Client) -> Result<bool, Error> {
    Ok(c.query_one("SELECT pg_is_in_recovery()", &[])
        .await?
        .get::<_, bool>(0))
}

/// The databases that accept connections, by name.
pub async fn databases(c: &Client) -> Result<Vec<String>, Error> {
    let rows = c
        .query(
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The connected database's five largest permanent tables and materialized views, largest
/// first, as quoted names.
pub async fn largest_tables(c: &Client) -> Result<Vec<String>, Error> {
    let rows = c
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm') AND c.relpersistence = 'p' ORDER BY pg_relation_size(c.oid) DESC LIMIT 5",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Reads table `t` (a quoted name, from [`largest_tables`]) end to end: its row count.
pub async fn row_count(c: &Client, t: &str) -> Result<i64, Error> {
    Ok(c.query_one(&format!("SELECT count(*) FROM {t}"), &[])
        .await?
        .get::<_, i64>(0))
}
