//! Throughput measurements for `zero2048 bench`.
//!
//! Every figure is measured twice in the same run, once on the fast code and once on a plain
//! reference implementation doing the same work, so that the ratio means something on a noisy,
//! shared machine. Both wall time and the measuring thread's CPU time are recorded.
//!
//! This crate must never be used to assert on speed in tests: it measures, it does not judge.

pub mod downloads;
pub mod learning;
pub mod roles;
pub mod server;
pub mod storage;
pub mod zero;

use std::hint::black_box;
use std::time::{Duration, Instant};

use cpu_time::ThreadTime;
use rand_core::Rng;
use serde::Serialize;
use zero2048_game::reference::Grid;
use zero2048_game::{Board, Direction, GameRng, SpawnRule, derive_seed, rng_from_seed};
use zero2048_search::reference::PlainExpectimax;
use zero2048_search::{
    Expectimax, ExpectimaxConfig, ExpectimaxPlayer, Heuristic, HeuristicWeights, play_game,
};

/// How long to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effort {
    /// About a second per measurement: the figures for BENCHMARKS.md.
    Full,
    /// A few milliseconds: checks that every benchmark runs, for tests.
    Quick,
}

impl Effort {
    pub(crate) fn budget(self) -> Duration {
        match self {
            Effort::Full => Duration::from_millis(1500),
            Effort::Quick => Duration::from_millis(20),
        }
    }
    fn sample_boards(self) -> usize {
        match self {
            Effort::Full => 1 << 18,
            Effort::Quick => 1 << 12,
        }
    }
}

/// One timed run.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// Units of work done (boards, moves or nodes).
    pub items: u64,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
    /// CPU seconds of the measuring thread.
    pub cpu_seconds: f64,
}

impl Measurement {
    /// Items per wall-clock second.
    pub fn per_wall_second(&self) -> f64 {
        self.items as f64 / self.wall_seconds.max(1e-9)
    }
    /// Items per CPU second.
    pub fn per_cpu_second(&self) -> f64 {
        self.items as f64 / self.cpu_seconds.max(1e-9)
    }
}

/// A benchmark: the fast code against the plain reference, same work, same run.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// What was measured.
    pub name: &'static str,
    /// The unit of `items`.
    pub unit: &'static str,
    /// The engine or search under test.
    pub fast: Measurement,
    /// The plain reference implementation.
    pub reference: Measurement,
}

impl Comparison {
    /// How many times faster the fast code is, per CPU second.
    pub fn speedup(&self) -> f64 {
        self.fast.per_cpu_second() / self.reference.per_cpu_second().max(1e-9)
    }
}

/// Runs `work` (which returns the items it did) repeatedly until the budget is spent.
pub(crate) fn measure(budget: Duration, mut work: impl FnMut() -> u64) -> Measurement {
    let wall = Instant::now();
    let cpu = ThreadTime::now();
    let mut items = 0;
    loop {
        items += work();
        if wall.elapsed() >= budget {
            break;
        }
    }
    Measurement {
        items,
        wall_seconds: wall.elapsed().as_secs_f64(),
        cpu_seconds: cpu.elapsed().as_secs_f64(),
    }
}

/// Boards from real play: every position of games played by the 1-ply heuristic player, which
/// reaches 1024–4096 and so covers crowded mid-game boards, not just openings.
pub fn boards_from_play(count: usize) -> Vec<Board> {
    let mut boards = Vec::with_capacity(count);
    let config = ExpectimaxConfig { depth: 1, ..ExpectimaxConfig::default() };
    let mut index = 0;
    while boards.len() < count {
        let mut player = ExpectimaxPlayer::heuristic(config);
        let (record, _) = play_game(&mut player, derive_seed(0xB0A2D, index), SpawnRule::STANDARD);
        boards.push(record.start);
        boards.extend(record.replay_steps().filter_map(Result::ok).map(|step| step.after));
        index += 1;
    }
    boards.truncate(count);
    boards
}

/// All four moves of every sample board.
pub fn move_generation(boards: &[Board], effort: Effort) -> Comparison {
    let fast = measure(effort.budget(), || {
        let mut acc = 0u64;
        for &board in boards {
            for slide in black_box(board).slides() {
                acc = acc.wrapping_add(slide.board.raw() ^ slide.reward as u64);
            }
        }
        black_box(acc);
        boards.len() as u64
    });
    let grids: Vec<Grid> = boards.iter().map(|&b| Grid::from_board(b)).collect();
    let reference = measure(effort.budget(), || {
        let mut acc = 0u64;
        for grid in &grids {
            for direction in Direction::ALL {
                let moved = black_box(grid).slide(direction);
                acc = acc.wrapping_add(moved.grid.cells[0][0] as u64 ^ moved.reward as u64);
            }
        }
        black_box(acc);
        grids.len() as u64
    });
    Comparison { name: "move generation, all 4 directions", unit: "boards", fast, reference }
}

