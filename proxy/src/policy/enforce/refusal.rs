//! The one refusal builder. Every error answer the gate makes — a request
//! refused whole, topics trimmed from a forwarded one and merged back into
//! the broker's answer — is built here from a request's entries and the
//! per-API [`TopicEntry`]/[`ConfigEntry`] impls, so an API's refusal shape is
//! written once, beside its check.
use kafka_protocol::messages::{ApiKey, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::Enforcement;
use crate::policy::decide::DenyReason;

/// The error message the answers that carry one say.
pub(super) fn message() -> Option<StrBytes> {
    Some(StrBytes::from_static_str("refused by streamgate policy"))
}

/// A refused topic and the partitions the request named for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Denied {
    pub(super) name: TopicName,
    pub(super) id: Uuid,
    pub(super) partitions: Vec<i32>,
}

/// A refused config resource (its code differs for topics and the broker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DeniedResource {
    pub(super) resource_type: i8,
    pub(super) name: StrBytes,
    pub(super) code: i16,
}

/// A topic entry of a request: what names it, and how the answer refuses it.
pub(super) trait TopicEntry {
    /// The answer's entry for one such topic.
    type Refused;
    /// The topic's name; empty where the request names it by id only.
    fn name(&self) -> TopicName;
    fn id(&self) -> Uuid {
        Uuid::nil()
    }
    fn partitions(&self) -> Vec<i32> {
        Vec::new()
    }
    /// The answer's entry refusing `denied` with `code`.
    fn refused(denied: &Denied, code: i16) -> Self::Refused;
    /// The answer's list of such entries (`None`: an answer of another API).
    fn answers(response: &mut ResponseKind) -> Option<&mut Vec<Self::Refused>>;
    /// An answer with no entries yet.
    fn empty() -> ResponseKind;

    fn denied(&self) -> Denied {
        Denied {
            name: self.name(),
            id: self.id(),
            partitions: self.partitions(),
        }
    }
}

/// The `answers` and `empty` of an entry whose refusals go in the list
/// `$list` of a `ResponseKind::$kind` answer.
macro_rules! answer_list {
    ($kind:ident, $list:ident) => {
        fn answers(response: &mut ResponseKind) -> Option<&mut Vec<Self::Refused>> {
            match response {
                ResponseKind::$kind(r) => Some(&mut r.$list),
                _ => None,
            }
        }
        fn empty() -> ResponseKind {
            ResponseKind::$kind(Default::default())
        }
    };
}
pub(super) use answer_list;

/// A config resource of a request (DescribeConfigs, AlterConfigs, …).
pub(super) trait ConfigEntry {
    type Refused;
    fn key(&self) -> (i8, &StrBytes);
    fn refused(denied: &DeniedResource) -> Self::Refused;
    fn answers(response: &mut ResponseKind) -> Option<&mut Vec<Self::Refused>>;
    fn empty() -> ResponseKind;
}

/// Adds refused topics to an answer: kept with a forwarded request, so the
/// broker's answer gets them back (a plain `fn`, chosen by the entry type).
pub(super) type Merge = fn(&mut ResponseKind, &[Denied], i16);
/// Adds refused config resources to an answer.
pub(super) type MergeResources = fn(&mut ResponseKind, &[DeniedResource]);

/// Add `denied`, refused with `code`, to `response`.
pub(super) fn merge<T: TopicEntry>(response: &mut ResponseKind, denied: &[Denied], code: i16) {
    if let Some(list) = T::answers(response) {
        list.extend(denied.iter().map(|d| T::refused(d, code)));
    }
}

pub(super) fn merge_resources<T: ConfigEntry>(
    response: &mut ResponseKind,
    denied: &[DeniedResource],
) {
    if let Some(list) = T::answers(response) {
        list.extend(denied.iter().map(T::refused));
    }
}

/// A local answer refusing `denied` with `code`.
pub(super) fn answer<T: TopicEntry>(denied: &[Denied], code: i16) -> ResponseKind {
    let mut response = T::empty();
    merge::<T>(&mut response, denied, code);
    response
}

pub(super) fn answer_resources<T: ConfigEntry>(denied: &[DeniedResource]) -> ResponseKind {
    let mut response = T::empty();
    merge_resources::<T>(&mut response, denied);
    response
}

/// A local answer refusing every entry of a request with `code`.
pub(super) fn refuse_every<T: TopicEntry>(items: &[T], code: i16) -> ResponseKind {
    let denied: Vec<Denied> = items.iter().map(T::denied).collect();
    answer::<T>(&denied, code)
}

/// Answer with the API's top-level error where it has one; otherwise close
/// (the API has nowhere to put the refusal).
pub(super) fn top_level(api_key: ApiKey, code: i16, otherwise: DenyReason) -> Enforcement {
    match top_level_error(api_key, code) {
        Some(r) => Enforcement::Respond(r),
        None => Enforcement::Close(otherwise),
    }
}

/// A response carrying only a top-level error, for APIs refused by key.
pub fn top_level_error(api_key: ApiKey, code: i16) -> Option<ResponseKind> {
    use ApiKey as K;
    use kafka_protocol::messages::*;
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

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{offset_commit_request, produce_request};

    fn name(s: &'static str) -> TopicName {
        TopicName(StrBytes::from_static_str(s))
    }

    #[test]
    fn a_request_refused_whole_answers_every_partition_with_the_code() {
        let topics = vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(name("a"))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(0),
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(3),
                ]),
        ];
        let ResponseKind::OffsetCommit(r) = refuse_every(&topics, 30) else {
            panic!("an OffsetCommit answer")
        };
        assert_eq!(r.topics.len(), 1);
        let codes: Vec<(i32, i16)> = r.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.error_code))
            .collect();
        assert_eq!(codes, vec![(0, 30), (3, 30)]);
    }

    #[test]
    fn refusals_merge_into_the_brokers_answer_and_not_into_another_apis() {
        let denied = vec![Denied {
            name: name("secret"),
            id: Uuid::nil(),
            partitions: vec![1],
        }];
        let mut produce = ResponseKind::Produce(Default::default());
        merge::<produce_request::TopicProduceData>(&mut produce, &denied, 29);
        let ResponseKind::Produce(r) = &produce else {
            panic!("a Produce answer")
        };
        assert_eq!(r.responses[0].partition_responses[0].error_code, 29);
        assert_eq!(r.responses[0].partition_responses[0].base_offset, -1);
        let mut fetch = ResponseKind::Fetch(Default::default());
        merge::<produce_request::TopicProduceData>(&mut fetch, &denied, 29);
        let ResponseKind::Fetch(f) = &fetch else {
            panic!("a Fetch answer")
        };
        assert!(f.responses.is_empty());
    }
}
