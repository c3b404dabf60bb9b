//! The hash chain — pure, no IO.
//!
//! `hash = "sha256:" + hex(SHA-256(prevHash ‖ canonical(record without "hash")))`, where
//! `prevHash` is the previous record's `hash` string (UTF-8 bytes) and, for seq 1, a random
//! genesis value that the record also carries in its `genesis` field.
//!
//! **Canonical JSON** (what is hashed): the record as a JSON value with every object's keys
//! sorted by their UTF-8 bytes, no whitespace anywhere, strings and numbers as `serde_json`
//! writes them (shortest escapes; integers only — the record has no floats), fields that are
//! absent stay absent. Spool lines are written in this same form (hash included), so a line
//! can be checked byte-for-byte by anyone with a JSON parser and SHA-256.
//!
//! Verification works on parsed JSON values rather than on our Rust type, so a record written
//! by a newer version with extra fields still verifies.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::record::AuditRecord;

/// The prefix of every hash and genesis value.
pub const HASH_PREFIX: &str = "sha256:";

/// Canonical JSON of `value` (see the module docs).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The hash of a record given as a JSON object; its own `hash` field, if any, is ignored.
pub fn record_hash(prev_hash: &str, record: &Value) -> String {
    match record {
        Value::Object(map) => hash_of(prev_hash, &canonical_without_hash(map).0),
        other => hash_of(prev_hash, &canonical_json(other)),
    }
}

fn hash_of(prev_hash: &str, canonical: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical.as_bytes());
    format!("{HASH_PREFIX}{}", hex::encode(hasher.finalize()))
}

/// Canonical JSON of a record object without its `hash` key, and the byte offset where
/// `"hash":…` belongs in sorted order (so the spool line is a splice, not a second pass).
fn canonical_without_hash(map: &serde_json::Map<String, Value>) -> (String, Option<usize>) {
    let mut keys: Vec<&String> = map.keys().filter(|k| k.as_str() != "hash").collect();
    keys.sort();
    let mut out = String::with_capacity(512);
    let mut hash_at = None;
    out.push('{');
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if hash_at.is_none() && key.as_str() > "hash" {
            hash_at = Some(out.len());
        }
        out.push_str(&Value::String(key.clone()).to_string());
        out.push(':');
        if let Some(v) = map.get(key) {
            write_canonical(v, &mut out);
        }
    }
    out.push('}');
    (out, hash_at)
}

/// A fresh random genesis value for a new spool.
pub fn new_genesis() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{HASH_PREFIX}{}", hex::encode(bytes))
}

/// Appends records to a chain: assigns `seq`, `prevHash`, `genesis` (seq 1) and `hash`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    next_seq: u64,
    head_hash: String,
    /// The value seq 1 was linked from: names this chain in its checkpoints,
    /// so an anchor held outside the pod says which chain it witnesses.
    genesis: Option<String>,
}

impl Chain {
    /// A new chain starting at seq 1 from `genesis`.
    pub fn start(genesis: String) -> Self {
        Self {
            next_seq: 1,
            head_hash: genesis.clone(),
            genesis: Some(genesis),
        }
    }

    /// Continue after the record (`last_seq`, `last_hash`); `None` when no
    /// seq is left after it (a spool whose head claims `u64::MAX` — no real
    /// chain gets there, a planted record does).
    /// `genesis` is the chain's first record's, when the spool still has it.
    pub fn resume(last_seq: u64, last_hash: String, genesis: Option<String>) -> Option<Self> {
        Some(Self {
            next_seq: last_seq.checked_add(1)?,
            head_hash: last_hash,
            genesis,
        })
    }

    /// The genesis value this chain started from, if known.
    pub fn genesis(&self) -> Option<&str> {
        self.genesis.as_deref()
    }

    /// The seq the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The hash of the last linked record (the genesis before the first).
    pub fn head_hash(&self) -> &str {
        &self.head_hash
    }

