//! `streamgate-proxy run`: the data path.

/// Flags for `streamgate-proxy run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {}

/// Run the sidecar until SIGTERM.
pub async fn run(_args: RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("the data path is not built yet")
}
