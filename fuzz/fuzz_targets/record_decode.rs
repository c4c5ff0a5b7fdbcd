//! Any bytes given to the record decoder: it must return a record or an error, never panic, and a
//! decoded record must re-encode to exactly the same bytes and replay without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zero2048_game::GameRecord;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(record) = GameRecord::decode(bytes) {
        let encoded = record.encode().expect("a decoded record always re-encodes");
        assert_eq!(encoded, bytes, "decode → encode is not the identity");
        let _ = record.replay();
    }
});
