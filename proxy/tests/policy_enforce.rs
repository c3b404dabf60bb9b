//! Enforcement on real encoded Kafka frames: encode a request with
//! kafka-protocol → decode → Gate::check → encode what would be forwarded or
//! answered → decode, and look at what a client would see.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::{BTreeMap, HashMap};

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use streamgate_crds::matching::Principal;
use streamgate_crds::{StreamPolicySpec, SubjectKind};
use streamgate_proxy::policy::decide::{CompiledPolicy, PolicyDecision, PolicyDoc};
use streamgate_proxy::policy::enforce::{Enforcement, Gate};
use uuid::Uuid;

const POLICY: &str = r#"
identity:
  oidc: {issuer: "https://idp.example.com", audiences: [kafka]}
rules:
  - name: clinicians-write
    subjects: [{kind: Group, name: clinicians}]
    topics: ["patient-*"]
    operations: [Write, Describe]
  - name: analysts-read
    subjects: [{kind: Group, name: analysts}]
    topics: ["claims.*", "patient-events"]
    operations: [Read, Describe]
  - name: no-internal
    subjects: [{kind: Group, name: analysts}]
    topics: ["claims.internal"]
    operations: [Read, Describe]
    effect: Deny
  - name: ops
    subjects: [{kind: Group, name: ops}]
    topics: ["**"]
    operations: [Admin, Create, Describe]
blockedOperations: [DeleteTopics]
"#;

const TOPIC_AUTH: i16 = ResponseError::TopicAuthorizationFailed.code();
const GROUP_AUTH: i16 = ResponseError::GroupAuthorizationFailed.code();
const CLUSTER_AUTH: i16 = ResponseError::ClusterAuthorizationFailed.code();
const TXN_AUTH: i16 = ResponseError::TransactionalIdAuthorizationFailed.code();

