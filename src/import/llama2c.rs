//! llama2.c checkpoints: `run.c`'s legacy version-0 `model.bin` and its `tokenizer.bin`.
//!
//! `model.bin` is a 7 × i32 header (`dim, hidden_dim, n_layers, n_heads, n_kv_heads,
//! vocab_size, seq_len`; a negative vocab_size means a separate classifier) and then f32
//! weights grouped by kind across layers, in `run.c`'s `memory_map_weights` order:
//! embedding, all attention norms, all wq, all wk, all wv, all wo, all ffn norms, all w1, all
//! w2, all w3, final norm, the two RoPE tables (`freq_cis_real`, `freq_cis_imag`:
//! `seq_len · head_size/2` each, skipped: RoPE is recomputed as `run.c` does), then the
//! classifier when it is separate. Matrices are `[out, in]` row-major and RoPE rotates
//! interleaved pairs, both as in starmind, so the tensors are copied, not transformed.
//!
//! Conventions carried into the checkpoint's config: id 1 (BOS) starts a story and ends it
//! (`run.c` stops when it samples 1), so `eot_id` is 1. Without a tokenizer the config's
//! tokenizer is `none` and the model runs on token ids.
//!
//! `tokenizer.bin`: an i32 `max_token_length`, then per token an f32 score, an i32 length and
//! that many bytes. `run.c` encodes text by looking every character up (unknown ones become
//! the byte tokens `byte + 3`), then repeatedly merging the adjacent pair whose concatenation is
//! the token with the highest score. [`tokenizer_json`] writes that as a Hugging Face BPE with
//! byte fallback: merges ranked by the merged token's score, a `▁` dummy prefix.

use super::{tensor, write_checkpoint, Imported};
use crate::config::{Ffn, ModelConfig, NamedConfig, TokenizerKind, TrainConfig};
use crate::tokenizer::{byte_fallback_token, Tokenizer};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Arguments of `starmind import llama2c`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The llama2.c checkpoint (run.c's legacy version-0 format, e.g. stories260K.bin).
    pub model: PathBuf,
    /// Its tokenizer.bin (without one the checkpoint runs on token ids).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// The checkpoint directory to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// `starmind import llama2c`.
pub fn run(args: Args) -> Result<()> {
    let imported = import(&args.model, args.tokenizer.as_deref())?;
    write_checkpoint(&args.out, &imported)
}

/// Bytes of the header: seven little-endian i32.
pub const HEADER_BYTES: usize = 28;
/// llama2.c's BOS: the first token of every story and, sampled again, its end.
pub const BOS_ID: u32 = 1;
/// llama2.c's EOS (`</s>`), unused by `run.c`'s generation.
const EOS_ID: u32 = 2;
/// `run.c` encodes a byte it has no character token for as id `byte + 3`.
const FIRST_BYTE_TOKEN: usize = 3;
/// What llama2.c's `export.py` writes first in its version ≥ 1 files ("ak42").
const EXPORT_MAGIC: u32 = 0x616b_3432;

/// The `model.bin` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub dim: usize,
    pub hidden_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab_size: usize,
    pub seq_len: usize,
    /// The classifier is the token embedding (vocab_size > 0 in the file).
    pub shared_classifier: bool,
}

