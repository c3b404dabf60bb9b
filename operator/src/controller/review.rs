//! Break-glass reviews: which uses of a StreamPolicy's rules are still
//! unreviewed past their deadline (pure). The StreamPolicy reconcile turns
//! the answer into its `ReviewOverdue` condition and requeues at the next
//! deadline.
//!
//! A use is an AccessApproval with `spec.breakGlass: true` in phase
//! `BreakGlass` (a refused invocation granted nothing and needs no review).
//! Its deadline is the start of the use (`status.decidedAt`, else
//! `metadata.creationTimestamp`) plus the rule's `breakGlass.reviewWithin`
//! (default 24h; the default too when the rule is gone — the use still
//! needs its review).
use chrono::{DateTime, Utc};
use streamgate_crds::stream_policy::DEFAULT_REVIEW_WITHIN;
use streamgate_crds::{AccessApproval, ApprovalPhase, StreamPolicy};

/// Condition type on StreamPolicies with break-glass uses.
pub const REVIEW_OVERDUE: &str = "ReviewOverdue";

/// The review state of one policy's break-glass uses at `now`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReviewState {
    /// Unreviewed uses past their deadline (AccessApproval names, sorted).
    pub overdue: Vec<String>,
    /// Unreviewed uses still within their deadline.
    pub pending: usize,
    /// The earliest deadline still ahead (when to look again).
    pub next_deadline: Option<DateTime<Utc>>,
}

/// When a use of `aa` began.
fn started(aa: &AccessApproval) -> Option<DateTime<Utc>> {
    aa.status
        .as_ref()
        .and_then(|s| s.decided_at.as_deref())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc())
        .or_else(|| {
            let t = aa.metadata.creation_timestamp.as_ref()?;
            DateTime::from_timestamp(t.0.as_second(), 0)
        })
}

/// The review state of `sp`'s break-glass uses among `approvals` (any
/// namespace; only those of the policy's namespace count).
pub fn review_state<'a>(
    sp: &StreamPolicy,
    approvals: impl IntoIterator<Item = &'a AccessApproval>,
    now: DateTime<Utc>,
) -> ReviewState {
    let mut state = ReviewState::default();
    let (name, ns) = (
        sp.metadata.name.as_deref().unwrap_or_default(),
        sp.metadata.namespace.as_deref(),
    );
    for aa in approvals {
        let is_use = aa.spec.break_glass
            && aa.spec.policy == name
            && aa.metadata.namespace.as_deref() == ns
            && aa.spec.review.is_none()
            && aa
                .status
                .as_ref()
                .is_some_and(|s| s.phase == ApprovalPhase::BreakGlass);
        let Some(start) = started(aa).filter(|_| is_use) else {
            continue;
        };
        let within = sp
            .spec
            .rules
            .iter()
            .find(|r| r.name == aa.spec.rule)
            .and_then(|r| r.break_glass.as_ref())
            .and_then(|bg| bg.review_within().ok())
            .unwrap_or(DEFAULT_REVIEW_WITHIN);
        let Some(deadline) = chrono::Duration::from_std(within).ok().map(|d| start + d) else {
            continue;
        };
        if now >= deadline {
            state
                .overdue
                .push(aa.metadata.name.clone().unwrap_or_default());
        } else {
            state.pending += 1;
            state.next_deadline = Some(state.next_deadline.map_or(deadline, |t| t.min(deadline)));
        }
    }
    state.overdue.sort();
    state
}

impl ReviewState {
    /// The `ReviewOverdue` condition: (status, reason, message).
    pub fn condition(&self) -> (bool, &'static str, String) {
        if self.overdue.is_empty() {
            return (
                false,
                "NoneOverdue",
                format!(
                    "no break-glass use is past its review deadline ({} awaiting review)",
                    self.pending
                ),
            );
        }
        (
            true,
            "Unreviewed",
            format!(
                "{} break-glass use(s) unreviewed past their deadline: {}; a reviewer of the rule reviews each with kubectl patch aa NAME --type merge -p '{{\"spec\":{{\"review\":\"Justified\",\"reviewNote\":\"...\"}}}}'",
                self.overdue.len(),
                self.overdue.join(", ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn policy() -> StreamPolicy {
        serde_json::from_value(json!({
            "apiVersion": "streamgate.dev/v1alpha1", "kind": "StreamPolicy",
            "metadata": {"name": "phi-access", "namespace": "clinical"},
            "spec": {"rules": [{
                "name": "emergency", "subjects": [{"kind": "Group", "name": "clinicians"}],
                "topics": ["patient-vitals"], "operations": [],
                "breakGlass": {"maxDuration": "1h", "operations": ["Read"], "reviewWithin": "2h",
                               "reviewers": [{"kind": "Group", "name": "compliance-officers"}]}
            }]}
        }))
        .unwrap()
    }

    fn use_(name: &str, started: &str, review: Option<&str>, phase: &str) -> AccessApproval {
        let mut spec = json!({
            "requester": {"kind": "User", "name": "bob"}, "policy": "phi-access",
            "rule": "emergency", "topics": ["patient-vitals"], "operations": ["Read"],
            "duration": "1h", "breakGlass": true, "reason": "ED"
        });
        if let Some(r) = review {
            spec["review"] = json!(r);
        }
        serde_json::from_value(json!({
            "apiVersion": "streamgate.dev/v1alpha1", "kind": "AccessApproval",
            "metadata": {"name": name, "namespace": "clinical"},
            "spec": spec,
            "status": {"phase": phase, "decidedAt": started}
        }))
        .unwrap()
    }

    #[test]
    fn unreviewed_uses_past_review_within_are_overdue_and_the_next_deadline_is_kept() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
        let uses = [
            use_("late", "2026-11-27T09:00:00Z", None, "BreakGlass"),
            use_("later", "2026-11-27T09:30:00Z", None, "BreakGlass"),
            use_("recent", "2026-11-27T11:00:00Z", None, "BreakGlass"),
            use_(
                "reviewed",
                "2026-11-27T08:00:00Z",
                Some("Justified"),
                "BreakGlass",
            ),
            use_("refused", "2026-11-27T08:00:00Z", None, "Denied"),
        ];
        let state = review_state(&policy(), &uses, now);
        assert_eq!(state.overdue, vec!["late".to_string(), "later".to_string()]);
        assert_eq!(state.pending, 1);
        assert_eq!(
            state.next_deadline,
            Some(Utc.with_ymd_and_hms(2026, 11, 27, 13, 0, 0).unwrap())
        );
        let (status, reason, message) = state.condition();
        assert!(status);
        assert_eq!(reason, "Unreviewed");
        assert!(message.starts_with("2 break-glass use(s)"), "{message}");
        assert!(message.contains("late, later"), "{message}");

        // Before the deadline: not overdue, and the reconcile wakes at it.
        let early = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap();
        let state = review_state(&policy(), &uses[..1], early);
        assert!(state.overdue.is_empty());
        assert!(!state.condition().0);
        assert_eq!(
            state.next_deadline,
            Some(Utc.with_ymd_and_hms(2026, 11, 27, 11, 0, 0).unwrap())
        );
    }
}
