//! The server's upload decoder on arbitrary bytes: decompression with a limit, batch framing, and
//! verification of every decoded game. None of it may panic, and a game that verifies must be
//! exactly what it claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zero2048_protocol::{decode_batch, decompress_limited, verify_upload};

fuzz_target!(|data: &[u8]| {
    let check = |raw: &[u8]| {
        if let Ok(entries) = decode_batch(raw, 256) {
            for entry in &entries {
                if let Ok(verified) = verify_upload(entry, &[0, 1, 2]) {
                    assert_eq!(verified.summary.score, entry.claims.score);
                    assert_eq!(verified.summary.moves, entry.claims.moves);
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
