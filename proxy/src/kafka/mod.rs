//! Kafka protocol plumbing shared by every concern, with no policy in it:
//! wire primitives (`wire`) and the record-batch header (`record_batch`).
//! One copy of each helper lives here.

pub mod record_batch;
pub mod wire;
