//! The data path in-process: the proxy between a raw-frame client and a
//! scripted broker. Each test states one promise of the connection loop and
//! runs in well under a second.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use std::time::Duration;
use support::{ALLOW_ALL, Client, Options, ScriptedBroker, Sidecar, records_of};

const PRODUCE: i16 = 9;
const FETCH: i16 = 12;
const LIST_OFFSETS: i16 = 5;
const TOPIC: &str = "patient-events";
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const POLICY_VIOLATION: i16 = 44;
const UNKNOWN_SERVER_ERROR: i16 = -1;

fn name(n: &str) -> TopicName {
    TopicName(StrBytes::from_string(n.into()))
}

fn batch(value: &str) -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        sequence: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        timestamp: 1,
        key: None,
        value: Some(Bytes::from(value.to_string())),
        headers: Default::default(),
    };
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut out, [&record], &options).unwrap();
    out.freeze()
}

fn values(records: &Bytes) -> Vec<String> {
    RecordBatchDecoder::decode_all(&mut records.clone())
        .unwrap()
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
        .collect()
}

fn list_offsets() -> ListOffsetsRequest {
    ListOffsetsRequest::default().with_topics(vec![
        ListOffsetsTopic::default()
            .with_name(name(TOPIC))
            .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)]),
    ])
}

fn produce(acks: i16, topics: &[&str]) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(1000)
        .with_topic_data(
            topics
                .iter()
                .map(|t| {
                    TopicProduceData::default()
                        .with_name(name(t))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(batch(r#"{"n":1}"#))),
                        ])
                })
                .collect(),
        )
}

fn produce_ack(topics: &[String]) -> ProduceResponse {
    ProduceResponse::default().with_responses(
        topics
            .iter()
            .map(|t| {
                TopicProduceResponse::default()
                    .with_name(name(t))
                    .with_partition_responses(vec![
                        PartitionProduceResponse::default()
                            .with_index(0)
                            .with_base_offset(7),
                    ])
            })
            .collect(),
    )
}

fn fetch() -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(TOPIC))
                .with_partitions(vec![
                    FetchPartition::default().with_partition_max_bytes(1 << 20),
                ]),
        ])
}

fn fetch_answer(value: &str) -> FetchResponse {
    FetchResponse::default().with_responses(vec![
        FetchableTopicResponse::default()
            .with_topic(name(TOPIC))
            .with_partitions(vec![
                PartitionData::default()
                    .with_high_watermark(1)
                    .with_records(Some(batch(value))),
            ]),
    ])
}

/// One ListOffsets through the proxy, answered by the broker: the client's correlation id back.
async fn round_trip(client: &mut Client, broker: &ScriptedBroker, id: i32) -> i32 {
    client
        .send(ApiKey::ListOffsets, LIST_OFFSETS, id, &list_offsets())
        .await;
    broker
        .recv()
        .await
        .reply(&ListOffsetsResponse::default())
        .await;
    let (got, _) = client
        .recv::<ListOffsetsResponse>(ApiKey::ListOffsets, LIST_OFFSETS)
        .await;
    got
}

#[tokio::test]
async fn pipelined_requests_all_reach_the_broker_before_it_answers_any() {
    let broker = ScriptedBroker::start().await;
    let sidecar = Sidecar::start(&broker, Options::default()).await;
    let mut client = sidecar.client().await;
    let pipelined: Vec<u8> = (1..=3)
        .flat_map(|id| Client::frame(ApiKey::ListOffsets, LIST_OFFSETS, id, &list_offsets()))
        .collect();
    client.write(&pipelined).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(broker.recv().await);
    }
    let ids: Vec<i32> = held.iter().map(|r| r.frame.correlation_id()).collect();
    assert_eq!(
        ids,
        [1, 2, 3],
        "forwarded in order, none waiting for an answer"
    );
    for r in &held {
        r.reply(&ListOffsetsResponse::default()).await;
    }
    for id in 1..=3 {
        let (got, _) = client
            .recv::<ListOffsetsResponse>(ApiKey::ListOffsets, LIST_OFFSETS)
            .await;
        assert_eq!(got, id);
    }
}

