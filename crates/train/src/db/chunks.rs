//! Game records out of the database: each stored batch of games is one zstd-compressed chunk
//! object (in the bucket with `use_r2`, in the local games directory otherwise), and each game's
//! row names its chunk and its entry in it.
//!
//! The order that loses nothing: the chunk is written (whole, atomically) before the transaction
//! that names it commits, and a game is acknowledged only after that commit. A process killed
//! between the two leaves a chunk no row names (an orphan, removed by [`GameShelf::sweep`] once it
//! is older than any write in progress could be); the worker, never acknowledged, sends the games
//! again. A row therefore never names a chunk that is not there, unless someone deleted it.
//!
//! Chunk format, before compression: `Z2GC`, a version byte (1), the entry count (u32 LE), then
//! per entry the game's UUID (16 bytes), its record's length (u32 LE) and its canonical record.
//! The UUIDs make a chunk self-describing: a row that points at the wrong entry is detected.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zero2048_storage::{ObjectPlace, ObjectShelf};

use super::{DbError, NewGame};

const MAGIC: &[u8; 4] = b"Z2GC";
const VERSION: u8 = 1;
/// The largest chunk a reader decompresses (a batch is at most a few MiB).
const MAX_CHUNK_BYTES: u64 = 512 << 20;
/// zstd level: records are already bit-packed (one byte a move), so level 1 keeps what there is
/// to gain (a chunk of TD(0) games: 1.319× against level 3's 1.324×) at 2.8× level 3's speed
/// (509 against 182 MB/s; about 0.8 CPU-s per 100,000 games: BENCHMARKS.md, issue 11).
const LEVEL: i32 = 1;
/// How old an unnamed chunk must be before it counts as an orphan: longer than any upload's
/// write-then-commit could take.
pub const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// Which games are kept once they are learned (the games' chunks are the objects).
pub type GameRetention = zero2048_storage::ObjectRetention;

/// A chunk as its row stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewChunk {
    /// Its object name.
    pub key: String,
    /// In the bucket (else the local games directory).
    pub in_bucket: bool,
    /// Its compressed size.
    pub bytes: u64,
    /// The newest revision among its games (retention drops a chunk once it is old).
    pub newest_revision: u64,
}

/// Where a stored game's record is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ChunkPlace {
    pub key: String,
    pub in_bucket: bool,
    pub entry: u32,
}

/// Totals of the chunk objects, for the status page and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChunkTotals {
    /// Chunks stored.
    pub chunks: u64,
    /// Their compressed bytes.
    pub bytes: u64,
}

/// What a retention pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Chunks deleted.
    pub chunks: u64,
    /// Game rows deleted with them.
    pub games: u64,
    /// Compressed bytes freed.
    pub bytes: u64,
}

/// A chunk to delete: its id, key and place.
#[derive(Clone, Debug)]
pub(super) struct DoomedChunk {
    pub id: u64,
    pub key: String,
    pub in_bucket: bool,
}

/// A chunk's entries: each game's UUID and record.
type Entries = Vec<([u8; 16], Vec<u8>)>;

/// Where the run's game chunks are written and read: the bucket when one is configured, the
/// local directory otherwise (and for chunks written there while no bucket was configured).
pub struct GameShelf {
    local: ObjectShelf,
    bucket: Option<ObjectShelf>,
    retention: GameRetention,
    /// The last chunk read: the learner and exports read games in id order, so consecutive
    /// games mostly share a chunk.
    last_read: Mutex<Option<(String, Arc<Entries>)>>,
    /// The chunks this process wrote last, shared by its clones: a learner in the same process
    /// reads what the ingest just wrote without a GET, and goes on while the bucket is down.
    recent: Arc<Mutex<RecentChunks>>,
}

/// Compressed chunks, newest last, up to [`RECENT_BYTES`].
#[derive(Default)]
struct RecentChunks {
    chunks: std::collections::VecDeque<(String, Arc<Vec<u8>>)>,
    bytes: usize,
}

/// How much of the newest chunks a process keeps in memory (about 80 M moves).
const RECENT_BYTES: usize = 64 << 20;

impl RecentChunks {
    fn add(&mut self, key: String, bytes: Arc<Vec<u8>>) {
        self.bytes += bytes.len();
        self.chunks.push_back((key, bytes));
        while self.bytes > RECENT_BYTES {
            let Some((_, dropped)) = self.chunks.pop_front() else { break };
            self.bytes -= dropped.len();
        }
    }

