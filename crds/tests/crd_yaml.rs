//! The committed CRD YAML is the generator's output, the chart carries the
//! same files, every schema is structural, and the CEL rules, printer columns,
//! names and subresources the API promises are really in the YAML.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use serde_json::Value;

const REGENERATE: &str = "run cargo run -p streamgate-crds --bin streamgate-crdgen";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart_crd_dir() -> PathBuf {
    crate_dir().join("../charts/streamgate/crds")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", path.display()))
}

#[test]
fn committed_yaml_is_the_generator_output() {
    for (name, yaml) in streamgate_crds::generate::render_all().unwrap() {
        let committed = read(&crate_dir().join(&name));
        assert!(committed == yaml, "crds/{name} is stale: {REGENERATE}");
    }
}

#[test]
fn chart_carries_the_same_crds() {
    let generated = streamgate_crds::generate::render_all().unwrap();
    for (name, _) in &generated {
        let top = read(&crate_dir().join(name));
        let chart = read(&chart_crd_dir().join(name));
        assert!(
            top == chart,
            "charts/streamgate/crds/{name} differs from crds/{name}: {REGENERATE}"
        );
    }
    // No leftover CRD files from a renamed kind.
    for dir in [crate_dir(), chart_crd_dir()] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let file = entry.unwrap().file_name().to_string_lossy().into_owned();
            if file.ends_with(".yaml") {
                assert!(
                    generated.iter().any(|(n, _)| *n == file),
                    "{}/{file} is not generated any more; delete it",
                    dir.display()
                );
            }
        }
    }
}

/// The committed CRDs as JSON values, by kind.
fn committed_crds() -> Vec<(String, Value)> {
    streamgate_crds::generate::render_all()
        .unwrap()
        .into_iter()
        .map(|(name, _)| {
            let value: Value = serde_yaml::from_str(&read(&crate_dir().join(&name))).unwrap();
            let kind = value["spec"]["names"]["kind"].as_str().unwrap().to_string();
            (kind, value)
        })
        .collect()
}

