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
    /// The weights compressed whole, when the server offers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed: Option<PatchOffer>,
    /// A delta from an earlier revision, when the server offers one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<PatchOffer>,
    /// The run's part.
    #[serde(flatten)]
    pub spec: RunSpec,
}

/// A patch the record offers instead of the whole weights file (`docs/formats.md`, weights patches).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchOffer {
    /// Where to download it: file://, http:// or https://.
    pub url: String,
    /// The stored patch's name.
    pub file: String,
    /// SHA-256 of the patch file: 64 lower-case hex digits.
    pub sha256: String,
    /// Size of the patch file in bytes: at least 1.
    pub size: u64,
    /// SHA-256 of the weights file a delta applies to; absent for a compressed whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_sha256: Option<String>,
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl PatchOffer {
    /// Checks each field against its rule; `field` names the offer (`compressed`, `delta`).
    pub fn validate(&self, field: &str) -> Result<(), SpecError> {
        let rule = |ok: bool, sub: &str, message: String| {
            if ok { Ok(()) } else { Err(SpecError { field: format!("{field}.{sub}"), message }) }
        };
        let scheme_ok = ["file://", "http://", "https://"].iter().any(|s| self.url.starts_with(s));
        rule(scheme_ok, "url", "is not a file://, http:// or https:// URL".into())?;
        rule(
            is_sha256_hex(&self.sha256),
            "sha256",
            format!("`{}` is not 64 lower-case hex digits", self.sha256),
        )?;
        rule(self.size >= 1, "size", "0 bytes is not a patch".into())?;
        match (&self.base_sha256, field) {
            (Some(base), _) => {
                rule(is_sha256_hex(base), "base_sha256", format!("`{base}` is not 64 lower-case hex digits"))
            }
            (None, "delta") => rule(false, "base_sha256", "a delta must name its base".into()),
            (None, _) => Ok(()),
        }
    }
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
        let record: LatestRecord =
            serde_json::from_value(value).map_err(|e| LatestError::Malformed(e.to_string()))?;
        if let Some(compressed) = &record.compressed {
            compressed.validate("compressed")?;
            if compressed.base_sha256.is_some() {
                return Err(LatestError::Spec(SpecError {
                    field: "compressed.base_sha256".into(),
                    message: "a compressed whole file has no base".into(),
                }));
            }
        }
        if let Some(delta) = &record.delta {
            delta.validate("delta")?;
        }
        Ok(record)
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
            compressed: None,
            delta: Some(PatchOffer {
                url: "file:///w/r000003-0123456789ab.from-r000002-abcdefabcdef.zst".into(),
                file: "r000003-0123456789ab.from-r000002-abcdefabcdef.zst".into(),
                sha256: "cd".repeat(32),
                size: 100,
                base_sha256: Some("ef".repeat(32)),
            }),
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

    #[test]
    fn a_bad_patch_offer_is_named_by_its_field() {
        for (path, value, field) in [
            ("sha256", serde_json::json!("XY"), "delta.sha256"),
            ("size", serde_json::json!(0), "delta.size"),
            ("url", serde_json::json!("ftp://x/y"), "delta.url"),
            ("base_sha256", serde_json::Value::Null, "delta.base_sha256"),
        ] {
            let mut record = serde_json::to_value(record()).unwrap();
            record["delta"][path] = value;
            let error = LatestRecord::from_value(record).unwrap_err().to_string();
            assert!(error.contains(field), "{path}: {error}");
        }
        let mut record = serde_json::to_value(record()).unwrap();
        record["compressed"] = record["delta"].clone();
        let error = LatestRecord::from_value(record).unwrap_err().to_string();
        assert!(error.contains("compressed.base_sha256"), "{error}");
    }
}
