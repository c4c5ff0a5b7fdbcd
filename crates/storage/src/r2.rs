//! Weights in Cloudflare R2 or any S3-compatible bucket, on `object_store`.
//!
//! Keys (under `r2_prefix`, if set): `weights/<name>` for the file, `weights/<name>.sha256` for its recorded hash and size,
//! `weights/<patch name>` for the patches that make downloads small (`crate::patch`),
//! `latest.json` for the latest record (one PUT, so readers see the old record or the new one).
//! Large files go up in 8 MiB multipart chunks streamed from disk; downloads stream too.
//! Timeouts and retries are explicit and short, so an unreachable bucket is noticed in seconds
//! and the adapter can fall back to local storage.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as KeyPath;
use object_store::signer::Signer;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use crate::backend::{
    StorageBackend, StorageError, StorageResult, StoredWeights, UrlKind, WeightsData, WeightsReader,
    WeightsUrl, parse_weights_path,
};
use crate::config::R2Settings;
use crate::hashing::{hash_bytes, hash_file};
use crate::latest::LatestInfo;
use crate::local::StoredPatch;
use crate::naming::{LATEST_FILE, SIDECAR_SUFFIX, WEIGHTS_PREFIX, WeightsName, is_sha256_hex};
use crate::patch::PatchName;
use crate::secret::redact;

/// Multipart chunk size.
const PART: usize = 8 << 20;
/// Parts in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// The longest validity R2 and S3 accept for a presigned URL.
pub const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

/// The bucket backend.
#[derive(Clone, Debug)]
pub struct R2StorageBackend {
    store: Arc<AmazonS3>,
    settings: R2Settings,
}

