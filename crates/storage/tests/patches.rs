//! Small downloads end to end: a run publishes revisions with their patches, served over real HTTP
//! by the weights router; a worker's fetcher follows the run and gets each revision byte for byte,
//! as a delta when it holds the revision before, and falls back to bigger downloads when a patch is
//! bad.

use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;
use zero2048_storage::{
    Config, Expected, Fetched, Fetcher, LatestExtra, LatestInfo, Retention, RetryPolicy, StorageAdapter,
    StorageBackend, WeightsData, hash_bytes, http::weights_router,
};

/// 4 MiB of little-endian f32 "weights": a tenth of them visited (non-zero), like an n-tuple table.
fn first_weights() -> Vec<u8> {
    let mut bytes = vec![0u8; 4 << 20];
    for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
        if (i * 2654435761).is_multiple_of(10) {
            chunk.copy_from_slice(&((i as f32).sin() * 100.0).to_le_bytes());
        }
    }
    bytes
}

/// The same weights after a little more learning: one visited weight in a hundred moved.
fn learn_more(previous: &[u8], round: usize) -> Vec<u8> {
    let mut bytes = previous.to_vec();
    for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
        if (i * 2654435761).is_multiple_of(10) && (i / 10 + round).is_multiple_of(100) {
            let value = f32::from_le_bytes(chunk.try_into().unwrap()) + 0.5;
            chunk.copy_from_slice(&value.to_le_bytes());
        }
    }
    bytes
}

async fn adapter_served_over_http(dir: &std::path::Path, patches: bool) -> StorageAdapter {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config = Config::default();
    config.storage.weights_dir = dir.to_path_buf();
    config.storage.keep_revisions = 2;
    config.storage.patches = patches;
    config.server.localhost_weights = true;
    config.server.host = "127.0.0.1".into();
    config.server.port = port;
    let adapter = StorageAdapter::from_config(&config).await.unwrap();
    let app = weights_router(adapter.local().dir().to_path_buf());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    adapter
}

async fn publish(adapter: &StorageAdapter, bytes: &[u8], revision: u64) -> LatestInfo {
    let deadline = OffsetDateTime::now_utc() + time::Duration::hours(1);
    adapter
        .publish(WeightsData::Bytes(Bytes::copy_from_slice(bytes)), revision, deadline, &LatestExtra::new())
        .await
        .unwrap()
}

/// What a worker does with a record: every offered patch, the delta first.
async fn follow(fetcher: &Fetcher, info: &LatestInfo) -> (Vec<u8>, Fetched) {
    let patches = info.patch_sources();
    let expected = Expected { sha256: info.weights_sha256.clone(), size: info.weights_size };
    let (path, fetched) = fetcher.fetch_smallest(&info.weights_url, &expected, &patches).await.unwrap();
    (std::fs::read(path).unwrap(), fetched)
}

fn new_fetcher(dir: &std::path::Path) -> Fetcher {
    let policy = RetryPolicy {
        attempts: 2,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(5),
    };
    Fetcher::new(dir, u64::MAX, policy).unwrap()
}

