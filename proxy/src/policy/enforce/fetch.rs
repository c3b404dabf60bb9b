//! Reading records and offsets: Fetch (`Read`), ListOffsets and
//! OffsetForLeaderEpoch (`Describe`).
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ResponseKind, TopicName, fetch_request, fetch_response,
    list_offsets_request, list_offsets_response, offset_for_leader_epoch_request,
    offset_for_leader_epoch_response,
};
use streamgate_crds::Operation;
use uuid::Uuid;

use super::refusal::{Denied, TopicEntry, answer_list};
use super::{Ctx, Enforcement, FixupKind, Gate, conclude};

pub(super) fn check_fetch(ctx: &mut Ctx<'_, '_>, req: &mut FetchRequest) -> Enforcement {
    // KIP-227 fetch sessions would let the broker keep sending a partition
    // the request no longer lists (after a grant expired or a rule was
    // deleted), and a session id is not tied to the caller. Every fetch goes
    // upstream sessionless and full: the broker answers with session id 0,
    // so the client never sends an incremental fetch, and each request lists
    // — and is checked for — every partition it reads.
    req.session_id = 0;
    req.session_epoch = -1;
    req.forgotten_topics_data.clear();
    let denied = ctx.trim(&mut req.topics, Operation::Read, true);
    conclude::<fetch_request::FetchTopic>(req.topics.is_empty(), denied, FixupKind::Fetch)
}

/// Whatever the broker sends, the client gets only partitions it may read
/// now (and the refusals re-added). Returns whether the answer changed.
pub(super) fn filter_fetch(gate: &Gate<'_>, denied: &[Denied], resp: &mut FetchResponse) -> bool {
    let mut changed = resp.session_id != 0;
    resp.session_id = 0;
    let before = resp.responses.len();
    resp.responses.retain(|t| {
        let refused = denied.iter().any(|d| {
            if d.id.is_nil() {
                d.name == t.topic
            } else {
                d.id == t.topic_id
            }
        });
        // Checked without copying a name the response already holds.
        refused
            || if t.topic_id.is_nil() {
                gate.may(Operation::Read, &t.topic)
            } else {
                gate.topic_names
                    .topic_name(&t.topic_id)
                    .is_some_and(|n| gate.may(Operation::Read, &n))
            }
    });
    changed |= resp.responses.len() != before;
    changed
}

impl TopicEntry for fetch_request::FetchTopic {
    type Refused = fetch_response::FetchableTopicResponse;
    fn name(&self) -> TopicName {
        self.topic.clone()
    }
    fn id(&self) -> Uuid {
        self.topic_id
    }
    fn partitions(&self) -> Vec<i32> {
        self.partitions.iter().map(|p| p.partition).collect()
    }
    fn refused(d: &Denied, code: i16) -> Self::Refused {
        fetch_response::FetchableTopicResponse::default()
            .with_topic(d.name.clone())
            .with_topic_id(d.id)
            .with_partitions(
                d.partitions
                    .iter()
                    .map(|p| {
                        fetch_response::PartitionData::default()
                            .with_partition_index(*p)
                            .with_error_code(code)
                            .with_high_watermark(-1)
                            .with_last_stable_offset(-1)
                            .with_log_start_offset(-1)
                            .with_preferred_read_replica((-1).into())
                            .with_records(Some(bytes::Bytes::new()))
                    })
                    .collect(),
            )
    }
    answer_list!(Fetch, responses);
}

impl TopicEntry for list_offsets_request::ListOffsetsTopic {
    type Refused = list_offsets_response::ListOffsetsTopicResponse;
    fn name(&self) -> TopicName {
        self.name.clone()
    }
    fn partitions(&self) -> Vec<i32> {
        self.partitions.iter().map(|p| p.partition_index).collect()
    }
    fn refused(d: &Denied, code: i16) -> Self::Refused {
        list_offsets_response::ListOffsetsTopicResponse::default()
            .with_name(d.name.clone())
            .with_partitions(
                d.partitions
                    .iter()
                    .map(|p| {
                        list_offsets_response::ListOffsetsPartitionResponse::default()
                            .with_partition_index(*p)
                            .with_error_code(code)
                            .with_timestamp(-1)
                            .with_offset(-1)
                            .with_leader_epoch(-1)
                    })
                    .collect(),
            )
    }
    answer_list!(ListOffsets, topics);
}

impl TopicEntry for offset_for_leader_epoch_request::OffsetForLeaderTopic {
    type Refused = offset_for_leader_epoch_response::OffsetForLeaderTopicResult;
    fn name(&self) -> TopicName {
        self.topic.clone()
    }
    fn partitions(&self) -> Vec<i32> {
        self.partitions.iter().map(|p| p.partition).collect()
    }
    fn refused(d: &Denied, code: i16) -> Self::Refused {
        offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default()
            .with_topic(d.name.clone())
            .with_partitions(
                d.partitions
                    .iter()
                    .map(|p| {
                        offset_for_leader_epoch_response::EpochEndOffset::default()
                            .with_partition(*p)
                            .with_error_code(code)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1)
                    })
                    .collect(),
            )
    }
    answer_list!(OffsetForLeaderEpoch, topics);
}
