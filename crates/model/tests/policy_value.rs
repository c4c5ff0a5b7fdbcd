//! The policy-value network: shapes, masking, batching, learning, and its weights files.

use std::collections::BTreeMap;
use std::path::Path;

use zero2048_game::{Board, Direction, Game, SpawnRule, derive_seed};
use zero2048_model::policy_value::{
    CpuTrainBackend, OptimizerConfig, Sample, Trainer, encode_boards, squash, unsquash,
};
use zero2048_model::{PolicyValueConfig, PolicyValueNet, WeightsFileError};

fn boards(n: usize) -> Vec<Board> {
    let mut out = Vec::new();
    let mut seed = 0;
    while out.len() < n {
        let mut game = Game::new(derive_seed(5, seed), SpawnRule::STANDARD);
        seed += 1;
        let mut turn = 0;
        while !game.is_over() && out.len() < n {
            out.push(game.board());
            let direction = Direction::ALL
                .into_iter()
                .cycle()
                .skip(turn % 4)
                .find(|d| game.board().legal_move(*d).is_some());
            game.play(direction.unwrap()).unwrap();
            turn += 1;
        }
        out.push(game.board());
    }
    out.truncate(n);
    out
}

fn tiny() -> PolicyValueConfig {
    PolicyValueConfig { filters: 8, blocks: 1, se_ratio: 4, value_hidden: 16, ..PolicyValueConfig::default() }
}

fn tiny_scalar() -> PolicyValueConfig {
    PolicyValueConfig { value_bins: 0, ..tiny() }
}

#[test]
fn the_squash_transform_inverts() {
    for x in [0.0f32, 1.0, 17.5, 1000.0, 65_536.0, 400_000.0] {
        let back = unsquash(squash(x));
        assert!((back - x).abs() <= 1e-3 * x.max(1.0), "{x} → {back}");
    }
}

#[test]
fn inputs_are_one_hot_and_outputs_are_masked_distributions() {
    let net = PolicyValueNet::new(PolicyValueConfig::default(), 1).unwrap();
    let boards = boards(40);
    let planes = encode_boards(&boards);
    assert_eq!(planes.len(), 40 * 16 * 16);
    for (i, board) in boards.iter().enumerate() {
        for cell in 0..16 {
            let hot: Vec<usize> = (0..16).filter(|p| planes[i * 256 + p * 16 + cell] == 1.0).collect();
            assert_eq!(hot, vec![board.get(cell) as usize], "board {i} cell {cell}");
        }
    }
    // A board where only some moves are legal: the rest get exactly zero.
    let cornered: Board = "2 4 2 4 | 4 2 4 2 | 2 4 2 4 | 0 0 0 0".parse().unwrap();
    let mut all = boards.clone();
    all.push(cornered);
    let lost: Board = "2 4 2 4 | 4 2 4 2 | 2 4 2 4 | 4 2 4 2".parse().unwrap();
    all.push(lost);
    let predictions = net.predict_boards(&all);
    assert_eq!(predictions.len(), all.len());
    for (board, p) in all.iter().zip(&predictions) {
        assert!(p.value.is_finite());
        for d in Direction::ALL {
            let prob = p.policy[d.index() as usize];
            if board.legal_move(d).is_none() {
                assert_eq!(prob, 0.0, "{d:?} is illegal on {board:?}");
            } else {
                assert!(prob > 0.0);
            }
        }
        let total: f32 = p.policy.iter().sum();
        if board.is_game_over() {
            assert_eq!(total, 0.0);
        } else {
            assert!((total - 1.0).abs() < 1e-5, "{total}");
        }
    }
    let cornered_policy = predictions[predictions.len() - 2].policy;
    assert_eq!(cornered_policy[Direction::Up.index() as usize], 0.0);
    assert!(cornered_policy[Direction::Down.index() as usize] > 0.0);
}

/// A batch goes through the dense matrices, one board alone through burn's convolutions.
#[test]
fn batched_and_one_at_a_time_predictions_agree() {
    let net = PolicyValueNet::new(PolicyValueConfig::default(), 2).unwrap();
    let boards = boards(64);
    let batched = net.predict_boards(&boards);
    let convolved = net.predict_convolved(&boards);
    for ((board, together), convolved) in boards.iter().zip(&batched).zip(&convolved) {
        let alone = net.predict_boards(&[*board])[0];
        for other in [together, convolved] {
            for i in 0..4 {
                assert!((alone.policy[i] - other.policy[i]).abs() < 1e-5, "{alone:?} vs {other:?}");
            }
            assert!(
                (alone.value - other.value).abs() <= 1e-3 * alone.value.abs().max(1.0),
                "{alone:?} vs {other:?}"
            );
        }
    }
}

