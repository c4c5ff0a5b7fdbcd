//! `zero2048 bench`: engine and search throughput against the plain reference, same run.

use anyhow::{Context, Result};
use serde::Serialize;
use zero2048_bench::{Comparison, Effort};

use crate::args::{BenchArgs, BenchSuite};
use crate::{render, storage};

#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    comparison: &'a Comparison,
    fast_per_cpu_second: f64,
    fast_per_wall_second: f64,
    reference_per_cpu_second: f64,
    reference_per_wall_second: f64,
    speedup_per_cpu_second: f64,
}

/// Runs the command.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.suite == BenchSuite::Storage {
        return run_storage(&args);
    }
    if args.suite == BenchSuite::Server {
        return run_server(&args);
    }
    if args.suite == BenchSuite::Zero {
        return run_zero(&args);
    }
    if args.suite == BenchSuite::Roles {
        return run_roles(&args);
    }
    if args.suite == BenchSuite::Downloads {
        return run_downloads(&args);
    }
    let effort = if args.quick { Effort::Quick } else { Effort::Full };
    if !args.json {
        eprintln!(
            "measuring on one thread; each figure is also taken on the plain reference in the same run"
        );
    }
    let results = match args.suite {
        BenchSuite::Learn => {
            let network = if args.quick {
                zero2048_model::NTupleConfig::small_4x4()
            } else {
                zero2048_model::NTupleConfig::standard_4x6()
            };
            zero2048_bench::learning::run(effort, &network)
        }
        _ => zero2048_bench::run_all(effort, args.depth),
    };
    let rows: Vec<Row> = results
        .iter()
        .map(|c| Row {
            comparison: c,
            fast_per_cpu_second: c.fast.per_cpu_second(),
            fast_per_wall_second: c.fast.per_wall_second(),
            reference_per_cpu_second: c.reference.per_cpu_second(),
            reference_per_wall_second: c.reference.per_wall_second(),
            speedup_per_cpu_second: c.speedup(),
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<36} {:>16} {:>16} {:>16} {:>16} {:>9}",
        "benchmark", "fast /CPU-s", "fast /wall-s", "reference /CPU-s", "reference /wall-s", "speedup"
    );
    for row in &rows {
        let name = if row.comparison.name.starts_with("expectimax") {
            format!("{} d{}", row.comparison.name, args.depth)
        } else {
            row.comparison.name.to_string()
        };
        let unit = row.comparison.unit;
        println!(
            "{name:<36} {:>16} {:>16} {:>16} {:>16} {:>8.1}×",
            format!("{} {unit}", render::rate(row.fast_per_cpu_second)),
            format!("{} {unit}", render::rate(row.fast_per_wall_second)),
            format!("{} {unit}", render::rate(row.reference_per_cpu_second)),
            format!("{} {unit}", render::rate(row.reference_per_wall_second)),
            row.speedup_per_cpu_second
        );
    }
    Ok(())
}

fn run_zero(args: &BenchArgs) -> Result<()> {
    use anyhow::Context;
    let effort = if args.quick { Effort::Quick } else { Effort::Full };
    let net = match &args.policy_value_weights {
        Some(path) => zero2048_model::PolicyValueNet::load(path).map(|(net, _)| net)?,
        None => zero2048_model::PolicyValueNet::new(zero2048_model::PolicyValueConfig::default(), 1)
            .map_err(anyhow::Error::msg)?,
    };
    let simulations = if args.quick { args.simulations.min(8) } else { args.simulations };
    let comparisons = zero2048_bench::zero::throughput(effort, &net, simulations);
    let strengths = match &args.ntuple_weights {
        Some(path) => {
            let (ntuple, _) = zero2048_model::weights_file::load(path, None)
                .with_context(|| format!("loading the n-tuple weights {}", path.display()))?;
            let games = if args.quick { args.games.min(2) } else { args.games };
            zero2048_bench::zero::compare(
                &net,
                &std::sync::Arc::new(ntuple),
                simulations,
                args.value_weight,
                games,
                0x2048,
            )
        }
        None => Vec::new(),
    };
    if args.json {
        let out = serde_json::json!({ "network": net.config(), "parameters": net.parameters(),
            "simulations": simulations, "throughput": comparisons, "strength": strengths });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "policy-value network {:?}, {} parameters, one core; MCTS {simulations} simulations per move",
        net.config(),
        net.parameters()
    );
    for c in &comparisons {
        println!(
            "{:<32} {:>16} /CPU-s   baseline {:>16} /CPU-s   {:.1}×",
            c.name,
            format!("{} {}", render::rate(c.fast.per_cpu_second()), c.unit),
            format!("{} {}", render::rate(c.reference.per_cpu_second()), c.unit),
            c.speedup()
        );
    }
    for s in &strengths {
        println!(
            "{:<44} {:>8.2} CPU-ms/move   mean {:>8.0} ± {:<6.0} 2048 reached {:>5.1}%",
            s.player,
            s.cpu_ms_per_move,
            s.strength.mean_score,
            s.strength.ci95,
            100.0 * s.strength.reached.first().map_or(0.0, |r| r.rate)
        );
    }
    Ok(())
}

