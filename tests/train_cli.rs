//! End-to-end tests of `starmind train` and `starmind eval` through the real binary, on small
//! slices of ../shared/datasets/tinystories and tiny step counts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_starmind"))
}

fn dataset(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/datasets/tinystories")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: the dataset must sit beside the repository",
        path.display()
    );
    path
}

/// A fresh scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("starmind-test-{tag}-{}", std::process::id()));
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

/// Writes the first `bytes` of a dataset file (cut at a line end) into the scratch directory.
fn slice(scratch: &Scratch, name: &str, bytes: usize) -> PathBuf {
    let text = std::fs::read_to_string(dataset(name)).unwrap();
    let end = text[..bytes.min(text.len())]
        .rfind('\n')
        .map_or(text.len(), |i| i + 1);
    let path = scratch.path(name);
    std::fs::write(&path, &text[..end]).unwrap();
    path
}

/// A small config: story-1k's shape with seq_len 32 and quick evaluations.
fn tiny_config(scratch: &Scratch, steps: usize) -> PathBuf {
    let json = format!(
        r#"{{"name": "tiny", "model": {{"vocab_size": 48, "dim": 8, "hidden_dim": 16, "n_layers": 2, "n_heads": 2,
        "n_kv_heads": 1, "seq_len": 32, "ffn": "swiglu", "tied_embeddings": false, "tokenizer": "char"}},
        "train": {{"steps": {steps}, "batch_size": 8, "learning_rate": 0.01, "warmup_steps": 2, "eval_every": 5,
        "eval_sequences": 8, "checkpoint_every": 5, "seed": 7}}}}"#
    );
    let path = scratch.path("tiny.json");
    std::fs::write(&path, json).unwrap();
    path
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("running starmind")
}

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "starmind failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn train_cmd(config: &Path, train: &Path, valid: &Path, out: &Path) -> Command {
    let mut cmd = bin();
    cmd.arg("train")
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(train)
        .arg("--valid")
        .arg(valid)
        .arg("--out")
        .arg(out);
    cmd
}

#[test]
fn train_writes_a_complete_checkpoint_and_eval_reads_it() {
    let s = Scratch::new("full");
    let (train, valid) = (
        slice(&s, "train.txt", 200_000),
        slice(&s, "valid.txt", 20_000),
    );
    let config = tiny_config(&s, 12);
    let out = s.path("run");
    let output = ok(&mut train_cmd(&config, &train, &valid, &out));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("Once upon a time"), "sample: {stdout}");
    assert!(stdout.contains("final val_bpb"), "{stdout}");
    for file in [
        "model.safetensors",
        "state.safetensors",
        "config.json",
        "tokenizer.json",
        "metrics.csv",
        "loss.svg",
        "sample.txt",
        "eval.json",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    // metrics.csv: header + rows up to the last step, with validation figures at eval steps.
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(metrics
        .starts_with("step,learning_rate,train_loss,val_loss,val_bpb,tokens_seen,elapsed_s\n"));
    assert!(metrics.lines().last().unwrap().starts_with("12,"));
    // tokenizer.json is a Hugging Face tokenizer.
    let text = std::fs::read_to_string(out.join("tokenizer.json")).unwrap();
    assert!(text.contains("\"<|endoftext|>\"") && text.contains("\"<unk>\""));

    // eval --json on the same split gives the final figures of training.
    let output = ok(bin()
        .arg("eval")
        .arg(&out)
        .arg("--data")
        .arg(&train)
        .arg("--valid")
        .arg(&valid)
        .arg("--json"));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let trained: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    for key in [
        "val_bpb",
        "val_loss",
        "unigram_bpb",
        "bigram_bpb",
        "tokens",
        "bytes",
    ] {
        assert!(report[key].is_number(), "{key} missing in {report}");
        assert_eq!(report[key], trained["eval"][key], "{key}");
    }
    let (bpb, unigram) = (
        report["val_bpb"].as_f64().unwrap(),
        report["unigram_bpb"].as_f64().unwrap(),
    );
    assert!(bpb > 0.5 && bpb < 12.0 && unigram > 3.0, "{report}");

    // Without --data, eval scores the split the run recorded.
    let output = ok(bin().arg("eval").arg(&out).arg("--json"));
    let recorded: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(recorded, report);

    // --max-bytes limits the scored text.
    let output = ok(bin()
        .arg("eval")
        .arg(&out)
        .arg("--data")
        .arg(&train)
        .arg("--valid")
        .arg(&valid)
        .arg("--json")
        .args(["--max-bytes", "1000"]));
    let small: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(small["bytes"].as_u64().unwrap() < 1000);
}

