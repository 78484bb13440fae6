//! Passphrases, key slots and key files.
//!
//! A passphrase is stretched with Argon2id into a key-encryption key (KEK) that unwraps the random
//! master key held in a slot. The slot's associated data binds the repository id, the slot id and
//! BLAKE3(config bytes), so a slot cannot be moved to another repository and the plaintext config
//! cannot be altered without every slot failing to open.

use super::crypto::{KEY_LEN, MasterKey};
use super::format::{self, KdfParams, KeyFile, KeySlot, RepoConfig};
use crate::error::{Error, ErrorKind, Result};
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

pub const SLOT_AD_PREFIX: &[u8] = b"pgfrost key slot v1";
pub const SLOT_CHECK_MSG: &[u8] = b"pgfrost key slot check v1";
/// BLAKE3 derive_key context of a slot's `integrity` value.
pub const CTX_SLOT_INTEGRITY: &str = "pgfrost 2026-11-21 key slot integrity v1";

/// Argon2id cost. The default follows RFC 9106's second recommendation (64 MiB, 3 passes) and
/// takes about 0.2 s here: slow for a guesser, tolerable once per command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Cost {
    fn default() -> Self {
        Cost {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

/// Smallest cost accepted when creating a slot: below it a passphrase is barely stretched.
pub const MIN_MEMORY_KIB: u32 = 1024;

pub fn derive_kek(passphrase: &[u8], kdf: &KdfParams) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    if kdf.algorithm != "argon2id" || kdf.version != 0x13 {
        return Err(Error::corrupt(format!(
            "key slot uses KDF {} version {}, only argon2id version 19 is supported",
            kdf.algorithm, kdf.version
        )));
    }
    // Parameters come from a stored, not yet authenticated document: bound them so a forged slot
    // cannot make us allocate without limit.
    if kdf.memory_kib > 4 * 1024 * 1024 || kdf.iterations > 1000 || kdf.parallelism > 64 {
        return Err(Error::corrupt("key slot asks for an unreasonable KDF cost"));
    }
    let salt: [u8; 16] = format::hex_array(&kdf.salt, "kdf.salt").map_err(Error::corrupt)?;
    let params = argon2::Params::new(
        kdf.memory_kib,
        kdf.iterations,
        kdf.parallelism,
        Some(KEY_LEN),
    )
    .map_err(|e| Error::corrupt(format!("key slot KDF parameters are invalid: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut kek = Zeroizing::new([0u8; KEY_LEN]);
    a.hash_password_into(passphrase, &salt, &mut kek[..])
        .map_err(|e| Error::internal(format!("argon2id failed: {e}")))?;
    Ok(kek)
}

fn slot_ad(repo_id: &[u8; 16], slot_id: &[u8; 16], config_bytes: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(SLOT_AD_PREFIX.len() + 64);
    ad.extend_from_slice(SLOT_AD_PREFIX);
    ad.extend_from_slice(repo_id);
    ad.extend_from_slice(slot_id);
    ad.extend_from_slice(blake3::hash(config_bytes).as_bytes());
    ad
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    b
}

/// The bytes a slot's `integrity` value hashes (docs/format.md, Key slots): every field that
/// opening the slot reads, in a fixed order, hex fields as their decoded fixed-length bytes,
/// integers as u32 LE, strings with a u32 LE length first, so different fields never encode alike.
/// `created` and `comment` stay out: opening never reads them, and `comment` is documented as
/// free text nothing checks.
pub fn integrity_message(slot: &KeySlot) -> std::result::Result<Vec<u8>, String> {
    fn text(m: &mut Vec<u8>, s: &str, field: &str) -> std::result::Result<(), String> {
        let n = u32::try_from(s.len()).map_err(|_| format!("field {field}: too long"))?;
        m.extend_from_slice(&n.to_le_bytes());
        m.extend_from_slice(s.as_bytes());
        Ok(())
    }
    let k = &slot.kdf;
    let mut m = Vec::with_capacity(200);
    text(&mut m, &slot.format, "format")?;
    m.extend_from_slice(&slot.version.to_le_bytes());
    m.extend_from_slice(&format::hex_array::<16>(&slot.id, "id")?);
    text(&mut m, &k.algorithm, "kdf.algorithm")?;
    for v in [k.version, k.memory_kib, k.iterations, k.parallelism] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m.extend_from_slice(&format::hex_array::<16>(&k.salt, "kdf.salt")?);
    m.extend_from_slice(&format::hex_array::<32>(&slot.check, "check")?);
    m.extend_from_slice(&format::hex_array::<24>(&slot.nonce, "nonce")?);
    m.extend_from_slice(&format::hex_array::<48>(&slot.wrapped_key, "wrapped_key")?);
    Ok(m)
}

/// The `integrity` value `slot` should carry (its own `integrity` field is not read).
pub fn slot_integrity(slot: &KeySlot) -> std::result::Result<[u8; 32], String> {
    Ok(blake3::derive_key(
        CTX_SLOT_INTEGRITY,
        &integrity_message(slot)?,
    ))
}

/// Checks a slot's `integrity` value. It runs before the KDF: damage to the salt or the KDF
/// parameters changes the KEK, so without this check it would read as a wrong passphrase. The
/// value is unkeyed and proves nothing about who wrote the slot (the AEAD does that); it only
/// tells damage from a typo. Slots written before the field existed have none and pass.
pub fn verify_integrity(slot: &KeySlot, slot_name: &str) -> Result<()> {
    let Some(stored) = &slot.integrity else {
        return Ok(());
    };
    let hint = || {
        format!(
            "restore '{slot_name}' from a copy of the repository, or use the passphrase of another \
             key slot ('pgfrost key list' shows them)"
        )
    };
    let bad =
        |m: String| Error::corrupt(format!("key slot '{slot_name}' is damaged: {m}")).hint(hint());
    let stored: [u8; 32] = format::hex_array(stored, "integrity").map_err(bad)?;
    let mine = slot_integrity(slot).map_err(bad)?;
    // Both sides are hashes of public fields: nothing secret is compared, plain equality will do.
    if mine != stored {
        return Err(bad(
            "its integrity value (a hash of its salt, KDF parameters, check value, nonce and \
             wrapped key, written with the slot) does not match its contents, so no passphrase \
             can be tried on it"
                .into(),
        ));
    }
    Ok(())
}

/// Everything random that goes into a slot, separated so test vectors can fix it.
pub struct SlotRandom {
    pub slot_id: [u8; 16],
    pub salt: [u8; 16],
    pub nonce: [u8; 24],
}

impl SlotRandom {
    pub fn generate() -> Self {
        SlotRandom {
            slot_id: random(),
            salt: random(),
            nonce: random(),
        }
    }
}

/// The choices and the randomness that go into a new slot.
pub struct SlotSpec {
    pub cost: Cost,
    pub comment: String,
    pub created: String,
    pub random: SlotRandom,
}

/// Wraps `master` under `passphrase` into a new slot for the repository whose config is
/// `config_bytes`.
pub fn make_slot(
    master: &MasterKey,
    passphrase: &[u8],
    config: &RepoConfig,
    config_bytes: &[u8],
    spec: SlotSpec,
) -> Result<KeySlot> {
    let SlotSpec {
        cost,
        comment,
        created,
        random: rnd,
    } = spec;
    let repo_id: [u8; 16] =
        format::hex_array(&config.repo_id, "repo_id").map_err(Error::corrupt)?;
    let kdf = KdfParams {
        algorithm: "argon2id".into(),
        version: 0x13,
        memory_kib: cost.memory_kib,
        iterations: cost.iterations,
        parallelism: cost.parallelism,
        salt: hex::encode(rnd.salt),
    };
    let kek = derive_kek(passphrase, &kdf)?;
    let aead = XChaCha20Poly1305::new_from_slice(&kek[..]).expect("32-byte key");
    let mut buf = master.as_bytes().to_vec();
    let tag = aead
        .encrypt_inout_detached(
            &XNonce::from(rnd.nonce),
            &slot_ad(&repo_id, &rnd.slot_id, config_bytes),
            buf.as_mut_slice().into(),
        )
        .map_err(|_| Error::internal("key wrapping failed"))?;
    buf.extend_from_slice(tag.as_slice());
    let mut slot = KeySlot {
        format: format::SLOT_FORMAT.into(),
        version: format::SLOT_VERSION,
        id: hex::encode(rnd.slot_id),
        created,
        comment,
        check: hex::encode(blake3::keyed_hash(&kek, SLOT_CHECK_MSG).as_bytes()),
        kdf,
        nonce: hex::encode(rnd.nonce),
        wrapped_key: hex::encode(buf),
        integrity: None,
    };
    slot.integrity =
        Some(hex::encode(slot_integrity(&slot).map_err(|e| {
            Error::internal(format!("new key slot: {e}"))
        })?));
    Ok(slot)
}

/// What trying one slot with one passphrase gave.
pub enum SlotOpen {
    Opened(MasterKey),
    /// The passphrase is not this slot's.
    WrongPassphrase,
}

/// Tries `passphrase` on `slot`. A failing integrity value, or a matching check value with a
/// failing tag, means the slot or the config was altered: that is reported as corruption, never
/// as a wrong passphrase.
pub fn open_slot(
    slot: &KeySlot,
    passphrase: &[u8],
    config: &RepoConfig,
    config_bytes: &[u8],
    slot_name: &str,
) -> Result<SlotOpen> {
    let bad = |m: String| Error::corrupt(format!("key slot '{slot_name}' is damaged: {m}"));
    if slot.format != format::SLOT_FORMAT || slot.version != format::SLOT_VERSION {
        return Err(bad(format!(
            "format {} version {} is not supported",
            slot.format, slot.version
        )));
    }
    let repo_id: [u8; 16] = format::hex_array(&config.repo_id, "repo_id").map_err(bad)?;
    let slot_id: [u8; 16] = format::hex_array(&slot.id, "id").map_err(bad)?;
    let check: [u8; 32] = format::hex_array(&slot.check, "check").map_err(bad)?;
    let nonce: [u8; 24] = format::hex_array(&slot.nonce, "nonce").map_err(bad)?;
    let wrapped: [u8; 48] = format::hex_array(&slot.wrapped_key, "wrapped_key").map_err(bad)?;
    verify_integrity(slot, slot_name)?;
    let kek = derive_kek(passphrase, &slot.kdf)
        .map_err(|e| e.context(format!("key slot '{slot_name}'")))?;
    let mine = blake3::keyed_hash(&kek, SLOT_CHECK_MSG);
    let aead = XChaCha20Poly1305::new_from_slice(&kek[..]).expect("32-byte key");
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&wrapped[..KEY_LEN]);
    let tag = Tag::try_from(&wrapped[KEY_LEN..]).unwrap();
    let opened = aead.decrypt_inout_detached(
        &XNonce::from(nonce),
        &slot_ad(&repo_id, &slot_id, config_bytes),
        key.as_mut_slice().into(),
        &tag,
    );
    // Constant-time comparison: blake3::Hash's PartialEq is.
    if mine != blake3::Hash::from_bytes(check) {
        // The wrapped key opening under this KEK means the passphrase is this slot's and the
        // check value is what changed: damage, which must not be reported as a typo.
        if opened.is_ok() {
            return Err(Error::corrupt(format!(
                "key slot '{slot_name}' is damaged: the passphrase opens its wrapped key but its check value does not match"
            ))
            .hint("restore 'keys/' from a copy of the repository, or use another key slot"));
        }
        return Ok(SlotOpen::WrongPassphrase);
    }
    opened.map_err(|_| {
        Error::corrupt(format!(
            "the passphrase matches key slot '{slot_name}' but the slot does not authenticate: \
             the slot or the repository's config file was altered"
        ))
        .hint("restore 'config' and 'keys/' from a copy of the repository, or use another key slot")
    })?;
    let master = MasterKey::from_bytes(*key);
    // The slot authenticated, so this only fails if the config's key_check was forged together
    // with a matching slot: still, a key that does not match the repository is never used.
    if !master_matches(&master, config)? {
        return Err(Error::corrupt(format!(
            "key slot '{slot_name}' opens to a key that does not match the repository's key_check"
        )));
    }
    Ok(SlotOpen::Opened(master))
}

/// Checks that `master` belongs to the repository described by `config`.
pub fn master_matches(master: &MasterKey, config: &RepoConfig) -> Result<bool> {
    let repo_id: [u8; 16] =
        format::hex_array(&config.repo_id, "repo_id").map_err(Error::corrupt)?;
    let check: [u8; 32] =
        format::hex_array(&config.key_check, "key_check").map_err(Error::corrupt)?;
    Ok(blake3::Hash::from_bytes(master.key_check(&repo_id)) == blake3::Hash::from_bytes(check))
}

pub fn key_file_for(master: &MasterKey, config: &RepoConfig, config_bytes: &[u8]) -> KeyFile {
    KeyFile {
        format: format::KEY_FILE_FORMAT.into(),
        version: format::KEY_FILE_VERSION,
        repo_id: config.repo_id.clone(),
        config_hash: blake3::hash(config_bytes).to_hex().to_string(),
        master_key: hex::encode(master.as_bytes()),
    }
}

/// Validates a key file against the repository and returns its master key.
pub fn open_key_file(
    kf: &KeyFile,
    config: &RepoConfig,
    config_bytes: &[u8],
    path: &str,
) -> Result<MasterKey> {
    let err = |m: String| Error::new(ErrorKind::KeyFile, format!("key file '{path}': {m}"));
    if kf.format != format::KEY_FILE_FORMAT || kf.version != format::KEY_FILE_VERSION {
        return Err(err(format!(
            "format {} version {} is not supported",
            kf.format, kf.version
        )));
    }
    if kf.repo_id != config.repo_id {
        return Err(err(format!(
            "belongs to repository {}, not to this repository ({})",
            kf.repo_id, config.repo_id
        ))
        .hint("point --key-file at this repository's key file, or run 'pgfrost key unlock' to write one"));
    }
    if kf.config_hash != blake3::hash(config_bytes).to_hex().as_str() {
        return Err(err(
            "the repository's config file changed since this key file was written".into(),
        )
        .hint("if the repository was re-created on purpose, run 'pgfrost key unlock' again"));
    }
    let key: Zeroizing<[u8; 32]> =
        Zeroizing::new(format::hex_array(&kf.master_key, "master_key").map_err(err)?);
    let master = MasterKey::from_bytes(*key);
    if !master_matches(&master, config)? {
        return Err(err("holds a key that does not open this repository".into()));
    }
    Ok(master)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(master: &MasterKey) -> (RepoConfig, Vec<u8>) {
        let repo_id = [1u8; 16];
        let c = RepoConfig {
            format: format::CONFIG_FORMAT.into(),
            version: 1,
            repo_id: hex::encode(repo_id),
            created: "2026-11-21T00:00:00Z".into(),
            key_check: hex::encode(master.key_check(&repo_id)),
        };
        let b = serde_json::to_vec(&c).unwrap();
        (c, b)
    }
    fn spec() -> SlotSpec {
        SlotSpec {
            cost: Cost {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
            comment: String::new(),
            created: "now".into(),
            random: SlotRandom::generate(),
        }
    }

    #[test]
    fn slot_roundtrip_wrong_passphrase_and_tamper() {
        let m = MasterKey::generate();
        let (c, b) = cfg(&m);
        let slot = make_slot(&m, b"pw", &c, &b, spec()).unwrap();
        match open_slot(&slot, b"pw", &c, &b, "s").unwrap() {
            SlotOpen::Opened(k) => assert_eq!(k.as_bytes(), m.as_bytes()),
            SlotOpen::WrongPassphrase => panic!("right passphrase refused"),
        }
        assert!(matches!(
            open_slot(&slot, b"px", &c, &b, "s").unwrap(),
            SlotOpen::WrongPassphrase
        ));
        // The config's bytes are bound: a one-character change is corruption, not a wrong passphrase.
        let mut b2 = b.clone();
        let i = b2.len() - 3;
        b2[i] ^= 1;
        let e = open_slot(&slot, b"pw", &c, &b2, "s")
            .err()
            .expect("altered config accepted");
        assert_eq!(e.kind, ErrorKind::Corrupt);
        let mut s2 = slot.clone();
        s2.wrapped_key.replace_range(
            0..2,
            if &s2.wrapped_key[0..2] == "00" {
                "01"
            } else {
                "00"
            },
        );
        assert_eq!(
            open_slot(&s2, b"pw", &c, &b, "s").err().unwrap().kind,
            ErrorKind::Corrupt
        );
        // A damaged check value is damage too, named as the slot, not a wrong passphrase.
        let mut s3 = slot.clone();
        s3.check
            .replace_range(0..2, if &s3.check[0..2] == "00" { "01" } else { "00" });
        let e = open_slot(&s3, b"pw", &c, &b, "keys/s3")
            .err()
            .expect("damaged check accepted");
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert!(e.to_string().contains("keys/s3"), "{e}");
        // With the integrity value, a wrong passphrase cannot hide the damage either; without it
        // (a slot written before the field existed) the check value is all there is to go by.
        let e = open_slot(&s3, b"px", &c, &b, "keys/s3")
            .err()
            .expect("damaged check accepted");
        assert_eq!(e.kind, ErrorKind::Corrupt);
        s3.integrity = None;
        let e = open_slot(&s3, b"pw", &c, &b, "keys/s3")
            .err()
            .expect("damaged check accepted");
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert!(e.to_string().contains("keys/s3"), "{e}");
        assert!(matches!(
            open_slot(&s3, b"px", &c, &b, "s").unwrap(),
            SlotOpen::WrongPassphrase
        ));
    }

    fn flip_hex(s: &mut String, at: usize) {
        let c = if &s[at..at + 1] == "0" { "1" } else { "0" };
        s.replace_range(at..at + 1, c);
    }

    /// Damage to any field opening reads, the ones the KEK is derived from included, is reported
    /// as damage naming the slot, with the right passphrase and with a wrong one.
    #[test]
    fn damaged_slot_is_not_a_wrong_passphrase() {
        let m = MasterKey::generate();
        let (c, b) = cfg(&m);
        let slot = make_slot(&m, b"pw", &c, &b, spec()).unwrap();
        let integrity = slot
            .integrity
            .clone()
            .expect("new slots carry an integrity value");
        assert_eq!(integrity, hex::encode(slot_integrity(&slot).unwrap()));
        type Damage = Box<dyn Fn(&mut KeySlot)>;
        let damages: Vec<(&str, Damage)> = vec![
            ("salt", Box::new(|s| flip_hex(&mut s.kdf.salt, 5))),
            ("memory_kib", Box::new(|s| s.kdf.memory_kib += 8)),
            ("iterations", Box::new(|s| s.kdf.iterations += 1)),
            ("parallelism", Box::new(|s| s.kdf.parallelism += 1)),
            ("kdf version", Box::new(|s| s.kdf.version = 0x10)),
            (
                "algorithm",
                Box::new(|s| s.kdf.algorithm = "argon2i".into()),
            ),
            ("nonce", Box::new(|s| flip_hex(&mut s.nonce, 7))),
            (
                "wrapped_key",
                Box::new(|s| flip_hex(&mut s.wrapped_key, 40)),
            ),
            ("check", Box::new(|s| flip_hex(&mut s.check, 63))),
            ("id", Box::new(|s| flip_hex(&mut s.id, 0))),
            (
                "integrity",
                Box::new(|s| flip_hex(s.integrity.as_mut().unwrap(), 9)),
            ),
            (
                "integrity upper case",
                Box::new(|s| {
                    *s.integrity.as_mut().unwrap() = s.integrity.as_ref().unwrap().to_uppercase()
                }),
            ),
        ];
        for (what, damage) in &damages {
            let mut s2 = slot.clone();
            damage(&mut s2);
            assert_ne!(s2, slot, "{what}");
            for pw in [&b"pw"[..], b"px"] {
                let e = open_slot(&s2, pw, &c, &b, "keys/damaged")
                    .err()
                    .unwrap_or_else(|| panic!("{what}: damaged slot accepted"));
                assert_eq!(e.kind, ErrorKind::Corrupt, "{what}: {e}");
                let text = e.to_string();
                assert!(
                    text.contains("key slot 'keys/damaged' is damaged"),
                    "{what}: {e}"
                );
                assert!(text.contains("\nHINT: "), "{what}: {e}");
            }
        }
        // The reason for the field: without it, a damaged salt reads as a wrong passphrase.
        let mut old = slot.clone();
        old.integrity = None;
        flip_hex(&mut old.kdf.salt, 5);
        assert!(matches!(
            open_slot(&old, b"pw", &c, &b, "s").unwrap(),
            SlotOpen::WrongPassphrase
        ));
        // Informational fields are outside the value: the slot still opens.
        let mut s2 = slot.clone();
        s2.comment = "renamed laptop".into();
        s2.created = "2030-01-01T00:00:00Z".into();
        assert!(matches!(
            open_slot(&s2, b"pw", &c, &b, "s").unwrap(),
            SlotOpen::Opened(_)
        ));
        assert!(matches!(
            open_slot(&s2, b"px", &c, &b, "s").unwrap(),
            SlotOpen::WrongPassphrase
        ));
    }

    /// Slots written before the integrity field existed open exactly as they did.
    #[test]
    fn old_slot_without_integrity() {
        let m = MasterKey::generate();
        let (c, b) = cfg(&m);
        let slot = make_slot(&m, b"pw", &c, &b, spec()).unwrap();
        let mut json: serde_json::Value = serde_json::to_value(&slot).unwrap();
        json.as_object_mut().unwrap().remove("integrity").unwrap();
        let old: KeySlot = serde_json::from_value(json).unwrap();
        assert_eq!(old.integrity, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("integrity"));
        match open_slot(&old, b"pw", &c, &b, "keys/old").unwrap() {
            SlotOpen::Opened(k) => assert_eq!(k.as_bytes(), m.as_bytes()),
            SlotOpen::WrongPassphrase => panic!("right passphrase refused"),
        }
        assert!(matches!(
            open_slot(&old, b"px", &c, &b, "keys/old").unwrap(),
            SlotOpen::WrongPassphrase
        ));
        verify_integrity(&old, "keys/old").unwrap();
    }

    #[test]
    fn key_file_checks() {
        let m = MasterKey::generate();
        let (c, b) = cfg(&m);
        let kf = key_file_for(&m, &c, &b);
        assert_eq!(
            open_key_file(&kf, &c, &b, "f").unwrap().as_bytes(),
            m.as_bytes()
        );
        let other = MasterKey::generate();
        let mut kf2 = kf.clone();
        kf2.master_key = hex::encode(other.as_bytes());
        assert_eq!(
            open_key_file(&kf2, &c, &b, "f").err().unwrap().kind,
            ErrorKind::KeyFile
        );
        let mut kf3 = kf.clone();
        kf3.repo_id = hex::encode([2u8; 16]);
        assert_eq!(
            open_key_file(&kf3, &c, &b, "f").err().unwrap().kind,
            ErrorKind::KeyFile
        );
    }
}
