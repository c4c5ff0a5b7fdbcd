//! `zero2048 play`: one game, drawn as it goes.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use zero2048_game::{Game, SpawnRule, derive_seed};

use crate::args::PlayArgs;
use crate::{players, render};

/// Milliseconds between moves when a game is drawn on a terminal and no `--delay` is given.
const WATCHING_DELAY_MS: u64 = 100;

/// Runs the command.
pub fn run(args: PlayArgs) -> Result<()> {
    let rule = SpawnRule::new(args.player.four_probability as f64)?;
    // The same player seed as game 0 of an eval series would use for this game seed.
    let factory = players::PlayerFactory::new(&args.player)?;
    let mut player = factory.build(derive_seed(args.seed, u64::MAX));
    let mut game = Game::new(args.seed, rule);
    let terminal = std::io::stdout().is_terminal();
    // A game drawn on a terminal is watched: by default slow enough to follow.
    let delay = args.delay.unwrap_or(if terminal && !args.quiet { WATCHING_DELAY_MS } else { 0 });
    let mut out = std::io::stdout().lock();
    let mut last_move = None;
    loop {
        if !args.quiet {
            let header = format!(
                "{} · seed {} · move {} · score {}{}",
                factory.describe(),
                args.seed,
                game.moves(),
                render::thousands(game.score() as f64),
                last_move.map(|d| format!(" · last {d}")).unwrap_or_default()
            );
            if terminal {
                // Home and clear, then redraw: the board stays in place as the game runs.
                write!(out, "\x1b[H\x1b[2J{header}\n\n{}", render::board(game.board(), true))?;
            } else {
                write!(out, "{header}\n{}\n", render::board(game.board(), false))?;
            }
            out.flush()?;
        }
        let Some(direction) = player.choose(game.board()) else { break };
        game.play(direction)
            .with_context(|| format!("the player chose an illegal move on {:?}", game.board()))?;
        last_move = Some(direction);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
    }
    writeln!(
        out,
        "game over: score {}, {} moves, max tile {}, seed {}",
        game.score(),
        game.moves(),
        game.board().max_tile(),
        args.seed
    )?;
    if let Some(path) = &args.record {
        let record = game.into_record();
        let bytes = if path.extension().is_some_and(|e| e == "json") {
            serde_json::to_vec_pretty(&record)?
        } else {
            record.encode()?
        };
        std::fs::write(path, bytes).with_context(|| format!("writing the record to {}", path.display()))?;
        writeln!(out, "record written to {}", path.display())?;
    }
    Ok(())
}
