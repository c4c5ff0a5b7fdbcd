//! The `storage:` and `server:` sections of the configuration file (keys spelled as in the storage
//! guide), layered: command-line flag > environment variable > file > default.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The `storage:` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where weights are stored locally: the store itself, or the cache when a bucket is used.
    pub weights_dir: PathBuf,
    /// Publish to an S3-compatible bucket (Cloudflare R2 or any other).
    pub use_r2: bool,
    /// The bucket.
    pub r2_bucket: Option<String>,
    /// Access key ID (environment: `R2_ACCESS_KEY`).
    pub r2_access_key: Option<Secret>,
    /// Secret access key (environment: `R2_SECRET_KEY`).
    pub r2_secret_key: Option<Secret>,
    /// The S3 API endpoint, e.g. `https://<account-id>.r2.cloudflarestorage.com` (environment:
    /// `R2_ENDPOINT`).
    pub r2_endpoint_url: Option<String>,
    /// A public base URL for the bucket's objects; when set, weights URLs are `<base>/<key>` and
    /// never signed.
    pub r2_public_url: Option<String>,
    /// The signing region. R2 wants `auto`; other S3 services their own region.
    pub r2_region: String,
    /// A key prefix inside the bucket, so several runs can share one bucket ("" for none).
    pub r2_prefix: String,
    /// Seconds allowed to open a connection to the bucket.
    pub r2_connect_timeout_seconds: f64,
    /// Seconds allowed for one request to the bucket (a multipart part, a listing).
    pub r2_request_timeout_seconds: f64,
    /// Retries of a failed bucket request before the adapter falls back to local storage.
    pub r2_max_retries: usize,
    /// How long weights URLs stay valid beyond the latest record's deadline, in seconds.
    pub url_grace_seconds: u64,
    /// Seconds between attempts to bring the bucket up to date after a fallback.
    pub catch_up_interval_seconds: u64,
    /// Newest revisions kept in storage (0 keeps all); the one the latest record names is kept too.
    pub keep_revisions: usize,
    /// Disk budget of the stored revisions in MiB (0: none): the oldest go first past it, never
    /// the one the latest record names. Applies to the weights directory and the bucket alike.
    pub weights_budget_mib: u64,
    /// Store beside each revision its weights compressed whole and a delta from the revision
    /// before, and name both in the latest record, so a worker that follows a run downloads a
    /// fraction of each revision.
    pub patches: bool,
    /// Where accepted games are kept (compressed chunks) when no bucket is used; a bucket keeps
    /// them under `games/` [default: `games` beside `weights_dir`].
    pub games_dir: Option<PathBuf>,
    /// Games of this many newest revisions are kept once learned; older ones are deleted except
    /// a sample (0 keeps every game).
    pub games_keep_revisions: u64,
    /// Of the games older than `games_keep_revisions`, one chunk in this many is kept as a
    /// sample (0: none).
    pub games_keep_one_in: u64,
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig {
            weights_dir: PathBuf::from("weights"),
            use_r2: false,
            r2_bucket: None,
            r2_access_key: None,
            r2_secret_key: None,
            r2_endpoint_url: None,
            r2_public_url: None,
            r2_region: "auto".to_string(),
            r2_prefix: String::new(),
            r2_connect_timeout_seconds: 3.0,
            r2_request_timeout_seconds: 60.0,
            r2_max_retries: 2,
            url_grace_seconds: 3600,
            catch_up_interval_seconds: 30,
            keep_revisions: 20,
            weights_budget_mib: 0,
            patches: true,
            games_dir: None,
            games_keep_revisions: 0,
            games_keep_one_in: 20,
        }
    }
}

impl StorageConfig {
    /// Where games are kept locally: `games_dir`, or `games` beside the weights directory.
    pub fn games_dir(&self) -> PathBuf {
        self.games_dir.clone().unwrap_or_else(|| match self.weights_dir.parent() {
            Some(parent) => parent.join("games"),
            None => PathBuf::from("games"),
        })
    }
}

