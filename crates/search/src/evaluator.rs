//! What a search asks of a model: the value of an afterstate.

use zero2048_game::Board;

/// Values afterstates (boards after a move, before the spawn). Implemented by the hand-written
/// [`crate::Heuristic`] here and by learned models in later crates.
pub trait Evaluator: Send + Sync {
    /// The value of `afterstate`. Larger is better.
    fn evaluate(&self, afterstate: Board) -> f32;

    /// The values of several afterstates, into `values` (as long as `afterstates`). The same as
    /// calling [`Evaluator::evaluate`] on each; an evaluator bound by memory reads overrides it
    /// to have all their reads in flight at once.
    fn evaluate_all(&self, afterstates: &[Board], values: &mut [f32]) {
        for (value, &afterstate) in values.iter_mut().zip(afterstates) {
            *value = self.evaluate(afterstate);
        }
    }

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
    fn evaluate_all(&self, afterstates: &[Board], values: &mut [f32]) {
        (**self).evaluate_all(afterstates, values)
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
    fn evaluate_all(&self, afterstates: &[Board], values: &mut [f32]) {
        (**self).evaluate_all(afterstates, values)
    }
    fn reward_weight(&self) -> f32 {
        (**self).reward_weight()
    }
    fn name(&self) -> String {
        (**self).name()
    }
}
