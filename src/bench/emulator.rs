//! The rp2040js emulator (`scripts/emulator/run.mjs`, a node subprocess) booting the committed
//! firmware, and the per-function cycle profile from its PC samples.

use std::process::Stdio;

use anyhow::{bail, Context as _};

use super::line_field;
use crate::flash::{self, RunArgs};
use crate::uf2::{self, Board};

/// What rp2040js does not model; stated wherever emulator numbers are reported.
pub const EMULATOR_CAVEATS: [&str; 5] = [
    "one core only (the firmware uses core 0 alone, as on the board)",
    "flash reads take no wait states: no XIP cache misses or QSPI timing, so weight streaming is optimistic",
    "DMA takes no simulated time",
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
/// writes); returns the firmware's bench line and what the driver measured.
pub fn run(
    model_bytes: &[u8],
    run: &RunArgs,
    max_cycles: u64,
    profile: bool,
) -> anyhow::Result<(String, EmulatorRun)> {
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
        .arg(max_cycles.to_string());
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
