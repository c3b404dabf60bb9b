//! The SASL server side of one client connection (OAUTHBEARER only).
//!
//! What the connection code does with it:
//! - `SaslHandshake` request → [`SaslServer::handshake`] → send the response.
//!   After a v0 handshake the client sends its token as a *raw* size-prefixed
//!   frame with no Kafka request header: when [`SaslServer::expects_raw_token`]
//!   is true, read the next frame as bytes and call [`SaslServer::raw_token`];
//!   on `Ok` answer with an empty size-prefixed frame, on `Err` close.
//! - `SaslAuthenticate` request → [`SaslServer::authenticate`] → send
//!   `outcome.response`; if `outcome.close`, close the connection after it
//!   (as Kafka brokers do after a failed authentication).
//! - Before each other request: if [`SaslServer::session_expired`] (KIP-368:
//!   the token expired and the client did not re-authenticate), close.
//! - Re-authentication (KIP-368) is a new SaslHandshake v1 + SaslAuthenticate
//!   on an authenticated connection; it must name the same principal.
use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use streamgate_crds::matching::Principal;

use super::jwt::{IssuerSet, JwtError, ValidatedToken};
use super::oauthbearer::{OauthBearerError, parse_client_response};

/// The only mechanism the sidecar terminates.
pub const OAUTHBEARER: &str = "OAUTHBEARER";

/// Anything that checks a bearer token (the real one is [`IssuerSet`]).
pub trait TokenVerifier {
    fn verify(&self, token: &str) -> impl Future<Output = Result<ValidatedToken, JwtError>> + Send;
}

impl TokenVerifier for IssuerSet {
    fn verify(&self, token: &str) -> impl Future<Output = Result<ValidatedToken, JwtError>> + Send {
        self.validate(token)
    }
}

/// Why authentication failed; the text is sent to the client (never the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("{0}")]
    Message(#[from] OauthBearerError),
    #[error("{0}")]
    Token(#[from] JwtError),
    #[error("re-authentication must keep the principal {0:?}")]
    PrincipalChanged(String),
    #[error("SaslAuthenticate without a preceding SaslHandshake")]
    NoHandshake,
}

/// An authenticated session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaslSession {
    pub principal: Principal,
    /// Token `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// The break-glass reason of the latest authentication (the
    /// `streamgateBreakGlass` extension), if it invoked break-glass.
    pub break_glass: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    None,
    /// v0 handshake done: the next frame is a raw token.
    RawToken,
    /// v1 handshake done: the next request is SaslAuthenticate.
    Authenticate,
}

/// Result of a SaslAuthenticate request.
#[derive(Debug, Clone)]
pub struct AuthOutcome {
    pub response: SaslAuthenticateResponse,
    /// Close the connection after sending `response`.
    pub close: bool,
}

/// SASL state of one connection.
#[derive(Debug)]
pub struct SaslServer {
    pending: Pending,
    session: Option<SaslSession>,
}

impl Default for SaslServer {
    fn default() -> Self {
        Self::new()
    }
}

impl SaslServer {
    pub fn new() -> Self {
        SaslServer {
            pending: Pending::None,
            session: None,
        }
    }

    /// Answer a SaslHandshake of `version`.
    pub fn handshake(&mut self, version: i16, req: &SaslHandshakeRequest) -> SaslHandshakeResponse {
        let mechanisms = vec![StrBytes::from_static_str(OAUTHBEARER)];
        let resp = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
        if self.pending != Pending::None {
            return resp.with_error_code(ResponseError::IllegalSaslState.code());
        }
        if req.mechanism.as_str() != OAUTHBEARER {
            return resp.with_error_code(ResponseError::UnsupportedSaslMechanism.code());
        }
        self.pending = if version == 0 {
            Pending::RawToken
        } else {
            Pending::Authenticate
        };
        resp
    }

    /// After a v0 handshake, the next frame is a raw token (no header).
    pub fn expects_raw_token(&self) -> bool {
        self.pending == Pending::RawToken
    }

    /// Handle the raw token frame of a v0 handshake.
    pub async fn raw_token(
        &mut self,
        verifier: &impl TokenVerifier,
        bytes: &[u8],
    ) -> Result<&SaslSession, SaslError> {
        self.pending = Pending::None;
        self.check(verifier, bytes).await
    }

    /// Handle SaslAuthenticate (v0–v2); `now` sets `session_lifetime_ms`.
    pub async fn authenticate(
        &mut self,
        verifier: &impl TokenVerifier,
        req: &SaslAuthenticateRequest,
        now: SystemTime,
    ) -> AuthOutcome {
        if self.pending != Pending::Authenticate {
            self.pending = Pending::None;
            return failure(
                ResponseError::IllegalSaslState.code(),
                &SaslError::NoHandshake,
            );
        }
        self.pending = Pending::None;
        match self.check(verifier, &req.auth_bytes).await {
            Ok(session) => {
                let lifetime = lifetime_ms(session.expires_at, now);
                AuthOutcome {
                    response: SaslAuthenticateResponse::default()
                        .with_auth_bytes(Bytes::new())
                        .with_session_lifetime_ms(lifetime),
                    close: false,
                }
            }
            Err(e) => failure(ResponseError::SaslAuthenticationFailed.code(), &e),
        }
    }

