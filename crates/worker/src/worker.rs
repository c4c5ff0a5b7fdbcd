//! The worker loop: a control task keeping the model current, N playing threads writing to the
//! spool, and an uploader emptying the spool into the server.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use zero2048_game::{Game, SpawnRule, derive_seed};
use zero2048_model::{NTupleNetwork, PolicyValueNet, weights_file};
use zero2048_protocol::{Claims, compress, encode_batch, new_game_uuid};
use zero2048_search::mcts::{BatchedPlay, MctsConfig};
use zero2048_search::{ExpectimaxConfig, ExpectimaxPlayer, Player};
use zero2048_storage::{Expected, FetchError, Fetcher, LatestInfo, RetryPolicy, Secret};

use crate::client::{ClientError, ServerClient};
use crate::spool::{Spool, SpoolError, SpooledGame};

/// How a worker works.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The server's base URL.
    pub server: String,
    /// Read the latest record from this URL instead of the server (a bucket's public latest.json).
    pub latest_url: Option<String>,
    /// The worker token.
    pub token: Option<Secret>,
    /// Playing threads.
    pub threads: usize,
    /// The spool directory.
    pub spool_dir: PathBuf,
    /// The weights cache directory.
    pub cache_dir: PathBuf,
    /// Disk budget of the weights cache.
    pub cache_budget_bytes: u64,
    /// Games per upload.
    pub batch_games: usize,
    /// Upload a partial batch after this long.
    pub upload_interval: Duration,
    /// Playing pauses while the spool holds this many games, so a worker that plays faster than
    /// the server accepts waits instead of filling its disk.
    pub max_spool_games: u64,
    /// Read the latest record this often.
    pub poll_interval: Duration,
    /// A new revision is adopted after a random delay up to this long.
    pub adopt_delay_max: Duration,
    /// Seed of this worker's games (pick a random one: two workers with one seed play the same games).
    pub seed: u64,
    /// Stop after this many finished games (benchmarks and tests).
    pub max_games: Option<u64>,
}

impl WorkerConfig {
    /// Defaults for a server URL.
    pub fn new(server: &str, spool_dir: PathBuf, cache_dir: PathBuf) -> WorkerConfig {
        WorkerConfig {
            server: server.to_string(),
            latest_url: None,
            token: None,
            threads: 1,
            spool_dir,
            cache_dir,
            cache_budget_bytes: 2 << 30,
            batch_games: 64,
            upload_interval: Duration::from_secs(5),
            max_spool_games: 4096,
            poll_interval: Duration::from_secs(15),
            adopt_delay_max: Duration::from_secs(5),
            seed: rand::random(),
            max_games: None,
        }
    }
}

/// Stop requests from outside.
#[derive(Default)]
pub struct Signals {
    /// Finish the games in progress, upload what can be, and stop.
    pub stop: AtomicBool,
    /// Checkpoint the games in progress to the spool and stop now.
    pub abort: AtomicBool,
}

/// A snapshot for the status line.
#[derive(Clone, Debug, Default)]
pub struct WorkerStatus {
    /// The revision playing now.
    pub revision: Option<u64>,
    /// Games finished this session.
    pub games: u64,
    /// Moves played this session.
    pub moves: u64,
    /// Seconds this session.
    pub elapsed_seconds: f64,
    /// Games waiting in the spool.
    pub spool_games: u64,
    /// Their bytes.
    pub spool_bytes: u64,
    /// Games acknowledged by the server this session.
    pub uploaded: u64,
    /// Games refused by the server this session.
    pub rejected: u64,
    /// The last upload, as a short line.
    pub last_upload: Option<String>,
    /// The last problem, as a short line.
    pub last_error: Option<String>,
}

