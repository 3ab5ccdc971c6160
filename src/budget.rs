//! Budgets before allocations: what a command will need, checked against what this computer has,
//! before any large buffer is allocated, so that a shape or a batch too large for the machine is
//! a refusal with the numbers instead of an allocator abort or the kernel's out-of-memory killer.
//!
//! - [`train_memory`] / [`eval_memory`]: the host memory a config × batch needs (weights,
//!   gradients, AdamW moments, activations kept for the backward pass), one function each so that
//!   the estimate has one place to be refined (the per-token terms below);
//! - [`check_memory`]: against [`available_memory_bytes`] (`MemAvailable`, and `ulimit -v`);
//! - [`read_bounded`]: a file read only when it is a regular file of plausible size (a 3 GB
//!   sparse file or `/dev/zero` is never read whole).
//!
//! The board's flash and RAM budget of a model file is `starmind_engine::budget` (export checks
//! it).

use crate::config::{Ffn, ModelConfig};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;

/// Environment variable that replaces the measured available memory (bytes): for tests, and
/// for users who want the check against a smaller share of a shared machine.
pub const MEMORY_ENV: &str = "STARMIND_MEMORY_BYTES";

/// Bytes per f32.
const F32: u64 = 4;

/// What a run is estimated to need, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Trainable parameters.
    pub params: u64,
    /// Weights, gradients and optimizer state.
    pub parameter_bytes: u64,
    /// Activations alive at the peak (the autograd graph of one step, or one scoring pass).
    pub activation_bytes: u64,
}

impl MemoryEstimate {
    /// Everything together.
    pub fn total_bytes(&self) -> u64 {
        self.parameter_bytes.saturating_add(self.activation_bytes)
    }
}

/// `a · b` in `u64`, saturating.
fn m(a: usize, b: usize) -> u64 {
    (a as u64).saturating_mul(b as u64)
}

/// Parameters of a shape, without overflow (saturating) for any field values.
pub fn param_count(c: &ModelConfig) -> u64 {
    let head = c
        .head_size
        .unwrap_or(c.dim.checked_div(c.n_heads).unwrap_or(0));
    let q_dim = m(head, c.n_heads);
    let kv_dim = m(head, c.n_kv_heads);
    let attention = m(2, c.dim)
        .saturating_mul(q_dim)
        .saturating_add(m(2, c.dim).saturating_mul(kv_dim));
    let ffn_matrices = match c.ffn {
        Ffn::Plain => 2,
        Ffn::Swiglu => 3,
    };
    let ffn = m(c.dim, c.hidden_dim).saturating_mul(ffn_matrices);
    let embeddings = m(c.vocab_size, c.dim).saturating_mul(if c.tied_embeddings { 1 } else { 2 });
    let norms = m(2, c.n_layers)
        .saturating_add(1)
        .saturating_mul(c.dim as u64);
    (c.n_layers as u64)
        .saturating_mul(attention.saturating_add(ffn))
        .saturating_add(embeddings)
        .saturating_add(norms)
}

/// Tokens one scoring pass of the float model covers at most ([`crate::eval::float`] cuts a
/// batch of windows into passes of this size, so evaluation memory does not grow with the
/// validation set).
pub const SCORE_PASS_TOKENS: usize = 8192;

/// f32 values a training step keeps per token with the fused ops ([`crate::model`]): per layer
/// ~12 of width `dim` (block input, the two norms' outputs, q, k, v, attention output, its
/// projection, the residual sums, the FFN output), 3 of `hidden_dim` (w1 and w3 outputs, the
/// SwiGLU product) and one log-sum-exp per head; plus the backward's transients of one layer
/// (~20 of `dim`, 6 of `hidden_dim`: gradients and the fused ops' flat copies) and 4 rows of
/// logits (logits, their gradient, the matmul's copies). No `[t, t]` score rows: the fused
/// attention keeps none. stories260k at batch 32 × 512: ~0.71 GB by this count, 0.66 GB peak
/// RSS measured for the whole run with its evaluations (train --json, 2026-12-02); the old
/// composed attention needed ~22.7 GB and was killed at 18.7–24 GB.
fn train_floats_per_token(c: &ModelConfig) -> u64 {
    let per_layer = m(12, c.dim)
        .saturating_add(m(3, c.hidden_dim))
        .saturating_add(c.n_heads as u64);
    let transient = m(20, c.dim).saturating_add(m(6, c.hidden_dim));
    (c.n_layers as u64)
        .saturating_mul(per_layer)
        .saturating_add(transient)
        .saturating_add(m(4, c.vocab_size))
}

/// Scoring (no autograd graph): ~8 values of width `dim` and ~4 of `hidden_dim` alive at once,
/// plus the logits and their log-softmax.
fn eval_floats_per_token(c: &ModelConfig) -> u64 {
    m(8, c.dim)
        .saturating_add(m(4, c.hidden_dim))
        .saturating_add(m(3, c.vocab_size))
}

/// Memory one training step of `batch` sequences of `seq_len` tokens needs: f32 weights, the
/// gradients of the shards (two copies) and their sum, AdamW's two moments and the resume
/// state's copy (6 × params in all), plus the activations of [`train_floats_per_token`].
pub fn train_memory(c: &ModelConfig, batch: usize, seq_len: usize) -> MemoryEstimate {
    let params = param_count(c);
    let tokens = (batch as u64).saturating_mul(seq_len as u64);
    MemoryEstimate {
        params,
        parameter_bytes: params.saturating_mul(6 * F32),
        activation_bytes: tokens
            .saturating_mul(train_floats_per_token(c))
            .saturating_mul(F32),
    }
}