#[test]
fn a_tiny_network_overfits_a_tiny_dataset() {
    let (_, worst_value_error) = overfits(tiny());
    // Values of 0 to 400 points, learned to within 10 points and 10%.
    assert!(worst_value_error < 1.0, "{worst_value_error}");
}

#[test]
fn a_tiny_network_with_a_scalar_value_head_overfits_a_tiny_dataset() {
    let (after, _) = overfits(tiny_scalar());
    assert!(after.value < 0.02, "value loss {after:?}");
}

/// Trains a fresh network of `config` on 32 boards with arbitrary targets until it predicts their
/// moves; returns the losses it ends with and its worst value error, in units of 10 points plus
/// 10% of the target.
fn overfits(config: PolicyValueConfig) -> (zero2048_model::policy_value::Losses, f32) {
    let net = PolicyValueNet::new(config, 3).unwrap();
    let boards = boards(32);
    let samples: Vec<Sample> = boards
        .iter()
        .enumerate()
        .filter(|(_, b)| !b.is_game_over())
        .map(|(i, board)| {
            // A fixed arbitrary target: the first legal move after rotating by i, value by i.
            let legal: Vec<Direction> =
                Direction::ALL.into_iter().filter(|d| board.legal_move(*d).is_some()).collect();
            let mut policy = [0.0; 4];
            policy[legal[i % legal.len()].index() as usize] = 1.0;
            Sample { board: *board, policy, value: 100.0 * (i % 5) as f32 }
        })
        .collect();
    let optimizer = OptimizerConfig {
        learning_rate: 3e-3,
        warmup_steps: 5,
        decay_steps: 1000,
        ..OptimizerConfig::default()
    };
    let mut trainer = Trainer::<CpuTrainBackend>::new(&net, optimizer, Default::default()).unwrap();
    let before = trainer.evaluate(&samples);
    for _ in 0..300 {
        trainer.step(&samples);
    }
    let after = trainer.evaluate(&samples);
    assert!(after.policy < 0.1, "policy loss {before:?} → {after:?}");
    assert!(after.value < before.value / 2.0, "value loss {before:?} → {after:?}");
    // The snapshot predicts what was learned.
    let learned = trainer.snapshot().unwrap();
    let predictions = learned.predict_boards(&samples.iter().map(|s| s.board).collect::<Vec<_>>());
    let mut worst_value_error = 0.0f32;
    for (sample, p) in samples.iter().zip(&predictions) {
        let target = sample.policy.iter().position(|&x| x == 1.0).unwrap();
        assert!(p.policy[target] > 0.8, "{p:?} for {sample:?}");
        worst_value_error =
            worst_value_error.max((p.value - sample.value).abs() / (10.0 + 0.1 * sample.value));
    }
    (after, worst_value_error)
}

/// A trainer rebuilt from a saved network and its saved optimiser state continues exactly as the
/// original would have: same step count, same next update (AdamW's moments came back).
#[test]
fn a_restored_optimizer_continues_where_it_stopped() {
    let net = PolicyValueNet::new(tiny(), 4).unwrap();
    let samples: Vec<Sample> = boards(24)
        .into_iter()
        .filter(|b| !b.is_game_over())
        .enumerate()
        .map(|(i, board)| {
            let legal = Direction::ALL.into_iter().find(|d| board.legal_move(*d).is_some()).unwrap();
            let mut policy = [0.0; 4];
            policy[legal.index() as usize] = 1.0;
            Sample { board, policy, value: 50.0 * (i % 3) as f32 }
        })
        .collect();
    let optimizer = OptimizerConfig {
        learning_rate: 3e-3,
        warmup_steps: 4,
        decay_steps: 100,
        ..OptimizerConfig::default()
    };
    let mut original = Trainer::<CpuTrainBackend>::new(&net, optimizer, Default::default()).unwrap();
    for _ in 0..10 {
        original.step(&samples);
    }
    let state = original.optimizer_state().unwrap();
    let saved = original.snapshot().unwrap();

    let mut restored = Trainer::<CpuTrainBackend>::new(&saved, optimizer, Default::default()).unwrap();
    restored.restore_optimizer_state(&state).unwrap();
    assert_eq!(restored.steps(), 10);
    let mut fresh = Trainer::<CpuTrainBackend>::new(&saved, optimizer, Default::default()).unwrap();
    original.step(&samples);
    restored.step(&samples);
    fresh.step(&samples);
    let probe: Vec<Board> = samples.iter().map(|s| s.board).collect();
    let value = |t: &Trainer<CpuTrainBackend>| -> Vec<f32> {
        t.snapshot().unwrap().predict_boards(&probe).iter().map(|p| p.value).collect()
    };
    let (a, b, c) = (value(&original), value(&restored), value(&fresh));
    let differ = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
    assert!(differ(&a, &b) < 1e-4, "the restored trainer's step differs by {}", differ(&a, &b));
    assert!(differ(&a, &c) > 1e-3, "a fresh optimiser should step differently ({})", differ(&a, &c));

    assert!(restored.restore_optimizer_state(&state[..5]).is_err());
}

