//! Key material and the sealed-object envelope.
//!
//! Every stored byte except `config` and the key slots goes through [`Sealer::seal`]: optional zstd,
//! then XChaCha20-Poly1305 under a random 192-bit nonce. The associated data is the 8-byte header
//! followed by the object's name (a block id, or nothing for content-addressed objects whose storage
//! name is the BLAKE3 hash of their bytes), so a blob cannot be swapped for another, nor relabelled
//! as another kind, without the open failing. docs/format.md is the normative description.

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;
pub const MAGIC: [u8; 4] = *b"PGFR";
pub const SEALED_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 8;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object adds to its (possibly compressed) payload.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// `blake3::derive_key` context strings. Changing one changes every id and every seal: they are
/// part of the repository format (docs/format.md, "Keys").
pub const CTX_BLOCK_ID: &str = "pgfrost 2026-11-21 block id v1";
pub const CTX_SEAL: &str = "pgfrost 2026-11-21 object seal v1";
pub const CTX_KEY_CHECK: &str = "pgfrost 2026-11-21 master key check v1";
/// The MAC key of archive-get's prefetch queue. The queue is local state in spool-path, not
/// repository format: changing this only makes queues left by older versions unservable.
pub const CTX_SPOOL_MAC: &str = "pgfrost 2026-11-21 archive-get queue mac v1";

/// What a sealed object is. The byte is authenticated, so a pack trailer cannot pass for an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// One or more blocks of a pack, sealed together (format version 2).
    Run = 1,
    PackTrailer = 2,
    Index = 3,
    /// A WAL file (segment, partial segment, timeline or backup history file).
    Wal = 4,
    /// A stanza's database record (system identifier, major version) in `<stanza>/db/`.
    StanzaDb = 5,
    /// A backup's manifest in `<stanza>/backup/`.
    Manifest = 6,
    /// The restore points recorded from one WAL file, in `<stanza>/point/`.
    RestorePoints = 7,
    /// What one verify or drill run found, in `<stanza>/outcome/`.
    Outcome = 8,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Run),
            2 => Some(Kind::PackTrailer),
            3 => Some(Kind::Index),
            4 => Some(Kind::Wal),
            5 => Some(Kind::StanzaDb),
            6 => Some(Kind::Manifest),
            7 => Some(Kind::RestorePoints),
            8 => Some(Kind::Outcome),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::Run => "block run",
            Kind::PackTrailer => "pack trailer",
            Kind::Index => "index segment",
            Kind::Wal => "wal file",
            Kind::StanzaDb => "stanza db record",
            Kind::Manifest => "manifest",
            Kind::RestorePoints => "restore points",
            Kind::Outcome => "outcome",
        }
    }
}

/// Payload encoding recorded in header byte 6.
pub const COMPRESSION_NONE: u8 = 0;
pub const COMPRESSION_ZSTD: u8 = 1;

/// The random 256-bit master key that key slots wrap. Zeroed on drop.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl MasterKey {
    pub fn generate() -> MasterKey {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(&mut k[..]).expect("the operating system's random source failed");
        MasterKey(k)
    }
    pub fn from_bytes(b: [u8; KEY_LEN]) -> MasterKey {
        MasterKey(Zeroizing::new(b))
    }
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
    /// Sub-keys never reuse the master key directly; each purpose has its own derivation.
    pub fn derive(&self, context: &str) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(blake3::derive_key(context, &self.0[..]))
    }
    /// A public value that tells whether a key file holds this repository's key (it reveals
    /// nothing about the key: BLAKE3 keyed with a derived key, over the repository id).
    pub fn key_check(&self, repo_id: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.derive(CTX_KEY_CHECK), repo_id).as_bytes()
    }
}

/// The sub-keys a session works with.
pub struct Keys {
    id_key: Zeroizing<[u8; KEY_LEN]>,
    spool_key: Zeroizing<[u8; KEY_LEN]>,
    aead: XChaCha20Poly1305,
}

