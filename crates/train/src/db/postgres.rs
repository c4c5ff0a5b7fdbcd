//! The PostgreSQL backend: the same tables as SQLite with PostgreSQL's types (`BIGINT`, `BYTEA`,
//! `BOOLEAN`), its schema version in `schema_version`, and one advisory lock that orders every
//! transaction storing games (so row ids become visible in order, which the learner's cursor needs)
//! and every migration (so two processes starting together migrate once).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use postgres::{Client, NoTls, Row};

use super::{
    ACTIVE_WORKER_SECONDS, ChunkPlace, ChunkTotals, Counters, DbError, DoomedChunk, EvaluationRow, GameRow,
    NewChunk, NewGame, RevisionRow, StoredGame, ThroughputSample, TokenRow, WorkerRow, counter_entries,
    strength_of, token_of, unix_now, uuid_of,
};

fn ctx(action: &'static str) -> impl FnOnce(postgres::Error) -> DbError {
    move |source| DbError::Postgres { action, source }
}

/// The advisory lock taken by migrations and by every transaction that stores games.
const GAMES_LOCK: i64 = 0x2048_0001;

/// The advisory lock the run's one learner holds for its whole session.
const LEARNER_LOCK: i64 = 0x2048_0002;

/// The schema's migrations: migration `i` takes version `i` to `i + 1`. PostgreSQL support began
/// at SQLite's schema version 3, so its first migration is that whole schema.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE revisions (
         revision BIGINT PRIMARY KEY, file TEXT NOT NULL, sha256 TEXT NOT NULL, size BIGINT NOT NULL,
         games BIGINT NOT NULL, moves BIGINT NOT NULL, published_at TEXT NOT NULL);
     CREATE TABLE evaluations (
         revision BIGINT NOT NULL, depth BIGINT NOT NULL, seed BIGINT NOT NULL,
         games_trained BIGINT NOT NULL, strength TEXT NOT NULL, PRIMARY KEY (revision, depth));
     CREATE TABLE games (
         id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, uuid BYTEA NOT NULL UNIQUE, worker TEXT NOT NULL,
         revision BIGINT NOT NULL, score BIGINT NOT NULL, moves BIGINT NOT NULL,
         max_tile BIGINT NOT NULL, record BYTEA NOT NULL, received_at BIGINT NOT NULL,
         quarantined BOOLEAN NOT NULL DEFAULT FALSE, parent BYTEA, branch_step BIGINT,
         queued BOOLEAN NOT NULL DEFAULT TRUE);
     CREATE INDEX games_by_revision ON games (revision, score);
     CREATE INDEX games_by_worker ON games (worker);
     CREATE INDEX games_queue ON games (id) WHERE queued AND NOT quarantined;
     CREATE TABLE throughput (
         at BIGINT NOT NULL, games BIGINT NOT NULL, moves BIGINT NOT NULL,
         stored BIGINT NOT NULL, backlog BIGINT NOT NULL, revision BIGINT NOT NULL);
     CREATE INDEX throughput_by_time ON throughput (at);
     CREATE TABLE workers (
         name TEXT PRIMARY KEY, games BIGINT NOT NULL DEFAULT 0, moves BIGINT NOT NULL DEFAULT 0,
         rejected BIGINT NOT NULL DEFAULT 0, last_rejection TEXT,
         first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL);
     CREATE TABLE tokens (
         name TEXT PRIMARY KEY, hash BYTEA NOT NULL UNIQUE,
         created_at BIGINT NOT NULL, revoked_at BIGINT);",
    // 2: records out of the database, in chunk objects (SQLite's migration 4).
    "CREATE TABLE chunks (
         id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, key TEXT NOT NULL UNIQUE,
         in_bucket BOOLEAN NOT NULL, bytes BIGINT NOT NULL, newest_revision BIGINT NOT NULL,
         queued BOOLEAN NOT NULL, first_game BIGINT NOT NULL DEFAULT 0,
         last_game BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL);
     ALTER TABLE games ADD COLUMN chunk BIGINT;
     ALTER TABLE games ADD COLUMN chunk_entry INTEGER;",
    // 3: games by worker only for quarantined ones (SQLite's migration 5). The learner's queue
    // reads the primary key from its cursor on: on PostgreSQL, where games come from workers
    // and are all queued, a partial index of queued games was a second copy of it.
    "DROP INDEX games_by_worker;
     CREATE INDEX games_quarantined_by_worker ON games (worker) WHERE quarantined;
     DROP INDEX games_queue;
     ALTER TABLE games DROP COLUMN received_at;",
];

