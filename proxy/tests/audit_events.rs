//! Kubernetes Events from the audit trail, published through kube-runtime's recorder
//! against kube's mock service (tower-test): the Event bodies the API server receives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::client::Body;
use serde_json::Value;
use streamgate_proxy::audit::chain::Chain;
use streamgate_proxy::audit::events::{EventsSink, retry_delay};
use streamgate_proxy::audit::record::CheckpointRef;
use streamgate_proxy::audit::shipper::Sink;
use streamgate_proxy::audit::{
    AuditDecision, AuditRecord, Operation, PodIdentity, RecordKind, ResourceAccess, Subject,
};
use tokio::sync::mpsc;

/// A mock API server: answers each request with `statuses[i]` (then 201) and reports
/// (method, path, event body) of every request.
fn mock_client(
    statuses: Vec<StatusCode>,
) -> (
    kube::Client,
    mpsc::UnboundedReceiver<(Method, String, K8sEvent)>,
) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut i = 0;
        while let Some((request, send)) = handle.next_request().await {
            let (method, path) = (request.method().clone(), request.uri().path().to_owned());
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let event: K8sEvent = serde_json::from_slice(&bytes).unwrap();
            let status = statuses.get(i).copied().unwrap_or(StatusCode::CREATED);
            i += 1;
            let body = if status.is_success() {
                bytes.to_vec()
            } else {
                serde_json::to_vec(&serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "etcd unavailable", "reason": "InternalError", "code": status.as_u16()
                }))
                .unwrap()
            };
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(body))
                    .unwrap(),
            );
            if status.is_success() {
                tx.send((method, path, event)).unwrap();
            }
        }
    });
    (kube::Client::new(service, "default"), rx)
}

fn pod() -> PodIdentity {
    PodIdentity {
        pod: Some("intake-5d8f7-abcde".into()),
        namespace: Some("clinical".into()),
        service_account: Some("intake".into()),
    }
}

