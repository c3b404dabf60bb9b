//! The data path's audit trail: one record per governed request, built from what the
//! request and its response carried ([`super::summary`]), spooled by
//! [`crate::audit::Audit`].
//!
//! - Produce: `Write`, resources with the offsets the broker assigned (from the response).
//! - Fetch: `Read`, one resource per partition that returned records; a fetch that
//!   returned nothing leaves a light summary (topics only).
//! - Every other API: one light record (`Describe`/`Create`/`Admin`/…), no per-partition detail.
//!
//! failureMode `Closed`: a response carrying records (a Fetch with records, a Produce ack)
//! is released only once its record is durable; if it cannot be, the client gets the
//! protocol's error instead (Fetch: the partitions answered UNKNOWN_SERVER_ERROR with no
//! records; Produce: POLICY_VIOLATION per partition with a message) and the refusal is
//! logged — never the payload. `Open`: traffic continues, the failure is logged and counted.

use super::summary;
use crate::audit::digest::Digests;
use crate::audit::{Audit, AuditArgs, AuditRecord, ResourceAccess};
use crate::datapath::exchange::{Request, Response};
use crate::identity::caller::Caller;
use crate::kafka::codec::{RequestMeta, encode_response};
use crate::policy::apis::operation_of;
use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use std::sync::Arc;
use streamgate_crds::{FailureMode, PayloadMode};
use uuid::Uuid;

use crate::audit::AuditDecision;
use crate::audit::disclosures;
use crate::masking::TopicMasking;
use crate::policy::decide::{CompiledPolicy, PolicyDecision};
use crate::policy::enforce::TopicDecision;
use crate::policy::handle::PolicyHandle;
use streamgate_crds::matching::Principal;

/// Audit flags of `streamgate-proxy run`.
#[derive(Clone, Debug, clap::Args)]
pub struct AuditFlags {
    #[command(flatten)]
    pub audit: AuditArgs,
    /// What happens when a record cannot be made durable, until a policy's `audit` says
    /// otherwise: `Closed` refuses PHI traffic, `Open` reports and lets it flow.
    #[arg(long = "audit-failure-mode", env = streamgate_crds::contract::ENV_AUDIT_FAILURE_MODE, default_value = "Closed", value_parser = parse_failure_mode)]
    pub failure_mode: FailureMode,
    /// What a record says about payloads, until a policy's `audit` says otherwise:
    /// `None`, `Digest` (BLAKE3 digests of the batches, per partition) or `Full` (the batches: PHI).
    #[arg(long = "audit-payload", env = streamgate_crds::contract::ENV_AUDIT_PAYLOAD, default_value = "Digest", value_parser = parse_payload_mode)]
    pub payload: PayloadMode,
    /// How far OTLP shipping may lag (e.g. `60s`) until a policy's
    /// `audit.maxShipLag` says otherwise: past it, `Closed` refuses PHI requests.
    #[arg(long = "audit-max-ship-lag", env = streamgate_crds::contract::ENV_AUDIT_MAX_SHIP_LAG, default_value = "60s", value_parser = humantime::parse_duration)]
    pub max_ship_lag: std::time::Duration,
}

fn parse_failure_mode(s: &str) -> Result<FailureMode, String> {
    match s.to_ascii_lowercase().as_str() {
        "closed" => Ok(FailureMode::Closed),
        "open" => Ok(FailureMode::Open),
        _ => Err(format!("{s:?}: expected Closed or Open")),
    }
}

fn parse_payload_mode(s: &str) -> Result<PayloadMode, String> {
    match s.to_ascii_lowercase().as_str() {
        "none" => Ok(PayloadMode::None),
        "digest" => Ok(PayloadMode::Digest),
        "full" => Ok(PayloadMode::Full),
        _ => Err(format!("{s:?}: expected None, Digest or Full")),
    }
}

/// Topic id → name (Produce v13, Fetch v13+ name topics by id).
pub type TopicNames<'a> = &'a (dyn Fn(&Uuid) -> Option<String> + Sync);

/// The audit settings in force for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub failure_mode: FailureMode,
    pub payload: PayloadMode,
    /// How far the collector may lag before Closed refuses PHI requests.
    pub max_ship_lag: std::time::Duration,
}

/// Why a response was withheld whole (the connection closes).
const NOT_DURABLE: &str =
    "undecodable response whose audit record is not durable (failureMode Closed)";

/// What the client is told when its records cannot be audited (no PHI in it).
pub const REFUSAL: &str =
    "streamgate: the audit trail is unavailable (failureMode Closed); the request is refused";

/// The sidecar's audit trail as the data path uses it.
#[derive(Debug)]
pub struct AuditTrail {
    audit: Arc<Audit>,
    defaults: Settings,
    /// The policy in force: its `audit` spec overrides the defaults.
    policy: Option<PolicyHandle>,
}

/// Who asked and what the policy decided, as the gate reported it for one request.
#[derive(Debug, Default)]
pub struct GateReport {
    pub principal: Option<Principal>,
    pub decisions: Vec<TopicDecision>,
    /// Why the request was refused when no per-topic decision says it (a
    /// cluster, group or transaction refusal, a blocked or unknown API, a
    /// request before authentication).
    pub refusal: Option<String>,
}

