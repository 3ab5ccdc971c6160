//! `starmind bench`: tokens/s and cycles/token of a model file in the rp2040js emulator
//! (`--emulator`), on a board over USB serial (`--serial`), or on this computer (`--host`).
//!
//! Emulator and board run the committed firmware in bench mode: it prefills `<|endoftext|>` +
//! the prompt, then generates exactly `-n` tokens (sample, feed back) and prints one
//! `STARMIND-BENCH v1 key=value…` line with the cycle counts and the token ids. `--check` runs
//! the same steps with the engine on the host and compares the ids (bit-exactness).

use std::io::Read as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use serde_json::json;
use starmind_engine::format::tag;
use starmind_engine::{story, Model, Session};

use crate::flash::{self, ModeArg, RunArgs};
use crate::sampling::SamplingArgs;
use crate::uf2::{self, Board};

/// Flash bandwidth of the RP2040's XIP path with its cache missing every line: 133 MHz-class
/// QSPI flash at 125 MHz / 2 clock divider ≈ 25 MB/s of streamed weights.
const XIP_BYTES_PER_S: f64 = 25e6;
/// The RP2040's XIP cache.
const XIP_CACHE_BYTES: u64 = 16 * 1024;

/// What rp2040js does not model; stated wherever emulator numbers are reported.
pub const EMULATOR_CAVEATS: [&str; 5] = [
    "one core only (the firmware uses core 0 alone, as on the board)",
    "flash reads take no wait states: no XIP cache misses or QSPI timing, so weight streaming is optimistic",
    "DMA takes no simulated time",
    "UART takes no simulated time (no baud-rate delay)",
    "stock Simulator.execute() assumes 125 MHz; our driver counts core.cycles itself",
];

/// Arguments of `starmind bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Model file (.smb); not needed with --configs.
    pub model: Option<PathBuf>,
    /// Run the firmware in the rp2040js emulator (needs node and `npm ci --prefix scripts/emulator`).
    #[arg(long)]
    pub emulator: bool,
    /// Run the engine on this computer.
    #[arg(long)]
    pub host: bool,
    /// Read the bench line from a board flashed with `--mode bench` (USB CDC or UART adapter).
    #[arg(long, value_name = "PORT")]
    pub serial: Option<String>,
    /// Flash the board through a debug probe (bench mode), then read the result over RTT (or
    /// --serial). Give VID:PID[:SERIAL] when several probes are connected.
    #[arg(long, value_name = "VID:PID[:SERIAL]", num_args = 0..=1, default_missing_value = "")]
    pub probe: Option<String>,
    /// With --probe: the board's flash size.
    #[arg(long, value_enum, default_value = "pico")]
    pub board: Board,
    /// Compare the device's token ids with the engine on the host; fails when they differ.
    #[arg(long)]
    pub check: bool,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Emulator cycle limit.
    #[arg(long, default_value_t = 20_000_000_000)]
    pub max_cycles: u64,
    /// Emulator: also report where the cycles go (per firmware function, whole run).
    #[arg(long)]
    pub profile: bool,
    /// Seconds to wait for the board's bench line on --serial.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
    /// Bench these named configs (comma-separated; a `.smb` path benches that model file as it
    /// is) and write docs/benchmarks.md (+ SVG).
    #[arg(long, value_delimiter = ',')]
    pub configs: Vec<String>,
    /// With --configs: where to write the report.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub report: PathBuf,
    /// With --configs: also save each model file here (`<config>.smb`).
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// With --configs: train each config this many steps on --data (`starmind train`, then
    /// `starmind export`, as subprocesses) instead of benching synthetic weights.
    #[arg(long, value_name = "STEPS")]
    pub train_steps: Option<usize>,
    /// With --train-steps: the training text.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !args.configs.is_empty() {
        return report::run(&args);
    }
    let path = args
        .model
        .as_deref()
        .context("give a model file (or --configs)")?;
    let model_bytes = crate::model_file::read(path)?;
    let result = bench_model(&args, &model_bytes)?;
    if args.json {
        println!("{}", result.to_json());
    } else {
        print!("{}", result.to_text(&path.display().to_string()));
    }
    if result.bit_exact == Some(false) {
        bail!("the device's tokens differ from the host engine's: not bit-exact");
    }
    Ok(())
}

/// Where the numbers came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Emulator,
    Board,
    Host,
}

/// One benchmark result.
#[derive(Clone, Debug)]
pub struct BenchResult {
    pub target: Target,
    pub tokens: usize,
    pub prompt_tokens: usize,
    /// `None` on the host (no cycle counter we trust there).
    pub prefill_cycles_per_token: Option<u64>,
    pub decode_cycles_per_token: Option<u64>,
    /// The sampler's share of a decode step (the rest is the forward pass).
    pub sample_cycles_per_token: Option<u64>,
    pub clock_hz: Option<u64>,
    pub decode_tok_per_s: f64,
    pub prefill_tok_per_s: f64,
    pub peak_stack_bytes: Option<u64>,
    pub arena_bytes: u64,
    pub static_ram_bytes: Option<u64>,
    pub model_flash_bytes: u64,
    pub weight_bytes_per_token: u64,
    pub params: u64,
    pub ids: Vec<u32>,
    pub bit_exact: Option<bool>,
    /// Emulator only: total emulated cycles and emulated MHz of the run.
    pub emulator_cycles: Option<u64>,
    pub emulator_mhz: Option<f64>,
    /// Emulator with --profile: (function, cycles), most first.
    pub profile: Vec<(String, u64)>,
}

