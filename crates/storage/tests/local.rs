//! The local backend and the HTTP handler that serves it.

mod common;
#[path = "common/ports.rs"]
mod ports;

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;
use zero2048_storage::http::{RangeRequest, parse_range, weights_router};
use zero2048_storage::{
    LocalStorageBackend, LocalUrls, Retention, StorageBackend, StorageError, UrlKind, WeightsData,
    WeightsName, hash_bytes,
};

fn deadline() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::hours(1)
}

#[tokio::test]
async fn files_are_content_addressed_complete_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStorageBackend::new(dir.path(), LocalUrls::File).unwrap();
    let source = common::random_file(dir.path(), "source.bin", 3 << 20, 1);
    let stored = local.save_weights(WeightsData::File(source.clone()), 12).await.unwrap();
    let expected_hash = hash_bytes(&std::fs::read(&source).unwrap());
    assert_eq!(stored.sha256, expected_hash);
    assert_eq!(stored.name.to_string(), format!("r000012-{}.safetensors", &expected_hash[..12]));
    assert_eq!(std::fs::read(local.path_of(&stored.name)).unwrap(), std::fs::read(&source).unwrap());
    // No temp files remain, and the sidecar records the full hash and size.
    let names: Vec<String> = std::fs::read_dir(local.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with(".tmp-")), "{names:?}");
    let sidecar = std::fs::read_to_string(local.dir().join(stored.name.sidecar())).unwrap();
    assert_eq!(sidecar, format!("{expected_hash} {}\n", 3 << 20));
    // Idempotent, listed in revision order, streamed back.
    local.save_weights(WeightsData::File(source), 12).await.unwrap();
    local.save_weights(WeightsData::Bytes(Bytes::from_static(b"older")), 3).await.unwrap();
    let listed = local.list_revisions().await.unwrap();
    assert_eq!(listed.iter().map(|w| w.name.revision()).collect::<Vec<_>>(), vec![3, 12]);
    let mut back = Vec::new();
    local.open_weights(&stored.name).await.unwrap().read_to_end(&mut back).await.unwrap();
    assert_eq!(hash_bytes(&back), expected_hash);
    let url = local.get_weights_url(&stored.name.to_string(), 12).await.unwrap();
    assert_eq!(url.kind, UrlKind::File);
    assert_eq!(url::Url::parse(&url.url).unwrap().to_file_path().unwrap(), local.path_of(&stored.name));
}

#[tokio::test]
async fn the_latest_record_never_names_missing_weights() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStorageBackend::new(dir.path(), LocalUrls::Http { base: "http://10.0.0.5:8000".into() })
        .unwrap();
    let stored = local.save_weights(WeightsData::Bytes(Bytes::from_static(b"abc")), 1).await.unwrap();
    let url = local.get_weights_url(&format!("weights/{}", stored.name), 1).await.unwrap();
    assert_eq!(url.url, format!("http://10.0.0.5:8000/weights/{}", stored.name));
    assert_eq!(url.kind, UrlKind::Http);
    let info = local.update_latest_info(1, &url.url, &stored.sha256, deadline()).await.unwrap();
    assert_eq!((info.weights_size, info.weights_file.clone()), (3, stored.name.to_string()));
    assert!(info.extra.is_empty(), "the guide's form adds no trainer fields");
    let refused = local.update_latest_info(2, &url.url, &hash_bytes(b"never stored"), deadline()).await;
    assert!(matches!(refused, Err(StorageError::NotStored { revision: 2, .. })));
    assert_eq!(local.read_latest_info().await.unwrap().unwrap(), info, "the old record stands");
    assert!(matches!(local.delete_weights(&stored.name).await, Err(StorageError::InUse(_))));
    let missing = WeightsName::new(9, &"b".repeat(64));
    assert!(matches!(local.get_weights_url(&missing.to_string(), 9).await, Err(StorageError::NotFound(_))));
}

#[tokio::test]
async fn a_corrupt_latest_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStorageBackend::new(dir.path(), LocalUrls::File).unwrap();
    std::fs::write(dir.path().join("latest.json"), b"{\"revision\": 3, \"weights_url\": ").unwrap();
    let error = local.read_latest_info().await.unwrap_err().to_string();
    assert!(error.contains("latest.json is corrupt"), "{error}");
}

