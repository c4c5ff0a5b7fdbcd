//! A run served by two API servers apart from its learner, each a process of its own (this
//! binary's `server --role api` / `--role learner`): a fleet of simulated workers uploads real
//! games through both, each moving to the other server when its own cannot be reached; halfway,
//! one API server is killed with SIGKILL. Afterwards every game a worker saw acknowledged must
//! be stored, once.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use zero2048_protocol::{UploadReply, Uuid};
use zero2048_server::TokenStore;
use zero2048_train::RunDb;
use zero2048_train::db::DatabaseUrl;

use crate::Effort;
use crate::server::{Encoded, batch_with_uuids, games_with, percentile, trained_network};

/// What the fleet saw, and what the run stored.
#[derive(Clone, Debug, Serialize)]
pub struct RolesReport {
    /// `SQLite` or `PostgreSQL`.
    pub database: &'static str,
    /// Simulated workers.
    pub workers: usize,
    /// Games per upload.
    pub batch_games: usize,
    /// Seconds of load.
    pub seconds: f64,
    /// When the first API server was killed (seconds into the load).
    pub killed_at: f64,
    /// Uploads answered 200.
    pub uploads: u64,
    /// Answers other than 200 (a refused token, a full backlog, a server error).
    pub errors: u64,
    /// Uploads that met an unreachable server and were sent again to the other one.
    pub failovers: u64,
    /// The longest time from a worker's first failed attempt to its batch's acknowledgement.
    pub max_failover_ms: f64,
    /// Games acknowledged to the fleet (accepted, or duplicates of an earlier commit).
    pub acknowledged: u64,
    /// Acknowledged games not in the database.
    pub lost: u64,
    /// Games in the database.
    pub stored: u64,
    /// Moves acknowledged per second.
    pub moves_per_second: f64,
    /// Upload latency percentiles, milliseconds (successful attempts).
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn spawn(exe: &Path, dir: &Path, args: &[&str], log: &str) -> Result<Process, String> {
    let log = std::fs::File::create(dir.join(log)).map_err(|e| e.to_string())?;
    Command::new(exe)
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Process)
        .map_err(|e| format!("starting {}: {e}", exe.display()))
}

fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

