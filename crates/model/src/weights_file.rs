//! N-tuple weights as a safetensors file (and the error type of every weights file, the
//! policy-value ones of [`crate::policy_value`] included) (`docs/formats.md`): one F32 tensor per table, named
//! `stage{s}.tuple{t}`, and metadata naming `format_version`, `kind` = `ntuple`, the tuples, the
//! stages and the `revision`. Loading checks every one of those against what the file holds and
//! streams the tensors straight into the tables, so a 256 MiB network never sits in memory twice.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ntuple::{NTupleConfig, NTupleNetwork, NetworkError};

/// The metadata version this build writes and reads.
pub const FORMAT_VERSION: &str = "1";
/// The model kind of n-tuple networks.
pub const KIND: &str = "ntuple";

/// The metadata key of a network learning stage by stage: how many stages are open (absent:
/// all). The file holds the last open stage's tables in each closed stage's place.
pub const OPEN_STAGES: &str = "open_stages";

/// What a weights file says about itself, beyond the tables.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightsInfo {
    /// The network's shape.
    pub config: NTupleConfig,
    /// The revision the file was published as.
    pub revision: u64,
    /// Any other metadata (training counters and the like), as stored.
    pub extra: BTreeMap<String, String>,
}

/// Why a weights file was refused.
#[derive(Debug, thiserror::Error)]
pub enum WeightsFileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not what it claims, or not what was expected.
    #[error("{path}: {check}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Which check failed (header, kind, format_version, tuples, tensor, size).
        check: &'static str,
        /// Details.
        message: String,
    },
    /// The network could not be allocated.
    #[error(transparent)]
    Network(#[from] NetworkError),
}

fn tensor_name(stage: usize, tuple: usize) -> String {
    format!("stage{stage}.tuple{tuple}")
}

/// Writes the network to `path` as a safetensors file (the caller makes the write atomic, as
/// every caller does: a staging name, then a rename). Each table is streamed from the shared
/// weights in small blocks, so saving holds no copy of a table: a 64 MiB table copied whole was
/// the largest allocation of a run's revision (BENCHMARKS.md, issue 11).
pub fn save(
    network: &NTupleNetwork,
    path: &Path,
    revision: u64,
    extra: &BTreeMap<String, String>,
) -> Result<(), WeightsFileError> {
    let io = |source| WeightsFileError::Io { path: path.to_path_buf(), source };
    let header = header_bytes(network, revision, extra);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path).map_err(io)?);
    out.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
    out.write_all(&header).map_err(io)?;
    for table in network.stored_tables() {
        table.write_le(&mut out).map_err(io)?;
    }
    out.flush().map_err(io)
}

