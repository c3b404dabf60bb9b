//! Seed corpora, built from real frames: requests and responses encoded with
//! kafka-protocol at every version it knows, record batches with every codec,
//! PHI-like JSON documents, OAUTHBEARER messages and hash-chained spool
//! segments written by the spool's own `Chain`.
use std::path::Path;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, Message, StrBytes};
use kafka_protocol::records::Compression;
use streamgate_proxy::audit::chain::Chain;
use streamgate_proxy::audit::record::{AuditRecord, Operation, RecordKind};

use crate::*;

/// The OAUTHBEARER client-first messages seeded (RFC 7628 shapes).
pub fn oauthbearer_messages() -> Vec<Vec<u8>> {
    let t = RFC7515_ES256_TOKEN;
    vec![
        format!("n,,\x01auth=Bearer {t}\x01\x01").into_bytes(),
        format!("n,a=alice@example.com,\x01host=broker\x01auth=bearer {t}\x01port=9092\x01\x01")
            .into_bytes(),
        b"n,a=a=2Cb=3Dc,\x01auth=Bearer x.y.z\x01\x01".to_vec(),
        b"y,,\x01auth=Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJqb2UifQ.c2ln\x01\x01"
            .to_vec(),
        b"p=tls-unique,,\x01auth=Bearer t\x01\x01".to_vec(),
        b"n,,\x01auth=Basic dXNlcg==\x01\x01".to_vec(),
        b"n,,\x01\x01".to_vec(),
    ]
}

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.into()))
}

fn s(text: &'static str) -> StrBytes {
    StrBytes::from_static_str(text)
}

/// `req` at every version kafka-protocol knows.
fn all_versions<R: Encodable + Message>(
    out: &mut Vec<(String, Bytes)>,
    key: ApiKey,
    label: &str,
    req: &R,
) {
    for v in R::VERSIONS.min..=R::VERSIONS.max {
        if let Some(f) = request_frame(key, v, v as i32 + 100, req) {
            out.push((format!("{label}-v{v}"), f));
        }
    }
}

