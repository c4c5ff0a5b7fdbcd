//! The n-tuple network and its weights files.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use zero2048_game::{Board, Symmetry, rng_from_seed};
use zero2048_model::weights_file::{self, WeightsFileError};
use zero2048_model::{NTupleConfig, NTupleNetwork};
use zero2048_search::Evaluator;

/// A small network with pseudo-random weights on every table.
fn trained_small(seed: u64) -> NTupleNetwork {
    trained_small_staged(&NTupleConfig::small_4x4(), seed)
}

/// The value computed the plain way: every symmetry of the board, every tuple, cell by cell.
fn plain_value(network: &NTupleNetwork, board: Board) -> f32 {
    let mut value = 0.0;
    for s in Symmetry::ALL {
        let b = s.apply(board);
        for (t, cells) in network.config().tuples.iter().enumerate() {
            let index = cells
                .iter()
                .enumerate()
                .map(|(k, &c)| (b.get(c as usize) as usize) << (4 * k))
                .sum::<usize>();
            value += network.tables()[t].get(index);
        }
    }
    value
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn value_is_the_plain_sum_and_symmetric(raw in any::<u64>()) {
        let network = trained_small(3);
        let board = Board::from_raw(raw);
        let value = network.value(board);
        let plain = plain_value(&network, board);
        prop_assert!((value - plain).abs() <= 1e-3 * plain.abs().max(1.0), "{value} vs {plain}");
        for s in Symmetry::ALL {
            prop_assert!((network.value(s.apply(board)) - value).abs() <= 1e-3 * value.abs().max(1.0));
        }
    }
}

#[test]
fn add_moves_every_feature_of_the_board() {
    let network = NTupleNetwork::zeroed(NTupleConfig::small_4x4()).unwrap();
    let board: Board = "2 4 8 16 0 2 0 0 0 0 4 0 0 0 0 2".parse().unwrap();
    network.add(board, 0.5);
    // A weight that k symmetric features share is moved k times and read k times: k² × step.
    let mut multiplicity: HashMap<(u32, u32), u32> = HashMap::new();
    network.for_each_feature(board, |f| *multiplicity.entry((f.table, f.index)).or_default() += 1);
    assert_eq!(multiplicity.values().sum::<u32>() as usize, network.feature_count());
    let expected: f32 = multiplicity.values().map(|&k| 0.5 * (k * k) as f32).sum();
    assert_eq!(network.value(board), expected);
    assert_eq!(network.evaluate(board), network.value(board));
    assert_eq!(network.reward_weight(), 1.0);
}

#[test]
fn the_standard_network_is_four_six_tuples_of_256_mib() {
    let config = NTupleConfig::standard_4x6();
    assert_eq!(config.weight_count() * 4, 256 << 20);
    for bad in [
        NTupleConfig { tuples: vec![], stages: 1, stage_tile: 14 },
        NTupleConfig { tuples: vec![vec![0, 16]], stages: 1, stage_tile: 14 },
        NTupleConfig { tuples: vec![vec![1, 1]], stages: 1, stage_tile: 14 },
        NTupleConfig { tuples: vec![vec![0; 9]], stages: 1, stage_tile: 14 },
        NTupleConfig { tuples: vec![vec![0]], stages: 0, stage_tile: 14 },
    ] {
        assert!(NTupleNetwork::zeroed(bad).is_err());
    }
}

#[test]
fn stages_split_the_weights_by_largest_tile() {
    let config = NTupleConfig { stages: 2, stage_tile: 11, ..NTupleConfig::small_4x4() };
    let network = NTupleNetwork::zeroed(config).unwrap();
    let early: Board = "1024 0 0 0 0 0 0 0 0 0 0 0 0 0 0 2".parse().unwrap();
    let late: Board = "2048 0 0 0 0 0 0 0 0 0 0 0 0 0 0 2".parse().unwrap();
    assert_eq!((network.stage(early), network.stage(late)), (0, 1));
    network.add(late, 1.0);
    assert_eq!(network.value(early), 0.0, "stage 0 weights untouched");
    assert!(network.value(late) > 0.0);
}

