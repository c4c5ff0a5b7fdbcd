//! The latest record as workers read it: where the current weights are, and the run's specs.
//!
//! The storage layer writes and serves `latest.json` without looking inside the trainer's part
//! (it is opaque JSON there); this is that document, typed. [`RunSpec`] is what the trainer adds to
//! the storage fields; [`LatestRecord`] is the whole record a worker parses, with typed errors.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::spec::{ModelSpec, PlaySpec, SpecError};

/// What the trainer decides for a revision, beyond where its weights are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// The model the weights file holds.
    pub model: ModelSpec,
    /// How to play it.
    pub play: PlaySpec,
    /// Revisions whose games the server still accepts.
    pub accepted_revisions: Vec<u64>,
    /// The oldest worker version the server talks to.
    pub min_worker_version: String,
}

impl RunSpec {
    /// As the JSON object the storage layer stores beside its own fields.
    pub fn to_json_map(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => unreachable!("a RunSpec serialises to a JSON object"),
        }
    }
}

/// The whole latest record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatestRecord {
    /// The revision.
    pub revision: u64,
    /// Where to download the weights (file://, http://, or an https presigned or public URL).
    pub weights_url: String,
    /// SHA-256 of the weights file's bytes, lower-case hex.
    pub weights_sha256: String,
    /// Size of the weights file in bytes.
    pub weights_size: u64,
    /// The stored file name (`r000012-0123456789ab.safetensors`).
    pub weights_file: String,
    /// When this record stops being valid; a presigned `weights_url` never expires before it.
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
    /// When the record was written.
    #[serde(with = "time::serde::rfc3339")]
    pub published_at: OffsetDateTime,
    /// The run's part.
    #[serde(flatten)]
    pub spec: RunSpec,
}

/// Why a latest record cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LatestError {
    /// A field breaks its rule.
    #[error("the latest record's {0}")]
    Spec(#[from] SpecError),
    /// Not the record's shape.
    #[error("the latest record is malformed: {0}")]
    Malformed(String),
}

impl LatestRecord {
    /// Parses a record (from the server's `GET /api/v1/latest` or a bucket's `latest.json`).
    pub fn from_json(bytes: &[u8]) -> Result<LatestRecord, LatestError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| LatestError::Malformed(e.to_string()))?;
        LatestRecord::from_value(value)
    }

    /// [`LatestRecord::from_json`] from a parsed value.
    pub fn from_value(value: serde_json::Value) -> Result<LatestRecord, LatestError> {
        // The play spec validates itself while it is parsed; name its field on failure.
        if let Some(play) = value.get("play") {
            serde_json::from_value::<PlaySpec>(play.clone())
                .map_err(|e| LatestError::Spec(SpecError { field: "play".into(), message: e.to_string() }))?;
        }
        serde_json::from_value(value).map_err(|e| LatestError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SearchSpec;
    use zero2048_game::SpawnRule;

    fn record() -> LatestRecord {
        LatestRecord {
            revision: 3,
            weights_url: "file:///w/r000003-0123456789ab.safetensors".into(),
            weights_sha256: "ab".repeat(32),
            weights_size: 1024,
            weights_file: "r000003-0123456789ab.safetensors".into(),
            deadline: OffsetDateTime::UNIX_EPOCH,
            published_at: OffsetDateTime::UNIX_EPOCH,
            spec: RunSpec {
                model: ModelSpec::Ntuple { tuples: vec![vec![0, 1, 2, 3]], stages: 1, stage_tile: 14 },
                play: PlaySpec {
                    spawn: SpawnRule::STANDARD,
                    search: SearchSpec::Expectimax { depth: 2 },
                    restart: None,
                },
                accepted_revisions: vec![2, 3],
                min_worker_version: "0.1.0".into(),
            },
        }
    }

    #[test]
    fn a_record_round_trips_and_its_run_part_is_a_flat_map() {
        let record = record();
        let bytes = serde_json::to_vec(&record).unwrap();
        assert_eq!(LatestRecord::from_json(&bytes).unwrap(), record);
        let map = record.spec.to_json_map();
        assert!(
            map.contains_key("model") && map.contains_key("play") && map.contains_key("accepted_revisions")
        );
    }

    #[test]
    fn a_bad_play_spec_is_named() {
        let mut value = serde_json::to_value(record()).unwrap();
        value["play"]["search"]["depth"] = 10.into();
        let error = LatestRecord::from_value(value).unwrap_err().to_string();
        assert!(error.contains("play") && error.contains("search.depth"), "{error}");
        let mut value = serde_json::to_value(record()).unwrap();
        value.as_object_mut().unwrap().remove("model");
        assert!(matches!(LatestRecord::from_value(value), Err(LatestError::Malformed(_))));
    }
}
