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
use zero2048_model::NTupleNetwork;
use zero2048_search::{ExpectimaxConfig, ExpectimaxPlayer, play_game_to_end};

/// The network self-play uses now, swapped by the trainer at each revision.
#[derive(Clone)]
pub struct CurrentModel {
    slot: Arc<RwLock<(u64, Arc<NTupleNetwork>)>>,
}

impl CurrentModel {
    /// Starts with `network` as revision `revision`.
    pub fn new(revision: u64, network: Arc<NTupleNetwork>) -> CurrentModel {
        CurrentModel { slot: Arc::new(RwLock::new((revision, network))) }
    }

    /// The current revision and network.
    pub fn get(&self) -> (u64, Arc<NTupleNetwork>) {
        let slot = self.slot.read().unwrap_or_else(|e| e.into_inner());
        (slot.0, Arc::clone(&slot.1))
    }

    /// Publishes a new network to the players; returns the one it replaces (players may still
    /// hold it until their current game ends).
    pub fn set(&self, revision: u64, network: Arc<NTupleNetwork>) -> Arc<NTupleNetwork> {
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
    (0..config.threads.max(1))
        .map(|thread| {
            let (model, games, stop) = (model.clone(), games.clone(), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(format!("selfplay-{thread}"))
                .spawn(move || {
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
                        let seed = derive_seed(config.seed, ((thread as u64) << 40) | played);
                        let (record, score, board) = play_game_to_end(&mut player, seed, config.rule);
                        let max_tile = board.max_tile();
                        if games.send(PlayedGame { revision, record, score, max_tile }).is_err() {
                            break;
                        }
                        played += 1;
                    }
                    played
                })
                .expect("a self-play thread starts")
        })
        .collect()
}
