//! The gateway's broker credential: from the operator's session (in memory,
//! the injected sidecar's way) or a file (YAML/JSON with `username` and
//! `password`; local runs). Never logged.

use std::path::Path;

#[derive(Clone, serde::Deserialize)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not YAML/JSON with `username` and `password` ({reason})")]
    Parse { path: String, reason: String },
    #[error("{0} has an empty username or password")]
    Empty(String),
}

impl Credentials {
    /// From the operator's session: held in memory, never written anywhere.
    pub fn new(username: String, password: String) -> Result<Self, CredentialsError> {
        if username.is_empty() || password.is_empty() {
            return Err(CredentialsError::Empty(
                "the operator's session".to_string(),
            ));
        }
        Ok(Self { username, password })
    }

    pub fn from_file(path: &Path) -> Result<Self, CredentialsError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: shown.clone(),
            source,
        })?;
        // The parse error message could quote the file (the password): keep only its position.
        let creds: Credentials =
            serde_yaml::from_str(&text).map_err(|e| CredentialsError::Parse {
                path: shown.clone(),
                reason: e
                    .location()
                    .map(|l| format!("line {}", l.line()))
                    .unwrap_or_else(|| "no location".into()),
            })?;
        if creds.username.is_empty() || creds.password.is_empty() {
            return Err(CredentialsError::Empty(shown));
        }
        Ok(creds)
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// The SASL PLAIN message: `\0username\0password`.
    pub fn plain_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(self.username.len() + self.password.len() + 2);
        m.push(0);
        m.extend_from_slice(self.username.as_bytes());
        m.push(0);
        m.extend_from_slice(self.password.as_bytes());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_yaml_and_never_shows_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.yaml");
        std::fs::write(&path, "username: gateway\npassword: s3cret-value\n").unwrap();
        let c = Credentials::from_file(&path).unwrap();
        assert_eq!(c.username, "gateway");
        assert_eq!(c.plain_message(), b"\0gateway\0s3cret-value");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn bad_files_are_clear_errors_that_do_not_quote_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.yaml");
        std::fs::write(&path, "password: [s3cret\n").unwrap();
        let err = Credentials::from_file(&path).unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
        std::fs::write(&path, "username: gw\npassword: ''\n").unwrap();
        assert!(matches!(
            Credentials::from_file(&path),
            Err(CredentialsError::Empty(_))
        ));
        assert!(matches!(
            Credentials::from_file(&dir.path().join("missing")),
            Err(CredentialsError::Read { .. })
        ));
    }
}
