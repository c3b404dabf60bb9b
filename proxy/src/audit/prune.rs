//! Pruning shipped segments: the collector holds the evidence, the spool is
//! its buffer. A segment goes only when every shipper's cursor is past its
//! last record, and never one of the newest `keep` (the local tail an
//! operator can read with `audit export` on the pod).
//!
//! What was pruned is written down first, in `pruned.json`: the chain's
//! genesis and the seq and hash of the last pruned record. Recovery continues
//! the chain's name from it, and `audit verify` starts from it (checking it
//! against the anchors when given: a forged marker does not match what the
//! collector holds).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::segment::{self, list_segments, scan_segment};
use super::shipper::Cursor;

/// The marker's file name in the spool directory.
pub const MARKER: &str = "pruned.json";

/// The last record pruned from the spool (after it was shipped).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pruned {
    /// The genesis value of the chain (its first record is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis: Option<String>,
    pub seq: u64,
    pub hash: String,
}

/// The marker, if segments were pruned from `dir`.
pub fn read_marker(dir: &Path) -> io::Result<Option<Pruned>> {
    match std::fs::read(dir.join(MARKER)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::other(format!("{MARKER}: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Write the marker atomically (write, fsync, rename, fsync the directory).
fn write_marker(dir: &Path, marker: &Pruned) -> io::Result<()> {
    let tmp = dir.join(format!("{MARKER}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(marker).map_err(io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(MARKER))?;
    File::open(dir)?.sync_all()
}

/// The seq every shipper has acknowledged (the smallest cursor); `None` when
/// no shipper ever ran here — then the spool is the only copy and nothing goes.
pub fn shipped_by_all(dir: &Path) -> io::Result<Option<u64>> {
    let mut floor: Option<u64> = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "cursor") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let acked = Cursor::new(dir, name)
            .load()
            .map_err(|e| io::Error::other(e.to_string()))?;
        floor = Some(floor.map_or(acked, |f| f.min(acked)));
    }
    Ok(floor)
}

/// Bytes held by the spool's segments.
pub fn spool_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for s in list_segments(dir)? {
        total += std::fs::metadata(&s.path)?.len();
    }
    Ok(total)
}

/// Remove the segments whose every record was shipped (seq ≤ `shipped`),
/// keeping the newest `keep`. Returns the bytes freed.
pub fn prune(dir: &Path, keep: usize, shipped: u64) -> io::Result<u64> {
    let segments = list_segments(dir)?;
    let prunable = segments.len().saturating_sub(keep.max(1));
    let mut genesis = None;
    let mut freed = 0;
    for (i, seg) in segments.iter().enumerate().take(prunable) {
        // A segment ends where the next one starts.
        let last_seq = segments[i + 1].first_seq.saturating_sub(1);
        if last_seq > shipped {
            break;
        }
        let bytes = std::fs::read(&seg.path)?;
        let Some((seq, hash)) = scan_segment(&bytes).last else {
            break;
        };
        if genesis.is_none() {
            genesis = match read_marker(dir)? {
                Some(m) => m.genesis,
                None => segment::first_genesis(&seg.path)?,
            };
        }
        // Written before the segment goes: a crash in between leaves a marker
        // pointing at records still on disk, which verify skips over.
        write_marker(
            dir,
            &Pruned {
                genesis: genesis.clone(),
                seq,
                hash,
            },
        )?;
        std::fs::remove_file(&seg.path)?;
        freed += bytes.len() as u64;
    }
    if freed > 0 {
        File::open(dir)?.sync_all()?;
    }
    Ok(freed)
}
