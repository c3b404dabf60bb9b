//! The pure half of a sidecar session: who the token says is asking, and
//! whether that pod may have the namespace's broker credential. No IO.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::authentication::v1::TokenReviewStatus;
use k8s_openapi::api::core::v1::Pod;
use streamgate_crds::contract::SIDECAR_TOKEN_AUDIENCE;

use crate::config::{InjectorSettings, SIDECAR_NAME};
use crate::webhook::guard;

/// `userInfo.extra` keys the API server sets for a token bound to a pod.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// The pod a verified sidecar token is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarIdentity {
    pub namespace: String,
    pub service_account: String,
    pub pod_name: String,
    pub pod_uid: String,
}

/// Why a session is refused. Messages say what and why; none quotes the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionRefused {
    #[error(
        "no bearer token: present the sidecar's projected token (audience {SIDECAR_TOKEN_AUDIENCE})"
    )]
    NoToken,
    #[error(
        "the token is not valid for audience {SIDECAR_TOKEN_AUDIENCE} ({0}); only the sidecar's own projected token is accepted, never the app's ServiceAccount token"
    )]
    NotAuthenticated(String),
    #[error(
        "the token's audiences {0:?} do not include {SIDECAR_TOKEN_AUDIENCE}; only the sidecar's own projected token is accepted"
    )]
    WrongAudience(Vec<String>),
    #[error("the token belongs to {0:?}, not a ServiceAccount")]
    NotServiceAccount(String),
    #[error(
        "the token of {0} is not bound to a pod (no {EXTRA_POD_NAME}/{EXTRA_POD_UID}); only a projected token of an injected pod is accepted"
    )]
    NotBoundToPod(String),
    #[error(
        "the token is bound to pod {namespace}/{name}, which no longer exists (or was replaced)"
    )]
    PodGone { namespace: String, name: String },
    #[error(
        "pod {namespace}/{name} runs as ServiceAccount {pod_sa:?} but the token is of {token_sa:?}"
    )]
    ServiceAccountMismatch {
        namespace: String,
        name: String,
        pod_sa: String,
        token_sa: String,
    },
    #[error(
        "namespace {0} has a broker credential configured but is not governed by streamgate (not labelled streamgate.dev/inject=enabled, or exempted): the credential is handed only to genuine sidecars of governed namespaces"
    )]
    NotGoverned(String),
    #[error("pod {namespace}/{name} carries no {SIDECAR_NAME} sidecar")]
    NotInjected { namespace: String, name: String },
    #[error("pod {namespace}/{name} does not carry the genuine streamgate sidecar: {why}")]
    NotGenuine {
        namespace: String,
        name: String,
        why: String,
    },
}

impl SessionRefused {
    /// 401 for a token that proves nothing, 403 for a pod that may not have a session.
    pub fn status(&self) -> u16 {
        match self {
            SessionRefused::NoToken
            | SessionRefused::NotAuthenticated(_)
            | SessionRefused::WrongAudience(_)
            | SessionRefused::NotServiceAccount(_)
            | SessionRefused::NotBoundToPod(_) => 401,
            _ => 403,
        }
    }
}

/// The pod a TokenReview (made with audience [`SIDECAR_TOKEN_AUDIENCE`])
/// vouches for. The audience is checked again here: an API server that
/// ignored `spec.audiences` must not turn the app's token into a session.
pub fn identity(status: &TokenReviewStatus) -> Result<SidecarIdentity, SessionRefused> {
    if status.authenticated != Some(true) {
        return Err(SessionRefused::NotAuthenticated(
            status
                .error
                .clone()
                .unwrap_or_else(|| "not authenticated".to_string()),
        ));
    }
    let audiences = status.audiences.clone().unwrap_or_default();
    if !audiences.iter().any(|a| a == SIDECAR_TOKEN_AUDIENCE) {
        return Err(SessionRefused::WrongAudience(audiences));
    }
    let user = status.user.clone().unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let Some((namespace, service_account)) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    else {
        return Err(SessionRefused::NotServiceAccount(username));
    };
    let extra = user.extra.unwrap_or_default();
    let one = |key: &str| {
        extra
            .get(key)
            .and_then(|v| v.first())
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let (Some(pod_name), Some(pod_uid)) = (one(EXTRA_POD_NAME), one(EXTRA_POD_UID)) else {
        return Err(SessionRefused::NotBoundToPod(username.clone()));
    };
    Ok(SidecarIdentity {
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        pod_name,
        pod_uid,
    })
}

/// How far a pod is trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodTrust {
    /// A governed namespace and exactly the injected sidecar: may have the
    /// namespace's broker credential.
    Genuine,
    /// A namespace that is not governed, its pod injected on request
    /// (`streamgate.dev/inject: "true"`): nothing stops the author writing
    /// the sidecar themselves, so it gets an API token (the sidecar role's
    /// rights, requests checked by the approval webhook) but never a credential.
    OptedIn,
}

