//! The distributed pipeline's throughput: upload ingest with full verification, a fleet of
//! simulated workers uploading at once, `latest` requests, and a remote worker against in-process
//! self-play. Each figure comes with a baseline measured in the same run.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use zero2048_game::reference::Grid;
use zero2048_game::{GameRecord, SpawnRule, derive_seed};
use zero2048_model::{NTupleConfig, NTupleNetwork, weights_file};
use zero2048_protocol::{
    BatchGame, PlaySpec, SearchSpec, UploadRules, Uuid, compress, decode_batch, decompress_limited,
    encode_batch, new_game_uuid,
};
use zero2048_search::{ExpectimaxConfig, ExpectimaxPlayer, play_game};
use zero2048_selfplay::{Control, CurrentModel, Engine, FinishedGame, GameSink, Model, Runner, SinkClosed};
use zero2048_server::{ApiConfig, Server, ServerOptions, TokenStore};
use zero2048_storage::{ObjectRetention, ObjectShelf};
use zero2048_train::db::{DatabaseUrl, GameShelf};
use zero2048_train::{Budget, RunDb, SelfPlay, TdConfig, TdLearner, TrainConfig, check_batch, store_checked};
use zero2048_worker::{Signals, Worker, WorkerConfig, WorkerSettings};

use crate::{Comparison, Effort, Measurement};

/// Concurrent uploads from simulated workers.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    /// Simulated workers (one token each).
    pub workers: usize,
    /// Games per upload.
    pub batch_games: usize,
    /// Seconds of load.
    pub seconds: f64,
    /// Uploads answered 200.
    pub uploads: u64,
    /// Uploads that failed (any non-200 or transport error).
    pub errors: u64,
    /// Games stored.
    pub games: u64,
    /// Moves stored per second.
    pub moves_per_second: f64,
    /// Upload latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// A remote worker against in-process self-play, same threads, same network.
#[derive(Clone, Debug, Serialize)]
pub struct SelfPlayReport {
    /// Playing threads on each side.
    pub threads: usize,
    /// In-process self-play, moves per second.
    pub in_process_moves_per_second: f64,
    /// The remote worker (spool, uploads, server on loopback), moves per second.
    pub remote_moves_per_second: f64,
    /// remote / in-process.
    pub ratio: f64,
    /// The same comparison with no learner on the machine: self-play threads alone, and the
    /// remote worker with the server only storing what arrives (as with the server elsewhere).
    pub alone_in_process_moves_per_second: f64,
    /// See `alone_in_process_moves_per_second`.
    pub alone_remote_moves_per_second: f64,
    /// alone remote / alone in-process.
    pub alone_ratio: f64,
    /// Mean game length of the network used, in moves.
    pub mean_game_moves: f64,
}

/// What stored games cost, per learned move: rows in the run database and chunk objects, with
/// the records in the rows (as before chunks) as the baseline, the same games in the same run.
#[derive(Clone, Debug, Serialize)]
pub struct FootprintReport {
    /// `SQLite` or `PostgreSQL`.
    pub backend: &'static str,
    /// Games stored in each layout.
    pub games: u64,
    /// Their moves.
    pub moves: u64,
    /// Database growth with the records in the rows.
    pub inline_db_bytes: u64,
    /// Database growth with the records in chunks.
    pub chunked_db_bytes: u64,
    /// The chunks' bytes.
    pub chunk_bytes: u64,
}

impl FootprintReport {
    /// Database bytes per move, records in the rows.
    pub fn inline_per_move(&self) -> f64 {
        self.inline_db_bytes as f64 / self.moves.max(1) as f64
    }

    /// Database bytes per move, records in chunks.
    pub fn chunked_per_move(&self) -> f64 {
        self.chunked_db_bytes as f64 / self.moves.max(1) as f64
    }

    /// Chunk bytes per move.
    pub fn chunk_per_move(&self) -> f64 {
        self.chunk_bytes as f64 / self.moves.max(1) as f64
    }
}

/// Everything the suite measures.
#[derive(Clone, Debug, Serialize)]
pub struct ServerReport {
    /// Ingest on one core: fast path vs JSON records checked by the plain engine.
    pub ingest: Comparison,
    /// Ingest on PostgreSQL vs on SQLite, measured in the same run (with `--database`).
    pub ingest_postgres: Option<Comparison>,
    /// Storage per move on SQLite, and on PostgreSQL with `--database`.
    pub footprint: Vec<FootprintReport>,
    /// `GET /api/v1/latest` vs the 404 fallback (HTTP overhead alone).
    pub latest: Comparison,
    /// Concurrent uploads.
    pub load: LoadReport,
    /// Remote vs in-process self-play.
    pub selfplay: SelfPlayReport,
}

