//! JWT bearer-token validation against an OIDC issuer.
//!
//! `jsonwebtoken` (RustCrypto backend) verifies signatures and the registered
//! claims; `reqwest` fetches the issuer's discovery document and JWKS.
//!
//! Order of checks, each with its own error so a refused client learns why
//! (the token itself is never part of an error): shape → `alg` against the
//! allow-list (asymmetric algorithms only, *before* any key is looked at, so
//! `none` and HMAC-with-a-public-key never reach a verifier) → key by `kid`
//! (an unknown `kid` refreshes the JWKS, at most once per
//! `min_refresh_interval`) → the key's own `alg`, if it states one, must equal
//! the token's → signature → `iss` exact → `aud` any-of → `exp`/`nbf` with
//! `leeway` → username and groups claims.
//!
//! Transport: an issuer's discovery document and keys are fetched over
//! `https://` only. Over plain http anyone on the network path could serve
//! their own keys and mint any token, so an `http://` issuer (or `jwks_uri`)
//! is refused — with [`JwtError::InsecureIssuer`], naming the flag — unless
//! the sidecar runs with `--allow-insecure-issuers` (a local test IdP).
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::Value;
use streamgate_crds::matching::Principal;
use streamgate_crds::{OidcIdentity, SubjectKind};
use tokio::sync::Mutex;

/// Algorithms accepted in a token header. Asymmetric only: a token signed
/// with a shared secret (HS*) would let anyone holding the issuer's *public*
/// key mint tokens.
pub const ALLOWED_ALGORITHMS: &[(&str, Algorithm)] = &[
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// How tokens of one issuer are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub username_claim: String,
    pub groups_claim: String,
    /// Clock skew tolerated on `exp`/`nbf`.
    pub leeway: Duration,
    /// An unknown `kid` refetches the JWKS at most this often.
    pub min_refresh_interval: Duration,
    /// Trust an `http://` issuer and `jwks_uri` (`--allow-insecure-issuers`);
    /// otherwise only `https://` ones are fetched.
    pub allow_insecure: bool,
}

impl From<&OidcIdentity> for OidcConfig {
    fn from(o: &OidcIdentity) -> Self {
        OidcConfig {
            issuer: o.issuer.clone(),
            audiences: o.audiences.clone(),
            username_claim: o.username_claim.clone().unwrap_or_else(|| "sub".into()),
            groups_claim: o.groups_claim.clone().unwrap_or_else(|| "groups".into()),
            leeway: Duration::from_secs(30),
            min_refresh_interval: Duration::from_secs(10),
            allow_insecure: false,
        }
    }
}

/// The flag (and variable) that lets the sidecar trust plain-http issuers.
pub const ALLOW_INSECURE_FLAG: &str = "--allow-insecure-issuers";

/// Is `url` fetched over TLS? (Parsed, so the scheme's case does not matter.)
fn is_https(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| u.scheme() == "https")
}

impl OidcConfig {
    /// May this issuer be used? `https://`, or anything with `allow_insecure`.
    pub fn check_transport(&self) -> Result<(), JwtError> {
        if self.allow_insecure || is_https(&self.issuer) {
            Ok(())
        } else {
            Err(JwtError::InsecureIssuer(self.issuer.clone()))
        }
    }
}

/// Why a token was refused. Messages are safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token algorithm {0:?} is not allowed (asymmetric algorithms only)")]
    AlgorithmNotAllowed(String),
    #[error("token signing key {0:?} is not in the issuer's key set")]
    UnknownKey(String),
    #[error("token signing key does not fit algorithm {0}")]
    KeyAlgorithmMismatch(String),
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token issuer is not trusted")]
    WrongIssuer,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token lacks the required claim {0:?}")]
    MissingClaim(String),
    #[error("token claim {0:?} has the wrong type")]
    BadClaim(String),
    #[error("cannot fetch the issuer's keys: {0}")]
    KeysUnavailable(String),
    #[error("no OIDC issuer is configured for this workload")]
    NoIssuer,
    #[error(
        "OIDC issuer {0:?} is not an https:// URL: its keys would be fetched without TLS, so it is not trusted (a sidecar started with {ALLOW_INSECURE_FLAG}, or {env}=true, accepts it, for a local test IdP only)",
        env = streamgate_crds::contract::ENV_ALLOW_INSECURE_ISSUERS
    )]
    InsecureIssuer(String),
    /// The token was a SAML assertion (see `identity::saml`).
    #[error("{0}")]
    Saml(#[from] super::saml::SamlError),
}

