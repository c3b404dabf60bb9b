//! streamgate's control plane.
//!
//! - [`webhook::inject`]: the pure core of sidecar injection (pod CREATE → JSON patch);
//! - [`webhook::approval`]: who may decide an AccessApproval, and stamping `decidedBy`;
//! - [`webhook::server`]: the HTTPS admission server (axum on a rustls listener);
//! - [`controller`]: reconcilers for StreamPolicy, MaskingRule and AccessApproval;
//! - [`rbac`]: the per-namespace `streamgate-sidecar` ServiceAccount and RoleBinding;
//! - [`session`]: sidecar sessions (broker credential and API token for a verified sidecar);
//! - [`tls`]: the self-managed webhook CA and serving certificate, hot-reloaded;
//! - [`leader`]: Lease-based leader election for the singletons;
//! - [`metrics`]: Prometheus metrics and the health endpoints.
//!
//! Why each dependency is here: `kube`/`k8s-openapi` (API client, runtime
//! controller, admission types), `axum`/`tokio-rustls`/`rustls` (the webhook
//! HTTPS server), `rcgen` (self-managed webhook CA), `prometheus-client`
//! (metrics), `json-patch` (admission patches), `chrono`/`humantime`
//! (grant expiry arithmetic), `clap` (flags), `thiserror` (error enums).
//!
//! # Decisions (and why)
//!
//! - **`decidedBy` is stamped by a mutating webhook** on AccessApproval UPDATE
//!   (`/mutate-accessapproval`), and checked by the validating webhook
//!   (`/validate-accessapproval`, CREATE and UPDATE), which runs after every
//!   mutation and so sees the final object. A client-supplied value is
//!   overwritten; one that still disagrees with the requesting user (the stamp
//!   was bypassed) is refused. On CREATE only undecided, valid requests pass,
//!   so a sidecar cannot file a pre-approved grant.
//! - **Injected pods get the label `streamgate.dev/injected=true`** besides the
//!   status annotation, so the operator watches only injected pods (a label
//!   selector) to count workloads and maintain RBAC.
//! - **`KAFKA_BOOTSTRAP_SERVERS` already set by an app container is kept**, with
//!   an admission warning: the app's author chose it, and bypassing the sidecar
//!   gains nothing because only the sidecar holds the broker credential.
//! - **The sidecar's admin port (15901) binds the pod IP** (kubelet probes reach
//!   the pod IP), with `STREAMGATE_ALLOW_NON_LOOPBACK=true`; the Kafka listener
//!   is set to `127.0.0.1` explicitly. The admin port is kept outside the
//!   per-broker port range `listen+1 ..= listen+1024`.
//! - **Secrets**: the broker credential is in no Secret of the app's
//!   namespace: the operator's `--sidecar-credentials` maps each governed
//!   namespace to a Secret in the operator's namespace, handed to a verified
//!   sidecar by [`session`] and held in its memory. The namespace's
//!   MaskingRule hash-key Secrets are mounted optional (a rule may precede
//!   its key; the sidecar then refuses those topics), only in the sidecar,
//!   under `/var/run/streamgate/secrets/<name>` (`STREAMGATE_SECRET_DIR`).
//!   Everything reaches the sidecar as `STREAMGATE_*` env; its args are just `run`.
//! - **An approved request whose policy or rule is gone is not activated**
//!   (stays Pending, `Ready=False, reason RuleNotFound`): fail closed.
//! - **Leader election**: webhooks serve on every replica; controllers, RBAC
//!   sync and caBundle patching run on the Lease holder. Losing the Lease exits
//!   the process (restart), as controller-runtime does.
//! - **Self-managed TLS**: one Secret (`ca.crt`, `ca.key`, `tls.crt`,
//!   `tls.key`) shared by all replicas; the serving certificate is re-issued
//!   from the same CA 30 days before expiry, so `caBundle` never changes; every
//!   replica reloads it into a rustls resolver without restarting.
#![forbid(unsafe_code)]

pub mod config;
pub mod controller;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod session;
pub mod tls;
pub mod validation;
pub mod webhook;

/// The field manager for every status write the controllers make.
pub const FIELD_MANAGER: &str = "streamgate-operator";
/// The field manager that owns `caBundle` on the webhook configurations only.
pub const CA_BUNDLE_FIELD_MANAGER: &str = "streamgate-operator-cabundle";
