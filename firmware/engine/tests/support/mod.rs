//! Shared helpers for the engine tests: deterministic random float models.
#![allow(dead_code)]

use starmind_engine::format::{Config, FfnKind, Quant, TokenizerKind, NO_TOKEN};
use starmind_engine::quantize::{FloatLayer, FloatModel};

/// xorshift64*: deterministic, dependency-free test randomness.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Roughly normal (sum of 4 uniforms), mean 0, standard deviation `std`.
    pub fn normal(&mut self, std: f64) -> f32 {
        let s: f64 = (0..4).map(|_| self.uniform()).sum::<f64>() - 2.0;
        (s * std * 3f64.sqrt()) as f32
    }
    pub fn vec(&mut self, n: usize, std: f64) -> Vec<f32> {
        (0..n).map(|_| self.normal(std)).collect()
    }
}

/// A small config; `tokenizer` Char uses printable ASCII tokens.
#[allow(clippy::too_many_arguments)]
pub fn config(
    vocab: usize,
    dim: usize,
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    seq_len: usize,
    ffn: FfnKind,
    tied: bool,
) -> Config {
    Config {
        vocab_size: vocab,
        dim,
        hidden_dim: hidden,
        n_layers: layers,
        n_heads: heads,
        n_kv_heads: kv_heads,
        seq_len,
        ffn,
        tied_embeddings: tied,
        tokenizer: TokenizerKind::Char,
        quant: Quant::Int8,
        group_size: 0,
        eot_id: 0,
        unk_id: 1,
        head_size: None,
    }
}

/// Char vocabulary: `<|endoftext|>`, U+FFFD for `<unk>`, then printable ASCII from ' '.
pub fn char_vocab(vocab: usize) -> Vec<Vec<u8>> {
    let mut v = vec![b"<|endoftext|>".to_vec(), "\u{FFFD}".as_bytes().to_vec()];
    v.extend((0..vocab.saturating_sub(2)).map(|i| vec![b' ' + (i % 95) as u8]));
    v.truncate(vocab);
    v
}

/// A random float model with weights of trained-model-like magnitude.
pub fn random_model(config: Config, seed: u64) -> FloatModel {
    let mut rng = Rng(seed.max(1));
    let (d, h, q, kv, v) = (
        config.dim,
        config.hidden_dim,
        config.q_dim(),
        config.kv_dim(),
        config.vocab_size,
    );
    let norm = |rng: &mut Rng| (0..d).map(|_| 1.0 + rng.normal(0.2)).collect::<Vec<f32>>();
    let layers = (0..config.n_layers)
        .map(|_| FloatLayer {
            attention_norm: norm(&mut rng),
            wq: rng.vec(q * d, 1.0 / (d as f64).sqrt()),
            wk: rng.vec(kv * d, 1.0 / (d as f64).sqrt()),
            wv: rng.vec(kv * d, 1.0 / (d as f64).sqrt()),
            wo: rng.vec(d * q, 0.5 / (q as f64).sqrt()),
            ffn_norm: norm(&mut rng),
            w1: rng.vec(h * d, 1.0 / (d as f64).sqrt()),
            w2: rng.vec(d * h, 0.5 / (h as f64).sqrt()),
            w3: if config.ffn == FfnKind::Swiglu {
                rng.vec(h * d, 1.0 / (d as f64).sqrt())
            } else {
                vec![]
            },
        })
        .collect();
    let unk = if config.tokenizer == TokenizerKind::Char {
        1
    } else {
        NO_TOKEN
    };
    FloatModel {
        config: Config {
            unk_id: unk,
            ..config
        },
        token_bytes: char_vocab(v),
        merges: vec![],
        byte_tokens: vec![],
        tok_embeddings: rng.vec(v * d, 1.0),
        layers,
        norm: norm(&mut rng),
        output: if config.tied_embeddings {
            None
        } else {
            Some(rng.vec(v * d, 1.0))
        },
    }
}
