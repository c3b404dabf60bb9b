//! Anchors: chain heads witnessed outside the pod, and the auditor's copy.
//!
//! A spool can only prove it is internally consistent: whoever can write the
//! pod's volume can delete it and start a fresh genesis, rewrite every record
//! with fresh hashes, or cut the tail. What the pod cannot rewrite is what it
//! already shipped: the collector's copy holds the records (their bodies are
//! the spooled lines, byte for byte) and the `Checkpoint` records, each naming
//! its chain by genesis. Those are the anchors.
//!
//! This module is pure: it reads an auditor's copy (OTLP JSON as a collector's
//! file exporter writes it — one `ExportLogsServiceRequest` per line, or the
//! bare ResourceLogs array a Kafka exporter writes per message — or plain JSON
//! lines of records, as `audit export` writes them), links the chains in it,
//! and checks a spool's records against them.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::chain::record_hash;

/// A copy that cannot be used as evidence.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    #[error("line {line}: {why}")]
    Unreadable { line: usize, why: String },
    #[error("record seq {seq} (hash {hash}) does not match its content: the copy was edited")]
    Edited { seq: u64, hash: String },
    #[error(
        "chain {chain}: two different records claim seq {seq} ({a} and {b}): the chain was forked or rewritten"
    )]
    Fork {
        chain: String,
        seq: u64,
        a: String,
        b: String,
    },
}

/// A checkpoint witnessed by a Kubernetes Event: `(chain genesis, seq, hash)`.
pub type EventAnchor = (String, u64, String);

/// The checkpoints of a Kubernetes Event list (`kubectl get events -o json`,
/// core/v1 `message` or events.k8s.io `note`), or `None` when `text` is not
/// an Event document. Events are written through the API server by the
/// sidecar's own account, which the app's cannot impersonate: a witness the
/// pod cannot rewrite (kept for the cluster's event TTL, one hour by default
/// — export them, or rely on the collector's copy, for longer).
pub fn event_anchors(text: &str) -> Option<Vec<EventAnchor>> {
    let doc: Value = serde_json::from_str(text).ok()?;
    let items: Vec<&Value> = match (doc.get("items"), doc.get("kind")) {
        (Some(items), _) => items.as_array()?.iter().collect(),
        (None, Some(kind)) if kind == "Event" => vec![&doc],
        _ => return None,
    };
    let anchors = items
        .into_iter()
        .filter(|e| {
            e.get("reason").and_then(Value::as_str) == Some(super::events::CHECKPOINT_REASON)
        })
        .filter_map(|e| {
            let note = e
                .get("note")
                .or_else(|| e.get("message"))
                .and_then(Value::as_str)?;
            let (seq, hash, chain) = super::events::parse_checkpoint_note(note)?;
            Some((chain?, seq, hash))
        })
        .collect();
    Some(anchors)
}

/// Every audit record in an auditor's copy, in the order found.
pub fn records_in_copy(text: &str) -> Result<Vec<Value>, CopyError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let unreadable = |why: String| CopyError::Unreadable { line: line_no, why };
        let value: Value =
            serde_json::from_str(line).map_err(|e| unreadable(format!("not JSON: {e}")))?;
        // `{"resourceLogs": [...]}` is what a collector's file exporter
        // writes; a bare `[...]` of ResourceLogs is what rotel's Kafka
        // exporter (format json) puts in each message.
        let resource_logs = value
            .get("resourceLogs")
            .or(value.is_array().then_some(&value));
        if let Some(resource_logs) = resource_logs {
            for body in otlp_bodies(resource_logs) {
                let record: Value = serde_json::from_str(body)
                    .map_err(|e| unreadable(format!("a log body is not an audit record: {e}")))?;
                out.push(record);
            }
        } else if value.get("seq").is_some() && value.get("hash").is_some() {
            out.push(value);
        } else {
            return Err(unreadable(
                "neither an audit record nor OTLP JSON (resourceLogs)".into(),
            ));
        }
    }
    Ok(out)
}

/// The string bodies of `resourceLogs[].scopeLogs[].logRecords[]`.
fn otlp_bodies(resource_logs: &Value) -> impl Iterator<Item = &str> {
    resource_logs
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| {
            r.get("scopeLogs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .flat_map(|s| {
            s.get("logRecords")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|l| l.get("body")?.get("stringValue")?.as_str())
}

fn short(hash: &str) -> String {
    let hex = hash.strip_prefix("sha256:").unwrap_or(hash);
    hex.chars().take(12).collect()
}

/// One chain as the copy witnesses it: seq → hash of every record the copy
/// links to its genesis, plus every head a checkpoint of the chain names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WitnessedChain {
    pub points: BTreeMap<u64, String>,
    /// The last seq linked, record by record, from the genesis.
    pub linked_to: u64,
}

