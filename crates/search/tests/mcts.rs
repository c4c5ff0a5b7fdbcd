//! Monte Carlo tree search: it finds the move that matters and never visits an illegal move.

use zero2048_game::{Board, Direction, Game, SpawnRule, derive_seed};
use zero2048_search::{
    ChanceMode, MctsConfig, PolicyValue, Prediction, RootRule, Tree, UniformPolicy, halving_schedule,
};

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
        let mut tree = Tree::new(board, config, SpawnRule::STANDARD, 1);
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
    let mut tree = Tree::new(board, config, SpawnRule::STANDARD, 3);
    tree.run(&Survival { favourite: Some(Direction::Left) });
    let chosen = tree.choose(false).unwrap();
    assert!(matches!(chosen, Direction::Up | Direction::Down), "{chosen:?}, visits {:?}", tree.visits());
}

/// The MCTS player plays legal moves to the end of a game, the same game for the same seed, and
/// counts every evaluation it asked for.
#[test]
fn the_mcts_player_finishes_games_reproducibly() {
    use std::sync::Arc;
    use zero2048_search::{MctsPlayer, Player, UniformPolicy, play_game};
    let config = MctsConfig { simulations: 16, ..MctsConfig::default().for_evaluation() };
    let play = |seed: u64| {
        let mut player =
            MctsPlayer::new(Arc::new(UniformPolicy { value: 1000.0 }), config, SpawnRule::STANDARD, seed);
        let (record, score) = play_game(&mut player, seed, SpawnRule::STANDARD);
        (record, score, player.nodes())
    };
    let (record, score, nodes) = play(5);
    let summary = record.replay().expect("every move legal");
    assert!(summary.game_over && summary.score == score);
    assert!(nodes >= summary.moves as u64, "{nodes} evaluations for {} moves", summary.moves);
    assert_eq!(play(5).0, record);
}

fn gumbel(simulations: u32) -> MctsConfig {
    MctsConfig { simulations, root: RootRule::Gumbel, ..MctsConfig::default() }
}

#[test]
fn sequential_halving_shares_simulations_then_keeps_the_better_half() {
    // Four moves, 16 simulations: two phases; 2 rounds of all four, then the best two share the rest.
    assert_eq!(halving_schedule(4, 16), [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    // Fewer simulations than moves: each simulation tries a move not tried yet.
    assert_eq!(halving_schedule(4, 3), [0, 0, 0]);
    assert_eq!(halving_schedule(2, 5), [0, 0, 1, 1, 2]);
    assert_eq!(halving_schedule(1, 3), [0, 1, 2]);
    for moves in 1..=4 {
        for simulations in 1..=64 {
            assert_eq!(halving_schedule(moves, simulations).len(), simulations as usize);
        }
    }
}

#[test]
fn the_gumbel_root_finds_the_surviving_move_with_few_simulations_and_teaches_it() {
    let (board, survivor) = position_with_one_surviving_move();
    let losing =
        Direction::ALL.into_iter().find(|d| *d != survivor && board.legal_move(*d).is_some()).unwrap();
    let legal = Direction::ALL.into_iter().filter(|d| board.legal_move(*d).is_some()).count() as u32;
    // One simulation per legal move is enough to see every move's consequence once.
    for (simulations, seed) in [(legal, 1), (8, 2), (16, 3)] {
        for config in [gumbel(simulations), gumbel(simulations).for_evaluation()] {
            let mut tree = Tree::new(board, config, SpawnRule::STANDARD, seed);
            tree.run(&Survival { favourite: Some(losing) });
            assert_eq!(tree.simulations(), simulations);
            // In self-play the Gumbel draw may still pick another move now and then (that is its
            // exploration); without it the search plays the survivor.
            if config.gumbel_scale == 0.0 {
                let chosen = tree.choose(true);
                assert_eq!(chosen, Some(survivor), "{simulations} simulations: visits {:?}", tree.visits());
            }
            let stats = tree.stats();
            let policy = stats.policy.expect("a Gumbel root records its improved policy");
            let sum: u32 = policy.iter().map(|&p| p as u32).sum();
            assert!(sum.abs_diff(65535) <= 4, "{policy:?}");
            let best = (0..4).max_by_key(|&i| policy[i]).unwrap();
            assert_eq!(best, survivor.index() as usize, "the target moves towards the survivor: {policy:?}");
            for d in Direction::ALL {
                if board.legal_move(d).is_none() {
                    assert_eq!((tree.visits()[d.index() as usize], policy[d.index() as usize]), (0, 0));
                }
            }
        }
    }
    // PUCT records no policy: its target is the visits.
    let mut tree =
        Tree::new(board, MctsConfig { simulations: 8, ..MctsConfig::default() }, SpawnRule::STANDARD, 1);
    tree.run(&Survival { favourite: Some(losing) });
    assert_eq!(tree.stats().policy, None);
}

#[test]
fn gumbel_noise_explores_in_self_play_and_not_in_evaluation() {
    // With a uniform prior and equal values, the Gumbel draw decides the first moves tried.
    let board: Board = "2 4 8 16 | 0 0 0 0 | 0 0 0 0 | 0 0 0 2".parse().unwrap();
    let first_move = |config: MctsConfig, seed: u64| {
        let mut tree = Tree::new(board, config, SpawnRule::STANDARD, seed);
        tree.run(&UniformPolicy { value: 0.0 });
        tree.choose(true)
    };
    let explored: std::collections::HashSet<_> = (0..40).map(|seed| first_move(gumbel(1), seed)).collect();
    assert!(explored.len() >= 3, "{explored:?}");
    let evaluated: std::collections::HashSet<_> =
        (0..40).map(|seed| first_move(gumbel(1).for_evaluation(), seed)).collect();
    assert_eq!(evaluated.len(), 1, "{evaluated:?}");
}
