//! `starmind sweep`: the seed experiment's architecture study, with a quality figure. Every
//! config of a family ([`Family`]) is trained for the same wall-clock budget (`train
//! --max-seconds`), exported to an int8 model file, scored on validation text by the integer
//! engine (the bits per byte of the very file the device runs) and benched (rp2040js, a board
//! through a debug probe, or this computer); one row per variant lands in
//! `<out>/<family>/results.csv`, and [`report`] writes the table, plots and findings beside it.
//!
//! Each variant runs in a child process of this binary (`starmind sweep --worker`), which calls
//! the library (`train::train`, `export::export`, `eval::evaluate_file`, `bench::bench_model`),
//! because thread counts are process-wide (`process::set_threads`): parallel variants need a
//! process each. It also keeps a variant that fails or runs out of memory to its own row, and
//! its output in its own log (`<runs>/<name>/log.txt`) while the parent draws the one bar.
//!
//! Resumable: `results.csv` is rewritten atomically after every variant, and a run with the same
//! settings (`settings.json`) skips the variants that have a row, so a killed sweep continues
//! where it stopped (a variant that was running starts again).

use crate::bench::{self, BenchResult};
use crate::config::{self, Family, NamedConfig};
use crate::data;
use crate::eval;
use crate::export;
use crate::fsio;
use crate::process;
use crate::sampling::{SamplingArgs, StoryArgs};
use crate::train;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use starmind_engine::format::Quant;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod findings;
pub mod front;
pub mod report;

/// The families `--family all` runs, in this order.
pub const ALL_FAMILIES: [Family; 11] = [
    Family::K1,
    Family::K3,
    Family::K5,
    Family::K7,
    Family::K10,
    Family::Ultra,
    Family::Ffn,
    Family::Heads,
    Family::Attn,
    Family::Deep,
    Family::Hybrid,
];

/// `--family`: one family or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    One(Family),
    All,
}

fn parse_selection(text: &str) -> Result<Selection, String> {
    if text == "all" {
        return Ok(Selection::All);
    }
    ALL_FAMILIES
        .iter()
        .find(|f| f.as_str() == text)
        .map(|&f| Selection::One(f))
        .ok_or_else(|| {
            let names: Vec<&str> = ALL_FAMILIES.iter().map(|f| f.as_str()).collect();
            format!("unknown family '{text}' (one of {}, all)", names.join(", "))
        })
}

/// Arguments of `starmind sweep`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The study: a family of `starmind configs --family` (1k 3k 5k 7k 10k ultra ffn heads attn
    /// deep hybrid) or `all`.
    #[arg(long, value_parser = parse_selection, required_unless_present = "configs", conflicts_with = "configs")]
    pub family: Option<Selection>,
    /// Instead of a family: these configs (comma-separated), reported under --name.
    #[arg(long, value_delimiter = ',')]
    pub configs: Vec<String>,
    /// With --configs: the report's directory under --out.
    #[arg(long, default_value = "custom")]
    pub name: String,
    /// Training budget of every variant: seconds of its training loop (`train --max-seconds`),
    /// the same for all so that their quality compares fairly.
    #[arg(long, default_value_t = 30.0)]
    pub max_seconds: f64,
    /// Variants run at once, each a child process with (cores / jobs) threads.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Training text, as for `starmind train` (default: roneneldan/TinyStories).
    #[arg(long)]
    pub data: Vec<String>,
    /// Validation text; without it the tail of the training text is held out (as `train` does).
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Bytes of validation text the models are scored on (its first N bytes).
    #[arg(long, default_value_t = 100_000)]
    pub eval_bytes: usize,
    /// Tokens each bench generates (at most 512).
    #[arg(long, default_value_t = 64)]
    pub bench_tokens: u32,
    /// Bench on this computer instead of the emulator (no cycle counts, no RAM figure).
    #[arg(long, conflicts_with = "probe")]
    pub host: bool,
    /// Bench on a board: flash each model through a debug probe and read its result over RTT
    /// (needs --jobs 1). Give VID:PID[:SERIAL] when several probes are connected.
    #[arg(long, value_name = "VID:PID[:SERIAL]", num_args = 0..=1, default_missing_value = "")]
    pub probe: Option<String>,
    /// Where the reports go: `<out>/<family>/` and the cross-family `<out>/README.md`.
    #[arg(long, default_value = "docs/sweeps")]
    pub out: PathBuf,
    /// Where the variants go: `<runs>/<config>/` holds its `checkpoint/`, `model.smb`, `log.txt`.
    #[arg(long, default_value = "runs/sweep")]
    pub runs: PathBuf,
    /// Discard the rows already in the report directory and start over (needed when they were
    /// made with other settings).
    #[arg(long)]
    pub fresh: bool,
    /// Internal: run the one config of --configs in this process and write its row (what the
    /// sweep's child processes do).
    #[arg(long, hide = true)]
    pub worker: bool,
    /// Internal, with --worker: compute threads.
    #[arg(long, hide = true)]
    pub threads: Option<usize>,
}