impl R2StorageBackend {
    /// A client for the bucket. Makes no request: see [`R2StorageBackend::probe`].
    pub fn new(settings: R2Settings) -> StorageResult<R2StorageBackend> {
        let options = ClientOptions::new()
            .with_allow_http(settings.endpoint.starts_with("http://"))
            .with_connect_timeout(settings.connect_timeout)
            .with_timeout(settings.request_timeout);
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: settings.max_retries,
            retry_timeout: settings.request_timeout.max(Duration::from_secs(5)),
        };
        let store = AmazonS3Builder::new()
            .with_endpoint(&settings.endpoint)
            .with_region(&settings.region)
            .with_bucket_name(&settings.bucket)
            .with_access_key_id(settings.access_key.expose())
            .with_secret_access_key(settings.secret_key.expose())
            .with_virtual_hosted_style_request(false)
            .with_client_options(options)
            .with_retry(retry)
            .build()
            .map_err(|e| StorageError::Remote {
                operation: "configuration",
                message: redact_error(&settings, &e),
            })?;
        Ok(R2StorageBackend { store: Arc::new(store), settings })
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.settings.bucket
    }

    /// Whether URLs are public (never signed) rather than presigned.
    pub fn serves_public_urls(&self) -> bool {
        self.settings.public_url.is_some()
    }

    /// One cheap authenticated request: succeeds if the bucket is reachable and the credentials
    /// are accepted (a missing latest record is fine).
    pub async fn probe(&self) -> StorageResult<()> {
        match self.store.head(&self.key(LATEST_FILE)).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.remote("probe", &e)),
        }
    }

    /// The key of `relative` (`latest.json`, `weights/<name>`) under the configured prefix.
    fn key(&self, relative: &str) -> KeyPath {
        if self.settings.prefix.is_empty() {
            KeyPath::from(relative)
        } else {
            KeyPath::from(format!("{}/{relative}", self.settings.prefix))
        }
    }

    fn sidecar_key(&self, name: &WeightsName) -> KeyPath {
        self.key(&format!("{WEIGHTS_PREFIX}/{}", name.sidecar()))
    }

    fn remote(&self, operation: &'static str, error: &object_store::Error) -> StorageError {
        StorageError::Remote { operation, message: redact_error(&self.settings, error) }
    }

    async fn put_small(&self, key: &KeyPath, bytes: Bytes, operation: &'static str) -> StorageResult<()> {
        self.store.put(key, PutPayload::from(bytes)).await.map(|_| ()).map_err(|e| self.remote(operation, &e))
    }

    /// Streams a local file into `key`: one PUT when small, else multipart in 8 MiB parts.
    async fn upload_file(&self, path: &std::path::Path, key: &KeyPath, size: u64) -> StorageResult<()> {
        let io_error =
            |source| StorageError::Io { action: "reading for upload", path: path.to_path_buf(), source };
        let mut file = tokio::fs::File::open(path).await.map_err(io_error)?;
        if size <= PART as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).await.map_err(io_error)?;
            return self.put_small(key, Bytes::from(bytes), "upload").await;
        }
        let upload =
            self.store.put_multipart(key).await.map_err(|e| self.remote("starting an upload", &e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buffer = vec![0u8; PART];
        loop {
            let n = match file.read(&mut buffer).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(io_error(e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                return Err(self.remote("uploading a part", &e));
            }
            writer.put(Bytes::copy_from_slice(&buffer[..n]));
        }
        writer.finish().await.map(|_| ()).map_err(|e| self.remote("completing an upload", &e))
    }

    async fn read_sidecar(&self, name: &WeightsName) -> StorageResult<Option<(String, u64)>> {
        let key = self.sidecar_key(name);
        let bytes = match self.store.get(&key).await {
            Ok(result) => result.bytes().await.map_err(|e| self.remote("reading a hash sidecar", &e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.remote("reading a hash sidecar", &e)),
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut parts = text.split_whitespace();
        match (parts.next(), parts.next().and_then(|s| s.parse::<u64>().ok())) {
            (Some(sha), Some(size)) if is_sha256_hex(sha) => Ok(Some((sha.to_string(), size))),
            _ => Err(StorageError::Corrupt {
                name: key.to_string(),
                check: "sidecar",
                expected: "<sha256> <size>".into(),
                actual: text.chars().take(100).collect(),
            }),
        }
    }
}

/// An object_store error as text with credentials and signatures removed.
fn redact_error(settings: &R2Settings, error: &object_store::Error) -> String {
    redact(&error.to_string(), &[&settings.access_key, &settings.secret_key])
}

#[async_trait]
impl StorageBackend for R2StorageBackend {
    fn kind(&self) -> &'static str {
        "r2"
    }

    async fn save_weights(&self, weights_data: WeightsData, revision: u64) -> StorageResult<StoredWeights> {
        // The name depends on the hash, so a new file is read twice: once to hash, once to upload.
        // A locally stored file comes with its recorded hash and is read once.
        let (sha256, size) = match &weights_data {
            WeightsData::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    hash_file(&path).map_err(|source| StorageError::Io { action: "hashing", path, source })
                })
                .await
                .map_err(|e| StorageError::Remote { operation: "hashing", message: e.to_string() })??
            }
            WeightsData::Bytes(bytes) => (hash_bytes(bytes), bytes.len() as u64),
            WeightsData::Stored { sha256, size, .. } => (sha256.clone(), *size),
        };
        let name = WeightsName::new(revision, &sha256);
        let key = self.key(&name.key());
        // Already there with the same recorded hash: nothing to do (idempotent catch-up).
        if self.read_sidecar(&name).await? == Some((sha256.clone(), size)) {
            return Ok(StoredWeights { name, sha256, size, stored_at: None });
        }
        match weights_data {
            WeightsData::File(path) | WeightsData::Stored { path, .. } => {
                self.upload_file(&path, &key, size).await?
            }
            WeightsData::Bytes(bytes) => self.put_small(&key, bytes, "upload").await?,
        }
        let sidecar = self.sidecar_key(&name);
        self.put_small(&sidecar, Bytes::from(format!("{sha256} {size}\n")), "upload of a hash sidecar")
            .await?;
        Ok(StoredWeights { name, sha256, size, stored_at: Some(OffsetDateTime::now_utc()) })
    }

    async fn get_weights_url_until(
        &self,
        weights_path: &str,
        _revision: u64,
        valid_until: OffsetDateTime,
    ) -> StorageResult<WeightsUrl> {
        let name = parse_weights_path(weights_path)?;
        self.url_until(&name.key(), valid_until).await
    }

    async fn write_latest(&self, info: &LatestInfo) -> StorageResult<()> {
        let bytes = serde_json::to_vec_pretty(info).expect("a latest record always serializes");
        self.put_small(&self.key(LATEST_FILE), Bytes::from(bytes), "writing latest.json").await
    }

    async fn read_latest_info(&self) -> StorageResult<Option<LatestInfo>> {
        let bytes = match self.store.get(&self.key(LATEST_FILE)).await {
            Ok(result) => result.bytes().await.map_err(|e| self.remote("reading latest.json", &e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.remote("reading latest.json", &e)),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| StorageError::CorruptLatest {
            location: format!("bucket {} key {}", self.settings.bucket, self.key(LATEST_FILE)),
            reason: e.to_string(),
        })
    }

    async fn list_revisions(&self) -> StorageResult<Vec<StoredWeights>> {
        let prefix = self.key(WEIGHTS_PREFIX);
        let objects: Vec<_> =
            self.store.list(Some(&prefix)).try_collect().await.map_err(|e| self.remote("listing", &e))?;
        let mut stored = Vec::new();
        for object in objects {
            let Some(file_name) = object.location.filename() else { continue };
            if file_name.ends_with(SIDECAR_SUFFIX) {
                continue;
            }
            let Ok(name) = WeightsName::parse(file_name) else { continue };
            // A file without its sidecar is an interrupted upload: not stored yet.
            if let Some((sha256, size)) = self.read_sidecar(&name).await? {
                stored.push(StoredWeights {
                    name,
                    sha256,
                    size,
                    stored_at: OffsetDateTime::from_unix_timestamp(object.last_modified.timestamp()).ok(),
                });
            }
        }
        stored.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(stored)
    }

    async fn open_weights(&self, name: &WeightsName) -> StorageResult<WeightsReader> {
        let result = match self.store.get(&self.key(&name.key())).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StorageError::NotFound(name.to_string()));
            }
            Err(e) => return Err(self.remote("download", &e)),
        };
        let settings = self.settings.clone();
        let stream = result
            .into_stream()
            .map(move |chunk| chunk.map_err(|e| std::io::Error::other(redact_error(&settings, &e))));
        Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
    }

    async fn delete_weights(&self, name: &WeightsName) -> StorageResult<()> {
        if let Some(latest) = self.read_latest_info().await?
            && latest.weights_file == name.to_string()
        {
            return Err(StorageError::InUse(name.to_string()));
        }
        // Sidecar first: without it the file no longer counts as stored, even if the second delete fails.
        self.store.delete(&self.sidecar_key(name)).await.map_err(|e| self.remote("delete", &e))?;
        self.store.delete(&self.key(&name.key())).await.map_err(|e| self.remote("delete", &e))?;
        self.delete_patches_of(name).await
    }
}

