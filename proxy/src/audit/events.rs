//! Kubernetes Events about the audit trail, regarding the sidecar's pod.
//!
//! Events are lossy and short-lived: a signal for `kubectl describe pod`, not the record.
//! Requests are aggregated per (subject, topic, decision, minute) so a busy client produces
//! a handful of Events, not one per fetch; checkpoints and lifecycle records (policy
//! reloads, approvals, auth failures, spool problems, start/stop) get an Event each.
//! The aggregation is pure ([`Aggregator`]); [`EventsSink`] publishes through kube-runtime's
//! `Recorder`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::Value;

use super::record::{AuditDecision, AuditRecord, Operation, PodIdentity, RecordKind};
use super::shipper::Sink;

/// Unsent signals kept while the API server is unreachable; older ones are dropped.
const MAX_PENDING: usize = 1000;
/// The longest wait between attempts to reach an unreachable API server.
const MAX_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(60);

/// How long to wait before the next attempt after `failures` failed ones in a
/// row: 1 s, doubling, at most [`MAX_RETRY_DELAY`]. Without it every batch of
/// records (many a second under traffic) retried at once — a warning and a
/// connection attempt each, for as long as the API server was away.
pub fn retry_delay(failures: u32) -> std::time::Duration {
    let exp = failures.saturating_sub(1).min(6);
    std::time::Duration::from_secs(1u64 << exp).min(MAX_RETRY_DELAY)
}

/// One aggregation window's identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AggregateKey {
    /// Unix time of the window's minute, in minutes.
    pub minute: i64,
    pub subject: String,
    pub topic: String,
    pub decision: AuditDecision,
}

/// Requests of one subject on one topic with one decision within one minute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregate {
    pub key: AggregateKey,
    pub subject_kind: String,
    pub operations: BTreeSet<Operation>,
    pub requests: u64,
    pub records: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// The reason of checkpoint Events (what `audit verify --anchors` looks for).
pub const CHECKPOINT_REASON: &str = "AuditCheckpoint";

/// A checkpoint Event's note; [`parse_checkpoint_note`] reads it back.
pub fn checkpoint_note(seq: u64, hash: &str, genesis: Option<&str>) -> String {
    match genesis {
        Some(g) => format!("audit chain head: seq {seq}, hash {hash}, chain {g}"),
        None => format!("audit chain head: seq {seq}, hash {hash}"),
    }
}

/// `(seq, hash, chain)` of a checkpoint Event's note (`None`: not one).
pub fn parse_checkpoint_note(note: &str) -> Option<(u64, String, Option<String>)> {
    let rest = note.strip_prefix("audit chain head: seq ")?;
    let (seq, rest) = rest.split_once(", hash ")?;
    let (hash, chain) = match rest.split_once(", chain ") {
        Some((h, c)) => (h, Some(c.to_owned())),
        None => (rest, None),
    };
    Some((seq.parse().ok()?, hash.to_owned(), chain))
}

/// What becomes an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    Aggregate(Aggregate),
    Checkpoint {
        seq: u64,
        hash: String,
        /// The chain witnessed (its genesis value), so the Event is an
        /// anchor `audit verify --anchors` can use.
        genesis: Option<String>,
        at_seq: u64,
    },
    Lifecycle {
        kind: RecordKind,
        reason: String,
        seq: u64,
    },
}

impl Signal {
    fn seq(&self) -> u64 {
        match self {
            Signal::Aggregate(a) => a.first_seq,
            Signal::Checkpoint { at_seq, .. } => *at_seq,
            Signal::Lifecycle { seq, .. } => *seq,
        }
    }
}

/// Pure aggregation of records into signals.
#[derive(Clone, Debug, Default)]
pub struct Aggregator {
    open: BTreeMap<AggregateKey, Aggregate>,
    ready: Vec<Signal>,
}

