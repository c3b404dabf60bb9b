//! Per-namespace RBAC for injected pods: one RoleBinding named
//! `streamgate-sidecar` in each namespace with injected pods, binding the
//! ClusterRole `streamgate-sidecar` (watch the three kinds, create
//! AccessApprovals and Events — defined by the chart) to exactly the
//! ServiceAccounts of those pods. Removed when the last injected pod goes.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};

use crate::FIELD_MANAGER;

/// Name of both the ClusterRole (chart) and the RoleBindings (operator).
pub const SIDECAR_ROLE: &str = "streamgate-sidecar";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "streamgate-operator");

/// Namespace → ServiceAccounts of its live injected pods.
pub fn desired(pods: &[std::sync::Arc<Pod>]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        // The `injected` label is the pod author's to set: only a pod that
        // carries the sidecar container earns its ServiceAccount the role.
        let has_sidecar = pod.spec.as_ref().is_some_and(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .any(|c| c.name == crate::config::SIDECAR_NAME)
        });
        if !has_sidecar {
            continue;
        }
        let Some(ns) = pod.metadata.namespace.clone() else {
            continue;
        };
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_string());
        out.entry(ns).or_default().insert(sa);
    }
    out
}

/// The RoleBinding for one namespace.
pub fn role_binding(namespace: &str, service_accounts: &BTreeSet<String>) -> RoleBinding {
    RoleBinding {
        metadata: ObjectMeta {
            name: Some(SIDECAR_ROLE.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.0.to_string(),
                MANAGED_BY.1.to_string(),
            )])),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_string(),
            kind: "ClusterRole".to_string(),
            name: SIDECAR_ROLE.to_string(),
        },
        subjects: Some(
            service_accounts
                .iter()
                .map(|sa| Subject {
                    kind: "ServiceAccount".to_string(),
                    name: sa.clone(),
                    namespace: Some(namespace.to_string()),
                    api_group: None,
                })
                .collect(),
        ),
    }
}

/// Converge the cluster's streamgate RoleBindings to `desired`.
/// Ours: our label *and* the sidecar ClusterRole — a label alone is
/// anyone's to set, so it never makes a binding ours to rewrite or delete.
fn owned(rb: &RoleBinding) -> bool {
    let labelled = rb
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY.0))
        .map(String::as_str)
        == Some(MANAGED_BY.1);
    labelled && rb.role_ref.kind == "ClusterRole" && rb.role_ref.name == SIDECAR_ROLE
}

pub async fn sync(
    client: Client,
    desired: &BTreeMap<String, BTreeSet<String>>,
) -> Result<(), kube::Error> {
    for (ns, sas) in desired {
        let api: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
        // Never take over a binding of that name someone else made: forcing
        // our apply onto it would rewrite a binding we do not own.
        if api
            .get_opt(SIDECAR_ROLE)
            .await?
            .is_some_and(|existing| !owned(&existing))
        {
            tracing::warn!(
                namespace = ns,
                "a RoleBinding {SIDECAR_ROLE} not managed by streamgate exists; leaving it alone \
                 (sidecars in this namespace get no API rights until it is removed)"
            );
            continue;
        }
        let rb = role_binding(ns, sas);
        let mut body = serde_json::to_value(&rb).map_err(kube::Error::SerdeError)?;
        body["apiVersion"] = "rbac.authorization.k8s.io/v1".into();
        body["kind"] = "RoleBinding".into();
        api.patch(
            SIDECAR_ROLE,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    }
    let all: Api<RoleBinding> = Api::all(client.clone());
    let existing = all
        .list(&ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)))
        .await?;
    for rb in existing.items {
        let Some(ns) = rb.metadata.namespace.clone() else {
            continue;
        };
        if rb.metadata.name.as_deref() == Some(SIDECAR_ROLE)
            && owned(&rb)
            && !desired.contains_key(&ns)
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
        let ours = role_binding("clinical", &BTreeSet::from(["a".to_string()]));
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
    fn bindings_follow_live_injected_pods() {
        let pods = vec![
            pod("clinical", Some("intake"), false),
            pod("clinical", None, false),
            pod("billing", Some("billing-app"), true),
        ];
        let d = desired(&pods);
        assert_eq!(
            d.len(),
            1,
            "a namespace whose only pod is terminating gets no binding"
        );
        let sas: Vec<_> = d["clinical"].iter().cloned().collect();
        assert_eq!(sas, vec!["default".to_string(), "intake".to_string()]);
        let rb = role_binding("clinical", &d["clinical"]);
        assert_eq!(rb.role_ref.kind, "ClusterRole");
        assert_eq!(rb.role_ref.name, "streamgate-sidecar");
        let subjects = rb.subjects.unwrap();
        assert!(
            subjects
                .iter()
                .all(|s| s.kind == "ServiceAccount" && s.namespace.as_deref() == Some("clinical"))
        );
    }
}
