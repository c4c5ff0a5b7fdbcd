//! The latest record (`latest.json`): what workers read to find the current weights.
//!
//! Storage owns the fields that say where the weights are. Whatever else the trainer puts in the
//! record (the run's specs) is opaque JSON here, kept and served as written: this crate knows
//! nothing of models.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What the trainer adds to the record: JSON object fields, opaque to storage.
pub type LatestExtra = serde_json::Map<String, serde_json::Value>;

/// A patch the record offers instead of the whole weights file (see [`crate::patch`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchOffer {
    /// Where to download it (formed like `weights_url`).
    pub url: String,
    /// The stored patch's name.
    pub file: String,
    /// SHA-256 of the patch file, lower-case hex.
    pub sha256: String,
    /// Size of the patch file in bytes.
    pub size: u64,
    /// SHA-256 of the weights file it applies to (a delta's only; none for a compressed whole file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_sha256: Option<String>,
}

/// The record. Workers ignore fields they do not know, so servers can add some.
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
    /// The stored file name (`r000012-0123456789ab.safetensors`).
    pub weights_file: String,
    /// When the record was written.
    #[serde(with = "time::serde::rfc3339")]
    pub published_at: OffsetDateTime,
    /// The weights compressed whole, for a faster download (absent in records of older servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed: Option<PatchOffer>,
    /// A delta from the previous revision, for a worker that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<PatchOffer>,
    /// The trainer's fields, as written.
    #[serde(flatten)]
    pub extra: LatestExtra,
}

impl LatestInfo {
    /// The record's patches as the fetcher takes them, the delta first.
    pub fn patch_sources(&self) -> Vec<crate::fetch::PatchSource> {
        [&self.delta, &self.compressed]
            .into_iter()
            .flatten()
            .map(|offer| crate::fetch::PatchSource {
                url: offer.url.clone(),
                expected: crate::fetch::Expected { sha256: offer.sha256.clone(), size: offer.size },
                base_sha256: offer.base_sha256.clone(),
            })
            .collect()
    }
}
