//! `starmind eval` (being built).

/// Arguments of `starmind eval`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`starmind eval` is not implemented yet")
}
