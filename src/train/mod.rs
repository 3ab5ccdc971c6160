//! `starmind train`: a named config's transformer trained on story text with candle.
//!
//! One function per arrow: [`data::load_corpus`] → [`Tokenizer::train`] →
//! [`token_cache::load_or_tokenize`] (tokenized once, then mapped from `--out`) → the loop in
//! [`train_loop`] (AdamW, warmup + cosine, global-norm clipping, periodic validation, atomic
//! checkpoints) → final evaluation, sample and loss curve. This file is the run top to bottom;
//! [`optim`] holds AdamW and the schedule, [`metrics`] metrics.csv and the loss plot,
//! [`progress`] the progress bar.
//!
//! Data order: epochs of shuffled, non-overlapping windows ([`data::WindowOrder`]): every
//! window of an epoch once, cut at a new phase and visited in a new order each epoch.
//!
//! Determinism: all randomness (initial weights, the window order, the final sample) comes from
//! `--seed`; the number of windows drawn, the generator's state and the AdamW moments are saved
//! with every checkpoint, so `--resume` continues exactly where the run stopped.

use crate::checkpoint::{self, CONFIG_FILE, METRICS_FILE, MODEL_FILE, STATE_FILE, TOKENIZER_FILE};
use crate::config::{self, NamedConfig, TrainConfig};
use crate::data::{self, token_cache, Corpus, Rng};
use crate::eval::{self, EvalReport};
use crate::fsio;
use crate::model::{self, Transformer};
use crate::process;
use crate::sample::{self, FloatStory};
use crate::sampling::sampler_config;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub mod metrics;
pub mod optim;
pub mod progress;

use metrics::{loss_svg, metrics_csv, read_metrics, MetricsRow};
use optim::{learning_rate_in_budget, AdamW, ShardGradients};
use progress::Progress;

/// Prompt of the end-of-training sample.
pub const SAMPLE_PROMPT: &str = "Once upon a time";
const SAMPLE_TOKENS: usize = 200;
const SAMPLE_TEMPERATURE: f64 = 0.8;

/// Arguments of `starmind train`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Args {
    /// Named config (`starmind configs` lists them) or a path to a config JSON file. With
    /// --resume it only names the default output directory.
    #[arg(long)]
    pub config: Option<String>,
    /// Training text: local files (repeat the flag for several) or a Hugging Face dataset id
    /// (`owner/name`, or `owner/name:file.txt`). Default: roneneldan/TinyStories.
    #[arg(long)]
    pub data: Vec<String>,
    /// Validation text; without it the last 5% of the training text is held out.
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Checkpoint directory. Default: runs/<config name>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the checkpoint in --out (bit for bit; --data defaults to the run's own).
    #[arg(long)]
    pub resume: bool,
    /// Replace the checkpoint in --out (without it, train refuses to overwrite a trained model).
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Override the config's number of optimizer steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Override the config's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override the config's peak learning rate.
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// Override the config's batch size (sequences per step).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Override how often a checkpoint is written (steps).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Stop after this step with a checkpoint, as if interrupted (continue with --resume).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Compute threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Train for at most this many seconds (the training loop; the final evaluation comes
    /// after). The cosine schedule decays over the budget (or the steps, whichever ends first);
    /// a final checkpoint and evaluation follow.
    #[arg(long)]
    pub max_seconds: Option<f64>,
    /// Average the gradients of N batches of --batch-size sequences per optimizer step: an
    /// effective batch N times larger at the memory of one.
    #[arg(long)]
    pub accumulate: Option<usize>,
    /// Print one JSON object as the last line of stdout (tokens_per_s, steps, train_s, val_bpb,
    /// peak_rss_bytes, …).
    #[arg(long)]
    pub json: bool,
}

/// What a finished run reports (also written as `eval.json` in the checkpoint directory).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainReport {
    pub config: String,
    pub params: usize,
    pub seed_params: Option<usize>,
    /// Optimizer steps done (the whole run, resumed parts included).
    pub steps: usize,
    /// Wall seconds of the whole run's training loop, resumed parts and evaluations included.
    pub train_seconds: f64,
    /// This invocation's throughput: the speed of the loop alone, and what it timed.
    pub throughput: Throughput,
    /// Peak resident memory of this process (`VmHWM`), the final evaluation included.
    pub peak_rss_bytes: Option<u64>,
    pub eval: EvalReport,
    pub sample: String,
}

