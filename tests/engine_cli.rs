//! End-to-end tests of `starmind export`, `generate` and `eval <file.smb>` through the real
//! binary, on the checked-in golden model file and a briefly trained checkpoint.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_starmind"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn scratch(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("starmind-engine-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("starting starmind")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn generate_greedy_matches_the_pinned_golden_output() {
    let out = run(bin()
        .args([
            "generate",
            "tests/golden/story-1k.smb",
            "--prompt",
            "Once upon a time",
            "-n",
            "48",
        ])
        .args(["--temperature", "0"])
        .current_dir(repo(".")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = std::fs::read_to_string(repo("tests/golden/story-1k.expected.txt")).unwrap();
    let greedy_line = expected
        .lines()
        .find(|l| l.starts_with("greedy text "))
        .unwrap();
    let greedy: String =
        serde_json::from_str(greedy_line.trim_start_matches("greedy text ")).unwrap();
    assert_eq!(text(&out.stdout), format!("Once upon a time{greedy}\n"));
}

#[test]
fn generate_is_reproducible_with_a_seed() {
    let gen = |seed: &str| {
        let out = run(bin()
            .args([
                "generate",
                "tests/golden/story-1k.smb",
                "-n",
                "40",
                "--seed",
                seed,
            ])
            .current_dir(repo(".")));
        assert!(out.status.success(), "{}", text(&out.stderr));
        out.stdout
    };
    assert_eq!(gen("5"), gen("5"));
    assert_ne!(gen("5"), gen("6"));
}

#[test]
fn bad_model_files_fail_with_a_clear_message() {
    let dir = scratch("bad");
    let mut bytes = std::fs::read(repo("tests/golden/story-1k.smb")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let corrupt = dir.join("corrupt.smb");
    std::fs::write(&corrupt, &bytes).unwrap();
    let truncated = dir.join("truncated.smb");
    std::fs::write(&truncated, &bytes[..100]).unwrap();
    let cases = [
        (corrupt.clone(), "checksum mismatch"),
        (truncated.clone(), "truncated"),
        (dir.join("missing.smb"), "reading model file"),
    ];
    for (file, message) in cases {
        let out = run(bin().arg("generate").arg(&file).args(["-n", "5"]));
        let stderr = text(&out.stderr);
        assert!(
            !out.status.success(),
            "generate accepted {}",
            file.display()
        );
        assert!(
            stderr.contains("reading model file") && stderr.contains(message),
            "{stderr}"
        );
    }
    let out = run(bin()
        .arg("eval")
        .arg(&corrupt)
        .args(["--data", "../shared/datasets/tinystories/train.txt"])
        .args([
            "--valid",
            "../shared/datasets/tinystories/valid.txt",
            "--max-bytes",
            "1000",
        ])
        .current_dir(repo(".")));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("checksum mismatch"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn eval_of_a_model_file_prints_the_checkpoint_keys() {
    let out = run(bin()
        .args([
            "eval",
            "tests/golden/story-1k.smb",
            "--json",
            "--max-bytes",
            "20000",
        ])
        .args([
            "--data",
            "../shared/datasets/tinystories/train.txt",
            "--valid",
            "../shared/datasets/tinystories/valid.txt",
        ])
        .current_dir(repo(".")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "val_loss",
        "val_bpb",
        "unigram_bpb",
        "bigram_bpb",
        "tokens",
        "bytes",
        "unk_tokens",
    ] {
        assert!(report.get(key).is_some(), "missing {key}: {report}");
    }
    let bpb = report["val_bpb"].as_f64().unwrap();
    assert!((2.5..4.0).contains(&bpb), "story-1k val_bpb {bpb}");
}

#[test]
fn export_writes_a_model_that_runs_and_refuses_what_does_not_fit() {
    let dir = scratch("export");
    let ckpt = dir.join("ckpt");
    let out = run(bin()
        .args([
            "train",
            "--config",
            "story-1k",
            "--steps",
            "20",
            "--threads",
            "1",
        ])
        .args([
            "--data",
            "../shared/datasets/tinystories/valid.txt",
            "--out",
        ])
        .arg(&ckpt)
        .current_dir(repo(".")));
    assert!(out.status.success(), "train: {}", text(&out.stderr));
    for quant in ["int8", "int4"] {
        let file = dir.join(format!("m-{quant}.smb"));
        let out = run(bin()
            .arg("export")
            .arg(&ckpt)
            .arg("-o")
            .arg(&file)
            .args(["--quant", quant])
            .args([
                "--compare",
                "../shared/datasets/tinystories/valid.txt",
                "--max-bytes",
                "5000",
                "--json",
            ])
            .current_dir(repo(".")));
        assert!(out.status.success(), "export: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("flash") && stdout.contains("arena"),
            "{stdout}"
        );
        // A model this small is copied into SRAM at boot (the firmware's rule).
        assert!(stdout.contains("SRAM   model"), "{stdout}");
        let report: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert!(
            report["greedy_agreement"].as_f64().unwrap() > 0.5,
            "{report}"
        );
        let out = run(bin().arg("generate").arg(&file).args(["-n", "10"]));
        assert!(out.status.success(), "generate: {}", text(&out.stderr));
    }
    let out = run(bin()
        .arg("export")
        .arg(&ckpt)
        .arg("-o")
        .arg(dir.join("x.smb"))
        .args(["--context", "65"]));
    assert!(!out.status.success());
    assert!(!dir.join("x.smb").exists());
    // The committed flagship (0.69 MB) does not fit the RAM beside its arena: read from flash.
    let out = run(bin()
        .arg("export")
        .arg(repo("models/story-flagship-float"))
        .arg("-o")
        .arg(dir.join("flagship.smb"))
        .args(["--context", "256"]));
    assert!(out.status.success(), "export: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("flash  model")
            && stdout.contains("read in place through the 16 KB XIP cache"),
        "{stdout}"
    );
    assert!(!stdout.contains("SRAM   model"), "{stdout}");
    // ... but the weights that fit the RAM its arena leaves are copied there.
    let weights = stdout
        .lines()
        .find_map(|l| l.strip_prefix("  SRAM   weights         "))
        .and_then(|l| l.split(' ').next())
        .and_then(|b| b.parse::<usize>().ok());
    assert!(weights.is_some_and(|b| b > 10_000), "{stdout}");
    // ... after the two buffers its other weights stream through.
    assert!(
        stdout.contains(&format!(
            "  SRAM   stream buffers  {} B",
            starmind_engine::budget::STREAM_BUFFER_BYTES
        )),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn upgrade_rewrites_a_version_1_file_as_the_current_one_and_guards_its_output() {
    let dir = scratch("upgrade");
    let out = dir.join("story-1k.smb");
    let v1 = repo("tests/golden/story-1k-v1.smb");
    let up = run(bin().arg("upgrade").arg(&v1).arg("-o").arg(&out));
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert!(
        text(&up.stderr).contains("format version 1"),
        "{}",
        text(&up.stderr)
    );
    // The committed current-version golden is the upgrade of the version-1 one.
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(repo("tests/golden/story-1k.smb")).unwrap()
    );
    // Not over an existing file without --force, never over its input.
    let again = run(bin().arg("upgrade").arg(&v1).arg("-o").arg(&out));
    assert_eq!(again.status.code(), Some(1), "{}", text(&again.stderr));
    assert!(text(&again.stderr).contains("--force"));
    let copy = dir.join("copy.smb");
    std::fs::copy(&v1, &copy).unwrap();
    let onto_input = run(bin()
        .arg("upgrade")
        .arg(&copy)
        .arg("-o")
        .arg(&copy)
        .arg("--force"));
    assert_eq!(onto_input.status.code(), Some(1));
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&v1).unwrap());
    // A damaged file is an error naming it, and nothing is written.
    let mut bytes = std::fs::read(&v1).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    let bad = dir.join("bad.smb");
    std::fs::write(&bad, &bytes).unwrap();
    let bad_out = dir.join("bad-up.smb");
    let refused = run(bin().arg("upgrade").arg(&bad).arg("-o").arg(&bad_out));
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("bad.smb"));
    assert!(!bad_out.exists());
}
