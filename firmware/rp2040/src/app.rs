//! What the board does once it is up: read the config block, check the model, run the mode.
//!
//! Every mode tells its stories with the engine's story loop (`starmind_engine::story`), the
//! same function `starmind bench --check` runs on the host; this file only wires it to the
//! console and the cycle clock.

use core::fmt::Write as _;
use core::ops::ControlFlow;

use starmind_engine::budget;
use starmind_engine::kernel_bench;
use starmind_engine::run_config::{
    Mode, RunConfig, CONFIG_ADDR, CONFIG_BYTES, MAX_BENCH_TOKENS, MAX_PROMPT_BYTES, MODEL_ADDR,
};
use starmind_engine::story::{self, End, Listener, StoryConfig};
use starmind_engine::{Model, Session, WeightStream};

use crate::console::Console;
use crate::cores::{self, TimedHalves};
use crate::measure::{self, CycleClock};
use crate::stream::{self, FlashStream};

/// RAM kept free for core 0's stack above the arena (the deepest measured use, 13.1 KiB with
/// stories260k and the story-1k golden model, is below this). Core 1's stack, when core 1 runs,
/// is the [`cores::CORE1_STACK_BYTES`] below it, taken from the free RAM before the arena.
const STACK_RESERVE_BYTES: usize = 16 * 1024;
/// Longest prompt in tokens: `<|endoftext|>` and at most one token per prompt byte.
const MAX_PROMPT_TOKENS: usize = MAX_PROMPT_BYTES + 1;
/// Ctrl-C: received while a story is told, it ends that story (`starmind chat` sends it).
const STOP_BYTE: u8 = 0x03;

