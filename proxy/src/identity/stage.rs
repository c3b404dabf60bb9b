//! The identity stage: the first thing each client frame meets. SASL
//! handshake and authenticate are answered here (raw v0 tokens too), KIP-368
//! session expiry closes the connection, and the caller is named — the SASL
//! principal, else the pod's ServiceAccount when the policy in force allows
//! workload identity, else unauthenticated. An unauthenticated connection
//! may send only ApiVersions and SASL: anything else closes it before its
//! body is decoded, as a broker's SASL listener does.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use streamgate_crds::matching::Principal;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use super::caller::{Caller, expiry_of};
use super::jwt::{IssuerSet, OidcConfig};
use super::saml::{SamlConfig, SamlSet, Verifiers};
use super::sasl::SaslServer;
use super::workload::Workload;
use crate::datapath::exchange::Request;
use crate::kafka::codec::{RequestMeta, encode_local_response};
use crate::policy::decide::{BreakGlass, CompiledPolicy, DenyReason};

/// Why a frame could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("malformed {what}: {message}")]
    Malformed { what: &'static str, message: String },
}

/// Identity state every connection shares: the pod's workload identity and
/// the OIDC and SAML verifiers (their key caches survive policy reloads).
pub struct IdentityShared {
    /// The pod's identity, when known (workload identity).
    pub workload: Option<Workload>,
    issuers: Mutex<IssuerSet>,
    /// SAML IdPs, beside the OIDC issuers.
    saml_idps: Mutex<SamlSet>,
    /// `--allow-insecure-issuers`: http:// issuers are trusted too.
    allow_insecure_issuers: bool,
    /// Break-glass invocations seen by this sidecar, by (issuer, name,
    /// reason): when each began. Every connection and re-authentication
    /// carrying the same reason joins that start, so a grant ends on time
    /// however often the client reconnects.
    break_glass: Mutex<BTreeMap<Invocation, DateTime<Utc>>>,
}

/// One break-glass invocation: (issuer, name, reason).
type Invocation = (Option<String>, String, String);

/// How many break-glass invocations are remembered (oldest forgotten first).
const MAX_BREAK_GLASS_INVOCATIONS: usize = 4096;

impl std::fmt::Debug for IdentityShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityShared")
            .field("workload", &self.workload)
            .finish_non_exhaustive()
    }
}

impl IdentityShared {
    /// `allow_insecure_issuers`: trust `http://` OIDC issuers
    /// (`--allow-insecure-issuers`); otherwise only `https://` ones.
    pub fn new(workload: Option<Workload>, allow_insecure_issuers: bool) -> Self {
        IdentityShared {
            workload,
            issuers: Mutex::new(IssuerSet::default()),
            saml_idps: Mutex::new(SamlSet::default()),
            allow_insecure_issuers,
            break_glass: Mutex::new(BTreeMap::new()),
        }
    }

    /// The invocation `principal` makes with `reason`: when it began (now,
    /// the first time). Invocations older than the longest grant are
    /// forgotten; the map never holds more than
    /// [`MAX_BREAK_GLASS_INVOCATIONS`].
    pub fn invoke_break_glass(
        &self,
        principal: &Principal,
        reason: &str,
        now: DateTime<Utc>,
    ) -> BreakGlass {
        let mut map = self
            .break_glass
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let horizon = chrono::Duration::from_std(streamgate_crds::duration::MAX_GRANT_DURATION)
            .unwrap_or(chrono::Duration::MAX);
        map.retain(|_, since| now - *since < horizon);
        let key = (
            principal.issuer.clone(),
            principal.name.clone(),
            reason.to_string(),
        );
        if !map.contains_key(&key) && map.len() >= MAX_BREAK_GLASS_INVOCATIONS {
            let oldest = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        let since = *map.entry(key).or_insert(now);
        BreakGlass {
            reason: reason.to_string(),
            since,
        }
    }

    /// The verifiers for the OIDC issuers and SAML IdPs the current policy
    /// accepts; key caches survive policy reloads that keep one.
    fn issuers(&self, policy: &CompiledPolicy) -> Verifiers {
        Verifiers {
            oidc: self.oidc_issuers(policy),
            saml: self.saml_idps(policy),
        }
    }

    fn saml_idps(&self, policy: &CompiledPolicy) -> SamlSet {
        let configs: Vec<SamlConfig> = policy
            .saml()
            .into_iter()
            .map(|s| SamlConfig {
                allow_insecure: self.allow_insecure_issuers,
                ..SamlConfig::from(s)
            })
            .collect();
        let mut guard = self
            .saml_idps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = guard.reconcile(configs);
        guard.clone()
    }

    fn oidc_issuers(&self, policy: &CompiledPolicy) -> IssuerSet {
        let configs: Vec<OidcConfig> = policy
            .oidc()
            .into_iter()
            .map(|o| OidcConfig {
                allow_insecure: self.allow_insecure_issuers,
                ..OidcConfig::from(o)
            })
            .collect();
        let mut guard = self
            .issuers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = guard.reconcile(configs);
        guard.clone()
    }
}

/// What identity does with a client frame.
#[derive(Debug)]
pub enum Admission {
    /// Not an identity matter: on to policy, as [`Identity::caller`].
    Proceed,
    /// Answer the client with this frame (SASL); forward nothing.
    Answer(Bytes),
    /// Answer, then close the connection (failed authentication); `refusal`
    /// is which check failed, as the client is told (never the token).
    AnswerThenClose {
        frame: Bytes,
        refusal: Option<String>,
    },
    /// Close the connection (`why`); `refusal` is the reason its audit record gives.
    Close {
        why: String,
        refusal: Option<String>,
    },
}

/// The identity state of one client connection.
#[derive(Debug)]
pub struct Identity {
    shared: Arc<IdentityShared>,
    sasl: SaslServer,
    /// The caller had an identity on this connection at some point.
    was_authenticated: bool,
    caller: Arc<Caller>,
}

impl Identity {
    pub fn new(shared: Arc<IdentityShared>, peer: std::net::SocketAddr) -> Self {
        Identity {
            shared,
            sasl: SaslServer::new(),
            was_authenticated: false,
            caller: Arc::new(Caller::new(peer)),
        }
    }

