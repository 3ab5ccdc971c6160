//! Model files of a config's exact shape with PRNG weights: speed depends only on the shape, so
//! `bench --configs` benches these instead of trained models, and the tests flash and bench them.

use anyhow::Context as _;
use starmind_engine::format::{write_model, Config, Quant, TokenizerKind};
use starmind_engine::quantize::{quantize_model, FloatLayer, FloatModel};

use crate::config::{Ffn, ModelConfig};

/// A model file of `m`'s shape with PRNG weights (uniform ±0.1, unit norms).
pub fn model_file(m: &ModelConfig, seed: u64) -> anyhow::Result<Vec<u8>> {
    let mut state = seed | 1;
    let mut random = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect()
    };
    let (q_dim, kv_dim) = (m.q_dim(), m.kv_dim());
    let swiglu = matches!(m.ffn, Ffn::Swiglu);
    let layers = (0..m.n_layers)
        .map(|_| FloatLayer {
            attention_norm: vec![1.0; m.dim],
            wq: random(q_dim * m.dim),
            wk: random(kv_dim * m.dim),
            wv: random(kv_dim * m.dim),
            wo: random(m.dim * q_dim),
            ffn_norm: vec![1.0; m.dim],
            w1: random(m.hidden_dim * m.dim),
            w2: random(m.dim * m.hidden_dim),
            w3: if swiglu {
                random(m.hidden_dim * m.dim)
            } else {
                Vec::new()
            },
        })
        .collect();
    // id 0 <|endoftext|>, id 1 <unk>, then one character each: printable ASCII first.
    let mut token_bytes = vec![b"<|endoftext|>".to_vec(), "\u{FFFD}".as_bytes().to_vec()];
    let chars = (b' '..=b'~')
        .map(char::from)
        .chain(('\u{00A1}'..).filter(|c| !c.is_control()));
    token_bytes.extend(
        chars
            .take(m.vocab_size.saturating_sub(2))
            .map(|c| c.to_string().into_bytes()),
    );
    // The synthetic vocabulary is char-level whatever the config's tokenizer.
    let config = Config {
        tokenizer: TokenizerKind::Char,
        ..m.engine_config(0, (m.vocab_size > 1).then_some(1))
    };
    let float = FloatModel {
        config,
        token_bytes,
        merges: Vec::new(),
        byte_tokens: Vec::new(),
        tok_embeddings: random(m.vocab_size * m.dim),
        layers,
        norm: vec![1.0; m.dim],
        output: if m.tied_embeddings {
            None
        } else {
            Some(random(m.vocab_size * m.dim))
        },
    };
    write_model(&quantize_model(&float, Quant::Int8, 0)).context("writing the synthetic model")
}
