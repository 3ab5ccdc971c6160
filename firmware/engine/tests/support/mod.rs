//! Shared helpers for the engine tests: deterministic random float models, and sessions driven
//! over random tokens or through a sampled story.
#![allow(dead_code)]

use std::ops::ControlFlow;

use starmind_engine::format::{Config, FfnKind, Quant, TokenizerKind, NO_TOKEN};
use starmind_engine::forward::{streams_logits, STREAMED_VOCAB};
use starmind_engine::quantize::{FloatLayer, FloatModel};
use starmind_engine::story::{self, Listener, Start, StoryConfig, WhenFull};
use starmind_engine::{Model, SamplerConfig, Session};

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

/// Every logit after each of `steps` random tokens (seeded by `seed`; the whole context at most)
/// fed to `session`.
pub fn random_token_logits(session: &mut Session, steps: usize, seed: u64) -> Vec<i32> {
    let vocab = session.vocab_size();
    let mut rng = Rng(seed);
    let mut logits = vec![0i32; vocab];
    let mut all = Vec::new();
    for _ in 0..steps.min(session.context_len()) {
        let token = (rng.next_u64() % vocab as u64) as u32;
        session.feed_token(token).unwrap();
        session.logits_into(&mut logits);
        all.extend_from_slice(&logits);
    }
    all
}

struct Ids(Vec<u32>);

impl Listener for Ids {
    fn token(&mut self, id: u32) -> ControlFlow<()> {
        self.0.push(id);
        ControlFlow::Continue(())
    }
}

/// The ids of one story of `tokens` tokens that `session` tells from `<|endoftext|>`
/// (temperature, top-k and top-p; the context slides).
pub fn sampled_story(model: &Model, session: &mut Session, tokens: usize) -> Vec<u32> {
    let config = StoryConfig {
        sampler: SamplerConfig {
            temperature_q8: 230,
            top_k: 20,
            top_p_q16: 60_000,
            seed: 5,
        },
        max_tokens: tokens,
        stop_at_end_of_text: false,
        start: Start::AfterEndOfText,
        when_full: WhenFull::Slide,
    };
    let mut ids = vec![0u32; config.ids_len(0, session.context_len())];
    let mut listener = Ids(Vec::new());
    story::tell(model, session, b"", &config, &mut ids, &mut listener).unwrap();
    listener.0
}

/// Random-model shapes whose cuts differ: (name, config, quant). story-1k's shape (two quads, 2
/// heads), GQA with SwiGLU and a tail quad, odd rows with multi-query attention, one quad and a
/// tail, a single quad, head size 16, int4 GQA, and a context longer than the vocabulary.
pub fn shapes() -> [(&'static str, Config, Quant); 8] {
    [
        // story-1k's shape: 8 rows (two quads), 2 heads.
        (
            "story-1k shape",
            config(64, 8, 32, 1, 2, 2, 24, FfnKind::Plain, true),
            Quant::Int8,
        ),
        // stories260k's layout at a test's size: GQA (8 heads over 4), SwiGLU, 86 hidden rows
        // (21 quads and 2 rows).
        (
            "GQA SwiGLU",
            config(96, 32, 86, 2, 8, 4, 20, FfnKind::Swiglu, true),
            Quant::Int8,
        ),
        // Rows not a multiple of 8 (12 = 3 quads, 20 = 5), 3 heads sharing 1 key/value head:
        // the heads are not cut (one group), the rows are.
        (
            "odd rows, multi-query",
            config(70, 12, 20, 2, 3, 1, 16, FfnKind::Swiglu, false),
            Quant::Int8,
        ),
        // 6 rows: one quad and 2 tail rows; 3 heads of 2.
        (
            "a quad and a tail",
            config(38, 6, 18, 1, 3, 3, 12, FfnKind::Plain, true),
            Quant::Int8,
        ),
        // A single quad everywhere but the classifier: nothing of it is cut.
        (
            "a single quad",
            config(40, 4, 4, 2, 2, 1, 10, FfnKind::Plain, true),
            Quant::Int8,
        ),
        // Head size 16 (the any-size attention path), 4 heads over 2.
        (
            "head size 16",
            config(50, 64, 100, 1, 4, 2, 12, FfnKind::Swiglu, false),
            Quant::Int8,
        ),
        (
            "int4 GQA",
            config(80, 16, 44, 2, 4, 2, 16, FfnKind::Swiglu, true),
            Quant::Int4,
        ),
        // A context longer than the vocabulary: the late positions' attention is not cut (the
        // second core's scores live in the logits buffer).
        (
            "context beyond the vocabulary",
            config(20, 8, 24, 1, 2, 2, 40, FfnKind::Plain, true),
            Quant::Int8,
        ),
    ]
}

/// A small model whose vocabulary (41 past [`STREAMED_VOCAB`]) makes the classifier run chunk by
/// chunk in `Session::sample`.
pub fn streamed_vocab_config() -> Config {
    let cfg = config(
        STREAMED_VOCAB + 41,
        8,
        20,
        1,
        2,
        1,
        12,
        FfnKind::Swiglu,
        false,
    );
    assert!(streams_logits(&cfg));
    cfg
}
