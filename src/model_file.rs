//! Reading model files (`.smb`): the bytes, checked by the engine's reader, with the file name in
//! every error ("reading model file models/story-1k.smb: checksum mismatch …").

use anyhow::{Context, Result};
use starmind_engine::Model;
use std::path::Path;

/// Reads `path` and checks it with [`Model::parse`] (magic, version, length, CRC-32, every
/// section); returns the bytes for the caller to parse in place.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    let context = || format!("reading model file {}", path.display());
    let bytes = std::fs::read(path).with_context(context)?;
    Model::parse(&bytes).with_context(context)?;
    Ok(bytes)
}
