#!/usr/bin/env node
// Runs the starmind firmware in rp2040js (one Cortex-M0+ core, no bootrom) and streams UART0 to
// stdout until the firmware prints STARMIND-DONE.
//
// usage: node run.mjs (--firmware fw.bin [--load OFFSET:FILE]... | --uf2 image.uf2)
//                     [--max-cycles N] [--input TEXT | --interactive] [--profile FILE] [--verbose]
//                     [--xip-miss-cycles N]
//   OFFSET is a byte offset from the flash base 0x10000000 (e.g. 0x3F000 config, 0x40000 model).
//   --uf2 loads every block of a `starmind flash --uf2` image instead (firmware, config, model).
//   --input TEXT is typed into UART0 RX once the firmware has booted (interactive mode).
//   --interactive forwards stdin to UART0 RX and UART0 to stdout byte by byte (`starmind chat
//   --emulator`): a prompt line (up to CR or LF) once the firmware waits for one (after
//   STARMIND-READY, and after the STARMIND-STORY line that ends each story), Ctrl-C (0x03, which
//   stops a story) at once, each no faster than the 32-byte RX FIFO takes it. A STARMIND-ERROR
//   line after STARMIND-READY is one story's error, not the end. The run is done when stdin has
//   ended and every line has had its story. No cycle limit unless --max-cycles is given.
//   --profile FILE writes `pc count` lines (cycles attributed to each instruction address), for
//   finding where the cycles go: map them to functions with the firmware ELF's symbols.
//   --xip-miss-cycles N models the 16 KiB 2-way XIP cache (xip-cache.mjs, its assumptions there)
//   and stalls the core N cycles on every miss, so the firmware's clock sees a board's flash
//   (56 = QSPI clock divider 2); 0 (the default) keeps rp2040js's zero-wait flash.
//   With the cache model, unpaced DMA reads of flash go through it too and take the time it
//   says (rp2040js alone moves DMA data in zero time), sharing the one QSPI port with the core.
//
// We step the core ourselves and count cycles (Simulator.execute() assumes 125 MHz and counts
// none): executing an instruction advances the clock by its cycles at 125 MHz; a waiting core
// (WFI) jumps to the next timer alarm.
//
// Last stdout line: `STARMIND-EMULATOR status=<s> cycles=<n> wall_s=<t> emulated_mhz=<f>`, with
// ` xip_miss_cycles=<n> xip_hits=<n> xip_misses=<n> xip_stall_cycles=<n> xip_dma_hits=<n>
// xip_dma_misses=<n>` when the cache is on (the core's hits, misses and stall cycles: its own
// line fills and its waits for the DMA's; then the DMA's reads of flash).
// Exit status: 0 done, 1 usage or I/O error, 2 fault, 3 cycle limit, 4 firmware error line,
// 5 firmware went idle without finishing.

import { readFileSync, writeFileSync } from 'node:fs';
import { Simulator } from 'rp2040js';
import { XipCache, XipPort, attachDmaTiming, attachXipCache } from './xip-cache.mjs';

const FLASH_BASE = 0x10000000;
const VECTOR_TABLE = 0x10000100; // after the 256-byte boot2
const CLOCK_HZ = 125_000_000;
const NANOS_PER_CYCLE = 1e9 / CLOCK_HZ;

const EXIT = { done: 0, usage: 1, fault: 2, cycle_limit: 3, firmware_error: 4, idle: 5 };

