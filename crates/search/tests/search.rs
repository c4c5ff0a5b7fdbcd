//! Expectimax against the plain reference search, and the players and series built on it.

use proptest::prelude::*;
use zero2048_game::reference::Grid;
use zero2048_game::{Board, Direction, SpawnRule, derive_seed};
use zero2048_search::reference::PlainExpectimax;
use zero2048_search::{
    Evaluator, Expectimax, ExpectimaxConfig, ExpectimaxPlayer, GameResult, GreedyPlayer, Heuristic,
    HeuristicWeights, Player, RandomPlayer, Series, Strength, play_game,
};

/// Positions from real play: every 10th board of a few games of the 1-ply heuristic player.
fn positions() -> Vec<Board> {
    let mut boards = Vec::new();
    for i in 0..6 {
        let mut player =
            ExpectimaxPlayer::heuristic(ExpectimaxConfig { depth: 1, ..ExpectimaxConfig::default() });
        let (record, _) = play_game(&mut player, derive_seed(77, i), SpawnRule::STANDARD);
        boards.extend(record.replay_steps().map(|s| s.unwrap().after).step_by(10));
    }
    boards
}

fn plain(depth: u32, threshold: f32) -> PlainExpectimax {
    PlainExpectimax {
        weights: HeuristicWeights::default(),
        depth,
        probability_threshold: threshold,
        four_probability: 0.1,
        nodes: 0,
    }
}

fn assert_close(a: [Option<f32>; 4], b: [Option<f32>; 4], board: Board) {
    for (x, y) in a.iter().zip(&b) {
        match (x, y) {
            (Some(x), Some(y)) => {
                assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{x} vs {y} on {board:?}")
            }
            (None, None) => {}
            _ => panic!("legality differs on {board:?}: {a:?} vs {b:?}"),
        }
    }
}

#[test]
fn values_match_the_plain_reference_search() {
    let boards = positions();
    assert!(boards.len() > 100, "only {} positions", boards.len());
    for depth in 1..=2 {
        for &board in &boards {
            let config = ExpectimaxConfig { depth, ..ExpectimaxConfig::default() };
            let fast = Expectimax::new(Heuristic::new(), config).decide(board);
            let mut reference = plain(depth, config.probability_threshold);
            assert_close(fast.values, reference.root_values(&Grid::from_board(board)), board);
            assert_eq!(fast.nodes, reference.nodes, "node counts differ at depth {depth} on {board:?}");
        }
    }
    for &board in boards.iter().step_by(10) {
        let config = ExpectimaxConfig { depth: 3, ..ExpectimaxConfig::default() };
        let fast = Expectimax::new(Heuristic::new(), config).decide(board);
        assert_close(
            fast.values,
            plain(3, config.probability_threshold).root_values(&Grid::from_board(board)),
            board,
        );
    }
}

#[test]
fn transposition_table_changes_no_value_when_nothing_is_pruned() {
    for &board in positions().iter().step_by(8) {
        let config = ExpectimaxConfig { depth: 3, probability_threshold: 0.0, ..ExpectimaxConfig::default() };
        let without = Expectimax::new(Heuristic::new(), config).decide(board);
        let mut with_table =
            Expectimax::new(Heuristic::new(), ExpectimaxConfig { transposition_bits: Some(16), ..config });
        let first = with_table.decide(board);
        assert_eq!(without.values, first.values, "on {board:?}");
        assert!(first.nodes <= without.nodes);
        // A second search of the same root must not reuse the first one's entries wrongly.
        assert_eq!(with_table.decide(board).values, without.values);
    }
}

/// A toy learned value: 100 points per empty cell, in score units.
struct EmptyCells;
impl Evaluator for EmptyCells {
    type Memo = ();
    fn evaluate(&self, afterstate: Board) -> f32 {
        100.0 * afterstate.empty_count() as f32
    }
    fn name(&self) -> String {
        "empty-cells".into()
    }
}

#[test]
fn one_ply_is_reward_plus_afterstate_value() {
    let board: Board = "2 2 4 8  0 0 0 0  0 0 0 0  0 0 0 4".parse().unwrap();
    let decision = Expectimax::new(EmptyCells, ExpectimaxConfig { depth: 1, ..ExpectimaxConfig::default() })
        .decide(board);
    for (i, direction) in Direction::ALL.into_iter().enumerate() {
        let expected = board.legal_move(direction).map(|m| m.reward as f32 + EmptyCells.evaluate(m.board));
        assert_eq!(decision.values[i], expected, "{direction}");
    }
    // Left merges 2+2 (reward 4) and frees a cell: the best under this evaluator.
    assert_eq!(decision.direction, Some(Direction::Left));
}

/// Whether every spawn after `afterstate` leaves a finished game.
fn every_spawn_loses(afterstate: Board) -> bool {
    (0..16)
        .filter(|&c| afterstate.get(c) == 0)
        .all(|c| [1, 2].into_iter().all(|exponent| afterstate.place(c, exponent).unwrap().is_game_over()))
}