/// What a sweep's rows depend on besides the configs: a report directory holds rows of one
/// setting only (`settings.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub max_seconds: f64,
    pub eval_bytes: usize,
    pub bench_tokens: u32,
    /// `emulator`, `board` or `host`.
    pub bench: String,
    pub data: Vec<String>,
    pub valid: Option<String>,
}

impl Settings {
    fn of(args: &Args) -> Settings {
        Settings {
            max_seconds: args.max_seconds,
            eval_bytes: args.eval_bytes,
            bench_tokens: args.bench_tokens,
            bench: bench_target(args).to_string(),
            data: args.data.clone(),
            valid: args.valid.as_ref().map(|p| p.display().to_string()),
        }
    }
}

fn bench_target(args: &Args) -> &'static str {
    match (args.host, &args.probe) {
        (true, _) => "host",
        (false, Some(_)) => "board",
        (false, None) => "emulator",
    }
}

/// One variant's results: the columns of `results.csv` ([`report::COLUMNS`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    /// Every trainable weight, RMSNorm gains included ([`config::ModelConfig::param_count`]).
    pub params_real: usize,
    /// What the seed's logs claim (`seed_params`), where they state a figure.
    pub params_claimed: Option<usize>,
    /// The seed's own counting of these dimensions ([`config::ModelConfig::seed_param_count`]).
    pub params_seed_count: usize,
    pub vocab: usize,
    pub dim: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_size: usize,
    /// Bits per byte of the int8 model file on the validation text (the integer engine).
    pub val_bpb: Option<f64>,
    pub decode_tok_per_s: Option<f64>,
    pub cycles_per_token: Option<u64>,
    pub flash_bytes: Option<u64>,
    /// Peak RAM: static + arena + stack, as the firmware measured it.
    pub ram_bytes: Option<u64>,
    /// The seed's CircuitPython tok/s, where its logs measured this variant.
    pub seed_tok_per_s: Option<f64>,
    /// Bits per byte of the float checkpoint on the same text.
    pub float_val_bpb: Option<f64>,
    pub unigram_bpb: Option<f64>,
    pub bigram_bpb: Option<f64>,
    /// Emulator: decode tok/s with the board's XIP stalls added (see `bench`).
    pub board_estimate_tok_per_s: Option<f64>,
    pub steps: Option<usize>,
    pub train_seconds: Option<f64>,
    pub bit_exact: Option<bool>,
    /// `ok`, or `failed: <why>`.
    pub status: String,
}

impl Row {
    /// The columns a config alone fills, nothing measured yet.
    pub fn of_config(c: &NamedConfig, seed_tok_per_s: Option<f64>, status: &str) -> Row {
        let m = &c.model;
        Row {
            name: c.name.clone(),
            params_real: m.param_count(),
            params_claimed: c.seed_params,
            params_seed_count: m.seed_param_count(),
            vocab: m.vocab_size,
            dim: m.dim,
            hidden: m.hidden_dim,
            layers: m.n_layers,
            heads: m.n_heads,
            kv_heads: m.n_kv_heads,
            head_size: m.head_size(),
            val_bpb: None,
            decode_tok_per_s: None,
            cycles_per_token: None,
            flash_bytes: None,
            ram_bytes: None,
            seed_tok_per_s,
            float_val_bpb: None,
            unigram_bpb: None,
            bigram_bpb: None,
            board_estimate_tok_per_s: None,
            steps: None,
            train_seconds: None,
            bit_exact: None,
            status: status.to_string(),
        }
    }

