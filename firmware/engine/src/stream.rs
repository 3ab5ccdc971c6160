//! Weights fetched while the arithmetic runs: a matrix left in flash is multiplied a block of
//! rows at a time from RAM, each block copied in the background while the one before it is
//! multiplied.
//!
//! On the RP2040 every weight byte the core reads from flash costs it a stalled XIP cache line
//! fill (~7 cycles a byte at QSPI clock divider 2) on top of the ~4 cycles of arithmetic. A DMA
//! channel can do the reading instead, through the same cache, into an SRAM buffer, while the
//! core multiplies the previous block from the other buffer: the flash then works all the time
//! and the core's arithmetic hides behind it. [`crate::forward`] multiplies a matrix block by
//! block; while it multiplies the last one, the first block of the next matrix of the pass is
//! copied ahead, so that one starts with its first block in RAM. A matrix that follows one read
//! in place has nothing copied ahead: it reads its first [`StreamPlan::lead_bytes`] in place
//! while its first block arrives. Every row is computed by the same kernel from the same bytes
//! either way, so a streamed forward pass gives the same bits as one that reads everything in
//! place.
//!
//! A [`crate::Session`] without a stream (the default; the host, and a model in SRAM) reads
//! every weight in place.

/// How a [`WeightStream`] wants a matrix cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPlan {
    /// The most bytes one streamed block holds (each of the two buffers).
    pub block_bytes: usize,
    /// Bytes at the start of a matrix read in place while its first block arrives, where that
    /// block was not copied ahead (rounded down to whole units of rows).
    pub lead_bytes: usize,
}

/// Two RAM buffers that a background copy fills (the firmware: a DMA channel reading flash;
/// tests: [`CopyAtWait`]).
pub trait WeightStream {
    /// The cut this stream wants for `weights` (in units of `unit_bytes`: a row quad or a row,
    /// the blocks and runs are whole units), or `None` where they are not worth streaming
    /// (already in RAM, too small, or not word-aligned). Then they are read in place.
    fn plan(&self, weights: &[u8], unit_bytes: usize) -> Option<StreamPlan>;

    /// Starts copying `src` (at most `block_bytes`, a run of whole units inside `weights` that
    /// [`WeightStream::plan`] planned) into buffer `slot` (0 or 1) and returns at once. Called
    /// only when the previous copy was waited for, so one copy runs at a time.
    fn start(&mut self, slot: usize, src: &[u8]);

    /// Waits until the copy into `slot` has finished.
    fn wait(&mut self, slot: usize);

    /// The first `len` bytes of buffer `slot`: what the last copy into it brought, once
    /// [`WeightStream::wait`]ed for. Its bytes are not written while this borrow lives: a copy
    /// into `slot` starts only after the block read from it was multiplied.
    fn block(&self, slot: usize, len: usize) -> &[u8];
}

/// A test stream that proves the schedule: `start` fills the buffer with a pattern no model
/// holds and only `wait` moves the bytes in, so a block read before its wait (or a buffer
/// restarted while in use) changes the output.
#[cfg(feature = "std")]
#[derive(Debug, Clone)]
pub struct CopyAtWait {
    plan: StreamPlan,
    /// The bytes of the copy in flight into each slot.
    pending: [Option<std::vec::Vec<u8>>; 2],
    buffers: [std::vec::Vec<u8>; 2],
    /// Every `start`: (slot, length), for tests that check the cut.
    pub starts: std::vec::Vec<(usize, usize)>,
}

#[cfg(feature = "std")]
impl CopyAtWait {
    /// A stream with this cut, for every matrix.
    pub fn new(plan: StreamPlan) -> CopyAtWait {
        CopyAtWait {
            plan,
            pending: [None, None],
            buffers: [
                std::vec![0; plan.block_bytes],
                std::vec![0; plan.block_bytes],
            ],
            starts: std::vec::Vec::new(),
        }
    }
}

#[cfg(feature = "std")]
impl WeightStream for CopyAtWait {
    fn plan(&self, _weights: &[u8], _unit_bytes: usize) -> Option<StreamPlan> {
        Some(self.plan)
    }

    fn start(&mut self, slot: usize, src: &[u8]) {
        assert!(
            self.pending.iter().all(Option::is_none),
            "a copy started while another runs"
        );
        assert!(src.len() <= self.plan.block_bytes, "block too long");
        self.buffers[slot].fill(0xA5);
        self.pending[slot] = Some(src.to_vec());
        self.starts.push((slot, src.len()));
    }

    fn wait(&mut self, slot: usize) {
        let bytes = self.pending[slot].take().expect("wait without a start");
        self.buffers[slot][..bytes.len()].copy_from_slice(&bytes);
    }

    fn block(&self, slot: usize, len: usize) -> &[u8] {
        assert!(self.pending[slot].is_none(), "block read before its wait");
        &self.buffers[slot][..len]
    }
}