#[test]
fn search_never_walks_into_a_certain_loss_when_it_can_avoid_it() {
    let mut positions_with_a_trap = 0;
    for i in 0..300 {
        let mut random = RandomPlayer::new(i);
        let (record, _) = play_game(&mut random, derive_seed(5, i), SpawnRule::STANDARD);
        let boards: Vec<Board> = record.replay_steps().map(|s| s.unwrap().before).collect();
        for &board in boards.iter().rev().take(30) {
            let traps: Vec<bool> = Direction::ALL
                .iter()
                .filter_map(|&d| board.legal_move(d))
                .map(|m| every_spawn_loses(m.board))
                .collect();
            if !(traps.contains(&true) && traps.contains(&false)) {
                continue;
            }
            positions_with_a_trap += 1;
            let config = ExpectimaxConfig { depth: 2, ..ExpectimaxConfig::default() };
            let chosen = Expectimax::new(Heuristic::new(), config).decide(board).direction.unwrap();
            assert!(
                !every_spawn_loses(board.legal_move(chosen).unwrap().board),
                "{chosen} loses for sure on {board:?}"
            );
        }
    }
    assert!(
        positions_with_a_trap >= 20,
        "only {positions_with_a_trap} positions had a move that surely loses"
    );
}

#[test]
fn a_finished_game_has_no_decision() {
    let board: Board = "2 4 2 4  4 2 4 2  2 4 2 4  4 2 4 2".parse().unwrap();
    let decision = Expectimax::new(Heuristic::new(), ExpectimaxConfig::default()).decide(board);
    assert_eq!(decision.direction, None);
    assert_eq!(decision.values, [None; 4]);
    assert_eq!(GreedyPlayer::new(1).choose(board), None);
    assert_eq!(RandomPlayer::new(1).choose(board), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn players_only_choose_legal_moves(raw in any::<u64>(), seed in any::<u64>()) {
        let board = Board::from_raw(raw);
        let mut players: Vec<Box<dyn Player>> = vec![
            Box::new(RandomPlayer::new(seed)),
            Box::new(GreedyPlayer::new(seed)),
            Box::new(ExpectimaxPlayer::heuristic(ExpectimaxConfig { depth: 1, ..ExpectimaxConfig::default() })),
        ];
        for player in &mut players {
            match player.choose(board) {
                Some(direction) => prop_assert!(board.legal_move(direction).is_some()),
                None => prop_assert!(board.is_game_over()),
            }
        }
    }
}

fn series_scores(
    make: &(dyn Fn(u64) -> Box<dyn Player> + Sync),
    games: usize,
    threads: usize,
) -> Vec<GameResult> {
    Series { games, base_seed: 11, threads, rule: SpawnRule::STANDARD, keep_records: true, player: make }
        .run(&|_| {})
}

#[test]
fn series_results_do_not_depend_on_threads() {
    let make = |seed: u64| -> Box<dyn Player> { Box::new(RandomPlayer::new(seed)) };
    let one = series_scores(&make, 40, 1);
    let three = series_scores(&make, 40, 3);
    assert_eq!(one, three);
    assert_eq!(one.len(), 40);
    assert!(one.iter().enumerate().all(|(i, r)| r.index == i));
    for result in &one {
        let summary = result.record.as_ref().unwrap().replay().unwrap();
        assert_eq!(
            (summary.score, summary.moves, summary.max_tile),
            (result.score, result.moves, result.max_tile)
        );
        assert!(summary.game_over);
    }
}

#[test]
fn stronger_players_score_more_on_the_same_seeds() {
    let mean =
        |make: &(dyn Fn(u64) -> Box<dyn Player> + Sync)| Strength::of(&series_scores(make, 24, 2)).unwrap();
    let random = mean(&|seed| Box::new(RandomPlayer::new(seed)));
    let greedy = mean(&|seed| Box::new(GreedyPlayer::new(seed)));
    let search = mean(&|_| {
        Box::new(ExpectimaxPlayer::heuristic(ExpectimaxConfig { depth: 2, ..ExpectimaxConfig::default() }))
    });
    assert!(
        greedy.mean_score > 1.5 * random.mean_score,
        "greedy {} vs random {}",
        greedy.mean_score,
        random.mean_score
    );
    assert!(
        search.mean_score > 5.0 * greedy.mean_score,
        "expectimax {} vs greedy {}",
        search.mean_score,
        greedy.mean_score
    );
    assert!(
        search.reached[0].rate > 0.3,
        "depth-2 expectimax reached 2048 in {:.0}%",
        100.0 * search.reached[0].rate
    );
}

#[test]
fn strength_statistics_are_exact_on_known_data() {
    let result = |score, max_tile| GameResult {
        index: 0,
        seed: 0,
        score,
        moves: 10,
        max_tile,
        nodes: 0,
        record: None,
    };
    let s = Strength::of(&[result(10, 2048), result(20, 4096), result(30, 1024), result(40, 32768)]).unwrap();
    assert_eq!(s.mean_score, 25.0);
    assert_eq!(s.median_score, 25.0);
    assert_eq!((s.min_score, s.max_score, s.max_tile), (10, 40, 32768));
    let sd = (((15.0f64).powi(2) * 2.0 + (5.0f64).powi(2) * 2.0) / 3.0).sqrt();
    assert!((s.ci95 - 1.96 * sd / 2.0).abs() < 1e-9);
    let rates: Vec<f64> = s.reached.iter().map(|r| r.rate).collect();
    assert_eq!(rates, vec![0.75, 0.5, 0.25, 0.25, 0.25]);
    assert!(Strength::of(&[]).is_none());
}