fn wait_until(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let started = Instant::now();
    while !ready() {
        if started.elapsed() > limit {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Runs the scenario with the processes of `exe` on `database` (a SQLite file in a scratch
/// directory when `None`).
pub fn run(
    exe: &Path,
    effort: Effort,
    load_seconds: f64,
    workers: usize,
    database: Option<&DatabaseUrl>,
) -> Result<RolesReport, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let trained = trained_network(match effort {
        Effort::Full => 3000,
        Effort::Quick => 50,
    });
    let records: Vec<Encoded> = games_with(&trained, 64)
        .iter()
        .map(|r| (r.encode().expect("encodable"), r.steps.len() as u32))
        .collect();
    // The fleet outruns one learner on purpose: what is measured is the upload path.
    std::fs::write(
        dir.path().join("config.yaml"),
        "api:\n  max_backlog_games: 1000000000000\n  uploads_per_minute: 0\n",
    )
    .map_err(|e| e.to_string())?;
    let url = match database {
        Some(url) => url.clone(),
        None => DatabaseUrl::Sqlite(dir.path().join("zero2048.db")),
    };
    let url_text = match &url {
        DatabaseUrl::Postgres(text) => text.clone(),
        DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
    };
    let common = [
        "--config",
        "config.yaml",
        "--database",
        &url_text,
        "--network",
        "4x4",
        "--eval-games",
        "0",
        "--revision-every-games",
        "1000000000",
        "--revision-every-seconds",
        "1000000",
    ];
    let learner_port = free_port()?.to_string();
    let mut learner_args = vec!["server", "--role", "learner", "--port", &learner_port];
    learner_args.extend(common);
    let _learner = spawn(exe, dir.path(), &learner_args, "learner.log")?;
    wait_until(Duration::from_secs(60), "the learner's first revision", || {
        RunDb::open(&url).and_then(|db| db.counters()).is_ok_and(|c| c.revision >= 1)
    })
    .map_err(|e| format!("{e}; the learner said:\n{}", log_of(dir.path(), "learner.log")))?;
    let mut tokens = TokenStore::open(&url).map_err(|e| e.to_string())?;
    let fleet: Vec<String> = (0..workers.max(1))
        .map(|i| tokens.add(&format!("roles-{i}")))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let ports = [free_port()?.to_string(), free_port()?.to_string()];
    let mut apis = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let mut args = vec!["server", "--role", "api", "--port", port];
        args.extend(common);
        apis.push(Some(spawn(exe, dir.path(), &args, &format!("api-{i}.log"))?));
    }
    let bases: Arc<Vec<String>> = Arc::new(ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    for base in bases.iter() {
        wait_until(Duration::from_secs(60), &format!("the API server at {base}"), || {
            runtime.block_on(async {
                client
                    .get(format!("{base}/api/v1/status"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
        })?;
    }
    let batch_games = 16;
    let load_for = Duration::from_secs_f64(load_seconds);
    let records = Arc::new(records);
    let started = Instant::now();
    let tasks: Vec<_> = fleet
        .iter()
        .enumerate()
        .map(|(w, token)| {
            let (client, token, records, bases) =
                (client.clone(), token.clone(), Arc::clone(&records), Arc::clone(&bases));
            runtime.spawn(async move {
                let mut seen = Fleet::default();
                let mut current = w % bases.len();
                let mut k = w * batch_games;
                while started.elapsed() < load_for {
                    let chunk: Vec<Encoded> =
                        (0..batch_games).map(|j| records[(k + j) % records.len()].clone()).collect();
                    k += batch_games;
                    let (body, uuids) = batch_with_uuids(&chunk, 1);
                    let first_try = Instant::now();
                    let mut failed_over = false;
                    // The same batch (the same UUIDs) until it is acknowledged.
                    while started.elapsed() < load_for + Duration::from_secs(30) {
                        let sent = Instant::now();
                        let response = client
                            .post(format!("{}/api/v1/games", bases[current]))
                            .bearer_auth(&token)
                            .header("content-encoding", "zstd")
                            .body(body.clone())
                            .send()
                            .await;
                        match response {
                            Err(_) => {
                                current = (current + 1) % bases.len();
                                failed_over = true;
                            }
                            Ok(r) if r.status().is_success() => {
                                let Ok(reply) = r.json::<UploadReply>().await else {
                                    seen.errors += 1;
                                    continue;
                                };
                                seen.latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                                let done: HashSet<&Uuid> =
                                    reply.accepted.iter().chain(&reply.duplicates).collect();
                                seen.acknowledged.extend(uuids.iter().filter(|u| done.contains(u)).copied());
                                seen.moves += chunk.iter().map(|c| c.1 as u64).sum::<u64>();
                                if failed_over {
                                    seen.failovers += 1;
                                    seen.max_failover_ms =
                                        seen.max_failover_ms.max(first_try.elapsed().as_secs_f64() * 1000.0);
                                }
                                break;
                            }
                            Ok(_) => {
                                seen.errors += 1;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                }
                seen
            })
        })
        .collect();
    // Halfway, SIGKILL the first API server.
    std::thread::sleep(load_for / 2);
    let killed_at = started.elapsed().as_secs_f64();
    drop(apis[0].take());
    let mut fleet_seen = Fleet::default();
    for task in tasks {
        let seen = runtime.block_on(task).map_err(|e| e.to_string())?;
        fleet_seen.merge(seen);
    }
    let seconds = started.elapsed().as_secs_f64();
    let db = RunDb::open(&url).map_err(|e| e.to_string())?;
    let acknowledged: Vec<[u8; 16]> = fleet_seen.acknowledged.iter().map(|u| *u.as_bytes()).collect();
    let mut lost = 0u64;
    for part in acknowledged.chunks(1000) {
        lost +=
            db.known_games(part).map_err(|e| e.to_string())?.iter().filter(|known| !**known).count() as u64;
    }
    let stored = db.game_count().map_err(|e| e.to_string())?;
    let mut latencies = fleet_seen.latencies;
    latencies.sort_by(f64::total_cmp);
    Ok(RolesReport {
        database: url.backend_name(),
        workers: fleet.len(),
        batch_games,
        seconds,
        killed_at,
        uploads: latencies.len() as u64,
        errors: fleet_seen.errors,
        failovers: fleet_seen.failovers,
        max_failover_ms: fleet_seen.max_failover_ms,
        acknowledged: acknowledged.len() as u64,
        lost,
        stored,
        moves_per_second: fleet_seen.moves as f64 / seconds,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
    })
}

/// One simulated worker's view.
#[derive(Default)]
struct Fleet {
    latencies: Vec<f64>,
    errors: u64,
    failovers: u64,
    max_failover_ms: f64,
    acknowledged: Vec<Uuid>,
    moves: u64,
}

impl Fleet {
    fn merge(&mut self, other: Fleet) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.failovers += other.failovers;
        self.max_failover_ms = self.max_failover_ms.max(other.max_failover_ms);
        self.acknowledged.extend(other.acknowledged);
        self.moves += other.moves;
    }
}
