"use strict";
// The 2048-Zero dashboard: polls the server's JSON and draws it. No build step, no network
// beyond this server.

const $ = (selector) => document.querySelector(selector);
const charts = {};
const TILES = [2048, 4096, 8192, 16384, 32768];
const X_LABELS = { revision: "revision", games: "games trained", time: "published" };
const NO_EVALUATION = "no evaluation yet: each revision is scored on fixed seeds when it is published (train.evaluate_every_revisions)";
const NO_SAMPLES = "no throughput yet: a point every api.sample_seconds once the run is learning";
const COLORS = ["#f67c5f", "#edc53f", "#6a9fb5", "#8fbc5a", "#9b6ab5", "#3c3a32"];
let status = null;
let samples = [];
let samplePeriod = 10;
let viewer = null;
let shown = 0;
let playing = null;

function number(n) {
  if (n == null || !isFinite(n)) return "-";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(2) + "G";
  if (a >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(1) + "k";
  if (a >= 100 || Number.isInteger(n)) return String(Math.round(n));
  // Small rates (a worker's 0.4 games/s) keep their decimals, or every tick reads "0" or "1".
  return String(Number(n.toPrecision(2)));
}

// Axis tick labels: as many decimals as the tick spacing needs, so neighbouring labels differ.
function ticks(u, values, axisIndex, space, increment) {
  if (increment != null && increment < 1 && increment > 0) {
    const decimals = Math.min(6, Math.ceil(-Math.log10(increment) - 1e-9));
    return values.map((v) => (v == null ? "" : v.toFixed(decimals)));
  }
  return values.map(number);
}

// Timestamps as people read them: "2026-12-02 01:16:51 UTC", never nanoseconds.
function when(rfc3339) {
  const t = Date.parse(rfc3339);
  if (!isFinite(t)) return rfc3339 || "-";
  return new Date(t).toISOString().slice(0, 19).replace("T", " ") + " UTC";
}

function ago(unixSeconds) {
  const s = Math.max(0, Date.now() / 1000 - unixSeconds);
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  return (s / 3600).toFixed(1) + " h ago";
}

function text(tag, content, className) {
  const el = document.createElement(tag);
  el.textContent = content;
  if (className) el.className = className;
  return el;
}

function chartWidth(el) {
  return Math.max(260, Math.floor(el.getBoundingClientRect().width || el.parentElement.clientWidth - 24));
}

// Shows the newest point's values in the legend whenever the cursor is not on the chart, instead of
// uPlot's "--".
function legendAtLatest(u) {
  if (u.cursor.idx == null && u.data[0].length) u.setLegend({ idx: u.data[0].length - 1 });
}

// Draws or updates a chart; `data[0]` is x. The element's data-points says how many points it has;
// with none, the chart says why (`empty`) instead of staying blank.
function draw(id, series, data, xIsTime, yLabel, xLabel, empty) {
  const el = document.getElementById(id);
  el.dataset.points = String(data[0].length);
  const chart = charts[id];
  if (!data[0].length) {
    if (chart) chart.plot.destroy();
    delete charts[id];
    el.textContent = "";
    el.append(text("p", empty, "empty"));
    return;
  }
  const key = series.map((s) => s.label).join("|") + ":" + xLabel;
  if (chart && chart.key === key) {
    chart.plot.setData(data);
    legendAtLatest(chart.plot);
    return;
  }
  if (chart) chart.plot.destroy();
  el.textContent = "";
  const x = xIsTime
    ? { label: xLabel, value: (u, v) => (v == null ? "-" : new Date(v * 1000).toISOString().slice(11, 19) + " UTC") }
    : { label: xLabel, value: (u, v) => (v == null ? "-" : number(v)) };
  const options = {
    width: chartWidth(el),
    height: 220,
    scales: { x: { time: xIsTime } },
    series: [x].concat(series),
    axes: [xIsTime ? {} : { values: (u, v, a, s, inc) => ticks(u, v, a, s, Math.max(1, inc)) }, { label: yLabel, size: 60, values: ticks }].concat(
      series.some((s) => s.scale === "moves") ? [{ scale: "moves", side: 1, size: 60, label: "moves/s", grid: { show: false }, values: ticks }] : []
    ),
    legend: { live: true },
    hooks: { setCursor: [legendAtLatest] },
  };
  const plot = new uPlot(options, data, el);
  charts[id] = { key, plot };
  legendAtLatest(plot);
}

function line(label, color, extra) {
  return Object.assign({ label, stroke: color, width: 2, points: { show: true, size: 5 }, value: (u, v) => (v == null ? "-" : number(v)) }, extra || {});
}

function renderStrength() {
  const mode = $("#x-axis").value;
  const published = {};
  for (const r of status.revisions) published[r.revision] = Date.parse(r.published_at) / 1000;
  const depth = status.evaluations.length ? status.evaluations[0].depth : 1;
  const evals = status.evaluations.filter((e) => e.depth === depth).sort((a, b) => a.revision - b.revision);
  const x = evals.map((e) => (mode === "revision" ? e.revision : mode === "games" ? e.games_trained : published[e.revision] || 0));
  const mean = evals.map((e) => e.strength.mean_score);
  const low = evals.map((e) => e.strength.mean_score - e.strength.ci95);
  const high = evals.map((e) => e.strength.mean_score + e.strength.ci95);
  draw(
    "strength-chart",
    [line("mean score", COLORS[0]), line("95% low", COLORS[2], { width: 1, dash: [4, 4] }), line("95% high", COLORS[2], { width: 1, dash: [4, 4] })],
    [x, mean, low, high],
    mode === "time",
    "score",
    X_LABELS[mode],
    NO_EVALUATION
  );
  const reach = TILES.map((tile) =>
    evals.map((e) => {
      const r = e.strength.reached.find((t) => t.tile === tile);
      return r ? 100 * r.rate : 0;
    })
  );
  draw("reach-chart", TILES.map((t, i) => line(t + " reached %", COLORS[i])), [x].concat(reach), mode === "time", "% of games", X_LABELS[mode], NO_EVALUATION);
}

function renderThroughput() {
  const t = [], games = [], moves = [], stored = [], backlog = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    const dt = (b.at - a.at) / 1000;
    if (dt <= 0) continue;
    t.push(b.at / 1000);
    if (dt > 3 * samplePeriod) {
      // The server was down: a gap, not a rate averaged over the outage.
      games.push(null), stored.push(null), moves.push(null), backlog.push(null);
      continue;
    }
    games.push(Math.max(0, b.games - a.games) / dt);
    moves.push(Math.max(0, b.moves - a.moves) / dt);
    stored.push(Math.max(0, b.stored - a.stored) / dt);
    backlog.push(b.backlog);
  }
  draw(
    "throughput-chart",
    [line("games learned/s", COLORS[0]), line("games received/s", COLORS[3]), line("learner updates (moves)/s", COLORS[2], { scale: "moves" })],
    [t, games, stored, moves],
    true,
    "per second",
    "time",
    NO_SAMPLES
  );
  draw("backlog-chart", [line("upload backlog (games)", COLORS[4])], [t, backlog], true, "games", "time", NO_SAMPLES);
}

