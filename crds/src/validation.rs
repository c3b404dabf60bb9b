//! Validation the API server's CEL rules cannot express (or express only
//! coarsely): glob syntax, field-path grammar, durations, regular expressions.
//!
//! The operator runs these in its admission webhook and when it reconciles;
//! the proxy runs them before it trusts a policy. Each function returns every
//! problem at once, each naming the field, what is wrong and what is allowed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::access_approval::AccessApprovalSpec;
use crate::common::{Subject, SubjectKind};
use crate::duration::parse_grant_duration;
use crate::field_path::FieldPath;
use crate::masking_rule::{Detector, MaskFormat, MaskStrategy, MaskingRuleSpec};
use crate::matching::{check_topic_glob, check_topic_name};
use crate::stream_policy::{Effect, StreamPolicySpec};

/// One thing wrong with a spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where, e.g. `spec.rules[1] (read-claims).topics[0]`.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in one spec; `Display` lists them all, one per line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.problems))]
pub struct ValidationErrors {
    pub problems: Vec<Problem>,
}

fn render(problems: &[Problem]) -> String {
    let mut out = format!(
        "{} problem{} found:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for problem in problems {
        out.push_str("\n  - ");
        out.push_str(&problem.to_string());
    }
    out
}

/// Collects problems while walking a spec.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }

    fn finish(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors { problems: self.0 })
        }
    }

    fn topics(&mut self, field: &str, topics: &[String]) {
        if topics.is_empty() {
            self.add(
                field,
                "is empty; name at least one topic or glob (e.g. \"claims.*\", \"**\")",
            );
        }
        for (i, topic) in topics.iter().enumerate() {
            if let Err(reason) = check_topic_glob(topic) {
                self.add(format!("{field}[{i}]"), reason);
            }
        }
    }

    /// Topic *names*, not globs: an AccessApproval grants exactly the topics
    /// it names (a wildcard copied from a client's request would otherwise
    /// widen the grant once approved).
    fn topic_names(&mut self, field: &str, topics: &[String]) {
        if topics.is_empty() {
            self.add(field, "is empty; name at least one topic");
        }
        for (i, topic) in topics.iter().enumerate() {
            if let Err(reason) = check_topic_name(topic) {
                self.add(format!("{field}[{i}]"), reason);
            }
        }
    }

    /// Refuse `name: "*"` where "anyone" defeats the purpose of the list.
    fn no_wildcards(&mut self, field: &str, subjects: &[Subject], why: &str) {
        for (i, subject) in subjects.iter().enumerate() {
            if subject.is_wildcard() {
                self.add(
                    format!("{field}[{i}].name"),
                    format!("cannot be \"*\" here: {why}"),
                );
            }
        }
    }

    fn subjects(&mut self, field: &str, subjects: &[Subject], required: bool) {
        if required && subjects.is_empty() {
            self.add(
                field,
                "is empty; name at least one User, Group or ServiceAccount (name \"*\" means any)",
            );
        }
        for (i, subject) in subjects.iter().enumerate() {
            let at = format!("{field}[{i}]");
            if subject.name.trim().is_empty() {
                self.add(
                    format!("{at}.name"),
                    "is empty; give a name, or \"*\" for any",
                );
            }
            if subject.namespace.is_some() && subject.kind != SubjectKind::ServiceAccount {
                self.add(
                    format!("{at}.namespace"),
                    format!(
                        "is only meaningful for kind ServiceAccount, not {:?}",
                        subject.kind
                    ),
                );
            }
        }
    }
}

