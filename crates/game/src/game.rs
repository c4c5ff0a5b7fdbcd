//! A game in progress: the board, the score, the seeded spawns, and the record being written.

use crate::board::{Afterstate, Board, Direction, IllegalMove};
use crate::record::{GameRecord, ReplayError, SearchStats, Step};
use crate::spawn::{GameRng, SpawnRule, rng_from_seed};

/// A live game. Every random choice comes from the seed, so the same seed and the same moves give
/// the same game.
#[derive(Clone, Debug)]
pub struct Game {
    board: Board,
    score: u64,
    record: GameRecord,
    rng: GameRng,
    rule: SpawnRule,
}

impl Game {
    /// A new game: two tiles spawned on an empty board.
    pub fn new(seed: u64, rule: SpawnRule) -> Game {
        let mut rng = rng_from_seed(seed);
        let mut board = Board::EMPTY;
        for _ in 0..2 {
            let spawn = rule.pick(board, &mut rng).expect("an almost empty board has room for a tile");
            board = board.with_spawn(spawn);
        }
        Game {
            board,
            score: 0,
            record: GameRecord { start: board, steps: Vec::new(), search: Vec::new() },
            rng,
            rule,
        }
    }

    /// A continuation (the restart strategy): a new game from `afterstate`, a position some
    /// earlier game passed through, with one tile spawned on it from `seed`. Its record starts at
    /// that board; see [`crate::is_branch_of`] and [`GameRecord::replay_continuation`]. `None` if
    /// the afterstate has no empty cell.
    pub fn branch(afterstate: Board, seed: u64, rule: SpawnRule) -> Option<Game> {
        let mut rng = rng_from_seed(seed);
        let board = afterstate.with_spawn(rule.pick(afterstate, &mut rng)?);
        Some(Game {
            board,
            score: 0,
            record: GameRecord { start: board, steps: Vec::new(), search: Vec::new() },
            rng,
            rule,
        })
    }

    /// Continues a game from its record so far (checked by replay), with spawns from now on drawn
    /// from `seed`: how an interrupted game is finished later without breaking its record.
    pub fn resume(record: GameRecord, seed: u64, rule: SpawnRule) -> Result<Game, ReplayError> {
        let summary = record.replay()?;
        Ok(Game { board: summary.final_board, score: summary.score, record, rng: rng_from_seed(seed), rule })
    }

    /// [`Game::resume`] for a continuation (a record starting from another game's position;
    /// see [`Game::branch`]).
    pub fn resume_continuation(record: GameRecord, seed: u64, rule: SpawnRule) -> Result<Game, ReplayError> {
        let summary = record.replay_continuation()?;
        Ok(Game { board: summary.final_board, score: summary.score, record, rng: rng_from_seed(seed), rule })
    }

    /// The current board.
    pub fn board(&self) -> Board {
        self.board
    }

    /// Score so far.
    pub fn score(&self) -> u64 {
        self.score
    }

    /// Moves played so far.
    pub fn moves(&self) -> u32 {
        self.record.steps.len() as u32
    }

    /// Whether no legal move is left.
    pub fn is_over(&self) -> bool {
        self.board.is_game_over()
    }

    /// The record so far.
    pub fn record(&self) -> &GameRecord {
        &self.record
    }

    /// The finished (or abandoned) game's record.
    pub fn into_record(self) -> GameRecord {
        self.record
    }

    /// Plays a move, spawns a tile, and records both. Returns the afterstate and reward.
    pub fn play(&mut self, direction: Direction) -> Result<Afterstate, IllegalMove> {
        let moved = self.board.try_move(direction)?;
        self.apply(direction, moved);
        Ok(moved)
    }

    /// Plays `direction` whose afterstate the caller already computed (a player that looked at
    /// every move has them all): spawns a tile and records the step without sliding again.
    /// `moved` must be `self.board().legal_move(direction)` (checked in debug builds).
    #[inline]
    pub fn apply(&mut self, direction: Direction, moved: Afterstate) {
        debug_assert_eq!(
            self.board.legal_move(direction),
            Some(moved),
            "apply needs the move's own afterstate"
        );
        let spawn =
            self.rule.pick(moved.board, &mut self.rng).expect("a move that changes the board frees a cell");
        self.board = moved.board.with_spawn(spawn);
        self.score += moved.reward as u64;
        self.record.steps.push(Step { direction, spawn_cell: spawn.cell, spawn_exponent: spawn.exponent });
    }

    /// Like [`Game::play`], recording what the search saw before the move as well. A game is
    /// played either wholly with statistics or wholly without.
    pub fn play_searched(
        &mut self,
        direction: Direction,
        stats: SearchStats,
    ) -> Result<Afterstate, IllegalMove> {
        debug_assert_eq!(
            self.record.search.len(),
            self.record.steps.len(),
            "statistics for every step or none"
        );
        let moved = self.play(direction)?;
        self.record.search.push(stats);
        Ok(moved)
    }
}
