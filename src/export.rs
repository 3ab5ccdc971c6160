//! `starmind export`: quantise a checkpoint into a model file (.smb, docs/FORMAT.md) through the
//! engine's writer types, check it against a board's flash and RAM, and write it atomically.
//!
//! No calibration pass: weights get per-row (int8) or per-group (int4) scales from their own
//! values, and activations are quantised dynamically per vector on the device
//! (docs/quantization.md), so there are no activation ranges to calibrate.

use crate::checkpoint::{self, Checkpoint};
use crate::config::{Ffn, TokenizerKind};
use anyhow::{bail, Context, Result};
use starmind_engine::budget::{
    model_runs_from_sram, weight_copy_room, Board, Budget, STREAM_BUFFER_BYTES,
};
use starmind_engine::format::{self, Quant};
use starmind_engine::quantize::{quantize_model, FloatLayer, FloatModel};
use starmind_engine::Model;
use std::path::PathBuf;

/// Arguments of `starmind export`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint directory written by `starmind train`.
    pub checkpoint: PathBuf,
    /// The model file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Weight scheme of the layer matrices: int8 (per-row scales) or int4 (groups of 32).
    #[arg(long, default_value = "int8", value_parser = ["int8", "int4"])]
    pub quant: String,
    /// Columns per int4 group (each group has its own scale).
    #[arg(long, default_value_t = INT4_GROUP)]
    pub group_size: usize,
    /// Target board whose flash and RAM the model must fit.
    #[arg(long, default_value = "pico", value_parser = ["pico", "pico-16mb"])]
    pub board: String,
    /// KV-cache length the board will run (default: the model's seq_len).
    #[arg(long)]
    pub context: Option<usize>,
    /// After writing, compare the file with the float checkpoint on this validation text: bits
    /// per byte of both and greedy next-token agreement (docs/quantization.md).
    #[arg(long, value_name = "VALID_TEXT")]
    pub compare: Option<PathBuf>,
    /// After writing, compare the file with the float checkpoint on these token ids (a file of
    /// space-separated ids, e.g. from `starmind generate --ids`): bits per token of both and
    /// greedy next-token agreement — for models without a tokenizer.
    #[arg(long, value_name = "IDS_FILE", conflicts_with = "compare")]
    pub compare_ids: Option<PathBuf>,
    /// With --compare: use only the first N bytes of the validation text.
    #[arg(long)]
    pub max_bytes: Option<usize>,
    /// With --compare or --compare-ids: print the comparison as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Replace the output file if it exists (never the checkpoint's own files).
    #[arg(long)]
    pub force: bool,
}

/// Columns per int4 group by default.
pub const INT4_GROUP: usize = 32;

