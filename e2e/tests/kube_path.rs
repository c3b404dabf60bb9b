//! The README's Kubernetes path on a live kube-apiserver (1.20, envtest-style:
//! no kubelet): CRDs, the chart's RBAC and webhooks, the operator running
//! locally with its own ServiceAccount token, injection, RBAC.
//! Scenarios 1–4, 7 (operator Events) and 8 of the Kubernetes-path issue;
//! the data path through an injected pod is in `kube_pod.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::Value;
use streamgate_e2e::kube::{Installed, install_product};

const UPSTREAM: &str = "kafka.kafka.svc:9092";

fn ready_condition(obj: &Value) -> Option<(String, String, String)> {
    let c = obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    ))
}

fn wait_ready(
    inst: &Installed,
    kind: &str,
    ns: &str,
    name: &str,
    want: &str,
) -> (String, String, String) {
    let cp = &inst.cp;
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(obj) = cp.get_json(kind, ns, name) {
            last = ready_condition(&obj);
            if let Some(c) = last.as_ref().filter(|c| c.0 == want) {
                return c.clone();
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "{kind} {ns}/{name} never Ready={want} (last: {last:?})\n{}",
        inst.operator_logs()
    );
}

fn examples_for(ns: &str) -> String {
    let root = streamgate_e2e::repo_root().join("examples");
    [
        "streampolicy.yaml",
        "maskingrule.yaml",
        "accessapproval.yaml",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(root.join(f)).unwrap())
    .collect::<Vec<_>>()
    .join("\n---\n")
    .replace("namespace: clinical", &format!("namespace: {ns}"))
}

/// Scenario 1: the CRDs apply, the printer columns print, the examples apply,
/// and objects the server cannot refuse (no CEL on 1.20) get `Ready=False`
/// with the reason.
#[test]
fn crds_and_examples_apply_and_invalid_objects_get_ready_false_with_the_reason() {
    let inst = install_product(1, UPSTREAM);
    let cp = &inst.cp;
    cp.namespace("clinical", &[]);
    cp.apply_ok("admin", &examples_for("clinical"));

    wait_ready(&inst, "streampolicy", "clinical", "phi-access", "True");
    wait_ready(&inst, "maskingrule", "clinical", "patient-phi", "True");
    let table = cp.kubectl_ok("admin", &["get", "sp,mr,aa", "-n", "clinical"]);
    for column in [
        "WORKLOADS",
        "READY",
        "TOPICS",
        "REQUESTER",
        "RULE",
        "PHASE",
        "DECIDED-BY",
        "AGE",
    ] {
        assert!(
            table.contains(column),
            "printer column {column} missing:\n{table}"
        );
    }
    let wide = cp.kubectl_ok("admin", &["get", "sp", "-n", "clinical", "-o", "wide"]);
    assert!(wide.contains("REASON"), "{wide}");
    assert!(
        table.contains("phi-access") && table.contains("write-patient-records-alice-7f3c9"),
        "{table}"
    );
    // Short names and the category work.
    let all = cp.kubectl_ok(
        "admin",
        &["get", "streamgate", "-n", "clinical", "-o", "name"],
    );
    assert_eq!(all.lines().count(), 4, "{all}");

    // Schema-level refusal by the API server itself (structural schema, enums).
    let bad_enum = "apiVersion: streamgate.dev/v1alpha1\nkind: StreamPolicy\nmetadata: {name: bad-op, namespace: clinical}\n\
        spec:\n  rules:\n  - name: r\n    subjects: [{kind: Group, name: g}]\n    topics: [t]\n    operations: [Obliterate]\n    effect: Allow\n";
    let out = cp.apply("admin", bad_enum);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Obliterate"), "{err}");

    // What only our validation sees on 1.20 (a CEL rule upstream): Ready=False, reason named.
    let bad_glob = "apiVersion: streamgate.dev/v1alpha1\nkind: StreamPolicy\nmetadata: {name: bad-glob, namespace: clinical}\n\
        spec:\n  rules:\n  - name: r\n    subjects: [{kind: Group, name: g}]\n    topics: [\"claims.***\"]\n    operations: [Read]\n    effect: Allow\n";
    cp.apply_ok("admin", bad_glob);
    let (_, reason, message) = wait_ready(&inst, "streampolicy", "clinical", "bad-glob", "False");
    assert!(
        !reason.is_empty() && message.contains("claims.***"),
        "reason {reason:?}: {message}"
    );
}

/// Scenarios 2, 3 and 7 (operator side): two replicas, one leads (Lease),
/// status by server-side apply with observedGeneration; the API server
/// verifies the operator's certificate through the caBundle the operator
/// patched; kill the leader → the other takes over within the lease.
#[test]
fn two_operators_lead_by_lease_reconcile_with_ssa_and_fail_over() {
    let mut inst = install_product(2, UPSTREAM);
    let cp = &inst.cp;
    cp.namespace("clinical", &[]);
    cp.bind_approvers("clinical", &["group:compliance-officers"]);
    cp.apply_ok("admin", &examples_for("clinical"));
    wait_ready(&inst, "streampolicy", "clinical", "phi-access", "True");

    // Scenario 3: the webhook answered an admission over TLS the API server verified
    // against the patched caBundle — a forged decidedBy is overwritten by the stamp webhook.
    let out = cp.kubectl(
        "alice",
        &[
            "patch",
            "aa",
            "write-patient-records-alice-7f3c9",
            "-n",
            "clinical",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"decision":"Approved","decidedBy":"somebody-else"}}"#,
        ],
    );
    assert!(
        out.status.success(),
        "alice approves: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        inst.operator_logs()
    );
    let aa = cp
        .get_json("aa", "clinical", "write-patient-records-alice-7f3c9")
        .unwrap();
    assert_eq!(aa["spec"]["decidedBy"], "alice", "{aa}");

    // SSA status with our field manager and observedGeneration.
    let sp = cp.kubectl_ok(
        "admin",
        &[
            "get",
            "sp",
            "phi-access",
            "-n",
            "clinical",
            "-o",
            "json",
            "--show-managed-fields",
        ],
    );
    let sp: Value = serde_json::from_str(&sp).unwrap();
    let managers: Vec<&str> = sp["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["operation"] == "Apply")
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(
        !managers.is_empty(),
        "status is written by server-side apply: {}",
        sp["metadata"]["managedFields"]
    );
    assert_eq!(
        sp["status"]["observedGeneration"],
        sp["metadata"]["generation"]
    );

    // The Lease names the leader; Events record the transitions.
    let lease = cp
        .get_json("lease", "streamgate-system", "streamgate-operator")
        .unwrap();
    let leader = lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(leader.starts_with("operator-"), "{lease}");
    let events = cp.kubectl_ok("admin", &["get", "events", "-n", "clinical", "-o", "json"]);
    assert!(
        events.contains("phi-access"),
        "operator transition Events for the policy: {events}"
    );

    // Both replicas serve the webhook (the non-leader too): call each one's
    // port directly; the first replica's port is the one the API server calls.
    for op in &inst.operators {
        let ok = std::net::TcpStream::connect(("127.0.0.1", op.webhook_port)).is_ok();
        assert!(ok, "{} serves its webhook port", op.name);
    }

    // Fail-over: kill the leader; the other takes the Lease and reconciles.
    let leader_idx = inst
        .operators
        .iter()
        .position(|o| o.name == leader)
        .unwrap();
    inst.operators[leader_idx].proc.kill();
    let killed_at = Instant::now();
    let cp = &inst.cp;
    let new_leader = cp.eventually(
        "another replica to take the Lease",
        Duration::from_secs(45),
        || {
            let lease = cp.get_json("lease", "streamgate-system", "streamgate-operator")?;
            let holder = lease["spec"]["holderIdentity"].as_str()?.to_string();
            (holder != leader).then_some(holder)
        },
    );
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(45), "took over after {took:?}");
    // The new leader reconciles a policy created after the fail-over.
    let later = examples_for("clinical")
        .replace("name: phi-access", "name: phi-access-2")
        .replace("write-patient-records-alice-7f3c9", "second-request");
    // The Service would route to the survivor; here the configurations are re-pointed.
    let survivor = inst
        .operators
        .iter()
        .position(|o| o.name == new_leader)
        .unwrap();
    inst.route_webhooks_to(survivor);
    let cp = &inst.cp;
    cp.apply_ok("admin", &later);
    wait_ready(&inst, "streampolicy", "clinical", "phi-access-2", "True");
    // The survivor serves admission with the same CA: its stamp overwrites a forged decidedBy.
    let out = cp.kubectl(
        "alice",
        &[
            "patch",
            "aa",
            "second-request",
            "-n",
            "clinical",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"decision":"Denied","decidedBy":"bob"}}"#,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let aa = cp.get_json("aa", "clinical", "second-request").unwrap();
    assert_eq!(aa["spec"]["decidedBy"], "alice", "{aa}");
    eprintln!("leader {leader} killed; {new_leader} took over after {took:?}");
}

