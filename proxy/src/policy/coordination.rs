//! Consumer groups and transactional ids: who may use which (pure).
//!
//! Topics alone do not scope coordination: a caller allowed to read one
//! topic could otherwise join, describe or reset another tenant's group, or
//! fence another app's producer by claiming its `transactional.id`. A
//! StreamPolicy rule that gives `Read` names the groups it covers
//! (`groups`), one that gives `Write` the transactional ids
//! (`transactionalIds`); a rule that names none covers only ids named after
//! the caller. A Deny rule that names an id refuses it.
//!
//! [`named`] lists the ids a request names (one match over every group and
//! transaction API); [`CompiledPolicy::may_use`] decides one id.

use kafka_protocol::messages::RequestKind;
use streamgate_crds::matching::{Principal, topic_matches};
use streamgate_crds::{Effect, Operation, PolicyRule};

use super::decide::CompiledPolicy;

/// What kind of coordination id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coordination {
    /// A consumer group (needs `Read`).
    Group,
    /// A transactional id (needs `Write`).
    TransactionalId,
}

impl Coordination {
    fn operation(self) -> Operation {
        match self {
            Coordination::Group => Operation::Read,
            Coordination::TransactionalId => Operation::Write,
        }
    }

    fn globs(self, rule: &PolicyRule) -> &[String] {
        match self {
            Coordination::Group => &rule.groups,
            Coordination::TransactionalId => &rule.transactional_ids,
        }
    }
}

/// Is `id` named after the caller: its name, or its name and a separator?
pub fn owned_by(principal: &Principal, id: &str) -> bool {
    let name = principal.name.as_str();
    !name.is_empty()
        && id
            .strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '.', '_', ':']))
}

impl CompiledPolicy {
    /// May `principal` use the group or transactional id `id`?
    pub fn may_use(&self, principal: &Principal, kind: Coordination, id: &str) -> bool {
        self.may_use_as(principal, None, kind, id)
    }

    /// [`Self::may_use`] for a caller that may have invoked break-glass: a
    /// live break-glass rule covers ids as its Allow would.
    pub fn may_use_as(
        &self,
        principal: &Principal,
        break_glass: Option<&crate::policy::decide::BreakGlass>,
        kind: Coordination,
        id: &str,
    ) -> bool {
        let op = kind.operation();
        // "Named after the caller" is only unambiguous when one issuer's
        // users can hold that name: with several trusted issuers, issuer A's
        // `alice` and issuer B's `alice` would share `alice-*`, so OIDC
        // users then need ids their rules list.
        let issuers = self.token_issuers();
        let owns = |id: &str| {
            owned_by(principal, id) && (principal.issuer.is_none() || issuers.len() == 1)
        };
        let covers = |rule: &PolicyRule| {
            let globs = kind.globs(rule);
            if globs.is_empty() {
                owns(id)
            } else {
                globs.iter().any(|g| topic_matches(g, id))
            }
        };
        let mut allowed = false;
        for (_, rule) in self.matching_rules(principal, op, |_| true) {
            match rule.effect {
                // A Deny rule refuses only the ids it names (one without
                // `groups` is about topics, not coordination).
                Effect::Deny => {
                    if kind.globs(rule).iter().any(|g| topic_matches(g, id)) {
                        return false;
                    }
                }
                Effect::Allow => allowed |= rule.approval.is_none() && covers(rule),
            }
        }
        // An approved AccessApproval gives its requester its own ids.
        allowed
            || (self.has_live_grant(principal, op) && owns(id))
            || self
                .break_glass_live_rules(principal, break_glass, op, chrono::Utc::now())
                .any(covers)
    }
}

/// The groups and transactional ids one request names.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Named {
    pub groups: Vec<String>,
    pub transactional_ids: Vec<String>,
}

/// FindCoordinator key types.
const KEY_GROUP: i8 = 0;
const KEY_TRANSACTION: i8 = 1;

