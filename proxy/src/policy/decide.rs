//! The compiled decision function: `(principal, operation, topic) → PolicyDecision`.
//!
//! Pure: built from the namespace's StreamPolicies (already parsed), the pod's
//! labels, the namespace's MaskingRules and the approved AccessApprovals, and
//! answering without IO. Semantics (api.md):
//! - only policies whose `workloadSelector.matchLabels` are all present on the
//!   pod govern it (no selector = every pod of the namespace);
//! - a principal is (issuer, subject): an `Allow` rule's User and Group
//!   subjects match only users whose token came from the issuer of *that*
//!   policy's `identity.oidc` issuer or `identity.saml` IdP (none without
//!   either), so a same-named
//!   user of another trusted issuer gets nothing from it; a `Deny` rule's
//!   subjects match by name whatever the issuer (refusing more is safe);
//! - a matching `Deny` rule beats every `Allow`, in any policy;
//! - a matching `Allow` without `approval` allows;
//! - a matching `Allow` with `approval` allows only under a live grant
//!   (an approved, unexpired AccessApproval for that requester, rule, topic
//!   — named exactly, never a glob — and operation), else the answer is
//!   `NeedsApproval`;
//! - break-glass (the caller invoked it with a reason, or holds an
//!   AccessApproval in phase `BreakGlass`): an `Allow` rule with `breakGlass`
//!   whose subjects match gives its `breakGlass.operations` on its topics,
//!   with no approver, while the invocation is younger than the rule's
//!   `maxDuration` — after any plain Allow or approved grant, before
//!   `NeedsApproval`; a Deny rule still wins, and without such a rule
//!   invoking break-glass widens nothing;
//! - nothing matches, or no policy governs the pod → deny.
//!
//! When several policies govern one pod their settings combine towards the
//! safer side: blocked APIs are the union, `workloadIdentity` holds when any
//! governing policy enables it (the rules still decide what that identity may
//! do), audit `failureMode` is `Closed` if any policy says so, and the audit
//! payload mode is the most detailed one asked for.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use streamgate_crds::matching::{Principal, topic_matches};
use streamgate_crds::{
    AccessApproval, ApprovalPhase, ApprovalRequirement, BlockedOperation, BreakGlassSpec,
    Decision as ApprovalDecision, Effect, FailureMode, MaskingRuleSpec, OidcIdentity, Operation,
    PayloadMode, PolicyRule, StreamPolicySpec, SubjectKind,
};

/// One StreamPolicy or MaskingRule as loaded from a source.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc<S> {
    pub name: String,
    pub namespace: String,
    /// `metadata.generation` (absent for files).
    pub generation: Option<i64>,
    pub spec: S,
}

/// One StreamPolicy as loaded from a source.
pub type PolicyDoc = Doc<StreamPolicySpec>;

/// One MaskingRule as loaded from a source (the masking module consumes these).
pub type MaskingDoc = Doc<MaskingRuleSpec>;

/// A live just-in-time grant: an approved AccessApproval.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    /// The AccessApproval's name (for the audit record).
    pub name: String,
    pub policy: String,
    pub rule: String,
    pub requester_kind: SubjectKind,
    pub requester_name: String,
    /// The OIDC issuer the requester's name came from
    /// (`spec.requester.oidc.issuer`), when the request recorded it.
    pub requester_issuer: Option<String>,
    /// Namespace of the AccessApproval (the ServiceAccount namespace for SA requesters).
    pub namespace: String,
    pub topics: Vec<String>,
    pub operations: Vec<Operation>,
    pub expires_at: DateTime<Utc>,
    /// A break-glass grant (`spec.breakGlass`, phase `BreakGlass`): it holds
    /// only under a rule whose `breakGlass` still gives the operation.
    pub break_glass: bool,
}

/// A break-glass invocation by the caller: the reason it gave and when the
/// invocation began (the first authentication carrying this reason on this
/// sidecar — re-authentication and reconnects keep that start, so the grant
/// cannot be renewed by reconnecting).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakGlass {
    pub reason: String,
    pub since: DateTime<Utc>,
}

