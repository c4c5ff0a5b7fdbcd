//! Expectimax over afterstates: a max over the legal moves, then an expectation over every empty
//! cell × {2, 4}, down to a fixed number of own moves, with leaves valued by an [`Evaluator`].

use serde::{Deserialize, Serialize};
use zero2048_game::{Board, Direction, SpawnRule};

use crate::evaluator::Evaluator;

/// How deep and how wide to search.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectimaxConfig {
    /// Own moves searched: 1 is greedy on the evaluator's afterstate values; each extra ply adds a
    /// chance layer and a move layer.
    pub depth: u32,
    /// Chance branches whose probability (the product of spawn probabilities from the root) falls
    /// below this are valued by the evaluator instead of searched further.
    pub probability_threshold: f32,
    /// log2 of the number of transposition-table entries (16 bytes each); `None` disables it.
    pub transposition_bits: Option<u8>,
    /// The spawn rule the search expects.
    pub four_probability: f32,
}

impl Default for ExpectimaxConfig {
    fn default() -> ExpectimaxConfig {
        ExpectimaxConfig {
            depth: 3,
            probability_threshold: 1e-4,
            transposition_bits: None,
            four_probability: SpawnRule::STANDARD.four_probability() as f32,
        }
    }
}

/// The outcome of searching one position.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// The best move, `None` when the game is over.
    pub direction: Option<Direction>,
    /// The searched value of each direction (`None` for an illegal one), in [`Direction::ALL`] order.
    pub values: [Option<f32>; 4],
    /// Moves generated during the search (the usual "nodes" of 2048 search benchmarks).
    pub nodes: u64,
}

#[derive(Clone, Copy, Default)]
struct Entry {
    board: u64,
    /// Remaining plies searched below this afterstate, plus the generation it was stored in.
    plies: u8,
    generation: u8,
    value: f32,
}

/// Values of afterstates already searched in the current root search. Entries from earlier roots
/// are ignored by generation, so the table never needs clearing.
struct TranspositionTable {
    entries: Vec<Entry>,
    shift: u32,
    generation: u8,
}

impl TranspositionTable {
    fn new(bits: u8) -> TranspositionTable {
        let bits = bits.clamp(4, 30);
        TranspositionTable {
            entries: vec![Entry::default(); 1 << bits],
            shift: 64 - bits as u32,
            generation: 0,
        }
    }

    #[inline]
    fn slot(&self, board: Board) -> usize {
        (board.raw().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    fn get(&self, board: Board, plies: u32) -> Option<f32> {
        let e = &self.entries[self.slot(board)];
        (e.board == board.raw() && e.generation == self.generation && e.plies as u32 >= plies)
            .then_some(e.value)
    }

    #[inline]
    fn put(&mut self, board: Board, plies: u32, value: f32) {
        let slot = self.slot(board);
        self.entries[slot] =
            Entry { board: board.raw(), plies: plies as u8, generation: self.generation, value };
    }
}

/// An expectimax searcher. Holds its transposition table between moves, so keep one per thread.
pub struct Expectimax<E> {
    evaluator: E,
    config: ExpectimaxConfig,
    table: Option<TranspositionTable>,
    nodes: u64,
}

impl<E: Evaluator> Expectimax<E> {
    /// A searcher with `evaluator` at the leaves. `config.depth` must be at least 1.
    pub fn new(evaluator: E, config: ExpectimaxConfig) -> Expectimax<E> {
        let table = config.transposition_bits.map(TranspositionTable::new);
        Expectimax {
            evaluator,
            config: ExpectimaxConfig { depth: config.depth.max(1), ..config },
            table,
            nodes: 0,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ExpectimaxConfig {
        &self.config
    }

    /// The leaf evaluator.
    pub fn evaluator(&self) -> &E {
        &self.evaluator
    }

    /// Searches `board` and returns the best move with every move's value.
    pub fn decide(&mut self, board: Board) -> Decision {
        self.nodes = 0;
        if let Some(table) = &mut self.table {
            table.generation = table.generation.wrapping_add(1);
        }
        let reward_weight = self.evaluator.reward_weight();
        let mut values = [None; 4];
        let mut best: Option<(Direction, f32)> = None;
        for (i, direction) in Direction::ALL.into_iter().enumerate() {
            self.nodes += 1;
            let Some(moved) = board.legal_move(direction) else { continue };
            let value =
                reward_weight * moved.reward as f32 + self.chance(moved.board, self.config.depth - 1, 1.0);
            values[i] = Some(value);
            if best.is_none_or(|(_, v)| value > v) {
                best = Some((direction, value));
            }
        }
        Decision { direction: best.map(|(d, _)| d), values, nodes: self.nodes }
    }

    /// The searched value of an afterstate with `plies` own moves left below it.
    fn chance(&mut self, afterstate: Board, plies: u32, probability: f32) -> f32 {
        if plies == 0 || probability < self.config.probability_threshold {
            return self.evaluator.evaluate(afterstate);
        }
        if let Some(value) = self.table.as_ref().and_then(|t| t.get(afterstate, plies)) {
            return value;
        }
        let empty = afterstate.empty_mask();
        let cells = empty.count_ones() as f32;
        let p4 = self.config.four_probability;
        let p2 = 1.0 - p4;
        let per_cell = probability / cells;
        let mut total = 0.0;
        let mut remaining = empty;
        while remaining != 0 {
            let two = remaining & remaining.wrapping_neg();
            remaining ^= two;
            let raw = afterstate.raw();
            total += p2 * self.max(Board::from_raw(raw | two), plies, per_cell * p2);
            if p4 > 0.0 {
                total += p4 * self.max(Board::from_raw(raw | (two << 1)), plies, per_cell * p4);
            }
        }
        let value = total / cells;
        if let Some(table) = &mut self.table {
            table.put(afterstate, plies, value);
        }
        value
    }

    /// The best move's value on a board (after a spawn), or 0 when the game is over there.
    fn max(&mut self, board: Board, plies: u32, probability: f32) -> f32 {
        let reward_weight = self.evaluator.reward_weight();
        let mut best = f32::NEG_INFINITY;
        for direction in Direction::ALL {
            self.nodes += 1;
            if let Some(moved) = board.legal_move(direction) {
                let value =
                    reward_weight * moved.reward as f32 + self.chance(moved.board, plies - 1, probability);
                best = best.max(value);
            }
        }
        if best == f32::NEG_INFINITY { 0.0 } else { best }
    }
}
