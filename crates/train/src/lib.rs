//! Learning 2048 from self-play game records.
//!
//! [`TdLearner`] learns afterstate values by temporal differences from verified game records (the
//! same records remote workers will upload), [`TrainingRun`] runs self-play threads, the learner,
//! revisions published through the storage adapter, the run database ([`RunDb`]) and the
//! evaluation suite ([`evaluate`]) on fixed seeds.
//!
//! This crate must never learn from a record it has not replayed and verified, and never name a
//! revision in the database before storage has published it.

pub mod db;
mod evaluation;
mod learner;
mod run;

pub use db::{Counters, EvaluationRow, RevisionRow, RunDb};
pub use evaluation::{EvalConfig, evaluate};
pub use learner::{GameLearned, TdConfig, TdLearner};
pub use run::{Budget, Progress, Summary, TrainConfig, TrainError, TrainingRun};
