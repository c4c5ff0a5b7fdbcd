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

/// How the root picks the moves its simulations try, and what the search teaches the policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootRule {
    /// PUCT with Dirichlet noise, as below the root; the policy target is the visit distribution.
    #[default]
    Puct,
    /// Gumbel root search (Danihelka et al., ICLR 2022): moves sampled without replacement by
    /// Gumbel-top-k, simulations shared out by sequential halving, the move played is the best of
    /// the last survivors, and the policy target is the improved policy softmax(logits + σ(Q̂))
    /// over completed Q-values. It improves the policy with as few as 2–3 simulations, where
    /// visit counts say next to nothing. Below the root, PUCT as usual.
    Gumbel,
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
    /// How the root chooses: PUCT or Gumbel.
    pub root: RootRule,
    /// Gumbel root: scale of the Gumbel noise (1 in self-play; 0 plays the best move by the
    /// network and the search, as evaluation does).
    pub gumbel_scale: f32,
    /// Gumbel root: σ(Q̂) = (c_visit + max visits) · c_scale · Q̂, with Q̂ the normalised
    /// completed Q-value; c_visit...
    pub c_visit: f32,
    /// ...and c_scale.
    pub c_scale: f32,
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
            root: RootRule::Puct,
            gumbel_scale: 1.0,
            c_visit: 50.0,
            c_scale: 0.1,
        }
    }
}

impl MctsConfig {
    /// The same search without exploration noise or temperature: how strength is measured.
    pub fn for_evaluation(self) -> MctsConfig {
        MctsConfig { noise_fraction: 0.0, temperature_moves: 0, gumbel_scale: 0.0, ..self }
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
            self.gumbel_scale,
            self.c_visit,
            self.c_scale,
        ];
        if finite.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(
                "c_puct, discount, dirichlet_alpha, noise_fraction, temperature, gumbel_scale, c_visit and \
                 c_scale must be finite and ≥ 0"
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
    /// Gumbel root: the noise drawn for each root move (zero on illegal moves).
    gumbel: [f32; 4],
    /// Gumbel root: the network's value of the root board (the completed Q-values' anchor).
    root_estimate: f32,
    /// Gumbel root: the visit count a move must have to get simulation k (sequential halving).
    halving: Vec<u32>,
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
            gumbel: [0.0; 4],
            root_estimate: 0.0,
            halving: Vec::new(),
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
        self.gumbel = [0.0; 4];
        self.root_estimate = 0.0;
        self.halving.clear();
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
            let action = if node == 0 && self.config.root == RootRule::Gumbel {
                self.gumbel_root_move()
            } else {
                self.pick_move(node)
            };
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
        let value = if legal == 0 { 0.0 } else { prediction.value * self.config.value_weight };
        if node == 0 && self.config.root == RootRule::Gumbel {
            self.root_estimate = value;
            self.start_gumbel_root(legal);
        } else if node == 0 && self.config.noise_fraction > 0.0 && !self.noise_applied {
            self.noise_applied = true;
            self.add_root_noise();
        }
        // The root's own expansion is not a simulation: nothing is above it.
        self.backup(node, value);
    }

    /// Draws the root's Gumbel noise and lays out sequential halving over its legal moves.
    fn start_gumbel_root(&mut self, legal: u8) {
        for i in 0..4 {
            self.gumbel[i] = if legal & (1 << i) != 0 && self.config.gumbel_scale > 0.0 {
                // Gumbel(0, 1) = -ln(-ln U), U uniform in (0, 1).
                let u: f64 = self.rng.random::<f64>().clamp(1e-12, 1.0 - 1e-12);
                (-(-u.ln()).ln()) as f32 * self.config.gumbel_scale
            } else {
                0.0
            };
        }
        self.halving = halving_schedule(legal.count_ones(), self.config.simulations);
    }

    /// The prior's log-probabilities on legal moves.
    fn root_logits(&self) -> [f32; 4] {
        let prior = self.decisions[0].prior;
        std::array::from_fn(|i| prior[i].max(1e-12).ln())
    }

