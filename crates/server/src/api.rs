//! The HTTP API (`docs/protocol.md`): `GET /api/v1/latest`, `POST /api/v1/games`, `GET /api/v1/status`,
//! `GET /metrics`, and `/weights/…` when weights are served locally. Every refusal is a JSON
//! [`ApiError`] naming the problem; every response carries the protocol version header.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use zero2048_protocol::{
    ApiError, BUILD_VERSION, ModelSpec, PROTOCOL_HEADER, PROTOCOL_VERSION, UploadRules,
    WORKER_MACHINE_HEADER, WORKER_VERSION_HEADER, check_machine, decode_batch, decompress_limited,
    version_at_least,
};
use zero2048_storage::{LatestInfo, StorageAdapter, StorageStatus, UrlKind};
use zero2048_train::{
    EvaluationRow, LiveState, Progress, RevisionRow, RunDb, WorkerRow, check_batch, commit_prepared, prepare,
    stored_parent,
};

use crate::config::ApiConfig;
use crate::metrics::{self, Metrics, Sample};
use crate::rate::RateLimiter;
use crate::tokens::{AuthError, TokenStore};

/// Everything the handlers share.
pub struct AppState {
    /// The run's live counters and latest record.
    pub live: Arc<LiveState>,
    /// Storage, for its status.
    pub adapter: Arc<StorageAdapter>,
    /// Access and limits.
    pub api: ApiConfig,
    /// The connection uploads are stored through.
    pub ingest_db: Mutex<RunDb>,
    /// The connection status pages read through.
    pub read_db: Mutex<RunDb>,
    /// Worker tokens.
    pub tokens: Mutex<TokenStore>,
    /// Counters.
    pub metrics: Metrics,
    /// Upload rate limits.
    pub limiter: RateLimiter,
    /// When the server started.
    pub started: Instant,
    /// The run database (exports open their own connection).
    pub database: zero2048_train::db::DatabaseUrl,
    /// Where game records are kept, for those connections.
    pub games: zero2048_train::db::GameShelf,
}

/// The API's routes (weights included when `weights_dir` is given; uploads unless
/// `takes_uploads` is false: a learner whose API servers run apart).
pub fn router(state: Arc<AppState>, weights_dir: Option<std::path::PathBuf>, takes_uploads: bool) -> Router {
    let api = Router::new().route("/api/v1/latest", get(latest));
    let api = if takes_uploads { api.route("/api/v1/games", post(upload_games)) } else { api };
    let api = api
        .route("/api/v1/status", get(status))
        .route("/metrics", get(prometheus))
        .fallback(not_found)
        .with_state(Arc::clone(&state))
        .merge(crate::dashboard::router(Arc::clone(&state)));
    let api = match weights_dir {
        Some(dir) => {
            let weights = zero2048_storage::http::weights_router(dir)
                .layer(middleware::from_fn_with_state(Arc::clone(&state), weights_auth));
            api.merge(weights)
        }
        None => api,
    };
    api.layer(middleware::from_fn_with_state(state, handshake))
}

/// A JSON error response.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ApiError { error: message.into(), code: code.to_string() };
    (status, axum::Json(body)).into_response()
}

async fn not_found(request: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such endpoint: {} {}", request.method(), request.uri().path()),
    )
}

/// Refuses workers of another protocol or too old a version; stamps every response with the
/// server's protocol version; counts errors.
async fn handshake(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let theirs = headers.get(PROTOCOL_HEADER).map(|v| v.to_str().unwrap_or("?").to_string());
    let refusal = match theirs {
        Some(v) if v.trim() != PROTOCOL_VERSION.to_string() => Some(error(
            StatusCode::UPGRADE_REQUIRED,
            "protocol_mismatch",
            format!(
                "this server speaks protocol version {PROTOCOL_VERSION} (zero2048 {BUILD_VERSION}); the client speaks {v}: \
                 install a matching zero2048"
            ),
        )),
        _ => None,
    };
    let refusal = refusal.or_else(|| {
        let version = headers.get(WORKER_VERSION_HEADER)?.to_str().unwrap_or("?");
        let minimum = state.live.latest_spec().map(|s| s.min_worker_version).unwrap_or_default();
        (!version_at_least(version, &minimum)).then(|| {
            error(
                StatusCode::UPGRADE_REQUIRED,
                "worker_too_old",
                format!(
                    "worker version {version} is older than this server's minimum {minimum}: upgrade zero2048"
                ),
            )
        })
    });
    let mut response = match refusal {
        Some(refusal) => refusal,
        None => next.run(request).await,
    };
    let status = response.status();
    if status.is_client_error() {
        state.metrics.client_errors.fetch_add(1, Ordering::Relaxed);
    } else if status.is_server_error() {
        state.metrics.server_errors.fetch_add(1, Ordering::Relaxed);
    }
    response.headers_mut().insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))
}

