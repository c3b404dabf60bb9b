//! The `streamgate-proxy` binary: `run` (the sidecar) and `audit` (verify/export).
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "streamgate-proxy",
    version,
    about = "streamgate sidecar: governed access to Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sidecar proxy.
    Run(streamgate_proxy::RunArgs),
    /// Work with an audit spool.
    #[command(subcommand)]
    Audit(streamgate_proxy::audit::cli::AuditCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(streamgate_proxy::app::run(args))
        }
        Command::Audit(cmd) => {
            let code = streamgate_proxy::audit::cli::run(cmd)?;
            std::process::exit(code)
        }
    }
}
