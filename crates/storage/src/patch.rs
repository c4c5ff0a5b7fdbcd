//! Small downloads: a revision sent as a patch against the revision before it, or compressed whole.
//!
//! A patch holds `target XOR base`, byte for byte, zstd-compressed; a compressed whole file is the
//! same thing against no base (XOR with zeros). Between two revisions of an n-tuple network most
//! weights are untouched, so the XOR is mostly zero bytes and compresses to a small fraction of the
//! file. Both sides stream in fixed chunks: neither file is ever held whole in memory. The header
//! inside the compressed stream names the target's size and SHA-256 and the base's SHA-256, so a
//! patch applied to the wrong file is refused before a byte is written, and the result is checked
//! against the full file's SHA-256 after applying (the layout is in `docs/formats.md`).

use std::fmt;
use std::io::{Read, Write};

use sha2::{Digest, Sha256};

use crate::hashing::CHUNK;
use crate::naming::{BadName, WEIGHTS_PREFIX, WeightsName, is_sha256_hex};

/// First bytes of every patch (after decompression).
pub const PATCH_MAGIC: &[u8; 8] = b"Z2KPATCH";
/// The patch format version this build writes and reads.
pub const PATCH_VERSION: u8 = 1;
/// Magic, version, target size, target SHA-256, base SHA-256 (zeros: no base).
const HEADER_LEN: usize = 8 + 1 + 8 + 32 + 32;
/// zstd level for patches. Level 1 measured both faster and no bigger than level 3 on a 4×6
/// network's weights (0.94 against 1.49 CPU-s for 256 MiB, 72.5 against 73.9 MB): the bytes are
/// long runs of zeros and near-random floats, where a stronger match search finds nothing more.
const LEVEL: i32 = 1;

/// The name of a stored patch: `<target>.zst` (the whole file, compressed) or
/// `<target>.from-r<base revision>-<base hash>.zst` (a delta against the base revision), where
/// `<target>` is the weights file name without `.safetensors`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PatchName {
    target: WeightsName,
    base: Option<WeightsName>,
}

impl PatchName {
    /// The compressed whole file of `target`.
    pub fn whole(target: WeightsName) -> PatchName {
        PatchName { target, base: None }
    }

    /// The delta turning `base` into `target`.
    pub fn delta(target: WeightsName, base: WeightsName) -> PatchName {
        PatchName { target, base: Some(base) }
    }

    /// Parses a bare file name; anything outside the pattern (separators, `..`) is refused.
    pub fn parse(name: &str) -> Result<PatchName, BadName> {
        let bad = || BadName(name.chars().take(80).collect());
        let stem = name.strip_suffix(".zst").ok_or_else(bad)?;
        let (target, base) = match stem.split_once(".from-") {
            Some((target, base)) => (target, Some(base)),
            None => (stem, None),
        };
        let weights = |stem: &str| WeightsName::parse(&format!("{stem}.safetensors")).map_err(|_| bad());
        let parsed = PatchName { target: weights(target)?, base: base.map(weights).transpose()? };
        if parsed.to_string() != name {
            return Err(bad());
        }
        Ok(parsed)
    }

    /// The revision the patch produces.
    pub fn target(&self) -> &WeightsName {
        &self.target
    }

    /// The revision it applies to (none for a compressed whole file).
    pub fn base(&self) -> Option<&WeightsName> {
        self.base.as_ref()
    }

    /// The bucket key: `weights/<name>`.
    pub fn key(&self) -> String {
        format!("{WEIGHTS_PREFIX}/{self}")
    }
}

impl fmt::Display for PatchName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stem = |w: &WeightsName| format!("r{:06}-{}", w.revision(), w.hash_prefix());
        match &self.base {
            None => write!(f, "{}.zst", stem(&self.target)),
            Some(base) => write!(f, "{}.from-{}.zst", stem(&self.target), stem(base)),
        }
    }
}

