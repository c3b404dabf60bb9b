//! In a cluster: kube-runtime reflectors on StreamPolicy, MaskingRule and
//! AccessApproval in the pod's namespace feed the same [`PolicyPublisher`]
//! as the directory source. Each change (after a ~100 ms quiet period, so a
//! burst of events compiles once) recompiles from the three caches; nothing
//! is published until all three have listed once, so a sidecar never acts on
//! half a namespace. Watch errors are retried with kube's default backoff and
//! the last good policy stays in force meanwhile. A watch the API server
//! expires (410 Gone, "too old resource version": after an API server
//! restart, or etcd compaction) is routine — the watcher re-lists by itself —
//! and is no failed reload: it is neither logged nor audited as one.
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use streamgate_crds::{
    AccessApproval, Effect, MaskingRule, StreamPolicy, StreamPolicySpec, TopicGrantsMode,
};

use super::admit::{admit_approval, admit_masking, admit_policy};
use super::decide::{Grant, MaskingDoc, PolicyDoc};
use super::handle::{PolicyInputs, PolicyPublisher};
use super::source_dir::DEBOUNCE;

/// Snapshot the three caches. `grants_on`: the injector said the operator
/// enforces topic grants (`STREAMGATE_TOPIC_GRANTS_ENFORCED`), so even the
/// namespace's very first policy waits for the operator's check.
pub fn inputs_from(
    policies: &[Arc<StreamPolicy>],
    masking: &[Arc<MaskingRule>],
    approvals: &[Arc<AccessApproval>],
    grants_on: bool,
) -> PolicyInputs {
    // The operator's topic grants are one cluster-wide switch: the injector
    // says so, or one policy of the namespace marked `Enforced` means every
    // policy here is checked.
    let grants_enforced = grants_on
        || policies.iter().any(|p| {
            p.status.as_ref().and_then(|s| s.topic_grants) == Some(TopicGrantsMode::Enforced)
        });
    PolicyInputs {
        // Validated as the operator's webhook would (an object may predate a
        // rule, or have been written while the webhook was down): see `admit`.
        // The validation looks at the spec as written, before topic grants.
        policies: policies
            .iter()
            .map(|p| {
                let admitted = admit_policy(PolicyDoc {
                    name: p.metadata.name.clone().unwrap_or_default(),
                    namespace: p.metadata.namespace.clone().unwrap_or_default(),
                    generation: p.metadata.generation,
                    spec: p.spec.clone(),
                });
                PolicyDoc {
                    spec: granted_spec(&admitted.spec, p, grants_enforced),
                    ..admitted
                }
            })
            .collect(),
        masking: masking
            .iter()
            .map(|m| {
                admit_masking(MaskingDoc {
                    name: m.metadata.name.clone().unwrap_or_default(),
                    namespace: m.metadata.namespace.clone().unwrap_or_default(),
                    generation: m.metadata.generation,
                    spec: m.spec.clone(),
                })
            })
            .collect(),
        grants: approvals
            .iter()
            .filter(|a| admit_approval(a))
            .filter_map(|a| Grant::from_approval(a))
            .collect(),
    }
}

/// What one watcher event means for the policy: `None` for a routine
/// resync (see the module docs), else changed (`Ok`) or failed (`Err`).
pub fn watch_outcome<T>(event: Result<T, watcher::Error>) -> Option<Result<(), String>> {
    match event {
        Ok(_) => Some(Ok(())),
        Err(watcher::Error::WatchError(status)) if status.code == 410 => {
            tracing::debug!(reason = %status.message, "watch expired; re-listing");
            None
        }
        Err(e) => Some(Err(e.to_string())),
    }
}