#[tokio::test]
async fn retention_and_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStorageBackend::new(dir.path(), LocalUrls::File).unwrap();
    let mut stored = Vec::new();
    for revision in 1..=6 {
        stored.push(
            local
                .save_weights(WeightsData::Bytes(Bytes::from(vec![revision as u8; 10])), revision)
                .await
                .unwrap(),
        );
    }
    let url = local.get_weights_url(&stored[0].name.to_string(), 1).await.unwrap();
    local.update_latest_info(1, &url.url, &stored[0].sha256, deadline()).await.unwrap();
    local.prune(Retention::newest(3)).await.unwrap();
    let left: Vec<u64> = local.list_revisions().await.unwrap().iter().map(|w| w.name.revision()).collect();
    assert_eq!(left, vec![1, 4, 5, 6], "the newest three, and the latest record's revision though old");
    assert!(!dir.path().join(stored[1].name.sidecar()).exists(), "sidecars go with their files");
    std::fs::write(dir.path().join(".tmp-weights-1-2"), b"half a file").unwrap();
    assert_eq!(local.remove_leftovers().unwrap(), 1);
}

#[test]
fn names_outside_the_pattern_are_rejected() {
    let good = WeightsName::new(42, &"0123456789abcdef".repeat(4));
    assert_eq!(WeightsName::parse(&good.to_string()).unwrap(), good);
    for bad in [
        "../r000001-0123456789ab.safetensors",
        "/etc/passwd",
        "r000001-0123456789ab.safetensors/..",
        "r000001-0123456789AB.safetensors",
        "r0000001-0123456789ab.safetensors",
        "r1-0123456789ab.safetensors",
        "r000001-0123456789ab.safetensors.sha256",
        "r000001-0123456789ab%2e.safetensors",
        "latest.json",
        "",
    ] {
        assert!(WeightsName::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn range_headers() {
    assert_eq!(parse_range("bytes=0-9", 100), RangeRequest::Bytes { start: 0, end: 9 });
    assert_eq!(parse_range("bytes=90-", 100), RangeRequest::Bytes { start: 90, end: 99 });
    assert_eq!(parse_range("bytes=-10", 100), RangeRequest::Bytes { start: 90, end: 99 });
    assert_eq!(parse_range("bytes=50-500", 100), RangeRequest::Bytes { start: 50, end: 99 });
    assert_eq!(parse_range("bytes=100-", 100), RangeRequest::Unsatisfiable);
    assert_eq!(parse_range("bytes=-0", 100), RangeRequest::Unsatisfiable);
    assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeRequest::Ignored);
    assert_eq!(parse_range("items=0-1", 100), RangeRequest::Ignored);
    assert_eq!(parse_range("bytes=9-3", 100), RangeRequest::Ignored);
}

/// Serves `dir` on a loopback port; returns the base URL.
async fn serve(dir: std::path::PathBuf) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, weights_router(dir)).await.unwrap() });
    format!("http://{address}")
}

#[tokio::test]
async fn the_http_handler_serves_ranges_and_etags_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStorageBackend::new(&dir.path().join("weights"), LocalUrls::File).unwrap();
    let stored = local.save_weights(WeightsData::Bytes(Bytes::from_static(b"0123456789")), 1).await.unwrap();
    std::fs::write(dir.path().join("secret.txt"), b"outside the weights directory").unwrap();
    let base = serve(local.dir().to_path_buf()).await;
    let client = reqwest::Client::new();
    let url = format!("{base}/weights/{}", stored.name);

    let full = client.get(&url).send().await.unwrap();
    assert_eq!(full.status(), 200);
    let etag = full.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", stored.sha256));
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(full.bytes().await.unwrap().as_ref(), b"0123456789");

    let part = client.get(&url).header("range", "bytes=4-").send().await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 4-9/10");
    assert_eq!(part.bytes().await.unwrap().as_ref(), b"456789");

    let head = client.head(&url).send().await.unwrap();
    assert_eq!((head.status().as_u16(), head.headers()["content-length"].to_str().unwrap()), (200, "10"));
    let cached = client.get(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(cached.status(), 304);
    let beyond = client.get(&url).header("range", "bytes=10-").send().await.unwrap();
    assert_eq!(beyond.status(), 416);

    for escape in [
        "/weights/..%2Fsecret.txt",
        "/weights/%2e%2e%2fsecret.txt",
        "/weights/..%2f..%2fetc%2fpasswd",
        "/weights/%2Fetc%2Fpasswd",
        "/weights/secret.txt",
        "/weights/latest.json",
        "/weights/r000002-0123456789ab.safetensors",
        "/secret.txt",
        "/weights/../secret.txt",
    ] {
        let response = client.get(format!("{base}{escape}")).send().await.unwrap();
        assert_eq!(response.status(), 404, "{escape}");
        let body = response.text().await.unwrap();
        assert!(!body.contains("outside the weights directory"), "{escape} leaked {body}");
        if escape.starts_with("/weights/") && !escape.contains("/../") {
            // The same error shape as every other API error: a message and a machine-readable code.
            let error: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(error["code"], "not_found", "{escape}: {body}");
            assert!(error["error"].as_str().is_some_and(|m| !m.is_empty()), "{escape}: {body}");
        }
    }
}
