//! The `streamgate-operator` binary: admission webhooks on every replica,
//! controllers and the other singletons on the Lease holder.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use kube::Client;
use streamgate_operator::config::{InjectorSettings, SidecarMode};
use streamgate_operator::controller::topic_grants::TopicGrants;
use streamgate_operator::controller::{Context, run};
use streamgate_operator::leader::{self, LeaseConfig};
use streamgate_operator::metrics::{self, Metrics};
use streamgate_operator::rbac;
use streamgate_operator::tls::{self, ReloadingResolver};
use streamgate_operator::webhook::handlers::WebhookState;
use streamgate_operator::webhook::lookup::KubeLookup;
use streamgate_operator::webhook::server;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CertMode {
    /// The operator keeps its own CA and serving cert in one Secret and patches caBundle.
    SelfManaged,
    /// cert-manager issues the cert (mounted at --cert-dir) and injects caBundle.
    CertManager,
}

#[derive(Debug, Parser)]
#[command(
    name = "streamgate-operator",
    version,
    about = "streamgate control plane"
)]
struct Args {
    /// The namespace the operator runs in (never injected).
    #[arg(
        long,
        env = "STREAMGATE_NAMESPACE",
        default_value = "streamgate-system"
    )]
    namespace: String,
    /// This replica's name (Lease identity, Event reporter).
    #[arg(
        long,
        env = "STREAMGATE_POD_NAME",
        default_value = "streamgate-operator"
    )]
    pod_name: String,
    #[arg(
        long,
        env = "STREAMGATE_WEBHOOK_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    webhook_listen: SocketAddr,
    #[arg(
        long,
        env = "STREAMGATE_METRICS_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    metrics_listen: SocketAddr,
    #[arg(
        long,
        env = "STREAMGATE_CERT_MODE",
        value_enum,
        default_value = "self-managed"
    )]
    cert_mode: CertMode,
    /// cert-manager mode: directory with tls.crt and tls.key.
    #[arg(
        long,
        env = "STREAMGATE_CERT_DIR",
        default_value = "/var/run/streamgate/webhook-tls"
    )]
    cert_dir: PathBuf,
    /// Self-managed mode: the Secret holding CA and serving cert.
    #[arg(
        long,
        env = "STREAMGATE_CERT_SECRET",
        default_value = "streamgate-webhook-tls"
    )]
    cert_secret: String,
    /// The webhook Service name (serving certificate SANs).
    #[arg(
        long,
        env = "STREAMGATE_WEBHOOK_SERVICE",
        default_value = "streamgate-webhook"
    )]
    webhook_service: String,
    /// More names or IP addresses for the self-managed serving certificate: the
    /// host of the chart's `webhook.externalURL` when the operator runs outside
    /// the cluster (e.g. `127.0.0.1`).
    #[arg(long, env = "STREAMGATE_WEBHOOK_EXTRA_SANS", value_delimiter = ',')]
    webhook_extra_sans: Vec<String>,
    /// Namespaces labelled for injection that the pod guard leaves alone
    /// (a cluster-admin decision, logged at start): their pods may opt out.
    #[arg(long, env = "STREAMGATE_EXEMPT_NAMESPACES", value_delimiter = ',')]
    exempt_namespaces: Vec<String>,
    #[arg(
        long,
        env = "STREAMGATE_MUTATING_WEBHOOK",
        default_value = "streamgate"
    )]
    mutating_webhook_config: String,
    #[arg(
        long,
        env = "STREAMGATE_VALIDATING_WEBHOOK",
        default_value = "streamgate"
    )]
    validating_webhook_config: String,
    #[arg(
        long,
        env = "STREAMGATE_PROXY_IMAGE",
        default_value = "ghcr.io/streamgate/streamgate-proxy:0.1.0"
    )]
    proxy_image: String,
    #[arg(
        long,
        env = "STREAMGATE_PROXY_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    proxy_pull_policy: String,
    /// Upstream bootstrap servers for pods without a streamgate.dev/upstream annotation.
    #[arg(long, env = "STREAMGATE_DEFAULT_UPSTREAM")]
    default_upstream: Option<String>,
    #[arg(long, env = "STREAMGATE_DEFAULT_LISTEN_PORT", default_value_t = 9092)]
    default_listen_port: u16,
    /// The OIDC claim Kubernetes usernames come from: the API server's
    /// `--oidc-username-claim`. With the prefix below, it lets the approval
    /// webhook recognise a requester approving their own request.
    #[arg(
        long,
        env = "STREAMGATE_APPROVER_OIDC_USERNAME_CLAIM",
        default_value = "sub"
    )]
    approver_oidc_username_claim: String,
    /// The API server's `--oidc-username-prefix`. Unset: its default (the
    /// issuer URL and `#`, unless the claim is `email`); `-`: no prefix.
    #[arg(long, env = "STREAMGATE_APPROVER_OIDC_USERNAME_PREFIX")]
    approver_oidc_username_prefix: Option<String>,
    /// The API server's `--oidc-groups-prefix`: approvers listed by Group
    /// match the Kubernetes group `<prefix><name>`.
    #[arg(
        long,
        env = "STREAMGATE_APPROVER_OIDC_GROUPS_PREFIX",
        default_value = ""
    )]
    approver_oidc_groups_prefix: String,
    /// A YAML file `namespace: [topic glob, ...]` naming the topics each
    /// namespace's StreamPolicies may allow (Kafka topics are cluster-wide,
    /// policies are not). When set (here or by --topic-grants-yaml), an Allow
    /// rule naming a topic outside its namespace's grant makes the policy
    /// Ready=False (TopicsNotGranted) and sidecars do not enforce it; an
    /// unlisted namespace is granted nothing. Unset: not checked, as before.
    /// Enabling it is a cluster-admin decision.
    #[arg(long, env = "STREAMGATE_TOPIC_GRANTS")]
    topic_grants: Option<PathBuf>,
    /// The same grants inline (YAML or JSON; the chart's `topicGrants`).
    #[arg(
        long,
        env = "STREAMGATE_TOPIC_GRANTS_YAML",
        conflicts_with = "topic_grants"
    )]
    topic_grants_yaml: Option<String>,
    /// YAML `namespace: <Secret name>`: the broker credential each governed
    /// namespace's sidecars get from their session. The Secrets live in the
    /// operator's namespace (key `credentials`, YAML username/password), out
    /// of reach of the app namespaces' pod creators. A cluster-admin decision.
    #[arg(long, env = "STREAMGATE_SIDECAR_CREDENTIALS_YAML", default_value = "")]
    sidecar_credentials_yaml: String,
    /// The HTTPS base URL sidecars reach the operator at (default: the webhook Service).
    #[arg(long, env = "STREAMGATE_SESSION_URL")]
    session_url: Option<String>,
    /// Lifetime of the streamgate-sidecar API tokens sessions hand out.
    #[arg(long, env = "STREAMGATE_SIDECAR_TOKEN_SECONDS", default_value_t = 3600)]
    sidecar_token_seconds: i64,
    /// The OTLP collector injected sidecars ship audit records to (the record
    /// of evidence, e.g. `https://otel-collector.observability:4317`). Unset:
    /// StreamPolicies report `AuditSink=False` — the pod's spool is then the
    /// only copy of the trail and goes with the pod.
    #[arg(long, env = "STREAMGATE_AUDIT_OTLP_ENDPOINT")]
    audit_otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    #[arg(long, env = "STREAMGATE_AUDIT_OTLP_PROTOCOL", default_value = "grpc")]
    audit_otlp_protocol: String,
    /// `key=value,...` headers for the collector (OTEL_EXPORTER_OTLP_HEADERS).
    #[arg(long, env = "STREAMGATE_AUDIT_OTLP_HEADERS")]
    audit_otlp_headers: Option<String>,
}

