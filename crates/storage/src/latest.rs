//! The latest record (`latest.json`): what workers read to find the current weights.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The record of design.md §4. Workers ignore fields they do not know, so servers can add some.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatestInfo {
    /// The revision.
    pub revision: u64,
    /// Where to download the weights (file://, http://, or an https presigned or public URL).
    pub weights_url: String,
    /// SHA-256 of the weights file's bytes, lower-case hex.
    pub weights_sha256: String,
    /// Size of the weights file in bytes.
    pub weights_size: u64,
    /// When this record stops being valid; a presigned `weights_url` never expires before it.
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
    /// The model: at least `{"kind": ...}` and its architecture.
    #[serde(default)]
    pub model: serde_json::Value,
    /// Search parameters for self-play, chosen by the server.
    #[serde(default)]
    pub selfplay: serde_json::Value,
    /// Revisions whose games the server still accepts.
    #[serde(default)]
    pub accepted_revisions: Vec<u64>,
    /// The oldest worker version the server talks to.
    #[serde(default)]
    pub min_worker_version: String,
    /// The stored file name (`r000012-0123456789ab.safetensors`).
    #[serde(default)]
    pub weights_file: String,
    /// When the record was written.
    #[serde(with = "time::serde::rfc3339")]
    pub published_at: OffsetDateTime,
}

/// The parts of the record that the trainer decides, beyond the guide's four arguments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatestDetails {
    /// See [`LatestInfo::model`].
    pub model: serde_json::Value,
    /// See [`LatestInfo::selfplay`].
    pub selfplay: serde_json::Value,
    /// See [`LatestInfo::accepted_revisions`]; empty means just this revision.
    pub accepted_revisions: Vec<u64>,
    /// See [`LatestInfo::min_worker_version`].
    pub min_worker_version: String,
}
