//! The AccessApproval a sidecar asks for: deterministic DNS-1123 names, the
//! fields a person deciding it reads, and the same validation the operator runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use streamgate_crds::access_approval::Decision;
use streamgate_crds::matching::Principal;
use streamgate_crds::{Operation, SubjectKind};
use streamgate_proxy::approval::build::{LABEL_REQUESTER_HASH, LABEL_RULE};
use streamgate_proxy::approval::{ApprovalRequest, build_access_approval};

fn alice() -> ApprovalRequest {
    ApprovalRequest {
        principal: Principal {
            kind: SubjectKind::User,
            name: "alice@example.com".into(),
            namespace: None,
            groups: vec!["clinicians".into()],
            issuer: Some("https://idp.example.com".into()),
        },
        pod: Some("intake-5d8f7-abcde".into()),
        service_account: Some("intake".into()),
        namespace: "clinical".into(),
        policy: "phi-access".into(),
        rule: "write-patient-records".into(),
        topics: vec!["patient-records".into()],
        operations: vec![Operation::Write],
        duration: "1h".into(),
        break_glass: None,
    }
}

fn is_dns1123_label(name: &str) -> bool {
    let re = regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap();
    name.len() <= 63 && re.is_match(name)
}

#[test]
fn name_is_rule_subject_and_hash() {
    let aa = build_access_approval(alice()).unwrap();
    let name = aa.metadata.name.clone().unwrap();
    assert!(
        name.starts_with("write-patient-records-alice-example-com-"),
        "{name}"
    );
    let hash = name.rsplit('-').next().unwrap();
    assert_eq!(hash.len(), 10);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(is_dns1123_label(&name), "{name}");
}

#[test]
fn same_request_same_name_different_request_different_name() {
    let a = build_access_approval(alice()).unwrap().metadata.name;
    let b = build_access_approval(alice()).unwrap().metadata.name;
    assert_eq!(a, b);
    let mut other_topic = alice();
    other_topic.topics = vec!["patient-records-2".into()];
    let mut other_op = alice();
    other_op.operations = vec![Operation::Read];
    let mut other_user = alice();
    other_user.principal.name = "bob@example.com".into();
    let mut sa = alice();
    sa.principal.kind = SubjectKind::ServiceAccount;
    // Issue 12 item 7: the same name from another issuer is another requester.
    let mut other_issuer = alice();
    other_issuer.principal.issuer = Some("https://other-idp.example.com".into());
    for changed in [other_topic, other_op, other_user, sa, other_issuer] {
        assert_ne!(build_access_approval(changed).unwrap().metadata.name, a);
    }
}

#[test]
fn spec_labels_and_namespace_carry_the_request() {
    let aa = build_access_approval(alice()).unwrap();
    assert_eq!(aa.metadata.namespace.as_deref(), Some("clinical"));
    let labels = aa.metadata.labels.clone().unwrap();
    assert_eq!(labels[LABEL_RULE], "write-patient-records");
    assert_eq!(labels[LABEL_REQUESTER_HASH].len(), 10);
    assert_eq!(aa.spec.requester.name, "alice@example.com");
    assert_eq!(aa.spec.requester.groups, vec!["clinicians".to_string()]);
    let w = aa.spec.workload.clone().unwrap();
    assert_eq!(w.pod, "intake-5d8f7-abcde");
    assert_eq!(w.service_account.as_deref(), Some("intake"));
    assert_eq!(aa.spec.policy, "phi-access");
    assert_eq!(aa.spec.rule, "write-patient-records");
    assert_eq!(aa.spec.topics, vec!["patient-records".to_string()]);
    assert_eq!(aa.spec.operations, vec![Operation::Write]);
    assert_eq!(aa.spec.duration, "1h");
    assert_eq!(aa.spec.decision, Decision::Pending);
    assert!(aa.spec.decided_by.is_none());
    assert!(aa.status.is_none());
    // The YAML a person reads names the kind and group.
    let yaml = serde_yaml::to_string(&aa).unwrap();
    assert!(
        yaml.contains("apiVersion: streamgate.dev/v1alpha1"),
        "{yaml}"
    );
    assert!(yaml.contains("kind: AccessApproval"), "{yaml}");
}

#[test]
fn the_same_requester_shares_a_requester_hash_across_rules() {
    let a = build_access_approval(alice()).unwrap();
    let mut other_rule = alice();
    other_rule.rule = "read-patient-records".into();
    let b = build_access_approval(other_rule).unwrap();
    let la = a.metadata.labels.unwrap();
    let lb = b.metadata.labels.unwrap();
    assert_eq!(la[LABEL_REQUESTER_HASH], lb[LABEL_REQUESTER_HASH]);
    assert_ne!(la[LABEL_RULE], lb[LABEL_RULE]);
    let mut other_issuer = alice();
    other_issuer.principal.issuer = Some("https://other-idp.example.com".into());
    let lc = build_access_approval(other_issuer)
        .unwrap()
        .metadata
        .labels
        .unwrap();
    assert_ne!(la[LABEL_REQUESTER_HASH], lc[LABEL_REQUESTER_HASH]);
}

#[test]
fn long_and_odd_names_are_truncated_to_a_valid_name() {
    let mut r = alice();
    r.rule = "a-very-long-rule-name-that-goes-on-and-on-and-on-for-ever-and-a".into();
    r.principal.name = "Dr.Ünïcode_Person+tag@Some.Very.Long.Hospital.Example.org".into();
    let name = build_access_approval(r).unwrap().metadata.name.unwrap();
    assert!(is_dns1123_label(&name), "{name}");
}

#[test]
fn invalid_requests_are_refused_with_the_operator_validation() {
    let mut no_name = alice();
    no_name.principal.name = "  ".into();
    let err = build_access_approval(no_name).unwrap_err().to_string();
    assert!(err.contains("requester"), "{err}");

    let mut bad_duration = alice();
    bad_duration.duration = "forever".into();
    let err = build_access_approval(bad_duration).unwrap_err().to_string();
    assert!(err.contains("duration"), "{err}");

    let mut no_topics = alice();
    no_topics.topics.clear();
    assert!(build_access_approval(no_topics).is_err());
}

/// Issue 12 item 7: a client names the topics of its request, and the
/// AccessApproval copied them; `patients.**` asked for literally would, once
/// approved, have been read as a glob over every patients topic. A request
/// names Kafka topic names only: one with a wildcard is never filed.
#[test]
fn a_requested_topic_with_a_wildcard_is_not_filed() {
    for topic in ["patients.**", "patients.*", "*", "patient records"] {
        let mut r = alice();
        r.topics = vec!["patient-records".into(), topic.into()];
        let err = build_access_approval(r).unwrap_err().to_string();
        assert!(
            err.contains("spec.topics[") && err.contains("not a Kafka topic name"),
            "{topic}: {err}"
        );
    }
}
