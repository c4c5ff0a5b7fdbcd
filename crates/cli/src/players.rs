//! Turning `--player …` options into players.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use zero2048_game::SpawnRule;
use zero2048_model::{DOWNGRADE_FROM, Downgrading, NTupleNetwork, PolicyValueNet, weights_file};
use zero2048_search::{
    ExpectimaxConfig, ExpectimaxPlayer, GreedyPlayer, MctsConfig, MctsPlayer, Player, RandomPlayer,
};
use zero2048_storage::{LocalStorageBackend, LocalUrls, StorageBackend};

use crate::args::{PlayerArgs, PlayerKind};
use crate::bad_input;

/// Makes a player per game; holds what all games share (a loaded network).
pub struct PlayerFactory {
    args: PlayerArgs,
    network: Option<Arc<NTupleNetwork>>,
    policy_value: Option<Arc<PolicyValueNet>>,
    source: Option<PathBuf>,
}

/// Which player plays which kind of weights file, for messages about the wrong one.
const KINDS_HINT: &str = "`--player ntuple` plays the n-tuple weights of a `--model ntuple` run, `--player mcts` \
                          the policy-value weights of a `--model policy-value` run";

impl PlayerFactory {
    /// Checks the options and loads what they name.
    pub fn new(args: &PlayerArgs) -> Result<PlayerFactory> {
        let weights = |player: &str| -> Result<PathBuf> {
            let spec = args
                .weights
                .as_deref()
                .ok_or_else(|| bad_input(format!("the {player} player needs --weights FILE|DIR|latest")))?;
            resolve_weights(spec)
        };
        let mut factory =
            PlayerFactory { args: args.clone(), network: None, policy_value: None, source: None };
        match args.player {
            PlayerKind::Ntuple => {
                let path = weights("ntuple")?;
                let (network, _) =
                    weights_file::load(&path, None).map_err(|e| bad_input(format!("{e}; {KINDS_HINT}")))?;
                factory.network = Some(Arc::new(network));
                factory.source = Some(path);
            }
            PlayerKind::Mcts => {
                let path = weights("mcts")?;
                let (network, _) =
                    PolicyValueNet::load(&path).map_err(|e| bad_input(format!("{e}; {KINDS_HINT}")))?;
                factory.policy_value = Some(Arc::new(network));
                factory.source = Some(path);
            }
            PlayerKind::Random | PlayerKind::Greedy | PlayerKind::Expectimax => {}
        }
        Ok(factory)
    }

    fn rule(&self) -> SpawnRule {
        SpawnRule::new(self.args.four_probability as f64).unwrap_or(SpawnRule::STANDARD)
    }

    fn mcts(&self) -> MctsConfig {
        MctsConfig {
            simulations: self.args.simulations,
            value_weight: self.args.value_weight,
            root: self.args.root.rule(),
            ..MctsConfig::default().for_evaluation()
        }
    }

    fn search(&self) -> ExpectimaxConfig {
        ExpectimaxConfig {
            depth: self.args.depth(),
            move_time: self.args.move_time,
            probability_threshold: self.args.prune_below,
            transposition_bits: self.args.table_bits(),
            rule: self.rule(),
        }
    }

    /// A player for one game; `seed` drives its own random choices.
    pub fn build(&self, seed: u64) -> Box<dyn Player> {
        match (&self.args.player, &self.network, &self.policy_value) {
            (PlayerKind::Random, ..) => Box::new(RandomPlayer::new(seed)),
            (PlayerKind::Greedy, ..) => Box::new(GreedyPlayer::new(seed)),
            (PlayerKind::Ntuple, Some(network), _) if self.args.no_downgrade => {
                Box::new(ExpectimaxPlayer::new(Arc::clone(network), self.search()))
            }
            (PlayerKind::Ntuple, Some(network), _) => Box::new(ExpectimaxPlayer::new(
                Downgrading { network: Arc::clone(network), from: DOWNGRADE_FROM },
                self.search(),
            )),
            (PlayerKind::Mcts, _, Some(network)) => {
                Box::new(MctsPlayer::new(Arc::clone(network), self.mcts(), self.rule(), seed))
            }
            _ => Box::new(ExpectimaxPlayer::heuristic(self.search())),
        }
    }

    /// How the player is named in tables: "expectimax depth 3 (heuristic, …)".
    pub fn describe(&self) -> String {
        let table = self.args.table_bits().map(|b| format!(", table 2^{b}")).unwrap_or_default();
        let depth = match self.args.move_time {
            Some(time) => {
                format!("{} per move up to depth {}", humantime::format_duration(time), self.args.depth())
            }
            None => format!("depth {}", self.args.depth()),
        };
        match self.args.player {
            PlayerKind::Random => "random".to_string(),
            PlayerKind::Greedy => "greedy".to_string(),
            PlayerKind::Expectimax => {
                format!("expectimax {depth} (heuristic, prune < {}{table})", self.args.prune_below)
            }
            PlayerKind::Ntuple => format!(
                "ntuple {depth} ({}{table}{})",
                self.source.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                if self.args.no_downgrade { "" } else { ", tile-downgrading" }
            ),
            PlayerKind::Mcts => format!(
                "mcts {} simulations, {:?} root, value weight {} ({})",
                self.args.simulations,
                self.args.root.rule(),
                self.args.value_weight,
                self.source.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
            ),
        }
    }
}

/// `latest` → ./weights; a directory → its latest revision (hash checked); else a file.
fn resolve_weights(spec: &str) -> Result<PathBuf> {
    if spec.contains("://") {
        return crate::storage::fetch_weights(spec, &zero2048_storage::Config::default());
    }
    let path = if spec == "latest" { PathBuf::from("weights") } else { PathBuf::from(spec) };
    if !path.is_dir() {
        if !path.is_file() {
            return Err(bad_input(format!(
                "{} is neither a weights file nor a weights directory",
                path.display()
            )));
        }
        return Ok(path);
    }
    latest_in(&path)
}

fn latest_in(dir: &Path) -> Result<PathBuf> {
    let local = LocalStorageBackend::new(dir, LocalUrls::File)?;
    let runtime = crate::storage::runtime()?;
    let latest = runtime.block_on(local.read_latest_info())?.ok_or_else(|| {
        bad_input(format!("{} has no latest.json: no revision was published there", dir.display()))
    })?;
    let path = local.checked_latest_file(&latest).map_err(|e| bad_input(e.to_string()))?;
    Ok(path)
}
