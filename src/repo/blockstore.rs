//! The content-addressed block store of one stanza: dedup, packing, indexing and reading.
//!
//! Write order is the durability rule: a pack is uploaded (and on local disk fsynced) before the
//! index segment that names it, and an index segment before anything that references its blocks.
//! A crash leaves unreferenced packs (garbage, adoptable through their trailers), never a
//! reference to something missing.

use super::blockmap::{BlockMap, Limits, Loc};
use super::crypto::{Keys, Kind, MAX_OBJECT_PLAINTEXT, Opener, Sealer};
use super::index::{self, PackEntries, Run, RunBlock};
use super::pack::{self, PackBuilder};
use crate::error::{Error, ErrorKind, Result};
use crate::store::{Listed, Put, Store};
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use tokio::task::JoinSet;

pub use super::blockmap::BlockId;

thread_local! {
    /// One zstd context and run buffer per thread, rather than one per read.
    static OPENER: std::cell::RefCell<(Opener, Vec<u8>)> =
        std::cell::RefCell::new((Opener::new(), Vec::new()));
}

/// Default pack size: large enough that object stores see few requests, small enough that a
/// killed upload wastes little.
pub const DEFAULT_PACK_SIZE: usize = 32 << 20;
/// An index segment is written after this many packs, so a long session's progress becomes
/// durable (and reusable after a crash) as it goes, not only at its end.
pub const PACKS_PER_SEGMENT: usize = 16;
/// Packs uploading at once per writer: overlaps upload (and fsync) with sealing.
pub const UPLOADS_IN_FLIGHT: usize = 2;
/// A writer closes a run before it would exceed this much plaintext (16 pages). Runs amortise
/// zstd's per-frame table building and compress better than lone pages, but a reader that needs
/// one block of a run decodes all of it: an incremental's scattered changes make short runs, and
/// a restore pays for at most 15 unwanted pages per wanted one.
pub const RUN_BYTES: usize = 128 << 10;

/// A run of a known pack as a reader fetches it.
#[derive(Debug, Clone, Copy)]
struct RunLoc {
    offset: u32,
    length: u32,
    raw_length: u32,
}

impl From<Loc> for RunLoc {
    fn from(l: Loc) -> RunLoc {
        RunLoc {
            offset: l.run_offset,
            length: l.run_length,
            raw_length: l.run_raw,
        }
    }
}

/// Blocks wanted from one run: (position in the request, id, place in the run).
type Wanted = Vec<(usize, BlockId, Loc)>;

/// A block the index has placed ([`BlockStore::place`]): what a reader needs to fetch it
/// without looking it up again.
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    id: BlockId,
    loc: Loc,
}

impl Placed {
    /// The run holding the block, as a key: blocks with equal keys are decoded together.
    pub fn run(&self) -> (u32, u32) {
        (self.loc.pack, self.loc.run_offset)
    }

    /// Where the block starts in its run's plaintext.
    pub fn offset_in_run(&self) -> u32 {
        self.loc.raw_offset
    }
}

struct Index {
    packs: Vec<BlockId>,
    pack_pos: HashMap<BlockId, u32>,
    blocks: BlockMap,
    segments: HashSet<String>,
}

impl Index {
    fn new(limits: &Limits) -> Index {
        Index {
            packs: Vec::new(),
            pack_pos: HashMap::new(),
            blocks: BlockMap::new(limits.clone()),
            segments: HashSet::new(),
        }
    }

