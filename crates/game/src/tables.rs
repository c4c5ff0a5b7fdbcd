//! Precomputed row tables, built at compile time so the hot path never checks for initialisation.
//!
//! A row is 16 bits: cell `c` of the row in bits `4c..4c+4`, so "left" means toward the low nibble.
//! Each entry stores the *XOR delta* between a row and its moved form: applying a move to a board is
//! then four table reads XOR-ed into the `u64`. Columns are read from the transposed board and
//! looked up in [`COLUMNS`], whose deltas are already spread into column positions, so the result
//! never needs transposing back (measured: 158M against 121M boards per CPU-second).

/// Set in a row reward when the row holds two 32768 tiles that would merge into 65536, a tile a
/// nibble cannot hold. Four rows summed stay below `2^27`, so the flag survives the addition.
pub(crate) const OVERFLOW_FLAG: u32 = 1 << 24;
/// Mask of the score part of a summed reward.
pub(crate) const REWARD_MASK: u32 = OVERFLOW_FLAG - 1;

#[derive(Clone, Copy)]
pub(crate) struct RowEntry {
    /// `row ^ row_moved_left`.
    pub left: u16,
    /// `row ^ row_moved_right`.
    pub right: u16,
    /// Score gained by the merges of this row (the same for both directions: a run of equal tiles
    /// merges the same number of pairs either way), plus [`OVERFLOW_FLAG`] if a merge overflows.
    pub reward: u32,
}

const fn reverse_row(row: u16) -> u16 {
    ((row & 0xF) << 12) | ((row & 0xF0) << 4) | ((row & 0xF00) >> 4) | (row >> 12)
}

/// Slides one row toward cell 0, merging each pair of equal tiles once, nearest pair first.
const fn slide_left(row: u16) -> (u16, u32) {
    let mut out = [0u16; 4];
    let mut filled = 0;
    let mut pending = 0u16; // a tile waiting for a partner; 0 = none
    let mut reward = 0u32;
    let mut i = 0;
    while i < 4 {
        let tile = (row >> (4 * i)) & 0xF;
        if tile != 0 {
            if pending == tile {
                if tile == 15 {
                    reward |= OVERFLOW_FLAG;
                    out[filled] = 15;
                } else {
                    out[filled] = tile + 1;
                    reward += 1 << (tile + 1);
                }
                filled += 1;
                pending = 0;
            } else {
                if pending != 0 {
                    out[filled] = pending;
                    filled += 1;
                }
                pending = tile;
            }
        }
        i += 1;
    }
    if pending != 0 {
        out[filled] = pending;
    }
    (out[0] | (out[1] << 4) | (out[2] << 8) | (out[3] << 12), reward)
}

const fn build_rows() -> [RowEntry; 65536] {
    let mut table = [RowEntry { left: 0, right: 0, reward: 0 }; 65536];
    let mut row = 0usize;
    while row < 65536 {
        let r = row as u16;
        let (left, reward) = slide_left(r);
        let (right_reversed, _) = slide_left(reverse_row(r));
        table[row] = RowEntry { left: r ^ left, right: r ^ reverse_row(right_reversed), reward };
        row += 1;
    }
    table
}

pub(crate) static ROWS: [RowEntry; 65536] = build_rows();

/// Column deltas already spread into column 0 of a board, for a column read top to bottom.
#[derive(Clone, Copy)]
pub(crate) struct ColumnEntry {
    /// Delta of the column moved up.
    pub up: u64,
    /// Delta of the column moved down.
    pub down: u64,
}

/// Places the four nibbles of a row into column 0 of a board: nibble `i` goes to bits `16i..16i+4`.
const fn row_to_column(row: u16) -> u64 {
    let r = row as u64;
    (r & 0xF) | ((r & 0xF0) << 12) | ((r & 0xF00) << 24) | ((r & 0xF000) << 36)
}

const fn build_columns() -> [ColumnEntry; 65536] {
    let mut table = [ColumnEntry { up: 0, down: 0 }; 65536];
    let mut column = 0usize;
    while column < 65536 {
        let entry = ROWS[column];
        table[column] = ColumnEntry { up: row_to_column(entry.left), down: row_to_column(entry.right) };
        column += 1;
    }
    table
}

pub(crate) static COLUMNS: [ColumnEntry; 65536] = build_columns();
