//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use zero2048_game::Board;

/// 2048-Zero: train 2048 agents from zero by distributed self-play.
#[derive(Parser, Debug)]
#[command(name = "zero2048", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// The main job: learn from zero by self-play on this machine (or resume), publishing
    /// revisions to the configured storage, until Ctrl-C or a budget.
    Train(TrainArgs),
    /// Watch one agent play one game in the terminal.
    Play(PlayArgs),
    /// Play N seeded games in parallel and print a strength table.
    Eval(EvalArgs),
    /// Measure engine and search throughput against plain reference implementations.
    Bench(BenchArgs),
    /// Verify a game record file step by step and print what it establishes.
    Replay(ReplayArgs),
    /// Search one position and print the value of every move.
    Analyze(AnalyzeArgs),
    /// List, download or verify the weights revisions in the configured storage.
    Weights(WeightsArgs),
    /// The training server alone: the /api/v1 protocol for remote workers, with the learner
    /// inside, publishing revisions to the configured storage.
    Server(ServerArgs),
    /// A self-play worker: plays games with the server's latest revision and uploads them.
    Worker(WorkerArgs),
    /// Issue, list and revoke worker tokens.
    Token(TokenArgs),
    /// Export stored games for analysis (pandas, DuckDB).
    Export(ExportArgs),
}

/// `zero2048 export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// What to export.
    #[command(subcommand)]
    pub what: ExportWhat,
}

