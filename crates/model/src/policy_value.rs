//! The policy-value network (model kind `policy_value`): a residual tower with
//! squeeze-and-excitation on the one-hot board, a policy head over the 4 moves and a value head,
//! built with burn. Inference runs on burn's pure-Rust `flex` CPU backend; training is generic
//! over any autodiff backend (CPU here, CUDA with the `cuda` feature).
//!
//! Values: G is the discounted score to go and h(x) = sign(x)(√(|x|+1) − 1) + εx is MuZero's
//! invertible squashing transform, so that targets from 10 to 100,000 points span 3 to 400 units.
//! The value head comes in two kinds ([`PolicyValueConfig::value_bins`]):
//! - **categorical** (the default, as MuZero's and LightZero's 2048 configurations): a
//!   distribution over the bins h = 0, 1, …, bins − 1, learned by cross-entropy against the
//!   "two-hot" target (h(G) split between the two bins around it); the value is the
//!   distribution's mean, unsquashed. The loss is scale-free: a young head is as sure of a
//!   500-point position as of a 50,000-point one.
//! - **scalar** (`value_bins = 0`, and every file written before the categorical head): one
//!   output regressing `h(G) / VALUE_SCALE` by mean squared error.
//!
//! [`PolicyValueNet::predict`] hands the search values back in points either way.

use std::collections::BTreeMap;
use std::path::Path;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::{AutodiffModule, Module, ParamId, list_param_ids};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::activation::{log_softmax, relu, sigmoid, softmax};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use zero2048_game::{Board, Direction};
use zero2048_search::{PolicyValue, Prediction};

pub use crate::weights_file::WeightsFileError;
use crate::weights_file::check_identity;

/// The CPU backend every worker and the inference path use.
pub type CpuBackend = burn::backend::Flex;
/// Training on the CPU.
pub type CpuTrainBackend = burn::backend::Autodiff<CpuBackend>;
/// Training on a CUDA GPU (kernels compiled by NVRTC at run time).
#[cfg(feature = "cuda")]
pub type CudaTrainBackend = burn::backend::Autodiff<burn::backend::Cuda>;

/// Makes the calling thread run burn's CPU kernels itself (a rayon pool of one thread, this one)
/// from its first prediction on. Why: otherwise every kernel of every self-play thread goes to
/// rayon's one shared pool, where those threads and the learner queue behind each other's small
/// operations while cores sit idle (the run's profile in BENCHMARKS.md); a self-play thread has a
/// core's worth of work of its own. Training ([`Trainer`]) keeps the shared pool, which then only
/// the learner uses: when self-play pauses for it, its kernels spread over every core. A thread
/// already in a pool (its caller chose one) is left as it is.
fn kernels_on_this_thread() {
    use std::cell::OnceCell;
    thread_local! {
        static OWN_POOL: OnceCell<Option<rayon::ThreadPool>> = const { OnceCell::new() };
    }
    OWN_POOL.with(|pool| {
        pool.get_or_init(|| {
            if rayon::current_thread_index().is_some() {
                return None;
            }
            // Failing to build one leaves the thread on the shared pool: slower, still right.
            rayon::ThreadPoolBuilder::new().num_threads(1).use_current_thread().build().ok()
        });
    });
}

/// The model kind written in weights files and latest records.
pub const KIND: &str = "policy_value";
/// The metadata version this build writes and reads.
pub const FORMAT_VERSION: &str = "1";
/// Input planes: one per exponent 0 (empty) to 15.
pub const PLANES: usize = 16;
/// A scalar value head predicts h(G) / VALUE_SCALE.
pub const VALUE_SCALE: f32 = 50.0;
/// The categorical value head's bins by default: h from 0 to 600, values up to about 179,000
/// points of discounted score to go (MuZero's support size).
pub const DEFAULT_VALUE_BINS: usize = 601;
/// The most bins a categorical value head may have.
pub const MAX_VALUE_BINS: usize = 4096;
const EPSILON: f32 = 0.001;

/// MuZero's value squashing: h(x) = sign(x)(√(|x|+1) − 1) + εx.
pub fn squash(x: f32) -> f32 {
    x.signum() * ((x.abs() + 1.0).sqrt() - 1.0) + EPSILON * x
}

/// The inverse of [`squash`].
pub fn unsquash(y: f32) -> f32 {
    let inner = ((1.0 + 4.0 * EPSILON * (y.abs() + 1.0 + EPSILON)).sqrt() - 1.0) / (2.0 * EPSILON);
    y.signum() * (inner * inner - 1.0)
}

/// The network's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyValueConfig {
    /// Channels of every convolution.
    pub filters: usize,
    /// Residual blocks (two 3×3 convolutions and a squeeze-and-excitation each).
    pub blocks: usize,
    /// Squeeze-and-excitation bottleneck: filters / se_ratio.
    pub se_ratio: usize,
    /// Hidden units of the value head.
    pub value_hidden: usize,
    /// The value head's bins: 0 for a scalar head (mean squared error on h(G) / VALUE_SCALE),
    /// else a categorical head over h = 0 … value_bins − 1 (see the module documentation).
    pub value_bins: usize,
}

impl Default for PolicyValueConfig {
    /// Small enough to train on two CPU cores (the prototype's 128 × 10 is a GPU network: pass
    /// `filters` and `blocks` for it).
    fn default() -> PolicyValueConfig {
        PolicyValueConfig {
            filters: 32,
            blocks: 2,
            se_ratio: 4,
            value_hidden: 64,
            value_bins: DEFAULT_VALUE_BINS,
        }
    }
}