impl WorkerStatus {
    /// The one-line status.
    pub fn line(&self) -> String {
        let hours = (self.elapsed_seconds / 3600.0).max(1e-9);
        format!(
            "revision {} · {:.0} games/h · {:.0} moves/s · spool {} games ({} KiB) · uploaded {}{}{}",
            self.revision.map_or("-".to_string(), |r| r.to_string()),
            self.games as f64 / hours,
            self.moves as f64 / self.elapsed_seconds.max(1e-9),
            self.spool_games,
            self.spool_bytes / 1024,
            self.uploaded,
            self.last_upload.as_ref().map(|u| format!(" · last upload {u}")).unwrap_or_default(),
            self.last_error.as_ref().map(|e| format!(" · {e}")).unwrap_or_default(),
        )
    }
}

/// What a session did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WorkerSummary {
    /// Games finished.
    pub games: u64,
    /// Moves played.
    pub moves: u64,
    /// Games acknowledged by the server.
    pub uploaded: u64,
    /// Games refused by the server (kept in the spool's `rejected/`).
    pub rejected: u64,
    /// Games left in the spool, sent at the next start.
    pub spool_left: u64,
    /// Interrupted games checkpointed to the spool.
    pub checkpointed: u64,
    /// Revisions played with, in order of adoption.
    pub revisions: Vec<u64>,
}

/// Why a worker stopped early.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The server refused it for good.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The weights cache could not be set up.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The runtime could not start.
    #[error("starting the worker runtime: {0}")]
    Runtime(std::io::Error),
}

/// The model the threads play with.
struct Model {
    revision: u64,
    play: Play,
    rule: SpawnRule,
}

/// How a revision is played: the n-tuple network with expectimax, one game per thread, or the
/// policy-value network with MCTS, many games per thread batched into each network call.
enum Play {
    Expectimax { network: Arc<NTupleNetwork>, search: ExpectimaxConfig },
    Mcts { network: Arc<PolicyValueNet>, search: MctsConfig, parallel: usize },
}

struct Shared {
    config: WorkerConfig,
    signals: Arc<Signals>,
    spool: Spool,
    model: RwLock<Option<Arc<Model>>>,
    partials: Mutex<VecDeque<SpooledGame>>,
    games: AtomicU64,
    moves: AtomicU64,
    uploaded: AtomicU64,
    rejected: AtomicU64,
    checkpointed: AtomicU64,
    /// Set when the playing threads have all returned.
    players_done: AtomicBool,
    /// Set by the uploader while the spool holds `max_spool_games` or more: playing pauses.
    spool_full: AtomicBool,
    fatal: Mutex<Option<ClientError>>,
    last_upload: Mutex<Option<String>>,
    last_error: Mutex<Option<String>>,
    revisions: Mutex<Vec<u64>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.signals.stop.load(Ordering::Relaxed)
            || self.signals.abort.load(Ordering::Relaxed)
            || self.fatal.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn note_error(&self, message: String) {
        tracing::warn!("{message}");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }

    fn set_fatal(&self, error: ClientError) {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(error);
    }
}

/// See the crate documentation.
pub struct Worker;

