//! stanza-create and stanza-upgrade: record which cluster a stanza belongs to.

use super::{emit, open_repo};
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result};
use crate::pg::conn::PgTarget;
use crate::pg::control;
use crate::pg::session::Session;
use crate::repo::format::now_rfc3339;
use crate::repo::stanza::{self, StanzaDb};
use serde_json::json;
use std::path::PathBuf;

/// What the running cluster and its data directory say about themselves, cross-checked.
pub async fn probe(target: &PgTarget) -> Result<(StanzaDb, PathBuf)> {
    let pg = Session::connect(target).await?;
    let version_num = pg.version_num().await?;
    let sysid = pg.system_id().await?;
    let seg_size = pg.wal_segment_size().await?;
    let pg_path = pg.pg_path().await?;
    let ctl = control::read_control(&pg_path)?;
    let major = control::read_major(&pg_path)?;
    if ctl.system_id != sysid {
        return Err(Error::new(
            ErrorKind::Postgres,
            format!(
                "pg-path {} belongs to the cluster with system identifier {}, but the connection to {} reaches system identifier {sysid}",
                pg_path.display(),
                ctl.system_id,
                target.describe()
            ),
        )
        .hint("pg-path and the connection options must name the same cluster"));
    }
    if major * 10000 > version_num as u32 || (major + 1) * 10000 <= version_num as u32 {
        return Err(Error::new(
            ErrorKind::Postgres,
            format!(
                "{} says PostgreSQL {major}, the server reports version {version_num}",
                pg_path.join("PG_VERSION").display()
            ),
        ));
    }
    let wal_segment_size = seg_size.parse().map_err(|_| {
        Error::new(
            ErrorKind::Postgres,
            format!("unexpected wal_segment_size '{seg_size}'"),
        )
    })?;
    Ok((
        StanzaDb {
            format: stanza::DB_FORMAT.into(),
            version: 1,
            id: 0,
            system_id: sysid.to_string(),
            pg_major: major,
            pg_version_num: version_num as u32,
            wal_segment_size,
            control_version: ctl.control_version,
            catalog_version: ctl.catalog_version,
            created: now_rfc3339(),
        },
        pg_path,
    ))
}

pub async fn run(upgrade: bool, settings: &Settings) -> Result<()> {
    let name = settings.required("stanza")?.to_string();
    let target = super::pg_target(settings)?;
    let (mut db, pg_path) = probe(&target).await?;
    let repo = open_repo(settings).await?;
    let history = stanza::history(&repo, &name).await?;
    let cmd = if upgrade {
        "stanza-upgrade"
    } else {
        "stanza-create"
    };
    let describe = |d: &StanzaDb| {
        format!(
            "system identifier {}, PostgreSQL {}",
            d.system_id, d.pg_major
        )
    };
    match (history.last(), upgrade) {
        (Some(cur), _) if cur.same_cluster(&db) => {
            // Idempotent: a timer or a config-management run may repeat it safely.
            emit(
                settings,
                &format!(
                    "stanza '{name}' already belongs to this cluster ({}); nothing to do",
                    describe(cur)
                ),
                json!({"stanza": name, "db_id": cur.id, "changed": false}),
            );
            return Ok(());
        }
        (Some(cur), false) => {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "stanza '{name}' exists for {} but the cluster at {} is {}",
                    describe(cur),
                    pg_path.display(),
                    describe(&db)
                ),
            )
            .hint(format!(
                "after pg_upgrade run 'pgfrost stanza-upgrade --stanza {name}'; for a different cluster use another --stanza"
            )));
        }
        (None, true) => {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("stanza '{name}' does not exist, so it cannot be upgraded"),
            )
            .hint(format!(
                "create it with 'pgfrost stanza-create --stanza {name}'"
            )));
        }
        _ => {}
    }
    db.id = history.last().map_or(1, |d| d.id + 1);
    if !stanza::write(&repo, &name, &db).await? {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "another {cmd} for stanza '{name}' wrote record {} first",
                db.id
            ),
        )
        .hint(format!("run '{cmd}' again to see the stanza as it is now")));
    }
    // The result line says it; an INFO line would print it twice.
    log::debug!(
        "{cmd}: stanza '{name}' now belongs to {} (record {})",
        describe(&db),
        db.id
    );
    emit(
        settings,
        &format!("stanza '{name}': {} (record {})", describe(&db), db.id),
        json!({"stanza": name, "db_id": db.id, "system_id": db.system_id, "pg_major": db.pg_major, "changed": true}),
    );
    Ok(())
}
