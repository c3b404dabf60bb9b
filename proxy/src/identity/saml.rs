//! SAML 2.0 identity: a signed Assertion (or signed Response), base64 or
//! base64url encoded (RFC 7522's shape), presented as the SASL/OAUTHBEARER
//! token.
//!
//! - `verify`   — the pure core: token + certificates + clock → principal
//! - `metadata` — the IdP's signing certificates from its metadata
//! - `replay`   — the one-time-use cache of assertion IDs
//!
//! The signature itself is checked by samael (libxml2 + xmlsec1); nothing
//! here canonicalises or hashes XML. A refusal's message names the check
//! that failed, never the assertion or its subject.
pub mod metadata;
pub mod replay;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use samael::crypto::CertificateDer;
use streamgate_crds::SamlIdentity;
use tokio::sync::Mutex;

use super::jwt::{IssuerSet, JwtError, ValidatedToken};
use super::sasl::TokenVerifier;
use replay::ReplayCache;

/// Why an assertion was refused. Messages are safe to send to the client
/// and to audit: they never carry the assertion or the subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamlError {
    #[error("malformed SAML token: {0}")]
    Malformed(&'static str),
    #[error("unsupported SAML token: {0}")]
    Unsupported(&'static str),
    #[error("SAML token refused (signature wrapping defence): {0}")]
    Wrapping(String),
    #[error("SAML signature is missing or invalid (no IdP metadata certificate verifies it)")]
    BadSignature,
    #[error("SAML assertion issuer is not trusted")]
    WrongIssuer,
    #[error("SAML assertion audience does not name this gate")]
    WrongAudience,
    #[error("SAML assertion has expired (NotOnOrAfter)")]
    Expired,
    #[error("SAML assertion is not valid yet (NotBefore)")]
    NotYetValid,
    #[error("SAML bearer confirmation has expired (SubjectConfirmationData NotOnOrAfter)")]
    ConfirmationExpired,
    #[error("SAML assertion lacks {0}")]
    Missing(&'static str),
    #[error("SAML assertion lacks the subject attribute {0:?}")]
    MissingAttribute(String),
    #[error("SAML Response status is not Success")]
    NotSuccess,
    #[error("SAML assertion was already used (one-time use)")]
    Replayed,
    #[error("no SAML IdP is configured for this workload")]
    NoIdp,
    #[error("cannot read the SAML IdP metadata: {0}")]
    MetadataUnavailable(String),
}

/// Where the metadata comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataSource {
    File(PathBuf),
    Url(String),
}

/// How assertions of one IdP are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SamlConfig {
    /// The IdP entity id: the assertion Issuer and the metadata entityID.
    pub issuer: String,
    /// The gate's SP entity id, required in every AudienceRestriction.
    pub audience: String,
    /// `None`: the Subject's NameID names the user.
    pub subject_attribute: Option<String>,
    pub groups_attribute: String,
    pub clock_skew: Duration,
    pub one_time_use: bool,
    pub metadata: MetadataSource,
    /// Fetch metadata over plain http (`--allow-insecure-issuers`).
    pub allow_insecure: bool,
}

impl From<&SamlIdentity> for SamlConfig {
    fn from(s: &SamlIdentity) -> Self {
        let metadata = match (&s.metadata.file, &s.metadata.url) {
            (Some(f), _) => MetadataSource::File(PathBuf::from(f)),
            (None, Some(u)) => MetadataSource::Url(u.clone()),
            // Validation refuses this; an empty path then fails to read (closed).
            (None, None) => MetadataSource::File(PathBuf::new()),
        };
        SamlConfig {
            issuer: s.issuer.clone(),
            audience: s.audience.clone(),
            subject_attribute: s.subject_attribute.clone(),
            groups_attribute: s
                .groups_attribute
                .clone()
                .unwrap_or_else(|| "groups".into()),
            // Validation caps it at 600; clamped here too, whatever the source.
            clock_skew: Duration::from_secs(u64::from(s.clock_skew_seconds.unwrap_or(30).min(600))),
            one_time_use: s.one_time_use,
            metadata,
            allow_insecure: false,
        }
    }
}

/// URL metadata is refetched this often, and at most this often after a
/// signature no cached certificate verifies (a rotation in progress).
const URL_REFRESH: Duration = Duration::from_secs(300);
const URL_RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct CertCache {
    certs: Arc<Vec<CertificateDer>>,
    fetched_at: Option<Instant>,
    /// The file's modification time and length when read: a changed file
    /// (a rotated ConfigMap) is read again before the next verification.
    file_stamp: Option<(SystemTime, u64)>,
}

/// Verifies assertions of one IdP; caches its certificates and used IDs.
#[derive(Debug)]
pub struct SamlIdp {
    cfg: SamlConfig,
    http: reqwest::Client,
    certs: Mutex<CertCache>,
    replay: std::sync::Mutex<ReplayCache>,
}

impl SamlIdp {
    pub fn new(cfg: SamlConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        SamlIdp {
            cfg,
            http,
            certs: Mutex::new(CertCache::default()),
            replay: std::sync::Mutex::new(ReplayCache::default()),
        }
    }

    pub fn config(&self) -> &SamlConfig {
        &self.cfg
    }

