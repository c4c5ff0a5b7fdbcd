//! The worker's fetcher against a misbehaving HTTP server on loopback: downloads that are cut,
//! corrupted, too long or refused are never accepted into the cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use zero2048_storage::{Expected, FetchError, Fetcher, RetryPolicy, hash_bytes};

const GOOD: &[u8] = b"these are the weights of revision seven, all of them";

#[derive(Default)]
struct Counters {
    requests: AtomicUsize,
}

async fn handler(
    State(counters): State<Arc<Counters>>,
    Path(kind): Path<String>,
    headers: HeaderMap,
) -> Response {
    let n = counters.requests.fetch_add(1, Ordering::SeqCst);
    let range_start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<usize>().ok());
    match kind.as_str() {
        // First request: half the bytes, then the connection dies. Later: honours Range.
        "truncated" if n == 0 => {
            // The pause makes the server flush headers and the first half before the cut.
            let stream = futures::stream::unfold(0, |step| async move {
                match step {
                    0 => Some((Ok(Bytes::from_static(&GOOD[..GOOD.len() / 2])), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Some((Err(std::io::Error::other("connection reset")), 2))
                    }
                    _ => None,
                }
            });
            Response::builder()
                .header(header::CONTENT_LENGTH, GOOD.len())
                .body(Body::from_stream(stream))
                .unwrap()
        }
        "truncated" | "good" => match range_start {
            Some(start) if start < GOOD.len() => Response::builder()
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{}/{}", GOOD.len() - 1, GOOD.len()))
                .body(Body::from(&GOOD[start..]))
                .unwrap(),
            Some(_) => StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
            None => GOOD.into_response(),
        },
        "corrupt" => {
            let mut bytes = GOOD.to_vec();
            bytes[10] ^= 0x40;
            bytes.into_response()
        }
        "long" => [GOOD, b"and some more"].concat().into_response(),
        "short" => match range_start {
            Some(_) => StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
            None => GOOD[..20].to_vec().into_response(),
        },
        "expired" => (StatusCode::FORBIDDEN, "Request has expired").into_response(),
        "flaky" if n == 0 => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        "flaky" => GOOD.into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A fresh server (with its own request counter) per case.
async fn server() -> (String, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let app = Router::new().route("/w/{kind}", get(handler)).with_state(Arc::clone(&counters));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}/w"), counters)
}

fn expected() -> Expected {
    Expected { sha256: hash_bytes(GOOD), size: GOOD.len() as u64 }
}

fn fetcher(dir: &std::path::Path, attempts: u32) -> Fetcher {
    let policy =
        RetryPolicy { attempts, base_delay: Duration::from_millis(5), max_delay: Duration::from_millis(20) };
    Fetcher::new(dir, u64::MAX, policy).unwrap()
}

fn cache_is_empty(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).unwrap().all(|e| e.unwrap().file_name().to_string_lossy().ends_with(".partial"))
}

#[tokio::test]
async fn an_interrupted_download_resumes_with_range() {
    let (base, counters) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), 1);
    let first = f.fetch(&format!("{base}/truncated"), &expected()).await.unwrap_err();
    assert!(matches!(first, FetchError::Network { .. }), "{first}");
    assert!(f.cached(&expected().sha256).is_none(), "a truncated download is never accepted");
    let partial = dir.path().join(format!("{}.partial", expected().sha256));
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), (GOOD.len() / 2) as u64, "kept for resuming");
    let path = f.fetch(&format!("{base}/truncated"), &expected()).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), GOOD);
    assert_eq!(counters.requests.load(Ordering::SeqCst), 2);
    assert!(!partial.exists());
}