impl Worker {
    /// Runs until stopped (by `signals`, `max_games`, or a fatal refusal). `on_status` is called a
    /// few times a second from this thread.
    pub fn run(
        config: WorkerConfig,
        signals: Arc<Signals>,
        on_status: &mut dyn FnMut(&WorkerStatus),
    ) -> Result<WorkerSummary, WorkerError> {
        let started = Instant::now();
        let spool = Spool::open(&config.spool_dir)?;
        let partials: VecDeque<SpooledGame> = spool.partials()?.into();
        if !partials.is_empty() {
            tracing::info!("{} interrupted games will be finished first", partials.len());
        }
        let mut fetcher = Fetcher::new(&config.cache_dir, config.cache_budget_bytes, RetryPolicy::default())?;
        if let Some(token) = &config.token {
            // Only the server's own weights URLs get the token; never a bucket's.
            fetcher.authorize(&config.server, token.clone());
        }
        let client = ServerClient::new(&config.server, config.latest_url.clone(), config.token.clone())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(WorkerError::Runtime)?;
        let shared = Arc::new(Shared {
            config: config.clone(),
            signals,
            spool,
            model: RwLock::new(None),
            partials: Mutex::new(partials),
            games: AtomicU64::new(0),
            moves: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            checkpointed: AtomicU64::new(0),
            players_done: AtomicBool::new(false),
            spool_full: AtomicBool::new(false),
            fatal: Mutex::new(None),
            last_upload: Mutex::new(None),
            last_error: Mutex::new(None),
            revisions: Mutex::new(Vec::new()),
        });
        let control = runtime.spawn(keep_model_current(Arc::clone(&shared), client.clone(), fetcher));
        let uploader = runtime.spawn(upload_spool(Arc::clone(&shared), client));
        // Playing threads hand finished games to one writer, so they never wait for the disk.
        let (finished, to_write) = std::sync::mpsc::sync_channel::<(SpooledGame, bool)>(1024);
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("worker-spool".into())
                .spawn(move || -> Result<(), SpoolError> {
                    for (game, resumed) in to_write {
                        shared.spool.put(&game)?;
                        if resumed {
                            shared.spool.remove_partial(&game.uuid);
                        }
                    }
                    Ok(())
                })
                .map_err(WorkerError::Runtime)?
        };
        let players: Vec<JoinHandle<Result<(), SpoolError>>> = (0..config.threads.max(1))
            .map(|thread| {
                let (shared, finished) = (Arc::clone(&shared), finished.clone());
                std::thread::Builder::new()
                    .name(format!("worker-play-{thread}"))
                    .spawn(move || play(&shared, thread as u64, &finished))
                    .map_err(WorkerError::Runtime)
            })
            .collect::<Result<_, _>>()?;
        drop(finished);
        let status = |shared: &Shared| {
            let (spool_games, spool_bytes) = shared.spool.size();
            WorkerStatus {
                revision: shared.model.read().unwrap_or_else(|e| e.into_inner()).as_ref().map(|m| m.revision),
                games: shared.games.load(Ordering::Relaxed),
                moves: shared.moves.load(Ordering::Relaxed),
                elapsed_seconds: started.elapsed().as_secs_f64(),
                spool_games,
                spool_bytes,
                uploaded: shared.uploaded.load(Ordering::Relaxed),
                rejected: shared.rejected.load(Ordering::Relaxed),
                last_upload: shared.last_upload.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                last_error: shared.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            }
        };
        while players.iter().any(|p| !p.is_finished()) {
            on_status(&status(&shared));
            std::thread::sleep(Duration::from_millis(250));
        }
        let mut spool_error = None;
        for player in players {
            if let Ok(Err(e)) = player.join() {
                spool_error.get_or_insert(e);
            }
        }
        // Every finished game reaches the spool before the uploader's last round.
        if let Ok(Err(e)) = writer.join() {
            spool_error.get_or_insert(e);
        }
        shared.players_done.store(true, Ordering::Relaxed);
        while !uploader.is_finished() {
            on_status(&status(&shared));
            std::thread::sleep(Duration::from_millis(100));
        }
        control.abort();
        let final_status = status(&shared);
        on_status(&final_status);
        runtime.shutdown_timeout(Duration::from_secs(1));
        if let Some(e) = spool_error {
            return Err(e.into());
        }
        if let Some(fatal) = shared.fatal.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(fatal.into());
        }
        Ok(WorkerSummary {
            games: final_status.games,
            moves: final_status.moves,
            uploaded: final_status.uploaded,
            rejected: final_status.rejected,
            spool_left: final_status.spool_games,
            checkpointed: shared.checkpointed.load(Ordering::Relaxed),
            revisions: shared.revisions.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        })
    }
}

