//! starmind engine: the model file format and the integer transformer that runs it, bit-exactly
//! the same on the host and on the RP2040 (Cortex-M0+, no FPU).
//!
//! `#![no_std]`, no allocation, no floating point (outside the `std` feature's writer), no panics
//! on bad bytes: every offset in a model file is bounds-checked once in [`Model::parse`].
//!
//! # The API the firmware uses (stable)
//!
//! ```ignore
//! use starmind_engine::{story, Model, RunConfig, Session};
//!
//! // Parse in place (XIP flash); checks magic, version, length, CRC-32 and every offset.
//! let model: Model<'static> = Model::parse(MODEL_BYTES)?;          // Err(FormatError)
//! let ctx = model.config().seq_len;                                 // or less, to save RAM
//! let needed = Model::arena_bytes(&model.config(), ctx);           // activations + KV cache
//! let arena: &'static mut [u8] = /* ≥ needed bytes, any alignment */;
//! let mut session = Session::new(&model, ctx, arena)?;             // Err(EngineError::ArenaTooSmall{..})
//! session.set_stream(Some(&mut dma));  // optional: a `WeightStream` copies flash weights behind the arithmetic
//!
//! // What to do, as `starmind flash` wrote it: mode, prompt, token count, sampler settings.
//! let run = RunConfig::decode(CONFIG_BLOCK)?;                       // Err(ConfigError)
//! let mut ids = [0u32; 201];                                        // the prompt's ids
//! // <|endoftext|> + prompt prefilled, then sample → listener.token(id) → feed, until the end.
//! story::tell(&model, &mut session, run.prompt(), &run.story(), &mut ids, &mut uart)?;
//! ```
//!
//! One step of the story loop is `Session::sample(&mut sampler)` (integer top-k/top-p on the
//! Q16.16 logits), then `Session::feed_token(id)` (one forward pass); `Model::token_bytes(id)` is
//! the token's raw UTF-8 piece (it may split a character for BPE). A vocabulary above
//! [`forward::STREAMED_VOCAB`] (Tiny-LLM's 32000 on a 16 MB board) never holds all its logits:
//! `Session::sample` runs the classifier [`forward::LOGITS_CHUNK_ROWS`] rows at a time from flash
//! and the sampler consumes each chunk ([`sampler::Stream`]), drawing the same token as from the
//! whole vector.
//!
//! Everything else public is for the host and tests. Costs: `parse` reads the whole file once
//! (CRC, ≈10 cycles/byte); `feed` is one forward pass (matrix-vector products dominate: one `i32`
//! MAC per weight); `encode` is linear in the prompt for char models, ~quadratic per word for BPE.
//! Budgets for a board: [`Budget`], [`budget::Board`].
//!
//! Modules, in data-flow order: [`format`] (the file as types; reader, and writer under `std`),
//! [`checksum`] (its CRC-32), [`tokenizer`] (prompt bytes ↔ ids), [`forward`] (the integer
//! forward pass, top to bottom), [`kernels`] (matvec, fixed-point exp/sqrt/sigmoid),
//! [`stream`] (weights copied into RAM behind the arithmetic, for a model in flash),
//! [`sampler`], [`story`] (the prompt → tokens loop the firmware and the host share),
//! [`run_config`] (the config block that tells the firmware which story to tell), [`budget`]
//! (flash/RAM). Host only (`std`): [`quantize`] (float weights → sections), [`reference`] (a
//! float forward pass for tests).
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod budget;
pub mod checksum;
pub mod cores;
pub mod format;
pub mod forward;
pub mod kernel_bench;
pub mod kernels;
pub mod run_config;
pub mod sampler;
pub mod story;
pub mod stream;
pub mod tokenizer;

#[cfg(feature = "std")]
pub mod quantize;
#[cfg(feature = "std")]
pub mod reference;

pub use budget::Budget;
pub use cores::{Cores, OneCore};
pub use format::{Config, FfnKind, FormatError, Model, Quant, TokenizerKind};
pub use forward::{EngineError, Session};
pub use run_config::RunConfig;
pub use sampler::{Sampler, SamplerConfig};
pub use story::StoryConfig;
pub use stream::{StreamPlan, WeightStream};
