//! The integer forward pass, top to bottom, like llama2.c's `run.c`: [`Config`] (from the file
//! header), weights (slices into the file: [`Model`]), [`State`] (every activation buffer and the
//! KV cache, carved once from a caller-provided arena), then [`Session::feed`].
//!
//! Numerics (why: docs/quantization.md):
//! - residual stream and every activation vector: `i32` Q16.16;
//! - before each matrix-vector product the input is quantised to ±2047 with one power-of-two
//!   step per vector (`2^k ≥ max|x|/2047`: a shift), the dot products with the int8 (or int4)
//!   weights accumulate in `i32`, and each output row is rescaled once by (row multiplier ×
//!   input step): with the file's 15-bit row mantissas, two 16×16 products per row;
//! - KV cache within ±2047 in `i16`, one power-of-two step per (layer, position) for keys and one
//!   for values (int8 cost 3 points of greedy agreement on chat-8k: docs/quantization.md), kept
//!   as ready multipliers, so attention forms none (at head sizes 4, 16, 64 a score is a shift);
//! - RMSNorm with a table `1/√`, softmax with a fixed-point `exp`, SiLU with a table sigmoid,
//!   RoPE from the file's Q30 cos/sin table.
//!
//! Code placement: with the `rp2040` feature every function of the per-token path (this file's,
//! the kernels', the sampler's) carries `link_section = ".data.ramfunc"`, so cortex-m-rt copies
//! it to SRAM at boot with the other initialised data (~20 KiB) and it runs from there: a board's
//! XIP cache (16 KiB) cannot hold the firmware's hot code, and every line it misses stalls the core
//! (the emulator's XIP model measured +53 % cycles/token on story-1k with the code in flash,
//! +0.1 % with it in SRAM). rust-lld adds the long-branch thunks between flash and SRAM.
//!
//! Logits come out in Q16.16; the host turns them into log-probabilities in `f64` for bits per
//! byte, the device samples them with [`crate::sampler`].

use crate::cores::{split_point, Cores, OneCore};
use crate::format::{Config, FfnKind, LayerWeights, Matrix, Model, Quant, WeightLayout};
#[cfg(target_arch = "arm")]
use crate::kernels::matvec_i8_x4_pow2;
#[cfg(target_arch = "arm")]
use crate::kernels::EXP2_Q30;
use crate::kernels::{
    act_step, div_rem_u32, exp_q16, isqrt_u64, matvec_i4, matvec_i8, matvec_i8_x4, mul_wide_i32,
    mul_wide_u32, quantize_act, quantize_act4, quantize_kv, rmsnorm, silu_gate_in_place,
    silu_in_place, Multiplier, KV_LEVELS, QUAD_ROWS,
};
use crate::sampler::Sampler;
use crate::stream::WeightStream;
use core::fmt;

/// What can go wrong while running a valid model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineError {
    /// The arena is smaller than [`Model::arena_bytes`].
    ArenaTooSmall { needed: usize, got: usize },
    /// The requested context is 0 or longer than the model's RoPE table (`seq_len`).
    BadContextLength { requested: usize, max: usize },
    /// A token id ≥ vocab_size.
    TokenOutOfRange(u32),
    /// Every position of the KV cache is used; call [`Session::reset`].
    ContextFull,
    /// [`Session::prefill`] with no tokens.
    EmptyPrompt,
    /// [`Model::encode`]'s output buffer cannot hold the prompt.
    BufferTooSmall,
    /// [`Model::encode`] got text for a model without a tokenizer ([`crate::TokenizerKind::None`]).
    NoTokenizer,
    /// [`Session::feed`] on a model whose vocabulary is streamed ([`streams_logits`]): its
    /// logits never exist all at once; use [`Session::feed_token`] and [`Session::sample`] or
    /// [`Session::logits_into`].
    LogitsStreamed,
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EngineError::ArenaTooSmall { needed, got } => {
                write!(f, "arena too small: needs {needed} bytes, has {got}")
            }
            EngineError::BadContextLength { requested, max } => {
                write!(f, "context length {requested} not in 1..={max}")
            }
            EngineError::TokenOutOfRange(id) => write!(f, "token id {id} outside the vocabulary"),
            EngineError::ContextFull => write!(f, "context is full"),
            EngineError::EmptyPrompt => write!(f, "empty prompt"),
            EngineError::BufferTooSmall => write!(f, "token buffer too small for the prompt"),
            EngineError::NoTokenizer => write!(
                f,
                "the model has no tokenizer (it runs on token ids): give an empty prompt"
            ),
            EngineError::LogitsStreamed => write!(
                f,
                "the vocabulary is streamed in chunks: there is no whole logits vector"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EngineError {}

/// Vocabularies larger than this are streamed: the classifier runs [`LOGITS_CHUNK_ROWS`] rows
/// at a time, straight from flash, and the sampler consumes each chunk as it comes, so RAM holds
/// one chunk of logits instead of `vocab_size` of them (32000 × 4 B would not fit next to a
/// useful KV cache on the RP2040). Smaller vocabularies keep the whole logits vector.
pub const STREAMED_VOCAB: usize = 8192;
/// Logits computed per chunk when the vocabulary is streamed (1 KiB of RAM).
pub const LOGITS_CHUNK_ROWS: usize = 256;

/// Whether `config`'s classifier is streamed in chunks (vocabulary above [`STREAMED_VOCAB`]).
pub fn streams_logits(config: &Config) -> bool {
    config.vocab_size > STREAMED_VOCAB
}

/// Sizes of the activation buffers and KV cache for a context length, in elements.
struct Layout {
    dim: usize,
    /// Queries and attention output: `n_heads · head_size` (`dim` unless the head size is
    /// explicit).
    q_dim: usize,
    kv_dim: usize,
    hidden: usize,
    ctx: usize,
    vocab: usize,
    /// `n_layers × ctx` cached key (and value) vectors.
    kv_positions: usize,
    n_layers: usize,
    /// `i32` words: x, xb, xb2, q, k, v, hb, hb2, att, logits, key/value steps (2 words each),
    /// each layer's step bounds.
    words: usize,
    /// `i16` elements: key cache, value cache.
    kv_elems: usize,
}

impl Layout {
    fn new(c: &Config, ctx: usize) -> Layout {
        let (dim, q_dim, kv_dim, hidden) = (c.dim, c.q_dim(), c.kv_dim(), c.hidden_dim);
        // The logits buffer: the whole vocabulary, or one chunk of it when streamed.
        let vocab = if streams_logits(c) {
            LOGITS_CHUNK_ROWS
        } else {
            c.vocab_size
        };
        let kv_positions = c.n_layers * ctx;
        // x, xb2: dim; xb: dim or the attention output; q: q_dim; xq: any matmul input.
        let words = 2 * dim
            + dim.max(q_dim)
            + q_dim
            + 2 * kv_dim
            + 2 * hidden
            + ctx
            + vocab
            + dim.max(hidden).max(q_dim)
            + 2 * STEP_WORDS * kv_positions
            + BOUNDS_WORDS * c.n_layers;
        let kv_elems = 2 * kv_positions * kv_dim;
        Layout {
            dim,
            q_dim,
            kv_dim,
            hidden,
            ctx,
            vocab,
            kv_positions,
            n_layers: c.n_layers,
            words,
            kv_elems,
        }
    }
    fn arena_bytes(&self) -> usize {
        // + 3 for aligning the i32 part inside an arbitrary byte buffer.
        3 + 4 * self.words + 2 * self.kv_elems
    }
}

/// Arena bytes for `config` with a `ctx_len` KV cache (see [`Model::arena_bytes`]).
pub(crate) fn arena_layout_bytes(config: &Config, ctx_len: usize) -> usize {
    Layout::new(config, ctx_len).arena_bytes()
}

impl<'a> Model<'a> {
    /// Arena bytes a [`Session`] with context `ctx_len` needs: activations + KV cache. Sizes are
    /// bounded by [`Config::validate`], so this cannot overflow for a parsed model.
    pub fn arena_bytes(config: &Config, ctx_len: usize) -> usize {
        arena_layout_bytes(config, ctx_len)
    }
}

/// Every activation buffer and the KV cache (llama2.c's `RunState`), carved from the arena.
pub struct State<'a> {
    /// Residual stream (Q16.16, `dim`).
    x: &'a mut [i32],
    /// Normalised input (`dim`) / attention output (`q_dim`).
    xb: &'a mut [i32],
    /// Output of a projection before the residual add (`dim`).
    xb2: &'a mut [i32],
    q: &'a mut [i32],
    k: &'a mut [i32],
    v: &'a mut [i32],
    /// FFN hidden (`hidden_dim`), and the SwiGLU gate's second branch.
    hb: &'a mut [i32],
    hb2: &'a mut [i32],
    /// Attention scores, then probabilities (Q16.16), one per position.
    att: &'a mut [i32],
    /// Next-token logits: the whole vocabulary, or one chunk of it ([`streams_logits`]).
    logits: &'a mut [i32],
    /// The quantised (±2047) input of the current matrix-vector product.
    xq: &'a mut [i32],
    /// `[layer][pos][kv_dim]` keys and values, ±2047 in `i16`.
    key_cache: &'a mut [i16],
    value_cache: &'a mut [i16],
    /// `[layer][pos]` steps of the cached key / value vectors ([`STEP_WORDS`] words each, see
    /// [`put_step`]): the key's step (Q16.16 per unit) and the value's step × 2⁻⁸ (it weighs the
    /// Q16 probabilities into Q24).
    key_steps: &'a mut [i32],
    value_steps: &'a mut [i32],
    /// `[layer]` the [`StepBounds`] of its cached steps ([`BOUNDS_WORDS`] words each).
    bounds: &'a mut [i32],
}

/// `i32` words of one layer's [`StepBounds`] in the arena.
const BOUNDS_WORDS: usize = 5;

/// What the cached steps of one layer's positions allow [`attention`]'s lean passes, kept as
/// each position is written ([`StepBounds::with`]: a position 0 starts them afresh, so after a
/// session goes back they may also cover positions past the current one, which only widens
/// them), or found by [`StepBounds::scan`] for a cache not from a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StepBounds {
    /// Every key step the engine's power of two (mantissa 2³⁰, as `act_step` writes them).
    pub keys_pow2: bool,
    /// The smallest and largest key-step shift.
    pub key_shift_min: i32,
    pub key_shift_max: i32,
    /// Every value step of mantissa 2³⁰ with its shift in 17..=47 ([`pv4_lean`]'s steps).
    pub values_lean: bool,
    /// The smallest value-step shift.
    pub value_shift_min: i32,
}

impl StepBounds {
    /// Bounds that allow nothing (steps that are short, or not looked at).
    const NONE: StepBounds = StepBounds {
        keys_pow2: false,
        key_shift_min: 0,
        key_shift_max: 0,
        values_lean: false,
        value_shift_min: 0,
    };

    /// Of one position's key and value steps (two words each, as [`put_step`] stores them).
    fn of(key: &[i32], value: &[i32]) -> StepBounds {
        let (Some(&[km, ks]), Some(&[vm, vs])) = (key.get(..2), value.get(..2)) else {
            return StepBounds::NONE;
        };
        StepBounds {
            keys_pow2: km == 1 << 30,
            key_shift_min: ks,
            key_shift_max: ks,
            values_lean: vm == 1 << 30 && (17..=47).contains(&vs),
            value_shift_min: vs,
        }
    }

    /// These bounds and one more position's.
    fn with(self, more: StepBounds) -> StepBounds {
        StepBounds {
            keys_pow2: self.keys_pow2 && more.keys_pow2,
            key_shift_min: self.key_shift_min.min(more.key_shift_min),
            key_shift_max: self.key_shift_max.max(more.key_shift_max),
            values_lean: self.values_lean && more.values_lean,
            value_shift_min: self.value_shift_min.min(more.value_shift_min),
        }
    }

    /// Of the first `n ≥ 1` positions of the steps (none allowed when they are short).
    pub(crate) fn scan(key_steps: &[i32], value_steps: &[i32], n: usize) -> StepBounds {
        let (Some(keys), Some(values)) = (
            key_steps.get(..STEP_WORDS * n),
            value_steps.get(..STEP_WORDS * n),
        ) else {
            return StepBounds::NONE;
        };
        let mut pairs = keys
            .chunks_exact(STEP_WORDS)
            .zip(values.chunks_exact(STEP_WORDS))
            .map(|(k, v)| StepBounds::of(k, v));
        let first = pairs.next().unwrap_or(StepBounds::NONE);
        pairs.fold(first, StepBounds::with)
    }

    /// As [`StepBounds::to_words`] wrote them; short words allow nothing.
    fn from_words(w: &[i32]) -> StepBounds {
        match w.get(..BOUNDS_WORDS) {
            Some(&[kp, kmin, kmax, vl, vmin]) => StepBounds {
                keys_pow2: kp != 0,
                key_shift_min: kmin,
                key_shift_max: kmax,
                values_lean: vl != 0,
                value_shift_min: vmin,
            },
            _ => StepBounds::NONE,
        }
    }

    fn to_words(self, w: &mut [i32]) {
        if let Some(w) = w.get_mut(..BOUNDS_WORDS) {
            w.copy_from_slice(&[
                self.keys_pow2 as i32,
                self.key_shift_min,
                self.key_shift_max,
                self.values_lean as i32,
                self.value_shift_min,
            ]);
        }
    }
}

/// `i32` words of one cached step: a [`Multiplier`]'s mantissa and shift.
pub(crate) const STEP_WORDS: usize = 2;

/// Stores `m` at step slot `slot` of `steps`.
pub(crate) fn put_step(steps: &mut [i32], slot: usize, m: Multiplier) {
    if let Some(words) = steps.get_mut(slot * STEP_WORDS..(slot + 1) * STEP_WORDS) {
        words[0] = m.mant as i32;
        words[1] = m.shift;
    }
}

/// The multiplier [`put_step`] stored in `words` (two words).
#[inline(always)]
fn step_at(words: &[i32]) -> Multiplier {
    Multiplier {
        mant: words[0] as u32,
        shift: words[1],
    }
}

fn take<'a, T>(buf: &mut &'a mut [T], n: usize) -> &'a mut [T] {
    let (head, tail) = core::mem::take(buf).split_at_mut(n);
    *buf = tail;
    head
}

impl<'a> State<'a> {
    fn carve(layout: &Layout, arena: &'a mut [u8]) -> Result<State<'a>, EngineError> {
        let needed = layout.arena_bytes();
        if arena.len() < needed {
            return Err(EngineError::ArenaTooSmall {
                needed,
                got: arena.len(),
            });
        }
        let skip = arena.as_ptr().align_offset(4).min(3);
        let (words_part, bytes_part) = arena[skip..].split_at_mut(4 * layout.words);
        // SAFETY: `words_part` starts 4-byte aligned (align_offset above; ≤ 3 bytes skipped, which
        // the layout reserves) and holds exactly `layout.words` i32s; every bit pattern is a valid
        // i32 and i8, and both slices keep the arena's exclusive borrow for 'a.
        let mut words: &'a mut [i32] = unsafe {
            core::slice::from_raw_parts_mut(words_part.as_mut_ptr().cast::<i32>(), layout.words)
        };
        // SAFETY: `bytes_part` starts 4·words bytes after an aligned start, so it is 2-byte
        // aligned, and holds ≥ 2·kv_elems bytes (checked against arena_bytes above); every bit
        // pattern is a valid i16.
        let mut kv: &'a mut [i16] = unsafe {
            core::slice::from_raw_parts_mut(bytes_part.as_mut_ptr().cast::<i16>(), layout.kv_elems)
        };
        let kv_positions = layout.kv_positions;
        Ok(State {
            x: take(&mut words, layout.dim),
            xb: take(&mut words, layout.dim.max(layout.q_dim)),
            xb2: take(&mut words, layout.dim),
            q: take(&mut words, layout.q_dim),
            k: take(&mut words, layout.kv_dim),
            v: take(&mut words, layout.kv_dim),
            hb: take(&mut words, layout.hidden),
            hb2: take(&mut words, layout.hidden),
            att: take(&mut words, layout.ctx),
            logits: take(&mut words, layout.vocab),
            xq: take(&mut words, layout.dim.max(layout.hidden).max(layout.q_dim)),
            key_steps: take(&mut words, STEP_WORDS * kv_positions),
            value_steps: take(&mut words, STEP_WORDS * kv_positions),
            bounds: take(&mut words, BOUNDS_WORDS * layout.n_layers),
            key_cache: take(&mut kv, kv_positions * layout.kv_dim),
            value_cache: take(&mut kv, kv_positions * layout.kv_dim),
        })
    }
}

/// One generation context: a model, its state and the next position.
pub struct Session<'m, 'a> {
    model: &'m Model<'m>,
    config: Config,
    state: State<'a>,
    ctx_len: usize,
    pos: usize,
    /// `1 / (sqrt(head_size) · 2¹⁶)`: turns (q step × k step × int dot) into a Q16.16 score.
    score_scale: Multiplier,
    /// The classifier's input (the final-normed, quantised `x`) sits in `state.xq[..dim]` with
    /// this step once a token has been fed ([`streams_logits`] models classify from it later).
    classifier_step: Option<Multiplier>,
    /// The first [`CACHED_LAYERS`] layers' tensors and the classifier, found in the file once
    /// (each `Model::layer` reads nine section entries: ~1,750 cycles a layer on the M0+).
    layers: [Option<LayerWeights<'m>>; CACHED_LAYERS],
    output: Matrix<'m>,
    /// The two cores that share each forward pass ([`Session::set_cores`]); `None`: this core
    /// alone, uncut ([`OneCore`]).
    cores: Option<&'a dyn Cores>,
    /// Copies flash weights into RAM behind the one-core pass's arithmetic
    /// ([`Session::set_stream`]); `None`: every weight read in place.
    stream: Option<Streaming<'a>>,
}

/// Layers whose tensors a [`Session`] keeps (deeper ones are looked up per token).
const CACHED_LAYERS: usize = 8;

/// `1/√head_size` as a multiplier (the attention scores' scale, formed once per session):
/// `2⁶² / (√hs · 2³⁰) = 2³²/√hs` with 48 fraction bits. `√hs · 2³⁰` is the integer square root
/// of `hs · 2^e` shifted up by `(60 − e)/2`, with the largest even `e ≤ 60` for which `hs · 2^e`
/// fits `u64`: `e = 60` (exact to the last bit) below head size 16, one or more bits fewer from
/// there on (`hs << 60` itself wraps for `hs ≥ 16`: head size 24 got the scale of 8, √3 too
/// large, and 16 or 32 that of 0).
pub(crate) fn score_scale(head_size: usize) -> Multiplier {
    let hs = head_size.max(1) as u64;
    let mut e = 60;
    while e > 0 && hs > u64::MAX >> e {
        e -= 2;
    }
    let root = (isqrt_u64(hs << e) << ((60 - e) / 2)).max(1);
    Multiplier::from_fixed((1u64 << 62) / root, 32 + 16)
}

impl<'m, 'a> Session<'m, 'a> {
    /// A session with a KV cache of `ctx_len` positions (≤ the model's `seq_len`) in `arena`.
    /// Out of line: inlined into the firmware's boot function its temporaries (the layers' tensors)
    /// would stay in that frame, under every forward pass's stack.
    #[inline(never)]
    pub fn new(
        model: &'m Model<'m>,
        ctx_len: usize,
        arena: &'a mut [u8],
    ) -> Result<Session<'m, 'a>, EngineError> {
        let config = model.config();
        if ctx_len == 0 || ctx_len > config.seq_len {
            return Err(EngineError::BadContextLength {
                requested: ctx_len,
                max: config.seq_len,
            });
        }
        let state = State::carve(&Layout::new(&config, ctx_len), arena)?;
        let score_scale = score_scale(config.head_size());
        let mut layers = [None; CACHED_LAYERS];
        for (l, layer) in layers.iter_mut().enumerate().take(config.n_layers) {
            *layer = Some(model.layer(l));
        }
        Ok(Session {
            model,
            config,
            state,
            ctx_len,
            pos: 0,
            score_scale,
            classifier_step: None,
            layers,
            output: model.output(),
            cores: None,
            stream: None,
        })
    }

    /// Shares every following forward pass between two cores (`Some`: its big matrix-vector
    /// products cut by rows and its attention by heads, [`crate::cores`]), or runs it on this
    /// core alone (`None`, the default). The outputs are the same bits either way.
    pub fn set_cores(&mut self, cores: Option<&'a dyn Cores>) {
        self.cores = cores;
    }

    /// Multiplies the one-core pass's matrices with their weights fetched through `stream`
    /// ([`crate::stream`]: a lead read in place, then blocks copied into RAM while the block
    /// before is multiplied), or reads them all in place (`None`, the default). The outputs are
    /// the same bits either way. A pass cut between two cores reads in place: one stream for
    /// two cores' rows is not built (two cores' line fills already overlap each other's
    /// arithmetic; unmeasured, rp2040js has one core).
    pub fn set_stream(&mut self, stream: Option<&'a mut dyn WeightStream>) {
        self.stream = stream.map(|stream| Streaming {
            stream,
            ahead: None,
        });
    }

    /// Tokens fed so far (the position of the next one).
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The KV cache length this session was made with.
    pub fn context_len(&self) -> usize {
        self.ctx_len
    }

    /// True when no more tokens fit in the context.
    pub fn is_full(&self) -> bool {
        self.pos >= self.ctx_len
    }

    /// Starts a fresh context (the KV cache is overwritten as positions are reused).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.classifier_step = None;
    }

    /// The model's vocabulary size (the length of a whole logits vector).
    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// Whether this model's logits come in chunks ([`streams_logits`]).
    pub fn streams_logits(&self) -> bool {
        streams_logits(&self.config)
    }

