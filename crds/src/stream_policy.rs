//! `StreamPolicy` (`sp`): who may do what to which topics.
use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{BlockedOperation, Condition, Operation, Subject};

/// Who may do what to which topics, for the injected workloads of a namespace.
// Each `printcolumn(..)` repeats `type_`/`priority`; clippy reads that as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "streamgate.dev",
    version = "v1alpha1",
    kind = "StreamPolicy",
    namespaced,
    status = "StreamPolicyStatus",
    shortname = "sp",
    category = "streamgate",
    doc = "Who may do what to which Kafka topics, for the injected workloads of a namespace.",
    printcolumn(
        name = "Workloads",
        type_ = "integer",
        json_path = ".status.workloads",
        description = "Injected pods this policy currently governs"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the policy is valid and distributed"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.rules) || self.rules.all(r, self.rules.exists_one(o, o.name == r.name))"
).message("rule names must be unique within a StreamPolicy").reason(Reason::FieldValueDuplicate))]
#[serde(rename_all = "camelCase")]
pub struct StreamPolicySpec {
    /// Which injected pods this policy governs; omitted = all in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// How callers prove who they are.
    #[serde(default)]
    pub identity: IdentitySpec,
    /// Allow/Deny rules; a matching Deny always wins; no match = deny.
    /// Keyed by `name` (a map-list), so server-side apply merges rules by name.
    #[serde(default)]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub rules: Vec<PolicyRule>,
    /// Kafka APIs refused whatever the rules say.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub blocked_operations: Vec<BlockedOperation>,
    /// What the audit trail records and what happens when it cannot.
    #[serde(default)]
    pub audit: AuditSpec,
}

/// Label selector over the injected pods (matchLabels only).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// Identity sources the sidecar accepts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentitySpec {
    /// SASL/OAUTHBEARER bearer tokens from the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcIdentity>,
    /// SASL/OAUTHBEARER tokens that are signed SAML 2.0 assertions (or
    /// signed Responses), base64-encoded. A policy trusts one token issuer:
    /// `oidc` or `saml`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saml: Option<SamlIdentity>,
    /// A connection without SASL is the pod's ServiceAccount.
    #[serde(default)]
    pub workload_identity: bool,
}

/// An OIDC issuer whose JWTs the sidecar accepts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcIdentity {
    /// Issuer URL; discovery at `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Accepted `aud` values (at least one must match).
    #[schemars(length(max = 16))]
    pub audiences: Vec<String>,
    /// Claim holding the username (default `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_claim: Option<String>,
    /// Claim holding the groups (default `groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
}

impl IdentitySpec {
    /// The token issuer this policy trusts: the OIDC issuer URL or the SAML
    /// IdP's entity id. Allow rules of the policy match only its users.
    pub fn token_issuer(&self) -> Option<&str> {
        match (&self.oidc, &self.saml) {
            (Some(o), _) => Some(o.issuer.as_str()),
            (None, Some(s)) => Some(s.issuer.as_str()),
            (None, None) => None,
        }
    }
}

/// A SAML 2.0 identity provider whose signed assertions the sidecar accepts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SamlIdentity {
    /// The IdP's entity id: the assertion's `Issuer` must equal it, and so
    /// must the metadata's `entityID` (a metadata file swapped for another
    /// IdP's is refused rather than trusted).
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: String,
    /// Where the IdP's metadata (its signing certificates) is read.
    pub metadata: SamlMetadataSource,
    /// The gate's SP entity id: an `AudienceRestriction` must name it.
    #[schemars(length(min = 1, max = 1024))]
    pub audience: String,
    /// Attribute naming the user; omitted = the `Subject`'s `NameID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_attribute: Option<String>,
    /// Attribute carrying the groups (default `groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_attribute: Option<String>,
    /// Clock skew tolerated on `NotBefore`/`NotOnOrAfter` (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 600))]
    pub clock_skew_seconds: Option<u32>,
    /// Accept each assertion ID once within its validity (a replayed
    /// assertion is refused). Clients then fetch a fresh assertion for every
    /// connection and re-authentication.
    #[serde(default)]
    pub one_time_use: bool,
}

/// The IdP metadata document: a file in the sidecar (e.g. a mounted
/// ConfigMap; re-read when it changes, so certificates rotate with it) or an
/// `https://` URL (refetched periodically). Exactly one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SamlMetadataSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Allow or Deny.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Effect {
    #[default]
    Allow,
    Deny,
}

/// One rule of a policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Unique within the policy; audit records name it.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    #[schemars(length(max = 64))]
    pub subjects: Vec<Subject>,
    /// Globs: `*` within a dot-separated segment, `**` across segments; exact names too.
    #[schemars(length(max = 64), inner(length(max = 249)))]
    pub topics: Vec<String>,
    #[schemars(length(max = 5))]
    pub operations: Vec<Operation>,
    #[serde(default)]
    pub effect: Effect,
    /// Just-in-time: allowed only under an approved AccessApproval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRequirement>,
    /// Consumer group ids (globs, like topics) the subjects may join, commit
    /// to, describe and delete under this rule, when it gives `Read`.
    /// Empty: only groups named after the caller — its name, or its name
    /// followed by `-`, `.`, `_` or `:` — so one tenant cannot join, read or
    /// reset another's group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 249)))]
    pub groups: Vec<String>,
    /// Transactional ids (globs) the subjects may use under this rule, when
    /// it gives `Write`. Empty: only ids named after the caller, as for
    /// groups — so no app can fence another's producer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 249)))]
    pub transactional_ids: Vec<String>,
    /// Emergency access (HIPAA 164.312(a)(2)(ii)): the rule's subjects may
    /// invoke break-glass (SASL/OAUTHBEARER extension
    /// `streamgateBreakGlass=<reason>`, or an AccessApproval with
    /// `spec.breakGlass: true`) and get these operations on the rule's
    /// topics at once, without an approver, for at most `maxDuration`. Every
    /// use is audited with its payload and reason and must be reviewed
    /// afterwards. A Deny rule still wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlassSpec>,
}