impl WitnessedChain {
    /// The highest seq any anchor witnesses.
    pub fn last_witnessed(&self) -> u64 {
        self.points.keys().next_back().copied().unwrap_or(0)
    }
}

/// The chains of an auditor's copy, keyed by genesis value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Witnessed {
    pub chains: BTreeMap<String, WitnessedChain>,
    /// Records that neither link to a genesis in the copy nor name their chain.
    pub unlinked: Vec<u64>,
}

impl Witnessed {
    /// Link the copy's records into chains. Records shipped twice
    /// (at-least-once delivery) count once; an edited record or two
    /// different records at one place of a chain make the copy unusable.
    pub fn from_records(records: &[Value]) -> Result<Self, CopyError> {
        let mut by_hash: HashMap<&str, &Value> = HashMap::new();
        for r in records {
            let (Some(seq), Some(hash)) = (
                r.get("seq").and_then(Value::as_u64),
                r.get("hash").and_then(Value::as_str),
            ) else {
                continue;
            };
            let prev = r.get("prevHash").and_then(Value::as_str).unwrap_or("");
            if record_hash(prev, r) != hash {
                return Err(CopyError::Edited {
                    seq,
                    hash: hash.to_owned(),
                });
            }
            by_hash.insert(hash, r);
        }
        let mut next_of: HashMap<&str, &Value> = HashMap::new();
        for r in by_hash.values() {
            let prev = r.get("prevHash").and_then(Value::as_str).unwrap_or("");
            if let Some(other) = next_of.insert(prev, r)
                && other.get("hash") != r.get("hash")
            {
                return Err(CopyError::Fork {
                    chain: "?".into(),
                    seq: seq_of(r),
                    a: short(hash_of(other)),
                    b: short(hash_of(r)),
                });
            }
        }
        let mut out = Witnessed::default();
        let mut linked: std::collections::HashSet<&str> = Default::default();
        for r in by_hash.values() {
            let genesis = r.get("genesis").and_then(Value::as_str);
            let prev = r.get("prevHash").and_then(Value::as_str);
            let (Some(genesis), 1) = (genesis, seq_of(r)) else {
                continue;
            };
            if prev != Some(genesis) {
                continue;
            }
            let chain = out.chains.entry(genesis.to_owned()).or_default();
            let mut at = *r;
            loop {
                linked.insert(hash_of(at));
                chain.points.insert(seq_of(at), hash_of(at).to_owned());
                chain.linked_to = seq_of(at);
                match next_of.get(hash_of(at)) {
                    Some(next) if seq_of(next) == seq_of(at) + 1 => at = next,
                    _ => break,
                }
            }
        }
        // Checkpoints name their chain: they anchor it even past a gap.
        for r in by_hash.values() {
            let Some(cp) = r.get("checkpoint") else {
                continue;
            };
            let Some(genesis) = cp.get("genesis").and_then(Value::as_str) else {
                continue;
            };
            let witnessed = [
                (
                    cp.get("seq").and_then(Value::as_u64),
                    cp.get("hash").and_then(Value::as_str),
                ),
                (Some(seq_of(r)), Some(hash_of(r))),
            ];
            for (seq, hash) in witnessed {
                if let (Some(seq), Some(hash)) = (seq, hash) {
                    out.witness(genesis, seq, hash)?;
                }
            }
            linked.insert(hash_of(r));
        }
        let mut unlinked: Vec<u64> = by_hash
            .iter()
            .filter(|(h, _)| !linked.contains(*h))
            .map(|(_, r)| seq_of(r))
            .collect();
        unlinked.sort_unstable();
        out.unlinked = unlinked;
        Ok(out)
    }
}

impl Witnessed {
    /// One more witnessed head of `genesis`'s chain (a checkpoint, an Event):
    /// a different hash at a seq already witnessed is a fork.
    pub fn witness(&mut self, genesis: &str, seq: u64, hash: &str) -> Result<(), CopyError> {
        let chain = self.chains.entry(genesis.to_owned()).or_default();
        match chain.points.get(&seq) {
            Some(known) if known != hash => Err(CopyError::Fork {
                chain: short(genesis),
                seq,
                a: short(known),
                b: short(hash),
            }),
            _ => {
                chain.points.insert(seq, hash.to_owned());
                Ok(())
            }
        }
    }
}

