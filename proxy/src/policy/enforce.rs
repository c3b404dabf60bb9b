//! Policy enforcement on decoded Kafka requests and responses (pure).
//!
//! The connection code calls [`Gate::check`] with every request it has
//! decoded (or [`Gate::check_key`] for one it forwards as bytes) and acts on
//! the [`Enforcement`]:
//! - `Forward(fixup)`: send the request upstream — it may have been trimmed
//!   of denied topics — and pass the decoded response through
//!   [`Fixup::apply`], which adds the per-topic/partition authorization
//!   errors for what was removed (and filters Metadata/OffsetFetch answers);
//! - `Respond(response)`: nothing is forwarded; send this response, encoded
//!   at the request's version with its correlation id;
//! - `NoResponse`: an `acks=0` Produce refused entirely: forward nothing,
//!   answer nothing (the client expects no answer);
//! - `Close`: an API the proxy does not know; Kafka brokers close the
//!   connection on such requests, and so does the sidecar.
//!
//! Error codes are the ones the Kafka protocol defines for each refusal:
//! TOPIC_AUTHORIZATION_FAILED (29) per topic/partition,
//! GROUP_AUTHORIZATION_FAILED (30) for group coordination,
//! CLUSTER_AUTHORIZATION_FAILED (31) for cluster-wide APIs and broker
//! config resources, TRANSACTIONAL_ID_AUTHORIZATION_FAILED (53) for
//! transaction coordination. The per-topic [`TopicDecision`]s are returned
//! too, for the audit trail and for just-in-time approval requests.
use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use streamgate_crds::Operation;
use streamgate_crds::matching::Principal;
use uuid::Uuid;

use super::apis::{ApiScope, api_scope, blocked_as};
use super::coordination::{self, Coordination};
use super::decide::{CompiledPolicy, DenyReason, PolicyDecision};

const TOPIC_AUTH: i16 = ResponseError::TopicAuthorizationFailed.code();
const GROUP_AUTH: i16 = ResponseError::GroupAuthorizationFailed.code();
const CLUSTER_AUTH: i16 = ResponseError::ClusterAuthorizationFailed.code();
const TXN_AUTH: i16 = ResponseError::TransactionalIdAuthorizationFailed.code();
const NOT_ATTEMPTED: i16 = ResponseError::OperationNotAttempted.code();
const UNKNOWN_TOPIC: i16 = ResponseError::UnknownTopicOrPartition.code();

/// Config resource types (DescribeConfigs / AlterConfigs).
const RESOURCE_TOPIC: i8 = 2;

/// Resolves topic ids (Fetch v13+, Produce v13+, OffsetCommit v10+, …) to names.
pub trait TopicNames {
    fn topic_name(&self, id: &Uuid) -> Option<String>;
}

impl TopicNames for HashMap<Uuid, String> {
    fn topic_name(&self, id: &Uuid) -> Option<String> {
        self.get(id).cloned()
    }
}

/// One per-topic decision made while checking a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDecision {
    pub topic: String,
    pub operation: Operation,
    pub decision: PolicyDecision,
}

/// What the connection code does with a request.
#[derive(Debug)]
pub enum Enforcement {
    Forward(Fixup),
    Respond(ResponseKind),
    NoResponse,
    Close(DenyReason),
}

/// The result of a check: the enforcement and every decision behind it.
#[derive(Debug)]
pub struct Checked {
    pub enforcement: Enforcement,
    pub decisions: Vec<TopicDecision>,
}

/// A refused topic and the partitions the request named for it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Denied {
    name: TopicName,
    id: Uuid,
    partitions: Vec<i32>,
}

/// A refused config resource.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DeniedResource {
    resource_type: i8,
    name: StrBytes,
    code: i16,
}

/// Work to do on the response of a forwarded request.
#[derive(Clone, Debug, Default)]
pub struct Fixup(FixupKind);

#[derive(Clone, Debug, Default)]
enum FixupKind {
    #[default]
    Nothing,
    Produce(Vec<Denied>),
    Fetch(Vec<Denied>),
    ListOffsets(Vec<Denied>),
    OffsetCommit(Vec<Denied>),
    TxnOffsetCommit(Vec<Denied>),
    DeleteRecords(Vec<Denied>),
    CreateTopics(Vec<Denied>),
    DeleteTopics(Vec<Denied>),
    CreatePartitions(Vec<Denied>),
    DescribeProducers(Vec<Denied>),
    OffsetForLeaderEpoch(Vec<Denied>),
    DescribeTopicPartitions(Vec<Denied>),
    DescribeConfigs(Vec<DeniedResource>),
    AlterConfigs(Vec<DeniedResource>),
    IncrementalAlterConfigs(Vec<DeniedResource>),
    /// Explicitly requested topics that were removed; the rest is filtered.
    /// With `Some(asked)`, a Metadata v0–v3 request for named topics was
    /// sent upstream as "all topics" (those versions cannot say "do not
    /// auto-create"): the answer is cut back to `asked`, and an asked topic
    /// the broker does not have is answered UNKNOWN_TOPIC_OR_PARTITION.
    Metadata(Vec<Denied>, Option<Vec<TopicName>>),
    /// Names the request asked for explicitly (others are filtered silently).
    OffsetFetch(HashSet<String>),
    /// Groups removed from the request, answered GROUP_AUTHORIZATION_FAILED.
    DescribeGroups(Vec<GroupId>),
    /// The answer keeps only groups the caller may use.
    ListGroups,
}

impl Fixup {
    /// Nothing to change in the response.
    pub fn is_nothing(&self) -> bool {
        matches!(self.0, FixupKind::Nothing)
    }

    /// Must the response be decoded and rewritten? (Refusals to merge in, or
    /// Metadata/OffsetFetch answers to filter.)
    pub fn needs_response_work(&self) -> bool {
        match &self.0 {
            FixupKind::Metadata(..)
            | FixupKind::OffsetFetch(_)
            | FixupKind::DescribeTopicPartitions(_)
            | FixupKind::Fetch(_)
            | FixupKind::ListGroups => true,
            FixupKind::DescribeGroups(refused) => !refused.is_empty(),
            FixupKind::Nothing => false,
            _ => !self.refused_topics().is_empty(),
        }
    }

    /// Was the request trimmed (or, for Metadata, possibly changed) so that
    /// it must be re-encoded before forwarding? Otherwise the original
    /// frame can go upstream as it came.
    pub fn request_changed(&self) -> bool {
        match &self.0 {
            FixupKind::Metadata(..) | FixupKind::Fetch(_) => true,
            FixupKind::DescribeGroups(refused) => !refused.is_empty(),
            FixupKind::Nothing | FixupKind::OffsetFetch(_) | FixupKind::ListGroups => false,
            _ => !self.refused_topics().is_empty(),
        }
    }
}

fn denied_names(d: &[Denied]) -> Vec<String> {
    d.iter().map(|t| t.name.0.to_string()).collect()
}

/// The policy in force, for one caller.
pub struct Gate<'a> {
    pub policy: &'a CompiledPolicy,
    pub principal: &'a Principal,
    pub topic_names: &'a dyn TopicNames,
}

impl std::fmt::Debug for Gate<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

/// Collects decisions while a request is checked.
struct Ctx<'g, 'a> {
    gate: &'g Gate<'a>,
    decisions: Vec<TopicDecision>,
}

