//! `<stanza>/lock/<kind>-<id>`: a lease, plaintext JSON that any process with write access to the
//! repository can put there. Parsing it and judging its liveness must never panic, and a lease
//! that parses must survive a serialize/parse round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgfrost::repo::lease;

fuzz_target!(|data: &[u8]| {
    let Some(doc) = lease::parse(data) else {
        return;
    };
    let again = serde_json::to_vec(&doc).expect("a parsed lease serializes");
    assert_eq!(
        lease::parse(&again),
        Some(doc.clone()),
        "lease changed in a round trip"
    );
    for now in [i64::MIN, -1, 0, doc.renewed_unix, i64::MAX] {
        let _ = doc.live(now);
    }
});
