//! AccessApproval: phase from the decision, decidedAt/expiresAt, expiry on time.
//!
//! The grant lasts the requested `duration`, capped by the rule's
//! `maxDuration`, counted from when the operator first saw the decision
//! (`decidedAt`). `expiresAt` is computed once and never extended. An
//! approved request whose policy or rule is gone is not activated (fail
//! closed): it stays `Pending` with `Ready=False, reason RuleNotFound`.
//!
//! A break-glass request (`spec.breakGlass: true`) needs no decision: when
//! its rule has `breakGlass` giving the requested operations and the
//! requester is among the rule's subjects, it becomes `BreakGlass` at once,
//! live from `metadata.creationTimestamp` for the requested duration capped
//! by `breakGlass.maxDuration` (sidecars file one for every use they grant,
//! which this makes visible the same way), with a Warning Event; it stays
//! `BreakGlass` as the record of the use, awaiting its review. Without such a
//! rule it is `Denied` (`NoBreakGlassRule`) and grants nothing.
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::Api;
use kube::runtime::controller::Action;
use streamgate_crds::{
    AccessApproval, AccessApprovalStatus, ApprovalPhase, Decision, StreamPolicy,
};

use super::{Context, Error, RESYNC, conditions, name_ns};

pub const CONTROLLER: &str = "accessapproval";

/// The rule's `maxDuration`, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cap {
    Max(Duration),
    PolicyNotFound,
    RuleNotFound,
    /// A break-glass request the rule does not allow: no `breakGlass`, the
    /// operations beyond it, or a requester outside its subjects (`why`).
    NoBreakGlass(String),
}

/// Grant length: requested, capped by the rule; an unparseable request gets the cap.
pub fn grant_duration(requested: &str, max: Duration) -> Duration {
    streamgate_crds::duration::parse_grant_duration(requested).map_or(max, |d| d.min(max))
}

