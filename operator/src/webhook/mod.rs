//! Admission webhooks: sidecar injection and AccessApproval decisions.
pub mod approval;
pub mod guard;
pub mod handlers;
pub mod inject;
pub mod lookup;
pub mod server;
