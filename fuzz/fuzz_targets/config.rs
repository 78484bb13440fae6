//! `config`: the plaintext repository config, the only object read before any key is known.
//!
//! Input: the bytes of a `config` object. Parses it as `RepoConfig`; a config that parses must
//! survive a serialize/parse round trip. Then runs everything a key holder checks against a
//! config, with the input as the config's exact bytes: the key-check comparison, a key file
//! written for the fixture master key, and the fixture key slot (whose AD binds the config bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgfrost::repo::format::RepoConfig;
use pgfrost::repo::keys::{self, SlotOpen};
use pgfrost_fuzz as fx;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = serde_json::from_slice::<RepoConfig>(data) else {
        return;
    };
    let again = serde_json::to_vec(&config).expect("a parsed config serializes");
    let back: RepoConfig = serde_json::from_slice(&again).expect("a serialized config parses");
    assert_eq!(
        back, config,
        "config changed in a serialize/parse round trip"
    );

    let master = fx::master();
    let matches = keys::master_matches(&master, &config);

    let kf = keys::key_file_for(&master, &config, data);
    match keys::open_key_file(&kf, &config, data, "fuzz-key-file") {
        Ok(m) => {
            assert_eq!(m.as_bytes(), master.as_bytes());
            assert!(
                matches!(matches, Ok(true)),
                "key file opened but the key check fails"
            );
        }
        Err(_) => assert!(
            !matches!(matches, Ok(true)),
            "key check passes but the key file fails"
        ),
    }

    match keys::open_slot(fx::slot(), fx::PASSPHRASE, &config, data, "keys/fuzz") {
        Ok(SlotOpen::Opened(m)) => {
            // The slot's AD holds BLAKE3(config bytes): only the very config it was made for opens it.
            assert_eq!(
                data,
                fx::config().1,
                "the fixture slot opened under another config"
            );
            assert_eq!(m.as_bytes(), master.as_bytes());
        }
        Ok(SlotOpen::WrongPassphrase) => panic!("the fixture passphrase was refused"),
        Err(_) => {}
    }
});
