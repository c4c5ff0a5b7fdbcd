//! The n-tuple network: an afterstate value function that sums, over a list of tuples (cell lists)
//! and the 8 symmetries of the square, one weight per tuple looked up by the tiles under its cells.
//! Weights are shared across symmetries, so each game position teaches 8 positions at once.
//! Optionally several stages: separate weights once the board holds a tile of at least
//! `stage_tile`, since the endgame needs different values than the opening. A network learning
//! from zero opens its later stages one at a time ([`NTupleNetwork::open_next_stage`]): until a
//! game reaches a stage, its boards are valued by the last open one, and the stage opens as a
//! copy of it, so play never meets weights that have learned nothing.
//!
//! One network is shared by every thread of a run: [`NTupleNetwork::value`] and
//! [`NTupleNetwork::add`] take `&self` and work on atomic weights without locks (see
//! [`crate::table`]), so N threads play and learn on the same tables, and memory stays the size of
//! one network.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering};

use serde::{Deserialize, Serialize};
use zero2048_game::Board;
use zero2048_search::Evaluator;

use crate::table::{Pages, Table};

/// The longest tuple supported (16^8 weights, 16 GiB: longer is never practical).
pub const MAX_TUPLE_LEN: usize = 8;

/// The shape of a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NTupleConfig {
    /// Cell lists, cells numbered row-major 0..16.
    pub tuples: Vec<Vec<u8>>,
    /// Number of stages (1 = a single weight set). A network learning from zero opens each
    /// later stage when a game first reaches it, as a copy of the stage below.
    pub stages: u8,
    /// With several stages, the board moves to stage `k` once its largest exponent reaches
    /// `stage_tile + k - 1` (e.g. 14 = 16384 for two stages).
    pub stage_tile: u8,
}

impl NTupleConfig {
    /// The standard four 6-cell shapes (16^6 weights each, 256 MiB of f32), one stage.
    pub fn standard_4x6() -> NTupleConfig {
        NTupleConfig {
            tuples: vec![
                vec![0, 1, 2, 3, 4, 5],
                vec![4, 5, 6, 7, 8, 9],
                vec![0, 1, 2, 4, 5, 6],
                vec![4, 5, 6, 8, 9, 10],
            ],
            stages: 1,
            stage_tile: 14,
        }
    }

    /// Jaśkowski's five 6-cell shapes (the 4×6 set plus cells 8–13; 320 MiB of f32).
    pub fn jaskowski_5x6() -> NTupleConfig {
        let mut config = NTupleConfig::standard_4x6();
        config.tuples.insert(2, vec![8, 9, 10, 11, 12, 13]);
        config
    }

    /// Matsuzaki's eight 6-cell shapes (512 MiB of f32): the strongest published 1-ply learner
    /// of its size, and the default of a new run; about half as many moves per second as 4×6.
    pub fn matsuzaki_8x6() -> NTupleConfig {
        NTupleConfig {
            tuples: vec![
                vec![0, 1, 2, 4, 5, 6],
                vec![4, 5, 6, 7, 8, 9],
                vec![0, 1, 2, 3, 4, 5],
                vec![2, 3, 4, 5, 6, 9],
                vec![0, 1, 2, 5, 9, 10],
                vec![3, 4, 5, 6, 7, 8],
                vec![1, 3, 4, 5, 6, 7],
                vec![0, 1, 4, 8, 9, 10],
            ],
            stages: 1,
            stage_tile: 14,
        }
    }

    /// A small network for tests and quick runs: four 4-cell shapes (16^4 weights each).
    pub fn small_4x4() -> NTupleConfig {
        NTupleConfig {
            tuples: vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![0, 1, 4, 5], vec![1, 2, 5, 6]],
            stages: 1,
            stage_tile: 14,
        }
    }

    /// The named shapes, as `--network` and `train.network_shape` spell them.
    pub const NAMES: [&'static str; 4] = ["4x6", "5x6", "8x6", "4x4"];

    /// The shape called `name` (one of [`NTupleConfig::NAMES`]).
    pub fn named(name: &str) -> Option<NTupleConfig> {
        match name {
            "4x6" => Some(NTupleConfig::standard_4x6()),
            "5x6" => Some(NTupleConfig::jaskowski_5x6()),
            "8x6" => Some(NTupleConfig::matsuzaki_8x6()),
            "4x4" => Some(NTupleConfig::small_4x4()),
            _ => None,
        }
    }

    /// Bytes of f32 weights.
    pub fn bytes(&self) -> u64 {
        self.weight_count() as u64 * 4
    }

    /// Checks the shape: cells in 0..16, no repeats within a tuple, lengths 1..=8, 1..=4 stages.
    pub fn validate(&self) -> Result<(), String> {
        if self.tuples.is_empty() {
            return Err("a network needs at least one tuple".into());
        }
        for (i, tuple) in self.tuples.iter().enumerate() {
            if tuple.is_empty() || tuple.len() > MAX_TUPLE_LEN {
                return Err(format!(
                    "tuple {i} has {} cells; 1 to {MAX_TUPLE_LEN} are supported",
                    tuple.len()
                ));
            }
            if let Some(cell) = tuple.iter().find(|&&c| c > 15) {
                return Err(format!("tuple {i} names cell {cell}; cells are 0..=15"));
            }
            let mut seen = [false; 16];
            for &cell in tuple {
                if std::mem::replace(&mut seen[cell as usize], true) {
                    return Err(format!("tuple {i} names cell {cell} twice"));
                }
            }
        }
        if !(1..=4).contains(&self.stages) {
            return Err(format!("{} stages; 1 to 4 are supported", self.stages));
        }
        if self.stages > 1 && !(1..=15).contains(&self.stage_tile) {
            return Err(format!("stage_tile {} is not an exponent in 1..=15", self.stage_tile));
        }
        Ok(())
    }

    /// Weights per tuple table.
    pub fn table_len(&self, tuple: usize) -> usize {
        1 << (4 * self.tuples[tuple].len())
    }

    /// Total number of weights.
    pub fn weight_count(&self) -> usize {
        (0..self.tuples.len()).map(|t| self.table_len(t)).sum::<usize>() * self.stages as usize
    }
}

/// Why a network cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The shape is invalid.
    #[error("invalid n-tuple network: {0}")]
    Shape(String),
    /// This CPU cannot run what was asked.
    #[error("not supported on this CPU: {0}")]
    Unsupported(String),
    /// The tables could not be allocated.
    #[error("allocating {bytes} bytes of weights: {source}")]
    Allocation {
        /// Bytes asked for.
        bytes: usize,
        /// The error.
        source: std::io::Error,
    },
}

/// A run of consecutive cells of a tuple: cells starting at board cell `first`, landing at
/// tuple position `position`. Extracting a run is one shift and one mask.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    board_shift: u32,
    mask: u64,
    tuple_shift: u32,
}

const NO_RUN: Run = Run { board_shift: 0, mask: 0, tuple_shift: 0 };

