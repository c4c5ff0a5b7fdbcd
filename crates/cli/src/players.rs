//! Turning `--player …` options into players.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use zero2048_game::SpawnRule;
use zero2048_model::{DOWNGRADE_FROM, Downgrading, NTupleNetwork, weights_file};
use zero2048_search::{ExpectimaxConfig, ExpectimaxPlayer, GreedyPlayer, Player, RandomPlayer};
use zero2048_storage::{LocalStorageBackend, LocalUrls, StorageBackend};

use crate::args::{PlayerArgs, PlayerKind};
use crate::bad_input;

/// Makes a player per game; holds what all games share (a loaded network).
pub struct PlayerFactory {
    args: PlayerArgs,
    network: Option<Arc<NTupleNetwork>>,
    source: Option<PathBuf>,
}

impl PlayerFactory {
    /// Checks the options and loads what they name.
    pub fn new(args: &PlayerArgs) -> Result<PlayerFactory> {
        let (network, source) = match args.player {
            PlayerKind::Ntuple => {
                let spec = args
                    .weights
                    .as_deref()
                    .ok_or_else(|| bad_input("the ntuple player needs --weights FILE|DIR|latest"))?;
                let path = resolve_weights(spec)?;
                let (network, _) = weights_file::load(&path, None).map_err(|e| bad_input(e.to_string()))?;
                (Some(Arc::new(network)), Some(path))
            }
            _ => (None, None),
        };
        Ok(PlayerFactory { args: args.clone(), network, source })
    }

    fn search(&self) -> ExpectimaxConfig {
        ExpectimaxConfig {
            depth: self.args.depth(),
            move_time: self.args.move_time,
            probability_threshold: self.args.prune_below,
            transposition_bits: self.args.table_bits(),
            rule: SpawnRule::new(self.args.four_probability as f64).unwrap_or(SpawnRule::STANDARD),
        }
    }

    /// A player for one game; `seed` drives its own random choices.
    pub fn build(&self, seed: u64) -> Box<dyn Player> {
        match (&self.args.player, &self.network) {
            (PlayerKind::Random, _) => Box::new(RandomPlayer::new(seed)),
            (PlayerKind::Greedy, _) => Box::new(GreedyPlayer::new(seed)),
            (PlayerKind::Ntuple, Some(network)) if self.args.no_downgrade => {
                Box::new(ExpectimaxPlayer::new(Arc::clone(network), self.search()))
            }
            (PlayerKind::Ntuple, Some(network)) => Box::new(ExpectimaxPlayer::new(
                Downgrading { network: Arc::clone(network), from: DOWNGRADE_FROM },
                self.search(),
            )),
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