/// One playing thread: finishes interrupted games first, then plays new ones, each with the model
/// current when it starts.
fn play(
    shared: &Shared,
    thread: u64,
    finished: &std::sync::mpsc::SyncSender<(SpooledGame, bool)>,
) -> Result<(), SpoolError> {
    let mut counter = 0u64;
    while !shared.stopping() {
        let Some(model) = shared.model.read().unwrap_or_else(|e| e.into_inner()).clone() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let (network, search) = match &model.play {
            Play::Expectimax { network, search } => (Arc::clone(network), *search),
            Play::Mcts { network, search, parallel } => {
                play_mcts(shared, thread, &mut counter, finished, &model, network, *search, *parallel)?;
                if shared.signals.abort.load(Ordering::Relaxed) {
                    break;
                }
                continue;
            }
        };
        let resumed = shared.partials.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        if resumed.is_none() && shared.spool_full.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let seed = derive_seed(shared.config.seed, (thread << 40) | counter);
        counter += 1;
        let mut game = match &resumed {
            Some(partial) => match Game::resume(partial.record.clone(), seed, model.rule) {
                Ok(game) => game,
                Err(e) => {
                    shared.note_error(format!("an interrupted game does not replay ({e}); set aside"));
                    shared.spool.remove_partial(&partial.uuid);
                    continue;
                }
            },
            None => Game::new(seed, model.rule),
        };
        let mut player = ExpectimaxPlayer::new(network, search);
        let mut interrupted = false;
        while let Some(direction) = player.choose(game.board()) {
            if shared.signals.abort.load(Ordering::Relaxed) {
                interrupted = true;
                break;
            }
            if game.play(direction).is_err() {
                break;
            }
        }
        let moves = game.moves() as u64;
        let uuid = resumed.as_ref().map_or_else(|| new_game_uuid(rand::random()), |p| p.uuid);
        let spooled = SpooledGame { uuid, revision: model.revision, record: game.into_record() };
        if interrupted {
            shared.spool.put_partial(&spooled)?;
            shared.checkpointed.fetch_add(1, Ordering::Relaxed);
            break;
        }
        if finished.send((spooled, resumed.is_some())).is_err() {
            // The writer stopped on an error, which `run` reports.
            break;
        }
        shared.moves.fetch_add(moves, Ordering::Relaxed);
        let games = shared.games.fetch_add(1, Ordering::Relaxed) + 1;
        if shared.config.max_games.is_some_and(|max| games >= max) {
            shared.signals.stop.store(true, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Plays a policy-value revision with MCTS, `parallel` games at once, until the revision changes,
/// a stop is asked (games in progress finish), the spool is full, or an abort (games in progress
/// are checkpointed). Interrupted games waiting in `shared.partials` are finished first.
#[allow(clippy::too_many_arguments)]
fn play_mcts(
    shared: &Shared,
    thread: u64,
    counter: &mut u64,
    finished: &std::sync::mpsc::SyncSender<(SpooledGame, bool)>,
    model: &Model,
    network: &Arc<PolicyValueNet>,
    search: MctsConfig,
    parallel: usize,
) -> Result<(), SpoolError> {
    // Resumed games keep their UUIDs: seed → UUID for the games this call finishes.
    let mut resumed_uuids = std::collections::HashMap::new();
    let mut resume = Vec::new();
    while let Some(partial) = shared.partials.lock().unwrap_or_else(|e| e.into_inner()).pop_front() {
        let seed = derive_seed(shared.config.seed, (thread << 40) | *counter);
        *counter += 1;
        resumed_uuids.insert(seed, partial.uuid);
        resume.push((partial.record, seed));
    }
    let mut failure = None;
    let driver = BatchedPlay::new(search, model.rule, parallel);
    let current =
        |shared: &Shared| shared.model.read().unwrap_or_else(|e| e.into_inner()).as_ref().map(|m| m.revision);
    let (_, interrupted) = driver.run_resuming(
        &**network,
        resume,
        || {
            if shared.stopping()
                || shared.spool_full.load(Ordering::Relaxed)
                || current(shared) != Some(model.revision)
            {
                return None;
            }
            let seed = derive_seed(shared.config.seed, (thread << 40) | *counter);
            *counter += 1;
            Some(seed)
        },
        |game| {
            let moves = game.record.steps.len() as u64;
            let resumed = resumed_uuids.remove(&game.seed);
            let uuid = resumed.unwrap_or_else(|| new_game_uuid(rand::random()));
            let spooled = SpooledGame { uuid, revision: model.revision, record: game.record };
            if failure.is_none() && finished.send((spooled, resumed.is_some())).is_err() {
                failure = Some(());
                return;
            }
            shared.moves.fetch_add(moves, Ordering::Relaxed);
            let games = shared.games.fetch_add(1, Ordering::Relaxed) + 1;
            if shared.config.max_games.is_some_and(|max| games >= max) {
                shared.signals.stop.store(true, Ordering::Relaxed);
            }
        },
        &shared.signals.abort,
    );
    for record in interrupted {
        // Only games with at least a move are worth keeping; the UUID is new unless resumed.
        if record.steps.is_empty() {
            continue;
        }
        let spooled = SpooledGame { uuid: new_game_uuid(rand::random()), revision: model.revision, record };
        shared.spool.put_partial(&spooled)?;
        shared.checkpointed.fetch_add(1, Ordering::Relaxed);
    }
    // Interrupted games that had been resumed are checkpointed again under a new UUID; drop
    // their old partial files.
    for uuid in resumed_uuids.values() {
        shared.spool.remove_partial(uuid);
    }
    if failure.is_some() {
        // The writer stopped on an error, which `run` reports.
        shared.signals.stop.store(true, Ordering::Relaxed);
    }
    if !shared.stopping() && shared.spool_full.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + rand::random::<f64>())
}

/// Keeps `shared.model` at the latest revision the worker could verify and load.
async fn keep_model_current(shared: Arc<Shared>, client: ServerClient, fetcher: Fetcher) {
    let fetcher = Arc::new(fetcher);
    let mut backoff = Duration::from_millis(500);
    let mut refused: Option<String> = None;
    loop {
        if shared.stopping() {
            return;
        }
        let wait = match client.latest().await {
            Ok(latest) => {
                let current =
                    shared.model.read().unwrap_or_else(|e| e.into_inner()).as_ref().map(|m| m.revision);
                if current != Some(latest.revision)
                    && refused.as_deref() != Some(latest.weights_sha256.as_str())
                {
                    match adopt(&shared, &fetcher, &latest, current.is_some()).await {
                        Ok(()) => backoff = Duration::from_millis(500),
                        Err(Adoption::UrlExpired(message)) => {
                            shared.note_error(format!("{message}; reading the latest record again"));
                            tokio::time::sleep(jittered(backoff)).await;
                            backoff = (backoff * 2).min(Duration::from_secs(60));
                            continue;
                        }
                        Err(Adoption::Refused(message)) => {
                            shared.note_error(format!(
                                "refusing revision {}: {message}; {}",
                                latest.revision,
                                current.map_or("waiting for a usable one".into(), |r| format!(
                                    "still playing revision {r}"
                                ))
                            ));
                            refused = Some(latest.weights_sha256.clone());
                        }
                        Err(Adoption::Transient(message)) => {
                            shared.note_error(message);
                            tokio::time::sleep(jittered(backoff)).await;
                            backoff = (backoff * 2).min(Duration::from_secs(60));
                            continue;
                        }
                        Err(Adoption::Fatal(error)) => {
                            shared.set_fatal(error);
                            return;
                        }
                    }
                }
                // Read the record again before it expires, and at least every poll interval.
                let left = (latest.deadline - OffsetDateTime::now_utc()).whole_milliseconds().max(0) as u64;
                shared
                    .config
                    .poll_interval
                    .min(Duration::from_millis(left / 2).max(Duration::from_millis(200)))
            }
            Err(ClientError::NoRevision) => Duration::from_millis(500),
            Err(error) if error.is_fatal() => {
                shared.set_fatal(error);
                return;
            }
            Err(error) => {
                shared.note_error(format!("reading the latest record: {error}"));
                let wait = jittered(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(60));
                wait
            }
        };
        let until = Instant::now() + wait;
        while Instant::now() < until && !shared.stopping() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

enum Adoption {
    UrlExpired(String),
    Refused(String),
    Transient(String),
    Fatal(ClientError),
}

async fn adopt(
    shared: &Arc<Shared>,
    fetcher: &Arc<Fetcher>,
    latest: &LatestInfo,
    delay: bool,
) -> Result<(), Adoption> {
    let kind = latest.model.get("kind").and_then(|k| k.as_str()).unwrap_or("ntuple").to_string();
    if kind != "ntuple" && kind != "policy_value" {
        return Err(Adoption::Fatal(ClientError::Incompatible(format!(
            "the server trains a {kind:?} model, which this worker cannot play"
        ))));
    }
    let expected = Expected { sha256: latest.weights_sha256.clone(), size: latest.weights_size };
    let path = match fetcher.fetch(&latest.weights_url, &expected).await {
        Ok(path) => path,
        Err(e @ FetchError::UrlRejected { .. }) => return Err(Adoption::UrlExpired(e.to_string())),
        Err(e @ FetchError::Mismatch { .. }) => return Err(Adoption::Refused(e.to_string())),
        Err(e) => return Err(Adoption::Transient(format!("downloading revision {}: {e}", latest.revision))),
    };
    let selfplay = &latest.selfplay;
    let four = selfplay.get("four_probability").and_then(|p| p.as_f64()).unwrap_or(0.1);
    let rule =
        SpawnRule::new(four).map_err(|e| Adoption::Refused(format!("selfplay.four_probability: {e}")))?;
    let play = if kind == "policy_value" {
        let search: MctsConfig = serde_json::from_value(selfplay.get("mcts").cloned().unwrap_or_default())
            .map_err(|e| Adoption::Refused(format!("selfplay.mcts: {e}")))?;
        search.validate().map_err(|e| Adoption::Refused(format!("selfplay.mcts: {e}")))?;
        let parallel =
            selfplay.get("parallel_games").and_then(|p| p.as_u64()).unwrap_or(64).clamp(1, 4096) as usize;
        let loaded = tokio::task::spawn_blocking(move || PolicyValueNet::load(&path)).await;
        match loaded {
            Ok(Ok((network, _))) => Play::Mcts { network: Arc::new(network), search, parallel },
            Ok(Err(e)) => return Err(Adoption::Refused(e.to_string())),
            Err(e) => return Err(Adoption::Transient(e.to_string())),
        }
    } else {
        let loaded = tokio::task::spawn_blocking(move || weights_file::load(&path, None)).await;
        let network = match loaded {
            Ok(Ok((network, _))) => network,
            Ok(Err(e)) => return Err(Adoption::Refused(e.to_string())),
            Err(e) => return Err(Adoption::Transient(e.to_string())),
        };
        let depth = selfplay.get("depth").and_then(|d| d.as_u64()).unwrap_or(1).clamp(1, 8) as u32;
        let search = ExpectimaxConfig {
            depth,
            four_probability: four as f32,
            transposition_bits: None,
            ..ExpectimaxConfig::default()
        };
        Play::Expectimax { network: Arc::new(network), search }
    };
    if delay && !shared.config.adopt_delay_max.is_zero() {
        // Spread a fleet's switch (and its first uploads of the new revision) over a few seconds.
        let pause = shared.config.adopt_delay_max.mul_f64(rand::random::<f64>());
        tokio::time::sleep(pause).await;
    }
    *shared.model.write().unwrap_or_else(|e| e.into_inner()) =
        Some(Arc::new(Model { revision: latest.revision, play, rule }));
    shared.revisions.lock().unwrap_or_else(|e| e.into_inner()).push(latest.revision);
    fetcher.set_in_use(&[latest.weights_sha256.as_str()]);
    let _ = fetcher.evict(&latest.weights_sha256);
    tracing::info!("playing revision {}", latest.revision);
    Ok(())
}

/// Sends the spool to the server in batches; deletes only acknowledged games.
async fn upload_spool(shared: Arc<Shared>, client: ServerClient) {
    let mut backoff = Duration::from_millis(500);
    let mut last_attempt = Instant::now();
    let mut batch_limit = shared.config.batch_games.max(1);
    let mut final_failures = 0;
    loop {
        if shared.signals.abort.load(Ordering::Relaxed) {
            return;
        }
        let fatal = shared.fatal.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        let finishing = fatal || shared.players_done.load(Ordering::Relaxed);
        let (waiting, _) = shared.spool.size();
        shared.spool_full.store(waiting >= shared.config.max_spool_games, Ordering::Relaxed);
        if waiting == 0 {
            if finishing {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let due = waiting as usize >= batch_limit
            || last_attempt.elapsed() >= shared.config.upload_interval
            || finishing;
        if !due || fatal {
            if fatal {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        last_attempt = Instant::now();
        let spool = shared.spool.clone();
        let limit = batch_limit;
        let prepared = tokio::task::spawn_blocking(move || -> Result<(Vec<SpooledGame>, Vec<u8>), String> {
            let games = spool.take_batch(limit).map_err(|e| e.to_string())?;
            let encoded: Vec<(zero2048_protocol::Uuid, u64, Claims, Vec<u8>)> = games
                .iter()
                .filter_map(|g| {
                    let summary = g.record.replay().ok()?;
                    let claims =
                        Claims { score: summary.score, moves: summary.moves, max_tile: summary.max_tile };
                    Some((g.uuid, g.revision, claims, g.record.encode().ok()?))
                })
                .collect();
            let raw = encode_batch(encoded.iter().map(|(u, r, c, b)| (*u, *r, *c, b.as_slice())))
                .map_err(|e| e.to_string())?;
            Ok((games, compress(&raw, 3)))
        })
        .await;
        let (games, body) = match prepared {
            Ok(Ok(prepared)) => prepared,
            Ok(Err(e)) => {
                shared.note_error(format!("preparing an upload: {e}"));
                if finishing {
                    return;
                }
                tokio::time::sleep(jittered(backoff)).await;
                continue;
            }
            Err(e) => {
                shared.note_error(format!("preparing an upload: {e}"));
                return;
            }
        };
        if games.is_empty() {
            continue;
        }
        match client.upload(body).await {
            Ok(reply) => {
                let done: Vec<_> = reply.accepted.iter().chain(&reply.duplicates).copied().collect();
                if let Err(e) = shared.spool.remove(&done) {
                    shared.note_error(e.to_string());
                }
                for rejection in &reply.rejected {
                    shared.spool.set_aside(&rejection.uuid, &rejection.reason);
                    shared.note_error(format!(
                        "the server refused game {}: {}",
                        rejection.uuid, rejection.reason
                    ));
                }
                shared.uploaded.fetch_add(done.len() as u64, Ordering::Relaxed);
                shared.rejected.fetch_add(reply.rejected.len() as u64, Ordering::Relaxed);
                let now = OffsetDateTime::now_utc();
                *shared.last_upload.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                    "{:02}:{:02}:{:02} UTC ({} games)",
                    now.hour(),
                    now.minute(),
                    now.second(),
                    done.len()
                ));
                backoff = Duration::from_millis(500);
                batch_limit = shared.config.batch_games.max(1);
            }
            Err(error) if error.is_fatal() => {
                shared.set_fatal(error);
                return;
            }
            Err(ClientError::Refused { status, message }) => {
                if games.len() > 1 {
                    // The batch as a whole was refused (too large, say): try smaller ones.
                    batch_limit = (games.len() / 2).max(1);
                    shared.note_error(format!(
                        "upload refused ({status}: {message}); retrying in batches of {batch_limit}"
                    ));
                } else {
                    shared.spool.set_aside(&games[0].uuid, &message);
                    shared.rejected.fetch_add(1, Ordering::Relaxed);
                    shared.note_error(format!(
                        "the server refused game {} ({status}): {message}",
                        games[0].uuid
                    ));
                }
            }
            Err(error) => {
                let retry_after = match &error {
                    ClientError::Transient { retry_after, .. } => *retry_after,
                    _ => None,
                };
                shared.note_error(format!("upload failed, will retry: {error}"));
                if finishing {
                    final_failures += 1;
                    if final_failures >= 3 {
                        return;
                    }
                }
                let wait = retry_after.unwrap_or_default().max(jittered(backoff));
                backoff = (backoff * 2).min(Duration::from_secs(60));
                let until = Instant::now() + wait;
                while Instant::now() < until && !shared.signals.abort.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
