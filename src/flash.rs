//! `starmind flash`: put the firmware, a config block and a model file on an RP2040 board.
//!
//! Two ways: a UF2 image for the USB bootloader (`--uf2`, `--uf2-drive`; touches no debug
//! hardware), or a debug probe through the probe-rs library (SWD: Raspberry Pi Debug Probe,
//! picoprobe, J-Link…). The flash map is docs/memory-map.md.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use probe_rs::flashing::{DownloadOptions, FlashProgress, ProgressEvent, ProgressOperation};
use probe_rs::probe::{list::Lister, DebugProbeInfo, DebugProbeSelector};
use probe_rs::{MemoryInterface as _, Permissions, Session};

use starmind_engine::run_config::{ConfigError, Mode, RunConfig};

use crate::sampling::SamplingArgs;
use crate::uf2::{self, Board, Segment};

/// The board program, built by scripts/build-firmware.sh (reproducibly) and committed, so that
/// building the CLI needs no ARM toolchain.
pub const FIRMWARE_IMAGE: &[u8] = include_bytes!("../firmware/prebuilt/starmind-rp2040.bin");

/// Arguments of `starmind flash`.
#[derive(clap::Args)]
pub struct Args {
    /// Model file (.smb) from `starmind export`.
    pub model: PathBuf,
    /// Write a UF2 image to this file instead of using a probe (touches no hardware).
    #[arg(long)]
    pub uf2: Option<PathBuf>,
    /// Copy the UF2 image onto this mounted RPI-RP2 drive (hold BOOTSEL while plugging in).
    /// Without --uf2, --uf2-drive and --probe, a mounted RPI-RP2 drive is found by itself.
    #[arg(long, value_name = "MOUNT")]
    pub uf2_drive: Option<PathBuf>,
    /// With --uf2: replace the file if it exists (never the model file itself).
    #[arg(long)]
    pub force: bool,
    /// Debug probe to use, as VID:PID[:serial] (hex); needed when several are connected.
    #[arg(long, value_name = "VID:PID[:SERIAL]")]
    pub probe: Option<String>,
    /// Board (flash size).
    #[arg(long, value_enum, default_value = "pico")]
    pub board: Board,
    #[command(flatten)]
    pub run: RunArgs,
}

/// What the firmware does at boot: written into the config block.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// bench: one STARMIND-BENCH line; story: stories forever; interactive: prompt over serial.
    #[arg(long, value_enum, default_value = "story")]
    pub mode: ModeArg,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// `--mode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    Bench,
    Story,
    Interactive,
    /// Time each kernel on synthetic data (`starmind bench --kernels`); the model is not used.
    Kernels,
    /// A bench whose forward pass runs the two cores' parts one after the other on core 0, each
    /// timed (`starmind bench --emulator`'s dual-core estimate).
    BenchSplit,
}

impl RunArgs {
    /// The config block for a model of `model_bytes` bytes.
    pub fn run_config(&self, model_bytes: usize) -> anyhow::Result<RunConfig> {
        let mode = match self.mode {
            ModeArg::Bench => Mode::Bench,
            ModeArg::Story => Mode::Story,
            ModeArg::Interactive => Mode::Interactive,
            ModeArg::Kernels => Mode::Kernels,
            ModeArg::BenchSplit => Mode::BenchSplit,
        };
        let s = &self.sampling;
        let tokens = match mode {
            Mode::Bench | Mode::BenchSplit | Mode::Kernels => s.bench_tokens(),
            Mode::Story | Mode::Interactive => s.story_tokens(),
        };
        let model_bytes = u32::try_from(model_bytes).context("model file exceeds 4 GiB")?;
        RunConfig::new(mode, s.prompt.as_bytes(), tokens, s.sampler()?, model_bytes).map_err(|e| {
            let flag = match e {
                ConfigError::PromptTooLong => "--prompt",
                _ => "--temperature, --top-k",
            };
            anyhow::Error::new(e).context(flag)
        })
    }
}