    async fn check(
        &mut self,
        verifier: &impl TokenVerifier,
        bytes: &[u8],
    ) -> Result<&SaslSession, SaslError> {
        let msg = parse_client_response(bytes)?;
        let token = verifier.verify(&msg.token).await?;
        // The same principal is the same (issuer, kind, name): a same-named
        // user of another issuer is someone else.
        if let Some(old) = &self.session
            && (old.principal.kind != token.principal.kind
                || old.principal.name != token.principal.name
                || old.principal.issuer != token.principal.issuer)
        {
            return Err(SaslError::PrincipalChanged(old.principal.name.clone()));
        }
        tracing::debug!(principal = %token.principal.name, "SASL/OAUTHBEARER authenticated");
        if let Some(reason) = &msg.break_glass {
            tracing::warn!(principal = %token.principal.name, %reason, "break-glass invoked");
        }
        Ok(self.session.insert(SaslSession {
            principal: token.principal,
            expires_at: token.expires_at,
            break_glass: msg.break_glass,
        }))
    }

    /// The authenticated session, if any.
    pub fn session(&self) -> Option<&SaslSession> {
        self.session.as_ref()
    }

    /// A handshake is done but authentication has not finished yet.
    pub fn in_progress(&self) -> bool {
        self.pending != Pending::None
    }

    /// KIP-368: the token has expired (no re-authentication came in time).
    pub fn session_expired(&self, now: SystemTime) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| lifetime_ms(s.expires_at, now) == 0)
    }
}

fn lifetime_ms(expires_at: u64, now: SystemTime) -> i64 {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    i64::try_from((u128::from(expires_at) * 1000).saturating_sub(now_ms)).unwrap_or(i64::MAX)
}

