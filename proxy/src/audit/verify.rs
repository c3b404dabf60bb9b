//! Verify a spool directory: recompute the chain across all segments, in order.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::anchors::{AnchorBreak, AnchorCheck, Witnessed};
use super::chain::{ChainBreak, Verifier, VerifyReport};
use super::segment::{self, list_segments};

/// Where a break was found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakAt {
    pub chain: ChainBreak,
    pub segment: PathBuf,
    pub line: u64,
}

/// The verdict on a spool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Intact(VerifyReport),
    Broken {
        report: VerifyReport,
        at: BreakAt,
    },
    /// Consistent in itself, but not with what was witnessed outside the pod.
    Unanchored {
        report: VerifyReport,
        why: AnchorBreak,
    },
}

/// A spool that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{dir}: {source}")]
    Io { dir: String, source: std::io::Error },
    #[error("{0}: no audit segments (audit-*.jsonl) in this directory")]
    Empty(String),
}

/// Recompute the chain of the spool in `dir` and, given `anchors`, check it
/// against them. `progress` is called with the number of records verified so
/// far, every `every` records.
pub fn verify_dir(
    dir: &Path,
    anchors: Option<&Witnessed>,
    every: u64,
    mut progress: impl FnMut(u64),
) -> Result<Verdict, VerifyError> {
    let io = |source| VerifyError::Io {
        dir: dir.display().to_string(),
        source,
    };
    if list_segments(dir).map_err(io)?.is_empty() {
        return Err(VerifyError::Empty(dir.display().to_string()));
    }
    let pruned = super::prune::read_marker(dir).map_err(io)?;
    let mut verifier = match &pruned {
        Some(m) => Verifier::after(m.seq, m.hash.clone()),
        None => Verifier::new(),
    };
    let mut anchored = anchors.map(AnchorCheck::new);
    if let (Some(check), Some(m)) = (anchored.as_mut(), &pruned)
        && let Err(why) = check.pruned_up_to(m.genesis.as_deref(), m.seq, &m.hash)
    {
        let report = verifier.finish();
        return Ok(Verdict::Unanchored { report, why });
    }
    for line in segment::read_lines(dir).map_err(io)? {
        let (path, line_no, text) = line.map_err(io)?;
        let value = serde_json::from_str::<Value>(&text);
        // Records a crash left behind after their pruning was written down.
        let seq = value.as_ref().ok().and_then(|v| v.get("seq")?.as_u64());
        if let (Some(m), Some(seq)) = (&pruned, seq)
            && seq <= m.seq
        {
            continue;
        }
        let pushed = match &value {
            Ok(v) => verifier.push(v),
            Err(_) => verifier.push_line(&text),
        };
        if let Err(chain) = pushed {
            let report = verifier.finish();
            return Ok(Verdict::Broken {
                report,
                at: BreakAt {
                    chain,
                    segment: path,
                    line: line_no,
                },
            });
        }
        if let (Some(check), Ok(v)) = (anchored.as_mut(), &value)
            && let Err(why) = check.push(v)
        {
            let report = verifier.finish();
            return Ok(Verdict::Unanchored { report, why });
        }
        let n = verifier.report().records;
        if every > 0 && n.is_multiple_of(every) {
            progress(n);
        }
    }
    let report = verifier.finish();
    match anchored.map(AnchorCheck::finish) {
        Some(Err(why)) => Ok(Verdict::Unanchored { report, why }),
        _ => Ok(Verdict::Intact(report)),
    }
}

/// Files holding bytes moved aside by recovery (worth an auditor's look).
pub fn torn_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "torn"))
        .collect();
    out.sort();
    Ok(out)
}

/// The one-line summary printed by `audit verify`.
pub fn summary(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Intact(r) => match (r.first_seq, r.last_seq, &r.head_hash) {
            (Some(1), Some(b), Some(h)) => {
                format!("{} records, seq 1..{b}, head hash {h}, OK", r.records)
            }
            (Some(a), Some(b), Some(h)) => format!(
                "{} records, seq {a}..{b}, head hash {h}, OK (seq 1..{} were shipped and pruned: \
                 verify them in the collector's copy)",
                r.records,
                a - 1
            ),
            _ => "0 records, OK".to_owned(),
        },
        Verdict::Broken { report, at } => format!(
            "BROKEN at seq {}: {} ({} line {}; {} records verified before it)",
            at.chain.seq,
            at.chain.reason,
            at.segment
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            at.line,
            report.records
        ),
        Verdict::Unanchored { report, why } => format!(
            "NOT ANCHORED: {why} ({} records verified in the spool)",
            report.records
        ),
    }
}