impl Ctx<'_, '_> {
    /// Decide one topic (by name, or by id when the name is empty).
    fn allow(&mut self, op: Operation, name: &TopicName, id: &Uuid) -> bool {
        let topic = if name.0.is_empty() && !id.is_nil() {
            match self.gate.topic_names.topic_name(id) {
                Some(n) => n,
                None => {
                    // An id we cannot name cannot be matched against a rule.
                    self.decisions.push(TopicDecision {
                        topic: id.to_string(),
                        operation: op,
                        decision: PolicyDecision::Deny {
                            reason: DenyReason::NoMatchingRule,
                            policy: None,
                            rule: None,
                        },
                    });
                    return false;
                }
            }
        } else {
            name.0.to_string()
        };
        let decision = self.gate.policy.decide(self.gate.principal, op, &topic);
        let ok = decision.is_allow();
        self.decisions.push(TopicDecision {
            topic,
            operation: op,
            decision,
        });
        ok
    }

    fn done(self, enforcement: Enforcement) -> Checked {
        Checked {
            enforcement,
            decisions: self.decisions,
        }
    }
}

/// Move the entries of `items` that `keep` refuses into the returned list.
fn split<T>(items: &mut Vec<T>, mut keep: impl FnMut(&T) -> bool) -> Vec<T> {
    let (kept, refused): (Vec<T>, Vec<T>) =
        std::mem::take(items).into_iter().partition(|t| keep(t));
    *items = kept;
    refused
}

