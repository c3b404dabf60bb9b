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
use serde_json::json;
use streamgate_crds::matching::Principal;
use streamgate_crds::{AccessApproval, Decision, StreamPolicy, SubjectKind};

/// The Kubernetes user making the request (from `AdmissionRequest.userInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestUser {
    pub username: String,
    pub groups: Vec<String>,
}

impl RequestUser {
    /// As a policy principal: ServiceAccount users become `ServiceAccount` principals.
    fn principal(&self) -> Principal {
        match self
            .username
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
        {
            Some((ns, name)) => Principal {
                kind: SubjectKind::ServiceAccount,
                name: name.to_string(),
                namespace: Some(ns.to_string()),
                groups: self.groups.clone(),
            },
            None => Principal {
                kind: SubjectKind::User,
                name: self.username.clone(),
                namespace: None,
                groups: self.groups.clone(),
            },
        }
    }
}

/// The mutating half: the patch that stamps `decidedBy`, if this request decides.
pub fn stamp_decided_by(
    old: Option<&AccessApproval>,
    new: &AccessApproval,
    user: &RequestUser,
) -> Option<json_patch::Patch> {
    let was_pending = old.is_none_or(|o| o.spec.decision == Decision::Pending);
    if !was_pending || new.spec.decision == Decision::Pending {
        return None;
    }
    if new.spec.decided_by.as_deref() == Some(user.username.as_str()) {
        return None;
    }
    // `add` replaces an existing member (RFC 6902 §4.1), so it also overwrites a forged value.
    serde_json::from_value(
        json!([{ "op": "add", "path": "/spec/decidedBy", "value": user.username }]),
    )
    .ok()
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
    #[error(
        "AccessApproval {name}: {user} is the requester and cannot decide their own request; ask one of the rule's approvers"
    )]
    SelfDecision { name: String, user: String },
    #[error(
        "AccessApproval {name}: {user} is not an approver of rule {rule:?} in StreamPolicy {policy:?} (approvers: {approvers})"
    )]
    NotAnApprover {
        name: String,
        user: String,
        policy: String,
        rule: String,
        approvers: String,
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
        "AccessApproval {name}: decidedBy {claimed:?} does not match the requesting user {user:?}; decidedBy is written by streamgate, never by the client"
    )]
    ForgedDecidedBy {
        name: String,
        claimed: String,
        user: String,
    },
}

/// The validating half. `policy` is the StreamPolicy named by the request
/// (looked up by the caller in the AccessApproval's namespace), `None` when absent.
pub fn validate(
    old: Option<&AccessApproval>,
    new: &AccessApproval,
    user: &RequestUser,
    namespace: &str,
    policy: Option<&StreamPolicy>,
) -> Result<(), ApprovalDenied> {
    let name = new.metadata.name.clone().unwrap_or_default();
    let Some(old) = old else {
        if new.spec.decision != Decision::Pending || new.spec.decided_by.is_some() {
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
    match new.spec.decided_by.as_deref() {
        Some(claimed) if claimed == user.username => {}
        claimed => {
            return Err(ApprovalDenied::ForgedDecidedBy {
                name,
                claimed: claimed.unwrap_or("").to_string(),
                user: user.username.clone(),
            });
        }
    }
    let principal = user.principal();
    if is_requester(new, &principal, namespace) {
        return Err(ApprovalDenied::SelfDecision {
            name,
            user: user.username.clone(),
        });
    }
    let Some(policy) = policy else {
        return Err(ApprovalDenied::PolicyNotFound {
            name,
            policy: new.spec.policy.clone(),
            namespace: namespace.to_string(),
        });
    };
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
    // A wildcard approver is refused by validation; never honour one here either.
    if !approval
        .approvers
        .iter()
        .any(|s| !s.is_wildcard() && s.matches(&principal, namespace))
    {
        let approvers = approval
            .approvers
            .iter()
            .map(|s| format!("{:?} {}", s.kind, s.name))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ApprovalDenied::NotAnApprover {
            name,
            user: user.username.clone(),
            policy: new.spec.policy.clone(),
            rule: new.spec.rule.clone(),
            approvers,
        });
    }
    Ok(())
}

fn is_requester(aa: &AccessApproval, principal: &Principal, namespace: &str) -> bool {
    let r = &aa.spec.requester;
    match r.kind {
        SubjectKind::ServiceAccount => {
            principal.kind == SubjectKind::ServiceAccount
                && principal.name == r.name
                && principal.namespace.as_deref() == Some(namespace)
        }
        // A requester is a person (or a group never decides); compare usernames.
        SubjectKind::User | SubjectKind::Group => {
            principal.kind == SubjectKind::User && principal.name == r.name
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
    None
}
