//! The Zero model's throughput: policy-value inference at batch 64 and 512 against batch 1 (and the
//! dense matrices against burn's convolutions at batch 64), MCTS with leaves batched across games
//! against one game at a time (the prototype's one network call per simulation), and the learner's
//! optimiser steps (batch 256 against 64 and 1024 against 256, and the categorical value head
//! against the scalar one), all on one CPU core. Plus the strength comparison of MCTS with the
//! network against expectimax with the n-tuple network at equal CPU time per move.

use std::sync::Arc;

use serde::Serialize;
use zero2048_game::SpawnRule;
use zero2048_model::policy_value::{CpuTrainBackend, OptimizerConfig, Sample, Trainer};
use zero2048_model::{NTupleNetwork, PolicyValueConfig, PolicyValueNet};
use zero2048_search::{ChanceMode, MctsConfig};
use zero2048_search::{Expectimax, ExpectimaxConfig, ExpectimaxPlayer, Player, Series, Strength};
use zero2048_selfplay::play_series;

use crate::{Comparison, Effort, boards_from_play, measure};

/// Runs `work` on a one-thread rayon pool, so burn's CPU kernels use one core.
pub fn on_one_core<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
        Ok(pool) => pool.install(work),
        Err(_) => work(),
    }
}

/// Inference at batch 64 and 512 against batch 1 (positions per second), and MCTS simulations
/// batched across 64 games against one game at a time.
pub fn throughput(effort: Effort, net: &PolicyValueNet, simulations: u32) -> Vec<Comparison> {
    on_one_core(|| {
        let boards = boards_from_play(4096);
        let single = |boards: &[zero2048_game::Board]| {
            measure(effort.budget(), || {
                for board in &boards[..64] {
                    std::hint::black_box(net.predict_boards(std::slice::from_ref(board)));
                }
                64
            })
        };
        // Batches of `batch` boards taken in turn, through `predict` (the dense or the
        // convolution path).
        let batched_through = |batch: usize, predict: &dyn Fn(&[zero2048_game::Board])| {
            let mut start = 0;
            measure(effort.budget(), || {
                predict(&boards[start..start + batch]);
                start = (start + batch) % (boards.len() - batch);
                batch as u64
            })
        };
        let batched = |batch: usize| {
            batched_through(batch, &|slice| {
                std::hint::black_box(net.predict_boards(slice));
            })
        };
        let mut out = Vec::new();
        for (name, batch) in [("inference batch 64 vs 1", 64), ("inference batch 512 vs 1", 512)] {
            out.push(Comparison {
                name,
                unit: "positions",
                fast: batched(batch),
                reference: single(&boards),
            });
        }
        let convolved = batched_through(64, &|slice| {
            std::hint::black_box(net.predict_convolved(slice));
        });
        out.push(Comparison {
            name: "inference batch 64: dense vs convolutions",
            unit: "positions",
            fast: batched(64),
            reference: convolved,
        });
        let config = MctsConfig { simulations, ..MctsConfig::default() };
        let mcts = |parallel: usize| {
            let mut base = 0u64;
            measure(effort.budget(), || {
                base += 1;
                // A few moves of many games: enough for a steady batch.
                let (_, counters) = play_series(net, config, SpawnRule::STANDARD, parallel, base, parallel);
                counters.simulations
            })
        };
        let games = if effort == Effort::Full { 64 } else { 4 };
        out.push(Comparison {
            name: "MCTS 64 games batched vs 1",
            unit: "simulations",
            fast: mcts(games),
            reference: mcts(1),
        });
        // The learner: optimiser steps (forward, backward and AdamW) on positions of real games,
        // with targets of the right size (the cost does not depend on their values).
        let samples: Vec<Sample> = boards
            .iter()
            .filter(|b| !b.is_game_over())
            .map(|&board| Sample { board, policy: [0.25; 4], value: 1_000.0 })
            .collect();
        let steps = |config: PolicyValueConfig, batch: usize| {
            let start = PolicyValueNet::new(config, 1).expect("a valid shape");
            let mut trainer =
                Trainer::<CpuTrainBackend>::new(&start, OptimizerConfig::default(), Default::default())
                    .expect("a trainer of a fresh network");
            let mut at = 0;
            measure(effort.budget(), || {
                let batch_samples = &samples[at..at + batch];
                at = (at + batch) % (samples.len() - batch);
                std::hint::black_box(trainer.step(batch_samples));
                batch as u64
            })
        };
        let shape = *net.config();
        // Measured once: both ratios then share one batch-256 figure, and the bench pays for it once.
        let batch_256 = steps(shape, 256);
        out.push(Comparison {
            name: "learner steps batch 256 vs 64",
            unit: "positions",
            fast: batch_256.clone(),
            reference: steps(shape, 64),
        });
        out.push(Comparison {
            name: "learner steps batch 1024 vs 256",
            unit: "positions",
            fast: steps(shape, 1024),
            reference: batch_256,
        });
        let (categorical, scalar) = (
            PolicyValueConfig {
                value_bins: shape.value_bins.max(zero2048_model::policy_value::DEFAULT_VALUE_BINS),
                ..shape
            },
            PolicyValueConfig { value_bins: 0, ..shape },
        );
        out.push(Comparison {
            name: "learner steps batch 256: categorical vs scalar value head",
            unit: "positions",
            fast: steps(categorical, 256),
            reference: steps(scalar, 256),
        });
        out
    })
}

