//! The CEL rules in the generated CRDs compile, fit the API server's cost
//! budget, and refuse (or accept) the objects they are meant to, evaluated
//! client-side with kube-cel (the same evaluator kube's `cel` feature uses).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube_cel::{ScopeContext, Validator, WarningKind, analyze_rule, compile_schema};
use serde_json::{Value, json};

fn schema(kind: &str) -> Value {
    let crd = streamgate_crds::generate::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

/// Every CEL failure message for `object` (updated from `old`, if any).
fn cel_errors(kind: &str, object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema(kind), object, old) {
        Ok(()) => vec![],
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn assert_refused(kind: &str, object: &Value, old: Option<&Value>, want: &str) {
    let errors = cel_errors(kind, object, old);
    assert!(
        errors.iter().any(|e| e.contains(want)),
        "want {want:?}, got {errors:?} for {object}"
    );
}

/// Variables bound by CEL macros in `rule`: `x` in `.all(x, ...)`, `.exists(x, ...)`, ...
fn macro_variables(rule: &str) -> Vec<String> {
    let mut vars = Vec::new();
    for mac in [".all(", ".exists(", ".exists_one(", ".map(", ".filter("] {
        for (at, _) in rule.match_indices(mac) {
            let rest = &rule[at + mac.len()..];
            if let Some(comma) = rest.find(',') {
                vars.push(rest[..comma].trim().to_string());
            }
        }
    }
    vars
}

fn walk_rules(node: &Value, path: &str, out: &mut Vec<(String, String, Value)>) {
    if let Some(rules) = node["x-kubernetes-validations"].as_array() {
        for rule in rules {
            out.push((
                path.to_string(),
                rule["rule"].as_str().unwrap().to_string(),
                node.clone(),
            ));
        }
    }
    if let Some(props) = node["properties"].as_object() {
        for (name, child) in props {
            walk_rules(child, &format!("{path}.{name}"), out);
        }
    }
    if node.get("items").is_some() {
        walk_rules(&node["items"], &format!("{path}[*]"), out);
    }
}

#[test]
fn every_rule_compiles_and_fits_the_cost_budget() {
    let mut total = 0;
    for kind in ["StreamPolicy", "MaskingRule", "AccessApproval"] {
        let root = schema(kind);
        assert!(
            !compile_schema(&root).has_errors(),
            "{kind}: a CEL rule does not compile"
        );
        let mut rules = Vec::new();
        walk_rules(&root, "$", &mut rules);
        for (path, rule, node) in rules {
            total += 1;
            let warnings = analyze_rule(&rule, &compile_schema(&node), ScopeContext::CrdValidation);
            // kube-cel's scope check does not know macro variables (`r` in
            // `self.rules.all(r, ...)`); those are bound by the rule itself.
            let macro_vars: Vec<String> = macro_variables(&rule);
            let fatal: Vec<_> = warnings
                .iter()
                .filter(|w| match w.kind {
                    WarningKind::CostExceeded | WarningKind::MissingBounds => true,
                    WarningKind::WrongScope => !macro_vars
                        .iter()
                        .any(|v| w.message.contains(&format!("variable '{v}'"))),
                    _ => true,
                })
                .collect();
            assert!(fatal.is_empty(), "{kind} {path}: {rule}: {fatal:?}");
        }
    }
    // StreamPolicy 1, MaskingRule 4, AccessApproval 6: a rule lost from the YAML shows here.
    assert_eq!(total, 11);
}

fn policy(rules: Value) -> Value {
    json!({
        "apiVersion": "streamgate.dev/v1alpha1", "kind": "StreamPolicy",
        "metadata": {"name": "p", "namespace": "clinical"},
        "spec": {"rules": rules}
    })
}

#[test]
fn stream_policy_rule_names_must_be_unique() {
    let rule = |name: &str| json!({"name": name, "subjects": [{"kind": "User", "name": "a"}], "topics": ["t"], "operations": ["Read"]});
    assert_eq!(
        cel_errors("StreamPolicy", &policy(json!([rule("a"), rule("b")])), None),
        Vec::<String>::new()
    );
    assert_refused(
        "StreamPolicy",
        &policy(json!([rule("a"), rule("b"), rule("a")])),
        None,
        "rule names must be unique within a StreamPolicy",
    );
}

fn masking(spec: Value) -> Value {
    json!({
        "apiVersion": "streamgate.dev/v1alpha1", "kind": "MaskingRule",
        "metadata": {"name": "m", "namespace": "clinical"},
        "spec": spec
    })
}

#[test]
fn masking_rule_keep_last_hash_key_and_mrn_pattern() {
    let ok = masking(
        json!({"topics": ["t"], "fields": [{"path": "$.ssn", "strategy": "Partial", "keepLast": 4}]}),
    );
    assert_eq!(cel_errors("MaskingRule", &ok, None), Vec::<String>::new());

    let keep_with_redact = masking(
        json!({"topics": ["t"], "fields": [{"path": "$.ssn", "strategy": "Redact", "keepLast": 4}]}),
    );
    assert_refused(
        "MaskingRule",
        &keep_with_redact,
        None,
        "keepLast is required with strategy Partial and not allowed",
    );
    let partial_without =
        masking(json!({"topics": ["t"], "fields": [{"path": "$.ssn", "strategy": "Partial"}]}));
    assert_refused(
        "MaskingRule",
        &partial_without,
        None,
        "keepLast is required with strategy Partial",
    );

    let hash_without_key =
        masking(json!({"topics": ["t"], "fields": [{"path": "$.name", "strategy": "Hash"}]}));
    assert_refused(
        "MaskingRule",
        &hash_without_key,
        None,
        "needs spec.hashKeySecretRef",
    );
    let hash_with_key = masking(
        json!({"topics": ["t"], "fields": [{"path": "$.name", "strategy": "Hash"}],
        "hashKeySecretRef": {"name": "k", "key": "hmac"}}),
    );
    assert_eq!(
        cel_errors("MaskingRule", &hash_with_key, None),
        Vec::<String>::new()
    );

    let patients_without_key = masking(json!({"topics": ["t"], "patientFields": ["$.mrn"]}));
    assert_refused(
        "MaskingRule",
        &patients_without_key,
        None,
        "spec.patientFields needs spec.patientKeySecretRef",
    );
    let patients_with_key = masking(json!({"topics": ["t"], "patientFields": ["$.mrn"],
        "patientKeySecretRef": {"name": "k", "key": "patient-hmac"}}));
    assert_eq!(
        cel_errors("MaskingRule", &patients_with_key, None),
        Vec::<String>::new()
    );

    let mrn_without_pattern = masking(json!({"topics": ["t"], "detectors": ["SSN", "MRN"]}));
    assert_refused(
        "MaskingRule",
        &mrn_without_pattern,
        None,
        "the MRN detector needs spec.mrnPattern",
    );
}

fn approval(spec_changes: Value) -> Value {
    let mut object = json!({
        "apiVersion": "streamgate.dev/v1alpha1", "kind": "AccessApproval",
        "metadata": {"name": "a", "namespace": "clinical"},
        "spec": {
            "requester": {"kind": "User", "name": "alice@example.com", "groups": ["clinicians"]},
            "workload": {"pod": "intake-1", "serviceAccount": "intake"},
            "policy": "phi-access", "rule": "write-patient-records",
            "topics": ["patient-records"], "operations": ["Write"], "duration": "1h",
            "decision": "Pending"
        }
    });
    for (key, value) in spec_changes.as_object().unwrap() {
        if value.is_null() {
            object["spec"].as_object_mut().unwrap().remove(key);
        } else {
            object["spec"][key] = value.clone();
        }
    }
    object
}

#[test]
fn access_approval_request_is_immutable() {
    let old = approval(json!({}));
    assert_eq!(
        cel_errors("AccessApproval", &old, None),
        Vec::<String>::new(),
        "create"
    );
    assert_eq!(
        cel_errors("AccessApproval", &old, Some(&old)),
        Vec::<String>::new(),
        "no-op update"
    );
    let changes = [
        json!({"requester": {"kind": "User", "name": "mallory@example.com", "groups": ["clinicians"]}}),
        json!({"policy": "other"}),
        json!({"rule": "other"}),
        json!({"topics": ["patient-records", "claims"]}),
        json!({"operations": ["Write", "Read"]}),
        json!({"duration": "7d"}),
    ];
    for change in changes {
        assert_refused(
            "AccessApproval",
            &approval(change.clone()),
            Some(&old),
            "the request (requester, policy, rule, topics, operations, duration) is immutable",
        );
    }
    assert_refused(
        "AccessApproval",
        &approval(json!({"workload": null})),
        Some(&old),
        "spec.workload is immutable",
    );
    assert_refused(
        "AccessApproval",
        &approval(json!({"workload": {"pod": "other", "serviceAccount": "intake"}})),
        Some(&old),
        "spec.workload is immutable",
    );
}

#[test]
fn access_approval_decision_is_final() {
    let pending = approval(json!({}));
    let approved = approval(json!({"decision": "Approved", "decidedBy": "carol@example.com"}));
    let denied = approval(json!({"decision": "Denied", "decidedBy": "carol@example.com"}));
    assert_eq!(
        cel_errors("AccessApproval", &approved, Some(&pending)),
        Vec::<String>::new(),
        "approve"
    );
    assert_eq!(
        cel_errors("AccessApproval", &denied, Some(&pending)),
        Vec::<String>::new(),
        "deny"
    );
    assert_refused(
        "AccessApproval",
        &denied,
        Some(&approved),
        "the decision is final",
    );
    assert_refused(
        "AccessApproval",
        &pending,
        Some(&denied),
        "the decision is final",
    );
    let restamped = approval(json!({"decision": "Approved", "decidedBy": "mallory@example.com"}));
    assert_refused(
        "AccessApproval",
        &restamped,
        Some(&approved),
        "spec.decidedBy cannot change",
    );
    assert_eq!(
        cel_errors("AccessApproval", &approved, Some(&approved)),
        Vec::<String>::new(),
        "no-op after decision"
    );
}

#[test]
fn a_break_glass_review_is_final_and_the_reason_immutable() {
    let used = approval(json!({"breakGlass": true, "reason": "ED trauma bay 3"}));
    let reviewed = approval(json!({"breakGlass": true, "reason": "ED trauma bay 3",
        "review": "Justified", "reviewNote": "ok", "reviewedBy": "carol@example.com"}));
    assert_eq!(
        cel_errors("AccessApproval", &reviewed, Some(&used)),
        Vec::<String>::new(),
        "review"
    );
    let again = approval(json!({"breakGlass": true, "reason": "ED trauma bay 3",
        "review": "NotJustified", "reviewNote": "ok", "reviewedBy": "carol@example.com"}));
    assert_refused(
        "AccessApproval",
        &again,
        Some(&reviewed),
        "the review is final once given",
    );
    assert_refused(
        "AccessApproval",
        &used,
        Some(&reviewed),
        "the review is final once given",
    );
    let reworded = approval(json!({"breakGlass": true, "reason": "routine"}));
    assert_refused(
        "AccessApproval",
        &reworded,
        Some(&used),
        "spec.breakGlass and spec.reason are immutable",
    );
    let plain = approval(json!({}));
    assert_refused(
        "AccessApproval",
        &used,
        Some(&plain),
        "spec.breakGlass and spec.reason are immutable",
    );
}

#[test]
fn every_example_passes_the_cel_rules() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = 0;
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value: Value = serde::Deserialize::deserialize(doc).unwrap();
                if value["apiVersion"] != "streamgate.dev/v1alpha1" {
                    continue;
                }
                let kind = value["kind"].as_str().unwrap();
                let errors = cel_errors(kind, &value, None);
                assert!(errors.is_empty(), "{}: {errors:?}", path.display());
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 5);
}
