//! Learning the policy-value network from searched games.
//!
//! Each verified game becomes one sample per move: the board, the root's visit distribution as
//! the policy target, and as the value target the n-step discounted return bootstrapped from the
//! search's root value n moves later (0 past the end of the game). Samples enter a replay window
//! of the most recent positions (spanning recent revisions); one game in twenty goes to a held-out
//! validation set instead, so over-fitting shows as validation loss rising while training loss
//! falls. Training keeps a fixed ratio of optimiser steps to new positions.

use std::collections::VecDeque;

use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use zero2048_game::{GameRecord, GameRng, ReplayError};
use zero2048_model::PolicyValueNet;
use zero2048_model::policy_value::{Losses, NetworkTrainer, OptimizerConfig, Sample, TrainDevice, trainer};

use crate::learner::GameLearned;

/// How the policy-value network learns.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZeroConfig {
    /// Samples per optimiser step.
    pub batch_size: usize,
    /// Positions kept for sampling (the newest; older revisions' games age out).
    pub replay_positions: usize,
    /// Each new position is drawn this many times on average (steps = positions × reuse / batch).
    /// 2 by default, not 4: the learner is the loop's bottleneck, and drawing each position half
    /// as often leaves it time for twice the fresh positions (BENCHMARKS.md: +59% in 50 minutes).
    pub sample_reuse: f64,
    /// Moves of real reward before bootstrapping from the search value.
    pub n_step: usize,
    /// Discount per move (the search's discount, so targets and tree values agree).
    pub discount: f32,
    /// Held-out positions kept for the validation loss.
    pub validation_positions: usize,
    /// What a move's reward is.
    pub reward: RewardKind,
    /// AdamW and its schedule.
    pub optimizer: OptimizerConfig,
    /// Seed of batch sampling.
    pub seed: u64,
    /// Where the optimiser runs (`cuda` needs a build with the `cuda` feature).
    pub device: TrainDevice,
}

impl ZeroConfig {
    /// Checks every value: `Err((key, rule))` names the key under `zero`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.batch_size == 0 || self.replay_positions < self.batch_size {
            return Err((
                "batch_size".into(),
                format!(
                    "{} must be at least 1 and at most replay_positions ({})",
                    self.batch_size, self.replay_positions
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.discount) {
            return Err(("discount".into(), format!("{} is not within 0..=1", self.discount)));
        }
        if !self.sample_reuse.is_finite() || self.sample_reuse < 0.0 {
            return Err(("sample_reuse".into(), format!("{} is not a number ≥ 0", self.sample_reuse)));
        }
        if !(1..=1000).contains(&self.n_step) {
            return Err(("n_step".into(), format!("{} is not within 1..=1000", self.n_step)));
        }
        self.optimizer.validate().map_err(|m| ("optimizer".to_string(), m))?;
        Ok(())
    }
}

impl Default for ZeroConfig {
    fn default() -> ZeroConfig {
        ZeroConfig {
            batch_size: 256,
            replay_positions: 200_000,
            sample_reuse: 2.0,
            n_step: 10,
            discount: 0.999,
            validation_positions: 10_000,
            reward: RewardKind::Score,
            optimizer: OptimizerConfig::default(),
            seed: 2048,
            device: TrainDevice::Cpu,
        }
    }
}

/// The prototype's reward choices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    /// The points a move scores (the game's own objective).
    #[default]
    Score,
    /// log2(1 + points): merges of big tiles count less, which steadies early learning.
    LogScore,
    /// 1 for each move that raises the largest tile (rewards reaching tiles, not points).
    MaxTile,
}

impl RewardKind {
    fn reward(self, points: u32, before_max: u32, after_max: u32) -> f32 {
        match self {
            RewardKind::Score => points as f32,
            RewardKind::LogScore => (1.0 + points as f32).log2(),
            RewardKind::MaxTile => (after_max > before_max) as u8 as f32,
        }
    }
}