/// Training throughput of one invocation, periodic evaluations and checkpoint writes excluded.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Throughput {
    /// Training tokens per second (`tokens / train_s`).
    pub tokens_per_s: f64,
    /// Tokens trained on (inputs of every sequence of every step).
    pub tokens: u64,
    /// Seconds of forward, backward and optimizer steps.
    pub train_s: f64,
    /// Seconds of periodic evaluations and checkpoint writes inside the loop.
    pub eval_s: f64,
    /// Passes over the training tokens in the whole run so far (resumed parts included):
    /// [`data::WindowOrder::epochs`].
    pub epochs: f64,
}

/// The one-line summary `--json` prints (the interface outside checks read).
#[derive(Debug, Clone, serde::Serialize)]
pub struct JsonSummary {
    pub config: String,
    pub params: usize,
    pub steps: usize,
    pub tokens_per_s: f64,
    pub train_s: f64,
    pub eval_s: f64,
    pub val_bpb: f64,
    pub val_loss: f64,
    pub peak_rss_bytes: Option<u64>,
    /// Passes over the training tokens (whole run).
    pub epochs: f64,
}

impl TrainReport {
    /// The `--json` line.
    pub fn summary(&self) -> JsonSummary {
        JsonSummary {
            config: self.config.clone(),
            params: self.params,
            steps: self.steps,
            tokens_per_s: self.throughput.tokens_per_s,
            train_s: self.throughput.train_s,
            eval_s: self.throughput.eval_s,
            val_bpb: self.eval.val_bpb,
            val_loss: self.eval.val_loss,
            peak_rss_bytes: self.peak_rss_bytes,
            epochs: self.throughput.epochs,
        }
    }
}

