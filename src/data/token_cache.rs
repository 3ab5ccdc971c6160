//! The token cache: training text tokenized once, in parallel, and kept next to the checkpoint's
//! tokenizer as `<dir>/tokens-<role>-<key>.bin`, memory-mapped when a later run reuses it.
//!
//! The key is a SHA-256 over the format version, the tokenizer's serialized `tokenizer.json` and
//! the text's bytes, so a change of either (or of the format) misses the cache. The file is
//! checked before use — magic, version, key, length and a SHA-256 of the ids — and a truncated,
//! corrupt or foreign file is tokenized again and replaced, never trusted.
//!
//! File layout (little-endian):
//!
//! | offset | bytes | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `SMTOKEN\0` |
//! | 8 | 4 | format version ([`FORMAT_VERSION`]) |
//! | 12 | 4 | reserved, 0 |
//! | 16 | 8 | token count `n` |
//! | 24 | 32 | key: SHA-256 of version, tokenizer.json and text ([`cache_key`]) |
//! | 56 | 32 | SHA-256 of the `4·n` id bytes |
//! | 88 | 8 | reserved, 0 |
//! | 96 | 4·n | the ids, `u32` each |
//!
//! The header is a multiple of 4 bytes, so the ids of a mapped file are aligned `u32`s.

use crate::config::TokenizerKind;
use crate::tokenizer::{Tokenizer, END_OF_TEXT};
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Bumped whenever the layout or the ids an encoder produces change: older files then miss.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"SMTOKEN\0";
const HEADER_BYTES: usize = 96;
/// Text per unit of parallel work (cut at the next story boundary after this many bytes).
const PART_BYTES: usize = 1 << 20;

/// Token ids of a text: owned (just tokenized) or mapped from the cache file.
pub struct TokenIds {
    storage: Storage,
}

enum Storage {
    Owned(Vec<u32>),
    /// A checked cache file; the ids start at [`HEADER_BYTES`], `count` of them, aligned.
    Mapped {
        map: memmap2::Mmap,
        count: usize,
    },
}

impl TokenIds {
    /// The ids, in text order.
    pub fn ids(&self) -> &[u32] {
        match &self.storage {
            Storage::Owned(ids) => ids,
            Storage::Mapped { map, count } => as_u32s(&map[HEADER_BYTES..HEADER_BYTES + 4 * count])
                .expect("alignment checked when the file was mapped"),
        }
    }

    /// Whether the ids come from a cache file written by an earlier run.
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped { .. })
    }
}

/// What [`load_or_tokenize`] needs: the text, its tokenizer, where the cache lives.
pub struct Request<'a> {
    /// Directory of the cache file (the checkpoint directory, beside `tokenizer.json`).
    pub dir: &'a Path,
    /// The split's name in the file name (`train`).
    pub role: &'a str,
    pub text: &'a str,
    pub tokenizer: &'a Tokenizer,
    /// Threads to tokenize on.
    pub threads: usize,
    /// Show a progress bar (on a terminal, and not under `--json`).
    pub progress: bool,
}

/// The ids of `request.text`: from its cache file when that is present and intact, otherwise
/// tokenized ([`encode_parallel`]) and written to the cache (a failed write only costs the
/// next run the tokenization: it is said, and training goes on). One line on stderr says which.
pub fn load_or_tokenize(request: &Request) -> Result<TokenIds> {
    let Ok(tokenizer_json) = request.tokenizer.to_json() else {
        // A model without a tokenizer file has nothing to key a cache on (or to encode with).
        return Ok(TokenIds {
            storage: Storage::Owned(request.tokenizer.encode(request.text)),
        });
    };
    let key = cache_key(tokenizer_json.as_bytes(), request.text.as_bytes());
    let path = cache_path(request.dir, request.role, &key);
    if cfg!(target_endian = "little") && path.exists() {
        match open(&path, &key) {
            Ok(tokens) => {
                eprintln!(
                    "token cache: reused {} ({} tokens)",
                    path.display(),
                    tokens.ids().len()
                );
                return Ok(tokens);
            }
            Err(reason) => eprintln!(
                "token cache: {}: {reason:#}; tokenizing again",
                path.display()
            ),
        }
    }
    let t0 = Instant::now();
    let ids = encode_parallel(
        request.tokenizer,
        request.text,
        request.threads,
        request.progress,
    );
    let took = t0.elapsed().as_secs_f64();
    let cached = if cfg!(target_endian = "little") {
        match write(&path, &key, &ids) {
            Ok(()) => {
                remove_other_files(request.dir, request.role, &path);
                format!("cached in {}", path.display())
            }
            Err(err) => format!("not cached ({err:#})"),
        }
    } else {
        "not cached (the cache format is little-endian)".to_string()
    };
    eprintln!(
        "tokenized {} {} bytes into {} tokens in {took:.1} s on {} thread{}; {cached}",
        request.text.len(),
        request.role,
        ids.len(),
        request.threads.max(1),
        if request.threads > 1 { "s" } else { "" },
    );
    Ok(TokenIds {
        storage: Storage::Owned(ids),
    })
}

