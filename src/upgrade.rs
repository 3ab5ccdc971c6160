//! `starmind upgrade`: a model file of an older format version rewritten as the current one
//! (`format::upgrade`), with the same numbers, so it runs on the current fast kernels
//! (version 3: every int8 matrix, the embedding and classifier too, in row quads for
//! `matvec_i8_x4`). Older files still run as they are, through the row-major kernel; this only
//! makes them faster.

use anyhow::{Context, Result};
use clap::Parser;
use starmind_engine::format::{self, VERSION};
use starmind_engine::Model;
use std::path::PathBuf;

/// Command-line arguments of `starmind upgrade`.
#[derive(Parser, Debug)]
pub struct Args {
    /// The model file (.smb) to upgrade (it is only read).
    pub model: PathBuf,
    /// Where the upgraded file goes.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Replace the output file if it exists (never the input).
    #[arg(long)]
    pub force: bool,
}

/// Reads `args.model`, writes its current-version form to `args.output` (atomically).
pub fn run(args: Args) -> Result<()> {
    crate::fsio::check_output(
        "-o",
        &args.output,
        std::slice::from_ref(&args.model),
        args.force,
    )?;
    let bytes = crate::model_file::read(&args.model)?;
    let from = Model::parse(&bytes)?.version();
    let upgraded = format::upgrade(&bytes)
        .with_context(|| format!("upgrading model file {}", args.model.display()))?;
    crate::fsio::write_atomic(&args.output, &upgraded)?;
    if from == VERSION {
        eprintln!(
            "{} is already format version {VERSION}: copied unchanged to {}",
            args.model.display(),
            args.output.display()
        );
    } else {
        eprintln!(
            "upgraded {} (format version {from}) to {} (version {VERSION}, same numbers)",
            args.model.display(),
            args.output.display()
        );
    }
    Ok(())
}
