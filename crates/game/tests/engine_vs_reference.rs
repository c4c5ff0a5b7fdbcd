//! The table engine against the plain reference implementation, on random boards and on boards
//! from real play.

use proptest::prelude::*;
use zero2048_game::reference::Grid;
use zero2048_game::{Board, Direction, Game, SpawnRule, derive_seed, rng_from_seed};

fn check_against_reference(board: Board) {
    let grid = Grid::from_board(board);
    let all = board.slides();
    for (i, direction) in Direction::ALL.into_iter().enumerate() {
        assert_eq!(all[i], board.slide(direction), "slides() and slide({direction}) differ on {board:?}");
        let fast = board.slide(direction);
        let plain = grid.slide(direction);
        assert_eq!(fast.overflow, plain.overflow, "overflow of {direction} on {board:?}");
        if !plain.overflow {
            assert_eq!(fast.board, plain.grid.to_board(), "{direction} on {board:?}");
            assert_eq!(fast.reward, plain.reward, "reward of {direction} on {board:?}");
        }
        let legal = board.legal_move(direction);
        assert_eq!(legal.is_some(), plain.changed && !plain.overflow, "legality of {direction} on {board:?}");
    }
    assert_eq!(board.is_game_over(), grid.is_game_over(), "game over on {board:?}");
    assert_eq!(board.empty_count() as usize, grid.empty_cells().len(), "empty cells of {board:?}");
}

/// Boards with small exponents merge a lot; uniform nibbles cover 32768 pairs and overflow.
fn small_tile_board() -> impl Strategy<Value = Board> {
    proptest::array::uniform16(0u8..=4).prop_map(|cells| Board::from_exponents(cells).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100_000))]

    #[test]
    fn moves_match_reference_on_any_board(raw in any::<u64>()) {
        check_against_reference(Board::from_raw(raw));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(50_000))]

    #[test]
    fn moves_match_reference_on_crowded_small_tiles(board in small_tile_board()) {
        check_against_reference(board);
    }

    #[test]
    fn spawns_land_on_empty_cells_with_2_or_4(raw in any::<u64>(), seed in any::<u64>()) {
        let board = Board::from_raw(raw);
        let mut rng = rng_from_seed(seed);
        match SpawnRule::STANDARD.pick(board, &mut rng) {
            None => prop_assert_eq!(board.empty_count(), 0),
            Some(spawn) => {
                prop_assert_eq!(board.get(spawn.cell as usize), 0);
                prop_assert!(spawn.exponent == 1 || spawn.exponent == 2);
            }
        }
    }
}

#[test]
fn moves_match_reference_on_boards_from_real_play() {
    let mut checked = 0;
    for game_index in 0..800 {
        let seed = derive_seed(2048, game_index);
        let mut game = Game::new(seed, SpawnRule::STANDARD);
        let mut rng = rng_from_seed(seed ^ 1);
        while !game.is_over() {
            check_against_reference(game.board());
            checked += 1;
            // Prefer left/up so games build bigger tiles than uniform random play.
            let order = match rand_core::Rng::next_u32(&mut rng) % 8 {
                0..=3 => [Direction::Left, Direction::Up, Direction::Right, Direction::Down],
                4..=6 => [Direction::Up, Direction::Left, Direction::Right, Direction::Down],
                _ => [Direction::Right, Direction::Down, Direction::Left, Direction::Up],
            };
            let direction = order.into_iter().find(|&d| game.board().legal_move(d).is_some()).unwrap();
            game.play(direction).unwrap();
        }
    }
    assert!(checked > 100_000, "only {checked} boards from play");
}

#[test]
fn two_32768_tiles_cannot_merge_and_say_why() {
    let board: Board = "32768 32768 2 4  4 2 4 2  2 4 2 4  4 2 4 2".parse().unwrap();
    assert_eq!(
        board.try_move(Direction::Left),
        Err(zero2048_game::IllegalMove::TileOverflow(Direction::Left))
    );
    assert_eq!(board.try_move(Direction::Up), Err(zero2048_game::IllegalMove::Unchanged(Direction::Up)));
    assert!(board.is_game_over(), "the only changing moves overflow");
    assert!(board.is_at_tile_limit());
    // The move never wraps around to an empty or small tile.
    let slide = board.slide(Direction::Right);
    assert!(slide.overflow);
}

#[test]
fn spawn_probability_is_respected_and_validated() {
    let mut rng = rng_from_seed(9);
    let rule = SpawnRule::new(0.25).unwrap();
    let fours = (0..40_000).filter(|_| rule.pick(Board::EMPTY, &mut rng).unwrap().exponent == 2).count();
    assert!((9_000..11_000).contains(&fours), "{fours} fours in 40k spawns at p=0.25");
    let cells: std::collections::HashSet<u8> =
        (0..2000).map(|_| rule.pick(Board::EMPTY, &mut rng).unwrap().cell).collect();
    assert_eq!(cells.len(), 16, "every empty cell is reachable");
    assert!(SpawnRule::new(1.5).is_err());
    assert!(SpawnRule::new(-0.1).is_err());
    let never = SpawnRule::new(0.0).unwrap();
    assert!((0..1000).all(|_| never.pick(Board::EMPTY, &mut rng).unwrap().exponent == 1));
}

#[test]
fn same_seed_same_game() {
    let play = |seed| {
        let mut game = Game::new(seed, SpawnRule::STANDARD);
        while !game.is_over() {
            let d = Direction::ALL.into_iter().find(|&d| game.board().legal_move(d).is_some()).unwrap();
            game.play(d).unwrap();
        }
        game.into_record()
    };
    assert_eq!(play(5), play(5));
    assert_ne!(play(5), play(6));
}
