//! Scoring windows with the float (candle) model: the checkpoint side of [`super::bpb`].

use super::bpb::WindowScore;
use crate::model::Transformer;
use anyhow::Result;
use candle_core::{Device, Tensor, D};

/// A batched scorer for [`super::bpb::bits_per_byte`] over the float model.
pub fn scorer(model: &Transformer) -> impl FnMut(&[&[u32]]) -> Result<Vec<Vec<f64>>> + '_ {
    move |windows: &[&[u32]]| {
        Ok(score(model, windows, false)?
            .into_iter()
            .map(|s| s.log_probs)
            .collect())
    }
}

/// Scores `windows`, split over the available cores; each group of equal-length windows is one
/// forward pass. Each window's numbers do not depend on how the windows are grouped. `greedy`
/// also records the argmax of the logits at every position.
pub fn score(model: &Transformer, windows: &[&[u32]], greedy: bool) -> Result<Vec<WindowScore>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || windows.len() < 2 {
        return score_on_this_thread(model, windows, greedy);
    }
    let per_thread = windows.len().div_ceil(threads);
    let parts: Vec<Result<Vec<WindowScore>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = windows
            .chunks(per_thread)
            .map(|part| scope.spawn(move || score_on_this_thread(model, part, greedy)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("scoring thread panicked"))
            .collect()
    });
    let mut out = Vec::with_capacity(windows.len());
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

fn score_on_this_thread(
    model: &Transformer,
    windows: &[&[u32]],
    greedy: bool,
) -> Result<Vec<WindowScore>> {
    score_in_chunks(model, windows, greedy, crate::budget::SCORE_PASS_TOKENS)
}

/// Scores `windows` in forward passes of equal-length windows, each of at most `chunk_tokens`
/// tokens (at least one window).
pub fn score_in_chunks(
    model: &Transformer,
    windows: &[&[u32]],
    greedy: bool,
    chunk_tokens: usize,
) -> Result<Vec<WindowScore>> {
    let mut out = Vec::with_capacity(windows.len());
    let mut i = 0;
    while i < windows.len() {
        let len = windows[i].len();
        let per_pass = (chunk_tokens / len.max(1)).max(1);
        let run = windows[i..]
            .iter()
            .take(per_pass)
            .take_while(|w| w.len() == len)
            .count();
        let flat: Vec<u32> = windows[i..i + run]
            .iter()
            .flat_map(|w| w.iter().copied())
            .collect();
        let ids = Tensor::from_vec(flat, (run, len), &Device::Cpu)?;
        let logits = model.forward(&ids)?;
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let targets = ids.narrow(1, 1, len - 1)?.unsqueeze(2)?;
        let picked = log_probs
            .narrow(1, 0, len - 1)?
            .contiguous()?
            .gather(&targets.contiguous()?, 2)?
            .squeeze(2)?;
        let argmax = match greedy {
            true => logits.narrow(1, 0, len - 1)?.argmax(D::Minus1)?.to_vec2()?,
            false => vec![Vec::new(); run],
        };
        for (row, greedy) in picked.to_vec2::<f32>()?.into_iter().zip(argmax) {
            out.push(WindowScore {
                log_probs: row.into_iter().map(f64::from).collect(),
                greedy,
            });
        }
        i += run;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Ffn, ModelConfig, TokenizerKind};
    use crate::data::Rng;

    #[test]
    fn chunked_scoring_equals_one_pass() {
        let c = ModelConfig {
            vocab_size: 13,
            dim: 8,
            hidden_dim: 12,
            n_layers: 2,
            n_heads: 2,
            n_kv_heads: 1,
            head_size: None,
            seq_len: 16,
            ffn: Ffn::Swiglu,
            tied_embeddings: true,
            tokenizer: TokenizerKind::Char,
        };
        let varmap = crate::model::init_varmap(&c, &mut Rng::new(3), &Device::Cpu).unwrap();
        let model = crate::model::from_varmap(&varmap, &c, &Device::Cpu).unwrap();
        let ids: Vec<u32> = (0..150u32).map(|i| (i * 5 + i / 7) % 13).collect();
        let windows: Vec<&[u32]> = ids.chunks(16).filter(|w| w.len() >= 2).collect();
        let whole = score_in_chunks(&model, &windows, true, usize::MAX).unwrap();
        for chunk_tokens in [1, 16, 40] {
            let chunked = score_in_chunks(&model, &windows, true, chunk_tokens).unwrap();
            assert_eq!(chunked.len(), whole.len());
            for (a, b) in chunked.iter().zip(&whole) {
                assert_eq!(a.greedy, b.greedy);
                for (x, y) in a.log_probs.iter().zip(&b.log_probs) {
                    assert!((x - y).abs() < 1e-5, "{chunk_tokens}: {x} vs {y}");
                }
            }
        }
    }
}
