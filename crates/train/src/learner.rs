//! Temporal-difference learning of afterstate values from game records.
//!
//! For the afterstates `a_0 … a_{n-1}` of a game and the reward `r_t` of the move that made `a_t`,
//! TD(0) moves `V(a_t)` toward `r_{t+1} + V(a_{t+1})`, and the last afterstate of a finished game
//! toward 0. The pass runs backward over the game, so each target already uses its successor's
//! updated value, which propagates a game's outcome in one pass. With temporal coherence (TC), each
//! weight's step is scaled by |Σ errors| / Σ |errors| seen by that weight, so weights whose errors
//! keep their sign learn fast and noisy ones slow down.

use serde::{Deserialize, Serialize};
use zero2048_game::{Board, GameRecord, ReplayError};
use zero2048_model::{Feature, NTupleNetwork, NetworkError, Table};

/// How the learner steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TdConfig {
    /// Step size of an update, shared among the features (each weight moves by
    /// `learning_rate / features × error`).
    pub learning_rate: f32,
    /// Temporal coherence: a per-weight adaptive step (needs two more tables of the network's size).
    pub coherence: bool,
}

impl Default for TdConfig {
    fn default() -> TdConfig {
        TdConfig { learning_rate: 0.1, coherence: false }
    }
}

/// What learning one game did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GameLearned {
    /// Moves (updates) in the game.
    pub moves: u32,
    /// Final score.
    pub score: u64,
    /// Largest tile reached.
    pub max_tile: u32,
    /// Mean absolute TD error over the game's updates (before each update).
    pub mean_abs_error: f32,
}

/// The temporal-coherence accumulators, one pair per weight.
struct Coherence {
    errors: Vec<Table>,
    magnitudes: Vec<Table>,
}

/// A TD learner owning the network it trains.
pub struct TdLearner {
    network: NTupleNetwork,
    config: TdConfig,
    coherence: Option<Coherence>,
    afterstates: Vec<(Board, u32)>,
    features: Vec<Feature>,
}

impl TdLearner {
    /// A learner training `network`.
    pub fn new(network: NTupleNetwork, config: TdConfig) -> Result<TdLearner, NetworkError> {
        let coherence = if config.coherence {
            let tables = |n: &NTupleNetwork| {
                n.tables()
                    .iter()
                    .map(|t| {
                        Table::zeroed(t.len())
                            .map_err(|source| NetworkError::Allocation { bytes: t.len() * 4, source })
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            Some(Coherence { errors: tables(&network)?, magnitudes: tables(&network)? })
        } else {
            None
        };
        let features = Vec::with_capacity(network.feature_count());
        Ok(TdLearner { network, config, coherence, afterstates: Vec::with_capacity(4096), features })
    }

    /// The network being trained.
    pub fn network(&self) -> &NTupleNetwork {
        &self.network
    }

    /// The configuration.
    pub fn config(&self) -> &TdConfig {
        &self.config
    }

    /// Verifies `record` by replaying it and learns from it. An illegal record teaches nothing
    /// and is reported.
    pub fn learn(&mut self, record: &GameRecord) -> Result<GameLearned, ReplayError> {
        self.afterstates.clear();
        if record.steps.is_empty() {
            // No step to check the start board with: check it on its own.
            record.replay()?;
        }
        let mut board = record.start;
        let mut score = 0u64;
        for step in record.replay_steps() {
            let step = step?;
            self.afterstates.push((step.afterstate, step.reward));
            score += step.reward as u64;
            board = step.after;
        }
        let finished = board.is_game_over();
        let features = self.network.feature_count() as f32;
        let step_size = self.config.learning_rate / features;
        let mut total_error = 0.0f32;
        let mut updates = 0u32;
        // Target of the last afterstate: 0 if the game ended there; an unfinished game has no
        // target for it, so its last afterstate is skipped.
        let mut target = 0.0f32;
        let mut skip_last = !finished;
        for i in (0..self.afterstates.len()).rev() {
            let (afterstate, reward) = self.afterstates[i];
            if skip_last {
                skip_last = false;
                target = reward as f32 + self.network.value(afterstate);
                continue;
            }
            let error = target - self.network.value(afterstate);
            total_error += error.abs();
            updates += 1;
            match &mut self.coherence {
                None => self.network.add(afterstate, step_size * error),
                Some(tc) => {
                    let network = &mut self.network;
                    let features = &mut self.features;
                    features.clear();
                    network.for_each_feature(afterstate, |f| features.push(f));
                    for &f in features.iter() {
                        let (t, i) = (f.table as usize, f.index as usize);
                        let e = &mut tc.errors[t].weights_mut()[i];
                        let a = &mut tc.magnitudes[t].weights_mut()[i];
                        let rate = if *a == 0.0 { 1.0 } else { e.abs() / *a };
                        *network.weight_mut(f) += step_size * rate * error;
                        *e += error;
                        *a += error.abs();
                    }
                }
            }
            target = reward as f32 + self.network.value(afterstate);
        }
        Ok(GameLearned {
            moves: record.steps.len() as u32,
            score,
            max_tile: board.max_tile(),
            mean_abs_error: if updates > 0 { total_error / updates as f32 } else { 0.0 },
        })
    }
}