    /// Feeds every token of `tokens` (a loop of decode steps) and returns the logits after the
    /// last one.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<&[i32], EngineError> {
        let (&last, rest) = tokens.split_last().ok_or(EngineError::EmptyPrompt)?;
        for &t in rest {
            self.feed(t)?;
        }
        self.feed(last)
    }

    /// Runs one token at the next position and returns the next-token logits (Q16.16, one per
    /// vocabulary entry). A streamed vocabulary ([`streams_logits`]) has no whole logits
    /// vector: [`EngineError::LogitsStreamed`].
    pub fn feed(&mut self, token: u32) -> Result<&[i32], EngineError> {
        if self.streams_logits() {
            return Err(EngineError::LogitsStreamed);
        }
        self.feed_token(token)?;
        Ok(self.state.logits)
    }

    /// Feeds every token of `tokens` without handing out logits (any vocabulary size); sample
    /// the next token with [`Session::sample`].
    pub fn prefill_tokens(&mut self, tokens: &[u32]) -> Result<(), EngineError> {
        if tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        tokens.iter().try_for_each(|&t| self.feed_token(t))
    }

    /// Runs one token at the next position (any vocabulary size). A small vocabulary's logits
    /// are computed now (as [`Session::feed`] does); a streamed one's when they are consumed
    /// ([`Session::sample`], [`Session::logits_into`]).
    pub fn feed_token(&mut self, token: u32) -> Result<(), EngineError> {
        // Decided once per token, first: what follows is the one-core pass, uncut.
        if let Some(cores) = self.cores {
            return self.feed_split(token, cores);
        }
        self.check_feed(token)?;
        self.feed_on(token, &OneCore);
        Ok(())
    }

    /// Whether `token` can be fed now.
    #[inline(always)]
    fn check_feed(&self, token: u32) -> Result<(), EngineError> {
        if token as usize >= self.config.vocab_size {
            return Err(EngineError::TokenOutOfRange(token));
        }
        if self.pos >= self.ctx_len {
            return Err(EngineError::ContextFull);
        }
        Ok(())
    }

    /// [`Session::feed_token`] cut between `cores`, out of line.
    #[inline(never)]
    fn feed_split(&mut self, token: u32, cores: &dyn Cores) -> Result<(), EngineError> {
        self.check_feed(token)?;
        self.feed_on(token, cores);
        Ok(())
    }

    /// [`Session::feed_token`] on `cores`, after the checks.
    #[inline(always)]
    fn feed_on<C: Cores + ?Sized>(&mut self, token: u32, cores: &C) {
        // The matrix after the last layer's w2: the classifier, unless it runs chunk by chunk
        // in `sample`.
        let classifier = (!self.streams_logits()).then_some(&self.output);
        let step = forward(
            self.model,
            &self.layers,
            &mut self.state,
            &self.config,
            self.ctx_len,
            self.score_scale,
            token,
            self.pos,
            cores,
            &mut self.stream,
            classifier,
        );
        if !self.streams_logits() {
            // logits = output · rmsnorm(x), all of them.
            let dim = self.config.dim;
            let x = &self.state.xq[..dim];
            let output = &self.output;
            if cores.splits() {
                let ((la, wa), (lb, wb)) = cut_rows(self.state.logits, output);
                cores.join(&mut || matmul(la, &wa, x, step), &mut || {
                    matmul(lb, &wb, x, step)
                });
            } else {
                // The next token's first matrix follows.
                let wq = self.layers.first().and_then(|l| l.as_ref()).map(|l| &l.wq);
                matmul_via(&mut self.stream, self.state.logits, output, x, step, wq);
            }
        }
        self.classifier_step = Some(step);
        self.pos += 1;
    }

    /// Draws the next token from the logits after the last token fed. A streamed vocabulary
    /// runs the classifier chunk by chunk (from flash, or through the weight stream), the
    /// sampler consuming each
    /// chunk ([`Sampler::stream`]): one pass for greedy and top-k/top-p, three for plain
    /// temperature sampling. Returns 0 before any token was fed.
    pub fn sample(&mut self, sampler: &mut Sampler) -> u32 {
        if !self.streams_logits() {
            return sampler.sample(self.state.logits);
        }
        let Some(step) = self.classifier_step else {
            return 0;
        };
        let vocab = self.config.vocab_size;
        let output = self.model.output();
        let dim = self.config.dim;
        let chunk_rows = |first: usize| output.rows(first, LOGITS_CHUNK_ROWS.min(vocab - first));
        let mut stream = sampler.stream();
        loop {
            for first in (0..vocab).step_by(LOGITS_CHUNK_ROWS) {
                let rows = chunk_rows(first);
                let chunk = &mut self.state.logits[..rows.rows];
                // Through the weight stream, if any: the next chunk's first block is copied
                // while this chunk's last one is multiplied.
                let following = first + LOGITS_CHUNK_ROWS;
                let next = (following < vocab).then(|| chunk_rows(following));
                matmul_via(
                    &mut self.stream,
                    chunk,
                    &rows,
                    &self.state.xq[..dim],
                    step,
                    next.as_ref(),
                );
                stream.push(chunk);
            }
            if let Some(token) = stream.end_pass(sampler) {
                return token;
            }
        }
    }

    /// Writes every logit after the last token fed into `out` (≤ `vocab_size` long; the host's
    /// evaluation of a streamed vocabulary). Does nothing before any token was fed.
    pub fn logits_into(&self, out: &mut [i32]) {
        let Some(step) = self.classifier_step else {
            return;
        };
        if !self.streams_logits() {
            let n = out.len().min(self.state.logits.len());
            out[..n].copy_from_slice(&self.state.logits[..n]);
            return;
        }
        let rows = out.len().min(self.config.vocab_size);
        let dim = self.config.dim;
        let output = self.model.output().rows(0, rows);
        matmul(&mut out[..rows], &output, &self.state.xq[..dim], step);
    }
}

/// `out = W · x` for the quantised vector `x` with step `x_step` (Q16.16 per unit).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn matmul(out: &mut [i32], w: &Matrix, x: &[i32], x_step: Multiplier) {
    // The forward pass's shape (row quads, a power-of-two input step) straight to the routines.
    #[cfg(target_arch = "arm")]
    if w.quant == Quant::Int8
        && w.layout == WeightLayout::RowQuads
        && matvec_i8_x4_pow2(out, w.row_scales, w.weights, w.cols, x, x_step)
    {
        return;
    }
    match w.quant {
        Quant::Int8 if w.layout == WeightLayout::RowQuads => {
            matvec_i8_x4(out, w.row_scales, w.weights, w.cols, x, x_step)
        }
        Quant::Int8 => matvec_i8(out, w.row_scales, w.weights, w.cols, x, x_step),
        Quant::Int4 => matvec_i4(
            out,
            w.row_scales,
            w.group_scales,
            w.weights,
            w.cols,
            w.group_size,
            x,
            x_step,
        ),
    }
}

/// `out` and `w` cut between two cores at [`split_point`] of the rows, in whole row quads:
/// (the first core's rows and matrix, the second's).
#[allow(clippy::type_complexity)]
fn cut_rows<'o, 'w>(
    out: &'o mut [i32],
    w: &Matrix<'w>,
) -> ((&'o mut [i32], Matrix<'w>), (&'o mut [i32], Matrix<'w>)) {
    let rows = w.rows.min(out.len());
    let at = split_point(rows, QUAD_ROWS);
    let (first, second) = out[..rows].split_at_mut(at);
    ((first, w.rows(0, at)), (second, w.rows(at, rows - at)))
}

/// `out = W · x` on `cores`: the rows cut in two ([`cut_rows`]) when they split.
#[inline(always)]
fn matmul_on<C: Cores + ?Sized>(
    cores: &C,
    out: &mut [i32],
    w: &Matrix,
    x: &[i32],
    x_step: Multiplier,
) {
    if cores.splits() {
        let ((out_a, w_a), (out_b, w_b)) = cut_rows(out, w);
        if out_b.is_empty() {
            return matmul(out_a, &w_a, x, x_step);
        }
        cores.join(&mut || matmul(out_a, &w_a, x, x_step), &mut || {
            matmul(out_b, &w_b, x, x_step)
        });
    } else {
        matmul(out, w, x, x_step);
    }
}

/// Quantises `x` into `xq` and multiplies: `out = W · x` (through `stream`, [`matmul_via`]).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn quantize_and_matmul(
    stream: &mut Option<Streaming>,
    out: &mut [i32],
    w: &Matrix,
    x: &[i32],
    xq: &mut [i32],
    next: Option<&Matrix>,
) {
    let n = x.len().min(xq.len());
    let xq = &mut xq[..n];
    let max_abs = quantize_act(x, xq);
    matmul_via(stream, out, w, xq, act_step(max_abs), next);
}

/// A session's weight stream, and the first block of the next matrix it may be copying ahead.
pub(crate) struct Streaming<'s> {
    stream: &'s mut dyn WeightStream,
    /// (slot, address of the matrix's weights, bytes) of a first block copied ahead.
    ahead: Option<(usize, usize, usize)>,
}

/// How a matrix is cut for a stream, in units of rows ([`Matrix::row_unit`]).
#[derive(Clone, Copy)]
struct Cut {
    unit_bytes: usize,
    unit_rows: usize,
    units: usize,
    block_units: usize,
    lead_units: usize,
}

impl Cut {
    /// `w`'s cut for `stream`; `None` where it is read in place. The divisions on the divider,
    /// once a matrix.
    #[inline(always)]
    fn of(stream: &dyn WeightStream, w: &Matrix) -> Option<Cut> {
        let (unit_bytes, unit_rows) = w.row_unit();
        if unit_bytes == 0 {
            return None;
        }
        let plan = stream.plan(w.weights, unit_bytes)?;
        let units_of = |bytes: usize| div_rem_u32(bytes as u32, unit_bytes as u32).0 as usize;
        // The last unit may be short (a matrix's tail quad).
        let units = units_of(w.weights.len() + unit_bytes - 1);
        let cut = Cut {
            unit_bytes,
            unit_rows,
            units,
            block_units: units_of(plan.block_bytes),
            lead_units: units_of(plan.lead_bytes).min(units),
        };
        (cut.block_units > 0).then_some(cut)
    }

    /// The block from unit `first` on, as (first unit, units).
    #[inline(always)]
    fn block_at(&self, first: usize) -> Option<(usize, usize)> {
        (first < self.units).then(|| (first, self.block_units.min(self.units - first)))
    }

    /// The weight bytes of units `first..first + n` of `w`.
    #[inline(always)]
    fn bytes<'w>(&self, w: &Matrix<'w>, (first, n): (usize, usize)) -> &'w [u8] {
        let end = ((first + n) * self.unit_bytes).min(w.weights.len());
        w.weights.get(first * self.unit_bytes..end).unwrap_or(&[])
    }

    /// `out[their rows] = the rows of units first..first + n of w · x`, their weights read from
    /// `weights` (those units' bytes, in place or copied).
    #[allow(clippy::too_many_arguments)]
    #[cfg_attr(
        all(target_arch = "arm", feature = "rp2040"),
        link_section = ".data.ramfunc"
    )]
    fn multiply(
        &self,
        out: &mut [i32],
        w: &Matrix,
        (first, n): (usize, usize),
        weights: &[u8],
        x: &[i32],
        x_step: Multiplier,
    ) {
        let row = first * self.unit_rows;
        let part = Matrix {
            weights,
            ..w.rows(row, n * self.unit_rows)
        };
        if let Some(out) = out.get_mut(row..row + part.rows) {
            if part.rows > 0 {
                matmul(out, &part, x, x_step);
            }
        }
    }
}

/// [`matmul`], with `w`'s weights fetched through `stream` when there is one; `next` is the
/// matrix multiplied after this one, whose first block the stream may copy ahead.
#[inline(always)]
fn matmul_via(
    stream: &mut Option<Streaming>,
    out: &mut [i32],
    w: &Matrix,
    x: &[i32],
    x_step: Multiplier,
    next: Option<&Matrix>,
) {
    match stream {
        Some(stream) => matmul_streamed(stream, out, w, x, x_step, next),
        None => matmul(out, w, x, x_step),
    }
}

/// `out = W · x` with `w`'s weights fetched as the stream plans them ([`crate::stream`]):
/// block after block multiplied from RAM, each block's copy started before the block ahead of
/// it is multiplied, so the copy runs behind the arithmetic. The first block was copied ahead
/// while the matrix before was multiplied (when that one was streamed too and named this one
/// as `next`); else the lead rows are read in place while it arrives. During the last block the
/// first block of `next` is copied ahead. [`matmul`] bit for bit: every row by the same kernel
/// from the same bytes ([`matmul`] itself where the stream does not plan `w`).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn matmul_streamed(
    st: &mut Streaming,
    out: &mut [i32],
    w: &Matrix,
    x: &[i32],
    x_step: Multiplier,
    next: Option<&Matrix>,
) {
    let ahead = st.ahead.take();
    let cut = Cut::of(&*st.stream, w).filter(|_| out.len() >= w.rows);
    let Some(cut) = cut else {
        // A copy ahead for another matrix: done with before anything else starts.
        if let Some((slot, _, _)) = ahead {
            st.stream.wait(slot);
        }
        return matmul(out, w, x, x_step);
    };
    let from_start = cut.block_at(0);
    let (mut block, mut slot) = match ahead {
        Some((slot, at, len))
            if at == w.weights.as_ptr() as usize
                && from_start.is_some_and(|b| cut.bytes(w, b).len() == len) =>
        {
            (from_start, slot)
        }
        other => {
            if let Some((slot, _, _)) = other {
                st.stream.wait(slot);
            }
            let first = cut.block_at(cut.lead_units);
            if let Some(first) = first {
                st.stream.start(0, cut.bytes(w, first));
            }
            let lead = (0, cut.lead_units);
            cut.multiply(out, w, lead, cut.bytes(w, lead), x, x_step);
            (first, 0)
        }
    };
    while let Some(this) = block {
        st.stream.wait(slot);
        block = cut.block_at(this.0 + this.1);
        if let Some(following) = block {
            st.stream.start(slot ^ 1, cut.bytes(w, following));
        } else if let Some(next) = next {
            // The last block: the next matrix's first one is copied meanwhile.
            let next_cut = Cut::of(&*st.stream, next);
            if let Some(first) = next_cut.and_then(|c| c.block_at(0).map(|b| c.bytes(next, b))) {
                st.stream.start(slot ^ 1, first);
                st.ahead = Some((slot ^ 1, next.weights.as_ptr() as usize, first.len()));
            }
        }
        let weights = st.stream.block(slot, cut.bytes(w, this).len());
        cut.multiply(out, w, this, weights, x, x_step);
        slot ^= 1;
    }
}

/// Rotates each head of `v` (interleaved pairs) by the angles of position `pos`
/// ([`rope_reference`] bit for bit; on thumbv6m through [`rope_thumb`] when the table is
/// word-aligned).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub(crate) fn rope(v: &mut [i32], head_size: usize, rope_at_pos: &[u8]) {
    #[cfg(target_arch = "arm")]
    {
        let pairs = (head_size / 2).min(rope_at_pos.len() / 8);
        let aligned = (rope_at_pos.as_ptr() as usize).is_multiple_of(4);
        if head_size > 0 && pairs > 0 && aligned {
            let table = rope_at_pos.as_ptr().cast::<i32>();
            if head_size == 2 * pairs {
                // Every whole head in one call (heads of even size lie pair after pair).
                let heads = div_rem_u32(v.len() as u32, head_size as u32).0 as usize;
                if heads > 0 {
                    // SAFETY: v holds heads·head_size = heads·2·pairs words and the table
                    // ≥ 8·pairs bytes from a 4-byte aligned start (little-endian words, as
                    // from_le_bytes reads them on this core); the routine reads/writes
                    // v[..heads·2·pairs] and reads the table's first 2·pairs words.
                    unsafe { rope_thumb(v.as_mut_ptr(), pairs, table, heads) };
                }
                return;
            }
            // Head by head (an odd head size leaves its last element) without
            // `chunks_exact_mut` (its length division is a ~100-cycle library call on the M0+).
            let mut at = 0;
            while at + head_size <= v.len() {
                // SAFETY: v[at..] holds head_size ≥ 2·pairs words and the table as above; the
                // routine reads/writes v[at..at + 2·pairs] and reads the table.
                unsafe { rope_thumb(v.as_mut_ptr().add(at), pairs, table, 1) };
                at += head_size;
            }
            return;
        }
    }
    rope_reference(v, head_size, rope_at_pos)
}

#[cfg(target_arch = "arm")]
extern "C" {
    /// [`rope_reference`] of `heads ≥ 1` heads of `pairs ≥ 1` pairs each, one after the other
    /// at `v`, the Q30 (cos, sin) words of each pair of a head at `table`.
    fn rope_thumb(v: *mut i32, pairs: usize, table: *const i32, heads: usize);
}

/// Where [`rope_thumb`] lives: SRAM on the RP2040, flash elsewhere.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! ROPE_SECTION {
    () => {
        ".section .data.ramfunc.rope_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! ROPE_SECTION {
    () => {
        ".section .text.rope_thumb,\"ax\",%progbits"
    };
}

/// r7:r6 = r0 · r1 (signed 32×32→64): each factor split into its signed high and unsigned low
/// half, four MULS (each product fits 32 bits: ±2³⁰, ±2³¹, < 2³²), the two middle ones added
/// shifted by 16 with their carries. Clobbers r0–r5.
#[cfg(target_arch = "arm")]
macro_rules! ROPE_PRODUCT {
    () => {
        concat!(
            "asrs r2, r0, #16\n",
            "uxth r0, r0\n",
            "asrs r3, r1, #16\n",
            "uxth r1, r1\n",
            "mov r6, r0\n",
            "muls r6, r1, r6\n",
            "mov r7, r2\n",
            "muls r7, r3, r7\n",
            "muls r2, r1, r2\n",
            "muls r0, r3, r0\n",
            "lsls r4, r2, #16\n",
            "asrs r2, r2, #16\n",
            "adds r6, r6, r4\n",
            "adcs r7, r2\n",
            "lsls r4, r0, #16\n",
            "asrs r0, r0, #16\n",
            "adds r6, r6, r4\n",
            "adcs r7, r0\n",
        )
    };
}

/// r7:r6 += r0 · r1 ("adds", "adcs") or −= ("subs", "sbcs"), as [`ROPE_PRODUCT`]. Clobbers
/// r0–r5.
#[cfg(target_arch = "arm")]
macro_rules! ROPE_PRODUCT_ACC {
    ($add:literal, $adc:literal) => {
        concat!(
            "asrs r2, r0, #16\n",
            "uxth r0, r0\n",
            "asrs r3, r1, #16\n",
            "uxth r1, r1\n",
            "mov r5, r0\n",
            "muls r5, r1, r5\n",
            $add,
            " r6, r6, r5\n",
            "movs r5, #0\n",
            $adc,
            " r7, r5\n",
            "mov r5, r2\n",
            "muls r5, r3, r5\n",
            $add,
            " r7, r7, r5\n",
            "muls r2, r1, r2\n",
            "muls r0, r3, r0\n",
            "lsls r4, r2, #16\n",
            "asrs r2, r2, #16\n",
            $add,
            " r6, r6, r4\n",
            $adc,
            " r7, r2\n",
            "lsls r4, r0, #16\n",
            "asrs r0, r0, #16\n",
            $add,
            " r6, r6, r4\n",
            $adc,
            " r7, r0\n",
        )
    };
}

/// r6 = clamp((r7:r6 + 2^29) >> 30) to `i32`; `$sat` is the label of the saturating exit, which
/// comes back to `$back`. Clobbers r4, r5, r7.
#[cfg(target_arch = "arm")]
macro_rules! ROPE_ROUND {
    ($sat:literal, $back:literal) => {
        concat!(
            "movs r4, #1\n",
            "lsls r4, r4, #29\n",
            "movs r5, #0\n",
            "adds r6, r6, r4\n",
            "adcs r7, r5\n",
            "asrs r4, r7, #29\n",
            "adds r4, #1\n",
            "cmp r4, #1\n",
            "bhi ",
            $sat,
            "\n",
            "lsls r7, r7, #2\n",
            "lsrs r6, r6, #30\n",
            "orrs r6, r7\n",
            $back,
            ":\n",
        )
    };
}