/// Client frames for the request gate.
pub fn request_frames() -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    let phi: Vec<&[u8]> = PHI_VALUES.iter().map(|v| v.as_bytes()).collect();
    let plain = record_batch(&phi, Compression::None);
    let gzip = record_batch(&phi[..2], Compression::Gzip);
    all_versions(
        &mut out,
        ApiKey::ApiVersions,
        "api-versions",
        &ApiVersionsRequest::default()
            .with_client_software_name(s("librdkafka"))
            .with_client_software_version(s("2.3.0")),
    );
    all_versions(
        &mut out,
        ApiKey::Metadata,
        "metadata-all",
        &MetadataRequest::default().with_topics(None),
    );
    all_versions(
        &mut out,
        ApiKey::Metadata,
        "metadata-topics",
        &MetadataRequest::default().with_topics(Some(
            TOPICS
                .iter()
                .map(|(name, _)| MetadataRequestTopic::default().with_name(Some(topic(name))))
                .collect(),
        )),
    );
    all_versions(
        &mut out,
        ApiKey::Produce,
        "produce",
        &produce_request(&TOPICS[..1], -1, &plain),
    );
    all_versions(
        &mut out,
        ApiKey::Produce,
        "produce-trimmed-gzip",
        &produce_request(&TOPICS, 1, &gzip),
    );
    all_versions(
        &mut out,
        ApiKey::Produce,
        "produce-acks0",
        &produce_request(&TOPICS[..1], 0, &gzip),
    );
    all_versions(&mut out, ApiKey::Fetch, "fetch", &fetch_request(&TOPICS));
    all_versions(
        &mut out,
        ApiKey::FindCoordinator,
        "find-coordinator",
        &FindCoordinatorRequest::default()
            .with_key(s("billing"))
            .with_coordinator_keys(vec![s("billing")]),
    );
    all_versions(
        &mut out,
        ApiKey::JoinGroup,
        "join-group",
        &JoinGroupRequest::default()
            .with_group_id(GroupId(s("billing")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(
                        b"\x00\x01\x00\x00\x00\x01\x00\x0epatient-events",
                    )),
            ]),
    );
    all_versions(
        &mut out,
        ApiKey::Heartbeat,
        "heartbeat",
        &HeartbeatRequest::default()
            .with_group_id(GroupId(s("billing")))
            .with_generation_id(3)
            .with_member_id(s("m-1")),
    );
    all_versions(
        &mut out,
        ApiKey::OffsetFetch,
        "offset-fetch",
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s("billing")))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(topic("patient-events"))
                    .with_partition_indexes(vec![0, 1]),
            ])),
    );
    all_versions(
        &mut out,
        ApiKey::ListOffsets,
        "list-offsets",
        &ListOffsetsRequest::default().with_topics(
            TOPICS
                .iter()
                .map(|(name, _)| {
                    ListOffsetsTopic::default()
                        .with_name(topic(name))
                        .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)])
                })
                .collect(),
        ),
    );
    all_versions(
        &mut out,
        ApiKey::CreateTopics,
        "create-topics",
        &CreateTopicsRequest::default().with_topics(vec![
            CreatableTopic::default()
                .with_name(topic("patient-archive"))
                .with_num_partitions(3)
                .with_replication_factor(1),
            CreatableTopic::default()
                .with_name(topic("secret-ledger"))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]),
    );
    all_versions(
        &mut out,
        ApiKey::DeleteTopics,
        "delete-topics",
        &DeleteTopicsRequest::default()
            .with_topic_names(vec![topic("patient-events")])
            .with_topics(vec![
                DeleteTopicState::default().with_name(Some(topic("patient-events"))),
            ]),
    );
    all_versions(
        &mut out,
        ApiKey::InitProducerId,
        "init-producer-id",
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s("tx-1"))))
            .with_transaction_timeout_ms(60_000),
    );
    // SASL: a handshake, then (the bytes after its body) the next frame.
    let handshake = SaslHandshakeRequest::default().with_mechanism(s("OAUTHBEARER"));
    for message in oauthbearer_messages().into_iter().take(3) {
        let auth = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(message.clone()));
        for v in 0..=2 {
            let Some(a) = request_frame(ApiKey::SaslAuthenticate, v, 2, &auth) else {
                continue;
            };
            out.push((format!("sasl-authenticate-v{v}-{}", out.len()), a.clone()));
            if let Some(h) = request_frame(ApiKey::SaslHandshake, 1, 1, &handshake) {
                let mut both = h.to_vec();
                both.extend_from_slice(&a);
                out.push((
                    format!("sasl-v1-then-authenticate-v{v}-{}", out.len()),
                    both.into(),
                ));
            }
        }
        if let Some(h) = request_frame(ApiKey::SaslHandshake, 0, 1, &handshake) {
            let mut both = h.to_vec();
            both.extend_from_slice(&message);
            out.push((format!("sasl-v0-then-raw-token-{}", out.len()), both.into()));
        }
    }
    all_versions(
        &mut out,
        ApiKey::SaslHandshake,
        "sasl-handshake-plain",
        &SaslHandshakeRequest::default().with_mechanism(s("PLAIN")),
    );
    out
}

