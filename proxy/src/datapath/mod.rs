//! The data path: sockets, listeners, the cluster view and the connection
//! loop. What happens to a frame on its way is [`pipeline`]'s business; the
//! concerns themselves live in their own folders (identity, policy, masking,
//! audit, approval).
//!
//! Layout (`addresses`, `apis`, `config`, `exchange` and `upstream::scram`
//! are pure and tested without sockets):
//! - `connection` — the pipelined per-connection loops (frames in, frames out)
//! - `pipeline`   — the order of concerns on the way in and out
//! - `exchange`   — a request or response decoded at most once, encoded at most once
//! - `apis`       — per-API response work: broker endpoints rewritten, Fetch and Produce masking hooked in
//! - `addresses`  — node id → loopback port plan
//! - `session`    — who is on the other end of one connection
//! - `state`      — shared cluster knowledge (brokers, the topic-id map), per-broker listeners
//! - `upstream`   — broker connections: TLS (rustls/ring), SASL PLAIN/SCRAM
//! - `admin`, `metrics` — /healthz, /readyz, /metrics
//! - `config`     — checks on the data path's flags
//! - `limits`     — connections, idle and authentication time, pre-auth frame size
//!
//! Dependencies used here and why: kafka-protocol (message codecs), bytes
//! (zero-copy frames), tokio-util (framing, cancellation, task tracking),
//! rustls/tokio-rustls (upstream TLS), hmac/sha2/pbkdf2/base64/rand (SCRAM),
//! axum (admin HTTP), prometheus-client (metrics), uuid (topic ids).

pub(crate) mod addresses;
pub(crate) mod admin;
pub(crate) mod apis;
pub(crate) mod config;
mod connection;
pub mod exchange;
pub mod limits;
pub(crate) mod metrics;
mod pipeline;
pub(crate) mod state;
pub(crate) mod target;
pub(crate) mod upstream;

pub use exchange::{Request, Response};