// Per pair (a, b) and (cos, sin): a·cos − b·sin and a·sin + b·cos as 64-bit sums of the signed
// products (ROPE_PRODUCT, inline), each + 2^29, >> 30 and clamped to i32 (ROPE_ROUND).
// r8–r11 a, b, cos, sin; r12 v, lr the table (advancing, back to its start after each head);
// [sp] the end of v, [sp, #4] the rotated a until b's is done, [sp, #8] the table, [sp, #12]
// its end (one head's pairs). ~150 cycles a pair (stories260k's profile; with a call per
// product it took ~217).
#[cfg(target_arch = "arm")]
core::arch::global_asm!(
    ROPE_SECTION!(),
    ".global rope_thumb",
    ".type rope_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "rope_thumb:",
    "push {{r4-r7, lr}}",
    "mov r4, r8",
    "mov r5, r9",
    "mov r6, r10",
    "mov r7, r11",
    "push {{r4-r7}}",
    "sub sp, #16",
    "lsls r1, r1, #3", // one head's bytes
    "adds r4, r2, r1",
    "str r2, [sp, #8]",
    "str r4, [sp, #12]",
    "muls r1, r3, r1",
    "adds r1, r0, r1",
    "str r1, [sp]",
    "mov r12, r0",
    "mov lr, r2",
    "1:",
    "mov r0, r12",
    "ldm r0!, {{r1, r2}}",
    "mov r8, r1", // a
    "mov r9, r2", // b
    "mov r0, lr",
    "ldm r0!, {{r1, r2}}",
    "mov lr, r0",
    "mov r10, r1", // cos
    "mov r11, r2", // sin
    "mov r0, r8",
    "mov r1, r10",
    ROPE_PRODUCT!(), // a·cos
    "mov r0, r9",
    "mov r1, r11",
    ROPE_PRODUCT_ACC!("subs", "sbcs"), // − b·sin
    ROPE_ROUND!("4f", "5"),
    "str r6, [sp, #4]",
    "mov r0, r8",
    "mov r1, r11",
    ROPE_PRODUCT!(), // a·sin
    "mov r0, r9",
    "mov r1, r10",
    ROPE_PRODUCT_ACC!("adds", "adcs"), // + b·cos
    ROPE_ROUND!("6f", "7"),
    "ldr r1, [sp, #4]",
    "mov r0, r12",
    "stm r0!, {{r1, r6}}",
    "mov r12, r0",
    "ldr r1, [sp]",
    "cmp r0, r1",
    "beq 9f",
    "mov r1, lr",
    "ldr r2, [sp, #12]",
    "cmp r1, r2",
    "bne 3f",
    "ldr r1, [sp, #8]", // the next head: the table again
    "mov lr, r1",
    "3:",
    "b 1b", // beyond a conditional branch's reach
    "4:",
    "asrs r6, r7, #31",
    "movs r4, #1",
    "lsls r4, r4, #31",
    "mvns r4, r4",
    "eors r6, r4", // i32::MAX, or i32::MIN below
    "b 5b",
    "6:",
    "asrs r6, r7, #31",
    "movs r4, #1",
    "lsls r4, r4, #31",
    "mvns r4, r4",
    "eors r6, r4",
    "b 7b",
    "9:",
    "add sp, #16",
    "pop {{r4-r7}}",
    "mov r8, r4",
    "mov r9, r5",
    "mov r10, r6",
    "mov r11, r7",
    "pop {{r4-r7, pc}}",
    ".size rope_thumb, . - rope_thumb",
);

/// The plain form of [`rope`].
pub(crate) fn rope_reference(v: &mut [i32], head_size: usize, rope_at_pos: &[u8]) {
    let pairs = head_size / 2;
    for head in v.chunks_exact_mut(head_size) {
        for (pair, cs) in head
            .chunks_exact_mut(2)
            .take(pairs)
            .zip(rope_at_pos.chunks_exact(8))
        {
            let cos = i32::from_le_bytes([cs[0], cs[1], cs[2], cs[3]]);
            let sin = i32::from_le_bytes([cs[4], cs[5], cs[6], cs[7]]);
            let (a, b) = (pair[0], pair[1]);
            let round = 1i64 << 29;
            let rotated_a = mul_wide_i32(a, cos) - mul_wide_i32(b, sin) + round;
            let rotated_b = mul_wide_i32(a, sin) + mul_wide_i32(b, cos) + round;
            pair[0] = (rotated_a >> 30).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
            pair[1] = (rotated_b >> 30).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        }
    }
}

/// Softmax in place over Q16.16 scores, leaving probabilities in Q16.16 (one divide).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub(crate) fn softmax(att: &mut [i32]) {
    let max = att.iter().copied().max().unwrap_or(0);
    let mut sum = 0u64;
    for a in att.iter_mut() {
        *a = exp_q16(a.saturating_sub(max));
        sum += *a as u64;
    }
    // The max itself contributes exp(0) = 65536, so sum ≥ 65536.
    // Q16 reciprocal (≤ 2¹⁶): floor(2³²/sum) from a u32 division, + 1 when sum divides 2³².
    let inv = match u32::try_from(sum) {
        Ok(sum) if sum > 1 => div_rem_u32(u32::MAX, sum).0 + sum.is_power_of_two() as u32,
        _ => ((1u64 << 32) / sum.max(1)).min(u32::MAX as u64) as u32,
    };
    for a in att.iter_mut() {
        *a = (mul_wide_u32(*a as u32, inv) >> 16) as i32;
    }
}

/// The forward pass for one token at position `pos`, up to the classifier: leaves
/// rmsnorm(x) quantised in `s.xq[..dim]` and returns its step (the classifier's input).
///
/// On `cores` that split ([`Cores::splits`]), the matrix-vector products (q, k, v together;
/// wo; w1 with w3 and the gate; w2) are cut by rows and attention by heads, each cut one
/// [`Cores::join`]; norms, RoPE, the cache writes and the residual adds stay on this core.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn forward<C: Cores + ?Sized>(
    model: &Model,
    layers: &[Option<LayerWeights>],
    s: &mut State,
    c: &Config,
    ctx: usize,
    score_scale: Multiplier,
    token: u32,
    pos: usize,
    cores: &C,
    stream: &mut Option<Streaming>,
    classifier: Option<&Matrix>,
) -> Multiplier {
    let (dim, q_dim, kv_dim, hs) = (c.dim, c.q_dim(), c.kv_dim(), c.head_size());
    // Query heads sharing one key/value head (on the divider: validated counts, ≥ 1).
    let kv_per_q = div_rem_u32(c.n_heads as u32, c.n_kv_heads.max(1) as u32).0 as usize;
    let pairs = hs / 2;
    let rope_at_pos = model
        .rope()
        .get(pos * pairs * 8..(pos + 1) * pairs * 8)
        .unwrap_or(&[]);

    // x = tok_embeddings[token], dequantised to Q16.16 (the row read across its row quad).
    embedding_row(&mut s.x[..dim], &model.token_embedding(), token as usize);

    for l in 0..c.n_layers {
        let looked_up;
        let w = match layers.get(l) {
            Some(Some(w)) => w,
            _ => {
                looked_up = model.layer(l);
                &looked_up
            }
        };

        // Attention: h = rmsnorm(x); q, k, v = wq·h, wk·h, wv·h.
        rmsnorm(&mut s.xb[..dim], s.x, w.attention_norm);
        let max_abs = quantize_act(&s.xb[..dim], &mut s.xq[..dim]);
        let step = act_step(max_abs);
        if cores.splits() {
            let x = &s.xq[..dim];
            let ((qa, wqa), (qb, wqb)) = cut_rows(s.q, &w.wq);
            let ((ka, wka), (kb, wkb)) = cut_rows(s.k, &w.wk);
            let ((va, wva), (vb, wvb)) = cut_rows(s.v, &w.wv);
            cores.join(
                &mut || {
                    matmul(qa, &wqa, x, step);
                    matmul(ka, &wka, x, step);
                    matmul(va, &wva, x, step);
                },
                &mut || {
                    matmul(qb, &wqb, x, step);
                    matmul(kb, &wkb, x, step);
                    matmul(vb, &wvb, x, step);
                },
            );
        } else {
            matmul_via(stream, s.q, &w.wq, &s.xq[..dim], step, Some(&w.wk));
            matmul_via(stream, s.k, &w.wk, &s.xq[..dim], step, Some(&w.wv));
            matmul_via(stream, s.v, &w.wv, &s.xq[..dim], step, Some(&w.wo));
        }

        // Rotate q and k by position (the file's cos/sin table: no trig on the device).
        rope(s.q, hs, rope_at_pos);
        rope(s.k, hs, rope_at_pos);

        // Append k and v to this layer's cache (12-bit in i16), one step per vector.
        let slot = l * ctx + pos;
        let cache_range = slot * kv_dim..(slot + 1) * kv_dim;
        if let Some(kc) = s.key_cache.get_mut(cache_range.clone()) {
            let max = quantize_kv(s.k, kc);
            put_step(s.key_steps, slot, act_step(max));
        }
        if let Some(vc) = s.value_cache.get_mut(cache_range) {
            let max = quantize_kv(s.v, vc);
            put_step(s.value_steps, slot, act_step(max).shifted(8));
        }
        // This position's steps folded into the layer's bounds (afresh at position 0).
        let at = slot * STEP_WORDS..(slot + 1) * STEP_WORDS;
        let here = StepBounds::of(
            s.key_steps.get(at.clone()).unwrap_or(&[]),
            s.value_steps.get(at).unwrap_or(&[]),
        );
        let layer_bounds = s.bounds.get_mut(l * BOUNDS_WORDS..).unwrap_or(&mut []);
        let bounds = if pos == 0 {
            here
        } else {
            StepBounds::from_words(layer_bounds).with(here)
        };
        bounds.to_words(layer_bounds);
        let layer_keys = s.key_cache.get(l * ctx * kv_dim..).unwrap_or(&[]);
        let layer_values = s.value_cache.get(l * ctx * kv_dim..).unwrap_or(&[]);
        let steps = l * ctx * STEP_WORDS..(slot + 1) * STEP_WORDS;
        let key_steps = s.key_steps.get(steps.clone()).unwrap_or(&[]);
        let value_steps = s.value_steps.get(steps).unwrap_or(&[]);

        // Per query head: scores over positions 0..=pos, softmax, weighted sum of values.
        let shape = AttentionShape {
            head_size: hs,
            kv_dim,
            kv_per_q,
        };
        let cache = KvView {
            keys: layer_keys,
            values: layer_values,
            key_steps,
            value_steps,
            bounds,
        };
        // The second core's heads: whole key/value groups ([`split_point`]), their scores in
        // the logits buffer (free until the classifier; a streamed vocabulary's chunk may be
        // shorter than the context) and their quantised query after the first core's.
        let heads = if cores.splits() {
            split_point(c.n_heads, kv_per_q)
        } else {
            c.n_heads
        };
        if heads < c.n_heads && s.logits.len() > pos && s.xq.len() >= 2 * hs {
            let (out_a, out_b) = s.xb[..q_dim].split_at_mut(heads * hs);
            let (q_a, q_b) = s.q.split_at(heads * hs);
            let (xq_a, xq_b) = s.xq.split_at_mut(hs);
            let (att_a, att_b) = (&mut s.att[..=pos], &mut s.logits[..=pos]);
            let first_kv = (heads / kv_per_q) * hs;
            let cache = &cache;
            cores.join(
                &mut || attention(out_a, q_a, cache, att_a, xq_a, shape, score_scale),
                &mut || {
                    attention_from(first_kv, out_b, q_b, cache, att_b, xq_b, shape, score_scale)
                },
            );
        } else {
            attention(
                &mut s.xb[..q_dim],
                s.q,
                &cache,
                &mut s.att[..=pos],
                s.xq,
                shape,
                score_scale,
            );
        }

        // x = x + wo·(att·v)
        if cores.splits() {
            let max_abs = quantize_act(&s.xb[..q_dim], &mut s.xq[..q_dim]);
            let step = act_step(max_abs);
            matmul_on(cores, s.xb2, &w.wo, &s.xq[..q_dim], step);
        } else {
            quantize_and_matmul(stream, s.xb2, &w.wo, &s.xb[..q_dim], s.xq, Some(&w.w1));
        }
        for (x, &d) in s.x.iter_mut().zip(s.xb2.iter()) {
            *x = x.saturating_add(d);
        }

        // FFN: x = x + w2·(silu(w1·h) [⊙ w3·h]), h = rmsnorm(x).
        rmsnorm(&mut s.xb[..dim], s.x, w.ffn_norm);
        let max_abs = quantize_act(&s.xb[..dim], &mut s.xq[..dim]);
        let step = act_step(max_abs);
        if cores.splits() {
            // Each core gates its own rows (SiLU and the product are elementwise).
            let x = &s.xq[..dim];
            let ((ha, w1a), (hb, w1b)) = cut_rows(s.hb, &w.w1);
            let ((h2a, w3a), (h2b, w3b)) = cut_rows(s.hb2, &w.w3);
            let ffn = c.ffn;
            cores.join(
                &mut || ffn_hidden(ffn, ha, h2a, &w1a, &w3a, x, step),
                &mut || ffn_hidden(ffn, hb, h2b, &w1b, &w3b, x, step),
            );
            let hidden = c.hidden_dim;
            let max_abs = quantize_act(&s.hb[..hidden], &mut s.xq[..hidden]);
            let step = act_step(max_abs);
            matmul_on(cores, s.xb2, &w.w2, &s.xq[..hidden], step);
        } else {
            let after_w1 = match c.ffn {
                FfnKind::Plain => &w.w2,
                FfnKind::Swiglu => &w.w3,
            };
            matmul_via(stream, s.hb, &w.w1, &s.xq[..dim], step, Some(after_w1));
            match c.ffn {
                FfnKind::Plain => silu_in_place(s.hb),
                FfnKind::Swiglu => {
                    matmul_via(stream, s.hb2, &w.w3, &s.xq[..dim], step, Some(&w.w2));
                    silu_gate_in_place(s.hb, s.hb2);
                }
            }
            // Then the next layer's wq (when its tensors are kept), or the classifier.
            let after_w2 = if l + 1 == c.n_layers {
                classifier
            } else {
                layers.get(l + 1).and_then(|l| l.as_ref()).map(|l| &l.wq)
            };
            quantize_and_matmul(stream, s.xb2, &w.w2, s.hb, s.xq, after_w2);
        }
        for (x, &d) in s.x.iter_mut().zip(s.xb2.iter()) {
            *x = x.saturating_add(d);
        }
    }

    // The classifier's input: rmsnorm(x), quantised (the caller multiplies by `output`).
    rmsnorm(&mut s.xb[..dim], s.x, model.final_norm());
    let max_abs = quantize_act(&s.xb[..dim], &mut s.xq[..dim]);
    act_step(max_abs)
}

/// `x = row t of the embedding`, dequantised to Q16.16: `row_scale.apply_i32(w << 16)` per
/// weight ([`embedding_row_reference`] bit for bit). A file multiplier keeps 15 mantissa bits
/// (`mant = m15 · 2¹⁶`, [`Multiplier::from_le_bytes`]), so the product's high word is `w · m15`
/// exactly and, at the usual shifts (33..=62), the value is `(((w · m15) >> (s − 33)) + 1) >> 1`:
/// one `MULS` a weight, the row of an int8 row-quad embedding read at its stride of 4 bytes
/// (it was ~100 cycles a weight through `Matrix::weight_i8`).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub(crate) fn embedding_row(x: &mut [i32], emb: &Matrix, t: usize) {
    let scale = Multiplier::from_le_bytes(emb.row_scales.get(t * 8..).unwrap_or(&[]));
    let dim = x.len().min(emb.cols);
    let grouped = emb.rows - emb.rows % QUAD_ROWS;
    let base = (t / QUAD_ROWS) * emb.cols * QUAD_ROWS + t % QUAD_ROWS;
    let fast = emb.quant == Quant::Int8
        && emb.layout == WeightLayout::RowQuads
        && t < grouped
        && dim > 0
        && dim == x.len()
        && scale.mant & 0xFFFF == 0
        && (33..=62).contains(&scale.shift);
    let row = emb
        .weights
        .get(base..base + QUAD_ROWS * dim.saturating_sub(1) + 1);
    if let (true, Some(row)) = (fast, row) {
        let (m15, down) = ((scale.mant >> 16) as i32, (scale.shift - 33) as u32);
        for (x, &b) in x.iter_mut().zip(row.iter().step_by(QUAD_ROWS)) {
            let w = (b ^ 0x80) as i8 as i32;
            *x = (((w * m15) >> down) + 1) >> 1;
        }
        return;
    }
    embedding_row_reference(x, emb, t);
}

/// The plain form of [`embedding_row`].
pub(crate) fn embedding_row_reference(x: &mut [i32], emb: &Matrix, t: usize) {
    let scale = Multiplier::from_le_bytes(emb.row_scales.get(t * 8..).unwrap_or(&[]));
    for (c, x) in x.iter_mut().enumerate() {
        // |w| · 2¹⁶ < 2³¹: apply_i32 (inline) forms the same bits as apply (a call per element).
        *x = scale.apply_i32((emb.weight_i8(t, c) as i32) << 16);
    }
}

/// Rows of the FFN's hidden layer: `h = silu(w1·x)` (plain) or `silu(w1·x) ⊙ w3·x` (SwiGLU),
/// `h2` the second branch's scratch; [`forward`]'s one-core steps for any cut of the rows.
fn ffn_hidden(
    ffn: FfnKind,
    h: &mut [i32],
    h2: &mut [i32],
    w1: &Matrix,
    w3: &Matrix,
    x: &[i32],
    step: Multiplier,
) {
    matmul(h, w1, x, step);
    match ffn {
        FfnKind::Plain => silu_in_place(h),
        FfnKind::Swiglu => {
            matmul(h2, w3, x, step);
            silu_gate_in_place(h, h2);
        }
    }
}

/// Head layout of one attention call.
#[derive(Clone, Copy)]
pub(crate) struct AttentionShape {
    pub head_size: usize,
    /// Width of a cached key (value) vector: `n_kv_heads × head_size`.
    pub kv_dim: usize,
    /// Query heads sharing one key/value head.
    pub kv_per_q: usize,
}

/// One layer's cached positions `0..=pos`: keys and values (±2047 in `i16`, `kv_dim` each) and
/// their steps (two words each: [`put_step`]; the value's × 2⁻⁸).
pub(crate) struct KvView<'c> {
    pub keys: &'c [i16],
    pub values: &'c [i16],
    pub key_steps: &'c [i32],
    pub value_steps: &'c [i32],
    /// Bounds of the steps of positions `0..att.len()` at least (a superset allows less).
    pub bounds: StepBounds,
}

/// Attention of every query head in `q` over the cached positions (`att.len()` of them):
/// scores, softmax, weighted sum of values into `out` (`n_heads × head_size`, Q16.16).
/// `xq` is scratch of ≥ `head_size` words. The plain form; [`attention`] computes the same
/// bits faster (and calls this one only for shapes it does not cover: kept out of line).
#[inline(never)]
pub(crate) fn attention_reference(
    out: &mut [i32],
    q: &[i32],
    cache: &KvView,
    att: &mut [i32],
    xq: &mut [i32],
    shape: AttentionShape,
    score_scale: Multiplier,
) {
    attention_reference_from(0, out, q, cache, att, xq, shape, score_scale)
}

/// [`attention_reference`] of query heads whose first one reads the cache's key/value head at
/// element `first_kv` (a multiple of the head size: the second core's heads).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn attention_reference_from(
    first_kv: usize,
    out: &mut [i32],
    q: &[i32],
    cache: &KvView,
    att: &mut [i32],
    xq: &mut [i32],
    shape: AttentionShape,
    score_scale: Multiplier,
) {
    let AttentionShape {
        head_size: hs,
        kv_dim,
        kv_per_q,
    } = shape;
    let (layer_keys, layer_values) = (cache.keys, cache.values);
    let (key_steps, value_steps) = (cache.key_steps, cache.value_steps);
    for (h, out) in out.chunks_exact_mut(hs).enumerate() {
        let kv_offset = first_kv + (h / kv_per_q) * hs;
        let q_head = q.get(h * hs..(h + 1) * hs).unwrap_or(&[]);
        let q_max = quantize_act(q_head, &mut xq[..hs]);
        let q_scale = act_step(q_max).times(score_scale);
        for ((a, keys), k_step) in att
            .iter_mut()
            .zip(layer_keys.chunks_exact(kv_dim))
            .zip(key_steps.chunks_exact(STEP_WORDS))
        {
            let k_head = keys.get(kv_offset..kv_offset + hs).unwrap_or(&[]);
            let dot = dot_act_kv(&xq[..hs], k_head);
            *a = q_scale.times(step_at(k_step)).apply_i32(dot);
        }
        softmax(att);
        // out = Σ_t p_t · v_t. The weight p_t·(v step) is formed once per position in Q24
        // (Q16 would round small weights of small values away), the sums run in i64.
        for (a, v_step) in att.iter_mut().zip(value_steps.chunks_exact(STEP_WORDS)) {
            *a = step_at(v_step).apply_i32(*a);
        }
        // Each product weight·v is formed exactly from two 32-bit halves (high and low 16
        // bits of the weight; v is 12-bit), so no 64-bit multiply runs in this loop.
        for (i, o) in out.iter_mut().enumerate() {
            let (mut acc_hi, mut acc_lo) = (0i64, 0i64);
            for (&weight_q24, values) in att.iter().zip(layer_values.chunks_exact(kv_dim)) {
                let v = values.get(kv_offset + i).copied().unwrap_or(0) as i32;
                acc_hi += ((weight_q24 >> 16) * v) as i64;
                acc_lo += ((weight_q24 & 0xFFFF) * v) as i64;
            }
            let acc = (acc_hi << 16) + acc_lo;
            *o = ((acc + (1 << 7)) >> 8).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        }
    }
}

/// Quantised query · cached key (head_size ≤ 256, so `256 · 2047 · 2047 < 2³¹`).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn dot_act_kv(a: &[i32], b: &[i16]) -> i32 {
    a.iter()
        .zip(b)
        .fold(0i32, |acc, (&x, &y)| acc + x * y as i32)
}

/// Largest total weight Σ|w_t| (Q24) for which [`attention`]'s p·v sums stay in `i32`: each
/// cached value is within ±[`KV_LEVELS`], so every partial sum is below `total · 2047 < 2³¹`,
/// and wrapping `i32` arithmetic gives the exact sum. (With one probability mass of 2¹⁶ this
/// allows value steps up to ~4096/2⁸, i.e. cached values up to ~128.0; beyond, the wide sums.)
const PV_I32_MAX_WEIGHT: u32 = (i32::MAX / KV_LEVELS) as u32;

