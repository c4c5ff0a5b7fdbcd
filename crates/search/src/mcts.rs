//! Monte Carlo tree search over decision and chance nodes, guided by a policy-value evaluator,
//! with the leaves of many games' trees evaluated together.
//!
//! A decision node is a board to move on: PUCT over its legal moves (illegal moves are masked
//! out of the prior and never visited). Each move leads to a chance node, the afterstate, whose
//! value is the expectation over the tile that spawns next: its outcomes are enumerated and
//! visited in proportion to their probability ([`ChanceMode::Stratified`]) or sampled
//! ([`ChanceMode::Sampled`]).
//!
//! Values are discounted scores to go, in points: Q(s, a) = reward(s, a) + discount · E[V(s')].
//! Scores are unbounded, so PUCT sees Q min-max normalised over the values met in the tree so far
//! (as MuZero does), and the evaluator learns a transformed target (see the model crate).
//!
//! The tree search itself never calls the evaluator: [`Tree::select`] walks to a leaf and hands
//! back the board to evaluate; [`Tree::expand`] takes the prediction. [`BatchedPlay`] drives many
//! games at once so one evaluator call sees a leaf from each of them.

use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Gamma};
use serde::{Deserialize, Serialize};
use zero2048_game::{Board, Direction, GameRng, SearchStats, SpawnRule};

/// A prediction for one board: the move probabilities (zero on illegal moves, summing to 1 when
/// any move is legal) and the value (discounted score to go, in points).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Prediction {
    /// Probabilities in `Direction::ALL` order.
    pub policy: [f32; 4],
    /// Expected discounted score to go.
    pub value: f32,
}

/// Something that predicts move probabilities and values for a batch of boards at once.
pub trait PolicyValue: Send + Sync {
    /// One prediction per board, in order.
    fn predict(&self, boards: &[Board]) -> Vec<Prediction>;
}

/// How a chance node picks the spawn to follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChanceMode {
    /// Every outcome, each visited as often as its probability says (the most under-visited
    /// next): the expectation converges without sampling noise.
    #[default]
    Stratified,
    /// Outcomes drawn at random by probability.
    Sampled,
}

/// Search parameters; the server sends them to workers in the latest record.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MctsConfig {
    /// Simulations per move (visits below the root sum to exactly this).
    pub simulations: u32,
    /// Exploration constant of PUCT.
    pub c_puct: f32,
    /// Discount per move of the score to go.
    pub discount: f32,
    /// How chance nodes pick outcomes.
    pub chance: ChanceMode,
    /// Dirichlet noise at the root (self-play): concentration...
    pub dirichlet_alpha: f32,
    /// ...and weight (0 = no noise, as in evaluation).
    pub noise_fraction: f32,
    /// Moves are drawn from visit counts ^ (1 / temperature) for the first `temperature_moves`
    /// moves of a game, then the most visited is played (0 moves: always the most visited).
    pub temperature: f32,
    /// See `temperature`.
    pub temperature_moves: u32,
    /// How much the network's value counts at a leaf (1 = fully, as in AlphaZero; 0 = not at
    /// all: the search then weighs the points its moves score, and the policy). A young
    /// network's value is noise of hundreds of points between sibling boards whose real
    /// difference is a few merges, so trusting it fully can make the search play worse than
    /// ignoring it (measured: BENCHMARKS.md).
    pub value_weight: f32,
}

impl Default for MctsConfig {
    fn default() -> MctsConfig {
        MctsConfig {
            simulations: 100,
            c_puct: 1.25,
            discount: 0.999,
            chance: ChanceMode::Stratified,
            dirichlet_alpha: 0.5,
            noise_fraction: 0.25,
            temperature: 1.0,
            temperature_moves: 30,
            value_weight: 1.0,
        }
    }
}

impl MctsConfig {
    /// The same search without exploration noise or temperature: how strength is measured.
    pub fn for_evaluation(self) -> MctsConfig {
        MctsConfig { noise_fraction: 0.0, temperature_moves: 0, ..self }
    }

