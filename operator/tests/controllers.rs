//! Reconcilers against kube's mock service (tower-test), controller-rs
//! style: every HTTP request the reconciler makes is asserted — method, path,
//! field manager, server-side apply content type, the status it writes and
//! the Events it publishes — and a reconcile that should make no request is
//! checked to make none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use http::{Request, Response};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::{Value, json};
use streamgate_crds::{AccessApproval, MaskingRule, StreamPolicy};
use streamgate_operator::controller::{
    self, Context, access_approval, masking_rule, stream_policy,
};
use streamgate_operator::metrics::Metrics;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 5, 30, 0).unwrap()
}

fn setup(pods: Vec<Value>) -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (store, mut writer) = reflector::store::<Pod>();
    for p in pods {
        writer.apply_watcher_event(&watcher::Event::Apply(serde_json::from_value(p).unwrap()));
    }
    let ctx = Context::new(
        client,
        Arc::new(Metrics::default()),
        store,
        Some("op-0".into()),
        Arc::new(now),
    );
    (Arc::new(ctx), handle)
}

/// Next request must be `method path`; answer with `status`/`reply`; return the request's query and JSON body.
async fn expect(
    handle: &mut Handle,
    method: &str,
    path: &str,
    status: u16,
    reply: Value,
) -> (String, Value, Option<String>) {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request; expected {method} {path}"))
        .expect("service dropped");
    assert_eq!(req.method().as_str(), method, "{}", req.uri());
    assert_eq!(req.uri().path(), path);
    let query = req.uri().query().unwrap_or_default().to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    (query, body, content_type)
}

async fn expect_no_request(handle: &mut Handle) {
    // Either nothing arrives, or the client is gone (the reconciler finished and dropped it).
    if let Ok(Some((req, _))) =
        tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await
    {
        panic!("unexpected request: {} {}", req.method(), req.uri());
    }
}

/// A status apply: server-side apply with our field manager, forced, on the status subresource.
fn assert_status_apply(query: &str, content_type: Option<String>) {
    assert!(
        query.contains("fieldManager=streamgate-operator"),
        "{query}"
    );
    assert!(query.contains("force=true"), "{query}");
    assert_eq!(
        content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
}

fn assert_event(body: &Value, kind: &str, name: &str, type_: &str, reason: &str) -> String {
    assert_eq!(body["regarding"]["kind"], kind);
    assert_eq!(body["regarding"]["name"], name);
    assert_eq!(body["type"], type_);
    assert_eq!(body["reason"], reason);
    assert_eq!(body["reportingController"], "streamgate-operator");
    body["note"].as_str().unwrap().to_string()
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

// ---------- StreamPolicy ----------

fn policy(selector: Option<Value>) -> Value {
    let mut spec = json!({
        "rules": [{"name": "read-claims", "subjects": [{"kind": "Group", "name": "billing-analysts"}],
                   "topics": ["claims.*"], "operations": ["Read"], "effect": "Allow"}],
    });
    if let Some(s) = selector {
        spec["workloadSelector"] = s;
    }
    json!({"apiVersion": "streamgate.dev/v1alpha1", "kind": "StreamPolicy",
           "metadata": {"name": "phi-access", "namespace": "clinical", "generation": 3, "uid": "u-sp", "resourceVersion": "10"},
           "spec": spec})
}

fn pod(ns: &str, name: &str, app: &str, phase: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": ns, "labels": {"app": app, "streamgate.dev/injected": "true"}},
           "spec": {"containers": []}, "status": {"phase": phase}})
}

fn sp(v: Value) -> Arc<StreamPolicy> {
    Arc::new(serde_json::from_value(v).unwrap())
}