impl BenchResult {
    fn peak_ram_bytes(&self) -> Option<u64> {
        Some(self.static_ram_bytes? + self.arena_bytes + self.peak_stack_bytes?)
    }

    fn xip_bound_tok_per_s(&self) -> f64 {
        XIP_BYTES_PER_S / self.weight_bytes_per_token.max(1) as f64
    }

    /// A board estimate from emulated cycles: rp2040js reads flash with no wait states, so add
    /// the XIP stall of streaming the weights when they do not fit the 16 KiB XIP cache (each
    /// byte at 25 MB/s, the core waiting). Models whose weights fit stay cached after token one.
    fn board_estimate_tok_per_s(&self) -> Option<f64> {
        let (cycles, clock) = (self.decode_cycles_per_token?, self.clock_hz?);
        let stall_s = if self.weight_bytes_per_token > XIP_CACHE_BYTES {
            self.weight_bytes_per_token as f64 / XIP_BYTES_PER_S
        } else {
            0.0
        };
        let emulated = self.target == Target::Emulator;
        Some(1.0 / (cycles as f64 / clock as f64 + if emulated { stall_s } else { 0.0 }))
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "target": format!("{:?}", self.target).to_lowercase(),
            "tokens": self.tokens,
            "prompt_tokens": self.prompt_tokens,
            "decode_tok_per_s": self.decode_tok_per_s,
            "prefill_tok_per_s": self.prefill_tok_per_s,
            "decode_cycles_per_token": self.decode_cycles_per_token,
            "prefill_cycles_per_token": self.prefill_cycles_per_token,
            "clock_hz": self.clock_hz,
            "bit_exact": self.bit_exact,
            "peak_ram_bytes": self.peak_ram_bytes(),
            "peak_stack_bytes": self.peak_stack_bytes,
            "arena_bytes": self.arena_bytes,
            "static_ram_bytes": self.static_ram_bytes,
            "model_flash_bytes": self.model_flash_bytes,
            "weight_bytes_per_token": self.weight_bytes_per_token,
            "xip_bound_tok_per_s": self.xip_bound_tok_per_s(),
            "board_estimate_tok_per_s": self.board_estimate_tok_per_s(),
            "params": self.params,
            "ids": self.ids,
            "emulator_cycles": self.emulator_cycles,
            "emulator_mhz": self.emulator_mhz,
            "sample_cycles_per_token": self.sample_cycles_per_token,
            "profile": self.profile.iter().map(|(f, c)| json!({"function": f, "cycles": c})).collect::<Vec<_>>(),
            "caveats": if self.target == Target::Emulator { EMULATOR_CAVEATS.to_vec() } else { vec![] },
        })
    }

    pub fn to_text(&self, name: &str) -> String {
        let opt = |v: Option<u64>| v.map_or("n/a".to_string(), |v| v.to_string());
        let mut s = format!("bench of {name} ({:?})\n", self.target);
        s += &format!(
            "  decode:  {:.2} tok/s, {} cycles/token at {} Hz\n",
            self.decode_tok_per_s,
            opt(self.decode_cycles_per_token),
            opt(self.clock_hz)
        );
        if let Some(sample) = self.sample_cycles_per_token {
            s += &format!(
                "           of which sampling {sample} cycles/token, forward pass the rest\n"
            );
        }
        s += &format!(
            "  prefill: {:.2} tok/s, {} cycles/token ({} prompt tokens)\n",
            self.prefill_tok_per_s,
            opt(self.prefill_cycles_per_token),
            self.prompt_tokens
        );
        s += &format!(
            "  RAM: peak {} bytes = static {} + arena {} + stack {}\n",
            opt(self.peak_ram_bytes()),
            opt(self.static_ram_bytes),
            self.arena_bytes,
            opt(self.peak_stack_bytes)
        );
        s += &format!(
            "  flash: model {} bytes; weights read per token {} bytes; XIP bound {:.1} tok/s at 25 MB/s\n",
            self.model_flash_bytes,
            self.weight_bytes_per_token,
            self.xip_bound_tok_per_s()
        );
        if let (Target::Emulator, Some(estimate)) = (self.target, self.board_estimate_tok_per_s()) {
            s += &format!(
                "  board estimate: {estimate:.2} tok/s (emulated cycles + XIP stalls when weights exceed the 16 KiB cache)\n"
            );
        }
        s += &format!(
            "  bit-exact vs host engine: {}\n",
            self.bit_exact
                .map_or("not checked (--check)".into(), |b| b.to_string())
        );
        if let (Some(cycles), Some(mhz)) = (self.emulator_cycles, self.emulator_mhz) {
            s += &format!("  emulator: {cycles} cycles in all, {mhz:.1} emulated MHz\n");
        }
        if !self.profile.is_empty() {
            s += "  where the cycles go (whole emulated run, per firmware function):\n";
            s += &profile_lines(&self.profile, 12, "    ");
        }
        if self.target == Target::Emulator {
            s += "  emulator caveats:\n";
            for caveat in EMULATOR_CAVEATS {
                s += &format!("    - {caveat}\n");
            }
        }
        s
    }
}

