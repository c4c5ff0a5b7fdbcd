//! The JSON bodies of the protocol.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The server's answer to `POST /api/v1/games`. A worker deletes from its spool exactly the games
/// listed in `accepted` and `duplicates` (both are safely stored), and sets `rejected` aside.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadReply {
    /// Newly stored games.
    pub accepted: Vec<Uuid>,
    /// Games the server already had (a retried upload).
    pub duplicates: Vec<Uuid>,
    /// Games refused, with the reason.
    pub rejected: Vec<Rejection>,
    /// The server's latest revision when it answered.
    pub revision: u64,
}

/// A refused game.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The game.
    pub uuid: Uuid,
    /// A machine-readable reason (`illegal_move`, `claims_mismatch`, …).
    pub code: String,
    /// What was wrong, for people.
    pub reason: String,
}

/// Every 4xx and 5xx body: `{"error": "...", "code": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What was wrong, for people.
    pub error: String,
    /// A machine-readable code (`unauthorized`, `body_too_large`, …).
    pub code: String,
}