impl Keys {
    pub fn new(master: &MasterKey) -> Keys {
        let seal = master.derive(CTX_SEAL);
        Keys {
            id_key: master.derive(CTX_BLOCK_ID),
            spool_key: master.derive(CTX_SPOOL_MAC),
            aead: XChaCha20Poly1305::new_from_slice(&seal[..]).expect("32-byte key"),
        }
    }

    /// A block's id: BLAKE3 keyed with the block-id key, so ids reveal nothing about content to
    /// anyone without the key (a plain hash would let a reader of the bucket confirm guesses).
    pub fn block_id(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.id_key, data).as_bytes()
    }

    /// The authenticator of a file kept in local spool state: keyed BLAKE3 over length-prefixed
    /// `fields` (what the file claims to be) and its `data`. The spool is writable by anyone
    /// running as the database user and shared between repositories; only this repository's key
    /// can produce a MAC that checks, so a file from another repository, an older version or an
    /// edit never passes for one of ours.
    pub fn spool_mac(&self, fields: &[&[u8]], data: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.spool_key);
        for f in fields.iter().chain([&data]) {
            h.update(&(f.len() as u64).to_le_bytes());
            h.update(f);
        }
        *h.finalize().as_bytes()
    }
}

/// Why a sealed object did not open. The caller names the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    Truncated(usize),
    BadMagic,
    BadVersion(u8),
    WrongKind { expected: Kind, found: u8 },
    BadHeader,
    AuthFailed,
    Decompress(String),
    TooLarge(u64),
    SizeMismatch { expected: usize, found: usize },
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Truncated(n) => {
                write!(f, "truncated ({n} bytes, at least {OVERHEAD} needed)")
            }
            OpenError::BadMagic => write!(f, "not a pgfrost sealed object (bad magic)"),
            OpenError::BadVersion(v) => write!(f, "sealed-object version {v} is not supported"),
            OpenError::WrongKind { expected, found } => {
                write!(
                    f,
                    "expected a {} but the header says kind {found}",
                    expected.name()
                )
            }
            OpenError::BadHeader => write!(f, "invalid header"),
            OpenError::AuthFailed => write!(
                f,
                "authentication failed (the bytes were altered, truncated, or belong elsewhere)"
            ),
            OpenError::Decompress(e) => write!(f, "decompression failed: {e}"),
            OpenError::TooLarge(n) => write!(f, "declared size {n} exceeds the limit"),
            OpenError::SizeMismatch { expected, found } => {
                write!(f, "decoded to {found} bytes, {expected} expected")
            }
        }
    }
}

/// Largest plaintext accepted from an object whose size is not known in advance (index segments,
/// pack trailers). Guards readers (and fuzzers) against decompression bombs.
pub const MAX_OBJECT_PLAINTEXT: u64 = 1 << 30;

/// Seals objects; holds a reusable zstd context, so keep one per thread.
pub struct Sealer {
    compressor: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
}

impl Sealer {
    /// `level` None stores payloads uncompressed.
    pub fn new(level: Option<i32>) -> Sealer {
        let compressor = level
            .map(|l| zstd::bulk::Compressor::new(l).expect("zstd compression level out of range"));
        Sealer {
            compressor,
            scratch: Vec::new(),
        }
    }

    /// Appends the sealed form of `plaintext` to `out`.
    pub fn seal_into(
        &mut self,
        keys: &Keys,
        kind: Kind,
        name: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system's random source failed");
        let mut compression = COMPRESSION_NONE;
        if let Some(c) = self.compressor.as_mut() {
            self.scratch.clear();
            self.scratch
                .reserve(zstd::zstd_safe::compress_bound(plaintext.len()));
            // Incompressible payloads are stored raw: zstd would only add its frame overhead.
            if c.compress_to_buffer(plaintext, &mut self.scratch).is_ok()
                && self.scratch.len() < plaintext.len()
            {
                compression = COMPRESSION_ZSTD;
            }
        }
        let payload: &[u8] = if compression == COMPRESSION_ZSTD {
            &self.scratch
        } else {
            plaintext
        };
        seal_raw(keys, kind, name, compression, &nonce, payload, out);
    }

