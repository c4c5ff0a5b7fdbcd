//! The SQLite backend: one file in WAL mode, `PRAGMA user_version` as the schema version.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    ACTIVE_WORKER_SECONDS, ChunkPlace, ChunkTotals, Counters, DbError, DoomedChunk, EvaluationRow, GameRow,
    NewChunk, NewGame, RevisionRow, StoredGame, ThroughputSample, TokenRow, WorkerRow, counter_entries,
    strength_of, token_of, unix_now,
};

fn ctx(action: &'static str) -> impl FnOnce(rusqlite::Error) -> DbError {
    move |source| DbError::Sql { action, source }
}

/// The schema's migrations: migration `i` takes version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the tables of the first builds (`IF NOT EXISTS`: those databases had no version).
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS revisions (
         revision INTEGER PRIMARY KEY, file TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
         games INTEGER NOT NULL, moves INTEGER NOT NULL, published_at TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS evaluations (
         revision INTEGER NOT NULL, depth INTEGER NOT NULL, seed INTEGER NOT NULL,
         games_trained INTEGER NOT NULL, strength TEXT NOT NULL, PRIMARY KEY (revision, depth));
     CREATE TABLE IF NOT EXISTS games (
         id INTEGER PRIMARY KEY, uuid BLOB NOT NULL UNIQUE, worker TEXT NOT NULL,
         revision INTEGER NOT NULL, score INTEGER NOT NULL, moves INTEGER NOT NULL,
         max_tile INTEGER NOT NULL, record BLOB NOT NULL, received_at INTEGER NOT NULL,
         quarantined INTEGER NOT NULL DEFAULT 0);
     CREATE INDEX IF NOT EXISTS games_by_revision ON games (revision, score);
     CREATE INDEX IF NOT EXISTS games_by_worker ON games (worker);
     CREATE TABLE IF NOT EXISTS throughput (
         at INTEGER NOT NULL, games INTEGER NOT NULL, moves INTEGER NOT NULL,
         stored INTEGER NOT NULL, backlog INTEGER NOT NULL, revision INTEGER NOT NULL);
     CREATE INDEX IF NOT EXISTS throughput_by_time ON throughput (at);
     CREATE TABLE IF NOT EXISTS workers (
         name TEXT PRIMARY KEY, games INTEGER NOT NULL DEFAULT 0, moves INTEGER NOT NULL DEFAULT 0,
         rejected INTEGER NOT NULL DEFAULT 0, last_rejection TEXT,
         first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL);",
    // 2: continuations (the restart strategy) and games learned as they were played.
    "ALTER TABLE games ADD COLUMN parent BLOB;
     ALTER TABLE games ADD COLUMN branch_step INTEGER;
     ALTER TABLE games ADD COLUMN queued INTEGER NOT NULL DEFAULT 1;
     CREATE INDEX games_queue ON games (id) WHERE queued = 1 AND quarantined = 0;",
    // 3: worker tokens belong to the schema (the server made this table on its own before), and
    // a worker is a token on a machine: `token@machine` in `workers.name` and `games.worker`.
    "CREATE TABLE IF NOT EXISTS tokens (
         name TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE,
         created_at INTEGER NOT NULL, revoked_at INTEGER);",
    // 4: records out of the database, in chunk objects: a game row names its chunk and its entry
    // there (its `record` is then empty). A chunk's games have consecutive ids, `first_game` to
    // `last_game`, so retention deletes them by id range without an index on `chunk`.
    "CREATE TABLE chunks (
         id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, in_bucket INTEGER NOT NULL,
         bytes INTEGER NOT NULL, newest_revision INTEGER NOT NULL, queued INTEGER NOT NULL,
         first_game INTEGER NOT NULL DEFAULT 0, last_game INTEGER NOT NULL DEFAULT 0,
         created_at INTEGER NOT NULL);
     ALTER TABLE games ADD COLUMN chunk INTEGER;
     ALTER TABLE games ADD COLUMN chunk_entry INTEGER;",
    // 5: games by worker are looked up only for quarantined ones (the workers table's count);
    // an index of every game's worker cost more bytes per game than the rest of its row.
    "DROP INDEX IF EXISTS games_by_worker;
     CREATE INDEX games_quarantined_by_worker ON games (worker) WHERE quarantined = 1;
     ALTER TABLE games DROP COLUMN received_at;",
];

