//! SAML identity end to end (issue 16): a real SAML IdP (pysaml2, signing
//! with the xmlsec1 CLI, `e2e/peers/saml/idp.py`) issues the assertions;
//! confluent-kafka presents each through its OAUTHBEARER token callback
//! (`oauth_cb`) to the real proxy binary in front of tansu.
//!
//! Valid assertions are allowed by their group; every bad one (unsigned,
//! another key, expired, not yet valid, wrong audience, wrong issuer, XSW1–8)
//! is refused with SASL_AUTHENTICATION_FAILED and an AuthFailure audit
//! record whose reason never contains the assertion. Key rotation goes
//! through the metadata file: while it lists the old and new certificates
//! both sign; once the old one is removed its assertions are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use streamgate_e2e::{Broker, Proxy, ProxyOptions, Storage, peers, proxy_bin};

const IDP: &str = "https://idp.streamgate.test/saml";
const SP: &str = "urn:streamgate:gate:clinical";

/// Kafka's TOPIC_AUTHORIZATION_FAILED.
const TOPIC_AUTH: i64 = 29;

/// The IdP script of this checkout (pysaml2 from the peers' venv runs it).
fn idp_script() -> String {
    streamgate_e2e::repo_root()
        .join("e2e/peers/saml/idp.py")
        .display()
        .to_string()
}

