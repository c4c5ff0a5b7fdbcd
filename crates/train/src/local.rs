//! Self-play in the training process: the game runner's threads with sinks that feed this run.
//!
//! - n-tuple runs: each thread plays on the one shared network and learns each game as it ends,
//!   in the same thread (no copy of the weights, no replay). The records go to a recorder thread
//!   that stores them in the run database, off the hot path, as already learned.
//! - policy-value runs: threads play a snapshot of the learner's network with MCTS and send each
//!   game to an uplink thread that verifies and queues it for the learner.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zero2048_game::Board;
use zero2048_model::KeptFeatures;
use zero2048_protocol::{BatchEntry, UploadRules};
use zero2048_selfplay::{Budget, Control, CurrentModel, FinishedGame, GameSink, Runner, SinkClosed};

use crate::db::{DatabaseUrl, GameShelf, NewGame, RunDb};
use crate::ingest::ingest;
use crate::learner::{TdLearner, TdMode, Trace};
use crate::live::LiveState;
use crate::run::TrainError;

/// The worker name under which in-process self-play games are stored.
pub const LOCAL_WORKER: &str = "local";

/// Games waiting for the recorder or the uplink before the threads wait for them.
const QUEUE: usize = 4096;

/// The first error a thread hit, reported by the run.
type FirstError = Arc<Mutex<Option<TrainError>>>;

fn note(first: &FirstError, error: TrainError) {
    first.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(error);
}

/// Learns each game in the thread that played it (as it is played, or when it ends), then hands
/// the record to the recorder.
struct LearningSink {
    learner: Arc<TdLearner>,
    online: bool,
    trace: Trace,
    live: Arc<LiveState>,
    budget: Arc<Budget>,
    records: SyncSender<FinishedGame>,
    error: FirstError,
    dropped: Arc<Dropped>,
}

/// Games an abort (the time limit, Ctrl-C) stopped before they ended: local games are not
/// checkpointed, so the run says how much play it threw away.
#[derive(Debug, Default)]
pub struct Dropped {
    games: AtomicU64,
    moves: AtomicU64,
}

impl Dropped {
    fn add(&self, game: &zero2048_selfplay::PartialGame) {
        self.games.fetch_add(1, Ordering::Relaxed);
        self.moves.fetch_add(game.record.steps.len() as u64, Ordering::Relaxed);
    }

    /// Games dropped, and the moves they had played.
    pub fn counts(&self) -> (u64, u64) {
        (self.games.load(Ordering::Relaxed), self.moves.load(Ordering::Relaxed))
    }
}

impl GameSink for LearningSink {
    fn may_start(&mut self) -> bool {
        self.budget.claim()
    }

    #[inline]
    fn moved(&mut self, afterstate: Board, reward: u32, value: f32, kept: Option<&KeptFeatures>) {
        if self.online
            && let Err(e) = self.learner.online_move(&mut self.trace, afterstate, reward, value, kept)
        {
            note(&self.error, e.into());
        }
    }

    fn finished(&mut self, game: FinishedGame, path: &[(Board, u32)]) -> Result<(), SinkClosed> {
        let learned = if self.online {
            self.learner.online_end(&mut self.trace, true)
        } else {
            self.learner.learn_path(path, true)
        };
        if let Err(e) = learned {
            note(&self.error, e.into());
            return Err(SinkClosed);
        }
        self.live.add_game(path.len() as u32, game.score, game.max_tile, game.origin.is_some());
        self.records.send(game).map_err(|_| SinkClosed)
    }

    fn interrupted(&mut self, game: zero2048_selfplay::PartialGame) -> Result<(), SinkClosed> {
        // What was learned online of an abandoned game stays; its pending afterstates have no
        // target.
        let _ = self.learner.online_end(&mut self.trace, false);
        self.dropped.add(&game);
        Ok(())
    }
}

/// Sends each game to the uplink, which verifies and queues it for the learner.
struct QueueSink {
    budget: Arc<Budget>,
    games: SyncSender<FinishedGame>,
    dropped: Arc<Dropped>,
}

impl GameSink for QueueSink {
    fn may_start(&mut self) -> bool {
        self.budget.claim()
    }

    fn finished(&mut self, game: FinishedGame, _path: &[(Board, u32)]) -> Result<(), SinkClosed> {
        self.games.send(game).map_err(|_| SinkClosed)
    }

    fn interrupted(&mut self, game: zero2048_selfplay::PartialGame) -> Result<(), SinkClosed> {
        self.dropped.add(&game);
        Ok(())
    }
}

/// The running local self-play.
pub struct LocalPlay {
    players: Vec<JoinHandle<u64>>,
    store: JoinHandle<()>,
    /// Stops and pauses.
    pub control: Arc<Control>,
    /// The model the threads play.
    pub model: Arc<CurrentModel>,
    /// Games stopped before their end.
    pub dropped: Arc<Dropped>,
    error: FirstError,
}

