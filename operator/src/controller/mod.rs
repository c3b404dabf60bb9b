//! Reconcilers for the three kinds (kube-runtime `Controller`).
//!
//! Every reconciler: validates, writes status through the status subresource
//! with server-side apply under [`crate::FIELD_MANAGER`], skips the write when
//! nothing changed (so its own status update does not loop), publishes an
//! Event on each transition, and requeues failures with a per-object backoff
//! so one bad object never stalls the others.
pub mod access_approval;
pub mod conditions;
pub mod masking_rule;
pub mod review;
pub mod run;
pub mod stream_policy;
pub mod topic_grants;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};

use crate::metrics::Metrics;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no namespace (all streamgate kinds are namespaced)")]
    MissingNamespace,
}

impl Error {
    /// Low-cardinality label for the error metric.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api_status",
            Error::Kube(_) => "kube_client",
            Error::MissingNamespace => "missing_namespace",
        }
    }
}

/// A clock the tests can pin.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What every reconciler shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Injected pods (label `streamgate.dev/injected=true`), kept by a reflector.
    pub pods: Store<Pod>,
    pub clock: Clock,
    /// Per-namespace topic grants (`--topic-grants`); `None`: not checked.
    pub topic_grants: Option<Arc<topic_grants::TopicGrants>>,
    /// The OTLP endpoint injected sidecars ship audit records to; `None`:
    /// StreamPolicies report `AuditSink=False` (the spool is the only copy).
    pub audit_sink: Option<String>,
    /// AccessApprovals, kept by a reflector: the StreamPolicy reconcile
    /// counts break-glass uses overdue for review (`ReviewOverdue`).
    /// `None`: not watched (no `ReviewOverdue` condition).
    pub approvals: Option<Store<streamgate_crds::AccessApproval>>,
    failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        pods: Store<Pod>,
        instance: Option<String>,
        clock: Clock,
    ) -> Self {
        let reporter = Reporter {
            controller: crate::FIELD_MANAGER.to_string(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            pods,
            clock,
            topic_grants: None,
            audit_sink: None,
            approvals: None,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Where injected sidecars ship audit records (reported on StreamPolicies).
    pub fn with_audit_sink(mut self, endpoint: Option<String>) -> Self {
        self.audit_sink = endpoint;
        self
    }

    /// Count break-glass uses overdue for review from this store.
    pub fn with_approvals(mut self, approvals: Store<streamgate_crds::AccessApproval>) -> Self {
        self.approvals = Some(approvals);
        self
    }

    /// Check StreamPolicy Allow rules against these per-namespace topic grants.
    pub fn with_topic_grants(mut self, grants: topic_grants::TopicGrants) -> Self {
        self.topic_grants = Some(Arc::new(grants));
        self
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Publish an Event about `obj`. A failed Event is logged, never fatal:
    /// the status write already carries the same information.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish Event");
        }
    }

    /// One Event when the first (Ready) condition changed status or reason:
    /// Warning unless it became `True`.
    pub async fn event_on_ready_transition<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        previous: &[streamgate_crds::Condition],
        current: &[streamgate_crds::Condition],
    ) {
        // Every condition's transition is an Event (a warning when it is
        // False — or, for a condition naming a problem, True).
        for c in current {
            if conditions::transitioned(previous, c) {
                let bad = if c.type_ == review::REVIEW_OVERDUE {
                    "True"
                } else {
                    "False"
                };
                self.event(obj, c.status == bad, &c.reason, c.message.clone())
                    .await;
            }
        }
    }

    fn succeeded(&self, key: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }

    /// Exponential backoff per object: 5 s, 10 s, 20 s … capped at 5 min.
    fn next_backoff(&self, key: &str) -> Duration {
        let attempts = match self.failures.lock() {
            Ok(mut f) => {
                let n = f.entry(key.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        let secs = 5u64.saturating_mul(1u64 << attempts.saturating_sub(1).min(6));
        Duration::from_secs(secs.min(300))
    }
}

fn object_key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

/// The error policy shared by the controllers.
pub fn error_policy<K: Resource>(
    controller: &'static str,
) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |obj, err, ctx| {
        let key = object_key(obj.as_ref());
        ctx.metrics
            .reconcile_failed(controller, err.metric_reason());
        let delay = ctx.next_backoff(&key);
        tracing::warn!(controller, object = key, error = %err, retry_in = ?delay, "reconcile failed");
        Action::requeue(delay)
    }
}

/// Name and namespace, or an error.
fn name_ns<K: Resource>(obj: &K) -> Result<(String, String), Error> {
    let ns = obj.namespace().ok_or(Error::MissingNamespace)?;
    Ok((obj.name_any(), ns))
}

/// Requeue interval for objects that are fine (a cheap periodic resync).
pub const RESYNC: Duration = Duration::from_secs(300);

/// Write `status` through the status subresource of `K` `ns/name` with
/// server-side apply under [`crate::FIELD_MANAGER`] (forced: the operator owns status).
pub(crate) async fn apply_status<K>(
    client: &Client,
    ns: &str,
    name: &str,
    status: &impl serde::Serialize,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: kube::Api<K> = kube::Api::namespaced(client.clone(), ns);
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &kube::api::PatchParams::apply(crate::FIELD_MANAGER).force(),
        &kube::api::Patch::Apply(&body),
    )
    .await?;
    Ok(())
}
