//! The learner's own state beside the published revisions: what a resumed run needs that a
//! weights file does not hold (the temporal-coherence accumulators, two floats per weight). It
//! stays in the run's state directory, never published; only the latest revision's is kept,
//! written whole (temp file, sync, rename) after the revision is recorded. A run stopped while
//! saving it keeps the previous revision's, which a resumed run takes (`at_most`).
//!
//! Format of `coherence.bin`: magic `Z2KTCST1`, the revision (u64 LE), the table count (u32 LE),
//! then per table its length in floats (u64 LE) and the floats (f32 LE).
//!
//! When a run publishes the mean of its weights (`published_mean_power`), the weights it learns
//! on are not the published ones: they go to `learned.safetensors` (the weights-file format, its
//! `revision` naming the revision they belong to), written beside `coherence.bin`.
//!
//! The policy-value learner's optimiser (step count and AdamW moments) goes to `optimizer.bin`:
//! magic `Z2KOPTS1`, the revision (u64 LE), the state's length (u64 LE), its SHA-256, the state.
//! The digest is checked before the state is decoded, so a damaged file is an error, never a
//! crash or a silently wrong optimiser.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use zero2048_model::{NTupleConfig, NTupleNetwork, WeightsFileError, weights_file};

use crate::learner::Coherence;
use crate::run::TrainError;

const MAGIC: &[u8; 8] = b"Z2KTCST1";
const FILE: &str = "coherence.bin";
const LEARNED_FILE: &str = "learned.safetensors";
const OPTIMIZER_MAGIC: &[u8; 8] = b"Z2KOPTS1";
const OPTIMIZER_FILE: &str = "optimizer.bin";

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> TrainError + 'a {
    move |source| TrainError::Io { action, path: path.to_path_buf(), source }
}

/// Saves the TC accumulators of `revision` (nothing when TC has not started).
pub fn save_coherence(dir: &Path, revision: u64, coherence: Option<&Coherence>) -> Result<(), TrainError> {
    let Some(coherence) = coherence else { return Ok(()) };
    write_whole(dir, FILE, |out| {
        out.write_all(MAGIC)?;
        out.write_all(&revision.to_le_bytes())?;
        out.write_all(&(coherence.tables().len() as u32).to_le_bytes())?;
        for table in coherence.tables() {
            out.write_all(&(table.len() as u64).to_le_bytes())?;
            table.write_le(&mut *out)?;
        }
        Ok(())
    })
}

/// Fills `into` with the saved accumulators if they belong to revision `at_most` or an earlier
/// one (a run stopped while saving a revision's state keeps the one before), returning the
/// revision they belong to; `Ok(None)` when there are none, or they belong to a later revision
/// (the run then starts TC afresh).
pub fn load_coherence(dir: &Path, at_most: u64, into: &mut Coherence) -> Result<Option<u64>, TrainError> {
    let path = dir.join(FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("opening", &path)(e)),
    };
    let damaged = |message: String| TrainError::Resume(format!("{}: {message}", path.display()));
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; 20];
    input.read_exact(&mut header).map_err(|_| damaged("shorter than its header".into()))?;
    if &header[..8] != MAGIC {
        return Err(damaged("not a coherence state file".into()));
    }
    let saved = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if saved > at_most {
        return Ok(None);
    }
    let count = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes")) as usize;
    if count != into.tables().len() {
        return Err(damaged(format!("{count} tables; the network has {}", into.tables().len())));
    }
    for (i, table) in into.tables_mut().iter_mut().enumerate() {
        let mut len = [0u8; 8];
        input.read_exact(&mut len).map_err(|_| damaged(format!("table {i} is truncated")))?;
        if u64::from_le_bytes(len) != table.len() as u64 {
            return Err(damaged(format!(
                "table {i} holds {} floats, not {}",
                u64::from_le_bytes(len),
                table.len()
            )));
        }
        table.read_le(&mut input).map_err(|_| damaged(format!("table {i} is truncated")))?;
    }
    Ok(Some(saved))
}

/// Saves the weights the learner learns on, as they stand at `revision`.
pub fn save_learned(dir: &Path, revision: u64, network: &NTupleNetwork) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let path = dir.join(LEARNED_FILE);
    let temp = dir.join(format!(".tmp-{LEARNED_FILE}"));
    let written = weights_file::save(network, &temp, revision, &BTreeMap::new())
        .map_err(TrainError::from)
        .and_then(|()| File::open(&temp).and_then(|file| file.sync_all()).map_err(io("syncing", &temp)));
    if let Err(e) = written {
        remove_partial(&temp);
        return Err(e);
    }
    replace(dir, &temp, &path)
}

/// The learned weights (of shape `config`) of revision `at_most` or an earlier one, with the
/// revision they belong to, if they are saved: `Ok(None)` when there are none or they belong to
/// a later revision; a damaged or misshapen file is an error.
pub fn load_learned(
    dir: &Path,
    at_most: u64,
    config: &NTupleConfig,
) -> Result<Option<(u64, NTupleNetwork)>, TrainError> {
    let path = dir.join(LEARNED_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let damaged = |e: WeightsFileError| TrainError::Resume(format!("{}: {e}", path.display()));
    let saved = weights_file::read_info(&path).map_err(damaged)?.revision;
    if saved > at_most {
        return Ok(None);
    }
    let (network, _) = weights_file::load(&path, Some(config)).map_err(damaged)?;
    Ok(Some((saved, network)))
}

/// Removes what a failed write left of a temporary file: on a full disk, a partial state file
/// (a gigabyte for the default network's accumulators) would keep the disk full.
fn remove_partial(temp: &Path) {
    if let Err(e) = std::fs::remove_file(temp)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("could not remove the partial {}: {e}", temp.display());
    }
}

