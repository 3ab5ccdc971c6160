//! `starmind bench`: tokens/s and cycles/token of a model file in the rp2040js emulator
//! (`--emulator`), on a board over USB serial or a debug probe (`--serial`, `--probe`), or on
//! this computer (`--host`).
//!
//! Emulator and board run the committed firmware in bench mode: it tells one story with the
//! engine's story loop (`<|endoftext|>` + the prompt prefilled, then exactly `-n` tokens: sample,
//! feed back) and prints one `STARMIND-BENCH v1 key=value…` line with the cycle counts and the
//! token ids. `--check` tells the same story on the host ([`host::bench_ids`]) and compares the
//! ids (bit-exactness).
//!
//! Parts: [`emulator`] (the rp2040js subprocess and the cycle profile), [`board`] (RTT and
//! serial), [`host`], [`report`] (`--configs`: docs/benchmarks.md and its chart) and
//! [`synthetic`] (model files of a config's shape with PRNG weights).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use serde_json::json;
use starmind_engine::format::{section_bytes, tag, PER_LAYER};
use starmind_engine::Model;

use crate::config::ModelConfig;
pub(crate) use crate::console::line_field;
use crate::flash::{self, ModeArg, RunArgs};
use crate::sampling::SamplingArgs;
use crate::uf2::Board;

pub mod board;
pub mod dual;
pub mod emulator;
pub mod host;
pub mod kernels;
pub mod report;
pub mod synthetic;

pub use emulator::EMULATOR_CAVEATS;

/// Flash bandwidth of the RP2040's XIP path with its cache missing every line: 133 MHz-class
/// QSPI flash at 125 MHz / 2 clock divider ≈ 25 MB/s of streamed weights.
const XIP_BYTES_PER_S: f64 = 25e6;
/// Default stall of the emulator's XIP cache model per missed 8-byte line: 28 QSPI clocks
/// (address + mode 8, wait 4, data 16) at clock divider 2 (scripts/emulator/xip-cache.mjs).
pub const DEFAULT_XIP_MISS_CYCLES: u64 = 56;

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
    /// Emulator: run a second time with the XIP cache model (16 KiB, 2-way, 8-byte lines) and
    /// this stall in cycles per missed line; 0 = only rp2040js's zero-wait flash.
    #[arg(long, default_value_t = DEFAULT_XIP_MISS_CYCLES, value_name = "CYCLES")]
    pub xip_miss_cycles: u64,
    /// Time each kernel (matvec, attention, norms, sampler) in the firmware instead of a model:
    /// cycles per call and per MAC (needs --emulator, --serial or --probe; no model file).
    #[arg(long)]
    pub kernels: bool,
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

/// `starmind bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.kernels {
        return kernels::run(&args);
    }
    args.sampling.validate(true)?;
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
        crate::outln!("{}", result.to_json())?;
    } else {
        crate::out!("{}", result.to_text(&path.display().to_string()))?;
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
    /// Emulator with the XIP cache model: decode cycles/token of that run and its counts.
    pub xip_decode_cycles_per_token: Option<u64>,
    pub xip: Option<emulator::XipStats>,
    /// The firmware copied the model to SRAM at boot (`model_in=sram`; it then counts in RAM).
    pub model_in_sram: Option<bool>,
    /// A model in flash: bytes of its weights the firmware copied to SRAM at boot
    /// (`model_sram_bytes=`; they count in RAM).
    pub model_sram_bytes: u64,
    /// SRAM of the firmware's weight-stream buffers (`stream_buffer_bytes=`; 0: no stream, as
    /// where flash is as fast as SRAM: rp2040js's zero-wait flash).
    pub stream_buffer_bytes: u64,
    /// The run with the XIP cache model: its stream buffers and peak RAM (the firmware streams
    /// there, so its RAM is laid out as on a board: the buffers, and a smaller weight copy or a
    /// shorter context).
    pub xip_stream_buffer_bytes: Option<u64>,
    pub xip_peak_ram_bytes: Option<u64>,
    /// Emulator: the dual-core estimate from the bench-split run ([`dual`]).
    pub dual_core: Option<dual::DualCoreEstimate>,
    /// Emulator: the bench-split run's counts (`split_*=` fields of its bench line).
    pub split: Option<dual::SplitRun>,
}

