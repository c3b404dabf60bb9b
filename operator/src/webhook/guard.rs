//! Admission that holds, the pure core: in a *governed* namespace (labelled
//! `streamgate.dev/inject=enabled` by a cluster admin, not exempted in the
//! operator's config) no pod runs without the genuine sidecar, and nothing in
//! the pod can reach what only the sidecar may hold.
//!
//! The attacker here is anyone with `create pods` (or `patch pods`) in the
//! namespace. The mutating injector serves them; this validating check runs
//! after every mutation, on CREATE and UPDATE of pods and on the
//! `pods/ephemeralcontainers` subresource, and refuses:
//!
//! - opt-out annotations (an exemption is a cluster-admin decision);
//! - a pod without the sidecar, or with a sidecar or `streamgate-*` volumes
//!   other than the ones the injector builds for this very pod (a pre-set
//!   `streamgate.dev/injected` annotation or an author-written
//!   `streamgate-proxy` container: any image, any policy source);
//! - any other container — regular, init or ephemeral — mounting a
//!   `streamgate-*` volume, or taking the Secrets the sidecar uses (broker
//!   credential, masking keys) as a volume or an env var;
//! - any change to the sidecar container after admission;
//! - `shareProcessNamespace`, `hostNetwork`, `hostPID`, `hostIPC` and
//!   privileged containers (each a way into the sidecar's memory, files or
//!   loopback port).
//!
//! Every refusal names the container, volume or field and why.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, Volume, VolumeMount};
use serde_json::Value;

use super::inject::{self, InjectionInput, Outcome};
use crate::config::{
    ANNOTATION_INJECT, ANNOTATION_INJECTED, ANNOTATION_UPSTREAM_SECRET, InjectorSettings,
    LABEL_INJECTED, LABEL_NAMESPACE_INJECT, SIDECAR_NAME,
};

/// Volume names the injector gives the sidecar all start with this.
pub const VOLUME_PREFIX: &str = "streamgate-";

/// What is being admitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change<'a> {
    Create,
    /// A pod UPDATE (`kubectl patch pod`, labels, image changes).
    Update {
        old: &'a Pod,
    },
    /// The `pods/ephemeralcontainers` subresource (`kubectl debug`).
    EphemeralContainers {
        old: &'a Pod,
    },
}

/// One admission to check.
#[derive(Debug)]
pub struct GuardInput<'a> {
    pub change: Change<'a>,
    pub pod: &'a Pod,
    pub namespace: &'a str,
    pub namespace_labels: &'a BTreeMap<String, String>,
    /// Secrets named by the namespace's MaskingRules (the sidecar mounts them).
    pub masking_secrets: &'a BTreeSet<String>,
}

/// Is this namespace governed (every pod must carry the sidecar)?
pub fn governed(
    namespace: &str,
    labels: &BTreeMap<String, String>,
    settings: &InjectorSettings,
) -> bool {
    namespace != settings.operator_namespace
        && !settings.exempt_namespaces.contains(namespace)
        && labels.get(LABEL_NAMESPACE_INJECT).map(String::as_str) == Some("enabled")
}

/// The reasons to refuse; empty when the pod may be admitted.
pub fn review(input: &GuardInput<'_>, settings: &InjectorSettings) -> Vec<String> {
    if !governed(input.namespace, input.namespace_labels, settings) {
        return Vec::new();
    }
    let ns = input.namespace;
    let pod = input.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let mut refusals = Vec::new();

    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    if annotations.get(ANNOTATION_INJECT).map(String::as_str) == Some("false") {
        refusals.push(format!(
            "annotation {ANNOTATION_INJECT}=\"false\": pods in the governed namespace {ns} cannot opt out of \
             the streamgate sidecar; an exemption is a cluster-admin decision (the operator's --exempt-namespaces)"
        ));
    }
    host_access(&spec, &mut refusals);
    secret_access(&spec, &annotations, input.masking_secrets, &mut refusals);

    match input.change {
        Change::Create => genuine_sidecar(input, &spec, settings, &mut refusals),
        Change::Update { old } | Change::EphemeralContainers { old } => {
            let before = old.spec.clone().unwrap_or_default();
            if sidecar_of(&before) != sidecar_of(&spec) {
                refusals.push(format!(
                    "container {SIDECAR_NAME} cannot change after admission (image, command, env, mounts and \
                     probes are set by the operator)"
                ));
            }
            if streamgate_volumes(&before) != streamgate_volumes(&spec) {
                refusals.push(format!(
                    "the {VOLUME_PREFIX}* volumes cannot change after admission"
                ));
            }
        }
    }
    refusals
}

