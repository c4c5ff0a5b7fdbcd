//! Game records: a start board and the list of (move, spawn) steps, enough for anyone to replay and
//! verify a game. Also their compact binary encoding.

use serde::{Deserialize, Serialize};

use crate::board::{Board, Direction, IllegalMove, PlaceError};
use crate::spawn::Spawn;

/// One step of a game: the move played, then the tile that spawned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The move.
    pub direction: Direction,
    /// Cell of the spawned tile, row-major 0..16.
    pub spawn_cell: u8,
    /// Exponent of the spawned tile: 1 (a 2) or 2 (a 4).
    pub spawn_exponent: u8,
}

impl Step {
    /// The spawn half of the step.
    pub fn spawn(self) -> Spawn {
        Spawn { cell: self.spawn_cell, exponent: self.spawn_exponent }
    }
}

/// What a tree search saw before one move: how often it visited each move from the root, and
/// the root's value. Policy-value training learns from these; the server checks them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchStats {
    /// Visits per move, in `Direction::ALL` order.
    pub visits: [u32; 4],
    /// The search's value of the board before the move (discounted score to go).
    pub root_value: f32,
    /// The search's improved policy, when it computes one (Gumbel root search: a few simulations
    /// make visit counts a poor target), in units of 1/65535, `Direction::ALL` order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<[u16; 4]>,
}

/// The sum an improved policy's entries must have, and how far rounding may take them from it.
pub const POLICY_UNIT: u32 = 65535;
const POLICY_ROUNDING: u32 = 4;

/// `probabilities` as [`SearchStats::policy`] entries: each rounded to 1/65535, so they sum to
/// 65535 within rounding.
pub fn quantize_policy(probabilities: [f32; 4]) -> [u16; 4] {
    probabilities.map(|p| (p.clamp(0.0, 1.0) * POLICY_UNIT as f32).round() as u16)
}

impl SearchStats {
    /// Checks one step's statistics: visits summing to `simulations`, none on a move illegal on
    /// `before`, the move played among those visited, a finite root value.
    pub fn check(
        &self,
        step: usize,
        before: Board,
        played: Direction,
        simulations: u32,
    ) -> Result<(), SearchStatsError> {
        let sum: u64 = self.visits.iter().map(|&v| v as u64).sum();
        if sum != simulations as u64 {
            return Err(SearchStatsError::VisitSum { step, sum, simulations });
        }
        for direction in Direction::ALL {
            let visits = self.visits[direction.index() as usize];
            if visits > 0 && before.legal_move(direction).is_none() {
                return Err(SearchStatsError::IllegalVisits { step, direction, visits });
            }
        }
        if self.visits[played.index() as usize] == 0 {
            return Err(SearchStatsError::UnvisitedMove { step, direction: played });
        }
        if !self.root_value.is_finite() {
            return Err(SearchStatsError::BadValue { step, value: self.root_value });
        }
        if let Some(policy) = self.policy {
            let sum: u32 = policy.iter().map(|&p| p as u32).sum();
            let on_illegal = Direction::ALL
                .iter()
                .any(|&d| policy[d.index() as usize] > 0 && before.legal_move(d).is_none());
            if sum.abs_diff(POLICY_UNIT) > POLICY_ROUNDING || on_illegal {
                return Err(SearchStatsError::BadPolicy { step, policy });
            }
        }
        Ok(())
    }
}

// Records are compared in tests and deduplicated by content; a NaN root value is refused by
// `check_search` long before that matters.
impl Eq for SearchStats {}

/// A whole game, as played.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GameRecord {
    /// The board after the two opening spawns.
    pub start: Board,
    /// Every step, in order.
    pub steps: Vec<Step>,
    /// The search statistics of every step, when a tree search played the game (empty
    /// otherwise; never partial).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<SearchStats>,
}