impl BenchResult {
    /// A result for `ids` from `model` on `target` with what the model file alone tells (sizes,
    /// parameters) and nothing measured yet.
    pub fn for_model(model: &Model, target: Target, ids: Vec<u32>, prompt_tokens: usize) -> Self {
        BenchResult {
            target,
            tokens: ids.len(),
            prompt_tokens,
            prefill_cycles_per_token: None,
            decode_cycles_per_token: None,
            sample_cycles_per_token: None,
            clock_hz: None,
            decode_tok_per_s: 0.0,
            prefill_tok_per_s: 0.0,
            peak_stack_bytes: None,
            arena_bytes: 0,
            static_ram_bytes: None,
            model_flash_bytes: model.bytes().len() as u64,
            weight_bytes_per_token: weight_bytes_per_token(model),
            params: params(model),
            ids,
            bit_exact: None,
            emulator_cycles: None,
            emulator_mhz: None,
            profile: Vec::new(),
            xip_decode_cycles_per_token: None,
            xip: None,
            model_in_sram: None,
            model_sram_bytes: 0,
            stream_buffer_bytes: 0,
            xip_stream_buffer_bytes: None,
            xip_peak_ram_bytes: None,
            dual_core: None,
            split: None,
        }
    }

    /// Static RAM (+ the model, or the part of it, copied to SRAM, + the stream buffers) +
    /// arena + peak stack, where the firmware reported them.
    pub fn peak_ram_bytes(&self) -> Option<u64> {
        let model_copy = if self.model_in_sram == Some(true) {
            self.model_flash_bytes
        } else {
            self.model_sram_bytes
        };
        Some(
            self.static_ram_bytes?
                + model_copy
                + self.stream_buffer_bytes
                + self.arena_bytes
                + self.peak_stack_bytes?,
        )
    }

    fn xip_bound_tok_per_s(&self) -> f64 {
        XIP_BYTES_PER_S / self.weight_bytes_per_token.max(1) as f64
    }

