//! The engine's [`WeightStream`] on the RP2040: DMA channel 0 copies a block of weights from
//! flash, through the XIP cache, into one of two SRAM buffers while the core multiplies the
//! other (datasheet §2.5 DMA, §2.6.3 XIP). The engine decides the cut
//! ([`starmind_engine::stream`]); this file only moves words.
//!
//! Why the cached alias and not the XIP streaming FIFO (§2.6.3.4): the FIFO reads one word per
//! serial transfer (~40 cycles a word at QSPI clock divider 2, 10 a byte), the cache a line of
//! 8 bytes per transfer (~56 cycles, 7 a byte); the FIFO exists so that a stalled read does not
//! hold up other DMA channels, and there are none here.
//!
//! Streaming pays only where flash is slow: [`flash_is_slow`] times uncached flash reads at
//! boot (on a board ~50 cycles a word; rp2040js's zero-wait flash answers like SRAM, and then
//! no stream is made: there the cut would only add its ~1,000 cycles a block). Every wait is bounded: a copy that does not finish is aborted, its block
//! copied by the core instead (the same bytes, so the same output), and the DMA is not used
//! again.

use core::cell::UnsafeCell;
use core::sync::atomic::{compiler_fence, Ordering};

use starmind_engine::budget;
use starmind_engine::stream::{StreamPlan, WeightStream};

use crate::measure::CycleClock;

const RESETS_RESET_CLR: *mut u32 = 0x4000_F000 as *mut u32;
const RESETS_RESET_DONE: *const u32 = 0x4000_C008 as *const u32;
const RESET_DMA: u32 = 1 << 2;
const DMA_CH0_READ_ADDR: *mut u32 = 0x5000_0000 as *mut u32;
const DMA_CH0_WRITE_ADDR: *mut u32 = 0x5000_0004 as *mut u32;
const DMA_CH0_TRANS_COUNT: *mut u32 = 0x5000_0008 as *mut u32;
const DMA_CH0_CTRL_TRIG: *mut u32 = 0x5000_000C as *mut u32;
const DMA_CHAN_ABORT: *mut u32 = 0x5000_0444 as *mut u32;
const DMA_BUSY: u32 = 1 << 24;
/// CTRL: enabled, 32-bit transfers, read and write addresses incremented, chained to itself
/// (no chain), unpaced (TREQ 0x3f), no interrupt.
const DMA_CTRL: u32 = 1 | (2 << 2) | (1 << 4) | (1 << 5) | (0x3f << 15) | (1 << 21);
/// The SIO's CPUID register: 0 on core 0.
const SIO_CPUID: *const u32 = 0xD000_0000 as *const u32;
/// The XIP window: what lies here is read through the QSPI flash.
const XIP_START: usize = 0x1000_0000;
const XIP_END: usize = 0x1400_0000;
/// The uncached, non-allocating alias of flash.
const XIP_NOCACHE_NOALLOC: usize = 0x1300_0000;
/// Polls of the DMA's busy bit before a copy is given up: a block of [`BLOCK_BYTES`] arrives in
/// ~15,000 cycles at QSPI clock divider 2; this is a hundred times that.
const WAIT_POLLS: u32 = 500_000;
/// Uncached words read by [`flash_is_slow`] (~2 µs of zero-wait reads, the clock's resolution
/// is 1 µs), and the cycles a word above which flash counts as slow (SRAM: ~3 with the loop; a
/// board's QSPI flash: ~50).
pub const PROBE_WORDS: usize = 128;
const SLOW_WORD_CYCLES: u64 = 12;

/// Each of the two buffers: ~4,200 cycles of arithmetic a block at ~4 cycles a weight byte and
/// ~7,300 of flash, against ~1,000 to set the copy up and cut the matrix. stories260k, decode
/// cycles a token with the emulator's XIP cache model (bench -n 20): blocks of 512, 1,024 and
/// 2,048 bytes give 2.97M, 2.73M and 2.72M (1,024: 2 KiB of RAM for 0.5 % more cycles).
const BLOCK_BYTES: usize = budget::STREAM_BLOCK_BYTES;
/// Read in place at the start of a matrix whose first block was not copied ahead (one that
/// follows a matrix read in place), while that block arrives. Leads of 0 to 1,024 bytes give
/// stories260k the same decode cycles: there every matrix follows a streamed one.
const LEAD_BYTES: usize = 512;
/// SRAM the two buffers take.
pub const BUFFER_BYTES: usize = budget::STREAM_BUFFER_BYTES;

/// Whether reading flash costs more than reading SRAM: times [`PROBE_WORDS`] reads of the
/// uncached alias from `probe` (the start of a run of that many words in flash).
pub fn flash_is_slow(clock: &CycleClock, probe: usize) -> bool {
    let at = XIP_NOCACHE_NOALLOC | (probe & 0x00FF_FFFC);
    let mut sum = 0u32;
    let start = clock.cycles();
    for i in 0..PROBE_WORDS {
        // SAFETY: a read of flash (the uncached alias of a word the caller says is in flash).
        sum = sum.wrapping_add(unsafe { ((at + 4 * i) as *const u32).read_volatile() });
    }
    let cycles = clock.cycles() - start;
    core::hint::black_box(sum);
    cycles > SLOW_WORD_CYCLES * PROBE_WORDS as u64
}