/// Checks the bearer token; `Err` is the response to send.
async fn authenticate(state: &Arc<AppState>, headers: &HeaderMap) -> Result<String, Response> {
    let token = bearer(headers).map(str::to_string);
    let state = Arc::clone(state);
    let checked = tokio::task::spawn_blocking(move || {
        state.tokens.lock().unwrap_or_else(|e| e.into_inner()).authenticate(token.as_deref())
    })
    .await;
    match checked {
        Ok(Ok(Ok(name))) => Ok(name),
        Ok(Ok(Err(e @ AuthError::Revoked(_)))) => {
            Err(error(StatusCode::FORBIDDEN, "token_revoked", e.to_string()))
        }
        Ok(Ok(Err(e))) => Err(error(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())),
        Ok(Err(e)) => Err(internal(e)),
        Err(e) => Err(internal(e)),
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!("internal error: {e}");
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the server failed: {e}"))
}

/// A batch that could not be stored: when the games' storage (disk or bucket) failed, the worker
/// keeps the games and sends them again later; nothing of the batch was acknowledged.
fn not_stored(e: zero2048_train::db::DbError) -> Response {
    match e {
        zero2048_train::db::DbError::Storage { .. } => {
            tracing::warn!("an upload could not be stored: {e}");
            let mut response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "games_storage_unavailable",
                format!("the games could not be stored ({e}); send them again later"),
            );
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("10"));
            response
        }
        other => internal(other),
    }
}

async fn weights_auth(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if state.api.require_token_for_latest
        && let Err(refusal) = authenticate(&state, request.headers()).await
    {
        return refusal;
    }
    next.run(request).await
}

async fn latest(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if state.api.require_token_for_latest
        && let Err(refusal) = authenticate(&state, &headers).await
    {
        return refusal;
    }
    state.metrics.latest_requests.fetch_add(1, Ordering::Relaxed);
    match state.live.latest() {
        Some(latest) => axum::Json(latest).into_response(),
        None => error(StatusCode::NOT_FOUND, "no_revision", "no revision is published yet; retry shortly"),
    }
}

/// The worker as the run's tables name it: its token, and the machine it names, if any
/// (`alice@laptop-3fa2c1`), so machines sharing one token are counted apart. The error is the
/// message of a `bad_machine` refusal.
fn worker_identity(token: String, headers: &HeaderMap) -> Result<String, String> {
    let Some(value) = headers.get(WORKER_MACHINE_HEADER) else { return Ok(token) };
    let machine = value.to_str().map_err(|_| format!("{WORKER_MACHINE_HEADER} is not text"))?;
    check_machine(machine)?;
    Ok(format!("{token}@{machine}"))
}

