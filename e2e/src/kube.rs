//! A live Kubernetes control plane for the end-to-end tests, envtest-style:
//! Debian's etcd and a kube-apiserver built from source (installed by
//! `.ci/install-peers.sh` through `e2e/peers/kube/control-plane.sh`), on free
//! loopback ports, with RBAC on and four static-token users:
//! `admin` (system:masters), `alice` (compliance-officers), `bob` (clinicians)
//! and `mallory` (no groups). No kubelet, scheduler or controller-manager:
//! objects are admitted and stored, no container runs (see [`crate::pod`] for
//! starting the injected sidecar as the kubelet would).
//!
//! Everything the product installs goes in the way a user installs it:
//! `kubectl apply -f crds/`, the chart rendered by the real Helm engine
//! (helm-python-sdk) and applied with kubectl, and the operator running as a
//! local process that authenticates with its own ServiceAccount token
//! (TokenRequest), never as admin.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{Proc, free_port, repo_root};

/// The users of the static token file, and their groups. `oidc:alice@…` is
/// the name the API server's OIDC authenticator would give the clinician
/// `alice@example.com` (`--oidc-username-claim=email --oidc-username-prefix=oidc:`),
/// here also a compliance officer.
pub const USERS: &[(&str, &str)] = &[
    ("admin", "system:masters"),
    ("alice", "compliance-officers"),
    ("bob", "clinicians"),
    ("mallory", ""),
    (OIDC_ALICE, "compliance-officers"),
];

/// `alice@example.com` as the API server's OIDC authenticator names her.
pub const OIDC_ALICE: &str = "oidc:alice@example.com";

/// Where the control-plane peers are (from `peers.env`); panics naming the
/// installer when one is missing — a live-cluster test never skips.
#[derive(Debug, Clone)]
pub struct KubePeers {
    pub apiserver: PathBuf,
    pub etcd: PathBuf,
    pub kubectl: PathBuf,
}

pub fn kube_peers() -> KubePeers {
    let get = |var: &str| -> PathBuf {
        match std::env::var_os(var).map(PathBuf::from) {
            Some(p) if p.exists() => p,
            other => panic!(
                "live control plane missing: {var}={other:?}. Install it with `.ci/install-peers.sh` \
                 (builds kube-apiserver 1.20 from Debian's source, ~15 min, cached) and \
                 `source ~/.cache/streamgate/peers.env`, or run `e2e/test.sh`."
            ),
        }
    };
    KubePeers {
        apiserver: get("STREAMGATE_KUBE_APISERVER"),
        etcd: get("STREAMGATE_ETCD"),
        kubectl: get("STREAMGATE_KUBECTL"),
    }
}

/// etcd + kube-apiserver, stopped when dropped.
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    peers: KubePeers,
    etcd: Proc,
    apiserver: Option<Proc>,
    pub api_port: u16,
    etcd_port: u16,
}

