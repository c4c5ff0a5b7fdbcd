//! The R2/S3 backend and the adapter against a real S3-compatible server (Garage on loopback).
//! One test owns the server, so it is always stopped; each case uses its own key prefix.

mod common;
#[path = "common/ports.rs"]
mod ports;

use std::time::Duration;

use bytes::Bytes;
use common::{Garage, random_file};
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;
use zero2048_storage::{
    Expected, FetchError, Fetcher, LatestExtra, R2StorageBackend, Retention, RetryPolicy, StorageAdapter,
    StorageBackend, StorageError, UrlKind, WeightsData, hash_file,
};

fn quick_retry() -> RetryPolicy {
    RetryPolicy { attempts: 1, base_delay: Duration::from_millis(10), max_delay: Duration::from_millis(10) }
}

fn backend(garage: &Garage, prefix: &str) -> R2StorageBackend {
    let dir = tempfile::tempdir().unwrap();
    R2StorageBackend::new(garage.config(dir.path(), prefix).r2_settings().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_against_real_garage() {
    let garage = Garage::start();
    save_list_read_delete(&garage).await;
    presigned_urls_download_and_verify(&garage).await;
    expired_and_tampered_presigned_urls_are_refused(&garage).await;
    public_url_mode_never_signs(&garage).await;
    latest_record_round_trips_and_names_only_stored_weights(&garage).await;
    retention_keeps_the_latest_revision(&garage).await;
    a_64_mb_file_streams_both_ways(&garage).await;
    adapter_publishes_to_the_bucket_and_keeps_a_local_copy(&garage).await;
    wrong_credentials_fall_back_to_local_without_leaking_them(&garage).await;
    a_failed_presign_hands_out_the_local_url(&garage).await;
    patches_go_to_the_bucket_download_presigned_and_leave_with_their_revision(&garage).await;
}

async fn patches_go_to_the_bucket_download_presigned_and_leave_with_their_revision(garage: &Garage) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = garage.config(dir.path(), "patches");
    config.storage.keep_revisions = 1;
    let adapter = StorageAdapter::from_config(&config).await.unwrap();
    let deadline = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut weights = vec![0u8; 300_000];
    weights[1000..1100].fill(7);
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(cache.path(), u64::MAX, quick_retry()).unwrap();
    let mut hows = Vec::new();
    for revision in 1..=3u64 {
        weights[revision as usize * 10_000] = revision as u8;
        let info = adapter
            .publish(
                WeightsData::Bytes(Bytes::from(weights.clone())),
                revision,
                deadline,
                &LatestExtra::new(),
            )
            .await
            .unwrap();
        let offers: Vec<_> = [&info.delta, &info.compressed].into_iter().flatten().collect();
        assert!(offers.iter().all(|o| o.url.contains("X-Amz-Signature=")), "{offers:?}");
        let patches = info.patch_sources();
        let expected = Expected { sha256: info.weights_sha256.clone(), size: info.weights_size };
        let (path, fetched) = fetcher.fetch_smallest(&info.weights_url, &expected, &patches).await.unwrap();
        assert_eq!(std::fs::read(path).unwrap(), weights);
        hows.push(fetched.how());
    }
    assert_eq!(hows, ["compressed", "delta", "delta"]);
    // Only the kept revision's patches stay in the bucket.
    let bucket = adapter.remote().unwrap();
    let patches = bucket.list_patches().await.unwrap();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert!(patches.iter().all(|p| p.target().revision() == 3), "{patches:?}");
}

async fn a_failed_presign_hands_out_the_local_url(garage: &Garage) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = garage.config(dir.path(), "presignfail");
    config.server.localhost_weights = true;
    config.server.port = 8123;
    let adapter = StorageAdapter::from_config(&config).await.unwrap();
    // Eight days is past the longest a presigned URL may live, so presigning fails.
    let deadline = OffsetDateTime::now_utc() + time::Duration::days(8);
    let info = adapter
        .publish(WeightsData::Bytes(Bytes::from_static(b"long deadline")), 1, deadline, &LatestExtra::new())
        .await
        .unwrap();
    assert_eq!(info.weights_url, format!("http://127.0.0.1:8123/weights/{}", info.weights_file));
    assert_eq!(adapter.status().served_as, Some(UrlKind::Http));
    assert!(!adapter.is_degraded(), "the bucket itself is fine");
    let bucket = adapter.remote().unwrap();
    assert_eq!(
        bucket.read_latest_info().await.unwrap().unwrap().revision,
        1,
        "the weights and record still reach the bucket"
    );
}

