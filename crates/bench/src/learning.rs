//! Learning throughput on an n-tuple network: where the time of a training run goes.
//!
//! - TD learning and 1-ply move choice, each against a plain implementation of the same
//!   arithmetic (indices read cell by cell from the 8 transformed boards, weights in vectors).
//! - The page size under the 256 MiB randomly-read tables: huge pages against 4 KiB pages.
//! - The run's loop, as `zero2048 train` runs it (the game runner's threads playing and learning
//!   on one shared network), against the shape it replaced: play on a snapshot, store the record,
//!   replay it into the learner's own copy of the weights.
//! - The same loop on 2 threads against 1 (games per wall second).
//! - Feature indices read by bit extraction (BMI2 `PEXT`) against shifts and masks, in the move
//!   choice and in the loop (on a CPU with BMI2).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use zero2048_game::{Board, Direction, GameRecord, SpawnRule, Symmetry, derive_seed};
use zero2048_model::{IndexMethod, NTupleConfig, NTupleNetwork, Pages};
use zero2048_protocol::{PlaySpec, SearchSpec};
use zero2048_search::{ExpectimaxConfig, ExpectimaxPlayer, Player, play_game};
use zero2048_selfplay::{Control, CurrentModel, Engine, FinishedGame, GameSink, Model, Runner, SinkClosed};
use zero2048_train::{TdConfig, TdLearner};

use crate::{Comparison, Effort, Measurement, measure};

/// The same network, done plainly.
struct PlainNTuple {
    tuples: Vec<Vec<u8>>,
    tables: Vec<Vec<f32>>,
}

impl PlainNTuple {
    fn new(config: &NTupleConfig) -> PlainNTuple {
        PlainNTuple {
            tuples: config.tuples.clone(),
            tables: config.tuples.iter().map(|t| vec![0.0; 1 << (4 * t.len())]).collect(),
        }
    }

    fn indices(&self, board: Board) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for s in Symmetry::ALL {
            let b = s.apply(board);
            for (t, cells) in self.tuples.iter().enumerate() {
                out.push((
                    t,
                    cells.iter().enumerate().map(|(k, &c)| (b.get(c as usize) as usize) << (4 * k)).sum(),
                ));
            }
        }
        out
    }

    fn value(&self, board: Board) -> f32 {
        self.indices(board).into_iter().map(|(t, i)| self.tables[t][i]).sum()
    }

    fn learn(&mut self, record: &GameRecord, rate: f32) -> u64 {
        let steps: Vec<_> = record.replay_steps().filter_map(Result::ok).collect();
        let step = rate / (self.tuples.len() * 8) as f32;
        let mut target = 0.0;
        for s in steps.iter().rev() {
            let error = target - self.value(s.afterstate);
            for (t, i) in self.indices(s.afterstate) {
                self.tables[t][i] += step * error;
            }
            target = s.reward as f32 + self.value(s.afterstate);
        }
        steps.len() as u64
    }

    fn choose(&self, board: Board) -> Option<Direction> {
        Direction::ALL
            .into_iter()
            .filter_map(|d| board.legal_move(d).map(|m| (d, m.reward as f32 + self.value(m.board))))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(d, _)| d)
    }
}

/// Games long enough to look like mid-training ones (depth-2 heuristic play, ~1,500 moves each).
fn records(count: u64) -> Vec<GameRecord> {
    (0..count)
        .map(|i| {
            let mut player =
                ExpectimaxPlayer::heuristic(ExpectimaxConfig { depth: 2, ..ExpectimaxConfig::default() });
            play_game(&mut player, derive_seed(0x1EA2, i), SpawnRule::STANDARD).0
        })
        .collect()
}

/// A network whose weights are what learning from `games` made of them (values matter for
/// play: greedy play on a zero network ends after a hundred moves).
fn trained(config: &NTupleConfig, pages: Pages, games: &[GameRecord]) -> Arc<NTupleNetwork> {
    trained_by(config, pages, games, IndexMethod::fastest())
}

fn trained_by(
    config: &NTupleConfig,
    pages: Pages,
    games: &[GameRecord],
    method: IndexMethod,
) -> Arc<NTupleNetwork> {
    let mut network = NTupleNetwork::zeroed_on(config.clone(), pages).expect("network");
    network.set_index_method(method).expect("a method this CPU runs");
    let network = Arc::new(network);
    let learner = TdLearner::new(Arc::clone(&network), TdConfig::td0(), 0);
    for record in games {
        learner.learn(record, false).expect("heuristic games replay");
    }
    network
}