/// Memory scoring needs when `tokens` tokens are in forward passes at once (the float scorer
/// runs at most [`SCORE_PASS_TOKENS`] per pass on each thread): weights plus the
/// activations of [`eval_floats_per_token`].
pub fn eval_memory(c: &ModelConfig, tokens: usize) -> MemoryEstimate {
    let params = param_count(c);
    MemoryEstimate {
        params,
        parameter_bytes: params.saturating_mul(F32),
        activation_bytes: (tokens as u64)
            .saturating_mul(eval_floats_per_token(c))
            .saturating_mul(F32),
    }
}

/// Tokens the float scorer has in flight when it scores `windows` windows of `seq_len` tokens:
/// at most [`SCORE_PASS_TOKENS`] per pass on each of the cores.
pub fn eval_tokens_in_flight(windows: usize, seq_len: usize) -> usize {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_pass = SCORE_PASS_TOKENS.max(seq_len);
    windows
        .saturating_mul(seq_len)
        .min(threads.saturating_mul(per_pass))
}

/// The memory this process may still allocate: `$STARMIND_MEMORY_BYTES` when set, else the
/// smaller of the kernel's `MemAvailable` and the address-space limit (`ulimit -v`); `None` when
/// neither can be read (then nothing is refused).
pub fn available_memory_bytes() -> Option<u64> {
    if let Some(v) = std::env::var(MEMORY_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(v);
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let available = meminfo.as_deref().and_then(mem_available_bytes);
    match (available, address_space_left()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn mem_available_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Address space left under `ulimit -v`, if one is set.
fn address_space_left() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only into the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0
            || limit.rlim_cur == libc::RLIM_INFINITY
        {
            return None;
        }
        let used_kib: u64 = std::fs::read_to_string("/proc/self/status")
            .ok()?
            .lines()
            .find(|l| l.starts_with("VmSize:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on 64-bit Linux, u32 elsewhere
        let limit_bytes = limit.rlim_cur as u64;
        Some(limit_bytes.saturating_sub(used_kib.saturating_mul(1024)))
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// A size for messages: GB, MB or kB with one decimal.
pub fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000_000 => format!("{:.1} GB", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b => format!("{:.1} kB", b as f64 / 1e3),
    }
}

/// Refuses `what` when `estimate` exceeds the available memory: the message gives both numbers,
/// the parts of the estimate, and `suggestion`.
pub fn check_memory(what: &str, estimate: &MemoryEstimate, suggestion: &str) -> Result<()> {
    let Some(available) = available_memory_bytes() else {
        return Ok(());
    };
    if estimate.total_bytes() > available {
        bail!(
            "{what} needs about {} of memory ({} parameters: {} for weights, gradients and optimizer; {} of activations) \
             but {} is available: {suggestion}",
            human_bytes(estimate.total_bytes()),
            estimate.params,
            human_bytes(estimate.parameter_bytes),
            human_bytes(estimate.activation_bytes),
            human_bytes(available)
        );
    }
    Ok(())
}

/// Reads `path` whole only if it is a regular file of at most `max_bytes` bytes (a device node,
/// a pipe, or a file too large for what it claims to be is refused before any of it is read).
pub fn read_bounded(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{} is not a regular file (a directory, device or pipe)",
            path.display()
        );
    }
    if meta.len() > max_bytes {
        bail!(
            "{} is {} bytes, more than the {max_bytes} bytes such a file can be: refusing to read it",
            path.display(),
            meta.len()
        );
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > max_bytes {
        bail!(
            "{} grew past {max_bytes} bytes while being read",
            path.display()
        );
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenizerKind;

    fn stories260k() -> ModelConfig {
        ModelConfig {
            vocab_size: 512,
            dim: 64,
            hidden_dim: 172,
            n_layers: 5,
            n_heads: 8,
            n_kv_heads: 4,
            head_size: None,
            seq_len: 512,
            ffn: Ffn::Swiglu,
            tied_embeddings: true,
            tokenizer: TokenizerKind::Sentencepiece,
        }
    }

    #[test]
    fn param_count_matches_the_config_and_never_overflows() {
        let c = stories260k();
        assert_eq!(param_count(&c), c.param_count() as u64);
        let mut huge = c.clone();
        (huge.dim, huge.hidden_dim, huge.vocab_size) = (usize::MAX, usize::MAX, usize::MAX);
        assert_eq!(param_count(&huge), u64::MAX);
        assert_eq!(
            train_memory(&huge, usize::MAX, usize::MAX).total_bytes(),
            u64::MAX
        );
    }

    #[test]
    fn stories260k_at_32_by_512_is_near_what_the_trainer_measured() {
        // Measured: 0.66 GB peak RSS (commit 2e903f4); the estimate may be above, not far below.
        let e = train_memory(&stories260k(), 32, 512);
        let gb = e.total_bytes() as f64 / 1e9;
        assert!((0.66..3.0).contains(&gb), "{gb} GB");
        // Linear in the batch.
        let half = train_memory(&stories260k(), 16, 512).activation_bytes;
        assert_eq!(2 * half, e.activation_bytes);
    }

    #[test]
    fn meminfo_parsing() {
        let text = "MemTotal:       24000000 kB\nMemFree: 1 kB\nMemAvailable:   22000000 kB\n";
        assert_eq!(mem_available_bytes(text), Some(22_000_000 * 1024));
        assert_eq!(mem_available_bytes("MemTotal: 1 kB\n"), None);
    }
}
