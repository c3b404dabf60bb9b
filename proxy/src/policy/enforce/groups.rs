//! Consumer groups: OffsetCommit (`Read` per topic), OffsetFetch,
//! FindCoordinator, DescribeGroups, ListGroups, ConsumerGroupDescribe and
//! DeleteGroups. Group coordination needs `Read` on some topic; which groups
//! a caller may use was checked before (`policy::coordination`).
use std::collections::HashSet;

use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, DeleteGroupsRequest,
    DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, ListGroupsResponse, OffsetCommitRequest, OffsetFetchRequest,
    OffsetFetchResponse, ResponseKind, TopicName, consumer_group_describe_response,
    delete_groups_response, describe_groups_response, find_coordinator_response,
    offset_commit_request, offset_commit_response, offset_fetch_response,
};
use streamgate_crds::Operation;
use uuid::Uuid;

use super::refusal::{Denied, TopicEntry, answer_list, message, refuse_every, top_level};
use super::{Ctx, Enforcement, Fixup, FixupKind, GROUP_AUTH, Gate, TOPIC_AUTH, TXN_AUTH, split};
use crate::policy::coordination::Coordination;
use crate::policy::decide::DenyReason;

pub(super) fn check_offset_commit(
    ctx: &mut Ctx<'_, '_>,
    req: &mut OffsetCommitRequest,
) -> Enforcement {
    if !ctx.may_any(Operation::Read) {
        return Enforcement::Respond(refuse_every(&req.topics, GROUP_AUTH));
    }
    ctx.topics(&mut req.topics, Operation::Read, true)
}

/// OffsetFetch is forwarded whole; the answer is filtered (see
/// [`filter_offset_fetch`]), so the topics asked for by name are remembered.
pub(super) fn check_offset_fetch(
    ctx: &mut Ctx<'_, '_>,
    version: i16,
    req: &OffsetFetchRequest,
) -> Enforcement {
    if !ctx.may_any(Operation::Read) {
        return Enforcement::Respond(offset_fetch_refusal(version, req));
    }
    let requested: HashSet<String> = req
        .topics
        .iter()
        .flatten()
        .map(|t| &t.name)
        .chain(
            req.groups
                .iter()
                .flat_map(|g| g.topics.iter().flatten().map(|t| &t.name)),
        )
        .map(|n| n.0.to_string())
        .collect();
    Enforcement::Forward(Fixup(FixupKind::OffsetFetch(requested)))
}

/// The offsets of topics the caller may not read are withheld: dropped when
/// not asked for by name, answered TOPIC_AUTHORIZATION_FAILED when they were.
pub(super) fn filter_offset_fetch(
    gate: &Gate<'_>,
    requested: &HashSet<String>,
    resp: &mut OffsetFetchResponse,
) -> bool {
    let allowed = |name: &TopicName| gate.may(Operation::Read, name);
    let keep = |name: &TopicName| allowed(name) || requested.contains(name.as_str());
    resp.topics.retain(|t| keep(&t.name));
    for t in resp.topics.iter_mut().filter(|t| !allowed(&t.name)) {
        for p in &mut t.partitions {
            (p.committed_offset, p.metadata, p.error_code) = (-1, None, TOPIC_AUTH);
        }
    }
    for g in &mut resp.groups {
        g.topics.retain(|t| keep(&t.name));
        for t in g.topics.iter_mut().filter(|t| !allowed(&t.name)) {
            for p in &mut t.partitions {
                (p.committed_offset, p.metadata, p.error_code) = (-1, None, TOPIC_AUTH);
            }
        }
    }
    true
}

/// v8+ answer per group; v2–7 carry a top-level error; v0–1 only per partition.
pub(super) fn offset_fetch_refusal(version: i16, req: &OffsetFetchRequest) -> ResponseKind {
    let groups = req
        .groups
        .iter()
        .map(|g| {
            offset_fetch_response::OffsetFetchResponseGroup::default()
                .with_group_id(g.group_id.clone())
                .with_error_code(GROUP_AUTH)
        })
        .collect();
    // v0–1 have no top-level error: every requested partition carries it.
    let topics = req
        .topics
        .iter()
        .flatten()
        .map(|t| {
            offset_fetch_response::OffsetFetchResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partition_indexes
                        .iter()
                        .map(|p| {
                            offset_fetch_response::OffsetFetchResponsePartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(-1)
                                .with_error_code(GROUP_AUTH)
                        })
                        .collect(),
                )
        })
        .collect();
    let resp = match version {
        8.. => OffsetFetchResponse::default().with_groups(groups),
        2..=7 => OffsetFetchResponse::default()
            .with_error_code(GROUP_AUTH)
            .with_topics(topics),
        _ => OffsetFetchResponse::default().with_topics(topics),
    };
    ResponseKind::OffsetFetch(resp)
}

pub(super) fn check_find_coordinator(
    ctx: &mut Ctx<'_, '_>,
    version: i16,
    req: &FindCoordinatorRequest,
) -> Enforcement {
    // key_type 1 = transactional id; 0 = group, 2 = share group.
    let (op, code) = if req.key_type == 1 {
        (Operation::Write, TXN_AUTH)
    } else {
        (Operation::Read, GROUP_AUTH)
    };
    if ctx.may_any(op) {
        Enforcement::Forward(Fixup::default())
    } else {
        Enforcement::Respond(find_coordinator_refusal(version, req, code))
    }
}

