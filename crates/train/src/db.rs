//! The run database (`zero2048.db`, SQLite in WAL mode): revisions, training counters and
//! evaluations, so a stopped run resumes with its numbers and a status page can show its history.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
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
#[error("run database {action}: {source}")]
pub struct DbError {
    action: &'static str,
    source: rusqlite::Error,
}

fn ctx(action: &'static str) -> impl FnOnce(rusqlite::Error) -> DbError {
    move |source| DbError { action, source }
}

/// The open database.
pub struct RunDb {
    conn: Connection,
}

impl RunDb {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<RunDb, DbError> {
        let conn = Connection::open(path).map_err(ctx("open"))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(ctx("enable WAL"))?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(ctx("set synchronous"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(ctx("set busy timeout"))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS revisions (
                 revision INTEGER PRIMARY KEY, file TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
                 games INTEGER NOT NULL, moves INTEGER NOT NULL, published_at TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS evaluations (
                 revision INTEGER NOT NULL, depth INTEGER NOT NULL, seed INTEGER NOT NULL,
                 games_trained INTEGER NOT NULL, strength TEXT NOT NULL, PRIMARY KEY (revision, depth));",
        )
        .map_err(ctx("create tables"))?;
        Ok(RunDb { conn })
    }

    fn meta(&self, key: &str) -> Result<Option<String>, DbError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(ctx("read meta"))
    }

    /// A stored setting (the network shape, say).
    pub fn setting(&self, key: &str) -> Result<Option<String>, DbError> {
        self.meta(key)
    }

    /// Stores a setting.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), DbError> {
        self.conn
            .execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", params![key, value])
            .map(|_| ())
            .map_err(ctx("write meta"))
    }

    /// The totals, zero for a new run.
    pub fn counters(&self) -> Result<Counters, DbError> {
        let get =
            |key| -> Result<u64, DbError> { Ok(self.meta(key)?.and_then(|v| v.parse().ok()).unwrap_or(0)) };
        Ok(Counters {
            games: get("games")?,
            moves: get("moves")?,
            score_sum: get("score_sum")?,
            revision: get("revision")?,
        })
    }

    /// Records a published revision and the totals at that point, in one transaction.
    pub fn record_revision(&mut self, row: &RevisionRow, counters: &Counters) -> Result<(), DbError> {
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
        for (key, value) in [
            ("games", counters.games),
            ("moves", counters.moves),
            ("score_sum", counters.score_sum),
            ("revision", counters.revision),
        ] {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value.to_string()],
            )
            .map_err(ctx("record counters"))?;
        }
        tx.commit().map_err(ctx("commit a revision"))
    }

    /// Records an evaluation.
    pub fn record_evaluation(&self, row: &EvaluationRow) -> Result<(), DbError> {
        let strength = serde_json::to_string(&row.strength).unwrap_or_default();
        self.conn
            .execute(
                "INSERT OR REPLACE INTO evaluations (revision, depth, seed, games_trained, strength) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![row.revision as i64, row.depth, row.seed as i64, row.games_trained as i64, strength],
            )
            .map(|_| ())
            .map_err(ctx("record an evaluation"))
    }

    /// Every revision, oldest first.
    pub fn revisions(&self) -> Result<Vec<RevisionRow>, DbError> {
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

    /// Every evaluation, by revision then depth.
    pub fn evaluations(&self) -> Result<Vec<EvaluationRow>, DbError> {
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
        Ok(rows
            .into_iter()
            .filter_map(|(revision, depth, seed, games_trained, strength)| {
                serde_json::from_str(&strength).ok().map(|strength| EvaluationRow {
                    revision,
                    depth,
                    seed: seed as u64,
                    games_trained,
                    strength,
                })
            })
            .collect())
    }
}
