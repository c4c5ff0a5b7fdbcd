//! The server and its workers as users run them: separate processes, real HTTP on loopback, the
//! real SQLite file; killed, restarted, fed bad weights and bad uploads.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::*;

fn summary(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("worker summary does not parse ({e}): {out}"))
}

#[test]
fn three_workers_train_a_server_and_follow_its_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = server(dir.path(), port, &["--revision-every-games", "500"]);
    let workers: Vec<Proc> = ["w1", "w2", "w3"]
        .iter()
        .map(|name| {
            let token = token(dir.path(), name);
            worker(dir.path(), port, &token, name, &["--upload-interval", "100ms"])
        })
        .collect();
    // Play until the server has published a few revisions, games of a later revision arrive and a
    // worker has fetched one as a delta (a count of games would race the learner: early games are
    // short and fast; a worker is sent a delta only from the revision just before, and one that is
    // slow on a busy machine may skip a revision or two before it catches one).
    let db = dir.path().join("zero2048.db");
    let delta_fetched = |w: &Proc| w.log().contains("fetched as a delta from a cached revision");
    wait_for(
        Duration::from_secs(240),
        "revision 4, games played with revision 2 or later and a revision fetched as a delta",
        || {
            status(port)["revision"].as_u64().unwrap_or(0) >= 4
                && numbers(&db, "SELECT count(*) FROM games WHERE revision >= 2")[0] > 0
                && workers.iter().any(delta_fetched)
        },
    );
    for worker in &workers {
        worker.interrupt();
    }
    let mut played = 0;
    let mut switched = false;
    let mut deltas = 0;
    for worker in workers {
        let (code, out, log) = worker.wait(Duration::from_secs(240));
        assert_eq!(code, Some(0), "{log}");
        let s = summary(&out);
        assert_eq!(s["uploaded"], s["games"], "every game was acknowledged: {s}\n{log}");
        assert_eq!(s["spool_left"], 0);
        played += s["games"].as_u64().unwrap();
        switched |= s["revisions"].as_array().unwrap().len() > 1;
        // The first revision comes compressed, later ones as deltas from the one before.
        assert!(log.contains("fetched compressed"), "{log}");
        deltas += log.matches("fetched as a delta from a cached revision").count();
        assert!(s["weights_downloaded_bytes"].as_u64().unwrap() > 0, "{s}");
    }
    assert!(switched, "no worker moved to a newer revision");
    // The run database is where the test asked: a SQLite file, or PostgreSQL and no file.
    assert_eq!(dir.path().join("zero2048.db").exists(), !on_postgres());
    assert!(deltas > 0, "no worker fetched a revision as a delta");
    let games = stored_games(&dir.path().join("zero2048.db"));
    assert_eq!(games.len() as u64, played, "the database holds every game once");
    // Each game names its worker as token@machine: three tokens, each on its own machine.
    let tokens: HashSet<&str> = games.iter().map(|g| g.1.split('@').next().unwrap()).collect();
    assert_eq!(tokens, HashSet::from(["w1", "w2", "w3"]));
    let workers: HashSet<&str> = games.iter().map(|g| g.1.as_str()).collect();
    assert_eq!(workers.len(), 3, "{workers:?}");
    assert!(
        workers.iter().all(|w| w.split_once('@').is_some_and(|(_, machine)| !machine.is_empty())),
        "{workers:?}"
    );

    wait_for(Duration::from_secs(60), "the learner to catch up", || status(port)["training"]["backlog"] == 0);
    let status = status(port);
    assert!(status["revision"].as_u64().unwrap() >= 4, "{status}");
    assert_eq!(status["database"], if on_postgres() { "PostgreSQL" } else { "SQLite" });
    let workers = status["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 3, "{status}");
    let evaluations = status["evaluations"].as_array().unwrap();
    let first = evaluations.first().unwrap()["strength"]["mean_score"].as_f64().unwrap();
    let last = evaluations.last().unwrap()["strength"]["mean_score"].as_f64().unwrap();
    assert!(last > first, "training did not learn: first evaluation {first}, last {last}");
    let metrics = http().get(format!("http://127.0.0.1:{port}/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains(&format!("zero2048_games_accepted_total {played}")), "{metrics}");
    drop(server);
}

#[test]
fn killing_the_server_mid_upload_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = server(dir.path(), port, &[]);
    let workers: Vec<Proc> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let token = token(dir.path(), name);
            worker(
                dir.path(),
                port,
                &token,
                name,
                &["--games", "400", "--batch-games", "8", "--upload-interval", "100ms"],
            )
        })
        .collect();
    let db = dir.path().join("zero2048.db");
    wait_for(Duration::from_secs(120), "uploads to begin", || stored_games(&db).len() >= 60);
    first.kill9();
    let before = stored_games(&db).len();
    // The revision storage last published: the run resumes from it. The database records a
    // revision after storage publishes it, so a kill between the two leaves its row behind.
    let published = std::fs::read(dir.path().join("weights").join("latest.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|latest| latest["revision"].as_u64())
        .unwrap_or(1);
    std::thread::sleep(Duration::from_millis(1500));
    let second = server(dir.path(), port, &[]);
    // Its first line names the revision it resumed from (before it learns anything new).
    let resumed_at = format!("· revision {} ·", published.max(1));
    // The API answers before that line is printed.
    wait_for(Duration::from_secs(30), "the server's first line", || second.log().contains("games learned"));
    assert!(second.log().contains(&resumed_at), "expected {resumed_at:?} in:\n{}", second.log());
    let mut played = 0;
    for worker in workers {
        let (code, out, log) = worker.wait(Duration::from_secs(300));
        assert_eq!(code, Some(0), "{log}");
        let s = summary(&out);
        assert_eq!(s["spool_left"], 0, "{s}\n{log}");
        played += s["games"].as_u64().unwrap();
    }
    let games = stored_games(&db);
    let unique: HashSet<&Vec<u8>> = games.iter().map(|g| &g.0).collect();
    assert_eq!(unique.len(), games.len(), "a game is stored twice");
    assert_eq!(
        games.len() as u64,
        played,
        "stored {} of {played} games ({before} before the kill)",
        games.len()
    );
    // Chunk first, rows second: every stored game's record is whole in its chunk.
    assert_eq!(read_back_every_record(&db), games.len());
    // Revisions continue without a gap or a repeat across the kill.
    let revisions = numbers(&db, "SELECT revision FROM revisions ORDER BY revision");
    assert_eq!(revisions, (1..=revisions.len() as i64).collect::<Vec<_>>());
    drop(second);
}

#[test]
fn api_servers_apart_from_the_learner_lose_nothing_when_one_is_killed_nor_when_the_learner_is() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("zero2048.db");
    let learner_port = free_port();
    let mut learner = server(dir.path(), learner_port, &["--role", "learner"]);
    // The learner takes no uploads: workers know only the API servers.
    let refused = http().post(format!("http://127.0.0.1:{learner_port}/api/v1/games")).send().unwrap();
    assert_eq!(refused.status().as_u16(), 404);
    let [first_port, second_port] = free_ports();
    let mut first = server(dir.path(), first_port, &["--role", "api"]);
    let _second = server(dir.path(), second_port, &["--role", "api"]);
    let second = format!("http://127.0.0.1:{second_port}");
    let workers: Vec<Proc> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let token = token(dir.path(), name);
            let extra =
                ["--server", &second, "--games", "300", "--batch-games", "8", "--upload-interval", "100ms"];
            worker(dir.path(), first_port, &token, name, &extra)
        })
        .collect();
    wait_for(Duration::from_secs(120), "uploads through the first API server", || {
        stored_games(&db).len() >= 60
    });
    first.kill9();
    wait_for(Duration::from_secs(120), "a revision learned from the API servers' games", || {
        numbers(&db, "SELECT coalesce(max(revision), 0) FROM revisions")[0] >= 2
    });
    learner.kill9();
    let mut played = 0;
    for worker in workers {
        let (code, out, log) = worker.wait(Duration::from_secs(300));
        assert_eq!(code, Some(0), "{log}");
        let s = summary(&out);
        assert_eq!(s["spool_left"], 0, "{s}\n{log}");
        assert!(log.contains("cannot be reached; the next requests go to"), "{log}");
        played += s["games"].as_u64().unwrap();
    }
    let games = stored_games(&db);
    let unique: HashSet<&Vec<u8>> = games.iter().map(|g| &g.0).collect();
    assert_eq!((unique.len(), games.len() as u64), (games.len(), played), "every game stored once");
    assert_eq!(read_back_every_record(&db), games.len());
    // The learner, killed, resumes from its cursor and learns every game exactly once.
    let revision_before = numbers(&db, "SELECT max(revision) FROM revisions")[0];
    let learner = server(dir.path(), learner_port, &["--role", "learner"]);
    wait_for(Duration::from_secs(120), "the learner to learn every stored game", || {
        status(learner_port)["training"]["games"].as_u64() == Some(games.len() as u64)
    });
    learner.interrupt();
    let (code, _, log) = learner.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{log}");
    let revisions = numbers(&db, "SELECT revision FROM revisions ORDER BY revision");
    assert_eq!(revisions, (1..=revisions.len() as i64).collect::<Vec<_>>());
    assert!(*revisions.last().unwrap() > revision_before);
    let learned = numbers(&db, "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'games'")[0];
    assert_eq!(learned as usize, games.len(), "every stored game learned once");
    // The API server still up shows the learner's newest revision and totals.
    wait_for(Duration::from_secs(10), "the API server to follow the learner's last revision", || {
        let s = status(second_port);
        s["revision"].as_i64() == revisions.last().copied()
            && s["training"]["games"].as_u64() == Some(learned as u64)
    });
}