impl Header {
    /// Parses and checks the header; the weights' size follows from it ([`Header::file_bytes`]).
    pub fn parse(bytes: &[u8]) -> Result<Header> {
        if bytes.len() < HEADER_BYTES {
            bail!(
                "{} bytes is shorter than the {HEADER_BYTES}-byte header",
                bytes.len()
            );
        }
        let word = |i: usize| i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
        if word(0) as u32 == EXPORT_MAGIC {
            bail!(
                "this is a llama2.c export of version {} (magic \"ak42\"); only run.c's legacy \
                 version-0 format is supported (llama2.c: `python export.py --version 0`)",
                word(1)
            );
        }
        let positive = |i: usize, name: &str| -> Result<usize> {
            match usize::try_from(word(i)) {
                Ok(v) if v > 0 => Ok(v),
                _ => bail!("header field {name} is {}, must be positive", word(i)),
            }
        };
        let vocab = word(5);
        let header = Header {
            dim: positive(0, "dim")?,
            hidden_dim: positive(1, "hidden_dim")?,
            n_layers: positive(2, "n_layers")?,
            n_heads: positive(3, "n_heads")?,
            n_kv_heads: positive(4, "n_kv_heads")?,
            vocab_size: vocab.unsigned_abs() as usize,
            seq_len: positive(6, "seq_len")?,
            shared_classifier: vocab > 0,
        };
        if header.vocab_size < 2 {
            bail!("header vocab_size is {vocab}: llama2.c models need at least ids 0 and 1 (BOS)");
        }
        // The shape rules every starmind model meets (divisibility, the engine's bounds).
        header.model_config(TokenizerKind::None).validate()?;
        if !header.head_size().is_multiple_of(2) {
            bail!(
                "head size {} is odd: run.c's RoPE then pairs elements across heads, which starmind does not do",
                header.head_size()
            );
        }
        Ok(header)
    }

    /// Elements per head (`dim / n_heads`, as run.c derives it).
    pub fn head_size(&self) -> usize {
        self.model_config(TokenizerKind::None).head_size()
    }

    fn kv_dim(&self) -> usize {
        self.model_config(TokenizerKind::None).kv_dim()
    }

    /// f32 values after the header, in file order: (what, how many); `None` on overflow.
    fn blocks(&self) -> Option<Vec<(&'static str, u64)>> {
        let (d, h, l, v, s) = (
            self.dim as u64,
            self.hidden_dim as u64,
            self.n_layers as u64,
            self.vocab_size as u64,
            self.seq_len as u64,
        );
        let kv = self.kv_dim() as u64;
        let half_head = self.head_size() as u64 / 2;
        let mut blocks = vec![
            ("token embedding", v.checked_mul(d)?),
            ("attention norms", l.checked_mul(d)?),
            ("wq", l.checked_mul(d)?.checked_mul(d)?),
            ("wk", l.checked_mul(d)?.checked_mul(kv)?),
            ("wv", l.checked_mul(d)?.checked_mul(kv)?),
            ("wo", l.checked_mul(d)?.checked_mul(d)?),
            ("ffn norms", l.checked_mul(d)?),
            ("w1", l.checked_mul(d)?.checked_mul(h)?),
            ("w2", l.checked_mul(h)?.checked_mul(d)?),
            ("w3", l.checked_mul(d)?.checked_mul(h)?),
            ("final norm", d),
            ("freq_cis_real", s.checked_mul(half_head)?),
            ("freq_cis_imag", s.checked_mul(half_head)?),
        ];
        if !self.shared_classifier {
            blocks.push(("classifier", v.checked_mul(d)?));
        }
        Some(blocks)
    }

    /// The exact size of a file with this header; `None` when it does not fit in a u64.
    pub fn file_bytes(&self) -> Option<u64> {
        let floats = self
            .blocks()?
            .iter()
            .try_fold(0u64, |sum, &(_, n)| sum.checked_add(n))?;
        floats.checked_mul(4)?.checked_add(HEADER_BYTES as u64)
    }

    /// The starmind architecture of this header.
    pub fn model_config(&self, tokenizer: TokenizerKind) -> ModelConfig {
        ModelConfig {
            vocab_size: self.vocab_size,
            dim: self.dim,
            hidden_dim: self.hidden_dim,
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            seq_len: self.seq_len,
            ffn: Ffn::Swiglu,
            tied_embeddings: self.shared_classifier,
            tokenizer,
            head_size: None,
        }
    }
}

