//! The dashboard at `GET /`: a page, its script and style, and the vendored uPlot, all embedded
//! in the binary; plus the JSON it reads beyond the status (throughput history, the game viewer)
//! and the export downloads.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use zero2048_game::GameRecord;
use zero2048_train::ThroughputSample;

use crate::api::{AppState, error};
use crate::export::{ExportFormat, write_games};

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");
const UPLOT_JS: &str = include_str!("../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/uplot/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("../assets/uplot/LICENSE");

/// The dashboard's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/assets/dashboard.js", get(|| async { asset("text/javascript", SCRIPT) }))
        .route("/assets/dashboard.css", get(|| async { asset("text/css", STYLE) }))
        .route("/assets/uPlot.iife.min.js", get(|| async { asset("text/javascript", UPLOT_JS) }))
        .route("/assets/uPlot.min.css", get(|| async { asset("text/css", UPLOT_CSS) }))
        .route("/assets/LICENSE-uPlot.txt", get(|| async { asset("text/plain", UPLOT_LICENSE) }))
        .route("/api/v1/history", get(history))
        .route("/api/v1/games/best", get(best_game))
        .route("/api/v1/games/export", get(export))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

#[derive(Serialize)]
struct History {
    /// The period the samples were taken at (`api.sample_seconds`): a longer step between two
    /// samples is a time the server was down.
    sample_seconds: f64,
    samples: Vec<ThroughputSample>,
}

async fn history(State(state): State<Arc<AppState>>) -> Response {
    let task_state = Arc::clone(&state);
    let samples = tokio::task::spawn_blocking(move || {
        task_state.read_db.lock().unwrap_or_else(|e| e.into_inner()).throughput(2000)
    })
    .await;
    match samples {
        Ok(Ok(samples)) => {
            axum::Json(History { sample_seconds: state.api.sample_seconds, samples }).into_response()
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

#[derive(Deserialize)]
struct RevisionQuery {
    revision: Option<u64>,
    format: Option<String>,
}

/// A game, replayed for the viewer: every board along the way.
#[derive(Serialize)]
struct Viewer {
    revision: u64,
    uuid: String,
    worker: String,
    score: u64,
    moves: u32,
    max_tile: u32,
    /// Revisions that have games, newest first.
    revisions: Vec<u64>,
    /// Exponents of the 16 cells, row-major: the start, then after each step.
    boards: Vec<[u8; 16]>,
    /// Score after each board.
    scores: Vec<u64>,
    /// The move that led to each board after the first.
    directions: Vec<String>,
}

async fn best_game(State(state): State<Arc<AppState>>, Query(query): Query<RevisionQuery>) -> Response {
    let task_state = Arc::clone(&state);
    let found = tokio::task::spawn_blocking(move || {
        let db = task_state.read_db.lock().unwrap_or_else(|e| e.into_inner());
        let revisions = db.revisions_with_games()?;
        let Some(revision) = query.revision.or_else(|| revisions.first().copied()) else {
            return Ok(None);
        };
        Ok::<_, zero2048_train::db::DbError>(db.games_of_revision(revision, 1)?.pop().map(|g| (g, revisions)))
    })
    .await;
    let (game, revisions) = match found {
        Ok(Ok(Some(found))) => found,
        Ok(Ok(None)) => return error(StatusCode::NOT_FOUND, "no_games", "no stored game for that revision"),
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    };
    let Ok(record) = GameRecord::decode(&game.record) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "a stored record does not decode");
    };
    let mut boards = vec![record.start.exponents()];
    let mut scores = vec![0];
    let mut directions = Vec::new();
    let mut score = 0;
    let steps = if game.origin.is_some() { record.continuation_steps() } else { record.replay_steps() };
    for step in steps {
        let Ok(step) = step else { break };
        score += step.reward as u64;
        boards.push(step.after.exponents());
        scores.push(score);
        directions.push(format!("{:?}", step.direction).to_lowercase());
    }
    axum::Json(Viewer {
        revision: game.revision,
        uuid: zero2048_protocol::Uuid::from_bytes(game.uuid).to_string(),
        worker: game.worker,
        score: game.score,
        moves: game.moves,
        max_tile: game.max_tile,
        revisions,
        boards,
        scores,
        directions,
    })
    .into_response()
}

async fn export(State(state): State<Arc<AppState>>, Query(query): Query<RevisionQuery>) -> Response {
    let Some(format) = ExportFormat::parse(query.format.as_deref().unwrap_or("jsonl")) else {
        return error(StatusCode::BAD_REQUEST, "bad_format", "format must be jsonl or csv");
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let revision = query.revision;
    let database = state.database.clone();
    let games = state.games.clone();
    tokio::task::spawn_blocking(move || {
        // Its own connection: a long export must not hold the status page's.
        match zero2048_train::RunDb::open(&database).map(|db| db.with_games(games)) {
            Ok(db) => {
                let _ = write_games(&db, revision, format, &mut |chunk| sender.blocking_send(chunk).is_ok());
            }
            Err(e) => tracing::warn!("export: {e}"),
        }
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (Ok::<_, std::io::Error>(chunk), receiver))
    });
    let name = match revision {
        Some(r) => format!("games-r{r}.{}", format.extension()),
        None => format!("games-all.{}", format.extension()),
    };
    (
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
