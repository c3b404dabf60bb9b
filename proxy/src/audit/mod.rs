//! The audit trail (see ../shared/design/audit.md).

pub mod cli;