/// Runs the configured mode; on a missing or bad config or model, prints the error and waits.
pub fn run(console: &mut Console, clock: &CycleClock, clk_sys_hz: u32) -> ! {
    // SAFETY: the config block lies in XIP flash, mapped read-only for the whole run.
    let block = unsafe { &*(CONFIG_ADDR as *const [u8; CONFIG_BYTES]) };
    let config = match RunConfig::decode(block) {
        Ok(config) => config,
        Err(err) => halt(console, format_args!("config: {err}")),
    };
    if config.mode() == Mode::Kernels {
        kernels(console, clock)
    }
    // The XIP window is 16 MiB; a length past it cannot be a model (the host refuses those).
    const MAX_MODEL_BYTES: u32 = 0x1100_0000 - MODEL_ADDR;
    if config.model_bytes() > MAX_MODEL_BYTES {
        halt(
            console,
            format_args!(
                "config: model length {} exceeds flash",
                config.model_bytes()
            ),
        );
    }
    // SAFETY: as above, inside the XIP window (checked just now); `Model::parse` bounds-checks
    // everything inside.
    let model_bytes = unsafe {
        core::slice::from_raw_parts(MODEL_ADDR as *const u8, config.model_bytes() as usize)
    };
    let model = match Model::parse(model_bytes) {
        Ok(model) => model,
        Err(err) => halt(console, format_args!("model at {MODEL_ADDR:#010x}: {err}")),
    };

    // Free RAM: right after the statics, up to the stack reserve (the stack grows down towards
    // it). A model that fits there beside the arena of its full context is copied in and run from
    // SRAM (no XIP cache misses on its weights); a larger one is read in place from flash.
    let free_start = measure::free_ram_start();
    let mut free_bytes = measure::stack_top() - STACK_RESERVE_BYTES - free_start;
    // Core 1 first, so that its stack (just below core 0's reserve) leaves the free RAM before
    // the model and the arena are placed; bench-split times the two parts on core 0 instead and
    // leaves core 1 alone. rp2040js never answers: one core, and all the free RAM for the arena.
    let halves = (config.mode() == Mode::BenchSplit).then(TimedHalves::new);
    let core1_stack = measure::stack_top() - STACK_RESERVE_BYTES - cores::CORE1_STACK_BYTES;
    let core1 = if halves.is_some() || free_bytes < cores::CORE1_STACK_BYTES {
        None
    } else {
        // SAFETY: the CORE1_STACK_BYTES below core 0's stack reserve, at the top of the free
        // RAM; they leave the free RAM right below when core 1 answers, so no model copy and no
        // arena reaches them, and core 0's stack stays inside its reserve.
        unsafe { cores::launch_core1(core1_stack) }
    };
    if core1.is_some() {
        free_bytes -= cores::CORE1_STACK_BYTES;
    }
    let mut arena_start = free_start;
    let full_arena = Model::arena_bytes(&model.config(), model.config().seq_len);
    let in_sram = budget::model_runs_from_sram(model_bytes.len(), full_arena, free_bytes);
    let model = if in_sram {
        let at = (free_start + 3) & !3;
        // SAFETY: [at, at + len) lies inside the free RAM (checked above), which nothing else
        // uses; after the copy it is only read, for the rest of the program.
        let copy = unsafe { core::slice::from_raw_parts_mut(at as *mut u8, model_bytes.len()) };
        copy.copy_from_slice(model_bytes);
        arena_start = at + copy.len();
        free_bytes -= arena_start - free_start;
        match Model::parse(copy) {
            Ok(model) => model,
            Err(err) => halt(console, format_args!("model copied to SRAM: {err}")),
        }
    } else {
        model
    };
    // A model left in flash, run on this core alone, streams the weights it reads from there
    // behind the arithmetic (crate::stream) where flash is slow (a board; not rp2040js's
    // zero-wait flash): two block buffers first. Where RAM is short they cost context (2 KiB:
    // 3 of stories260k's positions). A pass cut between two cores reads in place (the engine
    // streams the one-core pass only).
    let mut flash_stream = None;
    let mut stream_buffer_bytes = 0;
    let one_position = Model::arena_bytes(&model.config(), 1);
    let probe_fits = model_bytes.len() >= 4 * stream::PROBE_WORDS;
    if !in_sram
        && core1.is_none()
        && halves.is_none()
        && free_bytes >= one_position + stream::BUFFER_BYTES + 8
        && probe_fits
        && stream::flash_is_slow(clock, model_bytes.as_ptr() as usize)
    {
        let at = (free_start + 3) & !3;
        // SAFETY: [at, at + BUFFER_BYTES) is word-aligned and inside the free RAM (checked
        // just now), which nothing else uses; nothing else touches DMA channel 0.
        flash_stream = Some(unsafe { FlashStream::new(at) });
        stream_buffer_bytes = stream::BUFFER_BYTES;
        arena_start = at + stream_buffer_bytes;
        free_bytes -= arena_start - free_start;
    }
    // A model left in flash: the weights that fit the RAM beside the arena of its full context
    // are copied to SRAM and read from there (each weight byte is read once a token, so any
    // that fit pay alike; the context is never shortened for them).
    let room = if in_sram {
        0
    } else {
        budget::weight_copy_room(full_arena, free_bytes)
    };
    let at = (arena_start + 3) & !3;
    // SAFETY: [at, at + room) lies inside the free RAM (room is what the full-context arena
    // and 4 bytes of alignment leave; 0 for a model already in SRAM), which nothing else uses.
    let model = unsafe { copy_weights(model, at, room) };
    let model_sram_bytes = model.copied_bytes();
    if model_sram_bytes > 0 {
        let end = at + model_sram_bytes;
        free_bytes -= end - arena_start;
        arena_start = end;
    }
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
    // SAFETY: [arena_start, +arena_bytes) is RAM that no static and no model copy uses and that
    // lies below the stack reserve; nothing else refers to it for the rest of the program.
    let arena = unsafe { core::slice::from_raw_parts_mut(arena_start as *mut u8, arena_bytes) };
    // Both cores share each forward pass when core 1 answered (never in rp2040js).
    let mut session = match Session::new(&model, ctx, arena) {
        Ok(session) => session,
        Err(err) => halt(console, format_args!("session: {err}")),
    };
    if let Some(halves) = &halves {
        session.set_cores(Some(halves));
    } else if let Some(core1) = core1 {
        session.set_cores(Some(core1));
    }
    if let Some(flash_stream) = flash_stream.as_mut() {
        session.set_stream(Some(flash_stream as &mut dyn WeightStream));
    }
    let n_cores = if core1.is_some() { 2 } else { 1 };
    let _ = writeln!(
        console,
        "STARMIND-READY mode={} model_bytes={} ctx={ctx} arena_bytes={arena_bytes} model_in={} \
         model_sram_bytes={model_sram_bytes} stream_buffer_bytes={stream_buffer_bytes} \
         cores={n_cores}\r",
        config.mode().name(),
        model.bytes().len(),
        if in_sram { "sram" } else { "flash" },
    );

    let run = Run {
        ctx,
        model: &model,
        config: &config,
        arena_bytes,
        // Core 1's stack is not ours: the high-water scan starts above it (at the reserve).
        stack_floor: if core1.is_some() {
            core1_stack + cores::CORE1_STACK_BYTES
        } else {
            arena_start + arena_bytes
        },
        in_sram,
        model_sram_bytes,
        stream_buffer_bytes,
        n_cores,
        halves: halves.as_ref(),
        clock,
        clk_sys_hz,
    };
    match config.mode() {
        Mode::Bench | Mode::BenchSplit => run.bench(console, clock, clk_sys_hz, &mut session),
        Mode::Story => run.stories(console, &mut session),
        Mode::Interactive => run.interactive(console, &mut session),
        Mode::Kernels => kernels(console, clock),
    }
}

