//! A training run: self-play threads feed game records to the TD learner; every so many games or
//! seconds the learner's weights become a revision, published through the storage adapter,
//! recorded in the run database, evaluated on fixed seeds, and handed to the self-play threads.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zero2048_game::{GameRecord, SpawnRule};
use zero2048_model::{NTupleConfig, NTupleNetwork, PolicyValueConfig, PolicyValueNet, weights_file};
use zero2048_protocol::{BatchEntry, Claims, SearchRequirement, new_game_uuid};
use zero2048_search::Strength;
use zero2048_search::mcts::{MctsConfig, play_series};
use zero2048_selfplay::{CurrentModel, MctsSelfPlayConfig, PlayedGame, SelfPlayConfig};
use zero2048_storage::{LatestDetails, LatestInfo, StorageAdapter, WeightsData};

use crate::db::{Counters, EvaluationRow, RevisionRow, RunDb};
use crate::evaluation::{EvalConfig, evaluate};
use crate::ingest::{accepted_revisions, ingest};
use crate::zero::{ZeroConfig, ZeroLearner};

/// Which model a run trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// The n-tuple network, learned by TD and played with expectimax.
    #[default]
    Ntuple,
    /// The policy-value network, learned from MCTS statistics and played with MCTS.
    PolicyValue,
}

impl ModelKind {
    /// The name in weights files and latest records.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Ntuple => "ntuple",
            ModelKind::PolicyValue => "policy_value",
        }
    }
}

/// The revisions accepted while `current` is the latest: the configured window, and every
/// revision superseded within the grace period (a revision is superseded when the next one is
/// published; `current` itself is never superseded).
fn accepted_now(db: &RunDb, current: u64, config: &TrainConfig) -> Result<Vec<u64>, TrainError> {
    let mut accepted = accepted_revisions(current, config.accepted_revisions_window);
    let grace = time::Duration::seconds(config.accepted_revisions_seconds as i64);
    let now = OffsetDateTime::now_utc();
    let rows = db.revisions()?;
    let published = |revision: u64| {
        rows.iter().find(|r| r.revision == revision).and_then(|r| {
            OffsetDateTime::parse(&r.published_at, &time::format_description::well_known::Rfc3339).ok()
        })
    };
    for revision in (0..current).rev().take(1000) {
        if accepted.contains(&revision) {
            continue;
        }
        // Superseded when revision + 1 appeared (now, for the one `current` replaces).
        let superseded = if revision + 1 == current { Some(now) } else { published(revision + 1) };
        match superseded {
            Some(at) if now - at <= grace => accepted.push(revision),
            _ => break,
        }
    }
    accepted.sort_unstable();
    Ok(accepted)
}

/// The worker name under which in-process self-play games are stored.
pub const LOCAL_WORKER: &str = "local";
use crate::learner::{TdConfig, TdLearner};

