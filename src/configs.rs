//! `starmind configs`: the named model configs and their parameter counts.

use crate::config;
use anyhow::Result;

/// Arguments of `starmind configs`.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let configs = config::all()?;
    if args.json {
        let rows: Vec<_> = configs
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "params": c.model.param_count(),
                    "seed_params": c.model.seed_param_count(),
                    "seed_stated_params": c.seed_params,
                    "model": c.model,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<28} {:>9} {:>9} {:>6} {:>4} {:>6} {:>6} {:>5} {:>5} {:>7} {:>5}",
        "name",
        "params",
        "seed-cnt",
        "vocab",
        "dim",
        "hidden",
        "layers",
        "heads",
        "kv",
        "seq_len",
        "tok"
    );
    for c in &configs {
        let m = &c.model;
        println!(
            "{:<28} {:>9} {:>9} {:>6} {:>4} {:>6} {:>6} {:>5} {:>5} {:>7} {:>5}",
            c.name,
            m.param_count(),
            m.seed_param_count(),
            m.vocab_size,
            m.dim,
            m.hidden_dim,
            m.n_layers,
            m.n_heads,
            m.n_kv_heads,
            m.seq_len,
            format!("{:?}", m.tokenizer).to_lowercase()
        );
    }
    println!(
        "\nparams: every trainable weight; seed-cnt: the seed's convention (no RMSNorm gains)."
    );
    Ok(())
}