    /// Completed Q-values at the root, normalised: a visited move's Q, an unvisited one the mix
    /// of the network's value with the prior-weighted Q of the visited moves (so an unvisited
    /// move counts as the board's value, as far as the search knows it).
    fn completed_q(&self) -> [f32; 4] {
        let root = &self.decisions[0];
        let visits = self.visits();
        let total: u32 = visits.iter().sum();
        let (mut weighted, mut mass) = (0f64, 0f64);
        for (i, &v) in visits.iter().enumerate() {
            if let (true, Some(q)) = (v > 0, self.q(0, i)) {
                weighted += root.prior[i] as f64 * q as f64;
                mass += root.prior[i] as f64;
            }
        }
        let mixed = if total == 0 || mass <= 0.0 {
            self.root_estimate
        } else {
            ((self.root_estimate as f64 + total as f64 * weighted / mass) / (1.0 + total as f64)) as f32
        };
        std::array::from_fn(|i| {
            self.normalise(if visits[i] > 0 { self.q(0, i).unwrap_or(mixed) } else { mixed })
        })
    }

    /// logits + σ(Q̂) per root move (−∞ on illegal moves), without the Gumbel noise.
    fn improved_logits(&self) -> [f32; 4] {
        let legal = self.decisions[0].legal;
        let logits = self.root_logits();
        let q = self.completed_q();
        let most = *self.visits().iter().max().unwrap_or(&0) as f32;
        let sigma = (self.config.c_visit + most) * self.config.c_scale;
        std::array::from_fn(
            |i| if legal & (1 << i) != 0 { logits[i] + sigma * q[i] } else { f32::NEG_INFINITY },
        )
    }

    /// The improved policy softmax(logits + σ(Q̂)) over the legal moves.
    pub fn improved_policy(&self) -> [f32; 4] {
        let scores = self.improved_logits();
        let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if !top.is_finite() {
            return [0.0; 4];
        }
        let weights = scores.map(|s| if s.is_finite() { (s - top).exp() } else { 0.0 });
        let total: f32 = weights.iter().sum();
        weights.map(|w| w / total)
    }

    /// The Gumbel root's move for the next simulation: among the moves with the visit count
    /// sequential halving calls for now, the best by Gumbel + logits + σ(Q̂).
    fn gumbel_root_move(&self) -> u8 {
        let legal = self.decisions[0].legal;
        let visits = self.visits();
        let k = visits.iter().sum::<u32>() as usize;
        let wanted = self.halving.get(k).copied();
        let scores = self.improved_logits();
        let best = |filter: &dyn Fn(usize) -> bool| {
            (0..4)
                .filter(|&i| legal & (1 << i) != 0 && filter(i))
                .max_by(|&a, &b| (self.gumbel[a] + scores[a]).total_cmp(&(self.gumbel[b] + scores[b])))
        };
        best(&|i| Some(visits[i]) == wanted).or_else(|| best(&|_| true)).unwrap_or(0) as u8
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
        if self.config.root == RootRule::Gumbel {
            // The best survivor of sequential halving: the most visited, then Gumbel + logits + σ(Q̂).
            let most = *visits.iter().max().unwrap_or(&0);
            let scores = self.improved_logits();
            return (0..4u8)
                .filter(|&i| visits[i as usize] == most && legal & (1 << i) != 0)
                .max_by(|&a, &b| {
                    (self.gumbel[a as usize] + scores[a as usize])
                        .total_cmp(&(self.gumbel[b as usize] + scores[b as usize]))
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
        let policy = (self.config.root == RootRule::Gumbel && self.decisions[0].legal != 0)
            .then(|| zero2048_game::quantize_policy(self.improved_policy()));
        SearchStats { visits: self.visits(), root_value: self.root_value(), policy }
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

/// Sequential halving's schedule: for each simulation in order, the visit count the root move it
/// goes to must have. Every one of `moves` considered moves gets an equal share of a phase's
/// simulations, then the better half carries on (never fewer than two), over ⌈log2 moves⌉
/// phases; the moves compared at each step are those with the same number of visits.
pub fn halving_schedule(moves: u32, simulations: u32) -> Vec<u32> {
    let n = simulations as usize;
    if moves <= 1 {
        return (0..simulations).collect();
    }
    let phases = (moves as f64).log2().ceil() as usize;
    let mut schedule = Vec::with_capacity(n);
    let mut counts = vec![0u32; moves as usize];
    let mut considered = moves as usize;
    while schedule.len() < n {
        let rounds = (n / (phases * considered)).max(1);
        for _ in 0..rounds {
            for count in counts.iter_mut().take(considered) {
                schedule.push(*count);
                *count += 1;
            }
        }
        considered = (considered / 2).max(2);
    }
    schedule.truncate(n);
    schedule
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
