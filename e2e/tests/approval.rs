//! Just-in-time approval end to end, directory mode: a clinician (OIDC via
//! the real IdP, confluent-kafka through the real sidecar, real tansu)
//! producing to a topic whose rule needs approval is refused with
//! TOPIC_AUTHORIZATION_FAILED and an AccessApproval request appears in the
//! policy directory; once a person approves it (the local edit documented in
//! `streamgate_proxy::approval`), the same producer succeeds with no restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use streamgate_crds::access_approval::Decision;
use streamgate_crds::{AccessApproval, AccessApprovalStatus, Operation};
use streamgate_e2e::{Broker, IDP_AUDIENCE, Idp, Proxy, ProxyOptions, Storage, check, proxy_bin};

#[path = "oidc_client/mod.rs"]
mod oidc_client;
use oidc_client::{Client, TOPIC_AUTH, refused_with};

fn policy(issuer: &str) -> String {
    format!(
        r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {{name: phi-access, namespace: clinical}}
spec:
  identity:
    oidc: {{issuer: "{issuer}", audiences: ["{IDP_AUDIENCE}"]}}
  rules:
    - name: clinicians-describe
      subjects: [{{kind: Group, name: clinicians}}]
      topics: ["patient-*"]
      operations: [Describe]
    - name: write-patient-records
      subjects: [{{kind: Group, name: clinicians}}]
      topics: [patient-records]
      operations: [Write]
      approval:
        approvers: [{{kind: Group, name: compliance-officers}}, {{kind: User, name: dr.house@example.com}}]
        maxDuration: 1h
"#
    )
}

/// The AccessApproval files in `dir` (the policy file excluded).
fn approvals(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("write-patient-records-") && name.ends_with(".yaml")
        })
        .collect()
}

#[test]
fn a_refused_write_asks_for_approval_and_an_approval_lets_it_through() {
    let broker = Broker::start(Storage::Memory);
    broker.create_topic("patient-records", 1);
    let idp = Idp::start(300, None);
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("policy.yaml"), policy(&idp.issuer())).unwrap();
    let proxy = Proxy::start(
        &broker,
        ProxyOptions {
            args: vec!["--policy-dir".into(), policies.display().to_string()],
            envs: vec![
                ("STREAMGATE_SERVICE_ACCOUNT".into(), "intake".into()),
                ("STREAMGATE_POD_NAME".into(), "intake-0".into()),
                ("STREAMGATE_POD_NAMESPACE".into(), "clinical".into()),
            ],
            ..ProxyOptions::default()
        },
    );

    // Refused: the rule needs an approval nobody has given yet.
    let mut clinician = Client::oidc(dir.path(), &proxy, &idp, "intake-app");
    let v = clinician.produce("patient-records", 2);
    assert!(
        refused_with(&v, TOPIC_AUTH),
        "before approval: {v}\n{}",
        proxy.output()
    );

    // …and exactly one request was written, however often the client retried.
    let deadline = Instant::now() + Duration::from_secs(5);
    while approvals(&policies).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let files = approvals(&policies);
    assert_eq!(files.len(), 1, "{files:?}\n{}", proxy.output());
    let mut aa: AccessApproval =
        serde_yaml::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(aa.metadata.namespace.as_deref(), Some("clinical"));
    assert_eq!(aa.spec.rule, "write-patient-records");
    assert_eq!(aa.spec.policy, "phi-access");
    assert_eq!(aa.spec.topics, vec!["patient-records".to_string()]);
    assert_eq!(aa.spec.operations, vec![Operation::Write]);
    assert_eq!(aa.spec.duration, "1h");
    assert_eq!(aa.spec.decision, Decision::Pending);
    assert!(aa.spec.requester.groups.iter().any(|g| g == "clinicians"));
    assert_eq!(aa.spec.workload.as_ref().unwrap().pod, "intake-0");
    // The request is logged (and audited) once the sink has written it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy.output().contains("access approval requested") {
        assert!(Instant::now() < deadline, "audit hook: {}", proxy.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Still pending: still refused.
    let v = clinician.produce("patient-records", 1);
    assert!(refused_with(&v, TOPIC_AUTH), "pending: {v}");

    // A person approves it, the directory-mode way: an approver listed by
    // User, and when (the grant lasts the rule's maxDuration from then).
    aa.spec.decision = Decision::Approved;
    aa.spec.decided_by = Some("dr.house@example.com".into());
    aa.status = Some(AccessApprovalStatus {
        decided_at: Some(chrono::Utc::now().to_rfc3339()),
        ..AccessApprovalStatus::default()
    });
    std::fs::write(&files[0], serde_yaml::to_string(&aa).unwrap()).unwrap();

    // The same producer, no restart of anything: allowed once the directory reloads.
    let start = Instant::now();
    loop {
        let v = clinician.produce("patient-records", 1);
        if v["ok"] == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not allowed after approval: {v}\n{}",
            proxy.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        proxy.output().contains("access approval used"),
        "{}",
        proxy.output()
    );
    // Nothing new was asked for once the grant is live.
    assert_eq!(approvals(&policies).len(), 1);

    // The audit trail names the AccessApproval: requested, then used.
    let name = aa.metadata.name.clone().unwrap();
    let spool = proxy.dir.path().join("audit");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = export(&spool);
        let names = |kind: &str| {
            records.iter().any(|r| {
                r["kind"] == kind && r["reason"].as_str().is_some_and(|t| t.contains(&name))
            })
        };
        if names("ApprovalRequested") && names("ApprovalUsed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "approval records missing from the audit trail: {records:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every record of a spool, via `streamgate-proxy audit export DIR --format jsonl`.
fn export(dir: &Path) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(proxy_bin())
        .args([
            "audit",
            "export",
            dir.to_str().unwrap(),
            "--format",
            "jsonl",
        ])
        .output()
        .unwrap();
    check(&out, "audit export")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
