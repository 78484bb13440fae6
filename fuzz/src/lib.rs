//! Fixtures shared by the fuzz targets and by the seed generator (`examples/make_seeds.rs`).
//!
//! Everything here is deterministic: the seeds in `seeds/` are real objects sealed under
//! [`keys`], and the targets open them with the same keys, so the fuzzer starts past the
//! authentication checks.

use pgfrost::repo::crypto::{Keys, Kind, MasterKey};
use pgfrost::repo::format::{self, KdfParams, KeySlot, RepoConfig};
use pgfrost::repo::keys::{self, Cost, SlotRandom, SlotSpec};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The fixture repository's master key.
pub const MASTER: [u8; 32] = [7; 32];
/// The fixture repository's id.
pub const REPO_ID: [u8; 16] = [0x42; 16];
/// The passphrase of the fixture key slot.
pub const PASSPHRASE: &[u8] = b"fuzz passphrase";
/// The nonce the targets seal with (sealing is deterministic given the nonce).
pub const NONCE: [u8; 24] = [0x24; 24];

/// Argon2id cost caps for slots the fuzzer writes: anything above is skipped so that each
/// execution stays in the microseconds (a forged slot may legitimately ask for 4 GiB).
pub const MAX_KDF_MEMORY_KIB: u32 = 64;
pub const MAX_KDF_ITERATIONS: u32 = 2;
pub const MAX_KDF_PARALLELISM: u32 = 1;

/// The cheapest cost Argon2 accepts; the fixture slot uses it.
pub const FIXTURE_COST: Cost = Cost {
    memory_kib: 8,
    iterations: 1,
    parallelism: 1,
};

/// Plaintext limit the targets use where the fuzzer controls an authentic payload: big enough
/// for every seed, small enough that a decompression bomb costs milliseconds, not seconds.
pub const FUZZ_PLAINTEXT_LIMIT: u64 = 16 << 20;

pub fn master() -> MasterKey {
    MasterKey::from_bytes(MASTER)
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys::new(&master()));

/// Sub-keys of [`MASTER`].
pub fn keys() -> &'static Keys {
    &KEYS
}

static CONFIG: LazyLock<(RepoConfig, Vec<u8>)> = LazyLock::new(|| {
    let config = RepoConfig {
        format: format::CONFIG_FORMAT.into(),
        version: format::CONFIG_VERSION,
        repo_id: hex_lower(&REPO_ID),
        created: "2026-11-21T00:00:00Z".into(),
        key_check: hex_lower(&master().key_check(&REPO_ID)),
    };
    // The same bytes repo-create writes: pretty JSON and a newline.
    let mut bytes = serde_json::to_vec_pretty(&config).expect("config serializes");
    bytes.push(b'\n');
    (config, bytes)
});

/// The fixture repository's config and its exact stored bytes.
pub fn config() -> (&'static RepoConfig, &'static [u8]) {
    (&CONFIG.0, &CONFIG.1)
}

/// A key slot for the fixture repository with fixed randomness and the cheapest KDF cost.
pub fn make_slot(passphrase: &[u8], comment: &str, random: SlotRandom) -> KeySlot {
    let (config, bytes) = config();
    let spec = SlotSpec {
        cost: FIXTURE_COST,
        comment: comment.into(),
        created: "2026-11-21T00:00:00Z".into(),
        random,
    };
    keys::make_slot(&master(), passphrase, config, bytes, spec).expect("fixture slot")
}

/// The fixed randomness of the fixture slot.
pub fn slot_random() -> SlotRandom {
    SlotRandom {
        slot_id: [0x51; 16],
        salt: [0x5a; 16],
        nonce: [0x4e; 24],
    }
}

static SLOT: LazyLock<KeySlot> = LazyLock::new(|| make_slot(PASSPHRASE, "", slot_random()));

/// The fixture key slot: [`PASSPHRASE`] opens it against [`config`].
pub fn slot() -> &'static KeySlot {
    &SLOT
}

static KINDS: LazyLock<Vec<Kind>> =
    LazyLock::new(|| (0..=u8::MAX).filter_map(Kind::from_u8).collect());

/// The sealed-object kind a selector byte picks (every kind the crate knows, by `b % count`).
pub fn kind(b: u8) -> Kind {
    KINDS[b as usize % KINDS.len()]
}

/// The selector byte that [`kind`] maps to `k`.
pub fn kind_selector(k: Kind) -> u8 {
    KINDS.iter().position(|x| *x == k).expect("a known kind") as u8
}

/// A kind other than `k`.
pub fn other_kind(k: Kind) -> Kind {
    kind(kind_selector(k).wrapping_add(1))
}

/// Whether running Argon2id with these parameters is cheap enough for a fuzz execution.
pub fn kdf_is_cheap(kdf: &KdfParams) -> bool {
    kdf.memory_kib <= MAX_KDF_MEMORY_KIB
        && kdf.iterations <= MAX_KDF_ITERATIONS
        && kdf.parallelism <= MAX_KDF_PARALLELISM
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A cursor over the fuzzer's bytes that never fails: past the end it yields zeros and empty
/// slices, so every input maps to some test case.
pub struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Cursor(b)
    }
    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
    /// `n` (at most 8) bytes as a little-endian integer, zero-extended.
    pub fn le(&mut self, n: usize) -> u64 {
        let mut b = [0u8; 8];
        let t = self.take(n.min(8));
        b[..t.len()].copy_from_slice(t);
        u64::from_le_bytes(b)
    }
    pub fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// A global allocator that remembers the largest single allocation made since
/// [`reset_largest_alloc`], so a target can assert that a parser allocates no more than its
/// limit (a declared size must not turn into an allocation before it is checked).
pub struct PeakAlloc;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

pub fn reset_largest_alloc() {
    LARGEST.store(0, Ordering::Relaxed);
}

pub fn largest_alloc() -> usize {
    LARGEST.load(Ordering::Relaxed)
}

// SAFETY: every call is forwarded unchanged to `System`; only a counter is updated on the side.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations unrelated to the payload (error strings, contexts) that the allocation checks
/// tolerate on top of the input size or the limit.
pub const ALLOC_SLACK: usize = 64 << 10;