/// `starmind export`.
pub fn run(args: Args) -> Result<()> {
    let quant = match args.quant.as_str() {
        "int4" => Quant::Int4,
        _ => Quant::Int8,
    };
    let board = if args.board == "pico-16mb" {
        Board::PICO_16MB
    } else {
        Board::PICO
    };
    if args.group_size == 0 || args.group_size > 256 {
        bail!("--group-size {} must be in 1..=256", args.group_size);
    }
    let mut inputs = checkpoint::files(&args.checkpoint);
    inputs.extend(args.compare.iter().chain(&args.compare_ids).cloned());
    crate::fsio::check_output("-o", &args.output, &inputs, args.force)?;
    let checkpoint = checkpoint::load(&args.checkpoint)?;
    let bytes = export(&checkpoint, quant, args.group_size)
        .with_context(|| format!("checkpoint {}", args.checkpoint.display()))?;
    let model = Model::parse(&bytes).context("re-reading the written model")?;
    let config = model.config();
    let context = args.context.unwrap_or(config.seq_len);
    if context == 0 || context > config.seq_len {
        bail!("--context {context} must be in 1..={}", config.seq_len);
    }
    let budget = Budget::new(&config, bytes.len(), context);
    print_budget(&budget, &board)?;
    let full_arena = Budget::new(&config, bytes.len(), config.seq_len).arena_bytes;
    print_placement(&model, full_arena, &board)?;
    if !board.fits(&budget) {
        bail!(
            "the model does not fit the {} board: flash {} of {} bytes, RAM {} of {} bytes (context {context}); \
             try --quant int4, a shorter --context, or --board pico-16mb",
            board.name,
            budget.flash_bytes,
            board.model_flash_bytes(),
            budget.arena_bytes,
            board.arena_ram_bytes()
        );
    }
    crate::fsio::write_atomic(&args.output, &bytes)?;
    crate::outln!(
        "wrote {} ({} bytes, {:?})",
        args.output.display(),
        bytes.len(),
        quant
    )?;
    if let Some(path) = &args.compare_ids {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let ids = text
            .split_whitespace()
            .map(|w| w.parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{}: expected space-separated token ids", path.display()))?;
        let report = crate::eval::compare::compare_ids(&checkpoint, &bytes, &ids)
            .with_context(|| format!("comparing on the ids of {}", path.display()))?;
        if args.json {
            crate::outln!("{}", serde_json::to_string(&report)?)?;
        } else {
            crate::outln!(
                "float {:.4} bits/token, {:?} {:.4} bits/token ({:+.2} %), greedy next-token agreement {:.2} % over {} positions",
                report.float_bits_per_token,
                quant,
                report.int_bits_per_token,
                100.0 * report.relative_change,
                100.0 * report.greedy_agreement,
                report.positions
            )?;
        }
    }
    if let Some(valid) = &args.compare {
        let text = std::fs::read_to_string(valid)
            .with_context(|| format!("reading {}", valid.display()))?;
        let text = match args.max_bytes {
            Some(n) => crate::data::truncate_bytes(&text, n),
            None => &text,
        };
        let report = crate::eval::compare::compare(&checkpoint, &bytes, text)?;
        if args.json {
            crate::outln!("{}", serde_json::to_string(&report)?)?;
        } else {
            crate::outln!(
                "float bpb {:.4}, {:?} bpb {:.4} ({:+.2} %), greedy next-token agreement {:.2} % over {} positions",
                report.float_bpb,
                quant,
                report.int_bpb,
                100.0 * report.bpb_relative_change,
                100.0 * report.greedy_agreement,
                report.positions
            )?;
        }
    }
    Ok(())
}

fn print_budget(b: &Budget, board: &Board) -> Result<()> {
    crate::outln!(
        "budget for board {} (context {}):",
        board.name,
        b.context_len
    )?;
    crate::outln!(
        "  flash  model file      {:>9} B of {:>9} B after firmware",
        b.flash_bytes,
        board.model_flash_bytes()
    )?;
    crate::outln!(
        "  RAM    arena           {:>9} B of {:>9} B after firmware (activations {} B, KV cache {} B)",
        b.arena_bytes,
        board.arena_ram_bytes(),
        b.activation_bytes,
        b.kv_cache_bytes
    )?;
    Ok(())
}

/// Where each part lives on the board (the firmware's rule, [`model_runs_from_sram`], against
/// the board's RAM after the firmware: an estimate; the board measures its free RAM at boot and
/// says `model_in=` in its ready line).
fn print_placement(model: &Model, full_arena: usize, board: &Board) -> Result<()> {
    let model_bytes = model.bytes().len();
    crate::outln!(
        "where it lives (estimate; the firmware decides at boot with the RAM it measures):"
    )?;
    if model_runs_from_sram(model_bytes, full_arena, board.arena_ram_bytes()) {
        crate::outln!(
            "  SRAM   model           copied from flash at boot: {model_bytes} B + the arena of its full context ({full_arena} B) fit the {} B",
            board.arena_ram_bytes()
        )?;
    } else {
        crate::outln!(
            "  flash  model           read in place through the 16 KB XIP cache: {model_bytes} B + the arena of its full context ({full_arena} B) exceed the {} B of RAM",
            board.arena_ram_bytes()
        )?;
        crate::outln!(
            "  SRAM   stream buffers  {STREAM_BUFFER_BYTES} B: a DMA channel copies each block of a matrix from flash while the core multiplies the one before (where flash is slower than SRAM: on a board)"
        )?;
        // The firmware's next step: the weights that fit the RAM the buffers and the arena leave.
        let room = weight_copy_room(
            full_arena,
            board.arena_ram_bytes().saturating_sub(STREAM_BUFFER_BYTES),
        );
        let copied = model.copy_range(room).len();
        if copied > 0 {
            crate::outln!(
                "  SRAM   weights         {copied} B of the model's sections (file bytes in one run) copied at boot into the {room} B the arena leaves, read from there"
            )?;
        }
    }
    crate::outln!("  SRAM   arena           activations and the KV cache (above)")?;
    crate::outln!("  SRAM   hot kernels     matvec, attention, softmax, norms, SiLU, RoPE (.data.ramfunc, copied at boot)")?;
    Ok(())
}

/// Quantises a loaded checkpoint into model file bytes.
pub fn export(checkpoint: &Checkpoint, quant: Quant, group_size: usize) -> Result<Vec<u8>> {
    let float = float_model(checkpoint)?;
    let sections = quantize_model(&float, quant, group_size);
    format::write_model(&sections).context("writing the model file")
}

/// The float weights and tokenizer tables of a checkpoint, by checkpoint tensor name.
pub fn float_model(checkpoint: &Checkpoint) -> Result<FloatModel> {
    let m = &checkpoint.config.model;
    let tok = &checkpoint.tokenizer;
    let tensor = |name: &str| -> Result<Vec<f32>> {
        let t = checkpoint
            .tensors
            .get(name)
            .with_context(|| format!("missing tensor {name}"))?;
        Ok(t.flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?)
    };
    let layers = (0..m.n_layers)
        .map(|l| -> Result<FloatLayer> {
            let p = |s: &str| format!("layers.{l}.{s}.weight");
            Ok(FloatLayer {
                attention_norm: tensor(&p("attention_norm"))?,
                wq: tensor(&p("attention.wq"))?,
                wk: tensor(&p("attention.wk"))?,
                wv: tensor(&p("attention.wv"))?,
                wo: tensor(&p("attention.wo"))?,
                ffn_norm: tensor(&p("ffn_norm"))?,
                w1: tensor(&p("feed_forward.w1"))?,
                w2: tensor(&p("feed_forward.w2"))?,
                w3: if m.ffn == Ffn::Swiglu {
                    tensor(&p("feed_forward.w3"))?
                } else {
                    Vec::new()
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // The model has vocab_size rows; a tokenizer trained on little text may have fewer ids.
    let token_bytes: Vec<Vec<u8>> = (0..m.vocab_size as u32)
        .map(|id| {
            if (id as usize) < tok.vocab_size() {
                tok.token_bytes(id)
            } else {
                Vec::new()
            }
        })
        .collect();
    let byte_tokens = match m.tokenizer {
        TokenizerKind::Char | TokenizerKind::Sentencepiece | TokenizerKind::None => Vec::new(),
        TokenizerKind::Bpe => (0..=255u8)
            .map(|b| {
                token_bytes
                    .iter()
                    .position(|t| t.as_slice() == [b])
                    .map(|id| id as u32)
                    .with_context(|| format!("BPE vocabulary has no token for byte {b:#04x}"))
            })
            .collect::<Result<Vec<_>>>()?,
    };
    Ok(FloatModel {
        config: m.engine_config(tok.eot_id(), tok.unk_id()),
        token_bytes,
        merges: tok.merges(),
        byte_tokens,
        tok_embeddings: tensor("tok_embeddings.weight")?,
        layers,
        norm: tensor("norm.weight")?,
        output: if m.tied_embeddings {
            None
        } else {
            Some(tensor("output.weight")?)
        },
    })
}
