//! The `StorageAdapter`: picks the backend from configuration and applies the fallbacks of
//! `docs/storage.md`.
//!
//! - Local storage always holds every revision (it is the cache when a bucket is used).
//! - R2 configured but misconfigured or missing credentials → local storage, loudly, in a
//!   `degraded` state that status shows. Nothing to catch up to until the configuration is fixed.
//! - R2 configured but unreachable or failing → local storage, `degraded`, and a background
//!   catch-up that uploads every revision the bucket missed (and the latest record) once it
//!   answers again, then returns to normal. Nothing published is ever lost.
//! - Presigning fails → the local URL (HTTP if the server serves weights, else file://).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::backend::{
    Retention, StorageBackend, StorageError, StorageResult, StoredWeights, UrlKind, WeightsData, WeightsUrl,
    latest_record,
};
use crate::config::Config;
use crate::latest::{LatestExtra, LatestInfo, PatchOffer};
use crate::local::{LocalStorageBackend, LocalUrls, StoredPatch};
use crate::naming::WeightsName;
use crate::r2::R2StorageBackend;

/// What the adapter is doing, for status pages. Never contains a credential or a signed URL.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StorageStatus {
    /// The backend weights are published through now: `local` or `r2`.
    pub backend: &'static str,
    /// The backend the configuration asked for.
    pub configured: &'static str,
    /// Why the configured backend is not in use, if it is not.
    pub degraded: Option<String>,
    /// How the latest weights URL is served.
    pub served_as: Option<UrlKind>,
    /// The bucket, when one is configured.
    pub bucket: Option<String>,
    /// Revisions stored locally but not yet in the bucket.
    pub pending_catch_up: usize,
    /// When the last catch-up attempt ran, and what it said.
    pub last_catch_up: Option<String>,
    /// Bytes the stored revisions take in the weights directory (None if it cannot be read).
    pub weights_bytes: Option<u64>,
    /// Their disk budget (0: none besides `keep_revisions`).
    pub weights_budget_bytes: u64,
    /// Newest revisions kept.
    pub keep_revisions: usize,
}

#[derive(Debug)]
enum Remote {
    /// No bucket configured.
    None,
    /// Configured, but the configuration cannot work (missing credentials, bad endpoint).
    Misconfigured(String),
    /// A usable client; `degraded` holds the last failure while the bucket is behind.
    Ready { backend: Box<R2StorageBackend>, degraded: Option<String> },
}

#[derive(Debug)]
struct State {
    remote: Remote,
    served_as: Option<UrlKind>,
    pending: usize,
    last_catch_up: Option<String>,
}

/// See the module documentation.
pub struct StorageAdapter {
    local: LocalStorageBackend,
    state: Mutex<State>,
    /// Held by every writer of the latest record (publishing, refreshing) and by the last step
    /// of a catch-up, so no revision can be published between the catch-up's final check of the
    /// bucket and its return to normal.
    publishing: tokio::sync::Mutex<()>,
    url_grace: time::Duration,
    retention: Retention,
    catch_up_interval: Duration,
    patches: bool,
    games_dir: std::path::PathBuf,
    games_retention: crate::ObjectRetention,
}

impl StorageAdapter {
    /// Builds the adapter. Fails only if local storage cannot be used; any trouble with the bucket
    /// degrades to local storage instead (with a warning), as the guide's fallback rules say.
    pub async fn from_config(config: &Config) -> StorageResult<StorageAdapter> {
        StorageAdapter::build(config, true).await
    }

    /// The adapter of a process that reads what another one publishes (an API server beside the
    /// run's learner): it never removes leftovers (the publisher's writes in progress) and never
    /// catches the bucket up (the publisher does).
    pub async fn reader(config: &Config) -> StorageResult<StorageAdapter> {
        StorageAdapter::build(config, false).await
    }

