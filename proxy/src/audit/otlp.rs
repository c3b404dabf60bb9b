//! Ship audit records as OTLP logs (opentelemetry-otlp's `LogExporter`).
//!
//! Configuration is the standard OpenTelemetry environment: `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL` /
//! `OTEL_EXPORTER_OTLP_LOGS_PROTOCOL` (`grpc` or `http/protobuf`), `…_HEADERS`, `…_TIMEOUT`,
//! `OTEL_RESOURCE_ATTRIBUTES`. We call the exporter directly (no batch processor) so that a
//! batch is acknowledged only when the collector accepted it — the cursor depends on that.
//!
//! Each record becomes one log: body = the record JSON exactly as spooled (so the receiver
//! can re-verify the hash), timestamp = the record's `time`, attributes with OpenTelemetry
//! semantic-convention names where one fits (`messaging.*`, `enduser.id`, `client.*`) and
//! `streamgate.*` for the rest. Resource: `service.name=streamgate-proxy`, `k8s.pod.name`,
//! `k8s.namespace.name`. Delivery is at-least-once (see `shipper`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogRecord, SdkLogger, SdkLoggerProvider};
use serde_json::Value;

use super::record::{AuditDecision, AuditRecord, Operation, PodIdentity, RecordKind};
use super::shipper::Sink;

/// The service name on every log's resource.
pub const SERVICE_NAME: &str = "streamgate-proxy";

/// Is an OTLP endpoint configured in the environment?
pub fn configured_in_env() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// The resource describing this sidecar.
pub fn resource(pod: &PodIdentity) -> Resource {
    let mut attrs = vec![KeyValue::new("service.name", SERVICE_NAME)];
    if let Some(p) = &pod.pod {
        attrs.push(KeyValue::new("k8s.pod.name", p.clone()));
    }
    if let Some(n) = &pod.namespace {
        attrs.push(KeyValue::new("k8s.namespace.name", n.clone()));
    }
    Resource::builder().with_attributes(attrs).build()
}

/// An OTLP log exporter from the standard environment variables (must run inside a Tokio
/// runtime: the gRPC channel needs a reactor).
pub fn exporter_from_env(pod: &PodIdentity) -> Result<opentelemetry_otlp::LogExporter, String> {
    let mut exporter = opentelemetry_otlp::LogExporter::builder()
        .build()
        .map_err(|e| e.to_string())?;
    exporter.set_resource(&resource(pod));
    Ok(exporter)
}

/// Delivers records to an OTLP log exporter.
#[derive(Debug)]
pub struct OtlpSink<E> {
    exporter: E,
    logger: SdkLogger,
    scope: InstrumentationScope,
    _provider: SdkLoggerProvider,
}

impl<E: LogExporter> OtlpSink<E> {
    pub fn new(exporter: E) -> Self {
        // A provider without processors: used only to create SdkLogRecords, which the
        // SDK does not let us construct directly. Nothing is emitted through it.
        let provider = SdkLoggerProvider::builder().build();
        let logger = provider.logger("streamgate.audit");
        let scope = InstrumentationScope::builder("streamgate.audit")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Self {
            exporter,
            logger,
            scope,
            _provider: provider,
        }
    }
}

impl<E: LogExporter + 'static> Sink for OtlpSink<E> {
    async fn deliver(&mut self, records: &[Value]) -> Result<(), String> {
        let logs: Vec<SdkLogRecord> = records.iter().map(|v| to_log(&self.logger, v)).collect();
        let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            logs.iter().map(|l| (l, &self.scope)).collect();
        self.exporter
            .export(LogBatch::new(&refs))
            .await
            .map_err(|e| e.to_string())
    }
}