/// The `top` biggest entries of a profile as `share% cycles function` lines.
fn profile_lines(profile: &[(String, u64)], top: usize, indent: &str) -> String {
    let total: u64 = profile.iter().map(|(_, c)| c).sum::<u64>().max(1);
    profile
        .iter()
        .take(top)
        .map(|(name, cycles)| {
            format!(
                "{indent}{:5.1}% {cycles:>12} {name}\n",
                *cycles as f64 * 100.0 / total as f64
            )
        })
        .collect()
}

/// Runs one bench of `model_bytes` on the target `args` selects.
pub fn bench_model(args: &Args, model_bytes: &[u8]) -> anyhow::Result<BenchResult> {
    let model = Model::parse(model_bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let run = RunArgs {
        mode: ModeArg::Bench,
        sampling: args.sampling.clone(),
    };
    if args.host {
        return bench_host(&model, &args.sampling);
    }
    let (line, emulator, target) = if args.emulator {
        let (line, emulator) = run_emulator(model_bytes, &run, args.max_cycles, args.profile)?;
        (line, Some(emulator), Target::Emulator)
    } else if let Some(probe) = &args.probe {
        let segments = flash::segments(model_bytes, &run, args.board)?;
        let selector = Some(probe.as_str()).filter(|p| !p.is_empty());
        let mut session = flash::open_probe(
            selector,
            args.model.as_deref().unwrap_or(Path::new("model.smb")),
        )?;
        flash::write_with_probe(&mut session, &segments)?;
        let timeout = Duration::from_secs(args.timeout_s);
        let line = match &args.serial {
            Some(port) => read_serial(port, timeout)?,
            None => read_rtt(&mut session, timeout)?,
        };
        (line, None, Target::Board)
    } else if let Some(port) = &args.serial {
        (
            read_serial(port, Duration::from_secs(args.timeout_s))?,
            None,
            Target::Board,
        )
    } else {
        bail!(
            "choose where to run: --emulator (rp2040js), --probe (flash through a debug probe and \
             read RTT), --serial <port> (a board flashed with `starmind flash <model> --mode bench`), \
             or --host"
        );
    };
    let mut result = parse_bench_line(&line, &model, target)?;
    if let Some((cycles, mhz)) = emulator.map(|e| (e.cycles, (e.mhz, e.profile))) {
        result.emulator_cycles = Some(cycles);
        result.emulator_mhz = Some(mhz.0);
        result.profile = mhz.1;
    }
    if args.check {
        let ctx = line_field(&line, "ctx")
            .and_then(|v| v.parse().ok())
            .unwrap_or(model.config().seq_len);
        let host_ids = generate_ids(&model, &args.sampling, ctx, &mut |_| {})?;
        result.bit_exact = Some(host_ids == result.ids);
        if host_ids != result.ids {
            eprintln!("device ids: {:?}\nhost ids:   {host_ids:?}", result.ids);
        }
    }
    Ok(result)
}

/// The firmware's bench on the host: the config block `starmind flash --mode bench` would
/// write, told by the engine's story loop (`<|endoftext|>` + prompt prefilled, then up to
/// `tokens` × (sample, feed)) in a session of `ctx` positions. `on_step` is called after the
/// prefill (0) and after each step.
pub fn generate_ids(
    model: &Model,
    sampling: &SamplingArgs,
    ctx: usize,
    on_step: &mut dyn FnMut(usize),
) -> anyhow::Result<Vec<u32>> {
    let run = RunArgs {
        mode: ModeArg::Bench,
        sampling: sampling.clone(),
    }
    .run_config(model.bytes().len())?;
    let story = run.story();
    let config = model.config();
    let mut arena = vec![0u8; Model::arena_bytes(&config, ctx)];
    let mut session = Session::new(model, ctx, &mut arena)?;
    let mut prompt = vec![0u32; story.ids_len(run.prompt().len(), ctx)];
    let mut recorder = Recorder {
        ids: Vec::new(),
        on_step,
    };
    story::tell(
        model,
        &mut session,
        run.prompt(),
        &story,
        &mut prompt,
        &mut recorder,
    )?;
    Ok(recorder.ids)
}

/// Keeps the ids of a story and reports its progress.
struct Recorder<'f> {
    ids: Vec<u32>,
    on_step: &'f mut dyn FnMut(usize),
}

impl story::Listener for Recorder<'_> {
    fn prefilled(&mut self, _prompt_tokens: usize) {
        (self.on_step)(0);
    }

    fn token(&mut self, id: u32) -> ControlFlow<()> {
        self.ids.push(id);
        (self.on_step)(self.ids.len());
        ControlFlow::Continue(())
    }
}