/// The CA sidecars verify the session endpoint with: the self-managed CA
/// (created now if this is the first start), or cert-manager's `ca.crt`.
async fn operator_ca(args: &Args, client: &Client) -> anyhow::Result<Option<String>> {
    match args.cert_mode {
        CertMode::SelfManaged => {
            let mut names = tls::service_dns_names(&args.webhook_service, &args.namespace);
            names.extend(args.webhook_extra_sans.iter().cloned());
            let pki =
                tls::ensure_secret(client.clone(), &args.namespace, &args.cert_secret, &names)
                    .await
                    .context("the webhook CA (sidecars verify the session endpoint with it)")?;
            Ok(Some(pki.ca_pem))
        }
        CertMode::CertManager => Ok(std::fs::read_to_string(args.cert_dir.join("ca.crt")).ok()),
    }
}

/// The cluster admin's topic grants, if configured; malformed grants stop the start.
fn load_topic_grants(args: &Args) -> anyhow::Result<Option<TopicGrants>> {
    let text = match (&args.topic_grants, &args.topic_grants_yaml) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("reading --topic-grants {}", path.display()))?,
        (None, Some(inline)) => inline.clone(),
        (None, None) => return Ok(None),
    };
    let grants = TopicGrants::parse(&text).map_err(anyhow::Error::msg)?;
    tracing::warn!(grants = ?grants, "topic grants enforced: StreamPolicy Allow rules are limited to their namespace's granted topics");
    Ok(Some(grants))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let topic_grants = load_topic_grants(&args)?;
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let metrics = Arc::new(Metrics::default());

    // TLS first: the webhook must serve before the API server calls it.
    let resolver = Arc::new(ReloadingResolver::default());
    spawn_cert_reloader(&args, client.clone(), resolver.clone(), metrics.clone());
    let tls_config = tls::server_config(resolver.clone())?;

    // Native sidecars need Kubernetes ≥ 1.29; older servers get a regular one.
    let version = client
        .apiserver_version()
        .await
        .context("reading the API server's version")?;
    let sidecar_mode = SidecarMode::for_server(&version.major, &version.minor);
    tracing::info!(
        server = version.git_version,
        ?sidecar_mode,
        "sidecar shape chosen by the API server's version"
    );
    if !args.exempt_namespaces.is_empty() {
        tracing::warn!(namespaces = ?args.exempt_namespaces, "namespaces exempted from the pod guard by configuration");
    }
    let credentials = streamgate_operator::session::credentials::CredentialSecrets::parse(
        &args.sidecar_credentials_yaml,
    )?;
    tracing::info!(namespaces = ?credentials.0.keys().collect::<Vec<_>>(), "sidecar broker credentials configured");
    let session_url = args.session_url.clone().unwrap_or_else(|| {
        format!(
            "https://{}.{}.svc:443",
            args.webhook_service, args.namespace
        )
    });
    let operator_ca_pem = operator_ca(&args, &client).await?;
    let settings = InjectorSettings {
        session_url,
        operator_ca_pem,
        credential_namespaces: credentials.0.keys().cloned().collect(),
        exempt_namespaces: args.exempt_namespaces.iter().cloned().collect(),
        sidecar_mode,
        proxy_image: args.proxy_image.clone(),
        image_pull_policy: args.proxy_pull_policy.clone(),
        default_upstream: args.default_upstream.clone(),
        default_listen_port: args.default_listen_port,
        operator_namespace: args.namespace.clone(),
        approver_identity: streamgate_operator::config::IdentityMapping {
            username_claim: args.approver_oidc_username_claim.clone(),
            username_prefix: args.approver_oidc_username_prefix.clone(),
            groups_prefix: args.approver_oidc_groups_prefix.clone(),
        },
        topic_grants_enforced: topic_grants.is_some(),
        audit_otlp: args.audit_otlp_endpoint.clone().map(|endpoint| {
            streamgate_operator::config::AuditOtlp {
                endpoint,
                protocol: args.audit_otlp_protocol.clone(),
                headers: args.audit_otlp_headers.clone(),
            }
        }),
        ..Default::default()
    };
    let session = Arc::new(streamgate_operator::session::SessionState {
        client: client.clone(),
        lookup: KubeLookup::new(client.clone()),
        settings: settings.clone(),
        credentials,
        token_seconds: args.sidecar_token_seconds,
    });
    let state = Arc::new(WebhookState {
        settings,
        lookup: KubeLookup::new(client.clone()),
        metrics: metrics.clone(),
    });
    let webhook_tcp = tokio::net::TcpListener::bind(args.webhook_listen).await?;
    let metrics_tcp = tokio::net::TcpListener::bind(args.metrics_listen).await?;
    let routes = server::router(state).merge(streamgate_operator::session::router(session));
    let webhook = tokio::spawn(server::serve_router(webhook_tcp, tls_config, routes));
    let metrics_router = metrics::router(metrics.clone());
    let metrics_srv = tokio::spawn(async move { axum::serve(metrics_tcp, metrics_router).await });

    let mut leading = leader::campaign(
        client.clone(),
        LeaseConfig {
            name: "streamgate-operator".to_string(),
            namespace: args.namespace.clone(),
            identity: args.pod_name.clone(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        },
    );
    while !*leading.borrow_and_update() {
        leading.changed().await?;
    }
    tracing::info!(identity = args.pod_name, "leading: starting controllers");
    let singletons = run_singletons(&args, client.clone(), metrics.clone(), topic_grants);
    tokio::select! {
        _ = singletons => anyhow::bail!("controllers stopped"),
        r = webhook => anyhow::bail!("webhook server stopped: {r:?}"),
        r = metrics_srv => anyhow::bail!("metrics server stopped: {r:?}"),
        _ = async { loop { if leading.changed().await.is_err() || !*leading.borrow() { break } } } => {
            anyhow::bail!("lost the leader Lease; restarting so another replica leads")
        }
    }
}

