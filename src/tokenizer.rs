//! Character-level and byte-level BPE tokenizers, saved as Hugging Face `tokenizer.json`.
//!
//! Token ids (docs/ARCHITECTURE.md): id 0 is `<|endoftext|>` (the marker in source text maps to
//! it); the char tokenizer reserves id 1 for `<unk>` and gives the remaining ids to the most
//! frequent characters of the training text; byte-level BPE needs no unknown token. Every id has a
//! byte string ([`Tokenizer::token_bytes`]) and decoding is their concatenation.
//!
//! Both kinds are stored as a BPE model in `tokenizer.json`, so `tokenizers::Tokenizer::from_file`
//! (and Python's `tokenizers`/`transformers`) load them and encode identically:
//! - char: a BPE model with an empty merge list, `<unk>` as its unknown token, no pre-tokenizer and
//!   a `Fuse` decoder — every character is looked up on its own;
//! - bpe: GPT-2 style byte-level BPE (`ByteLevel` pre-tokenizer and decoder, no prefix space).
//!
//! The char tokenizer encodes with its own table (same result as the HF model, and much faster);
//! byte-level BPE encodes with the HF model in parallel chunks cut where the GPT-2 split regex
//! always splits, so the ids equal a whole-text HF encode.
//!
//! Two more kinds come only from imports (`src/import/`), never from training:
//! - sentencepiece: a BPE model with byte fallback (llama2.c's `tokenizer.bin` converted, or a
//!   Hugging Face Llama `tokenizer.json`); `<s>` plays the role of `<|endoftext|>` (its id is
//!   [`Tokenizer::eot_id`] and its bytes are `<|endoftext|>`), `▁` is a space, `<0xAB>` the byte
//!   0xAB; encoded segment by segment with the HF model (which prepends the `▁` dummy prefix);
//! - none: no tokenizer file; ids with empty byte strings and no encoder ([`Tokenizer::ids_only`]).

use crate::config::TokenizerKind;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, NormalizerWrapper, TokenizerBuilder};

/// The story separator in source text; always token id 0.
pub const END_OF_TEXT: &str = "<|endoftext|>";
/// The char tokenizer's unknown-character token; always id 1 there.
pub const UNKNOWN: &str = "<unk>";
/// What `<unk>` decodes to (U+FFFD REPLACEMENT CHARACTER).
const UNKNOWN_BYTES: &[u8] = "\u{FFFD}".as_bytes();
/// Text per chunk handed to the HF encoder in parallel.
const ENCODE_CHUNK_BYTES: usize = 1 << 16;

/// Token ids of a text plus, per token, the length in bytes of the source text it stands for
/// (`<|endoftext|>` counts 1, an `<unk>` counts its character's UTF-8 length).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedText {
    pub ids: Vec<u32>,
    pub source_bytes: Vec<u32>,
}

