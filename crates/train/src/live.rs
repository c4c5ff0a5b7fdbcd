//! What a running run shares with the threads around it (the server's handlers, the playing and
//! learning threads, the recorder): lock-free counters and the latest snapshots.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde::Serialize;
use zero2048_protocol::{RunSpec, SearchRequirement};
use zero2048_storage::LatestInfo;

use crate::config::TrainConfig;
use crate::db::{Counters, DbError, EvaluationRow, RunDb};
use zero2048_protocol::ModelKind;

/// A snapshot for progress displays.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Progress {
    /// Games learned, whole run.
    pub games: u64,
    /// Moves learned, whole run.
    pub moves: u64,
    /// Games learned this session.
    pub session_games: u64,
    /// Last published revision.
    pub revision: u64,
    /// Learned moves per second this session.
    pub moves_per_second: f64,
    /// Learned games per second this session.
    pub games_per_second: f64,
    /// Games stored but not learned yet.
    pub backlog: u64,
    /// Mean score of the last 1000 games learned that were played from the start (a restart's
    /// continuation scores from its branch point and keeps its parent's tiles: it says nothing of
    /// how well a whole game is played).
    pub recent_mean_score: f64,
    /// Share of those that reached 2048.
    pub recent_2048_rate: f64,
    /// Games until the next revision (by count).
    pub games_to_next_revision: u64,
    /// The latest evaluation.
    pub last_evaluation: Option<EvaluationRow>,
    /// Seconds this session.
    pub elapsed_seconds: f64,
    /// What the run is doing now, when it is not simply learning (`evaluating revision 12`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity: Option<String>,
}

/// The run's totals, counted by every thread that learns.
#[derive(Debug, Default)]
pub struct Totals {
    /// Games learned, whole run.
    pub games: AtomicU64,
    /// Moves learned, whole run.
    pub moves: AtomicU64,
    /// Sum of the learned games' scores.
    pub score_sum: AtomicU64,
    /// Games learned this session.
    pub session_games: AtomicU64,
    /// Moves learned this session.
    pub session_moves: AtomicU64,
    recent: Mutex<VecDeque<(u64, u32)>>,
}

impl Totals {
    /// Starts from a run's stored counters.
    pub fn from_counters(counters: &Counters) -> Totals {
        let totals = Totals::default();
        totals.games.store(counters.games, Ordering::Relaxed);
        totals.moves.store(counters.moves, Ordering::Relaxed);
        totals.score_sum.store(counters.score_sum, Ordering::Relaxed);
        totals
    }

    /// Counts one learned game; `continuation`: it started from another game's position, so it
    /// counts as learned but stays out of the recent games' mean and 2048 rate.
    pub fn add_game(&self, moves: u32, score: u64, max_tile: u32, continuation: bool) {
        self.games.fetch_add(1, Ordering::Relaxed);
        self.moves.fetch_add(moves as u64, Ordering::Relaxed);
        self.score_sum.fetch_add(score, Ordering::Relaxed);
        self.session_games.fetch_add(1, Ordering::Relaxed);
        self.session_moves.fetch_add(moves as u64, Ordering::Relaxed);
        if continuation {
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == 1000 {
            recent.pop_front();
        }
        recent.push_back((score, max_tile));
    }

    /// Mean score and 2048 rate of the last 1000 games learned that were played from the start.
    pub fn recent(&self) -> (f64, f64) {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let n = recent.len().max(1) as f64;
        (
            recent.iter().map(|r| r.0 as f64).sum::<f64>() / n,
            recent.iter().filter(|r| r.1 >= 2048).count() as f64 / n,
        )
    }
}

/// See the module documentation.
#[derive(Default)]
pub struct LiveState {
    /// The latest published revision.
    pub revision: AtomicU64,
    /// The id of the last queued game learned.
    pub learned_through: AtomicU64,
    /// The id of the last game stored (as far as the writers report it).
    pub stored_through: AtomicU64,
    /// The id of the last game stored for the learner's queue.
    pub queued_through: AtomicU64,
    /// The run's totals.
    pub totals: Totals,
    latest: Mutex<Option<LatestInfo>>,
    progress: Mutex<Progress>,
    accepted: Mutex<Vec<u64>>,
    /// Simulations every uploaded move's statistics must sum to; 0 when games carry none.
    pub(crate) search_simulations: AtomicU32,
    /// Whether the run's search records an improved policy (a Gumbel root).
    pub(crate) search_improved_policy: std::sync::atomic::AtomicBool,
    /// Woken when games are queued for the learner, or a revision is due, so the loop never polls.
    queued: Condvar,
    queued_lock: Mutex<()>,
    /// Games learned (in the whole run) at which the next revision is due.
    revision_due_at: AtomicU64,
}

/// The database setting through which the learner tells API servers which revisions' games
/// are accepted (`1,2,3`).
const ACCEPTED_SETTING: &str = "accepted_revisions";

/// Sets the accepted revisions here and in the database, for API servers of their own.
pub(crate) fn share_accepted(db: &RunDb, live: &LiveState, accepted: Vec<u64>) -> Result<(), DbError> {
    let text: Vec<String> = accepted.iter().map(u64::to_string).collect();
    db.set_setting(ACCEPTED_SETTING, &text.join(","))?;
    live.set_accepted(accepted);
    Ok(())
}

impl LiveState {
    /// A run's state before anything is known but its configuration (what uploaded games'
    /// search statistics must be).
    pub fn for_run(config: &TrainConfig) -> LiveState {
        let live = LiveState::default();
        if config.model == ModelKind::PolicyValue {
            live.search_simulations.store(config.mcts.simulations, Ordering::Relaxed);
            live.search_improved_policy
                .store(config.mcts.root == zero2048_search::RootRule::Gumbel, Ordering::Relaxed);
        }
        live
    }