impl PolicyValueConfig {
    /// Whether the shape is buildable.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=512).contains(&self.filters) || self.blocks > 64 || !(1..=512).contains(&self.value_hidden) {
            return Err(format!(
                "filters must be 1..=512, blocks at most 64 and value_hidden 1..=512 (got {self:?})"
            ));
        }
        if self.se_ratio == 0 || self.filters / self.se_ratio == 0 {
            return Err(format!("se_ratio {} leaves no squeeze channels of {}", self.se_ratio, self.filters));
        }
        if self.value_bins == 1 || self.value_bins > MAX_VALUE_BINS {
            return Err(format!(
                "value_bins must be 0 (a scalar value head) or 2..={MAX_VALUE_BINS} (got {})",
                self.value_bins
            ));
        }
        Ok(())
    }

    /// Outputs of the value head: its bins, or one.
    fn value_outputs(&self) -> usize {
        self.value_bins.max(1)
    }

    /// The value in points that the value head's raw outputs for one board stand for.
    fn value_of(&self, outputs: &[f32]) -> f32 {
        if self.value_bins == 0 {
            return unsquash(outputs[0] * VALUE_SCALE);
        }
        // The distribution's mean over the bins (a softmax, shifted by the largest logit).
        let top = outputs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let (mut total, mut mean) = (0.0f32, 0.0f32);
        for (bin, &logit) in outputs.iter().enumerate() {
            let p = (logit - top).exp();
            total += p;
            mean += p * bin as f32;
        }
        unsquash(mean / total)
    }

    /// The value head's target for a return of `value` points, appended to `out`: h(G) /
    /// VALUE_SCALE for a scalar head; for a categorical head, h(G) (clamped to the bins) split
    /// between its two neighbouring bins in proportion to its distance from each.
    fn push_value_target(&self, value: f32, out: &mut Vec<f32>) {
        if self.value_bins == 0 {
            out.push(squash(value) / VALUE_SCALE);
            return;
        }
        let h = squash(value).clamp(0.0, (self.value_bins - 1) as f32);
        let lower = (h.floor() as usize).min(self.value_bins - 2);
        let upper_share = h - lower as f32;
        let start = out.len();
        out.resize(start + self.value_bins, 0.0);
        out[start + lower] = 1.0 - upper_share;
        out[start + lower + 1] = upper_share;
    }
}

/// One residual block: conv → relu → conv → squeeze-and-excitation, plus the input, → relu.
#[derive(Module, Debug)]
pub struct ResidualBlock<B: Backend> {
    conv1: Conv2d<B>,
    conv2: Conv2d<B>,
    squeeze: Linear<B>,
    excite: Linear<B>,
}