/// Reads `model` (and `tokenizer`, if given) into an [`Imported`] checkpoint. The header is
/// checked against the file's length before anything else is read.
pub fn import(model: &Path, tokenizer: Option<&Path>) -> Result<Imported> {
    let in_file = |what: String| format!("llama2.c checkpoint {}: {what}", model.display());
    let mut file = std::fs::File::open(model)
        .with_context(|| format!("opening llama2.c checkpoint {}", model.display()))?;
    let file_len = file
        .metadata()
        .with_context(|| in_file("reading its size".into()))?
        .len();
    let mut head = [0u8; HEADER_BYTES];
    let got = read_up_to(&mut file, &mut head).with_context(|| in_file("reading".into()))?;
    let header =
        Header::parse(&head[..got]).map_err(|e| anyhow::anyhow!(in_file(e.to_string())))?;
    let expected = header.file_bytes().with_context(|| {
        in_file(format!(
            "header {header:?} describes more weights than fit in memory"
        ))
    })?;
    if file_len != expected {
        let what = if file_len < expected {
            "truncated"
        } else {
            "longer than its header says"
        };
        bail!(in_file(format!(
            "{what}: the header (dim {}, hidden {}, {} layers, {}/{} heads, vocab {}, seq_len {}, {} classifier) \
             needs {expected} bytes, the file has {file_len}",
            header.dim,
            header.hidden_dim,
            header.n_layers,
            header.n_heads,
            header.n_kv_heads,
            header.vocab_size,
            header.seq_len,
            if header.shared_classifier { "shared" } else { "separate" }
        )));
    }
    let mut bytes = Vec::with_capacity((expected as usize).saturating_sub(HEADER_BYTES));
    file.read_to_end(&mut bytes)
        .with_context(|| in_file("reading the weights".into()))?;
    if bytes.len() as u64 + HEADER_BYTES as u64 != expected {
        bail!(in_file("changed size while being read".into()));
    }
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    drop(bytes);

    let tokenizer = tokenizer
        .map(|path| read_tokenizer(path, header.vocab_size))
        .transpose()?;
    let kind = tokenizer
        .as_ref()
        .map_or(TokenizerKind::None, Tokenizer::kind);
    let config = NamedConfig {
        name: model
            .file_stem()
            .map_or("llama2c".into(), |s| s.to_string_lossy().into_owned()),
        description: format!(
            "imported from the llama2.c checkpoint {} ({file_len} bytes){}",
            model.display(),
            tokenizer
                .as_ref()
                .map_or(" without a tokenizer".to_string(), |_| String::new())
        ),
        seed_params: None,
        families: Vec::new(),
        model: header.model_config(kind),
        train: TrainConfig::default(),
        eot_id: Some(BOS_ID),
        // run.c never stops at EOS: a story ends when the model draws BOS again.
        eos_ids: Vec::new(),
    };
    Ok(Imported {
        tensors: tensors(&header, &floats)?,
        config,
        tokenizer,
        source: format!("llama2c:{}", model.display()),
    })
}

