//! The audit record: one record per governed request.
//!
//! One type serves every kind of event: a governed Kafka request (`kind: Request`) and the
//! non-request events (authentication failures, policy reloads, approvals, sidecar start/stop,
//! spool failures, checkpoints). Fields that do not apply are omitted from the JSON, so a
//! record says only what is known. `seq`, `prevHash` and `hash` are assigned by the spool
//! writer, never by the caller: the writer is the single point that orders the chain.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// What happened. `Request` is a governed Kafka request; the rest are lifecycle events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecordKind {
    #[default]
    Request,
    AuthFailure,
    PolicyReload,
    ApprovalRequested,
    ApprovalUsed,
    ApprovalExpired,
    /// Break-glass gave access under a rule (once per invocation, rule and
    /// topic): a Warning Event and a high-severity OTLP log at once.
    BreakGlassUsed,
    SidecarStart,
    SidecarStop,
    SpoolFailure,
    /// The spool found a torn final line on start and moved it aside.
    SpoolRecovered,
    Checkpoint,
}

/// The outcome of a policy decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AuditDecision {
    Allow,
    Deny,
    PendingApproval,
    /// Allowed with masking applied.
    Masked,
}

impl AuditDecision {
    /// The name used in JSON, CSV, OTLP attributes and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditDecision::Allow => "Allow",
            AuditDecision::Deny => "Deny",
            AuditDecision::PendingApproval => "PendingApproval",
            AuditDecision::Masked => "Masked",
        }
    }
}

/// The class of Kafka operation a request performs: the policy's own
/// vocabulary, so a record names the operation the policy checked
/// (`crate::policy::apis::operation_of`).
pub use streamgate_crds::Operation;

/// The name used in JSON, CSV, OTLP attributes and Events (the serde name).
pub fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Write => "Write",
        Operation::Read => "Read",
        Operation::Describe => "Describe",
        Operation::Create => "Create",
        Operation::Admin => "Admin",
    }
}

/// Who made the request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// `User` (OAUTHBEARER token) or `ServiceAccount` (workload identity).
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

impl Subject {
    pub fn user(name: impl Into<String>, groups: Vec<String>, issuer: Option<String>) -> Self {
        Self {
            kind: "User".into(),
            name: name.into(),
            groups,
            issuer,
        }
    }

    pub fn service_account(name: impl Into<String>) -> Self {
        Self {
            kind: "ServiceAccount".into(),
            name: name.into(),
            groups: Vec::new(),
            issuer: None,
        }
    }
}

/// One topic-partition touched by a request, with what was read or written there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAccess {
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_first: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_last: Option<i64>,
    #[serde(default)]
    pub records: u64,
    #[serde(default)]
    pub bytes: u64,
    /// `blake3:<hex>` of the partition's complete record batches, base offset
    /// and leader epoch left out ([`crate::audit::digest`]): equal for a batch
    /// as written and as read back, so `audit match` can prove a range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Whose data these records held: keyed pseudonyms of the patients
    /// (`patientFields`), sorted and de-duplicated, 32 hex digits each —
    /// never the identifiers (`audit disclosures`; `masking::patients`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patients: Vec<String>,
    /// Records here that named no identifiable patient (not JSON, no
    /// patient field, or a rule that could not attribute): the disclosure
    /// may have held other patients.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unattributed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ResourceAccess {
    /// A topic-level resource (Metadata, CreateTopics, a refused request…).
    pub fn topic(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            ..Self::default()
        }
    }

    /// A partition with the offset range `first..=last` and its record/byte counts.
    pub fn partition(
        topic: impl Into<String>,
        partition: i32,
        offsets: Option<(i64, i64)>,
        records: u64,
        bytes: u64,
    ) -> Self {
        Self {
            topic: topic.into(),
            partition: Some(partition),
            offset_first: offsets.map(|o| o.0),
            offset_last: offsets.map(|o| o.1),
            records,
            bytes,
            ..Self::default()
        }
    }
}

/// The exact policy version in force.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRef {
    pub name: String,
    pub generation: i64,
}

/// Masking counts — never values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MaskingSummary {
    pub rule: String,
    /// JSON path → number of values masked.
    pub fields: BTreeMap<String, u64>,
}

/// A witnessed head of the chain, carried by a `Checkpoint` record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRef {
    pub seq: u64,
    pub hash: String,
    /// The genesis value of the chain witnessed: an anchor copied out of the
    /// pod (the collector's copy) names its chain even when the records
    /// around it were never shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis: Option<String>,
}

