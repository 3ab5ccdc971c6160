//! `starmind eval`: validation loss and bits per byte of a checkpoint directory (the float
//! candle model) or a model file (the integer engine, exactly as the device computes its
//! logits), with unigram and bigram byte baselines on the same split and the same JSON keys.
//!
//! One procedure for both: [`bpb::bits_per_byte`] (docs/ARCHITECTURE.md) with a scorer per
//! model kind, [`float`] or [`engine`]; [`compare`] puts the two side by side for
//! `starmind export --compare`.

use crate::data::{self, Corpus};
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Result};
use serde::Serialize;
use starmind_engine::format::NO_TOKEN;
use starmind_engine::{Model, Session};
use std::path::{Path, PathBuf};

pub mod bpb;
pub mod compare;
pub mod engine;
pub mod float;

use bpb::{bits_per_byte, byte_baselines, BpbReport};

/// Arguments of `starmind eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A checkpoint directory (from `starmind train`) or a model file (.smb).
    pub checkpoint: PathBuf,
    /// Text the split comes from, as for `starmind train`: local files or a Hugging Face dataset
    /// id. The validation split is `--valid`, or else the held-out tail of this text; the
    /// baselines are fitted on the rest. Default: the checkpoint's own training sources, else
    /// roneneldan/TinyStories.
    #[arg(long)]
    pub data: Vec<String>,
    /// A separate validation file.
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Use only the first N bytes of the validation text (cut at a character boundary).
    #[arg(long)]
    pub max_bytes: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Windows scored per forward pass (checkpoints only).
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
}

/// Everything `starmind eval` prints.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub val_loss: f64,
    pub val_bpb: f64,
    pub unigram_bpb: f64,
    pub bigram_bpb: f64,
    pub tokens: usize,
    pub bytes: u64,
    pub unk_tokens: usize,
    /// Bytes of validation text (after `--max-bytes`), which the baselines score.
    pub valid_bytes: usize,
    pub train_bytes: usize,
}

/// The validation text `--max-bytes` selects.
pub fn validation_text(corpus: &Corpus, max_bytes: Option<usize>) -> &str {
    match max_bytes {
        Some(n) => data::truncate_bytes(&corpus.valid, n),
        None => &corpus.valid,
    }
}

/// Full evaluation of one model given its tokenizer and scorer: bpb plus baselines.
pub fn evaluate<F>(
    tokenizer: &Tokenizer,
    corpus: &Corpus,
    seq_len: usize,
    max_bytes: Option<usize>,
    batch: usize,
    score: F,
) -> Result<EvalReport>
where
    F: FnMut(&[&[u32]]) -> Result<Vec<Vec<f64>>>,
{
    let valid = validation_text(corpus, max_bytes);
    let encoded = tokenizer.encode_with_source_bytes(valid);
    let bpb = bits_per_byte(
        &encoded.ids,
        &encoded.source_bytes,
        tokenizer.unk_id(),
        seq_len,
        batch,
        score,
    )?;
    Ok(EvalReport::new(&bpb, corpus, valid))
}

impl EvalReport {
    /// A model's bits per byte on `valid` (a prefix of the corpus's validation text) next to the
    /// byte baselines fitted on the corpus's training text.
    pub fn new(bpb: &BpbReport, corpus: &Corpus, valid: &str) -> EvalReport {
        let (unigram_bpb, bigram_bpb) = byte_baselines(corpus.train.as_bytes(), valid.as_bytes());
        EvalReport {
            val_loss: bpb.val_loss,
            val_bpb: bpb.val_bpb,
            unigram_bpb,
            bigram_bpb,
            tokens: bpb.tokens,
            bytes: bpb.bytes,
            unk_tokens: bpb.unk_tokens,
            valid_bytes: valid.len(),
            train_bytes: corpus.train.len(),
        }
    }
}

