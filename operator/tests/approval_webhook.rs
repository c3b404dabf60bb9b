//! AccessApproval admission: the mutating stamp and the validating checks,
//! run in the order the API server runs them, on real AdmissionReview JSON
//! (a `kubectl patch` of `spec.decision`, see tests/golden/approval/).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use kube::core::admission::AdmissionReview;
use serde_json::{Value, json};
use streamgate_crds::{AccessApproval, StreamPolicy};
use streamgate_operator::config::{IdentityMapping, InjectorSettings};
use streamgate_operator::metrics::Metrics;
use streamgate_operator::webhook::handlers::{WebhookState, mutate_approval, validate_approval};
use streamgate_operator::webhook::lookup::StaticLookup;

fn fixture(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/approval")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn state(with_policy: bool) -> WebhookState<StaticLookup> {
    state_mapped(with_policy, IdentityMapping::default())
}

/// The webhook of an operator configured with `mapping`
/// (`--approver-oidc-username-claim/-prefix`, `--approver-oidc-groups-prefix`).
fn state_mapped(with_policy: bool, mapping: IdentityMapping) -> WebhookState<StaticLookup> {
    let mut lookup = StaticLookup::default();
    if with_policy {
        let policy: StreamPolicy =
            serde_json::from_value(fixture("phi-access.policy.json")).unwrap();
        lookup.policies.push(policy);
    }
    lookup.pods.insert(
        (
            "clinical".to_string(),
            "intake-5d8f7-abcde".to_string(),
            "pod-uid-1".to_string(),
        ),
        "intake".to_string(),
    );
    WebhookState {
        settings: InjectorSettings {
            approver_identity: mapping,
            ..InjectorSettings::default()
        },
        lookup,
        metrics: Arc::new(Metrics::default()),
    }
}

/// The base review: carol (group compliance-officers) approves alice's request.
fn review() -> Value {
    fixture("decide-by-kubectl-patch.review.json")
}

fn as_user(mut r: Value, username: &str, groups: &[&str]) -> Value {
    r["request"]["userInfo"] = json!({"username": username, "groups": groups});
    r
}

