//! Block-store throughput on one core, next to the raw blake3 + zstd + XChaCha20-Poly1305 chain
//! on the same data (bench/README.md says how to run and read it).
//!
//! The raw chain is written out here with the plain crates, not through `pgfrost::repo::crypto`,
//! so that it is an independent baseline: what the three primitives cost with nothing around them.
//! The store is driven through its public API on a `current_thread` tokio runtime, so all of its
//! CPU work (hashing, sealing, packing, indexing) runs on this thread; only the local object
//! store's file I/O runs on tokio's blocking threads.
//!
//! Every figure is a ratio against a baseline measured in the same run, in interleaved rounds, so
//! that the machine's noise hits both sides. It is a report, never a pass/fail test of the build.

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use pgfrost::repo::Repository;
use pgfrost::repo::blockstore::{BlockId, BlockStore, WriteStats};
use pgfrost::repo::keys::Cost;
use pgfrost::store::{Location, Store};
use std::collections::HashSet;
use std::error::Error;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type BenchResult<T> = Result<T, Box<dyn Error>>;

/// PostgreSQL's page size.
const BLOCK: usize = 8192;
/// The store must keep at least this share of the raw chain's throughput.
const TARGET: f64 = 0.80;
/// Ids per `read_blocks` call in the untimed check.
const READ_CHUNK: usize = 1024;
/// Ids per `read_blocks_into` call in the timed reads: a restore's batch (1 MiB of pages).
const RESTORE_BATCH: usize = 128;
const ZSTD_LEVEL: i32 = 3;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const MIB: f64 = (1 << 20) as f64;

