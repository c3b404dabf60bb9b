//! The accounting of disclosures end to end: the example fixtures (patient
//! events and claims) are produced through a sidecar by the intake workload
//! and read through sidecars by three workloads with different masking — one
//! exempt (clear), one masked, one not allowed `patient-events` — with real
//! clients (confluent-kafka). `audit disclosures` for one MRN must list
//! exactly the ranges that held it — the expectation computed here from what
//! each client actually received and the values produced at those offsets —
//! and nothing else; a patient never read yields an empty report; a tampered
//! spool fails the command.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use streamgate_e2e::{
    Broker, Proxy, ProxyOptions, Storage, check, example, fixture_lines, proxy_bin, python_client,
};

/// Lines of each fixture produced.
const LINES: usize = 200;
const PARTITIONS: u32 = 3;
const PATIENT_KEY: &[u8] = b"e2e-only-patient-key-fedcba9876543210";

const POLICY: &str = r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: disclosures, namespace: clinical}
spec:
  identity: {workloadIdentity: true}
  rules:
    - name: intake-writes
      subjects: [{kind: ServiceAccount, name: intake}]
      topics: [patient-events, claims]
      operations: [Write, Describe]
    - name: care-team-reads
      subjects: [{kind: ServiceAccount, name: clinician}, {kind: ServiceAccount, name: billing}]
      topics: [patient-events, claims]
      operations: [Read, Describe]
      groups: ["**"]
    - name: research-reads-claims
      subjects: [{kind: ServiceAccount, name: research}]
      topics: [claims]
      operations: [Read, Describe]
      groups: ["**"]
"#;

/// The example rules (with their patientFields), `clinician` exempt.
fn policy_dir(root: &Path) -> PathBuf {
    let dir = root.join("policy");
    std::fs::create_dir_all(&dir).unwrap();
    let rules = std::fs::read_to_string(example("maskingrule.yaml")).unwrap();
    let exempt = "{kind: Group, name: treating-clinicians}";
    assert!(rules.contains(exempt), "examples/maskingrule.yaml changed");
    assert!(
        rules.contains("patientFields"),
        "examples/maskingrule.yaml changed"
    );
    let rules = rules.replace(exempt, "{kind: ServiceAccount, name: clinician}");
    std::fs::write(dir.join("maskingrule.yaml"), rules).unwrap();
    std::fs::write(dir.join("streampolicy.yaml"), POLICY).unwrap();
    dir
}

/// The mounted Secret `masking-key`: the Hash key and the patient key.
fn secret_dir(root: &Path) -> PathBuf {
    let dir = root.join("secrets").join("masking-key");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hmac"), b"e2e-only-hmac-key-0123456789abcdef").unwrap();
    std::fs::write(dir.join("patient-hmac"), PATIENT_KEY).unwrap();
    root.join("secrets")
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

/// Produce `lines` through `addr`; the value at each acknowledged (partition, offset).
fn produce(addr: &str, topic: &str, lines: &[String], dir: &Path) -> BTreeMap<(u32, u64), String> {
    let input = dir.join(format!("{topic}.jsonl"));
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = python_client(
        "kclient.py",
        &[
            "confluent",
            "produce",
            "--bootstrap",
            addr,
            "--topic",
            topic,
            "--input",
            input.to_str().unwrap(),
        ],
    );
    let text = check(&out, &format!("produce {topic} via {addr}"));
    let acked: BTreeMap<(u32, u64), String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("offset").is_some())
        .map(|v| {
            let i = v["i"].as_u64().unwrap() as usize;
            let at = (
                v["partition"].as_u64().unwrap() as u32,
                v["offset"].as_u64().unwrap(),
            );
            (at, lines[i].clone())
        })
        .collect();
    assert_eq!(
        acked.len(),
        lines.len(),
        "every record acknowledged: {text}"
    );
    acked
}

