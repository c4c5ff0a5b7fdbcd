//! Players: anything that picks a move for a board. The baselines live here; learned players in
//! later crates implement the same trait.

use rand_core::Rng;
use zero2048_game::{Board, Direction, GameRng, rng_from_seed};

use std::sync::Arc;

use zero2048_game::SpawnRule;

use crate::evaluator::Evaluator;
use crate::expectimax::{Expectimax, ExpectimaxConfig};
use crate::heuristic::Heuristic;
use crate::mcts::{MctsConfig, PolicyValue, Tree};

/// Picks moves. One instance plays one game at a time on one thread.
pub trait Player: Send {
    /// Picks a legal move, or `None` when the game is over.
    fn choose(&mut self, board: Board) -> Option<Direction>;

    /// Search nodes spent since the player was made (0 for players that do not search).
    fn nodes(&self) -> u64 {
        0
    }
}

/// Plays a uniformly random legal move.
pub struct RandomPlayer {
    rng: GameRng,
}

impl RandomPlayer {
    /// A random player whose choices follow from `seed`.
    pub fn new(seed: u64) -> RandomPlayer {
        RandomPlayer { rng: rng_from_seed(seed) }
    }
}

impl Player for RandomPlayer {
    fn choose(&mut self, board: Board) -> Option<Direction> {
        let mut legal = [Direction::Up; 4];
        let mut count = 0;
        for direction in Direction::ALL {
            if board.legal_move(direction).is_some() {
                legal[count] = direction;
                count += 1;
            }
        }
        (count > 0).then(|| legal[((self.rng.next_u32() as u64 * count as u64) >> 32) as usize])
    }
}

/// Plays the move with the largest immediate score, breaking ties at random.
pub struct GreedyPlayer {
    rng: GameRng,
}

impl GreedyPlayer {
    /// A greedy player whose tie-breaks follow from `seed`.
    pub fn new(seed: u64) -> GreedyPlayer {
        GreedyPlayer { rng: rng_from_seed(seed) }
    }
}

impl Player for GreedyPlayer {
    fn choose(&mut self, board: Board) -> Option<Direction> {
        let mut best: Option<(Direction, u32, u32)> = None; // direction, reward, tie-break key
        for direction in Direction::ALL {
            if let Some(moved) = board.legal_move(direction) {
                let key = self.rng.next_u32();
                if best.is_none_or(|(_, reward, k)| (moved.reward, key) > (reward, k)) {
                    best = Some((direction, moved.reward, key));
                }
            }
        }
        best.map(|(direction, _, _)| direction)
    }
}

/// Plays the move an expectimax search values highest.
pub struct ExpectimaxPlayer<E: Evaluator> {
    search: Expectimax<E>,
    nodes: u64,
}

impl<E: Evaluator> ExpectimaxPlayer<E> {
    /// A player searching with `evaluator` at the leaves.
    pub fn new(evaluator: E, config: ExpectimaxConfig) -> ExpectimaxPlayer<E> {
        ExpectimaxPlayer { search: Expectimax::new(evaluator, config), nodes: 0 }
    }
}

impl ExpectimaxPlayer<Heuristic> {
    /// Expectimax on the hand-written heuristic: the non-learned baseline.
    pub fn heuristic(config: ExpectimaxConfig) -> ExpectimaxPlayer<Heuristic> {
        ExpectimaxPlayer::new(Heuristic::new(), config)
    }
}

impl<E: Evaluator> Player for ExpectimaxPlayer<E> {
    fn choose(&mut self, board: Board) -> Option<Direction> {
        let decision = self.search.decide(board);
        self.nodes += decision.nodes;
        decision.direction
    }

    fn nodes(&self) -> u64 {
        self.nodes
    }
}

/// Plays the move a Monte Carlo tree search with a policy-value network visits most (or draws
/// it from the visits, if `config` keeps a temperature for the first moves).
pub struct MctsPlayer<P: ?Sized> {
    network: Arc<P>,
    tree: Tree,
    moves: u32,
    temperature_moves: u32,
    nodes: u64,
}

impl<P: PolicyValue + ?Sized> MctsPlayer<P> {
    /// A player searching with `network`, one tree per move; `seed` drives the tree's noise and
    /// sampling, `rule` is the spawn rule its chance nodes expect.
    pub fn new(network: Arc<P>, config: MctsConfig, rule: SpawnRule, seed: u64) -> MctsPlayer<P> {
        MctsPlayer {
            network,
            tree: Tree::new(Board::EMPTY, config, rule, seed),
            moves: 0,
            temperature_moves: config.temperature_moves,
            nodes: 0,
        }
    }
}

impl<P: PolicyValue + ?Sized> Player for MctsPlayer<P> {
    fn choose(&mut self, board: Board) -> Option<Direction> {
        self.tree.reset(board);
        self.nodes += self.tree.run(&*self.network);
        let explore = self.moves < self.temperature_moves;
        self.moves += 1;
        self.tree.choose(explore)
    }

    fn nodes(&self) -> u64 {
        self.nodes
    }
}
