//! Pod emulation: start the injected sidecar of a *stored* pod the way the
//! kubelet would, on a control plane that has no kubelet ([`crate::kube`]).
//!
//! [`EmulatedPod::start`] reads the pod back from the API server (so what runs
//! is what the mutating webhook actually injected, not what the test sent) and
//! starts the real `streamgate-proxy` binary from the sidecar container:
//!
//! - **command/args**: the container's `command`, else the image's entrypoint
//!   (the proxy binary, `proxy/Dockerfile`), followed by its `args`;
//! - **env**: literal values (with `$(VAR)` expansion as the kubelet does);
//!   `fieldRef`s filled from the stored pod (`metadata.name/namespace/uid`,
//!   `metadata.labels['k']`, `spec.serviceAccountName`, …); `secretKeyRef` and
//!   `configMapKeyRef` read from the API server. Plus what the kubelet and
//!   the image add: `KUBERNETES_SERVICE_HOST/PORT` (the API server on
//!   127.0.0.1), `HOSTNAME`, `PATH`, and an empty `HOME` (so no stray
//!   kubeconfig: the in-cluster config is what gets used). Nothing else of the
//!   test's environment leaks in, except `RUST_LOG` when set (a debugging aid).
//! - **volumes**, written as files at their mount paths: the downward-API
//!   labels/annotations files (`key="value"` lines, Go-quoted, sorted — the
//!   kubelet's format), Secrets (read with the admin account, as the kubelet
//!   reads them; an absent optional Secret is an empty directory), projected
//!   volumes (a ServiceAccount token from the TokenRequest API for the pod's
//!   ServiceAccount, the `kube-root-ca.crt` ConfigMap, downward-API items),
//!   and `emptyDir`s.
//! - **mount namespace**: the mount paths are absolute
//!   (`/var/run/streamgate/...`, `/var/run/secrets/kubernetes.io/serviceaccount`).
//!   The proxy runs in its own mount namespace (`unshare --mount` from
//!   util-linux; the tests run as root) with a temp directory bind-mounted over
//!   `/var/run`, laid out with every volume at its mount path — so the proxy
//!   reads exactly the paths the injector wrote, and the host's `/var/run` is
//!   never touched. Every sidecar mount must therefore live under `/var/run`
//!   (the injector's contract, `streamgate_crds::contract`); anything else panics.
//! - **ports**: there is no pod network namespace, so the pod's fixed ports
//!   (the Kafka listener, 9092 by default, and the admin port, 15901) would
//!   clash between tests. Each is remapped to a free loopback port wherever it
//!   appears as `host:port` — the sidecar's `STREAMGATE_LISTEN` and
//!   `STREAMGATE_ADMIN`, its `postStart` hook, and the app containers'
//!   `KAFKA_BOOTSTRAP_SERVERS` ([`EmulatedPod::app_env`]). Nothing else is
//!   rewritten: the upstream is whatever the pod's `streamgate.dev/upstream`
//!   annotation named (point it at the test's tansu).
//! - **postStart**: when the sidecar is a regular container (API servers
//!   without native sidecars), its `postStart` exec hook (`wait-ready`) is run
//!   as the kubelet would before starting the app containers; a failing hook
//!   panics. A native sidecar (init container with `restartPolicy: Always`)
//!   is waited for through its startup probe's `/readyz`.
//!
//! Not emulated: the container's user and read-only root filesystem (the
//! tests run as root), resource limits, probes after start, the projected
//! token's rotation. (Projected tokens are bound to the pod, as the kubelet
//! binds them: the operator's session endpoint reads the pod from them.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::kube::ControlPlane;
use crate::{Proc, TANSU_NODE_ID, check, free_port, free_proxy_port, http_get, proxy_bin};

/// The name of the injected container (the operator's `SIDECAR_NAME`).
pub const SIDECAR_CONTAINER: &str = "streamgate-proxy";
/// Where the sidecar image keeps the proxy binary (`proxy/Dockerfile`'s ENTRYPOINT).
pub const IMAGE_ENTRYPOINT: &str = "/usr/local/bin/streamgate-proxy";
/// Every sidecar mount lives under this directory (see the module docs).
const MOUNT_ROOT: &str = "/var/run";
/// Env vars whose `host:port` values carry the pod's fixed ports.
const PORT_ENVS: &[&str] = &[
    "STREAMGATE_LISTEN",
    "STREAMGATE_ADMIN",
    "KAFKA_BOOTSTRAP_SERVERS",
];

