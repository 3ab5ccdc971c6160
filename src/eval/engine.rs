//! Scoring windows with the integer engine: the model file side of [`super::bpb`]. The logits
//! are the device's (Q16.16 integers), turned into log-probabilities in `f64` here; the
//! tokenisation is the engine's own (the device's).

use super::bpb::WindowScore;
use anyhow::{Context, Result};
use starmind_engine::format::TokenizerKind;
use starmind_engine::tokenizer::pretoken_len;
use starmind_engine::{Model, Session};

/// Token ids of `text` by the engine's tokenizer, and per token the bytes of source text it
/// stands for (`<|endoftext|>` counts 1, `<unk>` its character's UTF-8 length).
pub fn encode_with_source_bytes(model: &Model, text: &str) -> Result<(Vec<u32>, Vec<u32>)> {
    if model.config().tokenizer == TokenizerKind::None {
        anyhow::bail!(
            "the model file has no tokenizer (it runs on token ids), so it cannot score text"
        );
    }
    let (mut ids, mut source) = (Vec::new(), Vec::new());
    let mut buf = vec![0u32; 4096];
    for (i, segment) in text.split("<|endoftext|>").enumerate() {
        if i > 0 {
            ids.push(model.eot_id());
            source.push(1);
        }
        let mut rest = segment;
        while !rest.is_empty() {
            // One piece at a time: a character (char) or a GPT-2 pre-token (BPE).
            let len = match model.config().tokenizer {
                TokenizerKind::Bpe => pretoken_len(rest),
                _ => rest.chars().next().map_or(1, char::len_utf8),
            };
            let (piece, tail) = rest.split_at(len);
            if buf.len() < piece.len() {
                buf.resize(piece.len(), 0);
            }
            let n = model
                .encode(piece.as_bytes(), &mut buf)
                .context("encoding the validation text")?;
            for &id in &buf[..n] {
                ids.push(id);
                source.push(match model.config().tokenizer {
                    TokenizerKind::Bpe => model.token_bytes(id).len() as u32,
                    _ => len as u32,
                });
            }
            rest = tail;
        }
    }
    Ok((ids, source))
}

/// Scores one window in `session` (reset first): the log-probability of each next token from
/// the engine's integer logits, and the engine's greedy choice at each position.
pub fn score_window(session: &mut Session, window: &[u32]) -> Result<WindowScore> {
    session.reset();
    let predicted = window.len().saturating_sub(1);
    let mut score = WindowScore {
        log_probs: Vec::with_capacity(predicted),
        greedy: Vec::with_capacity(predicted),
    };
    // A streamed vocabulary (Tiny-LLM's 32000) has no logits vector in the session: the host
    // asks for every chunk into its own buffer.
    let mut streamed = Vec::new();
    for (t, &token) in window.iter().enumerate().take(predicted) {
        let logits: &[i32] = if session.streams_logits() {
            session.feed_token(token).context("engine forward pass")?;
            streamed.resize(session.vocab_size(), 0);
            session.logits_into(&mut streamed);
            &streamed
        } else {
            session.feed(token).context("engine forward pass")?
        };
        let target = window[t + 1] as usize;
        score.log_probs.push(log_softmax_at(logits, target));
        score
            .greedy
            .push(starmind_engine::kernels::argmax(logits).0 as u32);
    }
    Ok(score)
}

/// `log softmax(logits / 2¹⁶)[target]` in f64.
pub fn log_softmax_at(logits_q16: &[i32], target: usize) -> f64 {
    let max = logits_q16.iter().copied().max().unwrap_or(0) as f64 / 65536.0;
    let sum: f64 = logits_q16
        .iter()
        .map(|&l| (l as f64 / 65536.0 - max).exp())
        .sum();
    logits_q16
        .get(target)
        .map_or(f64::NEG_INFINITY, |&l| l as f64 / 65536.0 - max - sum.ln())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenizerKind as Kind;
    use crate::tokenizer::Tokenizer;
    use starmind_engine::format::{write_model, ModelSections, Quant};
    use std::path::Path;

    /// A weightless model file that carries only a tokenizer (enough for `Model::encode`).
    fn file_for(tok: &Tokenizer) -> Vec<u8> {
        let vocab = tok.vocab_size();
        let mut config = crate::config::ModelConfig {
            vocab_size: vocab,
            dim: 2,
            hidden_dim: 2,
            n_layers: 1,
            n_heads: 1,
            n_kv_heads: 1,
            seq_len: 2,
            ffn: crate::config::Ffn::Plain,
            tied_embeddings: true,
            tokenizer: tok.kind(),
            head_size: None,
        }
        .engine_config(tok.eot_id(), tok.unk_id());
        config.quant = Quant::Int8;
        let token_bytes: Vec<Vec<u8>> = (0..vocab as u32).map(|i| tok.token_bytes(i)).collect();
        let byte_tokens = if tok.kind() == Kind::Bpe {
            (0..=255u8)
                .map(|b| {
                    token_bytes
                        .iter()
                        .position(|t| t.as_slice() == [b])
                        .unwrap() as u32
                })
                .collect()
        } else {
            vec![]
        };
        let matrix = |rows: usize, cols: usize| {
            starmind_engine::quantize::quantize_int8(&vec![0.0; rows * cols], rows, cols)
        };
        let norm = starmind_engine::quantize::norm_q16(&[1.0, 1.0]);
        let layer = [
            norm.clone(),
            matrix(2, 2),
            matrix(2, 2),
            matrix(2, 2),
            matrix(2, 2),
            norm.clone(),
            matrix(2, 2),
            matrix(2, 2),
            vec![],
        ];
        write_model(&ModelSections {
            config,
            token_bytes,
            merges: tok.merges(),
            byte_tokens,
            rope_q30: starmind_engine::quantize::rope_table(2, 2),
            token_embedding: matrix(vocab, 2),
            layers: vec![layer],
            final_norm: norm,
            output: vec![],
        })
        .unwrap()
    }

    fn valid_text(max: usize) -> String {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/tinystories/valid.txt");
        let text = std::fs::read_to_string(path).unwrap();
        crate::data::truncate_bytes(&text, max).to_string()
    }

    #[test]
    fn engine_tokenizer_matches_host_tokenizer_on_validation_text() {
        let text = valid_text(60_000);
        for (kind, vocab) in [(Kind::Char, 64), (Kind::Bpe, 512)] {
            let tok = Tokenizer::train(kind, vocab, &text).unwrap();
            let file = file_for(&tok);
            let model = Model::parse(&file).unwrap();
            let sample = &text[..crate::data::truncate_bytes(&text, 20_000).len()];
            let want = tok.encode_with_source_bytes(sample);
            let (ids, source) = encode_with_source_bytes(&model, sample).unwrap();
            assert_eq!(ids, want.ids, "{kind:?} ids");
            assert_eq!(source, want.source_bytes, "{kind:?} source bytes");
            // The device entry point on a prompt gives the same ids too.
            let prompt = &sample[..crate::data::truncate_bytes(sample, 300).len()];
            let mut out = vec![0u32; 400];
            let n = model.encode(prompt.as_bytes(), &mut out).unwrap();
            assert_eq!(&out[..n], tok.encode(prompt).as_slice(), "{kind:?} prompt");
        }
    }
}
