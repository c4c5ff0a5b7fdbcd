//! Learning 2048 from self-play: the learners, the run loop, and the run database.
//!
//! [`TdLearner`] learns afterstate values by TD(λ) (optionally with temporal coherence) on an
//! n-tuple network shared by every thread of the run; [`ZeroLearner`] trains the policy-value
//! network on MCTS visit distributions and bootstrapped returns. [`TrainingRun`] opens or resumes a
//! run and learns: local self-play threads ([`SelfPlay::Local`]) learn each n-tuple game as they
//! finish it; every other game (remote uploads, local policy-value games) goes through [`ingest`]
//! (verified, stored, queued in [`RunDb`]) and the run loop learns the queue after its cursor.
//! Every so many games or seconds a revision is published through the storage adapter with the
//! run's typed specs ([`TrainConfig::run_spec`]) and evaluated on fixed seeds ([`evaluate`]).
//!
//! This crate must never learn from a record it has not replayed and verified (its own threads'
//! games are learned as they are played, on the engine's own moves), and never name a revision in
//! the database before storage has published it.

mod config;
pub mod db;
mod evaluation;
mod ingest;
mod learner;
mod learners;
mod live;
mod local;
mod lock;
mod publish;
mod run;
mod state;
mod zero;

pub use config::{ConfigError, TrainConfig, ntuple_spec, policy_value_spec};
pub use db::{Counters, EvaluationRow, NewGame, RevisionRow, RunDb, StoredGame, ThroughputSample, WorkerRow};
pub use evaluation::{EvalConfig, evaluate};
pub use ingest::{
    Checked, Prepared, check_batch, commit_prepared, ingest, prepare, store_checked, stored_parent,
};
pub use learner::{Coherence, GameLearned, LearnError, RateStep, TdConfig, TdLearner, TdMode, Trace};
pub use learners::{EvaluationJob, Learner};
pub use live::{LiveState, Progress, Totals};
pub use local::LOCAL_WORKER;
pub use lock::RunLock;
pub use publish::Acceptance;
pub use run::{Budget, RunObserver, SelfPlay, Summary, TrainError, TrainingRun, state_dir};
pub use zero::{RewardKind, ZeroConfig, ZeroError, ZeroLearner, ZeroReport};
pub use zero2048_protocol::ModelKind;
