//! `starmind flash` (being built).

/// Arguments of `starmind flash`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`starmind flash` is not implemented yet")
}