/// Why the policy-value learner refused a game or failed.
#[derive(Debug, thiserror::Error)]
pub enum ZeroError {
    /// A setting breaks its rule.
    #[error("zero.{key}: {message}")]
    Config {
        /// The key under `zero`.
        key: String,
        /// Its rule.
        message: String,
    },
    /// A game without search statistics for every move (not an MCTS game).
    #[error("the game has search statistics for {statistics} of {moves} moves")]
    MissingStatistics {
        /// Moves with statistics.
        statistics: usize,
        /// Moves.
        moves: usize,
    },
    /// A move whose search visited nothing.
    #[error("move {0} has no visits")]
    NoVisits(usize),
    /// The game does not replay by the rules.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The network or its trainer failed.
    #[error("the network: {0}")]
    Network(String),
    /// A saved optimiser state that does not fit.
    #[error("the optimiser state: {0}")]
    OptimizerState(String),
}

/// The learner of a policy-value run.
pub struct ZeroLearner {
    trainer: Box<dyn NetworkTrainer>,
    config: ZeroConfig,
    replay: VecDeque<Sample>,
    validation: VecDeque<Sample>,
    steps_due: f64,
    rng: GameRng,
    recent: Losses,
    games: u64,
}

/// Losses reported with each revision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ZeroReport {
    /// Optimiser steps so far.
    pub steps: u64,
    /// Positions in the replay window.
    pub replay_positions: usize,
    /// Mean training losses over recent steps.
    pub train: Losses,
    /// Losses on the held-out positions (meaningless while `validation_positions` is 0).
    pub validation: Losses,
    /// Positions held out so far.
    pub validation_positions: usize,
}

impl ZeroLearner {
    /// A learner starting from `network`.
    pub fn new(network: &PolicyValueNet, config: ZeroConfig) -> Result<ZeroLearner, ZeroError> {
        config.validate().map_err(|(key, message)| ZeroError::Config { key, message })?;
        Ok(ZeroLearner {
            trainer: trainer(network, config.optimizer, config.device).map_err(ZeroError::Network)?,
            config,
            replay: VecDeque::with_capacity(config.replay_positions.min(1 << 20)),
            validation: VecDeque::new(),
            steps_due: 0.0,
            rng: GameRng::seed_from_u64(config.seed),
            recent: Losses::default(),
            games: 0,
        })
    }

    /// The samples of a verified game with search statistics.
    pub fn samples(record: &GameRecord, config: &ZeroConfig) -> Result<Vec<Sample>, ZeroError> {
        ZeroLearner::walk(record, config).map(|(samples, _)| samples)
    }

    /// The samples of a game and what the game was (moves, score, largest tile), from one replay.
    fn walk(record: &GameRecord, config: &ZeroConfig) -> Result<(Vec<Sample>, GameLearned), ZeroError> {
        if record.search.len() != record.steps.len() {
            return Err(ZeroError::MissingStatistics {
                statistics: record.search.len(),
                moves: record.steps.len(),
            });
        }
        let steps: Vec<_> = record.replay_steps().collect::<Result<_, _>>()?;
        let rewards: Vec<f32> = steps
            .iter()
            .map(|s| config.reward.reward(s.reward, s.before.max_tile(), s.after.max_tile()))
            .collect();
        let n = config.n_step.max(1);
        let gamma = config.discount;
        let mut samples = Vec::with_capacity(steps.len());
        for (t, (step, stats)) in steps.iter().zip(&record.search).enumerate() {
            let total: u32 = stats.visits.iter().sum();
            if total == 0 {
                return Err(ZeroError::NoVisits(t));
            }
            // A Gumbel root's improved policy is the target when the search recorded one; visit
            // counts of a few simulations say little about which move is better.
            let policy = match stats.policy {
                Some(improved) => improved.map(|p| p as f32 / zero2048_game::POLICY_UNIT as f32),
                None => stats.visits.map(|v| v as f32 / total as f32),
            };
            let mut value = 0.0f32;
            let mut discount = 1.0f32;
            let end = (t + n).min(steps.len());
            for reward in &rewards[t..end] {
                value += discount * reward;
                discount *= gamma;
            }
            if end < steps.len() {
                value += discount * record.search[end].root_value;
            }
            samples.push(Sample { board: step.before, policy, value });
        }
        let learned = GameLearned {
            moves: steps.len() as u32,
            score: steps.iter().map(|s| s.reward as u64).sum(),
            max_tile: steps.last().map_or(record.start, |s| s.after).max_tile(),
            mean_abs_error: 0.0,
        };
        Ok((samples, learned))
    }

