//! Property tests on the masking engine: planted PHI never survives, output
//! stays valid JSON, and Hash pseudonyms are stable per key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::{Map, Value};
use streamgate_crds::{Detector, FieldMask, MaskFormat, MaskStrategy, MaskingRuleSpec};
use streamgate_proxy::masking::strategy::pseudonym;
use streamgate_proxy::masking::{HashKey, MaskCounts, MaskPlan, RulePlan};

/// Planted PHI, all of which a detector recognises.
const PLANTED: [&str; 6] = [
    "838-39-8865",
    "james.silva0@example.org",
    "(351) 555-0121",
    "4708073826424685",
    "1702309729",
    "MRN-35976135",
];

/// Compiled once per strategy (regex compilation dominates otherwise).
fn plan(strategy: MaskStrategy) -> &'static MaskPlan {
    static PLANS: OnceLock<Vec<(MaskStrategy, MaskPlan)>> = OnceLock::new();
    let plans = PLANS.get_or_init(|| {
        [
            MaskStrategy::Redact,
            MaskStrategy::Partial,
            MaskStrategy::Hash,
            MaskStrategy::Remove,
        ]
        .into_iter()
        .map(|s| (s, compile(s)))
        .collect()
    });
    &plans.iter().find(|(s, _)| *s == strategy).unwrap().1
}

