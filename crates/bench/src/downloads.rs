//! Small downloads: what a worker that follows a run fetches per revision, read from a run's
//! weights directory (the revisions and patches its publishing wrote). For each revision whose
//! previous revision is stored: the bytes of the delta, of the compressed file and of the whole
//! file; the time and CPU a worker's fetcher takes to download (file://), apply and verify the
//! delta, against fetching the whole file the same way in the same run; and what writing the
//! patches cost the publisher.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use zero2048_storage::patch::write_patch;
use zero2048_storage::{
    Expected, Fetched, Fetcher, LocalStorageBackend, LocalUrls, PatchSource, RetryPolicy, StorageBackend,
    StoredPatch, StoredWeights,
};

/// One revision as a following worker gets it.
#[derive(Clone, Debug, Serialize)]
pub struct RevisionDownload {
    /// The revision.
    pub revision: u64,
    /// The revision its delta starts from.
    pub base_revision: u64,
    /// Bytes of the weights file.
    pub whole_bytes: u64,
    /// Bytes of the compressed file.
    pub compressed_bytes: u64,
    /// Bytes of the delta.
    pub delta_bytes: u64,
    /// Wall seconds to download (file://), apply and verify the delta.
    pub delta_seconds: f64,
    /// CPU seconds for the same.
    pub delta_cpu_seconds: f64,
    /// Wall seconds to download (file://) and verify the whole file: the baseline.
    pub whole_seconds: f64,
    /// CPU seconds for the same.
    pub whole_cpu_seconds: f64,
    /// Bytes of the delta as this build writes it again (the stored one may come from another
    /// build or compression level).
    pub delta_bytes_rewritten: u64,
    /// Wall seconds the publisher took to write both patches.
    pub write_patches_seconds: f64,
    /// CPU seconds for the same.
    pub write_patches_cpu_seconds: f64,
}

impl RevisionDownload {
    /// Delta bytes over whole-file bytes.
    pub fn delta_ratio(&self) -> f64 {
        self.delta_bytes as f64 / self.whole_bytes.max(1) as f64
    }

    /// Compressed bytes over whole-file bytes.
    pub fn compressed_ratio(&self) -> f64 {
        self.compressed_bytes as f64 / self.whole_bytes.max(1) as f64
    }
}

/// Everything one run measures.
#[derive(Clone, Debug, Serialize)]
pub struct DownloadsReport {
    /// Per revision, oldest first.
    pub revisions: Vec<RevisionDownload>,
    /// Total delta bytes over total whole-file bytes, for the revisions measured.
    pub delta_ratio: f64,
}

fn patch_of<'a>(patches: &'a [StoredPatch], base: Option<&StoredWeights>) -> Option<&'a StoredPatch> {
    patches.iter().find(|p| p.name.base() == base.map(|b| &b.name))
}

fn expected(weights: &StoredWeights) -> Expected {
    Expected { sha256: weights.sha256.clone(), size: weights.size }
}

fn source(
    local: &LocalStorageBackend,
    patch: &StoredPatch,
    base: Option<&StoredWeights>,
) -> Result<PatchSource, String> {
    Ok(PatchSource {
        url: local.patch_url(&patch.name).map_err(|e| e.to_string())?.url,
        expected: Expected { sha256: patch.sha256.clone(), size: patch.size },
        base_sha256: base.map(|b| b.sha256.clone()),
    })
}

/// Counts what is written to it, and keeps nothing.
#[derive(Default)]
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Wall and CPU seconds of `work`.
async fn timed<T>(work: impl std::future::Future<Output = T>) -> (T, f64, f64) {
    let cpu = cpu_time::ProcessTime::now();
    let started = Instant::now();
    let value = work.await;
    (value, started.elapsed().as_secs_f64(), cpu.elapsed().as_secs_f64())
}

