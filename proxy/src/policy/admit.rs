//! What a policy source hands on: every StreamPolicy, MaskingRule and
//! AccessApproval is checked with the validation the API server's schema and
//! the operator's admission webhook apply (`streamgate_crds::validation`),
//! so an object they would refuse is never enforced as written — a file in
//! `--policy-dir` passes no webhook, and an object stored before a rule
//! tightened (or written with the webhook down) may be invalid too.
//!
//! An invalid object is not simply dropped, since dropping can widen access:
//! - a **StreamPolicy** keeps only what narrows — its Deny rules, blocked
//!   operations and audit settings; its Allow rules and identity (OIDC
//!   issuer, workload identity) are not enforced;
//! - a **MaskingRule** fails closed like one that does not compile: its
//!   topics are blocked for everyone (no exemption holds) in the directions
//!   it names (both when it names none);
//! - an **AccessApproval** grants nothing.
//!
//! Each is logged once per load with every problem found.
use streamgate_crds::validation::{
    validate_access_approval, validate_masking_rule, validate_stream_policy,
};
use streamgate_crds::{
    AccessApproval, ApplyTo, Effect, FieldMask, IdentitySpec, MaskFormat, MaskStrategy,
};

use super::decide::{MaskingDoc, PolicyDoc};

/// The part of `doc` the sidecar enforces: all of it when valid, else only
/// what narrows access (see the module docs).
pub fn admit_policy(mut doc: PolicyDoc) -> PolicyDoc {
    if let Err(problems) = validate_stream_policy(&doc.spec) {
        tracing::error!(
            stream_policy = %doc.name,
            namespace = %doc.namespace,
            %problems,
            "invalid StreamPolicy (the API server would refuse it): its Allow rules and identity are not enforced, its Deny rules and blocked operations are"
        );
        doc.spec.rules.retain(|r| r.effect == Effect::Deny);
        doc.spec.identity = IdentitySpec::default();
    }
    doc
}

/// The field path an invalid MaskingRule is replaced by: not a path (no
/// `$`), so the rule fails to compile and the masking state blocks its
/// topics, naming this text in its log line.
pub const REFUSED_RULE_PATH: &str = "(invalid MaskingRule: its topics are blocked)";

/// `doc` when valid; else a rule over the same topics that cannot compile,
/// so the masking state blocks them (see the module docs).
pub fn admit_masking(mut doc: MaskingDoc) -> MaskingDoc {
    if let Err(problems) = validate_masking_rule(&doc.spec) {
        tracing::error!(
            masking_rule = %doc.name,
            namespace = %doc.namespace,
            %problems,
            "invalid MaskingRule (the API server would refuse it): its topics are blocked for everyone"
        );
        let spec = &mut doc.spec;
        // The masking state turns a rule that fails to compile into one
        // that hides every value of its topics (`RulePlan::blocked`), and
        // never reads a key for it: reuse that path. Nobody is exempt from a
        // rule whose exemptions were refused along with the rest.
        spec.format = MaskFormat::Json;
        spec.fields = vec![FieldMask {
            path: REFUSED_RULE_PATH.into(),
            strategy: MaskStrategy::Redact,
            keep_last: None,
        }];
        spec.detectors.clear();
        spec.mrn_pattern = None;
        spec.hash_key_secret_ref = None;
        // Its patientFields stay, keyless: every record of its topics is
        // then counted unattributed in the trail, never silently dropped.
        spec.patient_key_secret_ref = None;
        spec.exempt_subjects.clear();
        if spec.apply_to.is_empty() {
            spec.apply_to = vec![ApplyTo::Fetch, ApplyTo::Produce];
        }
    }
    doc
}

/// May `aa` grant anything? Not when it is invalid (logged).
pub fn admit_approval(aa: &AccessApproval) -> bool {
    match validate_access_approval(&aa.spec) {
        Ok(()) => true,
        Err(problems) => {
            tracing::error!(
                access_approval = aa.metadata.name.as_deref().unwrap_or(""),
                namespace = aa.metadata.namespace.as_deref().unwrap_or(""),
                %problems,
                "invalid AccessApproval (the API server would refuse it): it grants nothing"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use streamgate_crds::{MaskingRuleSpec, StreamPolicySpec};

    fn policy(yaml: &str) -> PolicyDoc {
        PolicyDoc {
            name: "p".into(),
            namespace: "clinical".into(),
            generation: Some(1),
            spec: serde_yaml::from_str::<StreamPolicySpec>(yaml).unwrap(),
        }
    }

    fn masking(yaml: &str) -> MaskingDoc {
        MaskingDoc {
            name: "m".into(),
            namespace: "clinical".into(),
            generation: Some(1),
            spec: serde_yaml::from_str::<MaskingRuleSpec>(yaml).unwrap(),
        }
    }

    #[test]
    fn a_valid_policy_is_enforced_as_written() {
        let doc = policy(
            "identity: {workloadIdentity: true}\nrules:\n- {name: r, subjects: [{kind: ServiceAccount, name: app}], topics: [t], operations: [Read]}\n",
        );
        assert_eq!(admit_policy(doc.clone()), doc);
    }

    #[test]
    fn an_invalid_policy_keeps_only_what_narrows() {
        let doc = policy(
            r#"
identity: {oidc: {issuer: "https://idp.example.com", audiences: [kafka]}, workloadIdentity: true}
rules:
  - {name: allow, subjects: [{kind: ServiceAccount, name: app}], topics: ["bad topic"], operations: [Read]}
  - {name: deny, subjects: [{kind: ServiceAccount, name: app}], topics: [secret], operations: [Read], effect: Deny}
blockedOperations: [DeleteTopics]
"#,
        );
        let admitted = admit_policy(doc.clone());
        let names: Vec<&str> = admitted
            .spec
            .rules
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["deny"]);
        assert_eq!(admitted.spec.identity, IdentitySpec::default());
        assert_eq!(
            admitted.spec.blocked_operations,
            doc.spec.blocked_operations
        );
    }

    #[test]
    fn an_invalid_masking_rule_is_replaced_by_one_that_cannot_compile() {
        let valid = masking("topics: [patient-*]\nfields: [{path: $.ssn, strategy: Redact}]\n");
        assert_eq!(admit_masking(valid.clone()), valid);
        let invalid = masking(
            "topics: [patient-*]\nfields: [{path: $.ssn, strategy: Redact}]\nexemptSubjects: [{kind: Group, name: \"*\"}]\napplyTo: []\n",
        );
        let admitted = admit_masking(invalid).spec;
        assert_eq!(admitted.topics, vec!["patient-*".to_string()]);
        assert!(admitted.exempt_subjects.is_empty());
        assert_eq!(admitted.apply_to, vec![ApplyTo::Fetch, ApplyTo::Produce]);
        assert_eq!(admitted.fields[0].path, REFUSED_RULE_PATH);
        assert!(streamgate_crds::field_path::FieldPath::parse(REFUSED_RULE_PATH).is_err());
    }

    #[test]
    fn an_invalid_access_approval_grants_nothing() {
        let aa = |topics: &str| -> AccessApproval {
            serde_yaml::from_str(&format!(
                "apiVersion: streamgate.dev/v1alpha1\nkind: AccessApproval\nmetadata: {{name: a, namespace: clinical}}\n\
                 spec: {{requester: {{kind: User, name: ann}}, policy: p, rule: r, topics: {topics}, operations: [Write], duration: 1h}}\n"
            ))
            .unwrap()
        };
        assert!(admit_approval(&aa("[patient-records]")));
        assert!(!admit_approval(&aa("[\"patient-*\"]")));
    }
}
