//! audit: every policy change is evidence. The policy in force when the
//! sidecar starts, each reload applied and each reload rejected (the previous
//! policy staying in force) become `PolicyReload` records, so an auditor can
//! tell which policy version decided any request in between.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;

use crate::audit::{Audit, AuditRecord, RecordKind};
use crate::policy::{PolicyHandle, PolicyReload};

/// "phi-access (generation 3), allow-all (generation –)".
fn describe<'a>(policies: impl IntoIterator<Item = (&'a str, Option<i64>)>) -> String {
    let names: Vec<String> = policies
        .into_iter()
        .map(|(name, generation)| match generation {
            Some(g) => format!("{name} (generation {g})"),
            None => format!("{name} (generation –)"),
        })
        .collect();
    if names.is_empty() {
        "no StreamPolicy: every request is denied".into()
    } else {
        names.join(", ")
    }
}

/// The record for one reload event.
pub fn record_for(event: &PolicyReload) -> AuditRecord {
    match event {
        PolicyReload::Applied { source, policies } => AuditRecord::event(
            RecordKind::PolicyReload,
            format!(
                "policy applied from {source}: {}",
                describe(policies.iter().map(|(n, g)| (n.as_str(), *g)))
            ),
        ),
        PolicyReload::Rejected { source, error } => AuditRecord::event(
            RecordKind::PolicyReload,
            format!("policy from {source} rejected, the previous policy stays in force: {error}"),
        ),
    }
}

/// Record the policy in force now, then every reload until the handle's
/// publisher goes away.
pub async fn spawn(audit: Arc<Audit>, policy: &PolicyHandle) {
    let mut events = policy.subscribe();
    let current = policy.current();
    audit
        .record(AuditRecord::event(
            RecordKind::PolicyReload,
            format!("policy in force at start: {}", describe(current.policies())),
        ))
        .await;
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => audit.record(record_for(&event)).await,
                Err(RecvError::Lagged(missed)) => {
                    audit
                        .record(AuditRecord::event(
                            RecordKind::PolicyReload,
                            format!("{missed} policy reload event(s) were missed; the next record shows the policy in force"),
                        ))
                        .await
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_and_rejected_reloads_name_the_policies_and_the_error() {
        let applied = record_for(&PolicyReload::Applied {
            source: "/etc/streamgate/policy".into(),
            policies: vec![("phi-access".into(), Some(3)), ("allow-all".into(), None)],
        });
        let json = serde_json::to_string(&applied).unwrap();
        assert!(json.contains("PolicyReload"), "{json}");
        assert!(
            json.contains("phi-access (generation 3), allow-all (generation –)"),
            "{json}"
        );
        let rejected = record_for(&PolicyReload::Rejected {
            source: "dir".into(),
            error: "bad.yaml: unknown variant `Wrte`".into(),
        });
        let json = serde_json::to_string(&rejected).unwrap();
        assert!(json.contains("previous policy stays in force"), "{json}");
        assert!(json.contains("unknown variant"), "{json}");
    }

    #[test]
    fn no_policy_says_everything_is_denied() {
        assert_eq!(
            describe(std::iter::empty()),
            "no StreamPolicy: every request is denied"
        );
    }
}
