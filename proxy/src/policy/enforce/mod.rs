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
//!
//! This file is the gate and the dispatch, one line per API; each API
//! group's file holds its request check and its response merge side by side,
//! and every error answer is built by the one refusal builder (`refusal.rs`).
use std::collections::HashMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestKind, TopicName};
use streamgate_crds::Operation;
use streamgate_crds::matching::Principal;
use uuid::Uuid;

use super::apis::{ApiScope, api_scope, blocked_as};
use super::coordination::{self, Coordination};
use super::decide::{BreakGlass, CompiledPolicy, DenyReason, PolicyDecision};

mod cluster_admin;
mod fetch;
mod fixup;
mod groups;
mod metadata;
mod produce;
mod refusal;
mod topics_admin;
mod txn;

pub use fixup::Fixup;
pub use refusal::top_level_error;

use fixup::FixupKind;
use refusal::{Denied, TopicEntry, answer, refuse_every, top_level};

const TOPIC_AUTH: i16 = ResponseError::TopicAuthorizationFailed.code();
const GROUP_AUTH: i16 = ResponseError::GroupAuthorizationFailed.code();
const CLUSTER_AUTH: i16 = ResponseError::ClusterAuthorizationFailed.code();
const TXN_AUTH: i16 = ResponseError::TransactionalIdAuthorizationFailed.code();

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
    Respond(kafka_protocol::messages::ResponseKind),
    NoResponse,
    Close(DenyReason),
}

/// The result of a check: the enforcement and every decision behind it.
#[derive(Debug)]
pub struct Checked {
    pub enforcement: Enforcement,
    pub decisions: Vec<TopicDecision>,
}

