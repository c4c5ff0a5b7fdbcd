//! `zero2048 weights list | pull | verify | average`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use zero2048_model::weights_file;
use zero2048_storage::{
    Expected, Fetcher, RetryPolicy, StorageAdapter, StorageBackend, StorageStatus, StoredWeights,
    verify_stored,
};

use crate::args::{WeightsAction, WeightsArgs};
use crate::{bad_input, storage};

/// Runs the command.
pub fn run(args: WeightsArgs) -> Result<()> {
    if let WeightsAction::Average { files, last: None, output } = &args.action {
        return average(files, output);
    }
    let config = storage::load_config(&args.storage)?;
    storage::runtime()?.block_on(async move {
        let adapter = StorageAdapter::from_config(&config).await.context("opening storage")?;
        let status = adapter.status();
        let bucket = adapter.remote().filter(|_| !adapter.is_degraded());
        let backend: &dyn StorageBackend = match &bucket {
            Some(bucket) => bucket,
            None => adapter.local(),
        };
        match args.action {
            WeightsAction::List { json } => list(&adapter, backend, &status, json).await,
            WeightsAction::Pull { revision, output } => pull(backend, revision, &output).await,
            WeightsAction::Verify => {
                verify(&adapter, bucket.as_ref().map(|b| b as &dyn StorageBackend)).await
            }
            WeightsAction::Average { last, output, .. } => {
                let files = newest_stored(&adapter, last.unwrap_or(1)).await?;
                average(&files, &output)
            }
        }
    })
}

fn describe(status: &StorageStatus, local_dir: &std::path::Path) -> String {
    let place = match &status.bucket {
        Some(bucket) if status.backend == "r2" => format!("bucket {bucket}"),
        _ => format!("local directory {}", local_dir.display()),
    };
    match &status.degraded {
        Some(reason) => format!("storage: {place} (configured: {}; degraded: {reason})", status.configured),
        None => format!("storage: {place}"),
    }
}

async fn list(
    adapter: &StorageAdapter,
    backend: &dyn StorageBackend,
    status: &StorageStatus,
    json: bool,
) -> Result<()> {
    let revisions = backend.list_revisions().await?;
    let latest = backend.read_latest_info().await?;
    if json {
        let report = serde_json::json!({
            "storage": status,
            "latest_revision": latest.as_ref().map(|l| l.revision),
            "latest_file": latest.as_ref().map(|l| l.weights_file.clone()),
            "revisions": revisions,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    eprintln!("{}", describe(status, adapter.local().dir()));
    if revisions.is_empty() {
        println!("no revisions stored");
        return Ok(());
    }
    println!("{:>8}  {:<34}  {:>12}  {:<64}  stored", "revision", "file", "bytes", "sha256");
    for w in &revisions {
        let stored_at = w
            .stored_at
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| "-".into());
        let marker = if latest.as_ref().is_some_and(|l| l.weights_file == w.name.to_string()) {
            "  ← latest"
        } else {
            ""
        };
        println!(
            "{:>8}  {:<34}  {:>12}  {:<64}  {stored_at}{marker}",
            w.name.revision(),
            w.name.to_string(),
            w.size,
            w.sha256
        );
    }
    Ok(())
}

/// The files of the newest `count` revisions in the local store, each verified against its
/// recorded SHA-256 and size.
async fn newest_stored(adapter: &StorageAdapter, count: u64) -> Result<Vec<PathBuf>> {
    let local = adapter.local();
    let revisions = local.list_revisions().await?;
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    if revisions.len() < count {
        return Err(bad_input(format!(
            "--last {count}: the local store in {} holds {} revisions",
            local.dir().display(),
            revisions.len()
        )));
    }
    let mut files = Vec::with_capacity(count);
    for stored in &revisions[revisions.len() - count..] {
        verify_stored(local, stored).await.with_context(|| format!("verifying {}", stored.name))?;
        files.push(local.dir().join(stored.name.to_string()));
    }
    Ok(files)
}

/// Writes the mean of `files` to `output` through a temporary file beside it.
fn average(files: &[PathBuf], output: &Path) -> Result<()> {
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (mean, info) = weights_file::average(&paths)?;
    let name = output
        .file_name()
        .ok_or_else(|| bad_input(format!("--output {}: not a file name", output.display())))?;
    let staging = output.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    let written = weights_file::save(&mean, &staging, info.revision, &info.extra)
        .map_err(anyhow::Error::from)
        .and_then(|()| std::fs::File::open(&staging)?.sync_all().context("flushing the average to disk"))
        .and_then(|()| {
            std::fs::rename(&staging, output).with_context(|| format!("writing {}", output.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    written?;
    println!(
        "{} written: the mean of {} files (revisions {})",
        output.display(),
        files.len(),
        info.extra.get(weights_file::AVERAGED_REVISIONS).map(String::as_str).unwrap_or("?")
    );
    Ok(())
}

async fn pull(backend: &dyn StorageBackend, revision: u64, output: &std::path::Path) -> Result<()> {
    let stored: StoredWeights =
        backend.list_revisions().await?.into_iter().rfind(|w| w.name.revision() == revision).ok_or_else(
            || bad_input(format!("revision {revision} is not in storage (see `zero2048 weights list`)")),
        )?;
    let url = backend.get_weights_url(&stored.name.to_string(), revision).await?;
    let fetcher = Fetcher::new(output, u64::MAX, RetryPolicy::default())?;
    let expected = Expected { sha256: stored.sha256.clone(), size: stored.size };
    let downloaded = fetcher.fetch(&url.url, &expected).await?;
    let target = output.join(stored.name.to_string());
    std::fs::rename(&downloaded, &target)
        .with_context(|| format!("moving the download to {}", target.display()))?;
    println!(
        "{} ({} bytes, sha256 {}) verified and saved to {}",
        stored.name,
        stored.size,
        stored.sha256,
        target.display()
    );
    Ok(())
}

async fn verify(adapter: &StorageAdapter, bucket: Option<&dyn StorageBackend>) -> Result<()> {
    let mut places: Vec<(&str, &dyn StorageBackend)> = vec![("local", adapter.local())];
    if let Some(bucket) = bucket {
        places.push(("bucket", bucket));
    }
    let (mut checked, mut failed) = (0, 0);
    for (place, backend) in places {
        let revisions = backend.list_revisions().await?;
        for stored in &revisions {
            checked += 1;
            match verify_stored(backend, stored).await {
                Ok(()) => println!("ok      {place:<6}  {}  {} bytes", stored.name, stored.size),
                Err(e) => {
                    failed += 1;
                    println!("FAILED  {place:<6}  {e}");
                }
            }
        }
        if let Some(latest) = backend.read_latest_info().await? {
            let named = revisions.iter().find(|w| w.name.to_string() == latest.weights_file);
            match named {
                Some(w) if w.sha256 == latest.weights_sha256 && w.size == latest.weights_size => {
                    println!(
                        "ok      {place:<6}  latest.json names revision {} ({})",
                        latest.revision, latest.weights_file
                    )
                }
                _ => {
                    failed += 1;
                    println!(
                        "FAILED  {place:<6}  latest.json names {} with sha256 {}, which is not a stored file with that hash",
                        latest.weights_file, latest.weights_sha256
                    );
                }
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {checked} stored files failed verification");
    }
    println!("{checked} stored files verified");
    Ok(())
}
