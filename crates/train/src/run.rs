//! A training run: self-play threads feed game records to the TD learner; every so many games or
//! seconds the learner's weights become a revision, published through the storage adapter,
//! recorded in the run database, evaluated on fixed seeds, and handed to the self-play threads.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zero2048_game::SpawnRule;
use zero2048_model::{NTupleConfig, NTupleNetwork, weights_file};
use zero2048_search::Strength;
use zero2048_selfplay::{CurrentModel, SelfPlayConfig};
use zero2048_storage::{LatestDetails, StorageAdapter, WeightsData, hash_file};

use crate::db::{Counters, EvaluationRow, RevisionRow, RunDb};
use crate::evaluation::{EvalConfig, evaluate};
use crate::learner::{TdConfig, TdLearner};

/// Everything a run is configured with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// The network's shape (for a new run; a resumed run keeps its own).
    pub network: NTupleConfig,
    /// The learner.
    pub td: TdConfig,
    /// Self-play threads (0 = one per core, less one for the learner).
    pub selfplay_threads: usize,
    /// Run seed.
    pub seed: u64,
    /// Publish a revision after this many games...
    pub revision_every_games: u64,
    /// ...or this many seconds, whichever comes first.
    pub revision_every_seconds: f64,
    /// Hand self-play a fresh copy of the learner's weights every this many games (without
    /// publishing), so the games it plays follow the policy being learned.
    pub selfplay_sync_games: u64,
    /// Evaluate every this many revisions (0 = never), and always the last one.
    pub evaluate_every_revisions: u64,
    /// The evaluation suite.
    pub evaluation: EvalConfig,
    /// Seconds the latest record stays valid.
    pub deadline_seconds: u64,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            network: NTupleConfig::standard_4x6(),
            td: TdConfig::default(),
            selfplay_threads: 0,
            seed: 2048,
            revision_every_games: 20_000,
            revision_every_seconds: 300.0,
            selfplay_sync_games: 1000,
            evaluate_every_revisions: 1,
            evaluation: EvalConfig::default(),
            deadline_seconds: 24 * 3600,
        }
    }
}

/// When to stop, besides a stop request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Budget {
    /// Games to learn from in this session.
    pub games: Option<u64>,
    /// Wall time for this session.
    pub time: Option<Duration>,
}

/// A snapshot for progress displays.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Progress {
    /// Games learned, whole run.
    pub games: u64,
    /// Moves learned, whole run.
    pub moves: u64,
    /// Games learned this session.
    pub session_games: u64,
    /// Last published revision.
    pub revision: u64,
    /// Learned moves per second this session.
    pub moves_per_second: f64,
    /// Mean score of the last 1000 games learned.
    pub recent_mean_score: f64,
    /// Share of those that reached 2048.
    pub recent_2048_rate: f64,
    /// Games until the next revision (by count).
    pub games_to_next_revision: u64,
    /// The latest evaluation.
    pub last_evaluation: Option<EvaluationRow>,
    /// Seconds this session.
    pub elapsed_seconds: f64,
}

/// What a session did.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Final progress.
    pub progress: Progress,
    /// Revisions published this session.
    pub revisions: Vec<RevisionRow>,
    /// Evaluations made this session.
    pub evaluations: Vec<EvaluationRow>,
}

