//! The `train:` section: everything a run is configured with, its one validation, and the specs
//! the run builds from it for every player ([`TrainConfig::play_spec`], [`TrainConfig::run_spec`]).

use serde::{Deserialize, Serialize};
use zero2048_game::SpawnRule;
use zero2048_model::{NTupleConfig, PolicyValueConfig};
use zero2048_protocol::{
    ModelKind, ModelSpec, PlaySpec, RestartSpec, RunSpec, SearchSpec, check_depth, check_four_probability,
    check_parallel_games,
};
use zero2048_search::{MctsConfig, RootRule};

use crate::evaluation::EvalConfig;
use crate::learner::TdConfig;
use crate::zero::ZeroConfig;

/// The `restart:` keys as a configuration source gives them. The wire's [`RestartSpec`] needs
/// both fields (a published spec is complete); a configuration names only what it changes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartKeys {
    min_moves: Option<u32>,
    at: Option<f64>,
    at_max: Option<f64>,
    /// Absent: the default's; `null`: none (fractions only); a number: that tile.
    #[serde(default, deserialize_with = "given_or_null")]
    at_tile: Option<Option<u8>>,
}

/// A key that may be given as `null` on purpose: `Some(None)`, where an absent key is `None`.
fn given_or_null<'de, D: serde::Deserializer<'de>>(from: D) -> Result<Option<Option<u8>>, D::Error> {
    Option::<u8>::deserialize(from).map(Some)
}

/// `restart:` with each key that is not given at its default (`null`: no restart).
fn restart_keys<'de, D: serde::Deserializer<'de>>(from: D) -> Result<Option<RestartSpec>, D::Error> {
    let keys: Option<RestartKeys> = Option::deserialize(from)?;
    let default = RestartSpec::default();
    Ok(keys.map(|keys| RestartSpec {
        min_moves: keys.min_moves.unwrap_or(default.min_moves),
        at: keys.at.unwrap_or(default.at),
        // `at` alone names a fixed branch point: the default's range does not outlive it.
        at_max: match (keys.at, keys.at_max) {
            (_, Some(at_max)) => Some(at_max),
            (Some(_), None) => None,
            (None, None) => default.at_max,
        },
        at_tile: keys.at_tile.unwrap_or(default.at_tile),
    }))
}

/// The `network:` keys as a configuration source gives them: a key not given keeps the default
/// network's (`network: {stages: 3}` is the default shape with three stages).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkKeys {
    tuples: Option<Vec<Vec<u8>>>,
    stages: Option<u8>,
    stage_tile: Option<u8>,
}

/// `network:` with each key that is not given at the default network's.
fn network_keys<'de, D: serde::Deserializer<'de>>(from: D) -> Result<NTupleConfig, D::Error> {
    let keys = NetworkKeys::deserialize(from)?;
    let default = TrainConfig::default().network;
    Ok(NTupleConfig {
        tuples: keys.tuples.unwrap_or(default.tuples),
        stages: keys.stages.unwrap_or(default.stages),
        stage_tile: keys.stage_tile.unwrap_or(default.stage_tile),
    })
}

