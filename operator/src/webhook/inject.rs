//! Sidecar injection, the pure core: a pod (as the API server sends it on
//! CREATE) in, a JSON patch of `add` operations out. No IO here: the
//! namespace's labels and the masking-key Secret names are looked up by the
//! caller and passed in.
//!
//! Decisions worth knowing:
//! - The sidecar is a native sidecar where the API server has them (≥ 1.29):
//!   the *first* init container, with `restartPolicy: Always`, so later init
//!   containers can already reach Kafka. On older servers it is the first
//!   regular container, and its `postStart` hook holds the app containers
//!   until the proxy is ready ([`SidecarMode`]).
//! - The sidecar reads its policy from the API server (`STREAMGATE_POLICY_KUBE`),
//!   files AccessApprovals there and writes aggregated Events; every env name
//!   and mount path comes from [`streamgate_crds::contract`].
//! - Only `add` operations. Adding an object member that exists replaces it,
//!   but we only ever add members the pod does not have (checked here), and we
//!   create arrays/maps that are absent instead of appending to them.
//! - An app container that already sets `KAFKA_BOOTSTRAP_SERVERS` keeps its
//!   value (its author chose it; we do not silently rewrite config). The pod is
//!   admitted with a warning: going around the sidecar gets the app nothing,
//!   because only the sidecar holds the broker credential.
//! - The admin port binds the pod IP (kubelet probes reach the pod IP, not
//!   loopback), so the sidecar runs with `STREAMGATE_ALLOW_NON_LOOPBACK=true`;
//!   it serves only health and metrics. The Kafka listener is set explicitly
//!   to 127.0.0.1. The admin port sits outside the per-broker port range.
//! - The broker credential is never in the pod: the sidecar gets a projected
//!   token of audience `streamgate.dev/sidecar` (its own volume, mounted by
//!   it alone) and trades it at the operator's session endpoint
//!   (`STREAMGATE_OPERATOR_URL`, CA in `STREAMGATE_OPERATOR_CA`) for the
//!   namespace's credential and a `streamgate-sidecar` API token, held in
//!   memory ([`crate::session`]). SASL is on when the operator's config has a
//!   credential for the namespace.
//! - The sidecar's mount at the in-cluster token path carries only the API
//!   server's CA and the namespace, no token: the app's ServiceAccount is
//!   never the sidecar's identity. Masking keys are still Secrets of the
//!   namespace under `STREAMGATE_SECRET_DIR/<secret>/<key>`.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, DownwardAPIProjection, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, HTTPGetAction,
    KeyToPath, Lifecycle, LifecycleHandler, ObjectFieldSelector, Pod, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use crate::config::{
    ANNOTATION_INJECT, ANNOTATION_INJECTED, ANNOTATION_LISTEN_PORT, ANNOTATION_UPSTREAM,
    ANNOTATION_UPSTREAM_SASL, ANNOTATION_UPSTREAM_SECRET, ANNOTATION_UPSTREAM_TLS,
    InjectorSettings, KUBE_TOKEN_DIR, LABEL_INJECTED, LABEL_NAMESPACE_INJECT, PODINFO_DIR,
    SECRET_DIR, SIDECAR_NAME, SIDECAR_TOKEN_AUDIENCE, SIDECAR_TOKEN_DIR, SIDECAR_TOKEN_FILE,
    SPOOL_DIR, SidecarMode,
};
use streamgate_crds::contract as c;

/// Env var the app containers get, pointing at the sidecar.
pub const BOOTSTRAP_ENV: &str = c::ENV_APP_BOOTSTRAP;

/// What the injector knows about one pod CREATE.
#[derive(Debug)]
pub struct InjectionInput<'a> {
    pub pod: &'a Pod,
    /// From the AdmissionRequest: pods from Deployments carry no namespace themselves.
    pub namespace: &'a str,
    pub namespace_labels: &'a BTreeMap<String, String>,
    /// Secrets named by the namespace's MaskingRules (`hashKeySecretRef`).
    pub masking_secrets: &'a BTreeSet<String>,
}

/// Why a pod was left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    NotRequested,
    OptedOut,
    AlreadyInjected,
    HostNetwork,
    OperatorNamespace,
}

