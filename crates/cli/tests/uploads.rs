//! Bad input at the upload endpoint: every case answered with the right 4xx and a JSON reason,
//! and the server keeps serving. Also the handshake and the status page's secrecy.

mod support;

use std::time::Duration;

use reqwest::blocking::Response;
use support::*;
use zero2048_game::{Direction, GameRecord, SpawnRule, Step};
use zero2048_protocol::{BatchGame, Origin, Uuid, compress, encode_batch};
use zero2048_search::{GreedyPlayer, Player, play_game};

struct Upload {
    uuid: Uuid,
    revision: u64,
    origin: Option<Origin>,
    record: Vec<u8>,
}

fn finished_game(seed: u64) -> GameRecord {
    play_game(&mut GreedyPlayer::new(seed), seed, SpawnRule::STANDARD).0
}

fn upload(seed: u64) -> Upload {
    Upload {
        uuid: Uuid::from_u128(seed as u128 + 1),
        revision: 1,
        origin: None,
        record: finished_game(seed).encode().unwrap(),
    }
}

/// A continuation of `parent` (the game of `upload(parent_seed)`) from its step `step`.
fn continuation(parent_seed: u64, step: usize, uuid: u128) -> Upload {
    let parent = finished_game(parent_seed);
    let afterstate = parent.afterstate_at(step, false).unwrap();
    let mut game = zero2048_game::Game::branch(afterstate, uuid as u64, SpawnRule::STANDARD).unwrap();
    let mut player = GreedyPlayer::new(uuid as u64);
    while let Some(direction) = player.choose(game.board()) {
        game.play(direction).unwrap();
    }
    Upload {
        uuid: Uuid::from_u128(uuid),
        revision: 1,
        origin: Some(Origin { parent: Uuid::from_u128(parent_seed as u128 + 1), step: step as u32 }),
        record: game.into_record().encode().unwrap(),
    }
}

fn batch(games: &[Upload]) -> Vec<u8> {
    let raw = encode_batch(games.iter().map(|g| BatchGame {
        uuid: g.uuid,
        revision: g.revision,
        origin: g.origin,
        record: &g.record,
    }))
    .unwrap();
    compress(&raw, 3)
}

