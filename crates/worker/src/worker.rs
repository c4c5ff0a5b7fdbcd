//! The worker loop: a control task keeping the model current, the game runner's threads (the same
//! runner the local trainer uses) handing finished games to a spool writer, and an uploader
//! emptying the spool into the server.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use zero2048_game::Board;
use zero2048_model::{PolicyValueNet, weights_file};
use zero2048_protocol::{BatchGame, LatestRecord, ModelSpec, compress, encode_batch};
use zero2048_selfplay::{
    Budget, Control, CurrentModel, Engine, FinishedGame, GameSink, Model, PartialGame, Runner, SinkClosed,
};
use zero2048_storage::{Expected, FetchError, Fetched, Fetcher, PatchSource, RetryPolicy, Secret};

use crate::client::{ClientError, ServerClient};
use crate::spool::{Spool, SpoolError, SpooledGame};

/// The `worker:` section of the configuration file: how a worker works, every key optional.
/// The worker's flags override it; these defaults are the only ones.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Playing threads (0 = one per core).
    pub threads: usize,
    /// Where finished games wait for the server's acknowledgement.
    pub spool_dir: PathBuf,
    /// Where downloaded weights are cached (by SHA-256).
    pub cache_dir: PathBuf,
    /// Disk budget of the weights cache in MiB: older revisions are evicted past it (never the
    /// one in use).
    pub cache_budget_mib: u64,
    /// Games per upload (up to 16 times as many while the spool holds a backlog).
    pub batch_games: usize,
    /// Upload a partial batch after this many seconds.
    pub upload_interval_seconds: f64,
    /// Playing pauses while the spool holds this many games, so a worker that plays faster than
    /// the server accepts (or while the server is down) waits instead of filling its disk.
    pub max_spool_games: u64,
    /// Read the latest record this often (seconds).
    pub poll_interval_seconds: f64,
    /// A new revision is adopted after a random delay of up to this many seconds.
    pub adopt_delay_seconds: f64,
}

impl Default for WorkerSettings {
    fn default() -> WorkerSettings {
        WorkerSettings {
            threads: 0,
            spool_dir: PathBuf::from("zero2048-spool"),
            cache_dir: PathBuf::from("zero2048-cache"),
            cache_budget_mib: 2048,
            batch_games: 64,
            upload_interval_seconds: 5.0,
            max_spool_games: 4096,
            poll_interval_seconds: 15.0,
            adopt_delay_seconds: 5.0,
        }
    }
}

impl WorkerSettings {
    /// Checks every value; the message names the key under `worker`.
    pub fn validate(&self) -> Result<(), String> {
        let seconds = |key: &str, value: f64, min: f64| {
            if value.is_finite() && value >= min && value <= 86_400.0 {
                Ok(())
            } else {
                Err(format!("worker.{key}: {value} is not a number of seconds in {min}..=86400"))
            }
        };
        if self.threads > 1024 {
            return Err(format!("worker.threads: {} threads; at most 1024 (0 = one per core)", self.threads));
        }
        if !(1..=10_000).contains(&self.batch_games) {
            return Err(format!("worker.batch_games: {} games per upload; 1 to 10000", self.batch_games));
        }
        if self.max_spool_games == 0 {
            return Err("worker.max_spool_games: must be at least 1".into());
        }
        if !(1..=1 << 30).contains(&self.cache_budget_mib) {
            return Err(format!("worker.cache_budget_mib: {} MiB; at least 1", self.cache_budget_mib));
        }
        seconds("upload_interval_seconds", self.upload_interval_seconds, 0.01)?;
        seconds("poll_interval_seconds", self.poll_interval_seconds, 0.01)?;
        seconds("adopt_delay_seconds", self.adopt_delay_seconds, 0.0)?;
        Ok(())
    }
}

/// How a worker works.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The server's base URL.
    pub server: String,
    /// More base URLs of the same run (API servers behind no load balancer), tried in turn
    /// after `server` when one cannot be reached.
    pub fallback_servers: Vec<String>,
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
    /// Playing pauses while the spool holds this many games.
    pub max_spool_games: u64,
    /// Read the latest record this often.
    pub poll_interval: Duration,
    /// A new revision is adopted after a random delay up to this long.
    pub adopt_delay_max: Duration,
    /// Seed of this worker's games (pick a random one: two workers with one seed play the same games).
    pub seed: u64,
    /// Play this many games and stop (benchmarks and tests).
    pub max_games: Option<u64>,
}

