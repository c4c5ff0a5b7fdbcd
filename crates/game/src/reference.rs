//! A plain implementation of the rules: an array of rows and loops, no tables, no bit tricks.
//!
//! It is the oracle the property tests compare the engine against, and the baseline the benchmarks
//! measure it against. Keep it obvious rather than fast.

use crate::board::{Board, Direction};

/// A board as a 4×4 array of exponents, `cells[row][column]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Grid {
    /// The exponents.
    pub cells: [[u8; 4]; 4],
}

/// The outcome of a plain move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moved {
    /// The grid after the slide (tiles that would exceed 32768 are left as 16 here; see `overflow`).
    pub grid: Grid,
    /// The score gained.
    pub reward: u32,
    /// Some merge made a tile beyond 32768.
    pub overflow: bool,
    /// Whether any cell changed.
    pub changed: bool,
}

impl Grid {
    /// The grid of a packed board.
    pub fn from_board(board: Board) -> Grid {
        let mut cells = [[0u8; 4]; 4];
        for (r, row) in cells.iter_mut().enumerate() {
            for (c, cell) in row.iter_mut().enumerate() {
                *cell = board.get(4 * r + c);
            }
        }
        Grid { cells }
    }

    /// The packed board (exponents above 15 are not representable: the caller checks `overflow`).
    pub fn to_board(self) -> Board {
        let mut raw = 0u64;
        for r in 0..4 {
            for c in 0..4 {
                raw |= ((self.cells[r][c] & 0xF) as u64) << (4 * (4 * r + c));
            }
        }
        Board::from_raw(raw)
    }

    /// Moves every line toward the side `direction` names.
    pub fn slide(self, direction: Direction) -> Moved {
        let mut out = self;
        let mut reward = 0;
        let mut overflow = false;
        for line in 0..4 {
            // Cell coordinates of this line, starting from the side tiles move toward.
            let coordinates: [(usize, usize); 4] = std::array::from_fn(|k| match direction {
                Direction::Left => (line, k),
                Direction::Right => (line, 3 - k),
                Direction::Up => (k, line),
                Direction::Down => (3 - k, line),
            });
            let tiles: Vec<u8> =
                coordinates.iter().map(|&(r, c)| self.cells[r][c]).filter(|&e| e != 0).collect();
            let mut merged: Vec<u8> = Vec::with_capacity(4);
            let mut i = 0;
            while i < tiles.len() {
                if i + 1 < tiles.len() && tiles[i] == tiles[i + 1] {
                    let new = tiles[i] + 1;
                    overflow |= new > 15;
                    reward += 1u32 << new.min(31);
                    merged.push(new);
                    i += 2;
                } else {
                    merged.push(tiles[i]);
                    i += 1;
                }
            }
            merged.resize(4, 0);
            for (k, &(r, c)) in coordinates.iter().enumerate() {
                out.cells[r][c] = merged[k];
            }
        }
        Moved { grid: out, reward, overflow, changed: out != self }
    }

    /// Whether no move both changes the grid and stays within 32768.
    pub fn is_game_over(self) -> bool {
        Direction::ALL.iter().all(|&d| {
            let m = self.slide(d);
            !m.changed || m.overflow
        })
    }

    /// Empty cells in row-major order.
    pub fn empty_cells(self) -> Vec<usize> {
        (0..16).filter(|&i| self.cells[i / 4][i % 4] == 0).collect()
    }
}