    /// Link `record` and return its canonical line (no newline). The chain advances only
    /// when [`Chain::commit`] is called with the returned hash — so a record that failed to
    /// reach the disk leaves no gap.
    pub fn link(&self, record: &mut AuditRecord) -> Result<String, serde_json::Error> {
        record.seq = self.next_seq;
        record.prev_hash = self.head_hash.clone();
        record.genesis = (self.next_seq == 1).then(|| self.head_hash.clone());
        record.hash = String::new();
        let value = serde_json::to_value(&*record)?;
        let Value::Object(map) = &value else {
            return Err(serde::ser::Error::custom(
                "an audit record serializes to a JSON object",
            ));
        };
        let (canonical, hash_at) = canonical_without_hash(map);
        let hash = hash_of(&record.prev_hash, &canonical);
        let field = format!("\"hash\":\"{hash}\"");
        record.hash = hash;
        // Splice the hash in at its sorted position: the line is the canonical JSON of
        // the whole record, hash included.
        Ok(match hash_at {
            Some(at) => format!("{}{field},{}", &canonical[..at], &canonical[at..]),
            None if canonical == "{}" => format!("{{{field}}}"),
            None => format!("{},{field}}}", &canonical[..canonical.len() - 1]),
        })
    }

    /// Advance past a linked record.
    pub fn commit(&mut self, record: &AuditRecord) {
        self.next_seq = record.seq + 1;
        self.head_hash = record.hash.clone();
    }
}

/// What a successful verification covered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The hash of the last record: compare it with an externally witnessed checkpoint.
    pub head_hash: Option<String>,
}

/// Why the chain is broken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BreakReason {
    #[error("line is not a JSON record: {0}")]
    NotARecord(String),
    #[error(
        "expected seq {expected}, found seq {found} (a record was deleted, reordered or inserted)"
    )]
    SeqMismatch { expected: u64, found: u64 },
    #[error("the first record does not carry its genesis value")]
    BadGenesis,
    #[error("prevHash does not match the hash of the previous record")]
    PrevHashMismatch,
    #[error("hash does not match the record's content (the record was edited)")]
    HashMismatch,
}

/// The first place the chain cannot be trusted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("BROKEN at seq {seq}: {reason}")]
pub struct ChainBreak {
    /// The first broken seq. For a seq mismatch this is the smaller of the expected and the
    /// found seq: a deleted or moved record's own seq, or the seq an inserted record claims.
    pub seq: u64,
    /// 1-based position of the offending record in the sequence given to the verifier.
    pub position: u64,
    pub reason: BreakReason,
}

/// Incremental verifier: feed records in spool order.
#[derive(Clone, Debug, Default)]
pub struct Verifier {
    prev: Option<(u64, String)>,
    report: VerifyReport,
}