/// The part of a policy's spec the sidecar enforces under the operator's
/// topic grants: Allow rules the operator found outside the namespace's grant
/// (`status.ungrantedRules`) are dropped; and while grants are enforced but
/// the operator has not checked this generation yet (`observedGeneration`
/// behind `metadata.generation`, or no status), every Allow rule is dropped —
/// none is known to be granted. Deny rules always stay (they only narrow).
/// Without grants (no policy of the namespace says `Enforced`) the spec is
/// enforced as written.
fn granted_spec(
    spec: &StreamPolicySpec,
    p: &StreamPolicy,
    grants_enforced: bool,
) -> StreamPolicySpec {
    let status = p.status.as_ref();
    let checked = status.is_some_and(|s| s.observed_generation == p.metadata.generation);
    let ungranted: &[String] = status.map(|s| s.ungranted_rules.as_slice()).unwrap_or(&[]);
    let mut spec = spec.clone();
    spec.rules.retain(|r| {
        r.effect == Effect::Deny || (!ungranted.contains(&r.name) && (checked || !grants_enforced))
    });
    spec
}

/// Watch the namespace until the task is dropped.
pub async fn run(client: Client, namespace: String, publisher: PolicyPublisher, grants_on: bool) {
    let (sp_store, sp_writer) = reflector::store::<StreamPolicy>();
    let (mr_store, mr_writer) = reflector::store::<MaskingRule>();
    let (aa_store, aa_writer) = reflector::store::<AccessApproval>();
    let cfg = watcher::Config::default;
    let sp = reflector::reflector(
        sp_writer,
        watcher(
            Api::<StreamPolicy>::namespaced(client.clone(), &namespace),
            cfg(),
        ),
    )
    .default_backoff()
    .filter_map(|r| futures::future::ready(watch_outcome(r)))
    .boxed();
    let mr = reflector::reflector(
        mr_writer,
        watcher(
            Api::<MaskingRule>::namespaced(client.clone(), &namespace),
            cfg(),
        ),
    )
    .default_backoff()
    .filter_map(|r| futures::future::ready(watch_outcome(r)))
    .boxed();
    let aa = reflector::reflector(
        aa_writer,
        watcher(Api::<AccessApproval>::namespaced(client, &namespace), cfg()),
    )
    .default_backoff()
    .filter_map(|r| futures::future::ready(watch_outcome(r)))
    .boxed();
    let mut events = futures::stream::select_all([sp, mr, aa]);
    let source = format!("kube:{namespace}");
    while let Some(ev) = events.next().await {
        if let Err(error) = ev {
            publisher.reject(&source, error);
            continue;
        }
        // Let a burst settle, then compile once.
        while let Ok(Some(more)) = tokio::time::timeout(DEBOUNCE, events.next()).await {
            if let Err(error) = more {
                publisher.reject(&source, error);
            }
        }
        if all_ready(&sp_store, &mr_store, &aa_store) {
            publisher.publish(
                &source,
                inputs_from(
                    &sp_store.state(),
                    &mr_store.state(),
                    &aa_store.state(),
                    grants_on,
                ),
            );
        }
    }
}