/// What local self-play needs of its run.
pub struct LocalSetup<'a> {
    /// Threads.
    pub threads: usize,
    /// Seed of the session's games.
    pub seed: u64,
    /// Games this session may start.
    pub budget: Option<u64>,
    /// The run database (the store thread opens its own connection).
    pub database: &'a DatabaseUrl,
    /// Where game records are kept.
    pub games: &'a GameShelf,
    /// The run's shared state.
    pub live: &'a Arc<LiveState>,
}

impl LocalPlay {
    /// Starts the threads: learning as they play into `learner` (n-tuple), or queueing their
    /// games for the run's learner (`learner` is `None`).
    pub fn start(setup: LocalSetup<'_>, learner: Option<Arc<TdLearner>>) -> Result<LocalPlay, TrainError> {
        let control = Arc::new(Control::default());
        let model = Arc::new(CurrentModel::new());
        let budget = Arc::new(Budget::new(setup.budget));
        let error: FirstError = Arc::default();
        let dropped: Arc<Dropped> = Arc::default();
        let runner = Runner {
            threads: setup.threads,
            name: "selfplay".into(),
            seed: setup.seed,
            model: Arc::clone(&model),
            control: Arc::clone(&control),
            resume: Arc::default(),
        };
        let (games, received) = sync_channel::<FinishedGame>(QUEUE);
        let db = RunDb::open(setup.database)?.with_games(setup.games.clone());
        let spawn_error =
            |source| TrainError::Io { action: "starting", path: "self-play threads".into(), source };
        let (players, store) = match learner {
            Some(learner) => {
                let store = spawn_store("local-recorder", {
                    let (live, error) = (Arc::clone(setup.live), Arc::clone(&error));
                    move || record(db, received, &live, &error)
                })?;
                let online = learner.config().mode == TdMode::Online;
                let players = runner
                    .spawn(|_| LearningSink {
                        learner: Arc::clone(&learner),
                        online,
                        trace: Trace::default(),
                        live: Arc::clone(setup.live),
                        budget: Arc::clone(&budget),
                        records: games.clone(),
                        error: Arc::clone(&error),
                        dropped: Arc::clone(&dropped),
                    })
                    .map_err(spawn_error)?;
                (players, store)
            }
            None => {
                let store = spawn_store("local-uplink", {
                    let (live, error) = (Arc::clone(setup.live), Arc::clone(&error));
                    move || uplink(db, received, &live, &error)
                })?;
                let players = runner
                    .spawn(|_| QueueSink {
                        budget: Arc::clone(&budget),
                        games: games.clone(),
                        dropped: Arc::clone(&dropped),
                    })
                    .map_err(spawn_error)?;
                (players, store)
            }
        };
        Ok(LocalPlay { players, store, control, model, dropped, error })
    }

    /// Whether every playing thread has returned.
    pub fn finished(&self) -> bool {
        self.players.iter().all(JoinHandle::is_finished)
    }

