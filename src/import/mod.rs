//! `starmind import`: peer checkpoints → a starmind checkpoint directory (docs/ARCHITECTURE.md
//! tensor names), which eval, export, generate and bench then take like a trained one.
//!
//! - [`llama2c`]: llama2.c `run.c` checkpoints (legacy version-0 `model.bin`) and its
//!   `tokenizer.bin`;
//! - [`hf`]: Hugging Face `LlamaForCausalLM` models (`config.json`, `model.safetensors`,
//!   `tokenizer.json`), local or through hf-hub.
//!
//! Both end in [`write_checkpoint`]: the tensors are checked against the config by building the
//! float model, then `model.safetensors`, `tokenizer.json` (if any) and `config.json` (last: it
//! marks a complete checkpoint) are written atomically. An existing checkpoint is never
//! overwritten.

pub mod hf;
pub mod llama2c;

use crate::checkpoint::{self, CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE};
use crate::config::{NamedConfig, TokenizerKind};
use crate::fsio;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Arguments of `starmind import`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub source: Source,
}

/// What to import.
#[derive(clap::Subcommand, Debug)]
pub enum Source {
    /// A llama2.c checkpoint (run.c's legacy version-0 model.bin), optionally with its
    /// tokenizer.bin.
    Llama2c(llama2c::Args),
    /// A Hugging Face Llama model (LlamaForCausalLM): a hub id or a local directory.
    Hf(hf::Args),
}

/// `starmind import`.
pub fn run(args: Args) -> Result<()> {
    match args.source {
        Source::Llama2c(args) => llama2c::run(args),
        Source::Hf(args) => hf::run(args),
    }
}

/// An imported model, ready to be written: config, tensors by checkpoint name, tokenizer
/// (`None` for a model that runs on token ids; the config's tokenizer is then `none`).
pub struct Imported {
    pub config: NamedConfig,
    pub tensors: HashMap<String, Tensor>,
    pub tokenizer: Option<Tokenizer>,
    /// Where it came from, stored in the weights' metadata (`source`).
    pub source: String,
}

/// Checks `imported` (every tensor name and shape, the tokenizer against the config) and writes
/// it as the checkpoint directory `out`, which must not hold a checkpoint yet.
pub fn write_checkpoint(out: &Path, imported: &Imported) -> Result<()> {
    let config = &imported.config;
    checkpoint::model_from_tensors(&imported.tensors, config)
        .context("the imported weights do not form a starmind model")?;
    match (&imported.tokenizer, config.model.tokenizer) {
        (None, TokenizerKind::None) => {}
        (Some(tok), kind) if tok.kind() == kind => {
            if tok.vocab_size() > config.model.vocab_size {
                bail!(
                    "the tokenizer has {} ids but the model only {}",
                    tok.vocab_size(),
                    config.model.vocab_size
                );
            }
            if tok.eot_id() != config.eot_id() {
                bail!(
                    "the tokenizer's story separator is id {}, the config's {}",
                    tok.eot_id(),
                    config.eot_id()
                );
            }
        }
        (tok, kind) => bail!(
            "config tokenizer {kind:?} does not match the tokenizer ({:?})",
            tok.as_ref().map(Tokenizer::kind)
        ),
    }
    for existing in [CONFIG_FILE, MODEL_FILE] {
        if out.join(existing).exists() {
            bail!(
                "{} already holds a checkpoint ({existing}); choose another --out or remove it",
                out.display()
            );
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let named: Vec<(String, Tensor)> = imported
        .tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    let metadata = BTreeMap::from([
        ("step".to_string(), "0".to_string()),
        ("source".to_string(), imported.source.clone()),
    ]);
    let bytes = checkpoint::serialize_tensors(&named, &metadata)?;
    fsio::write_atomic(&out.join(MODEL_FILE), &bytes)?;
    if let Some(tok) = &imported.tokenizer {
        tok.save(&out.join(TOKENIZER_FILE))?;
    }
    checkpoint::write_config(out, config)?;
    // What we wrote must load the way every other command loads it.
    checkpoint::load(out).with_context(|| format!("re-reading {}", out.display()))?;
    let m = &config.model;
    println!(
        "wrote {}: {} parameters (dim {}, hidden {}, {} layers, {}/{} heads, vocab {}, seq_len {}, {} classifier), tokenizer {:?}, end-of-text id {}",
        out.display(),
        m.param_count(),
        m.dim,
        m.hidden_dim,
        m.n_layers,
        m.n_heads,
        m.n_kv_heads,
        m.vocab_size,
        m.seq_len,
        if m.tied_embeddings { "shared" } else { "separate" },
        m.tokenizer,
        config.eot_id()
    );
    Ok(())
}

/// A `[rows, cols]` (or `[rows]` when `cols` is 0) f32 tensor from a slice.
fn tensor(values: &[f32], rows: usize, cols: usize) -> Result<Tensor> {
    let device = &candle_core::Device::Cpu;
    Ok(if cols == 0 {
        Tensor::from_slice(values, rows, device)?
    } else {
        Tensor::from_slice(values, (rows, cols), device)?
    })
}
