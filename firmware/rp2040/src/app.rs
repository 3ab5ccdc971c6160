//! What the board does once it is up: read the config block, check the model, run the mode.
//!
//! Every mode starts a story the same way (the host's `starmind bench --check` repeats it):
//! the token sequence is `<|endoftext|>` followed by the encoded prompt, prefilled at once; then
//! each step samples a token from the logits and feeds it back.

use core::fmt::Write as _;

use starmind_engine::{Model, Sampler, SamplerConfig, Session};

use crate::config_block::{Mode, RunConfig, CONFIG_ADDR, CONFIG_BYTES, MODEL_ADDR};
use crate::console::Console;
use crate::measure::{self, CycleClock};

/// RAM kept free for the stack above the arena (the deepest measured use is far below this).
const STACK_RESERVE_BYTES: usize = 16 * 1024;
/// Longest prompt in tokens (the config block's prompt is at most 200 bytes).
const MAX_PROMPT_TOKENS: usize = 201;
/// Most tokens one bench run records.
pub const MAX_BENCH_TOKENS: usize = 512;

/// Runs the configured mode; on a missing or bad config or model, prints the error and waits.
pub fn run(console: &mut Console, clock: &CycleClock, clk_sys_hz: u32) -> ! {
    // SAFETY: the config block lies in XIP flash, mapped read-only for the whole run.
    let block = unsafe { &*(CONFIG_ADDR as *const [u8; CONFIG_BYTES]) };
    let config = match RunConfig::decode(block) {
        Ok(config) => config,
        Err(err) => halt(console, format_args!("config: {}", err.message())),
    };
    // The XIP window is 16 MiB; a length past it cannot be a model (the host refuses those).
    const MAX_MODEL_BYTES: u32 = 0x1100_0000 - MODEL_ADDR;
    if config.model_bytes > MAX_MODEL_BYTES {
        halt(
            console,
            format_args!("config: model length {} exceeds flash", config.model_bytes),
        );
    }
    // SAFETY: as above, inside the XIP window (checked just now); `Model::parse` bounds-checks
    // everything inside.
    let model_bytes = unsafe {
        core::slice::from_raw_parts(MODEL_ADDR as *const u8, config.model_bytes as usize)
    };
    let model = match Model::parse(model_bytes) {
        Ok(model) => model,
        Err(err) => halt(console, format_args!("model at {MODEL_ADDR:#010x}: {err}")),
    };

    // The arena is the free RAM right after the statics; the stack grows down towards it.
    let free_bytes = measure::stack_top() - STACK_RESERVE_BYTES - measure::free_ram_start();
    let model_config = model.config();
    // The model's full context, shortened only when RAM is short.
    let mut ctx = model_config.seq_len;
    while ctx > 1 && Model::arena_bytes(&model_config, ctx) > free_bytes {
        ctx -= 1;
    }
    let arena_bytes = Model::arena_bytes(&model_config, ctx);
    if arena_bytes > free_bytes {
        halt(
            console,
            format_args!("model needs {arena_bytes} bytes of RAM, {free_bytes} free"),
        );
    }
    // SAFETY: [free_ram_start, +arena_bytes) is RAM that no static uses and that lies below the
    // stack reserve; nothing else refers to it for the rest of the program.
    let arena = unsafe {
        core::slice::from_raw_parts_mut(measure::free_ram_start() as *mut u8, arena_bytes)
    };
    let mut session = match Session::new(&model, ctx, arena) {
        Ok(session) => session,
        Err(err) => halt(console, format_args!("session: {err}")),
    };
    let _ = writeln!(
        console,
        "STARMIND-READY mode={} model_bytes={} ctx={ctx} arena_bytes={arena_bytes}\r",
        config.mode.name(),
        model_bytes.len(),
    );

    let run = Run {
        ctx,
        model: &model,
        config: &config,
        arena_bytes,
    };
    match config.mode {
        Mode::Bench => run.bench(console, clock, clk_sys_hz, &mut session),
        Mode::Story => run.stories(console, &mut session),
        Mode::Interactive => run.interactive(console, &mut session),
    }
}

struct Run<'r> {
    ctx: usize,
    model: &'r Model<'r>,
    config: &'r RunConfig,
    arena_bytes: usize,
}