/// v0–3 answer one key at the top level; v4+ answer a list of keys.
pub(super) fn find_coordinator_refusal(
    version: i16,
    req: &FindCoordinatorRequest,
    code: i16,
) -> ResponseKind {
    let resp = if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                find_coordinator_response::Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id((-1).into())
                    .with_port(-1)
                    .with_error_code(code)
                    .with_error_message(message())
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        FindCoordinatorResponse::default()
            .with_error_code(code)
            .with_error_message(message())
            .with_node_id((-1).into())
            .with_port(-1)
    };
    ResponseKind::FindCoordinator(resp)
}

/// Groups the caller may not use are removed and answered
/// GROUP_AUTHORIZATION_FAILED; the others are described by the broker.
pub(super) fn check_describe_groups(
    ctx: &mut Ctx<'_, '_>,
    req: &mut DescribeGroupsRequest,
) -> Enforcement {
    if !ctx.may_any(Operation::Read) {
        return Enforcement::Respond(describe_groups_answer(&req.groups));
    }
    let gate = ctx.gate;
    let refused = split(&mut req.groups, |g| gate.may_use(Coordination::Group, g));
    if req.groups.is_empty() && !refused.is_empty() {
        return Enforcement::Respond(describe_groups_answer(&refused));
    }
    Enforcement::Forward(Fixup(FixupKind::DescribeGroups(refused)))
}

fn describe_groups_answer(refused: &[GroupId]) -> ResponseKind {
    let mut resp = ResponseKind::DescribeGroups(DescribeGroupsResponse::default());
    merge_describe_groups(&mut resp, refused);
    resp
}

/// Re-add the refused groups to a DescribeGroups answer.
pub(super) fn merge_describe_groups(response: &mut ResponseKind, refused: &[GroupId]) {
    if let ResponseKind::DescribeGroups(r) = response {
        r.groups.extend(refused.iter().map(|g| {
            describe_groups_response::DescribedGroup::default()
                .with_group_id(g.clone())
                .with_error_code(GROUP_AUTH)
        }));
    }
}

pub(super) fn check_list_groups(ctx: &mut Ctx<'_, '_>) -> Enforcement {
    if ctx.may_any(Operation::Read) {
        Enforcement::Forward(Fixup(FixupKind::ListGroups))
    } else {
        top_level(
            kafka_protocol::messages::ApiKey::ListGroups,
            GROUP_AUTH,
            DenyReason::NoMatchingRule,
        )
    }
}

/// The answer keeps only groups the caller may use.
pub(super) fn filter_list_groups(gate: &Gate<'_>, resp: &mut ListGroupsResponse) -> bool {
    let before = resp.groups.len();
    resp.groups
        .retain(|g| gate.may_use(Coordination::Group, &g.group_id));
    resp.groups.len() != before
}

pub(super) fn check_consumer_group_describe(
    ctx: &mut Ctx<'_, '_>,
    req: &ConsumerGroupDescribeRequest,
) -> Enforcement {
    if ctx.may_any(Operation::Read) {
        Enforcement::Forward(Fixup::default())
    } else {
        Enforcement::Respond(consumer_group_describe_refusal(req, GROUP_AUTH))
    }
}

pub(super) fn consumer_group_describe_refusal(
    req: &ConsumerGroupDescribeRequest,
    code: i16,
) -> ResponseKind {
    let groups = req
        .group_ids
        .iter()
        .map(|g| {
            consumer_group_describe_response::DescribedGroup::default()
                .with_group_id(g.clone())
                .with_error_code(code)
        })
        .collect();
    ResponseKind::ConsumerGroupDescribe(
        ConsumerGroupDescribeResponse::default().with_groups(groups),
    )
}

/// Deleting groups is cluster administration.
pub(super) fn check_delete_groups(ctx: &mut Ctx<'_, '_>, req: &DeleteGroupsRequest) -> Enforcement {
    if ctx.admin_refused() {
        Enforcement::Respond(delete_groups_refusal(req, GROUP_AUTH))
    } else {
        Enforcement::Forward(Fixup::default())
    }
}

pub(super) fn delete_groups_refusal(req: &DeleteGroupsRequest, code: i16) -> ResponseKind {
    let results = req
        .groups_names
        .iter()
        .map(|g| {
            delete_groups_response::DeletableGroupResult::default()
                .with_group_id(g.clone())
                .with_error_code(code)
        })
        .collect();
    ResponseKind::DeleteGroups(DeleteGroupsResponse::default().with_results(results))
}

impl TopicEntry for offset_commit_request::OffsetCommitRequestTopic {
    type Refused = offset_commit_response::OffsetCommitResponseTopic;
    fn name(&self) -> TopicName {
        self.name.clone()
    }
    fn id(&self) -> Uuid {
        self.topic_id
    }
    fn partitions(&self) -> Vec<i32> {
        self.partitions.iter().map(|p| p.partition_index).collect()
    }
    fn refused(d: &Denied, code: i16) -> Self::Refused {
        offset_commit_response::OffsetCommitResponseTopic::default()
            .with_name(d.name.clone())
            .with_topic_id(d.id)
            .with_partitions(
                d.partitions
                    .iter()
                    .map(|p| {
                        offset_commit_response::OffsetCommitResponsePartition::default()
                            .with_partition_index(*p)
                            .with_error_code(code)
                    })
                    .collect(),
            )
    }
    answer_list!(OffsetCommit, topics);
}