/// Everything a run is configured with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// The model this run trains (a resumed run must keep its kind).
    pub model: ModelKind,
    /// The n-tuple network's shape (for a new run; a resumed run keeps its own).
    pub network: NTupleConfig,
    /// The policy-value network's shape (for a new policy-value run).
    pub policy_value: PolicyValueConfig,
    /// The search of policy-value self-play and evaluation (sent to workers).
    pub mcts: MctsConfig,
    /// How the policy-value network learns.
    pub zero: ZeroConfig,
    /// Games each MCTS self-play thread plays at once (the network's batch size).
    pub mcts_parallel_games: usize,
    /// Games of each policy-value evaluation (MCTS games are slower than the n-tuple's).
    pub mcts_evaluation_games: usize,
    /// The learner.
    pub td: TdConfig,
    /// Self-play threads (0 = one per core, less one for the learner).
    pub selfplay_threads: usize,
    /// Own moves searched per self-play move, by local threads and (through the latest record)
    /// by every worker: 1 = greedy on the learned value, the TD standard.
    pub selfplay_depth: u32,
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
    /// Games from this many latest revisions are accepted (the latest record lists them)...
    pub accepted_revisions_window: u64,
    /// ...and from any revision superseded less than this many seconds ago, so a fleet's games
    /// in flight are not thrown away when revisions come quickly.
    pub accepted_revisions_seconds: u64,
    /// In-process self-play pauses while this many of its games wait to be learned.
    pub local_backlog_games: u64,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            model: ModelKind::Ntuple,
            network: NTupleConfig::standard_4x6(),
            policy_value: PolicyValueConfig::default(),
            mcts: MctsConfig::default(),
            zero: ZeroConfig::default(),
            mcts_parallel_games: 64,
            mcts_evaluation_games: 32,
            td: TdConfig::default(),
            selfplay_threads: 0,
            selfplay_depth: 1,
            seed: 2048,
            revision_every_games: 20_000,
            revision_every_seconds: 300.0,
            selfplay_sync_games: 1000,
            evaluate_every_revisions: 1,
            evaluation: EvalConfig::default(),
            deadline_seconds: 24 * 3600,
            accepted_revisions_window: 3,
            accepted_revisions_seconds: 900,
            local_backlog_games: 256,
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
    /// Learned games per second this session.
    pub games_per_second: f64,
    /// Games stored but not learned yet.
    pub backlog: u64,
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
    /// The policy-value learner failed.
    #[error("policy-value learner: {0}")]
    Zero(String),
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

/// Receives what a run does as it does it.
pub trait RunObserver {
    /// A progress snapshot, a few times a second.
    fn progress(&mut self, _progress: &Progress) {}
}

/// What a running run shares with the threads around it (the server's handlers, the local uplink):
/// lock-free counters and the latest snapshots.
#[derive(Default)]
pub struct LiveState {
    /// The latest published revision.
    pub revision: AtomicU64,
    /// The id of the last game learned.
    pub learned_through: AtomicU64,
    /// The id of the last game stored (as far as the writers report it).
    pub stored_through: AtomicU64,
    latest: Mutex<Option<LatestInfo>>,
    progress: Mutex<Progress>,
    accepted: Mutex<Vec<u64>>,
    /// Simulations every uploaded move's statistics must sum to; 0 when games carry none.
    search_simulations: std::sync::atomic::AtomicU32,
}

impl LiveState {
    /// The latest record, as last published.
    pub fn latest(&self) -> Option<LatestInfo> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the latest record (after a publication or a refresh of its URL).
    pub fn set_latest(&self, latest: LatestInfo) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(latest);
    }

    /// The revisions whose games are accepted now.
    pub fn accepted(&self) -> Vec<u64> {
        let accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if accepted.is_empty() { vec![self.revision.load(Ordering::Relaxed)] } else { accepted }
    }

    /// What uploaded games' search statistics must be.
    pub fn search_requirement(&self) -> SearchRequirement {
        match self.search_simulations.load(Ordering::Relaxed) {
            0 => SearchRequirement::Absent,
            simulations => SearchRequirement::Mcts { simulations },
        }
    }

    fn set_accepted(&self, accepted: Vec<u64>) {
        *self.accepted.lock().unwrap_or_else(|e| e.into_inner()) = accepted;
    }

    /// The last progress snapshot.
    pub fn progress(&self) -> Progress {
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_progress(&self, progress: &Progress) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = progress.clone();
    }
}

struct LocalWorkers {
    selfplay: Vec<JoinHandle<u64>>,
    uplink: JoinHandle<Result<(), TrainError>>,
}

/// The learner of either kind.
enum Learner {
    Td(TdLearner),
    Zero(Box<ZeroLearner>),
}

/// What self-play threads in this process play with.
enum LocalModel {
    Ntuple(CurrentModel<NTupleNetwork>),
    PolicyValue(CurrentModel<PolicyValueNet>),
}

impl LocalModel {
    fn revision(&self) -> u64 {
        match self {
            LocalModel::Ntuple(m) => m.revision(),
            LocalModel::PolicyValue(m) => m.revision(),
        }
    }
}

