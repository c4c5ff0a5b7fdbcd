//! The two model kinds behind one interface: what the run loop asks of a learner, whatever it
//! trains. Everything kind-specific lives here, so the loop has no `match` on the model kind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zero2048_game::GameRecord;
use zero2048_model::{NTupleNetwork, PolicyValueNet, weights_file};
use zero2048_protocol::{ModelKind, ModelSpec};
use zero2048_search::Strength;
use zero2048_selfplay::{Engine, play_series};

use crate::config::{TrainConfig, ntuple_spec, policy_value_spec};
use crate::evaluation::evaluate;
use crate::learner::{GameLearned, TdLearner};
use crate::run::TrainError;
use crate::state;
use crate::zero::ZeroLearner;

/// An evaluation to run on another thread: its result and the depth (n-tuple) or simulations
/// (MCTS) it searched with.
pub type EvaluationJob = Box<dyn FnOnce() -> (Strength, u32) + Send>;

/// What the run loop asks of a learner.
pub trait Learner: Send {
    /// The model kind.
    fn kind(&self) -> ModelKind;

    /// The model's spec for the latest record.
    fn spec(&self) -> ModelSpec;

    /// What is being trained, in a few words.
    fn describe(&self) -> String;

    /// Learns stored (verified) games from the queue, each with whether it is a continuation; a
    /// learner may spread them over threads. One result per game, in order.
    fn learn_stored(&mut self, games: &[(GameRecord, bool)]) -> Vec<Result<GameLearned, String>>;

    /// What local self-play plays now: the learner's own network (n-tuple: shared, learning as
    /// it plays), or a snapshot of it (policy-value).
    fn engine(&mut self) -> Result<Engine, TrainError>;

    /// The TD learner local threads learn into as they play (n-tuple runs only).
    fn in_thread(&self) -> Option<Arc<TdLearner>>;

    /// Metadata to store in the revision's weights file (training counters are added by the
    /// caller), logging what is worth logging.
    fn revision_metadata(&self, revision: u64) -> BTreeMap<String, String>;

    /// Writes the weights to `path` (the caller holds whoever else learns into them).
    fn save(
        &mut self,
        path: &Path,
        revision: u64,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), TrainError>;

    /// Saves the learner's own state beside the revision, now stored at `published` (what the
    /// weights file does not hold; the caller holds whoever else learns into it).
    fn save_state(&mut self, revision: u64, published: &Path) -> Result<(), TrainError>;

    /// An evaluation of the network as it is now, to run on another thread.
    fn evaluation(&mut self, config: &TrainConfig) -> Result<EvaluationJob, TrainError>;
}

/// The weights an n-tuple run publishes when `published_mean_power` is set: a running mean of
/// the learned weights, folded in at every revision, in which the weights as they stood after g
/// games count in proportion to g^power. The mean lives in the files it publishes: each revision
/// is the learned weights blended with the one before, a block at a time, so it never holds a
/// second network in memory, and the learner never learns on it.
pub struct PublishedMean {
    power: u32,
    /// Games learned when the mean last folded the learned weights in.
    folded_at_games: u64,
    /// The stored file of the last revision, which holds the mean so far (`None`: the next fold
    /// starts the mean from the learned weights).
    last_file: Option<PathBuf>,
}

impl PublishedMean {
    /// A mean held by `last_file`, folded at `folded_at_games`.
    pub fn new(power: u32, folded_at_games: u64, last_file: Option<PathBuf>) -> PublishedMean {
        PublishedMean { power, folded_at_games, last_file }
    }

    /// The weight of the learned network after `games` in a mean last folded at `before`:
    /// with weights g^power, the mean's derivative in g is (power + 1)/g of the gap, so a
    /// stretch of games moves it (power + 1)·(games − before)/games of the way (at most all).
    fn step(power: u32, before: u64, games: u64) -> f32 {
        if games == 0 {
            return 1.0;
        }
        let step = f64::from(power + 1) * games.saturating_sub(before) as f64 / games as f64;
        step.min(1.0) as f32
    }

