//! The composition root: `streamgate-proxy run`'s flags become the running
//! sidecar. [`App::build`] assembles the pieces in dependency order — flags
//! checked → audit trail (SidecarStart) → policy source → approvals → gate →
//! masking → metrics → data path → listeners — each handed what it needs when
//! it is made, so nothing is attached later. [`App::run`] serves until the
//! shutdown future completes, then drains: the connection tasks are tracked
//! and waited for, up to the grace period. Tests build and run an `App`
//! in-process with their own [`Environment`] (the pod identity the binary
//! reads from env vars).

mod args;
pub mod session;

use crate::audit::{policy_reloads, stage as audit_trail};
use crate::datapath::addresses::AddressPlan;
use crate::datapath::metrics::Metrics;
use crate::datapath::state::{self, Parts, Proxy};
use crate::datapath::target::Target;
use crate::datapath::upstream::{self, Credentials, UpstreamConfig};
use crate::datapath::{admin, apis, config};
use crate::identity::workload::{ENV_POD_NAMESPACE, Workload};
use crate::masking::state::MaskingState;
use crate::policy::conn::GateShared;
use crate::policy::handle::PolicyHandle;
use crate::policy::{policy_channel, source_dir, source_kube};
use anyhow::Context;
pub use args::RunArgs;
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
    /// Keeps the API token renewing while the sidecar runs.
    _session: Option<session::Session>,
}