async fn save_list_read_delete(garage: &Garage) {
    let r2 = backend(garage, "crud");
    r2.probe().await.unwrap();
    let first = r2.save_weights(WeightsData::Bytes(Bytes::from_static(b"revision one")), 1).await.unwrap();
    let second = r2.save_weights(WeightsData::Bytes(Bytes::from_static(b"revision two")), 2).await.unwrap();
    assert_eq!(first.name.to_string(), format!("r000001-{}.safetensors", &first.sha256[..12]));
    // Same bytes again: idempotent, same name.
    assert_eq!(
        r2.save_weights(WeightsData::Bytes(Bytes::from_static(b"revision one")), 1).await.unwrap().name,
        first.name
    );
    let listed = r2.list_revisions().await.unwrap();
    assert_eq!(
        listed.iter().map(|w| w.name.clone()).collect::<Vec<_>>(),
        vec![first.name.clone(), second.name.clone()]
    );
    assert_eq!(listed[1].size, 12);
    let mut bytes = Vec::new();
    r2.open_weights(&second.name).await.unwrap().read_to_end(&mut bytes).await.unwrap();
    assert_eq!(bytes, b"revision two");
    r2.delete_weights(&first.name).await.unwrap();
    assert_eq!(r2.list_revisions().await.unwrap().len(), 1);
    assert!(matches!(r2.open_weights(&first.name).await, Err(StorageError::NotFound(_))));
    assert!(r2.contains(&second.name.to_string()).await.unwrap());
    // Any key can be streamed to a file (what `--resume-from r2://bucket/key` does).
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("copy");
    let written = r2.download_key(&format!("crud/weights/{}", second.name), &path).await.unwrap();
    assert_eq!((written, std::fs::read(&path).unwrap()), (12, b"revision two".to_vec()));
    assert!(matches!(r2.download_key("crud/nothing-here", &path).await, Err(StorageError::NotFound(_))));
    // Names that try to leave the weights prefix never reach the bucket.
    for bad in ["../latest.json", "weights/../../x", "/etc/passwd", "r000001-..%2f.safetensors"] {
        assert!(matches!(r2.get_weights_url(bad, 1).await, Err(StorageError::BadName(_))), "{bad}");
    }
}

async fn presigned_urls_download_and_verify(garage: &Garage) {
    let r2 = backend(garage, "presign");
    let stored = r2.save_weights(WeightsData::Bytes(Bytes::from(vec![7u8; 100_000])), 3).await.unwrap();
    let url = r2.get_weights_url(&stored.name.to_string(), 3).await.unwrap();
    assert_eq!(url.kind, UrlKind::Presigned);
    assert!(url.url.contains("X-Amz-Signature="));
    assert!(url.valid_until.unwrap() > OffsetDateTime::now_utc() + time::Duration::hours(23));
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(cache.path(), u64::MAX, quick_retry()).unwrap();
    let expected = Expected { sha256: stored.sha256.clone(), size: stored.size };
    let path = fetcher.fetch(&url.url, &expected).await.unwrap();
    assert_eq!(hash_file(&path).unwrap(), (stored.sha256.clone(), stored.size));
    // A record that claims other bytes makes the same URL fail the hash check.
    let wrong = Expected { sha256: "0".repeat(64), size: stored.size };
    let error = fetcher.fetch_once(&url.url, &wrong).await.unwrap_err();
    assert!(matches!(error, FetchError::Mismatch { check: "sha256", .. }), "{error}");
    assert!(!error.to_string().contains("X-Amz-Signature="), "signatures never appear in errors: {error}");
    assert!(fetcher.cached(&"0".repeat(64)).is_none());
}

