//! The game runner: threads that play the current model as the run's [`PlaySpec`] says and hand
//! every finished game to a [`GameSink`]. The trainer's sink learns the game in the same thread
//! and records it off the hot path; the worker's sink spools it for upload.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use zero2048_game::{Board, Game, GameRecord, derive_seed};
use zero2048_model::{KeptFeatures, NTupleNetwork, PolicyValueNet};
use zero2048_protocol::{Origin, PlaySpec, SearchSpec, Uuid};
use zero2048_search::{Expectimax, ExpectimaxConfig};

use crate::batched::{BatchedPlay, StartedGame};

/// A model the threads can play.
#[derive(Clone)]
pub enum Engine {
    /// An n-tuple network, searched with expectimax.
    Ntuple(Arc<NTupleNetwork>),
    /// A policy-value network, searched with MCTS.
    PolicyValue(Arc<PolicyValueNet>),
}

/// What the threads play now: a revision, its network, and how to play it.
#[derive(Clone)]
pub struct Model {
    /// The revision games are labelled with.
    pub revision: u64,
    /// The network.
    pub engine: Engine,
    /// How to play.
    pub play: PlaySpec,
}

/// The model the threads play, swapped by the runner's owner. Threads pick a new one up at their
/// next game (expectimax) or once their batch of games ends (MCTS): a game is played by one
/// revision only.
#[derive(Default)]
pub struct CurrentModel {
    slot: RwLock<Option<Arc<Model>>>,
}

impl CurrentModel {
    /// Empty: threads wait until [`CurrentModel::set`].
    pub fn new() -> CurrentModel {
        CurrentModel::default()
    }

    /// The model now, if any.
    pub fn get(&self) -> Option<Arc<Model>> {
        self.slot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The revision now, if any.
    pub fn revision(&self) -> Option<u64> {
        self.slot.read().unwrap_or_else(|e| e.into_inner()).as_ref().map(|m| m.revision)
    }

    /// Hands the threads a new model.
    pub fn set(&self, model: Model) {
        *self.slot.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(model));
    }
}

/// Stop requests and pauses, shared with the threads.
#[derive(Default)]
pub struct Control {
    /// Start no new game; finish the ones in progress.
    pub stop: AtomicBool,
    /// Stop now: games in progress go to [`GameSink::interrupted`].
    pub abort: AtomicBool,
    /// Start no new game while set (interrupted games waiting to be finished still are).
    pub pause: AtomicBool,
    /// Expectimax games in progress (from their start to the return of their sink's
    /// `finished`), and whether new ones must wait: see [`Control::hold_games`].
    games: Mutex<GameGate>,
    gate: Condvar,
}

#[derive(Default)]
struct GameGate {
    playing: usize,
    held: bool,
}

/// While alive, no expectimax game is in progress: see [`Control::hold_games`].
pub struct GamesHeld<'a> {
    control: &'a Control,
}

impl Drop for GamesHeld<'_> {
    fn drop(&mut self) {
        self.control.games.lock().unwrap_or_else(|e| e.into_inner()).held = false;
        self.control.gate.notify_all();
    }
}

impl Control {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.abort.load(Ordering::Relaxed)
    }

    /// Waits until every expectimax game in progress has ended (and its sink's `finished` has
    /// returned), and holds new ones back until the guard drops: a network learned in the
    /// playing threads is then one consistent state, to save as a revision. Costs the threads
    /// nothing between holds (one uncontended lock per game).
    pub fn hold_games(&self) -> GamesHeld<'_> {
        let mut gate = self.games.lock().unwrap_or_else(|e| e.into_inner());
        gate.held = true;
        while gate.playing > 0 {
            gate = self.gate.wait(gate).unwrap_or_else(|e| e.into_inner());
        }
        GamesHeld { control: self }
    }

    /// A game starts (after any hold is released).
    fn enter_game(&self) {
        let mut gate = self.games.lock().unwrap_or_else(|e| e.into_inner());
        while gate.held {
            gate = self.gate.wait(gate).unwrap_or_else(|e| e.into_inner());
        }
        gate.playing += 1;
    }

    /// A game ended (finished, interrupted or dropped).
    fn leave_game(&self) {
        let mut gate = self.games.lock().unwrap_or_else(|e| e.into_inner());
        gate.playing -= 1;
        if gate.held && gate.playing == 0 {
            self.gate.notify_all();
        }
    }
}

