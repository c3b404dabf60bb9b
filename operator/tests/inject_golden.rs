//! Sidecar injection against real AdmissionReview JSON (pods as kubectl and
//! a ReplicaSet create them), compared with golden files under
//! `tests/golden/inject/`. Regenerate with `UPDATE_GOLDEN=1` and review the diff.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::AdmissionReview;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use streamgate_operator::config::InjectorSettings;
use streamgate_operator::metrics::Metrics;
use streamgate_operator::webhook::handlers::{WebhookState, mutate_pod};
use streamgate_operator::webhook::lookup::StaticLookup;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/inject")
}

fn state() -> WebhookState<StaticLookup> {
    let mut lookup = StaticLookup::default();
    lookup.namespace_labels.insert(
        "billing".into(),
        BTreeMap::from([("streamgate.dev/inject".to_string(), "enabled".to_string())]),
    );
    lookup.namespace_labels.insert(
        "clinical".into(),
        BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            "clinical".to_string(),
        )]),
    );
    lookup.masking_secrets.insert(
        "clinical".into(),
        BTreeSet::from(["masking-key".to_string()]),
    );
    WebhookState {
        settings: InjectorSettings {
            proxy_image: "streamgate/proxy:test".into(),
            default_upstream: Some("kafka.kafka.svc:9092".into()),
            // clinical's broker credential is configured in the operator.
            credential_namespaces: BTreeSet::from(["clinical".to_string()]),
            operator_ca_pem: Some(
                "-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n".into(),
            ),
            ..Default::default()
        },
        lookup,
        metrics: Arc::new(Metrics::default()),
    }
}

/// The parts of the response a user would notice: allowed, message, warnings and the decoded patch.
async fn respond(state: &WebhookState<StaticLookup>, review: Value) -> Value {
    let review: AdmissionReview<Pod> = serde_json::from_value(review).unwrap();
    let out = serde_json::to_value(mutate_pod(state, review).await).unwrap();
    let resp = &out["response"];
    // kube serialises the patch bytes as a JSON array of numbers (Go's
    // decoder accepts that for []byte); accept base64 too.
    let patch = match resp.get("patch") {
        Some(Value::String(b64)) => serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap(),
        Some(Value::Array(bytes)) => {
            let bytes: Vec<u8> = bytes
                .iter()
                .map(|b| u8::try_from(b.as_u64().unwrap()).unwrap())
                .collect();
            serde_json::from_slice(&bytes).unwrap()
        }
        _ => Value::Null,
    };
    json!({
        "uid": resp["uid"],
        "allowed": resp["allowed"],
        "message": resp["status"].get("message").cloned().unwrap_or(Value::Null),
        "warnings": resp.get("warnings").cloned().unwrap_or(Value::Null),
        "patchType": resp.get("patchType").cloned().unwrap_or(Value::Null),
        "patch": patch,
    })
}