fn host_access(spec: &PodSpec, refusals: &mut Vec<String>) {
    let why = [
        (
            spec.share_process_namespace,
            "shareProcessNamespace",
            "lets the app read the sidecar's memory and files through /proc",
        ),
        (
            spec.host_network,
            "hostNetwork",
            "puts the sidecar's loopback port on the node, reachable by every hostNetwork pod",
        ),
        (
            spec.host_pid,
            "hostPID",
            "lets the app see and trace the sidecar's process",
        ),
        (spec.host_ipc, "hostIPC", "shares IPC with the node"),
    ];
    for (set, field, reason) in why {
        if set == Some(true) {
            refusals.push(format!(
                "spec.{field}: true {reason}; not allowed in a governed namespace"
            ));
        }
    }
    for c in app_containers(spec) {
        let privileged = c
            .security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false);
        if privileged {
            refusals.push(format!(
                "container {:?} is privileged: it could read the sidecar's files and memory; not allowed in a governed namespace",
                c.name
            ));
        }
    }
}

/// Secrets only the sidecar may hold: the MaskingRules' hash keys, the
/// broker credential Secret an older pod annotation names, and the legacy
/// token Secrets of the `streamgate-sidecar` account.
fn secret_access(
    spec: &PodSpec,
    annotations: &BTreeMap<String, String>,
    masking_secrets: &BTreeSet<String>,
    refusals: &mut Vec<String>,
) {
    let mut guarded: BTreeSet<&str> = masking_secrets.iter().map(String::as_str).collect();
    if let Some(s) = annotations.get(ANNOTATION_UPSTREAM_SECRET) {
        guarded.insert(s.as_str());
    }
    let streamgate: BTreeSet<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.name.starts_with(VOLUME_PREFIX))
        .map(|v| v.name.as_str())
        .collect();
    // Volumes of the pod that carry a guarded Secret but are not the sidecar's own.
    let leaking: BTreeMap<&str, &str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| !streamgate.contains(v.name.as_str()))
        .filter_map(|v| secret_in_volume(v, &guarded).map(|s| (v.name.as_str(), s)))
        .collect();
    for (name, secret) in &leaking {
        refusals.push(format!(
            "volume {name:?} carries Secret {secret:?}, which only the streamgate sidecar may read"
        ));
    }
    for c in app_containers(spec) {
        for m in c.volume_mounts.iter().flatten() {
            if streamgate.contains(m.name.as_str()) || m.name.starts_with(VOLUME_PREFIX) {
                refusals.push(format!(
                    "container {:?} mounts the sidecar's volume {:?}; only {SIDECAR_NAME} may",
                    c.name, m.name
                ));
            }
        }
        for e in c.env.iter().flatten() {
            if let Some(secret) = secret_in_env(e, &guarded) {
                refusals.push(format!(
                    "container {:?} reads Secret {secret:?} into env {:?}; only the streamgate sidecar may read it",
                    c.name, e.name
                ));
            }
        }
        for from in c.env_from.iter().flatten() {
            if let Some(secret) = from
                .secret_ref
                .as_ref()
                .map(|s| s.name.as_str())
                .filter(|s| is_guarded(s, &guarded))
            {
                refusals.push(format!(
                    "container {:?} takes Secret {secret:?} as envFrom; only the streamgate sidecar may read it",
                    c.name
                ));
            }
        }
    }
}

/// Before Kubernetes 1.24 the token controller gives every ServiceAccount a
/// long-lived token Secret `<account>-token-<random>`; the sidecar account's
/// would carry its API rights (the sidecar role) into the app.
const LEGACY_SIDECAR_TOKEN_PREFIX: &str = "streamgate-sidecar-token-";

fn is_guarded(name: &str, guarded: &BTreeSet<&str>) -> bool {
    guarded.contains(name) || name.starts_with(LEGACY_SIDECAR_TOKEN_PREFIX)
}

fn secret_in_volume<'a>(v: &'a Volume, guarded: &BTreeSet<&str>) -> Option<&'a str> {
    if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
        return is_guarded(name, guarded).then_some(name);
    }
    v.projected
        .as_ref()?
        .sources
        .iter()
        .flatten()
        .filter_map(|p| p.secret.as_ref().map(|s| s.name.as_str()))
        .find(|name| is_guarded(name, guarded))
}