/// Attention of every query head in `q` over the cached positions (`att.len()` of them):
/// [`attention_reference`] bit for bit, faster. Per query head: the scores run down the cache
/// with the query in registers (head sizes 2, 4 and 8 are unrolled), the softmax sums in `u32`
/// and normalises with one 32-bit multiply per position (inside [`weigh_exps`]), and the value
/// sums run position by position in `i32` accumulators (exact below [`PV_I32_MAX_WEIGHT`], the
/// usual case; the wide sums of the reference otherwise). Shapes the checks below do not cover
/// (a short slice, a head past `kv_dim`) go to the reference.
///
/// Heads stay in the outer loop and each query head reads its group's keys and values itself:
/// on the M0+ a key loaded once for two query heads needs a register copy for its second
/// `MULS` and twice the query registers, which costs more than the shared load saves (an
/// LDM of two key words is 3 cycles for four keys).
///
/// rp2040js (`starmind bench --kernels --emulator`), 8 heads of 8 over 4 key/value heads:
/// 46,719 cycles at 16 positions, 138,875 at 64 (16.95 cycles per q·k or p·v MAC; 52,812 and
/// 161,031 before the straight paths of the scores and weights; the plain form took 122,719
/// and 413,344).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub(crate) fn attention(
    out: &mut [i32],
    q: &[i32],
    cache: &KvView,
    att: &mut [i32],
    xq: &mut [i32],
    shape: AttentionShape,
    score_scale: Multiplier,
) {
    let AttentionShape {
        head_size: hs,
        kv_dim,
        kv_per_q,
    } = shape;
    let n = att.len();
    let n_heads = if hs == 0 {
        0
    } else {
        div_rem_u32(out.len() as u32, hs as u32).0 as usize
    };
    // The last head's key/value offset: ((n_heads − 1) / kv_per_q) · hs.
    let last_offset = if kv_per_q == 0 || n_heads == 0 {
        usize::MAX
    } else {
        div_rem_u32((n_heads - 1) as u32, kv_per_q as u32).0 as usize * hs
    };
    let cached = n.saturating_mul(kv_dim);
    let fits = hs > 0
        && hs <= 256
        && n > 0
        && n < 1 << 16
        && xq.len() >= hs
        && q.len() >= n_heads * hs
        && last_offset.saturating_add(hs) <= kv_dim
        && cache.keys.len() >= cached
        && cache.values.len() >= cached
        && cache.key_steps.len() >= n * STEP_WORDS
        && cache.value_steps.len() >= n * STEP_WORDS;
    if !fits {
        return attention_reference(out, q, cache, att, xq, shape, score_scale);
    }
    let cache = KvView {
        keys: &cache.keys[..cached],
        values: &cache.values[..cached],
        key_steps: &cache.key_steps[..n * STEP_WORDS],
        value_steps: &cache.value_steps[..n * STEP_WORDS],
        bounds: cache.bounds,
    };
    let out = &mut out[..n_heads * hs];
    let q = &q[..n_heads * hs];
    let xq = &mut xq[..hs];
    match hs {
        2 => attention_heads::<2>(out, q, &cache, att, xq, kv_dim, kv_per_q, score_scale),
        4 => attention_heads::<4>(out, q, &cache, att, xq, kv_dim, kv_per_q, score_scale),
        6 => attention_heads::<6>(out, q, &cache, att, xq, kv_dim, kv_per_q, score_scale),
        8 => attention_heads::<8>(out, q, &cache, att, xq, kv_dim, kv_per_q, score_scale),
        _ => attention_heads::<0>(out, q, &cache, att, xq, kv_dim, kv_per_q, score_scale),
    }
}

/// [`attention`] of query heads whose first one reads the cache's key/value head at element
/// `first_kv` (a multiple of the head size): the heads of the second core ([`crate::cores`]).
/// [`attention`] itself runs them on the cache seen from `first_kv` on (every position keeps
/// its stride); only when that view is short of the last position (the last layer of a full
/// context) do the heads take the plain way.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn attention_from(
    first_kv: usize,
    out: &mut [i32],
    q: &[i32],
    cache: &KvView,
    att: &mut [i32],
    xq: &mut [i32],
    shape: AttentionShape,
    score_scale: Multiplier,
) {
    let cached = att.len().saturating_mul(shape.kv_dim);
    let seen = KvView {
        keys: cache.keys.get(first_kv..).unwrap_or(&[]),
        values: cache.values.get(first_kv..).unwrap_or(&[]),
        key_steps: cache.key_steps,
        value_steps: cache.value_steps,
        bounds: cache.bounds,
    };
    if seen.keys.len() >= cached && seen.values.len() >= cached {
        attention(out, q, &seen, att, xq, shape, score_scale)
    } else {
        attention_reference_from(first_kv, out, q, cache, att, xq, shape, score_scale)
    }
}

/// [`attention`]'s loop over query heads, for head size `N` (0: any, `xq.len()`); the caller
/// has checked every length.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attention_heads<const N: usize>(
    out: &mut [i32],
    q: &[i32],
    cache: &KvView,
    att: &mut [i32],
    xq: &mut [i32],
    kv_dim: usize,
    kv_per_q: usize,
    score_scale: Multiplier,
) {
    let hs = if N == 0 { xq.len() } else { N };
    let (mut kv_offset, mut in_group) = (0, 0);
    // Heads of 4 whose keys dots4_thumb reads as words: their scores by `scores4`, the checks
    // that `attention_dots` and `scale_scores` make per head made here once.
    #[cfg(target_arch = "arm")]
    let keys4 =
        N == 4 && (cache.keys.as_ptr() as usize).is_multiple_of(4) && kv_dim.is_multiple_of(2);
    // Heads of 4 whose value steps the lean pass takes: checked once for all heads.
    let lean = N == 4 && values_lean(&cache.bounds, att.len());
    // Head by head without `chunks_exact` (its length division, twice a call in `Zip::new`, is
    // a ~150-cycle library call on the M0+: the chunk size is not a constant to it).
    let mut at = 0;
    while at + hs <= out.len() && at + hs <= q.len() {
        let (out_h, q_head) = (&mut out[at..at + hs], &q[at..at + hs]);
        at += hs;
        let q_max = match (
            <&[i32; 4]>::try_from(q_head),
            <&mut [i32; 4]>::try_from(&mut *xq),
        ) {
            (Ok(q4), Ok(xq4)) if N == 4 => quantize_act4(q4, xq4),
            _ => quantize_act(q_head, xq),
        };
        let q_scale = act_step(q_max).times(score_scale);
        #[cfg(target_arch = "arm")]
        let fast = if keys4 {
            scores4(att, xq, cache, kv_offset, kv_dim, q_scale)
        } else {
            None
        };
        #[cfg(not(target_arch = "arm"))]
        let fast = None;
        let max = match fast {
            Some(max) => max,
            None => {
                if N == 0 {
                    attention_dots_any(att, xq, cache.keys, kv_offset, kv_dim);
                } else {
                    attention_dots::<N>(att, xq, cache.keys, kv_offset, kv_dim);
                }
                scale_scores(att, cache.key_steps, q_scale)
            }
        };
        // softmax_u32 with its last loop folded into the weighing (n < 2¹⁶: `fits`).
        let inv = exp_and_reciprocal_from(att, max);
        if weigh_and_sum_values::<N>(out_h, att, inv, cache, kv_offset, kv_dim, lean) {
            // weighed and summed in one pass
        } else if weigh_exps(att, inv, cache.value_steps) > PV_I32_MAX_WEIGHT {
            weighted_values_wide(out_h, att, cache.values, kv_offset, kv_dim);
        } else if N == 0 {
            weighted_values_any(out_h, att, cache.values, kv_offset, kv_dim);
        } else {
            weighted_values::<N>(out_h, att, cache.values, kv_offset, kv_dim);
        }
        in_group += 1;
        if in_group == kv_per_q {
            in_group = 0;
            kv_offset += hs;
        }
    }
}

/// The scores of a head of 4 and their max, [`attention_dots`] then [`scale_scores`] bit for
/// bit on their usual path (the keys as words: the caller checked the cache's alignment and
/// `attention` every length; the score multiplier a power of two, as at head sizes 4, 16 and
/// 64): [`dots4_thumb`] then [`scores_shift_thumb`] called straight, without the two calls'
/// own checks (~200 cycles a head on the M0+), or [`scores4_thumb`], both in one pass, when
/// the layer's [`StepBounds`] show that no position would stop them. `None` when that path does
/// not take the head or stops short (a key step not a power of two, or a shift out of its
/// range); the caller then forms every score again the general way (each dot is stored
/// afresh).
#[cfg(target_arch = "arm")]
#[inline(always)]
fn scores4(
    att: &mut [i32],
    q: &[i32],
    cache: &KvView,
    kv_offset: usize,
    kv_dim: usize,
    q_scale: Multiplier,
) -> Option<i32> {
    let n = att.len();
    let m = q_scale.mant >> 1;
    let takes = q_scale.shift.unsigned_abs() < 1 << 20
        && q_scale.mant < 1 << 31
        && m.is_power_of_two()
        && cache.key_steps.first() == Some(&(1 << 30))
        && q.len() >= 4
        && cache.key_steps.len() >= STEP_WORDS * n;
    if !takes {
        return None;
    }
    let j = m.trailing_zeros() as i32;
    // Every position's t_s = k.shift + p0 in 0..=61 − j (the layer's key bounds): one pass.
    let p0 = q_scale.shift - 32 - j;
    let b = &cache.bounds;
    let in_range =
        b.key_shift_min.saturating_add(p0) >= 0 && b.key_shift_max.saturating_add(p0) <= 61 - j;
    if b.keys_pow2 && in_range {
        // [the key stride in bytes, p0, the steps, q, then out: the max]
        let mut io = [
            2 * kv_dim as u32,
            p0 as u32,
            cache.key_steps.as_ptr() as u32,
            q.as_ptr() as u32,
            0,
        ];
        // SAFETY: as below (the keys of positions t < n in bounds and word-aligned, q 4 words,
        // key_steps 2n words); the routine reads those and io[..4], writes att[..n] and io[4].
        unsafe {
            scores4_thumb(
                att.as_mut_ptr(),
                n,
                cache.keys.as_ptr().add(kv_offset),
                io.as_mut_ptr(),
            )
        };
        return Some(io[4] as i32);
    }
    // [k.shift + this = s − j − 1, its largest value (s ≤ 62), the running max]
    let mut params = [
        (q_scale.shift - 32 - j) as u32,
        (61 - j) as u32,
        i32::MIN as u32,
    ];
    // SAFETY: att holds n ≥ 1 words (`attention`'s fits); the keys of positions t < n at
    // keys[kv_offset + t·kv_dim ..][..4] are in bounds (fits: n·kv_dim ≤ keys.len() and
    // kv_offset + 4 ≤ kv_dim) and word-aligned (the caller's keys4: an aligned start, an even
    // kv_dim, kv_offset a multiple of 4); q holds 4 words; key_steps 2n words; the routines
    // read those, write att[..n] and the third word of params.
    let done = unsafe {
        dots4_thumb(
            att.as_mut_ptr(),
            n,
            cache.keys.as_ptr().add(kv_offset),
            2 * kv_dim,
            q.as_ptr(),
            0,
        );
        scores_shift_thumb(
            att.as_mut_ptr(),
            n,
            cache.key_steps.as_ptr(),
            params.as_mut_ptr(),
        )
    };
    (done >= n).then_some(params[2] as i32)
}

/// `att[t] = q · key t` for a head of `N` elements (`q.len() == N`), the query in registers.
#[inline(never)]
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn attention_dots<const N: usize>(
    att: &mut [i32],
    q: &[i32],
    keys: &[i16],
    kv_offset: usize,
    kv_dim: usize,
) {
    let Ok(q) = <&[i32; N]>::try_from(q) else {
        return;
    };
    #[cfg(target_arch = "arm")]
    {
        let n = att.len();
        let last = n
            .saturating_sub(1)
            .saturating_mul(kv_dim)
            .saturating_add(kv_offset + N);
        // The routine reads the keys as words: a 4-byte aligned first key and an even kv_dim.
        let words =
            (keys.as_ptr() as usize + 2 * kv_offset).is_multiple_of(4) && kv_dim.is_multiple_of(2);
        if (N == 4 || N == 8) && n > 0 && keys.len() >= last && words {
            for half in 0..N / 4 {
                // SAFETY: att holds n ≥ 1 words; the routine reads 4 i16 at
                // keys[kv_offset + 4·half + t·kv_dim ..] for t < n (all below `last` ≤
                // keys.len(); as two words each, 4-byte aligned by `words`), the 4 words
                // q[4·half..], and writes (half 0) or adds to (half 1) att[..n].
                unsafe {
                    dots4_thumb(
                        att.as_mut_ptr(),
                        n,
                        keys.as_ptr().add(kv_offset + 4 * half),
                        2 * kv_dim,
                        q.as_ptr().add(4 * half),
                        half as u32,
                    )
                };
            }
            return;
        }
        if N == 6 && n > 0 && keys.len() >= last && words {
            // Columns 0..4, then 2..6 with the query's first two zeroed (adding q4·k4 + q5·k5).
            let upper = [0, 0, q[4], q[5]];
            for (add, (offset, q4)) in [(kv_offset, &q[..4]), (kv_offset + 2, &upper[..])]
                .into_iter()
                .enumerate()
            {
                // SAFETY: as above: 4 i16 at keys[offset + t·kv_dim ..] for t < n, offset + 4
                // ≤ kv_offset + 6 (all below `last`; word-aligned: offset − kv_offset is even),
                // the 4 words of q4; att[..n] written, then added to.
                unsafe {
                    dots4_thumb(
                        att.as_mut_ptr(),
                        n,
                        keys.as_ptr().add(offset),
                        2 * kv_dim,
                        q4.as_ptr(),
                        add as u32,
                    )
                };
            }
            return;
        }
    }
    let q = *q;
    let mut at = kv_offset;
    for a in att.iter_mut() {
        let Some(k) = keys.get(at..at + N) else {
            return;
        };
        let mut dot = 0i32;
        for i in 0..N {
            dot = dot.wrapping_add(q[i].wrapping_mul(k[i] as i32));
        }
        *a = dot;
        at += kv_dim;
    }
}

#[cfg(target_arch = "arm")]
extern "C" {
    /// `att[t] (+)= Σ_{i<4} q[i] · k[t·stride/2 + i]` for `t < n` (n ≥ 1; `stride` in bytes, a
    /// multiple of 4 ≥ 8; `k` 4-byte aligned), stored when `add` is 0, added when 1; wrapping
    /// `i32` sums. Four elements of [`attention_dots`]' products (two calls for a head of 8).
    fn dots4_thumb(att: *mut i32, n: usize, k: *const i16, stride: usize, q: *const i32, add: u32);
}

/// One position of [`dots4_thumb`]: r3 = Σ key[j]·q[j] over the four `i16` keys at r0 (two
/// words, r0 advanced past them) and the four query values in r4–r7 (r1, r2 scratch).
#[cfg(target_arch = "arm")]
macro_rules! DOTS4_POSITION {
    () => {
        concat!(
            "ldm r0!, {{r1, r2}}\n",
            "sxth r3, r1\n",
            "muls r3, r4, r3\n",
            "asrs r1, r1, #16\n",
            "muls r1, r5, r1\n",
            "adds r3, r3, r1\n",
            "sxth r1, r2\n",
            "muls r1, r6, r1\n",
            "adds r3, r3, r1\n",
            "asrs r2, r2, #16\n",
            "muls r2, r7, r2\n",
            "adds r3, r3, r2\n",
        )
    };
}

/// Where [`dots4_thumb`] lives: SRAM on the RP2040, flash elsewhere.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! DOTS4_SECTION {
    () => {
        ".section .data.ramfunc.dots4_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! DOTS4_SECTION {
    () => {
        ".section .text.dots4_thumb,\"ax\",%progbits"
    };
}

// r0 keys (advancing: LDM of two words, then the stride less 8), r1–r3 scratch, r4–r7 the four
// query values, r8 att (advancing), r9 the stride − 8, r10 the end of att. Per position: LDM 3,
// 4 × (extract + MULS) + 3 ADDS, the store (and load, when adding), pointer steps and loop:
// 22 cycles (25 adding).
#[cfg(target_arch = "arm")]
core::arch::global_asm!(
    DOTS4_SECTION!(),
    ".global dots4_thumb",
    ".type dots4_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "dots4_thumb:",
    "push {{r4-r7, lr}}",
    "mov r4, r8",
    "mov r5, r9",
    "mov r6, r10",
    "push {{r4-r6}}",
    "mov r8, r0",
    "lsls r1, r1, #2",
    "adds r1, r0, r1",
    "mov r10, r1",
    "subs r3, #8",
    "mov r9, r3",
    "mov r0, r2",
    "ldr r3, [sp, #32]", // q: the fifth argument, above the 8 words pushed
    "ldm r3!, {{r4, r5, r6, r7}}",
    "ldr r3, [sp, #36]", // add
    "cmp r3, #0",
    "bne 2f",
    "1:",
    DOTS4_POSITION!(),
    "mov r1, r8",
    "stm r1!, {{r3}}",
    "mov r8, r1",
    "add r0, r9",
    "cmp r1, r10",
    "bne 1b",
    "b 9f",
    "2:",
    DOTS4_POSITION!(),
    "mov r1, r8",
    "ldr r2, [r1]",
    "adds r3, r3, r2",
    "stm r1!, {{r3}}",
    "mov r8, r1",
    "add r0, r9",
    "cmp r1, r10",
    "bne 2b",
    "9:",
    "pop {{r4-r6}}",
    "mov r8, r4",
    "mov r9, r5",
    "mov r10, r6",
    "pop {{r4-r7, pc}}",
    ".size dots4_thumb, . - dots4_thumb",
);

#[cfg(target_arch = "arm")]
extern "C" {
    /// [`dots4_thumb`] then [`scores_shift_thumb`] in one pass, for keys whose every step is a
    /// power of two with `t_s = k.shift + p0` in range (the caller checked the layer's
    /// [`StepBounds`]): `att[t] = ((q · key t >> t_s) + 1) >> 1` for `t < n` (n ≥ 1), with `io`
    /// = [the key stride in bytes (a multiple of 4, ≥ 8), p0, the key steps, q (4 words), then
    /// out: the max of the scores].
    fn scores4_thumb(att: *mut i32, n: usize, k: *const i16, io: *mut u32);
}

/// Where [`scores4_thumb`] lives: SRAM on the RP2040, flash elsewhere.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! SCORES4_SECTION {
    () => {
        ".section .data.ramfunc.scores4_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! SCORES4_SECTION {
    () => {
        ".section .text.scores4_thumb,\"ax\",%progbits"
    };
}

// r0 keys (advancing: LDM of two words, then the stride less 8), r1–r3 scratch, r4–r7 the four
// query values, r8 the end of att, r9 the stride − 8, r10 p0, r11 the running max, r12 the key
// steps' shift words (advancing), lr att (advancing); [sp] io. Per position: the dot as
// DOTS4_POSITION (15 with the stride), the step's shift (2 + 3 to step on), the rounded shift
// (4), the max (3), the store and the loop (7): ~34 cycles (dots4_thumb 22 + scores_shift_thumb
// 22 before, and the stored dots read back).
#[cfg(target_arch = "arm")]
core::arch::global_asm!(
    SCORES4_SECTION!(),
    ".global scores4_thumb",
    ".type scores4_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "scores4_thumb:",
    "push {{r4-r7, lr}}",
    "mov r4, r8",
    "mov r5, r9",
    "mov r6, r10",
    "mov r7, r11",
    "push {{r4-r7}}",
    "push {{r3}}",
    "mov lr, r0",
    "lsls r1, r1, #2",
    "adds r1, r0, r1",
    "mov r8, r1",
    "mov r0, r2",
    "ldr r4, [r3]", // stride
    "subs r4, #8",
    "mov r9, r4",
    "ldr r4, [r3, #4]", // p0
    "mov r10, r4",
    "ldr r4, [r3, #8]", // steps: their first shift word
    "adds r4, #4",
    "mov r12, r4",
    "movs r4, #1",
    "lsls r4, r4, #31",
    "mov r11, r4", // i32::MIN
    "ldr r1, [r3, #12]",
    "ldm r1!, {{r4, r5, r6, r7}}",
    "1:",
    DOTS4_POSITION!(),
    "add r0, r9",
    "mov r1, r12",
    "ldr r2, [r1]", // k.shift
    "adds r1, #8",
    "mov r12, r1",
    "add r2, r10", // t_s
    "asrs r3, r2",
    "adds r3, #1",
    "asrs r3, r3, #1",
    "cmp r3, r11",
    "ble 2f",
    "mov r11, r3",
    "2:",
    "mov r1, lr",
    "stm r1!, {{r3}}",
    "mov lr, r1",
    "cmp r1, r8",
    "bne 1b",
    "pop {{r3}}",
    "mov r2, r11",
    "str r2, [r3, #16]",
    "pop {{r4-r7}}",
    "mov r8, r4",
    "mov r9, r5",
    "mov r10, r6",
    "mov r11, r7",
    "pop {{r4-r7, pc}}",
    ".size scores4_thumb, . - scores4_thumb",
);

/// [`attention_dots`] for any head size (`q.len()`).
#[inline(never)]
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn attention_dots_any(att: &mut [i32], q: &[i32], keys: &[i16], kv_offset: usize, kv_dim: usize) {
    let mut at = kv_offset;
    for a in att.iter_mut() {
        let Some(k) = keys.get(at..at + q.len()) else {
            return;
        };
        *a = dot_act_kv(q, k);
        at += kv_dim;
    }
}

/// The plain form of [`scale_scores`].
pub(crate) fn scale_scores_reference(att: &mut [i32], key_steps: &[i32], q_scale: Multiplier) {
    for (a, step) in att.iter_mut().zip(key_steps.chunks_exact(STEP_WORDS)) {
        *a = q_scale.times(step_at(step)).apply_i32(*a);
    }
}

/// `att[t] = (q_scale · key step t)(att[t])`: the dot products to Q16.16 scores
/// ([`scale_scores_reference`] bit for bit; on thumbv6m through [`scores_thumb`]). Returns the
/// largest score (of all of `att`; `i32::MIN` when empty), tracked as they are stored.
#[inline(never)]
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub(crate) fn scale_scores(att: &mut [i32], key_steps: &[i32], q_scale: Multiplier) -> i32 {
    let n = att.len().min(key_steps.len() / STEP_WORDS);
    #[cfg(target_arch = "arm")]
    let (done, mut max) = scale_scores_thumb(&mut att[..n], key_steps, q_scale);
    #[cfg(not(target_arch = "arm"))]
    let (done, mut max) = (0, i32::MIN);
    for (a, step) in att[done..n]
        .iter_mut()
        .zip(key_steps[STEP_WORDS * done..].chunks_exact(STEP_WORDS))
    {
        *a = q_scale.times(step_at(step)).apply_i32(*a);
        max = max.max(*a);
    }
    att[n..].iter().fold(max, |m, &a| m.max(a))
}