    /// Compresses with `n` zstd worker threads (0: in the calling thread). Worth it for one large
    /// object on an otherwise idle machine (a single WAL segment), not when sealing in parallel.
    pub fn set_workers(&mut self, n: u32) {
        if let Some(c) = self.compressor.as_mut() {
            let _ = c.set_parameter(zstd::stream::raw::CParameter::NbWorkers(n));
        }
    }

    pub fn seal(&mut self, keys: &Keys, kind: Kind, name: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        self.seal_into(keys, kind, name, plaintext, &mut out);
        out
    }
}

fn header(kind: Kind, compression: u8) -> [u8; HEADER_LEN] {
    [
        MAGIC[0],
        MAGIC[1],
        MAGIC[2],
        MAGIC[3],
        SEALED_VERSION,
        kind as u8,
        compression,
        0,
    ]
}

fn associated_data(header: &[u8], name: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(HEADER_LEN + name.len());
    ad.extend_from_slice(header);
    ad.extend_from_slice(name);
    ad
}

/// The deterministic core of sealing: the caller supplies the nonce and an already encoded
/// payload. Public for the test vectors; everything else goes through [`Sealer`].
pub fn seal_raw(
    keys: &Keys,
    kind: Kind,
    name: &[u8],
    compression: u8,
    nonce: &[u8; NONCE_LEN],
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let h = header(kind, compression);
    let ad = associated_data(&h, name);
    out.reserve(payload.len() + OVERHEAD);
    out.extend_from_slice(&h);
    out.extend_from_slice(nonce);
    let start = out.len();
    out.extend_from_slice(payload);
    let tag = keys
        .aead
        .encrypt_inout_detached(&XNonce::from(*nonce), &ad, (&mut out[start..]).into())
        .expect("XChaCha20-Poly1305 refused a payload (over 256 GiB?)");
    out.extend_from_slice(tag.as_slice());
}

/// Parses and checks the 8-byte header; returns the compression byte.
pub fn check_header(sealed: &[u8], kind: Kind) -> Result<u8, OpenError> {
    if sealed.len() < OVERHEAD {
        return Err(OpenError::Truncated(sealed.len()));
    }
    if sealed[0..4] != MAGIC {
        return Err(OpenError::BadMagic);
    }
    if sealed[4] != SEALED_VERSION {
        return Err(OpenError::BadVersion(sealed[4]));
    }
    if sealed[5] != kind as u8 {
        return Err(OpenError::WrongKind {
            expected: kind,
            found: sealed[5],
        });
    }
    if sealed[6] > COMPRESSION_ZSTD || sealed[7] != 0 {
        return Err(OpenError::BadHeader);
    }
    Ok(sealed[6])
}

/// Authenticates and decrypts; returns (compression byte, payload). The payload is still
/// compressed if the byte says so.
pub fn open_raw(
    keys: &Keys,
    kind: Kind,
    name: &[u8],
    sealed: &[u8],
) -> Result<(u8, Vec<u8>), OpenError> {
    let mut buf = Vec::new();
    let compression = decrypt_into(keys, kind, name, sealed, &mut buf)?;
    Ok((compression, buf))
}

