//! What a search asks of a model: the value of an afterstate.

use zero2048_game::Board;

/// Values afterstates (boards after a move, before the spawn). Implemented by the hand-written
/// [`crate::Heuristic`] here and by learned models in later crates.
pub trait Evaluator: Send + Sync {
    /// What valuing an afterstate computed that an update of the same afterstate can use again:
    /// an n-tuple network's feature indices, which a learner updating the chosen afterstate one
    /// move later would otherwise compute a second time. `()` where nothing is worth keeping.
    type Memo: Default + Send;

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

    /// [`Evaluator::evaluate_all`], also leaving in `memos` (as long as `afterstates`) what each
    /// afterstate's valuation computed. Evaluators with nothing to keep leave `memos` as they are.
    fn evaluate_all_keeping(&self, afterstates: &[Board], values: &mut [f32], memos: &mut [Self::Memo]) {
        let _ = memos;
        self.evaluate_all(afterstates, values)
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
    type Memo = E::Memo;
    fn evaluate(&self, afterstate: Board) -> f32 {
        (**self).evaluate(afterstate)
    }
    fn evaluate_all(&self, afterstates: &[Board], values: &mut [f32]) {
        (**self).evaluate_all(afterstates, values)
    }
    fn evaluate_all_keeping(&self, afterstates: &[Board], values: &mut [f32], memos: &mut [Self::Memo]) {
        (**self).evaluate_all_keeping(afterstates, values, memos)
    }
    fn reward_weight(&self) -> f32 {
        (**self).reward_weight()
    }
    fn name(&self) -> String {
        (**self).name()
    }
}

impl<E: Evaluator + ?Sized> Evaluator for std::sync::Arc<E> {
    type Memo = E::Memo;
    fn evaluate(&self, afterstate: Board) -> f32 {
        (**self).evaluate(afterstate)
    }
    fn evaluate_all(&self, afterstates: &[Board], values: &mut [f32]) {
        (**self).evaluate_all(afterstates, values)
    }
    fn evaluate_all_keeping(&self, afterstates: &[Board], values: &mut [f32], memos: &mut [Self::Memo]) {
        (**self).evaluate_all_keeping(afterstates, values, memos)
    }
    fn reward_weight(&self) -> f32 {
        (**self).reward_weight()
    }
    fn name(&self) -> String {
        (**self).name()
    }
}
