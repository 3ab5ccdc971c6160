//! Float weights → model file sections (host only, feature `std`). The exporter fills a
//! [`FloatModel`] from a checkpoint and calls [`quantize_model`] then
//! [`crate::format::write_model`]. Why these schemes: docs/quantization.md.

use crate::format::{pad_to_align, Config, FfnKind, ModelSections, Quant, TokenizerKind};
use crate::kernels::Multiplier;
use std::vec::Vec;

/// One layer's float tensors, `[out, in]` row-major like the checkpoint.
#[derive(Debug, Clone, Default)]
pub struct FloatLayer {
    pub attention_norm: Vec<f32>,
    pub wq: Vec<f32>,
    pub wk: Vec<f32>,
    pub wv: Vec<f32>,
    pub wo: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    pub w1: Vec<f32>,
    pub w2: Vec<f32>,
    /// Empty for the plain FFN.
    pub w3: Vec<f32>,
}

/// A float model plus its tokenizer tables, ready to quantise.
#[derive(Debug, Clone)]
pub struct FloatModel {
    /// `quant` and `group_size` here are ignored; [`quantize_model`] sets them.
    pub config: Config,
    pub token_bytes: Vec<Vec<u8>>,
    pub merges: Vec<(u32, u32, u32)>,
    /// BPE: the token of each byte value; empty for char tokenizers.
    pub byte_tokens: Vec<u32>,
    pub tok_embeddings: Vec<f32>,
    pub layers: Vec<FloatLayer>,
    pub norm: Vec<f32>,
    /// `None` when tied to the embedding.
    pub output: Option<Vec<f32>>,
}

/// `x` (> 0) as a multiplier with a 31-bit mantissa in `[2³⁰, 2³¹)`.
pub fn multiplier_from_f64(x: f64) -> Multiplier {
    if !(x.is_finite() && x > 0.0) {
        return Multiplier::ZERO;
    }
    let mut shift = 30 - x.log2().floor() as i32;
    let mut mant = (x * 2f64.powi(shift)).round();
    if mant >= 2f64.powi(31) {
        mant /= 2.0;
        shift -= 1;
    }
    if !(0..=62).contains(&shift) {
        return Multiplier::ZERO; // out of range for the device: such a weight is unusable
    }
    Multiplier {
        mant: mant as u32,
        shift,
    }
}

/// The real value of a multiplier.
pub fn multiplier_to_f64(m: Multiplier) -> f64 {
    m.mant as f64 * 2f64.powi(-m.shift)
}

/// Scheme 1: `W[r,c] ≈ q[r,c] · s_r`, `s_r = max_c |W[r,c]| / 127`, `q` int8 (round to nearest).
pub fn quantize_int8(w: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    assert_eq!(w.len(), rows * cols, "matrix size");
    let mut scales = Vec::with_capacity(rows * 8);
    let mut weights = Vec::with_capacity(rows * cols);
    for row in w.chunks_exact(cols.max(1)).take(rows) {
        let max = row.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
        let step = multiplier_from_f64(max / 127.0);
        let s = multiplier_to_f64(step);
        scales.extend_from_slice(&step.to_le_bytes());
        weights.extend(row.iter().map(|&v| {
            if s > 0.0 {
                (v as f64 / s).round().clamp(-127.0, 127.0) as i8 as u8
            } else {
                0
            }
        }));
    }
    pad_to_align(&mut weights);
    scales.extend_from_slice(&weights);
    scales
}

/// [`quantize_int8`] with the weights in row quads ([`crate::format::WeightLayout::RowQuads`]): the
/// layout of the int8 layer matrices from format version 2 on, and of the embedding and the
/// classifier from version 3 on.
pub fn quantize_int8_quads(w: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let mut section = quantize_int8(w, rows, cols);
    let (start, n) = (rows * 8, rows * cols);
    let plain = section[start..start + n].to_vec();
    crate::kernels::quad_rows(&plain, rows, cols, &mut section[start..start + n]);
    section
}