fn parse_time(s: Option<&String>) -> Option<DateTime<Utc>> {
    s.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The status an AccessApproval should have at `now`, and when to look again.
/// `cap` is only consulted when the grant is being activated.
pub fn desired_status(
    aa: &AccessApproval,
    cap: Option<&Cap>,
    now: DateTime<Utc>,
) -> (AccessApprovalStatus, Option<Duration>) {
    let previous = aa.status.clone().unwrap_or_default();
    let generation = aa.metadata.generation;
    let decided_by = aa
        .spec
        .decided_by
        .clone()
        .unwrap_or_else(|| "<unknown>".to_string());
    let ns = aa.metadata.namespace.clone().unwrap_or_default();
    let name = aa.metadata.name.clone().unwrap_or_default();
    let decided_at = parse_time(previous.decided_at.as_ref()).unwrap_or(now);
    let mut status = AccessApprovalStatus {
        observed_generation: generation,
        ..Default::default()
    };
    let mut requeue = None;
    if aa.spec.break_glass {
        let (ready, reason, message) =
            break_glass_status(aa, &previous, cap, now, &mut status, &mut requeue);
        status.conditions = vec![conditions::ready(
            ready,
            reason,
            message,
            generation,
            &previous.conditions,
            now,
        )];
        return (status, requeue);
    }
    let (ready, reason, message) = match aa.spec.decision {
        Decision::Pending => {
            status.phase = ApprovalPhase::Pending;
            (
                false,
                "AwaitingDecision",
                format!(
                    "waiting for an approver of rule {:?} in StreamPolicy {:?}: kubectl -n {ns} patch aa {name} --type merge -p '{{\"spec\":{{\"decision\":\"Approved\"}}}}'",
                    aa.spec.rule, aa.spec.policy
                ),
            )
        }
        Decision::Denied => {
            status.phase = ApprovalPhase::Denied;
            status.decided_at = Some(conditions::rfc3339(decided_at));
            (false, "Denied", format!("denied by {decided_by}"))
        }
        Decision::Approved => {
            let expires_at = match (parse_time(previous.expires_at.as_ref()), cap) {
                (Some(t), _) => Some(t),
                (None, Some(Cap::Max(max))) => {
                    let d = grant_duration(&aa.spec.duration, *max);
                    chrono::Duration::from_std(d).ok().map(|d| decided_at + d)
                }
                _ => None,
            };
            match expires_at {
                None => {
                    status.phase = ApprovalPhase::Pending;
                    requeue = Some(Duration::from_secs(60));
                    let why = match cap {
                        Some(Cap::PolicyNotFound) => {
                            format!("StreamPolicy {:?} does not exist", aa.spec.policy)
                        }
                        _ => format!(
                            "StreamPolicy {:?} has no rule {:?} with approval",
                            aa.spec.policy, aa.spec.rule
                        ),
                    };
                    (
                        false,
                        "RuleNotFound",
                        format!(
                            "approved by {decided_by} but not activated: {why}; restore the rule or create a new request"
                        ),
                    )
                }
                Some(expires_at) => {
                    status.decided_at = Some(conditions::rfc3339(decided_at));
                    status.expires_at = Some(conditions::rfc3339(expires_at));
                    if now >= expires_at || previous.phase == ApprovalPhase::Expired {
                        status.phase = ApprovalPhase::Expired;
                        (
                            false,
                            "Expired",
                            format!(
                                "grant by {decided_by} expired at {}; request access again",
                                conditions::rfc3339(expires_at)
                            ),
                        )
                    } else {
                        status.phase = ApprovalPhase::Approved;
                        // Wake up right at expiry (rounded up to the next second).
                        requeue = (expires_at - now)
                            .to_std()
                            .ok()
                            .map(|d| d + Duration::from_secs(1));
                        (
                            true,
                            "Approved",
                            format!(
                                "approved by {decided_by} until {}",
                                conditions::rfc3339(expires_at)
                            ),
                        )
                    }
                }
            }
        }
    };
    status.conditions = vec![conditions::ready(
        ready,
        reason,
        message,
        generation,
        &previous.conditions,
        now,
    )];
    (status, requeue)
}

/// The status of a break-glass request: `BreakGlass` from its creation for
/// the capped duration (computed once, like `expiresAt` of a grant), or
/// `Denied` without a rule allowing it.
fn break_glass_status(
    aa: &AccessApproval,
    previous: &AccessApprovalStatus,
    cap: Option<&Cap>,
    now: DateTime<Utc>,
    status: &mut AccessApprovalStatus,
    requeue: &mut Option<Duration>,
) -> (bool, &'static str, String) {
    let ns = aa.metadata.namespace.clone().unwrap_or_default();
    let name = aa.metadata.name.clone().unwrap_or_default();
    let requester = &aa.spec.requester.name;
    let reason = aa.spec.reason.clone().unwrap_or_default();
    let since = aa
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| {
            DateTime::from_timestamp(
                t.0.as_second(),
                t.0.subsec_nanosecond().max(0).unsigned_abs(),
            )
        })
        .or_else(|| parse_time(previous.decided_at.as_ref()))
        .unwrap_or(now);
    let expires_at = match (
        previous.phase,
        parse_time(previous.expires_at.as_ref()),
        cap,
    ) {
        (ApprovalPhase::BreakGlass, Some(t), _) => Some(t),
        (_, _, Some(Cap::Max(max))) => {
            let d = grant_duration(&aa.spec.duration, *max);
            chrono::Duration::from_std(d).ok().map(|d| since + d)
        }
        _ => None,
    };
    let Some(expires_at) = expires_at else {
        status.phase = ApprovalPhase::Denied;
        let why = match cap {
            Some(Cap::PolicyNotFound) => {
                format!("StreamPolicy {:?} does not exist", aa.spec.policy)
            }
            Some(Cap::NoBreakGlass(why)) => why.clone(),
            _ => format!(
                "StreamPolicy {:?} has no rule {:?} with breakGlass",
                aa.spec.policy, aa.spec.rule
            ),
        };
        return (
            false,
            "NoBreakGlassRule",
            format!("break-glass by {requester} refused: {why}; it grants nothing"),
        );
    };
    status.phase = ApprovalPhase::BreakGlass;
    status.decided_at = Some(conditions::rfc3339(since));
    status.expires_at = Some(conditions::rfc3339(expires_at));
    let review = match (aa.spec.review, aa.spec.reviewed_by.as_deref()) {
        (Some(r), by) => format!("reviewed {r:?} by {}", by.unwrap_or("<unknown>")),
        (None, _) => format!(
            "awaiting review by a reviewer of rule {:?}: kubectl -n {ns} patch aa {name} --type merge -p '{{\"spec\":{{\"review\":\"Justified\",\"reviewNote\":\"...\"}}}}'",
            aa.spec.rule
        ),
    };
    if now < expires_at {
        *requeue = (expires_at - now)
            .to_std()
            .ok()
            .map(|d| d + Duration::from_secs(1));
        (
            true,
            "BreakGlass",
            format!(
                "break-glass by {requester} ({reason:?}) until {}; {review}",
                conditions::rfc3339(expires_at)
            ),
        )
    } else {
        (
            false,
            "BreakGlassEnded",
            format!(
                "break-glass by {requester} ({reason:?}) ended at {}; {review}",
                conditions::rfc3339(expires_at)
            ),
        )
    }
}