/// The injected sidecar of one stored pod, running.
pub struct EmulatedPod {
    pub namespace: String,
    pub name: String,
    /// The stored pod, as read from the API server.
    pub pod: Value,
    /// The sidecar container of `pod`.
    pub container: Value,
    /// The directory bind-mounted over `/var/run` inside the proxy's mount namespace.
    pub run_root: tempfile::TempDir,
    /// Pod port → the free loopback port it runs on here.
    pub port_map: BTreeMap<u16, u16>,
    /// The sidecar's environment as started (after filling and remapping).
    pub env: Vec<(String, String)>,
    pub proc: Proc,
}

impl EmulatedPod {
    /// Read `namespace/name` from the API server and start its sidecar; returns
    /// once the sidecar is ready (its `postStart` hook returned, or `/readyz`
    /// answered 200 for a native sidecar).
    pub fn start(cp: &ControlPlane, namespace: &str, name: &str) -> EmulatedPod {
        let pod = cp
            .get_json("pod", namespace, name)
            .unwrap_or_else(|| panic!("pod {namespace}/{name} is not stored"));
        let spec = &pod["spec"];
        let (container, native) = find_sidecar(spec).unwrap_or_else(|| {
            panic!(
                "pod {namespace}/{name} has no injected {SIDECAR_CONTAINER} container:\n{}",
                serde_json::to_string_pretty(spec).unwrap()
            )
        });
        let container = container.clone();
        publish_root_ca(cp, namespace);

        let run_root = tempfile::Builder::new()
            .prefix("sg-pod-run-")
            .tempdir()
            .unwrap();
        materialize_volumes(cp, &pod, &container, run_root.path());
        std::fs::create_dir_all(run_root.path().join("home")).unwrap();

        // Ports: the sidecar's listener (and its per-broker ports) and admin.
        let mut port_map = BTreeMap::new();
        let mut fill = |value: Option<String>, free: u16| {
            if let Some(port) = value.as_deref().and_then(port_of) {
                port_map.entry(port).or_insert(free);
            }
        };
        let literal = |var: &str| {
            container["env"].as_array().and_then(|env| {
                env.iter()
                    .find(|e| e["name"] == var)
                    .and_then(|e| e["value"].as_str().map(str::to_string))
            })
        };
        fill(literal("STREAMGATE_LISTEN"), free_proxy_port(TANSU_NODE_ID));
        fill(literal("STREAMGATE_ADMIN"), free_port());

        let mut env = container_env(cp, &pod, &container);
        for (k, v) in env.iter_mut() {
            if PORT_ENVS.contains(&k.as_str()) {
                *v = remap(v, &port_map);
            }
        }
        let api_port = cp.api_port.to_string();
        let mut full_env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("HOSTNAME".into(), name.to_string()),
            (
                "HOME".into(),
                run_root.path().join("home").display().to_string(),
            ),
            ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
            ("KUBERNETES_SERVICE_PORT".into(), api_port.clone()),
            ("KUBERNETES_SERVICE_PORT_HTTPS".into(), api_port.clone()),
            (
                "KUBERNETES_PORT".into(),
                format!("tcp://127.0.0.1:{api_port}"),
            ),
        ];
        if let Ok(log) = std::env::var("RUST_LOG") {
            full_env.push(("RUST_LOG".into(), log));
        }
        full_env.extend(env);

        // command: the container's, else the image's entrypoint; then args.
        let mut argv: Vec<String> = strings(&container["command"]);
        if argv.is_empty() {
            argv.push(IMAGE_ENTRYPOINT.to_string());
        }
        argv.extend(strings(&container["args"]));
        let argv = image_argv(&argv, &full_env, &port_map);

