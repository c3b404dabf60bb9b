//! The operator's other API-server conversations, against kube's mock
//! service: the webhook's cached namespace read, the per-namespace sidecar
//! RoleBinding sync, caBundle patching under its own field manager, the
//! shared webhook Secret, and the leader Lease.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use streamgate_operator::rbac;
use streamgate_operator::tls;
use streamgate_operator::webhook::lookup::{ClusterLookup, KubeLookup};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

struct Seen {
    method: String,
    path: String,
    query: String,
    content_type: Option<String>,
    body: Value,
}

async fn next(handle: &mut Handle, status: u16, reply: Value) -> Seen {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("no request arrived")
        .expect("client dropped");
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
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
    Seen {
        method,
        path,
        query,
        content_type,
        body,
    }
}

#[tokio::test]
async fn namespace_labels_are_read_once_then_cached() {
    let (client, mut handle) = mock();
    let lookup = KubeLookup::new(client);
    let server = tokio::spawn(async move {
        let seen = next(
            &mut handle,
            200,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "billing", "labels": {"streamgate.dev/inject": "enabled"}}}),
        )
        .await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            ("GET", "/api/v1/namespaces/billing")
        );
        // A second read must not reach the API server.
        let again = tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await;
        assert!(
            matches!(again, Err(_) | Ok(None)),
            "second read hit the API server"
        );
    });
    let first = lookup.namespace_labels("billing").await.unwrap();
    let second = lookup.namespace_labels("billing").await.unwrap();
    assert_eq!(
        first.get("streamgate.dev/inject").map(String::as_str),
        Some("enabled")
    );
    assert_eq!(first, second);
    drop(lookup);
    server.await.unwrap();
}

#[tokio::test]
async fn sidecar_role_bindings_are_applied_and_stale_ones_removed() {
    let (client, mut handle) = mock();
    let desired: BTreeSet<String> = BTreeSet::from(["clinical".to_string()]);
    let task = tokio::spawn(async move { rbac::sync(client, &desired).await });
    sidecar_account_exists(&mut handle).await;
    // Then: is there a binding of that name we do not own? (None here.)
    let get = next(
        &mut handle,
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "NotFound", "code": 404}),
    )
    .await;
    assert_eq!(
        (get.method.as_str(), get.path.as_str()),
        (
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/clinical/rolebindings/streamgate-sidecar"
        )
    );
    let apply = next(&mut handle, 200, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "streamgate-sidecar", "namespace": "clinical"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "streamgate-sidecar"}}))
    .await;
    assert_eq!(apply.method, "PATCH");
    assert_eq!(
        apply.path,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/clinical/rolebindings/streamgate-sidecar"
    );
    assert!(
        apply.query.contains("fieldManager=streamgate-operator"),
        "{}",
        apply.query
    );
    assert_eq!(
        apply.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(apply.body["kind"], "RoleBinding");
    assert_eq!(apply.body["roleRef"]["name"], "streamgate-sidecar");
    let subjects: Vec<&str> = apply.body["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        vec!["streamgate-sidecar"],
        "only the operator-made sidecar account, never the app's"
    );
    assert_eq!(
        apply.body["metadata"]["ownerReferences"][0]["uid"],
        "sa-uid-1"
    );

    let list = next(&mut handle, 200, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBindingList", "metadata": {},
        "items": [
            {"metadata": {"name": "streamgate-sidecar", "namespace": "clinical",
                          "labels": {"app.kubernetes.io/managed-by": "streamgate-operator"}},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "streamgate-sidecar"}},
            {"metadata": {"name": "streamgate-sidecar", "namespace": "billing",
                          "labels": {"app.kubernetes.io/managed-by": "streamgate-operator"}},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "streamgate-sidecar"}}]}))
    .await;
    assert_eq!(
        (list.method.as_str(), list.path.as_str()),
        ("GET", "/apis/rbac.authorization.k8s.io/v1/rolebindings")
    );
    assert!(
        list.query
            .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dstreamgate-operator"),
        "{}",
        list.query
    );

    let delete = next(
        &mut handle,
        200,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
    )
    .await;
    assert_eq!(delete.method, "DELETE");
    assert_eq!(
        delete.path,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/billing/rolebindings/streamgate-sidecar"
    );
    task.await.unwrap().unwrap();
}

