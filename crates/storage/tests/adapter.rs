//! The adapter's fallback rules when the bucket cannot even be tried, and local publishing.

use std::time::Instant;

use bytes::Bytes;
use time::OffsetDateTime;
use zero2048_storage::{Config, LatestExtra, Secret, StorageAdapter, StorageBackend, UrlKind, WeightsData};

fn r2_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.storage.weights_dir = dir.to_path_buf();
    config.storage.use_r2 = true;
    config.storage.r2_bucket = Some("bucket".into());
    config.storage.r2_access_key = Some(Secret::new("AKIDEXAMPLEKEY"));
    config.storage.r2_secret_key = Some(Secret::new("super-secret-value-42"));
    config.storage.r2_endpoint_url = Some("http://127.0.0.1:1".into());
    config.storage.r2_connect_timeout_seconds = 1.0;
    config
}

async fn publish_one(adapter: &StorageAdapter) -> zero2048_storage::LatestInfo {
    adapter
        .publish(
            WeightsData::Bytes(Bytes::from_static(b"w")),
            1,
            OffsetDateTime::now_utc() + time::Duration::hours(1),
            &LatestExtra::new(),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn missing_credentials_fall_back_to_local_and_say_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = r2_config(dir.path());
    config.storage.r2_secret_key = None;
    config.storage.r2_bucket = Some("  ".into());
    let adapter = StorageAdapter::from_config(&config).await.unwrap();
    let status = adapter.status();
    assert_eq!((status.backend, status.configured), ("local", "r2"));
    let reason = status.degraded.unwrap();
    assert!(reason.contains("r2_secret_key") && reason.contains("r2_bucket"), "{reason}");
    assert!(!reason.contains("AKIDEXAMPLEKEY"));
    assert!(publish_one(&adapter).await.weights_url.starts_with("file://"));
    assert!(adapter.catch_up().await.is_none(), "nothing to catch up to until it is configured");
}

#[tokio::test]
async fn a_bad_endpoint_is_a_misconfiguration() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = r2_config(dir.path());
    config.storage.r2_endpoint_url = Some("ftp://example.org".into());
    let adapter = StorageAdapter::from_config(&config).await.unwrap();
    assert!(adapter.status().degraded.unwrap().contains("must be http:// or https://"));
}

#[tokio::test]
async fn a_closed_port_falls_back_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let adapter = StorageAdapter::from_config(&r2_config(dir.path())).await.unwrap();
    let decided = started.elapsed();
    let status = adapter.status();
    assert_eq!(status.backend, "local");
    assert!(status.degraded.as_deref().unwrap().contains("probe"), "{status:?}");
    let json = serde_json::to_string(&status).unwrap();
    assert!(!json.contains("super-secret-value-42") && !json.contains("AKIDEXAMPLEKEY"), "{json}");
    let info = publish_one(&adapter).await;
    assert!(info.weights_url.starts_with("file://"));
    // The bound is the configured timeouts (3 s to connect, 2 retries), not a speed: a probe that
    // ignored them would hang for minutes. The measured time is in BENCHMARKS.md.
    let config = r2_config(dir.path());
    let bound = std::time::Duration::from_secs_f64(
        config.storage.r2_connect_timeout_seconds * (config.storage.r2_max_retries as f64 + 1.0) + 10.0,
    );
    assert!(decided < bound, "the fallback took {decided:?}, past the configured timeouts ({bound:?})");
}

#[tokio::test]
async fn local_publishing_serves_file_or_http_urls() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.weights_dir = dir.path().join("w");
    let adapter = StorageAdapter::from_config(&config).await.unwrap();
    let info = publish_one(&adapter).await;
    assert_eq!(adapter.status().served_as, Some(UrlKind::File));
    let path = url::Url::parse(&info.weights_url).unwrap().to_file_path().unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"w");
    assert!(adapter.status().degraded.is_none() && adapter.status().configured == "local");

    config.server.localhost_weights = true;
    config.server.host = "0.0.0.0".into();
    assert!(StorageAdapter::from_config(&config).await.is_err(), "0.0.0.0 is never handed out");
    config.server.advertised_host = Some("trainer.lan".into());
    config.server.port = 9000;
    let adapter = StorageAdapter::from_config(&config).await.unwrap();
    let refreshed =
        adapter.refresh_latest(OffsetDateTime::now_utc() + time::Duration::hours(2)).await.unwrap().unwrap();
    assert_eq!(refreshed.weights_url, format!("http://trainer.lan:9000/weights/{}", info.weights_file));
    assert_eq!(adapter.local().read_latest_info().await.unwrap().unwrap(), refreshed);
}
