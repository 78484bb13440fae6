//! Connecting to PostgreSQL the way libpq users expect: the pg-* options, then the PG* environment
//! variables, then libpq's defaults; passwords from PGPASSWORD or the password file.

use crate::error::{Error, ErrorKind, Result};
use std::path::PathBuf;
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

/// The pg-* options as given (None when not set): `PgTarget::resolve` fills in the rest from
/// the PG* environment variables and libpq's defaults.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    pub host: Option<String>,
    pub socket_path: Option<String>,
    pub port: Option<String>,
    pub user: Option<String>,
    pub database: Option<String>,
    /// pg-path: the data directory; when not given, the server's data_directory is used.
    pub path: Option<PathBuf>,
}

/// Where and as whom to connect, resolved, and where the cluster's data directory is when
/// the options say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// A host name, or an absolute path (Unix socket directory).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub path: Option<PathBuf>,
}

impl PgTarget {
    pub fn resolve(o: PgOptions) -> Result<PgTarget> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let host = o
            .host
            .or(o.socket_path)
            .or_else(|| env("PGHOST"))
            .unwrap_or_else(|| "/var/run/postgresql".into());
        let port = match o.port.or_else(|| env("PGPORT")) {
            Some(p) => p
                .parse()
                .map_err(|_| Error::config(format!("invalid port '{p}'")))?,
            None => 5432,
        };
        let user = o
            .user
            .or_else(|| env("PGUSER"))
            .or_else(os_user)
            .ok_or_else(|| {
                Error::config("cannot tell which PostgreSQL user to connect as")
                    .hint("give --pg-user")
            })?;
        let database = o
            .database
            .or_else(|| env("PGDATABASE"))
            .unwrap_or_else(|| "postgres".into());
        Ok(PgTarget {
            host,
            port,
            user,
            database,
            path: o.path,
        })
    }

    pub fn describe(&self) -> String {
        if self.host.starts_with('/') {
            format!(
                "{}@[socket {}]:{}/{}",
                self.user, self.host, self.port, self.database
            )
        } else {
            format!(
                "{}@{}:{}/{}",
                self.user, self.host, self.port, self.database
            )
        }
    }
}

fn os_user() -> Option<String> {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    Some(crate::users::name_of(uid)).filter(|n| n.parse::<u32>().is_err())
}

/// Looks the password up in PGPASSWORD, else the password file (PGPASSFILE or ~/.pgpass), with
/// libpq's rules: `host:port:database:user:password`, `*` matches anything, `\` escapes, and a
/// socket connection matches `localhost`.
pub fn password(t: &PgTarget) -> Option<String> {
    if let Ok(p) = std::env::var("PGPASSWORD") {
        return Some(p);
    }
    let file = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    let text = std::fs::read_to_string(file).ok()?;
    let host = if t.host.starts_with('/') {
        "localhost"
    } else {
        t.host.as_str()
    };
    let port = t.port.to_string();
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let f = split_pgpass(l);
        if f.len() != 5 {
            return None;
        }
        let m = |pat: &str, v: &str| pat == "*" || pat == v;
        (m(&f[0], host) && m(&f[1], &port) && m(&f[2], &t.database) && m(&f[3], &t.user))
            .then(|| f[4].clone())
    })
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut esc = false;
    for c in line.chars() {
        match (esc, c) {
            (true, c) => {
                out.last_mut().unwrap().push(c);
                esc = false;
            }
            (false, '\\') => esc = true,
            (false, ':') if out.len() < 5 => out.push(String::new()),
            (false, c) => out.last_mut().unwrap().push(c),
        }
    }
    out
}

/// Connects and returns a client whose session never times out: a backup holds one session from
/// pg_backup_start to pg_backup_stop, and an idle_session_timeout would end the backup.
pub async fn connect(t: &PgTarget) -> Result<Client> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&t.host)
        .port(t.port)
        .user(&t.user)
        .dbname(&t.database)
        .application_name("pgfrost");
    cfg.connect_timeout(Duration::from_secs(30));
    if crate::net::IN_PROCESS && !t.host.starts_with('/') {
        // tokio-postgres would ask the C library (crate::net says why not here); the host name
        // stays set for the password file and error messages.
        let ips = crate::net::lookup(&t.host).await?;
        cfg.hostaddr(ips[0]);
    }
    if let Some(p) = password(t) {
        cfg.password(p);
    }
    let (client, connection) = cfg.connect(NoTls).await.map_err(|e| {
        Error::new(
            ErrorKind::Postgres,
            format!(
                "cannot connect to PostgreSQL at {}: {}",
                t.describe(),
                crate::store::chain(&e)
            ),
        )
        .hint("check pg-host/pg-socket-path, pg-port and pg-user, and that PostgreSQL is running")
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            log::debug!("PostgreSQL connection ended: {e}");
        }
    });
    let version: i32 =
        query_one(&client, "SELECT current_setting('server_version_num')::int").await?;
    if version >= 140000 {
        client
            .batch_execute("SET idle_session_timeout = 0; SET statement_timeout = 0")
            .await
            .map_err(|e| pg_err("cannot set session timeouts", e))?;
    } else {
        client
            .batch_execute("SET statement_timeout = 0")
            .await
            .map_err(|e| pg_err("cannot set statement_timeout", e))?;
    }
    Ok(client)
}

pub fn pg_err(what: &str, e: tokio_postgres::Error) -> Error {
    let detail = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => crate::store::chain(&e),
    };
    Error::new(ErrorKind::Postgres, format!("{what}: {detail}"))
}

/// Runs a query returning one row with one column.
pub async fn query_one<T>(c: &Client, sql: &str) -> Result<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    let row = c
        .query_one(sql, &[])
        .await
        .map_err(|e| pg_err(&format!("query failed: {sql}"), e))?;
    row.try_get(0)
        .map_err(|e| pg_err(&format!("unexpected result from: {sql}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_fields() {
        assert_eq!(
            split_pgpass(r"h:5432:db:u:pa\:ss\\w"),
            vec!["h", "5432", "db", "u", r"pa:ss\w"]
        );
        assert_eq!(split_pgpass("*:*:*:*:a:b"), vec!["*", "*", "*", "*", "a:b"]);
    }
}
