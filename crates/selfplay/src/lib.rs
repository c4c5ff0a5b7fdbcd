//! Self-play: the one game runner behind both the local training run and remote workers.
//!
//! [`Runner`] starts threads that play the model in [`CurrentModel`] the way the run's
//! [`zero2048_protocol::PlaySpec`] says (expectimax on an n-tuple network, one game per thread;
//! or MCTS on a policy-value network, many games per thread batched into each network call by
//! [`BatchedPlay`]), with the restart strategy when the spec asks for it, and hand every finished
//! game to the thread's [`GameSink`]. The local trainer's sink learns the game in the same
//! thread, on the one shared network, and queues the record for the database; the worker's sink
//! spools it for upload. Games interrupted by an abort go to [`GameSink::interrupted`] (the
//! worker checkpoints them) and come back through the resume queue. Seeds come from the run
//! seed, the thread and a game counter: a run is reproducible game by game.
//!
//! This crate must never learn, publish or do I/O itself: it plays, and the sink decides what a
//! game becomes.
//!
//! ```
//! use std::sync::Arc;
//! use zero2048_game::{Board, SpawnRule};
//! use zero2048_model::{NTupleConfig, NTupleNetwork};
//! use zero2048_protocol::{PlaySpec, SearchSpec};
//! use zero2048_selfplay::{Control, CurrentModel, Engine, FinishedGame, GameSink, Model, Runner, SinkClosed};
//!
//! struct Count(u64);
//! impl GameSink for Count {
//!     fn may_start(&mut self) -> bool {
//!         self.0 < 3
//!     }
//!     fn finished(&mut self, game: FinishedGame, path: &[(Board, u32)]) -> Result<(), SinkClosed> {
//!         assert_eq!(game.record.steps.len(), path.len());
//!         self.0 += 1;
//!         Ok(())
//!     }
//! }
//!
//! let model = Arc::new(CurrentModel::new());
//! model.set(Model {
//!     revision: 1,
//!     engine: Engine::Ntuple(Arc::new(NTupleNetwork::zeroed(NTupleConfig::small_4x4()).unwrap())),
//!     play: PlaySpec { spawn: SpawnRule::STANDARD, search: SearchSpec::Expectimax { depth: 1 }, restart: None },
//! });
//! let runner = Runner {
//!     threads: 1,
//!     name: "example".into(),
//!     seed: 7,
//!     model,
//!     control: Arc::new(Control::default()),
//!     resume: Arc::default(),
//! };
//! let games: u64 = runner.spawn(|_| Count(0)).unwrap().into_iter().map(|t| t.join().unwrap()).sum();
//! assert_eq!(games, 3);
//! ```

mod batched;
mod runner;

pub use batched::{BatchedPlay, PlayCounters, SearchedGame, StartedGame, play_series};
pub use runner::{
    Budget, Control, CurrentModel, Engine, FinishedGame, GameSink, GamesHeld, Model, PartialGame,
    ResumeQueue, Runner, SinkClosed, new_uuid,
};
