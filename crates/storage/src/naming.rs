//! Names of stored files. Weights are content-addressed: `r{revision:06}-{sha256[..12]}.safetensors`.
//! Every name that comes from outside (a URL path, a CLI argument, a bucket listing) is parsed here
//! before it touches a file system or a bucket, so nothing can escape the weights directory.

use std::fmt;

/// The record workers read.
pub const LATEST_FILE: &str = "latest.json";
/// Prefix of weights keys in a bucket (and URL path segment when served over HTTP).
pub const WEIGHTS_PREFIX: &str = "weights";
/// Suffix of the sidecar holding a weights file's full SHA-256 and size.
pub const SIDECAR_SUFFIX: &str = ".sha256";

/// A valid weights file name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WeightsName {
    revision: u64,
    hash_prefix: String,
}

/// A name that is not a weights file name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a weights file name (expected r<revision>-<12 hex digits>.safetensors)")]
pub struct BadName(pub String);

impl WeightsName {
    /// The name for revision `revision` whose bytes hash to `sha256` (hex).
    pub fn new(revision: u64, sha256: &str) -> WeightsName {
        WeightsName {
            revision,
            hash_prefix: sha256.chars().take(12).collect::<String>().to_ascii_lowercase(),
        }
    }

    /// Parses a bare file name. Rejects anything with a path separator, `..`, percent-encoding or
    /// other characters outside the pattern.
    pub fn parse(name: &str) -> Result<WeightsName, BadName> {
        let bad = || BadName(name.chars().take(80).collect());
        let stem = name.strip_prefix('r').and_then(|s| s.strip_suffix(".safetensors")).ok_or_else(bad)?;
        let (revision, hash) = stem.split_once('-').ok_or_else(bad)?;
        if revision.len() < 6 || !revision.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if hash.len() != 12 || !hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad());
        }
        let revision = revision.parse().map_err(|_| bad())?;
        let parsed = WeightsName { revision, hash_prefix: hash.to_string() };
        // Only the canonical spelling: no extra leading zeros beyond six digits.
        if parsed.to_string() != name {
            return Err(bad());
        }
        Ok(parsed)
    }

    /// The revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The first 12 hex digits of the SHA-256.
    pub fn hash_prefix(&self) -> &str {
        &self.hash_prefix
    }

    /// Whether a full SHA-256 (hex) agrees with the name.
    pub fn matches_hash(&self, sha256: &str) -> bool {
        sha256.len() == 64 && sha256.to_ascii_lowercase().starts_with(&self.hash_prefix)
    }

    /// The bucket key: `weights/<name>`.
    pub fn key(&self) -> String {
        format!("{WEIGHTS_PREFIX}/{self}")
    }

    /// The sidecar file name: `<name>.sha256`.
    pub fn sidecar(&self) -> String {
        format!("{self}{SIDECAR_SUFFIX}")
    }
}

impl fmt::Display for WeightsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{:06}-{}.safetensors", self.revision, self.hash_prefix)
    }
}

/// Whether `s` is a lower-case hex SHA-256.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