fn validate_saml(saml: &crate::SamlIdentity, p: &mut Problems) {
    if saml.issuer.trim().is_empty() {
        p.add(
            "spec.identity.saml.issuer",
            "is empty; name the IdP's entity id",
        );
    }
    if saml.audience.trim().is_empty() {
        p.add(
            "spec.identity.saml.audience",
            "is empty; name the gate's SP entity id (the assertions' AudienceRestriction)",
        );
    }
    match (&saml.metadata.file, &saml.metadata.url) {
        (Some(_), Some(_)) | (None, None) => p.add(
            "spec.identity.saml.metadata",
            "needs exactly one of file and url",
        ),
        (Some(f), None) if !f.starts_with('/') => p.add(
            "spec.identity.saml.metadata.file",
            format!("{f:?} is not an absolute path"),
        ),
        (None, Some(u)) if !(u.starts_with("https://") || u.starts_with("http://")) => p.add(
            "spec.identity.saml.metadata.url",
            format!("{u:?} is not an http(s) URL"),
        ),
        _ => {}
    }
    for (field, value) in [
        ("subjectAttribute", &saml.subject_attribute),
        ("groupsAttribute", &saml.groups_attribute),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            p.add(
                format!("spec.identity.saml.{field}"),
                "is empty; omit it for the default",
            );
        }
    }
    if saml.clock_skew_seconds.is_some_and(|s| s > 600) {
        p.add(
            "spec.identity.saml.clockSkewSeconds",
            "is over 600; a skew that large accepts long-expired assertions",
        );
    }
}

/// Validate a StreamPolicy spec.
pub fn validate_stream_policy(spec: &StreamPolicySpec) -> Result<(), ValidationErrors> {
    let mut p = Problems::default();

    if let Err(why) = spec.audit.max_ship_lag() {
        p.add("spec.audit.maxShipLag", why);
    }

    if let Some(oidc) = &spec.identity.oidc {
        if !(oidc.issuer.starts_with("https://") || oidc.issuer.starts_with("http://")) {
            p.add(
                "spec.identity.oidc.issuer",
                format!("{:?} is not an http(s) URL of an OIDC issuer", oidc.issuer),
            );
        }
        if oidc.audiences.iter().all(|a| a.trim().is_empty()) {
            p.add(
                "spec.identity.oidc.audiences",
                "is empty; list the token audiences (aud) the sidecar accepts, e.g. [kafka]",
            );
        }
    }

    if let Some(saml) = &spec.identity.saml {
        validate_saml(saml, &mut p);
        if spec.identity.oidc.is_some() {
            p.add(
                "spec.identity",
                "names both oidc and saml; a policy trusts one token issuer (write one policy per issuer)",
            );
        }
    }

    let mut first_index_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = if rule.name.is_empty() {
            format!("spec.rules[{i}]")
        } else {
            format!("spec.rules[{i}] ({})", rule.name)
        };
        if rule.name.trim().is_empty() {
            p.add(
                format!("{at}.name"),
                "is empty; every rule needs a name (audit records cite it)",
            );
        } else if let Some(first) = first_index_of.get(rule.name.as_str()) {
            p.add(
                format!("{at}.name"),
                format!(
                    "duplicate rule name {:?} (also spec.rules[{first}]); rule names must be unique within a policy",
                    rule.name
                ),
            );
        } else {
            first_index_of.insert(&rule.name, i);
        }
        p.subjects(&format!("{at}.subjects"), &rule.subjects, true);
        p.topics(&format!("{at}.topics"), &rule.topics);
        for (list, globs) in [
            ("groups", &rule.groups),
            ("transactionalIds", &rule.transactional_ids),
        ] {
            for (j, glob) in globs.iter().enumerate() {
                if let Err(reason) = check_topic_glob(glob) {
                    p.add(format!("{at}.{list}[{j}]"), reason);
                }
            }
        }
        if rule.operations.is_empty() && rule.break_glass.is_none() {
            p.add(
                format!("{at}.operations"),
                "is empty; list at least one of Write, Read, Describe, Create, Admin",
            );
        }
        if let Some(bg) = &rule.break_glass {
            validate_break_glass(&at, rule, bg, &mut p);
        }
        if let Some(approval) = &rule.approval {
            if rule.effect == Effect::Deny {
                p.add(
                    format!("{at}.approval"),
                    "is only allowed on Allow rules (a Deny rule cannot be approved away)",
                );
            }
            p.subjects(
                &format!("{at}.approval.approvers"),
                &approval.approvers,
                true,
            );
            p.no_wildcards(
                &format!("{at}.approval.approvers"),
                &approval.approvers,
                "anyone could approve; name the people or groups who may",
            );
            if let Err(e) = parse_grant_duration(&approval.max_duration) {
                p.add(format!("{at}.approval.maxDuration"), e.to_string());
            }
        }
    }
    p.finish()
}