/// The firmware + config block + model segments for `args`.
pub fn segments(model: &[u8], run: &RunArgs, board: Board) -> anyhow::Result<Vec<Segment>> {
    uf2::flash_segments(
        FIRMWARE_IMAGE,
        &run.run_config(model.len())?.encode(),
        model,
        board,
    )
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let run = &args.run;
    run.sampling
        .validate(matches!(run.mode, ModeArg::Bench | ModeArg::BenchSplit))?;
    if let Some(path) = &args.uf2 {
        crate::fsio::check_output("--uf2", path, std::slice::from_ref(&args.model), args.force)?;
    }
    let model = crate::model_file::read(&args.model)?;
    let segments = segments(&model, &args.run, args.board)?;
    // No probe asked for and none chosen: a board in BOOTSEL mode mounted as a drive is what a
    // Pico owner has (like `picotool load` / `elf2uf2-rs -d`).
    let mut drive = args.uf2_drive.clone();
    if args.uf2.is_none() && drive.is_none() && args.probe.is_none() {
        let found = find_bootsel_drives();
        match found.len() {
            0 => {}
            1 => {
                eprintln!("found a board in BOOTSEL mode at {}", found[0].display());
                drive = found.into_iter().next();
            }
            _ => bail!(
                "several RP2040 bootloader drives are mounted; choose one with --uf2-drive:\n{}",
                found
                    .iter()
                    .map(|d| format!("  {}", d.display()))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
    if args.uf2.is_some() || drive.is_some() {
        let image = uf2::write(&segments);
        uf2::check(&image, &segments).context("checking the UF2 image")?;
        if let Some(path) = &args.uf2 {
            crate::fsio::write_atomic(path, &image)?;
            eprintln!(
                "wrote {} ({} bytes: firmware {} + config + model {} bytes, mode {:?})",
                path.display(),
                image.len(),
                FIRMWARE_IMAGE.len(),
                model.len(),
                args.run.mode
            );
        }
        if let Some(drive) = &drive {
            copy_to_drive(&image, drive)?;
        }
        return Ok(());
    }
    let mut session = open_probe(args.probe.as_deref(), &args.model)?;
    write_with_probe(&mut session, &segments)?;
    eprintln!("flashed; the board is running (mode {:?})", args.run.mode);
    Ok(())
}

/// Environment variable listing the candidate mount points (separated by `:`) instead of the
/// usual places: for tests, and for unusual mount setups.
pub const BOOTSEL_DIRS_ENV: &str = "STARMIND_BOOTSEL_DIRS";

/// Mounted RP2040 bootloader drives: directories holding an `INFO_UF2.TXT` whose `Board-ID` is
/// `RPI-RP2` (or named `RPI-RP2`), among `$STARMIND_BOOTSEL_DIRS`, else `/media/*/*`,
/// `/run/media/*/*`, `/mnt/*` and `/Volumes/*` (where desktop systems mount USB drives).
pub fn find_bootsel_drives() -> Vec<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os(BOOTSEL_DIRS_ENV) {
        Some(list) => std::env::split_paths(&list).collect(),
        None => {
            let children = |dir: &Path| -> Vec<PathBuf> {
                std::fs::read_dir(dir)
                    .map(|e| e.flatten().map(|e| e.path()).collect())
                    .unwrap_or_default()
            };
            let mut all = Vec::new();
            for base in ["/media", "/run/media"] {
                for user in children(Path::new(base)) {
                    all.extend(children(&user));
                }
            }
            all.extend(children(Path::new("/mnt")));
            all.extend(children(Path::new("/Volumes")));
            all
        }
    };
    let mut drives: Vec<PathBuf> = candidates
        .into_iter()
        .filter(|dir| is_rp2040_bootloader(dir))
        .collect();
    drives.sort();
    drives.dedup();
    drives
}

/// Whether `dir` is the RP2040's bootloader drive (its `INFO_UF2.TXT` names board `RPI-RP2`;
/// an RP2350's says `RP2350` and would not run this firmware).
fn is_rp2040_bootloader(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string(dir.join("INFO_UF2.TXT")) else {
        return false;
    };
    let named = dir.file_name().is_some_and(|n| n == "RPI-RP2");
    info.contains("Board-ID: RPI-RP2") || (named && !info.contains("RP2350"))
}

fn copy_to_drive(image: &[u8], drive: &Path) -> anyhow::Result<()> {
    if !drive.join("INFO_UF2.TXT").is_file() {
        bail!(
            "{} is not an RP2040 bootloader drive (no INFO_UF2.TXT): hold BOOTSEL while plugging \
             the board in, then pass the RPI-RP2 mount point",
            drive.display()
        );
    }
    let target = drive.join("starmind.uf2");
    std::fs::write(&target, image)
        .with_context(|| format!("copying the image to {}", target.display()))?;
    eprintln!(
        "copied {} bytes to {}; the board reboots into starmind",
        image.len(),
        target.display()
    );
    Ok(())
}

/// Finds the probe, attaches to the RP2040 (core 0) and returns the session.
pub fn open_probe(selector: Option<&str>, model: &Path) -> anyhow::Result<Session> {
    let hint = format!(
        "to flash without a probe, write a UF2 image: `starmind flash {} --uf2 starmind.uf2`, \
         hold BOOTSEL while plugging the Pico in and copy the file onto the RPI-RP2 drive",
        model.display()
    );
    let probes = Lister::new().list_all();
    let chosen: DebugProbeInfo = match selector {
        Some(text) => {
            let wanted = DebugProbeSelector::try_from(text)
                .with_context(|| format!("--probe {text}: expected VID:PID[:serial], hex"))?;
            probes
                .into_iter()
                .find(|p| {
                    p.vendor_id == wanted.vendor_id
                        && p.product_id == wanted.product_id
                        && (wanted.serial_number.is_none()
                            || p.serial_number == wanted.serial_number)
                })
                .ok_or_else(|| anyhow::anyhow!("no debug probe matches --probe {text}; {hint}"))?
        }
        None => match probes.len() {
            0 => bail!(
                "no debug probe found (SWD: Raspberry Pi Debug Probe, picoprobe, J-Link…); {hint}"
            ),
            1 => probes.into_iter().next().unwrap(),
            _ => bail!(
                "several debug probes found, choose one with --probe VID:PID[:serial]:\n{}",
                probes
                    .iter()
                    .map(|p| format!("  {p}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        },
    };
    let probe = chosen
        .open()
        .with_context(|| format!("opening debug probe {chosen}; {hint}"))?;
    probe
        .attach("RP2040", Permissions::default())
        .with_context(|| format!("attaching to an RP2040 through {chosen} (is the board powered and wired to SWD?); {hint}"))
}

/// Writes the segments that differ from what flash holds, verifies, resets and runs.
pub fn write_with_probe(session: &mut Session, segments: &[Segment]) -> anyhow::Result<()> {
    let mut loader = session.target().flash_loader();
    let mut changed = 0;
    for segment in segments {
        let mut current = vec![0u8; segment.data.len()];
        // A failed read-back (flash not mapped yet, say) just means: write it.
        let read = session
            .core(0)
            .and_then(|mut core| core.read(segment.addr as u64, &mut current));
        if read.is_ok() && current == segment.data {
            eprintln!(
                "{:#010x}: {} bytes already in flash, skipped",
                segment.addr,
                segment.data.len()
            );
            continue;
        }
        loader.add_data(segment.addr as u64, &segment.data)?;
        changed += 1;
    }
    if changed > 0 {
        let bars: RefCell<Vec<(u8, ProgressBar)>> = RefCell::new(Vec::new());
        let progress = FlashProgress::new(|event| on_progress(&bars, event));
        let mut options = DownloadOptions::new();
        options.progress = Some(progress);
        options.verify = true;
        loader.commit(session, options).context("writing flash")?;
    }
    let mut core = session.core(0)?;
    core.reset().context("resetting the RP2040")?;
    Ok(())
}

fn on_progress(bars: &RefCell<Vec<(u8, ProgressBar)>>, event: ProgressEvent) {
    let key = |op: ProgressOperation| match op {
        ProgressOperation::Fill => (0, "reading back"),
        ProgressOperation::Erase => (1, "erasing"),
        ProgressOperation::Program => (2, "programming"),
        ProgressOperation::Verify => (3, "verifying"),
    };
    let mut bars = bars.borrow_mut();
    match event {
        ProgressEvent::AddProgressBar { operation, total } => {
            let (id, name) = key(operation);
            let bar = ProgressBar::new(total.unwrap_or(0));
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap()
                .progress_chars("=> "),
            );
            bar.set_message(name);
            bar.enable_steady_tick(Duration::from_millis(200));
            bars.push((id, bar));
        }
        ProgressEvent::Progress {
            operation, size, ..
        } => {
            if let Some((_, bar)) = bars.iter().find(|(id, _)| *id == key(operation).0) {
                bar.inc(size);
            }
        }
        ProgressEvent::Finished(operation) | ProgressEvent::Failed(operation) => {
            if let Some((_, bar)) = bars.iter().find(|(id, _)| *id == key(operation).0) {
                bar.finish();
            }
        }
        _ => {}
    }
}