    /// Writes the next revision's file at `path`: `learned`, the learner's weights after
    /// `games`, folded into the mean so far.
    fn save(
        &mut self,
        learned: &NTupleNetwork,
        games: u64,
        path: &Path,
        revision: u64,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), TrainError> {
        let step = PublishedMean::step(self.power, self.folded_at_games, games);
        weights_file::save(learned, path, revision, metadata)?;
        if let Some(previous) = self.last_file.as_deref().filter(|_| step < 1.0) {
            weights_file::blend_with_previous(path, previous, step)?;
        }
        self.folded_at_games = games;
        Ok(())
    }
}

/// An n-tuple network learned by TD, shared with the local threads that play it.
pub struct NtupleLearner {
    td: Arc<TdLearner>,
    state_dir: PathBuf,
    threads: usize,
    /// What revisions publish, when not the learned weights themselves.
    mean: Option<PublishedMean>,
}

impl NtupleLearner {
    /// Learns `network` with `td`, stored games on `threads` threads; the TC state (and, with a
    /// published `mean`, the learned weights) lives in `state_dir`.
    pub fn new(
        td: TdLearner,
        state_dir: PathBuf,
        threads: usize,
        mean: Option<PublishedMean>,
    ) -> NtupleLearner {
        NtupleLearner { td: Arc::new(td), state_dir, threads: threads.max(1), mean }
    }
}

impl Learner for NtupleLearner {
    fn kind(&self) -> ModelKind {
        ModelKind::Ntuple
    }

    fn spec(&self) -> ModelSpec {
        ntuple_spec(self.td.network().config())
    }

    fn describe(&self) -> String {
        let td = self.td.config();
        let mut method = if td.lambda > 0.0 { format!("TD(λ={})", td.lambda) } else { "TD(0)".to_string() };
        if td.mode == crate::learner::TdMode::Online {
            method.push_str(&format!(" online (window {})", td.window()));
        }
        if td.coherence {
            method.push_str(if td.coherence_after_games > 0 { " then TC" } else { " with TC" });
        }
        if let Some(mean) = &self.mean {
            method.push_str(&format!("; publishes its mean weighted by games^{}", mean.power));
        }
        format!(
            "{} ({} MiB), {method}",
            zero2048_search::Evaluator::name(&**self.td.network()),
            self.td.network().config().bytes() >> 20
        )
    }

    fn learn_stored(&mut self, games: &[(GameRecord, bool)]) -> Vec<Result<GameLearned, String>> {
        let learn = |chunk: &[(GameRecord, bool)]| -> Vec<Result<GameLearned, String>> {
            chunk
                .iter()
                .map(|(record, continuation)| self.td.learn(record, *continuation).map_err(|e| e.to_string()))
                .collect()
        };
        if self.threads == 1 || games.len() < 2 * self.threads {
            return learn(games);
        }
        // Lock-free updates from several threads, as the local self-play threads do.
        let chunk = games.len().div_ceil(self.threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = games.chunks(chunk).map(|part| scope.spawn(move || learn(part))).collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|_| vec![Err("a learner thread panicked".into())]))
                .collect()
        })
    }

    fn engine(&mut self) -> Result<Engine, TrainError> {
        Ok(Engine::Ntuple(Arc::clone(self.td.network())))
    }

    fn in_thread(&self) -> Option<Arc<TdLearner>> {
        Some(Arc::clone(&self.td))
    }

    fn revision_metadata(&self, _revision: u64) -> BTreeMap<String, String> {
        let td = self.td.config();
        let mut metadata = BTreeMap::new();
        metadata.insert("learning_rate".into(), td.learning_rate_at(self.td.games()).to_string());
        metadata.insert("lambda".into(), td.lambda.to_string());
        metadata.insert("coherence".into(), td.coherent_at(self.td.games()).to_string());
        if let Some(mean) = &self.mean {
            metadata.insert("published_mean_power".into(), mean.power.to_string());
        }
        metadata
    }

    fn save(
        &mut self,
        path: &Path,
        revision: u64,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), TrainError> {
        let followed = self.td.follow_lower_stages();
        if followed > 0 {
            tracing::debug!(
                "{followed} weights of later stages set to the stage below's (not updated by their own boards yet)"
            );
        }
        match &mut self.mean {
            Some(mean) => mean.save(self.td.network(), self.td.games(), path, revision, metadata),
            None => Ok(weights_file::save(self.td.network(), path, revision, metadata)?),
        }
    }

    fn save_state(&mut self, revision: u64, published: &Path) -> Result<(), TrainError> {
        // The weights first: a stop between the two leaves the accumulators one revision
        // behind them, which a resumed run takes (stale by one revision) rather than starting
        // every rate afresh.
        match &mut self.mean {
            Some(mean) => {
                mean.last_file = Some(published.to_path_buf());
                state::save_learned(&self.state_dir, revision, self.td.network())?;
            }
            None => state::remove_learned(&self.state_dir)?,
        }
        state::save_coherence(&self.state_dir, revision, self.td.coherence())
    }

    fn evaluation(&mut self, config: &TrainConfig) -> Result<EvaluationJob, TrainError> {
        // What the revision published: the mean, loaded from its file for the evaluation only;
        // or the live network, learning going on while the suite plays (a few seconds).
        let network: Arc<NTupleNetwork> = match self.mean.as_ref().and_then(|m| m.last_file.as_deref()) {
            Some(file) => Arc::new(weights_file::load(file, Some(self.td.network().config()))?.0),
            None => Arc::clone(self.td.network()),
        };
        let (suite, rule) = (config.evaluation, config.spawn_rule());
        Ok(Box::new(move || (evaluate(network, &suite, rule), suite.depth)))
    }
}

