//! Corpus loading (local files or a Hugging Face dataset), the train/validation split, and the
//! seeded random batch sampler.
//!
//! Text is used verbatim: newlines are ordinary characters and the `<|endoftext|>` marker becomes
//! token 0, so both "one story per line" and `<|endoftext|>`-separated files work unchanged.
//!
//! Split (fixed, documented in datasets/README.md): with `--valid <file>` (or a hub dataset that
//! has a validation file) that file is the validation split and all of `--data` trains; otherwise
//! the last [`HELD_OUT_PERCENT`] % of the training text, starting at a line boundary, is held out.
//!
//! [`token_cache`]: the training text's token ids, tokenized once in parallel and memory-mapped
//! from the checkpoint directory on later runs.

use crate::hub::HubFile;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub mod token_cache;

/// Default `--data`: the TinyStories dataset on the Hugging Face hub (a documented slice of it,
/// [`HUB_PREFIX_BYTES`]), and when the hub cannot be reached the bundled sample.
pub const DEFAULT_DATASET: &str = "roneneldan/TinyStories";
/// Share of the training text held out for validation when no validation file is given.
pub const HELD_OUT_PERCENT: usize = 5;
/// `--data` name of the sample of TinyStories bundled with starmind
/// (`datasets/tinystories-sample`, embedded in the binary): 600 KB of training and 133 KB of
/// validation stories, enough for the small configs and available with no network.
pub const SAMPLE_SOURCE: &str = "sample:tinystories";
/// Bytes fetched of the default dataset's (train, validation) files: the first 16 MiB of the
/// 1.9 GB `TinyStories-train.txt` and the first 1 MiB of `TinyStories-valid.txt`, each cut
/// after its last whole story. `--data roneneldan/TinyStories:TinyStories-train.txt` fetches a
/// whole file.
pub const HUB_PREFIX_BYTES: (u64, u64) = (16 << 20, 1 << 20);

const SAMPLE_TRAIN_GZ: &[u8] = include_bytes!("../datasets/tinystories-sample/train.txt.gz");
const SAMPLE_VALID_GZ: &[u8] = include_bytes!("../datasets/tinystories-sample/valid.txt.gz");

/// Training and validation text.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub train: String,
    pub valid: String,
    /// Where the two came from, for logs and metrics.
    pub description: String,
    /// The `--data` sources this corpus was read from (the default resolved: the hub dataset
    /// or [`SAMPLE_SOURCE`]), to record with a checkpoint.
    pub sources: Vec<String>,
}

/// Files a hub dataset provides: (train file, validation file).
fn hub_files(dataset: &str) -> Option<(&'static str, &'static str)> {
    match dataset {
        "roneneldan/TinyStories" => Some(("TinyStories-train.txt", "TinyStories-valid.txt")),
        _ => None,
    }
}

/// Loads `--data` sources (local files, hub datasets `owner/name` / `owner/name:file.txt`, or
/// [`SAMPLE_SOURCE`]) and `--valid`, and splits them. With no sources: [`DEFAULT_DATASET`],
/// and the bundled sample when the hub cannot be reached (said in one line).
pub fn load_corpus(data: &[String], valid: Option<&Path>) -> Result<Corpus> {
    if data.is_empty() {
        let hub = load_sources(&[DEFAULT_DATASET.to_string()], valid);
        return match hub {
            Ok(corpus) => Ok(corpus),
            Err(err) if valid.is_none() => {
                // One line: why (the hub's own error, without the "could not fetch" wrapper
                // and its advice), then what happens instead.
                eprintln!(
                    "{}: training on the bundled TinyStories sample instead ({SAMPLE_SOURCE}); pass --data <file> for your own text",
                    err.root_cause()
                );
                load_sources(&[SAMPLE_SOURCE.to_string()], None)
            }
            Err(err) => Err(err),
        };
    }
    load_sources(data, valid)
}