fn policy() -> CompiledPolicy {
    let spec: StreamPolicySpec = serde_yaml::from_str(POLICY).unwrap();
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

fn user(groups: &[&str]) -> Principal {
    Principal {
        kind: SubjectKind::User,
        name: "u".into(),
        namespace: None,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        issuer: Some("https://idp.example.com".into()),
    }
}

fn s(v: &'static str) -> StrBytes {
    StrBytes::from_static_str(v)
}

fn t(v: &'static str) -> TopicName {
    TopicName(s(v))
}

/// Encode a request at `version` and decode it the way the connection code will.
fn wire_request<R: Encodable>(key: ApiKey, version: i16, req: &R) -> RequestKind {
    let mut buf = BytesMut::new();
    req.encode(&mut buf, version).unwrap();
    RequestKind::decode(key, &mut buf.freeze(), version).unwrap()
}

/// Encode a response at `version` and decode it the way a client would.
fn wire_response(key: ApiKey, version: i16, resp: &ResponseKind) -> ResponseKind {
    let mut buf = BytesMut::new();
    resp.encode(&mut buf, version).unwrap();
    ResponseKind::decode(key, &mut buf.freeze(), version).unwrap()
}

fn produce_request(topics: &[&'static str], acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(1000)
        .with_topic_data(
            topics
                .iter()
                .map(|n| {
                    produce_request::TopicProduceData::default()
                        .with_name(t(n))
                        .with_partition_data(vec![
                            produce_request::PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(Bytes::from_static(b""))),
                            produce_request::PartitionProduceData::default()
                                .with_index(1)
                                .with_records(Some(Bytes::from_static(b""))),
                        ])
                })
                .collect(),
        )
}

#[test]
fn produce_with_allowed_and_denied_topics_forwards_the_allowed_and_merges_errors() {
    let pol = policy();
    let who = user(&["clinicians"]);
    let ids = HashMap::new();
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &who,
        topic_names: &ids,
    };
    for version in [3i16, 7, 9, 11] {
        let mut req = wire_request(
            ApiKey::Produce,
            version,
            &produce_request(&["patient-records", "claims.2026"], 1),
        );
        let checked = gate.check(ApiKey::Produce, version, &mut req);
        let Enforcement::Forward(fixup) = checked.enforcement else {
            panic!("expected forward")
        };
        // What goes upstream: only the allowed topic.
        let RequestKind::Produce(fwd) = wire_request(
            ApiKey::Produce,
            version,
            match &req {
                RequestKind::Produce(r) => r,
                _ => unreachable!(),
            },
        ) else {
            unreachable!()
        };
        assert_eq!(
            fwd.topic_data
                .iter()
                .map(|t| t.name.0.to_string())
                .collect::<Vec<_>>(),
            vec!["patient-records"]
        );
        // The broker answers for what it got; the client sees both.
        let mut resp = ResponseKind::Produce(ProduceResponse::default().with_responses(vec![
                produce_response::TopicProduceResponse::default()
                    .with_name(t("patient-records"))
                    .with_partition_responses(vec![
                        produce_response::PartitionProduceResponse::default()
                            .with_index(0)
                            .with_base_offset(10),
                        produce_response::PartitionProduceResponse::default()
                            .with_index(1)
                            .with_base_offset(20),
                    ]),
            ]));
        fixup.apply(&gate, &mut resp);
        let ResponseKind::Produce(got) = wire_response(ApiKey::Produce, version, &resp) else {
            unreachable!()
        };
        let by_topic: HashMap<String, Vec<(i32, i16)>> = got
            .responses
            .iter()
            .map(|t| {
                (
                    t.name.0.to_string(),
                    t.partition_responses
                        .iter()
                        .map(|p| (p.index, p.error_code))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            by_topic["patient-records"],
            vec![(0, 0), (1, 0)],
            "v{version}"
        );
        assert_eq!(
            by_topic["claims.2026"],
            vec![(0, TOPIC_AUTH), (1, TOPIC_AUTH)],
            "v{version}"
        );
        assert_eq!(checked.decisions.len(), 2);
        assert!(
            checked
                .decisions
                .iter()
                .any(|d| d.topic == "claims.2026" && !d.decision.is_allow())
        );
    }
}

#[test]
fn produce_wholly_denied_is_answered_locally_or_not_at_all_with_acks_0() {
    let pol = policy();
    let who = user(&["analysts"]);
    let ids = HashMap::new();
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &who,
        topic_names: &ids,
    };
    let mut req = wire_request(ApiKey::Produce, 9, &produce_request(&["claims.2026"], -1));
    let Enforcement::Respond(resp) = gate.check(ApiKey::Produce, 9, &mut req).enforcement else {
        panic!("expected local answer")
    };
    let ResponseKind::Produce(got) = wire_response(ApiKey::Produce, 9, &resp) else {
        unreachable!()
    };
    assert_eq!(got.responses.len(), 1);
    assert!(
        got.responses[0]
            .partition_responses
            .iter()
            .all(|p| p.error_code == TOPIC_AUTH)
    );
    let mut req = wire_request(ApiKey::Produce, 9, &produce_request(&["claims.2026"], 0));
    assert!(matches!(
        gate.check(ApiKey::Produce, 9, &mut req).enforcement,
        Enforcement::NoResponse
    ));
}

fn fetch_request(topics: &[(&'static str, Uuid)]) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(100)
        .with_replica_id((-1).into())
        .with_topics(
            topics
                .iter()
                .map(|(n, id)| {
                    fetch_request::FetchTopic::default()
                        .with_topic(t(n))
                        .with_topic_id(*id)
                        .with_partitions(vec![
                            fetch_request::FetchPartition::default().with_partition(0),
                        ])
                })
                .collect(),
        )
}

#[test]
fn fetch_by_name_and_by_topic_id() {
    let pol = policy();
    let who = user(&["analysts"]);
    let (events, internal, unknown) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
    let ids: HashMap<Uuid, String> = [
        (events, "patient-events".to_string()),
        (internal, "claims.internal".to_string()),
    ]
    .into_iter()
    .collect();
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &who,
        topic_names: &ids,
    };
    // v12: names
    let mut req = wire_request(
        ApiKey::Fetch,
        12,
        &fetch_request(&[
            ("claims.2026", Uuid::nil()),
            ("claims.internal", Uuid::nil()),
        ]),
    );
    let Enforcement::Forward(fixup) = gate.check(ApiKey::Fetch, 12, &mut req).enforcement else {
        panic!()
    };
    let RequestKind::Fetch(fwd) = &req else {
        unreachable!()
    };
    assert_eq!(fwd.topics.len(), 1);
    assert_eq!(fwd.topics[0].topic.0.as_str(), "claims.2026");
    let mut resp = ResponseKind::Fetch(FetchResponse::default());
    fixup.apply(&gate, &mut resp);
    let ResponseKind::Fetch(got) = wire_response(ApiKey::Fetch, 12, &resp) else {
        unreachable!()
    };
    assert_eq!(got.responses[0].topic.0.as_str(), "claims.internal");
    assert_eq!(got.responses[0].partitions[0].error_code, TOPIC_AUTH);
    // v13+: topic ids; an id the proxy cannot name is refused too.
    let mut req = wire_request(
        ApiKey::Fetch,
        13,
        &fetch_request(&[("", events), ("", internal), ("", unknown)]),
    );
    let Enforcement::Forward(fixup) = gate.check(ApiKey::Fetch, 13, &mut req).enforcement else {
        panic!()
    };
    let RequestKind::Fetch(fwd) = &req else {
        unreachable!()
    };
    assert_eq!(
        fwd.topics.iter().map(|t| t.topic_id).collect::<Vec<_>>(),
        vec![events]
    );
    let mut resp = ResponseKind::Fetch(FetchResponse::default());
    fixup.apply(&gate, &mut resp);
    let ResponseKind::Fetch(got) = wire_response(ApiKey::Fetch, 13, &resp) else {
        unreachable!()
    };
    let refused: Vec<(Uuid, i16)> = got
        .responses
        .iter()
        .map(|t| (t.topic_id, t.partitions[0].error_code))
        .collect();
    assert_eq!(refused, vec![(internal, TOPIC_AUTH), (unknown, TOPIC_AUTH)]);
    // Entirely refused: answered locally.
    let outsider = user(&[]);
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &outsider,
        topic_names: &ids,
    };
    let mut req = wire_request(
        ApiKey::Fetch,
        12,
        &fetch_request(&[("claims.2026", Uuid::nil())]),
    );
    let Enforcement::Respond(resp) = gate.check(ApiKey::Fetch, 12, &mut req).enforcement else {
        panic!()
    };
    let ResponseKind::Fetch(got) = wire_response(ApiKey::Fetch, 12, &resp) else {
        unreachable!()
    };
    assert_eq!(got.responses[0].partitions[0].error_code, TOPIC_AUTH);
}

fn metadata_response(names: &[&'static str]) -> ResponseKind {
    ResponseKind::Metadata(
        MetadataResponse::default().with_topics(
            names
                .iter()
                .map(|n| metadata_response::MetadataResponseTopic::default().with_name(Some(t(n))))
                .collect(),
        ),
    )
}

#[test]
fn metadata_answers_only_what_the_caller_may_describe() {
    let pol = policy();
    let who = user(&["analysts"]);
    let ids = HashMap::new();
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &who,
        topic_names: &ids,
    };
    // All topics: the unauthorized ones vanish.
    let mut req = wire_request(
        ApiKey::Metadata,
        9,
        &MetadataRequest::default()
            .with_topics(None)
            .with_allow_auto_topic_creation(true),
    );
    let Enforcement::Forward(fixup) = gate.check(ApiKey::Metadata, 9, &mut req).enforcement else {
        panic!()
    };
    let RequestKind::Metadata(fwd) = &req else {
        unreachable!()
    };
    assert!(!fwd.allow_auto_topic_creation, "auto-creation refused");
    let mut resp = metadata_response(&[
        "claims.2026",
        "claims.internal",
        "patient-events",
        "patient-records",
        "secret",
    ]);
    fixup.apply(&gate, &mut resp);
    let ResponseKind::Metadata(got) = wire_response(ApiKey::Metadata, 9, &resp) else {
        unreachable!()
    };
    let names: Vec<String> = got
        .topics
        .iter()
        .map(|t| t.name.as_ref().unwrap().0.to_string())
        .collect();
    assert_eq!(names, vec!["claims.2026", "patient-events"]);
    // Explicit topics: the refused one is removed upstream and answered with 29.
    let req_topics = ["claims.2026", "secret"]
        .iter()
        .map(|n| metadata_request::MetadataRequestTopic::default().with_name(Some(t(n))))
        .collect();
    let mut req = wire_request(
        ApiKey::Metadata,
        9,
        &MetadataRequest::default()
            .with_topics(Some(req_topics))
            .with_allow_auto_topic_creation(true),
    );
    let Enforcement::Forward(fixup) = gate.check(ApiKey::Metadata, 9, &mut req).enforcement else {
        panic!()
    };
    let RequestKind::Metadata(fwd) = &req else {
        unreachable!()
    };
    assert_eq!(fwd.topics.as_ref().unwrap().len(), 1);
    assert!(!fwd.allow_auto_topic_creation);
    let mut resp = metadata_response(&["claims.2026"]);
    fixup.apply(&gate, &mut resp);
    let ResponseKind::Metadata(got) = wire_response(ApiKey::Metadata, 9, &resp) else {
        unreachable!()
    };
    let got: Vec<(String, i16)> = got
        .topics
        .iter()
        .map(|t| (t.name.as_ref().unwrap().0.to_string(), t.error_code))
        .collect();
    assert_eq!(
        got,
        vec![("claims.2026".into(), 0), ("secret".into(), TOPIC_AUTH)]
    );
    // A caller with Create on every named topic keeps auto-creation.
    let ops = user(&["ops"]);
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &ops,
        topic_names: &ids,
    };
    let req_topics =
        vec![metadata_request::MetadataRequestTopic::default().with_name(Some(t("new-topic")))];
    let mut req = wire_request(
        ApiKey::Metadata,
        9,
        &MetadataRequest::default()
            .with_topics(Some(req_topics))
            .with_allow_auto_topic_creation(true),
    );
    gate.check(ApiKey::Metadata, 9, &mut req);
    let RequestKind::Metadata(fwd) = &req else {
        unreachable!()
    };
    assert!(fwd.allow_auto_topic_creation);
}

