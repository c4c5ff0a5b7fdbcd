//! What a run asks of every player: the model it trains ([`ModelSpec`]) and how its games are
//! played ([`PlaySpec`]). The trainer builds both once from its validated configuration and puts
//! them in the latest record; a worker parses them back with the same rules, so a value either
//! means the same on both sides or is refused with the field's name. Each field has exactly one
//! check ([`PlaySpec::validate`] calls them; the trainer's configuration calls the same ones).

use serde::{Deserialize, Serialize};
use zero2048_game::SpawnRule;
use zero2048_search::MctsConfig;

/// Which model a run trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// The n-tuple network, learned by TD and played with expectimax.
    #[default]
    Ntuple,
    /// The policy-value network, learned from tree-search statistics and played with MCTS.
    PolicyValue,
}

impl ModelKind {
    /// The name in weights files, latest records and the run database.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Ntuple => "ntuple",
            ModelKind::PolicyValue => "policy_value",
        }
    }

    /// The kind called `name`.
    pub fn from_name(name: &str) -> Option<ModelKind> {
        match name {
            "ntuple" => Some(ModelKind::Ntuple),
            "policy_value" => Some(ModelKind::PolicyValue),
            _ => None,
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The model a revision holds: its kind and shape. A worker checks the weights file it loads
/// against it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSpec {
    /// An n-tuple network.
    Ntuple {
        /// Cell lists, cells numbered row-major 0..16.
        tuples: Vec<Vec<u8>>,
        /// Weight sets by largest tile.
        stages: u8,
        /// Exponent at which the second stage starts.
        stage_tile: u8,
    },
    /// A policy-value network.
    PolicyValue {
        /// Convolution filters.
        filters: u32,
        /// Residual blocks.
        blocks: u32,
    },
}

impl ModelSpec {
    /// The kind.
    pub fn kind(&self) -> ModelKind {
        match self {
            ModelSpec::Ntuple { .. } => ModelKind::Ntuple,
            ModelSpec::PolicyValue { .. } => ModelKind::PolicyValue,
        }
    }
}

/// A value of a spec that breaks its rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The field's path (`search.depth`, `spawn.four_probability`, …).
    pub field: String,
    /// What its rule says.
    pub message: String,
}

impl SpecError {
    fn new(field: &str, message: impl Into<String>) -> SpecError {
        SpecError { field: field.to_string(), message: message.into() }
    }

    /// The same error under a parent key (`train.` + `search.depth`).
    pub fn under(self, parent: &str) -> SpecError {
        SpecError { field: format!("{parent}.{}", self.field), message: self.message }
    }
}

/// The deepest expectimax self-play allowed: every extra ply multiplies a move's time by about
/// 40, and depth 5 already takes seconds per move.
pub const MAX_SELFPLAY_DEPTH: u32 = 4;
/// The most games one MCTS thread may play at once.
pub const MAX_PARALLEL_GAMES: u32 = 4096;

/// The rule of `search.depth`: own moves searched by expectimax self-play.
pub fn check_depth(depth: u32) -> Result<(), String> {
    if (1..=MAX_SELFPLAY_DEPTH).contains(&depth) {
        Ok(())
    } else {
        Err(format!(
            "{depth} is not a self-play depth: 1 (greedy on the learned value, the TD standard) to \
             {MAX_SELFPLAY_DEPTH}"
        ))
    }
}

/// The rule of `spawn.four_probability`.
pub fn check_four_probability(probability: f64) -> Result<SpawnRule, String> {
    SpawnRule::new(probability).map_err(|e| e.to_string())
}

/// The rule of `search.parallel_games`.
pub fn check_parallel_games(games: u32) -> Result<(), String> {
    if (1..=MAX_PARALLEL_GAMES).contains(&games) {
        Ok(())
    } else {
        Err(format!("{games} games at once per thread; 1 to {MAX_PARALLEL_GAMES} are allowed"))
    }
}

/// The restart strategy: after a game (or a continuation) of more than `min_moves` moves, the
/// next game of the thread continues from the afterstate at fraction `at` of it, with a fresh
/// spawn. Late-game positions, where most is still to learn, are then played more often.
/// With `at_max`, each continuation's fraction is drawn uniformly from `at..=at_max` instead:
/// early branch points replay the build-up to the largest merges, late ones the end of the game
/// (BENCHMARKS.md measured each alone: halfway made the stronger 3-ply player, three quarters
/// the stronger 1-ply one; 0.5 to 0.85 made either, one hour in two). With `at_tile`, a game
/// that made a new largest tile of at least `2^at_tile` branches where it made it instead, so
/// the game after each new 16384 (`at_tile` 14, the default) is played again from its first
/// move: the positions that lead to the 32768 merge. The default made the 3-ply player, with
/// 32768 in 19-41% of its games, in each hour measured (BENCHMARKS.md).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartSpec {
    /// A game continues only if it lasted more than this many moves.
    pub min_moves: u32,
    /// Where in the game the continuation branches off (0 < at < 1), or the earliest such
    /// fraction with `at_max`.
    pub at: f64,
    /// The latest fraction a continuation may branch at (at ≤ at_max < 1); absent: always `at`.
    /// Absent from the wire when absent, so a spec without it reads as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_max: Option<f64>,
    /// A game whose largest tile grew, during that game, to `2^at_tile` or more branches at the
    /// step that first made it (3..=17); other games branch at their fraction. Absent from the
    /// wire when absent, as `at_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_tile: Option<u8>,
}

