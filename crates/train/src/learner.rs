//! Temporal-difference learning of afterstate values, on a network shared by every thread.
//!
//! For the afterstates `a_0 … a_{n-1}` of a game and the reward `r_t` of the move that made `a_t`,
//! TD(λ) moves `V(a_t)` toward the λ-return `G_t = r_{t+1} + (1-λ)·V(a_{t+1}) + λ·G_{t+1}`, with
//! `G_{n-1} = 0` when the game ended there. The pass runs backward over the whole game, so each
//! target already uses its successor's updated value (λ = 0 is TD(0); 0.5 is what the strongest
//! public 4×6 learners use). With temporal coherence (TC), each weight's step is scaled by
//! |Σ errors| / Σ |errors| seen by that weight: weights whose errors keep their sign learn fast,
//! noisy ones slow down. A run may play plain TD first and switch to TC later (with an optimistic
//! start, the OTD → TC schedule), and may lower the TD rate at set game counts.
//!
//! Two ways to apply the updates ([`TdMode`]): `backward`, after each game, over the whole game
//! (exact λ-returns; a game's early afterstates are then read again from memory), or `online`,
//! as the game is played: each afterstate is learned once `window` later ones are known, with the
//! λ-return truncated there (Jaśkowski's delayed TD(λ); with λ = 0 and a window of 1 it is
//! TDL2048's forward TD(0)), on weights still in the cache from choosing the move.
//!
//! Many threads learn at once on one network: updates are lock-free (see
//! `zero2048_model::Table`). Whoever needs one consistent network (to save a revision) holds the
//! playing threads at their game boundaries (`zero2048_selfplay::Control::hold_games`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use zero2048_game::{Board, GameRecord, ReplayError};
use zero2048_model::{Features, KeptFeatures, NTupleNetwork, NetworkError, Pages, Table};

/// The TD learning rate from a game count on.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateStep {
    /// From this many games learned (in the whole run)...
    pub games: u64,
    /// ...the TD learning rate is this.
    pub learning_rate: f32,
}

/// When updates are applied: see the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TdMode {
    /// After each game, backward over the whole game.
    #[default]
    Backward,
    /// As the game is played, with a window of later afterstates.
    Online,
}

/// How the learner steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TdConfig {
    /// When updates are applied.
    pub mode: TdMode,
    /// Online mode: how many later afterstates an afterstate's λ-return looks at before it is
    /// learned (0 = the shortest window whose weight λ^window falls below 0.1: 1 for λ = 0, 4 for
    /// λ = 0.5).
    pub window: u32,
    /// TD step size, shared among the features (each weight moves by
    /// `learning_rate / features × error`).
    pub learning_rate: f32,
    /// Lower the TD learning rate at these game counts (in increasing order of games).
    pub learning_rate_schedule: Vec<RateStep>,
    /// λ of TD(λ): 0 learns from the next afterstate only, 0.5 blends in the rest of the game.
    pub lambda: f32,
    /// Temporal coherence: a per-weight adaptive step (two more floats per weight).
    pub coherence: bool,
    /// TC's meta step size β, shared among the features like `learning_rate`.
    pub coherence_rate: f32,
    /// Learn with plain TD for this many games of the run before TC starts (0 = TC from the
    /// start; the OTD → TC schedule plays most of a run with TD from an optimistic start).
    pub coherence_after_games: u64,
    /// A new network values every afterstate at this (optimistic initialisation; 0 = none).
    pub initial_value: f32,
}

impl Default for TdConfig {
    /// The recipe that measured best for an hour from zero on 2 cores (BENCHMARKS.md): TD(0.5)
    /// with temporal coherence, together with the run's restart strategy.
    fn default() -> TdConfig {
        TdConfig { lambda: 0.5, coherence: true, ..TdConfig::td0() }
    }
}

impl TdConfig {
    /// Plain TD(0) with a fixed step of 0.1: the textbook learner, the baseline of the
    /// benchmarks and of the anchors' own defaults.
    pub fn td0() -> TdConfig {
        TdConfig {
            mode: TdMode::Backward,
            window: 0,
            learning_rate: 0.1,
            learning_rate_schedule: Vec::new(),
            lambda: 0.0,
            coherence: false,
            coherence_rate: 1.0,
            coherence_after_games: 0,
            initial_value: 0.0,
        }
    }
}