/// A request whose record is finished when its response arrives.
#[derive(Debug)]
pub enum InFlight {
    Produce {
        record: AuditRecord,
        settings: Settings,
        parts: Vec<summary::ProducedPartition>,
        payload: Payload,
    },
    Fetch {
        record: AuditRecord,
        settings: Settings,
    },
}

/// The payload part of a record: digests of the bytes as delivered (and,
/// under `Full`, the bytes). Computed on the connection's task where the
/// bytes would otherwise be kept alive for longer than the request needs
/// them (a Produce's batches until its answer; anything under Open, whose
/// records may queue); left to the spool writer where the answer waits for
/// its record anyway (a Fetch under Closed), so the task goes on meanwhile.
#[derive(Debug, Default)]
pub enum Payload {
    #[default]
    None,
    Done {
        digests: Digests,
        full: Option<Vec<u8>>,
    },
    Deferred {
        parts: Vec<Bytes>,
        full: bool,
        originals: Vec<Option<Bytes>>,
    },
}

impl Payload {
    /// Digest now (`originals`: the broker's bytes where masking rewrote a part).
    fn now(mode: PayloadMode, parts: &[Bytes], originals: &[Option<Bytes>]) -> Self {
        let full = match mode {
            PayloadMode::None => return Payload::None,
            PayloadMode::Digest => None,
            PayloadMode::Full => Some(parts.concat()),
        };
        Payload::Done {
            digests: Digests::of_with_originals(parts, originals),
            full,
        }
    }

    /// Leave the digests to the spool writer.
    fn deferred(mode: PayloadMode, parts: Vec<Bytes>, originals: Vec<Option<Bytes>>) -> Self {
        match mode {
            PayloadMode::None => Payload::None,
            full => Payload::Deferred {
                parts,
                full: full == PayloadMode::Full,
                originals,
            },
        }
    }

    /// Onto a record whose resources are the parts, in order.
    fn apply(self, record: AuditRecord) -> AuditRecord {
        match self {
            Payload::None => record,
            Payload::Done {
                digests,
                full: None,
            } => record.payload_digest(digests.request, digests.partitions),
            Payload::Done {
                digests,
                full: Some(bytes),
            } => record.payload_full(&bytes, digests.request, digests.partitions),
            Payload::Deferred {
                parts,
                full,
                originals,
            } => record.defer_payload(parts, full).with_originals(originals),
        }
    }
}

/// A response whose release waits for its audit record ([`AuditTrail::release`]).
#[derive(Debug)]
pub struct Held {
    commit: crate::audit::Commit,
    fallback: Fallback,
}

impl Held {
    /// Whether the release still waits (failureMode Closed); `false` once settled.
    pub fn is_pending(&self) -> bool {
        self.commit.is_pending()
    }
}

/// What a held response becomes when its record cannot be made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fallback {
    /// Produce: every partition refused (POLICY_VIOLATION).
    RefuseProduce,
    /// Fetch: the records withheld (UNKNOWN_SERVER_ERROR).
    WithholdFetch,
    /// Not taken apart: nothing of it released, the connection closes.
    WithholdWhole,
}

/// What the request side does about auditing a request.
#[derive(Debug)]
pub enum OnRequest {
    /// Nothing more to do (recorded already, or not governed).
    Done,
    /// Finish the record with the response.
    Await(Box<InFlight>),
    /// Do not forward: answer the client with this refusal frame.
    Refuse(Bytes),
}

/// Who made the request: the identity stage's principal, else the name the
/// caller last authenticated as, else an unauthenticated caller named by its address.
pub fn subject_of(caller: &Caller, principal: Option<&Principal>) -> crate::audit::Subject {
    use streamgate_crds::SubjectKind;
    if let Some(p) = principal {
        return match p.kind {
            SubjectKind::ServiceAccount => {
                crate::audit::Subject::service_account(match &p.namespace {
                    Some(ns) => format!("system:serviceaccount:{ns}:{}", p.name),
                    None => p.name.clone(),
                })
            }
            _ => crate::audit::Subject::user(p.name.clone(), p.groups.clone(), None),
        };
    }
    match &caller.sasl_name {
        Some(name) => crate::audit::Subject::user(name.clone(), Vec::new(), None),
        None => crate::audit::Subject {
            kind: "Anonymous".into(),
            name: format!("unauthenticated@{}", caller.peer),
            groups: Vec::new(),
            issuer: None,
        },
    }
}

/// APIs that are not governed requests: version negotiation and the SASL exchange
/// (the identity layer records authentication failures itself).
fn is_governed(api: ApiKey) -> bool {
    !matches!(
        api,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    )
}

impl AuditTrail {
    pub fn new(audit: Arc<Audit>, flags: &AuditFlags) -> Self {
        Self {
            audit,
            defaults: Settings {
                failure_mode: flags.failure_mode,
                payload: flags.payload,
                max_ship_lag: flags.max_ship_lag,
            },
            policy: None,
        }
    }

