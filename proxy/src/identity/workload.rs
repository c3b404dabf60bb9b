//! Workload identity: the pod's own ServiceAccount, for connections that do
//! not authenticate with SASL (when the policy enables `workloadIdentity`).
//!
//! The injector fills these from the downward API:
//! - `STREAMGATE_SERVICE_ACCOUNT` (`spec.serviceAccountName`),
//! - `STREAMGATE_POD_NAME` (`metadata.name`),
//! - `STREAMGATE_POD_NAMESPACE` (`metadata.namespace`),
//! - `STREAMGATE_POD_LABELS_FILE`: the path of a downward-API *volume* file
//!   with `fieldRef: metadata.labels`. Labels come as a file rather than an
//!   env var because the kubelet keeps the file current when labels change,
//!   and a file carries any number of labels. Its format is one `key="value"`
//!   per line with the value Go-quoted (`\"`, `\\`, `\n` escapes).
//!
//! Labels select which StreamPolicies govern the pod (`workloadSelector`).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use streamgate_crds::SubjectKind;
use streamgate_crds::matching::Principal;

pub use streamgate_crds::contract::{
    ENV_POD_LABELS_FILE, ENV_POD_NAME, ENV_POD_NAMESPACE, ENV_SERVICE_ACCOUNT,
};

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("cannot read pod labels from {path}: {source}")]
    LabelsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pod labels line {line} is not key=\"value\"")]
    LabelsLine { line: usize },
}

/// Who this pod is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub service_account: String,
    pub pod_name: Option<String>,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

impl Workload {
    /// From the process environment (and the labels file it names).
    pub fn from_env() -> Result<Workload, WorkloadError> {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// From any variable source (tests pass a map).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Workload, WorkloadError> {
        let service_account =
            var(ENV_SERVICE_ACCOUNT).ok_or(WorkloadError::Missing(ENV_SERVICE_ACCOUNT))?;
        let namespace = var(ENV_POD_NAMESPACE).ok_or(WorkloadError::Missing(ENV_POD_NAMESPACE))?;
        let labels = match var(ENV_POD_LABELS_FILE) {
            Some(path) => read_labels(Path::new(&path))?,
            None => BTreeMap::new(),
        };
        Ok(Workload {
            service_account,
            pod_name: var(ENV_POD_NAME),
            namespace,
            labels,
        })
    }

    /// The principal of a connection without SASL.
    pub fn principal(&self) -> Principal {
        Principal {
            kind: SubjectKind::ServiceAccount,
            name: self.service_account.clone(),
            namespace: Some(self.namespace.clone()),
            groups: Vec::new(),
            // Kubernetes names a ServiceAccount; no token issuer does.
            issuer: None,
        }
    }
}

/// Read a downward-API labels file.
pub fn read_labels(path: &Path) -> Result<BTreeMap<String, String>, WorkloadError> {
    let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::LabelsFile {
        path: path.to_path_buf(),
        source,
    })?;
    parse_labels(&text)
}

/// Parse `key="value"` lines (blank lines ignored).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, WorkloadError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = || WorkloadError::LabelsLine { line: i + 1 };
        let (key, value) = line.split_once('=').ok_or_else(bad)?;
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(bad)?;
        if key.is_empty() {
            return Err(bad());
        }
        out.insert(key.to_string(), unquote(value).ok_or_else(bad)?);
    }
    Ok(out)
}

fn unquote(v: &str) -> Option<String> {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_downward_api_label_files() {
        let l = parse_labels("app=\"billing\"\npod-template-hash=\"5d8f7\"\n\napp.kubernetes.io/name=\"a \\\"q\\\" b\"\n").unwrap();
        assert_eq!(l["app"], "billing");
        assert_eq!(l["pod-template-hash"], "5d8f7");
        assert_eq!(l["app.kubernetes.io/name"], "a \"q\" b");
        assert!(matches!(
            parse_labels("app=billing"),
            Err(WorkloadError::LabelsLine { line: 1 })
        ));
        assert!(matches!(
            parse_labels("a=\"x\"\nnoequals"),
            Err(WorkloadError::LabelsLine { line: 2 })
        ));
        assert!(matches!(
            parse_labels("=\"x\""),
            Err(WorkloadError::LabelsLine { line: 1 })
        ));
    }

    #[test]
    fn workload_from_vars() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("labels");
        std::fs::write(&file, "app=\"billing\"\n").unwrap();
        let file_s = file.to_string_lossy().to_string();
        let vars = [
            (ENV_SERVICE_ACCOUNT, "billing-app"),
            (ENV_POD_NAME, "billing-1"),
            (ENV_POD_NAMESPACE, "clinical"),
            (ENV_POD_LABELS_FILE, file_s.as_str()),
        ];
        let get = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let w = Workload::from_vars(get).unwrap();
        assert_eq!(w.labels["app"], "billing");
        let p = w.principal();
        assert_eq!(
            (p.kind, p.name.as_str(), p.namespace.as_deref()),
            (SubjectKind::ServiceAccount, "billing-app", Some("clinical"))
        );
        assert!(matches!(
            Workload::from_vars(|_| None),
            Err(WorkloadError::Missing(ENV_SERVICE_ACCOUNT))
        ));
        let missing_file = |k: &str| {
            if k == ENV_POD_LABELS_FILE {
                Some("/nonexistent/labels".into())
            } else {
                get(k)
            }
        };
        assert!(matches!(
            Workload::from_vars(missing_file),
            Err(WorkloadError::LabelsFile { .. })
        ));
    }
}
