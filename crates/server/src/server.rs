//! Wiring a server together: listener, storage, run, API, and the background tasks that keep the
//! latest record's URL valid.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::oneshot;
use zero2048_storage::StorageAdapter;
use zero2048_train::db::{DatabaseUrl, GameShelf};
use zero2048_train::{
    Budget, LiveState, RunDb, RunObserver, SelfPlay, Summary, TrainConfig, TrainError, TrainingRun,
};

use crate::api::{self, AppState};
use crate::config::ApiConfig;
use crate::metrics::Metrics;
use crate::rate::RateLimiter;
use crate::tokens::{TokenStore, TokenStoreError};

/// What a server process does for its run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// API and learner in one process (`zero2048 train`, and `server` by default).
    #[default]
    All,
    /// Takes uploads and serves the latest record, weights, status and dashboard; holds no
    /// run state of its own, so any number run side by side on the run's database and storage.
    Api,
    /// The run's one learner: learns what API servers store, publishes revisions; takes no
    /// uploads itself (its status and dashboard still answer).
    Learner,
}

/// How to start a server.
#[derive(Clone)]
pub struct ServerOptions {
    /// What this process does.
    pub role: Role,
    /// Storage and the `server:` section (host, port, `localhost_weights`).
    pub storage: zero2048_storage::Config,
    /// The `api:` section.
    pub api: ApiConfig,
    /// The `train:` section.
    pub train: TrainConfig,
    /// The run's local files: the SQLite database, or (with [`database`](Self::database) on
    /// PostgreSQL) the name beside which the run's lock file and state directory live.
    pub db_path: PathBuf,
    /// The run database: SQLite at `db_path`, or PostgreSQL.
    pub database: DatabaseUrl,
    /// Start a new run from this weights file instead of zero.
    pub resume_from: Option<PathBuf>,
    /// Publish the starting network as revision 1 when the run has none (a server whose games
    /// all come from remote workers needs one for them to play).
    pub publish_initial: bool,
}

/// A server failing to start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address cannot be bound.
    #[error("cannot listen on {address}: {source} (choose another with --port; --port 0 picks a free one)")]
    Bind {
        /// host:port.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// Storage could not be opened.
    #[error("opening storage: {0}")]
    Storage(#[from] zero2048_storage::StorageError),
    /// The run could not be opened or failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The tokens table could not be opened.
    #[error(transparent)]
    Tokens(#[from] TokenStoreError),
    /// The run database could not be opened.
    #[error(transparent)]
    Db(#[from] zero2048_train::db::DbError),
}

/// A running server: the HTTP API serves in the background; the learner runs in [`Server::train`].
pub struct Server {
    run: TrainingRun,
    address: SocketAddr,
    adapter: Arc<StorageAdapter>,
    shutdown: Option<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    runtime: tokio::runtime::Handle,
    state: Arc<AppState>,
}

impl Server {
    /// Binds the listener, opens storage and the run, and starts serving.
    pub fn start(
        mut options: ServerOptions,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<Server, ServerError> {
        let (listener, address) = bind(&mut options.storage.server, runtime)?;
        let adapter = Arc::new(runtime.block_on(StorageAdapter::from_config(&options.storage))?);
        let catch_up = {
            let _entered = runtime.enter();
            adapter.spawn_catch_up()
        };
        let deadline_seconds = options.train.deadline_seconds;
        let mut run = TrainingRun::open(
            options.train,
            Arc::clone(&adapter),
            runtime.handle().clone(),
            &options.db_path,
            &options.database,
            options.resume_from.as_deref(),
        )?;
        if options.role == Role::Learner {
            run.follow_other_ingest();
        }
        if options.publish_initial
            && let Some(row) = run.publish_initial()?
        {
            tracing::info!("published the starting network as revision {}", row.revision);
        }
        let state = Arc::new(AppState {
            live: run.live(),
            adapter: Arc::clone(&adapter),
            limiter: RateLimiter::new(options.api.uploads_per_minute),
            api: options.api,
            ingest_db: Mutex::new(RunDb::open(&options.database)?.with_games(run.game_shelf())),
            read_db: Mutex::new(RunDb::open(&options.database)?.with_games(run.game_shelf())),
            games: run.game_shelf(),
            tokens: Mutex::new(TokenStore::open(&options.database)?),
            metrics: Metrics::default(),
            started: Instant::now(),
            database: options.database.clone(),
        });
        let weights_dir =
            options.storage.server.localhost_weights.then(|| adapter.local().dir().to_path_buf());
        let app = api::router(Arc::clone(&state), weights_dir, options.role != Role::Learner);
        let (shutdown, http) = serve(listener, app, runtime);
        let refresher = runtime.spawn(keep_latest_fresh(Arc::clone(&adapter), run.live(), deadline_seconds));
        let sampler = runtime.spawn(sample_throughput(Arc::clone(&state)));
        Ok(Server {
            run,
            address,
            adapter,
            shutdown: Some(shutdown),
            tasks: vec![http, refresher, catch_up, sampler],
            runtime: runtime.handle().clone(),
            state,
        })
    }

    /// The address the API listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The base URL to reach the API from this machine.
    pub fn local_url(&self) -> String {
        local_url(self.address)
    }

    /// The run.
    pub fn run(&self) -> &TrainingRun {
        &self.run
    }

    /// The run's live state.
    pub fn live(&self) -> Arc<LiveState> {
        self.run.live()
    }

    /// Storage.
    pub fn adapter(&self) -> &Arc<StorageAdapter> {
        &self.adapter
    }

    /// The API's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// Runs the learner in this thread until `stop` is set or the budget is spent (see
    /// [`TrainingRun::run`]); the API keeps serving meanwhile.
    pub fn train(
        &mut self,
        budget: Budget,
        stop: &AtomicBool,
        selfplay: SelfPlay,
        observer: &mut dyn RunObserver,
    ) -> Result<Summary, ServerError> {
        Ok(self.run.run(budget, stop, selfplay, observer)?)
    }

    /// Stops serving: requests in progress are answered first (for at most 10 s).
    pub fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        stop_tasks(&self.runtime, std::mem::take(&mut self.tasks));
        // `self` holds the last reference to the database connections, and drops it here, off
        // the runtime's threads (a PostgreSQL client must not be dropped on them).
    }
}

/// Binds `server.host`:`server.port`, and records the port actually bound (port 0 picks one),
/// which the weights URLs handed to workers name.
fn bind(
    server: &mut zero2048_storage::ServerConfig,
    runtime: &tokio::runtime::Runtime,
) -> Result<(tokio::net::TcpListener, SocketAddr), ServerError> {
    let (host, port) = (server.host.clone(), server.port);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind((host.as_str(), port)))
        .map_err(|source| ServerError::Bind { address: format!("{host}:{port}"), source })?;
    let address = listener.local_addr().map_err(|source| ServerError::Bind { address: host, source })?;
    server.port = address.port();
    Ok((listener, address))
}

/// Serves `app` on `listener` until the returned sender is used (or dropped).
fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    runtime: &tokio::runtime::Runtime,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (shutdown, signal) = oneshot::channel::<()>();
    let http = runtime.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = signal.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!("the HTTP server stopped: {e}");
        }
    });
    (shutdown, http)
}