fn load_sources(sources: &[String], valid: Option<&Path>) -> Result<Corpus> {
    check_distinct(sources, valid)?;
    let mut train = String::new();
    let mut own_valid: Option<(String, String)> = None;
    let mut names = Vec::new();
    for source in sources {
        let path = Path::new(source);
        if source == SAMPLE_SOURCE {
            append(&mut train, gunzip(SAMPLE_TRAIN_GZ)?);
            if own_valid.is_none() {
                own_valid = Some((
                    gunzip(SAMPLE_VALID_GZ)?,
                    format!("{SAMPLE_SOURCE} (validation)"),
                ));
            }
            names.push(format!("{SAMPLE_SOURCE} (bundled)"));
        } else if path.exists() {
            append(&mut train, read_text(path)?);
            names.push(path.display().to_string());
        } else if looks_like_dataset_id(source) {
            let (train_file, valid_file, prefix) = fetch_dataset(source)?;
            let mut text = read_text(&train_file)?;
            if prefix {
                cut_after_last_story(&mut text);
            }
            append(&mut train, text);
            if own_valid.is_none() {
                if let Some(file) = valid_file {
                    let mut text = read_text(&file)?;
                    if prefix {
                        cut_after_last_story(&mut text);
                    }
                    own_valid = Some((text, file.display().to_string()));
                }
            }
            names.push(train_file.display().to_string());
        } else {
            bail!("--data {source}: no such file, and not a Hugging Face dataset id (owner/name)");
        }
    }
    let own_valid = match valid {
        Some(path) => Some((read_text(path)?, path.display().to_string())),
        None => own_valid,
    };
    let (train, valid, split) = match own_valid {
        Some((valid, name)) => (train, valid, format!("validation file {name}")),
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
        sources: sources.to_vec(),
    })
}

/// Refuses the same file given twice (as `--data` twice, or as `--data` and `--valid`): the
/// text would count double, and the held-out tail of one copy would sit inside the other, so
/// validation would score text the model trained on.
fn check_distinct(sources: &[String], valid: Option<&Path>) -> Result<()> {
    let mut seen: Vec<(&str, PathBuf)> = Vec::new();
    for source in sources {
        let key = match Path::new(source).canonicalize() {
            Ok(canonical) => canonical,
            Err(_) => PathBuf::from(source), // a hub id or the sample: compared by name
        };
        if let Some((first, _)) = seen.iter().find(|(_, k)| *k == key) {
            bail!(
                "--data {source} and --data {first} are the same text: give each file once (validation would overlap training)"
            );
        }
        seen.push((source, key));
    }
    if let Some(valid) = valid {
        if let Some((first, _)) = seen
            .iter()
            .find(|(s, _)| crate::fsio::same_file(Path::new(s), valid))
        {
            bail!(
                "--valid {} is also --data {first}: the validation text must not be training text",
                valid.display()
            );
        }
    }
    Ok(())
}

/// Drops a partial story at the end of a file prefix: everything after the last
/// `<|endoftext|>` marker (the hub's files separate stories with it).
fn cut_after_last_story(text: &mut String) {
    const END: &str = crate::tokenizer::END_OF_TEXT;
    if let Some(i) = text.rfind(END) {
        text.truncate(i + END.len());
        text.push('\n');
    }
}

fn gunzip(bytes: &[u8]) -> Result<String> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(bytes), &mut text)
        .context("decompressing the bundled sample")?;
    Ok(text)
}

/// A UTF-8 text file (a regular file that fits the available memory; a device or pipe is
/// refused before anything is read).
fn read_text(path: &Path) -> Result<String> {
    let limit = crate::budget::available_memory_bytes().unwrap_or(u64::MAX) / 2;
    let bytes = crate::budget::read_bounded(path, limit)?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

/// Appends `text`, keeping a newline between sources.
fn append(out: &mut String, text: String) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&text);
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