function parseArgs(argv) {
  const args = { loads: [], maxCycles: null, verbose: false, firmware: null, uf2: null, profile: null, input: null, interactive: false, xipMissCycles: 0 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--firmware') args.firmware = argv[++i];
    else if (arg === '--load') {
      const [offset, ...file] = (argv[++i] ?? '').split(':');
      args.loads.push({ offset: Number(offset), file: file.join(':') });
    } else if (arg === '--max-cycles') args.maxCycles = Number(argv[++i]);
    else if (arg === '--verbose') args.verbose = true;
    else if (arg === '--profile') args.profile = argv[++i];
    else if (arg === '--uf2') args.uf2 = argv[++i];
    else if (arg === '--input') args.input = argv[++i];
    else if (arg === '--interactive') args.interactive = true;
    else if (arg === '--xip-miss-cycles') args.xipMissCycles = Number(argv[++i]);
    else throw new Error(`unknown argument ${arg}`);
  }
  if (!args.firmware === !args.uf2) throw new Error('give --firmware or --uf2');
  if (args.interactive && args.input !== null) throw new Error('give --input or --interactive, not both');
  args.maxCycles ??= args.interactive ? Infinity : 20e9;
  if (!Number.isInteger(args.xipMissCycles) || args.xipMissCycles < 0) throw new Error('--xip-miss-cycles wants a whole number ≥ 0');
  for (const { offset, file } of args.loads) {
    if (!Number.isInteger(offset) || offset < 0 || !file) throw new Error('--load wants OFFSET:FILE');
  }
  return args;
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`run.mjs: ${err.message}`);
    return EXIT.usage;
  }

  const sim = new Simulator();
  const mcu = sim.rp2040;
  const clock = sim.clock;
  const core = mcu.core;
  let unimplemented = null;
  mcu.logger = {
    debug() {},
    info() {},
    warn(component, message) {
      if (/not implemented/i.test(message)) unimplemented ??= message;
      if (args.verbose) console.error(`[${component}] ${message}`);
    },
    error(component, message) {
      console.error(`[${component}] ${message}`);
    },
  };

  let firmwareEnd = FLASH_BASE;
  try {
    if (args.uf2) {
      firmwareEnd = loadUf2(mcu, readFileSync(args.uf2));
    } else {
      const firmware = readFileSync(args.firmware);
      mcu.flash.set(firmware, 0);
      firmwareEnd = FLASH_BASE + firmware.length;
    }
    for (const { offset, file } of args.loads) {
      const bytes = readFileSync(file);
      if (offset + bytes.length > mcu.flash.length) throw new Error(`${file} does not fit in flash at ${offset}`);
      mcu.flash.set(bytes, offset);
    }
  } catch (err) {
    console.error(`run.mjs: ${err.message}`);
    return EXIT.usage;
  }

  // No bootrom: start the firmware the way the bootrom + boot2 would.
  const word = (addr) => mcu.flashView.getUint32(addr - FLASH_BASE, true);
  core.VTOR = VECTOR_TABLE;
  core.SP = word(VECTOR_TABLE);
  core.PC = word(VECTOR_TABLE + 4) & ~1;

  let status = null;
  let reason = '';
  let lineBytes = [];
  const decoder = new TextDecoder();
  const chat = args.interactive ? interactiveInput(mcu.uart[0]) : null;
  mcu.uart[0].onByte = (byte) => {
    chat?.output.push(byte);
    if (byte === 10) {
      const line = decoder.decode(Uint8Array.from(lineBytes));
      lineBytes = [];
      if (!chat) process.stdout.write(`${line}\n`);
      const text = line.trim();
      if (text.startsWith('STARMIND-READY') && args.input !== null) {
        for (const c of Buffer.from(args.input)) mcu.uart[0].feedByte(c);
      }
      if (text.startsWith('STARMIND-READY') && chat) chat.ready = true;
      if (text.startsWith('STARMIND-STORY') && chat) chat.stories++;
      if (text.startsWith('STARMIND-DONE')) status ??= 'done';
      else if (text.startsWith('STARMIND-FAULT')) { status ??= 'fault'; reason = text; }
      else if (text.startsWith('STARMIND-ERROR') && !chat?.ready) { status ??= 'firmware_error'; reason = text; }
    } else if (byte !== 13) {
      lineBytes.push(byte);
    }
  };

  // Stall cycles of the XIP misses of the instruction being executed (added to its cycles).
  let stalled = 0;
  const xip = args.xipMissCycles > 0 ? new XipCache(args.xipMissCycles) : null;
  // The core and the DMA share the cache and its QSPI port (xip-cache.mjs).
  const now = () => Math.round(clock.nanos / NANOS_PER_CYCLE);
  const port = xip ? new XipPort(xip) : null;
  if (xip) {
    attachXipCache(core, { access: (address) => port.coreAccess(address, now() + stalled) }, (cycles) => { stalled += cycles; });
    attachDmaTiming(mcu, port, now, NANOS_PER_CYCLE);
  }

  const profile = args.profile ? new Map() : null;
  const started = process.hrtime.bigint();
  let cycles = 0;
  while (status === null) {
    for (let i = 0; i < 50_000; i++) {
      if (core.waiting) {
        const nanos = clock.nanosToNextAlarm;
        if (!Number.isFinite(nanos) || nanos <= 0) {
          status = 'idle';
          reason = 'the core waits (WFI) with no timer alarm pending';
          break;
        }
        clock.tick(nanos);
        cycles += Math.round(nanos / NANOS_PER_CYCLE);
      } else {
        const pc = profile ? core.PC : 0;
        stalled = 0;
        const spent = core.executeInstruction() + stalled;
        clock.tick(spent * NANOS_PER_CYCLE);
        cycles += spent;
        if (profile) profile.set(pc, (profile.get(pc) ?? 0) + spent);
      }
      if (status !== null) break;
    }
    if (status !== null) break;
    if (chat) {
      status = await chat.exchange();
      if (status !== null) break;
    }
    const pc = core.PC;
    if (pc < FLASH_BASE || (pc >= firmwareEnd && pc < 0x20000000)) {
      status = 'fault';
      reason = `PC ${hex(pc)} left the firmware (bootrom calls crash rp2040js: it has no bootrom)`;
    } else if (unimplemented) {
      status = 'fault';
      reason = `unimplemented instruction: ${unimplemented}`;
    } else if (cycles > args.maxCycles) {
      status = 'cycle_limit';
      reason = `no STARMIND-DONE after ${cycles} cycles (--max-cycles ${args.maxCycles})`;
    }
  }
  if (lineBytes.length && !chat) process.stdout.write(`${decoder.decode(Uint8Array.from(lineBytes))}\n`);
  chat?.close();
  const wallSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  const mhz = cycles / wallSeconds / 1e6;
  const xipFields = xip
    ? ` xip_miss_cycles=${xip.missCycles} xip_hits=${xip.hits} xip_misses=${xip.misses} xip_stall_cycles=${xip.stallCycles + port.coreWaitCycles}` +
      ` xip_dma_hits=${xip.dmaHits} xip_dma_misses=${xip.dmaMisses}`
    : '';
  console.log(
    `STARMIND-EMULATOR status=${status} cycles=${cycles} wall_s=${wallSeconds.toFixed(2)} emulated_mhz=${mhz.toFixed(1)}${xipFields}`,
  );
  if (profile) {
    const lines = [...profile].sort((a, b) => a[0] - b[0]).map(([pc, n]) => `${hex(pc)} ${n}`);
    writeFileSync(args.profile, `${lines.join('\n')}\n`);
  }
  if (status !== 'done') console.error(`run.mjs: ${status}: ${reason}`);
  return EXIT[status];
}