    fn add(&mut self, p: &PackEntries) -> Result<()> {
        let next = self.packs.len() as u32;
        let pos = *self.pack_pos.entry(p.pack).or_insert(next);
        if pos != next {
            // A pack's name is the hash of its bytes: another segment naming it lists the same
            // runs (verify checks every segment against the trailer).
            return Ok(());
        }
        self.packs.push(p.pack);
        for r in &p.runs {
            let raw = r.raw_length() as u32;
            for (raw_offset, b) in r.placed() {
                self.blocks.insert(
                    b.id,
                    Loc {
                        pack: pos,
                        run_offset: r.offset,
                        run_length: r.length,
                        run_raw: raw,
                        raw_offset,
                        raw_length: b.raw_length,
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// Counters of one writer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WriteStats {
    pub blocks: u64,
    pub bytes: u64,
    pub new_blocks: u64,
    pub new_bytes: u64,
    /// Sealed bytes added to packs for the new blocks.
    pub stored_bytes: u64,
    pub packs: u64,
    pub segments: u64,
    /// Bytes of the packs and index segments written (what the repository grew by).
    pub pack_bytes: u64,
    pub index_bytes: u64,
}

/// A handle on one stanza's block store. Cheap to clone.
#[derive(Clone)]
pub struct BlockStore {
    store: Store,
    prefix: String,
    keys: Arc<Keys>,
    index: Arc<RwLock<Index>>,
    pack_size: usize,
    level: Option<i32>,
    limits: Limits,
}

pub fn hex_id(id: &BlockId) -> String {
    hex::encode(id)
}

impl BlockStore {
    /// Opens the block store under `prefix` (the stanza name) and loads its index, with the
    /// default index limits.
    pub async fn open(store: Store, prefix: &str, keys: Arc<Keys>) -> Result<BlockStore> {
        Self::open_with(store, prefix, keys, Limits::default()).await
    }

    /// Opens the block store and loads its index within `limits`.
    pub async fn open_with(
        store: Store,
        prefix: &str,
        keys: Arc<Keys>,
        limits: Limits,
    ) -> Result<BlockStore> {
        let bs = BlockStore::open_empty(store, prefix, keys, limits);
        bs.refresh().await?;
        Ok(bs)
    }

    /// A handle with an empty index, for a caller that loads segments one by one
    /// ([`BlockStore::add_to_index`]) and must survive a bad one.
    pub fn open_empty(store: Store, prefix: &str, keys: Arc<Keys>, limits: Limits) -> BlockStore {
        BlockStore {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            keys,
            index: Arc::new(RwLock::new(Index::new(&limits))),
            pack_size: DEFAULT_PACK_SIZE,
            level: Some(3),
            limits,
        }
    }

    /// Where the index (and the work done over it) may spill, and how much memory it may use.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Adds a segment's packs to the index. Fails only when the index cannot write its
    /// on-disk part (blockmap.rs).
    pub fn add_to_index(&self, segment: &str, packs: &[PackEntries]) -> Result<()> {
        let mut idx = self.index.write().unwrap();
        for p in packs {
            idx.add(p)?;
        }
        idx.segments.insert(segment.to_string());
        Ok(())
    }

    pub fn with_pack_size(mut self, bytes: usize) -> Self {
        self.pack_size = bytes.max(1);
        self
    }

    /// zstd level for new blocks; None stores them uncompressed.
    pub fn with_compression(mut self, level: Option<i32>) -> Self {
        self.level = level;
        self
    }

    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    pub fn pack_path(&self, id: &BlockId) -> String {
        let h = hex::encode(id);
        format!("{}/pack/{}/{h}", self.prefix, &h[..2])
    }

    fn index_dir(&self) -> String {
        format!("{}/index", self.prefix)
    }

    pub fn segment_path(&self, name: &str) -> String {
        format!("{}/{name}", self.index_dir())
    }

    /// Loads index segments not seen yet (written by other processes since open).
    pub async fn refresh(&self) -> Result<()> {
        let listed = self.store.list(&self.index_dir()).await?;
        let new: Vec<Listed> = {
            let idx = self.index.read().unwrap();
            listed
                .into_iter()
                .filter(|l| !idx.segments.contains(&l.path))
                .collect()
        };
        let mut loaded = self.load_segments(new);
        while let Some((l, packs)) = loaded.try_next().await? {
            self.add_to_index(&l.path, &packs)?;
        }
        Ok(())
    }

    /// Fetches and decodes the listed index segments, eight at a time, and yields each with its
    /// listing as it is ready. A caller takes each in turn: holding them all first would cost
    /// memory in proportion to the repository. Decoding (authentication, decompression,
    /// parsing) runs on blocking threads, so segments decode in parallel while the caller
    /// takes finished ones.
    pub(crate) fn load_segments(
        &self,
        listed: Vec<Listed>,
    ) -> impl futures::Stream<Item = Result<(Listed, Vec<PackEntries>)>> + Unpin + '_ {
        futures::stream::iter(listed)
            .map(move |l| async move {
                let bytes = self.store.get(&l.path).await?;
                let bs = self.clone();
                tokio::task::spawn_blocking(move || {
                    let packs = bs.decode_segment(&l.path, &bytes)?;
                    Ok::<_, Error>((l, packs))
                })
                .await
                .map_err(|e| Error::internal(format!("index segment decoding failed: {e}")))?
            })
            .buffer_unordered(8)
    }

    pub(crate) fn decode_segment(&self, path: &str, bytes: &[u8]) -> Result<Vec<PackEntries>> {
        let bad = |m: String| {
            Error::corrupt(format!(
                "index segment '{path}' in repository {}: {m}",
                self.store.location()
            ))
        };
        let name = path.rsplit('/').next().unwrap_or("");
        if blake3::hash(bytes).to_hex().as_str() != name {
            return Err(bad(
                "content does not match its name (altered or truncated)".into(),
            ));
        }
        let plain = Opener::new()
            .open(&self.keys, Kind::Index, b"", bytes, MAX_OBJECT_PLAINTEXT)
            .map_err(|e| bad(e.to_string()))?;
        index::decode_segment(&plain).map_err(bad)
    }

    pub fn contains(&self, id: &BlockId) -> bool {
        self.index.read().unwrap().blocks.contains(id)
    }

    /// Looks every block up in the index; fails on the first one it does not know.
    pub fn place(&self, ids: &[BlockId]) -> Result<Vec<Placed>> {
        let idx = self.index.read().unwrap();
        ids.iter()
            .map(|id| {
                let loc = idx.blocks.get(id).ok_or_else(|| {
                    Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "block {} is not in the index of '{}' in repository {}",
                            hex_id(id),
                            self.prefix,
                            self.store.location()
                        ),
                    )
                })?;
                Ok(Placed { id: *id, loc })
            })
            .collect()
    }

    /// The pack the index places a block in.
    pub fn locate(&self, id: &BlockId) -> Option<BlockId> {
        let i = self.index.read().unwrap();
        i.blocks.get(id).map(|l| i.packs[l.pack as usize])
    }

    /// (blocks, packs) known to the index. A block stored in several packs may count more
    /// than once.
    pub fn counts(&self) -> (usize, usize) {
        let i = self.index.read().unwrap();
        (i.blocks.len(), i.packs.len())
    }

    /// The index's tables on local disk and the bytes they hold (none while it fits in
    /// `index-memory`).
    pub fn index_tables(&self) -> (usize, u64) {
        self.index.read().unwrap().blocks.tables()
    }

    /// Every pack id the index references.
    pub fn indexed_packs(&self) -> Vec<BlockId> {
        self.index.read().unwrap().packs.clone()
    }

    /// A writer of new blocks, under a lease that garbage collection respects (`may`).
    pub fn writer(&self, may: super::lease::MayWrite<'_>) -> BlockWriter {
        let _ = may;
        BlockWriter {
            force: false,
            bs: self.clone(),
            sealer: Sealer::new(self.level),
            pack: PackBuilder::new(),
            run: Vec::new(),
            run_blocks: Vec::new(),
            pending: HashSet::new(),
            done: Vec::new(),
            uploads: JoinSet::new(),
            stats: WriteStats::default(),
        }
    }

    /// Reads blocks, in the order asked. Each block's run is authenticated (AEAD) and decompressed
    /// to the recorded length, and the block's id recomputed from its plaintext (runs carry no
    /// name, so that check is what ties a block to its id).
    pub async fn read_blocks(&self, ids: &[BlockId]) -> Result<Vec<Vec<u8>>> {
        let mut buf = Vec::new();
        let lens = self.read_blocks_into(ids, &mut buf).await?;
        let mut out = Vec::with_capacity(ids.len());
        let mut at = 0;
        for n in lens {
            out.push(buf[at..at + n as usize].to_vec());
            at += n as usize;
        }
        Ok(out)
    }

    /// Reads blocks into the start of `buf` (which may be longer), back to back in the order
    /// asked (a file's blocks come out as its bytes), and returns their lengths. Checked as
    /// [`BlockStore::read_blocks`] does; `buf` is reused from call to call, so a restore
    /// allocates nothing per block. Each run is fetched and decoded once however many of its
    /// blocks are asked for.
    pub async fn read_blocks_into(&self, ids: &[BlockId], buf: &mut Vec<u8>) -> Result<Vec<u32>> {
        let placed = self.place(ids)?;
        self.read_placed_into(&placed, buf).await
    }

    /// [`BlockStore::read_blocks_into`] for blocks already looked up, so that a reader that
    /// orders its requests by run (a restore) looks each block up once.
    pub async fn read_placed_into(&self, blocks: &[Placed], buf: &mut Vec<u8>) -> Result<Vec<u32>> {
        // (pack, run offset) -> the wanted blocks in that run.
        let mut by_run: HashMap<(u32, u32), Wanted> = HashMap::new();
        let mut at = Vec::with_capacity(blocks.len());
        let mut lens = Vec::with_capacity(blocks.len());
        let mut total = 0usize;
        for (i, b) in blocks.iter().enumerate() {
            at.push(total);
            lens.push(b.loc.raw_length);
            total += b.loc.raw_length as usize;
            by_run.entry(b.run()).or_default().push((i, b.id, b.loc));
        }
        // Packs in index order, so that one file's packs are read in a stable order; each with
        // its id, taken under the lock once.
        let mut by_pack: BTreeMap<u32, (BlockId, Vec<(RunLoc, Wanted)>)> = BTreeMap::new();
        {
            let idx = self.index.read().unwrap();
            for ((pack, _), items) in by_run {
                by_pack
                    .entry(pack)
                    .or_insert_with(|| (idx.packs[pack as usize], Vec::new()))
                    .1
                    .push((RunLoc::from(items[0].2), items));
            }
        }
        // Zeroed only when it grows: every byte up to `total` is overwritten below, and the
        // buffer is reused from batch to batch.
        if buf.len() < total {
            buf.resize(total, 0);
        }
        let fetched = futures::stream::iter(by_pack.into_values())
            .map(|(pack, mut runs)| {
                let path = self.pack_path(&pack);
                async move {
                    runs.sort_by_key(|(r, _)| r.offset);
                    let ranges: Vec<_> = runs
                        .iter()
                        .map(|(r, _)| r.offset as u64..r.offset as u64 + r.length as u64)
                        .collect();
                    let blobs = self.store.get_ranges(&path, &ranges).await?;
                    Ok::<_, Error>((path, runs, blobs))
                }
            })
            .buffered(4);
        futures::pin_mut!(fetched);
        while let Some(r) = fetched.next().await {
            let (path, runs, blobs) = r?;
            OPENER.with_borrow_mut(|(opener, scratch)| {
                for ((run, items), blob) in runs.into_iter().zip(blobs) {
                    self.open_run_into(opener, scratch, &path, &run, &items, &at, buf, &blob)?;
                }
                Ok::<_, Error>(())
            })?;
        }
        Ok(lens)
    }

    /// Opens one run and puts the wanted blocks (`items`) at their places (`at`) in `buf`,
    /// checking each block's id.
    #[allow(clippy::too_many_arguments)]
    fn open_run_into(
        &self,
        opener: &mut Opener,
        scratch: &mut Vec<u8>,
        path: &str,
        run: &RunLoc,
        items: &[(usize, BlockId, Loc)],
        at: &[usize],
        buf: &mut [u8],
        blob: &[u8],
    ) -> Result<()> {
        let bad = |m: String| {
            Error::corrupt(format!(
                "block run at offset {} of pack '{path}' in repository {}: {m}",
                run.offset,
                self.store.location()
            ))
        };
        let run_len = run.raw_length as usize;
        // A restore asks for a file's blocks in order, so a run usually lands whole in one
        // place of `buf`: decode it there and skip the copy.
        let first = at[items[0].0];
        let whole = items
            .iter()
            .map(|(_, _, l)| l.raw_length as usize)
            .sum::<usize>()
            == run_len
            && items
                .iter()
                .all(|(i, _, l)| at[*i] == first + l.raw_offset as usize);
        if whole {
            let out = &mut buf[first..first + run_len];
            opener
                .open_exact_into(&self.keys, Kind::Run, b"", blob, out)
                .map_err(|e| bad(e.to_string()))?;
            for (_, id, l) in items {
                self.check_id(
                    path,
                    id,
                    &out[l.raw_offset as usize..][..l.raw_length as usize],
                )?;
            }
        } else {
            if scratch.len() < run_len {
                scratch.resize(run_len, 0);
            }
            let plain = &mut scratch[..run_len];
            opener
                .open_exact_into(&self.keys, Kind::Run, b"", blob, plain)
                .map_err(|e| bad(e.to_string()))?;
            for (i, id, l) in items {
                let b = &plain[l.raw_offset as usize..][..l.raw_length as usize];
                self.check_id(path, id, b)?;
                buf[at[*i]..at[*i] + b.len()].copy_from_slice(b);
            }
        }
        Ok(())
    }

    fn check_id(&self, pack: &str, id: &BlockId, plain: &[u8]) -> Result<()> {
        if self.keys.block_id(plain) != *id {
            return Err(Error::corrupt(format!(
                "block {} in pack '{pack}' of repository {}: content does not hash to its id",
                hex_id(id),
                self.store.location()
            )));
        }
        Ok(())
    }

    pub async fn read_block(&self, id: &BlockId) -> Result<Vec<u8>> {
        Ok(self
            .read_blocks(std::slice::from_ref(id))
            .await?
            .pop()
            .unwrap())
    }

    /// Reads a whole pack and checks everything in it: name = hash of bytes, header, footer,
    /// trailer, and every run and block. Returns its runs.
    pub async fn check_pack(&self, id: &BlockId) -> Result<Vec<Run>> {
        Ok(self.pack_blocks(id, |_| false).await?.0)
    }

    /// Reads a whole pack, checks everything in it as [`BlockStore::check_pack`] does, and
    /// returns its runs with the plaintext of the blocks `keep` selects, in pack order, each
    /// with the index of its run.
    pub async fn pack_blocks(
        &self,
        id: &BlockId,
        keep: impl Fn(&BlockId) -> bool,
    ) -> Result<(Vec<Run>, Vec<(usize, Vec<u8>)>)> {
        let path = self.pack_path(id);
        let bytes = self.store.get(&path).await?;
        let bad = |m: String| {
            Error::corrupt(format!(
                "pack '{path}' in repository {}: {m}",
                self.store.location()
            ))
        };
        if blake3::hash(&bytes).as_bytes() != id {
            return Err(bad(
                "content does not match its name (altered or truncated)".into(),
            ));
        }
        let mut opener = Opener::new();
        let runs = pack::parse_pack(&self.keys, &mut opener, &bytes).map_err(bad)?;
        let mut kept = Vec::new();
        let mut plain = Vec::new();
        for (n, r) in runs.iter().enumerate() {
            let blob = &bytes[r.offset as usize..r.offset as usize + r.length as usize];
            plain.resize(r.raw_length() as usize, 0);
            opener
                .open_exact_into(&self.keys, Kind::Run, b"", blob, &mut plain)
                .map_err(|e| bad(format!("block run at offset {}: {e}", r.offset)))?;
            for (at, b) in r.placed() {
                let data = &plain[at as usize..][..b.raw_length as usize];
                self.check_id(&path, &b.id, data)?;
                if keep(&b.id) {
                    kept.push((n, data.to_vec()));
                }
            }
        }
        Ok((runs, kept))
    }

    /// Reads a pack's trailer with two range reads (footer, then trailer).
    pub async fn read_trailer(&self, id: &BlockId) -> Result<Vec<Run>> {
        let path = self.pack_path(id);
        let bad = |m: String| {
            Error::corrupt(format!(
                "pack '{path}' in repository {}: {m}",
                self.store.location()
            ))
        };
        let size = self.store.size(&path).await?;
        if size < (pack::PACK_HEADER_LEN + pack::FOOTER_LEN) as u64 {
            return Err(bad(format!("truncated: {size} bytes")));
        }
        let footer = self
            .store
            .get_range(&path, size - pack::FOOTER_LEN as u64..size)
            .await?;
        let (tlen, start) = pack::parse_footer(&footer, size).map_err(bad)?;
        let trailer = self
            .store
            .get_range(&path, start..start + tlen as u64)
            .await?;
        let plain = Opener::new()
            .open(
                &self.keys,
                Kind::PackTrailer,
                b"",
                &trailer,
                MAX_OBJECT_PLAINTEXT,
            )
            .map_err(|e| bad(format!("trailer: {e}")))?;
        pack::decode_trailer(&plain, start).map_err(bad)
    }

    /// Every pack stored for this stanza, with its size. Names that are not pack ids are not packs
    /// (verify reports them).
    pub async fn list_packs(&self) -> Result<HashMap<BlockId, u64>> {
        let mut out = HashMap::new();
        for l in self.store.list(&format!("{}/pack", self.prefix)).await? {
            let name = l.path.rsplit('/').next().unwrap_or("");
            if let Ok(id) = super::format::hex_array::<32>(name, "pack name") {
                out.insert(id, l.size);
            }
        }
        Ok(out)
    }

    /// Finds packs that no index segment names (left by a process killed between a pack upload
    /// and its index segment) and indexes them from their trailers, so their blocks are reused
    /// rather than uploaded again. Returns how many packs were adopted.
    pub async fn adopt_orphan_packs(&self) -> Result<usize> {
        self.refresh().await?;
        let known: HashSet<BlockId> = self.indexed_packs().into_iter().collect();
        let orphans: Vec<BlockId> = self
            .list_packs()
            .await?
            .into_keys()
            .filter(|id| !known.contains(id))
            .collect();
        let mut found = Vec::new();
        for id in &orphans {
            // A torn or foreign pack is skipped, not fatal: adoption is an optimisation.
            match self.read_trailer(id).await {
                Ok(runs) => found.push(PackEntries { pack: *id, runs }),
                Err(e) => log::warn!("not adopting {}: {e}", self.pack_path(id)),
            }
        }
        if !found.is_empty() {
            self.write_segment(&found).await?;
        }
        Ok(found.len())
    }

    /// Writes an index segment naming `packs` and adds it to this handle's index; returns its
    /// size in bytes.
    pub(crate) async fn write_segment(&self, packs: &[PackEntries]) -> Result<u64> {
        let plain = index::encode_segment(packs);
        let sealed = Sealer::new(Some(3)).seal(&self.keys, Kind::Index, b"", &plain);
        let name = blake3::hash(&sealed).to_hex().to_string();
        let path = self.segment_path(&name);
        let size = sealed.len() as u64;
        self.store.put_new(&path, sealed.into()).await?;
        self.add_to_index(&path, packs)?;
        Ok(size)
    }
}

/// Adds blocks to the store. Dedups against the index and against itself; nothing it adds is
/// visible to readers until [`BlockWriter::finish`] (or a periodic segment) has written the index.
pub struct BlockWriter {
    /// Store blocks even when the index knows them (garbage collection moving live blocks out
    /// of a pack it is about to delete).
    force: bool,
    bs: BlockStore,
    sealer: Sealer,
    pack: PackBuilder,
    /// The open run: plaintexts of new blocks back to back, and the blocks.
    run: Vec<u8>,
    run_blocks: Vec<RunBlock>,
    pending: HashSet<BlockId>,
    done: Vec<PackEntries>,
    uploads: JoinSet<Result<()>>,
    stats: WriteStats,
}

impl BlockWriter {
    /// Stores `data` unless a block with the same id exists; returns the id. New blocks added
    /// one after another share a run until it is full or [`BlockWriter::end_run`] closes it.
    pub async fn add(&mut self, data: &[u8]) -> Result<BlockId> {
        let id = self.bs.keys.block_id(data);
        self.stats.blocks += 1;
        self.stats.bytes += data.len() as u64;
        if self.pending.contains(&id) || (!self.force && self.bs.contains(&id)) {
            return Ok(id);
        }
        if !self.run.is_empty() && self.run.len() + data.len() > RUN_BYTES {
            self.end_run().await?;
        }
        self.run.extend_from_slice(data);
        self.run_blocks.push(RunBlock {
            id,
            raw_length: data.len() as u32,
        });
        self.pending.insert(id);
        self.stats.new_blocks += 1;
        self.stats.new_bytes += data.len() as u64;
        if self.run.len() >= RUN_BYTES {
            self.end_run().await?;
        }
        Ok(id)
    }

    /// Closes the open run. A writer calls it where neighbouring blocks end (the end of a file),
    /// so that a reader of one file never decodes another file's blocks.
    pub async fn end_run(&mut self) -> Result<()> {
        if self.run_blocks.is_empty() {
            return Ok(());
        }
        if self.pack.is_empty() {
            self.pack.reserve(self.bs.pack_size + (64 << 10));
        }
        let blocks = std::mem::take(&mut self.run_blocks);
        let sealed = self
            .pack
            .add_run(&mut self.sealer, &self.bs.keys, blocks, &self.run);
        self.run.clear();
        self.stats.stored_bytes += sealed as u64;
        if self.pack.len() >= self.bs.pack_size {
            self.seal_pack().await?;
        }
        Ok(())
    }

    pub fn stats(&self) -> WriteStats {
        self.stats
    }

    /// A writer that stores every block it is given, known to the index or not.
    pub fn forcing(mut self) -> Self {
        self.force = true;
        self
    }

    async fn seal_pack(&mut self) -> Result<()> {
        let builder = std::mem::take(&mut self.pack);
        let (bytes, id, runs) = builder.finish(&mut self.sealer, &self.bs.keys);
        self.done.push(PackEntries { pack: id, runs });
        self.stats.packs += 1;
        self.stats.pack_bytes += bytes.len() as u64;
        let (store, path) = (self.bs.store.clone(), self.bs.pack_path(&id));
        self.uploads.spawn(async move {
            // A pack's name is the hash of its bytes, so one already there holds the same bytes.
            let _: Put = store.put_new(&path, bytes.into()).await?;
            Ok(())
        });
        // Let the upload start now: on a current-thread runtime it would otherwise wait until
        // the next pack is sealed, and writing would not overlap sealing at all.
        tokio::task::yield_now().await;
        while self.uploads.len() >= UPLOADS_IN_FLIGHT {
            self.join_one().await?;
        }
        if self.done.len() >= PACKS_PER_SEGMENT {
            self.flush_segment().await?;
        }
        Ok(())
    }

    async fn join_one(&mut self) -> Result<()> {
        match self.uploads.join_next().await {
            Some(r) => r.map_err(|e| Error::internal(format!("pack upload task failed: {e}")))?,
            None => Ok(()),
        }
    }

    async fn flush_segment(&mut self) -> Result<()> {
        while !self.uploads.is_empty() {
            self.join_one().await?;
        }
        if self.done.is_empty() {
            return Ok(());
        }
        let done = std::mem::take(&mut self.done);
        self.stats.index_bytes += self.bs.write_segment(&done).await?;
        for p in &done {
            for (_, b) in p.blocks() {
                self.pending.remove(&b.id);
            }
        }
        self.stats.segments += 1;
        Ok(())
    }

    /// Uploads what is buffered and writes the index segment. Every block added is durable and
    /// readable once this returns.
    pub async fn finish(mut self) -> Result<WriteStats> {
        self.end_run().await?;
        if !self.pack.is_empty() {
            self.seal_pack().await?;
        }
        self.flush_segment().await?;
        Ok(self.stats)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::repo::crypto::MasterKey;

    /// Incompressible test data: `len` bytes drawn from `seed`.
    pub(crate) fn data(seed: &str, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(seed.as_bytes())
            .finalize_xof()
            .fill(&mut out);
        out
    }

    /// A block store on a fresh in-memory store, its index spilling under `tmp`.
    pub(crate) fn memory_store(tmp: &tempfile::TempDir) -> (Store, BlockStore) {
        let store = Store::memory("test");
        let keys = Arc::new(Keys::new(&MasterKey::generate()));
        let bs = BlockStore::open_empty(store.clone(), "st", keys, limits(tmp));
        (store, bs)
    }

    pub(crate) fn limits(tmp: &tempfile::TempDir) -> Limits {
        Limits {
            dir: tmp.path().to_path_buf(),
            memory: DEFAULT_MEMORY_FOR_TESTS,
        }
    }

    const DEFAULT_MEMORY_FOR_TESTS: usize = 1 << 20;

    /// A second handle on the same stanza, as another process would open it.
    async fn reopen(bs: &BlockStore, tmp: &tempfile::TempDir) -> Result<BlockStore> {
        BlockStore::open_with(bs.store.clone(), "st", bs.keys.clone(), limits(tmp)).await
    }

    #[tokio::test]
    async fn writes_dedups_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, bs) = memory_store(&tmp);
        let (a, b) = (data("a", 8192), data("b", 8192));
        let mut w = bs.writer(crate::repo::lease::MayWrite::alone());
        let ia = w.add(&a).await.unwrap();
        let ib = w.add(&b).await.unwrap();
        assert_eq!(w.add(&a).await.unwrap(), ia, "same content, same id");
        let st = w.finish().await.unwrap();
        assert_eq!((st.blocks, st.new_blocks), (3, 2));
        assert_eq!((st.packs, st.segments), (1, 1));
        assert_eq!(store.list("st/pack").await.unwrap().len(), 1);
        assert_eq!(store.list("st/index").await.unwrap().len(), 1);
        assert_eq!(
            bs.read_blocks(&[ib, ia, ib]).await.unwrap(),
            [b.clone(), a.clone(), b.clone()]
        );

        // A second writer finds both blocks in the index and stores nothing.
        let mut w = bs.writer(crate::repo::lease::MayWrite::alone());
        w.add(&b).await.unwrap();
        w.add(&a).await.unwrap();
        let st = w.finish().await.unwrap();
        assert_eq!((st.new_blocks, st.packs, st.segments), (0, 0, 0));
        assert_eq!(store.list("st/pack").await.unwrap().len(), 1);

        // Another handle opened afterwards reads the same blocks, and every pack checks out.
        let other = reopen(&bs, &tmp).await.unwrap();
        assert_eq!(other.read_block(&ia).await.unwrap(), a);
        let pack = bs.locate(&ia).unwrap();
        let runs = other.check_pack(&pack).await.unwrap();
        assert_eq!(runs, other.read_trailer(&pack).await.unwrap());
    }

    #[tokio::test]
    async fn refresh_sees_what_another_handle_wrote() {
        let tmp = tempfile::tempdir().unwrap();
        let (_store, bs) = memory_store(&tmp);
        let other = reopen(&bs, &tmp).await.unwrap();
        let a = data("late", 1000);
        let mut w = bs.writer(crate::repo::lease::MayWrite::alone());
        let id = w.add(&a).await.unwrap();
        w.finish().await.unwrap();
        assert!(!other.contains(&id), "opened before the write");
        assert!(other.read_block(&id).await.is_err());
        other.refresh().await.unwrap();
        assert!(other.contains(&id));
        assert_eq!(other.read_block(&id).await.unwrap(), a);
        assert_eq!(other.counts(), bs.counts());
    }

    /// Replaces the object at `path` with `f` applied to its bytes.
    async fn tamper(store: &Store, path: &str, f: impl FnOnce(&mut Vec<u8>)) {
        let mut b = store.get(path).await.unwrap().to_vec();
        f(&mut b);
        store.put_overwrite(path, b.into()).await.unwrap();
    }

    #[tokio::test]
    async fn a_damaged_pack_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, bs) = memory_store(&tmp);
        let a = data("damaged", 20_000);
        let mut w = bs.writer(crate::repo::lease::MayWrite::alone());
        let id = w.add(&a).await.unwrap();
        w.finish().await.unwrap();
        let pack = bs.locate(&id).unwrap();
        let path = bs.pack_path(&pack);
        // A byte in the middle of the run: the name still matches the listing, not the content.
        tamper(&store, &path, |b| {
            let n = b.len() / 2;
            b[n] ^= 1
        })
        .await;
        let e = bs.check_pack(&pack).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");
        assert!(e.message.contains("does not match its name"), "{e}");
        let e = bs.read_block(&id).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");

