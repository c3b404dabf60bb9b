//! The data path through an injected pod on a live kube-apiserver (1.20, no
//! kubelet): scenarios 5, 6 and 7 of the Kubernetes-path issue, sidecar side.
//!
//! Each test installs the product as a user does (`install_product`: CRDs,
//! the Helm chart, the operator with its own ServiceAccount token), creates a
//! pod the operator injects, and starts that *stored* pod's sidecar the way
//! the kubelet would ([`streamgate_e2e::pod::EmulatedPod`]): the real
//! `streamgate-proxy` with the injected env, the pod's projected
//! ServiceAccount token and the mounted Secrets. The app side is a real Kafka
//! client (librdkafka via confluent-kafka, kcat) pointed at the injected
//! `KAFKA_BOOTSTRAP_SERVERS`; tansu is the broker, named by the pod's
//! `streamgate.dev/upstream` annotation so nothing of the injection is
//! overridden.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use streamgate_e2e::kube::{ControlPlane, Installed, install_product};
use streamgate_e2e::pod::EmulatedPod;
use streamgate_e2e::{Broker, Storage, check, example, kcat, phi_values, python_client};

#[path = "oidc_client/mod.rs"]
mod oidc_client;
use oidc_client::{Client, TOPIC_AUTH, refused_with};

const NS: &str = "clinical";

/// A pod asking for injection, its upstream the test's tansu.
fn pod_yaml(name: &str, service_account: &str, app_label: &str, upstream: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: {service_account}, namespace: {NS}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {NS}
  labels: {{app: {app_label}}}
  annotations:
    streamgate.dev/inject: "true"
    streamgate.dev/upstream: "{upstream}"
spec:
  serviceAccountName: {service_account}
  # No token controller runs on this control plane; the sidecar gets its own
  # projected token from the injector either way.
  automountServiceAccountToken: false
  containers:
    - name: app
      image: docker.io/library/python:3.12-slim
      command: ["sleep", "infinity"]
"#
    )
}

/// Product, namespace, broker: what every test here starts from.
fn setup(topics: &[&str]) -> (Installed, Broker) {
    let broker = Broker::start(Storage::Memory);
    for t in topics {
        broker.create_topic(t, 1);
    }
    let product = install_product(1, &broker.addr());
    product.cp.namespace(NS, &[]);
    (product, broker)
}

/// Create the pod (through the injecting webhook) and start its sidecar.
fn start_pod(product: &Installed, broker: &Broker, name: &str, sa: &str, app: &str) -> EmulatedPod {
    let cp = &product.cp;
    cp.apply_ok("admin", &pod_yaml(name, sa, app, &broker.addr()));
    // The operator binds the sidecar ClusterRole to the namespace's
    // streamgate-sidecar account (the sidecar's identity, from its session).
    // A kubelet would not wait for that (the session endpoint makes the
    // binding itself, the watches retry); the tests do, so that what they
    // time is the policy path, not RBAC propagation.
    cp.eventually(
        "the operator's streamgate-sidecar RoleBinding",
        Duration::from_secs(60),
        || {
            let out = cp.kubectl(
                "admin",
                &[
                    "auth",
                    "can-i",
                    "--as",
                    &format!("system:serviceaccount:{NS}:streamgate-sidecar"),
                    "watch",
                    "streampolicies.streamgate.dev",
                    "-n",
                    NS,
                ],
            );
            out.status.success().then_some(())
        },
    );
    let pod = EmulatedPod::start(cp, NS, name);
    assert_eq!(
        pod.sidecar_env("STREAMGATE_POLICY_KUBE"),
        Some("true"),
        "the injected sidecar reads its policy from the API server"
    );
    pod
}

