//! Self-play: threads that play games with the current model and emit their records.
//!
//! Each thread plays with a snapshot of the latest published network ([`CurrentModel`]), picks up
//! a newer one at the next game boundary, and sends every finished game's record to the learner
//! through a bounded channel, so self-play never runs far ahead of learning. Seeds come from the run
//! seed, the thread and a game counter: a run is reproducible game by game.
//!
//! This crate must never learn or publish: it only plays, the same way a remote worker does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use zero2048_game::{GameRecord, SpawnRule, derive_seed};
use zero2048_model::{NTupleNetwork, PolicyValueNet};
use zero2048_search::mcts::{BatchedPlay, MctsConfig};
use zero2048_search::{ExpectimaxConfig, ExpectimaxPlayer, play_game_to_end};

/// The network self-play uses now, swapped by the trainer at each revision (an n-tuple network
/// for expectimax self-play, a policy-value network for MCTS self-play).
pub struct CurrentModel<M = NTupleNetwork> {
    slot: Arc<RwLock<(u64, Arc<M>)>>,
}

impl<M> Clone for CurrentModel<M> {
    fn clone(&self) -> Self {
        CurrentModel { slot: Arc::clone(&self.slot) }
    }
}

impl<M> CurrentModel<M> {
    /// Starts with `network` as revision `revision`.
    pub fn new(revision: u64, network: Arc<M>) -> CurrentModel<M> {
        CurrentModel { slot: Arc::new(RwLock::new((revision, network))) }
    }

    /// The current revision and network.
    pub fn get(&self) -> (u64, Arc<M>) {
        let slot = self.slot.read().unwrap_or_else(|e| e.into_inner());
        (slot.0, Arc::clone(&slot.1))
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        self.slot.read().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Publishes a new network to the players; returns the one it replaces (players may still
    /// hold it until their current game ends).
    pub fn set(&self, revision: u64, network: Arc<M>) -> Arc<M> {
        std::mem::replace(&mut *self.slot.write().unwrap_or_else(|e| e.into_inner()), (revision, network)).1
    }
}

/// A finished self-play game.
pub struct PlayedGame {
    /// The revision it was played with.
    pub revision: u64,
    /// The game.
    pub record: GameRecord,
    /// Its final score, as played.
    pub score: u64,
    /// Its largest tile, as played.
    pub max_tile: u32,
}

/// How self-play plays.
#[derive(Clone, Copy, Debug)]
pub struct SelfPlayConfig {
    /// Threads.
    pub threads: usize,
    /// Own moves searched per move (1 = greedy on afterstate values, the TD standard).
    pub depth: u32,
    /// The spawn rule.
    pub rule: SpawnRule,
    /// Run seed; game seeds derive from it, the thread and a counter.
    pub seed: u64,
}

/// Starts the threads. They stop at the next game boundary once `stop` is set, or when the
/// receiving end of `games` is dropped. Each returns the number of games it sent.
pub fn spawn(
    config: SelfPlayConfig,
    model: CurrentModel,
    games: SyncSender<PlayedGame>,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<u64>> {
    start_threads(config.threads, "selfplay", model, games, stop, move |thread, model, games, stop| {
        let mut played = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let (revision, network) = model.get();
            let search = ExpectimaxConfig {
                depth: config.depth,
                four_probability: config.rule.four_probability() as f32,
                transposition_bits: None,
                ..ExpectimaxConfig::default()
            };
            let mut player = ExpectimaxPlayer::new(network, search);
            let seed = derive_seed(config.seed, (thread << 40) | played);
            let (record, score, board) = play_game_to_end(&mut player, seed, config.rule);
            let max_tile = board.max_tile();
            if games.send(PlayedGame { revision, record, score, max_tile }).is_err() {
                break;
            }
            played += 1;
        }
        played
    })
}

/// Starts `threads` threads named `name-N`, each running `body` with its own handles.
fn start_threads<M: Send + Sync + 'static>(
    threads: usize,
    name: &str,
    model: CurrentModel<M>,
    games: SyncSender<PlayedGame>,
    stop: Arc<AtomicBool>,
    body: impl Fn(u64, CurrentModel<M>, SyncSender<PlayedGame>, Arc<AtomicBool>) -> u64 + Send + Clone + 'static,
) -> Vec<JoinHandle<u64>> {
    (0..threads.max(1) as u64)
        .map(|thread| {
            let (model, games, stop, body) = (model.clone(), games.clone(), Arc::clone(&stop), body.clone());
            std::thread::Builder::new()
                .name(format!("{name}-{thread}"))
                .spawn(move || body(thread, model, games, stop))
                .expect("a self-play thread starts")
        })
        .collect()
}

/// How MCTS self-play plays.
#[derive(Clone, Copy, Debug)]
pub struct MctsSelfPlayConfig {
    /// Threads.
    pub threads: usize,
    /// Games each thread plays at once (the evaluator's batch size).
    pub parallel: usize,
    /// The search.
    pub search: MctsConfig,
    /// The spawn rule.
    pub rule: SpawnRule,
    /// Run seed; game seeds derive from it, the thread and a counter.
    pub seed: u64,
}

/// Starts MCTS self-play threads, each playing `parallel` games at once with one batched network
/// call per round. A thread switches to a newer network once its games in progress end (a game
/// is played by one revision only). They stop once `stop` is set (games in progress are
/// dropped) or when the receiving end of `games` is dropped. Each returns the games it sent.
pub fn spawn_mcts(
    config: MctsSelfPlayConfig,
    model: CurrentModel<PolicyValueNet>,
    games: SyncSender<PlayedGame>,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<u64>> {
    start_threads(config.threads, "selfplay-mcts", model, games, stop, move |thread, model, games, stop| {
        let mut started = 0u64;
        let mut sent = 0u64;
        let driver = BatchedPlay::new(config.search, config.rule, config.parallel);
        while !stop.load(Ordering::Relaxed) {
            let (revision, network) = model.get();
            let closed = std::cell::Cell::new(false);
            driver.run(
                &*network,
                || {
                    if stop.load(Ordering::Relaxed) || model.revision() != revision || closed.get() {
                        return None;
                    }
                    started += 1;
                    Some(derive_seed(config.seed, (thread << 40) | started))
                },
                |game| {
                    let played = PlayedGame {
                        revision,
                        score: game.score,
                        max_tile: game.max_tile,
                        record: game.record,
                    };
                    if games.send(played).is_err() {
                        closed.set(true);
                    } else {
                        sent += 1;
                    }
                },
                &stop,
            );
            if closed.get() {
                break;
            }
        }
        sent
    })
}