fn secret_in_env<'a>(e: &'a EnvVar, guarded: &BTreeSet<&str>) -> Option<&'a str> {
    let name = e
        .value_from
        .as_ref()?
        .secret_key_ref
        .as_ref()?
        .name
        .as_str();
    is_guarded(name, guarded).then_some(name)
}

/// Every container but the sidecar, with the mounts and env each declares
/// (regular, init and ephemeral containers alike).
fn app_containers(spec: &PodSpec) -> Vec<Container> {
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|e| Container {
            name: e.name.clone(),
            volume_mounts: e.volume_mounts.clone(),
            env: e.env.clone(),
            env_from: e.env_from.clone(),
            security_context: e.security_context.clone(),
            ..Default::default()
        });
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter(|c| c.name != SIDECAR_NAME)
        .cloned()
        .chain(ephemeral)
        .collect()
}

fn sidecar_of(spec: &PodSpec) -> Option<&Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find(|c| c.name == SIDECAR_NAME)
}

fn streamgate_volumes(spec: &PodSpec) -> Vec<&Volume> {
    spec.volumes
        .iter()
        .flatten()
        .filter(|v| v.name.starts_with(VOLUME_PREFIX))
        .collect()
}

/// On CREATE the pod has been through every mutating webhook, ours included.
/// Rebuild what the injector makes for this pod (stripped of anything that
/// claims to be the sidecar) and require exactly that.
fn genuine_sidecar(
    input: &GuardInput<'_>,
    spec: &PodSpec,
    settings: &InjectorSettings,
    refusals: &mut Vec<String>,
) {
    let Some(found) = sidecar_of(spec) else {
        refusals.push(format!(
            "no {SIDECAR_NAME} container: every pod in the governed namespace {} runs with the streamgate sidecar \
             (was injection skipped? a pre-set {ANNOTATION_INJECTED} annotation or hostNetwork prevents it)",
            input.namespace
        ));
        return;
    };
    let stripped = strip_sidecar(input.pod);
    let expected = match inject::plan(
        &InjectionInput {
            pod: &stripped,
            namespace: input.namespace,
            namespace_labels: input.namespace_labels,
            masking_secrets: input.masking_secrets,
        },
        settings,
    ) {
        Ok(Outcome::Inject { patch, .. }) => apply(&stripped, &patch),
        // The injector's own refusal reaches the user from the mutating webhook.
        Ok(Outcome::Skip { .. }) | Err(_) => None,
    };
    let Some(expected) = expected else {
        refusals.push(format!(
            "container {SIDECAR_NAME} is not one the operator injected for this pod"
        ));
        return;
    };
    let want = expected.spec.unwrap_or_default();
    let differs = match sidecar_of(&want) {
        Some(w) => same_as_injected(w, found).err(),
        None => Some("$".to_string()),
    };
    if let Some(at) = differs {
        refusals.push(format!(
            "container {SIDECAR_NAME} is not the sidecar the operator injects (image {:?}; differs at {at}): \
             its image, command, env, mounts or security settings were written by the pod's author",
            found.image.as_deref().unwrap_or("")
        ));
    }
    let mut got_volumes = streamgate_volumes(spec);
    let mut want_volumes = streamgate_volumes(&want);
    got_volumes.sort_by(|a, b| a.name.cmp(&b.name));
    want_volumes.sort_by(|a, b| a.name.cmp(&b.name));
    let same = got_volumes.len() == want_volumes.len()
        && want_volumes
            .iter()
            .zip(&got_volumes)
            .all(|(w, g)| same_as_injected(*w, *g).is_ok());
    if !same {
        refusals.push(format!(
            "the {VOLUME_PREFIX}* volumes are not the ones the operator injects for this pod"
        ));
    }
}

/// The pod as its author would have sent it without any sidecar.
fn strip_sidecar(pod: &Pod) -> Pod {
    let mut pod = pod.clone();
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.remove(ANNOTATION_INJECTED);
    }
    if let Some(l) = pod.metadata.labels.as_mut() {
        l.remove(LABEL_INJECTED);
    }
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers.retain(|c| c.name != SIDECAR_NAME);
        if let Some(init) = spec.init_containers.as_mut() {
            init.retain(|c| c.name != SIDECAR_NAME);
            if init.is_empty() {
                spec.init_containers = None;
            }
        }
        if let Some(vols) = spec.volumes.as_mut() {
            vols.retain(|v| !v.name.starts_with(VOLUME_PREFIX));
            if vols.is_empty() {
                spec.volumes = None;
            }
        }
        // Mounts of sidecar volumes are refused separately; drop them so the
        // rebuilt pod stays comparable.
        for c in spec.containers.iter_mut() {
            drop_streamgate_mounts(c.volume_mounts.as_mut());
        }
    }
    pod
}

