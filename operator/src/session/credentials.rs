//! Which broker credential each governed namespace's sidecars get: a
//! cluster-admin mapping `namespace: <Secret name>`, the Secrets living in
//! the operator's namespace (key `credentials`, YAML `username`/`password`),
//! where no pod creator of an app namespace can mount or read them.
use std::collections::BTreeMap;

use streamgate_crds::contract::SessionCredentials;

/// Namespace → Secret (in the operator's namespace).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialSecrets(pub BTreeMap<String, String>);

/// A credential map or Secret that cannot be used. Never quotes Secret data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("sidecar credentials: not a YAML map of namespace to Secret name ({0})")]
    Map(String),
    #[error("sidecar credentials: namespace {0:?} maps to an empty Secret name")]
    EmptyName(String),
    #[error(
        "Secret {namespace}/{name} has no key {key:?}, or it is not YAML with a non-empty username and password{at}"
    )]
    Secret {
        namespace: String,
        name: String,
        key: &'static str,
        at: String,
    },
}

impl CredentialSecrets {
    pub fn parse(text: &str) -> Result<Self, CredentialError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let map: BTreeMap<String, String> =
            serde_yaml::from_str(text).map_err(|e| CredentialError::Map(e.to_string()))?;
        if let Some((ns, _)) = map.iter().find(|(_, s)| s.trim().is_empty()) {
            return Err(CredentialError::EmptyName(ns.clone()));
        }
        Ok(Self(map))
    }

    pub fn secret_for(&self, namespace: &str) -> Option<&str> {
        self.0.get(namespace).map(String::as_str)
    }
}

/// The credential from the Secret's `credentials` value. The parse error is
/// reduced to a line number: serde's message could quote the password.
pub fn parse_secret_value(
    namespace: &str,
    name: &str,
    value: Option<&[u8]>,
) -> Result<SessionCredentials, CredentialError> {
    let key = streamgate_crds::contract::UPSTREAM_CREDENTIALS_KEY;
    let refuse = |at: String| CredentialError::Secret {
        namespace: namespace.to_string(),
        name: name.to_string(),
        key,
        at,
    };
    let text = value
        .and_then(|v| std::str::from_utf8(v).ok())
        .ok_or_else(|| refuse(String::new()))?;
    let creds: SessionCredentials = serde_yaml::from_str(text).map_err(|e| {
        refuse(
            e.location()
                .map(|l| format!(" (line {})", l.line()))
                .unwrap_or_default(),
        )
    })?;
    if creds.username.is_empty() || creds.password.is_empty() {
        return Err(refuse(String::new()));
    }
    Ok(creds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_namespaces_to_secrets() {
        let m =
            CredentialSecrets::parse("clinical: kafka-clinical\nbilling: kafka-billing\n").unwrap();
        assert_eq!(m.secret_for("clinical"), Some("kafka-clinical"));
        assert_eq!(m.secret_for("other"), None);
        assert!(CredentialSecrets::parse("").unwrap().0.is_empty());
        assert_eq!(
            CredentialSecrets::parse("clinical: ''").unwrap_err(),
            CredentialError::EmptyName("clinical".into())
        );
    }

    #[test]
    fn a_bad_secret_never_shows_its_value() {
        let e = parse_secret_value("sg", "k", Some(b"username: gw\npassword: [s3cret-value"))
            .unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let ok =
            parse_secret_value("sg", "k", Some(b"username: gw\npassword: s3cret-value\n")).unwrap();
        assert_eq!(ok.username, "gw");
        assert!(!format!("{ok:?}").contains("s3cret"));
        assert!(parse_secret_value("sg", "k", None).is_err());
    }
}
