//! Asking for AccessApprovals: de-duplication and rate limit, the kube sink
//! (the POST the API server receives, via kube's tower-test mock), the
//! directory sink, and the directory-mode approval round trip (request file
//! → a person's edit → a live grant) through the real directory loader.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use streamgate_crds::matching::Principal;
use streamgate_crds::{AccessApproval, Operation, SubjectKind};
use streamgate_proxy::approval::{
    ApprovalRequest, ApprovalRequester, ApprovalSink, Created, Dedup, DedupConfig,
    build_access_approval,
};
use streamgate_proxy::identity::workload::Workload;
use streamgate_proxy::policy::decide::{CompiledPolicy, PolicyDecision};
use streamgate_proxy::policy::enforce::TopicDecision;
use streamgate_proxy::policy::source_dir::load_dir;
use tokio::sync::mpsc;

const POLICY: &str = r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: phi-access, namespace: clinical}
spec:
  identity:
    oidc: {issuer: "https://idp.example.com", audiences: [kafka]}
  rules:
    - name: write-patient-records
      subjects: [{kind: Group, name: clinicians}]
      topics: [patient-records]
      operations: [Write]
      effect: Allow
      approval:
        approvers: [{kind: Group, name: compliance-officers}, {kind: User, name: dr.house@example.com}]
        maxDuration: 1h
"#;

fn alice() -> Principal {
    Principal {
        kind: SubjectKind::User,
        name: "alice@example.com".into(),
        namespace: None,
        groups: vec!["clinicians".into()],
        issuer: Some("https://idp.example.com".into()),
    }
}

fn request() -> ApprovalRequest {
    ApprovalRequest {
        principal: alice(),
        pod: Some("intake-0".into()),
        service_account: Some("intake-app".into()),
        namespace: "clinical".into(),
        policy: "phi-access".into(),
        rule: "write-patient-records".into(),
        topics: vec!["patient-records".into()],
        operations: vec![Operation::Write],
        duration: "1h".into(),
        break_glass: None,
    }
}

fn workload() -> Workload {
    Workload {
        service_account: "intake-app".into(),
        pod_name: Some("intake-0".into()),
        namespace: "clinical".into(),
        labels: BTreeMap::new(),
    }
}

fn compiled(dir: &std::path::Path) -> CompiledPolicy {
    let inputs = load_dir(dir, "clinical").unwrap();
    CompiledPolicy::compile(
        inputs.policies,
        inputs.masking,
        inputs.grants,
        &BTreeMap::new(),
    )
}

#[test]
fn dedup_suppresses_repeats_until_the_window_passes() {
    let mut d = Dedup::new(DedupConfig {
        per_key: Duration::from_secs(60),
        burst: 100,
        window: Duration::from_secs(60),
    });
    let t0 = Instant::now();
    assert!(d.admit("a", t0));
    assert!(!d.admit("a", t0 + Duration::from_secs(1)));
    assert!(d.admit("b", t0 + Duration::from_secs(1)));
    assert!(d.admit("a", t0 + Duration::from_secs(61)));
    d.forget("b");
    assert!(d.admit("b", t0 + Duration::from_secs(2)));
}

#[test]
fn rate_limit_caps_new_requests_across_keys() {
    let mut d = Dedup::new(DedupConfig {
        per_key: Duration::from_secs(600),
        burst: 3,
        window: Duration::from_secs(10),
    });
    let t0 = Instant::now();
    let admitted = (0..10).filter(|i| d.admit(&format!("k{i}"), t0)).count();
    assert_eq!(admitted, 3);
    assert!(d.admit("k9", t0 + Duration::from_secs(11)));
}

#[tokio::test]
async fn dir_sink_writes_once_and_never_overwrites_a_decision() {
    let dir = tempfile::tempdir().unwrap();
    let sink = ApprovalSink::Dir(dir.path().join("approvals"));
    let aa = build_access_approval(request()).unwrap();
    let name = aa.metadata.name.clone().unwrap();
    assert_eq!(sink.create(&aa).await.unwrap(), Created::New);
    let path = dir.path().join("approvals").join(format!("{name}.yaml"));
    let back: AccessApproval =
        serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(back.spec, aa.spec);
    assert_eq!(back.metadata.name, aa.metadata.name);
    assert_eq!(back.metadata.labels, aa.metadata.labels);
    // A person edits the file; asking again must not undo that.
    std::fs::write(&path, "edited").unwrap();
    assert_eq!(sink.create(&aa).await.unwrap(), Created::AlreadyExists);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "edited");
    // No temp files left for the directory source to trip over.
    let names: Vec<String> = std::fs::read_dir(dir.path().join("approvals"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![format!("{name}.yaml")]);
}

