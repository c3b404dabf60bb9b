//! streamgate's control plane.
//!
//! - [`webhook::inject`]: the pure core of sidecar injection (pod CREATE → JSON patch);
//! - [`webhook::approval`]: who may decide an AccessApproval, and stamping `decidedBy`;
//! - [`webhook::server`]: the HTTPS admission server (axum on a rustls listener);
//! - [`controller`]: reconcilers for StreamPolicy, MaskingRule and AccessApproval;
//! - [`rbac`]: the per-namespace RoleBinding for injected pods' ServiceAccounts;
//! - [`tls`]: the self-managed webhook CA and serving certificate, hot-reloaded;
//! - [`leader`]: Lease-based leader election for the singletons;
//! - [`metrics`]: Prometheus metrics and the health endpoints.
//!
//! Why each dependency is here: `kube`/`k8s-openapi` (API client, runtime
//! controller, admission types), `axum`/`tokio-rustls`/`rustls` (the webhook
//! HTTPS server), `rcgen` (self-managed webhook CA), `prometheus-client`
//! (metrics), `json-patch` (admission patches), `chrono`/`humantime`
//! (grant expiry arithmetic), `clap` (flags), `thiserror` (error enums).
#![forbid(unsafe_code)]

pub mod config;
pub mod controller;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod tls;
pub mod validation;
pub mod webhook;

/// The field manager for every status write the controllers make.
pub const FIELD_MANAGER: &str = "streamgate-operator";
/// The field manager that owns `caBundle` on the webhook configurations only.
pub const CA_BUNDLE_FIELD_MANAGER: &str = "streamgate-operator-cabundle";