/// `zero2048 export …`.
#[derive(Subcommand, Debug)]
pub enum ExportWhat {
    /// Every stored game of a revision (or of the whole run): uuid, worker, revision, score,
    /// moves, largest tile and the record.
    Games {
        /// The revision (default: every revision).
        #[arg(long)]
        revision: Option<u64>,
        /// jsonl (one JSON object per line, the record as JSON) or csv (the record as hex of its
        /// canonical binary encoding).
        #[arg(long, value_enum, default_value_t = ExportFormatArg::Jsonl)]
        format: ExportFormatArg,
        /// The run database.
        #[arg(long, default_value = "zero2048.db", value_name = "FILE")]
        db: PathBuf,
        /// The run database as a URL (sqlite://FILE or postgres://…), instead of --db.
        #[arg(long, value_name = "URL", env = "ZERO2048_DATABASE__URL", hide_env_values = true)]
        database: Option<String>,
        /// Write here instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// Export formats.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormatArg {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header line.
    Csv,
}

/// Where the server listens (`server.host` / `server.port` in the configuration file).
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Server")]
pub struct ListenArgs {
    /// Address to listen on: 0.0.0.0 accepts remote workers (give --advertised-host then)
    /// [server.host; default: 127.0.0.1].
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// The name or address workers reach this server at, put in the URLs it hands out; needed when
    /// --host is a wildcard such as 0.0.0.0 [server.advertised_host; default: none, the --host].
    #[arg(long, value_name = "HOST")]
    pub advertised_host: Option<String>,
    /// Port to listen on, 0 picks a free one [server.port; default: 8000].
    #[arg(long)]
    pub port: Option<u16>,
    /// Serve the weights over HTTP from this server [server.localhost_weights].
    #[arg(long)]
    pub localhost_weights: bool,
}

/// How the learner learns (the `train:` section, overridden).
#[derive(Args, Debug, Clone, Default)]
pub struct LearnArgs {
    /// The run database when it is SQLite; with --database on PostgreSQL, the name the run's lock
    /// file and state directory are kept beside.
    #[arg(long, default_value = "zero2048.db", value_name = "FILE", help_heading = "Run")]
    pub db: PathBuf,
    /// The run database as a URL: sqlite://FILE, or postgres://USER[:PASSWORD]@HOST[:PORT]/DB
    /// [database.url; default: none, the --db file].
    #[arg(long, value_name = "URL", help_heading = "Run")]
    pub database: Option<String>,
    /// Start from this weights file instead of the latest revision: a path, a file://, http:// or
    /// https:// URL, or r2://bucket/key (with the configured R2 credentials) [default: none, the
    /// run's latest revision].
    #[arg(long, value_name = "PATH|URL|r2://bucket/key", help_heading = "Run")]
    pub resume_from: Option<String>,
    /// The model to train: the n-tuple network with expectimax, or the policy-value network with
    /// MCTS; a run keeps the kind it started with [train.model; default: ntuple].
    #[arg(long, value_enum, help_heading = "Run")]
    pub model: Option<ModelArg>,
    /// Run seed [train.seed; default: 2048].
    #[arg(long, help_heading = "Run")]
    pub seed: Option<u64>,
    /// The n-tuple network of a new run, train.network in the file [default: 8x6].
    #[arg(long, value_enum, help_heading = "N-tuple learning")]
    pub network: Option<NetworkShape>,
    /// Weight sets by largest tile for a new n-tuple run: 2 adds a second set once the largest
    /// tile reaches 2^stage-tile (16384 by default), opened when a game first gets there as a
    /// copy of the stage below; each stage the network's size in memory
    /// [train.network.stages; default: 2].
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=4), help_heading = "N-tuple learning")]
    pub stages: Option<u8>,
    /// The tile, as an exponent, from which the second weight set plays: 14 is 16384, 13 is 8192
    /// [train.network.stage_tile; default: 14].
    #[arg(long, value_name = "EXPONENT", value_parser = clap::value_parser!(u8).range(1..=15), help_heading = "N-tuple learning")]
    pub stage_tile: Option<u8>,
    /// TD step size, shared by the features [train.td.learning_rate; default: 0.1].
    #[arg(long, help_heading = "N-tuple learning")]
    pub learning_rate: Option<f32>,
    /// λ of TD(λ): 0 learns from the next afterstate only [train.td.lambda; default: 0.5].
    #[arg(long, help_heading = "N-tuple learning")]
    pub lambda: Option<f32>,
    /// Temporal-coherence learning: adaptive per-weight steps, three times the memory
    /// [train.td.coherence; default: on].
    #[arg(long, value_enum, help_heading = "N-tuple learning")]
    pub coherence: Option<Switch>,
    /// The restart strategy: after a game of more than 10 moves, the next game continues from an
    /// afterstate between halfway and 0.85 into it, or from the move that made a new 16384 or more
    /// [train.restart; default: on].
    #[arg(long, value_enum, help_heading = "N-tuple learning")]
    pub restart: Option<Switch>,
    /// Optimistic initialisation of a new network: every afterstate starts valued at this
    /// [train.td.initial_value; default: 0].
    #[arg(long, value_name = "SCORE", help_heading = "N-tuple learning")]
    pub initial_value: Option<f32>,
    /// Self-play search depth, sent to every worker [train.selfplay_depth; default: 1].
    #[arg(long, value_name = "PLIES", help_heading = "N-tuple learning")]
    pub selfplay_depth: Option<u32>,
    /// MCTS simulations per move, sent to every worker [train.mcts.simulations; default: 8].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100000), help_heading = "Policy-value learning")]
    pub simulations: Option<u32>,
    /// How the MCTS root chooses, sent to every worker [train.mcts.root; default: gumbel].
    #[arg(long, value_enum, help_heading = "Policy-value learning")]
    pub root: Option<RootArg>,
    /// Where policy-value training runs: cpu, or cuda in a build with `--features cuda`
    /// [train.zero.device; default: cpu].
    #[arg(long, value_enum, help_heading = "Policy-value learning")]
    pub device: Option<DeviceArg>,
    /// How much the network's value counts in the search, 0..=1 [train.mcts.value_weight;
    /// default: 1].
    #[arg(long, help_heading = "Policy-value learning")]
    pub value_weight: Option<f32>,
    /// Convolution filters of a new policy-value network [train.policy_value.filters; default: 32].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=512), help_heading = "Policy-value learning")]
    pub filters: Option<u64>,
    /// Residual blocks of a new policy-value network [train.policy_value.blocks; default: 2].
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=64), help_heading = "Policy-value learning")]
    pub blocks: Option<u64>,
    /// Bins of a new policy-value network's categorical value head, 0 for a scalar head
    /// (mean squared error) [train.policy_value.value_bins; default: 601].
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=4096), help_heading = "Policy-value learning")]
    pub value_bins: Option<u64>,
    /// How often the learner draws each new position on average: optimiser steps are new
    /// positions × this ÷ the batch [train.zero.sample_reuse; default: 2].
    #[arg(long, value_name = "DRAWS", help_heading = "Policy-value learning")]
    pub sample_reuse: Option<f64>,
    /// Games each MCTS self-play thread plays at once, the network's batch size
    /// [train.mcts_parallel_games; default: 64].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096), help_heading = "Policy-value learning")]
    pub parallel_games: Option<u64>,
    /// Publish a revision every this many games [train.revision_every_games; default: 100000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Publishing and evaluation")]
    pub revision_every_games: Option<u64>,
    /// ...or every this many seconds [train.revision_every_seconds; default: 300].
    #[arg(long, help_heading = "Publishing and evaluation")]
    pub revision_every_seconds: Option<f64>,
    /// Games in each revision's evaluation on the fixed seeds, 0 for none
    /// [train.evaluation.games; default: 200].
    #[arg(long, help_heading = "Publishing and evaluation")]
    pub eval_games: Option<usize>,
    /// Seconds each latest record stays valid; presigned URLs outlive it
    /// [train.deadline_seconds; default: 86400].
    #[arg(long, help_heading = "Publishing and evaluation")]
    pub deadline_seconds: Option<u64>,
}

