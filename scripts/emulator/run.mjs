#!/usr/bin/env node
// Runs the starmind firmware in rp2040js (one Cortex-M0+ core, no bootrom) and streams UART0 to
// stdout until the firmware prints STARMIND-DONE.
//
// usage: node run.mjs --firmware fw.bin [--load OFFSET:FILE]... [--max-cycles N] [--verbose]
//   OFFSET is a byte offset from the flash base 0x10000000 (e.g. 0x3F000 config, 0x40000 model).
//   --profile FILE writes `pc count` lines (cycles attributed to each instruction address), for
//   finding where the cycles go: map them to functions with the firmware ELF's symbols.
//
// We step the core ourselves and count cycles (Simulator.execute() assumes 125 MHz and counts
// none): executing an instruction advances the clock by its cycles at 125 MHz; a waiting core
// (WFI) jumps to the next timer alarm.
//
// Last stdout line: `STARMIND-EMULATOR status=<s> cycles=<n> wall_s=<t> emulated_mhz=<f>`.
// Exit status: 0 done, 1 usage or I/O error, 2 fault, 3 cycle limit, 4 firmware error line,
// 5 firmware went idle without finishing.

import { readFileSync, writeFileSync } from 'node:fs';
import { Simulator } from 'rp2040js';

const FLASH_BASE = 0x10000000;
const VECTOR_TABLE = 0x10000100; // after the 256-byte boot2
const CLOCK_HZ = 125_000_000;
const NANOS_PER_CYCLE = 1e9 / CLOCK_HZ;

const EXIT = { done: 0, usage: 1, fault: 2, cycle_limit: 3, firmware_error: 4, idle: 5 };

function parseArgs(argv) {
  const args = { loads: [], maxCycles: 20e9, verbose: false, firmware: null, profile: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--firmware') args.firmware = argv[++i];
    else if (arg === '--load') {
      const [offset, ...file] = (argv[++i] ?? '').split(':');
      args.loads.push({ offset: Number(offset), file: file.join(':') });
    } else if (arg === '--max-cycles') args.maxCycles = Number(argv[++i]);
    else if (arg === '--verbose') args.verbose = true;
    else if (arg === '--profile') args.profile = argv[++i];
    else throw new Error(`unknown argument ${arg}`);
  }
  if (!args.firmware) throw new Error('--firmware is required');
  for (const { offset, file } of args.loads) {
    if (!Number.isInteger(offset) || offset < 0 || !file) throw new Error('--load wants OFFSET:FILE');
  }
  return args;
}

function main() {
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

  try {
    const firmware = readFileSync(args.firmware);
    mcu.flash.set(firmware, 0);
    for (const { offset, file } of args.loads) {
      const bytes = readFileSync(file);
      if (offset + bytes.length > mcu.flash.length) throw new Error(`${file} does not fit in flash at ${offset}`);
      mcu.flash.set(bytes, offset);
    }
  } catch (err) {
    console.error(`run.mjs: ${err.message}`);
    return EXIT.usage;
  }
  const firmwareEnd = FLASH_BASE + readFileSync(args.firmware).length;

  // No bootrom: start the firmware the way the bootrom + boot2 would.
  const word = (addr) => mcu.flashView.getUint32(addr - FLASH_BASE, true);
  core.VTOR = VECTOR_TABLE;
  core.SP = word(VECTOR_TABLE);
  core.PC = word(VECTOR_TABLE + 4) & ~1;

  let status = null;
  let reason = '';
  let line = '';
  mcu.uart[0].onByte = (byte) => {
    if (byte === 10) {
      process.stdout.write(`${line}\n`);
      const text = line.trim();
      if (text.startsWith('STARMIND-DONE')) status ??= 'done';
      else if (text.startsWith('STARMIND-FAULT')) { status ??= 'fault'; reason = text; }
      else if (text.startsWith('STARMIND-ERROR')) { status ??= 'firmware_error'; reason = text; }
      line = '';
    } else if (byte !== 13) {
      line += String.fromCharCode(byte);
    }
  };

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
        const spent = core.executeInstruction();
        clock.tick(spent * NANOS_PER_CYCLE);
        cycles += spent;
        if (profile) profile.set(pc, (profile.get(pc) ?? 0) + spent);
      }
      if (status !== null) break;
    }
    if (status !== null) break;
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
  if (line) process.stdout.write(`${line}\n`);
  const wallSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  const mhz = cycles / wallSeconds / 1e6;
  console.log(
    `STARMIND-EMULATOR status=${status} cycles=${cycles} wall_s=${wallSeconds.toFixed(2)} emulated_mhz=${mhz.toFixed(1)}`,
  );
  if (profile) {
    const lines = [...profile].sort((a, b) => a[0] - b[0]).map(([pc, n]) => `${hex(pc)} ${n}`);
    writeFileSync(args.profile, `${lines.join('\n')}\n`);
  }
  if (status !== 'done') console.error(`run.mjs: ${status}: ${reason}`);
  return EXIT[status];
}

function hex(value) {
  return `0x${(value >>> 0).toString(16).padStart(8, '0')}`;
}

process.exitCode = main();