fn bench_host(model: &Model, sampling: &SamplingArgs) -> anyhow::Result<BenchResult> {
    let config = model.config();
    let start = Instant::now();
    let mut prefill_s = 0.0;
    let ids = generate_ids(model, sampling, config.seq_len, &mut |step| {
        if step == 0 {
            prefill_s = start.elapsed().as_secs_f64();
        }
    })?;
    let decode_s = start.elapsed().as_secs_f64() - prefill_s;
    let prompt_tokens = 1 + model
        .encode(
            sampling.prompt.as_bytes(),
            &mut vec![0; sampling.prompt.len()],
        )
        .unwrap_or(0);
    Ok(BenchResult {
        target: Target::Host,
        tokens: ids.len(),
        prompt_tokens,
        prefill_cycles_per_token: None,
        decode_cycles_per_token: None,
        clock_hz: None,
        decode_tok_per_s: ids.len() as f64 / decode_s.max(1e-9),
        prefill_tok_per_s: prompt_tokens as f64 / prefill_s.max(1e-9),
        peak_stack_bytes: None,
        arena_bytes: Model::arena_bytes(&config, config.seq_len) as u64,
        static_ram_bytes: None,
        model_flash_bytes: model.bytes().len() as u64,
        weight_bytes_per_token: weight_bytes_per_token(model),
        params: params(model),
        ids,
        bit_exact: None,
        emulator_cycles: None,
        emulator_mhz: None,
        sample_cycles_per_token: None,
        profile: Vec::new(),
    })
}

/// Bytes of weights read from flash per token: every layer matrix and norm, the final norm, the
/// output matrix (the embedding when tied) and one embedding row.
pub fn weight_bytes_per_token(model: &Model) -> u64 {
    let c = model.config();
    let size = |t| starmind_engine::format::section_bytes(&c, t).unwrap_or(0) as u64;
    let per_layer: u64 = starmind_engine::format::PER_LAYER
        .into_iter()
        .map(size)
        .sum();
    let embedding = size(tag::TOKEN_EMBEDDING);
    let output = if c.tied_embeddings {
        embedding
    } else {
        size(tag::OUTPUT)
    };
    c.n_layers as u64 * per_layer
        + size(tag::FINAL_NORM)
        + output
        + embedding / c.vocab_size.max(1) as u64
}

/// Parameters as the seed counted them (no norms): [`crate::config::ModelConfig::seed_param_count`].
pub fn params(model: &Model) -> u64 {
    crate::config::ModelConfig::from(&model.config()).seed_param_count() as u64
}

fn line_field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// Parses `STARMIND-BENCH v1 key=value…`.
fn parse_bench_line(line: &str, model: &Model, target: Target) -> anyhow::Result<BenchResult> {
    let number = |key: &str| -> anyhow::Result<u64> {
        line_field(line, key)
            .with_context(|| format!("bench line has no {key}=: {line}"))?
            .parse()
            .with_context(|| format!("bench line: bad {key}"))
    };
    let ids: Vec<u32> = match line_field(line, "ids") {
        Some("") | None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|v| v.parse().context("bench line: bad ids"))
            .collect::<anyhow::Result<_>>()?,
    };
    let clock_hz = number("clock_hz")?;
    let decode = number("decode_cycles_per_token")?;
    let prefill = number("prefill_cycles_per_token")?;
    ensure!(
        ids.len() as u64 == number("tokens")?,
        "bench line: ids do not match tokens="
    );
    Ok(BenchResult {
        target,
        tokens: ids.len(),
        prompt_tokens: number("prompt_tokens")? as usize,
        prefill_cycles_per_token: Some(prefill),
        decode_cycles_per_token: Some(decode),
        sample_cycles_per_token: line_field(line, "sample_cycles_per_token")
            .and_then(|v| v.parse().ok()),
        clock_hz: Some(clock_hz),
        decode_tok_per_s: clock_hz as f64 / decode.max(1) as f64,
        prefill_tok_per_s: clock_hz as f64 / prefill.max(1) as f64,
        peak_stack_bytes: Some(number("peak_stack_bytes")?),
        arena_bytes: number("arena_bytes")?,
        static_ram_bytes: Some(number("static_ram_bytes")?),
        model_flash_bytes: number("model_bytes")?,
        weight_bytes_per_token: weight_bytes_per_token(model),
        params: params(model),
        ids,
        bit_exact: None,
        emulator_cycles: None,
        emulator_mhz: None,
        profile: Vec::new(),
    })
}

/// The emulator driver's directory: `$STARMIND_EMULATOR_DIR`, else scripts/emulator of this tree.
fn emulator_dir() -> PathBuf {
    std::env::var_os("STARMIND_EMULATOR_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/emulator"))
}

/// Runs the bench in rp2040js; returns the bench line and (total cycles, emulated MHz).
/// What the emulator driver reported besides the firmware's lines.
struct EmulatorRun {
    cycles: u64,
    mhz: f64,
    profile: Vec<(String, u64)>,
}

/// The committed firmware's function symbols (`address size name`), from scripts/build-firmware.sh.
const FIRMWARE_SYMBOLS: &str = include_str!("../firmware/prebuilt/starmind-rp2040.syms");

