//! Masking end to end: the fixtures are produced straight to tansu with every
//! codec, then read through the sidecar with kcat, confluent-kafka and
//! kafka-python. A non-exempt workload never sees a planted PHI value, gets
//! every record at its offset, and the non-PHI fields as they were; an exempt
//! workload gets the broker's bytes. `applyTo: Produce` masks before the
//! broker, and an idempotent producer keeps working through it.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::Path;

use serde_json::Value;
use streamgate_e2e::{
    Broker, Proxy, ProxyOptions, Storage, check, example, fixture_lines, kcat, phi_values,
    python_client,
};

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
/// Lines of each fixture produced per codec (5 codecs → 5 × this many records).
const PER_CODEC: usize = 100;

const POLICY: &str = r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: analytics, namespace: clinical}
spec:
  identity: {workloadIdentity: true}
  rules:
    - name: readers
      subjects: [{kind: ServiceAccount, name: analytics}, {kind: ServiceAccount, name: auditor}]
      topics: [patient-events, claims, patient-intake]
      operations: [Read, Write, Describe]
      groups: ["**"]
"#;

/// Produce-side masking for the intake topic.
const INTAKE_RULE: &str = r#"
apiVersion: streamgate.dev/v1alpha1
kind: MaskingRule
metadata: {name: intake-phi, namespace: clinical}
spec:
  topics: [patient-intake]
  format: Json
  fields:
    - {path: "$.patient.ssn", strategy: Redact}
    - {path: "$.notes", strategy: Remove}
  detectors: [SSN, Email, Phone]
  applyTo: [Produce]
"#;

/// The example rules, with the exempt subject a workload this test runs as.
fn policy_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("policy");
    std::fs::create_dir_all(&dir).unwrap();
    let rules = std::fs::read_to_string(example("maskingrule.yaml")).unwrap();
    let exempt = "{kind: Group, name: treating-clinicians}";
    assert!(rules.contains(exempt), "examples/maskingrule.yaml changed");
    let rules = rules.replace(exempt, "{kind: ServiceAccount, name: auditor}");
    std::fs::write(dir.join("maskingrule.yaml"), rules).unwrap();
    std::fs::write(dir.join("intake.yaml"), INTAKE_RULE).unwrap();
    std::fs::write(dir.join("streampolicy.yaml"), POLICY).unwrap();
    dir
}

fn secret_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("secrets");
    std::fs::create_dir_all(dir.join("masking-key")).unwrap();
    std::fs::write(
        dir.join("masking-key").join("hmac"),
        b"e2e-only-hmac-key-0123456789abcdef",
    )
    .unwrap();
    dir
}

fn proxy_as(broker: &Broker, policy: &Path, secrets: &Path, account: &str) -> Proxy {
    Proxy::start(
        broker,
        ProxyOptions {
            args: vec![
                "--policy-dir".into(),
                policy.display().to_string(),
                "--secret-dir".into(),
                secrets.display().to_string(),
            ],
            envs: vec![
                ("STREAMGATE_SERVICE_ACCOUNT".into(), account.into()),
                ("STREAMGATE_POD_NAME".into(), format!("{account}-0")),
                ("STREAMGATE_POD_NAMESPACE".into(), "clinical".into()),
            ],
            ..ProxyOptions::default()
        },
    )
}

/// (partition, offset, value) as kcat reads them.
fn kcat_read(addr: &str, topic: &str, n: usize) -> Vec<(u32, u64, String)> {
    let out = kcat(
        &[
            "-C",
            "-b",
            addr,
            "-t",
            topic,
            "-o",
            "beginning",
            "-c",
            &n.to_string(),
            "-e",
            "-q",
            "-f",
            "%p %o %s\n",
        ],
        None,
    );
    let text = check(&out, &format!("kcat read {topic} via {addr}"));
    let mut got: Vec<(u32, u64, String)> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut it = l.splitn(3, ' ');
            let p = it.next().unwrap().parse().unwrap();
            let o = it.next().unwrap().parse().unwrap();
            (p, o, it.next().unwrap_or_default().to_string())
        })
        .collect();
    got.sort();
    got
}