/// A safetensors file's tensor header entries and data, without its metadata.
fn tensors_only(path: &Path) -> (serde_json::Value, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    header.as_object_mut().unwrap().remove("__metadata__");
    (header, bytes[8 + header_len..].to_vec())
}

#[test]
fn resume_continues_bit_for_bit() {
    let s = Scratch::new("resume");
    let (train, valid) = (
        slice(&s, "train.txt", 100_000),
        slice(&s, "valid.txt", 5_000),
    );
    let config = tiny_config(&s, 10);
    let (whole, halves) = (s.path("whole"), s.path("halves"));
    ok(&mut train_cmd(&config, &train, &valid, &whole));
    let output = ok(train_cmd(&config, &train, &valid, &halves).args(["--stop-after", "5"]));
    assert!(String::from_utf8_lossy(&output.stderr).contains("stopped after step 5"));
    // --data and --valid default to the run's own sources.
    ok(bin().arg("train").arg("--resume").arg("--out").arg(&halves));
    for file in ["model.safetensors", "tokenizer.json", "config.json"] {
        let (a, b) = (
            std::fs::read(whole.join(file)).unwrap(),
            std::fs::read(halves.join(file)).unwrap(),
        );
        assert!(a == b, "{file} differs between 10 steps and 5 + resumed 5");
    }
    // The resume state (weights, AdamW moments, sampler) too, apart from its wall-clock metadata.
    let (a, b) = (
        tensors_only(&whole.join("state.safetensors")),
        tensors_only(&halves.join("state.safetensors")),
    );
    assert!(a == b, "state.safetensors tensors differ");
    // The same seed reproduces the run; another seed does not.
    let again = s.path("again");
    ok(&mut train_cmd(&config, &train, &valid, &again));
    assert_eq!(
        std::fs::read(whole.join("model.safetensors")).unwrap(),
        std::fs::read(again.join("model.safetensors")).unwrap()
    );
    let other = s.path("other");
    ok(train_cmd(&config, &train, &valid, &other).args(["--seed", "8"]));
    assert_ne!(
        std::fs::read(whole.join("model.safetensors")).unwrap(),
        std::fs::read(other.join("model.safetensors")).unwrap()
    );
}

