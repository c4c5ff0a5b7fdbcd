//! Learning actually learns; runs resume where they stopped; bad inputs teach nothing.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use zero2048_game::{GameRecord, SpawnRule, Step, derive_seed};
use zero2048_model::{NTupleConfig, NTupleNetwork};
use zero2048_protocol::{BatchEntry, SearchRequirement, UploadRules, Uuid};
use zero2048_search::{ExpectimaxConfig, ExpectimaxPlayer, play_game};
use zero2048_storage::{Config, StorageAdapter};
use zero2048_train::{
    Budget, EvalConfig, RunDb, RunObserver, SelfPlay, TdConfig, TdLearner, TrainConfig, TrainError,
    TrainingRun, evaluate, ingest,
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
    open_with(dir, runtime, run_config())
}

fn open_with(
    dir: &std::path::Path,
    runtime: &tokio::runtime::Runtime,
    config: TrainConfig,
) -> Result<TrainingRun, TrainError> {
    let mut storage = Config::default();
    storage.storage.weights_dir = dir.join("weights");
    let adapter = Arc::new(runtime.block_on(StorageAdapter::from_config(&storage)).unwrap());
    TrainingRun::open(
        config,
        adapter,
        runtime.handle().clone(),
        &dir.join("run.db"),
        &dir.join("run.db").into(),
        None,
    )
}

/// The weights of the latest revision stored in `dir`'s run.
fn latest_published(dir: &std::path::Path, runtime: &tokio::runtime::Runtime) -> (NTupleNetwork, u64) {
    let local =
        zero2048_storage::LocalStorageBackend::new(&dir.join("weights"), zero2048_storage::LocalUrls::File)
            .unwrap();
    let latest =
        runtime.block_on(zero2048_storage::StorageBackend::read_latest_info(&local)).unwrap().unwrap();
    let file = local.checked_latest_file(&latest).unwrap();
    (zero2048_model::weights_file::load(&file, None).unwrap().0, latest.revision)
}

fn same_weights(a: &NTupleNetwork, b: &NTupleNetwork) -> bool {
    a.tables().iter().zip(b.tables()).all(|(a, b)| a.iter().eq(b.iter()))
}

#[test]
fn a_run_publishing_its_mean_learns_on_and_resumes_from_its_own_weights() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stop = AtomicBool::new(false);
    assert_eq!(run_config().published_mean_power, Some(1), "the default publishes the mean");
    let learned_at_stop = {
        let mut run = open(dir.path(), &runtime).unwrap();
        run.run(Budget { games: Some(400), time: None }, &stop, ONE_THREAD, &mut Quiet).unwrap();
        run.network().expect("an n-tuple run").try_clone().unwrap()
    };
    let (published, revision) = latest_published(dir.path(), &runtime);
    assert!(revision >= 3);
    assert!(!same_weights(&published, &learned_at_stop), "a mean of several revisions is not the last");
    let learned_file = dir.path().join("run.state/learned.safetensors");
    let (saved, info) = zero2048_model::weights_file::load(&learned_file, None).unwrap();
    assert_eq!(info.revision, revision, "the learned weights are the latest revision's");
    assert!(same_weights(&saved, &learned_at_stop));
    // Resumed, it learns on from the learned weights, not from the mean it published.
    let run = open(dir.path(), &runtime).unwrap();
    assert!(same_weights(&run.network().unwrap(), &learned_at_stop));
    drop(run);
    // A damaged learned file is refused by name; without one, the run goes on from the mean.
    let bytes = std::fs::read(&learned_file).unwrap();
    std::fs::write(&learned_file, &bytes[..bytes.len() / 2]).unwrap();
    let message =
        open(dir.path(), &runtime).err().expect("a truncated learned file was accepted").to_string();
    assert!(message.contains("learned.safetensors"), "{message}");
    std::fs::remove_file(&learned_file).unwrap();
    let mut run = open(dir.path(), &runtime).unwrap();
    assert!(same_weights(&run.network().unwrap(), &published));
    run.run(Budget { games: Some(50), time: None }, &stop, ONE_THREAD, &mut Quiet).unwrap();
    assert_eq!(
        zero2048_model::weights_file::read_info(&learned_file).unwrap().revision,
        run.counters().revision
    );
    // The new revision is the mean so far moved 2 · (its new games) / (all games) of the way
    // towards the learned weights (power 1), bit for bit.
    let (newest, newest_revision) = latest_published(dir.path(), &runtime);
    assert_eq!(newest_revision, revision + 1);
    let games = run.counters().games;
    let step = (2.0 * 50.0 / games as f64).min(1.0) as f32;
    published.blend_towards(&run.network().unwrap(), step).unwrap();
    assert!(same_weights(&newest, &published), "the fold of {games} games, step {step}");
}