#[tokio::test]
async fn stream_policy_gets_ready_status_with_its_workload_count_and_an_event() {
    let pods = vec![
        pod("clinical", "billing-1", "billing", "Running"),
        pod("clinical", "billing-2", "billing", "Pending"),
        pod("clinical", "billing-3", "billing", "Succeeded"),
        pod("clinical", "intake-1", "intake", "Running"),
        pod("other", "billing-x", "billing", "Running"),
    ];
    let (ctx, mut handle) = setup(pods);
    let obj = sp(policy(Some(json!({"matchLabels": {"app": "billing"}}))));
    let task = tokio::spawn(stream_policy::reconcile(obj, ctx));
    let (query, body, ct) = expect(
        &mut handle,
        "PATCH",
        "/apis/streamgate.dev/v1alpha1/namespaces/clinical/streampolicies/phi-access/status",
        200,
        policy(None),
    )
    .await;
    assert_status_apply(&query, ct);
    assert_eq!(body["apiVersion"], "streamgate.dev/v1alpha1");
    assert_eq!(body["kind"], "StreamPolicy");
    assert_eq!(
        body["status"]["workloads"], 2,
        "running + pending billing pods of this namespace"
    );
    assert_eq!(body["status"]["observedGeneration"], 3);
    let ready = &body["status"]["conditions"][0];
    assert_eq!(ready["type"], "Ready");
    assert_eq!(ready["status"], "True");
    assert_eq!(ready["reason"], "Valid");
    assert_eq!(ready["lastTransitionTime"], "2026-11-27T05:30:00Z");
    let (_, ev, _) = expect(
        &mut handle,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/clinical/events",
        201,
        json!({}),
    )
    .await;
    assert_event(&ev, "StreamPolicy", "phi-access", "Normal", "Valid");
    // No collector configured: the trail lives only in each pod's spool.
    let sink = &body["status"]["conditions"][1];
    assert_eq!(sink["type"], "AuditSink");
    assert_eq!(sink["status"], "False");
    assert_eq!(sink["reason"], "NoCollector");
    let (_, ev, _) = expect(
        &mut handle,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/clinical/events",
        201,
        json!({}),
    )
    .await;
    assert_event(&ev, "StreamPolicy", "phi-access", "Warning", "NoCollector");
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(controller::RESYNC)
    );
}

#[tokio::test]
async fn a_configured_collector_is_reported_as_the_audit_sink() {
    let (ctx, mut handle) = setup(vec![]);
    let ctx = Arc::new(
        Arc::try_unwrap(ctx)
            .unwrap()
            .with_audit_sink(Some("https://otel.observability:4317".into())),
    );
    let task = tokio::spawn(stream_policy::reconcile(sp(policy(None)), ctx));
    let (_, body, _) = expect(
        &mut handle,
        "PATCH",
        "/apis/streamgate.dev/v1alpha1/namespaces/clinical/streampolicies/phi-access/status",
        200,
        policy(None),
    )
    .await;
    let sink = &body["status"]["conditions"][1];
    assert_eq!(sink["type"], "AuditSink");
    assert_eq!(sink["status"], "True");
    assert!(
        sink["message"]
            .as_str()
            .unwrap()
            .contains("https://otel.observability:4317")
    );
    for reason in ["Valid", "Shipping"] {
        let (_, ev, _) = expect(
            &mut handle,
            "POST",
            "/apis/events.k8s.io/v1/namespaces/clinical/events",
            201,
            json!({}),
        )
        .await;
        assert_event(&ev, "StreamPolicy", "phi-access", "Normal", reason);
    }
    task.await.unwrap().unwrap();
}

const NO_COLLECTOR: &str = "no OTLP collector is configured for injected sidecars (operator \
    --audit-otlp-endpoint, chart audit.otlp.endpoint): each pod's audit spool is the only copy \
    of its trail and is lost with the pod";