/// The runs of a tuple, computed at compile time for the named shapes (unused runs have a zero
/// mask, which the compiler folds away).
const fn runs_of<const N: usize>(cells: [u8; N]) -> [Run; N] {
    let mut runs = [NO_RUN; N];
    let (mut k, mut count) = (0, 0);
    while k < N {
        let mut width = 1;
        while k + width < N && cells[k + width] == cells[k] + width as u8 {
            width += 1;
        }
        runs[count] = Run {
            board_shift: 4 * cells[k] as u32,
            mask: if width == 16 { u64::MAX } else { (1u64 << (4 * width)) - 1 },
            tuple_shift: 4 * k as u32,
        };
        count += 1;
        k += width;
    }
    runs
}

/// A tuple's index from constant runs: straight-line shifts and masks.
#[inline(always)]
fn const_index<const N: usize>(raw: u64, runs: &[Run; N]) -> usize {
    let mut index = 0u64;
    let mut r = 0;
    while r < N {
        index |= ((raw >> runs[r].board_shift) & runs[r].mask) << runs[r].tuple_shift;
        r += 1;
    }
    index as usize
}

/// `raw`'s bits under `mask`, packed towards bit 0 in their order (x86's PEXT).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)]
fn extract_bits(raw: u64, mask: u64) -> u64 {
    let packed: u64;
    // SAFETY: PEXT reads two registers and writes a third; it touches no memory. It runs only
    // for a network whose `IndexMethod` is `Extract`, which `NTupleNetwork::set_index_method`
    // grants only on a CPU that reports BMI2.
    unsafe {
        core::arch::asm!(
            "pext {packed}, {raw}, {mask}",
            raw = in(reg) raw,
            mask = in(reg) mask,
            packed = lateout(reg) packed,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    packed
}

/// Whether each compiled tuple lists its cells in board order, as bit extraction needs to
/// compute the same index as the runs (checked at compile time below).
const fn cells_ascend<const T: usize>(tuples: &[[u8; 6]; T]) -> bool {
    let mut t = 0;
    while t < T {
        let mut k = 1;
        while k < 6 {
            if tuples[t][k] <= tuples[t][k - 1] {
                return false;
            }
            k += 1;
        }
        t += 1;
    }
    true
}

const _: () = assert!(cells_ascend(&CELLS_4X6) && cells_ascend(&CELLS_5X6) && cells_ascend(&CELLS_8X6));

/// How the self-play move choice ([`NTupleNetwork::values_keeping`]) reads a compiled shape's
/// feature indices off a board; every other path uses shifts. Both give the same indices, so
/// the choice changes speed only; tables and weight files are the same either way. Extraction
/// pays only where the indices are written straight to where they are kept: through a returned
/// array, 8×6's move choice measured 8.6% more instructions (BENCHMARKS.md, issue 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexMethod {
    /// Per run of consecutive cells, a shift and a mask (any CPU).
    Shifts,
    /// One bit extraction per tuple (x86's BMI2 `PEXT`) instead of a shift and mask per run.
    Extract,
}

impl IndexMethod {
    /// `Extract` where the CPU has BMI2 and runs `PEXT` in hardware; `Shifts` elsewhere, and on
    /// AMD processors before Zen 3, whose microcoded `PEXT` takes up to hundreds of cycles.
    pub fn fastest() -> IndexMethod {
        if IndexMethod::Extract.is_supported() && !slow_extract() {
            IndexMethod::Extract
        } else {
            IndexMethod::Shifts
        }
    }

    /// Whether this CPU can run the method at all.
    pub fn is_supported(self) -> bool {
        match self {
            IndexMethod::Shifts => true,
            #[cfg(target_arch = "x86_64")]
            IndexMethod::Extract => std::arch::is_x86_feature_detected!("bmi2"),
            #[cfg(not(target_arch = "x86_64"))]
            IndexMethod::Extract => false,
        }
    }
}

/// Whether the CPU is an AMD (or Hygon) processor of a family before Zen 3 (0x19).
#[cfg(target_arch = "x86_64")]
fn slow_extract() -> bool {
    use std::arch::x86_64::__cpuid;
    let vendor = __cpuid(0);
    let mut name = [0u8; 12];
    for (chunk, register) in name.chunks_exact_mut(4).zip([vendor.ebx, vendor.edx, vendor.ecx]) {
        chunk.copy_from_slice(&register.to_le_bytes());
    }
    if &name != b"AuthenticAMD" && &name != b"HygonGenuine" {
        return false;
    }
    let signature = __cpuid(1).eax;
    let base = (signature >> 8) & 0xf;
    let family = if base == 0xf { base + ((signature >> 20) & 0xff) } else { base };
    family < 0x19
}

#[cfg(not(target_arch = "x86_64"))]
fn slow_extract() -> bool {
    true
}

const fn runs_of_all<const T: usize>(tuples: [[u8; 6]; T]) -> [[Run; 6]; T] {
    let mut all = [[NO_RUN; 6]; T];
    let mut t = 0;
    while t < T {
        all[t] = runs_of(tuples[t]);
        t += 1;
    }
    all
}

const CELLS_4X6: [[u8; 6]; 4] =
    [[0, 1, 2, 3, 4, 5], [4, 5, 6, 7, 8, 9], [0, 1, 2, 4, 5, 6], [4, 5, 6, 8, 9, 10]];
const CELLS_5X6: [[u8; 6]; 5] =
    [[0, 1, 2, 3, 4, 5], [4, 5, 6, 7, 8, 9], [8, 9, 10, 11, 12, 13], [0, 1, 2, 4, 5, 6], [4, 5, 6, 8, 9, 10]];
const CELLS_8X6: [[u8; 6]; 8] = [
    [0, 1, 2, 4, 5, 6],
    [4, 5, 6, 7, 8, 9],
    [0, 1, 2, 3, 4, 5],
    [2, 3, 4, 5, 6, 9],
    [0, 1, 2, 5, 9, 10],
    [3, 4, 5, 6, 7, 8],
    [1, 3, 4, 5, 6, 7],
    [0, 1, 4, 8, 9, 10],
];
static RUNS_4X6: [[Run; 6]; 4] = runs_of_all(CELLS_4X6);
static RUNS_5X6: [[Run; 6]; 5] = runs_of_all(CELLS_5X6);
static RUNS_8X6: [[Run; 6]; 8] = runs_of_all(CELLS_8X6);
static MASKS_4X6: [u64; 4] = masks_of_all(&RUNS_4X6);
static MASKS_5X6: [u64; 5] = masks_of_all(&RUNS_5X6);
static MASKS_8X6: [u64; 8] = masks_of_all(&RUNS_8X6);

/// Each tuple's cells as a mask of the board's bits (what bit extraction keeps).
const fn masks_of_all<const T: usize>(runs: &[[Run; 6]; T]) -> [u64; T] {
    let mut masks = [0; T];
    let mut t = 0;
    while t < T {
        masks[t] = tuple_cells(&runs[t]);
        t += 1;
    }
    masks
}

/// How a network computes its features: compiled for a named shape (like TDL2048's static
/// indexers: about twice as fast as reading the runs at run time), or general.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    Standard4x6,
    Jaskowski5x6,
    Matsuzaki8x6,
    General,
}

impl Kernel {
    fn of(tuples: &[Vec<u8>]) -> Kernel {
        let is =
            |cells: &[[u8; 6]]| tuples.len() == cells.len() && tuples.iter().zip(cells).all(|(a, b)| a == b);
        if is(&CELLS_4X6) {
            Kernel::Standard4x6
        } else if is(&CELLS_5X6) {
            Kernel::Jaskowski5x6
        } else if is(&CELLS_8X6) {
            Kernel::Matsuzaki8x6
        } else {
            Kernel::General
        }
    }
}