#[test]
fn delete_topics_blocked_even_for_admins() {
    let pol = policy();
    let ops = user(&["ops"]);
    let ids = HashMap::new();
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &ops,
        topic_names: &ids,
    };
    for version in [1i16, 5, 6] {
        let req = if version >= 6 {
            DeleteTopicsRequest::default().with_topics(vec![
                delete_topics_request::DeleteTopicState::default()
                    .with_name(Some(t("claims.2026"))),
            ])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![t("claims.2026")])
        };
        let mut req = wire_request(ApiKey::DeleteTopics, version, &req);
        let Enforcement::Respond(resp) = gate
            .check(ApiKey::DeleteTopics, version, &mut req)
            .enforcement
        else {
            panic!()
        };
        let ResponseKind::DeleteTopics(got) = wire_response(ApiKey::DeleteTopics, version, &resp)
        else {
            unreachable!()
        };
        assert_eq!(got.responses.len(), 1);
        assert_eq!(
            got.responses[0].name.as_ref().unwrap().0.as_str(),
            "claims.2026"
        );
        assert_eq!(got.responses[0].error_code, TOPIC_AUTH, "v{version}");
    }
}

#[test]
fn create_topics_per_topic() {
    let pol = policy();
    let ids = HashMap::new();
    let req = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(t("a"))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let ops = user(&["ops"]);
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &ops,
        topic_names: &ids,
    };
    let mut r = wire_request(ApiKey::CreateTopics, 5, &req);
    assert!(matches!(
        gate.check(ApiKey::CreateTopics, 5, &mut r).enforcement,
        Enforcement::Forward(_)
    ));
    let analyst = user(&["analysts"]);
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &analyst,
        topic_names: &ids,
    };
    let mut r = wire_request(ApiKey::CreateTopics, 5, &req);
    let Enforcement::Respond(resp) = gate.check(ApiKey::CreateTopics, 5, &mut r).enforcement else {
        panic!()
    };
    let ResponseKind::CreateTopics(got) = wire_response(ApiKey::CreateTopics, 5, &resp) else {
        unreachable!()
    };
    assert_eq!(
        (got.topics[0].name.0.as_str(), got.topics[0].error_code),
        ("a", TOPIC_AUTH)
    );
}

