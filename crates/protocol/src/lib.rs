//! The server–worker protocol (design.md §6): what crosses the wire between `zero2048 server` and
//! `zero2048 worker`, and the rules the server checks an upload against.
//!
//! - [`PROTOCOL_VERSION`] and the headers both sides send, so an incompatible pair stops with a
//!   clear message instead of misreading each other.
//! - The game batch: [`encode_batch`] / [`decode_batch`] (framing) and [`compress`] /
//!   [`decompress_limited`] (zstd, with a hard limit on the decompressed size against zstd bombs).
//! - [`verify_upload`]: a game is accepted only if the engine replays every step and the worker's
//!   claims (score, moves, largest tile) agree with the replay.
//! - The JSON bodies: [`UploadReply`] and [`ApiError`].
//!
//! This crate must never trust a byte it decodes: every length is checked against what is left
//! before anything is allocated, and decoding never panics. It does no I/O.

mod batch;
mod messages;
mod verify;

pub use batch::{
    BATCH_FORMAT_VERSION, BATCH_MAGIC, BatchEntry, BatchError, Claims, compress, decode_batch,
    decompress_limited, encode_batch,
};
pub use messages::{ApiError, Rejection, UploadReply};
pub use uuid::Uuid;
pub use verify::{RejectReason, SearchRequirement, Verified, verify_search, verify_upload};

/// The protocol version this build speaks. Bumped on any incompatible change of an endpoint, a
/// JSON body or the batch format.
pub const PROTOCOL_VERSION: u32 = 1;

/// Request and response header carrying [`PROTOCOL_VERSION`].
pub const PROTOCOL_HEADER: &str = "zero2048-protocol";

/// Request header carrying the worker's version (the crate version of its build).
pub const WORKER_VERSION_HEADER: &str = "zero2048-worker-version";

/// This build's version, as workers report it and servers compare it with `min_worker_version`.
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Whether `version` (`major.minor.patch`) is at least `minimum`. Unparseable versions compare as
/// too old, so a garbled header never passes a minimum.
pub fn version_at_least(version: &str, minimum: &str) -> bool {
    fn parse(v: &str) -> Option<(u64, u64, u64)> {
        let mut parts = v.trim().split('.').map(|p| p.split(['-', '+']).next().unwrap_or(p).parse::<u64>());
        Some((parts.next()?.ok()?, parts.next().unwrap_or(Ok(0)).ok()?, parts.next().unwrap_or(Ok(0)).ok()?))
    }
    if minimum.trim().is_empty() {
        return true;
    }
    match (parse(version), parse(minimum)) {
        (Some(v), Some(m)) => v >= m,
        _ => false,
    }
}

/// A fresh random (version 4) game UUID.
pub fn new_game_uuid(random: [u8; 16]) -> Uuid {
    uuid::Builder::from_random_bytes(random).into_uuid()
}