fn seq_of(r: &Value) -> u64 {
    r.get("seq").and_then(Value::as_u64).unwrap_or(0)
}

fn hash_of(r: &Value) -> &str {
    r.get("hash").and_then(Value::as_str).unwrap_or("")
}

/// Where a spool disagrees with its anchors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnchorBreak {
    #[error(
        "the spool's chain starts from genesis {genesis}, which no anchor witnessed: a fresh genesis \
         (the spool was deleted and restarted) or anchors of another sidecar"
    )]
    UnknownGenesis { genesis: String },
    #[error("the spool's first record carries no genesis value")]
    NoGenesis,
    #[error(
        "seq {seq} has hash {spool} in the spool but {anchor} in the anchors: the record was rewritten"
    )]
    Rewritten {
        seq: u64,
        spool: String,
        anchor: String,
    },
    #[error(
        "the spool ends at seq {spool_last} but the anchors witnessed seq {witnessed}: records were cut \
         from the end (truncation, or a deleted last segment)"
    )]
    Truncated { spool_last: u64, witnessed: u64 },
}

/// Checks a spool's records, fed in order, against what was witnessed.
#[derive(Debug)]
pub struct AnchorCheck<'a> {
    witnessed: &'a Witnessed,
    chain: Option<&'a WitnessedChain>,
    last_seq: u64,
    matched: usize,
}

impl<'a> AnchorCheck<'a> {
    pub fn new(witnessed: &'a Witnessed) -> Self {
        Self {
            witnessed,
            chain: None,
            last_seq: 0,
            matched: 0,
        }
    }

    /// One spool record (already verified by the chain [`super::chain::Verifier`]).
    pub fn push(&mut self, record: &Value) -> Result<(), AnchorBreak> {
        if self.chain.is_none() {
            self.select(record.get("genesis").and_then(Value::as_str))?;
        }
        self.point(seq_of(record), hash_of(record))
    }

    /// The spool was pruned after shipping: it continues the chain named
    /// `genesis` after the record (`seq`, `hash`), which the anchors must know.
    pub fn pruned_up_to(
        &mut self,
        genesis: Option<&str>,
        seq: u64,
        hash: &str,
    ) -> Result<(), AnchorBreak> {
        self.select(genesis)?;
        self.point(seq, hash)
    }

    fn select(&mut self, genesis: Option<&str>) -> Result<(), AnchorBreak> {
        let genesis = genesis.ok_or(AnchorBreak::NoGenesis)?;
        self.chain = Some(self.witnessed.chains.get(genesis).ok_or_else(|| {
            AnchorBreak::UnknownGenesis {
                genesis: short(genesis),
            }
        })?);
        Ok(())
    }

    fn point(&mut self, seq: u64, hash: &str) -> Result<(), AnchorBreak> {
        if let Some(anchor) = self.chain.and_then(|c| c.points.get(&seq)) {
            if anchor != hash {
                return Err(AnchorBreak::Rewritten {
                    seq,
                    spool: short(hash),
                    anchor: short(anchor),
                });
            }
            self.matched += 1;
        }
        self.last_seq = seq;
        Ok(())
    }

    /// After the last record: did the spool reach every witnessed head?
    /// Returns how many anchor points matched.
    pub fn finish(self) -> Result<usize, AnchorBreak> {
        let Some(chain) = self.chain else {
            return Err(AnchorBreak::NoGenesis);
        };
        let witnessed = chain.last_witnessed();
        if witnessed > self.last_seq {
            return Err(AnchorBreak::Truncated {
                spool_last: self.last_seq,
                witnessed,
            });
        }
        Ok(self.matched)
    }
}

/// What `audit verify` says of an auditor's copy on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyReport {
    /// Per chain (short genesis): records linked from genesis, and the last
    /// seq any checkpoint witnessed.
    pub chains: Vec<(String, u64, u64)>,
    /// Chains whose checkpoints witness records the copy does not link to
    /// their genesis: records are missing from the copy.
    pub gaps: Vec<(String, u64)>,
    pub unlinked: usize,
}

impl CopyReport {
    pub fn of(w: &Witnessed) -> Self {
        let chains: Vec<_> = w
            .chains
            .iter()
            .map(|(g, c)| (short(g), c.linked_to, c.last_witnessed()))
            .collect();
        let gaps = chains
            .iter()
            .filter(|(_, linked, last)| last > linked)
            .map(|(g, linked, _)| (g.clone(), linked + 1))
            .collect();
        Self {
            chains,
            gaps,
            unlinked: w.unlinked.len(),
        }
    }

