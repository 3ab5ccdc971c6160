// Hit/miss accounting of the XIP cache model on synthetic access patterns, and the timing of
// the DMA's reads of flash that share its port with the core.
// Run: node --test scripts/emulator/ (tests/xip_cache.rs runs it from cargo test).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { XipCache, XipPort, attachDmaTiming, attachXipCache, XIP_SETS, XIP_LINE_BYTES } from './xip-cache.mjs';

const FLASH = 0x10000000;
const WAY_STRIDE = XIP_SETS * XIP_LINE_BYTES; // 8 KiB: same set, next tag

test('a sequential sweep misses once per 8-byte line, then hits while it fits', () => {
  const cache = new XipCache(56);
  for (let a = 0; a < 16 * 1024; a += 4) cache.access(FLASH + a); // 16 KiB: fills both ways
  assert.equal(cache.misses, 2048);
  assert.equal(cache.hits, 2048);
  for (let a = 0; a < 16 * 1024; a += 2) cache.access(FLASH + a);
  assert.equal(cache.misses, 2048, 'the second sweep of 16 KiB hits everywhere');
  assert.equal(cache.stallCycles, 2048 * 56);
});

test('a working set larger than the cache misses on every line (LRU thrash)', () => {
  const cache = new XipCache(50);
  for (let round = 0; round < 3; round++) {
    for (let a = 0; a < 24 * 1024; a += 8) cache.access(FLASH + a);
  }
  // 3 tags per set cycled through 2 LRU ways: every access misses.
  assert.equal(cache.hits, 0);
  assert.equal(cache.misses, 3 * 3072);
  assert.equal(cache.stallCycles, 3 * 3072 * 50);
});

test('two ways per set, least recently used evicted', () => {
  const cache = new XipCache(10);
  const [a, b, c] = [FLASH, FLASH + WAY_STRIDE, FLASH + 2 * WAY_STRIDE];
  assert.equal(cache.access(a), 10);
  assert.equal(cache.access(b), 10);
  assert.equal(cache.access(a + 4), 0); // a is most recent now
  assert.equal(cache.access(c), 10); // evicts b
  assert.equal(cache.access(a), 0);
  assert.equal(cache.access(b), 10); // evicts c
  assert.equal(cache.access(c), 10);
  assert.deepEqual([cache.hits, cache.misses], [2, 5]);
});

test('aliases: NOALLOC looks up without filling, NOCACHE always misses, SRAM is free', () => {
  const cache = new XipCache(7);
  assert.equal(cache.access(0x11000000 + 64), 7);
  assert.equal(cache.access(0x11000000 + 64), 7, 'NOALLOC did not allocate');
  assert.equal(cache.access(FLASH + 64), 7);
  assert.equal(cache.access(0x11000000 + 64), 0, 'NOALLOC hits a line XIP filled');
  assert.equal(cache.access(0x12000000 + 64), 7);
  assert.equal(cache.access(0x13000000 + 64), 7);
  assert.equal(cache.access(0x20000000), 0);
  assert.equal(cache.access(0x00000100), 0);
  assert.deepEqual([cache.hits, cache.misses], [1, 5]);
});

test('attachXipCache charges the reads of a core', () => {
  const reads = [];
  const core = {
    readUint8: (a) => { reads.push(a); return 1; },
    readUint16: (a) => { reads.push(a); return 2; },
    readUint32: (a) => { reads.push(a); return 3; },
  };
  const cache = new XipCache(56);
  let stalled = 0;
  attachXipCache(core, cache, (c) => { stalled += c; });
  assert.equal(core.readUint16(FLASH), 2);
  assert.equal(core.readUint32(FLASH + 4), 3);
  assert.equal(core.readUint8(FLASH + 8), 1);
  assert.equal(core.readUint32(0x20000000), 3);
  assert.deepEqual(reads, [FLASH, FLASH + 4, FLASH + 8, 0x20000000]);
  assert.equal(stalled, 2 * 56);
});

test('a DMA copy of flash fills one line per two words and keeps its own counts', () => {
  const cache = new XipCache(56);
  const port = new XipPort(cache);
  let at = 0;
  for (let a = 0; a < 64; a += 4) at += port.dmaRead(FLASH + 0x4000 + a, at);
  // 8 lines: a fill and a one-cycle hit each.
  assert.equal(at, 8 * (56 + 1));
  assert.deepEqual([cache.dmaMisses, cache.dmaHits], [8, 8]);
  assert.deepEqual([cache.misses, cache.hits, cache.stallCycles], [0, 0, 0], 'not the core\'s');
  // The lines it brought are in the cache for the core.
  assert.equal(port.coreAccess(FLASH + 0x4000 + 12, at), 0);
  assert.equal(cache.hits, 1);
});

test('the core and the DMA wait for each other\'s line fills on the one port', () => {
  const cache = new XipCache(56);
  const port = new XipPort(cache);
  assert.equal(port.coreAccess(FLASH + 0x900, 0), 56); // a line for the core (port free at 56)
  // The DMA misses at cycle 100: the port is busy until 156.
  assert.equal(port.dmaRead(FLASH + 0x100, 100), 56);
  // A core hit at 120 waits the 36 cycles left; a core miss at 130 waits 26, then fills.
  assert.equal(port.coreAccess(FLASH + 0x900, 120), 36);
  assert.equal(port.coreAccess(FLASH + 0x2000, 130), 26 + 56);
  assert.equal(port.coreWaitCycles, 36 + 26);
  // Now the DMA waits for the core's fill (busy until 130 + 82 = 212).
  assert.equal(port.dmaRead(FLASH + 0x108, 200), 12 + 56);
  // SRAM is never held up.
  assert.equal(port.coreAccess(0x20000000, 201), 0);
});

test('attachDmaTiming times unpaced transfers from flash and leaves the others alone', () => {
  const scheduled = [];
  const channel = (readAddr, treq) => ({
    readAddr,
    treq,
    scheduleTransfer() { scheduled.push(['rp2040js', readAddr]); },
    transferAlarm: { schedule: (nanos) => scheduled.push(['alarm', nanos]) },
  });
  const mcu = { dma: { channels: [channel(FLASH, 0x3f), channel(0x20000000, 0x3f), channel(FLASH, 20)] } };
  const port = new XipPort(new XipCache(56));
  attachDmaTiming(mcu, port, () => 10, 8);
  for (const c of mcu.dma.channels) c.scheduleTransfer();
  assert.deepEqual(scheduled, [['alarm', 56 * 8], ['rp2040js', 0x20000000], ['rp2040js', FLASH]]);
});