/// What break-glass gives on a rule, and who reviews its uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakGlassSpec {
    /// How long one invocation lasts at most, e.g. `1h` (humantime).
    pub max_duration: String,
    /// The operations break-glass gives (on the rule's topics).
    #[schemars(length(min = 1, max = 5))]
    pub operations: Vec<Operation>,
    /// Records are delivered in clear under break-glass: MaskingRules are
    /// lifted for the grant. Default false: masking still applies.
    #[serde(default)]
    pub unmasked: bool,
    /// How soon a use must be reviewed (default 24h); an unreviewed use past
    /// it puts the policy's `ReviewOverdue` condition to True.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_within: Option<String>,
    /// Who reviews uses; omitted = the rule's `approval.approvers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub reviewers: Vec<Subject>,
}

/// The default `breakGlass.reviewWithin`.
pub const DEFAULT_REVIEW_WITHIN: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl BreakGlassSpec {
    /// The parsed `reviewWithin` (the default when absent).
    pub fn review_within(&self) -> Result<std::time::Duration, crate::duration::DurationError> {
        match &self.review_within {
            None => Ok(DEFAULT_REVIEW_WITHIN),
            Some(t) => crate::duration::parse_grant_duration(t),
        }
    }

    /// The parsed `maxDuration`.
    pub fn max_duration(&self) -> Result<std::time::Duration, crate::duration::DurationError> {
        crate::duration::parse_grant_duration(&self.max_duration)
    }
}

impl PolicyRule {
    /// Who reviews break-glass uses of this rule: `breakGlass.reviewers`,
    /// else the rule's approvers (empty when the rule has neither).
    pub fn break_glass_reviewers(&self) -> &[Subject] {
        match (&self.break_glass, &self.approval) {
            (Some(bg), _) if !bg.reviewers.is_empty() => &bg.reviewers,
            (_, Some(a)) => &a.approvers,
            _ => &[],
        }
    }
}

/// Who may approve, and for how long at most.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRequirement {
    #[schemars(length(max = 64))]
    pub approvers: Vec<Subject>,
    /// e.g. `1h`, `30m` (humantime).
    pub max_duration: String,
}

/// What goes into the audit record about payloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PayloadMode {
    None,
    /// BLAKE3 digests of the record batches (per partition, and over the request).
    #[default]
    Digest,
    /// The payload itself (PHI in the audit trail: only when asked).
    Full,
}

/// What happens when the audit record cannot be made durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FailureMode {
    /// Refuse PHI traffic.
    #[default]
    Closed,
    /// Report the failure and let traffic continue.
    Open,
}

/// Audit settings of a policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditSpec {
    #[serde(default)]
    pub payload: PayloadMode,
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// How far shipping to the collector (the record of evidence) may fall
    /// behind, e.g. `60s` (the default). Past it, `failureMode: Closed`
    /// refuses PHI requests until the collector catches up; `Open` carries on
    /// and records the lag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ship_lag: Option<String>,
}

/// The default `audit.maxShipLag`.
pub const DEFAULT_MAX_SHIP_LAG: std::time::Duration = std::time::Duration::from_secs(60);

impl AuditSpec {
    /// The parsed `maxShipLag` (the default when absent).
    pub fn max_ship_lag(&self) -> Result<std::time::Duration, String> {
        match &self.max_ship_lag {
            None => Ok(DEFAULT_MAX_SHIP_LAG),
            Some(text) => match humantime::parse_duration(text) {
                Ok(d) if d.is_zero() => Err(format!("{text:?}: must be longer than zero")),
                Ok(d) => Ok(d),
                Err(e) => Err(format!("{text:?}: {e} (e.g. 60s, 5m)")),
            },
        }
    }
}

/// Observed state of a StreamPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions, one per `type`.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Injected pods this policy currently governs.
    #[serde(default)]
    pub workloads: i64,
    /// `Enforced` when the operator checks rule topics against the cluster
    /// admin's per-namespace topic grants (operator `--topic-grants`);
    /// absent when no grants are configured. Sidecars read it to fail closed:
    /// while enforced and `observedGeneration` is behind `metadata.generation`,
    /// no Allow rule of the policy is enforced (none has been checked yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_grants: Option<TopicGrantsMode>,
    /// Allow rules naming a topic glob outside the namespace's grant (as of
    /// `observedGeneration`): sidecars do not enforce them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub ungranted_rules: Vec<String>,
}

/// Whether topic grants are checked for a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TopicGrantsMode {
    /// Allow rules are checked against the namespace's topic grants.
    Enforced,
}