/// How an MCTS root chooses the moves to simulate.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootArg {
    /// PUCT with Dirichlet noise; the policy learns the visit counts.
    Puct,
    /// Gumbel-top-k with sequential halving; the policy learns the improved policy (works with 2–16
    /// simulations).
    Gumbel,
}

impl RootArg {
    /// As the search crate's rule.
    pub fn rule(self) -> zero2048_search::RootRule {
        match self {
            RootArg::Puct => zero2048_search::RootRule::Puct,
            RootArg::Gumbel => zero2048_search::RootRule::Gumbel,
        }
    }
}

/// An on/off setting.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// Training devices on the command line.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    /// The CPU cores (burn's flex backend).
    Cpu,
    /// The first CUDA GPU.
    Cuda,
}

/// Model kinds on the command line.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelArg {
    /// N-tuple network, TD learning, expectimax.
    Ntuple,
    /// Policy-value network, trained from MCTS statistics, played with MCTS.
    PolicyValue,
}

/// `zero2048 server`.
#[derive(Args, Debug)]
pub struct ServerArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub learn: LearnArgs,
    /// Tokens are needed for `GET /api/v1/latest` and the weights too
    /// [api.require_token_for_latest].
    #[arg(long, help_heading = "Server")]
    pub require_token_for_latest: bool,
    /// all: API and learner in this process; api: uploads, latest record, weights and
    /// dashboard only (any number, on the run's shared database and storage); learner: the
    /// run's one learner, taking no uploads.
    #[arg(long, value_enum, default_value_t = RoleArg::All, help_heading = "Server")]
    pub role: RoleArg,
}

/// `--role`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleArg {
    /// API and learner in one process.
    All,
    /// An API server of the run.
    Api,
    /// The run's learner.
    Learner,
}