/// The `server:` section (the part storage needs: where local weights are served).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Serve the weights directory over HTTP at `/weights/<file>`, and hand out those URLs.
    pub localhost_weights: bool,
    /// The host workers connect to (and the server binds to).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The host to put in URLs when `host` is a wildcard such as `0.0.0.0`.
    pub advertised_host: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            localhost_weights: false,
            host: "127.0.0.1".to_string(),
            port: 8000,
            advertised_host: None,
        }
    }
}

impl ServerConfig {
    /// `http://host:port`, with the advertised host when the bind host is a wildcard, which is
    /// never a usable address for a worker.
    pub fn public_base_url(&self) -> Result<String, ConfigError> {
        let host = match &self.advertised_host {
            Some(advertised) => advertised.clone(),
            None if is_wildcard(&self.host) => {
                return Err(ConfigError::Invalid {
                    key: "server.advertised_host",
                    message: format!(
                        "server.host is {}, which listens everywhere but is not an address workers can \
                         connect to; set server.advertised_host to the name or address they should use",
                        self.host
                    ),
                });
            }
            None => self.host.clone(),
        };
        let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
        Ok(format!("http://{host}:{}", self.port))
    }
}

fn is_wildcard(host: &str) -> bool {
    host.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

/// The whole file: the sections storage knows. Unknown sections and keys are errors.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `storage:`.
    pub storage: StorageConfig,
    /// `server:`.
    pub server: ServerConfig,
}

/// Values given on the command line; `None` means "not given".
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--use-r2`.
    pub use_r2: bool,
    /// `--r2-bucket`.
    pub r2_bucket: Option<String>,
    /// `--r2-access-key`.
    pub r2_access_key: Option<Secret>,
    /// `--r2-secret-key`.
    pub r2_secret_key: Option<Secret>,
    /// `--r2-endpoint`.
    pub r2_endpoint: Option<String>,
    /// `--r2-public-url`.
    pub r2_public_url: Option<String>,
    /// `--weights-dir`.
    pub weights_dir: Option<PathBuf>,
    /// `--games-dir`.
    pub games_dir: Option<PathBuf>,
    /// `--weights-budget-mib`.
    pub weights_budget_mib: Option<u64>,
    /// `--host`.
    pub host: Option<String>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--advertised-host`.
    pub advertised_host: Option<String>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML, or a key is unknown or of the wrong type.
    #[error("{path}:{line}:{column}: `{key}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The key, as a dotted path (`storage.use_r2`).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value that parses but cannot work.
    #[error("{key}: {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Layers the environment and then the flags over what the file said.
    pub fn apply(&mut self, env: &dyn Fn(&str) -> Option<String>, overrides: &Overrides) {
        let s = &mut self.storage;
        let nonempty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
        if let Some(v) = nonempty(env("R2_ACCESS_KEY")) {
            s.r2_access_key = Some(Secret::new(v));
        }
        if let Some(v) = nonempty(env("R2_SECRET_KEY")) {
            s.r2_secret_key = Some(Secret::new(v));
        }
        if let Some(v) = nonempty(env("R2_ENDPOINT")) {
            s.r2_endpoint_url = Some(v);
        }
        if overrides.use_r2 {
            s.use_r2 = true;
        }
        if let Some(v) = &overrides.r2_bucket {
            s.r2_bucket = Some(v.clone());
        }
        if let Some(v) = &overrides.r2_access_key {
            s.r2_access_key = Some(v.clone());
        }
        if let Some(v) = &overrides.r2_secret_key {
            s.r2_secret_key = Some(v.clone());
        }
        if let Some(v) = &overrides.r2_endpoint {
            s.r2_endpoint_url = Some(v.clone());
        }
        if let Some(v) = &overrides.r2_public_url {
            s.r2_public_url = Some(v.clone());
        }
        if let Some(v) = &overrides.weights_dir {
            s.weights_dir = v.clone();
        }
        if let Some(v) = &overrides.games_dir {
            s.games_dir = Some(v.clone());
        }
        if let Some(v) = overrides.weights_budget_mib {
            s.weights_budget_mib = v;
        }
        if let Some(v) = &overrides.host {
            self.server.host = v.clone();
        }
        if let Some(v) = overrides.port {
            self.server.port = v;
        }
        if let Some(v) = &overrides.advertised_host {
            self.server.advertised_host = Some(v.clone());
        }
    }

    /// Values that can never work. (An incomplete R2 setup is not an error: the adapter falls back
    /// to local storage and says why.)
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.storage.weights_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "storage.weights_dir",
                message: "must not be empty".into(),
            });
        }
        for (key, value) in [
            ("storage.r2_connect_timeout_seconds", self.storage.r2_connect_timeout_seconds),
            ("storage.r2_request_timeout_seconds", self.storage.r2_request_timeout_seconds),
        ] {
            if !(value > 0.0 && value <= 3600.0) {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("{value} is not within (0, 3600] seconds"),
                });
            }
        }
        if self.server.localhost_weights {
            self.server.public_base_url()?;
        }
        Ok(())
    }

    /// The R2 settings, if `use_r2` is on and every required one is present; else why not.
    pub fn r2_settings(&self) -> Result<R2Settings, String> {
        let s = &self.storage;
        let mut missing = Vec::new();
        let bucket = s.r2_bucket.clone().filter(|b| !b.trim().is_empty());
        if bucket.is_none() {
            missing.push("r2_bucket (--r2-bucket)");
        }
        let access = s.r2_access_key.clone().filter(|k| !k.is_empty());
        if access.is_none() {
            missing.push("r2_access_key (--r2-access-key or R2_ACCESS_KEY)");
        }
        let secret = s.r2_secret_key.clone().filter(|k| !k.is_empty());
        if secret.is_none() {
            missing.push("r2_secret_key (--r2-secret-key or R2_SECRET_KEY)");
        }
        let endpoint = s.r2_endpoint_url.clone().filter(|e| !e.trim().is_empty());
        if endpoint.is_none() {
            missing.push("r2_endpoint_url (--r2-endpoint or R2_ENDPOINT)");
        }
        match (bucket, access, secret, endpoint) {
            (Some(bucket), Some(access_key), Some(secret_key), Some(endpoint)) => {
                let parsed = url::Url::parse(&endpoint)
                    .map_err(|e| format!("storage.r2_endpoint_url `{endpoint}` is not a URL: {e}"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(format!("storage.r2_endpoint_url `{endpoint}` must be http:// or https://"));
                }
                Ok(R2Settings {
                    bucket,
                    access_key,
                    secret_key,
                    endpoint,
                    public_url: s.r2_public_url.clone().filter(|u| !u.trim().is_empty()),
                    region: s.r2_region.clone(),
                    prefix: s.r2_prefix.trim_matches('/').to_string(),
                    connect_timeout: std::time::Duration::from_secs_f64(s.r2_connect_timeout_seconds),
                    request_timeout: std::time::Duration::from_secs_f64(s.r2_request_timeout_seconds),
                    max_retries: s.r2_max_retries,
                })
            }
            _ => Err(format!("R2 is enabled but not configured: missing {}", missing.join(", "))),
        }
    }
}