    /// Waits for the threads and the store thread (every game played is then stored), and
    /// reports the first error any of them hit.
    pub fn join(self) -> Result<(), TrainError> {
        for player in self.players {
            if player.join().is_err() {
                tracing::error!("a self-play thread panicked");
            }
        }
        if self.store.join().is_err() {
            tracing::error!("the local store thread panicked");
        }
        match self.error.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

fn spawn_store(name: &str, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, TrainError> {
    std::thread::Builder::new().name(name.into()).spawn(body).map_err(|source| TrainError::Io {
        action: "starting",
        path: name.into(),
        source,
    })
}

/// Games the recorder or the uplink takes at once: one chunk of the game store, one transaction.
const BATCH: usize = 1024;

/// How long the recorder or the uplink lets games gather after the first one arrives, at most.
/// Each batch is a chunk file written and synced twice, and a bucket's PUT: at 50 ms a default
/// hour wrote about 70,000 of them and the syncs cost 2-3% of a TD(0) run's CPU (BENCHMARKS.md,
/// issue 11). A second is what a killed process can lose of games it already learned.
const WINDOW: Duration = Duration::from_secs(1);

/// How often a gathering recorder or uplink looks at the queue.
const TICK: Duration = Duration::from_millis(50);

/// Waits for a game, then gathers those that follow for up to [`WINDOW`] or until [`BATCH`] are
/// in hand. `None` once every sender is gone and nothing is left.
fn next_batch(received: &Receiver<FinishedGame>) -> Option<Vec<FinishedGame>> {
    gather(received, BATCH, WINDOW, TICK)
}

/// [`next_batch`] with its limits as arguments. Between looks the thread sleeps rather than
/// waiting on the channel: a receiver blocked on the channel is woken by every send, which cost
/// the playing threads a futex call per game and this thread a context switch per game (about
/// 3% of a 4×6 run's CPU, BENCHMARKS.md); a sleeping one looks once per `tick`.
fn gather<T>(received: &Receiver<T>, most: usize, window: Duration, tick: Duration) -> Option<Vec<T>> {
    let first = received.recv().ok()?;
    let started = Instant::now();
    let mut batch = vec![first];
    loop {
        while batch.len() < most {
            match received.try_recv() {
                Ok(item) => batch.push(item),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Some(batch),
            }
        }
        let waited = started.elapsed();
        if batch.len() >= most || waited >= window {
            return Some(batch);
        }
        std::thread::sleep(tick.min(window - waited));
    }
}

/// Stores games the threads already learned: for the dashboard and exports, never learned again.
fn record(mut db: RunDb, received: Receiver<FinishedGame>, live: &LiveState, error: &FirstError) {
    while let Some(batch) = next_batch(&received) {
        let encoded: Result<Vec<Vec<u8>>, _> = batch.iter().map(|g| g.record.encode()).collect();
        let encoded = match encoded {
            Ok(encoded) => encoded,
            Err(e) => {
                note(error, TrainError::Encode(e));
                continue;
            }
        };
        let games: Vec<NewGame<'_>> = batch
            .iter()
            .zip(&encoded)
            .map(|(game, bytes)| NewGame {
                uuid: *game.uuid.as_bytes(),
                origin: game.origin.map(|o| (*o.parent.as_bytes(), o.step)),
                revision: game.revision,
                score: game.score,
                moves: game.record.steps.len() as u32,
                max_tile: game.max_tile,
                record: bytes,
            })
            .collect();
        let stored = db.insert_games(LOCAL_WORKER, &games, 0, None, false).and_then(|_| db.last_game_id());
        match stored {
            Ok(id) => live.stored(id, false),
            Err(e) => {
                note(error, e.into());
                return;
            }
        }
    }
}

/// Verifies and queues policy-value games for the learner.
fn uplink(mut db: RunDb, received: Receiver<FinishedGame>, live: &LiveState, error: &FirstError) {
    while let Some(batch) = next_batch(&received) {
        let entries: Vec<BatchEntry> = batch
            .into_iter()
            .map(|game| BatchEntry {
                uuid: game.uuid,
                revision: game.revision,
                origin: game.origin,
                record: Ok(game.record),
            })
            .collect();
        let accepted = live.accepted();
        let rules = UploadRules { accepted_revisions: &accepted, search: live.search_requirement() };
        let stored = ingest(&mut db, LOCAL_WORKER, &entries, &rules).and_then(|reply| {
            for rejection in &reply.rejected {
                tracing::warn!("a local self-play game was refused: {}", rejection.reason);
            }
            db.last_game_id()
        });
        match stored {
            Ok(id) => live.stored(id, true),
            Err(e) => {
                note(error, e.into());
                return;
            }
        }
    }
}

/// Pauses policy-value self-play while more than `max` of its games wait to be learned: they
/// would come from an ever older snapshot.
pub fn pace(control: &Control, live: &LiveState, max: u64) {
    let waiting = live
        .queued_through
        .load(Ordering::Relaxed)
        .saturating_sub(live.learned_through.load(Ordering::Relaxed));
    control.pause.store(waiting > max, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_takes_what_waits_up_to_its_limit_and_leaves_the_rest_in_order() {
        let (send, received) = sync_channel(100);
        for i in 0..10 {
            send.send(i).unwrap();
        }
        let batch = gather(&received, 4, Duration::from_secs(60), Duration::from_millis(1)).unwrap();
        assert_eq!(batch, [0, 1, 2, 3], "a full batch returns without waiting out its window");
        let batch = gather(&received, 4, Duration::from_secs(60), Duration::from_millis(1)).unwrap();
        assert_eq!(batch, [4, 5, 6, 7]);
    }

    #[test]
    fn a_batch_ends_when_the_senders_are_gone_and_then_there_is_none() {
        let (send, received) = sync_channel(100);
        send.send(1).unwrap();
        send.send(2).unwrap();
        drop(send);
        // The window is an hour: only the closed channel can end this batch.
        let batch = gather(&received, 1024, Duration::from_secs(3600), Duration::from_millis(1)).unwrap();
        assert_eq!(batch, [1, 2]);
        assert!(gather(&received, 1024, Duration::from_secs(3600), Duration::from_millis(1)).is_none());
    }

    #[test]
    fn an_open_channel_ends_a_batch_at_its_window_and_later_games_wait_for_the_next() {
        let (send, received) = sync_channel(100);
        for i in 0..3 {
            send.send(i).unwrap();
        }
        let batch = gather(&received, 1024, Duration::from_millis(20), Duration::from_millis(1)).unwrap();
        assert_eq!(batch, [0, 1, 2], "the sender is still there: the window ended the batch");
        send.send(3).unwrap();
        assert_eq!(
            gather(&received, 1024, Duration::from_millis(20), Duration::from_millis(1)).unwrap(),
            [3]
        );
    }

    #[test]
    fn a_batch_gathers_games_that_arrive_while_it_waits() {
        let (send, received) = sync_channel(100);
        send.send(0).unwrap();
        let sender = std::thread::spawn(move || {
            for i in 1..4 {
                std::thread::sleep(Duration::from_millis(5));
                send.send(i).unwrap();
            }
        });
        // The sender closes the channel long before the window: the batch holds all four.
        let batch = gather(&received, 1024, Duration::from_secs(60), Duration::from_millis(1)).unwrap();
        assert_eq!(batch, [0, 1, 2, 3]);
        sender.join().unwrap();
    }
}