impl<B: Backend> ResidualBlock<B> {
    fn new(config: &PolicyValueConfig, device: &B::Device) -> ResidualBlock<B> {
        let conv = || {
            Conv2dConfig::new([config.filters, config.filters], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        let squeezed = config.filters / config.se_ratio;
        ResidualBlock {
            conv1: conv(),
            conv2: conv(),
            squeeze: LinearConfig::new(config.filters, squeezed).init(device),
            excite: LinearConfig::new(squeezed, config.filters).init(device),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [batch, channels, _, _] = x.dims();
        let y = self.conv2.forward(relu(self.conv1.forward(x.clone())));
        let pooled = y.clone().mean_dim(3).mean_dim(2).reshape([batch, channels]);
        let gate =
            sigmoid(self.excite.forward(relu(self.squeeze.forward(pooled)))).reshape([batch, channels, 1, 1]);
        relu(y * gate + x)
    }

    fn dense(&self, shifts: &Tensor<B, 2>) -> DenseBlock<B> {
        DenseBlock {
            conv1: DenseConv::of(&self.conv1, shifts),
            conv2: DenseConv::of(&self.conv2, shifts),
            squeeze: Affine::of(&self.squeeze),
            excite: Affine::of(&self.excite),
        }
    }
}

/// The network as a burn module.
#[derive(Module, Debug)]
pub struct Network<B: Backend> {
    stem: Conv2d<B>,
    blocks: Vec<ResidualBlock<B>>,
    policy: Linear<B>,
    value_hidden: Linear<B>,
    value_out: Linear<B>,
}

impl<B: Backend> Network<B> {
    /// A freshly initialised network.
    pub fn new(config: &PolicyValueConfig, device: &B::Device) -> Network<B> {
        Network {
            stem: Conv2dConfig::new([PLANES, config.filters], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            blocks: (0..config.blocks).map(|_| ResidualBlock::new(config, device)).collect(),
            policy: LinearConfig::new(config.filters * 16, 4).init(device),
            value_hidden: LinearConfig::new(config.filters * 16, config.value_hidden).init(device),
            value_out: LinearConfig::new(config.value_hidden, config.value_outputs()).init(device),
        }
    }

    /// The same network with its convolutions written out as dense maps between whole boards
    /// (see [`DenseNetwork`]). Training builds it inside every step, so that the gradients reach
    /// the convolution weights; inference builds it once per loaded network.
    pub fn dense(&self) -> DenseNetwork<B> {
        let shifts = Tensor::<B, 2>::from_data(
            TensorData::new(shift_matrices(), [KERNEL_CELLS, CELLS * CELLS]),
            &self.stem.weight.val().device(),
        );
        DenseNetwork {
            stem: DenseConv::of(&self.stem, &shifts),
            blocks: self.blocks.iter().map(|block| block.dense(&shifts)).collect(),
            policy: Affine::of(&self.policy),
            value_hidden: Affine::of(&self.value_hidden),
            value_out: Affine::of(&self.value_out),
        }
    }

    /// Policy logits `[batch, 4]` and the value head's outputs for one-hot boards
    /// `[batch, 16 · 16]` (plane-major, as [`encode_boards`] writes them): `[batch, bins]` logits
    /// of a categorical head, `[batch, 1]` squashed scaled values of a scalar one. Batches of
    /// [`DENSE_FROM_BATCH`] boards or more go through [`Network::dense`], smaller ones through
    /// [`Network::forward_convolved`]: the same numbers, whichever is faster at that size.
    pub fn forward(&self, input: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        if input.dims()[0] >= DENSE_FROM_BATCH {
            self.dense().forward(input)
        } else {
            self.forward_convolved(input)
        }
    }

    /// As [`Network::forward`], with burn's convolution modules on `[batch, planes, 4, 4]`.
    pub fn forward_convolved(&self, input: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let [batch, _] = input.dims();
        let mut x = relu(self.stem.forward(input.reshape([batch, PLANES, 4, 4])));
        for block in &self.blocks {
            x = block.forward(x);
        }
        let flat: Tensor<B, 2> = x.reshape([batch as i32, -1]);
        (self.policy.forward(flat.clone()), self.value_out.forward(relu(self.value_hidden.forward(flat))))
    }
}

/// The batch size from which [`Network::forward`] multiplies by dense matrices rather than run
/// burn's convolutions: below it, building the matrices costs more than they save, and a single
/// board is faster through the convolution (`zero2048 bench --suite zero`, BENCHMARKS.md).
pub const DENSE_FROM_BATCH: usize = 32;

/// Cells of the board.
const CELLS: usize = 16;
/// Cells of a 3×3 kernel.
const KERNEL_CELLS: usize = 9;

/// For each of the nine kernel cells (ky, kx), the 16×16 0/1 matrix that takes input cell p to
/// output cell q when p = q + (ky − 1, kx − 1) lies on the board: `[9, p · 16 + q]`. The zero
/// padding of the convolution is the cells that fall off the board.
fn shift_matrices() -> Vec<f32> {
    let mut shifts = vec![0f32; KERNEL_CELLS * CELLS * CELLS];
    for kernel in 0..KERNEL_CELLS {
        let (dy, dx) = ((kernel / 3) as isize - 1, (kernel % 3) as isize - 1);
        for q in 0..CELLS {
            let (y, x) = ((q / 4) as isize + dy, (q % 4) as isize + dx);
            if (0..4).contains(&y) && (0..4).contains(&x) {
                let p = (y * 4 + x) as usize;
                shifts[kernel * CELLS * CELLS + p * CELLS + q] = 1.0;
            }
        }
    }
    shifts
}

/// A padded 3×3 convolution on the 4×4 board as one matrix: the linear map from `C_in · 16` to
/// `C_out · 16` numbers that it is, with its bias per output number.
///
/// Why: burn's CPU convolution builds an im2col tile and multiplies one small matrix per board;
/// with 16 cells a board, that is mostly overhead (the profile in BENCHMARKS.md). As one
/// product of the whole batch by a `[C_in · 16, C_out · 16]` matrix it is a single large GEMM,
/// forward and backward, for 16/9 the multiply-adds. The matrix is computed from the
/// convolution's own weights, so the parameters and the weights files do not change.
#[derive(Clone, Debug)]
struct DenseConv<B: Backend> {
    matrix: Tensor<B, 2>,
    bias: Option<Tensor<B, 2>>,
}

impl<B: Backend> DenseConv<B> {
    fn of(conv: &Conv2d<B>, shifts: &Tensor<B, 2>) -> DenseConv<B> {
        let [outputs, inputs, _, _] = conv.weight.val().dims();
        // [out, in, 9] × [9, p·16 + q] → [out, in, p, q] → [in, p, out, q]: row in·16 + p,
        // column out·16 + q, the layout of a flattened NCHW board on both sides.
        let matrix = conv
            .weight
            .val()
            .reshape([outputs * inputs, KERNEL_CELLS])
            .matmul(shifts.clone())
            .reshape([outputs, inputs, CELLS, CELLS])
            .permute([1, 2, 0, 3])
            .reshape([inputs * CELLS, outputs * CELLS]);
        let bias = conv
            .bias
            .as_ref()
            .map(|bias| bias.val().reshape([outputs, 1]).repeat_dim(1, CELLS).reshape([1, outputs * CELLS]));
        DenseConv { matrix, bias }
    }

    fn apply(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = x.matmul(self.matrix.clone());
        match &self.bias {
            Some(bias) => y + bias.clone(),
            None => y,
        }
    }
}

/// A linear layer's weights, read out of the module. (Not a clone of the module: a clone of a
/// parameter not yet read initialises itself anew, with other random weights.)
#[derive(Clone, Debug)]
struct Affine<B: Backend> {
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
}

impl<B: Backend> Affine<B> {
    fn of(layer: &Linear<B>) -> Affine<B> {
        Affine { weight: layer.weight.val(), bias: layer.bias.as_ref().map(|bias| bias.val()) }
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        burn::tensor::module::linear(x, self.weight.clone(), self.bias.clone())
    }
}

/// A residual block over dense convolutions.
#[derive(Clone, Debug)]
struct DenseBlock<B: Backend> {
    conv1: DenseConv<B>,
    conv2: DenseConv<B>,
    squeeze: Affine<B>,
    excite: Affine<B>,
}

impl<B: Backend> DenseBlock<B> {
    /// conv → relu → conv → squeeze-and-excitation, plus the input, → relu; `x` is
    /// `[batch, channels · 16]`.
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [batch, width] = x.dims();
        let channels = width / CELLS;
        let y = self.conv2.apply(relu(self.conv1.apply(x.clone()))).reshape([batch, channels, CELLS]);
        let pooled = y.clone().mean_dim(2).reshape([batch, channels]);
        let gate =
            sigmoid(self.excite.forward(relu(self.squeeze.forward(pooled)))).reshape([batch, channels, 1]);
        relu((y * gate).reshape([batch, width]) + x)
    }
}

/// The network ready to evaluate batches: the module's weights with every convolution as a
/// [`DenseConv`]. Built by [`Network::dense`].
#[derive(Clone, Debug)]
pub struct DenseNetwork<B: Backend> {
    stem: DenseConv<B>,
    blocks: Vec<DenseBlock<B>>,
    policy: Affine<B>,
    value_hidden: Affine<B>,
    value_out: Affine<B>,
}

impl<B: Backend> DenseNetwork<B> {
    /// As [`Network::forward`].
    pub fn forward(&self, input: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let mut x = relu(self.stem.apply(input));
        for block in &self.blocks {
            x = block.forward(x);
        }
        let logits = self.policy.forward(x.clone());
        let value = self.value_out.forward(relu(self.value_hidden.forward(x)));
        (logits, value)
    }
}

/// The one-hot planes of `boards`, `[n, 16, 4, 4]` flattened, plane-major.
pub fn encode_boards(boards: &[Board]) -> Vec<f32> {
    let mut out = vec![0f32; boards.len() * PLANES * 16];
    for (i, board) in boards.iter().enumerate() {
        let base = i * PLANES * 16;
        for (cell, exponent) in board.exponents().into_iter().enumerate() {
            out[base + exponent as usize * 16 + cell] = 1.0;
        }
    }
    out
}

/// 0 for each legal move and a large negative number for each illegal one, `[n, 4]` flattened:
/// added to the logits, it masks illegal moves out of every softmax.
pub fn legal_bias(boards: &[Board]) -> Vec<f32> {
    boards
        .iter()
        .flat_map(|b| Direction::ALL.map(|d| if b.legal_move(d).is_some() { 0.0 } else { -1e9 }))
        .collect()
}

fn input<B: Backend>(boards: &[Board], device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(encode_boards(boards), [boards.len(), PLANES * CELLS]), device)
}

/// What a policy-value weights file says about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyValueInfo {
    /// The network's shape.
    pub config: PolicyValueConfig,
    /// The revision it was published as.
    pub revision: u64,
    /// Other metadata (training counters and the like).
    pub extra: BTreeMap<String, String>,
}

const OWN_KEYS: [&str; 8] =
    ["kind", "format_version", "filters", "blocks", "se_ratio", "value_hidden", "value_bins", "revision"];

/// A trained network ready to evaluate boards on the CPU.
#[derive(Clone, Debug)]
pub struct PolicyValueNet {
    config: PolicyValueConfig,
    network: Network<CpuBackend>,
    /// `network` with its convolutions as matrices, built once: what every prediction runs.
    dense: DenseNetwork<CpuBackend>,
    device: burn::tensor::Device<CpuBackend>,
}

impl PolicyValueNet {
    /// A network with fresh random weights drawn from `seed`.
    pub fn new(config: PolicyValueConfig, seed: u64) -> Result<PolicyValueNet, String> {
        config.validate()?;
        let device = Default::default();
        CpuBackend::seed(&device, seed);
        Ok(PolicyValueNet::of(config, Network::new(&config, &device), device))
    }

