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