/// A 4×4 network trained for a few seconds, so games have realistic lengths.
pub(crate) fn trained_network(games: u64) -> NTupleNetwork {
    let network = Arc::new(NTupleNetwork::zeroed(NTupleConfig::small_4x4()).expect("the small network fits"));
    let learner = TdLearner::new(Arc::clone(&network), TdConfig::td0(), 0);
    for i in 0..games {
        let mut player = ExpectimaxPlayer::new(
            Arc::clone(&network),
            ExpectimaxConfig { depth: 1, ..ExpectimaxConfig::default() },
        );
        let (record, _) = play_game(&mut player, derive_seed(77, i), SpawnRule::STANDARD);
        let _ = learner.learn(&record, false);
    }
    network.try_clone().expect("clone")
}

pub(crate) fn games_with(network: &NTupleNetwork, count: u64) -> Vec<GameRecord> {
    let network = Arc::new(network.try_clone().expect("clone"));
    (0..count)
        .map(|i| {
            let mut player = ExpectimaxPlayer::new(
                Arc::clone(&network),
                ExpectimaxConfig { depth: 1, ..ExpectimaxConfig::default() },
            );
            play_game(&mut player, derive_seed(99, i), SpawnRule::STANDARD).0
        })
        .collect()
}

/// An encoded record and its number of moves.
pub(crate) type Encoded = (Vec<u8>, u32);

/// A compressed batch of `records` with fresh UUIDs.
fn batch_body(records: &[Encoded], revision: u64) -> Vec<u8> {
    batch_with_uuids(records, revision).0
}

/// A compressed batch of `records` with fresh UUIDs, and those UUIDs.
pub(crate) fn batch_with_uuids(records: &[Encoded], revision: u64) -> (Vec<u8>, Vec<Uuid>) {
    let uuids: Vec<Uuid> = records.iter().map(|_| new_game_uuid(rand::random())).collect();
    let raw = encode_batch(records.iter().zip(&uuids).map(|((bytes, _), u)| BatchGame {
        uuid: *u,
        revision,
        origin: None,
        record: bytes,
    }))
    .expect("small batches encode");
    (compress(&raw, 1), uuids)
}

/// The prototype's way: records as JSON with their claimed score, replayed by the plain array
/// engine.
fn plain_check(json: &[u8]) -> u64 {
    let records: Vec<(GameRecord, u64)> = serde_json::from_slice(json).expect("our own JSON");
    let mut moves = 0;
    for (record, claimed) in &records {
        let mut grid = Grid::from_board(record.start);
        let mut score = 0u64;
        for step in &record.steps {
            let moved = grid.slide(step.direction);
            assert!(moved.grid != grid, "a recorded move is legal");
            score += moved.reward as u64;
            grid = moved.grid;
            let mut board = grid.to_board();
            board = board.with_spawn(step.spawn());
            grid = Grid::from_board(board);
        }
        assert!(grid.is_game_over() && score == *claimed);
        moves += record.steps.len() as u64;
    }
    moves
}

/// Games per upload batch in the ingest benchmarks.
const BATCH_GAMES: usize = 64;

/// Verified and stored moves per second through `db`: batches of [`BATCH_GAMES`] games decoded,
/// replayed and committed as the upload endpoint does.
fn ingest_rate(effort: Effort, db: &mut RunDb, records: &[Encoded]) -> crate::Measurement {
    let bodies: Vec<Vec<u8>> = records.chunks(BATCH_GAMES).map(|chunk| batch_body(chunk, 0)).collect();
    let mut next = 0usize;
    crate::measure(effort.budget(), || {
        // Fresh UUIDs each time round, so every game is really stored.
        if next == bodies.len() {
            next = 0;
        }
        let body = if next == 0 {
            batch_body(&records[..BATCH_GAMES.min(records.len())], 0)
        } else {
            bodies[next].clone()
        };
        next += 1;
        let raw = decompress_limited(&body, 64 << 20).expect("our own batch");
        let entries = decode_batch(&raw, 10_000).expect("our own batch");
        let rules =
            UploadRules { accepted_revisions: &[0], search: zero2048_protocol::SearchRequirement::Absent };
        let checked = check_batch(&entries, &rules, &mut |_| Ok(zero2048_protocol::ParentPosition::Missing))
            .expect("no database needed");
        let reply = store_checked(db, "bench", &entries, checked).expect("stored");
        let accepted: std::collections::HashSet<_> = reply.accepted.iter().collect();
        entries
            .iter()
            .filter(|e| accepted.contains(&e.uuid))
            .map(|e| e.record.as_ref().map_or(0, |r| r.steps.len() as u64))
            .sum()
    })
}

