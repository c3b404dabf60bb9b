//! SASL/OAUTHBEARER client-first messages: the RFC 7628 parser
//! (`identity::oauthbearer`), the JWT checks behind it with a static key set
//! (`identity::jwt::verify_with_keys`, `peek_issuer`), and the per-connection
//! SASL state machine (`identity::sasl::SaslServer`) after a v1 handshake
//! (SaslAuthenticate) and after a v0 handshake (the raw token frame).
//!
//! The key set is RFC 7515 A.3's P-256 key; a seed carries the token signed
//! with it, so mutations start past the signature check.
//!
//! Checked: a failed authentication closes the connection, and its message
//! never quotes the bearer token.
#![no_main]
use std::future::Future;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use libfuzzer_sys::fuzz_target;
use streamgate_fuzz::{jwks, oidc_config, runtime};
use streamgate_proxy::identity::jwt::{JwtError, ValidatedToken, peek_issuer, verify_with_keys};
use streamgate_proxy::identity::oauthbearer::parse_client_response;
use streamgate_proxy::identity::sasl::{SaslServer, TokenVerifier};

/// The issuer's keys, without the network.
struct StaticKeys;

impl TokenVerifier for StaticKeys {
    fn verify(&self, token: &str) -> impl Future<Output = Result<ValidatedToken, JwtError>> + Send {
        std::future::ready(verify_with_keys(token, jwks(), &oidc_config()))
    }
}

fn handshake(version: i16) -> SaslServer {
    let mut s = SaslServer::new();
    let hs =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("OAUTHBEARER"));
    assert_eq!(s.handshake(version, &hs).error_code, 0);
    s
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse_client_response(data);
    if let Ok(msg) = &parsed {
        let _ = peek_issuer(&msg.token);
        let _ = verify_with_keys(&msg.token, jwks(), &oidc_config());
    }
    let now = UNIX_EPOCH + Duration::from_secs(1_300_000_000);
    runtime().block_on(async {
        let mut s = handshake(1);
        let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(data));
        let out = s.authenticate(&StaticKeys, &req, now).await;
        if out.response.error_code != 0 {
            assert!(out.close, "a failed authentication closes the connection");
            let message = out
                .response
                .error_message
                .map(|m| m.to_string())
                .unwrap_or_default();
            if let Ok(msg) = &parsed {
                // Long, space-free tokens only: a short one can occur in any text.
                if msg.token.len() >= 24 && !msg.token.contains(' ') {
                    assert!(
                        !message.contains(&msg.token),
                        "the token was echoed: {message}"
                    );
                }
            }
        } else {
            assert!(s.session().is_some());
        }
        let mut s = handshake(0);
        assert!(s.expects_raw_token());
        let _ = s.raw_token(&StaticKeys, data).await;
        assert!(!s.expects_raw_token());
    });
});
