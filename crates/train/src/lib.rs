//! Learning 2048 from self-play game records.
//!
//! [`TdLearner`] learns afterstate values by temporal differences from verified game records (the
//! same records remote workers upload); [`ingest`] verifies and stores games in the run database
//! ([`RunDb`]), which is also the queue the learner reads; [`TrainingRun`] runs the learner, the
//! optional in-process self-play threads, revisions published through the storage adapter, and the
//! evaluation suite ([`evaluate`]) on fixed seeds. [`ZeroLearner`] is the learner of policy-value
//! runs ([`ModelKind::PolicyValue`]): it trains the network on MCTS visit distributions and
//! bootstrapped returns from a replay window, with a held-out validation set.
//!
//! This crate must never learn from a record it has not replayed and verified, and never name a
//! revision in the database before storage has published it.

pub mod db;
mod evaluation;
mod ingest;
mod learner;
mod run;
mod zero;

pub use db::{Counters, EvaluationRow, NewGame, RevisionRow, RunDb, StoredGame, ThroughputSample, WorkerRow};
pub use evaluation::{EvalConfig, evaluate};
pub use ingest::{Checked, accepted_revisions, check_batch, ingest, store_checked};
pub use learner::{GameLearned, TdConfig, TdLearner};
pub use run::{
    Budget, LOCAL_WORKER, LiveState, ModelKind, Progress, RunObserver, Summary, TrainConfig, TrainError,
    TrainingRun,
};
pub use zero::{RewardKind, ZeroConfig, ZeroLearner, ZeroReport};