/// Copies every file of `from` into `to` (made if missing), replacing what is there.
fn copy_files(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn a_run_stopped_while_saving_its_state_resumes_from_the_state_before() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stop = AtomicBool::new(false);
    let (state, set_aside) = (dir.path().join("run.state"), dir.path().join("set-aside"));
    let learned_then = {
        let mut run = open(dir.path(), &runtime).unwrap();
        run.run(Budget { games: Some(300), time: None }, &stop, ONE_THREAD, &mut Quiet).unwrap();
        run.network().expect("an n-tuple run").try_clone().unwrap()
    };
    let (_, first_revision) = latest_published(dir.path(), &runtime);
    assert!(state.join("coherence.bin").exists() && state.join("learned.safetensors").exists());
    copy_files(&state, &set_aside);
    let learned_later = {
        let mut run = open(dir.path(), &runtime).unwrap();
        run.run(Budget { games: Some(300), time: None }, &stop, ONE_THREAD, &mut Quiet).unwrap();
        run.network().unwrap().try_clone().unwrap()
    };
    let (published, latest) = latest_published(dir.path(), &runtime);
    assert!(latest > first_revision);
    // The second leg's state lost, as when the disk filled while it was being saved after its
    // last revision had been published: the first leg's files are what the directory holds.
    copy_files(&set_aside, &state);
    let run = open(dir.path(), &runtime).unwrap();
    assert_eq!(run.counters().revision, latest, "the published revisions are kept");
    let resumed = run.network().unwrap();
    assert!(same_weights(&resumed, &learned_then), "learning resumes from the older learned weights");
    assert!(!same_weights(&resumed, &learned_later) && !same_weights(&resumed, &published));
}

#[test]
fn the_last_revision_is_evaluated_even_when_published_during_an_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stop = AtomicBool::new(false);
    // A revision after every take of queued games (256 at most) and an evaluation that outlasts
    // the second take: the second take's revision, the session's last, is published while the
    // first one is still being evaluated, and nothing is left to publish when the session ends.
    let config = TrainConfig {
        revision_every_games: 1,
        evaluation: EvalConfig { games: 2000, seed: 1, depth: 1, threads: 1 },
        ..run_config()
    };
    let mut run = open_with(dir.path(), &runtime, config).unwrap();
    let initial = run.publish_initial().unwrap().expect("a new run publishes its first revision");
    let entries: Vec<BatchEntry> = (0..300)
        .map(|i| BatchEntry {
            uuid: Uuid::from_u128(i as u128 + 1),
            revision: initial.revision,
            origin: None,
            record: Ok(play_game(
                &mut ExpectimaxPlayer::heuristic(greedy()),
                derive_seed(7, i),
                SpawnRule::STANDARD,
            )
            .0),
        })
        .collect();
    let mut uploads = RunDb::open(dir.path().join("run.db")).unwrap().with_games(run.game_shelf());
    let rules = UploadRules { accepted_revisions: &[initial.revision], search: SearchRequirement::Absent };
    let reply = ingest(&mut uploads, "a-worker", &entries, &rules).unwrap();
    assert!(reply.rejected.is_empty(), "{:?}", reply.rejected);
    run.follow_other_ingest();
    let summary =
        run.run(Budget { games: Some(300), time: None }, &stop, SelfPlay::RemoteOnly, &mut Quiet).unwrap();
    let published: Vec<u64> = summary.revisions.iter().map(|r| r.revision).collect();
    let evaluated: Vec<u64> = summary.evaluations.iter().map(|e| e.revision).collect();
    assert_eq!(published.len(), 2, "one revision after each take: {published:?}");
    assert_eq!(evaluated, published, "both revisions are evaluated, the last one at the end");
    let (last_evaluation, last_revision) =
        (summary.evaluations.last().unwrap(), summary.revisions.last().unwrap());
    assert_eq!(
        last_evaluation.games_trained, last_revision.games,
        "evaluated at the games it was published at"
    );
    assert_eq!(last_revision.games, 300);
}