impl WorkerConfig {
    /// A worker of `server` with `settings` (threads 0 = one per core) and a random seed.
    pub fn new(server: &str, settings: &WorkerSettings) -> WorkerConfig {
        let threads = match settings.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        WorkerConfig {
            server: server.to_string(),
            fallback_servers: Vec::new(),
            latest_url: None,
            token: None,
            threads,
            spool_dir: settings.spool_dir.clone(),
            cache_dir: settings.cache_dir.clone(),
            cache_budget_bytes: settings.cache_budget_mib << 20,
            batch_games: settings.batch_games,
            upload_interval: Duration::from_secs_f64(settings.upload_interval_seconds),
            max_spool_games: settings.max_spool_games,
            poll_interval: Duration::from_secs_f64(settings.poll_interval_seconds),
            adopt_delay_max: Duration::from_secs_f64(settings.adopt_delay_seconds),
            seed: rand::random(),
            max_games: None,
        }
    }
}

/// Stop requests from outside: `stop` finishes the games in progress, uploads what can be, and
/// stops; `abort` checkpoints the games in progress to the spool and stops now. (`pause` is the
/// worker's own: set while the spool is full.)
pub type Signals = Control;

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
    /// Bytes of weights in the download cache.
    pub cache_bytes: u64,
    /// The cache's disk budget.
    pub cache_budget_bytes: u64,
    /// Bytes of weights downloaded this session.
    pub downloaded_bytes: u64,
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
            "revision {} · {:.0} games/h · {:.0} moves/s · spool {} games ({} KiB) · cache {} of {} MiB · downloaded {:.1} MiB · uploaded {}{}{}",
            self.revision.map_or("-".to_string(), |r| r.to_string()),
            self.games as f64 / hours,
            self.moves as f64 / self.elapsed_seconds.max(1e-9),
            self.spool_games,
            self.spool_bytes / 1024,
            self.cache_bytes >> 20,
            self.cache_budget_bytes >> 20,
            self.downloaded_bytes as f64 / (1 << 20) as f64,
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
    /// Bytes of weights downloaded (whole files, compressed files and deltas).
    pub weights_downloaded_bytes: u64,
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

struct Shared {
    config: WorkerConfig,
    signals: Arc<Signals>,
    spool: Spool,
    model: Arc<CurrentModel>,
    games: AtomicU64,
    moves: AtomicU64,
    uploaded: AtomicU64,
    rejected: AtomicU64,
    checkpointed: AtomicU64,
    /// Set when the playing threads have all returned.
    players_done: AtomicBool,
    fatal: Mutex<Option<ClientError>>,
    last_upload: Mutex<Option<String>>,
    last_error: Mutex<Option<String>>,
    revisions: Mutex<Vec<u64>>,
    /// Bytes of weights (files and patches) downloaded this session.
    downloaded_bytes: AtomicU64,
    /// Finished games handed to the spool writer and not yet written: they count towards the
    /// spool limit, or a slow disk would let the writer's queue grow far past it.
    handed_to_writer: AtomicU64,
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

    /// A success after trouble: the status line stops showing the last error.
    fn clear_error(&self) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn set_fatal(&self, error: ClientError) {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(error);
        // The threads start no new game; the ones in progress reach the spool for a later run.
        self.signals.stop.store(true, Ordering::Relaxed);
    }

    /// Pauses playing while the spool holds `max_spool_games` or more.
    fn pace(&self) {
        let pending = self.spool.waiting() + self.handed_to_writer.load(Ordering::Relaxed);
        let full = pending >= self.config.max_spool_games;
        self.signals.pause.store(full, Ordering::Relaxed);
    }
}

/// A playing thread's sink: finished games go to the spool writer, interrupted ones to the spool's
/// `partial/` at once.
struct SpoolSink {
    shared: Arc<Shared>,
    budget: Arc<Budget>,
    finished: SyncSender<SpooledGame>,
}

impl GameSink for SpoolSink {
    fn may_start(&mut self) -> bool {
        self.budget.claim()
    }

