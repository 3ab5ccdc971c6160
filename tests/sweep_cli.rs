//! `starmind sweep` end to end through the real binary: two tiny configs (one with an explicit
//! head_size: 3 heads of 2 on 8 dims) trained for a two-second budget each, exported, scored
//! and benched (in the emulator when it is installed, bit-exact against the host engine; else on
//! the host), the report written; then a sweep killed after its first variant continues with
//! the second alone, and a run with other settings is refused.

mod bench_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

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

/// The first `bytes` of a dataset file, cut at a line end, in `dir`.
fn slice(dir: &Path, name: &str, bytes: usize) -> PathBuf {
    let text = std::fs::read_to_string(dataset(name)).unwrap();
    let end = text[..bytes].rfind('\n').map_or(bytes, |i| i + 1);
    let path = dir.join(name);
    std::fs::write(&path, &text[..end]).unwrap();
    path
}

fn config(dir: &Path, name: &str, heads: usize, head_size: Option<usize>) -> PathBuf {
    let head_size = head_size.map_or(String::new(), |s| format!(r#""head_size": {s},"#));
    let json = format!(
        r#"{{"name": "{name}", "model": {{"vocab_size": 40, "dim": 8, "hidden_dim": 16, "n_layers": 1,
        "n_heads": {heads}, "n_kv_heads": {heads}, {head_size} "seq_len": 32, "ffn": "plain",
        "tied_embeddings": true, "tokenizer": "char"}},
        "train": {{"batch_size": 8, "learning_rate": 0.01, "warmup_steps": 2, "eval_every": 1000,
        "eval_sequences": 4, "checkpoint_every": 1000, "seed": 7}}}}"#
    );
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, json).unwrap();
    path
}

struct Setup {
    out: PathBuf,
    runs: PathBuf,
    args: Vec<String>,
}

impl Setup {
    fn command(&self, extra: &[&str]) -> Command {
        let mut command = bench_common::starmind();
        command.args(&self.args).args(extra);
        command
    }

    fn results(&self) -> String {
        std::fs::read_to_string(self.out.join("test/results.csv")).unwrap_or_default()
    }
}