impl R2StorageBackend {
    /// A URL for the object `relative` (`weights/<name>`) that still works at `valid_until`:
    /// under the public base URL if one is set, else presigned.
    async fn url_until(&self, relative: &str, valid_until: OffsetDateTime) -> StorageResult<WeightsUrl> {
        if let Some(base) = &self.settings.public_url {
            return Ok(WeightsUrl {
                url: format!("{}/{}", base.trim_end_matches('/'), self.key(relative)),
                kind: UrlKind::Public,
                valid_until: None,
            });
        }
        let wanted = (valid_until - OffsetDateTime::now_utc()).max(time::Duration::seconds(1));
        let wanted = Duration::try_from(wanted).unwrap_or(MAX_PRESIGN);
        if wanted > MAX_PRESIGN {
            return Err(StorageError::Presign(format!(
                "a presigned URL lives at most 7 days; {} days were asked for (shorten the record's deadline)",
                wanted.as_secs() / 86_400
            )));
        }
        let url = self
            .store
            .signed_url(object_store::signer::Method::GET, &self.key(relative), wanted)
            .await
            .map_err(|e| StorageError::Presign(redact_error(&self.settings, &e)))?;
        Ok(WeightsUrl {
            url: url.to_string(),
            kind: UrlKind::Presigned,
            valid_until: Some(OffsetDateTime::now_utc() + wanted),
        })
    }