fn idp(args: &[&str]) -> String {
    let out = Command::new(&peers().python)
        .arg(idp_script())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "idp.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `{case: token}` for `user` in `groups`, signed with `key`.
fn tokens(dir: &Path, user: &str, groups: &str, key: &str) -> BTreeMap<String, String> {
    let json = idp(&["tokens", dir.to_str().unwrap(), IDP, SP, user, groups, key]);
    serde_json::from_str(&json).unwrap()
}

fn write_metadata(dir: &Path, certs: &[&str]) {
    let out = dir.join("idp-metadata.xml");
    let mut args = vec![
        "metadata",
        dir.to_str().unwrap(),
        out.to_str().unwrap(),
        IDP,
    ];
    args.extend_from_slice(certs);
    idp(&args);
}

fn policy(metadata: &Path) -> String {
    format!(
        r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {{name: phi-saml, namespace: clinical}}
spec:
  identity:
    saml:
      issuer: "{IDP}"
      audience: "{SP}"
      metadata: {{file: "{}"}}
      groupsAttribute: groups
  rules:
    - name: clinicians
      subjects: [{{kind: Group, name: clinicians}}]
      topics: ["patient-*"]
      operations: [Write, Read, Describe]
"#,
        metadata.display()
    )
}

/// Each case in its own producer; the token comes from `oauth_cb`.
/// Prints `{case: {"ok": n, "errors": [codes], "auth": "message"|null}}`.
const CLIENT: &str = r#"
import json, sys, time
from confluent_kafka import Producer, KafkaError

bootstrap, topic = sys.argv[1], sys.argv[2]
cases = json.load(open(sys.argv[3]))
out = {}
for case, token in cases.items():
    auth = []
    def on_error(err):
        if err.code() == KafkaError._AUTHENTICATION:
            auth.append(err.str())
    p = Producer({
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "OAUTHBEARER",
        "oauth_cb": lambda _cfg, t=token: (t, time.time() + 60),
        "error_cb": on_error,
        "enable.idempotence": False,
        "linger.ms": 0,
        "message.timeout.ms": 10000,
    })
    ok, errors = [0], []
    def cb(err, msg):
        if err is None: ok[0] += 1
        else: errors.append(err.code())
    p.produce(topic, value=b"v", on_delivery=cb)
    deadline = time.time() + 12
    while time.time() < deadline and not auth and not ok[0] and not errors:
        p.poll(0.2)
    p.purge()
    p.flush(1)
    out[case] = {"ok": ok[0], "errors": errors, "auth": auth[0] if auth else None}
    del p
print(json.dumps(out))
"#;

fn run_cases(dir: &Path, proxy: &Proxy, topic: &str, cases: &BTreeMap<String, String>) -> Value {
    let script = dir.join("saml_client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let file = dir.join("cases.json");
    std::fs::write(&file, serde_json::to_string(cases).unwrap()).unwrap();
    let out = Command::new(&peers().python)
        .arg(&script)
        .args([&proxy.addr(), topic, file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.output()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn export(spool: &Path) -> Vec<Value> {
    let out = Command::new(proxy_bin())
        .args([
            "audit",
            "export",
            spool.to_str().unwrap(),
            "--format",
            "jsonl",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Wait until the spool holds `n` AuthFailure records; return their reasons.
fn auth_failures(proxy: &Proxy, n: usize) -> Vec<String> {
    let spool = proxy.dir.path().join("audit");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reasons: Vec<String> = export(&spool)
            .iter()
            .filter(|r| r["kind"] == "AuthFailure")
            .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
            .collect();
        if reasons.len() >= n || Instant::now() > deadline {
            return reasons;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_refused(results: &Value, case: &str, why: &str) {
    let r = &results[case];
    assert_eq!(r["ok"], 0, "{case} was accepted: {r}");
    let auth = r["auth"].as_str().unwrap_or_default();
    // librdkafka's report of a SaslAuthenticate answered with
    // SASL_AUTHENTICATION_FAILED: "SASL authentication error: <the gate's reason>".
    assert!(
        auth.contains("SASL authentication error") && auth.contains(why),
        "{case}: expected an authentication failure naming {why:?}, got {r}"
    );
}

#[test]
fn saml_assertions_are_verified_like_oidc_tokens() {
    let broker = Broker::start(Storage::Memory);
    for t in ["patient-events", "claims.2026"] {
        broker.create_topic(t, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    idp(&["keys", d.to_str().unwrap(), "idp1", "idp2", "stranger"]);
    // Mid-rotation: the metadata lists the old and the new certificate.
    write_metadata(d, &["idp1", "idp2"]);
    let policies = d.join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("policy.yaml"),
        policy(&d.join("idp-metadata.xml")),
    )
    .unwrap();
    let proxy = Proxy::start(
        &broker,
        ProxyOptions {
            args: vec!["--policy-dir".into(), policies.display().to_string()],
            // The policy governs pods of its namespace.
            envs: vec![
                ("STREAMGATE_POD_NAME".into(), "intake-0".into()),
                ("STREAMGATE_POD_NAMESPACE".into(), "clinical".into()),
            ],
            ..ProxyOptions::default()
        },
    );

    let alice = tokens(d, "alice", "clinicians,nurses", "idp1");
    // The other-key case is signed by a key the metadata does not list.
    let stranger = tokens(d, "alice", "clinicians", "stranger");
    let mut cases = alice.clone();
    cases.insert("other_key".into(), stranger["valid_assertion"].clone());
    let by_new_key = tokens(d, "alice", "clinicians", "idp2");
    cases.insert("new_key".into(), by_new_key["valid_assertion"].clone());
    let results = run_cases(d, &proxy, "patient-events", &cases);

    // Allowed by group, as an assertion, in a Response, as a signed Response,
    // and by either certificate of the metadata.
    for case in [
        "valid_assertion",
        "valid_response",
        "valid_signed_response",
        "new_key",
    ] {
        assert_eq!(
            results[case]["ok"],
            1,
            "{case}: {}\n{}",
            results[case],
            proxy.output()
        );
    }
    let refused = [
        ("unsigned", "signature"),
        ("other_key", "signature"),
        ("expired", "expired"),
        ("not_yet_valid", "not valid yet"),
        ("wrong_audience", "audience"),
        ("wrong_issuer", "issuer"),
        ("sha1", "signature"),
        ("xsw1", "signature wrapping"),
        ("xsw2", "signature wrapping"),
        ("xsw3", "signature wrapping"),
        ("xsw4", "signature wrapping"),
        ("xsw5", "signature wrapping"),
        ("xsw6", "signature wrapping"),
        ("xsw7", "signature wrapping"),
        ("xsw8", "signature wrapping"),
    ];
    for (case, why) in refused {
        assert_refused(&results, case, why);
    }

    // A user of the IdP outside the group: authenticated, then refused by policy.
    let bob = tokens(d, "bob", "visitors", "idp1");
    let only = BTreeMap::from([("bob".to_string(), bob["valid_assertion"].clone())]);
    let results_bob = run_cases(d, &proxy, "patient-events", &only);
    assert_eq!(results_bob["bob"]["ok"], 0, "{results_bob}");
    assert!(
        results_bob["bob"]["errors"]
            .as_array()
            .is_some_and(|e| e.iter().all(|c| c == TOPIC_AUTH) && !e.is_empty()),
        "bob: {results_bob}"
    );
    // alice's group covers patient-* only.
    let only = BTreeMap::from([("alice".to_string(), alice["valid_response"].clone())]);
    let results_claims = run_cases(d, &proxy, "claims.2026", &only);
    assert_eq!(
        results_claims["alice"]["errors"][0], TOPIC_AUTH,
        "{results_claims}"
    );

    // Every refusal is an audit record with a reason, never the assertion.
    let reasons = auth_failures(&proxy, refused.len());
    assert!(
        reasons.len() >= refused.len(),
        "AuthFailure records: {reasons:#?}\n{}",
        proxy.output()
    );
    for reason in &reasons {
        assert!(reason.contains("SAML"), "{reason}");
        for token in cases.values() {
            assert!(
                !reason.contains(&token[..40]),
                "the assertion leaked: {reason}"
            );
        }
        assert!(!reason.contains("<"), "XML in the audit reason: {reason}");
    }

    // Rotation completes: the old certificate leaves the metadata.
    write_metadata(d, &["idp2"]);
    let after = BTreeMap::from([
        (
            "old_key".to_string(),
            tokens(d, "alice", "clinicians", "idp1")["valid_assertion"].clone(),
        ),
        (
            "new_key".to_string(),
            tokens(d, "alice", "clinicians", "idp2")["valid_assertion"].clone(),
        ),
    ]);
    let results = run_cases(d, &proxy, "patient-events", &after);
    assert_refused(&results, "old_key", "signature");
    assert_eq!(results["new_key"]["ok"], 1, "{results}\n{}", proxy.output());
}
