//! Message-level entry points for the connection code: mask the records of
//! a decoded Fetch response or Produce request in place.
//!
//! A partition that cannot be masked is never forwarded as it was: in a
//! Fetch response its records are emptied and its error code set (legacy
//! v0/v1 message format → UNSUPPORTED_FOR_MESSAGE_FORMAT, anything else —
//! a batch over the masking budget included → CORRUPT_MESSAGE; a topic whose
//! name cannot be resolved while masking rules exist → UNKNOWN_TOPIC_ID). A
//! Produce request with such a partition must be refused as a whole (the
//! caller answers each listed partition; a batch over the budget gets
//! MESSAGE_TOO_LARGE there, on which the Java producer splits the batch and
//! tries again).
//!
//! [`fetch_work`]/[`produce_work`] estimate, from the batch headers, how much
//! masking a message will cost; above [`INLINE_MAX_WORK`] the connection
//! code runs the masking on the blocking pool, not on an async worker.
use bytes::Bytes;
use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use kafka_protocol::messages::produce_request::TopicProduceData;
use kafka_protocol::messages::{FetchResponse, ProduceRequest};
use streamgate_crds::ApplyTo;
use streamgate_crds::matching::Principal;

use std::sync::Arc;

use super::MaskingSet;
use super::batch::{MaskError, Trailing, estimated_work, mask_records_seen};
use super::patients::{PartitionPatients, PatientFields, PatientScan};
use super::plan::{MaskCounts, MaskPlan};

/// Kafka error codes used for partitions that cannot be masked.
pub const CORRUPT_MESSAGE: i16 = 2;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
pub const UNKNOWN_TOPIC_ID: i16 = 100;

/// Masking estimated (by [`fetch_work`]/[`produce_work`]) to touch more
/// bytes than this runs on the blocking pool: tens of microseconds of
/// hand-off against milliseconds that would stall every connection sharing
/// the async worker.
pub const INLINE_MAX_WORK: usize = 256 << 10;

/// The error code a Fetch partition gets when its records cannot be masked.
pub fn error_code(e: &MaskError) -> i16 {
    match e {
        MaskError::LegacyFormat { .. } => UNSUPPORTED_FOR_MESSAGE_FORMAT,
        _ => CORRUPT_MESSAGE,
    }
}

/// The error code a Produce partition gets when its records cannot be
/// masked: as for Fetch, but a batch over the budget is MESSAGE_TOO_LARGE
/// (the producer may split it and retry; CORRUPT_MESSAGE would only repeat).
pub fn produce_error_code(e: &MaskError) -> i16 {
    match e {
        MaskError::TooLarge { .. } => MESSAGE_TOO_LARGE,
        other => error_code(other),
    }
}

/// About how many bytes masking `response` for `principal` will decompress
/// and rewrite (see [`estimated_work`]); 0 when nothing is masked.
pub fn fetch_work(
    set: &MaskingSet,
    principal: &Principal,
    response: &FetchResponse,
    topic_name: impl Fn(&FetchableTopicResponse) -> Option<String>,
) -> usize {
    if !set.has_rules_for(ApplyTo::Fetch) && !set.names_patients() {
        return 0;
    }
    let limit = set.max_batch_bytes();
    response
        .responses
        .iter()
        .filter(|t| topic_name(t).is_some_and(|n| reads(set, &n, principal, ApplyTo::Fetch)))
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.as_deref())
        .fold(0usize, |sum, r| {
            sum.saturating_add(estimated_work(r, limit))
        })
}

/// [`fetch_work`] for a Produce request (`applyTo: Produce`).
pub fn produce_work(
    set: &MaskingSet,
    principal: &Principal,
    request: &ProduceRequest,
    topic_name: impl Fn(&TopicProduceData) -> Option<String>,
) -> usize {
    if !set.has_rules_for(ApplyTo::Produce) && !set.names_patients() {
        return 0;
    }
    let limit = set.max_batch_bytes();
    request
        .topic_data
        .iter()
        .filter(|t| topic_name(t).is_some_and(|n| reads(set, &n, principal, ApplyTo::Produce)))
        .flat_map(|t| &t.partition_data)
        .filter_map(|p| p.records.as_deref())
        .fold(0usize, |sum, r| {
            sum.saturating_add(estimated_work(r, limit))
        })
}

