//! The distributed run with weights in a real S3-compatible bucket (Garage on loopback): workers
//! download through presigned URLs; the bucket goes down mid-run and comes back; every revision
//! ends up in it; the secret key never appears in a log, the status page or the metrics.

#[path = "../../storage/tests/common/mod.rs"]
mod garage;
mod support;

use std::time::Duration;

use support::*;
use zero2048_storage::{R2StorageBackend, StorageBackend};

#[test]
fn workers_train_through_presigned_urls_and_survive_the_bucket_going_down() {
    let mut garage = garage::Garage::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        format!(
            "storage:\n  use_r2: true\n  r2_bucket: {}\n  r2_endpoint_url: {}\n  catch_up_interval_seconds: 1\n  \
             r2_connect_timeout_seconds: 1\n  r2_request_timeout_seconds: 5\n  r2_max_retries: 0\n",
            garage.bucket,
            garage.endpoint()
        ),
    )
    .unwrap();
    let port = free_port();
    let server_args = ["--config", "config.yaml", "--revision-every-games", "2000"];
    // Credentials come from the environment, as the guide recommends.
    let server = server_env(
        dir.path(),
        port,
        &server_args,
        &[("R2_ACCESS_KEY", &garage.access_key), ("R2_SECRET_KEY", &garage.secret_key)],
    );
    let latest: serde_json::Value =
        http().get(format!("http://127.0.0.1:{port}/api/v1/latest")).send().unwrap().json().unwrap();
    assert!(latest["weights_url"].as_str().unwrap().contains("X-Amz-Signature"), "{latest}");
    assert_eq!(status(port)["latest"]["served_as"], "presigned");

    let tokens: Vec<String> = ["s1", "s2", "s3"].iter().map(|name| token(dir.path(), name)).collect();
    let workers: Vec<Proc> = ["s1", "s2", "s3"]
        .iter()
        .zip(&tokens)
        .map(|(name, token)| worker(dir.path(), port, token, name, &["--upload-interval", "100ms"]))
        .collect();
    wait_for(Duration::from_secs(120), "revision 3", || status(port)["revision"].as_u64().unwrap() >= 3);

    garage.stop();
    let down_at = status(port)["revision"].as_u64().unwrap();
    wait_for(Duration::from_secs(120), "a revision published while the bucket is down", || {
        let s = status(port);
        s["revision"].as_u64().unwrap() > down_at + 1 && !s["storage"]["degraded"].is_null()
    });
    garage.restart();
    wait_for(Duration::from_secs(120), "the bucket to catch up", || {
        let s = status(port);
        s["storage"]["degraded"].is_null() && s["storage"]["pending_catch_up"] == 0
    });
    let caught_up_to = status(port)["revision"].as_u64().unwrap();

    let mut played = 0;
    let mut revisions_seen = 0;
    for w in &workers {
        w.interrupt();
    }
    for w in workers {
        let (code, out, log) = w.wait(Duration::from_secs(120));
        assert_eq!(code, Some(0), "{log}");
        let s: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(s["uploaded"], s["games"], "{s}\n{log}");
        played += s["games"].as_u64().unwrap();
        revisions_seen = revisions_seen.max(s["revisions"].as_array().unwrap().len());
        assert!(!log.contains(&garage.secret_key));
    }
    assert!(revisions_seen >= 3, "workers did not follow the revisions");
    assert_eq!(stored_games(&dir.path().join("zero2048.db")).len() as u64, played);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bucket = R2StorageBackend::new(garage.config(dir.path(), "").r2_settings().unwrap()).unwrap();
    let in_bucket: Vec<u64> =
        runtime.block_on(bucket.list_revisions()).unwrap().iter().map(|w| w.name.revision()).collect();
    for revision in 1..=caught_up_to {
        assert!(
            in_bucket.contains(&revision),
            "revision {revision} is missing from the bucket: {in_bucket:?}"
        );
    }
    // The games' records went to the bucket in chunks (those of the outage to the local games
    // directory, until a publish moves them), and the export reads every one back.
    let chunks = runtime.block_on(bucket.list_objects("games")).unwrap();
    assert!(!chunks.is_empty() && chunks.iter().all(|k| zero2048_train::db::is_chunk_name(k)), "{chunks:?}");
    assert_eq!(status(port)["game_chunks"]["stored_in"], "bucket");
    // Every page and API answer, and the server's log: no secret key, no token; no signed URL
    // anywhere but in the latest record, whose job is to carry one.
    let mut answers = Vec::new();
    for path in [
        "/",
        "/assets/dashboard.js",
        "/api/v1/status",
        "/api/v1/history",
        "/api/v1/games/best",
        "/api/v1/games/export?format=csv",
        "/api/v1/games/export?format=jsonl",
        "/metrics",
        "/api/v1/latest",
    ] {
        let body = http().get(format!("http://127.0.0.1:{port}{path}")).send().unwrap().text().unwrap();
        answers.push((path, body));
    }
    let jsonl = &answers.iter().find(|(path, _)| path.ends_with("format=jsonl")).unwrap().1;
    assert_eq!(jsonl.lines().count() as u64, played, "the export read every game from the bucket");
    server.interrupt();
    let (code, _, log) = server.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{log}");
    answers.push(("server log", log));
    for (path, text) in &answers {
        assert!(!text.contains(&garage.secret_key), "the secret key leaked in {path}");
        for token in &tokens {
            assert!(!text.contains(token.as_str()), "a worker token leaked in {path}");
        }
        if *path != "/api/v1/latest" {
            assert!(!text.contains("X-Amz-Signature"), "a signed URL leaked in {path}");
        }
    }
}