    /// Decode tok/s with the emulator's XIP cache model (flash stalls simulated), or the
    /// measured figure on a board; `None` for a zero-wait-only emulator run and the host.
    pub fn board_estimate_tok_per_s(&self) -> Option<f64> {
        let clock = self.clock_hz? as f64;
        match self.target {
            Target::Emulator => Some(clock / self.xip_decode_cycles_per_token?.max(1) as f64),
            Target::Board => Some(clock / self.decode_cycles_per_token?.max(1) as f64),
            Target::Host => None,
        }
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
            "xip_decode_cycles_per_token": self.xip_decode_cycles_per_token,
            "xip_miss_cycles": self.xip.map(|x| x.miss_cycles),
            "xip_hit_rate": self.xip.map(|x| x.hit_rate()),
            "model_in_sram": self.model_in_sram,
            "model_sram_bytes": self.model_sram_bytes,
            "stream_buffer_bytes": self.stream_buffer_bytes,
            "xip_stream_buffer_bytes": self.xip_stream_buffer_bytes,
            "xip_peak_ram_bytes": self.xip_peak_ram_bytes,
            "xip_dma_reads": self.xip.map(|x| x.dma_hits + x.dma_misses),
            "dual_core_estimate_tok_per_s": self.dual_core.map(|d| d.tok_per_s),
            "dual_core_estimate": self.dual_core.map(|d| d.to_json()),
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
            "  RAM: peak {} bytes = static {}{} + arena {} + stack {}\n",
            opt(self.peak_ram_bytes()),
            opt(self.static_ram_bytes),
            if self.model_in_sram == Some(true) {
                format!(" + model copy {}", self.model_flash_bytes)
            } else if self.model_sram_bytes > 0 {
                format!(" + weights copied {}", self.model_sram_bytes)
            } else {
                String::new()
            } + &if self.stream_buffer_bytes > 0 {
                format!(" + stream buffers {}", self.stream_buffer_bytes)
            } else {
                String::new()
            },
            self.arena_bytes,
            opt(self.peak_stack_bytes)
        );
        s += &format!(
            "  flash: model {} bytes; weights read per token {} bytes; XIP bound {:.1} tok/s at 25 MB/s\n",
            self.model_flash_bytes,
            self.weight_bytes_per_token,
            self.xip_bound_tok_per_s()
        );
        if let (Target::Emulator, Some(estimate), Some(cycles), Some(xip)) = (
            self.target,
            self.board_estimate_tok_per_s(),
            self.xip_decode_cycles_per_token,
            self.xip,
        ) {
            s += &format!(
                "  with the XIP cache model: {estimate:.2} tok/s, {cycles} cycles/token ({} cycles per missed line, {:.2}% of the core's flash reads hit)\n",
                xip.miss_cycles,
                100.0 * xip.hit_rate()
            );
            if let Some(buffers) = self.xip_stream_buffer_bytes.filter(|&b| b > 0) {
                s += &format!(
                    "           weights streamed by DMA into {buffers} bytes of buffers ({} DMA reads of flash); peak RAM {}\n",
                    xip.dma_hits + xip.dma_misses,
                    opt(self.xip_peak_ram_bytes)
                );
            }
        }
        if let Some(dual) = &self.dual_core {
            s += &dual.to_text();
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
pub(crate) fn profile_lines(profile: &[(String, u64)], top: usize, indent: &str) -> String {
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
    let model = Model::parse(model_bytes)?;
    let run = RunArgs {
        mode: ModeArg::Bench,
        sampling: args.sampling.clone(),
    };
    if args.host {
        return host::bench(&model, &args.sampling);
    }
    let (line, emulator, target) = if args.emulator {
        let (line, emulator) = emulator::run(model_bytes, &run, args.max_cycles, args.profile, 0)?;
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
            Some(port) => board::read_serial(port, timeout)?,
            None => board::read_rtt(&mut session, timeout)?,
        };
        (line, None, Target::Board)
    } else if let Some(port) = &args.serial {
        (
            board::read_serial(port, Duration::from_secs(args.timeout_s))?,
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
    if let Some(emulator) = emulator {
        result.emulator_cycles = Some(emulator.cycles);
        result.emulator_mhz = Some(emulator.mhz);
        result.profile = emulator.profile;
    }
    if target == Target::Emulator && args.xip_miss_cycles > 0 {
        // The same run with flash stalls: the firmware's clock sees them, the tokens must not.
        let (line, emulator) = emulator::run(
            model_bytes,
            &run,
            args.max_cycles,
            false,
            args.xip_miss_cycles,
        )?;
        let with_xip = parse_bench_line(&line, &model, target)?;
        ensure!(
            with_xip.ids == result.ids,
            "the run with the XIP cache model drew other tokens than the zero-wait run"
        );
        result.xip_decode_cycles_per_token = with_xip.decode_cycles_per_token;
        result.xip_stream_buffer_bytes = Some(with_xip.stream_buffer_bytes);
        result.xip_peak_ram_bytes = with_xip.peak_ram_bytes();
        result.xip = emulator.xip;
    }
    if target == Target::Emulator {
        // Once more with each cut step's two parts timed on core 0 (rp2040js has one core):
        // the cut forward pass must draw the same tokens, and its counts give the estimate.
        let split_run = RunArgs {
            mode: ModeArg::BenchSplit,
            sampling: args.sampling.clone(),
        };
        let (line, _) = emulator::run(model_bytes, &split_run, args.max_cycles, false, 0)?;
        let split = parse_bench_line(&line, &model, target)?;
        ensure!(
            split.ids == result.ids,
            "the bench-split run (the forward pass cut for two cores) drew other tokens than the uncut run"
        );
        let run = split
            .split
            .context("the bench-split run reported no split_ counts")?;
        result.dual_core = Some(dual::estimate(
            &run,
            split.clock_hz.unwrap_or(125_000_000),
            dual::HANDSHAKE_CYCLES,
        ));
        result.split = Some(run);
    }
    if args.check {
        let ctx = line_field(&line, "ctx")
            .and_then(|v| v.parse().ok())
            .unwrap_or(model.config().seq_len);
        let host_ids = host::bench_ids(&model, &args.sampling, ctx, &mut |_| {})?.0;
        result.bit_exact = Some(host_ids == result.ids);
        if host_ids != result.ids {
            eprintln!("device ids: {:?}\nhost ids:   {host_ids:?}", result.ids);
        }
    }
    Ok(result)
}

/// Bytes of weights read from flash per token: every layer matrix and norm, the final norm, the
/// output matrix (the embedding when tied) and one embedding row.
pub fn weight_bytes_per_token(model: &Model) -> u64 {
    let c = model.config();
    let size = |t| section_bytes(&c, t).unwrap_or(0) as u64;
    let per_layer: u64 = PER_LAYER.into_iter().map(size).sum();
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

/// Parameters as the seed counted them (no norms): [`ModelConfig::seed_param_count`].
pub fn params(model: &Model) -> u64 {
    ModelConfig::from(&model.config()).seed_param_count() as u64
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
    let prompt_tokens = number("prompt_tokens")? as usize;
    let split = match (
        line_field(line, "split_joins"),
        line_field(line, "split_parts_cycles"),
        line_field(line, "split_longer_cycles"),
    ) {
        (Some(_), Some(_), Some(_)) => Some(dual::SplitRun {
            tokens: ids.len() as u64,
            decode_cycles_per_token: decode,
            joins: number("split_joins")?,
            parts_cycles: number("split_parts_cycles")?,
            longer_cycles: number("split_longer_cycles")?,
        }),
        _ => None,
    };
    Ok(BenchResult {
        split,
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
        model_in_sram: line_field(line, "model_in").map(|v| v == "sram"),
        model_sram_bytes: line_field(line, "model_sram_bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        stream_buffer_bytes: line_field(line, "stream_buffer_bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        ..BenchResult::for_model(model, target, ids, prompt_tokens)
    })
}
