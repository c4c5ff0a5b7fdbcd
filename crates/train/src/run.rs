//! A training run: open or resume it, then learn until the budget is spent or a stop is asked,
//! publishing a revision every so many games or seconds and evaluating it on fixed seeds.
//!
//! Games reach the learner two ways. Local n-tuple self-play threads learn each game as they
//! finish it, on the learner's own network ([`crate::local`]). Everything else (remote workers'
//! uploads, local policy-value games) is verified, stored and queued in the run database, and
//! this loop learns the queue in arrival order, after its cursor.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use zero2048_game::GameRecord;
use zero2048_model::{NTupleNetwork, PolicyValueNet, weights_file};
use zero2048_protocol::ModelKind;
use zero2048_selfplay::Model;
use zero2048_storage::StorageAdapter;

use crate::config::TrainConfig;
use crate::db::{Counters, DatabaseUrl, EvaluationRow, GameShelf, RevisionRow, RunDb};
use crate::learner::TdLearner;
use crate::learners::{EvaluationJob, Learner, NtupleLearner, PolicyValueLearner, PublishedMean};
use crate::live::{LiveState, Progress};
use crate::local::{LocalPlay, LocalSetup, pace};
use crate::lock::RunLock;
use crate::publish::{Acceptance, Publisher};
use crate::state;
use crate::zero::ZeroError;
use crate::zero::ZeroLearner;

/// When to stop, besides a stop request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Budget {
    /// Games to learn in this session: local self-play starts exactly this many, and the run
    /// stops once this many are learned (remote workers' games count too).
    pub games: Option<u64>,
    /// Wall time for this session: then games in progress are dropped, and what was learned is
    /// published.
    pub time: Option<Duration>,
}