/// [`scale_scores`] through [`scores_thumb`]: returns how many leading positions are done and
/// their largest score (`i32::MIN` for none).
/// The routine stops at a position whose shift is outside 1..=62; that one goes the plain way
/// and the routine goes on (after a few such stops, the rest go the plain way).
#[cfg(target_arch = "arm")]
#[inline(always)]
fn scale_scores_thumb(att: &mut [i32], key_steps: &[i32], q_scale: Multiplier) -> (usize, i32) {
    let n = att.len().min(key_steps.len() / STEP_WORDS);
    if q_scale.shift.unsigned_abs() >= 1 << 20 || q_scale.mant >= 1 << 31 {
        return (0, i32::MIN);
    }
    // [mant, shift, the running max]
    let mut q = [q_scale.mant, q_scale.shift as u32, i32::MIN as u32];
    let mut done = 0;
    // With power-of-two key steps the product's mantissa is m = q.mant >> 1 at every position;
    // when m is itself a power of two 2^j (head sizes 4, 16, 64: 1/√hs is one, and so is the
    // query's step), each score is a rounding shift of the dot product: scores_shift_thumb.
    let m = q_scale.mant >> 1;
    if m.is_power_of_two() && key_steps.first() == Some(&(1 << 30)) {
        let j = m.trailing_zeros() as i32;
        // [k.shift + this = s − j − 1, its largest value (s ≤ 62), the running max]
        let mut params = [
            (q_scale.shift - 32 - j) as u32,
            (61 - j) as u32,
            i32::MIN as u32,
        ];
        // SAFETY: as below, the routine reading the 3 words of `params` and writing its third.
        done = unsafe {
            scores_shift_thumb(att.as_mut_ptr(), n, key_steps.as_ptr(), params.as_mut_ptr())
        };
        q[2] = params[2];
        if done >= n {
            return (n, q[2] as i32);
        }
    }
    for _ in 0..4 {
        // Power-of-two key steps (the engine's: act_step) take the routine whose multiplier is
        // formed once; it stops at a position whose step is not one, as the other does at a
        // shift it does not take.
        let routine = if key_steps.get(STEP_WORDS * done) == Some(&(1 << 30)) {
            scores_pow2_thumb
        } else {
            scores_thumb
        };
        // SAFETY: att[done..n] and key_steps[2·done..2·n] are in bounds (n ≤ both lengths);
        // the routine reads 2 words of steps and reads/writes one word of att per position,
        // for at most n − done positions, reads the 3 words of `q` and writes its third.
        done += unsafe {
            routine(
                att.as_mut_ptr().add(done),
                n - done,
                key_steps.as_ptr().add(STEP_WORDS * done),
                q.as_mut_ptr(),
            )
        };
        if done >= n {
            return (n, q[2] as i32);
        }
        let step = step_at(&key_steps[STEP_WORDS * done..]);
        att[done] = q_scale.times(step).apply_i32(att[done]);
        q[2] = (q[2] as i32).max(att[done]) as u32;
        done += 1;
    }
    (done, q[2] as i32)
}

#[cfg(target_arch = "arm")]
extern "C" {
    /// [`scale_scores`] on thumbv6m: for each of up to `n` positions, `att[t] =
    /// (q · step t)(att[t])` with `q = [mant, shift]` (|shift| < 2²⁰) and step t = words
    /// `2t, 2t + 1` of `steps`, while the product's shift `q.shift + step.shift − 31` is in
    /// 1..=62 (always, for steps from `step_q16`); returns how many positions it did. `q[2]`
    /// is a running max (as `i32`): raised to each score stored.
    fn scores_thumb(att: *mut i32, n: usize, steps: *const i32, q: *mut u32) -> usize;
    /// [`scores_thumb`] while each step's mantissa is 2³⁰ (a power-of-two step): the
    /// product's mantissa is then `q.mant >> 1` at every position, formed once. Returns how
    /// many positions it did (it stops at a step of another mantissa, or as `scores_thumb`).
    fn scores_pow2_thumb(att: *mut i32, n: usize, steps: *const i32, q: *mut u32) -> usize;
    /// [`scores_pow2_thumb`] when its `m` is a power of two `2^j`: `att[t] = ((att[t] >> t_s)
    /// + 1) >> 1` with `t_s = k.shift + params[0]` (= s − j − 1), while each step's mantissa
    /// is 2³⁰ and `t_s` is in `0..=params[1]` (s ≤ 62); `params[2]` is the running max. Returns
    /// how many positions it did.
    fn scores_shift_thumb(att: *mut i32, n: usize, steps: *const i32, params: *mut u32) -> usize;
}

/// Where [`scores_shift_thumb`] lives (as [`SCORES_SECTION`]).
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! SCORES_SHIFT_SECTION {
    () => {
        ".section .data.ramfunc.scores_shift_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! SCORES_SHIFT_SECTION {
    () => {
        ".section .text.scores_shift_thumb,\"ax\",%progbits"
    };
}

// round_shift(v · 2^j, s) = floor((v + 2^(s−j−1)) / 2^(s−j)) = ((v >> (s−j−1)) + 1) >> 1 for
// s − j − 1 ≥ 0 (no saturation: |v · 2^j / 2^s| < 2^30), the running max as scores_thumb's.
// r0 att (advancing), r1–r3 scratch, r8 2^30, r9 the largest t_s, r10 params[0], r11 the max,
// r12 steps (advancing), lr the end of att; [sp] att at entry, [sp, #4] params. ~24 cycles a
// position (scores_pow2_thumb's straight path: ~41).
#[cfg(target_arch = "arm")]
core::arch::global_asm!(
    SCORES_SHIFT_SECTION!(),
    ".global scores_shift_thumb",
    ".type scores_shift_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "scores_shift_thumb:",
    "push {{r4-r7, lr}}",
    "mov r4, r8",
    "mov r5, r9",
    "mov r6, r10",
    "mov r7, r11",
    "push {{r4-r7}}",
    "push {{r0, r3}}",
    "lsls r1, r1, #2",
    "adds r1, r0, r1",
    "mov lr, r1",
    "mov r12, r2",
    "ldm r3!, {{r4, r5, r6}}",
    "mov r10, r4",
    "mov r9, r5",
    "mov r11, r6",
    "movs r4, #1",
    "lsls r4, r4, #30",
    "mov r8, r4",
    "cmp r0, lr",
    "beq 9f",
    "1:",
    "mov r1, r12",
    "ldm r1!, {{r2, r3}}", // k.mant, k.shift
    "mov r12, r1",
    "cmp r2, r8",
    "bne 9f", // not a power-of-two step: the caller goes on
    "add r3, r10",
    "cmp r3, r9",
    "bhi 9f", // t_s outside 0..=limit (a negative one wraps high)
    "ldr r1, [r0]",
    "asrs r1, r3",
    "adds r1, #1",
    "asrs r1, r1, #1",
    "cmp r1, r11",
    "ble 2f",
    "mov r11, r1",
    "2:",
    "stm r0!, {{r1}}",
    "cmp r0, lr",
    "bne 1b",
    "9:",
    "pop {{r1, r3}}", // att at entry, params
    "mov r2, r11",
    "str r2, [r3, #8]",
    "subs r0, r0, r1",
    "lsrs r0, r0, #2",
    "pop {{r4-r7}}",
    "mov r8, r4",
    "mov r9, r5",
    "mov r10, r6",
    "mov r11, r7",
    "pop {{r4-r7, pc}}",
    ".size scores_shift_thumb, . - scores_shift_thumb",
);

/// Where [`scores_thumb`] lives: SRAM on the RP2040, flash elsewhere.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! SCORES_SECTION {
    () => {
        ".section .data.ramfunc.scores_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! SCORES_SECTION {
    () => {
        ".section .text.scores_thumb,\"ax\",%progbits"
    };
}
/// Where [`scores_pow2_thumb`] lives (as [`SCORES_SECTION`]).
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! SCORES_POW2_SECTION {
    () => {
        ".section .data.ramfunc.scores_pow2_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! SCORES_POW2_SECTION {
    () => {
        ".section .text.scores_pow2_thumb,\"ax\",%progbits"
    };
}

// Multiplier::times then Multiplier::apply_i32 (round_shift for shifts 1..=62), bit for bit:
// m = (q.mant · k.mant) >> 31 from four 16×16 MULS; then v · m from four more. The usual shift
// s in 33..=62 takes a straight path (~56 cycles a position with the max, by the rp2040js cycle
// model: the signed product's high word h, ((h >> (s-33)) + 1) >> 1, which is
// (h + 2^(s-33)) >> (s-32)); any other goes the general way (~80): |v| · m as two words, + 2^(s-1)
// (- 1 for a negative v: floor division of the negated product, on the magnitude), >> s across
// the two words, saturated, the sign put back.
// Each score stored raises the running max (r11; q[2] at entry and at the end).
// r0 att (advancing), r1–r7 scratch, r8 / r9 the low / high half of q.mant, r10 q.shift − 64,
// r11 the max, r12 steps (advancing), lr the end of att; [sp] att at entry, [sp, #4] q.
/// [`SCORES_FUNCTION`]'s setup of r8 / r9 for any key step: q.mant's low / high half.
#[cfg(target_arch = "arm")]
macro_rules! SCORES_SETUP_PRODUCT {
    () => {
        concat!(
            "uxth r6, r4\n",
            "mov r8, r6\n",
            "lsrs r4, r4, #16\n",
            "mov r9, r4\n",
        )
    };
}

/// [`SCORES_FUNCTION`]'s fast-path m = (q.mant · k.mant) >> 31 into r7 (four MULS; r2 k.mant).
#[cfg(target_arch = "arm")]
macro_rules! SCORES_M_PRODUCT {
    () => {
        concat!(
            "uxth r4, r2\n",
            "lsrs r2, r2, #16\n",
            "mov r5, r8\n",
            "mov r6, r5\n",
            "muls r6, r4, r6\n", // lo·lo
            "muls r5, r2, r5\n", // q lo · k hi
            "mov r7, r9\n",
            "muls r4, r7, r4\n", // q hi · k lo
            "muls r7, r2, r7\n", // hi·hi
            "adds r5, r5, r4\n", // mid < 2^32 (both halves < 2^31)
            "lsls r4, r5, #16\n",
            "lsrs r5, r5, #16\n",
            "adds r6, r6, r4\n",
            "adcs r7, r5\n",
            "lsrs r6, r6, #31\n",
            "lsls r7, r7, #1\n",
            "orrs r7, r6\n", // r7 = m < 2^31
        )
    };
}

/// [`SCORES_FUNCTION`]'s general-path m into r1, as [`SCORES_M_PRODUCT`].
#[cfg(target_arch = "arm")]
macro_rules! SCORES_M_GENERAL_PRODUCT {
    () => {
        concat!(
            "uxth r4, r2\n",
            "lsrs r2, r2, #16\n",
            "mov r5, r8\n",
            "muls r5, r4, r5\n", // lo·lo
            "mov r6, r8\n",
            "muls r6, r2, r6\n", // q lo · k hi
            "mov r7, r9\n",
            "muls r7, r4, r7\n", // q hi · k lo
            "mov r1, r9\n",
            "muls r1, r2, r1\n", // hi·hi
            "adds r6, r6, r7\n", // mid < 2^32 (both halves < 2^31)
            "lsls r7, r6, #16\n",
            "lsrs r6, r6, #16\n",
            "adds r5, r5, r7\n",
            "adcs r1, r6\n",
            "lsls r1, r1, #1\n",
            "lsrs r5, r5, #31\n",
            "orrs r1, r5\n", // r1 = m
        )
    };
}

/// Power-of-two key steps ([`crate::kernels::act_step`]: k.mant = 2³⁰): m = (q.mant · 2³⁰) >> 31
/// = q.mant >> 1 exactly, the same for every position, formed once into r8 (r9 = 2³⁰ to check
/// each step against; a position whose step is not a power of two ends the routine there).
#[cfg(target_arch = "arm")]
macro_rules! SCORES_SETUP_POW2 {
    () => {
        concat!(
            "lsrs r6, r4, #1\n",
            "mov r8, r6\n",
            "movs r4, #1\n",
            "lsls r4, r4, #30\n",
            "mov r9, r4\n",
        )
    };
}
/// [`SCORES_SETUP_POW2`]'s fast-path m (3 cycles instead of 20).
#[cfg(target_arch = "arm")]
macro_rules! SCORES_M_POW2 {
    () => {
        concat!("cmp r2, r9\n", "bne 19f\n", "mov r7, r8\n",)
    };
}
/// [`SCORES_SETUP_POW2`]'s general-path m.
#[cfg(target_arch = "arm")]
macro_rules! SCORES_M_GENERAL_POW2 {
    () => {
        concat!("cmp r2, r9\n", "bne 9f\n", "mov r1, r8\n",)
    };
}

#[cfg(target_arch = "arm")]
macro_rules! SCORES_FUNCTION {
    ($name:literal, $section:expr, $setup:expr, $m:expr, $general_m:expr) => {
        core::arch::global_asm!(
            $section,
            concat!(".global ", $name),
            concat!(".type ", $name, ",%function"),
            ".thumb_func",
            ".p2align 2",
            concat!($name, ":"),
            "push {{r4-r7, lr}}",
            "mov r4, r8",
            "mov r5, r9",
            "mov r6, r10",
            "mov r7, r11",
            "push {{r4-r7}}",
            "push {{r0, r3}}",
            "ldr r4, [r3, #8]",
            "mov r11, r4",
            "lsls r1, r1, #2",
            "adds r1, r0, r1",
            "mov lr, r1",
            "mov r12, r2",
            "ldr r4, [r3]",
            "ldr r5, [r3, #4]",
            "subs r5, #64",
            "mov r10, r5", // q.shift − 31 − 33
            $setup,
            "cmp r0, lr",
            "bne 1f",
            "b 9f", // no positions (beyond a conditional branch's reach)
            "1:",
            "mov r1, r12",
            "ldm r1!, {{r2, r3}}", // r2 = k.mant, r3 = k.shift
            // s − 33 with s = q.shift + k.shift − 31, wrapping: with |q.shift| < 2^20 a wrapped sum is
            // far outside 33..=62, so the fast path below only takes shifts the saturating sum gives too.
            "add r3, r10",
            "cmp r3, #29",
            "bhi 20f",
            "mov r12, r1",
            // The fast path, s in 33..=62: m as below, then the signed v · m from v's signed high and
            // unsigned low half (four MULS, two carries), whose high word (h + 2^(s-33)) >> (s-32) is
            // round_shift's result (no saturation at these shifts).
            $m,
            "ldr r2, [r0]",
            "asrs r1, r2, #16", // v hi, signed
            "uxth r2, r2",      // v lo
            "lsrs r5, r7, #16", // m hi
            "uxth r7, r7",      // m lo
            "mov r4, r2",
            "muls r4, r7, r4", // v lo · m lo
            "muls r2, r5, r2", // v lo · m hi (< 2^31)
            "muls r7, r1, r7", // v hi · m lo (signed, |.| < 2^31)
            "muls r1, r5, r1", // v hi · m hi (signed)
            "lsls r5, r7, #16",
            "asrs r7, r7, #16",
            "adds r4, r4, r5",
            "adcs r1, r7",
            "lsls r5, r2, #16",
            "lsrs r2, r2, #16",
            "adds r4, r4, r5",
            "adcs r1, r2", // r1 = floor(v · m / 2^32)
            "asrs r1, r3",
            "adds r1, #1",
            "asrs r1, r1, #1",
            "cmp r1, r11",
            "ble 21f",
            "mov r11, r1",
            "21:",
            "stm r0!, {{r1}}",
            "cmp r0, lr",
            "bne 1b",
            "b 9f",
            "19:", // (the power-of-two form's exit from the fast path, beyond a conditional reach)
            "b 9f",
            // The general path, s in 1..=62 (r1 the next step, r2 k.mant, r3 s − 33).
            "20:",
            "adds r3, #33",
            "mov r4, r10",
            "adds r4, #33",
            "subs r4, r3, r4", // k.shift again
            // k.shift must be in 0..2^30 (so q.shift + k.shift cannot wrap), s = that − 31 in 1..=62.
            "lsrs r4, r4, #30",
            "bne 9f",
            "subs r4, r3, #1",
            "cmp r4, #61",
            "bhi 9f",
            "mov r12, r1",
            // m = (q.mant · k.mant) >> 31
            $general_m,
            // |v| · m
            "ldr r2, [r0]",
            "asrs r7, r2, #31", // 0, or -1 when v < 0
            "eors r2, r7",
            "subs r2, r2, r7", // |v| (2^31 for i32::MIN)
            "uxth r4, r2",
            "lsrs r2, r2, #16",
            "uxth r5, r1",
            "lsrs r1, r1, #16",
            "mov r6, r4",
            "muls r6, r1, r6", // v lo · m hi
            "muls r4, r5, r4", // lo·lo
            "muls r5, r2, r5", // v hi · m lo
            "muls r1, r2, r1", // hi·hi
            "adds r6, r6, r5", // mid < 2^32
            "lsls r5, r6, #16",
            "lsrs r6, r6, #16",
            "adds r4, r4, r5", // low word
            "adcs r1, r6",     // high word
            // + 2^(s-1) - [v < 0], a 64-bit add (r5:r2 = 2^(s-1), then the sign word twice)
            "cmp r3, #32",
            "bgt 2f",
            "movs r2, #1",
            "subs r5, r3, #1",
            "lsls r2, r5",
            "movs r5, #0",
            "b 8f",
            "2:",
            "movs r5, #1",
            "mov r2, r3",
            "subs r2, #33",
            "lsls r5, r2",
            "movs r2, #0",
            "8:",
            "adds r4, r4, r2",
            "adcs r1, r5",
            "adds r4, r4, r7",
            "adcs r1, r7",
            "cmp r3, #32",
            "bge 10f",
            // s ≤ 31: ≥ 2^32 after the shift saturates; R = rounded >> s across the two words
            "mov r2, r1",
            "lsrs r2, r3",
            "bne 5f",
            "movs r2, #32",
            "subs r2, r2, r3",
            "lsls r1, r2",
            "lsrs r4, r3",
            "orrs r1, r4",
            "b 11f",
            "10:",
            // s ≥ 32: R = the high word >> (s - 32) (< 2^30: no saturation)
            "mov r2, r3",
            "subs r2, #32",
            "lsrs r1, r2",
            "11:",
            "cmp r7, #0",
            "bne 3f",
            "cmp r1, #0",
            "blt 6f", // R ≥ 2^31: i32::MAX
            "b 4f",
            "3:",
            "rsbs r1, r1, #0",
            "cmp r1, #0",
            "bgt 7f", // R > 2^31: i32::MIN
            "4:",
            "cmp r1, r11",
            "ble 22f",
            "mov r11, r1",
            "22:",
            "stm r0!, {{r1}}",
            "cmp r0, lr",
            "beq 9f",
            "b 1b", // beyond a conditional branch's reach
            "5:",
            "cmp r7, #0",
            "bne 7f",
            "6:",
            "movs r1, #0",
            "mvns r1, r1",
            "lsrs r1, r1, #1",
            "b 4b",
            "7:",
            "movs r1, #1",
            "lsls r1, r1, #31",
            "b 4b",
            "9:",
            "pop {{r1, r2}}",
            "mov r3, r11",
            "str r3, [r2, #8]",
            "subs r0, r0, r1",
            "lsrs r0, r0, #2", // positions done
            "pop {{r4-r7}}",
            "mov r8, r4",
            "mov r9, r5",
            "mov r10, r6",
            "mov r11, r7",
            "pop {{r4-r7, pc}}",
            concat!(".size ", $name, ", . - ", $name),
        );
    };
}

#[cfg(target_arch = "arm")]
SCORES_FUNCTION!(
    "scores_thumb",
    SCORES_SECTION!(),
    SCORES_SETUP_PRODUCT!(),
    SCORES_M_PRODUCT!(),
    SCORES_M_GENERAL_PRODUCT!()
);
#[cfg(target_arch = "arm")]
SCORES_FUNCTION!(
    "scores_pow2_thumb",
    SCORES_POW2_SECTION!(),
    SCORES_SETUP_POW2!(),
    SCORES_M_POW2!(),
    SCORES_M_GENERAL_POW2!()
);

/// [`softmax`] bit for bit for fewer than 2¹⁶ scores: the sum of the `exp`s (each ≤ 2¹⁶) fits
/// `u32`, and each probability is one 32-bit multiply by the reciprocal (≤ 2¹⁶): p·inv < 2³²
/// unless p = 2¹⁶, whose product shifted back is `inv` itself.
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub(crate) fn softmax_u32(att: &mut [i32]) {
    if att.is_empty() || att.len() >= 1 << 16 {
        return softmax(att);
    }
    let inv = exp_and_reciprocal(att);
    for a in att.iter_mut() {
        *a = normalized(*a, inv);
    }
}

/// [`softmax_u32`] but its last loop, for `1 ≤ att.len() < 2¹⁶`: `att[t] = exp(att[t] − max)`,
/// returning the Q16 reciprocal of their sum (≤ 2¹⁶), which [`normalized`] applies.
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn exp_and_reciprocal(att: &mut [i32]) -> u32 {
    let max = att.iter().copied().max().unwrap_or(0);
    exp_and_reciprocal_from(att, max)
}

/// [`exp_and_reciprocal`] given the largest score `max` (as [`scale_scores`] returns it).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn exp_and_reciprocal_from(att: &mut [i32], max: i32) -> u32 {
    #[cfg(target_arch = "arm")]
    // SAFETY: att holds att.len() ≥ 1 words, which the routine reads and writes once each; it
    // reads EXP2_Q30 at indices ≤ 256 (the table has 257).
    let sum = unsafe { exp_sum_thumb(att.as_mut_ptr(), att.len(), max, EXP2_Q30.as_ptr()) };
    #[cfg(not(target_arch = "arm"))]
    let sum = exp_and_sum(att, max);
    // sum ≥ 2¹⁶: the max contributes exp(0).
    div_rem_u32(u32::MAX, sum.max(1)).0 + sum.is_power_of_two() as u32
}

/// The probability of an `exp` (`e`, ≤ 2¹⁶) given the reciprocal `inv` of their sum:
/// [`softmax_u32`]'s last step.
#[inline(always)]
pub(crate) fn normalized(e: i32, inv: u32) -> i32 {
    let p = e as u32;
    if p >= 1 << 16 {
        inv as i32
    } else {
        (p.wrapping_mul(inv) >> 16) as i32
    }
}

/// `att[t] = exp(att[t] − max)` ([`exp_q16`]), returning the sum (wrapping: < 2³² for fewer
/// than 2¹⁶ scores). [`exp_sum_thumb`] on the device.
#[cfg_attr(target_arch = "arm", allow(dead_code))]
pub(crate) fn exp_and_sum(att: &mut [i32], max: i32) -> u32 {
    let mut sum = 0u32;
    for a in att.iter_mut() {
        *a = exp_q16(a.saturating_sub(max));
        sum = sum.wrapping_add(*a as u32);
    }
    sum
}

#[cfg(target_arch = "arm")]
extern "C" {
    /// [`exp_and_sum`] of `n ≥ 1` scores at `att`, none above `max`, with `table` =
    /// [`EXP2_Q30`].
    pub(crate) fn exp_sum_thumb(att: *mut i32, n: usize, max: i32, table: *const u32) -> u32;
}

/// Where [`exp_sum_thumb`] lives: SRAM on the RP2040, flash elsewhere.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! EXP_SUM_SECTION {
    () => {
        ".section .data.ramfunc.exp_sum_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! EXP_SUM_SECTION {
    () => {
        ".section .text.exp_sum_thumb,\"ax\",%progbits"
    };
}

// exp_q16(a.saturating_sub(max)) per score, as kernels::exp_q16 computes it, for a ≤ max (the
// caller's max is the largest score): |x| = max − a in u32; |x| > 16 → 0 (a saturated x too);
// x = 0 runs the table path to exactly 2^16; t = |x| log2(e) from two 16×16 products,
// 2^-frac(t) interpolated between two table entries (one LDM), rounded and shifted by 14 +
// whole(t) (≥ 32 → 0). r0 att (advancing), r1 29012, r2 max, r3 the table, r4–r7 scratch, r8
// the sum, r10 2^20, r11 the end. A score within 16 of the max runs straight through: ~38
// cycles.
#[cfg(target_arch = "arm")]
core::arch::global_asm!(
    EXP_SUM_SECTION!(),
    ".global exp_sum_thumb",
    ".type exp_sum_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "exp_sum_thumb:",
    "push {{r4-r7, lr}}",
    "mov r4, r8",
    "mov r5, r10",
    "mov r6, r11",
    "push {{r4-r6}}",
    "lsls r1, r1, #2",
    "adds r1, r0, r1",
    "mov r11, r1",
    "movs r4, #0",
    "mov r8, r4",
    "movs r4, #1",
    "lsls r4, r4, #20",
    "mov r10, r4",
    "ldr r1, =29012",
    "1:",
    "ldr r4, [r0]",
    "subs r4, r2, r4", // |x| = max − a as u32 (≥ 0: max is the largest score; no wrap below 2^32)
    "cmp r4, r10",
    "bhi 8f", // x < -16 (or saturated in the reference): 0; x = 0 runs through to 2^16
    "lsrs r6, r4, #16",
    "muls r6, r1, r6",
    "uxth r7, r4",
    "muls r7, r1, r7",
    "lsrs r7, r7, #16",
    "adds r4, r4, r6",
    "adds r4, r4, r7",  // t
    "lsrs r5, r4, #16", // whole
    "uxth r4, r4",      // frac
    "lsrs r6, r4, #8",
    "lsls r6, r6, #2",
    "adds r6, r6, r3",
    "ldm r6, {{r6, r7}}", // lo, hi
    "subs r7, r6, r7",
    "uxtb r4, r4", // between
    "muls r7, r4, r7",
    "lsrs r7, r7, #8",
    "subs r7, r6, r7", // p = 2^-frac in Q30
    "adds r5, #13",    // shift − 1
    "cmp r5, #31",
    "bhs 8f",
    "lsrs r7, r5", // ((p >> (shift−1)) + 1) >> 1 = (p + 2^(shift−1)) >> shift
    "adds r7, #1",
    "lsrs r7, r7, #1",
    "9:",
    "stm r0!, {{r7}}",
    "add r8, r7",
    "cmp r0, r11",
    "bne 1b",
    "b 10f",
    "8:",
    "movs r7, #0",
    "b 9b",
    "10:",
    "mov r0, r8",
    "pop {{r4-r6}}",
    "mov r8, r4",
    "mov r10, r5",
    "mov r11, r6",
    "pop {{r4-r7, pc}}",
    ".ltorg",
    ".size exp_sum_thumb, . - exp_sum_thumb",
);

/// The plain form of [`weigh_by_value_steps`].
pub(crate) fn weigh_by_value_steps_reference(att: &mut [i32], value_steps: &[i32]) -> u32 {
    let mut total = 0u32;
    for (a, step) in att.iter_mut().zip(value_steps.chunks_exact(STEP_WORDS)) {
        *a = step_at(step).apply_i32(*a);
        total = total.saturating_add(a.unsigned_abs());
    }
    total
}

/// `att[t] = value step t · p_t` (Q24: the steps carry 2⁻⁸), returning Σ|att[t]| (saturated)
/// ([`weigh_by_value_steps_reference`] bit for bit; on thumbv6m through [`weigh_thumb`] for
/// probabilities in 0..=2¹⁶).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub(crate) fn weigh_by_value_steps(att: &mut [i32], value_steps: &[i32]) -> u32 {
    weigh(att, value_steps, 0)
}

