//! Learned evaluators for 2048.
//!
//! [`NTupleNetwork`] values afterstates with tables of weights looked up by the tiles under a few
//! cell tuples, under all 8 symmetries; it implements `zero2048_search::Evaluator`, so every search
//! and player can use it. [`weights_file`] reads and writes it as safetensors with the metadata of
//! `docs/formats.md`. [`PolicyValueNet`] is the other model kind: a residual network with a policy and a
//! value head (burn), which `zero2048_search::mcts` searches with; [`policy_value::Trainer`] trains it.
//!
//! ```
//! use zero2048_game::Board;
//! use zero2048_model::{NTupleConfig, NTupleNetwork};
//!
//! // A fresh network values every board at 0; `add` moves the weights of a board's features.
//! let network = NTupleNetwork::zeroed(NTupleConfig::small_4x4()).unwrap();
//! let board: Board = "2 4 . . | . . . . | . . . . | . . . 2".parse().unwrap();
//! assert_eq!(network.value(board), 0.0);
//! network.add(board, 8.0);
//! assert!(network.value(board) > 0.0);
//! ```
//!
//! This crate must never download, cache or trust files by itself: it reads a path it is given,
//! after the storage layer has checked the file's SHA-256, and refuses any file whose metadata,
//! shapes or values do not match.

mod ntuple;
pub mod policy_value;
mod table;
pub mod weights_file;

pub use ntuple::{
    DOWNGRADE_FROM, Downgrading, Feature, Features, IndexMethod, KeptFeatures, MAX_TUPLE_LEN, NTupleConfig,
    NTupleNetwork, NetworkError, downgraded,
};
pub use policy_value::{PolicyValueConfig, PolicyValueInfo, PolicyValueNet};
pub use table::{Pages, SIX_TUPLE_WEIGHTS, Table};
pub use weights_file::{WeightsFileError, WeightsInfo};