    /// Take the audit settings from the policy in force (when one governs this pod).
    pub fn with_policy(mut self, policy: PolicyHandle) -> Self {
        self.policy = Some(policy);
        self
    }

    /// A request the gate refused (answered locally): a `Deny`/`PendingApproval` record.
    /// Requests with no decision (the SASL exchange) are not governed requests.
    /// Every refusal is a record: with per-topic decisions the deciding one
    /// names policy and rule; without, `report.refusal` says why.
    pub async fn on_refusal(&self, caller: &Caller, meta: &RequestMeta, report: GateReport) {
        if !is_governed(meta.api_key) {
            return;
        }
        let mut record = self.base(caller, meta, &report);
        if report.decisions.is_empty() {
            let why = report
                .refusal
                .clone()
                .unwrap_or_else(|| "refused by policy".to_string());
            record = record.decision(AuditDecision::Deny, why);
        }
        self.audit.record(record).await;
    }

    /// Authentication failed and the connection closes.
    pub async fn on_auth_failure(&self, caller: &Caller, reason: &str) {
        let record = AuditRecord::event(crate::audit::RecordKind::AuthFailure, reason)
            .subject(subject_of(caller, None))
            .client(caller.client_id.clone(), caller.peer);
        self.audit.record(record).await;
    }

