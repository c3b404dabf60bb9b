//! What a Produce or Fetch carried, for the audit record: topic, partition, offset range,
//! record and byte counts — read from the record-batch headers only (61 bytes each, no
//! record decoding, no decompression). Pure: no IO, tested without sockets.
//!
//! The batch header is read through [`crate::kafka::record_batch::Header`].

use crate::audit::ResourceAccess;
use bytes::Bytes;
use kafka_protocol::messages::{FetchResponse, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::kafka::record_batch::batches;
use crate::kafka::refusal::{POLICY_VIOLATION, UNKNOWN_SERVER_ERROR, refuse_produce};

/// The sum of the complete record batches in one partition's `records` field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchSummary {
    /// User records (control batches excluded).
    pub records: u64,
    /// Offsets the batches span as the producer numbered them (sum of lastOffsetDelta+1):
    /// what the broker assigns to a Produce.
    pub span: u64,
    /// First and last offset of the data batches (Fetch: real offsets).
    pub offsets: Option<(i64, i64)>,
    /// Bytes of the complete batches.
    pub bytes: u64,
}

/// Walk the batch headers. A trailing partial batch (a broker may cut a Fetch at
/// `max_bytes`) is not counted: the client discards it too. Pre-v2 message sets are
/// counted in bytes only.
pub fn scan_batches(bytes: &[u8]) -> BatchSummary {
    let mut out = BatchSummary::default();
    for (header, batch) in batches(bytes) {
        out.bytes += batch.len() as u64;
        if header.magic() == 2 && !header.is_control() {
            let base = header.base_offset();
            let delta = i64::from(header.last_offset_delta().max(0));
            out.records += u64::try_from(header.records_count()).unwrap_or(0);
            out.span += (delta + 1) as u64;
            let last = base + delta;
            out.offsets = Some(match out.offsets {
                Some((first, _)) => (first, last),
                None => (base, last),
            });
        }
    }
    out
}

/// One partition of a Produce request, before the broker assigned offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducedPartition {
    pub topic: String,
    pub partition: i32,
    pub batches: BatchSummary,
}

/// A topic's name: the name field, or (Produce v13 / Fetch v13+) the id looked up.
fn topic_name(name: &StrBytes, id: &Uuid, names: &dyn Fn(&Uuid) -> Option<String>) -> String {
    if !name.is_empty() {
        return name.to_string();
    }
    names(id).unwrap_or_else(|| format!("topic-id:{id}"))
}

/// The partitions of a Produce request and, in request order, the batch bytes as sent.
pub fn produce_request(
    request: &ProduceRequest,
    names: &dyn Fn(&Uuid) -> Option<String>,
) -> (Vec<ProducedPartition>, Vec<Bytes>) {
    let mut parts = Vec::new();
    let mut payload = Vec::new();
    for topic in &request.topic_data {
        let name = topic_name(&topic.name.0, &topic.topic_id, names);
        for p in &topic.partition_data {
            let bytes = p.records.clone().unwrap_or_default();
            parts.push(ProducedPartition {
                topic: name.clone(),
                partition: p.index,
                batches: scan_batches(&bytes),
            });
            payload.push(bytes);
        }
    }
    (parts, payload)
}

/// Combine the request's partitions with the broker's answer: written partitions get
/// `base_offset ..= base_offset + span - 1`; a partition the broker refused wrote nothing.
pub fn produce_resources(
    parts: &[ProducedPartition],
    response: &ProduceResponse,
    names: &dyn Fn(&Uuid) -> Option<String>,
) -> Vec<ResourceAccess> {
    let mut answered = std::collections::HashMap::new();
    for topic in &response.responses {
        let name = topic_name(&topic.name.0, &topic.topic_id, names);
        for p in &topic.partition_responses {
            answered.insert((name.clone(), p.index), (p.error_code, p.base_offset));
        }
    }
    parts
        .iter()
        .map(|p| {
            let b = p.batches;
            match answered.get(&(p.topic.clone(), p.partition)) {
                Some(&(0, base)) if base >= 0 && b.span > 0 => ResourceAccess::partition(
                    &p.topic,
                    p.partition,
                    Some((base, base + b.span as i64 - 1)),
                    b.records,
                    b.bytes,
                ),
                Some(&(0, _)) => {
                    ResourceAccess::partition(&p.topic, p.partition, None, b.records, b.bytes)
                }
                _ => ResourceAccess::partition(&p.topic, p.partition, None, 0, 0),
            }
        })
        .collect()
}