/// A trained tokenizer (either kind), with its byte strings precomputed.
#[derive(Clone)]
pub struct Tokenizer {
    kind: TokenizerKind,
    /// `None` only for [`TokenizerKind::None`].
    hf: Option<tokenizers::Tokenizer>,
    /// The story separator: 0 (`<|endoftext|>`), or `<s>` for sentencepiece.
    eot_id: u32,
    /// Raw bytes of each token id.
    token_bytes: Vec<Vec<u8>>,
    /// Char tokenizer: character → id.
    char_ids: HashMap<char, u32>,
    /// BPE merges by rank: (left, right, merged).
    merges: Vec<(u32, u32, u32)>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl Tokenizer {
    /// Trains a tokenizer of `kind` with at most `vocab_size` ids on `text`.
    ///
    /// Char: `<|endoftext|>`, `<unk>`, then the `vocab_size − 2` most frequent characters (ties by
    /// code point), most frequent first. BPE: `<|endoftext|>`, the 256 byte symbols, then merges;
    /// needs `vocab_size ≥ 257`. The result may have fewer ids than `vocab_size` when the text is
    /// too small to fill it.
    pub fn train(kind: TokenizerKind, vocab_size: usize, text: &str) -> Result<Tokenizer> {
        match kind {
            TokenizerKind::Char => Self::train_char(vocab_size, text),
            TokenizerKind::Bpe => Self::train_bpe(vocab_size, text),
            TokenizerKind::Sentencepiece | TokenizerKind::None => {
                bail!("{kind:?} tokenizers come from imports (`starmind import`), they cannot be trained")
            }
        }
    }

    fn train_char(vocab_size: usize, text: &str) -> Result<Tokenizer> {
        if vocab_size < 3 {
            bail!("a char tokenizer needs vocab_size ≥ 3 (<|endoftext|>, <unk> and one character), got {vocab_size}");
        }
        let mut counts: HashMap<char, u64> = HashMap::new();
        for segment in text.split(END_OF_TEXT) {
            for c in segment.chars() {
                *counts.entry(c).or_default() += 1;
            }
        }
        let mut by_frequency: Vec<(char, u64)> = counts.into_iter().collect();
        by_frequency.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        by_frequency.truncate(vocab_size - 2);

        let mut vocab: Vec<String> = vec![END_OF_TEXT.to_string(), UNKNOWN.to_string()];
        vocab.extend(by_frequency.iter().map(|(c, _)| c.to_string()));
        let mut vocab_map = tokenizers::models::bpe::Vocab::default();
        for (id, symbol) in vocab.iter().enumerate() {
            vocab_map.insert(symbol.clone(), id as u32);
        }
        let model = BPE::builder()
            .vocab_and_merges(vocab_map, vec![])
            .unk_token(UNKNOWN.to_string())
            .build()
            .map_err(anyhow::Error::from_boxed)
            .context("building the char tokenizer model")?;
        let mut hf = tokenizers::Tokenizer::new(model);
        hf.with_decoder(Some(Fuse::new()));
        hf.add_special_tokens(&[AddedToken::from(END_OF_TEXT, true)]);
        Self::from_hf(hf)
    }

    fn train_bpe(vocab_size: usize, text: &str) -> Result<Tokenizer> {
        if vocab_size < 257 {
            bail!("byte-level BPE needs vocab_size ≥ 257 (<|endoftext|> and 256 bytes), got {vocab_size}");
        }
        let mut trainer = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(vocab_size)
            .min_frequency(2)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
            .build();
        let byte_level = ByteLevel::new(false, false, true);
        let mut typed =
            TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel>::new()
                .with_model(BPE::default())
                .with_pre_tokenizer(Some(byte_level))
                .with_decoder(Some(byte_level))
                .build()
                .map_err(anyhow::Error::from_boxed)
                .context("building the BPE tokenizer")?;
        // Feed paragraphs with their newlines, the `<|endoftext|>` markers removed (they are a
        // special token, not text to merge).
        let pieces = text
            .split(END_OF_TEXT)
            .flat_map(|segment| segment.split_inclusive('\n'));
        typed
            .train(&mut trainer, pieces)
            .map_err(anyhow::Error::from_boxed)
            .context("training byte-level BPE")?;
        Self::from_hf(tokenizers::Tokenizer::from(typed))
    }

    /// Loads a `tokenizer.json` written by [`Tokenizer::save`] (or a Hugging Face Llama one).
    pub fn load(path: &Path) -> Result<Tokenizer> {
        let json = std::fs::read_to_string(path)
            .with_context(|| format!("reading tokenizer {}", path.display()))?;
        Self::from_json(&json).with_context(|| format!("tokenizer {}", path.display()))
    }

    /// A tokenizer from `tokenizer.json` text.
    pub fn from_json(json: &str) -> Result<Tokenizer> {
        // Read as JSON values here first: tokenizers 0.21 panics (`expect("Helper")` in its
        // decoder's deserializer) when the "decoder" object is not valid JSON, a syntax error
        // or a number no f64 holds (1e400), which only a full parse into values catches.
        serde_json::from_str::<serde_json::Value>(json)
            .map_err(|e| anyhow!("parsing tokenizer.json: not valid JSON: {e}"))?;
        let hf: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e| anyhow!("parsing tokenizer.json: {e}"))?;
        Self::from_hf(hf)
    }

    /// The stand-in for a model without a tokenizer: `vocab_size` ids whose byte strings are
    /// empty, `eot_id` as the story separator, and no encoder ([`Tokenizer::can_encode`]).
    pub fn ids_only(vocab_size: usize, eot_id: u32) -> Tokenizer {
        Tokenizer {
            kind: TokenizerKind::None,
            hf: None,
            eot_id,
            token_bytes: vec![Vec::new(); vocab_size],
            char_ids: HashMap::new(),
            merges: Vec::new(),
        }
    }