function renderSummary() {
  const p = status.training;
  const s = status.storage;
  const parts = [
    ["revision", status.revision],
    ["games learned", number(p.games)],
    ["moves/s", number(p.moves_per_second)],
    ["backlog", number(p.backlog)],
    ["workers", status.workers.filter((w) => w.active).length + " active of " + status.workers.length],
    ["storage", s.backend + (s.degraded ? " (degraded)" : "")],
  ];
  const summary = $("#summary");
  summary.textContent = "";
  parts.forEach(([k, v], i) => {
    if (i) summary.append(" · ");
    summary.append(k + " ");
    summary.append(text("b", String(v)));
  });
}

function renderWorkers() {
  const body = $("#workers tbody");
  body.textContent = "";
  for (const w of status.workers) {
    const hours = Math.max((w.last_seen - w.first_seen) / 3600, 1 / 60);
    const row = document.createElement("tr");
    const state = w.revoked_at != null ? "revoked" : w.active ? "active" : "idle";
    row.className = state;
    row.append(
      text("td", w.token),
      text("td", w.machine || "-"),
      text("td", state, "state-" + state),
      text("td", ago(w.last_seen)),
      text("td", number(w.games)),
      text("td", number(w.moves)),
      text("td", number(w.games / hours)),
      text("td", String(w.rejected) + (w.quarantined ? " (" + w.quarantined + " quarantined)" : "")),
      text("td", w.last_rejection || "", "reason")
    );
    body.append(row);
  }
}

