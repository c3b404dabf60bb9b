//! Who may decide an AccessApproval, the pure core.
//!
//! Two webhooks share this module:
//! - the **mutating** one stamps `spec.decidedBy` with the requesting
//!   Kubernetes user whenever a request moves `spec.decision` away from
//!   `Pending` (whatever the client sent — a forged value is overwritten);
//! - the **validating** one runs after every mutation and refuses: a decision
//!   by the requester themself, a decider outside the rule's approvers, any
//!   spec change after a decision, any change to the request itself
//!   (requester, topics, duration, …), and a `decidedBy` that is not the
//!   requesting user (i.e. the mutating webhook was bypassed or the client
//!   forged it). On CREATE it refuses anything but an undecided request, so a
//!   sidecar cannot create a pre-approved grant.
//!
//! The split follows Kubernetes' contract: mutations belong in a mutating
//! webhook, and only a validating webhook sees the final object.
//!
//! Who counts as the requester, and who as an approver, is decided by
//! [`streamgate_crds::approver`] under the operator's [`IdentityMapping`]
//! (`--approver-oidc-username-claim/-prefix`, `--approver-oidc-groups-prefix`),
//! the same rules the proxy applies to `--policy-dir` approval files.
use serde_json::json;
use streamgate_crds::approver::{self, Decider, DecisionRefused, IdentityMapping};
use streamgate_crds::{AccessApproval, Decision, StreamPolicy};

/// The Kubernetes user making the request (from `AdmissionRequest.userInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestUser {
    pub username: String,
    pub groups: Vec<String>,
    /// `userInfo.extra`: for a token bound to a pod, its name and uid.
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl RequestUser {
    /// As a decider: a Kubernetes user's groups are known (from `userInfo`).
    fn decider(&self) -> Decider<'_> {
        Decider {
            username: &self.username,
            groups: Some(&self.groups),
        }
    }
}

/// The mutating half: the patch that stamps `decidedBy`, if this request
/// decides, and `reviewedBy`, if it reviews a break-glass use.
pub fn stamp_decided_by(
    old: Option<&AccessApproval>,
    new: &AccessApproval,
    user: &RequestUser,
) -> Option<json_patch::Patch> {
    let mut ops = Vec::new();
    let was_pending = old.is_none_or(|o| o.spec.decision == Decision::Pending);
    if was_pending
        && new.spec.decision != Decision::Pending
        && new.spec.decided_by.as_deref() != Some(user.username.as_str())
    {
        // `add` replaces an existing member (RFC 6902 §4.1), so it also overwrites a forged value.
        ops.push(json!({ "op": "add", "path": "/spec/decidedBy", "value": user.username }));
    }
    let was_unreviewed = old.is_none_or(|o| o.spec.review.is_none());
    if was_unreviewed
        && new.spec.review.is_some()
        && new.spec.reviewed_by.as_deref() != Some(user.username.as_str())
    {
        ops.push(json!({ "op": "add", "path": "/spec/reviewedBy", "value": user.username }));
    }
    if ops.is_empty() {
        return None;
    }
    serde_json::from_value(serde_json::Value::Array(ops)).ok()
}