/// `zero2048 worker`. Every setting but the server can also come from the `worker:` section of
/// `--config` or `ZERO2048_WORKER__<KEY>` variables; a flag wins.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The server's URL (http://host:port). Give it several times for several API servers of
    /// one run: the worker uses the first and moves to the next when one cannot be reached.
    #[arg(long, value_name = "URL", required = true)]
    pub server: Vec<String>,
    /// The worker token (`zero2048 token add NAME` on the server) [default: none, ZERO2048_TOKEN].
    #[arg(long, value_name = "TOKEN", env = "ZERO2048_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Configuration file, its `worker:` section; see config.example.yaml [default: none].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Playing threads [worker.threads; default: 0, one per core].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,
    /// Where finished games wait for the server's acknowledgement [worker.spool_dir; default:
    /// zero2048-spool].
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Where downloaded weights are cached, by SHA-256 [worker.cache_dir; default: zero2048-cache].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Disk budget of the weights cache in MiB; older revisions are evicted past it, never the
    /// one in use [worker.cache_budget_mib; default: 2048].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_budget_mib: Option<u64>,
    /// Read the latest record from this URL (a bucket's public latest.json) instead of the server
    /// [default: none, the server's /api/v1/latest].
    #[arg(long, value_name = "URL")]
    pub latest_url: Option<String>,
    /// Games per upload, up to 16 times as many while the spool holds a backlog
    /// [worker.batch_games; default: 64].
    #[arg(long)]
    pub batch_games: Option<u64>,
    /// Upload a smaller batch after this long [worker.upload_interval_seconds; default: 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub upload_interval: Option<std::time::Duration>,
    /// Pause playing while this many finished games wait in the spool [worker.max_spool_games;
    /// default: 4096].
    #[arg(long)]
    pub max_spool_games: Option<u64>,
    /// Read the latest record this often [worker.poll_interval_seconds; default: 15s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub poll_interval: Option<std::time::Duration>,
    /// Adopt a new revision after a random delay of up to this long [worker.adopt_delay_seconds;
    /// default: 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub adopt_delay: Option<std::time::Duration>,
    /// Stop after this many games and upload them [default: none, play until stopped].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub games: Option<u64>,
    /// Seed of this worker's games [default: random].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `zero2048 token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The run database (the server's).
    #[arg(long, default_value = "zero2048.db", value_name = "FILE", global = true)]
    pub db: PathBuf,
    /// The run database as a URL (sqlite://FILE or postgres://…), instead of --db.
    #[arg(long, value_name = "URL", global = true, env = "ZERO2048_DATABASE__URL", hide_env_values = true)]
    pub database: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub action: TokenAction,
}

/// `zero2048 token …`.
#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Issue a token for a worker; it is printed once and stored only as a hash.
    Add {
        /// The worker's name (letters, digits, '.', '_', '-').
        name: String,
    },
    /// Every token: name, fingerprint, created, revoked.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Refuse a worker's token from now on.
    Revoke {
        /// The worker's name.
        name: String,
        /// Also quarantine every game it sent: the learner skips those not yet learned.
        #[arg(long)]
        purge_games: bool,
    },
}

/// Where weights are stored: the configuration file and the storage flags (`docs/storage.md`).
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Storage")]
pub struct StorageArgs {
    /// Configuration file, YAML; see config.example.yaml [default: none, the embedded defaults].
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Use Cloudflare R2 or another S3-compatible bucket [storage.use_r2].
    #[arg(long, global = true)]
    pub use_r2: bool,
    /// The bucket [storage.r2_bucket; default: none].
    #[arg(long, value_name = "NAME", global = true)]
    pub r2_bucket: Option<String>,
    /// Access key ID; prefer the R2_ACCESS_KEY environment variable, flags show in `ps`
    /// [storage.r2_access_key; default: none].
    #[arg(long, value_name = "KEY", global = true)]
    pub r2_access_key: Option<String>,
    /// Secret access key; prefer the R2_SECRET_KEY environment variable
    /// [storage.r2_secret_key; default: none].
    #[arg(long, value_name = "SECRET", global = true)]
    pub r2_secret_key: Option<String>,
    /// The S3 API endpoint URL, or R2_ENDPOINT [storage.r2_endpoint_url; default: none].
    #[arg(long, value_name = "URL", global = true)]
    pub r2_endpoint: Option<String>,
    /// Public base URL of the bucket: hand out unsigned URLs under it
    /// [storage.r2_public_url; default: none].
    #[arg(long, value_name = "URL", global = true)]
    pub r2_public_url: Option<String>,
    /// Local weights directory: the store, or the cache when a bucket is used
    /// [storage.weights_dir; default: weights].
    #[arg(long, value_name = "DIR", global = true)]
    pub weights_dir: Option<PathBuf>,
    /// Local directory of the accepted games (compressed chunks) when no bucket is used
    /// [storage.games_dir; default: none, games beside the weights directory].
    #[arg(long, value_name = "DIR", global = true)]
    pub games_dir: Option<PathBuf>,
    /// Disk budget of the stored revisions in MiB, here and in the bucket: the oldest go first,
    /// never the latest; 0 for none besides storage.keep_revisions
    /// [storage.weights_budget_mib; default: 0].
    #[arg(long, value_name = "MIB", global = true)]
    pub weights_budget_mib: Option<u64>,
}