#[test]
fn a_closed_stage_is_valued_by_the_one_below_and_opens_as_its_copy() {
    let config = NTupleConfig { stages: 3, stage_tile: 11, ..NTupleConfig::small_4x4() };
    let network = NTupleNetwork::zeroed(config.clone()).unwrap();
    network.close_later_stages();
    let early: Board = "1024 2 0 0 0 0 0 0 0 0 0 0 0 0 0 2".parse().unwrap();
    let late: Board = "2048 2 0 0 0 0 0 0 0 0 0 0 0 0 0 2".parse().unwrap();
    let later: Board = "4096 2 0 0 0 0 0 0 0 0 0 0 0 0 0 2".parse().unwrap();
    assert_eq!((network.reached_stage(late), network.reached_stage(later)), (1, 2));
    assert_eq!((network.stage(late), network.stage(later)), (0, 0), "stage 0 values every board");
    network.add(late, 1.0);
    network.add(early, 0.25);
    // One stage before it opens: the same values as a network of one stage learning the same.
    let single = NTupleNetwork::zeroed(NTupleConfig { stages: 1, ..config }).unwrap();
    single.add(late, 1.0);
    single.add(early, 0.25);
    for board in [early, late, later] {
        assert_eq!(network.value(board), single.value(board));
    }
    let before = (network.value(late), network.value(later));
    assert!(network.open_next_stage());
    assert_eq!(network.open_stages(), 2);
    assert_eq!((network.stage(late), network.stage(later)), (1, 1));
    assert_eq!((network.value(late), network.value(later)), before, "the stage opens as a copy");
    network.add(late, 1.0);
    assert_eq!(network.value(early), single.value(early), "stage 0 no longer learns stage 1's boards");
    assert!(network.value(late) > before.0);
    let later_before = network.value(later);
    assert!(network.open_next_stage());
    assert!(!network.open_next_stage(), "every stage is open");
    assert_eq!(network.stage(later), 2);
    assert_eq!(network.value(later), later_before, "stage 2 opens as a copy of stage 1");
}

#[test]
fn a_file_of_a_network_with_closed_stages_values_every_board_as_the_network_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opening.safetensors");
    let config = NTupleConfig { stages: 2, stage_tile: 11, ..NTupleConfig::small_4x4() };
    let network = NTupleNetwork::zeroed(config.clone()).unwrap();
    network.close_later_stages();
    for (t, table) in network.tables().iter().take(config.tuples.len()).enumerate() {
        for index in (0..table.len()).step_by(89 + t) {
            table.set(index, (t * 1000 + index) as f32 * 0.25 - 3.0);
        }
    }
    weights_file::save(&network, &path, 5, &BTreeMap::new()).unwrap();
    let (loaded, info) = weights_file::load(&path, Some(&config)).unwrap();
    assert_eq!(info.extra.get(weights_file::OPEN_STAGES).map(String::as_str), Some("1"));
    assert_eq!(loaded.open_stages(), 1, "a resumed learner keeps its closed stages");
    // A reader that takes every stage as open values every board alike: the closed stage's
    // place holds the open one's tables.
    let all_open = loaded.try_clone().unwrap();
    all_open.set_open_stages(2).unwrap();
    let mut rng = rng_from_seed(11);
    for _ in 0..2_000 {
        let board = Board::from_raw(rand_core::Rng::next_u64(&mut rng));
        assert_eq!(loaded.value(board), network.value(board));
        assert_eq!(all_open.value(board), network.value(board), "{board:?}");
    }
    // The mean of this file and one of a network with both stages open and learned apart is
    // the mean of their values, board by board.
    let opened = dir.path().join("opened.safetensors");
    let learned_apart = trained_small_staged(&config, 21);
    weights_file::save(&learned_apart, &opened, 6, &BTreeMap::new()).unwrap();
    let (mean, _) = weights_file::average(&[&path, &opened]).unwrap();
    for _ in 0..2_000 {
        let board = Board::from_raw(rand_core::Rng::next_u64(&mut rng));
        let plain = (network.value(board) + learned_apart.value(board)) / 2.0;
        assert!((mean.value(board) - plain).abs() <= 1e-3 * plain.abs().max(1.0), "{board:?}");
    }
    // A count of open stages the network cannot have is refused, naming the key.
    let bytes = std::fs::read(&path).unwrap();
    let written = b"\"open_stages\":\"1\"";
    let at = bytes.windows(written.len()).position(|w| w == written).expect("the count in the header");
    for bad in [b'0', b'3', b'x'] {
        let mut damaged = bytes.clone();
        damaged[at + written.len() - 2] = bad;
        std::fs::write(&path, &damaged).unwrap();
        expect_invalid(weights_file::load(&path, None), "open_stages");
    }
}

/// A network of `config` with pseudo-random weights in every stage, all open.
fn trained_small_staged(config: &NTupleConfig, seed: u64) -> NTupleNetwork {
    let network = NTupleNetwork::zeroed(config.clone()).unwrap();
    let mut rng = rng_from_seed(seed);
    for table in network.tables() {
        for i in 0..table.len() {
            table.set(i, (rand_core::Rng::next_u32(&mut rng) % 2001) as f32 - 1000.0);
        }
    }
    network
}