/// `starmind train`.
pub fn run(args: Args) -> Result<()> {
    process::set_threads(args.threads);
    process::tune_allocator();
    let started = Instant::now();
    let out = match (&args.out, &args.config) {
        (Some(out), _) => out.clone(),
        (None, Some(name)) => PathBuf::from("runs").join(config_stem(name)),
        (None, None) => bail!("pass --config <name> (or --out <dir> with --resume)"),
    };
    let Some(report) = train(&args, &out)? else {
        return Ok(()); // --stop-after: the checkpoint is written, nothing to report yet
    };
    eprintln!(
        "done in {:.1} s; checkpoint in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    println!("{}", report.sample);
    println!(
        "final val_bpb {:.4} (val_loss {:.4} nats/token; unigram {:.4}, bigram {:.4} bpb)",
        report.eval.val_bpb, report.eval.val_loss, report.eval.unigram_bpb, report.eval.bigram_bpb
    );
    println!(
        "{} steps ({:.2} epochs), {:.0} tokens/s over {:.1} s of training ({:.1} s of evaluation and checkpoints); peak RSS {}",
        report.steps,
        report.throughput.epochs,
        report.throughput.tokens_per_s,
        report.throughput.train_s,
        report.throughput.eval_s,
        report
            .peak_rss_bytes
            .map_or("unknown".to_string(), |b| format!("{:.2} GB", b as f64 / 1e9))
    );
    if args.json {
        println!("{}", serde_json::to_string(&report.summary())?);
    }
    Ok(())
}

fn config_stem(name: &str) -> String {
    Path::new(name)
        .file_stem()
        .map_or_else(|| name.to_string(), |s| s.to_string_lossy().into_owned())
}

/// Runs (or resumes) training into `out`, then evaluates, samples and plots; `None` when the run
/// stopped at `--stop-after` (the checkpoint is written, `--resume` continues).
pub fn train(args: &Args, out: &Path) -> Result<Option<TrainReport>> {
    let device = Device::Cpu;
    validate_flags(args)?;
    let has_checkpoint = checkpoint::check_train_dir(out, args.resume, args.force)?;
    let resumed = if args.resume {
        Some(ResumeState::load(out)?)
    } else {
        None
    };

    // Config and data sources: the run's own when resuming, overridable from the command line.
    let mut config = match &resumed {
        Some(_) => checkpoint::read_config(out)?,
        None => config::load(args.config.as_deref().context("pass --config <name>")?)?,
    };
    apply_overrides(&mut config.train, args);
    config
        .train
        .validate()
        .with_context(|| format!("config {}", config.name))?;
    check_memory(&config)?;
    let (data_sources, valid_source) = match (&resumed, args.data.is_empty()) {
        (Some(state), true) => (state.data.clone(), state.valid.clone().map(PathBuf::from)),
        _ => (args.data.clone(), args.valid.clone()),
    };
    let corpus = data::load_corpus(&data_sources, valid_source.as_deref())?;
    // The sources actually read (the default resolved), so that --resume reads the same text.
    let data_sources = corpus.sources.clone();
    eprintln!(
        "{}: {} params; {} train / {} validation bytes ({})",
        config.name,
        config.model.param_count(),
        corpus.train.len(),
        corpus.valid.len(),
        corpus.description
    );

    let tokenizer = match &resumed {
        Some(_) => Tokenizer::load(&out.join(TOKENIZER_FILE))?,
        None => {
            let t0 = Instant::now();
            let tokenizer = Tokenizer::train(
                config.model.tokenizer,
                config.model.vocab_size,
                &corpus.train,
            )?;
            eprintln!(
                "tokenizer: {:?}, {} ids, trained in {:.1} s",
                tokenizer.kind(),
                tokenizer.vocab_size(),
                t0.elapsed().as_secs_f64()
            );
            tokenizer
        }
    };
    if tokenizer.vocab_size() > config.model.vocab_size {
        bail!(
            "tokenizer has {} ids but the model only {}",
            tokenizer.vocab_size(),
            config.model.vocab_size
        );
    }
    fsio::remove_stale_temp_files(out);
    if resumed.is_none() {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let previous = [
            MODEL_FILE,
            STATE_FILE,
            METRICS_FILE,
            "loss.svg",
            "sample.txt",
            "eval.json",
        ];
        if has_checkpoint {
            eprintln!("--force: replacing the checkpoint in {}", out.display());
        }
        for file in previous.iter().map(|f| out.join(f)).filter(|p| p.exists()) {
            std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
        }
        checkpoint::write_config(out, &config)?;
        tokenizer.save(&out.join(TOKENIZER_FILE))?;
    } else {
        checkpoint::write_config(out, &config)?;
    }

    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let train_tokens = token_cache::load_or_tokenize(&token_cache::Request {
        dir: out,
        role: "train",
        text: &corpus.train,
        tokenizer: &tokenizer,
        threads,
        progress: !args.json,
    })?;
    let train_tokens = train_tokens.ids();
    let valid = tokenizer.encode_with_source_bytes(&corpus.valid);
    let unknown = train_tokens
        .iter()
        .filter(|&&id| Some(id) == tokenizer.unk_id())
        .count();
    eprintln!(
        "{} train tokens ({} <unk>), {} validation tokens",
        train_tokens.len(),
        unknown,
        valid.ids.len()
    );
    if train_tokens.len() <= config.model.seq_len {
        bail!(
            "training text too short: {} tokens for seq_len {}",
            train_tokens.len(),
            config.model.seq_len
        );
    }

    process::single_threaded_matmuls();
    let run = RunInputs {
        config: &config,
        train_tokens,
        valid_ids: &valid.ids,
        valid_bytes: &valid.source_bytes,
        unk_id: tokenizer.unk_id(),
        data: &data_sources,
        valid_source: valid_source.as_deref(),
        stop_after: args.stop_after,
        max_seconds: args.max_seconds,
        threads,
        out,
    };
    let outcome = train_loop(&run, resumed, &device)?;
    if outcome.stopped_early {
        return Ok(None);
    }
    finish(&config, &tokenizer, &corpus, out, &outcome).map(Some)
}

/// The command-line numbers, checked before anything is read or allocated (the config file's
/// own fields are checked by [`TrainConfig::validate`]).
fn validate_flags(args: &Args) -> Result<()> {
    let at_least_one = [
        ("--steps", args.steps),
        ("--batch-size", args.batch_size),
        ("--checkpoint-every", args.checkpoint_every),
        ("--stop-after", args.stop_after),
        ("--threads", args.threads),
    ];
    for (flag, value) in at_least_one {
        if value == Some(0) {
            bail!("{flag} 0: must be at least 1");
        }
    }
    if let Some(lr) = args.learning_rate {
        if !(lr.is_finite() && lr > 0.0) {
            bail!("--learning-rate {lr}: must be a finite number > 0");
        }
    }
    if let (Some(stop), Some(steps)) = (args.stop_after, args.steps) {
        if stop > steps {
            bail!("--stop-after {stop}: must be at most --steps {steps}");
        }
    }
    Ok(())
}

/// Refuses a run whose training step or evaluation would not fit this computer's memory
/// ([`crate::budget`]), before the corpus is read or a tensor allocated.
fn check_memory(config: &NamedConfig) -> Result<()> {
    let (m, t) = (&config.model, &config.train);
    let step = crate::budget::train_memory(m, t.batch_size, m.seq_len);
    let available = crate::budget::available_memory_bytes().unwrap_or(u64::MAX);
    // The estimate is linear in the batch: the largest batch that fits.
    let per_row = crate::budget::train_memory(m, 1, m.seq_len)
        .activation_bytes
        .max(1);
    let fits = available.saturating_sub(step.parameter_bytes) / per_row;
    let suggestion = match fits {
        1.. if fits < t.batch_size as u64 => {
            let accumulate = (t.batch_size as u64).div_ceil(fits) * t.accumulate.max(1) as u64;
            format!(
                "try --batch-size {fits} --accumulate {accumulate} (the same effective batch), or a smaller model"
            )
        }
        _ => "choose a smaller model (dim, n_layers, seq_len, vocab_size)".to_string(),
    };
    let what = format!(
        "training {} at batch {} × seq_len {}",
        config.name, t.batch_size, m.seq_len
    );
    crate::budget::check_memory(&what, &step, &suggestion)?;
    let tokens = crate::budget::eval_tokens_in_flight(EVAL_WINDOWS, m.seq_len);
    let eval = crate::budget::eval_memory(m, tokens);
    let what = format!("evaluating {} ({tokens} tokens per pass)", config.name);
    crate::budget::check_memory(
        &what,
        &eval,
        "choose a smaller model (seq_len, n_heads, vocab_size)",
    )
}

/// Validation windows scored per forward pass, periodic and final (as [`finish`] and
/// [`train_loop`] pass them).
const EVAL_WINDOWS: usize = 256;

fn apply_overrides(train: &mut TrainConfig, args: &Args) {
    if let Some(steps) = args.steps {
        train.steps = steps;
    }
    if let Some(seed) = args.seed {
        train.seed = seed;
    }
    if let Some(lr) = args.learning_rate {
        train.learning_rate = lr;
    }
    if let Some(batch) = args.batch_size {
        train.batch_size = batch;
    }
    if let Some(every) = args.checkpoint_every {
        train.checkpoint_every = every;
    }
    if let Some(n) = args.accumulate {
        train.accumulate = n.max(1);
    }
}

/// Final evaluation over the whole validation split, sample, loss curve, `eval.json`.
fn finish(
    config: &NamedConfig,
    tokenizer: &Tokenizer,
    corpus: &Corpus,
    out: &Path,
    outcome: &LoopOutcome,
) -> Result<TrainReport> {
    let model = &outcome.model;
    let t0 = Instant::now();
    let report = eval::evaluate(
        tokenizer,
        corpus,
        config.model.seq_len,
        None,
        256,
        eval::float::scorer(model),
    )?;
    eprintln!(
        "final evaluation over {} validation bytes in {:.1} s: val_bpb {:.4}",
        report.valid_bytes,
        t0.elapsed().as_secs_f64(),
        report.val_bpb
    );
    let story = FloatStory {
        sampler: sampler_config(SAMPLE_TEMPERATURE, 0, 1.0, config.train.seed ^ 0x5A5A_5A5A)?,
        max_tokens: SAMPLE_TOKENS,
        stop_ids: config.stop_ids(),
        vocab: tokenizer.vocab_size(),
    };
    let ids = sample::generate(model, &tokenizer.encode(SAMPLE_PROMPT), &story, |_| {
        Ok(ControlFlow::Continue(()))
    })?;
    let sample = format!("{SAMPLE_PROMPT}{}", tokenizer.decode(&ids));
    fsio::write_atomic(&out.join("sample.txt"), sample.as_bytes())?;
    let rows = read_metrics(&out.join(METRICS_FILE))?;
    fsio::write_atomic(
        &out.join("loss.svg"),
        loss_svg(&config.name, &rows).as_bytes(),
    )?;
    let train_report = TrainReport {
        config: config.name.clone(),
        params: config.model.param_count(),
        seed_params: config.seed_params,
        steps: outcome.steps,
        train_seconds: outcome.elapsed_s,
        throughput: outcome.throughput,
        peak_rss_bytes: process::peak_rss_bytes(),
        eval: report,
        sample,
    };
    let json = serde_json::to_string_pretty(&train_report)? + "\n";
    fsio::write_atomic(&out.join("eval.json"), json.as_bytes())?;
    Ok(train_report)
}

/// Borrowed inputs of [`train_loop`].
struct RunInputs<'a> {
    config: &'a NamedConfig,
    train_tokens: &'a [u32],
    valid_ids: &'a [u32],
    valid_bytes: &'a [u32],
    unk_id: Option<u32>,
    data: &'a [String],
    valid_source: Option<&'a Path>,
    stop_after: Option<usize>,
    /// Wall-clock budget of the loop (`--max-seconds`).
    max_seconds: Option<f64>,
    /// Threads for the gradient shards.
    threads: usize,
    out: &'a Path,
}

