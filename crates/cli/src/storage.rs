//! Turning `--config` and the storage flags into a configuration.

use std::path::Path;

use anyhow::Result;
use zero2048_storage::{Config, Overrides, Secret};

use crate::args::{ListenArgs, StorageArgs};
use crate::bad_input;
use crate::config::FileConfig;

/// The storage flags as the storage crate's overrides.
pub fn overrides(args: &StorageArgs, listen: &ListenArgs) -> Overrides {
    Overrides {
        use_r2: args.use_r2,
        r2_bucket: args.r2_bucket.clone(),
        r2_access_key: args.r2_access_key.clone().map(Secret::new),
        r2_secret_key: args.r2_secret_key.clone().map(Secret::new),
        r2_endpoint: args.r2_endpoint.clone(),
        r2_public_url: args.r2_public_url.clone(),
        weights_dir: args.weights_dir.clone(),
        games_dir: args.games_dir.clone(),
        weights_budget_mib: args.weights_budget_mib,
        host: listen.host.clone(),
        port: listen.port,
        advertised_host: listen.advertised_host.clone(),
    }
}

/// Everything a server-side command reads: the file and the environment (`crate::config`), then
/// the storage flags; the storage and server sections validated.
pub fn load(args: &StorageArgs, listen: &ListenArgs) -> Result<(FileConfig, Config)> {
    let file = crate::config::read(args.config.as_deref(), &crate::config::environment())?;
    let mut storage = crate::config::storage(&file, &overrides(args, listen))?;
    storage.server.localhost_weights |= listen.localhost_weights;
    storage.validate().map_err(|e| bad_input(e.to_string()))?;
    if storage.storage.use_r2 {
        // A bucket that cannot work as configured is the user's to fix; the storage fallback is
        // for buckets that fail while the run goes on.
        storage.r2_settings().map_err(bad_input)?;
    }
    Ok((file, storage))
}

/// The storage part only.
pub fn load_config(args: &StorageArgs) -> Result<Config> {
    load(args, &ListenArgs::default()).map(|(_, config)| config)
}

/// A runtime for the async storage code.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// Whether `path` looks like an unversioned weights directory we may clear on `--reset`.
pub fn is_weights_entry(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name == "latest.json"
        || name.starts_with(".tmp-")
        || zero2048_storage::WeightsName::parse(name.trim_end_matches(".sha256")).is_ok()
}

/// A weights file named by a path, a `file://` or `http(s)://` URL, or `r2://bucket/key` (read
/// with the configured R2 credentials), downloaded when remote. The content is checked when it is
/// loaded (metadata, shapes, finite weights); nobody recorded its hash.
pub fn fetch_weights(spec: &str, config: &Config) -> Result<std::path::PathBuf> {
    let scheme = spec.split_once("://").map(|(s, _)| s);
    let cache = std::env::temp_dir().join("zero2048-downloads");
    match scheme {
        None => {
            let path = std::path::PathBuf::from(spec);
            if path.is_file() {
                Ok(path)
            } else {
                Err(bad_input(format!("{}: no such file", path.display())))
            }
        }
        Some("file" | "http" | "https") => {
            let fetcher =
                zero2048_storage::Fetcher::new(&cache, u64::MAX, zero2048_storage::RetryPolicy::default())?;
            let (path, sha256) =
                runtime()?.block_on(fetcher.fetch_unpinned(spec)).map_err(|e| bad_input(e.to_string()))?;
            eprintln!("downloaded {} (sha256 {sha256})", zero2048_storage::redact(spec, &[]));
            Ok(path)
        }
        Some("r2") => {
            let rest = &spec["r2://".len()..];
            let (bucket, key) = rest
                .split_once('/')
                .filter(|(b, k)| !b.is_empty() && !k.is_empty())
                .ok_or_else(|| bad_input(format!("`{spec}` is not r2://<bucket>/<key>")))?;
            let mut with_bucket = config.clone();
            with_bucket.storage.use_r2 = true;
            with_bucket.storage.r2_bucket = Some(bucket.to_string());
            let settings = with_bucket.r2_settings().map_err(|e| bad_input(format!("{spec}: {e}")))?;
            let backend = zero2048_storage::R2StorageBackend::new(settings)?;
            std::fs::create_dir_all(&cache)?;
            let path = cache.join(format!("r2-{}.safetensors", rand_suffix()));
            runtime()?.block_on(backend.download_key(key, &path)).map_err(|e| bad_input(e.to_string()))?;
            Ok(path)
        }
        Some(other) => Err(bad_input(format!(
            "`{other}://` is not a weights location: use a path, file://, http://, https:// or r2://bucket/key"
        ))),
    }
}

fn rand_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    )
}
