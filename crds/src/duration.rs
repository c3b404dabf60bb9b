//! Durations as users write them (`30m`, `1h`, `1h 30m`), shared by
//! validation, the operator (grant expiry) and the proxy.

use std::time::Duration;

use crate::access_approval::AccessApprovalSpec;
use crate::stream_policy::ApprovalRequirement;

/// The longest just-in-time grant streamgate accepts. Longer access is a
/// standing rule, not an approval.
pub const MAX_GRANT_DURATION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Why a duration string is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration (write e.g. 30m, 1h, 1h 30m)")]
    Unparseable(String),
    #[error("{0:?} is zero; a grant must last a positive time")]
    Zero(String),
    #[error("{0:?} is longer than the 7d a just-in-time grant may last")]
    TooLong(String),
}

/// Parse a humantime duration, refusing zero and anything above [`MAX_GRANT_DURATION`].
pub fn parse_grant_duration(text: &str) -> Result<Duration, DurationError> {
    let parsed = humantime::parse_duration(text.trim())
        .map_err(|_| DurationError::Unparseable(text.to_string()))?;
    if parsed.is_zero() {
        return Err(DurationError::Zero(text.to_string()));
    }
    if parsed > MAX_GRANT_DURATION {
        return Err(DurationError::TooLong(text.to_string()));
    }
    Ok(parsed)
}

impl ApprovalRequirement {
    /// The parsed `maxDuration`.
    pub fn max_duration(&self) -> Result<Duration, DurationError> {
        parse_grant_duration(&self.max_duration)
    }
}

impl AccessApprovalSpec {
    /// The parsed requested `duration`.
    pub fn requested_duration(&self) -> Result<Duration, DurationError> {
        parse_grant_duration(&self.duration)
    }

    /// How long an approved grant lasts: the request, capped by the rule's `maxDuration`.
    pub fn granted_duration(&self, rule: &ApprovalRequirement) -> Result<Duration, DurationError> {
        Ok(self.requested_duration()?.min(rule.max_duration()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_humantime_and_refuses_nonsense() {
        assert_eq!(parse_grant_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(
            parse_grant_duration("1h 30m"),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(parse_grant_duration("7d"), Ok(MAX_GRANT_DURATION));
        assert!(matches!(
            parse_grant_duration("soon"),
            Err(DurationError::Unparseable(_))
        ));
        assert!(matches!(
            parse_grant_duration(""),
            Err(DurationError::Unparseable(_))
        ));
        assert!(matches!(
            parse_grant_duration("0s"),
            Err(DurationError::Zero(_))
        ));
        assert!(matches!(
            parse_grant_duration("8d"),
            Err(DurationError::TooLong(_))
        ));
    }

    #[test]
    fn grant_is_capped_by_the_rule() {
        let rule = ApprovalRequirement {
            approvers: vec![],
            max_duration: "1h".into(),
        };
        let spec: AccessApprovalSpec = serde_json::from_value(serde_json::json!({
            "requester": {"kind": "User", "name": "alice@example.com"},
            "policy": "phi-access", "rule": "r", "topics": ["t"], "operations": ["Write"],
            "duration": "4h"
        }))
        .unwrap();
        assert_eq!(spec.granted_duration(&rule), Ok(Duration::from_secs(3600)));
    }
}
