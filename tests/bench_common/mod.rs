//! Shared by the flash, UF2, bench and chat end-to-end tests: the CLI binary, small model files,
//! whether the emulator can run.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use starmind::bench::synthetic;
use starmind::config::{Ffn, ModelConfig, TokenizerKind};

/// The `starmind` binary under test.
pub fn starmind() -> Command {
    Command::new(env!("CARGO_BIN_EXE_starmind"))
}

/// Runs `starmind` with `args` in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    starmind()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running starmind")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A fresh empty directory under the target dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A model file with PRNG weights (the library's synthetic bench model): char vocabulary of
/// `vocab` tokens (id 0 `<|endoftext|>`, id 1 `<unk>`, then printable characters), tied
/// embeddings, plain FFN, int8.
pub fn model_file(
    vocab: usize,
    dim: usize,
    hidden: usize,
    layers: usize,
    heads: usize,
    seq_len: usize,
) -> Vec<u8> {
    let shape = ModelConfig {
        vocab_size: vocab,
        dim,
        hidden_dim: hidden,
        n_layers: layers,
        n_heads: heads,
        n_kv_heads: heads,
        seq_len,
        ffn: Ffn::Plain,
        tied_embeddings: true,
        tokenizer: TokenizerKind::Char,
        head_size: None,
    };
    synthetic::model_file(&shape, 0x2545_F491_4F6C_DD1D).expect("writing the test model")
}

/// The tiny model the tests flash and bench: 64 tokens, dim 16, one layer.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.smb");
    std::fs::write(&path, model_file(64, 16, 32, 1, 2, 64)).unwrap();
    path
}

/// True when node and rp2040js are installed; otherwise the caller skips its emulator run, or
/// fails under CI's STARMIND_REQUIRE_EMULATOR=1.
pub fn emulator_available() -> bool {
    let installed = starmind::emulator::available();
    if !installed {
        assert!(
            std::env::var_os("STARMIND_REQUIRE_EMULATOR").is_none(),
            "STARMIND_REQUIRE_EMULATOR is set but node or scripts/emulator/node_modules is missing \
             (run `npm ci --prefix scripts/emulator`)"
        );
        eprintln!("skipped: no node or rp2040js (run `npm ci --prefix scripts/emulator`)");
    }
    installed
}

/// A UF2 file decoded independently of src/uf2.rs: (target address, 256 payload bytes) per block,
/// after checking magics, flags, family id, payload size and numbering.
pub fn decode_uf2(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
    assert!(bytes.len().is_multiple_of(512));
    let total = bytes.len() / 512;
    bytes
        .chunks_exact(512)
        .enumerate()
        .map(|(i, block)| {
            let word = |at: usize| u32::from_le_bytes(block[at..at + 4].try_into().unwrap());
            assert_eq!(word(0), 0x0A32_4655, "block {i} magic 0");
            assert_eq!(word(4), 0x9E5D_5157, "block {i} magic 1");
            assert_eq!(word(508), 0x0AB1_6F30, "block {i} end magic");
            assert_eq!(word(8), 0x0000_2000, "block {i} flags: family id present");
            assert_eq!(word(16), 256, "block {i} payload size");
            assert_eq!(word(20), i as u32, "block {i} number");
            assert_eq!(word(24), total as u32, "block {i} count");
            assert_eq!(word(28), 0xE48B_FF56, "block {i} family: RP2040");
            (word(12), block[32..32 + 256].to_vec())
        })
        .collect()
}
