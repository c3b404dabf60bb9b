//! Every streamgate object under `examples/` parses with the crate types and
//! validates; the invalid manifests under `tests/data/invalid/` fail with a
//! message that says what is wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use streamgate_crds::validation::{
    validate_access_approval, validate_masking_rule, validate_stream_policy,
};
use streamgate_crds::{AccessApproval, MaskingRule, StreamPolicy};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Parse `doc` as the streamgate kind it names and validate it. `Ok(None)`
/// for kinds that are not ours.
fn check(doc: &Value) -> Result<Option<&'static str>, String> {
    if doc["apiVersion"] != "streamgate.dev/v1alpha1" {
        return Ok(None);
    }
    match doc["kind"].as_str() {
        Some("StreamPolicy") => {
            let obj: StreamPolicy =
                serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
            validate_stream_policy(&obj.spec).map_err(|e| e.to_string())?;
            Ok(Some("StreamPolicy"))
        }
        Some("MaskingRule") => {
            let obj: MaskingRule =
                serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
            validate_masking_rule(&obj.spec).map_err(|e| e.to_string())?;
            Ok(Some("MaskingRule"))
        }
        Some("AccessApproval") => {
            let obj: AccessApproval =
                serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
            validate_access_approval(&obj.spec).map_err(|e| e.to_string())?;
            Ok(Some("AccessApproval"))
        }
        other => Err(format!("unknown streamgate kind {other:?}")),
    }
}

#[test]
fn every_example_parses_and_validates() {
    let mut files = Vec::new();
    yaml_files(&repo_root().join("examples"), &mut files);
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for file in &files {
        for doc in documents(file) {
            match check(&doc) {
                Ok(Some(kind)) => *seen.entry(kind).or_default() += 1,
                Ok(None) => {}
                Err(e) => panic!(
                    "{}: {} is invalid:\n{e}",
                    file.display(),
                    doc["metadata"]["name"]
                ),
            }
        }
    }
    // The sample covers every kind (a file that stopped parsing as YAML would show here).
    assert_eq!(seen.get("StreamPolicy"), Some(&2), "{seen:?}");
    assert_eq!(seen.get("MaskingRule"), Some(&2), "{seen:?}");
    assert_eq!(seen.get("AccessApproval"), Some(&1), "{seen:?}");
}

#[test]
fn the_pod_example_asks_for_injection() {
    let docs = documents(&repo_root().join("examples/pod.yaml"));
    let pod = docs.iter().find(|d| d["kind"] == "Pod").expect("a Pod");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod.clone()).unwrap();
    let annotations = pod.metadata.annotations.unwrap();
    assert_eq!(annotations["streamgate.dev/inject"], "true");
    assert!(annotations.contains_key("streamgate.dev/upstream"));
    assert_eq!(
        pod.metadata.labels.unwrap()["app"],
        "billing",
        "selected by examples/streampolicy.yaml"
    );
}

#[test]
fn allow_all_lets_any_user_and_any_service_account_do_anything() {
    use streamgate_crds::matching::{Principal, topic_matches};
    use streamgate_crds::{Operation, SubjectKind};
    let docs = documents(&repo_root().join("examples/policies/allow-all.yaml"));
    let policy: StreamPolicy = serde_json::from_value(docs[0].clone()).unwrap();
    assert!(policy.spec.blocked_operations.is_empty());
    assert!(policy.spec.identity.workload_identity);
    let principals = [
        Principal {
            kind: SubjectKind::User,
            name: "anyone@example.com".into(),
            namespace: None,
            groups: vec![],
            issuer: Some("https://idp.example.com".into()),
        },
        Principal {
            kind: SubjectKind::ServiceAccount,
            name: "e2e-client".into(),
            namespace: Some("streamgate-test".into()),
            groups: vec![],
            issuer: None,
        },
    ];
    for principal in &principals {
        for op in [
            Operation::Write,
            Operation::Read,
            Operation::Describe,
            Operation::Create,
            Operation::Admin,
        ] {
            let allowed = policy.spec.rules.iter().any(|r| {
                r.subjects
                    .iter()
                    .any(|s| s.matches(principal, "streamgate-test"))
                    && r.operations.contains(&op)
                    && r.topics
                        .iter()
                        .any(|t| topic_matches(t, "patient-events.v2"))
            });
            assert!(allowed, "{principal:?} {op:?}");
        }
    }
}

