//! Identity and policy end to end: confluent-kafka (librdkafka, OIDC
//! client-credentials against the real oidc-provider) and workload identity
//! through the sidecar against tansu. Every refusal is checked by the error
//! code the client library reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::Path;
use std::time::{Duration, Instant};

use streamgate_e2e::{Broker, IDP_AUDIENCE, Idp, Proxy, ProxyOptions, Storage};

#[path = "oidc_client/mod.rs"]
mod oidc_client;
use oidc_client::{Client, TOPIC_AUTH, refused_with};

fn oidc_policy(issuer: &str) -> String {
    format!(
        r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {{name: phi-access, namespace: clinical}}
spec:
  identity:
    oidc: {{issuer: "{issuer}", audiences: ["{IDP_AUDIENCE}"]}}
  rules:
    - name: clinicians
      subjects: [{{kind: Group, name: clinicians}}]
      topics: ["patient-*"]
      operations: [Write, Read, Describe]
      groups: ["g-patient-*"]
    - name: no-restricted
      subjects: [{{kind: Group, name: clinicians}}]
      topics: ["patient-restricted"]
      operations: [Write, Read, Describe]
      effect: Deny
    - name: compliance-admin
      subjects: [{{kind: Group, name: compliance-officers}}]
      topics: ["**"]
      operations: [Admin, Describe]
  blockedOperations: [DeleteTopics]
"#
    )
}

fn workload_policy(enabled: bool) -> String {
    format!(
        r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {{name: intake, namespace: clinical}}
spec:
  identity: {{workloadIdentity: {enabled}}}
  rules:
    - name: intake-app
      subjects: [{{kind: ServiceAccount, name: intake}}]
      topics: ["intake-*"]
      operations: [Write, Describe]
"#
    )
}

fn start_proxy(broker: &Broker, policy_dir: &Path) -> Proxy {
    Proxy::start(
        broker,
        ProxyOptions {
            args: vec!["--policy-dir".into(), policy_dir.display().to_string()],
            envs: vec![
                ("STREAMGATE_SERVICE_ACCOUNT".into(), "intake".into()),
                ("STREAMGATE_POD_NAME".into(), "intake-0".into()),
                ("STREAMGATE_POD_NAMESPACE".into(), "clinical".into()),
            ],
            ..ProxyOptions::default()
        },
    )
}

#[test]
fn oidc_clients_are_decided_by_policy() {
    let broker = Broker::start(Storage::Memory);
    for t in ["patient-events", "patient-restricted", "claims.2026"] {
        broker.create_topic(t, 1);
    }
    let idp = Idp::start(300, None);
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("policy.yaml"), oidc_policy(&idp.issuer())).unwrap();
    let proxy = start_proxy(&broker, &policies);

    // A clinician produces and consumes (in a consumer group) on patient-*.
    let mut clinician = Client::oidc(dir.path(), &proxy, &idp, "intake-app");
    let v = clinician.produce("patient-events", 5);
    assert_eq!(v["ok"], 5, "{v}\n{}", proxy.output());
    let v = clinician.ask("consume patient-events 5");
    assert_eq!(v["records"], 5, "{v}\n{}", proxy.output());
    // A topic outside the rules.
    let v = clinician.produce("claims.2026", 2);
    assert!(refused_with(&v, TOPIC_AUTH), "denied topic: {v}");
    // Deny beats the patient-* Allow.
    let v = clinician.produce("patient-restricted", 2);
    assert!(refused_with(&v, TOPIC_AUTH), "deny over allow: {v}");

    // A user outside every rule.
    let mut outsider = Client::oidc(dir.path(), &proxy, &idp, "outsider");
    let v = outsider.produce("patient-events", 2);
    assert!(refused_with(&v, TOPIC_AUTH), "outsider: {v}");

    // DeleteTopics is blocked even for the admin group.
    let mut officer = Client::oidc(dir.path(), &proxy, &idp, "compliance-officer");
    let v = officer.ask("delete patient-events");
    assert_eq!(v["error"], TOPIC_AUTH, "blocked DeleteTopics: {v}");
    // …and the topic is still there.
    let v = clinician.produce("patient-events", 1);
    assert_eq!(v["ok"], 1, "{v}");
}

#[test]
fn workload_identity_and_live_policy_reload() {
    let broker = Broker::start(Storage::Memory);
    broker.create_topic("intake-forms", 1);
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let file = policies.join("intake.yaml");
    std::fs::write(&file, workload_policy(true)).unwrap();
    let proxy = start_proxy(&broker, &policies);

    // No SASL: the caller is the pod's ServiceAccount, allowed by the policy.
    let mut app = Client::plain(dir.path(), &proxy);
    let v = app.produce("intake-forms", 3);
    assert_eq!(v["ok"], 3, "{v}\n{}", proxy.output());

    // Turn workload identity off: within a second, the same producer (same
    // connections) is refused.
    let (_, before) = proxy.admin_get("/metrics");
    std::fs::write(&file, workload_policy(false)).unwrap();
    let start = Instant::now();
    loop {
        let v = app.produce("intake-forms", 1);
        if refused_with(&v, TOPIC_AUTH) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "still allowed after the edit: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = start.elapsed();
    assert!(took < Duration::from_millis(1500), "reload took {took:?}");
    // And back on: allowed again, still no reconnect needed (the client may
    // take a metadata refresh to retry a topic it saw refused).
    std::fs::write(&file, workload_policy(true)).unwrap();
    let start = Instant::now();
    loop {
        let v = app.produce("intake-forms", 1);
        if v["ok"] == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not allowed again: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, after) = proxy.admin_get("/metrics");
    let total = |m: &str| {
        m.lines()
            .find(|l| l.contains("connections_total") && !l.starts_with('#'))
            .and_then(|l| l.split_whitespace().last())
            .map(str::to_string)
    };
    assert_eq!(
        total(&before),
        total(&after),
        "policy reloads do not drop or reopen connections"
    );

    // A broken edit keeps the last good policy.
    std::fs::write(
        &file,
        "apiVersion: streamgate.dev/v1alpha1\nkind: StreamPolicy\nspec: [",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let v = app.produce("intake-forms", 1);
    assert_eq!(v["ok"], 1, "{v}");
}