impl Gate<'_> {
    /// May the caller do `op` on `topic` now? (The response filters' one question.)
    fn may(&self, op: Operation, topic: &str) -> bool {
        self.policy.decide(self.principal, op, topic).is_allow()
    }

    /// The enforcement for a request forwarded without decoding (by API key
    /// only). APIs that need their topics checked are refused here unless
    /// decoded: use [`needs_decoding`] to know which.
    pub fn check_key(&self, api_key: i16) -> Checked {
        let ctx = Ctx {
            gate: self,
            decisions: Vec::new(),
        };
        if let Some(refusal) = self.key_refusal(api_key) {
            return ctx.done(refusal);
        }
        match api_scope(api_key) {
            ApiScope::Always => ctx.done(Enforcement::Forward(Fixup::default())),
            ApiScope::Group if self.policy.may_any(self.principal, Operation::Read) => {
                ctx.done(Enforcement::Forward(Fixup::default()))
            }
            ApiScope::Transaction if self.policy.may_any(self.principal, Operation::Write) => {
                ctx.done(Enforcement::Forward(Fixup::default()))
            }
            ApiScope::Cluster(op) if self.policy.decide_cluster(self.principal, op).is_allow() => {
                ctx.done(Enforcement::Forward(Fixup::default()))
            }
            ApiScope::Unknown => ctx.done(Enforcement::Close(DenyReason::UnknownApi)),
            ApiScope::Refused(reason) => ctx.done(Enforcement::Close(reason)),
            // Topic APIs cannot be judged without their topics; refusals that
            // need no request data are answered, the rest close.
            _ => {
                let code = match api_scope(api_key) {
                    ApiScope::Group => GROUP_AUTH,
                    ApiScope::Transaction => TXN_AUTH,
                    _ => CLUSTER_AUTH,
                };
                match ApiKey::try_from(api_key)
                    .ok()
                    .and_then(|k| top_level_error(k, code))
                {
                    Some(resp) => ctx.done(Enforcement::Respond(resp)),
                    None => ctx.done(Enforcement::Close(DenyReason::NoMatchingRule)),
                }
            }
        }
    }

    /// Unknown or blocked APIs, before anything else.
    fn key_refusal(&self, api_key: i16) -> Option<Enforcement> {
        match api_scope(api_key) {
            ApiScope::Unknown => return Some(Enforcement::Close(DenyReason::UnknownApi)),
            ApiScope::Refused(reason) => return Some(Enforcement::Close(reason)),
            _ => {}
        }
        let key = ApiKey::try_from(api_key).ok()?;
        if !self.is_blocked(key) {
            return None;
        }
        Some(match top_level_error(key, CLUSTER_AUTH) {
            Some(r) => Enforcement::Respond(r),
            None => Enforcement::Close(DenyReason::Blocked),
        })
    }

    fn is_blocked(&self, api_key: ApiKey) -> bool {
        blocked_as(api_key as i16).is_some_and(|b| self.policy.blocked(b))
    }

    /// Check a decoded request (it may be trimmed in place).
    pub fn check(&self, api_key: ApiKey, version: i16, request: &mut RequestKind) -> Checked {
        let mut ctx = Ctx {
            gate: self,
            decisions: Vec::new(),
        };
        let blocked = self.is_blocked(api_key);
        // Cluster-wide admin APIs: refused when blocked or not allowed Admin on
        // the cluster (evaluated only for the APIs that ask).
        let admin_refused = || {
            blocked
                || !self
                    .policy
                    .decide_cluster(self.principal, Operation::Admin)
                    .is_allow()
        };
        // Groups and transactional ids first: a request naming one the
        // caller may not use is refused whole (DescribeGroups and ListGroups
        // are filtered instead, below).
        if !matches!(request, RequestKind::DescribeGroups(_)) {
            let named = coordination::named(request);
            if let Some((kind, id)) =
                coordination::first_refused(self.policy, self.principal, &named)
            {
                tracing::debug!(?kind, id, api = ?api_key, "coordination id refused");
                return ctx.done(coordination_refusal(self, api_key, version, request, kind));
            }
        }
        let enforcement = match request {
            RequestKind::Produce(req) => check_produce(&mut ctx, req),
            RequestKind::Fetch(req) => {
                // KIP-227 fetch sessions would let the broker keep sending a
                // partition the request no longer lists (after a grant
                // expired or a rule was deleted), and a session id is not
                // tied to the caller. Every fetch goes upstream sessionless
                // and full: the broker answers with session id 0, so the
                // client never sends an incremental fetch, and each request
                // lists — and is checked for — every partition it reads.
                req.session_id = 0;
                req.session_epoch = -1;
                req.forgotten_topics_data.clear();
                let denied = split_topics(&mut req.topics, |t| {
                    let ok = ctx.allow(Operation::Read, &t.topic, &t.topic_id);
                    (
                        ok,
                        Denied {
                            name: t.topic.clone(),
                            id: t.topic_id,
                            partitions: t.partitions.iter().map(|p| p.partition).collect(),
                        },
                    )
                });
                forward_or_local(
                    req.topics.is_empty() && !denied.is_empty(),
                    FixupKind::Fetch(denied),
                    ResponseKind::Fetch(FetchResponse::default()),
                )
            }
            RequestKind::ListOffsets(req) => {
                let denied = split_topics(&mut req.topics, |t| {
                    let ok = ctx.allow(Operation::Describe, &t.name, &Uuid::nil());
                    (
                        ok,
                        Denied {
                            name: t.name.clone(),
                            id: Uuid::nil(),
                            partitions: t.partitions.iter().map(|p| p.partition_index).collect(),
                        },
                    )
                });
                forward_or_local(
                    req.topics.is_empty() && !denied.is_empty(),
                    FixupKind::ListOffsets(denied),
                    ResponseKind::ListOffsets(ListOffsetsResponse::default()),
                )
            }
            RequestKind::Metadata(req) => check_metadata(&mut ctx, version, req),
            RequestKind::OffsetForLeaderEpoch(req) => {
                let denied = split_topics(&mut req.topics, |t| {
                    let ok = ctx.allow(Operation::Describe, &t.topic, &Uuid::nil());
                    (
                        ok,
                        Denied {
                            name: t.topic.clone(),
                            id: Uuid::nil(),
                            partitions: t.partitions.iter().map(|p| p.partition).collect(),
                        },
                    )
                });
                forward_or_local(
                    req.topics.is_empty() && !denied.is_empty(),
                    FixupKind::OffsetForLeaderEpoch(denied),
                    ResponseKind::OffsetForLeaderEpoch(OffsetForLeaderEpochResponse::default()),
                )
            }
            RequestKind::DescribeTopicPartitions(req) => {
                let denied = split_topics(&mut req.topics, |t| {
                    let ok = ctx.allow(Operation::Describe, &t.name, &Uuid::nil());
                    (
                        ok,
                        Denied {
                            name: t.name.clone(),
                            id: Uuid::nil(),
                            partitions: vec![],
                        },
                    )
                });
                forward_or_local(
                    req.topics.is_empty() && !denied.is_empty(),
                    FixupKind::DescribeTopicPartitions(denied),
                    ResponseKind::DescribeTopicPartitions(
                        DescribeTopicPartitionsResponse::default(),
                    ),
                )
            }
            RequestKind::OffsetCommit(req) => {
                if !self.policy.may_any(self.principal, Operation::Read) {
                    let all = split_topics(&mut req.topics, |t| {
                        (
                            false,
                            Denied {
                                name: t.name.clone(),
                                id: t.topic_id,
                                partitions: t
                                    .partitions
                                    .iter()
                                    .map(|p| p.partition_index)
                                    .collect(),
                            },
                        )
                    });
                    let mut resp = ResponseKind::OffsetCommit(OffsetCommitResponse::default());
                    Fixup(FixupKind::OffsetCommit(all))
                        .apply_with_code(self, &mut resp, GROUP_AUTH);
                    Enforcement::Respond(resp)
                } else {
                    let denied = split_topics(&mut req.topics, |t| {
                        let ok = ctx.allow(Operation::Read, &t.name, &t.topic_id);
                        (
                            ok,
                            Denied {
                                name: t.name.clone(),
                                id: t.topic_id,
                                partitions: t
                                    .partitions
                                    .iter()
                                    .map(|p| p.partition_index)
                                    .collect(),
                            },
                        )
                    });
                    forward_or_local(
                        req.topics.is_empty() && !denied.is_empty(),
                        FixupKind::OffsetCommit(denied),
                        ResponseKind::OffsetCommit(OffsetCommitResponse::default()),
                    )
                }
            }
            RequestKind::OffsetFetch(req) => {
                if !self.policy.may_any(self.principal, Operation::Read) {
                    Enforcement::Respond(offset_fetch_group_refusal(version, req))
                } else {
                    let mut requested = HashSet::new();
                    for t in req.topics.iter().flatten() {
                        requested.insert(t.name.0.to_string());
                    }
                    for g in &req.groups {
                        for t in g.topics.iter().flatten() {
                            requested.insert(t.name.0.to_string());
                        }
                    }
                    Enforcement::Forward(Fixup(FixupKind::OffsetFetch(requested)))
                }
            }
            RequestKind::TxnOffsetCommit(req) => {
                if !self.policy.may_any(self.principal, Operation::Write) {
                    let all = split_topics(&mut req.topics, |t| {
                        (
                            false,
                            Denied {
                                name: t.name.clone(),
                                id: Uuid::nil(),
                                partitions: t
                                    .partitions
                                    .iter()
                                    .map(|p| p.partition_index)
                                    .collect(),
                            },
                        )
                    });
                    let mut resp =
                        ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default());
                    Fixup(FixupKind::TxnOffsetCommit(all))
                        .apply_with_code(self, &mut resp, TXN_AUTH);
                    Enforcement::Respond(resp)
                } else {
                    let denied = split_topics(&mut req.topics, |t| {
                        let ok = ctx.allow(Operation::Read, &t.name, &Uuid::nil());
                        (
                            ok,
                            Denied {
                                name: t.name.clone(),
                                id: Uuid::nil(),
                                partitions: t
                                    .partitions
                                    .iter()
                                    .map(|p| p.partition_index)
                                    .collect(),
                            },
                        )
                    });
                    forward_or_local(
                        req.topics.is_empty() && !denied.is_empty(),
                        FixupKind::TxnOffsetCommit(denied),
                        ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default()),
                    )
                }
            }
            RequestKind::AddPartitionsToTxn(req) => check_add_partitions_to_txn(&mut ctx, req),
            RequestKind::DeleteRecords(req) => {
                let denied = split_topics(&mut req.topics, |t| {
                    let ok = !blocked && ctx.allow(Operation::Admin, &t.name, &Uuid::nil());
                    (
                        ok,
                        Denied {
                            name: t.name.clone(),
                            id: Uuid::nil(),
                            partitions: t.partitions.iter().map(|p| p.partition_index).collect(),
                        },
                    )
                });
                forward_or_local(
                    req.topics.is_empty() && !denied.is_empty(),
                    FixupKind::DeleteRecords(denied),
                    ResponseKind::DeleteRecords(DeleteRecordsResponse::default()),
                )
            }
            RequestKind::CreateTopics(req) => {
                let denied = split_topics(&mut req.topics, |t| {
                    let ok = !blocked && ctx.allow(Operation::Create, &t.name, &Uuid::nil());
                    (
                        ok,
                        Denied {
                            name: t.name.clone(),
                            id: Uuid::nil(),
                            partitions: vec![],
                        },
                    )
                });
                forward_or_local(
                    req.topics.is_empty() && !denied.is_empty(),
                    FixupKind::CreateTopics(denied),
                    ResponseKind::CreateTopics(CreateTopicsResponse::default()),
                )
            }
            RequestKind::CreatePartitions(req) => {
                let denied = split_topics(&mut req.topics, |t| {
                    let ok = !blocked && ctx.allow(Operation::Create, &t.name, &Uuid::nil());
                    (
                        ok,
                        Denied {
                            name: t.name.clone(),
                            id: Uuid::nil(),
                            partitions: vec![],
                        },
                    )
                });
                forward_or_local(
                    req.topics.is_empty() && !denied.is_empty(),
                    FixupKind::CreatePartitions(denied),
                    ResponseKind::CreatePartitions(CreatePartitionsResponse::default()),
                )
            }
            RequestKind::DeleteTopics(req) => {
                let mut denied = split_topics(&mut req.topic_names, |name| {
                    let ok = !blocked && ctx.allow(Operation::Admin, name, &Uuid::nil());
                    (
                        ok,
                        Denied {
                            name: name.clone(),
                            id: Uuid::nil(),
                            partitions: vec![],
                        },
                    )
                });
                denied.extend(split_topics(&mut req.topics, |t| {
                    let name = t.name.clone().unwrap_or_default();
                    let ok = !blocked && ctx.allow(Operation::Admin, &name, &t.topic_id);
                    (
                        ok,
                        Denied {
                            name,
                            id: t.topic_id,
                            partitions: vec![],
                        },
                    )
                }));
                let empty = req.topics.is_empty() && req.topic_names.is_empty();
                forward_or_local(
                    empty && !denied.is_empty(),
                    FixupKind::DeleteTopics(denied),
                    ResponseKind::DeleteTopics(DeleteTopicsResponse::default()),
                )
            }
            RequestKind::DescribeProducers(req) => {
                let denied = split_topics(&mut req.topics, |t| {
                    let ok = ctx.allow(Operation::Describe, &t.name, &Uuid::nil());
                    (
                        ok,
                        Denied {
                            name: t.name.clone(),
                            id: Uuid::nil(),
                            partitions: t.partition_indexes.clone(),
                        },
                    )
                });
                forward_or_local(
                    req.topics.is_empty() && !denied.is_empty(),
                    FixupKind::DescribeProducers(denied),
                    ResponseKind::DescribeProducers(DescribeProducersResponse::default()),
                )
            }
            RequestKind::DescribeConfigs(req) => {
                let denied = split_resources(
                    &mut ctx,
                    &mut req.resources,
                    Operation::Describe,
                    false,
                    |r| (r.resource_type, &r.resource_name),
                );
                forward_or_local(
                    req.resources.is_empty() && !denied.is_empty(),
                    FixupKind::DescribeConfigs(denied),
                    ResponseKind::DescribeConfigs(DescribeConfigsResponse::default()),
                )
            }
            RequestKind::AlterConfigs(req) => {
                let denied = split_resources(
                    &mut ctx,
                    &mut req.resources,
                    Operation::Admin,
                    blocked,
                    |r| (r.resource_type, &r.resource_name),
                );
                forward_or_local(
                    req.resources.is_empty() && !denied.is_empty(),
                    FixupKind::AlterConfigs(denied),
                    ResponseKind::AlterConfigs(AlterConfigsResponse::default()),
                )
            }
            RequestKind::IncrementalAlterConfigs(req) => {
                let denied = split_resources(
                    &mut ctx,
                    &mut req.resources,
                    Operation::Admin,
                    blocked,
                    |r| (r.resource_type, &r.resource_name),
                );
                forward_or_local(
                    req.resources.is_empty() && !denied.is_empty(),
                    FixupKind::IncrementalAlterConfigs(denied),
                    ResponseKind::IncrementalAlterConfigs(
                        IncrementalAlterConfigsResponse::default(),
                    ),
                )
            }
            RequestKind::FindCoordinator(req) => {
                // key_type 1 = transactional id; 0 = group, 2 = share group.
                let (op, code) = if req.key_type == 1 {
                    (Operation::Write, TXN_AUTH)
                } else {
                    (Operation::Read, GROUP_AUTH)
                };
                if self.policy.may_any(self.principal, op) {
                    Enforcement::Forward(Fixup::default())
                } else {
                    Enforcement::Respond(find_coordinator_refusal(version, req, code))
                }
            }
            RequestKind::InitProducerId(req) => {
                if self.policy.may_any(self.principal, Operation::Write) {
                    Enforcement::Forward(Fixup::default())
                } else {
                    // Idempotent producers without a transactional id need cluster rights in Kafka.
                    let code = if req.transactional_id.is_some() {
                        TXN_AUTH
                    } else {
                        CLUSTER_AUTH
                    };
                    Enforcement::Respond(ResponseKind::InitProducerId(
                        InitProducerIdResponse::default()
                            .with_error_code(code)
                            .with_producer_id((-1).into())
                            .with_producer_epoch(-1),
                    ))
                }
            }
            RequestKind::DescribeGroups(req) => {
                if self.policy.may_any(self.principal, Operation::Read) {
                    let refused = split(&mut req.groups, |g| {
                        self.policy.may_use(self.principal, Coordination::Group, g)
                    });
                    forward_or_local(
                        req.groups.is_empty() && !refused.is_empty(),
                        FixupKind::DescribeGroups(refused),
                        ResponseKind::DescribeGroups(DescribeGroupsResponse::default()),
                    )
                } else {
                    let groups = req
                        .groups
                        .iter()
                        .map(|g| {
                            describe_groups_response::DescribedGroup::default()
                                .with_group_id(g.clone())
                                .with_error_code(GROUP_AUTH)
                        })
                        .collect();
                    Enforcement::Respond(ResponseKind::DescribeGroups(
                        DescribeGroupsResponse::default().with_groups(groups),
                    ))
                }
            }
            RequestKind::ListGroups(_) => {
                if self.policy.may_any(self.principal, Operation::Read) {
                    Enforcement::Forward(Fixup(FixupKind::ListGroups))
                } else {
                    match top_level_error(api_key, GROUP_AUTH) {
                        Some(r) => Enforcement::Respond(r),
                        None => Enforcement::Close(DenyReason::NoMatchingRule),
                    }
                }
            }
            RequestKind::ConsumerGroupDescribe(req) => {
                if self.policy.may_any(self.principal, Operation::Read) {
                    Enforcement::Forward(Fixup::default())
                } else {
                    let groups = req
                        .group_ids
                        .iter()
                        .map(|g| {
                            consumer_group_describe_response::DescribedGroup::default()
                                .with_group_id(g.clone())
                                .with_error_code(GROUP_AUTH)
                        })
                        .collect();
                    Enforcement::Respond(ResponseKind::ConsumerGroupDescribe(
                        ConsumerGroupDescribeResponse::default().with_groups(groups),
                    ))
                }
            }
            RequestKind::DeleteGroups(req) => {
                if !admin_refused() {
                    Enforcement::Forward(Fixup::default())
                } else {
                    let results = req
                        .groups_names
                        .iter()
                        .map(|g| {
                            delete_groups_response::DeletableGroupResult::default()
                                .with_group_id(g.clone())
                                .with_error_code(GROUP_AUTH)
                        })
                        .collect();
                    Enforcement::Respond(ResponseKind::DeleteGroups(
                        DeleteGroupsResponse::default().with_results(results),
                    ))
                }
            }
            RequestKind::CreateAcls(req) if admin_refused() => {
                let results = req
                    .creations
                    .iter()
                    .map(|_| {
                        create_acls_response::AclCreationResult::default()
                            .with_error_code(CLUSTER_AUTH)
                    })
                    .collect();
                Enforcement::Respond(ResponseKind::CreateAcls(
                    CreateAclsResponse::default().with_results(results),
                ))
            }
            RequestKind::DeleteAcls(req) if admin_refused() => {
                let results = req
                    .filters
                    .iter()
                    .map(|_| {
                        delete_acls_response::DeleteAclsFilterResult::default()
                            .with_error_code(CLUSTER_AUTH)
                    })
                    .collect();
                Enforcement::Respond(ResponseKind::DeleteAcls(
                    DeleteAclsResponse::default().with_filter_results(results),
                ))
            }
            RequestKind::AlterUserScramCredentials(req) if admin_refused() => {
                let users = req
                    .deletions
                    .iter()
                    .map(|d| d.name.clone())
                    .chain(req.upsertions.iter().map(|u| u.name.clone()));
                let results = users.map(|u| alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default().with_user(u).with_error_code(CLUSTER_AUTH)).collect();
                Enforcement::Respond(ResponseKind::AlterUserScramCredentials(
                    AlterUserScramCredentialsResponse::default().with_results(results),
                ))
            }
            RequestKind::AlterClientQuotas(req) if admin_refused() => {
                let entries = req
                    .entries
                    .iter()
                    .map(|e| {
                        let entity = e
                            .entity
                            .iter()
                            .map(|x| {
                                alter_client_quotas_response::EntityData::default()
                                    .with_entity_type(x.entity_type.clone())
                                    .with_entity_name(x.entity_name.clone())
                            })
                            .collect();
                        alter_client_quotas_response::EntryData::default()
                            .with_entity(entity)
                            .with_error_code(CLUSTER_AUTH)
                    })
                    .collect();
                Enforcement::Respond(ResponseKind::AlterClientQuotas(
                    AlterClientQuotasResponse::default().with_entries(entries),
                ))
            }
            // Everything else is judged by its API key alone.
            _ => {
                if blocked {
                    match top_level_error(api_key, CLUSTER_AUTH) {
                        Some(r) => Enforcement::Respond(r),
                        None => Enforcement::Close(DenyReason::Blocked),
                    }
                } else {
                    return self.check_key(api_key as i16);
                }
            }
        };
        ctx.done(enforcement)
    }
}