/// Are `topic`'s records read in `direction` (masked, or scanned for patients)?
fn reads(set: &MaskingSet, topic: &str, principal: &Principal, direction: ApplyTo) -> bool {
    set.plan_for(topic, principal, direction).is_some() || !set.patients_for(topic).is_empty()
}

/// What masking did to one topic (for the audit record).
#[derive(Debug, Clone, PartialEq)]
pub struct TopicMasking {
    pub topic: String,
    /// The MaskingRules applied (empty: only read for patients).
    pub rules: Vec<String>,
    pub counts: MaskCounts,
    /// Per partition with records passed on: whose data they held
    /// (`patientFields`); empty when no rule names the topic's patients.
    pub patients: Vec<PartitionPatients>,
    /// Fetch: the broker's bytes of each partition masking rewrote, so the
    /// audit record digests what the broker holds (`audit match` can fetch
    /// the range again and prove it) beside what the reader got.
    pub originals: Vec<(i32, Bytes)>,
}

/// One partition's records through the plan (if any) and the patient scan
/// (if the topic names patients), in one decompression.
fn mask_and_scan(
    plan: Option<&MaskPlan>,
    patients: &[Arc<PatientFields>],
    limit: usize,
    partition: i32,
    records: &Bytes,
    trailing: Trailing,
) -> (
    Result<(Bytes, MaskCounts), MaskError>,
    Option<PartitionPatients>,
) {
    let limit = plan.map_or(limit, MaskPlan::max_batch_bytes);
    if patients.is_empty() {
        let mut nothing = |_: Option<&[u8]>| {};
        return (
            mask_records_seen(plan, limit, records, trailing, &mut nothing),
            None,
        );
    }
    let mut scan = PatientScan::new(patients, partition);
    let result = mask_records_seen(plan, limit, records, trailing, &mut |v| scan.value(v));
    let scanned = match (&result, plan) {
        (Ok(_), _) => scan.out,
        // Unmasked records are passed on as they were: say so.
        (Err(_), None) => scan.unreadable(),
        // Masking failed: nothing of this partition is passed on.
        (Err(_), Some(_)) => return (result, None),
    };
    (result, Some(scanned))
}

/// A partition that could not be masked.
#[derive(Debug)]
pub struct PartitionFailure {
    /// The topic name, or `None` when it could not be resolved.
    pub topic: Option<String>,
    pub partition: i32,
    pub error_code: i16,
    /// Why (`None` for an unresolvable topic).
    pub error: Option<MaskError>,
}

/// The outcome of masking one message.
#[derive(Debug, Default)]
pub struct Masked {
    /// Did any record bytes change (the message must be re-encoded)?
    pub changed: bool,
    pub topics: Vec<TopicMasking>,
    pub failures: Vec<PartitionFailure>,
}