/// Why an AccessApproval change is refused. Each message says what to do instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApprovalDenied {
    #[error(
        "AccessApproval {name}: a new request must have decision Pending and no decidedBy; a person decides it later with kubectl patch"
    )]
    CreatedDecided { name: String },
    #[error("AccessApproval {name} is not a valid request: {problems}")]
    InvalidRequest { name: String, problems: String },
    #[error(
        "AccessApproval {name} was already {decision:?} by {decided_by}; decisions are final — create a new request instead"
    )]
    AlreadyDecided {
        name: String,
        decision: Decision,
        decided_by: String,
    },
    #[error(
        "AccessApproval {name}: only spec.decision may change; {field} is part of the request and is immutable"
    )]
    RequestChanged { name: String, field: &'static str },
    /// The decider is the requester (under the identity mapping), acts as
    /// the requester's workload, or is not one of the rule's approvers.
    #[error("AccessApproval {name}: {refused}")]
    Decider {
        name: String,
        refused: DecisionRefused,
    },
    #[error(
        "AccessApproval {name}: StreamPolicy {policy:?} not found in namespace {namespace}; nobody can approve a request for a policy that does not exist"
    )]
    PolicyNotFound {
        name: String,
        policy: String,
        namespace: String,
    },
    #[error(
        "AccessApproval {name}: StreamPolicy {policy:?} has no rule {rule:?} with an approval section; nothing to approve"
    )]
    RuleNotFound {
        name: String,
        policy: String,
        rule: String,
    },
    #[error(
        "AccessApproval {name}: the break-glass use was already reviewed {review:?} by {reviewed_by}; reviews are final"
    )]
    AlreadyReviewed {
        name: String,
        review: streamgate_crds::Review,
        reviewed_by: String,
    },
    #[error(
        "AccessApproval {name} is a break-glass use: it is not decided but reviewed afterwards — kubectl patch aa {name} --type merge -p '{{\"spec\":{{\"review\":\"Justified\",\"reviewNote\":\"...\"}}}}'"
    )]
    BreakGlassNotDecided { name: String },
    #[error(
        "AccessApproval {name}: spec.review, reviewNote and reviewedBy are for break-glass uses only, set once by a reviewer"
    )]
    ReviewNotAllowed { name: String },
    #[error(
        "AccessApproval {name}: StreamPolicy {policy:?} has no rule {rule:?} with breakGlass reviewers; nobody can review this use"
    )]
    NoReviewers {
        name: String,
        policy: String,
        rule: String,
    },
    #[error(
        "AccessApproval {name}: reviewedBy {claimed:?} does not match the requesting user {user:?}; reviewedBy is written by streamgate, never by the client"
    )]
    ForgedReviewedBy {
        name: String,
        claimed: String,
        user: String,
    },
    #[error(
        "AccessApproval {name}: decidedBy {claimed:?} does not match the requesting user {user:?}; decidedBy is written by streamgate, never by the client"
    )]
    ForgedDecidedBy {
        name: String,
        claimed: String,
        user: String,
    },
}

/// The validating half under the default [`IdentityMapping`]
/// (kube-apiserver's defaults); see [`validate_with_mapping`].
pub fn validate(
    old: Option<&AccessApproval>,
    new: &AccessApproval,
    user: &RequestUser,
    namespace: &str,
    policy: Option<&StreamPolicy>,
) -> Result<(), ApprovalDenied> {
    validate_with_mapping(
        old,
        new,
        user,
        namespace,
        policy,
        &IdentityMapping::default(),
    )
}

