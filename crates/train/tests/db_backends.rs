//! The run database's behaviour, the same on both backends: every case runs on a SQLite file and
//! on a real PostgreSQL server (started by the test, see `support/postgres.rs`).

#[path = "support/postgres.rs"]
mod postgres_server;

use zero2048_search::Strength;
use zero2048_storage::ObjectShelf;
use zero2048_train::db::{DatabaseUrl, DbError};
use zero2048_train::db::{GameRetention, GameShelf};
use zero2048_train::{Counters, EvaluationRow, NewGame, RevisionRow, RunDb, ThroughputSample};

/// A test case run on each backend: `sqlite_<case>` and `postgres_<case>`.
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$case(zero2048_train::db::DatabaseUrl::Sqlite(dir.path().join("run.db")));
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $case() {
                    super::$case(zero2048_train::db::DatabaseUrl::parse(&super::postgres_server::new_database()).unwrap());
                }
            )*
        }
    };
}

on_both!(
    games_are_stored_once_and_learned_in_order,
    games_in_chunks_are_stored_once_and_learned_in_order,
    a_chunk_no_row_names_is_swept_once_old_and_nothing_acknowledged_is_lost,
    retention_keeps_recent_revisions_a_sample_and_unlearned_games,
    a_new_database_opened_by_many_at_once_is_migrated_once,
    counters_revisions_and_evaluations_survive_a_reopen,
    revoking_a_token_quarantines_its_machines_only,
    rejections_and_throughput_are_kept,
    a_newer_schema_is_refused,
    concurrent_ingest_keeps_every_game_once,
);

fn game(n: u8, revision: u64, moves: u32) -> ([u8; 16], Vec<u8>, u64, u32) {
    let mut uuid = [0u8; 16];
    uuid[0] = n;
    uuid[15] = 0xA5;
    (uuid, vec![n; 3 + n as usize], revision, moves)
}

fn new_game<'a>(g: &'a ([u8; 16], Vec<u8>, u64, u32)) -> NewGame<'a> {
    NewGame {
        uuid: g.0,
        origin: None,
        revision: g.2,
        score: 100 * g.3 as u64,
        moves: g.3,
        max_tile: 256,
        record: &g.1,
    }
}

fn games_are_stored_once_and_learned_in_order(url: DatabaseUrl) {
    stored_once_and_learned_in_order(RunDb::open(&url).unwrap());
}

/// A shelf of game chunks in `dir`.
fn shelf(dir: &std::path::Path, retention: GameRetention) -> GameShelf {
    GameShelf::new(ObjectShelf::local(dir).unwrap(), None, retention)
}

fn chunk_files(dir: &std::path::Path) -> usize {
    ObjectShelf::local(dir).unwrap().list(std::time::Duration::from_secs(3600)).unwrap().len()
}

fn games_in_chunks_are_stored_once_and_learned_in_order(url: DatabaseUrl) {
    let dir = tempfile::tempdir().unwrap();
    stored_once_and_learned_in_order(
        RunDb::open(&url).unwrap().with_games(shelf(dir.path(), GameRetention::ALL)),
    );
    // The records are in the chunks, not in the rows: without the shelf they cannot be read.
    let bare = RunDb::open(&url).unwrap();
    let error = bare.games_after(0, 1).unwrap_err().to_string();
    assert!(
        error.contains("game 1's record is in chunk") && error.contains("without the games' storage"),
        "{error}"
    );
    // One chunk per stored batch; each has a row.
    let db = RunDb::open(&url).unwrap().with_games(shelf(dir.path(), GameRetention::ALL));
    assert_eq!(db.chunk_totals().unwrap().chunks, 4);
    assert_eq!(chunk_files(dir.path()), 4);
    // A damaged chunk is an error naming it, never a wrong record. (Every chunk is damaged: keys
    // written in the same millisecond do not sort in the order they were written.)
    let keys = ObjectShelf::local(dir.path()).unwrap().list(std::time::Duration::from_secs(3600)).unwrap();
    for key in &keys {
        std::fs::write(dir.path().join(key), b"garbage").unwrap();
    }
    let fresh = RunDb::open(&url).unwrap().with_games(shelf(dir.path(), GameRetention::ALL));
    let error = fresh.games_after(0, 1).unwrap_err().to_string();
    assert!(keys.iter().any(|key| error.contains(key)) && error.contains("does not decompress"), "{error}");
    for key in &keys {
        std::fs::remove_file(dir.path().join(key)).unwrap();
    }
    let error = fresh.games_after(0, 1).unwrap_err().to_string();
    assert!(error.contains("reading a game chunk") && error.contains("not in storage"), "{error}");
}

