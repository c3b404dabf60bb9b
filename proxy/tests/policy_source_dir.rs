//! `--policy-dir`: files in, decisions out, reloads within a second, bad
//! manifests never replace a good policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use streamgate_crds::matching::Principal;
use streamgate_crds::{Operation, SubjectKind};
use streamgate_proxy::policy::source_dir::{self, load_dir};
use streamgate_proxy::policy::{PolicyHandle, PolicyReload, policy_channel};

fn policy(topic: &str, effect: &str) -> String {
    format!(
        r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {{name: p, namespace: clinical}}
spec:
  identity:
    oidc: {{issuer: "https://idp.example.com", audiences: [kafka]}}
  rules:
    - name: r
      subjects: [{{kind: Group, name: analysts}}]
      topics: ["{topic}"]
      operations: [Read]
      effect: {effect}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: unrelated}}
---
apiVersion: streamgate.dev/v1alpha1
kind: MaskingRule
metadata: {{name: m}}
spec:
  topics: ["patient-*"]
  fields: [{{path: "$.ssn", strategy: Redact}}]
"#
    )
}

fn analyst() -> Principal {
    Principal {
        kind: SubjectKind::User,
        name: "ann".into(),
        namespace: None,
        groups: vec!["analysts".into()],
        issuer: Some("https://idp.example.com".into()),
    }
}

fn allowed(h: &PolicyHandle, topic: &str) -> bool {
    h.current()
        .decide(&analyst(), Operation::Read, topic)
        .is_allow()
}

async fn eventually(what: &str, f: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        if f() {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not visible within 1s");
}

#[test]
fn multi_document_files_and_other_kinds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), policy("claims.*", "Allow")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "broken: [").unwrap();
    let inputs = load_dir(dir.path(), "clinical").unwrap();
    assert_eq!(inputs.policies.len(), 1);
    assert_eq!(inputs.masking.len(), 1, "namespace defaults to the pod's");
    // Objects of other namespaces are not ours.
    let inputs = load_dir(dir.path(), "billing").unwrap();
    assert!(inputs.policies.is_empty());
    // Broken YAML and wrong shapes name the file and document.
    std::fs::write(dir.path().join("b.yml"), "apiVersion: streamgate.dev/v1alpha1\nkind: StreamPolicy\nmetadata: {name: q}\nspec: {rules: [{name: x}]}\n").unwrap();
    let err = load_dir(dir.path(), "clinical").unwrap_err().to_string();
    assert!(err.contains("b.yml") && err.contains("document 1"), "{err}");
}

#[tokio::test]
async fn edits_apply_within_a_second_and_bad_files_keep_the_last_good_policy() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy("claims.*", "Allow")).unwrap();
    let (publisher, handle) = policy_channel(BTreeMap::new());
    let mut events = handle.subscribe();
    let (_source, ok) =
        source_dir::spawn(dir.path().to_path_buf(), "clinical".into(), publisher).unwrap();
    assert!(ok);
    assert!(allowed(&handle, "claims.2026"));
    assert!(!allowed(&handle, "patient-events"));
    assert!(matches!(
        events.recv().await.unwrap(),
        PolicyReload::Applied { .. }
    ));

    // Edit: a new decision within a second.
    std::fs::write(&file, policy("patient-*", "Allow")).unwrap();
    let took = eventually("edit", || allowed(&handle, "patient-events")).await;
    assert!(!allowed(&handle, "claims.2026"));
    eprintln!("edit visible after {took:?}");

    // Broken file: reported, old policy kept.
    std::fs::write(&file, "apiVersion: streamgate.dev/v1alpha1\nkind: StreamPolicy\nmetadata: {name: p}\nspec: [oops\n").unwrap();
    let rejected = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let PolicyReload::Rejected { error, .. } = events.recv().await.unwrap() {
                return error;
            }
        }
    })
    .await
    .expect("a rejected reload is reported");
    assert!(rejected.contains("policy.yaml"), "{rejected}");
    assert!(allowed(&handle, "patient-events"), "last good policy stays");

    // Deny rule added in a second file beats the Allow.
    std::fs::write(&file, policy("patient-*", "Allow")).unwrap();
    std::fs::write(
        dir.path().join("deny.yaml"),
        policy("patient-events", "Deny").replace("name: p,", "name: p2,"),
    )
    .unwrap();
    eventually("deny", || !allowed(&handle, "patient-events")).await;
    assert!(allowed(&handle, "patient-records"));

    // Everything removed: no policy, deny.
    std::fs::remove_file(&file).unwrap();
    std::fs::remove_file(dir.path().join("deny.yaml")).unwrap();
    eventually("empty", || !handle.current().has_policy()).await;
    assert!(!allowed(&handle, "patient-records"));
}

