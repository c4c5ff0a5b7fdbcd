//! The bucket going away mid-run: publishing falls back to local storage, and once the bucket is
//! back the background catch-up uploads every revision it missed. Nothing published is lost.

mod common;
#[path = "common/ports.rs"]
mod ports;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Garage;
use time::OffsetDateTime;
use zero2048_storage::{LatestExtra, StorageAdapter, StorageBackend, UrlKind, WeightsData};

async fn publish(adapter: &StorageAdapter, revision: u64) -> zero2048_storage::LatestInfo {
    let deadline = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let bytes = Bytes::from(format!("weights of revision {revision}").into_bytes());
    adapter.publish(WeightsData::Bytes(bytes), revision, deadline, &LatestExtra::new()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_down_mid_run_falls_back_and_catches_up() {
    let mut garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = garage.config(dir.path(), "faults");
    config.storage.catch_up_interval_seconds = 1;
    config.server.localhost_weights = true;
    config.server.port = 18_765;
    let adapter = std::sync::Arc::new(StorageAdapter::from_config(&config).await.unwrap());
    let _catch_up = adapter.spawn_catch_up();

    let first = publish(&adapter, 1).await;
    assert!(first.weights_url.contains("X-Amz-Signature="));
    assert!(!adapter.is_degraded());

    garage.stop();
    let started = Instant::now();
    let second = publish(&adapter, 2).await;
    let fallback_took = started.elapsed();
    let third = publish(&adapter, 3).await;
    let status = adapter.status();
    assert_eq!(status.backend, "local", "{status:?}");
    assert!(status.degraded.as_deref().is_some_and(|r| !r.is_empty()));
    assert_eq!(status.served_as, Some(UrlKind::Http));
    assert!(status.pending_catch_up >= 1);
    assert_eq!(second.weights_url, format!("http://127.0.0.1:18765/weights/{}", second.weights_file));
    assert_eq!(adapter.read_latest_info().await.unwrap().unwrap().revision, 3);
    eprintln!("fallback with the bucket down took {fallback_took:?}");

    garage.restart();
    let started = Instant::now();
    while adapter.is_degraded() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no catch-up after 30 s: {:?}",
            adapter.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bucket = adapter.remote().unwrap();
    let in_bucket: Vec<String> =
        bucket.list_revisions().await.unwrap().iter().map(|w| w.name.to_string()).collect();
    for info in [&first, &second, &third] {
        assert!(
            in_bucket.contains(&info.weights_file),
            "{} missing from the bucket: {in_bucket:?}",
            info.weights_file
        );
    }
    let latest = bucket.read_latest_info().await.unwrap().unwrap();
    assert_eq!(latest.revision, 3);
    assert!(
        latest.weights_url.contains("X-Amz-Signature="),
        "re-pointed at the bucket: {}",
        latest.weights_url
    );
    assert_eq!(adapter.status().pending_catch_up, 0);

    let fourth = publish(&adapter, 4).await;
    assert!(fourth.weights_url.contains("X-Amz-Signature="));
    assert_eq!(bucket.read_latest_info().await.unwrap().unwrap().revision, 4);
}

/// A revision published while the catch-up is uploading must reach the bucket too, and the
/// bucket's latest record must never name an object the bucket does not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_published_during_the_catch_up_reaches_the_bucket() {
    let mut garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let config = garage.config(dir.path(), "catch-up-race");
    let adapter = std::sync::Arc::new(StorageAdapter::from_config(&config).await.unwrap());
    publish(&adapter, 1).await;

    garage.stop();
    let deadline = OffsetDateTime::now_utc() + time::Duration::hours(1);
    for revision in 2..=5 {
        // Large enough that the catch-up is still uploading when the next revision arrives.
        let bytes = Bytes::from(vec![revision as u8; 16 << 20]);
        adapter.publish(WeightsData::Bytes(bytes), revision, deadline, &LatestExtra::new()).await.unwrap();
    }
    assert!(adapter.is_degraded());
    garage.restart();

    let catching_up = {
        let adapter = std::sync::Arc::clone(&adapter);
        tokio::spawn(async move { adapter.catch_up().await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    let during = publish(&adapter, 6).await;
    catching_up.await.unwrap().unwrap().unwrap();
    assert!(!adapter.is_degraded(), "{:?}", adapter.status());
    assert_eq!(adapter.status().pending_catch_up, 0);

    let bucket = adapter.remote().unwrap();
    let in_bucket: Vec<String> =
        bucket.list_revisions().await.unwrap().iter().map(|w| w.name.to_string()).collect();
    for stored in adapter.local().list_revisions().await.unwrap() {
        assert!(
            in_bucket.contains(&stored.name.to_string()),
            "{} never uploaded: {in_bucket:?}",
            stored.name
        );
    }
    let latest = bucket.read_latest_info().await.unwrap().unwrap();
    assert_eq!(latest.revision, 6);
    assert_eq!(latest.weights_file, during.weights_file);
    assert!(in_bucket.contains(&latest.weights_file), "the bucket's latest.json names a missing object");
}
