//! The training server: `zero2048 server`, and the core of the local `zero2048 train`.
//!
//! [`Server`] opens the run (its database and latest revision), binds the HTTP API of
//! `docs/protocol.md` under `/api/v1` ([`api::router`]), serves `/weights/…` when `server.localhost_weights` is set,
//! and runs the learner ([`zero2048_train::TrainingRun`]) in the calling thread until stopped.
//! Uploads are decompressed with a size limit, decoded, replayed once and stored by
//! [`zero2048_train::ingest`]; a game is acknowledged only after its row is committed.
//! [`TokenStore`] holds worker tokens, hashed.
//!
//! This crate must never acknowledge a game it has not stored, never put a token, a credential or a
//! signed URL in a log line or a response, and never panic on a request, whatever its bytes.

pub mod api;
mod config;
mod dashboard;
pub mod export;
mod metrics;
mod rate;
mod server;
mod tokens;

pub use config::ApiConfig;
pub use metrics::Metrics;
pub use server::{ApiServer, Role, Server, ServerError, ServerOptions};
pub use tokens::{AuthError, TokenInfo, TokenStore, TokenStoreError};
