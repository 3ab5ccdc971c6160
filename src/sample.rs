//! Float generation from the candle model: `starmind generate <checkpoint-dir>` and the
//! trainer's end-of-run sample. Tokens are drawn with the engine's sampler
//! (`starmind_engine::Sampler`) on the float logits rounded to Q16.16, so the sampler settings
//! mean the same for a checkpoint as for its model file; greedy (temperature 0) takes the first
//! largest float logit, as llama2.c's `run.c` does.

use crate::model::Transformer;
use anyhow::Result;
use candle_core::{Device, Tensor};
use starmind_engine::{Sampler, SamplerConfig};
use std::ops::ControlFlow;

/// One float story's settings (the float side of the engine's `story::StoryConfig`).
#[derive(Clone, Debug)]
pub struct FloatStory {
    pub sampler: SamplerConfig,
    /// Most tokens to generate after the prompt.
    pub max_tokens: usize,
    /// Ids that end the story when drawn (not passed on); empty: none does.
    pub stop_ids: Vec<u32>,
    /// Ids the model may draw: `0..vocab` (a model may have more rows than its tokenizer ids).
    pub vocab: usize,
}

/// Generates after the ids `prompt` (not empty) with `model` and returns the generated ids. No
/// KV cache: each step runs the whole context; when the context is full the newest half is kept,
/// as the engine's `story::tell` slides for `generate`. `emit` sees each id as it is drawn;
/// `Break` ends the story there.
pub fn generate(
    model: &Transformer,
    prompt: &[u32],
    story: &FloatStory,
    mut emit: impl FnMut(u32) -> Result<ControlFlow<()>>,
) -> Result<Vec<u32>> {
    let ctx = model.config().seq_len;
    let mut context = prompt[prompt.len().saturating_sub(ctx)..].to_vec();
    anyhow::ensure!(
        !context.is_empty(),
        "generation needs at least one prompt id"
    );
    let greedy = story.sampler.temperature_q8 == 0;
    let mut sampler = Sampler::new(story.sampler);
    let mut out = Vec::with_capacity(story.max_tokens);
    while out.len() < story.max_tokens {
        let input = Tensor::new(context.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let logits: Vec<f32> = model
            .forward(&input)?
            .squeeze(0)?
            .get(context.len() - 1)?
            .to_vec1()?;
        let logits = &logits[..story.vocab.min(logits.len())];
        let next = if greedy {
            first_argmax(logits)
        } else {
            sampler.sample(&logits_q16(logits))
        };
        if story.stop_ids.contains(&next) {
            break;
        }
        out.push(next);
        if emit(next)?.is_break() {
            break;
        }
        context.push(next);
        if context.len() > ctx {
            // The context was full: keep its newest half (the drawn token included).
            context.drain(..context.len() - (ctx / 2).max(1));
        }
    }
    Ok(out)
}

/// Float logits in Q16.16, the engine's logit unit (saturating).
fn logits_q16(logits: &[f32]) -> Vec<i32> {
    logits
        .iter()
        .map(|&l| {
            (l as f64 * 65536.0)
                .round()
                .clamp(i32::MIN as f64, i32::MAX as f64) as i32
        })
        .collect()
}

/// The index of the first largest value (NaN never wins).
fn first_argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(first_argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(first_argmax(&[f32::NAN, 0.5, 0.5]), 1);
        assert_eq!(first_argmax(&[-1.0]), 0);
    }

    fn tiny_model() -> Transformer {
        use crate::config::{Ffn, ModelConfig, TokenizerKind};
        let config = ModelConfig {
            vocab_size: 13,
            dim: 8,
            hidden_dim: 12,
            n_layers: 1,
            n_heads: 2,
            n_kv_heads: 1,
            head_size: None,
            seq_len: 6,
            ffn: Ffn::Swiglu,
            tied_embeddings: true,
            tokenizer: TokenizerKind::None,
        };
        let mut rng = crate::data::Rng::new(3);
        let varmap = crate::model::init_varmap(&config, &mut rng, &Device::Cpu).unwrap();
        crate::model::from_varmap(&varmap, &config, &Device::Cpu).unwrap()
    }

    #[test]
    fn a_story_ends_at_a_stop_id_and_slides_past_the_context() {
        let model = tiny_model();
        let mut story = FloatStory {
            sampler: crate::sampling::sampler_config(1.0, 0, 1.0, 9).unwrap(),
            max_tokens: 40,
            stop_ids: Vec::new(),
            vocab: 13,
        };
        let mut seen = Vec::new();
        let all = generate(&model, &[0], &story, |id| {
            seen.push(id);
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        // 40 tokens through a 6-token context: it slid, and every id was handed on as drawn.
        assert_eq!(all.len(), 40);
        assert_eq!(seen, all);
        // Stopping at the fifth id drawn ends the story right before its first occurrence.
        let stop = all[4];
        let first = all.iter().position(|&id| id == stop).unwrap();
        story.stop_ids = vec![stop];
        let stopped = generate(&model, &[0], &story, |_| Ok(ControlFlow::Continue(()))).unwrap();
        assert_eq!(stopped, all[..first]);
        // A listener's Break ends it too, after the id it was handed.
        story.stop_ids.clear();
        let broken = generate(&model, &[0], &story, |id| {
            Ok(if id == stop {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })
        .unwrap();
        assert_eq!(broken, all[..=first]);
        assert!(generate(&model, &[], &story, |_| Ok(ControlFlow::Continue(()))).is_err());
    }

    #[test]
    fn q16_rounds_and_saturates() {
        assert_eq!(
            logits_q16(&[1.5, -0.25, 1e9, -1e9]),
            vec![98_304, -16_384, i32::MAX, i32::MIN]
        );
    }
}
