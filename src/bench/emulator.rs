//! The rp2040js emulator (`scripts/emulator/run.mjs`, a node subprocess) booting the committed
//! firmware, and the per-function cycle profile from its PC samples.

use std::process::Stdio;

use anyhow::{bail, Context as _};

use super::line_field;
use crate::flash::{self, RunArgs};
use crate::uf2::{self, Board};

/// What rp2040js does not model; stated wherever emulator numbers are reported.
pub const EMULATOR_CAVEATS: [&str; 5] = [
    "one core only: core 1 never answers the launch, so the firmware runs on core 0 alone (a board shares each forward pass with core 1); the dual-core figures are estimates from the bench-split run",
    "rp2040js reads flash with no wait states (the zero-wait figures); the XIP figures come from the driver's model of the 16 KiB 2-way XIP cache (8-byte lines, LRU, a fixed stall per missed line: scripts/emulator/xip-cache.mjs), through which the DMA's reads of flash go too, sharing one QSPI port with the core",
    "DMA takes no simulated time with the zero-wait flash (its reads of flash do with the XIP cache model); its contention with the core for SRAM is not modelled",
    "UART takes no simulated time (no baud-rate delay)",
    "stock Simulator.execute() assumes 125 MHz; our driver counts core.cycles itself",
];

/// What the emulator driver reported besides the firmware's lines.
pub struct EmulatorRun {
    /// Emulated cycles of the whole run.
    pub cycles: u64,
    /// Emulated MHz (wall-clock speed of the emulator).
    pub mhz: f64,
    /// With `--profile`: (function, cycles), most first.
    pub profile: Vec<(String, u64)>,
    /// With the XIP cache model on: its counts over the whole run.
    pub xip: Option<XipStats>,
    /// Everything the firmware printed (UART0), then the driver's summary line.
    pub stdout: String,
}

/// What the driver's XIP cache model counted (`--xip-miss-cycles`), whole run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct XipStats {
    /// Stall charged per missed 8-byte line.
    pub miss_cycles: u64,
    pub hits: u64,
    pub misses: u64,
    /// The core's stall: its line fills, and its waits for the DMA's.
    pub stall_cycles: u64,
    /// The DMA's reads of flash that hit and missed (the weight stream; 0 without one).
    pub dma_hits: u64,
    pub dma_misses: u64,
}

impl XipStats {
    /// Share of flash reads that hit the cache.
    pub fn hit_rate(&self) -> f64 {
        self.hits as f64 / (self.hits + self.misses).max(1) as f64
    }
}

/// The committed firmware's function symbols (`address size name`), from scripts/build-firmware.sh.
const FIRMWARE_SYMBOLS: &str = include_str!("../../firmware/prebuilt/starmind-rp2040.syms");

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

/// Boots the firmware in bench mode in rp2040js (the very UF2 image `starmind flash --uf2`
/// writes); returns the firmware's bench line and what the driver measured. `xip_miss_cycles`
/// > 0 turns on the driver's XIP cache model with that stall per missed line.
pub fn run(
    model_bytes: &[u8],
    run: &RunArgs,
    max_cycles: u64,
    profile: bool,
    xip_miss_cycles: u64,
) -> anyhow::Result<(String, EmulatorRun)> {
    let emulated = run_firmware(model_bytes, run, max_cycles, profile, xip_miss_cycles)?;
    let bench = emulated
        .stdout
        .lines()
        .find(|l| l.starts_with("STARMIND-BENCH"))
        .context("no STARMIND-BENCH line")?
        .to_string();
    Ok((bench, emulated))
}

/// Boots the firmware with the config block `run` asks for and `model_bytes` at the model
/// address, until it prints `STARMIND-DONE`; fails on a fault, an error line or the cycle limit.
pub fn run_firmware(
    model_bytes: &[u8],
    run: &RunArgs,
    max_cycles: u64,
    profile: bool,
    xip_miss_cycles: u64,
) -> anyhow::Result<EmulatorRun> {
    let mut command = crate::emulator::driver()?;
    // The emulator boots the very UF2 image `starmind flash --uf2` would write (16 MiB of flash,
    // so big models can be benched too).
    let segments = flash::segments(model_bytes, run, Board::Pico16Mb)?;
    let work = crate::emulator::RunDir::new("bench")?;
    let image = work.path().join("bench.uf2");
    std::fs::write(&image, uf2::write(&segments))
        .with_context(|| format!("writing {}", image.display()))?;
    command
        .arg("--uf2")
        .arg(&image)
        .arg("--max-cycles")
        .arg(max_cycles.to_string())
        .arg("--xip-miss-cycles")
        .arg(xip_miss_cycles.to_string());
    let profile_path = work.path().join("profile.txt");
    if profile {
        command.arg("--profile").arg(&profile_path);
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(crate::emulator::not_started)?;
    let pcs = std::fs::read_to_string(&profile_path).unwrap_or_default();
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
    let count = |key: &str| line_field(emulator, key).and_then(|v| v.parse::<u64>().ok());
    let xip = match (
        count("xip_miss_cycles"),
        count("xip_hits"),
        count("xip_misses"),
        count("xip_stall_cycles"),
    ) {
        (Some(miss_cycles), Some(hits), Some(misses), Some(stall_cycles)) => Some(XipStats {
            miss_cycles,
            hits,
            misses,
            stall_cycles,
            dma_hits: count("xip_dma_hits").unwrap_or(0),
            dma_misses: count("xip_dma_misses").unwrap_or(0),
        }),
        _ => None,
    };
    if xip_miss_cycles > 0 && xip.is_none() {
        bail!("the emulator driver reported no XIP cache counts: {emulator}");
    }
    Ok(EmulatorRun {
        cycles,
        mhz,
        profile,
        xip,
        stdout: stdout.into_owned(),
    })
}