/// One line of the audit spool.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Per-spool, gapless, from 1. Assigned by the spool writer.
    #[serde(default)]
    pub seq: u64,
    /// RFC 3339, UTC, microseconds: when the decision was made.
    pub time: String,
    #[serde(default)]
    pub kind: RecordKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
    /// Kafka API name, e.g. `Fetch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<i16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceAccess>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<AuditDecision>,
    /// Which rule or approval decided; for lifecycle events, what happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masking: Option<MaskingSummary>,
    /// `blake3:<hex>` over the partition digests and any bytes after the last
    /// complete batch ([`crate::audit::digest`]): every byte delivered (Digest and Full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_digest: Option<String>,
    /// Base64 of the record batches as delivered (Full mode only: PHI in the trail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The reason the caller gave when it invoked break-glass (its requests
    /// are then recorded with payload Full, allowed or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<String>,
    /// Present on `Checkpoint` records: the head being witnessed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointRef>,
    /// Present only on seq 1: the random value the chain starts from (equals its `prevHash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis: Option<String>,
    #[serde(default)]
    pub prev_hash: String,
    #[serde(default)]
    pub hash: String,
    /// The bytes still to digest: the spool writer does it, off the
    /// connection's task ([`AuditRecord::finish_payload`]). Never serialised.
    #[serde(skip)]
    pub deferred: Option<DeferredPayload>,
}

/// Payload work left to the spool writer: the partitions' bytes (shared,
/// not copied) and whether the payload itself is kept (`Full`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeferredPayload {
    pub parts: Vec<bytes::Bytes>,
    pub full: bool,
    /// Per part, the broker's bytes where masking rewrote it (Fetch).
    pub originals: Vec<Option<bytes::Bytes>>,
}

/// The record's time format: RFC 3339, UTC, microseconds, `Z`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Where the sidecar runs (downward API); stamped on every record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodIdentity {
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub service_account: Option<String>,
}

impl AuditRecord {
    /// A new record of `kind`, timed now.
    pub fn new(kind: RecordKind) -> Self {
        Self {
            time: format_time(Utc::now()),
            kind,
            ..Self::default()
        }
    }

    /// A governed request, timed now.
    pub fn request(api: impl Into<String>, api_version: i16, operation: Operation) -> Self {
        Self {
            api: Some(api.into()),
            api_version: Some(api_version),
            operation: Some(operation),
            ..Self::new(RecordKind::Request)
        }
    }

