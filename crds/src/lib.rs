//! streamgate's Kubernetes API, group `streamgate.dev`, version `v1alpha1`.
//!
//! Three namespaced kinds: [`StreamPolicy`] (who may do what to which topics),
//! [`MaskingRule`] (which fields a reader sees masked) and [`AccessApproval`]
//! (a just-in-time grant a person decides with `kubectl patch`). Also what
//! both the operator and the proxy need to agree on:
//!
//! - [`matching`]: topic globs ([`matching::topic_matches`],
//!   [`matching::check_topic_glob`]) and subjects ([`Subject::matches`] against a
//!   [`matching::Principal`], `name: "*"` = any of that kind);
//! - [`field_path`]: the masking path subset `$.a.b`, `$.a[*].b`, `$..b`;
//! - [`duration`]: grant durations (`30m`, `1h`), capped at 7 days;
//! - [`approver`]: who may decide an AccessApproval (not the requester under
//!   the cluster's OIDC username mapping, one of the rule's approvers) and when
//!   the grant ends; shared by the operator's webhook and `--policy-dir` mode;
//! - [`validation`]: what the API server's CEL rules cannot say, every problem
//!   at once with the field and the fix;
//! - [`generate`]: the CRD YAML (`crds/*.yaml`, `charts/streamgate/crds/`).
//!
//! # Dependencies, and why each is here
//!
//! - `kube` (derive): `#[derive(CustomResource, KubeSchema)]` turns the spec
//!   structs into CRDs, with CEL rules (`x-kubernetes-validations`), list-map
//!   keys and printer columns declared next to the fields they govern.
//! - `k8s-openapi`: the `CustomResourceDefinition` type the generator renders.
//! - `schemars`: the OpenAPI v3 schema of every type (kube rewrites it to a
//!   structural schema); `#[schemars(length(..))]` bounds lists and strings so
//!   the API server's CEL cost estimate stays within budget.
//! - `serde`, `serde_json`, `serde_yaml`: the wire format, and the YAML the
//!   generator writes.
//! - `thiserror`: the library's error types ([`validation::ValidationErrors`],
//!   [`duration::DurationError`], …).
//! - `humantime`: durations as people write them (`1h 30m`).
//! - `regex`: checks that a MaskingRule's `mrnPattern` compiles (the proxy
//!   compiles the same pattern with the same crate).
//! - `chrono`: RFC 3339 timestamps in AccessApproval status
//!   ([`AccessApprovalStatus::is_live`]).
//! - `anyhow`: only in the `streamgate-crdgen` binary.
//! - `kube-cel` (dev only): evaluates the generated CEL rules client-side in
//!   tests (`tests/cel_rules.rs`), so a rule that refuses the wrong object, or
//!   would blow the API server's cost budget, fails `cargo test`, not a cluster.
//!
//! # Changes to api.md and why
//!
//! - **Wildcard subjects**: `name: "*"` matches any principal of the kind
//!   (User `*` any authenticated OIDC user, Group `*` any OIDC user,
//!   ServiceAccount `*` any ServiceAccount of the subject's namespace). An
//!   allow-all policy for a test or a sandbox namespace needs it. Refused
//!   where "anyone" defeats the list: approvers, exemptSubjects, requester.
//! - **MaskingRule `mrnPattern`** and detectors `NPI`, `MRN`: medical record
//!   numbers have no universal format, so the `MRN` detector needs the
//!   organisation's pattern; validation (and CEL) require one with the other.
//! - **More `blockedOperations`**: `CreateTopics`, `CreatePartitions`,
//!   `DeleteGroups`, `AlterClientQuotas`, `AlterUserScramCredentials` besides
//!   api.md's list, so a policy can block every destructive or administrative API by name.
//! - **`decidedBy` optional**: absent until a decision is made (instead of
//!   `""`), so "not decided" and "decided by an empty user" cannot be confused;
//!   it cannot change once the decision is made (CEL).
//! - **`workload` optional** in AccessApproval: a request can come from a
//!   client outside the injected pod set (e.g. the local demo).
//! - **`rules` is a map-list keyed by `name`**, besides the CEL uniqueness
//!   rule: server-side apply then merges rules by name.
//! - **Bounds** (`maxItems`/`maxLength`) on lists and strings CEL rules touch:
//!   without them the API server's cost estimate refuses the CRD.
//! - **Extra CEL rules** on MaskingRule: a `Hash` field needs
//!   `hashKeySecretRef`; the `MRN` detector needs `mrnPattern`.
//! - **Defaults**: `effect: Allow`, `audit: {payload: Digest, failureMode:
//!   Closed}`, `format: Json`, `applyTo: [Fetch]`, `decision: Pending`.
//! - **Durations** (`maxDuration`, `duration`) must be positive and at most
//!   7 days: longer access belongs in a standing rule, not an approval.
//! - **`format: Text` takes detectors, not fields**: a plain string has no
//!   fields to address.
//! - **An `approval` only on Allow rules**: a Deny cannot be approved away.
//! - **AccessApproval `topics` are names, not globs**
//!   ([`matching::check_topic_name`]): a grant covers exactly the topics it
//!   names, so a wildcard a client put in its request cannot widen it.
#![forbid(unsafe_code)]

pub mod access_approval;
pub mod approver;
pub mod common;
pub mod contract;
pub mod duration;
pub mod field_path;
pub mod generate;
pub mod masking_rule;
pub mod matching;
pub mod stream_policy;
pub mod validation;

pub use access_approval::*;
pub use common::*;
pub use masking_rule::*;
pub use stream_policy::*;

/// The API group of every streamgate kind.
pub const GROUP: &str = "streamgate.dev";
/// The API version of every streamgate kind.
pub const VERSION: &str = "v1alpha1";