fn same_bytes(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

/// Masks every partition of `response` for `principal`. `topic_name`
/// resolves a topic's name (`topic` before Fetch v13, the topic-id map after).
pub fn mask_fetch_response(
    set: &MaskingSet,
    principal: &Principal,
    response: &mut FetchResponse,
    topic_name: impl Fn(&FetchableTopicResponse) -> Option<String>,
) -> Masked {
    let mut out = Masked::default();
    if !set.has_rules_for(ApplyTo::Fetch) && !set.names_patients() {
        return out;
    }
    for topic in &mut response.responses {
        let name = topic_name(topic);
        let Some(name) = name else {
            if !set.has_rules_for(ApplyTo::Fetch) {
                continue; // only read for patients: passed on as without them
            }
            // Cannot tell whether a rule covers it: fail closed.
            for p in &mut topic.partitions {
                if p.records.as_ref().is_some_and(|r| !r.is_empty()) {
                    p.records = Some(Bytes::new());
                    p.error_code = UNKNOWN_TOPIC_ID;
                    out.changed = true;
                    out.failures.push(PartitionFailure {
                        topic: None,
                        partition: p.partition_index,
                        error_code: UNKNOWN_TOPIC_ID,
                        error: None,
                    });
                }
            }
            continue;
        };
        let plan = set.plan_for(&name, principal, ApplyTo::Fetch);
        let patients = set.patients_for(&name);
        if plan.is_none() && patients.is_empty() {
            continue;
        }
        let mut counts = MaskCounts::default();
        let mut scanned = Vec::new();
        let mut originals = Vec::new();
        for p in &mut topic.partitions {
            let Some(records) = p.records.as_ref().filter(|r| !r.is_empty()) else {
                continue;
            };
            let (result, seen) = mask_and_scan(
                plan.as_ref(),
                &patients,
                set.max_batch_bytes(),
                p.partition_index,
                records,
                Trailing::Drop,
            );
            scanned.extend(seen);
            match result {
                Ok((masked, c)) => {
                    counts.merge(&c);
                    if !same_bytes(&masked, records) {
                        originals.push((p.partition_index, records.clone()));
                        p.records = Some(masked);
                        out.changed = true;
                    }
                }
                // Not masked, only scanned: passed on as today.
                Err(_) if plan.is_none() => {}
                Err(e) => {
                    let code = error_code(&e);
                    p.records = Some(Bytes::new());
                    p.error_code = code;
                    out.changed = true;
                    out.failures.push(PartitionFailure {
                        topic: Some(name.clone()),
                        partition: p.partition_index,
                        error_code: code,
                        error: Some(e),
                    });
                }
            }
        }
        out.topics.push(TopicMasking {
            topic: name,
            rules: plan
                .iter()
                .flat_map(|p| p.rule_names().map(str::to_string))
                .collect(),
            counts,
            originals,
            patients: scanned,
        });
    }
    out
}

/// Masks the records of `request` where a rule has `applyTo: Produce`.
/// `Err`: at least one partition cannot be masked; the request must not be
/// forwarded (answer those partitions with their error codes).
pub fn mask_produce_request(
    set: &MaskingSet,
    principal: &Principal,
    request: &mut ProduceRequest,
    topic_name: impl Fn(&TopicProduceData) -> Option<String>,
) -> Result<Masked, Vec<PartitionFailure>> {
    let mut out = Masked::default();
    if !set.has_rules_for(ApplyTo::Produce) && !set.names_patients() {
        return Ok(out);
    }
    for topic in &mut request.topic_data {
        let Some(name) = topic_name(topic) else {
            if !set.has_rules_for(ApplyTo::Produce) {
                continue; // only read for patients: passed on as without them
            }
            out.failures
                .extend(topic.partition_data.iter().map(|p| PartitionFailure {
                    topic: None,
                    partition: p.index,
                    error_code: UNKNOWN_TOPIC_ID,
                    error: None,
                }));
            continue;
        };
        let plan = set.plan_for(&name, principal, ApplyTo::Produce);
        let patients = set.patients_for(&name);
        if plan.is_none() && patients.is_empty() {
            continue;
        }
        let mut counts = MaskCounts::default();
        let mut scanned = Vec::new();
        for p in &mut topic.partition_data {
            let Some(records) = p.records.as_ref().filter(|r| !r.is_empty()) else {
                continue;
            };
            let (result, seen) = mask_and_scan(
                plan.as_ref(),
                &patients,
                set.max_batch_bytes(),
                p.index,
                records,
                Trailing::Reject,
            );
            scanned.extend(seen);
            match result {
                Ok((masked, c)) => {
                    counts.merge(&c);
                    if !same_bytes(&masked, records) {
                        p.records = Some(masked);
                        out.changed = true;
                    }
                }
                // Not masked, only scanned: the broker judges it, as today.
                Err(_) if plan.is_none() => {}
                Err(e) => out.failures.push(PartitionFailure {
                    topic: Some(name.clone()),
                    partition: p.index,
                    error_code: produce_error_code(&e),
                    error: Some(e),
                }),
            }
        }
        out.topics.push(TopicMasking {
            topic: name,
            rules: plan
                .iter()
                .flat_map(|p| p.rule_names().map(str::to_string))
                .collect(),
            counts,
            originals: Vec::new(),
            patients: scanned,
        });
    }
    if out.failures.is_empty() {
        Ok(out)
    } else {
        Err(out.failures)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::masking::{HashKey, KeyError};
    use bytes::BytesMut;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::fetch_response::PartitionData;
    use kafka_protocol::messages::produce_request::PartitionProduceData;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };
    use streamgate_crds::{
        FieldMask, MaskFormat, MaskStrategy, MaskingRuleSpec, SecretKeyRef, Subject, SubjectKind,
    };

    pub(crate) const PHI: &str = r#"{"ssn":"838-39-8865","ok":1}"#;

    pub(crate) fn set(apply_to: Vec<ApplyTo>) -> MaskingSet {
        let spec = MaskingRuleSpec {
            topics: vec!["patient-*".into()],
            format: MaskFormat::Json,
            targets: vec![streamgate_crds::MaskTarget::Value],
            fields: vec![FieldMask {
                path: "$.ssn".into(),
                strategy: MaskStrategy::Redact,
                keep_last: None,
            }],
            detectors: vec![],
            mrn_pattern: None,
            hash_key_secret_ref: None,
            patient_fields: vec![],
            patient_key_secret_ref: None,
            exempt_subjects: vec![Subject {
                kind: SubjectKind::Group,
                name: "clinicians".into(),
                namespace: None,
            }],
            apply_to,
        };
        let no_key = |_: &SecretKeyRef| -> Result<HashKey, KeyError> {
            Err(KeyError::Empty { path: "x".into() })
        };
        let (set, errors) = MaskingSet::compile("clinical", &[("r".into(), spec)], no_key);
        assert!(errors.is_empty());
        set.with_exempt_issuer(Some(ISSUER.into()))
    }

    /// The one issuer the tests' policies trust.
    pub(crate) const ISSUER: &str = "https://idp.example.com";

    pub(crate) fn user(groups: &[&str]) -> Principal {
        Principal {
            kind: SubjectKind::User,
            name: "u".into(),
            namespace: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            issuer: Some(ISSUER.into()),
        }
    }

    pub(crate) fn batch(value: &str, compression: Compression) -> Bytes {
        let r = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 9,
            producer_epoch: 1,
            sequence: 0,
            timestamp_type: TimestampType::Creation,
            offset: 42,
            timestamp: 1,
            key: None,
            value: Some(Bytes::from(value.to_string())),
            headers: Default::default(),
        };
        let mut b = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut b,
            [&r],
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        b.freeze()
    }

    pub(crate) fn values(records: &Bytes) -> Vec<String> {
        let mut b = records.clone();
        RecordBatchDecoder::decode_all(&mut b)
            .unwrap()
            .into_iter()
            .flat_map(|s| s.records)
            .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
            .collect()
    }

    fn topic(name: &str, records: Vec<Bytes>) -> FetchableTopicResponse {
        FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_string(name.into())))
            .with_partitions(
                records
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        PartitionData::default()
                            .with_partition_index(i as i32)
                            .with_records(Some(r))
                    })
                    .collect(),
            )
    }

    fn by_name(t: &FetchableTopicResponse) -> Option<String> {
        Some(t.topic.0.to_string()).filter(|s| !s.is_empty())
    }

    #[test]
    fn fetch_masks_covered_topics_only_and_fails_closed() {
        let legacy = {
            // magic byte 1 at offset 16
            let mut v = vec![0u8; 40];
            v[11] = 28;
            v[16] = 1;
            Bytes::from(v)
        };
        let clean = batch(PHI, Compression::Snappy);
        let mut resp = FetchResponse::default().with_responses(vec![
            topic(
                "patient-events",
                vec![batch(PHI, Compression::Gzip), legacy],
            ),
            topic("claims", vec![clean.clone()]),
            topic("", vec![batch(PHI, Compression::None)]),
        ]);
        let out = mask_fetch_response(&set(vec![ApplyTo::Fetch]), &user(&[]), &mut resp, by_name);
        assert!(out.changed);
        let masked = resp.responses[0].partitions[0].records.clone().unwrap();
        assert_eq!(values(&masked), vec![r#"{"ssn":"[REDACTED]","ok":1}"#]);
        assert_eq!(
            resp.responses[0].partitions[1].error_code,
            UNSUPPORTED_FOR_MESSAGE_FORMAT
        );
        assert_eq!(
            resp.responses[0].partitions[1].records.as_deref(),
            Some(&[][..])
        );
        assert!(
            same_bytes(
                resp.responses[1].partitions[0].records.as_ref().unwrap(),
                &clean
            ),
            "uncovered topic untouched"
        );
        assert_eq!(resp.responses[2].partitions[0].error_code, UNKNOWN_TOPIC_ID);
        assert_eq!(out.failures.len(), 2);
        assert_eq!(out.topics.len(), 1);
        assert_eq!(out.topics[0].counts.fields.get("$.ssn"), Some(&1));
        assert_eq!(out.topics[0].rules, vec!["r".to_string()]);
    }

    #[test]
    fn exempt_readers_get_the_broker_bytes() {
        let original = batch(PHI, Compression::Zstd);
        let mut resp = FetchResponse::default()
            .with_responses(vec![topic("patient-events", vec![original.clone()])]);
        let out = mask_fetch_response(
            &set(vec![ApplyTo::Fetch]),
            &user(&["clinicians"]),
            &mut resp,
            by_name,
        );
        assert!(!out.changed);
        assert!(same_bytes(
            resp.responses[0].partitions[0].records.as_ref().unwrap(),
            &original
        ));
    }

    #[test]
    fn produce_masks_before_the_broker_and_refuses_what_it_cannot_mask() {
        let mk = |records: Bytes| {
            ProduceRequest::default()
                .with_acks(-1)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_static_str("patient-intake")))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(records)),
                        ]),
                ])
        };
        let name = |t: &TopicProduceData| Some(t.name.0.to_string());
        let mut req = mk(batch(PHI, Compression::Lz4));
        let out =
            mask_produce_request(&set(vec![ApplyTo::Produce]), &user(&[]), &mut req, name).unwrap();
        assert!(out.changed);
        let records = req.topic_data[0].partition_data[0].records.clone().unwrap();
        assert_eq!(values(&records), vec![r#"{"ssn":"[REDACTED]","ok":1}"#]);

        // Fetch-only rules leave produce alone.
        let mut req = mk(batch(PHI, Compression::Lz4));
        assert!(
            !mask_produce_request(&set(vec![ApplyTo::Fetch]), &user(&[]), &mut req, name)
                .unwrap()
                .changed
        );

        let full = batch(PHI, Compression::None);
        let mut req = mk(full.slice(..full.len() - 1));
        let failures =
            mask_produce_request(&set(vec![ApplyTo::Produce]), &user(&[]), &mut req, name)
                .unwrap_err();
        assert_eq!(failures[0].error_code, CORRUPT_MESSAGE);
    }

    /// [`set`] whose rule also names patients at `$.mrn` (key `patient-key`).
    fn set_with_patients(apply_to: Vec<ApplyTo>) -> MaskingSet {
        let spec = MaskingRuleSpec {
            topics: vec!["patient-*".into()],
            format: MaskFormat::Json,
            targets: vec![streamgate_crds::MaskTarget::Value],
            fields: vec![FieldMask {
                path: "$.ssn".into(),
                strategy: MaskStrategy::Redact,
                keep_last: None,
            }],
            detectors: vec![],
            mrn_pattern: None,
            hash_key_secret_ref: None,
            patient_fields: vec!["$.mrn".into()],
            patient_key_secret_ref: Some(SecretKeyRef {
                name: "patient-key".into(),
                key: "hmac".into(),
            }),
            exempt_subjects: vec![Subject {
                kind: SubjectKind::Group,
                name: "clinicians".into(),
                namespace: None,
            }],
            apply_to,
        };
        let key = |_: &SecretKeyRef| Ok(HashKey::new(b"pk".to_vec()).unwrap());
        let (set, errors) = MaskingSet::compile("clinical", &[("r".into(), spec)], key);
        assert!(errors.is_empty(), "{errors:?}");
        set.with_exempt_issuer(Some(ISSUER.into()))
    }

    fn pseudonyms(ids: &[&str]) -> std::collections::BTreeSet<String> {
        let key = HashKey::new(b"pk".to_vec()).unwrap();
        ids.iter()
            .map(|i| crate::masking::patient_pseudonym(&key, i))
            .collect()
    }

    #[test]
    fn every_reader_s_records_are_read_for_patients_before_masking() {
        let phi = r#"{"mrn":"MRN-7","ssn":"838-39-8865"}"#;
        let set = set_with_patients(vec![ApplyTo::Fetch]);
        for (who, masked) in [(user(&["clinicians"]), false), (user(&[]), true)] {
            let original = batch(phi, Compression::Gzip);
            let mut resp = FetchResponse::default().with_responses(vec![
                topic(
                    "patient-events",
                    vec![original.clone(), batch("not json", Compression::None)],
                ),
                topic("other", vec![batch(phi, Compression::None)]),
            ]);
            let out = mask_fetch_response(&set, &who, &mut resp, by_name);
            assert_eq!(out.changed, masked);
            let records = resp.responses[0].partitions[0].records.as_ref().unwrap();
            assert_eq!(
                same_bytes(records, &original),
                !masked,
                "exempt: the broker's bytes"
            );
            assert_eq!(out.topics.len(), 1, "only covered topics are read");
            let got = &out.topics[0].patients;
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].patients, pseudonyms(&["MRN-7"]), "masked: {masked}");
            assert_eq!(got[0].unattributed, 0);
            assert_eq!(got[1].partition, 1);
            assert!(got[1].patients.is_empty());
            assert_eq!(got[1].unattributed, 1, "a non-JSON record is counted");
            assert_eq!(out.topics[0].rules.is_empty(), !masked);
        }
    }

    #[test]
    fn produce_records_are_read_for_patients_without_a_produce_rule() {
        let set = set_with_patients(vec![ApplyTo::Fetch]);
        let mut req = ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("patient-intake")))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(2)
                            .with_records(Some(batch(r#"{"mrn":"MRN-8"}"#, Compression::Snappy))),
                    ]),
            ]);
        let out = mask_produce_request(&set, &user(&[]), &mut req, |t| Some(t.name.0.to_string()))
            .unwrap();
        assert!(!out.changed, "nothing masked on Produce");
        assert_eq!(out.topics[0].patients[0].partition, 2);
        assert_eq!(out.topics[0].patients[0].patients, pseudonyms(&["MRN-8"]));
    }

    #[test]
    fn an_exempt_reader_s_unreadable_batch_passes_as_today_and_is_flagged() {
        let set = set_with_patients(vec![ApplyTo::Fetch]);
        let mut bad = batch(r#"{"mrn":"MRN-7"}"#, Compression::None).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff; // CRC no longer matches
        let bad = Bytes::from(bad);
        let mut resp = FetchResponse::default()
            .with_responses(vec![topic("patient-events", vec![bad.clone()])]);
        let out = mask_fetch_response(&set, &user(&["clinicians"]), &mut resp, by_name);
        assert!(!out.changed && out.failures.is_empty());
        assert!(same_bytes(
            resp.responses[0].partitions[0].records.as_ref().unwrap(),
            &bad
        ));
        assert!(out.topics[0].patients[0].unreadable);
        // A masked reader gets the partition refused, and no patients named.
        let mut resp =
            FetchResponse::default().with_responses(vec![topic("patient-events", vec![bad])]);
        let out = mask_fetch_response(&set, &user(&[]), &mut resp, by_name);
        assert_eq!(out.failures.len(), 1);
        assert!(out.topics[0].patients.is_empty());
    }

    /// A value of `size` bytes with an SSN at its start, compressing to little.
    pub(crate) fn bomb(size: usize) -> String {
        let head = r#"{"ssn":"838-39-8865","pad":""#;
        format!("{head}{}\"}}", "0".repeat(size - head.len() - 2))
    }

    #[test]
    fn a_batch_over_the_budget_is_refused_in_fetch_and_produce() {
        let set = set(vec![ApplyTo::Fetch, ApplyTo::Produce]).with_max_batch_bytes(64 << 10);
        let records = batch(&bomb(100 << 10), Compression::Zstd);
        assert!(records.len() < 4 << 10);
        let mut resp = FetchResponse::default()
            .with_responses(vec![topic("patient-events", vec![records.clone()])]);
        let out = mask_fetch_response(&set, &user(&[]), &mut resp, by_name);
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, CORRUPT_MESSAGE);
        assert_eq!(
            p.records.as_deref(),
            Some(&[][..]),
            "no records, no unmasked bytes"
        );
        assert!(out.changed);
        assert!(matches!(
            out.failures[..],
            [PartitionFailure {
                error: Some(MaskError::TooLarge { limit: 65536, .. }),
                ..
            }]
        ));

        let mut req = ProduceRequest::default().with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("patient-intake")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(3)
                        .with_records(Some(records.clone())),
                ]),
        ]);
        let failures =
            mask_produce_request(&set, &user(&[]), &mut req, |t| Some(t.name.0.to_string()))
                .unwrap_err();
        assert_eq!(failures[0].error_code, MESSAGE_TOO_LARGE);
        assert_eq!(failures[0].partition, 3);
    }

    #[test]
    fn work_counts_only_what_the_principal_gets_masked() {
        let set = set(vec![ApplyTo::Fetch]);
        let records = batch(&bomb(100 << 10), Compression::None);
        let resp = FetchResponse::default().with_responses(vec![
            topic("patient-events", vec![records.clone()]),
            topic("claims", vec![records.clone()]),
        ]);
        let work = fetch_work(&set, &user(&[]), &resp, by_name);
        assert_eq!(work, records.len());
        assert_eq!(fetch_work(&set, &user(&["clinicians"]), &resp, by_name), 0);
        let req = ProduceRequest::default();
        assert_eq!(produce_work(&set, &user(&[]), &req, |_| None), 0);
    }
}