fn all_ready(a: &Store<StreamPolicy>, b: &Store<MaskingRule>, c: &Store<AccessApproval>) -> bool {
    // `wait_until_ready` resolves immediately once a store has listed.
    let ready = |f: futures::future::BoxFuture<'_, bool>| {
        futures::FutureExt::now_or_never(f).unwrap_or(false)
    };
    ready(Box::pin(async { a.wait_until_ready().await.is_ok() }))
        && ready(Box::pin(async { b.wait_until_ready().await.is_ok() }))
        && ready(Box::pin(async { c.wait_until_ready().await.is_ok() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_watch_is_a_resync_not_a_failed_reload() {
        let gone = kube::core::Status::failure("too old resource version: 247 (268)", "Expired")
            .with_code(410);
        let expired: Result<(), _> = Err(watcher::Error::WatchError(Box::new(gone)));
        assert_eq!(watch_outcome(expired), None);
        let forbidden = kube::core::Status::failure("forbidden", "Forbidden").with_code(403);
        let refused: Result<(), _> = Err(watcher::Error::WatchError(Box::new(forbidden)));
        assert!(matches!(watch_outcome(refused), Some(Err(e)) if e.contains("forbidden")));
        assert_eq!(watch_outcome(Ok::<_, watcher::Error>(7)), Some(Ok(())));
    }

    fn policy_with_status(generation: i64, status: &str) -> Arc<StreamPolicy> {
        Arc::new(
            serde_yaml::from_str(&format!(
                "apiVersion: streamgate.dev/v1alpha1\nkind: StreamPolicy\n\
                 metadata: {{name: p, namespace: clinical, generation: {generation}}}\n\
                 spec:\n  identity: {{workloadIdentity: true}}\n  rules:\n\
                 \x20 - {{name: own, subjects: [{{kind: ServiceAccount, name: app}}], topics: [patient-events], operations: [Read]}}\n\
                 \x20 - {{name: grab-all, subjects: [{{kind: ServiceAccount, name: app}}], topics: [\"**\"], operations: [Read]}}\n\
                 \x20 - {{name: no-billing, subjects: [{{kind: ServiceAccount, name: app}}], topics: [billing.secret], operations: [Read], effect: Deny}}\n\
                 {status}"
            ))
            .unwrap(),
        )
    }

    fn compiled(policies: &[Arc<StreamPolicy>]) -> super::super::decide::CompiledPolicy {
        let inputs = inputs_from(policies, &[], &[], false);
        super::super::decide::CompiledPolicy::compile(
            inputs.policies,
            inputs.masking,
            inputs.grants,
            &Default::default(),
        )
    }

    /// Can the pod's ServiceAccount read `topic`?
    fn reads(policy: &super::super::decide::CompiledPolicy, topic: &str) -> bool {
        let app = streamgate_crds::matching::Principal {
            kind: streamgate_crds::SubjectKind::ServiceAccount,
            name: "app".into(),
            namespace: Some("clinical".into()),
            groups: vec![],
            issuer: None,
        };
        policy
            .decide(&app, streamgate_crds::Operation::Read, topic)
            .is_allow()
    }

    #[test]
    fn ungranted_allow_rules_are_not_enforced() {
        // The operator checked generation 2: "grab-all" names topics outside
        // the namespace's grant.
        let checked = policy_with_status(
            2,
            "status: {observedGeneration: 2, topicGrants: Enforced, ungrantedRules: [grab-all]}",
        );
        let policy = compiled(&[checked]);
        assert!(reads(&policy, "patient-events"), "the granted rule holds");
        assert!(
            !reads(&policy, "billing.claims"),
            "another namespace's topic, reachable only through the ungranted rule"
        );
        assert!(!reads(&policy, "billing.secret"));

        // Without grants the policy is enforced as written (today's behaviour).
        let unchecked = policy_with_status(2, "status: {observedGeneration: 2}");
        assert!(reads(&compiled(&[unchecked]), "billing.claims"));

        // Fail closed: an edit the operator has not checked yet enforces no
        // Allow rule at all, the Deny rules still.
        let behind = policy_with_status(
            3,
            "status: {observedGeneration: 2, topicGrants: Enforced, ungrantedRules: []}",
        );
        let policy = compiled(&[behind]);
        assert!(!reads(&policy, "patient-events"));
        assert!(!reads(&policy, "billing.claims"));

        // A new policy (no status yet) in a namespace whose other policies
        // say grants are enforced: not enforced until checked.
        let mut fresh = (*policy_with_status(1, "")).clone();
        fresh.metadata.name = Some("fresh".into());
        let other = policy_with_status(
            2,
            "status: {observedGeneration: 2, topicGrants: Enforced, ungrantedRules: [grab-all]}",
        );
        let policy = compiled(&[Arc::new(fresh), other]);
        assert!(reads(&policy, "patient-events"), "from the checked policy");
        assert!(!reads(&policy, "billing.claims"));
    }

    /// The namespace's very first policy, read before the operator checked
    /// it: with no other policy to say grants are on, only the injector's
    /// word keeps its Allow rules out until then.
    #[test]
    fn the_first_policy_waits_for_the_operator_when_the_injector_says_grants_are_on() {
        let first = policy_with_status(1, "");
        let as_written = inputs_from(&[Arc::clone(&first)], &[], &[], false);
        let waiting = inputs_from(&[first], &[], &[], true);
        let compile = |i: PolicyInputs| {
            super::super::decide::CompiledPolicy::compile(
                i.policies,
                i.masking,
                i.grants,
                &Default::default(),
            )
        };
        assert!(
            reads(&compile(as_written), "billing.claims"),
            "unknown: as written"
        );
        let waiting = compile(waiting);
        assert!(
            !reads(&waiting, "billing.claims"),
            "no Allow rule before the check"
        );
        assert!(!reads(&waiting, "patient-events"));
    }

    #[test]
    fn caches_become_policy_inputs() {
        let sp: StreamPolicy = serde_yaml::from_str(
            "apiVersion: streamgate.dev/v1alpha1\nkind: StreamPolicy\n\
             metadata: {name: p, namespace: clinical, generation: 4}\nspec: {rules: []}\n",
        )
        .unwrap();
        let approved: AccessApproval = serde_yaml::from_str(
            "apiVersion: streamgate.dev/v1alpha1\nkind: AccessApproval\nmetadata: {name: a, namespace: clinical}\n\
             spec: {requester: {kind: User, name: cleo}, policy: p, rule: r, topics: [t], operations: [Write],\n\
             duration: 1h, decision: Approved}\nstatus: {phase: Approved, expiresAt: \"2030-01-01T00:00:00Z\"}\n",
        )
        .unwrap();
        let mut pending = approved.clone();
        pending.spec.decision = streamgate_crds::Decision::Pending;
        let inputs = inputs_from(
            &[Arc::new(sp)],
            &[],
            &[Arc::new(approved), Arc::new(pending)],
            false,
        );
        assert_eq!(inputs.policies[0].generation, Some(4));
        assert_eq!(inputs.policies[0].namespace, "clinical");
        assert_eq!(inputs.grants.len(), 1, "only the approved grant counts");
    }

    /// Issue 12 item 7: objects the API server would refuse today (stored
    /// before a rule tightened, or while the webhook was down) are not
    /// enforced as written from the cluster either.
    #[test]
    fn invalid_objects_are_not_enforced_as_written() {
        let sp: StreamPolicy = serde_yaml::from_str(
            "apiVersion: streamgate.dev/v1alpha1\nkind: StreamPolicy\n\
             metadata: {name: p, namespace: clinical, generation: 1}\n\
             spec:\n  identity: {workloadIdentity: true}\n  rules:\n\
             \x20 - {name: own, subjects: [{kind: ServiceAccount, name: app}], topics: [patient-events, \"bad topic\"], operations: [Read]}\n",
        )
        .unwrap();
        let mr: MaskingRule = serde_yaml::from_str(
            "apiVersion: streamgate.dev/v1alpha1\nkind: MaskingRule\nmetadata: {name: m, namespace: clinical}\n\
             spec: {topics: [patient-events], fields: [{path: $.ssn, strategy: Redact}], exemptSubjects: [{kind: ServiceAccount, name: \"*\"}]}\n",
        )
        .unwrap();
        let aa: AccessApproval = serde_yaml::from_str(
            "apiVersion: streamgate.dev/v1alpha1\nkind: AccessApproval\nmetadata: {name: a, namespace: clinical}\n\
             spec: {requester: {kind: User, name: cleo}, policy: p, rule: r, topics: [\"patient-*\"], operations: [Write],\n\
             duration: 1h, decision: Approved}\nstatus: {phase: Approved, expiresAt: \"2030-01-01T00:00:00Z\"}\n",
        )
        .unwrap();
        let inputs = inputs_from(&[Arc::new(sp)], &[Arc::new(mr)], &[Arc::new(aa)], false);
        assert!(inputs.policies[0].spec.rules.is_empty(), "no Allow rule");
        assert!(!inputs.policies[0].spec.identity.workload_identity);
        assert!(inputs.masking[0].spec.exempt_subjects.is_empty());
        assert_eq!(
            inputs.masking[0].spec.fields[0].path,
            crate::policy::admit::REFUSED_RULE_PATH
        );
        assert!(inputs.grants.is_empty());
    }
}