/// Each tuple's index on each of the 8 boards, from constant runs: straight-line code.
#[inline(always)]
fn const_indices<const T: usize>(runs: &[[Run; 6]; T], boards: &[Board; 8]) -> [[usize; 8]; T] {
    runs.map(|tuple| boards.map(|b| const_index(b.raw(), &tuple)))
}

/// [`const_indices`] by bit extraction, one per index (the same indices: a compiled tuple lists
/// its cells in board order, and the extraction keeps the board's order), written where they
/// are kept (8×6's 512 bytes returned by value cost a zeroing and a copy per board), each
/// weight's line asked for as soon as its index is known: a second loop reading the indices
/// back to prefetch cost 114 loads a move and its loop.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn extract_and_prefetch<const T: usize>(
    masks: &[u64; T],
    boards: &[Board; 8],
    tables: &[Table; T],
    out: &mut [[usize; 8]; T],
) {
    for ((at, &mask), table) in out.iter_mut().zip(masks).zip(tables) {
        let lines = table.lines();
        for (index, board) in at.iter_mut().zip(boards) {
            let extracted = extract_bits(board.raw(), mask) as usize;
            lines.prefetch(extracted);
            *index = extracted;
        }
    }
}

/// Without BMI2 there is nothing to extract with: [`IndexMethod::Extract`] is never granted.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn extract_and_prefetch<const T: usize>(
    _masks: &[u64; T],
    _boards: &[Board; 8],
    _tables: &[Table; T],
    _out: &mut [[usize; 8]; T],
) {
    unreachable!("bit extraction is granted on x86-64 only")
}

/// Asks for the lines of one afterstate's weights (see [`NTupleNetwork::prefetch_and_sum`]).
#[inline(always)]
fn prefetch_at<const T: usize>(tables: &[Table; T], indices: &[[usize; 8]; T]) {
    for (table, at) in tables.iter().zip(indices) {
        for &index in at {
            table.prefetch(index);
        }
    }
}

/// A tuple's cells as a mask of the board's bits (what [`extract_bits`] keeps).
const fn tuple_cells<const N: usize>(runs: &[Run; N]) -> u64 {
    let mut cells = 0u64;
    let mut r = 0;
    while r < N {
        cells |= runs[r].mask << runs[r].board_shift;
        r += 1;
    }
    cells
}

/// The first `T` tuples' indices of a kept feature set (`T` ≤ [`MAX_KEPT_TUPLES`]: a compiled
/// shape's tuple count).
#[inline(always)]
fn kept_indices<const T: usize>(kept: &KeptFeatures) -> &[[usize; 8]; T] {
    kept.indices.first_chunk::<T>().expect("a compiled shape has at most MAX_KEPT_TUPLES tuples")
}

#[inline(always)]
fn kept_indices_mut<const T: usize>(kept: &mut KeptFeatures) -> &mut [[usize; 8]; T] {
    kept.indices.first_chunk_mut::<T>().expect("a compiled shape has at most MAX_KEPT_TUPLES tuples")
}

/// The value of one afterstate of a compiled shape (all of whose tuples have 6 cells) from its
/// indices.
#[inline(always)]
fn sum_at<const T: usize>(tables: &[Table], indices: &[[usize; 8]; T]) -> f32 {
    let mut sum = 0.0;
    for (table, at) in tables.iter().zip(indices) {
        sum += table.sum_at_six(at);
    }
    sum
}

/// Adds `step` to each weight of one afterstate of a compiled shape (all of whose tuples have 6
/// cells); returns its new value.
#[inline(always)]
fn add_at<const T: usize>(tables: &[Table], indices: &[[usize; 8]; T], step: f32) -> f32 {
    let mut sum = 0.0;
    for (table, at) in tables.iter().zip(indices) {
        sum += table.add_at_six(at, step);
    }
    sum
}

/// How to read one tuple's index off a board (the general path): its runs, kept inline so the
/// loop follows no pointer.
#[derive(Clone, Copy, Debug)]
struct Indexer {
    runs: [Run; MAX_TUPLE_LEN],
    count: usize,
}

impl Indexer {
    fn of(cells: &[u8]) -> Indexer {
        let mut indexer = Indexer { runs: [Run::default(); MAX_TUPLE_LEN], count: 0 };
        let mut k = 0;
        while k < cells.len() {
            let mut width = 1;
            while k + width < cells.len() && cells[k + width] == cells[k] + width as u8 {
                width += 1;
            }
            indexer.runs[indexer.count] = Run {
                board_shift: 4 * cells[k] as u32,
                mask: if width == 16 { u64::MAX } else { (1u64 << (4 * width)) - 1 },
                tuple_shift: 4 * k as u32,
            };
            indexer.count += 1;
            k += width;
        }
        indexer
    }

    #[inline(always)]
    fn index(&self, board: Board) -> usize {
        let raw = board.raw();
        let mut index = 0u64;
        for run in &self.runs[..self.count] {
            index |= ((raw >> run.board_shift) & run.mask) << run.tuple_shift;
        }
        index as usize
    }

    /// The tuple's index on each of the 8 boards: computed all first, so that the 8 weight reads
    /// that follow leave together and overlap their cache misses.
    #[inline(always)]
    fn indices(&self, boards: &[Board; 8]) -> [usize; 8] {
        boards.map(|b| self.index(b))
    }
}

/// Every feature of one board, computed once: a learner asks for an afterstate's cache lines
/// ahead, then reads its weights, then updates the same weights; one computation of the indices
/// serves the three (1.02–1.13× less CPU for the same games, BENCHMARKS.md). Filled by
/// [`NTupleNetwork::features_into`]; reused from board to board without allocating.
#[derive(Clone, Debug, Default)]
pub struct Features {
    /// The table of the first tuple (the board's stage × tuples).
    first_table: usize,
    /// Per tuple, its index on each of the 8 symmetric boards.
    indices: Vec<[usize; 8]>,
}

impl Features {
    /// Every feature, tuple by tuple (tuples × 8).
    pub fn iter(&self) -> impl Iterator<Item = Feature> + '_ {
        self.indices.iter().enumerate().flat_map(move |(t, at)| {
            let table = (self.first_table + t) as u32;
            at.iter().map(move |&index| Feature { table, index: index as u32 })
        })
    }

    /// Per tuple: its table number and its 8 indices.
    pub fn by_table(&self) -> impl Iterator<Item = (usize, &[usize; 8])> + '_ {
        self.indices.iter().enumerate().map(|(t, at)| (self.first_table + t, at))
    }
}

/// Most tuples a [`KeptFeatures`] holds: the compiled shapes' (8×6 has 8).
const MAX_KEPT_TUPLES: usize = 8;

/// One afterstate's feature indices as the move choice computed them (a network's
/// [`Evaluator::Memo`]): an online learner updates the chosen afterstate one move later and
/// writes its weights through these instead of computing the indices again. Only the compiled
/// shapes keep them (a general network's tuple count has no bound); an update through indices
/// of another board or shape computes its own ([`NTupleNetwork::add_and_value_kept`]).
#[derive(Clone, Copy, Debug)]
pub struct KeptFeatures {
    /// The board the indices are of; `None` when nothing is kept.
    board: Option<Board>,
    kernel: Kernel,
    indices: [[usize; 8]; MAX_KEPT_TUPLES],
}