/// Everything a run is configured with. Every key is optional; the defaults are the recipe that
/// measured best for an hour of local training (BENCHMARKS.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// The model this run trains (a resumed run must keep its kind).
    pub model: ModelKind,
    /// The n-tuple network's shape (for a new run; a resumed run keeps its own). Any key may be
    /// given alone (`ZERO2048_TRAIN__NETWORK__STAGES=2`): the others keep the default shape's.
    #[serde(deserialize_with = "network_keys")]
    pub network: NTupleConfig,
    /// The policy-value network's shape (for a new policy-value run).
    pub policy_value: PolicyValueConfig,
    /// The search of policy-value self-play and evaluation (sent to workers).
    pub mcts: MctsConfig,
    /// How the policy-value network learns.
    pub zero: ZeroConfig,
    /// Games each MCTS self-play thread plays at once (the network's batch size).
    pub mcts_parallel_games: u32,
    /// Games of each policy-value evaluation (MCTS games are slower than the n-tuple's).
    pub mcts_evaluation_games: usize,
    /// The TD learner.
    pub td: TdConfig,
    /// Self-play threads of the local run, each playing and learning (0 = one per core).
    pub selfplay_threads: usize,
    /// Threads learning the queue of uploaded games (n-tuple runs; 0 = one per core).
    pub learner_threads: usize,
    /// Own moves searched per self-play move, by local threads and (through the latest record)
    /// by every worker: 1 = greedy on the learned value, the TD standard.
    pub selfplay_depth: u32,
    /// The restart strategy for n-tuple self-play (`null`: none). Policy-value runs always play
    /// whole games: their published play spec carries no restart whatever this says. Either key
    /// may be given alone (`restart: {at: 0.85}`, or `ZERO2048_TRAIN__RESTART__AT=0.85`): the
    /// other keeps its default. `at_max` draws each branch point from `at..=at_max` (by default
    /// 0.5..=0.85; `at` given without `at_max` is a fixed branch point); `at_tile` (14 by
    /// default, `null` for none) branches a game that made a new largest tile of `2^at_tile` or
    /// more where it made it.
    #[serde(deserialize_with = "restart_keys")]
    pub restart: Option<RestartSpec>,
    /// The probability that a spawned tile is a 4: the game every player of the run plays.
    pub four_probability: f64,
    /// Run seed.
    pub seed: u64,
    /// N-tuple runs: each revision publishes a running mean of the weights learned so far, in
    /// which the weights as they stood after g games count in proportion to g^power (`null`:
    /// publish the learned weights themselves). Learning goes on from the learned weights, never
    /// from the mean; the mean of a stretch of constant-step TD plays more strongly than its last
    /// point, and power 1 leans it towards the recent so it keeps up as the run goes on.
    pub published_mean_power: Option<u32>,
    /// Publish a revision after this many games learned... Each revision costs the learning
    /// about 18 s of both cores (written, hashed, compressed, patched, evaluated): a late 8×6 run
    /// plays 100,000 games in about five minutes, so the clock below mostly sets the pace.
    pub revision_every_games: u64,
    /// ...or this many seconds, whichever comes first.
    pub revision_every_seconds: f64,
    /// Policy-value runs: hand local self-play a fresh snapshot of the learner's network every
    /// this many games (n-tuple self-play plays the learner's own network).
    pub selfplay_sync_games: u64,
    /// Evaluate every this many revisions (0 = never), and always the last one.
    pub evaluate_every_revisions: u64,
    /// The evaluation suite.
    pub evaluation: EvalConfig,
    /// Seconds the latest record stays valid.
    pub deadline_seconds: u64,
    /// Games from this many latest revisions are accepted (the latest record lists them)...
    pub accepted_revisions_window: u64,
    /// ...and from any revision superseded less than this many seconds ago, so a fleet's games
    /// in flight are not thrown away when revisions come quickly.
    pub accepted_revisions_seconds: u64,
    /// Policy-value runs: local self-play pauses while this many of its games wait to be learned.
    pub local_backlog_games: u64,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            model: ModelKind::Ntuple,
            // Measured best for the default hour on two cores (BENCHMARKS.md, issue 11): 8×6, twice
            // the memory of 4×6 and half its moves per second, and the stronger player; a second
            // stage from 16384, where the default restart spends most of the hour's moves.
            network: NTupleConfig { stages: 2, ..NTupleConfig::matsuzaki_8x6() },
            policy_value: PolicyValueConfig::default(),
            // Measured best for a policy-value run on two CPU cores (BENCHMARKS.md, issue 14): a
            // Gumbel root with 8 simulations learns far more in the same time than PUCT with 100.
            mcts: MctsConfig { simulations: 8, root: RootRule::Gumbel, ..MctsConfig::default() },
            zero: ZeroConfig::default(),
            mcts_parallel_games: 64,
            mcts_evaluation_games: 32,
            td: TdConfig::default(),
            selfplay_threads: 0,
            learner_threads: 0,
            selfplay_depth: 1,
            restart: Some(RestartSpec::default()),
            four_probability: SpawnRule::STANDARD.four_probability(),
            seed: 2048,
            // Measured best of powers 1 to 3 on one default hour's revisions (BENCHMARKS.md,
            // issue 11): +8% at 1-ply over the last revision.
            published_mean_power: Some(1),
            revision_every_games: 100_000,
            revision_every_seconds: 300.0,
            selfplay_sync_games: 1000,
            evaluate_every_revisions: 1,
            evaluation: EvalConfig::default(),
            deadline_seconds: 24 * 3600,
            accepted_revisions_window: 3,
            accepted_revisions_seconds: 900,
            local_backlog_games: 256,
        }
    }
}

