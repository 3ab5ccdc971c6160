//! The story loop: prompt → prefill → (sample, feed) until the story ends. The firmware runs it
//! on the board, and the host (`starmind generate`, `starmind bench --host` and `--check`) runs
//! the very same function, so the host's tokens prove the device's bit for bit.
//!
//! ```ignore
//! let config = run_config.story();                    // or a StoryConfig of the host's own
//! let mut ids = [0u32; 201];                          // the prompt's ids (StoryConfig::ids_len)
//! let outcome = story::tell(&model, &mut session, prompt, &config, &mut ids, &mut listener)?;
//! ```
//!
//! The [`Listener`] sees each step as it happens: a bench reads its cycle counter in
//! [`Listener::prefill_starts`], [`Listener::prefilled`], [`Listener::sample_starts`] and
//! [`Listener::token`], so prefill, sampling and the forward pass can be timed apart.

use core::fmt;
use core::ops::ControlFlow;

use crate::format::Model;
use crate::forward::{EngineError, Session};
use crate::sampler::{Sampler, SamplerConfig};

/// How the token sequence begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// `<|endoftext|>`, then the prompt: a story starts after a story separator, as in the
    /// training text (the device).
    AfterEndOfText,
    /// The prompt alone; `<|endoftext|>` when the prompt is empty (`starmind generate`).
    PromptOnly,
}

/// What happens when the KV cache is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// The story ends (the device). A prompt longer than the context cannot be prefilled.
    Stop,
    /// The newest half of the context is kept and prefilled again, and the story goes on
    /// (`starmind generate`). A prompt longer than the context keeps its last tokens.
    Slide,
}

/// One story's settings, in engine units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoryConfig {
    /// The sampler and its seed.
    pub sampler: SamplerConfig,
    /// Most tokens to generate after the prompt.
    pub max_tokens: usize,
    /// End the story when the model draws `<|endoftext|>` (that token is not passed on); else
    /// it is a token like any other.
    pub stop_at_end_of_text: bool,
    pub start: Start,
    pub when_full: WhenFull,
}

impl StoryConfig {
    /// The length `ids` must have for [`tell`] with a prompt of `prompt_bytes` bytes and a
    /// context of `ctx` tokens: every prompt byte is at most one token, plus `<|endoftext|>`;
    /// sliding keeps the whole context and the next token.
    pub fn ids_len(&self, prompt_bytes: usize, ctx: usize) -> usize {
        let prompt = prompt_bytes + 1;
        match self.when_full {
            WhenFull::Stop => prompt,
            WhenFull::Slide => prompt.max(ctx + 1),
        }
    }
}

/// Sees a story as it is told. Every method but [`Listener::token`] does nothing by default.
pub trait Listener {
    /// The prompt's ids are ready; its prefill starts now.
    fn prefill_starts(&mut self) {}
    /// The prompt's `prompt_tokens` ids have been fed.
    fn prefilled(&mut self, _prompt_tokens: usize) {}
    /// A token is about to be sampled.
    fn sample_starts(&mut self) {}
    /// Token `id` was drawn (it is fed next). `Break` ends the story here.
    fn token(&mut self, id: u32) -> ControlFlow<()>;
}

/// Why a story ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// `max_tokens` were generated.
    TokenLimit,
    /// The model drew `<|endoftext|>` (with `stop_at_end_of_text`).
    EndOfText,
    /// The KV cache is full (with [`WhenFull::Stop`]).
    ContextFull,
    /// The listener returned `Break`.
    Stopped,
}

/// What a told story amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Ids fed by the first prefill (`<|endoftext|>` included).
    pub prompt_tokens: usize,
    /// Tokens passed to [`Listener::token`].
    pub generated: usize,
    pub end: End,
}

/// Why a story could not be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoryError {
    /// Encoding the prompt (its ids do not fit `ids`).
    Prompt(EngineError),
    /// Prefilling the prompt (or, sliding, the kept context).
    Prefill(EngineError),
    /// Feeding a generated token.
    Feed(EngineError),
}

impl StoryError {
    /// The engine's error underneath.
    pub fn engine_error(&self) -> EngineError {
        match *self {
            StoryError::Prompt(e) | StoryError::Prefill(e) | StoryError::Feed(e) => e,
        }
    }
}

impl fmt::Display for StoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoryError::Prompt(e) => write!(f, "prompt: {e}"),
            StoryError::Prefill(e) => write!(f, "prefill: {e}"),
            StoryError::Feed(e) => write!(f, "feed: {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for StoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoryError::Prompt(e) | StoryError::Prefill(e) | StoryError::Feed(e) => Some(e),
        }
    }
}

/// Tells one story from `prompt` in `session` (reset first): the prompt's ids (see [`Start`])
/// are prefilled at once, then each step samples a token from the logits, hands it to
/// `listener` and feeds it back, until [`End`]. `ids` is scratch for the prompt's ids (and, when
/// sliding, the context): [`StoryConfig::ids_len`] long.
pub fn tell<L: Listener>(
    model: &Model,
    session: &mut Session,
    prompt: &[u8],
    config: &StoryConfig,
    ids: &mut [u32],
    listener: &mut L,
) -> Result<Outcome, StoryError> {
    let eot = model.eot_id();
    let too_small = EngineError::BufferTooSmall;
    let mut len = match config.start {
        Start::AfterEndOfText => {
            let (first, rest) = ids.split_first_mut().ok_or(StoryError::Prompt(too_small))?;
            *first = eot;
            1 + model.encode(prompt, rest).map_err(StoryError::Prompt)?
        }
        Start::PromptOnly => match model.encode(prompt, ids).map_err(StoryError::Prompt)? {
            0 => {
                *ids.first_mut().ok_or(StoryError::Prompt(too_small))? = eot;
                1
            }
            n => n,
        },
    };
    let ctx = session.context_len();
    if config.when_full == WhenFull::Slide && len > ctx {
        ids.copy_within(len - ctx..len, 0);
        len = ctx;
    }

    session.reset();
    listener.prefill_starts();
    session
        .prefill_tokens(&ids[..len])
        .map_err(StoryError::Prefill)?;
    listener.prefilled(len);
    let prompt_tokens = len;

    let mut sampler = Sampler::new(config.sampler);
    let mut generated = 0;
    let end = loop {
        if generated == config.max_tokens {
            break End::TokenLimit;
        }
        listener.sample_starts();
        // The logits of the last token fed (a large vocabulary streams them chunk by chunk).
        let next = session.sample(&mut sampler);
        if config.stop_at_end_of_text && next == eot {
            break End::EndOfText;
        }
        generated += 1;
        if listener.token(next).is_break() {
            break End::Stopped;
        }
        if !session.is_full() {
            session.feed_token(next).map_err(StoryError::Feed)?;
            if config.when_full == WhenFull::Slide {
                // `ids[..len]` is the context fed so far.
                *ids.get_mut(len).ok_or(StoryError::Feed(too_small))? = next;
                len += 1;
            }
            continue;
        }
        match config.when_full {
            WhenFull::Stop => break End::ContextFull,
            WhenFull::Slide => {
                *ids.get_mut(len).ok_or(StoryError::Feed(too_small))? = next;
                let keep = (ctx / 2).max(1);
                ids.copy_within(len + 1 - keep..len + 1, 0);
                len = keep;
                session.reset();
                session
                    .prefill_tokens(&ids[..len])
                    .map_err(StoryError::Prefill)?;
            }
        }
    };
    Ok(Outcome {
        prompt_tokens,
        generated,
        end,
    })
}
