//! `starmind generate`: stream text from a model file with the integer engine on this computer —
//! the same tokenizer, forward pass and sampler as the device, so the same seed gives the same
//! tokens.

use anyhow::{anyhow, bail, Result};
use starmind_engine::{Model, Sampler, SamplerConfig, Session};
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `starmind generate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (.smb) written by `starmind export`.
    pub file: PathBuf,
    /// Text to continue (default: start of a story).
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long, default_value_t = 200)]
    pub tokens: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Temperature (0 = greedy); stored as a multiple of 1/256 like the device.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Sample among the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: u32,
    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
}

/// Device sampler settings from the command-line values.
pub fn sampler_config(
    temperature: f64,
    top_k: u32,
    top_p: f64,
    seed: u64,
) -> Result<SamplerConfig> {
    if !(0.0..=100.0).contains(&temperature) {
        bail!("--temperature must be in 0..=100");
    }
    if !(0.0..=1.0).contains(&top_p) || top_p == 0.0 {
        bail!("--top-p must be in (0, 1]");
    }
    Ok(SamplerConfig {
        temperature_q8: (temperature * 256.0).round() as u32,
        top_k,
        top_p_q16: (top_p * 65536.0).round() as u32,
        seed,
    })
}

/// Generates `n` tokens after `prompt`; returns the ids (prompt excluded). `emit` sees each
/// token's bytes as it is drawn. When the context fills, the last half is kept and re-fed.
pub fn generate(
    model: &Model,
    prompt: &[u8],
    n: usize,
    sampler: SamplerConfig,
    mut emit: impl FnMut(&[u8]) -> Result<()>,
) -> Result<Vec<u32>> {
    let config = model.config();
    let ctx = config.seq_len;
    let mut history = vec![0u32; prompt.len() + 1];
    let count = model
        .encode(prompt, &mut history)
        .map_err(|e| anyhow!("encoding the prompt: {e}"))?;
    history.truncate(count);
    if history.is_empty() {
        history.push(model.eot_id()); // a story starts after <|endoftext|>
    }
    let start = history.len().saturating_sub(ctx);
    history.drain(..start);
    let mut arena = vec![0u8; Model::arena_bytes(&config, ctx)];
    let mut session = Session::new(model, ctx, &mut arena).map_err(|e| anyhow!("{e}"))?;
    let mut sampler = Sampler::new(sampler);
    let mut logits = session
        .prefill(&history)
        .map_err(|e| anyhow!("{e}"))?
        .to_vec();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let next = sampler.sample(&logits);
        out.push(next);
        history.push(next);
        emit(model.token_bytes(next))?;
        if session.is_full() {
            let keep = history.len() - (ctx / 2).max(1);
            history.drain(..keep);
            session.reset();
            logits = session
                .prefill(&history)
                .map_err(|e| anyhow!("{e}"))?
                .to_vec();
        } else {
            logits = session.feed(next).map_err(|e| anyhow!("{e}"))?.to_vec();
        }
    }
    Ok(out)
}

/// `starmind generate`.
pub fn run(args: Args) -> Result<()> {
    let bytes = crate::model_file::read(&args.file)?;
    let model = Model::parse(&bytes)
        .map_err(|e| anyhow!("reading model file {}: {e}", args.file.display()))?;
    let sampler = sampler_config(args.temperature, args.top_k, args.top_p, args.seed)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    out.write_all(args.prompt.as_bytes())?;
    generate(
        &model,
        args.prompt.as_bytes(),
        args.tokens,
        sampler,
        |piece| {
            out.write_all(piece)?;
            out.flush()?;
            Ok(())
        },
    )?;
    writeln!(out)?;
    Ok(())
}
