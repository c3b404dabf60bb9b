//! Every record of the synthetic PHI fixtures, masked with the example
//! MaskingRules, keeps none of the planted PHI strings (phi-values.json),
//! stays valid JSON, and keeps its non-PHI fields.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use bytes::Bytes;
use serde_json::Value;
use streamgate_crds::matching::Principal;
use streamgate_crds::{ApplyTo, MaskingRule, MaskingRuleSpec, SecretKeyRef, SubjectKind};
use streamgate_proxy::masking::codec::Codec;
use streamgate_proxy::masking::{HashKey, KeyError, MaskCounts, MaskingSet, mask_record_set};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn data_dir() -> PathBuf {
    repo().join("examples/data")
}

fn rules() -> Vec<(String, MaskingRuleSpec)> {
    let text = std::fs::read_to_string(repo().join("examples/maskingrule.yaml")).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let r: MaskingRule = serde::Deserialize::deserialize(doc).unwrap();
            (r.metadata.name.clone().unwrap(), r.spec)
        })
        .collect()
}

fn key(_: &SecretKeyRef) -> Result<HashKey, KeyError> {
    Ok(HashKey::new(b"fixture-key".to_vec()).unwrap())
}

/// The one issuer the fixtures' policies trust.
const ISSUER: &str = "https://idp.example.com";

fn reader() -> Principal {
    Principal {
        kind: SubjectKind::User,
        name: "billing-app".into(),
        namespace: None,
        groups: vec!["billing-analysts".into()],
        issuer: Some(ISSUER.into()),
    }
}

fn planted(file: &str) -> Vec<String> {
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir().join("phi-values.json")).unwrap())
            .unwrap();
    all[file]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
        })
        .collect()
}

fn lines(file: &str) -> Vec<String> {
    std::fs::read_to_string(data_dir().join(file))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn check(topic: &str, file: &str, must_keep: &[&str]) {
    let (set, errors) = MaskingSet::compile("clinical", &rules(), key);
    let set = set.with_exempt_issuer(Some(ISSUER.into()));
    assert!(errors.is_empty(), "{errors:?}");
    let plan = set
        .plan_for(topic, &reader(), ApplyTo::Fetch)
        .expect("topic is masked");
    let phi = planted(file);
    let mut counts = MaskCounts::default();
    let mut masked = Vec::new();
    for line in lines(file) {
        let out = plan
            .mask_value(line.as_bytes(), &mut counts)
            .expect("every fixture record holds PHI");
        let out = String::from_utf8(out).unwrap();
        let before: Value = serde_json::from_str(&line).unwrap();
        let after: Value = serde_json::from_str(&out).expect("masked record stays valid JSON");
        for p in must_keep {
            assert_eq!(
                before.pointer(p),
                after.pointer(p),
                "non-PHI field {p} changed"
            );
        }
        masked.push(out);
    }
    let leaks = leak_finder(&phi);
    let all = masked.join("\n");
    assert_eq!(
        leaks.find(all.as_bytes()).map(|m| m.as_bytes().to_vec()),
        None,
        "{file}: planted PHI leaked"
    );
    assert_eq!(counts.unparseable, 0);
    assert_eq!(counts.masked_records, lines(file).len() as u64);

    // The same through record batches in every codec.
    for codec in [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ] {
        let owned = lines(file);
        let values: Vec<&str> = lines_ref(&owned);
        let batch = Bytes::from(batch_of(codec, &values));
        let (out, c) = mask_record_set(&plan, &batch).unwrap();
        assert_eq!(c.masked_records, values.len() as u64, "{codec:?}");
        let plain = codec_plain(codec, &out);
        assert_eq!(
            leaks.find(&plain).map(|m| m.as_bytes().to_vec()),
            None,
            "{file} {codec:?}: planted PHI leaked"
        );
    }
}

/// One automaton for all planted strings (7000 separate substring scans
/// over the whole output take minutes in a debug build).
fn leak_finder(phi: &[String]) -> regex::bytes::Regex {
    let alternation = phi
        .iter()
        .map(|v| regex::escape(v))
        .collect::<Vec<_>>()
        .join("|");
    let re = regex::bytes::RegexBuilder::new(&alternation)
        .size_limit(1 << 28)
        .build()
        .unwrap();
    // Self-check: the finder does find a planted value.
    assert!(re.is_match(phi[0].as_bytes()));
    re
}

fn lines_ref(l: &[String]) -> Vec<&str> {
    l.iter().map(String::as_str).collect()
}

fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn batch_of(codec: Codec, values: &[&str]) -> Vec<u8> {
    let mut recs = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let mut body = vec![0u8];
        varint(&mut body, 0);
        varint(&mut body, i as i64);
        varint(&mut body, -1);
        varint(&mut body, v.len() as i64);
        body.extend_from_slice(v.as_bytes());
        varint(&mut body, 0);
        varint(&mut recs, body.len() as i64);
        recs.extend_from_slice(&body);
    }
    let section = codec.compress(&recs).unwrap();
    let attrs: i16 = match codec {
        Codec::None => 0,
        Codec::Gzip => 1,
        Codec::Snappy => 2,
        Codec::Lz4 => 3,
        Codec::Zstd => 4,
    };
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&attrs.to_be_bytes());
    b.extend_from_slice(&(values.len() as i32 - 1).to_be_bytes());
    b.extend_from_slice(&[0u8; 16]);
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&(values.len() as i32).to_be_bytes());
    b.extend_from_slice(&section);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The decompressed records section of a single-batch record set.