/// Broker answers for the response path: `[selector, version]` + frame
/// (see the `response_path_masking` target for the selector bits).
pub fn response_inputs() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let phi: Vec<&[u8]> = PHI_VALUES.iter().map(|v| v.as_bytes()).collect();
    let batches: Vec<Bytes> = COMPRESSIONS
        .iter()
        .map(|c| record_batch(&phi, *c))
        .collect();
    let partition = |i: i32, records: &Bytes| {
        PartitionData::default()
            .with_partition_index(i)
            .with_high_watermark(100)
            .with_preferred_read_replica(BrokerId(if i == 0 { -1 } else { 2 }))
            .with_records(Some(records.clone()))
    };
    let fetch = FetchResponse::default().with_responses(vec![
        FetchableTopicResponse::default()
            .with_topic(topic("patient-events"))
            .with_topic_id(uuid::Uuid::from_bytes(PATIENT_EVENTS_ID))
            .with_partitions(
                batches
                    .iter()
                    .enumerate()
                    .map(|(i, b)| partition(i as i32, b))
                    .collect(),
            ),
        FetchableTopicResponse::default()
            .with_topic(topic("notes-2024"))
            .with_partitions(vec![partition(0, &batches[2])]),
        FetchableTopicResponse::default()
            .with_topic(topic("secret-ledger"))
            .with_topic_id(uuid::Uuid::from_bytes(SECRET_LEDGER_ID))
            .with_partitions(vec![partition(0, &batches[0])]),
    ]);
    let range = FetchResponse::VERSIONS;
    for v in range.min..=range.max {
        let Some(f) = response_frame(ApiKey::Fetch, v, 7, &fetch) else {
            continue;
        };
        let ver = (v - range.min) as u8;
        for selector in [0u8, 2, 4] {
            let mut input = vec![selector, ver];
            input.extend_from_slice(&f);
            out.push((format!("fetch-v{v}-sel{selector}"), input));
        }
    }
    let produce = ProduceResponse::default().with_responses(
        TOPICS
            .iter()
            .map(|(name, id)| {
                TopicProduceResponse::default()
                    .with_name(topic(name))
                    .with_topic_id(uuid::Uuid::from_bytes(*id))
                    .with_partition_responses(vec![
                        PartitionProduceResponse::default()
                            .with_index(0)
                            .with_base_offset(42),
                    ])
            })
            .collect(),
    );
    let range = ProduceResponse::VERSIONS;
    for v in range.min..=range.max {
        let Some(f) = response_frame(ApiKey::Produce, v, 7, &produce) else {
            continue;
        };
        let ver = (v - range.min) as u8;
        for selector in [1u8, 5] {
            let mut input = vec![selector, ver];
            input.extend_from_slice(&f);
            out.push((format!("produce-v{v}-sel{selector}"), input));
        }
    }
    out
}

/// Record sets: every codec, several batches, a control batch, a cut tail,
/// the legacy format.
pub fn record_sets() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let phi: Vec<&[u8]> = PHI_VALUES.iter().map(|v| v.as_bytes()).collect();
    for c in COMPRESSIONS {
        let b = record_batch(&phi, c);
        out.push((format!("batch-{c:?}"), b.to_vec()));
        out.push((format!("batch-{c:?}-cut"), b[..b.len() - 7].to_vec()));
    }
    let mut two = record_batch(&phi[..1], Compression::None).to_vec();
    two.extend_from_slice(&record_batch(&phi[1..3], Compression::Lz4));
    out.push(("two-batches".into(), two));
    let mut control = record_batch(&[b"\x00\x00\x00\x00\x00\x00"], Compression::None).to_vec();
    control[22] |= 0x20; // attributes: control bit
    out.push(("control".into(), fix_crcs(&control).unwrap_or(control)));
    let mut legacy = vec![0u8; 40];
    legacy[11] = 28;
    legacy[16] = 1;
    out.push(("legacy-v1".into(), legacy));
    out
}

/// `[codec, mode]` + payload for `record_batch_codecs`.
pub fn codec_inputs() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let values = PHI_VALUES.join("\n");
    for codec in 0u8..5 {
        let mut a = vec![codec, 0];
        a.extend_from_slice(values.as_bytes());
        out.push((format!("values-codec{codec}"), a));
        // A raw records section: one record, value `{"ssn":"838-39-8865"}`.
        let value = br#"{"ssn":"838-39-8865"}"#;
        let mut body = vec![0u8]; // attributes
        body.extend_from_slice(&[0, 0]); // timestamp delta, offset delta
        body.push(1); // key: null (-1)
        body.push((value.len() * 2) as u8);
        body.extend_from_slice(value);
        body.push(0); // no headers
        let mut section = vec![(body.len() * 2) as u8];
        section.extend_from_slice(&body);
        let mut b = vec![codec, 1 | (1 << 1)];
        b.extend_from_slice(&section);
        out.push((format!("section-codec{codec}"), b));
    }
    out
}

/// JSON documents with PHI-like fields.
pub fn json_docs() -> Vec<(String, Vec<u8>)> {
    let mut docs: Vec<&str> = PHI_VALUES.to_vec();
    docs.extend([
        r#"{"ssn":"1","ssn":"2","\u0073sn":"3"}"#,
        r#"{"internal":1,"keep":true,"internal":[1,2]}"#,
        r#"{"contacts":[{"email":"x@y.org"},{"email":null},{"email":{"a":1}}]}"#,
        r#"{"patient":{"name":"\u00c5sa \"Q\" Smith"},"a":{"b":{"mrn":12345}}}"#,
        r#"  [ ] "#,
        r#""just a string with 838-39-8865""#,
        r#"{"deep":[[[[[[[[[[{"mrn":"MRN-000001"}]]]]]]]]]]}"#,
        r#"{"num":-0.0e-0,"big":1e400,"t":true,"f":false,"n":null}"#,
    ]);
    docs.into_iter()
        .enumerate()
        .map(|(i, d)| (format!("doc-{i}"), d.as_bytes().to_vec()))
        .collect()
}

