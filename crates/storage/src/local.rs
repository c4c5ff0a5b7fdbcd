//! Weights on local disk, served as `file://` URLs or over the server's HTTP.
//!
//! Every write is temp file → fsync → rename → fsync of the directory, so a crash leaves either the
//! old file or the new one, never part of one. A weights file's sidecar (`<name>.sha256`, holding
//! the full hash and size) is written before the file itself is renamed into place, and the latest
//! record is written last of all.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::backend::{
    Retention, StorageBackend, StorageError, StorageResult, StoredWeights, UrlKind, WeightsData,
    WeightsReader, WeightsUrl, parse_weights_path,
};
use crate::hashing::{HashingWriter, copy_hashing};
use crate::latest::LatestInfo;
use crate::naming::{LATEST_FILE, SIDECAR_SUFFIX, WeightsName, is_sha256_hex};
use crate::patch::{PatchName, write_patch};

/// A stored patch (see [`crate::patch`]): its name, and its own SHA-256 and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPatch {
    /// Its name (target, and base for a delta).
    pub name: PatchName,
    /// SHA-256 of the patch file's bytes.
    pub sha256: String,
    /// Size of the patch file in bytes.
    pub size: u64,
}

/// How local weights URLs are formed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalUrls {
    /// `file:///absolute/path`.
    File,
    /// `<base>/weights/<file>`, base being `http://host:port`.
    Http {
        /// `http://host:port`.
        base: String,
    },
}

/// The local backend.
#[derive(Clone, Debug)]
pub struct LocalStorageBackend {
    dir: PathBuf,
    urls: LocalUrls,
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |source| StorageError::Io { action, path: path.to_path_buf(), source }
}

impl LocalStorageBackend {
    /// A backend storing under `dir` (created if missing; made absolute so file:// URLs work from
    /// anywhere).
    pub fn new(dir: &Path, urls: LocalUrls) -> StorageResult<LocalStorageBackend> {
        fs::create_dir_all(dir).map_err(io("creating the weights directory", dir))?;
        let dir = dir.canonicalize().map_err(io("resolving the weights directory", dir))?;
        Ok(LocalStorageBackend { dir, urls })
    }

    /// The weights directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How URLs are formed.
    pub fn urls(&self) -> &LocalUrls {
        &self.urls
    }

    /// The path of a stored file.
    pub fn path_of(&self, name: &WeightsName) -> PathBuf {
        self.dir.join(name.to_string())
    }