    pub fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }

    /// The settings for a request. Until the policy layer hands over the policy's `audit`
    /// spec, the command-line defaults; this is the one lookup to switch.
    pub fn settings_for(&self, caller: &Caller) -> Settings {
        let settings = self.policy_settings();
        // Break-glass: what was disclosed is kept for the review (PHI in
        // the trail by design, as with payload Full).
        match caller.break_glass {
            Some(_) => Settings {
                payload: PayloadMode::Full,
                ..settings
            },
            None => settings,
        }
    }

    fn policy_settings(&self) -> Settings {
        match &self.policy {
            Some(handle) => {
                let policy = handle.current();
                if policy.has_policy() {
                    let a = policy.audit();
                    return Settings {
                        failure_mode: a.failure_mode,
                        payload: a.payload,
                        max_ship_lag: a.max_ship_lag,
                    };
                }
                self.defaults
            }
            None => self.defaults,
        }
    }

    fn base(&self, caller: &Caller, meta: &RequestMeta, report: &GateReport) -> AuditRecord {
        let record = AuditRecord::request(
            format!("{:?}", meta.api_key),
            meta.api_version,
            operation_of(meta.api_key),
        )
        .subject(subject_of(caller, report.principal.as_ref()))
        .client(caller.client_id.clone(), caller.peer)
        .break_glass(caller.break_glass.as_ref().map(|b| b.reason.clone()));
        let policy = self.policy.as_ref().map(PolicyHandle::current);
        decide(record, &report.decisions, policy.as_deref())
    }

    /// A request on its way upstream (`expect_response`: false for acks=0
    /// Produce; `masking`: what masking did to its records, and whose data they held).
    pub async fn on_request(
        &self,
        caller: &Caller,
        request: &mut Request,
        expect_response: bool,
        names: TopicNames<'_>,
        masking: &[TopicMasking],
        report: GateReport,
    ) -> OnRequest {
        let meta = &request.meta().clone();
        if !is_governed(meta.api_key) {
            return OnRequest::Done;
        }
        let settings = self.settings_for(caller);
        let record = self.base(caller, meta, &report);
        match meta.api_key {
            ApiKey::Produce => {
                self.on_produce(request, expect_response, names, masking, record, settings)
                    .await
            }
            ApiKey::Fetch => OnRequest::Await(Box::new(InFlight::Fetch { record, settings })),
            ApiKey::Metadata => {
                let topics = metadata_topics(request);
                self.audit
                    .record(record.resources(topics.into_iter().map(ResourceAccess::topic)))
                    .await;
                OnRequest::Done
            }
            _ => {
                self.audit.record(record).await;
                OnRequest::Done
            }
        }
    }

    async fn on_produce(
        &self,
        request: &mut Request,
        expect_response: bool,
        names: TopicNames<'_>,
        masking: &[TopicMasking],
        record: AuditRecord,
        settings: Settings,
    ) -> OnRequest {
        let meta = request.meta().clone();
        let Ok(RequestKind::Produce(request)) = request.body() else {
            // The broker will judge the frame; say that it passed, without detail.
            self.audit
                .record(record.decision(
                    AuditDecision::Allow,
                    "forwarded; request not decodable for audit",
                ))
                .await;
            return OnRequest::Done;
        };
        let (parts, bytes) = summary::produce_request(request, names);
        let unaccountable = match settings.failure_mode {
            FailureMode::Closed if !self.audit.health().is_healthy() => {
                Some("audit spool unavailable (failureMode Closed)".to_owned())
            }
            FailureMode::Closed => self
                .audit
                .check_ship_lag(settings.max_ship_lag)
                .await
                .err()
                .map(|e| format!("{e} (failureMode Closed)")),
            FailureMode::Open => None,
        };
        if let Some(why) = unaccountable {
            // Writing PHI that cannot be accounted for: refuse before the broker has it.
            tracing::error!(
                api = "Produce",
                partitions = parts.len(),
                "{why}: Produce refused"
            );
            let denied = record
                .resources(
                    summary::produce_unacknowledged(&parts)
                        .into_iter()
                        .map(|mut r| {
                            r.records = 0;
                            r.bytes = 0;
                            r
                        }),
                )
                .decision(AuditDecision::Deny, why);
            self.audit.record(denied).await;
            if !expect_response {
                return OnRequest::Refuse(Bytes::new());
            }
            let response = summary::refuse_produce_request(request, REFUSAL);
            return match encode_response(
                meta.correlation_id,
                meta.response_header_version(),
                &response,
                meta.api_version,
            ) {
                Ok(f) => OnRequest::Refuse(f),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode the Produce refusal");
                    OnRequest::Refuse(Bytes::new())
                }
            };
        }
        // Digested now: the batches are not kept until the broker answers.
        let payload = Payload::now(settings.payload, &bytes, &[]);
        if !expect_response {
            // acks=0: no answer to hold back, so under Closed the request
            // itself waits for its durable record before the broker gets it.
            let rec = payload.apply(record.resources(summary::produce_unacknowledged(&parts)));
            let rec = disclosures::with_patients(with_masking(rec, masking), masking);
            if !self.record_or_log(settings, rec).await {
                return OnRequest::Refuse(Bytes::new());
            }
            return OnRequest::Done;
        }
        OnRequest::Await(Box::new(InFlight::Produce {
            record,
            settings,
            parts,
            payload,
        }))
    }

    /// The response to an audited request, on its way to the client: finish
    /// the record. Where masking rewrote the response, the record's decision
    /// becomes `Masked` with the per-field counts. Under failureMode Closed a
    /// response carrying records comes back [`Held`]: the caller releases it
    /// through [`AuditTrail::release`] once its record is durable, and may
    /// handle the next response meanwhile (the writer syncs records of many
    /// responses at once).
    pub async fn on_response(
        &self,
        inflight: InFlight,
        response: &mut Response,
        names: TopicNames<'_>,
        masking: &[TopicMasking],
    ) -> Option<Held> {
        let (settings, record, fallback) = match inflight {
            InFlight::Produce {
                record,
                settings,
                parts,
                payload,
            } => match response.body() {
                Ok(ResponseKind::Produce(produced)) => {
                    let resources = summary::produce_resources(&parts, produced, names);
                    let rec = with_masking(payload.apply(record.resources(resources)), masking);
                    let rec = disclosures::with_patients(rec, masking);
                    (settings, rec, Fallback::RefuseProduce)
                }
                // An acknowledgement that cannot be rewritten into a refusal
                // is not passed on unaudited.
                _ => (
                    settings,
                    payload.apply(record.resources(summary::produce_unacknowledged(&parts))),
                    Fallback::WithholdWhole,
                ),
            },
            InFlight::Fetch { record, settings } => match response.body() {
                Ok(ResponseKind::Fetch(fetched)) => {
                    let (resources, empty, bytes) = summary::fetch_resources(fetched, names);
                    if resources.is_empty() {
                        // Nothing disclosed: a light summary, no durability wait.
                        self.audit
                            .record(record.resources(empty.into_iter().map(ResourceAccess::topic)))
                            .await;
                        return None;
                    }
                    let originals = broker_bytes(&resources, masking);
                    let payload = match settings.failure_mode {
                        // The answer waits for its record anyway: the writer digests.
                        FailureMode::Closed => {
                            Payload::deferred(settings.payload, bytes, originals)
                        }
                        FailureMode::Open => Payload::now(settings.payload, &bytes, &originals),
                    };
                    let rec = payload.apply(record.resources(resources));
                    let rec = disclosures::with_patients(with_masking(rec, masking), masking);
                    (settings, rec, Fallback::WithholdFetch)
                }
                // Not summarisable: at least the digest of the whole response;
                // records cannot be withheld from a response that cannot be
                // taken apart, so none of it is released unaudited.
                _ => (
                    settings,
                    record
                        .decision(
                            AuditDecision::Allow,
                            "forwarded; response not decodable for audit",
                        )
                        .payload_digest_of(response.frame()),
                    Fallback::WithholdWhole,
                ),
            },
        };
        let commit = self
            .audit
            .commit_with(settings.failure_mode, settings.max_ship_lag, record)
            .await;
        Some(Held { commit, fallback })
    }

    /// Release a [`Held`] response: as it is once its record is durable; if it
    /// cannot be, withhold its records (Fetch: partitions answered
    /// UNKNOWN_SERVER_ERROR) or refuse the write (Produce: POLICY_VIOLATION),
    /// and where the answer cannot be taken apart, withhold it whole (the
    /// connection closes). Never the payload in a log.
    pub async fn release(&self, held: Held, response: &mut Response) {
        let Err(error) = self.audit.settle(held.commit).await else {
            return;
        };
        tracing::error!(%error, "audit record could not be made durable");
        match (held.fallback, response.body()) {
            (Fallback::RefuseProduce, Ok(ResponseKind::Produce(produced))) => {
                summary::refuse_produce_response(produced, REFUSAL);
                response.changed();
                tracing::error!(
                    api = "Produce",
                    "audit record not durable: Produce acknowledgement replaced by a refusal (failureMode Closed)"
                );
            }
            (Fallback::WithholdFetch, Ok(ResponseKind::Fetch(fetched))) => {
                let withheld = summary::withhold_fetch(fetched);
                response.changed();
                tracing::error!(
                    api = "Fetch",
                    partitions = withheld,
                    "audit record not durable: records withheld, partitions answered UNKNOWN_SERVER_ERROR (failureMode Closed)"
                );
            }
            _ => response.withhold(NOT_DURABLE),
        }
    }

    /// Record per the failure mode. `false` only in Closed mode when the record is not durable.
    async fn record_or_log(&self, settings: Settings, record: AuditRecord) -> bool {
        match self
            .audit
            .record_with(settings.failure_mode, settings.max_ship_lag, record)
            .await
        {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, "audit record could not be made durable");
                false
            }
        }
    }
}

