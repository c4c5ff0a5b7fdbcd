//! The interface every storage backend implements (the guide's `StorageBackend`), and its types.

use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::io::AsyncRead;

use crate::latest::{LatestExtra, LatestInfo};
use crate::naming::WeightsName;

/// Weights to store: a file on local disk (streamed, never read whole) or bytes in memory.
#[derive(Clone, Debug)]
pub enum WeightsData {
    /// A file to stream from.
    File(PathBuf),
    /// Bytes already in memory (small files, tests).
    Bytes(Bytes),
    /// A file already stored locally, whose SHA-256 and size were recorded when it was stored:
    /// uploading it to a bucket needs no second hashing pass.
    Stored {
        /// The local file.
        path: PathBuf,
        /// Its recorded SHA-256.
        sha256: String,
        /// Its recorded size.
        size: u64,
    },
}

/// A stored weights file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredWeights {
    /// Its name (revision and hash prefix).
    #[serde(with = "name_as_string")]
    pub name: WeightsName,
    /// Full SHA-256 of its bytes, as recorded when it was stored.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was stored, if the backend knows.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub stored_at: Option<OffsetDateTime>,
}

mod name_as_string {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::naming::WeightsName;

    pub fn serialize<S: Serializer>(name: &WeightsName, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(name)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<WeightsName, D::Error> {
        let s = String::deserialize(d)?;
        WeightsName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How a weights URL is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UrlKind {
    /// `file://` on the server's own disk.
    File,
    /// `http://host:port/weights/...` from the server.
    Http,
    /// A presigned S3 GET URL, valid until a time.
    Presigned,
    /// The bucket's public base URL.
    Public,
}

impl UrlKind {
    /// How a URL handed out for weights is served, read from the URL itself (for records written
    /// before this process started, and for status pages that must not show the URL).
    pub fn of(url: &str) -> UrlKind {
        if url.starts_with("file:") {
            UrlKind::File
        } else if url.contains("X-Amz-Signature") || url.contains("x-amz-signature") {
            UrlKind::Presigned
        } else if url.contains("/weights/r") && url.starts_with("http://") {
            UrlKind::Http
        } else {
            UrlKind::Public
        }
    }
}

/// A URL for downloading a weights file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightsUrl {
    /// The URL.
    pub url: String,
    /// How it is served.
    pub kind: UrlKind,
    /// When it stops working (presigned URLs only).
    pub valid_until: Option<OffsetDateTime>,
}

/// A streaming reader over a stored file.
pub type WeightsReader = Box<dyn AsyncRead + Send + Unpin>;

/// Why a storage operation failed. Messages never contain credentials or signatures.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Local file-system trouble.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A name that is not a weights file name (possibly an attempt to escape the directory).
    #[error(transparent)]
    BadName(#[from] crate::naming::BadName),
    /// An object name that could leave its directory or prefix.
    #[error("`{0}` is not an object name (letters, digits, `.`, `_`, `-`; not starting with `.`)")]
    BadObjectName(String),
    /// Nothing stored under that name or revision.
    #[error("{0} is not in storage")]
    NotFound(String),
    /// The latest record names weights that are not fully stored.
    #[error("refusing to publish revision {revision}: its weights {sha256} are not stored")]
    NotStored {
        /// The revision.
        revision: u64,
        /// The hash the record would name.
        sha256: String,
    },
    /// Deleting the file the latest record names.
    #[error("refusing to delete {0}: the latest record names it")]
    InUse(String),
    /// A stored latest record that does not parse.
    #[error("the latest record at {location} is corrupt: {reason}")]
    CorruptLatest {
        /// Where it was read.
        location: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A stored file whose bytes do not match its recorded hash or size.
    #[error("{name}: {check} check failed: expected {expected}, found {actual}")]
    Corrupt {
        /// The file.
        name: String,
        /// `sha256` or `size`.
        check: &'static str,
        /// Recorded value.
        expected: String,
        /// Actual value.
        actual: String,
    },
    /// The bucket could not be used (unreachable, refused, misconfigured).
    #[error("bucket {operation} failed: {message}")]
    Remote {
        /// The operation.
        operation: &'static str,
        /// What went wrong, redacted.
        message: String,
    },
    /// A presigned URL could not be made.
    #[error("presigning a URL failed: {0}")]
    Presign(String),
}

/// Result of a storage operation.
pub type StorageResult<T> = Result<T, StorageError>;

/// A place where weights revisions and the latest record are stored. The first three methods are
/// the storage interface (`docs/storage.md`); the rest are what a running system also needs.
#[async_trait]
pub trait StorageBackend: Send + Sync {
    /// `local` or `r2`.
    fn kind(&self) -> &'static str;

    /// Stores a weights file for `revision` under its content-addressed name. Idempotent: storing
    /// the same bytes again is a no-op that returns the same name.
    async fn save_weights(&self, weights_data: WeightsData, revision: u64) -> StorageResult<StoredWeights>;

    /// A URL for the stored file `weights_path` (a file name, or `weights/<file name>`), valid for
    /// the backend's default time.
    async fn get_weights_url(&self, weights_path: &str, revision: u64) -> StorageResult<WeightsUrl> {
        let until = OffsetDateTime::now_utc() + time::Duration::days(1);
        self.get_weights_url_until(weights_path, revision, until).await
    }

    /// A URL for `weights_path` that still works at `valid_until`.
    async fn get_weights_url_until(
        &self,
        weights_path: &str,
        revision: u64,
        valid_until: OffsetDateTime,
    ) -> StorageResult<WeightsUrl>;

    /// Points the latest record at `revision` (the guide's signature; no trainer details).
    async fn update_latest_info(
        &self,
        revision: u64,
        weights_url: &str,
        weights_sha256: &str,
        deadline: OffsetDateTime,
    ) -> StorageResult<LatestInfo> {
        self.update_latest_info_with(revision, weights_url, weights_sha256, deadline, &LatestExtra::new())
            .await
    }

    /// Points the latest record at `revision`, with the trainer's fields (opaque here). Refuses a
    /// revision whose weights are not fully stored, so a record never names a missing or partial
    /// file.
    async fn update_latest_info_with(
        &self,
        revision: u64,
        weights_url: &str,
        weights_sha256: &str,
        deadline: OffsetDateTime,
        extra: &LatestExtra,
    ) -> StorageResult<LatestInfo> {
        let stored = self
            .list_revisions()
            .await?
            .into_iter()
            .find(|w| w.name.revision() == revision && w.sha256 == weights_sha256)
            .ok_or_else(|| StorageError::NotStored { revision, sha256: weights_sha256.to_string() })?;
        let info = latest_record(&stored, weights_url, deadline, extra);
        self.write_latest(&info).await?;
        Ok(info)
    }

    /// Writes a latest record as it is, atomically.
    async fn write_latest(&self, info: &LatestInfo) -> StorageResult<()>;

    /// The latest record, if one was written.
    async fn read_latest_info(&self) -> StorageResult<Option<LatestInfo>>;

    /// Every stored weights file, oldest revision first.
    async fn list_revisions(&self) -> StorageResult<Vec<StoredWeights>>;

    /// Streams a stored file's bytes.
    async fn open_weights(&self, name: &WeightsName) -> StorageResult<WeightsReader>;

    /// Deletes a stored file. Refuses the one the latest record names.
    async fn delete_weights(&self, name: &WeightsName) -> StorageResult<()>;

    /// Deletes all but the newest `keep` revisions (0 keeps everything), never the latest one.
    async fn prune(&self, retention: Retention) -> StorageResult<Vec<WeightsName>> {
        let latest = self.read_latest_info().await?.map(|l| l.weights_file);
        let stored = self.list_revisions().await?;
        let mut deleted = Vec::new();
        for weights in retention.doomed(&stored, latest.as_deref()) {
            self.delete_weights(&weights.name).await?;
            deleted.push(weights.name.clone());
        }
        Ok(deleted)
    }
}

/// What storage keeps of old revisions: the newest `keep_revisions` that fit in `budget_bytes`,
/// and always the one the latest record names (beyond the count, inside the budget). Zero means
/// no limit, for either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Newest revisions kept (0: all).
    pub keep_revisions: usize,
    /// Bytes the kept revisions may take in all (0: no limit).
    pub budget_bytes: u64,
}

impl Retention {
    /// Keeps the newest `keep_revisions`, whatever their size.
    pub fn newest(keep_revisions: usize) -> Retention {
        Retention { keep_revisions, budget_bytes: 0 }
    }

    /// The revisions of `stored` (oldest first) that this retention drops.
    pub fn doomed<'a>(&self, stored: &'a [StoredWeights], latest: Option<&str>) -> Vec<&'a StoredWeights> {
        let is_latest = |w: &StoredWeights| Some(w.name.to_string().as_str()) == latest;
        // The latest record's file is always kept, and its bytes are spent first.
        let mut bytes: u64 = stored.iter().filter(|w| is_latest(w)).map(|w| w.size).sum();
        let mut doomed = Vec::new();
        for (rank, weights) in stored.iter().rev().enumerate() {
            if is_latest(weights) {
                continue;
            }
            let by_count = self.keep_revisions == 0 || rank < self.keep_revisions;
            let by_size = self.budget_bytes == 0 || bytes + weights.size <= self.budget_bytes;
            if by_count && by_size {
                bytes += weights.size;
            } else {
                doomed.push(weights);
            }
        }
        doomed.reverse();
        doomed
    }
}

