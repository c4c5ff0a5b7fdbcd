//! Taking games in from workers: the one path by which an uploaded game reaches the learner. Every
//! game is replayed once and checked before it is stored; a continuation is checked against its
//! parent (earlier in the same batch, or already stored); a known UUID is a duplicate (an
//! idempotent retry), never an error.

use std::collections::HashMap;

use zero2048_game::ReplaySummary;
use zero2048_protocol::{
    BatchEntry, Origin, ParentPosition, Rejection, UploadReply, UploadRules, verify_game,
};

use crate::db::{DbError, NewChunk, NewGame, RunDb};

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

/// A checked batch, split into what to store and what to answer, before anything is stored.
pub struct Prepared<'a> {
    /// The games to store (their UUIDs were not stored when looked up).
    pub games: Vec<NewGame<'a>>,
    fresh_index: Vec<usize>,
    reply: UploadReply,
}

/// Looks the batch's UUIDs up and sorts its games into new ones, duplicates and refusals. A UUID
/// already stored is a duplicate whatever its verdict now (an idempotent retry may arrive after
/// its revision left the accepted window).
pub fn prepare<'a>(
    db: &RunDb,
    entries: &[BatchEntry],
    checked: &'a [Checked],
) -> Result<Prepared<'a>, DbError> {
    let uuids: Vec<[u8; 16]> = entries.iter().map(|e| *e.uuid.as_bytes()).collect();
    let known = db.known_games(&uuids)?;
    let mut reply = UploadReply::default();
    let mut games = Vec::with_capacity(entries.len());
    let mut fresh_index = Vec::with_capacity(entries.len());
    for (i, verdict) in checked.iter().enumerate() {
        if known[i] {
            reply.duplicates.push(entries[i].uuid);
            continue;
        }
        match verdict {
            Ok((bytes, summary)) => {
                fresh_index.push(i);
                games.push(NewGame {
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
    Ok(Prepared { games, fresh_index, reply })
}

/// Stores a prepared batch from `worker`, queued for the learner, its records in `chunk` when
/// given (written beforehand with [`GameShelf::write`](crate::db::GameShelf::write), so the
/// write need not hold the database), else as [`RunDb::insert_games`] does. When this returns
/// `Ok`, every game listed as accepted or duplicate is committed.
pub fn commit_prepared(
    db: &mut RunDb,
    worker: &str,
    entries: &[BatchEntry],
    prepared: Prepared<'_>,
    chunk: Option<&NewChunk>,
) -> Result<UploadReply, DbError> {
    let Prepared { games, fresh_index, mut reply } = prepared;
    let last_rejection = reply.rejected.last().map(|r| r.reason.clone());
    if games.is_empty() {
        if let Some(reason) = &last_rejection {
            db.record_rejections(worker, reply.rejected.len() as u64, reason)?;
        }
        return Ok(reply);
    }
    let rejected = reply.rejected.len() as u64;
    let fresh = match chunk {
        Some(chunk) => {
            db.insert_games_in_chunk(worker, &games, rejected, last_rejection.as_deref(), true, chunk)?
        }
        None => db.insert_games(worker, &games, rejected, last_rejection.as_deref(), true)?,
    };
    for (i, new) in fresh_index.into_iter().zip(fresh) {
        if new {
            reply.accepted.push(entries[i].uuid);
        } else {
            reply.duplicates.push(entries[i].uuid);
        }
    }
    Ok(reply)
}

/// Stores the checked games of a batch from `worker`, queued for the learner ([`prepare`], then
/// [`commit_prepared`], the chunk written in between).
pub fn store_checked(
    db: &mut RunDb,
    worker: &str,
    entries: &[BatchEntry],
    checked: Vec<Checked>,
) -> Result<UploadReply, DbError> {
    let prepared = prepare(db, entries, &checked)?;
    commit_prepared(db, worker, entries, prepared, None)
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
