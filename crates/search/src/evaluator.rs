//! What a search asks of a model: the value of an afterstate.

use zero2048_game::Board;

/// Values afterstates (boards after a move, before the spawn). Implemented by the hand-written
/// [`crate::Heuristic`] here and by learned models in later crates.
pub trait Evaluator: Send + Sync {
    /// The value of `afterstate`. Larger is better.
    fn evaluate(&self, afterstate: Board) -> f32;

    /// How much one point of game score is worth in this evaluator's units. A learned value of the
    /// expected future score uses 1 (the search then maximises reward + value); a heuristic whose
    /// units are not points uses 0, so only its leaf values steer the search.
    fn reward_weight(&self) -> f32 {
        1.0
    }

    /// A short name for tables and logs.
    fn name(&self) -> String;
}

impl<E: Evaluator + ?Sized> Evaluator for &E {
    fn evaluate(&self, afterstate: Board) -> f32 {
        (**self).evaluate(afterstate)
    }
    fn reward_weight(&self) -> f32 {
        (**self).reward_weight()
    }
    fn name(&self) -> String {
        (**self).name()
    }
}

impl<E: Evaluator + ?Sized> Evaluator for std::sync::Arc<E> {
    fn evaluate(&self, afterstate: Board) -> f32 {
        (**self).evaluate(afterstate)
    }
    fn reward_weight(&self) -> f32 {
        (**self).reward_weight()
    }
    fn name(&self) -> String {
        (**self).name()
    }
}