impl Grant {
    /// The grant an AccessApproval carries, if it is approved and has an expiry.
    /// Pending, denied, expired or not-yet-stamped approvals grant nothing.
    pub fn from_approval(aa: &AccessApproval) -> Option<Grant> {
        let status = aa.status.as_ref()?;
        let approved = aa.spec.decision == ApprovalDecision::Approved
            && status.phase == ApprovalPhase::Approved
            && !aa.spec.break_glass;
        let broken = aa.spec.break_glass
            && aa.spec.decision == ApprovalDecision::Pending
            && status.phase == ApprovalPhase::BreakGlass;
        if !approved && !broken {
            return None;
        }
        let expires_at = DateTime::parse_from_rfc3339(status.expires_at.as_deref()?)
            .ok()?
            .with_timezone(&Utc);
        Some(Grant {
            name: aa.metadata.name.clone().unwrap_or_default(),
            policy: aa.spec.policy.clone(),
            rule: aa.spec.rule.clone(),
            requester_kind: aa.spec.requester.kind.clone(),
            requester_name: aa.spec.requester.name.clone(),
            requester_issuer: aa.spec.requester.oidc.as_ref().map(|o| o.issuer.clone()),
            namespace: aa.metadata.namespace.clone().unwrap_or_default(),
            topics: aa.spec.topics.clone(),
            operations: aa.spec.operations.clone(),
            expires_at,
            break_glass: broken,
        })
    }

    /// Was this grant asked for by `principal`? Same kind and name, the same
    /// namespace for a ServiceAccount, and the same issuer when the request
    /// recorded one (a same-named user of another issuer is someone else;
    /// requests of older sidecars name no issuer, and are still bound to it
    /// through the rule, whose subjects match only its policy's issuer).
    pub fn is_for(&self, principal: &Principal) -> bool {
        self.requester_kind == principal.kind
            && self.requester_name == principal.name
            && (principal.kind != SubjectKind::ServiceAccount
                || principal.namespace.as_deref() == Some(&self.namespace))
            && self
                .requester_issuer
                .as_ref()
                .is_none_or(|issuer| principal.issuer.as_ref() == Some(issuer))
    }

    fn covers(
        &self,
        principal: &Principal,
        policy: &str,
        rule: &str,
        op: Operation,
        topic: &str,
        now: DateTime<Utc>,
    ) -> bool {
        !self.break_glass
            && self.is_for(principal)
            && self.policy == policy
            && self.rule == rule
            && self.operations.contains(&op)
            // Names, compared exactly: never read as globs. An approved
            // request for the "topic" `patients.**` grants that name only.
            && self.topics.iter().any(|t| t == topic)
            && now < self.expires_at
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No StreamPolicy governs this pod: default deny.
    NoPolicy,
    /// Policies exist, but no Allow rule matches.
    NoMatchingRule,
    /// A Deny rule matched (it beats any Allow).
    DeniedByRule,
    /// The API is in `blockedOperations`.
    Blocked,
    /// The API is not one the proxy knows how to govern.
    UnknownApi,
    /// Share-group APIs (KIP-932): their records are not masked yet.
    ShareGroups,
    /// Delegation tokens would be issued to the gateway's own broker user.
    DelegationTokens,
    /// Broker-to-broker and controller APIs.
    BrokerInternal,
    /// The caller has no identity the policy accepts (e.g. workload identity off).
    Unauthenticated,
    /// Break-glass would allow it, but the invocation is older than the
    /// rule's `maxDuration`.
    BreakGlassEnded,
}

impl DenyReason {
    /// Short, stable text for error messages and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoPolicy => "no StreamPolicy governs this workload",
            DenyReason::NoMatchingRule => "no rule allows it",
            DenyReason::DeniedByRule => "denied by rule",
            DenyReason::Blocked => "operation blocked by policy",
            DenyReason::UnknownApi => "API not governed by streamgate",
            DenyReason::ShareGroups => {
                "share groups are refused: their records cannot be masked yet"
            }
            DenyReason::DelegationTokens => {
                "delegation tokens are refused: one would be issued to the gateway's broker user"
            }
            DenyReason::BrokerInternal => "a broker-to-broker API, never a client's",
            DenyReason::Unauthenticated => "caller not authenticated",
            DenyReason::BreakGlassEnded => {
                "the break-glass grant has ended (invoke again with a new reason)"
            }
        }
    }
}

/// The answer for one (principal, operation, topic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyDecision {
    /// `grant` names the AccessApproval when the rule needed one.
    Allow {
        policy: String,
        rule: String,
        grant: Option<String>,
    },
    Deny {
        reason: DenyReason,
        policy: Option<String>,
        rule: Option<String>,
    },
    /// A rule with `approval` matched and no live grant exists.
    NeedsApproval { policy: String, rule: String },
    /// Allowed by break-glass under `rule`: the caller's invocation, or the
    /// break-glass AccessApproval `grant`.
    BreakGlass {
        policy: String,
        rule: String,
        grant: Option<String>,
    },
}

