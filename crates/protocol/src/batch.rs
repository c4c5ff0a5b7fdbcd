//! The batch format. After zstd decompression a batch is:
//!
//! ```text
//! magic "Z2KBATCH" · format version (u8, 2) · game count (u32 LE)
//! per game: uuid (16 bytes) · revision (u64 LE) · origin (u8: 0 a new game, 1 a continuation)
//!           · for a continuation: parent uuid (16 bytes) · branch step (u32 LE)
//!           · record length (u32 LE) · record (the game crate's canonical binary encoding)
//! ```
//!
//! Version 1 also carried the worker's claims (score, moves, largest tile); the server derives all
//! of them from the record, so version 2 dropped them. A continuation (the restart strategy) is a
//! game that starts from a position of an earlier game, its *parent*: after the move of step
//! `branch step` of the parent, one tile spawned (the continuation's start board), then its own
//! steps. The server checks it against the stored parent.
//!
//! The framing is checked as a whole (a batch with broken framing is refused outright); a record
//! that does not decode is refused alone, with its UUID, so one bad game does not sink its batch.

use std::io::Read;

use uuid::Uuid;
use zero2048_game::{DecodeError, GameRecord};

/// First bytes of every batch.
pub const BATCH_MAGIC: &[u8; 8] = b"Z2KBATCH";

/// The format version byte this build reads and writes.
pub const BATCH_FORMAT_VERSION: u8 = 2;

const HEADER_LEN: usize = 8 + 1 + 4;
const ENTRY_FIXED_LEN: usize = 16 + 8 + 1 + 4;

/// Where a continuation branches off its parent game.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The parent game's UUID.
    pub parent: Uuid,
    /// The parent's step whose afterstate the continuation starts from (plus one spawn).
    pub step: u32,
}

/// One game of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchEntry {
    /// Made by the worker when the game ended; the server's idempotency key.
    pub uuid: Uuid,
    /// The revision whose weights played the game.
    pub revision: u64,
    /// For a continuation, where it branched off.
    pub origin: Option<Origin>,
    /// The record, or why its bytes are not one.
    pub record: Result<GameRecord, DecodeError>,
}

/// A game to frame into a batch, its record already encoded.
#[derive(Clone, Copy, Debug)]
pub struct BatchGame<'a> {
    /// See [`BatchEntry::uuid`].
    pub uuid: Uuid,
    /// See [`BatchEntry::revision`].
    pub revision: u64,
    /// See [`BatchEntry::origin`].
    pub origin: Option<Origin>,
    /// The record's canonical bytes.
    pub record: &'a [u8],
}

/// Why bytes are not a batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Not zstd, or a truncated zstd frame.
    #[error("the body is not a complete zstd frame: {0}")]
    Compression(String),
    /// More bytes than allowed once decompressed.
    #[error("the batch decompresses to more than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The magic bytes are wrong.
    #[error("not a game batch (the first bytes are not \"Z2KBATCH\")")]
    BadMagic,
    /// A batch version this build does not read.
    #[error("batch format version {0} is not supported (this server reads version {BATCH_FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    /// The input ends early.
    #[error("truncated batch: {0}")]
    Truncated(String),
    /// More games than allowed.
    #[error("the batch holds {count} games; at most {limit} are allowed per batch")]
    TooManyGames {
        /// Games announced.
        count: u64,
        /// The limit.
        limit: usize,
    },
    /// Bytes after the last game.
    #[error("{0} unexpected bytes after the last game")]
    TrailingBytes(usize),
    /// A record too long to encode.
    #[error("a record of {0} bytes is too long for the batch format")]
    RecordTooLong(usize),
    /// The same UUID twice in one batch.
    #[error("game {0} appears twice in the batch")]
    DuplicateInBatch(Uuid),
    /// An origin byte other than 0 or 1.
    #[error("game {index}: origin byte {byte} is neither 0 (a new game) nor 1 (a continuation)")]
    BadOrigin {
        /// Position of the game in the batch.
        index: usize,
        /// The byte.
        byte: u8,
    },
}

