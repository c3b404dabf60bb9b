//! Kafka protocol plumbing shared by every concern, with no policy in it:
//! framing and header peeking (`codec`), decoding that no wire length can
//! turn into an abort (`guard`), wire primitives and the lenient
//! Fetch decoder (`wire`), the record-batch header (`record_batch`), refusal codes and the Produce
//! refusal (`refusal`). One copy
//! of each helper lives here.

pub mod codec;
pub mod guard;
pub mod record_batch;
pub mod refusal;
pub mod wire;
