//! Types shared by the three kinds: subjects, operations, conditions.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who a rule is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SubjectKind {
    /// An OIDC username (the configured username claim, default `sub`).
    User,
    /// An OIDC group (the configured groups claim, default `groups`).
    Group,
    /// A Kubernetes ServiceAccount (workload identity).
    ServiceAccount,
}

/// A subject in a rule, an exemption or an approver list.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    pub kind: SubjectKind,
    pub name: String,
    /// Only for `ServiceAccount`; defaults to the namespace of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What a caller does to a topic. Kafka APIs map onto these (see api.md).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Operation {
    /// Produce (and transactional writes).
    Write,
    /// Fetch plus the consumer-group APIs needed to consume.
    Read,
    /// Metadata, ListOffsets, DescribeConfigs, …
    Describe,
    /// CreateTopics, CreatePartitions.
    Create,
    /// Everything else.
    Admin,
}

/// Kafka APIs a policy may block outright, whatever the rules say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BlockedOperation {
    DeleteTopics,
    DeleteRecords,
    AlterConfigs,
    IncrementalAlterConfigs,
    CreateAcls,
    DeleteAcls,
    AlterPartitionReassignments,
    CreateTopics,
    CreatePartitions,
    DeleteGroups,
    AlterClientQuotas,
    AlterUserScramCredentials,
}

/// A standard Kubernetes condition, kept as a map-list keyed by `type`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `"True"`, `"False"` or `"Unknown"`.
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
