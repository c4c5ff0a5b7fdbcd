//! Worker tokens: `zero2048 token add NAME` prints one once; only its SHA-256 is stored, so the
//! database never holds a usable token. A token names its worker in every table and status page.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

const PREFIX: &str = "z2k_";

/// A token store failing.
#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    /// Database trouble.
    #[error("token database {action}: {source}")]
    Db {
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        source: rusqlite::Error,
    },
    /// The database's schema could not be brought up to date.
    #[error(transparent)]
    Schema(zero2048_train::db::DbError),
    /// A name that cannot be used.
    #[error("invalid worker name {0:?}: use 1-64 letters, digits, '.', '_' or '-' (and not \"local\")")]
    BadName(String),
    /// The name is taken.
    #[error("a token named {0:?} already exists (revoke it first to issue a new one)")]
    Exists(String),
    /// No such name.
    #[error("no token is named {0:?}")]
    NotFound(String),
}

/// Why a request is not authenticated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error(
        "this endpoint needs a worker token: send `Authorization: Bearer <token>` (create one with `zero2048 token add NAME`)"
    )]
    Missing,
    /// A token the server does not know.
    #[error("the worker token is not valid on this server")]
    Unknown,
    /// A revoked token.
    #[error("the token of worker {0:?} was revoked")]
    Revoked(String),
}

/// A token, as listed (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// The worker's name.
    pub name: String,
    /// First 8 hex digits of the token's hash, to tell tokens apart.
    pub fingerprint: String,
    /// Created (Unix seconds).
    pub created_at: i64,
    /// Revoked (Unix seconds), if it was.
    pub revoked_at: Option<i64>,
}

/// The tokens table, in the run database's file.
pub struct TokenStore {
    conn: Connection,
}

fn db(action: &'static str) -> impl FnOnce(rusqlite::Error) -> TokenStoreError {
    move |source| TokenStoreError::Db { action, source }
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl TokenStore {
    /// Opens the tokens table of the run database at `path` (creating the database if needed).
    pub fn open(path: &Path) -> Result<TokenStore, TokenStoreError> {
        // The run database's schema (and its migrations) owns the tokens table.
        zero2048_train::db::migrate_file(path).map_err(TokenStoreError::Schema)?;
        let conn = Connection::open(path).map_err(db("open"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db("set busy timeout"))?;
        Ok(TokenStore { conn })
    }

    /// Issues a token for `name` and returns it; this is the only time it exists in clear.
    pub fn add(&self, name: &str) -> Result<String, TokenStoreError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name != zero2048_train::LOCAL_WORKER
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(TokenStoreError::BadName(name.to_string()));
        }
        let exists: Option<Option<i64>> = self
            .conn
            .query_row("SELECT revoked_at FROM tokens WHERE name = ?1", [name], |r| r.get(0))
            .optional()
            .map_err(db("look up a name"))?;
        match exists {
            Some(None) => return Err(TokenStoreError::Exists(name.to_string())),
            Some(Some(_)) => {
                self.conn
                    .execute("DELETE FROM tokens WHERE name = ?1", [name])
                    .map_err(db("replace a token"))?;
            }
            None => {}
        }
        let token = format!("{PREFIX}{}", hex::encode(rand::random::<[u8; 24]>()));
        self.conn
            .execute(
                "INSERT INTO tokens (name, hash, created_at) VALUES (?1, ?2, ?3)",
                params![name, hash(&token), now()],
            )
            .map_err(db("store a token"))?;
        Ok(token)
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenStoreError> {
        let mut query = self
            .conn
            .prepare("SELECT name, hash, created_at, revoked_at FROM tokens ORDER BY created_at, name")
            .map_err(db("list tokens"))?;
        query
            .query_map([], |r| {
                let hash: Vec<u8> = r.get(1)?;
                Ok(TokenInfo {
                    name: r.get(0)?,
                    fingerprint: hex::encode(&hash[..4.min(hash.len())]),
                    created_at: r.get(2)?,
                    revoked_at: r.get(3)?,
                })
            })
            .map_err(db("list tokens"))?
            .collect::<Result<_, _>>()
            .map_err(db("list tokens"))
    }

    /// Revokes `name`'s token: its requests are refused from now on.
    pub fn revoke(&self, name: &str) -> Result<(), TokenStoreError> {
        let changed = self
            .conn
            .execute(
                "UPDATE tokens SET revoked_at = coalesce(revoked_at, ?2) WHERE name = ?1",
                params![name, now()],
            )
            .map_err(db("revoke a token"))?;
        if changed == 0 { Err(TokenStoreError::NotFound(name.to_string())) } else { Ok(()) }
    }

    /// The worker a bearer token belongs to.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Result<String, AuthError>, TokenStoreError> {
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Err(AuthError::Missing));
        };
        let mut query = self
            .conn
            .prepare_cached("SELECT name, revoked_at FROM tokens WHERE hash = ?1")
            .map_err(db("check a token"))?;
        let found: Option<(String, Option<i64>)> = query
            .query_row([hash(token)], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db("check a token"))?;
        Ok(match found {
            None => Err(AuthError::Unknown),
            Some((name, Some(_))) => Err(AuthError::Revoked(name)),
            Some((name, None)) => Ok(name),
        })
    }
}
