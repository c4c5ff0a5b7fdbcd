//! Downloading weights for workers: any `file://`, `http://` or `https://` URL into a cache keyed
//! by SHA-256. A download streams into a temp file, hashing as it goes; it is renamed into the
//! cache only if both its size and its SHA-256 match the latest record. Otherwise it is deleted and
//! the error says which check failed. An interrupted HTTP download resumes with `Range`. A URL the
//! server refuses with 400 or 403 (an expired or tampered presigned URL) is reported as such, so
//! the caller fetches the latest record again instead of retrying a dead URL.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::hashing::CHUNK;
use crate::naming::is_sha256_hex;
use crate::secret::redact_signed_queries;

/// What the latest record promises about a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// SHA-256, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// A patch the latest record offers instead of the whole file (see [`crate::patch`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchSource {
    /// Where to download it.
    pub url: String,
    /// The patch file's own SHA-256 and size.
    pub expected: Expected,
    /// The weights file it applies to (a delta); none for a compressed whole file.
    pub base_sha256: Option<String>,
}

/// How a fetch got its file, and the bytes it downloaded for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// Already in the cache: nothing downloaded.
    Cached,
    /// A delta applied to a cached revision.
    Delta {
        /// Bytes downloaded.
        bytes: u64,
    },
    /// The whole file, compressed.
    Compressed {
        /// Bytes downloaded.
        bytes: u64,
    },
    /// The whole file as stored.
    Whole {
        /// Bytes downloaded.
        bytes: u64,
    },
}

impl Fetched {
    /// Bytes downloaded.
    pub fn bytes(self) -> u64 {
        match self {
            Fetched::Cached => 0,
            Fetched::Delta { bytes } | Fetched::Compressed { bytes } | Fetched::Whole { bytes } => bytes,
        }
    }

    /// `cached`, `delta`, `compressed` or `whole`.
    pub fn how(self) -> &'static str {
        match self {
            Fetched::Cached => "cached",
            Fetched::Delta { .. } => "delta",
            Fetched::Compressed { .. } => "compressed",
            Fetched::Whole { .. } => "whole",
        }
    }
}

/// How often and how patiently to retry.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Delay before the second attempt; doubles each time, with ±50% jitter.
    pub base_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Why a download was not accepted. URLs in messages have their signatures removed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The bytes did not match the record; the download was deleted.
    #[error(
        "download of {url} failed the {check} check: expected {expected}, got {actual}; the file was deleted"
    )]
    Mismatch {
        /// The URL (redacted).
        url: String,
        /// `size` or `sha256`.
        check: &'static str,
        /// What the record said.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// The server refused the URL itself: an expired or tampered presigned URL.
    #[error(
        "{url} was refused with HTTP {status}: the URL has expired or is not valid; fetch the latest record again"
    )]
    UrlRejected {
        /// The URL (redacted).
        url: String,
        /// 400 or 403.
        status: u16,
    },
    /// Another HTTP status.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The URL (redacted).
        url: String,
        /// The status.
        status: u16,
    },
    /// The connection failed or ended early (a partial download is kept for resuming).
    #[error("{url}: {message}")]
    Network {
        /// The URL (redacted).
        url: String,
        /// What happened.
        message: String,
    },
    /// Local disk trouble.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A URL scheme other than file, http and https.
    #[error("unsupported URL `{0}`: weights URLs are file://, http:// or https://")]
    UnsupportedUrl(String),
    /// A patch downloaded intact could not be applied to the cached base.
    #[error("the patch {url} could not be applied: {message}")]
    Patch {
        /// The patch URL (redacted).
        url: String,
        /// What was wrong.
        message: String,
    },
    /// The record's hash is not a SHA-256.
    #[error("the expected SHA-256 `{0}` is not 64 lower-case hex digits")]
    BadExpectedHash(String),
}

impl FetchError {
    /// Worth trying the same URL again after a pause.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Network { .. } | FetchError::Mismatch { .. } => true,
            FetchError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FetchError + 'a {
    move |source| FetchError::Io { action, path: path.to_path_buf(), source }
}