    fn get(&self, key: &str) -> Option<Arc<Vec<u8>>> {
        self.chunks.iter().rev().find(|(k, _)| k == key).map(|(_, bytes)| Arc::clone(bytes))
    }
}

impl Clone for GameShelf {
    /// The same places and recent chunks, with a last-read cache of its own.
    fn clone(&self) -> GameShelf {
        GameShelf { last_read: Mutex::new(None), recent: Arc::clone(&self.recent), ..self.shallow() }
    }
}

impl GameShelf {
    /// The run's shelf as storage is configured: chunks under `games/` in the bucket when one is
    /// usable, else in the local games directory (`storage.games_dir`).
    pub fn from_storage(
        adapter: &zero2048_storage::StorageAdapter,
        runtime: tokio::runtime::Handle,
    ) -> Result<GameShelf, DbError> {
        let (local, bucket) = adapter
            .object_shelves("games", runtime)
            .map_err(|source| DbError::Storage { action: "opening the games' storage", source })?;
        Ok(GameShelf::new(local, bucket, adapter.games_retention()))
    }

    /// Chunks go to `bucket` when given, else to `local`.
    pub fn new(local: ObjectShelf, bucket: Option<ObjectShelf>, retention: GameRetention) -> GameShelf {
        GameShelf { local, bucket, retention, last_read: Mutex::new(None), recent: Arc::default() }
    }

    fn shallow(&self) -> GameShelf {
        GameShelf::new(self.local.clone(), self.bucket.clone(), self.retention)
    }

    /// The retention setting.
    pub fn retention(&self) -> GameRetention {
        self.retention
    }

    fn writer(&self) -> &ObjectShelf {
        self.bucket.as_ref().unwrap_or(&self.local)
    }

    fn shelf(&self, in_bucket: bool, key: &str) -> Result<&ObjectShelf, DbError> {
        match (in_bucket, &self.bucket) {
            (false, _) => Ok(&self.local),
            (true, Some(bucket)) => Ok(bucket),
            (true, None) => Err(DbError::Chunk {
                key: key.to_string(),
                message: "it is in the bucket, and this process has no bucket configured (use_r2)".into(),
            }),
        }
    }