#[tokio::test]
async fn corrupted_oversized_and_short_downloads_are_refused_and_deleted() {
    let (base, _) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), 2);
    match f.fetch(&format!("{base}/corrupt"), &expected()).await {
        Err(FetchError::Mismatch { check: "sha256", expected: e, actual, .. }) => {
            assert_eq!(e, expected().sha256);
            assert_ne!(actual, e);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        f.fetch(&format!("{base}/long"), &expected()).await,
        Err(FetchError::Mismatch { check: "size", .. })
    ));
    let short = f.fetch(&format!("{base}/short"), &expected()).await.unwrap_err();
    assert!(matches!(short, FetchError::Network { .. }), "{short}");
    assert!(f.cached(&expected().sha256).is_none());
    let mut left = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>();
    left.retain(|n| !n.to_string_lossy().ends_with(".partial"));
    assert!(left.is_empty(), "nothing unverified in the cache: {left:?}");
    assert!(cache_is_empty(dir.path()));
}

#[tokio::test]
async fn refused_urls_are_not_retried_but_server_errors_are() {
    let (base, counters) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), 4);
    let refused = f.fetch(&format!("{base}/expired"), &expected()).await.unwrap_err();
    assert!(matches!(refused, FetchError::UrlRejected { status: 403, .. }), "{refused}");
    assert!(refused.to_string().contains("fetch the latest record again"));
    assert_eq!(counters.requests.load(Ordering::SeqCst), 1, "an expired URL is not retried");
    assert!(matches!(
        f.fetch(&format!("{base}/missing"), &expected()).await,
        Err(FetchError::Status { status: 404, .. })
    ));
    assert_eq!(counters.requests.load(Ordering::SeqCst), 2);

    let (base, counters) = server().await;
    f.fetch(&format!("{base}/flaky"), &expected()).await.unwrap();
    assert_eq!(counters.requests.load(Ordering::SeqCst), 2, "a 500 is retried once, then succeeds");
    // Cached now: no request at all.
    f.fetch(&format!("{base}/flaky"), &expected()).await.unwrap();
    assert_eq!(counters.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn file_urls_and_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("weights.bin");
    std::fs::write(&source, GOOD).unwrap();
    let f = fetcher(&dir.path().join("cache"), 1);
    let url = url::Url::from_file_path(&source).unwrap().to_string();
    assert_eq!(std::fs::read(f.fetch(&url, &expected()).await.unwrap()).unwrap(), GOOD);
    let wrong = Expected { sha256: expected().sha256, size: 3 };
    let f2 = fetcher(&dir.path().join("cache2"), 1);
    assert!(matches!(f2.fetch(&url, &wrong).await, Err(FetchError::Mismatch { check: "size", .. })));
    assert!(matches!(f2.fetch("ftp://host/w", &expected()).await, Err(FetchError::UnsupportedUrl(_))));
    let bad_hash = Expected { sha256: "../../etc/passwd".into(), size: 1 };
    assert!(matches!(f2.fetch(&url, &bad_hash).await, Err(FetchError::BadExpectedHash(_))));
}

#[tokio::test]
async fn eviction_keeps_the_budget_and_the_file_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let policy = RetryPolicy {
        attempts: 1,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
    };
    let f = Fetcher::new(&dir.path().join("cache"), 25, policy).unwrap();
    let mut hashes: Vec<String> = Vec::new();
    for name in ["a", "b", "c"] {
        let source = dir.path().join(name);
        let bytes = name.repeat(10);
        std::fs::write(&source, &bytes).unwrap();
        let expected = Expected { sha256: hash_bytes(bytes.as_bytes()), size: 10 };
        if name == "b" {
            f.set_in_use(&[hashes[0].as_str()]);
        }
        f.fetch(url::Url::from_file_path(&source).unwrap().as_ref(), &expected).await.unwrap();
        hashes.push(expected.sha256);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // a is in use and c was just fetched: b, the least recently used of the rest, goes.
    assert!(f.cached(&hashes[0]).is_some());
    assert!(f.cached(&hashes[1]).is_none());
    assert!(f.cached(&hashes[2]).is_some());
}
