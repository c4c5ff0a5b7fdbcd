//! A setting reaches local and remote play identically: whatever the configuration says, the play
//! spec a worker parses from the published latest record is the one the run's own threads play.

use std::sync::Arc;

use proptest::prelude::*;
use zero2048_model::NTupleConfig;
use zero2048_protocol::{LatestRecord, RestartSpec};
use zero2048_storage::{Config, StorageAdapter};
use zero2048_train::{TrainConfig, TrainingRun};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_published_play_spec_is_the_local_one(
        depth in 1u32..=4,
        four in 0.0f64..=1.0,
        restart in proptest::option::of((2u32..100, 0.01f64..0.99)),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let config = TrainConfig {
            network: NTupleConfig::small_4x4(),
            selfplay_depth: depth,
            four_probability: four,
            restart: restart.map(|(min_moves, at)| RestartSpec { min_moves, at, at_max: None, at_tile: None }),
            ..TrainConfig::default()
        };
        let mut storage = Config::default();
        storage.storage.weights_dir = dir.path().join("weights");
        let adapter = Arc::new(runtime.block_on(StorageAdapter::from_config(&storage)).unwrap());
        let mut run =
            TrainingRun::open(config.clone(), adapter, runtime.handle().clone(), &dir.path().join("run.db"), &dir.path().join("run.db").into(), None).unwrap();
        run.publish_initial().unwrap();
        // What a worker reads: the record's bytes, parsed with the protocol's rules.
        let bytes = std::fs::read(dir.path().join("weights/latest.json")).unwrap();
        let record = LatestRecord::from_json(&bytes).unwrap();
        prop_assert_eq!(&record.spec.play, &config.play_spec());
        prop_assert_eq!(record.spec.play.spawn.four_probability(), four);
        prop_assert_eq!(record.spec.play.restart, config.restart);
    }
}
