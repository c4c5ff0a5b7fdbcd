//! The evaluation suite: a revision plays the same seeded games as every other revision, so
//! comparisons between revisions are paired, and its strength is reported the one standard way.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zero2048_game::SpawnRule;
use zero2048_model::NTupleNetwork;
use zero2048_search::{ExpectimaxConfig, ExpectimaxPlayer, Player, Series, Strength};

/// The fixed games.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Games per evaluation.
    pub games: usize,
    /// Seed of the series (the same for every revision).
    pub seed: u64,
    /// Own moves searched (1 = greedy on the learned value).
    pub depth: u32,
    /// Threads (0 = one per core).
    pub threads: usize,
}

impl Default for EvalConfig {
    fn default() -> EvalConfig {
        EvalConfig { games: 200, seed: 7, depth: 1, threads: 0 }
    }
}

impl EvalConfig {
    /// Checks every value: `Err((key, rule))` names the key under `evaluation`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if !(1..=1_000_000).contains(&self.games) {
            return Err((
                "games".into(),
                format!(
                    "{} games; 1 to 1000000 (turn evaluation off with evaluate_every_revisions: 0)",
                    self.games
                ),
            ));
        }
        if !(1..=6).contains(&self.depth) {
            return Err(("depth".into(), format!("{} is not an evaluation depth: 1 to 6", self.depth)));
        }
        if self.threads > 1024 {
            return Err((
                "threads".into(),
                format!("{} threads; at most 1024 (0 = one per core)", self.threads),
            ));
        }
        Ok(())
    }
}

/// Plays the suite with `network` and summarises it.
pub fn evaluate(network: Arc<NTupleNetwork>, config: &EvalConfig, rule: SpawnRule) -> Strength {
    let search = ExpectimaxConfig {
        depth: config.depth.max(1),
        transposition_bits: (config.depth >= 3).then_some(20),
        rule,
        ..ExpectimaxConfig::default()
    };
    let make = move |_seed: u64| -> Box<dyn Player> {
        Box::new(ExpectimaxPlayer::new(Arc::clone(&network), search))
    };
    let series = Series {
        games: config.games.max(1),
        base_seed: config.seed,
        threads: if config.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.threads
        },
        rule,
        keep_records: false,
        player: &make,
    };
    Strength::of(&series.run(&|_| {})).expect("an evaluation plays at least one game")
}
