//! verify: read and check everything, and say every problem, not only the first.

use super::expire::{policy, retention_view, segno_of};
use super::info::segments_by_timeline;
use super::{emit, open_repo, pool};
use crate::clock;
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result};
use crate::pg::wal;
use crate::repo::blockmap::{RunFile, RunsAt};
use crate::repo::blockstore::{BlockId, BlockStore, hex_id};
use crate::repo::stanza::{self, StanzaDb, seg_size};
use crate::repo::wal as repo_wal;
use crate::repo::{self, Repository, manifest};
use crate::retention::{self, Policy, WalKeep};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What one block list's blocks are: how many, and how many are missing or in bad packs, by
/// reason.
struct ListCheck {
    blocks: usize,
    trouble: BTreeMap<String, u64>,
}

fn check_list(bs: &BlockStore, bad_packs: &HashMap<BlockId, String>, list: &[u8]) -> ListCheck {
    let mut trouble: BTreeMap<String, u64> = BTreeMap::new();
    for id in list.chunks_exact(32) {
        let id: BlockId = id.try_into().expect("32 bytes");
        let why = match bs.locate(&id) {
            None => Some(format!("missing blocks (e.g. {})", hex_id(&id))),
            Some(p) => bad_packs
                .get(&p)
                .map(|w| format!("blocks in pack {} ({w})", bs.pack_path(&p))),
        };
        if let Some(w) = why {
            *trouble.entry(w).or_default() += 1;
        }
    }
    ListCheck {
        blocks: list.len() / 32,
        trouble,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub object: String,
    pub problem: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Checked {
    pub key_slots: u64,
    pub stanza_records: u64,
    pub index_segments: u64,
    pub packs: u64,
    pub blocks: u64,
    pub manifests: u64,
    pub wal_files: u64,
    pub restore_point_files: u64,
    pub bytes_read: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub stanza: String,
    pub problems: Vec<Finding>,
    /// Worth knowing, not wrong (garbage a later expire removes, WAL removed by policy).
    pub notes: Vec<Finding>,
    pub checked: Checked,
}

impl Report {
    fn problem(&mut self, object: impl Into<String>, problem: impl Into<String>) {
        let f = Finding {
            object: object.into(),
            problem: problem.into(),
        };
        log::error!("verify: {}: {}", f.object, f.problem);
        self.problems.push(f);
    }
    fn note(&mut self, object: impl Into<String>, problem: impl Into<String>) {
        self.notes.push(Finding {
            object: object.into(),
            problem: problem.into(),
        });
    }
}

pub async fn run(settings: &Settings) -> Result<()> {
    let stanza_name = settings.required("stanza")?.to_string();
    let opts = VerifyOptions::from_settings(settings)?;
    let repo = open_repo(settings).await?;
    let lease = super::read_lease(&repo, &stanza_name, "verify").await?;
    let started = Instant::now();
    let started_unix = crate::clock::now_unix();
    let r = verify(&opts, &repo, &stanza_name).await;
    let summary = match &r {
        Ok(r) if r.problems.is_empty() => format!(
            "no problem; {} backup(s), {} pack(s), {} WAL file(s) checked",
            r.checked.manifests, r.checked.packs, r.checked.wal_files
        ),
        Ok(r) => {
            let first: Vec<String> = r
                .problems
                .iter()
                .take(5)
                .map(|p| format!("{}: {}", p.object, p.problem))
                .collect();
            format!("{} problem(s): {}", r.problems.len(), first.join("; "))
        }
        Err(e) => format!("verify could not run: {e}"),
    };
    let passed = matches!(&r, Ok(r) if r.problems.is_empty());
    let doc = crate::repo::outcome::OutcomeDoc::new(
        "verify",
        passed,
        started_unix,
        started.elapsed().as_secs_f64(),
        &summary,
    );
    crate::repo::outcome::record_or_warn(&repo, &stanza_name, &doc).await;
    if let Some(l) = lease {
        l.release().await;
    }
    let r = r?;
    let mut text = String::new();
    for p in &r.problems {
        text.push_str(&format!("PROBLEM {}: {}\n", p.object, p.problem));
    }
    for n in &r.notes {
        text.push_str(&format!("note {}: {}\n", n.object, n.problem));
    }
    let c = &r.checked;
    text.push_str(&format!(
        "verify '{}': {} problem(s); checked {} key slot(s), {} stanza record(s), {} index segment(s), {} pack(s) holding {} block(s), {} backup(s), {} WAL file(s); {:.1} MiB read in {:.1}s",
        r.stanza,
        r.problems.len(),
        c.key_slots,
        c.stanza_records,
        c.index_segments,
        c.packs,
        c.blocks,
        c.manifests,
        c.wal_files,
        c.bytes_read as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    ));
    emit(settings, &text, json!(r));
    if r.problems.is_empty() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::VerifyFailed,
            format!(
                "verify found {} problem(s) in stanza '{}' (listed above)",
                r.problems.len(),
                r.stanza
            ),
        ))
    }
}

