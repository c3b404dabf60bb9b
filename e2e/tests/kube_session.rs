//! The broker credential and the sidecar's API identity, out of the app's
//! reach, on the live API server (1.20): the operator's session endpoint
//! called exactly as an injected sidecar calls it, with tokens minted by the
//! TokenRequest API the way the kubelet projects them (audience, bound to
//! the pod). Each attack of issue 11's "secrets the app cannot reach" and
//! "least privilege" items is a case here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use streamgate_e2e::kube::{ControlPlane, Installed, install_product_with_values};

use streamgate_crds::contract::SIDECAR_TOKEN_AUDIENCE as AUDIENCE;
const PASSWORD: &str = "s3cret-broker-pass";
const GOVERNED: &str = "clinical";
/// Not governed, but the operator's config names a credential for it.
const LOOSE: &str = "loose";

fn install() -> Installed {
    let credentials = json!({GOVERNED: "kafka-clinical", LOOSE: "kafka-clinical"});
    let inst = install_product_with_values(
        1,
        "127.0.0.1:9",
        &[(
            "STREAMGATE_SIDECAR_CREDENTIALS_YAML",
            &credentials.to_string(),
        )],
        json!({"sidecarCredentials": credentials}),
        |cp| {
            // The credential lives in the operator's namespace only.
            cp.apply_ok(
                "admin",
                &format!(
                    "apiVersion: v1\nkind: Secret\nmetadata: {{name: kafka-clinical, namespace: streamgate-system}}\n\
                     stringData:\n  credentials: |\n    username: gateway\n    password: {PASSWORD}\n"
                ),
            );
        },
    );
    let cp = &inst.cp;
    cp.namespace(GOVERNED, &[("streamgate.dev/inject", "enabled")]);
    cp.namespace(LOOSE, &[]);
    inst
}

fn pod(cp: &ControlPlane, ns: &str, name: &str, sa: &str, inject: Option<&str>) -> String {
    let annotations = inject
        .map(|v| format!("  annotations: {{streamgate.dev/inject: \"{v}\"}}\n"))
        .unwrap_or_default();
    cp.apply_ok(
        "admin",
        &format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {sa}, namespace: {ns}}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n{annotations}\
             spec:\n  serviceAccountName: {sa}\n  automountServiceAccountToken: false\n  containers:\n\
             \x20 - {{name: app, image: busybox, command: [sleep, infinity]}}\n"
        ),
    );
    cp.get_json("pod", ns, name).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The operator's CA, as the injector hands it to sidecars.
fn operator_ca(inst: &Installed) -> std::path::PathBuf {
    let secret = inst
        .cp
        .get_json("secret", "streamgate-system", "streamgate-webhook-tls")
        .unwrap();
    use base64::Engine as _;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["ca.crt"].as_str().unwrap())
        .unwrap();
    let path = inst.cp.dir.path().join("operator-ca.crt");
    std::fs::write(&path, pem).unwrap();
    path
}