/// A mock API server answering each request with `statuses[i]` (then 201),
/// reporting (method, path, body) of each. A success echoes the request body;
/// a failure is a `Status` with the reason of its code.
fn mock_client(
    statuses: Vec<StatusCode>,
) -> (
    kube::Client,
    mpsc::UnboundedReceiver<(Method, String, serde_json::Value)>,
) {
    scripted_client(
        statuses
            .into_iter()
            .map(|s| (s, serde_json::Value::Null))
            .collect(),
    )
}

/// Like [`mock_client`], with an answer body per request (`Null`: the default).
fn scripted_client(
    answers: Vec<(StatusCode, serde_json::Value)>,
) -> (
    kube::Client,
    mpsc::UnboundedReceiver<(Method, String, serde_json::Value)>,
) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut i = 0;
        while let Some((request, send)) = handle.next_request().await {
            let (method, path) = (request.method().clone(), request.uri().path().to_owned());
            let bytes = request.into_body().collect_bytes().await.unwrap();
            // GETs have no body.
            let body: serde_json::Value =
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            let (status, answer) = answers
                .get(i)
                .cloned()
                .unwrap_or((StatusCode::CREATED, serde_json::Value::Null));
            i += 1;
            let answer = if !answer.is_null() {
                serde_json::to_vec(&answer).unwrap()
            } else if status.is_success() {
                bytes.to_vec()
            } else {
                let reason = match status {
                    StatusCode::CONFLICT => "AlreadyExists",
                    StatusCode::NOT_FOUND => "NotFound",
                    _ => "Forbidden",
                };
                serde_json::to_vec(&serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": reason, "reason": reason, "code": status.as_u16()
                }))
                .unwrap()
            };
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(answer))
                    .unwrap(),
            );
            tx.send((method, path, body)).unwrap();
        }
    });
    (kube::Client::new(service, "default"), rx)
}

/// The request as the API server holds it, in `phase`, expiring at `expires_at`.
fn held(aa: &AccessApproval, phase: &str, expires_at: &str) -> serde_json::Value {
    let mut v = serde_json::to_value(aa).unwrap();
    v["status"] = serde_json::json!({"phase": phase, "expiresAt": expires_at});
    v
}

#[tokio::test]
async fn kube_sink_files_a_successor_when_the_name_is_held_by_an_expired_grant() {
    let aa = build_access_approval(request()).unwrap();
    let name = aa.metadata.name.clone().unwrap();
    let (client, mut seen) = scripted_client(vec![
        (StatusCode::CONFLICT, serde_json::Value::Null),
        (StatusCode::OK, held(&aa, "Expired", "2026-01-01T00:00:00Z")),
        (StatusCode::CREATED, serde_json::Value::Null),
    ]);
    let sink = ApprovalSink::Kube(client);
    let (filed, created) = sink.create_named(&aa).await.unwrap();
    assert_eq!(created, Created::New);
    let hash = name.rsplit_once('-').unwrap().1;
    assert_eq!(
        filed,
        format!("write-patient-records-alice-example-com-r2-{hash}")
    );
    let (m1, _, _) = seen.recv().await.unwrap();
    let (m2, p2, _) = seen.recv().await.unwrap();
    let (m3, _, body) = seen.recv().await.unwrap();
    assert_eq!((m1, m2, m3), (Method::POST, Method::GET, Method::POST));
    assert!(p2.ends_with(&format!("/accessapprovals/{name}")), "{p2}");
    assert_eq!(body["metadata"]["name"], filed);
    assert_eq!(body["spec"]["decision"], "Pending");
}

#[tokio::test]
async fn kube_sink_leaves_a_pending_or_denied_holder_alone() {
    let aa = build_access_approval(request()).unwrap();
    for phase in ["Pending", "Denied"] {
        let (client, mut seen) = scripted_client(vec![
            (StatusCode::CONFLICT, serde_json::Value::Null),
            (StatusCode::OK, held(&aa, phase, "2026-01-01T00:00:00Z")),
        ]);
        let sink = ApprovalSink::Kube(client);
        let (filed, created) = sink.create_named(&aa).await.unwrap();
        assert_eq!(created, Created::AlreadyExists, "{phase}");
        assert_eq!(Some(filed), aa.metadata.name.clone());
        seen.recv().await.unwrap();
        seen.recv().await.unwrap();
        assert!(seen.try_recv().is_err(), "{phase}: no third call");
    }
}

