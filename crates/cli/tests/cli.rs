//! The `zero2048` binary as a user runs it.

use std::process::{Command, Output};

fn zero2048(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zero2048")).args(args).output().expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A directory of its own for one test, removed when the returned guard drops.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("zero2048-cli-{name}-")).tempdir().unwrap()
}

#[test]
fn every_subcommand_has_help_and_there_is_a_version() {
    let version = zero2048(&["--version"]);
    assert!(version.status.success());
    assert!(stdout(&version).starts_with("zero2048 "));
    for command in ["train", "play", "eval", "bench", "replay", "analyze", "weights"] {
        let help = zero2048(&[command, "--help"]);
        assert!(help.status.success(), "{command} --help failed");
        assert!(stdout(&help).contains("Usage: zero2048 "), "{command} --help: {}", stdout(&help));
    }
    let help = zero2048(&["--help"]);
    for command in ["train", "play", "eval", "bench", "replay", "analyze", "weights"] {
        assert!(stdout(&help).contains(command));
    }
}

/// Each bad input: exit code 2, a single line on stderr naming the problem, no panic.
#[test]
fn bad_input_gets_one_clear_line_and_exit_code_2() {
    let dir = temp_dir("bad");
    let bad_record = dir.path().join("bad.game");
    std::fs::write(&bad_record, b"\x01\x02\x03").unwrap();
    let bad_json = dir.path().join("bad.json");
    std::fs::write(
        &bad_json,
        br#"{"start":"1000000000001000","steps":[{"direction":"left","spawn_cell":0,"spawn_exponent":1}]}"#,
    )
    .unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["eval", "--player", "minimax"], "possible values: random, greedy, expectimax"),
        (vec!["eval", "--depth", "0"], "0 is not in 1..=8"),
        (vec!["eval", "--games", "0"], "0 is not in 1..=10000000"),
        (vec!["eval", "--four-probability", "1.5"], "outside 0..=1"),
        (vec!["play", "--seed", "minus-one"], "invalid value 'minus-one' for '--seed"),
        (vec!["analyze", "--board", "2 4 8"], "found 3 values"),
        (vec!["analyze", "--board", "3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"], "`3` is not a tile"),
        (
            vec!["replay", bad_record.to_str().unwrap()],
            "is not a binary game record: truncated record: start board",
        ),
        (
            vec!["replay", bad_json.to_str().unwrap()],
            "is not a legal game: step 0: moving left changes nothing",
        ),
        (vec!["replay", "/nonexistent/game.bin"], "reading /nonexistent/game.bin"),
        (vec!["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (vec!["trian"], "a similar subcommand exists: 'train'"),
        (vec!["train", "--thread", "2"], "a similar argument exists: '--threads'"),
        (vec!["eval", "--lamda", "2"], "`zero2048 eval --help` lists what is accepted"),
    ];
    for (args, expected) in cases {
        let output = zero2048(&args);
        let err = stderr(&output);
        let code = output.status.code();
        if args[0] == "replay" && args[1].starts_with("/nonexistent") {
            assert_eq!(code, Some(1), "{args:?}: a missing file is a failure, not a usage error");
        } else {
            assert_eq!(code, Some(2), "{args:?} exited with {code:?}: {err}");
        }
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?} printed more than one line: {err}");
        assert!(err.contains(expected), "{args:?}: expected {expected:?} in {err:?}");
        assert!(!err.contains("panicked") && !err.contains("backtrace"), "{args:?}: {err}");
    }
}