    /// Uploads a locally stored patch (`path`) under its name. Its hash and size travel in the
    /// latest record, so it needs no sidecar; a patch cut short by a failure is never named.
    pub async fn save_patch(&self, path: &std::path::Path, patch: &StoredPatch) -> StorageResult<()> {
        self.upload_file(path, &self.key(&patch.name.key()), patch.size).await
    }

    /// A URL for a patch in the bucket that still works at `valid_until`.
    pub async fn patch_url_until(
        &self,
        name: &PatchName,
        valid_until: OffsetDateTime,
    ) -> StorageResult<WeightsUrl> {
        self.url_until(&name.key(), valid_until).await
    }

    /// Every patch stored in the bucket.
    pub async fn list_patches(&self) -> StorageResult<Vec<PatchName>> {
        let prefix = self.key(WEIGHTS_PREFIX);
        let objects: Vec<_> =
            self.store.list(Some(&prefix)).try_collect().await.map_err(|e| self.remote("listing", &e))?;
        let mut patches: Vec<PatchName> =
            objects.iter().filter_map(|o| PatchName::parse(o.location.filename()?).ok()).collect();
        patches.sort();
        Ok(patches)
    }

    /// Deletes the patches in the bucket that produce `target`.
    async fn delete_patches_of(&self, target: &WeightsName) -> StorageResult<()> {
        for patch in self.list_patches().await?.into_iter().filter(|p| p.target() == target) {
            self.store.delete(&self.key(&patch.key())).await.map_err(|e| self.remote("delete", &e))?;
        }
        Ok(())
    }

    /// Streams any object of the bucket (`r2://bucket/key` as given to `--resume-from`) into a
    /// local file, never whole in memory.
    pub async fn download_key(&self, key: &str, destination: &std::path::Path) -> StorageResult<u64> {
        let io = |source| StorageError::Io { action: "writing", path: destination.to_path_buf(), source };
        let result = match self.store.get(&KeyPath::from(key)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StorageError::NotFound(format!("r2://{}/{key}", self.settings.bucket)));
            }
            Err(e) => return Err(self.remote("download", &e)),
        };
        let mut file = tokio::fs::File::create(destination).await.map_err(io)?;
        let mut stream = result.into_stream();
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.remote("download", &e))?;
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await.map_err(io)?;
            written += chunk.len() as u64;
        }
        file.sync_all().await.map_err(io)?;
        Ok(written)
    }

    /// Stores a small object at `relative` (under the key prefix) in one PUT.
    pub async fn put_object(&self, relative: &str, bytes: Bytes) -> StorageResult<()> {
        self.put_small(&self.key(relative), bytes, "upload of an object").await
    }

    /// The object at `relative`, whole; [`StorageError::NotFound`] when there is none.
    pub async fn get_object(&self, relative: &str) -> StorageResult<Vec<u8>> {
        let key = self.key(relative);
        match self.store.get(&key).await {
            Ok(result) => {
                result.bytes().await.map(|b| b.to_vec()).map_err(|e| self.remote("download of an object", &e))
            }
            Err(object_store::Error::NotFound { .. }) => {
                Err(StorageError::NotFound(format!("r2://{}/{key}", self.settings.bucket)))
            }
            Err(e) => Err(self.remote("download of an object", &e)),
        }
    }

    /// Deletes the object at `relative` (nothing to do when it is not there).
    pub async fn delete_object(&self, relative: &str) -> StorageResult<()> {
        match self.store.delete(&self.key(relative)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.remote("delete of an object", &e)),
        }
    }

    /// The names of the objects directly under `relative_prefix/`.
    pub async fn list_objects(&self, relative_prefix: &str) -> StorageResult<Vec<String>> {
        let prefix = self.key(relative_prefix);
        let objects: Vec<_> =
            self.store.list(Some(&prefix)).try_collect().await.map_err(|e| self.remote("listing", &e))?;
        Ok(objects.iter().filter_map(|o| o.location.filename().map(str::to_string)).collect())
    }

    /// Whether `weights_path` names a file stored in the bucket.
    pub async fn contains(&self, weights_path: &str) -> StorageResult<bool> {
        let name = parse_weights_path(weights_path)?;
        Ok(self.read_sidecar(&name).await?.is_some())
    }
}