#[test]
fn example_data_is_present_and_matches_the_planted_values() {
    let data = repo_root().join("examples/data");
    let planted: BTreeMap<String, Vec<Vec<String>>> =
        serde_json::from_str(&std::fs::read_to_string(data.join("phi-values.json")).unwrap())
            .unwrap();
    for (file, rows) in planted {
        let lines = std::fs::read_to_string(data.join(&file)).unwrap();
        let records: Vec<Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), rows.len(), "{file}");
        // Each record carries the PHI planted for it.
        let first = records[0].to_string();
        for value in &rows[0] {
            let in_record =
                first.contains(value.as_str()) || value.split(' ').all(|part| first.contains(part));
            assert!(in_record, "{file}: {value} not in {first}");
        }
    }
    assert!(data.join("gen_phi.py").exists());
}

fn invalid(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/invalid")
        .join(name);
    let docs = documents(&path);
    assert_eq!(docs.len(), 1, "{name}");
    match check(&docs[0]) {
        Ok(kind) => panic!("{name} was accepted as {kind:?}"),
        Err(message) => message,
    }
}

#[test]
fn invalid_manifests_fail_with_a_clear_message() {
    let cases = [
        (
            "duplicate-rule-names.yaml",
            "spec.rules[1] (read-claims).name: duplicate rule name \"read-claims\" (also spec.rules[0])",
        ),
        (
            "keeplast-with-redact.yaml",
            "spec.fields[0] ($.patient.ssn).keepLast: is only allowed with strategy Partial, not Redact",
        ),
        (
            "unknown-operation.yaml",
            "unknown variant `Delete`, expected one of `Write`, `Read`, `Describe`, `Create`, `Admin`",
        ),
        (
            "bad-glob.yaml",
            "spec.rules[0] (read-all).topics[0]: topic glob \"claims.***\" has '***'",
        ),
        (
            "bad-duration.yaml",
            "spec.duration: \"forever\" is not a duration (write e.g. 30m, 1h, 1h 30m)",
        ),
        (
            "hash-without-key.yaml",
            "spec.fields[0] ($.memberName).strategy: is Hash but spec.hashKeySecretRef is missing",
        ),
        (
            "bad-field-path.yaml",
            "field path \"$.payment['cardNumber']\" has \"['cardNumber']\"",
        ),
    ];
    let mut files = Vec::new();
    yaml_files(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/invalid"),
        &mut files,
    );
    assert_eq!(
        files.len(),
        cases.len(),
        "every invalid manifest has a case"
    );
    for (file, want) in cases {
        let message = invalid(file);
        assert!(
            message.contains(want),
            "{file}: {message:?} should contain {want:?}"
        );
    }
}

/// Every leaf of `value` as (JSON Pointer, text).
fn leaves(pointer: String, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                leaves(format!("{pointer}/{k}"), v, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                leaves(format!("{pointer}/{i}"), v, out);
            }
        }
        other => out.push((
            pointer,
            other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_string),
        )),
    }
}

/// The example MaskingRules address every planted PHI value of the sample data
/// by a field path (detectors are a second net, not the only one).
#[test]
fn example_masking_rules_cover_every_planted_phi_value() {
    use streamgate_crds::field_path::FieldPath;
    use streamgate_crds::matching::topic_matches;
    let rules: Vec<MaskingRule> = documents(&repo_root().join("examples/maskingrule.yaml"))
        .into_iter()
        .map(|d| serde_json::from_value(d).unwrap())
        .collect();
    let data = repo_root().join("examples/data");
    let planted: BTreeMap<String, Vec<Vec<String>>> =
        serde_json::from_str(&std::fs::read_to_string(data.join("phi-values.json")).unwrap())
            .unwrap();
    for (file, rows) in planted {
        let topic = file.trim_end_matches(".jsonl");
        let rule = rules
            .iter()
            .find(|r| r.spec.topics.iter().any(|t| topic_matches(t, topic)))
            .unwrap_or_else(|| panic!("no example MaskingRule for topic {topic}"));
        let paths: Vec<FieldPath> = rule
            .spec
            .fields
            .iter()
            .map(|f| FieldPath::parse(&f.path).unwrap())
            .collect();
        let text = std::fs::read_to_string(data.join(&file)).unwrap();
        for (line, phi) in text.lines().zip(&rows).take(200) {
            let record: Value = serde_json::from_str(line).unwrap();
            let masked: Vec<String> = paths
                .iter()
                .flat_map(|p| p.select_pointers(&record))
                .collect();
            let mut all = Vec::new();
            leaves(String::new(), &record, &mut all);
            for (pointer, leaf) in all {
                let carries_phi = phi.iter().any(|v| leaf.contains(v.as_str()));
                let covered = masked
                    .iter()
                    .any(|m| pointer == *m || pointer.starts_with(&format!("{m}/")));
                assert!(
                    !carries_phi || covered,
                    "{topic}: {pointer} = {leaf:?} carries PHI but no field path masks it"
                );
            }
        }
    }
}