/// Per resource, the broker's bytes where masking rewrote that partition.
fn broker_bytes(resources: &[ResourceAccess], masking: &[TopicMasking]) -> Vec<Option<Bytes>> {
    resources
        .iter()
        .map(|r| {
            masking
                .iter()
                .filter(|t| t.topic == r.topic)
                .flat_map(|t| &t.originals)
                .find(|(p, _)| Some(*p) == r.partition)
                .map(|(_, b)| b.clone())
        })
        .collect()
}

/// Mark a record `Masked` when masking changed any value of the response:
/// the rules applied (comma-separated) and, per field path or detector tag,
/// how many values were masked. The deciding rule stays the reason.
pub fn with_masking(mut record: AuditRecord, masking: &[TopicMasking]) -> AuditRecord {
    let masked: Vec<&TopicMasking> = masking
        .iter()
        .filter(|t| t.counts.masked_records > 0)
        .collect();
    if masked.is_empty() {
        return record;
    }
    let mut rules: Vec<&str> = masked
        .iter()
        .flat_map(|t| t.rules.iter().map(String::as_str))
        .collect();
    rules.sort_unstable();
    rules.dedup();
    let mut fields = std::collections::BTreeMap::new();
    for t in &masked {
        for (k, v) in t.counts.fields.iter().chain(&t.counts.detectors) {
            *fields.entry(k.clone()).or_insert(0) += v;
        }
    }
    record.decision = Some(AuditDecision::Masked);
    record.masking(rules.join(","), fields)
}

/// The record's decision from the gate's per-topic decisions: the most restrictive one
/// wins (a request is refused if any topic is); the rule or approval that decided is the
/// reason; the deciding policy is named with its generation.
fn decide(
    record: AuditRecord,
    decisions: &[TopicDecision],
    policy: Option<&CompiledPolicy>,
) -> AuditRecord {
    let deciding = decisions
        .iter()
        .find(|d| matches!(d.decision, PolicyDecision::Deny { .. }))
        .or_else(|| {
            decisions
                .iter()
                .find(|d| matches!(d.decision, PolicyDecision::NeedsApproval { .. }))
        })
        .or_else(|| decisions.first());
    let Some(d) = deciding else {
        return record.decision(AuditDecision::Allow, "forwarded");
    };
    let generation = |name: &str| {
        policy
            .and_then(|p| p.policies().find(|(n, _)| *n == name).and_then(|(_, g)| g))
            .unwrap_or(0)
    };
    let (decision, reason, name) = match &d.decision {
        PolicyDecision::Allow {
            policy,
            rule,
            grant,
        } => (
            AuditDecision::Allow,
            match grant {
                Some(g) => format!("rule {rule} via AccessApproval {g}"),
                None => format!("rule {rule}"),
            },
            Some(policy.clone()),
        ),
        PolicyDecision::Deny {
            reason,
            policy,
            rule,
        } => (
            AuditDecision::Deny,
            match rule {
                Some(r) => format!("{} (rule {r}) on topic {}", reason.as_str(), d.topic),
                None => format!("{} on topic {}", reason.as_str(), d.topic),
            },
            policy.clone(),
        ),
        PolicyDecision::BreakGlass {
            policy,
            rule,
            grant,
        } => (
            AuditDecision::Allow,
            match grant {
                Some(g) => format!("rule {rule} by break-glass (AccessApproval {g})"),
                None => format!("rule {rule} by break-glass"),
            },
            Some(policy.clone()),
        ),
        PolicyDecision::NeedsApproval { policy, rule } => (
            AuditDecision::PendingApproval,
            format!("rule {rule} needs an AccessApproval for topic {}", d.topic),
            Some(policy.clone()),
        ),
    };
    let record = record.decision(decision, reason);
    match name {
        Some(n) => {
            let g = generation(&n);
            record.policy(n, g)
        }
        None => record,
    }
}

