//! Bits per byte (docs/ARCHITECTURE.md), the one quality figure: windows over a token stream, a
//! scorer's log-probabilities summed into bits per source byte, and the byte-level baselines.
//! The float checkpoint and the integer model file both go through [`bits_per_byte`] with their
//! own scorer ([`super::float`], [`super::engine`]), so their numbers are comparable.

use anyhow::{bail, Result};
use serde::Serialize;

/// Totals of [`bits_per_byte`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BpbReport {
    /// Mean nats per predicted token (without the unknown-character cost).
    pub val_loss: f64,
    /// Bits per byte of the predicted tokens' source text (with the unknown-character cost).
    pub val_bpb: f64,
    /// Predicted tokens.
    pub tokens: usize,
    /// Source bytes of the predicted tokens.
    pub bytes: u64,
    /// Predicted tokens that were `<unk>`.
    pub unk_tokens: usize,
}

/// One window's scores from a model: the natural-log probabilities of tokens 1..n given the
/// tokens before them, and (where asked for) its most likely next token at positions 0..n−1.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowScore {
    pub log_probs: Vec<f64>,
    pub greedy: Vec<u32>,
}

/// A scorer as [`bits_per_byte`] calls it, as a trait object: a batch of windows in, per
/// window of n tokens the n − 1 natural-log probabilities of tokens 1..n out.
pub type Scorer<'a> = dyn FnMut(&[&[u32]]) -> Result<Vec<Vec<f64>>> + 'a;

/// Consecutive non-overlapping windows of `seq_len` tokens over `n` tokens; the last, shorter
/// window is kept if it has at least 2 tokens.
pub fn windows(n: usize, seq_len: usize) -> Vec<std::ops::Range<usize>> {
    (0..n)
        .step_by(seq_len.max(1))
        .map(|start| start..(start + seq_len).min(n))
        .filter(|w| w.len() >= 2)
        .collect()
}

/// Bits per byte of a token stream (docs/ARCHITECTURE.md). `score` gets a batch of up to `batch`
/// windows and returns, per window of n tokens, the n − 1 natural-log probabilities of tokens
/// 1..n given the tokens before them in the same window. A target `<unk>` (`unk_id`) costs 8 extra
/// bits per byte of the character it stands for.
pub fn bits_per_byte<F>(
    ids: &[u32],
    source_bytes: &[u32],
    unk_id: Option<u32>,
    seq_len: usize,
    batch: usize,
    mut score: F,
) -> Result<BpbReport>
where
    F: FnMut(&[&[u32]]) -> Result<Vec<Vec<f64>>>,
{
    assert_eq!(ids.len(), source_bytes.len(), "one source length per token");
    let (mut nats, mut unk_bits, mut bytes, mut tokens, mut unk_tokens) =
        (0f64, 0f64, 0u64, 0usize, 0usize);
    let all = windows(ids.len(), seq_len);
    for group in all.chunks(batch.max(1)) {
        let slices: Vec<&[u32]> = group.iter().map(|w| &ids[w.clone()]).collect();
        let log_probs = score(&slices)?;
        if log_probs.len() != group.len() {
            bail!(
                "scorer returned {} windows for {}",
                log_probs.len(),
                group.len()
            );
        }
        for (window, lp) in group.iter().zip(&log_probs) {
            if lp.len() != window.len() - 1 {
                bail!(
                    "scorer returned {} log-probs for a window of {} tokens",
                    lp.len(),
                    window.len()
                );
            }
            for (offset, &log_p) in lp.iter().enumerate() {
                let target = window.start + offset + 1;
                nats -= log_p;
                bytes += source_bytes[target] as u64;
                tokens += 1;
                if Some(ids[target]) == unk_id {
                    unk_bits += 8.0 * source_bytes[target] as f64;
                    unk_tokens += 1;
                }
            }
        }
    }
    if tokens == 0 {
        bail!("nothing to evaluate: fewer than 2 validation tokens");
    }
    Ok(BpbReport {
        val_loss: nats / tokens as f64,
        val_bpb: (nats / std::f64::consts::LN_2 + unk_bits) / bytes as f64,
        tokens,
        bytes,
        unk_tokens,
    })
}

/// Byte-level baselines with add-one smoothing over 256 values, fitted on `train`, scored on
/// `valid`: (unigram bpb, bigram bpb). The bigram model scores the first byte with the unigram.
pub fn byte_baselines(train: &[u8], valid: &[u8]) -> (f64, f64) {
    let mut unigram = vec![0u64; 256];
    let mut bigram = vec![0u64; 256 * 256];
    for &b in train {
        unigram[b as usize] += 1;
    }
    for pair in train.windows(2) {
        bigram[pair[0] as usize * 256 + pair[1] as usize] += 1;
    }
    let mut row_totals = vec![0u64; 256];
    for (prev, total) in row_totals.iter_mut().enumerate() {
        *total = bigram[prev * 256..(prev + 1) * 256].iter().sum();
    }
    let unigram_bits =
        |b: u8| -(((unigram[b as usize] + 1) as f64) / ((train.len() + 256) as f64)).log2();
    let uni: f64 = valid.iter().map(|&b| unigram_bits(b)).sum();
    let mut bi = valid.first().map_or(0.0, |&b| unigram_bits(b));
    for pair in valid.windows(2) {
        let (a, b) = (pair[0] as usize, pair[1] as usize);
        bi -= ((bigram[a * 256 + b] + 1) as f64 / (row_totals[a] + 256) as f64).log2();
    }
    let n = valid.len().max(1) as f64;
    (uni / n, bi / n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn windows_follow_the_contract() {
        assert_eq!(windows(10, 4), vec![0..4, 4..8, 8..10]);
        assert_eq!(windows(9, 4), vec![0..4, 4..8]); // a 1-token tail predicts nothing
        assert_eq!(windows(1, 4), Vec::<std::ops::Range<usize>>::new());
    }

    #[test]
    fn uniform_scorer_gives_log2_vocab_per_token_and_unk_costs_bytes() {
        // 4-token vocabulary, uniform predictions: 2 bits per token.
        let ids = [2u32, 3, 1, 2, 0, 3];
        let source_bytes = [1u32, 1, 2, 1, 1, 1];
        let uniform = |ws: &[&[u32]]| -> Result<Vec<Vec<f64>>> {
            Ok(ws
                .iter()
                .map(|w| vec![(0.25f64).ln(); w.len() - 1])
                .collect())
        };
        let r = bits_per_byte(&ids, &source_bytes, Some(1), 3, 2, uniform).unwrap();
        // windows [0..3], [3..6]: targets 1, 2 and 4, 5 → ids 3, 1, 0, 3; bytes 1 + 2 + 1 + 1.
        assert_eq!(r.tokens, 4);
        assert_eq!(r.bytes, 5);
        assert_eq!(r.unk_tokens, 1);
        assert!((r.val_loss - 4f64.ln()).abs() < 1e-12);
        assert!((r.val_bpb - (4.0 * 2.0 + 16.0) / 5.0).abs() < 1e-12);
    }

    #[test]
    fn baselines_are_close_to_the_measured_ones() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/tinystories");
        let train = std::fs::read(dir.join("train.txt")).unwrap();
        let valid = std::fs::read(dir.join("valid.txt")).unwrap();
        let (uni, bi) = byte_baselines(&train, &valid);
        // FACTS.md: 4.42 and 3.32 bits per byte (we get 4.4226 and 3.3322).
        assert!((uni - 4.42).abs() < 0.01, "unigram {uni}");
        assert!((bi - 3.32).abs() < 0.02, "bigram {bi}");
    }
}
