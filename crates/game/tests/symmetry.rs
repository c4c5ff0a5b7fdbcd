//! The eight symmetries form the dihedral group and commute with moves.

use proptest::prelude::*;
use zero2048_game::reference::Grid;
use zero2048_game::{Board, Direction, Symmetry};

#[test]
fn group_laws() {
    let all = Symmetry::ALL;
    let distinct: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), 8);
    for a in all {
        assert_eq!(a.compose(Symmetry::IDENTITY), a);
        assert_eq!(Symmetry::IDENTITY.compose(a), a);
        assert_eq!(a.compose(a.inverse()), Symmetry::IDENTITY);
        for b in all {
            assert!(all.contains(&a.compose(b)), "closure");
            for c in all {
                assert_eq!(a.compose(b).compose(c), a.compose(b.compose(c)), "associativity");
            }
        }
    }
    // Four rotations by 90° give the identity, and the group is not commutative.
    let r = Symmetry::ROTATE_CLOCKWISE;
    assert_eq!(r.compose(r).compose(r).compose(r), Symmetry::IDENTITY);
    assert_ne!(r.compose(r), Symmetry::IDENTITY);
    assert!(all.iter().any(|&a| all.iter().any(|&b| a.compose(b) != b.compose(a))));
}

#[test]
fn rotation_turns_the_board_clockwise() {
    let board: Board = "2 0 0 0  0 0 0 0  0 0 0 0  0 0 0 4".parse().unwrap();
    let turned = Symmetry::ROTATE_CLOCKWISE.apply(board);
    let expected: Board = "0 0 0 2  0 0 0 0  0 0 0 0  4 0 0 0".parse().unwrap();
    assert_eq!(turned, expected);
    assert_eq!(Symmetry::ROTATE_CLOCKWISE.apply_direction(Direction::Up), Direction::Right);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn symmetries_act_on_cells_as_described(raw in any::<u64>()) {
        let board = Board::from_raw(raw);
        for s in Symmetry::ALL {
            let image = s.apply(board);
            for r in 0..4 {
                for c in 0..4 {
                    let (r2, c2) = s.map_cell(r, c);
                    prop_assert_eq!(image.get(4 * r2 + c2), board.get(4 * r + c));
                }
            }
        }
    }

    #[test]
    fn composition_matches_application(raw in any::<u64>()) {
        let board = Board::from_raw(raw);
        prop_assert_eq!(board.symmetries(), Symmetry::ALL.map(|s| s.apply(board)));
        for a in Symmetry::ALL {
            prop_assert_eq!(a.inverse().apply(a.apply(board)), board);
            for b in Symmetry::ALL {
                prop_assert_eq!(a.compose(b).apply(board), a.apply(b.apply(board)));
            }
        }
    }

    #[test]
    fn moves_commute_with_symmetries(raw in any::<u64>()) {
        let board = Board::from_raw(raw);
        for s in Symmetry::ALL {
            for d in Direction::ALL {
                let moved_then_turned = board.slide(d);
                let turned_then_moved = s.apply(board).slide(s.apply_direction(d));
                prop_assert_eq!(moved_then_turned.overflow, turned_then_moved.overflow);
                if !moved_then_turned.overflow {
                    prop_assert_eq!(s.apply(moved_then_turned.board), turned_then_moved.board);
                    prop_assert_eq!(moved_then_turned.reward, turned_then_moved.reward);
                }
            }
        }
    }

    #[test]
    fn transpose_matches_reference(raw in any::<u64>()) {
        let board = Board::from_raw(raw);
        let grid = Grid::from_board(board);
        let mut t = grid;
        for r in 0..4 { for c in 0..4 { t.cells[r][c] = grid.cells[c][r]; } }
        prop_assert_eq!(board.transpose(), t.to_board());
        prop_assert_eq!(board.transpose().transpose(), board);
    }
}
