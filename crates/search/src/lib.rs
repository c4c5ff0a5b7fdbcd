//! Searching 2048 positions and playing whole games.
//!
//! [`Expectimax`] searches over afterstates (max over moves, expectation over spawns) with leaves
//! valued by any [`Evaluator`]; [`Heuristic`] is the hand-written baseline evaluator. [`Player`] is
//! the one interface every player implements (random, greedy, expectimax here; learned players in
//! later crates), and [`arena`] plays seeded series of games and summarises them as a [`Strength`].
//!
//! [`mcts`] is the other search: Monte Carlo tree search over decision and chance nodes guided by a
//! [`PolicyValue`] evaluator. A [`Tree`] never calls the network itself (`select` a leaf, `expand`
//! it with a prediction), so a game runner can batch the leaves of many games into one call.
//!
//! ```
//! use std::sync::Arc;
//! use zero2048_game::SpawnRule;
//! use zero2048_search::{
//!     ExpectimaxConfig, ExpectimaxPlayer, MctsConfig, MctsPlayer, Series, Strength, UniformPolicy,
//! };
//!
//! // Four seeded games of 2-ply expectimax on the heuristic, on two threads.
//! let make = |_seed: u64| -> Box<dyn zero2048_search::Player> {
//!     Box::new(ExpectimaxPlayer::heuristic(ExpectimaxConfig { depth: 2, ..ExpectimaxConfig::default() }))
//! };
//! let series = Series { games: 4, base_seed: 1, threads: 2, rule: SpawnRule::STANDARD, keep_records: false, player: &make };
//! let strength = Strength::of(&series.run(&|_| {})).unwrap();
//! assert_eq!(strength.games, 4);
//!
//! // The same interface plays MCTS with any policy-value evaluator.
//! let config = MctsConfig { simulations: 8, ..MctsConfig::default().for_evaluation() };
//! let mut mcts = MctsPlayer::new(Arc::new(UniformPolicy { value: 0.0 }), config, SpawnRule::STANDARD, 1);
//! let (record, _) = zero2048_search::play_game(&mut mcts, 3, SpawnRule::STANDARD);
//! assert!(record.replay().unwrap().game_over);
//! ```
//!
//! This crate must never know about model files, training or the network: it sees an evaluator
//! only through the trait, so learned models plug in without the search changing.

pub mod arena;
mod evaluator;
mod expectimax;
mod heuristic;
pub mod mcts;
mod player;
pub mod reference;

pub use arena::{GameResult, MILESTONE_TILES, Series, Strength, TileRate, play_game, play_game_to_end};
pub use evaluator::Evaluator;
pub use expectimax::{Decision, Expectimax, ExpectimaxConfig};
pub use heuristic::{Heuristic, HeuristicWeights};
pub use mcts::{
    ChanceMode, MctsConfig, PolicyValue, Prediction, RootRule, Selected, Tree, UniformPolicy,
    halving_schedule,
};
pub use player::{ExpectimaxPlayer, GreedyPlayer, MctsPlayer, Player, RandomPlayer};
