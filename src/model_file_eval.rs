//! `starmind eval <file.smb>`: bits per byte of a model file computed with the integer engine,
//! exactly as the device computes the logits (Q16.16 integers), turned into log-probabilities in
//! `f64` on the host. Tokenisation is the engine's own (the device's), bpb and baselines are
//! `crate::eval`'s, so the JSON keys and the procedure equal the checkpoint path's.

use crate::data::Corpus;
use crate::eval::{self, bits_per_byte, EvalReport};
use anyhow::{Context, Result};
use starmind_engine::format::TokenizerKind;
use starmind_engine::tokenizer::pretoken_len;
use starmind_engine::{Model, Session};
use std::path::Path;

/// Reads and parses a model file, with the file name in every error.
pub fn read_model_file(path: &Path) -> Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading model file {}", path.display()))?;
    Model::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("reading model file {}: {e}", path.display()))?;
    Ok(bytes)
}

/// Token ids of `text` by the engine's tokenizer, and per token the bytes of source text it
/// stands for (`<|endoftext|>` counts 1, `<unk>` its character's UTF-8 length).
pub fn encode_with_source_bytes(model: &Model, text: &str) -> Result<(Vec<u32>, Vec<u32>)> {
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
                TokenizerKind::Char => rest.chars().next().map_or(1, char::len_utf8),
                TokenizerKind::Bpe => pretoken_len(rest),
            };
            let (piece, tail) = rest.split_at(len);
            if buf.len() < piece.len() {
                buf.resize(piece.len(), 0);
            }
            let n = model
                .encode(piece.as_bytes(), &mut buf)
                .map_err(|e| anyhow::anyhow!("encoding: {e}"))?;
            for &id in &buf[..n] {
                ids.push(id);
                source.push(match model.config().tokenizer {
                    TokenizerKind::Char => len as u32,
                    TokenizerKind::Bpe => model.token_bytes(id).len() as u32,
                });
            }
            rest = tail;
        }
    }
    Ok((ids, source))
}

/// Natural-log probabilities of tokens 1..n of `window` given the tokens before them, from the
/// engine's integer logits; also returns the engine's greedy next-token choice at each position.
pub fn score_window(session: &mut Session, window: &[u32]) -> Result<(Vec<f64>, Vec<u32>)> {
    session.reset();
    let mut log_probs = Vec::with_capacity(window.len().saturating_sub(1));
    let mut greedy = Vec::with_capacity(window.len().saturating_sub(1));
    for (t, &token) in window
        .iter()
        .enumerate()
        .take(window.len().saturating_sub(1))
    {
        let logits = session
            .feed(token)
            .map_err(|e| anyhow::anyhow!("engine: {e}"))?;
        let target = window[t + 1] as usize;
        log_probs.push(log_softmax_at(logits, target));
        greedy.push(starmind_engine::kernels::argmax(logits).0 as u32);
    }
    Ok((log_probs, greedy))
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

/// Bits per byte and baselines of a model file on the corpus's validation split.
pub fn evaluate_file(
    bytes: &[u8],
    corpus: &Corpus,
    max_bytes: Option<usize>,
) -> Result<EvalReport> {
    let model = Model::parse(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = model.config();
    let valid = eval::validation_text(corpus, max_bytes);
    let (ids, source_bytes) = encode_with_source_bytes(&model, valid)?;
    let unk = (config.unk_id != starmind_engine::format::NO_TOKEN).then_some(config.unk_id);
    let mut arena = vec![0u8; Model::arena_bytes(&config, config.seq_len)];
    let mut session =
        Session::new(&model, config.seq_len, &mut arena).map_err(|e| anyhow::anyhow!("{e}"))?;
    let bpb = bits_per_byte(&ids, &source_bytes, unk, config.seq_len, 64, |windows| {
        windows
            .iter()
            .map(|w| Ok(score_window(&mut session, w)?.0))
            .collect()
    })?;
    Ok(EvalReport::new(&bpb, corpus, valid))
}

/// `starmind eval <file.smb>` (called from `crate::eval::run`).
pub fn eval(args: &eval::Args, corpus: &Corpus) -> Result<()> {
    let bytes = read_model_file(&args.checkpoint)?;
    let report = evaluate_file(&bytes, corpus, args.max_bytes)?;
    eval::print_report(&report, args.json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenizerKind as Kind;
    use crate::tokenizer::Tokenizer;
    use starmind_engine::format::{write_model, ModelSections, Quant};

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
pub fn compare(
    checkpoint: &crate::checkpoint::Checkpoint,
    file: &[u8],
    valid: &str,
) -> Result<CompareReport> {
    use candle_core::{Device, Tensor, D};
    let model = Model::parse(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = model.config();
    let encoded = checkpoint.tokenizer.encode_with_source_bytes(valid);
    let unk = checkpoint.tokenizer.unk_id();
    let seq_len = config.seq_len;
    let mut float_greedy: Vec<u32> = Vec::new();
    let float = bits_per_byte(
        &encoded.ids,
        &encoded.source_bytes,
        unk,
        seq_len,
        64,
        |windows| {
            let mut out = Vec::with_capacity(windows.len());
            for w in windows {
                let ids = Tensor::from_vec(w.to_vec(), (1, w.len()), &Device::Cpu)?;
                let logits = checkpoint.model.forward(&ids)?.squeeze(0)?; // [t, vocab]
                let log_probs =
                    candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
                let argmax = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
                float_greedy.extend_from_slice(&argmax[..w.len() - 1]);
                out.push(
                    (0..w.len() - 1)
                        .map(|t| log_probs[t][w[t + 1] as usize] as f64)
                        .collect(),
                );
            }
            Ok(out)
        },
    )?;
    let mut arena = vec![0u8; Model::arena_bytes(&config, seq_len)];
    let mut session =
        Session::new(&model, seq_len, &mut arena).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut int_greedy: Vec<u32> = Vec::new();
    let int = bits_per_byte(
        &encoded.ids,
        &encoded.source_bytes,
        unk,
        seq_len,
        64,
        |windows| {
            let mut out = Vec::with_capacity(windows.len());
            for w in windows {
                let (lp, greedy) = score_window(&mut session, w)?;
                int_greedy.extend(greedy);
                out.push(lp);
            }
            Ok(out)
        },
    )?;
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