/// What verify is asked, read from the settings before any work.
pub struct VerifyOptions {
    /// Packs and WAL files checked at once (process-max, at least 2).
    pub workers: usize,
    pub store: super::StoreOptions,
    /// The retention policy: WAL gaps before what it keeps are expire's doing, not problems.
    pub policy: Policy,
}

impl VerifyOptions {
    pub fn from_settings(settings: &Settings) -> Result<VerifyOptions> {
        Ok(VerifyOptions {
            workers: settings.u32("process-max").max(2) as usize,
            store: super::StoreOptions::from_settings(settings)?,
            policy: policy(settings)?,
        })
    }
}

pub async fn verify(opts: &VerifyOptions, repo: &Repository, stanza_name: &str) -> Result<Report> {
    let mut r = Report {
        stanza: stanza_name.to_string(),
        ..Default::default()
    };
    check_key_slots(repo, &mut r).await;
    let dbs = check_stanza_records(repo, stanza_name, &mut r).await;
    check_listing(repo, stanza_name, &mut r).await?;
    let bs = opts.store.open_empty(repo, stanza_name);
    let indexed = Arc::new(load_index(repo, &bs, stanza_name, &mut r).await?);
    let bad_packs = check_packs(&bs, &indexed, opts.workers, &mut r).await?;
    let manifests = check_backups(repo, &bs, stanza_name, &bad_packs, &mut r).await?;
    let (wal_objs, bad_wal) = check_wal(repo, stanza_name, &dbs, opts.workers, &mut r).await?;
    let per_tli = segments_by_timeline(&wal_objs, &dbs);
    check_backup_wal(stanza_name, &manifests, &dbs, &per_tli, &bad_wal, &mut r);
    check_continuity(opts, stanza_name, &manifests, &dbs, &per_tli, &mut r);
    Ok(r)
}

/// Key slots (the config itself was authenticated by opening the repository).
async fn check_key_slots(repo: &Repository, r: &mut Report) {
    match repo::read_slots(&repo.store).await {
        Ok(s) => {
            r.checked.key_slots = s.len() as u64;
            for slot in &s {
                let name = repo::slot_path(&slot.id);
                if let Err(e) = repo::keys::verify_integrity(slot, &name) {
                    r.problem(&name, e.to_string());
                }
            }
        }
        Err(e) => r.problem("keys/", e.to_string()),
    }
}

async fn check_stanza_records(
    repo: &Repository,
    stanza_name: &str,
    r: &mut Report,
) -> Vec<StanzaDb> {
    let dbs: Vec<StanzaDb> = match stanza::history(repo, stanza_name).await {
        Ok(d) => d,
        Err(e) => {
            r.problem(format!("{stanza_name}/db"), e.to_string());
            Vec::new()
        }
    };
    r.checked.stanza_records = dbs.len() as u64;

    dbs
}