#[tokio::test]
async fn kube_sink_posts_the_approval_and_accepts_already_exists() {
    // The conflict's holder is then looked up (gone here: left alone).
    let (client, mut seen) = mock_client(vec![
        StatusCode::CREATED,
        StatusCode::CONFLICT,
        StatusCode::NOT_FOUND,
    ]);
    let sink = ApprovalSink::Kube(client);
    let aa = build_access_approval(request()).unwrap();
    assert_eq!(sink.create(&aa).await.unwrap(), Created::New);
    let (method, path, body) = seen.recv().await.unwrap();
    assert_eq!(method, Method::POST);
    assert_eq!(
        path,
        "/apis/streamgate.dev/v1alpha1/namespaces/clinical/accessapprovals"
    );
    assert_eq!(body["kind"], "AccessApproval");
    assert_eq!(body["metadata"]["name"], aa.metadata.name.clone().unwrap());
    assert_eq!(
        body["metadata"]["labels"]["streamgate.dev/rule"],
        "write-patient-records"
    );
    assert_eq!(body["spec"]["requester"]["name"], "alice@example.com");
    assert_eq!(body["spec"]["workload"]["pod"], "intake-0");
    assert_eq!(body["spec"]["decision"], "Pending");
    assert_eq!(body["spec"]["duration"], "1h");
    assert_eq!(body["spec"]["operations"], serde_json::json!(["Write"]));
    assert!(body.get("status").is_none_or(serde_json::Value::is_null));
    assert_eq!(sink.create(&aa).await.unwrap(), Created::AlreadyExists);
}

#[tokio::test]
async fn kube_sink_reports_other_api_errors() {
    let (client, _seen) = mock_client(vec![StatusCode::FORBIDDEN]);
    let sink = ApprovalSink::Kube(client);
    let aa = build_access_approval(request()).unwrap();
    assert!(sink.create(&aa).await.is_err());
}

