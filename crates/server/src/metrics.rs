//! Counters for `/metrics` (Prometheus text format) and the status page.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the API has done since the server started.
#[derive(Default)]
pub struct Metrics {
    /// Upload requests answered 200.
    pub batches: AtomicU64,
    /// Games newly stored.
    pub games_accepted: AtomicU64,
    /// Games already stored (retries).
    pub games_duplicate: AtomicU64,
    /// Games refused.
    pub games_rejected: AtomicU64,
    /// Moves in stored games.
    pub moves_accepted: AtomicU64,
    /// Requests refused with 4xx.
    pub client_errors: AtomicU64,
    /// Requests failed with 5xx.
    pub server_errors: AtomicU64,
    /// `GET /api/v1/latest` answered.
    pub latest_requests: AtomicU64,
}

/// A gauge or counter value to render.
pub struct Sample<'a> {
    /// Metric name.
    pub name: &'a str,
    /// `counter` or `gauge`.
    pub kind: &'a str,
    /// One-line help.
    pub help: &'a str,
    /// Value.
    pub value: f64,
}

impl Metrics {
    /// The API's own counters as samples.
    pub fn samples(&self) -> Vec<Sample<'static>> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        vec![
            Sample {
                name: "zero2048_upload_batches_total",
                kind: "counter",
                help: "Game batches accepted.",
                value: get(&self.batches),
            },
            Sample {
                name: "zero2048_games_accepted_total",
                kind: "counter",
                help: "Games verified and stored.",
                value: get(&self.games_accepted),
            },
            Sample {
                name: "zero2048_games_duplicate_total",
                kind: "counter",
                help: "Games uploaded again after being stored.",
                value: get(&self.games_duplicate),
            },
            Sample {
                name: "zero2048_games_rejected_total",
                kind: "counter",
                help: "Games refused by verification.",
                value: get(&self.games_rejected),
            },
            Sample {
                name: "zero2048_moves_accepted_total",
                kind: "counter",
                help: "Moves in stored games.",
                value: get(&self.moves_accepted),
            },
            Sample {
                name: "zero2048_http_client_errors_total",
                kind: "counter",
                help: "Requests answered with a 4xx status.",
                value: get(&self.client_errors),
            },
            Sample {
                name: "zero2048_http_server_errors_total",
                kind: "counter",
                help: "Requests answered with a 5xx status.",
                value: get(&self.server_errors),
            },
            Sample {
                name: "zero2048_latest_requests_total",
                kind: "counter",
                help: "Latest records served.",
                value: get(&self.latest_requests),
            },
        ]
    }
}

/// Renders samples in the Prometheus text exposition format.
pub fn render(samples: &[Sample<'_>]) -> String {
    let mut out = String::new();
    for s in samples {
        let _ = writeln!(out, "# HELP {} {}", s.name, s.help);
        let _ = writeln!(out, "# TYPE {} {}", s.name, s.kind);
        let _ = writeln!(out, "{} {}", s.name, s.value);
    }
    out
}