/// [`weigh_by_value_steps`] of the probabilities of exps: `att[t] = value step t ·
/// normalized(att[t], inv)` (softmax's last step folded in; `inv` ≤ 2¹⁶ from
/// [`exp_and_reciprocal`]), bit for bit [`normalized`] then [`weigh_by_value_steps_reference`].
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub(crate) fn weigh_exps(att: &mut [i32], inv: u32, value_steps: &[i32]) -> u32 {
    if inv == 0 || inv > 1 << 16 {
        att.iter_mut().for_each(|a| *a = normalized(*a, inv));
        return weigh(att, value_steps, 0);
    }
    weigh(att, value_steps, inv)
}

/// [`weigh_by_value_steps`] (`inv` 0) or [`weigh_exps`] (`inv` in 1..=2¹⁶).
#[inline(always)]
fn weigh(att: &mut [i32], value_steps: &[i32], inv: u32) -> u32 {
    let n = att.len().min(value_steps.len() / STEP_WORDS);
    let mut total = 0u32;
    let probability = |a: i32| if inv == 0 { a } else { normalized(a, inv) };
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(target_arch = "arm")]
    for _ in 0..4 {
        // SAFETY: att[done..n] and value_steps[2·done..2·n] are in bounds; the routine reads
        // 2 step words and reads/writes one att word per position, for at most n − done
        // positions, and reads/writes `total`.
        done += unsafe {
            weigh_thumb(
                att.as_mut_ptr().add(done),
                n - done,
                value_steps.as_ptr().add(STEP_WORDS * done),
                &mut total,
                inv,
            )
        };
        if done >= n {
            return total;
        }
        let a = &mut att[done];
        *a = step_at(&value_steps[STEP_WORDS * done..]).apply_i32(probability(*a));
        total = total.saturating_add(a.unsigned_abs());
        done += 1;
    }
    for (a, step) in att[done..n]
        .iter_mut()
        .zip(value_steps[STEP_WORDS * done..].chunks_exact(STEP_WORDS))
    {
        *a = step_at(step).apply_i32(probability(*a));
        total = total.saturating_add(a.unsigned_abs());
    }
    total
}

#[cfg(target_arch = "arm")]
extern "C" {
    /// [`weigh_by_value_steps`] (`inv` 0) or [`weigh_exps`] (`inv` in 1..=2¹⁶, each `att[t]` an
    /// exp normalised first) on thumbv6m for up to `n` positions, while each probability is in
    /// 0..=2¹⁶ and each step's shift in 1..=62 (always, from softmax and step_q16); adds to
    /// `*total` (saturating) and returns how many positions it did (the one it stops at keeps
    /// its value).
    fn weigh_thumb(att: *mut i32, n: usize, steps: *const i32, total: *mut u32, inv: u32) -> usize;
}

/// Where [`weigh_thumb`] lives: SRAM on the RP2040, flash elsewhere.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! WEIGH_SECTION {
    () => {
        ".section .data.ramfunc.weigh_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! WEIGH_SECTION {
    () => {
        ".section .text.weigh_thumb,\"ax\",%progbits"
    };
}

// Multiplier::apply_i32(p) for 0 ≤ p ≤ 2^16; with inv ≠ 0, p = normalized(att[t], inv) first
// (one MULS; the loop at 30 instead of 1). The fast path, s in 17..=47 (every value step from
// step_q16 of a max above ~2^-14): with A = floor(p · mant / 2^16) = p · (mant >> 16) +
// (p · (mant & 0xFFFF)) >> 16 (< 2^31 for mant < 2^31), round(p · mant / 2^s) is
// (A + 2^(s-17)) >> (s-16) = ((A >> (s-17)) + 1) >> 1, the dropped low half being too small
// to carry: ~26 cycles a position (+4 normalising). Otherwise the general path (~50): p · mant as two words from the
// same two MULS, + 2^(s-1) as a 64-bit add, >> s across the words (s ≤ 31: saturating) or of
// the high word (s ≥ 32). r0 att (advancing), r1 steps (advancing), r2–r6 scratch, r7 the total
// (r12 while the general path runs), r8 att at entry, r9 the total pointer, r10 2^16, r11 inv,
// lr the end.
#[cfg(target_arch = "arm")]
core::arch::global_asm!(
    WEIGH_SECTION!(),
    ".global weigh_thumb",
    ".type weigh_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "weigh_thumb:",
    "push {{r4-r7, lr}}",
    "mov r4, r8",
    "mov r5, r9",
    "mov r6, r10",
    "mov r7, r11",
    "push {{r4-r7}}",
    "ldr r4, [sp, #36]", // inv: the fifth argument, above the nine saved registers
    "mov r11, r4",
    "mov r8, r0",
    "mov r9, r3",
    "ldr r7, [r3]",
    "lsls r3, r1, #2",
    "adds r3, r0, r3",
    "mov lr, r3",
    "movs r3, #1",
    "lsls r3, r3, #16",
    "mov r10, r3",
    "mov r1, r2",
    "cmp r0, lr",
    "beq 18f",
    "cmp r4, #0",
    "bne 30f",
    "1:",
    "ldr r2, [r0]", // p
    "cmp r2, r10",
    "bhi 18f",             // outside 0..=2^16
    "ldm r1!, {{r4, r5}}", // mant, shift
    "movs r6, r5",
    "subs r6, #17",
    "cmp r6, #30",
    "bhi 20f",
    "uxth r3, r4",
    "lsrs r4, r4, #16",
    "muls r3, r2, r3", // p · m lo
    "muls r4, r2, r4", // p · m hi
    "lsrs r3, r3, #16",
    "adds r4, r4, r3", // A
    "lsrs r4, r6",     // ((A >> (s-17)) + 1) >> 1 = (A + 2^(s-17)) >> (s-16)
    "adds r4, #1",
    "lsrs r4, r4, #1",
    "stm r0!, {{r4}}",
    "adds r7, r7, r4",
    "bcs 21f",
    "cmp r0, lr",
    "bne 1b",
    "18:",
    "b 9f",
    "21:",
    "movs r7, #0",
    "mvns r7, r7", // the total saturates, and stays so
    "cmp r0, lr",
    "bne 1b",
    "b 9f",
    // The general path (r2 p, r4 mant, r5 shift; r1 already at the next step).
    "20:",
    "subs r6, r5, #1",
    "cmp r6, #61",
    "bhi 9f",
    "mov r12, r7",
    "uxth r6, r4",
    "lsrs r4, r4, #16",
    "muls r4, r2, r4", // p · m hi
    "muls r6, r2, r6", // p · m lo
    "lsrs r7, r4, #16",
    "lsls r4, r4, #16",
    "adds r6, r6, r4", // low word
    "movs r4, #0",
    "adcs r7, r4", // high word
    "cmp r5, #32",
    "bgt 2f",
    "movs r2, #1",
    "subs r3, r5, #1",
    "lsls r2, r3",
    "adds r6, r6, r2",
    "adcs r7, r4",
    "b 3f",
    "2:",
    "movs r2, #1",
    "mov r3, r5",
    "subs r3, #33",
    "lsls r2, r3",
    "adds r7, r7, r2",
    "3:",
    "cmp r5, #32",
    "bge 4f",
    "mov r2, r7",
    "lsrs r2, r5",
    "bne 6f",
    "movs r2, #32",
    "subs r2, r2, r5",
    "lsls r7, r2",
    "lsrs r6, r5",
    "orrs r7, r6",
    "b 5f",
    "4:",
    "mov r2, r5",
    "subs r2, #32",
    "lsrs r7, r2",
    "5:",
    "cmp r7, #0",
    "bge 7f",
    "6:",
    "movs r7, #0",
    "mvns r7, r7",
    "lsrs r7, r7, #1", // i32::MAX
    "7:",
    "stm r0!, {{r7}}",
    "mov r2, r12",
    "adds r7, r2, r7",
    "bcc 8f",
    "movs r7, #0",
    "mvns r7, r7", // saturated
    "8:",
    "cmp r0, lr",
    "beq 9f",
    "mov r3, r11",
    "cmp r3, #0",
    "bne 30f",
    "b 1b",
    // The loop of exps: p = normalized(e, inv), then as at 1.
    "30:",
    "ldr r2, [r0]", // e
    "cmp r2, r10",
    "bhs 31f", // e ≥ 2^16: p = inv
    "mov r3, r11",
    "muls r2, r3, r2",
    "lsrs r2, r2, #16",
    "32:",
    "ldm r1!, {{r4, r5}}",
    "movs r6, r5",
    "subs r6, #17",
    "cmp r6, #30",
    "bhi 20b",
    "uxth r3, r4",
    "lsrs r4, r4, #16",
    "muls r3, r2, r3",
    "muls r4, r2, r4",
    "lsrs r3, r3, #16",
    "adds r4, r4, r3",
    "lsrs r4, r6",
    "adds r4, #1",
    "lsrs r4, r4, #1",
    "stm r0!, {{r4}}",
    "adds r7, r7, r4",
    "bcs 33f",
    "cmp r0, lr",
    "bne 30b",
    "b 9f",
    "31:",
    "mov r2, r11",
    "b 32b",
    "33:",
    "movs r7, #0",
    "mvns r7, r7",
    "cmp r0, lr",
    "bne 30b",
    "9:",
    "mov r3, r9",
    "str r7, [r3]",
    "mov r1, r8",
    "subs r0, r0, r1",
    "lsrs r0, r0, #2",
    "pop {{r4-r7}}",
    "mov r8, r4",
    "mov r9, r5",
    "mov r10, r6",
    "mov r11, r7",
    "pop {{r4-r7, pc}}",
    ".size weigh_thumb, . - weigh_thumb",
);

/// The last three steps of one head of `N` (4 or 6) in one pass down the cache: each exp
/// normalised by `inv` (in 1..=2¹⁶), weighed by its value step (Q24, as [`weigh_exps`]) and
/// at once multiplied into the sums of the value columns `kv_offset..kv_offset + 4`
/// ([`weigh_pv4`]); a head of 6 adds a [`pv4_thumb`] pass over columns 2..6 for 4 and 5.
/// The weights stay in `att`, so a position the pass cannot take (a value step's shift outside
/// 17..=47) is weighed the plain way and the sums redone as [`weighted_values`]; a total past
/// [`PV_I32_MAX_WEIGHT`] takes the wide sums. Bit for bit [`weigh_exps`] then the value sums.
/// Returns false (nothing done) when the shape does not fit the pass. With `lean` (a head of 4
/// over value steps [`values_lean`] took) and `inv` below 2¹⁶, [`pv4_lean`] does it all.
#[inline(always)]
fn weigh_and_sum_values<const N: usize>(
    out: &mut [i32],
    att: &mut [i32],
    inv: u32,
    cache: &KvView,
    kv_offset: usize,
    kv_dim: usize,
    lean: bool,
) -> bool {
    let n = att.len();
    let values = cache.values;
    let last = n
        .saturating_sub(1)
        .saturating_mul(kv_dim)
        .saturating_add(kv_offset + N);
    // The pass reads the values as words: a 4-byte aligned first value and an even kv_dim.
    let words =
        (values.as_ptr() as usize + 2 * kv_offset).is_multiple_of(4) && kv_dim.is_multiple_of(2);
    let fits = (N == 4 || N == 6)
        && n > 0
        && (1..=1 << 16).contains(&inv)
        && values.len() >= last
        && cache.value_steps.len() >= STEP_WORDS * n
        && out.len() >= N
        && words;
    if !fits {
        return false;
    }
    if N == 4 && lean && inv < 1 << 16 {
        let acc = pv4_lean(att, cache.value_steps, values, kv_offset, kv_dim, inv);
        for (o, a) in out.iter_mut().zip(acc) {
            *o = round_q8(a);
        }
        return true;
    }
    let (done, mut total, acc) = weigh_pv4(att, cache.value_steps, values, kv_offset, kv_dim, inv);
    if done < n {
        let rest = weigh_exps(
            &mut att[done..],
            inv,
            &cache.value_steps[STEP_WORDS * done..],
        );
        total = total.saturating_add(rest);
    }
    if total > PV_I32_MAX_WEIGHT {
        weighted_values_wide(out, att, values, kv_offset, kv_dim);
    } else if done < n {
        weighted_values::<N>(out, att, values, kv_offset, kv_dim);
    } else {
        for (o, a) in out.iter_mut().zip(acc) {
            *o = round_q8(a);
        }
        if N == 6 {
            let mut upper = [0i32; 4];
            weighted_values_4(&mut upper, att, values, kv_offset + 2, kv_dim);
            out[4..6].copy_from_slice(&upper[2..]);
        }
    }
    true
}

/// `round(a / 2⁸)` (half up), as the value sums' `((a + 2⁷) >> 8)` in `i64`: `a >> 8` plus the
/// bit below the cut, with no 64-bit add.
#[inline(always)]
fn round_q8(a: i32) -> i32 {
    (a >> 8) + ((a >> 7) & 1)
}

/// Whether [`pv4_lean`] may weigh `n` positions whose steps have these bounds: every value
/// step the engine's power of two (mantissa 2³⁰, as `act_step(..).shifted(8)` writes them) with
/// its shift in 17..=47, and the smallest shift low enough that no total weight can pass
/// [`PV_I32_MAX_WEIGHT`]. With `d = shift − 17`, a weight is `⌊(⌊p·2¹⁴ / 2^d⌋ + 1) / 2⌋ ≤
/// p·2^(13−d) + ½`, and the probabilities `p = ⌊e·inv / 2¹⁶⌋` sum to at most `sum·inv / 2¹⁶ ≤
/// 2¹⁶`, so the total is at most `2^(29 − d_min) + n/2`.
#[inline(always)]
fn values_lean(bounds: &StepBounds, n: usize) -> bool {
    let d_min = (bounds.value_shift_min - 17).clamp(0, 30) as u32;
    let bound = 1u32 << 29u32.saturating_sub(d_min);
    bounds.values_lean && n < 1 << 16 && bound + (n as u32) / 2 < PV_I32_MAX_WEIGHT
}

/// [`weigh_pv4`] over value steps [`values_lean`] took and an `inv` below 2¹⁶ (the exps at
/// most 2¹⁶, as [`exp_and_reciprocal_from`] leaves them): no position stops the pass and no
/// total can pass [`PV_I32_MAX_WEIGHT`], so it keeps neither a total nor the weights. With the
/// step's mantissa 2³⁰ the weight is `((((e·inv) >> 16) << 14 >> d) + 1) >> 1` (`e·inv <
/// 2³²`: `e ≤ 2¹⁶` and `inv < 2¹⁶`; `e = 2¹⁶` gives `p = inv` exactly, as [`normalized`]).
/// Returns the four wrapping sums, [`weigh_pv4`]'s for the same inputs. On thumbv6m
/// [`pv4_lean_thumb`]; this is its model.
#[inline(always)]
fn pv4_lean(
    att: &[i32],
    value_steps: &[i32],
    values: &[i16],
    kv_offset: usize,
    kv_dim: usize,
    inv: u32,
) -> [i32; 4] {
    #[cfg(target_arch = "arm")]
    {
        // [inv, the values' stride in bytes, then out: the four sums]
        let mut io = [inv, 2 * kv_dim as u32, 0, 0, 0, 0];
        // SAFETY: as weigh_pv4's: att holds n ≥ 1 words and value_steps 2n (values_lean
        // checked); the routine reads one att word, 2 step words and 4 i16 (two words,
        // aligned: the caller checked) at values[kv_offset + t·kv_dim ..] per position t < n,
        // reads io[0..2] and writes io[2..6].
        unsafe {
            pv4_lean_thumb(
                att.as_ptr(),
                att.len(),
                value_steps.as_ptr(),
                values.as_ptr().add(kv_offset),
                io.as_mut_ptr(),
            )
        };
        [io[2], io[3], io[4], io[5]].map(|a| a as i32)
    }
    #[cfg(not(target_arch = "arm"))]
    {
        let mut acc = [0i32; 4];
        let mut at = kv_offset;
        for (&e, step) in att.iter().zip(value_steps.chunks_exact(STEP_WORDS)) {
            let p = (e as u32).wrapping_mul(inv) >> 16;
            let d = (step[1] as u32).wrapping_sub(17);
            let weight = (((p << 14) >> d) + 1) >> 1;
            for (s, &v) in acc.iter_mut().zip(&values[at..at + 4]) {
                *s = s.wrapping_add((weight as i32).wrapping_mul(v as i32));
            }
            at += kv_dim;
        }
        acc
    }
}