#[tokio::test]
async fn unchanged_stream_policy_makes_no_request() {
    let (ctx, mut handle) = setup(vec![]);
    let mut v = policy(None);
    v["status"] = json!({"observedGeneration": 3, "workloads": 0, "conditions": [{
        "type": "Ready", "status": "True", "reason": "Valid",
        "message": "valid (1 rules); no injected pod matches its workloadSelector yet",
        "lastTransitionTime": "2026-11-27T04:00:00Z", "observedGeneration": 3}, {
        "type": "AuditSink", "status": "False", "reason": "NoCollector",
        "message": NO_COLLECTOR, "lastTransitionTime": "2026-11-27T04:00:00Z",
        "observedGeneration": 3}]});
    let action = stream_policy::reconcile(sp(v), ctx).await.unwrap();
    assert_eq!(action, Action::requeue(controller::RESYNC));
    expect_no_request(&mut handle).await;
}

#[tokio::test]
async fn invalid_stream_policy_is_not_ready_and_says_what_to_fix() {
    let (ctx, mut handle) = setup(vec![]);
    let mut v = policy(None);
    v["spec"]["rules"][0]["approval"] = json!({"approvers": [], "maxDuration": "a while"});
    let task = tokio::spawn(stream_policy::reconcile(sp(v), ctx));
    let (_, body, _) = expect(
        &mut handle,
        "PATCH",
        "/apis/streamgate.dev/v1alpha1/namespaces/clinical/streampolicies/phi-access/status",
        200,
        policy(None),
    )
    .await;
    let ready = &body["status"]["conditions"][0];
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "Invalid");
    let msg = ready["message"].as_str().unwrap();
    assert!(msg.contains("approval.approvers: is empty"), "{msg}");
    assert!(
        msg.contains("approval.maxDuration: \"a while\" is not a duration"),
        "{msg}"
    );
    let (_, ev, _) = expect(
        &mut handle,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/clinical/events",
        201,
        json!({}),
    )
    .await;
    assert_event(&ev, "StreamPolicy", "phi-access", "Warning", "Invalid");
    let (_, ev, _) = expect(
        &mut handle,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/clinical/events",
        201,
        json!({}),
    )
    .await;
    assert_event(&ev, "StreamPolicy", "phi-access", "Warning", "NoCollector");
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn failed_status_write_is_an_error_with_growing_backoff() {
    let (ctx, mut handle) = setup(vec![]);
    let obj = sp(policy(None));
    let policy_fn = controller::error_policy::<StreamPolicy>(stream_policy::CONTROLLER);
    let mut delays = Vec::new();
    for _ in 0..3 {
        let task = tokio::spawn(stream_policy::reconcile(obj.clone(), ctx.clone()));
        expect(
            &mut handle,
            "PATCH",
            "/apis/streamgate.dev/v1alpha1/namespaces/clinical/streampolicies/phi-access/status",
            500,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "message": "etcd timeout"}),
        )
        .await;
        let err = task.await.unwrap().unwrap_err();
        delays.push(policy_fn(obj.clone(), &err, ctx.clone()));
    }
    assert_eq!(
        delays,
        vec![
            Action::requeue(Duration::from_secs(5)),
            Action::requeue(Duration::from_secs(10)),
            Action::requeue(Duration::from_secs(20))
        ]
    );
    let metrics = ctx.metrics.encode();
    assert!(
        metrics.contains("streamgate_operator_reconcile_errors_total{controller=\"streampolicy\",reason=\"api_status\"} 3"),
        "{metrics}"
    );
}

// ---------- MaskingRule ----------

#[tokio::test]
async fn masking_rule_with_hash_but_no_key_is_not_ready() {
    let (ctx, mut handle) = setup(vec![]);
    let mr: Arc<MaskingRule> = Arc::new(
        serde_json::from_value(json!({"apiVersion": "streamgate.dev/v1alpha1", "kind": "MaskingRule",
            "metadata": {"name": "patient-phi", "namespace": "clinical", "generation": 1},
            "spec": {"topics": ["patient-*"], "fields": [{"path": "$.patient.name", "strategy": "Hash"}]}}))
        .unwrap(),
    );
    let task = tokio::spawn(masking_rule::reconcile(mr, ctx));
    let (query, body, ct) = expect(
        &mut handle,
        "PATCH",
        "/apis/streamgate.dev/v1alpha1/namespaces/clinical/maskingrules/patient-phi/status",
        200,
        json!({"apiVersion": "streamgate.dev/v1alpha1", "kind": "MaskingRule",
               "metadata": {"name": "patient-phi", "namespace": "clinical"}, "spec": {"topics": ["patient-*"]}}),
    )
    .await;
    assert_status_apply(&query, ct);
    let ready = &body["status"]["conditions"][0];
    assert_eq!(ready["status"], "False");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("strategy: is Hash but spec.hashKeySecretRef is missing")
    );
    let (_, ev, _) = expect(
        &mut handle,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/clinical/events",
        201,
        json!({}),
    )
    .await;
    assert_event(&ev, "MaskingRule", "patient-phi", "Warning", "Invalid");
    task.await.unwrap().unwrap();
}

