//! The `streamgate-proxy` binary: `run` (the sidecar), `wait-ready` (the
//! injected `postStart` hook that holds the app until the sidecar serves) and
//! `audit` (verify/export).
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
    /// Wait until a sidecar's admin port answers `/readyz` with 200 (the
    /// injected postStart hook on clusters without native sidecars).
    WaitReady(WaitReadyArgs),
    /// Work with an audit spool.
    #[command(subcommand)]
    Audit(streamgate_proxy::audit::cli::AuditCommand),
}

#[derive(Debug, clap::Args)]
struct WaitReadyArgs {
    /// The sidecar's admin address.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: std::net::SocketAddr,
    /// Give up (exit 1, the kubelet then restarts the container) after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
}

/// Polls `GET /readyz` over plain HTTP/1.0 (no client library: the hook must
/// start fast and the admin port speaks nothing fancier).
fn wait_ready(args: &WaitReadyArgs) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let deadline = std::time::Instant::now() + args.timeout;
    let ready = || -> std::io::Result<bool> {
        let mut s =
            std::net::TcpStream::connect_timeout(&args.admin, std::time::Duration::from_secs(1))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
        s.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.") && &head[9..12] == b"200")
    };
    loop {
        if matches!(ready(), Ok(true)) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the sidecar at {} was not ready within {:?}",
                args.admin,
                args.timeout
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
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
        Command::WaitReady(args) => wait_ready(&args),
        Command::Audit(cmd) => {
            let code = streamgate_proxy::audit::cli::run(cmd)?;
            std::process::exit(code)
        }
    }
}