/// The safetensors header of `network`'s file: the metadata, then one F32 tensor per table with
/// its byte range, the tables in the network's order; padded with spaces to a multiple of 8
/// bytes, as the format asks.
fn header_bytes(network: &NTupleNetwork, revision: u64, extra: &BTreeMap<String, String>) -> Vec<u8> {
    let config = network.config();
    let mut metadata: serde_json::Map<String, serde_json::Value> =
        extra.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    metadata.insert("format_version".into(), FORMAT_VERSION.into());
    metadata.insert("kind".into(), KIND.into());
    metadata.insert(
        "tuples".into(),
        serde_json::to_string(&config.tuples).expect("lists of cell numbers serialize").into(),
    );
    metadata.insert("stages".into(), config.stages.to_string().into());
    metadata.insert("stage_tile".into(), config.stage_tile.to_string().into());
    metadata.insert("revision".into(), revision.to_string().into());
    // The network's own count, never one carried over in `extra` from another file.
    metadata.remove(OPEN_STAGES);
    if network.open_stages() < config.stages {
        metadata.insert(OPEN_STAGES.into(), network.open_stages().to_string().into());
    }
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), metadata.into());
    let tuples = config.tuples.len();
    let mut offset = 0usize;
    for (i, table) in network.stored_tables().enumerate() {
        let end = offset + table.len() * 4;
        header.insert(
            tensor_name(i / tuples, i % tuples),
            serde_json::json!({ "dtype": "F32", "shape": [table.len()], "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut bytes = serde_json::to_vec(&header).expect("a map of strings and numbers serializes");
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    bytes
}

#[derive(Deserialize)]
struct TensorHeader {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// Reads only the metadata of a weights file.
pub fn read_info(path: &Path) -> Result<WeightsInfo, WeightsFileError> {
    read_header(path).map(|(info, _, _)| info)
}

type Header = (WeightsInfo, BTreeMap<String, TensorHeader>, u64);

fn read_header(path: &Path) -> Result<Header, WeightsFileError> {
    let io = |source| WeightsFileError::Io { path: path.to_path_buf(), source };
    let invalid =
        |check, message: String| WeightsFileError::Invalid { path: path.to_path_buf(), check, message };
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|_| invalid("header", "shorter than a safetensors header".into()))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > 100 << 20 || 8 + header_len > file_len {
        return Err(invalid(
            "header",
            format!("claims a {header_len}-byte header in a {file_len}-byte file"),
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let mut entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| invalid("header", format!("not safetensors JSON: {e}")))?;
    let metadata: BTreeMap<String, String> = entries
        .remove("__metadata__")
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| invalid("header", format!("__metadata__ is not a string map: {e}")))?
        .ok_or_else(|| invalid("header", "no __metadata__: not a 2048-Zero weights file".into()))?;
    let get = |key: &'static str| {
        metadata.get(key).cloned().ok_or_else(|| invalid("metadata", format!("`{key}` is missing")))
    };
    check_identity(path, |key| metadata.get(key).cloned(), KIND, FORMAT_VERSION)?;
    let tuples: Vec<Vec<u8>> =
        serde_json::from_str(&get("tuples")?).map_err(|e| invalid("tuples", e.to_string()))?;
    let stages: u8 = get("stages")?.parse().map_err(|_| invalid("stages", "not a number".into()))?;
    let stage_tile: u8 =
        get("stage_tile")?.parse().map_err(|_| invalid("stage_tile", "not a number".into()))?;
    let revision: u64 = get("revision")?.parse().map_err(|_| invalid("revision", "not a number".into()))?;
    let config = NTupleConfig { tuples, stages, stage_tile };
    config.validate().map_err(|e| invalid("tuples", e))?;
    let tensors = entries
        .into_iter()
        .map(|(name, value)| {
            serde_json::from_value::<TensorHeader>(value)
                .map(|t| (name.clone(), t))
                .map_err(|e| invalid("tensor", format!("`{name}`: {e}")))
        })
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    let extra = metadata
        .into_iter()
        .filter(|(k, _)| {
            !["kind", "format_version", "tuples", "stages", "stage_tile", "revision"].contains(&k.as_str())
        })
        .collect();
    Ok((WeightsInfo { config, revision, extra }, tensors, 8 + header_len))
}

/// Loads a weights file. With `expected`, refuses a file of another shape.
pub fn load(
    path: &Path,
    expected: Option<&NTupleConfig>,
) -> Result<(NTupleNetwork, WeightsInfo), WeightsFileError> {
    let (info, tensors, data_start) = read_header(path)?;
    let invalid =
        |check, message: String| WeightsFileError::Invalid { path: path.to_path_buf(), check, message };
    if let Some(expected) = expected
        && *expected != info.config
    {
        return Err(invalid(
            "tuples",
            format!("the file's network {:?} is not the expected {:?}", info.config, expected),
        ));
    }
    let starts = table_starts(path, &info, &tensors, data_start)?;
    let mut network = NTupleNetwork::zeroed(info.config.clone())?;
    let mut file =
        File::open(path).map_err(|source| WeightsFileError::Io { path: path.to_path_buf(), source })?;
    for (table, start) in network.tables_mut().iter_mut().zip(starts) {
        file.seek(SeekFrom::Start(start))
            .and_then(|_| table.read_le(&mut file))
            .map_err(|source| WeightsFileError::Io { path: path.to_path_buf(), source })?;
    }
    if let Some(open) = info.extra.get(OPEN_STAGES) {
        let refused = |why: String| invalid("open_stages", format!("`{open}`: {why}"));
        let open: u8 = open.parse().map_err(|_| refused("not a number".into()))?;
        network.set_open_stages(open).map_err(|e| refused(e.to_string()))?;
    }
    for table in network.tables() {
        if let Some(bad) = table.iter().find(|w| !w.is_finite()) {
            return Err(invalid(
                "values",
                format!("a weight is {bad}: the network diverged or the file is damaged"),
            ));
        }
    }
    Ok((network, info))
}

/// Where each table's floats start in the file, in the network's table order, after checking
/// every tensor's name, dtype, shape and offsets against the file's network and its length.
fn table_starts(
    path: &Path,
    info: &WeightsInfo,
    tensors: &BTreeMap<String, TensorHeader>,
    data_start: u64,
) -> Result<Vec<u64>, WeightsFileError> {
    let invalid =
        |check, message: String| WeightsFileError::Invalid { path: path.to_path_buf(), check, message };
    let config = &info.config;
    let tuples = config.tuples.len();
    let table_count = tuples * config.stages as usize;
    if tensors.len() != table_count {
        return Err(invalid(
            "tensor",
            format!("{} tensors; the network has {table_count} tables", tensors.len()),
        ));
    }
    let file_len = std::fs::metadata(path)
        .map_err(|source| WeightsFileError::Io { path: path.to_path_buf(), source })?
        .len();
    let data_len = file_len.saturating_sub(data_start);
    (0..table_count)
        .map(|i| {
            let name = tensor_name(i / tuples, i % tuples);
            let header =
                tensors.get(&name).ok_or_else(|| invalid("tensor", format!("`{name}` is missing")))?;
            let want = config.table_len(i % tuples);
            if header.dtype != "F32" || header.shape != [want] {
                return Err(invalid(
                    "tensor",
                    format!("`{name}` is {} {:?}; expected F32 [{want}]", header.dtype, header.shape),
                ));
            }
            let [begin, end] = header.data_offsets;
            if end < begin || end - begin != want * 4 || end as u64 > data_len {
                return Err(invalid(
                    "size",
                    format!("`{name}` has offsets {begin}..{end} in {data_len} bytes of data"),
                ));
            }
            Ok(data_start + begin as u64)
        })
        .collect()
}

/// Moves the weights of the file at `path` (as [`save`] wrote them) towards those of
/// `previous`, a file of the same network: each weight `w` becomes `p + (w − p) · step`, `p`
/// being `previous`'s, exactly as [`NTupleNetwork::blend_towards`] computes it on a network
/// holding `previous`. One step of a running mean kept in files: the mean never needs a second
/// network in memory, only a block of each file at a time. A weight that comes out non-finite
/// is an error naming `previous`, and `path` is then only fit for deleting.
pub fn blend_with_previous(path: &Path, previous: &Path, step: f32) -> Result<(), WeightsFileError> {
    let (info, tensors, data_start) = read_header(path)?;
    let (previous_info, previous_tensors, previous_start) = read_header(previous)?;
    if previous_info.config != info.config {
        return Err(WeightsFileError::Invalid {
            path: previous.to_path_buf(),
            check: "tuples",
            message: format!("the file's network {:?} is not {:?}", previous_info.config, info.config),
        });
    }
    let starts = table_starts(path, &info, &tensors, data_start)?;
    let previous_starts = table_starts(previous, &previous_info, &previous_tensors, previous_start)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WeightsFileError::Io { path, source }
    };
    let mut out = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(io(path))?;
    let mut before = File::open(previous).map_err(io(previous))?;
    const BLOCK_BYTES: usize = 4 << 20;
    let (mut mine, mut theirs) = (vec![0u8; BLOCK_BYTES], vec![0u8; BLOCK_BYTES]);
    for (i, (start, previous_start)) in starts.into_iter().zip(previous_starts).enumerate() {
        let bytes = info.config.table_len(i % info.config.tuples.len()) * 4;
        let mut done = 0;
        while done < bytes {
            let len = BLOCK_BYTES.min(bytes - done);
            let (mine, theirs) = (&mut mine[..len], &mut theirs[..len]);
            let at = start + done as u64;
            out.seek(SeekFrom::Start(at)).and_then(|_| out.read_exact(mine)).map_err(io(path))?;
            before
                .seek(SeekFrom::Start(previous_start + done as u64))
                .and_then(|_| before.read_exact(theirs))
                .map_err(io(previous))?;
            for (target, before) in mine.chunks_exact_mut(4).zip(theirs.chunks_exact(4)) {
                if target[..] == before[..] {
                    continue;
                }
                let p = f32::from_le_bytes(before.try_into().expect("4 bytes"));
                let w = f32::from_le_bytes((&*target).try_into().expect("4 bytes"));
                let blended = p + (w - p) * step;
                if !blended.is_finite() {
                    return Err(WeightsFileError::Invalid {
                        path: previous.to_path_buf(),
                        check: "values",
                        message: format!("a weight blends to {blended}: the file is damaged"),
                    });
                }
                target.copy_from_slice(&blended.to_le_bytes());
            }
            out.seek(SeekFrom::Start(at)).and_then(|_| out.write_all(mine)).map_err(io(path))?;
            done += len;
        }
    }
    out.flush().map_err(io(path))
}

/// The metadata key naming the revisions a file of [`average`] was averaged from.
pub const AVERAGED_REVISIONS: &str = "averaged_revisions";

/// The weight-by-weight mean of several weights files of one network shape (tail averaging:
/// the mean of a run's last revisions plays more strongly than its last revision alone, since
/// the learning's step-to-step noise averages out while the revisions it spans learned alike).
/// Each file is loaded and checked as [`load`] checks it, one at a time beside the running mean,
/// so two networks are in memory at once whatever the count. The result carries the newest
/// input's revision and metadata, and [`AVERAGED_REVISIONS`] lists every input's revision.
pub fn average(paths: &[&Path]) -> Result<(NTupleNetwork, WeightsInfo), WeightsFileError> {
    let (first, rest) = paths.split_first().ok_or_else(|| WeightsFileError::Invalid {
        path: PathBuf::new(),
        check: "inputs",
        message: "no weights files to average".into(),
    })?;
    let (mean, first_info) = load(first, None)?;
    let mut revisions = vec![first_info.revision];
    let mut newest = first_info;
    for (count, path) in rest.iter().enumerate() {
        let (network, info) = load(path, Some(&newest.config))?;
        // A running mean, not a sum: exact when the inputs agree, and no growth with the count.
        mean.blend_towards(&network, 1.0 / (count + 2) as f32)
            .expect("load checked the shape against the first file's");
        revisions.push(info.revision);
        if info.revision >= newest.revision {
            newest = info;
        }
    }
    let listed: Vec<String> = revisions.iter().map(u64::to_string).collect();
    newest.extra.insert(AVERAGED_REVISIONS.into(), listed.join(","));
    Ok((mean, newest))
}

/// Checks the model kind and format version a weights file's metadata names (`lookup` reads a
/// metadata key), the first checks of every kind of weights file.
pub(crate) fn check_identity(
    path: &Path,
    lookup: impl Fn(&str) -> Option<String>,
    expected_kind: &str,
    expected_version: &str,
) -> Result<(), WeightsFileError> {
    let invalid =
        |check, message: String| WeightsFileError::Invalid { path: path.to_path_buf(), check, message };
    let kind = lookup("kind").ok_or_else(|| invalid("metadata", "`kind` is missing".into()))?;
    if kind != expected_kind {
        return Err(invalid("kind", format!("the file holds a `{kind}` model, not `{expected_kind}`")));
    }
    let version =
        lookup("format_version").ok_or_else(|| invalid("metadata", "`format_version` is missing".into()))?;
    if version != expected_version {
        return Err(invalid(
            "format_version",
            format!("version {version}; this build reads {expected_version}"),
        ));
    }
    Ok(())
}