impl Aggregator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Take one record into account.
    pub fn observe(&mut self, rec: &AuditRecord) {
        match rec.kind {
            RecordKind::Request => self.observe_request(rec),
            RecordKind::Checkpoint => {
                if let Some(c) = &rec.checkpoint {
                    self.ready.push(Signal::Checkpoint {
                        seq: c.seq,
                        hash: c.hash.clone(),
                        genesis: c.genesis.clone(),
                        at_seq: rec.seq,
                    });
                }
            }
            kind => self.ready.push(Signal::Lifecycle {
                kind,
                reason: rec.reason.clone().unwrap_or_default(),
                seq: rec.seq,
            }),
        }
    }

    fn observe_request(&mut self, rec: &AuditRecord) {
        let (Some(decision), Some(t)) = (rec.decision, rec.parsed_time()) else {
            return;
        };
        let minute = t.timestamp().div_euclid(60);
        let (subject, subject_kind) = rec
            .subject
            .as_ref()
            .map_or(("(unauthenticated)".to_owned(), String::new()), |s| {
                (s.name.clone(), s.kind.clone())
            });
        // Per topic: the record/byte counts of that topic's partitions.
        let mut per_topic: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for r in &rec.resources {
            let e = per_topic.entry(r.topic.as_str()).or_default();
            e.0 += r.records;
            e.1 += r.bytes;
        }
        if per_topic.is_empty() {
            per_topic.insert("", (0, 0));
        }
        for (topic, (records, bytes)) in per_topic {
            let key = AggregateKey {
                minute,
                subject: subject.clone(),
                topic: topic.to_owned(),
                decision,
            };
            let agg = self.open.entry(key.clone()).or_insert_with(|| Aggregate {
                key,
                subject_kind: subject_kind.clone(),
                operations: BTreeSet::new(),
                requests: 0,
                records: 0,
                bytes: 0,
                first_seq: rec.seq,
                last_seq: rec.seq,
            });
            agg.operations.extend(rec.operation);
            agg.requests += 1;
            agg.records += records;
            agg.bytes += bytes;
            agg.first_seq = agg.first_seq.min(rec.seq);
            agg.last_seq = agg.last_seq.max(rec.seq);
        }
    }

    /// Signals ready to publish: windows of minutes before `now_minute` (all windows when
    /// `None`), checkpoints and lifecycle events, in seq order.
    pub fn take(&mut self, now_minute: Option<i64>) -> Vec<Signal> {
        let closed: Vec<AggregateKey> = self
            .open
            .keys()
            .filter(|k| now_minute.is_none_or(|now| k.minute < now))
            .cloned()
            .collect();
        let mut out: Vec<Signal> = std::mem::take(&mut self.ready);
        out.extend(
            closed
                .into_iter()
                .filter_map(|k| self.open.remove(&k))
                .map(Signal::Aggregate),
        );
        out.sort_by_key(Signal::seq);
        out
    }

    /// The lowest seq still held in an open window.
    pub fn oldest_open_seq(&self) -> Option<u64> {
        self.open.values().map(|a| a.first_seq).min()
    }
}

/// The Event for a signal (pure).
pub fn to_event(signal: &Signal) -> Event {
    match signal {
        Signal::Aggregate(a) => {
            let (type_, reason) = match a.key.decision {
                AuditDecision::Allow => (EventType::Normal, "AccessAllowed"),
                AuditDecision::Masked => (EventType::Normal, "AccessMasked"),
                AuditDecision::PendingApproval => (EventType::Normal, "AccessPendingApproval"),
                AuditDecision::Deny => (EventType::Warning, "AccessDenied"),
            };
            let ops: Vec<&str> = a
                .operations
                .iter()
                .map(|o| super::record::operation_name(*o))
                .collect();
            let minute = chrono::DateTime::from_timestamp(a.key.minute * 60, 0)
                .map(|t| t.format("%Y-%m-%dT%H:%MZ").to_string())
                .unwrap_or_default();
            let who = if a.subject_kind.is_empty() {
                a.key.subject.clone()
            } else {
                format!("{} {}", a.subject_kind, a.key.subject)
            };
            let topic = if a.key.topic.is_empty() {
                "no topic".to_owned()
            } else {
                format!("topic {}", a.key.topic)
            };
            let note = format!(
                "{who} {} {topic}: {} requests, {} records, {} bytes {} in minute {minute} (audit seq {}..{})",
                ops.join("/"),
                a.requests,
                a.records,
                a.bytes,
                a.key.decision.as_str(),
                a.first_seq,
                a.last_seq
            );
            event(
                type_,
                reason,
                if ops.is_empty() {
                    "Access".to_owned()
                } else {
                    ops.join(",")
                },
                note,
            )
        }
        Signal::Checkpoint {
            seq, hash, genesis, ..
        } => event(
            EventType::Normal,
            CHECKPOINT_REASON,
            "Checkpoint".to_owned(),
            checkpoint_note(*seq, hash, genesis.as_deref()),
        ),
        Signal::Lifecycle { kind, reason, seq } => {
            let type_ = match kind {
                RecordKind::AuthFailure
                | RecordKind::SpoolFailure
                | RecordKind::SpoolRecovered
                | RecordKind::BreakGlassUsed => EventType::Warning,
                _ => EventType::Normal,
            };
            let name = format!("{kind:?}");
            event(
                type_,
                &name,
                name.clone(),
                format!("{reason} (audit seq {seq})"),
            )
        }
    }
}

