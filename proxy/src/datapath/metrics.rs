//! Prometheus metrics for the data path (prometheus-client: the maintained
//! OpenMetrics implementation, no global registry). Per-API handles are built
//! once at startup so the hot path does no label lookups or allocations.

use crate::audit::SpoolHealth;
use kafka_protocol::messages::ApiKey;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabel {
    api: String,
}

/// Counters for one Kafka API.
#[derive(Debug, Clone)]
pub struct ApiMetrics {
    pub requests: Counter,
    pub errors: Counter,
    pub latency: Histogram,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub connections_total: Counter,
    pub connections_active: Gauge,
    /// Closed at accept: the connection limit was reached.
    pub connections_refused: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    per_api: HashMap<i16, ApiMetrics>,
    unknown: ApiMetrics,
    /// audit: spool health, exported as `streamgate_audit_*`.
    audit_registry: Registry,
}

/// Reads the spool's own counters at scrape time (the spool writer owns them).
#[derive(Debug)]
struct AuditCollector(Arc<SpoolHealth>);

impl Collector for AuditCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let health = &self.0;
        let counters = [
            (
                "records",
                "Audit records made durable in the spool",
                health.written_records(),
            ),
            (
                "failed_records",
                "Audit records that could not be spooled",
                health.failed_records(),
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let healthy = ConstGauge::new(i64::from(health.is_healthy()));
        let metric = encoder.encode_descriptor(
            "spool_healthy",
            "1 while the audit spool accepts records, 0 after a failed write",
            None,
            healthy.metric_type(),
        )?;
        healthy.encode(metric)
    }
}

type HistogramFamily = Family<ApiLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s: Fetch long-polls land in the top buckets.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    /// `audit`: the spool whose health is exported (none: no `streamgate_audit_*`).
    pub fn new(audit: Option<Arc<SpoolHealth>>) -> Self {
        let mut registry = Registry::with_prefix("streamgate_proxy");
        let connections_total = Counter::default();
        let connections_active = Gauge::default();
        let connections_refused = Counter::default();
        let bytes_in = Counter::default();
        let bytes_out = Counter::default();
        let requests = Family::<ApiLabel, Counter>::default();
        let errors = Family::<ApiLabel, Counter>::default();
        let latency = HistogramFamily::new_with_constructor(latency_histogram);
        registry.register(
            "client_connections",
            "Client connections accepted",
            connections_total.clone(),
        );
        registry.register(
            "client_connections_active",
            "Client connections open now",
            connections_active.clone(),
        );
        registry.register(
            "client_connections_refused",
            "Client connections closed at accept because the connection limit was reached",
            connections_refused.clone(),
        );
        registry.register(
            "client_bytes_in",
            "Bytes of request frames received from clients",
            bytes_in.clone(),
        );
        registry.register(
            "client_bytes_out",
            "Bytes of response frames sent to clients",
            bytes_out.clone(),
        );
        registry.register("requests", "Client requests by Kafka API", requests.clone());
        registry.register(
            "request_errors",
            "Requests that failed or closed the connection, by Kafka API",
            errors.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request read to response written, by Kafka API",
            latency.clone(),
        );
        let handle = |name: String| ApiMetrics {
            requests: requests
                .get_or_create(&ApiLabel { api: name.clone() })
                .clone(),
            errors: errors
                .get_or_create(&ApiLabel { api: name.clone() })
                .clone(),
            latency: latency.get_or_create(&ApiLabel { api: name }).clone(),
        };
        let per_api = ApiKey::iter()
            .map(|k| (k as i16, handle(format!("{k:?}"))))
            .collect();
        let unknown = handle("unknown".into());
        let mut audit_registry = Registry::with_prefix("streamgate_audit");
        if let Some(health) = audit {
            audit_registry.register_collector(Box::new(AuditCollector(health)));
        }
        Self {
            audit_registry,
            registry,
            connections_total,
            connections_active,
            connections_refused,
            bytes_in,
            bytes_out,
            per_api,
            unknown,
        }
    }

    /// The handles for one API (an unknown key shares one "unknown" series).
    pub fn api(&self, key: i16) -> &ApiMetrics {
        self.per_api.get(&key).unwrap_or(&self.unknown)
    }

    /// OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        use prometheus_client::encoding::text;
        let mut out = String::new();
        text::encode_registry(&mut out, &self.registry)?;
        text::encode_registry(&mut out, &self.audit_registry)?;
        text::encode_eof(&mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_api_series_show_up_in_the_exposition() {
        let m = Metrics::new(None);
        m.api(ApiKey::Produce as i16).requests.inc();
        m.api(ApiKey::Produce as i16).latency.observe(0.002);
        m.api(-5).errors.inc();
        let text = m.encode().unwrap();
        assert!(
            text.contains("streamgate_proxy_requests_total{api=\"Produce\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("streamgate_proxy_request_errors_total{api=\"unknown\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("streamgate_proxy_request_duration_seconds_count{api=\"Produce\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn audit_spool_health_is_exported() {
        assert!(
            !Metrics::new(None)
                .encode()
                .unwrap()
                .contains("streamgate_audit"),
            "nothing without a trail"
        );
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("file");
        std::fs::write(&dir, b"x").unwrap();
        let audit = crate::audit::Audit::with_spool(crate::audit::SpoolConfig::new(&dir));
        let m = Metrics::new(Some(Arc::clone(audit.health())));
        audit
            .record(crate::audit::AuditRecord::event(
                crate::audit::RecordKind::SidecarStart,
                "t",
            ))
            .await;
        audit.shutdown(std::time::Duration::from_secs(1)).await;
        let text = m.encode().unwrap();
        assert!(text.contains("streamgate_audit_records_total 0"), "{text}");
        assert!(
            text.contains("streamgate_audit_failed_records_total "),
            "{text}"
        );
        assert!(
            !text.contains("streamgate_audit_failed_records_total 0"),
            "{text}"
        );
        assert!(text.contains("streamgate_audit_spool_healthy 0"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
