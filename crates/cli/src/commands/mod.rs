//! One module per subcommand.

pub mod analyze;
pub mod bench;
pub mod eval;
pub mod play;
pub mod replay;
pub mod train;
pub mod weights;
