//! Who may decide an AccessApproval, and how long the grant lasts: the rules
//! the operator's admission webhook and the proxy's `--policy-dir` mode share,
//! so the two cannot drift.
//!
//! The requester is named by an OIDC claim (`sub` by default, often opaque),
//! the decider by a Kubernetes username, which for the same person usually
//! carries a prefix (`oidc:alice@…`, or kube-apiserver's default
//! `<issuer>#<sub>`). [`IdentityMapping`] states how the two relate, with
//! the same three settings as kube-apiserver's `--oidc-username-claim`,
//! `--oidc-username-prefix` and `--oidc-groups-prefix`.
//!
//! - [`check_not_requester`]: the decider is not the requester under that
//!   mapping (emails compared case-insensitively), not the requester's
//!   ServiceAccount, and not the ServiceAccount of the requester's workload
//!   (anyone who runs in that workload may be the requester). When the
//!   request names the requester by another claim than the cluster's
//!   usernames, nobody can tell: refused (fail closed), saying what to align.
//! - [`check_is_approver`]: the decider is one of the rule's approvers;
//!   approvers listed by User or Group are OIDC names, matched on the
//!   Kubernetes username and groups with the prefixes applied. A decider
//!   whose groups are unknown (a `decidedBy` written in a file) matches only
//!   User and ServiceAccount approvers.
//! - [`grant_expiry`]: `decidedAt` + the requested duration, capped at the
//!   rule's `maxDuration`.
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::access_approval::AccessApprovalSpec;
use crate::common::{Subject, SubjectKind};
use crate::duration::{DurationError, parse_grant_duration};

/// How Kubernetes usernames and groups are made from OIDC identities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityMapping {
    /// The claim Kubernetes usernames come from (kube-apiserver's
    /// `--oidc-username-claim`, default `sub`).
    pub username_claim: String,
    /// kube-apiserver's `--oidc-username-prefix`. `None`: its default, the
    /// issuer URL followed by `#` unless the claim is `email`; `"-"` or `""`:
    /// no prefix.
    pub username_prefix: Option<String>,
    /// kube-apiserver's `--oidc-groups-prefix` (default none).
    pub groups_prefix: String,
}

impl Default for IdentityMapping {
    fn default() -> Self {
        Self {
            username_claim: "sub".to_string(),
            username_prefix: None,
            groups_prefix: String::new(),
        }
    }
}

impl IdentityMapping {
    /// Names compared as they are: no prefixes, the given claim.
    pub fn unprefixed(username_claim: &str) -> Self {
        Self {
            username_claim: username_claim.to_string(),
            username_prefix: Some(String::new()),
            groups_prefix: String::new(),
        }
    }

    /// The username prefix for identities of `issuer`; `None` when it
    /// depends on an issuer that is not known.
    pub fn username_prefix_for(&self, issuer: Option<&str>) -> Option<String> {
        match self.username_prefix.as_deref() {
            Some("-") | Some("") => Some(String::new()),
            Some(p) => Some(p.to_string()),
            None if self.username_claim == "email" => Some(String::new()),
            None => issuer.map(|i| format!("{i}#")),
        }
    }

    /// The Kubernetes name for an OIDC name under `prefix` (a name already
    /// carrying the prefix is taken as written).
    fn apply(prefix: &str, name: &str) -> String {
        if prefix.is_empty() || name.starts_with(prefix) {
            name.to_string()
        } else {
            format!("{prefix}{name}")
        }
    }

    /// The Kubernetes group an OIDC group becomes.
    pub fn kubernetes_group(&self, group: &str) -> String {
        Self::apply(&self.groups_prefix, group)
    }
}

/// Who decides: the Kubernetes user of the request (webhook), or the
/// `decidedBy` a file names (`groups: None`, nothing proves membership).
#[derive(Clone, Copy, Debug)]
pub struct Decider<'a> {
    pub username: &'a str,
    pub groups: Option<&'a [String]>,
}