fn to_log(logger: &SdkLogger, value: &Value) -> SdkLogRecord {
    let mut log = logger.create_log_record();
    let body = super::chain::canonical_json(value);
    match serde_json::from_value::<AuditRecord>(value.clone()) {
        Ok(rec) => {
            let (number, text) = severity(&rec);
            log.set_severity_number(number);
            log.set_severity_text(text);
            log.set_event_name(event_name(rec.kind));
            if let Some(t) = rec.parsed_time() {
                log.set_timestamp(SystemTime::from(t));
            }
            for (key, value) in attributes(&rec) {
                log.add_attribute(key, value);
            }
        }
        Err(e) => {
            // Still ship it: the receiver gets the raw record and can see what is wrong.
            log.set_severity_number(Severity::Error);
            log.set_severity_text("ERROR");
            log.add_attribute("streamgate.parse_error", e.to_string());
            if let Some(seq) = value.get("seq").and_then(Value::as_i64) {
                log.add_attribute("streamgate.seq", seq);
            }
        }
    }
    log.set_observed_timestamp(SystemTime::now());
    log.set_body(AnyValue::from(body));
    log
}

fn severity(rec: &AuditRecord) -> (Severity, &'static str) {
    match (rec.kind, rec.decision) {
        (RecordKind::SpoolFailure | RecordKind::BreakGlassUsed, _) => (Severity::Error, "ERROR"),
        (RecordKind::AuthFailure | RecordKind::SpoolRecovered, _)
        | (_, Some(AuditDecision::Deny)) => (Severity::Warn, "WARN"),
        // Every request under break-glass stands out for its review.
        _ if rec.break_glass.is_some() => (Severity::Warn, "WARN"),
        _ => (Severity::Info, "INFO"),
    }
}

fn event_name(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Request => "streamgate.audit.request",
        RecordKind::AuthFailure => "streamgate.audit.auth_failure",
        RecordKind::PolicyReload => "streamgate.audit.policy_reload",
        RecordKind::ApprovalRequested => "streamgate.audit.approval_requested",
        RecordKind::ApprovalUsed => "streamgate.audit.approval_used",
        RecordKind::ApprovalExpired => "streamgate.audit.approval_expired",
        RecordKind::BreakGlassUsed => "streamgate.audit.break_glass_used",
        RecordKind::SidecarStart => "streamgate.audit.sidecar_start",
        RecordKind::SidecarStop => "streamgate.audit.sidecar_stop",
        RecordKind::SpoolFailure => "streamgate.audit.spool_failure",
        RecordKind::SpoolRecovered => "streamgate.audit.spool_recovered",
        RecordKind::Checkpoint => "streamgate.audit.checkpoint",
    }
}