    /// Whether the values are usable.
    pub fn validate(&self) -> Result<(), String> {
        if self.simulations == 0 {
            return Err("simulations must be at least 1".into());
        }
        let finite = [
            self.c_puct,
            self.discount,
            self.dirichlet_alpha,
            self.noise_fraction,
            self.temperature,
            self.value_weight,
        ];
        if finite.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(
                "c_puct, discount, dirichlet_alpha, noise_fraction and temperature must be finite and ≥ 0"
                    .into(),
            );
        }
        if self.discount > 1.0 || self.noise_fraction > 1.0 || self.value_weight > 1.0 {
            return Err("discount, noise_fraction and value_weight must be at most 1".into());
        }
        if self.noise_fraction > 0.0 && self.dirichlet_alpha <= 0.0 {
            return Err("dirichlet_alpha must be positive when noise_fraction is".into());
        }
        Ok(())
    }
}

const NONE: u32 = u32::MAX;

#[derive(Clone, Debug)]
struct DecisionNode {
    board: Board,
    prior: [f32; 4],
    /// Bit `i` set when move `i` is legal.
    legal: u8,
    /// The chance node after each move, or NONE.
    children: [u32; 4],
    visits: u32,
    value_sum: f64,
    expanded: bool,
}

#[derive(Clone, Debug)]
struct Outcome {
    cell: u8,
    exponent: u8,
    probability: f32,
    visits: u32,
    node: u32,
}

#[derive(Clone, Debug)]
struct ChanceNode {
    afterstate: Board,
    reward: f32,
    visits: u32,
    /// Sum of the values of the boards reached after the spawn.
    value_sum: f64,
    outcomes: Vec<Outcome>,
}

/// What [`Tree::select`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selected {
    /// This board needs a prediction: call [`Tree::expand`] with it.
    Leaf(Board),
    /// The simulation ended on a lost board and is already backed up.
    Terminal,
    /// The search has run all its simulations (or the root has no legal move).
    Done,
}

/// One game's search tree, rooted at the board to move on.
pub struct Tree {
    decisions: Vec<DecisionNode>,
    chances: Vec<ChanceNode>,
    /// The path of the simulation in progress: (decision node, move, outcome index).
    path: Vec<(u32, u8, u32)>,
    leaf: u32,
    min_q: f32,
    max_q: f32,
    noise_applied: bool,
    config: MctsConfig,
    /// The probability of a 4 at chance nodes: the run's spawn rule.
    four_probability: f32,
    rng: GameRng,
}

impl Tree {
    /// A tree for `board` in a game spawning by `rule`; `seed` drives its noise and sampling.
    pub fn new(board: Board, config: MctsConfig, rule: SpawnRule, seed: u64) -> Tree {
        let mut tree = Tree {
            decisions: Vec::with_capacity(config.simulations as usize * 2 + 1),
            chances: Vec::with_capacity(config.simulations as usize + 4),
            path: Vec::new(),
            leaf: NONE,
            min_q: f32::INFINITY,
            max_q: f32::NEG_INFINITY,
            noise_applied: false,
            config,
            four_probability: rule.four_probability() as f32,
            rng: GameRng::seed_from_u64(seed),
        };
        tree.reset(board);
        tree
    }

    /// Starts over from `board`, keeping the allocations (and the generator's state).
    pub fn reset(&mut self, board: Board) {
        self.decisions.clear();
        self.chances.clear();
        self.path.clear();
        self.leaf = NONE;
        self.min_q = f32::INFINITY;
        self.max_q = f32::NEG_INFINITY;
        self.noise_applied = false;
        self.decisions.push(DecisionNode::new(board));
    }

    /// Whether the root still waits for its first prediction (its expansion is not a simulation).
    pub fn root_unexpanded(&self) -> bool {
        !self.decisions[0].expanded
    }

    /// The board at the root.
    pub fn root_board(&self) -> Board {
        self.decisions[0].board
    }

    /// Simulations run so far (visits summed over the root's moves).
    pub fn simulations(&self) -> u32 {
        self.visits().iter().sum()
    }

    /// Visits of each root move.
    pub fn visits(&self) -> [u32; 4] {
        let root = &self.decisions[0];
        std::array::from_fn(|i| match root.children[i] {
            NONE => 0,
            c => self.chances[c as usize].visits,
        })
    }

    /// The root's value: the mean of every simulation's return through it.
    pub fn root_value(&self) -> f32 {
        let root = &self.decisions[0];
        if root.visits == 0 { 0.0 } else { (root.value_sum / root.visits as f64) as f32 }
    }

