//! Describing topics: Metadata and DescribeTopicPartitions (`Describe`).
//! Both answer "all topics" requests too, so both answers are filtered.
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, MetadataRequest,
    MetadataResponse, ResponseKind, TopicName, describe_topic_partitions_request,
    describe_topic_partitions_response, metadata_request, metadata_response,
};
use streamgate_crds::Operation;
use uuid::Uuid;

use super::fixup::Refusals;
use super::refusal::{Denied, TopicEntry, answer_list, merge};
use super::{Ctx, Enforcement, Fixup, FixupKind, Gate, TOPIC_AUTH, conclude};

const UNKNOWN_TOPIC: i16 = ResponseError::UnknownTopicOrPartition.code();

/// Metadata: refused named topics are removed upstream (so they cannot be
/// auto-created) and answered with TOPIC_AUTHORIZATION_FAILED; the response
/// filter [`filter_metadata`] hides every other topic the caller may not
/// describe — also for "all topics" requests (null list, or empty at v0).
pub(super) fn check_metadata(
    ctx: &mut Ctx<'_, '_>,
    version: i16,
    req: &mut MetadataRequest,
) -> Enforcement {
    let mut denied = Vec::new();
    let mut all_creatable = true;
    if let Some(topics) = req.topics.as_mut() {
        denied = ctx.trim(topics, Operation::Describe, true);
        for t in topics.iter() {
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            all_creatable &= ctx
                .gate
                .policy
                .decide(ctx.gate.principal, Operation::Create, &name)
                .is_allow();
        }
    } else {
        all_creatable = false;
    }
    // Auto-creation only for callers allowed to create every named topic.
    let mut asked = None;
    if !all_creatable {
        req.allow_auto_topic_creation = false;
        // v0–v3 have no such flag and a broker with auto-creation on would
        // create every named topic: ask for all topics instead (v0: empty
        // list, v1–v3: null) and cut the answer back to the names asked.
        if version < 4
            && let Some(topics) = req.topics.as_mut()
            && !topics.is_empty()
        {
            asked = Some(topics.iter().filter_map(|t| t.name.clone()).collect());
            if version == 0 {
                topics.clear();
            } else {
                req.topics = None;
            }
        }
    }
    let refusals = Refusals {
        denied,
        merge: merge::<metadata_request::MetadataRequestTopic>,
    };
    Enforcement::Forward(Fixup(FixupKind::Metadata(refusals, asked)))
}

/// Cut a Metadata answer to what the caller may describe (and, for a
/// v0–v3 request sent as "all topics", to the names asked). Returns whether
/// the answer changed.
pub(super) fn filter_metadata(
    gate: &Gate<'_>,
    asked: Option<&[TopicName]>,
    resp: &mut MetadataResponse,
) -> bool {
    let mut changed = false;
    let before = resp.topics.len();
    if let Some(asked) = asked {
        changed = true;
        resp.topics.retain(|t| {
            t.error_code == TOPIC_AUTH || t.name.as_ref().is_some_and(|n| asked.contains(n))
        });
        for name in asked {
            if !resp.topics.iter().any(|t| t.name.as_ref() == Some(name)) {
                resp.topics.push(
                    metadata_response::MetadataResponseTopic::default()
                        .with_name(Some(name.clone()))
                        .with_error_code(UNKNOWN_TOPIC),
                );
            }
        }
    }
    // Hide what the caller may not describe; explicitly requested refused
    // topics were re-added with their error.
    resp.topics.retain(|t| {
        t.error_code == TOPIC_AUTH
            || t.name
                .as_ref()
                .is_some_and(|n| gate.may(Operation::Describe, n))
            || (t.name.is_none()
                && gate
                    .topic_names
                    .topic_name(&t.topic_id)
                    .is_some_and(|n| gate.may(Operation::Describe, &n)))
    });
    changed | (resp.topics.len() != before)
}

pub(super) fn check_describe_topic_partitions(
    ctx: &mut Ctx<'_, '_>,
    req: &mut DescribeTopicPartitionsRequest,
) -> Enforcement {
    let denied = ctx.trim(&mut req.topics, Operation::Describe, true);
    conclude::<describe_topic_partitions_request::TopicRequest>(
        req.topics.is_empty(),
        denied,
        FixupKind::DescribeTopicPartitions,
    )
}

/// An empty topic list asks for every topic: hide what the caller may not
/// describe (refused names were re-added). Returns whether the answer changed.
pub(super) fn filter_describe_topic_partitions(
    gate: &Gate<'_>,
    resp: &mut DescribeTopicPartitionsResponse,
) -> bool {
    let before = resp.topics.len();
    resp.topics.retain(|t| {
        t.error_code == TOPIC_AUTH
            || t.name
                .as_ref()
                .is_some_and(|n| gate.may(Operation::Describe, n))
    });
    resp.topics.len() != before
}

impl TopicEntry for metadata_request::MetadataRequestTopic {
    type Refused = metadata_response::MetadataResponseTopic;
    fn name(&self) -> TopicName {
        self.name.clone().unwrap_or_default()
    }
    fn id(&self) -> Uuid {
        self.topic_id
    }
    fn refused(d: &Denied, code: i16) -> Self::Refused {
        metadata_response::MetadataResponseTopic::default()
            .with_name(Some(d.name.clone()).filter(|n| !n.0.is_empty()))
            .with_topic_id(d.id)
            .with_error_code(code)
    }
    answer_list!(Metadata, topics);
}

impl TopicEntry for describe_topic_partitions_request::TopicRequest {
    type Refused = describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic;
    fn name(&self) -> TopicName {
        self.name.clone()
    }
    fn refused(d: &Denied, code: i16) -> Self::Refused {
        describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic::default()
            .with_name(Some(d.name.clone()))
            .with_error_code(code)
    }
    answer_list!(DescribeTopicPartitions, topics);
}