/// Scenario 4: `kubectl apply -f examples/pod.yaml` stores the pod with the
/// sidecar (a regular container on 1.20: no native sidecars there); pods not
/// asking are untouched; a namespace label injects; opt-out; re-admission is
/// idempotent; `--dry-run=server` leaves nothing behind.
#[test]
fn pods_are_injected_as_the_server_version_allows_and_only_when_asked() {
    let inst = install_product(1, UPSTREAM);
    let cp = &inst.cp;
    cp.namespace("clinical", &[]);
    cp.namespace("billing", &[("streamgate.dev/inject", "enabled")]);
    // No token controller here: the example's ServiceAccount automounts a
    // token, so give it the token Secret a controller would have made.
    let pod_yaml = std::fs::read_to_string(streamgate_e2e::example("pod.yaml")).unwrap();
    cp.apply_ok(
        "admin",
        &pod_yaml
            .replace(
                "  namespace: clinical\n---",
                "  namespace: clinical\nautomountServiceAccountToken: false\n---",
            )
            .replace(
                "spec:\n  serviceAccountName",
                "spec:\n  automountServiceAccountToken: false\n  serviceAccountName",
            ),
    );
    let pod = cp.get_json("pod", "clinical", "billing-reader").unwrap();
    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers[0]["name"], "streamgate-proxy", "{pod}");
    assert_eq!(containers[1]["name"], "reader");
    assert!(
        pod["spec"]["initContainers"].is_null(),
        "no init-container sidecar on 1.20: {pod}"
    );
    assert_eq!(
        containers[0]["lifecycle"]["postStart"]["exec"]["command"][1],
        "wait-ready"
    );
    let env: Vec<&str> = containers[0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env.contains(&"STREAMGATE_POLICY_KUBE"), "{env:?}");
    assert_eq!(
        pod["metadata"]["annotations"]["streamgate.dev/injected"],
        "true"
    );
    let app_env = containers[1]["env"].as_array().unwrap();
    assert!(
        app_env
            .iter()
            .any(|e| e["name"] == "KAFKA_BOOTSTRAP_SERVERS" && e["value"] == "127.0.0.1:9092")
    );

    let plain = "apiVersion: v1\nkind: Pod\nmetadata: {name: plain, namespace: NS}\nspec:\n  automountServiceAccountToken: false\n  containers: [{name: app, image: app:1}]\n";
    cp.apply_ok("admin", &plain.replace("NS", "clinical"));
    let p = cp.get_json("pod", "clinical", "plain").unwrap();
    assert_eq!(
        p["spec"]["containers"].as_array().unwrap().len(),
        1,
        "unannotated pod untouched: {p}"
    );
    assert!(p["metadata"]["annotations"]["streamgate.dev/injected"].is_null());

    cp.apply_ok("admin", &plain.replace("NS", "billing"));
    let p = cp.get_json("pod", "billing", "plain").unwrap();
    assert_eq!(
        p["spec"]["containers"][0]["name"], "streamgate-proxy",
        "namespace label injects: {p}"
    );

    // Re-admission: applying the stored (already injected) pod again changes nothing.
    let stored = cp.kubectl_ok(
        "admin",
        &["get", "pod", "plain", "-n", "billing", "-o", "yaml"],
    );
    cp.apply_ok("admin", &stored);
    let again = cp.get_json("pod", "billing", "plain").unwrap();
    assert_eq!(
        again["spec"]["containers"].as_array().unwrap().len(),
        2,
        "{again}"
    );

    // --dry-run=server: the answer shows the sidecar, nothing is stored.
    let dry = plain
        .replace("NS", "billing")
        .replace("name: plain", "name: dry");
    let out = cp.kubectl_with(
        &cp.kubeconfig("admin"),
        &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(&dry),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["spec"]["containers"][0]["name"], "streamgate-proxy");
    assert!(
        cp.get_json("pod", "billing", "dry").is_none(),
        "dry run stored nothing"
    );
}

