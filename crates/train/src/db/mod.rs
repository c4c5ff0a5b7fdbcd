//! The run database: revisions, training counters, evaluations, worker tokens, every accepted
//! game and who contributed it, so a stopped run resumes exactly (same revision, same counters, the
//! games not yet in a published revision learned again) and a status page can show its history.
//!
//! Two backends hold the same schema with the same behaviour, chosen by the database URL
//! ([`DatabaseUrl`]): SQLite in WAL mode (`sqlite://zero2048.db` or a bare path, the embedded
//! default) and PostgreSQL (`postgres://user@host/db`, for runs that outgrow one machine).
//!
//! The `games` table is also the queue between the ingest (the server's upload endpoint, or
//! local MCTS self-play) and the learner: a game is acknowledged once its row is committed, and the
//! learner reads queued rows after its cursor, which is stored with each revision. Games that local
//! n-tuple threads already learned as they played them are stored unqueued (`queued = 0`): kept for
//! the dashboard and exports, never learned twice. Because the cursor is a row id, ids must become
//! visible in order: SQLite has one writer at a time; on PostgreSQL every transaction that stores
//! games first takes one advisory lock, so a reader never sees id `n + 1` committed before id `n`.
//!
//! The schema has a version and numbered migrations per backend, applied in order at open, each in
//! its own transaction: a database of an older build is upgraded, one of a newer build is refused.
//!
//! This module must never turn a value it cannot read into a default: a counter that is not a
//! number, a UUID of the wrong length or an unknown URL scheme is an error naming what was wrong.

mod chunks;
mod postgres;
mod sqlite;

use chunks::{ChunkPlace, DoomedChunk};
pub use chunks::{ChunkTotals, GameRetention, GameShelf, NewChunk, ORPHAN_AGE, Pruned, is_chunk_name};

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use zero2048_search::Strength;

/// Training totals over the whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Games learned from.
    pub games: u64,
    /// Moves (TD updates) learned from.
    pub moves: u64,
    /// Sum of the learned games' scores.
    pub score_sum: u64,
    /// Last published revision (0 = none).
    pub revision: u64,
    /// The id of the last game (in the `games` table) learned into the latest revision.
    pub learned_through: u64,
}

/// A verified game, ready to be stored.
#[derive(Clone, Copy, Debug)]
pub struct NewGame<'a> {
    /// The worker's UUID for it.
    pub uuid: [u8; 16],
    /// For a continuation: its parent's UUID and the branch step.
    pub origin: Option<([u8; 16], u32)>,
    /// The revision that played it.
    pub revision: u64,
    /// Its score (from the replay).
    pub score: u64,
    /// Its moves (from the replay).
    pub moves: u32,
    /// Its largest tile (from the replay).
    pub max_tile: u32,
    /// The record's canonical encoding.
    pub record: &'a [u8],
}

/// A stored game.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredGame {
    /// Row id: the order of arrival.
    pub id: u64,
    /// The worker's UUID for it.
    pub uuid: [u8; 16],
    /// For a continuation: its parent's UUID and the branch step.
    pub origin: Option<([u8; 16], u32)>,
    /// Who sent it.
    pub worker: String,
    /// The revision that played it.
    pub revision: u64,
    /// Its score.
    pub score: u64,
    /// Its moves.
    pub moves: u32,
    /// Its largest tile.
    pub max_tile: u32,
    /// The record's canonical encoding.
    pub record: Vec<u8>,
}

/// The run's totals at one moment, for throughput over time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ThroughputSample {
    /// When (Unix milliseconds).
    pub at: i64,
    /// Games learned, whole run.
    pub games: u64,
    /// Moves learned (TD updates), whole run.
    pub moves: u64,
    /// Games stored (the last game id).
    pub stored: u64,
    /// Games stored but not learned yet.
    pub backlog: u64,
    /// The latest revision.
    pub revision: u64,
}