/// A run, opened and ready to train.
pub struct TrainingRun {
    config: TrainConfig,
    adapter: Arc<StorageAdapter>,
    runtime: tokio::runtime::Handle,
    db: RunDb,
    db_path: PathBuf,
    live: Arc<LiveState>,
    learner: Learner,
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
        match db.setting("model")? {
            Some(kind) if kind != config.model.name() => {
                return Err(TrainError::Resume(format!(
                    "this run trains the `{kind}` model, not `{}`; keep its kind, or start over with --reset",
                    config.model.name()
                )));
            }
            Some(_) => {}
            None => db.set_setting("model", config.model.name())?,
        }
        let latest = runtime.block_on(adapter.read_latest_info())?;
        let latest_file = match &latest {
            Some(latest) if resume_from.is_none() => {
                Some(adapter.local().checked_latest_file(latest).map_err(|e| {
                    TrainError::Resume(format!(
                        "the latest revision's weights fail their check: {e}; use --reset to start over"
                    ))
                })?)
            }
            _ => None,
        };
        let start_file = resume_from.map(Path::to_path_buf).or(latest_file);
        if let Some(latest) = &latest {
            counters.revision = counters.revision.max(latest.revision);
        }
        let learner = match config.model {
            ModelKind::Ntuple => {
                let network = match &start_file {
                    Some(path) => {
                        let (network, info) = weights_file::load(path, None)?;
                        tracing::info!(
                            "starting from {} (revision {} of its run)",
                            path.display(),
                            info.revision
                        );
                        network
                    }
                    None => NTupleNetwork::zeroed(config.network.clone())?,
                };
                db.set_setting("network", &serde_json::to_string(network.config()).unwrap_or_default())?;
                Learner::Td(TdLearner::new(network, config.td)?)
            }
            ModelKind::PolicyValue => {
                config.mcts.validate().map_err(|e| TrainError::Zero(format!("mcts: {e}")))?;
                let network = match &start_file {
                    Some(path) => {
                        let (network, info) = PolicyValueNet::load(path)?;
                        tracing::info!(
                            "starting from {} (revision {} of its run)",
                            path.display(),
                            info.revision
                        );
                        network
                    }
                    None => {
                        PolicyValueNet::new(config.policy_value, config.seed).map_err(TrainError::Zero)?
                    }
                };
                db.set_setting("network", &serde_json::to_string(network.config()).unwrap_or_default())?;
                let mut learner = ZeroLearner::new(&network, config.zero).map_err(TrainError::Zero)?;
                // The replay window as it was: the newest games already learned.
                let window_games = (config.zero.replay_positions / 200).max(1);
                let from = counters.learned_through.saturating_sub(window_games as u64 * 4);
                for game in db.games_after(from, window_games * 4)? {
                    if game.id > counters.learned_through {
                        break;
                    }
                    if let Ok(record) = GameRecord::decode(&game.record) {
                        let _ = learner.remember(&record);
                    }
                }
                Learner::Zero(Box::new(learner))
            }
        };
        let scratch = adapter.local().dir().to_path_buf();
        let live = Arc::new(LiveState::default());
        if config.model == ModelKind::PolicyValue {
            live.search_simulations.store(config.mcts.simulations, Ordering::Relaxed);
        }
        live.revision.store(counters.revision, Ordering::Relaxed);
        live.learned_through.store(counters.learned_through, Ordering::Relaxed);
        live.stored_through.store(db.last_game_id()?, Ordering::Relaxed);
        if let Some(latest) = latest {
            live.set_latest(latest);
        }
        live.set_accepted(accepted_now(&db, counters.revision, &config)?);
        let db_path = db_path.to_path_buf();
        Ok(TrainingRun { config, adapter, runtime, db, db_path, live, learner, counters, scratch })
    }

    /// What the run shares with other threads while it runs.
    pub fn live(&self) -> Arc<LiveState> {
        Arc::clone(&self.live)
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Where the run database is.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// The totals so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// What is being trained, in a few words.
    pub fn model_name(&self) -> String {
        match &self.learner {
            Learner::Td(td) => zero2048_search::Evaluator::name(td.network()).to_string(),
            Learner::Zero(_) => {
                let c = &self.config.policy_value;
                format!(
                    "policy-value network ({} filters × {} blocks) with MCTS of {} simulations",
                    c.filters, c.blocks, self.config.mcts.simulations
                )
            }
        }
    }

    /// The n-tuple network being trained (`None` in a policy-value run).
    pub fn network(&self) -> Option<&NTupleNetwork> {
        match &self.learner {
            Learner::Td(td) => Some(td.network()),
            Learner::Zero(_) => None,
        }
    }

    /// The run database.
    pub fn db(&self) -> &RunDb {
        &self.db
    }

    /// Trains until the budget is spent or `stop` is set, then publishes what was learned since
    /// the last revision, with self-play threads in this process feeding the learner (the local
    /// main job). Games already played when stopping are learned, not thrown away.
    pub fn run(
        &mut self,
        budget: Budget,
        stop: &AtomicBool,
        on_progress: &mut dyn FnMut(&Progress),
    ) -> Result<Summary, TrainError> {
        struct Callback<'a>(&'a mut dyn FnMut(&Progress));
        impl RunObserver for Callback<'_> {
            fn progress(&mut self, progress: &Progress) {
                (self.0)(progress)
            }
        }
        self.run_with(budget, stop, true, &mut Callback(on_progress))
    }

    /// The learner loop. It learns every stored game after its cursor, in arrival order, whoever
    /// sent it: in-process self-play threads when `local_selfplay` is set, and the server's upload
    /// endpoint writing to the same database. With local self-play, stopping learns the games
    /// in flight first; without, it stops at once (the games not learned yet stay stored and are
    /// learned after the next start). Either way it publishes what it learned since the last
    /// revision.
    pub fn run_with(
        &mut self,
        budget: Budget,
        stop: &AtomicBool,
        local_selfplay: bool,
        observer: &mut dyn RunObserver,
    ) -> Result<Summary, TrainError> {
        let started = Instant::now();
        let model = match &self.learner {
            Learner::Td(td) => LocalModel::Ntuple(CurrentModel::new(
                self.counters.revision,
                Arc::new(td.network().try_clone()?),
            )),
            Learner::Zero(zero) => LocalModel::PolicyValue(CurrentModel::new(
                self.counters.revision,
                Arc::new(zero.snapshot().map_err(TrainError::Zero)?),
            )),
        };
        let selfplay_stop = Arc::new(AtomicBool::new(false));
        let local =
            if local_selfplay { Some(self.start_local_workers(&model, &selfplay_stop)?) } else { None };
        let mut cursor = self.counters.learned_through;
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
                        backlog,
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
                games_per_second: session_games as f64 / elapsed.max(1e-9),
                recent_mean_score: recent.iter().map(|r| r.0 as f64).sum::<f64>() / n,
                recent_2048_rate: recent.iter().filter(|r| r.1 >= 2048).count() as f64 / n,
                games_to_next_revision: every_games.saturating_sub(since_revision),
                backlog,
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
            if stopping && local.is_none() {
                break;
            }
            let games = self.db.games_after(cursor, 256)?;
            if games.is_empty() {
                let producers_done = local.as_ref().is_none_or(|l| l.uplink.is_finished());
                if stopping && producers_done && self.db.games_after(cursor, 1)?.is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            for game in &games {
                cursor = game.id;
                let learned =
                    GameRecord::decode(&game.record).map_err(|e| e.to_string()).and_then(|record| {
                        match &mut self.learner {
                            Learner::Td(td) => td.learn(&record).map_err(|e| e.to_string()),
                            Learner::Zero(zero) => zero.learn(&record),
                        }
                    });
                match learned {
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
                    Err(e) => {
                        tracing::warn!("stored game {} could not be learned and was skipped: {e}", game.id)
                    }
                }
            }
            self.counters.learned_through = cursor;
            self.live.learned_through.store(cursor, Ordering::Relaxed);
            let due = since_revision >= self.config.revision_every_games
                || (since_revision > 0
                    && revision_clock.elapsed().as_secs_f64() >= self.config.revision_every_seconds);
            if due && !stopping {
                let row = self.publish(Some(&model))?;
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
            if local.is_some() && since_sync >= self.config.selfplay_sync_games.max(1) && !stopping {
                match (&model, &self.learner) {
                    (LocalModel::Ntuple(model), Learner::Td(td)) => {
                        let snapshot = match spare
                            .take()
                            .map(|mut old| Arc::get_mut(&mut old).is_some().then_some(old))
                        {
                            Some(Some(mut old)) => {
                                Arc::get_mut(&mut old).expect("checked unique").copy_from(td.network())?;
                                old
                            }
                            _ => Arc::new(td.network().try_clone()?),
                        };
                        spare = Some(model.set(self.counters.revision, snapshot));
                    }
                    (LocalModel::PolicyValue(model), Learner::Zero(zero)) => {
                        model.set(
                            self.counters.revision,
                            Arc::new(zero.snapshot().map_err(TrainError::Zero)?),
                        );
                    }
                    _ => unreachable!("the local model has the learner's kind"),
                }
                since_sync = 0;
            }
            if last_report.elapsed() >= Duration::from_millis(250) {
                let backlog = self.live.stored_through.load(Ordering::Relaxed).saturating_sub(cursor);
                let now = progress(
                    &self.counters,
                    session_games,
                    session_moves,
                    since_revision,
                    backlog,
                    &recent,
                    &last_evaluation,
                );
                self.live.set_progress(&now);
                observer.progress(&now);
                last_report = Instant::now();
            }
        }
        selfplay_stop.store(true, Ordering::Relaxed);
        if let Some(local) = local {
            for thread in local.selfplay {
                let _ = thread.join();
            }
            match local.uplink.join() {
                Ok(result) => result?,
                Err(_) => tracing::error!("the local uplink thread panicked"),
            }
        }
        if since_revision > 0 {
            revisions.push(self.publish(Some(&model))?);
            if self.config.evaluate_every_revisions > 0 {
                let evaluation = self.evaluate(&model)?;
                last_evaluation = Some(evaluation.clone());
                evaluations.push(evaluation);
            }
        }
        let backlog = self.db.last_game_id()?.saturating_sub(cursor);
        let final_progress =
            progress(&self.counters, session_games, session_moves, 0, backlog, &recent, &last_evaluation);
        self.live.set_progress(&final_progress);
        observer.progress(&final_progress);
        Ok(Summary { progress: final_progress, revisions, evaluations })
    }

    /// Publishes the network as revision 1 when the run has none, so remote workers have
    /// something to play before any game is learned. Returns the revision if it published one.
    pub fn publish_initial(&mut self) -> Result<Option<RevisionRow>, TrainError> {
        if self.counters.revision > 0 {
            return Ok(None);
        }
        self.publish(None).map(Some)
    }

    /// Self-play threads and the uplink thread that verifies and stores their games.
    fn start_local_workers(
        &mut self,
        model: &LocalModel,
        stop: &Arc<AtomicBool>,
    ) -> Result<LocalWorkers, TrainError> {
        let (sender, games) = sync_channel::<PlayedGame>(256);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads =
            if self.config.selfplay_threads == 0 { (cores - 1).max(1) } else { self.config.selfplay_threads };
        let seed = zero2048_game::derive_seed(
            self.config.seed,
            (self.counters.revision << 32) ^ self.counters.learned_through,
        );
        let selfplay = match model {
            LocalModel::Ntuple(model) => zero2048_selfplay::spawn(
                SelfPlayConfig {
                    threads,
                    depth: self.config.selfplay_depth.max(1),
                    rule: SpawnRule::STANDARD,
                    seed,
                },
                model.clone(),
                sender,
                Arc::clone(stop),
            ),
            LocalModel::PolicyValue(model) => zero2048_selfplay::spawn_mcts(
                MctsSelfPlayConfig {
                    threads,
                    parallel: self.config.mcts_parallel_games.max(1),
                    search: self.config.mcts,
                    rule: SpawnRule::STANDARD,
                    seed,
                },
                model.clone(),
                sender,
                Arc::clone(stop),
            ),
        };
        let mut db = RunDb::open(&self.db_path)?;
        let live = Arc::clone(&self.live);
        let max_backlog = self.config.local_backlog_games.max(1);
        let stop = Arc::clone(stop);
        let uplink = std::thread::Builder::new()
            .name("local-uplink".into())
            .spawn(move || -> Result<(), TrainError> {
                let mut batch = Vec::with_capacity(64);
                while let Ok(game) = games.recv() {
                    batch.push(game);
                    while batch.len() < 64 {
                        match games.try_recv() {
                            Ok(game) => batch.push(game),
                            Err(_) => break,
                        }
                    }
                    let entries: Vec<BatchEntry> = batch
                        .drain(..)
                        .map(|game| {
                            // What the player saw; `ingest` checks it against its own replay.
                            let claims = Claims {
                                score: game.score,
                                moves: game.record.steps.len() as u32,
                                max_tile: game.max_tile,
                            };
                            BatchEntry {
                                uuid: new_game_uuid(rand::random()),
                                revision: game.revision,
                                claims,
                                record: Ok(game.record),
                            }
                        })
                        .collect();
                    let accepted = live.accepted();
                    let reply =
                        ingest(&mut db, LOCAL_WORKER, &entries, &accepted, live.search_requirement())?;
                    for rejection in &reply.rejected {
                        tracing::warn!("a local self-play game was refused: {}", rejection.reason);
                    }
                    let stored = db.last_game_id()?;
                    live.stored_through.fetch_max(stored, Ordering::Relaxed);
                    // Self-play must not run far ahead of learning: its games would come from an
                    // ever older snapshot.
                    while stored.saturating_sub(live.learned_through.load(Ordering::Relaxed)) > max_backlog
                        && !stop.load(Ordering::Relaxed)
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Ok(())
            })
            .map_err(|source| TrainError::Io { action: "starting", path: "local-uplink".into(), source })?;
        Ok(LocalWorkers { selfplay, uplink })
    }

    /// Snapshots the weights as the next revision and publishes them.
    fn publish(&mut self, model: Option<&LocalModel>) -> Result<RevisionRow, TrainError> {
        let revision = self.counters.revision + 1;
        // The revision being superseded now counts as superseded this instant.
        let accepted = accepted_now(&self.db, revision, &self.config)?;
        let temp = self.scratch.join(format!(".tmp-train-r{revision}-{}.safetensors", std::process::id()));
        let mut extra = BTreeMap::new();
        extra.insert("games_trained".to_string(), self.counters.games.to_string());
        extra.insert("moves_trained".to_string(), self.counters.moves.to_string());
        let four = SpawnRule::STANDARD.four_probability();
        let (snapshot, saved, model_json, selfplay_json) = match &self.learner {
            Learner::Td(td) => {
                extra.insert("learning_rate".to_string(), self.config.td.learning_rate.to_string());
                extra.insert("coherence".to_string(), self.config.td.coherence.to_string());
                let snapshot = td.network().try_clone()?;
                let saved = weights_file::save(&snapshot, &temp, revision, &extra).map_err(TrainError::from);
                let c = snapshot.config();
                let model = serde_json::json!({ "kind": "ntuple", "tuples": c.tuples, "stages": c.stages, "stage_tile": c.stage_tile });
                let selfplay = serde_json::json!({ "depth": self.config.selfplay_depth.max(1), "four_probability": four });
                (Snapshot::Ntuple(snapshot), saved, model, selfplay)
            }
            Learner::Zero(zero) => {
                let report = zero.report();
                tracing::info!(
                    "revision {revision}: {} optimiser steps, {} positions in the window; loss policy {:.4} value {:.4} (training), {:.4} {:.4} (held out){}",
                    report.steps,
                    report.replay_positions,
                    report.train.policy,
                    report.train.value,
                    report.validation.policy,
                    report.validation.value,
                    if report.validation.total() > 1.5 * report.train.total() && report.steps > 0 {
                        " — over-fitting: held-out loss well above training loss"
                    } else {
                        ""
                    }
                );
                extra.insert("optimizer_steps".to_string(), report.steps.to_string());
                extra.insert("train_policy_loss".to_string(), report.train.policy.to_string());
                extra.insert("train_value_loss".to_string(), report.train.value.to_string());
                extra.insert("validation_policy_loss".to_string(), report.validation.policy.to_string());
                extra.insert("validation_value_loss".to_string(), report.validation.value.to_string());
                let snapshot = zero.snapshot().map_err(TrainError::Zero)?;
                let saved = snapshot.save(&temp, revision, &extra).map_err(TrainError::from);
                let c = snapshot.config();
                let model = serde_json::json!({ "kind": "policy_value", "filters": c.filters, "blocks": c.blocks,
                                                "se_ratio": c.se_ratio, "value_hidden": c.value_hidden });
                let selfplay = serde_json::json!({ "four_probability": four, "mcts": self.config.mcts,
                                                   "parallel_games": self.config.mcts_parallel_games });
                (Snapshot::PolicyValue(Box::new(snapshot)), saved, model, selfplay)
            }
        };
        let published = saved.and_then(|()| {
            let deadline =
                OffsetDateTime::now_utc() + time::Duration::seconds(self.config.deadline_seconds as i64);
            let details = LatestDetails {
                model: model_json,
                selfplay: selfplay_json,
                accepted_revisions: accepted.clone(),
                min_worker_version: env!("CARGO_PKG_VERSION").to_string(),
            };
            Ok(self.runtime.block_on(self.adapter.publish(
                WeightsData::File(temp.clone()),
                revision,
                deadline,
                &details,
            ))?)
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
        self.live.set_accepted(accepted);
        self.live.revision.store(revision, Ordering::Relaxed);
        self.live.set_latest(latest.clone());
        match (model, snapshot) {
            (Some(LocalModel::Ntuple(model)), Snapshot::Ntuple(snapshot)) => {
                let _ = model.set(revision, Arc::new(snapshot));
            }
            (Some(LocalModel::PolicyValue(model)), Snapshot::PolicyValue(snapshot)) => {
                let _ = model.set(revision, Arc::new(*snapshot));
            }
            _ => {}
        }
        Ok(row)
    }

    fn evaluate(&mut self, model: &LocalModel) -> Result<EvaluationRow, TrainError> {
        let revision = model.revision();
        let strength: Strength = match model {
            LocalModel::Ntuple(model) => {
                evaluate(model.get().1, &self.config.evaluation, SpawnRule::STANDARD)
            }
            LocalModel::PolicyValue(model) => {
                let games = self.config.mcts_evaluation_games.max(1);
                let (results, _) = play_series(
                    &*model.get().1,
                    self.config.mcts.for_evaluation(),
                    SpawnRule::STANDARD,
                    games,
                    self.config.evaluation.seed,
                    games.min(64),
                );
                Strength::of(&results).expect("at least one game")
            }
        };
        let row = EvaluationRow {
            revision,
            depth: match model {
                LocalModel::Ntuple(_) => self.config.evaluation.depth,
                // For MCTS the column holds the simulations per move.
                LocalModel::PolicyValue(_) => self.config.mcts.simulations,
            },
            seed: self.config.evaluation.seed,
            games_trained: self.counters.games,
            strength,
        };
        self.db.record_evaluation(&row)?;
        Ok(row)
    }
}

/// A published snapshot, handed to local self-play.
enum Snapshot {
    Ntuple(NTupleNetwork),
    PolicyValue(Box<PolicyValueNet>),
}