#[test]
fn group_apis_need_read_somewhere() {
    let pol = policy();
    let ids = HashMap::new();
    let find = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![s("u-g1")]);
    let analyst = user(&["analysts"]);
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &analyst,
        topic_names: &ids,
    };
    let mut r = wire_request(ApiKey::FindCoordinator, 4, &find);
    assert!(matches!(
        gate.check(ApiKey::FindCoordinator, 4, &mut r).enforcement,
        Enforcement::Forward(_)
    ));
    assert!(matches!(
        gate.check_key(ApiKey::JoinGroup as i16).enforcement,
        Enforcement::Forward(_)
    ));
    // A writer who reads nothing gets GROUP_AUTHORIZATION_FAILED.
    let clinician = user(&["clinicians"]);
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &clinician,
        topic_names: &ids,
    };
    for version in [2i16, 4] {
        let find = if version >= 4 {
            find.clone()
        } else {
            FindCoordinatorRequest::default().with_key(s("u-g1"))
        };
        let mut r = wire_request(ApiKey::FindCoordinator, version, &find);
        let Enforcement::Respond(resp) = gate
            .check(ApiKey::FindCoordinator, version, &mut r)
            .enforcement
        else {
            panic!()
        };
        let ResponseKind::FindCoordinator(got) =
            wire_response(ApiKey::FindCoordinator, version, &resp)
        else {
            unreachable!()
        };
        if version >= 4 {
            assert_eq!(got.coordinators[0].error_code, GROUP_AUTH);
        } else {
            assert_eq!(got.error_code, GROUP_AUTH);
        }
    }
    for key in [
        ApiKey::JoinGroup,
        ApiKey::SyncGroup,
        ApiKey::Heartbeat,
        ApiKey::LeaveGroup,
    ] {
        let Enforcement::Respond(resp) = gate.check_key(key as i16).enforcement else {
            panic!("{key:?}")
        };
        let got = wire_response(key, 3, &resp);
        let code = match got {
            ResponseKind::JoinGroup(r) => r.error_code,
            ResponseKind::SyncGroup(r) => r.error_code,
            ResponseKind::Heartbeat(r) => r.error_code,
            ResponseKind::LeaveGroup(r) => r.error_code,
            _ => unreachable!(),
        };
        assert_eq!(code, GROUP_AUTH, "{key:?}");
    }
    // Transactions need Write somewhere.
    let txn = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_coordinator_keys(vec![s("tx")]);
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &analyst,
        topic_names: &ids,
    };
    let mut r = wire_request(ApiKey::FindCoordinator, 4, &txn);
    let Enforcement::Respond(resp) = gate.check(ApiKey::FindCoordinator, 4, &mut r).enforcement
    else {
        panic!()
    };
    let ResponseKind::FindCoordinator(got) = wire_response(ApiKey::FindCoordinator, 4, &resp)
    else {
        unreachable!()
    };
    assert_eq!(got.coordinators[0].error_code, TXN_AUTH);
}

