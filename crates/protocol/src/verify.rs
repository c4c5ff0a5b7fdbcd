//! The server's check of one uploaded game: one replay that checks every move, every spawn, the
//! search statistics and the end of the game at once, and yields what the learner needs.

use zero2048_game::{Board, GameRecord, ReplaySummary, is_branch_of};

use crate::batch::BatchEntry;

/// A game that passed every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// What the replay established.
    pub summary: ReplaySummary,
}

/// Why a game is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// The record's bytes do not decode.
    #[error("the record does not decode: {0}")]
    Undecodable(String),
    /// A step the engine refuses.
    #[error("illegal game: {0}")]
    Illegal(String),
    /// The game is not finished.
    #[error("the game is not over: its final board still has a legal move")]
    Unfinished,
    /// The search statistics are missing where the run needs them, present where it does not,
    /// or inconsistent with the game or the search the server asked for.
    #[error("search statistics: {0}")]
    SearchStats(String),
    /// Played with a revision the server no longer (or not yet) accepts.
    #[error("revision {revision} is not accepted (accepted: {accepted:?})")]
    RevisionNotAccepted {
        /// The game's revision.
        revision: u64,
        /// What the server accepts.
        accepted: Vec<u64>,
    },
    /// A continuation whose parent game the server does not hold (not uploaded before it or
    /// earlier in the same batch, or refused).
    #[error("continuation of game {parent}, which the server does not hold")]
    UnknownParent {
        /// The parent's UUID.
        parent: uuid::Uuid,
    },
    /// A continuation whose start is not its parent's position plus one spawn.
    #[error("the continuation does not start from step {step} of its parent game: {reason}")]
    NotABranch {
        /// The branch step claimed.
        step: u32,
        /// What is wrong.
        reason: String,
    },
}

impl RejectReason {
    /// The machine-readable code of the reason.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::Undecodable(_) => "undecodable_record",
            RejectReason::Illegal(_) => "illegal_move",
            RejectReason::Unfinished => "unfinished_game",
            RejectReason::SearchStats(_) => "inconsistent_search_stats",
            RejectReason::RevisionNotAccepted { .. } => "revision_not_accepted",
            RejectReason::UnknownParent { .. } => "unknown_parent",
            RejectReason::NotABranch { .. } => "not_a_branch",
        }
    }
}

/// What a run requires of each game's search statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SearchRequirement {
    /// None may be present (an n-tuple run: expectimax keeps no statistics).
    #[default]
    Absent,
    /// Every move carries the statistics of a search of exactly this many simulations (a
    /// policy-value run learns its policy from them).
    Mcts {
        /// Visits per move sum to this.
        simulations: u32,
        /// Every move also carries the search's improved policy (a Gumbel root); none may when
        /// this is false (a PUCT root, whose target is the visits).
        improved_policy: bool,
    },
}

/// What the server accepts now.
#[derive(Clone, Copy, Debug)]
pub struct UploadRules<'a> {
    /// Revisions whose games are accepted.
    pub accepted_revisions: &'a [u64],
    /// What the search statistics must be.
    pub search: SearchRequirement,
}

/// Where a continuation's parent stands, as the caller found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParentPosition {
    /// The parent's afterstate at the branch step.
    Found(Board),
    /// The parent is not held, or its record has no such step.
    Missing,
}

/// Checks one game: its revision, then a single replay checking every step, the search
/// statistics against `rules`, and that the game ended. A continuation
/// (`entry.origin`) must start from `parent` (its parent's afterstate at the branch step) plus
/// one spawn.
pub fn verify_game(
    entry: &BatchEntry,
    rules: &UploadRules<'_>,
    parent: Option<ParentPosition>,
) -> Result<Verified, RejectReason> {
    if !rules.accepted_revisions.contains(&entry.revision) {
        return Err(RejectReason::RevisionNotAccepted {
            revision: entry.revision,
            accepted: rules.accepted_revisions.to_vec(),
        });
    }
    let record = entry.record.as_ref().map_err(|e| RejectReason::Undecodable(e.to_string()))?;
    let continuation = match entry.origin {
        None => false,
        Some(origin) => match parent {
            Some(ParentPosition::Found(afterstate)) => {
                if !is_branch_of(record.start, afterstate) {
                    return Err(RejectReason::NotABranch {
                        step: origin.step,
                        reason: format!(
                            "its start {} is not the parent's afterstate {} with one new 2 or 4",
                            record.start.to_hex(),
                            afterstate.to_hex()
                        ),
                    });
                }
                true
            }
            Some(ParentPosition::Missing) | None => {
                return Err(RejectReason::UnknownParent { parent: origin.parent });
            }
        },
    };
    let simulations = check_statistics_present(record, rules.search)?;
    let summary = replay_checked(record, continuation, simulations)?;
    if !summary.game_over {
        return Err(RejectReason::Unfinished);
    }
    Ok(Verified { summary })
}

/// The simulations each step's statistics must sum to, after checking that statistics are
/// present exactly when the run needs them.
fn check_statistics_present(
    record: &GameRecord,
    search: SearchRequirement,
) -> Result<Option<u32>, RejectReason> {
    match search {
        SearchRequirement::Absent if record.search.is_empty() => Ok(None),
        SearchRequirement::Absent => Err(RejectReason::SearchStats(
            "this run trains an n-tuple network and takes no search statistics".into(),
        )),
        SearchRequirement::Mcts { .. } if record.search.is_empty() && !record.steps.is_empty() => {
            Err(RejectReason::SearchStats(
                "this run trains on tree-search statistics and the game has none".into(),
            ))
        }
        SearchRequirement::Mcts { simulations, improved_policy } => {
            if record.search.len() != record.steps.len() {
                return Err(RejectReason::SearchStats(format!(
                    "search statistics for {} of {} steps",
                    record.search.len(),
                    record.steps.len()
                )));
            }
            if let Some(step) = record.mixed_policy_step() {
                return Err(RejectReason::SearchStats(format!(
                    "step {step}: an improved policy for some steps but not this one"
                )));
            }
            match (improved_policy, record.search.first().is_some_and(|s| s.policy.is_some())) {
                (true, false) if !record.steps.is_empty() => Err(RejectReason::SearchStats(
                    "this run's Gumbel root search records an improved policy at every move and the game has none"
                        .into(),
                )),
                (false, true) => Err(RejectReason::SearchStats(
                    "this run's PUCT search learns from visits and takes no improved policy".into(),
                )),
                _ => Ok(Some(simulations)),
            }
        }
    }
}

fn replay_checked(
    record: &GameRecord,
    continuation: bool,
    simulations: Option<u32>,
) -> Result<ReplaySummary, RejectReason> {
    let illegal = |e: zero2048_game::ReplayError| RejectReason::Illegal(e.to_string());
    if record.steps.is_empty() && !continuation {
        record.replay().map_err(illegal)?;
    }
    let steps = if continuation { record.continuation_steps() } else { record.replay_steps() };
    let mut board = record.start;
    let mut score = 0u64;
    for (index, step) in steps.enumerate() {
        let step = step.map_err(illegal)?;
        if let Some(simulations) = simulations {
            record.search[index]
                .check(index, step.before, step.direction, simulations)
                .map_err(|e| RejectReason::SearchStats(e.to_string()))?;
        }
        score += step.reward as u64;
        board = step.after;
    }
    Ok(ReplaySummary {
        final_board: board,
        score,
        moves: record.steps.len() as u32,
        max_tile: board.max_tile(),
        game_over: board.is_game_over(),
    })
}
