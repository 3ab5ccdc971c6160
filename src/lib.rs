//! starmind: story text → tiny transformer → integer model file → Raspberry Pi Pico.
//!
//! The library is the product; the `starmind` binary (`src/main.rs`) only parses the command
//! line and calls `<command>::run`. Every subcommand is a module with an `Args` struct and a
//! `run` function, and what a command does is built from functions a test can call.
//!
//! Data flows one way, each arrow one function:
//!
//! ```text
//! text ──data::load_corpus──▶ Corpus
//!      ──tokenizer::Tokenizer::train──▶ Tokenizer
//!      ──train::run──▶ checkpoint directory (checkpoint::load reads it back)
//! peer checkpoints ──import::{llama2c, hf}──▶ checkpoint directory
//!      ──export::export──▶ model file bytes (starmind_engine::format)
//!      ──starmind_engine::story::tell──▶ tokens (host: generate, eval, bench --host;
//!                                                device: firmware/rp2040)
//!      ──bench::run──▶ report
//! ```
//!
//! Modules by row, as docs/ARCHITECTURE.md draws them; a module imports only from the rows
//! below its own (no cycles, nothing upward):
//! - studies: [`sweep`] (train, export, eval and bench every config of a seed study, and its
//!   report);
//! - checkpoints in and out: [`train`], [`import`] (llama2.c and Hugging Face models),
//!   [`export`], [`upgrade`] (an older model file as the current version), [`generate`] (a model file with the engine, a checkpoint with the float model);
//! - measuring: [`eval`] (bits per byte of a checkpoint or a model file; train and export use it);
//! - the float model: [`checkpoint`] (directories on disk), [`sample`] (float generation),
//!   [`model`] (candle), [`tokenizer`];
//! - device commands: [`bench`](mod@bench), [`chat`] (the board's interactive mode), [`flash`]
//!   and [`uf2`];
//! - foundations: [`configs`] (the `configs` command), [`config`] (named configs; the one place
//!   model shapes are derived and checked), [`sampling`] (sampler flags in engine units),
//!   [`model_file`] (reading `.smb` files), [`console`] (the firmware's output as the host reads
//!   it), [`emulator`] (the rp2040js driver), [`data`] (corpus), [`fsio`] (atomic writes),
//!   [`process`] (threads, allocator), [`budget`] (memory and file sizes checked before
//!   allocating), [`hub`] (Hugging Face hub files with timeouts), [`plot`] (the reports' SVG
//!   charts).

pub mod bench;
pub mod budget;
pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod configs;
pub mod console;
pub mod data;
pub mod emulator;
pub mod eval;
pub mod export;
pub mod flash;
pub mod fsio;
pub mod generate;
pub mod hub;
pub mod import;
pub mod model;
pub mod model_file;
pub mod plot;
pub mod process;
pub mod sample;
pub mod sampling;
pub mod sweep;
pub mod tokenizer;
pub mod train;
pub mod uf2;
pub mod upgrade;
