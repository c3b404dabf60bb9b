//! AdmissionReview in, AdmissionReview out: the glue between the pure cores
//! ([`super::inject`], [`super::approval`]) and the cluster reads.
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use streamgate_crds::AccessApproval;

use super::approval::{self, RequestUser};
use super::guard;
use super::inject::{self, InjectionInput, Outcome};
use super::lookup::ClusterLookup;
use crate::config::InjectorSettings;
use crate::metrics::Metrics;

/// Shared state of the webhook handlers.
#[derive(Debug)]
pub struct WebhookState<L> {
    pub settings: InjectorSettings,
    pub lookup: L,
    pub metrics: Arc<Metrics>,
}

fn user_of<T: kube::Resource>(req: &AdmissionRequest<T>) -> RequestUser {
    RequestUser {
        username: req.user_info.username.clone().unwrap_or_default(),
        groups: req.user_info.groups.clone().unwrap_or_default(),
        extra: req.user_info.extra.clone().unwrap_or_default(),
    }
}

/// Who creates this AccessApproval: the namespace's sidecar account (and
/// the pod its token is bound to), a cluster admin, or anyone else.
async fn creator_check<L: ClusterLookup>(
    state: &WebhookState<L>,
    new: &AccessApproval,
    user: &RequestUser,
    namespace: &str,
) -> Result<(), String> {
    use crate::session::verify::{EXTRA_POD_NAME, EXTRA_POD_UID};
    let sidecar = format!(
        "system:serviceaccount:{namespace}:{}",
        streamgate_crds::contract::SIDECAR_SERVICE_ACCOUNT
    );
    let mapping = &state.settings.approver_identity;
    let result = if user.username == sidecar {
        // The pod the sidecar serves: from a pod-bound token's user info
        // when there is one, else the request's own `spec.workload.pod`
        // (session tokens cannot be bound to the app's pod; they live only
        // in genuine sidecars' memory, which file for their own workload).
        let one = |k: &str| user.extra.get(k).and_then(|v| v.first()).cloned();
        let uid = one(EXTRA_POD_UID);
        let pod = one(EXTRA_POD_NAME).or_else(|| new.spec.workload.as_ref().map(|w| w.pod.clone()));
        let pod_sa = match &pod {
            Some(p) => state
                .lookup
                .pod_service_account(namespace, p, uid.as_deref())
                .await
                .map_err(|e| format!("streamgate: {e}"))?,
            None => None,
        };
        let issuers = state
            .lookup
            .trusted_issuers(namespace)
            .await
            .map_err(|e| format!("streamgate: {e}"))?;
        approval::check_creator(
            new,
            &approval::Creator::Sidecar {
                pod: pod.as_deref(),
                pod_service_account: pod_sa.as_deref(),
                trusted_issuers: &issuers,
            },
            namespace,
            mapping,
        )
    } else if user.groups.iter().any(|g| g == "system:masters") {
        approval::check_creator(new, &approval::Creator::ClusterAdmin, namespace, mapping)
    } else {
        approval::check_creator(new, &approval::Creator::Other(user), namespace, mapping)
    };
    result.map_err(|e| e.to_string())
}

fn with_warnings(mut resp: AdmissionResponse, warnings: Vec<String>) -> AdmissionResponse {
    if !warnings.is_empty() {
        resp.warnings = Some(warnings);
    }
    resp
}

/// Pod CREATE: inject the sidecar. Reads only (namespace labels, MaskingRules),
/// so a `dryRun` request is answered exactly like a real one and changes nothing.
pub async fn mutate_pod<L: ClusterLookup>(
    state: &WebhookState<L>,
    review: AdmissionReview<Pod>,
) -> AdmissionReview<DynamicObject> {
    observed(state, "inject", review, async |req| {
        mutate_pod_request(state, req).await
    })
    .await
}