    /// Whether the variant ran to the end (a row a resumed sweep keeps).
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

/// The file a worker leaves its row in (in the variant's run directory).
const ROW_FILE: &str = "row.json";
/// The worker's output.
const LOG_FILE: &str = "log.txt";

/// `starmind sweep`.
pub fn run(args: Args) -> Result<()> {
    check_args(&args)?;
    if args.worker {
        return worker(&args);
    }
    let groups = groups(&args)?;
    let seed_speeds = config::seed_tok_per_s()?;
    std::fs::create_dir_all(&args.runs)
        .with_context(|| format!("creating {}", args.runs.display()))?;
    validation_file(&args)?; // once here, so that the workers find it written
    for (name, configs) in &groups {
        sweep_group(&args, name, configs, &seed_speeds)?;
    }
    report::write_index(&args.out)?;
    eprintln!("wrote {}", args.out.join("README.md").display());
    Ok(())
}

fn check_args(args: &Args) -> Result<()> {
    ensure!(
        args.max_seconds > 0.0 && args.max_seconds.is_finite(),
        "--max-seconds must be a positive number of seconds"
    );
    ensure!(args.jobs >= 1, "--jobs must be at least 1");
    ensure!(args.eval_bytes >= 1, "--eval-bytes must be at least 1");
    ensure!(
        (1..=starmind_engine::run_config::MAX_BENCH_TOKENS as u32).contains(&args.bench_tokens),
        "--bench-tokens must be in 1..={}",
        starmind_engine::run_config::MAX_BENCH_TOKENS
    );
    ensure!(
        args.probe.is_none() || args.jobs == 1,
        "--probe benches on one board: use --jobs 1"
    );
    ensure!(
        !args.name.is_empty()
            && args
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "--name must be letters, digits, '-' or '_' (it names a directory)"
    );
    if let Some(valid) = &args.valid {
        ensure!(valid.is_file(), "--valid {} is not a file", valid.display());
    }
    Ok(())
}

/// A config to run and how the worker finds it again (a name, or a path given to --configs).
#[derive(Debug, Clone)]
struct Variant {
    spec: String,
    config: NamedConfig,
}

/// The report directories to fill and their configs, in sweep order.
fn groups(args: &Args) -> Result<Vec<(String, Vec<Variant>)>> {
    if !args.configs.is_empty() {
        let mut variants: Vec<Variant> = Vec::new();
        for spec in &args.configs {
            let config = config::load(spec)?;
            ensure!(
                !variants.iter().any(|v| v.config.name == config.name),
                "--configs names {} twice",
                config.name
            );
            variants.push(Variant {
                spec: spec.clone(),
                config,
            });
        }
        return Ok(vec![(args.name.clone(), variants)]);
    }
    let all = config::all()?;
    let families = match args.family {
        Some(Selection::One(f)) => vec![f],
        Some(Selection::All) => ALL_FAMILIES.to_vec(),
        None => bail!("pass --family <name> or --configs a,b"),
    };
    Ok(families
        .into_iter()
        .map(|f| {
            let variants = all
                .iter()
                .filter(|c| c.families.contains(&f))
                .map(|c| Variant {
                    spec: c.name.clone(),
                    config: c.clone(),
                })
                .collect();
            (f.as_str().to_string(), variants)
        })
        .collect())
}

/// Runs the variants of one report directory that have no row yet, then writes its report.
fn sweep_group(
    args: &Args,
    name: &str,
    variants: &[Variant],
    seed_speeds: &std::collections::HashMap<String, f64>,
) -> Result<()> {
    let configs: Vec<&NamedConfig> = variants.iter().map(|v| &v.config).collect();
    let dir = args.out.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let settings = Settings::of(args);
    let settings_path = dir.join(report::SETTINGS_FILE);
    let results_path = dir.join(report::RESULTS_FILE);
    if let Some(old) = report::read_settings(&settings_path)? {
        if old != settings && !args.fresh && results_path.exists() {
            bail!(
                "{} holds rows made with other settings ({}); pass --fresh to start over, or the same settings to continue",
                dir.display(),
                serde_json::to_string(&old)?
            );
        }
    }
    let mut rows: BTreeMap<String, Row> = if args.fresh {
        BTreeMap::new()
    } else {
        report::read_results(&results_path)?
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect()
    };
    rows.retain(|name, _| configs.iter().any(|c| &c.name == name));
    fsio::write_atomic(
        &settings_path,
        (serde_json::to_string_pretty(&settings)? + "\n").as_bytes(),
    )?;
    let pending: Vec<&Variant> = variants
        .iter()
        .filter(|v| !rows.get(&v.config.name).is_some_and(Row::is_ok))
        .collect();
    let done_before = configs.len() - pending.len();
    eprintln!(
        "sweep {name}: {} configs, {} done before, {} to run ({} at a time, {} s of training each)",
        configs.len(),
        done_before,
        pending.len(),
        args.jobs,
        args.max_seconds
    );
    let ordered = |rows: &BTreeMap<String, Row>| -> Vec<Row> {
        configs
            .iter()
            .filter_map(|c| rows.get(&c.name).cloned())
            .collect()
    };
    let bar = indicatif::ProgressBar::new(configs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} variants, {elapsed} so far, ETA {msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix(format!("sweep {name}"));
    bar.set_position(done_before as u64);
    let started = Instant::now();
    let mut finished_now = 0usize;
    // Each worker is held to its share of what is free now: a variant too big for it is refused
    // by its own memory check (a failed row naming the numbers) instead of being killed by the
    // kernel's out-of-memory killer, which may pick a sibling instead.
    let memory_share = worker_memory_bytes(crate::budget::available_memory_bytes(), args.jobs);
    let mut queue = pending.iter();
    let mut running: Vec<(&NamedConfig, Child)> = Vec::new();
    loop {
        while running.len() < args.jobs {
            let Some(&variant) = queue.next() else { break };
            let child = spawn_worker(args, &variant.spec, &variant.config.name, memory_share)?;
            running.push((&variant.config, child));
        }
        if running.is_empty() {
            break;
        }
        let remaining = configs.len() - done_before - finished_now;
        let eta_s = if finished_now > 0 {
            started.elapsed().as_secs_f64() / finished_now as f64 * remaining as f64
        } else {
            // Before the first variant ends: its budget plus ~20 s of export, eval and bench.
            remaining as f64 * (args.max_seconds + 20.0) / args.jobs as f64
        };
        let names: Vec<&str> = running.iter().map(|(c, _)| c.name.as_str()).collect();
        bar.set_message(format!(
            "{} (running {})",
            indicatif::HumanDuration(Duration::from_secs_f64(eta_s)),
            names.join(", ")
        ));
        std::thread::sleep(Duration::from_millis(250));
        let mut index = 0;
        while index < running.len() {
            let status = running[index]
                .1
                .try_wait()
                .context("waiting for a sweep worker")?;
            let Some(status) = status else {
                index += 1;
                continue;
            };
            let (config, _) = running.remove(index);
            let seed = seed_speeds.get(&config.name).copied();
            let row = finished_row(args, config, status, seed);
            if bar.is_hidden() {
                eprintln!("{}", summary_line(&row)); // no terminal: the bar draws nothing
            } else {
                bar.println(summary_line(&row));
            }
            rows.insert(config.name.clone(), row);
            finished_now += 1;
            bar.inc(1);
            report::write_results(&results_path, &ordered(&rows))?;
        }
    }
    bar.finish_and_clear();
    let rows = ordered(&rows);
    let selection = if args.configs.is_empty() {
        format!("--family {name}")
    } else {
        format!("--configs {} --name {name}", args.configs.join(","))
    };
    report::write_family(&dir, name, &selection, &rows, &settings)?;
    let failed = rows.iter().filter(|r| !r.is_ok()).count();
    eprintln!(
        "sweep {name}: {} rows ({failed} failed) in {}; report in {}",
        rows.len(),
        indicatif::HumanDuration(started.elapsed()),
        dir.display()
    );
    Ok(())
}

fn summary_line(row: &Row) -> String {
    if !row.is_ok() {
        return format!("{}: {}", row.name, row.status);
    }
    format!(
        "{}: val bpb {:.3}, {:.1} tok/s{}, {} steps",
        row.name,
        row.val_bpb.unwrap_or(f64::NAN),
        row.decode_tok_per_s.unwrap_or(f64::NAN),
        row.cycles_per_token
            .map_or(String::new(), |c| format!(" ({c} cycles/token)")),
        row.steps.unwrap_or(0)
    )
}

/// The memory one of `jobs` parallel workers may use: an equal share of `available`.
fn worker_memory_bytes(available: Option<u64>, jobs: usize) -> Option<u64> {
    available.map(|bytes| bytes / jobs.max(1) as u64)
}

/// Starts `starmind sweep --worker` for one config (`spec`: its name or path; `name`: the
/// config's name), its output into the variant's log; `memory_bytes` becomes the worker's
/// `$STARMIND_MEMORY_BYTES` (what its memory checks allow).
fn spawn_worker(args: &Args, spec: &str, name: &str, memory_bytes: Option<u64>) -> Result<Child> {
    let dir = args.runs.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let row_path = dir.join(ROW_FILE);
    if row_path.exists() {
        std::fs::remove_file(&row_path)
            .with_context(|| format!("removing {}", row_path.display()))?;
    }
    let log_path = dir.join(LOG_FILE);
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / args.jobs).max(1);
    let exe = std::env::current_exe().context("finding the starmind binary")?;
    let mut command = Command::new(exe);
    command
        .args(["sweep", "--worker", "--configs", spec])
        .arg("--max-seconds")
        .arg(args.max_seconds.to_string())
        .arg("--eval-bytes")
        .arg(args.eval_bytes.to_string())
        .arg("--bench-tokens")
        .arg(args.bench_tokens.to_string())
        .arg("--runs")
        .arg(&args.runs)
        .arg("--out")
        .arg(&args.out)
        .arg("--jobs")
        .arg("1")
        .arg("--threads")
        .arg(threads.to_string());
    for data in &args.data {
        command.arg("--data").arg(data);
    }
    if let Some(valid) = &args.valid {
        command.arg("--valid").arg(valid);
    }
    if args.host {
        command.arg("--host");
    }
    if let Some(probe) = &args.probe {
        command.arg(format!("--probe={probe}"));
    }
    if let Some(bytes) = memory_bytes {
        command.env(crate::budget::MEMORY_ENV, bytes.to_string());
    }
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("sharing the worker log")?)
        .stderr(log)
        .spawn()
        .context("starting a sweep worker (starmind sweep --worker)")
}