/// A `streamgate-sidecar` binding someone else made (to another role) is
/// neither rewritten by our forced apply nor deleted.
#[tokio::test]
async fn a_planted_binding_of_our_name_is_left_alone() {
    let (client, mut handle) = mock();
    let desired: BTreeSet<String> = BTreeSet::from(["clinical".to_string()]);
    let task = tokio::spawn(async move { rbac::sync(client, &desired).await });
    sidecar_account_exists(&mut handle).await;
    let planted = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "streamgate-sidecar", "namespace": "clinical",
                     "labels": {"app.kubernetes.io/managed-by": "streamgate-operator"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"}});
    let get = next(&mut handle, 200, planted.clone()).await;
    assert_eq!(get.method, "GET");
    // No PATCH follows: the next request is already the list of our bindings.
    let list = next(
        &mut handle,
        200,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBindingList", "metadata": {}, "items": [planted]}),
    )
    .await;
    assert_eq!(
        (list.method.as_str(), list.path.as_str()),
        ("GET", "/apis/rbac.authorization.k8s.io/v1/rolebindings")
    );
    task.await.unwrap().unwrap();
}

/// The sync first makes sure the namespace's `streamgate-sidecar` account
/// exists and is ours (here: it does).
async fn sidecar_account_exists(handle: &mut Handle) {
    let get = next(
        handle,
        200,
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "streamgate-sidecar", "namespace": "clinical", "uid": "sa-uid-1",
                "labels": {"app.kubernetes.io/managed-by": "streamgate-operator"}}}),
    )
    .await;
    assert_eq!(
        (get.method.as_str(), get.path.as_str()),
        (
            "GET",
            "/api/v1/namespaces/clinical/serviceaccounts/streamgate-sidecar"
        )
    );
}

fn webhook_config(kind: &str, hooks: &[&str]) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": "streamgate"},
        "webhooks": hooks.iter().map(|h| json!({"name": h, "admissionReviewVersions": ["v1"], "sideEffects": "NoneOnDryRun",
            "clientConfig": {"service": {"name": "streamgate-webhook", "namespace": "streamgate-system"}}})).collect::<Vec<_>>()})
}

#[tokio::test]
async fn ca_bundle_is_applied_to_every_webhook_under_its_own_field_manager() {
    let (client, mut handle) = mock();
    let task = tokio::spawn(async move {
        tls::patch_ca_bundle(client, "streamgate", "streamgate", "PEM-CA").await
    });
    let mutating = webhook_config(
        "MutatingWebhookConfiguration",
        &[
            "inject.streamgate.dev",
            "stamp.accessapproval.streamgate.dev",
        ],
    );
    let get = next(&mut handle, 200, mutating.clone()).await;
    assert_eq!(
        get.path,
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/streamgate"
    );
    let apply = next(&mut handle, 200, mutating).await;
    assert_eq!(apply.method, "PATCH");
    assert!(
        apply
            .query
            .contains("fieldManager=streamgate-operator-cabundle"),
        "{}",
        apply.query
    );
    assert_eq!(
        apply.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let hooks = apply.body["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 2);
    for h in hooks {
        assert_eq!(
            h["clientConfig"]["caBundle"], "UEVNLUNB",
            "base64 of the CA PEM"
        );
        assert_eq!(
            h.as_object().unwrap().len(),
            2,
            "only name and caBundle are claimed: {h}"
        );
    }
    let validating = webhook_config(
        "ValidatingWebhookConfiguration",
        &["validate.accessapproval.streamgate.dev"],
    );
    let get = next(&mut handle, 200, validating.clone()).await;
    assert_eq!(
        get.path,
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/streamgate"
    );
    let apply = next(&mut handle, 200, validating).await;
    assert!(
        apply
            .query
            .contains("fieldManager=streamgate-operator-cabundle")
    );
    assert_eq!(
        apply.body["webhooks"][0]["name"],
        "validate.accessapproval.streamgate.dev"
    );
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_first_replica_creates_the_webhook_secret_and_a_late_one_reads_the_winners() {
    let (client, mut handle) = mock();
    let names = tls::service_dns_names("streamgate-webhook", "streamgate-system");
    let task = tokio::spawn(async move {
        tls::ensure_secret(
            client,
            "streamgate-system",
            "streamgate-webhook-tls",
            &names,
        )
        .await
    });
    let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404});
    let get = next(&mut handle, 404, not_found).await;
    assert_eq!(
        get.path,
        "/api/v1/namespaces/streamgate-system/secrets/streamgate-webhook-tls"
    );
    // Another replica won the race: our create conflicts, and we adopt the stored PKI.
    let winner = tls::generate(&tls::service_dns_names(
        "streamgate-webhook",
        "streamgate-system",
    ))
    .unwrap();
    let create = next(&mut handle, 409, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409})).await;
    assert_eq!(
        (create.method.as_str(), create.path.as_str()),
        ("POST", "/api/v1/namespaces/streamgate-system/secrets")
    );
    assert_eq!(create.body["type"], "kubernetes.io/tls");
    for key in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(create.body["data"][key].is_string(), "secret lacks {key}");
    }
    assert!(create.body["metadata"]["annotations"]["streamgate.dev/serving-not-after"].is_string());
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let stored = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "streamgate-webhook-tls", "namespace": "streamgate-system"},
        "data": {"ca.crt": b64(&winner.ca_pem), "ca.key": b64(&winner.ca_key_pem), "tls.crt": b64(&winner.cert_pem), "tls.key": b64(&winner.key_pem)}});
    let reread = next(&mut handle, 200, stored).await;
    assert_eq!(reread.method, "GET");
    let got = task.await.unwrap().unwrap();
    assert_eq!(got, winner);
}