impl SkipReason {
    /// Stable, metric-friendly name.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotRequested => "not_requested",
            SkipReason::OptedOut => "opted_out",
            SkipReason::AlreadyInjected => "already_injected",
            SkipReason::HostNetwork => "host_network",
            SkipReason::OperatorNamespace => "operator_namespace",
        }
    }
}

/// The injector's answer.
#[derive(Debug)]
pub enum Outcome {
    Skip {
        reason: SkipReason,
        warnings: Vec<String>,
    },
    Inject {
        patch: json_patch::Patch,
        warnings: Vec<String>,
    },
}

/// A pod that asked for injection but cannot get a working sidecar.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectError {
    #[error(
        "streamgate: annotation {ANNOTATION_LISTEN_PORT}={0:?} is not a port number between 1 and 65535"
    )]
    BadListenPort(String),
    #[error(
        "streamgate: no upstream Kafka: annotate the pod with {ANNOTATION_UPSTREAM} (e.g. kafka.kafka.svc:9092) \
         or set the operator's default (chart value upstream.bootstrapServers)"
    )]
    NoUpstream,
    #[error(
        "streamgate: container {container:?} already uses port {port}, which the sidecar needs; set {ANNOTATION_LISTEN_PORT} to a free port"
    )]
    PortClash { container: String, port: u16 },
    #[error(
        "streamgate: listen port {0} puts the sidecar's admin port {1} inside the per-broker port range; choose another {ANNOTATION_LISTEN_PORT}"
    )]
    AdminPortClash(u16, u16),
    #[error(
        "streamgate: annotation {ANNOTATION_UPSTREAM_SASL}={0:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
    )]
    BadSaslMechanism(String),
    #[error("streamgate: could not build the patch: {0}")]
    Patch(String),
}

