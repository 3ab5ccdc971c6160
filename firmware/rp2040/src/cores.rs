//! The second core, and the bench mode that times what it would do.
//!
//! [`launch_core1`] starts core 1 with the RP2040 datasheet's launch sequence (§2.8.2: the
//! bootrom on core 1 echoes each word of `0, 0, 1, vector table, stack pointer, entry` sent
//! through the SIO FIFO), every wait bounded, and gives up (the firmware then runs on core 0
//! alone, uncut) when core 1 does not answer, or when the FIFO is not there at all: rp2040js
//! emulates core 0 only and reads every unknown SIO register, the FIFO's status among them, as
//! all ones (a real FIFO_ST has four bits).
//!
//! [`Core1`] is the engine's [`Cores`] on both cores: each cut step sends the address of its
//! second part through the FIFO, runs the first part here, and waits for core 1's answer.
//!
//! [`TimedHalves`] (bench mode `bench-split`) runs both parts on core 0 one after the other,
//! timing each with SysTick, so the emulator can tell what two cores would take
//! (`starmind bench --emulator`: the dual-core estimate). Normal runs never use it.

use core::cell::Cell;

use starmind_engine::cores::{Cores, Part};

const SIO_FIFO_ST: *mut u32 = 0xD000_0050 as *mut u32;
const SIO_FIFO_WR: *mut u32 = 0xD000_0054 as *mut u32;
const SIO_FIFO_RD: *mut u32 = 0xD000_0058 as *mut u32;
/// FIFO_ST: a word can be read (VLD), a word can be written (RDY); bits 2 and 3 are the sticky
/// error flags, and no other bit exists.
const FIFO_VLD: u32 = 1;
const FIFO_RDY: u32 = 2;
const FIFO_ST_BITS: u32 = 0xF;
/// PSM FRCE_OFF (and its atomic set / clear aliases): bit 16 holds core 1 in reset.
const PSM_FRCE_OFF: *mut u32 = 0x4001_0004 as *mut u32;
const PSM_FRCE_OFF_SET: *mut u32 = 0x4001_2004 as *mut u32;
const PSM_FRCE_OFF_CLR: *mut u32 = 0x4001_3004 as *mut u32;
const PROC1: u32 = 1 << 16;
/// The VTOR register of this core (core 1 starts with the same vector table).
const PPB_VTOR: *const u32 = 0xE000_ED08 as *const u32;
/// Polls of a FIFO or PSM status before a wait is given up (core 1's bootrom answers each
/// word within a few microseconds; this is milliseconds).
const WAIT_POLLS: u32 = 200_000;
/// Launch-sequence words that may come back wrong before core 1 counts as absent.
const LAUNCH_TRIES: u32 = 16;
/// Core 1's answer when a part is done.
const DONE: u32 = 0xD0E5_0001;

/// Core 1's stack: the RAM just below core 0's 16 KiB stack reserve, taken from the free RAM
/// (before the arena is placed) only when core 1 answers the launch (app.rs).
pub const CORE1_STACK_BYTES: usize = 4096;

fn fifo_status() -> u32 {
    // SAFETY: a read of this core's SIO FIFO status register.
    unsafe { SIO_FIFO_ST.read_volatile() }
}

/// Writes `word` to core 1 once the FIFO has room; false when it never had.
fn push(word: u32) -> bool {
    for _ in 0..WAIT_POLLS {
        if fifo_status() & FIFO_RDY != 0 {
            // SAFETY: a write to this core's SIO FIFO (to the other core).
            unsafe { SIO_FIFO_WR.write_volatile(word) };
            cortex_m::asm::sev();
            return true;
        }
    }
    false
}

/// The next word from the other core; `None` when none came in time.
fn pop() -> Option<u32> {
    for _ in 0..WAIT_POLLS {
        if fifo_status() & FIFO_VLD != 0 {
            // SAFETY: a read of this core's SIO FIFO (from the other core).
            return Some(unsafe { SIO_FIFO_RD.read_volatile() });
        }
    }
    None
}

/// The next word from the other core, however long it takes (core 1's job loop; core 0
/// waiting for a part that core 1 has started).
#[inline(always)]
fn pop_blocking() -> u32 {
    while fifo_status() & FIFO_VLD == 0 {}
    // SAFETY: as in `pop`.
    unsafe { SIO_FIFO_RD.read_volatile() }
}

fn drain() {
    while fifo_status() & FIFO_VLD != 0 {
        // SAFETY: as in `pop`; the word is dropped.
        let _ = unsafe { SIO_FIFO_RD.read_volatile() };
    }
}

/// The engine's [`Cores`] with core 1 running: only [`launch_core1`] makes one.
pub struct Core1 {
    _launched: (),
}

static CORE1: Core1 = Core1 { _launched: () };

