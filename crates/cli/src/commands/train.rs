//! `zero2048 train`: the main job.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use zero2048_model::NTupleConfig;
use zero2048_storage::StorageAdapter;
use zero2048_train::{Budget, Progress, Summary, TrainingRun};

use crate::args::{NetworkShape, TrainArgs};
use crate::{render, storage};

/// Runs the command.
pub fn run(args: TrainArgs) -> Result<()> {
    let (storage_config, mut config) = storage::load(&args.storage)?;
    if let Some(shape) = args.network {
        config.network = match shape {
            NetworkShape::Standard4x6 => NTupleConfig::standard_4x6(),
            NetworkShape::Small4x4 => NTupleConfig::small_4x4(),
        };
    }
    if let Some(rate) = args.learning_rate {
        config.td.learning_rate = rate;
    }
    config.td.coherence |= args.coherence;
    if let Some(n) = args.revision_every_games {
        config.revision_every_games = n;
    }
    if let Some(s) = args.revision_every_seconds {
        config.revision_every_seconds = s;
    }
    if let Some(games) = args.eval_games {
        config.evaluation.games = games;
        if games == 0 {
            config.evaluate_every_revisions = 0;
        }
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(threads) = args.threads {
        config.selfplay_threads = threads as usize;
    }

    if args.reset {
        reset(&args.db, &storage_config.storage.weights_dir)?;
    }
    let resume_from =
        args.resume_from.as_deref().map(|spec| storage::fetch_weights(spec, &storage_config)).transpose()?;

    let runtime = storage::runtime()?;
    let adapter =
        Arc::new(runtime.block_on(StorageAdapter::from_config(&storage_config)).context("opening storage")?);
    let _catch_up = {
        let _entered = runtime.enter();
        adapter.spawn_catch_up()
    };
    let mut run = TrainingRun::open(
        config.clone(),
        Arc::clone(&adapter),
        runtime.handle().clone(),
        &args.db,
        resume_from.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let start = run.counters();
    let status = adapter.status();
    eprintln!(
        "training {} · revision {} · {} games learned so far · weights in {}{}{}",
        zero2048_search::Evaluator::name(run.network()),
        start.revision,
        start.games,
        adapter.local().dir().display(),
        status.bucket.as_ref().map(|b| format!(" and bucket {b}")).unwrap_or_default(),
        status.degraded.as_ref().map(|d| format!(" (degraded: {d})")).unwrap_or_default(),
    );
    eprintln!(
        "press Ctrl-C to stop cleanly (the games in flight are learned and published); twice to quit at once"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let presses = Arc::new(AtomicUsize::new(0));
    {
        let (stop, presses) = (Arc::clone(&stop), Arc::clone(&presses));
        ctrlc::set_handler(move || {
            if presses.fetch_add(1, Ordering::SeqCst) == 0 {
                eprintln!("\nstopping: learning the games in flight and publishing a last revision…");
                stop.store(true, Ordering::SeqCst);
            } else {
                // Every file is written atomically, so leaving now leaves only whole files.
                eprintln!("\nquitting now");
                std::process::exit(130);
            }
        })
        .context("installing the Ctrl-C handler")?;
    }

    let display = Display::new();
    let budget = Budget { games: args.games, time: args.time };
    let summary = run.run(budget, &stop, &mut |p| display.show(p)).map_err(|e| anyhow::anyhow!(e))?;
    display.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

/// Deletes the run database and the weights directory's revisions, nothing else.
fn reset(db: &std::path::Path, weights_dir: &std::path::Path) -> Result<()> {
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
    eprintln!("reset: removed {} and {removed} files from {}", db.display(), weights_dir.display());
    Ok(())
}

/// A progress bar on a terminal; a plain line every 10 s elsewhere.
struct Display {
    bar: Option<ProgressBar>,
    last_line: std::sync::Mutex<Instant>,
}

impl Display {
    fn new() -> Display {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
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

    fn show(&self, p: &Progress) {
        match &self.bar {
            Some(bar) => bar.set_message(Display::line(p)),
            None => {
                let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed().as_secs() >= 10 {
                    eprintln!("{}", Display::line(p));
                    *last = Instant::now();
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn print_summary(summary: &Summary) {
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