/// One player's strength and cost in a comparison.
#[derive(Clone, Debug, Serialize)]
pub struct PlayerStrength {
    /// Who played.
    pub player: String,
    /// CPU milliseconds per move (one core).
    pub cpu_ms_per_move: f64,
    /// The strength table.
    pub strength: Strength,
}

fn mcts_strength(net: &PolicyValueNet, config: MctsConfig, games: usize, seed: u64) -> PlayerStrength {
    on_one_core(|| {
        let cpu = cpu_time::ThreadTime::now();
        let (results, counters) = play_series(net, config, SpawnRule::STANDARD, games, seed, games.min(64));
        let seconds = cpu.elapsed().as_secs_f64();
        PlayerStrength {
            player: format!(
                "MCTS {} simulations, {:?} root, {:?} chance nodes",
                config.simulations, config.root, config.chance
            ),
            cpu_ms_per_move: 1000.0 * seconds / counters.moves.max(1) as f64,
            strength: Strength::of(&results).expect("at least one game"),
        }
    })
}

fn expectimax_strength(network: &Arc<NTupleNetwork>, depth: u32, games: usize, seed: u64) -> PlayerStrength {
    let config = ExpectimaxConfig { depth, ..ExpectimaxConfig::default() };
    let network = Arc::clone(network);
    let make = move |_seed: u64| -> Box<dyn Player> {
        Box::new(ExpectimaxPlayer::new(Arc::clone(&network), config))
    };
    let cpu = cpu_time::ProcessTime::now(); // the series plays on a thread of its own
    let results = Series {
        games,
        base_seed: seed,
        threads: 1,
        rule: SpawnRule::STANDARD,
        keep_records: false,
        player: &make,
    }
    .run(&|_| {});
    let seconds = cpu.elapsed().as_secs_f64();
    let moves: u64 = results.iter().map(|r| r.moves as u64).sum();
    PlayerStrength {
        player: format!("expectimax depth {depth}, n-tuple"),
        cpu_ms_per_move: 1000.0 * seconds / moves.max(1) as f64,
        strength: Strength::of(&results).expect("at least one game"),
    }
}

/// MCTS with the network (stratified and sampled chance nodes, PUCT root; stratified with a
/// Gumbel root) against expectimax with the
/// n-tuple network at the deepest depth whose CPU time per move does not exceed the MCTS's, on
/// the same seeds.
pub fn compare(
    net: &PolicyValueNet,
    ntuple: &Arc<NTupleNetwork>,
    simulations: u32,
    value_weight: f32,
    games: usize,
    seed: u64,
) -> Vec<PlayerStrength> {
    let config = MctsConfig { simulations, value_weight, ..MctsConfig::default() }.for_evaluation();
    let stratified = mcts_strength(net, config, games, seed);
    let sampled = mcts_strength(net, MctsConfig { chance: ChanceMode::Sampled, ..config }, games, seed);
    let gumbel =
        mcts_strength(net, MctsConfig { root: zero2048_search::RootRule::Gumbel, ..config }, games, seed);
    let budget = stratified.cpu_ms_per_move;
    let mut rows = vec![stratified, sampled, gumbel];
    // The deepest search whose time per move on sample boards fits the budget plays the games.
    let boards = boards_from_play(200);
    let mut depth = 1;
    for deeper in 2..=4 {
        let config = ExpectimaxConfig { depth: deeper, ..ExpectimaxConfig::default() };
        let mut search = Expectimax::new(Arc::clone(ntuple), config);
        let cpu = cpu_time::ThreadTime::now();
        for board in &boards {
            std::hint::black_box(search.decide(*board));
        }
        if 1000.0 * cpu.elapsed().as_secs_f64() / boards.len() as f64 > budget {
            break;
        }
        depth = deeper;
    }
    rows.push(expectimax_strength(ntuple, depth, games, seed));
    rows
}
