//! StreamPolicy controller under the cluster admin's topic grants, against
//! kube's mock service (tower-test), in the style of `controllers.rs`: the
//! status the operator writes says which rules and globs fall outside the
//! namespace's grant, so a namespace cannot grant itself another's topics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use http::{Request, Response};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::client::Body;
use kube::runtime::reflector;
use serde_json::{Value, json};
use streamgate_crds::StreamPolicy;
use streamgate_operator::controller::topic_grants::TopicGrants;
use streamgate_operator::controller::{Context, stream_policy};
use streamgate_operator::metrics::Metrics;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 5, 30, 0).unwrap()
}

fn setup(grants: Option<&str>) -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (store, _writer) = reflector::store::<Pod>();
    let mut ctx = Context::new(
        client,
        Arc::new(Metrics::default()),
        store,
        Some("op-0".into()),
        Arc::new(now),
    );
    if let Some(g) = grants {
        ctx = ctx.with_topic_grants(TopicGrants::parse(g).unwrap());
    }
    (Arc::new(ctx), handle)
}

/// Next request must be `method path`; answer 200 with `reply`; return its JSON body.
async fn expect(handle: &mut Handle, method: &str, path: &str, reply: Value) -> Value {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request; expected {method} {path}"))
        .expect("service dropped");
    assert_eq!(req.method().as_str(), method, "{}", req.uri());
    assert_eq!(req.uri().path(), path);
    let bytes = req.into_body().collect_bytes().await.unwrap();
    send.send_response(
        Response::builder()
            .status(200)
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    serde_json::from_slice(&bytes).unwrap()
}

const STATUS: &str = "/apis/streamgate.dev/v1alpha1/namespaces/billing/streampolicies/grab/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/billing/events";

/// A policy in `billing` that also allows reading `clinical`'s patient topics.
fn grabbing_policy() -> Arc<StreamPolicy> {
    Arc::new(serde_json::from_value(policy_json()).unwrap())
}

fn policy_json() -> Value {
    let rule = |name: &str, topics: Value, effect: &str| {
        json!({"name": name, "subjects": [{"kind": "Group", "name": "billing-analysts"}],
               "topics": topics, "operations": ["Read"], "effect": effect})
    };
    json!({
            "apiVersion": "streamgate.dev/v1alpha1", "kind": "StreamPolicy",
            "metadata": {"name": "grab", "namespace": "billing", "generation": 5, "uid": "u", "resourceVersion": "1"},
            "spec": {"rules": [
                rule("own-claims", json!(["claims.2026"]), "Allow"),
                rule("patients", json!(["claims.*", "patient-*"]), "Allow"),
                rule("everything", json!(["**"]), "Allow"),
                rule("no-ssn", json!(["**"]), "Deny"),
            ]}
    })
}

const GRANTS: &str = "clinical: [\"patient-*\", \"claims.**\"]\nbilling: [\"claims.**\"]\n";

#[tokio::test]
async fn a_namespace_cannot_grant_itself_another_namespaces_topics() {
    let (ctx, mut handle) = setup(Some(GRANTS));
    let task = tokio::spawn(stream_policy::reconcile(grabbing_policy(), ctx));
    let body = expect(&mut handle, "PATCH", STATUS, policy_json()).await;
    let status = &body["status"];
    assert_eq!(status["observedGeneration"], 5);
    assert_eq!(status["topicGrants"], "Enforced");
    assert_eq!(
        status["ungrantedRules"],
        json!(["patients", "everything"]),
        "the Allow rules reaching outside billing's grant; the Deny rule needs no grant"
    );
    let ready = &status["conditions"][0];
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "TopicsNotGranted");
    let msg = ready["message"].as_str().unwrap();
    assert!(
        msg.contains("rule \"patients\" names patient-*")
            && msg.contains("rule \"everything\" names **")
            && msg.contains("(claims.**)"),
        "{msg}"
    );
    assert!(
        !msg.contains("own-claims") && !msg.contains("no-ssn") && !msg.contains("claims.*,"),
        "only what is outside the grant is named: {msg}"
    );
    let ev = expect(&mut handle, "POST", EVENTS, json!({})).await;
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["reason"], "TopicsNotGranted");
    expect(&mut handle, "POST", EVENTS, json!({})).await; // AuditSink: NoCollector
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn within_the_grant_or_without_grants_the_policy_is_ready() {
    // Same policy, but the cluster admin granted billing everything it names.
    let (ctx, mut handle) = setup(Some("billing: [\"claims.**\", \"patient-*\", \"**\"]"));
    let task = tokio::spawn(stream_policy::reconcile(grabbing_policy(), ctx));
    let body = expect(&mut handle, "PATCH", STATUS, policy_json()).await;
    assert_eq!(body["status"]["conditions"][0]["status"], "True");
    assert_eq!(body["status"]["topicGrants"], "Enforced");
    assert!(body["status"].get("ungrantedRules").is_none(), "{body}");
    expect(&mut handle, "POST", EVENTS, json!({})).await;
    expect(&mut handle, "POST", EVENTS, json!({})).await; // AuditSink: NoCollector
    task.await.unwrap().unwrap();

    // No grants configured: as before, no check and no new status fields.
    let (ctx, mut handle) = setup(None);
    let task = tokio::spawn(stream_policy::reconcile(grabbing_policy(), ctx));
    let body = expect(&mut handle, "PATCH", STATUS, policy_json()).await;
    assert_eq!(body["status"]["conditions"][0]["reason"], "Valid");
    assert!(body["status"].get("topicGrants").is_none(), "{body}");
    assert!(body["status"].get("ungrantedRules").is_none(), "{body}");
    expect(&mut handle, "POST", EVENTS, json!({})).await;
    expect(&mut handle, "POST", EVENTS, json!({})).await; // AuditSink: NoCollector
    task.await.unwrap().unwrap();
}