async fn expired_and_tampered_presigned_urls_are_refused(garage: &Garage) {
    let r2 = backend(garage, "expiry");
    let stored = r2.save_weights(WeightsData::Bytes(Bytes::from_static(b"short-lived")), 4).await.unwrap();
    let expected = Expected { sha256: stored.sha256.clone(), size: stored.size };
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(cache.path(), u64::MAX, quick_retry()).unwrap();

    let short = r2
        .get_weights_url_until(
            &stored.name.to_string(),
            4,
            OffsetDateTime::now_utc() + time::Duration::seconds(1),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    match fetcher.fetch(&short.url, &expected).await {
        // Garage answers 400 for an expired URL, R2 and AWS 403: both mean "refresh the record".
        Err(FetchError::UrlRejected { status, .. }) => assert!(status == 400 || status == 403),
        other => panic!("an expired presigned URL was not refused: {other:?}"),
    }

    let good = r2.get_weights_url(&stored.name.to_string(), 4).await.unwrap();
    let signature_at = good.url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let mut tampered = good.url.clone().into_bytes();
    tampered[signature_at] = if tampered[signature_at] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(matches!(fetcher.fetch(&tampered, &expected).await, Err(FetchError::UrlRejected { .. })));
    // A URL asking for more than R2's 7 days is refused when made, not when it fails later.
    let too_long = r2
        .get_weights_url_until(
            &stored.name.to_string(),
            4,
            OffsetDateTime::now_utc() + time::Duration::days(8),
        )
        .await;
    assert!(matches!(too_long, Err(StorageError::Presign(_))));
    fetcher.fetch(&good.url, &expected).await.unwrap();
}

async fn public_url_mode_never_signs(garage: &Garage) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = garage.config(dir.path(), "public");
    config.storage.r2_public_url = Some("https://weights.example.org/".into());
    let r2 = R2StorageBackend::new(config.r2_settings().unwrap()).unwrap();
    let stored = r2.save_weights(WeightsData::Bytes(Bytes::from_static(b"public weights")), 5).await.unwrap();
    let url = r2.get_weights_url(&stored.name.to_string(), 5).await.unwrap();
    assert_eq!(url.kind, UrlKind::Public);
    assert_eq!(url.url, format!("https://weights.example.org/public/weights/{}", stored.name));
    assert!(!url.url.contains('?') && url.valid_until.is_none());
}

async fn latest_record_round_trips_and_names_only_stored_weights(garage: &Garage) {
    let r2 = backend(garage, "latest");
    assert!(r2.read_latest_info().await.unwrap().is_none());
    let stored = r2.save_weights(WeightsData::Bytes(Bytes::from_static(b"latest weights")), 6).await.unwrap();
    let url = r2.get_weights_url(&stored.name.to_string(), 6).await.unwrap();
    let deadline = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + time::Duration::hours(2);
    // The trainer's fields are opaque here: kept and served as written.
    let details: LatestExtra = serde_json::from_value(serde_json::json!({
        "model": {"kind": "ntuple", "tuples": 4},
        "play": {"depth": 1},
        "accepted_revisions": [5, 6],
    }))
    .unwrap();
    let written = r2.update_latest_info_with(6, &url.url, &stored.sha256, deadline, &details).await.unwrap();
    let read = r2.read_latest_info().await.unwrap().unwrap();
    assert_eq!(read, written);
    assert_eq!((read.revision, read.weights_size, read.deadline), (6, 14, deadline));
    assert_eq!(read.extra["accepted_revisions"], serde_json::json!([5, 6]));
    // The guide's four-argument form works too, and refuses weights that are not stored.
    r2.update_latest_info(6, &url.url, &stored.sha256, deadline).await.unwrap();
    let missing = r2.update_latest_info(7, &url.url, &"a".repeat(64), deadline).await;
    assert!(matches!(missing, Err(StorageError::NotStored { revision: 7, .. })));
    assert_eq!(r2.read_latest_info().await.unwrap().unwrap().revision, 6);
}

async fn retention_keeps_the_latest_revision(garage: &Garage) {
    let r2 = backend(garage, "retention");
    let mut names = Vec::new();
    for revision in 1..=5u64 {
        names.push(
            r2.save_weights(WeightsData::Bytes(Bytes::from(format!("rev {revision}"))), revision)
                .await
                .unwrap(),
        );
    }
    // The latest record names revision 2: it survives pruning to 2 revisions.
    let url = r2.get_weights_url(&names[1].name.to_string(), 2).await.unwrap();
    r2.update_latest_info(
        2,
        &url.url,
        &names[1].sha256,
        OffsetDateTime::now_utc() + time::Duration::hours(1),
    )
    .await
    .unwrap();
    let deleted = r2.prune(Retention::newest(2)).await.unwrap();
    let left: Vec<u64> = r2.list_revisions().await.unwrap().iter().map(|w| w.name.revision()).collect();
    assert_eq!(left, vec![2, 4, 5]);
    assert_eq!(deleted.iter().map(|n| n.revision()).collect::<Vec<_>>(), vec![1, 3]);
    assert!(matches!(r2.delete_weights(&names[1].name).await, Err(StorageError::InUse(_))));
}