/// Objects that are not part of the format.
async fn check_listing(repo: &Repository, stanza_name: &str, r: &mut Report) -> Result<()> {
    for l in repo.store.list(stanza_name).await? {
        let rest = &l.path[stanza_name.len() + 1..];
        let parts: Vec<&str> = rest.split('/').collect();
        let ok = match parts.as_slice() {
            ["db", n] => n.len() == 4 && n.bytes().all(|c| c.is_ascii_digit()),
            // WAL paths are checked with the WAL archive below.
            ["wal", ..] | ["lock", _] => true,
            ["backup", l] => manifest::is_label(l),
            ["pack", xx, id] => is_hex64(id) && id.starts_with(xx),
            ["index", id] => is_hex64(id),
            ["outcome", ..] => match crate::repo::outcome::parse_path(stanza_name, &l.path) {
                Some(_) => {
                    check_document(repo, r, &l, |b| {
                        crate::repo::outcome::open(repo, &l.path, b).map(drop)
                    })
                    .await;
                    true
                }
                None => false,
            },
            ["point", ..] => match crate::repo::points::parse_path(stanza_name, &l.path) {
                Some((db, _)) => {
                    r.checked.restore_point_files += 1;
                    check_document(repo, r, &l, |b| {
                        crate::repo::points::open(repo, &l.path, db, b).map(drop)
                    })
                    .await;
                    true
                }
                None => false,
            },
            _ => false,
        };
        if !ok {
            r.problem(&l.path, "not part of the repository format");
        }
    }
    Ok(())
}

/// Every segment's runs for each pack: each must equal the pack's trailer. The lists wait in
/// a scratch file; memory holds a few dozen bytes per pack and segment.
struct Indexed {
    runs_file: RunFile,
    segment_names: Vec<String>,
    packs: HashMap<BlockId, Vec<(u32, RunsAt)>>,
}

/// Index segments, one by one so that a bad one is named and the rest still count.
async fn load_index(
    repo: &Repository,
    bs: &BlockStore,
    stanza_name: &str,
    r: &mut Report,
) -> Result<Indexed> {
    let mut ix = Indexed {
        runs_file: RunFile::new(&bs.limits().dir, "verify's run lists")?,
        segment_names: Vec::new(),
        packs: HashMap::new(),
    };
    for l in repo.store.list(&format!("{stanza_name}/index")).await? {
        if !is_hex64(l.path.rsplit('/').next().unwrap_or("")) {
            continue;
        }
        r.checked.index_segments += 1;
        let loaded = async {
            let b = repo.store.get(&l.path).await?;
            bs.decode_segment(&l.path, &b)
        }
        .await;
        match loaded {
            Ok(packs) => {
                r.checked.bytes_read += l.size;
                bs.add_to_index(&l.path, &packs)?;
                let seg = ix.segment_names.len() as u32;
                ix.segment_names.push(l.path.clone());
                for p in packs {
                    let at = ix.runs_file.append(&p.runs)?;
                    ix.packs.entry(p.pack).or_default().push((seg, at));
                }
            }
            Err(e) => r.problem(&l.path, e.to_string()),
        }
    }
    Ok(ix)
}