fn env_usize(name: &str, default: usize) -> BenchResult<usize> {
    match std::env::var(name) {
        Ok(v) => Ok(v
            .trim()
            .parse::<usize>()
            .map_err(|e| format!("{name}={v:?}: {e}"))?),
        Err(_) => Ok(default),
    }
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// The input: blocks laid end to end in one buffer.
struct Data {
    buf: Vec<u8>,
    blocks: Vec<(usize, usize)>,
    source: String,
}

impl Data {
    fn blocks(&self) -> impl Iterator<Item = &[u8]> {
        self.blocks.iter().map(|&(o, l)| &self.buf[o..o + l])
    }
    fn block(&self, i: usize) -> &[u8] {
        let (o, l) = self.blocks[i];
        &self.buf[o..o + l]
    }
    fn mib(&self) -> f64 {
        self.buf.len() as f64 / MIB
    }
}

/// SplitMix64: small, fast, good enough to make table-like data. Not for anything secret.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[rustfmt::skip]
const WORDS: &[&str] = &[
    "order", "shipped", "pending", "refund", "invoice", "customer", "express", "standard",
    "warehouse", "berlin", "paris", "lisbon", "oslo", "madrid", "returned", "cancelled", "paid",
    "gift", "wrap", "priority", "backorder", "note", "call", "before", "delivery", "door", "left",
    "at", "reception", "fragile", "books", "garden", "kitchen", "toys", "spare", "parts", "sale",
    "coupon", "member", "new",
];

/// Columns of the synthetic table, laid out as PostgreSQL aligns them:
/// `id int8, created timestamptz, ext_ref int8, customer int4, status int2, note text`.
const T_HOFF: usize = 24;
const NOTE_AT: usize = T_HOFF + 8 + 8 + 8 + 4 + 2;

/// One heap page: page header, line pointers growing up, tuples growing down from the end,
/// zeroed free space between them. Every page is unique (its LSN and row ids differ).
fn heap_page(rng: &mut Rng, page_no: u64, row: &mut u64, page: &mut [u8]) {
    page.fill(0);
    // A few pages are part-filled (recent inserts, or space freed by vacuum).
    let fill = if rng.below(8) == 0 {
        BLOCK / 4 + rng.below((BLOCK / 2) as u64) as usize
    } else {
        BLOCK
    };
    let mut lower = 24usize;
    let mut upper = BLOCK;
    let mut tuple = [0u8; 128];
    let xid = 5_000_000 + page_no as u32 * 7;
    let base_ts: i64 = 820_000_000_000_000; // microseconds since 2000-01-01: late 2025
    let mut n = 0u16;
    loop {
        // The note: 1 to 5 words of a small vocabulary.
        let mut note = [0u8; 64];
        let mut nl = 0;
        for w in 0..1 + rng.below(5) {
            let word = WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes();
            if nl + word.len() + 1 > note.len() {
                break;
            }
            if w > 0 {
                note[nl] = b' ';
                nl += 1;
            }
            note[nl..nl + word.len()].copy_from_slice(word);
            nl += word.len();
        }
        let len = NOTE_AT + 1 + nl;
        let aligned = (len + 7) & !7;
        if upper - aligned < lower + 4 || BLOCK - (upper - aligned) + lower > fill {
            break;
        }
        n += 1;
        tuple[..len].fill(0);
        // HeapTupleHeaderData: xmin, xmax, cid, ctid (block hi, block lo, offset), infomask2,
        // infomask, hoff.
        tuple[0..4].copy_from_slice(&(xid + rng.below(7) as u32).to_le_bytes());
        tuple[12..14].copy_from_slice(&((page_no >> 16) as u16).to_le_bytes());
        tuple[14..16].copy_from_slice(&(page_no as u16).to_le_bytes());
        tuple[16..18].copy_from_slice(&n.to_le_bytes());
        tuple[18..20].copy_from_slice(&6u16.to_le_bytes());
        tuple[20..22].copy_from_slice(&0x0902u16.to_le_bytes());
        tuple[22] = T_HOFF as u8;
        let mut at = T_HOFF;
        let mut put = |b: &[u8]| {
            tuple[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        };
        *row += 1;
        put(&row.to_le_bytes());
        let ts = base_ts + *row as i64 * 1_000_000 + rng.below(1_000_000) as i64;
        put(&ts.to_le_bytes());
        put(&rng.next().to_le_bytes()); // ext_ref: a random id
        put(&(1 + rng.below(50_000) as u32).to_le_bytes());
        put(&(rng.below(6) as u16).to_le_bytes());
        put(&[(((nl + 1) << 1) | 1) as u8]); // short varlena header
        put(&note[..nl]);
        upper -= aligned;
        page[upper..upper + len].copy_from_slice(&tuple[..len]);
        // ItemIdData: lp_off:15, lp_flags:2 (1 = normal), lp_len:15.
        let lp = upper as u32 | (1 << 15) | ((len as u32) << 17);
        page[lower..lower + 4].copy_from_slice(&lp.to_le_bytes());
        lower += 4;
    }
    // PageHeaderData: pd_lsn, pd_checksum, pd_flags, pd_lower, pd_upper, pd_special,
    // pd_pagesize_version, pd_prune_xid.
    let lsn = 0x0000_0005_0000_0000u64 + page_no * 0x2000 + rng.below(0x2000);
    page[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
    page[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
    page[8..10].copy_from_slice(&(rng.next() as u16).to_le_bytes());
    page[12..14].copy_from_slice(&(lower as u16).to_le_bytes());
    page[14..16].copy_from_slice(&(upper as u16).to_le_bytes());
    page[16..18].copy_from_slice(&(BLOCK as u16).to_le_bytes());
    page[18..20].copy_from_slice(&(BLOCK as u16 | 4).to_le_bytes());
}

fn synthetic(mib: usize) -> Data {
    let n = mib * (1 << 20) / BLOCK;
    let mut buf = vec![0u8; n * BLOCK];
    let mut rng = Rng(0x5067_6672_6f73_7421);
    let mut row = 0u64;
    for (i, page) in buf.chunks_exact_mut(BLOCK).enumerate() {
        heap_page(&mut rng, i as u64, &mut row, page);
    }
    Data {
        buf,
        blocks: (0..n).map(|i| (i * BLOCK, BLOCK)).collect(),
        source: format!("{n} synthetic heap pages of 8 KiB"),
    }
}

/// Real files cut into 8 KiB blocks (the last block of a file may be shorter). Repeated blocks
/// (all-zero pages, mostly) are skipped so that both sides process the same unique blocks: the
/// store would otherwise deduplicate them and the comparison would flatter it.
fn from_dir(dir: &Path, mib: usize) -> BenchResult<Data> {
    let limit = mib << 20;
    let mut buf = Vec::with_capacity(limit);
    let mut blocks = Vec::new();
    let mut seen = HashSet::new();
    let (mut files, mut repeats) = (0usize, 0usize);
    'files: for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry?;
        if !entry.file_type().is_file() {
            continue;
        }
        let bytes = match std::fs::read(entry.path()) {
            Ok(b) => b,
            // A cluster directory holds files only its owner may read (postmaster.pid, ...).
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => continue,
            Err(e) => return Err(format!("{}: {e}", entry.path().display()).into()),
        };
        files += 1;
        for b in bytes.chunks(BLOCK) {
            if buf.len() + b.len() > limit {
                break 'files;
            }
            if !seen.insert(*blake3::hash(b).as_bytes()) {
                repeats += 1;
                continue;
            }
            blocks.push((buf.len(), b.len()));
            buf.extend_from_slice(b);
        }
    }
    if blocks.is_empty() {
        return Err(format!("PGFROST_BENCH_DATA={}: no data found", dir.display()).into());
    }
    let source = format!(
        "{} blocks from {files} files under {} ({repeats} repeated blocks skipped)",
        blocks.len(),
        dir.display()
    );
    Ok(Data {
        buf,
        blocks,
        source,
    })
}

// ---------------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------------

/// (user + system CPU time, minor page faults) of `who`.
fn usage(who: libc::c_int) -> (Duration, u64) {
    // SAFETY: rusage is plain old data (all zeroes is a valid value), and getrusage only writes
    // into the struct it is handed.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(who, &mut ru) != 0 {
            return (Duration::ZERO, 0);
        }
        ru
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_minflt as u64)
}

#[cfg(target_os = "linux")]
const RUSAGE_THIS_THREAD: libc::c_int = libc::RUSAGE_THREAD;
#[cfg(not(target_os = "linux"))]
const RUSAGE_THIS_THREAD: libc::c_int = libc::RUSAGE_SELF;

/// Time this thread spent runnable but waiting for a CPU (another process had it), from
/// `/proc/thread-self/schedstat`; zero where that file is missing.
fn runq_wait() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// One timed run: wall time, CPU time of this thread (where all the hashing, compression and
/// encryption happens), CPU time of the whole process (adds the blocking I/O threads), and the
/// time this thread was ready to run but another process held the CPU.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    thread_cpu: Duration,
    process_cpu: Duration,
    runq_wait: Duration,
    /// Minor page faults of this thread: fresh memory being touched for the first time.
    faults: u64,
}

