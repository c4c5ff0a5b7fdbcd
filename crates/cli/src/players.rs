//! Turning `--player …` options into players.

use zero2048_search::{ExpectimaxConfig, ExpectimaxPlayer, GreedyPlayer, Player, RandomPlayer};

use crate::args::{PlayerArgs, PlayerKind};

/// The search configuration the options describe.
pub fn expectimax_config(args: &PlayerArgs) -> ExpectimaxConfig {
    ExpectimaxConfig {
        depth: args.depth,
        probability_threshold: args.prune_below,
        transposition_bits: args.table_bits(),
        four_probability: args.four_probability,
    }
}

/// A player for one game; `seed` drives its own random choices.
pub fn build(args: &PlayerArgs, seed: u64) -> Box<dyn Player> {
    match args.player {
        PlayerKind::Random => Box::new(RandomPlayer::new(seed)),
        PlayerKind::Greedy => Box::new(GreedyPlayer::new(seed)),
        PlayerKind::Expectimax => Box::new(ExpectimaxPlayer::heuristic(expectimax_config(args))),
    }
}

/// How the player is named in tables: "expectimax depth 3 (heuristic)".
pub fn describe(args: &PlayerArgs) -> String {
    match args.player {
        PlayerKind::Random => "random".to_string(),
        PlayerKind::Greedy => "greedy".to_string(),
        PlayerKind::Expectimax => {
            let table = args.table_bits().map(|b| format!(", table 2^{b}")).unwrap_or_default();
            format!("expectimax depth {} (heuristic, prune < {}{table})", args.depth, args.prune_below)
        }
    }
}