fn eval_json(extra: &[&str]) -> serde_json::Value {
    let mut args =
        vec!["eval", "--player", "expectimax", "--depth", "1", "--games", "12", "--seed", "42", "--json"];
    args.extend_from_slice(extra);
    let output = zero2048(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    report.as_object_mut().unwrap().remove("timing");
    report.as_object_mut().unwrap().remove("threads");
    report
}

#[test]
fn eval_is_identical_for_identical_seeds_whatever_the_threads() {
    let one = eval_json(&["--threads", "1"]);
    let two = eval_json(&["--threads", "2"]);
    assert_eq!(one, two);
    assert_eq!(one["games"], 12);
    let strength = &one["strength"];
    assert!(strength["mean_score"].as_f64().unwrap() > 1000.0);
    assert_eq!(strength["reached"].as_array().unwrap().len(), 5);
    let other_seed = {
        let output = zero2048(&["eval", "--depth", "1", "--games", "12", "--seed", "43", "--json"]);
        serde_json::from_str::<serde_json::Value>(&stdout(&output)).unwrap()["strength"].clone()
    };
    assert_ne!(other_seed, one["strength"]);
}

#[test]
fn eval_prints_the_strength_table() {
    let output = zero2048(&["eval", "--player", "greedy", "--games", "20", "--seed", "3"]);
    assert!(output.status.success());
    let table = stdout(&output);
    for row in ["mean score", "± ", "(95%)", "median score", "moves per game", "2048: ", "32768: ", "moves/s"]
    {
        assert!(table.contains(row), "missing {row:?} in\n{table}");
    }
    // Not a terminal: progress comes as plain lines, never control codes.
    assert!(!stderr(&output).contains('\u{1b}'));
}

#[test]
fn a_played_game_replays_to_the_same_result_in_both_record_forms() {
    let dir_guard = temp_dir("records");
    let dir = dir_guard.path();
    for name in ["game.json", "game.bin"] {
        let path = dir.join(name);
        let played = zero2048(&[
            "play",
            "--player",
            "expectimax",
            "--depth",
            "1",
            "--seed",
            "7",
            "--quiet",
            "--record",
            path.to_str().unwrap(),
        ]);
        assert!(played.status.success(), "{}", stderr(&played));
        let result_line = stdout(&played).lines().next().unwrap().to_string();
        assert!(result_line.starts_with("game over: score "), "{result_line}");
        let score: u64 = result_line["game over: score ".len()..].split(',').next().unwrap().parse().unwrap();

        let replayed = zero2048(&["replay", path.to_str().unwrap(), "--json"]);
        assert!(replayed.status.success(), "{}", stderr(&replayed));
        let summary: serde_json::Value = serde_json::from_str(&stdout(&replayed)).unwrap();
        assert_eq!(summary["score"], score);
        assert_eq!(summary["game_over"], true);
    }
    let json = std::fs::read(dir.join("game.json")).unwrap();
    let binary = std::fs::read(dir.join("game.bin")).unwrap();
    assert!(binary.len() * 10 < json.len(), "the binary form should be compact");
}

#[test]
fn play_draws_plain_boards_when_not_on_a_terminal() {
    let output = zero2048(&["play", "--player", "random", "--seed", "1"]);
    assert!(output.status.success());
    let text = stdout(&output);
    assert!(!text.contains('\u{1b}'), "no escape codes when stdout is not a terminal");
    assert!(text.contains("move 0 ·") && text.contains("game over: score"));
}

#[test]
fn analyze_values_each_move() {
    let output = zero2048(&["analyze", "--board", "2 2 0 0 0 0 0 0 0 0 0 0 0 0 0 4", "--depth", "2"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for direction in ["up", "down", "left", "right"] {
        assert!(text.contains(direction));
    }
    assert!(text.contains("← best") && text.contains("nodes searched at depth 2"));
}

#[test]
fn the_learning_bench_runs_against_its_reference() {
    let output = zero2048(&["bench", "--suite", "learn", "--quick", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&output)).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    for expected in
        ["TD learning from game records", "1-ply move choice (self-play)", "play+learn loop vs play, replay"]
    {
        assert!(names.contains(&expected), "{names:?}");
    }
    assert!(
        rows.iter().all(
            |r| r["fast"]["items"].as_u64().unwrap() > 0 && r["reference"]["items"].as_u64().unwrap() > 0
        )
    );
}

#[test]
fn bench_runs_every_benchmark_against_its_reference() {
    let output = zero2048(&["bench", "--quick", "--json", "--depth", "2"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&output)).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["move generation, all 4 directions", "random games with spawns", "expectimax search (heuristic)"]
    );
    for row in &rows {
        assert!(
            row["fast"]["items"].as_u64().unwrap() > 0 && row["reference"]["items"].as_u64().unwrap() > 0
        );
    }
}

#[test]
fn the_zero_bench_measures_batching_and_compares_mcts_with_expectimax() {
    let dir = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_zero2048"))
        .current_dir(dir.path())
        .args([
            "train",
            "--network",
            "4x4",
            "--games",
            "30",
            "--revision-every-games",
            "30",
            "--eval-games",
            "0",
        ])
        .args(["--port", "0", "--threads", "1"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let weights = std::fs::read_dir(dir.path().join("weights"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .unwrap();
    let output = zero2048(&[
        "bench",
        "--suite",
        "zero",
        "--quick",
        "--json",
        "--ntuple-weights",
        weights.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let names: Vec<&str> =
        report["throughput"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "inference batch 64 vs 1",
            "inference batch 512 vs 1",
            "inference batch 64: dense vs convolutions",
            "MCTS 64 games batched vs 1",
            "learner steps batch 256 vs 64",
            "learner steps batch 1024 vs 256",
            "learner steps batch 256: categorical vs scalar value head"
        ]
    );
    for row in report["throughput"].as_array().unwrap() {
        assert!(
            row["fast"]["items"].as_u64().unwrap() > 0 && row["reference"]["items"].as_u64().unwrap() > 0
        );
    }
    let players: Vec<&str> =
        report["strength"].as_array().unwrap().iter().map(|r| r["player"].as_str().unwrap()).collect();
    assert_eq!(players.len(), 4, "{report}");
    assert!(
        players[..3].iter().all(|p| p.starts_with("MCTS"))
            && players[2].contains("Gumbel root")
            && players[3].starts_with("expectimax"),
        "{players:?}"
    );
    for row in report["strength"].as_array().unwrap() {
        assert!(row["strength"]["mean_score"].as_f64().unwrap() > 0.0, "{row}");
    }
}

#[test]
fn database_urls_are_checked_and_their_passwords_never_printed() {
    let dir_guard = temp_dir("database-url");
    let dir = dir_guard.path();
    let dir_str = dir.to_str().unwrap();
    let bad = zero2048(&["token", "list", "--database", "mysql://root:hunter2@db/run"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("not understood") && !stderr(&bad).contains("hunter2"), "{}", stderr(&bad));
    // Nothing listens on port 1: the error names the backend and what failed, never the password.
    let unreachable =
        zero2048(&["token", "list", "--database", "postgres://trainer:hunter2@127.0.0.1:1/run"]);
    assert!(!unreachable.status.success());
    let message = stderr(&unreachable);
    assert!(message.contains("PostgreSQL") && message.contains("connect"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    let weights = dir.join("weights");
    let server = zero2048(&[
        "train",
        "--games",
        "1",
        "--weights-dir",
        weights.to_str().unwrap(),
        "--db",
        &format!("{dir_str}/run.db"),
        "--database",
        "postgres://trainer:hunter2@127.0.0.1:1/run",
    ]);
    assert!(!server.status.success());
    assert!(!stderr(&server).contains("hunter2"), "{}", stderr(&server));
    assert!(!dir.join("run.db").exists(), "a PostgreSQL run wrote a SQLite file");
}