/// A Produce request's partitions as written without an answer (acks=0): no offsets.
pub fn produce_unacknowledged(parts: &[ProducedPartition]) -> Vec<ResourceAccess> {
    parts
        .iter()
        .map(|p| {
            ResourceAccess::partition(
                &p.topic,
                p.partition,
                None,
                p.batches.records,
                p.batches.bytes,
            )
        })
        .collect()
}

/// What a Fetch response delivers: one resource per partition that returned records,
/// and the names of the topics fetched that returned none (for the summary).
pub fn fetch_resources(
    response: &FetchResponse,
    names: &dyn Fn(&Uuid) -> Option<String>,
) -> (Vec<ResourceAccess>, Vec<String>, Vec<Bytes>) {
    let mut with_records = Vec::new();
    let mut empty_topics = Vec::new();
    let mut payload = Vec::new();
    for topic in &response.responses {
        let name = topic_name(&topic.topic.0, &topic.topic_id, names);
        let before = with_records.len();
        for p in &topic.partitions {
            let bytes = p.records.clone().unwrap_or_default();
            // Any bytes are a disclosure: legacy (v0/v1) message sets and
            // control batches count no records but still reach the client,
            // so they are digested and held for a durable record too.
            if bytes.is_empty() {
                continue;
            }
            let b = scan_batches(&bytes);
            payload.push(bytes);
            with_records.push(ResourceAccess::partition(
                &name,
                p.partition_index,
                b.offsets,
                b.records,
                b.bytes,
            ));
        }
        if with_records.len() == before {
            empty_topics.push(name);
        }
    }
    (with_records, empty_topics, payload)
}

/// Withhold every partition that carried records (failureMode Closed, record not durable).
/// Returns how many partitions were withheld.
pub fn withhold_fetch(response: &mut FetchResponse) -> usize {
    let mut n = 0;
    for p in response
        .responses
        .iter_mut()
        .flat_map(|t| t.partitions.iter_mut())
    {
        if p.records.as_ref().is_some_and(|r| !r.is_empty()) {
            p.records = Some(Bytes::new());
            p.error_code = UNKNOWN_SERVER_ERROR;
            n += 1;
        }
    }
    n
}

/// Turn every partition of a Produce response into a refusal with `message`.
pub fn refuse_produce_response(response: &mut ProduceResponse, message: &str) {
    for p in response
        .responses
        .iter_mut()
        .flat_map(|t| t.partition_responses.iter_mut())
    {
        p.error_code = POLICY_VIOLATION;
        p.base_offset = -1;
        p.error_message = Some(StrBytes::from_string(message.to_owned()));
    }
}

