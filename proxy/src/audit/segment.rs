//! Spool files on disk: segment naming, listing, recovery scan and reading — no threads.
//!
//! A spool directory holds `audit-<first seq, 20 digits>.jsonl` segments (one record per
//! line, canonical JSON), `*.torn` files with bytes moved aside on recovery, and the
//! shippers' cursor files. Segments sort by name in seq order.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::chain::record_hash;

const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";

/// The file name of the segment whose first record is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{PREFIX}{first_seq:020}{SUFFIX}")
}

/// The first seq encoded in a segment file name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

/// A segment file: its first seq and path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Segment {
    pub first_seq: u64,
    pub path: PathBuf,
}

/// The segments of a spool in seq order.
pub fn list_segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(first_seq) = name.to_str().and_then(parse_segment_name) {
            segments.push(Segment {
                first_seq,
                path: entry.path(),
            });
        }
    }
    segments.sort();
    Ok(segments)
}

/// The result of scanning one segment's bytes for its intact prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Bytes up to and including the newline of the last intact record.
    pub intact_len: usize,
    /// `(seq, hash)` of the last intact record.
    pub last: Option<(u64, String)>,
}

/// Find the last intact record: a complete line that parses and whose hash matches its
/// content. Everything after it is the torn tail (a SIGKILL mid-write leaves a partial
/// line; a torn page can leave a garbled complete one). Pure.
pub fn scan_segment(bytes: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut start = 0;
    while let Some(nl) = bytes[start..].iter().position(|b| *b == b'\n') {
        let end = start + nl;
        if let Some(rec) = intact_record(&bytes[start..end]) {
            scan.intact_len = end + 1;
            scan.last = Some(rec);
        }
        start = end + 1;
    }
    scan
}

fn intact_record(line: &[u8]) -> Option<(u64, String)> {
    let value: Value = serde_json::from_slice(line).ok()?;
    let seq = value.get("seq")?.as_u64()?;
    let prev = value.get("prevHash")?.as_str()?;
    let hash = value.get("hash")?.as_str()?;
    (record_hash(prev, &value) == hash).then(|| (seq, hash.to_owned()))
}

/// What recovery found in the last segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// `(seq, hash)` of the last intact record in the spool, if any.
    pub head: Option<(u64, String)>,
    /// The segment to keep appending to, with its length after recovery.
    pub segment: Option<(Segment, u64)>,
    /// A torn tail that was moved aside.
    pub torn: Option<TornTail>,
    /// The genesis value on the first record of the first segment.
    pub genesis: Option<String>,
}

/// Bytes cut from the end of the last segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub segment: PathBuf,
    pub bytes: u64,
    pub moved_to: PathBuf,
}

/// Recover a spool directory: find the head of the chain and move a torn tail of the last
/// segment into `<segment>.<millis>.torn` (fsynced before the segment is truncated, so the
/// bytes are never lost).
pub fn recover(dir: &Path) -> io::Result<Recovery> {
    let segments = list_segments(dir)?;
    let mut recovery = Recovery::default();
    for (i, segment) in segments.iter().enumerate().rev() {
        let bytes = std::fs::read(&segment.path)?;
        let scan = scan_segment(&bytes);
        if i + 1 == segments.len() {
            if scan.intact_len < bytes.len() {
                recovery.torn = Some(move_aside(segment, &bytes[scan.intact_len..])?);
                let file = OpenOptions::new().write(true).open(&segment.path)?;
                file.set_len(scan.intact_len as u64)?;
                file.sync_all()?;
            }
            recovery.segment = Some((segment.clone(), scan.intact_len as u64));
        }
        if scan.last.is_some() {
            recovery.head = scan.last;
            break;
        }
    }
    if let Some(first) = segments.first() {
        recovery.genesis = first_genesis(&first.path)?;
    }
    if recovery.genesis.is_none() {
        // The first segment was pruned after shipping: its marker names the chain.
        recovery.genesis = super::prune::read_marker(dir)?.and_then(|m| m.genesis);
    }
    Ok(recovery)
}

/// The `genesis` field of a segment's first line, if it has one.
pub(super) fn first_genesis(path: &Path) -> io::Result<Option<String>> {
    let mut line = String::new();
    BufReader::new(File::open(path)?).read_line(&mut line)?;
    Ok(serde_json::from_str::<Value>(&line)
        .ok()
        .and_then(|v| v.get("genesis")?.as_str().map(str::to_owned)))
}

fn move_aside(segment: &Segment, tail: &[u8]) -> io::Result<TornTail> {
    let millis = chrono::Utc::now().timestamp_millis();
    let mut name = segment.path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{millis}.torn"));
    let moved_to = segment.path.with_file_name(name);
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&moved_to)?;
    file.write_all(tail)?;
    file.sync_all()?;
    Ok(TornTail {
        segment: segment.path.clone(),
        bytes: tail.len() as u64,
        moved_to,
    })
}