impl App {
    /// Check the flags, start every piece in dependency order, bind the listeners.
    pub async fn build(args: &RunArgs, env: Environment) -> anyhow::Result<Self> {
        // The operator session first: it holds the broker credential and the
        // sidecar's API identity (in memory only).
        let session = match (&args.operator_url, &args.sidecar_token_file) {
            (Some(url), Some(token_file)) => Some(
                session::open(session::SessionConfig {
                    url: url.clone(),
                    ca_pem: args.operator_ca.clone(),
                    token_file: token_file.clone(),
                })
                .await?,
            ),
            _ => None,
        };
        // Everything the flags alone decide, before anything starts.
        let (plan, upstream) =
            data_path_config(args, session.as_ref().and_then(|s| s.credentials.clone()))?;
        if args.allow_insecure_issuers {
            tracing::warn!(
                "--allow-insecure-issuers: OIDC issuers over plain http:// are trusted; whoever is on the path to one can mint tokens (test IdPs only)"
            );
        }
        // audit: the trail starts (SidecarStart) before anything it records.
        let kube = session.as_ref().map(|s| s.kube.clone());
        let audit = crate::audit::Audit::start_with(&args.audit.audit, kube.clone()).await?;
        let (policy, policy_source) = policy_source(args, &env, kube.clone()).await?;
        let approvals = approval_sink(args, kube).await?.map(|sink| {
            let requester = crate::approval::ApprovalRequester::new(
                sink,
                env.namespace.clone(),
                env.workload.as_ref(),
                crate::approval::DedupConfig::default(),
            );
            requester.attach_audit(Arc::clone(&audit));
            requester
        });
        let trail = audit_trail::AuditTrail::new(Arc::clone(&audit), &args.audit)
            .with_policy(policy.clone());
        policy_reloads::spawn(Arc::clone(&audit), &policy).await;
        tracing::info!(dir = %args.audit.audit.audit_dir.display(), failure_mode = ?args.audit.failure_mode, payload = ?args.audit.payload, "audit trail started");
        let proxy = Arc::new(Proxy::new(Parts {
            plan,
            upstream,
            gate: GateShared::new(policy, env.workload, args.allow_insecure_issuers),
            approvals,
            audit: Some(trail),
            masking: MaskingState::new(args.secret_dir.clone())
                .with_max_batch_bytes(args.masking_max_batch_bytes),
            metrics: Metrics::new(Some(Arc::clone(audit.health()))),
            limits: args.limits.clone(),
        }));
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
            _session: session,
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
            _session,
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
        proxy.connections.close();
        if tokio::time::timeout(grace, proxy.connections.wait())
            .await
            .is_err()
        {
            let left = proxy.connections.len();
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

/// Where the pod's policy comes from. With no source, or before the first
/// good load, every governed request is denied.
/// The kube client: the session's (as `streamgate-sidecar`), else the
/// in-cluster default (a sidecar run without an operator session).
async fn kube_client(session: Option<kube::Client>, what: &str) -> anyhow::Result<kube::Client> {
    match session {
        Some(c) => Ok(c),
        None => kube::Client::try_default()
            .await
            .with_context(|| format!("Kubernetes client for {what}")),
    }
}

async fn policy_source(
    args: &RunArgs,
    env: &Environment,
    kube: Option<kube::Client>,
) -> anyhow::Result<(PolicyHandle, PolicySourceGuard)> {
    let labels = env
        .workload
        .as_ref()
        .map(|w| w.labels.clone())
        .unwrap_or_default();
    let (publisher, handle) = policy_channel(labels);
    let namespace = env.namespace.clone();
    let guard = if let Some(dir) = &args.policy_dir {
        publisher.ready_without_first_load();
        let (source, ok) = source_dir::spawn(dir.clone(), namespace, publisher)?;
        if !ok {
            tracing::error!(dir = %dir.display(), "the policy directory did not load: denying everything until it does");
        }
        PolicySourceGuard {
            _dir: Some(source),
            kube: None,
        }
    } else if args.policy_kube {
        let client = kube_client(kube, "--policy-kube").await?;
        PolicySourceGuard {
            _dir: None,
            kube: Some(tokio::spawn(source_kube::run(
                client,
                namespace,
                publisher,
                args.topic_grants_enforced,
            ))),
        }
    } else {
        publisher.ready_without_first_load();
        tracing::warn!(
            "no policy source (--policy-dir or --policy-kube): every governed request is denied"
        );
        PolicySourceGuard::default()
    };
    Ok((handle, guard))
}

/// Where just-in-time approval requests go: the API server with
/// `--policy-kube`, else `--approvals-dir` or the policy directory.
async fn approval_sink(
    args: &RunArgs,
    kube: Option<kube::Client>,
) -> anyhow::Result<Option<crate::approval::ApprovalSink>> {
    use crate::approval::ApprovalSink;
    if let Some(dir) = args
        .approvals_dir
        .clone()
        .or_else(|| args.policy_dir.clone())
    {
        return Ok(Some(ApprovalSink::Dir(dir)));
    }
    if args.policy_kube {
        let client = kube_client(kube, "approval requests").await?;
        return Ok(Some(ApprovalSink::Kube(client)));
    }
    Ok(None)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The data path's settings, checked: loopback listeners, the node range,
/// the upstream (TLS material and the broker credential read now).
/// `from_session`: the broker credential the operator's session handed over.
fn data_path_config(
    args: &RunArgs,
    from_session: Option<Credentials>,
) -> anyhow::Result<(AddressPlan, UpstreamConfig)> {
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
    let sasl = match (
        args.upstream_sasl_mechanism,
        &args.upstream_credentials,
        from_session,
    ) {
        (None, None, None) => None,
        (Some(m), None, Some(c)) => Some((m, Arc::new(c))),
        (Some(m), Some(path), None) => Some((m, Arc::new(Credentials::from_file(path)?))),
        (_, Some(_), Some(_)) => {
            anyhow::bail!("both --upstream-credentials and an operator session credential: use one")
        }
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
    Ok((plan, upstream))
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args as _, FromArgMatches as _};

    fn run_args(flags: &[&str]) -> RunArgs {
        let cmd = RunArgs::augment_args(clap::Command::new("run"));
        let mut argv = vec!["run", "--upstream", "127.0.0.1:9"];
        argv.extend_from_slice(flags);
        let matches = cmd.try_get_matches_from(argv).unwrap();
        RunArgs::from_arg_matches(&matches).unwrap()
    }

    fn session_credential() -> Option<Credentials> {
        Some(Credentials::new("gateway".into(), "s3cret".into()).unwrap())
    }

    #[test]
    fn the_session_credential_is_the_sasl_credential() {
        let args = run_args(&["--upstream-sasl-mechanism", "SCRAM-SHA-512"]);
        let (_, upstream) = data_path_config(&args, session_credential()).unwrap();
        let (_, creds) = upstream.sasl.unwrap();
        assert_eq!(creds.username, "gateway");
        // A mechanism without a credential, and a credential without a mechanism, are refused.
        assert!(data_path_config(&args, None).is_err());
        assert!(data_path_config(&run_args(&[]), session_credential()).is_err());
        // Two credentials: which one would be used is not guessed.
        let both = run_args(&[
            "--upstream-sasl-mechanism",
            "PLAIN",
            "--upstream-credentials",
            "/nonexistent",
        ]);
        assert!(data_path_config(&both, session_credential()).is_err());
        assert!(
            data_path_config(&run_args(&[]), None)
                .unwrap()
                .1
                .sasl
                .is_none()
        );
    }
}