/// Unwraps the review, answers its request with `handle` and records the
/// outcome and latency under `webhook`.
async fn observed<L: ClusterLookup, T: kube::Resource>(
    state: &WebhookState<L>,
    webhook: &'static str,
    review: AdmissionReview<T>,
    handle: impl AsyncFnOnce(&AdmissionRequest<T>) -> (AdmissionResponse, &'static str),
) -> AdmissionReview<DynamicObject> {
    let started = Instant::now();
    let req: AdmissionRequest<T> = match review.try_into() {
        Ok(r) => r,
        Err(_) => {
            return AdmissionResponse::invalid("AdmissionReview without a request").into_review();
        }
    };
    let (resp, outcome) = handle(&req).await;
    state
        .metrics
        .webhook_observed(webhook, outcome, started.elapsed());
    resp.into_review()
}

async fn mutate_pod_request<L: ClusterLookup>(
    state: &WebhookState<L>,
    req: &AdmissionRequest<Pod>,
) -> (AdmissionResponse, &'static str) {
    let resp = AdmissionResponse::from(req);
    let (Operation::Create, Some(pod)) = (&req.operation, req.object.as_ref()) else {
        return (resp, "ignored");
    };
    let namespace = req
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| "default".to_string());
    let labels = match state.lookup.namespace_labels(&namespace).await {
        Ok(l) => l,
        Err(e) => return (resp.deny(format!("streamgate: {e}")), "error"),
    };
    let masking_secrets = match state.lookup.masking_secrets(&namespace).await {
        Ok(s) => s,
        Err(e) => return (resp.deny(format!("streamgate: {e}")), "error"),
    };
    let input = InjectionInput {
        pod,
        namespace: &namespace,
        namespace_labels: &labels,
        masking_secrets: &masking_secrets,
    };
    match inject::plan(&input, &state.settings) {
        Ok(Outcome::Skip { reason, warnings }) => {
            tracing::debug!(namespace, reason = reason.as_str(), "pod not injected");
            (with_warnings(resp, warnings), reason.as_str())
        }
        Ok(Outcome::Inject { patch, warnings }) => match resp.clone().with_patch(patch) {
            Ok(r) => {
                tracing::info!(
                    namespace,
                    name = pod
                        .metadata
                        .name
                        .as_deref()
                        .or(pod.metadata.generate_name.as_deref()),
                    dry_run = req.dry_run,
                    "injecting sidecar"
                );
                (with_warnings(r, warnings), "injected")
            }
            Err(e) => (
                resp.deny(format!("streamgate: could not encode the patch: {e}")),
                "error",
            ),
        },
        Err(e) => (resp.deny(e.to_string()), "refused"),
    }
}

/// Pod CREATE/UPDATE and `pods/ephemeralcontainers`, validating: in governed
/// namespaces no pod gets around the sidecar ([`guard`]).
pub async fn validate_pod<L: ClusterLookup>(
    state: &WebhookState<L>,
    review: AdmissionReview<Pod>,
) -> AdmissionReview<DynamicObject> {
    observed(state, "pod-guard", review, async |req| {
        validate_pod_request(state, req).await
    })
    .await
}

async fn validate_pod_request<L: ClusterLookup>(
    state: &WebhookState<L>,
    req: &AdmissionRequest<Pod>,
) -> (AdmissionResponse, &'static str) {
    let resp = AdmissionResponse::from(req);
    let Some(pod) = req.object.as_ref() else {
        return (resp, "ignored");
    };
    let change = match (
        &req.operation,
        req.old_object.as_ref(),
        req.sub_resource.as_deref(),
    ) {
        (Operation::Create, _, None) => guard::Change::Create,
        (Operation::Update, Some(old), Some("ephemeralcontainers")) => {
            guard::Change::EphemeralContainers { old }
        }
        (Operation::Update, Some(old), None) => guard::Change::Update { old },
        _ => return (resp, "ignored"),
    };
    let namespace = req
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| "default".to_string());
    let labels = match state.lookup.namespace_labels(&namespace).await {
        Ok(l) => l,
        Err(e) => return (resp.deny(format!("streamgate: {e}")), "error"),
    };
    if !guard::governed(&namespace, &labels, &state.settings) {
        return (resp, "not_governed");
    }
    let masking_secrets = match state.lookup.masking_secrets(&namespace).await {
        Ok(s) => s,
        Err(e) => return (resp.deny(format!("streamgate: {e}")), "error"),
    };
    let refusals = guard::review(
        &guard::GuardInput {
            change,
            pod,
            namespace: &namespace,
            namespace_labels: &labels,
            masking_secrets: &masking_secrets,
        },
        &state.settings,
    );
    if refusals.is_empty() {
        return (resp, "allowed");
    }
    let user = user_of(req);
    tracing::warn!(
        namespace,
        user = user.username,
        pod = pod.metadata.name.as_deref().or(pod.metadata.generate_name.as_deref()),
        refusals = ?refusals,
        "pod refused by the streamgate guard"
    );
    (
        resp.deny(format!("streamgate: {}", refusals.join("; "))),
        "refused",
    )
}

/// AccessApproval CREATE/UPDATE, mutating: stamp `spec.decidedBy` from `userInfo`.
pub async fn mutate_approval<L: ClusterLookup>(
    state: &WebhookState<L>,
    review: AdmissionReview<AccessApproval>,
) -> AdmissionReview<DynamicObject> {
    observed(state, "approval-stamp", review, async |req| stamp(req)).await
}

fn stamp(req: &AdmissionRequest<AccessApproval>) -> (AdmissionResponse, &'static str) {
    let resp = AdmissionResponse::from(req);
    match (&req.operation, req.object.as_ref()) {
        (Operation::Update, Some(new)) => {
            match approval::stamp_decided_by(req.old_object.as_ref(), new, &user_of(req)) {
                Some(patch) => match resp.clone().with_patch(patch) {
                    Ok(r) => (r, "stamped"),
                    Err(e) => (
                        resp.deny(format!("streamgate: could not encode the patch: {e}")),
                        "error",
                    ),
                },
                None => (resp, "unchanged"),
            }
        }
        _ => (resp, "ignored"),
    }
}

