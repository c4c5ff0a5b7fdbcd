//! Worker tokens: `zero2048 token add NAME` prints one once; only its SHA-256 is stored, so the
//! database never holds a usable token. A token names its worker in every table and status page.

use serde::Serialize;
use sha2::{Digest, Sha256};
use zero2048_train::RunDb;
use zero2048_train::db::{DatabaseUrl, DbError, TokenRow};

const PREFIX: &str = "z2k_";

/// A token store failing.
#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    /// The run database failed (tokens live in it).
    #[error(transparent)]
    Db(#[from] DbError),
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

/// The tokens table of the run database.
pub struct TokenStore {
    db: RunDb,
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl From<TokenRow> for TokenInfo {
    fn from(row: TokenRow) -> Self {
        TokenInfo {
            fingerprint: hex::encode(&row.hash[..4.min(row.hash.len())]),
            name: row.name,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        }
    }
}

impl TokenStore {
    /// Opens the tokens table of the run database at `url` (a path or [`DatabaseUrl`]), creating
    /// and migrating the database if needed.
    pub fn open(url: impl Into<DatabaseUrl>) -> Result<TokenStore, TokenStoreError> {
        Ok(TokenStore { db: RunDb::open(url)? })
    }

    /// Issues a token for `name` and returns it; this is the only time it exists in clear.
    pub fn add(&mut self, name: &str) -> Result<String, TokenStoreError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name != zero2048_train::LOCAL_WORKER
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(TokenStoreError::BadName(name.to_string()));
        }
        let token = format!("{PREFIX}{}", hex::encode(rand::random::<[u8; 24]>()));
        if !self.db.issue_token(name, &hash(&token))? {
            return Err(TokenStoreError::Exists(name.to_string()));
        }
        Ok(token)
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenStoreError> {
        Ok(self.db.tokens()?.into_iter().map(TokenInfo::from).collect())
    }

    /// Revokes `name`'s token: its requests are refused from now on.
    pub fn revoke(&self, name: &str) -> Result<(), TokenStoreError> {
        if self.db.revoke_token(name)? { Ok(()) } else { Err(TokenStoreError::NotFound(name.to_string())) }
    }

    /// The worker a bearer token belongs to.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Result<String, AuthError>, TokenStoreError> {
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Err(AuthError::Missing));
        };
        Ok(match self.db.token_by_hash(&hash(token))? {
            None => Err(AuthError::Unknown),
            Some(TokenRow { name, revoked_at: Some(_), .. }) => Err(AuthError::Revoked(name)),
            Some(TokenRow { name, revoked_at: None, .. }) => Ok(name),
        })
    }
}
