//! The server's upload decoder on arbitrary bytes: decompression with a limit, batch framing, and
//! verification of every decoded game. None of it may panic, and a game that verifies must be
//! exactly what its replay says, and finished.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zero2048_protocol::{
    ParentPosition, SearchRequirement, UploadRules, decode_batch, decompress_limited, verify_game,
};

fuzz_target!(|data: &[u8]| {
    let check = |raw: &[u8]| {
        if let Ok(entries) = decode_batch(raw, 256) {
            let rules = UploadRules { accepted_revisions: &[0, 1, 2], search: SearchRequirement::Absent };
            for entry in &entries {
                // A continuation is checked against a parent position taken from the data itself.
                let parent = entry.origin.map(|o| ParentPosition::Found(zero2048_game::Board::from_raw(o.step as u64)));
                if let Ok(verified) = verify_game(entry, &rules, parent) {
                    let record = entry.record.as_ref().expect("a verified game decoded");
                    let replayed =
                        if entry.origin.is_some() { record.replay_continuation() } else { record.replay() };
                    assert_eq!(Ok(verified.summary), replayed);
                    assert!(verified.summary.game_over);
                }
            }
        }
    };
    check(data);
    if let Ok(raw) = decompress_limited(data, 1 << 20) {
        check(&raw);
    }
});
