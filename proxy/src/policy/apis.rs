//! Which Kafka API needs which StreamPolicy operation, and on what (api.md).
//!
//! - `Write`    = Produce and the transactional-write APIs;
//! - `Read`     = Fetch and the consumer-group APIs needed to consume;
//! - `Describe` = Metadata, ListOffsets, DescribeConfigs, …;
//! - `Create`   = CreateTopics, CreatePartitions;
//! - `Admin`    = everything else;
//! - ApiVersions, SaslHandshake, SaslAuthenticate are always allowed (a
//!   client must negotiate and authenticate before it can be anyone), as are
//!   the KIP-714 telemetry APIs, which carry client metrics, never records;
//! - APIs the proxy cannot govern are refused whatever the policy says:
//!   share groups (KIP-932: their records would pass unmasked), delegation
//!   tokens (a token would be minted for the gateway's own broker user), the
//!   broker-to-broker and controller APIs;
//! - a raw key kafka-protocol does not know is refused. The match below
//!   has no catch-all: an API a kafka-protocol upgrade adds does not
//!   compile until it is given a row.
use kafka_protocol::messages::ApiKey;
use streamgate_crds::{BlockedOperation, Operation};

use super::decide::DenyReason;

/// How a request of an API is authorized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiScope {
    /// Never refused by policy.
    Always,
    /// Decided per topic named in the request (the request must be decoded).
    Topics(Operation),
    /// Group coordination: allowed when the caller holds `Read` on at least
    /// one topic; the data itself is guarded per topic by Fetch/OffsetCommit.
    Group,
    /// Transaction coordination: allowed when the caller holds `Write` on at
    /// least one topic; the partitions are checked per topic.
    Transaction,
    /// Cluster-wide: needs the operation on every topic (a rule over `**`).
    Cluster(Operation),
    /// An API the proxy knows and refuses whatever the policy says, for this reason.
    Refused(DenyReason),
    /// Not an API the proxy knows: refused.
    Unknown,
}

impl ApiScope {
    /// The operation a request of this scope is checked for; `None` where no
    /// operation is (always allowed, or refused whatever the policy says).
    pub fn operation(self) -> Option<Operation> {
        match self {
            ApiScope::Topics(op) | ApiScope::Cluster(op) => Some(op),
            ApiScope::Group => Some(Operation::Read),
            ApiScope::Transaction => Some(Operation::Write),
            ApiScope::Always | ApiScope::Refused(_) | ApiScope::Unknown => None,
        }
    }

    /// Refused before any policy is consulted (and not offered in ApiVersions).
    pub fn is_refused(self) -> bool {
        matches!(self, ApiScope::Refused(_) | ApiScope::Unknown)
    }
}

/// The operation an audit record names for an API: the one the policy checks,
/// read from [`api_scope`] so the record and the check cannot disagree. APIs
/// no operation governs (negotiation, telemetry, the ones the proxy refuses
/// outright) are named `Describe`.
pub fn operation_of(api: ApiKey) -> Operation {
    api_scope(api as i16)
        .operation()
        .unwrap_or(Operation::Describe)
}

/// The scope of an API key (raw `i16`, so unknown keys are representable).
pub fn api_scope(api_key: i16) -> ApiScope {
    use ApiKey::*;
    use Operation::*;
    let Ok(key) = ApiKey::try_from(api_key) else {
        return ApiScope::Unknown;
    };
    match key {
        ApiVersions
        | SaslHandshake
        | SaslAuthenticate
        | GetTelemetrySubscriptions
        | PushTelemetry => ApiScope::Always,
        Produce => ApiScope::Topics(Write),
        Fetch => ApiScope::Topics(Read),
        OffsetCommit | OffsetFetch | TxnOffsetCommit => ApiScope::Topics(Read),
        AddPartitionsToTxn => ApiScope::Topics(Write),
        Metadata
        | ListOffsets
        | OffsetForLeaderEpoch
        | DescribeConfigs
        | DescribeProducers
        | DescribeTopicPartitions => ApiScope::Topics(Describe),
        CreateTopics | CreatePartitions => ApiScope::Topics(Create),
        DeleteTopics | DeleteRecords | AlterConfigs | IncrementalAlterConfigs => {
            ApiScope::Topics(Admin)
        }
        FindCoordinator
        | JoinGroup
        | SyncGroup
        | Heartbeat
        | LeaveGroup
        | DescribeGroups
        | ListGroups
        | ConsumerGroupHeartbeat
        | ConsumerGroupDescribe
        | OffsetDelete => ApiScope::Group,
        InitProducerId | AddOffsetsToTxn | EndTxn => ApiScope::Transaction,
        DescribeCluster
        | DescribeAcls
        | ListPartitionReassignments
        | DescribeLogDirs
        | DescribeClientQuotas
        | DescribeUserScramCredentials
        | DescribeTransactions
        | ListTransactions
        | DescribeQuorum
        | ListConfigResources => ApiScope::Cluster(Describe),
        CreateAcls
        | DeleteAcls
        | AlterReplicaLogDirs
        | ElectLeaders
        | AlterPartitionReassignments
        | AlterClientQuotas
        | AlterUserScramCredentials
        | UpdateFeatures
        | DeleteGroups => ApiScope::Cluster(Admin),
        ShareGroupHeartbeat
        | ShareGroupDescribe
        | ShareFetch
        | ShareAcknowledge
        | DescribeShareGroupOffsets
        | AlterShareGroupOffsets
        | DeleteShareGroupOffsets => ApiScope::Refused(DenyReason::ShareGroups),
        CreateDelegationToken
        | RenewDelegationToken
        | ExpireDelegationToken
        | DescribeDelegationToken => ApiScope::Refused(DenyReason::DelegationTokens),
        // Broker-to-broker and controller APIs are never a client's business.
        WriteTxnMarkers
        | Vote
        | BeginQuorumEpoch
        | EndQuorumEpoch
        | AlterPartition
        | Envelope
        | FetchSnapshot
        | BrokerRegistration
        | BrokerHeartbeat
        | UnregisterBroker
        | AllocateProducerIds
        | ControllerRegistration
        | AssignReplicasToDirs
        | AddRaftVoter
        | RemoveRaftVoter
        | UpdateRaftVoter
        | InitializeShareGroupState
        | ReadShareGroupState
        | WriteShareGroupState
        | DeleteShareGroupState
        | ReadShareGroupStateSummary => ApiScope::Refused(DenyReason::BrokerInternal),
    }
}