/// Decide whether to inject and build the patch.
pub fn plan(
    input: &InjectionInput<'_>,
    settings: &InjectorSettings,
) -> Result<Outcome, InjectError> {
    let pod = input.pod;
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let requested_by_annotation = annotations.get(ANNOTATION_INJECT).map(String::as_str);

    if input.namespace == settings.operator_namespace {
        return Ok(skip(SkipReason::OperatorNamespace));
    }
    let namespace_enabled = input
        .namespace_labels
        .get(LABEL_NAMESPACE_INJECT)
        .map(String::as_str)
        == Some("enabled");
    match requested_by_annotation {
        Some("false") => return Ok(skip(SkipReason::OptedOut)),
        Some("true") => {}
        _ if namespace_enabled => {}
        _ => return Ok(skip(SkipReason::NotRequested)),
    }
    let already = annotations.contains_key(ANNOTATION_INJECTED)
        || spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == SIDECAR_NAME)
        || spec.containers.iter().any(|c| c.name == SIDECAR_NAME);
    if already {
        return Ok(skip(SkipReason::AlreadyInjected));
    }
    if spec.host_network == Some(true) {
        // A sidecar on the node's loopback would be shared by every hostNetwork pod.
        return Ok(Outcome::Skip {
            reason: SkipReason::HostNetwork,
            warnings: vec![
                "streamgate: hostNetwork pods are not injected (the sidecar's loopback port would be the node's)"
                    .to_string(),
            ],
        });
    }

    let listen_port = match annotations.get(ANNOTATION_LISTEN_PORT) {
        None => settings.default_listen_port,
        Some(raw) => match raw.trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(InjectError::BadListenPort(raw.clone())),
        },
    };
    // Broker N is served on listen+1+N (N ≤ 1023): the admin port must not be in there.
    let broker_ports = u32::from(listen_port)..=u32::from(listen_port) + 1 + BROKER_PORT_SPAN;
    if broker_ports.contains(&u32::from(settings.admin_port)) {
        return Err(InjectError::AdminPortClash(
            listen_port,
            settings.admin_port,
        ));
    }
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for p in c.ports.iter().flatten() {
            if p.container_port == i32::from(listen_port)
                || p.container_port == i32::from(settings.admin_port)
            {
                return Err(InjectError::PortClash {
                    container: c.name.clone(),
                    port: u16::try_from(p.container_port).unwrap_or(listen_port),
                });
            }
        }
    }
    let upstream = annotations
        .get(ANNOTATION_UPSTREAM)
        .filter(|u| !u.trim().is_empty())
        .cloned()
        .or_else(|| settings.default_upstream.clone())
        .ok_or(InjectError::NoUpstream)?;
    // The credential comes from the operator's config for the namespace,
    // never from a Secret the pod names.
    let has_credential = settings.credential_namespaces.contains(input.namespace);
    let sasl = match annotations.get(ANNOTATION_UPSTREAM_SASL).map(|s| s.trim()) {
        _ if !has_credential => None,
        None | Some("") => Some("SCRAM-SHA-512".to_string()),
        Some(m @ ("PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512")) => Some(m.to_string()),
        Some(other) => return Err(InjectError::BadSaslMechanism(other.to_string())),
    };
    let upstream = Upstream {
        bootstrap: upstream,
        sasl,
        tls: annotations.get(ANNOTATION_UPSTREAM_TLS).map(String::as_str) == Some("true"),
    };

    let mut warnings = Vec::new();
    if annotations.contains_key(ANNOTATION_UPSTREAM_SECRET) {
        warnings.push(format!(
            "streamgate: annotation {ANNOTATION_UPSTREAM_SECRET} is ignored: the broker credential comes from the operator's configuration (a Secret in its own namespace), never from the app's namespace"
        ));
    }
    let mut ops: Vec<Value> = Vec::new();

    // Status annotation and label: idempotency, and a cheap label-selected pod watch.
    if pod.metadata.annotations.is_none() {
        ops.push(add(
            "/metadata/annotations",
            json!({ ANNOTATION_INJECTED: "true" }),
        ));
    } else {
        ops.push(add(
            &format!("/metadata/annotations/{}", escape(ANNOTATION_INJECTED)),
            json!("true"),
        ));
    }
    match &pod.metadata.labels {
        None => ops.push(add("/metadata/labels", json!({ LABEL_INJECTED: "true" }))),
        Some(labels) if !labels.contains_key(LABEL_INJECTED) => ops.push(add(
            &format!("/metadata/labels/{}", escape(LABEL_INJECTED)),
            json!("true"),
        )),
        Some(_) => {}
    }

    let (volumes, mounts) = sidecar_volumes(input.masking_secrets, settings);
    let new_volumes: Vec<Value> = volumes.iter().map(to_json).collect::<Result<_, _>>()?;
    if spec.volumes.is_none() {
        ops.push(add("/spec/volumes", Value::Array(new_volumes)));
    } else {
        for v in new_volumes {
            ops.push(add("/spec/volumes/-", v));
        }
    }

    let bootstrap = EnvVar {
        name: BOOTSTRAP_ENV.to_string(),
        value: Some(format!("127.0.0.1:{listen_port}")),
        value_from: None,
    };
    let bootstrap = to_json(&bootstrap)?;
    for (i, c) in spec.containers.iter().enumerate() {
        match &c.env {
            None => ops.push(add(&format!("/spec/containers/{i}/env"), json!([bootstrap.clone()]))),
            Some(env) if env.iter().any(|e| e.name == BOOTSTRAP_ENV) => warnings.push(format!(
                "streamgate: container {:?} sets {BOOTSTRAP_ENV} itself and keeps it; point it at 127.0.0.1:{listen_port} to go through the sidecar",
                c.name
            )),
            Some(_) => ops.push(add(&format!("/spec/containers/{i}/env/-"), bootstrap.clone())),
        }
    }
    // After the app containers' env ops: in regular mode the sidecar shifts their indices.
    let sidecar = sidecar_container(listen_port, &upstream, mounts, settings);
    let sidecar = to_json(&sidecar)?;
    match (settings.sidecar_mode, spec.init_containers.is_none()) {
        (SidecarMode::Native, true) => ops.push(add("/spec/initContainers", json!([sidecar]))),
        (SidecarMode::Native, false) => ops.push(add("/spec/initContainers/0", sidecar)),
        // `containers` is required, so it always exists: first in the list, so
        // the kubelet starts it (and runs its postStart hook) before the app.
        (SidecarMode::Regular, _) => ops.push(add("/spec/containers/0", sidecar)),
    }
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.automount_service_account_token)
        == Some(false)
    {
        warnings.push(
            "streamgate: the sidecar gets its own projected token (audience streamgate.dev/sidecar, for its operator session); the app containers still get none"
                .to_string(),
        );
    }

    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(ops)).map_err(|e| InjectError::Patch(e.to_string()))?;
    Ok(Outcome::Inject { patch, warnings })
}

