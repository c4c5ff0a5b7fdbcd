//! Learning throughput: the TD learner and 1-ply move choice on an n-tuple network, each against a
//! plain implementation of the same arithmetic (indices read cell by cell from the 8 transformed
//! boards, weights in plain vectors) in the same run.

use std::hint::black_box;
use std::sync::Arc;

use zero2048_game::{Board, Direction, GameRecord, SpawnRule, Symmetry, derive_seed};
use zero2048_model::{NTupleConfig, NTupleNetwork};
use zero2048_search::{ExpectimaxConfig, ExpectimaxPlayer, Player, play_game};
use zero2048_train::{TdConfig, TdLearner};

use crate::{Comparison, Effort, measure};

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

/// The two learning benchmarks on `config` (the 4×6 network for the real figures).
pub fn run(effort: Effort, config: &NTupleConfig) -> Vec<Comparison> {
    let games = records(if effort == Effort::Full { 40 } else { 3 });
    let mut learner =
        TdLearner::new(NTupleNetwork::zeroed(config.clone()).expect("network"), TdConfig::default())
            .expect("learner");
    let mut next = 0;
    let fast_learning = measure(effort.budget(), || {
        let record = &games[next % games.len()];
        next += 1;
        learner.learn(record).map(|l| l.moves as u64).unwrap_or(0)
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
    let network = Arc::new(learner.network().try_clone().expect("snapshot"));
    let mut player =
        ExpectimaxPlayer::new(network, ExpectimaxConfig { depth: 1, ..ExpectimaxConfig::default() });
    let fast_choice = measure(effort.budget(), || {
        for &board in boards.iter().take(10_000) {
            black_box(player.choose(black_box(board)));
        }
        boards.len().min(10_000) as u64
    });
    let plain_choice = measure(effort.budget(), || {
        for &board in boards.iter().take(1_000) {
            black_box(plain.choose(black_box(board)));
        }
        boards.len().min(1_000) as u64
    });
    vec![
        Comparison {
            name: "TD learning from game records",
            unit: "moves",
            fast: fast_learning,
            reference: plain_learning,
        },
        Comparison {
            name: "1-ply move choice (self-play)",
            unit: "moves",
            fast: fast_choice,
            reference: plain_choice,
        },
    ]
}