fn event(type_: EventType, reason: &str, action: String, mut note: String) -> Event {
    // The API server rejects notes over 1 kB.
    if note.len() > 1024 {
        let mut cut = 1021;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action,
        secondary: None,
    }
}

/// The pod the Events are about.
pub fn pod_reference(pod: &PodIdentity, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.pod.clone(),
        namespace: pod.namespace.clone(),
        uid,
        ..ObjectReference::default()
    }
}

/// Publishes signals as Events through kube-runtime's recorder.
#[derive(Clone)]
pub struct EventsSink {
    client: kube::Client,
    reporter: Reporter,
    regarding: ObjectReference,
    aggregator: Aggregator,
    pending: VecDeque<Signal>,
    /// Failed attempts in a row, and when the next one may be made.
    failures: u32,
    retry_at: Option<std::time::Instant>,
    /// Events dropped from the full queue since the API server was last reached.
    dropped: u64,
}

impl std::fmt::Debug for EventsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsSink")
            .field("regarding", &self.regarding)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl EventsSink {
    pub fn new(client: kube::Client, pod: &PodIdentity, pod_uid: Option<String>) -> Self {
        let reporter = Reporter {
            controller: "streamgate-proxy".into(),
            instance: pod.pod.clone(),
        };
        Self {
            client,
            reporter,
            regarding: pod_reference(pod, pod_uid),
            aggregator: Aggregator::new(),
            pending: VecDeque::new(),
            failures: 0,
            retry_at: None,
            dropped: 0,
        }
    }

    /// Publish queued signals in order; stops at the first failure (kept for later).
    pub async fn publish_pending(&mut self) -> Result<(), kube::Error> {
        while let Some(signal) = self.pending.front() {
            // A recorder per Event: the recorder merges Events with the same reason and
            // action into one series (keeping the first note), which would hide distinct
            // aggregates — they are already aggregated here.
            let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
            recorder.publish(&to_event(signal), &self.regarding).await?;
            self.pending.pop_front();
        }
        Ok(())
    }

    fn enqueue(&mut self, signals: Vec<Signal>) {
        self.pending.extend(signals);
        while self.pending.len() > MAX_PENDING {
            if let Some(dropped) = self.pending.pop_front() {
                self.dropped += 1;
                if self.dropped == 1 {
                    tracing::warn!(
                        seq = dropped.seq(),
                        "audit events: API server unreachable and {MAX_PENDING} Events queued: dropping the oldest (the spool keeps the records)"
                    );
                }
            }
        }
    }

    /// Publish what is queued, unless backing off after failures: one warning
    /// when the API server becomes unreachable, one note when it is back.
    async fn publish_logged(&mut self) {
        let now = std::time::Instant::now();
        if self.retry_at.is_some_and(|at| now < at) || self.pending.is_empty() {
            return;
        }
        match self.publish_pending().await {
            Ok(()) => {
                if self.failures > 0 {
                    tracing::info!(
                        failed_attempts = self.failures,
                        dropped = self.dropped,
                        "audit events: the API server is reachable again; queued Events published"
                    );
                }
                self.failures = 0;
                self.retry_at = None;
                self.dropped = 0;
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                let delay = retry_delay(self.failures);
                self.retry_at = Some(now + delay);
                if self.failures == 1 {
                    tracing::warn!(error = %e, pending = self.pending.len(), "audit events: publishing failed; retrying with backoff (up to every {MAX_RETRY_DELAY:?})");
                } else {
                    tracing::debug!(error = %e, pending = self.pending.len(), ?delay, "audit events: publishing failed again");
                }
            }
        }
    }
}

