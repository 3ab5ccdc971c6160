//! Corpus loading (local files or a Hugging Face dataset), the train/validation split, and the
//! seeded random batch sampler.
//!
//! Text is used verbatim: newlines are ordinary characters and the `<|endoftext|>` marker becomes
//! token 0, so both "one story per line" and `<|endoftext|>`-separated files work unchanged.
//!
//! Split (fixed, documented in datasets/README.md): with `--valid <file>` (or a hub dataset that
//! has a validation file) that file is the validation split and all of `--data` trains; otherwise
//! the last [`HELD_OUT_PERCENT`] % of the training text, starting at a line boundary, is held out.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Default `--data`: the TinyStories dataset on the Hugging Face hub.
pub const DEFAULT_DATASET: &str = "roneneldan/TinyStories";
/// Share of the training text held out for validation when no validation file is given.
pub const HELD_OUT_PERCENT: usize = 5;

/// Training and validation text.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub train: String,
    pub valid: String,
    /// Where the two came from, for logs and metrics.
    pub description: String,
}

/// Files a hub dataset provides: (train file, validation file).
fn hub_files(dataset: &str) -> Option<(&'static str, &'static str)> {
    match dataset {
        "roneneldan/TinyStories" => Some(("TinyStories-train.txt", "TinyStories-valid.txt")),
        _ => None,
    }
}

/// Loads `--data` sources (local files, or hub datasets `owner/name` / `owner/name:file.txt`) and
/// `--valid`, and splits them.
pub fn load_corpus(data: &[String], valid: Option<&Path>) -> Result<Corpus> {
    let sources: Vec<String> = if data.is_empty() {
        vec![DEFAULT_DATASET.to_string()]
    } else {
        data.to_vec()
    };
    let mut train = String::new();
    let mut hub_valid: Option<PathBuf> = None;
    let mut names = Vec::new();
    for source in &sources {
        let path = Path::new(source);
        let file = if path.exists() {
            path.to_path_buf()
        } else if looks_like_dataset_id(source) {
            let (train_file, valid_file) = fetch_dataset(source)?;
            if hub_valid.is_none() {
                hub_valid = valid_file;
            }
            train_file
        } else {
            bail!("--data {source}: no such file, and not a Hugging Face dataset id (owner/name)");
        };
        append_text(&mut train, &file)?;
        names.push(file.display().to_string());
    }
    let valid_path = valid.map(Path::to_path_buf).or(hub_valid);
    let (train, valid, split) = match valid_path {
        Some(path) => {
            let mut valid = String::new();
            append_text(&mut valid, &path)?;
            let split = format!("validation file {}", path.display());
            (train, valid, split)
        }
        None => {
            let (train_part, valid_part) = split_tail(&train, HELD_OUT_PERCENT);
            let split = format!("last {HELD_OUT_PERCENT}% of the training text held out");
            (train_part.to_string(), valid_part.to_string(), split)
        }
    };
    if train.is_empty() || valid.is_empty() {
        bail!(
            "empty corpus: {} train bytes, {} validation bytes ({split})",
            train.len(),
            valid.len()
        );
    }
    Ok(Corpus {
        train,
        valid,
        description: format!("train {}; {split}", names.join(" + ")),
    })
}

/// Appends a UTF-8 file, keeping a newline between files.
fn append_text(out: &mut String, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&text);
    Ok(())
}

/// `owner/name` or `owner/name:file`: the shape of a hub dataset id.
fn looks_like_dataset_id(source: &str) -> bool {
    let id = source.split(':').next().unwrap_or_default();
    let mut parts = id.split('/');
    let (Some(owner), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    ok(owner) && ok(name) && !source.starts_with('.')
}

/// Train file (and validation file, if the dataset has one) of a hub dataset, from the hf-hub
/// cache (`$HF_HOME/hub`) or downloaded into it. Honours `HF_HUB_OFFLINE` and `HF_ENDPOINT`.
fn fetch_dataset(source: &str) -> Result<(PathBuf, Option<PathBuf>)> {
    let (id, file) = match source.split_once(':') {
        Some((id, file)) => (id, Some(file)),
        None => (source, None),
    };
    let (train_file, valid_file) = match (file, hub_files(id)) {
        (Some(file), _) => (file.to_string(), None),
        (None, Some((train, valid))) => (train.to_string(), Some(valid.to_string())),
        (None, None) => bail!("dataset {id}: name the file to use, e.g. --data {id}:train.txt"),
    };
    let get = |filename: &str| fetch_file(id, filename);
    let train = get(&train_file)?;
    let valid = valid_file.as_deref().map(get).transpose()?;
    Ok((train, valid))
}

fn fetch_file(id: &str, filename: &str) -> Result<PathBuf> {
    let cache = hf_hub::Cache::from_env();
    if let Some(path) = cache.dataset(id.to_string()).get(filename) {
        return Ok(path);
    }
    let offline = std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| !v.is_empty() && v != "0" && v.to_lowercase() != "false");
    if offline {
        bail!(
            "the Hugging Face hub is unreachable (HF_HUB_OFFLINE is set) and {id}/{filename} is not in the cache {}: \
             pass --data <file> with a local copy of the text (e.g. --data ../shared/datasets/tinystories/train.txt)",
            cache.path().display()
        );
    }
    eprintln!(
        "fetching {filename} of dataset {id} from the Hugging Face hub into {}",
        cache.path().display()
    );
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .build()
        .context("setting up the Hugging Face hub client")?;
    api.dataset(id.to_string())
        .get(filename)
        .with_context(|| {
            format!(
                "could not fetch {id}/{filename}: the Hugging Face hub is unreachable; pass --data \
                 <file> with a local copy of the text (e.g. --data ../shared/datasets/tinystories/train.txt)"
            )
        })
}

