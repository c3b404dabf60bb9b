//! `AccessApproval` (`aa`): a just-in-time grant decided by a person.
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, Operation, SubjectKind};

/// A request for just-in-time access, created by the sidecar, decided by a person.
// Each `printcolumn(..)` repeats `type_`/`priority`; clippy reads that as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "streamgate.dev",
    version = "v1alpha1",
    kind = "AccessApproval",
    namespaced,
    status = "AccessApprovalStatus",
    shortname = "aa",
    category = "streamgate",
    doc = "A just-in-time grant: created by the sidecar, decided by a person with kubectl patch.",
    printcolumn(
        name = "Requester",
        type_ = "string",
        json_path = ".spec.requester.name"
    ),
    printcolumn(name = "Rule", type_ = "string", json_path = ".spec.rule"),
    printcolumn(
        name = "Topics",
        type_ = "string",
        json_path = ".spec.topics",
        priority = 1
    ),
    printcolumn(
        name = "Duration",
        type_ = "string",
        json_path = ".spec.duration",
        priority = 1
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".status.expiresAt",
        description = "When an approved grant ends (RFC 3339)"
    ),
    printcolumn(name = "Decided-By", type_ = "string", json_path = ".spec.decidedBy"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "self.requester == oldSelf.requester && self.policy == oldSelf.policy && self.rule == oldSelf.rule && self.topics == oldSelf.topics && self.operations == oldSelf.operations && self.duration == oldSelf.duration"
).message("the request (requester, policy, rule, topics, operations, duration) is immutable; create a new AccessApproval instead").reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new(
    "has(self.workload) == has(oldSelf.workload) && (!has(self.workload) || self.workload == oldSelf.workload)"
).message("spec.workload is immutable").reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new(
    "oldSelf.decision == 'Pending' || self.decision == oldSelf.decision"
).message("the decision is final once it is Approved or Denied").reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new(
    "oldSelf.decision == 'Pending' || (has(self.decidedBy) == has(oldSelf.decidedBy) && (!has(self.decidedBy) || self.decidedBy == oldSelf.decidedBy))"
).message("spec.decidedBy cannot change once the decision is made").reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new(
    "(has(self.breakGlass) ? self.breakGlass : false) == (has(oldSelf.breakGlass) ? oldSelf.breakGlass : false) && (has(self.reason) ? self.reason : '') == (has(oldSelf.reason) ? oldSelf.reason : '')"
).message("spec.breakGlass and spec.reason are immutable").reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new(
    "!has(oldSelf.review) || (has(self.review) && self.review == oldSelf.review && (has(self.reviewNote) ? self.reviewNote : '') == (has(oldSelf.reviewNote) ? oldSelf.reviewNote : ''))"
).message("the review is final once given").reason(Reason::FieldValueForbidden))]
#[serde(rename_all = "camelCase")]
pub struct AccessApprovalSpec {
    pub requester: Requester,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
    /// The StreamPolicy holding the rule.
    #[schemars(length(max = 253))]
    pub policy: String,
    /// The rule with `approval` that matched.
    #[schemars(length(max = 63))]
    pub rule: String,
    /// Topics the grant covers (Kafka topic names are at most 249 characters).
    #[schemars(length(min = 1, max = 64), inner(length(max = 249)))]
    pub topics: Vec<String>,
    /// Operations the grant covers.
    #[schemars(length(min = 1, max = 5))]
    pub operations: Vec<Operation>,
    /// Requested duration (humantime, e.g. `30m`), capped by the rule's `maxDuration`.
    #[schemars(length(max = 64))]
    pub duration: String,
    /// Set by a person: `Approved` or `Denied`.
    #[serde(default)]
    pub decision: Decision,
    /// Written by the admission webhook from the request's user; never trusted from input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub decided_by: Option<String>,
    /// Emergency access: granted at once under a rule with `breakGlass`
    /// (no approver), for at most its `maxDuration`, and reviewed afterwards.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
    /// Why break-glass was invoked (required with `breakGlass`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub reason: Option<String>,
    /// The retrospective review of a break-glass use, by a reviewer of the
    /// rule (never the requester); final once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "review_schema")]
    pub review: Option<Review>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub review_note: Option<String>,
    /// Written by the admission webhook from the reviewing user; never trusted from input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub reviewed_by: Option<String>,
}

/// `review` as a plain string enum: the derived schema of an optional enum
/// lists `null` among its values, which kube-apiserver 1.20 refuses in a CRD.
fn review_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["Justified", "NotJustified"]
    })
}

/// A reviewer's verdict on a break-glass use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Review {
    Justified,
    NotJustified,
}

/// Who asked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Requester {
    pub kind: SubjectKind,
    /// OIDC username or ServiceAccount name.
    #[schemars(length(max = 512))]
    pub name: String,
    /// OIDC groups at the time of the request.
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(max = 512)))]
    pub groups: Vec<String>,
    /// For an OIDC requester: which issuer and which claim `name` came from,
    /// so the approval webhook can map it to a Kubernetes username the way
    /// the API server does (`--oidc-username-claim`/`--oidc-username-prefix`)
    /// and refuse the requester deciding their own request. Written by the
    /// sidecar; absent for ServiceAccounts and for requests of older sidecars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<RequesterOidc>,
}

/// Where an OIDC requester's name came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequesterOidc {
    /// The token's issuer (`iss`).
    #[schemars(length(max = 512))]
    pub issuer: String,
    /// The claim `requester.name` holds (`sub`, `email`, …).
    #[schemars(length(max = 128))]
    pub username_claim: String,
}

/// The pod the request came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    #[schemars(length(max = 253))]
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
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
    /// Granted by break-glass: live until `expiresAt`, awaiting (or having had)
    /// its retrospective review; stays BreakGlass as the record of the use.
    BreakGlass,
}

/// Observed state of an AccessApproval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
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
    /// Standard conditions, one per `type`.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

impl AccessApprovalStatus {
    /// Is this an approved grant that has not expired at `now`? An
    /// unparseable or missing `expiresAt` is not live (fail closed).
    pub fn is_live(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        matches!(
            self.phase,
            ApprovalPhase::Approved | ApprovalPhase::BreakGlass
        ) && self
            .expires_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|expiry| expiry > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_approved_unexpired_grant_is_live() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .to_utc();
        let status = |phase, expires: Option<&str>| AccessApprovalStatus {
            phase,
            expires_at: expires.map(str::to_string),
            ..Default::default()
        };
        assert!(status(ApprovalPhase::Approved, Some("2026-11-27T10:30:00Z")).is_live(now));
        assert!(!status(ApprovalPhase::Approved, Some("2026-11-27T09:59:59Z")).is_live(now));
        assert!(!status(ApprovalPhase::Approved, None).is_live(now));
        assert!(!status(ApprovalPhase::Approved, Some("tomorrow")).is_live(now));
        assert!(!status(ApprovalPhase::Pending, Some("2026-11-27T10:30:00Z")).is_live(now));
        assert!(!status(ApprovalPhase::Expired, Some("2026-11-27T10:30:00Z")).is_live(now));
        assert!(status(ApprovalPhase::BreakGlass, Some("2026-11-27T10:30:00Z")).is_live(now));
        assert!(!status(ApprovalPhase::BreakGlass, Some("2026-11-27T09:00:00Z")).is_live(now));
    }
}