impl Sink for EventsSink {
    async fn deliver(&mut self, records: &[Value]) -> Result<(), String> {
        for value in records {
            if let Ok(rec) = serde_json::from_value::<AuditRecord>(value.clone()) {
                self.aggregator.observe(&rec);
            }
        }
        let now = chrono::Utc::now().timestamp().div_euclid(60);
        let ready = self.aggregator.take(Some(now));
        self.enqueue(ready);
        self.publish_logged().await;
        // Events are a signal: never block the cursor on the API server.
        Ok(())
    }

    async fn idle(&mut self, last: bool) {
        let now = chrono::Utc::now().timestamp().div_euclid(60);
        let ready = self.aggregator.take(if last { None } else { Some(now) });
        self.enqueue(ready);
        if last {
            // Shutting down: one last attempt, backoff or not.
            self.retry_at = None;
        }
        self.publish_logged().await;
    }

    fn ack_floor(&self, delivered: u64) -> u64 {
        let held = self
            .aggregator
            .oldest_open_seq()
            .into_iter()
            .chain(self.pending.front().map(Signal::seq))
            .min();
        held.map_or(delivered, |s| delivered.min(s.saturating_sub(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{ResourceAccess, Subject};
    use chrono::{DateTime, Utc};

    #[test]
    fn retries_back_off_to_a_minute() {
        let secs: Vec<u64> = [1, 2, 3, 4, 7, 8, 100]
            .iter()
            .map(|f| retry_delay(*f).as_secs())
            .collect();
        assert_eq!(secs, [1, 2, 4, 8, 60, 60, 60]);
    }

    /// A mock API server answering `500` to the first request and `201` after,
    /// counting the requests.
    fn flaky_api() -> (kube::Client, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::Ordering;
        let (service, mut handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = std::sync::Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let body = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .unwrap_or_default();
                let (status, answer) = if n == 0 {
                    let status = serde_json::json!({"kind": "Status", "apiVersion": "v1",
                        "status": "Failure", "message": "unavailable", "reason": "ServiceUnavailable", "code": 503});
                    (503, serde_json::to_vec(&status).unwrap())
                } else {
                    (201, body.to_vec())
                };
                send.send_response(
                    http::Response::builder()
                        .status(status)
                        .body(kube::client::Body::from(answer))
                        .unwrap(),
                );
            }
        });
        (kube::Client::new(service, "clinical"), seen)
    }

    #[tokio::test]
    async fn an_unreachable_api_server_is_retried_with_backoff_not_per_batch() {
        use std::sync::atomic::Ordering;
        let (client, seen) = flaky_api();
        let pod = PodIdentity {
            pod: Some("intake-0".into()),
            namespace: Some("clinical".into()),
            ..PodIdentity::default()
        };
        let mut sink = EventsSink::new(client, &pod, None);
        let reload = |seq: u64| {
            let mut r = AuditRecord::event(RecordKind::PolicyReload, "applied");
            r.seq = seq;
            serde_json::to_value(r).unwrap()
        };
        sink.deliver(&[reload(1)]).await.unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 1, "the first attempt fails");
        // More batches while backing off: queued, no new attempt.
        sink.deliver(&[reload(2)]).await.unwrap();
        sink.idle(false).await;
        assert_eq!(
            seen.load(Ordering::SeqCst),
            1,
            "no attempt during the backoff"
        );
        assert_eq!(sink.pending.len(), 2);
        assert_eq!(sink.ack_floor(2), 0, "queued signals hold the cursor");
        // The backoff over: everything queued goes out, in order.
        sink.retry_at = Some(std::time::Instant::now());
        sink.idle(false).await;
        assert_eq!(seen.load(Ordering::SeqCst), 3);
        assert!(sink.pending.is_empty());
        assert_eq!((sink.failures, sink.retry_at), (0, None));
    }

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().into()
    }

    fn req(
        seq: u64,
        t: &str,
        who: &str,
        topic: &str,
        d: AuditDecision,
        op: Operation,
    ) -> AuditRecord {
        let mut r = AuditRecord::request("Fetch", 13, op)
            .at(at(t))
            .subject(Subject::user(who, vec![], None))
            .resource(ResourceAccess::partition(topic, 0, Some((0, 9)), 10, 100))
            .resource(ResourceAccess::partition(topic, 1, Some((0, 4)), 5, 50))
            .decision(d, "r");
        r.seq = seq;
        r
    }

    fn minute(t: &str) -> i64 {
        at(t).timestamp() / 60
    }

