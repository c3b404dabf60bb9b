//! Break-glass on the live API server (kube-apiserver 1.20, the chart's
//! RBAC, the operator's webhooks and controllers): a clinician breaks glass
//! with `kubectl create` of an AccessApproval with `spec.breakGlass: true`
//! and gets `BreakGlass` at once (no approver) with a Warning Event; the
//! retrospective review is refused to the requester and to a non-reviewer,
//! accepted from a reviewer (`reviewedBy` stamped) and final; an outsider's
//! break-glass is Denied; an unreviewed use past `reviewWithin` puts the
//! StreamPolicy's `ReviewOverdue` condition to True. (The sidecar's side —
//! the OAUTHBEARER extension, the grant, the audit — is `break_glass.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use streamgate_e2e::kube::{ControlPlane, install_product};

const NS: &str = "clinical";

const POLICY: &str = r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: phi-access, namespace: clinical}
spec:
  identity: {workloadIdentity: true}
  rules:
    - name: emergency-read
      subjects: [{kind: Group, name: clinicians}]
      topics: [patient-vitals]
      operations: []
      breakGlass:
        maxDuration: 30m
        operations: [Read]
        reviewWithin: 25s
        reviewers: [{kind: Group, name: compliance-officers}]
"#;

/// The chart's roles, bound as a cluster admin would: clinicians (and
/// mallory, to show the webhook and operator decide, not RBAC) may break
/// glass; compliance officers (and mallory) may review.
const RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: break-glass, namespace: clinical}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: streamgate-break-glass}
subjects:
  - {kind: Group, name: clinicians, apiGroup: rbac.authorization.k8s.io}
  - {kind: User, name: mallory, apiGroup: rbac.authorization.k8s.io}
"#;

fn break_glass(name: &str, requester: &str, groups: &str, reason: &str) -> String {
    format!(
        "apiVersion: streamgate.dev/v1alpha1\nkind: AccessApproval\nmetadata: {{name: {name}, namespace: {NS}}}\n\
         spec:\n  requester: {{kind: User, name: {requester}, groups: {groups}}}\n  policy: phi-access\n  \
         rule: emergency-read\n  topics: [patient-vitals]\n  operations: [Read]\n  duration: 1h\n  \
         breakGlass: true\n  reason: \"{reason}\"\n"
    )
}