/// POST the session as the sidecar does: (HTTP status, JSON answer).
fn session(inst: &Installed, token: Option<&str>) -> (u16, Value) {
    let url = format!(
        "https://127.0.0.1:{}{}",
        inst.operators[0].webhook_port,
        streamgate_crds::contract::SESSION_PATH
    );
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", "POST", "-w", "\n%{http_code}", "--cacert"])
        .arg(operator_ca(inst))
        .arg(&url);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn refused(answer: &(u16, Value), status: u16, says: &str) {
    assert_eq!(answer.0, status, "{:?}", answer.1);
    let msg = answer.1["error"].as_str().unwrap_or_default();
    assert!(msg.contains(says), "the refusal says why: {msg}");
    assert!(!answer.1.to_string().contains(PASSWORD));
}

#[test]
fn only_the_genuine_sidecar_gets_the_credential_and_the_app_gets_nothing() {
    let inst = install();
    let cp = &inst.cp;
    let uid = pod(cp, GOVERNED, "intake-0", "intake", None);
    let stored = cp.get_json("pod", GOVERNED, "intake-0").unwrap();
    assert!(
        stored.to_string().contains(AUDIENCE),
        "the injector projected the sidecar's token"
    );
    let ttl = Duration::from_secs(600);
    let bound = Some(("intake-0", uid.as_str()));

    // No token at all.
    refused(&session(&inst, None), 401, "no bearer token");
    // The app's own token (the API server's audience), even bound to the pod.
    let app = cp.token_request_bound(GOVERNED, "intake", None, ttl, bound);
    refused(
        &session(&inst, Some(&app)),
        401,
        "not valid for audience streamgate.dev/sidecar",
    );
    // A token for another audience.
    let kafka = cp.token_request_bound(GOVERNED, "intake", Some("kafka"), ttl, bound);
    refused(&session(&inst, Some(&kafka)), 401, "not valid for audience");
    // The right audience, but bound to no pod (a TokenRequest anyone with
    // `create serviceaccounts/token` could make).
    let unbound = cp.token_request(GOVERNED, "intake", Some(AUDIENCE), ttl);
    refused(&session(&inst, Some(&unbound)), 401, "not bound to a pod");

    // The sidecar's projected token: credential and API token.
    let sidecar = cp.token_request_bound(GOVERNED, "intake", Some(AUDIENCE), ttl, bound);
    let (status, answer) = session(&inst, Some(&sidecar));
    assert_eq!(status, 200, "{answer}\n{}", inst.operator_logs());
    assert_eq!(answer["credentials"]["username"], "gateway");
    assert_eq!(answer["credentials"]["password"], PASSWORD);
    let api_token = answer["kubeToken"].as_str().unwrap().to_string();
    assert!(
        !inst.operator_logs().contains(PASSWORD),
        "the operator never logs the credential"
    );

    // The credential is in no Secret (nor pod) of the app's namespace.
    let secrets = cp.kubectl_ok("admin", &["get", "secrets", "-n", GOVERNED, "-o", "json"]);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(PASSWORD);
    assert!(!secrets.contains(PASSWORD) && !secrets.contains(&b64[..16]));
    let pods = cp.kubectl_ok("admin", &["get", "pods", "-n", GOVERNED, "-o", "json"]);
    assert!(!pods.contains(PASSWORD) && !pods.contains("kafka-clinical"));

    // The session's API token is streamgate-sidecar's (short-lived; the API
    // server binds tokens only to pods running as their own account).
    let whoami = |token: &str, args: &[&str]| -> std::process::Output {
        let kc = cp.dir.path().join("sidecar-session.kubeconfig");
        let admin = std::fs::read_to_string(cp.kubeconfig("admin")).unwrap();
        std::fs::write(&kc, admin.replace("admin-token", token)).unwrap();
        cp.kubectl_with(&kc, args, None)
    };
    let can = |token: &str, verb: &str, what: &str| {
        let out = whoami(token, &["auth", "can-i", verb, what, "-n", GOVERNED]);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can(&api_token, "watch", "streampolicies.streamgate.dev"));
    assert!(can(&api_token, "create", "accessapprovals.streamgate.dev"));
    assert!(!can(&api_token, "get", "secrets"));
    // The app's ServiceAccount: no streamgate rights at all.
    for (verb, what) in [
        ("create", "accessapprovals.streamgate.dev"),
        ("list", "accessapprovals.streamgate.dev"),
        ("create", "events"),
        ("create", "events.events.k8s.io"),
    ] {
        assert!(!can(&app, verb, what), "the app's token can {verb} {what}");
    }

    // Filing requests: for its pod's ServiceAccount yes, for another no.
    let request = |name: &str, requester: &str| {
        format!(
            "apiVersion: streamgate.dev/v1alpha1\nkind: AccessApproval\nmetadata: {{name: {name}, namespace: {GOVERNED}}}\n\
             spec:\n  requester: {{kind: ServiceAccount, name: {requester}}}\n  workload: {{pod: intake-0, serviceAccount: intake}}\n  policy: phi-access\n  rule: write\n\
             \x20 topics: [patient-records]\n  operations: [Write]\n  duration: 1h\n"
        )
    };
    let file = |token: &str, yaml: &str| {
        let kc = cp.dir.path().join("sidecar-session.kubeconfig");
        let admin = std::fs::read_to_string(cp.kubeconfig("admin")).unwrap();
        std::fs::write(&kc, admin.replace("admin-token", token)).unwrap();
        cp.kubectl_with(&kc, &["create", "--validate=false", "-f", "-"], Some(yaml))
    };
    let out = file(&api_token, &request("own", "intake"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = file(&api_token, &request("other", "billing-app"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a sidecar files for another account");
    assert!(
        err.contains("requester ServiceAccount \"billing-app\" is not the ServiceAccount \"intake\" of the pod clinical/intake-0"),
        "{err}"
    );
    // mallory (no rights) is stopped by RBAC; the app's token too.
    let out = file(&app, &request("by-app", "intake"));
    assert!(!out.status.success());
}

#[test]
fn pods_without_the_genuine_sidecar_or_outside_governed_namespaces_get_no_credential() {
    let inst = install();
    let cp = &inst.cp;
    let ttl = Duration::from_secs(600);
    // A pod without any sidecar (outside the governed namespace, where it may exist).
    let uid = pod(cp, LOOSE, "plain", "app", None);
    let t = cp.token_request_bound(LOOSE, "app", Some(AUDIENCE), ttl, Some(("plain", &uid)));
    refused(
        &session(&inst, Some(&t)),
        403,
        "carries no streamgate-proxy sidecar",
    );
    // Injected on request in a namespace that is not governed, but with a
    // credential configured: refused, with the misconfiguration named.
    let uid = pod(cp, LOOSE, "opted-in", "app", Some("true"));
    let t = cp.token_request_bound(LOOSE, "app", Some(AUDIENCE), ttl, Some(("opted-in", &uid)));
    refused(
        &session(&inst, Some(&t)),
        403,
        "is not governed by streamgate",
    );
    // A namespace the operator has no credential for: an API token, no credential.
    cp.namespace("other", &[]);
    let uid = pod(cp, "other", "opted-in", "app", Some("true"));
    let t = cp.token_request_bound(
        "other",
        "app",
        Some(AUDIENCE),
        ttl,
        Some(("opted-in", &uid)),
    );
    let (status, answer) = session(&inst, Some(&t));
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("credentials").is_none(), "{answer}");
    // A token of a pod that was deleted (bound tokens die with their pod).
    cp.kubectl_ok(
        "admin",
        &["delete", "pod", "-n", "other", "opted-in", "--wait=false"],
    );
    cp.eventually("the pod gone", Duration::from_secs(30), || {
        cp.get_json("pod", "other", "opted-in")
            .is_none()
            .then_some(())
    });
    let answer = session(&inst, Some(&t));
    assert!(answer.0 == 401 || answer.0 == 403, "{answer:?}");
}