/// A token that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedToken {
    pub principal: Principal,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
}

impl ValidatedToken {
    /// KIP-368 `session_lifetime_ms`: how long until the token expires.
    pub fn session_lifetime_ms(&self, now: SystemTime) -> i64 {
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let exp_ms = u128::from(self.expires_at) * 1000;
        i64::try_from(exp_ms.saturating_sub(now_ms)).unwrap_or(i64::MAX)
    }
}

/// The `alg` and `kid` of a token header, read without trusting anything.
fn peek_header(token: &str) -> Result<(String, Option<String>), JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)?;
    let header: Value = serde_json::from_slice(&raw).map_err(|_| JwtError::Malformed)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwtError::Malformed)?
        .to_string();
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((alg, kid))
}

/// The unverified `iss` claim: only used to pick which issuer's rules apply.
pub fn peek_issuer(token: &str) -> Result<String, JwtError> {
    let payload = token.split('.').nth(1).ok_or(JwtError::Malformed)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)?;
    let claims: Value = serde_json::from_slice(&raw).map_err(|_| JwtError::Malformed)?;
    Ok(claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| JwtError::MissingClaim("iss".into()))?
        .to_string())
}

fn alg_name(alg: Algorithm) -> &'static str {
    ALLOWED_ALGORITHMS
        .iter()
        .find(|(_, a)| *a == alg)
        .map_or("", |(n, _)| n)
}

fn allowed_algorithm(alg: &str) -> Result<Algorithm, JwtError> {
    ALLOWED_ALGORITHMS
        .iter()
        .find(|(name, _)| *name == alg)
        .map(|(_, a)| *a)
        .ok_or_else(|| JwtError::AlgorithmNotAllowed(alg.to_string()))
}

/// Outcome of looking a key up in a key set.
#[derive(Debug)]
pub enum KeyLookup<'a> {
    Found(&'a Jwk),
    Unknown(String),
}

fn find_key<'a>(keys: &'a [Jwk], kid: Option<&str>) -> KeyLookup<'a> {
    match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .map_or_else(|| KeyLookup::Unknown(kid.to_string()), KeyLookup::Found),
        // No kid: only unambiguous with a single key.
        None if keys.len() == 1 => KeyLookup::Found(&keys[0]),
        None => KeyLookup::Unknown("(no kid)".into()),
    }
}

/// Pure verification of `token` with a known key set (no IO).
pub fn verify_with_keys(
    token: &str,
    keys: &[Jwk],
    cfg: &OidcConfig,
) -> Result<ValidatedToken, JwtError> {
    let (alg_name, kid) = peek_header(token)?;
    let alg = allowed_algorithm(&alg_name)?;
    let jwk = match find_key(keys, kid.as_deref()) {
        KeyLookup::Found(k) => k,
        KeyLookup::Unknown(kid) => return Err(JwtError::UnknownKey(kid)),
    };
    verify_with_jwk(token, alg, jwk, cfg)
}