/// (partition, offset, value) as a Python client library reads them.
fn python_read(lib: &str, addr: &str, topic: &str, n: usize) -> Vec<(u32, u64, String)> {
    let out = python_client(
        "kclient.py",
        &[
            lib,
            "consume",
            "--bootstrap",
            addr,
            "--topic",
            topic,
            "--expect",
            &n.to_string(),
            "--timeout",
            "60",
        ],
    );
    let text = check(&out, &format!("{lib} read {topic} via {addr}"));
    let mut got: Vec<(u32, u64, String)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("offset").is_some())
        .map(|v| {
            let bytes = unhex(v["value"].as_str().unwrap());
            (
                v["partition"].as_u64().unwrap() as u32,
                v["offset"].as_u64().unwrap(),
                String::from_utf8(bytes).unwrap(),
            )
        })
        .collect();
    got.sort();
    assert!(
        got.len() >= n,
        "{lib} read {} of {n} records of {topic} via {addr}; stderr:\n{}",
        got.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    got
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn assert_no_phi(what: &str, records: &[(u32, u64, String)], phi: &[String]) {
    for (p, o, v) in records {
        for s in phi {
            assert!(
                !v.contains(s.as_str()),
                "{what}: planted PHI in the record at {p}/{o}"
            );
        }
    }
}

fn field<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

/// Masked and direct reads: same records at the same offsets, no PHI, and the
/// non-PHI fields unchanged.
fn assert_masked(
    what: &str,
    masked: &[(u32, u64, String)],
    direct: &[(u32, u64, String)],
    keep: &[&[&str]],
    phi: &[String],
) {
    assert_eq!(masked.len(), direct.len(), "{what}: record count");
    assert_no_phi(what, masked, phi);
    for (m, d) in masked.iter().zip(direct) {
        assert_eq!((m.0, m.1), (d.0, d.1), "{what}: same partition and offset");
        let mv: Value = serde_json::from_str(&m.2)
            .unwrap_or_else(|e| panic!("{what}: masked value is not JSON: {e}"));
        let dv: Value = serde_json::from_str(&d.2).unwrap();
        for path in keep {
            assert_eq!(
                field(&mv, path),
                field(&dv, path),
                "{what}: {path:?} unchanged at {}/{}",
                m.0,
                m.1
            );
        }
    }
}

#[test]
fn phi_is_masked_for_every_codec_and_client_and_exempt_readers_get_the_broker_bytes() {
    let root = tempfile::tempdir().unwrap();
    let policy = policy_dir(root.path());
    let secrets = secret_dir(root.path());
    let broker = Broker::start(Storage::Memory);
    let phi = phi_values();
    assert!(phi.len() > 100, "fixtures carry planted PHI");

    let topics: [(&str, &str, &[&[&str]]); 2] = [
        (
            "patient-events",
            "patient-events.jsonl",
            &[
                &["eventId"],
                &["eventType"],
                &["timestamp"],
                &["encounter", "facility"],
                &["patient", "address", "city"],
            ],
        ),
        (
            "claims",
            "claims.jsonl",
            &[&["claimId"], &["amountCents"], &["diagnosisCodes"]],
        ),
    ];
    for (topic, file, _) in &topics {
        broker.create_topic(topic, 1);
        let lines = fixture_lines(file);
        for codec in CODECS {
            let input = lines[..PER_CODEC].join("\n") + "\n";
            let out = kcat(
                &["-P", "-b", &broker.addr(), "-t", topic, "-z", codec],
                Some(input.as_bytes()),
            );
            check(&out, &format!("kcat produce {topic} -z {codec}"));
        }
    }
    let n = PER_CODEC * CODECS.len();
    let analytics = proxy_as(&broker, &policy, &secrets, "analytics");
    let auditor = proxy_as(&broker, &policy, &secrets, "auditor");

    for (topic, _, keep) in &topics {
        let direct = kcat_read(&broker.addr(), topic, n);
        assert_eq!(direct.len(), n, "{topic}: direct read");
        // The direct read does carry PHI: the checks below are not vacuous.
        assert!(
            direct
                .iter()
                .any(|(_, _, v)| phi.iter().any(|s| v.contains(s.as_str())))
        );

        let masked = kcat_read(&analytics.addr(), topic, n);
        assert_masked(&format!("kcat {topic}"), &masked, &direct, keep, &phi);
        for lib in ["confluent", "kafka-python"] {
            let masked = python_read(lib, &analytics.addr(), topic, n);
            assert_masked(&format!("{lib} {topic}"), &masked, &direct, keep, &phi);
        }
    }

    // The hashed MRN is a stable pseudonym joining the two topics.
    let events = kcat_read(&analytics.addr(), "patient-events", 1);
    let claims = kcat_read(&analytics.addr(), "claims", 1);
    let ev: Value = serde_json::from_str(&events[0].2).unwrap();
    let cl: Value = serde_json::from_str(&claims[0].2).unwrap();
    assert_eq!(ev["patient"]["mrn"], cl["patientMrn"]);

    // The audit trail says the reads were masked, by which rules, and holds no PHI.
    let spool = analytics.dir.path().join("audit");
    let read_spool = || -> String {
        std::fs::read_dir(&spool)
            .map(|d| {
                d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !read_spool().contains("\"decision\":\"Masked\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "no Masked audit record:\n{}",
            analytics.output()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let spooled = read_spool();
    assert!(spooled.contains("patient-phi") && spooled.contains("claims-phi"));
    assert_no_phi("audit spool", &[(0, 0, spooled)], &phi);

    // The exempt workload reads what the broker holds, byte for byte.
    let direct = kcat_read(&broker.addr(), "patient-events", n);
    assert_eq!(kcat_read(&auditor.addr(), "patient-events", n), direct);
    assert_eq!(
        python_read("confluent", &auditor.addr(), "patient-events", n),
        direct
    );

    // applyTo: Produce — what lands in the broker is masked, and an
    // idempotent producer keeps working.
    broker.create_topic("patient-intake", 1);
    let lines = fixture_lines("patient-events.jsonl");
    let input = lines[..50].join("\n") + "\n";
    let out = kcat(
        &[
            "-P",
            "-b",
            &analytics.addr(),
            "-t",
            "patient-intake",
            "-z",
            "lz4",
            "-X",
            "enable.idempotence=true",
        ],
        Some(input.as_bytes()),
    );
    check(&out, "idempotent kcat produce through the sidecar");
    let landed = kcat_read(&broker.addr(), "patient-intake", 50);
    assert_eq!(landed.len(), 50, "every record acknowledged and stored");
    let ssns: Vec<String> = lines[..50]
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["patient"]["ssn"].as_str().unwrap().to_string()
        })
        .collect();
    for (i, (_, o, v)) in landed.iter().enumerate() {
        assert_eq!(*o, i as u64);
        let v: Value = serde_json::from_str(v).unwrap();
        assert_eq!(v["patient"]["ssn"], "[REDACTED]");
        assert!(v.get("notes").is_none());
        assert!(!ssns.iter().any(|s| v.to_string().contains(s.as_str())));
    }
    // The write is audited as masked, with the per-field counts.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let masked_write = |spool: &str| {
        spool.lines().any(|l| {
            l.contains("\"api\":\"Produce\"")
                && l.contains("\"decision\":\"Masked\"")
                && l.contains("patient-intake")
                && l.contains("$.patient.ssn")
        })
    };
    while !masked_write(&read_spool()) {
        assert!(
            std::time::Instant::now() < deadline,
            "no Masked Produce audit record with field counts:\n{}",
            analytics.output()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