#[test]
fn an_api_server_on_another_machine_follows_the_learner_through_the_bucket() {
    let garage = garage::Garage::start();
    // Two directories stand for two machines: they share the database and the bucket only.
    let (learner_dir, api_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = format!(
        "storage:\n  use_r2: true\n  r2_bucket: {}\n  r2_endpoint_url: {}\n",
        garage.bucket,
        garage.endpoint()
    );
    for dir in [&learner_dir, &api_dir] {
        std::fs::write(dir.path().join("config.yaml"), &config).unwrap();
    }
    let database = format!("sqlite://{}", learner_dir.path().join("zero2048.db").display());
    let database = database_url(learner_dir.path()).unwrap_or(database);
    let credentials =
        [("R2_ACCESS_KEY", garage.access_key.as_str()), ("R2_SECRET_KEY", garage.secret_key.as_str())];
    let learner_port = free_port();
    let learner = server_env(
        learner_dir.path(),
        learner_port,
        &["--role", "learner", "--config", "config.yaml", "--database", &database],
        &credentials,
    );
    let api_port = free_port();
    let api = server_env(
        api_dir.path(),
        api_port,
        &["--role", "api", "--config", "config.yaml", "--database", &database],
        &credentials,
    );
    let token = token(learner_dir.path(), "far");
    // The worker plays until the API server hands out revision 3: how many games a revision
    // takes depends on how the learner's batches fall.
    let far = worker(api_dir.path(), api_port, &token, "far", &[]);
    let started = std::time::Instant::now();
    loop {
        let latest: serde_json::Value =
            http().get(format!("http://127.0.0.1:{api_port}/api/v1/latest")).send().unwrap().json().unwrap();
        if latest["revision"].as_u64().unwrap() >= 3
            && latest["weights_url"].as_str().unwrap().contains("X-Amz-Signature")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the API server did not hand out revision 3: {latest}\nlearner:\n{}\nAPI server:\n{}",
            learner.log(),
            api.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    far.interrupt();
    let (code, out, log) = far.wait(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{log}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["uploaded"], s["games"], "{s}\n{log}");
    let local_chunks = std::fs::read_dir(api_dir.path().join("games")).map_or(0, |d| d.count());
    assert_eq!(local_chunks, 0, "the API server kept chunks on its own disk");
    assert_eq!(status(api_port)["game_chunks"]["stored_in"], "bucket");
    drop(api);
    drop(learner);
}