impl TdConfig {
    /// Checks every value: `Err((key, rule))` names the key under `td`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let positive = |key: String, value: f32| {
            if value.is_finite() && value > 0.0 && value <= 10.0 {
                Ok(())
            } else {
                Err((key, format!("{value} is not a step size in (0, 10]")))
            }
        };
        positive("learning_rate".into(), self.learning_rate)?;
        positive("coherence_rate".into(), self.coherence_rate)?;
        for (i, step) in self.learning_rate_schedule.iter().enumerate() {
            positive(format!("learning_rate_schedule[{i}].learning_rate"), step.learning_rate)?;
            if i > 0 && step.games <= self.learning_rate_schedule[i - 1].games {
                return Err((
                    format!("learning_rate_schedule[{i}].games"),
                    format!(
                        "{} does not follow {}: the schedule lists increasing game counts",
                        step.games,
                        self.learning_rate_schedule[i - 1].games
                    ),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.lambda) {
            return Err(("lambda".into(), format!("{} is not within 0..=1", self.lambda)));
        }
        if self.window > 64 {
            return Err(("window".into(), format!("{} afterstates; at most 64 (0 = from λ)", self.window)));
        }
        if !self.initial_value.is_finite() || !(0.0..=1e7).contains(&self.initial_value) {
            return Err((
                "initial_value".into(),
                format!("{} is not within 0..=10000000", self.initial_value),
            ));
        }
        Ok(())
    }

    /// The online window: as set, or the shortest whose weight λ^window falls below 0.1.
    pub fn window(&self) -> usize {
        if self.window > 0 {
            return self.window as usize;
        }
        let mut window = 1;
        let mut weight = self.lambda;
        while weight >= 0.1 && window < 64 {
            weight *= self.lambda;
            window += 1;
        }
        window
    }

    /// The TD learning rate after `games` games.
    pub fn learning_rate_at(&self, games: u64) -> f32 {
        self.learning_rate_schedule
            .iter()
            .rev()
            .find(|step| step.games <= games)
            .map_or(self.learning_rate, |step| step.learning_rate)
    }

    /// Whether game number `games` (0-based, in the whole run) is learned with TC.
    pub fn coherent_at(&self, games: u64) -> bool {
        self.coherence && games >= self.coherence_after_games
    }
}

/// What learning one game did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GameLearned {
    /// Moves (updates) in the game.
    pub moves: u32,
    /// Final score (of this record: a continuation counts from its branch point).
    pub score: u64,
    /// Largest tile reached.
    pub max_tile: u32,
    /// Mean absolute TD error over the game's updates (before each update).
    pub mean_abs_error: f32,
}

/// The temporal-coherence accumulators: per weight, the sum of its errors and the sum of their
/// magnitudes, side by side (one cache line holds both).
pub struct Coherence {
    tables: Vec<Table>,
}