mod leader_election {
    use super::*;
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::Api;
    use streamgate_operator::leader::{LeaseConfig, try_round};

    fn cfg() -> LeaseConfig {
        LeaseConfig {
            name: "streamgate-operator".into(),
            namespace: "streamgate-system".into(),
            identity: "op-b".into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    const PATH: &str =
        "/apis/coordination.k8s.io/v1/namespaces/streamgate-system/leases/streamgate-operator";

    fn lease(holder: &str, renewed: &str) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "streamgate-operator", "namespace": "streamgate-system", "resourceVersion": "77"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed, "leaseTransitions": 3}})
    }

    #[tokio::test]
    async fn an_absent_lease_is_created_and_held() {
        let (client, mut handle) = mock();
        let api: Api<Lease> = Api::namespaced(client, "streamgate-system");
        let task = tokio::spawn(async move { try_round(&api, &cfg()).await });
        next(&mut handle, 404, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "message": "leases \"streamgate-operator\" not found", "code": 404})).await;
        let create = next(
            &mut handle,
            201,
            lease("op-b", "2026-11-27T05:00:00.000000Z"),
        )
        .await;
        assert_eq!(
            (create.method.as_str(), create.path.as_str()),
            (
                "POST",
                "/apis/coordination.k8s.io/v1/namespaces/streamgate-system/leases"
            )
        );
        assert_eq!(create.body["spec"]["holderIdentity"], "op-b");
        assert!(
            create.body["spec"]["renewTime"]
                .as_str()
                .is_some_and(|t| t.starts_with("20")),
            "{}",
            create.body
        );
        assert!(task.await.unwrap().unwrap());
    }

    #[tokio::test]
    async fn a_fresh_lease_of_another_replica_is_respected_without_a_write() {
        let (client, mut handle) = mock();
        let api: Api<Lease> = Api::namespaced(client, "streamgate-system");
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let task = tokio::spawn(async move { try_round(&api, &cfg()).await });
        let get = next(&mut handle, 200, lease("op-a", &now)).await;
        assert_eq!(get.path, PATH);
        assert!(!task.await.unwrap().unwrap());
        assert!(matches!(
            tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await,
            Err(_) | Ok(None)
        ));
    }

    #[tokio::test]
    async fn a_stale_lease_is_taken_over_with_optimistic_concurrency() {
        let (client, mut handle) = mock();
        let api: Api<Lease> = Api::namespaced(client, "streamgate-system");
        let task = tokio::spawn(async move { try_round(&api, &cfg()).await });
        next(
            &mut handle,
            200,
            lease("op-a", "2026-01-01T00:00:00.000000Z"),
        )
        .await;
        let put = next(
            &mut handle,
            409,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409}),
        )
        .await;
        assert_eq!((put.method.as_str(), put.path.as_str()), ("PUT", PATH));
        assert_eq!(
            put.body["metadata"]["resourceVersion"], "77",
            "the update carries the version it read"
        );
        assert_eq!(put.body["spec"]["holderIdentity"], "op-b");
        assert_eq!(put.body["spec"]["leaseTransitions"], 4);
        // Someone else updated first (409): not leading this round.
        assert!(!task.await.unwrap().unwrap());
    }
}
