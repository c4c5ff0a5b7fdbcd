//! The worker in-process against an in-process server over real HTTP on loopback: it plays what
//! the latest record says (the restart strategy included), uploads every game once, and the server
//! takes its continuations, checked against their stored parents.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use zero2048_model::NTupleConfig;
use zero2048_protocol::RestartSpec;
use zero2048_server::{ApiConfig, Server, ServerOptions, TokenStore};
use zero2048_train::{Budget, RunDb, RunObserver, SelfPlay, TrainConfig};
use zero2048_worker::{ClientError, Signals, Worker, WorkerConfig, WorkerError, WorkerSettings};

fn server(dir: &std::path::Path, runtime: &tokio::runtime::Runtime) -> Server {
    let mut storage = zero2048_storage::Config::default();
    storage.storage.weights_dir = dir.join("weights");
    storage.server.port = 0;
    storage.server.localhost_weights = true;
    let options = ServerOptions {
        role: zero2048_server::Role::All,
        storage,
        api: ApiConfig::default(),
        train: TrainConfig {
            network: NTupleConfig::small_4x4(),
            restart: Some(RestartSpec { min_moves: 10, at: 0.5, at_max: None, at_tile: None }),
            revision_every_games: 1_000_000,
            evaluate_every_revisions: 0,
            ..TrainConfig::default()
        },
        db_path: dir.join("server.db"),
        database: dir.join("server.db").into(),
        resume_from: None,
        publish_initial: true,
    };
    Server::start(options, runtime).unwrap()
}

fn settings(dir: &std::path::Path) -> WorkerSettings {
    WorkerSettings {
        threads: 2,
        spool_dir: dir.join("spool"),
        cache_dir: dir.join("cache"),
        upload_interval_seconds: 0.1,
        adopt_delay_seconds: 0.0,
        ..WorkerSettings::default()
    }
}

#[test]
fn a_worker_plays_the_run_spec_and_every_game_reaches_the_server_once() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut server = server(dir.path(), &runtime);
    let token = TokenStore::open(dir.path().join("server.db")).unwrap().add("tester").unwrap();
    let mut config = WorkerConfig::new(&server.local_url(), &settings(dir.path()));
    config.token = Some(zero2048_storage::Secret::new(token));
    config.max_games = Some(40);
    config.seed = 9;
    let summary = Worker::run(config, Arc::new(Signals::default()), &mut |_| {}).unwrap();
    assert_eq!(summary.games, 40);
    assert_eq!(summary.uploaded, 40, "{summary:?}");
    assert_eq!((summary.rejected, summary.spool_left), (0, 0), "{summary:?}");
    assert_eq!(summary.revisions, vec![1]);

    let db = RunDb::open(dir.path().join("server.db")).unwrap().with_games(server.run().game_shelf());
    let games = db.games_after(0, 1000).unwrap();
    assert_eq!(games.len(), 40);
    let continuations: Vec<_> = games.iter().filter(|g| g.origin.is_some()).collect();
    assert!(!continuations.is_empty(), "the run's restart strategy reached the worker");
    for child in continuations {
        let (parent, step) = child.origin.unwrap();
        let parent = games.iter().find(|g| g.uuid == parent).expect("the parent is stored");
        let parent_record = zero2048_game::GameRecord::decode(&parent.record).unwrap();
        let afterstate = parent_record.afterstate_at(step as usize, parent.origin.is_some()).unwrap();
        let record = zero2048_game::GameRecord::decode(&child.record).unwrap();
        assert!(zero2048_game::is_branch_of(record.start, afterstate));
    }

    // The server learns them all: continuations replay from their parent's position.
    struct Quiet;
    impl RunObserver for Quiet {}
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopper = {
        let (stop, live) = (Arc::clone(&stop), server.live());
        std::thread::spawn(move || {
            while live.learned_through.load(Ordering::Relaxed) < 40 {
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    let summary = server.train(Budget::default(), &stop, SelfPlay::RemoteOnly, &mut Quiet).unwrap();
    stopper.join().unwrap();
    assert_eq!(summary.progress.session_games, 40);
    server.shutdown();
}

#[test]
fn a_worker_without_a_token_is_told_how_to_give_one_before_it_plays() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = server(dir.path(), &runtime);
    let config = WorkerConfig::new(&server.local_url(), &settings(dir.path()));
    let error = Worker::run(config, Arc::new(Signals::default()), &mut |_| {}).unwrap_err();
    match error {
        WorkerError::Client(ClientError::Unauthorized(message)) => {
            assert!(message.contains("--token") && message.contains("ZERO2048_TOKEN"), "{message}")
        }
        other => panic!("expected a refused token, got {other}"),
    }
    assert!(
        !dir.path().join("cache").exists()
            || std::fs::read_dir(dir.path().join("cache")).unwrap().count() == 0
    );
    server.shutdown();
}