fn run_storage(args: &BenchArgs) -> Result<()> {
    let config = storage::load_config(&args.storage)?;
    let size = args.size_mib << 20;
    let report = storage::runtime()?
        .block_on(zero2048_bench::storage::run(&config, size, &args.work_dir))
        .map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("storage benchmark, {} MiB file", args.size_mib);
    for t in &report.transfers {
        println!("{:<56} {:>9.1} MB/s  {:>7.2} s", t.name, t.megabytes_per_second, t.seconds);
    }
    println!(
        "{:<56} {:>9.1} MiB",
        "peak resident memory of the process",
        report.peak_rss_bytes as f64 / (1 << 20) as f64
    );
    println!("{:<56} {:>9.3} s", "fallback decision, bucket port closed", report.fallback_decision_seconds);
    Ok(())
}

fn run_downloads(args: &BenchArgs) -> Result<()> {
    let config = storage::load_config(&args.storage)?;
    let report = storage::runtime()?
        .block_on(zero2048_bench::downloads::run(&config.storage.weights_dir, &args.work_dir))
        .map_err(anyhow::Error::msg);
    let _ = std::fs::remove_dir_all(&args.work_dir);
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    println!(
        "{:>8} {:>10} {:>17} {:>17} {:>14} {:>22} {:>22} {:>22}",
        "revision",
        "whole MiB",
        "compressed MiB",
        "delta MiB",
        "delta again",
        "delta: wall / CPU s",
        "whole: wall / CPU s",
        "patches: wall / CPU s"
    );
    for r in &report.revisions {
        println!(
            "{:>8} {:>10.1} {:>9.1} ({:>4.1}%) {:>9.1} ({:>4.1}%) {:>10.1} MiB {:>10.2} / {:>9.2} {:>10.2} / {:>9.2} {:>10.2} / {:>9.2}",
            format!("{}←{}", r.revision, r.base_revision),
            mib(r.whole_bytes),
            mib(r.compressed_bytes),
            100.0 * r.compressed_ratio(),
            mib(r.delta_bytes),
            100.0 * r.delta_ratio(),
            mib(r.delta_bytes_rewritten),
            r.delta_seconds,
            r.delta_cpu_seconds,
            r.whole_seconds,
            r.whole_cpu_seconds,
            r.write_patches_seconds,
            r.write_patches_cpu_seconds,
        );
    }
    println!("a following worker downloads {:.1}% of the whole files' bytes", 100.0 * report.delta_ratio);
    Ok(())
}