/// A rule's `breakGlass`: only on Allow rules, real durations, operations,
/// and named reviewers (the uses must be reviewable by someone).
fn validate_break_glass(
    at: &str,
    rule: &crate::PolicyRule,
    bg: &crate::BreakGlassSpec,
    p: &mut Problems,
) {
    if rule.effect == Effect::Deny {
        p.add(
            format!("{at}.breakGlass"),
            "is only allowed on Allow rules (break-glass never lifts a Deny)",
        );
    }
    if let Err(e) = bg.max_duration() {
        p.add(format!("{at}.breakGlass.maxDuration"), e.to_string());
    }
    if let Err(e) = bg.review_within() {
        p.add(format!("{at}.breakGlass.reviewWithin"), e.to_string());
    }
    if bg.operations.is_empty() {
        p.add(
            format!("{at}.breakGlass.operations"),
            "is empty; list what break-glass gives, e.g. [Read]",
        );
    }
    p.subjects(&format!("{at}.breakGlass.reviewers"), &bg.reviewers, false);
    p.no_wildcards(
        &format!("{at}.breakGlass.reviewers"),
        &bg.reviewers,
        "anyone could review; name the people or groups who may",
    );
    if rule.break_glass_reviewers().is_empty() {
        p.add(
            format!("{at}.breakGlass.reviewers"),
            "is empty and the rule has no approval.approvers; every break-glass use needs a reviewer",
        );
    }
}

/// Validate a MaskingRule spec.
pub fn validate_masking_rule(spec: &MaskingRuleSpec) -> Result<(), ValidationErrors> {
    let mut p = Problems::default();
    p.topics("spec.topics", &spec.topics);

    // A rule may only name patients (an accounting of disclosures, no masking).
    if spec.fields.is_empty() && spec.detectors.is_empty() && spec.patient_fields.is_empty() {
        p.add(
            "spec",
            "masks nothing; list fields, detectors, or both (or patientFields)",
        );
    }
    if spec.format == MaskFormat::Text && !spec.fields.is_empty() {
        p.add(
            "spec.fields",
            "needs format Json; a Text value has no fields (use detectors to scan text)",
        );
    }

    let mut seen_paths = BTreeSet::new();
    for (i, field) in spec.fields.iter().enumerate() {
        let at = format!("spec.fields[{i}] ({})", field.path);
        match FieldPath::parse(&field.path) {
            Ok(parsed) => {
                if !seen_paths.insert(parsed.to_string()) {
                    p.add(
                        format!("{at}.path"),
                        "appears twice; give each path one strategy",
                    );
                }
            }
            Err(e) => p.add(format!("{at}.path"), e.to_string()),
        }
        match (field.strategy, field.keep_last) {
            (MaskStrategy::Partial, None) => p.add(
                format!("{at}.keepLast"),
                "is required with strategy Partial (how many trailing characters stay visible, e.g. 4)",
            ),
            (MaskStrategy::Partial, Some(_)) => {}
            (other, Some(_)) => p.add(
                format!("{at}.keepLast"),
                format!("is only allowed with strategy Partial, not {other:?}"),
            ),
            (_, None) => {}
        }
        if field.strategy == MaskStrategy::Hash && spec.hash_key_secret_ref.is_none() {
            p.add(
                format!("{at}.strategy"),
                "is Hash but spec.hashKeySecretRef is missing; name the Secret key holding the HMAC key",
            );
        }
    }

    if let Some(secret) = &spec.hash_key_secret_ref
        && (secret.name.trim().is_empty() || secret.key.trim().is_empty())
    {
        p.add(
            "spec.hashKeySecretRef",
            "needs both name (a Secret in this namespace) and key (the entry holding the HMAC key)",
        );
    }

    // patientFields: the same path grammar as `fields`, and a key to hash with.
    let mut seen_patient_paths = BTreeSet::new();
    for (i, path) in spec.patient_fields.iter().enumerate() {
        let at = format!("spec.patientFields[{i}] ({path})");
        match FieldPath::parse(path) {
            Ok(parsed) if !seen_patient_paths.insert(parsed.to_string()) => {
                p.add(at, "appears twice");
            }
            Ok(_) => {}
            Err(e) => p.add(at, e.to_string()),
        }
    }
    if !spec.patient_fields.is_empty() && spec.format == MaskFormat::Text {
        p.add(
            "spec.patientFields",
            "needs format Json; a Text value has no fields to name a patient",
        );
    }
    match &spec.patient_key_secret_ref {
        None if !spec.patient_fields.is_empty() => p.add(
            "spec.patientKeySecretRef",
            "is required by spec.patientFields; name the Secret key holding the HMAC key for patient pseudonyms",
        ),
        Some(secret) if secret.name.trim().is_empty() || secret.key.trim().is_empty() => p.add(
            "spec.patientKeySecretRef",
            "needs both name (a Secret in this namespace) and key (the entry holding the HMAC key)",
        ),
        Some(_) if spec.patient_fields.is_empty() => p.add(
            "spec.patientKeySecretRef",
            "is set but spec.patientFields is empty; list where records name their patient, or remove the key",
        ),
        _ => {}
    }

    let has_mrn = spec.detectors.contains(&Detector::MRN);
    match (&spec.mrn_pattern, has_mrn) {
        (None, true) => p.add(
            "spec.mrnPattern",
            "is required by the MRN detector; give a regular expression for your record numbers, e.g. \"MRN-[0-9]{8}\"",
        ),
        (Some(_), false) => p.add(
            "spec.mrnPattern",
            "is set but spec.detectors does not include MRN; add MRN or remove the pattern",
        ),
        (Some(pattern), true) => match regex::Regex::new(pattern) {
            Ok(re) if re.is_match("") => p.add(
                "spec.mrnPattern",
                format!("{pattern:?} matches the empty string; it would mask everything"),
            ),
            Ok(_) => {}
            Err(e) => p.add(
                "spec.mrnPattern",
                format!("{pattern:?} is not a valid regular expression: {e}"),
            ),
        },
        (None, false) => {}
    }

    p.subjects("spec.exemptSubjects", &spec.exempt_subjects, false);
    p.no_wildcards(
        "spec.exemptSubjects",
        &spec.exempt_subjects,
        "everyone would see clear text; name who is exempt, or delete the MaskingRule",
    );
    if spec.apply_to.is_empty() {
        p.add("spec.applyTo", "is empty; list Fetch, Produce, or both");
    }
    if spec.targets.is_empty() {
        p.add(
            "spec.targets",
            "is empty; list Value, Key, Headers, or leave it out for [Value]",
        );
    }
    p.finish()
}