/// A setting that breaks its rule: the key's path under `train` and the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("train.{key}: {message}")]
pub struct ConfigError {
    /// The key's path under `train` (`td.lambda`, `evaluation.games`, …).
    pub key: String,
    /// What its rule says.
    pub message: String,
}

fn rule(key: &str, ok: bool, message: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(ConfigError { key: key.to_string(), message: message() }) }
}

fn from(key: &str) -> impl FnOnce(String) -> ConfigError + '_ {
    move |message| ConfigError { key: key.to_string(), message }
}

impl TrainConfig {
    /// Checks every setting by its rule, whatever it came from (file, environment or flag).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.network.validate().map_err(from("network"))?;
        self.policy_value.validate().map_err(from("policy_value"))?;
        self.mcts.validate().map_err(from("mcts"))?;
        self.zero.validate().map_err(|(key, message)| ConfigError { key: format!("zero.{key}"), message })?;
        check_parallel_games(self.mcts_parallel_games).map_err(from("mcts_parallel_games"))?;
        rule("mcts_evaluation_games", (1..=100_000).contains(&self.mcts_evaluation_games), || {
            format!(
                "{} games; 1 to 100000 (turn evaluation off with evaluate_every_revisions: 0)",
                self.mcts_evaluation_games
            )
        })?;
        self.td.validate().map_err(|(key, message)| ConfigError { key: format!("td.{key}"), message })?;
        rule("selfplay_threads", self.selfplay_threads <= 1024, || {
            format!("{} threads; at most 1024 (0 = one per core)", self.selfplay_threads)
        })?;
        rule("learner_threads", self.learner_threads <= 1024, || {
            format!("{} threads; at most 1024 (0 = one per core)", self.learner_threads)
        })?;
        check_depth(self.selfplay_depth).map_err(from("selfplay_depth"))?;
        if let Some(restart) = &self.restart {
            restart
                .validate()
                .map_err(|e| ConfigError { key: format!("restart.{}", e.field), message: e.message })?;
        }
        check_four_probability(self.four_probability).map_err(from("four_probability"))?;
        if let Some(power) = self.published_mean_power {
            rule("published_mean_power", power <= 8, || {
                format!("{power}; 0 (every moment alike) to 8, or null to publish the learned weights")
            })?;
        }
        rule("revision_every_games", self.revision_every_games >= 1, || {
            "must be at least 1 (a revision after every game would publish the whole network each time)"
                .into()
        })?;
        rule(
            "revision_every_seconds",
            self.revision_every_seconds.is_finite() && self.revision_every_seconds >= 1.0,
            || format!("{} is not a number of seconds ≥ 1", self.revision_every_seconds),
        )?;
        rule("selfplay_sync_games", self.selfplay_sync_games >= 1, || "must be at least 1".into())?;
        self.evaluation
            .validate()
            .map_err(|(key, message)| ConfigError { key: format!("evaluation.{key}"), message })?;
        rule("deadline_seconds", (60..=7 * 24 * 3600).contains(&self.deadline_seconds), || {
            format!("{} s; a latest record stays valid 60 s to 7 days", self.deadline_seconds)
        })?;
        rule("accepted_revisions_window", self.accepted_revisions_window >= 1, || {
            "must be at least 1 (the latest revision)".into()
        })?;
        rule("local_backlog_games", self.local_backlog_games >= 1, || "must be at least 1".into())?;
        Ok(())
    }

    /// Threads learning the queue of uploaded games.
    pub fn learner_threads(&self) -> usize {
        match self.learner_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The spawn rule of the run.
    pub fn spawn_rule(&self) -> SpawnRule {
        SpawnRule::new(self.four_probability).unwrap_or(SpawnRule::STANDARD)
    }

    /// How every player of the run plays (checked by the same rules as the configuration).
    pub fn play_spec(&self) -> PlaySpec {
        let search = match self.model {
            ModelKind::Ntuple => SearchSpec::Expectimax { depth: self.selfplay_depth },
            ModelKind::PolicyValue => {
                SearchSpec::Mcts { mcts: self.mcts, parallel_games: self.mcts_parallel_games }
            }
        };
        let restart = if self.model == ModelKind::Ntuple { self.restart } else { None };
        PlaySpec { spawn: self.spawn_rule(), search, restart }
    }

    /// The latest record's run part for a network of `model`.
    pub fn run_spec(&self, model: ModelSpec, accepted_revisions: Vec<u64>) -> RunSpec {
        RunSpec {
            model,
            play: self.play_spec(),
            accepted_revisions,
            min_worker_version: zero2048_protocol::BUILD_VERSION.to_string(),
        }
    }
}

