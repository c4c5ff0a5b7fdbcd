//! Publishing a revision, and which revisions' games the server accepts: the two policies a
//! revision changes, in one place.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use time::OffsetDateTime;
use zero2048_protocol::RunSpec;
use zero2048_storage::{LatestInfo, StorageAdapter, WeightsData};

use crate::config::TrainConfig;
use crate::db::{Counters, RevisionRow, RunDb};
use crate::live::LiveState;
use crate::run::TrainError;

/// Which revisions' games are accepted while a revision is the latest: the last `window`
/// revisions (revision 0, the untrained start of a run, counts as one), and every revision
/// superseded less than `grace` ago, so a fleet's games in flight are not thrown away when
/// revisions come quickly.
#[derive(Clone, Copy, Debug)]
pub struct Acceptance {
    /// Revisions always accepted, counting the latest.
    pub window: u64,
    /// How long a superseded revision stays accepted.
    pub grace: time::Duration,
}

impl Acceptance {
    /// The run's policy.
    pub fn of(config: &TrainConfig) -> Acceptance {
        Acceptance {
            window: config.accepted_revisions_window.max(1),
            grace: time::Duration::seconds(config.accepted_revisions_seconds as i64),
        }
    }

    /// The revisions accepted while `current` is the latest, at `now`; `published(r)` is when
    /// revision `r` was published (a revision is superseded when the next one is, and the one
    /// `current` replaces counts as superseded `now`).
    pub fn accepted(
        &self,
        current: u64,
        now: OffsetDateTime,
        published: impl Fn(u64) -> Option<OffsetDateTime>,
    ) -> Vec<u64> {
        let mut accepted: Vec<u64> = (current.saturating_sub(self.window - 1)..=current).collect();
        for revision in (0..current).rev().take(1000) {
            if accepted.contains(&revision) {
                continue;
            }
            let superseded = if revision + 1 == current { Some(now) } else { published(revision + 1) };
            match superseded {
                Some(at) if now - at <= self.grace => accepted.push(revision),
                _ => break,
            }
        }
        accepted.sort_unstable();
        accepted
    }

    /// [`Acceptance::accepted`] with the publication times of the run database.
    pub fn accepted_now(&self, db: &RunDb, current: u64) -> Result<Vec<u64>, TrainError> {
        let rows = db.revisions()?;
        let published = |revision: u64| {
            rows.iter().find(|r| r.revision == revision).and_then(|r| {
                OffsetDateTime::parse(&r.published_at, &time::format_description::well_known::Rfc3339).ok()
            })
        };
        Ok(self.accepted(current, OffsetDateTime::now_utc(), published))
    }
}

/// What publishing a revision needs besides the weights.
pub struct Publisher {
    /// Storage.
    pub adapter: Arc<StorageAdapter>,
    /// For the async storage calls.
    pub runtime: tokio::runtime::Handle,
    /// The acceptance policy.
    pub acceptance: Acceptance,
    /// How long each latest record stays valid.
    pub deadline: time::Duration,
}

/// The database's row for the revision `latest` names, with the totals `counters` hold.
pub(crate) fn revision_row(latest: &LatestInfo, counters: &Counters) -> RevisionRow {
    RevisionRow {
        revision: latest.revision,
        file: latest.weights_file.clone(),
        sha256: latest.weights_sha256.clone(),
        size: latest.weights_size,
        games: counters.games,
        moves: counters.moves,
        published_at: latest
            .published_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    }
}

impl Publisher {
    /// Publishes `revision`: `save` writes the weights (with `metadata`) to a staging path in the
    /// weights directory, storage stores and uploads them and points the latest record at them
    /// (with `spec`, whose accepted revisions this fills in), then the database records the
    /// revision with `counters`, and `live` shows it.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &self,
        db: &mut RunDb,
        live: &LiveState,
        revision: u64,
        counters: &Counters,
        mut spec: RunSpec,
        metadata: &BTreeMap<String, String>,
        save: impl FnOnce(&Path, &BTreeMap<String, String>) -> Result<(), TrainError>,
    ) -> Result<RevisionRow, TrainError> {
        let accepted = self.acceptance.accepted_now(db, revision)?;
        spec.accepted_revisions = accepted.clone();
        let staging = self.adapter.local().staging_path(revision);
        save(staging.path(), metadata)?;
        let deadline = OffsetDateTime::now_utc() + self.deadline;
        let latest = self.runtime.block_on(self.adapter.publish(
            WeightsData::File(staging.path().to_path_buf()),
            revision,
            deadline,
            &spec.to_json_map(),
        ))?;
        drop(staging);
        let row = revision_row(&latest, counters);
        db.record_revision(&row, &Counters { revision, ..*counters })?;
        crate::live::share_accepted(db, live, accepted)?;
        live.revision.store(revision, Ordering::Relaxed);
        live.set_latest(latest);
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_and_the_grace_period_decide() {
        let policy = Acceptance { window: 3, grace: time::Duration::seconds(900) };
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(1);
        let long_ago = |_| Some(now - time::Duration::hours(5));
        assert_eq!(policy.accepted(1, now, long_ago), vec![0, 1]);
        // Revision 10 replaces 9 now: 8, 9, 10 by the window, and nothing older (its successors
        // were published long ago).
        assert_eq!(policy.accepted(10, now, long_ago), vec![8, 9, 10]);
        // Revisions published a minute apart: every revision superseded in the last 15 minutes.
        let recent = |r: u64| Some(now - time::Duration::minutes(10 - r as i64));
        assert_eq!(policy.accepted(10, now, recent), (0..=10).collect::<Vec<_>>());
        // Grace stops at the first revision superseded too long ago.
        let gap = |r: u64| if r >= 6 { Some(now - time::Duration::minutes(1)) } else { None };
        assert_eq!(policy.accepted(10, now, gap), vec![5, 6, 7, 8, 9, 10]);
    }

    #[test]
    fn a_window_of_one_keeps_only_the_latest_and_the_one_just_replaced() {
        let policy = Acceptance { window: 1, grace: time::Duration::seconds(900) };
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(1);
        assert_eq!(policy.accepted(4, now, |_| None), vec![3, 4]);
        let strict = Acceptance { window: 1, grace: time::Duration::ZERO };
        assert_eq!(strict.accepted(4, now, |_| None), vec![3, 4], "superseded this instant");
    }
}