#[test]
fn huge_learning_rate_stops_with_a_clear_error_and_keeps_the_last_checkpoint() {
    let s = Scratch::new("nan");
    let (train, valid) = (
        slice(&s, "train.txt", 50_000),
        slice(&s, "valid.txt", 5_000),
    );
    let config = tiny_config(&s, 50);
    let out = s.path("run");
    let output = run(train_cmd(&config, &train, &valid, &out).args([
        "--learning-rate",
        "1e30",
        "--checkpoint-every",
        "1",
    ]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "training with lr 1e30 must fail");
    assert!(stderr.contains("training diverged at step"), "{stderr}");
    assert!(stderr.contains("NaN") || stderr.contains("inf"), "{stderr}");
    let step: usize = stderr
        .split("diverged at step ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(step > 1, "step {step}");
    assert!(
        stderr.contains(&format!("last good checkpoint (step {})", step - 1)),
        "{stderr}"
    );
    // The kept checkpoint is complete and loads.
    ok(bin()
        .arg("eval")
        .arg(&out)
        .arg("--data")
        .arg(&train)
        .arg("--valid")
        .arg(&valid)
        .arg("--json"));
}

#[test]
fn unreachable_hub_names_the_problem_and_data_flag() {
    // An explicit hub dataset that cannot be had is an error (the bundled sample stands in only
    // for the default, see tests/harden_cli.rs).
    let s = Scratch::new("offline");
    let hf_home = s.path("hf-home");
    std::fs::create_dir_all(&hf_home).unwrap();
    let explicit = [
        "train",
        "--config",
        "story-1k",
        "--data",
        "roneneldan/TinyStories",
        "--out",
    ];
    // Offline mode with an empty cache.
    let output = run(bin()
        .args(explicit)
        .arg(s.path("a"))
        .env("HF_HOME", &hf_home)
        .env("HF_HUB_OFFLINE", "1"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("offline") && stderr.contains("--data <file>"),
        "{stderr}"
    );
    // Online mode, but the endpoint is a closed port on this machine.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let output = run(bin()
        .args(explicit)
        .arg(s.path("b"))
        .env("HF_HOME", &hf_home)
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_ENDPOINT", format!("http://127.0.0.1:{closed_port}")));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("cannot reach the hub") && stderr.contains("--data <file>"),
        "{stderr}"
    );
    assert!(!stderr.contains("../shared"), "{stderr}");
    // eval takes the same data path (the directory exists; its data must come from the hub).
    let output = run(bin()
        .arg("eval")
        .arg(&hf_home)
        .args(["--data", "roneneldan/TinyStories"])
        .env("HF_HOME", &hf_home)
        .env("HF_HUB_OFFLINE", "1"));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--data"));
}

#[test]
fn eval_of_a_missing_path_says_so_before_touching_data() {
    let s = Scratch::new("eval-missing");
    let output = run(bin()
        .arg("eval")
        .arg(s.path("no-such-checkpoint"))
        .env("HF_HUB_OFFLINE", "1"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("does not exist") && !stderr.contains("hub"),
        "{stderr}"
    );
}

#[test]
fn kill_during_checkpointing_never_leaves_a_broken_checkpoint() {
    let s = Scratch::new("kill");
    let (train, valid) = (
        slice(&s, "train.txt", 50_000),
        slice(&s, "valid.txt", 3_000),
    );
    let config = tiny_config(&s, 100_000);
    let out = s.path("run");
    let delays_ms = [900u64, 1300, 1700];
    let mut first = true;
    for delay in delays_ms {
        let mut cmd = if first {
            train_cmd(&config, &train, &valid, &out)
        } else {
            let mut c = bin();
            c.arg("train").arg("--resume").arg("--out").arg(&out);
            c
        };
        first = false;
        let mut child = cmd
            .args(["--checkpoint-every", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait for the first checkpoint, then kill -9 at an arbitrary moment.
        let started = std::time::Instant::now();
        while !out.join("state.safetensors").exists() && started.elapsed().as_secs() < 60 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Whatever instant it died at, the checkpoint loads and evaluates.
        ok(bin()
            .arg("eval")
            .arg(&out)
            .arg("--data")
            .arg(&train)
            .arg("--valid")
            .arg(&valid)
            .args(["--json", "--max-bytes", "500"]));
    }
    // And training resumes from it.
    let state = std::fs::read(out.join("state.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(state[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&state[8..8 + header_len]).unwrap();
    let ours: serde_json::Value =
        serde_json::from_str(header["__metadata__"]["starmind"].as_str().unwrap()).unwrap();
    let step: usize = ours["step"].as_str().unwrap().parse().unwrap();
    ok(bin()
        .arg("train")
        .arg("--resume")
        .arg("--out")
        .arg(&out)
        .args(["--stop-after", &(step + 2).to_string()]));
}

#[test]
fn max_seconds_stops_in_time_and_json_is_the_last_line() {
    let s = Scratch::new("budget");
    let (train, valid) = (
        slice(&s, "train.txt", 100_000),
        slice(&s, "valid.txt", 10_000),
    );
    // Far more steps than 2 s allow: the budget ends the run, with a checkpoint and evaluation.
    let config = tiny_config(&s, 1_000_000);
    let out = s.path("run");
    let mut cmd = train_cmd(&config, &train, &valid, &out);
    cmd.args(["--max-seconds", "2", "--json", "--accumulate", "2"]);
    let output = ok(&mut cmd);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap();
    let json: serde_json::Value = serde_json::from_str(last).unwrap();
    for key in [
        "tokens_per_s",
        "steps",
        "train_s",
        "val_bpb",
        "peak_rss_bytes",
    ] {
        assert!(json[key].is_number(), "{key} missing in {last}");
    }
    let steps = json["steps"].as_u64().unwrap();
    let train_s = json["train_s"].as_f64().unwrap();
    assert!((1..1_000_000).contains(&steps), "{last}");
    assert!(train_s > 0.0 && train_s < 2.0 + 1.0, "{last}");
    // tokens/s counts --accumulate batches of 8 × 32 per step.
    let tokens_per_s = json["tokens_per_s"].as_f64().unwrap();
    let expected = (steps * 2 * 8 * 32) as f64 / train_s;
    assert!((tokens_per_s / expected - 1.0).abs() < 1e-6, "{last}");
    assert!(json["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    // The final checkpoint is at the last step done, and eval.json has the same figure.
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(metrics
        .lines()
        .last()
        .unwrap()
        .starts_with(&format!("{steps},")));
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    assert_eq!(eval["eval"]["val_bpb"], json["val_bpb"]);
    assert_eq!(eval["steps"], json["steps"]);
}
