//! The flags of `streamgate-proxy run`, each also readable from its
//! `STREAMGATE_*` variable (the names the injector sets, from
//! `streamgate_crds::contract`).

use crate::audit::stage::AuditFlags;
use crate::datapath::limits::ConnLimits;
use crate::datapath::upstream::SaslMechanism;
use crate::kafka::codec;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Flags for `streamgate-proxy run` (each also readable from `STREAMGATE_*`).
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Bootstrap address clients connect to; broker N is served on port listen+1+N.
    #[arg(long, env = streamgate_crds::contract::ENV_LISTEN, default_value = "127.0.0.1:9092")]
    pub listen: SocketAddr,
    /// Upstream bootstrap brokers, host:port[,host:port].
    #[arg(long, env = streamgate_crds::contract::ENV_UPSTREAM)]
    pub upstream: String,
    /// Lowest broker node id mapped to a local port.
    #[arg(long, env = streamgate_crds::contract::ENV_NODE_ID_MIN, default_value_t = 0)]
    pub node_id_min: i32,
    /// Highest broker node id mapped to a local port (brokers beyond are refused, with a log line).
    #[arg(long, env = streamgate_crds::contract::ENV_NODE_ID_MAX, default_value_t = 1023)]
    pub node_id_max: i32,
    /// Admin HTTP address (/healthz, /readyz, /metrics).
    #[arg(long, env = streamgate_crds::contract::ENV_ADMIN, default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// Allow listening on a non-loopback address (the sidecar should never need this).
    #[arg(long, env = streamgate_crds::contract::ENV_ALLOW_NON_LOOPBACK)]
    pub allow_non_loopback: bool,
    /// Connect to the brokers over TLS.
    #[arg(long, env = streamgate_crds::contract::ENV_UPSTREAM_TLS)]
    pub upstream_tls: bool,
    /// PEM file with the CA(s) that signed the brokers' certificates.
    #[arg(long, env = streamgate_crds::contract::ENV_UPSTREAM_CA_FILE)]
    pub upstream_ca_file: Option<PathBuf>,
    /// Name to verify the brokers' certificates against (default: the host dialled).
    #[arg(long, env = streamgate_crds::contract::ENV_UPSTREAM_SERVER_NAME)]
    pub upstream_server_name: Option<String>,
    /// PEM client certificate chain for mutual TLS.
    #[arg(long, env = streamgate_crds::contract::ENV_UPSTREAM_CLIENT_CERT)]
    pub upstream_client_cert: Option<PathBuf>,
    /// PEM private key for --upstream-client-cert.
    #[arg(long, env = streamgate_crds::contract::ENV_UPSTREAM_CLIENT_KEY)]
    pub upstream_client_key: Option<PathBuf>,
    /// SASL mechanism towards the brokers.
    #[arg(long, env = streamgate_crds::contract::ENV_UPSTREAM_SASL_MECHANISM, value_enum)]
    pub upstream_sasl_mechanism: Option<SaslMechanism>,
    /// File (YAML/JSON: username, password) with the gateway's broker credential.
    #[arg(long, env = streamgate_crds::contract::ENV_UPSTREAM_CREDENTIALS)]
    pub upstream_credentials: Option<PathBuf>,
    /// Largest frame accepted from a client or broker, in bytes.
    #[arg(long, env = streamgate_crds::contract::ENV_MAX_FRAME_BYTES, default_value_t = codec::DEFAULT_MAX_FRAME)]
    pub max_frame_bytes: usize,
    /// How long SIGTERM waits for in-flight requests before exiting.
    #[arg(long, env = streamgate_crds::contract::ENV_SHUTDOWN_GRACE, default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Timeout for connecting to a broker.
    #[arg(long, env = streamgate_crds::contract::ENV_CONNECT_TIMEOUT, default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Read StreamPolicy/MaskingRule/AccessApproval manifests from this directory (reloaded on change).
    #[arg(long, env = streamgate_crds::contract::ENV_POLICY_DIR, conflicts_with = "policy_kube")]
    pub policy_dir: Option<PathBuf>,
    /// Watch the pod's namespace (STREAMGATE_POD_NAMESPACE) for policy objects with the in-cluster client.
    #[arg(long, env = streamgate_crds::contract::ENV_POLICY_KUBE)]
    pub policy_kube: bool,
    /// The operator's HTTPS base URL: at start, trade the projected token
    /// (--sidecar-token-file) for the broker credential and an API token.
    #[arg(long, env = streamgate_crds::contract::ENV_OPERATOR_URL, requires = "sidecar_token_file")]
    pub operator_url: Option<String>,
    /// PEM of the CA the operator's certificate chains to (else the system roots).
    #[arg(long, env = streamgate_crds::contract::ENV_OPERATOR_CA)]
    pub operator_ca: Option<String>,
    /// The sidecar's projected token (audience streamgate.dev/sidecar).
    #[arg(long, env = streamgate_crds::contract::ENV_SIDECAR_TOKEN_FILE)]
    pub sidecar_token_file: Option<PathBuf>,
    /// The operator enforces topic grants (set by the injector): with
    /// --policy-kube, no Allow rule is enforced before the operator checked it.
    #[arg(long, env = streamgate_crds::contract::ENV_TOPIC_GRANTS_ENFORCED)]
    pub topic_grants_enforced: bool,
    /// Trust OIDC issuers over plain http:// (keys fetched without TLS can be
    /// swapped on the way, and any token forged): for a local test IdP only.
    #[arg(long, env = streamgate_crds::contract::ENV_ALLOW_INSECURE_ISSUERS)]
    pub allow_insecure_issuers: bool,
    #[command(flatten)]
    pub limits: ConnLimits,
    #[command(flatten)]
    pub audit: AuditFlags,
    /// Where AccessApproval requests are written in directory mode (default:
    /// the policy directory itself, so the directory source sees the decision).
    #[arg(long, env = streamgate_crds::contract::ENV_APPROVALS_DIR)]
    pub approvals_dir: Option<PathBuf>,
    /// MaskingRule hash keys: the mounted Secrets, laid out `DIR/<secret name>/<key>`.
    /// Without it, rules that hash are blocked (their topics never pass unmasked).
    #[arg(long, env = streamgate_crds::contract::ENV_SECRET_DIR)]
    pub secret_dir: Option<PathBuf>,
    /// Most bytes of records one batch may hold, decompressed, to be masked;
    /// a larger batch is refused (Fetch: partition error, no records; Produce:
    /// MESSAGE_TOO_LARGE), never forwarded unmasked. Keep it far below the
    /// sidecar's memory limit (at most 64 MiB).
    #[arg(long, env = streamgate_crds::contract::ENV_MASKING_MAX_BATCH_BYTES, default_value_t = crate::masking::DEFAULT_MAX_BATCH_BYTES, value_parser = masking_budget)]
    pub masking_max_batch_bytes: usize,
}

/// `--masking-max-batch-bytes`: a byte count from 1 up to what decompression
/// ever allows.
fn masking_budget(s: &str) -> Result<usize, String> {
    let max = crate::masking::codec::MAX_DECOMPRESSED;
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        Ok(n) => Err(format!("{n} is not between 1 and {max}")),
        Err(e) => Err(e.to_string()),
    }
}