/// What one worker contributed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkerRow {
    /// The worker (its token's name; `local` for in-process self-play).
    pub name: String,
    /// Games accepted from it.
    pub games: u64,
    /// Moves in those games.
    pub moves: u64,
    /// Games refused.
    pub rejected: u64,
    /// The last reason a game was refused.
    pub last_rejection: Option<String>,
    /// First time seen (Unix seconds).
    pub first_seen: i64,
    /// Last time seen (Unix seconds).
    pub last_seen: i64,
    /// Games quarantined (their token was revoked with `--purge-games`).
    pub quarantined: u64,
    /// The token it authenticates with (several machines may share one).
    pub token: String,
    /// The machine, when the worker names one.
    pub machine: Option<String>,
    /// When its token was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// Seen in the last [`ACTIVE_WORKER_SECONDS`] with a token not revoked.
    pub active: bool,
}

/// A published revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RevisionRow {
    /// The revision.
    pub revision: u64,
    /// Its file name.
    pub file: String,
    /// Its SHA-256.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Games trained when it was published.
    pub games: u64,
    /// Moves trained when it was published.
    pub moves: u64,
    /// When (RFC 3339).
    pub published_at: String,
}

/// An evaluation of a revision on the fixed seeds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvaluationRow {
    /// The revision.
    pub revision: u64,
    /// Search depth (1 = greedy).
    pub depth: u32,
    /// Seed of the evaluation series.
    pub seed: u64,
    /// Games trained when it was evaluated.
    pub games_trained: u64,
    /// The result.
    pub strength: Strength,
}

/// A database error, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite failed.
    #[error("run database: {action}: {source}")]
    Sql {
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        source: rusqlite::Error,
    },
    /// PostgreSQL failed.
    #[error("run database (PostgreSQL): {action}: {source}")]
    Postgres {
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        source: ::postgres::Error,
    },
    /// A database URL that names no backend this build has.
    #[error(
        "database URL {0:?} is not understood: use sqlite://PATH (or a plain file path) or postgres://USER@HOST[:PORT]/DATABASE"
    )]
    BadUrl(String),
    /// A stored value that is not what its column promises.
    #[error("run database: {what} holds {value:?}, which is not {expected}")]
    Corrupt {
        /// Where.
        what: String,
        /// The value found.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// The learner's PostgreSQL connection was lost and, by the time it was back, another
    /// learner held the run.
    #[error(
        "run database (PostgreSQL): the connection was lost and another learner took this run meanwhile; this one stops"
    )]
    LostLearnerLock,
    /// A game chunk that is not what its rows say.
    #[error("game chunk {key}: {message}")]
    Chunk {
        /// The chunk's object name.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The games' object storage failed.
    #[error("{action}: {source}")]
    Storage {
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        source: zero2048_storage::StorageError,
    },
    /// A game whose record is in a chunk, read through a connection opened without the games'
    /// storage.
    #[error("game {id}'s record is in chunk {key}, and this database was opened without the games' storage")]
    NoGameShelf {
        /// The game.
        id: u64,
        /// Its chunk.
        key: String,
    },
    /// A database written by a newer build.
    #[error(
        "run database: schema version {found} is newer than this build's {supported}; use a newer zero2048"
    )]
    TooNew {
        /// The database's version.
        found: u32,
        /// This build's.
        supported: u32,
    },
}

/// The `database:` section of the configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH`, a plain path, or `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`
    /// [default: none: SQLite in the `--db` file].
    pub url: Option<String>,
}

/// Where the run database lives.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, as a libpq-style URL (which may hold a password: never print it,
    /// print the [`Display`](fmt::Display) form, which hides it).
    Postgres(String),
}

impl DatabaseUrl {
    /// Reads `sqlite://PATH`, `postgres://…` / `postgresql://…`, or a plain path (SQLite).
    pub fn parse(text: &str) -> Result<DatabaseUrl, DbError> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(DbError::BadUrl(text.to_string()));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            // Checked here so a typo fails at start-up, not at the first query.
            text.parse::<::postgres::Config>().map_err(|_| DbError::BadUrl(redact_password(text)))?;
            return Ok(DatabaseUrl::Postgres(text.to_string()));
        }
        if text.is_empty() || text.contains("://") {
            return Err(DbError::BadUrl(redact_password(text)));
        }
        Ok(DatabaseUrl::Sqlite(PathBuf::from(text)))
    }

    /// `SQLite` or `PostgreSQL`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            DatabaseUrl::Sqlite(_) => "SQLite",
            DatabaseUrl::Postgres(_) => "PostgreSQL",
        }
    }

    /// The SQLite file, if that is the backend.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            DatabaseUrl::Sqlite(path) => Some(path),
            DatabaseUrl::Postgres(_) => None,
        }
    }
}