#[test]
fn offset_commit_and_fetch_per_topic() {
    let pol = policy();
    let ids = HashMap::new();
    let analyst = user(&["analysts"]);
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &analyst,
        topic_names: &ids,
    };
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("u-g")))
        .with_topics(
            ["claims.2026", "patient-records"]
                .iter()
                .map(|n| {
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(t(n))
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(5),
                        ])
                })
                .collect(),
        );
    let mut r = wire_request(ApiKey::OffsetCommit, 8, &commit);
    let Enforcement::Forward(fixup) = gate.check(ApiKey::OffsetCommit, 8, &mut r).enforcement
    else {
        panic!()
    };
    let mut resp = ResponseKind::OffsetCommit(OffsetCommitResponse::default());
    fixup.apply(&gate, &mut resp);
    let ResponseKind::OffsetCommit(got) = wire_response(ApiKey::OffsetCommit, 8, &resp) else {
        unreachable!()
    };
    assert_eq!(
        (
            got.topics[0].name.0.as_str(),
            got.topics[0].partitions[0].error_code
        ),
        ("patient-records", TOPIC_AUTH)
    );
    // OffsetFetch for all topics of a group: unreadable topics are hidden.
    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(s("u-g")))
        .with_topics(None);
    let mut r = wire_request(ApiKey::OffsetFetch, 7, &fetch);
    let Enforcement::Forward(fixup) = gate.check(ApiKey::OffsetFetch, 7, &mut r).enforcement else {
        panic!()
    };
    let part = || {
        vec![
            offset_fetch_response::OffsetFetchResponsePartition::default()
                .with_partition_index(0)
                .with_committed_offset(5),
        ]
    };
    let mut resp = ResponseKind::OffsetFetch(OffsetFetchResponse::default().with_topics(vec![
            offset_fetch_response::OffsetFetchResponseTopic::default()
                .with_name(t("claims.2026"))
                .with_partitions(part()),
            offset_fetch_response::OffsetFetchResponseTopic::default()
                .with_name(t("patient-records"))
                .with_partitions(part()),
        ]));
    fixup.apply(&gate, &mut resp);
    let ResponseKind::OffsetFetch(got) = wire_response(ApiKey::OffsetFetch, 7, &resp) else {
        unreachable!()
    };
    assert_eq!(
        got.topics
            .iter()
            .map(|t| t.name.0.to_string())
            .collect::<Vec<_>>(),
        vec!["claims.2026"]
    );
    // A caller without Read anywhere: the group is refused.
    let clinician = user(&["clinicians"]);
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &clinician,
        topic_names: &ids,
    };
    let mut r = wire_request(ApiKey::OffsetFetch, 7, &fetch);
    let Enforcement::Respond(resp) = gate.check(ApiKey::OffsetFetch, 7, &mut r).enforcement else {
        panic!()
    };
    let ResponseKind::OffsetFetch(got) = wire_response(ApiKey::OffsetFetch, 7, &resp) else {
        unreachable!()
    };
    assert_eq!(got.error_code, GROUP_AUTH);
    let v8 = OffsetFetchRequest::default().with_groups(vec![
        offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(GroupId(s("u-g"))),
    ]);
    let mut r = wire_request(ApiKey::OffsetFetch, 8, &v8);
    let Enforcement::Respond(resp) = gate.check(ApiKey::OffsetFetch, 8, &mut r).enforcement else {
        panic!()
    };
    let ResponseKind::OffsetFetch(got) = wire_response(ApiKey::OffsetFetch, 8, &resp) else {
        unreachable!()
    };
    assert_eq!(
        (got.groups[0].group_id.0.as_str(), got.groups[0].error_code),
        ("u-g", GROUP_AUTH)
    );
}

#[test]
fn cluster_apis_and_unknown_keys() {
    let pol = policy();
    let ids = HashMap::new();
    let analyst = user(&["analysts"]);
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &analyst,
        topic_names: &ids,
    };
    let Enforcement::Respond(resp) = gate.check_key(ApiKey::DescribeCluster as i16).enforcement
    else {
        panic!()
    };
    let ResponseKind::DescribeCluster(got) = wire_response(ApiKey::DescribeCluster, 0, &resp)
    else {
        unreachable!()
    };
    assert_eq!(got.error_code, CLUSTER_AUTH);
    let ops = user(&["ops"]);
    let gate_ops = Gate {
        break_glass: None,
        policy: &pol,
        principal: &ops,
        topic_names: &ids,
    };
    assert!(matches!(
        gate_ops
            .check_key(ApiKey::DescribeCluster as i16)
            .enforcement,
        Enforcement::Forward(_)
    ));
    assert!(matches!(
        gate.check_key(ApiKey::ApiVersions as i16).enforcement,
        Enforcement::Forward(_)
    ));
    assert!(matches!(
        gate.check_key(ApiKey::SaslHandshake as i16).enforcement,
        Enforcement::Forward(_)
    ));
    assert!(
        matches!(gate.check_key(4).enforcement, Enforcement::Close(_)),
        "LeaderAndIsr"
    );
    assert!(matches!(
        gate.check_key(1000).enforcement,
        Enforcement::Close(_)
    ));
    // CreateAcls: per-creation CLUSTER_AUTHORIZATION_FAILED.
    let acl = CreateAclsRequest::default()
        .with_creations(vec![create_acls_request::AclCreation::default()]);
    let mut r = wire_request(ApiKey::CreateAcls, 2, &acl);
    let Enforcement::Respond(resp) = gate.check(ApiKey::CreateAcls, 2, &mut r).enforcement else {
        panic!()
    };
    let ResponseKind::CreateAcls(got) = wire_response(ApiKey::CreateAcls, 2, &resp) else {
        unreachable!()
    };
    assert_eq!(got.results[0].error_code, CLUSTER_AUTH);
}