/// Produce once through `app` until `want(answer)` holds; returns the answer
/// and how long it took.
fn produce_until(
    app: &mut Client,
    topic: &str,
    timeout: Duration,
    what: &str,
    pod: &EmulatedPod,
    want: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let v = app.produce(topic, 1);
        if want(&v) {
            return (v, start.elapsed());
        }
        assert!(
            start.elapsed() < timeout,
            "{what}: last answer {v} after {timeout:?}\nsidecar log:\n{}",
            pod.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ok(v: &Value) -> bool {
    v["ok"] == 1
}

fn refused(v: &Value) -> bool {
    refused_with(v, TOPIC_AUTH)
}

/// (offset, value) of `n` records of `topic` read with kcat (librdkafka) from the beginning.
fn kcat_read(bootstrap: &str, topic: &str, n: usize) -> Vec<(u64, String)> {
    let out = kcat(
        &[
            "-C",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-o",
            "beginning",
            "-c",
            &n.to_string(),
            "-e",
            "-q",
            "-f",
            "%o %s\n",
        ],
        None,
    );
    let text = check(&out, &format!("kcat read {topic} via {bootstrap}"));
    let got: Vec<(u64, String)> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (o, v) = l.split_once(' ').unwrap_or((l, ""));
            (o.parse().unwrap(), v.to_string())
        })
        .collect();
    assert_eq!(got.len(), n, "kcat read {topic} via {bootstrap}: {text}");
    got
}

const POLICY_V1: &str = r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: billing, namespace: clinical}
spec:
  workloadSelector: {matchLabels: {app: billing}}
  identity: {workloadIdentity: true}
  rules:
    - name: billing-app
      subjects: [{kind: ServiceAccount, name: billing-app}]
      topics: [orders, shipments, patient-events]
      operations: [Read, Write, Describe]
"#;

/// V1 plus an explicit Deny on writing `orders`.
fn policy_v2() -> String {
    format!(
        "{POLICY_V1}    - name: no-orders\n      subjects: [{{kind: ServiceAccount, name: billing-app}}]\n      \
         topics: [orders]\n      operations: [Write]\n      effect: Deny\n"
    )
}