/// Why a patch could not be made or applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// Reading or writing failed (including a zstd stream that does not decode).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a patch.
    #[error("not a weights patch (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error("patch format version {0} is not supported (this build reads version {PATCH_VERSION})")]
    Version(u8),
    /// The patch makes another file than the one wanted.
    #[error("the patch makes {actual}, not the wanted {expected}")]
    WrongTarget {
        /// What was wanted (size and hash).
        expected: String,
        /// What the patch says it makes.
        actual: String,
    },
    /// The patch applies to another base than the one offered.
    #[error("the patch applies to a file with SHA-256 {needed}, not to {offered}")]
    WrongBase {
        /// The base the patch names (`none` for a whole file).
        needed: String,
        /// The base offered (`none` for a whole file).
        offered: String,
    },
    /// The base file and the target differ in size (a delta needs equal sizes).
    #[error("the base file holds {base} bytes, the target {target}: a delta needs equal sizes")]
    SizeDiffers {
        /// Base size.
        base: u64,
        /// Target size.
        target: u64,
    },
    /// The stream ended before the target's last byte.
    #[error("the patch ended after {written} of {size} bytes")]
    Truncated {
        /// Bytes produced.
        written: u64,
        /// Bytes promised.
        size: u64,
    },
    /// Bytes after the target's last byte.
    #[error("the patch holds bytes past the end of its {size}-byte target")]
    Trailing {
        /// Bytes promised.
        size: u64,
    },
}

fn hash_hex_to_bytes(sha256: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    if is_sha256_hex(sha256) {
        hex::decode_to_slice(sha256, &mut out).expect("64 hex digits are 32 bytes");
    }
    out
}

fn hash_name(bytes: &[u8; 32]) -> String {
    if bytes == &[0u8; 32] { "none".to_string() } else { hex::encode(bytes) }
}

/// Fills `buffer` from `reader` unless it ends first; returns the bytes read.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes the patch turning `base` (none: zeros) into `target` to `out`. `target_sha256` and
/// `base_sha256` are the files' recorded hashes (written into the header, not recomputed).
pub fn write_patch(
    target: &mut impl Read,
    target_size: u64,
    target_sha256: &str,
    base: Option<(&mut dyn Read, u64, &str)>,
    out: impl Write,
) -> Result<(), PatchError> {
    let mut encoder = zstd::stream::write::Encoder::new(out, LEVEL)?;
    encoder.include_checksum(true)?;
    let base_sha = base.as_ref().map(|(_, _, sha)| hash_hex_to_bytes(sha)).unwrap_or([0; 32]);
    if let Some((_, base_size, _)) = &base
        && *base_size != target_size
    {
        return Err(PatchError::SizeDiffers { base: *base_size, target: target_size });
    }
    encoder.write_all(PATCH_MAGIC)?;
    encoder.write_all(&[PATCH_VERSION])?;
    encoder.write_all(&target_size.to_le_bytes())?;
    encoder.write_all(&hash_hex_to_bytes(target_sha256))?;
    encoder.write_all(&base_sha)?;
    let mut base_reader = base.map(|(reader, _, _)| reader);
    let mut chunk = vec![0u8; CHUNK];
    let mut base_chunk = vec![0u8; CHUNK];
    let mut written = 0u64;
    loop {
        let n = read_full(target, &mut chunk)?;
        if n == 0 {
            break;
        }
        if let Some(reader) = base_reader.as_mut() {
            let m = read_full(reader, &mut base_chunk[..n])?;
            if m < n {
                return Err(PatchError::SizeDiffers { base: written + m as u64, target: target_size });
            }
            chunk[..n].iter_mut().zip(&base_chunk[..n]).for_each(|(t, b)| *t ^= b);
        }
        encoder.write_all(&chunk[..n])?;
        written += n as u64;
    }
    if written != target_size {
        return Err(PatchError::Truncated { written, size: target_size });
    }
    encoder.finish()?.flush()?;
    Ok(())
}