#[test]
fn describe_configs_topic_and_broker_resources() {
    let pol = policy();
    let ids = HashMap::new();
    let analyst = user(&["analysts"]);
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &analyst,
        topic_names: &ids,
    };
    let req = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("claims.2026")),
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("secret")),
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(s("1")),
    ]);
    let mut r = wire_request(ApiKey::DescribeConfigs, 4, &req);
    let Enforcement::Forward(fixup) = gate.check(ApiKey::DescribeConfigs, 4, &mut r).enforcement
    else {
        panic!()
    };
    let mut resp = ResponseKind::DescribeConfigs(DescribeConfigsResponse::default());
    fixup.apply(&gate, &mut resp);
    let ResponseKind::DescribeConfigs(got) = wire_response(ApiKey::DescribeConfigs, 4, &resp)
    else {
        unreachable!()
    };
    let got: Vec<(String, i16)> = got
        .results
        .iter()
        .map(|r| (r.resource_name.to_string(), r.error_code))
        .collect();
    assert_eq!(
        got,
        vec![("secret".into(), TOPIC_AUTH), ("1".into(), CLUSTER_AUTH)]
    );
}

#[test]
fn deny_rule_beats_allow_on_the_wire() {
    let pol = policy();
    let ids = HashMap::new();
    let analyst = user(&["analysts"]);
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &analyst,
        topic_names: &ids,
    };
    let mut req = wire_request(
        ApiKey::Fetch,
        11,
        &fetch_request(&[("claims.internal", Uuid::nil())]),
    );
    let checked = gate.check(ApiKey::Fetch, 11, &mut req);
    assert!(matches!(checked.enforcement, Enforcement::Respond(_)));
    assert!(
        matches!(&checked.decisions[0].decision, PolicyDecision::Deny { rule: Some(r), .. } if r == "no-internal")
    );
}

/// Every API key kafka-protocol knows has a deliberate row; the ones the
/// gate cannot govern are refused even to the most privileged caller; the
/// ones judged by key alone are refused to a caller with no rights.
#[test]
fn every_api_key_is_governed() {
    use streamgate_proxy::policy::apis::{ApiScope, api_scope};
    use streamgate_proxy::policy::decide::DenyReason;
    use streamgate_proxy::policy::enforce::needs_decoding;
    let pol = policy();
    let ids = HashMap::new();
    let ops = user(&["ops", "clinicians", "analysts"]);
    let nobody = user(&[]);
    let privileged = Gate {
        break_glass: None,
        policy: &pol,
        principal: &ops,
        topic_names: &ids,
    };
    let unprivileged = Gate {
        break_glass: None,
        policy: &pol,
        principal: &nobody,
        topic_names: &ids,
    };
    let mut walked = 0;
    for raw in 0..=i16::MAX {
        let Ok(key) = ApiKey::try_from(raw) else {
            continue;
        };
        walked += 1;
        let scope = api_scope(raw);
        assert_ne!(scope, ApiScope::Unknown, "{key:?} has no row");
        match scope {
            ApiScope::Refused(reason) => {
                let Enforcement::Close(why) = privileged.check_key(raw).enforcement else {
                    panic!("{key:?} is refused even to ops")
                };
                assert_eq!(why, reason, "{key:?}");
            }
            ApiScope::Topics(_) => assert!(needs_decoding(raw), "{key:?} is judged per topic"),
            ApiScope::Always => assert!(matches!(
                unprivileged.check_key(raw).enforcement,
                Enforcement::Forward(_)
            )),
            ApiScope::Group | ApiScope::Transaction | ApiScope::Cluster(_) => {
                if !needs_decoding(raw) {
                    assert!(
                        !matches!(
                            unprivileged.check_key(raw).enforcement,
                            Enforcement::Forward(_)
                        ),
                        "{key:?} is refused to a caller with no rights"
                    );
                }
            }
            ApiScope::Unknown => unreachable!(),
        }
    }
    assert!(walked >= 87, "walked {walked} API keys");
    for (key, reason) in [
        (ApiKey::ShareFetch, DenyReason::ShareGroups),
        (ApiKey::ShareAcknowledge, DenyReason::ShareGroups),
        (ApiKey::ShareGroupHeartbeat, DenyReason::ShareGroups),
        (ApiKey::CreateDelegationToken, DenyReason::DelegationTokens),
        (
            ApiKey::DescribeDelegationToken,
            DenyReason::DelegationTokens,
        ),
    ] {
        assert_eq!(api_scope(key as i16), ApiScope::Refused(reason), "{key:?}");
    }
}

/// DescribeTopicPartitions with no topic named asks for every topic: the
/// answer shows only what the caller may describe.
#[test]
fn describe_topic_partitions_for_all_topics_shows_only_describable_ones() {
    let pol = policy();
    let who = user(&["analysts"]);
    let ids = HashMap::new();
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &who,
        topic_names: &ids,
    };
    let mut req = wire_request(
        ApiKey::DescribeTopicPartitions,
        0,
        &DescribeTopicPartitionsRequest::default(),
    );
    let Enforcement::Forward(fixup) = gate
        .check(ApiKey::DescribeTopicPartitions, 0, &mut req)
        .enforcement
    else {
        panic!("forwarded")
    };
    assert!(fixup.needs_response_work(), "the answer is filtered");
    let mut resp = ResponseKind::DescribeTopicPartitions(
        DescribeTopicPartitionsResponse::default().with_topics(
            [
                "claims.2026",
                "claims.internal",
                "patient-records",
                "secret",
            ]
            .iter()
            .map(|n| {
                describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(t(n)))
            })
            .collect(),
        ),
    );
    fixup.apply(&gate, &mut resp);
    let ResponseKind::DescribeTopicPartitions(got) =
        wire_response(ApiKey::DescribeTopicPartitions, 0, &resp)
    else {
        unreachable!()
    };
    let names: Vec<String> = got
        .topics
        .iter()
        .map(|t| t.name.as_ref().unwrap().0.to_string())
        .collect();
    assert_eq!(names, vec!["claims.2026"]);
}