#[test]
fn a_resumed_run_continues_its_revisions_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stop = AtomicBool::new(false);
    // Publishing the learned weights themselves: the resumed network is the published one. The
    // learner takes up to 256 queued games at a time and a revision falls due only between two
    // takes, so on a busy machine 400 games may be learned in two takes: a revision every 60 games
    // still publishes one after each take.
    let config = TrainConfig { published_mean_power: None, revision_every_games: 60, ..run_config() };
    let open =
        |dir: &std::path::Path, runtime: &tokio::runtime::Runtime| open_with(dir, runtime, config.clone());
    let first = {
        let mut run = open(dir.path(), &runtime).unwrap();
        let summary =
            run.run(Budget { games: Some(400), time: None }, &stop, ONE_THREAD, &mut Quiet).unwrap();
        assert!(summary.revisions.len() >= 2, "{} revisions", summary.revisions.len());
        // A revision published while the previous one is still being evaluated is not evaluated
        // (on a busy machine that happens here); the last one always is.
        let published: Vec<u64> = summary.revisions.iter().map(|r| r.revision).collect();
        let evaluated: Vec<u64> = summary.evaluations.iter().map(|e| e.revision).collect();
        assert!(evaluated.iter().all(|r| published.contains(r)), "{evaluated:?} of {published:?}");
        assert_eq!(evaluated.last(), published.last(), "the last revision was not evaluated");
        run.counters()
    };
    assert_eq!(first.games, 400, "a budget of games is kept exactly");
    assert!(first.revision >= 2);

    let (published, revision) = latest_published(dir.path(), &runtime);
    assert_eq!(revision, first.revision);
    assert!(!dir.path().join("run.state/learned.safetensors").exists(), "nothing beside the published");
    let mut run = open(dir.path(), &runtime).unwrap();
    assert_eq!(run.counters(), first, "the database restores every counter");
    // The weights trained so far survive the restart: the resumed network is the published one,
    // weight for weight, and it values positions as the trained network did.
    let board: zero2048_game::Board = "2 4 8 16 | 0 2 0 0 | 0 0 4 0 | 0 0 0 2".parse().unwrap();
    let resumed = run.network().expect("an n-tuple run");
    assert!(same_weights(&resumed, &published));
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

#[test]
fn a_later_stage_opens_when_a_game_reaches_it_and_a_resumed_run_keeps_it_closed_until_then() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stop = AtomicBool::new(false);
    let staged = |stage_tile| TrainConfig {
        network: NTupleConfig { stages: 2, stage_tile, ..NTupleConfig::small_4x4() },
        ..run_config()
    };
    let stage_tables_equal = |network: &NTupleNetwork| {
        let tuples = network.config().tuples.len();
        (0..tuples).all(|t| network.tables()[t].iter().eq(network.tables()[tuples + t].iter()))
    };
    // 256 is reached within the first games: the second stage opens and learns apart.
    let reached = tempfile::tempdir().unwrap();
    {
        let mut run = open_with(reached.path(), &runtime, staged(8)).unwrap();
        assert_eq!(run.network().unwrap().open_stages(), 1, "a run from zero starts with one stage open");
        run.run(Budget { games: Some(300), time: None }, &stop, ONE_THREAD, &mut Quiet).unwrap();
        assert_eq!(run.network().unwrap().open_stages(), 2);
    }
    let (published, _) = latest_published(reached.path(), &runtime);
    assert_eq!(published.open_stages(), 2);
    assert!(!stage_tables_equal(&published), "the second stage learned its own boards");
    // 32768 is not: the published files hold the first stage in the second's place and say so,
    // and a resumed run keeps the second stage closed.
    let unreached = tempfile::tempdir().unwrap();
    {
        let mut run = open_with(unreached.path(), &runtime, staged(15)).unwrap();
        run.run(Budget { games: Some(200), time: None }, &stop, ONE_THREAD, &mut Quiet).unwrap();
    }
    let (published, _) = latest_published(unreached.path(), &runtime);
    assert_eq!(published.open_stages(), 1);
    assert!(stage_tables_equal(&published));
    let run = open_with(unreached.path(), &runtime, staged(15)).unwrap();
    assert_eq!(run.network().unwrap().open_stages(), 1, "the resumed learner keeps its closed stage");
}