/// What `state.safetensors` restores.
struct ResumeState {
    step: usize,
    rng_state: u64,
    /// Training windows drawn so far ([`data::WindowOrder`]); `None` in checkpoints from before
    /// the epoch order.
    windows_drawn: Option<u64>,
    elapsed_s: f64,
    tensors: HashMap<String, Tensor>,
    data: Vec<String>,
    valid: Option<String>,
}

impl ResumeState {
    fn load(out: &Path) -> Result<ResumeState> {
        let path = out.join(STATE_FILE);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "--resume: reading {} (is there a checkpoint in {}?)",
                path.display(),
                out.display()
            )
        })?;
        let meta = checkpoint::metadata(&bytes)?;
        let get = |key: &str| {
            meta.get(key)
                .with_context(|| format!("{}: no '{key}' in its metadata", path.display()))
        };
        Ok(ResumeState {
            step: get("step")?.parse()?,
            rng_state: get("rng_state")?.parse()?,
            windows_drawn: meta.get("windows_drawn").map(|v| v.parse()).transpose()?,
            elapsed_s: get("elapsed_s")?.parse()?,
            data: serde_json::from_str(get("data")?)?,
            valid: serde_json::from_str(get("valid")?)?,
            tensors: candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?,
        })
    }
}

/// Validation windows used by the periodic evaluation: `sequences` windows of `seq_len` tokens
/// spread evenly over the split, concatenated (so they stay aligned windows for the bpb cut).
fn periodic_eval_subset(
    ids: &[u32],
    bytes: &[u32],
    seq_len: usize,
    sequences: usize,
) -> (Vec<u32>, Vec<u32>) {
    let available = ids.len() / seq_len;
    if sequences == 0 || available <= sequences {
        return (ids.to_vec(), bytes.to_vec());
    }
    let (mut sub_ids, mut sub_bytes) = (Vec::new(), Vec::new());
    for i in 0..sequences {
        let start = i * available / sequences * seq_len;
        sub_ids.extend_from_slice(&ids[start..start + seq_len]);
        sub_bytes.extend_from_slice(&bytes[start..start + seq_len]);
    }
    (sub_ids, sub_bytes)
}

