//! The batch format and upload verification.

use proptest::prelude::*;
use zero2048_game::{GameRecord, SpawnRule};
use zero2048_protocol::{
    BatchEntry, BatchError, BatchGame, Origin, ParentPosition, RejectReason, SearchRequirement, UploadRules,
    Uuid, compress, decode_batch, decompress_limited, encode_batch, verify_game,
};

fn random_game(seed: u64) -> GameRecord {
    // Random legal moves until the game ends: a valid, finished record.
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut game = zero2048_game::Game::new(seed, SpawnRule::STANDARD);
    while !game.is_over() {
        let legal: Vec<_> =
            zero2048_game::Direction::ALL.into_iter().filter(|d| game.board().try_move(*d).is_ok()).collect();
        let _ = game.play(legal[rng.random_range(0..legal.len())]);
    }
    game.into_record()
}

fn rules(accepted: &[u64]) -> UploadRules<'_> {
    UploadRules { accepted_revisions: accepted, search: SearchRequirement::Absent }
}

#[test]
fn a_batch_round_trips_through_zstd() {
    let games: Vec<(Uuid, u64, Option<Origin>, Vec<u8>)> = (0..20)
        .map(|i| {
            let record = random_game(i);
            let origin = (i % 3 == 0).then_some(Origin { parent: Uuid::from_u128(99), step: i as u32 });
            (Uuid::from_u128(i as u128 + 7), i, origin, record.encode().unwrap())
        })
        .collect();
    let raw = encode_batch(games.iter().map(|(uuid, revision, origin, record)| BatchGame {
        uuid: *uuid,
        revision: *revision,
        origin: *origin,
        record,
    }))
    .unwrap();
    let body = compress(&raw, 3);
    let entries = decode_batch(&decompress_limited(&body, 1 << 20).unwrap(), 100).unwrap();
    assert_eq!(entries.len(), 20);
    for (entry, (uuid, revision, origin, bytes)) in entries.iter().zip(&games) {
        assert_eq!((&entry.uuid, &entry.revision, &entry.origin), (uuid, revision, origin));
        assert_eq!(&entry.record.as_ref().unwrap().encode().unwrap(), bytes);
        if origin.is_none() {
            assert!(verify_game(entry, &rules(&[*revision]), None).is_ok());
        }
    }
}

#[test]
fn framing_errors_name_the_problem() {
    let record = random_game(1).encode().unwrap();
    let one =
        |uuid: u128| BatchGame { uuid: Uuid::from_u128(uuid), revision: 1, origin: None, record: &record };
    let raw = encode_batch([one(1), one(2)].into_iter()).unwrap();
    assert_eq!(decode_batch(b"nope", 10), Err(BatchError::BadMagic));
    assert!(matches!(decode_batch(&raw[..raw.len() - 1], 10), Err(BatchError::Truncated(_))));
    assert!(matches!(decode_batch(&raw, 1), Err(BatchError::TooManyGames { count: 2, limit: 1 })));
    let mut trailing = raw.clone();
    trailing.push(0);
    assert_eq!(decode_batch(&trailing, 10), Err(BatchError::TrailingBytes(1)));
    let mut version = raw.clone();
    version[8] = 9;
    assert_eq!(decode_batch(&version, 10), Err(BatchError::UnsupportedVersion(9)));
    let twice = encode_batch([one(5), one(5)].into_iter()).unwrap();
    assert_eq!(decode_batch(&twice, 10), Err(BatchError::DuplicateInBatch(Uuid::from_u128(5))));
    // A count claiming more games than the bytes could hold is refused before allocating.
    let mut huge = raw[..13].to_vec();
    huge[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(decode_batch(&huge, usize::MAX), Err(BatchError::Truncated(_))));
    // The origin byte of the first game: neither 0 nor 1.
    let mut origin = raw.clone();
    origin[13 + 16 + 8] = 7;
    assert_eq!(decode_batch(&origin, 10), Err(BatchError::BadOrigin { index: 0, byte: 7 }));
    // A version-1 batch (with claims) is refused by name.
    let mut old = raw.clone();
    old[8] = 1;
    assert_eq!(decode_batch(&old, 10), Err(BatchError::UnsupportedVersion(1)));
}