/// Scenario 5: the sidecar of an injected pod enforces the StreamPolicy it
/// reads from the API server (allow, deny with TOPIC_AUTHORIZATION_FAILED,
/// masking with the key from a Secret), follows `kubectl apply` of an edit on
/// an open connection within 2 s, keeps the last policy while the API server
/// is down, and follows edits again once it is back.
#[test]
fn injected_sidecar_enforces_the_policy_from_the_api_server_and_survives_its_outage() {
    let (mut product, broker) = setup(&["orders", "shipments", "vault", "patient-events"]);
    let cp = &product.cp;
    cp.kubectl_ok(
        "admin",
        &[
            "create",
            "secret",
            "generic",
            "masking-key",
            "-n",
            NS,
            "--from-literal=hmac=e2e-only-hmac-key-0123456789abcdef",
        ],
    );
    cp.apply_ok(
        "admin",
        &std::fs::read_to_string(example("maskingrule.yaml")).unwrap(),
    );
    cp.apply_ok("admin", POLICY_V1);
    let pod = start_pod(
        &product,
        &broker,
        "billing-reader",
        "billing-app",
        "billing",
    );
    let bootstrap = pod.bootstrap("app");
    let dir = tempfile::tempdir().unwrap();
    let mut app = Client::start(dir.path(), &[&bootstrap, "plain"]);

    // Allowed: a round trip (the policy arrives from the API server shortly after start).
    produce_until(
        &mut app,
        "orders",
        Duration::from_secs(60),
        "orders allowed by V1",
        &pod,
        ok,
    );
    let v = app.produce("orders", 2);
    assert_eq!(v["ok"], 2, "{v}");
    let read = kcat_read(&bootstrap, "orders", 3);
    assert_eq!(
        read.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
        ["v0", "v0", "v1"],
        "what was written through the sidecar reads back through it"
    );

    // Denied: no rule for `vault`; refused with its Kafka code.
    let v = app.produce("vault", 1);
    assert!(refused(&v), "vault must be refused: {v}");

    // Masked: the fixtures produced straight to the broker read back through
    // the sidecar without a planted PHI value (MaskingRule from the API server,
    // HMAC key from the mounted Secret).
    let fixture = example("data/patient-events.jsonl");
    let out = python_client(
        "kclient.py",
        &[
            "confluent",
            "produce",
            "--bootstrap",
            &broker.addr(),
            "--topic",
            "patient-events",
            "--input",
            fixture.to_str().unwrap(),
        ],
    );
    check(&out, "produce the fixtures to tansu");
    let lines = streamgate_e2e::fixture_lines("patient-events.jsonl");
    let masked = kcat_read(&bootstrap, "patient-events", lines.len());
    let phi = phi_values();
    let mut changed = 0;
    for ((offset, value), original) in masked.iter().zip(&lines) {
        for s in &phi {
            assert!(
                !value.contains(s.as_str()),
                "planted PHI at offset {offset} through the sidecar"
            );
        }
        let v: Value = serde_json::from_str(value).expect("masked records stay JSON");
        assert!(v.is_object());
        changed += usize::from(value != original);
    }
    assert_eq!(
        changed,
        lines.len(),
        "every fixture record holds PHI and is masked"
    );
    // The Hash strategy keyed from the Secret: the MRN is a stable pseudonym, not a redaction.
    let first: Value = serde_json::from_str(&masked[0].1).unwrap();
    let mrn = first["patient"]["mrn"].as_str().unwrap_or_default();
    assert!(
        !mrn.is_empty() && !mrn.contains("MRN-"),
        "hashed MRN: {first}"
    );

    // An edit applied with kubectl changes the decision on the open connection.
    let applied = Instant::now();
    cp.apply_ok("admin", &policy_v2());
    let (v, took) = produce_until(
        &mut app,
        "orders",
        Duration::from_secs(30),
        "orders refused after the V2 edit",
        &pod,
        refused,
    );
    let since_apply = applied.elapsed();
    // The scenario's bound. The path is a watch event (milliseconds on
    // loopback) plus the sidecar's 100 ms debounce and one produce round trip;
    // 2 s leaves a wide margin for a loaded 2-core CI machine.
    assert!(
        since_apply < Duration::from_secs(2),
        "the edit took {since_apply:?} (produce loop {took:?}) to change the decision: {v}"
    );
    assert!(
        ok(&app.produce("shipments", 1)),
        "V2 still allows shipments"
    );

    // The API server goes away: traffic goes on under the last policy.
    product.cp.stop_apiserver();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pod.output().contains("policy not reloaded") {
        assert!(
            Instant::now() < deadline,
            "the sidecar never noticed the API server is gone:\n{}",
            pod.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..3 {
        let v = app.produce("shipments", 1);
        assert!(
            ok(&v),
            "allowed under the last policy while the API server is down: {v}"
        );
        let v = app.produce("orders", 1);
        assert!(refused(&v), "still denied under the last policy: {v}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(kcat_read(&bootstrap, "shipments", 4).len(), 4);

    // Back: edits are picked up again (V1 again: orders allowed).
    product.cp.start_apiserver();
    let cp = &product.cp;
    cp.apply_ok("admin", POLICY_V1);
    produce_until(
        &mut app,
        "orders",
        Duration::from_secs(90),
        "orders allowed again after the API server came back and V1 was re-applied",
        &pod,
        ok,
    );
    // What happened while the API server was away reaches `kubectl get
    // events` once it is back: the Events queued during the outage (the
    // rejected reloads among them) are published — after one warning in the
    // sidecar's log, not one per batch of records.
    cp.eventually(
        "the Events queued during the outage",
        Duration::from_secs(90),
        || {
            let out = cp.kubectl_ok("admin", &["get", "events", "-n", NS, "-o", "json"]);
            let list: Value = serde_json::from_str(&out).unwrap();
            list["items"]
                .as_array()?
                .iter()
                .any(|e| {
                    e["involvedObject"]["name"] == "billing-reader"
                        && e["reason"] == "PolicyReload"
                        && e["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("the previous policy stays in force"))
                })
                .then_some(())
        },
    );
    let warnings = pod
        .output()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("audit events: publishing failed"))
        .count();
    assert_eq!(warnings, 1, "one warning per outage:\n{}", pod.output());

    // The restart expired the sidecar's watches (410 Gone, "too old resource
    // version"): routine, kube's watcher re-lists by itself, so neither the
    // trail nor the log reports a failed reload for it.
    let expired_watch = |text: &str| text.contains("too old resource version");
    assert!(
        !pod.audit_export()
            .iter()
            .any(|r| r["reason"].as_str().is_some_and(expired_watch)),
        "a routine re-list recorded as a failed reload"
    );
    assert!(
        !pod.output()
            .lines()
            .any(|l| l.contains("policy not reloaded") && expired_watch(l)),
        "{}",
        pod.output()
    );
    drop(app);
    drop(pod);
}

const APPROVAL_POLICY: &str = r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: phi-access, namespace: clinical}
spec:
  identity: {workloadIdentity: true}
  rules:
    - name: intake-describe
      subjects: [{kind: ServiceAccount, name: intake}]
      topics: ["patient-*"]
      operations: [Describe]
    - name: write-patient-records
      subjects: [{kind: ServiceAccount, name: intake}]
      topics: [patient-records]
      operations: [Write]
      approval:
        approvers: [{kind: Group, name: compliance-officers}]
        maxDuration: 30s
"#;

/// RBAC lets the three identities below *try* to decide, so that each
/// refusal comes from the approval webhook and says why (RBAC alone would
/// only say "forbidden").
const DECIDERS_RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: accessapproval-deciders, namespace: clinical}
rules:
  - apiGroups: [streamgate.dev]
    resources: [accessapprovals]
    verbs: [get, list, watch, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: accessapproval-deciders, namespace: clinical}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: accessapproval-deciders}
subjects:
  - {kind: Group, name: compliance-officers, apiGroup: rbac.authorization.k8s.io}
  - {kind: User, name: mallory, apiGroup: rbac.authorization.k8s.io}
  - {kind: ServiceAccount, name: intake, namespace: clinical}
"#;

fn approvals(cp: &ControlPlane) -> Vec<Value> {
    let out = cp.kubectl_ok("admin", &["get", "accessapprovals", "-n", NS, "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn patch_decision(
    cp: &ControlPlane,
    kubeconfig: &std::path::Path,
    name: &str,
    body: &str,
) -> std::process::Output {
    cp.kubectl_with(
        kubeconfig,
        &[
            "patch",
            "accessapproval",
            name,
            "-n",
            NS,
            "--type",
            "merge",
            "-p",
            body,
        ],
        None,
    )
}

/// Scenario 6: the just-in-time approval loop, end to end on the API server.
#[test]
fn a_refused_write_is_approved_by_a_compliance_officer_with_kubectl_and_expires() {
    let (product, broker) = setup(&["patient-records"]);
    let cp = &product.cp;
    cp.apply_ok("admin", APPROVAL_POLICY);
    cp.apply_ok("admin", DECIDERS_RBAC);
    let pod = start_pod(&product, &broker, "intake-0", "intake", "intake");
    let bootstrap = pod.bootstrap("app");
    let dir = tempfile::tempdir().unwrap();
    let mut app = Client::start(dir.path(), &[&bootstrap, "plain"]);

    // Refused, and the sidecar files the request in the API server.
    let start = Instant::now();
    let aa = loop {
        let v = app.produce("patient-records", 1);
        assert!(refused(&v), "a write needing approval is refused: {v}");
        if let Some(aa) = approvals(cp).into_iter().next() {
            break aa;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no AccessApproval was created\nsidecar log:\n{}\noperator:\n{}",
            pod.output(),
            product.operator_logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(
        approvals(cp).len(),
        1,
        "one request, however often the client retried"
    );
    let name = aa["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(aa["spec"]["requester"]["kind"], "ServiceAccount", "{aa}");
    assert_eq!(aa["spec"]["requester"]["name"], "intake", "{aa}");
    assert_eq!(aa["spec"]["workload"]["pod"], "intake-0", "{aa}");
    assert_eq!(aa["spec"]["rule"], "write-patient-records");
    assert_eq!(aa["spec"]["topics"], serde_json::json!(["patient-records"]));
    assert_eq!(aa["spec"]["decision"], "Pending");
    let v = app.produce("patient-records", 1);
    assert!(refused(&v), "still pending, still refused: {v}");

    let approve = r#"{"spec":{"decision":"Approved"}}"#;
    // The requester itself (the pod's ServiceAccount) cannot approve its own request.
    let intake = cp.service_account_kubeconfig(NS, "intake", Duration::from_secs(600));
    let out = patch_decision(cp, &intake, &name, approve);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "self-approval must be refused");
    assert!(
        err.contains("is the requester and cannot decide their own request"),
        "the refusal says why: {err}"
    );
    // mallory is no approver of the rule.
    let out = patch_decision(cp, &cp.kubeconfig("mallory"), &name, approve);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mallory must be refused");
    assert!(
        err.contains("mallory is not an approver of rule \"write-patient-records\""),
        "the refusal says why: {err}"
    );
    let aa = cp.get_json("accessapproval", NS, &name).unwrap();
    assert_eq!(
        aa["spec"]["decision"], "Pending",
        "refused patches changed nothing"
    );

    // alice (compliance-officers) approves, claiming to be bob: decidedBy is alice.
    let out = patch_decision(
        cp,
        &cp.kubeconfig("alice"),
        &name,
        r#"{"spec":{"decision":"Approved","decidedBy":"bob"}}"#,
    );
    assert!(
        out.status.success(),
        "alice approves: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let aa = cp.get_json("accessapproval", NS, &name).unwrap();
    assert_eq!(aa["spec"]["decidedBy"], "alice", "{aa}");

    // The client's retry succeeds (the grant arrives through the watch).
    produce_until(
        &mut app,
        "patient-records",
        Duration::from_secs(20),
        "the write after alice's approval",
        &pod,
        ok,
    );
    let aa = cp.eventually("status.expiresAt", Duration::from_secs(10), || {
        let aa = cp.get_json("accessapproval", NS, &name)?;
        aa["status"]["expiresAt"].is_string().then_some(aa)
    });
    assert_eq!(aa["status"]["phase"], "Approved", "{aa}");
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(aa["status"]["expiresAt"].as_str().unwrap()).unwrap();

    // After expiresAt: refused again, and the object says Expired.
    let wait = (expires_at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    std::thread::sleep(wait + Duration::from_secs(1));
    let v = app.produce("patient-records", 1);
    assert!(refused(&v), "refused after the grant expired: {v}");
    let refused_at = chrono::Utc::now();
    cp.eventually("phase Expired", Duration::from_secs(30), || {
        let aa = cp.get_json("accessapproval", NS, &name)?;
        (aa["status"]["phase"] == "Expired").then_some(())
    });
    let out = cp.kubectl_ok("admin", &["get", "accessapprovals", "-n", NS]);
    assert!(out.contains(&name) && out.contains("Expired"), "{out}");

    // The audit spool: requested, used, and the refusal after expiry.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let records = pod.audit_export();
        let names = |kind: &str| {
            records.iter().any(|r| {
                r["kind"] == kind && r["reason"].as_str().is_some_and(|t| t.contains(&name))
            })
        };
        // A refused Produce names the topic in its reason (it carries no
        // `resources`: nothing was written).
        let refused_after_expiry = records.iter().any(|r| {
            r["kind"] == "Request"
                && r["api"] == "Produce"
                && r["decision"] != "Allow"
                && r["reason"]
                    .as_str()
                    .is_some_and(|t| t.contains("AccessApproval for topic patient-records"))
                && r["time"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t >= expires_at && t <= refused_at)
        });
        if names("ApprovalRequested") && names("ApprovalUsed") && refused_after_expiry {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the spool lacks ApprovalRequested/ApprovalUsed for {name} or the refusal after {expires_at}:\n{}",
            records
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // The operator's message says "request access again": the expired grant
    // must not block that. The next refused write (once the sidecar's
    // one-request-per-minute de-duplication lets it) files a new request
    // under a successor name, and alice can approve it in turn.
    let second = cp.eventually(
        "a new AccessApproval after the grant expired",
        Duration::from_secs(120),
        || {
            let v = app.produce("patient-records", 1);
            assert!(refused(&v), "refused until approved again: {v}");
            approvals(cp)
                .into_iter()
                .find(|a| a["metadata"]["name"] != name.as_str())
        },
    );
    let second_name = second["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(second["spec"]["decision"], "Pending", "{second}");
    assert_eq!(second["spec"]["requester"]["name"], "intake", "{second}");
    assert_eq!(second["spec"]["rule"], "write-patient-records");
    let first = cp.get_json("accessapproval", NS, &name).unwrap();
    assert_eq!(
        first["status"]["phase"], "Expired",
        "the record of the first grant stays"
    );
    let out = patch_decision(cp, &cp.kubeconfig("alice"), &second_name, approve);
    assert!(
        out.status.success(),
        "alice approves the new request: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    produce_until(
        &mut app,
        "patient-records",
        Duration::from_secs(20),
        "the write after the second approval",
        &pod,
        ok,
    );
    let records = pod.audit_export();
    assert!(
        records.iter().any(|r| r["kind"] == "ApprovalRequested"
            && r["reason"]
                .as_str()
                .is_some_and(|t| t.contains(&second_name) && t.contains("(created)"))),
        "the spool names the new request"
    );
    // One name for the requester throughout the spool: its requests and its
    // approval records alike.
    for r in records.iter().filter(|r| {
        ["ApprovalRequested", "ApprovalUsed", "Request"].contains(&r["kind"].as_str().unwrap_or(""))
            && r["subject"]["kind"] == "ServiceAccount"
    }) {
        assert_eq!(
            r["subject"]["name"], "system:serviceaccount:clinical:intake",
            "{r}"
        );
    }
}

const EVENTS_POLICY: &str = r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: orders-only, namespace: clinical}
spec:
  identity: {workloadIdentity: true}
  rules:
    - name: orders
      subjects: [{kind: ServiceAccount, name: shop}]
      topics: [orders]
      operations: [Write, Describe]
"#;

/// Scenario 7: `kubectl get events` shows the sidecar's aggregated audit
/// Events about its pod (allowed and denied traffic, one Event per subject,
/// topic, decision and minute).
#[test]
fn kubectl_get_events_shows_the_sidecars_aggregated_audit_events() {
    let (product, broker) = setup(&["orders", "vault"]);
    let cp = &product.cp;
    cp.apply_ok("admin", EVENTS_POLICY);
    let pod = start_pod(&product, &broker, "shop-0", "shop", "shop");
    let dir = tempfile::tempdir().unwrap();
    let mut app = Client::start(dir.path(), &[&pod.bootstrap("app"), "plain"]);
    produce_until(
        &mut app,
        "orders",
        Duration::from_secs(60),
        "orders allowed",
        &pod,
        ok,
    );
    for _ in 0..10 {
        assert!(ok(&app.produce("orders", 1)));
        assert!(refused(&app.produce("vault", 1)));
    }

    // Aggregates are published when their minute closes.
    let events = cp.eventually(
        "AccessAllowed and AccessDenied Events about shop-0",
        Duration::from_secs(150),
        || {
            let out = cp.kubectl_ok("admin", &["get", "events", "-n", NS, "-o", "json"]);
            let list: Value = serde_json::from_str(&out).unwrap();
            let about_pod: Vec<Value> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| {
                    e["involvedObject"]["kind"] == "Pod" && e["involvedObject"]["name"] == "shop-0"
                })
                .cloned()
                .collect();
            let has = |reason: &str| about_pod.iter().any(|e| e["reason"] == reason);
            (has("AccessAllowed") && has("AccessDenied")).then_some(about_pod)
        },
    );
    let denied = events
        .iter()
        .find(|e| e["reason"] == "AccessDenied")
        .unwrap();
    assert_eq!(denied["type"], "Warning", "{denied}");
    let msg = denied["message"].as_str().unwrap_or_default();
    // Refused requests are recorded without their topics (the data path's
    // `AuditTrail::on_refusal`), so the Deny aggregate cannot name `vault`.
    assert!(
        msg.contains("ServiceAccount") && msg.contains("shop") && msg.contains("Deny"),
        "a readable aggregate: {msg}"
    );
    let allowed = events
        .iter()
        .find(|e| e["reason"] == "AccessAllowed")
        .unwrap();
    assert_eq!(allowed["type"], "Normal", "{allowed}");
    assert!(
        allowed["message"]
            .as_str()
            .unwrap_or_default()
            .contains("topic orders"),
        "{allowed}"
    );
    // Aggregated: an Event counts many requests (`N requests` in its note).
    let counted = |e: &Value| -> u64 {
        let m = e["message"].as_str().unwrap_or_default();
        m.split(" requests")
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        events.iter().any(|e| counted(e) > 1),
        "no Event aggregates several requests: {events:#?}"
    );

    // What a user types.
    let table = cp.kubectl_ok("admin", &["get", "events", "-n", NS]);
    assert!(
        table.contains("AccessDenied") && table.contains("pod/shop-0"),
        "{table}"
    );

    // Checkpoint Events name the chain and its head: an anchor the pod
    // cannot rewrite, which `audit verify --anchors` takes as kubectl prints it.
    let listed = cp.eventually(
        "an AuditCheckpoint Event about shop-0",
        Duration::from_secs(150),
        || {
            let out = cp.kubectl_ok("admin", &["get", "events", "-n", NS, "-o", "json"]);
            out.contains("AuditCheckpoint").then_some(out)
        },
    );
    let mut pod = pod;
    assert_eq!(pod.stop(), Some(0), "{}", pod.output());
    let events = dir.path().join("events.json");
    std::fs::write(&events, &listed).unwrap();
    let verify = |spool: &std::path::Path| {
        Command::new(streamgate_e2e::proxy_bin())
            .args(["audit", "verify"])
            .arg(spool)
            .arg("--anchors")
            .arg(&events)
            .output()
            .unwrap()
    };
    check(
        &verify(&pod.spool_dir()),
        "audit verify --anchors events.json",
    );
    // The spool cut back to its first record: it still links, but the
    // Events witnessed more.
    let cut = tempfile::tempdir().unwrap();
    let mut segments: Vec<_> = std::fs::read_dir(pod.spool_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("audit-") && name.ends_with(".jsonl")
        })
        .collect();
    segments.sort();
    let first = std::fs::read_to_string(&segments[0]).unwrap();
    let first_line = format!("{}\n", first.lines().next().unwrap());
    std::fs::write(
        cut.path().join(segments[0].file_name().unwrap()),
        first_line,
    )
    .unwrap();
    let out = verify(cut.path());
    assert_eq!(
        out.status.code(),
        Some(1),
        "a cut spool fails against the Events: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