fn compile(strategy: MaskStrategy) -> MaskPlan {
    let spec = MaskingRuleSpec {
        topics: vec!["t".into()],
        format: MaskFormat::Json,
        targets: vec![streamgate_crds::MaskTarget::Value],
        fields: vec![
            FieldMask {
                path: "$.secret".into(),
                strategy,
                keep_last: Some(2),
            },
            FieldMask {
                path: "$..hidden".into(),
                strategy,
                keep_last: Some(2),
            },
            FieldMask {
                path: "$.list[*].x".into(),
                strategy,
                keep_last: Some(2),
            },
        ],
        detectors: vec![
            Detector::SSN,
            Detector::Email,
            Detector::Phone,
            Detector::CreditCard,
            Detector::NPI,
            Detector::MRN,
        ],
        mrn_pattern: Some(r"MRN-\d{8}".into()),
        hash_key_secret_ref: None,
        patient_fields: vec![],
        patient_key_secret_ref: None,
        exempt_subjects: vec![],
        apply_to: vec![],
    };
    MaskPlan::single(RulePlan::compile("p", &spec, HashKey::new(b"prop-key".to_vec())).unwrap())
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z0-9 .,\"\\\\/\u{e9}\u{1F600}\n-]{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A secret value: a bare PHI string, free text around one, or a container holding one.
fn arb_secret() -> impl Strategy<Value = Value> {
    (0..PLANTED.len(), "[a-z ]{0,8}", 0..3usize).prop_map(|(i, pad, shape)| {
        let s = PLANTED[i].to_string();
        match shape {
            0 => Value::String(s),
            1 => Value::String(format!("{pad} {s} {pad}")),
            _ => serde_json::json!({"deep": [s]}),
        }
    })
}

/// Plants a secret at a masked path or, inside free text, at an arbitrary one.
fn plant(mut doc: Value, secret: Value, where_: usize, free: String) -> Value {
    let obj = match &mut doc {
        Value::Object(m) => m,
        _ => {
            doc = Value::Object(Map::new());
            doc.as_object_mut().unwrap()
        }
    };
    match where_ {
        0 => {
            obj.insert("secret".into(), secret);
        }
        1 => {
            obj.insert(
                "nested".into(),
                serde_json::json!({"a": {"hidden": secret}}),
            );
        }
        2 => {
            obj.insert(
                "list".into(),
                serde_json::json!([{"x": secret, "y": 1}, {"x": null}]),
            );
        }
        _ => {
            obj.insert("free".into(), Value::String(free));
        }
    }
    doc
}

fn strategy() -> impl Strategy<Value = MaskStrategy> {
    prop_oneof![
        Just(MaskStrategy::Redact),
        Just(MaskStrategy::Partial),
        Just(MaskStrategy::Hash),
        Just(MaskStrategy::Remove)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn planted_phi_never_survives(
        doc in arb_json(),
        secret in arb_secret(),
        where_ in 0..4usize,
        free_i in 0..PLANTED.len(),
        pre in "[a-z]{0,6}",
        strat in strategy(),
        pretty in any::<bool>(),
    ) {
        let free = format!("{pre} {} end", PLANTED[free_i]);
        let doc = plant(doc, secret, where_, free);
        let text = if pretty { serde_json::to_string_pretty(&doc).unwrap() } else { doc.to_string() };
        let mut counts = MaskCounts::default();
        let out = plan(strat).mask_value(text.as_bytes(), &mut counts).unwrap_or_else(|| text.clone().into_bytes());
        let out = String::from_utf8(out).unwrap();
        let parsed: Value = serde_json::from_str(&out).map_err(|e| TestCaseError::fail(format!("{e}: {out}")))?;
        for p in PLANTED {
            prop_assert!(!out.contains(p), "{p} leaked: {out}");
        }
        // Masking is idempotent on its own output's structure: still valid, nothing left.
        let again = plan(strat).mask_value(out.as_bytes(), &mut counts);
        if let Some(again) = again {
            serde_json::from_slice::<Value>(&again).unwrap();
        }
        prop_assert_eq!(counts.unparseable, 0);
        let _ = parsed;
    }

    #[test]
    fn planted_phi_in_other_scripts_digits_never_survives(
        i in 0..PLANTED.len(),
        script in 0..4usize,
        pre in "[a-zé ü]{0,6}",
        post in "[a-zà ß]{0,6}",
    ) {
        // Full-width (with full-width hyphens and parentheses), Arabic-Indic,
        // Devanagari digits; or ASCII digits in accented text.
        let zero = [0xFF10u32, 0x0660, 0x0966, 0x30][script];
        let planted: String = PLANTED[i]
            .chars()
            .map(|c| match c {
                '0'..='9' => char::from_u32(zero + (c as u32 - 0x30)).unwrap(),
                '-' if script == 0 => '－',
                '(' if script == 0 => '（',
                ')' if script == 0 => '）',
                c => c,
            })
            .collect();
        let text = serde_json::json!({"free": format!("{pre} {planted} {post}")}).to_string();
        let mut counts = MaskCounts::default();
        let out = plan(MaskStrategy::Redact).mask_value(text.as_bytes(), &mut counts);
        let out = String::from_utf8(out.unwrap_or_default()).unwrap();
        prop_assert!(!out.is_empty(), "not masked: {text}");
        prop_assert!(!out.contains(&planted), "{planted} leaked: {out}");
        serde_json::from_str::<Value>(&out).unwrap();
    }

    #[test]
    fn documents_without_phi_come_back_byte_identical(doc in arb_json(), pretty in any::<bool>()) {
        let text = if pretty { serde_json::to_string_pretty(&doc).unwrap() } else { doc.to_string() };
        prop_assume!(!text.contains("secret") && !text.contains("hidden") && !text.contains("list"));
        let mut counts = MaskCounts::default();
        let out = plan(MaskStrategy::Redact).mask_value(text.as_bytes(), &mut counts);
        prop_assert!(out.is_none(), "changed: {:?}", out.map(String::from_utf8));
    }

    #[test]
    fn arbitrary_bytes_never_pass_unless_valid_json(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut counts = MaskCounts::default();
        let out = plan(MaskStrategy::Redact).mask_value(&bytes, &mut counts);
        let valid = serde_json::from_slice::<Value>(&bytes).is_ok();
        if valid {
            if let Some(out) = out { serde_json::from_slice::<Value>(&out).unwrap(); }
        } else {
            prop_assert_eq!(out.as_deref(), Some(br#"{"streamgate":"unparseable"}"#.as_slice()));
            prop_assert_eq!(counts.unparseable, 1);
        }
    }

    #[test]
    fn hash_is_stable_per_key_and_differs_across_keys(v in ".{1,40}", k1 in prop::collection::vec(any::<u8>(), 1..40), k2 in prop::collection::vec(any::<u8>(), 1..40)) {
        let a = HashKey::new(k1.clone()).unwrap();
        let b = HashKey::new(k2.clone()).unwrap();
        prop_assert_eq!(pseudonym(&a, v.as_bytes()), pseudonym(&HashKey::new(k1.clone()).unwrap(), v.as_bytes()));
        if k1 != k2 {
            prop_assert_ne!(pseudonym(&a, v.as_bytes()), pseudonym(&b, v.as_bytes()));
        }
    }
}
