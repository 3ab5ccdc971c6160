//! `starmind configs`: the named model configs and their parameter counts.

use crate::config;
use anyhow::Result;

/// Arguments of `starmind configs`.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only the configs of one seed study: a scale (1k … 10k) or an extreme phase of seed 001.
    #[arg(long, value_enum)]
    pub family: Option<config::Family>,
}

pub fn run(args: Args) -> Result<()> {
    let mut configs = config::all()?;
    if let Some(family) = args.family {
        configs.retain(|c| c.families.contains(&family));
    }
    if args.json {
        let rows: Vec<_> = configs
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "params": c.model.param_count(),
                    "seed_params": c.model.seed_param_count(),
                    "seed_stated_params": c.seed_params,
                    "families": c.families,
                    // false: a shape the trainer cannot run yet (see `config::ModelConfig::validate`).
                    "trainable": c.model.validate().is_ok(),
                    "model": c.model,
                })
            })
            .collect();
        crate::outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    crate::outln!(
        "{:<28} {:>9} {:>9} {:>6} {:>4} {:>6} {:>6} {:>5} {:>5} {:>7} {:>5}  families",
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
    )?;
    for c in &configs {
        let m = &c.model;
        let families: Vec<&str> = c.families.iter().map(|f| f.as_str()).collect();
        // "16×1": explicit head size (attention n_heads·head_size wide, not dim).
        let heads = match m.head_size {
            Some(size) => format!("{}×{size}", m.n_heads),
            None => m.n_heads.to_string(),
        };
        crate::outln!(
            "{:<28} {:>9} {:>9} {:>6} {:>4} {:>6} {:>6} {:>5} {:>5} {:>7} {:>5}  {}",
            c.name,
            m.param_count(),
            m.seed_param_count(),
            m.vocab_size,
            m.dim,
            m.hidden_dim,
            m.n_layers,
            heads,
            m.n_kv_heads,
            m.seq_len,
            format!("{:?}", m.tokenizer).to_lowercase(),
            families.join(" ")
        )?;
    }
    crate::outln!(
        "\nparams: every trainable weight; seed-cnt: the seed's convention (no RMSNorm gains); \
         heads H×S: H heads of size S, an attention H·S wide (the trainer runs only H·S = dim yet). Aliases: {}.",
        config::ALIASES
            .iter()
            .map(|(old, new)| format!("{old} → {new}"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    Ok(())
}