fn drop_streamgate_mounts(mounts: Option<&mut Vec<VolumeMount>>) {
    if let Some(m) = mounts {
        m.retain(|m| !m.name.starts_with(VOLUME_PREFIX));
    }
}

/// Fields the API server fills in with defaults when it stores what the
/// injector wrote; any other field beyond the injector's is the author's.
const SERVER_DEFAULTS: &[&str] = &[
    "terminationMessagePath",
    "successThreshold",
    "scheme",
    "apiVersion",
    "defaultMode",
];

/// `found` is what the injector wrote (`want`) as the API server stores it:
/// every field the injector set has its value, lists have the same length,
/// and nothing else is set but server defaults. `Err` names the first field
/// that differs.
fn same_as_injected<T: serde::Serialize>(want: &T, found: &T) -> Result<(), String> {
    match (serde_json::to_value(want), serde_json::to_value(found)) {
        (Ok(w), Ok(f)) => json_within(&w, &f, "$"),
        _ => Err("$".to_string()),
    }
}

fn json_within(want: &Value, found: &Value, at: &str) -> Result<(), String> {
    match (want, found) {
        (Value::Object(w), Value::Object(f)) => {
            // Go omits zero values (`readOnly: false`) when it stores the object.
            for (k, wv) in w.iter().filter(|(_, v)| !is_zero(v)) {
                let here = format!("{at}.{k}");
                json_within(wv, f.get(k).unwrap_or(&Value::Null), &here)?;
            }
            match f.iter().find(|(k, fv)| {
                w.get(*k).is_none_or(is_zero)
                    && !is_zero(fv)
                    && !SERVER_DEFAULTS.contains(&k.as_str())
            }) {
                Some((k, _)) => Err(format!("{at}.{k}")),
                None => Ok(()),
            }
        }
        (Value::Array(w), Value::Array(f)) if w.len() == f.len() => w
            .iter()
            .zip(f)
            .enumerate()
            .try_for_each(|(i, (a, b))| json_within(a, b, &format!("{at}[{i}]"))),
        (w, f) if w == f => Ok(()),
        _ => Err(at.to_string()),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn apply(pod: &Pod, patch: &json_patch::Patch) -> Option<Pod> {
    let mut doc: Value = serde_json::to_value(pod).ok()?;
    json_patch::patch(&mut doc, patch).ok()?;
    serde_json::from_value(doc).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> InjectorSettings {
        InjectorSettings {
            default_upstream: Some("kafka:9092".into()),
            ..Default::default()
        }
    }

    fn governed_labels() -> BTreeMap<String, String> {
        BTreeMap::from([(LABEL_NAMESPACE_INJECT.to_string(), "enabled".to_string())])
    }

    /// The pod as the API server holds it after our injector ran.
    fn injected(spec: Value) -> Pod {
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap();
        let labels = governed_labels();
        let secrets = BTreeSet::new();
        let input = InjectionInput {
            pod: &pod,
            namespace: "ns",
            namespace_labels: &labels,
            masking_secrets: &secrets,
        };
        match inject::plan(&input, &settings()).unwrap() {
            Outcome::Inject { patch, .. } => apply(&pod, &patch).unwrap(),
            Outcome::Skip { .. } => pod,
        }
    }

    fn check(change: Change<'_>, pod: &Pod) -> Vec<String> {
        let labels = governed_labels();
        let secrets = BTreeSet::new();
        review(
            &GuardInput {
                change,
                pod,
                namespace: "ns",
                namespace_labels: &labels,
                masking_secrets: &secrets,
            },
            &settings(),
        )
    }

    /// The native sidecar (first init container) of an injected pod.
    fn sidecar_mut(pod: &mut Pod) -> &mut Container {
        &mut pod.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0]
    }

    fn app() -> Value {
        json!({"name": "app", "image": "app:1"})
    }

    #[test]
    fn the_injected_pod_is_admitted_and_host_access_is_refused_field_by_field() {
        assert!(check(Change::Create, &injected(json!({"containers": [app()]}))).is_empty());
        for (field, says) in [
            ("hostPID", "hostPID"),
            ("hostIPC", "hostIPC"),
            ("shareProcessNamespace", "/proc"),
        ] {
            let pod = injected(json!({field: true, "containers": [app()]}));
            let refusals = check(Change::Create, &pod);
            assert!(
                refusals.iter().any(|r| r.contains(says)),
                "{field}: {refusals:?}"
            );
        }
        // hostNetwork pods are not injected at all: refused for that and for the field.
        let refusals = check(
            Change::Create,
            &injected(json!({"hostNetwork": true, "containers": [app()]})),
        );
        assert!(
            refusals.iter().any(|r| r.contains("hostNetwork")),
            "{refusals:?}"
        );
        assert!(
            refusals
                .iter()
                .any(|r| r.contains("no streamgate-proxy container")),
            "{refusals:?}"
        );
        let privileged =
            json!({"name": "app", "image": "app:1", "securityContext": {"privileged": true}});
        let refusals = check(
            Change::Create,
            &injected(json!({"containers": [privileged]})),
        );
        assert!(
            refusals.iter().any(|r| r.contains("\"app\" is privileged")),
            "{refusals:?}"
        );
    }

    #[test]
    fn the_sidecar_accounts_legacy_token_secret_is_refused_as_volume_and_env() {
        let vol = json!({"volumes": [{"name": "t", "secret": {"secretName": "streamgate-sidecar-token-x7k2p"}}],
            "containers": [app()]});
        let refusals = check(Change::Create, &injected(vol));
        assert!(
            refusals
                .iter()
                .any(|r| r.contains("streamgate-sidecar-token-x7k2p")),
            "{refusals:?}"
        );
        let env = json!({"name": "app", "image": "app:1", "env": [{"name": "T", "valueFrom":
            {"secretKeyRef": {"name": "streamgate-sidecar-token-x7k2p", "key": "token"}}}]});
        let refusals = check(Change::Create, &injected(json!({"containers": [env]})));
        assert!(
            refusals.iter().any(|r| r.contains("into env \"T\"")),
            "{refusals:?}"
        );
    }

    #[test]
    fn ephemeral_containers_cannot_mount_the_sidecar_volumes_nor_change_it() {
        let old = injected(json!({"containers": [app()]}));
        let mut debug = old.clone();
        let spec = debug.spec.as_mut().unwrap();
        spec.ephemeral_containers = Some(vec![
            serde_json::from_value(json!({
                "name": "debugger", "image": "busybox",
                "volumeMounts": [{"name": "streamgate-spool", "mountPath": "/spool"}]
            }))
            .unwrap(),
        ]);
        let refusals = check(Change::EphemeralContainers { old: &old }, &debug);
        assert!(
            refusals
                .iter()
                .any(|r| r.contains("\"debugger\" mounts the sidecar's volume")),
            "{refusals:?}"
        );

        let mut plain_debug = old.clone();
        plain_debug.spec.as_mut().unwrap().ephemeral_containers = Some(vec![
            serde_json::from_value(json!({"name": "debugger", "image": "busybox"})).unwrap(),
        ]);
        assert!(check(Change::EphemeralContainers { old: &old }, &plain_debug).is_empty());

        let mut swapped = old.clone();
        let sidecar = swapped
            .spec
            .as_mut()
            .unwrap()
            .init_containers
            .as_mut()
            .unwrap();
        sidecar[0].image = Some("attacker/proxy:1".into());
        let refusals = check(Change::Update { old: &old }, &swapped);
        assert!(
            refusals
                .iter()
                .any(|r| r.contains("cannot change after admission")),
            "{refusals:?}"
        );
    }

    #[test]
    fn an_extra_field_on_the_sidecar_is_caught_but_server_defaults_are_not() {
        let genuine = injected(json!({"containers": [app()]}));
        let mut defaulted = genuine.clone();
        let c = sidecar_mut(&mut defaulted);
        c.termination_message_path = Some("/dev/termination-log".into());
        assert!(
            check(Change::Create, &defaulted).is_empty(),
            "server defaults are not the author's"
        );
        let mut tampered = genuine.clone();
        let c = sidecar_mut(&mut tampered);
        c.command = Some(vec!["sh".into(), "-c".into(), "exec nc -l 9092".into()]);
        let refusals = check(Change::Create, &tampered);
        assert!(
            refusals.iter().any(|r| r.contains("differs at $.command")),
            "{refusals:?}"
        );
    }

    #[test]
    fn exempt_and_unlabelled_namespaces_are_not_governed() {
        let mut s = settings();
        assert!(governed("ns", &governed_labels(), &s));
        assert!(!governed("ns", &BTreeMap::new(), &s));
        assert!(!governed(
            &s.operator_namespace.clone(),
            &governed_labels(),
            &s
        ));
        s.exempt_namespaces.insert("ns".into());
        assert!(!governed("ns", &governed_labels(), &s));
    }
}
