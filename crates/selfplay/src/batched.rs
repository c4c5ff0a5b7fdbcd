//! Many MCTS games at once: one tree per game, one leaf of every tree per network call, so the
//! network always runs at a useful batch size.

use std::sync::atomic::{AtomicBool, Ordering};

use zero2048_game::{Board, Game, GameRecord, SpawnRule, derive_seed};
use zero2048_search::{GameResult, MctsConfig, PolicyValue, Selected, Tree};

/// A game finished by [`BatchedPlay`], with what its caller attached to it.
#[derive(Clone, Debug)]
pub struct SearchedGame<T> {
    /// Where the game's spawns came from.
    pub seed: u64,
    /// The record, with the search statistics of every move.
    pub record: GameRecord,
    /// Final score.
    pub score: u64,
    /// Largest tile.
    pub max_tile: u32,
    /// The caller's tag.
    pub tag: T,
}

/// Counters of a [`BatchedPlay::run`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlayCounters {
    /// Simulations run (each adds one visit below a root).
    pub simulations: u64,
    /// Boards evaluated (leaves and roots).
    pub evaluations: u64,
    /// Evaluator calls (one per round).
    pub batches: u64,
    /// Moves played.
    pub moves: u64,
}

/// A game to play: where it is now, the seed its spawns come from, and the caller's tag.
pub struct StartedGame<T> {
    /// The game (new, or resumed from a checkpoint).
    pub game: Game,
    /// The seed of its spawns (and its tree's noise).
    pub seed: u64,
    /// Handed back with the finished or interrupted game.
    pub tag: T,
}

struct Slot<T> {
    seed: u64,
    game: Game,
    tree: Tree,
    tag: T,
}

/// Plays many games at once, one tree each, evaluating one leaf of every tree per evaluator call.
/// With `parallel` games the evaluator runs at batch `parallel` (fewer near the end).
pub struct BatchedPlay {
    config: MctsConfig,
    rule: SpawnRule,
    parallel: usize,
}

impl BatchedPlay {
    /// A driver for `parallel` simultaneous games.
    pub fn new(config: MctsConfig, rule: SpawnRule, parallel: usize) -> BatchedPlay {
        BatchedPlay { config, rule, parallel: parallel.max(1) }
    }

    /// Plays `resume` first and then a game for every one `next` hands out (until it returns
    /// `None`), and calls `on_finish` with each finished game. When `stop` is set, returns at once
    /// with the games still in progress (for a caller to checkpoint or drop).
    pub fn run<T>(
        &self,
        evaluator: &(impl PolicyValue + ?Sized),
        resume: Vec<StartedGame<T>>,
        mut next: impl FnMut() -> Option<StartedGame<T>>,
        mut on_finish: impl FnMut(SearchedGame<T>),
        stop: &AtomicBool,
    ) -> (PlayCounters, Vec<(GameRecord, T)>) {
        let mut counters = PlayCounters::default();
        let tree_seed = |seed: u64| seed ^ 0x005E_ED0F_7EEE;
        let mut slots: Vec<Slot<T>> = resume
            .into_iter()
            .map(|s| Slot {
                tree: Tree::new(s.game.board(), self.config, self.rule, tree_seed(s.seed)),
                seed: s.seed,
                game: s.game,
                tag: s.tag,
            })
            .collect();
        let mut pending: Vec<usize> = Vec::with_capacity(self.parallel);
        let mut boards: Vec<Board> = Vec::with_capacity(self.parallel);
        let mut exhausted = false;
        loop {
            if stop.load(Ordering::Relaxed) {
                return (counters, slots.into_iter().map(|s| (s.game.into_record(), s.tag)).collect());
            }
            while !exhausted && slots.len() < self.parallel {
                match next() {
                    Some(s) => slots.push(Slot {
                        tree: Tree::new(s.game.board(), self.config, self.rule, tree_seed(s.seed)),
                        seed: s.seed,
                        game: s.game,
                        tag: s.tag,
                    }),
                    None => exhausted = true,
                }
            }
            if slots.is_empty() {
                return (counters, Vec::new());
            }
            pending.clear();
            boards.clear();
            let mut index = 0;
            while index < slots.len() {
                let slot = &mut slots[index];
                let mut finished = false;
                loop {
                    match slot.tree.select() {
                        Selected::Leaf(board) => {
                            pending.push(index);
                            boards.push(board);
                            break;
                        }
                        Selected::Terminal => counters.simulations += 1,
                        Selected::Done => {
                            let explore = slot.game.moves() < self.config.temperature_moves;
                            let stats = slot.tree.stats();
                            match slot.tree.choose(explore) {
                                Some(direction) => {
                                    slot.game
                                        .play_searched(direction, stats)
                                        .expect("the search chooses legal moves");
                                    counters.moves += 1;
                                    slot.tree.reset(slot.game.board());
                                }
                                None => {
                                    finished = true;
                                    break;
                                }
                            }
                        }
                    }
                }
                if finished {
                    let slot = slots.swap_remove(index);
                    let max_tile = slot.game.board().max_tile();
                    let score = slot.game.score();
                    on_finish(SearchedGame {
                        seed: slot.seed,
                        record: slot.game.into_record(),
                        score,
                        max_tile,
                        tag: slot.tag,
                    });
                    // The slot swapped in at `index` has not been visited yet this round.
                    continue;
                }
                index += 1;
            }
            if boards.is_empty() {
                continue;
            }
            let predictions = evaluator.predict(&boards);
            counters.batches += 1;
            counters.evaluations += boards.len() as u64;
            for (&slot, prediction) in pending.iter().zip(&predictions) {
                let tree = &mut slots[slot].tree;
                // A root expansion is not a simulation.
                let is_root = tree.root_unexpanded();
                tree.expand(prediction);
                if !is_root {
                    counters.simulations += 1;
                }
            }
        }
    }
}

/// Plays games `0..games` on seeds `derive_seed(base_seed, i)` with `parallel` at a time and
/// returns their results in series order (strength is measured this way).
pub fn play_series(
    evaluator: &(impl PolicyValue + ?Sized),
    config: MctsConfig,
    rule: SpawnRule,
    games: usize,
    base_seed: u64,
    parallel: usize,
) -> (Vec<GameResult>, PlayCounters) {
    let driver = BatchedPlay::new(config, rule, parallel);
    let mut index = 0usize;
    let mut results: Vec<GameResult> = Vec::with_capacity(games);
    let (counters, _) = driver.run(
        evaluator,
        Vec::new(),
        || {
            (index < games).then(|| {
                let seed = derive_seed(base_seed, index as u64);
                index += 1;
                StartedGame { game: Game::new(seed, rule), seed, tag: index - 1 }
            })
        },
        |game| {
            results.push(GameResult {
                index: game.tag,
                seed: game.seed,
                score: game.score,
                moves: game.record.steps.len() as u32,
                max_tile: game.max_tile,
                nodes: game.record.search.iter().map(|s| s.visits.iter().sum::<u32>() as u64).sum(),
                record: None,
            })
        },
        &AtomicBool::new(false),
    );
    results.sort_by_key(|r| r.index);
    (results, counters)
}