// ---------- AccessApproval ----------

const AA_STATUS: &str = "/apis/streamgate.dev/v1alpha1/namespaces/clinical/accessapprovals/write-patient-records-alice-7f3c9/status";
const SP_PATH: &str = "/apis/streamgate.dev/v1alpha1/namespaces/clinical/streampolicies/phi-access";

fn approval(decision: &str, status: Option<Value>) -> Arc<AccessApproval> {
    let mut v = json!({"apiVersion": "streamgate.dev/v1alpha1", "kind": "AccessApproval",
        "metadata": {"name": "write-patient-records-alice-7f3c9", "namespace": "clinical", "generation": 2, "uid": "u-aa"},
        "spec": {"requester": {"kind": "User", "name": "alice@example.com", "groups": ["clinicians"]},
                 "policy": "phi-access", "rule": "write-patient-records", "topics": ["patient-records"],
                 "operations": ["Write"], "duration": "1h", "decision": decision}});
    if decision != "Pending" {
        v["spec"]["decidedBy"] = json!("carol@example.com");
    }
    if let Some(s) = status {
        v["status"] = s;
    }
    Arc::new(serde_json::from_value(v).unwrap())
}

/// What the API server answers to a status apply (the object; its content is not used).
fn aa_reply() -> Value {
    serde_json::to_value(approval("Pending", None).as_ref()).unwrap()
}

fn approval_policy() -> Value {
    json!({"apiVersion": "streamgate.dev/v1alpha1", "kind": "StreamPolicy",
        "metadata": {"name": "phi-access", "namespace": "clinical"},
        "spec": {"rules": [{"name": "write-patient-records", "subjects": [{"kind": "Group", "name": "clinicians"}],
            "topics": ["patient-records"], "operations": ["Write"], "effect": "Allow",
            "approval": {"approvers": [{"kind": "Group", "name": "compliance-officers"}], "maxDuration": "30m"}}]}})
}

#[tokio::test]
async fn a_new_request_is_pending_and_tells_approvers_how_to_decide() {
    let (ctx, mut handle) = setup(vec![]);
    let task = tokio::spawn(access_approval::reconcile(approval("Pending", None), ctx));
    let (_, body, _) = expect(&mut handle, "PATCH", AA_STATUS, 200, aa_reply()).await;
    assert_eq!(body["status"]["phase"], "Pending");
    let ready = &body["status"]["conditions"][0];
    assert_eq!(ready["reason"], "AwaitingDecision");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("kubectl -n clinical patch aa write-patient-records-alice-7f3c9")
    );
    let (_, ev, _) = expect(
        &mut handle,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/clinical/events",
        201,
        json!({}),
    )
    .await;
    assert_event(
        &ev,
        "AccessApproval",
        "write-patient-records-alice-7f3c9",
        "Normal",
        "AwaitingDecision",
    );
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn approval_is_capped_by_the_rules_max_duration() {
    let (ctx, mut handle) = setup(vec![]);
    let prior = json!({"phase": "Pending", "conditions": []});
    let task = tokio::spawn(access_approval::reconcile(
        approval("Approved", Some(prior)),
        ctx,
    ));
    expect(&mut handle, "GET", SP_PATH, 200, approval_policy()).await;
    let (query, body, ct) = expect(&mut handle, "PATCH", AA_STATUS, 200, aa_reply()).await;
    assert_status_apply(&query, ct);
    let status = &body["status"];
    assert_eq!(status["phase"], "Approved");
    assert_eq!(status["decidedAt"], "2026-11-27T05:30:00Z");
    assert_eq!(
        status["expiresAt"], "2026-11-27T06:00:00Z",
        "1h requested, 30m allowed"
    );
    assert_eq!(status["conditions"][0]["status"], "True");
    let (_, ev, _) = expect(
        &mut handle,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/clinical/events",
        201,
        json!({}),
    )
    .await;
    let note = assert_event(
        &ev,
        "AccessApproval",
        "write-patient-records-alice-7f3c9",
        "Normal",
        "Approved",
    );
    assert!(
        note.contains("approved by carol@example.com until 2026-11-27T06:00:00Z"),
        "{note}"
    );
    // 30 min to expiry: the periodic resync comes first.
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(controller::RESYNC)
    );
}