// --interactive: stdin bytes queued for UART0 RX, and UART0 bytes collected for stdout; between
// batches of instructions `exchange` writes the output, lets node read stdin, and feeds the RX
// FIFO. Resolves to 'done' once the input has ended and been answered, else null.
function interactiveInput(uart) {
  const chat = { ready: false, stories: 0, lines: 0, output: [], queue: [], stops: 0, ended: false };
  process.stdin.on('data', (bytes) => {
    for (const byte of bytes) {
      if (byte === 3) chat.stops++;
      else chat.queue.push(byte);
    }
  });
  process.stdin.on('end', () => { chat.ended = true; });
  chat.flush = () => {
    if (chat.output.length) process.stdout.write(Buffer.from(chat.output));
    chat.output = [];
  };
  chat.close = () => {
    chat.flush();
    process.stdin.destroy();
  };
  chat.exchange = async () => {
    chat.flush();
    await new Promise(setImmediate);
    for (; chat.ready && chat.stops && !uart.rxFIFO.full; chat.stops--) uart.feedByte(3);
    // The story loop drops what it reads besides Ctrl-C: a line waits for the firmware's prompt.
    while (chat.ready && chat.queue.length && chat.stories === chat.lines && !uart.rxFIFO.full) {
      const byte = chat.queue.shift();
      if (byte === 10 || byte === 13) chat.lines++;
      uart.feedByte(byte);
    }
    return chat.ended && !chat.queue.length && chat.stories >= chat.lines ? 'done' : null;
  };
  return chat;
}

// Copies the payload of every UF2 block into flash; returns the end of the firmware (the first
// gap in the blocks from 0x10000000, where the config block's sector begins).
function loadUf2(mcu, bytes) {
  if (bytes.length % 512 !== 0) throw new Error('UF2 length is not a multiple of 512');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const starts = [];
  for (let at = 0; at < bytes.length; at += 512) {
    if (view.getUint32(at, true) !== 0x0a324655 || view.getUint32(at + 508, true) !== 0x0ab16f30) {
      throw new Error(`UF2 block ${at / 512}: bad magic`);
    }
    const addr = view.getUint32(at + 12, true);
    const size = view.getUint32(at + 16, true);
    if (addr < FLASH_BASE || addr + size > FLASH_BASE + mcu.flash.length) throw new Error(`UF2 block at ${hex(addr)} is outside flash`);
    mcu.flash.set(bytes.subarray(at + 32, at + 32 + size), addr - FLASH_BASE);
    starts.push([addr, size]);
  }
  starts.sort((a, b) => a[0] - b[0]);
  let end = FLASH_BASE;
  for (const [addr, size] of starts) {
    if (addr !== end) break;
    end = addr + size;
  }
  return end;
}

function hex(value) {
  return `0x${(value >>> 0).toString(16).padStart(8, '0')}`;
}

process.exitCode = await main();