/// Why a record's search statistics cannot be what a search reported.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SearchStatsError {
    /// Statistics for some steps but not all.
    #[error("search statistics for {stats} of {steps} steps")]
    Count {
        /// Statistics present.
        stats: usize,
        /// Steps in the game.
        steps: usize,
    },
    /// The visits do not add up to the simulations of the search.
    #[error("step {step}: visits sum to {sum}, the search runs {simulations} simulations")]
    VisitSum {
        /// Index of the step.
        step: usize,
        /// Their sum.
        sum: u64,
        /// What they must sum to.
        simulations: u32,
    },
    /// A move that is not legal was visited.
    #[error("step {step}: {visits} visits on the illegal move {direction:?}")]
    IllegalVisits {
        /// Index of the step.
        step: usize,
        /// The move.
        direction: Direction,
        /// Its visits.
        visits: u32,
    },
    /// The move played is not one the search visited.
    #[error("step {step}: the move played, {direction:?}, was never visited")]
    UnvisitedMove {
        /// Index of the step.
        step: usize,
        /// The move.
        direction: Direction,
    },
    /// An improved policy that is not a distribution over the legal moves.
    #[error("step {step}: policy {policy:?} does not sum to 65535 over legal moves only")]
    BadPolicy {
        /// Index of the step.
        step: usize,
        /// The policy.
        policy: [u16; 4],
    },
    /// Some steps carry an improved policy and others do not.
    #[error("step {step}: an improved policy for some steps but not this one")]
    MixedPolicy {
        /// Index of the first step that differs from the first.
        step: usize,
    },
    /// The root value is not a finite number.
    #[error("step {step}: root value {value} is not finite")]
    BadValue {
        /// Index of the step.
        step: usize,
        /// The value.
        value: f32,
    },
}

/// What replaying a valid record establishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaySummary {
    /// The board after the last step.
    pub final_board: Board,
    /// Total score: the sum of every merge's tile value.
    pub score: u64,
    /// Number of moves.
    pub moves: u32,
    /// Largest tile on the final board.
    pub max_tile: u32,
    /// Whether the final board has no legal move.
    pub game_over: bool,
}

/// One verified step, as the learner and the replayer see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayedStep {
    /// The board the move was played on.
    pub before: Board,
    /// The move.
    pub direction: Direction,
    /// The board after the move, before the spawn.
    pub afterstate: Board,
    /// Score gained by the move.
    pub reward: u32,
    /// The board after the spawn: the next step's `before`.
    pub after: Board,
}

/// The first thing wrong with a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The start board is not two spawned tiles.
    #[error("the start board {0:?} is not two tiles of 2 or 4 on an empty board")]
    BadStart(Board),
    /// A move that is not legal on its board.
    #[error("step {step}: {reason}")]
    IllegalMove {
        /// Index of the step (0-based).
        step: usize,
        /// Why the move is illegal.
        reason: IllegalMove,
    },
    /// A move played when no move was left.
    #[error("step {step}: the game was already over, yet {direction} was played")]
    MoveAfterGameOver {
        /// Index of the step (0-based).
        step: usize,
        /// The move played.
        direction: Direction,
    },
    /// A spawn that is not a 2 or 4 on an empty cell.
    #[error("step {step}: bad spawn: {reason}")]
    BadSpawn {
        /// Index of the step (0-based).
        step: usize,
        /// What was wrong with it.
        reason: PlaceError,
    },
}