impl PolicyDecision {
    pub fn is_allow(&self) -> bool {
        matches!(
            self,
            PolicyDecision::Allow { .. } | PolicyDecision::BreakGlass { .. }
        )
    }
}

/// The effective audit settings for this pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditSettings {
    pub payload: PayloadMode,
    pub failure_mode: FailureMode,
    pub max_ship_lag: std::time::Duration,
}

/// Everything the sidecar enforces, compiled for one pod. Cheap to share (`Arc`).
#[derive(Clone, Debug, Default)]
pub struct CompiledPolicy {
    /// Only the policies that govern this pod, sorted by name (stable audit output).
    policies: Vec<PolicyDoc>,
    masking: Vec<MaskingDoc>,
    grants: Vec<Grant>,
    /// Whether any grant is a break-glass use (asked on every Fetch answer:
    /// computed once here, not by scanning the grants each time).
    break_glass_grants: bool,
}

/// Is the invocation younger than the rule's `maxDuration`? (An
/// unparseable duration never reaches here — admission keeps it out — and
/// would grant nothing.)
fn invocation_live(invoked: &BreakGlass, bg: &BreakGlassSpec, now: DateTime<Utc>) -> bool {
    bg.max_duration()
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .is_some_and(|d| now < invoked.since + d)
}

/// When a grant of `duration` (humantime) starting at `since` ends.
pub fn grant_end(since: DateTime<Utc>, duration: &str) -> Option<DateTime<Utc>> {
    streamgate_crds::duration::parse_grant_duration(duration)
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .map(|d| since + d)
}

/// Does a `workloadSelector` select a pod with `labels`?
pub fn selector_matches(spec: &StreamPolicySpec, labels: &BTreeMap<String, String>) -> bool {
    spec.workload_selector.as_ref().is_none_or(|sel| {
        sel.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    })
}

fn payload_rank(p: PayloadMode) -> u8 {
    match p {
        PayloadMode::None => 0,
        PayloadMode::Digest => 1,
        PayloadMode::Full => 2,
    }
}

impl CompiledPolicy {
    /// Compile the namespace's objects for a pod with `pod_labels`.
    pub fn compile(
        policies: Vec<PolicyDoc>,
        masking: Vec<MaskingDoc>,
        grants: Vec<Grant>,
        pod_labels: &BTreeMap<String, String>,
    ) -> CompiledPolicy {
        let mut policies: Vec<PolicyDoc> = policies
            .into_iter()
            .filter(|p| selector_matches(&p.spec, pod_labels))
            .collect();
        policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        CompiledPolicy {
            policies,
            masking,
            break_glass_grants: grants.iter().any(|g| g.break_glass),
            grants,
        }
    }

    /// No policy at all: everything is denied.
    pub fn empty() -> CompiledPolicy {
        CompiledPolicy::default()
    }

    /// The governing policies (name, generation), for audit records and readiness.
    pub fn policies(&self) -> impl Iterator<Item = (&str, Option<i64>)> {
        self.policies
            .iter()
            .map(|p| (p.name.as_str(), p.generation))
    }

    pub fn has_policy(&self) -> bool {
        !self.policies.is_empty()
    }

    /// The `approval` block of rule `rule` in policy `policy` (approval requests
    /// ask for its `maxDuration`).
    pub fn approval_requirement(&self, policy: &str, rule: &str) -> Option<&ApprovalRequirement> {
        self.policies
            .iter()
            .filter(|p| p.name == policy)
            .flat_map(|p| p.spec.rules.iter())
            .find(|r| r.name == rule)?
            .approval
            .as_ref()
    }

    /// The MaskingRules of the namespace (masking applies them per topic).
    pub fn masking_rules(&self) -> &[MaskingDoc] {
        &self.masking
    }

    /// Decide now.
    pub fn decide(&self, principal: &Principal, op: Operation, topic: &str) -> PolicyDecision {
        self.decide_at(principal, op, topic, Utc::now())
    }

    /// Decide at `now` (grants expire).
    pub fn decide_at(
        &self,
        principal: &Principal,
        op: Operation,
        topic: &str,
        now: DateTime<Utc>,
    ) -> PolicyDecision {
        self.decide_as(principal, None, op, topic, now)
    }