fn leftovers(cache: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.len() != 64)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_worker_downloads_deltas_and_gets_every_revision_exactly() {
    let store = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let adapter = adapter_served_over_http(store.path(), true).await;
    let fetcher = new_fetcher(cache.path());

    let first = first_weights();
    let info = publish(&adapter, &first, 1).await;
    assert!(info.delta.is_none(), "nothing to be a delta from");
    let compressed = info.compressed.clone().expect("the whole file, compressed");
    assert!(compressed.url.starts_with("http://127.0.0.1:"), "{}", compressed.url);
    let (bytes, fetched) = follow(&fetcher, &info).await;
    assert_eq!(bytes, first);
    assert_eq!(fetched, Fetched::Compressed { bytes: compressed.size });
    assert!(compressed.size * 4 < info.weights_size, "{} of {}", compressed.size, info.weights_size);

    let mut current = first.clone();
    for revision in 2..=4 {
        let next = learn_more(&current, revision as usize);
        let previous = std::mem::replace(&mut current, next);
        let info = publish(&adapter, &current, revision).await;
        let delta = info.delta.clone().expect("a delta from the revision before");
        assert_eq!(delta.base_sha256, Some(hash_bytes(&previous)));
        let (bytes, fetched) = follow(&fetcher, &info).await;
        assert_eq!(bytes, current, "revision {revision} is rebuilt byte for byte");
        assert_eq!(fetched, Fetched::Delta { bytes: delta.size });
        assert!(delta.size * 20 < info.weights_size, "{} of {}", delta.size, info.weights_size);
        // A second look finds it cached: nothing downloaded.
        assert_eq!(follow(&fetcher, &info).await.1, Fetched::Cached);
    }
    assert!(leftovers(cache.path()).is_empty(), "{:?}", leftovers(cache.path()));

    // A worker that joins now holds nothing: it gets the compressed file.
    let late = tempfile::tempdir().unwrap();
    let info = adapter.read_latest_info().await.unwrap().unwrap();
    let (bytes, fetched) = follow(&new_fetcher(late.path()), &info).await;
    assert_eq!((bytes, fetched.how()), (current.clone(), "compressed"));

    // Retention removes a pruned revision's patches with it (two revisions kept).
    let names: Vec<String> = std::fs::read_dir(adapter.local().dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("r000001") || n.starts_with("r000002")), "{names:?}");
    assert_eq!(names.iter().filter(|n| n.ends_with(".zst")).count(), 4, "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_patches_fall_back_to_the_whole_file_and_leave_nothing_behind() {
    let store = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let adapter = adapter_served_over_http(store.path(), true).await;
    let fetcher = new_fetcher(cache.path());
    let first = first_weights();
    follow(&fetcher, &publish(&adapter, &first, 1).await).await;
    let second = learn_more(&first, 2);
    let info = publish(&adapter, &second, 2).await;

    // Both patches corrupted on the server after publishing (their sidecars still say otherwise).
    for offer in [info.delta.as_ref().unwrap(), info.compressed.as_ref().unwrap()] {
        let path = adapter.local().dir().join(&offer.file);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
    }
    let (bytes, fetched) = follow(&fetcher, &info).await;
    assert_eq!(bytes, second);
    assert_eq!(fetched, Fetched::Whole { bytes: info.weights_size });
    assert!(leftovers(cache.path()).is_empty(), "{:?}", leftovers(cache.path()));

    // A record whose delta claims the wrong base: the patch is refused before it writes, the
    // compressed file is taken instead.
    let third = learn_more(&second, 3);
    let mut info = publish(&adapter, &third, 3).await;
    info.delta.as_mut().unwrap().base_sha256 = Some(hash_bytes(&first));
    let (bytes, fetched) = follow(&fetcher, &info).await;
    assert_eq!((bytes, fetched.how()), (third, "compressed"));
    assert!(leftovers(cache.path()).is_empty(), "{:?}", leftovers(cache.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_patches_off_the_record_offers_none_and_workers_fetch_whole_files() {
    let store = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let adapter = adapter_served_over_http(store.path(), false).await;
    let first = first_weights();
    publish(&adapter, &first, 1).await;
    let info = publish(&adapter, &learn_more(&first, 2), 2).await;
    assert!(info.compressed.is_none() && info.delta.is_none());
    let json = serde_json::to_string(&info).unwrap();
    assert!(!json.contains("compressed") && !json.contains("delta"), "{json}");
    let (_, fetched) = follow(&new_fetcher(cache.path()), &info).await;
    assert_eq!(fetched, Fetched::Whole { bytes: info.weights_size });
    assert!(
        !std::fs::read_dir(adapter.local().dir())
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().ends_with(".zst") })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_budget_counts_a_revisions_patches() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = adapter_served_over_http(dir.path(), true).await;
    let first = first_weights();
    publish(&adapter, &first, 1).await;
    publish(&adapter, &learn_more(&first, 1), 2).await;
    let whole = first.len() as u64;
    // Two whole files fit; with their patches they do not, so revision 1 goes (never the latest).
    let dropped =
        adapter.local().prune(Retention { keep_revisions: 0, budget_bytes: 2 * whole }).await.unwrap();
    assert_eq!(dropped.iter().map(|n| n.revision()).collect::<Vec<_>>(), vec![1]);
    let left: Vec<String> = std::fs::read_dir(adapter.local().dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('r'))
        .collect();
    assert!(left.iter().all(|n| n.starts_with("r000002")), "{left:?}");
}