/// Packs: every byte read and every block authenticated and re-hashed, on the pool's blocking
/// workers (the checks are CPU work: authentication, decompression, hashing). Returns the packs
/// whose blocks cannot be trusted, and why.
async fn check_packs(
    bs: &BlockStore,
    indexed: &Arc<Indexed>,
    workers: usize,
    r: &mut Report,
) -> Result<HashMap<BlockId, String>> {
    let stored = bs.list_packs().await?;
    let mut bad_packs: HashMap<BlockId, String> = HashMap::new();
    let jobs = pool::Jobs {
        queue: stored.iter().map(|(id, size)| (*id, *size)).collect(),
        what: "verify",
        total: stored.values().sum(),
        done: Arc::new(AtomicU64::new(0)),
    };
    let checkers = (0..workers)
        .map(|_| PackChecker {
            bs: bs.clone(),
            rt: tokio::runtime::Handle::current(),
            indexed: Arc::clone(indexed),
            found: Vec::new(),
        })
        .collect();
    for f in pool::run(jobs, checkers).await?.into_iter().flatten() {
        let path = bs.pack_path(&f.id);
        match f.checked {
            Ok(blocks) => {
                r.checked.packs += 1;
                r.checked.blocks += blocks;
                r.checked.bytes_read += f.size;
                match f.wrong_segments {
                    None => r.note(
                        &path,
                        "no index segment names this pack (left by an interrupted backup); the next backup reuses it or expire removes it",
                    ),
                    Some(segs) => {
                        for seg in &segs {
                            r.problem(
                                &path,
                                format!("index segment {seg} does not list the runs of the pack's trailer"),
                            );
                        }
                        if !segs.is_empty() {
                            bad_packs.insert(f.id, "its index entries are wrong".into());
                        }
                    }
                }
            }
            Err(e) => {
                r.problem(&path, e);
                bad_packs.insert(f.id, "it is damaged".into());
            }
        }
    }
    for (id, segs) in &indexed.packs {
        if !stored.contains_key(id) {
            let seg = &indexed.segment_names[segs[0].0 as usize];
            r.problem(
                bs.pack_path(id),
                format!("missing, but index segment {seg} names it"),
            );
            bad_packs.insert(*id, "it is missing".into());
        }
    }
    Ok(bad_packs)
}

/// What a worker found in one pack.
struct PackFinding {
    id: BlockId,
    size: u64,
    /// The blocks it holds, or why it could not be read or failed its checks.
    checked: std::result::Result<u64, String>,
    /// The index segments naming it that do not list the runs of its trailer; None when no
    /// segment names it.
    wrong_segments: Option<Vec<String>>,
}

/// A pool worker checking whole packs; it reaches the store through the runtime's handle. A
/// damaged pack is a finding, not a failure of the pool.
struct PackChecker {
    bs: BlockStore,
    rt: tokio::runtime::Handle,
    indexed: Arc<Indexed>,
    found: Vec<PackFinding>,
}

impl pool::Worker for PackChecker {
    type Job = (BlockId, u64);
    type Out = Vec<PackFinding>;

    fn work(&mut self, (id, size): (BlockId, u64), done: &AtomicU64) -> Result<()> {
        let res = self.rt.block_on(self.bs.check_pack(&id));
        done.fetch_add(size, Ordering::Relaxed);
        let found = match res {
            Ok(runs) => PackFinding {
                id,
                size,
                checked: Ok(runs.iter().map(|r| r.blocks.len() as u64).sum()),
                wrong_segments: wrong_segments(&self.indexed, &id, &runs)?,
            },
            Err(e) => PackFinding {
                id,
                size,
                checked: Err(e.to_string()),
                wrong_segments: None,
            },
        };
        self.found.push(found);
        Ok(())
    }

    fn finish(self) -> Result<Vec<PackFinding>> {
        Ok(self.found)
    }
}

/// The index segments naming the pack that do not list the runs of its trailer; None when no
/// segment names it.
fn wrong_segments(
    indexed: &Indexed,
    id: &BlockId,
    runs: &[crate::repo::index::Run],
) -> Result<Option<Vec<String>>> {
    let Some(segs) = indexed.packs.get(id) else {
        return Ok(None);
    };
    let mut trailer = Vec::new();
    crate::repo::index::encode_runs(runs, &mut trailer);
    let mut wrong = Vec::new();
    for (seg, at) in segs {
        if indexed.runs_file.bytes(*at)? != trailer {
            wrong.push(indexed.segment_names[*seg as usize].clone());
        }
    }
    Ok(Some(wrong))
}

/// Backups: each block of each file must be in a sound pack. Each unreadable manifest is named;
/// the readable ones are checked and returned.
async fn check_backups(
    repo: &Repository,
    bs: &BlockStore,
    stanza_name: &str,
    bad_packs: &HashMap<BlockId, String>,
    r: &mut Report,
) -> Result<Vec<manifest::Manifest>> {
    let (manifests, unreadable) = manifest::read_each(repo, stanza_name).await?;
    for (l, e) in unreadable {
        r.problem(manifest::path(stanza_name, &l), e.to_string());
    }
    r.checked.manifests = manifests.len() as u64;
    // Per block list, what is wrong with its blocks: (reason, blocks) and its length. Backups
    // share most lists; the outcome, not the ids, is kept, so memory follows the number of
    // lists, not of blocks.
    let mut list_cache: ListCache = HashMap::new();
    for m in &manifests {
        check_backup(bs, stanza_name, bad_packs, m, &mut list_cache, r).await;
    }
    Ok(manifests)
}

