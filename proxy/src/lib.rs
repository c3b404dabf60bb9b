//! streamgate's sidecar: a Kafka-protocol gate between an unchanged client
//! and the real brokers.
//!
//! Module map (one concern each; the pure cores have no IO):
//! - `app`      — the composition root: flags → the running sidecar → drain
//! - `datapath` — sockets, listeners, the connection loop, the pipeline of concerns
//! - `kafka`    — protocol plumbing: framing, wire primitives, the record-batch header
//! - `identity` — the identity stage and its `Caller`, SASL/OAUTHBEARER, JWT validation,
//!   SAML 2.0 assertions, workload identity
//! - `policy`   — compiled StreamPolicy decisions (pure), policy sources, enforcement
//! - `approval` — just-in-time AccessApproval requests (builder, dedup, sinks)
//! - `masking`  — the masking engine (pure), record-batch rewriting, the rules in force
//! - `audit`    — the audit record, the hash chain, the spool, shippers, CLI, the data-path stage
//!
//! See `proxy/README.md` for where each concern lives and the pipeline's order.
//!
//! Native code: SAML XML signatures are verified by libxml2 + xmlsec1 through
//! the `samael` crate (its own `unsafe` FFI): XML canonicalisation and
//! signature references are where hand-written verifiers fall to signature
//! wrapping, so a proven implementation does it and this crate stays
//! `forbid(unsafe_code)`.
#![forbid(unsafe_code)]

pub mod app;
pub mod approval;
pub mod audit;
pub mod datapath;
pub mod identity;
pub mod kafka;
pub mod masking;
pub mod policy;

pub use app::RunArgs;
pub use app::{App, Environment};
