//! `--policy-dir DIR`: the policy from YAML manifests in a directory.
//!
//! Every `*.yaml` / `*.yml` file of the directory (not recursive; hidden
//! entries such as a ConfigMap mount's `..data` are skipped, the symlinks to
//! them are read) may hold several documents in the CRD format. StreamPolicy,
//! MaskingRule and AccessApproval are used; other kinds are ignored with a
//! debug log; objects of another namespace than the pod's are ignored.
//! The directory is watched (notify, ~100 ms debounce); a directory that
//! does not parse as a whole is rejected and the last good policy stays.
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use serde_yaml::Value;
use streamgate_crds::{AccessApproval, MaskingRule, StreamPolicy};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::decide::{Grant, MaskingDoc, PolicyDoc};
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

/// Parse the manifests of one file into `into`.
pub fn parse_manifests(
    text: &str,
    path: &Path,
    namespace: &str,
    into: &mut PolicyInputs,
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
                let (name, ns) = (name_of(&sp.metadata)?, ns_of(&sp.metadata));
                if let Some(dup) = duplicate_rule(&sp) {
                    return Err(bad(format!(
                        "StreamPolicy {name}: rule name {dup:?} is used twice"
                    )));
                }
                if ns == namespace {
                    into.policies.push(PolicyDoc {
                        name,
                        namespace: ns,
                        generation: sp.metadata.generation,
                        spec: sp.spec,
                    });
                }
            }
            "MaskingRule" => {
                let mr: MaskingRule =
                    serde_yaml::from_value(value).map_err(|e| bad(e.to_string()))?;
                let (name, ns) = (name_of(&mr.metadata)?, ns_of(&mr.metadata));
                if ns == namespace {
                    into.masking.push(MaskingDoc {
                        name,
                        namespace: ns,
                        generation: mr.metadata.generation,
                        spec: mr.spec,
                    });
                }
            }
            "AccessApproval" => {
                let aa: AccessApproval =
                    serde_yaml::from_value(value).map_err(|e| bad(e.to_string()))?;
                if ns_of(&aa.metadata) == namespace
                    && let Some(g) = Grant::from_approval(&aa)
                {
                    into.grants.push(g);
                }
            }
            other => {
                tracing::debug!(path = %path.display(), doc, kind = other, "ignoring an unknown streamgate kind")
            }
        }
    }
    Ok(())
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
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        parse_manifests(&text, &path, namespace, &mut inputs)?;
    }
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