async fn run_singletons(
    args: &Args,
    client: Client,
    metrics: Arc<Metrics>,
    topic_grants: Option<TopicGrants>,
) {
    let (pods, pod_driver) = run::pod_reflector(client.clone());
    tokio::spawn(pod_driver);
    let (approvals, approval_driver) = run::approval_reflector(client.clone());
    tokio::spawn(approval_driver);
    let mut ctx = Context::new(
        client.clone(),
        metrics,
        pods.clone(),
        Some(args.pod_name.clone()),
        Arc::new(chrono::Utc::now),
    );
    if let Some(grants) = topic_grants {
        ctx = ctx.with_topic_grants(grants);
    }
    ctx = ctx
        .with_audit_sink(args.audit_otlp_endpoint.clone())
        .with_approvals(approvals);
    let ctx = Arc::new(ctx);
    // RBAC for injected pods: converge every 15 s from the pod store.
    let rbac_client = client.clone();
    let rbac_pods = pods.clone();
    tokio::spawn(async move {
        if rbac_pods.wait_until_ready().await.is_err() {
            return;
        }
        loop {
            let desired = rbac::desired(&rbac_pods.state());
            if let Err(e) = rbac::sync(rbac_client.clone(), &desired).await {
                tracing::warn!(error = %e, "RBAC sync failed; retrying");
            }
            tokio::time::sleep(Duration::from_secs(15)).await;
        }
    });
    // caBundle patching (self-managed certificates only).
    if matches!(args.cert_mode, CertMode::SelfManaged) {
        let (c, ns, secret, m, v) = (
            client.clone(),
            args.namespace.clone(),
            args.cert_secret.clone(),
            args.mutating_webhook_config.clone(),
            args.validating_webhook_config.clone(),
        );
        tokio::spawn(async move {
            loop {
                match tls::read_secret(c.clone(), &ns, &secret).await {
                    Ok(Some(pki)) => {
                        if let Err(e) = tls::patch_ca_bundle(c.clone(), &m, &v, &pki.ca_pem).await {
                            tracing::warn!(error = %e, "caBundle patch failed");
                        }
                    }
                    Ok(None) => {
                        // The cert reloader creates it within seconds: retry soon,
                        // so admission works right after start, not a minute later.
                        tracing::info!("webhook Secret not created yet");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the webhook Secret failed"),
                }
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        });
    }
    run::run_controllers(client, ctx).await;
}

/// Load the serving certificate now and keep reloading it (rotation without restart).
fn spawn_cert_reloader(
    args: &Args,
    client: Client,
    resolver: Arc<ReloadingResolver>,
    metrics: Arc<Metrics>,
) {
    let mode = args.cert_mode;
    let dir = args.cert_dir.clone();
    let ns = args.namespace.clone();
    let secret = args.cert_secret.clone();
    let mut names = tls::service_dns_names(&args.webhook_service, &args.namespace);
    names.extend(args.webhook_extra_sans.iter().cloned());
    tokio::spawn(async move {
        let mut last: Option<String> = None;
        loop {
            let loaded = match mode {
                CertMode::CertManager => tls::load_dir(&dir)
                    .map(|k| (k, String::new()))
                    .map_err(|e| e.to_string()),
                CertMode::SelfManaged => {
                    match tls::ensure_secret(client.clone(), &ns, &secret, &names).await {
                        Ok(pki) => tls::certified_key(&pki.cert_pem, &pki.key_pem)
                            .map(|k| (k, pki.cert_pem))
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            match loaded {
                Ok((key, fingerprint)) => {
                    if last.as_deref() != Some(fingerprint.as_str()) || fingerprint.is_empty() {
                        resolver.set(key);
                        last = Some(fingerprint);
                    }
                    metrics.set_ready(true);
                }
                Err(e) => tracing::warn!(error = %e, "webhook certificate not loaded yet"),
            }
            tokio::time::sleep(Duration::from_secs(if resolver.has_cert() {
                30
            } else {
                2
            }))
            .await;
        }
    });
}
