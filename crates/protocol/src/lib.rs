//! The server–worker protocol (`docs/protocol.md`): what crosses the wire between
//! `zero2048 server` and `zero2048 worker`, and the rules the server checks an upload against.
//!
//! - [`PROTOCOL_VERSION`] and the headers both sides send, so an incompatible pair stops with a
//!   clear message instead of misreading each other.
//! - The run's typed specs, built by the trainer and parsed by workers with the same rules:
//!   [`ModelSpec`], [`PlaySpec`], [`RunSpec`], and the whole [`LatestRecord`].
//! - The game batch: [`encode_batch`] / [`decode_batch`] (framing) and [`compress`] /
//!   [`decompress_limited`] (zstd, with a hard limit on the decompressed size against zstd bombs).
//! - [`verify_game`]: a game is accepted only if the engine replays every step (a continuation
//!   from its parent's position), its search statistics fit the run, and it ended.
//! - The JSON bodies: [`UploadReply`] and [`ApiError`].
//!
//! ```
//! use zero2048_game::{Direction, Game, SpawnRule};
//! use zero2048_protocol::{
//!     BatchGame, SearchRequirement, UploadRules, Uuid, compress, decode_batch, decompress_limited,
//!     encode_batch, verify_game,
//! };
//!
//! // A worker plays a game to its end and sends it; the server decodes and replays it.
//! let mut game = Game::new(5, SpawnRule::STANDARD);
//! while let Some(direction) = Direction::ALL.into_iter().find(|d| game.board().legal_move(*d).is_some()) {
//!     game.play(direction).unwrap();
//! }
//! let record = game.into_record().encode().unwrap();
//! let uuid = Uuid::from_u128(1);
//! let raw = encode_batch([BatchGame { uuid, revision: 3, origin: None, record: &record }].into_iter()).unwrap();
//! let body = compress(&raw, 3);
//!
//! let entries = decode_batch(&decompress_limited(&body, 1 << 20).unwrap(), 100).unwrap();
//! let rules = UploadRules { accepted_revisions: &[3], search: SearchRequirement::Absent };
//! assert!(verify_game(&entries[0], &rules, None).is_ok());
//! let stale = UploadRules { accepted_revisions: &[4], ..rules };
//! assert!(verify_game(&entries[0], &stale, None).is_err());
//! ```
//!
//! This crate must never trust a byte it decodes: every length is checked against what is left
//! before anything is allocated, and decoding never panics. It does no I/O.

mod batch;
mod latest;
mod messages;
mod spec;
mod verify;

pub use batch::{
    BATCH_FORMAT_VERSION, BATCH_MAGIC, BatchEntry, BatchError, BatchGame, Origin, compress, decode_batch,
    decompress_limited, encode_batch,
};
pub use latest::{LatestError, LatestRecord, RunSpec};
pub use messages::{ApiError, Rejection, UploadReply};
pub use spec::{
    MAX_PARALLEL_GAMES, MAX_SELFPLAY_DEPTH, ModelKind, ModelSpec, PlaySpec, RestartSpec, SearchSpec,
    SpecError, check_depth, check_four_probability, check_parallel_games,
};
pub use uuid::Uuid;
pub use verify::{ParentPosition, RejectReason, SearchRequirement, UploadRules, Verified, verify_game};

/// The protocol version this build speaks. Bumped on any incompatible change of an endpoint, a
/// JSON body or the batch format (2: the typed latest record, claims dropped from the batch,
/// continuations; 3: the restart spec's `at_max` and `at_tile`, which a version 2 worker refuses to
/// read, so it is told to upgrade rather than failing on the record).
pub const PROTOCOL_VERSION: u32 = 3;

/// Request and response header carrying [`PROTOCOL_VERSION`].
pub const PROTOCOL_HEADER: &str = "zero2048-protocol";

/// Request header carrying the worker's version (the crate version of its build).
pub const WORKER_VERSION_HEADER: &str = "zero2048-worker-version";

/// Request header naming the worker's machine (a host name and a short id kept in its spool
/// directory), so several machines sharing one token show as several workers. Checked with
/// [`check_machine`].
pub const WORKER_MACHINE_HEADER: &str = "zero2048-worker-machine";

/// The rule for [`WORKER_MACHINE_HEADER`]: 1–64 characters of letters, digits, `.`, `_`, `-`.
pub fn check_machine(machine: &str) -> Result<(), String> {
    let valid = !machine.is_empty()
        && machine.len() <= 64
        && machine.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!("{WORKER_MACHINE_HEADER} {machine:?} is not 1-64 letters, digits, '.', '_' or '-'"))
    }
}

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
