//! The AccessApproval a sidecar creates for one refused request (pure).
use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use sha2::{Digest, Sha256};
use streamgate_crds::access_approval::{Decision, Requester, RequesterOidc, WorkloadRef};
use streamgate_crds::matching::Principal;
use streamgate_crds::validation::{ValidationErrors, validate_access_approval};
use streamgate_crds::{AccessApproval, AccessApprovalSpec, Operation, SubjectKind};

/// Label carrying the rule name (for `kubectl get aa -l streamgate.dev/rule=..`).
pub const LABEL_RULE: &str = "streamgate.dev/rule";
/// Label carrying a hash of the requester (names may not be label values).
pub const LABEL_REQUESTER_HASH: &str = "streamgate.dev/requester-hash";

/// Kubernetes object names: at most 63 characters keeps them valid labels too.
const MAX_NAME: usize = 63;
const HASH_LEN: usize = 10;
const SLUG_LEN: usize = 20;

/// Everything one approval request is about.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalRequest {
    pub principal: Principal,
    /// The pod the request came through, if known.
    pub pod: Option<String>,
    pub service_account: Option<String>,
    /// Where the AccessApproval is created (the pod's namespace).
    pub namespace: String,
    pub policy: String,
    pub rule: String,
    pub topics: Vec<String>,
    pub operations: Vec<Operation>,
    /// Requested duration: the rule's `maxDuration` (of `approval`, or of
    /// `breakGlass` for a break-glass record).
    pub duration: String,
    /// A record of a break-glass use rather than a request: the reason and
    /// when the invocation began.
    pub break_glass: Option<BreakGlassUse>,
}

/// The break-glass use an AccessApproval records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakGlassUse {
    pub reason: String,
    pub since: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the AccessApproval would be invalid: {0}")]
    Invalid(#[from] ValidationErrors),
}

impl ApprovalRequest {
    /// Topics and operations sorted and de-duplicated, so that the same
    /// request always gets the same name.
    pub fn normalized(mut self) -> Self {
        self.topics.sort();
        self.topics.dedup();
        self.operations.sort_by_key(|o| format!("{o:?}"));
        self.operations.dedup();
        self
    }

    /// Who asks: kind, name, namespace for ServiceAccounts, and the issuer
    /// for users (a same-named user of another issuer is someone else, and
    /// gets an AccessApproval of their own). A principal without an issuer
    /// hashes as before issuers were recorded.
    fn requester_parts(&self) -> Vec<&str> {
        let p = &self.principal;
        let mut parts = vec![
            kind_str(&p.kind),
            p.name.as_str(),
            p.namespace.as_deref().unwrap_or(""),
        ];
        if let Some(issuer) = &p.issuer {
            parts.extend(["issuer", issuer.as_str()]);
        }
        parts
    }

    /// Hash of who asks (see `requester_parts`).
    pub fn requester_hash(&self) -> String {
        short_hash(&self.requester_parts())
    }

    /// Hash of the whole request: requester + policy + rule + topics + operations.
    pub fn request_hash(&self) -> String {
        let ops: Vec<String> = self.operations.iter().map(|o| format!("{o:?}")).collect();
        let mut parts: Vec<&str> = self.requester_parts();
        parts.extend([self.policy.as_str(), self.rule.as_str(), "topics"]);
        parts.extend(self.topics.iter().map(String::as_str));
        parts.push("ops");
        parts.extend(ops.iter().map(String::as_str));
        // Each invocation (its reason) is a use of its own, reviewed on its own.
        if let Some(bg) = &self.break_glass {
            parts.extend(["break-glass", bg.reason.as_str()]);
        }
        short_hash(&parts)
    }

    /// `<rule>-<subject-slug>-<hash>`, DNS-1123, at most 63 characters.
    pub fn object_name(&self) -> String {
        let slug: String = slug(&self.principal.name).chars().take(SLUG_LEN).collect();
        let stem = slug_join(&self.rule, &slug);
        let keep = MAX_NAME - HASH_LEN - 1;
        let stem: String = stem.chars().take(keep).collect();
        let stem = stem.trim_end_matches('-');
        let hash = self.request_hash();
        if stem.is_empty() {
            format!("aa-{hash}")
        } else {
            format!("{stem}-{hash}")
        }
    }
}

