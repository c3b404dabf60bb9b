//! The contract between the operator's injector and the sidecar it injects:
//! every environment variable, mount path and file name both sides must agree
//! on, written once. The proxy's clap flags read these names
//! (`#[arg(env = contract::ENV_LISTEN)]`) and the injector writes them, so a
//! rename on one side is a compile error on the other; the operator's tests
//! parse the injected container's env through the proxy's own `RunArgs`.

// === environment: the data path ===

/// Bootstrap address the app connects to (`127.0.0.1:<port>`).
pub const ENV_LISTEN: &str = "STREAMGATE_LISTEN";
/// The real brokers, `host:port[,host:port]`.
pub const ENV_UPSTREAM: &str = "STREAMGATE_UPSTREAM";
pub const ENV_NODE_ID_MIN: &str = "STREAMGATE_NODE_ID_MIN";
pub const ENV_NODE_ID_MAX: &str = "STREAMGATE_NODE_ID_MAX";
/// Admin HTTP address (`/healthz`, `/readyz`, `/metrics`).
pub const ENV_ADMIN: &str = "STREAMGATE_ADMIN";
pub const ENV_ALLOW_NON_LOOPBACK: &str = "STREAMGATE_ALLOW_NON_LOOPBACK";
pub const ENV_UPSTREAM_TLS: &str = "STREAMGATE_UPSTREAM_TLS";
pub const ENV_UPSTREAM_CA_FILE: &str = "STREAMGATE_UPSTREAM_CA_FILE";
pub const ENV_UPSTREAM_SERVER_NAME: &str = "STREAMGATE_UPSTREAM_SERVER_NAME";
pub const ENV_UPSTREAM_CLIENT_CERT: &str = "STREAMGATE_UPSTREAM_CLIENT_CERT";
pub const ENV_UPSTREAM_CLIENT_KEY: &str = "STREAMGATE_UPSTREAM_CLIENT_KEY";
pub const ENV_UPSTREAM_SASL_MECHANISM: &str = "STREAMGATE_UPSTREAM_SASL_MECHANISM";
pub const ENV_UPSTREAM_CREDENTIALS: &str = "STREAMGATE_UPSTREAM_CREDENTIALS";
pub const ENV_MAX_FRAME_BYTES: &str = "STREAMGATE_MAX_FRAME_BYTES";
pub const ENV_SHUTDOWN_GRACE: &str = "STREAMGATE_SHUTDOWN_GRACE";
pub const ENV_CONNECT_TIMEOUT: &str = "STREAMGATE_CONNECT_TIMEOUT";
pub const ENV_MAX_CONNECTIONS: &str = "STREAMGATE_MAX_CONNECTIONS";
pub const ENV_IDLE_TIMEOUT: &str = "STREAMGATE_IDLE_TIMEOUT";
pub const ENV_AUTH_TIMEOUT: &str = "STREAMGATE_AUTH_TIMEOUT";
pub const ENV_PRE_AUTH_MAX_FRAME_BYTES: &str = "STREAMGATE_PRE_AUTH_MAX_FRAME_BYTES";
/// Most bytes of records one batch may hold, decompressed, to be masked.
pub const ENV_MASKING_MAX_BATCH_BYTES: &str = "STREAMGATE_MASKING_MAX_BATCH_BYTES";

// === environment: policy, approvals, secrets ===

pub const ENV_POLICY_DIR: &str = "STREAMGATE_POLICY_DIR";
/// `true`: watch the pod's namespace for StreamPolicy/MaskingRule/AccessApproval
/// with the in-cluster client; approvals are filed as AccessApprovals there.
pub const ENV_POLICY_KUBE: &str = "STREAMGATE_POLICY_KUBE";
/// `true`: the operator enforces topic grants, so the sidecar enforces no
/// Allow rule of a policy the operator has not checked — the namespace's
/// first one included.
pub const ENV_TOPIC_GRANTS_ENFORCED: &str = "STREAMGATE_TOPIC_GRANTS_ENFORCED";
pub const ENV_APPROVALS_DIR: &str = "STREAMGATE_APPROVALS_DIR";
/// Mounted Secrets, laid out `DIR/<secret name>/<key>`.
pub const ENV_SECRET_DIR: &str = "STREAMGATE_SECRET_DIR";
/// `true`: trust OIDC issuers (and their `jwks_uri`) over plain `http://`.
/// Only for a local test IdP; the injector never sets it.
pub const ENV_ALLOW_INSECURE_ISSUERS: &str = "STREAMGATE_ALLOW_INSECURE_ISSUERS";

// === environment: the sidecar's session with the operator ===