/// Scenario 8: RBAC is least privilege, asked of the API server with
/// `kubectl auth can-i --as`.
#[test]
fn rbac_is_least_privilege_for_sidecar_and_operator() {
    let inst = install_product(1, UPSTREAM);
    let cp = &inst.cp;
    cp.namespace("clinical", &[]);
    cp.namespace("other", &[]);
    let pod_yaml = std::fs::read_to_string(streamgate_e2e::example("pod.yaml"))
        .unwrap()
        .replace(
            "spec:\n  serviceAccountName",
            "spec:\n  automountServiceAccountToken: false\n  serviceAccountName",
        );
    cp.apply_ok("admin", &pod_yaml);
    // The sidecar acts as the operator-made streamgate-sidecar account; the
    // app's own account (billing-app) gets no streamgate rights at all.
    let sidecar = "system:serviceaccount:clinical:streamgate-sidecar";
    let app = "system:serviceaccount:clinical:billing-app";
    let can = |who: &str, args: &[&str]| -> bool {
        let mut a = vec!["auth", "can-i", "--as", who];
        a.extend_from_slice(args);
        let out = cp.kubectl("admin", &a);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    // The operator binds the sidecar role in namespaces with injected pods.
    cp.eventually("the sidecar RoleBinding", Duration::from_secs(40), || {
        can(
            sidecar,
            &["create", "accessapprovals.streamgate.dev", "-n", "clinical"],
        )
        .then_some(())
    });
    for (verb, what) in [
        ("list", "streampolicies.streamgate.dev"),
        ("watch", "maskingrules.streamgate.dev"),
        ("get", "accessapprovals.streamgate.dev"),
        ("create", "events"),
        ("create", "events.events.k8s.io"),
    ] {
        assert!(
            can(sidecar, &[verb, what, "-n", "clinical"]),
            "sidecar can {verb} {what}"
        );
    }
    for (verb, what, ns) in [
        ("get", "secrets", "clinical"),
        ("list", "secrets", "clinical"),
        ("patch", "accessapprovals.streamgate.dev", "clinical"),
        ("update", "accessapprovals.streamgate.dev", "clinical"),
        ("delete", "accessapprovals.streamgate.dev", "clinical"),
        ("create", "accessapprovals.streamgate.dev", "other"),
        ("list", "streampolicies.streamgate.dev", "other"),
        ("create", "pods", "clinical"),
    ] {
        assert!(
            !can(sidecar, &[verb, what, "-n", ns]),
            "sidecar must not {verb} {what} in {ns}"
        );
    }
    for (verb, what) in [
        ("create", "accessapprovals.streamgate.dev"),
        ("list", "accessapprovals.streamgate.dev"),
        ("watch", "streampolicies.streamgate.dev"),
        ("create", "events"),
        ("create", "events.events.k8s.io"),
    ] {
        assert!(
            !can(app, &[verb, what, "-n", "clinical"]),
            "the app's ServiceAccount must not {verb} {what}"
        );
    }
    let operator = "system:serviceaccount:streamgate-system:streamgate";
    assert!(can(
        operator,
        &[
            "patch",
            "streampolicies.streamgate.dev",
            "--subresource=status",
            "-n",
            "clinical"
        ]
    ));
    for (verb, what) in [
        ("get", "secrets"),
        ("create", "pods"),
        ("patch", "streampolicies.streamgate.dev"),
        ("delete", "namespaces"),
        ("*", "*"),
    ] {
        assert!(
            !can(operator, &[verb, what, "-n", "clinical"]),
            "operator must not {verb} {what}"
        );
    }
    // No wildcard in any rule the chart installs.
    for kind in ["clusterrole", "role"] {
        let out = cp.kubectl_ok(
            "admin",
            &[
                "get",
                kind,
                "-A",
                "-l",
                "app.kubernetes.io/name=streamgate",
                "-o",
                "json",
            ],
        );
        let list: Value = serde_json::from_str(&out).unwrap();
        for item in list["items"].as_array().unwrap() {
            for rule in item["rules"].as_array().unwrap() {
                let s = rule.to_string();
                assert!(
                    !s.contains("\"*\""),
                    "wildcard in {}: {s}",
                    item["metadata"]["name"]
                );
            }
        }
    }
}
