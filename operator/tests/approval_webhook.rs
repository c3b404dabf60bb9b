//! AccessApproval admission: the mutating stamp and the validating checks,
//! run in the order the API server runs them, on real AdmissionReview JSON
//! (a `kubectl patch` of `spec.decision`, see tests/golden/approval/).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use kube::core::admission::AdmissionReview;
use serde_json::{Value, json};
use streamgate_crds::{AccessApproval, StreamPolicy};
use streamgate_operator::config::InjectorSettings;
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
    let mut lookup = StaticLookup::default();
    if with_policy {
        let policy: StreamPolicy =
            serde_json::from_value(fixture("phi-access.policy.json")).unwrap();
        lookup.policies.push(policy);
    }
    WebhookState {
        settings: InjectorSettings::default(),
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
        "AccessApproval write-patient-records-alice-7f3c9: alice@example.com is the requester and cannot decide their own request; ask one of the rule's approvers"
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
        "system:serviceaccount:clinical:intake",
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
    let mut r = review();
    r["request"]["operation"] = json!("CREATE");
    r["request"]["oldObject"] = Value::Null;
    r["request"]["object"]["spec"]["decision"] = json!("Approved");
    let r = as_user(
        r,
        "system:serviceaccount:clinical:intake",
        &["system:serviceaccounts"],
    );
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
    let mut r = review();
    r["request"]["operation"] = json!("CREATE");
    r["request"]["oldObject"] = Value::Null;
    r["request"]["object"]["spec"]["decision"] = json!("Pending");
    r["request"]["object"]["spec"]["duration"] = json!("forever");
    let r = as_user(
        r,
        "system:serviceaccount:clinical:intake",
        &["system:serviceaccounts"],
    );
    let (allowed, message, _) = validate_only(&state(true), r).await;
    assert!(!allowed);
    assert!(message.contains("is not a valid request"), "{message}");
    assert!(message.contains("spec.duration"), "{message}");
}
