//! Taking games in: the one path by which a game reaches the learner, whether it was played in
//! this process or uploaded by a remote worker. Every game is replayed and checked before it is
//! stored; a known UUID is a duplicate (an idempotent retry), never an error.

use zero2048_game::ReplaySummary;
use zero2048_protocol::{
    BatchEntry, Rejection, SearchRequirement, UploadReply, verify_search, verify_upload,
};

use crate::db::{DbError, NewGame, RunDb};

/// The revisions whose games are accepted while `current` is the latest: the last `window`
/// revisions (revision 0, the untrained start of a run, counts as one).
pub fn accepted_revisions(current: u64, window: u64) -> Vec<u64> {
    (current.saturating_sub(window.max(1) - 1)..=current).collect()
}

/// A game's verdict before storage: its canonical bytes and replay, or why it is refused.
pub type Checked = Result<(Vec<u8>, ReplaySummary), Rejection>;

/// Replays and checks every game of a batch, and its search statistics against what the run
/// requires (no database involved, so it can run on any thread).
pub fn check_batch(
    entries: &[BatchEntry],
    accepted_revisions: &[u64],
    search: SearchRequirement,
) -> Vec<Checked> {
    entries
        .iter()
        .map(|entry| {
            let rejection =
                |code: &str, reason: String| Rejection { uuid: entry.uuid, code: code.into(), reason };
            let verified = verify_upload(entry, accepted_revisions)
                .map_err(|reason| rejection(reason.code(), reason.to_string()))?;
            let record = entry.record.as_ref().map_err(|e| rejection("undecodable_record", e.to_string()))?;
            verify_search(record, search).map_err(|reason| rejection(reason.code(), reason.to_string()))?;
            let bytes = record.encode().map_err(|e| rejection("undecodable_record", e.to_string()))?;
            Ok((bytes, verified.summary))
        })
        .collect()
}

/// Stores the checked games of a batch from `worker`. A UUID already stored is a duplicate
/// whatever its verdict now (an idempotent retry may arrive after its revision left the accepted
/// window). When this returns `Ok`, every game listed as accepted or duplicate is committed.
pub fn store_checked(
    db: &mut RunDb,
    worker: &str,
    entries: &[BatchEntry],
    checked: Vec<Checked>,
) -> Result<UploadReply, DbError> {
    let uuids: Vec<[u8; 16]> = entries.iter().map(|e| *e.uuid.as_bytes()).collect();
    let known = db.known_games(&uuids)?;
    let mut reply = UploadReply::default();
    let mut fresh_games = Vec::with_capacity(entries.len());
    let mut fresh_index = Vec::with_capacity(entries.len());
    for (i, verdict) in checked.iter().enumerate() {
        if known[i] {
            reply.duplicates.push(entries[i].uuid);
            continue;
        }
        match verdict {
            Ok((bytes, summary)) => {
                fresh_index.push(i);
                fresh_games.push(NewGame {
                    uuid: uuids[i],
                    revision: entries[i].revision,
                    score: summary.score,
                    moves: summary.moves,
                    max_tile: summary.max_tile,
                    record: bytes,
                });
            }
            Err(rejection) => reply.rejected.push(rejection.clone()),
        }
    }
    let last_rejection = reply.rejected.last().map(|r| r.reason.clone());
    if fresh_games.is_empty() {
        if let Some(reason) = &last_rejection {
            db.record_rejections(worker, reply.rejected.len() as u64, reason)?;
        }
        return Ok(reply);
    }
    let fresh =
        db.insert_games(worker, &fresh_games, reply.rejected.len() as u64, last_rejection.as_deref())?;
    for (i, new) in fresh_index.into_iter().zip(fresh) {
        if new {
            reply.accepted.push(entries[i].uuid);
        } else {
            reply.duplicates.push(entries[i].uuid);
        }
    }
    Ok(reply)
}

/// Verifies and stores a batch from `worker`: [`check_batch`] then [`store_checked`].
pub fn ingest(
    db: &mut RunDb,
    worker: &str,
    entries: &[BatchEntry],
    accepted_revisions: &[u64],
    search: SearchRequirement,
) -> Result<UploadReply, DbError> {
    let checked = check_batch(entries, accepted_revisions, search);
    store_checked(db, worker, entries, checked)
}