impl GameRecord {
    /// Checks the search statistics against the game (call after [`GameRecord::replay`] has
    /// accepted its moves): one entry per step when there are any, visits summing to
    /// `simulations`, none on an illegal move, the move played among those visited, finite values.
    pub fn check_search(&self, simulations: u32) -> Result<(), SearchStatsError> {
        if self.search.is_empty() {
            return Ok(());
        }
        if self.search.len() != self.steps.len() {
            return Err(SearchStatsError::Count { stats: self.search.len(), steps: self.steps.len() });
        }
        if let Some(step) = self.mixed_policy_step() {
            return Err(SearchStatsError::MixedPolicy { step });
        }
        let mut board = self.start;
        for (step, (played, stats)) in self.steps.iter().zip(&self.search).enumerate() {
            stats.check(step, board, played.direction, simulations)?;
            // Replay has checked the steps; stop quietly if it was not asked to.
            let Some(moved) = board.legal_move(played.direction) else { return Ok(()) };
            match moved.board.place(played.spawn_cell as usize, played.spawn_exponent) {
                Ok(next) => board = next,
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }

    /// The first step whose statistics differ from the first step's in carrying a policy.
    pub fn mixed_policy_step(&self) -> Option<usize> {
        let first = self.search.first()?.policy.is_some();
        self.search.iter().position(|s| s.policy.is_some() != first)
    }

    /// The afterstate of step `step` (the board after its move, before its spawn), found by
    /// replaying the record (`continuation`: its start is another game's position); `None` if
    /// the record is shorter or does not replay that far.
    pub fn afterstate_at(&self, step: usize, continuation: bool) -> Option<Board> {
        let steps = if continuation { self.continuation_steps() } else { self.replay_steps() };
        steps
            .take(step + 1)
            .last()
            .and_then(Result::ok)
            .filter(|_| step < self.steps.len())
            .map(|s| s.afterstate)
    }

    /// An iterator that verifies the record step by step; it stops after the first error.
    pub fn replay_steps(&self) -> ReplaySteps<'_> {
        ReplaySteps { record: self, next: 0, board: self.start, failed: false, check_start: true }
    }

    /// [`GameRecord::replay_steps`] for a *continuation*: a game that starts from a position of
    /// another game (the restart strategy), whose start is therefore not two tiles. Its start is
    /// whatever the caller checked against the parent game ([`is_branch_of`]); every step is
    /// verified as usual.
    pub fn continuation_steps(&self) -> ReplaySteps<'_> {
        ReplaySteps { record: self, next: 0, board: self.start, failed: false, check_start: false }
    }

    /// Verifies the whole record and summarises it, or names the first illegal step.
    pub fn replay(&self) -> Result<ReplaySummary, ReplayError> {
        if self.steps.is_empty() {
            check_start(self.start)?;
        }
        self.summarise(self.replay_steps())
    }

    /// [`GameRecord::replay`] for a continuation (see [`GameRecord::continuation_steps`]).
    pub fn replay_continuation(&self) -> Result<ReplaySummary, ReplayError> {
        self.summarise(self.continuation_steps())
    }

    fn summarise(&self, steps: ReplaySteps<'_>) -> Result<ReplaySummary, ReplayError> {
        let mut board = self.start;
        let mut score = 0u64;
        for step in steps {
            let step = step?;
            score += step.reward as u64;
            board = step.after;
        }
        Ok(ReplaySummary {
            final_board: board,
            score,
            moves: self.steps.len() as u32,
            max_tile: board.max_tile(),
            game_over: board.is_game_over(),
        })
    }
}

/// Whether `start` is `afterstate` with exactly one tile (a 2 or a 4) added on an empty cell: how a
/// continuation branches off its parent game (the restart strategy).
pub fn is_branch_of(start: Board, afterstate: Board) -> bool {
    let changed = start.raw() ^ afterstate.raw();
    if changed == 0 {
        return false;
    }
    let cell = changed.trailing_zeros() / 4;
    let nibble = 0xFu64 << (4 * cell);
    changed & !nibble == 0
        && afterstate.raw() & nibble == 0
        && matches!((start.raw() >> (4 * cell)) & 0xF, 1 | 2)
}

fn check_start(start: Board) -> Result<(), ReplayError> {
    let tiles: Vec<u8> = start.exponents().into_iter().filter(|&e| e != 0).collect();
    if tiles.len() == 2 && tiles.iter().all(|e| (1..=2).contains(e)) {
        Ok(())
    } else {
        Err(ReplayError::BadStart(start))
    }
}

/// See [`GameRecord::replay_steps`].
pub struct ReplaySteps<'a> {
    record: &'a GameRecord,
    next: usize,
    board: Board,
    failed: bool,
    check_start: bool,
}

impl Iterator for ReplaySteps<'_> {
    type Item = Result<ReplayedStep, ReplayError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let step_index = self.next;
        let step = *self.record.steps.get(step_index)?;
        self.next += 1;
        let result = self.verify(step_index, step);
        self.failed = result.is_err();
        Some(result)
    }
}

impl ReplaySteps<'_> {
    fn verify(&mut self, index: usize, step: Step) -> Result<ReplayedStep, ReplayError> {
        if index == 0 && self.check_start {
            check_start(self.board)?;
        }
        let before = self.board;
        let moved = before.try_move(step.direction).map_err(|reason| {
            if before.is_game_over() {
                ReplayError::MoveAfterGameOver { step: index, direction: step.direction }
            } else {
                ReplayError::IllegalMove { step: index, reason }
            }
        })?;
        let after = moved
            .board
            .place(step.spawn_cell as usize, step.spawn_exponent)
            .map_err(|reason| ReplayError::BadSpawn { step: index, reason })?;
        self.board = after;
        Ok(ReplayedStep {
            before,
            direction: step.direction,
            afterstate: moved.board,
            reward: moved.reward,
            after,
        })
    }
}