#[test]
fn a_zstd_bomb_stops_at_the_limit() {
    let body = compress(&vec![0u8; 64 << 20], 19);
    assert!(body.len() < 10_000);
    assert_eq!(decompress_limited(&body, 1 << 20), Err(BatchError::TooLarge { limit: 1 << 20 }));
    assert!(matches!(
        decompress_limited(&body[..body.len() / 2], usize::MAX),
        Err(BatchError::Compression(_))
    ));
    assert!(matches!(decompress_limited(b"plain text", 100), Err(BatchError::Compression(_))));
}

fn entry(record: GameRecord, revision: u64, origin: Option<Origin>) -> BatchEntry {
    BatchEntry { uuid: Uuid::from_u128(1), revision, origin, record: Ok(record) }
}

#[test]
fn verification_refuses_every_bad_game_with_its_reason() {
    let record = random_game(3);
    assert!(verify_game(&entry(record.clone(), 4, None), &rules(&[3, 4]), None).is_ok());
    assert!(matches!(
        verify_game(&entry(record.clone(), 1, None), &rules(&[3, 4]), None),
        Err(RejectReason::RevisionNotAccepted { revision: 1, .. })
    ));
    let mut short = record.clone();
    short.steps.truncate(2);
    assert_eq!(verify_game(&entry(short, 4, None), &rules(&[4]), None), Err(RejectReason::Unfinished));
    let mut illegal = record.clone();
    illegal.steps[0].spawn_cell = 16;
    assert!(matches!(
        verify_game(&entry(illegal, 4, None), &rules(&[4]), None),
        Err(RejectReason::Illegal(_))
    ));
    // Statistics where the run takes none, and none where it needs them.
    let mcts = UploadRules {
        accepted_revisions: &[4],
        search: SearchRequirement::Mcts { simulations: 8, improved_policy: false },
    };
    assert!(matches!(
        verify_game(&entry(record.clone(), 4, None), &mcts, None),
        Err(RejectReason::SearchStats(_))
    ));
    let mut stats = record.clone();
    stats.search = vec![
        zero2048_game::SearchStats { visits: [8, 0, 0, 0], root_value: 1.0, policy: None };
        stats.steps.len()
    ];
    assert!(matches!(
        verify_game(&entry(stats, 4, None), &rules(&[4]), None),
        Err(RejectReason::SearchStats(_))
    ));
}

#[test]
fn a_continuation_must_start_from_its_parents_position_plus_one_spawn() {
    let parent = random_game(5);
    let step = parent.steps.len() / 2;
    let afterstate = parent.afterstate_at(step, false).unwrap();
    let mut game = zero2048_game::Game::branch(afterstate, 11, SpawnRule::STANDARD).unwrap();
    while !game.is_over() {
        let d = zero2048_game::Direction::ALL
            .into_iter()
            .find(|d| game.board().legal_move(*d).is_some())
            .unwrap();
        game.play(d).unwrap();
    }
    let child = game.into_record();
    let origin = Some(Origin { parent: Uuid::from_u128(77), step: step as u32 });
    let checked =
        verify_game(&entry(child.clone(), 4, origin), &rules(&[4]), Some(ParentPosition::Found(afterstate)));
    let verified = checked.expect("a true continuation is accepted");
    assert!(verified.summary.game_over);
    // Unknown parent.
    assert!(matches!(
        verify_game(&entry(child.clone(), 4, origin), &rules(&[4]), Some(ParentPosition::Missing)),
        Err(RejectReason::UnknownParent { .. })
    ));
    // Another position of the parent.
    let elsewhere = parent.afterstate_at(step - 1, false).unwrap();
    let refused =
        verify_game(&entry(child.clone(), 4, origin), &rules(&[4]), Some(ParentPosition::Found(elsewhere)));
    assert!(matches!(refused, Err(RejectReason::NotABranch { .. })), "{refused:?}");
    assert_eq!(refused.unwrap_err().code(), "not_a_branch");
    // Without its origin, a continuation is not a game from the start.
    assert!(matches!(verify_game(&entry(child, 4, None), &rules(&[4]), None), Err(RejectReason::Illegal(_))));
}

