//! Building conditions without churning `lastTransitionTime`.
use chrono::{DateTime, SecondsFormat, Utc};
use streamgate_crds::Condition;

pub const READY: &str = "Ready";
/// Whether the governed pods' audit records leave the pod (an OTLP collector
/// is configured for injected sidecars).
pub const AUDIT_SINK: &str = "AuditSink";

/// The new Ready condition; `lastTransitionTime` is kept from `previous` when
/// the status did not flip, so an unchanged object produces an equal status.
pub fn ready(
    is_ready: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: DateTime<Utc>,
) -> Condition {
    condition(READY, is_ready, reason, message, generation, previous, now)
}

/// A condition of `type_` (see [`ready`]).
pub fn condition(
    type_: &str,
    is_true: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: DateTime<Utc>,
) -> Condition {
    let status = if is_true { "True" } else { "False" };
    let last = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| rfc3339(now));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: Some(last),
        observed_generation: generation,
    }
}

/// Did the condition of `next`'s type change status or reason (an Event-worthy transition)?
pub fn transitioned(previous: &[Condition], next: &Condition) -> bool {
    previous
        .iter()
        .find(|c| c.type_ == next.type_)
        .is_none_or(|c| c.status != next.status || c.reason != next.reason)
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn transition_time_is_kept_while_status_holds() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 27, 5, 0, 0).unwrap();
        let t1 = Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap();
        let first = ready(true, "Valid", "ok".into(), Some(1), &[], t0);
        let again = ready(
            true,
            "Valid",
            "ok".into(),
            Some(2),
            std::slice::from_ref(&first),
            t1,
        );
        assert_eq!(
            again.last_transition_time.as_deref(),
            Some("2026-11-27T05:00:00Z")
        );
        let flipped = ready(
            false,
            "Invalid",
            "bad".into(),
            Some(3),
            std::slice::from_ref(&again),
            t1,
        );
        assert_eq!(
            flipped.last_transition_time.as_deref(),
            Some("2026-11-27T06:00:00Z")
        );
        assert!(transitioned(&[again], &flipped));
    }
}
