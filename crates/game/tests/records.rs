//! Game records: encode/decode/replay round trips and every kind of illegal record.

use proptest::prelude::*;
use zero2048_game::{
    Board, DecodeError, Direction, Game, GameRecord, IllegalMove, PlaceError, RECORD_FORMAT_VERSION,
    RECORD_FORMAT_VERSION_POLICY, RECORD_FORMAT_VERSION_SEARCH, ReplayError, SearchStats, SearchStatsError,
    SpawnRule, Step, derive_seed, quantize_policy, rng_from_seed,
};

/// A finished game from `seed`, played by a seeded random player.
fn random_game(seed: u64) -> (GameRecord, u64, Board) {
    let mut game = Game::new(seed, SpawnRule::STANDARD);
    let mut rng = rng_from_seed(!seed);
    while !game.is_over() {
        let legal: Vec<Direction> =
            Direction::ALL.into_iter().filter(|&d| game.board().legal_move(d).is_some()).collect();
        let pick = legal[(rand_core::Rng::next_u32(&mut rng) as usize) % legal.len()];
        game.play(pick).unwrap();
    }
    let (score, board) = (game.score(), game.board());
    (game.into_record(), score, board)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn played_games_round_trip_and_replay(seed in any::<u64>()) {
        let (record, score, board) = random_game(seed);
        let summary = record.replay().unwrap();
        prop_assert_eq!(summary.score, score);
        prop_assert_eq!(summary.final_board, board);
        prop_assert_eq!(summary.moves as usize, record.steps.len());
        prop_assert_eq!(summary.max_tile, board.max_tile());
        prop_assert!(summary.game_over);

        let bytes = record.encode().unwrap();
        prop_assert_eq!(bytes.len(), 1 + 8 + leb128_len(record.steps.len()) + record.steps.len());
        prop_assert_eq!(&GameRecord::decode(&bytes).unwrap(), &record);

        let json = serde_json::to_string(&record).unwrap();
        prop_assert_eq!(&serde_json::from_str::<GameRecord>(&json).unwrap(), &record);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics_and_is_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(record) = GameRecord::decode(&bytes) {
            prop_assert_eq!(record.encode().unwrap(), bytes);
        }
    }
}

fn leb128_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 128 {
        n >>= 7;
        len += 1;
    }
    len
}

fn start() -> Board {
    "2 0 0 0  0 0 0 0  0 0 0 0  0 0 0 2".parse().unwrap()
}

#[test]
fn move_that_changes_nothing_is_named() {
    // Both tiles sit against the left wall and the top/bottom: moving left changes nothing.
    let start: Board = "2 0 0 0  0 0 0 0  0 0 0 0  4 0 0 0".parse().unwrap();
    let record = GameRecord {
        start,
        steps: vec![Step { direction: Direction::Left, spawn_cell: 5, spawn_exponent: 1 }],
        ..GameRecord::default()
    };
    assert_eq!(
        record.replay(),
        Err(ReplayError::IllegalMove { step: 0, reason: IllegalMove::Unchanged(Direction::Left) })
    );
    assert_eq!(record.replay().unwrap_err().to_string(), "step 0: moving left changes nothing");
}

#[test]
fn spawn_on_occupied_cell_is_named() {
    // After moving right, the tiles are in cells 3 and 15; spawning on 3 is illegal.
    let record = GameRecord {
        start: start(),
        steps: vec![Step { direction: Direction::Right, spawn_cell: 3, spawn_exponent: 1 }],
        ..GameRecord::default()
    };
    assert_eq!(record.replay(), Err(ReplayError::BadSpawn { step: 0, reason: PlaceError::Occupied(3) }));
}

#[test]
fn exponent_other_than_1_or_2_is_named() {
    for exponent in [0, 3, 15] {
        let record = GameRecord {
            start: start(),
            steps: vec![Step { direction: Direction::Right, spawn_cell: 0, spawn_exponent: exponent }],
            ..GameRecord::default()
        };
        assert_eq!(
            record.replay(),
            Err(ReplayError::BadSpawn { step: 0, reason: PlaceError::BadExponent(exponent) })
        );
        assert!(record.encode().is_err(), "exponent {exponent} must not be encodable");
    }
    let record = GameRecord {
        start: start(),
        steps: vec![Step { direction: Direction::Right, spawn_cell: 16, spawn_exponent: 1 }],
        ..GameRecord::default()
    };
    assert_eq!(record.replay(), Err(ReplayError::BadSpawn { step: 0, reason: PlaceError::NoSuchCell(16) }));
}

