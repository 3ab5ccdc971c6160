// A model of the RP2040's XIP cache (datasheet §2.6.3): 16 KiB, 2-way set associative, 8-byte
// lines, so 1024 sets of two lines. rp2040js reads flash with no wait states; this model counts
// hits and misses of every flash access (instruction fetch and data) and says how many cycles a
// board would stall on them.
//
// Assumptions (stated in the bench report):
// - a hit costs nothing beyond what rp2040js already charges (the datasheet's 1-cycle hit);
// - a miss stalls the core for `missCycles` (default 56 = 28 QSPI clocks at clock divider 2:
//   8 for the 24-bit address + mode byte and 4 wait cycles of boot2's continuous quad read, 16 for
//   the 8-byte line), with no overlap of fetch and compute and no streaming prefetch;
// - replacement is LRU per set (the hardware's is undocumented beyond "2-way");
// - 0x10…/0x11… (XIP, XIP_NOALLOC) look the cache up, only 0x10… allocates on a miss;
//   0x12…/0x13… (NOCACHE) always go to flash; SRAM, ROM and peripherals are not affected.
//
// DMA reads of flash (XipPort, attachDmaTiming) go through the same cache and the same QSPI
// port as the core's: a DMA read that misses fills the line (missCycles) once the port is free,
// one that hits takes a bus cycle; a core access to flash, hit or miss, waits while a line fill
// for the DMA is in progress (the XIP block serves one bus master at a time), and a DMA read
// waits for the core's fill likewise. rp2040js alone moves DMA data in zero time; SRAM
// contention between the DMA and the core, and paced (DREQ) channels, are not modelled.

export const XIP_LINE_BYTES = 8;
export const XIP_WAYS = 2;
export const XIP_SETS = 1024; // 16 KiB / (2 ways · 8 bytes)
/** Default miss penalty in clk_sys cycles (QSPI clock divider 2, see above). */
export const DEFAULT_MISS_CYCLES = 56;

const FLASH_BASE = 0x10000000;
const XIP_WINDOW_END = 0x14000000;

export class XipCache {
  constructor(missCycles = DEFAULT_MISS_CYCLES) {
    this.missCycles = missCycles;
    // Tag of each way, -1 = invalid; `lru[set]` is the way to evict next.
    this.tags = new Int32Array(XIP_SETS * XIP_WAYS).fill(-1);
    this.lru = new Uint8Array(XIP_SETS);
    this.hits = 0;
    this.misses = 0;
    this.stallCycles = 0;
    this.dmaHits = 0;
    this.dmaMisses = 0;
  }

  /**
   * Accounts one read of `address` (by the core, or by the DMA when `dma`); returns the cycles
   * of its line fill (0 for a hit, or outside flash).
   */
  access(address, dma = false) {
    address >>>= 0;
    if (!isXip(address)) return 0;
    const alias = (address >>> 24) & 3; // 0 XIP, 1 NOALLOC, 2 NOCACHE, 3 NOCACHE_NOALLOC
    const line = (address & 0xffffff) >>> 3;
    if (alias >= 2) return this.miss(dma);
    const set = line & (XIP_SETS - 1);
    const tag = line >>> 10;
    const base = set * XIP_WAYS;
    if (this.tags[base] === tag) {
      this.lru[set] = 1;
      return this.hit(dma);
    }
    if (this.tags[base + 1] === tag) {
      this.lru[set] = 0;
      return this.hit(dma);
    }
    if (alias === 0) {
      const way = this.lru[set];
      this.tags[base + way] = tag;
      this.lru[set] = way ^ 1;
    }
    return this.miss(dma);
  }

  hit(dma) {
    if (dma) this.dmaHits++;
    else this.hits++;
    return 0;
  }

  miss(dma) {
    if (dma) {
      this.dmaMisses++;
    } else {
      this.misses++;
      this.stallCycles += this.missCycles;
    }
    return this.missCycles;
  }
}

/**
 * The XIP block's one QSPI port, shared by the core and the DMA (see the assumptions above).
 * Times are cycles on the run's clock.
 */
export class XipPort {
  constructor(cache) {
    this.cache = cache;
    // The cycle at which the line fill in progress ends.
    this.busyUntil = 0;
    // Cycles the core waited for the DMA's fills.
    this.coreWaitCycles = 0;
  }

  /** A core read of `address` at cycle `at`: the cycles it stalls (waiting, then its fill). */
  coreAccess(address, at) {
    if (!isXip(address)) return 0;
    const wait = Math.max(0, this.busyUntil - at);
    const fill = this.cache.access(address);
    if (fill) this.busyUntil = at + wait + fill;
    this.coreWaitCycles += wait;
    return wait + fill;
  }

  /** A DMA read of `address` at cycle `at`: the cycles until it has its data (≥ 1). */
  dmaRead(address, at) {
    const wait = Math.max(0, this.busyUntil - at);
    const fill = this.cache.access(address, true);
    if (fill) this.busyUntil = at + wait + fill;
    return wait + Math.max(fill, 1);
  }
}

function isXip(address) {
  address >>>= 0;
  return address >= FLASH_BASE && address < XIP_WINDOW_END;
}

const TREQ_PERMANENT = 0x3f;

/**
 * Gives every unpaced DMA transfer from flash of `mcu` (an rp2040js RP2040) the time `port`
 * says it takes; other transfers keep rp2040js's timing. `nowCycles()` is the run's clock.
 */
export function attachDmaTiming(mcu, port, nowCycles, nanosPerCycle) {
  for (const channel of mcu.dma.channels) {
    const schedule = channel.scheduleTransfer.bind(channel);
    channel.scheduleTransfer = () => {
      if (!isXip(channel.readAddr) || channel.treq !== TREQ_PERMANENT) return schedule();
      const cycles = port.dmaRead(channel.readAddr, nowCycles());
      channel.transferAlarm.schedule(cycles * nanosPerCycle);
    };
  }
}

/**
 * Routes every flash read of `core` (an rp2040js CortexM0Core: instruction fetches and loads
 * both go through its readUint8/16/32) through `cache`; `onStall(cycles)` is called for each
 * miss.
 */
export function attachXipCache(core, cache, onStall) {
  for (const name of ['readUint8', 'readUint16', 'readUint32']) {
    const read = core[name].bind(core);
    core[name] = (address) => {
      const stall = cache.access(address);
      if (stall) onStall(stall);
      return read(address);
    };
  }
}