/// Measures every revision of `weights_dir` that has a delta; scratch files go under `work_dir`.
pub async fn run(weights_dir: &Path, work_dir: &Path) -> Result<DownloadsReport, String> {
    let local = LocalStorageBackend::new(weights_dir, LocalUrls::File).map_err(|e| e.to_string())?;
    let stored = local.list_revisions().await.map_err(|e| e.to_string())?;
    std::fs::create_dir_all(work_dir).map_err(|e| format!("creating {}: {e}", work_dir.display()))?;
    let policy = RetryPolicy { attempts: 1, ..RetryPolicy::default() };
    let mut revisions = Vec::new();
    for pair in stored.windows(2) {
        let (base, target) = (&pair[0], &pair[1]);
        let patches = local.patches_of(&target.name).map_err(|e| e.to_string())?;
        let (Some(delta), Some(compressed)) = (patch_of(&patches, Some(base)), patch_of(&patches, None))
        else {
            continue;
        };
        let base_url = local.get_weights_url(&base.name.to_string(), base.name.revision()).await;
        let target_url = local.get_weights_url(&target.name.to_string(), target.name.revision()).await;
        let (base_url, target_url) =
            (base_url.map_err(|e| e.to_string())?, target_url.map_err(|e| e.to_string())?);

        // A worker holding the base: the delta, applied and verified.
        let cache = tempfile::tempdir_in(work_dir).map_err(|e| e.to_string())?;
        let fetcher = Fetcher::new(cache.path(), u64::MAX, policy).map_err(|e| e.to_string())?;
        fetcher.fetch(&base_url.url, &expected(base)).await.map_err(|e| e.to_string())?;
        let delta_source = source(&local, delta, Some(base))?;
        let (result, delta_seconds, delta_cpu_seconds) =
            timed(fetcher.fetch_smallest(&target_url.url, &expected(target), &[delta_source])).await;
        match result.map_err(|e| e.to_string())?.1 {
            Fetched::Delta { .. } => {}
            other => {
                return Err(format!("revision {}: the delta was not used ({})", target.name, other.how()));
            }
        }
        drop(fetcher);
        drop(cache);

        // The baseline: the whole file, downloaded and verified the same way.
        let cache = tempfile::tempdir_in(work_dir).map_err(|e| e.to_string())?;
        let fetcher = Fetcher::new(cache.path(), u64::MAX, policy).map_err(|e| e.to_string())?;
        let (result, whole_seconds, whole_cpu_seconds) =
            timed(fetcher.fetch_smallest(&target_url.url, &expected(target), &[])).await;
        result.map_err(|e| e.to_string())?;
        drop(fetcher);
        drop(cache);

        // The publisher's side: both patches written again (to nowhere).
        let (target_path, base_path) = (local.path_of(&target.name), local.path_of(&base.name));
        let (target, base) = (target.clone(), base.clone());
        let (result, write_patches_seconds, write_patches_cpu_seconds) = timed(async move {
            tokio::task::spawn_blocking(move || -> Result<u64, String> {
                let open = |p: &Path| std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()));
                let sink = std::io::sink();
                write_patch(&mut open(&target_path)?, target.size, &target.sha256, None, sink)
                    .map_err(|e| e.to_string())?;
                let mut base_file = open(&base_path)?;
                let mut counter = Counter::default();
                write_patch(
                    &mut open(&target_path)?,
                    target.size,
                    &target.sha256,
                    Some((&mut base_file as &mut dyn std::io::Read, base.size, &base.sha256)),
                    &mut counter,
                )
                .map_err(|e| e.to_string())?;
                Ok(counter.0)
            })
            .await
            .map_err(|e| e.to_string())?
        })
        .await;
        let delta_bytes_rewritten = result?;
        revisions.push(RevisionDownload {
            revision: pair[1].name.revision(),
            base_revision: pair[0].name.revision(),
            whole_bytes: pair[1].size,
            compressed_bytes: compressed.size,
            delta_bytes: delta.size,
            delta_bytes_rewritten,
            delta_seconds,
            delta_cpu_seconds,
            whole_seconds,
            whole_cpu_seconds,
            write_patches_seconds,
            write_patches_cpu_seconds,
        });
    }
    if revisions.is_empty() {
        return Err(format!(
            "{} holds no revision with a delta from the revision before (publish at least two revisions \
             with storage.patches on)",
            weights_dir.display()
        ));
    }
    let delta: u64 = revisions.iter().map(|r| r.delta_bytes).sum();
    let whole: u64 = revisions.iter().map(|r| r.whole_bytes).sum();
    Ok(DownloadsReport { revisions, delta_ratio: delta as f64 / whole.max(1) as f64 })
}