/// (partition, offset) of every record a client received through `addr`.
fn consume(addr: &str, topic: &str, expect: usize, timeout: &str) -> BTreeSet<(u32, u64)> {
    let out = python_client(
        "kclient.py",
        &[
            "confluent",
            "consume",
            "--bootstrap",
            addr,
            "--topic",
            topic,
            "--expect",
            &expect.to_string(),
            "--timeout",
            timeout,
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("offset").is_some())
        .map(|v| {
            (
                v["partition"].as_u64().unwrap() as u32,
                v["offset"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn disclosures(spool: &Path, key: &Path, patient: &str) -> (i32, Vec<Value>, String) {
    let out = Command::new(proxy_bin())
        .args([
            "audit",
            "disclosures",
            spool.to_str().unwrap(),
            "--patient",
            patient,
            "--key",
            key.to_str().unwrap(),
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let rows = serde_json::from_str::<Vec<Value>>(&stdout).unwrap_or_default();
    (out.status.code().unwrap_or(-1), rows, stderr)
}

/// Does the original value name `mrn` where the example rule says it does?
fn names(topic: &str, value: &str, mrn: &str) -> bool {
    let v: Value = serde_json::from_str(value).unwrap();
    let at = if topic == "claims" {
        &v["patientMrn"]
    } else {
        &v["patient"]["mrn"]
    };
    at.as_str() == Some(mrn)
}

#[test]
fn the_report_for_one_patient_lists_exactly_the_disclosures_that_held_them() {
    let broker = Broker::start(Storage::Memory);
    let root = tempfile::tempdir().unwrap();
    let (policy, secrets) = (policy_dir(root.path()), secret_dir(root.path()));
    let key = root.path().join("patient-key");
    std::fs::write(&key, PATIENT_KEY).unwrap();
    let topics = ["patient-events", "claims"];
    let mut produced: BTreeMap<&str, BTreeMap<(u32, u64), String>> = BTreeMap::new();
    for t in topics {
        broker.create_topic(t, PARTITIONS);
    }

    // Written through the intake workload's sidecar.
    let mut proxies = vec![("intake", proxy_as(&broker, &policy, &secrets, "intake"))];
    for t in topics {
        let lines: Vec<String> = fixture_lines(&format!("{t}.jsonl"))
            .into_iter()
            .take(LINES)
            .collect();
        produced.insert(t, produce(&proxies[0].1.addr(), t, &lines, root.path()));
    }

    // Read by three workloads: clinician (exempt), billing (masked), research (no patient-events).
    let mut received: BTreeMap<(&str, &str), BTreeSet<(u32, u64)>> = BTreeMap::new();
    for who in ["clinician", "billing", "research"] {
        let proxy = proxy_as(&broker, &policy, &secrets, who);
        for t in topics {
            let refused = who == "research" && t == "patient-events";
            let got = consume(&proxy.addr(), t, LINES, if refused { "10" } else { "60" });
            if refused {
                assert!(got.is_empty(), "research must not read patient-events");
            } else {
                assert_eq!(got.len(), LINES, "{who} read every record of {t}");
            }
            received.insert((who, t), got);
        }
        proxies.push((who, proxy));
    }
    let mut spools = Vec::new();
    for (who, mut proxy) in proxies {
        assert_eq!(
            proxy.proc.terminate(Duration::from_secs(15)),
            Some(0),
            "{}",
            proxy.output()
        );
        spools.push((who, proxy.dir.path().join("audit"), proxy));
    }

    // The first claim's patient appears in both topics.
    let first_claim: Value = serde_json::from_str(&fixture_lines("claims.jsonl")[0]).unwrap();
    let mrn = first_claim["patientMrn"].as_str().unwrap().to_string();
    // Independently: per (workload, topic, partition), the offsets that held the MRN.
    let mut want: BTreeMap<(String, String, u32), BTreeSet<u64>> = BTreeMap::new();
    for t in topics {
        for (&(p, o), value) in &produced[t] {
            if !names(t, value, &mrn) {
                continue;
            }
            want.entry(("intake".into(), t.into(), p))
                .or_default()
                .insert(o);
            for who in ["clinician", "billing", "research"] {
                if received[&(who, t)].contains(&(p, o)) {
                    want.entry((who.into(), t.into(), p)).or_default().insert(o);
                }
            }
        }
    }
    assert!(
        want.keys().any(|(_, t, _)| t == "patient-events"),
        "{mrn} is in both topics"
    );
    assert!(want.keys().any(|(_, t, _)| t == "claims"));

    let mut covered: BTreeMap<(String, String, u32), BTreeSet<u64>> = BTreeMap::new();
    for (who, spool, _) in &spools {
        let (code, rows, stderr) = disclosures(spool, &key, &mrn);
        assert_eq!(code, 0, "{who}: {stderr}");
        for r in &rows {
            assert_eq!(
                r["subject"],
                format!("system:serviceaccount:clinical:{who}"),
                "each sidecar's trail names its own workload"
            );
            let subject = who.to_string();
            assert_eq!(r["serviceAccount"], *who);
            let (topic, p) = (
                r["topic"].as_str().unwrap().to_string(),
                r["partition"].as_u64().unwrap() as u32,
            );
            let (first, last) = (
                r["offsetFirst"].as_u64().unwrap(),
                r["offsetLast"].as_u64().unwrap(),
            );
            let held = want.get(&(subject.clone(), topic.clone(), p));
            assert!(
                held.is_some_and(|o| o.range(first..=last).next().is_some()),
                "{who} {topic}[{p}] {first}..{last} is listed but held no record of the patient: {r}"
            );
            covered
                .entry((subject.clone(), topic.clone(), p))
                .or_default()
                .extend(first..=last);
            // Clear: the intake's own writes, and the clinician on patient-events
            // (exempt there); every other read is masked (claims has no exemption).
            let clear =
                r["operation"] == "write" || (who == &"clinician" && topic == "patient-events");
            let expected_view = if clear { "clear" } else { "masked" };
            assert_eq!(
                r["operation"],
                if *who == "intake" { "write" } else { "read" },
                "{r}"
            );
            assert_eq!(r["view"], expected_view, "{r}");
            if expected_view == "masked" {
                assert!(r["maskedBy"].as_str().unwrap().ends_with("-phi"), "{r}");
            }
            assert!(r["reason"].as_str().unwrap().contains("rule"), "{r}");
        }
    }
    for (k, offsets) in &want {
        let got = covered.get(k).cloned().unwrap_or_default();
        assert!(
            offsets.is_subset(&got),
            "{k:?}: offsets {offsets:?} not all reported ({got:?})"
        );
    }
    assert!(
        !covered
            .keys()
            .any(|(who, t, _)| who == "research" && t == "patient-events"),
        "a refused read discloses nothing"
    );

    // A patient never read: an empty report from every trail.
    for (who, spool, _) in &spools {
        let (code, rows, stderr) = disclosures(spool, &key, "MRN-00000000");
        assert_eq!((code, rows.len()), (0, 0), "{who}: {stderr}");
    }
    // No identifier, only pseudonyms, in any spool.
    for (who, spool, _) in &spools {
        for e in std::fs::read_dir(spool).unwrap() {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
            assert!(
                !text.contains(&mrn),
                "{who}: the MRN itself is in the spool"
            );
        }
    }

    // A tampered spool: the billing reads erased from one record → exit 1.
    let (_, billing, _) = spools.iter().find(|(w, _, _)| *w == "billing").unwrap();
    let mut tampered = false;
    for e in std::fs::read_dir(billing).unwrap() {
        let path = e.unwrap().path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if tampered || !text.contains("\"patients\"") {
            continue;
        }
        let mut out = String::new();
        for line in text.lines() {
            if !tampered && line.contains("\"patients\"") {
                let mut v: Value = serde_json::from_str(line).unwrap();
                for res in v["resources"].as_array_mut().unwrap() {
                    res.as_object_mut().unwrap().remove("patients");
                }
                out.push_str(&v.to_string());
                tampered = true;
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        std::fs::write(&path, out).unwrap();
    }
    assert!(tampered);
    let (code, _, stderr) = disclosures(billing, &key, &mrn);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("does not verify"), "{stderr}");
}
