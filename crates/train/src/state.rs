//! The learner's own state beside the published revisions: what a resumed run needs that a
//! weights file does not hold (the temporal-coherence accumulators, two floats per weight). It
//! stays in the run's state directory, never published; only the latest revision's is kept,
//! written whole (temp file, sync, rename) after the revision is recorded.
//!
//! Format of `coherence.bin`: magic `Z2KTCST1`, the revision (u64 LE), the table count (u32 LE),
//! then per table its length in floats (u64 LE) and the floats (f32 LE).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::learner::Coherence;
use crate::run::TrainError;

const MAGIC: &[u8; 8] = b"Z2KTCST1";
const FILE: &str = "coherence.bin";

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> TrainError + 'a {
    move |source| TrainError::Io { action, path: path.to_path_buf(), source }
}

/// Saves the TC accumulators of `revision` (nothing when TC has not started).
pub fn save_coherence(dir: &Path, revision: u64, coherence: Option<&Coherence>) -> Result<(), TrainError> {
    let Some(coherence) = coherence else { return Ok(()) };
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let path = dir.join(FILE);
    let temp: PathBuf = dir.join(format!(".tmp-{FILE}"));
    {
        let file = File::create(&temp).map_err(io("creating", &temp))?;
        let mut out = BufWriter::with_capacity(1 << 20, &file);
        out.write_all(MAGIC).map_err(io("writing", &temp))?;
        out.write_all(&revision.to_le_bytes()).map_err(io("writing", &temp))?;
        out.write_all(&(coherence.tables().len() as u32).to_le_bytes()).map_err(io("writing", &temp))?;
        for table in coherence.tables() {
            out.write_all(&(table.len() as u64).to_le_bytes()).map_err(io("writing", &temp))?;
            table.write_le(&mut out).map_err(io("writing", &temp))?;
        }
        out.flush().map_err(io("writing", &temp))?;
        drop(out);
        file.sync_all().map_err(io("syncing", &temp))?;
    }
    std::fs::rename(&temp, &path).map_err(io("renaming", &temp))?;
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Fills `into` with the saved accumulators if they belong to `revision`; `Ok(false)` when there
/// are none, or they belong to another revision (the run then starts TC afresh).
pub fn load_coherence(dir: &Path, revision: u64, into: &mut Coherence) -> Result<bool, TrainError> {
    let path = dir.join(FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
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
    if saved != revision {
        return Ok(false);
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
    Ok(true)
}