/// A shelf for game chunks in `dir`, keeping everything.
fn chunk_shelf(dir: &Path) -> Result<GameShelf, String> {
    let local = ObjectShelf::local(dir).map_err(|e| e.to_string())?;
    Ok(GameShelf::new(local, None, ObjectRetention::ALL))
}

/// Stores `rounds` × `records` (fresh UUIDs each round) in batches as the upload endpoint does,
/// and returns the moves stored, the database's growth and the chunks' bytes.
fn store_rounds(db: &mut RunDb, records: &[Encoded], rounds: usize) -> Result<(u64, u64, u64), String> {
    let size_before = db.size_bytes().map_err(|e| e.to_string())?;
    let chunks_before = db.chunk_totals().map_err(|e| e.to_string())?.bytes;
    let mut moves = 0;
    for _ in 0..rounds {
        for batch in records.chunks(BATCH_GAMES) {
            let raw = decompress_limited(&batch_body(batch, 0), 64 << 20).map_err(|e| e.to_string())?;
            let entries = decode_batch(&raw, 10_000).map_err(|e| e.to_string())?;
            let rules = UploadRules {
                accepted_revisions: &[0],
                search: zero2048_protocol::SearchRequirement::Absent,
            };
            let checked =
                check_batch(&entries, &rules, &mut |_| Ok(zero2048_protocol::ParentPosition::Missing))
                    .map_err(|e| e.to_string())?;
            let reply = store_checked(db, "bench", &entries, checked).map_err(|e| e.to_string())?;
            moves += batch.iter().map(|r| r.1 as u64).sum::<u64>();
            if reply.accepted.len() != batch.len() {
                return Err(format!("stored {} of {} games", reply.accepted.len(), batch.len()));
            }
        }
    }
    let grown = db.size_bytes().map_err(|e| e.to_string())?.saturating_sub(size_before);
    let chunks = db.chunk_totals().map_err(|e| e.to_string())?.bytes - chunks_before;
    Ok((moves, grown, chunks))
}

/// The same games stored with their records in the rows and in chunks, on `url` (fresh SQLite
/// files under `dir`, or one PostgreSQL database measured by its growth).
fn footprint(
    url: Option<&DatabaseUrl>,
    dir: &Path,
    records: &[Encoded],
    rounds: usize,
) -> Result<FootprintReport, String> {
    let open = |name: &str| -> Result<RunDb, String> {
        match url {
            Some(url) => RunDb::open(url),
            None => RunDb::open(dir.join(format!("{name}.db"))),
        }
        .map_err(|e| e.to_string())
    };
    let mut inline = open("inline")?;
    let (moves, inline_db_bytes, _) = store_rounds(&mut inline, records, rounds)?;
    drop(inline);
    let mut chunked = open("chunked")?.with_games(chunk_shelf(&dir.join("footprint-chunks"))?);
    let (_, chunked_db_bytes, chunk_bytes) = store_rounds(&mut chunked, records, rounds)?;
    Ok(FootprintReport {
        backend: url.map_or("SQLite", DatabaseUrl::backend_name),
        games: (records.len() * rounds) as u64,
        moves,
        inline_db_bytes,
        chunked_db_bytes,
        chunk_bytes,
    })
}

fn ingest(effort: Effort, dir: &Path, records: &[Encoded], games: &[GameRecord]) -> Comparison {
    let mut db = RunDb::open(dir.join("ingest.db"))
        .expect("a scratch database")
        .with_games(chunk_shelf(&dir.join("ingest-chunks")).expect("a scratch directory"));
    let fast = ingest_rate(effort, &mut db, records);
    let json: Vec<Vec<u8>> = games
        .chunks(BATCH_GAMES)
        .map(|chunk| {
            let rows: Vec<(&GameRecord, u64)> =
                chunk.iter().map(|r| (r, r.replay().expect("played games replay").score)).collect();
            serde_json::to_vec(&rows).expect("serialisable")
        })
        .collect();
    let mut i = 0;
    let reference = crate::measure(effort.budget(), || {
        i = (i + 1) % json.len();
        plain_check(&json[i])
    });
    Comparison { name: "upload ingest (verify + store)", unit: "moves", fast, reference }
}

