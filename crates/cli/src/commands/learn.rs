//! What `train` and `server` share: turning the learning flags and the file into a server's
//! options, and a two-stage Ctrl-C.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result};
use zero2048_model::NTupleConfig;
use zero2048_server::{Server, ServerError, ServerOptions};

use crate::args::{DeviceArg, LearnArgs, ListenArgs, ModelArg, StorageArgs, Switch};
use crate::{bad_input, config, storage};

/// Options for a server from the file, the environment and the flags.
pub fn options(storage_args: &StorageArgs, listen: &ListenArgs, learn: &LearnArgs) -> Result<ServerOptions> {
    let (file, storage_config) = storage::load(storage_args, listen)?;
    file.api.validate().map_err(bad_input)?;
    let mut train = file.train;
    if let Some(shape) = learn.network {
        // The shape flag names the tuples only: the stages and their tile stay as the file set them.
        let NTupleConfig { stages, stage_tile, .. } = train.network;
        train.network = NTupleConfig { stages, stage_tile, ..shape.config() };
    }
    if let Some(stages) = learn.stages {
        train.network.stages = stages;
    }
    if let Some(tile) = learn.stage_tile {
        train.network.stage_tile = tile;
    }
    if let Some(model) = learn.model {
        train.model = match model {
            ModelArg::Ntuple => zero2048_train::ModelKind::Ntuple,
            ModelArg::PolicyValue => zero2048_train::ModelKind::PolicyValue,
        };
    }
    if let Some(lambda) = learn.lambda {
        train.td.lambda = lambda;
    }
    if let Some(coherence) = learn.coherence {
        train.td.coherence = coherence == Switch::On;
    }
    if let Some(restart) = learn.restart {
        train.restart = (restart == Switch::On).then(|| train.restart.unwrap_or_default());
    }
    if let Some(value) = learn.initial_value {
        train.td.initial_value = value;
    }
    if let Some(depth) = learn.selfplay_depth {
        train.selfplay_depth = depth;
    }
    if let Some(simulations) = learn.simulations {
        train.mcts.simulations = simulations;
    }
    if let Some(root) = learn.root {
        train.mcts.root = root.rule();
    }
    if let Some(device) = learn.device {
        train.zero.device = match device {
            DeviceArg::Cpu => zero2048_model::policy_value::TrainDevice::Cpu,
            DeviceArg::Cuda => zero2048_model::policy_value::TrainDevice::Cuda,
        };
    }
    if let Some(weight) = learn.value_weight {
        train.mcts.value_weight = weight;
    }
    if let Some(filters) = learn.filters {
        train.policy_value.filters = filters as usize;
    }
    if let Some(blocks) = learn.blocks {
        train.policy_value.blocks = blocks as usize;
    }
    if let Some(bins) = learn.value_bins {
        train.policy_value.value_bins = bins as usize;
    }
    if let Some(reuse) = learn.sample_reuse {
        train.zero.sample_reuse = reuse;
    }
    if let Some(parallel) = learn.parallel_games {
        train.mcts_parallel_games = parallel as u32;
    }
    if let Some(rate) = learn.learning_rate {
        train.td.learning_rate = rate;
    }
    if let Some(n) = learn.revision_every_games {
        train.revision_every_games = n;
    }
    if let Some(s) = learn.revision_every_seconds {
        train.revision_every_seconds = s;
    }
    if let Some(games) = learn.eval_games {
        if games == 0 {
            train.evaluate_every_revisions = 0;
        } else {
            train.evaluation.games = games;
            train.mcts_evaluation_games = games;
        }
    }
    if let Some(seed) = learn.seed {
        train.seed = seed;
    }
    if let Some(seconds) = learn.deadline_seconds {
        train.deadline_seconds = seconds;
    }
    // One validation for every source: the file, the environment and the flags.
    train.validate().map_err(|e| bad_input(e.to_string()))?;
    let (db_path, database) =
        config::database(learn.database.as_deref().or(file.database.url.as_deref()), &learn.db)?;
    let resume_from =
        learn.resume_from.as_deref().map(|spec| storage::fetch_weights(spec, &storage_config)).transpose()?;
    Ok(ServerOptions {
        role: zero2048_server::Role::All,
        storage: storage_config,
        api: file.api,
        train,
        db_path,
        database,
        resume_from,
        publish_initial: false,
    })
}

/// Exit code of a `train` or `server` refused because another process runs the same run.
pub const EXIT_LOCKED: u8 = 5;

/// Starts the server; a port that is busy is a usage error, unless `fallback_port` allows
/// taking a free one instead (the local main job, whose port nobody chose).
pub fn start(
    mut options: ServerOptions,
    runtime: &tokio::runtime::Runtime,
    fallback_port: bool,
) -> Result<Server> {
    let port = options.storage.server.port;
    let host = options.storage.server.host.clone();
    match Server::start(options.clone(), runtime) {
        Ok(server) => Ok(server),
        Err(ServerError::Bind { source, .. })
            if fallback_port && source.kind() == std::io::ErrorKind::AddrInUse && port != 0 =>
        {
            options.storage.server.port = 0;
            let server = Server::start(options, runtime).map_err(|e| anyhow::anyhow!(e))?;
            eprintln!("port {port} on {host} is in use; serving on {} instead", server.address());
            Ok(server)
        }
        Err(e @ ServerError::Bind { .. }) => Err(bad_input(e.to_string())),
        Err(e @ ServerError::Train(zero2048_train::TrainError::Locked { .. })) => {
            Err(anyhow::Error::new(crate::Exit(EXIT_LOCKED, e.to_string())))
        }
        Err(e) => Err(anyhow::anyhow!(e)),
    }
}

/// First Ctrl-C (or SIGTERM, what systemd and container runtimes send, or SIGHUP) sets the
/// returned flag (with `first` printed); the second exits with 130.
pub fn two_stage_ctrl_c(first: &'static str) -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let presses = Arc::new(AtomicUsize::new(0));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || {
        if presses.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!("\n{first}");
            flag.store(true, Ordering::SeqCst);
        } else {
            // Every file is written atomically and every acknowledged game is committed, so
            // leaving now leaves only whole files.
            eprintln!("\nquitting now");
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C handler")?;
    Ok(stop)
}