#[tokio::test]
async fn a_brokers_answer_to_an_acks_0_produce_is_dropped() {
    let broker = ScriptedBroker::start().await;
    let sidecar = Sidecar::start(&broker, Options::default()).await;
    let mut client = sidecar.client().await;
    client
        .send(ApiKey::Produce, PRODUCE, 1, &produce(0, &[TOPIC]))
        .await;
    client
        .send(ApiKey::Produce, PRODUCE, 2, &produce(1, &[TOPIC]))
        .await;
    let unacked = broker.recv().await;
    let acked = broker.recv().await;
    // tansu 0.6 answers acks=0; the client never asked for it.
    unacked.reply(&produce_ack(&[TOPIC.into()])).await;
    acked.reply(&produce_ack(&[TOPIC.into()])).await;
    let (id, _) = client
        .recv::<ProduceResponse>(ApiKey::Produce, PRODUCE)
        .await;
    assert_eq!(id, 2, "only the acks=1 request is answered");
    let id = round_trip(&mut client, &broker, 3).await;
    assert_eq!(id, 3, "the connection carries on");
}

#[tokio::test]
async fn an_out_of_order_answer_closes_the_client() {
    let broker = ScriptedBroker::start().await;
    let sidecar = Sidecar::start(&broker, Options::default()).await;
    let mut client = sidecar.client().await;
    client
        .send(ApiKey::ListOffsets, LIST_OFFSETS, 1, &list_offsets())
        .await;
    client
        .send(ApiKey::ListOffsets, LIST_OFFSETS, 2, &list_offsets())
        .await;
    let first = broker.recv().await;
    let second = broker.recv().await;
    second.reply(&ListOffsetsResponse::default()).await;
    first.reply(&ListOffsetsResponse::default()).await;
    assert!(
        client.closed().await,
        "no answer is handed to the wrong request"
    );
}

#[tokio::test]
async fn a_broker_restart_closes_the_client_which_reconnects() {
    let broker = ScriptedBroker::start().await;
    let sidecar = Sidecar::start(&broker, Options::default()).await;
    // Idle when the broker goes: closed at once, not at the next request.
    let mut idle = sidecar.client().await;
    assert_eq!(round_trip(&mut idle, &broker, 1).await, 1);
    broker.restart().await;
    assert!(idle.closed().await);
    // Waiting for an answer when the broker goes.
    let mut waiting = sidecar.client().await;
    waiting
        .send(ApiKey::ListOffsets, LIST_OFFSETS, 2, &list_offsets())
        .await;
    let _unanswered = broker.recv().await;
    broker.restart().await;
    assert!(waiting.closed().await);
    // The next connection reaches the broker again.
    let mut again = sidecar.client().await;
    let id = round_trip(&mut again, &broker, 3).await;
    assert_eq!(id, 3);
}

const WRITE_PATIENT_EVENTS_ONLY: &str = r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: intake}
spec:
  identity: {workloadIdentity: true}
  rules:
    - name: intake-writes
      subjects: [{kind: ServiceAccount, name: intake}]
      topics: [patient-events]
      operations: [Write]
"#;

#[tokio::test]
async fn a_partly_denied_produce_forwards_the_allowed_topic_and_merges_the_refusal() {
    let broker = ScriptedBroker::start().await;
    let options = Options {
        manifests: Some(WRITE_PATIENT_EVENTS_ONLY),
        ..Options::default()
    };
    let mut sidecar = Sidecar::start(&broker, options).await;
    let mut client = sidecar.client().await;
    let request = produce(-1, &[TOPIC, "secret-notes"]);
    client.send(ApiKey::Produce, PRODUCE, 5, &request).await;
    let forwarded = broker.recv().await;
    let seen: ProduceRequest = forwarded.frame.decode();
    let topics: Vec<String> = seen
        .topic_data
        .iter()
        .map(|t| t.name.0.to_string())
        .collect();
    assert_eq!(topics, [TOPIC], "the denied topic never reaches the broker");
    forwarded.reply(&produce_ack(&topics)).await;
    let (id, response) = client
        .recv::<ProduceResponse>(ApiKey::Produce, PRODUCE)
        .await;
    assert_eq!(id, 5);
    let code = |t: &str| {
        response
            .responses
            .iter()
            .find(|r| r.name.0.as_str() == t)
            .map(|r| r.partition_responses[0].error_code)
    };
    assert_eq!(
        code(TOPIC),
        Some(0),
        "the broker's answer for the allowed topic"
    );
    assert_eq!(code("secret-notes"), Some(TOPIC_AUTHORIZATION_FAILED));
    sidecar.stopped().await;
    let records = sidecar.audit_records();
    let produce = records_of(&records, "Produce");
    assert_eq!(produce.len(), 1);
    assert_eq!(
        produce[0]["decision"], "Deny",
        "the most restrictive topic decides"
    );
}