impl Default for KeptFeatures {
    fn default() -> KeptFeatures {
        KeptFeatures { board: None, kernel: Kernel::General, indices: [[0; 8]; MAX_KEPT_TUPLES] }
    }
}

impl KeptFeatures {
    /// The board whose indices these are, if any are kept.
    pub fn board(&self) -> Option<Board> {
        self.board
    }

    /// Becomes a copy of `other`, copying only the tuples its shape has (a learner holds the
    /// chosen move's indices each move: a whole copy moved 512 bytes where the 4×6 shape uses 256).
    #[inline]
    pub fn copy_from(&mut self, other: &KeptFeatures) {
        self.board = other.board;
        self.kernel = other.kernel;
        match other.kernel {
            Kernel::Standard4x6 => *kept_indices_mut::<4>(self) = *kept_indices::<4>(other),
            Kernel::Jaskowski5x6 => *kept_indices_mut::<5>(self) = *kept_indices::<5>(other),
            Kernel::Matsuzaki8x6 => *kept_indices_mut::<8>(self) = *kept_indices::<8>(other),
            // Keeps no indices: `board` is `None`.
            Kernel::General => {}
        }
    }
}

/// See the module documentation.
pub struct NTupleNetwork {
    config: NTupleConfig,
    kernel: Kernel,
    /// How the move choice reads a compiled shape's indices.
    index_method: IndexMethod,
    indexers: Vec<Indexer>,
    /// `tables[stage * tuples + tuple]`.
    tables: Vec<Table>,
    /// Stages valued by their own tables so far (1 to `config.stages`): a board of a later
    /// stage is valued by the last open one, whose copy its own tables become when it opens.
    open_stages: AtomicU8,
    /// Weights read per evaluation (tuples × 8).
    features: usize,
    pages: Pages,
}

/// Where one feature lives: the table and the index in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    /// Table number (`stage * tuples + tuple`).
    pub table: u32,
    /// Index within the table.
    pub index: u32,
}

impl NTupleNetwork {
    /// A network of this shape with every weight zero, on huge pages where the kernel allows.
    pub fn zeroed(config: NTupleConfig) -> Result<NTupleNetwork, NetworkError> {
        NTupleNetwork::zeroed_on(config, Pages::Huge)
    }

    /// [`NTupleNetwork::zeroed`], choosing the page size.
    pub fn zeroed_on(config: NTupleConfig, pages: Pages) -> Result<NTupleNetwork, NetworkError> {
        config.validate().map_err(NetworkError::Shape)?;
        let mut tables = Vec::new();
        for _ in 0..config.stages {
            for t in 0..config.tuples.len() {
                let len = config.table_len(t);
                tables.push(
                    Table::zeroed(len, pages)
                        .map_err(|source| NetworkError::Allocation { bytes: len * 4, source })?,
                );
            }
        }
        let features = config.tuples.len() * 8;
        let indexers = config.tuples.iter().map(|t| Indexer::of(t)).collect();
        let kernel = Kernel::of(&config.tuples);
        let index_method = IndexMethod::fastest();
        let open_stages = AtomicU8::new(config.stages);
        Ok(NTupleNetwork { config, kernel, index_method, indexers, tables, open_stages, features, pages })
    }

    /// How the move choice of a compiled shape reads its feature indices
    /// ([`Self::values_keeping`]); [`IndexMethod::fastest`] unless set.
    pub fn index_method(&self) -> IndexMethod {
        self.index_method
    }

    /// Chooses how the move choice of a compiled shape reads its feature indices (to measure one
    /// against the other: the indices, and so the values, are the same). Refuses a method this
    /// CPU lacks.
    pub fn set_index_method(&mut self, method: IndexMethod) -> Result<(), NetworkError> {
        if !method.is_supported() {
            return Err(NetworkError::Unsupported(format!("{method:?} indexing needs a CPU with BMI2")));
        }
        self.index_method = method;
        Ok(())
    }

    /// Optimistic initialisation: every weight set so that every afterstate is valued `value`
    /// (each of the `feature_count` weights read holds `value / feature_count`). Learning from
    /// an optimistic start explores more: a state not yet seen looks better than a known one.
    pub fn set_initial_value(&self, value: f32) {
        let per_weight = value / self.features as f32;
        for table in &self.tables {
            table.fill(per_weight);
        }
    }

    /// The shape.
    pub fn config(&self) -> &NTupleConfig {
        &self.config
    }

    /// Weights read per evaluation: every tuple under every symmetry.
    pub fn feature_count(&self) -> usize {
        self.features
    }

    /// The stage whose tables value `board`: the stage it has reached, or the last open one.
    #[inline]
    pub fn stage(&self, board: Board) -> usize {
        if self.config.stages == 1 {
            return 0;
        }
        self.reached_stage(board).min(self.open_stages() as usize - 1)
    }

    /// The stage `board` belongs to by its largest tile, open or not.
    #[inline]
    pub fn reached_stage(&self, board: Board) -> usize {
        let top = board.max_exponent();
        (top.saturating_sub(self.config.stage_tile) as usize + usize::from(top >= self.config.stage_tile))
            .min(self.config.stages as usize - 1)
    }

    /// Stages valued by their own tables so far.
    #[inline]
    pub fn open_stages(&self) -> u8 {
        // Relaxed, as every weight is read: with an Acquire load the compiler no longer hoisted
        // the one-stage test out of the move choice's loop (82 more instructions a 4×6 move
        // than before stages could open, 15 with Relaxed; callgrind). A thread that sees a
        // stage open before the copy's weights reach it reads a few of them stale, as
        // lock-free learning reads weights anyway.
        self.open_stages.load(Ordering::Relaxed)
    }

    /// Closes every stage after the first, for a network about to learn from zero: each opens
    /// when a game first reaches it ([`Self::open_next_stage`]). A later stage learned from its
    /// first board on, with weights that know nothing, made play worse before it made it better:
    /// two stages from 8192 ended a 30-minute run 25% behind one (BENCHMARKS.md, issue 11).
    pub fn close_later_stages(&self) {
        self.open_stages.store(1, Ordering::Release);
    }

    /// Opens the first closed stage as a copy of the last open one's tables; `false` when every
    /// stage is open. Threads may go on learning while it copies (the copy takes each weight as
    /// it stands); the caller makes sure one thread opens a stage at a time.
    pub fn open_next_stage(&self) -> bool {
        let open = self.open_stages() as usize;
        if open >= self.config.stages as usize {
            return false;
        }
        let tuples = self.config.tuples.len();
        for t in 0..tuples {
            self.tables[open * tuples + t].copy_from(&self.tables[(open - 1) * tuples + t]);
        }
        self.open_stages.store(open as u8 + 1, Ordering::Release);
        true
    }

    /// Sets the stages open, as a file records them (`1..=stages`; its closed stages hold copies
    /// of the last open one, so the values are the same either way).
    pub fn set_open_stages(&self, open: u8) -> Result<(), NetworkError> {
        if !(1..=self.config.stages).contains(&open) {
            return Err(NetworkError::Shape(format!(
                "{open} open stages in a network of {} stage(s)",
                self.config.stages
            )));
        }
        self.open_stages.store(open, Ordering::Release);
        Ok(())
    }