#[test]
fn moves_after_game_over_are_named() {
    let (mut record, _, _) = random_game(derive_seed(1, 1));
    let last = record.steps.len();
    record.steps.push(Step { direction: Direction::Up, spawn_cell: 0, spawn_exponent: 1 });
    assert_eq!(record.replay(), Err(ReplayError::MoveAfterGameOver { step: last, direction: Direction::Up }));
}

#[test]
fn later_step_errors_name_their_index() {
    let (mut record, _, _) = random_game(derive_seed(1, 2));
    let bad = record.steps.len() / 2;
    let replayed: Vec<_> = record.replay_steps().collect::<Result<_, _>>().unwrap();
    // Put the spawn of step `bad` on a cell its afterstate occupies.
    let occupied = (0..16).find(|&c| replayed[bad].afterstate.get(c) != 0).unwrap();
    record.steps[bad].spawn_cell = occupied as u8;
    let err = record.replay().unwrap_err();
    assert_eq!(err, ReplayError::BadSpawn { step: bad, reason: PlaceError::Occupied(occupied) });
    // Iteration stops at the first error.
    assert_eq!(record.replay_steps().count(), bad + 1);
}

#[test]
fn start_board_must_be_two_spawned_tiles() {
    for start in ["0", "2 4 8 0 0 0 0 0 0 0 0 0 0 0 0 0", "8 0 0 0 0 0 0 0 0 0 0 0 0 0 0 2"] {
        let board: Board = if start == "0" { Board::EMPTY } else { start.parse().unwrap() };
        let record = GameRecord { start: board, ..GameRecord::default() };
        assert_eq!(record.replay(), Err(ReplayError::BadStart(board)));
    }
}

#[test]
fn malformed_bytes_are_refused_with_the_reason() {
    let (record, _, _) = random_game(7);
    let bytes = record.encode().unwrap();
    assert_eq!(GameRecord::decode(&[]), Err(DecodeError::Empty));
    assert_eq!(GameRecord::decode(&[9]), Err(DecodeError::UnsupportedVersion(9)));
    assert_eq!(GameRecord::decode(&bytes[..5]), Err(DecodeError::Truncated("start board")));
    assert_eq!(GameRecord::decode(&bytes[..9]), Err(DecodeError::Truncated("step count")));
    assert_eq!(GameRecord::decode(&bytes[..bytes.len() - 1]), Err(DecodeError::Truncated("steps")));
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(GameRecord::decode(&longer), Err(DecodeError::TrailingBytes(1)));
    let mut reserved = bytes.clone();
    let last = reserved.len() - 1;
    reserved[last] |= 0x80;
    assert!(matches!(GameRecord::decode(&reserved), Err(DecodeError::ReservedBit(_))));
    // A huge claimed step count is refused before anything is allocated for it.
    let mut huge = vec![1u8];
    huge.extend_from_slice(&record.start.raw().to_le_bytes());
    huge.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
    assert_eq!(GameRecord::decode(&huge), Err(DecodeError::Truncated("steps")));
    let mut endless = vec![1u8];
    endless.extend_from_slice(&record.start.raw().to_le_bytes());
    endless.extend_from_slice(&[0xFF; 11]);
    assert_eq!(GameRecord::decode(&endless), Err(DecodeError::BadLength));
    // A padded step count (0 written as 0x80 0x00) has another encoding: refused.
    let mut padded = vec![1u8];
    padded.extend_from_slice(&record.start.raw().to_le_bytes());
    padded.extend_from_slice(&[0x80, 0x00]);
    assert_eq!(GameRecord::decode(&padded), Err(DecodeError::BadLength));
}