impl Coherence {
    fn for_network(network: &NTupleNetwork) -> Result<Coherence, NetworkError> {
        let tables = network
            .tables()
            .iter()
            .map(|t| {
                Table::zeroed(2 * t.len(), Pages::Huge)
                    .map_err(|source| NetworkError::Allocation { bytes: 8 * t.len(), source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Coherence { tables })
    }

    /// The accumulator tables, one per network table (errors at `2i`, magnitudes at `2i + 1`).
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// The tables, to fill them from a saved learner state.
    pub fn tables_mut(&mut self) -> &mut [Table] {
        &mut self.tables
    }
}

/// A TD learner training one shared network.
pub struct TdLearner {
    network: Arc<NTupleNetwork>,
    config: TdConfig,
    coherence: OnceLock<Coherence>,
    /// Games learned in the whole run (the schedules' clock).
    games: AtomicU64,
    /// Held while a stage opens, so one thread copies it.
    opening: Mutex<()>,
    /// Whether the TC accumulators have seen every update of the run, so that a zero magnitude
    /// sum means a weight never updated ([`Self::follow_lower_stages`]).
    accumulators_cover_the_run: AtomicBool,
}

/// One thread's game in progress, for online learning: the afterstates not learned yet, each with
/// the reward of the move that made it and its value when the move was chosen.
#[derive(Debug, Default)]
pub struct Trace {
    pending: VecDeque<(Board, u32, f32)>,
    rates: Option<Rates>,
    total_error: f32,
    updates: u32,
    /// The features of the afterstate being learned (kept to reuse its allocation).
    features: Features,
    /// With a window of one: the feature indices the move choice kept of the newest pending
    /// afterstate, which the next move's update writes through.
    kept: KeptFeatures,
}

impl Trace {
    /// Holds the indices kept of the newest pending afterstate (a copy: the search writes its
    /// candidates' again at the next move). Without any, the last ones stay: an update uses
    /// indices only when they are of the board it updates, and a board's are always the same.
    #[inline]
    fn keep(&mut self, kept: Option<&KeptFeatures>) {
        if let Some(kept) = kept {
            self.kept.copy_from(kept);
        }
    }
}

/// The step sizes of one game (fixed when it starts).
#[derive(Clone, Copy, Debug)]
struct Rates {
    step: f32,
    coherent: bool,
}

impl TdLearner {
    /// A learner training `network`, `games_learned` games into its run. A network that has
    /// learned nothing yet gets the optimistic initial value, if one is set.
    pub fn new(network: Arc<NTupleNetwork>, config: TdConfig, games_learned: u64) -> TdLearner {
        if games_learned == 0 && config.initial_value != 0.0 {
            network.set_initial_value(config.initial_value);
        }
        let accumulators_cover_the_run = AtomicBool::new(games_learned == 0 && config.coherent_at(0));
        TdLearner {
            network,
            config,
            coherence: OnceLock::new(),
            games: AtomicU64::new(games_learned),
            opening: Mutex::new(()),
            accumulators_cover_the_run,
        }
    }

    /// Opens every closed stage up to `board`'s, each as a copy of the stage below (its TC
    /// accumulators start empty: a weight the new stage has not updated is one whose magnitude
    /// sum is zero, which [`Self::follow_lower_stages`] keeps level with the stage below).
    #[inline]
    fn open_stages_reaching(&self, board: Board) {
        if self.network.config().stages == 1
            || self.network.reached_stage(board) < self.network.open_stages() as usize
        {
            return;
        }
        self.open_stages_slowly(board);
    }

    #[cold]
    fn open_stages_slowly(&self, board: Board) {
        let _one_at_a_time = self.opening.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while self.network.reached_stage(board) >= self.network.open_stages() as usize {
            let open = self.network.open_stages();
            if !self.network.open_next_stage() {
                return;
            }
            tracing::info!(
                "stage {} opens (a board holding {}) as a copy of stage {open}, after {} games",
                open + 1,
                board.max_tile(),
                self.games()
            );
        }
    }

    /// The network being trained.
    pub fn network(&self) -> &Arc<NTupleNetwork> {
        &self.network
    }

    /// The configuration.
    pub fn config(&self) -> &TdConfig {
        &self.config
    }

    /// Games learned in the whole run.
    pub fn games(&self) -> u64 {
        self.games.load(Ordering::Relaxed)
    }

    /// The TC accumulators, once TC has started.
    pub fn coherence(&self) -> Option<&Coherence> {
        self.coherence.get()
    }

    /// Installs saved TC accumulators (a resumed run continues its TC state instead of starting
    /// every weight's rate afresh). Refused once TC has started in this process.
    pub fn restore_coherence(&self, saved: Coherence) -> Result<(), Coherence> {
        if saved.tables.len() != self.network.tables().len()
            || saved.tables.iter().zip(self.network.tables()).any(|(c, t)| c.len() != 2 * t.len())
        {
            return Err(saved);
        }
        self.coherence.set(saved)?;
        // Taken to cover the run when this configuration runs TC from the first game; a run
        // that once resumed without its accumulators, or changed the setting, is not seen here.
        self.accumulators_cover_the_run.store(self.config.coherent_at(0), Ordering::Relaxed);
        Ok(())
    }

    /// Empty TC accumulators of this network's shape (to fill from a saved learner state).
    pub fn new_coherence(&self) -> Result<Coherence, NetworkError> {
        Coherence::for_network(&self.network)
    }

    /// Sets each weight of an open later stage that its own boards have not updated yet to the
    /// stage below's, as it stands now; returns how many were set. A stage opens when the
    /// first game reaches its tile, early in a run and on a weak network; its boards are rare
    /// then, and a weight they never update would otherwise keep that early value for good,
    /// while the stage below goes on learning the same patterns from the rest of the game. Run
    /// by the learner at each revision, with nobody learning (it reads the TC accumulators: a
    /// weight whose magnitude sum is zero was never updated). Nothing is set unless TC has run
    /// from the run's first game (without it, or from later on, a zero sum says nothing).
    pub fn follow_lower_stages(&self) -> u64 {
        if !self.accumulators_cover_the_run.load(Ordering::Relaxed) {
            return 0;
        }
        let Some(tc) = self.coherence.get() else { return 0 };
        let network = &self.network;
        let tuples = network.config().tuples.len();
        let mut set = 0u64;
        for stage in 1..network.open_stages() as usize {
            for t in 0..tuples {
                let (below, own) =
                    (&network.tables()[(stage - 1) * tuples + t], &network.tables()[stage * tuples + t]);
                let accumulators = &tc.tables[stage * tuples + t];
                for i in 0..own.len() {
                    if accumulators.get(2 * i + 1) == 0.0 {
                        let lower = below.get(i);
                        if own.get(i) != lower {
                            own.set(i, lower);
                            set += 1;
                        }
                    }
                }
            }
        }
        set
    }

    /// The step sizes of the next game, counting it.
    fn next_game(&self) -> Result<Rates, NetworkError> {
        let game = self.games.fetch_add(1, Ordering::Relaxed);
        let features = self.network.feature_count() as f32;
        let coherent = self.config.coherent_at(game);
        if coherent && self.coherence.get().is_none() {
            let made = Coherence::for_network(&self.network)?;
            self.coherence.get_or_init(|| made);
        }
        let step = if coherent {
            self.config.coherence_rate / features
        } else {
            self.config.learning_rate_at(game) / features
        };
        Ok(Rates { step, coherent })
    }

    /// Moves the value of the afterstate whose features these are by `error` at the game's
    /// rates; returns its new value.
    #[inline]
    fn update(&self, rates: Rates, features: &Features, error: f32) -> f32 {
        match (rates.coherent, self.coherence.get()) {
            (true, Some(tc)) => self.coherent_update(tc, features, rates.step, error),
            _ => self.network.add_and_value_of(features, rates.step * error),
        }
    }

    /// [`update`](Self::update) for an afterstate known only by its board, and perhaps by the
    /// indices the move choice kept of it. Plain TD writes each weight in one pass (through the
    /// kept indices when they are the board's, else computing each), as the public TD(0)
    /// learners do; TC needs the feature list twice (rates, then weights), so it fills `scratch`.
    #[inline]
    fn update_board(
        &self,
        rates: Rates,
        board: Board,
        kept: &KeptFeatures,
        scratch: &mut Features,
        error: f32,
    ) -> f32 {
        match (rates.coherent, self.coherence.get()) {
            (true, Some(tc)) => {
                self.network.features_into(board, scratch);
                self.coherent_update(tc, scratch, rates.step, error)
            }
            _ => self.network.add_and_value_kept(kept, board, rates.step * error),
        }
    }

    /// Online mode: the move that made `afterstate` (scoring `reward`) was just played, and the
    /// search valued the afterstate at `value`, keeping its feature indices in `kept` if it did
    /// (a depth-1 search). Learns the afterstate `window` moves back.
    pub fn online_move(
        &self,
        trace: &mut Trace,
        afterstate: Board,
        reward: u32,
        value: f32,
        kept: Option<&KeptFeatures>,
    ) -> Result<(), NetworkError> {
        let rates = match trace.rates {
            Some(rates) => rates,
            None => *trace.rates.insert(self.next_game()?),
        };
        self.open_stages_reaching(afterstate);
        trace.pending.push_back((afterstate, reward, value));
        let window = self.config.window();
        if trace.pending.len() > window {
            self.learn_oldest(trace, rates);
        }
        // With a window of one, the afterstate just played is the next one learned.
        if window == 1 {
            trace.keep(kept);
        }
        Ok(())
    }

    /// Online mode: learns the oldest pending afterstate from its λ-return, truncated at the
    /// newest (bootstrapped from its value), from the values the search saw: no weight is read
    /// again.
    fn learn_oldest(&self, trace: &mut Trace, rates: Rates) {
        let lambda = self.config.lambda;
        let newest = trace.pending.len() - 1;
        let mut target = trace.pending[newest].2;
        for j in (1..=newest).rev() {
            let (_, reward, value) = trace.pending[j];
            target =
                reward as f32 + if j == newest { value } else { lambda * target + (1.0 - lambda) * value };
        }
        let (oldest, _, value) = trace.pending.pop_front().expect("more than the window pending");
        let error = target - value;
        trace.total_error += error.abs();
        trace.updates += 1;
        self.update_board(rates, oldest, &trace.kept, &mut trace.features, error);
    }

    /// Online mode: the game ended (`finished`) or was abandoned. A finished game's pending
    /// afterstates are learned backward from its end (the last one's target is 0); an abandoned
    /// game's are dropped. Returns the game's mean absolute error.
    pub fn online_end(&self, trace: &mut Trace, finished: bool) -> Result<f32, NetworkError> {
        let rates = match trace.rates {
            Some(rates) => rates,
            None => self.next_game()?,
        };
        if finished {
            let lambda = self.config.lambda;
            let mut target = 0.0f32;
            while let Some((afterstate, reward, _)) = trace.pending.pop_back() {
                self.network.features_into(afterstate, &mut trace.features);
                let error = target - self.network.value_of(&trace.features);
                trace.total_error += error.abs();
                trace.updates += 1;
                let updated = self.update(rates, &trace.features, error);
                target = reward as f32 + lambda * target + (1.0 - lambda) * updated;
            }
        }
        let mean = if trace.updates > 0 { trace.total_error / trace.updates as f32 } else { 0.0 };
        trace.pending.clear();
        trace.rates = None;
        trace.total_error = 0.0;
        trace.updates = 0;
        Ok(mean)
    }

    /// Learns one game from its afterstates and the rewards of the moves that made them, in
    /// order, backward. `finished`: the game ended after the last afterstate (an unfinished
    /// game's last afterstate has no target and only bootstraps the one before). Returns the mean
    /// absolute error before each update.
    pub fn learn_path(&self, path: &[(Board, u32)], finished: bool) -> Result<f32, NetworkError> {
        let rates = self.next_game()?;
        let lambda = self.config.lambda;
        // The largest tile is the last afterstate's: its stage opens before any is learned.
        if let Some(&(last, _)) = path.last() {
            self.open_stages_reaching(last);
        }
        // The afterstates updated: all of a finished game's; an unfinished game's last one only
        // bootstraps the one before it.
        let mut to_learn = path.len();
        // The λ-return of the afterstate being updated.
        let mut target = 0.0f32;
        if !finished {
            let Some(&(last, reward)) = path.last() else { return Ok(0.0) };
            to_learn -= 1;
            target = reward as f32 + self.network.value(last);
        }
        let mut total_error = 0.0f32;
        let mut count = 0u32;
        // The features of the afterstate being learned, and of the one learned after it.
        let (mut current, mut next) = (Features::default(), Features::default());
        if to_learn > 0 {
            self.network.features_into(path[to_learn - 1].0, &mut current);
        }
        for i in (0..to_learn).rev() {
            let reward = path[i].1;
            if i > 0 {
                self.network.features_into(path[i - 1].0, &mut next);
                self.prefetch(rates, &next);
            }
            let error = target - self.network.value_of(&current);
            total_error += error.abs();
            count += 1;
            let updated = self.update(rates, &current, error);
            target = reward as f32 + lambda * target + (1.0 - lambda) * updated;
            std::mem::swap(&mut current, &mut next);
        }
        Ok(if count > 0 { total_error / count as f32 } else { 0.0 })
    }

    /// Asks for the cache lines an afterstate's update will touch (the weights of `features`
    /// and, with TC, their accumulators) while the afterstate after it in the game, learned just
    /// before it in the backward pass, is still being learned: the two afterstates' cache misses
    /// then overlap. Without it, learning spent most of its time waiting on each accumulator's
    /// miss in turn (BENCHMARKS.md, issue 11).
    #[inline]
    fn prefetch(&self, rates: Rates, features: &Features) {
        let tables = self.network.tables();
        let coherence = if rates.coherent { self.coherence.get() } else { None };
        for (table, at) in features.by_table() {
            for &index in at {
                tables[table].prefetch(index);
            }
            if let Some(tc) = coherence {
                for &index in at {
                    tc.tables[table].prefetch(2 * index);
                }
            }
        }
    }

    /// A TC update of every feature; returns the new value of the afterstate they are of.
    #[inline]
    fn coherent_update(&self, tc: &Coherence, features: &Features, step: f32, error: f32) -> f32 {
        let tables = self.network.tables();
        let mut value = 0.0;
        for (table, at) in features.by_table() {
            let (weights, accumulators) = (&tables[table], &tc.tables[table]);
            for &index in at {
                let (sum, magnitude) = (accumulators.get(2 * index), accumulators.get(2 * index + 1));
                let rate = if magnitude == 0.0 { 1.0 } else { sum.abs() / magnitude };
                value += weights.add(index, step * rate * error);
                accumulators.set(2 * index, sum + error);
                accumulators.set(2 * index + 1, magnitude + error.abs());
            }
        }
        value
    }

    /// Verifies `record` by replaying it and learns from it, backward whatever the mode
    /// (`continuation`: the record starts from another game's position, checked by the caller).
    /// An illegal record teaches nothing.
    pub fn learn(&self, record: &GameRecord, continuation: bool) -> Result<GameLearned, LearnError> {
        if record.steps.is_empty() && !continuation {
            // No step to check the start board with: check it on its own.
            record.replay()?;
        }
        let mut path = Vec::with_capacity(record.steps.len());
        let mut board = record.start;
        let mut score = 0u64;
        let steps = if continuation { record.continuation_steps() } else { record.replay_steps() };
        for step in steps {
            let step = step?;
            path.push((step.afterstate, step.reward));
            score += step.reward as u64;
            board = step.after;
        }
        let mean_abs_error = self.learn_path(&path, board.is_game_over())?;
        Ok(GameLearned {
            moves: record.steps.len() as u32,
            score,
            max_tile: board.max_tile(),
            mean_abs_error,
        })
    }
}

/// Why a game could not be learned.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    /// The record is not a legal game.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The TC accumulators could not be allocated.
    #[error(transparent)]
    Network(#[from] NetworkError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use zero2048_model::NTupleConfig;

    fn learner(config: TdConfig) -> TdLearner {
        TdLearner::new(Arc::new(NTupleNetwork::zeroed(NTupleConfig::small_4x4()).unwrap()), config, 0)
    }

    /// The small network's shape with a second stage from 64.
    fn staged_config() -> NTupleConfig {
        NTupleConfig { stages: 2, stage_tile: 6, ..NTupleConfig::small_4x4() }
    }

    /// A learner from zero on [`staged_config`]'s network, its second stage closed.
    fn staged_learner(config: TdConfig) -> TdLearner {
        let network = NTupleNetwork::zeroed(staged_config()).unwrap();
        network.close_later_stages();
        TdLearner::new(Arc::new(network), config, 0)
    }

    #[test]
    fn a_stage_opens_as_a_copy_and_its_weights_follow_the_stage_below_until_its_boards_update_them() {
        let config = staged_config();
        let td = staged_learner(TdConfig::default());
        let early: Board = "32 16 2 0 0 0 0 0 0 0 0 0 0 0 0 0".parse().unwrap();
        let early_after: Board = "32 16 2 2 0 0 0 0 0 0 0 0 0 0 0 0".parse().unwrap();
        let late: Board = "64 16 2 0 0 0 0 0 0 0 0 0 0 0 0 0".parse().unwrap();
        let late_after: Board = "64 16 4 0 0 0 0 0 0 0 0 0 0 0 0 0".parse().unwrap();
        // Games below the stage tile leave it closed, and teach stage 0 with TC.
        for _ in 0..3 {
            td.learn_path(&[(early, 0), (early_after, 4)], true).unwrap();
        }
        let net = td.network();
        assert_eq!(net.open_stages(), 1);
        let tuples = config.tuples.len();
        let touched = |tables: &[Table], t: usize| tables[t].iter().filter(|w| *w != 0.0).count();
        assert!(touched(net.tables(), 0) > 0 && touched(td.coherence().unwrap().tables(), 0) > 0);
        assert_eq!(touched(net.tables(), tuples), 0, "stage 1 untouched while closed");
        let before = net.value(late);
        assert_ne!(before, 0.0, "stage 0 values the late board");
        // The first board of stage 1 opens it as a copy of stage 0's weights.
        td.open_stages_reaching(late);
        assert_eq!(net.open_stages(), 2);
        assert_eq!(net.value(late), before);
        let stage_0 = |board: Board| {
            let copy = net.try_clone().unwrap();
            copy.set_open_stages(1).unwrap();
            copy.value(board)
        };
        for t in 0..tuples {
            assert_eq!(net.tables()[t].to_le_bytes(), net.tables()[tuples + t].to_le_bytes(), "tuple {t}");
            assert_eq!(touched(td.coherence().unwrap().tables(), tuples + t), 0, "no stage 1 update yet");
        }
        // From now on each stage learns its own boards...
        td.learn_path(&[(late, 0), (late_after, 4)], true).unwrap();
        let late_learned = net.value(late);
        assert_ne!(late_learned, before);
        assert_eq!(stage_0(late), before, "stage 0 did not learn the late board");
        // ...and a weight of stage 1 no late board has updated follows stage 0 as it learns.
        td.learn_path(&[(early, 0), (early_after, 4)], true).unwrap();
        let set = td.follow_lower_stages();
        assert!(set > 0, "stage 0 learned weights stage 1 never updated");
        assert_eq!(net.value(late), late_learned, "the late board's own weights are kept");
        let tc = td.coherence().unwrap();
        for t in 0..tuples {
            let (below, own, marks) = (&net.tables()[t], &net.tables()[tuples + t], &tc.tables()[tuples + t]);
            for i in 0..own.len() {
                if marks.get(2 * i + 1) == 0.0 {
                    assert_eq!(own.get(i), below.get(i), "tuple {t} weight {i}");
                }
            }
        }
        assert_eq!(td.follow_lower_stages(), 0, "nothing left to set");

        // TC from a later game on: a zero sum no longer means "never updated", nothing is set.
        let late_tc = staged_learner(TdConfig { coherence_after_games: 1, ..TdConfig::default() });
        late_tc.learn_path(&[(late, 0), (late_after, 4)], true).unwrap();
        late_tc.learn_path(&[(early, 0), (early_after, 4)], true).unwrap();
        assert_eq!(late_tc.network().open_stages(), 2);
        assert_eq!(late_tc.follow_lower_stages(), 0);
    }

    #[test]
    fn a_game_reaching_a_closed_stage_opens_it_before_it_is_learned() {
        let config = staged_config();
        let td = staged_learner(TdConfig::td0());
        let early: Board = "32 32 2 0 0 0 0 0 0 0 0 0 0 0 0 0".parse().unwrap();
        let late: Board = "64 2 0 0 0 0 0 0 0 0 0 0 0 0 0 0".parse().unwrap();
        let last: Board = "64 4 0 0 0 0 0 0 0 0 0 0 0 0 0 0".parse().unwrap();
        td.learn_path(&[(early, 0), (late, 64), (last, 4)], true).unwrap();
        let net = td.network();
        assert_eq!(net.open_stages(), 2, "opened by the game's last afterstate");
        // The late afterstate was learned into stage 1, the early one into stage 0.
        let tuples = config.tuples.len();
        let touched = |range: std::ops::Range<usize>| {
            net.tables()[range].iter().map(|t| t.iter().filter(|w| *w != 0.0).count()).sum::<usize>()
        };
        assert!(touched(0..tuples) > 0 && touched(tuples..2 * tuples) > 0);
        assert_eq!(net.stage(late), 1);
    }

    #[test]
    fn the_schedule_picks_the_last_step_reached() {
        let config = TdConfig {
            learning_rate_schedule: vec![
                RateStep { games: 100, learning_rate: 0.05 },
                RateStep { games: 200, learning_rate: 0.01 },
            ],
            ..TdConfig::default()
        };
        assert_eq!(config.learning_rate_at(0), 0.1);
        assert_eq!(config.learning_rate_at(99), 0.1);
        assert_eq!(config.learning_rate_at(100), 0.05);
        assert_eq!(config.learning_rate_at(5000), 0.01);
        let backwards = TdConfig {
            learning_rate_schedule: vec![
                RateStep { games: 200, learning_rate: 0.05 },
                RateStep { games: 100, learning_rate: 0.01 },
            ],
            ..TdConfig::default()
        };
        assert!(backwards.validate().unwrap_err().1.contains("increasing"));
        for bad in [f32::NAN, -1.0, 0.0, 11.0] {
            let config = TdConfig { learning_rate: bad, ..TdConfig::default() };
            assert_eq!(config.validate().unwrap_err().0, "learning_rate", "{bad}");
        }
        assert!(TdConfig { lambda: 1.5, ..TdConfig::default() }.validate().is_err());
    }

    /// The features of a board, read cell by cell off the 8 symmetric boards.
    fn plain_features(tuples: &[Vec<u8>], board: Board) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (t, cells) in tuples.iter().enumerate() {
            for s in zero2048_game::Symmetry::ALL {
                let b = s.apply(board);
                out.push((
                    t,
                    cells.iter().enumerate().map(|(k, &c)| (b.get(c as usize) as usize) << (4 * k)).sum(),
                ));
            }
        }
        out
    }

    fn plain_value(tuples: &[Vec<u8>], tables: &[Vec<f32>], board: Board) -> f32 {
        plain_features(tuples, board).iter().map(|&(t, i)| tables[t][i]).sum()
    }

    /// Adds `delta` to every feature and returns the sum of the weights as each write left them
    /// (the learner's specified value after an update: exact unless features share a weight).
    fn plain_update(tuples: &[Vec<u8>], tables: &mut [Vec<f32>], board: Board, delta: f32) -> f32 {
        let mut sum = 0.0;
        for (t, i) in plain_features(tuples, board) {
            tables[t][i] += delta;
            sum += tables[t][i];
        }
        sum
    }

    /// The backward TD(λ) pass written plainly: weights in vectors; `update` applies one
    /// afterstate's error to `tables` and returns the afterstate's new value.
    fn plain_backward(
        tuples: &[Vec<u8>],
        tables: &mut [Vec<f32>],
        path: &[(Board, u32)],
        lambda: f32,
        finished: bool,
        mut update: impl FnMut(&mut [Vec<f32>], Board, f32) -> f32,
    ) {
        let mut target = 0.0;
        let mut steps = path.iter().rev();
        if !finished && let Some(&(last, reward)) = steps.next() {
            target = reward as f32 + plain_value(tuples, tables, last);
        }
        for &(afterstate, reward) in steps {
            let error = target - plain_value(tuples, tables, afterstate);
            let updated = update(tables, afterstate, error);
            target = reward as f32 + lambda * target + (1.0 - lambda) * updated;
        }
    }

    /// TD(λ) written plainly.
    fn plain_td(
        tuples: &[Vec<u8>],
        tables: &mut [Vec<f32>],
        path: &[(Board, u32)],
        alpha: f32,
        lambda: f32,
        finished: bool,
    ) {
        let step = alpha / (tuples.len() * 8) as f32;
        plain_backward(tuples, tables, path, lambda, finished, |tables, afterstate, error| {
            plain_update(tuples, tables, afterstate, step * error)
        });
    }

    /// TD(λ) with temporal coherence written plainly: each weight's step scaled by |Σ errors| /
    /// Σ |errors| of the errors it saw before (1 before its first), its accumulators then given
    /// the error.
    #[allow(clippy::too_many_arguments)]
    fn plain_coherent_td(
        tuples: &[Vec<u8>],
        tables: &mut [Vec<f32>],
        errors: &mut [Vec<f32>],
        magnitudes: &mut [Vec<f32>],
        path: &[(Board, u32)],
        beta: f32,
        lambda: f32,
        finished: bool,
    ) {
        let step = beta / (tuples.len() * 8) as f32;
        plain_backward(tuples, tables, path, lambda, finished, |tables, afterstate, error| {
            let mut updated = 0.0;
            for (t, i) in plain_features(tuples, afterstate) {
                let rate = if magnitudes[t][i] == 0.0 { 1.0 } else { errors[t][i].abs() / magnitudes[t][i] };
                tables[t][i] += step * rate * error;
                updated += tables[t][i];
                errors[t][i] += error;
                magnitudes[t][i] += error.abs();
            }
            updated
        });
    }

    #[test]
    fn backward_coherent_td_equals_the_plain_pass() {
        let td = learner(TdConfig { lambda: 0.5, coherence: true, coherence_rate: 1.0, ..TdConfig::td0() });
        let config = NTupleConfig::small_4x4();
        let zeroed = || -> Vec<Vec<f32>> {
            (0..config.tuples.len()).map(|t| vec![0.0; config.table_len(t)]).collect()
        };
        let (mut plain, mut errors, mut magnitudes) = (zeroed(), zeroed(), zeroed());
        for seed in 0..20 {
            let path = random_path(seed);
            let finished = seed % 4 != 3;
            let path = if finished { path } else { path[..path.len() / 2].to_vec() };
            td.learn_path(&path, finished).unwrap();
            plain_coherent_td(
                &config.tuples,
                &mut plain,
                &mut errors,
                &mut magnitudes,
                &path,
                1.0,
                0.5,
                finished,
            );
        }
        let tc = td.coherence().expect("TC started with the first game");
        for (t, table) in td.network().tables().iter().enumerate() {
            for (i, w) in table.iter().enumerate() {
                let (p, e, a) = (plain[t][i], errors[t][i], magnitudes[t][i]);
                let close = |x: f32, y: f32| (x - y).abs() <= 1e-3 * y.abs().max(1.0);
                assert!(close(w, p), "weight {t}/{i} is {w}, plainly {p}");
                assert!(close(tc.tables()[t].get(2 * i), e), "error sum {t}/{i}, plainly {e}");
                assert!(close(tc.tables()[t].get(2 * i + 1), a), "magnitude sum {t}/{i}, plainly {a}");
            }
        }
        assert!(magnitudes.iter().flatten().any(|&a| a > 0.0), "the games taught something");
    }

    /// A random game's path of (afterstate, reward).
    fn random_path(seed: u64) -> Vec<(Board, u32)> {
        let mut game = zero2048_game::Game::new(seed, zero2048_game::SpawnRule::STANDARD);
        let mut rng = zero2048_game::rng_from_seed(seed ^ 77);
        let mut path = Vec::new();
        while !game.is_over() {
            let legal: Vec<_> = zero2048_game::Direction::ALL
                .into_iter()
                .filter_map(|d| game.board().legal_move(d).map(|m| (d, m)))
                .collect();
            let (direction, moved) = legal[(rand_core::Rng::next_u32(&mut rng) as usize) % legal.len()];
            game.apply(direction, moved);
            path.push((moved.board, moved.reward));
        }
        path
    }

    #[test]
    fn backward_td_lambda_equals_the_plain_pass() {
        for lambda in [0.0, 0.5, 1.0] {
            let td = learner(TdConfig { learning_rate: 0.1, lambda, ..TdConfig::td0() });
            let config = NTupleConfig::small_4x4();
            let mut plain: Vec<Vec<f32>> =
                (0..config.tuples.len()).map(|t| vec![0.0; config.table_len(t)]).collect();
            for seed in 0..20 {
                let path = random_path(seed);
                let finished = seed % 4 != 3;
                let path = if finished { path } else { path[..path.len() / 2].to_vec() };
                td.learn_path(&path, finished).unwrap();
                plain_td(&config.tuples, &mut plain, &path, 0.1, lambda, finished);
            }
            for (t, table) in td.network().tables().iter().enumerate() {
                for (i, w) in table.iter().enumerate() {
                    let p = plain[t][i];
                    assert!(
                        (w - p).abs() <= 1e-3 * p.abs().max(1.0),
                        "λ {lambda}: weight {t}/{i} is {w}, plainly {p}"
                    );
                }
            }
        }
    }

    /// Online TD(λ) written plainly: each afterstate learned once `window` later ones are known,
    /// from the values seen as the game was played; the rest backward at the end.
    fn plain_online(
        tuples: &[Vec<u8>],
        tables: &mut [Vec<f32>],
        path: &[(Board, u32)],
        alpha: f32,
        lambda: f32,
        window: usize,
    ) {
        let step = alpha / (tuples.len() * 8) as f32;
        let mut seen: Vec<f32> = Vec::new();
        for t in 0..path.len() {
            seen.push(plain_value(tuples, tables, path[t].0));
            if t >= window {
                let i = t - window;
                let mut target = seen[t];
                for j in (i + 1..=t).rev() {
                    target = path[j].1 as f32
                        + if j == t { seen[j] } else { lambda * target + (1.0 - lambda) * seen[j] };
                }
                plain_update(tuples, tables, path[i].0, step * (target - seen[i]));
            }
        }
        let mut target = 0.0;
        for t in (path.len().saturating_sub(window)..path.len()).rev() {
            let error = target - plain_value(tuples, tables, path[t].0);
            let updated = plain_update(tuples, tables, path[t].0, step * error);
            target = path[t].1 as f32 + lambda * target + (1.0 - lambda) * updated;
        }
    }

    #[test]
    fn online_td_lambda_equals_the_plain_pass() {
        for (lambda, window) in [(0.0, 0), (0.5, 0), (0.5, 2)] {
            let config = TdConfig { mode: TdMode::Online, lambda, window, ..TdConfig::td0() };
            let window = config.window();
            let td = learner(config);
            let shape = NTupleConfig::small_4x4();
            let mut plain: Vec<Vec<f32>> =
                (0..shape.tuples.len()).map(|t| vec![0.0; shape.table_len(t)]).collect();
            let mut trace = Trace::default();
            for seed in 0..10 {
                let path = random_path(seed);
                for &(afterstate, reward) in &path {
                    let seen = td.network().value(afterstate);
                    td.online_move(&mut trace, afterstate, reward, seen, None).unwrap();
                }
                td.online_end(&mut trace, true).unwrap();
                plain_online(&shape.tuples, &mut plain, &path, 0.1, lambda, window);
            }
            for (t, table) in td.network().tables().iter().enumerate() {
                for (i, w) in table.iter().enumerate() {
                    let p = plain[t][i];
                    assert!(
                        (w - p).abs() <= 1e-3 * p.abs().max(1.0),
                        "λ {lambda} window {window}: weight {t}/{i} is {w}, plainly {p}"
                    );
                }
            }
            assert_eq!(td.games(), 10);
        }
        assert_eq!(TdConfig { lambda: 0.0, ..TdConfig::default() }.window(), 1);
        assert_eq!(TdConfig { lambda: 0.5, ..TdConfig::default() }.window(), 4);
    }

    #[test]
    fn online_td0_through_the_move_choices_kept_indices_learns_the_same() {
        // A compiled shape (the small one keeps no indices); zeroed networks touch only the
        // pages the games write.
        let config = TdConfig { mode: TdMode::Online, lambda: 0.0, ..TdConfig::td0() };
        let through_kept = TdLearner::new(
            Arc::new(NTupleNetwork::zeroed(NTupleConfig::standard_4x6()).unwrap()),
            config.clone(),
            0,
        );
        let computing =
            TdLearner::new(Arc::new(NTupleNetwork::zeroed(NTupleConfig::standard_4x6()).unwrap()), config, 0);
        let (mut kept_trace, mut plain_trace) = (Trace::default(), Trace::default());
        let mut kept = [KeptFeatures::default()];
        let mut seen = Vec::new();
        for seed in 0..6 {
            let path = random_path(seed);
            for &(afterstate, reward) in &path {
                let mut value = [0.0];
                through_kept.network().values_keeping(&[afterstate], &mut value, &mut kept);
                assert_eq!(kept[0].board(), Some(afterstate));
                assert_eq!(value[0], computing.network().value(afterstate));
                // Every other move without indices, as after a deeper search.
                let offered = (seen.len() % 2 == 0).then_some(&kept[0]);
                through_kept.online_move(&mut kept_trace, afterstate, reward, value[0], offered).unwrap();
                computing.online_move(&mut plain_trace, afterstate, reward, value[0], None).unwrap();
                seen.push(afterstate);
            }
            through_kept.online_end(&mut kept_trace, true).unwrap();
            computing.online_end(&mut plain_trace, true).unwrap();
        }
        assert!(seen.iter().any(|&b| computing.network().value(b) != 0.0), "the games taught something");
        for board in seen {
            assert_eq!(through_kept.network().value(board), computing.network().value(board), "{board:?}");
        }
    }

    #[test]
    fn coherence_starts_at_its_game_count_and_keeps_its_tables() {
        let td = learner(TdConfig { coherence: true, coherence_after_games: 2, ..TdConfig::default() });
        let a: Board = "2 0 0 0 | 0 0 0 0 | 0 0 0 0 | 0 0 0 0".parse().unwrap();
        td.learn_path(&[(a, 4), (a, 4)], true).unwrap();
        td.learn_path(&[(a, 4), (a, 4)], true).unwrap();
        assert!(td.coherence().is_none(), "two games of plain TD first");
        td.learn_path(&[(a, 4), (a, 4)], true).unwrap();
        let tc = td.coherence().expect("TC from the third game");
        assert!(tc.tables().iter().any(|t| t.iter().any(|x| x != 0.0)));
        assert_eq!(td.games(), 3);
    }

    #[test]
    fn optimistic_initialisation_values_every_afterstate_alike() {
        let td = learner(TdConfig { initial_value: 320_000.0, ..TdConfig::td0() });
        for board in ["2 0 0 0 | 0 0 0 0 | 0 0 0 0 | 0 0 0 0", "2 4 8 16 | 32 0 0 0 | 0 0 0 0 | 0 0 0 2"] {
            let value = td.network().value(board.parse().unwrap());
            assert!((value - 320_000.0).abs() < 1.0, "{value}");
        }
    }
}