/// `zero2048 weights`.
#[derive(Args, Debug)]
pub struct WeightsArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: WeightsAction,
}

/// `zero2048 weights …`.
#[derive(Subcommand, Debug)]
pub enum WeightsAction {
    /// Every stored revision with its size, SHA-256 and date, and the storage state.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download one revision through its URL, verified against its recorded size and SHA-256.
    Pull {
        /// The revision.
        revision: u64,
        /// Directory to put it in.
        #[arg(long, default_value = ".", value_name = "DIR")]
        output: PathBuf,
    },
    /// Re-hash every stored file and compare it with its recorded SHA-256 and size.
    Verify,
    /// Write the weight-by-weight mean of several n-tuple revisions: the mean of a run's last
    /// few revisions plays more strongly than its last one alone (BENCHMARKS.md, issue 11).
    Average {
        /// The weights files to average (all of one network shape).
        #[arg(value_name = "FILE", required_unless_present = "last", conflicts_with = "last")]
        files: Vec<PathBuf>,
        /// Average the newest N stored revisions instead, each verified against its recorded
        /// SHA-256 first.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        last: Option<u64>,
        /// The file to write (replaced whole: written beside it, then renamed).
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
    },
}

/// `zero2048 train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Stop after learning from this many games in this session [default: none, until Ctrl-C].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Run")]
    pub games: Option<u64>,
    /// Stop after this long, e.g. `90s`, `1h`, `2h 30m` [default: none, until Ctrl-C].
    #[arg(long, value_parser = humantime::parse_duration, help_heading = "Run")]
    pub time: Option<std::time::Duration>,
    /// Self-play threads, each playing and learning on the one shared network
    /// [train.selfplay_threads; default: 0, one per core].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256), help_heading = "Run")]
    pub threads: Option<u64>,
    /// Start over from zero: delete the run database and the local weights directory first.
    #[arg(long, help_heading = "Run")]
    pub reset: bool,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub learn: LearnArgs,
    /// Print the summary as JSON.
    #[arg(long, help_heading = "Run")]
    pub json: bool,
}

/// Network shapes.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkShape {
    /// Four 6-cell tuples, 256 MiB: the standard network, twice as fast per move as 8x6.
    #[value(name = "4x6")]
    Standard4x6,
    /// Jaśkowski's five 6-cell tuples, 320 MiB.
    #[value(name = "5x6")]
    Jaskowski5x6,
    /// Matsuzaki's eight 6-cell tuples, 512 MiB: the default, the strongest after an hour.
    #[value(name = "8x6")]
    Matsuzaki8x6,
    /// Four 4-cell tuples, 1 MiB: for quick runs and tests.
    #[value(name = "4x4")]
    Small4x4,
}

impl NetworkShape {
    /// The shape.
    pub fn config(self) -> zero2048_model::NTupleConfig {
        match self {
            NetworkShape::Standard4x6 => zero2048_model::NTupleConfig::standard_4x6(),
            NetworkShape::Jaskowski5x6 => zero2048_model::NTupleConfig::jaskowski_5x6(),
            NetworkShape::Matsuzaki8x6 => zero2048_model::NTupleConfig::matsuzaki_8x6(),
            NetworkShape::Small4x4 => zero2048_model::NTupleConfig::small_4x4(),
        }
    }
}

