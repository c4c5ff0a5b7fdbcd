//! Talking to the server: the latest record and game uploads, with the protocol handshake.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use zero2048_protocol::{
    ApiError, BUILD_VERSION, LatestRecord, PROTOCOL_HEADER, PROTOCOL_VERSION, UploadReply,
    WORKER_MACHINE_HEADER, WORKER_VERSION_HEADER,
};
use zero2048_storage::Secret;

/// Why a request did not give an answer to use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server speaks another protocol, or wants a newer worker: nothing to do but upgrade.
    #[error("incompatible server: {0}")]
    Incompatible(String),
    /// The token was refused.
    #[error("the server refused the token: {0}")]
    Unauthorized(String),
    /// The server refused the request itself (a malformed or oversized batch).
    #[error("the server refused the upload ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// Worth retrying later (network trouble, 5xx, rate limit, learner behind).
    #[error("{message}")]
    Transient {
        /// What happened.
        message: String,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The server has no revision yet.
    #[error("the server has not published a revision yet")]
    NoRevision,
}

impl ClientError {
    /// Whether the worker must stop (no retry can help).
    pub fn is_fatal(&self) -> bool {
        matches!(self, ClientError::Incompatible(_) | ClientError::Unauthorized(_))
    }
}

/// A client of a run's server, or of several API servers of one run: requests go to one of
/// them, and to the next when it cannot be reached.
#[derive(Clone)]
pub struct ServerClient {
    http: reqwest::Client,
    bases: Arc<[String]>,
    /// Which of `bases` requests go to; shared by clones, so the whole worker moves at once.
    current: Arc<AtomicUsize>,
    latest_url: Option<String>,
    token: Option<Secret>,
    /// Sent with every request: which machine this is (see `Spool::machine`).
    machine: String,
}

impl ServerClient {
    /// A client of the servers at `bases` (`http://host:port`, the first used first; at least
    /// one); `latest_url` reads the latest record from elsewhere (a bucket's public
    /// `latest.json`).
    pub fn new(
        bases: &[String],
        latest_url: Option<String>,
        token: Option<Secret>,
        machine: String,
    ) -> Result<ServerClient, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("zero2048-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transient { message: e.to_string(), retry_after: None })?;
        let bases: Vec<String> = bases.iter().map(|b| b.trim_end_matches('/').to_string()).collect();
        if bases.is_empty() {
            return Err(ClientError::Incompatible("no server URL was given".into()));
        }
        Ok(ServerClient { http, bases: bases.into(), current: Arc::default(), latest_url, token, machine })
    }