    /// The root's prior (after noise, if any).
    pub fn root_prior(&self) -> [f32; 4] {
        self.decisions[0].prior
    }

    /// Walks from the root to the next leaf. Call [`Tree::expand`] with the prediction for a
    /// [`Selected::Leaf`] before selecting again.
    pub fn select(&mut self) -> Selected {
        debug_assert_eq!(self.leaf, NONE, "expand the pending leaf first");
        let root = &self.decisions[0];
        if !root.expanded && root.board.is_game_over() {
            self.decisions[0].expanded = true;
            return Selected::Done;
        }
        let root = &self.decisions[0];
        if root.expanded && (root.legal == 0 || self.simulations() >= self.config.simulations) {
            return Selected::Done;
        }
        self.path.clear();
        let mut node = 0u32;
        loop {
            let decision = &self.decisions[node as usize];
            if !decision.expanded {
                if decision.board.is_game_over() {
                    self.decisions[node as usize].expanded = true;
                    self.backup(node, 0.0);
                    return Selected::Terminal;
                }
                self.leaf = node;
                return Selected::Leaf(decision.board);
            }
            if decision.legal == 0 {
                // A lost board inside the tree: worth nothing from here on.
                self.backup(node, 0.0);
                return Selected::Terminal;
            }
            let action = self.pick_move(node);
            let chance = self.chance_after(node, action);
            let outcome = self.pick_outcome(chance);
            self.path.push((node, action, outcome));
            node = self.decision_after(chance, outcome);
        }
    }

    /// Gives the pending leaf its prediction and backs its value up the path.
    pub fn expand(&mut self, prediction: &Prediction) {
        let node = std::mem::replace(&mut self.leaf, NONE);
        assert_ne!(node, NONE, "no leaf is waiting for a prediction");
        let decision = &mut self.decisions[node as usize];
        let mut legal = 0u8;
        for direction in Direction::ALL {
            if decision.board.legal_move(direction).is_some() {
                legal |= 1 << direction.index();
            }
        }
        decision.legal = legal;
        decision.prior = masked(prediction.policy, legal);
        decision.expanded = true;
        if node == 0 && self.config.noise_fraction > 0.0 && !self.noise_applied {
            self.noise_applied = true;
            self.add_root_noise();
        }
        let value = if legal == 0 { 0.0 } else { prediction.value * self.config.value_weight };
        // The root's own expansion is not a simulation: nothing is above it.
        self.backup(node, value);
    }

    fn add_root_noise(&mut self) {
        let legal = self.decisions[0].legal;
        let count = legal.count_ones();
        if count < 2 {
            return;
        }
        let Ok(gamma) = Gamma::new(self.config.dirichlet_alpha as f64, 1.0) else { return };
        let mut noise = [0f64; 4];
        for (i, n) in noise.iter_mut().enumerate() {
            if legal & (1 << i) != 0 {
                *n = gamma.sample(&mut self.rng);
            }
        }
        let total: f64 = noise.iter().sum();
        if total <= 0.0 || !total.is_finite() {
            return;
        }
        let fraction = self.config.noise_fraction;
        let root = &mut self.decisions[0];
        for (i, (prior, noise)) in root.prior.iter_mut().zip(noise).enumerate() {
            if legal & (1 << i) != 0 {
                *prior = (1.0 - fraction) * *prior + fraction * (noise / total) as f32;
            }
        }
    }

    fn q(&self, node: u32, action: usize) -> Option<f32> {
        match self.decisions[node as usize].children[action] {
            NONE => None,
            c => {
                let chance = &self.chances[c as usize];
                (chance.visits > 0).then(|| {
                    chance.reward + self.config.discount * (chance.value_sum / chance.visits as f64) as f32
                })
            }
        }
    }

    fn normalise(&self, q: f32) -> f32 {
        if self.max_q > self.min_q { (q - self.min_q) / (self.max_q - self.min_q) } else { 0.5 }
    }

