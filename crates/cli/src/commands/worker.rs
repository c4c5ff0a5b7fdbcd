//! `zero2048 worker`: self-play for a server.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use zero2048_storage::Secret;
use zero2048_worker::{
    ClientError, EXIT_INCOMPATIBLE, EXIT_UNAUTHORIZED, Signals, Worker, WorkerConfig, WorkerError,
    WorkerStatus,
};

use crate::args::WorkerArgs;
use crate::{Exit, bad_input};

/// Runs the command.
pub fn run(args: WorkerArgs) -> Result<()> {
    for server in &args.server {
        url::Url::parse(server)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| bad_input(format!("--server {server}: not an http:// or https:// URL")))?;
    }
    let file = crate::config::read(args.config.as_deref(), &crate::config::environment())?;
    let mut settings = file.worker;
    if let Some(threads) = args.threads {
        settings.threads = threads as usize;
    }
    if let Some(dir) = &args.spool {
        settings.spool_dir = dir.clone();
    }
    if let Some(mib) = args.cache_budget_mib {
        settings.cache_budget_mib = mib;
    }
    if let Some(dir) = &args.cache {
        settings.cache_dir = dir.clone();
    }
    if let Some(games) = args.batch_games {
        settings.batch_games = games as usize;
    }
    if let Some(interval) = args.upload_interval {
        settings.upload_interval_seconds = interval.as_secs_f64();
    }
    if let Some(games) = args.max_spool_games {
        settings.max_spool_games = games;
    }
    if let Some(interval) = args.poll_interval {
        settings.poll_interval_seconds = interval.as_secs_f64();
    }
    if let Some(delay) = args.adopt_delay {
        settings.adopt_delay_seconds = delay.as_secs_f64();
    }
    settings.validate().map_err(bad_input)?;
    let mut config = WorkerConfig::new(args.server[0].trim_end_matches('/'), &settings);
    config.fallback_servers = args.server[1..].iter().map(|s| s.trim_end_matches('/').to_string()).collect();
    config.token = args.token.clone().filter(|t| !t.is_empty()).map(Secret::new);
    config.latest_url = args.latest_url.clone();
    config.max_games = args.games;
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    eprintln!(
        "worker for {} · {} thread{} · spool {} · press Ctrl-C to finish the games in progress and upload; twice to \
         checkpoint them and quit",
        std::iter::once(&config.server)
            .chain(&config.fallback_servers)
            .cloned()
            .collect::<Vec<_>>()
            .join(" or "),
        config.threads,
        if config.threads == 1 { "" } else { "s" },
        config.spool_dir.display()
    );
    let signals = Arc::new(Signals::default());
    {
        let signals = Arc::clone(&signals);
        let presses = AtomicUsize::new(0);
        ctrlc::set_handler(move || {
            if presses.fetch_add(1, Ordering::SeqCst) == 0 {
                eprintln!("\nfinishing the games in progress, then uploading (Ctrl-C again to checkpoint them and quit)");
                signals.stop.store(true, Ordering::SeqCst);
            } else {
                eprintln!("\ncheckpointing the games in progress to the spool");
                signals.abort.store(true, Ordering::SeqCst);
            }
        })
        .context("installing the Ctrl-C handler")?;
    }
    let terminal = std::io::stderr().is_terminal();
    let mut last_line = Instant::now();
    let mut show = |status: &WorkerStatus| {
        if terminal {
            eprint!("\r\x1b[2K{}", status.line());
        } else if last_line.elapsed().as_secs() >= 10 {
            eprintln!("{}", status.line());
            last_line = Instant::now();
        }
    };
    let outcome = Worker::run(config, Arc::clone(&signals), &mut show);
    if terminal {
        eprintln!();
    }
    let summary = match outcome {
        Ok(summary) => summary,
        Err(WorkerError::Client(error @ ClientError::Incompatible(_))) => {
            return Err(anyhow::Error::new(Exit(EXIT_INCOMPATIBLE as u8, error.to_string())));
        }
        Err(WorkerError::Client(error @ ClientError::Unauthorized(_))) => {
            return Err(anyhow::Error::new(Exit(EXIT_UNAUTHORIZED as u8, error.to_string())));
        }
        Err(error) => return Err(anyhow::anyhow!(error)),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "played {} games ({} moves) · uploaded {} · refused {} · left in the spool {} · checkpointed {}",
            summary.games,
            summary.moves,
            summary.uploaded,
            summary.rejected,
            summary.spool_left,
            summary.checkpointed
        );
    }
    if signals.abort.load(Ordering::SeqCst) {
        return Err(anyhow::Error::new(Exit(130, "stopped with games checkpointed to the spool".into())));
    }
    Ok(())
}