/// The two buffers and the state of the copy.
pub struct FlashStream {
    buffers: &'static UnsafeCell<[[u32; BLOCK_BYTES / 4]; 2]>,
    /// The source of the copy in flight (start, length), until waited for: the model's bytes,
    /// which outlive the stream.
    pending: Option<(*const u8, usize)>,
    /// False once a copy did not finish: from then on the core copies each block itself.
    working: bool,
}

impl FlashStream {
    /// Takes DMA channel 0, with buffers at `at` ([`BUFFER_BYTES`], word aligned).
    ///
    /// # Safety
    /// `[at, at + BUFFER_BYTES)` must be word-aligned RAM that nothing else uses, now or
    /// later; nothing else may use DMA channel 0.
    pub unsafe fn new(at: usize) -> FlashStream {
        // SAFETY: the caller gives us this RAM, aligned; UnsafeCell: the DMA writes one buffer
        // while the engine holds a shared borrow of the other.
        let buffers = unsafe { &*(at as *const UnsafeCell<[[u32; BLOCK_BYTES / 4]; 2]>) };
        // SAFETY: the RESETS atomic-clear alias takes the DMA out of reset (other bits kept);
        // RESET_DONE is read only.
        let ready = unsafe {
            RESETS_RESET_CLR.write_volatile(RESET_DMA);
            (0..WAIT_POLLS).any(|_| RESETS_RESET_DONE.read_volatile() & RESET_DMA != 0)
        };
        FlashStream {
            buffers,
            pending: None,
            working: ready,
        }
    }

    #[inline(always)]
    fn buffer_ptr(&self, slot: usize) -> *mut u32 {
        // SAFETY: slot & 1 is inside the two buffers.
        unsafe { (self.buffers.get() as *mut [u32; BLOCK_BYTES / 4]).add(slot & 1) as *mut u32 }
    }
}

// In SRAM with the engine's hot code (.data.ramfunc): run from flash, each call would fetch its
// instructions through the XIP port the DMA keeps busy.
impl WeightStream for FlashStream {
    #[link_section = ".data.ramfunc"]
    fn plan(&self, weights: &[u8], unit_bytes: usize) -> Option<StreamPlan> {
        let at = weights.as_ptr() as usize;
        // SAFETY: a read of this core's SIO CPUID register. Core 1 never streams (one channel,
        // and the engine streams only the one-core pass).
        let core = unsafe { SIO_CPUID.read_volatile() };
        let worth = core == 0
            && (XIP_START..XIP_END).contains(&at)
            && at.is_multiple_of(4)
            && unit_bytes.is_multiple_of(4)
            && weights.len() > LEAD_BYTES;
        worth.then_some(StreamPlan {
            block_bytes: BLOCK_BYTES,
            lead_bytes: LEAD_BYTES,
        })
    }

    #[link_section = ".data.ramfunc"]
    fn start(&mut self, slot: usize, src: &[u8]) {
        let len = src.len().min(BLOCK_BYTES);
        self.pending = Some((src.as_ptr(), len));
        if !self.working {
            return;
        }
        // The buffer's earlier block is multiplied: the DMA may write it now.
        compiler_fence(Ordering::SeqCst);
        // SAFETY: DMA channel 0 is ours; it reads ceil(len/4) words of flash (a block of whole
        // units, word-aligned: `plan`; at most 3 bytes past its end, still flash) and writes
        // them into buffer `slot` (BLOCK_BYTES), which no borrow reads until `wait`.
        unsafe {
            DMA_CH0_READ_ADDR.write_volatile(src.as_ptr() as u32);
            DMA_CH0_WRITE_ADDR.write_volatile(self.buffer_ptr(slot) as u32);
            DMA_CH0_TRANS_COUNT.write_volatile(len.div_ceil(4) as u32);
            DMA_CH0_CTRL_TRIG.write_volatile(DMA_CTRL);
        }
    }

    #[link_section = ".data.ramfunc"]
    fn wait(&mut self, slot: usize) {
        let Some((src, len)) = self.pending.take() else {
            return;
        };
        if self.working {
            for _ in 0..WAIT_POLLS {
                // SAFETY: a read of DMA channel 0's status.
                if unsafe { DMA_CH0_CTRL_TRIG.read_volatile() } & DMA_BUSY == 0 {
                    compiler_fence(Ordering::SeqCst);
                    return;
                }
            }
            // SAFETY: aborts DMA channel 0, ours.
            unsafe { DMA_CHAN_ABORT.write_volatile(1) };
            self.working = false;
        }
        // No DMA (or it stalled): the core copies the block, the same bytes.
        // SAFETY: `src..src + len` is the block `start` was given (inside the model, which
        // outlives the session); the buffer holds BLOCK_BYTES ≥ len and is not borrowed.
        unsafe {
            core::ptr::copy_nonoverlapping(src, self.buffer_ptr(slot) as *mut u8, len);
        }
    }

    #[link_section = ".data.ramfunc"]
    fn block(&self, slot: usize, len: usize) -> &[u8] {
        // SAFETY: buffer `slot` was waited for; no copy writes it until the engine's next
        // `start` into it, which comes after this borrow ends.
        unsafe {
            core::slice::from_raw_parts(self.buffer_ptr(slot) as *const u8, len.min(BLOCK_BYTES))
        }
    }
}