    /// The tables as a file stores them, in the network's order: a closed stage's place holds
    /// the last open stage's tables, which value its boards until it opens, so a reader values
    /// every board as this network does whichever stages it takes as open.
    pub fn stored_tables(&self) -> impl Iterator<Item = &Table> + '_ {
        let tuples = self.config.tuples.len();
        let open = self.open_stages() as usize;
        (0..self.tables.len()).map(move |i| {
            let stage = (i / tuples).min(open - 1);
            &self.tables[stage * tuples + i % tuples]
        })
    }

    /// The tables of `board`'s stage.
    #[inline(always)]
    fn stage_tables(&self, board: Board) -> &[Table] {
        &self.tables[self.stage(board) * self.config.tuples.len()..]
    }

    /// Calls `visit` with every feature of `board` (tuples × 8 symmetries).
    #[inline]
    pub fn for_each_feature(&self, board: Board, mut visit: impl FnMut(Feature)) {
        let boards = board.symmetries();
        let base = self.stage(board) * self.config.tuples.len();
        let mut emit = |t: usize, at: &[usize; 8]| {
            for &index in at {
                visit(Feature { table: (base + t) as u32, index: index as u32 });
            }
        };
        match self.kernel {
            Kernel::Standard4x6 => {
                const_indices(&RUNS_4X6, &boards).iter().enumerate().for_each(|(t, at)| emit(t, at))
            }
            Kernel::Jaskowski5x6 => {
                const_indices(&RUNS_5X6, &boards).iter().enumerate().for_each(|(t, at)| emit(t, at))
            }
            Kernel::Matsuzaki8x6 => {
                const_indices(&RUNS_8X6, &boards).iter().enumerate().for_each(|(t, at)| emit(t, at))
            }
            Kernel::General => {
                for (t, indexer) in self.indexers.iter().enumerate() {
                    emit(t, &indexer.indices(&boards));
                }
            }
        }
    }

    /// Computes every feature of `board` into `features` (see [`Features`]).
    #[inline]
    pub fn features_into(&self, board: Board, features: &mut Features) {
        let boards = board.symmetries();
        features.first_table = self.stage(board) * self.config.tuples.len();
        features.indices.clear();
        match self.kernel {
            Kernel::Standard4x6 => features.indices.extend_from_slice(&const_indices(&RUNS_4X6, &boards)),
            Kernel::Jaskowski5x6 => features.indices.extend_from_slice(&const_indices(&RUNS_5X6, &boards)),
            Kernel::Matsuzaki8x6 => features.indices.extend_from_slice(&const_indices(&RUNS_8X6, &boards)),
            Kernel::General => features.indices.extend(self.indexers.iter().map(|i| i.indices(&boards))),
        }
    }

    /// The value of the board whose features these are: [`Self::value`] without computing them.
    #[inline]
    pub fn value_of(&self, features: &Features) -> f32 {
        features.by_table().map(|(table, at)| self.tables[table].sum_at(at)).sum()
    }

    /// [`Self::add_and_value`] of the board whose features these are.
    #[inline]
    pub fn add_and_value_of(&self, features: &Features, step: f32) -> f32 {
        features.by_table().map(|(table, at)| self.tables[table].add_at(at, step)).sum()
    }

    /// The value of an afterstate: the sum of its features' weights.
    #[inline]
    pub fn value(&self, board: Board) -> f32 {
        let boards = board.symmetries();
        let tables = self.stage_tables(board);
        match self.kernel {
            Kernel::Standard4x6 => sum_at(tables, &const_indices(&RUNS_4X6, &boards)),
            Kernel::Jaskowski5x6 => sum_at(tables, &const_indices(&RUNS_5X6, &boards)),
            Kernel::Matsuzaki8x6 => sum_at(tables, &const_indices(&RUNS_8X6, &boards)),
            Kernel::General => self
                .indexers
                .iter()
                .zip(tables)
                .map(|(indexer, table)| table.sum_at(&indexer.indices(&boards)))
                .sum(),
        }
    }

    /// The values of up to four afterstates (a move choice's candidates), as [`Self::value`] of
    /// each. Every index is computed before any weight is read, so the reads of all candidates
    /// (32 each for the 4×6 network, scattered over hundreds of MiB) are in flight together
    /// instead of one candidate's at a time.
    #[inline]
    pub fn values(&self, boards: &[Board], values: &mut [f32]) {
        match self.kernel {
            Kernel::Standard4x6 => self.values_with(&RUNS_4X6, boards, values),
            Kernel::Jaskowski5x6 => self.values_with(&RUNS_5X6, boards, values),
            Kernel::Matsuzaki8x6 => self.values_with(&RUNS_8X6, boards, values),
            Kernel::General => {
                for (value, &board) in values.iter_mut().zip(boards) {
                    *value = self.value(board);
                }
            }
        }
    }

    #[inline(always)]
    #[allow(unsafe_code)]
    fn values_with<const T: usize>(&self, runs: &[[Run; 6]; T], boards: &[Board], values: &mut [f32]) {
        for (boards, values) in boards.chunks(4).zip(values.chunks_mut(4)) {
            // Written slot by slot where they stay: a zeroed array filled afterwards cost a
            // memset per move, and an array built by `from_fn` a 1 KiB copy (1.1-1.8% of a run).
            let mut slots = [const { MaybeUninit::<[[usize; 8]; T]>::uninit() }; 4];
            for (slot, board) in slots.iter_mut().zip(boards) {
                slot.write(const_indices(runs, &board.symmetries()));
            }
            // SAFETY: the loop above wrote the first `boards.len()` slots (at most 4: `chunks`).
            let indices: &[[[usize; 8]; T]] =
                unsafe { std::slice::from_raw_parts(slots.as_ptr().cast(), boards.len()) };
            self.prefetch_and_sum(boards, indices.iter(), values);
        }
    }

    /// Reads the weights at `indices` (each board's, in order) into `values`.
    #[inline(always)]
    fn prefetch_and_sum<'a, const T: usize>(
        &self,
        boards: &[Board],
        indices: impl Iterator<Item = &'a [[usize; 8]; T]> + Clone,
        values: &mut [f32],
    ) {
        // Ask for every line first: a prefetch retires at once, while a load that misses
        // holds the reorder buffer until its line arrives, so summing straight away keeps
        // fewer of the candidates' misses in flight (BENCHMARKS.md, issue 11).
        for (at, &board) in indices.clone().zip(boards) {
            prefetch_at(self.compiled_tables::<T>(board), at);
        }
        self.sum_each(boards, indices, values);
    }

    /// Reads the weights at `indices` (each board's, in order) into `values`, their lines asked
    /// for already.
    #[inline(always)]
    fn sum_each<'a, const T: usize>(
        &self,
        boards: &[Board],
        indices: impl Iterator<Item = &'a [[usize; 8]; T]>,
        values: &mut [f32],
    ) {
        for ((value, at), &board) in values.iter_mut().zip(indices).zip(boards) {
            *value = sum_at(self.stage_tables(board), at);
        }
    }

    /// [`Self::values`], also keeping each board's feature indices in `kept` (as long as
    /// `boards`) for an update of one of them ([`Self::add_and_value_kept`]). A general-shape
    /// network keeps nothing.
    #[inline]
    pub fn values_keeping(&self, boards: &[Board], values: &mut [f32], kept: &mut [KeptFeatures]) {
        match self.kernel {
            Kernel::Standard4x6 => self.values_kept_with(&RUNS_4X6, &MASKS_4X6, boards, values, kept),
            Kernel::Jaskowski5x6 => self.values_kept_with(&RUNS_5X6, &MASKS_5X6, boards, values, kept),
            Kernel::Matsuzaki8x6 => self.values_kept_with(&RUNS_8X6, &MASKS_8X6, boards, values, kept),
            Kernel::General => {
                self.values(boards, values);
                for kept in kept {
                    kept.board = None;
                }
            }
        }
    }

    /// [`Self::values_keeping`] of a compiled shape, choosing the index method once.
    #[inline(always)]
    fn values_kept_with<const T: usize>(
        &self,
        runs: &[[Run; 6]; T],
        masks: &[u64; T],
        boards: &[Board],
        values: &mut [f32],
        kept: &mut [KeptFeatures],
    ) {
        match self.index_method {
            IndexMethod::Extract => self.values_kept_by::<T, true>(runs, masks, boards, values, kept),
            IndexMethod::Shifts => self.values_kept_by::<T, false>(runs, masks, boards, values, kept),
        }
    }

    #[inline(always)]
    fn values_kept_by<const T: usize, const EXTRACT: bool>(
        &self,
        runs: &[[Run; 6]; T],
        masks: &[u64; T],
        boards: &[Board],
        values: &mut [f32],
        kept: &mut [KeptFeatures],
    ) {
        // All lines asked for first, then summed, as in `prefetch_and_sum`.
        for (kept, &board) in kept.iter_mut().zip(boards) {
            kept.board = Some(board);
            kept.kernel = self.kernel;
            let tables = self.compiled_tables::<T>(board);
            if EXTRACT {
                extract_and_prefetch(masks, &board.symmetries(), tables, kept_indices_mut::<T>(kept));
            } else {
                let indices = kept_indices_mut::<T>(kept);
                *indices = const_indices(runs, &board.symmetries());
                prefetch_at(tables, indices);
            }
        }
        self.sum_each(boards, kept.iter().map(kept_indices::<T>), values);
    }

    /// A compiled shape's `T` tables for `board`'s stage.
    #[inline(always)]
    fn compiled_tables<const T: usize>(&self, board: Board) -> &[Table; T] {
        self.stage_tables(board).first_chunk::<T>().expect("a compiled shape has T tables a stage")
    }

    /// [`Self::add_and_value`] through indices the move choice kept: computes none when `kept`
    /// holds `board`'s (the same weights move either way).
    #[inline]
    pub fn add_and_value_kept(&self, kept: &KeptFeatures, board: Board, step: f32) -> f32 {
        if kept.board != Some(board) || kept.kernel != self.kernel {
            return self.add_and_value(board, step);
        }
        let tables = self.stage_tables(board);
        match self.kernel {
            Kernel::Standard4x6 => add_at(tables, kept_indices::<4>(kept), step),
            Kernel::Jaskowski5x6 => add_at(tables, kept_indices::<5>(kept), step),
            Kernel::Matsuzaki8x6 => add_at(tables, kept_indices::<8>(kept), step),
            Kernel::General => self.add_and_value(board, step),
        }
    }

    /// Adds `step` to every feature weight of `board` (a TD update's last part). Lock-free: safe
    /// to call from many threads at once (see the module documentation).
    #[inline]
    pub fn add(&self, board: Board, step: f32) {
        self.add_and_value(board, step);
    }

    /// [`NTupleNetwork::add`], returning the board's value after the update in the same pass
    /// (exact unless two of its features share a weight: then as the writes left it, as the
    /// public TD learners do).
    #[inline]
    pub fn add_and_value(&self, board: Board, step: f32) -> f32 {
        let boards = board.symmetries();
        let tables = self.stage_tables(board);
        match self.kernel {
            Kernel::Standard4x6 => add_at(tables, &const_indices(&RUNS_4X6, &boards), step),
            Kernel::Jaskowski5x6 => add_at(tables, &const_indices(&RUNS_5X6, &boards), step),
            Kernel::Matsuzaki8x6 => add_at(tables, &const_indices(&RUNS_8X6, &boards), step),
            Kernel::General => self
                .indexers
                .iter()
                .zip(tables)
                .map(|(indexer, table)| table.add_at(&indexer.indices(&boards), step))
                .sum(),
        }
    }

    /// One weight.
    #[inline]
    pub fn weight(&self, feature: Feature) -> f32 {
        self.tables[feature.table as usize].get(feature.index as usize)
    }

    /// Adds `delta` to one weight.
    #[inline]
    pub fn add_weight(&self, feature: Feature, delta: f32) {
        self.tables[feature.table as usize].add(feature.index as usize, delta);
    }

    /// The tables, in file order (`stage * tuples + tuple`).
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// The tables, to fill them from a file.
    pub fn tables_mut(&mut self) -> &mut [Table] {
        &mut self.tables
    }

    /// Overwrites this network's weights with `other`'s (same shape), reusing the memory.
    pub fn copy_from(&self, other: &NTupleNetwork) -> Result<(), NetworkError> {
        if self.config != other.config {
            return Err(NetworkError::Shape("copy_from needs two networks of the same shape".into()));
        }
        for (mine, theirs) in self.tables.iter().zip(&other.tables) {
            mine.copy_from(theirs);
        }
        self.open_stages.store(other.open_stages(), Ordering::Release);
        Ok(())
    }

    /// Moves every weight the fraction `weight` of the way towards `other`'s (same shape): one
    /// step of a running mean of networks (1 copies `other`, 1/n adds an n-th network to a mean
    /// of n − 1).
    pub fn blend_towards(&self, other: &NTupleNetwork, weight: f32) -> Result<(), NetworkError> {
        if self.config != other.config {
            return Err(NetworkError::Shape("blend_towards needs two networks of the same shape".into()));
        }
        // Each side as it values boards: a closed stage is its last open stage's copy. The blend
        // then has every stage open, whichever of the two had opened more.
        while self.open_next_stage() {}
        for (mine, theirs) in self.tables.iter().zip(other.stored_tables()) {
            mine.blend_towards(theirs, weight);
        }
        Ok(())
    }

    /// A deep copy (a frozen snapshot, e.g. to evaluate while learning goes on).
    pub fn try_clone(&self) -> Result<NTupleNetwork, NetworkError> {
        let tables = self
            .tables
            .iter()
            .map(|t| {
                t.try_clone(self.pages)
                    .map_err(|source| NetworkError::Allocation { bytes: t.len() * 4, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NTupleNetwork {
            config: self.config.clone(),
            kernel: self.kernel,
            index_method: self.index_method,
            indexers: self.indexers.clone(),
            tables,
            open_stages: AtomicU8::new(self.open_stages()),
            features: self.features,
            pages: self.pages,
        })
    }
}

/// The exponent from which [`downgraded`] lowers tiles by default: 15, the 32768 tile, which
/// self-play rarely reaches and a network therefore values poorly.
pub const DOWNGRADE_FROM: u8 = 15;

/// Tile-downgrading: a board holding a tile of exponent `from` or more, seen with every tile above
/// its highest missing exponent one rank lower, so that a network evaluates it like the board it
/// knows (the 32768 endgame looks like the 16384 one). `None` when the board holds no such tile
/// or no rank is free to close up (every exponent from 1 up to its largest is present).
pub fn downgraded(board: Board, from: u8) -> Option<Board> {
    let cells = board.exponents();
    let top = cells.iter().copied().max().unwrap_or(0);
    if top < from {
        return None;
    }
    let mut present = 0u32;
    for &e in &cells {
        present |= 1 << e;
    }
    // The highest free rank below the largest tile: tiles above it close up by one.
    let gap = (1..top).rev().find(|&e| present & (1 << e) == 0)?;
    let lowered = cells.map(|e| if e > gap { e - 1 } else { e });
    Board::from_exponents(lowered)
}

impl Evaluator for NTupleNetwork {
    type Memo = KeptFeatures;

    #[inline]
    fn evaluate(&self, afterstate: Board) -> f32 {
        self.value(afterstate)
    }

    #[inline]
    fn evaluate_all(&self, afterstates: &[Board], values: &mut [f32]) {
        self.values(afterstates, values)
    }

    #[inline]
    fn evaluate_all_keeping(&self, afterstates: &[Board], values: &mut [f32], memos: &mut [KeptFeatures]) {
        self.values_keeping(afterstates, values, memos)
    }

    fn name(&self) -> String {
        let lens: Vec<String> = self.config.tuples.iter().map(|t| t.len().to_string()).collect();
        format!("ntuple {}x[{}] {} stage(s)", self.config.tuples.len(), lens.join(","), self.config.stages)
    }
}

/// An n-tuple network evaluated with tile-downgrading from exponent `from` (see [`downgraded`]).
pub struct Downgrading<N> {
    /// The network.
    pub network: N,
    /// The exponent from which tiles are lowered.
    pub from: u8,
}

/// Whether some cell holds exponent 15 (all four bits of its nibble set).
#[inline]
fn has_exponent_15(board: Board) -> bool {
    let b = board.raw();
    b & (b >> 1) & (b >> 2) & (b >> 3) & 0x1111_1111_1111_1111 != 0
}

impl<N: std::ops::Deref<Target = NTupleNetwork> + Send + Sync> Evaluator for Downgrading<N> {
    /// Nothing kept: the indices read are of the lowered board, not the afterstate a learner
    /// would update.
    type Memo = ();

    #[inline]
    fn evaluate(&self, afterstate: Board) -> f32 {
        let may_downgrade = if self.from == 15 {
            has_exponent_15(afterstate)
        } else {
            afterstate.max_exponent() >= self.from
        };
        if !may_downgrade {
            return self.network.value(afterstate);
        }
        self.network.value(downgraded(afterstate, self.from).unwrap_or(afterstate))
    }

    #[inline]
    fn evaluate_all(&self, afterstates: &[Board], values: &mut [f32]) {
        let mut seen = [Board::EMPTY; 4];
        for (chunk, values) in afterstates.chunks(4).zip(values.chunks_mut(4)) {
            for (to, &afterstate) in seen.iter_mut().zip(chunk) {
                let may_downgrade = if self.from == 15 {
                    has_exponent_15(afterstate)
                } else {
                    afterstate.max_exponent() >= self.from
                };
                *to = if may_downgrade {
                    downgraded(afterstate, self.from).unwrap_or(afterstate)
                } else {
                    afterstate
                };
            }
            self.network.values(&seen[..chunk.len()], values);
        }
    }

    fn name(&self) -> String {
        format!("{} with tile-downgrading from {}", self.network.name(), 1u32 << self.from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_kernels_compute_the_general_features() {
        for config in
            [NTupleConfig::standard_4x6(), NTupleConfig::jaskowski_5x6(), NTupleConfig::matsuzaki_8x6()]
        {
            let network = NTupleNetwork::zeroed(config.clone()).unwrap();
            assert_ne!(network.kernel, Kernel::General, "{config:?}");
            // Features do not depend on the weights: a second zeroed network costs no memory touched.
            let general =
                NTupleNetwork { kernel: Kernel::General, ..NTupleNetwork::zeroed(config.clone()).unwrap() };
            let mut state = 0x2048_u64;
            for _ in 0..2000 {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let board = Board::from_raw(state);
                let (mut fast, mut plain) = (Vec::new(), Vec::new());
                network.for_each_feature(board, |f| fast.push(f));
                general.for_each_feature(board, |f| plain.push(f));
                assert_eq!(fast, plain, "{board:?}");
            }
        }
        assert_eq!(Kernel::of(&NTupleConfig::small_4x4().tuples), Kernel::General);
    }

    #[test]
    fn extraction_computes_the_shifts_indices() {
        if !IndexMethod::Extract.is_supported() {
            return;
        }
        // Eight tables, as many as any compiled shape has: the prefetches need somewhere to point.
        let network = NTupleNetwork::zeroed(NTupleConfig::matsuzaki_8x6()).unwrap();
        fn check<const T: usize>(
            network: &NTupleNetwork,
            runs: &[[Run; 6]; T],
            masks: &[u64; T],
            board: Board,
        ) {
            let boards = board.symmetries();
            let mut extracted = [[usize::MAX; 8]; T];
            extract_and_prefetch(masks, &boards, network.compiled_tables::<T>(board), &mut extracted);
            assert_eq!(extracted, const_indices(runs, &boards), "{board:?}");
        }
        let mut state = 0x2048_u64;
        for _ in 0..5000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let board = Board::from_raw(state);
            check(&network, &RUNS_4X6, &MASKS_4X6, board);
            check(&network, &RUNS_5X6, &MASKS_5X6, board);
            check(&network, &RUNS_8X6, &MASKS_8X6, board);
        }
    }

    #[test]
    fn index_methods_value_and_keep_alike() {
        if !IndexMethod::Extract.is_supported() {
            let mut network = NTupleNetwork::zeroed(NTupleConfig::standard_4x6()).unwrap();
            let refused = network.set_index_method(IndexMethod::Extract).unwrap_err();
            assert!(refused.to_string().contains("BMI2"), "{refused}");
            return;
        }
        for config in
            [NTupleConfig::standard_4x6(), NTupleConfig::jaskowski_5x6(), NTupleConfig::matsuzaki_8x6()]
        {
            let mut shifts = NTupleNetwork::zeroed(config.clone()).unwrap();
            shifts.set_index_method(IndexMethod::Shifts).unwrap();
            let mut state = 0x5eed_u64;
            let mut next = || {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                state
            };
            // Distinct weights under many features, so a wrong index reads a different value.
            for _ in 0..20_000 {
                let board = Board::from_raw(next());
                shifts.add(board, (next() % 1000) as f32 / 1000.0 - 0.5);
            }
            let mut extract = shifts.try_clone().unwrap();
            extract.set_index_method(IndexMethod::Extract).unwrap();
            assert_eq!(extract.index_method(), IndexMethod::Extract);
            for _ in 0..500 {
                let boards = [next(), next(), next(), next()].map(Board::from_raw);
                let (mut by_shifts, mut by_extract) = ([0.0f32; 4], [0.0f32; 4]);
                let mut kept = [KeptFeatures::default(); 4];
                shifts.values(&boards, &mut by_shifts);
                extract.values_keeping(&boards, &mut by_extract, &mut kept);
                assert_eq!(by_shifts, by_extract, "{boards:?}");
                for (board, value) in boards.iter().zip(by_shifts) {
                    assert_eq!(extract.value(*board), value);
                }
                // An update through the indices extraction kept moves the weights that shifts
                // find for the same board: the two copies stay equal.
                let (learned, moved) = (next() as usize % 4, (next() % 100) as f32 / 100.0);
                let by_kept = extract.add_and_value_kept(&kept[learned], boards[learned], moved);
                assert_eq!(by_kept, shifts.add_and_value(boards[learned], moved));
                shifts.values(&boards, &mut by_shifts);
                extract.values(&boards, &mut by_extract);
                assert_eq!(by_shifts, by_extract, "after learning {:?}", boards[learned]);
            }
        }
    }

    #[test]
    fn features_computed_once_read_and_write_what_the_board_does() {
        let staged = NTupleConfig { stages: 2, stage_tile: 14, ..NTupleConfig::small_4x4() };
        for config in [NTupleConfig::standard_4x6(), NTupleConfig::matsuzaki_8x6(), staged] {
            let (once, plain) =
                (NTupleNetwork::zeroed(config.clone()).unwrap(), NTupleNetwork::zeroed(config).unwrap());
            let mut features = Features::default();
            let mut state = 0x6b8b_4567_u64;
            for step in 0..500 {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let board = Board::from_raw(state);
                once.features_into(board, &mut features);
                let mut listed = Vec::new();
                plain.for_each_feature(board, |f| listed.push(f));
                assert_eq!(features.iter().collect::<Vec<_>>(), listed, "{board:?}");
                let delta = (step % 7) as f32 - 3.0;
                assert_eq!(once.add_and_value_of(&features, delta), plain.add_and_value(board, delta));
                assert_eq!(once.value_of(&features), plain.value(board), "{board:?}");
            }
        }
    }

    #[test]
    fn kept_indices_read_and_write_what_the_board_does() {
        let small = NTupleConfig::small_4x4();
        for config in [
            NTupleConfig::standard_4x6(),
            NTupleConfig::jaskowski_5x6(),
            NTupleConfig::matsuzaki_8x6(),
            NTupleConfig { stages: 2, stage_tile: 14, ..small },
        ] {
            let (kept_net, plain) = (
                NTupleNetwork::zeroed(config.clone()).unwrap(),
                NTupleNetwork::zeroed(config.clone()).unwrap(),
            );
            let mut state = 0x4b1d_u64;
            let mut next = || {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                Board::from_raw(state)
            };
            let mut kept = [KeptFeatures::default(); 4];
            let mut updated = Vec::new();
            for step in 0..300 {
                let count = step % 5;
                let boards: Vec<Board> = (0..count).map(|_| next()).collect();
                let mut values = vec![f32::NAN; count];
                kept_net.values_keeping(&boards, &mut values, &mut kept[..count]);
                let one_by_one: Vec<f32> = boards.iter().map(|&b| plain.value(b)).collect();
                assert_eq!(values, one_by_one, "{config:?}, {count} boards");
                let compiled = kept_net.kernel != Kernel::General;
                for (k, &board) in kept[..count].iter().zip(&boards) {
                    assert_eq!(k.board(), compiled.then_some(board), "{config:?}");
                }
                // Through the kept indices of the right board, of another board (ignored), or of
                // none: the same weights move as from the board alone.
                let delta = (step % 7) as f32 - 3.0;
                let (target, through) = match count {
                    0 => (next(), KeptFeatures::default()),
                    1 => (boards[0], kept[0]),
                    _ => (boards[step % count], kept[(step + 1) % count]),
                };
                assert_eq!(
                    kept_net.add_and_value_kept(&through, target, delta),
                    plain.add_and_value(target, delta),
                    "{config:?}"
                );
                updated.push(target);
            }
            for board in updated {
                assert_eq!(kept_net.value(board), plain.value(board), "{config:?}, {board:?}");
            }
        }
    }

    #[test]
    fn values_of_several_boards_are_each_boards_value() {
        for config in [
            NTupleConfig::standard_4x6(),
            NTupleConfig::small_4x4(),
            NTupleConfig { stages: 2, ..NTupleConfig::small_4x4() },
        ] {
            let network = NTupleNetwork::zeroed(config.clone()).unwrap();
            let mut state = 0x5eed_u64;
            let mut next = || {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                Board::from_raw(state)
            };
            for _ in 0..300 {
                network.add(next(), 0.25);
            }
            for count in 0..=6 {
                let boards: Vec<Board> = (0..count).map(|_| next()).collect();
                let mut values = vec![f32::NAN; count];
                network.values(&boards, &mut values);
                let one_by_one: Vec<f32> = boards.iter().map(|&b| network.value(b)).collect();
                assert_eq!(values, one_by_one, "{config:?}, {count} boards");
                let downgrading = Downgrading { network: &network, from: 15 };
                let mut through = vec![f32::NAN; count];
                downgrading.evaluate_all(&boards, &mut through);
                let each: Vec<f32> = boards.iter().map(|&b| downgrading.evaluate(b)).collect();
                assert_eq!(through, each, "{config:?}, downgrading, {count} boards");
            }
        }
    }

    #[test]
    fn downgrading_closes_the_highest_gap_below_the_largest_tile() {
        let board: Board = "32768 16384 8192 4096 | 2 4 0 0 | 0 0 0 0 | 0 0 0 0".parse().unwrap();
        // Exponents 15 14 13 12 and 1 2: the highest free rank is 11 (2048): 12..15 move down.
        let lowered = downgraded(board, 15).unwrap();
        assert_eq!(lowered, "16384 8192 4096 2048 | 2 4 0 0 | 0 0 0 0 | 0 0 0 0".parse().unwrap());
        assert_eq!(downgraded(lowered, 15), None, "nothing of 32768 left");
        let full: Board =
            "32768 16384 8192 4096 | 2048 1024 512 256 | 128 64 32 16 | 8 4 2 0".parse().unwrap();
        assert_eq!(downgraded(full, 15), None, "no free rank to close up");
        assert!(has_exponent_15(board) && !has_exponent_15(lowered));
    }

    #[test]
    fn a_downgrading_evaluator_sees_the_lowered_board() {
        let network = NTupleNetwork::zeroed(NTupleConfig::small_4x4()).unwrap();
        let board: Board = "32768 16384 0 0 | 2 0 0 0 | 0 0 0 0 | 0 0 0 0".parse().unwrap();
        let lowered = downgraded(board, DOWNGRADE_FROM).unwrap();
        network.add(lowered, 1.0);
        let evaluator = Downgrading { network: &network, from: DOWNGRADE_FROM };
        assert_eq!(evaluator.evaluate(board), network.value(lowered));
        let plain: Board = "1024 0 0 0 | 2 0 0 0 | 0 0 0 0 | 0 0 0 0".parse().unwrap();
        assert_eq!(evaluator.evaluate(plain), network.value(plain));
    }
}
