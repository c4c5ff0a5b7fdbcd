//! A plain expectimax on the reference engine ([`zero2048_game::reference::Grid`]) with the
//! heuristic computed line by line, no tables: the oracle for the search tests and the baseline for
//! the search benchmark. Same algorithm as [`crate::Expectimax`], none of its speed.

use zero2048_game::Direction;
use zero2048_game::reference::Grid;

use crate::heuristic::HeuristicWeights;

/// The plain searcher.
pub struct PlainExpectimax {
    /// Heuristic weights.
    pub weights: HeuristicWeights,
    /// Own moves searched.
    pub depth: u32,
    /// Chance-probability pruning threshold.
    pub probability_threshold: f32,
    /// Probability of a 4.
    pub four_probability: f32,
    /// Moves generated so far.
    pub nodes: u64,
}

impl PlainExpectimax {
    /// The heuristic value of a grid: every row left-to-right and every column top-to-bottom.
    pub fn evaluate(&self, grid: &Grid) -> f32 {
        let mut value = 0.0;
        for i in 0..4 {
            value += self.weights.line_value(grid.cells[i]);
        }
        for c in 0..4 {
            value += self.weights.line_value([
                grid.cells[0][c],
                grid.cells[1][c],
                grid.cells[2][c],
                grid.cells[3][c],
            ]);
        }
        value
    }

    /// Values of the four moves from `grid` (`None` for illegal ones), in [`Direction::ALL`] order.
    pub fn root_values(&mut self, grid: &Grid) -> [Option<f32>; 4] {
        Direction::ALL.map(|d| {
            self.nodes += 1;
            let moved = grid.slide(d);
            (moved.changed && !moved.overflow).then(|| self.chance(&moved.grid, self.depth - 1, 1.0))
        })
    }

    fn chance(&mut self, grid: &Grid, plies: u32, probability: f32) -> f32 {
        if plies == 0 || probability < self.probability_threshold {
            return self.evaluate(grid);
        }
        let empty = grid.empty_cells();
        let cells = empty.len() as f32;
        let p2 = 1.0 - self.four_probability;
        let mut total = 0.0;
        for &cell in &empty {
            for (exponent, p) in [(1u8, p2), (2u8, self.four_probability)] {
                if p == 0.0 {
                    continue;
                }
                let mut child = *grid;
                child.cells[cell / 4][cell % 4] = exponent;
                total += p * self.max(&child, plies, probability / cells * p);
            }
        }
        total / cells
    }

    fn max(&mut self, grid: &Grid, plies: u32, probability: f32) -> f32 {
        let mut best = f32::NEG_INFINITY;
        for d in Direction::ALL {
            self.nodes += 1;
            let moved = grid.slide(d);
            if moved.changed && !moved.overflow {
                best = best.max(self.chance(&moved.grid, plies - 1, probability));
            }
        }
        if best == f32::NEG_INFINITY { 0.0 } else { best }
    }
}
