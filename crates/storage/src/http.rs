//! Serving the weights directory over HTTP, for `server.localhost_weights`: `GET`/`HEAD
//! /weights/<file>` with `ETag` (the file's SHA-256), `If-None-Match`, and single byte ranges, so
//! interrupted downloads resume. Only content-addressed weights names and patch names are served; anything else,
//! including `..`, absolute paths and percent-encoded tricks, is a 404.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::local::{LocalStorageBackend, LocalUrls};
use crate::naming::WeightsName;
use crate::patch::PatchName;

/// A router serving `/weights/{file}` from `dir`; mount it in the server.
pub fn weights_router(dir: PathBuf) -> Router {
    Router::new().route("/weights/{file}", get(serve)).with_state(Arc::new(dir))
}

fn not_found(what: &str) -> Response {
    // The shape of every API error (`error`, `code`), so clients parse one kind of answer.
    let body = serde_json::json!({
        "error": format!("{what} is not a stored weights file"),
        "code": "not_found",
    });
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn serve(State(dir): State<Arc<PathBuf>>, Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Ok(local) = LocalStorageBackend::new(&dir, LocalUrls::File) else { return not_found("that name") };
    let (name, path, sha256) = if let Ok(name) = WeightsName::parse(&file) {
        match local.stat(&name) {
            Ok(Some(stored)) => (name.to_string(), local.path_of(&name), stored.sha256),
            _ => return not_found(&name.to_string()),
        }
    } else if let Ok(name) = PatchName::parse(&file) {
        match local.stat_patch(&name) {
            Ok(Some(stored)) => (name.to_string(), local.patch_path(&name), stored.sha256),
            _ => return not_found(&name.to_string()),
        }
    } else {
        return not_found("that name");
    };
    let etag = format!("\"{sha256}\"");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let Ok(mut file) = tokio::fs::File::open(&path).await else { return not_found(&name) };
    let size = match file.metadata().await {
        Ok(m) => m.len(),
        Err(_) => return not_found(&name),
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).map(|v| parse_range(v, size));
    let (status, start, length) = match range {
        None | Some(RangeRequest::Ignored) => (StatusCode::OK, 0, size),
        Some(RangeRequest::Unsatisfiable) => {
            return (StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{size}"))])
                .into_response();
        }
        Some(RangeRequest::Bytes { start, end }) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
    };
    if start > 0 && file.seek(SeekFrom::Start(start)).await.is_err() {
        return not_found(&name);
    }
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file.take(length), 256 * 1024));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + length - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    response
}

/// A `Range` header, as far as this server honours it.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// One satisfiable range, inclusive.
    Bytes {
        /// First byte.
        start: u64,
        /// Last byte.
        end: u64,
    },
    /// A range beyond the end of the file.
    Unsatisfiable,
    /// Not a single byte range we serve (multiple ranges, other units, garbage): send it all.
    Ignored,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n` against a file of `size` bytes.
pub fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return RangeRequest::Ignored };
    if spec.contains(',') {
        return RangeRequest::Ignored;
    }
    let Some((a, b)) = spec.split_once('-') else { return RangeRequest::Ignored };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => (start, end.min(size.saturating_sub(1))),
        (Ok(start), Err(_)) if b.is_empty() => (start, size.saturating_sub(1)),
        (Err(_), Ok(suffix)) if a.is_empty() => {
            if suffix == 0 {
                return RangeRequest::Unsatisfiable;
            }
            (size.saturating_sub(suffix), size.saturating_sub(1))
        }
        _ => return RangeRequest::Ignored,
    };
    if size == 0 || start >= size { RangeRequest::Unsatisfiable } else { RangeRequest::Bytes { start, end } }
}
