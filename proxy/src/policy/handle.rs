//! One compiled policy, swapped atomically, fed by any policy source.
//!
//! Sources (`--policy-dir` files, Kubernetes reflectors, later an operator
//! stream) hand a complete [`PolicyInputs`] snapshot to a [`PolicyPublisher`];
//! the connection code reads the current [`CompiledPolicy`] through a
//! [`PolicyHandle`] — a `tokio::sync::watch` channel, so a read is an `Arc`
//! clone and a swap never blocks readers. Every reload, good or bad, is also
//! announced as a [`PolicyReload`] event (for the audit trail).
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{broadcast, watch};

use super::decide::{CompiledPolicy, Grant, MaskingDoc, PolicyDoc};

/// Everything a source read from its namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyInputs {
    pub policies: Vec<PolicyDoc>,
    pub masking: Vec<MaskingDoc>,
    pub grants: Vec<Grant>,
}

/// A reload, announced to whoever listens (the audit layer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyReload {
    /// A new policy is in force: the governing policies (name, generation).
    Applied {
        source: String,
        policies: Vec<(String, Option<i64>)>,
    },
    /// The source could not be read; the previous policy stays in force.
    Rejected { source: String, error: String },
}

/// The read side: cheap to clone, one per connection.
#[derive(Clone, Debug)]
pub struct PolicyHandle {
    current: watch::Receiver<Arc<CompiledPolicy>>,
    events: broadcast::Sender<PolicyReload>,
    loaded: Arc<AtomicBool>,
}

impl PolicyHandle {
    /// The policy in force now.
    pub fn current(&self) -> Arc<CompiledPolicy> {
        Arc::clone(&self.current.borrow())
    }

    /// Wait until the policy changes (for readiness or re-checks).
    pub async fn changed(&mut self) -> bool {
        self.current.changed().await.is_ok()
    }

    /// Has the source delivered its first policy (or does it not need to)?
    /// `/readyz` waits for it, so an injected sidecar's `wait-ready` hook does
    /// not release the app while every request would still be denied for want
    /// of a policy that is on its way from the API server.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Receive every reload from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<PolicyReload> {
        self.events.subscribe()
    }
}

/// The write side, owned by a source.
#[derive(Debug)]
pub struct PolicyPublisher {
    tx: watch::Sender<Arc<CompiledPolicy>>,
    events: broadcast::Sender<PolicyReload>,
    pod_labels: BTreeMap<String, String>,
    loaded: Arc<AtomicBool>,
}

/// A handle starting with no policy (everything denied) and its publisher.
pub fn policy_channel(pod_labels: BTreeMap<String, String>) -> (PolicyPublisher, PolicyHandle) {
    let (tx, rx) = watch::channel(Arc::new(CompiledPolicy::empty()));
    let (events, _) = broadcast::channel(64);
    let loaded = Arc::new(AtomicBool::new(false));
    (
        PolicyPublisher {
            tx,
            events: events.clone(),
            pod_labels,
            loaded: Arc::clone(&loaded),
        },
        PolicyHandle {
            current: rx,
            events,
            loaded,
        },
    )
}

impl PolicyPublisher {
    /// Compile and swap in a new snapshot.
    pub fn publish(&self, source: &str, inputs: PolicyInputs) {
        let compiled = CompiledPolicy::compile(
            inputs.policies,
            inputs.masking,
            inputs.grants,
            &self.pod_labels,
        );
        let policies: Vec<(String, Option<i64>)> = compiled
            .policies()
            .map(|(n, g)| (n.to_string(), g))
            .collect();
        if policies.is_empty() {
            tracing::warn!(
                source,
                "no StreamPolicy governs this workload: every request is denied"
            );
        } else {
            tracing::info!(source, ?policies, "policy applied");
        }
        self.tx.send_replace(Arc::new(compiled));
        self.loaded.store(true, Ordering::Release);
        // No listener is fine: audit may not be running (yet).
        let _ = self.events.send(PolicyReload::Applied {
            source: source.to_string(),
            policies,
        });
    }

    /// Report a source that could not be read; the last good policy stays.
    pub fn reject(&self, source: &str, error: String) {
        tracing::error!(source, %error, "policy not reloaded; the previous policy stays in force");
        let _ = self.events.send(PolicyReload::Rejected {
            source: source.to_string(),
            error,
        });
    }

    /// A handle on what this publisher publishes.
    pub fn handle(&self) -> PolicyHandle {
        PolicyHandle {
            current: self.tx.subscribe(),
            events: self.events.clone(),
            loaded: Arc::clone(&self.loaded),
        }
    }

    /// Readiness need not wait for this source's first load: a policy
    /// directory is read before the listeners start, and with no source at
    /// all nothing is coming (everything stays denied).
    pub fn ready_without_first_load(&self) {
        self.loaded.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_is_loaded_once_its_source_published_or_waived_the_wait() {
        let (publisher, handle) = policy_channel(BTreeMap::new());
        assert!(!handle.loaded(), "nothing published yet: /readyz must wait");
        publisher.publish(
            "test",
            PolicyInputs {
                policies: Vec::new(),
                masking: Vec::new(),
                grants: Vec::new(),
            },
        );
        assert!(handle.loaded() && publisher.handle().loaded());
        let (publisher, handle) = policy_channel(BTreeMap::new());
        publisher.ready_without_first_load();
        assert!(handle.loaded());
    }
}