/// WAL segment numbers stored per (cluster record, timeline).
type PerTimeline = BTreeMap<(u32, u32), std::collections::BTreeSet<u64>>;

/// Per block list, what is wrong with its blocks, or why the list cannot be read.
type ListCache = HashMap<BlockId, std::result::Result<ListCheck, String>>;

async fn check_backup(
    bs: &BlockStore,
    stanza_name: &str,
    bad_packs: &HashMap<BlockId, String>,
    m: &manifest::Manifest,
    list_cache: &mut ListCache,
    r: &mut Report,
) {
    let obj = manifest::path(stanza_name, &m.label);
    // (pack or "missing") -> (blocks, files, first file)
    let mut trouble: BTreeMap<String, (u64, u64, String)> = BTreeMap::new();
    for f in &m.files {
        if f.list.is_empty() {
            continue;
        }
        let Ok(list_id) = repo::format::hex_array::<32>(&f.list, "") else {
            r.problem(&obj, format!("file {}: malformed block list id", f.path));
            continue;
        };
        if let std::collections::hash_map::Entry::Vacant(e) = list_cache.entry(list_id) {
            let got = match bs.read_blocks(&[list_id]).await {
                Ok(mut v) => Ok(check_list(bs, bad_packs, &v.pop().unwrap_or_default())),
                Err(e) => Err(e.to_string()),
            };
            e.insert(got);
        }
        let check = match &list_cache[&list_id] {
            Ok(c) => c,
            Err(e) => {
                r.problem(
                    &obj,
                    format!("file {}: its block list cannot be read: {e}", f.path),
                );
                continue;
            }
        };
        if check.blocks != f.blocks as usize {
            r.problem(
                &obj,
                format!(
                    "file {}: block list holds {} blocks, the manifest says {}",
                    f.path, check.blocks, f.blocks
                ),
            );
        }
        for (w, n) in &check.trouble {
            let e = trouble.entry(w.clone()).or_insert((0, 0, f.path.clone()));
            e.0 += n;
            e.1 += 1;
        }
    }
    for (what, (blocks, files, first)) in trouble {
        r.problem(
            &obj,
            format!(
                "backup {} cannot be restored: {blocks} {what}, in {files} file(s) starting with {first}",
                m.label
            ),
        );
    }
}

