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
pub use mcts::{ChanceMode, MctsConfig, PolicyValue, Prediction, Selected, Tree, UniformPolicy};
pub use player::{ExpectimaxPlayer, GreedyPlayer, MctsPlayer, Player, RandomPlayer};