fn review(cp: &ControlPlane, user: &str, name: &str, review: &str) -> std::process::Output {
    let body = format!(r#"{{"spec":{{"review":"{review}","reviewNote":"checked the chart"}}}}"#);
    cp.kubectl(
        user,
        &[
            "patch",
            "accessapproval",
            name,
            "-n",
            NS,
            "--type",
            "merge",
            "-p",
            &body,
        ],
    )
}

fn phase(cp: &ControlPlane, name: &str, want: &str) -> Value {
    cp.eventually(
        &format!("{name} in phase {want}"),
        Duration::from_secs(30),
        || {
            let aa = cp.get_json("accessapproval", NS, name)?;
            (aa["status"]["phase"] == want).then_some(aa)
        },
    )
}

fn refused_with(out: &std::process::Output, why: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must be refused: {why}");
    assert!(err.contains(why), "the refusal says why ({why}): {err}");
}

#[test]
fn break_glass_is_granted_at_once_reviewed_after_the_fact_and_overdue_reviews_show() {
    let installed = install_product(1, "127.0.0.1:9");
    let cp = &installed.cp;
    cp.namespace(NS, &[]);
    cp.apply_ok("admin", POLICY);
    cp.apply_ok("admin", RBAC);
    // bob may patch too: the webhook, not RBAC, keeps him from reviewing himself.
    cp.bind_approvers(
        NS,
        &["group:compliance-officers", "user:mallory", "user:bob"],
    );

    // bob (clinicians) breaks glass: BreakGlass at once, no approver.
    cp.apply_ok(
        "bob",
        &break_glass("bob-ed-1", "bob", "[clinicians]", "ED trauma bay 3"),
    );
    let aa = phase(cp, "bob-ed-1", "BreakGlass");
    let created =
        chrono::DateTime::parse_from_rfc3339(aa["metadata"]["creationTimestamp"].as_str().unwrap())
            .unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(aa["status"]["expiresAt"].as_str().unwrap()).unwrap();
    assert_eq!(
        expires - created,
        chrono::Duration::minutes(30),
        "from creation, capped at maxDuration: {aa}"
    );
    assert!(aa["spec"].get("review").is_none());
    // A Warning Event says so.
    let events = cp.eventually("the Warning Event", Duration::from_secs(20), || {
        let out = cp.kubectl_ok("admin", &["get", "events", "-n", NS, "-o", "json"]);
        let v: Value = serde_json::from_str(&out).ok()?;
        let found = v["items"].as_array()?.iter().any(|e| {
            e["involvedObject"]["name"] == "bob-ed-1"
                && e["type"] == "Warning"
                && e["reason"] == "BreakGlass"
        });
        found.then_some(out)
    });
    assert!(events.contains("ED trauma bay 3"), "{events}");

    // The review: not by the requester (even holding the role), not by a
    // non-reviewer, yes by a reviewer — stamped — and only once.
    refused_with(
        &review(cp, "bob", "bob-ed-1", "Justified"),
        "bob is the requester",
    );
    refused_with(
        &review(cp, "mallory", "bob-ed-1", "Justified"),
        "mallory is not an approver of rule \"emergency-read\"",
    );
    let out = review(cp, "alice", "bob-ed-1", "Justified");
    assert!(
        out.status.success(),
        "alice reviews: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let aa = cp.get_json("accessapproval", NS, "bob-ed-1").unwrap();
    assert_eq!(aa["spec"]["review"], "Justified");
    assert_eq!(aa["spec"]["reviewedBy"], "alice", "{aa}");
    refused_with(
        &review(cp, "alice", "bob-ed-1", "NotJustified"),
        "reviews are final",
    );

    // mallory is no clinician: her break-glass is refused and grants nothing.
    cp.apply_ok(
        "mallory",
        &break_glass("mallory-1", "mallory", "[]", "curious"),
    );
    let aa = phase(cp, "mallory-1", "Denied");
    assert!(aa["status"].get("expiresAt").is_none(), "{aa}");
    // …and nobody files one for someone else.
    let out = cp.apply(
        "mallory",
        &break_glass("for-bob", "bob", "[clinicians]", "on bob's behalf"),
    );
    assert!(!out.status.success(), "filed for someone else");

    // A second use left unreviewed: ReviewOverdue once reviewWithin passes.
    cp.apply_ok(
        "bob",
        &break_glass("bob-ed-2", "bob", "[clinicians]", "ED trauma bay 5"),
    );
    phase(cp, "bob-ed-2", "BreakGlass");
    let condition = |sp: &Value| {
        sp["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "ReviewOverdue")
            .cloned()
    };
    let pending = cp.eventually("ReviewOverdue False", Duration::from_secs(20), || {
        condition(&cp.get_json("streampolicy", NS, "phi-access")?)
            .filter(|c| c["status"] == "False")
    });
    assert_eq!(pending["reason"], "NoneOverdue", "{pending}");
    let overdue = cp.eventually("ReviewOverdue True", Duration::from_secs(60), || {
        condition(&cp.get_json("streampolicy", NS, "phi-access")?).filter(|c| c["status"] == "True")
    });
    let message = overdue["message"].as_str().unwrap();
    assert!(
        message.starts_with("1 break-glass use(s) unreviewed past their deadline: bob-ed-2"),
        "{message}\n{}",
        installed.operator_logs()
    );
    // Reviewed: the condition clears.
    let out = review(cp, "alice", "bob-ed-2", "NotJustified");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cp.eventually("ReviewOverdue cleared", Duration::from_secs(30), || {
        condition(&cp.get_json("streampolicy", NS, "phi-access")?)
            .filter(|c| c["status"] == "False")
    });
}
