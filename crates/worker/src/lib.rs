//! The self-play worker: `zero2048 worker --server URL --token T --threads N`.
//!
//! [`Worker::run`] reads the latest record (from the server, or a public `latest.json`), downloads
//! and verifies the weights with the storage crate's [`zero2048_storage::Fetcher`] (cached by
//! hash), plays self-play games on N threads, writes each finished game to a durable on-disk
//! [`Spool`] before anything else, and uploads the spool in zstd batches, deleting only what the
//! server acknowledged. A new revision is pre-downloaded and adopted at the next game boundary,
//! after a small random delay so a fleet does not stampede the server.
//!
//! This crate must never load weights whose size and SHA-256 it has not checked against the latest
//! record, never delete a game from the spool that the server has not acknowledged, and never
//! print its token.

mod client;
mod spool;
mod worker;

pub use client::{ClientError, ServerClient};
pub use spool::{Spool, SpoolError, SpooledGame};
pub use worker::{Signals, Worker, WorkerConfig, WorkerError, WorkerSettings, WorkerStatus, WorkerSummary};

/// Exit code of a worker refused for protocol or version reasons (an upgrade is needed).
pub const EXIT_INCOMPATIBLE: i32 = 3;
/// Exit code of a worker whose token was refused.
pub const EXIT_UNAUTHORIZED: i32 = 4;