/// KIP-227: an incremental fetch lists only what changed, and the broker's
/// session keeps sending the rest. After a grant ends the client must not
/// keep receiving the topic: every fetch goes upstream sessionless and full,
/// and whatever the broker answers is cut to what the caller may read now.
#[test]
fn fetch_sessions_cannot_carry_a_topic_past_its_grant() {
    let pol = policy();
    let who = user(&["analysts"]);
    let ids = HashMap::new();
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &who,
        topic_names: &ids,
    };
    // An incremental fetch (session 77, epoch 5) that lists only claims.2026
    // and forgets nothing.
    let incremental = fetch_request(&[("claims.2026", Uuid::nil())])
        .with_session_id(77)
        .with_session_epoch(5);
    let mut req = wire_request(ApiKey::Fetch, 12, &incremental);
    let Enforcement::Forward(fixup) = gate.check(ApiKey::Fetch, 12, &mut req).enforcement else {
        panic!("forwarded")
    };
    assert!(fixup.request_changed(), "re-encoded without the session");
    let RequestKind::Fetch(fwd) = &req else {
        unreachable!()
    };
    assert_eq!(
        (fwd.session_id, fwd.session_epoch),
        (0, -1),
        "sessionless: the broker keeps no partition for this client"
    );
    // The broker (a session created elsewhere) still sends patient-records.
    let data = |name: &'static str| {
        fetch_response::FetchableTopicResponse::default()
            .with_topic(t(name))
            .with_partitions(vec![
                fetch_response::PartitionData::default()
                    .with_partition_index(0)
                    .with_records(Some(Bytes::from_static(b"PHI"))),
            ])
    };
    let mut resp = ResponseKind::Fetch(
        FetchResponse::default()
            .with_session_id(77)
            .with_responses(vec![data("claims.2026"), data("patient-records")]),
    );
    fixup.apply(&gate, &mut resp);
    let ResponseKind::Fetch(got) = wire_response(ApiKey::Fetch, 12, &resp) else {
        unreachable!()
    };
    let names: Vec<&str> = got.responses.iter().map(|t| t.topic.0.as_str()).collect();
    assert_eq!(
        names,
        vec!["claims.2026"],
        "nothing the caller may not read"
    );
    assert_eq!(
        got.session_id, 0,
        "the client never gets a session to reuse"
    );
}