    fn of(
        config: PolicyValueConfig,
        network: Network<CpuBackend>,
        device: burn::tensor::Device<CpuBackend>,
    ) -> PolicyValueNet {
        let dense = network.dense();
        PolicyValueNet { config, network, dense, device }
    }

    /// Its shape.
    pub fn config(&self) -> &PolicyValueConfig {
        &self.config
    }

    /// Parameters in the network.
    pub fn parameters(&self) -> usize {
        self.network.num_params()
    }

    /// The raw outputs for `boards`: masked policy probabilities `[n][4]` and values in points.
    pub fn predict_boards(&self, boards: &[Board]) -> Vec<Prediction> {
        self.predict_through(boards, boards.len() >= DENSE_FROM_BATCH)
    }

    /// As [`PolicyValueNet::predict_boards`], always through burn's convolutions: the reference
    /// the dense matrices are measured against.
    pub fn predict_convolved(&self, boards: &[Board]) -> Vec<Prediction> {
        self.predict_through(boards, false)
    }

    fn predict_through(&self, boards: &[Board], dense: bool) -> Vec<Prediction> {
        if boards.is_empty() {
            return Vec::new();
        }
        kernels_on_this_thread();
        let n = boards.len();
        let input = input::<CpuBackend>(boards, &self.device);
        let (logits, values) =
            if dense { self.dense.forward(input) } else { self.network.forward_convolved(input) };
        let bias =
            Tensor::<CpuBackend, 2>::from_data(TensorData::new(legal_bias(boards), [n, 4]), &self.device);
        let policy: Vec<f32> = softmax(logits + bias, 1).into_data().into_vec().expect("f32 tensor");
        let values: Vec<f32> = values.into_data().into_vec().expect("f32 tensor");
        boards
            .iter()
            .zip(values.chunks_exact(self.config.value_outputs()))
            .enumerate()
            .map(|(i, (board, outputs))| {
                let mut p = [policy[4 * i], policy[4 * i + 1], policy[4 * i + 2], policy[4 * i + 3]];
                if board.is_game_over() {
                    p = [0.0; 4];
                }
                Prediction { policy: p, value: self.config.value_of(outputs) }
            })
            .collect()
    }

    /// The weights as safetensors bytes with this crate's metadata.
    pub fn to_bytes(&self, revision: u64, extra: &BTreeMap<String, String>) -> Result<Vec<u8>, String> {
        to_bytes(&self.network, &self.config, revision, extra)
    }

    /// Reads weights from safetensors bytes written by [`PolicyValueNet::to_bytes`], checking the
    /// kind, the format version, the shape named in the metadata against every tensor, and that
    /// no tensor is missing or left over. `path` only names the source in errors.
    pub fn from_bytes(
        bytes: Vec<u8>,
        path: &Path,
    ) -> Result<(PolicyValueNet, PolicyValueInfo), WeightsFileError> {
        let info = read_info_bytes(&bytes, path)?;
        check_finite(&bytes, path)?;
        let device = Default::default();
        let mut network = Network::<CpuBackend>::new(&info.config, &device);
        load_into(&mut network, bytes, path)?;
        Ok((PolicyValueNet::of(info.config, network, device), info))
    }

    /// Writes the weights to `path` (the caller makes the write atomic).
    pub fn save(
        &self,
        path: &Path,
        revision: u64,
        extra: &BTreeMap<String, String>,
    ) -> Result<(), WeightsFileError> {
        let bytes = self.to_bytes(revision, extra).map_err(|message| WeightsFileError::Invalid {
            path: path.to_path_buf(),
            check: "save",
            message,
        })?;
        std::fs::write(path, bytes)
            .map_err(|source| WeightsFileError::Io { path: path.to_path_buf(), source })
    }

