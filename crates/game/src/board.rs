//! The board: 16 exponents packed in a `u64`, and the moves on it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::tables::{COLUMNS, REWARD_MASK, ROWS};

/// The highest exponent a cell holds: 2^15 = 32768.
pub const MAX_EXPONENT: u8 = 15;

const NIBBLE_LOW_BITS: u64 = 0x1111_1111_1111_1111;

/// A direction to move in. The discriminant is the value stored in game records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Toward row 0.
    Up = 0,
    /// Toward row 3.
    Down = 1,
    /// Toward column 0.
    Left = 2,
    /// Toward column 3.
    Right = 3,
}

impl Direction {
    /// All four, in record order.
    pub const ALL: [Direction; 4] = [Direction::Up, Direction::Down, Direction::Left, Direction::Right];

    /// The direction with record value `index` (0..4).
    pub fn from_index(index: u8) -> Option<Direction> {
        Direction::ALL.get(index as usize).copied()
    }

    /// The value stored in game records.
    pub fn index(self) -> u8 {
        self as u8
    }

    /// Lower-case name, as parsed and printed.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Left => "left",
            Direction::Right => "right",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a move cannot be played.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IllegalMove {
    /// The move leaves the board as it was.
    #[error("moving {0} changes nothing")]
    Unchanged(Direction),
    /// The move would merge two 32768 tiles into 65536, which a cell cannot hold.
    #[error("moving {0} would merge two 32768 tiles, beyond the largest tile a board holds")]
    TileOverflow(Direction),
}

/// The raw result of sliding a board, before legality is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slide {
    /// The board after the slide; meaningless when `overflow` is set.
    pub board: Board,
    /// Score gained by the merges.
    pub reward: u32,
    /// Some merge would have produced a tile beyond 32768.
    pub overflow: bool,
}

impl Slide {
    #[inline]
    fn from_parts(board: u64, summed_reward: u32) -> Slide {
        Slide {
            board: Board(board),
            reward: summed_reward & REWARD_MASK,
            overflow: summed_reward & !REWARD_MASK != 0,
        }
    }
}

/// A legal move's result: the afterstate (before the spawn) and the score it gained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Afterstate {
    /// The board after sliding and merging, before a tile spawns.
    pub board: Board,
    /// Score gained: the sum of the merged tiles' values.
    pub reward: u32,
}

/// A 4×4 board. Cell `(r, c)` holds exponent `k` (tile `2^k`, 0 = empty) in bits `4*(4r+c)`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Board(u64);

impl Board {
    /// The board with no tiles.
    pub const EMPTY: Board = Board(0);

    /// A board from its packed form. Every `u64` is a valid board.
    pub const fn from_raw(raw: u64) -> Board {
        Board(raw)
    }

    /// The packed form.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// A board from 16 exponents in row-major order, or `None` if one exceeds 15.
    pub fn from_exponents(cells: [u8; 16]) -> Option<Board> {
        let mut raw = 0u64;
        for (i, &e) in cells.iter().enumerate() {
            if e > MAX_EXPONENT {
                return None;
            }
            raw |= (e as u64) << (4 * i);
        }
        Some(Board(raw))
    }

    /// The 16 exponents in row-major order.
    pub fn exponents(self) -> [u8; 16] {
        std::array::from_fn(|i| self.get(i))
    }

    /// Exponent of cell `index` (row-major, 0..16).
    #[inline]
    pub fn get(self, index: usize) -> u8 {
        ((self.0 >> (4 * index)) & 0xF) as u8
    }

    /// This board with cell `index` set to `exponent` (masked to 4 bits).
    #[inline]
    pub fn with(self, index: usize, exponent: u8) -> Board {
        let shift = 4 * index;
        Board((self.0 & !(0xF << shift)) | (((exponent & 0xF) as u64) << shift))
    }

    /// One bit per empty cell, at the lowest bit of that cell's nibble.
    #[inline]
    pub fn empty_mask(self) -> u64 {
        let x = self.0 | (self.0 >> 1);
        let x = x | (x >> 2);
        !x & NIBBLE_LOW_BITS
    }

    /// Number of empty cells.
    #[inline]
    pub fn empty_count(self) -> u32 {
        self.empty_mask().count_ones()
    }

    /// The largest exponent on the board (0 for an empty board).
    pub fn max_exponent(self) -> u8 {
        (0..16).map(|i| self.get(i)).max().unwrap_or(0)
    }

    /// The largest tile's value (0 for an empty board).
    pub fn max_tile(self) -> u32 {
        tile_value(self.max_exponent())
    }

    /// Sum of the tile values on the board.
    pub fn tile_sum(self) -> u32 {
        (0..16).map(|i| tile_value(self.get(i))).sum()
    }

