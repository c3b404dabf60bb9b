//! Arbitrary bytes through the streaming JSON masker (`masking::json::rewrite`)
//! with every strategy (Redact, Partial, Hash, Remove) and every detector, and
//! through the whole per-value plan (`MaskPlan::mask_value`, JSON and Text).
//!
//! Checked, whenever serde_json accepts the input:
//! - the masked document is valid JSON too;
//! - `$.ssn` is `null` or `"[REDACTED]"`, `$.contacts[*].email` likewise,
//!   and `$.internal` is gone (duplicate keys, escaped keys and all).
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use streamgate_crds::{Detector, MaskStrategy};
use streamgate_proxy::masking::detect::Detectors;
use streamgate_proxy::masking::json::{FieldRule, rewrite};
use streamgate_proxy::masking::path::FieldPath;
use streamgate_proxy::masking::{HashKey, MaskCounts};

struct Fixture {
    fields: Vec<FieldRule>,
    detectors: Detectors,
    key: HashKey,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let field = |path: &str, strategy, keep_last| FieldRule {
            path: FieldPath::parse(path).expect("path"),
            strategy,
            keep_last,
        };
        Fixture {
            fields: vec![
                field("$.ssn", MaskStrategy::Redact, 0),
                field("$.patient.name", MaskStrategy::Partial, 2),
                field("$..mrn", MaskStrategy::Hash, 0),
                field("$.contacts[*].email", MaskStrategy::Redact, 0),
                field("$.internal", MaskStrategy::Remove, 0),
            ],
            detectors: Detectors::compile(
                &[
                    Detector::SSN,
                    Detector::Email,
                    Detector::Phone,
                    Detector::CreditCard,
                    Detector::NPI,
                    Detector::MRN,
                ],
                Some("MRN-[0-9]{6}"),
            )
            .expect("detectors"),
            key: HashKey::new(streamgate_fuzz::HASH_KEY.to_vec()).expect("key"),
        }
    })
}

fn redacted_or_null(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null)) || v == Some(&Value::String("[REDACTED]".into()))
}

fn check_fields(input: &[u8], out: &[u8]) {
    let Ok(doc) = serde_json::from_slice::<Value>(out) else {
        panic!(
            "masking turned valid JSON into invalid JSON: {:?} -> {:?}",
            String::from_utf8_lossy(input),
            String::from_utf8_lossy(out)
        );
    };
    let Value::Object(map) = &doc else {
        return;
    };
    assert!(redacted_or_null(map.get("ssn")), "$.ssn leaked: {doc}");
    assert!(!map.contains_key("internal"), "$.internal kept: {doc}");
    if let Some(Value::Array(contacts)) = map.get("contacts") {
        for c in contacts {
            assert!(
                redacted_or_null(c.get("email")),
                "$.contacts[*].email leaked: {doc}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut counts = MaskCounts::default();
    let masked = rewrite(data, &f.fields, &f.detectors, Some(&f.key), &mut counts);
    // Field rules alone (no detector rewrites in between).
    let _ = rewrite(
        data,
        &f.fields,
        &Detectors::default(),
        Some(&f.key),
        &mut counts,
    );
    if serde_json::from_slice::<Value>(data).is_ok() {
        match &masked {
            Ok(Some(out)) => check_fields(data, out),
            Ok(None) => check_fields(data, data),
            Err(_) => {} // replaced by the unparseable marker: nothing leaks
        }
    }
    // The whole per-value plan: JSON rule and Text rule.
    for plan in streamgate_fuzz::plans() {
        let _ = plan.mask_value(data, &mut counts);
    }
});