/// Times every kernel (`starmind_engine::kernel_bench`) on data in the free RAM, one
/// `STARMIND-KERNEL` line each, then `STARMIND-DONE`; the model is not needed.
fn kernels(console: &mut Console, clock: &CycleClock) -> ! {
    let free_bytes = measure::stack_top() - STACK_RESERVE_BYTES - measure::free_ram_start();
    let bytes = kernel_bench::ARENA_BYTES.min(free_bytes);
    // SAFETY: [free_ram_start, +bytes) is RAM that no static uses and that lies below the stack
    // reserve; nothing else refers to it for the rest of the program.
    let arena =
        unsafe { core::slice::from_raw_parts_mut(measure::free_ram_start() as *mut u8, bytes) };
    let cycles = || clock.cycles();
    let mut checks = [None; 24];
    let mut n_checks = 0;
    let ran = kernel_bench::run(
        arena,
        &cycles,
        &mut |c| {
            if let Some(slot) = checks.get_mut(n_checks) {
                *slot = Some(c);
                n_checks += 1;
            }
        },
        &mut |t| {
            let _ = writeln!(
                console,
                "STARMIND-KERNEL v1 name={} rows={} cols={} calls={} cycles={} macs_per_call={}\r",
                t.name, t.rows, t.cols, t.calls, t.cycles, t.macs
            );
        },
    );
    for c in checks.iter().flatten() {
        let _ = writeln!(
            console,
            "STARMIND-KERNEL-CHECK v1 name={} cases={} mismatches={}\r",
            c.name, c.cases, c.mismatches
        );
    }
    if !ran {
        halt(
            console,
            format_args!("kernels need {} bytes of RAM", kernel_bench::ARENA_BYTES),
        );
    }
    let _ = writeln!(console, "STARMIND-DONE\r");
    idle()
}

/// The model `model` (in flash) with the run of its sections that fits `room` bytes of RAM at
/// `at` copied there and read from there ([`Model::copy_range`], [`Model::with_copy`]). Out of
/// line: its locals would otherwise stay in the boot frame, under every forward pass's stack.
///
/// # Safety
/// `[at, at + room)` must be RAM that nothing else uses, now or later; after the copy it is only
/// read, for the rest of the program.
#[inline(never)]
unsafe fn copy_weights(model: Model<'static>, at: usize, room: usize) -> Model<'static> {
    if room == 0 {
        return model;
    }
    let range = model.copy_range(room);
    // SAFETY: range.len() ≤ room (copy_range), inside the caller's RAM.
    let copy = unsafe { core::slice::from_raw_parts_mut(at as *mut u8, range.len()) };
    copy.copy_from_slice(model.bytes().get(range.clone()).unwrap_or(&[]));
    model.with_copy(range.start, copy)
}

struct Run<'r> {
    ctx: usize,
    model: &'r Model<'r>,
    config: &'r RunConfig,
    arena_bytes: usize,
    /// Where the stack high-water scan starts: the first RAM byte past the arena, or past core
    /// 1's stack when it runs.
    stack_floor: usize,
    /// The model was copied to SRAM at boot.
    in_sram: bool,
    /// Bytes of a flash model's weights copied to SRAM at boot (0: none, or all of it).
    model_sram_bytes: usize,
    /// SRAM of the weight stream's two buffers (0: no stream).
    stream_buffer_bytes: usize,
    /// Cores sharing the forward pass (2 when core 1 answered).
    n_cores: u32,
    /// Bench-split: the timed parts of each cut step.
    halves: Option<&'r TimedHalves>,
    clock: &'r CycleClock,
    clk_sys_hz: u32,
}

