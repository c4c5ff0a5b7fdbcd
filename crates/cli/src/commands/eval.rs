//! `zero2048 eval`: a seeded series of games and its strength table.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use zero2048_game::SpawnRule;
use zero2048_search::{GameResult, Player, Series, Strength};

use crate::args::EvalArgs;
use crate::{players, render};

#[derive(Serialize)]
struct Report<'a> {
    player: String,
    games: u64,
    seed: u64,
    threads: usize,
    strength: &'a Strength,
    timing: Timing,
}

/// Everything that varies from run to run lives here, apart from the deterministic results.
#[derive(Serialize)]
struct Timing {
    seconds: f64,
    moves_per_second: f64,
    nodes_per_second: f64,
}

/// Runs the command.
pub fn run(args: EvalArgs) -> Result<()> {
    let rule = SpawnRule::new(args.player.four_probability as f64)?;
    let threads = args
        .threads
        .map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |t| t as usize);
    let factory = players::PlayerFactory::new(&args.player)?;
    let make_player = |seed: u64| -> Box<dyn Player> { factory.build(seed) };
    let series = Series {
        games: args.games as usize,
        base_seed: args.seed,
        threads,
        rule,
        keep_records: args.records.is_some(),
        player: &make_player,
    };

    let progress = Progress::new(args.games, !args.json);
    let started = Instant::now();
    let results = series.run(&|result: &GameResult| progress.game_done(result));
    let seconds = started.elapsed().as_secs_f64();
    progress.finish();

    let strength = Strength::of(&results).context("no game was played")?;
    let moves: u64 = results.iter().map(|r| r.moves as u64).sum();
    let nodes: u64 = results.iter().map(|r| r.nodes).sum();
    let report = Report {
        player: factory.describe(),
        games: args.games,
        seed: args.seed,
        threads,
        strength: &strength,
        timing: Timing {
            seconds,
            moves_per_second: moves as f64 / seconds.max(1e-9),
            nodes_per_second: nodes as f64 / seconds.max(1e-9),
        },
    };
    if let Some(path) = &args.records {
        write_records(path, &results)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn write_records(path: &std::path::Path, results: &[GameResult]) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for result in results {
        serde_json::to_writer(&mut out, result)?;
        out.write_all(b"\n")?;
    }
    out.flush().with_context(|| format!("writing {}", path.display()))
}

fn print_table(report: &Report) {
    let s = report.strength;
    let rows = [
        ("player", report.player.clone()),
        (
            "games",
            format!("{} (seeds derived from {}, {} threads)", report.games, report.seed, report.threads),
        ),
        ("mean score", format!("{} ± {} (95%)", render::thousands(s.mean_score), render::thousands(s.ci95))),
        ("median score", render::thousands(s.median_score)),
        (
            "min / max",
            format!("{} / {}", render::thousands(s.min_score as f64), render::thousands(s.max_score as f64)),
        ),
        ("moves per game", format!("{:.1}", s.mean_moves)),
        ("largest tile", s.max_tile.to_string()),
        (
            "reached",
            s.reached
                .iter()
                .map(|r| format!("{}: {:.1}%", r.tile, 100.0 * r.rate))
                .collect::<Vec<_>>()
                .join("  "),
        ),
        (
            "speed",
            format!(
                "{} moves/s, {} nodes/s, {:.1} s (wall)",
                render::rate(report.timing.moves_per_second),
                render::rate(report.timing.nodes_per_second),
                report.timing.seconds
            ),
        ),
    ];
    for (name, value) in rows {
        println!("{name:<16}{value}");
    }
}

/// A progress bar on a terminal; on anything else, a plain line every tenth of the series.
struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: AtomicU64,
    score_sum: AtomicU64,
    plain: bool,
    lock: Mutex<()>,
}

impl Progress {
    fn new(total: u64, show: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (show && terminal).then(|| {
            let bar = crate::logging::bars().add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} games · {msg} · eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Progress {
            bar,
            total,
            done: AtomicU64::new(0),
            score_sum: AtomicU64::new(0),
            plain: show && !terminal,
            lock: Mutex::new(()),
        }
    }

    fn game_done(&self, result: &GameResult) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let sum = self.score_sum.fetch_add(result.score, Ordering::Relaxed) + result.score;
        let mean = render::thousands(sum as f64 / done as f64);
        if let Some(bar) = &self.bar {
            bar.set_message(format!("mean {mean}"));
            bar.inc(1);
        } else if self.plain && (done * 10 / self.total) != ((done - 1) * 10 / self.total) {
            let _guard = self.lock.lock();
            eprintln!("{done}/{} games, mean score so far {mean}", self.total);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
