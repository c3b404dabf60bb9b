//! The composition root: `streamgate-proxy run`'s flags become the running
//! sidecar. [`App::build`] assembles the pieces in dependency order and binds
//! the listeners; [`App::run`] serves until the shutdown future completes,
//! then drains. Tests build and run an `App` in-process with their own
//! [`Environment`] (the pod identity that the binary reads from env vars).

use crate::identity::workload::{ENV_POD_NAMESPACE, Workload};
use crate::policy::{policy_channel, source_dir, source_kube};
use crate::run::addresses::AddressPlan;
use crate::run::session::Target;
use crate::run::state::{self, Proxy};
use crate::run::upstream::{self, Credentials, UpstreamConfig};
use crate::run::{RunArgs, admin, apis, audit_trail, config, policy_reloads};
use anyhow::Context;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;

/// What the process environment supplies besides the flags: who the pod is.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    /// The pod's ServiceAccount and labels (workload identity), when known.
    pub workload: Option<Workload>,
    /// The namespace policies and approvals are read from and written to.
    pub namespace: String,
}

impl Environment {
    /// From the `STREAMGATE_*` variables the injector sets.
    pub fn from_process() -> Self {
        match Workload::from_env() {
            Ok(w) => Self::with_workload(w),
            Err(error) => {
                tracing::info!(%error, "no workload identity: connections without SASL are unauthenticated");
                Self {
                    workload: None,
                    namespace: std::env::var(ENV_POD_NAMESPACE)
                        .unwrap_or_else(|_| "default".into()),
                }
            }
        }
    }

    /// A known pod (tests, embedding).
    pub fn with_workload(workload: Workload) -> Self {
        Self {
            namespace: workload.namespace.clone(),
            workload: Some(workload),
        }
    }
}

/// The sidecar, built and bound, not yet serving.
#[derive(Debug)]
pub struct App {
    proxy: Arc<Proxy>,
    audit: Arc<crate::audit::Audit>,
    bootstrap: TcpListener,
    admin: TcpListener,
    grace: Duration,
    _policy_source: PolicySourceGuard,
}

impl App {
    /// Validate the flags, start policy and audit, bind the listeners.
    pub async fn build(args: &RunArgs, env: Environment) -> anyhow::Result<Self> {
        let (gate, policy_source) = policy_setup(args, env).await?;
        let proxy = Arc::new(build_proxy(args, gate)?);
        // audit: start the trail (SidecarStart) before the first client is accepted.
        let audit = start_audit(&proxy, &args.audit).await?;
        if let Some(approvals) = proxy.gate.approvals.get() {
            approvals.attach_audit(Arc::clone(&audit));
        }
        let bootstrap =
            state::bind(args.listen).with_context(|| format!("listen on {}", args.listen))?;
        let admin = TcpListener::bind(args.admin)
            .await
            .with_context(|| format!("admin on {}", args.admin))?;
        tracing::info!(listen = %args.listen, admin = %args.admin, upstream = %args.upstream, "streamgate-proxy running");
        Ok(Self {
            proxy,
            audit,
            bootstrap,
            admin,
            grace: args.shutdown_grace,
            _policy_source: policy_source,
        })
    }

    /// Where /healthz, /readyz and /metrics are served.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serve until `shutdown` completes; then stop accepting, drain in-flight
    /// requests for up to the grace period and close the audit trail.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            proxy,
            audit,
            bootstrap,
            admin,
            grace,
            _policy_source,
        } = self;
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

        shutdown.await;
        tracing::info!(
            ?grace,
            "shutting down: no new connections, draining in-flight requests"
        );
        proxy.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        while proxy.active_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = proxy.active_connections();
        if left > 0 {
            tracing::warn!(connections = left, "grace period over; closing the rest");
        }
        // audit: SidecarStop, flush, let the shippers deliver what they can.
        audit.shutdown(grace.min(Duration::from_secs(5))).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// `streamgate-proxy run`: the sidecar until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging();
    let app = App::build(&args, Environment::from_process()).await?;
    app.run(wait_for_signal()).await
}

/// Keeps the policy source running for the life of the app.
#[derive(Debug, Default)]
struct PolicySourceGuard {
    _dir: Option<source_dir::DirSource>,
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
    env: Environment,
) -> anyhow::Result<(Arc<crate::policy::conn::GateShared>, PolicySourceGuard)> {
    let Environment {
        workload,
        namespace,
    } = env;
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
fn build_proxy(
    args: &RunArgs,
    gate: Arc<crate::policy::conn::GateShared>,
) -> anyhow::Result<Proxy> {
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
    let plan = AddressPlan {
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
    let mut learned = apis::Learned::default();
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
