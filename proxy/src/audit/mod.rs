//! The audit trail (see ../shared/design/audit.md).

pub mod chain;
pub mod cli;
pub mod export;
pub mod record;
pub mod segment;
pub mod spool;
pub mod verify;
