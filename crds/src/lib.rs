//! streamgate's Kubernetes API, group `streamgate.dev`, version `v1alpha1`.
//!
//! Three namespaced kinds: [`StreamPolicy`] (who may do what to which topics),
//! [`MaskingRule`] (which fields a reader sees masked) and [`AccessApproval`]
//! (a just-in-time grant a person decides with `kubectl patch`). Also the
//! topic-glob and subject matching both the operator and the proxy need, and
//! the validation that CEL cannot express.
#![forbid(unsafe_code)]

pub mod access_approval;
pub mod common;
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