    /// The caller as of the last request (shared with in-flight requests).
    pub fn caller(&self) -> &Arc<Caller> {
        &self.caller
    }

    /// The SASL state (KIP-368 session expiry, principal).
    pub fn sasl(&self) -> &SaslServer {
        &self.sasl
    }

    /// Whether the caller is someone now (SASL session, or workload identity
    /// `policy` accepts).
    pub fn is_authenticated(&self, policy: &CompiledPolicy) -> bool {
        self.principal(policy).is_some()
    }

    /// Remember the client id of a request header.
    pub fn observe_client_id(&mut self, client_id: Option<&str>) {
        if self.caller.client_id.as_deref() != client_id {
            Arc::make_mut(&mut self.caller).observe_client_id(client_id);
        }
    }

    /// The caller right now, and whether it is the workload's identity.
    fn principal(&self, policy: &CompiledPolicy) -> Option<(Principal, bool)> {
        if let Some(s) = self.sasl.session() {
            return Some((s.principal.clone(), false));
        }
        match &self.shared.workload {
            Some(w) if policy.workload_identity_allowed() => Some((w.principal(), true)),
            _ => None,
        }
    }

    /// Bring the caller up to date with the SASL state and `policy`.
    fn refresh(&mut self, policy: &CompiledPolicy) {
        let (principal, workload) = match self.principal(policy) {
            Some((p, w)) => (Some(p), w),
            None => (None, false),
        };
        let session = self.sasl.session();
        let sasl_name = session
            .map(|s| s.principal.name.clone())
            .or_else(|| self.caller.sasl_name.clone());
        let session_expiry = session.map(|s| expiry_of(s.expires_at));
        let c = &self.caller;
        let break_glass = match session.and_then(|s| Some((&s.principal, s.break_glass.as_ref()?)))
        {
            None => None,
            Some((_, reason)) if c.break_glass.as_ref().is_some_and(|b| &b.reason == reason) => {
                c.break_glass.clone()
            }
            Some((p, reason)) => Some(self.shared.invoke_break_glass(p, reason, Utc::now())),
        };
        if c.principal != principal
            || c.workload != workload
            || c.sasl_name != sasl_name
            || c.session_expiry != session_expiry
            || c.break_glass != break_glass
        {
            let c = Arc::make_mut(&mut self.caller);
            (c.principal, c.workload) = (principal, workload);
            (c.sasl_name, c.session_expiry) = (sasl_name, session_expiry);
            c.break_glass = break_glass;
        }
    }

    /// SaslHandshake v0: the frame after the handshake is the bare token,
    /// with no Kafka header; the answer is an empty frame, or the connection closes.
    pub fn expects_raw_token(&self) -> bool {
        self.sasl.expects_raw_token()
    }

    /// The bare token frame of a SaslHandshake v0 exchange.
    pub async fn on_raw_token(&mut self, policy: &CompiledPolicy, frame: &Bytes) -> Admission {
        let issuers = self.shared.issuers(policy);
        let outcome = self.sasl.raw_token(&issuers, frame).await.map(|_| ());
        self.refresh(policy);
        match outcome {
            Ok(()) => Admission::Answer(Bytes::new()),
            Err(e) => Admission::Close {
                why: format!("SASL authentication failed: {e}"),
                refusal: None,
            },
        }
    }

