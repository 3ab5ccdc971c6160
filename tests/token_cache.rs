//! End-to-end tests of the token cache through `starmind train`: written on the first run,
//! reused on the next, missed when the text or the tokenizer changes, rebuilt when damaged, and
//! the trained weights identical either way.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_starmind"))
}

/// A fresh scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("starmind-test-cache-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The first `bytes` of a dataset file, cut at a line end, written as `name`.
fn slice(s: &Scratch, file: &str, bytes: usize, name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/datasets/tinystories")
        .join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (the dataset sits beside the repo)", path.display()));
    let end = text[..bytes].rfind('\n').unwrap() + 1;
    let out = s.path(name);
    std::fs::write(&out, &text[..end]).unwrap();
    out
}

/// A tiny char-tokenizer config with vocabulary `vocab`, a few steps.
fn config(s: &Scratch, vocab: usize) -> PathBuf {
    let json = format!(
        r#"{{"name": "tiny", "model": {{"vocab_size": {vocab}, "dim": 8, "hidden_dim": 16, "n_layers": 1, "n_heads": 2,
        "n_kv_heads": 1, "seq_len": 32, "ffn": "swiglu", "tied_embeddings": false, "tokenizer": "char"}},
        "train": {{"steps": 6, "batch_size": 4, "learning_rate": 0.01, "warmup_steps": 2, "eval_every": 3,
        "eval_sequences": 4, "checkpoint_every": 3, "seed": 5}}}}"#
    );
    let path = s.path(&format!("tiny-{vocab}.json"));
    std::fs::write(&path, json).unwrap();
    path
}

/// `starmind train` of `config` on `data` into `out`.
fn train_command(config: &Path, data: &Path, valid: &Path, out: &Path) -> Command {
    let mut command = bin();
    command
        .arg("train")
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .arg("--valid")
        .arg(valid)
        .arg("--out")
        .arg(out);
    command
}

/// `starmind train --force` into `out`; its stderr.
fn train(config: &Path, data: &Path, valid: &Path, out: &Path) -> String {
    let output: Output = train_command(config, data, valid, out)
        .arg("--force")
        .output()
        .expect("running starmind");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "starmind train failed:\n{stderr}\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

/// The directory's token cache files.
fn cache_files(out: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("tokens-train-") && name.ends_with(".bin")
        })
        .collect();
    files.sort();
    files
}

fn only_cache_file(out: &Path) -> PathBuf {
    let files = cache_files(out);
    assert_eq!(files.len(), 1, "expected one cache file: {files:?}");
    files.into_iter().next().unwrap()
}

fn weights(out: &Path) -> Vec<u8> {
    std::fs::read(out.join("model.safetensors")).unwrap()
}

#[test]
fn the_cache_is_written_reused_invalidated_and_rebuilt_and_never_changes_training() {
    let s = Scratch::new("life");
    let data = slice(&s, "train.txt", 60_000, "train.txt");
    let valid = slice(&s, "valid.txt", 5_000, "valid.txt");
    let tiny = config(&s, 40);
    let out = s.path("run");

    // First run: tokenized and written.
    let log = train(&tiny, &data, &valid, &out);
    assert!(
        log.contains("tokenized ") && log.contains("cached in"),
        "{log}"
    );
    let file = only_cache_file(&out);
    let first_weights = weights(&out);
    let first_bytes = std::fs::read(&file).unwrap();
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();

    // Second run (same text, same tokenizer): reused, the file untouched, the weights identical.
    let log = train(&tiny, &data, &valid, &out);
    assert!(log.contains("token cache: reused"), "{log}");
    assert!(!log.contains("tokenized "), "{log}");
    assert_eq!(only_cache_file(&out), file);
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), mtime);
    assert!(
        weights(&out) == first_weights,
        "training from the cache differs"
    );

    // A truncated file, then a corrupt one: detected, tokenized again, replaced, same weights.
    std::fs::write(&file, &first_bytes[..first_bytes.len() - 6]).unwrap();
    let log = train(&tiny, &data, &valid, &out);
    assert!(
        log.contains("truncated") && log.contains("tokenizing again"),
        "{log}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), first_bytes);
    assert!(weights(&out) == first_weights);
    let mut corrupt = first_bytes.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x40;
    std::fs::write(&file, &corrupt).unwrap();
    let log = train(&tiny, &data, &valid, &out);
    assert!(log.contains("checksum mismatch"), "{log}");
    assert_eq!(std::fs::read(&file).unwrap(), first_bytes);
    assert!(weights(&out) == first_weights);

    // Other text: a new key, tokenized again; the old file is removed (one per split).
    let other = slice(&s, "train.txt", 61_000, "train-more.txt");
    let log = train(&tiny, &other, &valid, &out);
    assert!(
        log.contains("cached in") && !log.contains("reused"),
        "{log}"
    );
    let other_file = only_cache_file(&out);
    assert_ne!(other_file, file);

    // Another tokenizer (a smaller vocabulary) over the same text: missed too.
    let smaller = config(&s, 30);
    let log = train(&smaller, &other, &valid, &out);
    assert!(
        log.contains("cached in") && !log.contains("reused"),
        "{log}"
    );
    assert_ne!(only_cache_file(&out), other_file);
}

#[test]
fn resume_reuses_the_cache_and_stays_bit_for_bit() {
    let s = Scratch::new("resume");
    let data = slice(&s, "train.txt", 40_000, "train.txt");
    let valid = slice(&s, "valid.txt", 5_000, "valid.txt");
    let tiny = config(&s, 40);
    let (whole, halves) = (s.path("whole"), s.path("halves"));
    train(&tiny, &data, &valid, &whole);
    let output = bin()
        .arg("train")
        .arg("--config")
        .arg(&tiny)
        .arg("--data")
        .arg(&data)
        .arg("--valid")
        .arg(&valid)
        .arg("--out")
        .arg(&halves)
        .args(["--stop-after", "3"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let output = bin()
        .arg("train")
        .arg("--resume")
        .arg("--out")
        .arg(&halves)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("token cache: reused"), "{log}");
    assert!(weights(&whole) == weights(&halves));
}

#[test]
fn a_folder_holding_only_a_token_cache_is_trained_into_without_force() {
    let s = Scratch::new("cache-only");
    let data = slice(&s, "train.txt", 60_000, "train.txt");
    let valid = slice(&s, "valid.txt", 5_000, "valid.txt");
    let tiny = config(&s, 40);
    let out = s.path("run");
    train(&tiny, &data, &valid, &out);
    let file = only_cache_file(&out);
    // What a run stopped before its first checkpoint leaves: the cache alone.
    for entry in std::fs::read_dir(&out).unwrap().flatten() {
        if entry.path() != file {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    let output = train_command(&tiny, &data, &valid, &out).output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("token cache: reused"), "{log}");
    assert!(out.join("model.safetensors").exists());
}
