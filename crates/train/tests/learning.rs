//! Learning actually learns; runs resume where they stopped; bad inputs teach nothing.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use zero2048_game::{GameRecord, SpawnRule, Step, derive_seed};
use zero2048_model::{NTupleConfig, NTupleNetwork};
use zero2048_search::{ExpectimaxConfig, ExpectimaxPlayer, play_game};
use zero2048_storage::{Config, StorageAdapter};
use zero2048_train::{
    Budget, EvalConfig, RunObserver, SelfPlay, TdConfig, TdLearner, TrainConfig, TrainError, TrainingRun,
    evaluate,
};

struct Quiet;
impl RunObserver for Quiet {}

const ONE_THREAD: SelfPlay = SelfPlay::Local { threads: 1 };

fn small_learner(config: TdConfig) -> TdLearner {
    TdLearner::new(Arc::new(NTupleNetwork::zeroed(NTupleConfig::small_4x4()).unwrap()), config, 0)
}

fn greedy() -> ExpectimaxConfig {
    ExpectimaxConfig { depth: 1, ..ExpectimaxConfig::default() }
}

#[test]
fn td_learning_beats_the_untrained_network_by_a_wide_margin() {
    let learner = small_learner(TdConfig::td0());
    let suite = EvalConfig { games: 200, seed: 99, depth: 1, threads: 2 };
    let before = evaluate(Arc::clone(learner.network()), &suite, SpawnRule::STANDARD);
    for game in 0..3000 {
        let mut player = ExpectimaxPlayer::new(Arc::clone(learner.network()), greedy());
        let (record, _) = play_game(&mut player, derive_seed(5, game), SpawnRule::STANDARD);
        learner.learn(&record, false).unwrap();
    }
    let after = evaluate(Arc::clone(learner.network()), &suite, SpawnRule::STANDARD);
    assert!(
        after.mean_score > 3.0 * before.mean_score,
        "after 3000 games: {:.0} ± {:.0}, untrained: {:.0} ± {:.0}",
        after.mean_score,
        after.ci95,
        before.mean_score,
        before.ci95
    );
    assert!(after.mean_score - after.ci95 > before.mean_score + before.ci95, "the intervals do not overlap");
}

#[test]
fn temporal_coherence_and_td_lambda_learn_too() {
    for config in [
        TdConfig { coherence: true, ..TdConfig::td0() },
        TdConfig { lambda: 0.5, ..TdConfig::td0() },
        TdConfig { coherence_after_games: 500, ..TdConfig::default() },
        TdConfig::default(),
    ] {
        let learner = small_learner(config.clone());
        let suite = EvalConfig { games: 100, seed: 3, depth: 1, threads: 2 };
        let before = evaluate(Arc::clone(learner.network()), &suite, SpawnRule::STANDARD).mean_score;
        for game in 0..1500 {
            let (record, _) = play_game(
                &mut ExpectimaxPlayer::new(Arc::clone(learner.network()), greedy()),
                derive_seed(8, game),
                SpawnRule::STANDARD,
            );
            learner.learn(&record, false).unwrap();
        }
        let after = evaluate(Arc::clone(learner.network()), &suite, SpawnRule::STANDARD).mean_score;
        assert!(after > 2.0 * before, "{config:?}: {after:.0} after, {before:.0} before");
    }
}

#[test]
fn an_illegal_record_teaches_nothing() {
    let learner = small_learner(TdConfig::default());
    let (mut record, _) =
        play_game(&mut ExpectimaxPlayer::heuristic(greedy()), derive_seed(1, 1), SpawnRule::STANDARD);
    let last = record.steps.len() - 1;
    record.steps[last] = Step { spawn_exponent: 3, ..record.steps[last] };
    assert!(learner.learn(&record, false).is_err());
    let touched = learner.network().tables().iter().any(|t| t.iter().any(|w| w != 0.0));
    assert!(!touched, "a record that fails verification changed the weights");
    assert!(learner.learn(&GameRecord::default(), false).is_err(), "an empty board is not a start");
}

fn run_config() -> TrainConfig {
    TrainConfig {
        network: NTupleConfig::small_4x4(),
        selfplay_threads: 1,
        revision_every_games: 150,
        revision_every_seconds: 3600.0,
        evaluation: EvalConfig { games: 20, seed: 1, depth: 1, threads: 1 },
        ..TrainConfig::default()
    }
}