fn schema_of(crd: &Value) -> &Value {
    let versions = crd["spec"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    &versions[0]["schema"]["openAPIV3Schema"]
}

// ---------------------------------------------------------------------------
// Structural-schema walker (the API server's rules for apiextensions.k8s.io/v1,
// see "Specifying a structural schema" in the Kubernetes CRD docs).

const TYPES: [&str; 6] = ["object", "array", "string", "integer", "number", "boolean"];
const FORBIDDEN: [&str; 9] = [
    "$ref",
    "$schema",
    "definitions",
    "$defs",
    "dependencies",
    "patternProperties",
    "additionalItems",
    "id",
    "const",
];
const COMBINATORS: [&str; 4] = ["allOf", "anyOf", "oneOf", "not"];

/// Every reason `node` (at `path`) is not structural.
fn structural_problems(node: &Value, path: &str, in_combinator: bool, out: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        out.push(format!("{path}: schema node is not an object"));
        return;
    };
    for key in FORBIDDEN {
        if obj.contains_key(key) {
            out.push(format!("{path}: `{key}` is not allowed in a CRD schema"));
        }
    }
    if obj.get("uniqueItems") == Some(&Value::Bool(true)) {
        out.push(format!("{path}: uniqueItems: true is not allowed"));
    }
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));

    if in_combinator {
        for key in [
            "type",
            "default",
            "additionalProperties",
            "nullable",
            "description",
        ] {
            if obj.contains_key(key) && !int_or_string {
                out.push(format!("{path}: `{key}` inside allOf/anyOf/oneOf/not"));
            }
        }
    } else {
        match obj.get("type") {
            Some(Value::String(t)) if TYPES.contains(&t.as_str()) => {}
            Some(other) => out.push(format!("{path}: type {other} is not one of {TYPES:?}")),
            None if int_or_string || preserve => {}
            None => out.push(format!("{path}: node without type")),
        }
        if obj.get("nullable") == Some(&Value::Bool(true))
            && !obj.contains_key("type")
            && !int_or_string
        {
            out.push(format!("{path}: nullable without type"));
        }
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        out.push(format!("{path}: additionalProperties beside properties"));
    }
    let ty = obj.get("type").and_then(Value::as_str);
    if ty == Some("array") && !obj.contains_key("items") {
        out.push(format!("{path}: array without items"));
    }
    if obj.contains_key("properties") && ty.is_some() && ty != Some("object") {
        out.push(format!("{path}: properties on a {ty:?} node"));
    }
    if let (Some(values), Some(ty)) = (obj.get("enum").and_then(Value::as_array), ty) {
        for v in values {
            let fits = match ty {
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                _ => true,
            } || (v.is_null() && obj.get("nullable") == Some(&Value::Bool(true)));
            if !fits {
                out.push(format!("{path}: enum value {v} does not fit type {ty}"));
            }
        }
    }
    if let Some(rules) = obj.get("x-kubernetes-validations") {
        for rule in rules.as_array().into_iter().flatten() {
            if rule["rule"].as_str().is_none_or(str::is_empty) {
                out.push(format!(
                    "{path}: x-kubernetes-validations entry without a rule"
                ));
            }
        }
    }
    if obj.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
        let keys = obj
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array);
        match keys {
            None => out.push(format!("{path}: list-type map without list-map-keys")),
            Some(keys) => {
                let item = &obj["items"];
                for key in keys.iter().filter_map(Value::as_str) {
                    let required = item["required"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|k| k == key));
                    let defaulted = item["properties"][key].get("default").is_some();
                    if !(required || defaulted) {
                        out.push(format!(
                            "{path}: list-map key {key:?} must be required or defaulted"
                        ));
                    }
                    let key_type = item["properties"][key]["type"].as_str();
                    if !matches!(key_type, Some("string" | "integer" | "number" | "boolean")) {
                        out.push(format!("{path}: list-map key {key:?} must be a scalar"));
                    }
                }
            }
        }
    }

    if let Some(props) = obj.get("properties") {
        match props.as_object() {
            Some(props) => {
                for (name, child) in props {
                    structural_problems(child, &format!("{path}.{name}"), in_combinator, out);
                }
            }
            None => out.push(format!("{path}: properties is not a map")),
        }
    }
    if let Some(items) = obj.get("items") {
        if items.is_array() {
            out.push(format!(
                "{path}: items must be a single schema, not a tuple"
            ));
        } else {
            structural_problems(items, &format!("{path}[*]"), in_combinator, out);
        }
    }
    if let Some(additional) = obj.get("additionalProperties")
        && additional.is_object()
    {
        structural_problems(additional, &format!("{path}{{*}}"), in_combinator, out);
    }
    for key in COMBINATORS {
        if let Some(sub) = obj.get(key) {
            let subs: Vec<&Value> = match sub {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for (i, s) in subs.into_iter().enumerate() {
                structural_problems(s, &format!("{path}<{key}[{i}]>"), true, out);
            }
        }
    }
}

fn problems_of(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    structural_problems(schema, "$", false, &mut out);
    out
}

#[test]
fn every_schema_is_structural() {
    for (kind, crd) in committed_crds() {
        let problems = problems_of(schema_of(&crd));
        assert!(
            problems.is_empty(),
            "{kind} schema is not structural:\n{}",
            problems.join("\n")
        );
    }
}

