//! A float checkpoint against its model file on the same text (`starmind export --compare`):
//! both scored by [`super::bpb::bits_per_byte`] over the same windows, one with
//! [`super::float`], one with [`super::engine`].

use super::bpb::{bits_per_byte, Scorer};
use super::{engine, float};
use crate::checkpoint::Checkpoint;
use crate::tokenizer::EncodedText;
use anyhow::Result;
use starmind_engine::{Model, Session};

/// Float checkpoint versus its model file on the same validation text.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompareReport {
    pub float_bpb: f64,
    pub int_bpb: f64,
    /// `(int − float) / float`.
    pub bpb_relative_change: f64,
    /// Fraction of predicted positions where both models' most likely next token is the same.
    pub greedy_agreement: f64,
    pub positions: usize,
}

/// Scores `valid` with the float checkpoint (candle) and the model file (engine) window by window
/// (docs/ARCHITECTURE.md windows, the host tokenizer for both) and compares bpb and greedy
/// next-token choices.
pub fn compare(checkpoint: &Checkpoint, file: &[u8], valid: &str) -> Result<CompareReport> {
    if !checkpoint.tokenizer.can_encode() {
        anyhow::bail!(
            "the checkpoint has no tokenizer (it runs on token ids), so it cannot score text: compare on ids instead"
        );
    }
    let encoded = checkpoint.tokenizer.encode_with_source_bytes(valid);
    compare_encoded(checkpoint, file, &encoded, checkpoint.tokenizer.unk_id())
}

/// Float checkpoint versus its model file on a sequence of token ids (for a model without a
/// tokenizer): bits per token instead of per byte.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IdsCompareReport {
    pub float_bits_per_token: f64,
    pub int_bits_per_token: f64,
    /// `(int − float) / float`; for a fixed text this is also the relative change in bpb.
    pub relative_change: f64,
    /// Fraction of predicted positions where both models' most likely next token is the same.
    pub greedy_agreement: f64,
    pub positions: usize,
}

/// [`compare`] on the token ids `ids`, scored in the same windows; each token counts as one
/// byte, so the bpb figures are bits per token.
pub fn compare_ids(checkpoint: &Checkpoint, file: &[u8], ids: &[u32]) -> Result<IdsCompareReport> {
    let vocab = checkpoint.config.model.vocab_size;
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
        anyhow::bail!("token id {bad} is outside the model's {vocab} ids");
    }
    let encoded = EncodedText {
        ids: ids.to_vec(),
        source_bytes: vec![1; ids.len()],
    };
    let r = compare_encoded(checkpoint, file, &encoded, None)?;
    Ok(IdsCompareReport {
        float_bits_per_token: r.float_bpb,
        int_bits_per_token: r.int_bpb,
        relative_change: r.bpb_relative_change,
        greedy_agreement: r.greedy_agreement,
        positions: r.positions,
    })
}

/// Both models over the windows of `encoded` (`unk`: the id whose target costs its bytes).
fn compare_encoded(
    checkpoint: &Checkpoint,
    file: &[u8],
    encoded: &EncodedText,
    unk: Option<u32>,
) -> Result<CompareReport> {
    let model = Model::parse(file)?;
    let config = model.config();
    let seq_len = config.seq_len;
    // The same windows, batches of 64, for both models.
    let bpb = |score: &mut Scorer| {
        bits_per_byte(&encoded.ids, &encoded.source_bytes, unk, seq_len, 64, score)
    };
    let mut float_greedy: Vec<u32> = Vec::new();
    let float = bpb(&mut |windows| {
        let scores = float::score(&checkpoint.model, windows, true)?;
        Ok(scores
            .into_iter()
            .map(|s| {
                float_greedy.extend(s.greedy);
                s.log_probs
            })
            .collect())
    })?;
    let mut arena = vec![0u8; Model::arena_bytes(&config, seq_len)];
    let mut session = Session::new(&model, seq_len, &mut arena)?;
    let mut int_greedy: Vec<u32> = Vec::new();
    let int = bpb(&mut |windows| {
        let mut out = Vec::with_capacity(windows.len());
        for w in windows {
            let score = engine::score_window(&mut session, w)?;
            int_greedy.extend(score.greedy);
            out.push(score.log_probs);
        }
        Ok(out)
    })?;
    let agree = float_greedy
        .iter()
        .zip(&int_greedy)
        .filter(|(a, b)| a == b)
        .count();
    Ok(CompareReport {
        float_bpb: float.val_bpb,
        int_bpb: int.val_bpb,
        bpb_relative_change: (int.val_bpb - float.val_bpb) / float.val_bpb,
        greedy_agreement: agree as f64 / int_greedy.len().max(1) as f64,
        positions: int_greedy.len(),
    })
}