/// The schema version this build writes on PostgreSQL.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// A game row's columns, with its chunk's.
const GAME_COLUMNS: &str =
    "g.id, g.uuid, g.worker, g.revision, g.score, g.moves, g.max_tile, g.record, g.parent,
     g.branch_step, c.key, c.in_bucket, g.chunk_entry FROM games g LEFT JOIN chunks c ON c.id = g.chunk";

fn migrate(client: &mut Client) -> Result<(), DbError> {
    let mut tx = client.transaction().map_err(ctx("begin a migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&GAMES_LOCK]).map_err(ctx("lock the schema"))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .map_err(ctx("create the schema version table"))?;
    let found: Option<i64> = tx
        .query_opt("SELECT version FROM schema_version", &[])
        .map_err(ctx("read the schema version"))?
        .map(|row| row.get(0));
    let found = found.unwrap_or(0) as u32;
    if found > SCHEMA_VERSION {
        return Err(DbError::TooNew { found, supported: SCHEMA_VERSION });
    }
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(migration).map_err(ctx("migrate the schema"))?;
        let next = version as i64 + 1;
        if version == 0 {
            tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&next])
        } else {
            tx.execute("UPDATE schema_version SET version = $1", &[&next])
        }
        .map_err(ctx("record the schema version"))?;
    }
    tx.commit().map_err(ctx("commit a migration"))
}

/// The open PostgreSQL database. The client is behind a mutex because its queries need `&mut`
/// while the run database's readers take `&self`.
pub(super) struct PostgresDb {
    url: String,
    client: Mutex<Client>,
    /// This connection took the learner lock: a new connection must take it again.
    holds_learner_lock: AtomicBool,
}

fn i64_of(value: u64) -> i64 {
    value as i64
}

impl PostgresDb {
    pub(super) fn open(url: &str) -> Result<PostgresDb, DbError> {
        let mut client = Client::connect(url, NoTls).map_err(ctx("connect"))?;
        migrate(&mut client)?;
        Ok(PostgresDb {
            url: url.to_string(),
            client: Mutex::new(client),
            holds_learner_lock: AtomicBool::new(false),
        })
    }