impl Sample {
    /// Wall time less the time stolen by other processes: what one core of our own would take.
    fn own(&self) -> Duration {
        self.wall.saturating_sub(self.runq_wait)
    }
    /// Time this thread slept: waiting for I/O (or a lock), neither computing nor preempted.
    fn blocked(&self) -> Duration {
        self.own().saturating_sub(self.thread_cpu)
    }
}

struct Meter {
    wall: Instant,
    thread: (Duration, u64),
    process_cpu: Duration,
    runq_wait: Duration,
}

impl Meter {
    fn start() -> Meter {
        Meter {
            thread: usage(RUSAGE_THIS_THREAD),
            process_cpu: usage(libc::RUSAGE_SELF).0,
            runq_wait: runq_wait(),
            wall: Instant::now(),
        }
    }
    fn stop(self) -> Sample {
        let wall = self.wall.elapsed();
        let thread = usage(RUSAGE_THIS_THREAD);
        Sample {
            wall,
            thread_cpu: thread.0.saturating_sub(self.thread.0),
            process_cpu: usage(libc::RUSAGE_SELF).0.saturating_sub(self.process_cpu),
            runq_wait: runq_wait().saturating_sub(self.runq_wait),
            faults: thread.1.saturating_sub(self.thread.1),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The raw chain
// ---------------------------------------------------------------------------------------------

/// One sealed run: the ids and lengths of its blocks, and where it lies in `sealed`.
struct RawEntry {
    ids: Vec<(BlockId, usize)>,
    offset: usize,
    length: usize,
    raw_length: usize,
}

/// Blocks per run, as the store makes them from 8 KiB pages (`blockstore::RUN_BYTES`).
const RUN_BLOCKS: usize = pgfrost::repo::blockstore::RUN_BYTES / BLOCK;

/// blake3 keyed hash of every block; then per run of `RUN_BLOCKS` neighbouring blocks, zstd
/// level 3 and XChaCha20-Poly1305 under a fresh random nonce; output `nonce | ciphertext | tag`,
/// appended to one reused buffer. The same work the store's format asks for, with nothing around
/// it.
struct RawChain {
    id_key: [u8; 32],
    aead: XChaCha20Poly1305,
    compressor: zstd::bulk::Compressor<'static>,
    decompressor: zstd::bulk::Decompressor<'static>,
    scratch: Vec<u8>,
    sealed: Vec<u8>,
    entries: Vec<RawEntry>,
}

impl RawChain {
    fn new(data: &Data) -> BenchResult<RawChain> {
        let mut id_key = [0u8; 32];
        let mut seal_key = [0u8; 32];
        getrandom::fill(&mut id_key)?;
        getrandom::fill(&mut seal_key)?;
        Ok(RawChain {
            id_key,
            aead: XChaCha20Poly1305::new_from_slice(&seal_key).map_err(|e| e.to_string())?,
            compressor: zstd::bulk::Compressor::new(ZSTD_LEVEL)?,
            decompressor: zstd::bulk::Decompressor::new()?,
            scratch: Vec::with_capacity(zstd::zstd_safe::compress_bound(BLOCK * RUN_BLOCKS)),
            // Allocated (and touched) once, reused by every round.
            sealed: Vec::with_capacity(
                data.buf.len() + data.blocks.len() * (NONCE_LEN + TAG_LEN + 64),
            ),
            entries: Vec::with_capacity(data.blocks.len()),
        })
    }

    // Not inlined, so that a profile shows the chain as its own frame.
    #[inline(never)]
    fn write(&mut self, data: &Data) -> BenchResult<()> {
        self.sealed.clear();
        self.entries.clear();
        // Blocks lie end to end in `data.buf`, so a run is one slice of it.
        for run in data.blocks.chunks(RUN_BLOCKS) {
            let (start, end) = (run[0].0, run[run.len() - 1].0 + run[run.len() - 1].1);
            let ids: Vec<(BlockId, usize)> = run
                .iter()
                .map(|&(at, n)| {
                    (
                        *blake3::keyed_hash(&self.id_key, &data.buf[at..at + n]).as_bytes(),
                        n,
                    )
                })
                .collect();
            let plain = &data.buf[start..end];
            self.scratch.clear();
            self.scratch
                .reserve(zstd::zstd_safe::compress_bound(plain.len()));
            self.compressor
                .compress_to_buffer(plain, &mut self.scratch)?;
            let mut nonce = [0u8; NONCE_LEN];
            getrandom::fill(&mut nonce)?;
            let offset = self.sealed.len();
            self.sealed.extend_from_slice(&nonce);
            let body = self.sealed.len();
            self.sealed.extend_from_slice(&self.scratch);
            let tag = self
                .aead
                .encrypt_inout_detached(
                    &XNonce::from(nonce),
                    b"",
                    (&mut self.sealed[body..]).into(),
                )
                .map_err(|e| e.to_string())?;
            self.sealed.extend_from_slice(tag.as_slice());
            self.entries.push(RawEntry {
                ids,
                offset,
                length: self.sealed.len() - offset,
                raw_length: plain.len(),
            });
        }
        Ok(())
    }

    /// Opens every run the last `write` made: authenticate and decrypt, decompress to the known
    /// length, recompute each block's keyed hash and compare it with its id.
    #[inline(never)]
    fn read(&mut self) -> BenchResult<u64> {
        let mut body = Vec::with_capacity(zstd::zstd_safe::compress_bound(BLOCK * RUN_BLOCKS));
        let mut plain = Vec::with_capacity(BLOCK * RUN_BLOCKS);
        let mut total = 0u64;
        for e in &self.entries {
            let sealed = &self.sealed[e.offset..e.offset + e.length];
            let nonce = XNonce::try_from(&sealed[..NONCE_LEN]).map_err(|e| e.to_string())?;
            let tag =
                Tag::try_from(&sealed[sealed.len() - TAG_LEN..]).map_err(|e| e.to_string())?;
            body.clear();
            body.extend_from_slice(&sealed[NONCE_LEN..sealed.len() - TAG_LEN]);
            self.aead
                .decrypt_inout_detached(&nonce, b"", body.as_mut_slice().into(), &tag)
                .map_err(|_| "raw chain: authentication failed")?;
            plain.clear();
            plain.reserve(e.raw_length);
            let n = self.decompressor.decompress_to_buffer(&body, &mut plain)?;
            if n != e.raw_length {
                return Err("raw chain: a run did not read back".into());
            }
            let mut at = 0;
            for (id, len) in &e.ids {
                if blake3::keyed_hash(&self.id_key, &plain[at..at + len]).as_bytes() != id {
                    return Err("raw chain: a block did not read back".into());
                }
                at += len;
            }
            total += black_box(&plain).len() as u64;
        }
        Ok(total)
    }
}

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

/// A fresh repository in its own temporary directory (untimed).
async fn fresh_store(parent: &Path) -> BenchResult<(tempfile::TempDir, BlockStore)> {
    let dir = tempfile::Builder::new()
        .prefix("pgfrost-bench-")
        .tempdir_in(parent)?;
    let store = Store::open(&Location::Local(dir.path().join("repo")), true)?;
    let cost = Cost {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };
    let repo = Repository::create(store, b"bench-passphrase", cost, "").await?;
    let bs = BlockStore::open(repo.store.clone(), "bench", repo.keys.clone()).await?;
    Ok((dir, bs))
}

async fn store_write(bs: &BlockStore, data: &Data) -> BenchResult<(Vec<BlockId>, WriteStats)> {
    let mut ids = Vec::with_capacity(data.blocks.len());
    let mut w = bs.writer(pgfrost::repo::lease::MayWrite::alone());
    for block in data.blocks() {
        ids.push(w.add(block).await?);
    }
    let stats = w.finish().await?;
    Ok((ids, stats))
}

/// Reads as a restore does: `read_blocks_into` one reused buffer, `RESTORE_BATCH` blocks a call.
async fn store_read(bs: &BlockStore, ids: &[BlockId]) -> BenchResult<u64> {
    let mut total = 0u64;
    let mut buf = Vec::new();
    for chunk in ids.chunks(RESTORE_BATCH) {
        let lens = bs.read_blocks_into(chunk, &mut buf).await?;
        let n: u64 = lens.iter().map(|&n| n as u64).sum();
        black_box(&buf[..n as usize]);
        total += n;
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/// The samples of one measurement, one per round, in round order.
#[derive(Default)]
struct Series {
    samples: Vec<Sample>,
}

fn rate(mib: f64, d: Duration) -> f64 {
    mib / d.as_secs_f64().max(1e-9)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn max(v: impl Iterator<Item = f64>) -> f64 {
    v.fold(0.0, f64::max)
}

impl Series {
    fn push(&mut self, s: Sample) {
        self.samples.push(s);
    }
    fn rates(&self, mib: f64, f: impl Fn(&Sample) -> Duration) -> Vec<f64> {
        self.samples.iter().map(|s| rate(mib, f(s))).collect()
    }
    /// Best (highest) input MiB per wall second.
    fn best(&self, mib: f64) -> f64 {
        max(self.rates(mib, |s| s.wall).into_iter())
    }
    fn median(&self, mib: f64) -> f64 {
        median(self.rates(mib, |s| s.wall))
    }
    /// Best input MiB per second of wall time less run-queue wait.
    fn best_own(&self, mib: f64) -> f64 {
        max(self.rates(mib, Sample::own).into_iter())
    }
    /// Best input MiB per CPU-second of this thread.
    fn best_cpu(&self, mib: f64) -> f64 {
        max(self.rates(mib, |s| s.thread_cpu).into_iter())
    }
    /// The round with the best wall time, for its CPU figures.
    fn best_sample(&self) -> Sample {
        *self.samples.iter().min_by_key(|s| s.wall).unwrap()
    }
    /// Median over rounds of this series' rate over `base`'s in the same round.
    fn paired(&self, base: &Series, mib: f64) -> f64 {
        median(
            self.samples
                .iter()
                .zip(&base.samples)
                .map(|(s, b)| rate(mib, s.wall) / rate(mib, b.wall))
                .collect(),
        )
    }
    fn json(&self, mib: f64) -> serde_json::Value {
        let b = self.best_sample();
        let secs = |f: fn(&Sample) -> Duration| -> Vec<f64> {
            self.samples.iter().map(|s| f(s).as_secs_f64()).collect()
        };
        serde_json::json!({
            "mib_s": self.best(mib),
            "mib_s_median": self.median(mib),
            "mib_s_own": self.best_own(mib),
            "mib_per_cpu_s": self.best_cpu(mib),
            "best": {
                "wall_s": b.wall.as_secs_f64(),
                "thread_cpu_s": b.thread_cpu.as_secs_f64(),
                "process_cpu_s": b.process_cpu.as_secs_f64(),
                "runq_wait_s": b.runq_wait.as_secs_f64(),
                "blocked_s": b.blocked().as_secs_f64(),
                "minor_faults": b.faults,
            },
            "rounds": {
                "wall_s": secs(|s| s.wall),
                "thread_cpu_s": secs(|s| s.thread_cpu),
                "process_cpu_s": secs(|s| s.process_cpu),
                "runq_wait_s": secs(|s| s.runq_wait),
                "minor_faults": self.samples.iter().map(|s| s.faults).collect::<Vec<_>>(),
            },
        })
    }
}

fn verdict(ratio: f64) -> &'static str {
    if ratio >= TARGET { "PASS" } else { "FAIL" }
}

fn fs_type(dir: &Path) -> String {
    // The longest mount point that is a prefix of the directory.
    let Ok(dir) = dir.canonicalize() else {
        return "?".into();
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "?".into();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mnt, ty) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(mnt).then(|| (mnt.len(), ty.to_string()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, t)| t)
        .unwrap_or_else(|| "?".into())
}

/// The four measurements of the run.
#[derive(Default)]
struct Results {
    raw_w: Series,
    st_w: Series,
    raw_r: Series,
    st_r: Series,
    stats: WriteStats,
}

fn run(data: &Data, rounds: usize, parent: &Path) -> BenchResult<(Results, RawChain)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut raw = RawChain::new(data)?;
    let mut res = Results::default();
    let whole = data.buf.len() as u64;
    for round in 0..rounds {
        eprintln!("round {}/{rounds} ...", round + 1);
        let (dir, bs) = rt.block_on(fresh_store(parent))?;
        // Alternate which side goes first, so drift over the run does not favour one.
        let raw_first = round % 2 == 0;
        let raw_write = |raw: &mut RawChain, series: &mut Series| -> BenchResult<()> {
            let m = Meter::start();
            raw.write(data)?;
            series.push(m.stop());
            Ok(())
        };
        let raw_read = |raw: &mut RawChain, series: &mut Series| -> BenchResult<()> {
            let m = Meter::start();
            let n = raw.read()?;
            series.push(m.stop());
            if n != whole {
                return Err("the raw chain read back the wrong amount".into());
            }
            Ok(())
        };

        if raw_first {
            raw_write(&mut raw, &mut res.raw_w)?;
        }
        let m = Meter::start();
        let (ids, stats) = rt.block_on(store_write(&bs, data))?;
        res.st_w.push(m.stop());
        if !raw_first {
            raw_write(&mut raw, &mut res.raw_w)?;
        }
        if stats.new_blocks != data.blocks.len() as u64 {
            return Err(format!(
                "the store kept {} of {} blocks: the input has repeats",
                stats.new_blocks,
                data.blocks.len()
            )
            .into());
        }
        res.stats = stats;

        if raw_first {
            raw_read(&mut raw, &mut res.raw_r)?;
        }
        let m = Meter::start();
        let n = rt.block_on(store_read(&bs, &ids))?;
        res.st_r.push(m.stop());
        if n != whole {
            return Err("the store read back the wrong amount".into());
        }
        if !raw_first {
            raw_read(&mut raw, &mut res.raw_r)?;
        }

        if round == 0 {
            // Untimed: every block reads back exactly as written.
            for (i, chunk) in ids.chunks(READ_CHUNK).enumerate() {
                for (j, b) in rt.block_on(bs.read_blocks(chunk))?.iter().enumerate() {
                    let k = i * READ_CHUNK + j;
                    if b.as_slice() != data.block(k) {
                        return Err(format!("block {k} read back altered").into());
                    }
                }
            }
        }
        drop(bs);
        dir.close()?;
    }
    Ok((res, raw))
}

/// Printed under the heading: what the columns mean.
const LEGEND: &str = "  \
  MiB/s: input MiB per wall second, best round (median: over all rounds)
  own: input MiB per second of wall time less run-queue wait (while other processes held
       the CPU), best round
  MiB/CPU-s: input MiB per CPU second of the main thread, best round
  wall s, CPU s, blocked, proc CPU, faults: the round with the best wall time; CPU s,
       blocked (asleep, i.e. waiting for I/O) and faults (minor page faults) are the main
       thread's, proc CPU adds the I/O threads";

fn main() -> BenchResult<()> {
    // `cargo bench` passes --bench. Without it we were started by `cargo test --all-targets`, in
    // an unoptimised build: make that a quick smoke run of the same code, not a measurement.
    let benching = std::env::args().any(|a| a == "--bench");
    let (mib, rounds) = if benching { (256, 3) } else { (4, 1) };
    let mib = env_usize("PGFROST_BENCH_MB", mib)?.max(1);
    let rounds = env_usize("PGFROST_BENCH_ROUNDS", rounds)?.max(1);
    if !benching {
        eprintln!(
            "smoke run (not started by `cargo bench`): {mib} MiB, {rounds} round(s); its figures mean nothing"
        );
    }
    let parent = std::env::var_os("PGFROST_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);

    eprintln!("preparing {mib} MiB of input ...");
    let data = match std::env::var_os("PGFROST_BENCH_DATA") {
        Some(dir) => from_dir(Path::new(&dir), mib)?,
        None => synthetic(mib),
    };
    let size = data.mib();
    let (res, raw) = run(&data, rounds, &parent)?;
    let Results {
        raw_w,
        st_w,
        raw_r,
        st_r,
        stats,
    } = &res;

    let raw_ratio = data.buf.len() as f64 / raw.sealed.len() as f64;
    let store_ratio = stats.bytes as f64 / stats.stored_bytes.max(1) as f64;
    let fs = fs_type(&parent);
    let ratios = |st: &Series, raw: &Series| {
        (
            st.best(size) / raw.best(size),
            st.paired(raw, size),
            st.best_own(size) / raw.best_own(size),
            st.best_cpu(size) / raw.best_cpu(size),
        )
    };
    let (w, w_paired, w_own, w_cpu) = ratios(st_w, raw_w);
    let (r, r_paired, r_own, r_cpu) = ratios(st_r, raw_r);

    println!();
    println!("pgfrost block-store bench: {size:.0} MiB, {}", data.source);
    println!(
        "  zstd level {ZSTD_LEVEL} shrinks it {raw_ratio:.2}x (raw chain), {store_ratio:.2}x (store, {} packs)",
        stats.packs
    );
    println!(
        "  repository under {} ({fs}), fsync on; reads are served from the page cache",
        parent.display()
    );
    println!("  {rounds} interleaved rounds, alternating which side goes first\n{LEGEND}");
    println!();
    println!(
        "{:<18} {:>8} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "",
        "MiB/s",
        "median",
        "own",
        "MiB/CPU-s",
        "wall s",
        "CPU s",
        "blocked",
        "proc CPU",
        "faults"
    );
    for (name, s) in [
        ("write raw chain", raw_w),
        ("write block store", st_w),
        ("read  raw chain", raw_r),
        ("read  block store", st_r),
    ] {
        let b = s.best_sample();
        println!(
            "{:<18} {:>8.1} {:>8.1} {:>8.1} {:>10.1} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7}",
            name,
            s.best(size),
            s.median(size),
            s.best_own(size),
            s.best_cpu(size),
            b.wall.as_secs_f64(),
            b.thread_cpu.as_secs_f64(),
            b.blocked().as_secs_f64(),
            b.process_cpu.as_secs_f64(),
            b.faults,
        );
    }
    println!();
    println!(
        "{:<17} {:>6} {:>8} {:>6} {:>6}   target >= {TARGET:.2} on the best-round wall ratio",
        "store/raw", "wall", "paired", "own", "CPU"
    );
    for (name, (a, p, o, c)) in [
        ("write", (w, w_paired, w_own, w_cpu)),
        ("read", (r, r_paired, r_own, r_cpu)),
    ] {
        let v = if benching { verdict(a) } else { "(smoke run)" };
        println!("{name:<17} {a:>6.3} {p:>8.3} {o:>6.3} {c:>6.3}   {v}");
    }

    let json = serde_json::json!({
        "bench": "blockstore",
        "mib": size,
        "blocks": data.blocks.len(),
        "source": data.source,
        "rounds": rounds,
        "target": TARGET,
        "compression_raw": raw_ratio,
        "compression_store": store_ratio,
        "packs": stats.packs,
        "fs": fs,
        "raw_write": raw_w.json(size),
        "store_write": st_w.json(size),
        "raw_read": raw_r.json(size),
        "store_read": st_r.json(size),
        "write_ratio": w,
        "write_ratio_paired_median": w_paired,
        "write_ratio_own": w_own,
        "write_ratio_cpu": w_cpu,
        "read_ratio": r,
        "read_ratio_paired_median": r_paired,
        "read_ratio_own": r_own,
        "read_ratio_cpu": r_cpu,
        "smoke": !benching,
        "write_pass": w >= TARGET,
        "read_pass": r >= TARGET,
    });
    println!("BENCH_JSON {json}");
    Ok(())
}
