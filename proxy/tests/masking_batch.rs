//! Record-batch rewriting: header fields survive byte for byte for every
//! codec, only values change, and nothing unmasked ever gets through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use std::sync::Arc;
use streamgate_crds::{Detector, FieldMask, MaskFormat, MaskStrategy, MaskTarget, MaskingRuleSpec};
use streamgate_proxy::masking::batch::estimated_work;
use streamgate_proxy::masking::codec::Codec;
use streamgate_proxy::masking::{
    DEFAULT_MAX_BATCH_BYTES, HashKey, MaskError, MaskPlan, RulePlan, Trailing,
    mask_produce_records, mask_record_set, mask_records,
};

const CODECS: [Codec; 5] = [
    Codec::None,
    Codec::Gzip,
    Codec::Snappy,
    Codec::Lz4,
    Codec::Zstd,
];
const LOG_APPEND_TIME: i16 = 0x08;
const TRANSACTIONAL: i16 = 0x10;
const CONTROL: i16 = 0x20;

fn codec_bits(c: Codec) -> i16 {
    match c {
        Codec::None => 0,
        Codec::Gzip => 1,
        Codec::Snappy => 2,
        Codec::Lz4 => 3,
        Codec::Zstd => 4,
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Rec {
    ts_delta: i64,
    offset_delta: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn rec(offset_delta: i64, value: Option<&str>) -> Rec {
    Rec {
        ts_delta: offset_delta * 7,
        offset_delta,
        key: Some(format!("key-{offset_delta}").into_bytes()),
        value: value.map(|v| v.as_bytes().to_vec()),
        headers: vec![
            (b"trace".to_vec(), Some(b"a".to_vec())),
            (b"trace".to_vec(), Some(b"b".to_vec())),
            (b"n".to_vec(), None),
        ],
    }
}

// An independent (test-side) varint, not the crate's.
fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

fn unvarint(b: &[u8], p: &mut usize) -> i64 {
    let mut z = 0u64;
    let mut shift = 0;
    loop {
        let c = b[*p];
        *p += 1;
        z |= u64::from(c & 0x7f) << shift;
        if c & 0x80 == 0 {
            return ((z >> 1) as i64) ^ -((z & 1) as i64);
        }
        shift += 7;
    }
}

fn bytes_field(out: &mut Vec<u8>, b: &Option<Vec<u8>>) {
    match b {
        None => varint(out, -1),
        Some(b) => {
            varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

fn encode_records(recs: &[Rec]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in recs {
        let mut body = vec![0u8];
        varint(&mut body, r.ts_delta);
        varint(&mut body, r.offset_delta);
        bytes_field(&mut body, &r.key);
        bytes_field(&mut body, &r.value);
        varint(&mut body, r.headers.len() as i64);
        for (k, v) in &r.headers {
            bytes_field(&mut body, &Some(k.clone()));
            bytes_field(&mut body, v);
        }
        varint(&mut out, body.len() as i64);
        out.extend_from_slice(&body);
    }
    out
}

fn decode_records(data: &[u8], count: usize) -> Vec<Rec> {
    let mut p = 0;
    let mut out = Vec::new();
    let opt = |b: &[u8], p: &mut usize| {
        let n = unvarint(b, p);
        if n < 0 {
            None
        } else {
            let v = b[*p..*p + n as usize].to_vec();
            *p += n as usize;
            Some(v)
        }
    };
    for _ in 0..count {
        let len = unvarint(data, &mut p) as usize;
        let end = p + len;
        p += 1;
        let ts_delta = unvarint(data, &mut p);
        let offset_delta = unvarint(data, &mut p);
        let key = opt(data, &mut p);
        let value = opt(data, &mut p);
        let n = unvarint(data, &mut p);
        let headers = (0..n)
            .map(|_| (opt(data, &mut p).unwrap(), opt(data, &mut p)))
            .collect();
        assert_eq!(p, end);
        out.push(Rec {
            ts_delta,
            offset_delta,
            key,
            value,
            headers,
        });
    }
    assert_eq!(p, data.len());
    out
}

#[derive(Clone, Debug)]
struct Header {
    base_offset: i64,
    leader_epoch: i32,
    attributes: i16,
    last_offset_delta: i32,
    base_ts: i64,
    max_ts: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

fn header(base_offset: i64, attributes: i16, last_offset_delta: i32) -> Header {
    Header {
        base_offset,
        leader_epoch: 7,
        attributes,
        last_offset_delta,
        base_ts: 1_764_220_000_000,
        max_ts: 1_764_220_099_999,
        producer_id: 4242,
        producer_epoch: 3,
        base_sequence: 17,
    }
}

fn build_batch(h: &Header, recs: &[Rec]) -> Vec<u8> {
    let codec = Codec::from_attributes(h.attributes).unwrap();
    let section = codec.compress(&encode_records(recs)).unwrap();
    let mut b = Vec::new();
    b.extend_from_slice(&h.base_offset.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // length, filled below
    b.extend_from_slice(&h.leader_epoch.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
    b.extend_from_slice(&h.attributes.to_be_bytes());
    b.extend_from_slice(&h.last_offset_delta.to_be_bytes());
    b.extend_from_slice(&h.base_ts.to_be_bytes());
    b.extend_from_slice(&h.max_ts.to_be_bytes());
    b.extend_from_slice(&h.producer_id.to_be_bytes());
    b.extend_from_slice(&h.producer_epoch.to_be_bytes());
    b.extend_from_slice(&h.base_sequence.to_be_bytes());
    b.extend_from_slice(&(recs.len() as i32).to_be_bytes());
    b.extend_from_slice(&section);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Splits a record set into (header bytes without length/crc, records).
fn split_batches(set: &[u8]) -> Vec<(Vec<u8>, Vec<Rec>)> {
    let mut p = 0;
    let mut out = Vec::new();
    while p < set.len() {
        let len = i32::from_be_bytes(set[p + 8..p + 12].try_into().unwrap()) as usize;
        let b = &set[p..p + 12 + len];
        assert_eq!(
            u32::from_be_bytes(b[17..21].try_into().unwrap()),
            crc32c::crc32c(&b[21..]),
            "CRC"
        );
        let mut fixed = b[..8].to_vec();
        fixed.extend_from_slice(&b[12..17]);
        fixed.extend_from_slice(&b[21..61]);
        let attributes = i16::from_be_bytes([b[21], b[22]]);
        let codec = Codec::from_attributes(attributes).unwrap();
        let count = i32::from_be_bytes(b[57..61].try_into().unwrap()) as usize;
        let data = codec.decompress(Bytes::copy_from_slice(&b[61..])).unwrap();
        out.push((fixed, decode_records(&data, count)));
        p += 12 + len;
    }
    out
}

fn plan() -> MaskPlan {
    MaskPlan::single(json_rule("r", vec![MaskTarget::Value]))
}

/// The Json rule of [`plan`] (`$.ssn` Partial, `$.name` Hash, Email and SSN
/// detectors), masking `targets`.
fn json_rule(name: &str, targets: Vec<MaskTarget>) -> RulePlan {
    let spec = MaskingRuleSpec {
        topics: vec!["patient-*".into()],
        format: MaskFormat::Json,
        targets,
        fields: vec![
            FieldMask {
                path: "$.ssn".into(),
                strategy: MaskStrategy::Partial,
                keep_last: Some(4),
            },
            FieldMask {
                path: "$.name".into(),
                strategy: MaskStrategy::Hash,
                keep_last: None,
            },
        ],
        detectors: vec![Detector::Email, Detector::SSN],
        mrn_pattern: None,
        hash_key_secret_ref: None,
        patient_fields: vec![],
        patient_key_secret_ref: None,
        exempt_subjects: vec![],
        apply_to: vec![],
    };
    RulePlan::compile(name, &spec, HashKey::new(b"k".to_vec())).unwrap()
}

/// A Text rule with the SSN and Email detectors, masking `targets`.
fn text_rule(name: &str, targets: Vec<MaskTarget>) -> RulePlan {
    let spec = MaskingRuleSpec {
        topics: vec!["patient-*".into()],
        format: MaskFormat::Text,
        targets,
        fields: vec![],
        detectors: vec![Detector::Email, Detector::SSN],
        mrn_pattern: None,
        hash_key_secret_ref: None,
        patient_fields: vec![],
        patient_key_secret_ref: None,
        exempt_subjects: vec![],
        apply_to: vec![],
    };
    RulePlan::compile(name, &spec, None).unwrap()
}

const PHI: &str =
    r#"{"ssn":"838-39-8865","name":"James Silva","note":"mail james.silva0@example.org","n":1}"#;
const CLEAN: &str = r#"{"n":2,"note":"nothing to hide"}"#;

fn assert_no_phi(b: &[u8]) {
    let s = String::from_utf8_lossy(b);
    for v in ["838-39-8865", "James Silva", "james.silva0@example.org"] {
        assert!(!s.contains(v), "{v} leaked");
    }
}

#[test]
fn headers_preserved_and_values_masked_for_every_codec() {
    for codec in CODECS {
        for extra in [0, LOG_APPEND_TIME, TRANSACTIONAL | LOG_APPEND_TIME] {
            let attrs = codec_bits(codec) | extra;
            // Offsets with gaps (a compacted topic): deltas 0, 3, 9; lastOffsetDelta 12.
            let recs = vec![rec(0, Some(PHI)), rec(3, None), rec(9, Some(CLEAN))];
            let b1 = build_batch(&header(1000, attrs, 12), &recs);
            let b2 = build_batch(&header(1013, attrs, 0), &[rec(0, Some(PHI))]);
            let input = Bytes::from([b1.clone(), b2].concat());

            let (out, counts) = mask_record_set(&plan(), &input).unwrap();
            assert_no_phi(&out);
            assert_eq!(counts.records, 3, "{codec:?}"); // the null value is not examined
            assert_eq!(counts.masked_records, 2);
            assert_eq!(counts.fields.get("$.ssn"), Some(&2));
            assert_eq!(counts.detectors.get("[EMAIL]"), Some(&2));

            let before = split_batches(&input);
            let after = split_batches(&out);
            assert_eq!(before.len(), after.len());
            for ((h0, r0), (h1, r1)) in before.iter().zip(&after) {
                assert_eq!(h0, h1, "header fields for {codec:?}");
                assert_eq!(r0.len(), r1.len());
                for (a, b) in r0.iter().zip(r1) {
                    assert_eq!(
                        (a.ts_delta, a.offset_delta, &a.key, &a.headers),
                        (b.ts_delta, b.offset_delta, &b.key, &b.headers)
                    );
                }
            }
            let masked_value = String::from_utf8(after[0].1[0].value.clone().unwrap()).unwrap();
            assert!(
                masked_value.starts_with(r#"{"ssn":"***-**-8865","name":"h:"#),
                "{masked_value}"
            );
            assert!(
                masked_value.ends_with(r#""note":"mail [EMAIL]","n":1}"#),
                "{masked_value}"
            );
            assert_eq!(after[0].1[1].value, None, "tombstone stays null");
            assert_eq!(
                after[0].1[2].value.as_deref(),
                Some(CLEAN.as_bytes()),
                "clean value untouched"
            );

            // An independent decoder (kafka-protocol, CRC-checked) reads the same offsets.
            let mut buf = out.clone();
            let sets = RecordBatchDecoder::decode_all(&mut buf).unwrap();
            let offsets: Vec<i64> = sets
                .iter()
                .flat_map(|s| s.records.iter().map(|r| r.offset))
                .collect();
            assert_eq!(offsets, vec![1000, 1003, 1009, 1013], "{codec:?}");
            let r = &sets[0].records[0];
            assert_eq!(
                (
                    r.producer_id,
                    r.producer_epoch,
                    r.sequence,
                    r.partition_leader_epoch
                ),
                (4242, 3, 17, 7)
            );
        }
    }
}

#[test]
fn unchanged_record_sets_are_returned_as_is() {
    for codec in CODECS {
        let input = Bytes::from(build_batch(
            &header(5, codec_bits(codec), 0),
            &[rec(0, Some(CLEAN))],
        ));
        let (out, counts) = mask_record_set(&plan(), &input).unwrap();
        assert_eq!(out, input);
        assert_eq!((counts.records, counts.masked_records), (1, 0));
    }
}

#[test]
fn control_batches_pass_untouched() {
    // A control batch's record is a commit marker, whose value is not JSON.
    let mut r = rec(0, None);
    r.value = Some(vec![0, 0, 0, 0, 0, 0]);
    let input = Bytes::from(build_batch(&header(9, TRANSACTIONAL | CONTROL, 0), &[r]));
    let (out, counts) = mask_record_set(&plan(), &input).unwrap();
    assert_eq!(out, input);
    assert_eq!(counts.records, 0);
}

#[test]
fn truncated_trailing_batch_is_dropped_on_fetch_and_refused_on_produce() {
    for codec in CODECS {
        let b1 = build_batch(&header(0, codec_bits(codec), 0), &[rec(0, Some(PHI))]);
        let b2 = build_batch(&header(1, codec_bits(codec), 0), &[rec(0, Some(PHI))]);
        for cut in [1, 11, 12, 30, 61, b2.len() - 1] {
            let input = Bytes::from([b1.clone(), b2[..cut].to_vec()].concat());
            let (out, _) = mask_record_set(&plan(), &input).unwrap();
            assert_no_phi(&out);
            assert_eq!(split_batches(&out).len(), 1, "{codec:?} cut at {cut}");
            assert!(matches!(
                mask_produce_records(&plan(), &input),
                Err(MaskError::Truncated { .. })
            ));
        }
        // Even a clean cut batch is dropped rather than forwarded.
        let clean = build_batch(&header(1, codec_bits(codec), 0), &[rec(0, Some(CLEAN))]);
        let input = Bytes::from(clean[..clean.len() - 3].to_vec());
        assert!(mask_record_set(&plan(), &input).unwrap().0.is_empty());
    }
}

#[test]
fn corrupted_batches_are_errors_not_pass_through() {
    for codec in CODECS {
        let good = build_batch(&header(0, codec_bits(codec), 0), &[rec(0, Some(PHI))]);
        // A flipped bit in the records section: CRC mismatch.
        let mut bad = good.clone();
        let last = bad.len() - 2;
        bad[last] ^= 0x40;
        assert!(
            matches!(
                mask_record_set(&plan(), &Bytes::from(bad)),
                Err(MaskError::Crc { .. })
            ),
            "{codec:?}"
        );
        // A broken records section with a valid CRC: a decode error.
        let mut bad = good[..61].to_vec();
        bad.extend_from_slice(b"\x01\x02garbage");
        let len = (bad.len() - 12) as i32;
        bad[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&bad[21..]);
        bad[17..21].copy_from_slice(&crc.to_be_bytes());
        let err = mask_record_set(&plan(), &Bytes::from(bad)).unwrap_err();
        assert!(
            matches!(err, MaskError::Corrupt { .. } | MaskError::Codec { .. }),
            "{codec:?}: {err}"
        );
    }
    // Unknown codec 5.
    let mut bad = build_batch(&header(0, 0, 0), &[rec(0, Some(PHI))]);
    bad[22] |= 5;
    let crc = crc32c::crc32c(&bad[21..]);
    bad[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        mask_record_set(&plan(), &Bytes::from(bad)),
        Err(MaskError::UnknownCodec { codec: 5, .. })
    ));
}

#[test]
fn legacy_message_sets_are_refused() {
    // A magic v1 message: offset, size, crc, magic=1, attributes, timestamp, key, value.
    let mut m = Vec::new();
    m.extend_from_slice(&0i64.to_be_bytes());
    let body: Vec<u8> = [
        vec![1u8, 0],
        0i64.to_be_bytes().to_vec(),
        (-1i32).to_be_bytes().to_vec(),
        (PHI.len() as i32).to_be_bytes().to_vec(),
        PHI.as_bytes().to_vec(),
    ]
    .concat();
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(&0u32.to_be_bytes());
    m.extend_from_slice(&body);
    for trailing in [Trailing::Drop, Trailing::Reject] {
        assert!(matches!(
            mask_records(&plan(), &Bytes::from(m.clone()), trailing),
            Err(MaskError::LegacyFormat { magic: 1 })
        ));
    }
}

#[test]
fn unparseable_values_become_markers_inside_batches() {
    let input = Bytes::from(build_batch(
        &header(0, codec_bits(Codec::Zstd), 0),
        &[rec(0, Some("SSN 838-39-8865, not JSON"))],
    ));
    let (out, counts) = mask_record_set(&plan(), &input).unwrap();
    assert_no_phi(&out);
    assert_eq!(counts.unparseable, 1);
    let recs = &split_batches(&out)[0].1;
    assert_eq!(
        recs[0].value.as_deref(),
        Some(br#"{"streamgate":"unparseable"}"#.as_slice())
    );
}

#[test]
fn produce_batches_keep_idempotence_fields() {
    let h = header(0, codec_bits(Codec::Lz4), 1);
    let input = Bytes::from(build_batch(&h, &[rec(0, Some(PHI)), rec(1, Some(PHI))]));
    let (out, _) = mask_produce_records(&plan(), &input).unwrap();
    assert_no_phi(&out);
    let (h0, _) = &split_batches(&input)[0];
    let (h1, _) = &split_batches(&out)[0];
    assert_eq!(h0, h1);
    assert_eq!(
        &out[43..57],
        &input[43..57],
        "producer id, epoch and base sequence"
    );
}

/// A value that compresses to almost nothing and decompresses to `size` bytes,
/// with an SSN at its start (what must never be forwarded).
fn bomb_value(size: usize) -> String {
    let head = r#"{"ssn":"838-39-8865","pad":""#;
    let mut v = String::with_capacity(size + 2);
    v.push_str(head);
    v.extend(std::iter::repeat_n(
        '0',
        size.saturating_sub(head.len() + 2),
    ));
    v.push_str("\"}");
    v
}

#[test]
fn a_compression_bomb_is_refused_at_the_default_budget_for_every_codec() {
    let size = DEFAULT_MAX_BATCH_BYTES + (1 << 20);
    let value = bomb_value(size);
    for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
        let batch = build_batch(&header(0, codec_bits(codec), 0), &[rec(0, Some(&value))]);
        assert!(batch.len() < size / 10, "{codec:?}: {} bytes", batch.len());
        let batch = Bytes::from(batch);
        for result in [
            mask_record_set(&plan(), &batch),
            mask_produce_records(&plan(), &batch),
        ] {
            match result {
                Err(MaskError::TooLarge { limit, .. }) => {
                    assert_eq!(limit, DEFAULT_MAX_BATCH_BYTES, "{codec:?}")
                }
                other => panic!("{codec:?}: {:?}", other.map(|(b, _)| b.len())),
            }
        }
    }
}

#[test]
fn the_budget_is_the_plans_and_holds_for_uncompressed_batches_too() {
    let value = bomb_value(100 << 10);
    for codec in CODECS {
        let batch = Bytes::from(build_batch(
            &header(0, codec_bits(codec), 0),
            &[rec(0, Some(&value))],
        ));
        let small = plan().with_max_batch_bytes(64 << 10);
        let err = mask_record_set(&small, &batch).unwrap_err();
        assert!(
            matches!(err, MaskError::TooLarge { limit, .. } if limit == 64 << 10),
            "{codec:?}: {err}"
        );
        assert!(
            err.to_string().contains("--masking-max-batch-bytes"),
            "{err}"
        );
        // Within a larger budget the same batch is masked.
        let (out, counts) = mask_record_set(&plan().with_max_batch_bytes(1 << 20), &batch).unwrap();
        assert_no_phi(&out);
        assert_eq!(counts.masked_records, 1, "{codec:?}");
    }
}

#[test]
fn work_is_estimated_from_the_headers_within_the_budget() {
    let value = bomb_value(100 << 10);
    let plain = build_batch(&header(0, 0, 0), &[rec(0, Some(&value))]);
    assert_eq!(estimated_work(&plain, usize::MAX), plain.len());
    let zstd = build_batch(
        &header(0, codec_bits(Codec::Zstd), 0),
        &[rec(0, Some(&value))],
    );
    assert!(estimated_work(&zstd, usize::MAX) > zstd.len());
    // Capped at the budget per batch: no batch is worked past it.
    let two = [plain.clone(), plain.clone()].concat();
    assert_eq!(estimated_work(&two, 1000), 2000);
    assert_eq!(estimated_work(&[], 1000), 0);
    assert_eq!(
        estimated_work(&plain[..30], 1000),
        0,
        "shorter than a header"
    );
}

/// A record with PHI in its key and header values (a null header too).
fn rec_with_phi_around(offset_delta: i64, value: Option<&str>) -> Rec {
    Rec {
        key: Some(b"patient 838-39-8865".to_vec()),
        headers: vec![
            (
                b"contact".to_vec(),
                Some(b"mail james.silva0@example.org".to_vec()),
            ),
            (b"trace".to_vec(), Some(b"abc".to_vec())),
            (b"838-39-8865".to_vec(), None),
        ],
        ..rec(offset_delta, value)
    }
}

#[test]
fn keys_and_header_values_are_masked_when_targeted() {
    // A Json rule for values, a Text rule for keys and headers.
    let plan = MaskPlan::new(vec![
        Arc::new(json_rule("a-values", vec![MaskTarget::Value])),
        Arc::new(text_rule(
            "b-around",
            vec![MaskTarget::Key, MaskTarget::Headers],
        )),
    ]);
    for codec in CODECS {
        let recs = [
            rec_with_phi_around(0, Some(PHI)),
            rec_with_phi_around(1, None), // a tombstone: its key still counts
        ];
        let input = Bytes::from(build_batch(&header(0, codec_bits(codec), 1), &recs));
        let (out, counts) = mask_record_set(&plan, &input).unwrap();
        let after = &split_batches(&out)[0].1;
        for (i, r) in after.iter().enumerate() {
            assert_eq!(
                r.key.as_deref(),
                Some(b"patient [SSN]".as_slice()),
                "{codec:?}"
            );
            assert_eq!(
                r.headers,
                vec![
                    (b"contact".to_vec(), Some(b"mail [EMAIL]".to_vec())),
                    (b"trace".to_vec(), Some(b"abc".to_vec())),
                    // Header names are names, not data: kept.
                    (b"838-39-8865".to_vec(), None),
                ],
                "{codec:?} record {i}"
            );
            assert_eq!(
                (r.ts_delta, r.offset_delta),
                (recs[i].ts_delta, recs[i].offset_delta)
            );
        }
        assert_eq!(after[1].value, None, "a tombstone stays one");
        let value = String::from_utf8(after[0].value.clone().unwrap()).unwrap();
        assert!(value.starts_with(r#"{"ssn":"***-**-8865""#), "{value}");
        assert_eq!((counts.records, counts.masked_records), (2, 2), "{codec:?}");
        assert_eq!(counts.detectors.get("[SSN]"), Some(&2));
        assert_eq!(counts.detectors.get("[EMAIL]"), Some(&3));
    }
}

#[test]
fn keys_and_headers_are_untouched_by_default() {
    for codec in CODECS {
        let recs = [
            rec_with_phi_around(0, Some(CLEAN)),
            rec_with_phi_around(1, Some(PHI)),
        ];
        let input = Bytes::from(build_batch(&header(0, codec_bits(codec), 1), &recs));
        let (out, _) = mask_record_set(&plan(), &input).unwrap();
        let after = &split_batches(&out)[0].1;
        for (a, b) in recs.iter().zip(after) {
            assert_eq!((&a.key, &a.headers), (&b.key, &b.headers), "{codec:?}");
        }
    }
}

#[test]
fn json_keys_take_field_masks_and_other_keys_become_markers() {
    let plan = MaskPlan::single(json_rule("r", vec![MaskTarget::Key]));
    let keyed = |key: &str| Rec {
        key: Some(key.as_bytes().to_vec()),
        ..rec(0, Some(PHI))
    };
    let input = Bytes::from(build_batch(
        &header(0, codec_bits(Codec::Gzip), 1),
        &[
            keyed(r#"{"ssn":"838-39-8865","id":7}"#),
            keyed("838-39-8865"),
        ],
    ));
    let (out, counts) = mask_record_set(&plan, &input).unwrap();
    let after = &split_batches(&out)[0].1;
    assert_eq!(
        after[0].key.as_deref(),
        Some(br#"{"ssn":"***-**-8865","id":7}"#.as_slice())
    );
    assert_eq!(
        after[1].key.as_deref(),
        Some(br#"{"streamgate":"unparseable"}"#.as_slice())
    );
    // The rule targets keys only: values pass as they were.
    assert_eq!(after[0].value.as_deref(), Some(PHI.as_bytes()));
    assert_eq!(counts.unparseable, 1);
    assert_eq!(counts.fields.get("$.ssn"), Some(&1));
}

#[test]
fn a_blocked_rule_blocks_the_parts_it_targets() {
    let plan = MaskPlan::single(RulePlan::blocked("broken", &[MaskTarget::Key]));
    let input = Bytes::from(build_batch(
        &header(0, 0, 0),
        &[rec_with_phi_around(0, Some(PHI))],
    ));
    let (out, counts) = mask_record_set(&plan, &input).unwrap();
    let r = &split_batches(&out)[0].1[0];
    let blocked = br#"{"streamgate":"masking-rule-invalid"}"#.as_slice();
    assert_eq!(r.key.as_deref(), Some(blocked));
    assert_eq!(r.value.as_deref(), Some(blocked));
    assert_eq!(
        r.headers[0].1.as_deref(),
        Some(b"mail james.silva0@example.org".as_slice())
    );
    assert_eq!(counts.blocked, 2);
}