#[tokio::test]
async fn a_live_grant_requeues_at_its_expiry_without_writing() {
    let (ctx, mut handle) = setup(vec![]);
    let aa = approval("Approved", None);
    // Build the exact status the controller would write 90 s before expiry.
    let mut status = serde_json::to_value(
        access_approval::desired_status(
            &aa,
            Some(&access_approval::Cap::Max(Duration::from_secs(1800))),
            now() - chrono::Duration::seconds(1710),
        )
        .0,
    )
    .unwrap();
    status["conditions"][0]["lastTransitionTime"] = json!("2026-11-27T05:01:30Z");
    let aa = approval("Approved", Some(status));
    let action = access_approval::reconcile(aa, ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(91)));
    expect_no_request(&mut handle).await;
}

#[tokio::test]
async fn a_grant_past_expires_at_becomes_expired_with_a_warning_event() {
    let (ctx, mut handle) = setup(vec![]);
    let status = json!({"phase": "Approved", "decidedAt": "2026-11-27T05:00:00Z", "expiresAt": "2026-11-27T05:29:59Z",
        "observedGeneration": 2,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Approved", "message": "x", "lastTransitionTime": "2026-11-27T05:00:00Z"}]});
    let task = tokio::spawn(access_approval::reconcile(
        approval("Approved", Some(status)),
        ctx,
    ));
    let (_, body, _) = expect(&mut handle, "PATCH", AA_STATUS, 200, aa_reply()).await;
    assert_eq!(body["status"]["phase"], "Expired");
    assert_eq!(
        body["status"]["expiresAt"], "2026-11-27T05:29:59Z",
        "expiry is never extended"
    );
    assert_eq!(body["status"]["conditions"][0]["status"], "False");
    let (_, ev, _) = expect(
        &mut handle,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/clinical/events",
        201,
        json!({}),
    )
    .await;
    assert_event(
        &ev,
        "AccessApproval",
        "write-patient-records-alice-7f3c9",
        "Warning",
        "Expired",
    );
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_denial_records_when() {
    let (ctx, mut handle) = setup(vec![]);
    let task = tokio::spawn(access_approval::reconcile(
        approval("Denied", Some(json!({"phase": "Pending"}))),
        ctx,
    ));
    let (_, body, _) = expect(&mut handle, "PATCH", AA_STATUS, 200, aa_reply()).await;
    assert_eq!(body["status"]["phase"], "Denied");
    assert_eq!(body["status"]["decidedAt"], "2026-11-27T05:30:00Z");
    assert!(body["status"].get("expiresAt").is_none());
    let (_, ev, _) = expect(
        &mut handle,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/clinical/events",
        201,
        json!({}),
    )
    .await;
    assert_event(
        &ev,
        "AccessApproval",
        "write-patient-records-alice-7f3c9",
        "Warning",
        "Denied",
    );
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_approval_whose_policy_is_gone_is_not_activated() {
    let (ctx, mut handle) = setup(vec![]);
    let task = tokio::spawn(access_approval::reconcile(
        approval("Approved", Some(json!({"phase": "Pending"}))),
        ctx,
    ));
    expect(&mut handle, "GET", SP_PATH, 404, not_found()).await;
    let (_, body, _) = expect(&mut handle, "PATCH", AA_STATUS, 200, aa_reply()).await;
    assert_eq!(body["status"]["phase"], "Pending");
    assert!(body["status"].get("expiresAt").is_none());
    let ready = &body["status"]["conditions"][0];
    assert_eq!(ready["reason"], "RuleNotFound");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("StreamPolicy \"phi-access\" does not exist")
    );
    // No phase change (Pending → Pending): no Event.
    expect_no_request(&mut handle).await;
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(60))
    );
}

// ---------- break-glass ----------

const BG_STATUS: &str = "/apis/streamgate.dev/v1alpha1/namespaces/clinical/accessapprovals/emergency-read-bob-1a2b3/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/clinical/events";

fn break_glass_use(requester_groups: Value, status: Option<Value>) -> Arc<AccessApproval> {
    let mut v = json!({"apiVersion": "streamgate.dev/v1alpha1", "kind": "AccessApproval",
        "metadata": {"name": "emergency-read-bob-1a2b3", "namespace": "clinical", "generation": 1,
                     "uid": "u-bg", "creationTimestamp": "2026-11-27T05:02:00Z"},
        "spec": {"requester": {"kind": "User", "name": "bob@example.com", "groups": requester_groups},
                 "policy": "phi-access", "rule": "emergency-read", "topics": ["patient-vitals"],
                 "operations": ["Read"], "duration": "1h", "breakGlass": true,
                 "reason": "ED trauma bay 3"}});
    if let Some(s) = status {
        v["status"] = s;
    }
    Arc::new(serde_json::from_value(v).unwrap())
}

fn break_glass_policy(review_within: &str) -> Value {
    json!({"apiVersion": "streamgate.dev/v1alpha1", "kind": "StreamPolicy",
        "metadata": {"name": "phi-access", "namespace": "clinical", "generation": 1, "uid": "u-sp"},
        "spec": {"rules": [{"name": "emergency-read", "subjects": [{"kind": "Group", "name": "clinicians"}],
            "topics": ["patient-vitals"], "operations": [], "effect": "Allow",
            "breakGlass": {"maxDuration": "30m", "operations": ["Read"], "reviewWithin": review_within,
                           "reviewers": [{"kind": "Group", "name": "compliance-officers"}]}}]}})
}

#[tokio::test]
async fn a_break_glass_request_is_live_at_once_until_max_duration_with_a_warning_event() {
    let (ctx, mut handle) = setup(vec![]);
    let task = tokio::spawn(access_approval::reconcile(
        break_glass_use(json!(["clinicians"]), None),
        ctx,
    ));
    expect(&mut handle, "GET", SP_PATH, 200, break_glass_policy("24h")).await;
    let (query, body, ct) = expect(&mut handle, "PATCH", BG_STATUS, 200, aa_reply()).await;
    assert_status_apply(&query, ct);
    let status = &body["status"];
    assert_eq!(status["phase"], "BreakGlass");
    // From its creation, 1h asked, 30m allowed: no approver waited for.
    assert_eq!(status["decidedAt"], "2026-11-27T05:02:00Z");
    assert_eq!(status["expiresAt"], "2026-11-27T05:32:00Z");
    assert_eq!(status["conditions"][0]["status"], "True");
    let (_, ev, _) = expect(&mut handle, "POST", EVENTS, 201, json!({})).await;
    let note = assert_event(
        &ev,
        "AccessApproval",
        "emergency-read-bob-1a2b3",
        "Warning",
        "BreakGlass",
    );
    assert!(note.contains("\"ED trauma bay 3\""), "{note}");
    assert!(note.contains("awaiting review"), "{note}");
    // Wakes at the end of the grant (2 min + 1 s).
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(2 * 60 + 1))
    );
}