fn a_chunk_no_row_names_is_swept_once_old_and_nothing_acknowledged_is_lost(url: DatabaseUrl) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = RunDb::open(&url).unwrap().with_games(shelf(dir.path(), GameRetention::ALL));
    let games: Vec<_> = (1..=3).map(|n| game(n, 1, 10)).collect();
    let batch: Vec<NewGame<'_>> = games.iter().map(new_game).collect();
    assert_eq!(db.insert_games("w@m", &batch, 0, None, true).unwrap(), vec![true; 3]);
    // A retry of games already stored writes a chunk (before the database can tell), which no
    // row names: the same state as a process killed between writing a chunk and its commit.
    assert_eq!(db.insert_games("w@m", &batch, 0, None, true).unwrap(), vec![false; 3]);
    assert_eq!((db.chunk_totals().unwrap().chunks, chunk_files(dir.path())), (1, 2));
    // Young objects may be another process's write whose commit is coming: kept.
    assert_eq!(db.sweep_orphan_chunks(zero2048_train::db::ORPHAN_AGE).unwrap(), 0);
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(db.sweep_orphan_chunks(std::time::Duration::ZERO).unwrap(), 1);
    assert_eq!(chunk_files(dir.path()), 1);
    // Every acknowledged game still reads back whole.
    let stored = db.games_after(0, 10).unwrap();
    assert_eq!(
        stored.iter().map(|g| &g.record).collect::<Vec<_>>(),
        games.iter().map(|g| &g.1).collect::<Vec<_>>()
    );
}

fn retention_keeps_recent_revisions_a_sample_and_unlearned_games(url: DatabaseUrl) {
    let dir = tempfile::tempdir().unwrap();
    let retention = GameRetention { keep_revisions: 2, keep_one_in: 3 };
    let mut db = RunDb::open(&url).unwrap().with_games(shelf(dir.path(), retention));
    // Chunk i (ids 1..=12) holds two games of revision i.
    let games: Vec<_> = (1..=24).map(|n| game(n, (n as u64).div_ceil(2), 10)).collect();
    for pair in games.chunks(2) {
        let batch: Vec<NewGame<'_>> = pair.iter().map(new_game).collect();
        db.insert_games("w@m", &batch, 0, None, true).unwrap();
    }
    // Revision 12 is the latest; games through revision 9 are learned (ids up to 18).
    let pruned = db.prune_games(12, 18).unwrap();
    // Kept: revisions 11 and 12 (the newest two), 10 (not learned yet), chunks 3, 6, 9 (the sample).
    let left: Vec<u64> = db.games_page(None, 0, 100).unwrap().iter().map(|g| g.revision).collect();
    assert_eq!(left, vec![3, 3, 6, 6, 9, 9, 10, 10, 11, 11, 12, 12]);
    assert_eq!((pruned.chunks, pruned.games), (6, 12));
    assert_eq!(chunk_files(dir.path()), 6);
    assert_eq!(db.chunk_totals().unwrap().chunks, 6);
    // The rest reads back whole, and a second pass has nothing to do.
    for game in db.games_page(None, 0, 100).unwrap() {
        assert_eq!(game.record, games[game.id as usize - 1].1);
    }
    assert_eq!(db.prune_games(12, 18).unwrap().chunks, 0);
    // Keeping every revision (the default) prunes nothing.
    let mut keep_all = RunDb::open(&url).unwrap().with_games(shelf(dir.path(), GameRetention::ALL));
    assert_eq!(keep_all.prune_games(100, 1000).unwrap().chunks, 0);
}

/// A learner and its API servers starting together on a new database.
fn a_new_database_opened_by_many_at_once_is_migrated_once(url: DatabaseUrl) {
    let opened: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || RunDb::open(&url).and_then(|db| db.game_count()))
        })
        .collect();
    for open in opened {
        assert_eq!(open.join().unwrap().unwrap(), 0);
    }
}