/// AccessApproval CREATE/UPDATE, validating: who may decide, and decisions are final.
pub async fn validate_approval<L: ClusterLookup>(
    state: &WebhookState<L>,
    review: AdmissionReview<AccessApproval>,
) -> AdmissionReview<DynamicObject> {
    let started = Instant::now();
    let req: AdmissionRequest<AccessApproval> = match review.try_into() {
        Ok(r) => r,
        Err(_) => {
            return AdmissionResponse::invalid("AdmissionReview without a request").into_review();
        }
    };
    let resp = AdmissionResponse::from(&req);
    let Some(new) = req.object.as_ref() else {
        state
            .metrics
            .webhook_observed("approval-validate", "ignored", started.elapsed());
        return resp.into_review();
    };
    let namespace = req
        .namespace
        .clone()
        .or_else(|| new.metadata.namespace.clone())
        .unwrap_or_else(|| "default".to_string());
    let old = match req.operation {
        Operation::Update => req.old_object.as_ref(),
        Operation::Create => None,
        _ => {
            state
                .metrics
                .webhook_observed("approval-validate", "ignored", started.elapsed());
            return resp.into_review();
        }
    };
    // The policy is only needed when this request decides; read it lazily.
    let deciding = old.is_some_and(|o| o.spec.decision == streamgate_crds::Decision::Pending)
        && new.spec.decision != streamgate_crds::Decision::Pending;
    // …or reviews a break-glass use.
    let deciding =
        deciding || old.is_some_and(|o| o.spec.review.is_none()) && new.spec.review.is_some();
    let policy = if deciding {
        match state
            .lookup
            .stream_policy(&namespace, &new.spec.policy)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                state
                    .metrics
                    .webhook_observed("approval-validate", "error", started.elapsed());
                return resp.deny(format!("streamgate: {e}")).into_review();
            }
        }
    } else {
        None
    };
    let user = user_of(&req);
    if old.is_none() {
        if let Err(refused) = creator_check(state, new, &user, &namespace).await {
            tracing::info!(namespace, user = user.username, reason = %refused, "AccessApproval request refused");
            state
                .metrics
                .webhook_observed("approval-validate", "refused", started.elapsed());
            return resp.deny(refused).into_review();
        }
        // Status is the operator's (a subresource): a request never sets it.
        if new.status.is_some() {
            state
                .metrics
                .webhook_observed("approval-validate", "refused", started.elapsed());
            return resp
                .deny("streamgate: a new AccessApproval carries no status; the operator writes it")
                .into_review();
        }
    }
    let (resp, outcome) = match approval::validate_with_mapping(
        old,
        new,
        &user,
        &namespace,
        policy.as_ref(),
        &state.settings.approver_identity,
    ) {
        Ok(()) => (resp, "allowed"),
        Err(denied) => {
            tracing::info!(namespace, user = user.username, reason = %denied, "AccessApproval change refused");
            (resp.deny(denied.to_string()), "refused")
        }
    };
    state
        .metrics
        .webhook_observed("approval-validate", outcome, started.elapsed());
    resp.into_review()
}

/// The review as the API server's Go decoder expects it: `response.patch`
/// as a base64 string (Go's encoding of `[]byte`). kube serialises the bytes
/// as a JSON array of numbers; we send the canonical form instead.
pub fn to_wire(review: AdmissionReview<DynamicObject>) -> serde_json::Value {
    use base64::Engine as _;
    let mut value = match serde_json::to_value(&review) {
        Ok(v) => v,
        Err(e) => {
            return serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": "", "allowed": false, "status": {"message": format!("streamgate: {e}")}}});
        }
    };
    if let Some(patch) = review.response.as_ref().and_then(|r| r.patch.as_ref()) {
        value["response"]["patch"] =
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(patch));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_goes_on_the_wire_as_base64() {
        let req: AdmissionRequest<Pod> = serde_json::from_value::<AdmissionReview<Pod>>(serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
                "userInfo": {}, "object": null, "oldObject": null}}))
        .unwrap()
        .try_into()
        .unwrap();
        let patch: json_patch::Patch = serde_json::from_value(
            serde_json::json!([{"op": "add", "path": "/metadata/labels", "value": {}}]),
        )
        .unwrap();
        let review = AdmissionResponse::from(&req)
            .with_patch(patch)
            .unwrap()
            .into_review();
        let wire = to_wire(review);
        assert_eq!(wire["response"]["uid"], "u1");
        assert_eq!(wire["response"]["patchType"], "JSONPatch");
        let b64 = wire["response"]["patch"].as_str().unwrap();
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&decoded).unwrap(),
            serde_json::json!([{"op": "add", "path": "/metadata/labels", "value": {}}])
        );
    }
}