/// Splits off the last `percent` % of `text`, moved forward to the next line start.
pub fn split_tail(text: &str, percent: usize) -> (&str, &str) {
    let mut cut = text.len() - text.len() * percent / 100;
    while cut < text.len() && !text.is_char_boundary(cut) {
        cut += 1;
    }
    let cut = text[cut..].find('\n').map_or(cut, |i| cut + i + 1);
    text.split_at(cut)
}

/// Cuts `text` to its first `max_bytes` bytes, at a character boundary.
pub fn truncate_bytes(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut cut = max_bytes;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// A small, seedable, serializable random generator (SplitMix64): the training run's only source
/// of randomness, so that a seed and a saved state reproduce a run bit for bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The full state (to save with a checkpoint).
    pub fn state(&self) -> u64 {
        self.state
    }

    pub fn from_state(state: u64) -> Self {
        Rng { state }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// `batch` random windows of `seq_len + 1` tokens from `tokens`: inputs and next-token targets,
/// each `batch·seq_len` ids, row-major.
pub fn sample_batch(
    tokens: &[u32],
    batch: usize,
    seq_len: usize,
    rng: &mut Rng,
) -> (Vec<u32>, Vec<u32>) {
    let span = tokens.len().saturating_sub(seq_len + 1) + 1;
    let mut inputs = Vec::with_capacity(batch * seq_len);
    let mut targets = Vec::with_capacity(batch * seq_len);
    for _ in 0..batch {
        let start = rng.below(span);
        inputs.extend_from_slice(&tokens[start..start + seq_len]);
        targets.extend_from_slice(&tokens[start + 1..start + seq_len + 1]);
    }
    (inputs, targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_split_is_at_a_line_start() {
        let text = "aaaa\nbbbb\ncccc\ndddd\n".repeat(10);
        let (train, valid) = split_tail(&text, 5);
        assert_eq!(train.len() + valid.len(), text.len());
        assert!(train.ends_with('\n'));
        assert!(!valid.is_empty() && valid.len() <= text.len() / 20 + 1);
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate_bytes("aé", 2), "a");
        assert_eq!(truncate_bytes("aé", 3), "aé");
    }

    #[test]
    fn rng_is_reproducible_and_roughly_normal() {
        let mut a = Rng::new(3);
        let mut b = Rng::from_state(Rng::new(3).state());
        let xs: Vec<f64> = (0..20000).map(|_| a.normal()).collect();
        assert_eq!(xs[..5], (0..5).map(|_| b.normal()).collect::<Vec<_>>()[..]);
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        assert!((0..1000).all(|_| a.below(7) < 7));
    }

    #[test]
    fn dataset_ids_and_paths() {
        assert!(looks_like_dataset_id("roneneldan/TinyStories"));
        assert!(looks_like_dataset_id(
            "roneneldan/TinyStories:TinyStories-valid.txt"
        ));
        assert!(!looks_like_dataset_id(
            "../shared/datasets/tinystories/train.txt"
        ));
        assert!(!looks_like_dataset_id("train.txt"));
    }

    #[test]
    fn batches_are_windows_with_shifted_targets() {
        let tokens: Vec<u32> = (0..100).collect();
        let (x, y) = sample_batch(&tokens, 4, 10, &mut Rng::new(1));
        assert_eq!(x.len(), 40);
        for (a, b) in x.iter().zip(&y) {
            assert_eq!(a + 1, *b);
        }
    }
}