/// A finished game.
#[derive(Clone, Debug)]
pub struct FinishedGame {
    /// Its identity, made when it started (kept across a checkpoint and resume).
    pub uuid: Uuid,
    /// The revision that played it.
    pub revision: u64,
    /// For a continuation (the restart strategy), where it branched off its parent.
    pub origin: Option<Origin>,
    /// The record.
    pub record: GameRecord,
    /// Final score (of this record: a continuation counts from its start).
    pub score: u64,
    /// Largest tile.
    pub max_tile: u32,
}

/// A game in progress, checkpointed on an abort, to be finished later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartialGame {
    /// Its identity.
    pub uuid: Uuid,
    /// The revision that played it so far.
    pub revision: u64,
    /// For a continuation, where it branched off.
    pub origin: Option<Origin>,
    /// The record so far.
    pub record: GameRecord,
}

/// The receiving end closed: the thread stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkClosed;

/// Where a thread's games go. One per thread.
pub trait GameSink: Send {
    /// Asked before each new game (continuations included; not before finishing an interrupted
    /// one): `false` starts no more, and stops every thread (a budget is spent).
    fn may_start(&mut self) -> bool {
        true
    }

    /// After each move of an expectimax game: the move's afterstate, its reward, the search's
    /// value of the afterstate, and the afterstate's feature indices when the move choice kept
    /// them (a depth-1 search), for a learner that learns as the game goes.
    #[inline]
    fn moved(&mut self, _afterstate: Board, _reward: u32, _value: f32, _kept: Option<&KeptFeatures>) {}

    /// A finished game, with the afterstate and reward of each of its moves when the engine
    /// tracked them (expectimax; empty for MCTS), for a learner in the same thread.
    fn finished(&mut self, game: FinishedGame, path: &[(Board, u32)]) -> Result<(), SinkClosed>;

    /// A game interrupted by an abort (dropped unless the sink keeps it).
    fn interrupted(&mut self, _game: PartialGame) -> Result<(), SinkClosed> {
        Ok(())
    }
}

/// Interrupted games waiting to be finished, shared by the threads (each takes the next).
pub type ResumeQueue = Mutex<VecDeque<PartialGame>>;

/// How the threads start.
#[derive(Clone)]
pub struct Runner {
    /// Threads.
    pub threads: usize,
    /// Thread names are `name-N`.
    pub name: String,
    /// Seed of every game: game `k` of thread `t` is played on `derive_seed(seed, t << 40 | k)`.
    pub seed: u64,
    /// The model to play.
    pub model: Arc<CurrentModel>,
    /// Stops and pauses.
    pub control: Arc<Control>,
    /// Games to finish before new ones.
    pub resume: Arc<ResumeQueue>,
}

/// How long an idle thread waits before it looks again (no model yet, or paused).
const IDLE: Duration = Duration::from_millis(20);

impl Runner {
    /// Starts the threads, each with the sink `sink(thread)` makes. Each returns the games it
    /// finished.
    pub fn spawn<S: GameSink + 'static>(
        &self,
        sink: impl Fn(u64) -> S,
    ) -> std::io::Result<Vec<JoinHandle<u64>>> {
        (0..self.threads.max(1) as u64)
            .map(|thread| {
                let runner = self.clone();
                let mut sink = sink(thread);
                std::thread::Builder::new()
                    .name(format!("{}-{thread}", self.name))
                    .spawn(move || ThreadState::new(&runner, thread).run(&mut sink))
            })
            .collect()
    }
}

/// How a game ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Played {
    Finished,
    Interrupted,
}

/// Where a thread's next game starts when it continues an earlier one.
struct Branch {
    parent: Uuid,
    step: u32,
    afterstate: Board,
}

struct ThreadState<'a> {
    runner: &'a Runner,
    thread: u64,
    counter: u64,
    finished: u64,
    branch: Option<Branch>,
}

