//! `starmind train` (being built).

/// Arguments of `starmind train`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`starmind train` is not implemented yet")
}
