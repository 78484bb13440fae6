//! `key_slot`: a key slot (`keys/<id>`), parsed and then tried with a passphrase.
//!
//! Input: the bytes of a key slot object. A slot that parses must survive a serialize/parse round
//! trip; then `open_slot` runs against the fixture config (a valid config built in code) with the
//! fixture passphrase. Slots asking for more than a toy Argon2id cost (64 KiB, 2 passes, 1 lane)
//! are skipped: a forged slot may ask for 4 GiB, which is bounded but far too slow to fuzz.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgfrost::error::ErrorKind;
use pgfrost::repo::format::KeySlot;
use pgfrost::repo::keys;
use pgfrost_fuzz as fx;

fuzz_target!(|data: &[u8]| {
    let Ok(slot) = serde_json::from_slice::<KeySlot>(data) else {
        return;
    };
    let again = serde_json::to_vec(&slot).expect("a parsed slot serializes");
    let back: KeySlot = serde_json::from_slice(&again).expect("a serialized slot parses");
    assert_eq!(back, slot, "slot changed in a serialize/parse round trip");

    if !fx::kdf_is_cheap(&slot.kdf) {
        return;
    }
    let (config, config_bytes) = fx::config();
    if let Err(e) = keys::open_slot(&slot, fx::PASSPHRASE, config, config_bytes, "keys/fuzz") {
        // A damaged slot is corruption; "internal" would mean an invariant broke.
        assert_ne!(e.kind, ErrorKind::Internal, "{e}");
    }
});