/// Checks the header, then authenticates and decrypts the payload into `buf` (replacing its
/// contents, reusing its allocation); returns the compression byte.
fn decrypt_into(
    keys: &Keys,
    kind: Kind,
    name: &[u8],
    sealed: &[u8],
    buf: &mut Vec<u8>,
) -> Result<u8, OpenError> {
    let compression = check_header(sealed, kind)?;
    let ad = associated_data(&sealed[..HEADER_LEN], name);
    let nonce = XNonce::try_from(&sealed[HEADER_LEN..HEADER_LEN + NONCE_LEN]).unwrap();
    let body_end = sealed.len() - TAG_LEN;
    let tag = Tag::try_from(&sealed[body_end..]).unwrap();
    buf.clear();
    buf.extend_from_slice(&sealed[HEADER_LEN + NONCE_LEN..body_end]);
    keys.aead
        .decrypt_inout_detached(&nonce, &ad, buf.as_mut_slice().into(), &tag)
        .map_err(|_| OpenError::AuthFailed)?;
    Ok(compression)
}

/// Opens objects; holds a reusable zstd context (and a scratch buffer), so keep one per thread.
pub struct Opener {
    decompressor: zstd::bulk::Decompressor<'static>,
    scratch: Vec<u8>,
}

impl Default for Opener {
    fn default() -> Self {
        Self::new()
    }
}

impl Opener {
    pub fn new() -> Opener {
        Opener {
            decompressor: zstd::bulk::Decompressor::new().expect("zstd context"),
            scratch: Vec::new(),
        }
    }

    /// Opens an object whose plaintext length is known (blocks: the index records it).
    pub fn open_exact(
        &mut self,
        keys: &Keys,
        kind: Kind,
        name: &[u8],
        sealed: &[u8],
        len: usize,
    ) -> Result<Vec<u8>, OpenError> {
        let (compression, payload) = open_raw(keys, kind, name, sealed)?;
        let plain = if compression == COMPRESSION_ZSTD {
            self.decompressor
                .decompress(&payload, len)
                .map_err(|e| OpenError::Decompress(e.to_string()))?
        } else {
            payload
        };
        if plain.len() != len {
            return Err(OpenError::SizeMismatch {
                expected: len,
                found: plain.len(),
            });
        }
        Ok(plain)
    }

    /// Like [`Opener::open_exact`], into `out` (whose length is the plaintext's): no allocation
    /// per object, which matters when a restore opens every 8 KiB block of a cluster.
    pub fn open_exact_into(
        &mut self,
        keys: &Keys,
        kind: Kind,
        name: &[u8],
        sealed: &[u8],
        out: &mut [u8],
    ) -> Result<(), OpenError> {
        let compression = decrypt_into(keys, kind, name, sealed, &mut self.scratch)?;
        let found = if compression == COMPRESSION_ZSTD {
            // A frame that declares another size, or holds more than `out`, fails here.
            match zstd::zstd_safe::get_frame_content_size(&self.scratch) {
                Ok(Some(n)) if n == out.len() as u64 => {}
                Ok(Some(n)) => {
                    return Err(OpenError::SizeMismatch {
                        expected: out.len(),
                        found: n as usize,
                    });
                }
                _ => return Err(OpenError::Decompress("frame has no content size".into())),
            }
            self.decompressor
                .decompress_to_buffer(&self.scratch, out)
                .map_err(|e| OpenError::Decompress(e.to_string()))?
        } else {
            if self.scratch.len() != out.len() {
                return Err(OpenError::SizeMismatch {
                    expected: out.len(),
                    found: self.scratch.len(),
                });
            }
            out.copy_from_slice(&self.scratch);
            out.len()
        };
        if found != out.len() {
            return Err(OpenError::SizeMismatch {
                expected: out.len(),
                found,
            });
        }
        Ok(())
    }