    /// A lifecycle event with a human-readable reason.
    pub fn event(kind: RecordKind, reason: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.into()),
            ..Self::new(kind)
        }
    }

    pub fn at(mut self, time: DateTime<Utc>) -> Self {
        self.time = format_time(time);
        self
    }

    /// Stamp pod/namespace/serviceAccount unless already set.
    pub fn with_pod(mut self, pod: &PodIdentity) -> Self {
        self.pod = self.pod.or_else(|| pod.pod.clone());
        self.namespace = self.namespace.or_else(|| pod.namespace.clone());
        self.service_account = self.service_account.or_else(|| pod.service_account.clone());
        self
    }

    pub fn subject(mut self, subject: Subject) -> Self {
        self.subject = Some(subject);
        self
    }

    pub fn client(mut self, client_id: Option<String>, address: impl ToString) -> Self {
        self.client_id = client_id;
        self.client_address = Some(address.to_string());
        self
    }

    pub fn resource(mut self, resource: ResourceAccess) -> Self {
        self.resources.push(resource);
        self
    }

    pub fn resources(mut self, resources: impl IntoIterator<Item = ResourceAccess>) -> Self {
        self.resources.extend(resources);
        self
    }

    pub fn decision(mut self, decision: AuditDecision, reason: impl Into<String>) -> Self {
        self.decision = Some(decision);
        self.reason = Some(reason.into());
        self
    }

    pub fn policy(mut self, name: impl Into<String>, generation: i64) -> Self {
        self.policy = Some(PolicyRef {
            name: name.into(),
            generation,
        });
        self
    }

    pub fn masking(mut self, rule: impl Into<String>, fields: BTreeMap<String, u64>) -> Self {
        self.masking = Some(MaskingSummary {
            rule: rule.into(),
            fields,
        });
        self
    }

    /// The digest of bytes that could not be taken apart (a whole frame).
    pub fn payload_digest_of(mut self, delivered: &[u8]) -> Self {
        self.payload_digest = Some(crate::audit::digest::of_bytes(delivered));
        self
    }

    /// Digest mode: the request digest, and one digest per resource (in order).
    pub fn payload_digest(mut self, digest: String, partitions: Vec<String>) -> Self {
        self.payload_digest = Some(digest);
        if partitions.len() == self.resources.len() {
            for (r, d) in self.resources.iter_mut().zip(partitions) {
                r.digest = Some(d);
            }
        }
        self
    }

    /// Digest or Full mode, done later by the spool writer (one digest per
    /// resource, in order, and over the request; Full keeps the bytes too).
    pub fn defer_payload(mut self, parts: Vec<bytes::Bytes>, full: bool) -> Self {
        self.deferred = Some(DeferredPayload {
            parts,
            full,
            originals: Vec::new(),
        });
        self
    }

    /// The broker's bytes of parts masking rewrote (aligned with the
    /// resources): their partition digests cover what the broker holds.
    pub fn with_originals(mut self, originals: Vec<Option<bytes::Bytes>>) -> Self {
        if let Some(d) = self.deferred.as_mut() {
            d.originals = originals;
        }
        self
    }

    /// Compute what [`AuditRecord::defer_payload`] left for later.
    pub fn finish_payload(&mut self) {
        let Some(DeferredPayload {
            parts,
            full,
            originals,
        }) = self.deferred.take()
        else {
            return;
        };
        let d = crate::audit::digest::Digests::of_with_originals(&parts, &originals);
        let record = std::mem::take(self);
        *self = if full {
            record.payload_full(&parts.concat(), d.request, d.partitions)
        } else {
            record.payload_digest(d.request, d.partitions)
        };
    }

    /// Full mode: the digests and the payload itself (base64).
    pub fn payload_full(self, delivered: &[u8], digest: String, partitions: Vec<String>) -> Self {
        use base64::Engine as _;
        let mut record = self.payload_digest(digest, partitions);
        record.payload = Some(base64::engine::general_purpose::STANDARD.encode(delivered));
        record
    }

    /// The caller invoked break-glass with `reason`.
    pub fn break_glass(mut self, reason: Option<String>) -> Self {
        self.break_glass = reason;
        self
    }

    /// Total records across resources (for reconciliation and Events).
    pub fn total_records(&self) -> u64 {
        self.resources.iter().map(|r| r.records).sum()
    }

    pub fn total_bytes(&self) -> u64 {
        self.resources.iter().map(|r| r.bytes).sum()
    }

    /// The record's time, parsed.
    pub fn parsed_time(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.time)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// A Fetch of 50 records of `patient-records` partition `partition` by
/// alice (clinicians) — the record the audit tests describe.
#[cfg(test)]
pub(crate) fn sample_fetch(partition: i32) -> AuditRecord {
    AuditRecord::request("Fetch", 13, Operation::Read)
        .subject(Subject::user(
            "alice@example.com",
            vec!["clinicians".into()],
            None,
        ))
        .client(Some("billing-consumer".into()), "127.0.0.1:53422")
        .resource(ResourceAccess::partition(
            "patient-records",
            partition,
            Some((100, 149)),
            50,
            51200,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_camel_case_and_omits_unknowns() {
        let rec = sample_fetch(0)
            .at(DateTime::parse_from_rfc3339("2026-11-27T10:15:02.123456Z")
                .unwrap()
                .into())
            .decision(AuditDecision::Allow, "rule read-records")
            .policy("phi-access", 3);
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(v["time"], "2026-11-27T10:15:02.123456Z");
        assert_eq!(v["clientId"], "billing-consumer");
        assert_eq!(v["apiVersion"], 13);
        assert_eq!(v["resources"][0]["offsetFirst"], 100);
        assert_eq!(v["resources"][0]["offsetLast"], 149);
        assert_eq!(v["decision"], "Allow");
        assert_eq!(v["policy"]["generation"], 3);
        assert!(v.get("payload").is_none(), "payload only in Full mode");
        assert!(v.get("masking").is_none());
        let back: AuditRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn time_is_utc_with_microseconds() {
        let t = AuditRecord::new(RecordKind::SidecarStart).time;
        assert!(t.ends_with('Z'), "{t}");
        let frac = t.split('.').nth(1).unwrap();
        assert_eq!(frac.len(), 7, "six digits and Z: {t}");
    }

    #[test]
    fn full_payload_carries_the_digests_and_the_bytes() {
        let rec = AuditRecord::request("Produce", 9, Operation::Write)
            .resources([ResourceAccess::partition("t", 0, None, 1, 3)])
            .payload_full(b"abc", "blake3:r".into(), vec!["blake3:p".into()]);
        assert_eq!(rec.payload_digest.as_deref(), Some("blake3:r"));
        assert_eq!(rec.resources[0].digest.as_deref(), Some("blake3:p"));
        assert_eq!(rec.payload.as_deref(), Some("YWJj"));
    }
}
