//! Prompt bytes → token ids on the device, giving the same ids as the host tokenizer
//! (`src/tokenizer.rs`, Hugging Face `tokenizers`):
//!
//! - `<|endoftext|>` in the text is always the end-of-text id (a special token, matched first);
//! - char: each character is its own token, `<unk>` when it is not in the vocabulary;
//! - byte-level BPE: GPT-2 pre-tokenisation (the `ByteLevel` regex, written out as a hand-made
//!   scanner over `char` classes), then per piece: bytes → byte tokens, and repeatedly merge the
//!   adjacent pair with the lowest merge rank (leftmost on ties) until none applies;
//! - none: the model runs on token ids; only the empty text encodes (to no ids), anything else
//!   is refused with [`EngineError::NoTokenizer`].
//!
//! Decoding is [`Model::token_bytes`]: concatenate the pieces.

use crate::format::{Merge, Model, TokenizerKind, MERGE_BYTES};
use crate::forward::EngineError;

const END_OF_TEXT: &[u8] = b"<|endoftext|>";

impl<'a> Model<'a> {
    /// Encodes `text` into `out`, returning how many ids were written. Invalid UTF-8 bytes become
    /// `<unk>` (char) or their byte tokens (BPE). A model without a tokenizer encodes only the
    /// empty text.
    pub fn encode(&self, text: &[u8], out: &mut [u32]) -> Result<usize, EngineError> {
        if self.config().tokenizer == TokenizerKind::None {
            return if text.is_empty() {
                Ok(0)
            } else {
                Err(EngineError::NoTokenizer)
            };
        }
        let mut n = 0;
        let mut rest = text;
        loop {
            let cut = find(rest, END_OF_TEXT);
            let (segment, after) = match cut {
                Some(i) => (&rest[..i], Some(&rest[i + END_OF_TEXT.len()..])),
                None => (rest, None),
            };
            n = self.encode_segment(segment, out, n)?;
            match after {
                Some(after) => {
                    *out.get_mut(n).ok_or(EngineError::BufferTooSmall)? = self.config().eot_id;
                    n += 1;
                    rest = after;
                }
                None => return Ok(n),
            }
        }
    }

    fn encode_segment(
        &self,
        text: &[u8],
        out: &mut [u32],
        mut n: usize,
    ) -> Result<usize, EngineError> {
        match self.config().tokenizer {
            TokenizerKind::Char => {
                for chunk in text.utf8_chunks() {
                    for c in chunk.valid().chars() {
                        let mut buf = [0u8; 4];
                        let id = self.char_id(c.encode_utf8(&mut buf).as_bytes());
                        push(out, &mut n, id)?;
                    }
                    for _ in chunk.invalid() {
                        push(out, &mut n, self.config().unk_id)?;
                    }
                }
            }
            TokenizerKind::Bpe => {
                for chunk in text.utf8_chunks() {
                    let mut s = chunk.valid();
                    while !s.is_empty() {
                        let len = pretoken_len(s);
                        let (piece, tail) = s.split_at(len);
                        n = self.encode_bpe_piece(piece.as_bytes(), out, n)?;
                        s = tail;
                    }
                    if !chunk.invalid().is_empty() {
                        n = self.encode_bpe_piece(chunk.invalid(), out, n)?;
                    }
                }
            }
            TokenizerKind::None => return Err(EngineError::NoTokenizer),
        }
        Ok(n)
    }

    /// The char tokenizer's id of one character (given as its UTF-8 bytes).
    fn char_id(&self, utf8: &[u8]) -> u32 {
        let c = self.config();
        (0..c.vocab_size as u32)
            .filter(|&id| id != c.eot_id && id != c.unk_id)
            .find(|&id| self.token_bytes(id) == utf8)
            .unwrap_or(c.unk_id)
    }