    /// One client request: SASL answered; otherwise the caller named and
    /// the connection's state checked (session expiry, authentication).
    pub async fn on_request(
        &mut self,
        policy: &CompiledPolicy,
        request: &mut Request,
    ) -> Result<Admission, IdentityError> {
        let meta = request.meta().clone();
        let api_key = meta.api_key;
        // The caller as of now, also for the record of a connection closed here.
        self.refresh(policy);
        let is_sasl = matches!(api_key, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate);
        if !is_sasl && self.sasl.session_expired(SystemTime::now()) {
            let why = "SASL session expired without re-authentication (KIP-368)".to_string();
            let refusal = Some(format!("{why}; connection closed"));
            return Ok(Admission::Close { why, refusal });
        }
        if !is_sasl && self.sasl.in_progress() {
            let why = format!("{api_key:?} in the middle of a SASL exchange");
            return Ok(Admission::Close { why, refusal: None });
        }
        if is_sasl {
            return self.answer_sasl(policy, &meta, request).await;
        }
        if self.caller.principal.is_some() {
            self.was_authenticated = true;
        } else if api_key != ApiKey::ApiVersions && !self.was_authenticated {
            // As a SASL listener of a broker does: before authentication only
            // ApiVersions and SASL are spoken, and nothing else is decoded.
            // (A connection that had an identity and lost it — workload
            // identity switched off — gets authorization errors instead, so
            // its app sees why.)
            let why = format!(
                "{api_key:?} before authentication (only ApiVersions and SASL are accepted until then)"
            );
            let refusal = Some(format!(
                "{}: {why}; connection closed",
                DenyReason::Unauthenticated.as_str()
            ));
            return Ok(Admission::Close { why, refusal });
        }
        Ok(Admission::Proceed)
    }

    /// SaslHandshake and SaslAuthenticate, answered here.
    async fn answer_sasl(
        &mut self,
        policy: &CompiledPolicy,
        meta: &RequestMeta,
        request: &mut Request,
    ) -> Result<Admission, IdentityError> {
        let malformed = |message: String| IdentityError::Malformed {
            what: "request",
            message,
        };
        let answer = |resp: ResponseKind| {
            encode_local_response(meta, &resp).map_err(|e| IdentityError::Malformed {
                what: "local response",
                message: e.to_string(),
            })
        };
        let version = meta.api_version;
        match request.body().map_err(|e| malformed(e.to_string()))? {
            RequestKind::SaslHandshake(req) => {
                let resp = self.sasl.handshake(version, req);
                Ok(Admission::Answer(answer(ResponseKind::SaslHandshake(
                    resp,
                ))?))
            }
            RequestKind::SaslAuthenticate(req) => {
                let issuers = self.shared.issuers(policy);
                let out = self
                    .sasl
                    .authenticate(&issuers, req, SystemTime::now())
                    .await;
                self.refresh(policy);
                let refusal = out
                    .close
                    .then(|| out.response.error_message.as_ref().map(|m| m.to_string()))
                    .flatten();
                let frame = answer(ResponseKind::SaslAuthenticate(out.response))?;
                Ok(if out.close {
                    Admission::AnswerThenClose { frame, refusal }
                } else {
                    Admission::Answer(frame)
                })
            }
            _ => Err(malformed("decoded as another API".into())),
        }
    }
}

#[cfg(test)]
mod break_glass_tests {
    use super::*;
    use streamgate_crds::SubjectKind;

    fn user(name: &str, issuer: &str) -> Principal {
        Principal {
            kind: SubjectKind::User,
            name: name.into(),
            namespace: None,
            groups: vec!["clinicians".into()],
            issuer: Some(issuer.into()),
        }
    }

    #[test]
    fn an_invocation_keeps_its_start_across_connections_and_a_new_reason_starts_anew() {
        let shared = IdentityShared::new(None, false);
        let t0 = DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .to_utc();
        let later = t0 + chrono::Duration::minutes(50);
        let bob = user("bob", "https://a");
        assert_eq!(shared.invoke_break_glass(&bob, "ED bay 3", t0).since, t0);
        // Reconnecting (or re-authenticating) with the same reason: the same start.
        assert_eq!(shared.invoke_break_glass(&bob, "ED bay 3", later).since, t0);
        // Another reason, another issuer's bob: invocations of their own.
        assert_eq!(
            shared.invoke_break_glass(&bob, "ED bay 5", later).since,
            later
        );
        let other = user("bob", "https://b");
        assert_eq!(
            shared.invoke_break_glass(&other, "ED bay 3", later).since,
            later
        );
        // Older than the longest grant: forgotten (it could grant nothing).
        let week = t0 + chrono::Duration::days(8);
        assert_eq!(
            shared.invoke_break_glass(&bob, "ED bay 3", week).since,
            week
        );
    }
}
