//! Where each block is: the block index's map from block id to its place in a pack (and the
//! sets of ids garbage collection keeps), in bounded memory whatever the size of the repository.
//!
//! New entries go into an in-memory hash map. When it is full and growing would take it past
//! `index-memory`, it is written out, in id order, as a table in a local temporary file, and
//! tables of similar size are merged (a log-structured merge): a lookup searches the map, then
//! each table, newest first, and there are O(log n) tables. The files are unlinked as soon as they are created, so a
//! killed process leaves nothing behind, and they are memory-mapped for lookups. Nothing here is
//! stored in the repository: the index segments are the truth, and every process builds its map
//! from them.

use super::index::{self, Run};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub type BlockId = [u8; 32];

/// A block's place: its run (pack, offset, sealed and plaintext lengths) and where in the run's
/// plaintext the block lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub pack: u32,
    pub run_offset: u32,
    pub run_length: u32,
    pub run_raw: u32,
    pub raw_offset: u32,
    pub raw_length: u32,
}

/// What a block map holds for each id: a fixed-size value, stored in tables after the id.
pub trait Value: Copy + std::fmt::Debug {
    const LEN: usize;
    fn put(&self, out: &mut [u8]);
    fn get(b: &[u8]) -> Self;
}

impl Value for Loc {
    const LEN: usize = 24;
    fn put(&self, out: &mut [u8]) {
        for (i, v) in [
            self.pack,
            self.run_offset,
            self.run_length,
            self.run_raw,
            self.raw_offset,
            self.raw_length,
        ]
        .into_iter()
        .enumerate()
        {
            out[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    fn get(b: &[u8]) -> Loc {
        let f = |i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap());
        Loc {
            pack: f(0),
            run_offset: f(1),
            run_length: f(2),
            run_raw: f(3),
            raw_offset: f(4),
            raw_length: f(5),
        }
    }
}

/// A set of ids (garbage collection's live set).
impl Value for () {
    const LEN: usize = 0;
    fn put(&self, _: &mut [u8]) {}
    fn get(_: &[u8]) {}
}

/// A number per id (garbage collection's claims: which pack keeps a block).
impl Value for u32 {
    const LEN: usize = 4;
    fn put(&self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
    fn get(b: &[u8]) -> u32 {
        u32::from_le_bytes(b.try_into().unwrap())
    }
}
/// Writing the map out sorts references to its entries: two pointers each.
const SORT_BYTES: usize = 16;
/// Each table keeps the position of its first record for every 16-bit id prefix (256 KiB), so a
/// lookup binary-searches a few hundred records rather than the whole table.
const FAN: usize = 1 << 16;
/// Bytes buffered while writing a table.
const WRITE_BUF: usize = 1 << 20;

/// Where tables go and how much memory the map may use (options `index-path`, `index-memory`).
/// A block store carries its limits to every map and scratch file made for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub dir: PathBuf,
    pub memory: usize,
}

pub const DEFAULT_DIR: &str = "/var/tmp";
pub const DEFAULT_MEMORY: usize = 64 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            dir: PathBuf::from(DEFAULT_DIR),
            memory: DEFAULT_MEMORY,
        }
    }
}

