//! `zero2048 train`: the main job: the training server with its workers in this process.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use zero2048_train::{Budget, Progress, RunObserver, SelfPlay, Summary};

use crate::args::TrainArgs;
use crate::commands::learn;
use crate::{render, storage};

/// Runs the command: the server with in-process self-play workers.
pub fn run(args: TrainArgs) -> Result<()> {
    let mut options = learn::options(&args.storage, &args.listen, &args.learn)?;
    if let Some(threads) = args.threads {
        options.train.selfplay_threads = threads as usize;
    }
    let threads = options.train.selfplay_threads;
    if args.reset {
        if options.database.sqlite_path().is_none() {
            return Err(crate::bad_input(format!(
                "--reset deletes a SQLite run database; {} is PostgreSQL: drop and create that database yourself, then start without --reset",
                options.database
            )));
        }
        // Never delete a run another process is using.
        let held = zero2048_train::RunLock::acquire(&options.db_path, &options.storage.storage.weights_dir)
            .map_err(|e| anyhow::Error::new(crate::Exit(learn::EXIT_LOCKED, e.to_string())))?;
        reset(&options.db_path, &options.storage.storage.weights_dir, &options.storage.storage.games_dir())?;
        drop(held);
    }
    let runtime = storage::runtime()?;
    let fallback_port = args.listen.port.is_none();
    let mut server = learn::start(options, &runtime, fallback_port)?;
    let start = server.run().counters();
    let status = server.adapter().status();
    eprintln!(
        "training {} · revision {} · {} games learned so far · weights in {}{}{} · games in {}",
        server.run().model_name(),
        start.revision,
        start.games,
        server.adapter().local().dir().display(),
        status.bucket.as_ref().map(|b| format!(" and bucket {b}")).unwrap_or_default(),
        status.degraded.as_ref().map(|d| format!(" (degraded: {d})")).unwrap_or_default(),
        server.run().game_shelf().describe(),
    );
    eprintln!(
        "dashboard at {url}/ · remote workers: `zero2048 worker --server {url} --token T` (tokens: `zero2048 token add NAME`)",
        url = server.local_url()
    );
    eprintln!("press Ctrl-C to stop cleanly (what was learned is published); twice to quit at once");
    let stop = learn::two_stage_ctrl_c("stopping: publishing what was learned as a last revision…")?;

    let display = Display::new();
    let budget = Budget { games: args.games, time: args.time };
    struct Show<'a>(&'a Display);
    impl RunObserver for Show<'_> {
        fn progress(&mut self, progress: &Progress) {
            self.0.show(progress)
        }
    }
    let summary = server
        .train(budget, &stop, SelfPlay::Local { threads }, &mut Show(&display))
        .map_err(|e| anyhow::anyhow!(e))?;
    display.finish();
    server.shutdown();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

/// Deletes the run database, the weights directory's revisions and the games directory's
/// chunks, nothing else.
fn reset(db: &std::path::Path, weights_dir: &std::path::Path, games_dir: &std::path::Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", db.display()));
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    let mut removed = 0;
    if weights_dir.is_dir() {
        for entry in std::fs::read_dir(weights_dir)? {
            let path = entry?.path();
            if storage::is_weights_entry(&path) {
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                removed += 1;
            }
        }
    }
    let mut chunks = 0;
    if games_dir.is_dir() {
        for entry in std::fs::read_dir(games_dir)? {
            let path = entry?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if zero2048_train::db::is_chunk_name(&name) || zero2048_storage::ObjectShelf::is_partial(&name) {
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                chunks += 1;
            }
        }
    }
    eprintln!(
        "reset: removed {}, {removed} files from {} and {chunks} game chunks from {}",
        db.display(),
        weights_dir.display(),
        games_dir.display()
    );
    Ok(())
}

/// A progress bar on a terminal; a plain line every 10 s elsewhere.
pub(crate) struct Display {
    bar: Option<ProgressBar>,
    last_line: std::sync::Mutex<Instant>,
}

impl Display {
    pub(crate) fn new() -> Display {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = crate::logging::bars().add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        Display { bar, last_line: std::sync::Mutex::new(Instant::now()) }
    }

    fn line(p: &Progress) -> String {
        if let Some(activity) = &p.activity {
            return format!("{} games · revision {} · {activity}…", p.games, p.revision);
        }
        let eval = p
            .last_evaluation
            .as_ref()
            .map(|e| {
                format!(
                    " · eval r{}: {} ± {}",
                    e.revision,
                    render::thousands(e.strength.mean_score),
                    render::thousands(e.strength.ci95)
                )
            })
            .unwrap_or_default();
        format!(
            "{} games · {} moves/s · revision {} · recent mean {} · 2048 in {:.1}% · next revision in {} games{eval}",
            p.games,
            render::rate(p.moves_per_second),
            p.revision,
            render::thousands(p.recent_mean_score),
            100.0 * p.recent_2048_rate,
            p.games_to_next_revision
        )
    }

    pub(crate) fn show(&self, p: &Progress) {
        match &self.bar {
            Some(bar) => bar.set_message(Display::line(p)),
            None => {
                let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed().as_secs() >= 10 || p.activity.is_some() {
                    eprintln!("{}", Display::line(p));
                    *last = Instant::now();
                }
            }
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

pub(crate) fn print_summary(summary: &Summary) {
    let p = &summary.progress;
    println!("{:<24}{} ({} this session)", "games learned", p.games, p.session_games);
    println!("{:<24}{}", "moves learned", p.moves);
    println!(
        "{:<24}{} moves/s over {:.0} s",
        "learning speed",
        render::rate(p.moves_per_second),
        p.elapsed_seconds
    );
    println!("{:<24}{} (published this session: {})", "revision", p.revision, summary.revisions.len());
    let storage = &summary.storage;
    if let (Some(bucket), Some(reason)) = (&storage.bucket, &storage.degraded) {
        println!(
            "{:<24}{bucket} is behind: {} revisions are on local disk only ({reason}); the next run uploads them once the bucket answers",
            "bucket", storage.pending_catch_up
        );
    } else if let Some(reason) = &storage.degraded {
        println!("{:<24}never used: {reason}", "bucket");
    }
    println!(
        "{:<24}{} (2048 in {:.1}%)",
        "recent training mean",
        render::thousands(p.recent_mean_score),
        100.0 * p.recent_2048_rate
    );
    if !summary.evaluations.is_empty() {
        println!(
            "\n{:>8} {:>10} {:>20} {:>8} {:>8} {:>8} {:>8}",
            "revision", "games", "mean ± 95%", "2048", "4096", "8192", "16384"
        );
        for e in &summary.evaluations {
            let s = &e.strength;
            let rate = |i: usize| s.reached.get(i).map_or(0.0, |r| 100.0 * r.rate);
            println!(
                "{:>8} {:>10} {:>20} {:>7.1}% {:>7.1}% {:>7.1}% {:>7.1}%",
                e.revision,
                e.games_trained,
                format!("{} ± {}", render::thousands(s.mean_score), render::thousands(s.ci95)),
                rate(0),
                rate(1),
                rate(2),
                rate(3)
            );
        }
    }
}