        let mut cmd = Command::new("unshare");
        cmd.env_clear()
            .envs(full_env.iter().map(|(k, v)| (k, v)))
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(format!("mount --bind \"$0\" {MOUNT_ROOT} && exec \"$@\""))
            .arg(run_root.path())
            .args(&argv);
        let log = run_root.path().join("sidecar.log");
        let proc = Proc::spawn(&format!("sidecar of {namespace}/{name}"), cmd, log).unwrap();
        let mut emulated = EmulatedPod {
            namespace: namespace.to_string(),
            name: name.to_string(),
            pod: pod.clone(),
            container: container.clone(),
            run_root,
            port_map,
            env: full_env,
            proc,
        };
        let hook = strings(&container["lifecycle"]["postStart"]["exec"]["command"]);
        if !hook.is_empty() {
            // The kubelet starts the next container only when the hook returns.
            let hook = image_argv(&hook, &emulated.env, &emulated.port_map);
            let out = Command::new(&hook[0]).args(&hook[1..]).output().unwrap();
            assert!(
                out.status.success(),
                "the sidecar's postStart hook {hook:?} failed: {}\n{}\nsidecar log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                emulated.output()
            );
        } else {
            assert!(
                native,
                "a regular sidecar container without a postStart hook"
            );
            emulated.wait_ready(Duration::from_secs(120));
        }
        assert!(
            emulated.proc.is_running(),
            "the sidecar exited:\n{}",
            emulated.output()
        );
        emulated
    }

    /// Wait until the sidecar's `/readyz` answers 200 (its startup probe).
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            assert!(
                self.proc.is_running(),
                "the sidecar exited during startup:\n{}",
                self.output()
            );
            if let Ok((200, _)) = http_get(self.admin_port(), "/readyz") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sidecar was not ready after {timeout:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The value of one of the sidecar's env vars, as started.
    pub fn sidecar_env(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The (remapped) admin port.
    pub fn admin_port(&self) -> u16 {
        self.sidecar_env("STREAMGATE_ADMIN")
            .and_then(port_of)
            .expect("STREAMGATE_ADMIN host:port")
    }

    /// The env an app container would get (literal and remapped values only:
    /// what a Kafka client needs, chiefly `KAFKA_BOOTSTRAP_SERVERS`).
    pub fn app_env(&self, container: &str) -> Vec<(String, String)> {
        let c = self.pod["spec"]["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == container))
            .unwrap_or_else(|| panic!("no app container {container:?} in {}", self.name));
        c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let name = e["name"].as_str()?.to_string();
                let value = e["value"].as_str()?;
                let value = if PORT_ENVS.contains(&name.as_str()) {
                    remap(value, &self.port_map)
                } else {
                    value.to_string()
                };
                Some((name, value))
            })
            .collect()
    }

    /// `KAFKA_BOOTSTRAP_SERVERS` of the app container `container`, remapped.
    pub fn bootstrap(&self, container: &str) -> String {
        self.app_env(container)
            .into_iter()
            .find(|(k, _)| k == "KAFKA_BOOTSTRAP_SERVERS")
            .map(|(_, v)| v)
            .unwrap_or_else(|| {
                panic!(
                    "app container {container:?} got no KAFKA_BOOTSTRAP_SERVERS from the injector"
                )
            })
    }

    /// Where a path inside the sidecar's `/var/run` is on the host.
    pub fn host_path(&self, in_container: &str) -> PathBuf {
        let rel = in_container
            .strip_prefix(MOUNT_ROOT)
            .unwrap_or_else(|| panic!("{in_container} is not under {MOUNT_ROOT}"));
        self.run_root.path().join(rel.trim_start_matches('/'))
    }

    /// The audit spool (`STREAMGATE_AUDIT_DIR`) on the host.
    pub fn spool_dir(&self) -> PathBuf {
        self.host_path(
            self.sidecar_env("STREAMGATE_AUDIT_DIR")
                .expect("the sidecar has STREAMGATE_AUDIT_DIR"),
        )
    }

    /// Every record of the spool, via `streamgate-proxy audit export DIR --format jsonl`.
    pub fn audit_export(&self) -> Vec<Value> {
        let out = Command::new(proxy_bin())
            .arg("audit")
            .arg("export")
            .arg(self.spool_dir())
            .args(["--format", "jsonl"])
            .output()
            .unwrap();
        check(&out, "streamgate-proxy audit export")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Everything the sidecar printed.
    pub fn output(&self) -> String {
        self.proc.output()
    }

    /// Stop the sidecar (SIGTERM, as the kubelet does, then SIGKILL).
    pub fn stop(&mut self) -> Option<i32> {
        self.proc.terminate(Duration::from_secs(15))
    }
}

/// The sidecar container and whether it is a native sidecar (init container).
fn find_sidecar(spec: &Value) -> Option<(&Value, bool)> {
    fn named(list: &Value) -> Option<&Value> {
        list.as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == SIDECAR_CONTAINER))
    }
    named(&spec["initContainers"])
        .map(|c| (c, true))
        .or_else(|| named(&spec["containers"]).map(|c| (c, false)))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The port of a `host:port` value (the last entry of a comma list).
