//! The `api:` section of the configuration file: who may call what, and how much.

use serde::{Deserialize, Serialize};

/// Access and limits of the HTTP API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// `GET /api/v1/latest` and `/weights/…` need a worker token too (uploads always do).
    pub require_token_for_latest: bool,
    /// Largest accepted upload body (compressed), in bytes.
    pub max_upload_bytes: usize,
    /// Largest batch once decompressed, in bytes (a zstd bomb stops here).
    pub max_batch_bytes: usize,
    /// Most games in one batch.
    pub max_batch_games: usize,
    /// Uploads per minute allowed per token (bursts up to this many).
    pub uploads_per_minute: u32,
    /// Uploads are refused with 503 (retry later) while this many stored games wait for the learner.
    pub max_backlog_games: u64,
    /// Seconds between the throughput samples the dashboard plots.
    pub sample_seconds: f64,
}

impl ApiConfig {
    /// Checks every value; the message names the key under `api`.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_upload_bytes < 1024 {
            return Err(format!("api.max_upload_bytes: {} bytes; at least 1024", self.max_upload_bytes));
        }
        if self.max_batch_bytes < self.max_upload_bytes {
            return Err(format!(
                "api.max_batch_bytes: {} bytes is less than api.max_upload_bytes ({}): every upload would be refused",
                self.max_batch_bytes, self.max_upload_bytes
            ));
        }
        if self.max_batch_games == 0 {
            return Err("api.max_batch_games: must be at least 1".into());
        }
        if !self.sample_seconds.is_finite() || self.sample_seconds < 0.1 {
            return Err(format!(
                "api.sample_seconds: {} is not a number of seconds ≥ 0.1",
                self.sample_seconds
            ));
        }
        Ok(())
    }
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            require_token_for_latest: false,
            max_upload_bytes: 16 << 20,
            max_batch_bytes: 64 << 20,
            max_batch_games: 10_000,
            uploads_per_minute: 600,
            max_backlog_games: 200_000,
            sample_seconds: 10.0,
        }
    }
}
