//! Per-namespace RBAC for sidecars: in each namespace with injected pods, a
//! ServiceAccount `streamgate-sidecar` (the sidecar's own identity; its
//! tokens are minted by the operator's session endpoint, bound to one pod,
//! and never mounted into the app) and one RoleBinding `streamgate-sidecar`
//! binding the ClusterRole `streamgate-sidecar` (watch the three kinds,
//! create AccessApprovals and Events — defined by the chart) to exactly that
//! ServiceAccount. The app's ServiceAccount gets no streamgate rights. Both
//! carry our label; the binding is owned (ownerReference) by the account, so
//! removing the account removes the binding. The binding goes when the last
//! injected pod of the namespace goes.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use streamgate_crds::contract::SIDECAR_SERVICE_ACCOUNT;

use crate::FIELD_MANAGER;

/// Name of both the ClusterRole (chart) and the RoleBindings (operator).
pub const SIDECAR_ROLE: &str = "streamgate-sidecar";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "streamgate-operator");

fn our_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())])
}

fn labelled(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels.and_then(|l| l.get(MANAGED_BY.0)).map(String::as_str) == Some(MANAGED_BY.1)
}

/// Namespaces with live injected pods.
pub fn desired(pods: &[std::sync::Arc<Pod>]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        // The `injected` label is the pod author's to set: only a pod that
        // carries the sidecar container counts.
        let has_sidecar = pod.spec.as_ref().is_some_and(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .any(|c| c.name == crate::config::SIDECAR_NAME)
        });
        if !has_sidecar {
            continue;
        }
        if let Some(ns) = pod.metadata.namespace.clone() {
            out.insert(ns);
        }
    }
    out
}

/// A ServiceAccount `streamgate-sidecar` not made by us (no label) is never
/// taken over: its tokens may be someone else's to mint.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(
        "a ServiceAccount {SIDECAR_SERVICE_ACCOUNT} not managed by streamgate exists in {0}; remove it so the operator can create its own"
    )]
    NotOurs(String),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// The sidecar ServiceAccount of `namespace`, created if absent.
pub async fn ensure_sidecar_account(
    client: Client,
    namespace: &str,
) -> Result<ServiceAccount, AccountError> {
    let api: Api<ServiceAccount> = Api::namespaced(client, namespace);
    if let Some(sa) = api.get_opt(SIDECAR_SERVICE_ACCOUNT).await? {
        if !labelled(sa.metadata.labels.as_ref()) {
            return Err(AccountError::NotOurs(namespace.to_string()));
        }
        return Ok(sa);
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(SIDECAR_SERVICE_ACCOUNT.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(our_labels()),
            ..Default::default()
        },
        // Its tokens come from the operator's TokenRequest only.
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &sa).await {
        Ok(sa) => Ok(sa),
        // Another replica (or the sync loop) made it first.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let sa = api.get(SIDECAR_SERVICE_ACCOUNT).await?;
            if !labelled(sa.metadata.labels.as_ref()) {
                return Err(AccountError::NotOurs(namespace.to_string()));
            }
            Ok(sa)
        }
        Err(e) => Err(e.into()),
    }
}