#[cfg(target_arch = "arm")]
extern "C" {
    /// [`pv4_lean`] on thumbv6m: `n ≥ 1` positions of `att`, `steps` and `values` (the first
    /// position's four columns, 4-byte aligned); `io` = [inv (< 2¹⁶), the values' stride in
    /// bytes (a multiple of 4, ≥ 8), then out: the four sums].
    fn pv4_lean_thumb(
        att: *const i32,
        n: usize,
        steps: *const i32,
        values: *const i16,
        io: *mut u32,
    );
}

/// Where [`pv4_lean_thumb`] lives: SRAM on the RP2040, flash elsewhere.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! PV4_LEAN_SECTION {
    () => {
        ".section .data.ramfunc.pv4_lean_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! PV4_LEAN_SECTION {
    () => {
        ".section .text.pv4_lean_thumb,\"ax\",%progbits"
    };
}

// r0 att (advancing), r1 steps (advancing), r2 the weight, r3 values (advancing: an LDM of two
// words, then the stride less 8), r4–r6 scratch, r7 inv, r8–r11 the four sums, r12 the stride
// − 8, lr the end of att; [sp] io. Per position: the exp (LDM 2), e·inv (MULS), >> 16 << 14,
// the step (LDM 3), >> (shift − 17), rounded, the values (LDM 3), 4 × (extract, MULS, ADD),
// the stride and the loop: 31 cycles by the rp2040js cycle model (weigh_pv4_thumb's 46).
#[cfg(target_arch = "arm")]
core::arch::global_asm!(
    PV4_LEAN_SECTION!(),
    ".global pv4_lean_thumb",
    ".type pv4_lean_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "pv4_lean_thumb:",
    "push {{r4-r7, lr}}",
    "mov r4, r8",
    "mov r5, r9",
    "mov r6, r10",
    "mov r7, r11",
    "push {{r4-r7}}",
    "ldr r4, [sp, #36]", // io: the fifth argument, above the nine saved registers
    "push {{r4}}",
    "ldr r7, [r4]",     // inv
    "ldr r6, [r4, #4]", // stride
    "subs r6, #8",
    "mov r12, r6",
    "lsls r1, r1, #2",
    "adds r1, r0, r1",
    "mov lr, r1",
    "mov r1, r2",
    "movs r4, #0",
    "mov r8, r4",
    "mov r9, r4",
    "mov r10, r4",
    "mov r11, r4",
    "1:",
    "ldm r0!, {{r2}}", // e
    "muls r2, r7, r2",
    "lsrs r2, r2, #16", // p
    "lsls r2, r2, #14",
    "ldm r1!, {{r4, r5}}", // mant (2^30), shift
    "subs r5, #17",
    "lsrs r2, r5",
    "adds r2, #1",
    "lsrs r2, r2, #1", // the weight
    "ldm r3!, {{r5, r6}}",
    "sxth r4, r5",
    "muls r4, r2, r4",
    "add r8, r4",
    "asrs r5, r5, #16",
    "muls r5, r2, r5",
    "add r9, r5",
    "sxth r4, r6",
    "muls r4, r2, r4",
    "add r10, r4",
    "asrs r6, r6, #16",
    "muls r6, r2, r6",
    "add r11, r6",
    "add r3, r12",
    "cmp r0, lr",
    "bne 1b",
    "pop {{r2}}", // io
    "mov r4, r8",
    "str r4, [r2, #8]",
    "mov r4, r9",
    "str r4, [r2, #12]",
    "mov r4, r10",
    "str r4, [r2, #16]",
    "mov r4, r11",
    "str r4, [r2, #20]",
    "pop {{r4-r7}}",
    "mov r8, r4",
    "mov r9, r5",
    "mov r10, r6",
    "mov r11, r7",
    "pop {{r4-r7, pc}}",
    ".size pv4_lean_thumb, . - pv4_lean_thumb",
);

/// [`weigh_exps`] fused with the value sums of 4 columns: for each position `t` while its value
/// step's shift is in 17..=47, `att[t]` = the weight (the exp normalised by `inv`, times the step)
/// and `acc[i] += weight · values[kv_offset + t·kv_dim + i]` (wrapping). Returns how many
/// positions it did, their total weight (saturated) and the four sums; the one it stops at keeps
/// its exp. `att.len() ≥ 1`, `inv` in 1..=2¹⁶, the values of every position in bounds and (on
/// thumbv6m) word-aligned: [`weigh_and_sum_values`] checks. On thumbv6m [`weigh_pv4_thumb`];
/// this is its model, step for step.
#[inline(always)]
fn weigh_pv4(
    att: &mut [i32],
    value_steps: &[i32],
    values: &[i16],
    kv_offset: usize,
    kv_dim: usize,
    inv: u32,
) -> (usize, u32, [i32; 4]) {
    #[cfg(target_arch = "arm")]
    {
        // [inv, the values' stride in bytes, the total, the four sums]
        let mut io = [inv, 2 * kv_dim as u32, 0, 0, 0, 0, 0];
        // SAFETY: att holds n ≥ 1 words and value_steps 2n; the routine reads 2 step words and
        // reads/writes one att word per position for at most n positions, reads 4 i16 (two
        // words, aligned) at values[kv_offset + t·kv_dim ..] for t < n (in bounds: the caller
        // checked), reads io[0..2] and writes io[2..7].
        let done = unsafe {
            weigh_pv4_thumb(
                att.as_mut_ptr(),
                att.len(),
                value_steps.as_ptr(),
                values.as_ptr().add(kv_offset),
                io.as_mut_ptr(),
            )
        };
        let acc = [io[3], io[4], io[5], io[6]].map(|a| a as i32);
        (done, io[2], acc)
    }
    #[cfg(not(target_arch = "arm"))]
    {
        let (mut total, mut acc) = (0u32, [0i32; 4]);
        for (t, (a, step)) in att
            .iter_mut()
            .zip(value_steps.chunks_exact(STEP_WORDS))
            .enumerate()
        {
            let e = *a as u32;
            let p = if e >> 16 != 0 {
                inv
            } else {
                e.wrapping_mul(inv) >> 16
            };
            let (mant, down) = (step[0] as u32, (step[1] as u32).wrapping_sub(17));
            if down > 30 {
                return (t, total, acc);
            }
            let whole = p
                .wrapping_mul(mant >> 16)
                .wrapping_add(p.wrapping_mul(mant & 0xFFFF) >> 16);
            let weight = ((whole >> down) + 1) >> 1;
            *a = weight as i32;
            total = total.saturating_add(weight);
            let at = kv_offset + t * kv_dim;
            for (s, &v) in acc.iter_mut().zip(&values[at..at + 4]) {
                *s = s.wrapping_add((weight as i32).wrapping_mul(v as i32));
            }
        }
        (att.len(), total, acc)
    }
}

#[cfg(target_arch = "arm")]
extern "C" {
    /// [`weigh_pv4`] on thumbv6m: `n ≥ 1` positions of `att`, `steps` and `values` (the first
    /// position's four columns, 4-byte aligned); `io` = [inv, the values' stride in bytes (a
    /// multiple of 4, ≥ 8), then out: the total, the four sums]. Returns the positions done.
    fn weigh_pv4_thumb(
        att: *mut i32,
        n: usize,
        steps: *const i32,
        values: *const i16,
        io: *mut u32,
    ) -> usize;
}

/// Where [`weigh_pv4_thumb`] lives: SRAM on the RP2040, flash elsewhere.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! WEIGH_PV4_SECTION {
    () => {
        ".section .data.ramfunc.weigh_pv4_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! WEIGH_PV4_SECTION {
    () => {
        ".section .text.weigh_pv4_thumb,\"ax\",%progbits"
    };
}

// weigh_thumb's loop of exps (its fast path only; ((A >> (s-17)) + 1) >> 1 for its
// (A + 2^(s-17)) >> (s-16)) and pv4's sums in one loop: the weight is stored (a fallback's wide
// sums need it) and multiplied into the sums while in a register. r0 att (advancing), r1 steps
// (advancing), r2 p / scratch, r3 values (advancing: an LDM of two words, then the stride less
// 8), r4 the weight, r5 s − 17 / a value word, r6 scratch / a value word, r7 the total, r8–r11
// the four sums, r12 the stride − 8, lr the end of att; [sp] att at entry, [sp, #4] io,
// [sp, #8] inv. Per position: ~46 cycles by the rp2040js cycle model (weigh_thumb 32 + pv4 22).
#[cfg(target_arch = "arm")]
core::arch::global_asm!(
    WEIGH_PV4_SECTION!(),
    ".global weigh_pv4_thumb",
    ".type weigh_pv4_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "weigh_pv4_thumb:",
    "push {{r4-r7, lr}}",
    "mov r4, r8",
    "mov r5, r9",
    "mov r6, r10",
    "mov r7, r11",
    "push {{r4-r7}}",
    "ldr r4, [sp, #36]", // io: the fifth argument, above the nine saved registers
    "ldr r5, [r4]",      // inv
    "ldr r6, [r4, #4]",  // stride
    "subs r6, #8",
    "mov r12, r6",
    "lsls r1, r1, #2",
    "adds r1, r0, r1",
    "mov lr, r1",
    "mov r1, r2",
    "push {{r0, r4, r5}}",
    "movs r7, #0",
    "mov r8, r7",
    "mov r9, r7",
    "mov r10, r7",
    "mov r11, r7",
    "1:",
    "ldr r2, [r0]", // e
    "lsrs r4, r2, #16",
    "bne 31f", // e ≥ 2^16 (as u32): p = inv
    "ldr r4, [sp, #8]",
    "muls r2, r4, r2",
    "lsrs r2, r2, #16", // p
    "2:",
    "ldm r1!, {{r4, r5}}", // mant, shift
    "subs r5, #17",
    "cmp r5, #30",
    "bhi 9f", // shift outside 17..=47: the caller goes on
    "uxth r6, r4",
    "lsrs r4, r4, #16",
    "muls r6, r2, r6", // p · m lo
    "muls r4, r2, r4", // p · m hi
    "lsrs r6, r6, #16",
    "adds r4, r4, r6", // A
    "lsrs r4, r5",
    "adds r4, #1",
    "lsrs r4, r4, #1", // the weight
    "stm r0!, {{r4}}",
    "adds r7, r7, r4",
    "bcs 33f",
    "3:",
    "ldm r3!, {{r5, r6}}",
    "sxth r2, r5",
    "muls r2, r4, r2",
    "add r8, r2",
    "asrs r5, r5, #16",
    "muls r5, r4, r5",
    "add r9, r5",
    "sxth r2, r6",
    "muls r2, r4, r2",
    "add r10, r2",
    "asrs r6, r6, #16",
    "muls r6, r4, r6",
    "add r11, r6",
    "add r3, r12",
    "cmp r0, lr",
    "bne 1b",
    "b 9f",
    "31:",
    "ldr r2, [sp, #8]",
    "b 2b",
    "33:",
    "movs r7, #0",
    "mvns r7, r7", // the total saturates, and stays so
    "b 3b",
    "9:",
    "pop {{r1, r2, r3}}", // att at entry, io, inv
    "str r7, [r2, #8]",
    "mov r4, r8",
    "str r4, [r2, #12]",
    "mov r4, r9",
    "str r4, [r2, #16]",
    "mov r4, r10",
    "str r4, [r2, #20]",
    "mov r4, r11",
    "str r4, [r2, #24]",
    "subs r0, r0, r1",
    "lsrs r0, r0, #2", // positions done
    "pop {{r4-r7}}",
    "mov r8, r4",
    "mov r9, r5",
    "mov r10, r6",
    "mov r11, r7",
    "pop {{r4-r7, pc}}",
    ".size weigh_pv4_thumb, . - weigh_pv4_thumb",
);

/// `out[i] = round(Σ_t w_t · v_t[i] / 2⁸)` for a head of `N` elements, in `i32` (exact when
/// Σ|w_t| ≤ [`PV_I32_MAX_WEIGHT`]): position by position, up to eight sums in registers (a head
/// of 8 in one pass of [`pv8_thumb`] when its values are word-aligned, else two of 4).
fn weighted_values<const N: usize>(
    out: &mut [i32],
    weights: &[i32],
    values: &[i16],
    kv_offset: usize,
    kv_dim: usize,
) {
    #[cfg(target_arch = "arm")]
    if N == 8 {
        let n = weights.len();
        let last = n
            .saturating_sub(1)
            .saturating_mul(kv_dim)
            .saturating_add(kv_offset + 8);
        let words = (values.as_ptr() as usize + 2 * kv_offset).is_multiple_of(4)
            && kv_dim.is_multiple_of(2)
            && kv_dim >= 8;
        if n > 0 && values.len() >= last && out.len() >= 8 && words {
            let mut acc = [0i32; 8];
            // SAFETY: `weights` holds n ≥ 1 words; the routine reads 8 i16 (four words, 4-byte
            // aligned by `words`) at values[kv_offset + t·kv_dim ..] for t < n, all below
            // `last` ≤ values.len(), and writes the 8 words of `acc`.
            unsafe {
                pv8_thumb(
                    weights.as_ptr(),
                    n,
                    values.as_ptr().add(kv_offset),
                    2 * kv_dim,
                    acc.as_mut_ptr(),
                )
            };
            for (o, a) in out.iter_mut().zip(acc) {
                *o = ((a as i64 + (1 << 7)) >> 8) as i32;
            }
            return;
        }
    }
    if N == 8 {
        let (lo, hi) = out.split_at_mut(N / 2);
        weighted_values_4(lo, weights, values, kv_offset, kv_dim);
        weighted_values_4(hi, weights, values, kv_offset + N / 2, kv_dim);
    } else if N == 4 {
        weighted_values_4(out, weights, values, kv_offset, kv_dim);
    } else if N == 6 && out.len() >= 6 {
        // Columns 0..4, then 2..6 (keeping 4 and 5): two passes of four.
        let (low, high) = out[..6].split_at_mut(4);
        weighted_values_4(low, weights, values, kv_offset, kv_dim);
        let mut upper = [0i32; 4];
        weighted_values_4(&mut upper, weights, values, kv_offset + 2, kv_dim);
        high.copy_from_slice(&upper[2..]);
    } else {
        weighted_values_cols::<N>(out, weights, values, kv_offset, kv_dim);
    }
}

/// [`weighted_values_cols`] of 4 columns; on thumbv6m through [`pv4_thumb`] (22 cycles per
/// position, 5.5 per MAC: the four sums in high registers, the column offsets in low ones).
#[inline(always)]
fn weighted_values_4(
    out: &mut [i32],
    weights: &[i32],
    values: &[i16],
    kv_offset: usize,
    kv_dim: usize,
) {
    #[cfg(target_arch = "arm")]
    {
        let n = weights.len();
        let last = n
            .saturating_sub(1)
            .saturating_mul(kv_dim)
            .saturating_add(kv_offset + 4);
        if n > 0 && values.len() >= last && out.len() >= 4 {
            let mut acc = [0i32; 4];
            // SAFETY: `weights` holds n ≥ 1 words; the routine reads 4 i16 at
            // values[kv_offset + t·kv_dim ..] for t < n, all below `last` ≤ values.len(), and
            // writes the 4 words of `acc`.
            unsafe {
                pv4_thumb(
                    weights.as_ptr(),
                    n,
                    values.as_ptr().add(kv_offset),
                    2 * kv_dim,
                    acc.as_mut_ptr(),
                )
            };
            for (o, a) in out.iter_mut().zip(acc) {
                *o = ((a as i64 + (1 << 7)) >> 8) as i32;
            }
            return;
        }
    }
    weighted_values_cols::<4>(out, weights, values, kv_offset, kv_dim);
}

#[cfg(target_arch = "arm")]
extern "C" {
    /// `acc[i] = Σ_t w[t] · v[t·stride/2 + i]` for `i < 4`, `t < n` (n ≥ 1; `stride` in
    /// bytes), wrapping `i32` sums: the p·v loop of [`weighted_values_cols`].
    fn pv4_thumb(w: *const i32, n: usize, v: *const i16, stride: usize, acc: *mut i32);
}

#[cfg(target_arch = "arm")]
extern "C" {
    /// `acc[i] = Σ_t w[t] · v[t·stride/2 + i]` for `i < 8`, `t < n` (n ≥ 1; `v` 4-byte aligned,
    /// `stride` in bytes, a multiple of 4 ≥ 16), wrapping `i32` sums: a head of 8 in one pass.
    fn pv8_thumb(w: *const i32, n: usize, v: *const i16, stride: usize, acc: *mut i32);
}

/// Four columns of [`pv8_thumb`]: two value words by LDM, each value times the weight (r3) into
/// the sums `$a`–`$d` (`$c`, `$d` low registers when the ADD must be `adds`).
#[cfg(target_arch = "arm")]
macro_rules! PV8_QUAD {
    ($a:literal, $b:literal, $c:literal, $d:literal) => {
        concat!(
            "ldm r2!, {{r4, r5}}\n",
            "sxth r1, r4\n",
            "muls r1, r3, r1\n",
            "add ",
            $a,
            ", r1\n",
            "asrs r4, r4, #16\n",
            "muls r4, r3, r4\n",
            "add ",
            $b,
            ", r4\n",
            "sxth r1, r5\n",
            "muls r1, r3, r1\n",
            "add ",
            $c,
            ", r1\n",
            "asrs r5, r5, #16\n",
            "muls r5, r3, r5\n",
            "add ",
            $d,
            ", r5\n",
        )
    };
}

/// Where [`pv8_thumb`] lives: SRAM on the RP2040, flash elsewhere.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! PV8_SECTION {
    () => {
        ".section .data.ramfunc.pv8_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! PV8_SECTION {
    () => {
        ".section .text.pv8_thumb,\"ax\",%progbits"
    };
}

// r0 weights (advancing), r1 scratch, r2 values (advancing: two LDM of two words, then the
// stride less 16), r3 the weight, r4 / r5 value words, r8–r12, lr, r6, r7 the eight sums;
// [sp] the stride − 16, [sp, #4] the end of the weights. Per position: LDM 2, 2 × (LDM 3 +
// 4 × (extract, MULS, ADD)), the stride and the loop: 40 cycles for 8 MACs (two pv4_thumb
// passes: 44, and a second call).
#[cfg(target_arch = "arm")]
core::arch::global_asm!(
    PV8_SECTION!(),
    ".global pv8_thumb",
    ".type pv8_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "pv8_thumb:",
    "push {{r4-r7, lr}}",
    "mov r4, r8",
    "mov r5, r9",
    "mov r6, r10",
    "mov r7, r11",
    "push {{r4-r7}}",
    "sub sp, #8",
    "subs r3, #16",
    "str r3, [sp]",
    "lsls r1, r1, #2",
    "adds r1, r0, r1",
    "str r1, [sp, #4]",
    "movs r4, #0",
    "mov r8, r4",
    "mov r9, r4",
    "mov r10, r4",
    "mov r11, r4",
    "mov r12, r4",
    "mov lr, r4",
    "movs r6, #0",
    "movs r7, #0",
    "1:",
    "ldm r0!, {{r3}}",
    PV8_QUAD!("r8", "r9", "r10", "r11"),
    PV8_QUAD!("r12", "lr", "r6", "r7"),
    "ldr r1, [sp]",
    "add r2, r1",
    "ldr r1, [sp, #4]",
    "cmp r0, r1",
    "bne 1b",
    "ldr r0, [sp, #44]", // acc: the fifth argument, above the 9 words pushed and the 2 reserved
    "mov r1, r8",
    "str r1, [r0]",
    "mov r1, r9",
    "str r1, [r0, #4]",
    "mov r1, r10",
    "str r1, [r0, #8]",
    "mov r1, r11",
    "str r1, [r0, #12]",
    "mov r1, r12",
    "str r1, [r0, #16]",
    "mov r1, lr",
    "str r1, [r0, #20]",
    "str r6, [r0, #24]",
    "str r7, [r0, #28]",
    "add sp, #8",
    "pop {{r4-r7}}",
    "mov r8, r4",
    "mov r9, r5",
    "mov r10, r6",
    "mov r11, r7",
    "pop {{r4-r7, pc}}",
    ".size pv8_thumb, . - pv8_thumb",
);

/// Where [`pv4_thumb`] lives: SRAM on the RP2040, flash elsewhere.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! PV4_SECTION {
    () => {
        ".section .data.ramfunc.pv4_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! PV4_SECTION {
    () => {
        ".section .text.pv4_thumb,\"ax\",%progbits"
    };
}

