//! Reading model files (`.smb`): the bytes, checked by the engine's reader, with the file name in
//! every error ("reading model file models/story-1k.smb: checksum mismatch …").
//!
//! The header is checked before the file is read: it must be a regular file whose first bytes
//! are a model header whose length field equals the file's size, and that size must fit the
//! memory this computer has, so that a 3 GB sparse file or `/dev/zero` is refused without being
//! read.

use anyhow::{bail, Context, Result};
use starmind_engine::format::{header, HEADER_BYTES, MAGIC, OLDEST_VERSION, VERSION};
use starmind_engine::Model;
use std::io::Read;
use std::path::Path;

/// Reads `path` and checks it with [`Model::parse`] (magic, version, length, CRC-32, every
/// section); returns the bytes for the caller to parse in place.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    let context = || format!("reading model file {}", path.display());
    let file_bytes = check_header(path).with_context(context)?;
    let bytes = crate::budget::read_bounded(path, file_bytes).with_context(context)?;
    Model::parse(&bytes).with_context(context)?;
    Ok(bytes)
}

/// Checks what can be checked from the file's metadata and its first [`HEADER_BYTES`]: a
/// regular file, the magic, the version, a length field equal to the file size, and a size the
/// available memory holds. Returns the size.
pub fn check_header(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        bail!("not a regular file (a directory, device or pipe)");
    }
    let mut head = Vec::with_capacity(HEADER_BYTES);
    std::fs::File::open(path)?
        .take(HEADER_BYTES as u64)
        .read_to_end(&mut head)?;
    if head.len() < HEADER_BYTES {
        // Let the engine's reader name the exact problem (truncated, bad magic).
        return Ok(meta.len());
    }
    let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
    if head[..4] != MAGIC {
        bail!("not a starmind model file (no SMND magic; `starmind export` writes them)");
    }
    if !(OLDEST_VERSION..=VERSION).contains(&u32_at(header::VERSION)) {
        bail!(
            "model file version {} (this build reads versions {OLDEST_VERSION} to {VERSION})",
            u32_at(header::VERSION)
        );
    }
    let claimed = u32_at(header::FILE_BYTES) as u64;
    if claimed != meta.len() {
        bail!(
            "the header says {claimed} bytes but the file has {} (truncated, or not a model file)",
            meta.len()
        );
    }
    if let Some(available) = crate::budget::available_memory_bytes() {
        if claimed > available {
            bail!(
                "the model file is {} bytes, more than the {} bytes of memory available",
                claimed,
                available
            );
        }
    }
    Ok(meta.len())
}