fn case(name: &str) -> Value {
    let text = std::fs::read_to_string(golden_dir().join(format!("{name}.review.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

async fn check_golden(name: &str) -> Value {
    let got = respond(&state(), case(name)).await;
    let path = golden_dir().join(format!("{name}.expected.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("missing {}; run with UPDATE_GOLDEN=1", path.display())),
    )
    .unwrap();
    assert_eq!(got, want, "golden mismatch for {name}");
    got
}

/// Apply the patch to the request's pod and return the mutated pod JSON.
fn apply(review: &Value, patch: &Value) -> Value {
    let mut pod = review["request"]["object"].clone();
    let patch: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod
}

/// Every op is an `add`; the mutated pod is a valid Pod; re-invocation on it changes nothing.
async fn check_injected(name: &str, got: &Value) -> Value {
    assert_eq!(got["allowed"], true);
    assert_eq!(got["patchType"], "JSONPatch");
    let ops = got["patch"].as_array().unwrap();
    assert!(
        ops.iter().all(|op| op["op"] == "add"),
        "only add operations: {ops:?}"
    );
    let review = case(name);
    let pod = apply(&review, &got["patch"]);
    let _typed: Pod = serde_json::from_value(pod.clone()).unwrap();
    let mut again = review.clone();
    again["request"]["object"] = pod.clone();
    let second = respond(&state(), again).await;
    assert_eq!(second["allowed"], true);
    assert_eq!(
        second["patch"],
        Value::Null,
        "re-invocation must not patch again"
    );
    let init = &pod["spec"]["initContainers"];
    assert_eq!(
        init[0]["name"], "streamgate-proxy",
        "the sidecar is the first init container"
    );
    assert_eq!(init[0]["restartPolicy"], "Always");
    assert_eq!(init[0]["startupProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(init[0]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(init[0]["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        init[0]["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(
        init[0]["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["streamgate.dev/injected"],
        "true"
    );
    assert_eq!(pod["metadata"]["labels"]["streamgate.dev/injected"], "true");
    // Secrets reach the sidecar only.
    for c in pod["spec"]["containers"].as_array().unwrap() {
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            assert!(
                !m["mountPath"]
                    .as_str()
                    .unwrap()
                    .starts_with("/var/run/streamgate"),
                "app container {} mounts {m}",
                c["name"]
            );
        }
    }
    pod
}

fn env_of(container: &Value, name: &str) -> Option<Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
}

#[tokio::test]
async fn annotated_pod_from_kubectl_is_injected() {
    let got = check_golden("annotation").await;
    let pod = check_injected("annotation", &got).await;
    let app = &pod["spec"]["containers"][0];
    assert_eq!(
        env_of(app, "KAFKA_BOOTSTRAP_SERVERS").unwrap()["value"],
        "127.0.0.1:9092"
    );
    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!(
        env_of(sidecar, "STREAMGATE_UPSTREAM").unwrap()["value"],
        "kafka.kafka.svc:9092"
    );
    assert_eq!(
        env_of(sidecar, "STREAMGATE_LISTEN").unwrap()["value"],
        "127.0.0.1:9092"
    );
    assert_eq!(
        env_of(sidecar, "STREAMGATE_POD_NAME").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    // The namespace's MaskingRule key is mounted, optional.
    let vols = pod["spec"]["volumes"].as_array().unwrap();
    let mask = vols
        .iter()
        .find(|v| v["secret"]["secretName"] == "masking-key")
        .unwrap();
    assert_eq!(mask["secret"]["optional"], true);
}

#[tokio::test]
async fn dry_run_gets_the_same_answer() {
    let real = respond(&state(), case("annotation")).await;
    let dry = check_golden("annotation-dry-run").await;
    assert_eq!(real["patch"], dry["patch"]);
}

#[tokio::test]
async fn deployment_pod_in_labelled_namespace_is_injected() {
    let got = check_golden("namespace-label").await;
    let ops = got["patch"].as_array().unwrap();
    // No annotations on the pod: the map is created, not appended to.
    assert!(ops.iter().any(|op| op["path"] == "/metadata/annotations"));
    let pod = check_injected("namespace-label", &got).await;
    assert!(
        pod["metadata"].get("name").is_none(),
        "generateName pods stay nameless"
    );
}

#[tokio::test]
async fn opt_out_wins_over_the_namespace_label() {
    let got = check_golden("opt-out").await;
    assert_eq!(got["allowed"], true);
    assert_eq!(got["patch"], Value::Null);
}

#[tokio::test]
async fn pods_that_did_not_ask_are_left_alone() {
    let got = check_golden("not-requested").await;
    assert_eq!(got["patch"], Value::Null);
}

#[tokio::test]
async fn already_injected_pod_is_not_patched_again() {
    let got = check_golden("already-injected").await;
    assert_eq!(got["patch"], Value::Null);
}

#[tokio::test]
async fn host_network_pod_is_skipped_with_a_warning() {
    let got = check_golden("host-network").await;
    assert_eq!(got["allowed"], true);
    assert_eq!(got["patch"], Value::Null);
    assert!(got["warnings"][0].as_str().unwrap().contains("hostNetwork"));
}

#[tokio::test]
async fn every_app_container_gets_the_bootstrap_env_and_the_credential_stays_in_the_sidecar() {
    let got = check_golden("multiple-containers").await;
    let pod = check_injected("multiple-containers", &got).await;
    for c in pod["spec"]["containers"].as_array().unwrap() {
        assert_eq!(
            env_of(c, "KAFKA_BOOTSTRAP_SERVERS").unwrap()["value"],
            "127.0.0.1:19092",
            "{}",
            c["name"]
        );
    }
    assert_eq!(
        env_of(&pod["spec"]["containers"][0], "LOG_LEVEL").unwrap()["value"],
        "info",
        "existing env kept"
    );
    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!(
        env_of(sidecar, "STREAMGATE_UPSTREAM").unwrap()["value"],
        "kafka-0.kafka.kafka.svc:9093,kafka-1.kafka.kafka.svc:9093"
    );
    // The credential is not in the pod at all: the sidecar gets it from its
    // operator session (the old upstream-secret annotation is ignored, with a warning).
    assert!(env_of(sidecar, "STREAMGATE_UPSTREAM_CREDENTIALS").is_none());
    assert_eq!(
        env_of(sidecar, "STREAMGATE_OPERATOR_URL").unwrap()["value"],
        "https://streamgate-webhook.streamgate-system.svc:443"
    );
    assert_eq!(
        env_of(sidecar, "STREAMGATE_SIDECAR_TOKEN_FILE").unwrap()["value"],
        "/var/run/streamgate/sidecar-token/token"
    );
    assert_eq!(
        env_of(sidecar, "STREAMGATE_UPSTREAM_SASL_MECHANISM").unwrap()["value"],
        "SCRAM-SHA-512"
    );
    let vols = pod["spec"]["volumes"].as_array().unwrap();
    assert!(
        !vols
            .iter()
            .any(|v| v["secret"]["secretName"] == "kafka-gateway"),
        "no Secret of the app's namespace carries the credential"
    );
    assert!(
        got["warnings"]
            .to_string()
            .contains("streamgate.dev/upstream-secret is ignored"),
        "{}",
        got["warnings"]
    );
    // The session token: audience streamgate.dev/sidecar, mounted by the sidecar only.
    let token = vols
        .iter()
        .find(|v| v["name"] == "streamgate-sidecar-token")
        .unwrap();
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "streamgate.dev/sidecar"
    );
    // The sidecar's in-cluster mount carries no token of the app's account.
    let kube_api = vols
        .iter()
        .find(|v| v["name"] == "streamgate-kube-api")
        .unwrap();
    assert!(
        !kube_api.to_string().contains("serviceAccountToken"),
        "{kube_api}"
    );
    for c in pod["spec"]["containers"].as_array().unwrap() {
        assert!(
            !c["volumeMounts"].to_string().contains("streamgate-"),
            "{} mounts a sidecar volume",
            c["name"]
        );
    }
}

#[tokio::test]
async fn sidecar_goes_before_existing_init_containers() {
    let got = check_golden("existing-init-containers").await;
    let pod = check_injected("existing-init-containers", &got).await;
    let init = pod["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 2);
    assert_eq!(init[1]["name"], "wait-for-schema");
}

#[tokio::test]
async fn the_operators_namespace_is_never_injected() {
    let got = check_golden("operator-namespace").await;
    assert_eq!(got["patch"], Value::Null);
}

#[tokio::test]
async fn a_bad_annotation_refuses_the_pod_and_says_which() {
    let got = check_golden("bad-listen-port").await;
    assert_eq!(got["allowed"], false);
    assert!(
        got["message"]
            .as_str()
            .unwrap()
            .contains("streamgate.dev/listen-port=\"kafka\""),
        "{}",
        got["message"]
    );
}

/// Kubernetes < 1.29 (the live tests' 1.20 among them): the same pod gets the
/// sidecar as its first regular container, held by the `wait-ready` hook.
#[tokio::test]
async fn annotated_pod_on_a_server_without_native_sidecars_gets_a_regular_first_container() {
    let mut state = state();
    state.settings.sidecar_mode = streamgate_operator::config::SidecarMode::Regular;
    let got = respond(&state, case("annotation")).await;
    let path = golden_dir().join("annotation-regular-sidecar.expected.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let want: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(got, want, "golden mismatch for the regular sidecar shape");

    let review = case("annotation");
    let pod = apply(&review, &got["patch"]);
    let _typed: Pod = serde_json::from_value(pod.clone()).unwrap();
    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers[0]["name"], "streamgate-proxy");
    assert!(containers[0]["restartPolicy"].is_null());
    assert_eq!(
        containers[0]["lifecycle"]["postStart"]["exec"]["command"][1],
        "wait-ready"
    );
    assert!(pod["spec"]["initContainers"].is_null());
    assert!(
        containers[1..]
            .iter()
            .all(|c| c["env"].to_string().contains("KAFKA_BOOTSTRAP_SERVERS")),
        "every app container still gets the bootstrap env: {containers:?}"
    );
    let mut again = review.clone();
    again["request"]["object"] = pod;
    let second = respond(&state, again).await;
    assert_eq!(
        second["patch"],
        Value::Null,
        "re-invocation must not patch again"
    );
}