function renderStorage() {
  const s = status.storage;
  const l = status.latest;
  const rows = [
    ["backend", s.backend + (s.configured !== s.backend ? " (configured: " + s.configured + ")" : "")],
    ["state", s.degraded ? "degraded: " + s.degraded : "ok"],
    ["bucket", s.bucket || "-"],
    ["pending catch-up", String(s.pending_catch_up)],
    ["run database", status.database],
    ["game chunks", number(status.game_chunks.chunks) + " · " + number(status.game_chunks.bytes) + "B · " +
      (status.game_chunks.stored_in === "bucket" ? "in the bucket" : "on local disk")],
    ["weights on disk", (s.weights_bytes == null ? "unreadable" : number(s.weights_bytes) + "B") +
      (s.weights_budget_bytes ? " of a " + number(s.weights_budget_bytes) + "B budget" : ", no byte budget") +
      " · " + (s.keep_revisions ? "newest " + s.keep_revisions + " kept" : "all kept")],
    ["latest revision", l ? String(l.revision) : "-"],
    ["file", l ? l.weights_file : "-"],
    ["size", l ? number(l.weights_size) + "B" : "-"],
    ["sha256", l ? l.weights_sha256.slice(0, 16) + "…" : "-", l ? l.weights_sha256 : ""],
    ["served as", l ? l.served_as : "-"],
    ["record valid until", l ? when(l.deadline) : "-", l ? l.deadline : ""],
  ];
  const dl = $("#storage");
  dl.textContent = "";
  for (const [k, v, full] of rows) {
    const dd = text("dd", v, k === "state" && s.degraded ? "degraded" : "");
    dd.title = full || v;
    dl.append(text("dt", k), dd);
  }
}

function showMove(i) {
  if (!viewer) return;
  shown = Math.max(0, Math.min(i, viewer.boards.length - 1));
  const board = $("#board");
  board.textContent = "";
  for (const e of viewer.boards[shown]) {
    board.append(text("div", e ? String(1 << e) : "", "cell" + (e ? " t" + e : "")));
  }
  $("#viewer-slider").value = String(shown);
  $("#viewer-move").textContent = shown + " / " + (viewer.boards.length - 1);
  $("#viewer-score").textContent = "score " + viewer.scores[shown];
}

async function loadGame() {
  const revision = $("#viewer-revision").value;
  const url = "api/v1/games/best" + (revision ? "?revision=" + revision : "");
  const response = await fetch(url);
  if (!response.ok) {
    $("#viewer-info").textContent = "no stored game yet";
    return;
  }
  viewer = await response.json();
  const select = $("#viewer-revision");
  const current = String(viewer.revision);
  select.textContent = "";
  for (const r of viewer.revisions) select.append(new Option("r" + r, String(r), false, String(r) === current));
  select.value = current;
  $("#export-jsonl").href = "api/v1/games/export?format=jsonl&revision=" + current;
  $("#export-csv").href = "api/v1/games/export?format=csv&revision=" + current;
  $("#viewer-info").textContent =
    "best game of revision " + viewer.revision + ": " + number(viewer.score) + " points, " + viewer.moves + " moves, largest tile " + viewer.max_tile + " (worker " + viewer.worker + ")";
  $("#viewer-slider").max = String(viewer.boards.length - 1);
  showMove(0);
}

function togglePlay() {
  if (playing) {
    clearInterval(playing);
    playing = null;
    $("#viewer-play").textContent = "play";
    return;
  }
  $("#viewer-play").textContent = "pause";
  playing = setInterval(() => {
    if (!viewer || shown >= viewer.boards.length - 1) return togglePlay();
    showMove(shown + 1);
  }, 40);
}

async function refreshStatus() {
  try {
    const response = await fetch("api/v1/status");
    status = await response.json();
    renderSummary();
    renderStrength();
    renderWorkers();
    renderStorage();
    document.body.dataset.ready = "status";
  } catch (e) {
    $("#summary").textContent = "the server does not answer (" + e + ")";
  }
}

async function refreshHistory() {
  try {
    const response = await fetch("api/v1/history");
    const history = await response.json();
    samples = history.samples;
    samplePeriod = history.sample_seconds;
    renderThroughput();
  } catch (e) {
    /* the status line says when the server is away */
  }
}

$("#x-axis").addEventListener("change", () => status && renderStrength());
$("#viewer-load").addEventListener("click", loadGame);
$("#viewer-revision").addEventListener("change", loadGame);
$("#viewer-prev").addEventListener("click", () => showMove(shown - 1));
$("#viewer-next").addEventListener("click", () => showMove(shown + 1));
$("#viewer-play").addEventListener("click", togglePlay);
$("#viewer-slider").addEventListener("input", (e) => showMove(Number(e.target.value)));
window.addEventListener("resize", () => {
  for (const id in charts) {
    const el = document.getElementById(id);
    charts[id].plot.setSize({ width: chartWidth(el), height: 220 });
  }
});

refreshStatus().then(refreshHistory).then(loadGame);
setInterval(refreshStatus, 2000);
setInterval(refreshHistory, 5000);