/// The `blockedOperations` entry naming this API, if any.
pub fn blocked_as(api_key: i16) -> Option<BlockedOperation> {
    use ApiKey::*;
    Some(match ApiKey::try_from(api_key).ok()? {
        DeleteTopics => BlockedOperation::DeleteTopics,
        DeleteRecords => BlockedOperation::DeleteRecords,
        AlterConfigs => BlockedOperation::AlterConfigs,
        IncrementalAlterConfigs => BlockedOperation::IncrementalAlterConfigs,
        CreateAcls => BlockedOperation::CreateAcls,
        DeleteAcls => BlockedOperation::DeleteAcls,
        AlterPartitionReassignments => BlockedOperation::AlterPartitionReassignments,
        CreateTopics => BlockedOperation::CreateTopics,
        CreatePartitions => BlockedOperation::CreatePartitions,
        DeleteGroups => BlockedOperation::DeleteGroups,
        AlterClientQuotas => BlockedOperation::AlterClientQuotas,
        AlterUserScramCredentials => BlockedOperation::AlterUserScramCredentials,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_md_mapping() {
        use ApiKey::*;
        use Operation::*;
        let cases = [
            (Produce, ApiScope::Topics(Write)),
            (AddPartitionsToTxn, ApiScope::Topics(Write)),
            (Fetch, ApiScope::Topics(Read)),
            (OffsetCommit, ApiScope::Topics(Read)),
            (OffsetFetch, ApiScope::Topics(Read)),
            (JoinGroup, ApiScope::Group),
            (SyncGroup, ApiScope::Group),
            (Heartbeat, ApiScope::Group),
            (LeaveGroup, ApiScope::Group),
            (FindCoordinator, ApiScope::Group),
            (Metadata, ApiScope::Topics(Describe)),
            (ListOffsets, ApiScope::Topics(Describe)),
            (DescribeConfigs, ApiScope::Topics(Describe)),
            (CreateTopics, ApiScope::Topics(Create)),
            (CreatePartitions, ApiScope::Topics(Create)),
            (DeleteTopics, ApiScope::Topics(Admin)),
            (DeleteGroups, ApiScope::Cluster(Admin)),
            (CreateAcls, ApiScope::Cluster(Admin)),
            (DescribeCluster, ApiScope::Cluster(Describe)),
            (ApiVersions, ApiScope::Always),
            (SaslHandshake, ApiScope::Always),
            (SaslAuthenticate, ApiScope::Always),
            (InitProducerId, ApiScope::Transaction),
            (EndTxn, ApiScope::Transaction),
            (
                WriteTxnMarkers,
                ApiScope::Refused(DenyReason::BrokerInternal),
            ),
            (Vote, ApiScope::Refused(DenyReason::BrokerInternal)),
            (ShareFetch, ApiScope::Refused(DenyReason::ShareGroups)),
            (ShareAcknowledge, ApiScope::Refused(DenyReason::ShareGroups)),
            (
                CreateDelegationToken,
                ApiScope::Refused(DenyReason::DelegationTokens),
            ),
        ];
        for (key, want) in cases {
            assert_eq!(api_scope(key as i16), want, "{key:?}");
        }
        assert_eq!(api_scope(-1), ApiScope::Unknown);
        assert_eq!(
            api_scope(4),
            ApiScope::Unknown,
            "LeaderAndIsr (removed from the protocol)"
        );
        assert_eq!(api_scope(9999), ApiScope::Unknown);
        assert_eq!(
            blocked_as(DeleteTopics as i16),
            Some(BlockedOperation::DeleteTopics)
        );
        assert_eq!(blocked_as(Produce as i16), None);
    }

    #[test]
    fn the_audited_operation_is_the_authorized_one_for_every_api_key() {
        for raw in 0..=i16::MAX {
            let Ok(key) = ApiKey::try_from(raw) else {
                continue;
            };
            if let Some(authorized) = api_scope(raw).operation() {
                assert_eq!(operation_of(key), authorized, "{key:?}");
            }
        }
        // Audited otherwise before the two tables became one.
        use ApiKey::*;
        for (key, op) in [
            (FindCoordinator, Operation::Read),
            (DescribeGroups, Operation::Read),
            (ListGroups, Operation::Read),
            (CreateAcls, Operation::Admin),
            (TxnOffsetCommit, Operation::Read),
        ] {
            assert_eq!(operation_of(key), op, "{key:?}");
        }
    }
}
