//! `--policy-dir DIR`: the policy from YAML manifests in a directory.
//!
//! Every `*.yaml` / `*.yml` file of the directory (not recursive; hidden
//! entries such as a ConfigMap mount's `..data` are skipped, the symlinks to
//! them are read) may hold several documents in the CRD format. StreamPolicy,
//! MaskingRule and AccessApproval are used; other kinds are ignored with a
//! debug log; objects of another namespace than the pod's are ignored.
//! The directory is watched (notify, ~100 ms debounce); a directory that
//! does not parse as a whole is rejected and the last good policy stays.
//!
//! ## Approval files
//!
//! Nobody authenticates who wrote a file, so an AccessApproval file is held
//! to the rules the operator's admission webhook applies to a `kubectl patch`
//! ([`streamgate_crds::approver`], one implementation for both), and its
//! grant window is computed here, never read from the file:
//! - `spec.decision: Approved` and `spec.decidedBy` naming the approver;
//! - the StreamPolicy and rule it names are loaded and the rule has `approval`;
//! - `decidedBy` is not the requester (emails case-insensitively, with or
//!   without a `prefix:`), not the requester's ServiceAccount or its
//!   workload's, and is an approver listed by **User** (or ServiceAccount) in
//!   the rule: a file cannot prove group membership, so Group approvers
//!   cannot decide from a file;
//! - `status.decidedAt` (RFC 3339, not in the future) starts the grant; it
//!   lasts the requested duration capped at the rule's `maxDuration`. A
//!   `status.expiresAt` may only shorten it; `status.phase: Expired` or
//!   `Denied` revokes it.
//!
//! A file that fails a check grants nothing and is logged with the reason;
//! the rest of the directory still loads.
//!
//! ## Validation
//!
//! No admission webhook sees these files: every object is checked with the
//! same validation as the operator's webhook and enforced only as far as it
//! passes ([`super::admit`]: an invalid StreamPolicy keeps only its Deny
//! rules, an invalid MaskingRule blocks its topics, an invalid
//! AccessApproval grants nothing), with a log line naming every problem.
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use serde_yaml::Value;
use streamgate_crds::approver::{self, Decider, DecisionRefused, IdentityMapping};
use streamgate_crds::duration::DurationError;
use streamgate_crds::{
    AccessApproval, AccessApprovalStatus, ApprovalPhase, Decision, MaskingRule, StreamPolicy,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::admit::{admit_approval, admit_masking, admit_policy};
use super::decide::{Doc, Grant, PolicyDoc};
use super::handle::{PolicyInputs, PolicyPublisher};

/// How long the directory must be quiet before a reload.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Why a policy directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: document {doc}: {message}")]
    Parse {
        path: PathBuf,
        doc: usize,
        message: String,
    },
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
}

/// Why an AccessApproval file grants nothing (see the module docs).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileApprovalRefused {
    #[error(
        "spec.decidedBy is missing: name the approver who decided (one listed by User in the rule's approval.approvers)"
    )]
    NoDecider,
    #[error(
        "StreamPolicy {policy:?} has no rule {rule:?} with an approval section; nothing to approve"
    )]
    RuleNotFound { policy: String, rule: String },
    #[error("{0}")]
    Decider(#[from] DecisionRefused),
    #[error(
        "status.decidedAt {0}: write the RFC 3339 time of the decision (e.g. 2026-11-27T08:00:00Z); the grant runs from then for the requested duration, capped at the rule's maxDuration"
    )]
    DecidedAt(String),
    #[error("the rule's maxDuration: {0}")]
    MaxDuration(#[from] DurationError),
}

/// Clock difference tolerated between the approver's `decidedAt` and ours.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);