const MASK_SSN: &str = r#"
---
apiVersion: streamgate.dev/v1alpha1
kind: MaskingRule
metadata: {name: patient-phi}
spec:
  topics: [patient-events]
  format: Json
  fields:
    - {path: "$.patient.ssn", strategy: Redact}
  applyTo: [Fetch]
"#;

#[tokio::test]
async fn a_fetch_is_masked_and_audited_as_masked() {
    let broker = ScriptedBroker::start().await;
    let manifests = format!("{ALLOW_ALL}{MASK_SSN}");
    let options = Options {
        manifests: Some(&manifests),
        ..Options::default()
    };
    let mut sidecar = Sidecar::start(&broker, options).await;
    let mut client = sidecar.client().await;
    client.send(ApiKey::Fetch, FETCH, 1, &fetch()).await;
    broker
        .recv()
        .await
        .reply(&fetch_answer(r#"{"patient":{"ssn":"123-45-6789"}}"#))
        .await;
    let (_, response) = client.recv::<FetchResponse>(ApiKey::Fetch, FETCH).await;
    let records = response.responses[0].partitions[0].records.clone().unwrap();
    let delivered = values(&records);
    assert_eq!(delivered.len(), 1);
    assert!(!delivered[0].contains("123-45-6789"), "{delivered:?}");
    sidecar.stopped().await;
    let audit = sidecar.audit_records();
    let fetches = records_of(&audit, "Fetch");
    assert_eq!(fetches.len(), 1);
    assert_eq!(fetches[0]["decision"], "Masked");
    assert_eq!(fetches[0]["operation"], "Read");
    assert_eq!(fetches[0]["masking"]["fields"]["$.patient.ssn"], 1);
}

#[tokio::test]
async fn pipelined_fetches_under_closed_audit_are_released_in_order_each_with_its_record() {
    // Each answer waits for its record to be durable, in a release queue: the
    // next answers are worked on meanwhile, and the client still gets them in
    // request order with the records each carried.
    let broker = ScriptedBroker::start().await;
    let mut sidecar = Sidecar::start(&broker, Options::default()).await;
    let mut client = sidecar.client().await;
    let pipelined: Vec<u8> = (1..=5)
        .flat_map(|id| Client::frame(ApiKey::Fetch, FETCH, id, &fetch()))
        .collect();
    client.write(&pipelined).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(broker.recv().await);
    }
    for (i, r) in held.iter().enumerate() {
        r.reply(&fetch_answer(&format!(r#"{{"n":{i}}}"#))).await;
    }
    for i in 0..5 {
        let (id, response) = client.recv::<FetchResponse>(ApiKey::Fetch, FETCH).await;
        assert_eq!(id, i + 1, "released in request order");
        let records = response.responses[0].partitions[0].records.clone().unwrap();
        assert_eq!(values(&records), [format!(r#"{{"n":{i}}}"#)]);
    }
    sidecar.stopped().await;
    let audit = sidecar.audit_records();
    let fetches = records_of(&audit, "Fetch");
    assert_eq!(fetches.len(), 5, "one record per released answer");
    for f in fetches {
        assert!(
            f["resources"][0]["digest"]
                .as_str()
                .unwrap()
                .starts_with("blake3:"),
            "{f}"
        );
    }
}

#[tokio::test]
async fn closed_audit_withholds_fetched_records_and_refuses_produce() {
    let broker = ScriptedBroker::start().await;
    let options = Options {
        broken_audit: true,
        ..Options::default()
    };
    let sidecar = Sidecar::start(&broker, options).await;
    let mut client = sidecar.client().await;
    client.send(ApiKey::Fetch, FETCH, 1, &fetch()).await;
    broker.recv().await.reply(&fetch_answer(r#"{"n":1}"#)).await;
    let (_, response) = client.recv::<FetchResponse>(ApiKey::Fetch, FETCH).await;
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, UNKNOWN_SERVER_ERROR);
    assert!(
        partition.records.as_ref().is_none_or(Bytes::is_empty),
        "no records released"
    );
    client
        .send(ApiKey::Produce, PRODUCE, 2, &produce(-1, &[TOPIC]))
        .await;
    let (id, response) = client
        .recv::<ProduceResponse>(ApiKey::Produce, PRODUCE)
        .await;
    assert_eq!(id, 2);
    assert_eq!(
        response.responses[0].partition_responses[0].error_code,
        POLICY_VIOLATION
    );
    assert!(
        broker.try_recv(Duration::from_millis(200)).await.is_none(),
        "the Produce never reached the broker"
    );
}

#[tokio::test]
async fn shutdown_drains_a_request_in_flight_and_refuses_new_connections() {
    let broker = ScriptedBroker::start().await;
    let mut sidecar = Sidecar::start(&broker, Options::default()).await;
    let mut client = sidecar.client().await;
    client
        .send(ApiKey::ListOffsets, LIST_OFFSETS, 1, &list_offsets())
        .await;
    let in_flight = broker.recv().await;
    sidecar.terminate();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(sidecar.listen)
            .await
            .is_err(),
        "no new connections once shutting down"
    );
    in_flight.reply(&ListOffsetsResponse::default()).await;
    let (id, _) = client
        .recv::<ListOffsetsResponse>(ApiKey::ListOffsets, LIST_OFFSETS)
        .await;
    assert_eq!(id, 1, "the answer in flight is delivered");
    assert!(client.closed().await, "then the connection ends");
    sidecar.stopped().await;
    let audit = sidecar.audit_records();
    assert_eq!(records_of(&audit, "ListOffsets").len(), 1);
    assert!(
        audit.iter().any(|r| r["kind"] == "SidecarStop"),
        "stop recorded"
    );
}

/// Issue: a 14-byte request aborted the whole sidecar (kafka-protocol
/// reserved `0x7fffffff` topics before reading one). Now that connection is
/// closed and every other one carries on.
#[tokio::test]
async fn a_request_with_a_huge_array_count_closes_only_its_connection() {
    let broker = ScriptedBroker::start().await;
    let sidecar = Sidecar::start(&broker, Options::default()).await;
    let mut bystander = sidecar.client().await;
    assert_eq!(round_trip(&mut bystander, &broker, 1).await, 1);
    let mut attacker = sidecar.client().await;
    attacker
        .write(b"\x00\x00\x00\x0e\x00\x03\x00\x01\x00\x00\x00\x01\xff\xff\x7f\xff\xff\xff")
        .await;
    assert!(
        attacker.closed().await,
        "the malformed frame closes its connection"
    );
    assert_eq!(
        round_trip(&mut bystander, &broker, 2).await,
        2,
        "the process and the other connection live on"
    );
}

/// The same from the broker's side: a FindCoordinator answer (always
/// decoded: the proxy rewrites the coordinator's address) claiming 2^32-2
/// coordinators.
#[tokio::test]
async fn a_broker_answer_with_a_huge_array_count_closes_only_that_client() {
    let broker = ScriptedBroker::start().await;
    let sidecar = Sidecar::start(&broker, Options::default()).await;
    let mut victim = sidecar.client().await;
    let find = FindCoordinatorRequest::default()
        .with_coordinator_keys(vec![StrBytes::from_static_str("billing")]);
    victim.send(ApiKey::FindCoordinator, 4, 1, &find).await;
    let request = broker.recv().await;
    // FindCoordinator v4 answer: correlation id, no tags, throttle time,
    // then a compact-array count of 0xffffffff (a five-byte varint).
    let mut raw = Vec::new();
    raw.extend_from_slice(&14i32.to_be_bytes());
    raw.extend_from_slice(&1i32.to_be_bytes());
    raw.push(0);
    raw.extend_from_slice(&0i32.to_be_bytes());
    raw.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    request.conn.write_raw(&raw).await;
    assert!(
        victim.closed().await,
        "an undecodable answer closes the client"
    );
    let mut other = sidecar.client().await;
    assert_eq!(
        round_trip(&mut other, &broker, 2).await,
        2,
        "the process lives on"
    );
}

/// Only `patient-events` may be read here.
const READ_EVENTS_ONLY: &str = r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: events-only}
spec:
  identity: {workloadIdentity: true}
  rules:
    - name: events
      subjects: [{kind: ServiceAccount, name: "*"}]
      topics: [patient-events]
      operations: [Read, Describe]
  audit: {payload: Digest, failureMode: Closed}
"#;

/// KIP-227 against a broker that keeps fetch sessions (Apache Kafka does;
/// tansu answers every fetch with session id 0, so this cannot be shown on
/// it): a client's incremental fetch names only what changed and the
/// broker's session sends the rest — here `patient-records`, which the
/// caller may no longer read. The session never reaches the broker, and what
/// the broker sends anyway never reaches the client.
#[tokio::test]
async fn a_fetch_session_cannot_deliver_a_topic_the_caller_may_not_read() {
    let broker = ScriptedBroker::start().await;
    let options = Options {
        manifests: Some(READ_EVENTS_ONLY),
        ..Options::default()
    };
    let sidecar = Sidecar::start(&broker, options).await;
    let mut client = sidecar.client().await;
    let incremental = fetch().with_session_id(77).with_session_epoch(5);
    client.send(ApiKey::Fetch, FETCH, 1, &incremental).await;
    let upstream = broker.recv().await;
    let sent: FetchRequest = upstream.frame.decode();
    assert_eq!(
        (sent.session_id, sent.session_epoch),
        (0, -1),
        "sessionless upstream"
    );
    let mut answer = fetch_answer("lab value");
    answer.session_id = 77;
    answer.responses.push(
        FetchableTopicResponse::default()
            .with_topic(name("patient-records"))
            .with_partitions(vec![
                PartitionData::default()
                    .with_high_watermark(1)
                    .with_records(Some(batch(r#"{"ssn":"123-45-6789"}"#))),
            ]),
    );
    upstream.reply(&answer).await;
    let (_, got) = client.recv::<FetchResponse>(ApiKey::Fetch, FETCH).await;
    let topics: Vec<&str> = got.responses.iter().map(|t| t.topic.0.as_str()).collect();
    assert_eq!(topics, vec![TOPIC], "nothing the caller may not read");
    assert_eq!(got.session_id, 0, "no session id to reuse");
}

/// `--max-connections`: beyond it a new connection is closed at accept; the
/// ones being served carry on, and a slot freed is reused.
#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_accept() {
    let broker = ScriptedBroker::start().await;
    let options = Options {
        args: vec!["--max-connections=1".into()],
        ..Options::default()
    };
    let sidecar = Sidecar::start(&broker, options).await;
    let mut first = sidecar.client().await;
    assert_eq!(round_trip(&mut first, &broker, 1).await, 1);
    let mut second = sidecar.client().await;
    assert!(second.closed().await, "over the limit: closed");
    assert_eq!(
        round_trip(&mut first, &broker, 2).await,
        2,
        "the first carries on"
    );
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut third = sidecar.client().await;
        third
            .send(ApiKey::ListOffsets, LIST_OFFSETS, 3, &list_offsets())
            .await;
        if let Some(request) = broker.try_recv(Duration::from_millis(200)).await {
            request.reply(&ListOffsetsResponse::default()).await;
            let (id, _) = third
                .recv::<ListOffsetsResponse>(ApiKey::ListOffsets, LIST_OFFSETS)
                .await;
            assert_eq!(id, 3);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the freed slot is reused"
        );
    }
}

/// `--idle-timeout`: a connection with no request for that long is closed.
#[tokio::test]
async fn an_idle_connection_is_closed() {
    let broker = ScriptedBroker::start().await;
    let options = Options {
        args: vec!["--idle-timeout=300ms".into()],
        ..Options::default()
    };
    let sidecar = Sidecar::start(&broker, options).await;
    let mut client = sidecar.client().await;
    assert_eq!(round_trip(&mut client, &broker, 1).await, 1);
    assert!(
        client.closed().await,
        "closed after 300 ms without a request"
    );
}

/// Without workload identity a caller must authenticate: one that does not
/// within `--auth-timeout` is closed, and before it has, a frame over
/// `--pre-auth-max-frame-bytes` closes the connection unread.
#[tokio::test]
async fn an_unauthenticated_connection_is_bounded_in_time_and_frame_size() {
    let broker = ScriptedBroker::start().await;
    let no_workload_identity =
        ALLOW_ALL.replace("workloadIdentity: true", "workloadIdentity: false");
    let options = Options {
        manifests: Some(&no_workload_identity),
        args: vec![
            "--auth-timeout=300ms".into(),
            "--pre-auth-max-frame-bytes=1024".into(),
        ],
        ..Options::default()
    };
    let sidecar = Sidecar::start(&broker, options).await;
    let mut silent = sidecar.client().await;
    assert!(silent.closed().await, "closed after 300 ms unauthenticated");
    let mut big = sidecar.client().await;
    let mut frame = vec![0u8; 4 + 2048];
    frame[..4].copy_from_slice(&2048i32.to_be_bytes());
    big.write(&frame[..4]).await;
    assert!(big.closed().await, "a 2 KiB frame before authentication");
}

const MASK_SSN_BOTH_WAYS: &str = r#"
---
apiVersion: streamgate.dev/v1alpha1
kind: MaskingRule
metadata: {name: patient-phi}
spec:
  topics: [patient-events]
  format: Json
  fields:
    - {path: "$.patient.ssn", strategy: Redact}
  applyTo: [Fetch, Produce]
"#;
const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const BOMB_SSN: &str = "123-45-6789";

/// A JSON value of `size` bytes with an SSN at its start: mostly padding,
/// so compressed it is a few kilobytes.
fn padded(size: usize) -> String {
    let head = format!(r#"{{"patient":{{"ssn":"{BOMB_SSN}"}},"pad":""#);
    format!("{head}{}\"}}", "0".repeat(size - head.len() - 2))
}

fn compressed_batch(value: &str, compression: Compression) -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        sequence: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        timestamp: 1,
        key: None,
        value: Some(Bytes::from(value.to_string())),
        headers: Default::default(),
    };
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut out, [&record], &options).unwrap();
    out.freeze()
}

fn fetch_answer_of(records: Bytes) -> FetchResponse {
    let mut answer = fetch_answer("{}");
    answer.responses[0].partitions[0].records = Some(records);
    answer
}

/// One Fetch through the proxy, the broker answering with `records`.
async fn fetch_through(
    client: &mut Client,
    broker: &ScriptedBroker,
    id: i32,
    records: Bytes,
) -> PartitionData {
    client.send(ApiKey::Fetch, FETCH, id, &fetch()).await;
    broker.recv().await.reply(&fetch_answer_of(records)).await;
    let (got, mut response) = client.recv::<FetchResponse>(ApiKey::Fetch, FETCH).await;
    assert_eq!(got, id);
    response.responses[0].partitions.remove(0)
}

/// A producer's batch that decompresses past the masking budget (a
/// compression bomb) reaches masked readers as an error with no records —
/// never unmasked, and the sidecar keeps serving; a large batch within the
/// budget is masked (off the async workers).
#[tokio::test]
async fn a_compressed_bomb_is_answered_with_an_error_and_no_records() {
    let broker = ScriptedBroker::start().await;
    let manifests = format!("{ALLOW_ALL}{MASK_SSN}");
    let options = Options {
        manifests: Some(&manifests),
        ..Options::default()
    };
    let mut sidecar = Sidecar::start(&broker, options).await;
    let mut client = sidecar.client().await;
    // 9 MiB of records, past the default 8 MiB budget, in a few KiB of zstd.
    let bomb = compressed_batch(&padded(9 << 20), Compression::Zstd);
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    let p = fetch_through(&mut client, &broker, 1, bomb).await;
    assert_eq!(p.error_code, CORRUPT_MESSAGE);
    assert!(p.records.as_ref().is_none_or(Bytes::is_empty), "no records");

    let large = compressed_batch(&padded(2 << 20), Compression::Zstd);
    let p = fetch_through(&mut client, &broker, 2, large).await;
    assert_eq!(p.error_code, 0);
    let delivered = values(p.records.as_ref().unwrap());
    assert_eq!(delivered.len(), 1);
    assert!(!delivered[0].contains(BOMB_SSN));
    assert!(delivered[0].starts_with(r#"{"patient":{"ssn":"[REDACTED]"},"pad":"000"#));
    sidecar.stopped().await;
    let audit = sidecar.audit_records();
    let fetches = records_of(&audit, "Fetch");
    assert_eq!(fetches.len(), 2);
    assert_ne!(fetches[0]["decision"], "Masked", "nothing was delivered");
    assert_eq!(fetches[1]["decision"], "Masked");
}

/// `--masking-max-batch-bytes` sets the budget: over it a Fetch partition is
/// answered with an error and a Produce refused with MESSAGE_TOO_LARGE
/// (nothing reaches the broker); under it both are masked.
#[tokio::test]
async fn the_masking_budget_flag_is_honoured() {
    let broker = ScriptedBroker::start().await;
    let manifests = format!("{ALLOW_ALL}{MASK_SSN_BOTH_WAYS}");
    let options = Options {
        manifests: Some(&manifests),
        args: vec!["--masking-max-batch-bytes=65536".into()],
        ..Options::default()
    };
    let sidecar = Sidecar::start(&broker, options).await;
    let mut client = sidecar.client().await;
    for compression in [Compression::None, Compression::Gzip] {
        let over = compressed_batch(&padded(100 << 10), compression);
        let p = fetch_through(&mut client, &broker, 1, over.clone()).await;
        assert_eq!(p.error_code, CORRUPT_MESSAGE, "{compression:?}");
        assert!(p.records.as_ref().is_none_or(Bytes::is_empty));

        let under = compressed_batch(&padded(32 << 10), compression);
        let p = fetch_through(&mut client, &broker, 2, under.clone()).await;
        assert_eq!(p.error_code, 0);
        assert!(!values(p.records.as_ref().unwrap())[0].contains(BOMB_SSN));

        let mut request = produce(-1, &[TOPIC]);
        request.topic_data[0].partition_data[0].records = Some(over);
        client.send(ApiKey::Produce, PRODUCE, 3, &request).await;
        let (id, response) = client
            .recv::<ProduceResponse>(ApiKey::Produce, PRODUCE)
            .await;
        assert_eq!(id, 3);
        assert_eq!(
            response.responses[0].partition_responses[0].error_code,
            MESSAGE_TOO_LARGE
        );
        assert!(
            broker.try_recv(Duration::from_millis(100)).await.is_none(),
            "the Produce never reached the broker"
        );

        request.topic_data[0].partition_data[0].records = Some(under);
        client.send(ApiKey::Produce, PRODUCE, 4, &request).await;
        let written = broker.recv().await;
        let got: ProduceRequest = written.frame.decode();
        let records = got.topic_data[0].partition_data[0].records.clone().unwrap();
        assert!(!values(&records)[0].contains(BOMB_SSN));
        written.reply(&produce_ack(&[TOPIC.to_string()])).await;
        let (id, _) = client
            .recv::<ProduceResponse>(ApiKey::Produce, PRODUCE)
            .await;
        assert_eq!(id, 4);
    }
}

/// A client that connects and says nothing costs the broker no connection
/// (each would also spend the gateway's credential on a SASL exchange).
#[tokio::test]
async fn a_silent_client_opens_no_broker_connection() {
    let broker = ScriptedBroker::start().await;
    let sidecar = Sidecar::start(&broker, Options::default()).await;
    // The readiness probe's own connection comes first (then every 15 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while broker.connections() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = broker.connections();
    let silent: Vec<Client> = futures::future::join_all((0..5).map(|_| sidecar.client())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        broker.connections(),
        before,
        "no broker connection for silent clients"
    );
    let mut talker = sidecar.client().await;
    assert_eq!(round_trip(&mut talker, &broker, 1).await, 1);
    assert_eq!(
        broker.connections(),
        before + 1,
        "one for the client that spoke"
    );
    drop(silent);
}

/// A Json rule for values and a Text rule for keys and header values.
const MASK_AROUND_THE_VALUE: &str = r#"
---
apiVersion: streamgate.dev/v1alpha1
kind: MaskingRule
metadata: {name: patient-values}
spec:
  topics: [patient-events]
  format: Json
  detectors: [SSN, Phone]
---
apiVersion: streamgate.dev/v1alpha1
kind: MaskingRule
metadata: {name: patient-keys-and-headers}
spec:
  topics: [patient-events]
  format: Text
  detectors: [SSN, Email]
  targets: [Key, Headers]
"#;

/// Record keys and header values reach a masked reader masked when a rule
/// targets them; SSNs and phone numbers stored as JSON numbers or written in
/// full-width digits are found.
#[tokio::test]
async fn keys_headers_numbers_and_full_width_digits_are_masked() {
    let broker = ScriptedBroker::start().await;
    let manifests = format!("{ALLOW_ALL}{MASK_AROUND_THE_VALUE}");
    let options = Options {
        manifests: Some(&manifests),
        ..Options::default()
    };
    let sidecar = Sidecar::start(&broker, options).await;
    let mut client = sidecar.client().await;
    let mut headers = kafka_protocol::indexmap::IndexMap::new();
    headers.insert(
        StrBytes::from_static_str("contact"),
        Some(Bytes::from_static(b"james.silva0@example.org")),
    );
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        sequence: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        timestamp: 1,
        key: Some(Bytes::from_static(b"patient-838-39-8865")),
        value: Some(Bytes::from(
            r#"{"ssn":838398865,"phone":3515550121,"note":"ＳＳＮ ０４２－８９－４６９５"}"#,
        )),
        headers,
    };
    let mut records = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::Lz4,
    };
    RecordBatchEncoder::encode(&mut records, [&record], &options).unwrap();
    let p = fetch_through(&mut client, &broker, 1, records.freeze()).await;
    assert_eq!(p.error_code, 0);
    let got = RecordBatchDecoder::decode_all(&mut p.records.unwrap())
        .unwrap()
        .remove(0)
        .records
        .remove(0);
    assert_eq!(got.key.as_deref(), Some(b"patient-[SSN]".as_slice()));
    assert_eq!(
        got.headers
            .get(&StrBytes::from_static_str("contact"))
            .cloned()
            .flatten()
            .as_deref(),
        Some(b"[EMAIL]".as_slice())
    );
    assert_eq!(
        got.value.as_deref(),
        Some(r#"{"ssn":"[SSN]","phone":"[PHONE]","note":"ＳＳＮ [SSN]"}"#.as_bytes())
    );
}

/// Reads `patient-events`; nothing else. DeleteTopics is blocked.
const READ_EVENTS_BLOCKED: &str = r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: events-only}
spec:
  identity: {workloadIdentity: true}
  rules:
    - name: events
      subjects: [{kind: ServiceAccount, name: "*"}]
      topics: [patient-events]
      operations: [Read, Describe]
  blockedOperations: [DeleteTopics]
  audit: {payload: Digest, failureMode: Closed}
"#;

/// Every refusal is a record — answered with an error, unanswered (acks=0)
/// or closing the connection — each with a reason.
#[tokio::test]
async fn every_kind_of_refusal_leaves_an_audit_record() {
    let broker = ScriptedBroker::start().await;
    let options = Options {
        manifests: Some(READ_EVENTS_BLOCKED),
        ..Options::default()
    };
    let mut sidecar = Sidecar::start(&broker, options).await;
    let mut client = sidecar.client().await;
    // A cluster API without the right: answered with its error.
    client
        .send(
            ApiKey::DescribeCluster,
            0,
            1,
            &DescribeClusterRequest::default(),
        )
        .await;
    client.next_frame().await.expect("answered");
    // Another tenant's consumer group: answered with GROUP_AUTHORIZATION_FAILED.
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("billing")))
        .with_protocol_type(StrBytes::from_static_str("consumer"));
    client.send(ApiKey::JoinGroup, 7, 2, &join).await;
    client.next_frame().await.expect("answered");
    // A blocked API.
    let delete = DeleteTopicsRequest::default().with_topic_names(vec![name(TOPIC)]);
    client.send(ApiKey::DeleteTopics, 4, 3, &delete).await;
    client.next_frame().await.expect("answered");
    // acks=0 Produce without Write: no answer, but a record.
    client
        .send(ApiKey::Produce, PRODUCE, 4, &produce(0, &[TOPIC]))
        .await;
    // A broker-to-broker API: the connection closes.
    client
        .send(
            ApiKey::WriteTxnMarkers,
            1,
            5,
            &WriteTxnMarkersRequest::default(),
        )
        .await;
    assert!(client.closed().await);
    assert!(
        broker.try_recv(Duration::from_millis(100)).await.is_none(),
        "nothing refused reached the broker"
    );
    sidecar.stopped().await;
    let audit = sidecar.audit_records();
    for api in [
        "DescribeCluster",
        "JoinGroup",
        "DeleteTopics",
        "Produce",
        "WriteTxnMarkers",
    ] {
        let records = records_of(&audit, api);
        assert_eq!(records.len(), 1, "{api}: {audit:#?}");
        assert_eq!(records[0]["decision"], "Deny", "{api}: {:#}", records[0]);
        assert!(
            records[0]["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{api} says why: {:#}",
            records[0]
        );
    }
}