fn verify_with_jwk(
    token: &str,
    alg: Algorithm,
    jwk: &Jwk,
    cfg: &OidcConfig,
) -> Result<ValidatedToken, JwtError> {
    // The JWK's own `alg` (serialized as its JOSE name) must be the token's.
    if let Some(key_alg) = jwk.common.key_algorithm
        && serde_json::to_value(key_alg)
            .ok()
            .as_ref()
            .and_then(Value::as_str)
            != Some(alg_name(alg))
    {
        return Err(JwtError::KeyAlgorithmMismatch(format!("{alg:?}")));
    }
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|_| JwtError::KeyAlgorithmMismatch(format!("{alg:?}")))?;
    if key.family() != alg.family() {
        return Err(JwtError::KeyAlgorithmMismatch(format!("{alg:?}")));
    }
    let mut v = Validation::new(alg);
    v.set_issuer(&[&cfg.issuer]);
    v.set_audience(&cfg.audiences);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    v.leeway = cfg.leeway.as_secs();
    v.validate_nbf = true;
    let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &v).map_err(
        |e| match e.kind() {
            ErrorKind::InvalidSignature => JwtError::BadSignature,
            ErrorKind::ExpiredSignature => JwtError::Expired,
            ErrorKind::ImmatureSignature => JwtError::NotYetValid,
            ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
            ErrorKind::InvalidAudience => JwtError::WrongAudience,
            ErrorKind::MissingRequiredClaim(c) => JwtError::MissingClaim(c.clone()),
            ErrorKind::InvalidClaimFormat(c) => JwtError::BadClaim(c.clone()),
            ErrorKind::InvalidAlgorithm => JwtError::KeyAlgorithmMismatch(format!("{alg:?}")),
            _ => JwtError::Malformed,
        },
    )?;
    principal_from_claims(&data.claims, cfg)
}

fn principal_from_claims(
    claims: &serde_json::Map<String, Value>,
    cfg: &OidcConfig,
) -> Result<ValidatedToken, JwtError> {
    let name = match claims.get(&cfg.username_claim) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(JwtError::BadClaim(cfg.username_claim.clone())),
        None => return Err(JwtError::MissingClaim(cfg.username_claim.clone())),
    };
    let groups = match claims.get(&cfg.groups_claim) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|g| g.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| JwtError::BadClaim(cfg.groups_claim.clone()))?,
        Some(_) => return Err(JwtError::BadClaim(cfg.groups_claim.clone())),
    };
    let expires_at = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or_else(|| JwtError::BadClaim("exp".into()))?;
    Ok(ValidatedToken {
        principal: Principal {
            kind: SubjectKind::User,
            name,
            namespace: None,
            groups,
            // `verify_with_jwk` checked `iss` against exactly this issuer.
            issuer: Some(cfg.issuer.clone()),
        },
        expires_at,
    })
}

/// Parse a JWKS document, skipping keys this library cannot use (e.g. `enc`
/// keys of an unknown type) instead of rejecting the whole set.
pub fn parse_jwks(doc: &Value) -> Vec<Jwk> {
    doc.get("keys")
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, Default)]
struct KeyCache {
    keys: Arc<Vec<Jwk>>,
    fetched_at: Option<Instant>,
}

/// Validates tokens of one issuer; fetches and caches its JWKS.
#[derive(Debug)]
pub struct JwtValidator {
    cfg: OidcConfig,
    http: reqwest::Client,
    cache: Mutex<KeyCache>,
}