#[test]
fn the_walker_catches_non_structural_schemas() {
    let cases = [
        (
            serde_json::json!({"type": "object", "properties": {"a": {}}}),
            "$.a: node without type",
        ),
        (
            serde_json::json!({"type": "object", "properties": {"a": {"$ref": "#/x"}}}),
            "`$ref`",
        ),
        (
            serde_json::json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}}),
            "additionalProperties beside properties",
        ),
        (
            serde_json::json!({"type": "object", "properties": {"a": {"type": "string", "anyOf": [{"type": "string"}]}}}),
            "`type` inside allOf/anyOf/oneOf/not",
        ),
        (
            serde_json::json!({"type": "object", "properties": {"a": {"oneOf": [{"default": 1}], "type": "integer"}}}),
            "`default` inside",
        ),
        (
            serde_json::json!({"nullable": true}),
            "nullable without type",
        ),
        (serde_json::json!({"type": "array"}), "array without items"),
        (
            serde_json::json!({"type": "string", "enum": [1]}),
            "does not fit type string",
        ),
        (
            serde_json::json!({"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                "items": {"type": "object", "properties": {"type": {"type": "string"}}}}),
            "must be required or defaulted",
        ),
        (
            serde_json::json!({"type": "object", "properties": {"a": {"type": ["string", "null"]}}}),
            "is not one of",
        ),
    ];
    for (schema, want) in cases {
        let problems = problems_of(&schema);
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "{schema}: want {want:?}, got {problems:?}"
        );
    }
    assert!(problems_of(&serde_json::json!({"x-kubernetes-int-or-string": true})).is_empty());
    assert!(
        problems_of(
            &serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
        )
        .is_empty()
    );
}

// ---------------------------------------------------------------------------
// What the API promises is in the YAML.

fn crd_of(kind: &str) -> Value {
    committed_crds()
        .into_iter()
        .find(|(k, _)| k == kind)
        .unwrap()
        .1
}