#[test]
fn versions_compare_numerically() {
    use zero2048_protocol::version_at_least;
    assert!(version_at_least("0.10.0", "0.9.3"));
    assert!(version_at_least("1.0.0", "1.0.0"));
    assert!(!version_at_least("0.1.0", "0.2.0"));
    assert!(!version_at_least("garbage", "0.1.0"));
    assert!(version_at_least("anything", ""));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_batch(&bytes, 64);
        let mut framed = b"Z2KBATCH\x02".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = decode_batch(&framed, 64);
        let _ = decompress_limited(&bytes, 1 << 16);
    }

    #[test]
    fn flipping_a_byte_of_a_batch_is_caught_or_harmless(seed in 0u64..50, at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let record = random_game(seed);
        let bytes = record.encode().unwrap();
        let game = BatchGame { uuid: Uuid::from_u128(9), revision: 1, origin: None, record: &bytes };
        let mut raw = encode_batch([game].into_iter()).unwrap();
        let i = at.index(raw.len());
        raw[i] ^= 1 << bit;
        // Either the framing refuses it, or the game verifies only if it is still a whole legal
        // game (whose score is what its replay gives).
        if let Ok(entries) = decode_batch(&raw, 8) {
            for entry in entries {
                if let Ok(verified) = verify_game(&entry, &rules(&[1]), None) {
                    let record = entry.record.as_ref().unwrap();
                    prop_assert_eq!(verified.summary, record.replay().unwrap());
                    prop_assert!(verified.summary.game_over);
                }
            }
        }
    }
}

/// A whole game played by MCTS with `root`, its statistics recorded at every move.
fn searched_game(root: zero2048_search::RootRule, simulations: u32, seed: u64) -> zero2048_game::GameRecord {
    use zero2048_search::{MctsConfig, Tree, UniformPolicy};
    let config = MctsConfig { simulations, root, ..MctsConfig::default() };
    let mut game = zero2048_game::Game::new(seed, SpawnRule::STANDARD);
    let mut search = Vec::new();
    while !game.is_over() {
        let mut tree = Tree::new(game.board(), config, SpawnRule::STANDARD, seed ^ search.len() as u64);
        tree.run(&UniformPolicy { value: 100.0 });
        let direction = tree.choose(true).unwrap();
        search.push(tree.stats());
        game.play(direction).unwrap();
    }
    zero2048_game::GameRecord { search, ..game.into_record() }
}

#[test]
fn a_gumbel_run_takes_games_with_an_improved_policy_and_a_puct_run_games_without() {
    use zero2048_search::RootRule;
    let rules = |improved_policy| UploadRules {
        accepted_revisions: &[4],
        search: SearchRequirement::Mcts { simulations: 4, improved_policy },
    };
    let gumbel = searched_game(RootRule::Gumbel, 4, 21);
    let puct = searched_game(RootRule::Puct, 4, 22);
    assert!(gumbel.search.iter().all(|s| s.policy.is_some()));
    // The record survives its binary form (version 3) and is accepted by a Gumbel run only.
    let decoded = zero2048_game::GameRecord::decode(&gumbel.encode().unwrap()).unwrap();
    assert_eq!(decoded, gumbel);
    assert!(verify_game(&entry(decoded.clone(), 4, None), &rules(true), None).is_ok());
    assert!(verify_game(&entry(puct.clone(), 4, None), &rules(false), None).is_ok());
    for (record, improved) in [(decoded.clone(), false), (puct, true)] {
        let refused = verify_game(&entry(record, 4, None), &rules(improved), None);
        assert!(matches!(refused, Err(RejectReason::SearchStats(_))), "{refused:?}");
    }
    // A policy on some moves only, or one that is not a distribution over legal moves.
    let mut mixed = decoded.clone();
    mixed.search[3].policy = None;
    assert!(matches!(
        verify_game(&entry(mixed, 4, None), &rules(true), None),
        Err(RejectReason::SearchStats(_))
    ));
    let mut inflated = decoded;
    inflated.search[0].policy = Some([65535, 65535, 0, 0]);
    let refused = verify_game(&entry(inflated, 4, None), &rules(true), None);
    assert!(matches!(&refused, Err(RejectReason::SearchStats(m)) if m.contains("policy")), "{refused:?}");
}
