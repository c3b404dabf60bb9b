//! `streamgate-proxy audit …`: verify and export a spool.

/// `streamgate-proxy audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {}

/// Run an audit subcommand; returns the process exit code.
pub fn run(cmd: AuditCommand) -> anyhow::Result<i32> {
    match cmd {}
}
