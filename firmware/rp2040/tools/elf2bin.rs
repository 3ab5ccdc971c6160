//! ELF → flat binary for the firmware image: every loaded segment at its load address (LMA),
//! from 0x10000000 (XIP flash) up, gaps zero-filled. No dependencies, so scripts/build-firmware.sh
//! compiles it with plain `rustc` (no rust-objcopy / llvm-tools needed).
//!
//! usage: elf2bin <in.elf> <out.bin>

use std::{env, fs, process::ExitCode};

const FLASH_BASE: u32 = 0x1000_0000;
const FIRMWARE_END: u32 = 0x1003_F000; // the config block's sector (docs/memory-map.md)
const PT_LOAD: u32 = 1;

fn u16_at(b: &[u8], i: usize) -> u32 {
    u16::from_le_bytes([b[i], b[i + 1]]) as u32
}
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn convert(elf: &[u8]) -> Result<Vec<u8>, String> {
    if elf.len() < 52 || &elf[..4] != b"\x7fELF" || elf[4] != 1 || elf[5] != 1 {
        return Err("not a 32-bit little-endian ELF file".into());
    }
    let (phoff, phentsize, phnum) = (u32_at(elf, 0x1c), u16_at(elf, 0x2a), u16_at(elf, 0x2c));
    let mut image = Vec::new();
    for n in 0..phnum {
        let ph = (phoff + n * phentsize) as usize;
        let ph = elf.get(ph..ph + 32).ok_or("program header out of range")?;
        let (kind, offset, paddr, filesz) = (u32_at(ph, 0), u32_at(ph, 4), u32_at(ph, 12), u32_at(ph, 16));
        if kind != PT_LOAD || filesz == 0 {
            continue;
        }
        if paddr < FLASH_BASE || paddr + filesz > FIRMWARE_END {
            return Err(format!("segment at {paddr:#010x}+{filesz:#x} is outside firmware flash"));
        }
        let data = elf
            .get(offset as usize..(offset + filesz) as usize)
            .ok_or("segment data out of range")?;
        let start = (paddr - FLASH_BASE) as usize;
        if image.len() < start + data.len() {
            image.resize(start + data.len(), 0);
        }
        image[start..start + data.len()].copy_from_slice(data);
    }
    if image.len() < 0x200 {
        return Err("no boot2 + vector table found".into());
    }
    Ok(image)
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: elf2bin <in.elf> <out.bin>");
        return ExitCode::FAILURE;
    }
    let result = fs::read(&args[1])
        .map_err(|e| format!("reading {}: {e}", args[1]))
        .and_then(|elf| convert(&elf))
        .and_then(|bin| fs::write(&args[2], bin).map_err(|e| format!("writing {}: {e}", args[2])));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("elf2bin: {err}");
            ExitCode::FAILURE
        }
    }
}