/// Applies a patch to `base` (none for a compressed whole file), writing the target to `out`, and
/// returns the SHA-256 of what it wrote. Refuses, before writing anything, a patch whose header
/// names another target (`expected_size`, `expected_sha256`) or another base (`base_sha256`).
/// The caller still compares the returned hash with the one it wanted: the header is a promise,
/// the hash is the proof.
pub fn apply_patch(
    patch: impl Read,
    base: Option<(&mut dyn Read, &str)>,
    expected_size: u64,
    expected_sha256: &str,
    mut out: impl Write,
) -> Result<String, PatchError> {
    let mut decoder = zstd::stream::read::Decoder::new(patch)?;
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(&mut decoder, &mut header)?;
    if got < 9 || &header[..8] != PATCH_MAGIC {
        return Err(PatchError::BadMagic);
    }
    if header[8] != PATCH_VERSION {
        return Err(PatchError::Version(header[8]));
    }
    if got < HEADER_LEN {
        return Err(PatchError::Truncated { written: 0, size: expected_size });
    }
    let size = u64::from_le_bytes(header[9..17].try_into().expect("8 bytes"));
    let target_sha: [u8; 32] = header[17..49].try_into().expect("32 bytes");
    let base_sha: [u8; 32] = header[49..81].try_into().expect("32 bytes");
    if size != expected_size || target_sha != hash_hex_to_bytes(expected_sha256) {
        return Err(PatchError::WrongTarget {
            expected: format!("{expected_size} bytes with SHA-256 {expected_sha256}"),
            actual: format!("{size} bytes with SHA-256 {}", hex::encode(target_sha)),
        });
    }
    let offered = base.as_ref().map(|(_, sha)| hash_hex_to_bytes(sha)).unwrap_or([0; 32]);
    if offered != base_sha {
        return Err(PatchError::WrongBase { needed: hash_name(&base_sha), offered: hash_name(&offered) });
    }
    let mut base_reader = base.map(|(reader, _)| reader);
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; CHUNK];
    let mut base_chunk = vec![0u8; CHUNK];
    let mut written = 0u64;
    while written < size {
        let want = (size - written).min(CHUNK as u64) as usize;
        let n = read_full(&mut decoder, &mut chunk[..want])?;
        if n < want {
            return Err(PatchError::Truncated { written: written + n as u64, size });
        }
        if let Some(reader) = base_reader.as_mut() {
            let m = read_full(reader, &mut base_chunk[..n])?;
            if m < n {
                return Err(PatchError::SizeDiffers { base: written + m as u64, target: size });
            }
            chunk[..n].iter_mut().zip(&base_chunk[..n]).for_each(|(t, b)| *t ^= b);
        }
        hasher.update(&chunk[..n]);
        out.write_all(&chunk[..n])?;
        written += n as u64;
    }
    if read_full(&mut decoder, &mut chunk[..1])? != 0 {
        return Err(PatchError::Trailing { size });
    }
    if let Some(reader) = base_reader.as_mut()
        && read_full(reader, &mut base_chunk[..1])? != 0
    {
        return Err(PatchError::SizeDiffers { base: size + 1, target: size });
    }
    out.flush()?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::hash_bytes;

    fn make(target: &[u8], base: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::new();
        let base_sha = base.map(hash_bytes);
        let mut base_reader = base;
        write_patch(
            &mut &target[..],
            target.len() as u64,
            &hash_bytes(target),
            base_reader
                .as_mut()
                .map(|r| (r as &mut dyn Read, target.len() as u64, base_sha.as_deref().unwrap())),
            &mut out,
        )
        .unwrap();
        out
    }

    fn apply(patch: &[u8], target: &[u8], base: Option<&[u8]>) -> Result<Vec<u8>, PatchError> {
        let mut out = Vec::new();
        let base_sha = base.map(hash_bytes);
        let mut base_reader = base;
        let sha = apply_patch(
            patch,
            base_reader.as_mut().map(|r| (r as &mut dyn Read, base_sha.as_deref().unwrap())),
            target.len() as u64,
            &hash_bytes(target),
            &mut out,
        )?;
        assert_eq!(sha, hash_bytes(&out));
        Ok(out)
    }

    fn weights_like(len: usize, seed: u64, changed_every: usize) -> Vec<u8> {
        // Mostly zeros (unvisited weights), some floats; `changed_every` varies which ones.
        (0..len)
            .map(
                |i| {
                    if (i / 4) % changed_every == 0 { ((i as u64 * 2654435761 + seed) >> 7) as u8 } else { 0 }
                },
            )
            .collect()
    }

    #[test]
    fn a_delta_and_a_whole_file_rebuild_the_target_across_chunk_boundaries() {
        let base = weights_like(3 * CHUNK + 12345, 1, 7);
        let target = weights_like(3 * CHUNK + 12345, 2, 7);
        let delta = make(&target, Some(&base));
        assert_eq!(apply(&delta, &target, Some(&base)).unwrap(), target);
        let whole = make(&target, None);
        assert_eq!(apply(&whole, &target, None).unwrap(), target);
        assert!(whole.len() < target.len() / 2, "{} of {}", whole.len(), target.len());
    }

    #[test]
    fn few_changed_weights_make_a_small_delta() {
        let base = weights_like(2 * CHUNK, 1, 3);
        let mut target = base.clone();
        for i in (0..target.len()).step_by(4000) {
            target[i] ^= 0x5a;
        }
        let delta = make(&target, Some(&base));
        assert!(delta.len() * 50 < target.len(), "{} bytes for {}", delta.len(), target.len());
    }

    #[test]
    fn a_patch_for_another_base_or_target_is_refused_before_writing() {
        let base = weights_like(5000, 1, 2);
        let other_base = weights_like(5000, 9, 2);
        let target = weights_like(5000, 2, 2);
        let delta = make(&target, Some(&base));
        assert!(matches!(apply(&delta, &target, Some(&other_base)), Err(PatchError::WrongBase { .. })));
        assert!(matches!(apply(&delta, &target, None), Err(PatchError::WrongBase { .. })));
        assert!(matches!(apply(&delta, &other_base, Some(&base)), Err(PatchError::WrongTarget { .. })));
        let whole = make(&target, None);
        assert!(matches!(apply(&whole, &target, Some(&base)), Err(PatchError::WrongBase { .. })));
    }

    #[test]
    fn broken_patches_are_named() {
        let target = weights_like(300_000, 2, 2);
        let whole = make(&target, None);
        assert!(apply(&whole[..whole.len() / 2], &target, None).is_err());
        let mut flipped = whole.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xff;
        assert!(apply(&flipped, &target, None).is_err());
        let not_a_patch =
            zstd::encode_all(&b"Z2KBATCH and more bytes than a header holds, surely"[..], 3).unwrap();
        assert!(matches!(apply(&not_a_patch, &target, None), Err(PatchError::BadMagic)));
        let mut raw = PATCH_MAGIC.to_vec();
        raw.push(9);
        raw.extend([0u8; 80]);
        let future = zstd::encode_all(&raw[..], 3).unwrap();
        assert!(matches!(apply(&future, &target, None), Err(PatchError::Version(9))));
        // A valid header followed by more bytes than it promises.
        let mut longer = target.clone();
        longer.push(1);
        let mut out = Vec::new();
        let result = (|| -> Result<(), PatchError> {
            let mut encoder = zstd::stream::write::Encoder::new(&mut out, 3)?;
            encoder.write_all(PATCH_MAGIC)?;
            encoder.write_all(&[PATCH_VERSION])?;
            encoder.write_all(&(target.len() as u64).to_le_bytes())?;
            encoder.write_all(&hash_hex_to_bytes(&hash_bytes(&target)))?;
            encoder.write_all(&[0u8; 32])?;
            encoder.write_all(&longer)?;
            encoder.finish()?;
            Ok(())
        })();
        result.unwrap();
        assert!(matches!(apply(&out, &target, None), Err(PatchError::Trailing { .. })));
    }

    #[test]
    fn a_delta_needs_files_of_equal_size() {
        let base = weights_like(4000, 1, 2);
        let target = weights_like(5000, 2, 2);
        let mut out = Vec::new();
        let sha = hash_bytes(&base);
        let error = write_patch(
            &mut &target[..],
            5000,
            &hash_bytes(&target),
            Some((&mut &base[..], 4000, &sha)),
            &mut out,
        )
        .unwrap_err();
        assert!(matches!(error, PatchError::SizeDiffers { base: 4000, target: 5000 }));
    }

    #[test]
    fn patch_names_round_trip_and_refuse_anything_else() {
        let target = WeightsName::new(12, &"0123456789ab".repeat(6));
        let base = WeightsName::new(11, &"abcdef012345".repeat(6));
        let whole = PatchName::whole(target.clone());
        let delta = PatchName::delta(target.clone(), base.clone());
        assert_eq!(whole.to_string(), "r000012-0123456789ab.zst");
        assert_eq!(delta.to_string(), "r000012-0123456789ab.from-r000011-abcdef012345.zst");
        assert_eq!(PatchName::parse(&whole.to_string()).unwrap(), whole);
        assert_eq!(PatchName::parse(&delta.to_string()).unwrap(), delta);
        assert_eq!(delta.key(), "weights/r000012-0123456789ab.from-r000011-abcdef012345.zst");
        for bad in [
            "r000012-0123456789ab.safetensors",
            "../r000012-0123456789ab.zst",
            "r000012-0123456789ab.from-.zst",
            "r000012-0123456789ab.from-r000011-abcdef012345.from-r000010-abcdef012345.zst",
            "r0000012-0123456789ab.zst",
            "r000012-0123456789AB.zst",
        ] {
            assert!(PatchName::parse(bad).is_err(), "{bad}");
        }
    }
}
