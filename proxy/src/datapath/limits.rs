//! What one client may hold of the sidecar: connections, time, and bytes
//! before it has proved who it is. Every limit has a flag (and its
//! `STREAMGATE_*` variable); the defaults follow the broker's own where it
//! has one.

use std::time::Duration;
use streamgate_crds::contract;

/// Kafka's `sasl.server.max.receive.size` default: the largest frame a
/// broker reads before SASL authentication completes.
pub const DEFAULT_PRE_AUTH_MAX_FRAME: usize = 512 * 1024;

/// Flags of `streamgate-proxy run` for connection limits.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnLimits {
    /// Client connections served at once; beyond it new ones are closed at
    /// accept (each holds a broker connection and buffers).
    #[arg(long, env = contract::ENV_MAX_CONNECTIONS, default_value_t = 1024)]
    pub max_connections: usize,
    /// A client connection with no request for this long is closed (Kafka's
    /// `connections.max.idle.ms` default: 10 minutes).
    #[arg(long, env = contract::ENV_IDLE_TIMEOUT, default_value = "10m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// A connection that must authenticate (no workload identity) and has
    /// not within this time is closed.
    #[arg(long, env = contract::ENV_AUTH_TIMEOUT, default_value = "30s", value_parser = humantime::parse_duration)]
    pub auth_timeout: Duration,
    /// Largest frame read before the caller is authenticated.
    #[arg(long, env = contract::ENV_PRE_AUTH_MAX_FRAME_BYTES, default_value_t = DEFAULT_PRE_AUTH_MAX_FRAME)]
    pub pre_auth_max_frame_bytes: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(600),
            auth_timeout: Duration::from_secs(30),
            pre_auth_max_frame_bytes: DEFAULT_PRE_AUTH_MAX_FRAME,
        }
    }
}