    /// The base URL requests go to now.
    pub fn base(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// After `failed` could not be reached: the next server takes the requests (once, however
    /// many requests met the failure at the same time).
    fn fail_over(&self, failed: &str) {
        if self.bases.len() < 2 {
            return;
        }
        let now = self.current.load(Ordering::Relaxed);
        if self.bases[now % self.bases.len()] != failed {
            return;
        }
        if self.current.compare_exchange(now, now + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::warn!("{failed} cannot be reached; the next requests go to {}", self.base());
        }
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(method, url)
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
            .header(WORKER_VERSION_HEADER, BUILD_VERSION)
            .header(WORKER_MACHINE_HEADER, &self.machine);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        request
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
        own_server: bool,
    ) -> Result<reqwest::Response, ClientError> {
        let base = self.base().to_string();
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                if own_server {
                    self.fail_over(&base);
                }
                return Err(ClientError::Transient {
                    message: format!("{what}: cannot reach {base}: {}", without_url(&e)),
                    retry_after: None,
                });
            }
        };
        let status = response.status().as_u16();
        if own_server {
            match response.headers().get(PROTOCOL_HEADER).and_then(|v| v.to_str().ok()) {
                Some(v) if v.trim() == PROTOCOL_VERSION.to_string() => {}
                Some(v) if status != 426 => {
                    return Err(ClientError::Incompatible(format!(
                        "{base} speaks protocol version {v}; this worker speaks {PROTOCOL_VERSION}: install a matching zero2048"
                    )));
                }
                None if status < 500 => {
                    return Err(ClientError::Incompatible(format!(
                        "{base} is not a zero2048 server (its answer to {what} has no {PROTOCOL_HEADER} header)"
                    )));
                }
                _ => {}
            }
        }
        if response.status().is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ApiError>(&body).map(|e| e.error).unwrap_or_else(|_| {
            let text: String = body.chars().take(200).collect();
            format!("HTTP {status}: {text}")
        });
        Err(match status {
            426 => ClientError::Incompatible(message),
            401 | 403 => ClientError::Unauthorized(message),
            404 if what == "latest" => ClientError::NoRevision,
            429 | 503 | 500..=599 | 408 => {
                ClientError::Transient { message: format!("{what}: {message}"), retry_after }
            }
            _ => ClientError::Refused { status, message },
        })
    }

    /// The latest record, parsed and checked field by field (a record this worker cannot follow
    /// is [`ClientError::Incompatible`], naming the field).
    pub async fn latest(&self) -> Result<LatestRecord, ClientError> {
        let (url, own) = match &self.latest_url {
            Some(url) => (url.clone(), false),
            None => (format!("{}/api/v1/latest", self.base()), true),
        };
        let response = self.send(self.request(reqwest::Method::GET, &url), "latest", own).await?;
        let bytes = response.bytes().await.map_err(|e| ClientError::Transient {
            message: format!("latest: reading the answer: {}", without_url(&e)),
            retry_after: None,
        })?;
        LatestRecord::from_json(&bytes).map_err(|e| {
            ClientError::Incompatible(format!("{e} (from {})", zero2048_storage::redact(&url, &[])))
        })
    }

    /// Sends an empty batch: the server checks the token before anything else, so a worker
    /// learns at once (before downloading or playing anything) whether its games will be taken.
    pub async fn check_token(&self) -> Result<(), ClientError> {
        let raw = zero2048_protocol::encode_batch(std::iter::empty()).expect("an empty batch encodes");
        self.upload(zero2048_protocol::compress(&raw, 1)).await.map(|_| ())
    }

    /// Uploads one zstd-compressed batch.
    pub async fn upload(&self, body: Vec<u8>) -> Result<UploadReply, ClientError> {
        let url = format!("{}/api/v1/games", self.base());
        let request = self
            .request(reqwest::Method::POST, &url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_ENCODING, "zstd")
            .body(body);
        let response = self.send(request, "upload", true).await?;
        let bytes = response.bytes().await.map_err(|e| ClientError::Transient {
            message: format!("upload: reading the answer: {}", without_url(&e)),
            retry_after: None,
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Incompatible(format!("the upload reply does not parse: {e}")))
    }
}

/// A reqwest error's message without its URL (which may carry a signed query).
fn without_url(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    if let Some(url) = error.url() {
        message = message.replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(bases: &[&str]) -> ServerClient {
        let bases: Vec<String> = bases.iter().map(|b| b.to_string()).collect();
        ServerClient::new(&bases, None, None, "m".into()).unwrap()
    }

    #[test]
    fn an_unreachable_server_hands_the_requests_to_the_next_once() {
        let pair = client(&["http://a:1/", "http://b:2"]);
        assert_eq!(pair.base(), "http://a:1");
        pair.fail_over("http://a:1");
        assert_eq!(pair.base(), "http://b:2");
        // A second request that met the same failure does not move the worker on again.
        pair.fail_over("http://a:1");
        assert_eq!(pair.base(), "http://b:2");
        let shared = pair.clone();
        shared.fail_over("http://b:2");
        assert_eq!(
            (pair.base(), shared.base()),
            ("http://a:1", "http://a:1"),
            "round the list, all clones at once"
        );
        let alone = client(&["http://a:1"]);
        alone.fail_over("http://a:1");
        assert_eq!(alone.base(), "http://a:1");
        assert!(ServerClient::new(&[], None, None, "m".into()).is_err());
    }
}