/// The grant an AccessApproval file carries at `now`, checked against the
/// loaded `policies` like the admission webhook checks a decision (`None`:
/// not approved, or revoked).
pub fn file_grant(
    aa: &AccessApproval,
    namespace: &str,
    policies: &[PolicyDoc],
    now: DateTime<Utc>,
) -> Result<Option<Grant>, FileApprovalRefused> {
    let status = aa.status.clone().unwrap_or_default();
    if aa.spec.decision != Decision::Approved
        || matches!(status.phase, ApprovalPhase::Denied | ApprovalPhase::Expired)
    {
        return Ok(None);
    }
    let decided_by = aa
        .spec
        .decided_by
        .as_deref()
        .filter(|d| !d.trim().is_empty())
        .ok_or(FileApprovalRefused::NoDecider)?;
    let approval = policies
        .iter()
        .filter(|p| p.name == aa.spec.policy && p.namespace == namespace)
        .flat_map(|p| p.spec.rules.iter())
        .find(|r| r.name == aa.spec.rule)
        .and_then(|r| r.approval.as_ref())
        .ok_or_else(|| FileApprovalRefused::RuleNotFound {
            policy: aa.spec.policy.clone(),
            rule: aa.spec.rule.clone(),
        })?;
    // No API server maps names here: compare them as written (the checks
    // still catch `prefix:name` and emails in another case).
    let claim = aa
        .spec
        .requester
        .oidc
        .as_ref()
        .map_or("sub", |o| o.username_claim.as_str());
    approver::check_decider(
        &aa.spec,
        namespace,
        &Decider {
            username: decided_by,
            groups: None,
        },
        &approval.approvers,
        &IdentityMapping::unprefixed(claim),
    )?;
    let decided_at = match status.decided_at.as_deref() {
        None => return Err(FileApprovalRefused::DecidedAt("is missing".into())),
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map_err(|_| FileApprovalRefused::DecidedAt(format!("{t:?} is not RFC 3339")))?
            .to_utc(),
    };
    if decided_at > now + CLOCK_SKEW {
        return Err(FileApprovalRefused::DecidedAt(format!(
            "{} is in the future",
            decided_at.to_rfc3339()
        )));
    }
    let mut expires_at =
        approver::grant_expiry(&aa.spec.duration, &approval.max_duration, decided_at)?;
    if let Some(earlier) = status
        .expires_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc())
        .filter(|t| *t < expires_at)
    {
        expires_at = earlier;
    }
    // The grant as the cluster path reads it, with the window computed here.
    let mut checked = aa.clone();
    checked
        .metadata
        .namespace
        .get_or_insert_with(|| namespace.to_string());
    checked.status = Some(AccessApprovalStatus {
        phase: ApprovalPhase::Approved,
        decided_at: Some(decided_at.to_rfc3339()),
        expires_at: Some(expires_at.to_rfc3339()),
        ..status
    });
    Ok(Grant::from_approval(&checked))
}

/// An AccessApproval read from a file, checked once every policy is loaded.
struct ApprovalFile {
    path: PathBuf,
    aa: AccessApproval,
}

/// Turn approval files into grants; a refused file is logged and skipped.
fn admit_approvals(files: Vec<ApprovalFile>, namespace: &str, into: &mut PolicyInputs) {
    let now = Utc::now();
    for ApprovalFile { path, aa } in files {
        if !admit_approval(&aa) {
            continue;
        }
        match file_grant(&aa, namespace, &into.policies, now) {
            Ok(Some(grant)) => into.grants.push(grant),
            Ok(None) => {}
            Err(reason) => tracing::warn!(
                path = %path.display(),
                access_approval = aa.metadata.name.as_deref().unwrap_or(""),
                %reason,
                "AccessApproval file grants nothing"
            ),
        }
    }
}

/// Parse the manifests of one file into `into` (its approval files checked
/// against the policies of the same file; [`load_dir`] checks them against
/// the whole directory).
pub fn parse_manifests(
    text: &str,
    path: &Path,
    namespace: &str,
    into: &mut PolicyInputs,
) -> Result<(), ManifestError> {
    let mut approvals = Vec::new();
    parse_file(text, path, namespace, into, &mut approvals)?;
    admit_approvals(approvals, namespace, into);
    Ok(())
}