/// Frames games into a batch (uncompressed).
pub fn encode_batch<'a>(games: impl ExactSizeIterator<Item = BatchGame<'a>>) -> Result<Vec<u8>, BatchError> {
    let count = u32::try_from(games.len())
        .map_err(|_| BatchError::TooManyGames { count: games.len() as u64, limit: u32::MAX as usize })?;
    let mut out = Vec::with_capacity(HEADER_LEN + games.len() * (ENTRY_FIXED_LEN + 1024));
    out.extend_from_slice(BATCH_MAGIC);
    out.push(BATCH_FORMAT_VERSION);
    out.extend_from_slice(&count.to_le_bytes());
    for game in games {
        let len =
            u32::try_from(game.record.len()).map_err(|_| BatchError::RecordTooLong(game.record.len()))?;
        out.extend_from_slice(game.uuid.as_bytes());
        out.extend_from_slice(&game.revision.to_le_bytes());
        match game.origin {
            None => out.push(0),
            Some(origin) => {
                out.push(1);
                out.extend_from_slice(origin.parent.as_bytes());
                out.extend_from_slice(&origin.step.to_le_bytes());
            }
        }
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(game.record);
    }
    Ok(out)
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], BatchError> {
        if self.bytes.len() < n {
            return Err(BatchError::Truncated(format!(
                "{what}: {n} bytes needed, {} left",
                self.bytes.len()
            )));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], BatchError> {
        Ok(self.take(N, what)?.try_into().expect("take returns N bytes"))
    }
}

/// Reads a decompressed batch of at most `max_games` games. Allocation is bounded by the input:
/// a count larger than the bytes could hold is refused before any game is read.
pub fn decode_batch(bytes: &[u8], max_games: usize) -> Result<Vec<BatchEntry>, BatchError> {
    let mut cursor = Cursor { bytes };
    if cursor.take(8, "magic").map_err(|_| BatchError::BadMagic)? != BATCH_MAGIC {
        return Err(BatchError::BadMagic);
    }
    let version = cursor.array::<1>("version")?[0];
    if version != BATCH_FORMAT_VERSION {
        return Err(BatchError::UnsupportedVersion(version));
    }
    let count = u32::from_le_bytes(cursor.array("game count")?) as usize;
    if count > max_games {
        return Err(BatchError::TooManyGames { count: count as u64, limit: max_games });
    }
    if count.saturating_mul(ENTRY_FIXED_LEN) > cursor.bytes.len() {
        return Err(BatchError::Truncated(format!(
            "{count} games announced, but only {} bytes follow",
            cursor.bytes.len()
        )));
    }
    let mut entries = Vec::with_capacity(count);
    let mut seen = std::collections::HashSet::with_capacity(count);
    for i in 0..count {
        let what = |field: &str| format!("game {i}: {field}");
        let uuid = Uuid::from_bytes(cursor.array(&what("uuid"))?);
        let revision = u64::from_le_bytes(cursor.array(&what("revision"))?);
        let origin = match cursor.array::<1>(&what("origin"))?[0] {
            0 => None,
            1 => Some(Origin {
                parent: Uuid::from_bytes(cursor.array(&what("parent uuid"))?),
                step: u32::from_le_bytes(cursor.array(&what("branch step"))?),
            }),
            byte => return Err(BatchError::BadOrigin { index: i, byte }),
        };
        let len = u32::from_le_bytes(cursor.array(&what("record length"))?) as usize;
        let record = GameRecord::decode(cursor.take(len, &what("record"))?);
        if !seen.insert(uuid) {
            return Err(BatchError::DuplicateInBatch(uuid));
        }
        entries.push(BatchEntry { uuid, revision, origin, record });
    }
    if !cursor.bytes.is_empty() {
        return Err(BatchError::TrailingBytes(cursor.bytes.len()));
    }
    Ok(entries)
}

/// zstd-compresses a batch.
pub fn compress(batch: &[u8], level: i32) -> Vec<u8> {
    zstd::bulk::compress(batch, level).expect("compressing into memory cannot fail")
}

/// Decompresses at most `limit` bytes; more is an error, found without inflating the rest.
pub fn decompress_limited(body: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    let decoder =
        zstd::stream::read::Decoder::new(body).map_err(|e| BatchError::Compression(e.to_string()))?;
    let mut out = Vec::with_capacity(body.len().saturating_mul(2).min(limit));
    decoder
        .take((limit as u64).saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| BatchError::Compression(e.to_string()))?;
    if out.len() > limit {
        return Err(BatchError::TooLarge { limit });
    }
    Ok(out)
}
