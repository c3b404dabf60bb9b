//! What the proxy writes into a Kafka answer when it refuses: the error codes
//! named once, and the one Produce refusal (every partition of a request
//! answered, nothing written), used by masking and by the audit trail.

use kafka_protocol::messages::produce_request::TopicProduceData;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

/// A partition refused by the gate's policy (masking and audit are part of it).
pub const POLICY_VIOLATION: i16 = 44;
/// A Fetch partition whose records are withheld.
pub const UNKNOWN_SERVER_ERROR: i16 = -1;

/// A ProduceResponse answering every partition of `request` with the code
/// `code(topic, partition)` gives and `message`; nothing was written.
pub fn refuse_produce(
    request: &ProduceRequest,
    message: &str,
    code: impl Fn(&TopicProduceData, i32) -> i16,
) -> ProduceResponse {
    let message = StrBytes::from_string(message.to_owned());
    let topics = request
        .topic_data
        .iter()
        .map(|t| {
            let partitions = t
                .partition_data
                .iter()
                .map(|p| {
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(code(t, p.index))
                        .with_base_offset(-1)
                        .with_error_message(Some(message.clone()))
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id)
                .with_partition_responses(partitions)
        })
        .collect();
    ProduceResponse::default().with_responses(topics)
}
