//! Identity: who is on the other end of a client connection.
//!
//! - `stage`       — the pipeline's identity stage: SASL answered, KIP-368
//!   expiry, the pre-authentication rule, the [`caller::Caller`] named
//! - `caller`      — the one type every later stage reads the caller from
//! - `oauthbearer` — RFC 7628 client message parsing (pure)
//! - `jwt`         — bearer-token validation against an OIDC issuer's JWKS
//! - `saml`        — SAML 2.0 assertions as bearer tokens (samael/xmlsec1)
//! - `sasl`        — the per-connection SASL server state machine (KIP-368 aware)
//! - `workload`    — the pod's ServiceAccount, for connections without SASL
pub mod caller;
pub mod jwt;
pub mod oauthbearer;
pub mod saml;
pub mod sasl;
pub mod stage;
pub mod workload;

use streamgate_crds::matching::Principal;

/// The caller before identity is established: a nameless user that no named
/// subject matches (policy then checks against an empty policy; masking
/// exempts nobody).
pub fn nobody() -> Principal {
    Principal {
        kind: streamgate_crds::SubjectKind::User,
        name: String::new(),
        namespace: None,
        groups: Vec::new(),
        issuer: None,
    }
}