    /// The connection, opened again if the server closed it (a restart, a failover, an idle
    /// timeout): the query that met the closed connection failed with its error, the next ones
    /// work again without restarting this process.
    fn client(&self) -> Result<MutexGuard<'_, Client>, DbError> {
        let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if client.is_closed() {
            tracing::warn!("the PostgreSQL connection was closed; connecting again");
            let mut fresh = Client::connect(&self.url, NoTls).map_err(ctx("connect again"))?;
            if self.holds_learner_lock.load(Ordering::SeqCst) && !take_learner_lock(&mut fresh)? {
                return Err(DbError::LostLearnerLock);
            }
            *client = fresh;
        }
        Ok(client)
    }

    pub(super) fn try_lock_run(&self) -> Result<bool, DbError> {
        let taken = take_learner_lock(&mut *self.client()?)?;
        self.holds_learner_lock.store(taken, Ordering::SeqCst);
        Ok(taken)
    }

    pub(super) fn meta(&self, key: &str) -> Result<Option<String>, DbError> {
        self.client()?
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
            .map(|row| row.map(|r| r.get(0)))
            .map_err(ctx("read meta"))
    }

    pub(super) fn set_meta(&self, key: &str, value: &str) -> Result<(), DbError> {
        set_meta(&mut *self.client()?, key, value).map_err(ctx("write meta"))
    }

    pub(super) fn record_revision(&mut self, row: &RevisionRow, counters: &Counters) -> Result<(), DbError> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(ctx("begin"))?;
        tx.execute(
            "INSERT INTO revisions (revision, file, sha256, size, games, moves, published_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (revision) DO UPDATE SET file = excluded.file, sha256 = excluded.sha256,
                 size = excluded.size, games = excluded.games, moves = excluded.moves,
                 published_at = excluded.published_at",
            &[
                &i64_of(row.revision),
                &row.file,
                &row.sha256,
                &i64_of(row.size),
                &i64_of(row.games),
                &i64_of(row.moves),
                &row.published_at,
            ],
        )
        .map_err(ctx("record a revision"))?;
        for (key, value) in counter_entries(counters) {
            set_meta(&mut tx, key, &value.to_string()).map_err(ctx("record counters"))?;
        }
        tx.commit().map_err(ctx("commit a revision"))
    }

    pub(super) fn record_evaluation(&self, row: &EvaluationRow) -> Result<(), DbError> {
        let strength = serde_json::to_string(&row.strength).unwrap_or_default();
        self.client()?
            .execute(
                "INSERT INTO evaluations (revision, depth, seed, games_trained, strength) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (revision, depth) DO UPDATE SET seed = excluded.seed,
                     games_trained = excluded.games_trained, strength = excluded.strength",
                &[
                    &i64_of(row.revision),
                    &i64::from(row.depth),
                    &i64_of(row.seed),
                    &i64_of(row.games_trained),
                    &strength,
                ],
            )
            .map(drop)
            .map_err(ctx("record an evaluation"))
    }

    pub(super) fn revisions(&self) -> Result<Vec<RevisionRow>, DbError> {
        let rows = self
            .client()?
            .query(
                "SELECT revision, file, sha256, size, games, moves, published_at FROM revisions ORDER BY revision",
                &[],
            )
            .map_err(ctx("list revisions"))?;
        Ok(rows
            .iter()
            .map(|r| RevisionRow {
                revision: r.get::<_, i64>(0) as u64,
                file: r.get(1),
                sha256: r.get(2),
                size: r.get::<_, i64>(3) as u64,
                games: r.get::<_, i64>(4) as u64,
                moves: r.get::<_, i64>(5) as u64,
                published_at: r.get(6),
            })
            .collect())
    }

    pub(super) fn evaluations(&self) -> Result<Vec<EvaluationRow>, DbError> {
        let rows = self
            .client()?
            .query(
                "SELECT revision, depth, seed, games_trained, strength FROM evaluations ORDER BY revision, depth",
                &[],
            )
            .map_err(ctx("list evaluations"))?;
        rows.iter()
            .map(|r| {
                let revision = r.get::<_, i64>(0) as u64;
                Ok(EvaluationRow {
                    revision,
                    depth: r.get::<_, i64>(1) as u32,
                    seed: r.get::<_, i64>(2) as u64,
                    games_trained: r.get::<_, i64>(3) as u64,
                    strength: strength_of(revision, r.get(4))?,
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
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(ctx("begin storing games"))?;
        // Ids are drawn in the order the lock is granted, so they commit in order.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&GAMES_LOCK])
            .map_err(ctx("lock the games queue"))?;
        let chunk_id: Option<i64> = match chunk {
            None => None,
            Some(chunk) => Some(
                tx.query_one(
                    "INSERT INTO chunks (key, in_bucket, bytes, newest_revision, queued, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[
                        &chunk.key,
                        &chunk.in_bucket,
                        &i64_of(chunk.bytes),
                        &i64_of(chunk.newest_revision),
                        &queued,
                        &now,
                    ],
                )
                .map_err(ctx("record a game chunk"))?
                .get(0),
            ),
        };
        // One statement for the whole batch (a round trip per game cost more than the inserts).
        // A conflicting insert would use up an id (sequences are not transactional); under the
        // lock, looking first means retried uploads leave no gaps in the ids. Ids follow the
        // batch's order.
        let uuids: Vec<&[u8]> = games.iter().map(|g| &g.uuid[..]).collect();
        let revisions: Vec<i64> = games.iter().map(|g| i64_of(g.revision)).collect();
        let scores: Vec<i64> = games.iter().map(|g| i64_of(g.score)).collect();
        let moves: Vec<i64> = games.iter().map(|g| i64::from(g.moves)).collect();
        let max_tiles: Vec<i64> = games.iter().map(|g| i64::from(g.max_tile)).collect();
        // A record in a chunk is not kept in its row too.
        let records: Vec<&[u8]> =
            games.iter().map(|g| if chunk_id.is_some() { &[][..] } else { g.record }).collect();
        let parents: Vec<Option<&[u8]>> =
            games.iter().map(|g| g.origin.as_ref().map(|(parent, _)| &parent[..])).collect();
        let steps: Vec<Option<i64>> =
            games.iter().map(|g| g.origin.map(|(_, step)| i64::from(step))).collect();
        let inserted = tx
            .query(
                "INSERT INTO games (uuid, worker, revision, score, moves, max_tile, record,
                     parent, branch_step, queued, chunk, chunk_entry)
                 SELECT g.uuid, $1, g.revision, g.score, g.moves, g.max_tile, g.record, g.parent,
                     g.branch_step, $2, $11::BIGINT, CASE WHEN $11::BIGINT IS NULL THEN NULL ELSE g.n - 1 END
                 FROM unnest($3::BYTEA[], $4::BIGINT[], $5::BIGINT[], $6::BIGINT[], $7::BIGINT[],
                             $8::BYTEA[], $9::BYTEA[], $10::BIGINT[]) WITH ORDINALITY
                     AS g (uuid, revision, score, moves, max_tile, record, parent, branch_step, n)
                 WHERE NOT EXISTS (SELECT 1 FROM games e WHERE e.uuid = g.uuid)
                 ORDER BY g.n
                 ON CONFLICT (uuid) DO NOTHING
                 RETURNING uuid, id",
                &[
                    &worker, &queued, &uuids, &revisions, &scores, &moves, &max_tiles, &records, &parents,
                    &steps, &chunk_id,
                ],
            )
            .map_err(ctx("store games"))?;
        if let Some(chunk_id) = chunk_id {
            let ids = inserted.iter().map(|r| r.get::<_, i64>(1));
            match (ids.clone().min(), ids.max()) {
                (Some(first), Some(last)) => tx.execute(
                    "UPDATE chunks SET first_game = $2, last_game = $3 WHERE id = $1",
                    &[&chunk_id, &first, &last],
                ),
                // Every game was a duplicate: no row names the chunk, which the orphan sweep removes.
                _ => tx.execute("DELETE FROM chunks WHERE id = $1", &[&chunk_id]),
            }
            .map_err(ctx("record a game chunk"))?;
        }
        let mut inserted: std::collections::HashSet<Vec<u8>> = inserted.iter().map(|r| r.get(0)).collect();
        let mut fresh = Vec::with_capacity(games.len());
        let (mut new_games, mut new_moves) = (0i64, 0i64);
        for game in games {
            // A UUID twice in one batch is new once.
            let new = inserted.remove(&game.uuid[..]);
            fresh.push(new);
            if new {
                new_games += 1;
                new_moves += i64::from(game.moves);
            }
        }
        tx.execute(
            "INSERT INTO workers (name, games, moves, rejected, last_rejection, first_seen, last_seen)
             VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (name) DO UPDATE SET games = workers.games + $2, moves = workers.moves + $3,
                 rejected = workers.rejected + $4,
                 last_rejection = coalesce($5, workers.last_rejection), last_seen = $6",
            &[&worker, &new_games, &new_moves, &i64_of(rejected), &last_rejection, &now],
        )
        .map_err(ctx("update worker totals"))?;
        tx.commit().map_err(ctx("commit games"))?;
        Ok(fresh)
    }

    pub(super) fn known_games(&self, uuids: &[[u8; 16]]) -> Result<Vec<bool>, DbError> {
        let keys: Vec<&[u8]> = uuids.iter().map(|u| &u[..]).collect();
        let rows = self
            .client()?
            .query("SELECT uuid FROM games WHERE uuid = ANY($1)", &[&keys])
            .map_err(ctx("look up games"))?;
        let known: std::collections::HashSet<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
        Ok(uuids.iter().map(|u| known.contains(&u[..])).collect())
    }

    fn games(
        &self,
        action: &'static str,
        filter: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<GameRow>, DbError> {
        let query = format!("SELECT {GAME_COLUMNS} {filter}");
        let rows = self.client()?.query(&query, params).map_err(ctx(action))?;
        rows.iter().map(stored_game).collect()
    }

    pub(super) fn games_after(&self, after: u64, limit: usize) -> Result<Vec<GameRow>, DbError> {
        self.games(
            "read games",
            "WHERE g.id > $1 AND g.queued AND NOT g.quarantined ORDER BY g.id LIMIT $2",
            &[&i64_of(after), &(limit as i64)],
        )
    }

    pub(super) fn games_of_revision(&self, revision: u64, limit: usize) -> Result<Vec<GameRow>, DbError> {
        self.games(
            "read games",
            "WHERE g.revision = $1 ORDER BY g.score DESC, g.id LIMIT $2",
            &[&i64_of(revision), &(limit as i64)],
        )
    }

    pub(super) fn game_by_uuid(&self, uuid: &[u8; 16]) -> Result<Option<GameRow>, DbError> {
        let mut found =
            self.games("read a game", "WHERE g.uuid = $1 AND NOT g.quarantined", &[&&uuid[..]])?;
        Ok(found.pop())
    }

    fn count(&self, action: &'static str, query: &str) -> Result<u64, DbError> {
        self.client()?.query_one(query, &[]).map(|r| r.get::<_, i64>(0) as u64).map_err(ctx(action))
    }

    pub(super) fn last_queued_id(&self) -> Result<u64, DbError> {
        self.count("count games", "SELECT coalesce(max(id), 0) FROM games WHERE queued AND NOT quarantined")
    }

    pub(super) fn last_game_id(&self) -> Result<u64, DbError> {
        self.count("count games", "SELECT coalesce(max(id), 0) FROM games")
    }

    pub(super) fn game_count(&self) -> Result<u64, DbError> {
        self.count("count games", "SELECT count(*) FROM games")
    }

    pub(super) fn quarantine_worker(&self, token: &str) -> Result<u64, DbError> {
        self.client()?
            .execute(
                "UPDATE games SET quarantined = TRUE
                 WHERE (worker = $1 OR starts_with(worker, $1 || '@')) AND NOT quarantined",
                &[&token],
            )
            .map_err(ctx("quarantine games"))
    }

    pub(super) fn workers(&self) -> Result<Vec<WorkerRow>, DbError> {
        let rows = self
            .client()?
            .query(
                "SELECT w.name, w.games, w.moves, w.rejected, w.last_rejection, w.first_seen, w.last_seen,
                        (SELECT count(*) FROM games g WHERE g.worker = w.name AND g.quarantined),
                        t.revoked_at
                 FROM workers w LEFT JOIN tokens t ON t.name = split_part(w.name, '@', 1)
                 ORDER BY w.last_seen DESC, w.name",
                &[],
            )
            .map_err(ctx("list workers"))?;
        let now = unix_now();
        Ok(rows
            .iter()
            .map(|r| {
                let name: String = r.get(0);
                let last_seen: i64 = r.get(6);
                let revoked_at: Option<i64> = r.get(8);
                WorkerRow {
                    token: token_of(&name).to_string(),
                    machine: name.split_once('@').map(|(_, machine)| machine.to_string()),
                    games: r.get::<_, i64>(1) as u64,
                    moves: r.get::<_, i64>(2) as u64,
                    rejected: r.get::<_, i64>(3) as u64,
                    last_rejection: r.get(4),
                    first_seen: r.get(5),
                    last_seen,
                    quarantined: r.get::<_, i64>(7) as u64,
                    active: revoked_at.is_none() && now - last_seen <= ACTIVE_WORKER_SECONDS,
                    revoked_at,
                    name,
                }
            })
            .collect())
    }

    pub(super) fn record_rejections(
        &self,
        worker: &str,
        rejected: u64,
        last_rejection: &str,
    ) -> Result<(), DbError> {
        self.client()?
            .execute(
                "INSERT INTO workers (name, rejected, last_rejection, first_seen, last_seen) VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (name) DO UPDATE SET rejected = workers.rejected + $2, last_rejection = $3,
                     last_seen = $4",
                &[&worker, &i64_of(rejected), &last_rejection, &unix_now()],
            )
            .map(drop)
            .map_err(ctx("record rejections"))
    }

    pub(super) fn record_throughput(&self, sample: &ThroughputSample) -> Result<(), DbError> {
        self.client()?
            .execute(
                "INSERT INTO throughput (at, games, moves, stored, backlog, revision) VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &sample.at,
                    &i64_of(sample.games),
                    &i64_of(sample.moves),
                    &i64_of(sample.stored),
                    &i64_of(sample.backlog),
                    &i64_of(sample.revision),
                ],
            )
            .map(drop)
            .map_err(ctx("record throughput"))
    }

    pub(super) fn throughput(&self, limit: usize) -> Result<Vec<ThroughputSample>, DbError> {
        let rows = self
            .client()?
            .query(
                "SELECT at, games, moves, stored, backlog, revision FROM
                 (SELECT * FROM throughput ORDER BY at DESC LIMIT $1) AS recent ORDER BY at",
                &[&(limit as i64)],
            )
            .map_err(ctx("read throughput"))?;
        Ok(rows
            .iter()
            .map(|r| ThroughputSample {
                at: r.get(0),
                games: r.get::<_, i64>(1) as u64,
                moves: r.get::<_, i64>(2) as u64,
                stored: r.get::<_, i64>(3) as u64,
                backlog: r.get::<_, i64>(4) as u64,
                revision: r.get::<_, i64>(5) as u64,
            })
            .collect())
    }

    pub(super) fn games_page(
        &self,
        revision: Option<u64>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<GameRow>, DbError> {
        let revision = revision.map(i64_of);
        self.games(
            "read games",
            "WHERE g.id > $1 AND ($2::BIGINT IS NULL OR g.revision = $2) ORDER BY g.id LIMIT $3",
            &[&i64_of(after), &revision, &(limit as i64)],
        )
    }

    pub(super) fn revisions_with_games(&self) -> Result<Vec<u64>, DbError> {
        let rows = self
            .client()?
            .query("SELECT DISTINCT revision FROM games ORDER BY revision DESC", &[])
            .map_err(ctx("list revisions with games"))?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
    }

    pub(super) fn doomed_chunks(
        &self,
        oldest_kept: u64,
        learned_through: u64,
        keep_one_in: u64,
        limit: usize,
    ) -> Result<Vec<DoomedChunk>, DbError> {
        let rows = self
            .client()?
            .query(
                "SELECT id, key, in_bucket FROM chunks
                 WHERE newest_revision < $1 AND (NOT queued OR last_game <= $2) AND ($3::BIGINT = 0 OR id % $3::BIGINT != 0)
                 ORDER BY id LIMIT $4",
                &[&i64_of(oldest_kept), &i64_of(learned_through), &i64_of(keep_one_in), &(limit as i64)],
            )
            .map_err(ctx("find chunks to prune"))?;
        Ok(rows
            .iter()
            .map(|r| DoomedChunk { id: r.get::<_, i64>(0) as u64, key: r.get(1), in_bucket: r.get(2) })
            .collect())
    }

    /// Deletes a chunk's row and its games' rows; returns how many games and the chunk's bytes.
    pub(super) fn drop_chunk(&mut self, id: u64) -> Result<(u64, u64), DbError> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(ctx("begin pruning a chunk"))?;
        let row = tx
            .query_one("SELECT first_game, last_game, bytes FROM chunks WHERE id = $1", &[&i64_of(id)])
            .map_err(ctx("read a chunk"))?;
        let (first, last, bytes): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let games = tx
            .execute(
                "DELETE FROM games WHERE id BETWEEN $1 AND $2 AND chunk = $3",
                &[&first, &last, &i64_of(id)],
            )
            .map_err(ctx("prune games"))?;
        tx.execute("DELETE FROM chunks WHERE id = $1", &[&i64_of(id)]).map_err(ctx("prune a chunk"))?;
        tx.commit().map_err(ctx("commit pruning"))?;
        Ok((games, bytes as u64))
    }

    pub(super) fn chunks_known(&self, keys: &[String]) -> Result<Vec<bool>, DbError> {
        let rows = self
            .client()?
            .query("SELECT key FROM chunks WHERE key = ANY($1)", &[&keys])
            .map_err(ctx("look up chunks"))?;
        let known: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
        Ok(keys.iter().map(|k| known.contains(k)).collect())
    }

    pub(super) fn local_chunks(&self, limit: usize) -> Result<Vec<String>, DbError> {
        let rows = self
            .client()?
            .query("SELECT key FROM chunks WHERE NOT in_bucket ORDER BY id LIMIT $1", &[&(limit as i64)])
            .map_err(ctx("list local chunks"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(super) fn mark_in_bucket(&self, key: &str) -> Result<(), DbError> {
        self.client()?
            .execute("UPDATE chunks SET in_bucket = TRUE WHERE key = $1", &[&key])
            .map(|_| ())
            .map_err(ctx("record a chunk's move"))
    }

    pub(super) fn size_bytes(&self) -> Result<u64, DbError> {
        self.count("measure the database", "SELECT pg_database_size(current_database())")
    }

    pub(super) fn chunk_totals(&self) -> Result<ChunkTotals, DbError> {
        let row = self
            .client()?
            .query_one("SELECT count(*), coalesce(sum(bytes), 0)::BIGINT FROM chunks", &[])
            .map_err(ctx("count chunks"))?;
        Ok(ChunkTotals { chunks: row.get::<_, i64>(0) as u64, bytes: row.get::<_, i64>(1) as u64 })
    }

    pub(super) fn token_by_name(&self, name: &str) -> Result<Option<TokenRow>, DbError> {
        self.client()?
            .query_opt("SELECT name, hash, created_at, revoked_at FROM tokens WHERE name = $1", &[&name])
            .map(|row| row.as_ref().map(token_row))
            .map_err(ctx("look up a token"))
    }

    pub(super) fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRow>, DbError> {
        self.client()?
            .query_opt("SELECT name, hash, created_at, revoked_at FROM tokens WHERE hash = $1", &[&hash])
            .map(|row| row.as_ref().map(token_row))
            .map_err(ctx("check a token"))
    }

    pub(super) fn issue_token(&mut self, name: &str, hash: &[u8]) -> Result<bool, DbError> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(ctx("begin issuing a token"))?;
        let held = tx
            .query_opt("SELECT revoked_at FROM tokens WHERE name = $1 FOR UPDATE", &[&name])
            .map_err(ctx("look up a token"))?
            .map(|r| r.get::<_, Option<i64>>(0));
        if let Some(None) = held {
            return Ok(false);
        }
        tx.execute("DELETE FROM tokens WHERE name = $1", &[&name]).map_err(ctx("replace a revoked token"))?;
        tx.execute(
            "INSERT INTO tokens (name, hash, created_at) VALUES ($1, $2, $3)",
            &[&name, &hash, &unix_now()],
        )
        .map_err(ctx("store a token"))?;
        tx.commit().map_err(ctx("commit a token"))?;
        Ok(true)
    }

    pub(super) fn tokens(&self) -> Result<Vec<TokenRow>, DbError> {
        self.client()?
            .query("SELECT name, hash, created_at, revoked_at FROM tokens ORDER BY created_at, name", &[])
            .map(|rows| rows.iter().map(token_row).collect())
            .map_err(ctx("list tokens"))
    }

    pub(super) fn revoke_token(&self, name: &str) -> Result<bool, DbError> {
        self.client()?
            .execute(
                "UPDATE tokens SET revoked_at = coalesce(revoked_at, $2) WHERE name = $1",
                &[&name, &unix_now()],
            )
            .map(|changed| changed > 0)
            .map_err(ctx("revoke a token"))
    }
}

fn take_learner_lock(client: &mut Client) -> Result<bool, DbError> {
    client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEARNER_LOCK])
        .map(|row| row.get(0))
        .map_err(ctx("take the learner lock"))
}

fn set_meta(
    client: &mut impl postgres::GenericClient,
    key: &str,
    value: &str,
) -> Result<(), postgres::Error> {
    client
        .execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )
        .map(drop)
}