/// The row a finished worker left, or a failed row that says why (its log's last line).
fn finished_row(
    args: &Args,
    config: &NamedConfig,
    status: std::process::ExitStatus,
    seed: Option<f64>,
) -> Row {
    let dir = args.runs.join(&config.name);
    let row = std::fs::read_to_string(dir.join(ROW_FILE))
        .ok()
        .and_then(|text| serde_json::from_str::<Row>(&text).ok());
    match row {
        Some(row) if status.success() => row,
        _ => {
            let log = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap_or_default();
            let last = log
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output");
            let why = match status.code() {
                Some(code) => format!("exit {code}: {last}"),
                None => format!("killed ({status}): {last}"),
            };
            let mut why: String = why.chars().take(300).collect();
            why = why.replace([',', '\n', '\r'], " ");
            Row::of_config(config, seed, &format!("failed: {why}"))
        }
    }
}

/// `--worker`: train, export, score and bench one config in this process; its row goes to
/// `<runs>/<name>/row.json`.
fn worker(args: &Args) -> Result<()> {
    let [name] = args.configs.as_slice() else {
        bail!("--worker runs exactly one config (--configs NAME)");
    };
    process::set_threads(args.threads);
    process::tune_allocator();
    let config = config::load(name)?;
    let seed = config::seed_tok_per_s()?.get(&config.name).copied();
    let dir = args.runs.join(&config.name);
    let row = run_variant(args, name, &config, &dir, seed)?;
    fsio::write_atomic(
        &dir.join(ROW_FILE),
        (serde_json::to_string_pretty(&row)? + "\n").as_bytes(),
    )?;
    eprintln!("{}", summary_line(&row));
    Ok(())
}

