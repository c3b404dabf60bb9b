//! A thin seam over the shared validation in `streamgate_crds::validation`.
//!
//! The crds crate owns the rules; the operator only turns their outcome into
//! a list of human-readable problems (`field: what is wrong`). Keeping the
//! call behind this module means the controllers and webhooks do not change
//! when the shared functions do.
use streamgate_crds::validation::{
    ValidationErrors, validate_access_approval, validate_masking_rule, validate_stream_policy,
};
use streamgate_crds::{AccessApprovalSpec, MaskingRuleSpec, StreamPolicySpec};

fn problems(result: Result<(), ValidationErrors>) -> Vec<String> {
    match result {
        Ok(()) => Vec::new(),
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    }
}

/// Problems found in a StreamPolicy spec; empty when it is valid.
pub fn stream_policy(spec: &StreamPolicySpec) -> Vec<String> {
    problems(validate_stream_policy(spec))
}

/// Problems found in a MaskingRule spec; empty when it is valid.
pub fn masking_rule(spec: &MaskingRuleSpec) -> Vec<String> {
    problems(validate_masking_rule(spec))
}

/// Problems found in an AccessApproval spec; empty when it is valid.
pub fn access_approval(spec: &AccessApprovalSpec) -> Vec<String> {
    problems(validate_access_approval(spec))
}