/// May this pod (read back from the API server) have a session? It must be
/// the very pod the token is bound to and carry a sidecar; in a governed
/// namespace exactly the one the injector builds for it (the pod guard's
/// check). `has_credential`: the operator's config names a broker credential
/// for the namespace — then the namespace must be governed.
pub fn check_pod(
    who: &SidecarIdentity,
    pod: Option<&Pod>,
    namespace_labels: &BTreeMap<String, String>,
    masking_secrets: &BTreeSet<String>,
    settings: &InjectorSettings,
    has_credential: bool,
) -> Result<PodTrust, SessionRefused> {
    let (namespace, name) = (who.namespace.clone(), who.pod_name.clone());
    let Some(pod) = pod.filter(|p| p.metadata.uid.as_deref() == Some(who.pod_uid.as_str())) else {
        return Err(SessionRefused::PodGone { namespace, name });
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let pod_sa = spec
        .service_account_name
        .clone()
        .unwrap_or_else(|| "default".to_string());
    if pod_sa != who.service_account {
        return Err(SessionRefused::ServiceAccountMismatch {
            namespace,
            name,
            pod_sa,
            token_sa: who.service_account.clone(),
        });
    }
    let has_sidecar = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == SIDECAR_NAME);
    if !has_sidecar {
        return Err(SessionRefused::NotInjected { namespace, name });
    }
    if !guard::governed(&who.namespace, namespace_labels, settings) {
        if has_credential {
            return Err(SessionRefused::NotGoverned(namespace));
        }
        return Ok(PodTrust::OptedIn);
    }
    let refusals = guard::review(
        &guard::GuardInput {
            change: guard::Change::Create,
            pod,
            namespace: &who.namespace,
            namespace_labels,
            masking_secrets,
        },
        settings,
    );
    if !refusals.is_empty() {
        return Err(SessionRefused::NotGenuine {
            namespace,
            name,
            why: refusals.join("; "),
        });
    }
    Ok(PodTrust::Genuine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(v: serde_json::Value) -> TokenReviewStatus {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_bound_sidecar_token_names_its_pod() {
        let s = status(
            json!({"authenticated": true, "audiences": [SIDECAR_TOKEN_AUDIENCE],
            "user": {"username": "system:serviceaccount:clinical:intake",
                "extra": {EXTRA_POD_NAME: ["intake-1"], EXTRA_POD_UID: ["u-1"]}}}),
        );
        assert_eq!(
            identity(&s).unwrap(),
            SidecarIdentity {
                namespace: "clinical".into(),
                service_account: "intake".into(),
                pod_name: "intake-1".into(),
                pod_uid: "u-1".into()
            }
        );
    }

    #[test]
    fn unauthenticated_wrong_audience_unbound_and_users_are_refused() {
        let e = identity(&status(json!({"authenticated": false, "error": "token audiences [\"https://kubernetes.default.svc\"] is invalid"}))).unwrap_err();
        assert!(matches!(e, SessionRefused::NotAuthenticated(_)), "{e}");
        assert_eq!(e.status(), 401);
        let e = identity(&status(
            json!({"authenticated": true, "audiences": ["https://kubernetes.default.svc"],
            "user": {"username": "system:serviceaccount:clinical:intake"}}),
        ))
        .unwrap_err();
        assert!(matches!(e, SessionRefused::WrongAudience(_)), "{e}");
        let e = identity(&status(
            json!({"authenticated": true, "audiences": [SIDECAR_TOKEN_AUDIENCE],
            "user": {"username": "system:serviceaccount:clinical:intake"}}),
        ))
        .unwrap_err();
        assert!(matches!(e, SessionRefused::NotBoundToPod(_)), "{e}");
        let e = identity(&status(
            json!({"authenticated": true, "audiences": [SIDECAR_TOKEN_AUDIENCE],
            "user": {"username": "mallory"}}),
        ))
        .unwrap_err();
        assert!(matches!(e, SessionRefused::NotServiceAccount(_)), "{e}");
    }

    fn who() -> SidecarIdentity {
        SidecarIdentity {
            namespace: "clinical".into(),
            service_account: "default".into(),
            pod_name: "p".into(),
            pod_uid: "u-1".into(),
        }
    }

    fn governed() -> BTreeMap<String, String> {
        BTreeMap::from([("streamgate.dev/inject".to_string(), "enabled".to_string())])
    }

    #[test]
    fn a_pod_without_the_sidecar_or_in_an_ungoverned_namespace_is_refused() {
        let pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "clinical", "uid": "u-1"},
            "spec": {"containers": [{"name": "app", "image": "x"}]}}),
        )
        .unwrap();
        let settings = InjectorSettings::default();
        let none = BTreeSet::new();
        let e = check_pod(&who(), Some(&pod), &governed(), &none, &settings, true).unwrap_err();
        assert!(matches!(e, SessionRefused::NotInjected { .. }), "{e}");
        let e = check_pod(&who(), None, &governed(), &none, &settings, true).unwrap_err();
        assert!(matches!(e, SessionRefused::PodGone { .. }), "{e}");
        let mut replaced = pod.clone();
        replaced.metadata.uid = Some("u-2".into());
        let e =
            check_pod(&who(), Some(&replaced), &governed(), &none, &settings, true).unwrap_err();
        assert!(matches!(e, SessionRefused::PodGone { .. }), "{e}");
    }

    #[test]
    fn an_author_written_sidecar_is_not_genuine() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "clinical", "uid": "u-1",
                "annotations": {"streamgate.dev/injected": "true"}},
            "spec": {"containers": [{"name": "streamgate-proxy", "image": "evil"}, {"name": "app", "image": "x"}]}}))
        .unwrap();
        let settings = InjectorSettings {
            default_upstream: Some("kafka:9092".into()),
            ..Default::default()
        };
        let none = BTreeSet::new();
        let e = check_pod(&who(), Some(&pod), &governed(), &none, &settings, true).unwrap_err();
        assert!(matches!(e, SessionRefused::NotGenuine { .. }), "{e}");
        // Outside a governed namespace: an API token, never a credential.
        let ungoverned = BTreeMap::new();
        assert_eq!(
            check_pod(&who(), Some(&pod), &ungoverned, &none, &settings, false),
            Ok(PodTrust::OptedIn)
        );
        let e = check_pod(&who(), Some(&pod), &ungoverned, &none, &settings, true).unwrap_err();
        assert!(matches!(e, SessionRefused::NotGoverned(_)), "{e}");
    }
}