    /// The board mirrored in its main diagonal: cell `(r, c)` goes to `(c, r)`.
    #[inline]
    pub fn transpose(self) -> Board {
        let x = self.0;
        // Swap the off-diagonal cells of every 2×2 block (they lie 3 nibbles apart)...
        let x = (x & 0xF0F0_0F0F_F0F0_0F0F)
            | ((x & 0x0000_F0F0_0000_F0F0) << 12)
            | ((x & 0x0F0F_0000_0F0F_0000) >> 12);
        // ...then the two off-diagonal 2×2 blocks (6 nibbles apart).
        Board(
            (x & 0xFF00_FF00_00FF_00FF)
                | ((x & 0x0000_0000_FF00_FF00) << 24)
                | ((x & 0x00FF_00FF_0000_0000) >> 24),
        )
    }

    /// Slides the board, whether or not that is a legal move.
    #[inline]
    pub fn slide(self, direction: Direction) -> Slide {
        let mut board = self.0;
        let mut reward = 0u32;
        match direction {
            Direction::Left | Direction::Right => {
                for r in 0..4 {
                    let entry = &ROWS[((self.0 >> (16 * r)) & 0xFFFF) as usize];
                    let delta = if direction == Direction::Left { entry.left } else { entry.right };
                    board ^= (delta as u64) << (16 * r);
                    reward += entry.reward;
                }
            }
            Direction::Up | Direction::Down => {
                // In the transposed board a column is a row read top to bottom, so up is left.
                let columns = self.transpose().0;
                for c in 0..4 {
                    let column = ((columns >> (16 * c)) & 0xFFFF) as usize;
                    let spread = &COLUMNS[column];
                    board ^= if direction == Direction::Up { spread.up } else { spread.down } << (4 * c);
                    reward += ROWS[column].reward;
                }
            }
        }
        Slide::from_parts(board, reward)
    }

    /// All four slides, in [`Direction::ALL`] order. Cheaper than four calls to [`Board::slide`]:
    /// each row and column is looked up once for both of its directions. The hot path of search.
    #[inline]
    pub fn slides(self) -> [Slide; 4] {
        let (mut up, mut down, mut left, mut right) = (0u64, 0u64, 0u64, 0u64);
        let (mut vertical_reward, mut horizontal_reward) = (0u32, 0u32);
        let columns = self.transpose().0;
        for i in 0..4 {
            let row = &ROWS[((self.0 >> (16 * i)) & 0xFFFF) as usize];
            left |= (row.left as u64) << (16 * i);
            right |= (row.right as u64) << (16 * i);
            horizontal_reward += row.reward;
            let column_index = ((columns >> (16 * i)) & 0xFFFF) as usize;
            let spread = &COLUMNS[column_index];
            up |= spread.up << (4 * i);
            down |= spread.down << (4 * i);
            vertical_reward += ROWS[column_index].reward;
        }
        [
            Slide::from_parts(self.0 ^ up, vertical_reward),
            Slide::from_parts(self.0 ^ down, vertical_reward),
            Slide::from_parts(self.0 ^ left, horizontal_reward),
            Slide::from_parts(self.0 ^ right, horizontal_reward),
        ]
    }

    /// The move in `direction` if it is legal: it changes the board and every merge fits a cell.
    #[inline]
    pub fn legal_move(self, direction: Direction) -> Option<Afterstate> {
        let slide = self.slide(direction);
        (slide.board != self && !slide.overflow)
            .then_some(Afterstate { board: slide.board, reward: slide.reward })
    }

    /// Like [`Board::legal_move`], but says why a move is illegal.
    pub fn try_move(self, direction: Direction) -> Result<Afterstate, IllegalMove> {
        let slide = self.slide(direction);
        if slide.overflow {
            Err(IllegalMove::TileOverflow(direction))
        } else if slide.board == self {
            Err(IllegalMove::Unchanged(direction))
        } else {
            Ok(Afterstate { board: slide.board, reward: slide.reward })
        }
    }

    /// The game is over when no direction has a legal move.
    pub fn is_game_over(self) -> bool {
        Direction::ALL.iter().all(|&d| self.legal_move(d).is_none())
    }

    /// The game ended because the only moves left would merge two 32768 tiles (see
    /// [`IllegalMove::TileOverflow`]): a limit of the representation, not a loss.
    pub fn is_at_tile_limit(self) -> bool {
        self.is_game_over() && Direction::ALL.iter().any(|&d| self.slide(d).overflow)
    }