/// Which player, and how it searches.
#[derive(Args, Debug, Clone)]
pub struct PlayerArgs {
    /// The player.
    #[arg(long, value_enum, default_value_t = PlayerKind::Expectimax)]
    pub player: PlayerKind,
    /// Own moves searched, the papers' "N-ply" (1 = greedy on the value of the afterstate: the
    /// heuristic's, or the network's for ntuple; 3 = three move layers with two chance layers
    /// between them). With --move-time, the deepest the search may go. Default: 3, or 8 with
    /// --move-time.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub depth: Option<u32>,
    /// Time per move (e.g. `10ms`): deepen the search one ply at a time and play the deepest
    /// search that finished within it.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "TIME")]
    pub move_time: Option<std::time::Duration>,
    /// Evaluate boards holding a 32768 tile as if their large tiles were one rank lower (ntuple;
    /// tile-downgrading: the network rarely saw 32768 in training). On by default.
    #[arg(long)]
    pub no_downgrade: bool,
    /// Chance branches less likely than this are cut (expectimax).
    #[arg(long, default_value_t = 1e-4, value_parser = probability)]
    pub prune_below: f32,
    /// Transposition table of 2^BITS entries, 16 bytes each (expectimax; 0 turns it off). Default:
    /// 20 from depth 3 on (and with --move-time), where it makes the search 1.25-3.4 times
    /// faster, else off.
    #[arg(long, value_name = "BITS", value_parser = table_bits)]
    pub transposition_bits: Option<u8>,
    /// Probability that a spawned tile is a 4.
    #[arg(long, default_value_t = 0.1, value_parser = probability)]
    pub four_probability: f32,
    /// Weights of the ntuple or mcts player: a .safetensors file or URL (file://, http://,
    /// https://), a weights directory (its latest revision), or `latest` (./weights).
    #[arg(long, value_name = "FILE|URL|DIR|latest")]
    pub weights: Option<String>,
    /// Simulations per move of the mcts player.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub simulations: u32,
    /// How the mcts player's root chooses.
    #[arg(long, value_enum, default_value_t = RootArg::Puct)]
    pub root: RootArg,
    /// How much the policy-value network's value counts at a leaf of the mcts player's search
    /// (1 = fully; 0 = only the points scored on the way and the policy).
    #[arg(long, default_value_t = 1.0, value_parser = probability)]
    pub value_weight: f32,
}

/// The players this build knows.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlayerKind {
    /// A uniformly random legal move.
    Random,
    /// The move with the largest immediate score.
    Greedy,
    /// Expectimax search on the hand-written heuristic.
    Expectimax,
    /// The learned n-tuple network (`--weights`), greedy at depth 1 or expectimax deeper.
    Ntuple,
    /// Monte Carlo tree search with a learned policy-value network (`--weights` of a
    /// `--model policy-value` run, `--simulations` per move).
    Mcts,
}

fn table_bits(s: &str) -> Result<u8, String> {
    match s.parse::<u8>() {
        Ok(bits) if bits == 0 || (4..=30).contains(&bits) => Ok(bits),
        _ => Err(format!("`{s}` is not 0 (off) or a table size in 4..=30 bits")),
    }
}

impl PlayerArgs {
    /// The depth: the explicit choice, else 3, or 8 (the most) with a time per move.
    pub fn depth(&self) -> u32 {
        self.depth.unwrap_or(if self.move_time.is_some() { 8 } else { 3 })
    }

    /// The transposition table size to use: the explicit choice, or the default for the depth.
    pub fn table_bits(&self) -> Option<u8> {
        match self.transposition_bits {
            Some(0) => None,
            Some(bits) => Some(bits),
            None if self.depth() >= 3 => Some(20),
            None => None,
        }
    }
}

