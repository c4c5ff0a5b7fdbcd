//! `zero2048 train`, the main job, as a user runs it: budgets, resuming, Ctrl-C and kill -9.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn zero2048(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zero2048")).current_dir(dir).args(args).output().unwrap()
}

const SMALL: [&str; 6] = ["--network", "4x4", "--eval-games", "20", "--threads", "1"];

fn train(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train"];
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(extra);
    zero2048(dir, &args)
}

fn latest_revision(dir: &Path) -> u64 {
    let latest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("weights/latest.json")).unwrap()).unwrap();
    latest["revision"].as_u64().unwrap()
}

fn assert_storage_is_whole(dir: &Path) {
    let verify = zero2048(dir, &["weights", "verify"]);
    assert!(
        verify.status.success(),
        "storage damaged:\n{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn train_publishes_revisions_and_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let first = train(dir.path(), &["--games", "300", "--revision-every-games", "100", "--json"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let revision = summary["progress"]["revision"].as_u64().unwrap();
    assert!(revision >= 3, "{summary}");
    assert_eq!(latest_revision(dir.path()), revision);
    assert!(dir.path().join("zero2048.db").is_file());
    assert_storage_is_whole(dir.path());

    let second = train(dir.path(), &["--games", "100", "--revision-every-games", "100", "--json"]);
    assert!(second.status.success());
    let resumed: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(resumed["revisions"][0]["revision"].as_u64().unwrap(), revision + 1, "{resumed}");
    assert!(resumed["progress"]["games"].as_u64().unwrap() >= 400);
    assert!(String::from_utf8_lossy(&second.stderr).contains(&format!("revision {revision} ·")));

    // The ntuple player plays the trained weights, reproducibly.
    let eval = |dir: &Path| {
        let out = zero2048(
            dir,
            &["eval", "--player", "ntuple", "--weights", "latest", "--depth", "1", "--games", "10", "--json"],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["strength"].clone()
    };
    assert_eq!(eval(dir.path()), eval(dir.path()));

    // --reset starts again from zero.
    let reset = train(dir.path(), &["--games", "50", "--revision-every-games", "50", "--reset", "--json"]);
    assert!(reset.status.success());
    let fresh: serde_json::Value = serde_json::from_slice(&reset.stdout).unwrap();
    assert_eq!(fresh["revisions"][0]["revision"], 1);
}

#[test]
fn a_revision_published_but_not_recorded_is_recorded_when_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let first = train(dir.path(), &["--games", "200", "--revision-every-games", "100", "--json"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let published = latest_revision(dir.path());
    assert!(published >= 2);
    // As a kill between storage's publish and the database's record leaves the run: storage
    // holds the revision, the database neither its row nor its counter.
    let db = rusqlite::Connection::open(dir.path().join("zero2048.db")).unwrap();
    db.execute("DELETE FROM revisions WHERE revision = ?1", [published as i64]).unwrap();
    db.execute("UPDATE meta SET value = ?1 WHERE key = 'revision'", [(published - 1).to_string()]).unwrap();
    drop(db);

    let second = train(dir.path(), &["--games", "100", "--revision-every-games", "100", "--json"]);
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(log.contains(&format!("revision {published} was published but not recorded")), "{log}");
    let resumed: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(resumed["revisions"][0]["revision"].as_u64().unwrap(), published + 1, "{resumed}");
    let db = rusqlite::Connection::open(dir.path().join("zero2048.db")).unwrap();
    let revisions: Vec<i64> = db
        .prepare("SELECT revision FROM revisions ORDER BY revision")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(revisions, (1..=published as i64 + 1).collect::<Vec<_>>(), "no gap, no repeat");
}

#[test]
fn kill_9_at_any_point_leaves_only_whole_files_and_a_run_that_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut last_revision = 0;
    for (i, delay_ms) in [150u64, 400, 650, 900, 1200, 1500, 1900, 2400].into_iter().enumerate() {
        let mut args = vec!["train".to_string()];
        args.extend(SMALL.iter().map(|s| s.to_string()));
        args.extend(["--time", "30s", "--revision-every-games", "10"].map(String::from));
        let mut child = Command::new(env!("CARGO_BIN_EXE_zero2048"))
            .current_dir(dir.path())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        if dir.path().join("weights/latest.json").exists() {
            assert_storage_is_whole(dir.path());
            let revision = latest_revision(dir.path());
            assert!(
                revision >= last_revision,
                "kill {i}: revision went back from {last_revision} to {revision}"
            );
            last_revision = revision;
        }
    }
    assert!(last_revision > 0, "no revision was published in 8 runs");
    let resumed = train(dir.path(), &["--games", "20", "--revision-every-games", "10", "--json"]);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert!(summary["revisions"][0]["revision"].as_u64().unwrap() > last_revision);
    assert_storage_is_whole(dir.path());
}

#[test]
fn one_ctrl_c_stops_cleanly_and_publishes_what_was_learned() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["train".to_string()];
    args.extend(SMALL.iter().map(|s| s.to_string()));
    args.extend(["--revision-every-games", "1000000", "--json"].map(String::from));
    let mut child = Command::new(env!("CARGO_BIN_EXE_zero2048"))
        .current_dir(dir.path())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the handler is installed (the run says so), however slow the machine is.
    let stderr = child.stderr.take().unwrap();
    let (said, hear) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("press Ctrl-C") {
                let _ = said.send(());
            }
            lines.push(line);
        }
        lines.join("\n")
    });
    hear.recv_timeout(Duration::from_secs(60)).expect("the run started");
    std::thread::sleep(Duration::from_millis(700));
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = reader.join().unwrap();
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("stopping"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        summary["revisions"].as_array().unwrap().len(),
        1,
        "the games learned before Ctrl-C are published"
    );
    assert_eq!(latest_revision(dir.path()), 1);
    assert_storage_is_whole(dir.path());
}