/// The validating half. `policy` is the StreamPolicy named by the request
/// (looked up by the caller in the AccessApproval's namespace), `None` when
/// absent; `mapping` says how Kubernetes usernames and groups relate to the
/// OIDC names requesters and approvers are written with.
pub fn validate_with_mapping(
    old: Option<&AccessApproval>,
    new: &AccessApproval,
    user: &RequestUser,
    namespace: &str,
    policy: Option<&StreamPolicy>,
    mapping: &IdentityMapping,
) -> Result<(), ApprovalDenied> {
    let name = new.metadata.name.clone().unwrap_or_default();
    let Some(old) = old else {
        if new.spec.decision != Decision::Pending
            || new.spec.decided_by.is_some()
            || new.spec.review.is_some()
            || new.spec.reviewed_by.is_some()
            || new.spec.review_note.is_some()
        {
            return Err(ApprovalDenied::CreatedDecided { name });
        }
        let problems = crate::validation::access_approval(&new.spec);
        if !problems.is_empty() {
            return Err(ApprovalDenied::InvalidRequest {
                name,
                problems: problems.join("; "),
            });
        }
        return Ok(());
    };
    if old.spec.break_glass || new.spec.break_glass {
        return validate_review(old, new, user, namespace, policy, mapping);
    }
    if new.spec.review.is_some() || new.spec.reviewed_by.is_some() || new.spec.review_note.is_some()
    {
        return Err(ApprovalDenied::ReviewNotAllowed { name });
    }
    if old.spec.decision != Decision::Pending {
        if old.spec != new.spec {
            return Err(ApprovalDenied::AlreadyDecided {
                name,
                decision: old.spec.decision,
                decided_by: old
                    .spec
                    .decided_by
                    .clone()
                    .unwrap_or_else(|| "<unknown>".to_string()),
            });
        }
        return Ok(());
    }
    if let Some(field) = changed_request_field(old, new) {
        return Err(ApprovalDenied::RequestChanged { name, field });
    }
    if new.spec.decision == Decision::Pending {
        return match &new.spec.decided_by {
            Some(claimed) if old.spec.decided_by.as_ref() != Some(claimed) => {
                Err(ApprovalDenied::ForgedDecidedBy {
                    name,
                    claimed: claimed.clone(),
                    user: user.username.clone(),
                })
            }
            _ => Ok(()),
        };
    }
    // This request decides.
    let acting = Acting {
        new,
        user,
        namespace,
        mapping,
    };
    let policy = acting.person(new.spec.decided_by.as_deref(), forged_decided_by, policy)?;
    let decider = user.decider();
    let Some(approval) = policy
        .spec
        .rules
        .iter()
        .find(|r| r.name == new.spec.rule)
        .and_then(|r| r.approval.as_ref())
    else {
        return Err(ApprovalDenied::RuleNotFound {
            name,
            policy: new.spec.policy.clone(),
            rule: new.spec.rule.clone(),
        });
    };
    // A wildcard approver is refused by validation; never honoured here either.
    approver::check_is_approver(
        &decider,
        &approval.approvers,
        namespace,
        mapping,
        new.spec.requester.oidc.as_ref().map(|o| o.issuer.as_str()),
        (&new.spec.policy, &new.spec.rule),
    )
    .map_err(|refused| ApprovalDenied::Decider { name, refused })
}

/// An UPDATE of a break-glass use: only its review may be given, once, by a
/// reviewer of the rule who is not the requester (the same identity mapping
/// as self-approval); `reviewedBy` must be the reviewing user.
fn validate_review(
    old: &AccessApproval,
    new: &AccessApproval,
    user: &RequestUser,
    namespace: &str,
    policy: Option<&StreamPolicy>,
    mapping: &IdentityMapping,
) -> Result<(), ApprovalDenied> {
    let name = new.metadata.name.clone().unwrap_or_default();
    if let Some(review) = old.spec.review {
        if old.spec != new.spec {
            return Err(ApprovalDenied::AlreadyReviewed {
                name,
                review,
                reviewed_by: old
                    .spec
                    .reviewed_by
                    .clone()
                    .unwrap_or_else(|| "<unknown>".to_string()),
            });
        }
        return Ok(());
    }
    if let Some(field) = changed_request_field(old, new) {
        return Err(ApprovalDenied::RequestChanged { name, field });
    }
    if new.spec.decision != Decision::Pending || new.spec.decided_by.is_some() {
        return Err(ApprovalDenied::BreakGlassNotDecided { name });
    }
    if new.spec.review.is_none() {
        // No review yet: nothing of it may be written.
        return match &new.spec.reviewed_by {
            Some(claimed) => Err(ApprovalDenied::ForgedReviewedBy {
                name,
                claimed: claimed.clone(),
                user: user.username.clone(),
            }),
            None if new.spec.review_note.is_some() => {
                Err(ApprovalDenied::ReviewNotAllowed { name })
            }
            None => Ok(()),
        };
    }
    // This request reviews.
    let acting = Acting {
        new,
        user,
        namespace,
        mapping,
    };
    let policy = acting.person(new.spec.reviewed_by.as_deref(), forged_reviewed_by, policy)?;
    let decider = user.decider();
    let reviewers = policy
        .spec
        .rules
        .iter()
        .find(|r| r.name == new.spec.rule && r.break_glass.is_some())
        .map(|r| r.break_glass_reviewers())
        .filter(|r| !r.is_empty());
    let Some(reviewers) = reviewers else {
        return Err(ApprovalDenied::NoReviewers {
            name,
            policy: new.spec.policy.clone(),
            rule: new.spec.rule.clone(),
        });
    };
    approver::check_is_approver(
        &decider,
        reviewers,
        namespace,
        mapping,
        new.spec.requester.oidc.as_ref().map(|o| o.issuer.as_str()),
        (&new.spec.policy, &new.spec.rule),
    )
    .map_err(|refused| ApprovalDenied::Decider { name, refused })
}