fn parse_file(
    text: &str,
    path: &Path,
    namespace: &str,
    into: &mut PolicyInputs,
    approvals: &mut Vec<ApprovalFile>,
) -> Result<(), ManifestError> {
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        let bad = |message: String| ManifestError::Parse {
            path: path.to_path_buf(),
            doc,
            message,
        };
        let value = serde::Deserialize::deserialize(de)
            .map_err(|e: serde_yaml::Error| bad(e.to_string()))?;
        let Value::Mapping(map) = &value else {
            if value.is_null() {
                continue; // an empty document (e.g. a trailing `---`)
            }
            return Err(bad("not a Kubernetes object".into()));
        };
        let kind = map
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let api_version = map
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !api_version.starts_with("streamgate.dev/") {
            tracing::debug!(path = %path.display(), doc, kind, api_version, "ignoring a non-streamgate object");
            continue;
        }
        let ns_of = |m: &kube::api::ObjectMeta| {
            m.namespace.clone().unwrap_or_else(|| namespace.to_string())
        };
        let name_of = |m: &kube::api::ObjectMeta| {
            m.name
                .clone()
                .ok_or_else(|| bad("metadata.name is missing".into()))
        };
        match kind.as_str() {
            "StreamPolicy" => {
                let sp: StreamPolicy =
                    serde_yaml::from_value(value).map_err(|e| bad(e.to_string()))?;
                let name = name_of(&sp.metadata)?;
                if let Some(dup) = duplicate_rule(&sp) {
                    return Err(bad(format!(
                        "StreamPolicy {name}: rule name {dup:?} is used twice"
                    )));
                }
                let doc = ours(&sp.metadata, name, sp.spec, namespace);
                into.policies.extend(doc.map(admit_policy));
            }
            "MaskingRule" => {
                let mr: MaskingRule =
                    serde_yaml::from_value(value).map_err(|e| bad(e.to_string()))?;
                let doc = ours(&mr.metadata, name_of(&mr.metadata)?, mr.spec, namespace);
                into.masking.extend(doc.map(admit_masking));
            }
            "AccessApproval" => {
                let aa: AccessApproval =
                    serde_yaml::from_value(value).map_err(|e| bad(e.to_string()))?;
                if ns_of(&aa.metadata) == namespace {
                    approvals.push(ApprovalFile {
                        path: path.to_path_buf(),
                        aa,
                    });
                }
            }
            other => {
                tracing::debug!(path = %path.display(), doc, kind = other, "ignoring an unknown streamgate kind")
            }
        }
    }
    Ok(())
}

/// An object of `namespace` as a doc (`None`: another namespace's, ignored).
fn ours<S>(meta: &kube::api::ObjectMeta, name: String, spec: S, namespace: &str) -> Option<Doc<S>> {
    let ns = meta.namespace.as_deref().unwrap_or(namespace);
    (ns == namespace).then(|| Doc {
        name,
        namespace: namespace.to_string(),
        generation: meta.generation,
        spec,
    })
}

fn duplicate_rule(sp: &StreamPolicy) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    sp.spec
        .rules
        .iter()
        .find(|r| !seen.insert(r.name.as_str()))
        .map(|r| r.name.clone())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ManifestError + '_ {
    move |source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_manifest(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Read every manifest of `dir` (all or nothing).
pub fn load_dir(dir: &Path, namespace: &str) -> Result<PolicyInputs, ManifestError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_manifest(p) && p.is_file())
        .collect();
    files.sort();
    let mut inputs = PolicyInputs::default();
    let mut approvals = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        parse_file(&text, &path, namespace, &mut inputs, &mut approvals)?;
    }
    admit_approvals(approvals, namespace, &mut inputs);
    Ok(inputs)
}