async fn upload_games(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let token = match authenticate(&state, &headers).await {
        Ok(token) => token,
        Err(refusal) => return refusal,
    };
    let worker = match worker_identity(token, &headers) {
        Ok(worker) => worker,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_machine", message),
    };
    if let Err(wait) = state.limiter.check(&worker) {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "worker {worker:?} uploads more than {} batches a minute; retry later",
                state.api.uploads_per_minute
            ),
        );
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
        return response;
    }
    let backlog = state
        .live
        .queued_through
        .load(Ordering::Relaxed)
        .saturating_sub(state.live.learned_through.load(Ordering::Relaxed));
    if backlog > state.api.max_backlog_games {
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "learner_behind",
            format!("{backlog} games wait for the learner; retry later"),
        );
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(30));
        return response;
    }
    if headers.get(header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes() != b"zstd") {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            "the batch must be zstd-compressed (Content-Encoding: zstd)",
        );
    }
    let body: Bytes = match axum::body::to_bytes(body, state.api.max_upload_bytes).await {
        Ok(body) => body,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the upload is larger than {} bytes; send smaller batches",
                    state.api.max_upload_bytes
                ),
            );
        }
    };
    let task_state = Arc::clone(&state);
    let outcome = tokio::task::spawn_blocking(move || {
        let state = task_state;
        let raw = decompress_limited(&body, state.api.max_batch_bytes).map_err(|e| {
            let status = match e {
                zero2048_protocol::BatchError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            Box::new(error(status, "bad_batch", e.to_string()))
        })?;
        let entries = decode_batch(&raw, state.api.max_batch_games)
            .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, "bad_batch", e.to_string())))?;
        let accepted = state.live.accepted();
        let rules = UploadRules { accepted_revisions: &accepted, search: state.live.search_requirement() };
        let db = state.ingest_db.lock().unwrap_or_else(|e| e.into_inner());
        let checked = check_batch(&entries, &rules, &mut |origin| stored_parent(&db, origin))
            .map_err(|e| Box::new(not_stored(e)))?;
        let prepared = prepare(&db, &entries, &checked).map_err(|e| Box::new(internal(e)))?;
        drop(db);
        // The chunk is written without holding the database, so uploads write theirs at once
        // (a bucket PUT takes tens of milliseconds); its rows are committed after it.
        let chunk = if prepared.games.is_empty() {
            None
        } else {
            Some(state.games.write(&prepared.games).map_err(|e| Box::new(not_stored(e)))?)
        };
        let mut db = state.ingest_db.lock().unwrap_or_else(|e| e.into_inner());
        let mut reply = commit_prepared(&mut db, &worker, &entries, prepared, chunk.as_ref())
            .map_err(|e| Box::new(not_stored(e)))?;
        let stored = db.last_game_id().map_err(|e| Box::new(internal(e)))?;
        drop(db);
        state.live.stored(stored, !reply.accepted.is_empty());
        // A set: a batch may hold 10,000 games.
        let accepted: std::collections::HashSet<_> = reply.accepted.iter().collect();
        let moves: u64 = entries
            .iter()
            .filter(|e| accepted.contains(&e.uuid))
            .filter_map(|e| e.record.as_ref().ok())
            .map(|r| r.steps.len() as u64)
            .sum();
        let m = &state.metrics;
        m.batches.fetch_add(1, Ordering::Relaxed);
        m.games_accepted.fetch_add(reply.accepted.len() as u64, Ordering::Relaxed);
        m.games_duplicate.fetch_add(reply.duplicates.len() as u64, Ordering::Relaxed);
        m.games_rejected.fetch_add(reply.rejected.len() as u64, Ordering::Relaxed);
        m.moves_accepted.fetch_add(moves, Ordering::Relaxed);
        reply.revision = state.live.revision.load(Ordering::Relaxed);
        Ok::<_, Box<Response>>(reply)
    })
    .await;
    match outcome {
        Ok(Ok(reply)) => axum::Json(reply).into_response(),
        Ok(Err(refusal)) => *refusal,
        Err(e) => internal(e),
    }
}

/// The latest revision as the status page shows it: no URL, only how it is served.
#[derive(Serialize)]
pub struct LatestSummary {
    /// The revision.
    pub revision: u64,
    /// Its file.
    pub weights_file: String,
    /// Its SHA-256.
    pub weights_sha256: String,
    /// Its size.
    pub weights_size: u64,
    /// How it is served.
    pub served_as: UrlKind,
    /// When the record expires (RFC 3339).
    pub deadline: String,
    /// The model.
    pub model: Option<ModelSpec>,
}

impl LatestSummary {
    fn of(latest: &LatestInfo) -> LatestSummary {
        LatestSummary {
            revision: latest.revision,
            weights_file: latest.weights_file.clone(),
            weights_sha256: latest.weights_sha256.clone(),
            weights_size: latest.weights_size,
            served_as: UrlKind::of(&latest.weights_url),
            deadline: latest
                .deadline
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            model: latest.extra.get("model").and_then(|m| serde_json::from_value(m.clone()).ok()),
        }
    }
}

/// `GET /api/v1/status`. Never holds a credential, a token or a signed URL.
#[derive(Serialize)]
pub struct Status {
    /// The protocol version.
    pub protocol_version: u32,
    /// The server's version.
    pub server_version: &'static str,
    /// Seconds since the server started.
    pub uptime_seconds: f64,
    /// The latest revision.
    pub revision: u64,
    /// Revisions whose games are accepted.
    pub accepted_revisions: Vec<u64>,
    /// The latest record, without its URL.
    pub latest: Option<LatestSummary>,
    /// The learner's progress.
    pub training: Progress,
    /// Games stored, in all.
    pub games_stored: u64,
    /// Uploads since the server started.
    pub uploads: UploadTotals,
    /// Storage.
    pub storage: StorageStatus,
    /// The run database's backend (`SQLite` or `PostgreSQL`; never where it is).
    pub database: &'static str,
    /// The accepted games' chunk objects.
    pub game_chunks: GameChunks,
    /// Every worker that sent games.
    pub workers: Vec<WorkerRow>,
    /// Every revision.
    pub revisions: Vec<RevisionRow>,
    /// Strength per evaluated revision.
    pub evaluations: Vec<EvaluationRow>,
}