fn post(port: u16, token: Option<&str>, body: Vec<u8>, headers: &[(&str, &str)]) -> Response {
    let mut request = http().post(format!("http://127.0.0.1:{port}/api/v1/games")).body(body);
    if !headers.iter().any(|(k, _)| *k == "content-encoding") {
        request = request.header("content-encoding", "zstd");
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().unwrap()
}

fn json_error(response: Response, status: u16, code: &str) -> String {
    assert_eq!(response.status().as_u16(), status);
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(body["code"], code, "{body}");
    body["error"].as_str().unwrap().to_string()
}

#[test]
fn every_bad_upload_gets_its_own_4xx_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.yaml"), "api:\n  max_upload_bytes: 1000000\n  max_batch_bytes: 4000000\n  max_batch_games: 100\n  uploads_per_minute: 1000\n").unwrap();
    let token = token(dir.path(), "tester");
    let port = free_port();
    let _server = server(dir.path(), port, &["--config", "api.yaml", "--revision-every-games", "1000000"]);

    // A good batch, then the same batch again: duplicates, not errors.
    let good = [upload(1), upload(2)];
    let reply: serde_json::Value = post(port, Some(&token), batch(&good), &[]).json().unwrap();
    assert_eq!(reply["accepted"].as_array().unwrap().len(), 2, "{reply}");
    let again: serde_json::Value = post(port, Some(&token), batch(&good), &[]).json().unwrap();
    assert_eq!(again["duplicates"].as_array().unwrap().len(), 2, "{again}");
    assert_eq!(again["accepted"].as_array().unwrap().len(), 0);

    // Per-game refusals in one batch: an illegal move, a continuation of a game the server does
    // not hold, a continuation that does not start where its parent was, an unfinished game, an
    // unknown revision, bytes that are not a record. The good games in it (a true continuation
    // of a stored game among them) are still accepted.
    let mut illegal = upload(3);
    let mut record = finished_game(3);
    let blocked =
        Direction::ALL.into_iter().find(|d| record.start.try_move(*d).is_err()).unwrap_or(Direction::Up);
    record.steps.insert(0, Step { direction: blocked, spawn_cell: 0, spawn_exponent: 1 });
    illegal.record = record.encode().unwrap();
    let orphan = continuation(40, 5, 400);
    let mut elsewhere = continuation(1, 6, 401);
    elsewhere.origin = Some(Origin { step: 2, ..elsewhere.origin.unwrap() });
    let mut unfinished = upload(5);
    let mut record = finished_game(5);
    record.steps.truncate(3);
    unfinished.record = record.encode().unwrap();
    let mut stale = upload(6);
    stale.revision = 99;
    let mut garbage = upload(7);
    garbage.record = vec![9, 9, 9];
    let fine = upload(8);
    let branch = continuation(1, 6, 402);
    let mixed = [illegal, orphan, elsewhere, unfinished, stale, garbage, fine, branch];
    let reply: serde_json::Value = post(port, Some(&token), batch(&mixed), &[]).json().unwrap();
    assert_eq!(reply["accepted"], serde_json::json!([mixed[6].uuid, mixed[7].uuid]), "{reply}");
    let codes: Vec<&str> =
        reply["rejected"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect();
    assert_eq!(
        codes,
        [
            "illegal_move",
            "unknown_parent",
            "not_a_branch",
            "unfinished_game",
            "revision_not_accepted",
            "undecodable_record"
        ],
        "{reply}"
    );
    let reasons = reply["rejected"].to_string();
    assert!(reasons.contains("does not start from step 2"), "{reasons}");

    // Whole-batch refusals.
    json_error(post(port, None, batch(&good), &[]), 401, "unauthorized");
    json_error(post(port, Some("z2k_wrong"), batch(&good), &[]), 401, "unauthorized");
    let body = batch(&[upload(10)]);
    let truncated = body[..body.len() / 2].to_vec();
    json_error(post(port, Some(&token), truncated, &[]), 400, "bad_batch");
    json_error(post(port, Some(&token), b"{\"games\": []}".to_vec(), &[]), 400, "bad_batch");
    json_error(post(port, Some(&token), compress(b"not a batch at all", 3), &[]), 400, "bad_batch");
    let bomb = compress(&vec![0u8; 50 << 20], 19);
    assert!(bomb.len() < 100_000);
    let message = json_error(post(port, Some(&token), bomb, &[]), 413, "bad_batch");
    assert!(message.contains("4000000"), "{message}");
    let oversized: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    json_error(post(port, Some(&token), oversized, &[]), 413, "body_too_large");
    let many: Vec<Upload> = (100..201).map(upload).collect();
    let message = json_error(post(port, Some(&token), batch(&many), &[]), 400, "bad_batch");
    assert!(message.contains("at most 100"), "{message}");
    let twice = [upload(300), upload(300)];
    json_error(post(port, Some(&token), batch(&twice), &[]), 400, "bad_batch");
    json_error(
        post(port, Some(&token), batch(&good), &[("zero2048-protocol", "1")]),
        426,
        "protocol_mismatch",
    );
    json_error(
        post(port, Some(&token), batch(&good), &[("zero2048-worker-version", "0.0.1")]),
        426,
        "worker_too_old",
    );
    json_error(
        post(port, Some(&token), batch(&good), &[("content-encoding", "gzip")]),
        415,
        "unsupported_encoding",
    );
    let unknown = http().get(format!("http://127.0.0.1:{port}/api/v1/nothing")).send().unwrap();
    json_error(unknown, 404, "not_found");

    // Revoked: 403 with the worker's name.
    let out = zero2048(dir.path(), &["token", "revoke", "tester"]);
    assert!(out.status.success());
    let message = json_error(post(port, Some(&token), batch(&[upload(400)]), &[]), 403, "token_revoked");
    assert!(message.contains("tester"), "{message}");

    // Still serving, with the counts to show for it.
    let latest = http().get(format!("http://127.0.0.1:{port}/api/v1/latest")).send().unwrap();
    assert_eq!(latest.status(), 200);
    assert_eq!(latest.headers()["zero2048-protocol"], "3");
    let status = status(port);
    assert_eq!(status["uploads"]["accepted"], 4, "{status}");
    assert_eq!(status["uploads"]["rejected"], 6, "{status}");
    assert_eq!(status["workers"][0]["rejected"], 6, "{status}");
    let stored = stored_games(&dir.path().join("zero2048.db"));
    assert_eq!(stored.len(), 4);
}

#[test]
fn machines_sharing_a_token_are_separate_workers_and_a_revoked_token_marks_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let shared = token(dir.path(), "shared");
    let other = token(dir.path(), "other");
    let port = free_port();
    let _server = server(dir.path(), port, &["--revision-every-games", "1000000"]);

    let from = |machine: &str, seed: u64| {
        let reply =
            post(port, Some(&shared), batch(&[upload(seed)]), &[("zero2048-worker-machine", machine)]);
        assert_eq!(reply.status(), 200);
    };
    from("laptop-0a1b2c", 1);
    from("desktop-3d4e5f", 2);
    from("laptop-0a1b2c", 3);
    let reply = post(port, Some(&other), batch(&[upload(4)]), &[("zero2048-worker-machine", "box-1")]);
    assert_eq!(reply.status(), 200);
    let message = json_error(
        post(port, Some(&shared), batch(&[upload(5)]), &[("zero2048-worker-machine", "no spaces please")]),
        400,
        "bad_machine",
    );
    assert!(message.contains("no spaces please"), "{message}");

    let workers = |status: &serde_json::Value| -> Vec<(String, String, u64, bool, bool)> {
        let mut rows: Vec<_> = status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["token"].as_str().unwrap().to_string(),
                    w["machine"].as_str().unwrap_or("-").to_string(),
                    w["games"].as_u64().unwrap(),
                    w["active"].as_bool().unwrap(),
                    !w["revoked_at"].is_null(),
                )
            })
            .collect();
        rows.sort();
        rows
    };
    let before = workers(&status(port));
    assert_eq!(
        before,
        [
            ("other".into(), "box-1".into(), 1, true, false),
            ("shared".into(), "desktop-3d4e5f".into(), 1, true, false),
            ("shared".into(), "laptop-0a1b2c".into(), 2, true, false),
        ]
    );
    let out = zero2048(dir.path(), &["token", "revoke", "shared"]);
    assert!(out.status.success());
    let after = workers(&status(port));
    assert_eq!(
        after,
        [
            ("other".into(), "box-1".into(), 1, true, false),
            ("shared".into(), "desktop-3d4e5f".into(), 1, false, true),
            ("shared".into(), "laptop-0a1b2c".into(), 2, false, true),
        ],
        "a revoked token's machines are marked and no longer active"
    );
}

