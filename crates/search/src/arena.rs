//! Playing series of seeded games in parallel, and summarising a player's strength the one way
//! 2048-Zero always reports it: mean with a 95% interval, median, and tile-reach rates.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use zero2048_game::{Board, Game, GameRecord, SpawnRule, derive_seed};

use crate::player::Player;

/// The tiles whose reach rates every strength table reports.
pub const MILESTONE_TILES: [u32; 5] = [2048, 4096, 8192, 16384, 32768];

/// One finished game.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameResult {
    /// Position of the game in its series.
    pub index: usize,
    /// The seed the game was played on.
    pub seed: u64,
    /// Final score.
    pub score: u64,
    /// Moves played.
    pub moves: u32,
    /// Largest tile reached.
    pub max_tile: u32,
    /// Search nodes the player spent.
    pub nodes: u64,
    /// The whole game, if kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<GameRecord>,
}

/// Plays one game to the end. The player sees every board; the game's spawns come from `seed`.
/// Returns the record and the score.
pub fn play_game(player: &mut dyn Player, seed: u64, rule: SpawnRule) -> (GameRecord, u64) {
    let (record, score, _) = play_game_to_end(player, seed, rule);
    (record, score)
}

/// [`play_game`], also returning the final board.
pub fn play_game_to_end(player: &mut dyn Player, seed: u64, rule: SpawnRule) -> (GameRecord, u64, Board) {
    let mut game = Game::new(seed, rule);
    while let Some(direction) = player.choose(game.board()) {
        if game.play(direction).is_err() {
            // A player that returns an illegal move has a bug; stop rather than loop forever.
            break;
        }
    }
    let (score, board) = (game.score(), game.board());
    (game.into_record(), score, board)
}

/// Seeds and players for a series of games.
pub struct Series<'a> {
    /// Number of games.
    pub games: usize,
    /// Game `i` is played on `derive_seed(base_seed, i)`.
    pub base_seed: u64,
    /// Worker threads (at least 1).
    pub threads: usize,
    /// The spawn rule.
    pub rule: SpawnRule,
    /// Keep each game's record in its result.
    pub keep_records: bool,
    /// Makes the player for one game from the game's seed, so results do not depend on threading.
    pub player: &'a (dyn Fn(u64) -> Box<dyn Player> + Sync),
}

impl Series<'_> {
    /// Plays every game and returns the results in series order. `on_finish` is called once per
    /// game as it finishes, from the worker threads.
    pub fn run(&self, on_finish: &(dyn Fn(&GameResult) + Sync)) -> Vec<GameResult> {
        let next = AtomicUsize::new(0);
        let results = Mutex::new(vec![None; self.games]);
        std::thread::scope(|scope| {
            for _ in 0..self.threads.clamp(1, self.games.max(1)) {
                scope.spawn(|| {
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= self.games {
                            break;
                        }
                        let seed = derive_seed(self.base_seed, index as u64);
                        let mut player = (self.player)(derive_seed(seed, u64::MAX));
                        let (record, score, final_board) = play_game_to_end(player.as_mut(), seed, self.rule);
                        let moves = record.steps.len() as u32;
                        let max_tile = final_board.max_tile();
                        let result = GameResult {
                            index,
                            seed,
                            score,
                            moves,
                            max_tile,
                            nodes: player.nodes(),
                            record: self.keep_records.then_some(record),
                        };
                        on_finish(&result);
                        results.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(result);
                    }
                });
            }
        });
        results.into_inner().unwrap_or_else(|e| e.into_inner()).into_iter().flatten().collect()
    }
}

/// The share of games that reached a tile.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TileRate {
    /// The tile.
    pub tile: u32,
    /// Fraction of games whose largest tile was at least `tile` (0..=1).
    pub rate: f64,
}

/// A player's strength over a series of games.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Strength {
    /// Number of games.
    pub games: usize,
    /// Mean score.
    pub mean_score: f64,
    /// Half-width of the 95% confidence interval of the mean (normal approximation).
    pub ci95: f64,
    /// Median score.
    pub median_score: f64,
    /// Lowest score.
    pub min_score: u64,
    /// Highest score.
    pub max_score: u64,
    /// Mean number of moves per game.
    pub mean_moves: f64,
    /// Largest tile reached in any game.
    pub max_tile: u32,
    /// Reach rates for [`MILESTONE_TILES`].
    pub reached: Vec<TileRate>,
}

impl Strength {
    /// Summarises results; `None` for an empty series.
    pub fn of(results: &[GameResult]) -> Option<Strength> {
        let n = results.len();
        if n == 0 {
            return None;
        }
        let mut scores: Vec<u64> = results.iter().map(|r| r.score).collect();
        scores.sort_unstable();
        let mean = scores.iter().map(|&s| s as f64).sum::<f64>() / n as f64;
        let variance = if n > 1 {
            scores.iter().map(|&s| (s as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        let median = if n % 2 == 1 {
            scores[n / 2] as f64
        } else {
            (scores[n / 2 - 1] as f64 + scores[n / 2] as f64) / 2.0
        };
        Some(Strength {
            games: n,
            mean_score: mean,
            ci95: 1.96 * (variance / n as f64).sqrt(),
            median_score: median,
            min_score: scores[0],
            max_score: scores[n - 1],
            mean_moves: results.iter().map(|r| r.moves as f64).sum::<f64>() / n as f64,
            max_tile: results.iter().map(|r| r.max_tile).max().unwrap_or(0),
            reached: MILESTONE_TILES
                .iter()
                .map(|&tile| TileRate {
                    tile,
                    rate: results.iter().filter(|r| r.max_tile >= tile).count() as f64 / n as f64,
                })
                .collect(),
        })
    }
}
