//! Monte Carlo tree search: it finds the move that matters, never visits an illegal move, records
//! statistics the server can check, and plays the same games batched as one at a time.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use zero2048_game::{Board, Direction, Game, SpawnRule, derive_seed};
use zero2048_search::mcts::{BatchedPlay, ChanceMode, MctsConfig, PolicyValue, Prediction, Tree};

/// Live boards are worth a lot, lost ones nothing; the prior points at `favourite`.
struct Survival {
    favourite: Option<Direction>,
}

impl PolicyValue for Survival {
    fn predict(&self, boards: &[Board]) -> Vec<Prediction> {
        boards
            .iter()
            .map(|_| {
                let mut policy = [0.1 / 3.0; 4];
                match self.favourite {
                    Some(d) => policy[d.index() as usize] = 0.9,
                    None => policy = [0.25; 4],
                }
                Prediction { policy, value: 100_000.0 }
            })
            .collect()
    }
}

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

fn spawns(board: Board) -> Vec<Board> {
    (0..16).filter(|&c| board.get(c) == 0).flat_map(|c| [board.with(c, 1), board.with(c, 2)]).collect()
}

/// A board with several legal moves of which exactly one does not lose at once, whatever spawns.
fn position_with_one_surviving_move() -> (Board, Direction) {
    for seed in 0..10_000 {
        let mut game = Game::new(derive_seed(77, seed), SpawnRule::STANDARD);
        let mut turn = 0usize;
        while !game.is_over() {
            let board = game.board();
            let legal: Vec<Direction> =
                Direction::ALL.into_iter().filter(|d| board.legal_move(*d).is_some()).collect();
            let surviving: Vec<Direction> = legal
                .iter()
                .copied()
                .filter(|d| spawns(board.legal_move(*d).unwrap().board).iter().any(|b| !b.is_game_over()))
                .collect();
            let all_lose =
                |d: &Direction| spawns(board.legal_move(*d).unwrap().board).iter().all(|b| b.is_game_over());
            if legal.len() >= 2
                && surviving.len() == 1
                && legal.iter().filter(|d| **d != surviving[0]).all(all_lose)
            {
                return (board, surviving[0]);
            }
            let d = legal[turn % legal.len()];
            turn += 7;
            game.play(d).unwrap();
        }
    }
    panic!("no position found");
}

#[test]
fn the_search_finds_the_one_move_that_survives_against_a_misleading_prior() {
    let (board, survivor) = position_with_one_surviving_move();
    let losing =
        Direction::ALL.into_iter().find(|d| *d != survivor && board.legal_move(*d).is_some()).unwrap();
    for chance in [ChanceMode::Stratified, ChanceMode::Sampled] {
        let config = MctsConfig { simulations: 100, chance, ..MctsConfig::default().for_evaluation() };
        let mut tree = Tree::new(board, config, 1);
        tree.run(&Survival { favourite: Some(losing) });
        assert_eq!(tree.choose(false), Some(survivor), "{chance:?} on {board:?}: visits {:?}", tree.visits());
        assert_eq!(tree.simulations(), 100);
        for d in Direction::ALL {
            if board.legal_move(d).is_none() {
                assert_eq!(tree.visits()[d.index() as usize], 0, "visited illegal {d:?}");
            }
        }
        assert!(tree.root_value() > 0.0);
    }
}

#[test]
fn the_search_takes_the_biggest_merge_when_values_are_equal() {
    // Up (or Down) merges the two 1024s for 2048 points; Left and Right merge nothing worth it.
    let board: Board = "1024 2 4 8 | 1024 16 32 64 | 2 4 8 16 | 0 0 0 0".parse().unwrap();
    let config = MctsConfig { simulations: 64, ..MctsConfig::default().for_evaluation() };
    let mut tree = Tree::new(board, config, 3);
    tree.run(&Survival { favourite: Some(Direction::Left) });
    let chosen = tree.choose(false).unwrap();
    assert!(matches!(chosen, Direction::Up | Direction::Down), "{chosen:?}, visits {:?}", tree.visits());
}

fn play(parallel: usize, config: MctsConfig, games: u64) -> HashMap<u64, zero2048_search::SearchedGame> {
    let driver = BatchedPlay::new(config, SpawnRule::STANDARD, parallel);
    let mut next = 0u64;
    let mut finished = HashMap::new();
    let (counters, left) = driver.run(
        &EmptyCells,
        || {
            next += 1;
            (next <= games).then(|| derive_seed(9, next))
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
        || {
            seeds += 1;
            Some(seeds)
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
    for record in left {
        assert_eq!(record.search.len(), record.steps.len());
        assert!(record.replay().is_ok());
    }
}
