//! `audit replay`: what one principal read and wrote, from the trail alone.
//!
//! Pure over records: which topic/partition/offset ranges each governed
//! request of the subject touched, under which decision and rule or approval,
//! and — where the policy kept payloads (`Full`) — the records as delivered.
//! Input is a spool or the collector's copy; the CLI verifies it first.

use std::collections::HashSet;

use base64::Engine as _;
use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use serde::Serialize;

use super::export::Filter;
use super::record::{AuditRecord, RecordKind};

/// One range the subject read or wrote (or was refused).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Access {
    pub seq: u64,
    pub time: String,
    pub api: String,
    pub operation: String,
    pub topic: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offsets: Option<(i64, i64)>,
    pub records: u64,
    pub decision: String,
    /// The rule or approval that decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masked_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_digest: Option<String>,
    /// The partition's digest (what `audit match` compares with the broker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The record values as delivered (payload `Full` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered: Option<Vec<String>>,
}

/// The accesses of the records `filter` selects (requests only), in trail
/// order; a record shipped twice counts once. `payloads`: decode `Full`
/// payloads into the values delivered.
pub fn accesses<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
    filter: &Filter,
    payloads: bool,
) -> Vec<Access> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for r in records {
        if r.kind != RecordKind::Request
            || !filter.matches(r)
            || !seen.insert((r.seq, r.hash.clone()))
        {
            continue;
        }
        let delivered = payloads
            .then(|| r.payload.as_deref().map(delivered_values))
            .flatten();
        for res in &r.resources {
            if filter.topic.as_ref().is_some_and(|t| t != &res.topic) {
                continue;
            }
            out.push(Access {
                seq: r.seq,
                time: r.time.clone(),
                api: r.api.clone().unwrap_or_default(),
                operation: r.operation.map(|o| format!("{o:?}")).unwrap_or_default(),
                topic: res.topic.clone(),
                partition: res.partition,
                offsets: res.offset_first.zip(res.offset_last),
                records: res.records,
                decision: r
                    .decision
                    .map(|d| d.as_str().to_owned())
                    .unwrap_or_default(),
                reason: r.reason.clone(),
                policy: r
                    .policy
                    .as_ref()
                    .map(|p| format!("{} (generation {})", p.name, p.generation)),
                masked_by: r.masking.as_ref().map(|m| m.rule.clone()),
                payload_digest: r.payload_digest.clone(),
                digest: res.digest.clone(),
                delivered: delivered.clone(),
            });
        }
    }
    out
}

/// The values of the record batches a `Full` payload holds (UTF-8, lossy);
/// a payload that does not decode says so instead.
fn delivered_values(payload_b64: &str) -> Vec<String> {
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(payload_b64) else {
        return vec!["<payload is not base64>".into()];
    };
    let mut bytes = Bytes::from(raw);
    match RecordBatchDecoder::decode_all(&mut bytes) {
        Ok(sets) => sets
            .into_iter()
            .flat_map(|s| s.records)
            .map(|r| {
                r.value
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_else(|| "<null>".into())
            })
            .collect(),
        Err(e) => vec![format!("<payload does not decode as record batches: {e}>")],
    }
}

/// One line of the text report.
pub fn text_line(a: &Access) -> String {
    let place = match (a.partition, a.offsets) {
        (Some(p), Some((f, l))) => {
            format!("{}[{p}] offsets {f}..{l} ({} records)", a.topic, a.records)
        }
        (Some(p), None) => format!("{}[{p}] (no records)", a.topic),
        (None, _) => a.topic.clone(),
    };
    let mut line = format!(
        "{}  seq {}  {} {}  {}  {}",
        a.time, a.seq, a.api, a.operation, place, a.decision
    );
    if let Some(reason) = &a.reason {
        line.push_str(&format!("  ({reason})"));
    }
    if let Some(policy) = &a.policy {
        line.push_str(&format!("  policy {policy}"));
    }
    if let Some(rule) = &a.masked_by {
        line.push_str(&format!("  masked by {rule}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditDecision as Decision, Operation, ResourceAccess, Subject};
    use kafka_protocol::records::Compression;

    fn read(who: &str, seq: u64, first: i64) -> AuditRecord {
        let mut r = AuditRecord::request("Fetch", 13, Operation::Read)
            .subject(Subject::user(who, vec![], None))
            .resource(ResourceAccess::partition(
                "patients",
                0,
                Some((first, first + 9)),
                10,
                900,
            ))
            .decision(Decision::Allow, "rule clinicians-read");
        r.seq = seq;
        r.hash = format!("h{seq}");
        r
    }

    #[test]
    fn lists_exactly_the_subjects_ranges_once_each() {
        let mut twice = read("alice", 2, 10);
        twice.hash = "h2".into();
        let records = [read("alice", 1, 0), read("bob", 3, 0), twice.clone(), twice];
        let filter = Filter {
            subject: Some("alice".into()),
            ..Filter::default()
        };
        let got = accesses(&records, &filter, false);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].offsets, Some((0, 9)));
        assert_eq!(got[1].offsets, Some((10, 19)));
        assert!(text_line(&got[1]).contains("patients[0] offsets 10..19 (10 records)  Allow"));
    }

    #[test]
    fn full_payloads_come_back_as_the_values_delivered() {
        let batch = crate::audit::summary::tests::batch(0, 2, Compression::None);
        let r = read("alice", 1, 0).payload_full(&batch, "blake3:r".into(), Vec::new());
        let got = accesses([&r], &Filter::default(), true);
        assert_eq!(
            got[0].delivered.as_deref(),
            Some(
                &[
                    "{\"mrn\":\"MRN-0\"}".to_owned(),
                    "{\"mrn\":\"MRN-1\"}".to_owned()
                ][..]
            )
        );
        assert!(
            accesses([&r], &Filter::default(), false)[0]
                .delivered
                .is_none()
        );
    }
}