#[test]
fn weights_round_trip_and_wrong_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let net = PolicyValueNet::new(PolicyValueConfig::default(), 4).unwrap();
    let path = dir.path().join("r1.safetensors");
    let mut extra = BTreeMap::new();
    extra.insert("games_trained".to_string(), "12".to_string());
    net.save(&path, 7, &extra).unwrap();
    let (loaded, info) = PolicyValueNet::load(&path).unwrap();
    assert_eq!(info.revision, 7);
    assert_eq!(info.config, PolicyValueConfig::default());
    assert_eq!(info.extra.get("games_trained").map(String::as_str), Some("12"));
    let boards = boards(16);
    assert_eq!(
        net.predict_boards(&boards),
        loaded.predict_boards(&boards),
        "weights changed in the round trip"
    );

    let refused = |bytes: Vec<u8>| PolicyValueNet::from_bytes(bytes, Path::new("x")).unwrap_err();
    let bytes = std::fs::read(&path).unwrap();
    // Metadata that names another shape than the tensors have.
    let err = refused(edit_header(&bytes, "\"filters\":\"32\"", "\"filters\":\"16\""));
    assert!(matches!(&err, WeightsFileError::Invalid { check: "shape", .. }), "{err}");
    // Another kind of model.
    let err = refused(edit_header(&bytes, "\"kind\":\"policy_value\"", "\"kind\":\"ntuple______\""));
    assert!(err.to_string().contains("`ntuple______` model"), "{err}");
    // Truncated and garbage files.
    assert!(matches!(refused(bytes[..bytes.len() / 2].to_vec()), WeightsFileError::Invalid { .. }));
    assert!(matches!(
        refused(b"not a weights file".to_vec()),
        WeightsFileError::Invalid { check: "header", .. }
    ));
    // A weight that is not a number: the last four bytes of the data are an f32.
    let mut nan = bytes.clone();
    let end = nan.len();
    nan[end - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    let err = refused(nan);
    assert!(matches!(&err, WeightsFileError::Invalid { check: "values", .. }), "{err}");
    // A network of another shape saved honestly loads as that shape.
    let small = PolicyValueNet::new(tiny(), 5).unwrap();
    let (loaded, _) =
        PolicyValueNet::from_bytes(small.to_bytes(1, &BTreeMap::new()).unwrap(), Path::new("s")).unwrap();
    assert_eq!(loaded.config(), &tiny());
    // The categorical head's bins are part of the shape the tensors must have.
    let small_bytes = small.to_bytes(1, &BTreeMap::new()).unwrap();
    let err = refused(edit_header(&small_bytes, "\"value_bins\":\"601\"", "\"value_bins\":\"602\""));
    assert!(matches!(&err, WeightsFileError::Invalid { check: "shape", .. }), "{err}");
    let err = refused(edit_header(&small_bytes, "\"value_bins\":\"601\"", "\"value_bins\":\"001\""));
    assert!(err.to_string().contains("value_bins"), "{err}");
}

/// Files written before the categorical head say nothing of value bins: they hold a scalar
/// head and load as one.
#[test]
fn a_file_that_names_no_value_bins_has_a_scalar_head() {
    let scalar = PolicyValueNet::new(tiny_scalar(), 6).unwrap();
    let bytes = scalar.to_bytes(3, &BTreeMap::new()).unwrap();
    let older = edit_header(&bytes, "\"value_bins\":\"0\"", "\"value_xxxx\":\"0\"");
    let (loaded, info) = PolicyValueNet::from_bytes(older, Path::new("old")).unwrap();
    assert_eq!(info.config, tiny_scalar());
    let boards = boards(8);
    assert_eq!(scalar.predict_boards(&boards), loaded.predict_boards(&boards));
    // A categorical file that lost its bins is refused by its shapes, not misread.
    let categorical = PolicyValueNet::new(tiny(), 6).unwrap().to_bytes(3, &BTreeMap::new()).unwrap();
    let err = PolicyValueNet::from_bytes(
        edit_header(&categorical, "\"value_bins\":\"601\"", "\"value_xxxx\":\"601\""),
        Path::new("x"),
    )
    .unwrap_err();
    assert!(matches!(&err, WeightsFileError::Invalid { check: "shape", .. }), "{err}");
}

/// The file with `from` replaced by `to` (same length) in its JSON header.
fn edit_header(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    assert!(header.contains(from), "{from} not in {header}");
    let mut out = bytes[..8].to_vec();
    out.extend_from_slice(header.replacen(from, to, 1).as_bytes());
    out.extend_from_slice(&bytes[8 + header_len..]);
    out
}
