//! Taking games in from workers: the one path by which an uploaded game reaches the learner. Every
//! game is replayed once and checked before it is stored; a continuation is checked against its
//! parent (earlier in the same batch, or already stored); a known UUID is a duplicate (an
//! idempotent retry), never an error.

use std::collections::HashMap;

use zero2048_game::ReplaySummary;
use zero2048_protocol::{
    BatchEntry, Origin, ParentPosition, Rejection, UploadReply, UploadRules, verify_game,
};

use crate::db::{DbError, NewGame, RunDb};

/// A game's verdict before storage: its canonical bytes and replay, or why it is refused.
pub type Checked = Result<(Vec<u8>, ReplaySummary), Rejection>;

/// Where a stored parent game stands at a branch step (`Missing` if not held or too short).
pub fn stored_parent(db: &RunDb, origin: &Origin) -> Result<ParentPosition, DbError> {
    let Some(parent) = db.game_by_uuid(origin.parent.as_bytes())? else { return Ok(ParentPosition::Missing) };
    let Ok(record) = zero2048_game::GameRecord::decode(&parent.record) else {
        return Ok(ParentPosition::Missing);
    };
    Ok(record
        .afterstate_at(origin.step as usize, parent.origin.is_some())
        .map_or(ParentPosition::Missing, ParentPosition::Found))
}

/// Replays and checks every game of a batch against `rules`. A continuation's parent is looked
/// up in the batch first (it must have passed), then with `stored` (the database).
pub fn check_batch(
    entries: &[BatchEntry],
    rules: &UploadRules<'_>,
    stored: &mut dyn FnMut(&Origin) -> Result<ParentPosition, DbError>,
) -> Result<Vec<Checked>, DbError> {
    let position: HashMap<_, _> = entries.iter().enumerate().map(|(i, e)| (e.uuid, i)).collect();
    let mut verdicts: Vec<Option<Checked>> = vec![None; entries.len()];
    // Parents before their continuations, however the batch is ordered.
    loop {
        let mut progress = false;
        for (i, entry) in entries.iter().enumerate() {
            if verdicts[i].is_some() {
                continue;
            }
            let parent = match &entry.origin {
                None => None,
                Some(origin) => match position.get(&origin.parent) {
                    Some(&j) if j != i => match &verdicts[j] {
                        None => continue,
                        Some(Err(_)) => Some(ParentPosition::Missing),
                        Some(Ok(_)) => Some(
                            entries[j]
                                .record
                                .as_ref()
                                .ok()
                                .and_then(|r| {
                                    r.afterstate_at(origin.step as usize, entries[j].origin.is_some())
                                })
                                .map_or(ParentPosition::Missing, ParentPosition::Found),
                        ),
                    },
                    _ => Some(stored(origin)?),
                },
            };
            verdicts[i] = Some(check_one(entry, rules, parent));
            progress = true;
        }
        if !progress {
            break;
        }
    }
    Ok(entries
        .iter()
        .zip(verdicts)
        .map(|(entry, verdict)| {
            // Only a cycle of continuations is left undecided: none of them has a real parent.
            verdict.unwrap_or_else(|| check_one(entry, rules, Some(ParentPosition::Missing)))
        })
        .collect())
}

fn check_one(entry: &BatchEntry, rules: &UploadRules<'_>, parent: Option<ParentPosition>) -> Checked {
    let rejection = |code: &str, reason: String| Rejection { uuid: entry.uuid, code: code.into(), reason };
    let verified = verify_game(entry, rules, parent).map_err(|r| rejection(r.code(), r.to_string()))?;
    let record = entry.record.as_ref().map_err(|e| rejection("undecodable_record", e.to_string()))?;
    let bytes = record.encode().map_err(|e| rejection("undecodable_record", e.to_string()))?;
    Ok((bytes, verified.summary))
}

/// Stores the checked games of a batch from `worker`, queued for the learner. A UUID already
/// stored is a duplicate whatever its verdict now (an idempotent retry may arrive after its
/// revision left the accepted window). When this returns `Ok`, every game listed as accepted or
/// duplicate is committed.
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
                    origin: entries[i].origin.map(|o| (*o.parent.as_bytes(), o.step)),
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
        db.insert_games(worker, &fresh_games, reply.rejected.len() as u64, last_rejection.as_deref(), true)?;
    for (i, new) in fresh_index.into_iter().zip(fresh) {
        if new {
            reply.accepted.push(entries[i].uuid);
        } else {
            reply.duplicates.push(entries[i].uuid);
        }
    }
    Ok(reply)
}

/// Verifies and stores a batch from `worker`: [`check_batch`] (parents looked up in `db`) then
/// [`store_checked`].
pub fn ingest(
    db: &mut RunDb,
    worker: &str,
    entries: &[BatchEntry],
    rules: &UploadRules<'_>,
) -> Result<UploadReply, DbError> {
    let checked = check_batch(entries, rules, &mut |origin| stored_parent(db, origin))?;
    store_checked(db, worker, entries, checked)
}
