//! The policy-value learner: its targets from searched games, and its training steps.

use std::sync::atomic::AtomicBool;

use zero2048_game::{GameRecord, SpawnRule};
use zero2048_model::{PolicyValueConfig, PolicyValueNet};
use zero2048_search::{MctsConfig, UniformPolicy};
use zero2048_selfplay::{BatchedPlay, StartedGame};
use zero2048_train::{RewardKind, ZeroConfig, ZeroLearner};

fn searched_games(n: u64) -> Vec<GameRecord> {
    let config = MctsConfig { simulations: 4, ..MctsConfig::default() };
    let mut next = 0;
    let mut games = Vec::new();
    BatchedPlay::new(config, SpawnRule::STANDARD, 8).run(
        &UniformPolicy { value: 100.0 },
        Vec::new(),
        || {
            next += 1;
            (next <= n).then(|| StartedGame {
                game: zero2048_game::Game::new(next, SpawnRule::STANDARD),
                seed: next,
                tag: (),
            })
        },
        |g| games.push(g.record),
        &AtomicBool::new(false),
    );
    games
}

#[test]
fn targets_are_visit_distributions_and_n_step_bootstrapped_returns() {
    let record = &searched_games(1)[0];
    let config = ZeroConfig { n_step: 5, discount: 0.9, ..ZeroConfig::default() };
    let samples = ZeroLearner::samples(record, &config).unwrap();
    let steps: Vec<_> = record.replay_steps().map(Result::unwrap).collect();
    assert_eq!(samples.len(), steps.len());
    for (t, sample) in samples.iter().enumerate() {
        assert_eq!(sample.board, steps[t].before);
        let total: u32 = record.search[t].visits.iter().sum();
        for i in 0..4 {
            assert_eq!(sample.policy[i], record.search[t].visits[i] as f32 / total as f32);
        }
        let mut expected = 0.0f32;
        for k in 0..5 {
            if t + k < steps.len() {
                expected += 0.9f32.powi(k as i32) * steps[t + k].reward as f32;
            }
        }
        if t + 5 < steps.len() {
            expected += 0.9f32.powi(5) * record.search[t + 5].root_value;
        }
        assert!(
            (sample.value - expected).abs() <= 1e-3 * expected.abs().max(1.0),
            "step {t}: {} vs {expected}",
            sample.value
        );
    }
    // The last move's target is its own reward: nothing follows a lost board.
    assert_eq!(samples.last().unwrap().value, steps.last().unwrap().reward as f32);
    // Other rewards, without bootstrapping (n_step past the end, no discount): the sum of
    // log2(1 + points), and the number of times the largest tile grew.
    let whole = ZeroConfig { n_step: 100_000, discount: 1.0, ..config };
    let log = ZeroLearner::samples(record, &ZeroConfig { reward: RewardKind::LogScore, ..whole }).unwrap();
    let expected: f32 = steps.iter().map(|s| (1.0 + s.reward as f32).log2()).sum();
    assert!((log[0].value - expected).abs() < 1e-2, "{} vs {expected}", log[0].value);
    let tiles = ZeroLearner::samples(record, &ZeroConfig { reward: RewardKind::MaxTile, ..whole }).unwrap();
    let grew = steps.iter().filter(|s| s.after.max_tile() > s.before.max_tile()).count();
    assert_eq!(tiles[0].value, grew as f32);
    assert!(grew > 0);
    // A game without statistics cannot be learned from.
    let bare = GameRecord { search: Vec::new(), ..record.clone() };
    assert!(ZeroLearner::samples(&bare, &config).is_err());
}

#[test]
fn the_learner_steps_as_positions_arrive_and_reports_held_out_loss() {
    let net = PolicyValueNet::new(
        PolicyValueConfig { filters: 8, blocks: 1, se_ratio: 4, value_hidden: 16, ..Default::default() },
        1,
    )
    .unwrap();
    let config =
        ZeroConfig { batch_size: 32, replay_positions: 100_000, sample_reuse: 2.0, ..ZeroConfig::default() };
    let mut learner = ZeroLearner::new(&net, config).unwrap();
    let games = searched_games(40);
    let mut positions = 0;
    for game in &games {
        let learned = learner.learn(game).unwrap();
        assert_eq!(learned.moves as usize, game.steps.len());
        positions += game.steps.len();
    }
    let report = learner.report();
    assert!(report.replay_positions > 0 && report.replay_positions <= positions);
    // About reuse × positions / batch steps (held-out games add none).
    let expected = report.replay_positions as f64 * 2.0 / 32.0;
    assert!(
        (report.steps as f64 - expected).abs() <= 1.0 + 0.01 * expected,
        "{report:?}, expected ≈{expected}"
    );
    assert!(report.train.policy > 0.0 && report.train.value > 0.0, "{report:?}");
    assert!(learner.snapshot().is_ok());
    assert!(ZeroLearner::new(&net, ZeroConfig { batch_size: 0, ..config }).is_err());
}