/// Split entries of a topic list; `judge` returns (allowed, what to remember if not).
fn split_topics<T>(items: &mut Vec<T>, mut judge: impl FnMut(&T) -> (bool, Denied)) -> Vec<Denied> {
    let mut denied = Vec::new();
    let refused = split(items, |t| {
        let (ok, d) = judge(t);
        if !ok {
            denied.push(d);
        }
        ok
    });
    drop(refused);
    denied
}

fn split_resources<T>(
    ctx: &mut Ctx<'_, '_>,
    items: &mut Vec<T>,
    op: Operation,
    blocked: bool,
    key: impl Fn(&T) -> (i8, &StrBytes),
) -> Vec<DeniedResource> {
    let mut denied = Vec::new();
    let gate = ctx.gate;
    split(items, |r| {
        let (resource_type, name) = key(r);
        let (ok, code) = if resource_type == RESOURCE_TOPIC {
            (
                !blocked && ctx.allow(op, &TopicName(name.clone()), &Uuid::nil()),
                TOPIC_AUTH,
            )
        } else {
            (
                !blocked && gate.policy.decide_cluster(gate.principal, op).is_allow(),
                CLUSTER_AUTH,
            )
        };
        if !ok {
            denied.push(DeniedResource {
                resource_type,
                name: name.clone(),
                code,
            });
        }
        ok
    });
    denied
}

