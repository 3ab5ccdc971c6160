//! `starmind generate` (being built).

/// Arguments of `starmind generate`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`starmind generate` is not implemented yet")
}
