//! `streamgate-proxy run`: the data path.
//!
//! Layout (one concern per module; `codec`, `addresses`, `apis`, `config` and
//! `upstream::scram` are pure and tested without sockets):
//! - `codec`      — length-prefixed frames on `Bytes`, header peeking
//! - `addresses`  — node id → loopback port plan
//! - `apis`       — one file per decoded Kafka API (the `// gate:` call sites)
//! - `session`    — per-connection state the governance layers read
//! - `connection` — the pipelined per-connection forwarding loop
//! - `state`      — shared cluster knowledge, per-broker listeners
//! - `upstream`   — broker connections: TLS (rustls/ring), SASL PLAIN/SCRAM
//! - `admin`, `metrics` — /healthz, /readyz, /metrics
//!
//! Dependencies used here and why: kafka-protocol (message codecs), bytes
//! (zero-copy frames), tokio-util (framing, cancellation), rustls/tokio-rustls
//! (upstream TLS), hmac/sha2/pbkdf2/base64/rand (SCRAM), axum (admin HTTP),
//! prometheus-client (metrics), uuid (topic ids in Metadata/Fetch).

pub mod addresses;
pub mod admin;
pub mod apis;
pub mod audit_summary;
pub mod audit_trail;
pub mod codec;
pub mod config;
pub mod connection;
pub mod masking_state;
pub mod metrics;
pub mod policy_reloads;
pub mod session;
pub mod state;
pub mod upstream;

use anyhow::Context;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
};
use session::Target;
use state::Proxy;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use upstream::{Credentials, SaslMechanism, UpstreamConfig};

/// Flags for `streamgate-proxy run` (each also readable from `STREAMGATE_*`).
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Bootstrap address clients connect to; broker N is served on port listen+1+N.
    #[arg(long, env = "STREAMGATE_LISTEN", default_value = "127.0.0.1:9092")]
    pub listen: SocketAddr,
    /// Upstream bootstrap brokers, host:port[,host:port].
    #[arg(long, env = "STREAMGATE_UPSTREAM")]
    pub upstream: String,
    /// Lowest broker node id mapped to a local port.
    #[arg(long, env = "STREAMGATE_NODE_ID_MIN", default_value_t = 0)]
    pub node_id_min: i32,
    /// Highest broker node id mapped to a local port (brokers beyond are refused, with a log line).
    #[arg(long, env = "STREAMGATE_NODE_ID_MAX", default_value_t = 1023)]
    pub node_id_max: i32,
    /// Admin HTTP address (/healthz, /readyz, /metrics).
    #[arg(long, env = "STREAMGATE_ADMIN", default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// Allow listening on a non-loopback address (the sidecar should never need this).
    #[arg(long, env = "STREAMGATE_ALLOW_NON_LOOPBACK")]
    pub allow_non_loopback: bool,
    /// Connect to the brokers over TLS.
    #[arg(long, env = "STREAMGATE_UPSTREAM_TLS")]
    pub upstream_tls: bool,
    /// PEM file with the CA(s) that signed the brokers' certificates.
    #[arg(long, env = "STREAMGATE_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Name to verify the brokers' certificates against (default: the host dialled).
    #[arg(long, env = "STREAMGATE_UPSTREAM_SERVER_NAME")]
    pub upstream_server_name: Option<String>,
    /// PEM client certificate chain for mutual TLS.
    #[arg(long, env = "STREAMGATE_UPSTREAM_CLIENT_CERT")]
    pub upstream_client_cert: Option<PathBuf>,
    /// PEM private key for --upstream-client-cert.
    #[arg(long, env = "STREAMGATE_UPSTREAM_CLIENT_KEY")]
    pub upstream_client_key: Option<PathBuf>,
    /// SASL mechanism towards the brokers.
    #[arg(long, env = "STREAMGATE_UPSTREAM_SASL_MECHANISM", value_enum)]
    pub upstream_sasl_mechanism: Option<SaslMechanism>,
    /// File (YAML/JSON: username, password) with the gateway's broker credential.
    #[arg(long, env = "STREAMGATE_UPSTREAM_CREDENTIALS")]
    pub upstream_credentials: Option<PathBuf>,
    /// Largest frame accepted from a client or broker, in bytes.
    #[arg(long, env = "STREAMGATE_MAX_FRAME_BYTES", default_value_t = codec::DEFAULT_MAX_FRAME)]
    pub max_frame_bytes: usize,
    /// How long SIGTERM waits for in-flight requests before exiting.
    #[arg(long, env = "STREAMGATE_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Timeout for connecting to a broker.
    #[arg(long, env = "STREAMGATE_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Read StreamPolicy/MaskingRule/AccessApproval manifests from this directory (reloaded on change).
    #[arg(long, env = "STREAMGATE_POLICY_DIR", conflicts_with = "policy_kube")]
    pub policy_dir: Option<PathBuf>,
    /// Watch the pod's namespace (STREAMGATE_POD_NAMESPACE) for policy objects with the in-cluster client.
    #[arg(long, env = "STREAMGATE_POLICY_KUBE")]
    pub policy_kube: bool,
    #[command(flatten)]
    pub audit: audit_trail::AuditFlags,
    /// Where AccessApproval requests are written in directory mode (default:
    /// the policy directory itself, so the directory source sees the decision).
    #[arg(long, env = "STREAMGATE_APPROVALS_DIR")]
    pub approvals_dir: Option<PathBuf>,
    /// MaskingRule hash keys: the mounted Secrets, laid out `DIR/<secret name>/<key>`.
    /// Without it, rules that hash are blocked (their topics never pass unmasked).
    #[arg(long, env = "STREAMGATE_SECRET_DIR")]
    pub secret_dir: Option<PathBuf>,
}

