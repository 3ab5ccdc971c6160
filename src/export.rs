//! `starmind export` (being built).

/// Arguments of `starmind export`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`starmind export` is not implemented yet")
}
