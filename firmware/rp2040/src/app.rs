//! What the board does once it is up: read the config block, check the model, run the mode.

use core::fmt::Write as _;

use crate::config_block::{self, Mode, RunConfig, CONFIG_ADDR, CONFIG_BYTES, MODEL_ADDR};
use crate::console::Console;
use crate::measure::{self, CycleClock};

/// Runs the configured mode; on a missing or bad config or model, prints the error and waits.
pub fn run(console: &mut Console, clock: &CycleClock, clk_sys_hz: u32) -> ! {
    // SAFETY: the config block lies in XIP flash, which is mapped read-only for the whole run.
    let block = unsafe { &*(CONFIG_ADDR as *const [u8; CONFIG_BYTES]) };
    let config = match RunConfig::decode(block) {
        Ok(config) => config,
        Err(err) => halt(console, format_args!("config: {}", err.message())),
    };
    // SAFETY: as above; the host checked that the model fits in the flash it wrote.
    let model_bytes =
        unsafe { core::slice::from_raw_parts(MODEL_ADDR as *const u8, config.model_bytes as usize) };
    let _ = writeln!(
        console,
        "STARMIND-CONFIG mode={} tokens={} seed={} model_bytes={}\r",
        config.mode.name(),
        config.tokens,
        config.seed,
        model_bytes.len()
    );
    match config.mode {
        Mode::Bench => bench(console, clock, clk_sys_hz, &config, model_bytes),
        Mode::Story | Mode::Interactive => halt(console, format_args!("mode not available yet")),
    }
    let _ = writeln!(console, "STARMIND-DONE\r");
    idle()
}

/// Placeholder bench until the engine lands: streams the model bytes once per "token".
fn bench(console: &mut Console, clock: &CycleClock, clk_sys_hz: u32, config: &RunConfig, model: &[u8]) {
    let start = clock.cycles();
    let mut sum = 0u32;
    for _ in 0..config.tokens {
        for &byte in model {
            sum = sum.wrapping_add(byte as u32);
        }
    }
    let decode_cycles = clock.cycles() - start;
    let per_token = decode_cycles / config.tokens.max(1) as u64;
    let stack = measure::stack_high_water(measure::free_ram_start());
    let _ = writeln!(
        console,
        "STARMIND-BENCH v1 tokens={} prompt_tokens=0 prefill_cycles_per_token=0 decode_cycles_per_token={per_token} clock_hz={clk_sys_hz} peak_stack_bytes={stack} arena_bytes=0 model_bytes={} checksum={sum}\r",
        config.tokens,
        model.len(),
    );
    let _ = config_block::crc32;
}

/// Prints `STARMIND-ERROR <message>` and waits for good (no fault, no reset loop).
fn halt(console: &mut Console, message: core::fmt::Arguments) -> ! {
    let _ = writeln!(console, "STARMIND-ERROR {message}\r");
    idle()
}

fn idle() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}
