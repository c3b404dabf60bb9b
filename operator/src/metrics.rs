//! Prometheus metrics and the plain-HTTP health/metrics endpoints.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: String,
    pub outcome: String,
}

type HistogramFamily = Family<WebhookLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~1 s: the API server's webhook timeout is at most 30 s, ours 10 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 12))
}

/// Every metric the operator exports, plus readiness.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub webhook_latency: HistogramFamily,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("streamgate_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let webhook_latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "reconciles",
            "Reconciliations run, by controller",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by controller and reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "webhook_duration_seconds",
            "Admission webhook handling time, by webhook and outcome",
            webhook_latency.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            webhook_latency,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, controller: &str) {
        self.reconciles
            .get_or_create(&ControllerLabels {
                controller: controller.to_string(),
            })
            .inc();
    }

    pub fn reconcile_failed(&self, controller: &str, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                controller: controller.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn webhook_observed(&self, webhook: &str, outcome: &str, elapsed: Duration) {
        self.webhook_latency
            .get_or_create(&WebhookLabels {
                webhook: webhook.to_string(),
                outcome: outcome.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Ready once the webhook has a serving certificate.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "could not encode metrics");
        }
        out
    }
}

/// `/metrics`, `/healthz`, `/readyz` (plain HTTP on the metrics port).
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move { m.encode() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(m): State<Arc<Metrics>>| async move {
                if m.is_ready() {
                    (StatusCode::OK, "ready")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "waiting for the webhook serving certificate",
                    )
                }
            }),
        )
        .with_state(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histogram_show_up_in_the_exposition() {
        let m = Metrics::default();
        m.reconciled("streampolicy");
        m.reconcile_failed("accessapproval", "kube_api");
        m.webhook_observed("inject", "injected", Duration::from_millis(3));
        let text = m.encode();
        assert!(
            text.contains("streamgate_operator_reconciles_total{controller=\"streampolicy\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("streamgate_operator_reconcile_errors_total{controller=\"accessapproval\",reason=\"kube_api\"} 1"),
            "{text}"
        );
        assert!(text.contains("streamgate_operator_webhook_duration_seconds_count{webhook=\"inject\",outcome=\"injected\"} 1"), "{text}");
    }
}

#[cfg(test)]
mod http_tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt;

    async fn get(m: &Arc<Metrics>, path: &str) -> (StatusCode, String) {
        let resp = router(m.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn readyz_waits_for_the_certificate_and_metrics_are_served() {
        let m = Arc::new(Metrics::default());
        assert_eq!(get(&m, "/healthz").await.0, StatusCode::OK);
        let (status, body) = get(&m, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("certificate"));
        m.set_ready(true);
        assert_eq!(get(&m, "/readyz").await.0, StatusCode::OK);
        m.reconciled("maskingrule");
        let (status, body) = get(&m, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("streamgate_operator_reconciles_total{controller=\"maskingrule\"} 1"),
            "{body}"
        );
    }
}
