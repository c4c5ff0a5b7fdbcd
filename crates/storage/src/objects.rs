//! Named objects beside the weights (the run's game chunks): written whole and atomically, so a
//! reader finds the complete object or none, in a local directory or under a prefix of the bucket.
//!
//! The calls block: they are made from the threads that store and read games (the upload
//! endpoint's blocking tasks, the learner), never from an async task. A bucket is reached through
//! the runtime handle given at construction.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::backend::{StorageError, StorageResult};
use crate::r2::R2StorageBackend;

/// Where an object lives: how a caller records it, so it can be found again after a restart
/// even if the configuration changed meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectPlace {
    /// The local directory.
    Local,
    /// The bucket.
    Bucket,
}

/// Which objects tagged by revision are kept once their owner is done with them: those of the
/// newest revisions, and one in `keep_one_in` of the older ones (`storage.games_keep_revisions`,
/// `storage.games_keep_one_in`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectRetention {
    /// Objects of this many newest revisions are kept (0: every object is kept).
    pub keep_revisions: u64,
    /// Of older objects, one in this many is kept as a sample (0: none).
    pub keep_one_in: u64,
}

impl ObjectRetention {
    /// Keep everything.
    pub const ALL: ObjectRetention = ObjectRetention { keep_revisions: 0, keep_one_in: 0 };
}

/// A flat namespace of objects: a local directory, or a prefix inside the bucket.
#[derive(Clone, Debug)]
pub struct ObjectShelf {
    place: Shelf,
}

#[derive(Clone, Debug)]
enum Shelf {
    Local(PathBuf),
    Bucket { backend: Box<R2StorageBackend>, prefix: String, runtime: tokio::runtime::Handle },
}

/// Files whose write was interrupted start with this; they are never listed.
const PARTIAL_PREFIX: &str = ".partial-";

/// An object name: letters, digits, `.`, `_` and `-`, not starting with a dot, at most 200
/// characters (so a name can never leave its directory or prefix).
fn check_key(key: &str) -> StorageResult<()> {
    let fine = !key.is_empty()
        && key.len() <= 200
        && !key.starts_with('.')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if fine { Ok(()) } else { Err(StorageError::BadObjectName(key.chars().take(80).collect())) }
}

impl ObjectShelf {
    /// A local directory (created if missing).
    pub fn local(dir: &Path) -> StorageResult<ObjectShelf> {
        std::fs::create_dir_all(dir).map_err(|source| StorageError::Io {
            action: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(ObjectShelf { place: Shelf::Local(dir.to_path_buf()) })
    }

    /// The objects under `prefix/` in the bucket of `backend` (under its own key prefix too).
    pub fn bucket(backend: R2StorageBackend, prefix: &str, runtime: tokio::runtime::Handle) -> ObjectShelf {
        ObjectShelf {
            place: Shelf::Bucket {
                backend: Box::new(backend),
                prefix: prefix.trim_matches('/').to_string(),
                runtime,
            },
        }
    }

    /// Whether `file_name` is a local write that was interrupted.
    pub fn is_partial(file_name: &str) -> bool {
        file_name.starts_with(PARTIAL_PREFIX)
    }

    /// Where its objects live.
    pub fn place(&self) -> ObjectPlace {
        match self.place {
            Shelf::Local(_) => ObjectPlace::Local,
            Shelf::Bucket { .. } => ObjectPlace::Bucket,
        }
    }

    /// For messages: `directory games` or `bucket runs (games/)`.
    pub fn describe(&self) -> String {
        match &self.place {
            Shelf::Local(dir) => format!("directory {}", dir.display()),
            Shelf::Bucket { backend, prefix, .. } => format!("bucket {} ({prefix}/)", backend.bucket()),
        }
    }

    /// Stores `bytes` as `key`, whole: a reader never sees part of it. Locally the file is
    /// written beside its final name, synced, then renamed; a bucket's PUT is atomic.
    pub fn put(&self, key: &str, bytes: &[u8]) -> StorageResult<()> {
        check_key(key)?;
        match &self.place {
            Shelf::Local(dir) => {
                let path = dir.join(key);
                let partial = dir.join(format!("{PARTIAL_PREFIX}{key}-{:016x}", rand::random::<u64>()));
                let io = |source| StorageError::Io { action: "writing", path: partial.clone(), source };
                let written = (|| {
                    let mut file = std::fs::File::create(&partial)?;
                    file.write_all(bytes)?;
                    file.sync_all()
                })();
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&partial);
                    return Err(io(e));
                }
                std::fs::rename(&partial, &path).map_err(io)?;
                // The rename itself survives a crash of the machine once the directory is synced.
                if let Ok(directory) = std::fs::File::open(dir) {
                    let _ = directory.sync_all();
                }
                Ok(())
            }
            Shelf::Bucket { backend, prefix, runtime } => {
                runtime.block_on(backend.put_object(&format!("{prefix}/{key}"), bytes.to_vec().into()))
            }
        }
    }