    /// Verify a token already inspected (see [`verify::inspect`]).
    async fn validate(&self, inspected: &verify::Inspected) -> Result<ValidatedToken, SamlError> {
        let certs = self.certificates(false).await?;
        let now = chrono::Utc::now();
        let verified = match verify::verify_inspected(inspected, &certs, &self.cfg, now) {
            // Perhaps signed with a key the metadata gained since it was read.
            Err(SamlError::BadSignature) => {
                let fresh = self.certificates(true).await?;
                if Arc::ptr_eq(&fresh, &certs) {
                    return Err(SamlError::BadSignature);
                }
                verify::verify_inspected(inspected, &fresh, &self.cfg, now)?
            }
            other => other?,
        };
        if self.cfg.one_time_use {
            let mut replay = self
                .replay
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now_s = u64::try_from(now.timestamp()).unwrap_or(0);
            // Kept until expiry plus skew: until then the gate would accept it.
            let keep_until = verified.expires_at + self.cfg.clock_skew.as_secs();
            if !replay.insert(&verified.id, keep_until, now_s) {
                return Err(SamlError::Replayed);
            }
        }
        Ok(ValidatedToken {
            principal: verified.principal,
            expires_at: verified.expires_at,
        })
    }

    /// The IdP's certificates: a file re-read when it changed; a URL
    /// refetched every [`URL_REFRESH`], or after [`URL_RETRY`] when `retry`.
    async fn certificates(&self, retry: bool) -> Result<Arc<Vec<CertificateDer>>, SamlError> {
        let mut cache = self.certs.lock().await;
        match &self.cfg.metadata {
            MetadataSource::File(path) => {
                let meta = tokio::fs::metadata(path).await.map_err(|e| {
                    SamlError::MetadataUnavailable(format!("{}: {e}", path.display()))
                })?;
                let stamp = (
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    meta.len(),
                );
                if cache.file_stamp != Some(stamp) {
                    let xml = tokio::fs::read_to_string(path).await.map_err(|e| {
                        SamlError::MetadataUnavailable(format!("{}: {e}", path.display()))
                    })?;
                    cache.certs = Arc::new(metadata::signing_certificates(&xml, &self.cfg.issuer)?);
                    cache.file_stamp = Some(stamp);
                    tracing::info!(idp = %self.cfg.issuer, certificates = cache.certs.len(), "read SAML IdP metadata");
                }
            }
            MetadataSource::Url(url) => {
                let age = cache.fetched_at.map(|t| t.elapsed());
                let stale = match age {
                    None => true,
                    Some(age) => age >= URL_REFRESH || (retry && age >= URL_RETRY),
                };
                if stale {
                    match self.fetch(url).await {
                        Ok(certs) => {
                            cache.certs = Arc::new(certs);
                            cache.fetched_at = Some(Instant::now());
                        }
                        Err(e) if cache.fetched_at.is_some() => {
                            tracing::warn!(idp = %self.cfg.issuer, error = %e, "SAML metadata refresh failed; keeping cached certificates");
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(Arc::clone(&cache.certs))
    }

    async fn fetch(&self, url: &str) -> Result<Vec<CertificateDer>, SamlError> {
        let https = reqwest::Url::parse(url).is_ok_and(|u| u.scheme() == "https");
        if !https && !self.cfg.allow_insecure {
            // Certificates fetched without TLS could be anyone's.
            return Err(SamlError::MetadataUnavailable(format!(
                "{url:?} is not https:// ({} allows it, for a local test IdP only)",
                super::jwt::ALLOW_INSECURE_FLAG
            )));
        }
        let unavailable = |e: reqwest::Error| SamlError::MetadataUnavailable(e.to_string());
        let xml = self
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .text()
            .await
            .map_err(unavailable)?;
        metadata::signing_certificates(&xml, &self.cfg.issuer)
    }
}

/// The IdPs every governing policy trusts. Rebuild with [`SamlSet::reconcile`]
/// on policy changes; an unchanged IdP keeps its caches (and its used IDs).
#[derive(Debug, Default, Clone)]
pub struct SamlSet {
    idps: Vec<Arc<SamlIdp>>,
}

impl SamlSet {
    pub fn reconcile(&self, configs: Vec<SamlConfig>) -> Self {
        let idps = configs
            .into_iter()
            .map(|c| {
                self.idps
                    .iter()
                    .find(|i| i.cfg == c)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(SamlIdp::new(c)))
            })
            .collect();
        SamlSet { idps }
    }

    pub fn is_empty(&self) -> bool {
        self.idps.is_empty()
    }

    /// Verify with the IdP the assertion names (unverified, only to choose
    /// whose certificates must then verify it).
    pub async fn validate(&self, token: &str) -> Result<ValidatedToken, SamlError> {
        if self.idps.is_empty() {
            return Err(SamlError::NoIdp);
        }
        let inspected = verify::inspect(token)?;
        let idp = self
            .idps
            .iter()
            .find(|i| inspected.issuer_hint.as_deref() == Some(i.cfg.issuer.as_str()))
            .ok_or(SamlError::WrongIssuer)?;
        idp.validate(&inspected).await
    }
}

/// A compact JWT always has dots; base64 of XML never does.
pub fn looks_like_jwt(token: &str) -> bool {
    token.contains('.')
}

/// The bearer-token verifiers of the policy in force: OIDC issuers and SAML
/// IdPs. A token is routed by its shape; each kind is refused by its own rules.
#[derive(Debug, Clone, Default)]
pub struct Verifiers {
    pub oidc: IssuerSet,
    pub saml: SamlSet,
}

impl TokenVerifier for Verifiers {
    async fn verify(&self, token: &str) -> Result<ValidatedToken, JwtError> {
        if self.saml.is_empty() || looks_like_jwt(token) {
            return self.oidc.validate(token).await;
        }
        Ok(self.saml.validate(token).await?)
    }
}

#[cfg(test)]
mod tests;