/// The version byte of the binary encoding of a record without search statistics.
pub const RECORD_FORMAT_VERSION: u8 = 1;
/// The version byte of a record with search statistics (version 1, then the statistics).
pub const RECORD_FORMAT_VERSION_SEARCH: u8 = 2;
/// The version byte of a record whose search statistics carry an improved policy (version 2,
/// each step's statistics followed by its four policy entries, u16 little-endian).
pub const RECORD_FORMAT_VERSION_POLICY: u8 = 3;

/// Why bytes are not a game record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty input: a game record starts with a version byte")]
    Empty,
    /// A version this build does not read.
    #[error(
        "record format version {0} is not supported (this build reads versions {RECORD_FORMAT_VERSION} to {RECORD_FORMAT_VERSION_POLICY})"
    )]
    UnsupportedVersion(u8),
    /// The input ends early.
    #[error("truncated record: {0}")]
    Truncated(&'static str),
    /// The step count is not a minimal LEB128 number of at most 64 bits.
    #[error("the step count is not a minimal LEB128 number")]
    BadLength,
    /// A step byte has its reserved high bit set.
    #[error("step {0}: reserved bit set in step byte")]
    ReservedBit(usize),
    /// Bytes follow the last step.
    #[error("{0} unexpected bytes after the last step")]
    TrailingBytes(usize),
    /// A visit count is not a minimal LEB128 number of at most 32 bits.
    #[error("step {0}: a visit count is not a minimal LEB128 number of 32 bits")]
    BadVisits(usize),
    /// A version-2 record whose statistics say nothing (it must be written as version 1).
    #[error("a record with search statistics has no steps")]
    EmptySearch,
}

/// A step that the binary form cannot hold (the JSON form can, so replay can name it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "step {step}: cell {cell} with exponent {exponent} cannot be encoded (cells 0..=15, exponents 1 or 2)"
)]
pub struct EncodeError {
    /// Index of the step.
    pub step: usize,
    /// Its spawn cell.
    pub cell: u8,
    /// Its spawn exponent.
    pub exponent: u8,
}

