//! Arbitrary bytes as audit spool segment files, then the spool's start-up
//! path (`audit::segment::recover`: the chain head found, a torn tail moved
//! aside, the segment to append to), the writer resuming the chain
//! (`Chain::resume` + `Chain::link`, as `spool.rs` `Writer::open` and
//! `write_records` do) and `audit verify` (`audit::verify::verify_dir`).
//!
//! Input: `[flags, segment 0, 0x1E, segment 1, 0x1E, segment 2]`.
//! `flags % 3 + 1` segments are written (split at the ASCII record
//! separator 0x1E, which JSON text never contains raw); a segment is named
//! after the `seq` of its first line when that parses, else `i * 1000 + 1`.
//! `flags` bit 2: every line that parses as a JSON object gets its `prevHash`
//! set to the previous line's hash and its `hash` recomputed, so mutated
//! records stay intact and the fuzzer explores what lies past the hash check.
//!
//! Checked: after recovery the last segment is intact to its last byte, a
//! second recovery finds nothing to do, a record the resumed writer appends
//! is intact, and a spool that verified before the append still verifies
//! after it, one record longer.
#![no_main]
use std::io::Write;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use streamgate_proxy::audit::chain::{Chain, canonical_json, record_hash};
use streamgate_proxy::audit::record::{AuditRecord, RecordKind};
use streamgate_proxy::audit::segment::{recover, scan_segment, segment_name};
use streamgate_proxy::audit::verify::{Verdict, summary, torn_files, verify_dir};

const SEPARATOR: u8 = 0x1e;
const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Relink every JSON-object line: `prevHash` from the line before, `hash` recomputed.
fn relink(segments: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut prev: Option<String> = None;
    segments
        .iter()
        .map(|seg| {
            let mut out = Vec::with_capacity(seg.len() + 64);
            for (i, line) in seg.split(|b| *b == b'\n').enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                match serde_json::from_slice::<Value>(line) {
                    Ok(Value::Object(mut map)) => {
                        if let Some(p) = &prev {
                            map.insert("prevHash".into(), Value::String(p.clone()));
                        }
                        let prev_hash = map
                            .get("prevHash")
                            .and_then(Value::as_str)
                            .unwrap_or(GENESIS)
                            .to_owned();
                        let value = Value::Object(map);
                        let hash = record_hash(&prev_hash, &value);
                        let Value::Object(mut map) = value else {
                            unreachable!()
                        };
                        map.insert("hash".into(), Value::String(hash.clone()));
                        prev = Some(hash);
                        out.extend_from_slice(canonical_json(&Value::Object(map)).as_bytes());
                    }
                    _ => out.extend_from_slice(line),
                }
            }
            out
        })
        .collect()
}

fn first_seq(segment: &[u8], i: usize) -> u64 {
    let line = segment.split(|b| *b == b'\n').next().unwrap_or_default();
    serde_json::from_slice::<Value>(line)
        .ok()
        .and_then(|v| v.get("seq").and_then(Value::as_u64))
        .unwrap_or(i as u64 * 1000 + 1)
}

fn verdict(dir: &Path) -> Option<Verdict> {
    let v = verify_dir(dir, None, 1000, |_| {}).ok()?;
    let _ = summary(&v);
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    let [flags, rest @ ..] = data else {
        return;
    };
    let n = usize::from(flags % 3) + 1;
    let raw: Vec<&[u8]> = rest.splitn(n, |b| *b == SEPARATOR).collect();
    let segments: Vec<Vec<u8>> = if flags & 4 != 0 {
        relink(&raw)
    } else {
        raw.iter().map(|s| s.to_vec()).collect()
    };
    for s in &segments {
        let _ = scan_segment(s);
    }
    // tmpfs when there is one: recovery fsyncs.
    let base = Path::new("/dev/shm");
    let dir = match base.is_dir() {
        true => tempfile::tempdir_in(base),
        false => tempfile::tempdir(),
    }
    .expect("temp dir");
    let mut names = std::collections::BTreeSet::new();
    for (i, s) in segments.iter().enumerate() {
        let name = segment_name(first_seq(s, i));
        if !names.insert(name.clone()) {
            continue; // two segments claiming one first seq: keep the first
        }
        std::fs::write(dir.path().join(name), s).expect("write segment");
    }

    let Ok(recovery) = recover(dir.path()) else {
        return;
    };
    if let Some((segment, len)) = &recovery.segment {
        let bytes = std::fs::read(&segment.path).expect("read segment");
        assert_eq!(bytes.len() as u64, *len, "recovered length");
        assert_eq!(
            scan_segment(&bytes).intact_len,
            bytes.len(),
            "the segment to append to is intact after recovery"
        );
    }
    let again = recover(dir.path()).expect("second recovery");
    assert!(again.torn.is_none(), "a second recovery finds no torn tail");
    assert_eq!(again.head, recovery.head, "recovery is idempotent");
    let _ = torn_files(dir.path());
    let before = verdict(dir.path());

    // The writer resumes the chain and appends one record.
    let chain = match recovery.head.clone() {
        // A planted head at u64::MAX cannot continue: the writer refuses to open.
        Some((seq, hash)) => match Chain::resume(seq, hash, recovery.genesis.clone()) {
            Some(chain) => chain,
            None => return,
        },
        None => Chain::start(GENESIS.into()),
    };
    let mut record = AuditRecord::event(RecordKind::SidecarStart, "fuzz");
    let line = chain.link(&mut record).expect("link");
    let path = match &recovery.segment {
        Some((segment, _)) => segment.path.clone(),
        None => dir.path().join(segment_name(chain.next_seq())),
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open segment");
    file.write_all(format!("{line}\n").as_bytes())
        .expect("append");
    drop(file);
    let bytes = std::fs::read(&path).expect("read segment");
    let scan = scan_segment(&bytes);
    assert_eq!(
        scan.intact_len,
        bytes.len(),
        "the appended record is intact"
    );
    assert_eq!(
        scan.last.map(|(seq, _)| seq),
        Some(record.seq),
        "the appended record is the head"
    );
    let after = verdict(dir.path());
    if let Some(Verdict::Intact(report)) = before {
        match after {
            Some(Verdict::Intact(r)) => {
                assert_eq!(r.records, report.records + 1, "one record longer");
            }
            other => panic!("an intact spool broke when the writer resumed it: {other:?}"),
        }
    }
});
