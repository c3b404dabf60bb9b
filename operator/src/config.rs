//! Operator settings that shape what the injector adds to a pod.

/// Annotation: `"true"` injects, `"false"` opts a pod out even in an enabled namespace.
pub const ANNOTATION_INJECT: &str = "streamgate.dev/inject";
/// Namespace label: `enabled` injects every pod of the namespace.
pub const LABEL_NAMESPACE_INJECT: &str = "streamgate.dev/inject";
/// Annotation: the real bootstrap servers.
pub const ANNOTATION_UPSTREAM: &str = "streamgate.dev/upstream";
/// Annotation of earlier versions naming a Secret *in the app's namespace*
/// with the broker credential. No longer honoured (any pod creator there
/// could read it): the operator's `--sidecar-credentials` names the Secret,
/// in the operator's namespace. Still guarded, so an old Secret stays unmountable.
pub const ANNOTATION_UPSTREAM_SECRET: &str = "streamgate.dev/upstream-secret";
/// Annotation: SASL mechanism towards the brokers (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`).
pub const ANNOTATION_UPSTREAM_SASL: &str = "streamgate.dev/upstream-sasl-mechanism";
/// Annotation: `"true"` connects to the brokers over TLS.
pub const ANNOTATION_UPSTREAM_TLS: &str = "streamgate.dev/upstream-tls";
/// Annotation: the loopback port the app connects to.
pub const ANNOTATION_LISTEN_PORT: &str = "streamgate.dev/listen-port";
/// Status annotation (and label) the injector writes; its presence makes injection idempotent.
pub const ANNOTATION_INJECTED: &str = "streamgate.dev/injected";
/// Label on injected pods, so the operator can watch only them.
pub const LABEL_INJECTED: &str = "streamgate.dev/injected";
/// Name of the injected sidecar container.
pub const SIDECAR_NAME: &str = "streamgate-proxy";
// The sidecar's side of the contract (env names, mount paths) lives in the
// API crate, where the proxy's flags read the same constants.
pub use streamgate_crds::contract::{
    KUBE_TOKEN_DIR, PODINFO_DIR, SECRET_DIR, SIDECAR_TOKEN_AUDIENCE, SIDECAR_TOKEN_DIR,
    SIDECAR_TOKEN_FILE, SPOOL_DIR,
};

/// How the sidecar is placed in the pod, chosen by the API server's version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SidecarMode {
    /// Kubernetes ≥ 1.29: the first init container with `restartPolicy: Always`
    /// (a native sidecar), so later init containers can already reach Kafka.
    #[default]
    Native,
    /// Older API servers drop `restartPolicy` on init containers and refuse
    /// probes there: the sidecar becomes the first regular container, and a
    /// `postStart` hook (`streamgate-proxy wait-ready`) holds the app
    /// containers until the proxy is ready, as Istio's
    /// `holdApplicationUntilProxyStarts` does.
    Regular,
}

impl SidecarMode {
    /// Native sidecars are on by default from Kubernetes 1.29.
    pub fn for_server(major: &str, minor: &str) -> Self {
        let num = |s: &str| {
            s.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u32>()
                .ok()
        };
        match (num(major), num(minor)) {
            (Some(1), Some(minor)) if minor < 29 => SidecarMode::Regular,
            (Some(0), _) => SidecarMode::Regular,
            _ => SidecarMode::Native,
        }
    }
}

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
    /// Native or regular sidecar (from the API server's version at start).
    pub sidecar_mode: SidecarMode,
    /// Namespaces a cluster admin exempted from the pod guard even though
    /// they are labelled for injection (operator `--exempt-namespaces`).
    pub exempt_namespaces: std::collections::BTreeSet<String>,
    /// How Kubernetes usernames and groups relate to the OIDC identities
    /// requesters are named by (the approval webhook's self-approval check).
    pub approver_identity: IdentityMapping,
    /// The operator enforces topic grants: injected sidecars are told, so
    /// they enforce no Allow rule the operator has not checked.
    pub topic_grants_enforced: bool,
    /// The operator's HTTPS base URL sidecars open their session at.
    pub session_url: String,
    /// PEM of the CA the operator's serving certificate chains to (what the
    /// sidecar verifies the session endpoint with).
    pub operator_ca_pem: Option<String>,
    /// Namespaces whose sidecars get a broker credential from their session
    /// (the keys of the operator's `--sidecar-credentials`): they speak SASL
    /// to the brokers.
    pub credential_namespaces: std::collections::BTreeSet<String>,
    /// Where injected sidecars ship their audit records (the record of
    /// evidence); `None`: nowhere — the pod's spool is the only copy.
    pub audit_otlp: Option<AuditOtlp>,
}

/// The OTLP collector injected sidecars ship audit records to (standard
/// `OTEL_EXPORTER_OTLP_*` variables in the sidecar). An `https://` endpoint
/// is verified against the sidecar image's system roots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditOtlp {
    pub endpoint: String,
    /// `grpc` or `http/protobuf`.
    pub protocol: String,
    /// `key=value,...` sent with every export (e.g. a collector tenant id).
    pub headers: Option<String>,
}

pub use streamgate_crds::approver::IdentityMapping;

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
            sidecar_mode: SidecarMode::Native,
            exempt_namespaces: std::collections::BTreeSet::new(),
            approver_identity: IdentityMapping::default(),
            topic_grants_enforced: false,
            session_url: "https://streamgate-webhook.streamgate-system.svc:443".to_string(),
            operator_ca_pem: None,
            credential_namespaces: std::collections::BTreeSet::new(),
            audit_otlp: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SidecarMode;

    #[test]
    fn native_sidecars_from_1_29_including_provider_suffixes() {
        assert_eq!(SidecarMode::for_server("1", "20"), SidecarMode::Regular);
        assert_eq!(SidecarMode::for_server("1", "28+"), SidecarMode::Regular);
        assert_eq!(SidecarMode::for_server("1", "29"), SidecarMode::Native);
        assert_eq!(SidecarMode::for_server("1", "33+"), SidecarMode::Native);
        assert_eq!(SidecarMode::for_server("2", "0"), SidecarMode::Native);
    }
}