fn failure(code: i16, e: &SaslError) -> AuthOutcome {
    AuthOutcome {
        response: SaslAuthenticateResponse::default()
            .with_error_code(code)
            .with_error_message(Some(StrBytes::from_string(format!(
                "authentication failed: {e}"
            )))),
        close: true,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use streamgate_crds::SubjectKind;

    use super::*;

    /// Accepts tokens `good-<name>` from issuer `https://a` and
    /// `other-<name>` from `https://b` (expiring at 2_000_000_000), refuses
    /// the rest as expired.
    struct Fixed;
    impl TokenVerifier for Fixed {
        fn verify(
            &self,
            token: &str,
        ) -> impl Future<Output = Result<ValidatedToken, JwtError>> + Send {
            let issued = token
                .strip_prefix("good-")
                .map(|name| (name, "https://a"))
                .or_else(|| token.strip_prefix("other-").map(|name| (name, "https://b")));
            let r = match issued {
                Some((name, issuer)) => Ok(ValidatedToken {
                    principal: Principal {
                        kind: SubjectKind::User,
                        name: name.into(),
                        namespace: None,
                        groups: vec!["g".into()],
                        issuer: Some(issuer.into()),
                    },
                    expires_at: 2_000_000_000,
                }),
                None => Err(JwtError::Expired),
            };
            std::future::ready(r)
        }
    }

    fn hs(mech: &'static str) -> SaslHandshakeRequest {
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mech))
    }

    fn auth(token: &str) -> SaslAuthenticateRequest {
        SaslAuthenticateRequest::default()
            .with_auth_bytes(Bytes::from(format!("n,,\x01auth=Bearer {token}\x01\x01")))
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[tokio::test]
    async fn v1_handshake_then_authenticate() {
        let mut s = SaslServer::new();
        let r = s.handshake(1, &hs("OAUTHBEARER"));
        assert_eq!(r.error_code, 0);
        assert_eq!(r.mechanisms, vec![StrBytes::from_static_str("OAUTHBEARER")]);
        assert!(!s.expects_raw_token());
        let out = s
            .authenticate(&Fixed, &auth("good-alice"), at(1_999_999_000))
            .await;
        assert_eq!(out.response.error_code, 0);
        assert_eq!(out.response.session_lifetime_ms, 1_000_000);
        assert!(!out.close);
        assert_eq!(s.session().unwrap().principal.name, "alice");
        assert!(!s.session_expired(at(1_999_999_999)));
        assert!(s.session_expired(at(2_000_000_000)));
    }

    #[tokio::test]
    async fn v0_handshake_then_raw_token() {
        let mut s = SaslServer::new();
        assert_eq!(s.handshake(0, &hs("OAUTHBEARER")).error_code, 0);
        assert!(s.expects_raw_token());
        let sess = s
            .raw_token(&Fixed, b"n,,\x01auth=Bearer good-bob\x01\x01")
            .await
            .unwrap();
        assert_eq!(sess.principal.name, "bob");
        assert!(!s.expects_raw_token());
        let mut s = SaslServer::new();
        s.handshake(0, &hs("OAUTHBEARER"));
        assert_eq!(
            s.raw_token(&Fixed, b"n,,\x01auth=Bearer bad\x01\x01")
                .await
                .unwrap_err(),
            SaslError::Token(JwtError::Expired)
        );
        assert!(s.session().is_none());
    }

    #[tokio::test]
    async fn other_mechanisms_are_refused_with_the_enabled_list() {
        let mut s = SaslServer::new();
        for mech in ["PLAIN", "SCRAM-SHA-256", "GSSAPI", "oauthbearer"] {
            let r = s.handshake(1, &hs(mech));
            assert_eq!(
                r.error_code,
                ResponseError::UnsupportedSaslMechanism.code(),
                "{mech}"
            );
            assert_eq!(r.mechanisms, vec![StrBytes::from_static_str("OAUTHBEARER")]);
        }
        // Authenticate without a successful handshake.
        let out = s.authenticate(&Fixed, &auth("good-x"), at(0)).await;
        assert_eq!(
            out.response.error_code,
            ResponseError::IllegalSaslState.code()
        );
        assert!(out.close);
    }

    #[tokio::test]
    async fn bad_tokens_fail_with_a_reason_and_never_echo_the_token() {
        let mut s = SaslServer::new();
        s.handshake(1, &hs("OAUTHBEARER"));
        let out = s.authenticate(&Fixed, &auth("eyJsecret"), at(0)).await;
        assert_eq!(
            out.response.error_code,
            ResponseError::SaslAuthenticationFailed.code()
        );
        assert!(out.close);
        let msg = out.response.error_message.unwrap().to_string();
        assert!(msg.contains("expired"), "{msg}");
        assert!(!msg.contains("eyJsecret"));
        let mut s = SaslServer::new();
        s.handshake(1, &hs("OAUTHBEARER"));
        let bad = SaslAuthenticateRequest::default()
            .with_auth_bytes(Bytes::from_static(b"n,,\x01user=x\x01\x01"));
        let out = s.authenticate(&Fixed, &bad, at(0)).await;
        assert_eq!(
            out.response.error_code,
            ResponseError::SaslAuthenticationFailed.code()
        );
        assert!(out.response.error_message.unwrap().contains("auth=Bearer"));
    }

    #[tokio::test]
    async fn reauthentication_keeps_the_principal() {
        let mut s = SaslServer::new();
        s.handshake(1, &hs("OAUTHBEARER"));
        s.authenticate(&Fixed, &auth("good-alice"), at(0)).await;
        // KIP-368: a new handshake + authenticate on an authenticated connection.
        assert_eq!(s.handshake(1, &hs("OAUTHBEARER")).error_code, 0);
        let out = s.authenticate(&Fixed, &auth("good-alice"), at(1_000)).await;
        assert_eq!(out.response.error_code, 0);
        // A second handshake while one is pending is illegal.
        s.handshake(1, &hs("OAUTHBEARER"));
        assert_eq!(
            s.handshake(1, &hs("OAUTHBEARER")).error_code,
            ResponseError::IllegalSaslState.code()
        );
        let mut s2 = SaslServer::new();
        s2.handshake(1, &hs("OAUTHBEARER"));
        s2.authenticate(&Fixed, &auth("good-alice"), at(0)).await;
        s2.handshake(1, &hs("OAUTHBEARER"));
        let out = s2.authenticate(&Fixed, &auth("good-mallory"), at(0)).await;
        assert_eq!(
            out.response.error_code,
            ResponseError::SaslAuthenticationFailed.code()
        );
        assert_eq!(s2.session().unwrap().principal.name, "alice");
    }

    /// Issue 12 item 7: re-authenticating as the same name from another
    /// issuer is a different principal, refused like a different name.
    #[tokio::test]
    async fn reauthentication_keeps_the_issuer() {
        let mut s = SaslServer::new();
        s.handshake(1, &hs("OAUTHBEARER"));
        s.authenticate(&Fixed, &auth("good-alice"), at(0)).await;
        s.handshake(1, &hs("OAUTHBEARER"));
        let out = s.authenticate(&Fixed, &auth("other-alice"), at(0)).await;
        assert_eq!(
            out.response.error_code,
            ResponseError::SaslAuthenticationFailed.code()
        );
        let session = s.session().unwrap();
        assert_eq!(session.principal.issuer.as_deref(), Some("https://a"));
    }
}
