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