    fn finished(&mut self, game: FinishedGame, _path: &[(Board, u32)]) -> Result<(), SinkClosed> {
        let moves = game.record.steps.len() as u64;
        let spooled = SpooledGame {
            uuid: game.uuid,
            revision: game.revision,
            origin: game.origin,
            record: game.record,
        };
        self.shared.handed_to_writer.fetch_add(1, Ordering::Relaxed);
        if self.finished.send(spooled).is_err() {
            self.shared.handed_to_writer.fetch_sub(1, Ordering::Relaxed);
            return Err(SinkClosed);
        }
        self.shared.pace();
        self.shared.moves.fetch_add(moves, Ordering::Relaxed);
        self.shared.games.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn interrupted(&mut self, game: PartialGame) -> Result<(), SinkClosed> {
        // Only games with at least a move are worth keeping.
        if game.record.steps.is_empty() {
            return Ok(());
        }
        let spooled = SpooledGame {
            uuid: game.uuid,
            revision: game.revision,
            origin: game.origin,
            record: game.record,
        };
        match self.shared.spool.put_partial(&spooled) {
            Ok(()) => {
                self.shared.checkpointed.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.shared.note_error(format!("checkpointing a game: {e}"));
                Err(SinkClosed)
            }
        }
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
        let partials: Vec<SpooledGame> = spool.partials()?;
        if !partials.is_empty() {
            tracing::info!("{} interrupted games will be finished first", partials.len());
        }
        let mut fetcher = Fetcher::new(&config.cache_dir, config.cache_budget_bytes, RetryPolicy::default())?;
        if let Some(token) = &config.token {
            // Only the servers' own weights URLs get the token; never a bucket's.
            for server in std::iter::once(&config.server).chain(&config.fallback_servers) {
                fetcher.authorize(server, token.clone());
            }
        }
        let machine = spool.machine()?;
        tracing::info!("this worker is {machine} to the server");
        let servers: Vec<String> =
            std::iter::once(&config.server).chain(&config.fallback_servers).cloned().collect();
        let client = ServerClient::new(&servers, config.latest_url.clone(), config.token.clone(), machine)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(WorkerError::Runtime)?;
        // A refused token is known before anything is downloaded or played; an unreachable server
        // is not an error yet (uploads retry).
        match runtime.block_on(client.check_token()) {
            Err(ClientError::Unauthorized(_)) if config.token.is_none() => {
                return Err(ClientError::Unauthorized(
                    "the server takes games only from workers with a token: pass --token or set ZERO2048_TOKEN \
                     (its operator creates one with `zero2048 token add NAME`)"
                        .into(),
                )
                .into());
            }
            Err(error) if error.is_fatal() => return Err(error.into()),
            _ => {}
        }
        let shared = Arc::new(Shared {
            config: config.clone(),
            signals: Arc::clone(&signals),
            spool,
            model: Arc::new(CurrentModel::new()),
            games: AtomicU64::new(0),
            moves: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            checkpointed: AtomicU64::new(0),
            players_done: AtomicBool::new(false),
            fatal: Mutex::new(None),
            last_upload: Mutex::new(None),
            last_error: Mutex::new(None),
            revisions: Mutex::new(Vec::new()),
            downloaded_bytes: AtomicU64::new(0),
            handed_to_writer: AtomicU64::new(0),
        });
        shared.pace();
        let fetcher = Arc::new(fetcher);
        let control =
            runtime.spawn(keep_model_current(Arc::clone(&shared), client.clone(), Arc::clone(&fetcher)));
        let uploader = runtime.spawn(upload_spool(Arc::clone(&shared), client));
        // Playing threads hand finished games to one writer, so they never wait for the disk.
        let (finished, to_write) = std::sync::mpsc::sync_channel::<SpooledGame>(1024);
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("worker-spool".into())
                .spawn(move || -> Result<(), SpoolError> {
                    for game in to_write {
                        let written = shared.spool.put(&game);
                        shared.handed_to_writer.fetch_sub(1, Ordering::Relaxed);
                        written?;
                        // A game resumed from a checkpoint is whole now.
                        shared.spool.remove_partial(&game.uuid);
                        shared.pace();
                    }
                    Ok(())
                })
                .map_err(WorkerError::Runtime)?
        };
        let resume: VecDeque<PartialGame> = partials
            .into_iter()
            .map(|p| PartialGame { uuid: p.uuid, revision: p.revision, origin: p.origin, record: p.record })
            .collect();
        let runner = Runner {
            threads: config.threads.max(1),
            name: "worker-play".into(),
            seed: config.seed,
            model: Arc::clone(&shared.model),
            control: Arc::clone(&signals),
            resume: Arc::new(Mutex::new(resume)),
        };
        let budget = Arc::new(Budget::new(config.max_games));
        let players = runner
            .spawn(|_| SpoolSink {
                shared: Arc::clone(&shared),
                budget: Arc::clone(&budget),
                finished: finished.clone(),
            })
            .map_err(WorkerError::Runtime)?;
        drop(finished);
        let status = |shared: &Shared| {
            let (_, spool_bytes) = shared.spool.size();
            let (cache_bytes, cache_budget_bytes) = fetcher.usage().unwrap_or((0, config.cache_budget_bytes));
            WorkerStatus {
                cache_bytes,
                cache_budget_bytes,
                downloaded_bytes: shared.downloaded_bytes.load(Ordering::Relaxed),
                revision: shared.model.revision(),
                games: shared.games.load(Ordering::Relaxed),
                moves: shared.moves.load(Ordering::Relaxed),
                elapsed_seconds: started.elapsed().as_secs_f64(),
                spool_games: shared.spool.waiting(),
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
        for player in players {
            if player.join().is_err() {
                tracing::error!("a playing thread panicked");
            }
        }
        // Every finished game reaches the spool before the uploader's last round.
        let spool_error = writer.join().ok().and_then(Result::err);
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
            weights_downloaded_bytes: shared.downloaded_bytes.load(Ordering::Relaxed),
        })
    }
}