    /// Whether text can be turned into ids (false for [`TokenizerKind::None`]).
    pub fn can_encode(&self) -> bool {
        self.hf.is_some()
    }

    /// Writes the Hugging Face `tokenizer.json` (atomically: temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.to_json()?;
        crate::fsio::write_atomic(path, json.as_bytes())
    }

    /// The Hugging Face `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String> {
        self.hf
            .as_ref()
            .context("a model without a tokenizer has no tokenizer.json")?
            .to_string(true)
            .map_err(anyhow::Error::from_boxed)
            .context("serializing tokenizer")
    }

    /// Builds the byte tables from a HF tokenizer of one of our three shapes.
    fn from_hf(hf: tokenizers::Tokenizer) -> Result<Tokenizer> {
        // Ids must be 0..N for N tokens, checked first: serializing a vocabulary with holes
        // walks every missing id (one id of 10⁸ in a small file took seconds and gigabytes),
        // and the id tables below are allocated by the largest id.
        let vocab = hf.get_vocab(true);
        if let Some(&max_id) = vocab.values().max() {
            if max_id as usize >= vocab.len() {
                bail!(
                    "tokenizer.json: token ids must be 0..{} for its {} tokens, found id {max_id}",
                    vocab.len(),
                    vocab.len()
                );
            }
        }
        let json: serde_json::Value = serde_json::from_str(
            &hf.to_string(false)
                .map_err(anyhow::Error::from_boxed)
                .context("serializing tokenizer")?,
        )?;
        let model = &json["model"];
        if model["type"] != "BPE" {
            bail!(
                "expected a BPE model in tokenizer.json, found {}",
                model["type"]
            );
        }
        if model["byte_fallback"] == true {
            return Self::from_hf_sentencepiece(hf, &json);
        }
        let kind = match json["pre_tokenizer"]["type"].as_str() {
            Some("ByteLevel") => TokenizerKind::Bpe,
            None => TokenizerKind::Char,
            Some(other) => bail!("unsupported pre-tokenizer {other} (expected ByteLevel or none)"),
        };
        let vocab_size = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        let mut names = vec![None; vocab_size];
        for (name, &id) in &vocab {
            names[id as usize] = Some(name.clone());
        }
        let names: Vec<String> = names
            .into_iter()
            .enumerate()
            .map(|(id, n)| n.ok_or_else(|| anyhow!("token id {id} is missing from the vocabulary")))
            .collect::<Result<_>>()?;
        if names.first().map(String::as_str) != Some(END_OF_TEXT) {
            bail!("token id 0 must be {END_OF_TEXT}");
        }

        let unicode_to_byte: HashMap<char, u8> = gpt2_byte_to_unicode()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let mut token_bytes = Vec::with_capacity(vocab_size);
        let mut char_ids = HashMap::new();
        for (id, name) in names.iter().enumerate() {
            let bytes = match (kind, id) {
                (_, 0) => END_OF_TEXT.as_bytes().to_vec(),
                (TokenizerKind::Char, 1) => {
                    if name != UNKNOWN {
                        bail!("char tokenizer: token id 1 must be {UNKNOWN}, found {name:?}");
                    }
                    UNKNOWN_BYTES.to_vec()
                }
                (TokenizerKind::Char, _) => {
                    let mut chars = name.chars();
                    let (Some(c), None) = (chars.next(), chars.next()) else {
                        bail!("char tokenizer: token {id} ({name:?}) is not one character");
                    };
                    char_ids.insert(c, id as u32);
                    name.as_bytes().to_vec()
                }
                // Byte-level BPE (sentencepiece returned above).
                (_, _) => name
                    .chars()
                    .map(|c| {
                        unicode_to_byte.get(&c).copied().ok_or_else(|| {
                            anyhow!("BPE token {id} ({name:?}) has a non-byte-level symbol {c:?}")
                        })
                    })
                    .collect::<Result<_>>()?,
            };
            token_bytes.push(bytes);
        }

        let mut merges = Vec::new();
        for merge in model["merges"]
            .as_array()
            .context("tokenizer.json: model.merges is not a list")?
        {
            // tokenizers ≥ 0.20 writes [left, right]; older files use "left right".
            let (left, right) = match merge {
                serde_json::Value::Array(pair) if pair.len() == 2 => (
                    pair[0].as_str().unwrap_or_default().to_string(),
                    pair[1].as_str().unwrap_or_default().to_string(),
                ),
                serde_json::Value::String(s) => {
                    let (l, r) = s.split_once(' ').context("malformed merge")?;
                    (l.to_string(), r.to_string())
                }
                other => bail!("malformed merge {other}"),
            };
            let id_of = |s: &str| {
                vocab
                    .get(s)
                    .copied()
                    .ok_or_else(|| anyhow!("merge refers to unknown token {s:?}"))
            };
            merges.push((
                id_of(&left)?,
                id_of(&right)?,
                id_of(&format!("{left}{right}"))?,
            ));
        }
        if kind == TokenizerKind::Char && !merges.is_empty() {
            bail!("char tokenizer with merges");
        }
        Ok(Tokenizer {
            kind,
            hf: Some(hf),
            eot_id: 0,
            token_bytes,
            char_ids,
            merges,
        })
    }

    /// A SentencePiece-style BPE (byte fallback): `▁` → space, `<0xAB>` → byte 0xAB, `<s>` → the
    /// story separator. Only the two ways Llama tokenizers prepend the dummy `▁` are accepted
    /// (a `Prepend` + `Replace` normalizer, or a `Metaspace` pre-tokenizer), so that the source
    /// bytes of a segment are its tokens' bytes less that one prefix space.
    fn from_hf_sentencepiece(
        hf: tokenizers::Tokenizer,
        json: &serde_json::Value,
    ) -> Result<Tokenizer> {
        let normalizer = &json["normalizer"];
        let pre_tokenizer = &json["pre_tokenizer"];
        let prepend_normalizer = normalizer["type"] == "Sequence"
            && normalizer["normalizers"].as_array().is_some_and(|n| {
                n.iter()
                    .any(|n| n["type"] == "Prepend" && n["prepend"] == "▁")
            })
            && pre_tokenizer.is_null();
        let metaspace = pre_tokenizer["type"] == "Metaspace"
            && pre_tokenizer["replacement"] == "▁"
            && pre_tokenizer["prepend_scheme"] != "never"
            && normalizer.is_null();
        if !(prepend_normalizer || metaspace) {
            bail!(
                "unsupported SentencePiece-style tokenizer: expected a Prepend(\"▁\") + Replace normalizer \
                 or a Metaspace pre-tokenizer (found normalizer {normalizer}, pre-tokenizer {pre_tokenizer})"
            );
        }
        let vocab = hf.get_vocab(true);
        let vocab_size = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        let mut names = vec![None; vocab_size];
        for (name, &id) in &vocab {
            names[id as usize] = Some(name.as_str());
        }
        let eot_id = *vocab
            .get("<s>")
            .context("a SentencePiece-style tokenizer needs a <s> token (the story separator)")?;
        let specials: std::collections::HashSet<u32> = hf
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(&id, _)| id)
            .collect();
        let mut token_bytes = Vec::with_capacity(vocab_size);
        for (id, name) in names.iter().enumerate() {
            let name =
                name.ok_or_else(|| anyhow!("token id {id} is missing from the vocabulary"))?;
            let bytes = if id as u32 == eot_id {
                END_OF_TEXT.as_bytes().to_vec()
            } else if specials.contains(&(id as u32)) {
                name.as_bytes().to_vec()
            } else if let Some(byte) = byte_fallback_token(name) {
                vec![byte]
            } else {
                name.replace('▁', " ").into_bytes()
            };
            token_bytes.push(bytes);
        }
        Ok(Tokenizer {
            kind: TokenizerKind::Sentencepiece,
            hf: Some(hf),
            eot_id,
            token_bytes,
            char_ids: HashMap::new(),
            // The HF model merges; nothing downstream needs the table (the engine has no
            // SentencePiece encoder yet).
            merges: Vec::new(),
        })
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_with_source_bytes(text).ids
    }

    /// Token ids of `text` with each token's source length in bytes (for bits per byte).
    /// A tokenizer without an encoder ([`Tokenizer::ids_only`]) returns no ids: callers check
    /// [`Tokenizer::can_encode`] first.
    pub fn encode_with_source_bytes(&self, text: &str) -> EncodedText {
        let mut out = EncodedText::default();
        let Some(hf) = &self.hf else {
            return out;
        };
        let mut segments = text.split(END_OF_TEXT).peekable();
        while let Some(segment) = segments.next() {
            match self.kind {
                TokenizerKind::Char => self.encode_chars(segment, &mut out),
                TokenizerKind::Bpe => self.encode_bpe(hf, segment, &mut out),
                TokenizerKind::Sentencepiece => self.encode_sentencepiece(hf, segment, &mut out),
                TokenizerKind::None => {}
            }
            if segments.peek().is_some() {
                out.ids.push(self.eot_id());
                out.source_bytes.push(1);
            }
        }
        out
    }

    fn encode_chars(&self, segment: &str, out: &mut EncodedText) {
        let unk = self.unk_id().expect("char tokenizers have <unk>");
        for c in segment.chars() {
            out.ids.push(self.char_ids.get(&c).copied().unwrap_or(unk));
            out.source_bytes.push(c.len_utf8() as u32);
        }
    }

    fn encode_bpe(&self, hf: &tokenizers::Tokenizer, segment: &str, out: &mut EncodedText) {
        let chunks = split_at_pretokenizer_boundaries(segment, ENCODE_CHUNK_BYTES);
        let encodings = hf
            .encode_batch_fast(chunks, false)
            .expect("byte-level BPE encodes any text");
        for encoding in encodings {
            for &id in encoding.get_ids() {
                out.ids.push(id);
                out.source_bytes
                    .push(self.token_bytes[id as usize].len() as u32);
            }
        }
    }

    /// One segment in one piece (the dummy `▁` prefix belongs to the segment's start). Source
    /// bytes are the tokens' bytes, less the prefix space on the first tokens.
    fn encode_sentencepiece(
        &self,
        hf: &tokenizers::Tokenizer,
        segment: &str,
        out: &mut EncodedText,
    ) {
        if segment.is_empty() {
            return;
        }
        let encoding = hf
            .encode_fast(segment, false)
            .expect("a byte-fallback BPE encodes any text");
        let start = out.ids.len();
        for &id in encoding.get_ids() {
            out.ids.push(id);
            out.source_bytes.push(self.token_bytes(id).len() as u32);
        }
        let total: usize = out.source_bytes[start..].iter().map(|&b| b as usize).sum();
        let mut extra = total.saturating_sub(segment.len());
        for bytes in &mut out.source_bytes[start..] {
            let cut = extra.min(*bytes as usize);
            *bytes -= cut as u32;
            extra -= cut;
        }
    }

    /// Text of `ids`: the concatenation of their bytes, invalid UTF-8 replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_bytes(id)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Raw bytes of token `id`: its characters' UTF-8 for char tokens, the original bytes for
    /// byte-level BPE, `<|endoftext|>` for id 0, U+FFFD for `<unk>`; empty for ids out of range.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.token_bytes
            .get(id as usize)
            .cloned()
            .unwrap_or_default()
    }

    /// Byte-level BPE merges by rank as (left, right, merged) ids; empty for the other kinds.
    pub fn merges(&self) -> Vec<(u32, u32, u32)> {
        self.merges.clone()
    }

    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// Number of token ids (may be below the config's vocab_size on small training texts).
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// The story separator: `<|endoftext|>` (0) for trained tokenizers, `<s>` for
    /// sentencepiece, the config's id for [`Tokenizer::ids_only`].
    pub fn eot_id(&self) -> u32 {
        self.eot_id
    }

    /// `<unk>`: 1 for char tokenizers, none otherwise (byte-level BPE and byte fallback cover
    /// every byte).
    pub fn unk_id(&self) -> Option<u32> {
        match self.kind {
            TokenizerKind::Char => Some(1),
            _ => None,
        }
    }
}

