//! Hidden developer commands that drive the block store directly. They let the demo and the
//! tests exercise the store on a real data directory before backup and restore exist; the
//! catalog they print stays outside the repository, so they add nothing to the format.

use super::{emit, open_repo, read_full};
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result};
use crate::repo::blockstore::{BlockId, BlockStore, hex_id};
use crate::repo::format::hex_array;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

pub const BLOCK: usize = 8192;

#[derive(Serialize, Deserialize)]
struct CatalogFile {
    path: String,
    size: u64,
    mode: u32,
    blocks: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct CatalogDir {
    path: String,
    mode: u32,
}

#[derive(Serialize, Deserialize)]
struct Catalog {
    stanza: String,
    /// Directories, so that empty ones (PostgreSQL needs pg_wal/archive_status, pg_notify, ...)
    /// come back too.
    #[serde(default)]
    dirs: Vec<CatalogDir>,
    files: Vec<CatalogFile>,
}

pub async fn run(sub: &str, leaf: &clap::ArgMatches, settings: &Settings) -> Result<()> {
    let stanza = settings.required("stanza")?.to_string();
    let store_opts = super::StoreOptions::from_settings(settings)?;
    let repo = open_repo(settings).await?;
    if sub == "put-dir" {
        use crate::repo::lease::{Lease, LeaseKind};
        // As a backup: the lease before the index, so that collection sees the writer.
        let lease = Lease::acquire(&repo.store, &stanza, LeaseKind::Backup, "dev put-dir").await?;
        let put = async {
            lease.wait_for_gc(&stanza).await?;
            let bs = store_opts.open(&repo, &stanza).await?;
            put_dir(
                &bs,
                lease.may_write()?,
                &stanza,
                leaf.get_one::<String>("dir").unwrap(),
            )
            .await
        }
        .await;
        lease.release().await;
        return put;
    }
    let bs = store_opts.open(&repo, &stanza).await?;
    match sub {
        "get-dir" => {
            let (text, j) = get_dir(
                &bs,
                leaf.get_one::<String>("catalog").unwrap(),
                leaf.get_one::<String>("dest").unwrap(),
            )
            .await?;
            emit(settings, &text, j);
            Ok(())
        }
        "check" => {
            let (text, j, problems) = check(&bs).await;
            emit(settings, &text, j);
            match problems.first() {
                None => Ok(()),
                Some(first) => Err(Error::corrupt(format!(
                    "{} damaged object(s); the first: {first}",
                    problems.len(),
                ))),
            }
        }
        _ => Err(Error::internal(format!("unhandled dev command {sub}"))),
    }
}

async fn put_dir(
    bs: &BlockStore,
    may: crate::repo::lease::MayWrite<'_>,
    stanza: &str,
    dir: &str,
) -> Result<()> {
    let root = Path::new(dir);
    let mut writer = bs.writer(may);
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let started = Instant::now();
    let mut last_log = Instant::now();
    let mut buf = vec![0u8; BLOCK];
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.map_err(|e| Error::storage(format!("cannot walk {dir}: {e}")))?;
        if entry.file_type().is_dir() && entry.depth() > 0 {
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let meta = entry
                .metadata()
                .map_err(|e| Error::storage(format!("cannot stat {rel}: {e}")))?;
            dirs.push(CatalogDir {
                path: rel,
                mode: meta.permissions().mode() & 0o7777,
            });
        }
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let io = |e: std::io::Error| {
            Error::storage(format!("cannot read {}: {e}", entry.path().display()))
        };
        let mut f = std::fs::File::open(entry.path()).map_err(io)?;
        let mode = f.metadata().map_err(io)?.permissions().mode() & 0o7777;
        let mut blocks = Vec::new();
        let mut size = 0u64;
        loop {
            let n = read_full(&mut f, &mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            blocks.push(hex_id(&writer.add(&buf[..n]).await?));
            if last_log.elapsed() > Duration::from_secs(5) {
                let s = writer.stats();
                log::info!(
                    "stored {} MiB so far ({} MiB new)",
                    s.bytes >> 20,
                    s.new_bytes >> 20
                );
                last_log = Instant::now();
            }
            if n < BLOCK {
                break;
            }
        }
        writer.end_run().await?;
        files.push(CatalogFile {
            path: rel,
            size,
            mode,
            blocks,
        });
    }
    let stats = writer.finish().await?;
    let secs = started.elapsed().as_secs_f64();
    log::info!(
        "stored {} files, {} blocks ({} new), {:.1} MiB read, {:.1} MiB written in {secs:.1}s",
        files.len(),
        stats.blocks,
        stats.new_blocks,
        stats.bytes as f64 / 1048576.0,
        stats.stored_bytes as f64 / 1048576.0
    );
    let catalog = Catalog {
        stanza: stanza.into(),
        dirs,
        files,
    };
    // The catalog is the command's output whatever --output says: get-dir reads it back.
    println!(
        "{}",
        serde_json::to_string(&json!({"catalog": catalog, "stats": stats})).unwrap()
    );
    Ok(())
}

/// Rebuilds the catalog's files under `dest`; returns what to say, as text and as JSON.
async fn get_dir(
    bs: &BlockStore,
    catalog: &str,
    dest: &str,
) -> Result<(String, serde_json::Value)> {
    let text = std::fs::read(catalog)
        .map_err(|e| Error::config(format!("cannot read catalog {catalog}: {e}")))?;
    let doc: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Error::config(format!("catalog {catalog} does not parse: {e}")))?;
    let cat: Catalog = serde_json::from_value(doc["catalog"].clone())
        .map_err(|e| Error::config(format!("catalog {catalog} does not parse: {e}")))?;
    let dest = Path::new(dest);
    let safe = |p: &str| -> Result<()> {
        if p.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(Error::config(format!(
                "catalog {catalog} names an unsafe path '{p}'"
            )));
        }
        Ok(())
    };
    for d in &cat.dirs {
        safe(&d.path)?;
        let target = dest.join(&d.path);
        std::fs::create_dir_all(&target)
            .and_then(|()| {
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(d.mode))
            })
            .map_err(|e| Error::storage(format!("cannot create {}: {e}", target.display())))?;
    }
    let mut bytes = 0u64;
    for f in &cat.files {
        safe(&f.path)?;
        let target = dest.join(&f.path);
        let io =
            |e: std::io::Error| Error::storage(format!("cannot write {}: {e}", target.display()));
        std::fs::create_dir_all(target.parent().unwrap()).map_err(io)?;
        let ids: Vec<BlockId> = f
            .blocks
            .iter()
            .map(|h| {
                hex_array::<32>(h, "block")
                    .map_err(|e| Error::config(format!("catalog {catalog}: {e}")))
            })
            .collect::<Result<_>>()?;
        let mut out = std::fs::File::create(&target).map_err(io)?;
        for chunk in ids.chunks(1024) {
            for b in bs.read_blocks(chunk).await? {
                std::io::Write::write_all(&mut out, &b).map_err(io)?;
                bytes += b.len() as u64;
            }
        }
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(f.mode)).map_err(io)?;
        if out.metadata().map_err(io)?.len() != f.size {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("{} came back with the wrong size", f.path),
            ));
        }
    }
    Ok((
        format!(
            "restored {} files, {bytes} bytes, into {}",
            cat.files.len(),
            dest.display()
        ),
        json!({"files": cat.files.len(), "bytes": bytes}),
    ))
}

/// Checks every indexed pack; returns what to say, as text and as JSON, and the problems.
async fn check(bs: &BlockStore) -> (String, serde_json::Value, Vec<String>) {
    let mut problems = Vec::new();
    let packs = bs.indexed_packs();
    let mut blocks = 0usize;
    for p in &packs {
        match bs.check_pack(p).await {
            Ok(entries) => blocks += entries.len(),
            Err(e) => problems.push(e.to_string()),
        }
    }
    for p in &problems {
        log::error!("{p}");
    }
    (
        format!(
            "checked {} packs, {blocks} blocks: {} problem(s)",
            packs.len(),
            problems.len()
        ),
        json!({"packs": packs.len(), "blocks": blocks, "problems": problems}),
        problems,
    )
}
