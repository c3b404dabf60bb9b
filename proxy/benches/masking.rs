//! Masking engine micro-benchmark: 1 KiB JSON records with three masked
//! fields, the engine alone and full record-batch rewrites per codec.
//! Throughput is reported in uncompressed record-value bytes (MB/s, one core).
//!
//! `cargo bench -p streamgate-proxy --bench masking -- --quick`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use streamgate_crds::{Detector, FieldMask, MaskFormat, MaskStrategy, MaskingRuleSpec};
use streamgate_proxy::masking::{HashKey, MaskCounts, MaskPlan, RulePlan, mask_record_set};

const RECORDS_PER_BATCH: usize = 100;

/// A ~1 KiB patient event; `i` varies the values so compression is realistic.
fn record(i: usize) -> String {
    let mut r = format!(
        concat!(
            r#"{{"eventId":"evt-{i:06}","eventType":"lab-result","timestamp":"2026-11-{d:02}T08:21:00Z","#,
            r#""patient":{{"ssn":"{a:03}-{g:02}-{s:04}","name":"Patient Number {i}","dateOfBirth":"19{y:02}-0{m}-1{m}","#,
            r#""address":{{"city":"Austin","state":"TX"}}}},"encounter":{{"facility":"Northgate Medical Center","#,
            r#""diagnoses":[{{"code":"J45.909","display":"Unspecified asthma, uncomplicated"}}]}},"results":["#
        ),
        i = i,
        d = i % 28 + 1,
        a = 100 + i % 700,
        g = 10 + i % 89,
        s = 1000 + i % 8999,
        y = i % 99,
        m = i % 9 + 1,
    );
    let mut k = 0;
    while r.len() < 1000 {
        r.push_str(&format!(
            r#"{{"test":"HBA1C-{k}","value":{}.{},"unit":"%","flag":"N"}},"#,
            5 + (i + k) % 4,
            (i * 7 + k) % 10
        ));
        k += 1;
    }
    r.pop();
    r.push_str("]}");
    r
}

fn spec(detectors: Vec<Detector>) -> MaskingRuleSpec {
    MaskingRuleSpec {
        topics: vec!["patient-*".into()],
        format: MaskFormat::Json,
        targets: vec![streamgate_crds::MaskTarget::Value],
        fields: vec![
            FieldMask {
                path: "$.patient.ssn".into(),
                strategy: MaskStrategy::Partial,
                keep_last: Some(4),
            },
            FieldMask {
                path: "$.patient.name".into(),
                strategy: MaskStrategy::Hash,
                keep_last: None,
            },
            FieldMask {
                path: "$..dateOfBirth".into(),
                strategy: MaskStrategy::Redact,
                keep_last: None,
            },
        ],
        detectors,
        mrn_pattern: None,
        hash_key_secret_ref: None,
        patient_fields: vec![],
        patient_key_secret_ref: None,
        exempt_subjects: vec![],
        apply_to: vec![],
    }
}

fn plan(detectors: Vec<Detector>) -> MaskPlan {
    MaskPlan::single(
        RulePlan::compile(
            "bench",
            &spec(detectors),
            HashKey::new(b"bench-key".to_vec()),
        )
        .unwrap(),
    )
}

fn batch(compression: Compression, values: &[String]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            sequence: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            timestamp: 1_764_220_000_000 + i as i64,
            key: None,
            value: Some(Bytes::from(v.clone())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

fn bench(c: &mut Criterion) {
    let values: Vec<String> = (0..RECORDS_PER_BATCH).map(record).collect();
    let total: usize = values.iter().map(String::len).sum();

    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Bytes(total as u64));
    for (name, detectors) in [
        ("json_3_fields", vec![]),
        (
            "json_3_fields_4_detectors",
            vec![
                Detector::SSN,
                Detector::Email,
                Detector::Phone,
                Detector::CreditCard,
            ],
        ),
    ] {
        let p = plan(detectors);
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut counts = MaskCounts::default();
                for v in &values {
                    black_box(p.mask_value(black_box(v.as_bytes()), &mut counts));
                }
                counts
            })
        });
    }
    // The serde_json::Value round trip the streaming rewriter replaced, for scale.
    g.bench_function("serde_json_value_round_trip", |b| {
        b.iter(|| {
            for v in &values {
                let mut doc: serde_json::Value =
                    serde_json::from_slice(black_box(v.as_bytes())).unwrap();
                doc["patient"]["ssn"] = "***-**-0000".into();
                black_box(serde_json::to_vec(&doc).unwrap());
            }
        })
    });
    g.finish();

    let p = plan(vec![
        Detector::SSN,
        Detector::Email,
        Detector::Phone,
        Detector::CreditCard,
    ]);
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Bytes(total as u64));
    for (name, compression) in [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        let records = batch(compression, &values);
        g.bench_function(name, |b| {
            b.iter(|| mask_record_set(&p, black_box(&records)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