/// Records of a minute that is over: 3 allowed reads + 1 allowed write by alice on
/// patient-records, 2 denied reads by mallory, then a checkpoint and a policy reload.
fn records() -> Vec<Value> {
    let at = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let req = |who: &str, op, d, t: &str| {
        AuditRecord::request("Fetch", 13, op)
            .at(at(t))
            .subject(Subject::user(who, vec!["clinicians".into()], None))
            .resource(ResourceAccess::partition(
                "patient-records",
                0,
                Some((0, 9)),
                10,
                1000,
            ))
            .decision(d, "rule")
    };
    let mut recs = vec![
        req(
            "alice@example.com",
            Operation::Read,
            AuditDecision::Allow,
            "2026-11-26T10:15:01Z",
        ),
        req(
            "alice@example.com",
            Operation::Read,
            AuditDecision::Allow,
            "2026-11-26T10:15:20Z",
        ),
        req(
            "mallory",
            Operation::Read,
            AuditDecision::Deny,
            "2026-11-26T10:15:21Z",
        ),
        req(
            "alice@example.com",
            Operation::Write,
            AuditDecision::Allow,
            "2026-11-26T10:15:40Z",
        ),
        req(
            "mallory",
            Operation::Read,
            AuditDecision::Deny,
            "2026-11-26T10:15:41Z",
        ),
        req(
            "alice@example.com",
            Operation::Read,
            AuditDecision::Allow,
            "2026-11-26T10:15:59Z",
        ),
    ];
    let mut cp = AuditRecord::event(RecordKind::Checkpoint, "head");
    cp.checkpoint = Some(CheckpointRef {
        seq: 6,
        hash: "sha256:00ff".into(),
        genesis: None,
    });
    recs.push(cp);
    recs.push(AuditRecord::event(
        RecordKind::PolicyReload,
        "phi-access generation 4",
    ));
    let mut chain = Chain::start("sha256:genesis".into());
    recs.into_iter()
        .map(|mut r| {
            let line = chain.link(&mut r).unwrap();
            chain.commit(&r);
            serde_json::from_str(&line).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn aggregated_events_regard_the_pod() {
    let (client, mut published) = mock_client(vec![]);
    let mut sink = EventsSink::new(client, &pod(), Some("0b6c9f2e-uid".into()));
    sink.deliver(&records()).await.unwrap();
    assert_eq!(
        sink.ack_floor(8),
        8,
        "everything published: the cursor may advance"
    );

    let mut events = Vec::new();
    while let Ok(e) = published.try_recv() {
        events.push(e);
    }
    assert_eq!(
        events.len(),
        4,
        "two aggregates, a checkpoint, a reload: {events:#?}"
    );
    for (method, path, ev) in &events {
        assert_eq!(method, Method::POST);
        assert_eq!(path, "/apis/events.k8s.io/v1/namespaces/clinical/events");
        let regarding = ev.regarding.as_ref().unwrap();
        assert_eq!(regarding.kind.as_deref(), Some("Pod"));
        assert_eq!(regarding.name.as_deref(), Some("intake-5d8f7-abcde"));
        assert_eq!(regarding.namespace.as_deref(), Some("clinical"));
        assert_eq!(regarding.uid.as_deref(), Some("0b6c9f2e-uid"));
        assert_eq!(ev.reporting_controller.as_deref(), Some("streamgate-proxy"));
        assert_eq!(ev.reporting_instance.as_deref(), Some("intake-5d8f7-abcde"));
    }
    let bodies: Vec<(&str, &str, &str, &str)> = events
        .iter()
        .map(|(_, _, e)| {
            (
                e.type_.as_deref().unwrap(),
                e.reason.as_deref().unwrap(),
                e.action.as_deref().unwrap(),
                e.note.as_deref().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        bodies,
        vec![
            (
                "Normal",
                "AccessAllowed",
                "Write,Read",
                "User alice@example.com Write/Read topic patient-records: 4 requests, 40 records, 4000 bytes Allow in minute 2026-11-26T10:15Z (audit seq 1..6)"
            ),
            (
                "Warning",
                "AccessDenied",
                "Read",
                "User mallory Read topic patient-records: 2 requests, 20 records, 2000 bytes Deny in minute 2026-11-26T10:15Z (audit seq 3..5)"
            ),
            (
                "Normal",
                "AuditCheckpoint",
                "Checkpoint",
                "audit chain head: seq 6, hash sha256:00ff"
            ),
            (
                "Normal",
                "PolicyReload",
                "PolicyReload",
                "phi-access generation 4 (audit seq 8)"
            ),
        ]
    );
}

#[tokio::test]
async fn a_failed_publish_is_retried_and_holds_the_cursor() {
    let (client, mut published) = mock_client(vec![StatusCode::INTERNAL_SERVER_ERROR]);
    let mut sink = EventsSink::new(client, &pod(), None);
    sink.deliver(&records()).await.unwrap();
    assert!(
        published.try_recv().is_err(),
        "the first Event was refused, nothing published after it"
    );
    assert_eq!(
        sink.ack_floor(8),
        0,
        "the cursor stays before the unpublished aggregate (seq 1)"
    );

    // Within the backoff nothing is tried again (no attempt per batch)…
    sink.idle(false).await;
    assert!(published.try_recv().is_err(), "no retry during the backoff");
    // …after it, everything held goes out in order.
    tokio::time::sleep(retry_delay(1) + std::time::Duration::from_millis(100)).await;
    sink.idle(false).await;
    let mut reasons = Vec::new();
    while let Ok((_, _, e)) = published.try_recv() {
        reasons.push(e.reason.unwrap());
    }
    assert_eq!(
        reasons,
        vec![
            "AccessAllowed",
            "AccessDenied",
            "AuditCheckpoint",
            "PolicyReload"
        ]
    );
    assert_eq!(sink.ack_floor(8), 8);
}