/// Spool segments (`[flags]` + segments split by 0x1E) written by the spool's `Chain`.
pub fn spool_inputs() -> Vec<(String, Vec<u8>)> {
    let mut chain = Chain::start(
        "sha256:1111111111111111111111111111111111111111111111111111111111111111".into(),
    );
    let mut lines = Vec::new();
    for i in 0..6 {
        let mut rec = match i % 3 {
            0 => AuditRecord::request("Fetch", 13, Operation::Read),
            1 => AuditRecord::request("Produce", 9, Operation::Write),
            _ => AuditRecord::event(RecordKind::PolicyReload, "policy p generation 2"),
        };
        let line = chain.link(&mut rec).expect("link");
        chain.commit(&rec);
        lines.push(line);
    }
    let seg = |ls: &[String]| -> Vec<u8> {
        let mut v = Vec::new();
        for l in ls {
            v.extend_from_slice(l.as_bytes());
            v.push(b'\n');
        }
        v
    };
    let mut out = Vec::new();
    // One segment, intact.
    let mut one = vec![0u8];
    one.extend_from_slice(&seg(&lines));
    out.push(("one-segment".into(), one.clone()));
    // A torn final line (what SIGKILL mid-write leaves).
    let mut torn = one.clone();
    torn.extend_from_slice(b"{\"seq\":7,\"time\":\"2026-11-");
    out.push(("torn-tail".into(), torn));
    // Two and three segments.
    let mut two = vec![1u8];
    two.extend_from_slice(&seg(&lines[..3]));
    two.push(0x1e);
    two.extend_from_slice(&seg(&lines[3..]));
    out.push(("two-segments".into(), two.clone()));
    let mut three = vec![2u8];
    three.extend_from_slice(&seg(&lines[..2]));
    three.push(0x1e);
    three.extend_from_slice(&seg(&lines[2..4]));
    three.push(0x1e);
    three.extend_from_slice(&seg(&lines[4..]));
    out.push(("three-segments".into(), three));
    // The same with relinking on (flags bit 2).
    let mut relinked = two;
    relinked[0] |= 4;
    out.push(("two-segments-relinked".into(), relinked));
    let mut edited = one;
    edited[0] |= 4;
    out.push(("one-segment-relinked".into(), edited));
    out
}

fn write(dir: &Path, target: &str, seeds: impl IntoIterator<Item = (String, Vec<u8>)>) -> usize {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("corpus dir");
    let mut n = 0;
    for (name, bytes) in seeds {
        std::fs::write(d.join(format!("seed-{name}")), bytes).expect("seed");
        n += 1;
    }
    n
}

/// Writes every target's seeds under `dir/<target>/`; returns (target, count).
pub fn write_all(dir: &Path) -> Vec<(&'static str, usize)> {
    let frames: Vec<(String, Vec<u8>)> = request_frames()
        .into_iter()
        .map(|(n, f)| (n, f.to_vec()))
        .collect();
    let sasl: Vec<(String, Vec<u8>)> = oauthbearer_messages()
        .into_iter()
        .enumerate()
        .map(|(i, m)| (format!("client-first-{i}"), m))
        .collect();
    vec![
        (
            "request_gate_preauth",
            write(dir, "request_gate_preauth", frames.clone()),
        ),
        (
            "request_gate_authed",
            write(dir, "request_gate_authed", frames),
        ),
        (
            "response_path_masking",
            write(dir, "response_path_masking", response_inputs()),
        ),
        (
            "record_batch_masking",
            write(dir, "record_batch_masking", record_sets()),
        ),
        (
            "record_batch_codecs",
            write(dir, "record_batch_codecs", codec_inputs()),
        ),
        ("json_masking", write(dir, "json_masking", json_docs())),
        ("sasl_oauthbearer", write(dir, "sasl_oauthbearer", sasl)),
        (
            "audit_spool_recovery",
            write(dir, "audit_spool_recovery", spool_inputs()),
        ),
    ]
}
