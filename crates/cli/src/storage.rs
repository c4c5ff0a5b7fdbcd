//! Turning `--config` and the storage flags into a configuration.

use anyhow::Result;
use zero2048_storage::{Config, Overrides, Secret};

use crate::args::StorageArgs;
use crate::bad_input;

/// Loads the configuration: flags over environment over file over defaults.
pub fn load_config(args: &StorageArgs) -> Result<Config> {
    let overrides = Overrides {
        use_r2: args.use_r2,
        r2_bucket: args.r2_bucket.clone(),
        r2_access_key: args.r2_access_key.clone().map(Secret::new),
        r2_secret_key: args.r2_secret_key.clone().map(Secret::new),
        r2_endpoint: args.r2_endpoint.clone(),
        r2_public_url: args.r2_public_url.clone(),
        weights_dir: args.weights_dir.clone(),
        host: None,
        port: None,
    };
    let env = |key: &str| std::env::var(key).ok();
    Config::load(args.config.as_deref(), &env, &overrides).map_err(|e| bad_input(e.to_string()))
}

/// A runtime for the async storage code.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}
