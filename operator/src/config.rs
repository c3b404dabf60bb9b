//! Operator settings that shape what the injector adds to a pod.

/// Annotation: `"true"` injects, `"false"` opts a pod out even in an enabled namespace.
pub const ANNOTATION_INJECT: &str = "streamgate.dev/inject";
/// Namespace label: `enabled` injects every pod of the namespace.
pub const LABEL_NAMESPACE_INJECT: &str = "streamgate.dev/inject";
/// Annotation: the real bootstrap servers.
pub const ANNOTATION_UPSTREAM: &str = "streamgate.dev/upstream";
/// Annotation: the Secret with the gateway's own broker credential.
pub const ANNOTATION_UPSTREAM_SECRET: &str = "streamgate.dev/upstream-secret";
/// Annotation: SASL mechanism towards the brokers (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`).
pub const ANNOTATION_UPSTREAM_SASL: &str = "streamgate.dev/upstream-sasl-mechanism";
/// Annotation: `"true"` connects to the brokers over TLS.
pub const ANNOTATION_UPSTREAM_TLS: &str = "streamgate.dev/upstream-tls";
/// Key in the upstream Secret holding the credential file (YAML: username, password).
pub const UPSTREAM_CREDENTIALS_KEY: &str = "credentials";
/// Annotation: the loopback port the app connects to.
pub const ANNOTATION_LISTEN_PORT: &str = "streamgate.dev/listen-port";
/// Status annotation (and label) the injector writes; its presence makes injection idempotent.
pub const ANNOTATION_INJECTED: &str = "streamgate.dev/injected";
/// Label on injected pods, so the operator can watch only them.
pub const LABEL_INJECTED: &str = "streamgate.dev/injected";
/// Name of the injected sidecar container.
pub const SIDECAR_NAME: &str = "streamgate-proxy";
/// Where Secrets are mounted inside the sidecar (`--secret-dir`).
pub const SECRET_DIR: &str = "/var/run/streamgate/secrets";
/// Where the downward-API pod labels file is mounted.
pub const PODINFO_DIR: &str = "/var/run/streamgate/podinfo";
/// Where the sidecar keeps its audit spool (`STREAMGATE_AUDIT_DIR`; an emptyDir: the root FS is read-only).
pub const SPOOL_DIR: &str = "/var/run/streamgate/spool";
/// Where kube clients look for the in-cluster token; the sidecar gets its own projection here.
pub const KUBE_TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What the injector needs to know beyond the pod itself.
#[derive(Clone, Debug)]
pub struct InjectorSettings {
    /// The sidecar image, e.g. `ghcr.io/streamgate/streamgate-proxy:0.1.0`.
    pub proxy_image: String,
    /// `IfNotPresent`, `Always` or `Never`.
    pub image_pull_policy: String,
    /// Upstream used when a pod has no `streamgate.dev/upstream` annotation.
    pub default_upstream: Option<String>,
    /// Loopback port apps connect to when a pod has no `listen-port` annotation.
    pub default_listen_port: u16,
    /// The sidecar's admin port (`/healthz`, `/readyz`, `/metrics`). Kept
    /// outside the per-broker port range `listen+1 ..= listen+1+1023`.
    pub admin_port: u16,
    /// Pods of this namespace are never injected (the operator's own).
    pub operator_namespace: String,
    /// Sidecar resources.
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
    /// Lifetime of the sidecar's projected ServiceAccount token.
    pub token_expiration_seconds: i64,
}

impl Default for InjectorSettings {
    fn default() -> Self {
        Self {
            proxy_image: "ghcr.io/streamgate/streamgate-proxy:0.1.0".to_string(),
            image_pull_policy: "IfNotPresent".to_string(),
            default_upstream: None,
            default_listen_port: 9092,
            admin_port: 15901,
            operator_namespace: "streamgate-system".to_string(),
            cpu_request: "50m".to_string(),
            memory_request: "64Mi".to_string(),
            memory_limit: "256Mi".to_string(),
            token_expiration_seconds: 3600,
        }
    }
}