#[test]
fn a_worker_given_several_servers_moves_to_the_next_when_one_cannot_be_reached() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = server(dir.path(), port, &[]);
    let token = token(dir.path(), "pair");
    // The first --server is down (nothing listens there); the second is the run's server.
    let dead = free_port();
    let live = format!("http://127.0.0.1:{port}");
    let pair = worker(dir.path(), dead, &token, "pair", &["--server", &live, "--games", "30"]);
    let (code, out, log) = pair.wait(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(summary(&out)["uploaded"], 30, "{log}");
    let moved = format!("http://127.0.0.1:{dead} cannot be reached; the next requests go to {live}");
    assert!(log.contains(&moved), "{log}");
    assert_eq!(stored_games(&dir.path().join("zero2048.db")).len(), 30);
}

#[test]
fn a_killed_worker_sends_its_spool_when_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = server(dir.path(), port, &[]);
    let token = token(dir.path(), "solo");
    // Never uploads on its own: games pile up in the spool, until it holds --max-spool-games.
    let mut first = worker(
        dir.path(),
        port,
        &token,
        "solo",
        &["--upload-interval", "1h", "--batch-games", "10000", "--max-spool-games", "40"],
    );
    let spool = dir.path().join("solo/spool");
    wait_for(Duration::from_secs(60), "a full spool", || spool_files(&spool) >= 40);
    std::thread::sleep(Duration::from_secs(1));
    let full = spool_files(&spool);
    // One playing thread: at most the game in progress when the limit was reached comes after it.
    assert!(full <= 41, "the spool grew to {full} games past its limit of 40");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(spool_files(&spool), full, "playing did not pause while the spool was full");
    first.kill9();
    let spooled = spool_files(&spool);
    assert!(stored_games(&dir.path().join("zero2048.db")).is_empty());
    let second = worker(dir.path(), port, &token, "solo", &["--games", "1"]);
    let (code, out, log) = second.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(summary(&out)["spool_left"], 0);
    assert_eq!(spool_files(&spool), 0);
    assert!(stored_games(&dir.path().join("zero2048.db")).len() > spooled, "the spool was not sent");
}