/// Removes saved learned weights (a run that publishes what it learns needs none).
pub fn remove_learned(dir: &Path) -> Result<(), TrainError> {
    let path = dir.join(LEARNED_FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", &path)(e)),
        _ => Ok(()),
    }
}

/// Writes `file` in `dir` whole: a temporary file, synced, then renamed over the old one.
fn write_whole(
    dir: &Path,
    file: &str,
    write: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let path = dir.join(file);
    let temp: PathBuf = dir.join(format!(".tmp-{file}"));
    let written = File::create(&temp).map_err(io("creating", &temp)).and_then(|handle| {
        let mut out = BufWriter::with_capacity(1 << 20, &handle);
        write(&mut out).and_then(|()| out.flush()).map_err(io("writing", &temp))?;
        drop(out);
        handle.sync_all().map_err(io("syncing", &temp))
    });
    if let Err(e) = written {
        remove_partial(&temp);
        return Err(e);
    }
    replace(dir, &temp, &path)
}

/// Renames the synced `temp` over `path` in `dir`, and syncs the directory so the rename lasts.
fn replace(dir: &Path, temp: &Path, path: &Path) -> Result<(), TrainError> {
    std::fs::rename(temp, path).map_err(io("renaming", temp))?;
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Saves the policy-value optimiser's state of `revision`.
pub fn save_optimizer(dir: &Path, revision: u64, state: &[u8]) -> Result<(), TrainError> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(state);
    write_whole(dir, OPTIMIZER_FILE, |out| {
        out.write_all(OPTIMIZER_MAGIC)?;
        out.write_all(&revision.to_le_bytes())?;
        out.write_all(&(state.len() as u64).to_le_bytes())?;
        out.write_all(&digest)?;
        out.write_all(state)
    })
}

/// The saved optimiser state if it belongs to `revision` and is intact; `Ok(None)` when there is
/// none or it belongs to another revision; an error naming the file when it is damaged.
pub fn load_optimizer(dir: &Path, revision: u64) -> Result<Option<Vec<u8>>, TrainError> {
    use sha2::Digest;
    let path = dir.join(OPTIMIZER_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("reading", &path)(e)),
    };
    let damaged = |message: &str| {
        TrainError::Resume(format!(
            "{}: {message}; delete it to resume with a fresh optimiser",
            path.display()
        ))
    };
    const HEADER: usize = 8 + 8 + 8 + 32;
    if bytes.len() < HEADER {
        return Err(damaged("shorter than its header"));
    }
    if &bytes[..8] != OPTIMIZER_MAGIC {
        return Err(damaged("not an optimiser state file"));
    }
    let saved = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if saved != revision {
        return Ok(None);
    }
    let length = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let state = &bytes[HEADER..];
    if state.len() as u64 != length {
        return Err(damaged(&format!("holds {} bytes of state, its header says {length}", state.len())));
    }
    if sha2::Sha256::digest(state).as_slice() != &bytes[24..HEADER] {
        return Err(damaged("its SHA-256 does not match: the file is damaged"));
    }
    Ok(Some(state.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_that_fails_midway_leaves_the_old_file_and_no_partial_one() {
        let dir = tempfile::tempdir().unwrap();
        save_optimizer(dir.path(), 3, b"the state of revision 3").unwrap();
        // A full disk, as the writer meets it: some bytes went out, then the device refused.
        let error = write_whole(dir.path(), OPTIMIZER_FILE, |out| {
            out.write_all(&[7u8; 3 << 20])?;
            Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device"))
        })
        .unwrap_err();
        let message = error.to_string();
        assert!(message.contains(".tmp-optimizer.bin") && message.contains("No space left"), "{message}");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [OPTIMIZER_FILE], "the partial file is removed");
        assert_eq!(load_optimizer(dir.path(), 3).unwrap().as_deref(), Some(&b"the state of revision 3"[..]));
    }

    #[test]
    fn an_optimizer_state_comes_back_only_for_its_revision_and_only_intact() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_optimizer(dir.path(), 3).unwrap().is_none(), "nothing saved yet");
        let state: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        save_optimizer(dir.path(), 3, &state).unwrap();
        assert_eq!(load_optimizer(dir.path(), 3).unwrap().as_deref(), Some(&state[..]));
        assert!(load_optimizer(dir.path(), 4).unwrap().is_none(), "another revision's state");

        let path = dir.path().join(OPTIMIZER_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let error = load_optimizer(dir.path(), 3).unwrap_err().to_string();
        assert!(error.contains("SHA-256 does not match") && error.contains("optimizer.bin"), "{error}");
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let error = load_optimizer(dir.path(), 3).unwrap_err().to_string();
        assert!(error.contains("bytes of state"), "{error}");
        std::fs::write(&path, b"Z2KOPTS1").unwrap();
        assert!(load_optimizer(dir.path(), 3).unwrap_err().to_string().contains("shorter than its header"));
    }
}
