//! The policy-value pipeline as users run it: `zero2048 server --model policy-value` and a worker
//! process playing MCTS (Gumbel root) over real HTTP, games carrying their search statistics, the server
//! learning from them and refusing statistics that cannot be true.

mod support;

use std::time::Duration;

use support::*;
use zero2048_game::{Direction, GameRecord, SpawnRule};
use zero2048_protocol::{BatchGame, Uuid, compress, encode_batch};
use zero2048_search::{GreedyPlayer, play_game};

const SIMULATIONS: u32 = 8;

fn post(port: u16, token: &str, games: &[(Uuid, GameRecord)]) -> serde_json::Value {
    let encoded: Vec<(Uuid, Vec<u8>)> =
        games.iter().map(|(uuid, record)| (*uuid, record.encode().unwrap())).collect();
    let raw = encode_batch(encoded.iter().map(|(uuid, record)| BatchGame {
        uuid: *uuid,
        revision: 1,
        origin: None,
        record,
    }))
    .unwrap();
    http()
        .post(format!("http://127.0.0.1:{port}/api/v1/games"))
        .header("content-encoding", "zstd")
        .bearer_auth(token)
        .body(compress(&raw, 3))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn stored_records(db: &std::path::Path) -> Vec<(i64, GameRecord)> {
    run_db(db)
        .games_page(None, 0, usize::MAX >> 1)
        .unwrap()
        .into_iter()
        .map(|game| (game.revision as i64, GameRecord::decode(&game.record).unwrap()))
        .collect()
}

#[test]
fn a_policy_value_server_learns_from_an_mcts_worker_and_refuses_false_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let simulations = SIMULATIONS.to_string();
    let server = server(
        dir.path(),
        port,
        &[
            "--model",
            "policy-value",
            "--simulations",
            &simulations,
            "--filters",
            "8",
            "--blocks",
            "1",
            "--parallel-games",
            "16",
            "--revision-every-games",
            "40",
            "--root",
            "gumbel",
        ],
    );
    let latest: serde_json::Value =
        http().get(format!("http://127.0.0.1:{port}/api/v1/latest")).send().unwrap().json().unwrap();
    assert_eq!(latest["model"]["kind"], "policy_value", "{latest}");
    assert_eq!(
        latest["play"]["search"]["mcts"]["simulations"], SIMULATIONS,
        "the search parameters travel: {latest}"
    );
    assert_eq!(latest["play"]["search"]["mcts"]["root"], "gumbel", "{latest}");
    let token = token(dir.path(), "mcts");
    let w = worker(dir.path(), port, &token, "mcts", &["--upload-interval", "100ms"]);
    wait_for(Duration::from_secs(240), "revision 3 and games of revision 2", || {
        status(port)["revision"].as_u64().unwrap_or(0) >= 3
            && stored_records(&dir.path().join("zero2048.db")).iter().any(|(r, _)| *r >= 2)
    });
    w.interrupt();
    let (code, out, log) = w.wait(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{log}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["uploaded"], summary["games"], "{summary}\n{log}");
    assert!(summary["revisions"].as_array().unwrap().len() > 1, "the worker did not follow: {summary}");

    let db = dir.path().join("zero2048.db");
    let records = stored_records(&db);
    assert!(!records.is_empty());
    for (_, record) in &records {
        assert_eq!(record.search.len(), record.steps.len(), "every move carries its statistics");
        assert_eq!(record.check_search(SIMULATIONS), Ok(()));
        assert!(
            record.search.iter().all(|s| s.policy.is_some()),
            "a Gumbel root records its improved policy"
        );
    }
    // Evaluations run beside the learner: one is recorded soon after the revisions.
    wait_for(Duration::from_secs(180), "an evaluation", || {
        !status(port)["evaluations"].as_array().unwrap().is_empty()
    });

    // Statistics that cannot be true are refused, each with its reason; a true game is accepted.
    let (_, good) = records.last().unwrap().clone();
    let mut extra_visit = good.clone();
    extra_visit.search[0].visits[good.steps[0].direction.index() as usize] += 1;
    let mut illegal_visit = good.clone();
    let (step, illegal) = good
        .replay_steps()
        .map(|s| s.unwrap().before)
        .enumerate()
        .find_map(|(i, b)| Direction::ALL.into_iter().find(|d| b.legal_move(*d).is_none()).map(|d| (i, d)))
        .expect("some board has an illegal move");
    let played = illegal_visit.steps[step].direction.index() as usize;
    illegal_visit.search[step].visits[played] -= 1;
    illegal_visit.search[step].visits[illegal.index() as usize] += 1;
    let (without, _) = play_game(&mut GreedyPlayer::new(3), 3, SpawnRule::STANDARD);
    let mut visits_only = good.clone();
    visits_only.search.iter_mut().for_each(|s| s.policy = None);
    let reply = post(
        port,
        &token,
        &[
            (Uuid::from_u128(1), extra_visit),
            (Uuid::from_u128(2), illegal_visit),
            (Uuid::from_u128(3), without),
            (Uuid::from_u128(5), visits_only),
            (Uuid::from_u128(4), good.clone()),
        ],
    );
    let codes: Vec<&str> =
        reply["rejected"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["inconsistent_search_stats"; 4], "{reply}");
    assert!(reply["rejected"].to_string().contains("improved policy"), "{reply}");
    let reasons = reply["rejected"].to_string();
    assert!(reasons.contains("visits sum to 9"), "{reasons}");
    assert!(reasons.contains("illegal move"), "{reasons}");
    assert!(reasons.contains("has none"), "{reasons}");
    assert_eq!(reply["accepted"].as_array().unwrap().len(), 1, "{reply}");
    drop(server);
}