/// Every line of every segment, in order, with its segment path and 1-based line number.
pub fn read_lines(
    dir: &Path,
) -> io::Result<impl Iterator<Item = io::Result<(PathBuf, u64, String)>>> {
    let segments = list_segments(dir)?;
    Ok(segments.into_iter().flat_map(|segment| {
        let lines: Box<dyn Iterator<Item = io::Result<(PathBuf, u64, String)>>> =
            match File::open(&segment.path) {
                Ok(file) => {
                    let path = segment.path.clone();
                    Box::new(
                        BufReader::new(file)
                            .lines()
                            .enumerate()
                            .map(move |(i, line)| line.map(|l| (path.clone(), i as u64 + 1, l))),
                    )
                }
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
        lines
    }))
}

/// Follows a spool from a seq onwards, reading only complete lines: what shippers use.
#[derive(Debug)]
pub struct Tail {
    dir: PathBuf,
    next_seq: u64,
    open: Option<(PathBuf, BufReader<File>)>,
}

impl Tail {
    /// Start at `next_seq` (the first record not yet delivered).
    pub fn new(dir: impl Into<PathBuf>, next_seq: u64) -> Self {
        Self {
            dir: dir.into(),
            next_seq: next_seq.max(1),
            open: None,
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Up to `max` records with seq in `next_seq..=up_to`, as parsed JSON. Returns fewer
    /// (possibly none) when the spool has no more complete lines yet.
    pub fn read(&mut self, max: usize, up_to: u64) -> io::Result<Vec<Value>> {
        let mut out = Vec::new();
        while out.len() < max && self.next_seq <= up_to {
            if self.open.is_none() && !self.open_segment()? {
                break;
            }
            let Some((_, reader)) = self.open.as_mut() else {
                break;
            };
            let mut line = String::new();
            let pos = reader.stream_position()?;
            let n = reader.read_line(&mut line)?;
            if n == 0 || !line.ends_with('\n') {
                // End of this segment for now: rewind a partial line, then see whether
                // the writer has moved on to the next segment.
                reader.seek(SeekFrom::Start(pos))?;
                if self.next_segment_exists()? {
                    self.open = None;
                    continue;
                }
                break;
            }
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                tracing::warn!(
                    seq = self.next_seq,
                    "audit tail: skipping a line that is not JSON"
                );
                continue;
            };
            let seq = value.get("seq").and_then(Value::as_u64).unwrap_or(0);
            if seq < self.next_seq {
                continue;
            }
            if seq > up_to {
                reader.seek(SeekFrom::Start(pos))?;
                break;
            }
            self.next_seq = seq + 1;
            out.push(value);
        }
        Ok(out)
    }

    /// Open the segment that should contain `next_seq`.
    fn open_segment(&mut self) -> io::Result<bool> {
        let segments = list_segments(&self.dir)?;
        let Some(segment) = segments.iter().rev().find(|s| s.first_seq <= self.next_seq) else {
            // Pruned before this reader got to them (a shipper added later):
            // go on from the oldest record still here rather than wait forever.
            if let Some(first) = segments.first().filter(|s| s.first_seq > self.next_seq) {
                tracing::warn!(
                    from = self.next_seq,
                    to = first.first_seq,
                    "audit tail: records were pruned before this shipper read them"
                );
                self.next_seq = first.first_seq;
                return self.open_segment();
            }
            return Ok(false);
        };
        let file = File::open(&segment.path)?;
        self.open = Some((segment.path.clone(), BufReader::new(file)));
        Ok(true)
    }

    fn next_segment_exists(&self) -> io::Result<bool> {
        let Some((current, _)) = &self.open else {
            return Ok(false);
        };
        Ok(list_segments(&self.dir)?
            .iter()
            .any(|s| s.path > *current && s.first_seq <= self.next_seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_seq_order() {
        assert_eq!(segment_name(42), "audit-00000000000000000042.jsonl");
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert!(segment_name(9) < segment_name(10));
        assert_eq!(parse_segment_name("audit-1.jsonl.torn"), None);
    }

    #[test]
    fn scan_stops_at_partial_and_garbled_lines() {
        let mut chain = super::super::chain::Chain::start(super::super::chain::new_genesis());
        let mut bytes = Vec::new();
        for _ in 0..3 {
            let mut rec = super::super::record::AuditRecord::new(
                super::super::record::RecordKind::SidecarStart,
            );
            let line = chain.link(&mut rec).unwrap();
            chain.commit(&rec);
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        let whole = bytes.len();
        assert_eq!(scan_segment(&bytes).intact_len, whole);
        assert_eq!(scan_segment(&bytes).last.unwrap().0, 3);
        bytes.extend_from_slice(b"{\"seq\":4,\"ti");
        assert_eq!(scan_segment(&bytes).intact_len, whole);
        bytes.extend_from_slice(b"\n");
        assert_eq!(
            scan_segment(&bytes).intact_len,
            whole,
            "garbled complete line is torn too"
        );
    }
}