impl ControlPlane {
    /// Start etcd and the API server on free ports and wait until `/readyz`.
    pub fn start() -> ControlPlane {
        let peers = kube_peers();
        let dir = tempfile::Builder::new()
            .prefix("sg-kube-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let ok = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(d.join("sa.key"))
            .arg("2048")
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
            && Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(d.join("sa.key"))
                .arg("-out")
                .arg(d.join("sa.pub"))
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
        assert!(ok, "openssl could not make the ServiceAccount signing key");
        let tokens: String = USERS
            .iter()
            .map(|(u, g)| {
                if g.is_empty() {
                    format!("{u}-token,{u},uid-{u}\n")
                } else {
                    format!("{u}-token,{u},uid-{u},{g}\n")
                }
            })
            .collect();
        std::fs::write(d.join("tokens.csv"), tokens).unwrap();
        let (etcd_port, etcd_peer, api_port) = (free_port(), free_port(), free_port());
        let mut etcd = Command::new(&peers.etcd);
        etcd.arg("--data-dir").arg(d.join("etcd")).args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{etcd_port}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{etcd_port}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{etcd_peer}"),
        ]);
        let etcd = Proc::spawn("etcd", etcd, d.join("etcd.log")).unwrap();
        let mut cp = ControlPlane {
            dir,
            peers,
            etcd,
            apiserver: None,
            api_port,
            etcd_port,
        };
        for (user, _) in USERS {
            cp.write_kubeconfig(user, &format!("{user}-token"));
        }
        cp.start_apiserver();
        cp
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// (Re)start the API server on the same port and etcd, and wait until ready.
    pub fn start_apiserver(&mut self) {
        let d = self.dir.path();
        let mut cmd = Command::new(&self.peers.apiserver);
        cmd.args([
            "--etcd-servers",
            &format!("http://127.0.0.1:{}", self.etcd_port),
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            &self.api_port.to_string(),
            "--insecure-port",
            "0",
        ])
        .arg("--cert-dir")
        .arg(d.join("certs"))
        .args(["--service-account-issuer", "https://kubernetes.default.svc"])
        .arg("--service-account-key-file")
        .arg(d.join("sa.pub"))
        .arg("--service-account-signing-key-file")
        .arg(d.join("sa.key"))
        .args(["--api-audiences", "https://kubernetes.default.svc"])
        .arg("--token-auth-file")
        .arg(d.join("tokens.csv"))
        .args([
            "--authorization-mode",
            "RBAC",
            "--service-cluster-ip-range",
            "10.96.0.0/24",
            "--allow-privileged=false",
            "--enable-admission-plugins",
            "NamespaceLifecycle,ServiceAccount,MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
        ]);
        let log = d.join(format!(
            "kube-apiserver-{}.log",
            Instant::now().elapsed().as_nanos()
        ));
        self.apiserver = Some(Proc::spawn("kube-apiserver", cmd, log).unwrap());
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = self.kubectl("admin", &["get", "--raw", "/readyz"]);
            if out.status.success() {
                break;
            }
            // The free port was taken between choosing it and binding (tests
            // start in parallel): choose another, as a fresh start would.
            let exited = self.apiserver.as_mut().is_some_and(|p| !p.is_running());
            if exited && self.apiserver_output().contains("address already in use") {
                self.api_port = free_port();
                for (user, _) in USERS {
                    self.write_kubeconfig(user, &format!("{user}-token"));
                }
                return self.start_apiserver();
            }
            if Instant::now() > deadline {
                panic!(
                    "kube-apiserver not ready after 90 s:\n{}",
                    self.apiserver_output()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Stop the API server (etcd keeps the data).
    pub fn stop_apiserver(&mut self) {
        if let Some(mut p) = self.apiserver.take() {
            p.terminate(Duration::from_secs(10));
        }
    }

    pub fn apiserver_output(&self) -> String {
        self.apiserver
            .as_ref()
            .map(Proc::output)
            .unwrap_or_default()
    }

    /// The API server's self-signed serving certificate (what in-cluster
    /// clients get as `ca.crt`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("certs/apiserver.crt")
    }

    fn write_kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        let ca = self.ca_file();
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: local, cluster: {{server: \"{}\", \
                 certificate-authority: \"{}\"}}}}]\nusers: [{{name: u, user: {{token: \"{token}\"}}}}]\n\
                 contexts: [{{name: local, context: {{cluster: local, user: u}}}}]\ncurrent-context: local\n",
                self.url(),
                ca.display()
            ),
        )
        .unwrap();
        path
    }

    /// The kubeconfig of a static user (`admin`, `alice`, `bob`, `mallory`).
    pub fn kubeconfig(&self, user: &str) -> PathBuf {
        self.dir.path().join(format!("{user}.kubeconfig"))
    }

    /// A kubeconfig for a ServiceAccount, with a token from the TokenRequest
    /// API (as a projected token would be), valid `ttl`.
    pub fn service_account_kubeconfig(&self, namespace: &str, sa: &str, ttl: Duration) -> PathBuf {
        let token = self.token_request(namespace, sa, None, ttl);
        self.write_kubeconfig(&format!("sa-{namespace}-{sa}"), &token)
    }

    /// A ServiceAccount token from the TokenRequest API.
    pub fn token_request(
        &self,
        namespace: &str,
        sa: &str,
        audience: Option<&str>,
        ttl: Duration,
    ) -> String {
        self.token_request_bound(namespace, sa, audience, ttl, None)
    }

    /// A ServiceAccount token bound to a pod `(name, uid)`, as the kubelet
    /// mints a projected token (the API server then names the pod in the
    /// token's user info).
    pub fn token_request_bound(
        &self,
        namespace: &str,
        sa: &str,
        audience: Option<&str>,
        ttl: Duration,
        pod: Option<(&str, &str)>,
    ) -> String {
        // The TokenRequest API directly (`kubectl create token` needs a 1.24+ client).
        let mut body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": audience.map(|a| vec![a]), "expirationSeconds": ttl.as_secs()},
        });
        if let Some((name, uid)) = pod {
            body["spec"]["boundObjectRef"] =
                serde_json::json!({"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid});
        }
        let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token");
        let out = self.kubectl_with(
            &self.kubeconfig("admin"),
            &["create", "--raw", &path, "-f", "-"],
            Some(&body.to_string()),
        );
        assert!(
            out.status.success(),
            "TokenRequest for {namespace}/{sa} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        status["status"]["token"]
            .as_str()
            .expect("TokenRequest status.token")
            .to_string()
    }

    /// `kubectl` as a static user.
    pub fn kubectl(&self, user: &str, args: &[&str]) -> Output {
        self.kubectl_with(&self.kubeconfig(user), args, None)
    }

    /// `kubectl` with a kubeconfig and optional stdin.
    pub fn kubectl_with(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(&self.peers.kubectl);
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl runs");
        if let Some(input) = stdin {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// `kubectl` as a user; panics with stderr when it fails. Returns stdout.
    pub fn kubectl_ok(&self, user: &str, args: &[&str]) -> String {
        let out = self.kubectl(user, args);
        assert!(
            out.status.success(),
            "kubectl {args:?} as {user} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of a YAML document as a user.
    pub fn apply(&self, user: &str, yaml: &str) -> Output {
        self.kubectl_with(
            &self.kubeconfig(user),
            &["apply", "--validate=false", "-f", "-"],
            Some(yaml),
        )
    }

    /// Like [`Self::apply`], panicking with stderr on failure.
    pub fn apply_ok(&self, user: &str, yaml: &str) -> String {
        let out = self.apply(user, yaml);
        assert!(
            out.status.success(),
            "kubectl apply as {user} failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One object as JSON (`kubectl get -o json`), or None when absent.
    pub fn get_json(&self, kind: &str, namespace: &str, name: &str) -> Option<serde_json::Value> {
        let out = self.kubectl("admin", &["get", kind, "-n", namespace, name, "-o", "json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// A namespace with the `default` ServiceAccount a controller-manager
    /// would have made (the ServiceAccount admission plugin refuses pods
    /// whose account does not exist), plus the given labels.
    pub fn namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: String = labels
            .iter()
            .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
            .collect();
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("  labels:\n{labels}")
        };
        self.apply_ok(
            "admin",
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n{labels}---\n\
                 apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: default\n  namespace: {name}\n"
            ),
        );
    }

    /// Lets `subjects` (`group:NAME` or `user:NAME`) see and patch
    /// AccessApprovals in `namespace` through the chart's `streamgate-approver`
    /// role, as a cluster admin would bind it.
    pub fn bind_approvers(&self, namespace: &str, subjects: &[&str]) {
        let subjects: String = subjects
            .iter()
            .map(|s| {
                let (kind, name) = s.split_once(':').expect("group:NAME or user:NAME");
                let kind = if kind == "group" { "Group" } else { "User" };
                format!(
                    "  - {{apiGroup: rbac.authorization.k8s.io, kind: {kind}, name: \"{name}\"}}\n"
                )
            })
            .collect();
        self.apply_ok(
            "admin",
            &format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: approvers\n  \
                 namespace: {namespace}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, \
                 name: streamgate-approver}}\nsubjects:\n{subjects}"
            ),
        );
    }

    /// Wait until `check` holds, polling every 200 ms.
    pub fn eventually<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check() {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop_apiserver();
        self.etcd.kill();
    }
}

/// `kubectl apply -f crds/` as admin (`--validate=false`: kubectl 1.20's
/// client-side validation does not know `x-kubernetes-validations`).
pub fn install_crds(cp: &ControlPlane) -> String {
    let crds = repo_root().join("crds");
    let out = cp.kubectl_with(
        &cp.kubeconfig("admin"),
        &["apply", "--validate=false", "-f", crds.to_str().unwrap()],
        None,
    );
    assert!(
        out.status.success(),
        "kubectl apply -f crds/ failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Established before anyone creates objects of the kinds.
    cp.kubectl_ok(
        "admin",
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/streampolicies.streamgate.dev",
            "crd/maskingrules.streamgate.dev",
            "crd/accessapprovals.streamgate.dev",
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The chart rendered by the real Helm engine (helm-python-sdk) with `values`
/// (JSON), as one multi-document YAML string. (helm-python-sdk renders with
/// Helm's default capabilities; the only capability-dependent template, the
/// PDB, is not rendered in `webhook.externalURL` mode.)
pub fn render_chart(values: &serde_json::Value) -> Result<String> {
    let python = &crate::peers().python;
    let script = r#"
import json, sys
import helm_python as helm
values = json.loads(sys.argv[2])
chart = helm.Chart.load(sys.argv[1])
out = chart.render(values, name="streamgate", namespace="streamgate-system", is_install=True)
for path, text in sorted(out.items()):
    if path.endswith("NOTES.txt") or not text.strip():
        continue
    print("---\n# " + path + "\n" + text)
"#;
    let out = Command::new(python)
        .args(["-c", script])
        .arg(repo_root().join("charts/streamgate"))
        .arg(values.to_string())
        .output()
        .context("running helm-python-sdk")?;
    if !out.status.success() {
        bail!(
            "helm render failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The operator binary `cargo test --workspace` built beside the test binaries.
pub fn operator_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("STREAMGATE_OPERATOR_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("streamgate-operator");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p streamgate-operator` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// One operator replica, run locally like the chart's Deployment runs it,
/// with the chart's ServiceAccount token.
pub struct Operator {
    pub name: String,
    pub webhook_port: u16,
    pub metrics_port: u16,
    pub proc: Proc,
}

impl Operator {
    pub fn start(
        cp: &ControlPlane,
        name: &str,
        webhook_port: u16,
        default_upstream: &str,
    ) -> Operator {
        Operator::start_with_env(cp, name, webhook_port, default_upstream, &[])
    }

    /// [`Operator::start`] with more environment (operator flags), e.g.
    /// `STREAMGATE_TOPIC_GRANTS_YAML`.
    pub fn start_with_env(
        cp: &ControlPlane,
        name: &str,
        webhook_port: u16,
        default_upstream: &str,
        extra_env: &[(&str, &str)],
    ) -> Operator {
        let kubeconfig = cp.service_account_kubeconfig(
            "streamgate-system",
            "streamgate",
            Duration::from_secs(3600),
        );
        let metrics_port = free_port();
        let mut cmd = Command::new(operator_bin());
        cmd.env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .env("STREAMGATE_NAMESPACE", "streamgate-system")
            .env("STREAMGATE_POD_NAME", name)
            .env(
                "STREAMGATE_WEBHOOK_LISTEN",
                format!("127.0.0.1:{webhook_port}"),
            )
            .env(
                "STREAMGATE_METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env("STREAMGATE_WEBHOOK_EXTRA_SANS", "127.0.0.1")
            // Sidecars reach this replica's session endpoint as a pod would the Service.
            .env(
                "STREAMGATE_SESSION_URL",
                format!("https://127.0.0.1:{webhook_port}"),
            )
            .env("STREAMGATE_DEFAULT_UPSTREAM", default_upstream)
            .env(
                "STREAMGATE_PROXY_IMAGE",
                "ghcr.io/streamgate/streamgate-proxy:0.1.0",
            );
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let log = cp.dir.path().join(format!("operator-{name}.log"));
        let proc = Proc::spawn(&format!("operator {name}"), cmd, log).unwrap();
        Operator {
            name: name.to_string(),
            webhook_port,
            metrics_port,
            proc,
        }
    }

    pub fn output(&self) -> String {
        self.proc.output()
    }
}

/// The whole product installed on a fresh control plane as the README says:
/// CRDs, the chart (RBAC, ServiceAccount, webhook configurations pointing at
/// a local operator), and `replicas` operators. The first replica's port is
/// the one the webhook configurations call.
pub struct Installed {
    pub cp: ControlPlane,
    pub operators: Vec<Operator>,
    pub chart: String,
    default_upstream: String,
    /// More chart values (merged over the defaults), e.g. `sidecarCredentials`.
    chart_values: serde_json::Value,
}

pub fn install_product(replicas: usize, default_upstream: &str) -> Installed {
    install_product_with(replicas, default_upstream, &[])
}

/// [`install_product`] with more operator environment (its flags).
pub fn install_product_with(
    replicas: usize,
    default_upstream: &str,
    operator_env: &[(&str, &str)],
) -> Installed {
    install_product_with_values(
        replicas,
        default_upstream,
        operator_env,
        serde_json::json!({}),
        |_| {},
    )
}

/// [`install_product_with`] with more chart values, and `before_operators`
/// run on the control plane once the chart is applied and before any
/// operator starts (e.g. creating the broker credential Secrets).
pub fn install_product_with_values(
    replicas: usize,
    default_upstream: &str,
    operator_env: &[(&str, &str)],
    chart_values: serde_json::Value,
    before_operators: impl FnOnce(&ControlPlane),
) -> Installed {
    let cp = ControlPlane::start();
    install_crds(&cp);
    cp.namespace("streamgate-system", &[]);
    let ports: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
    let chart = chart_for(ports[0], default_upstream, &chart_values);
    cp.apply_ok("admin", &chart);
    before_operators(&cp);
    let operators = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            Operator::start_with_env(
                &cp,
                &format!("operator-{i}"),
                *port,
                default_upstream,
                operator_env,
            )
        })
        .collect();
    let installed = Installed {
        cp,
        operators,
        chart,
        default_upstream: default_upstream.to_string(),
        chart_values,
    };
    installed.wait_webhooks_ready();
    installed
}

/// The chart with the webhooks calling a local operator on `webhook_port`.
fn chart_for(webhook_port: u16, default_upstream: &str, extra: &serde_json::Value) -> String {
    let mut values = serde_json::json!({
        "webhook": {"externalURL": format!("https://127.0.0.1:{webhook_port}"), "timeoutSeconds": 5},
        "upstream": {"bootstrapServers": default_upstream},
    });
    if let (Some(v), Some(extra)) = (values.as_object_mut(), extra.as_object()) {
        for (k, x) in extra {
            v.insert(k.clone(), x.clone());
        }
    }
    render_chart(&values).unwrap()
}

impl Installed {
    /// Re-point the webhook configurations at another replica (what a
    /// Service does when an endpoint goes away), keeping the patched caBundle.
    pub fn route_webhooks_to(&mut self, replica: usize) {
        self.chart = chart_for(
            self.operators[replica].webhook_port,
            &self.default_upstream,
            &self.chart_values,
        );
        self.cp.apply_ok("admin", &self.chart);
        self.wait_webhooks_ready();
    }

    /// Until the API server trusts the operator's certificate (the caBundle
    /// patched in) and the webhook answers: a dry-run pod create goes through
    /// the injector without errors.
    pub fn wait_webhooks_ready(&self) {
        let cp = &self.cp;
        cp.eventually(
            "the webhook configurations' caBundle and a serving operator",
            Duration::from_secs(90),
            || {
                let m = cp.get_json("mutatingwebhookconfiguration", "", "streamgate")?;
                let v = cp.get_json("validatingwebhookconfiguration", "", "streamgate")?;
                let has_ca = |cfg: &serde_json::Value| {
                    cfg["webhooks"].as_array().is_some_and(|hooks| {
                        hooks.iter().all(|h| {
                            h["clientConfig"]["caBundle"]
                                .as_str()
                                .is_some_and(|s| !s.is_empty())
                        })
                    })
                };
                (has_ca(&m) && has_ca(&v)).then_some(())
            },
        );
    }

    pub fn operator_logs(&self) -> String {
        self.operators
            .iter()
            .map(|o| format!("--- {} ---\n{}", o.name, o.output()))
            .collect()
    }
}