#[tokio::test]
async fn a_broken_directory_at_start_denies_everything() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), "kind: [").unwrap();
    let (publisher, handle) = policy_channel(BTreeMap::new());
    let (_source, ok) =
        source_dir::spawn(dir.path().to_path_buf(), "clinical".into(), publisher).unwrap();
    assert!(!ok);
    assert!(!handle.current().has_policy());
    // Fixing the file brings the policy in.
    std::fs::write(dir.path().join("p.yaml"), policy("claims.*", "Allow")).unwrap();
    eventually("fix", || allowed(&handle, "claims.1")).await;
}

/// Issue 12 item 7: the sidecar runs the validation the API server and the
/// operator's webhook run, so an object they would refuse is never enforced
/// as written from a policy directory: an invalid StreamPolicy keeps only
/// what narrows (Deny rules), an invalid MaskingRule blocks its topics for
/// everyone, an invalid AccessApproval grants nothing.
#[test]
fn objects_the_api_server_would_refuse_are_not_enforced_as_written() {
    use streamgate_crds::ApplyTo;
    use streamgate_proxy::masking::MaskingSet;
    use streamgate_proxy::policy::decide::CompiledPolicy;

    let dir = tempfile::tempdir().unwrap();
    // Invalid: "bad topic" is no topic glob. As written, analysts would read claims.*.
    let invalid_policy = r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: sloppy, namespace: clinical}
spec:
  identity:
    oidc: {issuer: "https://idp.example.com", audiences: [kafka]}
  rules:
    - {name: read, subjects: [{kind: Group, name: analysts}], topics: ["claims.*", "bad topic"], operations: [Read]}
    - {name: no-secret, subjects: [{kind: Group, name: analysts}], topics: ["secret"], operations: [Read], effect: Deny}
"#;
    // Valid: analysts may read secret and everything under open.*.
    let valid_policy = r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: sound, namespace: clinical}
spec:
  identity:
    oidc: {issuer: "https://idp.example.com", audiences: [kafka]}
  rules:
    - {name: read, subjects: [{kind: Group, name: analysts}], topics: ["open.*", "secret"], operations: [Read]}
    - name: write-records
      subjects: [{kind: Group, name: analysts}]
      topics: ["patient-records", "patient-notes"]
      operations: [Write]
      approval:
        approvers: [{kind: User, name: dr.house@example.com}]
        maxDuration: 1h
"#;
    // Invalid: a wildcard exemption (everyone would see clear text).
    let invalid_masking = r#"
apiVersion: streamgate.dev/v1alpha1
kind: MaskingRule
metadata: {name: exempts-everyone, namespace: clinical}
spec:
  topics: ["patient-*"]
  fields: [{path: "$.ssn", strategy: Redact}]
  exemptSubjects: [{kind: Group, name: "*"}]
"#;
    // Invalid: a wildcard topic next to a real one, approved by a listed approver.
    let invalid_approval = r#"
apiVersion: streamgate.dev/v1alpha1
kind: AccessApproval
metadata: {name: ann-writes, namespace: clinical}
spec:
  requester: {kind: User, name: ann, groups: [analysts]}
  policy: sound
  rule: write-records
  topics: [patient-records, "patient-*"]
  operations: [Write]
  duration: 1h
  decision: Approved
  decidedBy: dr.house@example.com
status: {decidedAt: "2020-01-01T00:00:00Z"}
"#;
    let valid_approval = invalid_approval
        .replace("name: ann-writes", "name: ann-writes-notes")
        .replace("[patient-records, \"patient-*\"]", "[patient-notes]");
    let now = chrono::Utc::now().to_rfc3339();
    for (file, text) in [
        ("invalid-policy.yaml", invalid_policy.to_string()),
        ("valid-policy.yaml", valid_policy.to_string()),
        ("invalid-masking.yaml", invalid_masking.to_string()),
        (
            "invalid-approval.yaml",
            invalid_approval.replace("2020-01-01T00:00:00Z", &now),
        ),
        (
            "valid-approval.yaml",
            valid_approval.replace("2020-01-01T00:00:00Z", &now),
        ),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let inputs = load_dir(dir.path(), "clinical").unwrap();
    let masking = inputs.masking.clone();
    let policy = CompiledPolicy::compile(
        inputs.policies,
        inputs.masking,
        inputs.grants,
        &BTreeMap::new(),
    );
    let ann = analyst();
    let ann = Principal {
        name: "ann".into(),
        ..ann
    };
    let may = |op: Operation, topic: &str| policy.decide(&ann, op, topic).is_allow();
    // The invalid policy's Allow rule is not enforced; its Deny rule is.
    assert!(!may(Operation::Read, "claims.2026"));
    assert!(!may(Operation::Read, "secret"), "the Deny still narrows");
    assert!(may(Operation::Read, "open.data"), "the valid policy holds");
    // The invalid approval grants nothing, the valid one its topic.
    assert!(!may(Operation::Write, "patient-records"));
    assert!(may(Operation::Write, "patient-notes"));
    // The invalid MaskingRule exempts nobody: its topics are blocked.
    let (set, _errors) = MaskingSet::from_docs("clinical", &masking, dir.path());
    assert!(!set.sees_clear_text("patient-events", &ann, ApplyTo::Fetch));
}