/// SHA-256 of the format version, the tokenizer's serialized bytes and the text, each length-
/// prefixed so that no two different (tokenizer, text) pairs hash the same bytes.
pub fn cache_key(tokenizer_json: &[u8], text: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"starmind token cache");
    hasher.update(FORMAT_VERSION.to_le_bytes());
    for part in [tokenizer_json, text] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Whether `name` is a file [`cache_path`] names (train's own, not a user's).
pub fn is_cache_file(name: &str) -> bool {
    name.starts_with("tokens-") && name.ends_with(".bin")
}

/// `<dir>/tokens-<role>-<first 16 hex digits of the key>.bin`.
pub fn cache_path(dir: &Path, role: &str, key: &[u8; 32]) -> PathBuf {
    let hex: String = key[..8].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("tokens-{role}-{hex}.bin"))
}

/// The ids of `text`, tokenized in parts on `threads` threads and put back in order. Parts are
/// cut every [`PART_BYTES`] or so where every encoder of that kind would cut the text anyway
/// ([`story_parts`]), so the result equals one `tokenizer.encode(text)` for any number of threads
/// and parts.
pub fn encode_parallel(
    tokenizer: &Tokenizer,
    text: &str,
    threads: usize,
    progress: bool,
) -> Vec<u32> {
    let at_lines = matches!(tokenizer.kind(), TokenizerKind::Char | TokenizerKind::Bpe);
    let parts = story_parts(text, PART_BYTES, at_lines);
    encode_in_parts(tokenizer, &parts, threads, progress)
}

fn encode_in_parts(
    tokenizer: &Tokenizer,
    parts: &[&str],
    threads: usize,
    progress: bool,
) -> Vec<u32> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let bar = (progress && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} tokenizing {bytes}/{total_bytes} ETA {eta}",
            )
            .expect("valid template"),
        );
        bar
    });
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Vec<u32>>> = parts.iter().map(|_| Mutex::new(Vec::new())).collect();
    let work = || {
        // Each worker takes the next untaken part; results land in their part's slot, so the
        // order of the output does not depend on which thread did what.
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(part) = parts.get(i) else { break };
            let ids = tokenizer.encode(part);
            *results[i].lock().expect("no worker panics holding a slot") = ids;
            if let Some(bar) = &bar {
                bar.inc(part.len() as u64);
            }
        }
    };
    let threads = threads.clamp(1, parts.len().max(1));
    if threads == 1 {
        work();
    } else {
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(work);
            }
        });
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let mut ids = Vec::with_capacity(
        results
            .iter()
            .map(|r| r.lock().map_or(0, |r| r.len()))
            .sum(),
    );
    for slot in results {
        ids.extend(slot.into_inner().expect("no worker panics holding a slot"));
    }
    ids
}

/// `text` cut into consecutive pieces of at least `target` bytes, each (but the last) ending at
/// the first story boundary after that:
/// - right after an `<|endoftext|>` marker: every kind encodes the text between markers on its
///   own (a SentencePiece-style tokenizer prepends its `▁` there, so it is cut only there);
/// - with `at_lines` (char and byte-level BPE), also before a newline that follows a printable
///   ASCII character — the paragraph ends of text without markers. A char tokenizer maps each
///   character on its own, and GPT-2's split pattern always splits there (the cut
///   `Tokenizer::encode` itself makes for its parallel BPE chunks), so a part never changes how
///   its neighbour encodes.
fn story_parts(text: &str, target: usize, at_lines: bool) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = text.len();
        for i in (start + target.max(1))..text.len() {
            if at_lines && bytes[i] == b'\n' && bytes[i - 1].is_ascii_graphic() {
                end = i;
                break;
            }
            if bytes[i..].starts_with(END_OF_TEXT.as_bytes()) {
                end = i + END_OF_TEXT.len();
                break;
            }
        }
        parts.push(&text[start..end]);
        start = end;
    }
    parts
}