/// A running directory source; dropping it stops the watch.
#[derive(Debug)]
pub struct DirSource {
    _watcher: RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Drop for DirSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn load_and_publish(dir: &Path, namespace: &str, publisher: &PolicyPublisher) -> bool {
    let source = format!("dir:{}", dir.display());
    match load_dir(dir, namespace) {
        Ok(inputs) => {
            publisher.publish(&source, inputs);
            true
        }
        Err(e) => {
            publisher.reject(&source, e.to_string());
            false
        }
    }
}

/// Does this filesystem event change what the directory holds?
fn changes_manifests(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        // A file closed after writing is a change; any other access is a read.
        notify::EventKind::Access(access) => {
            matches!(access, AccessKind::Close(AccessMode::Write))
        }
        _ => true,
    }
}

/// Load `dir` now, then keep reloading it on change. Returns whether the
/// first load succeeded (else everything is denied until a good reload).
pub fn spawn(
    dir: PathBuf,
    namespace: String,
    publisher: PolicyPublisher,
) -> Result<(DirSource, bool), ManifestError> {
    let first_ok = load_and_publish(&dir, &namespace, &publisher);
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Only changes count: reading the manifests ourselves raises access
        // (open/close-without-write) events, which would reload forever.
        if res.is_ok_and(|event| changes_manifests(&event.kind)) {
            let _ = tx.send(());
        }
    })
    .map_err(|source| ManifestError::Watch {
        path: dir.clone(),
        source,
    })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| ManifestError::Watch {
            path: dir.clone(),
            source,
        })?;
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: wait for the burst of events an editor or a
            // ConfigMap update makes, then read the directory once.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            load_and_publish(&dir, &namespace, &publisher);
        }
    });
    Ok((
        DirSource {
            _watcher: watcher,
            task,
        },
        first_ok,
    ))
}

#[cfg(test)]
mod file_approval_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const POLICY: &str = r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: phi-access, namespace: clinical}
spec:
  rules:
    - name: write-patient-records
      subjects: [{kind: Group, name: clinicians}]
      topics: [patient-records]
      operations: [Write]
      approval:
        approvers: [{kind: Group, name: compliance-officers}, {kind: User, name: dr.house@example.com}]
        maxDuration: 1h