/// What [`train_loop`] hands on.
struct LoopOutcome {
    model: Transformer,
    /// Steps done in the whole run.
    steps: usize,
    /// Wall seconds of the whole run's loop.
    elapsed_s: f64,
    throughput: Throughput,
    /// Stopped at `--stop-after`.
    stopped_early: bool,
}

/// The optimization loop: until the config's steps, `--stop-after` or `--max-seconds`.
fn train_loop(
    run: &RunInputs,
    resumed: Option<ResumeState>,
    device: &Device,
) -> Result<LoopOutcome> {
    let c = &run.config.model;
    let t = &run.config.train;
    let mut rng = Rng::new(t.seed);
    let varmap = model::init_varmap(c, &mut rng, device)?;
    let model = model::from_varmap(&varmap, c, device)?;
    let mut optimizer = AdamW::new(&varmap, t.weight_decay)?;
    let (mut step, mut elapsed_before) = (0, 0.0);
    let mut rows = Vec::new();
    let n_tokens = run.train_tokens.len();
    let mut windows = data::WindowOrder::new(n_tokens, c.seq_len, t.seed);
    if let Some(state) = &resumed {
        match state.windows_drawn {
            Some(drawn) => {
                windows = data::WindowOrder::resume(n_tokens, c.seq_len, t.seed, drawn)
            }
            None => eprintln!(
                "this checkpoint predates the epoch order of training windows: they start again at epoch 0"
            ),
        }
        optimizer.restore(&state.tensors, state.step)?;
        rng = Rng::from_state(state.rng_state);
        step = state.step;
        elapsed_before = state.elapsed_s;
        rows = read_metrics(&run.out.join(METRICS_FILE))?;
        rows.retain(|r| r.step <= step);
        eprintln!("resuming at step {step} of {}", t.steps);
    }
    let (eval_ids, eval_bytes) =
        periodic_eval_subset(run.valid_ids, run.valid_bytes, c.seq_len, t.eval_sequences);
    let log_every = (t.steps / 200).max(1);
    let accumulate = t.accumulate.max(1);
    let tokens_per_step = (accumulate * t.batch_size * c.seq_len) as u64;
    let mut tokens_seen = rows.last().map_or(0, |r| r.tokens_seen);
    let started = Instant::now();
    let mut progress = Progress::new(t.steps, step);
    let (mut loss_sum, mut loss_count) = (0f64, 0usize);
    let mut last_checkpoint = resumed.as_ref().map(|s| s.step);
    let mut recent_loss = f64::NAN;
    let mut eval_s = 0.0;
    let mut out_of_time = false;

    while step < t.steps && !out_of_time {
        let budget_used = run
            .max_seconds
            .map_or(0.0, |s| started.elapsed().as_secs_f64() / s.max(1e-9));
        let lr = learning_rate_in_budget(t, step, budget_used);
        let mut loss_value = 0f64;
        for _ in 0..accumulate {
            let (inputs, targets) =
                data::next_batch(run.train_tokens, t.batch_size, c.seq_len, &mut windows);
            let batch = Batch {
                inputs: &inputs,
                targets: &targets,
                rows: t.batch_size,
                seq_len: c.seq_len,
            };
            let (loss, shards) = batch_gradients(&model, optimizer.vars(), &batch, run.threads)?;
            optimizer.add_gradients(&shards, 1.0 / accumulate as f32)?;
            loss_value += loss / accumulate as f64;
        }
        if !loss_value.is_finite() {
            progress.finish();
            diverged(run, step + 1, "loss", loss_value, lr, last_checkpoint)?;
        }
        let (grad_norm, weights_finite) = optimizer.step(lr, t.grad_clip)?;
        if !grad_norm.is_finite() {
            progress.finish();
            let what = "the gradient norm";
            diverged(run, step + 1, what, grad_norm, lr, last_checkpoint)?;
        }
        if !weights_finite {
            progress.finish();
            let what = "an updated weight";
            diverged(run, step + 1, what, f64::INFINITY, lr, last_checkpoint)?;
        }
        step += 1;
        tokens_seen += tokens_per_step;
        loss_sum += loss_value;
        loss_count += 1;
        recent_loss = if recent_loss.is_nan() {
            loss_value
        } else {
            0.9 * recent_loss + 0.1 * loss_value
        };

        let stop_here = run.stop_after == Some(step);
        out_of_time = run
            .max_seconds
            .is_some_and(|s| started.elapsed().as_secs_f64() >= s);
        let last = step == t.steps || out_of_time;
        let is_eval = step % t.eval_every.max(1) == 0 || last;
        let is_checkpoint = step % t.checkpoint_every.max(1) == 0 || last || stop_here;
        let eval_started = Instant::now();
        let elapsed = elapsed_before + started.elapsed().as_secs_f64();
        if step % log_every == 0 || is_eval || is_checkpoint {
            let mut row = MetricsRow {
                step,
                learning_rate: lr,
                train_loss: loss_sum / loss_count as f64,
                val_loss: None,
                val_bpb: None,
                tokens_seen,
                elapsed_s: elapsed,
            };
            (loss_sum, loss_count) = (0.0, 0);
            if is_eval {
                let report = eval::bpb::bits_per_byte(
                    &eval_ids,
                    &eval_bytes,
                    run.unk_id,
                    c.seq_len,
                    256,
                    eval::float::scorer(&model),
                )?;
                row.val_loss = Some(report.val_loss);
                row.val_bpb = Some(report.val_bpb);
                progress.println(&format!(
                    "step {step}: train loss {:.4}, val loss {:.4} nats/token, val bpb {:.4}",
                    row.train_loss, report.val_loss, report.val_bpb
                ));
            }
            rows.push(row);
        }
        if is_checkpoint {
            save_checkpoint(run, &optimizer, &rng, &windows, step, elapsed, &rows)?;
            last_checkpoint = Some(step);
        } else if is_eval {
            fsio::write_atomic(&run.out.join(METRICS_FILE), metrics_csv(&rows).as_bytes())?;
        }
        eval_s += eval_started.elapsed().as_secs_f64();
        let this_run = started.elapsed().as_secs_f64();
        let done_this_run = step - resumed.as_ref().map_or(0, |s| s.step);
        let tokens_per_s =
            done_this_run as f64 * tokens_per_step as f64 / (this_run - eval_s).max(1e-9);
        let mut eta = this_run / done_this_run as f64 * (t.steps - step) as f64;
        if let Some(budget) = run.max_seconds {
            eta = eta.min((budget - this_run).max(0.0));
        }
        progress.update(
            step,
            &format!("loss {recent_loss:.4} | {:.0} tok/s", tokens_per_s),
            eta,
            is_eval,
        );
        if stop_here || out_of_time {
            break;
        }
    }
    progress.finish();
    let this_run = started.elapsed().as_secs_f64();
    let done_this_run = step - resumed.as_ref().map_or(0, |s| s.step);
    let tokens = done_this_run as u64 * tokens_per_step;
    let train_s = (this_run - eval_s).max(0.0);
    let stopped_early = run.stop_after == Some(step);
    if stopped_early {
        eprintln!("stopped after step {step} (--stop-after); continue with --resume");
    } else if out_of_time {
        eprintln!(
            "--max-seconds {}: stopped at step {step} of {}",
            run.max_seconds.unwrap_or_default(),
            t.steps
        );
    }
    Ok(LoopOutcome {
        model,
        steps: step,
        elapsed_s: elapsed_before + this_run,
        throughput: Throughput {
            tokens_per_s: tokens as f64 / train_s.max(1e-9),
            tokens,
            train_s,
            eval_s,
            epochs: windows.epochs(),
        },
        stopped_early,
    })
}

