//! Table tests of the compiled decision function, from policies written the
//! way users write them (YAML specs).
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};
use streamgate_crds::matching::Principal;
use streamgate_crds::{
    BlockedOperation, FailureMode, Operation, PayloadMode, StreamPolicySpec, SubjectKind,
};
use streamgate_proxy::policy::decide::{
    CompiledPolicy, DenyReason, Grant, PolicyDecision, PolicyDoc,
};

const PHI_ACCESS: &str = r#"
workloadSelector: {matchLabels: {app: billing}}
identity:
  oidc: {issuer: "https://idp.example.com", audiences: [kafka]}
  workloadIdentity: true
rules:
  - name: read-claims
    subjects:
      - {kind: Group, name: billing-analysts}
      - {kind: ServiceAccount, name: billing-app}
    topics: ["claims.*"]
    operations: [Read, Describe]
    effect: Allow
  - name: all-claims-for-auditor
    subjects: [{kind: User, name: auditor@example.com}]
    topics: ["claims.**"]
    operations: [Read]
  - name: no-internal-claims
    subjects: [{kind: Group, name: billing-analysts}]
    topics: ["claims.internal"]
    operations: [Read]
    effect: Deny
  - name: write-patient-records
    subjects: [{kind: Group, name: clinicians}]
    topics: [patient-records]
    operations: [Write]
    effect: Allow
    approval:
      approvers: [{kind: Group, name: compliance-officers}]
      maxDuration: 1h
  - name: other-ns-sa
    subjects: [{kind: ServiceAccount, name: etl, namespace: data}]
    topics: ["etl-*"]
    operations: [Write]
blockedOperations: [DeleteTopics, AlterConfigs]
audit: {payload: Digest, failureMode: Open}
"#;

const OPS_WIDE: &str = r#"
identity:
  oidc: {issuer: "https://idp.example.com", audiences: [kafka]}
rules:
  - name: ops-everything
    subjects: [{kind: Group, name: ops}]
    topics: ["**"]
    operations: [Admin, Describe, Create]
  - name: ops-not-phi
    subjects: [{kind: Group, name: ops}]
    topics: ["patient-*"]
    operations: [Describe]
    effect: Deny
blockedOperations: [DeleteRecords]
audit: {payload: Full, failureMode: Open}
"#;