/// WAL: every file authenticated and checked. Returns the archive and the paths of the damaged
/// files.
async fn check_wal(
    repo: &Repository,
    stanza_name: &str,
    dbs: &[StanzaDb],
    workers: usize,
    r: &mut Report,
) -> Result<(Vec<stanza::WalObject>, HashSet<String>)> {
    let (wal_objs, strays) = stanza::list_wal(repo, stanza_name).await?;
    for l in strays {
        r.problem(
            &l.path,
            "not a WAL file filed where the format puts it (docs/format.md, WAL files)",
        );
    }
    let mut bad_wal: HashSet<String> = HashSet::new();
    let by_id: HashMap<u32, &StanzaDb> = dbs.iter().map(|d| (d.id, d)).collect();
    let by_id = &by_id;
    let mut wal_checks = futures::stream::iter(wal_objs.iter())
        .map(|w| async move {
            let res = match by_id.get(&w.db_id) {
                None => Err(format!(
                    "filed under cluster {:04}, which the stanza does not record",
                    w.db_id
                )),
                Some(db) => match repo.store.get(&w.path).await {
                    Ok(b) => super::archive::open_checked(repo, db, &w.path, &w.file, &b)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
            };
            (w, res)
        })
        .buffer_unordered(workers);
    while let Some((w, res)) = wal_checks.next().await {
        r.checked.wal_files += 1;
        r.checked.bytes_read += w.size;
        if let Err(e) = res {
            r.problem(&w.path, e);
            bad_wal.insert(w.path.clone());
        }
    }
    drop(wal_checks);
    Ok((wal_objs, bad_wal))
}

/// Each backup's own WAL, start to stop.
fn check_backup_wal(
    stanza_name: &str,
    manifests: &[manifest::Manifest],
    dbs: &[StanzaDb],
    per_tli: &PerTimeline,
    bad_wal: &HashSet<String>,
    r: &mut Report,
) {
    let present =
        |db: u32, tli: u32, n: u64| per_tli.get(&(db, tli)).is_some_and(|s| s.contains(&n));
    for m in manifests {
        let ss = seg_size(dbs, m.db_id);
        let (a, b) = (segno_of(&m.start_wal, ss), segno_of(&m.stop_wal, ss));
        let mut missing = Vec::new();
        for n in a..=b {
            let name = wal::segment_name(m.timeline, n, ss);
            let file = wal::WalFile::parse(&name).expect("a segment name");
            let path = repo_wal::object_path(stanza_name, m.db_id, &file);
            if !present(m.db_id, m.timeline, n) {
                missing.push(name);
            } else if bad_wal.contains(&path) {
                missing.push(format!("{name} (damaged)"));
            }
        }
        if !missing.is_empty() {
            r.problem(
                manifest::path(stanza_name, &m.label),
                format!(
                    "backup {} cannot reach consistency: WAL {} missing from its range {} .. {}",
                    m.label,
                    missing.join(", "),
                    m.start_wal,
                    m.stop_wal
                ),
            );
        }
    }
}

/// Continuity per timeline, from where point-in-time recovery must be possible (what the
/// retention policy keeps; the oldest backup without one). Gaps before it are expire's doing.
fn check_continuity(
    opts: &VerifyOptions,
    stanza_name: &str,
    manifests: &[manifest::Manifest],
    dbs: &[StanzaDb],
    per_tli: &PerTimeline,
    r: &mut Report,
) {
    let backups: Vec<retention::Backup> =
        manifests.iter().map(|m| retention_view(m, dbs)).collect();
    let current = dbs.last().map(|d| d.id).unwrap_or(1);
    let plan = retention::plan(&backups, &opts.policy, clock::now_unix(), current);
    for ((db, tli), segs) in per_tli {
        let ss = seg_size(dbs, *db);
        let from = match plan.wal.get(db) {
            Some(WalKeep::From { from, .. }) => *from,
            Some(WalKeep::Nothing) => u64::MAX,
            _ => backups
                .iter()
                .filter(|b| b.db_id == *db)
                .map(|b| b.start_segno)
                .min()
                .unwrap_or(u64::MAX),
        };
        let mut prev: Option<u64> = None;
        for &n in segs {
            if let Some(p) = prev
                && n > p + 1
            {
                let what = format!(
                    "WAL gap on timeline {tli}: {} .. {} ({} segment(s)) missing",
                    wal::segment_name(*tli, p + 1, ss),
                    wal::segment_name(*tli, n - 1, ss),
                    n - p - 1
                );
                let obj = repo_wal::db_dir(stanza_name, *db);
                if n > from {
                    r.problem(
                        obj,
                        format!("{what}: point-in-time recovery cannot cross it"),
                    );
                } else {
                    r.note(obj, format!("{what}, before the retained recovery window"));
                }
            }
            prev = Some(n);
        }
    }
}

/// Reads one sealed document and opens it as `open` does; a failure is a problem of the object.
async fn check_document(
    repo: &Repository,
    r: &mut Report,
    l: &crate::store::Listed,
    open: impl FnOnce(&[u8]) -> Result<()>,
) {
    r.checked.bytes_read += l.size;
    let opened = match repo.store.get(&l.path).await {
        Ok(b) => open(&b),
        Err(e) => Err(e),
    };
    if let Err(e) = opened {
        r.problem(&l.path, e.to_string());
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}