    /// Decide at `now` for a caller that may have invoked break-glass.
    pub fn decide_as(
        &self,
        principal: &Principal,
        break_glass: Option<&BreakGlass>,
        op: Operation,
        topic: &str,
        now: DateTime<Utc>,
    ) -> PolicyDecision {
        let topic_ok = |rule: &PolicyRule| rule.topics.iter().any(|t| topic_matches(t, topic));
        let decision = self.decide_with(principal, op, now, topic_ok, Some(topic));
        match decision {
            PolicyDecision::Deny {
                reason: DenyReason::NoMatchingRule,
                ..
            }
            | PolicyDecision::NeedsApproval { .. } => self
                .break_glass_decision(principal, break_glass, op, topic, now)
                .unwrap_or(decision),
            decided => decided,
        }
    }

    /// The rules whose `breakGlass` gives `principal` `op` on `topic`
    /// (Allow rules only, subjects matched as Allow subjects are).
    fn break_glass_rules<'a>(
        &'a self,
        principal: &'a Principal,
        op: Operation,
        topic: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a PolicyDoc, &'a PolicyRule, &'a BreakGlassSpec)> + 'a {
        self.policies
            .iter()
            .flat_map(move |p| p.spec.rules.iter().map(move |r| (p, r)))
            .filter_map(move |(p, r)| {
                let bg = r.break_glass.as_ref()?;
                let issuer = p.spec.identity.token_issuer();
                (r.effect == Effect::Allow
                    && bg.operations.contains(&op)
                    && topic.is_none_or(|t| r.topics.iter().any(|g| topic_matches(g, t)))
                    && r.subjects
                        .iter()
                        .any(|s| s.matches_from_issuer(principal, &p.namespace, issuer)))
                .then_some((p, r, bg))
            })
    }

    /// Break-glass for one topic: an AccessApproval in phase `BreakGlass`
    /// covering it, else the caller's own invocation while it is younger than
    /// the rule's `maxDuration`. `None`: no break-glass rule applies.
    fn break_glass_decision(
        &self,
        principal: &Principal,
        break_glass: Option<&BreakGlass>,
        op: Operation,
        topic: &str,
        now: DateTime<Utc>,
    ) -> Option<PolicyDecision> {
        let mut ended: Option<(&PolicyDoc, &PolicyRule)> = None;
        for (p, r, bg) in self.break_glass_rules(principal, op, Some(topic)) {
            if let Some(g) = self.grants.iter().find(|g| {
                g.break_glass
                    && g.is_for(principal)
                    && g.policy == p.name
                    && g.rule == r.name
                    && g.operations.contains(&op)
                    && g.topics.iter().any(|t| t == topic)
                    && now < g.expires_at
            }) {
                return Some(PolicyDecision::BreakGlass {
                    policy: p.name.clone(),
                    rule: r.name.clone(),
                    grant: Some(g.name.clone()),
                });
            }
            let Some(invoked) = break_glass else { continue };
            if invocation_live(invoked, bg, now) {
                return Some(PolicyDecision::BreakGlass {
                    policy: p.name.clone(),
                    rule: r.name.clone(),
                    grant: None,
                });
            }
            ended.get_or_insert((p, r));
        }
        ended.map(|(p, r)| PolicyDecision::Deny {
            reason: DenyReason::BreakGlassEnded,
            policy: Some(p.name.clone()),
            rule: Some(r.name.clone()),
        })
    }

    /// The rules under which break-glass gives `principal` `op` (on some
    /// topic) now: the caller's live invocation, or a break-glass grant.
    pub(crate) fn break_glass_live_rules<'a>(
        &'a self,
        principal: &'a Principal,
        break_glass: Option<&'a BreakGlass>,
        op: Operation,
        now: DateTime<Utc>,
    ) -> impl Iterator<Item = &'a PolicyRule> + 'a {
        self.break_glass_rules(principal, op, None)
            .filter(move |(p, r, bg)| {
                break_glass.is_some_and(|b| invocation_live(b, bg, now))
                    || self.grants.iter().any(|g| {
                        g.break_glass
                            && g.is_for(principal)
                            && g.policy == p.name
                            && g.rule == r.name
                            && now < g.expires_at
                    })
            })
            .map(|(_, r, _)| r)
    }

    /// Does break-glass give `principal` `op` on some topic now? (Group
    /// and transaction coordination, like [`Self::may_any`].)
    pub fn break_glass_any(
        &self,
        principal: &Principal,
        break_glass: Option<&BreakGlass>,
        op: Operation,
        now: DateTime<Utc>,
    ) -> bool {
        self.break_glass_live_rules(principal, break_glass, op, now)
            .next()
            .is_some()
    }

    /// The break-glass rule with `unmasked: true` that lets `principal` read
    /// `topic` in clear now, if any (masking is lifted for it).
    pub fn break_glass_unmasked(
        &self,
        principal: &Principal,
        break_glass: Option<&BreakGlass>,
        topic: &str,
        now: DateTime<Utc>,
    ) -> bool {
        if break_glass.is_none() && !self.has_break_glass_grants() {
            return false;
        }
        matches!(
            self.decide_as(principal, break_glass, Operation::Read, topic, now),
            PolicyDecision::BreakGlass { ref policy, ref rule, .. }
                if self.rule(policy, rule)
                    .and_then(|r| r.break_glass.as_ref())
                    .is_some_and(|bg| bg.unmasked)
        )
    }

    /// Is any AccessApproval in phase `BreakGlass` loaded?
    pub fn has_break_glass_grants(&self) -> bool {
        self.break_glass_grants
    }

    /// Rule `rule` of policy `policy`.
    pub fn rule(&self, policy: &str, rule: &str) -> Option<&PolicyRule> {
        self.policies
            .iter()
            .filter(|p| p.name == policy)
            .flat_map(|p| p.spec.rules.iter())
            .find(|r| r.name == rule)
    }

    /// Decide a cluster-scoped request (no topic): it needs a rule whose
    /// topics include `**` (every topic), so a grant over some topics never
    /// becomes power over the whole cluster.
    pub fn decide_cluster(&self, principal: &Principal, op: Operation) -> PolicyDecision {
        self.decide_with(
            principal,
            op,
            Utc::now(),
            |rule| rule.topics.iter().any(|t| t == "**"),
            None,
        )
    }

    /// Does any Allow rule (without approval) give `principal` the operation `op`
    /// on at least one topic? Used for group/transaction coordination APIs,
    /// whose data access is then checked per topic.
    pub fn may_any(&self, principal: &Principal, op: Operation) -> bool {
        self.matching_rules(principal, op, |_| true)
            .any(|(_, r)| r.effect == Effect::Allow && r.approval.is_none())
            || self.has_live_grant(principal, op)
    }

    /// Does an approved, unexpired AccessApproval give `principal` `op`?
    pub(crate) fn has_live_grant(&self, principal: &Principal, op: Operation) -> bool {
        self.grants.iter().any(|g| {
            !g.break_glass
                && g.is_for(principal)
                && g.operations.contains(&op)
                && Utc::now() < g.expires_at
        })
    }

    /// The rules giving `principal` the operation `op` where `topic_ok` holds
    /// (Allow and Deny alike; callers weigh them).
    pub(crate) fn matching_rules<'a>(
        &'a self,
        principal: &'a Principal,
        op: Operation,
        topic_ok: impl Fn(&PolicyRule) -> bool + 'a,
    ) -> impl Iterator<Item = (&'a PolicyDoc, &'a PolicyRule)> + 'a {
        self.policies
            .iter()
            .flat_map(move |p| p.spec.rules.iter().map(move |r| (p, r)))
            .filter(move |(p, r)| {
                let issuer = p.spec.identity.token_issuer();
                r.operations.contains(&op)
                    && topic_ok(r)
                    && r.subjects.iter().any(|s| match r.effect {
                        // A principal is (issuer, subject): an Allow's User and
                        // Group subjects name users of the issuer this policy
                        // trusts, so another issuer cannot mint their rights.
                        Effect::Allow => s.matches_from_issuer(principal, &p.namespace, issuer),
                        // A Deny only narrows: it holds for the name whatever
                        // the issuer, so a policy without an oidc block (or
                        // naming another issuer) still takes rights away.
                        Effect::Deny => s.matches(principal, &p.namespace),
                    })
            })
    }

    fn decide_with(
        &self,
        principal: &Principal,
        op: Operation,
        now: DateTime<Utc>,
        topic_ok: impl Fn(&PolicyRule) -> bool,
        topic: Option<&str>,
    ) -> PolicyDecision {
        if self.policies.is_empty() {
            return PolicyDecision::Deny {
                reason: DenyReason::NoPolicy,
                policy: None,
                rule: None,
            };
        }
        let matching: Vec<(&PolicyDoc, &PolicyRule)> =
            self.matching_rules(principal, op, topic_ok).collect();
        if let Some((p, r)) = matching.iter().find(|(_, r)| r.effect == Effect::Deny) {
            return PolicyDecision::Deny {
                reason: DenyReason::DeniedByRule,
                policy: Some(p.name.clone()),
                rule: Some(r.name.clone()),
            };
        }
        if let Some((p, r)) = matching.iter().find(|(_, r)| r.approval.is_none()) {
            return PolicyDecision::Allow {
                policy: p.name.clone(),
                rule: r.name.clone(),
                grant: None,
            };
        }
        let mut needs: Option<(&PolicyDoc, &PolicyRule)> = None;
        for (p, r) in matching {
            let grant = topic.and_then(|t| {
                self.grants
                    .iter()
                    .find(|g| g.covers(principal, &p.name, &r.name, op, t, now))
            });
            if let Some(g) = grant {
                return PolicyDecision::Allow {
                    policy: p.name.clone(),
                    rule: r.name.clone(),
                    grant: Some(g.name.clone()),
                };
            }
            needs.get_or_insert((p, r));
        }
        match needs {
            Some((p, r)) => PolicyDecision::NeedsApproval {
                policy: p.name.clone(),
                rule: r.name.clone(),
            },
            None => PolicyDecision::Deny {
                reason: DenyReason::NoMatchingRule,
                policy: None,
                rule: None,
            },
        }
    }

    /// Is this Kafka API in some governing policy's `blockedOperations`?
    pub fn blocked(&self, api: BlockedOperation) -> bool {
        self.policies
            .iter()
            .any(|p| p.spec.blocked_operations.contains(&api))
    }

    /// May a connection without SASL act as the pod's ServiceAccount?
    pub fn workload_identity_allowed(&self) -> bool {
        self.policies
            .iter()
            .any(|p| p.spec.identity.workload_identity)
    }

    /// The OIDC issuers the governing policies accept (deduplicated).
    pub fn oidc(&self) -> Vec<&OidcIdentity> {
        let mut out: Vec<&OidcIdentity> = Vec::new();
        for o in self
            .policies
            .iter()
            .filter_map(|p| p.spec.identity.oidc.as_ref())
        {
            if !out.contains(&o) {
                out.push(o);
            }
        }
        out
    }

    /// Every token issuer the governing policies trust: OIDC issuers and
    /// SAML IdP entity ids (deduplicated). "One trusted issuer" questions
    /// (ids named after the caller, masking exemptions) count them all.
    pub fn token_issuers(&self) -> std::collections::BTreeSet<&str> {
        self.policies
            .iter()
            .filter_map(|p| p.spec.identity.token_issuer())
            .collect()
    }

    /// The SAML IdPs the governing policies trust (deduplicated).
    pub fn saml(&self) -> Vec<&streamgate_crds::SamlIdentity> {
        let mut out: Vec<&streamgate_crds::SamlIdentity> = Vec::new();
        for s in self
            .policies
            .iter()
            .filter_map(|p| p.spec.identity.saml.as_ref())
        {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    /// Audit settings in force: the safer combination over governing policies
    /// (default `Digest` / `Closed` when no policy says otherwise).
    pub fn audit(&self) -> AuditSettings {
        let mut it = self.policies.iter().map(|p| &p.spec.audit);
        let Some(first) = it.next() else {
            return AuditSettings {
                payload: PayloadMode::default(),
                failure_mode: FailureMode::Closed,
                max_ship_lag: streamgate_crds::stream_policy::DEFAULT_MAX_SHIP_LAG,
            };
        };
        // An unparseable maxShipLag never reaches here (admission keeps it out);
        // should one, the default holds.
        let lag = |a: &streamgate_crds::AuditSpec| {
            a.max_ship_lag()
                .unwrap_or(streamgate_crds::stream_policy::DEFAULT_MAX_SHIP_LAG)
        };
        let mut out = AuditSettings {
            payload: first.payload,
            failure_mode: first.failure_mode,
            max_ship_lag: lag(first),
        };
        for a in it {
            out.max_ship_lag = out.max_ship_lag.min(lag(a));
            if payload_rank(a.payload) > payload_rank(out.payload) {
                out.payload = a.payload;
            }
            if a.failure_mode == FailureMode::Closed {
                out.failure_mode = FailureMode::Closed;
            }
        }
        out
    }
}