    /// Loads a weights file (see [`PolicyValueNet::from_bytes`]).
    pub fn load(path: &Path) -> Result<(PolicyValueNet, PolicyValueInfo), WeightsFileError> {
        let bytes = std::fs::read(path)
            .map_err(|source| WeightsFileError::Io { path: path.to_path_buf(), source })?;
        PolicyValueNet::from_bytes(bytes, path)
    }
}

impl PolicyValue for PolicyValueNet {
    fn predict(&self, boards: &[Board]) -> Vec<Prediction> {
        self.predict_boards(boards)
    }
}

fn to_bytes<B: Backend>(
    network: &Network<B>,
    config: &PolicyValueConfig,
    revision: u64,
    extra: &BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    let mut store = SafetensorsStore::from_bytes(None)
        .metadata("kind", KIND)
        .metadata("format_version", FORMAT_VERSION)
        .metadata("filters", config.filters.to_string())
        .metadata("blocks", config.blocks.to_string())
        .metadata("se_ratio", config.se_ratio.to_string())
        .metadata("value_hidden", config.value_hidden.to_string())
        .metadata("value_bins", config.value_bins.to_string())
        .metadata("revision", revision.to_string());
    for (key, value) in extra {
        if !OWN_KEYS.contains(&key.as_str()) {
            store = store.metadata(key.clone(), value.clone());
        }
    }
    network.save_into(&mut store).map_err(|e| e.to_string())?;
    store.get_bytes().map_err(|e| e.to_string())
}

fn load_into<B: Backend>(
    network: &mut Network<B>,
    bytes: Vec<u8>,
    path: &Path,
) -> Result<(), WeightsFileError> {
    let invalid =
        |message: String| WeightsFileError::Invalid { path: path.to_path_buf(), check: "tensors", message };
    let mut store = SafetensorsStore::from_bytes(Some(bytes)).validate(true).allow_partial(false);
    let result = network.load_from(&mut store).map_err(|e| invalid(e.to_string()))?;
    if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
        return Err(invalid(format!(
            "errors {:?}, missing {:?}, unexpected {:?}",
            result.errors.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>(),
            result.missing.iter().map(|m| &m.0).collect::<Vec<_>>(),
            result.unused
        )));
    }
    Ok(())
}

/// Refuses a file holding a weight that is not a finite number (a diverged network, or damage).
fn check_finite(bytes: &[u8], path: &Path) -> Result<(), WeightsFileError> {
    let invalid =
        |message: String| WeightsFileError::Invalid { path: path.to_path_buf(), check: "values", message };
    let tensors = safetensors::SafeTensors::deserialize(bytes).map_err(|e| invalid(e.to_string()))?;
    for (name, view) in tensors.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            continue;
        }
        if let Some(bad) = view
            .data()
            .chunks_exact(4)
            .map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .find(|w| !w.is_finite())
        {
            return Err(invalid(format!(
                "tensor `{name}` holds {bad}: the network diverged or the file is damaged"
            )));
        }
    }
    Ok(())
}

/// Reads the metadata of policy-value weights bytes and checks the tensors' shapes against it.
pub fn read_info_bytes(bytes: &[u8], path: &Path) -> Result<PolicyValueInfo, WeightsFileError> {
    let invalid =
        |check, message: String| WeightsFileError::Invalid { path: path.to_path_buf(), check, message };
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| invalid("header", format!("not a safetensors file: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let get = |key: &'static str| {
        metadata.get(key).cloned().ok_or_else(|| invalid("metadata", format!("`{key}` is missing")))
    };
    check_identity(path, |key| metadata.get(key).cloned(), KIND, FORMAT_VERSION)?;
    let number = |key: &'static str| -> Result<usize, WeightsFileError> {
        get(key)?.parse().map_err(|_| invalid("metadata", format!("`{key}` is not a number")))
    };
    let config = PolicyValueConfig {
        filters: number("filters")?,
        blocks: number("blocks")?,
        se_ratio: number("se_ratio")?,
        value_hidden: number("value_hidden")?,
        // Files from before the categorical head have a scalar one and do not say so.
        value_bins: if metadata.contains_key("value_bins") { number("value_bins")? } else { 0 },
    };
    config.validate().map_err(|e| invalid("shape", e))?;
    let revision: u64 =
        get("revision")?.parse().map_err(|_| invalid("metadata", "`revision` is not a number".into()))?;
    // Every tensor must have the shape the metadata implies.
    let expected = expected_shapes(&config);
    let tensors = header.tensors();
    for (name, shape) in &expected {
        match tensors.get(name) {
            Some(info) if &info.shape == shape => {}
            Some(info) => {
                return Err(invalid(
                    "shape",
                    format!("`{name}` is {:?}, the metadata implies {shape:?}", info.shape),
                ));
            }
            None => return Err(invalid("tensors", format!("`{name}` is missing"))),
        }
    }
    if let Some(name) = tensors.keys().find(|name| !expected.contains_key(*name)) {
        return Err(invalid("tensors", format!("unexpected tensor `{name}`")));
    }
    let extra = metadata
        .into_iter()
        .filter(|(k, _)| !OWN_KEYS.contains(&k.as_str()) && !k.starts_with("__"))
        .collect();
    Ok(PolicyValueInfo { config, revision, extra })
}

/// The tensor names and shapes a network of `config` has (burn's layout: linear weights
/// `[in, out]`, convolutions `[out, in, k, k]`).
fn expected_shapes(config: &PolicyValueConfig) -> BTreeMap<String, Vec<usize>> {
    let f = config.filters;
    let s = f / config.se_ratio;
    let mut shapes = BTreeMap::new();
    let mut add = |name: String, shape: Vec<usize>| {
        shapes.insert(name, shape);
    };
    add("stem.weight".into(), vec![f, PLANES, 3, 3]);
    add("stem.bias".into(), vec![f]);
    for b in 0..config.blocks {
        for conv in ["conv1", "conv2"] {
            add(format!("blocks.{b}.{conv}.weight"), vec![f, f, 3, 3]);
            add(format!("blocks.{b}.{conv}.bias"), vec![f]);
        }
        add(format!("blocks.{b}.squeeze.weight"), vec![f, s]);
        add(format!("blocks.{b}.squeeze.bias"), vec![s]);
        add(format!("blocks.{b}.excite.weight"), vec![s, f]);
        add(format!("blocks.{b}.excite.bias"), vec![f]);
    }
    add("policy.weight".into(), vec![f * 16, 4]);
    add("policy.bias".into(), vec![4]);
    add("value_hidden.weight".into(), vec![f * 16, config.value_hidden]);
    add("value_hidden.bias".into(), vec![config.value_hidden]);
    add("value_out.weight".into(), vec![config.value_hidden, config.value_outputs()]);
    add("value_out.bias".into(), vec![config.value_outputs()]);
    shapes
}