/// The person a decision or a review makes act on an AccessApproval.
struct Acting<'a> {
    new: &'a AccessApproval,
    user: &'a RequestUser,
    namespace: &'a str,
    mapping: &'a IdentityMapping,
}

fn forged_decided_by(name: String, claimed: String, user: String) -> ApprovalDenied {
    ApprovalDenied::ForgedDecidedBy {
        name,
        claimed,
        user,
    }
}

fn forged_reviewed_by(name: String, claimed: String, user: String) -> ApprovalDenied {
    ApprovalDenied::ForgedReviewedBy {
        name,
        claimed,
        user,
    }
}

impl Acting<'_> {
    /// The checks a decision and a review share: the stamp the request
    /// writes (`decidedBy`/`reviewedBy`) is the requesting user's own (the
    /// mutating half wrote it), that user is not the requester (under the
    /// identity mapping), and the policy naming the rule exists.
    fn person<'p>(
        &self,
        stamp: Option<&str>,
        forged: fn(String, String, String) -> ApprovalDenied,
        policy: Option<&'p StreamPolicy>,
    ) -> Result<&'p StreamPolicy, ApprovalDenied> {
        let name = self.new.metadata.name.clone().unwrap_or_default();
        if stamp != Some(self.user.username.as_str()) {
            return Err(forged(
                name,
                stamp.unwrap_or("").to_string(),
                self.user.username.clone(),
            ));
        }
        let decider = self.user.decider();
        if let Err(refused) =
            approver::check_not_requester(&self.new.spec, self.namespace, &decider, self.mapping)
        {
            return Err(ApprovalDenied::Decider { name, refused });
        }
        policy.ok_or_else(|| ApprovalDenied::PolicyNotFound {
            name,
            policy: self.new.spec.policy.clone(),
            namespace: self.namespace.to_string(),
        })
    }
}

/// Who creates an AccessApproval, as far as the requester check cares.
#[derive(Debug)]
pub enum Creator<'a> {
    /// The namespace's `streamgate-sidecar` account. `pod`: the pod the
    /// request is filed for (its token's pod, else `spec.workload.pod`);
    /// `pod_service_account`: that pod's ServiceAccount (`None`: no live
    /// injected pod of that name).
    Sidecar {
        pod: Option<&'a str>,
        pod_service_account: Option<&'a str>,
        /// Issuers of the namespace's StreamPolicies (`identity.oidc.issuer`).
        trusted_issuers: &'a std::collections::BTreeSet<String>,
    },
    /// `system:masters`: a cluster admin, trusted to file on anyone's behalf.
    ClusterAdmin,
    /// Anyone else: may only ask for themselves.
    Other(&'a RequestUser),
}