/// The batch size after the server refused a whole batch of `refused` games (too large, say):
/// half, down to single games, which are then refused (and set aside) one by one.
fn halved(refused: usize) -> usize {
    (refused / 2).max(1)
}

fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + rand::random::<f64>())
}

/// A wait as people read it in a log line: "0.7 s", "12 s".
fn seconds(wait: Duration) -> String {
    let s = wait.as_secs_f64();
    if s < 10.0 { format!("{s:.1} s") } else { format!("{s:.0} s") }
}

/// The next wait after a failure: doubled, at most a minute.
fn backoff_after(delay: Duration) -> Duration {
    (delay * 2).min(Duration::from_secs(60))
}

/// Keeps `shared.model` at the latest revision the worker could verify and load.
async fn keep_model_current(shared: Arc<Shared>, client: ServerClient, fetcher: Arc<Fetcher>) {
    let mut backoff = Duration::from_millis(500);
    let mut refused: Option<String> = None;
    loop {
        if shared.stopping() {
            return;
        }
        let wait = match client.latest().await {
            Ok(latest) => {
                let current = shared.model.revision();
                if current != Some(latest.revision)
                    && refused.as_deref() != Some(latest.weights_sha256.as_str())
                {
                    match adopt(&shared, &fetcher, &latest, current.is_some()).await {
                        Ok(()) => {
                            backoff = Duration::from_millis(500);
                            shared.clear_error();
                        }
                        Err(Adoption::UrlExpired(message)) => {
                            let wait = jittered(backoff);
                            shared.note_error(format!(
                                "{message}; reading the latest record again in {}",
                                seconds(wait)
                            ));
                            tokio::time::sleep(wait).await;
                            backoff = backoff_after(backoff);
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
                            let wait = jittered(backoff);
                            shared.note_error(format!("{message}; retrying in {}", seconds(wait)));
                            tokio::time::sleep(wait).await;
                            backoff = backoff_after(backoff);
                            continue;
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
                let wait = jittered(backoff);
                shared
                    .note_error(format!("reading the latest record: {error}; retrying in {}", seconds(wait)));
                backoff = backoff_after(backoff);
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
}

/// Loads a verified weights file as the model `spec` names, checking the file against it.
fn load_engine(path: &std::path::Path, spec: &ModelSpec) -> Result<Engine, String> {
    match spec {
        ModelSpec::Ntuple { tuples, stages, stage_tile } => {
            let expected = zero2048_model::NTupleConfig {
                tuples: tuples.clone(),
                stages: *stages,
                stage_tile: *stage_tile,
            };
            let (network, _) = weights_file::load(path, Some(&expected)).map_err(|e| e.to_string())?;
            Ok(Engine::Ntuple(Arc::new(network)))
        }
        ModelSpec::PolicyValue { filters, blocks } => {
            let (network, _) = PolicyValueNet::load(path).map_err(|e| e.to_string())?;
            let c = network.config();
            if c.filters != *filters as usize || c.blocks != *blocks as usize {
                return Err(format!(
                    "the file holds a {}×{} network; the latest record names {filters}×{blocks}",
                    c.filters, c.blocks
                ));
            }
            Ok(Engine::PolicyValue(Arc::new(network)))
        }
    }
}

async fn adopt(
    shared: &Arc<Shared>,
    fetcher: &Arc<Fetcher>,
    latest: &LatestRecord,
    delay: bool,
) -> Result<(), Adoption> {
    let expected = Expected { sha256: latest.weights_sha256.clone(), size: latest.weights_size };
    let started = Instant::now();
    tracing::info!(
        "fetching revision {} ({:.1} MiB, SHA-256 {}…)",
        latest.revision,
        latest.weights_size as f64 / (1 << 20) as f64,
        &latest.weights_sha256[..12.min(latest.weights_sha256.len())]
    );
    let patches: Vec<PatchSource> = [&latest.delta, &latest.compressed]
        .into_iter()
        .flatten()
        .map(|offer| PatchSource {
            url: offer.url.clone(),
            expected: Expected { sha256: offer.sha256.clone(), size: offer.size },
            base_sha256: offer.base_sha256.clone(),
        })
        .collect();
    let path = match fetcher.fetch_smallest(&latest.weights_url, &expected, &patches).await {
        Ok((path, fetched)) => {
            let seconds = started.elapsed().as_secs_f64();
            shared.downloaded_bytes.fetch_add(fetched.bytes(), Ordering::Relaxed);
            tracing::info!(
                "revision {} {} and verified in {seconds:.1} s: {:.1} MiB downloaded for a {:.1} MiB file ({:.1}%)",
                latest.revision,
                match fetched {
                    Fetched::Cached => "found in the cache",
                    Fetched::Delta { .. } => "fetched as a delta from a cached revision",
                    Fetched::Compressed { .. } => "fetched compressed",
                    Fetched::Whole { .. } => "fetched whole",
                },
                fetched.bytes() as f64 / (1 << 20) as f64,
                latest.weights_size as f64 / (1 << 20) as f64,
                100.0 * fetched.bytes() as f64 / latest.weights_size.max(1) as f64
            );
            path
        }
        Err(e @ FetchError::UrlRejected { .. }) => return Err(Adoption::UrlExpired(e.to_string())),
        Err(e @ FetchError::Mismatch { .. }) => return Err(Adoption::Refused(e.to_string())),
        Err(e) => return Err(Adoption::Transient(format!("downloading revision {}: {e}", latest.revision))),
    };
    let spec = latest.spec.model.clone();
    let engine = match tokio::task::spawn_blocking(move || load_engine(&path, &spec)).await {
        Ok(Ok(engine)) => engine,
        Ok(Err(message)) => return Err(Adoption::Refused(message)),
        Err(e) => return Err(Adoption::Transient(e.to_string())),
    };
    if delay && !shared.config.adopt_delay_max.is_zero() {
        // Spread a fleet's switch (and its first uploads of the new revision) over a few seconds.
        let pause = shared.config.adopt_delay_max.mul_f64(rand::random::<f64>());
        tokio::time::sleep(pause).await;
    }
    shared.model.set(Model { revision: latest.revision, engine, play: latest.spec.play.clone() });
    shared.revisions.lock().unwrap_or_else(|e| e.into_inner()).push(latest.revision);
    fetcher.set_in_use(&[latest.weights_sha256.as_str()]);
    let _ = fetcher.evict(&latest.weights_sha256);
    tracing::info!("adopted revision {}: new games play it", latest.revision);
    Ok(())
}
/// How many times `batch_games` one upload may carry while the spool holds a backlog (a
/// server that finds it too large answers 413 and the batch is halved).
const BACKLOG_BATCH_FACTOR: usize = 16;

/// Sends the spool to the server in batches; deletes only acknowledged games.
async fn upload_spool(shared: Arc<Shared>, client: ServerClient) {
    let mut backoff = Duration::from_millis(500);
    let mut last_attempt = Instant::now();
    let mut batch_limit = shared.config.batch_games.max(1);
    // Once playing is over, the last uploads keep trying this long (a server restarting, say)
    // before the worker exits and leaves the rest in the spool for its next start.
    const FINAL_PATIENCE: Duration = Duration::from_secs(30);
    let mut failing_since: Option<Instant> = None;
    loop {
        if shared.signals.abort.load(Ordering::Relaxed) {
            return;
        }
        let fatal = shared.fatal.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        let finishing = fatal || shared.players_done.load(Ordering::Relaxed);
        let waiting = shared.spool.waiting();
        shared.pace();
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
        // A backlog goes up in larger batches: one upload at a time, each a round trip, would
        // otherwise cap a fast worker below its playing rate (and pause it at the spool limit).
        let limit = if batch_limit == shared.config.batch_games.max(1) {
            (waiting as usize).clamp(batch_limit, batch_limit * BACKLOG_BATCH_FACTOR)
        } else {
            batch_limit
        };
        let prepared = tokio::task::spawn_blocking(move || -> Result<(Vec<SpooledGame>, Vec<u8>), String> {
            let games = spool.take_batch(limit).map_err(|e| e.to_string())?;
            let encoded: Vec<Vec<u8>> = games
                .iter()
                .map(|g| g.record.encode())
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            let raw = encode_batch(games.iter().zip(&encoded).map(|(g, record)| BatchGame {
                uuid: g.uuid,
                revision: g.revision,
                origin: g.origin,
                record,
            }))
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
                failing_since = None;
                batch_limit = shared.config.batch_games.max(1);
                if reply.rejected.is_empty() {
                    shared.clear_error();
                }
                shared.pace();
            }
            Err(error) if error.is_fatal() => {
                shared.set_fatal(error);
                return;
            }
            Err(ClientError::Refused { status, message }) => {
                if games.len() > 1 {
                    // The batch as a whole was refused (too large, say): try smaller ones.
                    batch_limit = halved(games.len());
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
                let wait = retry_after.unwrap_or_default().max(jittered(backoff));
                shared.note_error(format!("upload failed: {error}; retrying in {}", seconds(wait)));
                if finishing && failing_since.get_or_insert_with(Instant::now).elapsed() >= FINAL_PATIENCE {
                    tracing::warn!(
                        "the server did not take the last {} games for {} s; they stay in the spool for the next start",
                        shared.spool.waiting(),
                        FINAL_PATIENCE.as_secs()
                    );
                    return;
                }
                backoff = backoff_after(backoff);
                let until = Instant::now() + wait;
                while Instant::now() < until && !shared.signals.abort.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_batch_is_halved_down_to_single_games() {
        let mut size = 64;
        let mut sizes = Vec::new();
        while size > 1 {
            size = halved(size);
            sizes.push(size);
        }
        assert_eq!(sizes, [32, 16, 8, 4, 2, 1]);
        assert_eq!(halved(1), 1);
        assert_eq!(halved(3), 1);
    }

    #[test]
    fn backoff_doubles_up_to_a_minute_and_jitter_stays_within_half_and_one_and_a_half() {
        let mut delay = Duration::from_millis(500);
        for _ in 0..20 {
            delay = backoff_after(delay);
        }
        assert_eq!(delay, Duration::from_secs(60));
        assert_eq!(backoff_after(Duration::from_secs(1)), Duration::from_secs(2));
        for _ in 0..1000 {
            let jittered = jittered(Duration::from_secs(10));
            assert!(
                jittered >= Duration::from_secs(5) && jittered <= Duration::from_secs(15),
                "{jittered:?}"
            );
        }
    }

    #[test]
    fn settings_are_checked_by_key() {
        WorkerSettings::default().validate().unwrap();
        let bad = |settings: WorkerSettings, key: &str| {
            let message = settings.validate().unwrap_err();
            assert!(message.starts_with(&format!("worker.{key}:")), "{message}");
        };
        bad(WorkerSettings { batch_games: 0, ..WorkerSettings::default() }, "batch_games");
        bad(WorkerSettings { max_spool_games: 0, ..WorkerSettings::default() }, "max_spool_games");
        bad(
            WorkerSettings { upload_interval_seconds: f64::NAN, ..WorkerSettings::default() },
            "upload_interval_seconds",
        );
        bad(WorkerSettings { cache_budget_mib: 0, ..WorkerSettings::default() }, "cache_budget_mib");
    }
}