#[test]
fn a_run_keeps_its_model_kind_and_cuda_needs_a_cuda_build() {
    let dir = tempfile::tempdir().unwrap();
    let train = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_zero2048"))
            .current_dir(dir.path())
            .args(["train", "--port", "0", "--threads", "1", "--eval-games", "2"])
            .args(args)
            .output()
            .unwrap()
    };
    let first = train(&[
        "--model",
        "policy-value",
        "--simulations",
        "4",
        "--filters",
        "4",
        "--blocks",
        "0",
        "--games",
        "3",
    ]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let weights: Vec<_> =
        std::fs::read_dir(dir.path().join("weights")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(weights.iter().any(|p| p.extension().is_some_and(|e| e == "safetensors")));
    // Its weights are played by the mcts player, reproducibly, and refused by the ntuple one.
    let zero2048 = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_zero2048"))
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let eval =
        ["eval", "--player", "mcts", "--weights", "latest", "--simulations", "8", "--games", "3", "--json"];
    let first_eval = zero2048(&eval);
    assert!(first_eval.status.success(), "{}", String::from_utf8_lossy(&first_eval.stderr));
    let report: serde_json::Value = serde_json::from_slice(&first_eval.stdout).unwrap();
    assert_eq!(report["games"], 3, "{report}");
    assert!(report["player"].as_str().unwrap().starts_with("mcts 8 simulations"), "{report}");
    assert!(report["strength"]["mean_score"].as_f64().unwrap() > 0.0, "{report}");
    let again: serde_json::Value = serde_json::from_slice(&zero2048(&eval).stdout).unwrap();
    assert_eq!(again["strength"], report["strength"], "the same seeds gave other games");
    let played =
        zero2048(&["play", "--player", "mcts", "--weights", "latest", "--simulations", "2", "--quiet"]);
    assert!(played.status.success(), "{}", String::from_utf8_lossy(&played.stderr));
    let wrong = zero2048(&["eval", "--player", "ntuple", "--weights", "latest", "--games", "1"]);
    assert_eq!(wrong.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("policy_value") && stderr.contains("--player mcts"), "{stderr}");
    let missing = zero2048(&["eval", "--player", "mcts", "--games", "1"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("the mcts player needs --weights"));
    // A time limit that ends before the first policy-value game says so, and what was dropped.
    let short = tempfile::tempdir().unwrap();
    let cut = std::process::Command::new(env!("CARGO_BIN_EXE_zero2048"))
        .current_dir(short.path())
        .args(["train", "--port", "0", "--threads", "1", "--model", "policy-value", "--filters", "4"])
        .args(["--blocks", "0", "--simulations", "2000", "--time", "2s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&cut.stderr);
    assert!(cut.status.success(), "{stderr}");
    assert!(
        stderr.contains("games in progress") && stderr.contains("no game finished in this session"),
        "{stderr}"
    );
    let negative = train(&["--model", "policy-value", "--sample-reuse=-1", "--games", "1"]);
    assert_eq!(negative.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&negative.stderr);
    assert!(stderr.contains("zero.sample_reuse") && stderr.contains("-1 is not a number ≥ 0"), "{stderr}");
    let switched = train(&["--model", "ntuple", "--network", "4x4", "--games", "3"]);
    assert!(!switched.status.success());
    let stderr = String::from_utf8_lossy(&switched.stderr);
    assert!(stderr.contains("trains the `policy_value` model") && stderr.contains("--reset"), "{stderr}");
    if !cfg!(feature = "cuda") {
        let cuda = train(&["--model", "policy-value", "--device", "cuda", "--games", "1"]);
        assert!(!cuda.status.success());
        let stderr = String::from_utf8_lossy(&cuda.stderr);
        assert!(stderr.contains("--features cuda"), "{stderr}");
    }
}

/// A policy-value learner can fall minutes behind its self-play (few simulations, much reuse of
/// each position): a time limit still ends the run on time, publishing what was learned, and the
/// stored games it had not learned wait for the next start instead of holding this one up.
#[test]
fn a_time_limit_does_not_wait_for_a_learner_that_is_behind() {
    let dir = tempfile::tempdir().unwrap();
    let run = |time: &str| {
        let started = std::time::Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_zero2048"))
            .current_dir(dir.path())
            .args(["train", "--sample-reuse", "100", "--port", "0", "--threads", "1", "--eval-games", "0"])
            .args(["--model", "policy-value", "--filters", "8", "--blocks", "1", "--root", "gumbel"])
            .args(["--simulations", "2", "--parallel-games", "32", "--time", time])
            .output()
            .unwrap();
        (out, started.elapsed())
    };
    let (out, took) = run("8s");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("not learned yet: the next start learns them first"), "{stderr}");
    // 8 s of play, then publishing; learning the backlog at 100 reuses would take minutes.
    assert!(took < Duration::from_secs(45), "{took:?}\n{stderr}");
    let (again, _) = run("3s");
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
}
