//! Where an AccessApproval request goes: the Kubernetes API (with
//! `--policy-kube`) or a directory of YAML files (with `--policy-dir`).
//!
//! A request's name is deterministic (one object per requester, rule, topics
//! and operations), so a retry finds the existing request instead of filing a
//! second one. In the API server that name stays taken after the grant runs
//! out: the operator marks the object `Expired` ("request access again") and
//! nobody may change a decided request. So when the name is held by a spent
//! grant, the request is filed under the next successor name
//! `<stem>-r<N>-<hash>`; a Pending or Denied holder is left as it is (a
//! denial stands until someone removes it).
use std::io::Write;
use std::path::{Path, PathBuf};

use kube::Api;
use streamgate_crds::{AccessApproval, ApprovalPhase};

/// Kubernetes object names (and label values) are at most this long.
const MAX_NAME: usize = 63;
/// Successors of a spent request tried before giving up (one API call each).
const MAX_ATTEMPTS: u32 = 100;

/// What creating did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    New,
    /// The same request exists already (pending, decided or expired): left as it is.
    AlreadyExists,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("the AccessApproval has no name or namespace")]
    Unnamed,
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serialize the AccessApproval: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// The destination of approval requests.
#[derive(Clone)]
pub enum ApprovalSink {
    Kube(kube::Client),
    Dir(PathBuf),
}

impl std::fmt::Debug for ApprovalSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApprovalSink::Kube(_) => f.write_str("ApprovalSink::Kube"),
            ApprovalSink::Dir(d) => f.debug_tuple("ApprovalSink::Dir").field(d).finish(),
        }
    }
}

impl ApprovalSink {
    /// Create `aa` unless it exists; never overwrites a decision.
    pub async fn create(&self, aa: &AccessApproval) -> Result<Created, SinkError> {
        self.create_named(aa).await.map(|(_, created)| created)
    }

    /// [`ApprovalSink::create`], also returning the name the request has: in
    /// the API server, a successor of `aa`'s name when that name is held by a
    /// spent grant (see the module docs).
    pub async fn create_named(&self, aa: &AccessApproval) -> Result<(String, Created), SinkError> {
        let name = aa.metadata.name.as_deref().ok_or(SinkError::Unnamed)?;
        let namespace = aa.metadata.namespace.as_deref().ok_or(SinkError::Unnamed)?;
        match self {
            ApprovalSink::Kube(client) => {
                let api = Api::<AccessApproval>::namespaced(client.clone(), namespace);
                let mut obj = aa.clone();
                // The operator writes status (a break-glass record's is for
                // `--policy-dir` files); the webhook refuses one on create.
                obj.status = None;
                for attempt in 1..=MAX_ATTEMPTS {
                    let candidate = successor_name(name, attempt);
                    obj.metadata.name = Some(candidate.clone());
                    match api.create(&Default::default(), &obj).await {
                        Ok(_) => return Ok((candidate, Created::New)),
                        Err(kube::Error::Api(e)) if e.code == 409 => {
                            let holder = api.get_opt(&candidate).await?;
                            if !holder.is_some_and(|h| is_spent(&h, chrono::Utc::now())) {
                                return Ok((candidate, Created::AlreadyExists));
                            }
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok((successor_name(name, MAX_ATTEMPTS), Created::AlreadyExists))
            }
            ApprovalSink::Dir(dir) => write_new(dir, name, aa).map(|c| (name.to_string(), c)),
        }
    }
}

/// A grant that ran out: `Expired`, or `Approved` past its `expiresAt` (the
/// operator marks it Expired a moment later). Its name may be reused by a
/// successor; a Pending, Denied or live request may not.
pub fn is_spent(aa: &AccessApproval, now: chrono::DateTime<chrono::Utc>) -> bool {
    aa.status.as_ref().is_some_and(|s| {
        s.phase == ApprovalPhase::Expired || (s.phase == ApprovalPhase::Approved && !s.is_live(now))
    })
}

/// The name of the `attempt`-th filing of a request named `name`
/// (`<stem>-<hash>`): the name itself first, then `<stem>-r<N>-<hash>`, the
/// stem shortened so the name stays within 63 characters and the request's
/// hash (its identity) stays whole.
pub fn successor_name(name: &str, attempt: u32) -> String {
    if attempt <= 1 {
        return name.to_string();
    }
    let (stem, hash) = name.rsplit_once('-').unwrap_or(("aa", name));
    let suffix = format!("-r{attempt}-{hash}");
    let keep = MAX_NAME.saturating_sub(suffix.len());
    let stem: String = stem.chars().take(keep).collect();
    let stem = stem.trim_end_matches('-');
    let stem = if stem.is_empty() { "aa" } else { stem };
    format!("{stem}{suffix}")
}

/// Write `<dir>/<name>.yaml` atomically (hidden temp file + hard link), so the
/// directory source never reads half a file and an existing file — maybe
/// holding a person's decision — is never replaced.
fn write_new(dir: &Path, name: &str, aa: &AccessApproval) -> Result<Created, SinkError> {
    let target = dir.join(format!("{name}.yaml"));
    if target.exists() {
        return Ok(Created::AlreadyExists);
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SinkError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let text = serde_yaml::to_string(aa)?;
    let tmp = dir.join(format!(".{name}.yaml.tmp"));
    {
        let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(text.as_bytes()).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
    }
    // hard_link fails if the target appeared meanwhile: first writer wins.
    let linked = std::fs::hard_link(&tmp, &target);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(Created::New),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Created::AlreadyExists),
        Err(e) => Err(SinkError::Io {
            path: target,
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successors_keep_the_request_hash_and_fit_a_name() {
        let short = "write-patient-records-intake-a8aed1ebe9";
        assert_eq!(successor_name(short, 1), short);
        assert_eq!(
            successor_name(short, 2),
            "write-patient-records-intake-r2-a8aed1ebe9"
        );
        let long = format!("{}-0123456789", "x".repeat(52));
        assert_eq!(long.len(), 63);
        for attempt in [2, 10, MAX_ATTEMPTS] {
            let s = successor_name(&long, attempt);
            assert!(s.len() <= 63, "{s}");
            assert!(s.ends_with(&format!("-r{attempt}-0123456789")), "{s}");
        }
        assert_ne!(successor_name(&long, 2), successor_name(&long, 3));
    }

    #[test]
    fn only_a_grant_that_ran_out_is_spent() {
        let now = chrono::Utc::now();
        let with = |phase: ApprovalPhase, expires: Option<chrono::DateTime<chrono::Utc>>| {
            let mut aa: AccessApproval = serde_yaml::from_str(
                "apiVersion: streamgate.dev/v1alpha1\nkind: AccessApproval\nmetadata: {name: a, namespace: n}\n\
                 spec: {requester: {kind: User, name: u}, policy: p, rule: r, topics: [t], operations: [Write], duration: 1h}\n",
            )
            .unwrap();
            aa.status = Some(streamgate_crds::AccessApprovalStatus {
                phase,
                expires_at: expires.map(|t| t.to_rfc3339()),
                ..Default::default()
            });
            aa
        };
        let past = now - chrono::Duration::seconds(5);
        let future = now + chrono::Duration::seconds(60);
        assert!(is_spent(&with(ApprovalPhase::Expired, Some(past)), now));
        assert!(is_spent(&with(ApprovalPhase::Approved, Some(past)), now));
        assert!(!is_spent(&with(ApprovalPhase::Approved, Some(future)), now));
        assert!(!is_spent(&with(ApprovalPhase::Pending, None), now));
        assert!(!is_spent(&with(ApprovalPhase::Denied, None), now));
    }
}
