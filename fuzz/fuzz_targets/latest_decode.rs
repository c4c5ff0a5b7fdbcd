//! The latest record as a worker reads it (from a server or a bucket's latest.json) on arbitrary
//! bytes: it must parse or be refused, never panic, and a record that parses must survive its own
//! serialisation unchanged (so the worker plays what the server wrote).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zero2048_protocol::LatestRecord;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(record) = LatestRecord::from_json(bytes) {
        let again = serde_json::to_vec(&record).expect("a parsed record serialises");
        assert_eq!(LatestRecord::from_json(&again).expect("and parses again"), record);
    }
});
