//! The spool: finished games on disk until the server acknowledges them.
//!
//! One file per game, `<uuid>.game`: magic `Z2KSPOOL`, version byte (2), revision (u64 LE), origin
//! (u8: 0 a new game; 1 a continuation, then the parent's UUID and the branch step, u32 LE), then the
//! record's canonical encoding. Version 1 files (no origin byte) are still read. Files are written to a temporary name, then renamed, so a crash
//! of the worker leaves either the whole game or nothing. Playing threads do not wait for the disk:
//! the uploader syncs each file before it sends it, so a game is durable before the server can
//! acknowledge it, and a power cut loses at most the games of one upload interval, none of them
//! acknowledged. Interrupted games wait in `partial/` to be
//! finished after a restart; refused games are kept in `rejected/` with the server's reason.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use zero2048_game::GameRecord;
use zero2048_protocol::{Origin, Uuid};

const MAGIC: &[u8; 8] = b"Z2KSPOOL";
const VERSION: u8 = 2;

/// Spool trouble.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// File system trouble.
    #[error("spool: {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A spool file that is not one.
    #[error("spool file {path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A game in the spool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpooledGame {
    /// Its UUID (the file name).
    pub uuid: Uuid,
    /// The revision that played it.
    pub revision: u64,
    /// For a continuation, where it branched off its parent.
    pub origin: Option<Origin>,
    /// The record.
    pub record: GameRecord,
}

/// The spool directory, and how many finished games it holds (kept in memory, so checking the
/// cap costs nothing).
#[derive(Clone, Debug)]
pub struct Spool {
    dir: PathBuf,
    waiting: Arc<AtomicU64>,
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io { action, path: path.to_path_buf(), source }
}

impl Spool {
    /// Opens (creating) a spool and removes temporary files a crash left behind.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        for sub in ["", "partial", "rejected"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(io("creating", &path))?;
            for entry in std::fs::read_dir(&path).map_err(io("reading", &path))? {
                let entry = entry.map_err(io("reading", &path))?;
                if entry.file_name().to_string_lossy().ends_with(".tmp") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let spool = Spool { dir: dir.to_path_buf(), waiting: Arc::default() };
        let (games, _) = spool.size();
        spool.waiting.store(games, Ordering::Relaxed);
        Ok(spool)
    }