impl Run<'_> {
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
        let mut timer = BenchTimer::new(clock, self.halves);
        let story = story::tell(
            self.model,
            session,
            self.config.prompt(),
            &self.config.story(),
            &mut prompt,
            &mut timer,
        );
        let decode_cycles = clock.cycles() - timer.decode_start;
        let prompt_len = match story {
            Ok(outcome) => outcome.prompt_tokens,
            Err(err) => halt(console, format_args!("{err}")),
        };
        let ids = &timer.ids[..timer.generated];

        let stack = measure::stack_high_water(self.stack_floor);
        // Bench-split: the decode's cut steps and their parts' cycles (from the timed halves).
        let split = self.halves.map(|h| {
            let (joins, parts, longer) = h.count();
            let (j0, p0, l0) = timer.halves_at_decode;
            (joins - j0, parts - p0, longer - l0)
        });
        let prefill_per_token = timer.prefill_cycles / prompt_len as u64;
        let decode_per_token = decode_cycles / ids.len().max(1) as u64;
        let sample_per_token = timer.sample_cycles / ids.len().max(1) as u64;
        // The result is repeated every two seconds: a host that opens the USB port or attaches
        // to RTT after the run still gets it (the emulator driver stops at the first DONE).
        loop {
            let _ = write!(console, "STARMIND-TEXT ");
            for &id in ids {
                console.write_bytes(self.model.token_bytes(id));
            }
            let _ = writeln!(console, "\r");
            let _ = write!(
                console,
                "STARMIND-BENCH v1 tokens={} prompt_tokens={prompt_len} \
                 prefill_cycles_per_token={prefill_per_token} \
                 decode_cycles_per_token={decode_per_token} \
                 sample_cycles_per_token={sample_per_token} clock_hz={clk_sys_hz} \
                 peak_stack_bytes={stack} arena_bytes={} static_ram_bytes={} model_bytes={} \
                 ctx={} model_in={} model_sram_bytes={} stream_buffer_bytes={} cores={} ",
                ids.len(),
                self.arena_bytes,
                measure::free_ram_start() - 0x2000_0000,
                self.model.bytes().len(),
                self.ctx,
                if self.in_sram { "sram" } else { "flash" },
                self.model_sram_bytes,
                self.stream_buffer_bytes,
                self.n_cores,
            );
            if let Some((joins, parts, longer)) = split {
                let _ = write!(
                    console,
                    "split_joins={joins} split_parts_cycles={parts} \
                     split_longer_cycles={longer} "
                );
            }
            let _ = write!(console, "ids=");
            for (i, id) in ids.iter().enumerate() {
                let _ = write!(console, "{}{id}", if i == 0 { "" } else { "," });
            }
            let _ = writeln!(console, "\r\nSTARMIND-DONE\r");
            let until = clock.cycles() + 2 * clk_sys_hz as u64;
            while clock.cycles() < until {}
        }
    }

    /// Streams one story from `prompt`; it stops at `<|endoftext|>`, the token limit, a full
    /// context or Ctrl-C, then prints one `STARMIND-STORY` line (tokens, decode cycles, why it
    /// ended) from which the host (`starmind chat`) tells the story's speed.
    fn story(&self, console: &mut Console, session: &mut Session, prompt: &[u8], seed: u64) {
        let mut config: StoryConfig = self.config.story();
        config.sampler.seed = seed;
        let mut ids = [0u32; MAX_PROMPT_TOKENS];
        let mut stream = Stream {
            console,
            model: self.model,
            clock: self.clock,
            decode_start: self.clock.cycles(),
        };
        let told = story::tell(self.model, session, prompt, &config, &mut ids, &mut stream);
        let decode_cycles = self.clock.cycles() - stream.decode_start;
        let console = stream.console;
        let (tokens, prompt_tokens, end) = match told {
            Ok(outcome) => (
                outcome.generated,
                outcome.prompt_tokens,
                end_name(outcome.end),
            ),
            Err(err) => {
                let _ = write!(console, "\r\n");
                error(console, format_args!("{err}"));
                (0, 0, "error")
            }
        };
        let _ = write!(
            console,
            "\r\nSTARMIND-STORY tokens={tokens} prompt_tokens={prompt_tokens} \
             decode_cycles={decode_cycles} clock_hz={} end={end}\r\n\r\n",
            self.clk_sys_hz
        );
    }

    /// A new story after every other, seeds counting up from the configured one.
    fn stories(&self, console: &mut Console, session: &mut Session) -> ! {
        let mut seed = self.config.sampler().seed;
        loop {
            console.write_bytes(self.config.prompt());
            self.story(console, session, self.config.prompt(), seed);
            seed = seed.wrapping_add(1);
        }
    }

    /// Reads a prompt line (UART or USB), tells a story from it, repeats.
    fn interactive(&self, console: &mut Console, session: &mut Session) -> ! {
        let mut seed = self.config.sampler().seed;
        let mut line = [0u8; MAX_PROMPT_BYTES];
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

/// The bench's view of the story: cycle counts of the prefill and of sampling, and the ids.
/// One decode step is sample + forward pass of the sampled token.
struct BenchTimer<'c> {
    clock: &'c CycleClock,
    prefill_start: u64,
    prefill_cycles: u64,
    decode_start: u64,
    sample_start: u64,
    sample_cycles: u64,
    ids: [u32; MAX_BENCH_TOKENS],
    generated: usize,
    /// Bench-split: the timed halves, and their counts when the decode started.
    halves: Option<&'c TimedHalves>,
    halves_at_decode: cores::HalvesCount,
}