fn run_server(args: &BenchArgs) -> Result<()> {
    let effort = if args.quick { Effort::Quick } else { Effort::Full };
    let seconds = if args.quick { args.load_seconds.min(1.0) } else { args.load_seconds };
    let postgres = args
        .database
        .as_deref()
        .map(zero2048_train::db::DatabaseUrl::parse)
        .transpose()
        .map_err(|e| crate::bad_input(e.to_string()))?;
    if postgres.as_ref().is_some_and(|url| url.sqlite_path().is_some()) {
        return Err(crate::bad_input("--database here names a PostgreSQL database to measure ingest on"));
    }
    let report = zero2048_bench::server::run(effort, seconds, args.workers, postgres.as_ref())
        .map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let i = &report.ingest;
    println!(
        "{:<52} {:>14} /CPU-s   plain JSON + array engine: {:>14} /CPU-s   {:.1}×",
        i.name,
        format!("{} moves", render::rate(i.fast.per_cpu_second())),
        format!("{} moves", render::rate(i.reference.per_cpu_second())),
        i.speedup()
    );
    if let Some(p) = &report.ingest_postgres {
        println!(
            "{:<52} {:>14} /CPU-s   on SQLite, same run: {:>14} /CPU-s   {:.2}× ({:.2}× wall)",
            p.name,
            format!("{} moves", render::rate(p.fast.per_cpu_second())),
            format!("{} moves", render::rate(p.reference.per_cpu_second())),
            p.speedup(),
            p.fast.per_wall_second() / p.reference.per_wall_second().max(1e-9)
        );
    }
    for f in &report.footprint {
        println!(
            "storage on {}: {} games, {} moves: database {:.3} bytes/move with records in chunks (records in rows: {:.3}, {:.1}× more) + chunks {:.3} bytes/move",
            f.backend,
            f.games,
            f.moves,
            f.chunked_per_move(),
            f.inline_per_move(),
            f.inline_per_move() / f.chunked_per_move().max(1e-9),
            f.chunk_per_move()
        );
    }
    let l = &report.latest;
    println!(
        "{:<52} {:>14} /s       404 fallback: {:>14} /s   {:.2}×",
        l.name,
        render::rate(l.fast.per_wall_second()),
        render::rate(l.reference.per_wall_second()),
        l.fast.per_wall_second() / l.reference.per_wall_second().max(1e-9)
    );
    let f = &report.load;
    println!(
        "{} workers × {} games per upload for {:.0} s: {} uploads, {} errors, {} games, {} moves/s stored, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        f.workers,
        f.batch_games,
        f.seconds,
        f.uploads,
        f.errors,
        f.games,
        render::rate(f.moves_per_second),
        f.p50_ms,
        f.p99_ms,
        f.max_ms
    );
    let s = &report.selfplay;
    println!(
        "self-play, {} thread, games of {:.0} moves: in-process {} moves/s, remote worker {} moves/s ({:.1}%)",
        s.threads,
        s.mean_game_moves,
        render::rate(s.in_process_moves_per_second),
        render::rate(s.remote_moves_per_second),
        100.0 * s.ratio
    );
    println!(
        "self-play, no learner on this machine: in-process {} moves/s, remote worker {} moves/s ({:.1}%)",
        render::rate(s.alone_in_process_moves_per_second),
        render::rate(s.alone_remote_moves_per_second),
        100.0 * s.alone_ratio
    );
    Ok(())
}

fn run_roles(args: &BenchArgs) -> Result<()> {
    let effort = if args.quick { Effort::Quick } else { Effort::Full };
    let seconds = if args.quick { args.load_seconds.min(2.0) } else { args.load_seconds };
    let database = args
        .database
        .as_deref()
        .map(zero2048_train::db::DatabaseUrl::parse)
        .transpose()
        .map_err(|e| crate::bad_input(e.to_string()))?;
    let exe = std::env::current_exe().context("finding this program to start its servers")?;
    let r = zero2048_bench::roles::run(&exe, effort, seconds, args.workers, database.as_ref())
        .map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "{} workers × {} games per upload over 2 API servers apart from the learner ({}), {:.0} s, one API server killed (SIGKILL) at {:.1} s:",
        r.workers, r.batch_games, r.database, r.seconds, r.killed_at
    );
    println!(
        "  {} uploads, {} errors, {} failovers (longest {:.0} ms from the failed attempt to the acknowledgement), {} moves/s, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r.uploads,
        r.errors,
        r.failovers,
        r.max_failover_ms,
        render::rate(r.moves_per_second),
        r.p50_ms,
        r.p99_ms,
        r.max_ms
    );
    println!(
        "  {} games acknowledged, {} of them lost; {} games stored (each at most once: the UUID is unique)",
        r.acknowledged, r.lost, r.stored
    );
    Ok(())
}
