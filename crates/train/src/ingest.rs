//! Taking games in: the one path by which a game reaches the learner, whether it was played in
//! this process or uploaded by a remote worker. Every game is replayed and checked before it is
//! stored; a known UUID is a duplicate (an idempotent retry), never an error.

use zero2048_protocol::{BatchEntry, Rejection, UploadReply, verify_upload};

use crate::db::{DbError, NewGame, RunDb};

/// The revisions whose games are accepted while `current` is the latest: the last `window`
/// revisions (revision 0, the untrained start of a run, counts as one).
pub fn accepted_revisions(current: u64, window: u64) -> Vec<u64> {
    (current.saturating_sub(window.max(1) - 1)..=current).collect()
}

/// Verifies and stores a batch from `worker`. When this returns `Ok`, every game listed as
/// accepted or duplicate is committed to the database.
pub fn ingest(
    db: &mut RunDb,
    worker: &str,
    entries: &[BatchEntry],
    accepted_revisions: &[u64],
) -> Result<UploadReply, DbError> {
    let uuids: Vec<[u8; 16]> = entries.iter().map(|e| *e.uuid.as_bytes()).collect();
    let known = db.known_games(&uuids)?;
    let mut reply = UploadReply::default();
    let mut encoded: Vec<(usize, Vec<u8>, zero2048_game::ReplaySummary)> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        if known[i] {
            reply.duplicates.push(entry.uuid);
            continue;
        }
        match verify_upload(entry, accepted_revisions) {
            Ok(verified) => {
                let record = entry.record.as_ref().expect("verified records decode");
                match record.encode() {
                    Ok(bytes) => encoded.push((i, bytes, verified.summary)),
                    Err(e) => reply.rejected.push(Rejection {
                        uuid: entry.uuid,
                        code: "undecodable_record".into(),
                        reason: e.to_string(),
                    }),
                }
            }
            Err(reason) => reply.rejected.push(Rejection {
                uuid: entry.uuid,
                code: reason.code().to_string(),
                reason: reason.to_string(),
            }),
        }
    }
    let games: Vec<NewGame<'_>> = encoded
        .iter()
        .map(|(i, bytes, summary)| NewGame {
            uuid: uuids[*i],
            revision: entries[*i].revision,
            score: summary.score,
            moves: summary.moves,
            max_tile: summary.max_tile,
            record: bytes,
        })
        .collect();
    let last_rejection = reply.rejected.last().map(|r| r.reason.clone());
    if games.is_empty() {
        if let Some(reason) = &last_rejection {
            db.record_rejections(worker, reply.rejected.len() as u64, reason)?;
        }
        return Ok(reply);
    }
    let fresh = db.insert_games(worker, &games, reply.rejected.len() as u64, last_rejection.as_deref())?;
    for ((i, _, _), new) in encoded.iter().zip(fresh) {
        if new {
            reply.accepted.push(entries[*i].uuid);
        } else {
            reply.duplicates.push(entries[*i].uuid);
        }
    }
    Ok(reply)
}