/// Keeps the policy source running for the life of `run`.
#[derive(Default)]
struct PolicySourceGuard {
    _dir: Option<crate::policy::source_dir::DirSource>,
    kube: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for PolicySourceGuard {
    fn drop(&mut self) {
        if let Some(task) = &self.kube {
            task.abort();
        }
    }
}

/// Identity and policy: who the pod is, where its policy comes from. With no
/// source, or before the first good load, every governed request is denied.
async fn policy_setup(
    args: &RunArgs,
) -> anyhow::Result<(Arc<crate::policy::conn::GateShared>, PolicySourceGuard)> {
    use crate::identity::workload::{ENV_POD_NAMESPACE, Workload};
    use crate::policy::{policy_channel, source_dir, source_kube};
    let workload = match Workload::from_env() {
        Ok(w) => Some(w),
        Err(error) => {
            tracing::info!(%error, "no workload identity: connections without SASL are unauthenticated");
            None
        }
    };
    let namespace = workload.as_ref().map_or_else(
        || std::env::var(ENV_POD_NAMESPACE).unwrap_or_else(|_| "default".into()),
        |w| w.namespace.clone(),
    );
    let labels = workload
        .as_ref()
        .map(|w| w.labels.clone())
        .unwrap_or_default();
    let (publisher, handle) = policy_channel(labels);
    let namespace_for_approvals = namespace.clone();
    let guard = if let Some(dir) = &args.policy_dir {
        let (source, ok) = source_dir::spawn(dir.clone(), namespace, publisher)?;
        if !ok {
            tracing::error!(dir = %dir.display(), "the policy directory did not load: denying everything until it does");
        }
        PolicySourceGuard {
            _dir: Some(source),
            kube: None,
        }
    } else if args.policy_kube {
        let client = kube::Client::try_default()
            .await
            .context("Kubernetes client for --policy-kube")?;
        PolicySourceGuard {
            _dir: None,
            kube: Some(tokio::spawn(source_kube::run(client, namespace, publisher))),
        }
    } else {
        tracing::warn!(
            "no policy source (--policy-dir or --policy-kube): every governed request is denied"
        );
        PolicySourceGuard::default()
    };
    let shared = crate::policy::conn::GateShared::new(handle, workload);
    if let Some(sink) = approval_sink(args).await? {
        let requester = crate::approval::ApprovalRequester::new(
            sink,
            namespace_for_approvals,
            shared.workload.as_ref(),
            crate::approval::DedupConfig::default(),
        );
        let _ = shared.approvals.set(requester);
    }
    Ok((shared, guard))
}

/// Where just-in-time approval requests go: the API server with
/// `--policy-kube`, else `--approvals-dir` or the policy directory.
async fn approval_sink(args: &RunArgs) -> anyhow::Result<Option<crate::approval::ApprovalSink>> {
    use crate::approval::ApprovalSink;
    if let Some(dir) = args
        .approvals_dir
        .clone()
        .or_else(|| args.policy_dir.clone())
    {
        return Ok(Some(ApprovalSink::Dir(dir)));
    }
    if args.policy_kube {
        let client = kube::Client::try_default()
            .await
            .context("Kubernetes client for approval requests")?;
        return Ok(Some(ApprovalSink::Kube(client)));
    }
    Ok(None)
}

/// Run the sidecar until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging();
    let (gate, _policy_source) = policy_setup(&args).await?;
    let proxy = Arc::new(build(&args, gate)?);
    // audit: start the trail (SidecarStart) before the first client is accepted.
    let audit = start_audit(&proxy, &args.audit).await?;
    if let Some(approvals) = proxy.gate.approvals.get() {
        approvals.attach_audit(Arc::clone(&audit));
    }
    let bootstrap =
        state::bind(args.listen).with_context(|| format!("listen on {}", args.listen))?;
    let admin = tokio::net::TcpListener::bind(args.admin)
        .await
        .with_context(|| format!("admin on {}", args.admin))?;
    tracing::info!(listen = %args.listen, admin = %args.admin, upstream = %args.upstream, "streamgate-proxy running");

    tokio::spawn(Arc::clone(&proxy).accept_loop(bootstrap, Target::Bootstrap));
    let admin_proxy = Arc::clone(&proxy);
    tokio::spawn(async move {
        let shutdown = admin_proxy.shutdown.clone();
        let app = admin::router(admin_proxy);
        if let Err(error) = axum::serve(admin, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::error!(%error, "admin server stopped");
        }
    });
    tokio::spawn(probe_upstream(Arc::clone(&proxy)));