impl ThreadState<'_> {
    fn new(runner: &Runner, thread: u64) -> ThreadState<'_> {
        ThreadState { runner, thread, counter: 0, finished: 0, branch: None }
    }

    fn next_seed(&mut self) -> u64 {
        let seed = derive_seed(self.runner.seed, (self.thread << 40) | self.counter);
        self.counter += 1;
        seed
    }

    fn run(mut self, sink: &mut dyn GameSink) -> u64 {
        let control = Arc::clone(&self.runner.control);
        while !control.stopping() {
            let Some(model) = self.runner.model.get() else {
                std::thread::sleep(IDLE);
                continue;
            };
            let result = match &model.engine {
                Engine::Ntuple(network) => self.play_expectimax(&model, network, sink),
                Engine::PolicyValue(network) => self.play_mcts(&model, network, sink),
            };
            if result.is_err() {
                break;
            }
        }
        self.finished
    }

    /// Where within `restart.at..=at_max` the next continuation branches: uniform in 0..1, a
    /// function of the run's seed, the thread and its count of finished games, so a run
    /// replays its branch points.
    fn branch_draw(&self) -> f64 {
        const BRANCH_DRAWS: u64 = 0x6272_616e_6368; // "branch": apart from the games' seeds
        let bits = derive_seed(self.runner.seed ^ BRANCH_DRAWS, (self.thread << 40) | self.finished);
        (bits >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pop_resume(&self) -> Option<PartialGame> {
        self.runner.resume.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
    }

    /// Plays expectimax games with `model` until it is replaced or the thread must stop.
    fn play_expectimax(
        &mut self,
        model: &Arc<Model>,
        network: &Arc<NTupleNetwork>,
        sink: &mut dyn GameSink,
    ) -> Result<(), SinkClosed> {
        let SearchSpec::Expectimax { depth } = model.play.search else {
            unreachable!("an n-tuple model is played with expectimax (checked when the spec is built)")
        };
        let config = ExpectimaxConfig {
            depth,
            // The table pays from depth 3 (a ply of chance nodes reached twice).
            transposition_bits: (depth >= 3).then_some(20),
            rule: model.play.spawn,
            ..ExpectimaxConfig::default()
        };
        let mut search = Expectimax::new(Arc::clone(network), config);
        let control = &self.runner.control;
        let mut path: Vec<(Board, u32)> = Vec::with_capacity(4096);
        loop {
            if control.stopping() {
                return Ok(());
            }
            let current = self.runner.model.get();
            if !current.as_ref().is_some_and(|m| Arc::ptr_eq(m, model)) {
                return Ok(());
            }
            path.clear();
            let (uuid, origin, mut game) = match self.pop_resume() {
                Some(partial) => {
                    let seed = self.next_seed();
                    let resumed = match partial.origin {
                        None => Game::resume(partial.record.clone(), seed, model.play.spawn),
                        Some(_) => Game::resume_continuation(partial.record.clone(), seed, model.play.spawn),
                    };
                    match resumed {
                        Ok(game) => {
                            // The path covers the whole game, so that a restart branches at a
                            // step of the record the server holds and a learner sees every move.
                            let steps = match partial.origin {
                                None => partial.record.replay_steps(),
                                Some(_) => partial.record.continuation_steps(),
                            };
                            path.extend(steps.map_while(Result::ok).map(|s| (s.afterstate, s.reward)));
                            (partial.uuid, partial.origin, game)
                        }
                        Err(e) => {
                            tracing::warn!(
                                "an interrupted game {} does not replay ({e}); dropped",
                                partial.uuid
                            );
                            continue;
                        }
                    }
                }
                // A full spool pauses continuations too: a chain of them can run for long.
                None if control.pause.load(Ordering::Relaxed) => {
                    std::thread::sleep(IDLE);
                    continue;
                }
                None => match self.branch.take() {
                    Some(branch) => {
                        if !sink.may_start() {
                            control.stop.store(true, Ordering::Relaxed);
                            return Ok(());
                        }
                        let seed = self.next_seed();
                        let Some(game) = Game::branch(branch.afterstate, seed, model.play.spawn) else {
                            continue;
                        };
                        (new_uuid(), Some(Origin { parent: branch.parent, step: branch.step }), game)
                    }
                    None => {
                        if !sink.may_start() {
                            control.stop.store(true, Ordering::Relaxed);
                            return Ok(());
                        }
                        let seed = self.next_seed();
                        (new_uuid(), None, Game::new(seed, model.play.spawn))
                    }
                },
            };
            control.enter_game();
            let played = self.play_one(&mut search, &mut game, &mut path, sink);
            let result = match played {
                Played::Interrupted => {
                    let record = game.into_record();
                    sink.interrupted(PartialGame { uuid, revision: model.revision, origin, record })
                }
                Played::Finished => {
                    let (score, max_tile) = (game.score(), game.board().max_tile());
                    if let Some(restart) = model.play.restart
                        && let Some(step) = restart.branch_step_of(
                            path.iter().map(|(afterstate, _)| afterstate.max_exponent()),
                            self.branch_draw(),
                        )
                    {
                        self.branch =
                            Some(Branch { parent: uuid, step: step as u32, afterstate: path[step].0 });
                    }
                    let record = game.into_record();
                    let finished =
                        FinishedGame { uuid, revision: model.revision, origin, record, score, max_tile };
                    self.finished += 1;
                    sink.finished(finished, &path)
                }
            };
            control.leave_game();
            result?;
            if played == Played::Interrupted {
                return Ok(());
            }
        }
    }

    /// Plays one expectimax game to its end, or until an abort.
    #[inline]
    fn play_one(
        &self,
        search: &mut Expectimax<Arc<NTupleNetwork>>,
        game: &mut Game,
        path: &mut Vec<(Board, u32)>,
        sink: &mut dyn GameSink,
    ) -> Played {
        let control = &self.runner.control;
        loop {
            if control.abort.load(Ordering::Relaxed) {
                return Played::Interrupted;
            }
            let decision = search.decide(game.board());
            let (Some(direction), Some(moved)) = (decision.direction, decision.afterstate) else {
                return Played::Finished;
            };
            game.apply(direction, moved);
            path.push((moved.board, moved.reward));
            let value = decision.values[direction.index() as usize].unwrap_or(0.0) - moved.reward as f32;
            sink.moved(moved.board, moved.reward, value, search.memo_of_choice());
        }
    }

    /// Plays MCTS games with `model`, many at once, until it is replaced or the thread must stop.
    fn play_mcts(
        &mut self,
        model: &Arc<Model>,
        network: &Arc<PolicyValueNet>,
        sink: &mut dyn GameSink,
    ) -> Result<(), SinkClosed> {
        let SearchSpec::Mcts { mcts, parallel_games } = model.play.search else {
            unreachable!("a policy-value model is played with MCTS (checked when the spec is built)")
        };
        let rule = model.play.spawn;
        let mut resume = Vec::new();
        while let Some(partial) = self.pop_resume() {
            let seed = self.next_seed();
            let resumed = match partial.origin {
                None => Game::resume(partial.record.clone(), seed, rule),
                Some(_) => Game::resume_continuation(partial.record.clone(), seed, rule),
            };
            match resumed {
                Ok(game) => resume.push(StartedGame { game, seed, tag: (partial.uuid, partial.origin) }),
                Err(e) => {
                    tracing::warn!("an interrupted game {} does not replay ({e}); dropped", partial.uuid)
                }
            }
        }
        let control = &self.runner.control;
        let runner_model = &self.runner.model;
        // Both callbacks below reach the sink; they never run at the same time.
        let shared_sink = std::cell::RefCell::new(sink);
        let closed = std::cell::Cell::new(false);
        let finished = std::cell::Cell::new(0u64);
        let driver = BatchedPlay::new(mcts, rule, parallel_games as usize);
        let seeds = (self.runner.seed, self.thread);
        let counter = &mut self.counter;
        let (_, interrupted) = driver.run(
            &**network,
            resume,
            || {
                let same_model = runner_model.get().is_some_and(|m| Arc::ptr_eq(&m, model));
                if closed.get() || control.stopping() || control.pause.load(Ordering::Relaxed) || !same_model
                {
                    return None;
                }
                if !shared_sink.borrow_mut().may_start() {
                    control.stop.store(true, Ordering::Relaxed);
                    return None;
                }
                let seed = derive_seed(seeds.0, (seeds.1 << 40) | *counter);
                *counter += 1;
                Some(StartedGame { game: Game::new(seed, rule), seed, tag: (new_uuid(), None) })
            },
            |game| {
                if closed.get() {
                    return;
                }
                let (uuid, origin) = game.tag;
                let done = FinishedGame {
                    uuid,
                    revision: model.revision,
                    origin,
                    record: game.record,
                    score: game.score,
                    max_tile: game.max_tile,
                };
                match shared_sink.borrow_mut().finished(done, &[]) {
                    Ok(()) => finished.set(finished.get() + 1),
                    Err(SinkClosed) => closed.set(true),
                }
            },
            &control.abort,
        );
        self.finished += finished.get();
        let sink = shared_sink.into_inner();
        for (record, (uuid, origin)) in interrupted {
            sink.interrupted(PartialGame { uuid, revision: model.revision, origin, record })?;
        }
        if closed.get() {
            return Err(SinkClosed);
        }
        if control.pause.load(Ordering::Relaxed) && !control.stopping() {
            std::thread::sleep(IDLE);
        }
        Ok(())
    }
}

/// A fresh random (version 4) game UUID.
pub fn new_uuid() -> Uuid {
    zero2048_protocol::new_game_uuid(rand::random())
}

/// Counts games across threads against an optional budget: [`Budget::claim`] hands out exactly
/// `limit` starts in all.
#[derive(Debug, Default)]
pub struct Budget {
    limit: Option<u64>,
    claimed: AtomicU64,
}

impl Budget {
    /// A budget of `limit` games (`None`: no limit).
    pub fn new(limit: Option<u64>) -> Budget {
        Budget { limit, claimed: AtomicU64::new(0) }
    }

    /// Claims one game; `false` once the budget is spent.
    pub fn claim(&self) -> bool {
        match self.limit {
            None => true,
            Some(limit) => self.claimed.fetch_add(1, Ordering::Relaxed) < limit,
        }
    }

    /// Whether every game of the budget has been claimed.
    pub fn spent(&self) -> bool {
        self.limit.is_some_and(|limit| self.claimed.load(Ordering::Relaxed) >= limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use zero2048_game::SpawnRule;
    use zero2048_model::NTupleConfig;
    use zero2048_protocol::RestartSpec;

    /// Keeps every game.
    #[derive(Clone)]
    struct Keep {
        games: Arc<Mutex<Vec<(FinishedGame, usize)>>>,
        interrupted: Arc<Mutex<Vec<PartialGame>>>,
        budget: Arc<Budget>,
    }

    impl GameSink for Keep {
        fn may_start(&mut self) -> bool {
            self.budget.claim()
        }
        fn finished(&mut self, game: FinishedGame, path: &[(Board, u32)]) -> Result<(), SinkClosed> {
            self.games.lock().unwrap().push((game, path.len()));
            Ok(())
        }
        fn interrupted(&mut self, game: PartialGame) -> Result<(), SinkClosed> {
            self.interrupted.lock().unwrap().push(game);
            Ok(())
        }
    }

    fn runner(threads: usize, restart: Option<RestartSpec>, depth: u32) -> (Runner, Keep) {
        let model = Arc::new(CurrentModel::new());
        model.set(Model {
            revision: 3,
            engine: Engine::Ntuple(Arc::new(NTupleNetwork::zeroed(NTupleConfig::small_4x4()).unwrap())),
            play: PlaySpec { spawn: SpawnRule::STANDARD, search: SearchSpec::Expectimax { depth }, restart },
        });
        let control = Arc::new(Control::default());
        let keep = Keep {
            games: Arc::default(),
            interrupted: Arc::default(),
            budget: Arc::new(Budget::new(Some(12))),
        };
        let runner = Runner { threads, name: "test".into(), seed: 1, model, control, resume: Arc::default() };
        (runner, keep)
    }

    fn run(runner: &Runner, keep: &Keep) -> u64 {
        runner.spawn(|_| keep.clone()).unwrap().into_iter().map(|t| t.join().unwrap()).sum()
    }

    #[test]
    fn threads_play_exactly_the_budget_and_every_game_is_whole() {
        let (runner, keep) = runner(3, None, 1);
        assert_eq!(run(&runner, &keep), 12);
        let games = keep.games.lock().unwrap();
        assert_eq!(games.len(), 12);
        for (game, path) in games.iter() {
            let summary = game.record.replay().unwrap();
            assert!(summary.game_over);
            assert_eq!(
                (summary.score, summary.max_tile, *path),
                (game.score, game.max_tile, game.record.steps.len())
            );
            assert_eq!(game.revision, 3);
        }
    }

    #[test]
    fn the_same_seed_plays_the_same_games_on_any_number_of_threads() {
        let records = |threads| {
            let (runner, keep) = runner(threads, None, 1);
            run(&runner, &keep);
            let mut records: Vec<_> =
                keep.games.lock().unwrap().iter().map(|(g, _)| g.record.clone()).collect();
            records.sort_by_key(|r| r.encode().unwrap());
            records
        };
        // One thread plays games 0..12 of thread 0; each thread has its own sequence, so compare
        // one thread with itself and check two threads play distinct games.
        assert_eq!(records(1), records(1));
        let two = records(2);
        assert_eq!(two.len(), 12);
        let distinct: std::collections::HashSet<_> = two.iter().map(|r| r.encode().unwrap()).collect();
        assert_eq!(distinct.len(), 12);
    }

    #[test]
    fn restarts_continue_long_games_from_their_middle() {
        let restart = RestartSpec { min_moves: 10, at: 0.5, at_max: None, at_tile: None };
        let (runner, keep) = runner(1, Some(restart), 1);
        run(&runner, &keep);
        let games = keep.games.lock().unwrap();
        let by_uuid: HashMap<Uuid, &FinishedGame> = games.iter().map(|(g, _)| (g.uuid, g)).collect();
        let continuations: Vec<&FinishedGame> =
            games.iter().map(|(g, _)| g).filter(|g| g.origin.is_some()).collect();
        assert!(!continuations.is_empty(), "a greedy game of the zero network lasts more than 10 moves");
        for child in continuations {
            let origin = child.origin.unwrap();
            let parent = by_uuid[&origin.parent];
            assert_eq!(origin.step as usize, restart.branch_step(parent.record.steps.len(), 0.0).unwrap());
            let afterstate =
                parent.record.afterstate_at(origin.step as usize, parent.origin.is_some()).unwrap();
            assert!(zero2048_game::is_branch_of(child.record.start, afterstate));
            assert!(child.record.replay_continuation().unwrap().game_over);
        }
    }

    #[test]
    fn with_at_max_continuations_branch_anywhere_within_the_range() {
        let restart = RestartSpec { min_moves: 10, at: 0.3, at_max: Some(0.9), at_tile: None };
        let (runner, keep) = runner(1, Some(restart), 1);
        run(&runner, &keep);
        let games = keep.games.lock().unwrap();
        let by_uuid: HashMap<Uuid, &FinishedGame> = games.iter().map(|(g, _)| (g.uuid, g)).collect();
        let mut twentieths = std::collections::BTreeSet::new();
        for child in games.iter().map(|(g, _)| g).filter(|g| g.origin.is_some()) {
            let origin = child.origin.unwrap();
            let parent = by_uuid[&origin.parent];
            let moves = parent.record.steps.len();
            let (earliest, latest) =
                (restart.branch_step(moves, 0.0).unwrap(), restart.branch_step(moves, 1.0).unwrap());
            let step = origin.step as usize;
            assert!(
                (earliest..=latest).contains(&step),
                "{step} of {moves}: not within {earliest}..={latest}"
            );
            let afterstate = parent.record.afterstate_at(step, parent.origin.is_some()).unwrap();
            assert!(zero2048_game::is_branch_of(child.record.start, afterstate));
            twentieths.insert(step * 20 / moves);
        }
        // A fixed fraction would put every branch in one or two twentieths of its parent.
        assert!(twentieths.len() >= 4, "branch points spread over {twentieths:?} twentieths only");
    }

    #[test]
    fn with_at_tile_a_game_that_made_the_tile_is_continued_from_where_it_made_it() {
        // 128 (exponent 7): greedy games of the zero network make it in most games, not all.
        let restart = RestartSpec { min_moves: 10, at: 0.5, at_max: None, at_tile: Some(7) };
        let (runner, keep) = runner(1, Some(restart), 1);
        run(&runner, &keep);
        let games = keep.games.lock().unwrap();
        let by_uuid: HashMap<Uuid, &FinishedGame> = games.iter().map(|(g, _)| (g.uuid, g)).collect();
        let (mut at_the_tile, mut at_the_fraction) = (0, 0);
        for child in games.iter().map(|(g, _)| g).filter(|g| g.origin.is_some()) {
            let origin = child.origin.unwrap();
            let parent = by_uuid[&origin.parent];
            let largest: Vec<u8> = match parent.origin {
                None => parent.record.replay_steps().map(|s| s.unwrap().afterstate.max_exponent()).collect(),
                Some(_) => {
                    parent.record.continuation_steps().map(|s| s.unwrap().afterstate.max_exponent()).collect()
                }
            };
            let top = *largest.iter().max().unwrap();
            let first = largest.iter().position(|&e| e == top).unwrap();
            let step = origin.step as usize;
            if top >= 7 && first > 0 {
                assert_eq!(step, first, "made {top} at step {first} of {}", largest.len());
                at_the_tile += 1;
            } else {
                assert_eq!(step, restart.branch_step(largest.len(), 0.0).unwrap());
                at_the_fraction += 1;
            }
            let afterstate = parent.record.afterstate_at(step, parent.origin.is_some()).unwrap();
            assert!(zero2048_game::is_branch_of(child.record.start, afterstate));
        }
        assert!(
            at_the_tile > 0 && at_the_fraction > 0,
            "{at_the_tile} at the tile, {at_the_fraction} at the fraction"
        );
    }

    /// Plays depth-4 games (milliseconds a move) and aborts 100 ms in: the games then in progress.
    fn games_in_progress_at_an_abort() -> Vec<PartialGame> {
        let (first, keep) = runner(1, None, 4);
        let control = Arc::clone(&first.control);
        let timer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            control.abort.store(true, Ordering::Relaxed);
        });
        run(&first, &keep);
        timer.join().unwrap();
        keep.interrupted.lock().unwrap().clone()
    }

    #[test]
    fn an_abort_hands_back_games_in_progress_which_resume_under_their_uuid() {
        let interrupted = games_in_progress_at_an_abort();
        assert_eq!(interrupted.len(), 1, "the game in progress");
        for partial in &interrupted {
            assert!(!partial.record.steps.is_empty());
            assert!(!partial.record.replay().unwrap().game_over);
        }
        // A new run finishes them first, each under its own UUID.
        let (again, keep) = runner(1, None, 1);
        again.resume.lock().unwrap().extend(interrupted.iter().cloned());
        run(&again, &keep);
        let finished = keep.games.lock().unwrap();
        for partial in &interrupted {
            let game = finished.iter().map(|(g, _)| g).find(|g| g.uuid == partial.uuid).expect("resumed");
            assert_eq!(&game.record.steps[..partial.record.steps.len()], &partial.record.steps[..]);
            assert!(game.record.replay().unwrap().game_over);
        }
        assert_eq!(finished.len(), 12 + interrupted.len(), "resumed games take no budget");
    }

    /// Pausing (a full spool) holds back a pending continuation as well as new games.
    #[test]
    fn a_pause_holds_back_continuations_too() {
        struct PauseAfterFirst {
            control: Arc<Control>,
            finished: Arc<AtomicU64>,
        }
        impl GameSink for PauseAfterFirst {
            fn finished(&mut self, _game: FinishedGame, _path: &[(Board, u32)]) -> Result<(), SinkClosed> {
                self.finished.fetch_add(1, Ordering::Relaxed);
                self.control.pause.store(true, Ordering::Relaxed);
                Ok(())
            }
        }
        let (runner, _) =
            runner(1, Some(RestartSpec { min_moves: 10, at: 0.5, at_max: None, at_tile: None }), 1);
        let finished = Arc::new(AtomicU64::new(0));
        let threads = runner
            .spawn(|_| PauseAfterFirst {
                control: Arc::clone(&runner.control),
                finished: Arc::clone(&finished),
            })
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(finished.load(Ordering::Relaxed), 1, "a game was played while paused");
        runner.control.stop.store(true, Ordering::Relaxed);
        for thread in threads {
            thread.join().unwrap();
        }
    }

    /// A resumed game's restart branches at a step of its whole record (the steps played before
    /// the interruption count), as the server checks it.
    #[test]
    fn a_resumed_game_branches_at_a_step_of_its_whole_record() {
        let interrupted = games_in_progress_at_an_abort();
        assert_eq!(interrupted.len(), 1);
        let restart = RestartSpec { min_moves: 10, at: 0.5, at_max: None, at_tile: None };
        let (again, keep) = runner(1, Some(restart), 1);
        again.resume.lock().unwrap().extend(interrupted.iter().cloned());
        run(&again, &keep);
        let finished = keep.games.lock().unwrap();
        let (resumed, path) = finished.iter().find(|(g, _)| g.uuid == interrupted[0].uuid).unwrap();
        assert_eq!(*path, resumed.record.steps.len(), "the path covers the whole game");
        let child =
            finished.iter().map(|(g, _)| g).find(|g| g.origin.is_some_and(|o| o.parent == resumed.uuid));
        let child = child.expect("the resumed game was long enough to branch");
        let step = child.origin.unwrap().step as usize;
        assert_eq!(step, restart.branch_step(resumed.record.steps.len(), 0.0).unwrap());
        let afterstate = resumed.record.afterstate_at(step, false).unwrap();
        assert!(zero2048_game::is_branch_of(child.record.start, afterstate));
    }
}