#[tokio::test]
async fn break_glass_by_someone_outside_the_rule_is_denied_and_grants_nothing() {
    let (ctx, mut handle) = setup(vec![]);
    let task = tokio::spawn(access_approval::reconcile(
        break_glass_use(json!(["billing-analysts"]), None),
        ctx,
    ));
    expect(&mut handle, "GET", SP_PATH, 200, break_glass_policy("24h")).await;
    let (_, body, _) = expect(&mut handle, "PATCH", BG_STATUS, 200, aa_reply()).await;
    assert_eq!(body["status"]["phase"], "Denied");
    assert!(body["status"].get("expiresAt").is_none());
    let (_, ev, _) = expect(&mut handle, "POST", EVENTS, 201, json!({})).await;
    let note = assert_event(
        &ev,
        "AccessApproval",
        "emergency-read-bob-1a2b3",
        "Warning",
        "NoBreakGlassRule",
    );
    assert!(
        note.contains("not among the subjects of rule \"emergency-read\""),
        "{note}"
    );
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_unreviewed_break_glass_use_past_review_within_sets_review_overdue() {
    let (ctx, mut handle) = setup(vec![]);
    let (store, mut writer) = reflector::store::<AccessApproval>();
    // Used from 05:00; reviewWithin 20m → overdue at 05:20 (now is 05:30).
    let used = break_glass_use(
        json!(["clinicians"]),
        Some(
            json!({"phase": "BreakGlass", "decidedAt": "2026-11-27T05:00:00Z",
                    "expiresAt": "2026-11-27T05:30:00Z"}),
        ),
    );
    writer.apply_watcher_event(&watcher::Event::Apply(used.as_ref().clone()));
    let ctx = Arc::new(Arc::into_inner(ctx).unwrap().with_approvals(store.clone()));
    let task = tokio::spawn(stream_policy::reconcile(sp(break_glass_policy("20m")), ctx));
    let (_, body, _) = expect(
        &mut handle,
        "PATCH",
        "/apis/streamgate.dev/v1alpha1/namespaces/clinical/streampolicies/phi-access/status",
        200,
        break_glass_policy("20m"),
    )
    .await;
    let overdue = body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ReviewOverdue")
        .cloned()
        .unwrap();
    assert_eq!(overdue["status"], "True");
    assert_eq!(overdue["reason"], "Unreviewed");
    let message = overdue["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "1 break-glass use(s) unreviewed past their deadline: emergency-read-bob-1a2b3"
        ),
        "{message}"
    );
    // Ready, AuditSink, then ReviewOverdue: a Warning.
    expect(&mut handle, "POST", EVENTS, 201, json!({})).await;
    expect(&mut handle, "POST", EVENTS, 201, json!({})).await;
    let (_, ev, _) = expect(&mut handle, "POST", EVENTS, 201, json!({})).await;
    assert_event(&ev, "StreamPolicy", "phi-access", "Warning", "Unreviewed");
    task.await.unwrap().unwrap();

    // Within its deadline (reviewWithin 33m → 05:33): not overdue, and the
    // reconcile wakes at the deadline (3 min + 1 s, before the resync).
    let (ctx, mut handle) = setup(vec![]);
    let ctx = Arc::new(Arc::into_inner(ctx).unwrap().with_approvals(store));
    let task = tokio::spawn(stream_policy::reconcile(sp(break_glass_policy("33m")), ctx));
    let (_, body, _) = expect(
        &mut handle,
        "PATCH",
        "/apis/streamgate.dev/v1alpha1/namespaces/clinical/streampolicies/phi-access/status",
        200,
        break_glass_policy("33m"),
    )
    .await;
    let overdue = &body["status"]["conditions"][2];
    assert_eq!(overdue["type"], "ReviewOverdue");
    assert_eq!(overdue["status"], "False");
    for _ in 0..3 {
        expect(&mut handle, "POST", EVENTS, 201, json!({})).await;
    }
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(3 * 60 + 1))
    );
}