impl Verifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Continue a chain whose records up to `seq` (with hash `hash`) were
    /// pruned from the spool after shipping.
    pub fn after(seq: u64, hash: String) -> Self {
        Self {
            prev: Some((seq, hash)),
            report: VerifyReport::default(),
        }
    }

    /// The seq the next record must have.
    fn expected_seq(&self) -> u64 {
        self.prev.as_ref().map_or(1, |(seq, _)| seq + 1)
    }

    /// Check one spool line.
    pub fn push_line(&mut self, line: &str) -> Result<(), ChainBreak> {
        match serde_json::from_str::<Value>(line) {
            Ok(value) => self.push(&value),
            Err(e) => Err(self.broken(self.expected_seq(), BreakReason::NotARecord(e.to_string()))),
        }
    }

    /// Check one record.
    pub fn push(&mut self, record: &Value) -> Result<(), ChainBreak> {
        let expected = self.expected_seq();
        let seq = record.get("seq").and_then(Value::as_u64);
        let prev_hash = record.get("prevHash").and_then(Value::as_str);
        let hash = record.get("hash").and_then(Value::as_str);
        let (Some(seq), Some(prev_hash), Some(hash)) = (seq, prev_hash, hash) else {
            return Err(self.broken(
                expected,
                BreakReason::NotARecord("missing seq, prevHash or hash".into()),
            ));
        };
        if seq != expected {
            let reason = BreakReason::SeqMismatch {
                expected,
                found: seq,
            };
            return Err(self.broken(seq.min(expected), reason));
        }
        match &self.prev {
            None => {
                if record.get("genesis").and_then(Value::as_str) != Some(prev_hash) {
                    return Err(self.broken(seq, BreakReason::BadGenesis));
                }
            }
            Some((_, prev)) if prev != prev_hash => {
                return Err(self.broken(seq, BreakReason::PrevHashMismatch));
            }
            Some(_) => {}
        }
        if record_hash(prev_hash, record) != hash {
            return Err(self.broken(seq, BreakReason::HashMismatch));
        }
        self.report.records += 1;
        self.report.first_seq.get_or_insert(seq);
        self.report.last_seq = Some(seq);
        self.report.head_hash = Some(hash.to_owned());
        self.prev = Some((seq, hash.to_owned()));
        Ok(())
    }

    fn broken(&self, seq: u64, reason: BreakReason) -> ChainBreak {
        ChainBreak {
            seq,
            position: self.report.records + 1,
            reason,
        }
    }

    /// What has been verified so far.
    pub fn report(&self) -> &VerifyReport {
        &self.report
    }

    pub fn finish(self) -> VerifyReport {
        self.report
    }
}

