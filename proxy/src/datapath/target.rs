//! Where a client connection is forwarded. (Who is on the other end is the
//! identity stage's [`crate::identity::caller::Caller`].)

/// Which proxy listener a client connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The bootstrap port: forwarded to any upstream bootstrap server.
    Bootstrap,
    /// A per-broker port: forwarded to that broker node.
    Broker(i32),
}