/// `scheme://user:secret@host` → `scheme://user:***@host`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => f.write_str(&redact_password(url)),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

impl From<&Path> for DatabaseUrl {
    fn from(path: &Path) -> Self {
        DatabaseUrl::Sqlite(path.to_path_buf())
    }
}

impl From<PathBuf> for DatabaseUrl {
    fn from(path: PathBuf) -> Self {
        DatabaseUrl::Sqlite(path)
    }
}

impl From<&PathBuf> for DatabaseUrl {
    fn from(path: &PathBuf) -> Self {
        DatabaseUrl::Sqlite(path.clone())
    }
}

impl From<&DatabaseUrl> for DatabaseUrl {
    fn from(url: &DatabaseUrl) -> Self {
        url.clone()
    }
}

/// A worker token as stored: its name, the SHA-256 of the token, and its dates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    /// The worker's name.
    pub name: String,
    /// SHA-256 of the token.
    pub hash: Vec<u8>,
    /// Created (Unix seconds).
    pub created_at: i64,
    /// Revoked (Unix seconds), if it was.
    pub revoked_at: Option<i64>,
}

/// How long a worker may go unseen and still count as active.
pub const ACTIVE_WORKER_SECONDS: i64 = 10 * 60;

/// The token part of a worker name (`token@machine`, or a bare token from before machines were
/// named).
pub fn token_of(worker: &str) -> &str {
    worker.split_once('@').map_or(worker, |(token, _)| token)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn uuid_of(bytes: Vec<u8>, what: &str) -> Result<[u8; 16], DbError> {
    let len = bytes.len();
    bytes.try_into().map_err(|_| DbError::Corrupt {
        what: what.to_string(),
        value: format!("{len} bytes"),
        expected: "a 16-byte UUID",
    })
}

fn counter(key: &str, value: Option<String>) -> Result<u64, DbError> {
    match value {
        None => Ok(0),
        Some(value) => value.parse().map_err(|_| DbError::Corrupt {
            what: format!("counter `{key}`"),
            value,
            expected: "a whole number",
        }),
    }
}

fn strength_of(revision: u64, text: &str) -> Result<Strength, DbError> {
    serde_json::from_str(text).map_err(|_| DbError::Corrupt {
        what: format!("the evaluation of revision {revision}"),
        value: text.chars().take(80).collect(),
        expected: "a strength summary",
    })
}

/// The counters stored with each revision, by their keys in `meta`.
fn counter_entries(counters: &Counters) -> [(&'static str, u64); 5] {
    [
        ("games", counters.games),
        ("moves", counters.moves),
        ("score_sum", counters.score_sum),
        ("revision", counters.revision),
        ("learned_through", counters.learned_through),
    ]
}

enum Backend {
    Sqlite(sqlite::SqliteDb),
    Postgres(Box<postgres::PostgresDb>),
}

/// A stored game as a backend reads it: the record, or where in a chunk it is.
type GameRow = (StoredGame, Option<ChunkPlace>);

/// The open database.
pub struct RunDb {
    backend: Backend,
    /// Where game records go and are read from; `None`: in the rows themselves (databases
    /// opened for tokens or tests; rows that name a chunk are then an error to read).
    games: Option<GameShelf>,
}

macro_rules! each {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            Backend::Sqlite(db) => db.$method($($arg),*),
            Backend::Postgres(db) => db.$method($($arg),*),
        }
    };
}

macro_rules! each_mut {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &mut $self.backend {
            Backend::Sqlite(db) => db.$method($($arg),*),
            Backend::Postgres(db) => db.$method($($arg),*),
        }
    };
}

impl RunDb {
    /// Opens (creating and migrating if needed) the database at `url`: a path or
    /// [`DatabaseUrl`].
    pub fn open(url: impl Into<DatabaseUrl>) -> Result<RunDb, DbError> {
        let backend = match url.into() {
            DatabaseUrl::Sqlite(path) => Backend::Sqlite(sqlite::SqliteDb::open(&path)?),
            DatabaseUrl::Postgres(url) => Backend::Postgres(Box::new(postgres::PostgresDb::open(&url)?)),
        };
        Ok(RunDb { backend, games: None })
    }