    wait_for_signal().await;
    tracing::info!(grace = ?args.shutdown_grace, "shutting down: no new connections, draining in-flight requests");
    proxy.shutdown.cancel();
    let deadline = tokio::time::Instant::now() + args.shutdown_grace;
    while proxy.active_connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = proxy.active_connections();
    if left > 0 {
        tracing::warn!(connections = left, "grace period over; closing the rest");
    }
    // audit: SidecarStop, flush, let the shippers deliver what they can.
    audit
        .shutdown(args.shutdown_grace.min(Duration::from_secs(5)))
        .await;
    tracing::info!("stopped");
    Ok(())
}

/// Start the audit trail and hand it to the data path and /metrics.
async fn start_audit(
    proxy: &Arc<Proxy>,
    flags: &audit_trail::AuditFlags,
) -> anyhow::Result<Arc<crate::audit::Audit>> {
    let audit = crate::audit::Audit::start(&flags.audit).await?;
    proxy.metrics.attach_audit(Arc::clone(audit.health()));
    let trail = audit_trail::AuditTrail::new(Arc::clone(&audit), flags)
        .with_policy(proxy.gate.policy.clone());
    let _ = proxy.audit.set(Arc::new(trail));
    policy_reloads::spawn(Arc::clone(&audit), &proxy.gate.policy).await;
    tracing::info!(dir = %flags.audit.audit_dir.display(), failure_mode = ?flags.failure_mode, payload = ?flags.payload, "audit trail started");
    Ok(audit)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Validate the flags and build the shared state.
fn build(args: &RunArgs, gate: Arc<crate::policy::conn::GateShared>) -> anyhow::Result<Proxy> {
    config::check_loopback(args.listen, args.allow_non_loopback)?;
    config::check_loopback(args.admin, args.allow_non_loopback)?;
    config::check_node_range(args.node_id_min, args.node_id_max, args.listen.port())?;
    let bootstrap = config::parse_upstream(&args.upstream)?;
    let tls = if args.upstream_tls {
        Some(upstream::tls::TlsSettings::new(
            args.upstream_ca_file.as_deref(),
            args.upstream_server_name.clone(),
            args.upstream_client_cert.as_deref(),
            args.upstream_client_key.as_deref(),
        )?)
    } else {
        None
    };
    let sasl = match (args.upstream_sasl_mechanism, &args.upstream_credentials) {
        (None, None) => None,
        (Some(m), Some(path)) => Some((m, Arc::new(Credentials::from_file(path)?))),
        _ => return Err(config::ConfigError::HalfSasl.into()),
    };
    let plan = addresses::AddressPlan {
        listen_ip: args.listen.ip(),
        listen_port: args.listen.port(),
        node_id_min: args.node_id_min,
        node_id_max: args.node_id_max,
    };
    let upstream = UpstreamConfig {
        bootstrap,
        tls,
        sasl,
        connect_timeout: args.connect_timeout,
        max_frame: args.max_frame_bytes,
    };
    let proxy = Proxy::new(plan, upstream, gate);
    if let Some(dir) = &args.secret_dir {
        proxy.masking.set_secret_dir(dir.clone());
    }
    Ok(proxy)
}

/// Ask the upstream for ApiVersions and Metadata: readiness, and the broker
/// listeners are up before the first client asks. Repeated so /readyz follows
/// the upstream's health.
async fn probe_upstream(proxy: Arc<Proxy>) {
    let mut logged_failure = false;
    loop {
        match probe_once(&proxy).await {
            Ok(brokers) => {
                if !proxy.ready.swap(true, Ordering::AcqRel) {
                    tracing::info!(brokers, "upstream answered ApiVersions and Metadata: ready");
                }
                logged_failure = false;
            }
            Err(error) => {
                if proxy.ready.swap(false, Ordering::AcqRel) || !logged_failure {
                    tracing::warn!(%error, "upstream probe failed: not ready");
                    logged_failure = true;
                }
            }
        }
        let wait = if proxy.ready.load(Ordering::Acquire) {
            Duration::from_secs(15)
        } else {
            Duration::from_millis(500)
        };
        tokio::select! {
            () = proxy.shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn probe_once(proxy: &Arc<Proxy>) -> anyhow::Result<usize> {
    let max = proxy.upstream.max_frame;
    let mut stream = proxy.upstream.connect_bootstrap().await?;
    let _: ApiVersionsResponse = upstream::exchange(
        &mut stream,
        ApiKey::ApiVersions,
        0,
        100,
        &ApiVersionsRequest::default(),
        max,
    )
    .await?;
    // Metadata v1 with a null topic list: all topics (their ids are not in v1;
    // clients' own Metadata v10+ responses teach those).
    let request = MetadataRequest::default().with_topics(None);
    let mut metadata: MetadataResponse =
        upstream::exchange(&mut stream, ApiKey::Metadata, 1, 101, &request, max).await?;
    let mut learned = apis::Rewritten::default();
    apis::metadata::rewrite(&proxy.plan, &mut metadata, &mut learned);
    proxy.learn(&learned);
    Ok(learned.brokers.len())
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the proxy");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