fn kind_str(kind: &SubjectKind) -> &'static str {
    match kind {
        SubjectKind::User => "User",
        SubjectKind::Group => "Group",
        SubjectKind::ServiceAccount => "ServiceAccount",
    }
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefix each part so ("ab","c") and ("a","bc") differ.
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())[..HASH_LEN].to_string()
}

/// Lowercase alphanumerics with single dashes between runs (`alice@example.com` → `alice-example-com`).
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

fn slug_join(a: &str, b: &str) -> String {
    let a = slug(a);
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (false, true) => a,
        (false, false) => format!("{a}-{b}"),
    }
}

/// The Pending AccessApproval for `request`, validated like the operator would.
pub fn build_access_approval(request: ApprovalRequest) -> Result<AccessApproval, BuildError> {
    build_access_approval_with(request, None)
}

/// [`build_access_approval`], recording in `spec.requester.oidc` which issuer
/// and claim the requester's name came from, so the approval webhook can
/// map it to the Kubernetes username the same person decides with.
pub fn build_access_approval_with(
    request: ApprovalRequest,
    oidc: Option<RequesterOidc>,
) -> Result<AccessApproval, BuildError> {
    // Only an OIDC user has claims; a ServiceAccount is named by Kubernetes.
    let oidc = oidc.filter(|_| request.principal.kind == SubjectKind::User);
    let request = request.normalized();
    let name = request.object_name();
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_RULE.to_string(), slug(&request.rule));
    labels.insert(LABEL_REQUESTER_HASH.to_string(), request.requester_hash());
    let workload = request.pod.clone().map(|pod| WorkloadRef {
        pod,
        service_account: request.service_account.clone(),
    });
    let spec = AccessApprovalSpec {
        requester: Requester {
            kind: request.principal.kind.clone(),
            name: request.principal.name.clone(),
            groups: request.principal.groups.clone(),
            oidc,
        },
        workload,
        policy: request.policy.clone(),
        rule: request.rule.clone(),
        topics: request.topics.clone(),
        operations: request.operations.clone(),
        duration: request.duration.clone(),
        decision: Decision::Pending,
        decided_by: None,
        break_glass: request.break_glass.is_some(),
        reason: request.break_glass.as_ref().map(|b| b.reason.clone()),
        review: None,
        review_note: None,
        reviewed_by: None,
    };
    validate_access_approval(&spec)?;
    // What the operator will write (the API server ignores status on
    // create): in `--policy-dir` mode the file itself is the record, and a
    // Pending break-glass file grants nothing there (see `source_dir`).
    let status = request.break_glass.as_ref().map(|bg| {
        let expires = crate::policy::decide::grant_end(bg.since, &request.duration);
        streamgate_crds::AccessApprovalStatus {
            phase: streamgate_crds::ApprovalPhase::BreakGlass,
            decided_at: Some(bg.since.to_rfc3339()),
            expires_at: expires.map(|t| t.to_rfc3339()),
            ..Default::default()
        }
    });
    let mut aa = AccessApproval::new(&name, spec);
    aa.metadata = ObjectMeta {
        name: Some(name),
        namespace: Some(request.namespace.clone()),
        labels: Some(labels),
        ..ObjectMeta::default()
    };
    aa.status = status;
    Ok(aa)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> ApprovalRequest {
        ApprovalRequest {
            principal: Principal {
                kind: SubjectKind::User,
                name: "alice@example.com".into(),
                namespace: None,
                groups: vec!["clinicians".into()],
                issuer: Some("https://idp.example.com".into()),
            },
            pod: Some("intake-5d8f7-abcde".into()),
            service_account: Some("intake".into()),
            namespace: "clinical".into(),
            policy: "phi-access".into(),
            rule: "write-patient-records".into(),
            topics: vec!["patient-records".into()],
            operations: vec![Operation::Write],
            duration: "1h".into(),
            break_glass: None,
        }
    }

    #[test]
    fn slug_is_dns_safe() {
        assert_eq!(slug("Alice@Example.com"), "alice-example-com");
        assert_eq!(slug("--x__y--"), "x-y");
    }

    #[test]
    fn order_of_topics_does_not_change_the_name() {
        let mut a = alice();
        a.topics = vec!["b".into(), "a".into()];
        let mut b = alice();
        b.topics = vec!["a".into(), "b".into(), "a".into()];
        assert_eq!(a.normalized().object_name(), b.normalized().object_name());
    }
}