/// The operator's HTTPS base URL (`https://streamgate-webhook.<ns>.svc:443`).
/// Set: at start the sidecar presents its projected token there and gets the
/// broker credential and its own API token ([`SidecarSession`]).
pub const ENV_OPERATOR_URL: &str = "STREAMGATE_OPERATOR_URL";
/// PEM of the CA the operator's serving certificate chains to.
pub const ENV_OPERATOR_CA: &str = "STREAMGATE_OPERATOR_CA";
/// The projected token (audience [`SIDECAR_TOKEN_AUDIENCE`]) the sidecar
/// proves itself with.
pub const ENV_SIDECAR_TOKEN_FILE: &str = "STREAMGATE_SIDECAR_TOKEN_FILE";

// === environment: the pod's identity (downward API) ===

pub const ENV_POD_NAME: &str = "STREAMGATE_POD_NAME";
pub const ENV_POD_NAMESPACE: &str = "STREAMGATE_POD_NAMESPACE";
pub const ENV_POD_UID: &str = "STREAMGATE_POD_UID";
pub const ENV_SERVICE_ACCOUNT: &str = "STREAMGATE_SERVICE_ACCOUNT";
/// Path of the downward-API labels file (`key="value"` lines).
pub const ENV_POD_LABELS_FILE: &str = "STREAMGATE_POD_LABELS_FILE";

// === environment: audit ===

pub const ENV_AUDIT_DIR: &str = "STREAMGATE_AUDIT_DIR";
pub const ENV_AUDIT_SEGMENT_BYTES: &str = "STREAMGATE_AUDIT_SEGMENT_BYTES";
pub const ENV_AUDIT_CHECKPOINT_EVERY: &str = "STREAMGATE_AUDIT_CHECKPOINT_EVERY";
pub const ENV_AUDIT_CHECKPOINT_INTERVAL: &str = "STREAMGATE_AUDIT_CHECKPOINT_INTERVAL";
pub const ENV_AUDIT_OTLP: &str = "STREAMGATE_AUDIT_OTLP";
/// The OpenTelemetry SDK's own variables, set by the injector for shipping.
pub const ENV_OTEL_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const ENV_OTEL_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const ENV_OTEL_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// `true`: aggregated Kubernetes Events in the pod's namespace.
pub const ENV_AUDIT_EVENTS: &str = "STREAMGATE_AUDIT_EVENTS";
pub const ENV_AUDIT_FAILURE_MODE: &str = "STREAMGATE_AUDIT_FAILURE_MODE";
pub const ENV_AUDIT_PAYLOAD: &str = "STREAMGATE_AUDIT_PAYLOAD";
/// How far OTLP shipping may lag before failureMode Closed refuses PHI requests.
pub const ENV_AUDIT_MAX_SHIP_LAG: &str = "STREAMGATE_AUDIT_MAX_SHIP_LAG";
/// How many newest segments stay on the pod after shipping.
pub const ENV_AUDIT_KEEP_SEGMENTS: &str = "STREAMGATE_AUDIT_KEEP_SEGMENTS";
/// The spool's budget in bytes (below the spool volume's size limit).
pub const ENV_AUDIT_MAX_SPOOL_BYTES: &str = "STREAMGATE_AUDIT_MAX_SPOOL_BYTES";
/// The spool volume's size limit the injector sets, and the sidecar's default
/// budget under it (room left for the segment being written and the markers).
pub const SPOOL_VOLUME_LIMIT: &str = "256Mi";
pub const DEFAULT_MAX_SPOOL_BYTES: u64 = 192 * 1024 * 1024;

// === what the app containers get ===

/// Env var the app containers get, pointing at the sidecar.
pub const ENV_APP_BOOTSTRAP: &str = "KAFKA_BOOTSTRAP_SERVERS";

// === mounts inside the sidecar ===

/// Where Secrets are mounted inside the sidecar (`STREAMGATE_SECRET_DIR`).
pub const SECRET_DIR: &str = "/var/run/streamgate/secrets";
/// Where the downward-API pod labels file is mounted.
pub const PODINFO_DIR: &str = "/var/run/streamgate/podinfo";
/// The labels file inside [`PODINFO_DIR`].
pub const PODINFO_LABELS_FILE: &str = "labels";
/// Where the sidecar keeps its audit spool.
pub const SPOOL_DIR: &str = "/var/run/streamgate/spool";
/// Where kube clients look for the in-cluster token; the sidecar gets its own projection here.
pub const KUBE_TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Key in the upstream Secret holding the credential file (YAML: username, password).
pub const UPSTREAM_CREDENTIALS_KEY: &str = "credentials";

