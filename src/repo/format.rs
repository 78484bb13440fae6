//! The JSON documents of the repository (config, key slots, key files), versioned.
//!
//! Their JSON Schemas are in proto/; docs/format.md explains every field. Hex is lower case.

use serde::{Deserialize, Serialize};

pub const CONFIG_FORMAT: &str = "pgfrost-repository";
pub const CONFIG_VERSION: u32 = 2;
pub const SLOT_FORMAT: &str = "pgfrost-key-slot";
pub const SLOT_VERSION: u32 = 1;
pub const KEY_FILE_FORMAT: &str = "pgfrost-key-file";
pub const KEY_FILE_VERSION: u32 = 1;

/// `config` at the repository root: the only object read before a key is known, hence plaintext.
/// Its exact bytes are bound into every key slot (see [`crate::repo::keys`]), so an altered config
/// makes every slot fail to open.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub format: String,
    pub version: u32,
    /// 16 random bytes, hex.
    pub repo_id: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// hex(BLAKE3-keyed(derive_key(CTX_KEY_CHECK, master), repo_id bytes)): lets a key file be
    /// checked against the repository without a passphrase.
    pub key_check: String,
}

/// `keys/<slot id>`: the master key wrapped under a key derived from one passphrase.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeySlot {
    pub format: String,
    pub version: u32,
    /// 16 random bytes, hex; also the object's name.
    pub id: String,
    pub created: String,
    /// Free text for the operator ("ops laptop", "dr site"); not secret, not authenticated.
    #[serde(default)]
    pub comment: String,
    pub kdf: KdfParams,
    /// hex(BLAKE3-keyed(KEK, "pgfrost key slot check v1")): distinguishes a wrong passphrase
    /// from an altered slot or config.
    pub check: String,
    /// 24 bytes, hex.
    pub nonce: String,
    /// XChaCha20-Poly1305(KEK, nonce, master key, AD) = 32 + 16 bytes, hex.
    pub wrapped_key: String,
    /// hex(derive_key("pgfrost 2026-11-21 key slot integrity v1", every field above except
    /// `created` and `comment`)), see [`crate::repo::keys::slot_integrity`]. Needs no
    /// passphrase, so damage to the salt or KDF parameters (which changes the KEK, and the
    /// `check` value with it) is told from a wrong passphrase. Absent in slots written before it
    /// existed; those open as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    /// Always "argon2id".
    pub algorithm: String,
    /// Argon2 version, 19 (0x13).
    pub version: u32,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// 16 random bytes, hex.
    pub salt: String,
}

/// A key file: the unwrapped master key, for the once-per-WAL-segment fast path. Local only,
/// never stored in the repository; mode 0600 enforced on read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub format: String,
    pub version: u32,
    pub repo_id: String,
    /// hex(BLAKE3(config bytes)) when the file was written: a replaced config is noticed.
    pub config_hash: String,
    pub master_key: String,
}

/// Decodes fixed-length hex, naming the field on failure.
pub fn hex_array<const N: usize>(s: &str, field: &str) -> Result<[u8; N], String> {
    // Upper case would decode to the same bytes; refusing it keeps one spelling per value, so a
    // changed document is always a changed value.
    if !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!("field {field}: not lower-case hex"));
    }
    let v = hex::decode(s).map_err(|e| format!("field {field}: not hex ({e})"))?;
    v.try_into()
        .map_err(|v: Vec<u8>| format!("field {field}: {} bytes, {N} expected", v.len()))
}

/// Current time as RFC 3339 UTC with seconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