impl GameRecord {
    /// Compact binary form: version byte, start board (u64 little-endian), step count (LEB128), then
    /// one byte per step: bits 0–3 spawn cell, bits 4–5 direction, bit 6 set for a 4, bit 7 zero.
    ///
    /// With search statistics the version byte is 2 and, after the steps, each step adds its four
    /// visit counts (LEB128) and its root value (f32 little-endian); with an improved policy in
    /// every step's statistics the version byte is 3 and each step's four policy entries (u16
    /// little-endian) follow its root value. Statistics must cover every step, and carry a
    /// policy on all steps or none (see [`GameRecord::check_search`]); a mismatch is an
    /// [`EncodeError`] on the first step that breaks the rule.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let with_search = !self.search.is_empty();
        let with_policy = self.search.first().is_some_and(|s| s.policy.is_some());
        let mut out = Vec::with_capacity(1 + 8 + 5 + self.steps.len() * if with_search { 17 } else { 1 });
        out.push(match (with_search, with_policy) {
            (false, _) => RECORD_FORMAT_VERSION,
            (true, false) => RECORD_FORMAT_VERSION_SEARCH,
            (true, true) => RECORD_FORMAT_VERSION_POLICY,
        });
        out.extend_from_slice(&self.start.raw().to_le_bytes());
        write_leb128(&mut out, self.steps.len() as u64);
        for (i, step) in self.steps.iter().enumerate() {
            if step.spawn_cell > 15 || !(1..=2).contains(&step.spawn_exponent) {
                return Err(EncodeError { step: i, cell: step.spawn_cell, exponent: step.spawn_exponent });
            }
            out.push(step.spawn_cell | (step.direction.index() << 4) | ((step.spawn_exponent - 1) << 6));
        }
        if with_search {
            if self.search.len() != self.steps.len() {
                let step = self.search.len().min(self.steps.len());
                let (cell, exponent) =
                    self.steps.get(step).map_or((0, 0), |s| (s.spawn_cell, s.spawn_exponent));
                return Err(EncodeError { step, cell, exponent });
            }
            if let Some(step) = self.mixed_policy_step() {
                let (cell, exponent) = (self.steps[step].spawn_cell, self.steps[step].spawn_exponent);
                return Err(EncodeError { step, cell, exponent });
            }
            for stats in &self.search {
                for visits in stats.visits {
                    write_leb128(&mut out, visits as u64);
                }
                out.extend_from_slice(&stats.root_value.to_le_bytes());
                if with_policy {
                    for p in stats.policy.unwrap_or_default() {
                        out.extend_from_slice(&p.to_le_bytes());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Reads the binary form. Never allocates more than the input's length in steps, and accepts
    /// only the one encoding `encode` produces, so `decode(b).encode() == b`.
    pub fn decode(bytes: &[u8]) -> Result<GameRecord, DecodeError> {
        let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if !(RECORD_FORMAT_VERSION..=RECORD_FORMAT_VERSION_POLICY).contains(&version) {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let with_search = version >= RECORD_FORMAT_VERSION_SEARCH;
        let with_policy = version == RECORD_FORMAT_VERSION_POLICY;
        let (start, mut rest) = rest.split_first_chunk::<8>().ok_or(DecodeError::Truncated("start board"))?;
        let mut count = 0u64;
        for shift in (0..).step_by(7) {
            let (&byte, tail) = rest.split_first().ok_or(DecodeError::Truncated("step count"))?;
            rest = tail;
            if shift > 56 {
                return Err(DecodeError::BadLength);
            }
            count |= ((byte & 0x7F) as u64) << shift;
            if byte & 0x80 == 0 {
                // One encoding per record: a final zero group after the first byte is padding.
                if byte == 0 && shift > 0 {
                    return Err(DecodeError::BadLength);
                }
                break;
            }
        }
        if count > rest.len() as u64 {
            return Err(DecodeError::Truncated("steps"));
        }
        let (step_bytes, mut trailing) = rest.split_at(count as usize);
        let mut search = Vec::new();
        if with_search {
            if count == 0 {
                return Err(DecodeError::EmptySearch);
            }
            // At least 8 bytes per step follow: never allocate past the input.
            if (trailing.len() as u64) < count * 8 {
                return Err(DecodeError::Truncated("search statistics"));
            }
            search.reserve(count as usize);
            for step in 0..count as usize {
                let mut visits = [0u32; 4];
                for v in &mut visits {
                    let (value, tail) = read_leb128(trailing).ok_or(DecodeError::BadVisits(step))?;
                    *v = u32::try_from(value).map_err(|_| DecodeError::BadVisits(step))?;
                    trailing = tail;
                }
                let (value, tail) =
                    trailing.split_first_chunk::<4>().ok_or(DecodeError::Truncated("root value"))?;
                trailing = tail;
                let policy = if with_policy {
                    let (entries, tail) =
                        trailing.split_first_chunk::<8>().ok_or(DecodeError::Truncated("policy"))?;
                    trailing = tail;
                    Some(std::array::from_fn(|i| u16::from_le_bytes([entries[2 * i], entries[2 * i + 1]])))
                } else {
                    None
                };
                search.push(SearchStats { visits, root_value: f32::from_le_bytes(*value), policy });
            }
        }
        if !trailing.is_empty() {
            return Err(DecodeError::TrailingBytes(trailing.len()));
        }
        let steps = step_bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if b & 0x80 != 0 {
                    return Err(DecodeError::ReservedBit(i));
                }
                let direction = Direction::from_index((b >> 4) & 0b11).ok_or(DecodeError::ReservedBit(i))?;
                Ok(Step { direction, spawn_cell: b & 0xF, spawn_exponent: 1 + ((b >> 6) & 1) })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GameRecord { start: Board::from_raw(u64::from_le_bytes(*start)), steps, search })
    }
}

fn write_leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A minimal LEB128 number of at most 35 bits, and the rest of the input.
fn read_leb128(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(5) {
        value |= ((byte & 0x7F) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return None;
            }
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}
