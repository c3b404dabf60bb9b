//! Break-glass end to end, directory mode: a clinician (OIDC via the real
//! IdP, confluent-kafka through the real sidecar, real tansu) whose client
//! sets `sasl.oauthbearer.extensions=streamgateBreakGlass=<reason>` reads a
//! topic no rule otherwise lets her read — at once, in clear (the rule says
//! `unmasked: true`), with every request audited with the reason and its
//! payload, and an AccessApproval in phase `BreakGlass` filed for review.
//! The grant ends on time (reconnecting does not renew it), and a caller the
//! rule does not list gets nothing from invoking it.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use streamgate_crds::{AccessApproval, ApprovalPhase, Decision, Operation};
use streamgate_e2e::{
    Broker, IDP_AUDIENCE, Idp, Proxy, ProxyOptions, Storage, check, kcat, proxy_bin,
};

#[path = "oidc_client/mod.rs"]
mod oidc_client;
use oidc_client::Client;

const REASON: &str = "ED trauma bay 3 - unconscious patient";
const TOPIC: &str = "patient-vitals";
/// The rule's `breakGlass.maxDuration` (short, so the test sees it end).
const MAX: Duration = Duration::from_secs(25);

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
    - name: emergency-read
      subjects: [{{kind: Group, name: clinicians}}]
      topics: [{TOPIC}]
      operations: []
      groups: ["g-*"]
      breakGlass:
        maxDuration: {max}s
        operations: [Read]
        unmasked: true
        reviewers: [{{kind: Group, name: compliance-officers}}]
---
apiVersion: streamgate.dev/v1alpha1
kind: MaskingRule
metadata: {{name: vitals-phi, namespace: clinical}}
spec:
  topics: [{TOPIC}]
  format: Json
  fields:
    - {{path: "$.patient.ssn", strategy: Redact}}
"#,
        max = MAX.as_secs()
    )
}

/// The break-glass AccessApproval files in `dir`.
fn records(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("emergency-read-") && name.ends_with(".yaml")
        })
        .collect()
}

