"use strict";
// The 2048-Zero dashboard: polls the server's JSON and draws it. No build step, no network
// beyond this server.

const $ = (selector) => document.querySelector(selector);
const charts = {};
const TILES = [2048, 4096, 8192, 16384, 32768];
const COLORS = ["#f67c5f", "#edc53f", "#6a9fb5", "#8fbc5a", "#9b6ab5", "#3c3a32"];
let status = null;
let samples = [];
let viewer = null;
let shown = 0;
let playing = null;

function number(n) {
  if (!isFinite(n)) return "-";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(2) + "G";
  if (a >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return String(Math.round(n));
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

// Draws or updates a chart; `data[0]` is x. The element's data-points says how many points it has.
function draw(id, series, data, xIsTime, yLabel) {
  const el = document.getElementById(id);
  el.dataset.points = String(data[0].length);
  const key = series.map((s) => s.label).join("|") + (xIsTime ? ":t" : ":n");
  const chart = charts[id];
  if (chart && chart.key === key) {
    chart.plot.setData(data);
    return;
  }
  if (chart) chart.plot.destroy();
  el.textContent = "";
  const options = {
    width: chartWidth(el),
    height: 220,
    scales: { x: { time: xIsTime } },
    series: [{}].concat(series),
    axes: [xIsTime ? {} : { values: (u, ticks) => ticks.map((v) => (Number.isInteger(v) ? number(v) : "")) }, { label: yLabel, size: 60, values: (u, ticks) => ticks.map(number) }].concat(
      series.some((s) => s.scale === "moves") ? [{ scale: "moves", side: 1, size: 60, label: "moves/s", grid: { show: false }, values: (u, ticks) => ticks.map(number) }] : []
    ),
    legend: { live: true },
  };
  charts[id] = { key, plot: new uPlot(options, data, el) };
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
    "score"
  );
  const reach = TILES.map((tile) =>
    evals.map((e) => {
      const r = e.strength.reached.find((t) => t.tile === tile);
      return r ? 100 * r.rate : 0;
    })
  );
  draw("reach-chart", TILES.map((t, i) => line(t + " reached %", COLORS[i])), [x].concat(reach), mode === "time", "% of games");
}

function renderThroughput() {
  const t = [], games = [], moves = [], stored = [], backlog = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    const dt = (b.at - a.at) / 1000;
    if (dt <= 0) continue;
    t.push(b.at / 1000);
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
    "per second"
  );
  draw("backlog-chart", [line("upload backlog (games)", COLORS[4])], [t, backlog], true, "games");
}

function renderSummary() {
  const p = status.training;
  const s = status.storage;
  const parts = [
    ["revision", status.revision],
    ["games learned", number(p.games)],
    ["moves/s", number(p.moves_per_second)],
    ["backlog", number(p.backlog)],
    ["workers", status.workers.length],
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
    row.append(
      text("td", w.name),
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
    ["latest revision", l ? String(l.revision) : "-"],
    ["file", l ? l.weights_file : "-"],
    ["size", l ? number(l.weights_size) + "B" : "-"],
    ["sha256", l ? l.weights_sha256 : "-"],
    ["served as", l ? l.served_as : "-"],
    ["record valid until", l ? l.deadline : "-"],
  ];
  const dl = $("#storage");
  dl.textContent = "";
  for (const [k, v] of rows) {
    dl.append(text("dt", k), text("dd", v, k === "state" && s.degraded ? "degraded" : ""));
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
    samples = (await response.json()).samples;
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
