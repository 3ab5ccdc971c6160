//! Float sampling from the candle model (the trainer's end-of-run sample; the integer engine
//! has its own sampler, `starmind_engine::sampler`).

use crate::data::Rng;
use crate::model::Transformer;
use crate::tokenizer::Tokenizer;
use anyhow::Result;
use candle_core::{Device, Tensor};

/// Samples up to `max_tokens` tokens after `prompt` at `temperature` (0 = greedy), stopping at
/// `<|endoftext|>`; the context slides once it exceeds seq_len. Returns prompt + continuation.
pub fn generate(
    model: &Transformer,
    tokenizer: &Tokenizer,
    prompt: &str,
    max_tokens: usize,
    temperature: f64,
    rng: &mut Rng,
) -> Result<String> {
    let seq_len = model.config().seq_len;
    let mut ids = tokenizer.encode(prompt);
    let prompt_len = ids.len();
    for _ in 0..max_tokens {
        let context = &ids[ids.len().saturating_sub(seq_len)..];
        if context.is_empty() {
            break;
        }
        let input = Tensor::new(context, &Device::Cpu)?.unsqueeze(0)?;
        let logits = model.forward(&input)?.squeeze(0)?.get(context.len() - 1)?;
        let logits: Vec<f32> = logits.to_vec1()?;
        // Only ids the tokenizer has (the model may have spare rows).
        let logits = &logits[..tokenizer.vocab_size()];
        let next = if temperature <= 0.0 {
            logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i)
        } else {
            let max = logits.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let weights: Vec<f64> = logits
                .iter()
                .map(|&l| ((l as f64 - max) / temperature).exp())
                .collect();
            let mut r = rng.uniform() * weights.iter().sum::<f64>();
            weights
                .iter()
                .position(|&w| {
                    r -= w;
                    r < 0.0
                })
                .unwrap_or(weights.len() - 1)
        } as u32;
        if next == tokenizer.eot_id() {
            break;
        }
        ids.push(next);
    }
    Ok(format!(
        "{}{}",
        prompt,
        tokenizer.decode(&ids[prompt_len..])
    ))
}