/// Why an AccessApproval CREATE names a requester its creator may not name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequesterRefused {
    #[error(
        "AccessApproval {name}: created by the streamgate sidecar account for no live injected pod (spec.workload.pod names none); a sidecar files requests only for the workload it serves"
    )]
    SidecarUnbound { name: String },
    #[error(
        "AccessApproval {name}: requester ServiceAccount {requested:?} is not the ServiceAccount {actual:?} of the pod {pod} whose sidecar files it; a sidecar asks only for the workload it serves"
    )]
    SidecarOtherAccount {
        name: String,
        requested: String,
        actual: String,
        pod: String,
    },
    #[error(
        "AccessApproval {name}: requester {requested:?} is an OIDC user without the issuer a StreamPolicy of namespace {namespace} trusts ({issuer}); a sidecar asks only for principals it authenticated"
    )]
    SidecarUntrustedIssuer {
        name: String,
        requested: String,
        namespace: String,
        issuer: String,
    },
    #[error(
        "AccessApproval {name}: a sidecar files requests for users and ServiceAccounts only, never for a Group"
    )]
    SidecarGroup { name: String },
    #[error(
        "AccessApproval {name}: {user} may only request access for themselves, not for {kind:?} {requested:?}; access for someone else is requested by their sidecar"
    )]
    NotSelf {
        name: String,
        user: String,
        kind: streamgate_crds::SubjectKind,
        requested: String,
    },
}

/// On CREATE: does the creator name a requester it could have authenticated?
pub fn check_creator(
    new: &AccessApproval,
    creator: &Creator<'_>,
    namespace: &str,
    mapping: &IdentityMapping,
) -> Result<(), RequesterRefused> {
    use streamgate_crds::SubjectKind;
    let name = new.metadata.name.clone().unwrap_or_default();
    let requester = &new.spec.requester;
    match creator {
        Creator::ClusterAdmin => Ok(()),
        Creator::Sidecar {
            pod,
            pod_service_account,
            trusted_issuers,
        } => {
            let (Some(pod), Some(pod_sa)) = (pod, pod_service_account) else {
                return Err(RequesterRefused::SidecarUnbound { name });
            };
            match requester.kind {
                SubjectKind::ServiceAccount if requester.name == *pod_sa => Ok(()),
                SubjectKind::ServiceAccount => Err(RequesterRefused::SidecarOtherAccount {
                    name,
                    requested: requester.name.clone(),
                    actual: pod_sa.to_string(),
                    pod: format!("{namespace}/{pod}"),
                }),
                SubjectKind::User => match &requester.oidc {
                    Some(o) if trusted_issuers.contains(&o.issuer) => Ok(()),
                    other => Err(RequesterRefused::SidecarUntrustedIssuer {
                        name,
                        requested: requester.name.clone(),
                        namespace: namespace.to_string(),
                        issuer: other.as_ref().map_or_else(
                            || "none recorded".to_string(),
                            |o| format!("{} is not one of them", o.issuer),
                        ),
                    }),
                },
                SubjectKind::Group => Err(RequesterRefused::SidecarGroup { name }),
            }
        }
        Creator::Other(user) => {
            // "Is the creator the requester?" is the self-approval question
            // asked the other way round: the same identity mapping decides.
            let is_self = matches!(
                approver::check_not_requester(&new.spec, namespace, &user.decider(), mapping),
                Err(DecisionRefused::Requester { .. })
            );
            if is_self {
                Ok(())
            } else {
                Err(RequesterRefused::NotSelf {
                    name,
                    user: user.username.clone(),
                    kind: requester.kind.clone(),
                    requested: requester.name.clone(),
                })
            }
        }
    }
}

fn changed_request_field(old: &AccessApproval, new: &AccessApproval) -> Option<&'static str> {
    let (o, n) = (&old.spec, &new.spec);
    if o.requester != n.requester {
        return Some("spec.requester");
    }
    if o.workload != n.workload {
        return Some("spec.workload");
    }
    if o.policy != n.policy {
        return Some("spec.policy");
    }
    if o.rule != n.rule {
        return Some("spec.rule");
    }
    if o.topics != n.topics {
        return Some("spec.topics");
    }
    if o.operations != n.operations {
        return Some("spec.operations");
    }
    if o.duration != n.duration {
        return Some("spec.duration");
    }
    if o.break_glass != n.break_glass {
        return Some("spec.breakGlass");
    }
    if o.reason != n.reason {
        return Some("spec.reason");
    }
    None
}
