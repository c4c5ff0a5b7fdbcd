//! The batch format and upload verification.

use proptest::prelude::*;
use zero2048_game::{GameRecord, SpawnRule};
use zero2048_protocol::{
    BatchError, Claims, RejectReason, Uuid, compress, decode_batch, decompress_limited, encode_batch,
    verify_upload,
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

fn claims_of(record: &GameRecord) -> Claims {
    let s = record.replay().unwrap();
    Claims { score: s.score, moves: s.moves, max_tile: s.max_tile }
}

#[test]
fn a_batch_round_trips_through_zstd() {
    let games: Vec<(Uuid, u64, Claims, Vec<u8>)> = (0..20)
        .map(|i| {
            let record = random_game(i);
            (Uuid::from_u128(i as u128 + 7), i, claims_of(&record), record.encode().unwrap())
        })
        .collect();
    let raw = encode_batch(games.iter().map(|(u, r, c, b)| (*u, *r, *c, b.as_slice()))).unwrap();
    let body = compress(&raw, 3);
    let entries = decode_batch(&decompress_limited(&body, 1 << 20).unwrap(), 100).unwrap();
    assert_eq!(entries.len(), 20);
    for (entry, (uuid, revision, claims, bytes)) in entries.iter().zip(&games) {
        assert_eq!((&entry.uuid, &entry.revision, &entry.claims), (uuid, revision, claims));
        assert_eq!(&entry.record.as_ref().unwrap().encode().unwrap(), bytes);
        assert!(verify_upload(entry, &[*revision]).is_ok());
    }
}

#[test]
fn framing_errors_name_the_problem() {
    let record = random_game(1).encode().unwrap();
    let one = |uuid: u128| (Uuid::from_u128(uuid), 1u64, Claims::default(), record.as_slice());
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

#[test]
fn verification_catches_every_lie() {
    let record = random_game(3);
    let claims = claims_of(&record);
    let entry = |claims: Claims, record: GameRecord, revision: u64| zero2048_protocol::BatchEntry {
        uuid: Uuid::from_u128(1),
        revision,
        claims,
        record: Ok(record),
    };
    assert!(verify_upload(&entry(claims, record.clone(), 4), &[3, 4]).is_ok());
    let forged = Claims { score: claims.score + 4, ..claims };
    assert!(matches!(
        verify_upload(&entry(forged, record.clone(), 4), &[4]),
        Err(RejectReason::ClaimsMismatch { field: "score", .. })
    ));
    let longer = Claims { moves: claims.moves + 1, ..claims };
    assert!(matches!(
        verify_upload(&entry(longer, record.clone(), 4), &[4]),
        Err(RejectReason::ClaimsMismatch { field: "moves", .. })
    ));
    let bigger = Claims { max_tile: claims.max_tile * 2, ..claims };
    assert!(matches!(
        verify_upload(&entry(bigger, record.clone(), 4), &[4]),
        Err(RejectReason::ClaimsMismatch { field: "largest tile", .. })
    ));
    assert!(matches!(
        verify_upload(&entry(claims, record.clone(), 1), &[3, 4]),
        Err(RejectReason::RevisionNotAccepted { revision: 1, .. })
    ));
    let mut short = record.clone();
    short.steps.truncate(2);
    let short_claims = claims_of(&short);
    assert_eq!(verify_upload(&entry(short_claims, short, 4), &[4]), Err(RejectReason::Unfinished));
    let mut illegal = record.clone();
    illegal.steps[0].spawn_cell = 16;
    assert!(matches!(verify_upload(&entry(claims, illegal, 4), &[4]), Err(RejectReason::Illegal(_))));
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
        let mut framed = b"Z2KBATCH\x01".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = decode_batch(&framed, 64);
        let _ = decompress_limited(&bytes, 1 << 16);
    }

    #[test]
    fn flipping_a_byte_of_a_batch_is_caught_or_harmless(seed in 0u64..50, at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let record = random_game(seed);
        let claims = claims_of(&record);
        let bytes = record.encode().unwrap();
        let mut raw = encode_batch([(Uuid::from_u128(9), 1, claims, bytes.as_slice())].into_iter()).unwrap();
        let i = at.index(raw.len());
        raw[i] ^= 1 << bit;
        // Either the framing refuses it, or the game verifies only if it is still a true claim.
        if let Ok(entries) = decode_batch(&raw, 8) {
            for entry in entries {
                if let Ok(verified) = verify_upload(&entry, &[1]) {
                    prop_assert_eq!(verified.summary.score, entry.claims.score);
                    prop_assert!(verified.summary.game_over);
                }
            }
        }
    }
}