impl Default for RestartSpec {
    fn default() -> RestartSpec {
        RestartSpec { min_moves: 10, at: 0.5, at_max: Some(0.85), at_tile: Some(14) }
    }
}

impl RestartSpec {
    /// The rule of each field.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(2..=1_000_000).contains(&self.min_moves) {
            return Err(SpecError::new("min_moves", format!("{} is not within 2..=1000000", self.min_moves)));
        }
        if !(self.at > 0.0 && self.at < 1.0) {
            return Err(SpecError::new("at", format!("{} is not strictly between 0 and 1", self.at)));
        }
        if let Some(at_max) = self.at_max
            && !(at_max >= self.at && at_max < 1.0)
        {
            return Err(SpecError::new(
                "at_max",
                format!("{at_max} is not within at ({}) and 1 (at most at, less than 1)", self.at),
            ));
        }
        if let Some(at_tile) = self.at_tile
            && !(3..=17).contains(&at_tile)
        {
            return Err(SpecError::new(
                "at_tile",
                format!("{at_tile} is not a tile exponent within 3..=17 (8 to 131072)"),
            ));
        }
        Ok(())
    }

    /// Where a game of `moves` moves branches off, if it is long enough: the index of the step
    /// whose afterstate the continuation starts from. `draw`, uniform in 0..1, places the branch
    /// within `at..=at_max`; without `at_max` it is not used.
    pub fn branch_step(&self, moves: usize, draw: f64) -> Option<usize> {
        let at = self.at;
        let fraction = match self.at_max {
            Some(at_max) => at + (at_max - at) * draw.clamp(0.0, 1.0),
            None => at,
        };
        (moves > self.min_moves as usize).then(|| ((moves as f64 * fraction) as usize).min(moves - 1))
    }

    /// Where a game branches off, given the largest tile's exponent of each step's afterstate:
    /// with `at_tile`, at the first step holding the game's largest tile when that tile is
    /// `2^at_tile` or more and the game made it (not held from its first step); otherwise
    /// [`RestartSpec::branch_step`]'s fraction.
    pub fn branch_step_of(&self, largest: impl ExactSizeIterator<Item = u8>, draw: f64) -> Option<usize> {
        let moves = largest.len();
        if moves <= self.min_moves as usize {
            return None;
        }
        if let Some(at_tile) = self.at_tile {
            let mut first: Option<(usize, u8)> = None;
            for (step, exponent) in largest.enumerate() {
                if first.is_none_or(|(_, held)| exponent > held) {
                    first = Some((step, exponent));
                }
            }
            if let Some((step, exponent)) = first
                && step > 0
                && exponent >= at_tile
            {
                return Some(step);
            }
        }
        self.branch_step(moves, draw)
    }
}

/// How self-play searches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SearchSpec {
    /// Expectimax on an n-tuple network's afterstate values.
    Expectimax {
        /// Own moves searched (1 = greedy on afterstate values).
        depth: u32,
    },
    /// MCTS with a policy-value network, many games per thread batched into each network call.
    Mcts {
        /// The search.
        mcts: MctsConfig,
        /// Games each thread plays at once.
        parallel_games: u32,
    },
}

/// How a run's games are played: the same for local threads and every remote worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PlaySpecFields", into = "PlaySpecFields")]
pub struct PlaySpec {
    /// The spawn rule (the search models it; the server's verification knows every spawn anyway).
    pub spawn: SpawnRule,
    /// The search.
    pub search: SearchSpec,
    /// The restart strategy, if the run uses it.
    pub restart: Option<RestartSpec>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaySpecFields {
    four_probability: f64,
    search: SearchSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restart: Option<RestartSpec>,
}

impl TryFrom<PlaySpecFields> for PlaySpec {
    type Error = SpecError;
    fn try_from(fields: PlaySpecFields) -> Result<PlaySpec, SpecError> {
        let spawn = check_four_probability(fields.four_probability)
            .map_err(|m| SpecError::new("four_probability", m))?;
        let spec = PlaySpec { spawn, search: fields.search, restart: fields.restart };
        spec.validate()?;
        Ok(spec)
    }
}

impl From<PlaySpec> for PlaySpecFields {
    fn from(spec: PlaySpec) -> PlaySpecFields {
        PlaySpecFields {
            four_probability: spec.spawn.four_probability(),
            search: spec.search,
            restart: spec.restart,
        }
    }
}

impl PlaySpec {
    /// Checks every field by its rule.
    pub fn validate(&self) -> Result<(), SpecError> {
        match &self.search {
            SearchSpec::Expectimax { depth } => {
                check_depth(*depth).map_err(|m| SpecError::new("search.depth", m))?
            }
            SearchSpec::Mcts { mcts, parallel_games } => {
                mcts.validate().map_err(|m| SpecError::new("search.mcts", m))?;
                check_parallel_games(*parallel_games)
                    .map_err(|m| SpecError::new("search.parallel_games", m))?;
            }
        }
        if let Some(restart) = &self.restart {
            restart.validate().map_err(|e| e.under("restart"))?;
        }
        Ok(())
    }

