//! The caller of one client connection, as every stage after identity sees
//! it: computed by the identity stage ([`super::stage::Identity`]) and
//! handed on (policy, approvals, masking, audit) — the one place who is on
//! the other end is written down.
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use streamgate_crds::matching::Principal;

use crate::policy::decide::BreakGlass;

/// Who is on the other end of one client connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The client's socket address (always loopback for a sidecar).
    pub peer: SocketAddr,
    /// The `client.id` from the latest request header, if the client sent one.
    pub client_id: Option<String>,
    /// Who the caller is now — the SASL principal (with its issuer and
    /// groups), else the pod's ServiceAccount when the policy in force
    /// allows workload identity; `None`: unauthenticated.
    pub principal: Option<Principal>,
    /// `principal` is the pod's workload identity, not a SASL principal.
    pub workload: bool,
    /// The name the caller last authenticated as over SASL. Kept when the
    /// session ends, so a failed re-authentication is recorded under the
    /// name it tried to keep.
    pub sasl_name: Option<String>,
    /// KIP-368: when the SASL session expires (the token's `exp`).
    pub session_expiry: Option<SystemTime>,
    /// The break-glass the caller invoked (SASL extension
    /// `streamgateBreakGlass`): its reason and when it began. It widens
    /// nothing by itself: policy decides whether a rule allows it.
    pub break_glass: Option<BreakGlass>,
}

impl Caller {
    pub fn new(peer: SocketAddr) -> Self {
        Self {
            peer,
            client_id: None,
            principal: None,
            workload: false,
            sasl_name: None,
            session_expiry: None,
            break_glass: None,
        }
    }

    /// The principal masking matches `exemptSubjects` against: before
    /// identity is established, a nameless user no named subject exempts.
    pub fn masking_subject(&self) -> Principal {
        self.principal.clone().unwrap_or_else(super::nobody)
    }

    /// Remember the client id from a request header (cheap when unchanged).
    pub fn observe_client_id(&mut self, client_id: Option<&str>) {
        if self.client_id.as_deref() != client_id {
            self.client_id = client_id.map(str::to_owned);
        }
    }
}

/// A token `exp` (seconds since the epoch) as a time.
pub(super) fn expiry_of(expires_at: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(expires_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_identity_masking_exempts_nobody_and_the_client_id_is_kept() {
        let mut caller = Caller::new(SocketAddr::from(([127, 0, 0, 1], 1)));
        assert_eq!(caller.masking_subject(), crate::identity::nobody());
        caller.observe_client_id(Some("app"));
        caller.observe_client_id(Some("app"));
        assert_eq!(caller.client_id.as_deref(), Some("app"));
        caller.observe_client_id(None);
        assert_eq!(caller.client_id, None);
    }
}
