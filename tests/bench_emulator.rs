//! `starmind bench --emulator`: a real run of the committed firmware in rp2040js with the host
//! bit-exactness check, and the failure paths (missing node or rp2040js, cycle limit, a firmware
//! that faults, a missing model).
//!
//! Needs `npm ci --prefix scripts/emulator`. Without it the emulator runs are skipped with a
//! message, unless STARMIND_REQUIRE_EMULATOR=1 (CI sets it), which turns the skip into a failure.

mod bench_common;
use bench_common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

use starmind_engine::run_config::{Mode, RunConfig, CONFIG_ADDR, FLASH_BASE, MODEL_ADDR};
use starmind_engine::SamplerConfig;

/// The committed firmware image, as the CLI embeds it.
const FIRMWARE: &[u8] = starmind::flash::FIRMWARE_IMAGE;

fn emulator_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/emulator")
}

/// `starmind bench <model> --emulator --check --json -n <tokens> <more>` in `dir`: its JSON,
/// once it succeeded and found the emulator's tokens the host engine's.
fn checked_bench(dir: &Path, model: &Path, tokens: &str, more: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "bench",
        model.to_str().unwrap(),
        "--emulator",
        "--check",
        "--json",
        "-n",
        tokens,
    ];
    args.extend_from_slice(more);
    let output = run_in(dir, &args);
    let name = model.display();
    assert!(output.status.success(), "{name}: {}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["bit_exact"], true, "{name}: {json}");
    json
}

