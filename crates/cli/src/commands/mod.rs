//! One module per subcommand.

pub mod analyze;
pub mod bench;
pub mod eval;
pub mod export;
pub mod learn;
pub mod play;
pub mod replay;
pub mod server;
pub mod token;
pub mod train;
pub mod weights;
pub mod worker;
