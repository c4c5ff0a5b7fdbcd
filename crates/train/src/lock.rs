//! One process per run: an exclusive lock on the run database and on the weights directory, held
//! for the life of the run. A second `zero2048 train` or `server` on the same run is refused with
//! the holder's pid instead of publishing beside it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::run::TrainError;

/// Held while the run is open; the locks go with it (the operating system also drops them if the
/// process dies, so a crash never leaves a run locked).
#[derive(Debug)]
pub struct RunLock {
    _files: Vec<File>,
}

impl RunLock {
    /// Locks the run database `db` (through `<db>.lock`) and the weights directory
    /// `weights_dir` (through `<weights_dir>/.lock`), writing this process's id into each.
    pub fn acquire(db: &Path, weights_dir: &Path) -> Result<RunLock, TrainError> {
        let mut lock_name = db.as_os_str().to_owned();
        lock_name.push(".lock");
        let paths = [PathBuf::from(lock_name), weights_dir.join(".lock")];
        let mut files = Vec::new();
        for path in paths {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| TrainError::Io {
                    action: "creating",
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|source| TrainError::Io { action: "opening", path: path.clone(), source })?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    return Err(TrainError::Locked { path, pid: holder.trim().parse().ok() });
                }
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(TrainError::Io { action: "locking", path, source });
                }
            }
            let written = file
                .set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| writeln!(file, "{}", std::process::id()));
            written.map_err(|source| TrainError::Io { action: "writing", path: path.clone(), source })?;
            files.push(file);
        }
        Ok(RunLock { _files: files })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_run_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let (db, weights) = (dir.path().join("run.db"), dir.path().join("weights"));
        let first = RunLock::acquire(&db, &weights).unwrap();
        match RunLock::acquire(&db, &weights) {
            Err(TrainError::Locked { pid, path }) => {
                assert_eq!(pid, Some(std::process::id()));
                assert!(path.ends_with("run.db.lock"), "{}", path.display());
            }
            other => panic!("expected the run to be locked, got {other:?}"),
        }
        // Another database sharing the weights directory is refused too.
        assert!(matches!(
            RunLock::acquire(&dir.path().join("other.db"), &weights),
            Err(TrainError::Locked { .. })
        ));
        drop(first);
        RunLock::acquire(&db, &weights).expect("free once the first is gone");
    }
}