/// One part as core 1 receives it: the address of this (wide) pointer goes through the FIFO.
type Job = *mut (dyn FnMut() + Send + 'static);

impl Cores for Core1 {
    #[cfg_attr(target_arch = "arm", link_section = ".data.ramfunc")]
    fn join(&self, first: Part, second: Part) {
        let job: *mut (dyn FnMut() + Send + '_) = second;
        // SAFETY: only the lifetime changes; core 1 runs the part before this function
        // returns (it waits for core 1's answer below), so the part outlives its use.
        let job: Job = unsafe { core::mem::transmute(job) };
        let at = (&raw const job) as u32;
        // `job` is in memory before core 1 can read it (DMB: a compiler and a bus barrier).
        cortex_m::asm::dmb();
        // Core 1 waits for jobs only: the FIFO has room.
        // SAFETY: a write to this core's SIO FIFO.
        unsafe { SIO_FIFO_WR.write_volatile(at) };
        first();
        let _ = pop_blocking();
        // Core 1's writes are seen before anything here reads them.
        cortex_m::asm::dmb();
    }
}

/// Core 1's program: run each part whose address comes through the FIFO, answer [`DONE`].
#[cfg_attr(target_arch = "arm", link_section = ".data.ramfunc")]
extern "C" fn core1_jobs() -> ! {
    loop {
        let job = pop_blocking() as *const Job;
        cortex_m::asm::dmb();
        // SAFETY: core 0 sent the address of a live `Job` on its stack and waits for our
        // answer before that frame ends; the part touches only what core 0's part does not.
        unsafe { (**job)() };
        cortex_m::asm::dmb();
        // SAFETY: a write to core 1's SIO FIFO (core 0 waits for it, so there is room).
        unsafe { SIO_FIFO_WR.write_volatile(DONE) };
    }
}

/// Starts core 1 on [`core1_jobs`] with its stack at `stack_bottom..+CORE1_STACK_BYTES`;
/// `None` (one core) when the FIFO is not a real one or core 1 does not answer in time.
///
/// # Safety
/// `stack_bottom..+CORE1_STACK_BYTES` is RAM that nothing else uses for the rest of the run.
pub unsafe fn launch_core1(stack_bottom: usize) -> Option<&'static Core1> {
    if fifo_status() & !FIFO_ST_BITS != 0 {
        return None; // no SIO FIFO (rp2040js)
    }
    // Reset core 1, so that its bootrom waits for the sequence.
    // SAFETY: PSM register accesses; core 1 runs nothing of ours yet.
    unsafe {
        PSM_FRCE_OFF_SET.write_volatile(PROC1);
        let mut polls = 0;
        while PSM_FRCE_OFF.read_volatile() & PROC1 == 0 {
            polls += 1;
            if polls > WAIT_POLLS {
                return None;
            }
        }
        PSM_FRCE_OFF_CLR.write_volatile(PROC1);
    }
    let stack_top = (stack_bottom + CORE1_STACK_BYTES) & !7;
    // SAFETY: a read of this core's VTOR.
    let vector_table = unsafe { PPB_VTOR.read_volatile() };
    let entry = core1_jobs as extern "C" fn() -> ! as usize as u32;
    let sequence = [0, 0, 1, vector_table, stack_top as u32, entry];
    let (mut at, mut wrong) = (0, 0);
    while at < sequence.len() {
        let word = sequence[at];
        if word == 0 {
            drain();
            cortex_m::asm::sev();
        }
        if !push(word) {
            return None;
        }
        match pop() {
            Some(echo) if echo == word => at += 1,
            Some(_) => {
                at = 0;
                wrong += 1;
                if wrong > LAUNCH_TRIES {
                    return None;
                }
            }
            None => return None,
        }
    }
    Some(&CORE1)
}

/// SysTick's current value (counts down at clk_sys; 24 bits).
#[inline(always)]
fn systick() -> u32 {
    // SAFETY: a read of SYST_CVR.
    unsafe { (0xE000_E018 as *const u32).read_volatile() }
}

/// Both parts of each cut step on core 0, one after the other, each timed with SysTick
/// (bench mode `bench-split`): what core 1 would take off core 0.
pub struct TimedHalves {
    /// Cut steps so far.
    joins: Cell<u32>,
    /// Σ (first part + second part) cycles.
    parts_cycles: Cell<u64>,
    /// Σ max(first part, second part) cycles.
    longer_cycles: Cell<u64>,
}

// SAFETY: only core 0 ever touches it (the bench mode does not launch core 1).
unsafe impl Sync for TimedHalves {}

/// What [`TimedHalves`] counted: (joins, Σ both parts, Σ the longer part).
pub type HalvesCount = (u32, u64, u64);

impl TimedHalves {
    /// Starts SysTick (free-running from 2²⁴ − 1 at clk_sys) and counts from zero.
    pub fn new() -> TimedHalves {
        // SAFETY: SysTick configuration (RVR, CVR, CSR: enable, processor clock, no
        // interrupt); nothing else uses SysTick.
        unsafe {
            (0xE000_E014 as *mut u32).write_volatile(0x00FF_FFFF);
            (0xE000_E018 as *mut u32).write_volatile(0);
            (0xE000_E010 as *mut u32).write_volatile(0b101);
        }
        TimedHalves {
            joins: Cell::new(0),
            parts_cycles: Cell::new(0),
            longer_cycles: Cell::new(0),
        }
    }

    /// The counts so far.
    pub fn count(&self) -> HalvesCount {
        (
            self.joins.get(),
            self.parts_cycles.get(),
            self.longer_cycles.get(),
        )
    }
}

impl Cores for TimedHalves {
    #[cfg_attr(target_arch = "arm", link_section = ".data.ramfunc")]
    fn join(&self, first: Part, second: Part) {
        let start = systick();
        first();
        let between = systick();
        second();
        let end = systick();
        // SysTick counts down; one part is far below 2²⁴ cycles.
        let a = start.wrapping_sub(between) & 0x00FF_FFFF;
        let b = between.wrapping_sub(end) & 0x00FF_FFFF;
        self.joins.set(self.joins.get() + 1);
        self.parts_cycles
            .set(self.parts_cycles.get() + (a + b) as u64);
        self.longer_cycles
            .set(self.longer_cycles.get() + a.max(b) as u64);
    }
}