    #[test]
    fn aggregates_per_subject_topic_decision_minute() {
        let mut agg = Aggregator::new();
        agg.observe(&req(
            1,
            "2026-11-27T10:15:01Z",
            "alice",
            "patient-records",
            AuditDecision::Allow,
            Operation::Read,
        ));
        agg.observe(&req(
            2,
            "2026-11-27T10:15:30Z",
            "alice",
            "patient-records",
            AuditDecision::Allow,
            Operation::Write,
        ));
        agg.observe(&req(
            3,
            "2026-11-27T10:15:59Z",
            "alice",
            "patient-records",
            AuditDecision::Deny,
            Operation::Read,
        ));
        agg.observe(&req(
            4,
            "2026-11-27T10:15:10Z",
            "bob",
            "patient-records",
            AuditDecision::Allow,
            Operation::Read,
        ));
        agg.observe(&req(
            5,
            "2026-11-27T10:16:00Z",
            "alice",
            "patient-records",
            AuditDecision::Allow,
            Operation::Read,
        ));

        assert!(
            agg.take(Some(minute("2026-11-27T10:15:00Z"))).is_empty(),
            "the 10:15 window is still open"
        );
        assert_eq!(agg.oldest_open_seq(), Some(1));
        let closed = agg.take(Some(minute("2026-11-27T10:16:00Z")));
        let aggs: Vec<&Aggregate> = closed
            .iter()
            .map(|s| match s {
                Signal::Aggregate(a) => a,
                _ => panic!(),
            })
            .collect();
        assert_eq!(aggs.len(), 3);
        let alice = aggs
            .iter()
            .find(|a| a.key.subject == "alice" && a.key.decision == AuditDecision::Allow)
            .unwrap();
        assert_eq!((alice.requests, alice.records, alice.bytes), (2, 30, 300));
        assert_eq!(
            alice.operations.iter().copied().collect::<Vec<_>>(),
            vec![Operation::Write, Operation::Read]
        );
        assert_eq!((alice.first_seq, alice.last_seq), (1, 2));
        assert_eq!(agg.oldest_open_seq(), Some(5));
        assert_eq!(agg.take(None).len(), 1);
    }

    #[test]
    fn checkpoints_and_lifecycle_are_their_own_signals() {
        let mut agg = Aggregator::new();
        let mut cp = AuditRecord::event(RecordKind::Checkpoint, "head");
        cp.seq = 11;
        cp.checkpoint = Some(crate::audit::record::CheckpointRef {
            seq: 10,
            hash: "sha256:ab".into(),
            genesis: None,
        });
        agg.observe(&cp);
        let mut reload = AuditRecord::event(RecordKind::PolicyReload, "phi-access generation 4");
        reload.seq = 12;
        agg.observe(&reload);
        let signals = agg.take(Some(0));
        assert_eq!(signals.len(), 2);
        let ev = to_event(&signals[0]);
        assert_eq!(
            (ev.reason.as_str(), ev.action.as_str()),
            ("AuditCheckpoint", "Checkpoint")
        );
        assert_eq!(
            ev.note.as_deref(),
            Some("audit chain head: seq 10, hash sha256:ab")
        );
        assert_eq!(
            parse_checkpoint_note(&checkpoint_note(10, "sha256:ab", Some("sha256:g"))),
            Some((10, "sha256:ab".into(), Some("sha256:g".into()))),
            "the note names the chain, and reads back"
        );
        assert_eq!(
            parse_checkpoint_note("audit chain head: seq x, hash y"),
            None
        );
        assert_eq!(to_event(&signals[1]).reason, "PolicyReload");
    }

    #[test]
    fn deny_is_a_warning_with_a_readable_note() {
        let mut agg = Aggregator::new();
        agg.observe(&req(
            7,
            "2026-11-27T10:15:01Z",
            "mallory",
            "patient-records",
            AuditDecision::Deny,
            Operation::Read,
        ));
        let ev = to_event(&agg.take(None)[0]);
        assert_eq!(ev.type_, EventType::Warning);
        assert_eq!(ev.reason, "AccessDenied");
        assert_eq!(ev.action, "Read");
        assert_eq!(
            ev.note.as_deref(),
            Some(
                "User mallory Read topic patient-records: 1 requests, 15 records, 150 bytes Deny in minute 2026-11-27T10:15Z (audit seq 7..7)"
            )
        );
    }
}
