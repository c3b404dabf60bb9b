//! `AccessApproval` (`aa`): a just-in-time grant decided by a person.
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, Operation, SubjectKind};

/// A request for just-in-time access, created by the sidecar, decided by a person.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "streamgate.dev",
    version = "v1alpha1",
    kind = "AccessApproval",
    namespaced,
    status = "AccessApprovalStatus",
    shortname = "aa",
    category = "streamgate"
)]
#[serde(rename_all = "camelCase")]
pub struct AccessApprovalSpec {
    pub requester: Requester,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
    /// The StreamPolicy holding the rule.
    pub policy: String,
    /// The rule with `approval` that matched.
    pub rule: String,
    pub topics: Vec<String>,
    pub operations: Vec<Operation>,
    /// Requested duration (humantime), capped by the rule's `maxDuration`.
    pub duration: String,
    /// Set by a person: `Approved` or `Denied`.
    #[serde(default)]
    pub decision: Decision,
    /// Written by the admission webhook from the request's user; never trusted from input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
}

/// Who asked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Requester {
    pub kind: SubjectKind,
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The pod the request came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// A person's decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Decision {
    #[default]
    Pending,
    Approved,
    Denied,
}

/// Lifecycle of a grant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ApprovalPhase {
    #[default]
    Pending,
    Approved,
    Denied,
    Expired,
}

/// Observed state of an AccessApproval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessApprovalStatus {
    #[serde(default)]
    pub phase: ApprovalPhase,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