/// The ids a request names, for every group and transaction API (others: none).
pub fn named(request: &RequestKind) -> Named {
    let mut n = Named::default();
    let mut group = |id: &str| n.groups.push(id.to_string());
    match request {
        RequestKind::JoinGroup(r) => group(&r.group_id),
        RequestKind::SyncGroup(r) => group(&r.group_id),
        RequestKind::Heartbeat(r) => group(&r.group_id),
        RequestKind::LeaveGroup(r) => group(&r.group_id),
        RequestKind::OffsetCommit(r) => group(&r.group_id),
        RequestKind::OffsetDelete(r) => group(&r.group_id),
        RequestKind::ConsumerGroupHeartbeat(r) => group(&r.group_id),
        RequestKind::OffsetFetch(r) => {
            if !r.group_id.is_empty() {
                group(&r.group_id);
            }
            r.groups.iter().for_each(|g| group(&g.group_id));
        }
        RequestKind::DescribeGroups(r) => r.groups.iter().for_each(|g| group(g)),
        RequestKind::ConsumerGroupDescribe(r) => r.group_ids.iter().for_each(|g| group(g)),
        RequestKind::DeleteGroups(r) => r.groups_names.iter().for_each(|g| group(g)),
        RequestKind::TxnOffsetCommit(r) => {
            group(&r.group_id);
            n.transactional_ids.push(r.transactional_id.to_string());
        }
        RequestKind::AddOffsetsToTxn(r) => {
            group(&r.group_id);
            n.transactional_ids.push(r.transactional_id.to_string());
        }
        RequestKind::FindCoordinator(r) => {
            let keys: Vec<String> = if r.coordinator_keys.is_empty() {
                vec![r.key.to_string()]
            } else {
                r.coordinator_keys.iter().map(|k| k.to_string()).collect()
            };
            match r.key_type {
                KEY_GROUP => n.groups.extend(keys),
                KEY_TRANSACTION => n.transactional_ids.extend(keys),
                // Share groups are refused by API key before this.
                _ => {}
            }
        }
        RequestKind::InitProducerId(r) => {
            n.transactional_ids
                .extend(r.transactional_id.iter().map(|t| t.to_string()));
        }
        RequestKind::EndTxn(r) => n.transactional_ids.push(r.transactional_id.to_string()),
        RequestKind::AddPartitionsToTxn(r) => {
            if !r.v3_and_below_transactional_id.is_empty() {
                n.transactional_ids
                    .push(r.v3_and_below_transactional_id.to_string());
            }
            n.transactional_ids.extend(
                r.transactions
                    .iter()
                    .map(|t| t.transactional_id.to_string()),
            );
        }
        RequestKind::Produce(r) => {
            n.transactional_ids
                .extend(r.transactional_id.iter().map(|t| t.to_string()));
        }
        _ => {}
    }
    n
}