/// A game row's columns, with its chunk's (`games g LEFT JOIN chunks c`).
const GAME_COLUMNS: &str =
    "g.id, g.uuid, g.worker, g.revision, g.score, g.moves, g.max_tile, g.record, g.parent,
     g.branch_step, c.key, c.in_bucket, g.chunk_entry FROM games g LEFT JOIN chunks c ON c.id = g.chunk";

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Applies the missing migrations, one transaction each. Each takes the write lock first and
/// reads the version inside it, so processes opening a new database at once (a learner and its
/// API servers) migrate it once, in turn.
fn migrate(conn: &mut Connection) -> Result<(), DbError> {
    let current: u32 =
        conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(ctx("read the schema version"))?;
    if current == SCHEMA_VERSION {
        return Ok(());
    }
    loop {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(ctx("begin a migration"))?;
        let found: u32 =
            tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(ctx("read the schema version"))?;
        if found > SCHEMA_VERSION {
            return Err(DbError::TooNew { found, supported: SCHEMA_VERSION });
        }
        let Some(migration) = MIGRATIONS.get(found as usize) else {
            return Ok(());
        };
        tx.execute_batch(migration).map_err(ctx("migrate the schema"))?;
        tx.pragma_update(None, "user_version", found + 1).map_err(ctx("record the schema version"))?;
        tx.commit().map_err(ctx("commit a migration"))?;
    }
}

/// The open SQLite database.
pub(super) struct SqliteDb {
    conn: Connection,
}

