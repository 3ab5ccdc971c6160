//! `starmind generate`: stream text from a model file with the integer engine on this computer —
//! the same tokenizer, forward pass, sampler and story loop (`starmind_engine::story`) as the
//! device, so the same seed gives the same tokens — or from a checkpoint directory with the
//! float model ([`crate::sample::generate`]).

use crate::checkpoint::Checkpoint;
use crate::sample::{self, FloatStory};
use crate::sampling::sampler_config;
use anyhow::{bail, Context, Result};
use starmind_engine::story::{self, Start, StoryConfig, WhenFull};
use starmind_engine::{Model, SamplerConfig, Session};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

/// Arguments of `starmind generate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (.smb) written by `starmind export` (integer engine), or a checkpoint
    /// directory from `starmind train` / `starmind import` (float model).
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
    /// Print the generated token ids (space-separated) instead of text.
    #[arg(long)]
    pub ids: bool,
    /// Generate on past the end of the story: otherwise generation stops when the model draws
    /// its end-of-text id (`<|endoftext|>`; llama2.c: BOS; Hugging Face: eos_token_id or BOS).
    #[arg(long)]
    pub no_stop: bool,
}

/// Generates up to `n` tokens after `prompt` with the engine's story loop; returns the ids
/// (prompt excluded). The story starts with the prompt alone, or after `<|endoftext|>` when the
/// prompt is empty (a new story, as stories follow it in the training text); with
/// `stop_at_end_of_text` it ends when the model draws `<|endoftext|>` (which is not passed on),
/// else it runs on past it. When the context
/// fills it keeps its last half and goes on. `emit` sees each token's bytes as it is drawn.
pub fn generate(
    model: &Model,
    prompt: &[u8],
    n: usize,
    sampler: SamplerConfig,
    stop_at_end_of_text: bool,
    emit: impl FnMut(&[u8]) -> Result<()>,
) -> Result<Vec<u32>> {
    let config = model.config();
    let ctx = config.seq_len;
    let story = StoryConfig {
        sampler,
        max_tokens: n,
        stop_at_end_of_text,
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

/// Generates up to `n` tokens after `prompt` with the float model of a checkpoint; returns the
/// ids (prompt excluded). The story starts after the model's end-of-text id (llama2.c and
/// Hugging Face: BOS, as their own generation does), then the prompt's ids; with
/// `stop_at_end_of_text` it ends when the model draws one of the config's stop ids
/// ([`crate::config::NamedConfig::stop_ids`]), which is not passed on. `emit` sees each id as it
/// is drawn.
pub fn generate_float(
    checkpoint: &Checkpoint,
    prompt: &str,
    n: usize,
    sampler: SamplerConfig,
    stop_at_end_of_text: bool,
    mut emit: impl FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    let tokenizer = &checkpoint.tokenizer;
    let config = &checkpoint.config;
    if !prompt.is_empty() && !tokenizer.can_encode() {
        bail!(
            "the checkpoint has no tokenizer (it runs on token ids): give an empty prompt to start from id {}",
            config.eot_id()
        );
    }
    let start = [vec![config.eot_id()], tokenizer.encode(prompt)].concat();
    let story = FloatStory {
        sampler,
        max_tokens: n,
        stop_ids: match stop_at_end_of_text {
            true => config.stop_ids(),
            false => Vec::new(),
        },
        vocab: tokenizer.vocab_size(),
    };
    sample::generate(&checkpoint.model, &start, &story, |id| {
        emit(id)?;
        Ok(ControlFlow::Continue(()))
    })
}

/// `starmind generate`.
pub fn run(args: Args) -> Result<()> {
    let sampler = sampler_config(args.temperature, args.top_k, args.top_p, args.seed)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.file.is_dir() {
        let checkpoint = crate::checkpoint::load(&args.file)?;
        let tokenizer = &checkpoint.tokenizer;
        if !args.ids && !tokenizer.can_encode() {
            bail!(
                "checkpoint {} has no tokenizer, so its tokens have no text: use --ids",
                args.file.display()
            );
        }
        if !args.ids {
            out.write_all(args.prompt.as_bytes())?;
        }
        let mut first = true;
        let stop = !args.no_stop;
        generate_float(
            &checkpoint,
            &args.prompt,
            args.tokens,
            sampler,
            stop,
            |id| {
                if args.ids {
                    write!(out, "{}{id}", if first { "" } else { " " })?;
                } else {
                    out.write_all(&tokenizer.token_bytes(id))?;
                }
                first = false;
                out.flush()?;
                Ok(())
            },
        )
        .with_context(|| format!("checkpoint {}", args.file.display()))?;
        writeln!(out)?;
        return Ok(());
    }
    let bytes = crate::model_file::read(&args.file)?;
    let model = Model::parse(&bytes)?;
    let vocab = model.config().vocab_size as u32;
    if !args.ids && (0..vocab).all(|id| model.token_bytes(id).is_empty()) {
        bail!(
            "model file {} has no tokenizer, so its tokens have no text: use --ids",
            args.file.display()
        );
    }
    if args.ids {
        let stop = !args.no_stop;
        let ids = generate(
            &model,
            args.prompt.as_bytes(),
            args.tokens,
            sampler,
            stop,
            |_| Ok(()),
        )?;
        let text: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "{}", text.join(" "))?;
        return Ok(());
    }
    out.write_all(args.prompt.as_bytes())?;
    generate(
        &model,
        args.prompt.as_bytes(),
        args.tokens,
        sampler,
        !args.no_stop,
        |piece| {
            out.write_all(piece)?;
            out.flush()?;
            Ok(())
        },
    )?;
    writeln!(out)?;
    Ok(())
}