    /// Byte tokens of `piece`, then merges by rank, written at `out[n..]`.
    fn encode_bpe_piece(
        &self,
        piece: &[u8],
        out: &mut [u32],
        n: usize,
    ) -> Result<usize, EngineError> {
        let end = n
            .checked_add(piece.len())
            .filter(|&e| e <= out.len())
            .ok_or(EngineError::BufferTooSmall)?;
        let ids = &mut out[n..end];
        let byte_tokens = self.byte_tokens();
        for (id, &b) in ids.iter_mut().zip(piece) {
            let at = b as usize * 2;
            *id = byte_tokens
                .get(at..at + 2)
                .map_or(0, |t| u16::from_le_bytes([t[0], t[1]]) as u32);
        }
        let mut len = ids.len();
        loop {
            // The adjacent pair with the lowest rank (leftmost on ties).
            let mut best: Option<(u16, usize, u32)> = None;
            for i in 0..len.saturating_sub(1) {
                if let Some((rank, merged)) = self.find_merge(ids[i], ids[i + 1]) {
                    if best.is_none_or(|(r, _, _)| rank < r) {
                        best = Some((rank, i, merged));
                    }
                }
            }
            let Some((_, i, merged)) = best else { break };
            ids[i] = merged;
            ids.copy_within(i + 2..len, i + 1);
            len -= 1;
        }
        Ok(n + len)
    }

    /// `(rank, merged)` of the merge `left right`, by binary search over the sorted table.
    fn find_merge(&self, left: u32, right: u32) -> Option<(u16, u32)> {
        let merges = self.merges();
        let key = (left, right);
        let (mut lo, mut hi) = (0usize, merges.len() / MERGE_BYTES);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let m = Merge::from_le_bytes(merges.get(mid * MERGE_BYTES..(mid + 1) * MERGE_BYTES)?);
            match (m.left as u32, m.right as u32).cmp(&key) {
                core::cmp::Ordering::Less => lo = mid + 1,
                core::cmp::Ordering::Greater => hi = mid,
                core::cmp::Ordering::Equal => return Some((m.rank, m.merged as u32)),
            }
        }
        None
    }
}

fn push(out: &mut [u32], n: &mut usize, id: u32) -> Result<(), EngineError> {
    *out.get_mut(*n).ok_or(EngineError::BufferTooSmall)? = id;
    *n += 1;
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(PartialEq, Clone, Copy)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class(c: char) -> Class {
    if c.is_whitespace() {
        Class::Space
    } else if c.is_alphabetic() {
        Class::Letter
    } else if c.is_numeric() {
        Class::Number
    } else {
        Class::Other
    }
}

/// Byte length of the first GPT-2 pre-token of `s` (non-empty), i.e. the first match of
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
pub fn pretoken_len(s: &str) -> usize {
    for contraction in ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"] {
        if s.starts_with(contraction) {
            return contraction.len();
        }
    }
    let mut chars = s.char_indices();
    let Some((_, first)) = chars.next() else {
        return 0;
    };
    let run_end = |from: usize, cls: Class| -> usize {
        s[from..]
            .char_indices()
            .find(|&(_, c)| class(c) != cls)
            .map_or(s.len(), |(i, _)| from + i)
    };
    // ` ?X+` for X in letters, numbers, other: an optional single space, then a run.
    let (start, cls) = match (first, chars.next()) {
        (' ', Some((i, next))) if class(next) != Class::Space => (i, class(next)),
        _ => (0, class(first)),
    };
    if cls != Class::Space {
        return run_end(start, cls);
    }
    // Whitespace: the run, minus its last character when a non-space follows (`\s+(?!\S)`),
    // unless the run is a single character (`\s+`).
    let end = run_end(0, Class::Space);
    if end == s.len() {
        return end;
    }
    let last_start = s[..end].char_indices().last().map_or(0, |(i, _)| i);
    if last_start == 0 {
        end
    } else {
        last_start
    }
}

#[cfg(test)]
mod tests {
    use super::pretoken_len;

    fn split(mut s: &str) -> std::vec::Vec<&str> {
        let mut v = std::vec::Vec::new();
        while !s.is_empty() {
            let n = pretoken_len(s);
            v.push(&s[..n]);
            s = &s[n..];
        }
        v
    }

    #[test]
    fn gpt2_split() {
        extern crate std;
        assert_eq!(
            split("Hello world's  end!!\n\nOk 123 x"),
            ["Hello", " world", "'s", " ", " end", "!!", "\n", "\n", "Ok", " 123", " x"]
        );
        assert_eq!(split("a  \n b"), ["a", "  \n", " b"]);
        assert_eq!(split("  "), ["  "]);
    }
}
