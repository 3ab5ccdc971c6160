//! ELF → flat binary for the firmware image: every loaded segment at its load address (LMA),
//! from 0x10000000 (XIP flash) up, gaps zero-filled. No dependencies, so scripts/build-firmware.sh
//! compiles it with plain `rustc` (no rust-objcopy / llvm-tools needed).
//!
//! usage: elf2bin <in.elf> <out.bin> [<out.syms>]
//!
//! `out.syms`: one line per function symbol, `address size name`, sorted by address, names
//! demangled (hash suffix dropped) — what `starmind bench --profile` maps emulator PCs with.

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

/// Function symbols from `.symtab`: (address without the Thumb bit, size, demangled name).
fn functions(elf: &[u8]) -> Result<Vec<(u32, u32, String)>, String> {
    let (shoff, shentsize, shnum) = (u32_at(elf, 0x20), u16_at(elf, 0x2e), u16_at(elf, 0x30));
    let section = |n: u32| -> Result<&[u8], String> {
        let at = (shoff + n * shentsize) as usize;
        elf.get(at..at + 40).ok_or_else(|| "section header out of range".to_string())
    };
    let mut out = Vec::new();
    for n in 0..shnum {
        let sh = section(n)?;
        if u32_at(sh, 4) != 2 {
            continue; // not SHT_SYMTAB
        }
        let (offset, size, link) = (u32_at(sh, 16) as usize, u32_at(sh, 20) as usize, u32_at(sh, 24));
        let strtab = section(link)?;
        let (str_off, str_size) = (u32_at(strtab, 16) as usize, u32_at(strtab, 20) as usize);
        let strings = elf.get(str_off..str_off + str_size).ok_or("string table out of range")?;
        let symbols = elf.get(offset..offset + size).ok_or("symbol table out of range")?;
        for sym in symbols.chunks_exact(16) {
            let (name, value, size, info) = (u32_at(sym, 0) as usize, u32_at(sym, 4), u32_at(sym, 8), sym[12]);
            if info & 0xf != 2 || size == 0 {
                continue; // not STT_FUNC
            }
            let raw = strings.get(name..).unwrap_or(&[]);
            let raw = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
            out.push((value & !1, size, demangle(&String::from_utf8_lossy(raw))));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Rust symbol names, readably: the `<len><ident>` path pieces joined with `::`, without the
/// hash (legacy `_ZN…17h<hash>E` and v0 `_R…` alike); other names unchanged.
fn demangle(name: &str) -> String {
    let (body, v0) = match (name.strip_prefix("_ZN"), name.strip_prefix("_R")) {
        (Some(body), _) => (body, false),
        (_, Some(body)) => (body, true),
        _ => return name.to_string(),
    };
    let bytes = body.as_bytes();
    let (mut parts, mut i) = (Vec::new(), 0);
    while i < bytes.len() {
        if v0 && bytes[i..].starts_with(b"Cs") {
            // v0 crate disambiguator `Cs<base62>_`: skip it.
            i += bytes[i..].iter().position(|&b| b == b'_').map_or(bytes.len(), |p| p + 1);
            continue;
        }
        if !bytes[i].is_ascii_digit() || bytes[i] == b'0' {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let len: usize = body[start..i].parse().unwrap_or(0);
        if v0 && bytes.get(i) == Some(&b'_') {
            i += 1; // v0: an identifier starting with a digit or '_' is preceded by '_'
        }
        let Some(ident) = body.get(i..i + len) else { break };
        i += len;
        let is_hash = ident.len() == 17 && ident.starts_with('h') && ident[1..].bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hash {
            let ident = ident.strip_prefix("_$").map_or(ident.to_string(), |rest| format!("${rest}"));
            parts.push(ident.replace("$LT$", "<").replace("$RF$", "&").replace("$GT$", ">").replace("$u20$", " ").replace("..", "::"));
        }
    }
    if parts.is_empty() {
        name.to_string()
    } else {
        parts.join("::")
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().collect();
    if args.len() != 3 && args.len() != 4 {
        eprintln!("usage: elf2bin <in.elf> <out.bin> [<out.syms>]");
        return ExitCode::FAILURE;
    }
    let result = fs::read(&args[1]).map_err(|e| format!("reading {}: {e}", args[1])).and_then(|elf| {
        let bin = convert(&elf)?;
        fs::write(&args[2], bin).map_err(|e| format!("writing {}: {e}", args[2]))?;
        if let Some(path) = args.get(3) {
            let text: String =
                functions(&elf)?.iter().map(|(addr, size, name)| format!("{addr:08x} {size} {name}\n")).collect();
            fs::write(path, text).map_err(|e| format!("writing {path}: {e}"))?;
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("elf2bin: {err}");
            ExitCode::FAILURE
        }
    }
}