/// Where the sidecar's own projected token (audience
/// [`SIDECAR_TOKEN_AUDIENCE`]) is mounted; only the sidecar mounts it (the
/// pod guard refuses any other container mounting a `streamgate-*` volume).
pub const SIDECAR_TOKEN_DIR: &str = "/var/run/streamgate/sidecar-token";
/// The token file inside [`SIDECAR_TOKEN_DIR`].
pub const SIDECAR_TOKEN_FILE: &str = "token";
/// The audience of that token: the API server accepts no request with it,
/// and the operator's TokenReview accepts nothing else, so neither the app's
/// default token nor this one works in the other's place.
pub const SIDECAR_TOKEN_AUDIENCE: &str = "streamgate.dev/sidecar";
/// The operator's endpoint, below [`ENV_OPERATOR_URL`], that opens a session.
pub const SESSION_PATH: &str = "/sidecar/session";
/// The per-namespace ServiceAccount the sidecar acts as towards the API
/// server (the operator creates it and binds the sidecar role to it; the
/// app's ServiceAccount gets no streamgate rights).
pub const SIDECAR_SERVICE_ACCOUNT: &str = "streamgate-sidecar";

/// What the operator answers on [`SESSION_PATH`]. Holds secrets: its `Debug`
/// shows neither the password nor the token.
#[derive(Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSession {
    /// The broker credential of the pod's namespace, when the operator's
    /// config names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SessionCredentials>,
    /// A token of [`SIDECAR_SERVICE_ACCOUNT`] bound to the pod, for the API server.
    pub kube_token: String,
    /// When `kube_token` expires (RFC 3339); the sidecar renews before.
    pub kube_token_expires: String,
}

/// The broker credential (SASL username and password).
#[derive(Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SessionCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SidecarSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarSession")
            .field("credentials", &self.credentials)
            .field("kube_token", &"<redacted>")
            .field("kube_token_expires", &self.kube_token_expires)
            .finish()
    }
}

impl std::fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Variables the sidecar reads straight from its environment rather than
/// through a `run` flag: the downward-API description of the pod that
/// workload identity is built from (`Workload::from_env` in the proxy), and
/// the OpenTelemetry exporter's own settings (read by the OTLP SDK).
pub const READ_FROM_ENV: &[&str] = &[
    ENV_POD_LABELS_FILE,
    ENV_OTEL_ENDPOINT,
    ENV_OTEL_PROTOCOL,
    ENV_OTEL_HEADERS,
];

/// Every `STREAMGATE_*` variable above, for tests that check both sides agree.
pub const ALL_ENV: &[&str] = &[
    ENV_LISTEN,
    ENV_UPSTREAM,
    ENV_NODE_ID_MIN,
    ENV_NODE_ID_MAX,
    ENV_ADMIN,
    ENV_ALLOW_NON_LOOPBACK,
    ENV_UPSTREAM_TLS,
    ENV_UPSTREAM_CA_FILE,
    ENV_UPSTREAM_SERVER_NAME,
    ENV_UPSTREAM_CLIENT_CERT,
    ENV_UPSTREAM_CLIENT_KEY,
    ENV_UPSTREAM_SASL_MECHANISM,
    ENV_UPSTREAM_CREDENTIALS,
    ENV_MAX_FRAME_BYTES,
    ENV_SHUTDOWN_GRACE,
    ENV_CONNECT_TIMEOUT,
    ENV_MAX_CONNECTIONS,
    ENV_IDLE_TIMEOUT,
    ENV_AUTH_TIMEOUT,
    ENV_PRE_AUTH_MAX_FRAME_BYTES,
    ENV_MASKING_MAX_BATCH_BYTES,
    ENV_POLICY_DIR,
    ENV_POLICY_KUBE,
    ENV_TOPIC_GRANTS_ENFORCED,
    ENV_APPROVALS_DIR,
    ENV_SECRET_DIR,
    ENV_ALLOW_INSECURE_ISSUERS,
    ENV_OPERATOR_URL,
    ENV_OPERATOR_CA,
    ENV_SIDECAR_TOKEN_FILE,
    ENV_POD_NAME,
    ENV_POD_NAMESPACE,
    ENV_POD_UID,
    ENV_SERVICE_ACCOUNT,
    ENV_POD_LABELS_FILE,
    ENV_AUDIT_DIR,
    ENV_AUDIT_SEGMENT_BYTES,
    ENV_AUDIT_CHECKPOINT_EVERY,
    ENV_AUDIT_CHECKPOINT_INTERVAL,
    ENV_AUDIT_OTLP,
    ENV_AUDIT_EVENTS,
    ENV_AUDIT_FAILURE_MODE,
    ENV_AUDIT_PAYLOAD,
    ENV_AUDIT_MAX_SHIP_LAG,
    ENV_AUDIT_KEEP_SEGMENTS,
    ENV_AUDIT_MAX_SPOOL_BYTES,
];
