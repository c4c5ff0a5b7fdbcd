//! Talking to the server: the latest record and game uploads, with the protocol handshake.

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

/// A client of one server.
#[derive(Clone)]
pub struct ServerClient {
    http: reqwest::Client,
    base: String,
    latest_url: Option<String>,
    token: Option<Secret>,
    /// Sent with every request: which machine this is (see `Spool::machine`).
    machine: String,
}

impl ServerClient {
    /// A client of the server at `base` (`http://host:port`); `latest_url` reads the latest record
    /// from elsewhere (a bucket's public `latest.json`).
    pub fn new(
        base: &str,
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
        Ok(ServerClient { http, base: base.trim_end_matches('/').to_string(), latest_url, token, machine })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
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
        let response = request.send().await.map_err(|e| ClientError::Transient {
            message: format!("{what}: cannot reach {}: {}", self.base, without_url(&e)),
            retry_after: None,
        })?;
        let status = response.status().as_u16();
        if own_server {
            match response.headers().get(PROTOCOL_HEADER).and_then(|v| v.to_str().ok()) {
                Some(v) if v.trim() == PROTOCOL_VERSION.to_string() => {}
                Some(v) if status != 426 => {
                    return Err(ClientError::Incompatible(format!(
                        "{} speaks protocol version {v}; this worker speaks {PROTOCOL_VERSION}: install a matching zero2048",
                        self.base
                    )));
                }
                None if status < 500 => {
                    return Err(ClientError::Incompatible(format!(
                        "{} is not a zero2048 server (its answer to {what} has no {PROTOCOL_HEADER} header)",
                        self.base
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
            None => (format!("{}/api/v1/latest", self.base), true),
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
        let url = format!("{}/api/v1/games", self.base);
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