/// Validate an AccessApproval spec (the request as the sidecar created it).
pub fn validate_access_approval(spec: &AccessApprovalSpec) -> Result<(), ValidationErrors> {
    let mut p = Problems::default();
    if spec.requester.name.trim().is_empty() {
        p.add(
            "spec.requester.name",
            "is empty; name the user or ServiceAccount asking",
        );
    }
    if spec.requester.name == crate::matching::ANY_NAME {
        p.add(
            "spec.requester.name",
            "is \"*\"; a request comes from one named caller",
        );
    }
    if spec.requester.kind == SubjectKind::Group {
        p.add(
            "spec.requester.kind",
            "is Group; a request comes from one User or ServiceAccount",
        );
    }
    if spec.policy.trim().is_empty() {
        p.add(
            "spec.policy",
            "is empty; name the StreamPolicy holding the rule",
        );
    }
    if spec.rule.trim().is_empty() {
        p.add(
            "spec.rule",
            "is empty; name the rule with approval that matched",
        );
    }
    p.topic_names("spec.topics", &spec.topics);
    if spec.operations.is_empty() {
        p.add(
            "spec.operations",
            "is empty; list at least one of Write, Read, Describe, Create, Admin",
        );
    }
    if let Err(e) = parse_grant_duration(&spec.duration) {
        p.add("spec.duration", e.to_string());
    }
    match (&spec.break_glass, spec.reason.as_deref()) {
        (true, None) => p.add(
            "spec.reason",
            "is missing; break-glass needs the reason it is invoked (reviewers read it)",
        ),
        (true, Some(r)) => {
            if let Err(why) = check_break_glass_reason(r) {
                p.add("spec.reason", why);
            }
        }
        (false, _) => {}
    }
    if !spec.break_glass
        && (spec.review.is_some() || spec.reviewed_by.is_some() || spec.review_note.is_some())
    {
        p.add(
            "spec.review",
            "is only for break-glass requests (spec.breakGlass: true); decide others with spec.decision",
        );
    }
    if let Some(workload) = &spec.workload
        && workload.pod.trim().is_empty()
    {
        p.add(
            "spec.workload.pod",
            "is empty; name the pod the request came from",
        );
    }
    p.finish()
}