#[test]
fn emulator_bench_is_bit_exact_with_the_host_engine() {
    if !emulator_available() {
        return;
    }
    let dir = scratch("bench_emulator_check");
    let model = tiny_model(&dir);
    let json = checked_bench(&dir, &model, "24", &[]);
    assert_eq!(json["tokens"], 24);
    assert_eq!(json["clock_hz"], 125_000_000);
    for key in [
        "decode_tok_per_s",
        "decode_cycles_per_token",
        "prefill_cycles_per_token",
        "peak_ram_bytes",
        "model_flash_bytes",
    ] {
        assert!(
            json[key].as_f64().is_some_and(|v| v > 0.0),
            "{key} in {json}"
        );
    }
    assert_eq!(
        json["model_flash_bytes"].as_u64().unwrap(),
        std::fs::metadata(&model).unwrap().len()
    );
    assert_eq!(json["ids"].as_array().unwrap().len(), 24);
    assert!(json["caveats"].as_array().is_some_and(|c| !c.is_empty()));
    // The bench-split run (the forward pass cut for two cores, drawing the same ids) gives the
    // dual-core estimate: faster than one core, and labelled an estimate.
    let dual = json["dual_core_estimate_tok_per_s"].as_f64().unwrap();
    assert!(dual > json["decode_tok_per_s"].as_f64().unwrap(), "{json}");
    assert_eq!(json["dual_core_estimate"]["estimate"], true);
    assert!(
        json["dual_core_estimate"]["joins_per_token"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

/// A model too large for SRAM stays in flash; where flash is slow (the XIP cache model) the
/// firmware streams its weights by DMA through two SRAM buffers, and the tokens stay the host
/// engine's; with rp2040js's zero-wait flash it finds flash fast and does not stream.
#[test]
fn a_flash_model_is_streamed_where_flash_is_slow_and_stays_bit_exact() {
    if !emulator_available() {
        return;
    }
    let dir = scratch("bench_emulator_stream");
    let model = dir.join("big.smb");
    // 8 layers of 64 × 172: ~330 KB, more than the RAM.
    std::fs::write(&model, model_file(96, 64, 172, 8, 4, 64)).unwrap();
    let json = checked_bench(&dir, &model, "6", &["--xip-miss-cycles", "56"]);
    assert_eq!(json["model_in_sram"], false, "{json}");
    assert_eq!(json["stream_buffer_bytes"], 0, "zero-wait flash: {json}");
    assert!(
        json["xip_stream_buffer_bytes"]
            .as_u64()
            .is_some_and(|b| b > 0),
        "{json}"
    );
    // Every layer matrix past the lead (and the classifier) came through the DMA: at least
    // half the weights of each token.
    let dma_reads = json["xip_dma_reads"].as_u64().unwrap();
    let weight_words = json["weight_bytes_per_token"].as_u64().unwrap() / 4;
    assert!(dma_reads > weight_words / 2 * 6, "{dma_reads} {json}");
}

#[test]
fn greedy_text_report_has_the_numbers() {
    if !emulator_available() {
        return;
    }
    let dir = scratch("bench_emulator_text");
    let model = tiny_model(&dir);
    let output = run_in(
        &dir,
        &[
            "bench",
            model.to_str().unwrap(),
            "--emulator",
            "--check",
            "-n",
            "8",
            "--temperature",
            "0",
            "--profile",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "tok/s",
        "cycles/token at 125000000 Hz",
        "bit-exact vs host engine: true",
        "XIP bound",
        "one core only",
        "where the cycles go",
        "rescale_rows_pow2_thumb", // every int8 matrix-vector product ends there
        "dual-core ESTIMATE (not measured)",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn missing_rp2040js_names_the_fix() {
    let dir = scratch("bench_no_rp2040js");
    let model = tiny_model(&dir);
    let output = starmind()
        .args(["bench", model.to_str().unwrap(), "--emulator"])
        .env("STARMIND_EMULATOR_DIR", &dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("npm ci --prefix scripts/emulator"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn missing_node_names_the_fix() {
    if !emulator_dir()
        .join("node_modules/rp2040js/package.json")
        .is_file()
    {
        return;
    }
    let dir = scratch("bench_no_node");
    let model = tiny_model(&dir);
    let output = starmind()
        .args(["bench", model.to_str().unwrap(), "--emulator"])
        .env("STARMIND_NODE", dir.join("no-such-node"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("install Node.js"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn cycle_limit_is_an_error() {
    if !emulator_available() {
        return;
    }
    let dir = scratch("bench_cycle_limit");
    let model = tiny_model(&dir);
    let output = run_in(
        &dir,
        &[
            "bench",
            model.to_str().unwrap(),
            "--emulator",
            "--max-cycles",
            "100000",
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cycle limit"),
        "{}",
        stderr(&output)
    );
}

/// Runs the node driver directly on a firmware image and extra flash contents.
fn drive(dir: &Path, firmware: &[u8], loads: &[(u32, &[u8])]) -> std::process::Output {
    let fw = dir.join("fw.bin");
    std::fs::write(&fw, firmware).unwrap();
    let mut command = Command::new("node");
    command
        .arg(emulator_dir().join("run.mjs"))
        .arg("--firmware")
        .arg(&fw)
        .args(["--max-cycles", "50000000"]);
    for (i, (offset, bytes)) in loads.iter().enumerate() {
        let file = dir.join(format!("load{i}.bin"));
        std::fs::write(&file, bytes).unwrap();
        command
            .arg("--load")
            .arg(format!("{offset:#x}:{}", file.display()));
    }
    command.output().unwrap()
}

#[test]
fn a_jump_out_of_the_firmware_is_a_fault() {
    if !emulator_available() {
        return;
    }
    let dir = scratch("bench_fault");
    // Reset vector into the (absent) bootrom: what a ROM float routine call does in rp2040js.
    let mut firmware = FIRMWARE.to_vec();
    firmware[260..264].copy_from_slice(&0x0000_0101u32.to_le_bytes());
    let output = drive(&dir, &firmware, &[]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("left the firmware"), "{err}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("STARMIND-EMULATOR status=fault"));
}

#[test]
fn the_firmware_reports_a_missing_or_corrupt_model_and_waits() {
    if !emulator_available() {
        return;
    }
    let dir = scratch("bench_no_model");
    // No config block at all.
    let output = drive(&dir, FIRMWARE, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.contains("STARMIND-ERROR config: no config block"),
        "{stdout}"
    );

    // A config block, but the model is corrupt: the engine's typed error, no fault.
    let mut model = model_file(64, 16, 32, 1, 2, 64);
    model[100] ^= 1;
    let sampler = SamplerConfig {
        seed: 1,
        ..SamplerConfig::GREEDY
    };
    let config = RunConfig::new(Mode::Bench, b"x", 4, sampler, model.len() as u32)
        .unwrap()
        .encode();
    let flash_offset = |addr: u32| addr - FLASH_BASE;
    let loads = [
        (flash_offset(CONFIG_ADDR), &config[..]),
        (flash_offset(MODEL_ADDR), &model[..]),
    ];
    let output = drive(&dir, FIRMWARE, &loads);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.contains("STARMIND-ERROR model at 0x10040000: checksum mismatch"),
        "{stdout}"
    );
}

#[test]
fn explicit_head_sizes_are_bit_exact_on_the_emulated_board() {
    if !emulator_available() {
        return;
    }
    // Attentions narrower (3 heads of 2 on 8 dims: story-1k-fibonacci) and wider (32 heads of 1
    // on 16 dims: story-heads-32) than dim, with wo projecting back.
    let dir = scratch("bench_emulator_head_size");
    for (dim, heads, head_size) in [(8, 3, 2), (16, 32, 1)] {
        let shape = starmind::config::ModelConfig {
            vocab_size: 48,
            dim,
            hidden_dim: 32,
            n_layers: 2,
            n_heads: heads,
            n_kv_heads: heads,
            head_size: Some(head_size),
            seq_len: 64,
            ffn: starmind::config::Ffn::Plain,
            tied_embeddings: true,
            tokenizer: starmind::config::TokenizerKind::Char,
        };
        let bytes = starmind::bench::synthetic::model_file(&shape, 7).unwrap();
        let config = starmind_engine::Model::parse(&bytes).unwrap().config();
        assert_eq!(
            (config.head_size, config.q_dim()),
            (Some(head_size), heads * head_size)
        );
        let model = dir.join(format!("heads-{heads}x{head_size}.smb"));
        std::fs::write(&model, bytes).unwrap();
        checked_bench(&dir, &model, "16", &[]);
    }
}

#[test]
fn trained_int4_model_is_bit_exact_on_the_emulated_board() {
    if !emulator_available() {
        return;
    }
    // tests/golden: story-1k trained 2000 steps (char tokenizer), int4 weights: the matvec_i4 path.
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/story-1k-int4.smb");
    let dir = scratch("bench_emulator_golden");
    checked_bench(&dir, &model, "16", &[]);
}

#[test]
fn trained_int8_model_of_either_format_version_is_bit_exact_on_the_emulated_board() {
    if !emulator_available() {
        return;
    }
    // tests/golden: story-1k.smb (version 3: every matrix in row quads, matvec_i8_x4) and
    // story-1k-v1.smb (the same model as version 1 wrote it: row-major, matvec_i8).
    let dir = scratch("bench_emulator_versions");
    let mut ids = Vec::new();
    for name in ["story-1k.smb", "story-1k-v1.smb"] {
        let model = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        let json = checked_bench(&dir, &model, "16", &[]);
        ids.push(json["ids"].clone());
    }
    assert_eq!(
        ids[0], ids[1],
        "the two versions generated different tokens"
    );
}

#[test]
fn interactive_mode_answers_a_prompt_typed_over_uart() {
    if !emulator_available() {
        return;
    }
    let dir = scratch("bench_interactive");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/story-1k.smb");
    let output = run_in(
        &dir,
        &[
            "flash",
            model.to_str().unwrap(),
            "--mode",
            "interactive",
            "-n",
            "20",
            "--uf2",
            "i.uf2",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let output = Command::new("node")
        .arg(emulator_dir().join("run.mjs"))
        .arg("--uf2")
        .arg(dir.join("i.uf2"))
        .args(["--max-cycles", "40000000", "--input", "The cat\r"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    // It runs until the cycle limit, waiting for the next prompt: exit 3 is expected here.
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("prompt> The cat"), "{stdout}");
    assert_eq!(
        stdout.matches("prompt> ").count(),
        2,
        "one answer, then the next prompt:\n{stdout}"
    );
}

/// The XIP cache model's hit/miss accounting (scripts/emulator/xip-cache.test.mjs, node's test
/// runner): sequential sweeps, LRU eviction, thrashing, the uncached aliases.
#[test]
fn xip_cache_model_counts_hits_and_misses() {
    if !emulator_available() {
        return;
    }
    let output = Command::new("node")
        .arg("--test")
        .arg(emulator_dir().join("xip-cache.test.mjs"))
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", stderr(&output));
    assert!(stdout.contains("# fail 0"), "{stdout}");
    assert!(!stdout.contains("# pass 0"), "{stdout}");
}