/// The break-glass cap: the rule's `breakGlass.maxDuration` when the rule
/// gives the requested operations and the requester is one of its subjects.
fn break_glass_cap(policy: &StreamPolicy, aa: &AccessApproval) -> Cap {
    let Some(rule) = policy.spec.rules.iter().find(|r| r.name == aa.spec.rule) else {
        return Cap::RuleNotFound;
    };
    let Some(bg) = rule.break_glass.as_ref() else {
        return Cap::NoBreakGlass(format!("rule {:?} has no breakGlass", rule.name));
    };
    if let Some(op) = aa
        .spec
        .operations
        .iter()
        .find(|o| !bg.operations.contains(o))
    {
        return Cap::NoBreakGlass(format!(
            "rule {:?} gives no {op:?} under break-glass",
            rule.name
        ));
    }
    let ns = aa.metadata.namespace.clone().unwrap_or_default();
    let requester = &aa.spec.requester;
    let principal = streamgate_crds::matching::Principal {
        kind: requester.kind.clone(),
        name: requester.name.clone(),
        namespace: (requester.kind == streamgate_crds::SubjectKind::ServiceAccount)
            .then(|| ns.clone()),
        groups: requester.groups.clone(),
        issuer: requester.oidc.as_ref().map(|o| o.issuer.clone()),
    };
    // The requester's groups are as filed; the sidecar checks the caller's
    // own token again before anything is read.
    if !rule.subjects.iter().any(|s| s.matches(&principal, &ns)) {
        return Cap::NoBreakGlass(format!(
            "{} is not among the subjects of rule {:?}",
            requester.name, rule.name
        ));
    }
    match bg.max_duration() {
        Ok(max) => Cap::Max(max),
        Err(e) => Cap::NoBreakGlass(e.to_string()),
    }
}

async fn lookup_cap(aa: &AccessApproval, ns: &str, ctx: &Context) -> Result<Cap, Error> {
    let api: Api<StreamPolicy> = Api::namespaced(ctx.client.clone(), ns);
    let Some(policy) = api.get_opt(&aa.spec.policy).await? else {
        return Ok(Cap::PolicyNotFound);
    };
    if aa.spec.break_glass {
        return Ok(break_glass_cap(&policy, aa));
    }
    let max = policy
        .spec
        .rules
        .iter()
        .find(|r| r.name == aa.spec.rule)
        .and_then(|r| r.approval.as_ref())
        .and_then(|a| a.max_duration().ok());
    Ok(max.map_or(Cap::RuleNotFound, Cap::Max))
}

pub async fn reconcile(aa: Arc<AccessApproval>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled(CONTROLLER);
    let (name, ns) = name_ns(aa.as_ref())?;
    let previous = aa.status.clone().unwrap_or_default();
    let needs_cap = if aa.spec.break_glass {
        previous.phase != ApprovalPhase::BreakGlass && previous.phase != ApprovalPhase::Denied
    } else {
        aa.spec.decision == Decision::Approved && previous.expires_at.is_none()
    };
    let cap = if needs_cap {
        Some(lookup_cap(&aa, &ns, &ctx).await?)
    } else {
        None
    };
    let (status, requeue) = desired_status(&aa, cap.as_ref(), ctx.now());
    if status != previous {
        super::apply_status::<AccessApproval>(&ctx.client, &ns, &name, &status).await?;
        if (status.phase != previous.phase || aa.status.is_none())
            && let Some(c) = status.conditions.first()
        {
            let warning = matches!(
                status.phase,
                ApprovalPhase::Denied | ApprovalPhase::Expired | ApprovalPhase::BreakGlass
            ) || c.reason == "RuleNotFound";
            ctx.event(aa.as_ref(), warning, &c.reason, c.message.clone())
                .await;
        }
    }
    ctx.succeeded(&super::object_key(aa.as_ref()));
    Ok(Action::requeue(requeue.unwrap_or(RESYNC).min(RESYNC)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_duration_is_capped_by_the_rule() {
        assert_eq!(
            grant_duration("2h", Duration::from_secs(3600)),
            Duration::from_secs(3600)
        );
        assert_eq!(
            grant_duration("15m", Duration::from_secs(3600)),
            Duration::from_secs(900)
        );
        assert_eq!(
            grant_duration("soon", Duration::from_secs(3600)),
            Duration::from_secs(3600)
        );
    }
}