/// Where the games' records are and what they take.
#[derive(Serialize)]
pub struct GameChunks {
    /// `bucket` or `local` (the games directory).
    pub stored_in: &'static str,
    /// Chunks stored.
    pub chunks: u64,
    /// Their compressed bytes.
    pub bytes: u64,
}

/// Upload counters since the server started.
#[derive(Serialize)]
pub struct UploadTotals {
    /// Batches.
    pub batches: u64,
    /// Games stored.
    pub accepted: u64,
    /// Games already stored.
    pub duplicates: u64,
    /// Games refused.
    pub rejected: u64,
}

async fn status(State(state): State<Arc<AppState>>) -> Response {
    let task_state = Arc::clone(&state);
    let tables = tokio::task::spawn_blocking(move || {
        let db = task_state.read_db.lock().unwrap_or_else(|e| e.into_inner());
        Ok::<_, zero2048_train::db::DbError>((
            db.workers()?,
            db.revisions()?,
            db.evaluations()?,
            db.game_count()?,
            db.chunk_totals()?,
        ))
    })
    .await;
    let (workers, revisions, evaluations, games_stored, chunks) = match tables {
        Ok(Ok(tables)) => tables,
        Ok(Err(e)) => return internal(e),
        Err(e) => return internal(e),
    };
    let revision = state.live.revision.load(Ordering::Relaxed);
    let m = &state.metrics;
    let status = Status {
        protocol_version: PROTOCOL_VERSION,
        server_version: BUILD_VERSION,
        uptime_seconds: state.started.elapsed().as_secs_f64(),
        revision,
        accepted_revisions: state.live.accepted(),
        latest: state.live.latest().as_ref().map(LatestSummary::of),
        training: state.live.progress(),
        games_stored,
        uploads: UploadTotals {
            batches: m.batches.load(Ordering::Relaxed),
            accepted: m.games_accepted.load(Ordering::Relaxed),
            duplicates: m.games_duplicate.load(Ordering::Relaxed),
            rejected: m.games_rejected.load(Ordering::Relaxed),
        },
        storage: state.adapter.status(),
        database: state.database.backend_name(),
        game_chunks: GameChunks {
            stored_in: if state.games.in_bucket() { "bucket" } else { "local" },
            chunks: chunks.chunks,
            bytes: chunks.bytes,
        },
        workers,
        revisions,
        evaluations,
    };
    axum::Json(status).into_response()
}

async fn prometheus(State(state): State<Arc<AppState>>) -> Response {
    let progress = state.live.progress();
    let live = &state.live;
    let mut samples = state.metrics.samples();
    let degraded = if state.adapter.is_degraded() { 1.0 } else { 0.0 };
    samples.extend([
        Sample {
            name: "zero2048_revision",
            kind: "gauge",
            help: "Latest published revision.",
            value: live.revision.load(Ordering::Relaxed) as f64,
        },
        Sample {
            name: "zero2048_games_learned",
            kind: "gauge",
            help: "Games learned, whole run.",
            value: progress.games as f64,
        },
        Sample {
            name: "zero2048_moves_learned",
            kind: "gauge",
            help: "Moves learned, whole run.",
            value: progress.moves as f64,
        },
        Sample {
            name: "zero2048_learner_moves_per_second",
            kind: "gauge",
            help: "Moves learned per second since the learner started.",
            value: progress.moves_per_second,
        },
        Sample {
            name: "zero2048_upload_backlog_games",
            kind: "gauge",
            help: "Games stored but not learned yet.",
            value: live
                .queued_through
                .load(Ordering::Relaxed)
                .saturating_sub(live.learned_through.load(Ordering::Relaxed)) as f64,
        },
        Sample {
            name: "zero2048_storage_degraded",
            kind: "gauge",
            help: "1 while the bucket is not in use.",
            value: degraded,
        },
    ]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics::render(&samples)).into_response()
}
