//! Expectimax over afterstates: a max over the legal moves, then an expectation over every empty
//! cell × {2, 4}, down to a number of own moves, with leaves valued by an [`Evaluator`].
//!
//! `depth` counts own moves (max layers): depth 1 values each move by its reward plus the
//! evaluator's value of its afterstate (the papers' "1-ply"); depth 3 is three max layers with
//! two chance layers between them (TDL2048's `-d 3p`, Jaśkowski's "3-ply"). With a time per
//! move, the search deepens one ply at a time (1, 2, 3, … up to `depth`) and plays the deepest
//! search that finished in time; the transposition table carries each iteration's values into
//! the next.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zero2048_game::{Afterstate, Board, Direction, SpawnRule};

use crate::evaluator::Evaluator;

/// How deep and how wide to search.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectimaxConfig {
    /// Own moves searched: 1 is greedy on the evaluator's afterstate values; each extra ply adds a
    /// chance layer and a move layer. With `move_time`, the deepest the search may go.
    pub depth: u32,
    /// Deepen iteratively within this much time per move instead of searching `depth` always.
    pub move_time: Option<Duration>,
    /// Chance branches whose probability (the product of spawn probabilities from the root) falls
    /// below this are valued by the evaluator instead of searched further.
    pub probability_threshold: f32,
    /// log2 of the number of transposition-table entries (16 bytes each); `None` disables it.
    pub transposition_bits: Option<u8>,
    /// The spawn rule the search expects.
    pub rule: SpawnRule,
}

impl Default for ExpectimaxConfig {
    fn default() -> ExpectimaxConfig {
        ExpectimaxConfig {
            depth: 3,
            move_time: None,
            probability_threshold: 1e-4,
            transposition_bits: None,
            rule: SpawnRule::STANDARD,
        }
    }
}

/// The outcome of searching one position.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// The best move, `None` when the game is over.
    pub direction: Option<Direction>,
    /// The best move's afterstate and reward (what a learner needs of the move).
    pub afterstate: Option<Afterstate>,
    /// The searched value of each direction (`None` for an illegal one), in [`Direction::ALL`] order.
    pub values: [Option<f32>; 4],
    /// Moves generated during the search (the usual "nodes" of 2048 search benchmarks).
    pub nodes: u64,
    /// The depth whose values these are (with a time per move, the deepest that finished).
    pub depth: u32,
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

    /// Starts a root search: entries of earlier roots no longer count.
    fn new_search(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    #[inline]
    fn put(&mut self, board: Board, plies: u32, value: f32) {
        let slot = self.slot(board);
        self.entries[slot] =
            Entry { board: board.raw(), plies: plies as u8, generation: self.generation, value };
    }
}

/// An expectimax searcher. Holds its transposition table between moves, so keep one per thread.
pub struct Expectimax<E: Evaluator> {
    evaluator: E,
    config: ExpectimaxConfig,
    table: Option<TranspositionTable>,
    nodes: u64,
    /// When the current iteration must give up (time per move).
    deadline: Option<Instant>,
    /// Set once the deadline passed: the iteration's values are then discarded.
    out_of_time: bool,
    four_probability: f32,
    /// What the evaluator kept of each candidate of the last depth-1 search.
    memos: [E::Memo; 4],
    /// The slot in `memos` of the last decision's move, when it was chosen at depth 1.
    chosen: Option<usize>,
}

/// Nodes between two looks at the clock: a few microseconds of search.
const CLOCK_EVERY: u64 = 1024;