/// Refused by authorization: the consumer group (GROUP_AUTHORIZATION_FAILED,
/// 30: librdkafka joins before it fetches) or the topic (29).
fn refused(v: &serde_json::Value) -> bool {
    v["values"] == serde_json::json!([]) && (v["error"] == 29 || v["error"] == 30)
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

/// Wait until `pred` holds for the spool's records.
fn wait_for_records(spool: &Path, what: &str, pred: impl Fn(&[serde_json::Value]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let records = export(spool);
        if pred(&records) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {records:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_clinician_breaks_glass_reads_in_clear_at_once_and_the_grant_ends_on_time() {
    let broker = Broker::start(Storage::Memory);
    broker.create_topic(TOPIC, 1);
    let vitals = r#"{"patient":{"ssn":"123-45-6789","name":"Jane Roe"},"hr":142}"#;
    let out = kcat(
        &["-P", "-b", &broker.addr(), "-t", TOPIC],
        Some(format!("{vitals}\n").as_bytes()),
    );
    check(&out, "kcat produce");
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
                ("STREAMGATE_SERVICE_ACCOUNT".into(), "ed-console".into()),
                ("STREAMGATE_POD_NAME".into(), "ed-console-0".into()),
                ("STREAMGATE_POD_NAMESPACE".into(), "clinical".into()),
            ],
            ..ProxyOptions::default()
        },
    );
    let spool = proxy.dir.path().join("audit");

    // Without break-glass the topic is refused.
    let mut plain = Client::oidc(dir.path(), &proxy, &idp, "intake-app");
    let v = plain.ask(&format!("read {TOPIC} 1"));
    assert_eq!(v["values"], serde_json::json!([]), "{v}");
    assert!(refused(&v), "refused without break-glass: {v}");
    drop(plain);

    // A caller the rule does not list invokes break-glass: refused, and
    // the refusal is audited with the reason it gave.
    let extension = format!("streamgateBreakGlass={REASON}");
    let mut outsider =
        Client::oidc_with_extensions(dir.path(), &proxy, &idp, "outsider", &extension);
    let v = outsider.ask(&format!("read {TOPIC} 1"));
    assert_eq!(v["values"], serde_json::json!([]), "{v}");
    assert!(refused(&v), "the outsider must be refused: {v}");
    drop(outsider);
    wait_for_records(&spool, "the outsider's refusal", |records| {
        records.iter().any(|r| {
            r["subject"]["name"] == "outsider"
                && r["decision"] == "Deny"
                && r["breakGlass"] == REASON
        })
    });
    assert!(
        !export(&spool)
            .iter()
            .any(|r| r["subject"]["name"] == "outsider"
                && r["decision"] == "Allow"
                && r["api"] == "Fetch"),
        "break-glass widened nothing for the outsider"
    );

    // The clinician breaks glass: the record arrives at once, in clear.
    let started = Instant::now();
    let mut clinician =
        Client::oidc_with_extensions(dir.path(), &proxy, &idp, "intake-app", &extension);
    let v = clinician.ask(&format!("read {TOPIC} 1"));
    assert_eq!(
        v["values"][0].as_str(),
        Some(vitals),
        "{v}\n{}",
        proxy.output()
    );

    // The audit trail: the Fetch under break-glass, with the reason and the
    // payload (Full), and the use itself.
    wait_for_records(&spool, "break-glass records", |records| {
        let fetch = records.iter().any(|r| {
            r["api"] == "Fetch"
                && r["decision"] == "Allow"
                && r["breakGlass"] == REASON
                && r["reason"]
                    .as_str()
                    .is_some_and(|t| t.contains("emergency-read by break-glass"))
                && r["payload"].as_str().is_some_and(|p| !p.is_empty())
        });
        let used = records
            .iter()
            .any(|r| r["kind"] == "BreakGlassUsed" && r["breakGlass"] == REASON);
        fetch && used
    });

    // The AccessApproval recording the use, awaiting its review.
    let files = records(&policies);
    assert_eq!(files.len(), 1, "{files:?}\n{}", proxy.output());
    let aa: AccessApproval =
        serde_yaml::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert!(aa.spec.break_glass);
    assert_eq!(aa.spec.reason.as_deref(), Some(REASON));
    assert_eq!(aa.spec.decision, Decision::Pending);
    assert_eq!(aa.spec.review, None);
    assert_eq!(aa.spec.topics, vec![TOPIC.to_string()]);
    assert_eq!(aa.spec.operations, vec![Operation::Read]);
    assert_eq!(aa.spec.requester.name, "intake-app");
    let status = aa.status.unwrap();
    assert_eq!(status.phase, ApprovalPhase::BreakGlass);
    assert!(status.expires_at.is_some());

    // The grant ends on time: a new consumer (new connections, the same
    // reason) after maxDuration is refused.
    let wait = (MAX + Duration::from_secs(2)).saturating_sub(started.elapsed());
    std::thread::sleep(wait);
    let v = clinician.ask(&format!("read {TOPIC} 1"));
    assert_eq!(v["values"], serde_json::json!([]), "{v}");
    assert!(refused(&v), "refused after maxDuration: {v}");
    wait_for_records(&spool, "the refusal after the grant ended", |records| {
        // (librdkafka asks for its group coordinator first: that is where
        // the refusal lands; `policy_decide` covers the per-topic reason.)
        let last_allowed = records
            .iter()
            .filter(|r| r["api"] == "Fetch" && r["decision"] == "Allow")
            .filter_map(|r| r["seq"].as_u64())
            .max()
            .unwrap_or(u64::MAX);
        records.iter().any(|r| {
            r["subject"]["name"] == "intake-app"
                && r["decision"] == "Deny"
                && r["breakGlass"] == REASON
                && r["seq"].as_u64().is_some_and(|s| s > last_allowed)
        })
    });
}
