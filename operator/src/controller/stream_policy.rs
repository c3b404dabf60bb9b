//! StreamPolicy: validate, count the injected pods it governs, report Ready.
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use streamgate_crds::{StreamPolicy, StreamPolicyStatus, TopicGrantsMode, WorkloadSelector};

use super::{Context, Error, RESYNC, conditions, name_ns, review, topic_grants};

pub const CONTROLLER: &str = "streampolicy";
/// Ready reason: an Allow rule names topics outside the namespace's grant.
pub const TOPICS_NOT_GRANTED: &str = "TopicsNotGranted";

/// Does a policy's selector pick this pod? No selector = every pod of the namespace.
pub fn selects(
    selector: Option<&WorkloadSelector>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(sel) = selector else { return true };
    sel.match_labels
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Injected, live pods of `namespace` that the selector picks.
pub fn count_workloads(
    pods: &Store<Pod>,
    namespace: &str,
    selector: Option<&WorkloadSelector>,
) -> i64 {
    let n = pods
        .state()
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| running(p))
        .filter(|p| selects(selector, p.metadata.labels.as_ref()))
        .count();
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The status this policy should have now.
pub fn desired_status(sp: &StreamPolicy, workloads: i64, ctx: &Context) -> StreamPolicyStatus {
    let previous = sp.status.clone().unwrap_or_default();
    let problems = crate::validation::stream_policy(&sp.spec);
    let generation = sp.metadata.generation;
    let namespace = sp.metadata.namespace.as_deref().unwrap_or_default();
    let ungranted = ctx
        .topic_grants
        .as_ref()
        .map(|g| g.ungranted(namespace, &sp.spec))
        .unwrap_or_default();
    let condition = if !problems.is_empty() {
        let message = format!("fix the spec: {}", problems.join("; "));
        conditions::ready(
            false,
            "Invalid",
            message,
            generation,
            &previous.conditions,
            ctx.now(),
        )
    } else if let (Some(grants), false) = (ctx.topic_grants.as_ref(), ungranted.is_empty()) {
        conditions::ready(
            false,
            TOPICS_NOT_GRANTED,
            topic_grants::message(namespace, grants, &ungranted),
            generation,
            &previous.conditions,
            ctx.now(),
        )
    } else {
        let message = if workloads == 0 {
            format!(
                "valid ({} rules); no injected pod matches its workloadSelector yet",
                sp.spec.rules.len()
            )
        } else {
            format!(
                "valid ({} rules); enforced by the sidecars of the matching pods",
                sp.spec.rules.len()
            )
        };
        conditions::ready(
            true,
            "Valid",
            message,
            generation,
            &previous.conditions,
            ctx.now(),
        )
    };
    let audit_sink = match &ctx.audit_sink {
        Some(endpoint) => conditions::condition(
            conditions::AUDIT_SINK,
            true,
            "Shipping",
            format!("the governed pods' sidecars ship audit records to {endpoint}"),
            generation,
            &previous.conditions,
            ctx.now(),
        ),
        None => conditions::condition(
            conditions::AUDIT_SINK,
            false,
            "NoCollector",
            "no OTLP collector is configured for injected sidecars (operator \
             --audit-otlp-endpoint, chart audit.otlp.endpoint): each pod's audit spool is the \
             only copy of its trail and is lost with the pod"
                .to_string(),
            generation,
            &previous.conditions,
            ctx.now(),
        ),
    };
    let mut conditions = vec![condition, audit_sink];
    if let Some(state) = review_state(sp, ctx) {
        let (overdue, reason, message) = state.condition();
        conditions.push(conditions::condition(
            review::REVIEW_OVERDUE,
            overdue,
            reason,
            message,
            generation,
            &previous.conditions,
            ctx.now(),
        ));
    }
    StreamPolicyStatus {
        observed_generation: generation,
        conditions,
        workloads,
        topic_grants: ctx.topic_grants.as_ref().map(|_| TopicGrantsMode::Enforced),
        ungranted_rules: ungranted.into_iter().map(|u| u.rule).collect(),
    }
}

/// The review state of the policy's break-glass uses, when the operator
/// watches AccessApprovals and the policy has break-glass rules or uses.
fn review_state(sp: &StreamPolicy, ctx: &Context) -> Option<review::ReviewState> {
    let store = ctx.approvals.as_ref()?;
    let approvals = store.state();
    let state = review::review_state(sp, approvals.iter().map(AsRef::as_ref), ctx.now());
    let has_rules = sp.spec.rules.iter().any(|r| r.break_glass.is_some());
    (has_rules || !state.overdue.is_empty() || state.pending > 0).then_some(state)
}

pub async fn reconcile(sp: Arc<StreamPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled(CONTROLLER);
    let (name, ns) = name_ns(sp.as_ref())?;
    let workloads = count_workloads(&ctx.pods, &ns, sp.spec.workload_selector.as_ref());
    let status = desired_status(&sp, workloads, &ctx);
    let previous = sp.status.clone().unwrap_or_default();
    if status != previous {
        super::apply_status::<StreamPolicy>(&ctx.client, &ns, &name, &status).await?;
        ctx.event_on_ready_transition(sp.as_ref(), &previous.conditions, &status.conditions)
            .await;
    }
    ctx.succeeded(&super::object_key(sp.as_ref()));
    // Wake up at the next review deadline (rounded up to the next second).
    let next = review_state(&sp, &ctx)
        .and_then(|s| s.next_deadline)
        .and_then(|t| (t - ctx.now()).to_std().ok())
        .map(|d| d + std::time::Duration::from_secs(1));
    Ok(Action::requeue(next.unwrap_or(RESYNC).min(RESYNC)))
}