/// The spec of an n-tuple network.
pub fn ntuple_spec(config: &NTupleConfig) -> ModelSpec {
    ModelSpec::Ntuple { tuples: config.tuples.clone(), stages: config.stages, stage_tile: config.stage_tile }
}

/// The spec of a policy-value network.
pub fn policy_value_spec(config: &PolicyValueConfig) -> ModelSpec {
    ModelSpec::PolicyValue { filters: config.filters as u32, blocks: config.blocks as u32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_build_a_valid_spec() {
        let config = TrainConfig::default();
        config.validate().unwrap();
        config.play_spec().validate().unwrap();
        let pv = TrainConfig { model: ModelKind::PolicyValue, ..TrainConfig::default() };
        pv.validate().unwrap();
        assert!(pv.play_spec().records_search());
    }

    #[test]
    fn every_bad_value_names_its_key() {
        let cases: Vec<(&str, TrainConfig)> = vec![
            ("revision_every_games", TrainConfig { revision_every_games: 0, ..Default::default() }),
            (
                "revision_every_seconds",
                TrainConfig { revision_every_seconds: f64::NAN, ..Default::default() },
            ),
            ("selfplay_depth", TrainConfig { selfplay_depth: 0, ..Default::default() }),
            ("selfplay_depth", TrainConfig { selfplay_depth: 50, ..Default::default() }),
            ("four_probability", TrainConfig { four_probability: 1.5, ..Default::default() }),
            (
                "td.learning_rate",
                TrainConfig {
                    td: TdConfig { learning_rate: -1.0, ..Default::default() },
                    ..Default::default()
                },
            ),
            (
                "td.learning_rate",
                TrainConfig {
                    td: TdConfig { learning_rate: f32::NAN, ..Default::default() },
                    ..Default::default()
                },
            ),
            (
                "td.lambda",
                TrainConfig { td: TdConfig { lambda: 2.0, ..Default::default() }, ..Default::default() },
            ),
            (
                "evaluation.games",
                TrainConfig {
                    evaluation: EvalConfig { games: 0, ..Default::default() },
                    ..Default::default()
                },
            ),
            ("deadline_seconds", TrainConfig { deadline_seconds: 0, ..Default::default() }),
            ("published_mean_power", TrainConfig { published_mean_power: Some(9), ..Default::default() }),
            (
                "restart.at",
                TrainConfig {
                    restart: Some(RestartSpec { min_moves: 10, at: 0.0, at_max: None, at_tile: None }),
                    ..Default::default()
                },
            ),
            (
                "restart.at_max",
                TrainConfig {
                    restart: Some(RestartSpec { min_moves: 10, at: 0.75, at_max: Some(0.5), at_tile: None }),
                    ..Default::default()
                },
            ),
            (
                "restart.at_tile",
                TrainConfig {
                    restart: Some(RestartSpec { at_tile: Some(20), ..RestartSpec::default() }),
                    ..Default::default()
                },
            ),
        ];
        for (key, config) in cases {
            let error = config.validate().unwrap_err();
            assert_eq!(error.key, key, "{error}");
            assert!(error.to_string().starts_with(&format!("train.{key}: ")), "{error}");
        }
    }

    #[test]
    fn a_spawn_rule_reaches_the_play_spec() {
        let config = TrainConfig { four_probability: 0.2, selfplay_depth: 2, ..TrainConfig::default() };
        let spec = config.play_spec();
        assert_eq!(spec.spawn.four_probability(), 0.2);
        assert_eq!(spec.search, SearchSpec::Expectimax { depth: 2 });
    }
}