/// Forward with a fixup, or — when the request has nothing left — answer
/// locally with the fixup applied to an empty response.
/// The answer to a request naming a group or transactional id the caller
/// may not use: the API's own authorization error, where the protocol puts it.
fn coordination_refusal(
    gate: &Gate<'_>,
    api_key: ApiKey,
    version: i16,
    request: &mut RequestKind,
    kind: Coordination,
) -> Enforcement {
    let code = match kind {
        Coordination::Group => GROUP_AUTH,
        Coordination::TransactionalId => TXN_AUTH,
    };
    let every = |items: &mut Vec<Denied>| std::mem::take(items);
    let resp = match request {
        RequestKind::FindCoordinator(req) => find_coordinator_refusal(version, req, code),
        RequestKind::OffsetFetch(req) => offset_fetch_group_refusal(version, req),
        RequestKind::OffsetCommit(req) => {
            let mut all: Vec<Denied> = req
                .topics
                .iter()
                .map(|t| Denied {
                    name: t.name.clone(),
                    id: t.topic_id,
                    partitions: t.partitions.iter().map(|p| p.partition_index).collect(),
                })
                .collect();
            let mut resp = ResponseKind::OffsetCommit(OffsetCommitResponse::default());
            Fixup(FixupKind::OffsetCommit(every(&mut all))).apply_with_code(gate, &mut resp, code);
            resp
        }
        RequestKind::TxnOffsetCommit(req) => {
            let mut all: Vec<Denied> = req
                .topics
                .iter()
                .map(|t| Denied {
                    name: t.name.clone(),
                    id: Uuid::nil(),
                    partitions: t.partitions.iter().map(|p| p.partition_index).collect(),
                })
                .collect();
            let mut resp = ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default());
            Fixup(FixupKind::TxnOffsetCommit(every(&mut all)))
                .apply_with_code(gate, &mut resp, code);
            resp
        }
        RequestKind::Produce(req) => {
            if req.acks == 0 {
                return Enforcement::NoResponse;
            }
            let mut all: Vec<Denied> = req
                .topic_data
                .iter()
                .map(|t| Denied {
                    name: t.name.clone(),
                    id: t.topic_id,
                    partitions: t.partition_data.iter().map(|p| p.index).collect(),
                })
                .collect();
            let mut resp = ResponseKind::Produce(ProduceResponse::default());
            Fixup(FixupKind::Produce(every(&mut all))).apply_with_code(gate, &mut resp, code);
            resp
        }
        RequestKind::DeleteGroups(req) => ResponseKind::DeleteGroups(
            DeleteGroupsResponse::default().with_results(
                req.groups_names
                    .iter()
                    .map(|g| {
                        delete_groups_response::DeletableGroupResult::default()
                            .with_group_id(g.clone())
                            .with_error_code(code)
                    })
                    .collect(),
            ),
        ),
        RequestKind::ConsumerGroupDescribe(req) => ResponseKind::ConsumerGroupDescribe(
            ConsumerGroupDescribeResponse::default().with_groups(
                req.group_ids
                    .iter()
                    .map(|g| {
                        consumer_group_describe_response::DescribedGroup::default()
                            .with_group_id(g.clone())
                            .with_error_code(code)
                    })
                    .collect(),
            ),
        ),
        RequestKind::AddPartitionsToTxn(req) => {
            let results = |topics: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic]| {
                topics
                    .iter()
                    .map(|t| {
                        add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default()
                            .with_name(t.name.clone())
                            .with_results_by_partition(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default()
                                            .with_partition_index(*p)
                                            .with_partition_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect()
            };
            ResponseKind::AddPartitionsToTxn(
                AddPartitionsToTxnResponse::default()
                    .with_error_code(if version >= 4 { code } else { 0 })
                    .with_results_by_topic_v3_and_below(results(&req.v3_and_below_topics))
                    .with_results_by_transaction(
                        req.transactions
                            .iter()
                            .map(|t| {
                                add_partitions_to_txn_response::AddPartitionsToTxnResult::default()
                                    .with_transactional_id(t.transactional_id.clone())
                                    .with_topic_results(results(&t.topics))
                            })
                            .collect(),
                    ),
            )
        }
        _ => match top_level_error(api_key, code) {
            Some(resp) => resp,
            None => return Enforcement::Close(DenyReason::NoMatchingRule),
        },
    };
    Enforcement::Respond(resp)
}

fn forward_or_local(nothing_left: bool, kind: FixupKind, empty: ResponseKind) -> Enforcement {
    let fixup = Fixup(kind);
    if nothing_left {
        let mut resp = empty;
        fixup.apply_pure(&mut resp, None);
        Enforcement::Respond(resp)
    } else {
        Enforcement::Forward(fixup)
    }
}

fn check_produce(ctx: &mut Ctx<'_, '_>, req: &mut ProduceRequest) -> Enforcement {
    if req.transactional_id.is_some()
        && !ctx
            .gate
            .policy
            .may_any(ctx.gate.principal, Operation::Write)
    {
        let all = split_topics(&mut req.topic_data, |t| {
            (
                false,
                Denied {
                    name: t.name.clone(),
                    id: t.topic_id,
                    partitions: t.partition_data.iter().map(|p| p.index).collect(),
                },
            )
        });
        if req.acks == 0 {
            return Enforcement::NoResponse;
        }
        let mut resp = ResponseKind::Produce(ProduceResponse::default());
        Fixup(FixupKind::Produce(all)).apply_pure(&mut resp, Some(TXN_AUTH));
        return Enforcement::Respond(resp);
    }
    let denied = split_topics(&mut req.topic_data, |t| {
        let ok = ctx.allow(Operation::Write, &t.name, &t.topic_id);
        (
            ok,
            Denied {
                name: t.name.clone(),
                id: t.topic_id,
                partitions: t.partition_data.iter().map(|p| p.index).collect(),
            },
        )
    });
    if req.topic_data.is_empty() && !denied.is_empty() {
        if req.acks == 0 {
            return Enforcement::NoResponse;
        }
        let mut resp = ResponseKind::Produce(ProduceResponse::default());
        Fixup(FixupKind::Produce(denied)).apply_pure(&mut resp, None);
        return Enforcement::Respond(resp);
    }
    Enforcement::Forward(Fixup(FixupKind::Produce(denied)))
}

/// Metadata: refused named topics are removed upstream (so they cannot be
/// auto-created) and answered with TOPIC_AUTHORIZATION_FAILED; the response
/// filter in [`Fixup::apply`] hides every other topic the caller may not
/// describe — also for "all topics" requests (null list, or empty at v0).
fn check_metadata(ctx: &mut Ctx<'_, '_>, version: i16, req: &mut MetadataRequest) -> Enforcement {
    let mut denied = Vec::new();
    let mut all_creatable = true;
    if let Some(topics) = req.topics.as_mut() {
        denied = split_topics(topics, |t| {
            let name = t.name.clone().unwrap_or_default();
            let ok = ctx.allow(Operation::Describe, &name, &t.topic_id);
            (
                ok,
                Denied {
                    name,
                    id: t.topic_id,
                    partitions: vec![],
                },
            )
        });
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
    Enforcement::Forward(Fixup(FixupKind::Metadata(denied, asked)))
}

/// A topic of AddPartitionsToTxn: name, partitions, allowed.
type Judged = (TopicName, Vec<i32>, bool);

fn check_add_partitions_to_txn(
    ctx: &mut Ctx<'_, '_>,
    req: &mut AddPartitionsToTxnRequest,
) -> Enforcement {
    let may_write = ctx
        .gate
        .policy
        .may_any(ctx.gate.principal, Operation::Write);
    let mut any_denied = false;
    let mut judge = |topics: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic]| -> Vec<(TopicName, Vec<i32>, bool)> {
        topics
            .iter()
            .map(|t| {
                let ok = may_write && ctx.allow(Operation::Write, &t.name, &Uuid::nil());
                any_denied |= !ok;
                (t.name.clone(), t.partitions.clone(), ok)
            })
            .collect()
    };
    let v3 = judge(&req.v3_and_below_topics);
    let per_txn: Vec<(TransactionalId, Vec<Judged>)> = req
        .transactions
        .iter()
        .map(|t| (t.transactional_id.clone(), judge(&t.topics)))
        .collect();
    if !any_denied {
        return Enforcement::Forward(Fixup::default());
    }
    // Like Kafka: the whole request fails; refused partitions carry the
    // authorization error, the others OPERATION_NOT_ATTEMPTED.
    let results = |topics: Vec<(TopicName, Vec<i32>, bool)>| -> Vec<add_partitions_to_txn_response::AddPartitionsToTxnTopicResult> {
        topics
            .into_iter()
            .map(|(name, parts, ok)| {
                let code = if !may_write { TXN_AUTH } else if ok { NOT_ATTEMPTED } else { TOPIC_AUTH };
                add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default().with_name(name).with_results_by_partition(
                    parts
                        .into_iter()
                        .map(|p| add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default().with_partition_index(p).with_partition_error_code(code))
                        .collect(),
                )
            })
            .collect()
    };
    let resp = AddPartitionsToTxnResponse::default()
        .with_results_by_topic_v3_and_below(results(v3))
        .with_results_by_transaction(
            per_txn
                .into_iter()
                .map(|(id, topics)| {
                    add_partitions_to_txn_response::AddPartitionsToTxnResult::default()
                        .with_transactional_id(id)
                        .with_topic_results(results(topics))
                })
                .collect(),
        );
    Enforcement::Respond(ResponseKind::AddPartitionsToTxn(resp))
}

/// v0–3 answer one key at the top level; v4+ answer a list of keys.
fn find_coordinator_refusal(version: i16, req: &FindCoordinatorRequest, code: i16) -> ResponseKind {
    let msg = Some(StrBytes::from_static_str("refused by streamgate policy"));
    let coordinators = req
        .coordinator_keys
        .iter()
        .map(|k| {
            find_coordinator_response::Coordinator::default()
                .with_key(k.clone())
                .with_node_id((-1).into())
                .with_port(-1)
                .with_error_code(code)
                .with_error_message(msg.clone())
        })
        .collect();
    let resp = if version >= 4 {
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        FindCoordinatorResponse::default()
            .with_error_code(code)
            .with_error_message(msg)
            .with_node_id((-1).into())
            .with_port(-1)
    };
    ResponseKind::FindCoordinator(resp)
}

/// v8+ answer per group; v2–7 carry a top-level error; v0–1 only per partition.
fn offset_fetch_group_refusal(version: i16, req: &OffsetFetchRequest) -> ResponseKind {
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

/// A response carrying only a top-level error, for APIs refused by key.
pub fn top_level_error(api_key: ApiKey, code: i16) -> Option<ResponseKind> {
    use ApiKey as K;
    Some(match api_key {
        K::JoinGroup => ResponseKind::JoinGroup(
            JoinGroupResponse::default()
                .with_error_code(code)
                .with_generation_id(-1),
        ),
        K::SyncGroup => ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(code)),
        K::Heartbeat => ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(code)),
        K::LeaveGroup => {
            ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(code))
        }
        K::ListGroups => {
            ResponseKind::ListGroups(ListGroupsResponse::default().with_error_code(code))
        }
        K::OffsetDelete => {
            ResponseKind::OffsetDelete(OffsetDeleteResponse::default().with_error_code(code))
        }
        K::ConsumerGroupHeartbeat => ResponseKind::ConsumerGroupHeartbeat(
            ConsumerGroupHeartbeatResponse::default().with_error_code(code),
        ),
        K::AddOffsetsToTxn => {
            ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(code))
        }
        K::EndTxn => ResponseKind::EndTxn(EndTxnResponse::default().with_error_code(code)),
        K::InitProducerId => ResponseKind::InitProducerId(
            InitProducerIdResponse::default()
                .with_error_code(code)
                .with_producer_id((-1).into())
                .with_producer_epoch(-1),
        ),
        K::DescribeCluster => {
            ResponseKind::DescribeCluster(DescribeClusterResponse::default().with_error_code(code))
        }
        K::DescribeAcls => {
            ResponseKind::DescribeAcls(DescribeAclsResponse::default().with_error_code(code))
        }
        K::ElectLeaders => {
            ResponseKind::ElectLeaders(ElectLeadersResponse::default().with_error_code(code))
        }
        K::AlterPartitionReassignments => ResponseKind::AlterPartitionReassignments(
            AlterPartitionReassignmentsResponse::default().with_error_code(code),
        ),
        K::ListPartitionReassignments => ResponseKind::ListPartitionReassignments(
            ListPartitionReassignmentsResponse::default().with_error_code(code),
        ),
        K::DescribeClientQuotas => ResponseKind::DescribeClientQuotas(
            DescribeClientQuotasResponse::default().with_error_code(code),
        ),
        K::DescribeUserScramCredentials => ResponseKind::DescribeUserScramCredentials(
            DescribeUserScramCredentialsResponse::default().with_error_code(code),
        ),
        K::ListTransactions => ResponseKind::ListTransactions(
            ListTransactionsResponse::default().with_error_code(code),
        ),
        K::DescribeLogDirs => {
            ResponseKind::DescribeLogDirs(DescribeLogDirsResponse::default().with_error_code(code))
        }
        K::UpdateFeatures => {
            ResponseKind::UpdateFeatures(UpdateFeaturesResponse::default().with_error_code(code))
        }
        K::CreateDelegationToken => ResponseKind::CreateDelegationToken(
            CreateDelegationTokenResponse::default().with_error_code(code),
        ),
        K::RenewDelegationToken => ResponseKind::RenewDelegationToken(
            RenewDelegationTokenResponse::default().with_error_code(code),
        ),
        K::ExpireDelegationToken => ResponseKind::ExpireDelegationToken(
            ExpireDelegationTokenResponse::default().with_error_code(code),
        ),
        K::DescribeDelegationToken => ResponseKind::DescribeDelegationToken(
            DescribeDelegationTokenResponse::default().with_error_code(code),
        ),
        _ => return None,
    })
}

