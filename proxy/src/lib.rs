//! streamgate's sidecar: a Kafka-protocol gate between an unchanged client
//! and the real brokers.
//!
//! Module map (one concern each; the pure cores have no IO):
//! - `app`      — the composition root: flags → the running sidecar → drain
//! - `approval` — just-in-time AccessApproval requests (builder, dedup, sinks)
//! - `audit`    — the audit record, the hash chain, the spool, shippers, CLI
//! - `masking`  — the masking engine (pure) and record-batch rewriting
//! - `identity` — SASL/OAUTHBEARER termination, JWT validation, workload identity
//! - `kafka`    — protocol plumbing: wire primitives, the record-batch header
//! - `policy`   — compiled StreamPolicy decisions (pure), policy sources, enforcement
//! - `run`      — the data path: listener, codec, addresses, upstream, admin
#![forbid(unsafe_code)]

pub mod app;
pub mod approval;
pub mod audit;
pub mod identity;
pub mod kafka;
pub mod masking;
pub mod policy;
pub mod run;

pub use app::{App, Environment};
pub use run::RunArgs;