/// A cache file checked against `key`: any mismatch is an error saying what is wrong.
fn open(path: &Path, key: &[u8; 32]) -> Result<TokenIds> {
    let file = std::fs::File::open(path).context("opening")?;
    let len = file.metadata().context("reading its size")?.len() as usize;
    if len < HEADER_BYTES {
        anyhow::bail!("truncated ({len} bytes, shorter than the {HEADER_BYTES}-byte header)");
    }
    // SAFETY: the mapping is read-only, and starmind never changes a cache file in place — it
    // writes a temp file and renames it over the old one, so a mapped file's bytes stay put.
    // (Another program truncating the file while it is mapped would fault the reader.)
    let map = unsafe { memmap2::Mmap::map(&file) }.context("memory-mapping")?;
    let header = &map[..HEADER_BYTES];
    if &header[..8] != MAGIC {
        anyhow::bail!("not a starmind token cache (bad magic)");
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        anyhow::bail!("format version {version}, this starmind writes {FORMAT_VERSION}");
    }
    if &header[24..56] != key {
        anyhow::bail!("made from other text or another tokenizer (key mismatch)");
    }
    let count = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    let expected = (count as u128) * 4 + HEADER_BYTES as u128;
    if expected != len as u128 {
        anyhow::bail!("truncated or padded: {len} bytes, {expected} expected for {count} tokens");
    }
    let count = count as usize;
    let payload = &map[HEADER_BYTES..];
    let digest: [u8; 32] = Sha256::digest(payload).into();
    if header[56..88] != digest {
        anyhow::bail!("checksum mismatch (the ids are corrupt)");
    }
    if as_u32s(payload).is_none() {
        anyhow::bail!("the mapped ids are not 4-byte aligned");
    }
    Ok(TokenIds {
        storage: Storage::Mapped { map, count },
    })
}