/// Span of broker node ids the sidecar maps to loopback ports (its default `node_id_max`).
const BROKER_PORT_SPAN: u32 = 1023;

/// Where and how the sidecar reaches the brokers.
#[derive(Debug)]
struct Upstream {
    bootstrap: String,
    sasl: Option<String>,
    tls: bool,
}

fn skip(reason: SkipReason) -> Outcome {
    Outcome::Skip {
        reason,
        warnings: Vec::new(),
    }
}

fn add(path: &str, value: Value) -> Value {
    json!({ "op": "add", "path": path, "value": value })
}

/// RFC 6901: `~` → `~0`, `/` → `~1` inside one path segment.
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, InjectError> {
    serde_json::to_value(v).map_err(|e| InjectError::Patch(e.to_string()))
}

const VOL_PODINFO: &str = "streamgate-podinfo";
const VOL_TOKEN: &str = "streamgate-kube-api";
const VOL_SPOOL: &str = "streamgate-spool";
const VOL_SIDECAR_TOKEN: &str = "streamgate-sidecar-token";

fn field(path: &str) -> ObjectFieldSelector {
    ObjectFieldSelector {
        api_version: None,
        field_path: path.to_string(),
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// Volumes the sidecar needs, and its mounts of them. None is mounted into app containers.
fn sidecar_volumes(
    masking_secrets: &BTreeSet<String>,
    settings: &InjectorSettings,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![
        Volume {
            name: VOL_PODINFO.to_string(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: "labels".to_string(),
                    field_ref: Some(field("metadata.labels")),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: VOL_TOKEN.to_string(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o444),
                // The API server's CA and the namespace, for the sidecar's
                // kube client; deliberately no token (the sidecar's API
                // token comes from its session, never the app's account).
                sources: Some(vec![
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: "kube-root-ca.crt".to_string(),
                            items: Some(vec![KeyToPath {
                                key: "ca.crt".to_string(),
                                path: "ca.crt".to_string(),
                                mode: None,
                            }]),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                    VolumeProjection {
                        downward_api: Some(DownwardAPIProjection {
                            items: Some(vec![DownwardAPIVolumeFile {
                                path: "namespace".to_string(),
                                field_ref: Some(field("metadata.namespace")),
                                ..Default::default()
                            }]),
                        }),
                        ..Default::default()
                    },
                ]),
            }),
            ..Default::default()
        },
        Volume {
            name: VOL_SIDECAR_TOKEN.to_string(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o400),
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(SIDECAR_TOKEN_AUDIENCE.to_string()),
                        expiration_seconds: Some(settings.token_expiration_seconds),
                        path: SIDECAR_TOKEN_FILE.to_string(),
                    }),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        },
        Volume {
            name: VOL_SPOOL.to_string(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity(c::SPOOL_VOLUME_LIMIT.to_string())),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        mount(VOL_PODINFO, PODINFO_DIR, true),
        mount(VOL_TOKEN, KUBE_TOKEN_DIR, true),
        mount(VOL_SIDECAR_TOKEN, SIDECAR_TOKEN_DIR, true),
        mount(VOL_SPOOL, SPOOL_DIR, false),
    ];
    for (i, secret) in masking_secrets.iter().enumerate() {
        // Optional: a MaskingRule may exist before its key; the sidecar then
        // refuses masked topics instead of the pod failing to start.
        let name = format!("streamgate-mask-key-{i}");
        volumes.push(secret_volume(&name, secret, true));
        mounts.push(mount(&name, &format!("{SECRET_DIR}/{secret}"), true));
    }
    (volumes, mounts)
}

fn secret_volume(name: &str, secret: &str, optional: bool) -> Volume {
    Volume {
        name: name.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            default_mode: Some(0o400),
            optional: Some(optional),
            items: None,
        }),
        ..Default::default()
    }
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value),
        value_from: None,
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(field(path)),
            ..Default::default()
        }),
    }
}

fn probe(path: &str, port: u16, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(i32::from(port)),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(1),
        ..Default::default()
    }
}

/// The proxy binary's path in the sidecar image (`proxy/Dockerfile`).
pub const PROXY_BINARY: &str = "/usr/local/bin/streamgate-proxy";