    /// Stores game records in chunks on `shelf` from now on, and reads them from there.
    pub fn with_games(mut self, shelf: GameShelf) -> RunDb {
        self.games = Some(shelf);
        self
    }

    /// Where game records are kept, if not in the rows.
    pub fn game_shelf(&self) -> Option<&GameShelf> {
        self.games.as_ref()
    }

    /// Fills in the records kept in chunks.
    fn with_records(&self, rows: Vec<GameRow>) -> Result<Vec<StoredGame>, DbError> {
        rows.into_iter()
            .map(|(mut game, place)| {
                if let Some(place) = place {
                    let shelf = self
                        .games
                        .as_ref()
                        .ok_or_else(|| DbError::NoGameShelf { id: game.id, key: place.key.clone() })?;
                    game.record = shelf.record(&place, &game.uuid)?;
                }
                Ok(game)
            })
            .collect()
    }

    /// Takes the run's learner lock for as long as this connection is open: `false` when another
    /// process holds it. On SQLite the run's lock file beside the database does this, so this is
    /// always `true`; on PostgreSQL it is a session advisory lock, which the server drops if the
    /// holder dies.
    pub fn lock_run(&self) -> Result<bool, DbError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(true),
            Backend::Postgres(db) => db.try_lock_run(),
        }
    }

    /// A stored setting (the network shape, say).
    pub fn setting(&self, key: &str) -> Result<Option<String>, DbError> {
        each!(self.meta(key))
    }

    /// Stores a setting.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), DbError> {
        each!(self.set_meta(key, value))
    }

    /// The totals, zero for a new run; a value that is not a number is an error, never a zero.
    pub fn counters(&self) -> Result<Counters, DbError> {
        let get = |key: &str| -> Result<u64, DbError> { counter(key, self.setting(key)?) };
        Ok(Counters {
            games: get("games")?,
            moves: get("moves")?,
            score_sum: get("score_sum")?,
            revision: get("revision")?,
            learned_through: get("learned_through")?,
        })
    }

    /// Records a published revision and the totals at that point, in one transaction.
    pub fn record_revision(&mut self, row: &RevisionRow, counters: &Counters) -> Result<(), DbError> {
        each_mut!(self.record_revision(row, counters))
    }

    /// Records an evaluation.
    pub fn record_evaluation(&self, row: &EvaluationRow) -> Result<(), DbError> {
        each!(self.record_evaluation(row))
    }

    /// Every revision, oldest first.
    pub fn revisions(&self) -> Result<Vec<RevisionRow>, DbError> {
        each!(self.revisions())
    }

    /// Every evaluation, by revision then depth.
    pub fn evaluations(&self) -> Result<Vec<EvaluationRow>, DbError> {
        each!(self.evaluations())
    }

    /// Stores games from `worker` in one transaction and counts `rejected` refusals against it.
    /// Returns, per game, whether it was new (`false`: its UUID was already stored, which counts
    /// as success for an idempotent retry). Once this returns, every game is durable.
    /// `queued`: the learner is still to learn them (`false` for games learned as they were
    /// played).
    pub fn insert_games(
        &mut self,
        worker: &str,
        games: &[NewGame<'_>],
        rejected: u64,
        last_rejection: Option<&str>,
        queued: bool,
    ) -> Result<Vec<bool>, DbError> {
        // The chunk first, whole; then the rows that name it. Killed in between, the chunk is an
        // orphan and nothing was acknowledged.
        let chunk = match &self.games {
            Some(shelf) if !games.is_empty() => Some(shelf.write(games)?),
            _ => None,
        };
        each_mut!(self.insert_games(worker, games, rejected, last_rejection, queued, chunk.as_ref()))
    }

    /// [`insert_games`](Self::insert_games) with the records already written as `chunk` (by
    /// [`GameShelf::write`], in the same order), so that write need not hold this connection.
    pub fn insert_games_in_chunk(
        &mut self,
        worker: &str,
        games: &[NewGame<'_>],
        rejected: u64,
        last_rejection: Option<&str>,
        queued: bool,
        chunk: &NewChunk,
    ) -> Result<Vec<bool>, DbError> {
        each_mut!(self.insert_games(worker, games, rejected, last_rejection, queued, Some(chunk)))
    }

    /// Which of these UUIDs are already stored.
    pub fn known_games(&self, uuids: &[[u8; 16]]) -> Result<Vec<bool>, DbError> {
        each!(self.known_games(uuids))
    }

    /// Up to `limit` games queued for the learner after row `after`, oldest first (quarantined
    /// ones and games learned as they were played are skipped).
    pub fn games_after(&self, after: u64, limit: usize) -> Result<Vec<StoredGame>, DbError> {
        self.with_records(each!(self.games_after(after, limit))?)
    }

    /// The games played by one revision, best first (for the game viewer and exports).
    pub fn games_of_revision(&self, revision: u64, limit: usize) -> Result<Vec<StoredGame>, DbError> {
        self.with_records(each!(self.games_of_revision(revision, limit))?)
    }

    /// A stored game by its UUID (a continuation's parent), if held and not quarantined.
    pub fn game_by_uuid(&self, uuid: &[u8; 16]) -> Result<Option<StoredGame>, DbError> {
        Ok(self.with_records(each!(self.game_by_uuid(uuid))?.into_iter().collect())?.pop())
    }

    /// The id of the last game queued for the learner (0 when none).
    pub fn last_queued_id(&self) -> Result<u64, DbError> {
        each!(self.last_queued_id())
    }

    /// The id of the last stored game (0 when none).
    pub fn last_game_id(&self) -> Result<u64, DbError> {
        each!(self.last_game_id())
    }

    /// Number of stored games.
    pub fn game_count(&self) -> Result<u64, DbError> {
        each!(self.game_count())
    }

    /// Marks every game sent with `token` (from any machine) as quarantined: the learner skips
    /// them from now on. Returns how many games were marked.
    pub fn quarantine_worker(&self, token: &str) -> Result<u64, DbError> {
        each!(self.quarantine_worker(token))
    }

    /// Every worker that sent games, most recently seen first.
    pub fn workers(&self) -> Result<Vec<WorkerRow>, DbError> {
        each!(self.workers())
    }

    /// Counts refusals against a worker that sent no acceptable game.
    pub fn record_rejections(
        &self,
        worker: &str,
        rejected: u64,
        last_rejection: &str,
    ) -> Result<(), DbError> {
        each!(self.record_rejections(worker, rejected, last_rejection))
    }

    /// Stores a throughput sample.
    pub fn record_throughput(&self, sample: &ThroughputSample) -> Result<(), DbError> {
        each!(self.record_throughput(sample))
    }

    /// The last `limit` throughput samples, oldest first.
    pub fn throughput(&self, limit: usize) -> Result<Vec<ThroughputSample>, DbError> {
        each!(self.throughput(limit))
    }

    /// Up to `limit` games after row `after`, oldest first, of one revision or of all (exports).
    pub fn games_page(
        &self,
        revision: Option<u64>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredGame>, DbError> {
        self.with_records(each!(self.games_page(revision, after, limit))?)
    }

    /// The revisions that have stored games, newest first.
    pub fn revisions_with_games(&self) -> Result<Vec<u64>, DbError> {
        each!(self.revisions_with_games())
    }

    /// Applies the shelf's [`GameRetention`]: deletes the chunks (and their games' rows) whose
    /// games are all learned and older than the newest `keep_revisions` revisions up to
    /// `latest_revision`, except one in `keep_one_in`. Rows go first, then the object, so a row
    /// never names a deleted chunk.
    pub fn prune_games(&mut self, latest_revision: u64, learned_through: u64) -> Result<Pruned, DbError> {
        let Some(shelf) = &self.games else { return Ok(Pruned::default()) };
        let retention = shelf.retention();
        if retention.keep_revisions == 0 {
            return Ok(Pruned::default());
        }
        let oldest_kept = latest_revision.saturating_sub(retention.keep_revisions - 1);
        let mut pruned = Pruned::default();
        loop {
            let doomed: Vec<DoomedChunk> =
                each!(self.doomed_chunks(oldest_kept, learned_through, retention.keep_one_in, 500))?;
            if doomed.is_empty() {
                return Ok(pruned);
            }
            for chunk in doomed {
                let (games, bytes) = each_mut!(self.drop_chunk(chunk.id))?;
                shelf.delete(&chunk)?;
                pruned.chunks += 1;
                pruned.games += games;
                pruned.bytes += bytes;
            }
        }
    }

    /// Deletes the chunk objects no row names that are older than `min_age` (left by a process
    /// killed between writing a chunk and committing its rows; [`ORPHAN_AGE`] is safely longer
    /// than any write in progress takes). Returns how many.
    pub fn sweep_orphan_chunks(&self, min_age: std::time::Duration) -> Result<u64, DbError> {
        let Some(shelf) = &self.games else { return Ok(0) };
        let keys = shelf.old_keys(min_age)?;
        let known: Vec<bool> = each!(self.chunks_known(&keys))?;
        let mut swept = 0;
        for (key, known) in keys.iter().zip(known) {
            if !known {
                shelf.delete_orphan(key)?;
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// Moves the chunks kept locally while the bucket was down into the bucket: copy, then the
    /// row, then the local file (a reader finds the chunk at every moment). Returns how many
    /// moved; nothing when no bucket is configured.
    pub fn move_chunks_to_bucket(&self) -> Result<u64, DbError> {
        let Some(shelf) = self.games.as_ref().filter(|shelf| shelf.in_bucket()) else { return Ok(0) };
        let mut moved = 0;
        loop {
            let local: Vec<String> = each!(self.local_chunks(100))?;
            if local.is_empty() {
                return Ok(moved);
            }
            for key in local {
                shelf.copy_to_bucket(&key)?;
                each!(self.mark_in_bucket(&key))?;
                shelf.delete_local(&key)?;
                moved += 1;
            }
        }
    }

    /// The database's size in bytes (SQLite: its pages, the write-ahead log included;
    /// PostgreSQL: the whole database, indexes included).
    pub fn size_bytes(&self) -> Result<u64, DbError> {
        each!(self.size_bytes())
    }

    /// The chunks stored and their bytes.
    pub fn chunk_totals(&self) -> Result<ChunkTotals, DbError> {
        each!(self.chunk_totals())
    }

    /// The token named `name`, if there is one (revoked or not).
    pub fn token_by_name(&self, name: &str) -> Result<Option<TokenRow>, DbError> {
        each!(self.token_by_name(name))
    }

    /// The token whose SHA-256 is `hash`, if there is one.
    pub fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRow>, DbError> {
        each!(self.token_by_hash(hash))
    }

    /// Stores a new token, replacing a revoked one of the same name in the same transaction.
    /// Returns `false` (and stores nothing) when `name` has a token that is not revoked.
    pub fn issue_token(&mut self, name: &str, hash: &[u8]) -> Result<bool, DbError> {
        each_mut!(self.issue_token(name, hash))
    }

    /// Every token, oldest first.
    pub fn tokens(&self) -> Result<Vec<TokenRow>, DbError> {
        each!(self.tokens())
    }

    /// Revokes `name`'s token (keeping the first revocation's time); `false` when there is none.
    pub fn revoke_token(&self, name: &str) -> Result<bool, DbError> {
        each!(self.revoke_token(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend_and_never_print_a_password() {
        assert_eq!(DatabaseUrl::parse("zero2048.db").unwrap(), DatabaseUrl::Sqlite("zero2048.db".into()));
        assert_eq!(
            DatabaseUrl::parse("sqlite:///tmp/run.db").unwrap(),
            DatabaseUrl::Sqlite("/tmp/run.db".into())
        );
        let pg = DatabaseUrl::parse("postgres://trainer:hunter2@db.example:5433/run").unwrap();
        assert!(matches!(pg, DatabaseUrl::Postgres(_)));
        assert_eq!(pg.to_string(), "postgres://trainer:***@db.example:5433/run");
        assert!(!format!("{pg:?}").contains("hunter2"));
        for bad in ["mysql://x/y", "sqlite://", "", "postgres://a:hunter2@[bad"] {
            let error = DatabaseUrl::parse(bad).unwrap_err().to_string();
            assert!(error.contains("not understood") && !error.contains("hunter2"), "{bad}: {error}");
        }
    }
}