impl JwtValidator {
    pub fn new(cfg: OidcConfig) -> Self {
        // Said once per issuer configuration (validators are reused across
        // reloads), so the log explains every refused token of it.
        if let Err(e) = cfg.check_transport() {
            tracing::error!(issuer = %cfg.issuer, error = %e, "OIDC issuer refused");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        JwtValidator {
            cfg,
            http,
            cache: Mutex::new(KeyCache::default()),
        }
    }

    pub fn config(&self) -> &OidcConfig {
        &self.cfg
    }

    /// Validate `token`: cached keys first; an unknown `kid` refreshes the
    /// key set (rate-limited) and retries once.
    pub async fn validate(&self, token: &str) -> Result<ValidatedToken, JwtError> {
        self.cfg.check_transport()?;
        let (alg_name, kid) = peek_header(token)?;
        allowed_algorithm(&alg_name)?;
        let keys = self.keys(false).await?;
        match verify_with_keys(token, &keys, &self.cfg) {
            Err(JwtError::UnknownKey(_)) => {
                let keys = self.keys(true).await?;
                verify_with_keys(token, &keys, &self.cfg).map_err(|e| match e {
                    JwtError::UnknownKey(_) => {
                        JwtError::UnknownKey(kid.unwrap_or_else(|| "(no kid)".into()))
                    }
                    other => other,
                })
            }
            other => other,
        }
    }

    /// The cached key set; fetched when empty, or refreshed when `refresh`
    /// and the last fetch is older than `min_refresh_interval`.
    async fn keys(&self, refresh: bool) -> Result<Arc<Vec<Jwk>>, JwtError> {
        let mut cache = self.cache.lock().await;
        let stale = match cache.fetched_at {
            None => true,
            Some(at) => refresh && at.elapsed() >= self.cfg.min_refresh_interval,
        };
        if stale {
            match self.fetch_keys().await {
                Ok(keys) => {
                    cache.keys = Arc::new(keys);
                    cache.fetched_at = Some(Instant::now());
                }
                // Keep serving the last good keys when a refresh fails.
                Err(e) if cache.fetched_at.is_some() => {
                    tracing::warn!(issuer = %self.cfg.issuer, error = %e, "JWKS refresh failed; keeping cached keys");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Arc::clone(&cache.keys))
    }

    /// GET a JSON document (discovery, JWKS); any failure leaves the keys unavailable.
    async fn get_json(&self, url: &str) -> Result<Value, JwtError> {
        let unavailable = |e: &dyn std::fmt::Display| JwtError::KeysUnavailable(e.to_string());
        self.http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| unavailable(&e))?
            .json()
            .await
            .map_err(|e| unavailable(&e))
    }

    async fn fetch_keys(&self) -> Result<Vec<Jwk>, JwtError> {
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        let doc = self.get_json(&discovery).await?;
        // OpenID Connect Discovery §4.3: the document must name the same issuer.
        if doc.get("issuer").and_then(Value::as_str) != Some(self.cfg.issuer.as_str()) {
            return Err(JwtError::KeysUnavailable(format!(
                "{discovery} names another issuer"
            )));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| JwtError::KeysUnavailable(format!("{discovery} has no jwks_uri")))?;
        // An https issuer pointing at plain-http keys is as forgeable as an
        // http issuer.
        if !self.cfg.allow_insecure && !is_https(jwks_uri) {
            return Err(JwtError::KeysUnavailable(format!(
                "{discovery} names jwks_uri {jwks_uri:?}, which is not https:// ({ALLOW_INSECURE_FLAG} allows it)"
            )));
        }
        let jwks = self.get_json(jwks_uri).await?;
        let keys = parse_jwks(&jwks);
        tracing::debug!(issuer = %self.cfg.issuer, keys = keys.len(), "fetched JWKS");
        Ok(keys)
    }
}

/// The validators for every issuer the policy in force accepts. Rebuild with
/// [`IssuerSet::reconcile`] when the policy changes; validators whose config
/// is unchanged keep their cached keys.
#[derive(Debug, Default, Clone)]
pub struct IssuerSet {
    validators: Vec<Arc<JwtValidator>>,
}

impl IssuerSet {
    pub fn new(configs: Vec<OidcConfig>) -> Self {
        IssuerSet {
            validators: configs
                .into_iter()
                .map(|c| Arc::new(JwtValidator::new(c)))
                .collect(),
        }
    }

    /// A set for `configs`, reusing validators (and their key caches) from `self`.
    pub fn reconcile(&self, configs: Vec<OidcConfig>) -> Self {
        let validators = configs
            .into_iter()
            .map(|c| {
                self.validators
                    .iter()
                    .find(|v| v.cfg == c)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(JwtValidator::new(c)))
            })
            .collect();
        IssuerSet { validators }
    }

    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    /// Validate with the issuer the token names; an issuer not configured is `WrongIssuer`.
    pub async fn validate(&self, token: &str) -> Result<ValidatedToken, JwtError> {
        if self.validators.is_empty() {
            return Err(JwtError::NoIssuer);
        }
        let (alg, _) = peek_header(token)?;
        allowed_algorithm(&alg)?;
        let iss = peek_issuer(token)?;
        let v = self
            .validators
            .iter()
            .find(|v| v.cfg.issuer == iss)
            .ok_or(JwtError::WrongIssuer)?;
        v.validate(token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn cfg() -> OidcConfig {
        OidcConfig::from(&OidcIdentity {
            issuer: "http://idp".into(),
            audiences: vec!["kafka".into()],
            username_claim: None,
            groups_claim: None,
        })
    }

    /// An http issuer is refused before anything is fetched, unless allowed;
    /// https passes, whatever the scheme's case.
    #[tokio::test]
    async fn http_issuers_need_the_insecure_flag() {
        let token = format!(
            "{}.{}.c2ln",
            b64(&serde_json::json!({"alg": "RS256", "kid": "k"})),
            b64(&serde_json::json!({"iss": "http://idp"}))
        );
        // Nothing listens at http://idp: a refusal without a fetch.
        let v = JwtValidator::new(cfg());
        assert_eq!(
            v.validate(&token).await,
            Err(JwtError::InsecureIssuer("http://idp".into()))
        );
        let set = IssuerSet::new(vec![cfg()]);
        assert_eq!(
            set.validate(&token).await,
            Err(JwtError::InsecureIssuer("http://idp".into()))
        );
        let allowed = OidcConfig {
            allow_insecure: true,
            ..cfg()
        };
        assert_eq!(allowed.check_transport(), Ok(()));
        for https in [
            "https://idp.example.com",
            "HTTPS://idp.example.com/realms/x",
        ] {
            let c = OidcConfig {
                issuer: https.into(),
                ..cfg()
            };
            assert_eq!(c.check_transport(), Ok(()), "{https}");
        }
        for bad in ["idp.example.com", "ftp://idp", ""] {
            let c = OidcConfig {
                issuer: bad.into(),
                ..cfg()
            };
            assert!(c.check_transport().is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_forbidden_algorithms_before_any_key_lookup() {
        let claims = b64(
            &serde_json::json!({"iss": "http://idp", "aud": "kafka", "sub": "x", "exp": 9_999_999_999u64}),
        );
        for alg in ["none", "HS256", "HS384", "HS512", "XYZ"] {
            let token = format!(
                "{}.{claims}.",
                b64(&serde_json::json!({"alg": alg, "kid": "k"}))
            );
            assert_eq!(
                verify_with_keys(&token, &[], &cfg()),
                Err(JwtError::AlgorithmNotAllowed(alg.into()))
            );
        }
        let token = format!(
            "{}.{claims}.c2ln",
            b64(&serde_json::json!({"alg": "RS256", "kid": "k"}))
        );
        assert_eq!(
            verify_with_keys(&token, &[], &cfg()),
            Err(JwtError::UnknownKey("k".into()))
        );
    }

    #[test]
    fn malformed_tokens() {
        for t in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "!!!.b.c",
            &format!("{}.b.c", b64(&serde_json::json!({"typ": "JWT"}))),
        ] {
            assert_eq!(
                verify_with_keys(t, &[], &cfg()),
                Err(JwtError::Malformed),
                "{t}"
            );
        }
    }

    #[test]
    fn claims_become_a_principal() {
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), "intake-app".into());
        claims.insert("groups".into(), serde_json::json!(["clinicians", "staff"]));
        claims.insert("exp".into(), 2_000_000_000u64.into());
        let t = principal_from_claims(&claims, &cfg()).unwrap();
        assert_eq!(t.principal.name, "intake-app");
        assert_eq!(t.principal.groups, vec!["clinicians", "staff"]);
        assert_eq!(t.principal.kind, SubjectKind::User);
        // The principal is (issuer, subject).
        assert_eq!(t.principal.issuer.as_deref(), Some("http://idp"));
        assert_eq!(
            t.session_lifetime_ms(UNIX_EPOCH + Duration::from_secs(1_999_999_990)),
            10_000
        );
        assert_eq!(
            t.session_lifetime_ms(UNIX_EPOCH + Duration::from_secs(2_000_000_010)),
            0
        );
        claims.insert("groups".into(), serde_json::json!([1]));
        assert_eq!(
            principal_from_claims(&claims, &cfg()),
            Err(JwtError::BadClaim("groups".into()))
        );
        claims.remove("groups");
        assert!(
            principal_from_claims(&claims, &cfg())
                .unwrap()
                .principal
                .groups
                .is_empty()
        );
        claims.remove("sub");
        assert_eq!(
            principal_from_claims(&claims, &cfg()),
            Err(JwtError::MissingClaim("sub".into()))
        );
    }
}