/// Sums the driver's `pc cycles` lines per firmware function, most first.
fn profile_by_function(pcs: &str) -> Vec<(String, u64)> {
    let functions: Vec<(u32, u32, &str)> = FIRMWARE_SYMBOLS
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            let addr = u32::from_str_radix(it.next()?, 16).ok()?;
            Some((addr, it.next()?.parse().ok()?, it.next()?))
        })
        .collect();
    let mut totals: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for line in pcs.lines() {
        let Some((pc, cycles)) = line.split_once(' ') else {
            continue;
        };
        let (Ok(pc), Ok(cycles)) = (
            u32::from_str_radix(pc.trim_start_matches("0x"), 16),
            cycles.parse::<u64>(),
        ) else {
            continue;
        };
        let at = functions.partition_point(|&(addr, _, _)| addr <= pc);
        let name = match at.checked_sub(1).map(|i| functions[i]) {
            Some((addr, size, name)) if pc < addr + size => name,
            _ => "(other)",
        };
        *totals.entry(name).or_default() += cycles;
    }
    let mut list: Vec<(String, u64)> = totals
        .into_iter()
        .map(|(n, c)| (n.to_string(), c))
        .collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list
}

fn run_emulator(
    model_bytes: &[u8],
    run: &RunArgs,
    max_cycles: u64,
    profile: bool,
) -> anyhow::Result<(String, EmulatorRun)> {
    let dir = emulator_dir();
    let node = std::env::var_os("STARMIND_NODE").unwrap_or_else(|| "node".into());
    if !dir.join("node_modules/rp2040js/package.json").is_file() {
        bail!(
            "the emulator is not installed: {} has no node_modules/rp2040js; run \
             `npm ci --prefix scripts/emulator` (needs node ≥ 18)",
            dir.display()
        );
    }
    // The emulator boots the very UF2 image `starmind flash --uf2` would write (16 MiB of flash,
    // so big models can be benched too).
    let segments = flash::segments(model_bytes, run, Board::Pico16Mb)?;
    let work = tempdir()?;
    let image = work.join("bench.uf2");
    std::fs::write(&image, uf2::write(&segments))
        .with_context(|| format!("writing {}", image.display()))?;
    let mut command = Command::new(&node);
    command
        .arg(dir.join("run.mjs"))
        .arg("--uf2")
        .arg(&image)
        .arg("--max-cycles")
        .arg(max_cycles.to_string());
    let profile_path = work.join("profile.txt");
    if profile {
        command.arg("--profile").arg(&profile_path);
    }
    let output = command.stdin(Stdio::null()).output().map_err(|e| {
        anyhow::anyhow!(
            "cannot run `{}` ({e}): install Node.js ≥ 18 (or set STARMIND_NODE)",
            node.to_string_lossy()
        )
    });
    let pcs = std::fs::read_to_string(&profile_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&work);
    let output = output?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail = |text: &str| {
        text.lines()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    };
    let why = match output.status.code() {
        Some(0) => None,
        Some(2) => Some("the firmware faulted in the emulator"),
        Some(3) => Some("the emulator hit the cycle limit (raise --max-cycles)"),
        Some(4) => Some("the firmware reported an error"),
        Some(5) => Some("the firmware went idle without finishing"),
        _ => Some("the emulator driver failed"),
    };
    if let Some(why) = why {
        bail!(
            "{why}\n--- firmware output ---\n{}\n--- driver ---\n{}",
            tail(&stdout),
            tail(&stderr)
        );
    }
    let bench = stdout
        .lines()
        .find(|l| l.starts_with("STARMIND-BENCH"))
        .context("no STARMIND-BENCH line")?;
    let emulator = stdout
        .lines()
        .find(|l| l.starts_with("STARMIND-EMULATOR"))
        .unwrap_or("");
    let cycles = line_field(emulator, "cycles")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mhz = line_field(emulator, "emulated_mhz")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let profile = profile_by_function(&pcs);
    Ok((
        bench.to_string(),
        EmulatorRun {
            cycles,
            mhz,
            profile,
        },
    ))
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!("starmind-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Collects complete output lines from the board until the bench line; fails on an error or
/// fault line.
struct LineWatcher {
    partial: Vec<u8>,
}

impl LineWatcher {
    fn new() -> LineWatcher {
        LineWatcher {
            partial: Vec::new(),
        }
    }

    /// Feeds bytes; returns the bench line once it has arrived.
    fn feed(&mut self, bytes: &[u8]) -> anyhow::Result<Option<String>> {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw);
            let text = line.trim();
            eprintln!("{text}");
            if text.starts_with("STARMIND-BENCH") {
                return Ok(Some(text.to_string()));
            } else if text.starts_with("STARMIND-ERROR") || text.starts_with("STARMIND-FAULT") {
                bail!("the board reported: {text}");
            }
        }
        Ok(None)
    }
}

/// Reads the firmware's RTT channel 0 through the probe until the bench line.
fn read_rtt(session: &mut probe_rs::Session, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    let mut core = session.core(0)?;
    // The control block appears once the firmware has started: retry the scan for a while.
    let mut rtt = loop {
        match probe_rs::rtt::Rtt::attach(&mut core) {
            Ok(rtt) => break rtt,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e).context("finding the firmware's RTT control block"),
        }
    };
    let channel = rtt
        .up_channel(0)
        .context("the firmware has no RTT up channel 0")?;
    let mut watcher = LineWatcher::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        let count = channel.read(&mut core, &mut buf).context("reading RTT")?;
        if let Some(line) = watcher.feed(&buf[..count])? {
            return Ok(line);
        }
        if count == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    bail!(
        "no STARMIND-BENCH line over RTT within {}s",
        timeout.as_secs()
    )
}