    /// Whether a game is held out for validation (one in twenty, decided by its content so a
    /// restarted server splits the same way).
    fn held_out(record: &GameRecord) -> bool {
        let key = record.start.raw() ^ (record.steps.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        zero2048_game::derive_seed(key, 20).is_multiple_of(20)
    }

    /// Adds a game to the window without training on it (rebuilding the window after a restart).
    pub fn remember(&mut self, record: &GameRecord) -> Result<(), ZeroError> {
        let samples = ZeroLearner::samples(record, &self.config)?;
        self.push(record, samples);
        Ok(())
    }

    fn push(&mut self, record: &GameRecord, samples: Vec<Sample>) -> usize {
        let count = samples.len();
        if ZeroLearner::held_out(record) {
            self.validation.extend(samples);
            while self.validation.len() > self.config.validation_positions {
                self.validation.pop_front();
            }
            return 0;
        }
        self.replay.extend(samples);
        while self.replay.len() > self.config.replay_positions {
            self.replay.pop_front();
        }
        count
    }

    /// Learns from a verified game: adds its positions and takes the optimiser steps they are due.
    pub fn learn(&mut self, record: &GameRecord) -> Result<GameLearned, ZeroError> {
        let (samples, summary) = ZeroLearner::walk(record, &self.config)?;
        let added = self.push(record, samples);
        self.games += 1;
        self.steps_due += added as f64 * self.config.sample_reuse / self.config.batch_size as f64;
        while self.steps_due >= 1.0 && self.replay.len() >= self.config.batch_size {
            self.steps_due -= 1.0;
            let batch: Vec<Sample> = (0..self.config.batch_size)
                .map(|_| self.replay[self.rng.random_range(0..self.replay.len())])
                .collect();
            let losses = self.trainer.step(&batch);
            let keep = 0.98;
            if self.trainer.steps() == 1 {
                self.recent = losses;
            } else {
                self.recent.policy = keep * self.recent.policy + (1.0 - keep) * losses.policy;
                self.recent.value = keep * self.recent.value + (1.0 - keep) * losses.value;
            }
        }
        Ok(GameLearned { mean_abs_error: self.recent.value, ..summary })
    }

    /// The current weights as a CPU network.
    pub fn snapshot(&self) -> Result<PolicyValueNet, ZeroError> {
        self.trainer.snapshot().map_err(ZeroError::Network)
    }

    /// The optimiser's state (step count, AdamW moments) for a resumed run to carry on with.
    pub fn optimizer_state(&self) -> Result<Vec<u8>, ZeroError> {
        self.trainer.optimizer_state().map_err(ZeroError::OptimizerState)
    }

    /// Restores an optimiser state saved for this same network: a resumed run keeps its
    /// learning-rate schedule's place and its moments instead of warming up again.
    pub fn restore_optimizer_state(&mut self, bytes: &[u8]) -> Result<(), ZeroError> {
        self.trainer.restore_optimizer_state(bytes).map_err(ZeroError::OptimizerState)
    }

    /// Losses now (the validation loss is computed on the held-out positions).
    pub fn report(&self) -> ZeroReport {
        let held: Vec<Sample> = self.validation.iter().copied().collect();
        ZeroReport {
            steps: self.trainer.steps(),
            replay_positions: self.replay.len(),
            train: self.recent,
            validation: if held.is_empty() { Losses::default() } else { self.trainer.evaluate(&held) },
            validation_positions: held.len(),
        }
    }
}