/// The policy in force, for one caller.
pub struct Gate<'a> {
    pub policy: &'a CompiledPolicy,
    pub principal: &'a Principal,
    /// The caller's break-glass invocation, if it made one.
    pub break_glass: Option<&'a BreakGlass>,
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
    /// The API is blocked by `blockedOperations` (admin APIs check it).
    blocked: bool,
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
        let decision = self.gate.decide(op, &topic);
        let ok = decision.is_allow();
        self.decisions.push(TopicDecision {
            topic,
            operation: op,
            decision,
        });
        ok
    }

    /// May the caller use `op` on any topic? (Group and transaction coordination.)
    fn may_any(&self, op: Operation) -> bool {
        self.gate.policy.may_any(self.gate.principal, op)
            || self.gate.policy.break_glass_any(
                self.gate.principal,
                self.gate.break_glass,
                op,
                chrono::Utc::now(),
            )
    }

    /// Cluster-wide admin APIs: refused when blocked or not allowed Admin on
    /// the cluster.
    fn admin_refused(&self) -> bool {
        self.blocked
            || !self
                .gate
                .policy
                .decide_cluster(self.gate.principal, Operation::Admin)
                .is_allow()
    }

    /// Remove the entries the caller may not `op` and return them. With
    /// `open` false (an admin API blocked) every entry is removed undecided,
    /// so the audit names no rule for it.
    fn trim<T: TopicEntry>(
        &mut self,
        items: &mut Vec<T>,
        op: Operation,
        open: bool,
    ) -> Vec<Denied> {
        let mut denied = Vec::new();
        items.retain(|t| {
            let ok = open && self.allow(op, &t.name(), &t.id());
            if !ok {
                denied.push(t.denied());
            }
            ok
        });
        denied
    }

    /// Trim a topic list: forward the rest with the refusals to merge back,
    /// or — when nothing is left — answer locally with every refusal.
    fn topics<T: TopicEntry>(
        &mut self,
        items: &mut Vec<T>,
        op: Operation,
        open: bool,
    ) -> Enforcement {
        let denied = self.trim(items, op, open);
        conclude::<T>(items.is_empty(), denied, FixupKind::Topics)
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

/// Forward with the refusals to merge into the answer, or, when the
/// request has nothing left (`emptied`), answer locally with them.
fn conclude<T: TopicEntry>(
    emptied: bool,
    denied: Vec<Denied>,
    kind: fn(fixup::Refusals) -> FixupKind,
) -> Enforcement {
    if emptied && !denied.is_empty() {
        return Enforcement::Respond(answer::<T>(&denied, TOPIC_AUTH));
    }
    Enforcement::Forward(Fixup(kind(fixup::Refusals {
        denied,
        merge: refusal::merge::<T>,
    })))
}

impl Gate<'_> {
    /// May the caller do `op` on `topic` now? (The response filters' one question.)
    fn may(&self, op: Operation, topic: &str) -> bool {
        self.decide(op, topic).is_allow()
    }

    /// The caller's decision for `op` on `topic` now (break-glass included).
    pub fn decide(&self, op: Operation, topic: &str) -> PolicyDecision {
        self.policy.decide_as(
            self.principal,
            self.break_glass,
            op,
            topic,
            chrono::Utc::now(),
        )
    }

    /// May the caller use the group or transactional id `id`?
    pub fn may_use(&self, kind: Coordination, id: &str) -> bool {
        self.policy
            .may_use_as(self.principal, self.break_glass, kind, id)
    }

    /// The enforcement for a request forwarded without decoding (by API key
    /// only). APIs that need their topics checked are refused here unless
    /// decoded: use [`needs_decoding`] to know which.
    pub fn check_key(&self, api_key: i16) -> Checked {
        let ctx = self.ctx(false);
        if let Some(refusal) = self.key_refusal(api_key) {
            return ctx.done(refusal);
        }
        let forward = || Enforcement::Forward(Fixup::default());
        let enforcement = match api_scope(api_key) {
            ApiScope::Always => forward(),
            ApiScope::Group if ctx.may_any(Operation::Read) => forward(),
            ApiScope::Transaction if ctx.may_any(Operation::Write) => forward(),
            ApiScope::Cluster(op) if self.policy.decide_cluster(self.principal, op).is_allow() => {
                forward()
            }
            ApiScope::Unknown => Enforcement::Close(DenyReason::UnknownApi),
            ApiScope::Refused(reason) => Enforcement::Close(reason),
            // Topic APIs cannot be judged without their topics; refusals that
            // need no request data are answered, the rest close.
            scope => {
                let code = match scope {
                    ApiScope::Group => GROUP_AUTH,
                    ApiScope::Transaction => TXN_AUTH,
                    _ => CLUSTER_AUTH,
                };
                match ApiKey::try_from(api_key) {
                    Ok(key) => top_level(key, code, DenyReason::NoMatchingRule),
                    Err(_) => Enforcement::Close(DenyReason::NoMatchingRule),
                }
            }
        };
        ctx.done(enforcement)
    }

    fn ctx(&self, blocked: bool) -> Ctx<'_, '_> {
        Ctx {
            gate: self,
            blocked,
            decisions: Vec::new(),
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
        self.is_blocked(key)
            .then(|| top_level(key, CLUSTER_AUTH, DenyReason::Blocked))
    }

    fn is_blocked(&self, api_key: ApiKey) -> bool {
        blocked_as(api_key as i16).is_some_and(|b| self.policy.blocked(b))
    }

    /// Check a decoded request (it may be trimmed in place).
    pub fn check(&self, api_key: ApiKey, version: i16, request: &mut RequestKind) -> Checked {
        let mut ctx = self.ctx(self.is_blocked(api_key));
        // Groups and transactional ids first: a request naming one the
        // caller may not use is refused whole (DescribeGroups and ListGroups
        // are filtered instead, in their checks).
        if !matches!(request, RequestKind::DescribeGroups(_)) {
            let named = coordination::named(request);
            if let Some((kind, id)) =
                coordination::first_refused(self.policy, self.principal, self.break_glass, &named)
            {
                tracing::debug!(?kind, id, api = ?api_key, "coordination id refused");
                return ctx.done(coordination_refusal(api_key, version, request, kind));
            }
        }
        // Admin APIs blocked by `blockedOperations` refuse every topic undecided.
        let open = !ctx.blocked;
        let c = &mut ctx;
        let enforcement = match request {
            RequestKind::Produce(req) => produce::check_produce(c, req),
            RequestKind::Fetch(req) => fetch::check_fetch(c, req),
            RequestKind::ListOffsets(req) => c.topics(&mut req.topics, Operation::Describe, true),
            RequestKind::OffsetForLeaderEpoch(req) => {
                c.topics(&mut req.topics, Operation::Describe, true)
            }
            RequestKind::Metadata(req) => metadata::check_metadata(c, version, req),
            RequestKind::DescribeTopicPartitions(req) => {
                metadata::check_describe_topic_partitions(c, req)
            }
            RequestKind::OffsetCommit(req) => groups::check_offset_commit(c, req),
            RequestKind::OffsetFetch(req) => groups::check_offset_fetch(c, version, req),
            RequestKind::FindCoordinator(req) => groups::check_find_coordinator(c, version, req),
            RequestKind::DescribeGroups(req) => groups::check_describe_groups(c, req),
            RequestKind::ListGroups(_) => groups::check_list_groups(c),
            RequestKind::ConsumerGroupDescribe(req) => {
                groups::check_consumer_group_describe(c, req)
            }
            RequestKind::DeleteGroups(req) => groups::check_delete_groups(c, req),
            RequestKind::TxnOffsetCommit(req) => txn::check_txn_offset_commit(c, req),
            RequestKind::AddPartitionsToTxn(req) => txn::check_add_partitions_to_txn(c, req),
            RequestKind::InitProducerId(req) => txn::check_init_producer_id(c, req),
            RequestKind::DescribeProducers(req) => {
                c.topics(&mut req.topics, Operation::Describe, true)
            }
            RequestKind::DeleteRecords(req) => c.topics(&mut req.topics, Operation::Admin, open),
            RequestKind::CreateTopics(req) => c.topics(&mut req.topics, Operation::Create, open),
            RequestKind::CreatePartitions(req) => {
                c.topics(&mut req.topics, Operation::Create, open)
            }
            RequestKind::DeleteTopics(req) => topics_admin::check_delete_topics(c, req, open),
            RequestKind::DescribeConfigs(req) => {
                topics_admin::configs(c, &mut req.resources, Operation::Describe, true)
            }
            RequestKind::AlterConfigs(req) => {
                topics_admin::configs(c, &mut req.resources, Operation::Admin, open)
            }
            RequestKind::IncrementalAlterConfigs(req) => {
                topics_admin::configs(c, &mut req.resources, Operation::Admin, open)
            }
            RequestKind::CreateAcls(req) if c.admin_refused() => {
                cluster_admin::refuse_create_acls(req)
            }
            RequestKind::DeleteAcls(req) if c.admin_refused() => {
                cluster_admin::refuse_delete_acls(req)
            }
            RequestKind::AlterUserScramCredentials(req) if c.admin_refused() => {
                cluster_admin::refuse_alter_user_scram_credentials(req)
            }
            RequestKind::AlterClientQuotas(req) if c.admin_refused() => {
                cluster_admin::refuse_alter_client_quotas(req)
            }
            // Everything else is judged by its API key alone.
            _ if ctx.blocked => top_level(api_key, CLUSTER_AUTH, DenyReason::Blocked),
            _ => return self.check_key(api_key as i16),
        };
        ctx.done(enforcement)
    }
}

/// The answer to a request naming a group or transactional id the caller
/// may not use: the API's own authorization error, where the protocol puts it.
fn coordination_refusal(
    api_key: ApiKey,
    version: i16,
    request: &RequestKind,
    kind: Coordination,
) -> Enforcement {
    let code = match kind {
        Coordination::Group => GROUP_AUTH,
        Coordination::TransactionalId => TXN_AUTH,
    };
    let resp = match request {
        RequestKind::Produce(req) if req.acks == 0 => return Enforcement::NoResponse,
        RequestKind::Produce(req) => refuse_every(&req.topic_data, code),
        RequestKind::OffsetCommit(req) => refuse_every(&req.topics, code),
        RequestKind::TxnOffsetCommit(req) => refuse_every(&req.topics, code),
        RequestKind::FindCoordinator(req) => groups::find_coordinator_refusal(version, req, code),
        RequestKind::OffsetFetch(req) => groups::offset_fetch_refusal(version, req),
        RequestKind::DeleteGroups(req) => groups::delete_groups_refusal(req, code),
        RequestKind::ConsumerGroupDescribe(req) => {
            groups::consumer_group_describe_refusal(req, code)
        }
        RequestKind::AddPartitionsToTxn(req) => {
            txn::add_partitions_to_txn_refusal(version, req, code)
        }
        _ => return top_level(api_key, code, DenyReason::NoMatchingRule),
    };
    Enforcement::Respond(resp)
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
