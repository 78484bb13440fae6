//! `key_file`: a key file (the unwrapped master key, read from local disk).
//!
//! Input: the bytes of a key file. A key file that parses must survive a serialize/parse round
//! trip; then `open_key_file` checks it against the fixture config. Whatever it accepts must be
//! the fixture repository's master key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgfrost::repo::format::KeyFile;
use pgfrost::repo::keys;
use pgfrost_fuzz as fx;

fuzz_target!(|data: &[u8]| {
    let Ok(kf) = serde_json::from_slice::<KeyFile>(data) else {
        return;
    };
    let again = serde_json::to_vec(&kf).expect("a parsed key file serializes");
    let back: KeyFile = serde_json::from_slice(&again).expect("a serialized key file parses");
    assert_eq!(back, kf, "key file changed in a serialize/parse round trip");

    let (config, config_bytes) = fx::config();
    if let Ok(m) = keys::open_key_file(&kf, config, config_bytes, "fuzz-key-file") {
        assert_eq!(
            m.as_bytes(),
            &fx::MASTER,
            "a foreign master key was accepted"
        );
    }
});