/// The latest record naming a fully stored revision, published now, without patch offers.
pub fn latest_record(
    stored: &StoredWeights,
    weights_url: &str,
    deadline: OffsetDateTime,
    extra: &LatestExtra,
) -> LatestInfo {
    LatestInfo {
        revision: stored.name.revision(),
        weights_url: weights_url.to_string(),
        weights_sha256: stored.sha256.clone(),
        weights_size: stored.size,
        deadline,
        weights_file: stored.name.to_string(),
        published_at: OffsetDateTime::now_utc(),
        compressed: None,
        delta: None,
        extra: extra.clone(),
    }
}

/// Accepts `name` or `weights/name`, and nothing else.
pub fn parse_weights_path(weights_path: &str) -> StorageResult<WeightsName> {
    let bare = weights_path.strip_prefix("weights/").unwrap_or(weights_path);
    Ok(WeightsName::parse(bare)?)
}

/// Streams a stored file and checks it against its recorded size and SHA-256, and the hash prefix
/// in its name. Names the first check that fails.
pub async fn verify_stored(backend: &dyn StorageBackend, stored: &StoredWeights) -> StorageResult<()> {
    use sha2::Digest;
    use tokio::io::AsyncReadExt;

    let name = stored.name.to_string();
    if !stored.name.matches_hash(&stored.sha256) {
        return Err(StorageError::Corrupt {
            name,
            check: "name",
            expected: format!("a hash starting {}", stored.name.hash_prefix()),
            actual: stored.sha256.clone(),
        });
    }
    let mut reader = backend.open_weights(&stored.name).await?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; crate::hashing::CHUNK];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buffer).await.map_err(|source| StorageError::Io {
            action: "reading",
            path: PathBuf::from(&name),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    if size != stored.size {
        return Err(StorageError::Corrupt {
            name,
            check: "size",
            expected: format!("{} bytes", stored.size),
            actual: format!("{size} bytes"),
        });
    }
    let sha256 = hex::encode(hasher.finalize());
    if sha256 != stored.sha256 {
        return Err(StorageError::Corrupt {
            name,
            check: "sha256",
            expected: stored.sha256.clone(),
            actual: sha256,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(revision: u64, size: u64) -> StoredWeights {
        let sha256 = format!("{revision:064x}");
        StoredWeights { name: WeightsName::new(revision, &sha256), sha256, size, stored_at: None }
    }

    fn dropped(retention: Retention, sizes: &[u64], latest: Option<u64>) -> Vec<u64> {
        let all: Vec<StoredWeights> =
            sizes.iter().enumerate().map(|(i, &s)| stored(i as u64 + 1, s)).collect();
        let latest = latest.map(|r| all[r as usize - 1].name.to_string());
        retention.doomed(&all, latest.as_deref()).iter().map(|w| w.name.revision()).collect()
    }

    #[test]
    fn retention_keeps_the_newest_that_fit_and_always_the_latest() {
        let none = Retention::default();
        assert!(dropped(none, &[10; 6], Some(6)).is_empty(), "no limits keep everything");
        assert_eq!(dropped(Retention::newest(3), &[10; 6], Some(1)), [2, 3]);
        // A budget of 35 bytes holds three 10-byte files: the latest's first, then the newest.
        let budget = Retention { keep_revisions: 0, budget_bytes: 35 };
        assert_eq!(dropped(budget, &[10; 6], Some(6)), [1, 2, 3]);
        assert_eq!(dropped(budget, &[10; 6], Some(2)), [1, 3, 4]);
        // The latest is kept even when it alone is over budget; nothing else then fits.
        let tiny = Retention { keep_revisions: 0, budget_bytes: 5 };
        assert_eq!(dropped(tiny, &[10; 4], Some(4)), [1, 2, 3]);
        // Both limits at once: the stricter wins.
        let both = Retention { keep_revisions: 2, budget_bytes: 1000 };
        assert_eq!(dropped(both, &[10; 5], Some(5)), [1, 2, 3]);
        assert_eq!(
            dropped(Retention { keep_revisions: 3, budget_bytes: 15 }, &[10; 5], Some(5)),
            [1, 2, 3, 4]
        );
        // Without a latest record, the count and the budget alone decide.
        assert_eq!(dropped(Retention { keep_revisions: 0, budget_bytes: 25 }, &[10; 4], None), [1, 2]);
    }
}