/// The RoleBinding for one namespace, owned by its sidecar ServiceAccount.
pub fn role_binding(namespace: &str, account_uid: &str) -> RoleBinding {
    RoleBinding {
        metadata: ObjectMeta {
            name: Some(SIDECAR_ROLE.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(our_labels()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".to_string(),
                kind: "ServiceAccount".to_string(),
                name: SIDECAR_SERVICE_ACCOUNT.to_string(),
                uid: account_uid.to_string(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_string(),
            kind: "ClusterRole".to_string(),
            name: SIDECAR_ROLE.to_string(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name: SIDECAR_SERVICE_ACCOUNT.to_string(),
            namespace: Some(namespace.to_string()),
            api_group: None,
        }]),
    }
}

/// Make sure `namespace` has the sidecar account and its binding (the
/// session endpoint calls this too, so a namespace's first sidecar need not
/// wait for the next sync).
pub async fn ensure_namespace(client: Client, namespace: &str) -> Result<(), AccountError> {
    let sa = ensure_sidecar_account(client.clone(), namespace).await?;
    let api: Api<RoleBinding> = Api::namespaced(client, namespace);
    // Never take over a binding of that name someone else made: forcing
    // our apply onto it would rewrite a binding we do not own.
    if api
        .get_opt(SIDECAR_ROLE)
        .await?
        .is_some_and(|existing| !owned(&existing))
    {
        tracing::warn!(
            namespace,
            "a RoleBinding {SIDECAR_ROLE} not managed by streamgate exists; leaving it alone \
             (sidecars in this namespace get no API rights until it is removed)"
        );
        return Ok(());
    }
    let rb = role_binding(namespace, sa.metadata.uid.as_deref().unwrap_or_default());
    let mut body = serde_json::to_value(&rb).map_err(kube::Error::SerdeError)?;
    body["apiVersion"] = "rbac.authorization.k8s.io/v1".into();
    body["kind"] = "RoleBinding".into();
    api.patch(
        SIDECAR_ROLE,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Ours: our label *and* the sidecar ClusterRole — a label alone is
/// anyone's to set, so it never makes a binding ours to rewrite or delete.
fn owned(rb: &RoleBinding) -> bool {
    labelled(rb.metadata.labels.as_ref())
        && rb.role_ref.kind == "ClusterRole"
        && rb.role_ref.name == SIDECAR_ROLE
}

/// Converge the cluster's streamgate RoleBindings to `desired`.
pub async fn sync(client: Client, desired: &BTreeSet<String>) -> Result<(), AccountError> {
    for ns in desired {
        if let Err(e) = ensure_namespace(client.clone(), ns).await {
            tracing::warn!(namespace = ns, error = %e, "sidecar RBAC not converged");
        }
    }
    let all: Api<RoleBinding> = Api::all(client.clone());
    let existing = all
        .list(&ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)))
        .await?;
    for rb in existing.items {
        let Some(ns) = rb.metadata.namespace.clone() else {
            continue;
        };
        if rb.metadata.name.as_deref() == Some(SIDECAR_ROLE) && owned(&rb) && !desired.contains(&ns)
        {
            tracing::info!(
                namespace = ns,
                "no injected pods left: removing the sidecar RoleBinding"
            );
            let api: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
            api.delete(SIDECAR_ROLE, &DeleteParams::default()).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn pod(ns: &str, sa: Option<&str>, deleting: bool) -> Arc<Pod> {
        let mut v = serde_json::json!({"metadata": {"namespace": ns, "name": "p"},
            "spec": {"containers": [{"name": "streamgate-proxy"}, {"name": "app"}]}});
        if let Some(sa) = sa {
            v["spec"]["serviceAccountName"] = sa.into();
        }
        if deleting {
            v["metadata"]["deletionTimestamp"] = "2026-11-27T05:00:00Z".into();
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn a_pod_labelled_injected_without_the_sidecar_earns_nothing() {
        let mut v = serde_json::to_value(&*pod("clinical", Some("intruder"), false)).unwrap();
        v["spec"]["containers"] = serde_json::json!([{"name": "app"}]);
        let labelled_only: Arc<Pod> = Arc::new(serde_json::from_value(v).unwrap());
        assert!(desired(&[labelled_only]).is_empty());
    }

    #[test]
    fn only_our_label_with_our_role_is_ours() {
        let ours = role_binding("clinical", "uid-1");
        assert!(owned(&ours));
        let mut relabelled = ours.clone();
        relabelled.role_ref.name = "admin".into();
        assert!(
            !owned(&relabelled),
            "a binding to another role is never ours, label or not"
        );
        let mut unlabelled = ours;
        unlabelled.metadata.labels = None;
        assert!(!owned(&unlabelled));
    }

    #[test]
    fn the_binding_names_only_the_sidecar_account_never_the_apps() {
        let pods = vec![
            pod("clinical", Some("intake"), false),
            pod("clinical", None, false),
            pod("billing", Some("billing-app"), true),
        ];
        let d = desired(&pods);
        assert_eq!(
            d.into_iter().collect::<Vec<_>>(),
            vec!["clinical".to_string()],
            "a namespace whose only pod is terminating gets no binding"
        );
        let rb = role_binding("clinical", "uid-1");
        assert_eq!(rb.role_ref.kind, "ClusterRole");
        assert_eq!(rb.role_ref.name, "streamgate-sidecar");
        let subjects = rb.subjects.unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, SIDECAR_SERVICE_ACCOUNT);
        assert_eq!(subjects[0].namespace.as_deref(), Some("clinical"));
        let owner = &rb.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("ServiceAccount", "uid-1")
        );
    }
}