/// Parses YAML into any configuration type (one with more sections than storage's, say), with the
/// same errors: file, line, column and dotted key. Empty text gives the type's default.
pub fn parse_yaml<T: serde::de::DeserializeOwned + Default>(
    text: &str,
    path: &Path,
) -> Result<T, ConfigError> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let key = error.path().to_string();
        let inner = error.into_inner();
        let (line, column) = inner.location().map_or((0, 0), |l| (l.line(), l.column()));
        let message = inner.to_string();
        // serde_yaml_ng appends " at line L column C"; the location is already in front.
        let message = message.split(" at line ").next().unwrap_or(&message).to_string();
        ConfigError::Parse { path: path.to_path_buf(), line, column, key, message }
    })
}

/// Everything needed to reach a bucket.
#[derive(Clone, Debug)]
pub struct R2Settings {
    /// Bucket name.
    pub bucket: String,
    /// Access key ID.
    pub access_key: Secret,
    /// Secret access key.
    pub secret_key: Secret,
    /// S3 API endpoint.
    pub endpoint: String,
    /// Public base URL, if any.
    pub public_url: Option<String>,
    /// Signing region.
    pub region: String,
    /// Key prefix ("" for none), without surrounding slashes.
    pub prefix: String,
    /// Connection timeout.
    pub connect_timeout: std::time::Duration,
    /// Request timeout.
    pub request_timeout: std::time::Duration,
    /// Retries per request.
    pub max_retries: usize,
}