/// One training example: a board, the search's visit distribution on it, and its return.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// The board moved on.
    pub board: Board,
    /// Target move probabilities (the root's visit distribution).
    pub policy: [f32; 4],
    /// Target value, in points (the bootstrapped discounted return).
    pub value: f32,
}

/// Losses over a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Losses {
    /// Cross-entropy of the policy against the visit distribution (over legal moves).
    pub policy: f32,
    /// The value's loss: cross-entropy against the two-hot target (categorical head), or mean
    /// squared error in squashed scaled units (scalar head).
    pub value: f32,
}

impl Losses {
    /// The sum the optimiser minimises (policy + value).
    pub fn total(&self) -> f32 {
        self.policy + self.value
    }
}

/// The optimiser's settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// Peak learning rate (AdamW).
    pub learning_rate: f64,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Linear warm-up over this many steps...
    pub warmup_steps: u64,
    /// ...then cosine decay to `final_fraction` of the peak over this many steps (then flat).
    pub decay_steps: u64,
    /// See `decay_steps`.
    pub final_fraction: f64,
    /// Gradients are clipped to this norm (0 = no clipping).
    pub clip_norm: f32,
}

impl Default for OptimizerConfig {
    fn default() -> OptimizerConfig {
        OptimizerConfig {
            learning_rate: 2e-3,
            weight_decay: 1e-4,
            warmup_steps: 50,
            decay_steps: 20_000,
            final_fraction: 0.1,
            clip_norm: 5.0,
        }
    }
}

impl OptimizerConfig {
    /// Whether the values are usable (a negative or non-finite rate trains garbage).
    pub fn validate(&self) -> Result<(), String> {
        if !self.learning_rate.is_finite() || self.learning_rate <= 0.0 || self.learning_rate > 1.0 {
            return Err(format!("learning_rate {} is not within (0, 1]", self.learning_rate));
        }
        if !self.weight_decay.is_finite() || !(0.0..=1.0).contains(&self.weight_decay) {
            return Err(format!("weight_decay {} is not within 0..=1", self.weight_decay));
        }
        if !self.final_fraction.is_finite() || !(0.0..=1.0).contains(&self.final_fraction) {
            return Err(format!("final_fraction {} is not within 0..=1", self.final_fraction));
        }
        if !self.clip_norm.is_finite() || self.clip_norm < 0.0 {
            return Err(format!("clip_norm {} is not a number ≥ 0", self.clip_norm));
        }
        Ok(())
    }

    /// The learning rate at `step` (0-based).
    pub fn learning_rate_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let t = ((step - self.warmup_steps) as f64 / self.decay_steps.max(1) as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
        self.learning_rate * (self.final_fraction + (1.0 - self.final_fraction) * cosine)
    }
}

/// Trains a network with AdamW on batches of [`Sample`]s, on backend `B`.
pub struct Trainer<B: AutodiffBackend> {
    config: PolicyValueConfig,
    optimizer_config: OptimizerConfig,
    network: Option<Network<B>>,
    optimizer: OptimizerAdaptor<AdamW, Network<B>, B>,
    device: B::Device,
    steps: u64,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// A trainer starting from `start`'s weights.
    pub fn new(
        start: &PolicyValueNet,
        optimizer_config: OptimizerConfig,
        device: B::Device,
    ) -> Result<Trainer<B>, String> {
        let mut network = Network::<B>::new(&start.config, &device);
        load_into(&mut network, start.to_bytes(0, &BTreeMap::new())?, Path::new("<memory>"))
            .map_err(|e| e.to_string())?;
        Ok(Trainer {
            config: start.config,
            optimizer_config,
            network: Some(network),
            optimizer: Self::fresh_optimizer(&optimizer_config),
            device,
            steps: 0,
        })
    }

    fn fresh_optimizer(config: &OptimizerConfig) -> OptimizerAdaptor<AdamW, Network<B>, B> {
        let mut adamw = AdamWConfig::new().with_weight_decay(config.weight_decay);
        if config.clip_norm > 0.0 {
            adamw = adamw.with_grad_clipping(Some(GradientClippingConfig::Norm(config.clip_norm)));
        }
        adamw.init()
    }

    /// The optimiser's whole state as bytes: the step count (u64 LE), then AdamW's moments per
    /// parameter in burn's binary record, keyed by the parameter's position in the network rather
    /// than its random id, so they fit the same network loaded again from its weights file.
    pub fn optimizer_state(&self) -> Result<Vec<u8>, String> {
        let network = self.network.as_ref().expect("the network is always put back");
        let position: std::collections::HashMap<ParamId, u64> =
            list_param_ids(network).into_iter().enumerate().map(|(i, id)| (id, i as u64)).collect();
        let record: OptimizerRecord<B> = self
            .optimizer
            .to_record()
            .into_iter()
            .filter_map(|(id, moments)| position.get(&id).map(|&i| (ParamId::from(i), moments)))
            .collect();
        let mut bytes = self.steps.to_le_bytes().to_vec();
        let moments = BinBytesRecorder::<FullPrecisionSettings>::default()
            .record(record, ())
            .map_err(|e| format!("recording the optimiser state: {e}"))?;
        bytes.extend(moments);
        Ok(bytes)
    }

    /// Restores what [`Trainer::optimizer_state`] saved for this same network. The bytes must be
    /// intact (the caller checks their digest: burn's decoder does not survive damaged input).
    pub fn restore_optimizer_state(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (steps, moments) = bytes
            .split_first_chunk::<8>()
            .ok_or_else(|| format!("{} bytes are too few for an optimiser state", bytes.len()))?;
        let record: OptimizerRecord<B> = BinBytesRecorder::<FullPrecisionSettings>::default()
            .load(moments.to_vec(), &self.device)
            .map_err(|e| format!("reading the optimiser state: {e}"))?;
        let network = self.network.as_ref().expect("the network is always put back");
        let ids = list_param_ids(network);
        let rekeyed = record
            .into_iter()
            .map(|(position, moments)| {
                ids.get(position.val() as usize).map(|id| (*id, moments)).ok_or_else(|| {
                    format!(
                        "the optimiser state names parameter {} of a network with {} parameters",
                        position.val(),
                        ids.len()
                    )
                })
            })
            .collect::<Result<OptimizerRecord<B>, String>>()?;
        self.optimizer = Self::fresh_optimizer(&self.optimizer_config).load_record(rekeyed);
        self.steps = u64::from_le_bytes(*steps);
        Ok(())
    }