impl SqliteDb {
    pub(super) fn open(path: &Path) -> Result<SqliteDb, DbError> {
        let mut conn = Connection::open(path).map_err(ctx("open"))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(ctx("enable WAL"))?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(ctx("set synchronous"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(ctx("set busy timeout"))?;
        migrate(&mut conn)?;
        Ok(SqliteDb { conn })
    }

    pub(super) fn meta(&self, key: &str) -> Result<Option<String>, DbError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(ctx("read meta"))
    }

    pub(super) fn set_meta(&self, key: &str, value: &str) -> Result<(), DbError> {
        self.conn
            .execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", params![key, value])
            .map(|_| ())
            .map_err(ctx("write meta"))
    }

    pub(super) fn record_revision(&mut self, row: &RevisionRow, counters: &Counters) -> Result<(), DbError> {
        let tx = self.conn.transaction().map_err(ctx("begin"))?;
        tx.execute(
            "INSERT OR REPLACE INTO revisions (revision, file, sha256, size, games, moves, published_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                row.revision as i64,
                row.file,
                row.sha256,
                row.size as i64,
                row.games as i64,
                row.moves as i64,
                row.published_at
            ],
        )
        .map_err(ctx("record a revision"))?;
        for (key, value) in counter_entries(counters) {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value.to_string()],
            )
            .map_err(ctx("record counters"))?;
        }
        tx.commit().map_err(ctx("commit a revision"))
    }

    pub(super) fn record_evaluation(&self, row: &EvaluationRow) -> Result<(), DbError> {
        let strength = serde_json::to_string(&row.strength).unwrap_or_default();
        self.conn
            .execute(
                "INSERT OR REPLACE INTO evaluations (revision, depth, seed, games_trained, strength) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![row.revision as i64, row.depth, row.seed as i64, row.games_trained as i64, strength],
            )
            .map(|_| ())
            .map_err(ctx("record an evaluation"))
    }

    pub(super) fn revisions(&self) -> Result<Vec<RevisionRow>, DbError> {
        let mut statement = self
            .conn
            .prepare("SELECT revision, file, sha256, size, games, moves, published_at FROM revisions ORDER BY revision")
            .map_err(ctx("list revisions"))?;
        statement
            .query_map([], |r| {
                Ok(RevisionRow {
                    revision: r.get::<_, i64>(0)? as u64,
                    file: r.get(1)?,
                    sha256: r.get(2)?,
                    size: r.get::<_, i64>(3)? as u64,
                    games: r.get::<_, i64>(4)? as u64,
                    moves: r.get::<_, i64>(5)? as u64,
                    published_at: r.get(6)?,
                })
            })
            .map_err(ctx("list revisions"))?
            .collect::<Result<_, _>>()
            .map_err(ctx("list revisions"))
    }

    pub(super) fn evaluations(&self) -> Result<Vec<EvaluationRow>, DbError> {
        let mut statement = self
            .conn
            .prepare("SELECT revision, depth, seed, games_trained, strength FROM evaluations ORDER BY revision, depth")
            .map_err(ctx("list evaluations"))?;
        let rows = statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, u32>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)? as u64,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(ctx("list evaluations"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(ctx("list evaluations"))?;
        rows.into_iter()
            .map(|(revision, depth, seed, games_trained, strength)| {
                Ok(EvaluationRow {
                    revision,
                    depth,
                    seed: seed as u64,
                    games_trained,
                    strength: strength_of(revision, &strength)?,
                })
            })
            .collect()
    }

    pub(super) fn insert_games(
        &mut self,
        worker: &str,
        games: &[NewGame<'_>],
        rejected: u64,
        last_rejection: Option<&str>,
        queued: bool,
        chunk: Option<&NewChunk>,
    ) -> Result<Vec<bool>, DbError> {
        let now = unix_now();
        let tx = self.conn.transaction().map_err(ctx("begin storing games"))?;
        let chunk_id = match chunk {
            None => None,
            Some(chunk) => {
                tx.execute(
                    "INSERT INTO chunks (key, in_bucket, bytes, newest_revision, queued, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        chunk.key,
                        chunk.in_bucket,
                        chunk.bytes as i64,
                        chunk.newest_revision as i64,
                        queued,
                        now
                    ],
                )
                .map_err(ctx("record a game chunk"))?;
                Some(tx.last_insert_rowid())
            }
        };
        let mut fresh = Vec::with_capacity(games.len());
        let (mut new_games, mut new_moves) = (0i64, 0i64);
        let mut ids = (i64::MAX, 0i64);
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO games (uuid, worker, revision, score, moves, max_tile, record,
                         parent, branch_step, queued, chunk, chunk_entry)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(ctx("store games"))?;
            for (entry, game) in games.iter().enumerate() {
                // A record in a chunk is not kept in its row too.
                let record: &[u8] = if chunk_id.is_some() { &[] } else { game.record };
                let changed = insert
                    .execute(params![
                        &game.uuid[..],
                        worker,
                        game.revision as i64,
                        game.score as i64,
                        game.moves,
                        game.max_tile,
                        record,
                        game.origin.map(|(parent, _)| parent.to_vec()),
                        game.origin.map(|(_, step)| step),
                        queued,
                        chunk_id,
                        chunk_id.map(|_| entry as i64)
                    ])
                    .map_err(ctx("store a game"))?;
                fresh.push(changed == 1);
                if changed == 1 {
                    new_games += 1;
                    new_moves += game.moves as i64;
                    let id = tx.last_insert_rowid();
                    ids = (ids.0.min(id), ids.1.max(id));
                }
            }
        }
        if let Some(chunk_id) = chunk_id {
            if new_games == 0 {
                // Every game was a duplicate: no row names the chunk, which the orphan sweep removes.
                tx.execute("DELETE FROM chunks WHERE id = ?1", [chunk_id])
                    .map_err(ctx("drop an unused chunk"))?;
            } else {
                tx.execute(
                    "UPDATE chunks SET first_game = ?2, last_game = ?3 WHERE id = ?1",
                    params![chunk_id, ids.0, ids.1],
                )
                .map_err(ctx("record a game chunk"))?;
            }
        }
        tx.execute(
            "INSERT INTO workers (name, games, moves, rejected, last_rejection, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT (name) DO UPDATE SET games = games + ?2, moves = moves + ?3, rejected = rejected + ?4,
                 last_rejection = coalesce(?5, last_rejection), last_seen = ?6",
            params![worker, new_games, new_moves, rejected as i64, last_rejection, now],
        )
        .map_err(ctx("update worker totals"))?;
        tx.commit().map_err(ctx("commit games"))?;
        Ok(fresh)
    }

    pub(super) fn known_games(&self, uuids: &[[u8; 16]]) -> Result<Vec<bool>, DbError> {
        let mut query =
            self.conn.prepare_cached("SELECT 1 FROM games WHERE uuid = ?1").map_err(ctx("look up games"))?;
        uuids.iter().map(|u| query.exists([&u[..]]).map_err(ctx("look up a game"))).collect()
    }

    pub(super) fn games_after(&self, after: u64, limit: usize) -> Result<Vec<GameRow>, DbError> {
        let mut query = self
            .conn
            .prepare_cached(&format!(
                "SELECT {GAME_COLUMNS}
                     WHERE g.id > ?1 AND g.queued = 1 AND g.quarantined = 0 ORDER BY g.id LIMIT ?2"
            ))
            .map_err(ctx("read games"))?;
        query
            .query_map(params![after as i64, limit as i64], stored_game)
            .map_err(ctx("read games"))?
            .collect::<Result<_, _>>()
            .map_err(ctx("read games"))
    }

    pub(super) fn games_of_revision(&self, revision: u64, limit: usize) -> Result<Vec<GameRow>, DbError> {
        let mut query = self
            .conn
            .prepare_cached(&format!(
                "SELECT {GAME_COLUMNS} WHERE g.revision = ?1 ORDER BY g.score DESC, g.id LIMIT ?2"
            ))
            .map_err(ctx("read games"))?;
        query
            .query_map(params![revision as i64, limit as i64], stored_game)
            .map_err(ctx("read games"))?
            .collect::<Result<_, _>>()
            .map_err(ctx("read games"))
    }

    pub(super) fn game_by_uuid(&self, uuid: &[u8; 16]) -> Result<Option<GameRow>, DbError> {
        let mut query = self
            .conn
            .prepare_cached(&format!("SELECT {GAME_COLUMNS} WHERE g.uuid = ?1 AND g.quarantined = 0"))
            .map_err(ctx("read a game"))?;
        query.query_row([&uuid[..]], stored_game).optional().map_err(ctx("read a game"))
    }

    pub(super) fn last_queued_id(&self) -> Result<u64, DbError> {
        self.conn
            .query_row(
                "SELECT coalesce(max(id), 0) FROM games WHERE queued = 1 AND quarantined = 0",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|id| id as u64)
            .map_err(ctx("count games"))
    }

    pub(super) fn last_game_id(&self) -> Result<u64, DbError> {
        self.conn
            .query_row("SELECT coalesce(max(id), 0) FROM games", [], |r| r.get::<_, i64>(0))
            .map(|id| id as u64)
            .map_err(ctx("count games"))
    }

    pub(super) fn game_count(&self) -> Result<u64, DbError> {
        self.conn
            .query_row("SELECT count(*) FROM games", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(ctx("count games"))
    }

    pub(super) fn quarantine_worker(&self, token: &str) -> Result<u64, DbError> {
        self.conn
            .execute(
                "UPDATE games SET quarantined = 1
                 WHERE (worker = ?1 OR substr(worker, 1, length(?1) + 1) = ?1 || '@') AND quarantined = 0",
                [token],
            )
            .map(|n| n as u64)
            .map_err(ctx("quarantine games"))
    }

    pub(super) fn workers(&self) -> Result<Vec<WorkerRow>, DbError> {
        let mut query = self
            .conn
            .prepare_cached(
                "SELECT w.name, w.games, w.moves, w.rejected, w.last_rejection, w.first_seen, w.last_seen,
                        (SELECT count(*) FROM games g WHERE g.worker = w.name AND g.quarantined = 1),
                        t.revoked_at
                 FROM workers w LEFT JOIN tokens t ON t.name =
                     CASE WHEN instr(w.name, '@') > 0 THEN substr(w.name, 1, instr(w.name, '@') - 1) ELSE w.name END
                 ORDER BY w.last_seen DESC, w.name",
            )
            .map_err(ctx("list workers"))?;
        let now = unix_now();
        query
            .query_map([], |r| {
                let name: String = r.get(0)?;
                let last_seen: i64 = r.get(6)?;
                let revoked_at: Option<i64> = r.get(8)?;
                Ok(WorkerRow {
                    token: token_of(&name).to_string(),
                    machine: name.split_once('@').map(|(_, machine)| machine.to_string()),
                    games: r.get::<_, i64>(1)? as u64,
                    moves: r.get::<_, i64>(2)? as u64,
                    rejected: r.get::<_, i64>(3)? as u64,
                    last_rejection: r.get(4)?,
                    first_seen: r.get(5)?,
                    last_seen,
                    quarantined: r.get::<_, i64>(7)? as u64,
                    active: revoked_at.is_none() && now - last_seen <= ACTIVE_WORKER_SECONDS,
                    revoked_at,
                    name,
                })
            })
            .map_err(ctx("list workers"))?
            .collect::<Result<_, _>>()
            .map_err(ctx("list workers"))
    }

    pub(super) fn record_rejections(
        &self,
        worker: &str,
        rejected: u64,
        last_rejection: &str,
    ) -> Result<(), DbError> {
        let now = unix_now();
        self.conn
            .execute(
                "INSERT INTO workers (name, rejected, last_rejection, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (name) DO UPDATE SET rejected = rejected + ?2, last_rejection = ?3, last_seen = ?4",
                params![worker, rejected as i64, last_rejection, now],
            )
            .map(|_| ())
            .map_err(ctx("record rejections"))
    }

    pub(super) fn record_throughput(&self, sample: &ThroughputSample) -> Result<(), DbError> {
        self.conn
            .execute(
                "INSERT INTO throughput (at, games, moves, stored, backlog, revision) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    sample.at,
                    sample.games as i64,
                    sample.moves as i64,
                    sample.stored as i64,
                    sample.backlog as i64,
                    sample.revision as i64
                ],
            )
            .map(|_| ())
            .map_err(ctx("record throughput"))
    }

    pub(super) fn throughput(&self, limit: usize) -> Result<Vec<ThroughputSample>, DbError> {
        let mut query = self
            .conn
            .prepare_cached(
                "SELECT at, games, moves, stored, backlog, revision FROM
                 (SELECT * FROM throughput ORDER BY at DESC LIMIT ?1) ORDER BY at",
            )
            .map_err(ctx("read throughput"))?;
        query
            .query_map([limit as i64], |r| {
                Ok(ThroughputSample {
                    at: r.get(0)?,
                    games: r.get::<_, i64>(1)? as u64,
                    moves: r.get::<_, i64>(2)? as u64,
                    stored: r.get::<_, i64>(3)? as u64,
                    backlog: r.get::<_, i64>(4)? as u64,
                    revision: r.get::<_, i64>(5)? as u64,
                })
            })
            .map_err(ctx("read throughput"))?
            .collect::<Result<_, _>>()
            .map_err(ctx("read throughput"))
    }

    pub(super) fn games_page(
        &self,
        revision: Option<u64>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<GameRow>, DbError> {
        let mut query = self
            .conn
            .prepare_cached(&format!(
                "SELECT {GAME_COLUMNS}
                     WHERE g.id > ?1 AND (?2 IS NULL OR g.revision = ?2) ORDER BY g.id LIMIT ?3"
            ))
            .map_err(ctx("read games"))?;
        query
            .query_map(params![after as i64, revision.map(|r| r as i64), limit as i64], stored_game)
            .map_err(ctx("read games"))?
            .collect::<Result<_, _>>()
            .map_err(ctx("read games"))
    }

    pub(super) fn revisions_with_games(&self) -> Result<Vec<u64>, DbError> {
        let mut query = self
            .conn
            .prepare_cached("SELECT DISTINCT revision FROM games ORDER BY revision DESC")
            .map_err(ctx("list revisions with games"))?;
        query
            .query_map([], |r| r.get::<_, i64>(0).map(|v| v as u64))
            .map_err(ctx("list revisions with games"))?
            .collect::<Result<_, _>>()
            .map_err(ctx("list revisions with games"))
    }

    pub(super) fn doomed_chunks(
        &self,
        oldest_kept: u64,
        learned_through: u64,
        keep_one_in: u64,
        limit: usize,
    ) -> Result<Vec<DoomedChunk>, DbError> {
        let mut query = self
            .conn
            .prepare_cached(
                "SELECT id, key, in_bucket FROM chunks
                 WHERE newest_revision < ?1 AND (queued = 0 OR last_game <= ?2) AND (?3 = 0 OR id % ?3 != 0)
                 ORDER BY id LIMIT ?4",
            )
            .map_err(ctx("find chunks to prune"))?;
        query
            .query_map(
                params![oldest_kept as i64, learned_through as i64, keep_one_in as i64, limit as i64],
                |r| Ok(DoomedChunk { id: r.get::<_, i64>(0)? as u64, key: r.get(1)?, in_bucket: r.get(2)? }),
            )
            .map_err(ctx("find chunks to prune"))?
            .collect::<Result<_, _>>()
            .map_err(ctx("find chunks to prune"))
    }

    /// Deletes a chunk's row and its games' rows; returns how many games and the chunk's bytes.
    pub(super) fn drop_chunk(&mut self, id: u64) -> Result<(u64, u64), DbError> {
        let tx = self.conn.transaction().map_err(ctx("begin pruning a chunk"))?;
        let (first, last, bytes): (i64, i64, i64) = tx
            .query_row("SELECT first_game, last_game, bytes FROM chunks WHERE id = ?1", [id as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(ctx("read a chunk"))?;
        let games = tx
            .execute(
                "DELETE FROM games WHERE id BETWEEN ?1 AND ?2 AND chunk = ?3",
                params![first, last, id as i64],
            )
            .map_err(ctx("prune games"))?;
        tx.execute("DELETE FROM chunks WHERE id = ?1", [id as i64]).map_err(ctx("prune a chunk"))?;
        tx.commit().map_err(ctx("commit pruning"))?;
        Ok((games as u64, bytes as u64))
    }

    pub(super) fn chunks_known(&self, keys: &[String]) -> Result<Vec<bool>, DbError> {
        let mut query =
            self.conn.prepare_cached("SELECT 1 FROM chunks WHERE key = ?1").map_err(ctx("look up chunks"))?;
        keys.iter().map(|key| query.exists([key]).map_err(ctx("look up a chunk"))).collect()
    }

    pub(super) fn local_chunks(&self, limit: usize) -> Result<Vec<String>, DbError> {
        let mut query = self
            .conn
            .prepare_cached("SELECT key FROM chunks WHERE in_bucket = 0 ORDER BY id LIMIT ?1")
            .map_err(ctx("list local chunks"))?;
        query
            .query_map([limit as i64], |r| r.get(0))
            .map_err(ctx("list local chunks"))?
            .collect::<Result<_, _>>()
            .map_err(ctx("list local chunks"))
    }

    pub(super) fn mark_in_bucket(&self, key: &str) -> Result<(), DbError> {
        self.conn
            .execute("UPDATE chunks SET in_bucket = 1 WHERE key = ?1", [key])
            .map(|_| ())
            .map_err(ctx("record a chunk's move"))
    }

    pub(super) fn size_bytes(&self) -> Result<u64, DbError> {
        self.conn
            .query_row(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(ctx("measure the database"))
    }

    pub(super) fn chunk_totals(&self) -> Result<ChunkTotals, DbError> {
        self.conn
            .query_row("SELECT count(*), coalesce(sum(bytes), 0) FROM chunks", [], |r| {
                Ok(ChunkTotals { chunks: r.get::<_, i64>(0)? as u64, bytes: r.get::<_, i64>(1)? as u64 })
            })
            .map_err(ctx("count chunks"))
    }

    pub(super) fn token_by_name(&self, name: &str) -> Result<Option<TokenRow>, DbError> {
        self.conn
            .query_row(
                "SELECT name, hash, created_at, revoked_at FROM tokens WHERE name = ?1",
                [name],
                token_row,
            )
            .optional()
            .map_err(ctx("look up a token"))
    }

    pub(super) fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRow>, DbError> {
        self.conn
            .prepare_cached("SELECT name, hash, created_at, revoked_at FROM tokens WHERE hash = ?1")
            .map_err(ctx("check a token"))?
            .query_row([hash], token_row)
            .optional()
            .map_err(ctx("check a token"))
    }

    pub(super) fn issue_token(&mut self, name: &str, hash: &[u8]) -> Result<bool, DbError> {
        let tx = self.conn.transaction().map_err(ctx("begin issuing a token"))?;
        let held: Option<Option<i64>> = tx
            .query_row("SELECT revoked_at FROM tokens WHERE name = ?1", [name], |r| r.get(0))
            .optional()
            .map_err(ctx("look up a token"))?;
        if let Some(None) = held {
            return Ok(false);
        }
        tx.execute("DELETE FROM tokens WHERE name = ?1", [name]).map_err(ctx("replace a revoked token"))?;
        tx.execute(
            "INSERT INTO tokens (name, hash, created_at) VALUES (?1, ?2, ?3)",
            params![name, hash, unix_now()],
        )
        .map_err(ctx("store a token"))?;
        tx.commit().map_err(ctx("commit a token"))?;
        Ok(true)
    }

    pub(super) fn tokens(&self) -> Result<Vec<TokenRow>, DbError> {
        self.conn
            .prepare("SELECT name, hash, created_at, revoked_at FROM tokens ORDER BY created_at, name")
            .map_err(ctx("list tokens"))?
            .query_map([], token_row)
            .map_err(ctx("list tokens"))?
            .collect::<Result<_, _>>()
            .map_err(ctx("list tokens"))
    }

    pub(super) fn revoke_token(&self, name: &str) -> Result<bool, DbError> {
        self.conn
            .execute(
                "UPDATE tokens SET revoked_at = coalesce(revoked_at, ?2) WHERE name = ?1",
                params![name, unix_now()],
            )
            .map(|changed| changed > 0)
            .map_err(ctx("revoke a token"))
    }
}

fn uuid_column(r: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<[u8; 16]> {
    let bytes: Vec<u8> = r.get(column)?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Blob,
            format!("a game UUID of {len} bytes instead of 16").into(),
        )
    })
}

fn stored_game(r: &rusqlite::Row<'_>) -> rusqlite::Result<GameRow> {
    let parent: Option<Vec<u8>> = r.get(8)?;
    let origin = match parent {
        None => None,
        Some(_) => Some((uuid_column(r, 8)?, r.get::<_, u32>(9)?)),
    };
    let game = StoredGame {
        id: r.get::<_, i64>(0)? as u64,
        uuid: uuid_column(r, 1)?,
        origin,
        worker: r.get(2)?,
        revision: r.get::<_, i64>(3)? as u64,
        score: r.get::<_, i64>(4)? as u64,
        moves: r.get(5)?,
        max_tile: r.get(6)?,
        record: r.get(7)?,
    };
    let place = match r.get::<_, Option<String>>(10)? {
        None => None,
        Some(key) => Some(ChunkPlace { key, in_bucket: r.get(11)?, entry: r.get(12)? }),
    };
    Ok((game, place))
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow { name: r.get(0)?, hash: r.get(1)?, created_at: r.get(2)?, revoked_at: r.get(3)? })
}