    /// Whether games of this spec carry search statistics (MCTS records them for the learner).
    pub fn records_search(&self) -> bool {
        matches!(self.search, SearchSpec::Mcts { .. })
    }

    /// The simulations every recorded move's visits must sum to, for MCTS.
    pub fn simulations(&self) -> Option<u32> {
        match &self.search {
            SearchSpec::Mcts { mcts, .. } => Some(mcts.simulations),
            SearchSpec::Expectimax { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expectimax(depth: u32) -> PlaySpec {
        PlaySpec { spawn: SpawnRule::STANDARD, search: SearchSpec::Expectimax { depth }, restart: None }
    }

    #[test]
    fn a_spec_round_trips_through_json() {
        let mut spec = expectimax(2);
        spec.restart = Some(RestartSpec::default());
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<PlaySpec>(&json).unwrap(), spec);
        let mcts = PlaySpec {
            spawn: SpawnRule::new(0.2).unwrap(),
            search: SearchSpec::Mcts { mcts: MctsConfig::default(), parallel_games: 64 },
            restart: None,
        };
        let json = serde_json::to_string(&mcts).unwrap();
        assert!(json.contains("\"four_probability\":0.2"), "{json}");
        assert_eq!(serde_json::from_str::<PlaySpec>(&json).unwrap(), mcts);
    }

    #[test]
    fn every_field_is_refused_by_name() {
        let bad = |json: &str| serde_json::from_str::<PlaySpec>(json).unwrap_err().to_string();
        assert!(
            bad(r#"{"four_probability":0.1,"search":{"kind":"expectimax","depth":0}}"#)
                .contains("search.depth")
        );
        assert!(
            bad(r#"{"four_probability":0.1,"search":{"kind":"expectimax","depth":50}}"#)
                .contains("search.depth")
        );
        assert!(
            bad(r#"{"four_probability":1.5,"search":{"kind":"expectimax","depth":1}}"#)
                .contains("four_probability")
        );
        assert!(
            bad(r#"{"four_probability":0.1,"search":{"kind":"expectimax","depth":1},"restart":{"min_moves":10,"at":1.0}}"#)
                .contains("restart.at")
        );
        assert!(
            bad(r#"{"four_probability":0.1,"search":{"kind":"expectimax","depth":1},"extra":1}"#)
                .contains("extra")
        );
        let message = bad(
            r#"{"four_probability":0.1,"search":{"kind":"mcts","mcts":{"simulations":0},"parallel_games":8}}"#,
        );
        assert!(message.contains("search.mcts"), "{message}");
        assert!(expectimax(1).validate().is_ok() && expectimax(4).validate().is_ok());
    }

    #[test]
    fn restarts_branch_at_their_fraction_of_long_games_only() {
        let restart = RestartSpec { min_moves: 10, at: 0.75, at_max: None, at_tile: None };
        assert_eq!(restart.branch_step(10, 0.0), None);
        assert_eq!(restart.branch_step(11, 0.0), Some(8));
        assert_eq!(restart.branch_step(1000, 0.0), Some(750));
        assert_eq!(restart.branch_step(1000, 0.9), Some(750), "without at_max the draw is not used");
        let halfway = RestartSpec { min_moves: 10, at: 0.5, at_max: None, at_tile: None };
        assert_eq!(halfway.branch_step(11, 0.0), Some(5));
        let late = RestartSpec { min_moves: 2, at: 0.99, at_max: None, at_tile: None };
        assert_eq!(late.branch_step(3, 0.0), Some(2));
    }

    #[test]
    fn a_range_of_branch_points_spans_at_to_at_max_by_the_draw() {
        let range = RestartSpec { min_moves: 10, at: 0.5, at_max: Some(0.85), at_tile: None };
        assert!(range.validate().is_ok());
        assert_eq!(range.branch_step(1000, 0.0), Some(500));
        assert_eq!(range.branch_step(1000, 0.5), Some(675));
        assert_eq!(range.branch_step(1000, 0.999_999), Some(849));
        assert_eq!(range.branch_step(10, 0.5), None, "short games still do not branch");
        let steps: std::collections::BTreeSet<usize> =
            (0..100).map(|i| range.branch_step(1000, i as f64 / 100.0).unwrap()).collect();
        assert!(steps.len() > 90 && steps.iter().all(|s| (500..=850).contains(s)), "{steps:?}");
        let field = |spec: RestartSpec| spec.validate().unwrap_err().field;
        assert_eq!(field(RestartSpec { at_max: Some(0.4), ..range }), "at_max", "before at");
        assert_eq!(field(RestartSpec { at_max: Some(1.0), ..range }), "at_max", "at the end");
        assert_eq!(field(RestartSpec { at_max: Some(f64::NAN), ..range }), "at_max");
        assert!(RestartSpec { at_max: Some(0.5), ..range }.validate().is_ok(), "a range of one point");
        // On the wire the key is absent when unset, so a spec of an older server reads the same.
        let fixed = RestartSpec { min_moves: 10, at: 0.75, at_max: None, at_tile: None };
        let text = serde_json::to_string(&fixed).unwrap();
        assert!(!text.contains("at_max"), "{text}");
        assert_eq!(serde_json::from_str::<RestartSpec>(r#"{"min_moves":10,"at":0.75}"#).unwrap(), fixed);
        let read: RestartSpec = serde_json::from_str(&serde_json::to_string(&range).unwrap()).unwrap();
        assert_eq!(read, range);
        // The latest record carries the spec as a JSON value: the fraction reads as written there.
        let value = serde_json::to_value(range).unwrap().to_string();
        assert!(value.contains(r#""at_max":0.85"#), "{value}");
    }

    #[test]
    fn with_at_tile_a_game_that_made_the_tile_branches_where_it_made_it() {
        let spec = RestartSpec { min_moves: 10, at: 0.5, at_max: None, at_tile: Some(14) };
        assert!(spec.validate().is_ok());
        // Each step's largest tile of a 100-move game that made each (step, exponent) given.
        let game = |made: &[(usize, u8)]| -> Vec<u8> {
            (0..100)
                .map(|i| made.iter().filter(|(from, _)| i >= *from).map(|(_, e)| *e).max().unwrap())
                .collect()
        };
        let steps = |spec: RestartSpec, largest: &[u8]| spec.branch_step_of(largest.iter().copied(), 0.0);
        // 8192 made at step 40, 16384 at step 70, and the game died holding it.
        let made = game(&[(0, 2), (40, 13), (70, 14)]);
        assert_eq!(steps(spec, &made), Some(70));
        assert_eq!(steps(RestartSpec { at_tile: Some(13), ..spec }, &made), Some(70), "the largest tile");
        assert_eq!(steps(RestartSpec { at_tile: None, ..spec }, &made), Some(50), "no at_tile: the fraction");
        assert_eq!(steps(spec, &game(&[(0, 2), (40, 13)])), Some(50), "no 16384: the fraction");
        assert_eq!(steps(spec, &game(&[(0, 14)])), Some(50), "held from the start: the fraction");
        assert_eq!(steps(spec, &game(&[(0, 14), (90, 15)])), Some(90), "a 32768 made on a held 16384");
        assert_eq!(steps(spec, &[14; 10]), None, "short games do not branch");
        let field = |spec: RestartSpec| spec.validate().unwrap_err().field;
        assert_eq!(field(RestartSpec { at_tile: Some(2), ..spec }), "at_tile");
        assert_eq!(field(RestartSpec { at_tile: Some(18), ..spec }), "at_tile");
        let fractions_only = RestartSpec { at_tile: None, ..RestartSpec::default() };
        let text = serde_json::to_string(&fractions_only).unwrap();
        assert!(!text.contains("at_tile"), "absent from the wire when unset: {text}");
        assert_eq!(RestartSpec::default().at_tile, Some(14), "the default replays each new 16384");
        assert!(RestartSpec::default().validate().is_ok());
        let read: RestartSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(read, spec);
    }

    #[test]
    fn model_specs_name_their_kind() {
        let spec = ModelSpec::Ntuple { tuples: vec![vec![0, 1]], stages: 1, stage_tile: 14 };
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["kind"], "ntuple");
        assert_eq!(serde_json::from_value::<ModelSpec>(json).unwrap().kind(), ModelKind::Ntuple);
        let unknown = serde_json::from_str::<ModelSpec>(r#"{"kind":"transformer"}"#).unwrap_err();
        assert!(unknown.to_string().contains("transformer"));
        assert_eq!(ModelKind::from_name("policy_value"), Some(ModelKind::PolicyValue));
    }
}