/// The log attributes of a record (pure).
pub fn attributes(rec: &AuditRecord) -> Vec<(&'static str, AnyValue)> {
    let mut a: Vec<(&'static str, AnyValue)> = vec![
        (
            "streamgate.seq",
            AnyValue::Int(i64::try_from(rec.seq).unwrap_or(i64::MAX)),
        ),
        ("streamgate.hash", rec.hash.clone().into()),
        ("streamgate.kind", format!("{:?}", rec.kind).into()),
    ];
    let mut push = |k: &'static str, v: Option<AnyValue>| {
        if let Some(v) = v {
            a.push((k, v));
        }
    };
    if rec.kind == RecordKind::Request || rec.api.is_some() {
        push("messaging.system", Some("kafka".into()));
    }
    push("messaging.operation.name", rec.api.clone().map(Into::into));
    push(
        "messaging.operation.type",
        rec.operation.and_then(|o| match o {
            Operation::Write => Some("send".into()),
            Operation::Read => Some("receive".into()),
            _ => None,
        }),
    );
    let topics: BTreeSet<&str> = rec.resources.iter().map(|r| r.topic.as_str()).collect();
    if topics.len() == 1 {
        push(
            "messaging.destination.name",
            topics.first().map(|t| (*t).to_owned().into()),
        );
    }
    if rec.resources.len() == 1 {
        push(
            "messaging.destination.partition.id",
            rec.resources[0].partition.map(|p| p.to_string().into()),
        );
    }
    if !rec.resources.is_empty() {
        push(
            "messaging.batch.message_count",
            Some(AnyValue::Int(
                i64::try_from(rec.total_records()).unwrap_or(i64::MAX),
            )),
        );
        push(
            "streamgate.topics",
            Some(AnyValue::ListAny(Box::new(
                topics.iter().map(|t| (*t).to_owned().into()).collect(),
            ))),
        );
        push(
            "streamgate.bytes",
            Some(AnyValue::Int(
                i64::try_from(rec.total_bytes()).unwrap_or(i64::MAX),
            )),
        );
    }
    push("messaging.client.id", rec.client_id.clone().map(Into::into));
    if let Some(addr) = &rec.client_address {
        match addr.parse::<SocketAddr>() {
            Ok(sa) => {
                push("client.address", Some(sa.ip().to_string().into()));
                push("client.port", Some(AnyValue::Int(i64::from(sa.port()))));
            }
            Err(_) => push("client.address", Some(addr.clone().into())),
        }
    }
    if let Some(s) = &rec.subject {
        push("enduser.id", Some(s.name.clone().into()));
        push("streamgate.subject.kind", Some(s.kind.clone().into()));
        if !s.groups.is_empty() {
            push(
                "streamgate.subject.groups",
                Some(AnyValue::ListAny(Box::new(
                    s.groups.iter().cloned().map(Into::into).collect(),
                ))),
            );
        }
        push(
            "streamgate.subject.issuer",
            s.issuer.clone().map(Into::into),
        );
    }
    push(
        "k8s.service_account.name",
        rec.service_account.clone().map(Into::into),
    );
    push(
        "streamgate.decision",
        rec.decision.map(|d| d.as_str().into()),
    );
    push("streamgate.reason", rec.reason.clone().map(Into::into));
    push(
        "streamgate.break_glass.reason",
        rec.break_glass.clone().map(Into::into),
    );
    if let Some(p) = &rec.policy {
        push("streamgate.policy.name", Some(p.name.clone().into()));
        push(
            "streamgate.policy.generation",
            Some(AnyValue::Int(p.generation)),
        );
    }
    if let Some(m) = &rec.masking {
        push("streamgate.masking.rule", Some(m.rule.clone().into()));
        push(
            "streamgate.masking.fields",
            Some(AnyValue::Int(
                i64::try_from(m.fields.values().sum::<u64>()).unwrap_or(i64::MAX),
            )),
        );
    }
    push(
        "streamgate.payload_digest",
        rec.payload_digest.clone().map(Into::into),
    );
    if let Some(c) = &rec.checkpoint {
        push(
            "streamgate.checkpoint.seq",
            Some(AnyValue::Int(i64::try_from(c.seq).unwrap_or(i64::MAX))),
        );
        push("streamgate.checkpoint.hash", Some(c.hash.clone().into()));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::sample_fetch;

    fn get<'a>(attrs: &'a [(&'static str, AnyValue)], key: &str) -> Option<&'a AnyValue> {
        attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    #[test]
    fn request_maps_to_semantic_names() {
        let mut rec = sample_fetch(2).decision(AuditDecision::Deny, "no rule");
        rec.seq = 7;
        let a = attributes(&rec);
        assert_eq!(get(&a, "messaging.system"), Some(&AnyValue::from("kafka")));
        assert_eq!(
            get(&a, "messaging.operation.type"),
            Some(&AnyValue::from("receive"))
        );
        assert_eq!(
            get(&a, "messaging.destination.name"),
            Some(&AnyValue::from("patient-records"))
        );
        assert_eq!(
            get(&a, "messaging.destination.partition.id"),
            Some(&AnyValue::from("2"))
        );
        assert_eq!(
            get(&a, "enduser.id"),
            Some(&AnyValue::from("alice@example.com"))
        );
        assert_eq!(
            get(&a, "client.address"),
            Some(&AnyValue::from("127.0.0.1"))
        );
        assert_eq!(get(&a, "client.port"), Some(&AnyValue::Int(53422)));
        assert_eq!(get(&a, "streamgate.seq"), Some(&AnyValue::Int(7)));
        assert_eq!(
            get(&a, "streamgate.decision"),
            Some(&AnyValue::from("Deny"))
        );
        assert_eq!(severity(&rec).0, Severity::Warn);
    }

    #[test]
    fn lifecycle_records_are_not_messaging() {
        let rec = AuditRecord::event(RecordKind::PolicyReload, "phi-access generation 4");
        let a = attributes(&rec);
        assert!(get(&a, "messaging.system").is_none());
        assert_eq!(
            get(&a, "streamgate.kind"),
            Some(&AnyValue::from("PolicyReload"))
        );
    }
}
