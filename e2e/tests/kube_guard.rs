//! Nobody who can create a pod gets around the gate: each attack of the
//! cluster-security issue, tried on the live API server by a pod author
//! (`bob`, allowed to create and patch pods in the governed namespace), and
//! refused by the operator's pod guard with a reason that names it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use streamgate_e2e::kube::{Installed, OIDC_ALICE, install_product_with};

const NS: &str = "governed";

/// A pod author's rights, nothing more: pods in the two namespaces.
fn grant_pod_author(inst: &Installed) {
    for ns in [NS, "sandbox"] {
        inst.cp.apply_ok(
            "admin",
            &format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: pod-author, namespace: {ns}}}\n\
                 rules:\n- apiGroups: [\"\"]\n  resources: [pods, pods/ephemeralcontainers]\n  verbs: [create, get, list, patch, update, delete]\n---\n\
                 apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: pod-author, namespace: {ns}}}\n\
                 roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-author}}\n\
                 subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}}]\n"
            ),
        );
    }
}

/// A pod as `bob` writes it; `extra` is YAML spliced into the pod spec,
/// `annotations` into its metadata.
fn pod(name: &str, annotations: &str, spec_extra: &str, container_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations:\n    streamgate.dev/upstream-secret: kafka-gateway\n{annotations}\
         spec:\n  automountServiceAccountToken: false\n{spec_extra}  containers:\n  - name: app\n    image: app:1\n{container_extra}"
    )
}