async fn wait_for_yaml(dir: &std::path::Path, n: usize) -> Vec<std::path::PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("write-")
            })
            .collect();
        if files.len() >= n || Instant::now() > deadline {
            return files;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn needs_approval_becomes_a_request_and_an_edit_becomes_a_grant() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    let policy = compiled(dir.path());
    let decision = policy.decide(&alice(), Operation::Write, "patient-records");
    assert!(
        matches!(decision, PolicyDecision::NeedsApproval { .. }),
        "{decision:?}"
    );

    let w = workload();
    let requester = ApprovalRequester::new(
        ApprovalSink::Dir(dir.path().to_path_buf()),
        "clinical".into(),
        Some(&w),
        DedupConfig::default(),
    );
    let decisions = vec![TopicDecision {
        topic: "patient-records".into(),
        operation: Operation::Write,
        decision,
    }];
    // A client retrying many times asks once.
    for _ in 0..5 {
        requester.on_decisions(&policy, Some(&alice()), None, &decisions);
    }
    let files = wait_for_yaml(dir.path(), 1).await;
    assert_eq!(files.len(), 1, "{files:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(wait_for_yaml(dir.path(), 2).await.len(), 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let aa: AccessApproval = serde_yaml::from_str(&text).unwrap();
    assert_eq!(aa.spec.duration, "1h", "the rule's maxDuration");
    assert_eq!(
        aa.spec.workload.unwrap().service_account.as_deref(),
        Some("intake-app")
    );

    // The pending request loads with the policy and grants nothing.
    let still = compiled(dir.path()).decide(&alice(), Operation::Write, "patient-records");
    assert!(
        matches!(still, PolicyDecision::NeedsApproval { .. }),
        "{still:?}"
    );

    // alice approving her own request in the file grants nothing.
    let decided_at = chrono::Utc::now().to_rfc3339();
    let by = |who: &str| {
        text.replace(
            "decision: Pending",
            &format!("decision: Approved\n  decidedBy: {who}"),
        ) + &format!("status:\n  decidedAt: \"{decided_at}\"\n")
    };
    std::fs::write(&files[0], by("alice@example.com")).unwrap();
    let mine = compiled(dir.path()).decide(&alice(), Operation::Write, "patient-records");
    assert!(
        matches!(mine, PolicyDecision::NeedsApproval { .. }),
        "{mine:?}"
    );

    // The local approver's edit (see the approval module docs).
    std::fs::write(&files[0], by("dr.house@example.com")).unwrap();
    let now = compiled(dir.path()).decide(&alice(), Operation::Write, "patient-records");
    assert_eq!(
        now,
        PolicyDecision::Allow {
            policy: "phi-access".into(),
            rule: "write-patient-records".into(),
            grant: aa.metadata.name.clone(),
        }
    );
}

#[tokio::test]
async fn no_principal_or_no_approval_rule_asks_for_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    let policy = compiled(dir.path());
    let requester = ApprovalRequester::new(
        ApprovalSink::Dir(dir.path().to_path_buf()),
        "clinical".into(),
        None,
        DedupConfig::default(),
    );
    let needs = vec![TopicDecision {
        topic: "patient-records".into(),
        operation: Operation::Write,
        decision: PolicyDecision::NeedsApproval {
            policy: "phi-access".into(),
            rule: "write-patient-records".into(),
        },
    }];
    requester.on_decisions(&policy, None, None, &needs);
    let unknown_rule = vec![TopicDecision {
        topic: "patient-records".into(),
        operation: Operation::Write,
        decision: PolicyDecision::NeedsApproval {
            policy: "phi-access".into(),
            rule: "no-such-rule".into(),
        },
    }];
    assert!(
        requester
            .requests_for(&policy, &alice(), &unknown_rule)
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(wait_for_yaml(dir.path(), 1).await.is_empty());
}

#[test]
fn approval_events_become_audit_records_naming_the_access_approval() {
    use streamgate_proxy::approval::{ApprovalEvent, audit_subject};
    use streamgate_proxy::audit::RecordKind;
    let requested = ApprovalEvent::Requested {
        name: "write-patient-records-alice-0123456789".into(),
        namespace: "clinical".into(),
        requester: "alice@example.com".into(),
        rule: "write-patient-records".into(),
        created: true,
    }
    .audit_record(Some(audit_subject(&alice())));
    assert_eq!(requested.kind, RecordKind::ApprovalRequested);
    let reason = requested.reason.clone().unwrap();
    assert!(
        reason.contains("clinical/write-patient-records-alice-0123456789"),
        "{reason}"
    );
    assert_eq!(requested.subject.unwrap().name, "alice@example.com");
    // A ServiceAccount is named as the request records name it.
    let sa = Principal {
        kind: SubjectKind::ServiceAccount,
        name: "intake".into(),
        namespace: Some("clinical".into()),
        groups: vec![],
        issuer: None,
    };
    assert_eq!(
        audit_subject(&sa).name,
        "system:serviceaccount:clinical:intake"
    );

    let used = ApprovalEvent::Used {
        name: "write-patient-records-alice-0123456789".into(),
        requester: "alice@example.com".into(),
        rule: "write-patient-records".into(),
        topic: "patient-records".into(),
    }
    .audit_record(None);
    assert_eq!(used.kind, RecordKind::ApprovalUsed);
    assert!(used.reason.unwrap().contains("patient-records"));
}

/// Issue 12 item 7: the topic names a client sent are asked for only when
/// they are Kafka topic names; `patients.**` (which an approver would have
/// granted as a glob) is left out, the real topic still asked for.
#[tokio::test]
async fn topics_with_wildcards_are_not_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    let policy = compiled(dir.path());
    let requester = ApprovalRequester::new(
        ApprovalSink::Dir(dir.path().to_path_buf()),
        "clinical".into(),
        None,
        DedupConfig::default(),
    );
    let needs = |topic: &str| TopicDecision {
        topic: topic.into(),
        operation: Operation::Write,
        decision: PolicyDecision::NeedsApproval {
            policy: "phi-access".into(),
            rule: "write-patient-records".into(),
        },
    };
    let requests = requester.requests_for(
        &policy,
        &alice(),
        &[needs("patients.**"), needs("patient-records"), needs("*")],
    );
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].topics, vec!["patient-records".to_string()]);
    // Nothing but wildcards: nothing to ask for.
    assert!(
        requester
            .requests_for(&policy, &alice(), &[needs("patients.**")])
            .is_empty()
    );
}