"#;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .to_utc()
    }

    /// alice's request, approved in the file by `decided_by` at `decided_at`.
    fn approval(decided_by: &str, decided_at: &str, extra_status: &str) -> AccessApproval {
        serde_yaml::from_str(&format!(
            r#"
apiVersion: streamgate.dev/v1alpha1
kind: AccessApproval
metadata: {{name: write-alice, namespace: clinical}}
spec:
  requester: {{kind: User, name: alice@example.com, groups: [clinicians]}}
  workload: {{pod: intake-0, serviceAccount: intake}}
  policy: phi-access
  rule: write-patient-records
  topics: [patient-records]
  operations: [Write]
  duration: 7d
  decision: Approved
  decidedBy: "{decided_by}"
status:
  decidedAt: "{decided_at}"
{extra_status}
"#
        ))
        .unwrap()
    }

    fn policies() -> Vec<PolicyDoc> {
        let mut inputs = PolicyInputs::default();
        parse_manifests(POLICY, Path::new("p.yaml"), "clinical", &mut inputs).unwrap();
        inputs.policies
    }

    fn check(aa: &AccessApproval) -> Result<Option<Grant>, FileApprovalRefused> {
        file_grant(aa, "clinical", &policies(), now())
    }

    #[test]
    fn a_listed_user_approver_grants_for_at_most_the_rules_max_duration() {
        // Asked for 7 days, and the file claims a year: the rule caps it at 1h from decidedAt.
        let aa = approval(
            "dr.house@example.com",
            "2026-11-27T09:30:00Z",
            "  expiresAt: \"2027-11-27T09:30:00Z\"",
        );
        let grant = check(&aa).unwrap().unwrap();
        assert_eq!(grant.expires_at.to_rfc3339(), "2026-11-27T10:30:00+00:00");
        // An earlier expiresAt shortens it.
        let aa = approval(
            "dr.house@example.com",
            "2026-11-27T09:30:00Z",
            "  expiresAt: \"2026-11-27T10:05:00Z\"",
        );
        assert_eq!(
            check(&aa).unwrap().unwrap().expires_at.to_rfc3339(),
            "2026-11-27T10:05:00+00:00"
        );
    }

    #[test]
    fn the_requester_cannot_approve_in_a_file_under_any_spelling() {
        for me in [
            "alice@example.com",
            "Alice@Example.com",
            "oidc:alice@example.com",
        ] {
            let err = check(&approval(me, "2026-11-27T09:30:00Z", "")).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("{me} is the requester and cannot decide")),
                "{err}"
            );
        }
        let err = check(&approval(
            "system:serviceaccount:clinical:intake",
            "2026-11-27T09:30:00Z",
            "",
        ))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("is the ServiceAccount of the requester's workload"),
            "{err}"
        );
    }

    #[test]
    fn group_approvers_cannot_decide_from_a_file_and_outsiders_are_refused() {
        let err = check(&approval("carol@example.com", "2026-11-27T09:30:00Z", "")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "carol@example.com is not an approver of rule \"write-patient-records\" in StreamPolicy \"phi-access\" (approvers: Group compliance-officers, User dr.house@example.com); a file cannot prove group membership, so in --policy-dir mode only an approver listed by User can decide"
        );
    }

    #[test]
    fn a_file_without_decider_or_decision_time_or_from_the_future_grants_nothing() {
        let mut aa = approval("dr.house@example.com", "2026-11-27T09:30:00Z", "");
        aa.spec.decided_by = None;
        assert_eq!(check(&aa).unwrap_err(), FileApprovalRefused::NoDecider);
        let aa = approval("dr.house@example.com", "2026-11-28T10:00:00Z", "");
        assert!(
            check(&aa)
                .unwrap_err()
                .to_string()
                .contains("is in the future"),
            "a decidedAt in the future would stretch the grant"
        );
        let mut aa = approval("dr.house@example.com", "2026-11-27T09:30:00Z", "");
        aa.status = None;
        assert!(matches!(
            check(&aa).unwrap_err(),
            FileApprovalRefused::DecidedAt(_)
        ));
        let mut aa = approval("dr.house@example.com", "2026-11-27T09:30:00Z", "");
        aa.spec.rule = "no-such-rule".into();
        assert!(matches!(
            check(&aa).unwrap_err(),
            FileApprovalRefused::RuleNotFound { .. }
        ));
    }

    #[test]
    fn pending_or_revoked_files_grant_nothing_silently() {
        let mut aa = approval("dr.house@example.com", "2026-11-27T09:30:00Z", "");
        aa.spec.decision = Decision::Pending;
        assert_eq!(check(&aa).unwrap(), None);
        let aa = approval(
            "dr.house@example.com",
            "2026-11-27T09:30:00Z",
            "  phase: Expired",
        );
        assert_eq!(check(&aa).unwrap(), None);
    }

    #[test]
    fn a_refused_approval_file_does_not_stop_the_directory_loading() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
        let mine =
            serde_yaml::to_string(&approval("alice@example.com", "2026-11-27T09:30:00Z", ""))
                .unwrap();
        std::fs::write(dir.path().join("a-approval.yaml"), mine).unwrap();
        let inputs = load_dir(dir.path(), "clinical").unwrap();
        assert_eq!(inputs.policies.len(), 1);
        assert!(inputs.grants.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::changes_manifests;
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind};

    #[test]
    fn reading_a_manifest_is_not_a_change() {
        assert!(!changes_manifests(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!changes_manifests(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(changes_manifests(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes_manifests(&EventKind::Create(CreateKind::File)));
        assert!(changes_manifests(&EventKind::Modify(ModifyKind::Any)));
        assert!(changes_manifests(&EventKind::Remove(RemoveKind::File)));
    }
}
