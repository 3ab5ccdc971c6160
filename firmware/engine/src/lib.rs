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
//! // Parse in place (XIP flash); checks magic, version, length, CRC-32 and every offset.
//! let model: Model<'static> = Model::parse(MODEL_BYTES)?;          // Err(FormatError)
//! let ctx = model.config().seq_len;                                 // or less, to save RAM
//! let needed = Model::arena_bytes(&model.config(), ctx);           // activations + KV cache
//! let arena: &'static mut [u8] = /* ≥ needed bytes, any alignment */;
//! let mut session = Session::new(&model, ctx, arena)?;             // Err(EngineError::ArenaTooSmall{..})
//!
//! let mut prompt_ids = [0u32; 64];
//! let n = model.encode(b"Once upon a time", &mut prompt_ids)?;     // same ids as the host tokenizer
//! let mut logits: &[i32] = session.prefill(&prompt_ids[..n])?;    // Q16.16, vocab_size of them
//! let mut sampler = Sampler::new(SamplerConfig {
//!     temperature_q8: 205, top_k: 40, top_p_q16: 58_982, seed: 42, // 0.8, 40, 0.9
//! });                                                               // SamplerConfig::GREEDY for argmax
//! loop {
//!     let next: u32 = sampler.sample(logits);
//!     uart.write(model.token_bytes(next));                          // raw UTF-8 piece (may split a char for BPE)
//!     if next == model.eot_id() || session.is_full() { break }      // or session.reset() and re-prefill
//!     logits = session.feed(next)?;                                 // one decode step
//! }
//! ```
//!
//! Everything else public is for the host and tests. Costs: `parse` reads the whole file once
//! (CRC, ≈10 cycles/byte); `feed` is one forward pass (matrix-vector products dominate: one `i32`
//! MAC per weight); `encode` is linear in the prompt for char models, ~quadratic per word for BPE.
//! Budgets for a board: [`Budget`], [`budget::Board`].
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