fn setup(tag: &str) -> Setup {
    let dir = bench_common::scratch(tag);
    let train = slice(&dir, "train.txt", 60_000);
    let valid = slice(&dir, "valid.txt", 8_000);
    let plain = config(&dir, "tiny-plain", 2, None);
    let heads = config(&dir, "tiny-head-size", 3, Some(2));
    let (out, runs) = (dir.join("out"), dir.join("runs"));
    let mut args: Vec<String> = [
        "sweep",
        "--configs",
        &format!("{},{}", plain.display(), heads.display()),
        "--name",
        "test",
        "--max-seconds",
        "2",
        "--eval-bytes",
        "3000",
        "--bench-tokens",
        "8",
        "--data",
        train.to_str().unwrap(),
        "--valid",
        valid.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--runs",
        runs.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !bench_common::emulator_available() {
        args.push("--host".into());
    }
    Setup { out, runs, args }
}

fn field<'a>(csv: &'a str, row: &str, column: &str) -> &'a str {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = header.iter().position(|h| *h == column).unwrap();
    let line = lines
        .find(|l| l.split(',').next() == Some(row))
        .unwrap_or_else(|| panic!("no row {row} in\n{csv}"));
    line.split(',').nth(at).unwrap()
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn a_sweep_trains_reports_and_continues_after_a_kill() {
    let s = setup("sweep-cli");
    let emulated = !s.args.iter().any(|a| a == "--host");

    // Killed while the second variant runs (one at a time): the first one's row is kept.
    let mut child = s
        .command(&["--jobs", "1"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !s.results().contains("tiny-plain,") {
        assert!(Instant::now() < deadline, "no first row in time");
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(field(&s.results(), "tiny-plain", "status"), "ok");
    // Kill it once the second variant's worker runs.
    let worker_log = s.runs.join("tiny-head-size/log.txt");
    while !worker_log.exists() {
        assert!(
            Instant::now() < deadline,
            "the second variant did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // That worker is the killed sweep's child: wait for it to end (its row file).
    let worker_row = s.runs.join("tiny-head-size/row.json");
    let worker_deadline = Instant::now() + Duration::from_secs(600);
    while !worker_row.exists() && Instant::now() < worker_deadline {
        let log = std::fs::read_to_string(&worker_log).unwrap_or_default();
        assert!(
            !log.contains("error:"),
            "the orphaned worker failed:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let results = s.results();
    assert!(
        !results.contains("tiny-head-size,"),
        "the killed sweep recorded the second variant:\n{results}"
    );
    let first_model = s.runs.join("tiny-plain/checkpoint/model.safetensors");
    let first_trained = modified(&first_model);

    // The same command continues with the second variant alone.
    let out = s.command(&["--jobs", "2"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1 done before, 1 to run"), "{stderr}");
    assert_eq!(
        modified(&first_model),
        first_trained,
        "tiny-plain was trained again"
    );

    let csv = s.results();
    assert!(csv.starts_with("name,params_real,params_claimed,vocab,dim,hidden,layers,heads,head_size,val_bpb,decode_tok_per_s,"), "{csv}");
    assert_eq!(csv.lines().count(), 3, "{csv}");
    for name in ["tiny-plain", "tiny-head-size"] {
        assert_eq!(field(&csv, name, "status"), "ok", "{csv}");
        let bpb: f64 = field(&csv, name, "val_bpb").parse().unwrap();
        assert!(bpb > 0.5 && bpb < 9.0, "{name}: val_bpb {bpb}");
        let tok_s: f64 = field(&csv, name, "decode_tok_per_s").parse().unwrap();
        assert!(tok_s > 0.0, "{name}: {tok_s}");
        let steps: usize = field(&csv, name, "steps").parse().unwrap();
        assert!(steps >= 1, "{name}: steps");
        let seconds: f64 = field(&csv, name, "train_seconds").parse().unwrap();
        assert!(
            seconds < 2.0 + 10.0,
            "{name}: trained {seconds} s for a 2 s budget"
        );
        if emulated {
            assert_eq!(field(&csv, name, "bit_exact"), "true", "{name}");
            assert!(!field(&csv, name, "cycles_per_token").is_empty());
            assert!(!field(&csv, name, "ram_bytes").is_empty());
        }
    }
    // 3 heads of 2: the attention is 6 wide on 8 dims; wq, wk, wv 6×8 and wo 8×6.
    assert_eq!(field(&csv, "tiny-head-size", "head_size"), "2");
    // 40·8 embedding + 2·8·6 + 2·8·6 attention + 2·8·16 FFN + 3·8 norm gains.
    assert_eq!(field(&csv, "tiny-head-size", "params_real"), "792");
    assert_eq!(field(&csv, "tiny-plain", "params_real"), "856");
    let readme = std::fs::read_to_string(s.out.join("test/README.md")).unwrap();
    for part in [
        "## The three Pareto-best variants",
        "## Findings",
        "tiny-head-size",
        "pareto.svg",
    ] {
        assert!(readme.contains(part), "README lacks {part}:\n{readme}");
    }
    for svg in ["pareto.svg", "bpb_vs_params.svg", "tok_per_s_vs_params.svg"] {
        assert!(std::fs::read_to_string(s.out.join("test").join(svg))
            .unwrap()
            .starts_with("<svg"));
    }
    assert!(std::fs::read_to_string(s.out.join("README.md"))
        .unwrap()
        .contains("[test](test/README.md)"));

    // Nothing left to do: a rerun trains nothing.
    let out = s.command(&[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("2 done before, 0 to run"),
        "{stderr}"
    );

    // Other settings would mix incomparable rows: refused, the rows kept.
    let mut other = bench_common::starmind();
    let at = s.args.iter().position(|a| a == "--max-seconds").unwrap();
    let mut args = s.args.clone();
    args[at + 1] = "3".into();
    let out = other.args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--fresh"),
        "{stderr}"
    );
    assert_eq!(s.results(), csv);
}

#[test]
fn a_variant_too_big_for_its_share_of_memory_is_a_failed_row_not_a_kill() {
    let s = setup("sweep-memory");
    // 1 MB for the sweep, split between two workers: every variant's training is refused by
    // its own memory check, before it allocates.
    let out = s
        .command(&["--jobs", "2"])
        .env("STARMIND_MEMORY_BYTES", "1000000")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let csv = s.results();
    for name in ["tiny-plain", "tiny-head-size"] {
        let status = field(&csv, name, "status");
        assert!(
            status.starts_with("failed") && status.contains("but 500.0 kB is available"),
            "{name}: {status}\n{stderr}"
        );
        assert!(
            !s.runs
                .join(name)
                .join("checkpoint/model.safetensors")
                .exists(),
            "{name} trained anyway"
        );
    }
}