/// Verify a whole chain given in spool order; names the first broken seq.
pub fn verify<'a>(
    records: impl IntoIterator<Item = &'a Value>,
) -> Result<VerifyReport, ChainBreak> {
    let mut verifier = Verifier::new();
    for record in records {
        verifier.push(record)?;
    }
    Ok(verifier.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditDecision, Operation, ResourceAccess, Subject};

    const N: u64 = 50;

    fn chain_of(n: u64) -> Vec<Value> {
        let mut chain = Chain::start(new_genesis());
        (0..n)
            .map(|i| {
                let mut rec = AuditRecord::request("Fetch", 13, Operation::Read)
                    .subject(Subject::user(
                        format!("user{}", i % 3),
                        vec!["clinicians".into()],
                        None,
                    ))
                    .resource(ResourceAccess::partition(
                        "patient-records",
                        0,
                        Some((i as i64 * 10, i as i64 * 10 + 9)),
                        10,
                        1000,
                    ))
                    .decision(AuditDecision::Allow, "rule r");
                let line = chain.link(&mut rec).unwrap();
                chain.commit(&rec);
                serde_json::from_str(&line).unwrap()
            })
            .collect()
    }

    fn pos(seq: u64) -> usize {
        (seq - 1) as usize
    }

    #[test]
    fn canonical_sorts_keys_without_whitespace() {
        let v: Value =
            serde_json::from_str(r#"{ "b": [1, {"z": "é\"", "a": null}], "a": true }"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":true,"b":[1,{"a":null,"z":"é\""}]}"#
        );
    }

    #[test]
    fn spool_lines_are_canonical_json() {
        let chain = Chain::start(new_genesis());
        let mut rec =
            AuditRecord::request("Fetch", 13, Operation::Read).decision(AuditDecision::Allow, "r");
        let line = chain.link(&mut rec).unwrap();
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(canonical_json(&parsed), line);
        assert_eq!(parsed["hash"], Value::from(rec.hash.clone()));
        assert_eq!(record_hash(&rec.prev_hash, &parsed), rec.hash);
    }

    #[test]
    fn intact_chain_verifies() {
        let records = chain_of(N);
        let report = verify(&records).unwrap();
        assert_eq!(report.records, N);
        assert_eq!(report.first_seq, Some(1));
        assert_eq!(report.last_seq, Some(N));
        assert_eq!(
            report.head_hash.as_deref(),
            records[pos(N)]["hash"].as_str()
        );
        assert_eq!(records[0]["genesis"], records[0]["prevHash"]);
        assert!(records[1].get("genesis").is_none());
    }

    #[test]
    fn chains_from_different_genesis_differ() {
        assert_ne!(chain_of(1)[0]["hash"], chain_of(1)[0]["hash"]);
    }

    #[test]
    fn deleted_record_is_named() {
        // Deleting the last record is a truncation: only an external checkpoint can tell.
        for seq in 1..N {
            let mut records = chain_of(N);
            records.remove(pos(seq));
            let err = verify(&records).unwrap_err();
            assert_eq!(err.seq, seq, "delete {seq}: {err}");
        }
    }

    #[test]
    fn edited_record_is_named() {
        for seq in 1..=N {
            let mut records = chain_of(N);
            records[pos(seq)]["resources"][0]["records"] = Value::from(9);
            let err = verify(&records).unwrap_err();
            assert_eq!(err.seq, seq, "edit {seq}: {err}");
            assert_eq!(err.reason, BreakReason::HashMismatch);
        }
    }

    #[test]
    fn edited_record_with_recomputed_hash_breaks_the_next_link() {
        for seq in 1..N {
            let mut records = chain_of(N);
            let rec = &mut records[pos(seq)];
            rec["decision"] = Value::from("Deny");
            let prev = rec["prevHash"].as_str().unwrap().to_owned();
            rec["hash"] = Value::from(record_hash(&prev, rec));
            let err = verify(&records).unwrap_err();
            assert_eq!(err.seq, seq + 1, "edit+rehash {seq}: {err}");
            assert_eq!(err.reason, BreakReason::PrevHashMismatch);
        }
    }

    #[test]
    fn reordered_records_are_named() {
        for seq in 1..N {
            let mut records = chain_of(N);
            records.swap(pos(seq), pos(seq + 1));
            let err = verify(&records).unwrap_err();
            assert_eq!(err.seq, seq, "swap {seq}<->{}: {err}", seq + 1);
        }
    }

    #[test]
    fn inserted_record_is_named() {
        // A forged record claiming seq `seq`, correctly linked to seq-1: the original
        // seq `seq` that follows it no longer fits.
        for seq in 1..=N {
            let mut records = chain_of(N);
            let mut forged = records[pos(seq)].clone();
            forged["subject"]["name"] = Value::from("mallory");
            let prev = forged["prevHash"].as_str().unwrap().to_owned();
            forged["hash"] = Value::from(record_hash(&prev, &forged));
            records.insert(pos(seq), forged);
            let err = verify(&records).unwrap_err();
            assert_eq!(err.seq, seq, "insert at {seq}: {err}");
        }
        // A copied record dropped in after seq `seq`: it repeats seq `seq`.
        for seq in 1..=N {
            let mut records = chain_of(N);
            let copy = records[pos(seq)].clone();
            records.insert(pos(seq) + 1, copy);
            let err = verify(&records).unwrap_err();
            assert_eq!(err.seq, seq, "duplicate of {seq}: {err}");
        }
    }

    #[test]
    fn garbage_line_is_named_by_expected_seq() {
        let records = chain_of(5);
        let mut v = Verifier::new();
        for r in &records[..3] {
            v.push_line(&r.to_string()).unwrap();
        }
        let err = v.push_line("{not json").unwrap_err();
        assert_eq!(err.seq, 4);
        assert!(matches!(err.reason, BreakReason::NotARecord(_)));
    }

    #[test]
    fn resumed_chain_continues_verifiably() {
        let mut records = chain_of(3);
        let last = &records[2];
        assert_eq!(
            Chain::resume(u64::MAX, "h".into(), None),
            None,
            "no seq after u64::MAX"
        );
        let mut chain = Chain::resume(3, last["hash"].as_str().unwrap().to_owned(), None).unwrap();
        let mut rec = AuditRecord::event(crate::audit::record::RecordKind::SidecarStart, "restart");
        let line = chain.link(&mut rec).unwrap();
        chain.commit(&rec);
        records.push(serde_json::from_str(&line).unwrap());
        assert_eq!(verify(&records).unwrap().last_seq, Some(4));
        assert_eq!(chain.next_seq(), 5);
    }
}
