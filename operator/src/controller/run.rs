//! Wiring: one pod reflector (injected pods only) feeds the StreamPolicy
//! workload counts, the pod → policy mapping and the RBAC sync.
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client};
use streamgate_crds::{AccessApproval, MaskingRule, StreamPolicy};

use super::{Context, access_approval, error_policy, masking_rule, stream_policy};
use crate::config::LABEL_INJECTED;

/// Run the three controllers until they all stop. `ctx.pods` must be fed by
/// [`pod_reflector`]'s driver.
pub async fn run_controllers(client: Client, ctx: Arc<Context>) {
    let policies = Controller::new(
        Api::<StreamPolicy>::all(client.clone()),
        watcher::Config::default(),
    );
    let policy_store = policies.store();
    let policies = policies
        .watches(
            Api::<Pod>::all(client.clone()),
            injected_pods(),
            move |pod: Pod| policies_in_namespace(&policy_store, &pod),
        )
        // A break-glass use filed or reviewed: its policy's ReviewOverdue.
        .watches(
            Api::<AccessApproval>::all(client.clone()),
            watcher::Config::default(),
            |aa: AccessApproval| {
                let ns = aa.metadata.namespace.clone()?;
                aa.spec
                    .break_glass
                    .then(|| ObjectRef::<StreamPolicy>::new(&aa.spec.policy).within(&ns))
            },
        )
        .shutdown_on_signal()
        .run(
            stream_policy::reconcile,
            error_policy::<StreamPolicy>(stream_policy::CONTROLLER),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    let masking = Controller::new(
        Api::<MaskingRule>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(
        masking_rule::reconcile,
        error_policy::<MaskingRule>(masking_rule::CONTROLLER),
        ctx.clone(),
    )
    .for_each(|_| futures::future::ready(()));

    let approvals = Controller::new(
        Api::<AccessApproval>::all(client),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(
        access_approval::reconcile,
        error_policy::<AccessApproval>(access_approval::CONTROLLER),
        ctx,
    )
    .for_each(|_| futures::future::ready(()));

    tokio::join!(policies, masking, approvals);
}

/// Every policy of the pod's namespace: cheap, and right even when the pod's
/// labels changed (the old selector match must be recounted too).
fn policies_in_namespace(store: &Store<StreamPolicy>, pod: &Pod) -> Vec<ObjectRef<StreamPolicy>> {
    store
        .state()
        .iter()
        .filter(|sp| sp.metadata.namespace == pod.metadata.namespace)
        .map(|sp| ObjectRef::from_obj(sp.as_ref()))
        .collect()
}

fn injected_pods() -> watcher::Config {
    // Label-selected, so the watch stays small however many pods the cluster runs.
    watcher::Config::default().labels(&format!("{LABEL_INJECTED}=true"))
}

/// A reflector over AccessApprovals (break-glass reviews): its store, and
/// the future that keeps it filled.
pub fn approval_reflector(
    client: Client,
) -> (
    Store<AccessApproval>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (reader, writer) = reflector::store();
    let driver = reflector::reflector(
        writer,
        watcher(
            Api::<AccessApproval>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .for_each(|_| futures::future::ready(()));
    (reader, driver)
}

/// A reflector over injected pods: its store, and the future that keeps it filled.
pub fn pod_reflector(client: Client) -> (Store<Pod>, impl Future<Output = ()> + Send + 'static) {
    let (reader, writer) = reflector::store();
    let driver = reflector::reflector(writer, watcher(Api::<Pod>::all(client), injected_pods()))
        .default_backoff()
        .for_each(|_| futures::future::ready(()));
    (reader, driver)
}
