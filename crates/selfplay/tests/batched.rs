//! Many MCTS games at once: the same games batched as one at a time, statistics the server can
//! check, and a stop that hands the games in progress back.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use zero2048_game::{Board, Direction, Game, SpawnRule, derive_seed};
use zero2048_search::{ChanceMode, MctsConfig, PolicyValue, Prediction};
use zero2048_selfplay::{BatchedPlay, SearchedGame, StartedGame};

/// A deterministic evaluator that depends on the board: more empty cells, more value.
struct EmptyCells;

impl PolicyValue for EmptyCells {
    fn predict(&self, boards: &[Board]) -> Vec<Prediction> {
        boards
            .iter()
            .map(|b| {
                let mut policy = [0f32; 4];
                for d in Direction::ALL {
                    if let Some(m) = b.legal_move(d) {
                        policy[d.index() as usize] = 1.0 + m.board.empty_count() as f32;
                    }
                }
                let total: f32 = policy.iter().sum::<f32>().max(1.0);
                policy.iter_mut().for_each(|p| *p /= total);
                Prediction { policy, value: 50.0 * b.empty_count() as f32 }
            })
            .collect()
    }
}

fn play(parallel: usize, config: MctsConfig, games: u64) -> HashMap<u64, SearchedGame<()>> {
    let driver = BatchedPlay::new(config, SpawnRule::STANDARD, parallel);
    let mut next = 0u64;
    let mut finished = HashMap::new();
    let (counters, left) = driver.run(
        &EmptyCells,
        Vec::new(),
        || {
            next += 1;
            (next <= games).then(|| {
                let seed = derive_seed(9, next);
                StartedGame { game: Game::new(seed, SpawnRule::STANDARD), seed, tag: () }
            })
        },
        |game| {
            finished.insert(game.seed, game);
        },
        &AtomicBool::new(false),
    );
    assert!(left.is_empty());
    assert!(counters.evaluations >= counters.simulations, "{counters:?}");
    let moves: u64 = finished.values().map(|g| g.record.steps.len() as u64).sum();
    assert_eq!(counters.moves, moves);
    if parallel > 1 {
        assert!(counters.batches < counters.evaluations, "leaves were not batched: {counters:?}");
    }
    finished
}

#[test]
fn games_played_in_a_batch_equal_games_played_alone_and_their_statistics_check_out() {
    let config = MctsConfig { simulations: 24, temperature_moves: 10, ..MctsConfig::default() };
    let alone = play(1, config, 6);
    let together = play(6, config, 6);
    assert_eq!(alone.len(), 6);
    for (seed, game) in &alone {
        let other = &together[seed];
        assert_eq!(game.record, other.record, "seed {seed}");
        let summary = game.record.replay().unwrap();
        assert!(summary.game_over);
        assert_eq!(summary.score, game.score);
        assert_eq!(game.record.search.len(), game.record.steps.len());
        assert_eq!(game.record.check_search(24), Ok(()));
        let bytes = game.record.encode().unwrap();
        assert_eq!(zero2048_game::GameRecord::decode(&bytes).unwrap(), game.record);
    }
}

#[test]
fn sampled_chance_nodes_also_play_legal_checked_games() {
    let config = MctsConfig { simulations: 16, chance: ChanceMode::Sampled, ..MctsConfig::default() };
    for game in play(4, config, 4).values() {
        assert!(game.record.replay().unwrap().game_over);
        assert_eq!(game.record.check_search(16), Ok(()));
    }
}

#[test]
fn a_stop_hands_back_the_games_in_progress() {
    let config = MctsConfig { simulations: 8, ..MctsConfig::default() };
    let driver = BatchedPlay::new(config, SpawnRule::STANDARD, 3);
    let stop = AtomicBool::new(false);
    let mut seeds = 0u64;
    let mut finished = 0;
    let (_, left) = driver.run(
        &EmptyCells,
        Vec::new(),
        || {
            seeds += 1;
            Some(StartedGame { game: Game::new(seeds, SpawnRule::STANDARD), seed: seeds, tag: () })
        },
        |_| {
            // The first game to end stops the run: the other two are in progress.
            finished += 1;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        },
        &stop,
    );
    assert_eq!(finished, 1);
    assert_eq!(left.len(), 2);
    for (record, ()) in left {
        assert_eq!(record.search.len(), record.steps.len());
        assert!(record.replay().is_ok());
    }
}
