//! Storage throughput: a weights file of a given size uploaded to the configured bucket, streamed
//! back, and downloaded through a presigned URL by the worker's fetcher, against a local streaming
//! copy and a plain hash of the same file in the same run. Also the process's peak memory, and how
//! long the adapter takes to decide to fall back when the bucket's port is closed.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use tokio::io::AsyncReadExt;
use zero2048_storage::{
    Config, Expected, Fetcher, LocalStorageBackend, LocalUrls, R2StorageBackend, RetryPolicy, Secret,
    StorageAdapter, StorageBackend, WeightsData, hash_file,
};

/// One timed transfer.
#[derive(Clone, Debug, Serialize)]
pub struct Transfer {
    /// What moved.
    pub name: &'static str,
    /// Seconds, wall clock.
    pub seconds: f64,
    /// Megabytes (10^6 bytes) per second.
    pub megabytes_per_second: f64,
}

/// Everything one run measures.
#[derive(Clone, Debug, Serialize)]
pub struct StorageReport {
    /// File size in bytes.
    pub size_bytes: u64,
    /// Baselines and transfers, in order.
    pub transfers: Vec<Transfer>,
    /// Peak resident memory of the process (VmHWM), in bytes.
    pub peak_rss_bytes: u64,
    /// Seconds for the adapter to fall back to local storage when the bucket's port is closed.
    pub fallback_decision_seconds: f64,
}

fn timed(name: &'static str, size: u64, started: Instant) -> Transfer {
    let seconds = started.elapsed().as_secs_f64();
    Transfer { name, seconds, megabytes_per_second: size as f64 / 1e6 / seconds.max(1e-9) }
}

/// Writes `size` pseudo-random bytes (a stream fixed by `seed`) to `path` in 1 MiB blocks, never
/// all in memory. Random, like trained weights: incompressible.
pub fn write_test_file(path: &Path, size: u64, seed: u64) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()
}

/// Peak resident set size of this process, from /proc/self/status.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb * 1024)
}

/// Runs the storage benchmark against the bucket in `config` with a file of `size` bytes,
/// working in `work_dir`.
pub async fn run(config: &Config, size: u64, work_dir: &Path) -> Result<StorageReport, String> {
    let settings = config.r2_settings().map_err(|e| format!("the storage benchmark needs a bucket: {e}"))?;
    let bucket = R2StorageBackend::new(settings).map_err(|e| e.to_string())?;
    bucket.probe().await.map_err(|e| e.to_string())?;
    std::fs::create_dir_all(work_dir).map_err(|e| e.to_string())?;
    let source = work_dir.join("bench-weights.bin");
    write_test_file(&source, size, 1).map_err(|e| e.to_string())?;
    let revision = 900_000 + (size >> 20);
    let mut transfers = Vec::new();

    let started = Instant::now();
    let (sha256, _) = hash_file(&source).map_err(|e| e.to_string())?;
    transfers.push(timed("baseline: SHA-256 of the file", size, started));

    let local =
        LocalStorageBackend::new(&work_dir.join("local"), LocalUrls::File).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let local_copy =
        local.save_weights(WeightsData::File(source.clone()), revision).await.map_err(|e| e.to_string())?;
    transfers.push(timed("baseline: local store (copy + hash + fsync)", size, started));

    // What the adapter does on publish: upload the locally stored copy, its hash already known.
    let started = Instant::now();
    let stored = bucket
        .save_weights(
            WeightsData::Stored { path: local.path_of(&local_copy.name), sha256: sha256.clone(), size },
            revision,
        )
        .await
        .map_err(|e| e.to_string())?;
    transfers.push(timed("upload to the bucket (multipart PUT, 8 MiB parts)", size, started));
    bucket.delete_weights(&stored.name).await.map_err(|e| e.to_string())?;

    // A file never stored anywhere: hashed, then uploaded. Different bytes, so a deduplicating
    // server (Garage stores blocks by content hash) has to write every block again.
    let fresh = work_dir.join("bench-weights-2.bin");
    write_test_file(&fresh, size, 2).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let other =
        bucket.save_weights(WeightsData::File(fresh), revision + 1).await.map_err(|e| e.to_string())?;
    transfers.push(timed("upload of a new file (hash pass + multipart PUT)", size, started));
    bucket.delete_weights(&other.name).await.map_err(|e| e.to_string())?;

    let stored =
        bucket.save_weights(WeightsData::File(source.clone()), revision).await.map_err(|e| e.to_string())?;

    let started = Instant::now();
    let mut reader = bucket.open_weights(&stored.name).await.map_err(|e| e.to_string())?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = reader.read(&mut buffer).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    if read != size {
        return Err(format!("streamed {read} bytes back, expected {size}"));
    }
    transfers.push(timed("download: streamed GET from the bucket", size, started));

    let url = bucket.get_weights_url(&stored.name.to_string(), revision).await.map_err(|e| e.to_string())?;
    let fetcher =
        Fetcher::new(&work_dir.join("cache"), u64::MAX, RetryPolicy::default()).map_err(|e| e.to_string())?;
    let started = Instant::now();
    fetcher.fetch(&url.url, &Expected { sha256, size }).await.map_err(|e| e.to_string())?;
    transfers.push(timed("download: worker fetch of a presigned URL (+ verify)", size, started));
    bucket.delete_weights(&stored.name).await.map_err(|e| e.to_string())?;

    let mut unreachable = Config::default();
    unreachable.storage.weights_dir = work_dir.join("fallback");
    unreachable.storage.use_r2 = true;
    unreachable.storage.r2_bucket = Some("unreachable".into());
    unreachable.storage.r2_access_key = Some(Secret::new("AKIDBENCH"));
    unreachable.storage.r2_secret_key = Some(Secret::new("bench-secret-key"));
    unreachable.storage.r2_endpoint_url = Some("http://127.0.0.1:1".into());
    let started = Instant::now();
    let adapter = StorageAdapter::from_config(&unreachable).await.map_err(|e| e.to_string())?;
    let fallback_decision_seconds = started.elapsed().as_secs_f64();
    if !adapter.is_degraded() {
        return Err("the adapter did not fall back for a closed port".into());
    }
    let _ = std::fs::remove_dir_all(work_dir);
    Ok(StorageReport {
        size_bytes: size,
        transfers,
        peak_rss_bytes: peak_rss_bytes(),
        fallback_decision_seconds,
    })
}
