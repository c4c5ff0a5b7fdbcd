//! Where model revisions live, and how workers get them.
//!
//! [`StorageBackend`] is the storage interface (`docs/storage.md`) (`save_weights`, `get_weights_url`,
//! `update_latest_info`, and what a running system also needs); [`LocalStorageBackend`] and
//! [`R2StorageBackend`] implement it; [`StorageAdapter`] picks one from [`Config`] and applies the
//! guide's fallback rules. [`Fetcher`] is the worker side: verified, resumable, cached downloads.
//! [`http::weights_router`] serves a weights directory over HTTP.
//!
//! This crate knows nothing of the game or of models: a weights file is bytes with a revision and
//! a SHA-256. It must never hold a whole weights file in memory, never hand out a URL to a file that
//! is not completely stored, and never print a credential or a request signature.

mod adapter;
mod backend;
pub mod config;
pub mod fetch;
mod hashing;
pub mod http;
mod latest;
mod local;
pub mod naming;
mod objects;
pub mod patch;
mod r2;
mod secret;

pub use adapter::{StorageAdapter, StorageStatus};
pub use backend::{
    Retention, StorageBackend, StorageError, StorageResult, StoredWeights, UrlKind, WeightsData,
    WeightsReader, WeightsUrl, verify_stored,
};
pub use config::{Config, ConfigError, Overrides, R2Settings, ServerConfig, StorageConfig, parse_yaml};
pub use fetch::{Expected, FetchError, Fetched, Fetcher, PatchSource, RetryPolicy};
pub use hashing::{hash_bytes, hash_file};
pub use latest::{LatestExtra, LatestInfo, PatchOffer};
pub use local::{LocalStorageBackend, LocalUrls, StagingPath, StoredPatch};
pub use naming::WeightsName;
pub use objects::{ObjectPlace, ObjectRetention, ObjectShelf};
pub use r2::R2StorageBackend;
pub use secret::{REDACTED, Secret, redact};