/// The longest break-glass reason accepted.
pub const MAX_BREAK_GLASS_REASON: usize = 256;

/// A break-glass reason: one line of printable ASCII (what RFC 7628 allows in
/// a SASL extension value, less CR/LF/TAB), not blank, at most
/// [`MAX_BREAK_GLASS_REASON`] characters. The same rule for the SASL
/// extension and `spec.reason`, so a reason always fits the AccessApproval.
pub fn check_break_glass_reason(reason: &str) -> Result<(), String> {
    if reason.trim().is_empty() {
        return Err("is empty; say why emergency access is needed".into());
    }
    if reason.len() > MAX_BREAK_GLASS_REASON {
        return Err(format!(
            "is {} characters; at most {MAX_BREAK_GLASS_REASON}",
            reason.len()
        ));
    }
    if let Some(c) = reason
        .chars()
        .find(|c| !(c.is_ascii_graphic() || *c == ' '))
    {
        return Err(format!(
            "contains {c:?}; only printable ASCII and spaces (RFC 7628 extension values)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(value: serde_json::Value) -> StreamPolicySpec {
        serde_json::from_value(value).unwrap()
    }

    fn masking(value: serde_json::Value) -> MaskingRuleSpec {
        serde_json::from_value(value).unwrap()
    }

    fn messages(err: ValidationErrors) -> Vec<String> {
        err.problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_sound_policy_passes() {
        let spec = policy(json!({
            "identity": {"oidc": {"issuer": "https://idp.example.com", "audiences": ["kafka"]}},
            "rules": [
                {"name": "read", "subjects": [{"kind": "Group", "name": "analysts"}],
                 "topics": ["claims.*"], "operations": ["Read"]},
                {"name": "write", "subjects": [{"kind": "User", "name": "*"}],
                 "topics": ["patient-records"], "operations": ["Write"],
                 "approval": {"approvers": [{"kind": "Group", "name": "compliance"}], "maxDuration": "1h"}}
            ]
        }));
        assert_eq!(validate_stream_policy(&spec), Ok(()));
    }

    #[test]
    fn break_glass_rules_need_durations_operations_and_reviewers() {
        let ok = policy(json!({
            "rules": [{"name": "emergency", "subjects": [{"kind": "Group", "name": "clinicians"}],
                       "topics": ["patient-vitals"], "operations": [],
                       "breakGlass": {"maxDuration": "1h", "operations": ["Read"],
                                      "reviewers": [{"kind": "Group", "name": "compliance"}]}}]
        }));
        assert_eq!(validate_stream_policy(&ok), Ok(()));
        let bad = policy(json!({
            "rules": [{"name": "emergency", "subjects": [{"kind": "Group", "name": "clinicians"}],
                       "topics": ["patient-vitals"], "operations": [], "effect": "Deny",
                       "breakGlass": {"maxDuration": "forever", "operations": [],
                                      "reviewWithin": "0s",
                                      "reviewers": [{"kind": "User", "name": "*"}]}}]
        }));
        let got = messages(validate_stream_policy(&bad).unwrap_err());
        let joined = got.join("\n");
        for want in [
            "breakGlass: is only allowed on Allow rules",
            "breakGlass.maxDuration",
            "breakGlass.reviewWithin",
            "breakGlass.operations: is empty",
            "breakGlass.reviewers[0].name: cannot be \"*\"",
        ] {
            assert!(joined.contains(want), "{want} in {joined}");
        }
        // Nobody to review: refused.
        let unreviewed = policy(json!({
            "rules": [{"name": "emergency", "subjects": [{"kind": "Group", "name": "clinicians"}],
                       "topics": ["patient-vitals"], "operations": [],
                       "breakGlass": {"maxDuration": "1h", "operations": ["Read"]}}]
        }));
        let got = messages(validate_stream_policy(&unreviewed).unwrap_err()).join("\n");
        assert!(
            got.contains("every break-glass use needs a reviewer"),
            "{got}"
        );
    }

    #[test]
    fn break_glass_reasons_are_one_printable_line() {
        assert_eq!(check_break_glass_reason("ED trauma bay 3"), Ok(()));
        for bad in [
            "",
            "  ",
            "two\nlines",
            "tab\there",
            "Zimmer Ä",
            &"x".repeat(257),
        ] {
            assert!(check_break_glass_reason(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn saml_identity_is_checked() {
        let ok = policy(json!({
            "identity": {"saml": {"issuer": "https://idp", "audience": "urn:gate",
                                   "metadata": {"file": "/etc/idp.xml"}}},
            "rules": []
        }));
        assert_eq!(validate_stream_policy(&ok), Ok(()));
        assert_eq!(ok.identity.token_issuer(), Some("https://idp"));
        let bad = policy(json!({
            "identity": {"oidc": {"issuer": "https://idp.example.com", "audiences": ["kafka"]},
                         "saml": {"issuer": " ", "audience": "", "metadata": {},
                                  "groupsAttribute": "", "clockSkewSeconds": 3600}},
            "rules": []
        }));
        let got = messages(validate_stream_policy(&bad).unwrap_err());
        let want = [
            "spec.identity.saml.issuer: is empty",
            "spec.identity.saml.audience: is empty",
            "spec.identity.saml.metadata: needs exactly one",
            "spec.identity.saml.groupsAttribute: is empty",
            "spec.identity.saml.clockSkewSeconds: is over 600",
            "spec.identity: names both oidc and saml",
        ];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (got, want) in got.iter().zip(want) {
            assert!(got.starts_with(want), "{got} / {want}");
        }
        let rel = policy(json!({
            "identity": {"saml": {"issuer": "i", "audience": "a",
                                   "metadata": {"file": "idp.xml"}}},
            "rules": []
        }));
        let got = messages(validate_stream_policy(&rel).unwrap_err());
        assert!(
            got[0].starts_with("spec.identity.saml.metadata.file"),
            "{got:?}"
        );
    }

    #[test]
    fn policy_problems_are_all_reported_with_their_field() {
        let spec = policy(json!({
            "identity": {"oidc": {"issuer": "idp.example.com", "audiences": []}},
            "rules": [
                {"name": "r", "subjects": [], "topics": [], "operations": []},
                {"name": "r", "subjects": [{"kind": "Group", "name": "g", "namespace": "x"}],
                 "topics": ["a.***", ""], "operations": ["Read"], "effect": "Deny",
                 "approval": {"approvers": [], "maxDuration": "0s"}}
            ]
        }));
        let got = messages(validate_stream_policy(&spec).unwrap_err());
        let want = [
            "spec.identity.oidc.issuer: \"idp.example.com\" is not an http(s) URL",
            "spec.identity.oidc.audiences: is empty",
            "spec.rules[0] (r).subjects: is empty",
            "spec.rules[0] (r).topics: is empty",
            "spec.rules[0] (r).operations: is empty",
            "spec.rules[1] (r).name: duplicate rule name \"r\" (also spec.rules[0])",
            "spec.rules[1] (r).subjects[0].namespace: is only meaningful for kind ServiceAccount",
            "spec.rules[1] (r).topics[0]: topic glob \"a.***\"",
            "spec.rules[1] (r).topics[1]: topic glob \"\" is empty",
            "spec.rules[1] (r).approval: is only allowed on Allow rules",
            "spec.rules[1] (r).approval.approvers: is empty",
            "spec.rules[1] (r).approval.maxDuration: \"0s\" is zero",
        ];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (got, want) in got.iter().zip(want) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }

    #[test]
    fn display_lists_every_problem() {
        let spec = policy(json!({"rules": [
            {"name": "", "subjects": [{"kind": "User", "name": "a"}], "topics": ["t"], "operations": []}
        ]}));
        let text = validate_stream_policy(&spec).unwrap_err().to_string();
        assert_eq!(
            text,
            "2 problems found:\n  - spec.rules[0].name: is empty; every rule needs a name (audit records cite it)\n  - spec.rules[0].operations: is empty; list at least one of Write, Read, Describe, Create, Admin"
        );
    }

    #[test]
    fn a_sound_masking_rule_passes() {
        let spec = masking(json!({
            "topics": ["patient-*"],
            "fields": [
                {"path": "$.patient.ssn", "strategy": "Partial", "keepLast": 4},
                {"path": "$.patient.name.given", "strategy": "Hash"},
                {"path": "$..dateOfBirth", "strategy": "Redact"},
                {"path": "$.notes", "strategy": "Remove"}
            ],
            "detectors": ["SSN", "MRN"],
            "mrnPattern": "MRN-[0-9]{8}",
            "hashKeySecretRef": {"name": "masking-key", "key": "hmac"}
        }));
        assert_eq!(validate_masking_rule(&spec), Ok(()));
    }

    #[test]
    fn patient_fields_take_the_field_grammar_and_need_their_own_key() {
        let ok = masking(json!({
            "topics": ["claims*"],
            "patientFields": ["$.patient.mrn", "$.subscriber.id", "$..members[*].mrn"],
            "patientKeySecretRef": {"name": "patient-key", "key": "hmac"}
        }));
        assert_eq!(validate_masking_rule(&ok), Ok(()));
        let bad = masking(json!({
            "topics": ["claims*"],
            "patientFields": ["patient.mrn", "$.a", "$.a"]
        }));
        let got = messages(validate_masking_rule(&bad).unwrap_err());
        let want = [
            "spec.patientFields[0] (patient.mrn): field path \"patient.mrn\" must start with '$'",
            "spec.patientFields[2] ($.a): appears twice",
            "spec.patientKeySecretRef: is required by spec.patientFields",
        ];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (got, want) in got.iter().zip(want) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
        let stray = masking(json!({
            "topics": ["claims*"], "detectors": ["SSN"],
            "patientKeySecretRef": {"name": "patient-key", "key": "hmac"}
        }));
        let got = messages(validate_masking_rule(&stray).unwrap_err());
        assert!(
            got[0].starts_with("spec.patientKeySecretRef: is set but"),
            "{got:?}"
        );
    }

    #[test]
    fn masking_problems_name_the_field_and_the_fix() {
        let spec = masking(json!({
            "topics": ["ok", "bad topic"],
            "fields": [
                {"path": "$.a", "strategy": "Partial"},
                {"path": "$.b", "strategy": "Redact", "keepLast": 2},
                {"path": "$.c", "strategy": "Hash"},
                {"path": "a.d", "strategy": "Remove"},
                {"path": "$.a", "strategy": "Remove"}
            ],
            "detectors": ["MRN"],
            "mrnPattern": "MRN-[0-9",
            "applyTo": []
        }));
        let got = messages(validate_masking_rule(&spec).unwrap_err());
        let want = [
            "spec.topics[1]: topic glob \"bad topic\" has ' '",
            "spec.fields[0] ($.a).keepLast: is required with strategy Partial",
            "spec.fields[1] ($.b).keepLast: is only allowed with strategy Partial, not Redact",
            "spec.fields[2] ($.c).strategy: is Hash but spec.hashKeySecretRef is missing",
            "spec.fields[3] (a.d).path: field path \"a.d\" must start with '$'",
            "spec.fields[4] ($.a).path: appears twice",
            "spec.mrnPattern: \"MRN-[0-9\" is not a valid regular expression",
            "spec.applyTo: is empty",
        ];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (got, want) in got.iter().zip(want) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }

    #[test]
    fn mrn_detector_and_pattern_go_together() {
        let without_pattern = masking(json!({"topics": ["t"], "detectors": ["MRN"]}));
        let err = validate_masking_rule(&without_pattern)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.mrnPattern: is required by the MRN detector"),
            "{err}"
        );

        let without_detector =
            masking(json!({"topics": ["t"], "detectors": ["SSN"], "mrnPattern": "M[0-9]+"}));
        let err = validate_masking_rule(&without_detector)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not include MRN"), "{err}");

        let matches_empty =
            masking(json!({"topics": ["t"], "detectors": ["MRN"], "mrnPattern": "[0-9]*"}));
        let err = validate_masking_rule(&matches_empty)
            .unwrap_err()
            .to_string();
        assert!(err.contains("matches the empty string"), "{err}");
    }

    #[test]
    fn wildcards_are_refused_where_anyone_defeats_the_list() {
        let spec = policy(json!({"rules": [
            {"name": "w", "subjects": [{"kind": "User", "name": "*"}], "topics": ["t"], "operations": ["Write"],
             "approval": {"approvers": [{"kind": "Group", "name": "*"}], "maxDuration": "1h"}}
        ]}));
        let err = validate_stream_policy(&spec).unwrap_err().to_string();
        assert!(
            err.contains("spec.rules[0] (w).approval.approvers[0].name: cannot be \"*\" here: anyone could approve"),
            "{err}"
        );
        assert!(
            !err.contains("subjects"),
            "a wildcard rule subject is fine: {err}"
        );

        let exempt_all = masking(json!({"topics": ["t"], "detectors": ["SSN"],
            "exemptSubjects": [{"kind": "User", "name": "*"}]}));
        let err = validate_masking_rule(&exempt_all).unwrap_err().to_string();
        assert!(
            err.contains(
                "spec.exemptSubjects[0].name: cannot be \"*\" here: everyone would see clear text"
            ),
            "{err}"
        );
    }

    #[test]
    fn text_format_takes_detectors_not_fields() {
        let spec = masking(json!({"topics": ["t"], "format": "Text",
            "fields": [{"path": "$.a", "strategy": "Redact"}]}));
        let err = validate_masking_rule(&spec).unwrap_err().to_string();
        assert!(err.contains("spec.fields: needs format Json"), "{err}");
        let nothing = masking(json!({"topics": ["t"]}));
        let err = validate_masking_rule(&nothing).unwrap_err().to_string();
        assert!(err.contains("spec: masks nothing"), "{err}");
    }

    #[test]
    fn targets_default_to_the_value_and_cannot_be_empty() {
        let spec = masking(json!({"topics": ["t"], "detectors": ["SSN"]}));
        assert_eq!(spec.targets, vec![crate::MaskTarget::Value]);
        let spec = masking(json!({"topics": ["t"], "detectors": ["SSN"],
            "targets": ["Value", "Key", "Headers"]}));
        assert_eq!(validate_masking_rule(&spec), Ok(()));
        let none = masking(json!({"topics": ["t"], "detectors": ["SSN"], "targets": []}));
        let err = validate_masking_rule(&none).unwrap_err().to_string();
        assert!(err.contains("spec.targets: is empty"), "{err}");
    }

    #[test]
    fn access_approval_request_is_checked() {
        let good: AccessApprovalSpec = serde_json::from_value(json!({
            "requester": {"kind": "User", "name": "alice@example.com", "groups": ["clinicians"]},
            "workload": {"pod": "intake-abc", "serviceAccount": "intake"},
            "policy": "phi-access", "rule": "write", "topics": ["patient-records"],
            "operations": ["Write"], "duration": "1h"
        }))
        .unwrap();
        assert_eq!(validate_access_approval(&good), Ok(()));

        let bad: AccessApprovalSpec = serde_json::from_value(json!({
            "requester": {"kind": "Group", "name": ""},
            "policy": "", "rule": "", "topics": [], "operations": [], "duration": "30d"
        }))
        .unwrap();
        let got = messages(validate_access_approval(&bad).unwrap_err());
        let want = [
            "spec.requester.name: is empty",
            "spec.requester.kind: is Group",
            "spec.policy: is empty",
            "spec.rule: is empty",
            "spec.topics: is empty",
            "spec.operations: is empty",
            "spec.duration: \"30d\" is longer than the 7d",
        ];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (got, want) in got.iter().zip(want) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }

    /// Issue 12 item 7: an AccessApproval names topics, never globs (a
    /// client's `patients.**` copied into a request would grant them all).
    #[test]
    fn access_approval_topics_are_names_not_globs() {
        let with_topics = |topics: serde_json::Value| -> AccessApprovalSpec {
            serde_json::from_value(json!({
                "requester": {"kind": "User", "name": "alice@example.com"},
                "policy": "phi-access", "rule": "write", "topics": topics,
                "operations": ["Write"], "duration": "1h"
            }))
            .unwrap()
        };
        assert_eq!(
            validate_access_approval(&with_topics(json!(["patients.billing"]))),
            Ok(())
        );
        let got = messages(
            validate_access_approval(&with_topics(json!([
                "patients.billing",
                "patients.**",
                "*"
            ])))
            .unwrap_err(),
        );
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].starts_with("spec.topics[1]: \"patients.**\" is not a Kafka topic name"),
            "{got:?}"
        );
        assert!(got[1].starts_with("spec.topics[2]: \"*\""), "{got:?}");
    }
}