/// Why a decider may not decide. Each message says why, and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecisionRefused {
    #[error(
        "{user} is the requester and cannot decide their own request ({why}); ask one of the rule's approvers"
    )]
    Requester { user: String, why: String },
    #[error(
        "{user} is the ServiceAccount of the requester's workload{pod}; whoever runs in that workload may be the requester, so it cannot decide; ask one of the rule's approvers"
    )]
    WorkloadServiceAccount { user: String, pod: String },
    #[error("cannot tell whether {user} is the requester: {why}")]
    Unverifiable { user: String, why: String },
    #[error(
        "{user} is not an approver of rule {rule:?} in StreamPolicy {policy:?} (approvers: {approvers}){note}"
    )]
    NotAnApprover {
        user: String,
        policy: String,
        rule: String,
        approvers: String,
        note: String,
    },
}

fn service_account(username: &str) -> Option<(&str, &str)> {
    username
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
}

fn looks_like_email(name: &str) -> bool {
    name.contains('@')
}

/// Equal, ignoring ASCII case when either side is an email (`email` claims
/// are case-insensitive in practice: IdPs hand out `Alice@…` and `alice@…`).
fn same_name(a: &str, b: &str, email: bool) -> bool {
    if email || looks_like_email(a) || looks_like_email(b) {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// Does `username` end with `name` after a prefix separator (`:` or `#`)?
/// Catches `oidc:alice@…` and `https://issuer#sub` without knowing the prefix.
fn prefixed_name(username: &str, name: &str, email: bool) -> bool {
    if name.is_empty() || username.len() <= name.len() {
        return false;
    }
    let split = username.len() - name.len();
    let (Some(head), Some(tail)) = (username.get(..split), username.get(split..)) else {
        return false;
    };
    (head.ends_with(':') || head.ends_with('#')) && same_name(tail, name, email)
}

/// Refuse when `decider` is the requester of `spec` (an AccessApproval in
/// `namespace`) under `mapping`, or acts as the requester's ServiceAccount or
/// the ServiceAccount of the requester's workload.
pub fn check_not_requester(
    spec: &AccessApprovalSpec,
    namespace: &str,
    decider: &Decider<'_>,
    mapping: &IdentityMapping,
) -> Result<(), DecisionRefused> {
    let user = decider.username;
    let requester = &spec.requester;
    let requester_refusal = |why: String| DecisionRefused::Requester {
        user: user.to_string(),
        why,
    };
    if let Some((sa_ns, sa_name)) = service_account(user) {
        if requester.kind == SubjectKind::ServiceAccount
            && sa_name == requester.name
            && sa_ns == namespace
        {
            return Err(requester_refusal(format!(
                "it is the requesting ServiceAccount {namespace}/{sa_name}"
            )));
        }
        if sa_ns == namespace
            && let Some(workload) = &spec.workload
            && workload.service_account.as_deref() == Some(sa_name)
        {
            return Err(DecisionRefused::WorkloadServiceAccount {
                user: user.to_string(),
                pod: format!(" (pod {namespace}/{})", workload.pod),
            });
        }
        return Ok(());
    }
    if requester.kind == SubjectKind::ServiceAccount {
        // A person is not a ServiceAccount; acting as one is caught above.
        return Ok(());
    }
    let name = requester.name.as_str();
    let email_claim = |claim: &str| claim == "email";
    let email = email_claim(&mapping.username_claim)
        || requester
            .oidc
            .as_ref()
            .is_some_and(|o| email_claim(&o.username_claim));
    if same_name(user, name, email) {
        return Err(requester_refusal(format!(
            "the Kubernetes username is the requester's name {name:?}"
        )));
    }
    if prefixed_name(user, name, email) {
        return Err(requester_refusal(format!(
            "the Kubernetes username is the requester's name {name:?} behind a username prefix"
        )));
    }
    match &requester.oidc {
        Some(oidc) => {
            if oidc.username_claim != mapping.username_claim {
                return Err(DecisionRefused::Unverifiable {
                    user: user.to_string(),
                    why: format!(
                        "the request names the requester by OIDC claim {:?} of {}, but Kubernetes usernames come from claim {:?}; align the StreamPolicy's identity.oidc.usernameClaim with the operator's --approver-oidc-username-claim (the API server's --oidc-username-claim)",
                        oidc.username_claim, oidc.issuer, mapping.username_claim
                    ),
                });
            }
            if let Some(prefix) = mapping.username_prefix_for(Some(&oidc.issuer))
                && same_name(user, &IdentityMapping::apply(&prefix, name), email)
            {
                return Err(requester_refusal(format!(
                    "the Kubernetes username is claim {}={name:?} of {} with username prefix {prefix:?}",
                    oidc.username_claim, oidc.issuer
                )));
            }
        }
        None => {
            if let Some(prefix) = mapping.username_prefix_for(None)
                && same_name(user, &IdentityMapping::apply(&prefix, name), email)
            {
                return Err(requester_refusal(format!(
                    "the Kubernetes username is the requester's name {name:?} with username prefix {prefix:?}"
                )));
            }
        }
    }
    Ok(())
}

/// Refuse unless `decider` is one of `approvers` (wildcards never count).
/// `issuer` is the requester's OIDC issuer, when recorded (kube-apiserver's
/// default username prefix depends on it).
pub fn check_is_approver(
    decider: &Decider<'_>,
    approvers: &[Subject],
    namespace: &str,
    mapping: &IdentityMapping,
    issuer: Option<&str>,
    (policy, rule): (&str, &str),
) -> Result<(), DecisionRefused> {
    let user = decider.username;
    let prefix = mapping.username_prefix_for(issuer);
    let matches = |s: &Subject| {
        if s.is_wildcard() {
            return false;
        }
        match (s.kind.clone(), service_account(user)) {
            (SubjectKind::ServiceAccount, Some((ns, name))) => {
                name == s.name && ns == s.namespace.as_deref().unwrap_or(namespace)
            }
            (SubjectKind::User, None) => {
                let email = looks_like_email(&s.name) || mapping.username_claim == "email";
                match &prefix {
                    Some(p) => same_name(user, &IdentityMapping::apply(p, &s.name), email),
                    // The prefix depends on an issuer nobody recorded: only
                    // an approver written as the full Kubernetes username.
                    None => same_name(user, &s.name, email),
                }
            }
            (SubjectKind::Group, None) => decider.groups.is_some_and(|groups| {
                let wanted = mapping.kubernetes_group(&s.name);
                groups.contains(&wanted)
            }),
            _ => false,
        }
    };
    if approvers.iter().any(matches) {
        return Ok(());
    }
    let note = if decider.groups.is_none() && approvers.iter().any(|s| s.kind == SubjectKind::Group)
    {
        "; a file cannot prove group membership, so in --policy-dir mode only an approver listed by User can decide".to_string()
    } else if !mapping.groups_prefix.is_empty()
        && approvers.iter().any(|s| s.kind == SubjectKind::Group)
    {
        format!(
            "; approver groups are matched as Kubernetes groups with prefix {:?}",
            mapping.groups_prefix
        )
    } else {
        String::new()
    };
    Err(DecisionRefused::NotAnApprover {
        user: user.to_string(),
        policy: policy.to_string(),
        rule: rule.to_string(),
        approvers: approvers
            .iter()
            .map(|s| format!("{:?} {}", s.kind, s.name))
            .collect::<Vec<_>>()
            .join(", "),
        note,
    })
}

/// Both checks: not the requester, and one of the rule's approvers.
pub fn check_decider(
    spec: &AccessApprovalSpec,
    namespace: &str,
    decider: &Decider<'_>,
    approvers: &[Subject],
    mapping: &IdentityMapping,
) -> Result<(), DecisionRefused> {
    check_not_requester(spec, namespace, decider, mapping)?;
    check_is_approver(
        decider,
        approvers,
        namespace,
        mapping,
        spec.requester.oidc.as_ref().map(|o| o.issuer.as_str()),
        (&spec.policy, &spec.rule),
    )
}

/// How long a grant lasts: the requested duration capped at the rule's
/// `maxDuration` (an unparseable request gets the cap).
pub fn grant_duration(requested: &str, max: Duration) -> Duration {
    parse_grant_duration(requested).map_or(max, |d| d.min(max))
}

/// When a grant decided at `decided_at` ends: `decided_at` + the requested
/// duration, capped at `max_duration` (the rule's, as written).
pub fn grant_expiry(
    requested: &str,
    max_duration: &str,
    decided_at: DateTime<Utc>,
) -> Result<DateTime<Utc>, DurationError> {
    let max = parse_grant_duration(max_duration)?;
    let d = grant_duration(requested, max);
    // At most 7 days (parse_grant_duration's bound): always representable.
    let d = chrono::Duration::from_std(d)
        .map_err(|_| DurationError::TooLong(max_duration.to_string()))?;
    Ok(decided_at + d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::access_approval::{Decision, Requester, RequesterOidc, WorkloadRef};
    use crate::common::Operation;

    fn spec(name: &str, oidc: Option<(&str, &str)>) -> AccessApprovalSpec {
        AccessApprovalSpec {
            requester: Requester {
                kind: SubjectKind::User,
                name: name.into(),
                groups: vec!["clinicians".into()],
                oidc: oidc.map(|(issuer, claim)| RequesterOidc {
                    issuer: issuer.into(),
                    username_claim: claim.into(),
                }),
            },
            workload: Some(WorkloadRef {
                pod: "intake-0".into(),
                service_account: Some("intake".into()),
            }),
            policy: "phi-access".into(),
            rule: "write".into(),
            topics: vec!["patient-records".into()],
            operations: vec![Operation::Write],
            duration: "1h".into(),
            decision: Decision::Pending,
            decided_by: None,
            break_glass: false,
            reason: None,
            review: None,
            review_note: None,
            reviewed_by: None,
        }
    }

    fn person(username: &str) -> Decider<'_> {
        Decider {
            username,
            groups: Some(&[]),
        }
    }

    const ISSUER: &str = "https://idp.example.com";

    #[test]
    fn kube_apiserver_default_prefix_catches_an_opaque_sub() {
        let s = spec("9b2c7e10-4f", Some((ISSUER, "sub")));
        let m = IdentityMapping::default();
        let err = check_not_requester(
            &s,
            "clinical",
            &person("https://idp.example.com#9b2c7e10-4f"),
            &m,
        )
        .unwrap_err();
        assert!(matches!(err, DecisionRefused::Requester { .. }), "{err}");
        assert!(check_not_requester(&s, "clinical", &person("carol"), &m).is_ok());
    }

    #[test]
    fn a_configured_prefix_and_email_case() {
        let s = spec("Alice@Example.com", Some((ISSUER, "email")));
        let m = IdentityMapping {
            username_claim: "email".into(),
            username_prefix: Some("corp/".into()),
            groups_prefix: String::new(),
        };
        let err =
            check_not_requester(&s, "clinical", &person("corp/alice@example.com"), &m).unwrap_err();
        assert!(
            err.to_string().contains("username prefix \"corp/\""),
            "{err}"
        );
    }

    #[test]
    fn another_claim_than_the_clusters_is_refused_as_unverifiable() {
        let s = spec("9b2c7e10-4f", Some((ISSUER, "sub")));
        let m = IdentityMapping {
            username_claim: "email".into(),
            ..IdentityMapping::default()
        };
        let err =
            check_not_requester(&s, "clinical", &person("carol@example.com"), &m).unwrap_err();
        assert!(matches!(err, DecisionRefused::Unverifiable { .. }), "{err}");
    }

    #[test]
    fn grant_expiry_is_capped_by_the_rule() {
        let at = DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            grant_expiry("7d", "1h", at).unwrap(),
            at + chrono::Duration::hours(1)
        );
        assert_eq!(
            grant_expiry("30m", "1h", at).unwrap(),
            at + chrono::Duration::minutes(30)
        );
        assert!(grant_expiry("30m", "forever", at).is_err());
    }
}