fn open(dir: &std::path::Path, runtime: &tokio::runtime::Runtime) -> Result<TrainingRun, TrainError> {
    let mut storage = Config::default();
    storage.storage.weights_dir = dir.join("weights");
    let adapter = Arc::new(runtime.block_on(StorageAdapter::from_config(&storage)).unwrap());
    TrainingRun::open(
        run_config(),
        adapter,
        runtime.handle().clone(),
        &dir.join("run.db"),
        &dir.join("run.db").into(),
        None,
    )
}

#[test]
fn a_resumed_run_continues_its_revisions_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stop = AtomicBool::new(false);
    let first = {
        let mut run = open(dir.path(), &runtime).unwrap();
        let summary =
            run.run(Budget { games: Some(400), time: None }, &stop, ONE_THREAD, &mut Quiet).unwrap();
        assert!(summary.revisions.len() >= 3, "{} revisions", summary.revisions.len());
        // A revision published while the previous one is still being evaluated is not evaluated
        // (on a busy machine that happens here); the last one always is.
        let published: Vec<u64> = summary.revisions.iter().map(|r| r.revision).collect();
        let evaluated: Vec<u64> = summary.evaluations.iter().map(|e| e.revision).collect();
        assert!(evaluated.iter().all(|r| published.contains(r)), "{evaluated:?} of {published:?}");
        assert_eq!(evaluated.last(), published.last(), "the last revision was not evaluated");
        run.counters()
    };
    assert_eq!(first.games, 400, "a budget of games is kept exactly");
    assert!(first.revision >= 3);

    let local = zero2048_storage::LocalStorageBackend::new(
        &dir.path().join("weights"),
        zero2048_storage::LocalUrls::File,
    )
    .unwrap();
    let published = {
        let latest =
            runtime.block_on(zero2048_storage::StorageBackend::read_latest_info(&local)).unwrap().unwrap();
        assert_eq!(latest.revision, first.revision);
        zero2048_model::weights_file::load(&local.checked_latest_file(&latest).unwrap(), None).unwrap().0
    };
    let mut run = open(dir.path(), &runtime).unwrap();
    assert_eq!(run.counters(), first, "the database restores every counter");
    // The weights trained so far survive the restart: the resumed network is the published one,
    // weight for weight, and it values positions as the trained network did.
    let board: zero2048_game::Board = "2 4 8 16 | 0 2 0 0 | 0 0 4 0 | 0 0 0 2".parse().unwrap();
    let resumed = run.network().expect("an n-tuple run");
    assert!(resumed.tables().iter().zip(published.tables()).all(|(a, b)| a.iter().eq(b.iter())));
    assert_ne!(resumed.value(board), 0.0, "a trained network");
    let summary = run.run(Budget { games: Some(200), time: None }, &stop, ONE_THREAD, &mut Quiet).unwrap();
    assert_eq!(summary.revisions[0].revision, first.revision + 1, "revision numbers continue");
    assert_eq!(run.counters().games, first.games + 200);
    let all: Vec<u64> = run.db().revisions().unwrap().iter().map(|r| r.revision).collect();
    assert_eq!(all, (1..=run.counters().revision).collect::<Vec<_>>());
}

#[test]
fn a_corrupted_latest_weights_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Two sessions, so at least two revisions whatever the machine's speed (each session publishes
    // what it learned when it ends; revisions within a session depend on the loop's timing).
    for _ in 0..2 {
        let mut run = open(dir.path(), &runtime).unwrap();
        run.run(Budget { games: Some(80), time: None }, &AtomicBool::new(false), ONE_THREAD, &mut Quiet)
            .unwrap();
    }
    let weights = dir.path().join("weights");
    let latest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(weights.join("latest.json")).unwrap()).unwrap();
    let file = weights.join(latest["weights_file"].as_str().unwrap());
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(&file, bytes).unwrap();
    let message = match open(dir.path(), &runtime) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a corrupted weights file was accepted"),
    };
    assert!(message.contains(&file.display().to_string()) && message.contains("sha256"), "{message}");
    // The error offers the newest revision that is still whole.
    assert!(message.contains("newest intact revision is r000001-"), "{message}");
    assert!(message.contains("--resume-from"), "{message}");
}