/// A policy-value network learned from search statistics.
pub struct PolicyValueLearner {
    zero: ZeroLearner,
    state_dir: PathBuf,
    spec: ModelSpec,
    description: String,
}

impl PolicyValueLearner {
    /// Learns with `zero`; `network` is its starting point; the optimiser's state goes to
    /// `state_dir` with each revision.
    pub fn new(
        zero: ZeroLearner,
        network: &PolicyValueNet,
        config: &TrainConfig,
        state_dir: PathBuf,
    ) -> PolicyValueLearner {
        let c = network.config();
        PolicyValueLearner {
            zero,
            state_dir,
            spec: policy_value_spec(c),
            description: format!(
                "policy-value network ({} filters × {} blocks) with MCTS of {} simulations",
                c.filters, c.blocks, config.mcts.simulations
            ),
        }
    }
}

impl Learner for PolicyValueLearner {
    fn kind(&self) -> ModelKind {
        ModelKind::PolicyValue
    }

    fn spec(&self) -> ModelSpec {
        self.spec.clone()
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn learn_stored(&mut self, games: &[(GameRecord, bool)]) -> Vec<Result<GameLearned, String>> {
        games.iter().map(|(record, _)| self.zero.learn(record).map_err(|e| e.to_string())).collect()
    }

    fn engine(&mut self) -> Result<Engine, TrainError> {
        Ok(Engine::PolicyValue(Arc::new(self.zero.snapshot()?)))
    }

    fn in_thread(&self) -> Option<Arc<TdLearner>> {
        None
    }

    fn revision_metadata(&self, revision: u64) -> BTreeMap<String, String> {
        let report = self.zero.report();
        let held_out =
            |value: f32| if report.validation_positions > 0 { format!("{value:.4}") } else { "n/a".into() };
        tracing::info!(
            "revision {revision}: {} optimiser steps, {} positions in the window; loss policy {:.4} value {:.4} \
             (training), {} {} (held out){}",
            report.steps,
            report.replay_positions,
            report.train.policy,
            report.train.value,
            held_out(report.validation.policy),
            held_out(report.validation.value),
            if report.validation_positions > 0
                && report.validation.total() > 1.5 * report.train.total()
                && report.steps > 0
            {
                " — over-fitting: held-out loss well above training loss"
            } else {
                ""
            }
        );
        let mut metadata = BTreeMap::new();
        metadata.insert("optimizer_steps".into(), report.steps.to_string());
        metadata.insert("train_policy_loss".into(), report.train.policy.to_string());
        metadata.insert("train_value_loss".into(), report.train.value.to_string());
        metadata.insert("validation_policy_loss".into(), held_out(report.validation.policy));
        metadata.insert("validation_value_loss".into(), held_out(report.validation.value));
        metadata
    }

    fn save(
        &mut self,
        path: &Path,
        revision: u64,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), TrainError> {
        self.zero.snapshot()?.save(path, revision, metadata)?;
        Ok(())
    }

    fn save_state(&mut self, revision: u64, _published: &Path) -> Result<(), TrainError> {
        state::save_optimizer(&self.state_dir, revision, &self.zero.optimizer_state()?)
    }

    fn evaluation(&mut self, config: &TrainConfig) -> Result<EvaluationJob, TrainError> {
        let network = self.zero.snapshot()?;
        let (search, rule, games, seed) = (
            config.mcts.for_evaluation(),
            config.spawn_rule(),
            config.mcts_evaluation_games.max(1),
            config.evaluation.seed,
        );
        Ok(Box::new(move || {
            let (results, _) = play_series(&network, search, rule, games, seed, games.min(64));
            (Strength::of(&results).expect("at least one game"), search.simulations)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zero2048_model::NTupleConfig;

    /// The mean's coefficients of snapshots folded at `games`, by the fold rule on scalars.
    fn coefficients(power: u32, games: &[u64]) -> Vec<f64> {
        let mut coefficients: Vec<f64> = Vec::new();
        let mut before = 0;
        for &g in games {
            let step = f64::from(PublishedMean::step(power, before, g));
            coefficients.iter_mut().for_each(|c| *c *= 1.0 - step);
            coefficients.push(step);
            before = g;
        }
        coefficients
    }

    #[test]
    fn the_fold_weighs_each_stretch_of_games_by_games_to_the_power() {
        // Power 0 over equal stretches: the plain mean of the snapshots.
        for c in coefficients(0, &[10, 20, 30, 40]) {
            assert!((c - 0.25).abs() < 1e-6, "{c}");
        }
        // Power 1, a snapshot every game: the i-th of n counts 2(i − 1)/(n(n − 1)), a linear ramp.
        let n = 12;
        let games: Vec<u64> = (1..=n).collect();
        for (i, c) in coefficients(1, &games).iter().enumerate() {
            let expected = 2.0 * i as f64 / (n * (n - 1)) as f64;
            assert!((c - expected).abs() < 1e-6, "snapshot {}: {c} against {expected}", i + 1);
        }
        // The first fold, and any fold from zero games, copies; no new games change nothing.
        assert_eq!(PublishedMean::step(1, 0, 0), 1.0);
        assert_eq!(PublishedMean::step(3, 0, 500), 1.0);
        assert_eq!(PublishedMean::step(1, 500, 500), 0.0);
        assert_eq!(PublishedMean::step(2, 300, 400), 0.75);
    }

    #[test]
    fn a_published_mean_folds_files_and_never_touches_the_learned_network() {
        let dir = tempfile::tempdir().unwrap();
        let learned = NTupleNetwork::zeroed(NTupleConfig::small_4x4()).unwrap();
        let mut mean = PublishedMean::new(0, 0, None);
        let weight = |file: &Path| weights_file::load(file, None).unwrap().0.tables()[0].get(5);
        let mut publish = |revision: u64, value: f32, games: u64| {
            learned.tables()[0].set(5, value);
            let file = dir.path().join(format!("r{revision}.safetensors"));
            mean.save(&learned, games, &file, revision, &BTreeMap::new()).unwrap();
            mean.last_file = Some(file.clone());
            file
        };
        assert_eq!(weight(&publish(1, 1.0, 10)), 1.0, "the first fold copies");
        publish(2, 2.0, 20);
        assert_eq!(weight(&publish(3, 6.0, 30)), 3.0, "power 0: the plain mean of 1, 2 and 6");
        assert_eq!(learned.tables()[0].get(5), 6.0);
        // A last file of another shape is refused, by name.
        let other = dir.path().join("other.safetensors");
        weights_file::save(
            &NTupleNetwork::zeroed(NTupleConfig { stages: 2, ..NTupleConfig::small_4x4() }).unwrap(),
            &other,
            1,
            &BTreeMap::new(),
        )
        .unwrap();
        let mut mean = PublishedMean::new(0, 30, Some(other.clone()));
        let error =
            mean.save(&learned, 40, &dir.path().join("r4.safetensors"), 4, &BTreeMap::new()).unwrap_err();
        assert!(error.to_string().contains(&other.display().to_string()), "{error}");
    }
}