    /// Optimiser steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    fn losses<BB: Backend>(
        network: &Network<BB>,
        config: &PolicyValueConfig,
        samples: &[Sample],
        device: &BB::Device,
    ) -> (Tensor<BB, 1>, Tensor<BB, 1>) {
        let n = samples.len();
        let boards: Vec<Board> = samples.iter().map(|s| s.board).collect();
        let (logits, values) = network.forward(input::<BB>(&boards, device));
        let bias = Tensor::<BB, 2>::from_data(TensorData::new(legal_bias(&boards), [n, 4]), device);
        let target_policy: Vec<f32> = samples.iter().flat_map(|s| s.policy).collect();
        let target_policy = Tensor::<BB, 2>::from_data(TensorData::new(target_policy, [n, 4]), device);
        let outputs = config.value_outputs();
        let mut target_value = Vec::with_capacity(n * outputs);
        for sample in samples {
            config.push_value_target(sample.value, &mut target_value);
        }
        let target_value = Tensor::<BB, 2>::from_data(TensorData::new(target_value, [n, outputs]), device);
        // Illegal moves carry no target; the bias keeps them out of the softmax, and the mask
        // keeps their (huge negative) log-probabilities out of the product.
        let legal = bias.clone().greater_elem(-1.0).float();
        let log_policy = log_softmax(logits + bias, 1) * legal;
        let policy_loss = (log_policy * target_policy).sum_dim(1).mean().neg();
        let value_loss = if config.value_bins == 0 {
            (values - target_value).square().mean()
        } else {
            (log_softmax(values, 1) * target_value).sum_dim(1).mean().neg()
        };
        (policy_loss, value_loss)
    }

    /// One optimiser step on `batch`; returns its losses before the step.
    pub fn step(&mut self, batch: &[Sample]) -> Losses {
        let network = self.network.take().expect("the network is always put back");
        let (policy, value) = Self::losses(&network, &self.config, batch, &self.device);
        let losses = Losses {
            policy: policy.clone().into_scalar().elem::<f32>(),
            value: value.clone().into_scalar().elem::<f32>(),
        };
        let grads = GradientsParams::from_grads((policy + value).backward(), &network);
        let lr = self.optimizer_config.learning_rate_at(self.steps);
        self.network = Some(self.optimizer.step(lr, network, grads));
        self.steps += 1;
        losses
    }

    /// Losses on `samples` without learning from them (validation).
    pub fn evaluate(&self, samples: &[Sample]) -> Losses {
        if samples.is_empty() {
            return Losses::default();
        }
        let network = self.network.as_ref().expect("the network is always put back").valid();
        let device = network.devices().into_iter().next().unwrap_or_default();
        let (policy, value) = Self::losses(&network, &self.config, samples, &device);
        Losses { policy: policy.into_scalar().elem::<f32>(), value: value.into_scalar().elem::<f32>() }
    }

    /// The current weights as a CPU network (for self-play, evaluation and publishing).
    pub fn snapshot(&self) -> Result<PolicyValueNet, String> {
        let network = self.network.as_ref().expect("the network is always put back").valid();
        let bytes = to_bytes(&network, &self.config, 0, &BTreeMap::new())?;
        PolicyValueNet::from_bytes(bytes, Path::new("<memory>"))
            .map(|(net, _)| net)
            .map_err(|e| e.to_string())
    }
}

/// AdamW's per-parameter moments, as burn records them.
type OptimizerRecord<B> = <OptimizerAdaptor<AdamW, Network<B>, B> as Optimizer<Network<B>, B>>::Record;

/// What a training loop needs of a trainer, whatever backend it runs on.
pub trait NetworkTrainer: Send {
    /// One optimiser step on `batch`; returns its losses before the step.
    fn step(&mut self, batch: &[Sample]) -> Losses;
    /// Losses on `samples` without learning from them.
    fn evaluate(&self, samples: &[Sample]) -> Losses;
    /// The current weights as a CPU network.
    fn snapshot(&self) -> Result<PolicyValueNet, String>;
    /// Optimiser steps taken.
    fn steps(&self) -> u64;
    /// The optimiser's state (step count and moments) as bytes.
    fn optimizer_state(&self) -> Result<Vec<u8>, String>;
    /// Restores a state [`NetworkTrainer::optimizer_state`] saved for this network.
    fn restore_optimizer_state(&mut self, bytes: &[u8]) -> Result<(), String>;
}

impl<B: AutodiffBackend> NetworkTrainer for Trainer<B>
where
    Trainer<B>: Send,
{
    fn step(&mut self, batch: &[Sample]) -> Losses {
        Trainer::step(self, batch)
    }
    fn evaluate(&self, samples: &[Sample]) -> Losses {
        Trainer::evaluate(self, samples)
    }
    fn snapshot(&self) -> Result<PolicyValueNet, String> {
        Trainer::snapshot(self)
    }
    fn steps(&self) -> u64 {
        Trainer::steps(self)
    }
    fn optimizer_state(&self) -> Result<Vec<u8>, String> {
        Trainer::optimizer_state(self)
    }
    fn restore_optimizer_state(&mut self, bytes: &[u8]) -> Result<(), String> {
        Trainer::restore_optimizer_state(self, bytes)
    }
}

/// Where training runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainDevice {
    /// burn's flex backend on the CPU cores.
    #[default]
    Cpu,
    /// The first CUDA GPU (needs a build with the `cuda` feature, and a CUDA driver at run time).
    Cuda,
}