/// The batch is cut into this many shards whose gradients are computed on separate threads and
/// combined in a fixed order, so results do not depend on the number of threads.
const GRADIENT_SHARDS: usize = 2;

/// One training batch: `rows` sequences of `seq_len` inputs and next-token targets.
struct Batch<'a> {
    inputs: &'a [u32],
    targets: &'a [u32],
    rows: usize,
    seq_len: usize,
}

/// Mean cross-entropy of a batch and its gradients, computed in [`GRADIENT_SHARDS`] shards on up
/// to `threads` threads: candle runs the many small ops of a tiny model on one core, so the
/// shards are what keeps both cores busy. The gradients stay the tensors backward made (per
/// shard, its weight in the batch mean and one per variable, in `vars` order); the optimizer
/// sums them in shard order ([`AdamW::add_gradients`]).
fn batch_gradients(
    model: &Transformer,
    vars: &[Var],
    batch: &Batch,
    threads: usize,
) -> Result<(f64, ShardGradients)> {
    let shards = GRADIENT_SHARDS.min(batch.rows);
    let bounds: Vec<(usize, usize)> = (0..shards)
        .map(|i| (i * batch.rows / shards, (i + 1) * batch.rows / shards))
        .collect();
    let shard = |(lo, hi): (usize, usize)| -> Result<(f64, Vec<Tensor>)> {
        let (rows, t) = (hi - lo, batch.seq_len);
        let x = Tensor::from_slice(&batch.inputs[lo * t..hi * t], (rows, t), &Device::Cpu)?;
        let y = Tensor::from_slice(&batch.targets[lo * t..hi * t], rows * t, &Device::Cpu)?;
        let logits = model.forward(&x)?;
        let vocab = logits.dim(2)?;
        let loss = model::loss::cross_entropy(&logits.reshape((rows * t, vocab))?, &y)?;
        let value = loss.to_scalar::<f32>()? as f64;
        let mut grads = loss.backward()?;
        let grads = vars
            .iter()
            .map(|v| grads.remove(v).context("a weight got no gradient"))
            .collect::<Result<Vec<_>>>()?;
        Ok((value, grads))
    };
    let results: Vec<Result<(f64, Vec<Tensor>)>> = if threads > 1 && shards > 1 {
        let shard = &shard;
        std::thread::scope(|scope| {
            let handles: Vec<_> = bounds
                .iter()
                .map(|&b| scope.spawn(move || shard(b)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("gradient thread panicked"))
                .collect()
        })
    } else {
        bounds.iter().map(|&b| shard(b)).collect()
    };
    // Weighted mean over shards, always in shard order.
    let (mut loss, mut out) = (0f64, ShardGradients::new());
    for (&(lo, hi), result) in bounds.iter().zip(results) {
        let (shard_loss, grads) = result?;
        let weight = (hi - lo) as f64 / batch.rows as f64;
        loss += shard_loss * weight;
        out.push((weight as f32, grads));
    }
    Ok((loss, out))
}

/// Stops training with a message naming the step; the last good checkpoint stays in place.
fn diverged(
    run: &RunInputs,
    step: usize,
    what: &str,
    value: f64,
    lr: f64,
    last: Option<usize>,
) -> Result<()> {
    let kept = match last {
        Some(s) => format!(
            "the last good checkpoint (step {s}) is kept in {}",
            run.out.display()
        ),
        None => "no checkpoint had been written yet".to_string(),
    };
    bail!("training diverged at step {step}: {what} is {value} (learning rate {lr:.3e}); stopped, {kept}. Try a lower --learning-rate.")
}

fn save_checkpoint(
    run: &RunInputs,
    optimizer: &AdamW,
    rng: &Rng,
    windows: &data::WindowOrder,
    step: usize,
    elapsed: f64,
    rows: &[MetricsRow],
) -> Result<()> {
    let out = run.out;
    let state_meta = BTreeMap::from([
        ("step".to_string(), step.to_string()),
        ("rng_state".to_string(), rng.state().to_string()),
        ("windows_drawn".to_string(), windows.drawn().to_string()),
        ("elapsed_s".to_string(), format!("{elapsed}")),
        ("data".to_string(), serde_json::to_string(run.data)?),
        (
            "valid".to_string(),
            serde_json::to_string(&run.valid_source.map(|p| p.display().to_string()))?,
        ),
        ("config".to_string(), run.config.name.clone()),
    ]);
    let state = optimizer.state_tensors()?;
    fsio::write_atomic(
        &out.join(STATE_FILE),
        &checkpoint::serialize_tensors(&state, &state_meta)?,
    )?;
    let weights = optimizer.weights();
    let model_meta = BTreeMap::from([
        ("step".to_string(), step.to_string()),
        ("config".to_string(), run.config.name.clone()),
    ]);
    fsio::write_atomic(
        &out.join(MODEL_FILE),
        &checkpoint::serialize_tensors(&weights, &model_meta)?,
    )?;
    fsio::write_atomic(&out.join(METRICS_FILE), metrics_csv(rows).as_bytes())?;
    debug_assert!(out.join(CONFIG_FILE).exists());
    Ok(())
}