/// Writes the cache file atomically (temp file in the same directory, fsync, rename), streaming
/// the ids rather than building the whole file in memory.
fn write(path: &Path, key: &[u8; 32], ids: &[u32]) -> Result<()> {
    let mut digest = Sha256::new();
    for chunk in ids.chunks(1 << 16) {
        digest.update(le_bytes(chunk));
    }
    let mut header = [0u8; HEADER_BYTES];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&(ids.len() as u64).to_le_bytes());
    header[24..56].copy_from_slice(key);
    header[56..88].copy_from_slice(&digest.finalize());
    crate::fsio::remove_stale_temp_files(path.parent().unwrap_or(Path::new(".")));
    let tmp = crate::fsio::temp_path(path)?;
    let written = (|| -> Result<()> {
        let file =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut out = std::io::BufWriter::new(file);
        out.write_all(&header)?;
        for chunk in ids.chunks(1 << 16) {
            out.write_all(&le_bytes(chunk))?;
        }
        out.into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Removes the directory's other cache files of `role` (made from earlier text or tokenizers):
/// a checkpoint directory keeps one per split.
fn remove_other_files(dir: &Path, role: &str, keep: &Path) {
    let prefix = format!("tokens-{role}-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".bin") && entry.path() != keep {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn le_bytes(ids: &[u32]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_le_bytes()).collect()
}

/// `bytes` as `u32`s when they are 4-byte aligned and a whole number of them.
fn as_u32s(bytes: &[u8]) -> Option<&[u32]> {
    // SAFETY: every bit pattern is a valid u32; align_to only reinterprets the aligned middle.
    let (head, ids, tail) = unsafe { bytes.align_to::<u32>() };
    (head.is_empty() && tail.is_empty()).then_some(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 120 KB of valid.txt (paragraphs, no markers) and 120 KB of the bundled sample (stories
    /// between `<|endoftext|>` lines).
    fn text() -> String {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/tinystories/valid.txt");
        let valid = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let sample = crate::data::load_corpus(&[crate::data::SAMPLE_SOURCE.to_string()], None)
            .unwrap()
            .train;
        let cut = |t: &str| crate::data::truncate_bytes(t, 120_000).to_string();
        cut(&valid) + &cut(&sample)
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("starmind-token-cache-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A small SentencePiece-style tokenizer (llama2.c's shape: `▁` prepended to every story,
    /// byte fallback, a few merges), whose per-story prefix is what cutting must not disturb.
    fn sentencepiece() -> Tokenizer {
        let mut names: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
        names.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        names.extend(
            "▁ a b c d e f g h i j k l m n o p q r s t u v w x y z ▁t th ▁th he ▁the"
                .split(' ')
                .map(String::from),
        );
        let vocab: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .enumerate()
            .map(|(id, n)| (n.clone(), id.into()))
            .collect();
        let added: Vec<serde_json::Value> = [1, 2]
            .map(|id| {
                serde_json::json!({"id": id, "content": names[id], "single_word": false,
                    "lstrip": false, "rstrip": false, "normalized": false, "special": true})
            })
            .to_vec();
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
            "pre_tokenizer": null, "post_processor": null, "decoder": null,
            "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab,
                "merges": [["▁", "t"], ["t", "h"], ["▁", "th"], ["h", "e"], ["▁th", "e"]]}
        });
        let tokenizer = Tokenizer::from_json(&json.to_string()).unwrap();
        assert_eq!(tokenizer.kind(), TokenizerKind::Sentencepiece);
        tokenizer
    }

    #[test]
    fn parts_end_at_story_boundaries_and_cover_the_text() {
        let text = "a<|endoftext|>bb<|endoftext|>\ncc<|endoftext|>d".repeat(3);
        let parts = story_parts(&text, 4, false);
        assert_eq!(parts.concat(), text);
        assert!(parts.len() > 3);
        for part in &parts[..parts.len() - 1] {
            assert!(part.ends_with(END_OF_TEXT), "{part:?}");
        }
        assert_eq!(
            story_parts("no markers.\nhere", 2, false),
            vec!["no markers.\nhere"]
        );
        assert_eq!(
            story_parts("no markers.\nhere", 2, true),
            vec!["no markers.", "\nhere"]
        );
        // Not after a space or another newline (GPT-2's pattern joins whitespace runs).
        assert_eq!(story_parts("ab \n\ncd", 1, true), vec!["ab \n\ncd"]);
        assert!(story_parts("", 4, true).is_empty());
        // Multi-byte characters at the target offset.
        let text = "ééé<|endoftext|>ééé.\né";
        assert_eq!(story_parts(text, 1, true).concat(), text);
        assert_eq!(story_parts(text, 1, false).concat(), text);
    }

    #[test]
    fn parallel_tokenization_equals_serial_for_every_kind() {
        let text = text();
        assert!(
            text.matches(END_OF_TEXT).count() > 20 && text[..100_000].find(END_OF_TEXT).is_none()
        );
        let mut tokenizers = vec![
            Tokenizer::train(TokenizerKind::Char, 48, &text).unwrap(),
            Tokenizer::train(TokenizerKind::Bpe, 300, &text).unwrap(),
        ];
        tokenizers.push(sentencepiece());
        for tokenizer in &tokenizers {
            let serial = tokenizer.encode(&text);
            let at_lines = tokenizer.kind() != TokenizerKind::Sentencepiece;
            for (target, threads) in [(1, 2), (5_000, 2), (5_000, 1), (37_000, 3)] {
                let parts = story_parts(&text, target, at_lines);
                let parallel = encode_in_parts(tokenizer, &parts, threads, false);
                assert!(
                    parallel == serial,
                    "{:?}: {} parts on {threads} threads differ from one serial encode",
                    tokenizer.kind(),
                    parts.len()
                );
            }
            assert_eq!(encode_parallel(tokenizer, &text, 2, false), serial);
        }
    }

    #[test]
    fn a_cache_file_round_trips_and_every_damage_is_detected() {
        let dir = scratch("damage");
        let ids: Vec<u32> = (0..1000).map(|i| i * 7 % 301).collect();
        let key = cache_key(b"tokenizer", b"text");
        let path = cache_path(&dir, "train", &key);
        write(&path, &key, &ids).unwrap();
        let tokens = open(&path, &key).unwrap();
        assert!(tokens.is_mapped());
        assert_eq!(tokens.ids(), &ids[..]);
        let good = std::fs::read(&path).unwrap();

        let other_key = cache_key(b"tokenizer", b"text2");
        let err = open(&path, &other_key).err().unwrap();
        assert!(format!("{err:#}").contains("key mismatch"), "{err:#}");

        let damaged: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", good[..good.len() - 3].to_vec()),
            ("truncated", good[..40].to_vec()),
            ("truncated", Vec::new()),
            ("bad magic", [b"XX".as_slice(), &good[2..]].concat()),
            ("checksum mismatch", {
                let mut bytes = good.clone();
                bytes[HEADER_BYTES + 100] ^= 1;
                bytes
            }),
            ("format version", {
                let mut bytes = good.clone();
                bytes[8] = 99;
                bytes
            }),
            ("padded", [good.as_slice(), &[0, 0, 0, 0]].concat()),
        ];
        for (what, bytes) in damaged {
            std::fs::write(&path, &bytes).unwrap();
            let err = open(&path, &key)
                .err()
                .unwrap_or_else(|| panic!("{what}: accepted"));
            assert!(format!("{err:#}").contains(what), "{what}: {err:#}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_key_follows_text_and_tokenizer() {
        let a = cache_key(b"tok", b"text");
        assert_eq!(a, cache_key(b"tok", b"text"));
        assert_ne!(a, cache_key(b"tok", b"texT"));
        assert_ne!(a, cache_key(b"tok2", b"text"));
        // Length prefixes: moving bytes from one part to the other changes the key.
        assert_ne!(cache_key(b"ab", b"c"), cache_key(b"a", b"bc"));
    }
}
