//! A thin seam over the shared validation in `streamgate_crds::validation`.
//!
//! The crds crate owns the rules; the operator only turns their outcome into
//! a list of human-readable problems. Keeping the call behind this module
//! means the controllers do not change when the shared functions do.
use streamgate_crds::{MaskingRuleSpec, StreamPolicySpec};

/// Problems found in a StreamPolicy spec; empty when it is valid.
pub fn stream_policy(spec: &StreamPolicySpec) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        if rule.name.trim().is_empty() {
            problems.push(format!("rules[{i}]: name must not be empty"));
        } else if !names.insert(rule.name.as_str()) {
            problems.push(format!("rules[{i}]: duplicate rule name {:?}", rule.name));
        }
        if rule.subjects.is_empty() {
            problems.push(format!("rule {:?}: subjects must not be empty", rule.name));
        }
        if rule.topics.is_empty() {
            problems.push(format!("rule {:?}: topics must not be empty", rule.name));
        }
        if rule.operations.is_empty() {
            problems.push(format!(
                "rule {:?}: operations must not be empty",
                rule.name
            ));
        }
        if let Some(approval) = &rule.approval {
            if approval.approvers.is_empty() {
                problems.push(format!(
                    "rule {:?}: approval.approvers must not be empty",
                    rule.name
                ));
            }
            if let Err(e) = humantime::parse_duration(&approval.max_duration) {
                problems.push(format!(
                    "rule {:?}: approval.maxDuration {:?} is not a duration like 30m or 1h: {e}",
                    rule.name, approval.max_duration
                ));
            }
        }
    }
    if let Some(oidc) = &spec.identity.oidc {
        if !oidc.issuer.starts_with("https://") && !oidc.issuer.starts_with("http://") {
            problems.push(format!(
                "identity.oidc.issuer {:?} must be an http(s) URL",
                oidc.issuer
            ));
        }
        if oidc.audiences.is_empty() {
            problems.push("identity.oidc.audiences must name at least one audience".to_string());
        }
    }
    problems
}

/// Problems found in a MaskingRule spec; empty when it is valid.
pub fn masking_rule(spec: &MaskingRuleSpec) -> Vec<String> {
    use streamgate_crds::MaskStrategy;
    let mut problems = Vec::new();
    if spec.topics.is_empty() {
        problems.push("topics must not be empty".to_string());
    }
    for f in &spec.fields {
        if !f.path.starts_with('$') {
            problems.push(format!(
                "field path {:?} must start with $ (e.g. $.patient.ssn)",
                f.path
            ));
        }
        if f.strategy == MaskStrategy::Partial && f.keep_last.is_none() {
            problems.push(format!(
                "field {:?}: strategy Partial needs keepLast",
                f.path
            ));
        }
        if f.strategy == MaskStrategy::Hash && spec.hash_key_secret_ref.is_none() {
            problems.push(format!(
                "field {:?}: strategy Hash needs hashKeySecretRef (the HMAC key Secret)",
                f.path
            ));
        }
    }
    if spec.fields.is_empty() && spec.detectors.is_empty() {
        problems.push("a MaskingRule needs at least one field or detector".to_string());
    }
    problems
}