// r0 weights (advancing), r1 scratch, r2 values (advancing by the stride), r3 the weight,
// r4–r7 the column offsets 0, 2, 4, 6, r8–r11 the four sums, r12 the stride, lr the end of the
// weights. Per position: LDM 2, 4 × (LDRSH 2 + MULS 1 + ADD 1), ADD, CMP, BNE 2 = 22 cycles.
#[cfg(target_arch = "arm")]
core::arch::global_asm!(
    PV4_SECTION!(),
    ".global pv4_thumb",
    ".type pv4_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "pv4_thumb:",
    "push {{r4-r7, lr}}",
    "mov r4, r8",
    "mov r5, r9",
    "mov r6, r10",
    "mov r7, r11",
    "push {{r4-r7}}",
    "lsls r1, r1, #2",
    "adds r1, r0, r1",
    "mov lr, r1",
    "mov r12, r3",
    "movs r4, #0",
    "mov r8, r4",
    "mov r9, r4",
    "mov r10, r4",
    "mov r11, r4",
    "movs r5, #2",
    "movs r6, #4",
    "movs r7, #6",
    "1:",
    "ldm r0!, {{r3}}",
    "ldrsh r1, [r2, r4]",
    "muls r1, r3, r1",
    "add r8, r1",
    "ldrsh r1, [r2, r5]",
    "muls r1, r3, r1",
    "add r9, r1",
    "ldrsh r1, [r2, r6]",
    "muls r1, r3, r1",
    "add r10, r1",
    "ldrsh r1, [r2, r7]",
    "muls r1, r3, r1",
    "add r11, r1",
    "add r2, r12",
    "cmp r0, lr",
    "bne 1b",
    "ldr r0, [sp, #36]", // acc: the fifth argument, above the 9 words pushed
    "mov r1, r8",
    "str r1, [r0]",
    "mov r1, r9",
    "str r1, [r0, #4]",
    "mov r1, r10",
    "str r1, [r0, #8]",
    "mov r1, r11",
    "str r1, [r0, #12]",
    "pop {{r4-r7}}",
    "mov r8, r4",
    "mov r9, r5",
    "mov r10, r6",
    "mov r11, r7",
    "pop {{r4-r7, pc}}",
    ".size pv4_thumb, . - pv4_thumb",
);

/// [`weighted_values`] of `M` (≤ 4) columns.
#[inline(never)]
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn weighted_values_cols<const M: usize>(
    out: &mut [i32],
    weights: &[i32],
    values: &[i16],
    kv_offset: usize,
    kv_dim: usize,
) {
    let mut acc = [0i32; M];
    let mut at = kv_offset;
    for &w in weights {
        let Some(v) = values.get(at..at + M) else {
            break;
        };
        for i in 0..M {
            acc[i] = acc[i].wrapping_add(w.wrapping_mul(v[i] as i32));
        }
        at += kv_dim;
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = ((a as i64 + (1 << 7)) >> 8) as i32;
    }
}

/// [`weighted_values`] for any head size (`out.len()`): one output element at a time. (Left to
/// inline: only the any-size instance of `attention_heads` calls it, and out of line its value
/// loads keep their bounds checks: the flagship's heads of 24 lost ~0.6 %.)
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn weighted_values_any(
    out: &mut [i32],
    weights: &[i32],
    values: &[i16],
    kv_offset: usize,
    kv_dim: usize,
) {
    for (i, o) in out.iter_mut().enumerate() {
        let mut acc = 0i32;
        let mut at = kv_offset + i;
        for &w in weights {
            let v = values.get(at).copied().unwrap_or(0) as i32;
            acc = acc.wrapping_add(w.wrapping_mul(v));
            at += kv_dim;
        }
        *o = ((acc as i64 + (1 << 7)) >> 8) as i32;
    }
}

/// The reference's value sums (any weights): each product from the two 16-bit halves of the
/// weight, summed in `i64`.
#[inline(never)]
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn weighted_values_wide(
    out: &mut [i32],
    weights: &[i32],
    values: &[i16],
    kv_offset: usize,
    kv_dim: usize,
) {
    for (i, o) in out.iter_mut().enumerate() {
        let (mut acc_hi, mut acc_lo) = (0i64, 0i64);
        let mut at = kv_offset + i;
        for &weight_q24 in weights {
            let v = values.get(at).copied().unwrap_or(0) as i32;
            acc_hi += ((weight_q24 >> 16) * v) as i64;
            acc_lo += ((weight_q24 & 0xFFFF) * v) as i64;
            at += kv_dim;
        }
        let acc = (acc_hi << 16) + acc_lo;
        *o = ((acc + (1 << 7)) >> 8).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::step_q16;
    use std::vec;
    use std::vec::Vec;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 16) as u32
        }
        /// Uniform in `-range..=range`.
        fn signed(&mut self, range: i32) -> i32 {
            let span = 2 * range as u64 + 1;
            (((((self.next() as u64) << 32) | self.next() as u64) % span) as i64 - range as i64)
                as i32
        }
    }

    /// The scores' scale is `1/√hs` (as `2⁻¹⁶/√hs`, the Q16 steps' product taken into account)
    /// at every head size the format allows; below 16 it is the exact formula it always was
    /// (so those models' outputs did not move), from 16 on `hs << 60` wrapped.
    #[test]
    fn score_scale_is_one_over_the_root_of_every_head_size() {
        for hs in 1..=crate::format::MAX_HEAD_SIZE {
            let m = score_scale(hs);
            let value = m.mant as f64 * 2f64.powi(-m.shift);
            let want = 2f64.powi(-16) / (hs as f64).sqrt();
            assert!(
                (value / want - 1.0).abs() < 1e-8,
                "head size {hs}: {value:e}, want {want:e}"
            );
            if hs < 16 {
                let old = isqrt_u64((hs as u64) << 60).max(1);
                assert_eq!(
                    m,
                    Multiplier::from_fixed((1u64 << 62) / old, 48),
                    "head size {hs}"
                );
            }
        }
    }

    /// The integer attention against f64 attention on the same (unquantised) queries, keys and
    /// values, at the head sizes of the committed configs and beyond (flagship 24, Tiny-LLM 96):
    /// within 1 % of the largest output. With the wrapped scale of head sizes ≥ 16 the error was
    /// 40–95 % of it.
    /// The embedding row by its stride-4 MULS path equals the plain form, for every token of
    /// row-quad matrices with a tail, row scales of many shifts (some outside the fast path),
    /// and mantissas as the file gives them.
    #[test]
    fn embedding_row_is_its_reference() {
        let mut rng = Rng(0xE4BE_DD1A_0000_0001);
        for (rows, cols) in [(4, 8), (7, 8), (64, 8), (66, 16), (130, 96), (9, 3)] {
            let grouped = rows - rows % QUAD_ROWS;
            let mut weights = vec![0u8; rows * cols];
            for (i, w) in weights.iter_mut().enumerate() {
                *w = match i % 17 {
                    0 => 0x00, // -128 in offset binary inside the quads
                    1 => 0xFF,
                    _ => rng.next() as u8,
                };
            }
            let mut row_scales = Vec::new();
            for r in 0..rows {
                let shift = [30, 33, 34, 40, 47, 55, 62, 63, 20][r % 9];
                let mant = 0x4000_0000 | (rng.next() & 0x3FFF_FFFF);
                let m = Multiplier { mant, shift };
                row_scales.extend_from_slice(&m.to_le_bytes());
            }
            let emb = Matrix {
                rows,
                cols,
                quant: Quant::Int8,
                group_size: 0,
                layout: WeightLayout::RowQuads,
                row_scales: &row_scales,
                group_scales: &[],
                weights: &weights,
            };
            for t in 0..rows {
                let (mut fast, mut plain) = (vec![7; cols], vec![-7; cols]);
                embedding_row(&mut fast, &emb, t);
                embedding_row_reference(&mut plain, &emb, t);
                assert_eq!(fast, plain, "{rows}x{cols} row {t} (grouped {grouped})");
            }
        }
    }

    #[test]
    fn attention_matches_float_attention_at_every_head_size() {
        let mut rng = Rng(0x005E_ED0F_A77E_0770);
        let mut uniform = move |range: f64| rng.signed(1 << 20) as f64 / (1 << 20) as f64 * range;
        for (hs, n_kv, kv_per_q) in [
            (4, 2, 2),
            (8, 4, 2),
            (12, 1, 1),
            (16, 1, 1),
            (24, 1, 4),
            (32, 2, 1),
            (96, 1, 2),
            (256, 1, 1),
        ] {
            let (kv_dim, n_heads, n) = (n_kv * hs, n_kv * kv_per_q, 100);
            let q: Vec<f64> = (0..n_heads * hs).map(|_| uniform(3.0)).collect();
            let k: Vec<f64> = (0..n * kv_dim).map(|_| uniform(3.0)).collect();
            let v: Vec<f64> = (0..n * kv_dim).map(|_| uniform(1.0)).collect();
            let q16 = |x: &f64| (x * 65536.0).round() as i32;
            let (mut keys, mut values) = (vec![0i16; n * kv_dim], vec![0i16; n * kv_dim]);
            let (mut key_steps, mut value_steps) =
                (vec![0; n * STEP_WORDS], vec![0; n * STEP_WORDS]);
            for t in 0..n {
                let at = t * kv_dim..(t + 1) * kv_dim;
                let kq: Vec<i32> = k[at.clone()].iter().map(q16).collect();
                let vq: Vec<i32> = v[at.clone()].iter().map(q16).collect();
                let max = quantize_kv(&kq, &mut keys[at.clone()]);
                put_step(&mut key_steps, t, act_step(max));
                let max = quantize_kv(&vq, &mut values[at]);
                put_step(&mut value_steps, t, act_step(max).shifted(8));
            }
            let cache = KvView {
                keys: &keys,
                values: &values,
                key_steps: &key_steps,
                value_steps: &value_steps,
                bounds: StepBounds::scan(&key_steps, &value_steps, key_steps.len() / STEP_WORDS),
            };
            let shape = AttentionShape {
                head_size: hs,
                kv_dim,
                kv_per_q,
            };
            let qi: Vec<i32> = q.iter().map(q16).collect();
            let (mut out, mut att, mut xq) = (vec![0; n_heads * hs], vec![0; n], vec![0; hs]);
            attention(
                &mut out,
                &qi,
                &cache,
                &mut att,
                &mut xq,
                shape,
                score_scale(hs),
            );
            let (mut worst, mut largest) = (0f64, 0f64);
            for h in 0..n_heads {
                let kv = (h / kv_per_q) * hs;
                let scores: Vec<f64> = (0..n)
                    .map(|t| {
                        let key = &k[t * kv_dim + kv..][..hs];
                        q[h * hs..][..hs]
                            .iter()
                            .zip(key)
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            / (hs as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for i in 0..hs {
                    let want: f64 = (0..n).map(|t| e[t] / z * v[t * kv_dim + kv + i]).sum();
                    let got = out[h * hs + i] as f64 / 65536.0;
                    worst = worst.max((got - want).abs());
                    largest = largest.max(want.abs());
                }
            }
            assert!(
                worst <= 0.01 * largest,
                "head size {hs}: worst error {worst} of largest output {largest}"
            );
        }
    }

    /// The fast attention equals the reference bit for bit: head sizes with and without an
    /// unrolled kernel, grouped and plain heads, 1 to 200 positions, small and huge value steps
    /// (the wide sums), tied scores, zero queries.
    #[test]
    fn attention_equals_its_reference() {
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        let mut cases = 0;
        for round in 0..600 {
            let hs = [1, 2, 3, 4, 5, 6, 8, 16][round % 8];
            let (n_kv, kv_per_q) = [(1, 1), (2, 1), (4, 2), (1, 4), (3, 3)][(round / 8) % 5];
            let n_heads = n_kv * kv_per_q;
            let kv_dim = n_kv * hs;
            let n = [1, 2, 7, 64, 200][(round / 40) % 5];
            let value_max = [1 << 12, 1 << 16, 1 << 20, 1 << 26, i32::MAX][round % 5];
            let mut keys = vec![0i16; n * kv_dim];
            let mut values = vec![0i16; n * kv_dim];
            let tied = round % 11 == 0;
            for (k, v) in keys.iter_mut().zip(values.iter_mut()) {
                *k = if tied { 2047 } else { rng.signed(2047) as i16 };
                *v = rng.signed(2047) as i16;
            }
            let mut key_steps = vec![0i32; n * STEP_WORDS];
            let mut value_steps = vec![0i32; n * STEP_WORDS];
            for slot in 0..n {
                let key_max = (rng.next() >> (rng.next() % 20)) as i32 & i32::MAX;
                let value = (rng.next() as i32 & i32::MAX) % value_max;
                // The engine's power-of-two steps in half the rounds, any multiplier in the rest.
                let step: fn(i32) -> Multiplier = if round % 2 == 0 {
                    act_step
                } else {
                    |m| step_q16(m, KV_LEVELS)
                };
                put_step(&mut key_steps, slot, step(key_max));
                put_step(&mut value_steps, slot, step(value).shifted(8));
            }
            let q_range = [0, 1 << 10, 4 << 16, 1 << 30][(round / 3) % 4];
            let q: Vec<i32> = (0..n_heads * hs).map(|_| rng.signed(q_range)).collect();
            let cache = KvView {
                keys: &keys,
                values: &values,
                key_steps: &key_steps,
                value_steps: &value_steps,
                bounds: StepBounds::scan(&key_steps, &value_steps, key_steps.len() / STEP_WORDS),
            };
            let shape = AttentionShape {
                head_size: hs,
                kv_dim,
                kv_per_q,
            };
            let score_scale = score_scale(hs);
            let (mut out, mut want) = (vec![0; n_heads * hs], vec![0; n_heads * hs]);
            let (mut att, mut att_ref) = (vec![0; n], vec![0; n]);
            let (mut xq, mut xq_ref) = (vec![0; hs], vec![0; hs]);
            attention(&mut out, &q, &cache, &mut att, &mut xq, shape, score_scale);
            attention_reference(
                &mut want,
                &q,
                &cache,
                &mut att_ref,
                &mut xq_ref,
                shape,
                score_scale,
            );
            assert_eq!(
                out, want,
                "round {round}: hs {hs} heads {n_heads}/{n_kv} n {n}"
            );
            cases += out.len();
        }
        assert!(cases > 10_000, "{cases}");
    }

    /// The fused weighing and value sums (the model of weigh_pv4_thumb) equal weigh_exps then
    /// the plain sums on the positions it takes, and stop at the first value step whose shift
    /// is outside its range: exps at 0, 1, 2¹⁶ − 1, 2¹⁶ and beyond (as u32), reciprocals 1 to
    /// 2¹⁶, steps from step_q16 of tiny to huge maxima and raw shifts 16, 17, 47, 48.
    #[test]
    fn weigh_pv4_equals_weigh_exps_and_the_value_sums() {
        let mut rng = Rng(0x0F00_5EED_CAFE_D00D);
        let mut stops = 0;
        for round in 0..3000 {
            let n = 1 + (rng.next() % 70) as usize;
            let kv_dim = [4, 6, 8, 12][round % 4];
            let kv_offset = [0, ((kv_dim - 4) / 2) & !1, kv_dim - 4][(round / 4) % 3];
            let inv = match round % 5 {
                0 => 1 << 16,
                1 => 1,
                _ => 1 + rng.next() % (1 << 16),
            };
            let exps: Vec<i32> = (0..n)
                .map(|_| match rng.next() % 8 {
                    0 => 0,
                    1 => 1 << 16,
                    2 => (1 << 16) - 1,
                    3 => (1 << 16) + 1 + (rng.next() >> 8) as i32,
                    4 => -1 - (rng.next() >> 4) as i32,
                    _ => (rng.next() % (1 << 16)) as i32,
                })
                .collect();
            let mut steps = vec![0i32; n * STEP_WORDS];
            for t in 0..n {
                let max = (rng.next() >> (rng.next() % 31)) as i32 & i32::MAX;
                put_step(&mut steps, t, step_q16(max, KV_LEVELS).shifted(8));
                if round % 7 == 0 && rng.next().is_multiple_of(16) {
                    steps[STEP_WORDS * t + 1] = [16, 17, 47, 48][(rng.next() % 4) as usize];
                }
            }
            let values: Vec<i16> = (0..n * kv_dim)
                .map(|_| rng.signed(KV_LEVELS) as i16)
                .collect();
            let mut att = exps.clone();
            let (done, total, acc) = weigh_pv4(&mut att, &steps, &values, kv_offset, kv_dim, inv);
            let stop = (0..n)
                .find(|&t| !(17..=47).contains(&steps[STEP_WORDS * t + 1]))
                .unwrap_or(n);
            assert_eq!(done, stop, "round {round}");
            stops += (done < n) as usize;
            let mut want = exps.clone();
            let want_total = weigh_exps(&mut want[..done], inv, &steps);
            assert_eq!(att[..done], want[..done], "round {round}");
            assert_eq!(att[done..], exps[done..], "round {round}");
            assert_eq!(total, want_total, "round {round}");
            for (i, &a) in acc.iter().enumerate() {
                let sum = (0..done).fold(0i32, |s, t| {
                    s.wrapping_add(want[t].wrapping_mul(values[kv_offset + t * kv_dim + i] as i32))
                });
                assert_eq!(a, sum, "round {round} column {i}");
            }
        }
        assert!(stops > 100, "{stops}");
    }

    #[test]
    fn step_bounds_kept_per_position_equal_a_scan_of_the_cache() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/golden/story-1k.smb"
        );
        let bytes = std::fs::read(path).expect("the golden model");
        let model = Model::parse(&bytes).expect("parses");
        let c = model.config();
        let ctx = c.seq_len;
        let mut arena = vec![0u8; Model::arena_bytes(&c, ctx)];
        let mut session = Session::new(&model, ctx, &mut arena).expect("session");
        let mut checked = 0;
        // Two stories (the second after a reset, over the first's cached steps), each checked
        // at every position.
        for (story, len) in [(0u32, ctx), (1, ctx / 3)] {
            session.reset();
            for i in 0..len as u32 {
                let token = (i * 7 + story * 3) % c.vocab_size as u32;
                session.feed_token(token).expect("feeds");
                let n = session.pos();
                for l in 0..c.n_layers {
                    let steps = l * ctx * STEP_WORDS..(l * ctx + n) * STEP_WORDS;
                    let s = &session.state;
                    let want =
                        StepBounds::scan(&s.key_steps[steps.clone()], &s.value_steps[steps], n);
                    let kept = StepBounds::from_words(&s.bounds[l * BOUNDS_WORDS..]);
                    assert_eq!(kept, want, "story {story} position {n} layer {l}");
                    checked += want.keys_pow2 as usize;
                }
            }
        }
        assert!(checked > ctx, "{checked}");
    }

    #[test]
    fn pv4_lean_equals_weigh_exps_and_the_value_sums() {
        let mut rng = Rng(0x1EA7_F00D_5EED_0004);
        let (mut taken, mut refused) = (0, 0);
        for round in 0..3000 {
            let n = 1 + (rng.next() % 70) as usize;
            let kv_dim = [4, 8, 12][round % 3];
            let kv_offset = [0, kv_dim - 4][(round / 3) % 2];
            // Exps as exp_and_reciprocal_from leaves them (0..=2¹⁶, the max's 2¹⁶ among them),
            // and their reciprocal.
            let mut exps: Vec<i32> = (0..n)
                .map(|_| match rng.next() % 4 {
                    0 => 0,
                    1 => 1 << 16,
                    _ => (rng.next() % (1 << 16)) as i32,
                })
                .collect();
            exps[(rng.next() as usize) % n] = 1 << 16;
            let sum = exps.iter().map(|&e| e as u32).sum::<u32>();
            let inv = div_rem_u32(u32::MAX, sum).0 + sum.is_power_of_two() as u32;
            // Value steps as the engine writes them (act_step(max).shifted(8)), values up to
            // 2¹⁸ in Q16.16 mostly, up to 2²⁴ (past the lean bound) in every fourth round, and
            // steps of other mantissas at times.
            let mut steps = vec![0i32; n * STEP_WORDS];
            for t in 0..n {
                let top = if round % 4 == 0 { 8 } else { 14 };
                let max = (rng.next() >> (top + rng.next() % (26 - top))) as i32;
                put_step(&mut steps, t, act_step(max).shifted(8));
                if round % 11 == 0 && rng.next().is_multiple_of(8) {
                    put_step(&mut steps, t, step_q16(max.max(1), KV_LEVELS).shifted(8));
                }
            }
            let values: Vec<i16> = (0..n * kv_dim)
                .map(|_| rng.signed(KV_LEVELS) as i16)
                .collect();
            let mut want = exps.clone();
            let total = weigh_exps(&mut want, inv, &steps);
            let lean = values_lean(&StepBounds::scan(&steps, &steps, n), n);
            let plain = steps
                .chunks_exact(STEP_WORDS)
                .all(|s| s[0] == 1 << 30 && (17..=47).contains(&s[1]));
            // The lean pass takes only the engine's steps, and then no total passes the bound.
            assert!(
                !lean || (plain && total <= PV_I32_MAX_WEIGHT),
                "round {round}"
            );
            if !lean || inv >= 1 << 16 {
                refused += 1;
                continue;
            }
            taken += 1;
            let att = exps.clone();
            let acc = pv4_lean(&att, &steps, &values, kv_offset, kv_dim, inv);
            for (i, &a) in acc.iter().enumerate() {
                let sum = (0..n).fold(0i32, |s, t| {
                    s.wrapping_add(want[t].wrapping_mul(values[kv_offset + t * kv_dim + i] as i32))
                });
                assert_eq!(a, sum, "round {round} column {i}");
            }
        }
        assert!(taken > 1000 && refused > 200, "{taken} {refused}");
    }

    #[test]
    fn softmax_u32_equals_softmax() {
        let mut rng = Rng(0xDEAD_BEEF_0BAD_F00D);
        for round in 0..2000 {
            let n = 1 + (rng.next() % 300) as usize;
            let range = [0, 1 << 8, 1 << 16, 10 << 16, i32::MAX][round % 5];
            let scores: Vec<i32> = (0..n).map(|_| rng.signed(range)).collect();
            let (mut a, mut b) = (scores.clone(), scores);
            softmax_u32(&mut a);
            softmax(&mut b);
            assert_eq!(a, b, "round {round}");
        }
    }
}