fn rules_at(schema: &Value, pointer: &str) -> Vec<String> {
    schema
        .pointer(pointer)
        .unwrap_or_else(|| panic!("no schema node at {pointer}"))["x-kubernetes-validations"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|r| r["rule"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn columns(crd: &Value) -> Vec<(String, String)> {
    crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["jsonPath"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn names_scope_subresources_and_conditions() {
    for (kind, short, plural) in [
        ("StreamPolicy", "sp", "streampolicies"),
        ("MaskingRule", "mr", "maskingrules"),
        ("AccessApproval", "aa", "accessapprovals"),
    ] {
        let crd = crd_of(kind);
        assert_eq!(crd["metadata"]["name"], format!("{plural}.streamgate.dev"));
        assert_eq!(crd["spec"]["group"], "streamgate.dev");
        assert_eq!(crd["spec"]["scope"], "Namespaced", "{kind}");
        assert_eq!(
            crd["spec"]["names"]["shortNames"],
            serde_json::json!([short]),
            "{kind}"
        );
        assert_eq!(
            crd["spec"]["names"]["categories"],
            serde_json::json!(["streamgate"]),
            "{kind}"
        );
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert_eq!(
            version["subresources"]["status"],
            serde_json::json!({}),
            "{kind} status subresource"
        );
        let conditions = &schema_of(&crd)["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{kind}");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"]),
            "{kind}"
        );
        let ready = columns(&crd)
            .into_iter()
            .find(|(n, _)| n == "Ready" || n == "Phase");
        assert!(
            ready.is_some(),
            "{kind} shows readiness or phase in kubectl get"
        );
        assert!(
            columns(&crd)
                .iter()
                .any(|(n, p)| n == "Age" && p == ".metadata.creationTimestamp")
        );
    }
}

#[test]
fn enums_are_string_enums() {
    let schema = schema_of(&crd_of("StreamPolicy")).clone();
    let ops = &schema["properties"]["spec"]["properties"]["rules"]["items"]["properties"]["operations"]
        ["items"];
    assert_eq!(ops["type"], "string");
    assert_eq!(
        ops["enum"],
        serde_json::json!(["Write", "Read", "Describe", "Create", "Admin"])
    );
    let effect =
        &schema["properties"]["spec"]["properties"]["rules"]["items"]["properties"]["effect"];
    assert_eq!(effect["enum"], serde_json::json!(["Allow", "Deny"]));
    let aa = schema_of(&crd_of("AccessApproval")).clone();
    assert_eq!(
        aa["properties"]["status"]["properties"]["phase"]["enum"],
        serde_json::json!(["Pending", "Approved", "Denied", "Expired", "BreakGlass"])
    );
    assert_eq!(
        aa["properties"]["spec"]["properties"]["review"]["enum"],
        serde_json::json!(["Justified", "NotJustified"])
    );
    assert_eq!(
        aa["properties"]["spec"]["properties"]["decision"]["default"],
        "Pending"
    );
    let mr = schema_of(&crd_of("MaskingRule")).clone();
    let strategy =
        &mr["properties"]["spec"]["properties"]["fields"]["items"]["properties"]["strategy"];
    assert_eq!(
        strategy["enum"],
        serde_json::json!(["Redact", "Partial", "Hash", "Remove"])
    );
}

#[test]
fn stream_policy_rule_names_are_unique() {
    let crd = crd_of("StreamPolicy");
    let schema = schema_of(&crd);
    let spec_rules = rules_at(schema, "/properties/spec");
    assert!(
        spec_rules
            .iter()
            .any(|r| r.contains("self.rules.all(r, self.rules.exists_one(o, o.name == r.name))")),
        "{spec_rules:?}"
    );
    let rules = &schema["properties"]["spec"]["properties"]["rules"];
    assert_eq!(rules["x-kubernetes-list-type"], "map");
    assert_eq!(
        rules["x-kubernetes-list-map-keys"],
        serde_json::json!(["name"])
    );
    assert!(
        rules["maxItems"].as_u64().is_some(),
        "bounded for the CEL cost budget"
    );
    let cols: Vec<String> = columns(&crd).into_iter().map(|(n, _)| n).collect();
    assert_eq!(cols, ["Workloads", "Ready", "Reason", "Age"]);
}

#[test]
fn masking_rule_keep_last_goes_with_partial() {
    let crd = crd_of("MaskingRule");
    let schema = schema_of(&crd);
    let field_rules = rules_at(schema, "/properties/spec/properties/fields/items");
    assert_eq!(
        field_rules,
        ["self.strategy == 'Partial' ? has(self.keepLast) : !has(self.keepLast)"]
    );
    let spec_rules = rules_at(schema, "/properties/spec");
    assert!(
        spec_rules
            .iter()
            .any(|r| r.contains("has(self.hashKeySecretRef)")),
        "{spec_rules:?}"
    );
    assert!(
        spec_rules
            .iter()
            .any(|r| r.contains("has(self.mrnPattern)")),
        "{spec_rules:?}"
    );
    let cols: Vec<String> = columns(&crd).into_iter().map(|(n, _)| n).collect();
    assert_eq!(cols, ["Topics", "Format", "Apply-To", "Ready", "Age"]);
}

#[test]
fn access_approval_request_is_immutable_and_decision_final() {
    let crd = crd_of("AccessApproval");
    let schema = schema_of(&crd);
    let spec_rules = rules_at(schema, "/properties/spec");
    for field in [
        "requester",
        "policy",
        "rule",
        "topics",
        "operations",
        "duration",
    ] {
        let needle = format!("self.{field} == oldSelf.{field}");
        assert!(
            spec_rules.iter().any(|r| r.contains(&needle)),
            "{field} immutable: {spec_rules:?}"
        );
    }
    assert!(
        spec_rules
            .iter()
            .any(|r| r.contains("self.workload == oldSelf.workload"))
    );
    assert!(spec_rules.contains(
        &"oldSelf.decision == 'Pending' || self.decision == oldSelf.decision".to_string()
    ));
    assert!(
        spec_rules
            .iter()
            .any(|r| r.contains("self.decidedBy == oldSelf.decidedBy"))
    );
    let cols = columns(&crd);
    let want = [
        ("Requester", ".spec.requester.name"),
        ("Rule", ".spec.rule"),
        ("Topics", ".spec.topics"),
        ("Duration", ".spec.duration"),
        ("Phase", ".status.phase"),
        ("Expires", ".status.expiresAt"),
        ("Decided-By", ".spec.decidedBy"),
        ("Age", ".metadata.creationTimestamp"),
    ];
    let got: Vec<(&str, &str)> = cols.iter().map(|(n, p)| (n.as_str(), p.as_str())).collect();
    assert_eq!(got, want);
}