fn port_of(value: &str) -> Option<u16> {
    value.rsplit(',').next()?.rsplit_once(':')?.1.parse().ok()
}

/// Replace the port of every `host:port` entry found in `map`.
fn remap(value: &str, map: &BTreeMap<u16, u16>) -> String {
    value
        .split(',')
        .map(|entry| match entry.rsplit_once(':') {
            Some((host, port)) => match port.parse::<u16>().ok().and_then(|p| map.get(&p)) {
                Some(new) => format!("{host}:{new}"),
                None => entry.to_string(),
            },
            None => entry.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// An argv as the image runs it: the image's binary path becomes the built
/// proxy, `$(VAR)` references are expanded, `host:port` arguments remapped.
fn image_argv(
    argv: &[String],
    env: &[(String, String)],
    port_map: &BTreeMap<u16, u16>,
) -> Vec<String> {
    argv.iter()
        .enumerate()
        .map(|(i, a)| {
            if i == 0 && a == IMAGE_ENTRYPOINT {
                return proxy_bin().display().to_string();
            }
            let a = expand(a, env);
            if a.contains(':') && port_of(&a).is_some() {
                remap(&a, port_map)
            } else {
                a
            }
        })
        .collect()
}

/// The kubelet's `$(VAR)` expansion against the variables defined so far
/// (`$$` escapes; unknown references stay as written).
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&rest[i..i + 2 + end + 1]),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A downward-API `fieldRef` of the stored pod. `status.*` fields have no
/// kubelet to fill them: the pod runs on loopback.
fn field_ref(pod: &Value, path: &str) -> String {
    let meta = &pod["metadata"];
    let map_key = |prefix: &str| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(
            meta[prefix
                .trim_start_matches("metadata.")
                .trim_end_matches("['")][key]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };
    if let Some(v) = map_key("metadata.labels['") {
        return v;
    }
    if let Some(v) = map_key("metadata.annotations['") {
        return v;
    }
    match path {
        "metadata.name" | "metadata.namespace" | "metadata.uid" => meta
            [path.trim_start_matches("metadata.")]
        .as_str()
        .unwrap_or_default()
        .to_string(),
        "metadata.labels" => format_map(&meta["labels"]),
        "metadata.annotations" => format_map(&meta["annotations"]),
        "spec.serviceAccountName" => pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .to_string(),
        "spec.nodeName" => "emulated-node".to_string(),
        "status.podIP" | "status.hostIP" => "127.0.0.1".to_string(),
        other => panic!("pod emulation: fieldRef {other} is not supported"),
    }
}

/// The kubelet's downward-API map format: sorted `key="value"` lines,
/// values Go-quoted (`strconv.Quote`), no trailing newline.
fn format_map(map: &Value) -> String {
    let Some(obj) = map.as_object() else {
        return String::new();
    };
    let sorted: BTreeMap<&String, &Value> = obj.iter().collect();
    sorted
        .into_iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v.as_str().unwrap_or_default())))
        .collect::<Vec<_>>()
        .join("\n")
}

fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The data of a Secret (base64-decoded) or ConfigMap, read as admin (the
/// kubelet's view); None when absent.
fn object_data(
    cp: &ControlPlane,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Option<BTreeMap<String, Vec<u8>>> {
    let obj = cp.get_json(kind, namespace, name)?;
    let mut out = BTreeMap::new();
    for (k, v) in obj["data"].as_object().into_iter().flatten() {
        let text = v.as_str().unwrap_or_default();
        let bytes = if kind == "secret" {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap_or_else(|e| panic!("secret {namespace}/{name} key {k}: {e}"))
        } else {
            text.as_bytes().to_vec()
        };
        out.insert(k.clone(), bytes);
    }
    if kind == "configmap" {
        for (k, v) in obj["binaryData"].as_object().into_iter().flatten() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .unwrap();
            out.insert(k.clone(), bytes);
        }
    }
    Some(out)
}

/// The container's env, filled as the kubelet fills it.
fn container_env(cp: &ControlPlane, pod: &Value, container: &Value) -> Vec<(String, String)> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut env: Vec<(String, String)> = Vec::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name").to_string();
        let value = if let Some(v) = e["value"].as_str() {
            expand(v, &env)
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            field_ref(pod, path)
        } else if e["valueFrom"]["secretKeyRef"].is_object()
            || e["valueFrom"]["configMapKeyRef"].is_object()
        {
            let (kind, r) = if e["valueFrom"]["secretKeyRef"].is_object() {
                ("secret", &e["valueFrom"]["secretKeyRef"])
            } else {
                ("configmap", &e["valueFrom"]["configMapKeyRef"])
            };
            let source = r["name"].as_str().unwrap_or_default();
            let key = r["key"].as_str().unwrap_or_default();
            let data = object_data(cp, kind, namespace, source).unwrap_or_default();
            match data.get(key) {
                Some(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                None if r["optional"] == true => continue,
                None => panic!(
                    "env {name}: {kind} {namespace}/{source} has no key {key}: the kubelet would not start the container"
                ),
            }
        } else if e["valueFrom"].is_null() {
            String::new()
        } else {
            panic!(
                "pod emulation: env {name} source {} is not supported",
                e["valueFrom"]
            );
        };
        env.push((name, value));
    }
    env
}

/// What the controller-manager's root-ca-cert-publisher does: the
/// `kube-root-ca.crt` ConfigMap in each namespace, holding the API server's CA.
fn publish_root_ca(cp: &ControlPlane, namespace: &str) {
    if cp
        .get_json("configmap", namespace, "kube-root-ca.crt")
        .is_some()
    {
        return;
    }
    let ca = std::fs::read_to_string(cp.ca_file()).expect("the API server's CA");
    let cm = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-root-ca.crt", "namespace": namespace},
        "data": {"ca.crt": ca},
    });
    cp.apply_ok("admin", &cm.to_string());
}

/// Downward-API volume items as the kubelet writes them: each field of the
/// stored pod in its file, with the item's mode or the volume's default.
fn write_downward_api(dir: &Path, pod: &Value, items: &[Value], mode: Option<u32>) {
    for item in items {
        let path = item["fieldRef"]["fieldPath"].as_str().unwrap_or_default();
        write_file(
            dir,
            item["path"].as_str().unwrap_or_default(),
            field_ref(pod, path).as_bytes(),
            mode_of(&item["mode"]).or(mode),
        );
    }
}

fn write_file(dir: &Path, rel: &str, bytes: &[u8], mode: Option<u32>) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, bytes).unwrap();
    if let Some(mode) = mode {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn mode_of(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|m| u32::try_from(m).ok())
}

/// Files of keyed data (`items` pick and rename keys; without items, every key).
fn write_keyed(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: &Value,
    default_mode: Option<u32>,
    what: &str,
) {
    match items.as_array() {
        Some(items) => {
            for item in items {
                let key = item["key"].as_str().unwrap_or_default();
                let path = item["path"].as_str().unwrap_or(key);
                let bytes = data
                    .get(key)
                    .unwrap_or_else(|| panic!("{what} has no key {key}"));
                write_file(dir, path, bytes, mode_of(&item["mode"]).or(default_mode));
            }
        }
        None => {
            for (k, bytes) in data {
                write_file(dir, k, bytes, default_mode);
            }
        }
    }
}