/// Plays one random game on the engine and returns its move count.
fn random_game_fast(rng: &mut GameRng, rule: &SpawnRule) -> u64 {
    let mut board = Board::EMPTY;
    for _ in 0..2 {
        board =
            board.with_spawn(rule.pick(board, rng).unwrap_or(zero2048_game::Spawn { cell: 0, exponent: 1 }));
    }
    let mut moves = 0;
    loop {
        let mut legal = [Board::EMPTY; 4];
        let mut count = 0;
        for slide in board.slides() {
            if slide.board != board && !slide.overflow {
                legal[count] = slide.board;
                count += 1;
            }
        }
        if count == 0 {
            return moves;
        }
        let after = legal[((rng.next_u32() as u64 * count as u64) >> 32) as usize];
        match rule.pick(after, rng) {
            Some(spawn) => board = after.with_spawn(spawn),
            None => return moves,
        }
        moves += 1;
    }
}

/// The same game on the reference engine.
fn random_game_reference(rng: &mut GameRng, four_probability: f64) -> u64 {
    let mut grid = Grid::default();
    let spawn = |grid: &mut Grid, rng: &mut GameRng| {
        let empty = grid.empty_cells();
        let cell = empty[(rng.next_u64() % empty.len() as u64) as usize];
        let four = (rng.next_u32() as f64) < four_probability * 4_294_967_296.0;
        grid.cells[cell / 4][cell % 4] = if four { 2 } else { 1 };
    };
    spawn(&mut grid, rng);
    spawn(&mut grid, rng);
    let mut moves = 0;
    loop {
        let legal: Vec<Grid> = Direction::ALL
            .iter()
            .map(|&d| grid.slide(d))
            .filter(|m| m.changed && !m.overflow)
            .map(|m| m.grid)
            .collect();
        if legal.is_empty() {
            return moves;
        }
        grid = legal[(rng.next_u64() % legal.len() as u64) as usize];
        spawn(&mut grid, rng);
        moves += 1;
    }
}

/// Whole random games: legality of every move, a random legal move, a spawn.
pub fn random_games(effort: Effort) -> Comparison {
    let rule = SpawnRule::STANDARD;
    let mut rng = rng_from_seed(1);
    let fast = measure(effort.budget(), || (0..64).map(|_| random_game_fast(&mut rng, &rule)).sum());
    let mut rng = rng_from_seed(1);
    let reference = measure(effort.budget(), || {
        (0..64).map(|_| random_game_reference(&mut rng, rule.four_probability())).sum()
    });
    Comparison { name: "random games with spawns", unit: "moves", fast, reference }
}

/// Expectimax with the heuristic at `depth` on positions from play, counted in nodes (moves
/// generated) per second. The reference is the same search on the reference engine.
pub fn expectimax(boards: &[Board], depth: u32, effort: Effort) -> Comparison {
    let positions: Vec<Board> = boards.iter().step_by((boards.len() / 512).max(1)).copied().collect();
    let config = ExpectimaxConfig { depth, ..ExpectimaxConfig::default() };
    let mut search = Expectimax::new(Heuristic::new(), config);
    let mut next = 0;
    let fast = measure(effort.budget(), || {
        let board = positions[next % positions.len()];
        next += 1;
        search.decide(board).nodes
    });
    let mut plain = PlainExpectimax {
        weights: HeuristicWeights::default(),
        depth,
        probability_threshold: config.probability_threshold,
        four_probability: config.rule.four_probability() as f32,
        nodes: 0,
    };
    let mut next = 0;
    let reference = measure(effort.budget(), || {
        let before = plain.nodes;
        black_box(plain.root_values(&Grid::from_board(positions[next % positions.len()])));
        next += 1;
        plain.nodes - before
    });
    Comparison { name: "expectimax search (heuristic)", unit: "nodes", fast, reference }
}

/// Every benchmark, in report order.
pub fn run_all(effort: Effort, search_depth: u32) -> Vec<Comparison> {
    let boards = boards_from_play(effort.sample_boards());
    vec![move_generation(&boards, effort), random_games(effort), expectimax(&boards, search_depth, effort)]
}