fn probability(s: &str) -> Result<f32, String> {
    let p: f32 = s.parse().map_err(|_| format!("`{s}` is not a number; expected a probability in 0..=1"))?;
    if (0.0..=1.0).contains(&p) { Ok(p) } else { Err(format!("{p} is outside 0..=1")) }
}

/// `zero2048 play`.
#[derive(Args, Debug)]
pub struct PlayArgs {
    #[command(flatten)]
    pub player: PlayerArgs,
    /// Seed of the game (spawns and the player's own random choices).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Milliseconds to wait after each move [default: 100 when the board is drawn on a terminal, 0
    /// otherwise].
    #[arg(long, value_name = "MS")]
    pub delay: Option<u64>,
    /// Print only the result.
    #[arg(long)]
    pub quiet: bool,
    /// Save the game record here (`.json` for JSON, anything else for the compact binary form).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
}

/// `zero2048 eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub player: PlayerArgs,
    /// Number of games.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub games: u64,
    /// Game i is played on a seed derived from this one and i.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Games played at once (default: every core).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write every game's record here, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    pub records: Option<PathBuf>,
}

/// `zero2048 bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What to measure: the engine and search, or uploads and downloads to the configured bucket.
    #[arg(long, value_enum, default_value_t = BenchSuite::Engine)]
    pub suite: BenchSuite,
    /// File size for the storage suite, in MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub size_mib: u64,
    /// Scratch directory for the storage suite (removed afterwards).
    #[arg(long, default_value = "bench-storage.tmp", value_name = "DIR")]
    pub work_dir: PathBuf,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Tiny runs that only check every benchmark works (figures are meaningless).
    #[arg(long)]
    pub quick: bool,
    /// Seconds of concurrent uploads (server suite).
    #[arg(long, default_value_t = 60.0)]
    pub load_seconds: f64,
    /// Simulated workers uploading at once (server suite).
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
    /// Server suite: also measure ingest on this PostgreSQL database (it gets the run tables; use a
    /// scratch database), beside SQLite in the same run.
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// Depth of the expectimax benchmark.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=6))]
    pub depth: u32,
    /// Policy-value weights for the zero suite (default: a freshly initialised network of the
    /// default shape; throughput does not depend on the weights, strength does).
    #[arg(long, value_name = "FILE")]
    pub policy_value_weights: Option<PathBuf>,
    /// N-tuple weights for the zero suite's comparison at equal time per move (without it the
    /// comparison is skipped).
    #[arg(long, value_name = "FILE")]
    pub ntuple_weights: Option<PathBuf>,
    /// Simulations per move in the zero suite.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100000))]
    pub simulations: u32,
    /// How much the network's value counts in the zero suite's searches (mcts.value_weight).
    #[arg(long, default_value_t = 1.0)]
    pub value_weight: f32,
    /// Games per player in the zero suite's comparison.
    #[arg(long, default_value_t = 20)]
    pub games: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Benchmark suites.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchSuite {
    /// Move generation, random games and expectimax against plain references.
    Engine,
    /// Bucket upload and download throughput, peak memory, fallback time (needs --use-r2 …).
    Storage,
    /// TD learning and 1-ply self-play moves on the 4×6 n-tuple network against plain code.
    Learn,
    /// Upload ingest, concurrent simulated workers, `latest` requests, remote vs in-process
    /// self-play, against a server on loopback.
    Server,
    /// Policy-value inference at batch 1/64/512 and MCTS simulations batched across games, on one
    /// core; with --ntuple-weights, MCTS against expectimax at equal time per move.
    Zero,
    /// What a worker following a run downloads per revision (delta, compressed, whole) and the
    /// time to apply and verify a delta, from the run's --weights-dir.
    Downloads,
    /// Two API servers apart from the learner (processes of this binary), simulated workers
    /// uploading through both, one API server killed halfway: failovers, latency, games lost.
    Roles,
}