    fn pick_move(&self, node: u32) -> u8 {
        let decision = &self.decisions[node as usize];
        let visits: [u32; 4] = std::array::from_fn(|i| match decision.children[i] {
            NONE => 0,
            c => self.chances[c as usize].visits,
        });
        let total: u32 = visits.iter().sum();
        let sqrt_total = ((total + 1) as f32).sqrt();
        // An unvisited move is assumed as good as the board's value so far.
        let parent = if decision.visits > 0 {
            self.normalise((decision.value_sum / decision.visits as f64) as f32)
        } else {
            0.5
        };
        let mut best = (f32::NEG_INFINITY, 0u8);
        for (action, &visits) in visits.iter().enumerate() {
            if decision.legal & (1 << action) == 0 {
                continue;
            }
            let q = self.q(node, action).map_or(parent, |q| self.normalise(q));
            let u = self.config.c_puct * decision.prior[action] * sqrt_total / (1 + visits) as f32;
            if q + u > best.0 {
                best = (q + u, action as u8);
            }
        }
        best.1
    }

    fn chance_after(&mut self, node: u32, action: u8) -> u32 {
        let existing = self.decisions[node as usize].children[action as usize];
        if existing != NONE {
            return existing;
        }
        let board = self.decisions[node as usize].board;
        let moved = board
            .legal_move(Direction::from_index(action).expect("0..4"))
            .expect("only legal moves are selected");
        let empty = moved.board.empty_mask();
        let cells = empty.count_ones() as f32;
        let four = self.four_probability;
        let mut outcomes = Vec::with_capacity(2 * cells as usize);
        for cell in 0..16u8 {
            if empty & (0xF << (4 * cell)) != 0 {
                if four < 1.0 {
                    outcomes.push(Outcome {
                        cell,
                        exponent: 1,
                        probability: (1.0 - four) / cells,
                        visits: 0,
                        node: NONE,
                    });
                }
                if four > 0.0 {
                    outcomes.push(Outcome {
                        cell,
                        exponent: 2,
                        probability: four / cells,
                        visits: 0,
                        node: NONE,
                    });
                }
            }
        }
        let index = self.chances.len() as u32;
        self.chances.push(ChanceNode {
            afterstate: moved.board,
            reward: moved.reward as f32,
            visits: 0,
            value_sum: 0.0,
            outcomes,
        });
        self.decisions[node as usize].children[action as usize] = index;
        index
    }

    fn pick_outcome(&mut self, chance: u32) -> u32 {
        let node = &self.chances[chance as usize];
        match self.config.chance {
            ChanceMode::Stratified => {
                let total = (node.visits + 1) as f32;
                let mut best = (f32::NEG_INFINITY, 0u32);
                for (i, outcome) in node.outcomes.iter().enumerate() {
                    let deficit = outcome.probability * total - outcome.visits as f32;
                    if deficit > best.0 {
                        best = (deficit, i as u32);
                    }
                }
                best.1
            }
            ChanceMode::Sampled => {
                let mut draw: f32 = self.rng.random::<f32>();
                let node = &self.chances[chance as usize];
                for (i, outcome) in node.outcomes.iter().enumerate() {
                    draw -= outcome.probability;
                    if draw < 0.0 {
                        return i as u32;
                    }
                }
                node.outcomes.len() as u32 - 1
            }
        }
    }

    fn decision_after(&mut self, chance: u32, outcome: u32) -> u32 {
        let existing = self.chances[chance as usize].outcomes[outcome as usize].node;
        if existing != NONE {
            return existing;
        }
        let node = &self.chances[chance as usize];
        let picked = &node.outcomes[outcome as usize];
        let board =
            Board::from_raw(node.afterstate.raw() | ((picked.exponent as u64) << (4 * picked.cell as u32)));
        let index = self.decisions.len() as u32;
        self.decisions.push(DecisionNode::new(board));
        self.chances[chance as usize].outcomes[outcome as usize].node = index;
        index
    }

    fn backup(&mut self, leaf: u32, value: f32) {
        let leaf = &mut self.decisions[leaf as usize];
        leaf.visits += 1;
        leaf.value_sum += value as f64;
        let mut value = value;
        for index in (0..self.path.len()).rev() {
            let (node, action, outcome) = self.path[index];
            let chance_index = self.decisions[node as usize].children[action as usize];
            let chance = &mut self.chances[chance_index as usize];
            chance.visits += 1;
            chance.value_sum += value as f64;
            chance.outcomes[outcome as usize].visits += 1;
            value = chance.reward + self.config.discount * value;
            let decision = &mut self.decisions[node as usize];
            decision.visits += 1;
            decision.value_sum += value as f64;
            if let Some(q) = self.q(node, action as usize) {
                self.min_q = self.min_q.min(q);
                self.max_q = self.max_q.max(q);
            }
        }
        self.path.clear();
    }