        // Truncated: the trailer cannot be read either.
        tamper(&store, &path, |b| b.truncate(10)).await;
        let e = bs.read_trailer(&pack).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");
        assert!(e.message.contains("truncated"), "{e}");
    }

    #[tokio::test]
    async fn a_damaged_index_segment_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, bs) = memory_store(&tmp);
        let mut w = bs.writer(crate::repo::lease::MayWrite::alone());
        w.add(&data("seg", 3000)).await.unwrap();
        w.finish().await.unwrap();
        let seg = store.list("st/index").await.unwrap().remove(0).path;
        tamper(&store, &seg, |b| {
            let n = b.len() - 1;
            b[n] ^= 0x80
        })
        .await;
        let e = reopen(&bs, &tmp).await.err().expect("a damaged segment");
        assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");
        assert!(e.message.contains(&seg), "{e}");

        // A segment whose name matches its bytes but that was not sealed with this repository's
        // keys fails authentication.
        let foreign = b"not a segment".to_vec();
        let name = blake3::hash(&foreign).to_hex().to_string();
        store.delete(&seg).await.unwrap();
        store
            .put_new(&bs.segment_path(&name), foreign.into())
            .await
            .unwrap();
        let e = reopen(&bs, &tmp).await.err().expect("a foreign segment");
        assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");
        assert!(e.message.contains(&name), "{e}");
    }
}