/// The namespace's `streamgate-sidecar` account (a session token, not bound
/// to a pod), filing for the workload `intake-5d8f7-abcde` (ServiceAccount `intake`).
fn as_sidecar(mut r: Value) -> Value {
    r["request"]["userInfo"] = json!({"username": "system:serviceaccount:clinical:streamgate-sidecar",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:clinical"]});
    r
}

/// A CREATE of the base request (alice's, from the issuer phi-access trusts), undecided.
fn create_review() -> Value {
    let mut r = review();
    r["request"]["operation"] = json!("CREATE");
    r["request"]["oldObject"] = Value::Null;
    if let Some(o) = r["request"]["object"].as_object_mut() {
        o.remove("status");
    }
    r["request"]["object"]["spec"]["decision"] = json!("Pending");
    r["request"]["object"]["spec"]["requester"]["oidc"] =
        json!({"issuer": "https://idp.example.com/realms/health", "usernameClaim": "sub"});
    r
}

fn decode_patch(resp: &Value) -> Option<json_patch::Patch> {
    let bytes: Vec<u8> = match resp.get("patch")? {
        Value::Array(a) => a
            .iter()
            .map(|b| u8::try_from(b.as_u64().unwrap()).unwrap())
            .collect(),
        Value::String(s) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(s).unwrap()
        }
        _ => return None,
    };
    Some(serde_json::from_slice(&bytes).unwrap())
}

/// The API server's order: mutating webhook, apply its patch, then validating.
/// Returns (allowed, message, final object).
async fn admit(state: &WebhookState<StaticLookup>, mut r: Value) -> (bool, String, Value) {
    let m: AdmissionReview<AccessApproval> = serde_json::from_value(r.clone()).unwrap();
    let mresp = serde_json::to_value(mutate_approval(state, m).await).unwrap()["response"].clone();
    assert_eq!(mresp["allowed"], true, "the stamp never refuses: {mresp}");
    if let Some(patch) = decode_patch(&mresp) {
        json_patch::patch(&mut r["request"]["object"], &patch).unwrap();
    }
    validate_only(state, r).await
}

async fn validate_only(state: &WebhookState<StaticLookup>, r: Value) -> (bool, String, Value) {
    let object = r["request"]["object"].clone();
    let v: AdmissionReview<AccessApproval> = serde_json::from_value(r).unwrap();
    let vresp =
        serde_json::to_value(validate_approval(state, v).await).unwrap()["response"].clone();
    let message = vresp["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (vresp["allowed"].as_bool().unwrap(), message, object)
}

#[tokio::test]
async fn an_approver_by_group_decides_and_decided_by_is_stamped() {
    let (allowed, message, object) = admit(&state(true), review()).await;
    assert!(allowed, "{message}");
    assert_eq!(object["spec"]["decidedBy"], "carol@example.com");
}

#[tokio::test]
async fn an_approver_by_user_name_decides() {
    let r = as_user(review(), "dr.house@example.com", &["system:authenticated"]);
    let (allowed, message, object) = admit(&state(true), r).await;
    assert!(allowed, "{message}");
    assert_eq!(object["spec"]["decidedBy"], "dr.house@example.com");
}

#[tokio::test]
async fn a_denial_is_also_stamped_and_needs_an_approver() {
    let mut r = review();
    r["request"]["object"]["spec"]["decision"] = json!("Denied");
    let (allowed, _, object) = admit(&state(true), r.clone()).await;
    assert!(allowed);
    assert_eq!(object["spec"]["decidedBy"], "carol@example.com");
    let (allowed, message, _) =
        admit(&state(true), as_user(r, "bob@example.com", &["clinicians"])).await;
    assert!(!allowed);
    assert!(message.contains("is not an approver"), "{message}");
}

#[tokio::test]
async fn the_requester_cannot_approve_their_own_request() {
    // alice is also a compliance officer: still refused.
    let r = as_user(
        review(),
        "alice@example.com",
        &["clinicians", "compliance-officers"],
    );
    let (allowed, message, _) = admit(&state(true), r).await;
    assert!(!allowed);
    assert_eq!(
        message,
        "AccessApproval write-patient-records-alice-7f3c9: alice@example.com is the requester and cannot decide their own request (the Kubernetes username is the requester's name \"alice@example.com\"); ask one of the rule's approvers"
    );
}

#[tokio::test]
async fn an_outsider_is_refused_and_told_who_may_decide() {
    let r = as_user(
        review(),
        "bob@example.com",
        &["clinicians", "system:authenticated"],
    );
    let (allowed, message, _) = admit(&state(true), r).await;
    assert!(!allowed);
    assert_eq!(
        message,
        "AccessApproval write-patient-records-alice-7f3c9: bob@example.com is not an approver of rule \"write-patient-records\" in StreamPolicy \"phi-access\" (approvers: Group compliance-officers, User dr.house@example.com)"
    );
}

#[tokio::test]
async fn a_service_account_is_not_an_approver_by_its_groups_alone() {
    let r = as_user(
        review(),
        "system:serviceaccount:clinical:reporting",
        &["system:serviceaccounts", "compliance-officers"],
    );
    let (allowed, message, _) = admit(&state(true), r).await;
    assert!(!allowed);
    assert!(message.contains("is not an approver"), "{message}");
}

#[tokio::test]
async fn nothing_changes_after_a_decision() {
    let mut r = review();
    r["request"]["oldObject"]["spec"]["decision"] = json!("Approved");
    r["request"]["oldObject"]["spec"]["decidedBy"] = json!("carol@example.com");
    r["request"]["object"]["spec"]["decision"] = json!("Denied");
    r["request"]["object"]["spec"]["decidedBy"] = json!("carol@example.com");
    let (allowed, message, _) = admit(&state(true), r).await;
    assert!(!allowed);
    assert_eq!(
        message,
        "AccessApproval write-patient-records-alice-7f3c9 was already Approved by carol@example.com; decisions are final — create a new request instead"
    );
}

#[tokio::test]
async fn metadata_changes_after_a_decision_are_fine() {
    let mut r = review();
    r["request"]["oldObject"]["spec"]["decision"] = json!("Approved");
    r["request"]["oldObject"]["spec"]["decidedBy"] = json!("carol@example.com");
    r["request"]["object"] = r["request"]["oldObject"].clone();
    r["request"]["object"]["metadata"]["labels"]["team"] = json!("intake");
    let (allowed, message, _) = admit(&state(true), r).await;
    assert!(allowed, "{message}");
}

#[tokio::test]
async fn a_forged_decided_by_is_overwritten_by_the_stamp() {
    let mut r = review();
    r["request"]["object"]["spec"]["decidedBy"] = json!("dr.house@example.com");
    let r = as_user(r, "carol@example.com", &["compliance-officers"]);
    let (allowed, message, object) = admit(&state(true), r).await;
    assert!(allowed, "{message}");
    assert_eq!(object["spec"]["decidedBy"], "carol@example.com");
}

#[tokio::test]
async fn a_forged_decided_by_that_skipped_the_stamp_is_refused() {
    let mut r = review();
    r["request"]["object"]["spec"]["decidedBy"] = json!("dr.house@example.com");
    let (allowed, message, _) = validate_only(&state(true), r).await;
    assert!(!allowed);
    assert_eq!(
        message,
        "AccessApproval write-patient-records-alice-7f3c9: decidedBy \"dr.house@example.com\" does not match the requesting user \"carol@example.com\"; decidedBy is written by streamgate, never by the client"
    );
}

#[tokio::test]
async fn decided_by_without_a_decision_is_refused() {
    let mut r = review();
    r["request"]["object"]["spec"]["decision"] = json!("Pending");
    r["request"]["object"]["spec"]["decidedBy"] = json!("carol@example.com");
    let (allowed, message, _) = admit(&state(true), r).await;
    assert!(!allowed);
    assert!(
        message.contains("decidedBy is written by streamgate"),
        "{message}"
    );
}

#[tokio::test]
async fn widening_the_request_while_approving_is_refused() {
    let mut r = review();
    r["request"]["object"]["spec"]["topics"] = json!(["patient-records", "patient-*"]);
    let (allowed, message, _) = admit(&state(true), r).await;
    assert!(!allowed);
    assert_eq!(
        message,
        "AccessApproval write-patient-records-alice-7f3c9: only spec.decision may change; spec.topics is part of the request and is immutable"
    );
}

#[tokio::test]
async fn a_decision_for_a_missing_policy_is_refused() {
    let (allowed, message, _) = admit(&state(false), review()).await;
    assert!(!allowed);
    assert!(
        message.contains("StreamPolicy \"phi-access\" not found in namespace clinical"),
        "{message}"
    );
}

#[tokio::test]
async fn a_sidecar_cannot_create_a_pre_approved_request() {
    let mut r = create_review();
    r["request"]["object"]["spec"]["decision"] = json!("Approved");
    let r = as_sidecar(r);
    let (allowed, message, _) = validate_only(&state(true), r.clone()).await;
    assert!(!allowed);
    assert!(message.contains("must have decision Pending"), "{message}");
    // An undecided request is fine.
    let mut ok = r;
    ok["request"]["object"]["spec"]["decision"] = json!("Pending");
    assert!(validate_only(&state(true), ok).await.0);
}

#[tokio::test]
async fn an_invalid_request_is_refused_at_creation_with_the_field_named() {
    let mut r = create_review();
    r["request"]["object"]["spec"]["duration"] = json!("forever");
    let r = as_sidecar(r);
    let (allowed, message, _) = validate_only(&state(true), r).await;
    assert!(!allowed);
    assert!(message.contains("is not a valid request"), "{message}");
    assert!(message.contains("spec.duration"), "{message}");
}

// ---- who may file a request for whom ----

#[tokio::test]
async fn a_new_request_never_carries_a_status() {
    let mut r = as_sidecar(create_review());
    r["request"]["object"]["status"] = json!({"phase": "Approved"});
    let (allowed, message, _) = validate_only(&state(true), r).await;
    assert!(!allowed);
    assert!(message.contains("carries no status"), "{message}");
}

#[tokio::test]
async fn a_sidecar_files_only_for_its_pods_account_or_users_of_a_trusted_issuer() {
    let st = state(true);
    assert!(validate_only(&st, as_sidecar(create_review())).await.0);
    // Its own pod's ServiceAccount: fine; another account of the namespace: refused.
    let mut own = create_review();
    own["request"]["object"]["spec"]["requester"] =
        json!({"kind": "ServiceAccount", "name": "intake"});
    assert!(validate_only(&st, as_sidecar(own)).await.0);
    let mut other = create_review();
    other["request"]["object"]["spec"]["requester"] =
        json!({"kind": "ServiceAccount", "name": "billing-app"});
    let (allowed, message, _) = validate_only(&st, as_sidecar(other)).await;
    assert!(!allowed);
    assert!(
        message.contains("requester ServiceAccount \"billing-app\" is not the ServiceAccount \"intake\" of the pod clinical/intake-5d8f7-abcde"),
        "{message}"
    );
    // A user of an issuer no policy of the namespace trusts.
    let mut foreign = create_review();
    foreign["request"]["object"]["spec"]["requester"]["oidc"]["issuer"] =
        json!("https://evil.example.com");
    let (allowed, message, _) = validate_only(&st, as_sidecar(foreign)).await;
    assert!(!allowed);
    assert!(
        message.contains("https://evil.example.com is not one of them"),
        "{message}"
    );
    // No issuer recorded at all.
    let mut bare = create_review();
    bare["request"]["object"]["spec"]["requester"]["oidc"] = Value::Null;
    assert!(!validate_only(&st, as_sidecar(bare)).await.0);
}

#[tokio::test]
async fn a_sidecar_files_nothing_for_a_pod_that_is_not_there() {
    let mut r = as_sidecar(create_review());
    r["request"]["object"]["spec"]["workload"] = Value::Null;
    let (allowed, message, _) = validate_only(&state(true), r).await;
    assert!(!allowed);
    assert!(message.contains("for no live injected pod"), "{message}");
    let mut r = as_sidecar(create_review());
    r["request"]["object"]["spec"]["workload"]["pod"] = json!("gone-0");
    assert!(!validate_only(&state(true), r).await.0);
    // A pod-bound token names its pod; a replaced pod (another uid) is not it.
    let mut r = as_sidecar(create_review());
    r["request"]["userInfo"]["extra"] = json!({
        "authentication.kubernetes.io/pod-name": ["intake-5d8f7-abcde"],
        "authentication.kubernetes.io/pod-uid": ["old-uid"]});
    assert!(!validate_only(&state(true), r).await.0);
}

#[tokio::test]
async fn anyone_else_files_only_for_themselves() {
    let st = state(true);
    // The app's own ServiceAccount (were it given the right) cannot file for alice.
    let r = as_user(
        create_review(),
        "system:serviceaccount:clinical:intake",
        &["system:serviceaccounts"],
    );
    let (allowed, message, _) = validate_only(&st, r).await;
    assert!(!allowed);
    assert!(
        message.contains("system:serviceaccount:clinical:intake may only request access for themselves, not for User \"alice@example.com\""),
        "{message}"
    );
    let (allowed, _, _) = validate_only(&st, as_user(create_review(), "mallory", &[])).await;
    assert!(!allowed, "mallory files for alice");
    // alice under the API server's OIDC username for her `sub`.
    let alice = as_user(
        create_review(),
        "https://idp.example.com/realms/health#alice@example.com",
        &[],
    );
    let (allowed, message, _) = validate_only(&st, alice).await;
    assert!(allowed, "{message}");
    // A cluster admin is trusted to file on anyone's behalf.
    assert!(
        validate_only(&st, as_user(create_review(), "admin", &["system:masters"]))
            .await
            .0
    );
}

// ---- identity mapping: who is the requester under another name ----

/// A request from a sidecar that recorded where the requester's name came
/// from: alice, named by her opaque `sub`, issuer https://idp.example.com/realms/health.
fn oidc_review() -> Value {
    fixture("decide-oidc-sub-requester.review.json")
}

fn email_requester(mut r: Value) -> Value {
    for k in ["object", "oldObject"] {
        r["request"][k]["spec"]["requester"]["oidc"] = json!({
            "issuer": "https://idp.example.com/realms/health",
            "usernameClaim": "email"
        });
    }
    r
}

#[tokio::test]
async fn an_opaque_sub_is_the_requester_under_the_api_servers_default_prefix() {
    // kube-apiserver with --oidc-username-claim=sub and no prefix flag names
    // alice `<issuer>#<sub>`; she is also a compliance officer.
    let (allowed, message, _) = admit(&state(true), oidc_review()).await;
    assert!(!allowed);
    assert_eq!(
        message,
        "AccessApproval write-patient-records-9b2c7e10-4f1d-4c-3d81a: https://idp.example.com/realms/health#9b2c7e10-4f1d-4c1e-a7f1-5d0c2e8b6a11 is the requester and cannot decide their own request (the Kubernetes username is the requester's name \"9b2c7e10-4f1d-4c1e-a7f1-5d0c2e8b6a11\" behind a username prefix); ask one of the rule's approvers"
    );
    // The same request, decided by carol: accepted and stamped.
    let r = as_user(
        oidc_review(),
        "https://idp.example.com/realms/health#4c0ffee0-carol",
        &["compliance-officers", "system:authenticated"],
    );
    let (allowed, message, object) = admit(&state(true), r).await;
    assert!(allowed, "{message}");
    assert_eq!(
        object["spec"]["decidedBy"],
        "https://idp.example.com/realms/health#4c0ffee0-carol"
    );
}

#[tokio::test]
async fn a_configured_prefix_and_email_case_do_not_hide_the_requester() {
    let mapping = IdentityMapping {
        username_claim: "email".into(),
        username_prefix: Some("sso/".into()),
        groups_prefix: String::new(),
    };
    let r = as_user(
        email_requester(review()),
        "sso/Alice@Example.COM",
        &["compliance-officers", "system:authenticated"],
    );
    let (allowed, message, _) = admit(&state_mapped(true, mapping.clone()), r).await;
    assert!(!allowed);
    assert_eq!(
        message,
        "AccessApproval write-patient-records-alice-7f3c9: sso/Alice@Example.COM is the requester and cannot decide their own request (the Kubernetes username is claim email=\"alice@example.com\" of https://idp.example.com/realms/health with username prefix \"sso/\"); ask one of the rule's approvers"
    );
    // carol, under the same mapping, still decides.
    let r = as_user(
        email_requester(review()),
        "sso/carol@example.com",
        &["compliance-officers"],
    );
    let (allowed, message, _) = admit(&state_mapped(true, mapping), r).await;
    assert!(allowed, "{message}");
}

#[tokio::test]
async fn an_issuer_prefix_is_seen_through_even_when_nothing_is_configured() {
    // A request from an older sidecar (no requester.oidc), decided as `oidc:ALICE@…`.
    let r = as_user(
        review(),
        "oidc:ALICE@example.com",
        &["compliance-officers", "system:authenticated"],
    );
    let (allowed, message, _) = admit(&state(true), r).await;
    assert!(!allowed);
    assert!(
        message.contains("oidc:ALICE@example.com is the requester and cannot decide"),
        "{message}"
    );
}

#[tokio::test]
async fn a_requester_named_by_another_claim_than_the_clusters_is_refused_as_unverifiable() {
    // The sidecar names alice by `sub`; this cluster's usernames are emails:
    // nobody can tell whether carol@example.com is alice, so nobody decides
    // until the two are aligned.
    let mapping = IdentityMapping {
        username_claim: "email".into(),
        ..IdentityMapping::default()
    };
    let r = as_user(oidc_review(), "carol@example.com", &["compliance-officers"]);
    let (allowed, message, _) = admit(&state_mapped(true, mapping), r).await;
    assert!(!allowed);
    assert_eq!(
        message,
        "AccessApproval write-patient-records-9b2c7e10-4f1d-4c-3d81a: cannot tell whether carol@example.com is the requester: the request names the requester by OIDC claim \"sub\" of https://idp.example.com/realms/health, but Kubernetes usernames come from claim \"email\"; align the StreamPolicy's identity.oidc.usernameClaim with the operator's --approver-oidc-username-claim (the API server's --oidc-username-claim)"
    );
}

#[tokio::test]
async fn the_requester_acting_through_the_workloads_service_account_is_refused() {
    // alice execs into her pod and patches with its token; the policy even
    // lists that ServiceAccount as an approver.
    let mut lookup_policy: StreamPolicy =
        serde_json::from_value(fixture("phi-access.policy.json")).unwrap();
    lookup_policy.spec.rules[1]
        .approval
        .as_mut()
        .unwrap()
        .approvers
        .push(serde_json::from_value(json!({"kind": "ServiceAccount", "name": "intake"})).unwrap());
    let mut st = state(false);
    st.lookup.policies.push(lookup_policy);
    let r = as_user(
        review(),
        "system:serviceaccount:clinical:intake",
        &["system:serviceaccounts", "system:serviceaccounts:clinical"],
    );
    let (allowed, message, _) = admit(&st, r).await;
    assert!(!allowed);
    assert_eq!(
        message,
        "AccessApproval write-patient-records-alice-7f3c9: system:serviceaccount:clinical:intake is the ServiceAccount of the requester's workload (pod clinical/intake-5d8f7-abcde); whoever runs in that workload may be the requester, so it cannot decide; ask one of the rule's approvers"
    );
    // A ServiceAccount requester cannot approve its own request either.
    let mut r = review();
    for k in ["object", "oldObject"] {
        r["request"][k]["spec"]["requester"] = json!({"kind": "ServiceAccount", "name": "batch"});
        r["request"][k]["spec"]
            .as_object_mut()
            .unwrap()
            .remove("workload");
    }
    let r = as_user(r, "system:serviceaccount:clinical:batch", &[]);
    let (allowed, message, _) = admit(&st, r).await;
    assert!(!allowed);
    assert!(
        message.contains("(it is the requesting ServiceAccount clinical/batch)"),
        "{message}"
    );
}

#[tokio::test]
async fn group_approvers_are_matched_on_kubernetes_groups_with_the_prefix() {
    let mapping = IdentityMapping {
        groups_prefix: "oidc:".into(),
        ..IdentityMapping::default()
    };
    // `compliance-officers` without the prefix comes from another
    // authenticator than the IdP the policy's groups are written for.
    let r = as_user(review(), "carol@example.com", &["compliance-officers"]);
    let (allowed, message, _) = admit(&state_mapped(true, mapping.clone()), r).await;
    assert!(!allowed);
    assert_eq!(
        message,
        "AccessApproval write-patient-records-alice-7f3c9: carol@example.com is not an approver of rule \"write-patient-records\" in StreamPolicy \"phi-access\" (approvers: Group compliance-officers, User dr.house@example.com); approver groups are matched as Kubernetes groups with prefix \"oidc:\""
    );
    let r = as_user(
        review(),
        "carol@example.com",
        &["oidc:compliance-officers", "system:authenticated"],
    );
    let (allowed, message, object) = admit(&state_mapped(true, mapping), r).await;
    assert!(allowed, "{message}");
    assert_eq!(object["spec"]["decidedBy"], "carol@example.com");
}

#[tokio::test]
async fn a_user_approver_is_matched_with_the_username_prefix() {
    let mapping = IdentityMapping {
        username_claim: "email".into(),
        username_prefix: Some("oidc:".into()),
        groups_prefix: String::new(),
    };
    let r = as_user(
        review(),
        "oidc:dr.house@example.com",
        &["system:authenticated"],
    );
    let (allowed, message, _) = admit(&state_mapped(true, mapping.clone()), r).await;
    assert!(allowed, "{message}");
    // The bare name is some other authenticator's user, not the IdP's dr.house.
    let r = as_user(review(), "dr.house@example.com", &["system:authenticated"]);
    let (allowed, message, _) = admit(&state_mapped(true, mapping), r).await;
    assert!(!allowed);
    assert!(message.contains("is not an approver"), "{message}");
}

// ---------- break-glass reviews ----------

/// carol (compliance-officers, a reviewer of `emergency-read`) reviews alice's
/// break-glass use with `kubectl patch … {"spec":{"review":"Justified",…}}`.
fn break_glass_review() -> Value {
    fixture("review-break-glass-by-kubectl-patch.review.json")
}

#[tokio::test]
async fn a_reviewer_reviews_a_break_glass_use_and_reviewed_by_is_stamped() {
    let (allowed, message, object) = admit(&state(true), break_glass_review()).await;
    assert!(allowed, "{message}");
    assert_eq!(object["spec"]["reviewedBy"], "carol@example.com");
    assert_eq!(object["spec"]["review"], "Justified");
    // A forged reviewedBy is overwritten by the stamp.
    let mut r = break_glass_review();
    r["request"]["object"]["spec"]["reviewedBy"] = json!("dr.house@example.com");
    let (allowed, _, object) = admit(&state(true), r.clone()).await;
    assert!(allowed);
    assert_eq!(object["spec"]["reviewedBy"], "carol@example.com");
    // …and refused when it skipped the stamp.
    let (allowed, message, _) = validate_only(&state(true), r).await;
    assert!(!allowed);
    assert!(
        message.contains("reviewedBy is written by streamgate"),
        "{message}"
    );
}

#[tokio::test]
async fn nobody_reviews_their_own_break_glass_use() {
    // alice is also a compliance officer: still refused.
    let r = as_user(
        break_glass_review(),
        "alice@example.com",
        &["clinicians", "compliance-officers"],
    );
    let (allowed, message, _) = admit(&state(true), r).await;
    assert!(!allowed);
    assert!(
        message.contains("alice@example.com is the requester"),
        "{message}"
    );
    // Nor under the API server's default OIDC prefix.
    let r = as_user(
        break_glass_review(),
        "https://idp.example.com/realms/health#alice@example.com",
        &["compliance-officers"],
    );
    let (allowed, message, _) = admit(&state(true), r).await;
    assert!(!allowed, "{message}");
}

#[tokio::test]
async fn only_reviewers_of_the_rule_review_and_a_review_is_final() {
    let r = as_user(break_glass_review(), "bob@example.com", &["clinicians"]);
    let (allowed, message, _) = admit(&state(true), r).await;
    assert!(!allowed);
    assert!(
        message.contains("is not an approver of rule \"emergency-read\""),
        "{message}"
    );
    // A second review (or a changed note) after the first is refused.
    let mut r = break_glass_review();
    r["request"]["oldObject"]["spec"]["review"] = json!("Justified");
    r["request"]["oldObject"]["spec"]["reviewedBy"] = json!("carol@example.com");
    r["request"]["object"]["spec"]["review"] = json!("NotJustified");
    let (allowed, message, _) = admit(&state(true), r).await;
    assert!(!allowed);
    assert!(message.contains("reviews are final"), "{message}");
}

#[tokio::test]
async fn a_break_glass_use_is_reviewed_never_decided_and_its_reason_is_immutable() {
    let mut r = break_glass_review();
    r["request"]["object"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("review");
    r["request"]["object"]["spec"]["decision"] = json!("Approved");
    let (allowed, message, _) = admit(&state(true), r).await;
    assert!(!allowed);
    assert!(message.contains("is not decided but reviewed"), "{message}");
    let mut r = break_glass_review();
    r["request"]["object"]["spec"]["reason"] = json!("something else");
    let (allowed, message, _) = admit(&state(true), r).await;
    assert!(!allowed);
    assert!(message.contains("spec.reason"), "{message}");
    // A review on an ordinary request is refused.
    let mut r = review();
    r["request"]["object"]["spec"]["review"] = json!("Justified");
    let (allowed, message, _) = admit(&state(true), r).await;
    assert!(!allowed);
    assert!(message.contains("for break-glass uses only"), "{message}");
}

#[tokio::test]
async fn a_break_glass_request_is_created_without_a_review_and_with_a_reason() {
    let mut r = break_glass_review();
    r["request"]["operation"] = json!("CREATE");
    r["request"]["oldObject"] = Value::Null;
    r["request"]["object"]
        .as_object_mut()
        .unwrap()
        .remove("status");
    r = as_user(r, "alice@example.com", &["clinicians"]);
    let (allowed, message, _) = admit(&state(true), r.clone()).await;
    assert!(!allowed, "a review at creation: {message}");
    let spec = r["request"]["object"]["spec"].as_object_mut().unwrap();
    spec.remove("review");
    spec.remove("reviewNote");
    let (allowed, message, _) = admit(&state(true), r.clone()).await;
    assert!(allowed, "{message}");
    r["request"]["object"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("reason");
    let (allowed, message, _) = admit(&state(true), r).await;
    assert!(!allowed);
    assert!(message.contains("spec.reason"), "{message}");
}
