//! The n-tuple network: an afterstate value function that sums, over a list of tuples (cell lists)
//! and the 8 symmetries of the square, one weight per tuple looked up by the tiles under its cells.
//! Weights are shared across symmetries, so each game position teaches 8 positions at once.
//! Optionally several stages: separate weights once the board holds a tile of at least
//! `stage_tile`, since the endgame needs different values than the opening.

use serde::{Deserialize, Serialize};
use zero2048_game::Board;
use zero2048_search::Evaluator;

use crate::table::Table;

/// The longest tuple supported (16^8 weights, 16 GiB: longer is never practical).
pub const MAX_TUPLE_LEN: usize = 8;

/// The shape of a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NTupleConfig {
    /// Cell lists, cells numbered row-major 0..16.
    pub tuples: Vec<Vec<u8>>,
    /// Number of stages (1 = a single weight set).
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

    /// A small network for tests and quick runs: four 4-cell shapes (16^4 weights each).
    pub fn small_4x4() -> NTupleConfig {
        NTupleConfig {
            tuples: vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![0, 1, 4, 5], vec![1, 2, 5, 6]],
            stages: 1,
            stage_tile: 14,
        }
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
    /// The tables could not be allocated.
    #[error("allocating {bytes} bytes of weights: {source}")]
    Allocation {
        /// Bytes asked for.
        bytes: usize,
        /// The error.
        source: std::io::Error,
    },
}

/// A run of consecutive cells of a tuple: `width` cells starting at board cell `first`, landing at
/// tuple position `position`. Extracting a run is one shift and one mask.
#[derive(Clone, Copy, Debug)]
struct Run {
    board_shift: u32,
    mask: u64,
    tuple_shift: u32,
}

fn runs_of(cells: &[u8]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut k = 0;
    while k < cells.len() {
        let mut width = 1;
        while k + width < cells.len() && cells[k + width] == cells[k] + width as u8 {
            width += 1;
        }
        runs.push(Run {
            board_shift: 4 * cells[k] as u32,
            mask: if width == 16 { u64::MAX } else { (1u64 << (4 * width)) - 1 },
            tuple_shift: 4 * k as u32,
        });
        k += width;
    }
    runs
}

/// See the module documentation.
pub struct NTupleNetwork {
    config: NTupleConfig,
    /// Each tuple's cells as runs of consecutive cells.
    runs: Vec<Vec<Run>>,
    /// `tables[stage * tuples + tuple]`.
    tables: Vec<Table>,
    /// Weights read per evaluation (tuples × 8).
    features: usize,
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
    /// A network of this shape with every weight zero.
    pub fn zeroed(config: NTupleConfig) -> Result<NTupleNetwork, NetworkError> {
        config.validate().map_err(NetworkError::Shape)?;
        let mut tables = Vec::new();
        for _ in 0..config.stages {
            for t in 0..config.tuples.len() {
                let len = config.table_len(t);
                tables.push(
                    Table::zeroed(len)
                        .map_err(|source| NetworkError::Allocation { bytes: len * 4, source })?,
                );
            }
        }
        let features = config.tuples.len() * 8;
        let runs = config.tuples.iter().map(|t| runs_of(t)).collect();
        Ok(NTupleNetwork { config, runs, tables, features })
    }

    /// The shape.
    pub fn config(&self) -> &NTupleConfig {
        &self.config
    }

    /// Weights read per evaluation: every tuple under every symmetry.
    pub fn feature_count(&self) -> usize {
        self.features
    }

    /// The stage a board belongs to.
    #[inline]
    pub fn stage(&self, board: Board) -> usize {
        if self.config.stages == 1 {
            return 0;
        }
        let top = board.max_exponent();
        (top.saturating_sub(self.config.stage_tile) as usize + usize::from(top >= self.config.stage_tile))
            .min(self.config.stages as usize - 1)
    }

    #[inline]
    fn index(board: Board, runs: &[Run]) -> usize {
        let raw = board.raw();
        let mut index = 0u64;
        for run in runs {
            index |= ((raw >> run.board_shift) & run.mask) << run.tuple_shift;
        }
        index as usize
    }

    /// Calls `visit` with every feature of `board` (tuples × 8 symmetries).
    #[inline]
    pub fn for_each_feature(&self, board: Board, mut visit: impl FnMut(Feature)) {
        let boards = board.symmetries();
        let base = self.stage(board) * self.config.tuples.len();
        for (t, runs) in self.runs.iter().enumerate() {
            for symmetric in boards {
                visit(Feature { table: (base + t) as u32, index: Self::index(symmetric, runs) as u32 });
            }
        }
    }

    /// The value of an afterstate: the sum of its features' weights.
    #[inline]
    pub fn value(&self, board: Board) -> f32 {
        let boards = board.symmetries();
        let base = self.stage(board) * self.config.tuples.len();
        let mut value = 0.0;
        for (t, runs) in self.runs.iter().enumerate() {
            let weights = self.tables[base + t].weights();
            for symmetric in boards {
                value += weights[Self::index(symmetric, runs)];
            }
        }
        value
    }

    /// Adds `step` to every feature weight of `board` (a TD update's last part).
    #[inline]
    pub fn add(&mut self, board: Board, step: f32) {
        let boards = board.symmetries();
        let base = self.stage(board) * self.config.tuples.len();
        let NTupleNetwork { runs, tables, .. } = self;
        for (t, runs) in runs.iter().enumerate() {
            let weights = tables[base + t].weights_mut();
            for symmetric in boards {
                weights[Self::index(symmetric, runs)] += step;
            }
        }
    }

    /// One weight.
    #[inline]
    pub fn weight(&self, feature: Feature) -> f32 {
        self.tables[feature.table as usize].weights()[feature.index as usize]
    }

    /// One weight, to change it.
    #[inline]
    pub fn weight_mut(&mut self, feature: Feature) -> &mut f32 {
        &mut self.tables[feature.table as usize].weights_mut()[feature.index as usize]
    }

    /// The tables, in file order (`stage * tuples + tuple`).
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// The tables, to fill them.
    pub fn tables_mut(&mut self) -> &mut [Table] {
        &mut self.tables
    }

    /// Overwrites this network's weights with `other`'s (same shape), reusing the memory: no
    /// allocation and no page faults, unlike [`NTupleNetwork::try_clone`].
    pub fn copy_from(&mut self, other: &NTupleNetwork) -> Result<(), NetworkError> {
        if self.config != other.config {
            return Err(NetworkError::Shape("copy_from needs two networks of the same shape".into()));
        }
        for (mine, theirs) in self.tables.iter_mut().zip(&other.tables) {
            mine.bytes_mut().copy_from_slice(theirs.bytes());
        }
        Ok(())
    }

    /// A deep copy (a snapshot for self-play while the learner goes on).
    pub fn try_clone(&self) -> Result<NTupleNetwork, NetworkError> {
        let tables = self
            .tables
            .iter()
            .map(|t| t.try_clone().map_err(|source| NetworkError::Allocation { bytes: t.len() * 4, source }))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NTupleNetwork {
            config: self.config.clone(),
            runs: self.runs.clone(),
            tables,
            features: self.features,
        })
    }
}

impl Evaluator for NTupleNetwork {
    #[inline]
    fn evaluate(&self, afterstate: Board) -> f32 {
        self.value(afterstate)
    }

    fn name(&self) -> String {
        let lens: Vec<String> = self.config.tuples.iter().map(|t| t.len().to_string()).collect();
        format!("ntuple {}x[{}] {} stage(s)", self.config.tuples.len(), lens.join(","), self.config.stages)
    }
}