#[test]
fn bad_train_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for (args, expected) in [
        (vec!["train", "--games", "0"], "0 is not in 1.."),
        (vec!["train", "--time", "soon"], "--time"),
        (vec!["train", "--network", "9x9"], "possible values: 4x6, 5x6, 8x6, 4x4"),
        (vec!["train", "--resume-from", "missing.safetensors"], "no such file"),
        (vec!["train", "--resume-from", "ftp://example.org/w.safetensors"], "is not a weights location"),
        (vec!["train", "--resume-from", "r2://no-key"], "is not r2://<bucket>/<key>"),
    ] {
        let output = zero2048(dir.path(), &args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let eval = zero2048(dir.path(), &["eval", "--player", "ntuple"]);
    assert_eq!(eval.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&eval.stderr).contains("needs --weights"));
}

#[test]
fn stage_flags_and_the_files_stage_tile_reach_the_published_network() {
    let model_of = |dir: &Path| -> serde_json::Value {
        let latest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("weights/latest.json")).unwrap()).unwrap();
        latest["model"].clone()
    };
    let stages_of = |model: &serde_json::Value| {
        (model["stages"].as_u64().unwrap(), model["stage_tile"].as_u64().unwrap())
    };
    // --network names the tuples only: the file's stages and stage tile stay.
    let from_file = tempfile::tempdir().unwrap();
    let config = from_file.path().join("stages.yaml");
    std::fs::write(
        &config,
        "train:\n  network:\n    tuples: [[0, 1, 2, 3, 4, 5]]\n    stages: 3\n    stage_tile: 12\n",
    )
    .unwrap();
    let out = train(
        from_file.path(),
        &["--config", config.to_str().unwrap(), "--games", "20", "--revision-every-games", "20"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let model = model_of(from_file.path());
    assert_eq!(stages_of(&model), (3, 12));
    let tuples = model["tuples"].as_array().unwrap();
    assert!(tuples.len() == 4 && tuples.iter().all(|t| t.as_array().unwrap().len() == 4), "{model}");
    // The flags set both.
    let from_flags = tempfile::tempdir().unwrap();
    let out = train(
        from_flags.path(),
        &["--stages", "1", "--stage-tile", "11", "--games", "20", "--revision-every-games", "20"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stages_of(&model_of(from_flags.path())), (1, 11));
    let out = zero2048(from_flags.path(), &["train", "--stage-tile", "16"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("16 is not in 1..=15"));
}

#[test]
fn the_example_configuration_is_accepted_whole() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config.example.yaml");
    let output = zero2048(dir.path(), &["weights", "list", "--config", example.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "train:\n  td:\n    learning_rat: 0.2\n").unwrap();
    let output = zero2048(dir.path(), &["train", "--config", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.yaml:3:") && stderr.contains("learning_rat"), "{stderr}");
}

#[test]
fn resume_from_a_file_url_or_over_http() {
    let source = tempfile::tempdir().unwrap();
    let trained = train(source.path(), &["--games", "100", "--revision-every-games", "100"]);
    assert!(trained.status.success());
    let weights = std::fs::read_dir(source.path().join("weights"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .unwrap();

    let from_file = tempfile::tempdir().unwrap();
    let url = format!("file://{}", weights.display());
    let output = train(
        from_file.path(),
        &["--games", "20", "--revision-every-games", "20", "--resume-from", &url, "--json"],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // Real HTTP on loopback: Python's static file server. It picks its own port and names it
    // once it listens, so no other process can take the port between a pick and the bind, and
    // a slow start on a busy machine is waited for rather than guessed.
    let mut server = Command::new("python3")
        .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory"])
        .arg(source.path().join("weights"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().expect("piped stdout")),
        &mut banner,
    )
    .unwrap();
    // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
    let port: u16 = banner
        .split_whitespace()
        .skip_while(|word| *word != "port")
        .nth(1)
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("python3 -m http.server did not name its port: {banner:?}"));
    let from_http = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/{}", weights.file_name().unwrap().to_string_lossy());
    let output =
        train(from_http.path(), &["--games", "20", "--revision-every-games", "20", "--resume-from", &url]);
    let missing = train(
        from_http.path(),
        &["--games", "20", "--resume-from", &format!("http://127.0.0.1:{port}/nope.safetensors")],
    );
    let _ = server.kill();
    let _ = server.wait();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("downloaded http://127.0.0.1"));
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("HTTP 404"));
}