/// The topics a Metadata request names (`None`: all topics).
fn metadata_topics(request: &mut Request) -> Vec<String> {
    let topics = match request.body() {
        Ok(RequestKind::Metadata(metadata)) => metadata.topics.as_ref(),
        _ => None,
    };
    match topics {
        Some(topics) => topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .collect(),
        None => vec!["*".to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Operation;
    use crate::kafka::codec::{decode_body, split_response};
    use kafka_protocol::messages::{FetchResponse, ProduceRequest, ProduceResponse};

    /// A Fetch through the audit stage's request side: the record awaiting its response.
    async fn awaiting_fetch(trail: &AuditTrail, m: &RequestMeta) -> Box<InFlight> {
        let mut request = Request::new(m.clone(), Bytes::new());
        let report = GateReport::default();
        match trail
            .on_request(&caller(), &mut request, true, &|_| None, &[], report)
            .await
        {
            OnRequest::Await(inflight) => inflight,
            other => panic!("a Fetch awaits its response, not {other:?}"),
        }
    }

    /// The response through the audit stage, as the pipeline runs it.
    async fn respond(
        trail: &AuditTrail,
        inflight: InFlight,
        m: &RequestMeta,
        frame: Bytes,
    ) -> Bytes {
        let mut response = Response::new(m.clone(), frame);
        finish(trail, inflight, &mut response).await;
        response.into_frame().unwrap()
    }

    /// What the connection does: finish the record, release once settled.
    async fn finish(trail: &AuditTrail, inflight: InFlight, response: &mut Response) {
        if let Some(held) = trail.on_response(inflight, response, &|_| None, &[]).await {
            trail.release(held, response).await;
        }
    }
    use crate::audit::summary::tests::batch;
    use crate::datapath::apis::test_support::{caller, meta, request_frame, response_frame};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::Compression;
    use std::time::Duration;

    fn flags(dir: &std::path::Path, mode: FailureMode) -> AuditFlags {
        AuditFlags {
            audit: AuditArgs::new(dir),
            failure_mode: mode,
            payload: PayloadMode::Digest,
            max_ship_lag: Duration::from_secs(60),
        }
    }

    fn fetch_frame(m: &RequestMeta) -> Bytes {
        let response = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("patient-events")))
                .with_partitions(vec![
                    PartitionData::default()
                        .with_partition_index(1)
                        .with_records(Some(batch(0, 5, Compression::None))),
                ]),
        ]);
        response_frame(m, &response)
    }

    fn records(dir: &std::path::Path) -> Vec<AuditRecord> {
        crate::audit::segment::read_lines(dir)
            .unwrap()
            .map(|l| serde_json::from_str(&l.unwrap().2).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_fetch_is_recorded_with_offsets_and_digest_before_release() {
        let dir = tempfile::tempdir().unwrap();
        let f = flags(dir.path(), FailureMode::Closed);
        let trail = AuditTrail::new(Arc::new(Audit::with_spool(f.audit.spool_config())), &f);
        let m = meta(ApiKey::Fetch, 12);
        let inflight = awaiting_fetch(&trail, &m).await;
        let frame = fetch_frame(&m);
        let out = respond(&trail, *inflight, &m, frame.clone()).await;
        assert_eq!(out, frame, "released unchanged once durable");
        trail.audit().shutdown(Duration::from_secs(1)).await;
        let recs = records(dir.path());
        let fetch = recs
            .iter()
            .find(|r| r.api.as_deref() == Some("Fetch"))
            .unwrap();
        assert_eq!(fetch.operation, Some(Operation::Read));
        assert_eq!(fetch.resources[0].offset_first, Some(0));
        assert_eq!(fetch.resources[0].offset_last, Some(4));
        assert_eq!(fetch.resources[0].records, 5);
        assert!(
            fetch
                .payload_digest
                .as_deref()
                .unwrap()
                .starts_with("blake3:")
        );
        // Each partition carries the digest of its batches as the broker
        // numbers them: the same batch produced at base offset 0 digests alike.
        let same_batch = crate::audit::digest::PartitionDigest::of(&batch(0, 5, Compression::None));
        assert_eq!(fetch.resources[0].digest, Some(same_batch.render()));
        assert_eq!(fetch.subject.as_ref().unwrap().kind, "Anonymous");
        assert_eq!(fetch.client_address.as_deref(), Some("127.0.0.1:50000"));
    }

    #[tokio::test]
    async fn closed_withholds_records_and_refuses_produce_when_the_spool_is_unwritable() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("not-a-dir");
        std::fs::write(&dir, b"file").unwrap();
        let f = flags(&dir, FailureMode::Closed);
        let trail = AuditTrail::new(Arc::new(Audit::with_spool(f.audit.spool_config())), &f);
        let m = meta(ApiKey::Fetch, 12);
        let inflight = awaiting_fetch(&trail, &m).await;
        let out = respond(&trail, *inflight, &m, fetch_frame(&m)).await;
        let (_, body) = split_response(&out, m.response_header_version()).unwrap();
        let got: FetchResponse = decode_body(body, 12, "t").unwrap();
        let p = &got.responses[0].partitions[0];
        assert_eq!(p.error_code, crate::kafka::refusal::UNKNOWN_SERVER_ERROR);
        assert!(
            p.records.as_ref().is_none_or(|r| r.is_empty()),
            "no PHI released"
        );
        // The spool is now known bad: a Produce is refused before it reaches the broker.
        let pm = meta(ApiKey::Produce, 9);
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![
                kafka_protocol::messages::produce_request::TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("patient-events")))
                    .with_partition_data(vec![
                        kafka_protocol::messages::produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch(0, 2, Compression::None))),
                    ]),
            ]);
        let OnRequest::Refuse(frame) = trail
            .on_request(
                &caller(),
                &mut Request::new(pm.clone(), request_frame(&pm, &req)),
                true,
                &|_| None,
                &[],
                GateReport::default(),
            )
            .await
        else {
            panic!("refused")
        };
        let (_, body) = split_response(&frame, pm.response_header_version()).unwrap();
        let got: ProduceResponse = decode_body(body, 9, "t").unwrap();
        let p = &got.responses[0].partition_responses[0];
        assert_eq!(p.error_code, crate::kafka::refusal::POLICY_VIOLATION);
        assert_eq!(p.error_message.as_deref(), Some(REFUSAL));
        // Open: traffic flows.
        let open = AuditTrail {
            audit: Arc::clone(trail.audit()),
            defaults: Settings {
                failure_mode: FailureMode::Open,
                payload: PayloadMode::Digest,
                max_ship_lag: Duration::from_secs(60),
            },
            policy: None,
        };
        let inflight = awaiting_fetch(&open, &m).await;
        let frame = fetch_frame(&m);
        assert_eq!(respond(&open, *inflight, &m, frame.clone()).await, frame);
        trail.audit().shutdown(Duration::from_secs(1)).await;
        assert!(trail.audit().health().failed_records() >= 2);
    }

    /// A v1 (pre-KIP-98) message set holding one message: no record count,
    /// but PHI all the same.
    fn legacy_message_set(value: &[u8]) -> Bytes {
        let mut message = vec![0u8; 4]; // crc (not checked here)
        message.extend_from_slice(&[1, 0]); // magic 1, attributes
        message.extend_from_slice(&0i64.to_be_bytes()); // timestamp
        message.extend_from_slice(&(-1i32).to_be_bytes()); // null key
        message.extend_from_slice(&(value.len() as i32).to_be_bytes());
        message.extend_from_slice(value);
        let mut set = 0i64.to_be_bytes().to_vec();
        set.extend_from_slice(&(message.len() as i32).to_be_bytes());
        set.extend_from_slice(&message);
        Bytes::from(set)
    }

    #[tokio::test]
    async fn closed_never_releases_unaudited_legacy_batches_undecodable_answers_or_acks0_writes() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("not-a-dir");
        std::fs::write(&dir, b"file").unwrap();
        let f = flags(&dir, FailureMode::Closed);
        let trail = AuditTrail::new(Arc::new(Audit::with_spool(f.audit.spool_config())), &f);

        // A legacy message set counts no records yet is a disclosure: withheld.
        let m = meta(ApiKey::Fetch, 4);
        let legacy = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("patient-events")))
                .with_partitions(vec![
                    PartitionData::default()
                        .with_records(Some(legacy_message_set(b"{\"mrn\":\"MRN-1\"}"))),
                ]),
        ]);
        let inflight = awaiting_fetch(&trail, &m).await;
        let out = respond(&trail, *inflight, &m, response_frame(&m, &legacy)).await;
        let (_, body) = split_response(&out, m.response_header_version()).unwrap();
        let got: FetchResponse = decode_body(body, 4, "t").unwrap();
        let p = &got.responses[0].partitions[0];
        assert_eq!(p.error_code, crate::kafka::refusal::UNKNOWN_SERVER_ERROR);
        assert!(
            p.records.as_ref().is_none_or(|r| r.is_empty()),
            "no PHI released"
        );

        // An answer that cannot be taken apart is not released at all.
        let m = meta(ApiKey::Fetch, 12);
        let inflight = awaiting_fetch(&trail, &m).await;
        let mut garbled = Response::new(m.clone(), Bytes::from_static(&[0, 0, 0, 7, 0xff, 0xff]));
        finish(&trail, *inflight, &mut garbled).await;
        assert!(matches!(
            garbled.into_frame(),
            Err(crate::kafka::codec::FrameError::Withheld(_))
        ));

        trail.audit().shutdown(Duration::from_secs(1)).await;

        // acks=0: nothing to hold back, so the write itself waits for its
        // durable record. A spool healthy until this very record (its budget
        // holds exactly one start record) must keep the write from the broker.
        let start = || AuditRecord::event(crate::audit::RecordKind::SidecarStart, "start");
        let probe = tempfile::tempdir().unwrap();
        let sized = Audit::with_spool(
            flags(probe.path(), FailureMode::Closed)
                .audit
                .spool_config(),
        );
        sized.record_durable(start()).await.unwrap();
        let one_record = crate::audit::prune::spool_bytes(probe.path()).unwrap();
        let mut tight = flags(&base.path().join("tight"), FailureMode::Closed);
        tight.audit.audit_max_spool_bytes = one_record + 16;
        let trail = AuditTrail::new(
            Arc::new(Audit::with_spool(tight.audit.spool_config())),
            &tight,
        );
        trail.audit().record_durable(start()).await.unwrap();
        assert!(trail.audit().health().is_healthy());
        let pm = meta(ApiKey::Produce, 9);
        let req = acks_0_write("patient-events");
        let mut request = Request::new(pm.clone(), request_frame(&pm, &req));
        let outcome = trail
            .on_request(
                &caller(),
                &mut request,
                false,
                &|_| None,
                &[],
                GateReport::default(),
            )
            .await;
        assert!(
            matches!(outcome, OnRequest::Refuse(ref f) if f.is_empty()),
            "an acks=0 write without a durable record is dropped, not forwarded: {outcome:?}"
        );
        trail.audit().shutdown(Duration::from_secs(1)).await;
    }

    /// An acks=0 Produce of two records to partition 0 of `topic`.
    fn acks_0_write(topic: &'static str) -> ProduceRequest {
        ProduceRequest::default().with_acks(0).with_topic_data(vec![
            kafka_protocol::messages::produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_partition_data(vec![
                    kafka_protocol::messages::produce_request::PartitionProduceData::default()
                        .with_records(Some(batch(0, 2, Compression::None))),
                ]),
        ])
    }

    #[tokio::test]
    async fn an_acks_0_write_names_the_patients_its_records_held() {
        let dir = tempfile::tempdir().unwrap();
        let f = flags(dir.path(), FailureMode::Closed);
        let trail = AuditTrail::new(Arc::new(Audit::with_spool(f.audit.spool_config())), &f);
        let pm = meta(ApiKey::Produce, 9);
        let req = acks_0_write("claims");
        let scanned = crate::masking::patients::PartitionPatients {
            partition: 0,
            patients: ["0123abcd".to_owned()].into(),
            unattributed: 1,
            unreadable: false,
        };
        let masking = [TopicMasking {
            topic: "claims".into(),
            rules: Vec::new(),
            counts: crate::masking::MaskCounts::default(),
            originals: Vec::new(),
            patients: vec![scanned],
        }];
        let mut request = Request::new(pm.clone(), request_frame(&pm, &req));
        let outcome = trail
            .on_request(
                &caller(),
                &mut request,
                false,
                &|_| None,
                &masking,
                GateReport::default(),
            )
            .await;
        assert!(matches!(outcome, OnRequest::Done), "{outcome:?}");
        trail.audit().shutdown(Duration::from_secs(1)).await;
        let recs = records(dir.path());
        let produce = recs
            .iter()
            .find(|r| r.api.as_deref() == Some("Produce"))
            .unwrap();
        assert_eq!(produce.resources[0].patients, ["0123abcd"]);
        assert_eq!(produce.resources[0].unattributed, 1);
    }

    #[test]
    fn flags_parse_case_insensitively_with_a_clear_error() {
        assert_eq!(parse_failure_mode("open"), Ok(FailureMode::Open));
        assert_eq!(parse_payload_mode("Full"), Ok(PayloadMode::Full));
        assert!(
            parse_failure_mode("maybe")
                .unwrap_err()
                .contains("Closed or Open")
        );
    }

    #[test]
    fn masked_fetches_are_recorded_masked_with_the_field_counts() {
        use crate::masking::MaskCounts;
        let counts = |masked: u64, fields: &[(&str, u64)]| MaskCounts {
            records: 3,
            masked_records: masked,
            fields: fields.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..MaskCounts::default()
        };
        let masking = vec![
            TopicMasking {
                topic: "patient-events".into(),
                rules: vec!["patient-phi".into()],
                counts: counts(2, &[("$.patient.ssn", 2)]),
                originals: Vec::new(),
                patients: vec![],
            },
            TopicMasking {
                topic: "claims".into(),
                rules: vec!["claims-phi".into()],
                counts: counts(1, &[("$.payment.cardNumber", 1)]),
                originals: Vec::new(),
                patients: vec![],
            },
            TopicMasking {
                topic: "patient-intake".into(),
                rules: vec!["intake-phi".into()],
                counts: counts(0, &[]),
                originals: Vec::new(),
                patients: vec![],
            },
        ];
        let base = AuditRecord::request("Fetch", 12, Operation::Read)
            .decision(AuditDecision::Allow, "rule readers");
        let rec = with_masking(base.clone(), &masking);
        assert_eq!(rec.decision, Some(AuditDecision::Masked));
        assert_eq!(rec.reason.as_deref(), Some("rule readers"));
        let m = rec.masking.unwrap();
        assert_eq!(m.rule, "claims-phi,patient-phi");
        assert_eq!(m.fields.get("$.patient.ssn"), Some(&2));
        assert_eq!(m.fields.get("$.payment.cardNumber"), Some(&1));
        // Nothing masked: the record is left as the gate decided.
        assert_eq!(with_masking(base.clone(), &masking[2..]), base);
    }
}