    /// Reads what the learner shares through the database (an API server's view of the run):
    /// the accepted revisions, the latest revision and the totals of the last revision.
    pub fn follow(&self, db: &RunDb) -> Result<(), DbError> {
        if let Some(text) = db.setting(ACCEPTED_SETTING)? {
            let accepted = text
                .split(',')
                .filter(|t| !t.is_empty())
                .map(|t| {
                    t.parse::<u64>().map_err(|_| DbError::Corrupt {
                        what: format!("setting `{ACCEPTED_SETTING}`"),
                        value: text.clone(),
                        expected: "revisions separated by commas",
                    })
                })
                .collect::<Result<Vec<u64>, DbError>>()?;
            self.set_accepted(accepted);
        }
        let counters = db.counters()?;
        self.revision.store(counters.revision, Ordering::Relaxed);
        self.learned_through.store(counters.learned_through, Ordering::Relaxed);
        self.totals.games.store(counters.games, Ordering::Relaxed);
        self.totals.moves.store(counters.moves, Ordering::Relaxed);
        self.totals.score_sum.store(counters.score_sum, Ordering::Relaxed);
        // The status page's totals, as of the learner's last revision (its rates are its own).
        let mut progress = self.progress();
        (progress.games, progress.moves, progress.revision) =
            (counters.games, counters.moves, counters.revision);
        self.set_progress(&progress);
        Ok(())
    }

    /// The latest record, as last published.
    pub fn latest(&self) -> Option<LatestInfo> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the latest record (after a publication or a refresh of its URL).
    pub fn set_latest(&self, latest: LatestInfo) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(latest);
    }

    /// The run part of the latest record, typed (`None` before the first revision, or if the
    /// record was written by a build without one).
    pub fn latest_spec(&self) -> Option<RunSpec> {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest.as_ref().and_then(|l| serde_json::from_value(serde_json::Value::Object(l.extra.clone())).ok())
    }

    /// The revisions whose games are accepted now.
    pub fn accepted(&self) -> Vec<u64> {
        let accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if accepted.is_empty() { vec![self.revision.load(Ordering::Relaxed)] } else { accepted }
    }

    /// What uploaded games' search statistics must be.
    pub fn search_requirement(&self) -> SearchRequirement {
        match self.search_simulations.load(Ordering::Relaxed) {
            0 => SearchRequirement::Absent,
            simulations => SearchRequirement::Mcts {
                simulations,
                improved_policy: self.search_improved_policy.load(Ordering::Relaxed),
            },
        }
    }

    pub(crate) fn set_accepted(&self, accepted: Vec<u64>) {
        *self.accepted.lock().unwrap_or_else(|e| e.into_inner()) = accepted;
    }

    /// The last progress snapshot.
    pub fn progress(&self) -> Progress {
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_progress(&self, progress: &Progress) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = progress.clone();
    }

    /// Counts one learned game (`continuation`: see [`Totals::add_game`]); wakes the run loop
    /// when it makes a revision due.
    pub fn add_game(&self, moves: u32, score: u64, max_tile: u32, continuation: bool) {
        self.totals.add_game(moves, score, max_tile, continuation);
        if self.totals.games.load(Ordering::Relaxed) >= self.revision_due_at.load(Ordering::Relaxed) {
            let _guard = self.queued_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.queued.notify_all();
        }
    }

    /// The next revision is due once the run has learned `games` games.
    pub(crate) fn set_revision_due_at(&self, games: u64) {
        self.revision_due_at.store(games, Ordering::Relaxed);
    }

    /// Reports games stored through row `id`; `queued`: for the learner's queue (wakes it).
    pub fn stored(&self, id: u64, queued: bool) {
        self.stored_through.fetch_max(id, Ordering::Relaxed);
        if queued {
            self.queued_through.fetch_max(id, Ordering::Relaxed);
            let _guard = self.queued_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.queued.notify_all();
        }
    }

    /// Waits until a game after row `cursor` is queued, a revision is due, or `timeout` passes.
    pub(crate) fn wait_for_games(&self, cursor: u64, timeout: Duration) {
        let guard = self.queued_lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.queued_through.load(Ordering::Relaxed) > cursor
            || self.totals.games.load(Ordering::Relaxed) >= self.revision_due_at.load(Ordering::Relaxed)
        {
            return;
        }
        let _ = self.queued.wait_timeout(guard, timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_are_learned_games_but_not_recent_whole_games() {
        let totals = Totals::default();
        totals.add_game(1_000, 20_000, 2048, false);
        totals.add_game(3_000, 60_000, 4096, false);
        // A continuation from a board that already held 8192: its tiles are its parent's.
        totals.add_game(200, 5_000, 8192, true);
        assert_eq!(totals.games.load(Ordering::Relaxed), 3);
        assert_eq!(totals.moves.load(Ordering::Relaxed), 4_200);
        assert_eq!(totals.recent(), (40_000.0, 1.0));
        totals.add_game(500, 6_000, 512, false);
        assert_eq!(totals.recent(), (86_000.0 / 3.0, 2.0 / 3.0));
    }
}