    async fn build(config: &Config, publisher: bool) -> StorageResult<StorageAdapter> {
        let urls = if config.server.localhost_weights {
            let base = config
                .server
                .public_base_url()
                .map_err(|e| StorageError::Remote { operation: "configuration", message: e.to_string() })?;
            LocalUrls::Http { base }
        } else {
            LocalUrls::File
        };
        let local = LocalStorageBackend::new(&config.storage.weights_dir, urls)?;
        if publisher {
            local.remove_leftovers()?;
        }
        let remote = if !config.storage.use_r2 {
            Remote::None
        } else {
            match config.r2_settings().and_then(|s| R2StorageBackend::new(s).map_err(|e| e.to_string())) {
                Err(reason) => {
                    tracing::warn!("R2 storage is unusable, falling back to local storage: {reason}");
                    Remote::Misconfigured(reason)
                }
                Ok(backend) => {
                    let degraded = match backend.probe().await {
                        Ok(()) => None,
                        Err(e) => {
                            tracing::warn!(
                                "bucket {} is unreachable, publishing to local storage until it answers: {e}",
                                backend.bucket()
                            );
                            Some(e.to_string())
                        }
                    };
                    Remote::Ready { backend: Box::new(backend), degraded }
                }
            }
        };
        let adapter = StorageAdapter {
            local,
            state: Mutex::new(State { remote, served_as: None, pending: 0, last_catch_up: None }),
            publishing: tokio::sync::Mutex::new(()),
            url_grace: time::Duration::seconds(config.storage.url_grace_seconds as i64),
            retention: Retention {
                keep_revisions: config.storage.keep_revisions,
                budget_bytes: config.storage.weights_budget_mib << 20,
            },
            catch_up_interval: Duration::from_secs(config.storage.catch_up_interval_seconds.max(1)),
            patches: config.storage.patches,
            games_dir: config.storage.games_dir(),
            games_retention: crate::ObjectRetention {
                keep_revisions: config.storage.games_keep_revisions,
                keep_one_in: config.storage.games_keep_one_in,
            },
        };
        if let Some(latest) = adapter.local.read_latest_info().await? {
            adapter.lock().served_as = Some(UrlKind::of(&latest.weights_url));
        }
        if publisher && adapter.is_degraded() {
            adapter.catch_up().await;
        }
        Ok(adapter)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The local backend (always present: the store or the cache).
    pub fn local(&self) -> &LocalStorageBackend {
        &self.local
    }

    /// The bucket backend, if one is configured and usable (even while it is behind).
    pub fn remote(&self) -> Option<R2StorageBackend> {
        match &self.lock().remote {
            Remote::Ready { backend, .. } => Some(backend.as_ref().clone()),
            _ => None,
        }
    }

    /// Where other objects of the run (its game chunks) go: under `prefix/` in the bucket when
    /// one is configured and usable (even while it is behind), else in the local games
    /// directory. The local shelf is returned too: objects written there while no bucket was
    /// usable stay readable. Bucket calls run on `runtime`.
    pub fn object_shelves(
        &self,
        prefix: &str,
        runtime: tokio::runtime::Handle,
    ) -> StorageResult<(crate::ObjectShelf, Option<crate::ObjectShelf>)> {
        let local = crate::ObjectShelf::local(&self.games_dir)?;
        let bucket = self.remote().map(|backend| crate::ObjectShelf::bucket(backend, prefix, runtime));
        Ok((local, bucket))
    }

    /// What is kept of the run's games (`storage.games_keep_revisions`, `games_keep_one_in`).
    pub fn games_retention(&self) -> crate::ObjectRetention {
        self.games_retention
    }

    /// The bucket backend if it is configured and up to date.
    fn healthy_remote(&self) -> Option<R2StorageBackend> {
        match &self.lock().remote {
            Remote::Ready { backend, degraded: None } => Some(backend.as_ref().clone()),
            _ => None,
        }
    }

    /// Whether the configured backend is not the one in use.
    pub fn is_degraded(&self) -> bool {
        matches!(self.lock().remote, Remote::Misconfigured(_) | Remote::Ready { degraded: Some(_), .. })
    }

    fn degrade(&self, reason: String) {
        let mut state = self.lock();
        if let Remote::Ready { backend, degraded } = &mut state.remote {
            if degraded.is_none() {
                tracing::warn!(
                    "bucket {} failed, publishing to local storage until it answers: {reason}",
                    backend.bucket()
                );
            }
            *degraded = Some(reason);
        }
    }

    /// The status, for `/api/v1/status` and the dashboard.
    pub fn status(&self) -> StorageStatus {
        let state = self.lock();
        let (configured, degraded, bucket) = match &state.remote {
            Remote::None => ("local", None, None),
            Remote::Misconfigured(reason) => ("r2", Some(reason.clone()), None),
            Remote::Ready { backend, degraded } => {
                ("r2", degraded.clone(), Some(backend.bucket().to_string()))
            }
        };
        StorageStatus {
            backend: if configured == "r2" && degraded.is_none() { "r2" } else { "local" },
            configured,
            degraded,
            served_as: state.served_as,
            bucket,
            pending_catch_up: state.pending,
            last_catch_up: state.last_catch_up.clone(),
            weights_bytes: self.local.disk_usage().ok(),
            weights_budget_bytes: self.retention.budget_bytes,
            keep_revisions: self.retention.keep_revisions,
        }
    }

    /// Stores `data` as `revision` and points the latest record at it, valid until `deadline`.
    /// The weights are fully stored (locally, and in the bucket when it is up) before any record
    /// names them.
    pub async fn publish(
        &self,
        data: WeightsData,
        revision: u64,
        deadline: OffsetDateTime,
        extra: &LatestExtra,
    ) -> StorageResult<LatestInfo> {
        let _publishing = self.publishing.lock().await;
        let previous = self.previous_revision().await;
        let stored = self.local.save_weights(data, revision).await?;
        let patches = self.save_patches(&stored, previous).await;
        let mut remote = self.healthy_remote();
        if let Some(bucket) = &remote
            && let Err(e) = self.upload(bucket, &stored, &patches).await
        {
            self.degrade(e.to_string());
            remote = None;
        }
        let url = self.url_for(&stored, remote.as_ref(), deadline).await?;
        // One write of the whole record: a reader never sees it without its offers.
        let mut info = latest_record(&stored, &url.url, deadline, extra);
        (info.compressed, info.delta) = self.offers(&patches, remote.as_ref(), deadline).await;
        self.local.write_latest(&info).await?;
        if let Some(bucket) = &remote
            && let Err(e) = bucket.write_latest(&info).await
        {
            self.degrade(e.to_string());
        }
        self.lock().served_as = Some(url.kind);
        if !self.is_degraded() {
            self.prune().await;
        } else {
            self.lock().pending += 1;
        }
        Ok(info)
    }

    /// The revision the latest record names now, if it is stored: the base of the next delta.
    async fn previous_revision(&self) -> Option<StoredWeights> {
        let latest = self.local.read_latest_info().await.ok()??;
        let name = WeightsName::parse(&latest.weights_file).ok()?;
        self.local.stat(&name).ok()?
    }

    /// Writes the patches of a new revision, when configured. A patch is an optimisation: if it
    /// cannot be written, the revision is published without it (workers download the whole
    /// file), and the reason is logged.
    async fn save_patches(&self, stored: &StoredWeights, base: Option<StoredWeights>) -> Vec<StoredPatch> {
        if !self.patches {
            return Vec::new();
        }
        let local = self.local.clone();
        let target = stored.clone();
        let started = std::time::Instant::now();
        let result =
            tokio::task::spawn_blocking(move || local.save_patches_blocking(&target, base.as_ref())).await;
        match result {
            Ok(Ok(patches)) => {
                let sizes: Vec<String> = patches
                    .iter()
                    .map(|p| {
                        let what = if p.name.base().is_some() { "delta" } else { "compressed" };
                        format!("{what} {:.1}%", 100.0 * p.size as f64 / stored.size.max(1) as f64)
                    })
                    .collect();
                tracing::debug!(
                    "patches of revision {} written in {:.2} s: {}",
                    stored.name.revision(),
                    started.elapsed().as_secs_f64(),
                    sizes.join(", ")
                );
                patches
            }
            Ok(Err(e)) => {
                tracing::warn!("revision {} is published without patches: {e}", stored.name.revision());
                Vec::new()
            }
            Err(e) => {
                tracing::warn!("revision {} is published without patches: {e}", stored.name.revision());
                Vec::new()
            }
        }
    }

    /// Uploads a stored revision and its patches to the bucket, the weights first.
    async fn upload(
        &self,
        bucket: &R2StorageBackend,
        stored: &StoredWeights,
        patches: &[StoredPatch],
    ) -> StorageResult<()> {
        bucket.save_weights(self.stored_data(stored), stored.name.revision()).await?;
        for patch in patches {
            bucket.save_patch(&self.local.patch_path(&patch.name), patch).await?;
        }
        Ok(())
    }

    /// The record's offers for `patches`: URLs from the bucket when it is up, else local ones.
    async fn offers(
        &self,
        patches: &[StoredPatch],
        remote: Option<&R2StorageBackend>,
        deadline: OffsetDateTime,
    ) -> (Option<PatchOffer>, Option<PatchOffer>) {
        let mut compressed = None;
        let mut delta = None;
        for patch in patches {
            let url = match remote {
                Some(bucket) => bucket.patch_url_until(&patch.name, deadline + self.url_grace).await,
                None => self.local.patch_url(&patch.name),
            };
            let url = match url {
                Ok(url) => url,
                Err(e) => match self.local.patch_url(&patch.name) {
                    Ok(url) => {
                        tracing::warn!(
                            "presigning {} failed, handing out the local URL instead: {e}",
                            patch.name
                        );
                        url
                    }
                    Err(_) => continue,
                },
            };
            let base_sha256 = match patch.name.base() {
                Some(base) => match self.local.stat(base) {
                    Ok(Some(base)) => Some(base.sha256),
                    // The base's full hash is gone with it: no worker can be offered this delta.
                    _ => continue,
                },
                None => None,
            };
            let offer = PatchOffer {
                url: url.url,
                file: patch.name.to_string(),
                sha256: patch.sha256.clone(),
                size: patch.size,
                base_sha256,
            };
            // Patches come sorted by name: the last delta is against the newest base.
            if offer.base_sha256.is_some() {
                delta = Some(offer);
            } else {
                compressed = Some(offer);
            }
        }
        (compressed, delta)
    }

    /// Fresh URLs for the patches a record already offers (from the bucket when it is up). An
    /// offer whose URL cannot be made is withdrawn: workers then download the whole file.
    async fn reissue_offers(
        &self,
        latest: &mut LatestInfo,
        remote: Option<&R2StorageBackend>,
        deadline: OffsetDateTime,
    ) {
        for offer in [&mut latest.compressed, &mut latest.delta] {
            let Some(current) = offer.as_mut() else { continue };
            let Ok(name) = crate::patch::PatchName::parse(&current.file) else {
                *offer = None;
                continue;
            };
            let url = match remote {
                Some(bucket) => bucket.patch_url_until(&name, deadline + self.url_grace).await,
                None => self.local.patch_url(&name),
            };
            match url {
                Ok(url) => current.url = url.url,
                Err(e) => {
                    tracing::warn!("{name} is no longer offered: {e}");
                    *offer = None;
                }
            }
        }
    }

    /// A locally stored file, with its recorded hash, for uploading without re-hashing.
    fn stored_data(&self, stored: &StoredWeights) -> WeightsData {
        WeightsData::Stored {
            path: self.local.path_of(&stored.name),
            sha256: stored.sha256.clone(),
            size: stored.size,
        }
    }

    /// A URL for stored weights: from the bucket if it is up (presigned past the deadline, or
    /// public), else local; a presigning failure falls back to the local URL.
    async fn url_for(
        &self,
        stored: &StoredWeights,
        remote: Option<&R2StorageBackend>,
        deadline: OffsetDateTime,
    ) -> StorageResult<WeightsUrl> {
        let name = stored.name.to_string();
        let revision = stored.name.revision();
        if let Some(bucket) = remote {
            match bucket.get_weights_url_until(&name, revision, deadline + self.url_grace).await {
                Ok(url) => return Ok(url),
                Err(e) => tracing::warn!("presigning {name} failed, handing out the local URL instead: {e}"),
            }
        }
        self.local.get_weights_url_until(&name, revision, deadline).await
    }

    /// Brings the bucket up to date after a fallback: uploads every local revision it lacks, then
    /// the latest record (re-pointed at a bucket URL), and returns to normal. Revisions published
    /// while it runs are uploaded too: it lists local storage again until nothing is missing, and
    /// takes its last look with publishing held off. Safe to call at any time; does nothing when
    /// there is no usable bucket.
    pub async fn catch_up(&self) -> Option<StorageResult<usize>> {
        let bucket = self.remote()?;
        let result = self.catch_up_with(&bucket).await;
        let now = OffsetDateTime::now_utc();
        let mut state = self.lock();
        match &result {
            Ok(uploaded) => state.last_catch_up = Some(format!("{now}: ok, {uploaded} uploaded")),
            Err(e) => {
                if let Remote::Ready { degraded, .. } = &mut state.remote {
                    *degraded = Some(e.to_string());
                }
                state.last_catch_up = Some(format!("{now}: {e}"));
            }
        }
        Some(result)
    }

    async fn catch_up_with(&self, bucket: &R2StorageBackend) -> StorageResult<usize> {
        bucket.probe().await?;
        let mut in_bucket: HashSet<String> =
            bucket.list_revisions().await?.into_iter().map(|w| w.name.to_string()).collect();
        // The bulk of the uploads runs while publishing goes on (to local storage, as the
        // bucket is still marked behind); each pass picks up what was published meanwhile.
        let mut uploaded = 0;
        while self.upload_missing(bucket, &mut in_bucket, &mut uploaded).await? > 0 {}

        let _publishing = self.publishing.lock().await;
        self.upload_missing(bucket, &mut in_bucket, &mut uploaded).await?;
        if let Some(mut latest) = self.local.read_latest_info().await? {
            if !in_bucket.contains(&latest.weights_file) {
                return Err(StorageError::Remote {
                    operation: "catch-up",
                    message: format!(
                        "the latest record names {}, which local storage no longer holds",
                        latest.weights_file
                    ),
                });
            }
            let bucket_latest = bucket.read_latest_info().await?;
            if bucket_latest
                .as_ref()
                .is_none_or(|b| b.revision < latest.revision || b.weights_url != latest.weights_url)
            {
                let url = bucket
                    .get_weights_url_until(
                        &latest.weights_file,
                        latest.revision,
                        latest.deadline + self.url_grace,
                    )
                    .await;
                if let Ok(url) = url {
                    latest.weights_url = url.url;
                    let deadline = latest.deadline;
                    self.reissue_offers(&mut latest, Some(bucket), deadline).await;
                    self.local.write_latest(&latest).await?;
                    self.lock().served_as = Some(url.kind);
                }
                bucket.write_latest(&latest).await?;
            }
        }
        let mut state = self.lock();
        state.pending = 0;
        if let Remote::Ready { degraded, .. } = &mut state.remote
            && degraded.take().is_some()
        {
            tracing::info!("bucket {} is back: {uploaded} revisions caught up", bucket.bucket());
        }
        Ok(uploaded)
    }

    /// One pass of the catch-up: uploads every local revision not in `in_bucket`, keeping the
    /// pending count true as it goes. Returns how many it uploaded.
    async fn upload_missing(
        &self,
        bucket: &R2StorageBackend,
        in_bucket: &mut HashSet<String>,
        uploaded: &mut usize,
    ) -> StorageResult<usize> {
        let missing: Vec<StoredWeights> = self
            .local
            .list_revisions()
            .await?
            .into_iter()
            .filter(|w| !in_bucket.contains(&w.name.to_string()))
            .collect();
        self.lock().pending = missing.len();
        for weights in &missing {
            let patches = self.local.patches_of(&weights.name)?;
            self.upload(bucket, weights, &patches).await?;
            in_bucket.insert(weights.name.to_string());
            *uploaded += 1;
            let mut state = self.lock();
            state.pending = state.pending.saturating_sub(1);
        }
        Ok(missing.len())
    }

    /// Runs [`StorageAdapter::catch_up`] every `catch_up_interval_seconds` while degraded.
    pub fn spawn_catch_up(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let adapter = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(adapter.catch_up_interval).await;
                if adapter.remote().is_some() && adapter.is_degraded() {
                    adapter.catch_up().await;
                }
            }
        })
    }

    /// Applies `keep_revisions` and the disk budget to local storage and the bucket; failures are
    /// logged, not fatal.
    pub async fn prune(&self) {
        if let Err(e) = self.local.prune(self.retention).await {
            tracing::warn!("pruning local revisions failed: {e}");
        }
        if let Some(bucket) = self.healthy_remote()
            && let Err(e) = bucket.prune(self.retention).await
        {
            tracing::warn!("pruning bucket revisions failed: {e}");
        }
    }

    /// The latest record (from local storage, which always has it).
    pub async fn read_latest_info(&self) -> StorageResult<Option<LatestInfo>> {
        self.local.read_latest_info().await
    }

    /// The latest record as the publisher left it for others: the bucket's when a bucket is
    /// configured (another machine's learner publishes there), else the local one.
    pub async fn read_published_latest(&self) -> StorageResult<Option<LatestInfo>> {
        match self.remote() {
            Some(bucket) => bucket.read_latest_info().await,
            None => self.local.read_latest_info().await,
        }
    }

    /// A fresh URL for the latest weights valid past `deadline`, for re-issuing the record
    /// before a presigned URL expires.
    pub async fn refresh_latest(&self, deadline: OffsetDateTime) -> StorageResult<Option<LatestInfo>> {
        let _publishing = self.publishing.lock().await;
        let Some(mut latest) = self.local.read_latest_info().await? else { return Ok(None) };
        let Some(stored) = self
            .local
            .list_revisions()
            .await?
            .into_iter()
            .find(|w| w.name.to_string() == latest.weights_file)
        else {
            return Ok(Some(latest));
        };
        let remote = self.healthy_remote();
        let url = self.url_for(&stored, remote.as_ref(), deadline).await?;
        latest.weights_url = url.url;
        latest.deadline = deadline;
        self.reissue_offers(&mut latest, remote.as_ref(), deadline).await;
        self.local.write_latest(&latest).await?;
        if let Some(bucket) = &remote
            && let Err(e) = bucket.write_latest(&latest).await
        {
            self.degrade(e.to_string());
        }
        self.lock().served_as = Some(url.kind);
        Ok(Some(latest))
    }
}