/// Where the session's games come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfPlay {
    /// Threads in this process play (and, for n-tuple runs, learn as they play); remote workers
    /// may add games too.
    Local {
        /// Threads (0 = one per core).
        threads: usize,
    },
    /// Only games uploaded by remote workers: a stop publishes at once, and games not learned
    /// yet stay queued for the next start.
    RemoteOnly,
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
    /// Where the revisions went at the end: a bucket still behind shows here.
    pub storage: zero2048_storage::StorageStatus,
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
    /// A setting breaks its rule.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Resuming is impossible as asked.
    #[error("cannot resume: {0}")]
    Resume(String),
    /// Another process runs this run.
    #[error(
        "another zero2048{} is running this run ({}); stop it first, or give this one another --db and --weights-dir",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        path.display()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The holder's process id, if it wrote one.
        pid: Option<u32>,
    },
    /// A game this process played cannot be written as a record.
    #[error("a local game cannot be encoded: {0}")]
    Encode(#[from] zero2048_game::EncodeError),
    /// The policy-value learner failed.
    #[error("policy-value learner: {0}")]
    Zero(#[from] crate::zero::ZeroError),
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

/// How often the learner asks the database for games stored by other processes.
const QUEUE_POLL: Duration = Duration::from_millis(250);

/// A run, opened and ready to train.
pub struct TrainingRun {
    _lock: RunLock,
    config: TrainConfig,
    db: RunDb,
    games: GameShelf,
    /// Since when queued games' records cannot be read (their storage is down), if they cannot.
    games_unreadable_since: Option<Instant>,
    /// When that was last said.
    games_waiting_warned: Instant,
    /// When the database was last asked for the newest queued game (`None`: never, every
    /// upload comes through this process, which is told of each).
    queue_polled: Option<Instant>,
    db_path: PathBuf,
    database: DatabaseUrl,
    live: Arc<LiveState>,
    learner: Box<dyn Learner>,
    publisher: Publisher,
    counters: Counters,
}

/// The newest stored revision whose file matches its recorded hash and size.
async fn newest_intact(local: &zero2048_storage::LocalStorageBackend) -> Option<PathBuf> {
    use zero2048_storage::StorageBackend;
    let stored = local.list_revisions().await.ok()?;
    for weights in stored.iter().rev() {
        if zero2048_storage::verify_stored(local, weights).await.is_ok() {
            return Some(local.path_of(&weights.name));
        }
    }
    None
}

/// The run's state directory beside its database (`zero2048.db` → `zero2048.state/`).
pub fn state_dir(db_path: &Path) -> PathBuf {
    db_path.with_extension("state")
}

impl TrainingRun {
    /// Opens a run: resumes from the latest published revision when there is one (its file
    /// verified against the record's SHA-256), or from `resume_from`, else starts from zero.
    /// Nothing is written before the run is known to start (a refused start leaves the
    /// directory as it was).
    pub fn open(
        config: TrainConfig,
        adapter: Arc<StorageAdapter>,
        runtime: tokio::runtime::Handle,
        db_path: &Path,
        database: &DatabaseUrl,
        resume_from: Option<&Path>,
    ) -> Result<TrainingRun, TrainError> {
        config.validate()?;
        let lock = RunLock::acquire(db_path, adapter.local().dir())?;
        let games = GameShelf::from_storage(&adapter, runtime.clone())?;
        let mut db = RunDb::open(database)?.with_games(games.clone());
        if !db.lock_run()? {
            // The holder's pid is on another machine, perhaps.
            return Err(TrainError::Locked { path: PathBuf::from(database.to_string()), pid: None });
        }
        let mut counters = db.counters()?;
        if let Some(kind) = db.setting("model")?
            && kind != config.model.name()
        {
            return Err(TrainError::Resume(format!(
                "this run trains the `{kind}` model, not `{}`; keep its kind, or start over with --reset",
                config.model.name()
            )));
        }
        let latest = runtime.block_on(adapter.read_latest_info())?;
        let latest_file = match &latest {
            Some(latest) if resume_from.is_none() => match adapter.local().checked_latest_file(latest) {
                Ok(path) => Some(path),
                Err(e) => {
                    let advice = match runtime.block_on(newest_intact(adapter.local())) {
                        Some(path) => format!(
                            "the newest intact revision is {}: continue from it with --resume-from {}",
                            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                            path.display()
                        ),
                        None => "no stored revision is intact".to_string(),
                    };
                    return Err(TrainError::Resume(format!(
                        "the latest revision's weights fail their check: {e}; {advice}, or start over with --reset"
                    )));
                }
            },
            _ => None,
        };
        let start_file = resume_from.map(Path::to_path_buf).or(latest_file);
        if let Some(latest) = &latest
            && latest.revision > counters.revision
        {
            // Storage publishes a revision before the database records it: a process killed
            // between the two left the row behind. Record it now (with the counters the
            // database last had), so the revisions go on without a gap.
            counters.revision = latest.revision;
            db.record_revision(&crate::publish::revision_row(latest, &counters), &counters)?;
            tracing::warn!(
                "revision {} was published but not recorded in the run database (a stop between the two): recorded now",
                latest.revision
            );
        }
        let state_dir = state_dir(db_path);
        let learner: Box<dyn Learner> = match config.model {
            ModelKind::Ntuple => {
                let published = match &start_file {
                    Some(path) => {
                        let (network, info) = weights_file::load(path, None)?;
                        tracing::info!(
                            "starting from {} (revision {} of its run)",
                            path.display(),
                            info.revision
                        );
                        network
                    }
                    None => {
                        let network = NTupleNetwork::zeroed(config.network.clone())?;
                        // A stage opens when a game first reaches it, as a copy of the one below.
                        network.close_later_stages();
                        network
                    }
                };
                let games = if start_file.is_some() { counters.games.max(1) } else { 0 };
                // A run that published the mean of its weights kept the learned ones beside it:
                // the latest revision's, or the one before when the run stopped while saving
                // them (a full disk). The older learned weights with their own accumulators lose
                // one revision's learning; the mean with accumulators started afresh would
                // unlearn far more (seen on a default run: its recent games' mean fell from 212k to 46k).
                let learned = match resume_from.is_none() && counters.revision > 0 {
                    true => state::load_learned(&state_dir, counters.revision, published.config())?,
                    false => None,
                };
                if learned.is_none()
                    && config.published_mean_power.is_some()
                    && resume_from.is_none()
                    && counters.revision > 0
                {
                    tracing::warn!(
                        "no learned weights of revision {} beside the run: learning goes on from the published ones",
                        counters.revision
                    );
                }
                // The mean so far is the latest revision's file; a run from zero or from
                // another run's weights starts its mean at its first revision.
                let mean_file = start_file.clone().filter(|_| resume_from.is_none());
                let mean =
                    config.published_mean_power.map(|power| PublishedMean::new(power, games, mean_file));
                // The revision whose accumulators go with the weights learning resumes on.
                let state_revision = learned.as_ref().map_or(counters.revision, |(revision, _)| *revision);
                let network = match learned {
                    Some((revision, learned)) => {
                        if revision < counters.revision {
                            tracing::warn!(
                                "the learner's state of revision {} was not saved (the run stopped while \
                                 saving it): learning resumes from the learned weights of revision \
                                 {revision}; what was learned after them is lost, the published \
                                 revisions are kept",
                                counters.revision
                            );
                        } else {
                            tracing::info!(
                                "learning resumes from the learned weights of revision {revision}"
                            );
                        }
                        learned
                    }
                    None => published,
                };
                let td = TdLearner::new(Arc::new(network), config.td.clone(), games);
                if resume_from.is_none() && counters.revision > 0 && config.td.coherence {
                    let mut saved = td.new_coherence()?;
                    match state::load_coherence(&state_dir, state_revision, &mut saved)? {
                        Some(revision) => {
                            let _ = td.restore_coherence(saved);
                            if revision < state_revision {
                                tracing::warn!(
                                    "temporal coherence resumes from the accumulators of revision {revision} \
                                     (revision {state_revision}'s were not saved)"
                                );
                            } else {
                                tracing::info!("temporal coherence resumes from revision {revision}");
                            }
                        }
                        None => tracing::warn!(
                            "no temporal-coherence state for revision {state_revision}: every weight's rate starts afresh"
                        ),
                    }
                }
                Box::new(NtupleLearner::new(td, state_dir, config.learner_threads(), mean))
            }
            ModelKind::PolicyValue => {
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
                    None => PolicyValueNet::new(config.policy_value, config.seed)
                        .map_err(|e| TrainError::Zero(ZeroError::Network(e)))?,
                };
                let mut zero = ZeroLearner::new(&network, config.zero)?;
                if resume_from.is_none() && counters.revision > 0 {
                    match state::load_optimizer(&state_dir, counters.revision)? {
                        Some(bytes) => {
                            zero.restore_optimizer_state(&bytes)?;
                            tracing::info!("the optimiser resumes from revision {}", counters.revision);
                        }
                        None => tracing::warn!(
                            "no optimiser state for revision {}: AdamW starts afresh (warm-up and schedule from step 0)",
                            counters.revision
                        ),
                    }
                }
                // The replay window as it was: the newest games already learned.
                let window_games = (config.zero.replay_positions / 200).max(1);
                let from = counters.learned_through.saturating_sub(window_games as u64 * 4);
                for game in db.games_after(from, window_games * 4)? {
                    if game.id > counters.learned_through {
                        break;
                    }
                    let record = GameRecord::decode(&game.record).map_err(|e| {
                        TrainError::Resume(format!("stored game {} does not decode: {e}", game.id))
                    })?;
                    zero.remember(&record)?;
                }
                Box::new(PolicyValueLearner::new(zero, &network, &config, state_dir))
            }
        };
        // The run can start: only now is anything written.
        if db.setting("model")?.is_none() {
            db.set_setting("model", config.model.name())?;
        }
        let live = Arc::new(LiveState::for_run(&config));
        match db.sweep_orphan_chunks(crate::db::ORPHAN_AGE) {
            Ok(0) => {}
            Ok(swept) => tracing::info!("removed {swept} game chunks no stored game names (left by a crash)"),
            Err(e) => tracing::warn!("could not sweep orphan game chunks: {e}"),
        }
        live.revision.store(counters.revision, Ordering::Relaxed);
        live.learned_through.store(counters.learned_through, Ordering::Relaxed);
        live.stored(db.last_game_id()?, false);
        live.queued_through.store(db.last_queued_id()?, Ordering::Relaxed);
        live.totals.games.store(counters.games, Ordering::Relaxed);
        live.totals.moves.store(counters.moves, Ordering::Relaxed);
        live.totals.score_sum.store(counters.score_sum, Ordering::Relaxed);
        if let Some(latest) = latest {
            live.set_latest(latest);
        }
        let acceptance = Acceptance::of(&config);
        crate::live::share_accepted(&db, &live, acceptance.accepted_now(&db, counters.revision)?)?;
        let publisher = Publisher {
            adapter,
            runtime,
            acceptance,
            deadline: time::Duration::seconds(config.deadline_seconds as i64),
        };
        Ok(TrainingRun {
            _lock: lock,
            config,
            db,
            games,
            games_unreadable_since: None,
            games_waiting_warned: Instant::now(),
            queue_polled: None,
            db_path: db_path.to_path_buf(),
            database: database.clone(),
            live,
            learner,
            publisher,
            counters,
        })
    }

    /// What the run shares with other threads while it runs.
    pub fn live(&self) -> Arc<LiveState> {
        Arc::clone(&self.live)
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The run's local files' anchor (the SQLite file, or beside which the lock and the state
    /// directory live when the database is PostgreSQL).
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Where the run database is.
    pub fn database(&self) -> &DatabaseUrl {
        &self.database
    }

    /// The totals as of the last revision.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// What is being trained, in a few words.
    pub fn model_name(&self) -> String {
        self.learner.describe()
    }

    /// The n-tuple network being trained (`None` in a policy-value run).
    pub fn network(&self) -> Option<Arc<NTupleNetwork>> {
        self.learner.in_thread().map(|td| Arc::clone(td.network()))
    }

    /// The run database.
    pub fn db(&self) -> &RunDb {
        &self.db
    }

    /// Learns games that other processes store (API servers apart from this learner): the
    /// database is asked for the newest queued game four times a second.
    pub fn follow_other_ingest(&mut self) {
        self.queue_polled = Some(Instant::now().checked_sub(QUEUE_POLL).unwrap_or_else(Instant::now));
    }

    /// Where the run's game records are kept (for other connections to the run database).
    pub fn game_shelf(&self) -> GameShelf {
        self.games.clone()
    }

    /// The totals now (learned games count as soon as they are learned).
    fn counters_now(&self, learned_through: u64) -> Counters {
        let totals = &self.live.totals;
        Counters {
            games: totals.games.load(Ordering::Relaxed),
            moves: totals.moves.load(Ordering::Relaxed),
            score_sum: totals.score_sum.load(Ordering::Relaxed),
            revision: self.counters.revision,
            learned_through,
        }
    }

    /// Publishes the network as revision 1 when the run has none, so remote workers have
    /// something to play before any game is learned. Returns the revision if it published one.
    pub fn publish_initial(&mut self) -> Result<Option<RevisionRow>, TrainError> {
        if self.counters.revision > 0 {
            return Ok(None);
        }
        let learned_through = self.counters.learned_through;
        self.publish(learned_through, None).map(Some)
    }

    /// Snapshots the weights as the next revision and publishes them; `local` self-play is held
    /// at its game boundaries meanwhile, so the file is one consistent network whose counters
    /// are the ones recorded.
    fn publish(
        &mut self,
        learned_through: u64,
        local: Option<&LocalPlay>,
    ) -> Result<RevisionRow, TrainError> {
        let _held = local.map(|local| local.control.hold_games());
        let revision = self.counters.revision + 1;
        let spec = self.config.run_spec(self.learner.spec(), Vec::new());
        let mut metadata = self.learner.revision_metadata(revision);
        // The counters the frozen network holds: taken while the learners are held off.
        let counters = {
            let mut counters = self.counters_now(learned_through);
            counters.revision = revision;
            counters
        };
        metadata.insert("games_trained".into(), counters.games.to_string());
        metadata.insert("moves_trained".into(), counters.moves.to_string());
        let learner = &mut self.learner;
        let row = self.publisher.publish(
            &mut self.db,
            &self.live,
            revision,
            &counters,
            spec,
            &metadata,
            |path, metadata| learner.save(path, revision, metadata),
        )?;
        self.counters = counters;
        let stored = self.publisher.adapter.local().dir().join(&row.file);
        self.learner.save_state(revision, &stored)?;
        // Storage trouble while pruning costs disk space, not the run: warn and go on.
        match self.db.prune_games(revision, learned_through) {
            Ok(pruned) if pruned.chunks > 0 => tracing::info!(
                "retention: deleted {} games in {} chunks ({} bytes) older than the kept revisions",
                pruned.games,
                pruned.chunks,
                pruned.bytes
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("retention: could not prune old games: {e}"),
        }
        match self.db.move_chunks_to_bucket() {
            Ok(0) => {}
            Ok(moved) => {
                tracing::info!("moved {moved} game chunks kept locally during a bucket outage to the bucket")
            }
            Err(e) => tracing::warn!("game chunks kept locally wait for the bucket: {e}"),
        }
        Ok(row)
    }

    /// Trains until the budget is spent or `stop` is set, then publishes what was learned since
    /// the last revision and evaluates it.
    pub fn run(
        &mut self,
        budget: Budget,
        stop: &AtomicBool,
        selfplay: SelfPlay,
        observer: &mut dyn RunObserver,
    ) -> Result<Summary, TrainError> {
        let mut session = Session::start(self, budget, selfplay)?;
        loop {
            session.check_stop(self, stop);
            let learned = self.learn_queued(&mut session.cursor)?;
            session.feed_local(self)?;
            session.publish_if_due(self)?;
            session.collect_evaluation(self, false)?;
            session.report(self, observer, None, false);
            if session.stopping && session.drained(self)? {
                break;
            }
            if learned == 0 {
                self.live.wait_for_games(session.cursor, Duration::from_millis(100));
            }
        }
        session.finish(self, observer)
    }

    /// The current model for local self-play.
    fn local_model(&mut self) -> Result<Model, TrainError> {
        Ok(Model {
            revision: self.counters.revision,
            engine: self.learner.engine()?,
            play: self.config.play_spec(),
        })
    }

    /// Learns the games queued after `cursor` (up to 256 n-tuple games, or one policy-value game,
    /// whose optimiser steps can take seconds: the loop around it must see a stop or a due
    /// revision in time); returns how many it learned.
    fn learn_queued(&mut self, cursor: &mut u64) -> Result<usize, TrainError> {
        // API servers of their own (`--role api`) store games this process is not told of.
        if let Some(polled) = self.queue_polled
            && polled.elapsed() >= QUEUE_POLL
        {
            self.queue_polled = Some(Instant::now());
            self.live.queued_through.fetch_max(self.db.last_queued_id()?, Ordering::Relaxed);
        }
        if self.live.queued_through.load(Ordering::Relaxed) <= *cursor {
            return Ok(0);
        }
        let limit = match self.learner.kind() {
            ModelKind::Ntuple => 256,
            ModelKind::PolicyValue => 1,
        };
        let games = match self.db.games_after(*cursor, limit) {
            Ok(games) => {
                if let Some(since) = self.games_unreadable_since.take() {
                    tracing::info!(
                        "the games' storage answers again after {:.0} s",
                        since.elapsed().as_secs_f64()
                    );
                }
                games
            }
            // A bucket that is down holds the games up, not the run: they are learned once it is back.
            Err(crate::db::DbError::Storage { action, source }) => {
                let first = self.games_unreadable_since.is_none();
                self.games_unreadable_since.get_or_insert_with(Instant::now);
                if first || self.games_waiting_warned.elapsed() >= Duration::from_secs(60) {
                    tracing::warn!("the learner waits for the games' storage ({action}: {source})");
                    self.games_waiting_warned = Instant::now();
                }
                std::thread::sleep(Duration::from_secs(1));
                return Ok(0);
            }
            Err(e) => return Err(e.into()),
        };
        let mut decoded = Vec::with_capacity(games.len());
        for game in &games {
            match GameRecord::decode(&game.record) {
                Ok(record) => decoded.push((game.id, record, game.origin.is_some())),
                // Stored games were verified when they arrived: this is a damaged database row.
                Err(e) => tracing::error!("stored game {} does not decode and was skipped: {e}", game.id),
            }
        }
        let batch: Vec<(GameRecord, bool)> = decoded.iter().map(|(_, r, c)| (r.clone(), *c)).collect();
        for ((id, _, continuation), learned) in decoded.iter().zip(self.learner.learn_stored(&batch)) {
            match learned {
                Ok(learned) => {
                    self.live.add_game(learned.moves, learned.score, learned.max_tile, *continuation)
                }
                Err(e) => tracing::error!("stored game {id} could not be learned and was skipped: {e}"),
            }
        }
        if let Some(last) = games.last() {
            *cursor = last.id;
        }
        self.live.learned_through.store(*cursor, Ordering::Relaxed);
        if games.is_empty() {
            // Rows after the cursor were quarantined since: nothing left to learn up to here.
            let through = self.live.queued_through.load(Ordering::Relaxed);
            *cursor = (*cursor).max(through);
            self.live.learned_through.store(*cursor, Ordering::Relaxed);
        }
        Ok(games.len())
    }

    fn record_evaluation(&mut self, evaluating: Evaluating) -> Result<EvaluationRow, TrainError> {
        let Evaluating { revision, games, handle } = evaluating;
        let (strength, depth) = handle
            .join()
            .map_err(|_| TrainError::Resume(format!("the evaluation of revision {revision} panicked")))?;
        let row = EvaluationRow {
            revision,
            depth,
            seed: self.config.evaluation.seed,
            games_trained: games,
            strength,
        };
        self.db.record_evaluation(&row)?;
        Ok(row)
    }

    fn progress(
        &self,
        started: Instant,
        games_at_revision: u64,
        cursor: u64,
        last_evaluation: &Option<EvaluationRow>,
        activity: Option<String>,
    ) -> Progress {
        let totals = &self.live.totals;
        let elapsed = started.elapsed().as_secs_f64();
        let (games, moves) = (totals.games.load(Ordering::Relaxed), totals.moves.load(Ordering::Relaxed));
        let (session_games, session_moves) =
            (totals.session_games.load(Ordering::Relaxed), totals.session_moves.load(Ordering::Relaxed));
        let (recent_mean_score, recent_2048_rate) = totals.recent();
        Progress {
            games,
            moves,
            session_games,
            revision: self.counters.revision,
            moves_per_second: session_moves as f64 / elapsed.max(1e-9),
            games_per_second: session_games as f64 / elapsed.max(1e-9),
            backlog: self.live.queued_through.load(Ordering::Relaxed).saturating_sub(cursor),
            recent_mean_score,
            recent_2048_rate,
            games_to_next_revision: self
                .config
                .revision_every_games
                .saturating_sub(games - games_at_revision),
            last_evaluation: last_evaluation.clone(),
            elapsed_seconds: elapsed,
            activity,
        }
    }
}

/// An evaluation running on a thread of its own: the revision, the games it was trained on, and
/// the thread.
struct Evaluating {
    revision: u64,
    games: u64,
    handle: JoinHandle<(zero2048_search::Strength, u32)>,
}

impl Evaluating {
    fn start(revision: u64, games: u64, job: EvaluationJob) -> Result<Evaluating, TrainError> {
        let handle = std::thread::Builder::new().name(format!("evaluate-r{revision}")).spawn(job).map_err(
            |source| TrainError::Io { action: "starting", path: "the evaluation thread".into(), source },
        )?;
        Ok(Evaluating { revision, games, handle })
    }
}

/// One call of [`TrainingRun::run`]: the loop's state.
struct Session {
    started: Instant,
    budget: Budget,
    local: Option<LocalPlay>,
    cursor: u64,
    games_at_revision: u64,
    games_at_sync: u64,
    revision_clock: Instant,
    revisions: Vec<RevisionRow>,
    evaluations: Vec<EvaluationRow>,
    last_evaluation: Option<EvaluationRow>,
    evaluating: Option<Evaluating>,
    last_report: Instant,
    stopping: bool,
    /// Whether stopping waits until every stored game is learned. A policy-value run stopped by
    /// its time or by Ctrl-C does not: its learner may be minutes behind self-play, and the games
    /// it has not learned stay stored, first in line at the next start.
    learn_backlog: bool,
}

impl Session {
    fn start(run: &mut TrainingRun, budget: Budget, selfplay: SelfPlay) -> Result<Session, TrainError> {
        let local = match selfplay {
            SelfPlay::Local { threads } => {
                let threads = if threads == 0 {
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                } else {
                    threads
                };
                let setup = LocalSetup {
                    threads,
                    seed: zero2048_game::derive_seed(
                        run.config.seed,
                        (run.counters.revision << 32) ^ run.counters.learned_through,
                    ),
                    budget: budget.games,
                    database: &run.database,
                    games: &run.games,
                    live: &run.live,
                };
                let local = LocalPlay::start(setup, run.learner.in_thread())?;
                local.model.set(run.local_model()?);
                Some(local)
            }
            SelfPlay::RemoteOnly => None,
        };
        run.live.set_revision_due_at(run.counters.games + run.config.revision_every_games);
        Ok(Session {
            started: Instant::now(),
            budget,
            local,
            cursor: run.counters.learned_through,
            games_at_revision: run.counters.games,
            games_at_sync: run.counters.games,
            revision_clock: Instant::now(),
            revisions: Vec::new(),
            evaluations: Vec::new(),
            last_evaluation: None,
            evaluating: None,
            last_report: Instant::now() - Duration::from_secs(1),
            stopping: false,
            learn_backlog: true,
        })
    }

    fn games(run: &TrainingRun) -> u64 {
        run.live.totals.games.load(Ordering::Relaxed)
    }

    /// Starts stopping once the budget is spent or a stop is asked: a budget of games lets the
    /// games already claimed finish; time and a stop request drop the games in progress.
    fn check_stop(&mut self, run: &TrainingRun, stop: &AtomicBool) {
        if self.stopping {
            return;
        }
        let session_games = run.live.totals.session_games.load(Ordering::Relaxed);
        let out_of_time = self.budget.time.is_some_and(|t| self.started.elapsed() >= t);
        let out_of_games = self.budget.games.is_some_and(|g| session_games >= g);
        let asked = stop.load(Ordering::Relaxed);
        if !(out_of_time || out_of_games || asked) {
            return;
        }
        self.stopping = true;
        self.learn_backlog = !((out_of_time || asked) && run.learner.kind() == ModelKind::PolicyValue);
        if let Some(local) = &self.local {
            if out_of_time || asked {
                local.control.abort.store(true, Ordering::Relaxed);
            }
            local.control.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Policy-value self-play plays a snapshot: keeps it paced to the learner and refreshed.
    fn feed_local(&mut self, run: &mut TrainingRun) -> Result<(), TrainError> {
        let Some(local) = self.local.as_ref().filter(|_| run.learner.in_thread().is_none()) else {
            return Ok(());
        };
        pace(&local.control, &run.live, run.config.local_backlog_games);
        if Session::games(run) - self.games_at_sync >= run.config.selfplay_sync_games && !self.stopping {
            local.model.set(run.local_model()?);
            self.games_at_sync = Session::games(run);
        }
        Ok(())
    }

    fn publish_if_due(&mut self, run: &mut TrainingRun) -> Result<(), TrainError> {
        let since = Session::games(run) - self.games_at_revision;
        let due = since >= run.config.revision_every_games
            || (since > 0
                && self.revision_clock.elapsed().as_secs_f64() >= run.config.revision_every_seconds);
        if !due || self.stopping {
            return Ok(());
        }
        let row = run.publish(self.cursor, self.local.as_ref())?;
        self.games_at_revision = row.games;
        run.live.set_revision_due_at(row.games + run.config.revision_every_games);
        self.revision_clock = Instant::now();
        if let Some(local) = &self.local {
            local.model.set(run.local_model()?);
            self.games_at_sync = row.games;
        }
        self.revisions.push(row);
        let every = run.config.evaluate_every_revisions;
        if every > 0 && run.counters.revision.is_multiple_of(every) && self.evaluating.is_none() {
            self.start_evaluation(run, run.counters.revision, run.counters.games)?;
        }
        Ok(())
    }

    /// Starts evaluating the learner's network, published as `revision` after `games_trained`.
    fn start_evaluation(
        &mut self,
        run: &mut TrainingRun,
        revision: u64,
        games_trained: u64,
    ) -> Result<(), TrainError> {
        let job = run.learner.evaluation(&run.config)?;
        self.evaluating = Some(Evaluating::start(revision, games_trained, job)?);
        Ok(())
    }

    /// Records a finished evaluation (`wait`: wait for the one running).
    fn collect_evaluation(&mut self, run: &mut TrainingRun, wait: bool) -> Result<(), TrainError> {
        let Some(evaluating) = self.evaluating.take_if(|e| wait || e.handle.is_finished()) else {
            return Ok(());
        };
        let row = run.record_evaluation(evaluating)?;
        self.last_evaluation = Some(row.clone());
        self.evaluations.push(row);
        Ok(())
    }

    /// Shows progress, at most four times a second unless `now`.
    fn report(
        &mut self,
        run: &TrainingRun,
        observer: &mut dyn RunObserver,
        activity: Option<String>,
        now: bool,
    ) {
        if !now && self.last_report.elapsed() < Duration::from_millis(250) {
            return;
        }
        let progress =
            run.progress(self.started, self.games_at_revision, self.cursor, &self.last_evaluation, activity);
        run.live.set_progress(&progress);
        observer.progress(&progress);
        self.last_report = Instant::now();
    }

    /// Whether stopping is complete: local self-play has returned and left nothing to learn
    /// (without local self-play, a stop is complete at once: queued games wait for the next start).
    fn drained(&self, run: &TrainingRun) -> Result<bool, TrainError> {
        Ok(match &self.local {
            None => true,
            Some(local) => {
                local.finished() && (!self.learn_backlog || run.db.games_after(self.cursor, 1)?.is_empty())
            }
        })
    }

    /// Says what a stop threw away: games in progress are not checkpointed locally, and a run
    /// that ends before its first game finishes learns nothing.
    fn say_dropped(run: &TrainingRun, (games, moves): (u64, u64)) {
        if games == 0 {
            return;
        }
        let finished = run.live.totals.session_games.load(Ordering::Relaxed);
        // An n-tuple game is a fraction of a second of play; a policy-value game is minutes.
        if finished > 0 && run.learner.kind() == ModelKind::Ntuple {
            tracing::info!("stopped with {games} games in progress ({moves} moves played in them)");
            return;
        }
        tracing::warn!(
            "stopped with {games} games in progress ({moves} moves played in them): they end here, not learned"
        );
        if finished == 0 {
            let hint = match run.learner.kind() {
                ModelKind::PolicyValue => format!(
                    "a policy-value game plays {} simulations per move and the threads play {} games at once, \
                     so the first ones take minutes: give --time more, or fewer --simulations",
                    run.config.mcts.simulations, run.config.mcts_parallel_games
                ),
                ModelKind::Ntuple => "give --time more".to_string(),
            };
            tracing::warn!("no game finished in this session, so nothing was learned or published; {hint}");
        }
    }

    /// Learns what the local threads left, publishes what was learned since the last revision,
    /// and evaluates it (saying so: it can take a while).
    fn finish(
        mut self,
        run: &mut TrainingRun,
        observer: &mut dyn RunObserver,
    ) -> Result<Summary, TrainError> {
        if let Some(local) = self.local.take() {
            let dropped = Arc::clone(&local.dropped);
            local.join()?;
            if self.learn_backlog {
                while run.learn_queued(&mut self.cursor)? > 0 {}
            } else {
                let waiting = run.db.games_after(self.cursor, usize::MAX >> 1)?.len();
                if waiting > 0 {
                    tracing::info!(
                        "{waiting} finished games are stored but not learned yet: the next start learns them first"
                    );
                }
            }
            Session::say_dropped(run, dropped.counts());
        }
        if let Some(evaluating) = &self.evaluating {
            let activity = format!("finishing the evaluation of revision {}", evaluating.revision);
            self.report(run, observer, Some(activity), true);
            self.collect_evaluation(run, true)?;
        }
        if Session::games(run) > self.games_at_revision || self.cursor > run.counters.learned_through {
            let row = run.publish(self.cursor, None)?;
            self.games_at_revision = row.games;
            self.revisions.push(row);
        }
        // The session's last revision is always evaluated: one published while the one before was
        // still being evaluated was skipped then, and may have been the last of the session.
        let last_published = self.revisions.last().map(|row| (row.revision, row.games));
        let last_evaluated = self.evaluations.last().map(|row| row.revision);
        if let Some((revision, games_then)) = last_published
            && run.config.evaluate_every_revisions > 0
            && last_evaluated != Some(revision)
        {
            let games = match run.learner.kind() {
                ModelKind::Ntuple => run.config.evaluation.games,
                ModelKind::PolicyValue => run.config.mcts_evaluation_games,
            };
            let activity = format!("evaluating revision {revision} on {games} games (evaluation.games)");
            tracing::info!("{activity}");
            self.report(run, observer, Some(activity), true);
            self.start_evaluation(run, revision, games_then)?;
            self.collect_evaluation(run, true)?;
        }
        self.report(run, observer, None, true);
        Ok(Summary {
            progress: run.live.progress(),
            revisions: self.revisions,
            evaluations: self.evaluations,
            storage: run.publisher.adapter.status(),
        })
    }
}