/// A trainer on `device`, starting from `start`'s weights.
pub fn trainer(
    start: &PolicyValueNet,
    optimizer: OptimizerConfig,
    device: TrainDevice,
) -> Result<Box<dyn NetworkTrainer>, String> {
    match device {
        TrainDevice::Cpu => {
            Ok(Box::new(Trainer::<CpuTrainBackend>::new(start, optimizer, Default::default())?))
        }
        #[cfg(feature = "cuda")]
        TrainDevice::Cuda => {
            Ok(Box::new(Trainer::<CudaTrainBackend>::new(start, optimizer, Default::default())?))
        }
        #[cfg(not(feature = "cuda"))]
        TrainDevice::Cuda => {
            Err("this build has no CUDA backend: build with `--features cuda` (see README)".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn categorical(bins: usize) -> PolicyValueConfig {
        PolicyValueConfig { value_bins: bins, ..PolicyValueConfig::default() }
    }

    fn largest_difference<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
        let (a, b): (Vec<f32>, Vec<f32>) =
            (a.into_data().into_vec().unwrap(), b.into_data().into_vec().unwrap());
        assert_eq!(a.len(), b.len());
        a.iter().zip(&b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0, f32::max)
    }

    /// Not one-hot: any input, so that every weight of every kernel cell is exercised.
    fn random_input<B: Backend>(batch: usize, device: &B::Device) -> Tensor<B, 2> {
        Tensor::random([batch, PLANES * CELLS], burn::tensor::Distribution::Uniform(-1.0, 1.0), device)
    }

    #[test]
    fn the_dense_convolutions_compute_what_burns_convolutions_compute() {
        for (filters, blocks, bins) in [(32, 2, DEFAULT_VALUE_BINS), (8, 3, 0), (5, 1, 7), (3, 0, 0)] {
            let config =
                PolicyValueConfig { filters, blocks, se_ratio: 1, value_bins: bins, ..Default::default() };
            let net = PolicyValueNet::new(config, filters as u64).unwrap();
            let input = random_input::<CpuBackend>(7, &net.device);
            let (logits, values) = net.dense.forward(input.clone());
            let (expected_logits, expected_values) = net.network.forward_convolved(input);
            assert!(largest_difference(logits, expected_logits) < 1e-5, "{config:?}");
            assert!(largest_difference(values, expected_values) < 1e-5, "{config:?}");
        }
    }

    #[test]
    fn a_thread_that_predicts_runs_its_kernels_itself_unless_its_caller_chose_a_pool() {
        let net = PolicyValueNet::new(PolicyValueConfig { filters: 4, blocks: 1, ..Default::default() }, 1)
            .unwrap();
        let board: Board = "2 4 . . | . . . . | . . . . | . . . 2".parse().unwrap();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                assert_eq!(rayon::current_thread_index(), None);
                net.predict_boards(&[board]);
                assert_eq!((rayon::current_thread_index(), rayon::current_num_threads()), (Some(0), 1));
            });
        });
        let callers_pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        callers_pool.install(|| {
            net.predict_boards(&[board; 40]);
            assert_eq!(rayon::current_num_threads(), 2);
        });
    }

    #[test]
    fn the_dense_convolutions_pass_the_same_gradients_to_the_convolution_weights() {
        let config =
            PolicyValueConfig { filters: 6, blocks: 2, se_ratio: 2, value_bins: 11, ..Default::default() };
        let device = Default::default();
        CpuBackend::seed(&device, 5);
        let network = Network::<CpuTrainBackend>::new(&config, &device);
        let input = random_input::<CpuTrainBackend>(9, &device);
        let loss = |(logits, values): (Tensor<CpuTrainBackend, 2>, Tensor<CpuTrainBackend, 2>)| {
            (logits.sin().sum() + values.cos().sum()).reshape([1])
        };
        let dense = loss(network.dense().forward(input.clone())).backward();
        let reference = loss(network.forward_convolved(input)).backward();
        let mut convolutions = vec![&network.stem];
        for block in &network.blocks {
            convolutions.extend([&block.conv1, &block.conv2]);
        }
        for conv in convolutions {
            let (a, b) = (conv.weight.grad(&dense).unwrap(), conv.weight.grad(&reference).unwrap());
            assert!(largest_difference(a, b) < 1e-4);
            let bias = conv.bias.as_ref().unwrap();
            assert!(largest_difference(bias.grad(&dense).unwrap(), bias.grad(&reference).unwrap()) < 1e-4);
        }
    }

    #[test]
    fn a_two_hot_target_has_the_return_as_its_mean() {
        let config = categorical(DEFAULT_VALUE_BINS);
        for value in [0.0f32, 3.0, 17.5, 420.0, 5_000.0, 61_234.0, 150_000.0] {
            let mut target = Vec::new();
            config.push_value_target(value, &mut target);
            assert_eq!(target.len(), DEFAULT_VALUE_BINS);
            assert!((target.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(target.iter().filter(|&&p| p > 0.0).count() <= 2, "two neighbouring bins at most");
            // The head's value for logits ln(target) is the target's mean: the return itself.
            let logits: Vec<f32> = target.iter().map(|p| p.ln()).collect();
            let back = config.value_of(&logits);
            assert!((back - value).abs() <= 1e-3 * value.max(1.0), "{value} came back as {back}");
        }
    }

    #[test]
    fn returns_beyond_the_bins_are_clamped_to_the_last_one() {
        let config = categorical(11);
        let mut target = Vec::new();
        config.push_value_target(1e9, &mut target);
        assert_eq!(target[10], 1.0);
        assert_eq!(target.iter().sum::<f32>(), 1.0);
        target.clear();
        config.push_value_target(-5.0, &mut target);
        assert_eq!(target[0], 1.0);
    }

    #[test]
    fn a_scalar_head_regresses_the_scaled_squashed_return() {
        let config = categorical(0);
        let mut target = Vec::new();
        config.push_value_target(1_000.0, &mut target);
        assert_eq!(target, vec![squash(1_000.0) / VALUE_SCALE]);
        assert!((config.value_of(&target) - 1_000.0).abs() < 0.1);
    }

    #[test]
    fn one_bin_or_too_many_is_refused() {
        assert!(categorical(1).validate().unwrap_err().contains("value_bins"));
        assert!(categorical(MAX_VALUE_BINS + 1).validate().unwrap_err().contains("value_bins"));
        categorical(0).validate().unwrap();
        categorical(2).validate().unwrap();
    }
}