/// Does enforcing this API need the decoded request? (Topic-bearing APIs
/// and those whose refusal echoes request data.) Others can go through
/// [`Gate::check_key`] as raw bytes.
pub fn needs_decoding(api_key: i16) -> bool {
    use ApiKey as K;
    match ApiKey::try_from(api_key) {
        Ok(k) => {
            matches!(api_scope(api_key), ApiScope::Topics(_))
                || matches!(
                    k,
                    K::FindCoordinator
                        | K::JoinGroup
                        | K::SyncGroup
                        | K::Heartbeat
                        | K::LeaveGroup
                        | K::OffsetDelete
                        | K::ListGroups
                        | K::ConsumerGroupHeartbeat
                        | K::AddOffsetsToTxn
                        | K::EndTxn
                        | K::InitProducerId
                        | K::DescribeGroups
                        | K::ConsumerGroupDescribe
                        | K::DeleteGroups
                        | K::CreateAcls
                        | K::DeleteAcls
                        | K::AlterUserScramCredentials
                        | K::AlterClientQuotas
                )
        }
        Err(_) => false,
    }
}

fn partition_error_produce(p: i32, code: i16) -> produce_response::PartitionProduceResponse {
    produce_response::PartitionProduceResponse::default()
        .with_index(p)
        .with_error_code(code)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
}

