//! IO edge: reads a `hashKeySecretRef` from a mounted Secret volume,
//! `--secret-dir DIR` → `DIR/<secret name>/<key>`. The bytes are used exactly
//! as stored (Kubernetes does not add a newline). Errors name the file,
//! never its contents.
use std::path::{Path, PathBuf};

use streamgate_crds::SecretKeyRef;

use super::strategy::HashKey;

/// Why a key cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("secret reference {name}/{key} is not a plain file name")]
    BadReference { name: String, key: String },
    #[error("cannot read the hash key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the hash key file {path} is empty")]
    Empty { path: PathBuf },
}

/// Reads the HMAC key named by `r` below `secret_dir`.
pub fn read_hash_key(secret_dir: &Path, r: &SecretKeyRef) -> Result<HashKey, KeyError> {
    // Kubernetes names and keys never hold `/` or `..`; refusing them keeps a
    // rule from pointing the sidecar at arbitrary files.
    let plain = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\', '\0']);
    if !plain(&r.name) || !plain(&r.key) {
        return Err(KeyError::BadReference {
            name: r.name.clone(),
            key: r.key.clone(),
        });
    }
    let path = secret_dir.join(&r.name).join(&r.key);
    let bytes = std::fs::read(&path).map_err(|source| KeyError::Read {
        path: path.clone(),
        source,
    })?;
    HashKey::new(bytes).ok_or(KeyError::Empty { path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: name.into(),
            key: key.into(),
        }
    }

    #[test]
    fn reads_the_mounted_secret_layout() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("masking-key")).unwrap();
        std::fs::write(dir.path().join("masking-key/hmac"), b"k3y").unwrap();
        let k = read_hash_key(dir.path(), &r("masking-key", "hmac")).unwrap();
        assert_eq!(k, HashKey::new(b"k3y".to_vec()).unwrap());

        let e = read_hash_key(dir.path(), &r("masking-key", "other")).unwrap_err();
        assert!(matches!(e, KeyError::Read { .. }), "{e}");
        std::fs::write(dir.path().join("masking-key/empty"), b"").unwrap();
        assert!(matches!(
            read_hash_key(dir.path(), &r("masking-key", "empty")),
            Err(KeyError::Empty { .. })
        ));
        for (n, k) in [
            ("..", "hmac"),
            ("a/b", "hmac"),
            ("masking-key", "../x"),
            ("", "hmac"),
        ] {
            assert!(matches!(
                read_hash_key(dir.path(), &r(n, k)),
                Err(KeyError::BadReference { .. })
            ));
        }
    }
}
