//! The server's check of one uploaded game.

use zero2048_game::ReplaySummary;

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
    /// The worker's claims disagree with the replay.
    #[error("claimed {field} {claimed} but the replay gives {actual}")]
    ClaimsMismatch {
        /// Which claim.
        field: &'static str,
        /// What the worker said.
        claimed: u64,
        /// What the replay gives.
        actual: u64,
    },
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
}

impl RejectReason {
    /// The machine-readable code of the reason.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::Undecodable(_) => "undecodable_record",
            RejectReason::Illegal(_) => "illegal_move",
            RejectReason::Unfinished => "unfinished_game",
            RejectReason::ClaimsMismatch { .. } => "claims_mismatch",
            RejectReason::SearchStats(_) => "inconsistent_search_stats",
            RejectReason::RevisionNotAccepted { .. } => "revision_not_accepted",
        }
    }
}

/// Replays the game and checks the worker's claims and revision.
pub fn verify_upload(entry: &BatchEntry, accepted_revisions: &[u64]) -> Result<Verified, RejectReason> {
    if !accepted_revisions.contains(&entry.revision) {
        return Err(RejectReason::RevisionNotAccepted {
            revision: entry.revision,
            accepted: accepted_revisions.to_vec(),
        });
    }
    let record = entry.record.as_ref().map_err(|e| RejectReason::Undecodable(e.to_string()))?;
    let summary = record.replay().map_err(|e| RejectReason::Illegal(e.to_string()))?;
    if !summary.game_over {
        return Err(RejectReason::Unfinished);
    }
    let checks = [
        ("score", entry.claims.score, summary.score),
        ("moves", entry.claims.moves as u64, summary.moves as u64),
        ("largest tile", entry.claims.max_tile as u64, summary.max_tile as u64),
    ];
    for (field, claimed, actual) in checks {
        if claimed != actual {
            return Err(RejectReason::ClaimsMismatch { field, claimed, actual });
        }
    }
    Ok(Verified { summary })
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
    },
}

/// Checks a replayed game's search statistics against the run's requirement.
pub fn verify_search(
    record: &zero2048_game::GameRecord,
    requirement: SearchRequirement,
) -> Result<(), RejectReason> {
    match requirement {
        SearchRequirement::Absent if record.search.is_empty() => Ok(()),
        SearchRequirement::Absent => Err(RejectReason::SearchStats(
            "this run trains an n-tuple network and takes no search statistics".into(),
        )),
        SearchRequirement::Mcts { .. } if record.search.is_empty() && !record.steps.is_empty() => {
            Err(RejectReason::SearchStats(
                "this run trains on tree-search statistics and the game has none".into(),
            ))
        }
        SearchRequirement::Mcts { simulations } => {
            record.check_search(simulations).map_err(|e| RejectReason::SearchStats(e.to_string()))
        }
    }
}