    /// The object `key`; [`StorageError::NotFound`] when there is none.
    pub fn get(&self, key: &str) -> StorageResult<Vec<u8>> {
        check_key(key)?;
        match &self.place {
            Shelf::Local(dir) => {
                let path = dir.join(key);
                std::fs::read(&path).map_err(|source| match source.kind() {
                    std::io::ErrorKind::NotFound => StorageError::NotFound(path.display().to_string()),
                    _ => StorageError::Io { action: "reading", path, source },
                })
            }
            Shelf::Bucket { backend, prefix, runtime } => {
                runtime.block_on(backend.get_object(&format!("{prefix}/{key}")))
            }
        }
    }

    /// Removes `key` (nothing to do if it is not there).
    pub fn delete(&self, key: &str) -> StorageResult<()> {
        check_key(key)?;
        match &self.place {
            Shelf::Local(dir) => {
                let path = dir.join(key);
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(source) => Err(StorageError::Io { action: "deleting", path, source }),
                }
            }
            Shelf::Bucket { backend, prefix, runtime } => {
                runtime.block_on(backend.delete_object(&format!("{prefix}/{key}")))
            }
        }
    }

    /// Every object's name, sorted. Locally, interrupted writes older than `stale` are removed
    /// on the way (younger ones may be another process's write in progress).
    pub fn list(&self, stale: Duration) -> StorageResult<Vec<String>> {
        let mut names = match &self.place {
            Shelf::Local(dir) => {
                let io = |source| StorageError::Io { action: "listing", path: dir.clone(), source };
                let mut names = Vec::new();
                for entry in std::fs::read_dir(dir).map_err(io)? {
                    let entry = entry.map_err(io)?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with(PARTIAL_PREFIX) {
                        let age = entry
                            .metadata()
                            .and_then(|m| m.modified())
                            .ok()
                            .and_then(|t| SystemTime::now().duration_since(t).ok());
                        if age.is_some_and(|age| age > stale) {
                            let _ = std::fs::remove_file(entry.path());
                        }
                    } else if check_key(&name).is_ok() {
                        names.push(name);
                    }
                }
                names
            }
            Shelf::Bucket { backend, prefix, runtime } => runtime.block_on(backend.list_objects(prefix))?,
        };
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_shelf_stores_whole_objects_and_refuses_names_that_leave_it() {
        let dir = tempfile::tempdir().unwrap();
        let shelf = ObjectShelf::local(&dir.path().join("games")).unwrap();
        shelf.put("a-1.zst", b"first").unwrap();
        shelf.put("a-1.zst", b"replaced").unwrap();
        assert_eq!(shelf.get("a-1.zst").unwrap(), b"replaced");
        assert!(matches!(shelf.get("b.zst"), Err(StorageError::NotFound(_))));
        for bad in ["../escape", "", ".hidden", "a/b", "a b"] {
            assert!(matches!(shelf.put(bad, b"x"), Err(StorageError::BadObjectName(_))), "{bad}");
        }
        // An interrupted write is never listed, and is cleared once stale.
        let partial = dir.path().join("games").join(format!("{PARTIAL_PREFIX}c.zst-0"));
        std::fs::write(&partial, b"half").unwrap();
        assert_eq!(shelf.list(Duration::from_secs(3600)).unwrap(), vec!["a-1.zst"]);
        assert!(partial.exists());
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(shelf.list(Duration::from_millis(1)).unwrap(), vec!["a-1.zst"]);
        assert!(!partial.exists());
        shelf.delete("a-1.zst").unwrap();
        shelf.delete("a-1.zst").unwrap();
        assert!(shelf.list(Duration::from_secs(1)).unwrap().is_empty());
    }
}