impl<E: Evaluator> Expectimax<E> {
    /// A searcher with `evaluator` at the leaves. `config.depth` must be at least 1.
    pub fn new(evaluator: E, config: ExpectimaxConfig) -> Expectimax<E> {
        let table = config.transposition_bits.map(TranspositionTable::new);
        Expectimax {
            evaluator,
            config: ExpectimaxConfig { depth: config.depth.max(1), ..config },
            table,
            nodes: 0,
            deadline: None,
            out_of_time: false,
            four_probability: config.rule.four_probability() as f32,
            memos: std::array::from_fn(|_| E::Memo::default()),
            chosen: None,
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

    /// What the evaluator kept of the last decision's afterstate when that move was chosen by a
    /// depth-1 search (an online learner updates that afterstate next); `None` after a deeper one.
    pub fn memo_of_choice(&self) -> Option<&E::Memo> {
        self.chosen.map(|slot| &self.memos[slot])
    }

    /// Searches `board` and returns the best move with every move's value: at `depth`, or with
    /// a time per move at the deepest depth that finished in time (depth 1 always finishes).
    pub fn decide(&mut self, board: Board) -> Decision {
        let Some(budget) = self.config.move_time else {
            self.deadline = None;
            return self.decide_at(board, self.config.depth);
        };
        let started = Instant::now();
        self.deadline = None;
        let mut best = self.decide_at(board, 1);
        let mut nodes = best.nodes;
        for depth in 2..=self.config.depth {
            let elapsed = started.elapsed();
            // The next iteration costs many times the last; start it only if it may finish.
            if elapsed * 2 >= budget {
                break;
            }
            self.deadline = Some(started + budget);
            let decision = self.decide_at(board, depth);
            nodes += decision.nodes;
            if self.out_of_time {
                break;
            }
            best = decision;
        }
        self.deadline = None;
        Decision { nodes, ..best }
    }

    fn decide_at(&mut self, board: Board, depth: u32) -> Decision {
        if depth == 1 {
            return self.decide_greedy(board);
        }
        self.nodes = 0;
        self.out_of_time = false;
        self.chosen = None;
        if let Some(table) = &mut self.table {
            table.new_search();
        }
        let reward_weight = self.evaluator.reward_weight();
        let mut values = [None; 4];
        let mut best: Option<(Direction, Afterstate, f32)> = None;
        for (i, slide) in board.slides().into_iter().enumerate() {
            self.nodes += 1;
            if slide.board == board || slide.overflow {
                continue;
            }
            let value = reward_weight * slide.reward as f32 + self.chance(slide.board, depth - 1, 1.0);
            values[i] = Some(value);
            if best.is_none_or(|(_, _, v)| value > v) {
                best =
                    Some((Direction::ALL[i], Afterstate { board: slide.board, reward: slide.reward }, value));
            }
        }
        Decision {
            direction: best.map(|(d, _, _)| d),
            afterstate: best.map(|(_, a, _)| a),
            values,
            nodes: self.nodes,
            depth,
        }
    }

    /// Depth 1, self-play's hot path: every legal afterstate valued at once, keeping what the
    /// evaluator computed of each for an update of the one chosen. No chance layer, table or
    /// clock: run through the deeper search's loop, these few lines cost about 100 more
    /// instructions a move (4% of an online TD(0) move, BENCHMARKS.md).
    #[inline]
    fn decide_greedy(&mut self, board: Board) -> Decision {
        self.out_of_time = false;
        let slides = board.slides();
        // The legal moves' afterstates, packed, and the direction of each.
        let mut afterstates = [Board::EMPTY; 4];
        let mut directions = [0usize; 4];
        let mut legal = 0;
        for (i, slide) in slides.iter().enumerate() {
            if slide.board != board && !slide.overflow {
                afterstates[legal] = slide.board;
                directions[legal] = i;
                legal += 1;
            }
        }
        self.nodes = slides.len() as u64;
        let mut direct = [0.0f32; 4];
        self.evaluator.evaluate_all_keeping(
            &afterstates[..legal],
            &mut direct[..legal],
            &mut self.memos[..legal],
        );
        let reward_weight = self.evaluator.reward_weight();
        let mut values = [None; 4];
        let mut best: Option<(usize, f32)> = None;
        for (slot, (&i, &below)) in directions[..legal].iter().zip(&direct[..legal]).enumerate() {
            let value = reward_weight * slides[i].reward as f32 + below;
            values[i] = Some(value);
            if best.is_none_or(|(_, v)| value > v) {
                best = Some((slot, value));
            }
        }
        self.chosen = best.map(|(slot, _)| slot);
        let chosen = best.map(|(slot, _)| directions[slot]);
        Decision {
            direction: chosen.map(|i| Direction::ALL[i]),
            afterstate: chosen.map(|i| Afterstate { board: slides[i].board, reward: slides[i].reward }),
            values,
            nodes: self.nodes,
            depth: 1,
        }
    }

    /// The searched value of an afterstate with `plies` own moves left below it.
    fn chance(&mut self, afterstate: Board, plies: u32, probability: f32) -> f32 {
        if plies == 0 || probability < self.config.probability_threshold || self.out_of_time {
            return self.evaluator.evaluate(afterstate);
        }
        if let Some(value) = self.table.as_ref().and_then(|t| t.get(afterstate, plies)) {
            return value;
        }
        let empty = afterstate.empty_mask();
        let cells = empty.count_ones() as f32;
        let p4 = self.four_probability;
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
        if let Some(table) = &mut self.table
            && !self.out_of_time
        {
            table.put(afterstate, plies, value);
        }
        value
    }

    /// The best move's value on a board (after a spawn), or 0 when the game is over there.
    fn max(&mut self, board: Board, plies: u32, probability: f32) -> f32 {
        if let Some(deadline) = self.deadline
            && self.nodes.is_multiple_of(CLOCK_EVERY)
            && Instant::now() >= deadline
        {
            self.out_of_time = true;
        }
        let reward_weight = self.evaluator.reward_weight();
        let mut best = f32::NEG_INFINITY;
        for slide in board.slides() {
            self.nodes += 1;
            if slide.board != board && !slide.overflow {
                let value =
                    reward_weight * slide.reward as f32 + self.chance(slide.board, plies - 1, probability);
                best = best.max(value);
            }
        }
        if best == f32::NEG_INFINITY { 0.0 } else { best }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_answers_only_for_its_board_enough_plies_and_this_search() {
        let mut table = TranspositionTable::new(8);
        let board = Board::from_raw(0x1234);
        table.new_search();
        table.put(board, 2, 7.5);
        assert_eq!(table.get(board, 2), Some(7.5));
        assert_eq!(table.get(board, 1), Some(7.5), "a deeper value serves a shallower question");
        assert_eq!(table.get(board, 3), None, "a shallower value does not serve a deeper one");
        assert_eq!(table.get(Board::from_raw(0x4321), 2), None);
        table.new_search();
        assert_eq!(table.get(board, 2), None, "entries of an earlier root are ignored");
        table.put(board, 1, 1.0);
        assert_eq!(table.get(board, 1), Some(1.0));
    }

    /// Values an afterstate by its empty cells (in points) and keeps the board it valued.
    struct KeepsItsBoard;
    impl Evaluator for KeepsItsBoard {
        type Memo = Option<Board>;
        fn evaluate(&self, afterstate: Board) -> f32 {
            100.0 * afterstate.empty_count() as f32
        }
        fn evaluate_all_keeping(&self, afterstates: &[Board], values: &mut [f32], memos: &mut [Self::Memo]) {
            for ((value, memo), &afterstate) in values.iter_mut().zip(memos).zip(afterstates) {
                *value = self.evaluate(afterstate);
                *memo = Some(afterstate);
            }
        }
        fn name(&self) -> String {
            "keeps-its-board".into()
        }
    }

    #[test]
    fn the_memo_handed_out_is_the_chosen_afterstates() {
        // Every legal move, and the chosen one in each position of the legal list.
        let boards = [
            "2 2 4 8 | 0 0 0 0 | 0 0 0 0 | 0 0 0 4",
            "2 4 8 16 | 0 0 2 0 | 0 4 0 0 | 2 0 0 0",
            "0 0 0 2 | 0 0 0 2 | 0 0 0 4 | 0 0 0 8",
            "2 4 2 4 | 4 2 4 2 | 2 4 2 4 | 4 2 4 0",
        ];
        let mut search = Expectimax::new(KeepsItsBoard, ExpectimaxConfig { depth: 1, ..Default::default() });
        for text in boards {
            let board: Board = text.parse().unwrap();
            let decision = search.decide(board);
            let chosen = decision.afterstate.expect("each board has a legal move").board;
            assert_eq!(search.memo_of_choice(), Some(&Some(chosen)), "{text}");
            let direction = decision.direction.unwrap();
            assert_eq!(board.legal_move(direction).map(|m| m.board), Some(chosen), "{text}");
        }
        let over: Board = "2 4 2 4 | 4 2 4 2 | 2 4 2 4 | 4 2 4 2".parse().unwrap();
        let decision = search.decide(over);
        assert_eq!((decision.direction, decision.afterstate), (None, None));
        assert_eq!(search.memo_of_choice(), None, "a finished game chooses nothing");
        let mut deeper = Expectimax::new(KeepsItsBoard, ExpectimaxConfig { depth: 2, ..Default::default() });
        deeper.decide(boards[0].parse().unwrap());
        assert_eq!(deeper.memo_of_choice(), None, "a deeper search keeps no memo");
    }

    #[test]
    fn with_a_time_per_move_the_search_deepens_until_time_runs_out() {
        let board: Board = "2 4 8 16 | 0 0 2 0 | 0 4 0 0 | 2 0 0 0".parse().unwrap();
        let mut quick = Expectimax::new(
            crate::Heuristic::new(),
            ExpectimaxConfig { depth: 12, move_time: Some(Duration::from_millis(20)), ..Default::default() },
        );
        let started = Instant::now();
        let decision = quick.decide(board);
        assert!(decision.direction.is_some());
        assert!(decision.depth >= 2, "20 ms reach at least depth 2: {}", decision.depth);
        assert!(decision.depth < 12, "but not depth 12");
        // Generous: the last iteration stops at its first clock check past the deadline.
        assert!(started.elapsed() < Duration::from_secs(2));
        let mut fixed = Expectimax::new(
            crate::Heuristic::new(),
            ExpectimaxConfig { depth: decision.depth, ..Default::default() },
        );
        assert_eq!(fixed.decide(board).direction, decision.direction, "the same depth chooses the same move");
    }
}
