//! Per-connection state the gate layers read: who is on the other end.

use std::net::SocketAddr;

/// Which proxy listener a client connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The bootstrap port: forwarded to any upstream bootstrap server.
    Bootstrap,
    /// A per-broker port: forwarded to that broker node.
    Broker(i32),
}

/// One client connection, as the governance layers see it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The client's socket address (always loopback for a sidecar).
    pub peer: SocketAddr,
    /// Where this connection is forwarded.
    pub target: Target,
    /// The `client.id` from the latest request header, if the client sent one.
    pub client_id: Option<String>,
    /// The authenticated principal, once identity (SASL/OAUTHBEARER or workload
    /// identity) has established it. `None` until the identity layer lands.
    pub principal: Option<String>,
    /// The authenticated principal as masking matches it (`exemptSubjects`);
    /// `None` until identity established it (then nobody is exempt).
    pub subject: Option<streamgate_crds::matching::Principal>,
}

impl Session {
    pub fn new(peer: SocketAddr, target: Target) -> Self {
        Self {
            peer,
            target,
            client_id: None,
            principal: None,
            subject: None,
        }
    }

    /// Remember the client id from a request header (cheap when unchanged).
    pub fn observe_client_id(&mut self, client_id: Option<&str>) {
        if self.client_id.as_deref() != client_id {
            self.client_id = client_id.map(str::to_owned);
        }
    }
}