/// Train file, validation file (if the dataset has one) and whether they are prefixes
/// ([`HUB_PREFIX_BYTES`]) of a hub dataset, from the hf-hub cache (`$HF_HOME/hub`) or
/// downloaded into it ([`crate::hub`]). Honours `HF_HUB_OFFLINE` and `HF_ENDPOINT`.
fn fetch_dataset(source: &str) -> Result<(PathBuf, Option<PathBuf>, bool)> {
    let (id, file) = match source.split_once(':') {
        Some((id, file)) => (id, Some(file)),
        None => (source, None),
    };
    let hint = "pass --data <file> with a local copy of the text (e.g. --data stories.txt)";
    let get = |file: HubFile| {
        file.get()
            .map_err(anyhow::Error::new)
            .with_context(|| format!("could not fetch {}: {hint}", file.describe()))
    };
    match (file, hub_files(id)) {
        (Some(file), _) => Ok((get(HubFile::dataset(id, file))?, None, false)),
        (None, Some((train, valid))) => {
            let (train_bytes, valid_bytes) = HUB_PREFIX_BYTES;
            let train = get(HubFile::dataset(id, train).prefix(train_bytes))?;
            let valid = get(HubFile::dataset(id, valid).prefix(valid_bytes))?;
            Ok((train, Some(valid), true))
        }
        (None, None) => bail!("dataset {id}: name the file to use, e.g. --data {id}:train.txt"),
    }
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

/// The order training reads its windows in: epochs of shuffled, non-overlapping windows.
///
/// Each epoch cuts the tokens into windows of `seq_len + 1` tokens (inputs and next-token
/// targets; neighbours share one token) starting at a random phase in `0..seq_len`, so the cut
/// points move between epochs, and visits them in a random order (Fisher–Yates): every window
/// of an epoch once before any repeats. Epoch `e`'s phase and order come from `seed` and `e`
/// alone, so the order is known from the number of windows drawn ([`WindowOrder::resume`]), which
/// is all a checkpoint keeps.
pub struct WindowOrder {
    seed: u64,
    tokens: usize,
    seq_len: usize,
    epoch: u64,
    /// Window starts of this epoch, in visiting order.
    starts: Vec<usize>,
    next: usize,
    drawn: u64,
}

impl WindowOrder {
    /// The order from the first window of epoch 0 (`tokens ≥ seq_len + 1`).
    pub fn new(tokens: usize, seq_len: usize, seed: u64) -> WindowOrder {
        let mut order = WindowOrder {
            seed,
            tokens,
            seq_len: seq_len.max(1),
            epoch: 0,
            starts: Vec::new(),
            next: 0,
            drawn: 0,
        };
        order.shuffle();
        order
    }

    /// The order after `drawn` windows, exactly as if they had been drawn.
    pub fn resume(tokens: usize, seq_len: usize, seed: u64, drawn: u64) -> WindowOrder {
        let mut order = WindowOrder::new(tokens, seq_len, seed);
        let mut left = drawn;
        while left >= order.starts.len() as u64 {
            left -= order.starts.len() as u64;
            order.drawn += order.starts.len() as u64;
            order.epoch += 1;
            order.shuffle();
        }
        order.next = left as usize;
        order.drawn += left;
        order
    }

    /// Lays out and shuffles the windows of `self.epoch`.
    fn shuffle(&mut self) {
        let mut rng = Rng::new(self.seed ^ (self.epoch + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let window = self.seq_len + 1;
        let mut phase = rng.below(self.seq_len);
        if self.tokens < phase + window {
            phase = 0;
        }
        let count = (self.tokens.saturating_sub(phase + 1) / self.seq_len).max(1);
        self.starts = (0..count).map(|i| phase + i * self.seq_len).collect();
        for i in (1..count).rev() {
            let j = rng.below(i + 1);
            self.starts.swap(i, j);
        }
        self.next = 0;
    }

    /// The start of the next window.
    pub fn next_start(&mut self) -> usize {
        if self.next == self.starts.len() {
            self.epoch += 1;
            self.shuffle();
        }
        self.next += 1;
        self.drawn += 1;
        self.starts[self.next - 1]
    }

    /// Windows drawn so far (what a checkpoint stores).
    pub fn drawn(&self) -> u64 {
        self.drawn
    }

    /// Passes over the training tokens so far: whole epochs plus the fraction of this one.
    pub fn epochs(&self) -> f64 {
        self.epoch as f64 + self.next as f64 / self.starts.len().max(1) as f64
    }
}

/// The next `batch` windows of `order` from `tokens`: inputs and next-token targets, each
/// `batch·seq_len` ids, row-major.
pub fn next_batch(
    tokens: &[u32],
    batch: usize,
    seq_len: usize,
    order: &mut WindowOrder,
) -> (Vec<u32>, Vec<u32>) {
    let mut inputs = Vec::with_capacity(batch * seq_len);
    let mut targets = Vec::with_capacity(batch * seq_len);
    for _ in 0..batch {
        let start = order.next_start();
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
    fn the_bundled_sample_is_the_documented_text() {
        // Sizes and story counts as datasets/README.md states them.
        let train = gunzip(SAMPLE_TRAIN_GZ).unwrap();
        let valid = gunzip(SAMPLE_VALID_GZ).unwrap();
        assert_eq!((train.len(), valid.len()), (611_290, 135_336));
        let end = crate::tokenizer::END_OF_TEXT;
        assert_eq!(
            (train.matches(end).count(), valid.matches(end).count()),
            (829, 178)
        );
        assert!(SAMPLE_TRAIN_GZ.len() + SAMPLE_VALID_GZ.len() <= 1 << 20);
        let corpus = load_corpus(&[SAMPLE_SOURCE.to_string()], None).unwrap();
        assert_eq!((corpus.train, corpus.valid), (train, valid));
    }

    #[test]
    fn a_prefix_ends_after_its_last_whole_story() {
        let mut text = "one.\n<|endoftext|>\ntwo.\n<|endoftext|>\nthree is cu".to_string();
        cut_after_last_story(&mut text);
        assert_eq!(text, "one.\n<|endoftext|>\ntwo.\n<|endoftext|>\n");
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
        let (x, y) = next_batch(&tokens, 4, 10, &mut WindowOrder::new(100, 10, 1));
        assert_eq!(x.len(), 40);
        for (a, b) in x.iter().zip(&y) {
            assert_eq!(a + 1, *b);
        }
    }

    /// Each epoch visits each of its windows once, non-overlapping (neighbours share one
    /// token), inside the tokens; the phase and the order change between epochs.
    #[test]
    fn an_epoch_visits_every_window_once_and_the_next_one_cuts_and_orders_them_anew() {
        let (tokens, seq_len) = (10_007, 64);
        let mut order = WindowOrder::new(tokens, seq_len, 42);
        let mut epochs: Vec<Vec<usize>> = Vec::new();
        for _ in 0..3 {
            // The first draw of an epoch lays it out; only then is its window count known.
            let first = order.next_start();
            let count = order.starts.len();
            let starts: Vec<usize> = std::iter::once(first)
                .chain((1..count).map(|_| order.next_start()))
                .collect();
            let mut sorted = starts.clone();
            sorted.sort_unstable();
            let phase = sorted[0];
            assert!(phase < seq_len);
            for (i, &s) in sorted.iter().enumerate() {
                assert_eq!(s, phase + i * seq_len, "windows at a stride of seq_len");
            }
            assert!(sorted[count - 1] + seq_len < tokens, "last window inside");
            assert!(
                sorted[count - 1] + 2 * seq_len + 1 > tokens,
                "no window left out"
            );
            assert_ne!(starts, sorted, "shuffled");
            epochs.push(starts);
        }
        assert!(epochs[0] != epochs[1] && epochs[1] != epochs[2]);
        assert!((order.epochs() - 3.0).abs() < 1e-12, "{}", order.epochs());
        assert_eq!(
            order.drawn(),
            epochs.iter().map(|e| e.len() as u64).sum::<u64>()
        );
    }

    /// Resuming from the count of drawn windows continues the very same sequence, across an
    /// epoch boundary too; another seed gives another order.
    #[test]
    fn the_order_resumes_from_the_number_of_windows_drawn() {
        let (tokens, seq_len) = (5_000, 32);
        let mut straight = WindowOrder::new(tokens, seq_len, 7);
        let all: Vec<usize> = (0..500).map(|_| straight.next_start()).collect();
        for cut in [0, 1, 155, 156, 157, 300] {
            let mut resumed = WindowOrder::resume(tokens, seq_len, 7, cut as u64);
            assert_eq!(resumed.drawn(), cut as u64);
            let rest: Vec<usize> = (cut..500).map(|_| resumed.next_start()).collect();
            assert_eq!(rest, all[cut..], "resumed at {cut}");
        }
        let mut other = WindowOrder::new(tokens, seq_len, 8);
        let other: Vec<usize> = (0..500).map(|_| other.next_start()).collect();
        assert_ne!(other, all);
    }

    /// Text of just one window (or a little more) still gives a valid window every time.
    #[test]
    fn a_text_of_one_window_repeats_it() {
        for tokens in [33, 34, 40] {
            let mut order = WindowOrder::new(tokens, 32, 3);
            for _ in 0..20 {
                let s = order.next_start();
                assert!(s + 33 <= tokens, "{tokens}: start {s}");
            }
        }
    }
}