async fn a_64_mb_file_streams_both_ways(garage: &Garage) {
    let r2 = backend(garage, "big");
    let dir = tempfile::tempdir().unwrap();
    let source = random_file(dir.path(), "big.safetensors", 64 << 20, 64);
    let (sha256, size) = hash_file(&source).unwrap();
    let stored = r2.save_weights(WeightsData::File(source), 9).await.unwrap();
    assert_eq!((stored.sha256.clone(), stored.size), (sha256.clone(), size));
    // Streamed back through the backend...
    let mut reader = r2.open_weights(&stored.name).await.unwrap();
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = reader.read(&mut buffer).await.unwrap();
        if n == 0 {
            break;
        }
        sha2::Digest::update(&mut hasher, &buffer[..n]);
        read += n as u64;
    }
    assert_eq!((hex::encode(sha2::Digest::finalize(hasher)), read), (sha256.clone(), size));
    // ...and through a presigned URL with the worker's fetcher.
    let url = r2.get_weights_url(&stored.name.to_string(), 9).await.unwrap();
    let fetcher = Fetcher::new(&dir.path().join("cache"), u64::MAX, quick_retry()).unwrap();
    let path = fetcher.fetch(&url.url, &Expected { sha256: sha256.clone(), size }).await.unwrap();
    assert_eq!(hash_file(&path).unwrap(), (sha256, size));
}

async fn adapter_publishes_to_the_bucket_and_keeps_a_local_copy(garage: &Garage) {
    let dir = tempfile::tempdir().unwrap();
    let adapter = StorageAdapter::from_config(&garage.config(dir.path(), "adapter")).await.unwrap();
    assert_eq!(adapter.status().backend, "r2");
    assert!(adapter.status().degraded.is_none());
    let deadline = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let info = adapter
        .publish(WeightsData::Bytes(Bytes::from_static(b"adapter weights")), 1, deadline, &LatestExtra::new())
        .await
        .unwrap();
    assert!(info.weights_url.contains("X-Amz-Signature="), "a presigned bucket URL");
    assert_eq!(adapter.status().served_as, Some(UrlKind::Presigned));
    let bucket = adapter.remote().unwrap();
    assert_eq!(bucket.read_latest_info().await.unwrap().unwrap(), info, "latest.json is in the bucket too");
    assert!(
        adapter.local().path_of(&bucket.list_revisions().await.unwrap()[0].name).is_file(),
        "local cache copy"
    );
    // The presigned URL outlives the deadline: signed now, valid for longer than the deadline is away.
    let expires: i64 = url::Url::parse(&info.weights_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "X-Amz-Expires")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    assert!(
        OffsetDateTime::now_utc() + time::Duration::seconds(expires) > deadline,
        "expires in {expires} s"
    );
}

async fn wrong_credentials_fall_back_to_local_without_leaking_them(garage: &Garage) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = garage.config(dir.path(), "wrongcreds");
    let wrong_secret = "definitely-wrong-secret-key-123456";
    config.storage.r2_secret_key = Some(zero2048_storage::Secret::new(wrong_secret));
    let adapter = StorageAdapter::from_config(&config).await.unwrap();
    let status = adapter.status();
    assert_eq!((status.backend, status.configured), ("local", "r2"));
    let reason = status.degraded.clone().expect("degraded with a reason");
    assert!(!reason.contains(wrong_secret) && !reason.contains(&garage.access_key), "{reason}");
    let info = adapter
        .publish(
            WeightsData::Bytes(Bytes::from_static(b"kept locally")),
            1,
            OffsetDateTime::now_utc() + time::Duration::hours(1),
            &LatestExtra::new(),
        )
        .await
        .unwrap();
    assert!(info.weights_url.starts_with("file://"), "{}", info.weights_url);
    let json = serde_json::to_string(&adapter.status()).unwrap();
    assert!(!json.contains(wrong_secret) && !json.contains(&garage.access_key));
    assert!(!format!("{config:?}").contains(wrong_secret));
}
