//! Where an AccessApproval request goes: the Kubernetes API (with
//! `--policy-kube`) or a directory of YAML files (with `--policy-dir`).
use std::io::Write;
use std::path::{Path, PathBuf};

use kube::Api;
use streamgate_crds::AccessApproval;

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
        let name = aa.metadata.name.as_deref().ok_or(SinkError::Unnamed)?;
        let namespace = aa.metadata.namespace.as_deref().ok_or(SinkError::Unnamed)?;
        match self {
            ApprovalSink::Kube(client) => {
                let api = Api::<AccessApproval>::namespaced(client.clone(), namespace);
                match api.create(&Default::default(), aa).await {
                    Ok(_) => Ok(Created::New),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(Created::AlreadyExists),
                    Err(e) => Err(e.into()),
                }
            }
            ApprovalSink::Dir(dir) => write_new(dir, name, aa),
        }
    }
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
