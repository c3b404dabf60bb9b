//! The audit trail (see ../shared/design/audit.md).

pub mod chain;
pub mod cli;
pub mod record;
pub mod segment;
pub mod spool;
