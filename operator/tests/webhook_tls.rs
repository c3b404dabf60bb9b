//! Real TLS on loopback: the webhook server serves a generated certificate
//! that a client verifies against the generated CA (by the Service DNS name
//! the API server uses), and a swapped certificate is served to new
//! connections without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};
use streamgate_operator::config::InjectorSettings;
use streamgate_operator::metrics::Metrics;
use streamgate_operator::tls::{self, ReloadingResolver, WebhookPki};
use streamgate_operator::webhook::handlers::WebhookState;
use streamgate_operator::webhook::lookup::StaticLookup;
use streamgate_operator::webhook::server;

const HOST: &str = "streamgate-webhook.streamgate-system.svc";

async fn start(pki: &WebhookPki) -> (SocketAddr, Arc<ReloadingResolver>) {
    let resolver = Arc::new(ReloadingResolver::default());
    resolver.set(tls::certified_key(&pki.cert_pem, &pki.key_pem).unwrap());
    let config = tls::server_config(resolver.clone()).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let state = Arc::new(WebhookState {
        settings: InjectorSettings {
            default_upstream: Some("kafka:9092".into()),
            ..Default::default()
        },
        lookup: StaticLookup::default(),
        metrics: Arc::new(Metrics::default()),
    });
    tokio::spawn(server::serve(tcp, config, state));
    (addr, resolver)
}

fn client_trusting(ca_pem: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve(HOST, addr)
        .build()
        .unwrap()
}

fn names() -> Vec<String> {
    tls::service_dns_names("streamgate-webhook", "streamgate-system")
}

#[tokio::test]
async fn the_api_server_view_verifies_the_generated_chain_and_gets_an_admission_answer() {
    let pki = tls::generate(&names()).unwrap();
    let (addr, _resolver) = start(&pki).await;
    let client = client_trusting(&pki.ca_pem, addr);
    let url = format!("https://{HOST}:{}{}", addr.port(), server::PATH_INJECT);
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "tls-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "clinical",
        "operation": "CREATE", "userInfo": {"username": "kubernetes-admin"},
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "x-", "annotations": {"streamgate.dev/inject": "true"}},
                   "spec": {"containers": [{"name": "app", "image": "app"}]}}, "oldObject": null, "dryRun": false}});
    let resp: Value = client
        .post(&url)
        .json(&review)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["kind"], "AdmissionReview");
    assert_eq!(resp["response"]["uid"], "tls-1");
    assert_eq!(resp["response"]["allowed"], true);
    assert_eq!(resp["response"]["patchType"], "JSONPatch");
    assert!(
        resp["response"]["patch"].is_string(),
        "the patch travels as base64, as Go expects []byte"
    );
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_refused() {
    let pki = tls::generate(&names()).unwrap();
    let stranger = tls::generate(&names()).unwrap();
    let (addr, _resolver) = start(&pki).await;
    let err = client_trusting(&stranger.ca_pem, addr)
        .get(format!("https://{HOST}:{}/healthz", addr.port()))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let old = tls::generate(&names()).unwrap();
    let new = tls::generate(&names()).unwrap();
    let (addr, resolver) = start(&old).await;
    let url = format!("https://{HOST}:{}/healthz", addr.port());
    assert_eq!(
        client_trusting(&old.ca_pem, addr)
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    resolver.set(tls::certified_key(&new.cert_pem, &new.key_pem).unwrap());
    // New handshakes now present the new chain: old trust fails, new trust works.
    assert!(
        client_trusting(&old.ca_pem, addr)
            .get(&url)
            .send()
            .await
            .is_err()
    );
    assert_eq!(
        client_trusting(&new.ca_pem, addr)
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
}

#[tokio::test]
async fn a_renewed_serving_certificate_still_chains_to_the_original_ca() {
    let pki = tls::generate(&names()).unwrap();
    let renewed = tls::renew_serving(&pki, &names()).unwrap();
    assert_eq!(
        renewed.ca_pem, pki.ca_pem,
        "caBundle does not change on renewal"
    );
    assert_ne!(renewed.cert_pem, pki.cert_pem);
    let (addr, _resolver) = start(&renewed).await;
    let url = format!("https://{HOST}:{}/healthz", addr.port());
    assert_eq!(
        client_trusting(&pki.ca_pem, addr)
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
}

#[tokio::test]
async fn the_certificate_does_not_cover_other_names() {
    let pki = tls::generate(&names()).unwrap();
    let (addr, _resolver) = start(&pki).await;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .resolve("evil.example.com", addr)
        .build()
        .unwrap();
    assert!(
        client
            .get(format!("https://evil.example.com:{}/healthz", addr.port()))
            .send()
            .await
            .is_err()
    );
}