fn codec_plain(codec: Codec, set: &[u8]) -> Vec<u8> {
    codec
        .decompress(Bytes::copy_from_slice(&set[61..]))
        .unwrap()
        .to_vec()
}

#[test]
fn patient_events_leak_no_planted_phi() {
    check(
        "patient-events",
        "patient-events.jsonl",
        &[
            "/eventId",
            "/eventType",
            "/timestamp",
            "/patient/address/city",
            "/encounter/facility",
            "/encounter/diagnoses/0/code",
        ],
    );
}

#[test]
fn claims_leak_no_planted_phi() {
    check(
        "claims",
        "claims.jsonl",
        &["/claimId", "/amountCents", "/diagnosisCodes"],
    );
}

#[test]
fn exempt_readers_get_no_plan() {
    let (set, _) = MaskingSet::compile("clinical", &rules(), key);
    let set = set.with_exempt_issuer(Some(ISSUER.into()));
    let clinician = Principal {
        kind: SubjectKind::User,
        name: "dr".into(),
        namespace: None,
        groups: vec!["treating-clinicians".into()],
        issuer: Some(ISSUER.into()),
    };
    assert!(
        set.plan_for("patient-events", &clinician, ApplyTo::Fetch)
            .is_none()
    );
    // claims-phi has no exemption.
    assert!(set.plan_for("claims", &clinician, ApplyTo::Fetch).is_some());
}

#[test]
fn hashed_mrn_joins_across_topics() {
    let (set, _) = MaskingSet::compile("clinical", &rules(), key);
    let set = set.with_exempt_issuer(Some(ISSUER.into()));
    let mut c = MaskCounts::default();
    let ev = set
        .plan_for("patient-events", &reader(), ApplyTo::Fetch)
        .unwrap();
    let cl = set.plan_for("claims", &reader(), ApplyTo::Fetch).unwrap();
    let e: Value = serde_json::from_slice(
        &ev.mask_value(lines("patient-events.jsonl")[0].as_bytes(), &mut c)
            .unwrap(),
    )
    .unwrap();
    let k: Value = serde_json::from_slice(
        &cl.mask_value(lines("claims.jsonl")[0].as_bytes(), &mut c)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(e["patient"]["mrn"], k["patientMrn"]);
    assert!(e["patient"]["mrn"].as_str().unwrap().starts_with("h:"));
}