fn doc(name: &str, yaml: &str) -> PolicyDoc {
    let spec: StreamPolicySpec = serde_yaml::from_str(yaml).unwrap();
    PolicyDoc {
        name: name.into(),
        namespace: "clinical".into(),
        generation: Some(1),
        spec,
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const IDP: &str = "https://idp.example.com";

/// A user of the issuer both policies trust.
fn user(name: &str, groups: &[&str]) -> Principal {
    user_of(IDP, name, groups)
}

fn user_of(issuer: &str, name: &str, groups: &[&str]) -> Principal {
    Principal {
        kind: SubjectKind::User,
        name: name.into(),
        namespace: None,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        issuer: Some(issuer.into()),
    }
}

fn sa(name: &str, ns: &str) -> Principal {
    Principal {
        kind: SubjectKind::ServiceAccount,
        name: name.into(),
        namespace: Some(ns.into()),
        groups: vec![],
        issuer: None,
    }
}

fn billing_pod() -> CompiledPolicy {
    CompiledPolicy::compile(
        vec![doc("phi-access", PHI_ACCESS), doc("ops", OPS_WIDE)],
        vec![],
        vec![],
        &labels(&[("app", "billing"), ("tier", "web")]),
    )
}

#[derive(Debug, PartialEq)]
enum Want {
    Allow(&'static str),
    Deny(DenyReason),
    Needs(&'static str),
}

fn short(d: &PolicyDecision) -> Want {
    match d {
        PolicyDecision::Allow { rule, .. } | PolicyDecision::BreakGlass { rule, .. } => {
            Want::Allow(Box::leak(rule.clone().into_boxed_str()))
        }
        PolicyDecision::Deny { reason, .. } => Want::Deny(*reason),
        PolicyDecision::NeedsApproval { rule, .. } => {
            Want::Needs(Box::leak(rule.clone().into_boxed_str()))
        }
    }
}

#[test]
fn decision_table() {
    use Operation::*;
    let analyst = user("ann", &["billing-analysts"]);
    let clinician = user("cleo", &["clinicians"]);
    let auditor = user("auditor@example.com", &[]);
    let ops = user("olga", &["ops"]);
    let outsider = user("ozzy", &[]);
    let billing_sa = sa("billing-app", "clinical");
    let billing_sa_elsewhere = sa("billing-app", "other");
    let etl = sa("etl", "data");
    let etl_local = sa("etl", "clinical");
    // A user whose name equals a ServiceAccount's is not that ServiceAccount.
    let fake_sa = user("billing-app", &[]);
    // A user whose name equals a group's is not in that group.
    let fake_group = user("billing-analysts", &[]);

    let p = billing_pod();
    let cases: Vec<(&Principal, Operation, &str, Want)> = vec![
        // Group subject, single-segment glob
        (&analyst, Read, "claims.2026", Want::Allow("read-claims")),
        (
            &analyst,
            Describe,
            "claims.2026",
            Want::Allow("read-claims"),
        ),
        (
            &analyst,
            Read,
            "claims.2026.q1",
            Want::Deny(DenyReason::NoMatchingRule),
        ),
        (
            &analyst,
            Write,
            "claims.2026",
            Want::Deny(DenyReason::NoMatchingRule),
        ),
        (
            &analyst,
            Read,
            "claimsX",
            Want::Deny(DenyReason::NoMatchingRule),
        ),
        // Deny beats Allow (claims.internal matches claims.* Allow and the Deny)
        (
            &analyst,
            Read,
            "claims.internal",
            Want::Deny(DenyReason::DeniedByRule),
        ),
        (
            &analyst,
            Describe,
            "claims.internal",
            Want::Allow("read-claims"),
        ),
        // ServiceAccount subject, default namespace = the policy's
        (&billing_sa, Read, "claims.2026", Want::Allow("read-claims")),
        (
            &billing_sa_elsewhere,
            Read,
            "claims.2026",
            Want::Deny(DenyReason::NoMatchingRule),
        ),
        (
            &fake_sa,
            Read,
            "claims.2026",
            Want::Deny(DenyReason::NoMatchingRule),
        ),
        (
            &fake_group,
            Read,
            "claims.2026",
            Want::Deny(DenyReason::NoMatchingRule),
        ),
        // ServiceAccount with an explicit namespace
        (&etl, Write, "etl-load", Want::Allow("other-ns-sa")),
        (
            &etl_local,
            Write,
            "etl-load",
            Want::Deny(DenyReason::NoMatchingRule),
        ),
        // User subject, multi-segment glob
        (
            &auditor,
            Read,
            "claims.2026.q1",
            Want::Allow("all-claims-for-auditor"),
        ),
        (
            &auditor,
            Read,
            "claims.internal",
            Want::Allow("all-claims-for-auditor"),
        ),
        (
            &auditor,
            Describe,
            "claims.2026",
            Want::Deny(DenyReason::NoMatchingRule),
        ),
        // Approval rule without a grant
        (
            &clinician,
            Write,
            "patient-records",
            Want::Needs("write-patient-records"),
        ),
        (
            &clinician,
            Read,
            "patient-records",
            Want::Deny(DenyReason::NoMatchingRule),
        ),
        (
            &clinician,
            Write,
            "patient-records2",
            Want::Deny(DenyReason::NoMatchingRule),
        ),
        // Second policy: wide allow, Deny on PHI topics
        (
            &ops,
            Create,
            "anything.at.all",
            Want::Allow("ops-everything"),
        ),
        (&ops, Describe, "claims.2026", Want::Allow("ops-everything")),
        (
            &ops,
            Describe,
            "patient-records",
            Want::Deny(DenyReason::DeniedByRule),
        ),
        (
            &ops,
            Read,
            "claims.2026",
            Want::Deny(DenyReason::NoMatchingRule),
        ),
        // Outsider
        (
            &outsider,
            Read,
            "claims.2026",
            Want::Deny(DenyReason::NoMatchingRule),
        ),
        (
            &outsider,
            Describe,
            "anything",
            Want::Deny(DenyReason::NoMatchingRule),
        ),
    ];
    for (who, op, topic, want) in cases {
        assert_eq!(
            short(&p.decide(who, op, topic)),
            want,
            "{} {op:?} {topic}",
            who.name
        );
    }
}

#[test]
fn decisions_name_the_policy_and_rule() {
    let p = billing_pod();
    let d = p.decide(
        &user("ann", &["billing-analysts"]),
        Operation::Read,
        "claims.internal",
    );
    assert_eq!(
        d,
        PolicyDecision::Deny {
            reason: DenyReason::DeniedByRule,
            policy: Some("phi-access".into()),
            rule: Some("no-internal-claims".into())
        }
    );
    let d = p.decide(&user("olga", &["ops"]), Operation::Admin, "x");
    assert_eq!(
        d,
        PolicyDecision::Allow {
            policy: "ops".into(),
            rule: "ops-everything".into(),
            grant: None
        }
    );
}

#[test]
fn workload_selector_filters_policies_by_pod_labels() {
    let analyst = user("ann", &["billing-analysts"]);
    let cases = [
        (labels(&[("app", "billing")]), true),
        (labels(&[("app", "billing"), ("extra", "x")]), true),
        (labels(&[("app", "intake")]), false),
        (labels(&[("application", "billing")]), false),
        (labels(&[]), false),
    ];
    for (pod, governed) in cases {
        let p = CompiledPolicy::compile(vec![doc("phi-access", PHI_ACCESS)], vec![], vec![], &pod);
        let d = p.decide(&analyst, Operation::Read, "claims.2026");
        assert_eq!(d.is_allow(), governed, "{pod:?}");
        assert_eq!(p.has_policy(), governed);
        if !governed {
            assert_eq!(short(&d), Want::Deny(DenyReason::NoPolicy));
            assert!(!p.workload_identity_allowed());
        }
    }
    // No selector: every pod of the namespace.
    let p = CompiledPolicy::compile(vec![doc("ops", OPS_WIDE)], vec![], vec![], &labels(&[]));
    assert!(
        p.decide(&user("olga", &["ops"]), Operation::Admin, "t")
            .is_allow()
    );
}

#[test]
fn no_policy_denies_everything() {
    let p = CompiledPolicy::empty();
    for op in [
        Operation::Read,
        Operation::Write,
        Operation::Describe,
        Operation::Create,
        Operation::Admin,
    ] {
        assert_eq!(
            short(&p.decide(&user("root", &["ops"]), op, "t")),
            Want::Deny(DenyReason::NoPolicy)
        );
        assert_eq!(
            short(&p.decide_cluster(&user("root", &["ops"]), op)),
            Want::Deny(DenyReason::NoPolicy)
        );
    }
    assert!(!p.workload_identity_allowed());
    assert!(p.oidc().is_empty());
    assert_eq!(p.audit().failure_mode, FailureMode::Closed);
}

fn grant(requester: &str, expires_in: Duration, now: chrono::DateTime<Utc>) -> Grant {
    Grant {
        name: "write-patient-records-cleo-1".into(),
        policy: "phi-access".into(),
        rule: "write-patient-records".into(),
        requester_kind: SubjectKind::User,
        requester_name: requester.into(),
        requester_issuer: None,
        namespace: "clinical".into(),
        topics: vec!["patient-records".into()],
        operations: vec![Operation::Write],
        expires_at: now + expires_in,
        break_glass: false,
    }
}

#[test]
fn approvals_turn_needs_approval_into_allow_until_they_expire() {
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap();
    let clinician = user("cleo", &["clinicians"]);
    let pod = labels(&[("app", "billing")]);
    let with = |g: Vec<Grant>| {
        CompiledPolicy::compile(vec![doc("phi-access", PHI_ACCESS)], vec![], g, &pod)
    };

    let live = with(vec![grant("cleo", Duration::minutes(30), now)]);
    assert_eq!(
        live.decide_at(&clinician, Operation::Write, "patient-records", now),
        PolicyDecision::Allow {
            policy: "phi-access".into(),
            rule: "write-patient-records".into(),
            grant: Some("write-patient-records-cleo-1".into())
        }
    );
    // The grant is for Write on patient-records only.
    assert_eq!(
        short(&live.decide_at(&clinician, Operation::Read, "patient-records", now)),
        Want::Deny(DenyReason::NoMatchingRule)
    );
    // Another clinician does not ride on cleo's grant.
    assert_eq!(
        short(&live.decide_at(
            &user("carl", &["clinicians"]),
            Operation::Write,
            "patient-records",
            now
        )),
        Want::Needs("write-patient-records")
    );
    // Expired (also exactly at expiry).
    assert_eq!(
        short(&live.decide_at(
            &clinician,
            Operation::Write,
            "patient-records",
            now + Duration::minutes(30)
        )),
        Want::Needs("write-patient-records")
    );
    let expired = with(vec![grant("cleo", Duration::minutes(-1), now)]);
    assert_eq!(
        short(&expired.decide_at(&clinician, Operation::Write, "patient-records", now)),
        Want::Needs("write-patient-records")
    );
    // A grant for a rule the caller no longer matches grants nothing.
    let not_clinician = user("cleo", &[]);
    assert_eq!(
        short(&live.decide_at(&not_clinician, Operation::Write, "patient-records", now)),
        Want::Deny(DenyReason::NoMatchingRule)
    );
}

#[test]
fn grants_come_only_from_approved_access_approvals() {
    let yaml = |decision: &str, phase: &str, expires: &str| {
        format!(
            r#"
apiVersion: streamgate.dev/v1alpha1
kind: AccessApproval
metadata: {{name: aa1, namespace: clinical}}
spec:
  requester: {{kind: User, name: cleo, groups: [clinicians]}}
  policy: phi-access
  rule: write-patient-records
  topics: [patient-records]
  operations: [Write]
  duration: 1h
  decision: {decision}
status: {{phase: {phase}, expiresAt: {expires}}}
"#
        )
    };
    let parse = |s: String| Grant::from_approval(&serde_yaml::from_str(&s).unwrap());
    let g = parse(yaml("Approved", "Approved", "\"2026-11-27T07:00:00Z\"")).unwrap();
    assert_eq!(g.requester_name, "cleo");
    assert_eq!(
        g.expires_at,
        Utc.with_ymd_and_hms(2026, 11, 27, 7, 0, 0).unwrap()
    );
    assert!(parse(yaml("Pending", "Pending", "null")).is_none());
    assert!(parse(yaml("Denied", "Denied", "null")).is_none());
    assert!(parse(yaml("Approved", "Expired", "\"2026-11-27T07:00:00Z\"")).is_none());
    assert!(parse(yaml("Approved", "Approved", "null")).is_none());
}

#[test]
fn settings_of_the_policy_in_force() {
    let p = billing_pod();
    assert!(p.blocked(BlockedOperation::DeleteTopics));
    assert!(p.blocked(BlockedOperation::AlterConfigs));
    assert!(
        p.blocked(BlockedOperation::DeleteRecords),
        "union of both policies"
    );
    assert!(!p.blocked(BlockedOperation::CreateTopics));
    assert!(p.workload_identity_allowed());
    let oidc = p.oidc();
    assert_eq!(oidc.len(), 1);
    assert_eq!(oidc[0].issuer, "https://idp.example.com");
    // Full (ops) beats Digest; both Open → Open.
    assert_eq!(p.audit().payload, PayloadMode::Full);
    assert_eq!(p.audit().failure_mode, FailureMode::Open);
    let only_ops =
        CompiledPolicy::compile(vec![doc("ops", OPS_WIDE)], vec![], vec![], &labels(&[]));
    assert!(!only_ops.workload_identity_allowed());
    assert!(!only_ops.blocked(BlockedOperation::DeleteTopics));
}

#[test]
fn cluster_scope_needs_a_rule_over_every_topic() {
    let p = billing_pod();
    assert!(
        p.decide_cluster(&user("olga", &["ops"]), Operation::Admin)
            .is_allow()
    );
    assert_eq!(
        short(&p.decide_cluster(&user("auditor@example.com", &[]), Operation::Read)),
        Want::Deny(DenyReason::NoMatchingRule)
    );
    assert!(p.may_any(&user("ann", &["billing-analysts"]), Operation::Read));
    assert!(!p.may_any(&user("ann", &["billing-analysts"]), Operation::Write));
    // An approval-gated rule alone gives no coordination rights.
    assert!(!p.may_any(&user("cleo", &["clinicians"]), Operation::Write));
    assert!(!p.may_any(&user("ozzy", &[]), Operation::Read));
}

/// Two policies, each trusting its own issuer, each naming `alice`.
fn two_issuers() -> CompiledPolicy {
    let trusts = |issuer: &str, topic: &str| {
        format!(
            r#"
identity:
  oidc: {{issuer: "{issuer}", audiences: [kafka]}}
rules:
  - {{name: alice-reads, subjects: [{{kind: User, name: alice}}], topics: ["{topic}"], operations: [Read]}}
  - {{name: staff-describe, subjects: [{{kind: Group, name: staff}}], topics: ["{topic}"], operations: [Describe]}}
"#
        )
    };
    CompiledPolicy::compile(
        vec![
            doc("trusts-a", &trusts("https://a.example.com", "a-records")),
            doc("trusts-b", &trusts("https://b.example.com", "b-records")),
        ],
        vec![],
        vec![],
        &labels(&[]),
    )
}

/// Issue 12 item 7: a principal is (issuer, subject). Issuer B's `alice`
/// (or B's `staff` group) gets nothing from the rules of the policy that
/// trusts issuer A, and the other way round.
#[test]
fn a_same_named_user_of_another_issuer_does_not_get_its_rights() {
    let p = two_issuers();
    let a_alice = user_of("https://a.example.com", "alice", &["staff"]);
    let b_alice = user_of("https://b.example.com", "alice", &["staff"]);
    assert_eq!(
        short(&p.decide(&a_alice, Operation::Read, "a-records")),
        Want::Allow("alice-reads")
    );
    assert_eq!(
        short(&p.decide(&b_alice, Operation::Read, "a-records")),
        Want::Deny(DenyReason::NoMatchingRule)
    );
    assert_eq!(
        short(&p.decide(&b_alice, Operation::Read, "b-records")),
        Want::Allow("alice-reads")
    );
    assert_eq!(
        short(&p.decide(&a_alice, Operation::Read, "b-records")),
        Want::Deny(DenyReason::NoMatchingRule)
    );
    // Groups too: B's staff are not A's staff.
    assert_eq!(
        short(&p.decide(&b_alice, Operation::Describe, "a-records")),
        Want::Deny(DenyReason::NoMatchingRule)
    );
    // An issuer no policy trusts, or none at all, gets nothing.
    for stranger in [
        user_of("https://c.example.com", "alice", &["staff"]),
        Principal {
            issuer: None,
            ..a_alice.clone()
        },
    ] {
        assert_eq!(
            short(&p.decide(&stranger, Operation::Read, "a-records")),
            Want::Deny(DenyReason::NoMatchingRule)
        );
    }
}

/// A policy without an oidc block names no OIDC user in its Allow rules,
/// but its Deny rules still take rights away from every issuer's users.
#[test]
fn allow_rules_need_the_policys_issuer_deny_rules_do_not() {
    let no_oidc = r#"
rules:
  - {name: anyone, subjects: [{kind: User, name: "*"}], topics: ["**"], operations: [Write]}
  - {name: not-secret, subjects: [{kind: Group, name: staff}], topics: ["a-secret"], operations: [Read]}
    "#
    .replace("operations: [Read]}", "operations: [Read], effect: Deny}");
    let mut policies = vec![doc("no-oidc", &no_oidc)];
    let p = CompiledPolicy::compile(policies.clone(), vec![], vec![], &labels(&[]));
    let alice = user_of("https://a.example.com", "alice", &["staff"]);
    assert_eq!(
        short(&p.decide(&alice, Operation::Write, "anything")),
        Want::Deny(DenyReason::NoMatchingRule)
    );
    let wide = r#"
identity:
  oidc: {issuer: "https://a.example.com", audiences: [kafka]}
rules:
  - {name: staff-read, subjects: [{kind: Group, name: staff}], topics: ["a-*"], operations: [Read]}
"#;
    policies.push(doc("trusts-a", wide));
    let p = CompiledPolicy::compile(policies, vec![], vec![], &labels(&[]));
    assert_eq!(
        short(&p.decide(&alice, Operation::Read, "a-records")),
        Want::Allow("staff-read")
    );
    assert_eq!(
        short(&p.decide(&alice, Operation::Read, "a-secret")),
        Want::Deny(DenyReason::DeniedByRule)
    );
}

/// A grant recorded for issuer A's cleo is not B's cleo's, not even for
/// the coordination check (`may_any`) that looks at grants alone.
#[test]
fn a_grant_is_for_the_requesters_issuer() {
    let now = Utc::now();
    let mut g = grant("cleo", Duration::minutes(30), now);
    g.requester_issuer = Some(IDP.into());
    let p = CompiledPolicy::compile(
        vec![doc("phi-access", PHI_ACCESS)],
        vec![],
        vec![g],
        &labels(&[("app", "billing")]),
    );
    let cleo = user("cleo", &["clinicians"]);
    assert!(p.may_any(&cleo, Operation::Write));
    assert!(
        p.decide(&cleo, Operation::Write, "patient-records")
            .is_allow()
    );
    let other_cleo = user_of("https://other.example.com", "cleo", &["clinicians"]);
    assert!(!p.may_any(&other_cleo, Operation::Write));
    assert!(
        !p.decide(&other_cleo, Operation::Write, "patient-records")
            .is_allow()
    );
}

/// Issue 12 item 7: a grant's topics are names, matched exactly. An
/// AccessApproval for the topic `patients.*` (a name a client sent, which a
/// rule over `patients.*` matched) is not a grant over every patients topic.
#[test]
fn grant_topics_are_matched_literally() {
    let jit = r#"
identity:
  oidc: {issuer: "https://idp.example.com", audiences: [kafka]}
rules:
  - name: write-patients
    subjects: [{kind: Group, name: clinicians}]
    topics: ["patients.**"]
    operations: [Write]
    approval:
      approvers: [{kind: User, name: dr.house@example.com}]
      maxDuration: 1h
"#;
    let now = Utc::now();
    let with_topics = |topics: &[&str]| {
        let mut g = grant("cleo", Duration::minutes(30), now);
        g.policy = "jit".into();
        g.rule = "write-patients".into();
        g.topics = topics.iter().map(|t| t.to_string()).collect();
        CompiledPolicy::compile(vec![doc("jit", jit)], vec![], vec![g], &labels(&[]))
    };
    let cleo = user("cleo", &["clinicians"]);
    let p = with_topics(&["patients.**"]);
    assert_eq!(
        short(&p.decide(&cleo, Operation::Write, "patients.billing")),
        Want::Needs("write-patients")
    );
    assert_eq!(
        short(&p.decide(&cleo, Operation::Write, "patients.a.b")),
        Want::Needs("write-patients")
    );
    let p = with_topics(&["patients.billing"]);
    assert!(
        p.decide(&cleo, Operation::Write, "patients.billing")
            .is_allow()
    );
    assert_eq!(
        short(&p.decide(&cleo, Operation::Write, "patients.billing2")),
        Want::Needs("write-patients")
    );
}

const BREAK_GLASS: &str = r#"
identity:
  oidc: {issuer: "https://idp.example.com", audiences: [kafka]}
rules:
  - name: emergency-read
    subjects: [{kind: Group, name: clinicians}]
    topics: ["patient-*"]
    operations: []
    groups: ["ed-*"]
    breakGlass:
      maxDuration: 30m
      operations: [Read]
      unmasked: true
      reviewers: [{kind: Group, name: compliance-officers}]
  - name: write-with-approval
    subjects: [{kind: Group, name: clinicians}]
    topics: [patient-orders]
    operations: [Write]
    approval:
      approvers: [{kind: Group, name: compliance-officers}]
      maxDuration: 1h
    breakGlass: {maxDuration: 10m, operations: [Write], reviewers: [{kind: Group, name: compliance-officers}]}
  - name: never-psychotherapy-notes
    subjects: [{kind: Group, name: clinicians}]
    topics: [patient-psychotherapy]
    operations: [Read]
    effect: Deny
"#;

#[test]
fn break_glass_allows_at_once_under_its_rule_only_and_ends_on_time() {
    use streamgate_proxy::policy::decide::BreakGlass;
    let policy =
        CompiledPolicy::compile(vec![doc("bg", BREAK_GLASS)], vec![], vec![], &labels(&[]));
    let t0 = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap();
    let invoked = BreakGlass {
        reason: "ED trauma bay 3".into(),
        since: t0,
    };
    let bob = user("bob", &["clinicians"]);
    let at = |p: &Principal, bg: Option<&BreakGlass>, op, topic, mins| {
        policy.decide_as(p, bg, op, topic, t0 + Duration::minutes(mins))
    };
    // Not invoked: nothing.
    assert!(matches!(
        at(&bob, None, Operation::Read, "patient-vitals", 1),
        PolicyDecision::Deny {
            reason: DenyReason::NoMatchingRule,
            ..
        }
    ));
    // Invoked: allowed at once, by break-glass, naming the rule.
    assert_eq!(
        at(&bob, Some(&invoked), Operation::Read, "patient-vitals", 1),
        PolicyDecision::BreakGlass {
            policy: "bg".into(),
            rule: "emergency-read".into(),
            grant: None
        }
    );
    // Only the operations breakGlass lists.
    assert!(!at(&bob, Some(&invoked), Operation::Write, "patient-vitals", 1).is_allow());
    // Over its rule's approval: no approver waited for.
    assert!(matches!(
        at(&bob, None, Operation::Write, "patient-orders", 1),
        PolicyDecision::NeedsApproval { .. }
    ));
    assert!(matches!(
        at(&bob, Some(&invoked), Operation::Write, "patient-orders", 1),
        PolicyDecision::BreakGlass { ref rule, .. } if rule == "write-with-approval"
    ));
    // Each rule's own maxDuration: 10m for orders, 30m for reading.
    assert_eq!(
        at(&bob, Some(&invoked), Operation::Write, "patient-orders", 11),
        PolicyDecision::Deny {
            reason: DenyReason::BreakGlassEnded,
            policy: Some("bg".into()),
            rule: Some("write-with-approval".into())
        }
    );
    assert!(at(&bob, Some(&invoked), Operation::Read, "patient-vitals", 29).is_allow());
    assert!(matches!(
        at(&bob, Some(&invoked), Operation::Read, "patient-vitals", 30),
        PolicyDecision::Deny {
            reason: DenyReason::BreakGlassEnded,
            ..
        }
    ));
    // A Deny rule still wins.
    assert!(matches!(
        at(
            &bob,
            Some(&invoked),
            Operation::Read,
            "patient-psychotherapy",
            1
        ),
        PolicyDecision::Deny {
            reason: DenyReason::DeniedByRule,
            ..
        }
    ));
    // Someone the rule does not list gets nothing from invoking it.
    let mallory = user("mallory", &["billing-analysts"]);
    assert!(matches!(
        at(
            &mallory,
            Some(&invoked),
            Operation::Read,
            "patient-vitals",
            1
        ),
        PolicyDecision::Deny {
            reason: DenyReason::NoMatchingRule,
            ..
        }
    ));
    // A same-named group of another issuer is someone else.
    let other = user_of("https://other.example.com", "bob", &["clinicians"]);
    assert!(!at(&other, Some(&invoked), Operation::Read, "patient-vitals", 1).is_allow());
    // Coordination under break-glass: the rule's groups, while it lasts.
    assert!(policy.break_glass_any(&bob, Some(&invoked), Operation::Read, t0));
    assert!(!policy.break_glass_any(&bob, None, Operation::Read, t0));
    assert!(!policy.break_glass_any(&mallory, Some(&invoked), Operation::Read, t0));
    // Unmasked where the rule says so.
    assert!(policy.break_glass_unmasked(
        &bob,
        Some(&invoked),
        "patient-vitals",
        Utc::now().min(t0 + Duration::minutes(1))
    ));
    assert!(!policy.break_glass_unmasked(&bob, None, "patient-vitals", t0));
}

#[test]
fn a_break_glass_access_approval_grants_only_its_requester_under_a_break_glass_rule() {
    let now = Utc::now();
    let aa = |phase: &str, break_glass: bool| -> streamgate_crds::AccessApproval {
        serde_yaml::from_str(&format!(
            r#"
apiVersion: streamgate.dev/v1alpha1
kind: AccessApproval
metadata: {{name: emergency-read-bob-1, namespace: clinical}}
spec:
  requester: {{kind: User, name: bob, groups: [clinicians], oidc: {{issuer: "{IDP}", usernameClaim: sub}}}}
  policy: bg
  rule: emergency-read
  topics: [patient-vitals]
  operations: [Read]
  duration: 30m
  breakGlass: {break_glass}
  reason: ED
status: {{phase: {phase}, expiresAt: "{}"}}
"#,
            (now + Duration::minutes(5)).to_rfc3339()
        ))
        .unwrap()
    };
    assert!(Grant::from_approval(&aa("Pending", true)).is_none());
    // Phase Approved without a decision, or BreakGlass without breakGlass: nothing.
    assert!(Grant::from_approval(&aa("BreakGlass", false)).is_none());
    let grant = Grant::from_approval(&aa("BreakGlass", true)).unwrap();
    assert!(grant.break_glass);
    let policy = CompiledPolicy::compile(
        vec![doc("bg", BREAK_GLASS)],
        vec![],
        vec![grant],
        &labels(&[]),
    );
    let bob = user("bob", &["clinicians"]);
    assert_eq!(
        policy.decide_as(&bob, None, Operation::Read, "patient-vitals", now),
        PolicyDecision::BreakGlass {
            policy: "bg".into(),
            rule: "emergency-read".into(),
            grant: Some("emergency-read-bob-1".into())
        }
    );
    // Not another topic of the rule, not as a plain approval, not for alice.
    assert!(
        !policy
            .decide_as(&bob, None, Operation::Read, "patient-labs", now)
            .is_allow()
    );
    assert!(!policy.may_any(&bob, Operation::Read));
    let alice = user("alice", &["clinicians"]);
    assert!(
        !policy
            .decide_as(&alice, None, Operation::Read, "patient-vitals", now)
            .is_allow()
    );
    // …and it ends at expiresAt.
    assert!(
        !policy
            .decide_as(
                &bob,
                None,
                Operation::Read,
                "patient-vitals",
                now + Duration::minutes(6)
            )
            .is_allow()
    );
}