/// The validation file the variants train against and are scored on: the first `--eval-bytes`
/// of `--valid`, written once into the runs directory; `None` without `--valid` (the training
/// text's held-out tail, cut to `--eval-bytes` when scoring).
fn validation_file(args: &Args) -> Result<Option<PathBuf>> {
    let Some(valid) = &args.valid else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(valid).with_context(|| format!("reading {}", valid.display()))?;
    let cut = data::truncate_bytes(&text, args.eval_bytes);
    let path = args.runs.join(format!("valid-{}B.txt", cut.len()));
    if std::fs::read(&path).ok().as_deref() != Some(cut.as_bytes()) {
        fsio::write_atomic(&path, cut.as_bytes())?;
    }
    Ok(Some(path))
}

/// Trains, exports, scores and benches `config` (`spec`: its name or path) in `dir`.
fn run_variant(
    args: &Args,
    spec: &str,
    config: &NamedConfig,
    dir: &Path,
    seed: Option<f64>,
) -> Result<Row> {
    let valid = validation_file(args)?;
    // The checkpoint gets a directory of its own (the trainer writes only into an empty one
    // or a checkpoint); the log, row and model file sit beside it.
    let checkpoint_dir = dir.join("checkpoint");
    let train_args = train::Args {
        config: Some(spec.to_string()),
        data: args.data.clone(),
        valid: valid.clone(),
        out: Some(checkpoint_dir.clone()),
        max_seconds: Some(args.max_seconds),
        threads: args.threads,
        // The runs directory is the sweep's own: a variant that starts again replaces its run.
        force: true,
        ..train::Args::default()
    };
    let trained =
        train::train(&train_args, &checkpoint_dir)?.context("training stopped before the end")?;
    let checkpoint = crate::checkpoint::load(&checkpoint_dir)?;
    let model = export::export(&checkpoint, Quant::Int8, export::INT4_GROUP)
        .with_context(|| format!("exporting {}", checkpoint_dir.display()))?;
    fsio::write_atomic(&dir.join("model.smb"), &model)?;
    let corpus = data::load_corpus(&args.data, valid.as_deref())?;
    let scored = eval::evaluate_file(&model, &corpus, Some(args.eval_bytes))?;
    let bench = bench::bench_model(&bench_args(args), &model)
        .with_context(|| format!("bench of {}", config.name))?;
    Ok(Row {
        val_bpb: Some(scored.val_bpb),
        float_val_bpb: Some(trained.eval.val_bpb),
        unigram_bpb: Some(scored.unigram_bpb),
        bigram_bpb: Some(scored.bigram_bpb),
        steps: Some(trained.steps),
        train_seconds: Some(trained.train_seconds),
        ..measured(Row::of_config(config, seed, "ok"), &bench)
    })
}