/// `zero2048 replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// A game record: JSON (as `eval --records` or `play --record x.json` write) or the binary form.
    pub file: PathBuf,
    /// Print the final board after the summary.
    #[arg(long)]
    pub show: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `zero2048 analyze`.
#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// The position: 16 tile values row by row ("2 4 0 0 ...", `.` or 0 for empty), or 16 hex
    /// exponents ("1200/0000/0000/0001").
    #[arg(long, value_parser = parse_board)]
    pub board: Board,
    /// Own moves to search.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub depth: u32,
}

fn parse_board(s: &str) -> Result<Board, String> {
    s.parse().map_err(|e: zero2048_game::ParseBoardError| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;
    use crate::config::FileConfig;

    /// `[section.key; default: VALUE]` in an option's help, as (key, value).
    fn documented_default(help: &str) -> Option<(String, String)> {
        let start = help.rfind('[')?;
        let (key, rest) = help[start + 1..].split_once("; default: ")?;
        let value = rest.split([']', ',']).next()?.trim();
        Some((key.to_string(), value.to_string()))
    }

    /// Whether the help's `written` default is the configuration's `value`: numbers equal as
    /// numbers (an f32 setting reads 0.10000000149 in JSON; a number of seconds may carry its `s`),
    /// switches as on/off, nothing as none/off.
    fn same(written: &str, value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::Bool(b) => written == if *b { "on" } else { "off" },
            serde_json::Value::Null => written == "none" || written == "off",
            serde_json::Value::Object(_) => written == "on",
            serde_json::Value::String(s) => written == s,
            serde_json::Value::Number(n) => {
                let expected = n.as_f64().unwrap();
                written
                    .trim_end_matches('s')
                    .parse::<f64>()
                    .is_ok_and(|x| (x - expected).abs() <= 1e-6 * expected.abs().max(1.0))
            }
            _ => false,
        }
    }

    #[test]
    fn every_option_shows_its_default_and_each_documented_default_is_the_configurations() {
        let defaults = serde_json::to_value(FileConfig::default()).unwrap();
        let mut cli = Cli::command();
        cli.build();
        let mut checked = 0;
        for name in ["train", "server", "worker"] {
            let command = cli.find_subcommand(name).unwrap();
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                let plain_switch = !arg.get_action().takes_values();
                if id == "help"
                    || id == "version"
                    || arg.is_positional()
                    || arg.is_required_set()
                    || plain_switch
                {
                    continue;
                }
                let help = arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()).unwrap_or_default();
                let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
                let clap_default = !arg.get_default_values().is_empty();
                assert!(
                    clap_default || help.contains("default: "),
                    "`{name} --{id}` does not say its default: {help:?}"
                );
                let Some((key, value)) = documented_default(&help) else { continue };
                let found = key.split('.').try_fold(&defaults, |v, part| v.get(part));
                let found =
                    found.unwrap_or_else(|| panic!("`{name} --{id}` names {key}, which is not a key"));
                assert!(
                    same(&value, found),
                    "`{name} --{id}` says {key} defaults to {value}, the configuration says {found}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 30, "only {checked} documented defaults were checked");
    }

    #[test]
    fn train_options_are_grouped() {
        let mut cli = Cli::command();
        cli.build();
        let train = cli.find_subcommand("train").unwrap();
        let headings: std::collections::BTreeSet<_> =
            train.get_arguments().filter_map(|a| a.get_help_heading()).collect();
        for heading in [
            "Run",
            "Storage",
            "Server",
            "N-tuple learning",
            "Policy-value learning",
            "Publishing and evaluation",
        ] {
            assert!(headings.contains(heading), "no {heading:?} group in {headings:?}");
        }
        let ungrouped: Vec<_> = train
            .get_arguments()
            .filter(|a| a.get_help_heading().is_none() && !["help", "version"].contains(&a.get_id().as_str()))
            .map(|a| a.get_id().to_string())
            .collect();
        assert!(ungrouped.is_empty(), "options outside every group: {ungrouped:?}");
    }
}