/// A refusal for every partition of a Produce request that is not forwarded.
pub fn refuse_produce_request(request: &ProduceRequest, message: &str) -> ProduceResponse {
    refuse_produce(request, message, |_, _| POLICY_VIOLATION)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// Real record batches (kafka-protocol's encoder), `n` records from `base`.
    pub fn batch(base: i64, n: i32, compression: Compression) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i64::from(i),
                sequence: i,
                timestamp: 0,
                key: None,
                value: Some(Bytes::from(format!("{{\"mrn\":\"MRN-{i}\"}}"))),
                headers: Default::default(),
            })
            .collect();
        let mut out = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut out,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        out.freeze()
    }

    fn no_names(_: &Uuid) -> Option<String> {
        None
    }

    #[test]
    fn batch_headers_give_counts_and_offsets_without_decoding_records() {
        let mut two = batch(100, 5, Compression::None).to_vec();
        let second = batch(105, 3, Compression::Zstd);
        two.extend_from_slice(&second);
        let s = scan_batches(&two);
        assert_eq!(s.records, 8);
        assert_eq!(s.span, 8);
        assert_eq!(s.offsets, Some((100, 107)));
        assert_eq!(s.bytes, two.len() as u64);
        // A truncated trailing batch (Fetch max_bytes) is not counted.
        let cut = &two[..two.len() - 10];
        let s = scan_batches(cut);
        assert_eq!((s.records, s.offsets), (5, Some((100, 104))));
        assert_eq!(scan_batches(&[]), BatchSummary::default());
        assert_eq!(scan_batches(&[1, 2, 3]), BatchSummary::default());
    }

    #[test]
    fn produce_offsets_come_from_the_response_base_offset() {
        let request = ProduceRequest::default().with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("patient-events")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch(0, 4, Compression::None))),
                    PartitionProduceData::default()
                        .with_index(1)
                        .with_records(Some(batch(0, 2, Compression::Lz4))),
                ]),
        ]);
        let (parts, payload) = produce_request(&request, &no_names);
        assert_eq!(payload.len(), 2);
        let response = ProduceResponse::default().with_responses(vec![
            TopicProduceResponse::default()
                .with_name(TopicName(StrBytes::from_static_str("patient-events")))
                .with_partition_responses(vec![
                    PartitionProduceResponse::default()
                        .with_index(0)
                        .with_base_offset(40),
                    PartitionProduceResponse::default()
                        .with_index(1)
                        .with_error_code(6)
                        .with_base_offset(-1),
                ]),
        ]);
        let res = produce_resources(&parts, &response, &no_names);
        assert_eq!(res[0].offset_first, Some(40));
        assert_eq!(res[0].offset_last, Some(43));
        assert_eq!(res[0].records, 4);
        assert_eq!(
            (res[1].records, res[1].offset_first),
            (0, None),
            "refused partition wrote nothing"
        );
        let refusal = refuse_produce_request(&request, "no audit");
        assert!(
            refusal.responses[0]
                .partition_responses
                .iter()
                .all(|p| p.error_code == POLICY_VIOLATION)
        );
    }

    #[test]
    fn a_v12_fetch_with_a_misplaced_node_endpoints_tag_is_still_summarised() {
        use kafka_protocol::protocol::{Decodable, Encodable};
        let response = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("patient-events")))
                .with_partitions(vec![
                    PartitionData::default()
                        .with_partition_index(0)
                        .with_records(Some(batch(7, 2, Compression::None))),
                ]),
        ]);
        let mut body = bytes::BytesMut::new();
        response.encode(&mut body, 12).unwrap();
        // Replace the empty top-level tag section with tag 0 (as tansu 0.6 sends it).
        assert_eq!(body.last(), Some(&0));
        body.truncate(body.len() - 1);
        body.extend_from_slice(&[1, 0, 1, 1]);
        let body = body.freeze();
        assert!(FetchResponse::decode(&mut body.clone(), 12).is_err());
        let got = crate::kafka::wire::decode_fetch_lenient(body, 12).unwrap();
        let (res, _, _) = fetch_resources(&got, &no_names);
        assert_eq!((res[0].records, res[0].offset_first), (2, Some(7)));
    }

    #[test]
    fn fetch_reports_only_partitions_with_records_and_can_withhold_them() {
        let id = Uuid::from_bytes([7; 16]);
        let mut response = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default()
                .with_topic_id(id)
                .with_partitions(vec![
                    PartitionData::default()
                        .with_partition_index(2)
                        .with_records(Some(batch(10, 3, Compression::Snappy))),
                    PartitionData::default()
                        .with_partition_index(0)
                        .with_records(Some(Bytes::new())),
                ]),
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("quiet")))
                .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
        ]);
        let names = |u: &Uuid| (*u == id).then(|| "patient-events".to_string());
        let (res, empty, payload) = fetch_resources(&response, &names);
        assert_eq!(res.len(), 1);
        assert_eq!(res[0].topic, "patient-events");
        assert_eq!(res[0].partition, Some(2));
        assert_eq!(
            (res[0].offset_first, res[0].offset_last),
            (Some(10), Some(12))
        );
        assert_eq!(res[0].records, 3);
        assert_eq!(empty, vec!["quiet".to_string()]);
        assert_eq!(payload.len(), 1);
        assert_eq!(withhold_fetch(&mut response), 1);
        let p = &response.responses[0].partitions[0];
        assert_eq!(p.error_code, UNKNOWN_SERVER_ERROR);
        assert!(p.records.as_ref().unwrap().is_empty());
        let (res, _, _) = fetch_resources(&response, &names);
        assert!(res.is_empty(), "nothing delivered after withholding");
    }
}