fn choice(effort: Effort, network: &Arc<NTupleNetwork>, boards: &[Board]) -> Measurement {
    let mut player =
        ExpectimaxPlayer::new(Arc::clone(network), ExpectimaxConfig { depth: 1, ..Default::default() });
    let mut start = 0;
    measure(effort.budget(), || {
        let slice = &boards[start..(start + 10_000).min(boards.len())];
        start = (start + 10_000) % boards.len().max(1);
        for &board in slice {
            black_box(player.choose(black_box(board)));
        }
        slice.len() as u64
    })
}

/// Learns each finished game in the thread that played it, counting its moves.
struct Learn {
    learner: Arc<TdLearner>,
    moves: Arc<AtomicU64>,
    games: Arc<AtomicU64>,
}

impl GameSink for Learn {
    fn finished(&mut self, game: FinishedGame, path: &[(Board, u32)]) -> Result<(), SinkClosed> {
        self.learner.learn_path(path, true).map_err(|_| SinkClosed)?;
        self.moves.fetch_add(game.record.steps.len() as u64, Ordering::Relaxed);
        self.games.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The run's loop on `threads` threads for `window`: moves (and games) played and learned, with
/// the process's CPU time.
fn one_loop(
    network: &Arc<NTupleNetwork>,
    td: TdConfig,
    threads: usize,
    window: Duration,
) -> (Measurement, u64) {
    let learner = Arc::new(TdLearner::new(Arc::clone(network), td, 1));
    let model = Arc::new(CurrentModel::new());
    model.set(Model {
        revision: 1,
        engine: Engine::Ntuple(Arc::clone(network)),
        play: PlaySpec {
            spawn: SpawnRule::STANDARD,
            search: SearchSpec::Expectimax { depth: 1 },
            restart: None,
        },
    });
    let control = Arc::new(Control::default());
    let runner = Runner {
        threads,
        name: "bench-loop".into(),
        seed: 11,
        model,
        control: Arc::clone(&control),
        resume: Arc::default(),
    };
    let (moves, games) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let cpu = cpu_time::ProcessTime::now();
    let wall = Instant::now();
    let handles = runner
        .spawn(|_| Learn {
            learner: Arc::clone(&learner),
            moves: Arc::clone(&moves),
            games: Arc::clone(&games),
        })
        .expect("threads start");
    std::thread::sleep(window);
    // A machine busy with other work may finish no game within the window: wait for the first,
    // so that a figure is never made of nothing (the wall and CPU time then cover the wait).
    while games.load(Ordering::Relaxed) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Count what was learned within the window; the games in progress are dropped.
    let (items, played) = (moves.load(Ordering::Relaxed), games.load(Ordering::Relaxed));
    let measured = Measurement {
        items,
        wall_seconds: wall.elapsed().as_secs_f64(),
        cpu_seconds: cpu.elapsed().as_secs_f64(),
    };
    control.abort.store(true, Ordering::Relaxed);
    for handle in handles {
        let _ = handle.join();
    }
    (measured, played)
}

/// The shape the run had before: play a game on a snapshot of the weights, then replay its
/// record into the learner's own copy (two tables streamed, two passes over every move).
fn two_pass(snapshot: &Arc<NTupleNetwork>, learner: &TdLearner, window: Duration) -> Measurement {
    let mut player =
        ExpectimaxPlayer::new(Arc::clone(snapshot), ExpectimaxConfig { depth: 1, ..Default::default() });
    let mut game = 0;
    measure(window, || {
        let (record, _) = play_game(&mut player, derive_seed(11, game), SpawnRule::STANDARD);
        game += 1;
        learner.learn(&record, false).map(|l| l.moves as u64).unwrap_or(0)
    })
}

/// Every learning benchmark on `config` (the 4×6 network for the real figures).
pub fn run(effort: Effort, config: &NTupleConfig) -> Vec<Comparison> {
    let games = records(if effort == Effort::Full { 40 } else { 3 });
    let learner =
        TdLearner::new(Arc::new(NTupleNetwork::zeroed(config.clone()).expect("network")), TdConfig::td0(), 0);
    let mut next = 0;
    let fast_learning = measure(effort.budget(), || {
        let record = &games[next % games.len()];
        next += 1;
        learner.learn(record, false).map(|l| l.moves as u64).unwrap_or(0)
    });
    let mut plain = PlainNTuple::new(config);
    let mut next = 0;
    let plain_learning = measure(effort.budget(), || {
        let record = &games[next % games.len()];
        next += 1;
        plain.learn(record, 0.1)
    });

    let boards: Vec<Board> = games
        .iter()
        .flat_map(|r| r.replay_steps().filter_map(Result::ok).map(|s| s.after).collect::<Vec<_>>())
        .collect();
    let huge = trained(config, Pages::Huge, &games);
    let small = trained(config, Pages::Normal, &games);
    let fast_choice = choice(effort, &huge, &boards);
    let small_choice = choice(effort, &small, &boards);
    let plain_choice = measure(effort.budget(), || {
        for &board in boards.iter().take(1_000) {
            black_box(plain.choose(black_box(board)));
        }
        boards.len().min(1_000) as u64
    });

    let window = effort.budget() * 2;
    let (loop_huge, _) = one_loop(&huge, TdConfig::td0(), 1, window);
    let (loop_small, _) = one_loop(&small, TdConfig::td0(), 1, window);
    let snapshot = trained(config, Pages::Huge, &games);
    let old_shape = two_pass(&snapshot, &TdLearner::new(Arc::clone(&huge), TdConfig::td0(), 1), window);
    drop(snapshot);
    let recipe = TdConfig::default();
    let (loop_recipe, _) = one_loop(&huge, recipe, 1, window);
    let (loop_one, games_one) = one_loop(&huge, TdConfig::td0(), 1, window);
    let (loop_two, games_two) = one_loop(&huge, TdConfig::td0(), 2, window);
    // Measured back to back on two networks that differ only in how they read indices.
    let by_index_method = IndexMethod::Extract.is_supported().then(|| {
        let extract = trained_by(config, Pages::Huge, &games, IndexMethod::Extract);
        let choice_extract = choice(effort, &extract, &boards);
        let (loop_extract, _) = one_loop(&extract, TdConfig::td0(), 1, window);
        drop(extract);
        let shifts = trained_by(config, Pages::Huge, &games, IndexMethod::Shifts);
        let choice_shifts = choice(effort, &shifts, &boards);
        let (loop_shifts, _) = one_loop(&shifts, TdConfig::td0(), 1, window);
        [
            Comparison {
                name: "1-ply choice: bit extraction vs shifts",
                unit: "moves",
                fast: choice_extract,
                reference: choice_shifts,
            },
            Comparison {
                name: "play+learn loop: extraction vs shifts",
                unit: "moves",
                fast: loop_extract,
                reference: loop_shifts,
            },
        ]
    });
    let per_wall = |m: &Measurement, games: u64| Measurement {
        items: games,
        wall_seconds: m.wall_seconds,
        // Per wall second is the figure that scales; the ratio is of games per wall second.
        cpu_seconds: m.wall_seconds,
    };
    let mut comparisons = vec![
        Comparison {
            name: "TD learning from game records",
            unit: "moves",
            fast: fast_learning,
            reference: plain_learning,
        },
        Comparison {
            name: "1-ply move choice (self-play)",
            unit: "moves",
            fast: fast_choice.clone(),
            reference: plain_choice,
        },
        Comparison {
            name: "1-ply choice: huge vs 4 KiB pages",
            unit: "moves",
            fast: fast_choice,
            reference: small_choice,
        },
        Comparison {
            name: "play+learn loop vs play, replay",
            unit: "moves",
            fast: loop_huge.clone(),
            reference: old_shape,
        },
        Comparison {
            name: "play+learn loop: huge vs 4 KiB",
            unit: "moves",
            fast: loop_huge.clone(),
            reference: loop_small,
        },
        Comparison {
            name: "loop TD(0) vs TD(0.5)+TC",
            unit: "moves",
            fast: loop_huge,
            reference: loop_recipe,
        },
        Comparison {
            name: "loop games/wall-s: 2 vs 1 thread",
            unit: "games",
            fast: per_wall(&loop_two, games_two),
            reference: per_wall(&loop_one, games_one),
        },
    ];
    comparisons.extend(by_index_method.into_iter().flatten());
    comparisons
}