    pub fn is_complete(&self) -> bool {
        self.gaps.is_empty() && self.unlinked == 0 && !self.chains.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{Chain, new_genesis};
    use crate::audit::record::{AuditRecord, CheckpointRef, RecordKind};

    /// A chain of `n` records with a checkpoint record every `every`.
    fn chain(n: u64, every: u64) -> Vec<Value> {
        let mut chain = Chain::start(new_genesis());
        let mut out = Vec::new();
        for i in 1..=n {
            let mut rec = AuditRecord::event(RecordKind::SidecarStart, format!("r{i}"));
            if i % every == 0 {
                rec.kind = RecordKind::Checkpoint;
                rec.checkpoint = Some(CheckpointRef {
                    seq: chain.next_seq() - 1,
                    hash: chain.head_hash().to_owned(),
                    genesis: chain.genesis().map(str::to_owned),
                });
            }
            let line = chain.link(&mut rec).unwrap();
            chain.commit(&rec);
            out.push(serde_json::from_str(&line).unwrap());
        }
        out
    }

    fn check(spool: &[Value], copy: &[Value]) -> Result<usize, AnchorBreak> {
        let w = Witnessed::from_records(copy).unwrap();
        let mut c = AnchorCheck::new(&w);
        for r in spool {
            c.push(r)?;
        }
        c.finish()
    }

    #[test]
    fn a_spool_matching_its_shipped_copy_passes() {
        let spool = chain(30, 10);
        // The collector got the first 25 records, some twice (at-least-once).
        let mut copy = spool[..25].to_vec();
        copy.extend_from_slice(&spool[5..8]);
        assert_eq!(check(&spool, &copy), Ok(25));
    }

    #[test]
    fn truncation_and_a_deleted_tail_are_caught() {
        let spool = chain(30, 10);
        let copy = spool.clone();
        assert_eq!(
            check(&spool[..22], &copy),
            Err(AnchorBreak::Truncated {
                spool_last: 22,
                witnessed: 30
            })
        );
    }

    #[test]
    fn a_fresh_genesis_is_caught() {
        let old = chain(30, 10);
        let fresh = chain(5, 10);
        assert!(matches!(
            check(&fresh, &old),
            Err(AnchorBreak::UnknownGenesis { .. })
        ));
    }

    #[test]
    fn a_whole_chain_rewrite_is_caught_at_its_first_anchor() {
        let spool = chain(30, 10);
        // Same genesis, every record rewritten and re-hashed from seq 1.
        let genesis = spool[0]["genesis"].as_str().unwrap().to_owned();
        let mut forged_chain = Chain::start(genesis);
        let forged: Vec<Value> = (1..=30)
            .map(|i| {
                let mut rec = AuditRecord::event(RecordKind::SidecarStart, format!("forged {i}"));
                let line = forged_chain.link(&mut rec).unwrap();
                forged_chain.commit(&rec);
                serde_json::from_str(&line).unwrap()
            })
            .collect();
        assert!(matches!(
            check(&forged, &spool),
            Err(AnchorBreak::Rewritten { seq: 1, .. })
        ));
    }

    #[test]
    fn checkpoints_anchor_past_a_gap_in_the_copy() {
        let spool = chain(30, 10);
        // Records 11..=19 never reached the collector; checkpoint 20 did.
        let mut copy = spool[..10].to_vec();
        copy.extend_from_slice(&spool[19..]);
        let w = Witnessed::from_records(&copy).unwrap();
        let report = CopyReport::of(&w);
        assert_eq!(report.gaps.len(), 1, "{report:?}");
        assert!(!report.is_complete());
        // The spool still matches every point witnessed.
        assert!(check(&spool, &copy).is_ok());
    }

    #[test]
    fn an_edited_record_in_the_copy_is_refused() {
        let mut copy = chain(5, 10);
        copy[2]["reason"] = Value::String("edited".into());
        assert!(matches!(
            Witnessed::from_records(&copy),
            Err(CopyError::Edited { seq: 3, .. })
        ));
    }

    #[test]
    fn otlp_json_lines_are_read_as_records() {
        let records = chain(3, 10);
        let line = serde_json::json!({"resourceLogs": [{"resource": {}, "scopeLogs": [{"logRecords":
            records.iter().map(|r| serde_json::json!({"body": {"stringValue": r.to_string()}})).collect::<Vec<_>>()
        }]}]});
        let text = format!("{line}\n{}\n", records[0]);
        let got = records_in_copy(&text).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[2], records[2]);
        assert!(matches!(
            records_in_copy("{\"other\":1}"),
            Err(CopyError::Unreadable { line: 1, .. })
        ));
    }
}
