//! The batch format. After zstd decompression a batch is:
//!
//! ```text
//! magic "Z2KBATCH" · format version (u8) · game count (u32 LE)
//! per game: uuid (16 bytes) · revision (u64 LE) · claimed score (u64 LE) · claimed moves (u32 LE)
//!           · claimed largest tile (u32 LE) · record length (u32 LE) · record (the game crate's
//!           canonical binary encoding)
//! ```
//!
//! The framing is checked as a whole (a batch with broken framing is refused outright); a record
//! that does not decode is refused alone, with its UUID, so one bad game does not sink its batch.

use std::io::Read;

use uuid::Uuid;
use zero2048_game::{DecodeError, GameRecord};

/// First bytes of every batch.
pub const BATCH_MAGIC: &[u8; 8] = b"Z2KBATCH";

/// The format version byte this build reads and writes.
pub const BATCH_FORMAT_VERSION: u8 = 1;

const HEADER_LEN: usize = 8 + 1 + 4;
const ENTRY_FIXED_LEN: usize = 16 + 8 + 8 + 4 + 4 + 4;

/// What the worker says about a game; the server checks it against the replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    /// Final score.
    pub score: u64,
    /// Moves played.
    pub moves: u32,
    /// Largest tile on the final board.
    pub max_tile: u32,
}

/// One game of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchEntry {
    /// Made by the worker when the game ended; the server's idempotency key.
    pub uuid: Uuid,
    /// The revision whose weights played the game.
    pub revision: u64,
    /// The worker's claims.
    pub claims: Claims,
    /// The record, or why its bytes are not one.
    pub record: Result<GameRecord, DecodeError>,
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
}

/// Frames games into a batch (uncompressed). Each item is (uuid, revision, claims, encoded record).
pub fn encode_batch<'a>(
    games: impl ExactSizeIterator<Item = (Uuid, u64, Claims, &'a [u8])>,
) -> Result<Vec<u8>, BatchError> {
    let count = u32::try_from(games.len())
        .map_err(|_| BatchError::TooManyGames { count: games.len() as u64, limit: u32::MAX as usize })?;
    let mut out = Vec::with_capacity(HEADER_LEN + games.len() * (ENTRY_FIXED_LEN + 1024));
    out.extend_from_slice(BATCH_MAGIC);
    out.push(BATCH_FORMAT_VERSION);
    out.extend_from_slice(&count.to_le_bytes());
    for (uuid, revision, claims, record) in games {
        let len = u32::try_from(record.len()).map_err(|_| BatchError::RecordTooLong(record.len()))?;
        out.extend_from_slice(uuid.as_bytes());
        out.extend_from_slice(&revision.to_le_bytes());
        out.extend_from_slice(&claims.score.to_le_bytes());
        out.extend_from_slice(&claims.moves.to_le_bytes());
        out.extend_from_slice(&claims.max_tile.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(record);
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
        let score = u64::from_le_bytes(cursor.array(&what("score"))?);
        let moves = u32::from_le_bytes(cursor.array(&what("moves"))?);
        let max_tile = u32::from_le_bytes(cursor.array(&what("largest tile"))?);
        let len = u32::from_le_bytes(cursor.array(&what("record length"))?) as usize;
        let record = GameRecord::decode(cursor.take(len, &what("record"))?);
        if !seen.insert(uuid) {
            return Err(BatchError::DuplicateInBatch(uuid));
        }
        entries.push(BatchEntry { uuid, revision, claims: Claims { score, moves, max_tile }, record });
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