fn token_row(r: &Row) -> TokenRow {
    TokenRow { name: r.get(0), hash: r.get(1), created_at: r.get(2), revoked_at: r.get(3) }
}

fn stored_game(r: &Row) -> Result<GameRow, DbError> {
    let id = r.get::<_, i64>(0) as u64;
    let parent: Option<Vec<u8>> = r.get(8);
    let origin = match parent {
        None => None,
        Some(parent) => {
            let step: Option<i64> = r.get(9);
            let step = step.ok_or_else(|| DbError::Corrupt {
                what: format!("game {id}'s branch step"),
                value: "NULL".into(),
                expected: "the step its parent was branched at",
            })?;
            Some((uuid_of(parent, &format!("game {id}'s parent"))?, step as u32))
        }
    };
    let game = StoredGame {
        id,
        uuid: uuid_of(r.get(1), &format!("game {id}'s UUID"))?,
        origin,
        worker: r.get(2),
        revision: r.get::<_, i64>(3) as u64,
        score: r.get::<_, i64>(4) as u64,
        moves: r.get::<_, i64>(5) as u32,
        max_tile: r.get::<_, i64>(6) as u32,
        record: r.get(7),
    };
    let place = match r.get::<_, Option<String>>(10) {
        None => None,
        Some(key) => {
            let entry: Option<i32> = r.get(12);
            let entry = entry.ok_or_else(|| DbError::Corrupt {
                what: format!("game {id}'s chunk entry"),
                value: "NULL".into(),
                expected: "the entry of its chunk that holds its record",
            })?;
            Some(ChunkPlace { key, in_bucket: r.get(11), entry: entry as u32 })
        }
    };
    Ok((game, place))
}