    /// Opens an object of unknown length, refusing more than `limit` bytes of plaintext.
    pub fn open(
        &mut self,
        keys: &Keys,
        kind: Kind,
        name: &[u8],
        sealed: &[u8],
        limit: u64,
    ) -> Result<Vec<u8>, OpenError> {
        let (compression, payload) = open_raw(keys, kind, name, sealed)?;
        if compression != COMPRESSION_ZSTD {
            return Ok(payload);
        }
        // pgfrost always writes the frame content size; a frame without one is not ours.
        let size = match zstd::zstd_safe::get_frame_content_size(&payload) {
            Ok(Some(n)) => n,
            _ => return Err(OpenError::Decompress("frame has no content size".into())),
        };
        if size > limit {
            return Err(OpenError::TooLarge(size));
        }
        let plain = self
            .decompressor
            .decompress(&payload, size as usize)
            .map_err(|e| OpenError::Decompress(e.to_string()))?;
        if plain.len() as u64 != size {
            return Err(OpenError::SizeMismatch {
                expected: size as usize,
                found: plain.len(),
            });
        }
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(&MasterKey::from_bytes([7u8; 32]))
    }

    #[test]
    fn roundtrip_compressed_and_raw() {
        let k = keys();
        let mut s = Sealer::new(Some(3));
        let mut o = Opener::new();
        let text = b"hello hello hello hello hello hello hello hello".repeat(50);
        let sealed = s.seal(&k, Kind::Run, b"n", &text);
        assert_eq!(sealed[6], COMPRESSION_ZSTD);
        assert!(sealed.len() < text.len());
        assert_eq!(
            o.open_exact(&k, Kind::Run, b"n", &sealed, text.len())
                .unwrap(),
            text
        );
        assert_eq!(o.open(&k, Kind::Run, b"n", &sealed, 1 << 20).unwrap(), text);
        // Random bytes do not compress, so they are stored raw.
        let mut rnd = vec![0u8; 4096];
        getrandom::fill(&mut rnd).unwrap();
        let sealed = s.seal(&k, Kind::Run, b"n", &rnd);
        assert_eq!(sealed[6], COMPRESSION_NONE);
        assert_eq!(sealed.len(), rnd.len() + OVERHEAD);
        assert_eq!(
            o.open_exact(&k, Kind::Run, b"n", &sealed, 4096).unwrap(),
            rnd
        );
    }

    #[test]
    fn name_kind_and_bytes_are_bound() {
        let k = keys();
        let mut s = Sealer::new(Some(3));
        let mut o = Opener::new();
        let sealed = s.seal(&k, Kind::Index, b"a", b"payload");
        assert_eq!(
            o.open(&k, Kind::Index, b"b", &sealed, 100),
            Err(OpenError::AuthFailed)
        );
        assert!(matches!(
            o.open(&k, Kind::Run, b"a", &sealed, 100),
            Err(OpenError::WrongKind { .. })
        ));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                o.open(&k, Kind::Index, b"a", &bad, 100).is_err(),
                "flip at {i} went unnoticed"
            );
        }
        let other = Keys::new(&MasterKey::from_bytes([8u8; 32]));
        assert_eq!(
            o.open(&other, Kind::Index, b"a", &sealed, 100),
            Err(OpenError::AuthFailed)
        );
        assert!(matches!(
            o.open(&k, Kind::Index, b"a", &sealed[..40], 100),
            Err(OpenError::Truncated(40))
        ));
    }

    #[test]
    fn decompression_limit_holds() {
        let k = keys();
        let mut s = Sealer::new(Some(3));
        let mut o = Opener::new();
        let big = vec![0u8; 1 << 20];
        let sealed = s.seal(&k, Kind::Index, b"", &big);
        assert_eq!(
            o.open(&k, Kind::Index, b"", &sealed, 1000),
            Err(OpenError::TooLarge(1 << 20))
        );
        assert!(o.open_exact(&k, Kind::Index, b"", &sealed, 1000).is_err());
    }

    #[test]
    fn block_ids_are_keyed() {
        let a = keys();
        let b = Keys::new(&MasterKey::from_bytes([8u8; 32]));
        assert_ne!(a.block_id(b"x"), b.block_id(b"x"));
        assert_ne!(a.block_id(b"x"), *blake3::hash(b"x").as_bytes());
        assert_eq!(a.block_id(b"x"), a.block_id(b"x"));
    }
}