fn stored_once_and_learned_in_order(mut db: RunDb) {
    let games: Vec<_> = (1..=5).map(|n| game(n, 1 + n as u64 / 3, 10 * n as u32)).collect();
    let batch: Vec<NewGame<'_>> = games[..3].iter().map(new_game).collect();
    assert_eq!(db.insert_games("alice@m1", &batch, 0, None, true).unwrap(), vec![true, true, true]);
    // A retry of the same batch plus one new game: only the new one is stored.
    let mut retry: Vec<NewGame<'_>> = games[..4].iter().map(new_game).collect();
    retry[3].origin = Some((games[0].0, 7));
    assert_eq!(
        db.insert_games("alice@m1", &retry, 1, Some("bad hash"), true).unwrap(),
        vec![false, false, false, true]
    );
    // Learned as played: stored, not queued.
    assert_eq!(db.insert_games("local", &[new_game(&games[4])], 0, None, false).unwrap(), vec![true]);
    assert_eq!(db.game_count().unwrap(), 5);
    assert_eq!(db.last_game_id().unwrap(), 5);
    assert_eq!(db.last_queued_id().unwrap(), 4);
    assert_eq!(db.known_games(&[games[0].0, [9; 16], games[4].0]).unwrap(), vec![true, false, true]);

    let first = db.games_after(0, 2).unwrap();
    assert_eq!(first.iter().map(|g| g.id).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(first[0].uuid, games[0].0);
    assert_eq!(first[0].record, games[0].1);
    assert_eq!(first[0].worker, "alice@m1");
    let rest = db.games_after(2, 10).unwrap();
    assert_eq!(rest.iter().map(|g| g.id).collect::<Vec<_>>(), vec![3, 4], "the unqueued game is not learned");
    assert_eq!(rest[1].origin, Some((games[0].0, 7)));
    assert_eq!(db.game_by_uuid(&games[3].0).unwrap().unwrap().origin, Some((games[0].0, 7)));
    assert_eq!(db.game_by_uuid(&[9; 16]).unwrap(), None);

    let of_revision = db.games_of_revision(2, 10).unwrap();
    assert_eq!(of_revision.iter().map(|g| g.moves).collect::<Vec<_>>(), vec![50, 40, 30], "best first");
    assert_eq!(db.revisions_with_games().unwrap(), vec![2, 1]);
    let page = db.games_page(Some(2), 3, 10).unwrap();
    assert_eq!(page.iter().map(|g| g.id).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(db.games_page(None, 0, 100).unwrap().len(), 5);

    let workers = db.workers().unwrap();
    let alice = workers.iter().find(|w| w.name == "alice@m1").unwrap();
    assert_eq!((alice.games, alice.moves, alice.rejected), (4, 100, 1));
    assert_eq!(alice.last_rejection.as_deref(), Some("bad hash"));
    assert_eq!((alice.token.as_str(), alice.machine.as_deref()), ("alice", Some("m1")));

    // The same UUID twice in one batch is stored once, and new once.
    let twice = game(6, 2, 7);
    assert_eq!(
        db.insert_games("alice@m1", &[new_game(&twice), new_game(&twice)], 0, None, true).unwrap(),
        vec![true, false]
    );
    assert_eq!(db.game_count().unwrap(), 6);
}

fn strength(mean: f64) -> Strength {
    Strength {
        games: 10,
        mean_score: mean,
        ci95: 12.5,
        median_score: mean,
        min_score: 4,
        max_score: 4000,
        mean_moves: 300.0,
        max_tile: 512,
        reached: Vec::new(),
    }
}

fn counters_revisions_and_evaluations_survive_a_reopen(url: DatabaseUrl) {
    let counters =
        Counters { games: 12, moves: 3400, score_sum: 99_999_999_999, revision: 2, learned_through: 11 };
    {
        let mut db = RunDb::open(&url).unwrap();
        assert_eq!(db.counters().unwrap(), Counters::default());
        for revision in 1..=2 {
            let row = RevisionRow {
                revision,
                file: format!("r{revision:06}.bin"),
                sha256: "ab".repeat(32),
                size: 1 << 33,
                games: 6 * revision,
                moves: 1700 * revision,
                published_at: "2026-12-02T12:00:00Z".into(),
            };
            db.record_revision(&row, &Counters { revision, ..counters }).unwrap();
        }
        db.record_evaluation(&EvaluationRow {
            revision: 2,
            depth: 1,
            seed: u64::MAX - 1,
            games_trained: 12,
            strength: strength(1234.5),
        })
        .unwrap();
        db.set_setting("model", "ntuple").unwrap();
        db.set_setting("model", "policy-value").unwrap();
    }
    let db = RunDb::open(&url).unwrap();
    assert_eq!(db.counters().unwrap(), counters);
    let revisions = db.revisions().unwrap();
    assert_eq!(revisions.len(), 2);
    assert_eq!(revisions[1].size, 1 << 33);
    let evaluations = db.evaluations().unwrap();
    assert_eq!(evaluations.len(), 1);
    assert_eq!(evaluations[0].seed, u64::MAX - 1, "a seed above i64::MAX survives");
    assert_eq!(evaluations[0].strength.mean_score, 1234.5);
    assert_eq!(db.setting("model").unwrap().as_deref(), Some("policy-value"));

    // A counter that is not a number is an error naming it, never a zero.
    db.set_setting("moves", "lots").unwrap();
    let error = db.counters().unwrap_err();
    assert!(matches!(error, DbError::Corrupt { .. }) && error.to_string().contains("moves"), "{error}");
}

fn revoking_a_token_quarantines_its_machines_only(url: DatabaseUrl) {
    let mut db = RunDb::open(&url).unwrap();
    assert!(db.issue_token("alice", &[1; 32]).unwrap());
    assert!(!db.issue_token("alice", &[2; 32]).unwrap(), "a live token is never replaced");
    assert!(db.issue_token("alice_x", &[3; 32]).unwrap());
    assert_eq!(db.token_by_hash(&[1; 32]).unwrap().unwrap().name, "alice");
    assert_eq!(db.token_by_hash(&[2; 32]).unwrap(), None);

    let games: Vec<_> = (1..=4).map(|n| game(n, 1, 5)).collect();
    for (g, worker) in games.iter().zip(["alice@m1", "alice@m2", "alice_x@m1", "alice"]) {
        db.insert_games(worker, &[new_game(g)], 0, None, true).unwrap();
    }
    assert!(db.revoke_token("alice").unwrap());
    assert!(!db.revoke_token("bob").unwrap());
    // `_` is no wildcard here: alice_x keeps its games.
    assert_eq!(db.quarantine_worker("alice").unwrap(), 3);
    assert_eq!(db.quarantine_worker("alice").unwrap(), 0, "already quarantined");
    let queued = db.games_after(0, 10).unwrap();
    assert_eq!(queued.iter().map(|g| g.worker.as_str()).collect::<Vec<_>>(), vec!["alice_x@m1"]);
    assert_eq!(db.last_queued_id().unwrap(), 3);
    assert_eq!(db.game_by_uuid(&games[0].0).unwrap(), None, "a quarantined game is no parent");

    let workers = db.workers().unwrap();
    let of = |name: &str| workers.iter().find(|w| w.name == name).unwrap().clone();
    assert!(of("alice@m1").revoked_at.is_some() && !of("alice@m1").active);
    assert_eq!(of("alice@m2").quarantined, 1);
    assert!(of("alice_x@m1").revoked_at.is_none() && of("alice_x@m1").active);

    // A revoked name may be issued again, with a new token.
    assert!(db.issue_token("alice", &[4; 32]).unwrap());
    let tokens = db.tokens().unwrap();
    assert_eq!(tokens.len(), 2);
    assert!(tokens.iter().all(|t| t.revoked_at.is_none()));
    assert_eq!(db.token_by_name("alice").unwrap().unwrap().hash, vec![4; 32]);
}

fn rejections_and_throughput_are_kept(url: DatabaseUrl) {
    let db = RunDb::open(&url).unwrap();
    db.record_rejections("mallory@m", 3, "record does not replay").unwrap();
    db.record_rejections("mallory@m", 2, "wrong revision").unwrap();
    let mallory = db.workers().unwrap().into_iter().find(|w| w.name == "mallory@m").unwrap();
    assert_eq!((mallory.games, mallory.rejected), (0, 5));
    assert_eq!(mallory.last_rejection.as_deref(), Some("wrong revision"));
    for at in 1..=5 {
        db.record_throughput(&ThroughputSample {
            at,
            games: at as u64 * 10,
            moves: 1,
            stored: 2,
            backlog: 3,
            revision: 4,
        })
        .unwrap();
    }
    let last = db.throughput(3).unwrap();
    assert_eq!(last.iter().map(|s| s.at).collect::<Vec<_>>(), vec![3, 4, 5], "the newest, oldest first");
    assert_eq!(last[2].games, 50);
}

fn a_newer_schema_is_refused(url: DatabaseUrl) {
    drop(RunDb::open(&url).unwrap());
    match &url {
        DatabaseUrl::Sqlite(path) => {
            rusqlite::Connection::open(path).unwrap().pragma_update(None, "user_version", 999).unwrap();
        }
        DatabaseUrl::Postgres(text) => {
            let mut client = ::postgres::Client::connect(text, ::postgres::NoTls).unwrap();
            client.batch_execute("UPDATE schema_version SET version = 999").unwrap();
        }
    }
    let error = RunDb::open(&url).err().expect("a newer schema opens");
    assert!(matches!(error, DbError::TooNew { found: 999, .. }), "{error}");
    assert!(error.to_string().contains("newer zero2048"), "{error}");
}

fn concurrent_ingest_keeps_every_game_once(url: DatabaseUrl) {
    drop(RunDb::open(&url).unwrap());
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut db = RunDb::open(&url).unwrap();
                for batch in 0..10u8 {
                    let games: Vec<_> = (0..5u8)
                        .map(|i| {
                            let mut g = game(i, 1, 3);
                            g.0[1] = t;
                            g.0[2] = batch;
                            g
                        })
                        .collect();
                    let rows: Vec<NewGame<'_>> = games.iter().map(new_game).collect();
                    // Each thread also resends its previous batch: a retry after a lost answer.
                    assert!(
                        db.insert_games(&format!("w{t}@m"), &rows, 0, None, true)
                            .unwrap()
                            .iter()
                            .all(|&new| new)
                    );
                    assert!(
                        db.insert_games(&format!("w{t}@m"), &rows, 0, None, true)
                            .unwrap()
                            .iter()
                            .all(|&new| !new)
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let db = RunDb::open(&url).unwrap();
    let all = db.games_after(0, 1000).unwrap();
    assert_eq!(all.len(), 200);
    let ids: Vec<u64> = all.iter().map(|g| g.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let uuids: std::collections::HashSet<[u8; 16]> = all.iter().map(|g| g.uuid).collect();
    assert_eq!(uuids.len(), 200);
    for worker in db.workers().unwrap() {
        assert_eq!(worker.games, 50, "{worker:?}");
    }
}

/// Closes every other connection to the database at `url`, as a server restart would.
fn drop_connections(url: &str) {
    let mut admin = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .unwrap();
}

/// Retries `work` until it succeeds: the one query that meets the closed connection fails.
fn after_reconnect<T>(mut work: impl FnMut() -> Result<T, DbError>) -> T {
    let mut errors = Vec::new();
    for _ in 0..5 {
        match work() {
            Ok(value) => return value,
            Err(e) => errors.push(e.to_string()),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("never reconnected: {errors:?}");
}

#[test]
fn postgres_connections_are_opened_again_after_the_server_closes_them() {
    let url = postgres_server::new_database();
    let parsed = DatabaseUrl::parse(&url).unwrap();
    let mut db = RunDb::open(&parsed).unwrap();
    assert!(db.lock_run().unwrap());
    let games: Vec<_> = (1..=2).map(|n| game(n, 1, 4)).collect();
    db.insert_games("w@m", &[new_game(&games[0])], 0, None, true).unwrap();

    drop_connections(&url);
    after_reconnect(|| db.insert_games("w@m", &[new_game(&games[1])], 0, None, true));
    assert_eq!(db.game_count().unwrap(), 2);
    // The learner lock was taken again with the new connection.
    let other = RunDb::open(&parsed).unwrap();
    assert!(!other.lock_run().unwrap(), "a second learner got the run after a reconnect");

    // If another learner takes the run while the connection is down, this one is told to stop.
    drop(other);
    drop_connections(&url);
    let rival = RunDb::open(&parsed).unwrap();
    assert!(rival.lock_run().unwrap());
    let mut seen = Vec::new();
    for _ in 0..5 {
        match db.game_count() {
            Err(DbError::LostLearnerLock) => return,
            other => seen.push(format!("{other:?}")),
        }
    }
    panic!("the learner was not told it lost the run: {seen:?}");
}