    /// The move to play after the search: drawn from visits ^ (1 / temperature) when `explore`
    /// is set, else the most visited (ties to the higher prior). `None` when no move is legal.
    pub fn choose(&mut self, explore: bool) -> Option<Direction> {
        let visits = self.visits();
        let legal = self.decisions[0].legal;
        if legal == 0 || visits.iter().all(|&v| v == 0) {
            // No simulation ran (one move only, or a lost board): the prior decides.
            return (0..4u8)
                .filter(|i| legal & (1 << i) != 0)
                .max_by(|a, b| {
                    self.decisions[0].prior[*a as usize].total_cmp(&self.decisions[0].prior[*b as usize])
                })
                .and_then(Direction::from_index);
        }
        let temperature = self.config.temperature;
        if explore && temperature > 0.0 {
            let weights: [f64; 4] =
                std::array::from_fn(|i| (visits[i] as f64).powf(1.0 / temperature as f64));
            let total: f64 = weights.iter().sum();
            if total.is_finite() && total > 0.0 {
                let mut draw = self.rng.random::<f64>() * total;
                for (i, w) in weights.iter().enumerate() {
                    if *w > 0.0 {
                        draw -= w;
                        if draw < 0.0 {
                            return Direction::from_index(i as u8);
                        }
                    }
                }
            }
        }
        let prior = self.decisions[0].prior;
        (0..4u8)
            .filter(|&i| visits[i as usize] > 0)
            .max_by(|&a, &b| {
                visits[a as usize]
                    .cmp(&visits[b as usize])
                    .then(prior[a as usize].total_cmp(&prior[b as usize]))
            })
            .and_then(Direction::from_index)
    }

    /// What the search saw, for the game record.
    pub fn stats(&self) -> SearchStats {
        SearchStats { visits: self.visits(), root_value: self.root_value() }
    }

    /// Searches from the root with `evaluator`, one leaf at a time (batch 1), until done.
    pub fn run(&mut self, evaluator: &(impl PolicyValue + ?Sized)) -> u64 {
        let mut evaluations = 0;
        loop {
            match self.select() {
                Selected::Leaf(board) => {
                    let prediction = evaluator.predict(&[board]);
                    self.expand(&prediction[0]);
                    evaluations += 1;
                }
                Selected::Terminal => {}
                Selected::Done => return evaluations,
            }
        }
    }
}

impl DecisionNode {
    fn new(board: Board) -> DecisionNode {
        DecisionNode {
            board,
            prior: [0.0; 4],
            legal: 0,
            children: [NONE; 4],
            visits: 0,
            value_sum: 0.0,
            expanded: false,
        }
    }
}

/// `policy` with illegal moves zeroed and the rest renormalised (uniform if nothing is left).
pub fn masked(policy: [f32; 4], legal: u8) -> [f32; 4] {
    let mut out = [0f32; 4];
    let mut total = 0f32;
    for i in 0..4 {
        if legal & (1 << i) != 0 && policy[i].is_finite() && policy[i] > 0.0 {
            out[i] = policy[i];
            total += policy[i];
        }
    }
    if total > 0.0 {
        out.iter_mut().for_each(|p| *p /= total);
    } else {
        let count = legal.count_ones().max(1) as f32;
        for (i, p) in out.iter_mut().enumerate() {
            if legal & (1 << i) != 0 {
                *p = 1.0 / count;
            }
        }
    }
    out
}

/// A uniform policy and a constant value: a search baseline and a test evaluator.
#[derive(Clone, Copy, Debug, Default)]
pub struct UniformPolicy {
    /// The value every live board gets.
    pub value: f32,
}

impl PolicyValue for UniformPolicy {
    fn predict(&self, boards: &[Board]) -> Vec<Prediction> {
        boards.iter().map(|_| Prediction { policy: [0.25; 4], value: self.value }).collect()
    }
}
