//! The classic hand-written evaluator of expectimax 2048 bots: per-line features (empty cells,
//! possible merges, monotonicity, a penalty on large scattered tiles) summed over the four rows
//! and four columns, each line's value read from a 65,536-entry table.

use std::sync::LazyLock;

use zero2048_game::Board;

use crate::evaluator::Evaluator;

/// Weights of the line features. The defaults are the values the classic bots converged on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeuristicWeights {
    /// Constant added per line so that every live position outranks a lost one (worth 0).
    pub alive_bonus: f32,
    /// Per empty cell.
    pub empty: f32,
    /// Per possible merge: a run of k ≥ 2 equal neighbouring tiles (gaps ignored) counts 1 + (k − 1).
    pub merges: f32,
    /// Penalty per unit of non-monotonicity (the smaller of the two directions' violations).
    pub monotonicity: f32,
    /// Exponent applied to tile ranks when measuring monotonicity.
    pub monotonicity_power: f32,
    /// Penalty per unit of Σ rank^power: large tiles are costly unless they merge away.
    pub sum: f32,
    /// Exponent of that sum.
    pub sum_power: f32,
}

impl Default for HeuristicWeights {
    fn default() -> HeuristicWeights {
        HeuristicWeights {
            alive_bonus: 200_000.0,
            empty: 270.0,
            merges: 700.0,
            monotonicity: 47.0,
            monotonicity_power: 4.0,
            sum: 11.0,
            sum_power: 3.5,
        }
    }
}

impl HeuristicWeights {
    /// The value of one line of four exponents, read from one side to the other.
    pub fn line_value(&self, line: [u8; 4]) -> f32 {
        let empty = line.iter().filter(|&&e| e == 0).count() as f32;
        // A run of k ≥ 2 equal tiles (gaps ignored) counts 1 + k: runs are rewarded more than
        // their pairs alone, as in the classic bots.
        let mut merges = 0.0f32;
        let mut run = 0;
        let mut previous = 0u8;
        for &tile in line.iter().filter(|&&e| e != 0) {
            if tile == previous {
                run += 1;
            } else {
                if run > 0 {
                    merges += 1.0 + run as f32;
                }
                run = 0;
            }
            previous = tile;
        }
        if run > 0 {
            merges += 1.0 + run as f32;
        }
        let sum: f32 = line.iter().map(|&e| (e as f32).powf(self.sum_power)).sum();
        let (mut decreasing, mut increasing) = (0.0f32, 0.0f32);
        for pair in line.windows(2) {
            let (a, b) = (
                (pair[0] as f32).powf(self.monotonicity_power),
                (pair[1] as f32).powf(self.monotonicity_power),
            );
            if a > b {
                increasing += a - b;
            } else {
                decreasing += b - a;
            }
        }
        self.alive_bonus + self.empty * empty + self.merges * merges
            - self.monotonicity * increasing.min(decreasing)
            - self.sum * sum
    }
}

/// The heuristic evaluator; see the module documentation.
#[derive(Clone, Copy)]
pub struct Heuristic {
    lines: &'static [f32; 65536],
}

static DEFAULT_LINES: LazyLock<Box<[f32; 65536]>> =
    LazyLock::new(|| line_table(&HeuristicWeights::default()));

fn line_table(weights: &HeuristicWeights) -> Box<[f32; 65536]> {
    let mut table = Box::new([0.0f32; 65536]);
    for (row, value) in table.iter_mut().enumerate() {
        let line = std::array::from_fn(|i| ((row >> (4 * i)) & 0xF) as u8);
        *value = weights.line_value(line);
    }
    table
}

impl Heuristic {
    /// The heuristic with the default weights (its table is built once per process).
    pub fn new() -> Heuristic {
        Heuristic { lines: &DEFAULT_LINES }
    }

    /// A heuristic with other weights. Its table is leaked: build one per configuration, not per game.
    pub fn with_weights(weights: &HeuristicWeights) -> Heuristic {
        Heuristic { lines: Box::leak(line_table(weights)) }
    }
}

impl Default for Heuristic {
    fn default() -> Heuristic {
        Heuristic::new()
    }
}

impl Evaluator for Heuristic {
    type Memo = ();
    #[inline]
    fn evaluate(&self, board: Board) -> f32 {
        let rows = board.raw();
        let columns = board.transpose().raw();
        let mut value = 0.0;
        for i in 0..4 {
            value += self.lines[((rows >> (16 * i)) & 0xFFFF) as usize];
            value += self.lines[((columns >> (16 * i)) & 0xFFFF) as usize];
        }
        value
    }

    fn reward_weight(&self) -> f32 {
        0.0
    }

    fn name(&self) -> String {
        "heuristic".to_string()
    }
}
