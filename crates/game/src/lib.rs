//! The rules of 2048 as a fast bitboard engine.
//!
//! A [`Board`] is 16 four-bit exponents in one `u64`; moves are four lookups into row tables built at
//! compile time. Around it: seeded spawns ([`SpawnRule`], [`GameRng`]), the eight symmetries of the
//! square ([`Symmetry`]), live games ([`Game`]), and game records ([`GameRecord`]) that anyone can
//! replay to verify a game step by step. [`reference`] holds a plain implementation used as the
//! oracle in tests and the baseline in benchmarks.
//!
//! ```
//! use zero2048_game::{Board, Direction, Game, SpawnRule};
//!
//! // Boards are written row by row; a move returns the afterstate and the points it scored.
//! let board: Board = "2 2 4 . | . . . . | . . . . | . . . .".parse().unwrap();
//! let moved = board.legal_move(Direction::Left).unwrap();
//! assert_eq!(moved.reward, 4); // 2+2 merge once: "4 4 . ."
//!
//! // A seeded game replays identically from its record, which is how a server checks it.
//! let mut game = Game::new(7, SpawnRule::STANDARD);
//! while let Some(direction) = Direction::ALL.into_iter().find(|d| game.board().legal_move(*d).is_some()) {
//!     game.play(direction).unwrap();
//! }
//! let score = game.score();
//! let summary = game.into_record().replay().unwrap();
//! assert!(summary.game_over && summary.score == score);
//! ```
//!
//! This crate must never depend on anything heavier than a random-number generator and serde, and
//! never allocate or branch unpredictably on the move path: every search, learner and server
//! verification calls it billions of times.

mod board;
mod game;
mod record;
pub mod reference;
mod spawn;
mod symmetry;
mod tables;

pub use board::{
    Afterstate, Board, Direction, IllegalMove, MAX_EXPONENT, ParseBoardError, PlaceError, Slide, tile_value,
};
pub use game::Game;
pub use record::{
    DecodeError, EncodeError, GameRecord, POLICY_UNIT, RECORD_FORMAT_VERSION, RECORD_FORMAT_VERSION_POLICY,
    RECORD_FORMAT_VERSION_SEARCH, ReplayError, ReplaySteps, ReplaySummary, ReplayedStep, SearchStats,
    SearchStatsError, Step, is_branch_of, quantize_policy,
};
pub use spawn::{BadProbability, GameRng, Spawn, SpawnRule, derive_seed, rng_from_seed};
pub use symmetry::Symmetry;
