//! The loopback admin port: `/healthz` (the process runs), `/readyz` (the
//! first policy is in and the upstream answered ApiVersions + Metadata),
//! `/metrics` (Prometheus). axum is
//! the workspace's HTTP server (the operator's webhooks use it too).

use super::state::Proxy;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(proxy)
}

async fn readyz(State(proxy): State<Arc<Proxy>>) -> impl IntoResponse {
    if proxy.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if !proxy.gate.policy.loaded() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "policy not loaded yet from the API server\n",
        )
    } else if proxy.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream not reached yet\n",
        )
    }
}

async fn metrics(State(proxy): State<Arc<Proxy>>) -> impl IntoResponse {
    match proxy.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