#[test]
fn save_and_load_are_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let network = trained_small(9);
    let mut extra = BTreeMap::new();
    extra.insert("games_trained".to_string(), "123".to_string());
    weights_file::save(&network, &path, 42, &extra).unwrap();
    let (loaded, info) = weights_file::load(&path, Some(network.config())).unwrap();
    assert_eq!(info.revision, 42);
    assert_eq!(info.extra.get("games_trained").map(String::as_str), Some("123"));
    for (a, b) in network.tables().iter().zip(loaded.tables()) {
        assert_eq!(a.to_le_bytes(), b.to_le_bytes());
    }
    // Any safetensors reader sees the same tensors and the design's metadata.
    let bytes = std::fs::read(&path).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = metadata.metadata().as_ref().unwrap();
    assert_eq!(meta["kind"], "ntuple");
    assert_eq!(meta["format_version"], "1");
    assert_eq!(meta["revision"], "42");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(tensors.tensor("stage0.tuple2").unwrap().shape(), &[65536]);
    for (t, table) in network.tables().iter().enumerate() {
        let tensor = tensors.tensor(&format!("stage0.tuple{t}")).unwrap();
        assert_eq!(tensor.dtype(), safetensors::Dtype::F32);
        assert_eq!(tensor.data(), &table.to_le_bytes()[..], "tuple {t}'s bytes as written");
    }
}

#[test]
fn a_staged_network_is_written_table_by_table_where_its_header_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("staged.safetensors");
    let network = NTupleNetwork::zeroed(NTupleConfig { stages: 2, ..NTupleConfig::small_4x4() }).unwrap();
    for (i, table) in network.tables().iter().enumerate() {
        for index in (0..table.len()).step_by(97 + i) {
            table.set(index, (i * 1000 + index) as f32 * 0.5 - 7.0);
        }
    }
    weights_file::save(&network, &path, 3, &BTreeMap::new()).unwrap();
    // Saving again over the file replaces it whole.
    weights_file::save(&network, &path, 4, &BTreeMap::new()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(header_len % 8, 0, "the header is padded to 8 bytes");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(tensors.len(), 8);
    let tuples = network.config().tuples.len();
    for (i, table) in network.tables().iter().enumerate() {
        let tensor = tensors.tensor(&format!("stage{}.tuple{}", i / tuples, i % tuples)).unwrap();
        assert_eq!(tensor.data(), &table.to_le_bytes()[..], "table {i}");
    }
    let (loaded, info) = weights_file::load(&path, None).unwrap();
    assert_eq!(info.revision, 4);
    for (a, b) in network.tables().iter().zip(loaded.tables()) {
        assert_eq!(a.to_le_bytes(), b.to_le_bytes());
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("staged.safetensors")], "no temporary file is left");
}

fn expect_invalid(result: Result<(NTupleNetwork, weights_file::WeightsInfo), WeightsFileError>, check: &str) {
    match result {
        Err(WeightsFileError::Invalid { check: c, path, message }) => {
            assert_eq!(c, check, "{message}");
            assert!(!path.as_os_str().is_empty());
        }
        Err(other) => panic!("expected a `{check}` failure, got {other}"),
        Ok(_) => panic!("expected a `{check}` failure, but the file loaded"),
    }
}

#[test]
fn bad_files_are_refused_naming_the_file_and_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    let network = trained_small(1);
    weights_file::save(&network, &good, 1, &BTreeMap::new()).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    // Another shape than expected.
    expect_invalid(weights_file::load(&good, Some(&NTupleConfig::standard_4x6())), "tuples");

    // Truncated: the last tensor runs past the end.
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 1000]).unwrap();
    expect_invalid(weights_file::load(&truncated, None), "size");

    // Not safetensors at all.
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not a weights file").unwrap();
    expect_invalid(weights_file::load(&garbage, None), "header");

    // Another model kind, written by a generic safetensors writer.
    let other = dir.path().join("policy.safetensors");
    let data = vec![0u8; 16];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &data).unwrap();
    let mut meta = HashMap::new();
    meta.insert("kind".to_string(), "policy_value".to_string());
    meta.insert("format_version".to_string(), "1".to_string());
    safetensors::serialize_to_file(vec![("w", view)], Some(meta), &other).unwrap();
    expect_invalid(weights_file::load(&other, None), "kind");

    // A weight that is not a number.
    let nan = trained_small(2);
    nan.tables()[0].set(7, f32::NAN);
    let nan_path = dir.path().join("nan.safetensors");
    weights_file::save(&nan, &nan_path, 1, &BTreeMap::new()).unwrap();
    expect_invalid(weights_file::load(&nan_path, None), "values");

    let message = weights_file::load(&garbage, None).err().unwrap().to_string();
    assert!(message.contains("garbage.safetensors") && message.contains("header"), "{message}");
}