#[test]
fn a_worker_refreshes_expired_urls_and_refuses_corrupted_weights_keeping_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = server(dir.path(), port, &["--revision-every-games", "1000000"]);
    let token = token(dir.path(), "careful");
    let good: serde_json::Value =
        http().get(format!("http://127.0.0.1:{port}/api/v1/latest")).send().unwrap().json().unwrap();
    // First the record names an expired presigned URL (the store answers 403): the worker reads
    // the record again until it gets a fresh URL.
    let scripted = Scripted::start();
    let mut expired = good.clone();
    expired["weights_url"] = scripted.url("/expired.safetensors").into();
    scripted.set("/expired.safetensors", 403, "Request has expired", &[]);
    // The compressed copy the record offers has expired too (a worker tries it first).
    assert!(expired["compressed"].is_object(), "{expired}");
    expired["compressed"]["url"] = scripted.url("/expired.zst").into();
    scripted.set("/expired.zst", 403, "Request has expired", &[]);
    scripted.set("/latest.json", 200, expired.to_string(), &[]);
    let w = worker(
        dir.path(),
        port,
        &token,
        "careful",
        &["--latest-url", &scripted.url("/latest.json"), "--upload-interval", "100ms"],
    );
    wait_for(Duration::from_secs(30), "the expired URL", || {
        w.log().contains("reading the latest record again")
    });
    let db = dir.path().join("zero2048.db");
    assert!(stored_games(&db).is_empty(), "games were played without verified weights");
    scripted.set("/latest.json", 200, good.to_string(), &[]);
    wait_for(Duration::from_secs(60), "the first games", || !stored_games(&db).is_empty());
    // Revision 2 names a file whose bytes do not match its hash: a corrupted file, as far as the
    // worker can tell. It refuses it and keeps playing revision 1.
    let mut bad = good.clone();
    bad["revision"] = 2.into();
    bad["weights_sha256"] = "0".repeat(64).into();
    scripted.set("/latest.json", 200, bad.to_string(), &[]);
    let started = std::time::Instant::now();
    while !w.log().contains("refusing revision 2") {
        assert!(started.elapsed() < Duration::from_secs(60), "no refusal:\n{}", w.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let stored = stored_games(&db).len();
    wait_for(Duration::from_secs(30), "games after the refusal", || stored_games(&db).len() > stored + 50);
    w.interrupt();
    let (code, out, log) = w.wait(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{log}");
    let s = summary(&out);
    assert_eq!(s["revisions"], serde_json::json!([1]), "{s}\n{log}");
    assert_eq!(s["uploaded"], s["games"], "{s}");
    assert_eq!(numbers(&db, "SELECT DISTINCT revision FROM games ORDER BY revision"), [1]);
}

#[test]
fn incompatible_servers_and_refused_tokens_stop_a_worker_with_distinct_codes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = server(dir.path(), port, &[]);
    let wrong =
        worker(dir.path(), port, "z2k_not-a-token", "wrong", &["--games", "5", "--upload-interval", "50ms"]);
    let (code, _, log) = wrong.wait(Duration::from_secs(60));
    assert_eq!(code, Some(4), "{log}");
    assert!(log.contains("not valid on this server"), "{log}");
    assert!(!log.contains("z2k_not-a-token"), "the token was printed: {log}");

    let revoked_token = token(dir.path(), "gone");
    let out = zero2048(dir.path(), &["token", "revoke", "gone"]);
    assert!(out.status.success());
    let revoked =
        worker(dir.path(), port, &revoked_token, "gone", &["--games", "5", "--upload-interval", "50ms"]);
    let (code, _, log) = revoked.wait(Duration::from_secs(60));
    assert_eq!(code, Some(4), "{log}");
    assert!(log.contains("revoked"), "{log}");

    // Something that is not a zero2048 server: exit code 3 and a message saying so.
    let scripted = Scripted::start();
    scripted.set("/api/v1/latest", 200, "{}", &[]);
    let stranger = worker(dir.path(), scripted.port, "t", "stranger", &["--games", "1"]);
    let (code, _, log) = stranger.wait(Duration::from_secs(60));
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("not a zero2048 server"), "{log}");
    // A server of another protocol version.
    scripted.set("/api/v1/latest", 200, "{}", &[("zero2048-protocol", "99")]);
    scripted.set("/api/v1/games", 200, "{}", &[("zero2048-protocol", "99")]);
    let future = worker(dir.path(), scripted.port, "t", "future", &["--games", "1"]);
    let (code, _, log) = future.wait(Duration::from_secs(60));
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("protocol version 99"), "{log}");
}