    /// Writes `games` as one chunk (wholly, before any row names it) and returns its row. When
    /// the bucket fails, the chunk goes to the local directory instead (its row says so, and
    /// [`RunDb::move_chunks_to_bucket`](super::RunDb::move_chunks_to_bucket) moves it once the
    /// bucket is back): an outage must not stop the run from taking games.
    pub fn write(&self, games: &[NewGame<'_>]) -> Result<NewChunk, DbError> {
        let bytes = encode(games)?;
        let key = chunk_key();
        let chunk = self.write_bytes(&key, &bytes, games)?;
        self.recent.lock().unwrap_or_else(|e| e.into_inner()).add(key, Arc::new(bytes));
        Ok(chunk)
    }

    fn write_bytes(&self, key: &str, bytes: &[u8], games: &[NewGame<'_>]) -> Result<NewChunk, DbError> {
        let written_to = |shelf: &ObjectShelf| NewChunk {
            key: key.to_string(),
            in_bucket: shelf.place() == ObjectPlace::Bucket,
            bytes: bytes.len() as u64,
            newest_revision: games.iter().map(|g| g.revision).max().unwrap_or(0),
        };
        let local_write = |action| {
            self.local.put(key, bytes).map_err(|source| DbError::Storage { action, source })?;
            Ok(written_to(&self.local))
        };
        match &self.bucket {
            None => local_write("writing a game chunk"),
            Some(bucket) => match bucket.put(key, bytes) {
                Ok(()) => Ok(written_to(bucket)),
                Err(e) => {
                    tracing::warn!(
                        "a game chunk could not go to the bucket, keeping it locally until it is back: {e}"
                    );
                    local_write("writing a game chunk locally while the bucket is down")
                }
            },
        }
    }

    /// Copies a locally kept chunk to the bucket; `false` when there is no bucket.
    pub(super) fn copy_to_bucket(&self, key: &str) -> Result<bool, DbError> {
        let Some(bucket) = &self.bucket else { return Ok(false) };
        let bytes = self
            .local
            .get(key)
            .map_err(|source| DbError::Storage { action: "reading a local game chunk", source })?;
        bucket
            .put(key, &bytes)
            .map_err(|source| DbError::Storage { action: "moving a game chunk to the bucket", source })?;
        Ok(true)
    }

    /// Removes a chunk's local copy once the bucket holds it.
    pub(super) fn delete_local(&self, key: &str) -> Result<(), DbError> {
        self.local
            .delete(key)
            .map_err(|source| DbError::Storage { action: "deleting a moved game chunk", source })
    }

    /// The record of entry `place.entry`, checked to be game `uuid`.
    pub(super) fn record(&self, place: &ChunkPlace, uuid: &[u8; 16]) -> Result<Vec<u8>, DbError> {
        let cached = {
            let last = self.last_read.lock().unwrap_or_else(|e| e.into_inner());
            last.as_ref().filter(|(key, _)| *key == place.key).map(|(_, entries)| Arc::clone(entries))
        };
        let entries = match cached {
            Some(entries) => entries,
            None => {
                let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner()).get(&place.key);
                let bytes = match recent {
                    Some(bytes) => bytes,
                    None => Arc::new(
                        self.shelf(place.in_bucket, &place.key)?
                            .get(&place.key)
                            .map_err(|source| DbError::Storage { action: "reading a game chunk", source })?,
                    ),
                };
                let entries = Arc::new(decode(&place.key, &bytes)?);
                *self.last_read.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((place.key.clone(), Arc::clone(&entries)));
                entries
            }
        };
        match entries.get(place.entry as usize) {
            Some((found, record)) if found == uuid => Ok(record.clone()),
            Some(_) => Err(DbError::Chunk {
                key: place.key.clone(),
                message: format!("entry {} holds another game than its row says", place.entry),
            }),
            None => Err(DbError::Chunk {
                key: place.key.clone(),
                message: format!("it has {} entries; a row names entry {}", entries.len(), place.entry),
            }),
        }
    }

    /// Deletes a chunk's object (after its rows are gone).
    pub(super) fn delete(&self, chunk: &DoomedChunk) -> Result<(), DbError> {
        self.shelf(chunk.in_bucket, &chunk.key)?
            .delete(&chunk.key)
            .map_err(|source| DbError::Storage { action: "deleting a game chunk", source })
    }

    /// The chunk objects older than `min_age` on the shelf written to now, for the orphan
    /// sweep (younger ones may belong to a write whose commit is still coming).
    pub(super) fn old_keys(&self, min_age: Duration) -> Result<Vec<String>, DbError> {
        let cutoff = unix_millis().saturating_sub(min_age.as_millis() as u64);
        Ok(self
            .writer()
            .list(min_age)
            .map_err(|source| DbError::Storage { action: "listing game chunks", source })?
            .into_iter()
            .filter(|key| written_at(key).is_some_and(|at| at <= cutoff))
            .collect())
    }

    /// Removes `key` from the shelf written to now.
    pub(super) fn delete_orphan(&self, key: &str) -> Result<(), DbError> {
        self.writer()
            .delete(key)
            .map_err(|source| DbError::Storage { action: "deleting an orphan chunk", source })
    }

    /// Whether chunks are written to the bucket.
    pub fn in_bucket(&self) -> bool {
        self.bucket.is_some()
    }

    /// For messages: where chunks are written.
    pub fn describe(&self) -> String {
        self.writer().describe()
    }
}

fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `<unix ms, 13 digits>-<64 random bits>.z2gc`: unique without asking the database, and
/// sortable by time, so the orphan sweep can tell old objects from writes in progress.
fn chunk_key() -> String {
    format!("{:013}-{:016x}.z2gc", unix_millis(), rand::random::<u64>())
}

/// Whether `name` is a game chunk's object name.
pub fn is_chunk_name(name: &str) -> bool {
    written_at(name).is_some()
}

/// When a chunk named by [`chunk_key`] was written (Unix ms); `None` for any other name.
fn written_at(key: &str) -> Option<u64> {
    let (millis, rest) = key.split_once('-')?;
    (millis.len() == 13 && rest.ends_with(".z2gc")).then(|| millis.parse().ok()).flatten()
}

fn encode(games: &[NewGame<'_>]) -> Result<Vec<u8>, DbError> {
    let size = 9 + games.iter().map(|g| 20 + g.record.len()).sum::<usize>();
    let mut raw = Vec::with_capacity(size);
    raw.extend_from_slice(MAGIC);
    raw.push(VERSION);
    raw.extend_from_slice(&(games.len() as u32).to_le_bytes());
    for game in games {
        raw.extend_from_slice(&game.uuid);
        raw.extend_from_slice(&(game.record.len() as u32).to_le_bytes());
        raw.extend_from_slice(game.record);
    }
    zstd::bulk::compress(&raw, LEVEL)
        .map_err(|e| DbError::Chunk { key: "(new)".into(), message: e.to_string() })
}

fn decode(key: &str, bytes: &[u8]) -> Result<Entries, DbError> {
    let bad = |message: String| DbError::Chunk { key: key.to_string(), message };
    let mut raw = Vec::new();
    zstd::stream::read::Decoder::new(bytes)
        .and_then(|d| d.take(MAX_CHUNK_BYTES + 1).read_to_end(&mut raw))
        .map_err(|e| bad(format!("it does not decompress: {e}")))?;
    if raw.len() as u64 > MAX_CHUNK_BYTES {
        return Err(bad(format!("it decompresses to more than {MAX_CHUNK_BYTES} bytes")));
    }
    let mut rest = raw.as_slice();
    let mut take = |n: usize, what: &str| -> Result<&[u8], DbError> {
        if rest.len() < n {
            return Err(bad(format!("it ends inside {what}")));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    if take(4, "its header")? != MAGIC {
        return Err(bad("it is not a game chunk (no Z2GC header)".into()));
    }
    let version = take(1, "its header")?[0];
    if version != VERSION {
        return Err(bad(format!("chunk format version {version} is not known to this build")));
    }
    let count = u32::from_le_bytes(take(4, "its header")?.try_into().expect("4 bytes"));
    let mut entries = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        let uuid: [u8; 16] = take(16, "an entry's UUID")?.try_into().expect("16 bytes");
        let len = u32::from_le_bytes(take(4, "an entry's length")?.try_into().expect("4 bytes"));
        entries.push((uuid, take(len as usize, "a record")?.to_vec()));
    }
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes follow its last entry", rest.len())));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn game(uuid: u8, record: &[u8]) -> NewGame<'_> {
        NewGame {
            uuid: [uuid; 16],
            origin: None,
            revision: uuid as u64,
            score: 0,
            moves: 0,
            max_tile: 0,
            record,
        }
    }

    #[test]
    fn chunks_round_trip_and_damage_is_named() {
        let records: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100 * i as usize]).collect();
        let games: Vec<NewGame<'_>> = records.iter().enumerate().map(|(i, r)| game(i as u8, r)).collect();
        let bytes = encode(&games).unwrap();
        let entries = decode("k", &bytes).unwrap();
        assert_eq!(entries.len(), 5);
        for (i, (uuid, record)) in entries.iter().enumerate() {
            assert_eq!((*uuid, record), ([i as u8; 16], &records[i]));
        }
        let mut raw = zstd::bulk::decompress(&bytes, 1 << 20).unwrap();
        for (cut, needle) in [(raw.len() - 1, "ends inside"), (3, "ends inside")] {
            let damaged = zstd::bulk::compress(&raw[..cut], 1).unwrap();
            let error = decode("k", &damaged).unwrap_err().to_string();
            assert!(error.contains(needle) && error.contains("chunk k"), "{error}");
        }
        raw[4] = 9;
        let error = decode("k", &zstd::bulk::compress(&raw, 1).unwrap()).unwrap_err().to_string();
        assert!(error.contains("version 9"), "{error}");
        assert!(decode("k", b"not zstd").unwrap_err().to_string().contains("does not decompress"));
    }

    #[test]
    fn recent_chunks_keep_the_newest_within_their_bytes() {
        let mut recent = RecentChunks::default();
        let big = RECENT_BYTES / 3 + 1;
        for key in ["a", "b", "c"] {
            recent.add(key.into(), Arc::new(vec![0; big]));
        }
        assert!(recent.get("a").is_none(), "the oldest went first");
        assert_eq!((recent.get("b").unwrap().len(), recent.get("c").unwrap().len()), (big, big));
        assert_eq!(recent.bytes, 2 * big);
    }

    #[test]
    fn chunk_keys_carry_their_time_and_nothing_else_counts_as_one() {
        let key = chunk_key();
        let at = written_at(&key).unwrap();
        assert!(at.abs_diff(unix_millis()) < 5_000, "{key}");
        assert_ne!(chunk_key(), key);
        for other in ["notes.txt", "123-abc.z2gc", "abcdefghijklm-0.z2gc", "1700000000000-0.zst"] {
            assert_eq!(written_at(other), None, "{other}");
        }
    }
}