/// The base URL to reach a server bound at `address` from this machine.
fn local_url(address: SocketAddr) -> String {
    let ip =
        if address.ip().is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { address.ip() };
    format!("http://{}", SocketAddr::new(ip, address.port()))
}

/// Lets the HTTP task (the first) finish the requests in progress for up to 10 s, then stops the
/// rest, and waits until every task is gone, so none holds the server's state any more.
fn stop_tasks(runtime: &tokio::runtime::Handle, tasks: Vec<tokio::task::JoinHandle<()>>) {
    runtime.block_on(async move {
        let mut tasks = tasks.into_iter();
        if let Some(mut http) = tasks.next()
            && tokio::time::timeout(Duration::from_secs(10), &mut http).await.is_err()
        {
            http.abort();
            let _ = http.await;
        }
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    });
}

/// Records the run's totals every `api.sample_seconds`, for the dashboard's throughput charts.
async fn sample_throughput(state: Arc<AppState>) {
    let period = Duration::from_secs_f64(state.api.sample_seconds.max(0.1));
    loop {
        tokio::time::sleep(period).await;
        let state = Arc::clone(&state);
        let _ = tokio::task::spawn_blocking(move || {
            let live = &state.live;
            let progress = live.progress();
            let stored = live.stored_through.load(std::sync::atomic::Ordering::Relaxed);
            let queued = live.queued_through.load(std::sync::atomic::Ordering::Relaxed);
            let learned = live.learned_through.load(std::sync::atomic::Ordering::Relaxed);
            let sample = zero2048_train::ThroughputSample {
                at: (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64,
                games: progress.games,
                moves: progress.moves,
                stored,
                backlog: queued.saturating_sub(learned),
                revision: live.revision.load(std::sync::atomic::Ordering::Relaxed),
            };
            if let Err(e) = state.read_db.lock().unwrap_or_else(|e| e.into_inner()).record_throughput(&sample)
            {
                tracing::warn!("recording throughput: {e}");
            }
        })
        .await;
    }
}

/// Re-issues the latest record (a fresh URL, a later deadline) once half its validity has passed,
/// so a worker never holds a record whose presigned URL has expired.
async fn keep_latest_fresh(adapter: Arc<StorageAdapter>, live: Arc<LiveState>, deadline_seconds: u64) {
    let period = Duration::from_secs((deadline_seconds / 8).clamp(1, 60));
    loop {
        tokio::time::sleep(period).await;
        let Some(latest) = live.latest() else { continue };
        let left = latest.deadline - OffsetDateTime::now_utc();
        if left.whole_seconds() > (deadline_seconds / 2) as i64 {
            continue;
        }
        let deadline = OffsetDateTime::now_utc() + time::Duration::seconds(deadline_seconds as i64);
        match adapter.refresh_latest(deadline).await {
            // Publication may have raced ahead; keep whichever record is newer.
            Ok(Some(fresh)) if live.latest().is_none_or(|l| l.revision <= fresh.revision) => {
                live.set_latest(fresh)
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("refreshing the latest record failed (will retry): {e}"),
        }
    }
}

/// An API server of its own (`--role api`): uploads go into the run's shared database and game
/// storage; the latest record and the accepted revisions are the learner's, read from storage
/// and the database every second. Holds no lock and learns nothing, so any number can serve one
/// run; killing one loses nothing acknowledged.
pub struct ApiServer {
    address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    runtime: tokio::runtime::Handle,
    _state: Arc<AppState>,
}

/// How often an API server reads what the learner shares.
const FOLLOW_PERIOD: Duration = Duration::from_secs(1);

impl ApiServer {
    /// Binds the listener, opens storage and the database (never writing what the learner
    /// owns), and starts serving.
    pub fn start(
        mut options: ServerOptions,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<ApiServer, ServerError> {
        options.train.validate().map_err(TrainError::from)?;
        let (listener, address) = bind(&mut options.storage.server, runtime)?;
        let adapter = Arc::new(runtime.block_on(StorageAdapter::reader(&options.storage))?);
        let games = GameShelf::from_storage(&adapter, runtime.handle().clone())?;
        let live = Arc::new(LiveState::for_run(&options.train));
        let read_db = RunDb::open(&options.database)?.with_games(games.clone());
        live.follow(&read_db)?;
        if let Some(latest) = runtime.block_on(adapter.read_published_latest())? {
            live.set_latest(latest);
        }
        let state = Arc::new(AppState {
            live: Arc::clone(&live),
            adapter: Arc::clone(&adapter),
            limiter: RateLimiter::new(options.api.uploads_per_minute),
            api: options.api,
            ingest_db: Mutex::new(RunDb::open(&options.database)?.with_games(games.clone())),
            read_db: Mutex::new(read_db),
            tokens: Mutex::new(TokenStore::open(&options.database)?),
            metrics: Metrics::default(),
            started: Instant::now(),
            database: options.database.clone(),
            games,
        });
        let weights_dir =
            options.storage.server.localhost_weights.then(|| adapter.local().dir().to_path_buf());
        let app = api::router(Arc::clone(&state), weights_dir, true);
        let (shutdown, http) = serve(listener, app, runtime);
        let follower = runtime.spawn(follow_the_learner(Arc::clone(&state)));
        Ok(ApiServer {
            address,
            shutdown: Some(shutdown),
            tasks: vec![http, follower],
            runtime: runtime.handle().clone(),
            _state: state,
        })
    }

    /// The base URL to reach the API from this machine.
    pub fn local_url(&self) -> String {
        local_url(self.address)
    }

    /// Stops serving: requests in progress are answered first (for at most 10 s).
    pub fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        stop_tasks(&self.runtime, std::mem::take(&mut self.tasks));
        // `self` holds the last reference to the database connections, and drops it here, off
        // the runtime's threads (a PostgreSQL client must not be dropped on them).
    }
}

/// Keeps an API server's view of the run current: the accepted revisions and totals from the
/// database, the latest record from storage (newer revisions only; a refreshed URL of the same
/// revision too).
async fn follow_the_learner(state: Arc<AppState>) {
    let mut failing = false;
    loop {
        tokio::time::sleep(FOLLOW_PERIOD).await;
        let from_db = {
            let state = Arc::clone(&state);
            tokio::task::spawn_blocking(move || {
                let db = state.read_db.lock().unwrap_or_else(|e| e.into_inner());
                state.live.follow(&db)
            })
            .await
        };
        let from_storage = state.adapter.read_published_latest().await;
        let result = match (from_db, from_storage) {
            (Ok(Ok(())), Ok(latest)) => {
                if let Some(latest) = latest
                    && state.live.latest().is_none_or(|l| l.revision <= latest.revision)
                {
                    state.live.set_latest(latest);
                }
                Ok(())
            }
            (Ok(Err(e)), _) => Err(e.to_string()),
            (Err(e), _) => Err(e.to_string()),
            (_, Err(e)) => Err(e.to_string()),
        };
        match result {
            Ok(()) if failing => {
                tracing::info!("the run's database and storage answer again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!("cannot read what the learner shares (keeps serving what it last read): {e}");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