/// A run failing.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Storage trouble.
    #[error(transparent)]
    Storage(#[from] zero2048_storage::StorageError),
    /// Database trouble.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// A weights file that cannot be used.
    #[error(transparent)]
    Weights(#[from] zero2048_model::WeightsFileError),
    /// The network could not be made.
    #[error(transparent)]
    Network(#[from] zero2048_model::NetworkError),
    /// Resuming is impossible as asked.
    #[error("cannot resume: {0}")]
    Resume(String),
    /// Local file trouble.
    #[error("{action} {path}: {source}")]
    Io {
        /// What.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A run, opened and ready to train.
pub struct TrainingRun {
    config: TrainConfig,
    adapter: Arc<StorageAdapter>,
    runtime: tokio::runtime::Handle,
    db: RunDb,
    learner: TdLearner,
    counters: Counters,
    scratch: PathBuf,
}

impl TrainingRun {
    /// Opens a run: resumes from the latest published revision when there is one (its file
    /// verified against the record's SHA-256), or from `resume_from`, else starts from zero.
    pub fn open(
        config: TrainConfig,
        adapter: Arc<StorageAdapter>,
        runtime: tokio::runtime::Handle,
        db_path: &Path,
        resume_from: Option<&Path>,
    ) -> Result<TrainingRun, TrainError> {
        let db = RunDb::open(db_path)?;
        let mut counters = db.counters()?;
        let latest = runtime.block_on(adapter.read_latest_info())?;
        let network = if let Some(path) = resume_from {
            let (network, info) = weights_file::load(path, None)?;
            tracing::info!("starting from {} (revision {} of its run)", path.display(), info.revision);
            network
        } else if let Some(latest) = &latest {
            let name = zero2048_storage::WeightsName::parse(&latest.weights_file)
                .map_err(|e| TrainError::Resume(e.to_string()))?;
            let path = adapter.local().path_of(&name);
            let (sha256, size) = hash_file(&path).map_err(|source| TrainError::Io {
                action: "hashing",
                path: path.clone(),
                source,
            })?;
            if sha256 != latest.weights_sha256 || size != latest.weights_size {
                return Err(TrainError::Resume(format!(
                    "{} does not match the latest record (sha256 {sha256}, {size} bytes; the record says {}, {} \
                     bytes); use --reset to start over",
                    path.display(),
                    latest.weights_sha256,
                    latest.weights_size
                )));
            }
            let (network, _) = weights_file::load(&path, None)?;
            counters.revision = counters.revision.max(latest.revision);
            network
        } else {
            NTupleNetwork::zeroed(config.network.clone())?
        };
        db.set_setting("network", &serde_json::to_string(network.config()).unwrap_or_default())?;
        let learner = TdLearner::new(network, config.td)?;
        let scratch = adapter.local().dir().to_path_buf();
        Ok(TrainingRun { config, adapter, runtime, db, learner, counters, scratch })
    }

    /// The totals so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The network being trained.
    pub fn network(&self) -> &NTupleNetwork {
        self.learner.network()
    }

    /// The run database.
    pub fn db(&self) -> &RunDb {
        &self.db
    }

    /// Trains until the budget is spent or `stop` is set, then publishes what was learned since
    /// the last revision. Games already played when stopping are learned, not thrown away.
    pub fn run(
        &mut self,
        budget: Budget,
        stop: &AtomicBool,
        on_progress: &mut dyn FnMut(&Progress),
    ) -> Result<Summary, TrainError> {
        let started = Instant::now();
        let rule = SpawnRule::STANDARD;
        let model = CurrentModel::new(self.counters.revision, Arc::new(self.learner.network().try_clone()?));
        let selfplay_stop = Arc::new(AtomicBool::new(false));
        let (sender, games) = sync_channel(64);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = zero2048_selfplay::spawn(
            SelfPlayConfig {
                threads: if self.config.selfplay_threads == 0 {
                    (cores - 1).max(1)
                } else {
                    self.config.selfplay_threads
                },
                depth: 1,
                rule,
                seed: zero2048_game::derive_seed(self.config.seed, self.counters.revision),
            },
            model.clone(),
            sender,
            Arc::clone(&selfplay_stop),
        );
        let mut session_games = 0u64;
        let mut session_moves = 0u64;
        let mut since_revision = 0u64;
        let mut since_sync = 0u64;
        // The snapshot self-play used before the current one, reused once no player holds it.
        let mut spare: Option<Arc<NTupleNetwork>> = None;
        let mut revision_clock = Instant::now();
        let mut recent: VecDeque<(u64, u32)> = VecDeque::with_capacity(1000);
        let mut revisions = Vec::new();
        let mut evaluations = Vec::new();
        let mut last_evaluation: Option<EvaluationRow> = None;
        let mut last_report = Instant::now();
        let mut stopping = false;
        let every_games = self.config.revision_every_games;
        let progress = |counters: &Counters,
                        session_games,
                        session_moves,
                        since_revision,
                        recent: &VecDeque<(u64, u32)>,
                        last_evaluation: &Option<EvaluationRow>| {
            let elapsed = started.elapsed().as_secs_f64();
            let n = recent.len().max(1) as f64;
            Progress {
                games: counters.games,
                moves: counters.moves,
                session_games,
                revision: counters.revision,
                moves_per_second: session_moves as f64 / elapsed.max(1e-9),
                recent_mean_score: recent.iter().map(|r| r.0 as f64).sum::<f64>() / n,
                recent_2048_rate: recent.iter().filter(|r| r.1 >= 2048).count() as f64 / n,
                games_to_next_revision: every_games.saturating_sub(since_revision),
                last_evaluation: last_evaluation.clone(),
                elapsed_seconds: elapsed,
            }
        };
        loop {
            let out_of_budget = budget.games.is_some_and(|g| session_games >= g)
                || budget.time.is_some_and(|t| started.elapsed() >= t);
            if !stopping && (out_of_budget || stop.load(Ordering::Relaxed)) {
                stopping = true;
                selfplay_stop.store(true, Ordering::Relaxed);
            }
            match games.recv_timeout(Duration::from_millis(100)) {
                Ok(game) => match self.learner.learn(&game.record) {
                    Ok(learned) => {
                        self.counters.games += 1;
                        self.counters.moves += learned.moves as u64;
                        self.counters.score_sum += learned.score;
                        session_games += 1;
                        session_moves += learned.moves as u64;
                        since_revision += 1;
                        since_sync += 1;
                        if recent.len() == 1000 {
                            recent.pop_front();
                        }
                        recent.push_back((learned.score, learned.max_tile));
                    }
                    Err(e) => tracing::warn!("a self-play record failed verification and was skipped: {e}"),
                },
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let due = since_revision >= self.config.revision_every_games
                || (since_revision > 0
                    && revision_clock.elapsed().as_secs_f64() >= self.config.revision_every_seconds);
            if due && !stopping {
                let row = self.publish(&model)?;
                revisions.push(row);
                since_revision = 0;
                revision_clock = Instant::now();
                let every = self.config.evaluate_every_revisions;
                if every > 0 && self.counters.revision.is_multiple_of(every) {
                    let evaluation = self.evaluate(&model)?;
                    last_evaluation = Some(evaluation.clone());
                    evaluations.push(evaluation);
                }
            }
            if since_sync >= self.config.selfplay_sync_games.max(1) && !stopping {
                let snapshot = match spare
                    .take()
                    .map(|mut old| Arc::get_mut(&mut old).is_some().then_some(old))
                {
                    Some(Some(mut old)) => {
                        Arc::get_mut(&mut old).expect("checked unique").copy_from(self.learner.network())?;
                        old
                    }
                    _ => Arc::new(self.learner.network().try_clone()?),
                };
                spare = Some(model.set(self.counters.revision, snapshot));
                since_sync = 0;
            }
            if last_report.elapsed() >= Duration::from_millis(250) {
                on_progress(&progress(
                    &self.counters,
                    session_games,
                    session_moves,
                    since_revision,
                    &recent,
                    &last_evaluation,
                ));
                last_report = Instant::now();
            }
        }
        for thread in threads {
            let _ = thread.join();
        }
        if since_revision > 0 {
            revisions.push(self.publish(&model)?);
            if self.config.evaluate_every_revisions > 0 {
                let evaluation = self.evaluate(&model)?;
                last_evaluation = Some(evaluation.clone());
                evaluations.push(evaluation);
            }
        }
        let final_progress =
            progress(&self.counters, session_games, session_moves, 0, &recent, &last_evaluation);
        on_progress(&final_progress);
        Ok(Summary { progress: final_progress, revisions, evaluations })
    }

    /// Snapshots the weights as the next revision and publishes them.
    fn publish(&mut self, model: &CurrentModel) -> Result<RevisionRow, TrainError> {
        let revision = self.counters.revision + 1;
        let snapshot = self.learner.network().try_clone()?;
        let temp = self.scratch.join(format!(".tmp-train-r{revision}-{}.safetensors", std::process::id()));
        let mut extra = BTreeMap::new();
        extra.insert("games_trained".to_string(), self.counters.games.to_string());
        extra.insert("moves_trained".to_string(), self.counters.moves.to_string());
        extra.insert("learning_rate".to_string(), self.config.td.learning_rate.to_string());
        extra.insert("coherence".to_string(), self.config.td.coherence.to_string());
        let saved = weights_file::save(&snapshot, &temp, revision, &extra);
        let published = saved.map_err(TrainError::from).and_then(|()| {
            let deadline = OffsetDateTime::now_utc() + time::Duration::seconds(self.config.deadline_seconds as i64);
            let details = LatestDetails {
                model: serde_json::json!({ "kind": "ntuple", "tuples": snapshot.config().tuples,
                                           "stages": snapshot.config().stages, "stage_tile": snapshot.config().stage_tile }),
                selfplay: serde_json::json!({ "depth": 1, "four_probability": SpawnRule::STANDARD.four_probability() }),
                accepted_revisions: (revision.saturating_sub(2).max(1)..=revision).collect(),
                min_worker_version: env!("CARGO_PKG_VERSION").to_string(),
            };
            Ok(self.runtime.block_on(self.adapter.publish(WeightsData::File(temp.clone()), revision, deadline, &details))?)
        });
        let _ = std::fs::remove_file(&temp);
        let latest = published?;
        self.counters.revision = revision;
        let row = RevisionRow {
            revision,
            file: latest.weights_file.clone(),
            sha256: latest.weights_sha256.clone(),
            size: latest.weights_size,
            games: self.counters.games,
            moves: self.counters.moves,
            published_at: latest
                .published_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        };
        self.db.record_revision(&row, &self.counters)?;
        let _ = model.set(revision, Arc::new(snapshot));
        Ok(row)
    }

    fn evaluate(&mut self, model: &CurrentModel) -> Result<EvaluationRow, TrainError> {
        let (revision, network) = model.get();
        let strength: Strength = evaluate(network, &self.config.evaluation, SpawnRule::STANDARD);
        let row = EvaluationRow {
            revision,
            depth: self.config.evaluation.depth,
            seed: self.config.evaluation.seed,
            games_trained: self.counters.games,
            strength,
        };
        self.db.record_evaluation(&row)?;
        Ok(row)
    }
}