    /// This worker's machine name for the server: the host name and a short random id, made
    /// once and kept in the spool directory, so the same worker keeps its name across restarts
    /// and two workers on one machine (two spools) are told apart.
    pub fn machine(&self) -> Result<String, SpoolError> {
        let path = self.dir.join("machine");
        match std::fs::read_to_string(&path) {
            Ok(name) if zero2048_protocol::check_machine(name.trim()).is_ok() => {
                return Ok(name.trim().to_string());
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("reading", &path)(e)),
        }
        let host: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| std::env::var("COMPUTERNAME").ok())
            .unwrap_or_default()
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .take(48)
            .collect();
        let host = if host.is_empty() { "worker".to_string() } else { host };
        let name = format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff);
        let temporary = self.dir.join("machine.tmp");
        std::fs::write(&temporary, &name).map_err(io("writing", &temporary))?;
        std::fs::rename(&temporary, &path).map_err(io("writing", &path))?;
        Ok(name)
    }

    /// Finished games waiting for upload (counted as they come and go).
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write(&self, dir: &Path, game: &SpooledGame, sync: bool) -> Result<(), SpoolError> {
        let record = game.record.encode().map_err(|e| SpoolError::Damaged {
            path: dir.join(format!("{}.game", game.uuid)),
            reason: e.to_string(),
        })?;
        let mut bytes = Vec::with_capacity(38 + record.len());
        bytes.extend_from_slice(MAGIC);
        bytes.push(VERSION);
        bytes.extend_from_slice(&game.revision.to_le_bytes());
        match game.origin {
            None => bytes.push(0),
            Some(origin) => {
                bytes.push(1);
                bytes.extend_from_slice(origin.parent.as_bytes());
                bytes.extend_from_slice(&origin.step.to_le_bytes());
            }
        }
        bytes.extend_from_slice(&record);
        let path = dir.join(format!("{}.game", game.uuid));
        let temp = dir.join(format!("{}.game.tmp", game.uuid));
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&temp).map_err(io("creating", &temp))?;
            file.write_all(&bytes).map_err(io("writing", &temp))?;
            if sync {
                file.sync_all().map_err(io("syncing", &temp))?;
            }
        }
        std::fs::rename(&temp, &path).map_err(io("renaming", &temp))?;
        if sync && let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Stores a finished game (whole or not at all; synced to disk by [`Spool::take_batch`]).
    pub fn put(&self, game: &SpooledGame) -> Result<(), SpoolError> {
        self.write(&self.dir, game, false)?;
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Stores an interrupted game durably, to be finished after a restart.
    pub fn put_partial(&self, game: &SpooledGame) -> Result<(), SpoolError> {
        self.write(&self.dir.join("partial"), game, true)
    }

    fn read(path: &Path) -> Result<SpooledGame, SpoolError> {
        let damaged = |reason: String| SpoolError::Damaged { path: path.to_path_buf(), reason };
        let bytes = std::fs::read(path).map_err(io("reading", path))?;
        let uuid = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| damaged("the file name is not a UUID".into()))?;
        if bytes.len() < 17 || &bytes[..8] != MAGIC || !(1..=VERSION).contains(&bytes[8]) {
            return Err(damaged("not a spool file of a version this build reads".into()));
        }
        let revision = u64::from_le_bytes(bytes[9..17].try_into().expect("8 bytes"));
        let (origin, record) = match (bytes[8], bytes.get(17)) {
            (1, _) => (None, &bytes[17..]),
            (_, Some(0)) => (None, &bytes[18..]),
            (_, Some(1)) if bytes.len() >= 38 => (
                Some(Origin {
                    parent: Uuid::from_bytes(bytes[18..34].try_into().expect("16 bytes")),
                    step: u32::from_le_bytes(bytes[34..38].try_into().expect("4 bytes")),
                }),
                &bytes[38..],
            ),
            _ => return Err(damaged("the origin byte is neither 0 nor 1, or is cut short".into())),
        };
        let record = GameRecord::decode(record).map_err(|e| damaged(e.to_string()))?;
        Ok(SpooledGame { uuid, revision, origin, record })
    }

    fn list(dir: &Path, limit: usize) -> Result<Vec<PathBuf>, SpoolError> {
        let mut paths: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io("reading", dir))? {
            let entry = entry.map_err(io("reading", dir))?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "game") {
                let modified = entry.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
                paths.push((modified, path));
            }
        }
        paths.sort();
        Ok(paths.into_iter().take(limit).map(|(_, p)| p).collect())
    }

    /// Up to `limit` finished games, oldest first, each synced to disk before it is returned (so
    /// before it is uploaded). A continuation whose parent is still waiting comes right after it,
    /// in the same batch: the server takes a continuation only once it holds the parent, and "oldest
    /// first" cannot promise that order by itself, since a short continuation can be written in
    /// the same clock tick as its parent (equal modification times). A damaged file is moved to
    /// `rejected/` (with the reason) rather than blocking the spool.
    pub fn take_batch(&self, limit: usize) -> Result<Vec<SpooledGame>, SpoolError> {
        let mut games: Vec<SpooledGame> = Vec::new();
        let mut taken: HashSet<Uuid> = HashSet::new();
        for path in Spool::list(&self.dir, limit)? {
            if games.len() >= limit {
                break;
            }
            let Some(game) = self.take_file(&path)? else { continue };
            if taken.contains(&game.uuid) {
                continue;
            }
            let mut chain = vec![game];
            while let Some(origin) = chain.last().and_then(|g| g.origin) {
                if taken.contains(&origin.parent) || chain.iter().any(|g| g.uuid == origin.parent) {
                    break;
                }
                let parent = self.dir.join(format!("{}.game", origin.parent));
                match self.take_file(&parent)? {
                    Some(parent) => chain.push(parent),
                    None => break,
                }
            }
            for game in chain.into_iter().rev() {
                taken.insert(game.uuid);
                games.push(game);
            }
        }
        if !games.is_empty()
            && let Ok(dir) = std::fs::File::open(&self.dir)
        {
            let _ = dir.sync_all();
        }
        Ok(games)
    }

    /// One spool file, synced and read; `None` if it is gone (acknowledged meanwhile) or damaged
    /// (then moved to `rejected/`).
    fn take_file(&self, path: &Path) -> Result<Option<SpooledGame>, SpoolError> {
        match std::fs::File::open(path) {
            Ok(file) => file.sync_all().map_err(io("syncing", path))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SpoolError::Io { action: "opening", path: path.to_path_buf(), source: e }),
        }
        match Spool::read(path) {
            Ok(game) => Ok(Some(game)),
            Err(SpoolError::Damaged { reason, .. }) => {
                tracing::warn!("spool file {} is damaged ({reason}); moved to rejected/", path.display());
                self.set_aside_path(path, &reason);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Every interrupted game, removing nothing.
    pub fn partials(&self) -> Result<Vec<SpooledGame>, SpoolError> {
        Spool::list(&self.dir.join("partial"), usize::MAX)?.iter().map(|p| Spool::read(p)).collect()
    }

    /// Deletes an interrupted game (once it has been finished and spooled).
    pub fn remove_partial(&self, uuid: &Uuid) {
        let _ = std::fs::remove_file(self.dir.join("partial").join(format!("{uuid}.game")));
    }

    /// Deletes acknowledged games.
    pub fn remove(&self, uuids: &[Uuid]) -> Result<(), SpoolError> {
        for uuid in uuids {
            let path = self.dir.join(format!("{uuid}.game"));
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    let _ =
                        self.waiting.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SpoolError::Io { action: "removing", path, source: e }),
            }
        }
        Ok(())
    }

    fn set_aside_path(&self, path: &Path, reason: &str) {
        if let Some(name) = path.file_name() {
            let target = self.dir.join("rejected").join(name);
            if std::fs::rename(path, &target).is_ok() && path.parent() == Some(self.dir.as_path()) {
                let _ = self.waiting.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
            let _ = std::fs::write(target.with_extension("reason"), reason);
        }
    }

    /// Moves a refused game to `rejected/` with the server's reason.
    pub fn set_aside(&self, uuid: &Uuid, reason: &str) {
        self.set_aside_path(&self.dir.join(format!("{uuid}.game")), reason);
    }

    /// Finished games waiting, and their bytes.
    pub fn size(&self) -> (u64, u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return (0, 0) };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "game"))
            .fold((0, 0), |(n, b), e| (n + 1, b + e.metadata().map_or(0, |m| m.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zero2048_game::{Game, SpawnRule};

    fn game(uuid: u128, origin: Option<u128>) -> SpooledGame {
        SpooledGame {
            uuid: Uuid::from_u128(uuid),
            revision: 1,
            origin: origin.map(|parent| Origin { parent: Uuid::from_u128(parent), step: 0 }),
            record: Game::new(uuid as u64, SpawnRule::STANDARD).into_record(),
        }
    }

    /// Files written in one clock tick share a modification time, so only their names (random
    /// UUIDs) order them: here every continuation sorts before its parent.
    #[test]
    fn a_continuation_travels_with_its_parent_whatever_their_file_times() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let when = std::time::SystemTime::now();
        for (uuid, origin) in [(3, None), (2, Some(3)), (1, Some(2)), (9, None)] {
            spool.put(&game(uuid, origin)).unwrap();
            let path = dir.path().join(format!("{}.game", Uuid::from_u128(uuid)));
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(when).unwrap();
        }
        let first = spool.take_batch(1).unwrap();
        let order: Vec<u128> = first.iter().map(|g| g.uuid.as_u128()).collect();
        assert_eq!(order, [3, 2, 1], "parents first, in the one batch");
        spool.remove(&first.iter().map(|g| g.uuid).collect::<Vec<_>>()).unwrap();
        let rest: Vec<u128> = spool.take_batch(10).unwrap().iter().map(|g| g.uuid.as_u128()).collect();
        assert_eq!(rest, [9]);
        assert_eq!(spool.waiting(), 1);
    }

    #[test]
    fn a_continuation_whose_parent_was_acknowledged_goes_alone() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.put(&game(5, Some(4))).unwrap();
        let batch = spool.take_batch(10).unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].origin.unwrap().parent, Uuid::from_u128(4));
    }
}