/// Prints a report as one JSON object or as a short table.
pub fn print_report(report: &EvalReport, json: bool) -> Result<()> {
    if json {
        crate::outln!("{}", serde_json::to_string(report)?)?;
    } else {
        crate::outln!(
            "val_loss    {:.4} nats/token over {} tokens",
            report.val_loss,
            report.tokens
        )?;
        crate::outln!(
            "val_bpb     {:.4} bits/byte over {} bytes ({} <unk>)",
            report.val_bpb,
            report.bytes,
            report.unk_tokens
        )?;
        crate::outln!(
            "unigram_bpb {:.4}  (byte model, add-one, fitted on {} training bytes)",
            report.unigram_bpb,
            report.train_bytes
        )?;
        crate::outln!("bigram_bpb  {:.4}", report.bigram_bpb)?;
    }
    Ok(())
}

/// `starmind eval`.
pub fn run(args: Args) -> Result<()> {
    crate::process::tune_allocator();
    if args.batch == 0 {
        bail!("--batch 0: must be at least 1");
    }
    if !args.checkpoint.exists() {
        bail!(
            "{} does not exist: pass a checkpoint directory (from `starmind train`) or a model file (from `starmind export`)",
            args.checkpoint.display()
        );
    }
    if args.checkpoint.is_dir()
        && crate::checkpoint::read_config(&args.checkpoint)
            .is_ok_and(|c| c.model.tokenizer == crate::config::TokenizerKind::None)
    {
        bail!(
            "checkpoint {} has no tokenizer (it runs on token ids), so it cannot score text",
            args.checkpoint.display()
        );
    }
    let recorded = match args.data.is_empty() && args.checkpoint.is_dir() {
        true => crate::checkpoint::recorded_data_sources(&args.checkpoint),
        false => None,
    };
    let corpus = match recorded {
        Some((data, valid)) => {
            data::load_corpus(&data, args.valid.as_deref().or(valid.as_deref()))?
        }
        None => data::load_corpus(&args.data, args.valid.as_deref())?,
    };
    let report = if args.checkpoint.is_file() {
        let bytes = crate::model_file::read(&args.checkpoint)?;
        evaluate_file(&bytes, &corpus, args.max_bytes)?
    } else {
        eval_checkpoint(&args.checkpoint, &corpus, &args)?
    };
    print_report(&report, args.json)
}

fn eval_checkpoint(dir: &Path, corpus: &Corpus, args: &Args) -> Result<EvalReport> {
    let config = crate::checkpoint::read_config(dir)?;
    let m = &config.model;
    crate::budget::check_memory(
        &format!(
            "scoring {} windows of {} tokens per pass with {}",
            args.batch, m.seq_len, config.name
        ),
        &crate::budget::eval_memory(
            m,
            crate::budget::eval_tokens_in_flight(args.batch, m.seq_len),
        ),
        "try a smaller --batch",
    )?;
    let checkpoint = crate::checkpoint::load(dir)?;
    crate::process::single_threaded_matmuls();
    eprintln!(
        "checkpoint {} ({}, step {})",
        dir.display(),
        checkpoint.config.name,
        checkpoint.step
    );
    let seq_len = checkpoint.config.model.seq_len;
    evaluate(
        &checkpoint.tokenizer,
        corpus,
        seq_len,
        args.max_bytes,
        args.batch,
        float::scorer(&checkpoint.model),
    )
}

/// Bits per byte and baselines of a model file on the corpus's validation split, scored by the
/// integer engine with its own tokenizer.
pub fn evaluate_file(
    bytes: &[u8],
    corpus: &Corpus,
    max_bytes: Option<usize>,
) -> Result<EvalReport> {
    let model = Model::parse(bytes)?;
    let config = model.config();
    let valid = validation_text(corpus, max_bytes);
    let (ids, source_bytes) = engine::encode_with_source_bytes(&model, valid)?;
    let unk = (config.unk_id != NO_TOKEN).then_some(config.unk_id);
    let mut arena = vec![0u8; Model::arena_bytes(&config, config.seq_len)];
    let mut session = Session::new(&model, config.seq_len, &mut arena)?;
    let bpb = bits_per_byte(&ids, &source_bytes, unk, config.seq_len, 64, |windows| {
        windows
            .iter()
            .map(|w| Ok(engine::score_window(&mut session, w)?.log_probs))
            .collect()
    })?;
    Ok(EvalReport::new(&bpb, corpus, valid))
}
