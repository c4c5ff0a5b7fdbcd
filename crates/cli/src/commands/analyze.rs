//! `zero2048 analyze`: the value of every move on one board.

use anyhow::Result;
use zero2048_game::Direction;
use zero2048_search::{Expectimax, ExpectimaxConfig, Heuristic};

use crate::args::AnalyzeArgs;
use crate::render;

/// Runs the command.
pub fn run(args: AnalyzeArgs) -> Result<()> {
    let config = ExpectimaxConfig { depth: args.depth, ..ExpectimaxConfig::default() };
    let decision = Expectimax::new(Heuristic::new(), config).decide(args.board);
    print!("{}", render::board(args.board, false));
    for (direction, value) in Direction::ALL.iter().zip(decision.values) {
        let marker = if decision.direction == Some(*direction) { "  ← best" } else { "" };
        match value {
            Some(v) => println!("{:>6}  {:>14}{marker}", direction.name(), render::thousands(v as f64)),
            None => println!("{:>6}  {:>14}", direction.name(), "illegal"),
        }
    }
    if decision.direction.is_none() {
        println!("game over: no legal move");
    }
    println!("{} nodes searched at depth {}", decision.nodes, args.depth);
    Ok(())
}