/// The first id `principal` may not use, with the kind, if any.
pub fn first_refused(
    policy: &CompiledPolicy,
    principal: &Principal,
    break_glass: Option<&crate::policy::decide::BreakGlass>,
    named: &Named,
) -> Option<(Coordination, String)> {
    let txn = named
        .transactional_ids
        .iter()
        .find(|id| !policy.may_use_as(principal, break_glass, Coordination::TransactionalId, id))
        .map(|id| (Coordination::TransactionalId, id.clone()));
    txn.or_else(|| {
        named
            .groups
            .iter()
            .find(|id| !policy.may_use_as(principal, break_glass, Coordination::Group, id))
            .map(|id| (Coordination::Group, id.clone()))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::policy::decide::PolicyDoc;
    use std::collections::BTreeMap;
    use streamgate_crds::{StreamPolicySpec, SubjectKind};

    fn policy(yaml: &str) -> CompiledPolicy {
        let spec: StreamPolicySpec = serde_yaml::from_str(yaml).unwrap();
        CompiledPolicy::compile(
            vec![PolicyDoc {
                name: "p".into(),
                namespace: "clinical".into(),
                generation: None,
                spec,
            }],
            vec![],
            vec![],
            &BTreeMap::new(),
        )
    }

    fn user(name: &str) -> Principal {
        Principal {
            kind: SubjectKind::User,
            name: name.into(),
            namespace: None,
            groups: vec!["readers".into()],
            issuer: Some("https://idp.example.com".into()),
        }
    }

    const POLICY: &str = r#"
identity:
  oidc: {issuer: "https://idp.example.com", audiences: [kafka]}
rules:
  - name: read-claims
    subjects: [{kind: Group, name: readers}]
    topics: ["claims.*"]
    operations: [Read, Write]
  - name: billing-groups
    subjects: [{kind: User, name: billing}]
    topics: ["claims.*"]
    operations: [Read]
    groups: ["billing-*", "shared.reports"]
  - name: no-audit-group
    subjects: [{kind: Group, name: readers}]
    topics: ["**"]
    operations: [Read]
    groups: ["billing-audit"]
    effect: Deny
"#;

    #[test]
    fn without_a_list_only_ids_named_after_the_caller() {
        let p = policy(POLICY);
        let alice = user("alice");
        for (id, ok) in [
            ("alice", true),
            ("alice-consumers", true),
            ("alice.etl", true),
            ("alice_x", true),
            ("aliceandbob", false),
            ("bob-consumers", false),
            ("", false),
        ] {
            assert_eq!(
                p.may_use(&alice, Coordination::Group, id),
                ok,
                "group {id:?}"
            );
            assert_eq!(
                p.may_use(&alice, Coordination::TransactionalId, id),
                ok,
                "txn {id:?}"
            );
        }
    }

    /// With two trusted issuers, A's `alice` and B's `alice` are different
    /// people: neither gets `alice-*` by name; listed globs still apply.
    #[test]
    fn ids_named_after_the_caller_need_a_single_issuer() {
        let spec = |issuer: &str, groups: &str| -> StreamPolicySpec {
            serde_yaml::from_str(&format!(
                "identity: {{oidc: {{issuer: \"{issuer}\", audiences: [kafka]}}}}\n\
                 rules:\n  - {{name: r, subjects: [{{kind: Group, name: readers}}], topics: [\"claims.*\"], operations: [Read]{groups}}}\n"
            ))
            .unwrap()
        };
        let doc = |name: &str, spec: StreamPolicySpec| PolicyDoc {
            name: name.into(),
            namespace: "clinical".into(),
            generation: None,
            spec,
        };
        let two = CompiledPolicy::compile(
            vec![
                doc("a", spec("https://idp.example.com", "")),
                doc(
                    "b",
                    spec("https://other.example.org", ", groups: [\"shared-*\"]"),
                ),
            ],
            vec![],
            vec![],
            &BTreeMap::new(),
        );
        let alice = user("alice");
        assert!(!two.may_use(&alice, Coordination::Group, "alice-consumers"));
        let mut other_alice = user("alice");
        other_alice.issuer = Some("https://other.example.org".into());
        assert!(!two.may_use(&other_alice, Coordination::Group, "alice-consumers"));
        assert!(two.may_use(&other_alice, Coordination::Group, "shared-reports"));
        // One issuer: the name is unambiguous.
        let one = policy(POLICY);
        assert!(one.may_use(&alice, Coordination::Group, "alice-consumers"));
    }

    #[test]
    fn listed_globs_and_deny_rules() {
        let p = policy(POLICY);
        let billing = user("billing");
        assert!(p.may_use(&billing, Coordination::Group, "billing-nightly"));
        assert!(p.may_use(&billing, Coordination::Group, "shared.reports"));
        assert!(
            !p.may_use(&billing, Coordination::Group, "billing-audit"),
            "a Deny rule naming it wins"
        );
        assert!(!p.may_use(&billing, Coordination::Group, "alice-consumers"));
        // Groups need Read somewhere; an outsider has nothing.
        let mut outsider = user("outsider");
        outsider.groups.clear();
        assert!(!p.may_use(&outsider, Coordination::Group, "outsider"));
    }

    #[test]
    fn every_group_and_transaction_api_names_its_ids() {
        use kafka_protocol::messages::*;
        let g = || GroupId(kafka_protocol::protocol::StrBytes::from_static_str("g1"));
        let t = || TransactionalId(kafka_protocol::protocol::StrBytes::from_static_str("t1"));
        let group_only = Named {
            groups: vec!["g1".into()],
            transactional_ids: vec![],
        };
        let both = Named {
            groups: vec!["g1".into()],
            transactional_ids: vec!["t1".into()],
        };
        let txn_only = Named {
            groups: vec![],
            transactional_ids: vec!["t1".into()],
        };
        let cases: Vec<(RequestKind, &Named)> = vec![
            (
                RequestKind::JoinGroup(JoinGroupRequest::default().with_group_id(g())),
                &group_only,
            ),
            (
                RequestKind::SyncGroup(SyncGroupRequest::default().with_group_id(g())),
                &group_only,
            ),
            (
                RequestKind::Heartbeat(HeartbeatRequest::default().with_group_id(g())),
                &group_only,
            ),
            (
                RequestKind::LeaveGroup(LeaveGroupRequest::default().with_group_id(g())),
                &group_only,
            ),
            (
                RequestKind::OffsetCommit(OffsetCommitRequest::default().with_group_id(g())),
                &group_only,
            ),
            (
                RequestKind::OffsetDelete(OffsetDeleteRequest::default().with_group_id(g())),
                &group_only,
            ),
            (
                RequestKind::OffsetFetch(OffsetFetchRequest::default().with_group_id(g())),
                &group_only,
            ),
            (
                RequestKind::DescribeGroups(
                    DescribeGroupsRequest::default().with_groups(vec![g()]),
                ),
                &group_only,
            ),
            (
                RequestKind::DeleteGroups(
                    DeleteGroupsRequest::default().with_groups_names(vec![g()]),
                ),
                &group_only,
            ),
            (
                RequestKind::TxnOffsetCommit(
                    TxnOffsetCommitRequest::default()
                        .with_group_id(g())
                        .with_transactional_id(t()),
                ),
                &both,
            ),
            (
                RequestKind::AddOffsetsToTxn(
                    AddOffsetsToTxnRequest::default()
                        .with_group_id(g())
                        .with_transactional_id(t()),
                ),
                &both,
            ),
            (
                RequestKind::InitProducerId(
                    InitProducerIdRequest::default().with_transactional_id(Some(t())),
                ),
                &txn_only,
            ),
            (
                RequestKind::EndTxn(EndTxnRequest::default().with_transactional_id(t())),
                &txn_only,
            ),
            (
                RequestKind::Produce(ProduceRequest::default().with_transactional_id(Some(t()))),
                &txn_only,
            ),
            (
                RequestKind::FindCoordinator(
                    FindCoordinatorRequest::default()
                        .with_key_type(1)
                        .with_key(kafka_protocol::protocol::StrBytes::from_static_str("t1")),
                ),
                &txn_only,
            ),
        ];
        for (request, want) in cases {
            assert_eq!(&named(&request), want, "{request:?}");
        }
    }
}