/// `kubectl apply` as bob in `ns`; Err(stderr) when refused.
fn create_as_bob(inst: &Installed, ns: &str, yaml: &str) -> Result<(), String> {
    let out = inst.cp.kubectl_with(
        &inst.cp.kubeconfig("bob"),
        &["apply", "-n", ns, "-f", "-"],
        Some(yaml),
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn refused(inst: &Installed, name: &str, yaml: &str, expect: &[&str]) {
    let err = create_as_bob(inst, NS, yaml).expect_err(&format!("{name} must be refused"));
    assert!(
        err.contains("streamgate"),
        "{name}: refused by the guard, not something else: {err}"
    );
    for e in expect {
        assert!(err.contains(e), "{name}: the refusal says {e:?}: {err}");
    }
    assert!(
        inst.cp.get_json("pod", NS, name).is_none(),
        "{name} was not stored"
    );
}

fn a_plain_pod_is_injected_and_admitted_and_may_change_its_own_labels(inst: &Installed) {
    create_as_bob(inst, NS, &pod("honest", "", "", "")).unwrap();
    let stored = inst.cp.get_json("pod", NS, "honest").unwrap();
    assert_eq!(stored["spec"]["containers"][0]["name"], "streamgate-proxy");
    // A change that leaves the sidecar alone passes the guard.
    let out = inst
        .cp
        .kubectl("bob", &["label", "pod", "honest", "-n", NS, "team=billing"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Outside governed namespaces the author still decides (opt-out works there).
    create_as_bob(
        inst,
        "sandbox",
        &pod("free", "    streamgate.dev/inject: \"false\"\n", "", ""),
    )
    .unwrap();
}

fn opting_out_in_a_governed_namespace_is_refused(inst: &Installed) {
    refused(
        inst,
        "opt-out",
        &pod("opt-out", "    streamgate.dev/inject: \"false\"\n", "", ""),
        &["cannot opt out", "cluster-admin"],
    );
}

fn claiming_injection_with_a_preset_annotation_is_refused(inst: &Installed) {
    refused(
        inst,
        "claims-injected",
        &pod(
            "claims-injected",
            "    streamgate.dev/injected: \"true\"\n",
            "",
            "",
        ),
        &["no streamgate-proxy container"],
    );
}

fn an_author_written_sidecar_is_refused(inst: &Installed) {
    let fake = "  - name: streamgate-proxy\n    image: attacker/proxy:1\n    args: [run]\n    env:\n    - {name: STREAMGATE_POLICY_DIR, value: /allow-all}\n";
    refused(
        inst,
        "fake-sidecar",
        &pod(
            "fake-sidecar",
            "    streamgate.dev/inject: \"true\"\n",
            "",
            fake,
        ),
        &["not the sidecar the operator injects", "attacker/proxy:1"],
    );
}

fn an_app_mounting_the_sidecar_volume_or_its_secret_is_refused(inst: &Installed) {
    // The mount is declared before the injector adds the volume of that name:
    // the sidecar's session token (audience streamgate.dev/sidecar), which
    // would let the app ask the operator for the broker credential.
    refused(
        inst,
        "mounts-sidecar-volume",
        &pod(
            "mounts-sidecar-volume",
            "",
            "",
            "    volumeMounts:\n    - {name: streamgate-sidecar-token, mountPath: /steal}\n",
        ),
        &["mounts the sidecar's volume", "streamgate-sidecar-token"],
    );
    // The broker credential Secret mounted directly, and read into env.
    refused(
        inst,
        "mounts-credential",
        &pod(
            "mounts-credential",
            "",
            "  volumes:\n  - {name: creds, secret: {secretName: kafka-gateway}}\n",
            "    volumeMounts:\n    - {name: creds, mountPath: /steal}\n",
        ),
        &["Secret \"kafka-gateway\""],
    );
    refused(
        inst,
        "env-credential",
        &pod(
            "env-credential",
            "",
            "",
            "    env:\n    - name: PW\n      valueFrom: {secretKeyRef: {name: kafka-gateway, key: credentials}}\n",
        ),
        &["reads Secret \"kafka-gateway\""],
    );
}

fn sharing_the_process_namespace_is_refused(inst: &Installed) {
    refused(
        inst,
        "shares-pids",
        &pod("shares-pids", "", "  shareProcessNamespace: true\n", ""),
        &["shareProcessNamespace", "/proc"],
    );
}

fn changing_the_sidecar_after_admission_is_refused(inst: &Installed) {
    create_as_bob(inst, NS, &pod("patched", "", "", "")).unwrap();
    let out = inst.cp.kubectl(
        "bob",
        &[
            "patch",
            "pod",
            "patched",
            "-n",
            NS,
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/spec/containers/0/image","value":"attacker/proxy:1"}]"#,
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the image swap must be refused");
    assert!(
        err.contains("streamgate") && err.contains("cannot change after admission"),
        "{err}"
    );
    let stored: Value = inst.cp.get_json("pod", NS, "patched").unwrap();
    assert_ne!(stored["spec"]["containers"][0]["image"], "attacker/proxy:1");
}

/// The requester `alice@example.com` is also a compliance officer, and the
/// API server knows her as `oidc:alice@example.com` (OIDC, email claim,
/// `oidc:` prefix — the operator is told the same). Under that name she
/// cannot approve her own request; the unrelated Kubernetes user `alice` can.
fn nobody_approves_their_own_request_under_their_oidc_name(inst: &Installed) {
    let cp = &inst.cp;
    cp.namespace("clinical", &[]);
    cp.bind_approvers("clinical", &["group:compliance-officers"]);
    let root = streamgate_e2e::repo_root().join("examples");
    for f in ["streampolicy.yaml", "accessapproval.yaml"] {
        cp.apply_ok("admin", &std::fs::read_to_string(root.join(f)).unwrap());
    }
    let approve = |who: &str| {
        cp.kubectl(
            who,
            &[
                "patch",
                "aa",
                "write-patient-records-alice-7f3c9",
                "-n",
                "clinical",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"decision":"Approved"}}"#,
            ],
        )
    };
    let out = approve(OIDC_ALICE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "self-approval admitted");
    assert!(
        stderr.contains("cannot decide their own request"),
        "the reason names it: {stderr}"
    );
    let out = approve("alice");
    assert!(
        out.status.success(),
        "another approver: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let aa = cp
        .get_json("aa", "clinical", "write-patient-records-alice-7f3c9")
        .unwrap();
    assert_eq!(aa["spec"]["decidedBy"], "alice", "{aa}");
}

/// One control plane for every attack (each a named step with its own
/// assertions): starting one per attack would cost ~20 s of a 2-core CI each.
#[test]
fn pod_authors_cannot_get_around_the_gate() {
    let inst = install_product_with(
        1,
        "kafka.kafka.svc:9092",
        &[
            ("STREAMGATE_APPROVER_OIDC_USERNAME_CLAIM", "email"),
            ("STREAMGATE_APPROVER_OIDC_USERNAME_PREFIX", "oidc:"),
        ],
    );
    inst.cp
        .namespace(NS, &[("streamgate.dev/inject", "enabled")]);
    inst.cp.namespace("sandbox", &[]);
    grant_pod_author(&inst);
    a_plain_pod_is_injected_and_admitted_and_may_change_its_own_labels(&inst);
    opting_out_in_a_governed_namespace_is_refused(&inst);
    claiming_injection_with_a_preset_annotation_is_refused(&inst);
    an_author_written_sidecar_is_refused(&inst);
    an_app_mounting_the_sidecar_volume_or_its_secret_is_refused(&inst);
    sharing_the_process_namespace_is_refused(&inst);
    changing_the_sidecar_after_admission_is_refused(&inst);
    nobody_approves_their_own_request_under_their_oidc_name(&inst);
}
