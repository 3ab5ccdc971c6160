//! starmind engine: the model file format and the integer transformer that runs it, bit-exactly
//! the same on the host and on the RP2040 (Cortex-M0+, no FPU).
//!
//! `#![no_std]`, no allocation, no floating point (outside the `std` feature's writer), no panics
//! on bad bytes: every offset in a model file is bounds-checked once in [`Model::parse`].
//!
//! # The API the firmware uses (stable)
//!
//! ```ignore
//! use starmind_engine::{Model, Session, Sampler, SamplerConfig};
//!
//! let model = Model::parse(MODEL_BYTES)?;                 // &'static [u8] in XIP flash; checks CRC
//! let ctx = model.config().seq_len;                        // or less, to save RAM
//! let needed = Model::arena_bytes(&model.config(), ctx);   // KV cache + activations
//! static mut ARENA: [u8; 150_000] = [0; 150_000];          // any alignment
//! let mut session = Session::new(&model, ctx, arena)?;     // arena: &mut [u8], len >= needed
//!
//! let mut prompt_ids = [0u32; 64];
//! let n = model.encode(b"Once upon a time", &mut prompt_ids)?;
//! let mut logits = session.prefill(&prompt_ids[..n])?;    // &[i32] logits in Q16.16
//! let mut sampler = Sampler::new(SamplerConfig { temperature_q8: 205, top_k: 40, top_p_q16: 58982, seed: 42 });
//! loop {
//!     let next = sampler.sample(logits);                   // u32 token id
//!     uart.write(model.token_bytes(next));                 // &[u8], UTF-8 pieces
//!     if next == model.eot_id() || session.is_full() { break }
//!     logits = session.feed(next)?;
//! }
//! ```
//!
//! Modules, in data-flow order: [`format`] (the file as types; reader, and writer under `std`),
//! [`tokenizer`] (prompt bytes ↔ ids), [`forward`] (the integer forward pass, top to bottom),
//! [`kernels`] (matvec, fixed-point exp/sqrt/sigmoid), [`sampler`], [`budget`] (flash/RAM).
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod budget;
pub mod format;
pub mod forward;
pub mod kernels;
pub mod sampler;
pub mod tokenizer;

#[cfg(feature = "std")]
pub mod quantize;
#[cfg(feature = "std")]
pub mod reference;

pub use budget::Budget;
pub use format::{Config, FfnKind, FormatError, Model, Quant, TokenizerKind};
pub use forward::{EngineError, Session};
pub use sampler::{Sampler, SamplerConfig};
