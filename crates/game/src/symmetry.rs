//! The eight symmetries of the square (the dihedral group D4) acting on boards and directions.

use crate::board::{Board, Direction};

/// One of the 8 symmetries: an optional transpose, then an optional row flip (top ↔ bottom), then
/// an optional column mirror (left ↔ right). Every rotation and reflection is one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Symmetry {
    transpose: bool,
    flip_rows: bool,
    mirror_columns: bool,
}

impl Symmetry {
    /// The identity.
    pub const IDENTITY: Symmetry = Symmetry { transpose: false, flip_rows: false, mirror_columns: false };

    /// All eight, the identity first.
    pub const ALL: [Symmetry; 8] = {
        let mut all = [Symmetry::IDENTITY; 8];
        let mut i = 0;
        while i < 8 {
            all[i] = Symmetry { transpose: i & 4 != 0, flip_rows: i & 2 != 0, mirror_columns: i & 1 != 0 };
            i += 1;
        }
        all
    };

    /// The rotation by 90° clockwise.
    pub const ROTATE_CLOCKWISE: Symmetry =
        Symmetry { transpose: true, flip_rows: false, mirror_columns: true };

    /// Where this symmetry sends cell `(row, column)`.
    pub fn map_cell(self, row: usize, column: usize) -> (usize, usize) {
        let (mut r, mut c) = if self.transpose { (column, row) } else { (row, column) };
        if self.flip_rows {
            r = 3 - r;
        }
        if self.mirror_columns {
            c = 3 - c;
        }
        (r, c)
    }

    /// The board with every tile moved by this symmetry.
    #[inline]
    pub fn apply(self, board: Board) -> Board {
        let mut b = if self.transpose { board.transpose() } else { board };
        if self.flip_rows {
            b = Board::from_raw(flip_rows(b.raw()));
        }
        if self.mirror_columns {
            b = Board::from_raw(mirror_columns(b.raw()));
        }
        b
    }

    /// The direction that, on the transformed board, does what `direction` does on the original:
    /// `apply(board).slide(apply_direction(d)) == apply(board.slide(d))`.
    pub fn apply_direction(self, direction: Direction) -> Direction {
        let (mut dr, mut dc): (i8, i8) = match direction {
            Direction::Up => (-1, 0),
            Direction::Down => (1, 0),
            Direction::Left => (0, -1),
            Direction::Right => (0, 1),
        };
        if self.transpose {
            std::mem::swap(&mut dr, &mut dc);
        }
        if self.flip_rows {
            dr = -dr;
        }
        if self.mirror_columns {
            dc = -dc;
        }
        match (dr, dc) {
            (-1, 0) => Direction::Up,
            (1, 0) => Direction::Down,
            (0, -1) => Direction::Left,
            _ => Direction::Right,
        }
    }

    /// `self` after `first`: `a.compose(b).apply(x) == a.apply(b.apply(x))`.
    pub fn compose(self, first: Symmetry) -> Symmetry {
        let target = |r, c| {
            let (r, c) = first.map_cell(r, c);
            self.map_cell(r, c)
        };
        Symmetry::ALL
            .into_iter()
            .find(|s| [(0, 0), (0, 1), (1, 0)].iter().all(|&(r, c)| s.map_cell(r, c) == target(r, c)))
            .expect("the symmetries of the square are closed under composition")
    }

    /// The symmetry that undoes this one.
    pub fn inverse(self) -> Symmetry {
        Symmetry::ALL
            .into_iter()
            .find(|s| s.compose(self) == Symmetry::IDENTITY)
            .expect("every symmetry of the square has an inverse")
    }
}

/// Reverses the four 16-bit rows: swap the 32-bit halves, then the rows inside each half.
#[inline]
fn flip_rows(x: u64) -> u64 {
    let x = x.rotate_left(32);
    ((x & 0x0000_FFFF_0000_FFFF) << 16) | ((x >> 16) & 0x0000_FFFF_0000_FFFF)
}

/// Reverses the four cells of every row.
#[inline]
fn mirror_columns(x: u64) -> u64 {
    ((x & 0x000F_000F_000F_000F) << 12)
        | ((x & 0x00F0_00F0_00F0_00F0) << 4)
        | ((x & 0x0F00_0F00_0F00_0F00) >> 4)
        | ((x & 0xF000_F000_F000_F000) >> 12)
}

/// Reverses the order of all sixteen cells (a half turn: rows flipped and columns mirrored):
/// the bytes reversed, then the two cells inside each byte swapped. Six instructions where a
/// row flip and a mirror take about twelve.
#[inline]
fn half_turn(x: u64) -> u64 {
    let x = x.swap_bytes();
    ((x & 0x0F0F_0F0F_0F0F_0F0F) << 4) | ((x >> 4) & 0x0F0F_0F0F_0F0F_0F0F)
}

impl Board {
    /// The eight images of this board under the symmetries of the square, in [`Symmetry::ALL`] order.
    /// One transpose, two row flips, two mirrors and two half turns, without branches: the
    /// n-tuple hot path.
    #[inline]
    pub fn symmetries(self) -> [Board; 8] {
        let b = self.raw();
        let t = self.transpose().raw();
        [b, mirror_columns(b), flip_rows(b), half_turn(b), t, mirror_columns(t), flip_rows(t), half_turn(t)]
            .map(Board::from_raw)
    }
}
