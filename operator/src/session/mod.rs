//! Sidecar sessions: how an injected sidecar gets the broker credential and
//! its own API identity without either ever being reachable from the app.
//!
//! At start the sidecar POSTs to [`SESSION_PATH`] on the operator's HTTPS
//! port (the webhook listener), presenting the projected token only its own
//! mount carries (audience [`SIDECAR_TOKEN_AUDIENCE`]). The operator:
//!
//! 1. verifies the token with a TokenReview *for that audience* — the app's
//!    default token (audience: the API server) fails here;
//! 2. takes the pod from the token's user info (`pod-name`/`pod-uid`
//!    extras, set by the API server for tokens bound to a pod since 1.16);
//! 3. reads that pod back and requires the genuine injected sidecar in a
//!    governed namespace ([`verify::check_pod`], the pod guard's own check);
//!    a pod injected on request in a namespace that is not governed gets an
//!    API token but never a credential (its author could have written the
//!    "sidecar" themselves);
//! 4. answers with the namespace's broker credential, read from a Secret in
//!    the *operator's* namespace ([`credentials`]), and a short-lived token
//!    of the per-namespace `streamgate-sidecar` ServiceAccount (TokenRequest;
//!    it cannot be bound to the pod, which runs as the app's account), so
//!    the app's ServiceAccount needs no streamgate rights. The sidecar keeps both in memory and renews the
//!    token before it expires by opening a new session.
//!
//! Refusals are 401 (the token proves nothing) or 403 (this pod may not),
//! with the reason in `{"error": …}`; nothing secret is ever logged.
pub mod credentials;
pub mod verify;

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use streamgate_crds::contract::{
    SESSION_PATH, SIDECAR_SERVICE_ACCOUNT, SIDECAR_TOKEN_AUDIENCE, SidecarSession,
};

use crate::config::InjectorSettings;
use crate::webhook::lookup::{ClusterLookup, KubeLookup};
use credentials::CredentialSecrets;
use verify::SessionRefused;

/// What the session endpoint needs.
pub struct SessionState {
    pub client: Client,
    pub lookup: KubeLookup,
    pub settings: InjectorSettings,
    /// Namespace → credential Secret in `settings.operator_namespace`.
    pub credentials: CredentialSecrets,
    /// Lifetime of the `streamgate-sidecar` tokens handed out (≥ 600 s, the
    /// API server's minimum).
    pub token_seconds: i64,
}

impl std::fmt::Debug for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionState")
            .field("credentials", &self.credentials)
            .field("token_seconds", &self.token_seconds)
            .finish_non_exhaustive()
    }
}

/// The session route, merged into the webhook server's router.
pub fn router(state: Arc<SessionState>) -> axum::Router {
    axum::Router::new()
        .route(
            SESSION_PATH,
            post(
                |State(s): State<Arc<SessionState>>, headers: HeaderMap| async move {
                    match open(&s, &headers).await {
                        Ok(session) => (StatusCode::OK, Json(json!(session))),
                        Err(e) => (
                            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN),
                            Json(json!({ "error": format!("streamgate: {e}") })),
                        ),
                    }
                },
            ),
        )
        .with_state(state)
}

/// A refused or failed session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Refused(#[from] SessionRefused),
    #[error("{0}")]
    Credential(#[from] credentials::CredentialError),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Lookup(#[from] crate::webhook::lookup::LookupError),
    #[error("{0}")]
    Operator(String),
}

impl SessionError {
    fn status(&self) -> u16 {
        match self {
            SessionError::Refused(r) => r.status(),
            _ => 500,
        }
    }
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> SessionError {
    let what = what.into();
    move |source| SessionError::Kube { what, source }
}

async fn open(state: &SessionState, headers: &HeaderMap) -> Result<SidecarSession, SessionError> {
    let result = open_inner(state, headers).await;
    match &result {
        Ok(_) => {}
        Err(e) => tracing::warn!(reason = %e, "sidecar session refused"),
    }
    result
}

async fn open_inner(
    state: &SessionState,
    headers: &HeaderMap,
) -> Result<SidecarSession, SessionError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(SessionRefused::NoToken)?;
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: Some(vec![SIDECAR_TOKEN_AUDIENCE.to_string()]),
        },
        ..Default::default()
    };
    let reviewed = Api::<TokenReview>::all(state.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(kube_err("TokenReview"))?;
    let who = verify::identity(&reviewed.status.unwrap_or_default())?;
    let ns = who.namespace.clone();
    let pod = Api::<Pod>::namespaced(state.client.clone(), &ns)
        .get_opt(&who.pod_name)
        .await
        .map_err(kube_err(format!("reading pod {ns}/{}", who.pod_name)))?;
    let labels = state.lookup.namespace_labels(&ns).await?;
    let masking = state.lookup.masking_secrets(&ns).await?;
    let secret_name = state.credentials.secret_for(&ns);
    let trust = verify::check_pod(
        &who,
        pod.as_ref(),
        &labels,
        &masking,
        &state.settings,
        secret_name.is_some(),
    )?;

    let credentials = match (trust, secret_name) {
        (verify::PodTrust::OptedIn, _) | (_, None) => None,
        (verify::PodTrust::Genuine, Some(name)) => {
            let op_ns = &state.settings.operator_namespace;
            let secret = Api::<Secret>::namespaced(state.client.clone(), op_ns)
                .get_opt(name)
                .await
                .map_err(kube_err(format!("reading Secret {op_ns}/{name}")))?
                .ok_or_else(|| {
                    SessionError::Operator(format!(
                        "the broker credential Secret {op_ns}/{name} for namespace {ns} does not exist"
                    ))
                })?;
            let key = streamgate_crds::contract::UPSTREAM_CREDENTIALS_KEY;
            let value = secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| b.0.as_slice());
            Some(credentials::parse_secret_value(op_ns, name, value)?)
        }
    };

    // The account and its binding, now: the namespace's first sidecar
    // should not wait for the leader's next RBAC sync.
    crate::rbac::ensure_namespace(state.client.clone(), &ns)
        .await
        .map_err(|e| SessionError::Operator(e.to_string()))?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(state.token_seconds.max(600)),
            // Not bound to the pod: the API server binds a token only to a
            // pod running as the token's own ServiceAccount ("cannot bind
            // token … to pod running with different serviceaccount name"),
            // and the pod runs as the app's. The token is short-lived
            // instead (renewed by the sidecar through new sessions, which
            // need the live pod), and exists only in the sidecar's memory.
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let minted = Api::<ServiceAccount>::namespaced(state.client.clone(), &ns)
        .create_token_request(SIDECAR_SERVICE_ACCOUNT, &PostParams::default(), &request)
        .await
        .map_err(kube_err(format!(
            "TokenRequest for {ns}/{SIDECAR_SERVICE_ACCOUNT}"
        )))?;
    let status = minted.status.ok_or_else(|| {
        SessionError::Operator("the TokenRequest answer has no status".to_string())
    })?;
    tracing::info!(
        namespace = ns,
        pod = who.pod_name,
        credential = credentials.is_some(),
        "sidecar session opened"
    );
    Ok(SidecarSession {
        credentials,
        kube_token: status.token,
        kube_token_expires: status.expiration_timestamp.0.to_string(),
    })
}
