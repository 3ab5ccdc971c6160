//! `starmind generate`: stream text from a model file with the integer engine on this computer —
//! the same tokenizer, forward pass, sampler and story loop (`starmind_engine::story`) as the
//! device, so the same seed gives the same tokens.

use crate::sampling::sampler_config;
use anyhow::Result;
use starmind_engine::story::{self, Start, StoryConfig, WhenFull};
use starmind_engine::{Model, SamplerConfig, Session};
use std::io::Write;
use std::ops::ControlFlow;
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

/// Generates `n` tokens after `prompt` with the engine's story loop; returns the ids (prompt
/// excluded). The story starts with the prompt alone (`<|endoftext|>` when it is empty), runs on
/// past `<|endoftext|>`, and when the context fills keeps its last half and goes on. `emit` sees
/// each token's bytes as it is drawn.
pub fn generate(
    model: &Model,
    prompt: &[u8],
    n: usize,
    sampler: SamplerConfig,
    emit: impl FnMut(&[u8]) -> Result<()>,
) -> Result<Vec<u32>> {
    let config = model.config();
    let ctx = config.seq_len;
    let story = StoryConfig {
        sampler,
        max_tokens: n,
        stop_at_end_of_text: false,
        start: Start::PromptOnly,
        when_full: WhenFull::Slide,
    };
    let mut arena = vec![0u8; Model::arena_bytes(&config, ctx)];
    let mut session = Session::new(model, ctx, &mut arena)?;
    let mut ids = vec![0u32; story.ids_len(prompt.len(), ctx)];
    let mut out = Emit {
        model,
        emit,
        ids: Vec::with_capacity(n),
        failed: None,
    };
    story::tell(model, &mut session, prompt, &story, &mut ids, &mut out)?;
    match out.failed {
        Some(err) => Err(err),
        None => Ok(out.ids),
    }
}

/// Hands each token's bytes to `emit`; stops the story at its first error.
struct Emit<'m, F> {
    model: &'m Model<'m>,
    emit: F,
    ids: Vec<u32>,
    failed: Option<anyhow::Error>,
}

impl<F: FnMut(&[u8]) -> Result<()>> story::Listener for Emit<'_, F> {
    fn token(&mut self, id: u32) -> ControlFlow<()> {
        self.ids.push(id);
        match (self.emit)(self.model.token_bytes(id)) {
            Ok(()) => ControlFlow::Continue(()),
            Err(err) => {
                self.failed = Some(err);
                ControlFlow::Break(())
            }
        }
    }
}

/// `starmind generate`.
pub fn run(args: Args) -> Result<()> {
    let bytes = crate::model_file::read(&args.file)?;
    let model = Model::parse(&bytes)?;
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