/// Write each volume the sidecar mounts under `root` (which stands for `/var/run`).
fn materialize_volumes(cp: &ControlPlane, pod: &Value, container: &Value, root: &Path) {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let sa = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    let volumes = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let vol_name = m["name"].as_str().unwrap_or_default();
        let mount_path = m["mountPath"].as_str().unwrap_or_default();
        let rel = mount_path
            .strip_prefix(MOUNT_ROOT)
            .filter(|r| r.starts_with('/'))
            .unwrap_or_else(|| {
                panic!(
                    "pod emulation: the sidecar mounts {vol_name} at {mount_path}, outside {MOUNT_ROOT}"
                )
            });
        let dir = root.join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        let vol = volumes
            .iter()
            .find(|v| v["name"] == vol_name)
            .unwrap_or_else(|| panic!("volumeMount {vol_name} names no volume of the pod"));
        if vol["emptyDir"].is_object() {
            continue;
        }
        if let Some(items) = vol["downwardAPI"]["items"].as_array() {
            let mode = mode_of(&vol["downwardAPI"]["defaultMode"]);
            write_downward_api(&dir, pod, items, mode);
            continue;
        }
        if vol["secret"].is_object() {
            let s = &vol["secret"];
            let secret = s["secretName"].as_str().unwrap_or_default();
            match object_data(cp, "secret", namespace, secret) {
                Some(data) => write_keyed(
                    &dir,
                    &data,
                    &s["items"],
                    mode_of(&s["defaultMode"]),
                    &format!("secret {namespace}/{secret}"),
                ),
                None if s["optional"] == true => {}
                None => panic!(
                    "volume {vol_name}: secret {namespace}/{secret} does not exist: the kubelet would not start the pod"
                ),
            }
            continue;
        }
        if let Some(sources) = vol["projected"]["sources"].as_array() {
            let mode = mode_of(&vol["projected"]["defaultMode"]);
            for src in sources {
                if src["serviceAccountToken"].is_object() {
                    let t = &src["serviceAccountToken"];
                    let ttl = t["expirationSeconds"].as_u64().unwrap_or(3600);
                    // The kubelet binds projected tokens to their pod.
                    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
                    let pod_uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
                    let token = cp.token_request_bound(
                        namespace,
                        sa,
                        t["audience"].as_str(),
                        Duration::from_secs(ttl),
                        Some((pod_name, pod_uid)),
                    );
                    write_file(
                        &dir,
                        t["path"].as_str().unwrap_or("token"),
                        token.as_bytes(),
                        mode,
                    );
                } else if src["configMap"].is_object() || src["secret"].is_object() {
                    let (kind, s) = if src["configMap"].is_object() {
                        ("configmap", &src["configMap"])
                    } else {
                        ("secret", &src["secret"])
                    };
                    let name = s["name"].as_str().unwrap_or_default();
                    match object_data(cp, kind, namespace, name) {
                        Some(data) => write_keyed(
                            &dir,
                            &data,
                            &s["items"],
                            mode,
                            &format!("{kind} {namespace}/{name}"),
                        ),
                        None if s["optional"] == true => {}
                        None => panic!(
                            "volume {vol_name}: {kind} {namespace}/{name} does not exist: the kubelet would not start the pod"
                        ),
                    }
                } else if let Some(items) = src["downwardAPI"]["items"].as_array() {
                    write_downward_api(&dir, pod, items, mode);
                } else {
                    panic!("pod emulation: projected source {src} is not supported");
                }
            }
            continue;
        }
        panic!("pod emulation: volume {vol} is not supported");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_file_is_the_kubelets_format() {
        let labels = serde_json::json!({"b": "two \"quoted\"", "a": "one"});
        assert_eq!(format_map(&labels), "a=\"one\"\nb=\"two \\\"quoted\\\"\"");
    }

    #[test]
    fn ports_are_remapped_in_host_port_lists() {
        let map = BTreeMap::from([(9092, 41000), (15901, 42000)]);
        assert_eq!(remap("127.0.0.1:9092", &map), "127.0.0.1:41000");
        assert_eq!(remap("0.0.0.0:15901", &map), "0.0.0.0:42000");
        assert_eq!(remap("a:1,b:9092", &map), "a:1,b:41000");
        assert_eq!(remap("run", &map), "run");
    }

    #[test]
    fn dollar_references_expand_like_the_kubelet() {
        let env = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)/y", &env), "x/y");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(B)", &env), "$(B)");
    }
}