#[test]
fn an_average_is_the_weight_by_weight_mean_of_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let networks = [trained_small(3), trained_small(4), trained_small(5)];
    let paths: Vec<_> = (0..3).map(|i| dir.path().join(format!("r{i}.safetensors"))).collect();
    for (i, (network, path)) in networks.iter().zip(&paths).enumerate() {
        let mut extra = BTreeMap::new();
        extra.insert("games".to_string(), format!("{}", 1000 * (i + 1)));
        weights_file::save(network, path, 10 + i as u64, &extra).unwrap();
    }
    // Out of revision order: the newest input's metadata wins whatever the order.
    let order = [paths[1].as_path(), paths[2].as_path(), paths[0].as_path()];
    let (mean, info) = weights_file::average(&order).unwrap();
    assert_eq!(info.revision, 12);
    assert_eq!(info.extra["games"], "3000");
    assert_eq!(info.extra[weights_file::AVERAGED_REVISIONS], "11,12,10");
    for (t, table) in mean.tables().iter().enumerate() {
        for i in 0..table.len() {
            let plain: f32 = networks.iter().map(|n| n.tables()[t].get(i)).sum::<f32>() / 3.0;
            assert!(
                (table.get(i) - plain).abs() <= 1e-3,
                "table {t} weight {i}: {} against {plain}",
                table.get(i)
            );
        }
    }
    // One file is its own average, bit for bit.
    let (alone, _) = weights_file::average(&[paths[0].as_path()]).unwrap();
    for (a, b) in alone.tables().iter().zip(networks[0].tables()) {
        assert_eq!(a.to_le_bytes(), b.to_le_bytes());
    }
}

#[test]
fn blending_a_file_with_the_previous_one_equals_blending_the_networks() {
    let dir = tempfile::tempdir().unwrap();
    let (before, learned) = (trained_small(6), trained_small(7));
    let (previous, next) = (dir.path().join("r1.safetensors"), dir.path().join("r2.safetensors"));
    weights_file::save(&before, &previous, 1, &BTreeMap::new()).unwrap();
    let mut extra = BTreeMap::new();
    extra.insert("games_trained".to_string(), "2000".to_string());
    weights_file::save(&learned, &next, 2, &extra).unwrap();
    weights_file::blend_with_previous(&next, &previous, 0.375).unwrap();
    // Bit for bit what the in-memory step gives, and the file keeps its own metadata.
    before.blend_towards(&learned, 0.375).unwrap();
    let (blended, info) = weights_file::load(&next, None).unwrap();
    assert_eq!((info.revision, info.extra["games_trained"].as_str()), (2, "2000"));
    for (a, b) in blended.tables().iter().zip(before.tables()) {
        assert_eq!(a.to_le_bytes(), b.to_le_bytes());
    }
    // A previous file of another shape, or with a weight that is not finite, is refused by name.
    let other = dir.path().join("other.safetensors");
    let staged = NTupleNetwork::zeroed(NTupleConfig { stages: 2, ..NTupleConfig::small_4x4() }).unwrap();
    weights_file::save(&staged, &other, 1, &BTreeMap::new()).unwrap();
    let bad = dir.path().join("bad.safetensors");
    let nan = trained_small(8);
    nan.tables()[0].set(3, f32::NAN);
    weights_file::save(&nan, &bad, 1, &BTreeMap::new()).unwrap();
    for wrong in [&other, &bad] {
        let error = weights_file::blend_with_previous(&next, wrong, 0.5).unwrap_err().to_string();
        assert!(error.contains(&wrong.display().to_string()), "{error}");
    }
}

#[test]
fn an_average_refuses_no_files_a_bad_file_and_another_shape() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    weights_file::save(&trained_small(1), &good, 1, &BTreeMap::new()).unwrap();
    let other = dir.path().join("other.safetensors");
    let small = NTupleNetwork::zeroed(NTupleConfig { stages: 2, ..NTupleConfig::small_4x4() }).unwrap();
    weights_file::save(&small, &other, 2, &BTreeMap::new()).unwrap();
    let nan = trained_small(2);
    nan.tables()[1].set(3, f32::INFINITY);
    let nan_path = dir.path().join("nan.safetensors");
    weights_file::save(&nan, &nan_path, 3, &BTreeMap::new()).unwrap();

    let none = weights_file::average(&[]).err().unwrap().to_string();
    assert!(none.contains("no weights files"), "{none}");
    expect_invalid(weights_file::average(&[good.as_path(), other.as_path()]), "tuples");
    expect_invalid(weights_file::average(&[good.as_path(), nan_path.as_path()]), "values");
}