/// Fills `buf` as far as the reader allows; returns the bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The checkpoint tensors from the weights in file order (`floats` has exactly the header's
/// count, checked by the caller).
fn tensors(h: &Header, floats: &[f32]) -> Result<HashMap<String, candle_core::Tensor>> {
    let blocks = h.blocks().context("header overflow")?;
    let mut at = 0usize;
    let mut block = HashMap::new();
    for (name, n) in blocks {
        let n = n as usize;
        block.insert(name, &floats[at..at + n]);
        at += n;
    }
    let (d, hd, kv, v) = (h.dim, h.hidden_dim, h.kv_dim(), h.vocab_size);
    // Layer l's slice of a block of per-layer arrays of `size` values.
    let layer = |name: &str, l: usize, size: usize| &block[name][l * size..(l + 1) * size];
    let mut out = HashMap::new();
    out.insert(
        "tok_embeddings.weight".to_string(),
        tensor(block["token embedding"], v, d)?,
    );
    for l in 0..h.n_layers {
        let p = |s: &str| format!("layers.{l}.{s}.weight");
        let shapes = [
            ("attention_norm", "attention norms", d, 0),
            ("attention.wq", "wq", d, d),
            ("attention.wk", "wk", kv, d),
            ("attention.wv", "wv", kv, d),
            ("attention.wo", "wo", d, d),
            ("ffn_norm", "ffn norms", d, 0),
            ("feed_forward.w1", "w1", hd, d),
            ("feed_forward.w2", "w2", d, hd),
            ("feed_forward.w3", "w3", hd, d),
        ];
        for (ours, theirs, rows, cols) in shapes {
            let size = rows * cols.max(1);
            out.insert(p(ours), tensor(layer(theirs, l, size), rows, cols)?);
        }
    }
    out.insert(
        "norm.weight".to_string(),
        tensor(block["final norm"], d, 0)?,
    );
    if !h.shared_classifier {
        out.insert(
            "output.weight".to_string(),
            tensor(block["classifier"], v, d)?,
        );
    }
    Ok(out)
}

/// One `tokenizer.bin` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub score: f32,
    pub bytes: Vec<u8>,
}

/// Parses a `tokenizer.bin` with `vocab_size` entries (the count comes from the model header;
/// the file does not store it).
pub fn parse_tokenizer_bin(bytes: &[u8], vocab_size: usize) -> Result<Vec<Piece>> {
    let mut at = 0usize;
    let mut take = |n: usize, what: &dyn Fn() -> String| -> Result<&[u8]> {
        let end = at
            .checked_add(n)
            .filter(|&e| e <= bytes.len())
            .with_context(|| {
                format!(
                    "truncated at byte {at} reading {} ({} bytes for the model's {vocab_size} tokens)",
                    what(),
                    bytes.len()
                )
            })?;
        let slice = &bytes[at..end];
        at = end;
        Ok(slice)
    };
    let i32_at = |b: &[u8]| i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    take(4, &|| "max_token_length".into())?;
    let mut pieces = Vec::with_capacity(vocab_size.min(bytes.len() / 8));
    for id in 0..vocab_size {
        let score =
            f32::from_le_bytes(take(4, &|| format!("the score of token {id}"))?.try_into()?);
        let len = i32_at(take(4, &|| format!("the length of token {id}"))?);
        let len = usize::try_from(len)
            .map_err(|_| anyhow::anyhow!("token {id} has a negative length {len}"))?;
        let piece = take(len, &|| format!("the {len} bytes of token {id}"))?.to_vec();
        pieces.push(Piece {
            score,
            bytes: piece,
        });
    }
    if at != bytes.len() {
        bail!(
            "{} bytes follow the model's {vocab_size} tokens: is this the tokenizer of a model with a larger vocabulary?",
            bytes.len() - at
        );
    }
    Ok(pieces)
}

/// Reads `tokenizer.bin` as a sentencepiece [`Tokenizer`].
fn read_tokenizer(path: &Path, vocab_size: usize) -> Result<Tokenizer> {
    let context = || format!("llama2.c tokenizer {}", path.display());
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", context()))?;
    let pieces = parse_tokenizer_bin(&bytes, vocab_size).with_context(context)?;
    let json = tokenizer_json(&pieces).with_context(context)?;
    Tokenizer::from_json(&json).with_context(context)
}

