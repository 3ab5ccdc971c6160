//! Cycle counting and stack high-water marks.
//!
//! The Cortex-M0+ has no DWT cycle counter. We read the RP2040's 64-bit 1 MHz TIMER and scale it
//! by clk_sys: on hardware that is wall time in core cycles (flash stalls included), in rp2040js
//! the driver advances the clock by 8 ns per core cycle, so both agree with `core.cycles` to
//! within the 1 µs (125 cycle) resolution.

use rp2040_hal as hal;

/// Cycles since boot, from the TIMER.
pub struct CycleClock {
    timer: hal::Timer,
    cycles_per_micro: u64,
}

impl CycleClock {
    /// `clk_sys_hz` must be a whole number of MHz (125 MHz here).
    pub fn new(timer: hal::Timer, clk_sys_hz: u32) -> CycleClock {
        CycleClock {
            timer,
            cycles_per_micro: (clk_sys_hz / 1_000_000) as u64,
        }
    }

    /// Core cycles elapsed since the TIMER started.
    pub fn cycles(&self) -> u64 {
        self.timer.get_counter().ticks() * self.cycles_per_micro
    }
}

const PAINT: u32 = 0xC5C5_C5C5;

extern "C" {
    // cortex-m-rt: end of .bss/.uninit (first free RAM byte) and the initial stack pointer.
    static mut __sheap: u32;
    static _stack_start: u32;
}

/// First free RAM byte after static data.
pub fn free_ram_start() -> usize {
    (&raw const __sheap) as usize
}

/// Top of RAM, where the stack starts.
pub fn stack_top() -> usize {
    (&raw const _stack_start) as usize
}

/// Fills free RAM from `free_ram_start()` up to just below the current stack frame with a
/// pattern, so that [`stack_high_water`] can later find how deep the stack went.
#[inline(never)]
pub fn paint_stack() {
    let marker = 0u32;
    let below_frame = (&raw const marker) as usize - 256;
    let mut addr = free_ram_start();
    while addr < below_frame {
        // SAFETY: [free_ram_start, below_frame) is unused RAM: past all statics and below
        // everything the stack holds now.
        unsafe { core::ptr::write_volatile(addr as *mut u32, PAINT) };
        addr += 4;
    }
}

/// Deepest stack use in bytes: scans up from `floor` (the end of the arena) for the first word
/// that no longer holds the paint.
pub fn stack_high_water(floor: usize) -> usize {
    let mut addr = (floor + 3) & !3;
    let top = stack_top();
    // SAFETY: reads of RAM between the arena and the top of the stack.
    while addr < top && unsafe { core::ptr::read_volatile(addr as *const u32) } == PAINT {
        addr += 4;
    }
    top - addr
}