/// A row with a bench's figures.
fn measured(row: Row, bench: &BenchResult) -> Row {
    Row {
        decode_tok_per_s: Some(bench.decode_tok_per_s),
        cycles_per_token: bench.decode_cycles_per_token,
        flash_bytes: Some(bench.model_flash_bytes),
        ram_bytes: bench.peak_ram_bytes(),
        board_estimate_tok_per_s: bench.board_estimate_tok_per_s(),
        bit_exact: bench.bit_exact,
        status: match bench.bit_exact {
            Some(false) => "failed: the device's tokens differ from the host engine's".into(),
            _ => row.status.clone(),
        },
        ..row
    }
}

/// `starmind bench` of each model: the emulator (or a board, or the host), `--check`ed
/// against the host engine, `--bench-tokens` tokens from the default prompt and sampler.
fn bench_args(args: &Args) -> bench::Args {
    bench::Args {
        model: None,
        emulator: !args.host && args.probe.is_none(),
        host: args.host,
        serial: None,
        probe: args.probe.clone(),
        board: crate::uf2::Board::Pico,
        check: !args.host,
        json: false,
        max_cycles: 20_000_000_000,
        profile: false,
        // A second emulator run with the XIP cache model gives the board estimate.
        xip_miss_cycles: bench::DEFAULT_XIP_MISS_CYCLES,
        kernels: false,
        timeout_s: 600,
        configs: Vec::new(),
        report: PathBuf::from("docs/benchmarks.md"),
        models_dir: None,
        train_steps: None,
        data: None,
        sampling: SamplingArgs {
            prompt: "Once upon a time".into(),
            story: StoryArgs {
                tokens: Some(args.bench_tokens),
                seed: 42,
                temperature: 0.8,
                top_k: 40,
                top_p: 0.9,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_gets_an_equal_share_of_the_memory() {
        assert_eq!(worker_memory_bytes(Some(24_000), 1), Some(24_000));
        assert_eq!(worker_memory_bytes(Some(24_000), 2), Some(12_000));
        assert_eq!(worker_memory_bytes(Some(24_001), 3), Some(8_000));
        assert_eq!(worker_memory_bytes(Some(10), 0), Some(10));
        assert_eq!(worker_memory_bytes(None, 2), None);
    }
}