/// Moves per second of a one-thread remote worker, timed from its first move over `window`.
fn remote_worker_moves_per_second(
    base: &str,
    token: &str,
    dir: &Path,
    window: Duration,
) -> Result<f64, String> {
    let settings = WorkerSettings {
        threads: 1,
        spool_dir: dir.join("spool"),
        cache_dir: dir.join("cache"),
        ..WorkerSettings::default()
    };
    let mut config = WorkerConfig::new(base, &settings);
    config.token = Some(zero2048_storage::Secret::new(token));
    config.seed = 5;
    let signals = Arc::new(Signals::default());
    let mut first_move: Option<Instant> = None;
    let mut counted = (0u64, Instant::now());
    Worker::run(config, Arc::clone(&signals), &mut |status| {
        // Time from the first move played, not from start-up and the weights download.
        if status.moves > 0 && first_move.is_none() {
            first_move = Some(Instant::now());
            counted = (status.moves, Instant::now());
        }
        if let Some(t) = first_move
            && t.elapsed() >= window
            && !signals.stop.load(Ordering::Relaxed)
        {
            counted = (status.moves - counted.0, Instant::now());
            signals.stop.store(true, Ordering::Relaxed);
        }
    })
    .map_err(|e| e.to_string())?;
    let seconds = first_move.map_or(1.0, |t| counted.1.duration_since(t).as_secs_f64());
    Ok(counted.0 as f64 / seconds.max(1e-9))
}