impl<'c> BenchTimer<'c> {
    fn new(clock: &'c CycleClock, halves: Option<&'c TimedHalves>) -> BenchTimer<'c> {
        BenchTimer {
            clock,
            halves,
            halves_at_decode: (0, 0, 0),
            prefill_start: 0,
            prefill_cycles: 0,
            decode_start: 0,
            sample_start: 0,
            sample_cycles: 0,
            ids: [0; MAX_BENCH_TOKENS],
            generated: 0,
        }
    }
}

impl Listener for BenchTimer<'_> {
    fn prefill_starts(&mut self) {
        self.prefill_start = self.clock.cycles();
    }

    fn prefilled(&mut self, _prompt_tokens: usize) {
        self.decode_start = self.clock.cycles();
        self.prefill_cycles = self.decode_start - self.prefill_start;
        if let Some(halves) = self.halves {
            self.halves_at_decode = halves.count();
        }
    }

    fn sample_starts(&mut self) {
        self.sample_start = self.clock.cycles();
    }

    fn token(&mut self, id: u32) -> ControlFlow<()> {
        self.sample_cycles += self.clock.cycles() - self.sample_start;
        match self.ids.get_mut(self.generated) {
            Some(slot) => {
                *slot = id;
                self.generated += 1;
                ControlFlow::Continue(())
            }
            None => ControlFlow::Break(()),
        }
    }
}

/// A story streamed to the console as it is drawn. Between tokens it reads one received byte:
/// Ctrl-C ends the story; anything else typed meanwhile is dropped.
struct Stream<'c, 'm> {
    console: &'c mut Console,
    model: &'m Model<'m>,
    clock: &'c CycleClock,
    /// When the prompt's prefill ended (the first sample starts).
    decode_start: u64,
}

impl Listener for Stream<'_, '_> {
    fn prefilled(&mut self, _prompt_tokens: usize) {
        self.decode_start = self.clock.cycles();
    }

    fn token(&mut self, id: u32) -> ControlFlow<()> {
        self.console.write_bytes(self.model.token_bytes(id));
        match self.console.read_byte() {
            Some(STOP_BYTE) => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    }
}

/// The `end=` word of a `STARMIND-STORY` line.
fn end_name(end: End) -> &'static str {
    match end {
        End::TokenLimit => "tokens",
        End::EndOfText => "end_of_text",
        End::ContextFull => "context_full",
        End::Stopped => "stopped",
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
