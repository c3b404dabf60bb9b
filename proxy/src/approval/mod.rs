//! Just-in-time access: when a rule with `approval` matches and no live grant
//! exists, the sidecar asks for one by creating an `AccessApproval`.
//!
//! - [`build`]     — pure: the AccessApproval for (requester, workload, rule,
//!   topics, operations), with a deterministic DNS-1123 name;
//! - [`dedup`]     — pure: one outstanding request per (requester, rule,
//!   topics, operations) and a global rate limit;
//! - [`sink`]      — IO: where the object goes (Kubernetes API or a directory);
//! - [`requester`] — glue the connection gate calls (non-blocking: it spawns).
//!
//! ## Approving outside a cluster (`--policy-dir`)
//!
//! In directory mode there is no operator and no admission webhook, so nobody
//! moves `status.phase` or computes `status.expiresAt`. The sidecar writes the
//! request as `<name>.yaml` into the approvals directory, which by default is
//! the policy directory itself: the directory source reads only the top level
//! of `--policy-dir`, so a request written there is picked up — and so is a
//! person's edit of it — with no extra watcher. A local user approves by doing
//! what the webhook and the operator would do, in the same file:
//!
//! ```yaml
//! spec:
//!   decision: Approved
//!   decidedBy: dr.house@example.com    # an approver listed by User in the rule
//! status:
//!   decidedAt: "2026-11-27T07:00:00Z"  # RFC 3339; the grant runs from then
//! ```
//!
//! The grant is live as soon as the directory reloads (about 100 ms), without
//! restarting the proxy. The file is held to the webhook's rules
//! (`streamgate_crds::approver`, shared with the operator): `decidedBy` must
//! be a listed approver and not the requester, and the grant ends at
//! `decidedAt` + the requested duration capped at the rule's `maxDuration`,
//! whatever `expiresAt` the file claims (it may only shorten it). Nothing
//! authenticates who wrote the file: whoever can write the directory can
//! also write its StreamPolicies, so directory mode is for development,
//! where the user owns the files (see `policy::source_dir`).
//! `--approvals-dir` puts requests elsewhere (then they are only a record).
pub mod build;
pub mod dedup;
pub mod requester;
pub mod sink;

pub use build::{
    ApprovalRequest, BreakGlassUse, BuildError, build_access_approval, build_access_approval_with,
};
pub use dedup::{Dedup, DedupConfig};
pub use requester::{
    ApprovalEvent, ApprovalRequester, audit_subject, record_approval_event, requester_oidc,
};
pub use sink::{ApprovalSink, Created, SinkError};