/// Moves per second of one game-runner thread alone (no learner, no storage), over `window`.
fn selfplay_moves_per_second(network: &NTupleNetwork, window: Duration) -> Result<f64, String> {
    struct Count(Arc<AtomicU64>);
    impl GameSink for Count {
        fn finished(
            &mut self,
            game: FinishedGame,
            _: &[(zero2048_game::Board, u32)],
        ) -> Result<(), SinkClosed> {
            self.0.fetch_add(game.record.steps.len() as u64, Ordering::Relaxed);
            Ok(())
        }
    }
    let model = Arc::new(CurrentModel::new());
    model.set(Model {
        revision: 1,
        engine: Engine::Ntuple(Arc::new(network.try_clone().map_err(|e| e.to_string())?)),
        play: PlaySpec {
            spawn: SpawnRule::STANDARD,
            search: SearchSpec::Expectimax { depth: 1 },
            restart: None,
        },
    });
    let control = Arc::new(Control::default());
    let runner = Runner {
        threads: 1,
        name: "bench-selfplay".into(),
        seed: 5,
        model,
        control: Arc::clone(&control),
        resume: Arc::default(),
    };
    let moves = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads = runner.spawn(|_| Count(Arc::clone(&moves))).map_err(|e| e.to_string())?;
    std::thread::sleep(window);
    control.stop.store(true, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let counted = moves.load(Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    Ok(counted as f64 / seconds)
}

/// A server in `dir` starting from `weights`, never publishing during the measurement. The
/// backlog limit is off: the fleet below uploads faster than one learner can learn, and what is
/// measured is the upload path.
fn server_options(dir: &Path, weights: &Path) -> ServerOptions {
    let mut storage = zero2048_storage::Config::default();
    storage.storage.weights_dir = dir.join("weights");
    storage.server.port = 0;
    storage.server.localhost_weights = true;
    ServerOptions {
        role: zero2048_server::Role::All,
        storage,
        api: ApiConfig { uploads_per_minute: 0, max_backlog_games: u64::MAX, ..ApiConfig::default() },
        train: TrainConfig {
            network: NTupleConfig::small_4x4(),
            revision_every_games: u64::MAX,
            revision_every_seconds: 1e9,
            evaluate_every_revisions: 0,
            ..TrainConfig::default()
        },
        db_path: dir.join("server.db"),
        database: dir.join("server.db").into(),
        resume_from: Some(weights.to_path_buf()),
        publish_initial: true,
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the suite; `load_seconds` is the length of the concurrent-upload test.
pub fn run(
    effort: Effort,
    load_seconds: f64,
    workers: usize,
    postgres: Option<&DatabaseUrl>,
) -> Result<ServerReport, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let trained = trained_network(match effort {
        Effort::Full => 3000,
        Effort::Quick => 50,
    });
    let games = games_with(
        &trained,
        match effort {
            Effort::Full => 256,
            Effort::Quick => 16,
        },
    );
    let records: Vec<Encoded> =
        games.iter().map(|r| (r.encode().expect("encodable"), r.steps.len() as u32)).collect();
    let mean_game_moves = records.iter().map(|r| r.1 as f64).sum::<f64>() / records.len().max(1) as f64;
    let ingest = ingest(effort, dir.path(), &records, &games);
    let ingest_postgres = match postgres {
        Some(url) => {
            let mut on_postgres = RunDb::open(url)
                .map_err(|e| e.to_string())?
                .with_games(chunk_shelf(&dir.path().join("pg-chunks"))?);
            let fast = ingest_rate(effort, &mut on_postgres, &records);
            // The baseline is the SQLite ingest just measured, in the same run.
            Some(Comparison {
                name: "upload ingest on PostgreSQL (vs SQLite)",
                unit: "moves",
                fast,
                reference: ingest.fast.clone(),
            })
        }
        None => None,
    };
    // Enough games that the databases' fixed overhead (empty tables, first pages) is noise.
    let rounds = match effort {
        Effort::Full => 8,
        Effort::Quick => 1,
    };
    let mut footprints = vec![footprint(None, dir.path(), &records, rounds)?];
    if let Some(url) = postgres {
        footprints.push(footprint(Some(url), dir.path(), &records, rounds)?);
    }

    // A real server on loopback, starting from the trained network.
    let weights = dir.path().join("start.safetensors");
    weights_file::save(&trained, &weights, 0, &Default::default()).map_err(|e| e.to_string())?;
    let options = server_options(&dir.path().join("remote"), &weights);
    let db_path = options.db_path.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut server = Server::start(options, &runtime).map_err(|e| e.to_string())?;
    let base = server.local_url();
    let revision = server.live().revision.load(Ordering::Relaxed);
    let mut tokens = TokenStore::open(&db_path).map_err(|e| e.to_string())?;
    let fleet: Vec<String> = (0..workers.max(1))
        .map(|i| tokens.add(&format!("bench-{i}")))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let window = match effort {
        Effort::Full => Duration::from_secs(15),
        Effort::Quick => Duration::from_millis(500),
    };
    // The worker machine's view: the server's learner not yet running (as when it runs on
    // another machine), against the same self-play thread in a process of its own.
    let alone_in_process = selfplay_moves_per_second(&trained, window)?;
    let alone_remote = {
        // A server of its own, whose learner never runs: what arrives only adds to its backlog,
        // which must not become work for the learner measured below.
        let options = server_options(&dir.path().join("alone"), &weights);
        let alone_db = options.db_path.clone();
        let alone = Server::start(options, &runtime).map_err(|e| e.to_string())?;
        let token =
            TokenStore::open(&alone_db).and_then(|mut t| t.add("alone")).map_err(|e| e.to_string())?;
        let measured = remote_worker_moves_per_second(
            &alone.local_url(),
            &token,
            &dir.path().join("alone-worker"),
            window,
        );
        alone.shutdown();
        measured?
    };
    let stop = Arc::new(AtomicBool::new(false));
    let learner = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            struct Quiet;
            impl zero2048_train::RunObserver for Quiet {}
            let result = server.train(Budget::default(), &stop, SelfPlay::RemoteOnly, &mut Quiet);
            server.shutdown();
            result.map(|_| ()).map_err(|e| e.to_string())
        })
    };

    // Remote worker vs in-process self-play, one playing thread each, the same network.
    // In-process: `zero2048 train`'s path (self-play thread, ingest, learner), from the same start.
    let in_process = {
        let local_dir = dir.path().join("local");
        let mut options = server_options(&local_dir, &weights);
        options.train.selfplay_threads = 1;
        options.publish_initial = false;
        let mut local = Server::start(options, &runtime).map_err(|e| e.to_string())?;
        struct Quiet;
        impl zero2048_train::RunObserver for Quiet {}
        let summary = local
            .train(
                Budget { games: None, time: Some(window) },
                &AtomicBool::new(false),
                SelfPlay::Local { threads: 1 },
                &mut Quiet,
            )
            .map_err(|e| e.to_string())?;
        local.shutdown();
        summary.progress.moves as f64 / summary.progress.elapsed_seconds.max(1e-9)
    };
    let remote = remote_worker_moves_per_second(&base, &fleet[0], &dir.path().join("with-learner"), window)?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().map_err(|e| e.to_string())?;
    let latest_budget = match effort {
        Effort::Full => Duration::from_secs(5),
        Effort::Quick => Duration::from_millis(300),
    };
    let hammer = |path: &'static str, expect: u16| {
        let client = client.clone();
        let url = format!("{base}{path}");
        runtime.block_on(async move {
            let started = Instant::now();
            let done = Arc::new(AtomicU64::new(0));
            let tasks: Vec<_> = (0..32)
                .map(|_| {
                    let (client, url, done) = (client.clone(), url.clone(), Arc::clone(&done));
                    tokio::spawn(async move {
                        while started.elapsed() < latest_budget {
                            if let Ok(r) = client.get(&url).send().await
                                && r.status().as_u16() == expect
                                && r.bytes().await.is_ok()
                            {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                let _ = task.await;
            }
            let wall = started.elapsed().as_secs_f64();
            // Client and server share the machine; per wall second is the figure that means something.
            Measurement { items: done.load(Ordering::Relaxed), wall_seconds: wall, cpu_seconds: wall }
        })
    };
    let latest = Comparison {
        name: "GET /api/v1/latest (32 connections)",
        unit: "requests",
        fast: hammer("/api/v1/latest", 200),
        reference: hammer("/api/v1/no-such-endpoint", 404),
    };

    // The fleet: every simulated worker uploads batches of real games back to back.
    let batch_games = 16;
    let load_for = Duration::from_secs_f64(load_seconds);
    let shared_records = Arc::new(records);
    let load = runtime.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = fleet
            .iter()
            .enumerate()
            .map(|(w, token)| {
                let (client, token, records) = (client.clone(), token.clone(), Arc::clone(&shared_records));
                let url = format!("{base}/api/v1/games");
                tokio::spawn(async move {
                    let (mut latencies, mut errors, mut games, mut moves) = (Vec::new(), 0u64, 0u64, 0u64);
                    let mut k = w * batch_games;
                    while started.elapsed() < load_for {
                        let chunk: Vec<Encoded> =
                            (0..batch_games).map(|j| records[(k + j) % records.len()].clone()).collect();
                        k += batch_games;
                        let body = batch_body(&chunk, revision);
                        let sent = Instant::now();
                        let response = client
                            .post(&url)
                            .bearer_auth(&token)
                            .header("content-encoding", "zstd")
                            .body(body)
                            .send()
                            .await;
                        match response {
                            Ok(r) if r.status().is_success() => {
                                match r.json::<zero2048_protocol::UploadReply>().await {
                                    Ok(reply) => {
                                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                                        games += reply.accepted.len() as u64;
                                        moves += chunk.iter().map(|c| c.1 as u64).sum::<u64>();
                                        errors += (reply.accepted.len() != batch_games) as u64;
                                    }
                                    Err(_) => errors += 1,
                                }
                            }
                            _ => errors += 1,
                        }
                    }
                    (latencies, errors, games, moves)
                })
            })
            .collect();
        let mut all = Vec::new();
        let (mut errors, mut games, mut moves) = (0, 0, 0);
        for task in tasks {
            if let Ok((l, e, g, m)) = task.await {
                all.extend(l);
                errors += e;
                games += g;
                moves += m;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        all.sort_by(f64::total_cmp);
        LoadReport {
            workers: fleet.len(),
            batch_games,
            seconds,
            uploads: all.len() as u64,
            errors,
            games,
            moves_per_second: moves as f64 / seconds,
            p50_ms: percentile(&all, 0.5),
            p99_ms: percentile(&all, 0.99),
            max_ms: all.last().copied().unwrap_or(0.0),
        }
    });

    stop.store(true, Ordering::Relaxed);
    learner.join().map_err(|_| "the learner panicked".to_string())??;
    Ok(ServerReport {
        ingest,
        ingest_postgres,
        footprint: footprints,
        latest,
        load,
        selfplay: SelfPlayReport {
            threads: 1,
            in_process_moves_per_second: in_process,
            remote_moves_per_second: remote,
            ratio: remote / in_process.max(1e-9),
            alone_in_process_moves_per_second: alone_in_process,
            alone_remote_moves_per_second: alone_remote,
            alone_ratio: alone_remote / alone_in_process.max(1e-9),
            mean_game_moves,
        },
    })
}