/// Reads lines from a serial port until the bench line (and the READY line before it).
fn read_serial(port: &str, timeout: Duration) -> anyhow::Result<String> {
    let port_handle = serialport::new(port, 115_200)
        .timeout(Duration::from_millis(500))
        .open()
        .with_context(|| format!("opening serial port {port}"))?;
    let mut port_handle = port_handle;
    let deadline = Instant::now() + timeout;
    let mut watcher = LineWatcher::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match port_handle.read(&mut buf) {
            Ok(count) => {
                if let Some(line) = watcher.feed(&buf[..count])? {
                    return Ok(line);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => return Err(e).context("reading serial port"),
        }
    }
    bail!(
        "no STARMIND-BENCH line from {port} within {}s (flash with `starmind flash <model> --mode bench`, then reset the board)",
        timeout.as_secs()
    )
}

/// `--configs`: bench named configs in the emulator and write docs/benchmarks.md + an SVG chart.
///
/// Speed depends only on the shapes, so each config is benched with a synthetic model: its
/// exact shape and quantisation, weights from a fixed PRNG, a char vocabulary of its size. No
/// training is needed (trained weights change the text, not the cycles).
mod report {
    use std::fmt::Write as _;

    use anyhow::Context as _;
    use starmind_engine::format::{write_model, Config, Quant, TokenizerKind};
    use starmind_engine::quantize::{quantize_model, FloatLayer, FloatModel};

    use super::{bench_model, Args, BenchResult, EMULATOR_CAVEATS};
    use crate::config::{self, Ffn};

    /// tok/s the seed experiment measured in CircuitPython on a Pico (with KV cache).
    const CIRCUITPYTHON_TOK_PER_S: [(&str, f64); 5] = [
        ("story-1k", 15.2),
        ("story-3k", 7.7),
        ("story-4k", 6.2),
        ("chat-8k", 2.8),
        ("chat-10k", 2.2),
    ];

    pub fn run(args: &Args) -> anyhow::Result<()> {
        anyhow::ensure!(
            args.emulator,
            "--configs runs in the emulator: add --emulator"
        );
        let mut rows = Vec::new();
        for name in &args.configs {
            let model = if name.ends_with(".smb") {
                crate::model_file::read(std::path::Path::new(name))?
            } else {
                let named = config::load(name)?;
                match args.train_steps {
                    Some(steps) => trained_model(name, steps, args.data.as_deref())?,
                    None => synthetic_model(&named.model, 0x5EED)?,
                }
            };
            if let Some(dir) = &args.models_dir {
                let path = dir.join(format!("{name}.smb"));
                std::fs::write(&path, &model)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            eprintln!("{name}: {} bytes, benching in rp2040js…", model.len());
            let result = bench_model(args, &model).with_context(|| format!("bench of {name}"))?;
            if result.bit_exact == Some(false) {
                anyhow::bail!("{name}: not bit-exact");
            }
            rows.push((name.clone(), result));
        }
        let svg_path = args.report.with_extension("svg");
        std::fs::write(&svg_path, chart(&rows))
            .with_context(|| format!("writing {}", svg_path.display()))?;
        let svg_name = svg_path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        std::fs::write(&args.report, markdown(&rows, args, &svg_name))
            .with_context(|| format!("writing {}", args.report.display()))?;
        eprintln!("wrote {} and {}", args.report.display(), svg_path.display());
        Ok(())
    }

    fn seed_tok_per_s(name: &str) -> Option<f64> {
        CIRCUITPYTHON_TOK_PER_S
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, v)| v)
    }

    /// Trains `name` for `steps` steps and exports it (int8), with this very binary; the
    /// checkpoint goes to runs/bench/<name>.
    fn trained_model(
        name: &str,
        steps: usize,
        data: Option<&std::path::Path>,
    ) -> anyhow::Result<Vec<u8>> {
        let exe = std::env::current_exe().context("finding the starmind binary")?;
        let dir = std::path::Path::new("runs/bench").join(name);
        let smb = dir.with_extension("smb");
        let mut train = std::process::Command::new(&exe);
        train
            .args([
                "train",
                "--config",
                name,
                "--steps",
                &steps.to_string(),
                "--out",
            ])
            .arg(&dir);
        if let Some(data) = data {
            train.arg("--data").arg(data);
        }
        eprintln!("{name}: training {steps} steps…");
        let status = train.status().context("running starmind train")?;
        anyhow::ensure!(status.success(), "starmind train --config {name} failed");
        let status = std::process::Command::new(&exe)
            .arg("export")
            .arg(&dir)
            .arg("-o")
            .arg(&smb)
            .status()
            .context("running starmind export")?;
        anyhow::ensure!(status.success(), "starmind export {} failed", dir.display());
        std::fs::read(&smb).with_context(|| format!("reading {}", smb.display()))
    }

    /// A model file of `m`'s shape with PRNG weights (uniform ±0.1, unit norms).
    pub fn synthetic_model(m: &config::ModelConfig, seed: u64) -> anyhow::Result<Vec<u8>> {
        let mut state = seed | 1;
        let mut random = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
                })
                .collect()
        };
        let kv_dim = m.kv_dim();
        let swiglu = matches!(m.ffn, Ffn::Swiglu);
        let layers = (0..m.n_layers)
            .map(|_| FloatLayer {
                attention_norm: vec![1.0; m.dim],
                wq: random(m.dim * m.dim),
                wk: random(kv_dim * m.dim),
                wv: random(kv_dim * m.dim),
                wo: random(m.dim * m.dim),
                ffn_norm: vec![1.0; m.dim],
                w1: random(m.hidden_dim * m.dim),
                w2: random(m.dim * m.hidden_dim),
                w3: if swiglu {
                    random(m.hidden_dim * m.dim)
                } else {
                    Vec::new()
                },
            })
            .collect();
        // id 0 <|endoftext|>, id 1 <unk>, then one character each: printable ASCII first.
        let mut token_bytes = vec![b"<|endoftext|>".to_vec(), "\u{FFFD}".as_bytes().to_vec()];
        let chars = (b' '..=b'~')
            .map(char::from)
            .chain(('\u{00A1}'..).filter(|c| !c.is_control()));
        token_bytes.extend(
            chars
                .take(m.vocab_size.saturating_sub(2))
                .map(|c| c.to_string().into_bytes()),
        );
        // The synthetic vocabulary is char-level whatever the config's tokenizer.
        let config = Config {
            tokenizer: TokenizerKind::Char,
            ..m.engine_config(0, (m.vocab_size > 1).then_some(1))
        };
        let float = FloatModel {
            config,
            token_bytes,
            merges: Vec::new(),
            byte_tokens: Vec::new(),
            tok_embeddings: random(m.vocab_size * m.dim),
            layers,
            norm: vec![1.0; m.dim],
            output: if m.tied_embeddings {
                None
            } else {
                Some(random(m.vocab_size * m.dim))
            },
        };
        write_model(&quantize_model(&float, Quant::Int8, 0)).context("writing the synthetic model")
    }

    fn markdown(rows: &[(String, BenchResult)], args: &Args, svg: &str) -> String {
        let mut s = String::from("# Benchmarks: starmind on the RP2040\n\n");
        let _ = writeln!(
            s,
            "Generated by `starmind bench --configs {} --emulator --check{} -n {}` (prompt \"{}\", seed {}, \
             temperature {}, top-k {}, top-p {}). Firmware: the committed `firmware/prebuilt/starmind-rp2040.bin`, \
             core 0 at 125 MHz, int8 weights streamed from flash (XIP).\n",
            args.configs.join(","),
            if args.profile { " --profile" } else { "" },
            args.sampling.bench_tokens(),
            args.sampling.prompt,
            args.sampling.seed,
            args.sampling.temperature,
            args.sampling.top_k,
            args.sampling.top_p
        );
        match args.train_steps {
            Some(steps) => {
                let _ = writeln!(
                    s,
                    "Models: each config trained only {steps} steps (`starmind train --steps {steps}`, then \
                     `starmind export`, int8): enough to measure speed, not quality (speed depends only on \
                     the shape).\n"
                );
            }
            None => {
                s += "Models: each config's exact shape with synthetic (PRNG) int8 weights and a char vocabulary \
                      of its size. Speed depends only on the shape, not on trained weight values (a trained model \
                      of the same shape runs the same instructions; see the trained `tests/golden/story-1k.smb` \
                      below); prompt tokens differ from a BPE tokenizer's, which only changes the prefill count \
                      (cycles are reported per token).\n\n";
            }
        }
        s += "| config | params | model flash bytes | tokens (prompt+generated) | decode cycles/token | of which sampling | decode tok/s | prefill cycles/token | \
              peak RAM bytes (static+arena+stack) | weight bytes/token | XIP bound tok/s | board estimate tok/s | CircuitPython tok/s (seed) | speed-up | bit-exact |\n";
        s += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
        for (name, r) in rows {
            let seed = seed_tok_per_s(name);
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {}+{} | {} | {} | {:.1} | {} | {} ({}+{}+{}) | {} | {:.0} | {:.1} | {} | {} | {} |",
                r.params,
                r.model_flash_bytes,
                r.prompt_tokens,
                r.tokens,
                r.decode_cycles_per_token.unwrap_or(0),
                r.sample_cycles_per_token.map_or("–".into(), |v| v.to_string()),
                r.decode_tok_per_s,
                r.prefill_cycles_per_token.unwrap_or(0),
                r.peak_ram_bytes().unwrap_or(0),
                r.static_ram_bytes.unwrap_or(0),
                r.arena_bytes,
                r.peak_stack_bytes.unwrap_or(0),
                r.weight_bytes_per_token,
                r.xip_bound_tok_per_s(),
                r.board_estimate_tok_per_s().unwrap_or(0.0),
                seed.map_or("–".into(), |v| format!("{v}")),
                seed.map_or("–".into(), |v| format!("{:.0}×", r.board_estimate_tok_per_s().unwrap_or(0.0) / v)),
                r.bit_exact.map_or("–".into(), |b| if b { "yes".into() } else { "NO".to_string() }),
            );
        }
        let _ = writeln!(s, "\n![decode tok/s vs parameters]({svg})\n");
        s += "Columns: decode tok/s = 125 MHz ÷ decode cycles/token (one sample + one forward pass); \
              a run stops early when the model's context (`seq_len`) is full; \
              weight bytes/token = every layer matrix and norm, the output matrix (the embedding when tied) and one \
              embedding row, all read from flash per token; XIP bound = 25 MB/s ÷ weight bytes/token, the \
              ceiling if every weight byte missed the 16 KiB XIP cache; board estimate = 1 ÷ (decode cycles ÷ 125 MHz + \
              weight bytes/token ÷ 25 MB/s when the weights exceed the 16 KiB XIP cache, else + 0): rp2040js reads \
              flash with no wait states, a board stalls on every cache miss. Speed-up = board estimate ÷ \
              CircuitPython.\n\n";
        if let Some((name, r)) = rows
            .iter()
            .filter(|(_, r)| !r.profile.is_empty())
            .max_by_key(|(_, r)| r.params)
        {
            let _ = writeln!(
                s,
                "## Where the cycles go ({name})\n\nWhole emulated run (boot, prefill, {} decode steps, output), cycles per \
                 firmware function from `--profile` (rp2040js PC samples mapped with \
                 `firmware/prebuilt/starmind-rp2040.syms`). `__aeabi_*`, `__clzsi2` and `compiler_builtins::*` are \
                 the software routines the Cortex-M0+ needs for 64-bit multiplies, shifts and divisions.\n\n```",
                r.tokens
            );
            s += &super::profile_lines(&r.profile, 15, "");
            s += "```\n\n";
        }
        s += "Emulator caveats (rp2040js 1.4.1): numbers are cycle counts of the emulated core, not a board:\n";
        for caveat in EMULATOR_CAVEATS {
            let _ = writeln!(s, "- {caveat}");
        }
        s += "\nOn a board: `starmind flash model.smb --mode bench -n 64 --uf2 bench.uf2`, copy it to RPI-RP2, \
              then `starmind bench model.smb --serial /dev/ttyACM0 --check`.\n";
        s
    }

    /// Log-log scatter of decode tok/s against parameters: starmind (emulated) and CircuitPython.
    fn chart(rows: &[(String, BenchResult)]) -> String {
        let (w, h, left, right, top, bottom) = (640.0, 400.0, 70.0, 20.0, 30.0, 50.0);
        let points: Vec<(f64, f64, bool, &str)> = rows
            .iter()
            .flat_map(|(name, r)| {
                let ours = (r.params as f64, r.decode_tok_per_s, true, name.as_str());
                let seed = seed_tok_per_s(name).map(|v| (r.params as f64, v, false, name.as_str()));
                std::iter::once(ours).chain(seed)
            })
            .collect();
        let log = |v: f64| v.max(1e-9).log10();
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y, _, _) in &points {
            x0 = x0.min(log(x).floor());
            x1 = x1.max(log(x).ceil());
            y0 = y0.min(log(y).floor());
            y1 = y1.max(log(y).ceil());
        }
        if points.is_empty() {
            (x0, x1, y0, y1) = (2.0, 5.0, 0.0, 4.0);
        }
        x1 = x1.max(x0 + 1.0);
        y1 = y1.max(y0 + 1.0);
        let px = |x: f64| left + (log(x) - x0) / (x1 - x0) * (w - left - right);
        let py = |y: f64| h - bottom - (log(y) - y0) / (y1 - y0) * (h - top - bottom);
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"18\" text-anchor=\"middle\">decode tokens/s vs parameters (log-log)</text>\n",
            w / 2.0
        );
        for e in x0 as i32..=x1 as i32 {
            let x = px(10f64.powi(e));
            let _ = writeln!(s, "<line x1=\"{x}\" y1=\"{top}\" x2=\"{x}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">1e{e}</text>", h - bottom, h - bottom + 16.0);
        }
        for e in y0 as i32..=y1 as i32 {
            let y = py(10f64.powi(e));
            let _ = writeln!(s, "<line x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">1e{e}</text>", w - right, left - 6.0, y + 4.0);
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">parameters</text>",
            w / 2.0,
            h - 12.0
        );
        let _ = writeln!(s, "<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">tok/s</text>", h / 2.0, h / 2.0);
        for &(x, y, ours, name) in &points {
            let colour = if ours { "#d62728" } else { "#1f77b4" };
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.1}\">{name}</text>",
                px(x),
                py(y),
                px(x) + 7.0,
                py(y) - 7.0
            );
        }
        // Legend, bottom right (the points run from top left to bottom right, above it).
        let legend = [
            ("#d62728", "starmind (rp2040js, 125 MHz)"),
            ("#1f77b4", "CircuitPython (seed, Pico)"),
        ];
        for (row, (colour, label)) in legend.iter().enumerate() {
            let (x, y) = (w - right - 185.0, h - bottom - 40.0 + 18.0 * row as f64);
            let _ = writeln!(
                s,
                "<circle cx=\"{x}\" cy=\"{y}\" r=\"5\" fill=\"{colour}\"/><text x=\"{}\" y=\"{}\">{label}</text>",
                x + 10.0,
                y + 4.0
            );
        }
        s += "</svg>\n";
        s
    }
}