/// The byte of a SentencePiece byte-fallback token `<0xAB>`.
pub fn byte_fallback_token(name: &str) -> Option<u8> {
    let hex = name.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// GPT-2's byte → printable character table used by byte-level BPE (`bytes_to_unicode`).
fn gpt2_byte_to_unicode() -> [char; 256] {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut table = ['\0'; 256];
    let mut next_unprintable = 256u32;
    for b in 0..256u32 {
        table[b as usize] = if printable(b) {
            char::from_u32(b).expect("latin-1 code point")
        } else {
            next_unprintable += 1;
            char::from_u32(next_unprintable - 1).expect("code point below 512")
        };
    }
    table
}

/// Cuts `text` into chunks of roughly `target` bytes, only between an ASCII graphic character and
/// a following `\n`: no GPT-2 pre-token crosses a non-space → space boundary and the split regex
/// looks only ahead, so encoding the chunks separately gives the ids of the whole text.
fn split_at_pretokenizer_boundaries(text: &str, target: usize) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut i = target;
    while i < bytes.len() {
        if bytes[i] == b'\n' && bytes[i - 1].is_ascii_graphic() {
            chunks.push(&text[start..i]);
            start = i;
            i += target;
        } else {
            i += 1;
        }
    }
    if start < bytes.len() || chunks.is_empty() {
        chunks.push(&text[start..]);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/tinystories/valid.txt");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        text[..text.char_indices().nth(200_000).unwrap().0].to_string()
    }

    #[test]
    fn gpt2_table_is_a_bijection() {
        let table = gpt2_byte_to_unicode();
        let distinct: std::collections::HashSet<char> = table.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        assert_eq!(table[b'A' as usize], 'A');
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(distinct, ByteLevel::alphabet().into_iter().collect());
    }

    #[test]
    fn char_round_trip_and_unknowns() {
        let text = sample();
        let tok = Tokenizer::train(TokenizerKind::Char, 64, &text).unwrap();
        assert_eq!(tok.vocab_size(), 64);
        assert_eq!(tok.unk_id(), Some(1));
        assert_eq!(tok.token_bytes(0), b"<|endoftext|>");
        // Frequency order: space then 'e' are the most frequent characters of English stories.
        assert_eq!(tok.token_bytes(2), b" ");
        let encoded = tok.encode_with_source_bytes(&text);
        let unknown = encoded.ids.iter().filter(|&&id| id == 1).count();
        assert!(
            unknown > 0,
            "a 64-symbol vocabulary leaves rare characters unknown"
        );
        assert_eq!(encoded.ids.len(), text.chars().count());
        assert_eq!(
            encoded
                .source_bytes
                .iter()
                .map(|&b| b as usize)
                .sum::<usize>(),
            text.len()
        );
        // Known characters round-trip; unknown ones decode to U+FFFD.
        let expected: String = text
            .chars()
            .map(|c| {
                if tok.char_ids.contains_key(&c) {
                    c
                } else {
                    '\u{FFFD}'
                }
            })
            .collect();
        assert_eq!(tok.decode(&encoded.ids), expected);

        let full = Tokenizer::train(TokenizerKind::Char, 4096, &text).unwrap();
        assert_eq!(full.decode(&full.encode(&text)), text);
        assert!(full.vocab_size() < 4096);
    }

    /// Found by the `tokenizer_files` fuzz target: one huge id in a small file asked for a
    /// table of gigabytes (libFuzzer: malloc of 3.8 GB).
    #[test]
    fn a_vocabulary_id_beyond_its_token_count_is_refused_before_allocating() {
        let tok = Tokenizer::train(TokenizerKind::Char, 32, "ab ab<|endoftext|>ba").unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&tok.to_json().unwrap()).unwrap();
        json["model"]["vocab"]["a"] = serde_json::json!(157_777_776u64);
        let err = Tokenizer::from_json(&json.to_string()).unwrap_err();
        assert!(format!("{err:#}").contains("found id 157777776"), "{err:#}");
    }

    /// Found by the `tokenizer_files` fuzz target: a number out of f64's range inside the
    /// decoder object made tokenizers panic ("Helper: number out of range").
    #[test]
    fn a_decoder_with_an_out_of_range_number_is_an_error_not_a_panic() {
        let tok = Tokenizer::train(TokenizerKind::Char, 32, "ab ab<|endoftext|>ba").unwrap();
        let json = tok.to_json().unwrap();
        let at = json.find("\"decoder\"").unwrap();
        let close = at + json[at..].find('}').unwrap();
        let broken = format!("{}, \"x\": 1e400{}", &json[..close], &json[close..]);
        let err = Tokenizer::from_json(&broken).unwrap_err();
        assert!(format!("{err:#}").contains("not valid JSON"), "{err:#}");
    }

    #[test]
    fn endoftext_marker_is_id_zero_and_counts_one_byte() {
        let tok = Tokenizer::train(TokenizerKind::Char, 32, "ab ab<|endoftext|>ba").unwrap();
        let e = tok.encode_with_source_bytes("ab<|endoftext|>é<|endoftext|>");
        assert_eq!(e.ids.len(), 5);
        assert_eq!(e.ids[2], 0);
        assert_eq!(e.ids[3], 1, "é was not in the training text");
        assert_eq!(e.ids[4], 0);
        assert_eq!(e.source_bytes, vec![1, 1, 1, 2, 1]);
        assert_eq!(tok.decode(&e.ids), "ab<|endoftext|>\u{FFFD}<|endoftext|>");
    }

    #[test]
    fn bpe_round_trip_and_merges() {
        let text = sample();
        let tok = Tokenizer::train(TokenizerKind::Bpe, 512, &text).unwrap();
        assert_eq!(tok.vocab_size(), 512);
        assert_eq!(tok.unk_id(), None);
        let encoded = tok.encode_with_source_bytes(&text);
        assert_eq!(tok.decode(&encoded.ids), text);
        assert_eq!(
            encoded
                .source_bytes
                .iter()
                .map(|&b| b as usize)
                .sum::<usize>(),
            text.len()
        );
        let bytes_per_token = text.len() as f64 / encoded.ids.len() as f64;
        assert!(bytes_per_token > 2.0, "bytes per token {bytes_per_token}");
        let merges = tok.merges();
        assert_eq!(merges.len(), 512 - 257);
        for &(l, r, m) in &merges {
            assert_eq!(
                tok.token_bytes(m),
                [tok.token_bytes(l), tok.token_bytes(r)].concat()
            );
        }
        // Non-ASCII bytes survive.
        let odd = "naïve — ☃\n\n  x";
        assert_eq!(tok.decode(&tok.encode(odd)), odd);
        assert!(Tokenizer::train(TokenizerKind::Bpe, 256, &text).is_err());
    }

    #[test]
    fn chunked_bpe_encoding_equals_whole_text_hf_encoding() {
        let text = sample();
        let tok = Tokenizer::train(TokenizerKind::Bpe, 400, &text).unwrap();
        let tricky = format!("{}  \n\nHe said: \"hi\"  \n \nThe end.\n", &text[..50_000]);
        let whole = tok
            .hf
            .as_ref()
            .unwrap()
            .encode(tricky.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        for target in [1, 7, 1000, 1 << 20] {
            let mut out = EncodedText::default();
            for chunk in split_at_pretokenizer_boundaries(&tricky, target) {
                let hf = tok.hf.as_ref().unwrap();
                let ids = hf.encode(chunk, false).unwrap().get_ids().to_vec();
                out.ids.extend(ids);
            }
            assert_eq!(out.ids, whole, "chunk target {target}");
        }
        assert_eq!(tok.encode(&tricky), whole);
    }

    #[test]
    fn saved_files_load_in_hf_and_encode_identically() {
        let text = sample();
        let dir = std::env::temp_dir().join(format!("starmind-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (kind, vocab) in [(TokenizerKind::Char, 48), (TokenizerKind::Bpe, 300)] {
            let tok = Tokenizer::train(kind, vocab, &text).unwrap();
            let path = dir.join(format!("{kind:?}.json"));
            tok.save(&path).unwrap();
            let hf = tokenizers::Tokenizer::from_file(&path).unwrap();
            let probe = format!("{}<|endoftext|>Zoë ☃ said \"hi\".\n", &text[..3000]);
            let hf_ids = hf.encode(probe.as_str(), false).unwrap().get_ids().to_vec();
            assert_eq!(hf_ids, tok.encode(&probe), "{kind:?}");
            let reloaded = Tokenizer::load(&path).unwrap();
            assert_eq!(reloaded.kind(), kind);
            assert_eq!(reloaded.encode(&probe), hf_ids);
            assert_eq!(reloaded.merges(), tok.merges());
            assert_eq!(
                (0..vocab as u32)
                    .map(|i| reloaded.token_bytes(i))
                    .collect::<Vec<_>>(),
                tok.token_bytes
            );
            // Without special tokens HF decodes the same text (char: <unk> → "<unk>" there).
            let no_unk: Vec<u32> = hf_ids
                .iter()
                .copied()
                .filter(|&id| id > 1 || kind == TokenizerKind::Bpe && id > 0)
                .collect();
            assert_eq!(
                hf.decode(&no_unk, true).unwrap(),
                tok.decode(&no_unk),
                "{kind:?}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bpe_training_is_deterministic() {
        let text = sample();
        let a = Tokenizer::train(TokenizerKind::Bpe, 300, &text).unwrap();
        let b = Tokenizer::train(TokenizerKind::Bpe, 300, &text).unwrap();
        assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
    }
}