fn partition_error_fetch(p: i32, code: i16) -> fetch_response::PartitionData {
    fetch_response::PartitionData::default()
        .with_partition_index(p)
        .with_error_code(code)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica((-1).into())
        .with_records(Some(Bytes::new()))
}

impl Fixup {
    /// Add the refusals to a response from the broker (or to an empty local one).
    /// Returns whether the response changed (an unchanged one is forwarded
    /// as the broker's bytes, not re-encoded).
    pub fn apply(&self, gate: &Gate<'_>, response: &mut ResponseKind) -> bool {
        let mut changed = !self.refused_topics().is_empty();
        self.apply_pure(response, None);
        match (&self.0, response) {
            (FixupKind::Metadata(_, asked), ResponseKind::Metadata(resp)) => {
                let before = resp.topics.len();
                if let Some(asked) = asked {
                    changed = true;
                    resp.topics.retain(|t| {
                        t.error_code == TOPIC_AUTH
                            || t.name.as_ref().is_some_and(|n| asked.contains(n))
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
                // Hide what the caller may not describe; explicitly requested
                // refused topics were re-added with their error above.
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
                changed |= resp.topics.len() != before;
            }
            (FixupKind::Fetch(denied), ResponseKind::Fetch(resp)) => {
                // Whatever the broker sends, the client gets only partitions
                // it may read now (and the refusals re-added above).
                changed |= resp.session_id != 0;
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
            }
            (
                FixupKind::DescribeTopicPartitions(_),
                ResponseKind::DescribeTopicPartitions(resp),
            ) => {
                // An empty topic list asks for every topic: hide what the
                // caller may not describe (refused names were re-added above).
                let before = resp.topics.len();
                resp.topics.retain(|t| {
                    t.error_code == TOPIC_AUTH
                        || t.name
                            .as_ref()
                            .is_some_and(|n| gate.may(Operation::Describe, n))
                });
                changed |= resp.topics.len() != before;
            }
            (FixupKind::ListGroups, ResponseKind::ListGroups(resp)) => {
                let before = resp.groups.len();
                resp.groups.retain(|g| {
                    gate.policy
                        .may_use(gate.principal, Coordination::Group, &g.group_id)
                });
                changed |= resp.groups.len() != before;
            }
            (FixupKind::DescribeGroups(refused), ResponseKind::DescribeGroups(_)) => {
                changed |= !refused.is_empty();
            }
            (FixupKind::OffsetFetch(requested), ResponseKind::OffsetFetch(resp)) => {
                changed = true;
                let allowed = |name: &TopicName| gate.may(Operation::Read, name);
                resp.topics
                    .retain(|t| allowed(&t.name) || requested.contains(t.name.as_str()));
                for t in &mut resp.topics {
                    if !allowed(&t.name) {
                        for p in &mut t.partitions {
                            (p.committed_offset, p.metadata, p.error_code) = (-1, None, TOPIC_AUTH);
                        }
                    }
                }
                for g in &mut resp.groups {
                    g.topics
                        .retain(|t| allowed(&t.name) || requested.contains(t.name.as_str()));
                    for t in &mut g.topics {
                        if !allowed(&t.name) {
                            for p in &mut t.partitions {
                                (p.committed_offset, p.metadata, p.error_code) =
                                    (-1, None, TOPIC_AUTH);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        changed
    }

    fn apply_with_code(&self, _gate: &Gate<'_>, response: &mut ResponseKind, code: i16) {
        self.apply_pure(response, Some(code));
    }

    /// Re-add removed entries with `code` (default TOPIC_AUTHORIZATION_FAILED).
    fn apply_pure(&self, response: &mut ResponseKind, code: Option<i16>) {
        let code = code.unwrap_or(TOPIC_AUTH);
        let msg = || Some(StrBytes::from_static_str("refused by streamgate policy"));
        match (&self.0, response) {
            (FixupKind::Produce(d), ResponseKind::Produce(r)) => r.responses.extend(d.iter().map(|t| {
                produce_response::TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.id)
                    .with_partition_responses(t.partitions.iter().map(|p| partition_error_produce(*p, code).with_error_message(msg())).collect())
            })),
            (FixupKind::Fetch(d), ResponseKind::Fetch(r)) => r.responses.extend(d.iter().map(|t| {
                fetch_response::FetchableTopicResponse::default()
                    .with_topic(t.name.clone())
                    .with_topic_id(t.id)
                    .with_partitions(t.partitions.iter().map(|p| partition_error_fetch(*p, code)).collect())
            })),
            (FixupKind::ListOffsets(d), ResponseKind::ListOffsets(r)) => r.topics.extend(d.iter().map(|t| {
                list_offsets_response::ListOffsetsTopicResponse::default().with_name(t.name.clone()).with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| list_offsets_response::ListOffsetsPartitionResponse::default().with_partition_index(*p).with_error_code(code).with_timestamp(-1).with_offset(-1).with_leader_epoch(-1))
                        .collect(),
                )
            })),
            (FixupKind::OffsetCommit(d), ResponseKind::OffsetCommit(r)) => r.topics.extend(d.iter().map(|t| {
                offset_commit_response::OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_topic_id(t.id).with_partitions(
                    t.partitions.iter().map(|p| offset_commit_response::OffsetCommitResponsePartition::default().with_partition_index(*p).with_error_code(code)).collect(),
                )
            })),
            (FixupKind::TxnOffsetCommit(d), ResponseKind::TxnOffsetCommit(r)) => r.topics.extend(d.iter().map(|t| {
                txn_offset_commit_response::TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                    t.partitions.iter().map(|p| txn_offset_commit_response::TxnOffsetCommitResponsePartition::default().with_partition_index(*p).with_error_code(code)).collect(),
                )
            })),
            (FixupKind::DeleteRecords(d), ResponseKind::DeleteRecords(r)) => r.topics.extend(d.iter().map(|t| {
                delete_records_response::DeleteRecordsTopicResult::default().with_name(t.name.clone()).with_partitions(
                    t.partitions.iter().map(|p| delete_records_response::DeleteRecordsPartitionResult::default().with_partition_index(*p).with_low_watermark(-1).with_error_code(code)).collect(),
                )
            })),
            (FixupKind::CreateTopics(d), ResponseKind::CreateTopics(r)) => r.topics.extend(d.iter().map(|t| {
                create_topics_response::CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_error_code(code)
                    .with_error_message(msg())
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
            })),
            (FixupKind::DeleteTopics(d), ResponseKind::DeleteTopics(r)) => r.responses.extend(d.iter().map(|t| {
                delete_topics_response::DeletableTopicResult::default()
                    .with_name(Some(t.name.clone()).filter(|n| !n.0.is_empty()))
                    .with_topic_id(t.id)
                    .with_error_code(code)
                    .with_error_message(msg())
            })),
            (FixupKind::CreatePartitions(d), ResponseKind::CreatePartitions(r)) => r.results.extend(d.iter().map(|t| {
                create_partitions_response::CreatePartitionsTopicResult::default().with_name(t.name.clone()).with_error_code(code).with_error_message(msg())
            })),
            (FixupKind::DescribeProducers(d), ResponseKind::DescribeProducers(r)) => r.topics.extend(d.iter().map(|t| {
                describe_producers_response::TopicResponse::default().with_name(t.name.clone()).with_partitions(
                    t.partitions.iter().map(|p| describe_producers_response::PartitionResponse::default().with_partition_index(*p).with_error_code(code).with_error_message(msg())).collect(),
                )
            })),
            (FixupKind::OffsetForLeaderEpoch(d), ResponseKind::OffsetForLeaderEpoch(r)) => r.topics.extend(d.iter().map(|t| {
                offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default().with_topic(t.name.clone()).with_partitions(
                    t.partitions.iter().map(|p| offset_for_leader_epoch_response::EpochEndOffset::default().with_partition(*p).with_error_code(code).with_leader_epoch(-1).with_end_offset(-1)).collect(),
                )
            })),
            (FixupKind::DescribeTopicPartitions(d), ResponseKind::DescribeTopicPartitions(r)) => r.topics.extend(d.iter().map(|t| {
                describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic::default().with_name(Some(t.name.clone())).with_error_code(code)
            })),
            (FixupKind::DescribeConfigs(d), ResponseKind::DescribeConfigs(r)) => r.results.extend(d.iter().map(|x| {
                describe_configs_response::DescribeConfigsResult::default().with_resource_type(x.resource_type).with_resource_name(x.name.clone()).with_error_code(x.code).with_error_message(msg())
            })),
            (FixupKind::AlterConfigs(d), ResponseKind::AlterConfigs(r)) => r.responses.extend(d.iter().map(|x| {
                alter_configs_response::AlterConfigsResourceResponse::default().with_resource_type(x.resource_type).with_resource_name(x.name.clone()).with_error_code(x.code).with_error_message(msg())
            })),
            (FixupKind::IncrementalAlterConfigs(d), ResponseKind::IncrementalAlterConfigs(r)) => r.responses.extend(d.iter().map(|x| {
                incremental_alter_configs_response::AlterConfigsResourceResponse::default().with_resource_type(x.resource_type).with_resource_name(x.name.clone()).with_error_code(x.code).with_error_message(msg())
            })),
            (FixupKind::DescribeGroups(d), ResponseKind::DescribeGroups(r)) => r.groups.extend(d.iter().map(|g| {
                describe_groups_response::DescribedGroup::default().with_group_id(g.clone()).with_error_code(GROUP_AUTH)
            })),
            (FixupKind::Metadata(d, _), ResponseKind::Metadata(r)) => r.topics.extend(d.iter().map(|t| {
                metadata_response::MetadataResponseTopic::default()
                    .with_name(Some(t.name.clone()).filter(|n| !n.0.is_empty()))
                    .with_topic_id(t.id)
                    .with_error_code(code)
            })),
            _ => {}
        }
    }

    /// The refused topic names (for logs and audit).
    pub fn refused_topics(&self) -> Vec<String> {
        match &self.0 {
            FixupKind::Produce(d)
            | FixupKind::Fetch(d)
            | FixupKind::ListOffsets(d)
            | FixupKind::OffsetCommit(d)
            | FixupKind::TxnOffsetCommit(d)
            | FixupKind::DeleteRecords(d)
            | FixupKind::CreateTopics(d)
            | FixupKind::DeleteTopics(d)
            | FixupKind::CreatePartitions(d)
            | FixupKind::DescribeProducers(d)
            | FixupKind::OffsetForLeaderEpoch(d)
            | FixupKind::DescribeTopicPartitions(d)
            | FixupKind::Metadata(d, _) => denied_names(d),
            FixupKind::DescribeConfigs(d)
            | FixupKind::AlterConfigs(d)
            | FixupKind::IncrementalAlterConfigs(d) => {
                d.iter().map(|x| x.name.to_string()).collect()
            }
            FixupKind::Nothing
            | FixupKind::OffsetFetch(_)
            | FixupKind::DescribeGroups(_)
            | FixupKind::ListGroups => Vec::new(),
        }
    }
}