    /// Places a tile of `exponent` on empty cell `cell`.
    pub fn place(self, cell: usize, exponent: u8) -> Result<Board, PlaceError> {
        if cell >= 16 {
            return Err(PlaceError::NoSuchCell(cell));
        }
        if !(1..=2).contains(&exponent) {
            return Err(PlaceError::BadExponent(exponent));
        }
        if self.get(cell) != 0 {
            return Err(PlaceError::Occupied(cell));
        }
        Ok(self.with(cell, exponent))
    }

    /// Compact form: 16 hex digits, one exponent per cell in row-major order (`"1200000000000001"`
    /// has a 2 and a 4 in the top-left corner and a 2 in the bottom-right).
    pub fn to_hex(self) -> String {
        self.exponents().iter().map(|&e| char::from_digit(e as u32, 16).unwrap_or('?')).collect()
    }
}

/// Why a tile cannot be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    /// The cell index is not 0..16.
    #[error("cell {0} does not exist (cells are 0..=15)")]
    NoSuchCell(usize),
    /// A spawned tile is always 2 or 4 (exponent 1 or 2).
    #[error("a spawned tile has exponent 1 or 2 (tile 2 or 4), not {0}")]
    BadExponent(u8),
    /// The cell already holds a tile.
    #[error("cell {0} is already occupied")]
    Occupied(usize),
}

/// The value of a tile of exponent `e` (0 for an empty cell).
#[inline]
pub fn tile_value(exponent: u8) -> u32 {
    if exponent == 0 { 0 } else { 1 << exponent }
}

impl fmt::Debug for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Board({})", self.to_hex())
    }
}

/// A readable grid: four lines of four right-aligned tile values, `.` for an empty cell.
impl fmt::Display for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in 0..4 {
            for c in 0..4 {
                match self.get(4 * r + c) {
                    0 => write!(f, "{:>6}", ".")?,
                    e => write!(f, "{:>6}", tile_value(e))?,
                }
            }
            if r < 3 {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

/// Why a board could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseBoardError {
    /// Neither 16 hex digits nor 16 tile values.
    #[error(
        "a board is 16 hex exponents in row-major order (e.g. 1200000000000001) or 16 tile values \
         (2, 4, ..., 32768; 0 or . for empty); found {0} values"
    )]
    WrongCellCount(usize),
    /// A tile value that is not a power of two in 2..=32768.
    #[error("`{0}` is not a tile: use 0 or . for empty, or a power of two from 2 to 32768")]
    BadTile(String),
}

impl FromStr for Board {
    type Err = ParseBoardError;

    /// Accepts 16 tile values separated by whitespace, `|` or `,` (the grid that `Display` prints),
    /// or the compact hex form, optionally grouped with `/`, `_` or spaces (`1203/0000/4000/000f`).
    fn from_str(s: &str) -> Result<Board, ParseBoardError> {
        let tokens: Vec<&str> =
            s.split(|c: char| c.is_whitespace() || c == '|' || c == ',').filter(|t| !t.is_empty()).collect();
        // Sixteen separate values are always tile values, so a grid of 2s and 4s is never read as hex.
        if tokens.len() == 16 {
            let mut cells = [0u8; 16];
            for (cell, token) in cells.iter_mut().zip(&tokens) {
                *cell = parse_tile(token)?;
            }
            return Ok(Board::from_exponents(cells).unwrap_or_default());
        }
        let compact: String = tokens.concat().chars().filter(|c| !matches!(c, '/' | '_')).collect();
        if compact.len() == 16 && compact.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut cells = [0u8; 16];
            for (cell, ch) in cells.iter_mut().zip(compact.chars()) {
                *cell = ch.to_digit(16).unwrap_or(0) as u8;
            }
            return Ok(Board::from_exponents(cells).unwrap_or_default());
        }
        Err(ParseBoardError::WrongCellCount(tokens.len()))
    }
}

fn parse_tile(token: &str) -> Result<u8, ParseBoardError> {
    if token == "." {
        return Ok(0);
    }
    let value: u32 = token.parse().map_err(|_| ParseBoardError::BadTile(token.to_string()))?;
    match value {
        0 => Ok(0),
        v if v.is_power_of_two() && (2..=32768).contains(&v) => Ok(v.trailing_zeros() as u8),
        _ => Err(ParseBoardError::BadTile(token.to_string())),
    }
}

impl From<Board> for String {
    fn from(board: Board) -> String {
        board.to_hex()
    }
}

impl TryFrom<String> for Board {
    type Error = ParseBoardError;
    fn try_from(s: String) -> Result<Board, ParseBoardError> {
        s.parse()
    }
}

/// One bit per cell of `mask` (as from [`Board::empty_mask`]) → the index of its `n`-th set cell.
#[inline]
pub(crate) fn nth_cell(mut mask: u64, n: u32) -> usize {
    for _ in 0..n {
        mask &= mask - 1;
    }
    (mask.trailing_zeros() / 4) as usize
}