/// Scheme 2: `W[r,c] ≈ q[r,c] · g[r,c/G] · s_r` with `q` int4 in `[-8, 7]`, `g ∈ 1..=255` per
/// group of `G` columns, `s_r = max_c |W[r,c]| / (7·255)`.
pub fn quantize_int4(w: &[f32], rows: usize, cols: usize, group: usize) -> Vec<u8> {
    assert_eq!(w.len(), rows * cols, "matrix size");
    let groups = cols.div_ceil(group);
    let mut scales = Vec::with_capacity(rows * 8);
    let mut group_scales = Vec::with_capacity(rows * groups);
    let mut nibbles = Vec::with_capacity(rows * cols.div_ceil(2));
    for row in w.chunks_exact(cols.max(1)).take(rows) {
        let max = row.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
        let step = multiplier_from_f64(max / (7.0 * 255.0));
        let s = multiplier_to_f64(step);
        scales.extend_from_slice(&step.to_le_bytes());
        let mut packed = vec_zeroed(cols.div_ceil(2));
        for (g, chunk) in row.chunks(group).enumerate() {
            let gmax = chunk.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
            let gscale = if s > 0.0 {
                (gmax / (7.0 * s)).ceil().clamp(1.0, 255.0)
            } else {
                1.0
            };
            group_scales.push(gscale as u8);
            for (i, &v) in chunk.iter().enumerate() {
                let q = if s > 0.0 {
                    (v as f64 / (gscale * s)).round().clamp(-8.0, 7.0) as i8
                } else {
                    0
                };
                let c = g * group + i;
                let nibble = (q as u8) & 0x0F;
                packed[c / 2] |= if c.is_multiple_of(2) {
                    nibble
                } else {
                    nibble << 4
                };
            }
        }
        nibbles.extend_from_slice(&packed);
    }
    pad_to_align(&mut group_scales);
    pad_to_align(&mut nibbles);
    scales.extend_from_slice(&group_scales);
    scales.extend_from_slice(&nibbles);
    scales
}

fn vec_zeroed(n: usize) -> Vec<u8> {
    std::vec![0u8; n]
}

/// RMSNorm gains as `i32` Q16.16.
pub fn norm_q16(g: &[f32]) -> Vec<u8> {
    g.iter()
        .flat_map(|&v| {
            ((v as f64 * 65536.0)
                .round()
                .clamp(i32::MIN as f64, i32::MAX as f64) as i32)
                .to_le_bytes()
        })
        .collect()
}

/// RoPE `(cos, sin)` in Q30 for every position and pair (llama2.c convention).
pub fn rope_table(seq_len: usize, head_size: usize) -> Vec<(i32, i32)> {
    let mut table = Vec::with_capacity(seq_len * (head_size / 2));
    for pos in 0..seq_len {
        for j in 0..head_size / 2 {
            let angle = rope_angle(pos, j, head_size);
            let q30 = |v: f64| (v * (1u64 << 30) as f64).round() as i32;
            table.push((q30(angle.cos()), q30(angle.sin())));
        }
    }
    table
}

/// `pos · 10000^(−2j/head_size)`.
pub fn rope_angle(pos: usize, pair: usize, head_size: usize) -> f64 {
    pos as f64 * 10000f64.powf(-2.0 * pair as f64 / head_size as f64)
}

/// Quantises every tensor of `m` with `quant` (layer matrices, int8 ones in row quads; embedding
/// and classifier are always int8, in row quads) into file sections.
pub fn quantize_model(m: &FloatModel, quant: Quant, group_size: usize) -> ModelSections {
    let mut config = m.config;
    config.quant = quant;
    config.group_size = if quant == Quant::Int4 { group_size } else { 0 };
    let c = &config;
    let (dim, q_dim, kv, hidden) = (c.dim, c.q_dim(), c.kv_dim(), c.hidden_dim);
    let matrix = |w: &[f32], rows: usize, cols: usize| match quant {
        Quant::Int8 => quantize_int8_quads(w, rows, cols),
        Quant::Int4 => quantize_int4(w, rows, cols, group_size),
    };
    let layers = m
        .layers
        .iter()
        .map(|l| {
            [
                norm_q16(&l.attention_norm),
                matrix(&l.wq, q_dim, dim),
                matrix(&l.wk, kv, dim),
                matrix(&l.wv, kv, dim),
                matrix(&l.wo, dim, q_dim),
                norm_q16(&l.ffn_norm),
                matrix(&l.w1, hidden, dim),
                matrix(&l.w2, dim, hidden),
                if c.ffn == FfnKind::Swiglu {
                    matrix(&l.w3, hidden, dim)
                } else {
                    Vec::new()
                },
            ]
        })
        .collect();
    ModelSections {
        config,
        token_bytes: m.token_bytes.clone(),
        merges: m.merges.clone(),
        byte_tokens: if c.tokenizer == TokenizerKind::Bpe {
            m.byte_tokens.clone()
        } else {
            Vec::new()
        },
        rope_q30: rope_table(c.seq_len, c.head_size()),
        token_embedding: quantize_int8_quads(&m.tok_embeddings, c.vocab_size, dim),
        layers,
        final_norm: norm_q16(&m.norm),
        output: match &m.output {
            Some(w) if !c.tied_embeddings => quantize_int8_quads(w, c.vocab_size, dim),
            _ => Vec::new(),
        },
    }
}