/// A download cache with a disk budget.
pub struct Fetcher {
    cache_dir: PathBuf,
    budget_bytes: u64,
    client: reqwest::Client,
    policy: RetryPolicy,
    in_use: Mutex<HashSet<String>>,
    bearer: Option<(String, crate::Secret)>,
}

impl Fetcher {
    /// A fetcher caching under `cache_dir`, keeping at most `budget_bytes` of weights (the files in
    /// use are never evicted, even over budget).
    pub fn new(cache_dir: &Path, budget_bytes: u64, policy: RetryPolicy) -> Result<Fetcher, FetchError> {
        std::fs::create_dir_all(cache_dir).map_err(io_error("creating the cache directory", cache_dir))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("zero2048/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Network { url: String::new(), message: e.to_string() })?;
        Ok(Fetcher {
            cache_dir: cache_dir.to_path_buf(),
            budget_bytes,
            client,
            policy,
            in_use: Mutex::new(HashSet::new()),
            bearer: None,
        })
    }

    /// Sends `Authorization: Bearer <token>` with downloads from URLs under `url_prefix` (a
    /// server that requires worker tokens for its weights), and to no other host.
    pub fn authorize(&mut self, url_prefix: &str, token: crate::Secret) {
        self.bearer = Some((url_prefix.trim_end_matches('/').to_string() + "/", token));
    }

    /// The cached path for a hash, if present.
    pub fn cached(&self, sha256: &str) -> Option<PathBuf> {
        let path = self.cache_dir.join(sha256);
        (is_sha256_hex(sha256) && path.is_file()).then_some(path)
    }

    /// Marks the files a worker is using now; eviction never removes them.
    pub fn set_in_use(&self, hashes: &[&str]) {
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        in_use.clear();
        in_use.extend(hashes.iter().map(|h| h.to_string()));
    }

    /// Downloads and verifies, retrying transient failures with jittered exponential backoff.
    /// A cached file with the expected hash is returned without a download.
    pub async fn fetch(&self, url: &str, expected: &Expected) -> Result<PathBuf, FetchError> {
        let mut delay = self.policy.base_delay;
        let mut attempt = 1;
        loop {
            match self.fetch_once(url, expected).await {
                Ok(path) => return Ok(path),
                Err(error) if error.is_transient() && attempt < self.policy.attempts.max(1) => {
                    tracing::warn!("weights download attempt {attempt} failed, retrying: {error}");
                    let jitter = 0.5 + rand::random::<f64>();
                    tokio::time::sleep(delay.mul_f64(jitter)).await;
                    delay = (delay * 2).min(self.policy.max_delay);
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Fetches the file with the fewest bytes on the wire: nothing if it is cached, else a delta
    /// against a cached revision, else the compressed file, else the whole file (with retries).
    /// A patch that fails (unreachable, corrupt, for another base) is logged and the next way is
    /// tried; whatever way is taken, the result is checked against the full file's SHA-256.
    pub async fn fetch_smallest(
        &self,
        url: &str,
        expected: &Expected,
        patches: &[PatchSource],
    ) -> Result<(PathBuf, Fetched), FetchError> {
        if !is_sha256_hex(&expected.sha256) {
            return Err(FetchError::BadExpectedHash(expected.sha256.clone()));
        }
        if let Some(path) = self.cached_intact(expected) {
            return Ok((path, Fetched::Cached));
        }
        let mut usable: Vec<&PatchSource> = patches
            .iter()
            .filter(|p| p.base_sha256.as_deref().is_none_or(|base| self.cached(base).is_some()))
            .collect();
        // Deltas first (a base is cached), then the compressed whole file; smaller first within each.
        usable.sort_by_key(|p| (p.base_sha256.is_none(), p.expected.size));
        for patch in usable {
            match self.fetch_patch(patch, expected).await {
                Ok(path) => {
                    let bytes = patch.expected.size;
                    let fetched = if patch.base_sha256.is_some() {
                        Fetched::Delta { bytes }
                    } else {
                        Fetched::Compressed { bytes }
                    };
                    return Ok((path, fetched));
                }
                Err(e) => tracing::warn!("downloading the whole weights file instead of a patch: {e}"),
            }
        }
        let path = self.fetch(url, expected).await?;
        Ok((path, Fetched::Whole { bytes: expected.size }))
    }

    /// Downloads a patch, checks it against its own hash, applies it to its cached base and
    /// accepts the result only if it hashes to `expected`.
    async fn fetch_patch(&self, patch: &PatchSource, expected: &Expected) -> Result<PathBuf, FetchError> {
        if !is_sha256_hex(&patch.expected.sha256) {
            return Err(FetchError::BadExpectedHash(patch.expected.sha256.clone()));
        }
        let shown = redact_signed_queries(&patch.url);
        let base = match &patch.base_sha256 {
            Some(sha) => Some((
                self.cached(sha).ok_or_else(|| FetchError::Patch {
                    url: shown.clone(),
                    message: format!("its base {sha} left the cache"),
                })?,
                sha.clone(),
            )),
            None => None,
        };
        let patch_file = self.cache_dir.join(format!("patch-{}.partial", patch.expected.sha256));
        let downloaded = async {
            self.download_any(&patch.url, &patch_file, patch.expected.size).await?;
            let (sha256, size) = hash_async(&patch_file).await.map_err(io_error("hashing", &patch_file))?;
            if size != patch.expected.size || sha256 != patch.expected.sha256 {
                return Err(FetchError::Mismatch {
                    url: shown.clone(),
                    check: if size != patch.expected.size { "size" } else { "sha256" },
                    expected: format!("{} bytes, {}", patch.expected.size, patch.expected.sha256),
                    actual: format!("{size} bytes, {sha256}"),
                });
            }
            Ok(())
        }
        .await;
        if let Err(e) = downloaded {
            let _ = tokio::fs::remove_file(&patch_file).await;
            return Err(e);
        }
        let partial = self.cache_dir.join(format!("{}.partial", expected.sha256));
        let (source, target, wanted) = (patch_file.clone(), partial.clone(), expected.clone());
        let applied = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let patch = std::fs::File::open(&source).map_err(|e| e.to_string())?;
            let mut base_file = match &base {
                Some((path, sha)) => {
                    Some((std::fs::File::open(path).map_err(|e| e.to_string())?, sha.as_str()))
                }
                None => None,
            };
            let out = std::fs::File::create(&target).map_err(|e| e.to_string())?;
            let mut writer = std::io::BufWriter::with_capacity(CHUNK, out);
            crate::patch::apply_patch(
                std::io::BufReader::with_capacity(CHUNK, patch),
                base_file.as_mut().map(|(file, sha)| (file as &mut dyn std::io::Read, *sha)),
                wanted.size,
                &wanted.sha256,
                &mut writer,
            )
            .map_err(|e| e.to_string())?;
            let out = writer.into_inner().map_err(|e| e.to_string())?;
            out.sync_all().map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        let _ = tokio::fs::remove_file(&patch_file).await;
        if let Err(message) = applied {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(FetchError::Patch { url: shown, message });
        }
        self.accept(&patch.url, &partial, expected).await
    }

    /// The cached file with `expected`'s hash, if its size is right too (touched, so eviction
    /// sees it as recently used); a cached file of the wrong size is removed.
    fn cached_intact(&self, expected: &Expected) -> Option<PathBuf> {
        let path = self.cached(&expected.sha256)?;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size == expected.size {
            let _ = std::fs::File::open(&path).and_then(|f| f.set_modified(SystemTime::now()));
            return Some(path);
        }
        let _ = std::fs::remove_file(&path);
        None
    }

    /// One attempt, no retry.
    pub async fn fetch_once(&self, url: &str, expected: &Expected) -> Result<PathBuf, FetchError> {
        if !is_sha256_hex(&expected.sha256) {
            return Err(FetchError::BadExpectedHash(expected.sha256.clone()));
        }
        if let Some(path) = self.cached_intact(expected) {
            return Ok(path);
        }
        let partial = self.cache_dir.join(format!("{}.partial", expected.sha256));
        self.download_any(url, &partial, expected.size).await?;
        self.accept(url, &partial, expected).await
    }

    /// Copies a file:// URL, or downloads (resuming) an http(s):// URL, into `partial`.
    async fn download_any(&self, url: &str, partial: &Path, size: u64) -> Result<(), FetchError> {
        let parsed =
            url::Url::parse(url).map_err(|_| FetchError::UnsupportedUrl(redact_signed_queries(url)))?;
        match parsed.scheme() {
            "file" => {
                let source =
                    parsed.to_file_path().map_err(|_| FetchError::UnsupportedUrl(url.to_string()))?;
                self.copy_file(&source, partial).await
            }
            "http" | "https" => self.download(url, partial, size).await,
            _ => Err(FetchError::UnsupportedUrl(redact_signed_queries(url))),
        }
    }

    async fn copy_file(&self, source: &Path, partial: &Path) -> Result<(), FetchError> {
        tokio::fs::copy(source, partial).await.map_err(io_error("copying", source)).map(|_| ())
    }

    /// Streams `url` into `partial`, resuming from what is already there.
    async fn download(&self, url: &str, partial: &Path, size: u64) -> Result<(), FetchError> {
        let shown = redact_signed_queries(url);
        let mut have = tokio::fs::metadata(partial).await.map(|m| m.len()).unwrap_or(0);
        if have >= size {
            let _ = tokio::fs::remove_file(partial).await;
            have = 0;
        }
        let mut request = self.client.get(url);
        if let Some((prefix, token)) = &self.bearer
            && url.starts_with(prefix.as_str())
        {
            request = request.bearer_auth(token.expose());
        }
        if have > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let response = request.send().await.map_err(|e| FetchError::Network {
            url: shown.clone(),
            message: redact_signed_queries(&e.to_string()),
        })?;
        let status = response.status().as_u16();
        let append = match status {
            206 => true,
            200 => false,
            400 | 403 => return Err(FetchError::UrlRejected { url: shown, status }),
            416 => {
                let _ = tokio::fs::remove_file(partial).await;
                return Err(FetchError::Network {
                    url: shown,
                    message: "range not satisfiable; restarting".into(),
                });
            }
            _ => return Err(FetchError::Status { url: shown, status }),
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(partial)
            .await
            .map_err(io_error("opening", partial))?;
        let mut written = if append { have } else { 0 };
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| FetchError::Network {
                url: shown.clone(),
                message: format!(
                    "connection failed after {written} of {size} bytes: {}",
                    redact_signed_queries(&e.to_string())
                ),
            })?;
            if written + chunk.len() as u64 > size {
                drop(file);
                let _ = tokio::fs::remove_file(partial).await;
                return Err(FetchError::Mismatch {
                    url: shown,
                    check: "size",
                    expected: format!("{size} bytes"),
                    actual: format!("more than {size} bytes"),
                });
            }
            file.write_all(&chunk).await.map_err(io_error("writing", partial))?;
            written += chunk.len() as u64;
        }
        file.sync_all().await.map_err(io_error("syncing", partial))?;
        if written < size {
            return Err(FetchError::Network {
                url: shown,
                message: format!("the download ended after {written} of {size} bytes; it will resume"),
            });
        }
        Ok(())
    }

    /// Downloads a URL whose hash nobody has recorded (a file someone points `--resume-from` at):
    /// streams it into the cache under its own SHA-256 and returns the path and hash. The caller
    /// must check the content itself (a weights file's metadata and shapes, say).
    pub async fn fetch_unpinned(&self, url: &str) -> Result<(PathBuf, String), FetchError> {
        let shown = redact_signed_queries(url);
        let partial = self.cache_dir.join(format!(".unpinned-{}.partial", rand::random::<u64>()));
        let parsed = url::Url::parse(url).map_err(|_| FetchError::UnsupportedUrl(shown.clone()))?;
        let result = async {
            match parsed.scheme() {
                "file" => {
                    let source =
                        parsed.to_file_path().map_err(|_| FetchError::UnsupportedUrl(shown.clone()))?;
                    self.copy_file(&source, &partial).await
                }
                "http" | "https" => {
                    let response = self.client.get(url).send().await.map_err(|e| FetchError::Network {
                        url: shown.clone(),
                        message: redact_signed_queries(&e.to_string()),
                    })?;
                    let status = response.status().as_u16();
                    match status {
                        200 => {}
                        400 | 403 => return Err(FetchError::UrlRejected { url: shown.clone(), status }),
                        _ => return Err(FetchError::Status { url: shown.clone(), status }),
                    }
                    let mut file =
                        tokio::fs::File::create(&partial).await.map_err(io_error("creating", &partial))?;
                    let mut body = response.bytes_stream();
                    while let Some(chunk) = body.next().await {
                        let chunk = chunk.map_err(|e| FetchError::Network {
                            url: shown.clone(),
                            message: e.to_string(),
                        })?;
                        file.write_all(&chunk).await.map_err(io_error("writing", &partial))?;
                    }
                    file.sync_all().await.map_err(io_error("syncing", &partial))
                }
                _ => Err(FetchError::UnsupportedUrl(shown.clone())),
            }
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        let (sha256, _) = hash_async(&partial).await.map_err(io_error("hashing", &partial))?;
        let target = self.cache_dir.join(&sha256);
        tokio::fs::rename(&partial, &target).await.map_err(io_error("renaming into the cache", &target))?;
        Ok((target, sha256))
    }

    /// Checks size and hash of `partial`; renames it into the cache or deletes it.
    async fn accept(&self, url: &str, partial: &Path, expected: &Expected) -> Result<PathBuf, FetchError> {
        let shown = redact_signed_queries(url);
        let reject = |check: &'static str, expected: String, actual: String| {
            let _ = std::fs::remove_file(partial);
            FetchError::Mismatch { url: shown.clone(), check, expected, actual }
        };
        let (sha256, size) = hash_async(partial).await.map_err(io_error("hashing", partial))?;
        if size != expected.size {
            return Err(reject("size", format!("{} bytes", expected.size), format!("{size} bytes")));
        }
        if sha256 != expected.sha256 {
            return Err(reject("sha256", expected.sha256.clone(), sha256));
        }
        let target = self.cache_dir.join(&expected.sha256);
        tokio::fs::rename(partial, &target).await.map_err(io_error("renaming into the cache", &target))?;
        if let Ok(dir) = std::fs::File::open(&self.cache_dir) {
            let _ = dir.sync_all();
        }
        self.evict(&expected.sha256).map_err(io_error("evicting from", &self.cache_dir))?;
        Ok(target)
    }

    /// The bytes of weights in the cache now, and the budget they are held to.
    pub fn usage(&self) -> std::io::Result<(u64, u64)> {
        let mut total = 0;
        for entry in std::fs::read_dir(&self.cache_dir)? {
            let entry = entry?;
            if is_sha256_hex(&entry.file_name().to_string_lossy()) {
                total += entry.metadata()?.len();
            }
        }
        Ok((total, self.budget_bytes))
    }

    /// Deletes the least recently used cached files until the cache fits its budget, never
    /// `keep` nor a file marked in use. Returns the bytes freed.
    pub fn evict(&self, keep: &str) -> std::io::Result<u64> {
        let protected = {
            let in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
            let mut p = in_use.clone();
            p.insert(keep.to_string());
            p
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.cache_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_sha256_hex(&name) {
                continue;
            }
            let metadata = entry.metadata()?;
            files.push((
                metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                metadata.len(),
                name,
                entry.path(),
            ));
        }
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        let mut freed = 0;
        for (_, size, name, path) in files {
            if total <= self.budget_bytes {
                break;
            }
            if protected.contains(&name) {
                continue;
            }
            std::fs::remove_file(&path)?;
            total -= size;
            freed += size;
        }
        Ok(freed)
    }
}

async fn hash_async(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}