#[test]
fn json_form_is_readable_and_strict() {
    let record = GameRecord {
        start: start(),
        steps: vec![Step { direction: Direction::Right, spawn_cell: 0, spawn_exponent: 2 }],
        ..GameRecord::default()
    };
    let json = serde_json::to_string(&record).unwrap();
    assert_eq!(
        json,
        r#"{"start":"1000000000000001","steps":[{"direction":"right","spawn_cell":0,"spawn_exponent":2}]}"#
    );
    assert!(serde_json::from_str::<GameRecord>(r#"{"start":"12","steps":[]}"#).is_err());
    assert!(
        serde_json::from_str::<GameRecord>(r#"{"start":"1000000000000001","steps":[],"extra":1}"#).is_err()
    );
}

#[test]
fn boards_parse_and_print() {
    let board: Board = "2 4 . 8 | 0 0 0 0 | 16 0 0 0 | 0 0 0 32768".parse().unwrap();
    assert_eq!(board.to_hex(), "120300004000000f");
    assert_eq!(board.to_hex().parse::<Board>().unwrap(), board);
    assert_eq!("1203/0000/4000/000f".parse::<Board>().unwrap(), board);
    assert_eq!(board.to_string().parse::<Board>().unwrap(), board);
    assert_eq!(board.max_tile(), 32768);
    assert_eq!(board.empty_count(), 11);
    for bad in [
        "",
        "1 2 3",
        "3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0",
        "65536 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0",
        "12g4000000000000",
    ] {
        assert!(bad.parse::<Board>().is_err(), "{bad:?} parsed");
    }
    let message = "3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0".parse::<Board>().unwrap_err().to_string();
    assert!(message.contains("`3` is not a tile"), "{message}");
}

/// A played game with made-up but consistent statistics: 100 visits, all legal, the move played
/// visited most.
fn searched_game(seed: u64) -> GameRecord {
    let (mut record, _, _) = random_game(seed);
    let boards: Vec<Board> = record.replay_steps().map(|s| s.unwrap().before).collect();
    record.search = record
        .steps
        .iter()
        .zip(boards)
        .enumerate()
        .map(|(i, (step, board))| {
            let mut visits = [0u32; 4];
            let legal: Vec<usize> = Direction::ALL
                .iter()
                .filter(|d| board.legal_move(**d).is_some())
                .map(|d| d.index() as usize)
                .collect();
            let mut left = 100u32;
            for &m in &legal {
                if m != step.direction.index() as usize {
                    visits[m] = (i as u32 % 7).min(left);
                    left -= visits[m];
                }
            }
            visits[step.direction.index() as usize] += left;
            SearchStats { visits, root_value: i as f32 * 1.5, policy: None }
        })
        .collect();
    record
}

#[test]
fn search_statistics_round_trip_and_are_checked() {
    let record = searched_game(11);
    assert_eq!(record.check_search(100), Ok(()));
    let bytes = record.encode().unwrap();
    assert_eq!(bytes[0], RECORD_FORMAT_VERSION_SEARCH);
    assert_eq!(GameRecord::decode(&bytes).unwrap(), record);
    // A record without statistics keeps version 1, byte for byte.
    let plain = GameRecord { search: Vec::new(), ..record.clone() };
    assert_eq!(plain.encode().unwrap()[0], RECORD_FORMAT_VERSION);
    let json = serde_json::to_string(&record).unwrap();
    assert_eq!(serde_json::from_str::<GameRecord>(&json).unwrap(), record);

    assert_eq!(
        record.check_search(99),
        Err(SearchStatsError::VisitSum { step: 0, sum: 100, simulations: 99 })
    );
    let mut short = record.clone();
    short.search.pop();
    assert!(matches!(short.check_search(100), Err(SearchStatsError::Count { .. })));
    assert!(short.encode().is_err(), "statistics for some steps only must not encode");

    // Visits moved onto an illegal move.
    let boards: Vec<Board> = record.replay_steps().map(|s| s.unwrap().before).collect();
    let (step, illegal) = boards
        .iter()
        .enumerate()
        .find_map(|(i, b)| Direction::ALL.into_iter().find(|d| b.legal_move(*d).is_none()).map(|d| (i, d)))
        .expect("some board has an illegal move");
    let mut forged = record.clone();
    let played = forged.steps[step].direction.index() as usize;
    forged.search[step].visits[played] -= 1;
    forged.search[step].visits[illegal.index() as usize] += 1;
    assert_eq!(
        forged.check_search(100),
        Err(SearchStatsError::IllegalVisits { step, direction: illegal, visits: 1 })
    );

    let mut unvisited = record.clone();
    let played = unvisited.steps[3].direction;
    let visits = unvisited.search[3].visits[played.index() as usize];
    unvisited.search[3].visits[played.index() as usize] = 0;
    let other = Direction::ALL
        .into_iter()
        .find(|d| *d != played && boards[3].legal_move(*d).is_some())
        .unwrap_or(played);
    unvisited.search[3].visits[other.index() as usize] += visits;
    if other != played {
        assert_eq!(
            unvisited.check_search(100),
            Err(SearchStatsError::UnvisitedMove { step: 3, direction: played })
        );
    }

    let mut nan = record.clone();
    nan.search[5].root_value = f32::NAN;
    assert!(matches!(nan.check_search(100), Err(SearchStatsError::BadValue { step: 5, .. })));
}

#[test]
fn malformed_search_statistics_are_refused() {
    let record = searched_game(12);
    let bytes = record.encode().unwrap();
    assert!(matches!(GameRecord::decode(&bytes[..bytes.len() - 1]), Err(DecodeError::Truncated(_))));
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(GameRecord::decode(&longer), Err(DecodeError::TrailingBytes(1)));
    // Version 2 with no steps has another encoding (version 1): refused.
    let mut empty = vec![RECORD_FORMAT_VERSION_SEARCH];
    empty.extend_from_slice(&record.start.raw().to_le_bytes());
    empty.push(0);
    assert_eq!(GameRecord::decode(&empty), Err(DecodeError::EmptySearch));
    // A version-1 record relabelled as version 2 lacks its statistics.
    let mut relabelled = GameRecord { search: Vec::new(), ..record.clone() }.encode().unwrap();
    relabelled[0] = RECORD_FORMAT_VERSION_SEARCH;
    assert_eq!(GameRecord::decode(&relabelled), Err(DecodeError::Truncated("search statistics")));
}

/// `searched_game` with an improved policy on every step: most mass on the move played, the rest
/// spread over the other legal moves.
fn game_with_policy(seed: u64) -> GameRecord {
    let mut record = searched_game(seed);
    let boards: Vec<Board> = record.replay_steps().map(|s| s.unwrap().before).collect();
    for ((stats, step), board) in record.search.iter_mut().zip(&record.steps).zip(&boards) {
        let legal: Vec<Direction> =
            Direction::ALL.into_iter().filter(|d| board.legal_move(*d).is_some()).collect();
        let mut probabilities = [0f32; 4];
        for d in &legal {
            probabilities[d.index() as usize] = 0.3 / legal.len() as f32;
        }
        probabilities[step.direction.index() as usize] += 0.7;
        stats.policy = Some(quantize_policy(probabilities));
    }
    record
}

#[test]
fn an_improved_policy_round_trips_as_version_3_and_is_checked() {
    let record = game_with_policy(13);
    assert_eq!(record.check_search(100), Ok(()));
    let bytes = record.encode().unwrap();
    assert_eq!(bytes[0], RECORD_FORMAT_VERSION_POLICY);
    assert_eq!(bytes.len(), searched_game(13).encode().unwrap().len() + 8 * record.steps.len());
    assert_eq!(GameRecord::decode(&bytes).unwrap(), record);
    assert_eq!(GameRecord::decode(&bytes).unwrap().encode().unwrap(), bytes);
    let json = serde_json::to_string(&record).unwrap();
    assert_eq!(serde_json::from_str::<GameRecord>(&json).unwrap(), record);
    assert!(GameRecord::decode(&bytes[..bytes.len() - 1]).is_err());

    // Mass on an illegal move, or not summing to one.
    let boards: Vec<Board> = record.replay_steps().map(|s| s.unwrap().before).collect();
    let (step, illegal) = boards
        .iter()
        .enumerate()
        .find_map(|(i, b)| Direction::ALL.into_iter().find(|d| b.legal_move(*d).is_none()).map(|d| (i, d)))
        .expect("some board has an illegal move");
    let mut forged = record.clone();
    let mut policy = forged.search[step].policy.unwrap();
    let played = forged.steps[step].direction.index() as usize;
    policy[played] -= 100;
    policy[illegal.index() as usize] += 100;
    forged.search[step].policy = Some(policy);
    assert!(matches!(forged.check_search(100), Err(SearchStatsError::BadPolicy { .. })));
    let mut short = record.clone();
    short.search[2].policy = Some([1000, 0, 0, 0]);
    assert!(matches!(short.check_search(100), Err(SearchStatsError::BadPolicy { step: 2, .. })));

    // All steps or none.
    let mut mixed = record.clone();
    mixed.search[4].policy = None;
    assert_eq!(mixed.check_search(100), Err(SearchStatsError::MixedPolicy { step: 4 }));
    assert!(mixed.encode().is_err(), "a policy on some steps only must not encode");
}