#[test]
fn token_commands_store_only_hashes_and_purge_quarantines_games() {
    let dir = tempfile::tempdir().unwrap();
    let t = token(dir.path(), "alice");
    assert!(t.starts_with("z2k_") && t.len() > 40);
    let again = zero2048(dir.path(), &["token", "add", "alice"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = zero2048(dir.path(), &["token", "add", "no spaces"]);
    assert_eq!(bad.status.code(), Some(2));
    let list = zero2048(dir.path(), &["token", "list", "--json"]);
    let listed = String::from_utf8(list.stdout).unwrap();
    assert!(listed.contains("alice") && !listed.contains(&t), "{listed}");
    if !on_postgres() {
        let db = std::fs::read(dir.path().join("zero2048.db")).unwrap();
        assert!(!db.windows(t.len()).any(|w| w == t.as_bytes()), "the token is stored in clear");
    }
    let missing = zero2048(dir.path(), &["token", "revoke", "bob"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no token is named \"bob\""));

    let port = free_port();
    let server = server(dir.path(), port, &["--revision-every-games", "1000000"]);
    let w = worker(dir.path(), port, &t, "alice", &["--games", "30"]);
    let (code, _, log) = w.wait(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{log}");
    drop(server);
    let purge = zero2048(dir.path(), &["token", "revoke", "alice", "--purge-games"]);
    assert!(purge.status.success());
    assert!(
        String::from_utf8_lossy(&purge.stderr).contains("quarantined"),
        "{}",
        String::from_utf8_lossy(&purge.stderr)
    );
    let db = dir.path().join("zero2048.db");
    let all = numbers(&db, "SELECT count(*) FROM games WHERE worker LIKE 'alice@%'")[0];
    let quarantined = numbers(
        &db,
        "SELECT count(*) FROM games WHERE worker LIKE 'alice@%' AND CAST(quarantined AS INTEGER) = 1",
    )[0];
    assert!(all >= 30 && quarantined == all, "{all} games, {quarantined} quarantined");
}

#[test]
fn ctrl_c_twice_checkpoints_games_in_progress_and_the_next_start_finishes_them() {
    let dir = tempfile::tempdir().unwrap();
    // Depth-4 self-play (chosen by the server, through the latest record) makes games last
    // seconds even on a fast machine, so both threads are caught in their first game.
    std::fs::write(dir.path().join("deep.yaml"), "train:\n  selfplay_depth: 4\n").unwrap();
    let port = free_port();
    let _server = server(dir.path(), port, &["--config", "deep.yaml", "--revision-every-games", "1000000"]);
    let token = token(dir.path(), "patient");
    let first = worker(dir.path(), port, &token, "patient", &["--threads", "2"]);
    let db = dir.path().join("zero2048.db");
    wait_for(Duration::from_secs(60), "the worker to play", || first.log().contains("adopted revision 1"));
    std::thread::sleep(Duration::from_millis(300));
    first.interrupt();
    // The second Ctrl-C as soon as the first is handled (two signals sent at once may merge).
    wait_for(Duration::from_secs(10), "the first Ctrl-C", || first.log().contains("finishing the games"));
    first.interrupt();
    let (code, _, log) = first.wait(Duration::from_secs(60));
    assert_eq!(code, Some(130), "{log}");
    let partial = dir.path().join("patient/spool/partial");
    let checkpointed = spool_files(&partial);
    assert!(checkpointed >= 1, "no game was checkpointed:\n{log}");
    let stored = stored_games(&db).len();

    let second = worker(dir.path(), port, &token, "patient", &["--threads", "2", "--games", "1"]);
    let (code, out, log) = second.wait(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{log}");
    let s = summary(&out);
    // Games finished between the two Ctrl-C of the first run wait in the spool and go up now too.
    assert_eq!(s["spool_left"], 0, "{s}\n{log}");
    assert_eq!(s["rejected"], 0, "{s}\n{log}");
    assert!(s["uploaded"].as_u64().unwrap() >= s["games"].as_u64().unwrap(), "{s}\n{log}");
    assert_eq!(spool_files(&partial), 0, "checkpointed games were left unfinished");
    assert!(stored_games(&db).len() >= stored + checkpointed, "the finished games were not all uploaded");
}