/// A read-only memory map of a whole file.
struct Map {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value; it is plain memory to any thread.
unsafe impl Send for Map {}
unsafe impl Sync for Map {}

impl Map {
    /// Maps `f`, which must be `len` bytes long and never change again: a table file is written
    /// in full (so a full disk fails the write, not a later page fault) and unlinked before it
    /// is mapped, so no other process can truncate it under the mapping.
    fn new(f: &File, len: usize) -> std::io::Result<Map> {
        if len == 0 {
            return Ok(Map {
                ptr: std::ptr::null_mut(),
                len: 0,
            });
        }
        // SAFETY: a fresh shared read-only mapping of a file we hold open; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // Lookups land anywhere: reading ahead around each would only evict useful pages.
        // SAFETY: advice on the mapping just made.
        unsafe { libc::madvise(ptr, len, libc::MADV_RANDOM) };
        Ok(Map { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the mapping is `len` readable bytes for as long as self lives.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping what new() mapped, once.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

fn prefix(id: &[u8]) -> usize {
    (id[0] as usize) << 8 | id[1] as usize
}

/// Encoded run lists (index.rs) kept in an unlinked scratch file in `index-path`, for work that
/// needs every pack's run list at hand (garbage collection, verify): in memory they would cost
/// 36 bytes per block. Each list is appended once and read back by the place `append` gave.
pub struct RunFile {
    file: File,
    end: u64,
    what: &'static str,
}

/// Where [`RunFile::append`] put a run list.
#[derive(Debug, Clone, Copy)]
pub struct RunsAt {
    at: u64,
    len: u32,
}

impl RunFile {
    pub fn new(dir: &Path, what: &'static str) -> Result<RunFile> {
        Ok(RunFile {
            file: scratch_file(dir, what)?,
            end: 0,
            what,
        })
    }

    fn err(&self, e: std::io::Error) -> Error {
        Error::storage(format!("the scratch file for {}: {e}", self.what)).hint(
            "point index-path at a local directory with room (about 40 bytes per stored block)",
        )
    }

    pub fn append(&mut self, runs: &[Run]) -> Result<RunsAt> {
        let mut b = Vec::with_capacity(index::encoded_runs_len(runs));
        index::encode_runs(runs, &mut b);
        self.file
            .write_all_at(&b, self.end)
            .map_err(|e| self.err(e))?;
        let at = RunsAt {
            at: self.end,
            len: b.len() as u32,
        };
        self.end += b.len() as u64;
        Ok(at)
    }

    /// The list's encoding, as appended (an encoding is canonical: equal lists, equal bytes).
    pub fn bytes(&self, at: RunsAt) -> Result<Vec<u8>> {
        let mut b = vec![0u8; at.len as usize];
        self.file
            .read_exact_at(&mut b, at.at)
            .map_err(|e| self.err(e))?;
        Ok(b)
    }

    pub fn runs(&self, at: RunsAt) -> Result<Vec<Run>> {
        index::decode_runs(&mut index::Reader::new(&self.bytes(at)?)).map_err(Error::internal)
    }
}

/// A sorted table of records (id, then the value) in an unlinked file.
struct Table<V> {
    map: Map,
    n: usize,
    value: std::marker::PhantomData<V>,
    /// fan[p] = the first record whose id's 16-bit prefix is at least p; fan[FAN] = n.
    fan: Vec<u32>,
}

impl<V: Value> Table<V> {
    const REC: usize = 32 + V::LEN;

    fn rec(&self, i: usize) -> &[u8] {
        &self.map.bytes()[i * Self::REC..(i + 1) * Self::REC]
    }

    fn get(&self, id: &BlockId) -> Option<V> {
        let p = prefix(id);
        let (mut lo, mut hi) = (self.fan[p] as usize, self.fan[p + 1] as usize);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let r = self.rec(mid);
            match r[..32].cmp(id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(V::get(&r[32..])),
            }
        }
        None
    }
}

static TABLE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes records, in id order, to a new unlinked file in `dir` and maps it.
struct TableWriter<V> {
    value: std::marker::PhantomData<V>,
    out: BufWriter<File>,
    path: PathBuf,
    n: usize,
    counts: Vec<u32>,
    last: Option<BlockId>,
}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> Error {
    let err = Error::storage(format!(
        "cannot {what} the block index's file {}: {e}",
        p.display()
    ));
    if e.kind() == std::io::ErrorKind::StorageFull {
        err.hint("free space there, or point index-path at a local directory with room (about 60 bytes per stored block)")
    } else {
        err.hint("point index-path at a writable local directory")
    }
}

/// A new empty file in `dir`, already unlinked: the open descriptor (then a mapping) keeps
/// it, and a killed process leaves nothing to clean up. Returns it with the name it had.
fn unlinked_file(dir: &Path) -> Result<(File, PathBuf)> {
    let path = dir.join(format!(
        "pgfrost-index-{}-{}",
        std::process::id(),
        TABLE_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_err("create", &path, e))?;
    std::fs::remove_file(&path).map_err(|e| io_err("unlink", &path, e))?;
    Ok((f, path))
}

/// A scratch file for `what` in `index-path`, for other work whose size grows with the
/// repository (garbage collection's run lists), unlinked from the start.
pub fn scratch_file(dir: &Path, what: &str) -> Result<File> {
    unlinked_file(dir)
        .map(|(f, _)| f)
        .map_err(|e| e.context(format!("scratch file for {what}")))
}

impl<V: Value> TableWriter<V> {
    fn new(dir: &Path) -> Result<TableWriter<V>> {
        let (f, path) = unlinked_file(dir)?;
        Ok(TableWriter {
            value: std::marker::PhantomData,
            out: BufWriter::with_capacity(WRITE_BUF, f),
            path,
            n: 0,
            counts: vec![0; FAN],
            last: None,
        })
    }

    /// Appends a record; ids must come in increasing order (a repeat is dropped: one place is
    /// as good as another).
    fn push(&mut self, id: &BlockId, v: &V) -> Result<()> {
        if let Some(last) = &self.last {
            if last == id {
                return Ok(());
            }
            debug_assert!(last < id, "table records out of order");
        }
        let mut rec = [0u8; 32 + 24];
        let rec = &mut rec[..32 + V::LEN];
        rec[..32].copy_from_slice(id);
        v.put(&mut rec[32..]);
        self.out
            .write_all(rec)
            .map_err(|e| io_err("write", &self.path, e))?;
        self.counts[prefix(id)] += 1;
        self.n += 1;
        self.last = Some(*id);
        Ok(())
    }

    fn finish(self) -> Result<Table<V>> {
        let path = self.path;
        let f = self
            .out
            .into_inner()
            .map_err(|e| io_err("write", &path, e.into_error()))?;
        let map = Map::new(&f, self.n * (32 + V::LEN)).map_err(|e| io_err("map", &path, e))?;
        let mut fan = Vec::with_capacity(FAN + 1);
        let mut at = 0u32;
        for c in &self.counts {
            fan.push(at);
            at += c;
        }
        fan.push(at);
        Ok(Table {
            value: std::marker::PhantomData,
            map,
            n: self.n,
            fan,
        })
    }
}

/// A map from block id to a [`Value`] (a [`Loc`] for the block index).
pub struct BlockMap<V = Loc> {
    limits: Limits,
    recent: HashMap<BlockId, V>,
    /// Oldest first; each about twice the size of the next or more.
    tables: Vec<Table<V>>,
}

impl<V: Value> Default for BlockMap<V> {
    fn default() -> Self {
        BlockMap::new(Limits::default())
    }
}

/// What one bucket of the in-memory hash map costs: key, value and a control byte.
const fn bucket_bytes<V>() -> usize {
    32 + std::mem::size_of::<V>() + 1
}

/// The most a map of `buckets` buckets takes at once: while it grows into them the half-size
/// table it leaves is still there; when it is written out, references to its entries are
/// sorted.
fn peak_bytes<V>(buckets: usize) -> usize {
    let table = buckets * bucket_bytes::<V>();
    table + (table / 2).max(buckets * 7 / 8 * SORT_BYTES)
}

impl<V: Value> BlockMap<V> {
    pub fn new(limits: Limits) -> BlockMap<V> {
        BlockMap {
            limits,
            recent: HashMap::new(),
            tables: Vec::new(),
        }
    }

    /// Whether the map, full, may grow: it doubles its buckets, and writing it out later needs
    /// room to sort. A hash map (rather than an ordered one) because a restore or a backup
    /// looks up every block, and loading the index inserts every one.
    fn may_grow(&self) -> bool {
        let buckets = (self.recent.capacity() * 8 / 7).next_power_of_two();
        peak_bytes::<V>(buckets * 2) <= self.limits.memory
    }

    /// The most entries the map holds under `memory` bytes.
    pub fn capacity_for(memory: usize) -> usize {
        let mut buckets = 8usize;
        while peak_bytes::<V>(buckets * 2) <= memory {
            buckets *= 2;
        }
        buckets * 7 / 8
    }

    pub fn get(&self, id: &BlockId) -> Option<V> {
        if let Some(l) = self.recent.get(id) {
            return Some(*l);
        }
        self.tables.iter().rev().find_map(|t| t.get(id))
    }

    pub fn contains(&self, id: &BlockId) -> bool {
        self.get(id).is_some()
    }

    /// Entries held. A block stored in several packs may count more than once.
    pub fn len(&self) -> usize {
        self.recent.len() + self.tables.iter().map(|t| t.n).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tables on disk, and the bytes they hold.
    pub fn tables(&self) -> (usize, u64) {
        (
            self.tables.len(),
            self.tables
                .iter()
                .map(|t| (t.n * Table::<V>::REC) as u64)
                .sum(),
        )
    }

    /// Adds a place for `id` unless the in-memory part already has one. (Tables are not
    /// searched: loading an index would then cost a lookup per entry. A block in two packs
    /// may therefore be held twice, until a merge drops one.)
    pub fn insert(&mut self, id: BlockId, value: V) -> Result<()> {
        if self.recent.len() == self.recent.capacity()
            && !self.recent.is_empty()
            && !self.recent.contains_key(&id)
            && !self.may_grow()
        {
            self.spill()?;
        }
        self.recent.entry(id).or_insert(value);
        Ok(())
    }

    /// Adds `id` unless the map holds it anywhere, in memory or in a table; returns whether it
    /// was added. Costs a full lookup: for sets whose counts must be exact (garbage
    /// collection's live and claimed blocks), not for loading the index.
    pub fn insert_new(&mut self, id: BlockId, value: V) -> Result<bool> {
        if self.contains(&id) {
            return Ok(false);
        }
        self.insert(id, value)?;
        Ok(true)
    }

    /// Writes the in-memory part out as a table, then merges tables of similar size.
    fn spill(&mut self) -> Result<()> {
        let mut w = TableWriter::new(&self.limits.dir)?;
        let mut sorted: Vec<(&BlockId, &V)> = self.recent.iter().collect();
        sorted.sort_unstable_by_key(|e| e.0);
        for (id, l) in sorted {
            w.push(id, l)?;
        }
        let t = w.finish()?;
        log::debug!("block index: {} entries written to a table", t.n);
        self.recent.clear();
        self.tables.push(t);
        while self.tables.len() >= 2 {
            let k = self.tables.len();
            if self.tables[k - 2].n > 2 * self.tables[k - 1].n {
                break;
            }
            let newer = self.tables.pop().unwrap();
            let older = self.tables.pop().unwrap();
            self.tables.push(merge(&self.limits.dir, &older, &newer)?);
        }
        Ok(())
    }
}

fn merge<V: Value>(dir: &Path, a: &Table<V>, b: &Table<V>) -> Result<Table<V>> {
    let mut w = TableWriter::new(dir)?;
    let (mut i, mut j) = (0, 0);
    while i < a.n || j < b.n {
        let take_a = j == b.n || (i < a.n && a.rec(i)[..32] <= b.rec(j)[..32]);
        let r = if take_a {
            i += 1;
            a.rec(i - 1)
        } else {
            j += 1;
            b.rec(j - 1)
        };
        w.push(r[..32].try_into().unwrap(), &V::get(&r[32..]))?;
    }
    let t = w.finish()?;
    log::debug!("block index: tables merged into one of {} entries", t.n);
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(n: u32) -> Loc {
        Loc {
            pack: n,
            run_offset: n.wrapping_mul(3),
            run_length: n ^ 0xdead,
            run_raw: n + 7,
            raw_offset: n / 3,
            raw_length: 8192,
        }
    }

    fn id(n: u32) -> BlockId {
        *blake3::hash(&n.to_le_bytes()).as_bytes()
    }

    #[test]
    fn spills_merge_and_every_entry_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = BlockMap::new(Limits {
            dir: dir.path().to_path_buf(),
            memory: 16 << 10,
        });
        for n in 0..5000u32 {
            m.insert(id(n), loc(n)).unwrap();
        }
        // A block stored again elsewhere: either place will do, and it is still found.
        m.insert(id(17), loc(99999)).unwrap();
        let (tables, bytes) = m.tables();
        assert!((2..=8).contains(&tables), "{tables} tables");
        assert!(bytes >= 4900 * 56);
        for n in 0..5000u32 {
            let l = m.get(&id(n)).unwrap_or_else(|| panic!("{n} lost"));
            assert!(l == loc(n) || (n == 17 && l == loc(99999)), "{n}: {l:?}");
        }
        assert!(m.get(&id(5000)).is_none());
        assert!(m.get(&[0; 32]).is_none() && m.get(&[0xff; 32]).is_none());
        // The files are unlinked: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn sets_and_numbers_spill_too() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            dir: dir.path().to_path_buf(),
            memory: 4 << 10,
        };
        let mut set: BlockMap<()> = BlockMap::new(limits.clone());
        let mut num: BlockMap<u32> = BlockMap::new(limits);
        for n in 0..3000u32 {
            set.insert(id(n), ()).unwrap();
            num.insert(id(n), n * 7).unwrap();
        }
        assert!(set.tables().0 >= 1 && set.tables().1 >= 2000 * 32);
        assert!(num.tables().0 >= 1 && num.tables().1 >= 2000 * 36);
        for n in 0..3000u32 {
            assert!(set.contains(&id(n)));
            assert_eq!(num.get(&id(n)), Some(n * 7));
        }
        assert!(!set.contains(&id(3000)) && num.get(&id(3001)).is_none());
        // insert_new sees ids held in tables, not only in memory.
        assert!(!set.insert_new(id(0), ()).unwrap());
        assert!(!num.insert_new(id(1), 99).unwrap());
        assert_eq!(num.get(&id(1)), Some(7));
        assert!(set.insert_new(id(3000), ()).unwrap() && set.contains(&id(3000)));
    }

    #[test]
    fn the_map_keeps_to_its_memory() {
        assert_eq!(BlockMap::<Loc>::capacity_for(64 << 20), 458_752);
        let mut m = BlockMap::new(Limits {
            dir: std::env::temp_dir(),
            memory: 1 << 20,
        });
        let most = BlockMap::<Loc>::capacity_for(1 << 20);
        for n in 0..most as u32 {
            m.insert(id(n), loc(n)).unwrap();
        }
        assert_eq!(m.tables().0, 0, "spilled before its capacity");
        assert!(m.recent.capacity() * 8 / 7 * bucket_bytes::<Loc>() * 3 / 2 <= 1 << 20);
        m.insert(id(most as u32), loc(0)).unwrap();
        assert_eq!(m.tables().0, 1);
    }

    #[test]
    fn an_unwritable_directory_is_a_clear_error() {
        let mut m = BlockMap::new(Limits {
            dir: PathBuf::from("/nonexistent/pgfrost"),
            memory: 1,
        });
        let e = (0..100)
            .find_map(|n| m.insert(id(n), loc(n)).err())
            .expect("a table must be written, and fail");
        assert!(e.message.contains("/nonexistent/pgfrost"), "{e}");
        assert!(e.hint.unwrap().contains("index-path"));
    }
}