impl Run<'_> {
    fn sampler(&self, seed: u64) -> Sampler {
        let s = self.config.sampler;
        Sampler::new(SamplerConfig {
            temperature_q8: s.temperature_q8 as u32,
            top_k: s.top_k as u32,
            top_p_q16: s.top_p_q16,
            seed,
        })
    }

    /// `<|endoftext|>` + the encoded prompt into `ids`; returns how many.
    fn prompt_ids(&self, console: &mut Console, prompt: &[u8], ids: &mut [u32]) -> Option<usize> {
        ids[0] = self.model.eot_id();
        match self.model.encode(prompt, &mut ids[1..]) {
            Ok(n) => Some(n + 1),
            Err(err) => {
                let _ = writeln!(console, "STARMIND-ERROR prompt: {err}\r");
                None
            }
        }
    }

    /// Generates `config.tokens` tokens (no stop at `<|endoftext|>`, so every run does the same
    /// work), then prints the text, one `STARMIND-BENCH` line and `STARMIND-DONE`, again every
    /// two seconds.
    fn bench(
        &self,
        console: &mut Console,
        clock: &CycleClock,
        clk_sys_hz: u32,
        session: &mut Session,
    ) -> ! {
        let mut prompt = [0u32; MAX_PROMPT_TOKENS];
        let Some(prompt_len) = self.prompt_ids(console, self.config.prompt(), &mut prompt) else {
            idle()
        };
        let mut sampler = self.sampler(self.config.seed);
        let mut ids = [0u32; MAX_BENCH_TOKENS];
        let wanted = (self.config.tokens as usize).min(MAX_BENCH_TOKENS);

        let start = clock.cycles();
        let mut logits = match session.prefill(&prompt[..prompt_len]) {
            Ok(logits) => logits,
            Err(err) => halt(console, format_args!("prefill: {err}")),
        };
        let prefill_cycles = clock.cycles() - start;

        // One decode step = sample + forward pass of the sampled token.
        let start = clock.cycles();
        let mut sample_cycles = 0;
        let mut generated = 0;
        while generated < wanted {
            let before_sample = clock.cycles();
            let next = sampler.sample(logits);
            sample_cycles += clock.cycles() - before_sample;
            ids[generated] = next;
            generated += 1;
            logits = match session.feed(next) {
                Ok(logits) => logits,
                Err(_) => break, // context full: report what fits
            };
        }
        let decode_cycles = clock.cycles() - start;

        let stack = measure::stack_high_water(measure::free_ram_start() + self.arena_bytes);
        let prefill_per_token = prefill_cycles / prompt_len as u64;
        let decode_per_token = decode_cycles / generated.max(1) as u64;
        let sample_per_token = sample_cycles / generated.max(1) as u64;
        // The result is repeated every two seconds: a host that opens the USB port or attaches
        // to RTT after the run still gets it (the emulator driver stops at the first DONE).
        loop {
            let _ = write!(console, "STARMIND-TEXT ");
            for &id in &ids[..generated] {
                console.write_bytes(self.model.token_bytes(id));
            }
            let _ = writeln!(console, "\r");
            let _ = write!(
                console,
                "STARMIND-BENCH v1 tokens={generated} prompt_tokens={prompt_len} \
                 prefill_cycles_per_token={prefill_per_token} \
                 decode_cycles_per_token={decode_per_token} \
                 sample_cycles_per_token={sample_per_token} clock_hz={clk_sys_hz} \
                 peak_stack_bytes={stack} arena_bytes={} static_ram_bytes={} model_bytes={} \
                 ctx={} ids=",
                self.arena_bytes,
                measure::free_ram_start() - 0x2000_0000,
                self.model.bytes().len(),
                self.ctx,
            );
            for (i, id) in ids[..generated].iter().enumerate() {
                let _ = write!(console, "{}{id}", if i == 0 { "" } else { "," });
            }
            let _ = writeln!(console, "\r\nSTARMIND-DONE\r");
            let until = clock.cycles() + 2 * clk_sys_hz as u64;
            while clock.cycles() < until {}
        }
    }

    /// Streams one story from `prompt`; stops at `<|endoftext|>`, the token limit or a full context.
    fn story(&self, console: &mut Console, session: &mut Session, prompt: &[u8], seed: u64) {
        session.reset();
        let mut ids = [0u32; MAX_PROMPT_TOKENS];
        let Some(len) = self.prompt_ids(console, prompt, &mut ids) else {
            return;
        };
        let mut sampler = self.sampler(seed);
        let mut logits = match session.prefill(&ids[..len]) {
            Ok(logits) => logits,
            Err(err) => return error(console, format_args!("prefill: {err}")),
        };
        for _ in 0..self.config.tokens {
            let next = sampler.sample(logits);
            if next == self.model.eot_id() {
                break;
            }
            console.write_bytes(self.model.token_bytes(next));
            logits = match session.feed(next) {
                Ok(logits) => logits,
                Err(_) => break,
            };
        }
        let _ = write!(console, "\r\n\r\n");
    }

    /// A new story after every other, seeds counting up from the configured one.
    fn stories(&self, console: &mut Console, session: &mut Session) -> ! {
        let mut seed = self.config.seed;
        loop {
            console.write_bytes(self.config.prompt());
            self.story(console, session, self.config.prompt(), seed);
            seed = seed.wrapping_add(1);
        }
    }

    /// Reads a prompt line (UART or USB), tells a story from it, repeats.
    fn interactive(&self, console: &mut Console, session: &mut Session) -> ! {
        let mut seed = self.config.seed;
        let mut line = [0u8; 200];
        loop {
            let _ = write!(console, "\r\nprompt> ");
            let mut len = 0;
            loop {
                let Some(byte) = console.read_byte() else {
                    continue;
                };
                match byte {
                    b'\r' | b'\n' => break,
                    8 | 127 if len > 0 => {
                        len -= 1;
                        console.write_bytes(b"\x08 \x08");
                    }
                    _ if len < line.len() && byte >= b' ' => {
                        line[len] = byte;
                        len += 1;
                        console.write_bytes(&[byte]);
                    }
                    _ => {}
                }
            }
            let _ = write!(console, "\r\n");
            self.story(console, session, &line[..len], seed);
            seed = seed.wrapping_add(1);
        }
    }
}

fn error(console: &mut Console, message: core::fmt::Arguments) {
    let _ = writeln!(console, "STARMIND-ERROR {message}\r");
}

/// Prints `STARMIND-ERROR <message>` and waits for good (no fault, no reset loop).
fn halt(console: &mut Console, message: core::fmt::Arguments) -> ! {
    error(console, message);
    idle()
}

fn idle() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}