/// `tokenizer.bin` pieces as a Hugging Face `tokenizer.json` that encodes like `run.c`'s
/// `encode`: a BPE with byte fallback over `▁`-for-space pieces, merges ranked by the merged
/// piece's score (highest first; ties by id), and a `▁` prepended to the text (run.c's dummy
/// prefix). Ids 1 and 2 become the special tokens `<s>` and `</s>` (run.c's BOS and EOS), a
/// `<unk>` piece the unknown token. Ids 3..=258 must be the byte tokens `<0x00>`..`<0xFF>`.
pub fn tokenizer_json(pieces: &[Piece]) -> Result<String> {
    if pieces.len() < FIRST_BYTE_TOKEN + 256 {
        bail!(
            "{} tokens: run.c's tokenizers have <unk>, <s>, </s> and 256 byte tokens first",
            pieces.len()
        );
    }
    let mut names = Vec::with_capacity(pieces.len());
    let mut specials = Vec::new();
    for (id, piece) in pieces.iter().enumerate() {
        let text = std::str::from_utf8(&piece.bytes)
            .with_context(|| format!("token {id} is not UTF-8: {:?}", piece.bytes))?;
        let name = match id as u32 {
            BOS_ID => "<s>".to_string(),
            EOS_ID => "</s>".to_string(),
            _ if text == "<unk>" => text.to_string(),
            _ if (FIRST_BYTE_TOKEN..FIRST_BYTE_TOKEN + 256).contains(&id) => {
                let byte = (id - FIRST_BYTE_TOKEN) as u8;
                if byte_fallback_token(text) != Some(byte) {
                    bail!(
                        "token {id} is {text:?}, expected the byte token <0x{byte:02X}> (run.c encodes byte b as id b + 3)"
                    );
                }
                format!("<0x{byte:02X}>")
            }
            _ => text.replace(' ', "▁"),
        };
        if matches!(name.as_str(), "<s>" | "</s>" | "<unk>") {
            specials.push((id, name.clone()));
        }
        names.push(name);
    }
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (id, name) in names.iter().enumerate() {
        if let Some(first) = ids.insert(name, id) {
            bail!("tokens {first} and {id} are both {name:?}");
        }
    }
    // Merges: every split of a (non-special, non-byte) piece into two such pieces.
    let is_piece = |id: usize| {
        !(FIRST_BYTE_TOKEN..FIRST_BYTE_TOKEN + 256).contains(&id)
            && !specials.iter().any(|&(s, _)| s == id)
    };
    let mut merges: Vec<(f32, usize, usize, &str, &str)> = Vec::new();
    for (id, name) in names.iter().enumerate().filter(|&(id, _)| is_piece(id)) {
        for (cut, _) in name.char_indices().skip(1) {
            let (left, right) = name.split_at(cut);
            let known = |s: &str| ids.get(s).is_some_and(|&i| is_piece(i));
            if known(left) && known(right) {
                merges.push((pieces[id].score, id, cut, left, right));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let vocab: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(id, n)| (n.clone(), id.into()))
        .collect();
    let added: Vec<serde_json::Value> = specials
        .iter()
        .map(|(id, name)| {
            serde_json::json!({
                "id": id, "content": name, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true
            })
        })
        .collect();
    let unk = specials
        .iter()
        .find(|(_, n)| n == "<unk>")
        .map(|(_, n)| n.clone());
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
        ]},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}
        ]},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab,
            "merges": merges.iter().map(|m| serde_json::json!([m.3, m.4])).collect::<Vec<_>>()
        }
    });
    Ok(serde_json::to_string(&json)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run.c-style vocabulary: `<unk>`, BOS, EOS, the 256 byte tokens, then `pieces` with
    /// their scores.
    fn vocab(pieces: &[(&str, f32)]) -> Vec<Piece> {
        let mut v = vec![
            Piece {
                score: 0.0,
                bytes: b"<unk>".to_vec(),
            },
            Piece {
                score: 0.0,
                bytes: b"\n<s>\n".to_vec(),
            },
            Piece {
                score: 0.0,
                bytes: b"\n</s>\n".to_vec(),
            },
        ];
        v.extend((0..=255u8).map(|b| Piece {
            score: 0.0,
            bytes: format!("<0x{b:02X}>").into_bytes(),
        }));
        v.extend(pieces.iter().map(|(s, score)| Piece {
            score: *score,
            bytes: s.as_bytes().to_vec(),
        }));
        v
    }

    /// `run.c`'s `encode(text, bos = 0, eos = 0)`, written out: dummy prefix " " for non-empty
    /// text, one token per UTF-8 character (else `byte + 3` per byte), then merge the adjacent
    /// pair whose concatenation has the highest score (leftmost on ties) until none is a token.
    fn run_c_encode(vocab: &[Piece], text: &str) -> Vec<u32> {
        let lookup = |s: &[u8]| vocab.iter().position(|p| p.bytes == s);
        let mut tokens: Vec<usize> = Vec::new();
        if !text.is_empty() {
            tokens.push(lookup(b" ").expect("vocab has a space"));
        }
        for c in text.chars() {
            let mut buf = [0u8; 4];
            let s = c.encode_utf8(&mut buf).as_bytes();
            match lookup(s) {
                Some(id) => tokens.push(id),
                None => tokens.extend(s.iter().map(|&b| b as usize + 3)),
            }
        }
        loop {
            let mut best: Option<(f32, usize, usize)> = None;
            for i in 0..tokens.len().saturating_sub(1) {
                let joined = [
                    vocab[tokens[i]].bytes.clone(),
                    vocab[tokens[i + 1]].bytes.clone(),
                ]
                .concat();
                if let Some(id) = lookup(&joined) {
                    if best.is_none_or(|(s, _, _)| vocab[id].score > s) {
                        best = Some((vocab[id].score, id, i));
                    }
                }
            }
            let Some((_, id, i)) = best else { break };
            tokens[i] = id;
            tokens.remove(i + 1);
        }
        tokens.into_iter().map(|t| t as u32).collect()
    }

    #[test]
    fn tokenizer_bin_encodes_like_run_c() {
        // Scores out of id order, so that ranking by score (not id) is what is tested.
        let pieces = vocab(&[
            (" ", -1.0),
            ("a", -2.0),
            ("b", -3.0),
            ("c", -4.0),
            ("é", -5.0),
            ("ab", -9.0),
            ("bc", -6.0),
            (" a", -7.0),
            ("abc", -8.0),
            (" ab", -10.0),
            (" c", -11.0),
            ("ca", -12.0),
            ("☃", -13.0),
            ("  ", -14.0),
            (" abc", -15.0),
            ("\n", -16.0),
        ]);
        let json = tokenizer_json(&pieces).unwrap();
        let tok = Tokenizer::from_json(&json).unwrap();
        assert_eq!(tok.kind(), TokenizerKind::Sentencepiece);
        assert_eq!(tok.eot_id(), BOS_ID);
        assert_eq!(tok.vocab_size(), pieces.len());
        for text in [
            "",
            "a",
            "abc",
            "ab abc",
            " a b c",
            "cab",
            "é☃x",
            "naïve",
            "a\nb\n",
            "  spaced  ",
            "ZZZ",
            "abcabcab",
            "bcab c a",
        ] {
            let want = run_c_encode(&pieces, text);
            let encoded = tok.encode_with_source_bytes(text);
            assert_eq!(encoded.ids, want, "{text:?}");
            // Decoding gives the text after run.c's dummy-prefix space; source bytes exclude it.
            let decoded = tok.decode(&encoded.ids);
            let expected = if text.is_empty() {
                String::new()
            } else {
                format!(" {text}")
            };
            assert_eq!(decoded, expected);
            let bytes: u32 = encoded.source_bytes.iter().sum();
            assert_eq!(bytes as usize, text.len(), "{text:?}");
        }
        // Stories are separated by the story separator, which llama2.c calls BOS.
        let two = tok.encode("ab<|endoftext|>c");
        let want = [
            run_c_encode(&pieces, "ab"),
            vec![BOS_ID],
            run_c_encode(&pieces, "c"),
        ]
        .concat();
        assert_eq!(two, want);
        assert_eq!(tok.token_bytes(BOS_ID), b"<|endoftext|>");
        assert_eq!(tok.token_bytes(3 + 0x41), b"A");
    }

    #[test]
    fn bad_tokenizer_bins_are_refused() {
        let pieces = vocab(&[(" ", -1.0), ("a", -2.0)]);
        let mut bin = 7i32.to_le_bytes().to_vec();
        for p in &pieces {
            bin.extend(p.score.to_le_bytes());
            bin.extend((p.bytes.len() as i32).to_le_bytes());
            bin.extend(&p.bytes);
        }
        assert_eq!(parse_tokenizer_bin(&bin, pieces.len()).unwrap(), pieces);
        let err =
            |bytes: &[u8], vocab: usize| parse_tokenizer_bin(bytes, vocab).unwrap_err().to_string();
        assert!(err(&bin[..bin.len() - 1], pieces.len()).contains("truncated"));
        assert!(err(&bin, pieces.len() - 1).contains("follow the model's"));
        assert!(err(&bin[..2], 3).contains("max_token_length"));
        let mut negative = bin.clone();
        negative[8..12].copy_from_slice(&(-5i32).to_le_bytes());
        assert!(err(&negative, pieces.len()).contains("negative length"));
        let mut huge = bin.clone();
        huge[8..12].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(err(&huge, pieces.len()).contains("truncated"));

        let mut swapped = pieces.clone();
        swapped.swap(3, 4);
        let e = tokenizer_json(&swapped).unwrap_err().to_string();
        assert!(e.contains("expected the byte token <0x00>"), "{e}");
        let e = tokenizer_json(&pieces[..100]).unwrap_err().to_string();
        assert!(e.contains("256 byte tokens"), "{e}");
        let mut twice = pieces.clone();
        twice.push(Piece {
            score: -3.0,
            bytes: b"a".to_vec(),
        });
        let e = tokenizer_json(&twice).unwrap_err().to_string();
        assert!(e.contains("are both"), "{e}");
    }

    #[test]
    fn headers_are_checked_before_the_weights() {
        let header = |w: [i32; 7]| -> Vec<u8> { w.iter().flat_map(|v| v.to_le_bytes()).collect() };
        let ok = Header::parse(&header([64, 172, 5, 8, 4, 512, 512])).unwrap();
        assert!(ok.shared_classifier);
        // stories260K.bin: 1,056,540 bytes.
        assert_eq!(ok.file_bytes(), Some(1_056_540));
        let separate = Header::parse(&header([64, 172, 5, 8, 4, -512, 512])).unwrap();
        assert!(!separate.shared_classifier);
        assert_eq!(separate.file_bytes(), Some(1_056_540 + 512 * 64 * 4));
        let cases: [([i32; 7], &str); 7] = [
            ([0, 172, 5, 8, 4, 512, 512], "dim is 0"),
            ([64, 172, 5, -8, 4, 512, 512], "n_heads is -8"),
            ([64, 172, 5, 8, 4, 1, 512], "vocab_size is 1"),
            ([64, 172, 5, 6, 3, 512, 512], "not a multiple of n_heads"),
            ([64, 172, 5, 8, 3, 512, 512], "not a multiple of n_kv_heads"),
            ([64, 172, 5, 64, 64, 512, 512], "odd"),
            ([0x616b_3432, 1, 0, 0, 0, 0, 0], "version 1"),
        ];
        for (words, expected) in cases {
            let e = Header::parse(&header(words)).unwrap_err().to_string();
            assert!(e.contains(expected), "{words:?}: {e}");
        }
        let e = Header::parse(&header([64; 7])[..20])
            .unwrap_err()
            .to_string();
        assert!(e.contains("shorter than the 28-byte header"), "{e}");
        // A hostile header is refused before any size is computed from it.
        let e = Header::parse(&header([
            i32::MAX - 1,
            i32::MAX,
            i32::MAX,
            1,
            1,
            i32::MAX,
            2,
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("at most"), "{e}");
    }
}