fn sidecar_container(
    listen_port: u16,
    upstream: &Upstream,
    mounts: Vec<VolumeMount>,
    settings: &InjectorSettings,
) -> Container {
    let mut envs = vec![
        env(c::ENV_LISTEN, format!("127.0.0.1:{listen_port}")),
        env(c::ENV_UPSTREAM, upstream.bootstrap.clone()),
        env(c::ENV_ADMIN, format!("0.0.0.0:{}", settings.admin_port)),
        env(c::ENV_ALLOW_NON_LOOPBACK, "true".to_string()),
        env_field(c::ENV_POD_NAME, "metadata.name"),
        env_field(c::ENV_POD_NAMESPACE, "metadata.namespace"),
        env_field(c::ENV_POD_UID, "metadata.uid"),
        env_field(c::ENV_SERVICE_ACCOUNT, "spec.serviceAccountName"),
        env(
            c::ENV_POD_LABELS_FILE,
            format!("{PODINFO_DIR}/{}", c::PODINFO_LABELS_FILE),
        ),
        env(c::ENV_AUDIT_DIR, SPOOL_DIR.to_string()),
        env(c::ENV_SECRET_DIR, SECRET_DIR.to_string()),
        // Policy, approvals and Events through the API server, as the
        // namespace's streamgate-sidecar account (token from the session).
        env(c::ENV_POLICY_KUBE, "true".to_string()),
        env(c::ENV_AUDIT_EVENTS, "true".to_string()),
    ];
    if settings.topic_grants_enforced {
        envs.push(env(c::ENV_TOPIC_GRANTS_ENFORCED, "true".to_string()));
    }
    // The collector is the record of evidence; the spool is its buffer.
    if let Some(otlp) = &settings.audit_otlp {
        envs.push(env(c::ENV_AUDIT_OTLP, "true".to_string()));
        envs.push(env(c::ENV_OTEL_ENDPOINT, otlp.endpoint.clone()));
        envs.push(env(c::ENV_OTEL_PROTOCOL, otlp.protocol.clone()));
        if let Some(headers) = &otlp.headers {
            envs.push(env(c::ENV_OTEL_HEADERS, headers.clone()));
        }
    }
    // The session: broker credential and API token, in memory only.
    envs.push(env(c::ENV_OPERATOR_URL, settings.session_url.clone()));
    if let Some(ca) = &settings.operator_ca_pem {
        envs.push(env(c::ENV_OPERATOR_CA, ca.clone()));
    }
    envs.push(env(
        c::ENV_SIDECAR_TOKEN_FILE,
        format!("{SIDECAR_TOKEN_DIR}/{SIDECAR_TOKEN_FILE}"),
    ));
    if let Some(mechanism) = &upstream.sasl {
        envs.push(env(c::ENV_UPSTREAM_SASL_MECHANISM, mechanism.clone()));
    }
    if upstream.tls {
        // No CA file: the sidecar trusts the system roots.
        envs.push(env(c::ENV_UPSTREAM_TLS, "true".to_string()));
    }
    let mut requests = BTreeMap::new();
    requests.insert("cpu".to_string(), Quantity(settings.cpu_request.clone()));
    requests.insert(
        "memory".to_string(),
        Quantity(settings.memory_request.clone()),
    );
    let mut limits = BTreeMap::new();
    limits.insert(
        "memory".to_string(),
        Quantity(settings.memory_limit.clone()),
    );
    Container {
        name: SIDECAR_NAME.to_string(),
        image: Some(settings.proxy_image.clone()),
        image_pull_policy: Some(settings.image_pull_policy.clone()),
        // Everything else comes from STREAMGATE_* env, so flags the proxy
        // adds later never break an injected pod.
        args: Some(vec!["run".to_string()]),
        env: Some(envs),
        restart_policy: match settings.sidecar_mode {
            SidecarMode::Native => Some("Always".to_string()),
            SidecarMode::Regular => None,
        },
        lifecycle: match settings.sidecar_mode {
            SidecarMode::Native => None,
            // The kubelet starts the next container only when this returns.
            SidecarMode::Regular => Some(Lifecycle {
                post_start: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: Some(vec![
                            PROXY_BINARY.to_string(),
                            "wait-ready".to_string(),
                            "--admin".to_string(),
                            format!("127.0.0.1:{}", settings.admin_port),
                        ]),
                    }),
                    ..Default::default()
                }),
                pre_stop: None,
                ..Default::default()
            }),
        },
        ports: Some(vec![k8s_openapi::api::core::v1::ContainerPort {
            name: Some("sg-admin".to_string()),
            container_port: i32::from(settings.admin_port),
            protocol: Some("TCP".to_string()),
            ..Default::default()
        }]),
        startup_probe: Some(probe("/readyz", settings.admin_port, 1, 120)),
        readiness_probe: Some(probe("/readyz", settings.admin_port, 10, 3)),
        liveness_probe: Some(probe("/healthz", settings.admin_port, 10, 3)),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            limits: Some(limits),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".to_string()]),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn run(p: &Pod, ns: &str, labels: &[(&str, &str)]) -> Result<Outcome, InjectError> {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let secrets = BTreeSet::new();
        let settings = InjectorSettings {
            default_upstream: Some("kafka.kafka.svc:9092".into()),
            ..Default::default()
        };
        plan(
            &InjectionInput {
                pod: p,
                namespace: ns,
                namespace_labels: &labels,
                masking_secrets: &secrets,
            },
            &settings,
        )
    }

    #[test]
    fn escapes_slash_and_tilde() {
        assert_eq!(
            escape("streamgate.dev/injected"),
            "streamgate.dev~1injected"
        );
        assert_eq!(escape("a~b/c"), "a~0b~1c");
    }

    #[test]
    fn bad_listen_port_is_refused_with_the_annotation_named() {
        let p = pod(
            json!({"metadata": {"annotations": {"streamgate.dev/inject": "true", "streamgate.dev/listen-port": "99999"}},
            "spec": {"containers": [{"name": "app", "image": "x"}]}}),
        );
        let err = run(&p, "clinical", &[]).unwrap_err();
        assert_eq!(err, InjectError::BadListenPort("99999".into()));
        assert!(err.to_string().contains("streamgate.dev/listen-port"));
    }

    #[test]
    fn no_upstream_anywhere_is_refused() {
        let p = pod(
            json!({"metadata": {"annotations": {"streamgate.dev/inject": "true"}},
            "spec": {"containers": [{"name": "app", "image": "x"}]}}),
        );
        let labels = BTreeMap::new();
        let secrets = BTreeSet::new();
        let out = plan(
            &InjectionInput {
                pod: &p,
                namespace: "clinical",
                namespace_labels: &labels,
                masking_secrets: &secrets,
            },
            &InjectorSettings::default(),
        );
        assert_eq!(out.unwrap_err(), InjectError::NoUpstream);
    }

    #[test]
    fn port_clash_names_the_container() {
        let p = pod(
            json!({"metadata": {"annotations": {"streamgate.dev/inject": "true"}},
            "spec": {"containers": [{"name": "kafka-ish", "image": "x", "ports": [{"containerPort": 9092}]}]}}),
        );
        assert_eq!(
            run(&p, "clinical", &[]).unwrap_err(),
            InjectError::PortClash {
                container: "kafka-ish".into(),
                port: 9092
            }
        );
    }

    #[test]
    fn operator_namespace_is_never_injected() {
        let p = pod(
            json!({"metadata": {"annotations": {"streamgate.dev/inject": "true"}},
            "spec": {"containers": [{"name": "app", "image": "x"}]}}),
        );
        assert!(matches!(
            run(&p, "streamgate-system", &[]).unwrap(),
            Outcome::Skip {
                reason: SkipReason::OperatorNamespace,
                ..
            }
        ));
    }

    #[test]
    fn existing_bootstrap_env_is_kept_with_a_warning() {
        let p = pod(
            json!({"metadata": {"annotations": {"streamgate.dev/inject": "true"}},
            "spec": {"containers": [{"name": "app", "image": "x", "env": [{"name": "KAFKA_BOOTSTRAP_SERVERS", "value": "broker:9092"}]}]}}),
        );
        let Outcome::Inject { patch, warnings } = run(&p, "clinical", &[]).unwrap() else {
            panic!("not injected")
        };
        let text = serde_json::to_string(&patch).unwrap();
        assert!(!text.contains("/spec/containers/0/env"), "{text}");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("\"app\""));
    }
}
