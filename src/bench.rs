//! `starmind bench` (being built).

/// Arguments of `starmind bench`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`starmind bench` is not implemented yet")
}