    /// The stored file for `name`, with its recorded hash and size, if it is there.
    pub fn stat(&self, name: &WeightsName) -> StorageResult<Option<StoredWeights>> {
        let path = self.path_of(name);
        let metadata = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("reading", &path)(e)),
        };
        let sidecar = self.dir.join(name.sidecar());
        let (sha256, size) = read_sidecar(&sidecar)?;
        Ok(Some(StoredWeights {
            name: name.clone(),
            sha256,
            size,
            stored_at: metadata.modified().ok().map(OffsetDateTime::from),
        }))
    }

    /// The path of a stored patch.
    pub fn patch_path(&self, name: &PatchName) -> PathBuf {
        self.dir.join(name.to_string())
    }

    /// The stored patch `name`, with its recorded hash and size, if it is there.
    pub fn stat_patch(&self, name: &PatchName) -> StorageResult<Option<StoredPatch>> {
        if !self.patch_path(name).is_file() {
            return Ok(None);
        }
        let (sha256, size) = read_sidecar(&self.dir.join(format!("{name}{SIDECAR_SUFFIX}")))?;
        Ok(Some(StoredPatch { name: name.clone(), sha256, size }))
    }

    /// Every stored patch that produces `target`.
    pub fn patches_of(&self, target: &WeightsName) -> StorageResult<Vec<StoredPatch>> {
        let mut patches = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io("listing", &self.dir))? {
            let entry = entry.map_err(io("listing", &self.dir))?;
            if let Ok(name) = PatchName::parse(&entry.file_name().to_string_lossy())
                && name.target() == target
                && let Some(patch) = self.stat_patch(&name)?
            {
                patches.push(patch);
            }
        }
        patches.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(patches)
    }

    /// Writes the patches that make `target` small to download: the whole file compressed, and a
    /// delta against `base` when there is one of the same size. Each is written like a weights
    /// file (temp, fsync, sidecar, rename), so a crash never leaves a partial patch under its name.
    pub fn save_patches_blocking(
        &self,
        target: &StoredWeights,
        base: Option<&StoredWeights>,
    ) -> StorageResult<Vec<StoredPatch>> {
        let mut saved = vec![self.save_patch(target, None)?];
        if let Some(base) = base.filter(|b| b.size == target.size && b.name != target.name) {
            saved.push(self.save_patch(target, Some(base))?);
        }
        Ok(saved)
    }

    fn save_patch(&self, target: &StoredWeights, base: Option<&StoredWeights>) -> StorageResult<StoredPatch> {
        let name = match base {
            Some(base) => PatchName::delta(target.name.clone(), base.name.clone()),
            None => PatchName::whole(target.name.clone()),
        };
        if let Some(existing) = self.stat_patch(&name)? {
            return Ok(existing);
        }
        let temp = self.temp_path("patch");
        let result = (|| {
            let target_path = self.path_of(&target.name);
            let mut target_file = File::open(&target_path).map_err(io("opening", &target_path))?;
            let mut base_file = match base {
                Some(base) => {
                    let path = self.path_of(&base.name);
                    Some((File::open(&path).map_err(io("opening", &path))?, base))
                }
                None => None,
            };
            let out = File::create(&temp).map_err(io("creating", &temp))?;
            let mut writer = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, out));
            write_patch(
                &mut target_file,
                target.size,
                &target.sha256,
                base_file
                    .as_mut()
                    .map(|(file, base)| (file as &mut dyn std::io::Read, base.size, base.sha256.as_str())),
                &mut writer,
            )
            .map_err(|e| StorageError::Io {
                action: "writing the patch",
                path: temp.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            let (buffered, sha256, size) = writer.finish();
            let out = buffered.into_inner().map_err(|e| io("writing", &temp)(e.into_error()))?;
            out.sync_all().map_err(io("syncing", &temp))?;
            drop(out);
            self.write_atomically(
                &format!("{name}{SIDECAR_SUFFIX}"),
                format!("{sha256} {size}\n").as_bytes(),
            )?;
            let final_path = self.patch_path(&name);
            fs::rename(&temp, &final_path).map_err(io("renaming into place", &final_path))?;
            self.sync_dir()?;
            Ok(StoredPatch { name: name.clone(), sha256, size })
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Removes the patches that produce `target` (with their sidecars).
    fn remove_patches_of(&self, target: &WeightsName) -> StorageResult<()> {
        for patch in self.patches_of(target)? {
            let path = self.patch_path(&patch.name);
            fs::remove_file(&path).map_err(io("deleting", &path))?;
            let _ = fs::remove_file(self.dir.join(format!("{}{SIDECAR_SUFFIX}", patch.name)));
        }
        Ok(())
    }

    /// A URL for a stored patch, formed like the weights URLs.
    pub fn patch_url(&self, name: &PatchName) -> StorageResult<WeightsUrl> {
        self.url_of(&name.to_string())
    }

    fn save_blocking(&self, data: WeightsData, revision: u64) -> StorageResult<StoredWeights> {
        let temp = self.temp_path("weights");
        let result = (|| {
            let mut out = File::create(&temp).map_err(io("creating", &temp))?;
            let (sha256, size) = match &data {
                // Copied and hashed again: the local store never trusts a claimed hash.
                WeightsData::File(source) | WeightsData::Stored { path: source, .. } => {
                    let mut input = File::open(source).map_err(io("opening", source))?;
                    copy_hashing(&mut input, &mut out).map_err(io("copying weights to", &temp))?
                }
                WeightsData::Bytes(bytes) => {
                    copy_hashing(&mut bytes.as_ref(), &mut out).map_err(io("writing", &temp))?
                }
            };
            out.sync_all().map_err(io("syncing", &temp))?;
            drop(out);
            let name = WeightsName::new(revision, &sha256);
            let final_path = self.path_of(&name);
            self.write_atomically(&name.sidecar(), format!("{sha256} {size}\n").as_bytes())?;
            fs::rename(&temp, &final_path).map_err(io("renaming into place", &final_path))?;
            self.sync_dir()?;
            let stored_at =
                fs::metadata(&final_path).ok().and_then(|m| m.modified().ok()).map(OffsetDateTime::from);
            Ok(StoredWeights { name, sha256, size, stored_at })
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    fn temp_path(&self, what: &str) -> PathBuf {
        self.dir.join(format!(".tmp-{what}-{}-{}", std::process::id(), rand::random::<u64>()))
    }

    /// Writes `bytes` to `file_name` in the directory: temp, fsync, rename, fsync directory.
    fn write_atomically(&self, file_name: &str, bytes: &[u8]) -> StorageResult<()> {
        let temp = self.temp_path("write");
        let target = self.dir.join(file_name);
        let result = (|| {
            let mut out =
                OpenOptions::new().write(true).create_new(true).open(&temp).map_err(io("creating", &temp))?;
            out.write_all(bytes).map_err(io("writing", &temp))?;
            out.sync_all().map_err(io("syncing", &temp))?;
            fs::rename(&temp, &target).map_err(io("renaming into place", &target))?;
            self.sync_dir()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    fn sync_dir(&self) -> StorageResult<()> {
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io("syncing", &self.dir))
    }

    /// The local file the latest record names, after checking its size and SHA-256 against the
    /// record: what a trainer resuming a run, or a player asked for `latest`, may load.
    pub fn checked_latest_file(&self, latest: &LatestInfo) -> StorageResult<PathBuf> {
        let name = WeightsName::parse(&latest.weights_file)?;
        let path = self.path_of(&name);
        let (sha256, size) = crate::hashing::hash_file(&path).map_err(|source| StorageError::Io {
            action: "hashing",
            path: path.clone(),
            source,
        })?;
        let shown = path.display().to_string();
        if size != latest.weights_size {
            return Err(StorageError::Corrupt {
                name: shown,
                check: "size",
                expected: latest.weights_size.to_string(),
                actual: size.to_string(),
            });
        }
        if sha256 != latest.weights_sha256 {
            return Err(StorageError::Corrupt {
                name: shown,
                check: "sha256",
                expected: latest.weights_sha256.clone(),
                actual: sha256,
            });
        }
        Ok(path)
    }

    /// Bytes the stored revisions take on disk (weights files, their patches, and sidecars).
    pub fn disk_usage(&self) -> StorageResult<u64> {
        let mut total = 0;
        for entry in fs::read_dir(&self.dir).map_err(io("listing", &self.dir))? {
            let entry = entry.map_err(io("listing", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let stem = name.trim_end_matches(SIDECAR_SUFFIX);
            if WeightsName::parse(stem).is_ok() || PatchName::parse(stem).is_ok() {
                total += entry.metadata().map_err(io("reading", &entry.path()))?.len();
            }
        }
        Ok(total)
    }

    /// A path in the weights directory to write a file to before publishing it, so the publish
    /// is a rename on the same file system. The file is removed when the guard drops; one a crash
    /// leaves behind is a `.tmp-` file that [`LocalStorageBackend::remove_leftovers`] clears.
    pub fn staging_path(&self, revision: u64) -> StagingPath {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        StagingPath {
            path: self.dir.join(format!(".tmp-staging-r{revision}-{}-{n}.safetensors", std::process::id())),
        }
    }

    /// Removes temp files a crash may have left behind.
    pub fn remove_leftovers(&self) -> StorageResult<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir).map_err(io("listing", &self.dir))? {
            let entry = entry.map_err(io("listing", &self.dir))?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                fs::remove_file(entry.path()).map_err(io("removing", &entry.path()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn url_for(&self, name: &WeightsName) -> StorageResult<WeightsUrl> {
        self.url_of(&name.to_string())
    }

    /// The URL of a stored file (a weights file or a patch) of this directory.
    fn url_of(&self, file_name: &str) -> StorageResult<WeightsUrl> {
        let url = match &self.urls {
            LocalUrls::File => url::Url::from_file_path(self.dir.join(file_name))
                .map_err(|_| StorageError::NotFound(file_name.to_string()))?
                .to_string(),
            LocalUrls::Http { base } => format!("{}/weights/{file_name}", base.trim_end_matches('/')),
        };
        let kind = if self.urls == LocalUrls::File { UrlKind::File } else { UrlKind::Http };
        Ok(WeightsUrl { url, kind, valid_until: None })
    }
}

/// See [`LocalStorageBackend::staging_path`].
#[derive(Debug)]
pub struct StagingPath {
    path: PathBuf,
}

impl StagingPath {
    /// The path to write to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StagingPath {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn read_sidecar(path: &Path) -> StorageResult<(String, u64)> {
    let text = fs::read_to_string(path).map_err(io("reading the hash sidecar", path))?;
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next().and_then(|s| s.parse::<u64>().ok())) {
        (Some(sha), Some(size)) if is_sha256_hex(sha) => Ok((sha.to_string(), size)),
        _ => Err(StorageError::Corrupt {
            name: path.display().to_string(),
            check: "sidecar",
            expected: "<sha256> <size>".into(),
            actual: text.chars().take(100).collect(),
        }),
    }
}

/// Runs blocking file-system work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> StorageResult<T> + Send + 'static,
) -> StorageResult<T> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|join| {
        Err(StorageError::Io {
            action: "running",
            path: PathBuf::new(),
            source: std::io::Error::other(join.to_string()),
        })
    })
}

#[async_trait]
impl StorageBackend for LocalStorageBackend {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn save_weights(&self, weights_data: WeightsData, revision: u64) -> StorageResult<StoredWeights> {
        let this = self.clone();
        blocking(move || this.save_blocking(weights_data, revision)).await
    }

    async fn get_weights_url_until(
        &self,
        weights_path: &str,
        _revision: u64,
        _valid_until: OffsetDateTime,
    ) -> StorageResult<WeightsUrl> {
        let name = parse_weights_path(weights_path)?;
        if !self.path_of(&name).is_file() {
            return Err(StorageError::NotFound(name.to_string()));
        }
        self.url_for(&name)
    }

    async fn write_latest(&self, info: &LatestInfo) -> StorageResult<()> {
        let bytes = serde_json::to_vec_pretty(info).expect("a latest record always serializes");
        let this = self.clone();
        blocking(move || this.write_atomically(LATEST_FILE, &bytes)).await
    }

    async fn read_latest_info(&self) -> StorageResult<Option<LatestInfo>> {
        let path = self.dir.join(LATEST_FILE);
        match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| StorageError::CorruptLatest {
                location: path.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    async fn list_revisions(&self) -> StorageResult<Vec<StoredWeights>> {
        let this = self.clone();
        blocking(move || {
            let mut stored = Vec::new();
            for entry in fs::read_dir(&this.dir).map_err(io("listing", &this.dir))? {
                let entry = entry.map_err(io("listing", &this.dir))?;
                let file_name = entry.file_name().to_string_lossy().into_owned();
                if file_name.ends_with(SIDECAR_SUFFIX) {
                    continue;
                }
                if let Ok(name) = WeightsName::parse(&file_name)
                    && let Some(weights) = this.stat(&name)?
                {
                    stored.push(weights);
                }
            }
            stored.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(stored)
        })
        .await
    }

    async fn open_weights(&self, name: &WeightsName) -> StorageResult<WeightsReader> {
        let path = self.path_of(name);
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok(Box::new(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StorageError::NotFound(name.to_string()))
            }
            Err(e) => Err(io("opening", &path)(e)),
        }
    }

    /// As every backend prunes, with each revision's patches counted in what keeping it costs
    /// (they go with it when it goes).
    async fn prune(&self, retention: Retention) -> StorageResult<Vec<WeightsName>> {
        let latest = self.read_latest_info().await?.map(|l| l.weights_file);
        let mut stored = self.list_revisions().await?;
        let this = self.clone();
        let names: Vec<WeightsName> = stored.iter().map(|w| w.name.clone()).collect();
        let patch_bytes = blocking(move || {
            names.iter().map(|name| Ok(this.patches_of(name)?.iter().map(|p| p.size).sum())).collect()
        })
        .await?;
        for (weights, extra) in stored.iter_mut().zip::<Vec<u64>>(patch_bytes) {
            weights.size += extra;
        }
        let mut deleted = Vec::new();
        for weights in retention.doomed(&stored, latest.as_deref()) {
            self.delete_weights(&weights.name).await?;
            deleted.push(weights.name.clone());
        }
        Ok(deleted)
    }

    async fn delete_weights(&self, name: &WeightsName) -> StorageResult<()> {
        if let Some(latest) = self.read_latest_info().await?
            && latest.weights_file == name.to_string()
        {
            return Err(StorageError::InUse(name.to_string()));
        }
        let this = self.clone();
        let name = name.clone();
        blocking(move || {
            let path = this.path_of(&name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StorageError::NotFound(name.to_string()));
                }
                Err(e) => return Err(io("deleting", &path)(e)),
            }
            let _ = fs::remove_file(this.dir.join(name.sidecar()));
            this.remove_patches_of(&name)?;
            this.sync_dir()
        })
        .await
    }
}
