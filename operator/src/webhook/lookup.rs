//! What the webhooks read from the cluster, behind a trait so the handlers
//! run against a fixed map in tests and the API server in production.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;
use kube::{Api, Client};
use streamgate_crds::{MaskingRule, StreamPolicy};

/// A failed read.
#[derive(Debug, thiserror::Error)]
#[error("could not read {what}: {source}")]
pub struct LookupError {
    pub what: String,
    #[source]
    pub source: kube::Error,
}

/// Cluster reads the webhooks need.
pub trait ClusterLookup: Send + Sync + 'static {
    /// The labels of a namespace (empty when it has none).
    fn namespace_labels(
        &self,
        ns: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, LookupError>> + Send;
    /// Secret names the namespace's MaskingRules use as hash keys.
    fn masking_secrets(
        &self,
        ns: &str,
    ) -> impl Future<Output = Result<BTreeSet<String>, LookupError>> + Send;
    /// A StreamPolicy by name, `None` when absent.
    fn stream_policy(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<StreamPolicy>, LookupError>> + Send;
    /// The ServiceAccount of pod `name`, if it exists (with uid `uid`, when given)
    /// and carries the streamgate sidecar.
    fn pod_service_account(
        &self,
        ns: &str,
        name: &str,
        uid: Option<&str>,
    ) -> impl Future<Output = Result<Option<String>, LookupError>> + Send;
    /// OIDC issuers the namespace's StreamPolicies trust.
    fn trusted_issuers(
        &self,
        ns: &str,
    ) -> impl Future<Output = Result<BTreeSet<String>, LookupError>> + Send;
}

fn issuers_of(policies: &[StreamPolicy]) -> BTreeSet<String> {
    policies
        .iter()
        .filter_map(|p| p.spec.identity.oidc.as_ref())
        .map(|o| o.issuer.clone())
        .collect()
}

/// When a namespace's labels were read, and what they were.
type CachedLabels = (Instant, BTreeMap<String, String>);

/// Reads from the API server; namespace labels are cached briefly because
/// every pod CREATE needs them and they rarely change.
pub struct KubeLookup {
    client: Client,
    ttl: Duration,
    namespaces: Mutex<HashMap<String, CachedLabels>>,
}

impl std::fmt::Debug for KubeLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLookup")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl KubeLookup {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            ttl: Duration::from_secs(30),
            namespaces: Mutex::new(HashMap::new()),
        }
    }

    /// Every `K` in `ns`; `what` names them in the error.
    async fn list_in<K>(&self, ns: &str, what: &str) -> Result<Vec<K>, LookupError>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        api.list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(|source| LookupError {
                what: format!("{what} in {ns}"),
                source,
            })
    }
}

impl ClusterLookup for KubeLookup {
    async fn namespace_labels(&self, ns: &str) -> Result<BTreeMap<String, String>, LookupError> {
        if let Ok(cache) = self.namespaces.lock()
            && let Some((at, labels)) = cache.get(ns)
            && at.elapsed() < self.ttl
        {
            return Ok(labels.clone());
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        let got = api.get(ns).await.map_err(|source| LookupError {
            what: format!("namespace {ns}"),
            source,
        })?;
        let labels = got.metadata.labels.unwrap_or_default();
        if let Ok(mut cache) = self.namespaces.lock() {
            cache.insert(ns.to_string(), (Instant::now(), labels.clone()));
        }
        Ok(labels)
    }

    async fn masking_secrets(&self, ns: &str) -> Result<BTreeSet<String>, LookupError> {
        let rules: Vec<MaskingRule> = self.list_in(ns, "MaskingRules").await?;
        Ok(rules
            .into_iter()
            // The pseudonym key and the patient key are mounted (and guarded) alike.
            .flat_map(|mr| [mr.spec.hash_key_secret_ref, mr.spec.patient_key_secret_ref])
            .flatten()
            .map(|r| r.name)
            .collect())
    }

    async fn stream_policy(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<StreamPolicy>, LookupError> {
        let api: Api<StreamPolicy> = Api::namespaced(self.client.clone(), ns);
        api.get_opt(name).await.map_err(|source| LookupError {
            what: format!("StreamPolicy {ns}/{name}"),
            source,
        })
    }

    async fn pod_service_account(
        &self,
        ns: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Option<String>, LookupError> {
        let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(self.client.clone(), ns);
        let pod = api.get_opt(name).await.map_err(|source| LookupError {
            what: format!("pod {ns}/{name}"),
            source,
        })?;
        Ok(pod
            .filter(|p| uid.is_none() || p.metadata.uid.as_deref() == uid)
            .filter(|p| {
                p.spec.as_ref().is_some_and(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                        .any(|c| c.name == crate::config::SIDECAR_NAME)
                })
            })
            .map(|p| {
                p.spec
                    .and_then(|s| s.service_account_name)
                    .unwrap_or_else(|| "default".to_string())
            }))
    }

    async fn trusted_issuers(&self, ns: &str) -> Result<BTreeSet<String>, LookupError> {
        let policies: Vec<StreamPolicy> = self.list_in(ns, "StreamPolicies").await?;
        Ok(issuers_of(&policies))
    }
}

/// A fixed view of the cluster (tests, and `--offline` dry runs).
#[derive(Debug, Default, Clone)]
pub struct StaticLookup {
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    pub masking_secrets: BTreeMap<String, BTreeSet<String>>,
    pub policies: Vec<StreamPolicy>,
    /// (namespace, pod name, pod uid) → ServiceAccount of injected pods.
    pub pods: BTreeMap<(String, String, String), String>,
}

impl ClusterLookup for StaticLookup {
    async fn namespace_labels(&self, ns: &str) -> Result<BTreeMap<String, String>, LookupError> {
        Ok(self.namespace_labels.get(ns).cloned().unwrap_or_default())
    }

    async fn masking_secrets(&self, ns: &str) -> Result<BTreeSet<String>, LookupError> {
        Ok(self.masking_secrets.get(ns).cloned().unwrap_or_default())
    }

    async fn stream_policy(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<StreamPolicy>, LookupError> {
        Ok(self
            .policies
            .iter()
            .find(|p| {
                p.metadata.namespace.as_deref() == Some(ns)
                    && p.metadata.name.as_deref() == Some(name)
            })
            .cloned())
    }

    async fn pod_service_account(
        &self,
        ns: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Option<String>, LookupError> {
        Ok(self
            .pods
            .iter()
            .find(|((n, p, u), _)| n == ns && p == name && uid.is_none_or(|uid| uid == u))
            .map(|(_, sa)| sa.clone()))
    }

    async fn trusted_issuers(&self, ns: &str) -> Result<BTreeSet<String>, LookupError> {
        let in_ns: Vec<StreamPolicy> = self
            .policies
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .cloned()
            .collect();
        Ok(issuers_of(&in_ns))
    }
}