#[test]
fn uploads_are_rate_limited_per_token_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.yaml"), "api:\n  uploads_per_minute: 3\n").unwrap();
    let token = token(dir.path(), "eager");
    let port = free_port();
    let _server = server(dir.path(), port, &["--config", "api.yaml"]);
    for i in 0..3 {
        assert_eq!(post(port, Some(&token), batch(&[upload(i)]), &[]).status(), 200);
    }
    let limited = post(port, Some(&token), batch(&[upload(9)]), &[]);
    assert!(limited.headers().contains_key("retry-after"));
    json_error(limited, 429, "rate_limited");
}

#[test]
fn latest_and_weights_can_require_a_token_and_the_status_never_shows_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let token = token(dir.path(), "private");
    let port = free_port();
    let _server = server(dir.path(), port, &["--require-token-for-latest"]);
    let anonymous = http().get(format!("http://127.0.0.1:{port}/api/v1/latest")).send().unwrap();
    json_error(anonymous, 401, "unauthorized");
    let latest: serde_json::Value = http()
        .get(format!("http://127.0.0.1:{port}/api/v1/latest"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let url = latest["weights_url"].as_str().unwrap();
    assert_eq!(http().get(url).send().unwrap().status(), 401);
    let weights = http().get(url).bearer_auth(&token).send().unwrap();
    assert_eq!(weights.status(), 200);
    // A worker with the token plays and uploads.
    let w = worker(dir.path(), port, &token, "private", &["--games", "10"]);
    let (code, _, log) = w.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{log}");
    let status = http().get(format!("http://127.0.0.1:{port}/api/v1/status")).send().unwrap().text().unwrap();
    let metrics = http().get(format!("http://127.0.0.1:{port}/metrics")).send().unwrap().text().unwrap();
    for body in [&status, &metrics] {
        assert!(!body.contains(&token), "a token leaked");
        assert!(!body.contains(&token[4..20]), "part of a token leaked");
    }
    let parsed: serde_json::Value = serde_json::from_str(&status).unwrap();
    for key in ["revision", "training", "storage", "workers", "revisions", "evaluations", "uploads", "latest"]
    {
        assert!(parsed.get(key).is_some(), "status lacks {key}: {parsed}");
    }
    assert!(parsed["latest"].get("weights_url").is_none(), "the status page shows a URL");
    assert_eq!(parsed["latest"]["served_as"], "http");
    assert!(metrics.contains("# TYPE zero2048_games_accepted_total counter"), "{metrics}");
}