/// Groups and transactional ids are scoped: a caller allowed to read some
/// topic cannot join, describe, reset or delete another tenant's group, nor
/// fence another app's producer through its transactional id.
#[test]
fn groups_and_transactional_ids_are_scoped_to_their_owner() {
    let pol = policy();
    let ids = HashMap::new();
    let analyst = Principal {
        name: "claims-etl".into(),
        ..user(&["analysts", "clinicians"])
    };
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &analyst,
        topic_names: &ids,
    };
    let g = |s: &'static str| GroupId(StrBytes::from_static_str(s));
    // Its own group (named after it): forwarded. Another's: refused.
    let mut own = wire_request(
        ApiKey::JoinGroup,
        7,
        &JoinGroupRequest::default().with_group_id(g("claims-etl-consumers")),
    );
    assert!(matches!(
        gate.check(ApiKey::JoinGroup, 7, &mut own).enforcement,
        Enforcement::Forward(_)
    ));
    for (key, version, request) in [
        (
            ApiKey::JoinGroup,
            7,
            wire_request(
                ApiKey::JoinGroup,
                7,
                &JoinGroupRequest::default().with_group_id(g("billing")),
            ),
        ),
        (
            ApiKey::OffsetDelete,
            0,
            wire_request(
                ApiKey::OffsetDelete,
                0,
                &OffsetDeleteRequest::default().with_group_id(g("billing")),
            ),
        ),
        (
            ApiKey::Heartbeat,
            4,
            wire_request(
                ApiKey::Heartbeat,
                4,
                &HeartbeatRequest::default().with_group_id(g("billing")),
            ),
        ),
    ] {
        let mut request = request;
        let Enforcement::Respond(resp) = gate.check(key, version, &mut request).enforcement else {
            panic!("{key:?} on another tenant's group is answered locally")
        };
        let code = match wire_response(key, version, &resp) {
            ResponseKind::JoinGroup(r) => r.error_code,
            ResponseKind::OffsetDelete(r) => r.error_code,
            ResponseKind::Heartbeat(r) => r.error_code,
            other => panic!("{other:?}"),
        };
        assert_eq!(code, GROUP_AUTH, "{key:?}");
    }
    // Fencing another app's producer: InitProducerId with its transactional id.
    let t = |s: &'static str| TransactionalId(StrBytes::from_static_str(s));
    let mut fence = wire_request(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default().with_transactional_id(Some(t("billing-tx-1"))),
    );
    let Enforcement::Respond(resp) = gate
        .check(ApiKey::InitProducerId, 4, &mut fence)
        .enforcement
    else {
        panic!("refused")
    };
    let ResponseKind::InitProducerId(got) = wire_response(ApiKey::InitProducerId, 4, &resp) else {
        unreachable!()
    };
    assert_eq!(got.error_code, TXN_AUTH);
    let mut mine = wire_request(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default().with_transactional_id(Some(t("claims-etl.tx"))),
    );
    assert!(matches!(
        gate.check(ApiKey::InitProducerId, 4, &mut mine).enforcement,
        Enforcement::Forward(_)
    ));
    // DescribeGroups: the other tenant's group is answered refused, the own
    // one goes to the broker.
    let mut describe = wire_request(
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![g("claims-etl"), g("billing")]),
    );
    let Enforcement::Forward(fixup) = gate
        .check(ApiKey::DescribeGroups, 5, &mut describe)
        .enforcement
    else {
        panic!("forwarded")
    };
    let RequestKind::DescribeGroups(fwd) = &describe else {
        unreachable!()
    };
    assert_eq!(fwd.groups, vec![g("claims-etl")]);
    let mut resp =
        ResponseKind::DescribeGroups(DescribeGroupsResponse::default().with_groups(vec![
            describe_groups_response::DescribedGroup::default().with_group_id(g("claims-etl")),
        ]));
    assert!(fixup.apply(&gate, &mut resp));
    let ResponseKind::DescribeGroups(got) = wire_response(ApiKey::DescribeGroups, 5, &resp) else {
        unreachable!()
    };
    let got: Vec<(String, i16)> = got
        .groups
        .iter()
        .map(|d| (d.group_id.to_string(), d.error_code))
        .collect();
    assert_eq!(
        got,
        vec![("claims-etl".into(), 0), ("billing".into(), GROUP_AUTH)]
    );
    // ListGroups: only the caller's groups come back.
    let mut list = wire_request(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    let Enforcement::Forward(fixup) = gate.check(ApiKey::ListGroups, 4, &mut list).enforcement
    else {
        panic!("forwarded")
    };
    let mut resp = ResponseKind::ListGroups(
        ListGroupsResponse::default().with_groups(
            ["claims-etl-consumers", "billing", "claims-etlx"]
                .iter()
                .map(|n| list_groups_response::ListedGroup::default().with_group_id(g(n)))
                .collect(),
        ),
    );
    assert!(fixup.apply(&gate, &mut resp));
    let ResponseKind::ListGroups(got) = wire_response(ApiKey::ListGroups, 4, &resp) else {
        unreachable!()
    };
    let names: Vec<String> = got.groups.iter().map(|g| g.group_id.to_string()).collect();
    assert_eq!(names, vec!["claims-etl-consumers"]);
}

/// Metadata v0–v3 cannot say "do not auto-create": a caller who may only
/// describe a topic must not create it by naming it. The request goes
/// upstream as "all topics" and the answer is cut back to what was asked.
#[test]
fn legacy_metadata_never_auto_creates_for_callers_without_create() {
    let pol = policy();
    let who = user(&["analysts"]);
    let ids = HashMap::new();
    let gate = Gate {
        break_glass: None,
        policy: &pol,
        principal: &who,
        topic_names: &ids,
    };
    for version in [0, 1, 3] {
        let asked = ["claims.2026", "claims.new"]
            .iter()
            .map(|n| metadata_request::MetadataRequestTopic::default().with_name(Some(t(n))))
            .collect();
        let mut req = wire_request(
            ApiKey::Metadata,
            version,
            &MetadataRequest::default().with_topics(Some(asked)),
        );
        let Enforcement::Forward(fixup) =
            gate.check(ApiKey::Metadata, version, &mut req).enforcement
        else {
            panic!("forwarded")
        };
        let RequestKind::Metadata(fwd) = &req else {
            unreachable!()
        };
        assert!(
            fwd.topics.as_ref().is_none_or(|t| t.is_empty()),
            "v{version}: no topic named upstream, so none is auto-created"
        );
        let mut resp = metadata_response(&["claims.2026", "claims.other", "patient-events"]);
        assert!(fixup.apply(&gate, &mut resp));
        let ResponseKind::Metadata(got) = wire_response(ApiKey::Metadata, version, &resp) else {
            unreachable!()
        };
        let got: Vec<(String, i16)> = got
            .topics
            .iter()
            .map(|t| (t.name.as_ref().unwrap().0.to_string(), t.error_code))
            .collect();
        assert_eq!(
            got,
            vec![
                ("claims.2026".into(), 0),
                (
                    "claims.new".into(),
                    ResponseError::UnknownTopicOrPartition.code()
                )
            ],
            "v{version}"
        );
    }
}
