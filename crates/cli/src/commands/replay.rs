//! `zero2048 replay`: verify a record file.

use anyhow::{Context, Result};
use zero2048_game::GameRecord;

use crate::args::ReplayArgs;
use crate::{bad_input, render};

/// Reads a record in either form: JSON if it starts with `{`, else the binary encoding.
pub fn read_record(path: &std::path::Path) -> Result<GameRecord> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let looks_like_json = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if looks_like_json {
        serde_json::from_slice(&bytes)
            .map_err(|e| bad_input(format!("{} is not a JSON game record: {e}", path.display())))
    } else {
        GameRecord::decode(&bytes)
            .map_err(|e| bad_input(format!("{} is not a binary game record: {e}", path.display())))
    }
}

/// Runs the command.
pub fn run(args: ReplayArgs) -> Result<()> {
    let record = read_record(&args.file)?;
    let summary = record
        .replay()
        .map_err(|e| bad_input(format!("{} is not a legal game: {e}", args.file.display())))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "valid game: score {}, {} moves, max tile {}, {}",
            summary.score,
            summary.moves,
            summary.max_tile,
            if summary.game_over { "finished" } else { "not finished" }
        );
        if args.show {
            print!("{}", render::board(summary.final_board, false));
        }
    }
    Ok(())
}
