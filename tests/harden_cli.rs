//! Hostile input through the real binary (issue 12): one test per defect a new user hit. Nothing
//! a user made may be overwritten without being asked, bad numbers are refused before anything
//! is allocated, the network has timeouts and true messages, and the first run works offline.
//! Every hostile input is made by the test itself; fake hubs listen on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_starmind"));
    // No hub, proxy or board of the caller's.
    for var in [
        "HF_ENDPOINT",
        "HF_HUB_OFFLINE",
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "STARMIND_MEMORY_BYTES",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("STARMIND_BOOTSEL_DIRS", "/nonexistent-starmind-test");
    cmd
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A fresh scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("starmind-harden-{tag}-{}", std::process::id()));
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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs with a deadline: a command that hangs or allocates for minutes fails the test instead of
/// the test hanging.
fn run_for(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting starmind");
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}: {}\n{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(cmd: &mut Command) -> Output {
    run_for(cmd, Duration::from_secs(900))
}

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "starmind failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Fails with exit code 1 (a clean error, not a panic or an abort); returns stderr.
fn refused(cmd: &mut Command) -> String {
    let out = run_for(cmd, Duration::from_secs(60));
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a clean refusal: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A small config (story-1k's kind of shape, seq_len 32, a few steps).
fn tiny_config(s: &Scratch, steps: usize) -> PathBuf {
    let json = format!(
        r#"{{"name": "tiny", "model": {{"vocab_size": 48, "dim": 8, "hidden_dim": 16, "n_layers": 1, "n_heads": 2,
        "n_kv_heads": 1, "seq_len": 32, "ffn": "swiglu", "tied_embeddings": false, "tokenizer": "char"}},
        "train": {{"steps": {steps}, "batch_size": 4, "learning_rate": 0.01, "warmup_steps": 1, "eval_every": 5,
        "eval_sequences": 4, "checkpoint_every": 5, "seed": 7}}}}"#
    );
    let path = s.path("tiny.json");
    std::fs::write(&path, json).unwrap();
    path
}

/// A few KB of story text and a separate validation text.
fn small_text(s: &Scratch) -> (PathBuf, PathBuf) {
    let story = "Once upon a time, a little cat named Tom sat in the sun. He was happy.\n";
    let train = s.path("train.txt");
    let valid = s.path("valid.txt");
    std::fs::write(&train, story.repeat(80)).unwrap();
    std::fs::write(&valid, story.replace("cat", "dog").repeat(10)).unwrap();
    (train, valid)
}

fn train_tiny(s: &Scratch, out: &Path) -> Command {
    let (train, valid) = small_text(s);
    let mut cmd = bin();
    cmd.arg("train")
        .arg("--config")
        .arg(tiny_config(s, 3))
        .arg("--data")
        .arg(train)
        .arg("--valid")
        .arg(valid)
        .arg("--out")
        .arg(out);
    cmd
}

fn checkpoint(s: &Scratch, name: &str) -> PathBuf {
    let out = s.path(name);
    ok(&mut train_tiny(s, &out));
    out
}

fn golden() -> PathBuf {
    repo("tests/golden/story-1k.smb")
}

// ---- Data loss ----------------------------------------------------------------------------

#[test]
fn train_refuses_to_replace_a_checkpoint_unless_resume_or_force() {
    let s = Scratch::new("replace");
    let out = checkpoint(&s, "run");
    let model = std::fs::read(out.join("model.safetensors")).unwrap();
    let err = refused(&mut train_tiny(&s, &out));
    assert!(
        err.contains("already holds a checkpoint (step 3)")
            && err.contains("--resume")
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), model);
    // --force replaces it (and says so); --resume and --force together make no sense.
    let forced = ok(train_tiny(&s, &out).arg("--force"));
    assert!(text(&forced.stderr).contains("replacing the checkpoint"));
    let both = run(train_tiny(&s, &out).args(["--force", "--resume"]));
    assert_eq!(both.status.code(), Some(2), "a usage error");
    assert!(text(&both.stderr).contains("cannot be used with"));
}

#[test]
fn train_refuses_a_users_own_non_empty_folder() {
    let s = Scratch::new("userdir");
    let mine = s.path("my-notes");
    std::fs::create_dir_all(&mine).unwrap();
    for (name, body) in [
        ("config.txt", "mine"),
        ("metrics.csv", "a,b\n1,2\n"),
        ("loss.svg", "<svg/>"),
    ] {
        std::fs::write(mine.join(name), body).unwrap();
    }
    for force in [false, true] {
        let mut cmd = train_tiny(&s, &mine);
        if force {
            cmd.arg("--force");
        }
        let err = refused(&mut cmd);
        assert!(err.contains("not a starmind checkpoint"), "{err}");
    }
    assert_eq!(
        std::fs::read_to_string(mine.join("metrics.csv")).unwrap(),
        "a,b\n1,2\n"
    );
    assert_eq!(std::fs::read_dir(&mine).unwrap().count(), 3);
}

#[test]
fn export_and_flash_refuse_to_write_over_inputs_and_existing_files() {
    let s = Scratch::new("outputs");
    let ckpt = checkpoint(&s, "ckpt");
    let weights = ckpt.join("model.safetensors");
    let before = std::fs::read(&weights).unwrap();
    // Over the checkpoint's own weights, even with --force, and through another spelling.
    for target in [weights.clone(), ckpt.join(".").join("model.safetensors")] {
        let err = refused(
            bin()
                .arg("export")
                .arg(&ckpt)
                .arg("-o")
                .arg(&target)
                .arg("--force"),
        );
        assert!(err.contains("an input of this command"), "{err}");
    }
    assert_eq!(std::fs::read(&weights).unwrap(), before);

    // An existing file: refused without --force, replaced with it.
    let smb = s.path("tiny.smb");
    std::fs::write(&smb, b"my precious file").unwrap();
    let err = refused(bin().arg("export").arg(&ckpt).arg("-o").arg(&smb));
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&smb).unwrap(), b"my precious file");
    ok(bin()
        .arg("export")
        .arg(&ckpt)
        .arg("-o")
        .arg(&smb)
        .arg("--force"));
    assert_eq!(&std::fs::read(&smb).unwrap()[..4], b"SMND");

    // flash --uf2: not over the model, not over an existing UF2 without --force.
    let model = std::fs::read(&smb).unwrap();
    let err = refused(
        bin()
            .arg("flash")
            .arg(&smb)
            .arg("--uf2")
            .arg(&smb)
            .arg("--force"),
    );
    assert!(err.contains("an input of this command"), "{err}");
    assert_eq!(std::fs::read(&smb).unwrap(), model);
    let uf2 = s.path("old.uf2");
    std::fs::write(&uf2, b"an older image").unwrap();
    refused(bin().arg("flash").arg(&smb).arg("--uf2").arg(&uf2));
    assert_eq!(std::fs::read(&uf2).unwrap(), b"an older image");
    ok(bin()
        .arg("flash")
        .arg(&smb)
        .arg("--uf2")
        .arg(&uf2)
        .arg("--force"));
    assert_ne!(std::fs::read(&uf2).unwrap(), b"an older image");
}

#[test]
fn writes_never_replace_devices_or_pipes() {
    let s = Scratch::new("nodes");
    let fifo = s.path("pipe.uf2");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    for target in [
        fifo.as_path(),
        Path::new("/dev/full"),
        Path::new("/dev/null"),
    ] {
        let err = refused(
            bin()
                .arg("flash")
                .arg(golden())
                .arg("--uf2")
                .arg(target)
                .arg("--force"),
        );
        assert!(err.contains("not a regular file"), "{err}");
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/full")
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
}

#[test]
fn stale_temp_files_of_a_killed_write_are_cleaned_up() {
    let s = Scratch::new("stale");
    // What a killed export leaves: a temp file of a process that is gone (a pid above the
    // kernel's limit), next to someone else's file that merely looks alike.
    let stale = s.path(".starmind-tmp-4294967294-story.uf2");
    let foreign = s.path(".story.uf2.tmp123");
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();
    std::fs::write(&foreign, b"not ours").unwrap();
    ok(bin()
        .arg("flash")
        .arg(golden())
        .arg("--uf2")
        .arg(s.path("story.uf2")));
    assert!(!stale.exists());
    assert!(foreign.exists());
    assert!(s.path("story.uf2").is_file());
}

// ---- Crashes and hangs --------------------------------------------------------------------

#[test]
fn bad_training_numbers_are_refused_before_any_work() {
    let s = Scratch::new("numbers");
    let cases: &[(&[&str], &str)] = &[
        (&["--batch-size", "0"], "--batch-size 0"),
        (&["--steps", "0"], "--steps 0"),
        (&["--learning-rate=-0.001"], "--learning-rate -0.001"),
        (&["--learning-rate", "NaN"], "--learning-rate NaN"),
        (&["--learning-rate", "inf"], "--learning-rate inf"),
        (&["--checkpoint-every", "0"], "--checkpoint-every 0"),
        (&["--threads", "0"], "--threads 0"),
    ];
    for (flags, expected) in cases {
        let out = s.path("never");
        let err = refused(train_tiny(&s, &out).args(*flags));
        assert!(err.contains(expected), "{flags:?}: {err}");
        assert!(!out.exists(), "{flags:?} created {}", out.display());
    }
}

#[test]
fn absurd_shapes_and_batches_are_refused_with_the_numbers() {
    let s = Scratch::new("shapes");
    let (train, valid) = small_text(&s);
    let base = r#"{"vocab_size": 48, "dim": 8, "hidden_dim": 16, "n_layers": 1, "n_heads": 2,
        "n_kv_heads": 1, "seq_len": 32, "ffn": "swiglu", "tied_embeddings": false, "tokenizer": "char"}"#;
    let base: serde_json::Value = serde_json::from_str(base).unwrap();
    let cases = [
        ("dim", 100_000u64, "dim 100000"),
        ("hidden_dim", 100_000_000, "hidden_dim 100000000"),
        ("n_layers", 100_000, "n_layers 100000"),
        ("vocab_size", 10_000_000, "vocab_size 10000000"),
        ("seq_len", u64::MAX, "seq_len"),
    ];
    for (field, value, expected) in cases {
        let mut model = base.clone();
        model[field] = value.into();
        let config = s.path(&format!("{field}.json"));
        let json = serde_json::json!({"name": field, "model": model});
        std::fs::write(&config, json.to_string()).unwrap();
        let started = Instant::now();
        let err = refused(
            bin()
                .arg("train")
                .arg("--config")
                .arg(&config)
                .arg("--data")
                .arg(&train)
                .arg("--valid")
                .arg(&valid)
                .arg("--out")
                .arg(s.path("never")),
        );
        assert!(err.contains(expected), "{field}: {err}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }
    // A batch no machine holds: refused by the sanity limit, and below it by the memory
    // budget, with the numbers and a batch that fits.
    let err = refused(train_tiny(&s, &s.path("never")).args(["--batch-size", "100000000"]));
    assert!(
        err.contains("batch_size (--batch-size) 100000000: must be at most"),
        "{err}"
    );
    let err = refused(train_tiny(&s, &s.path("never")).args(["--batch-size", "1000000"]));
    assert!(
        err.contains("needs about") && err.contains("available") && err.contains("--batch-size"),
        "{err}"
    );
    // The budget is the machine's: the same run refused when only 64 MB are available.
    let err = refused(
        train_tiny(&s, &s.path("never"))
            .args(["--batch-size", "4096"])
            .env("STARMIND_MEMORY_BYTES", "64000000"),
    );
    assert!(err.contains("but 64.0 MB is available"), "{err}");
}

#[test]
fn model_files_are_checked_before_they_are_read() {
    let s = Scratch::new("bigfile");
    // A 3 GB sparse file that starts like a model file, and one that does not.
    let sparse = s.path("big.smb");
    let mut head = std::fs::read(golden()).unwrap();
    head.truncate(80);
    let file = std::fs::File::create(&sparse).unwrap();
    (&file).write_all(&head).unwrap();
    file.set_len(3 << 30).unwrap();
    drop(file);
    let started = Instant::now();
    let err = refused(bin().args(["generate", "-n", "1"]).arg(&sparse));
    assert!(err.contains("header says"), "{err}");
    let err = refused(bin().args(["bench", "--host"]).arg("/dev/zero"));
    assert!(err.contains("not a regular file"), "{err}");
    let garbage = s.path("garbage.smb");
    std::fs::File::create(&garbage)
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    let err = refused(
        bin()
            .arg("eval")
            .arg(&garbage)
            .arg("--data")
            .arg(small_text(&s).0),
    );
    assert!(err.contains("not a starmind model file"), "{err}");
    // Reading 3 GB would take far longer than this on these machines.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_closed_stdout_ends_configs_eval_and_bench_cleanly() {
    let s = Scratch::new("pipe");
    let (train, valid) = small_text(&s);
    let commands: Vec<Vec<String>> = vec![
        vec!["configs".into()],
        vec!["configs".into(), "--json".into()],
        vec![
            "eval".into(),
            golden().display().to_string(),
            "--data".into(),
            train.display().to_string(),
            "--valid".into(),
            valid.display().to_string(),
        ],
        vec![
            "bench".into(),
            golden().display().to_string(),
            "--host".into(),
            "-n".into(),
            "8".into(),
        ],
    ];
    for args in commands {
        let mut child = bin()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes away at once, like `| head -0`
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(status.success(), "{args:?}: {status:?} {err}");
    }
}

// ---- Wrong answers accepted ---------------------------------------------------------------

#[test]
fn the_same_text_twice_is_refused() {
    let s = Scratch::new("dupes");
    let (train, valid) = small_text(&s);
    let other_spelling = s.path(".").join("train.txt");
    let err = refused(
        bin()
            .arg("train")
            .arg("--config")
            .arg(tiny_config(&s, 3))
            .arg("--data")
            .arg(&train)
            .arg("--data")
            .arg(&other_spelling)
            .arg("--out")
            .arg(s.path("never")),
    );
    assert!(err.contains("same text"), "{err}");
    let err = refused(
        bin()
            .arg("train")
            .arg("--config")
            .arg(tiny_config(&s, 3))
            .arg("--data")
            .arg(&train)
            .arg("--valid")
            .arg(&train)
            .arg("--out")
            .arg(s.path("never")),
    );
    assert!(err.contains("must not be training text"), "{err}");
    let _ = valid;
}

/// Sets one weight of `dir/model.safetensors` to NaN (the header's first tensor, element 0).
fn poison(dir: &Path) {
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let (_, tensor) = header
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| *k != "__metadata__")
        .unwrap();
    let start = tensor["data_offsets"][0].as_u64().unwrap() as usize + 8 + n;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn non_finite_weights_are_refused_at_eval_and_export() {
    let s = Scratch::new("nan");
    let ckpt = checkpoint(&s, "ckpt");
    poison(&ckpt);
    let (train, valid) = small_text(&s);
    let err = refused(
        bin()
            .arg("eval")
            .arg(&ckpt)
            .arg("--data")
            .arg(&train)
            .arg("--valid")
            .arg(&valid),
    );
    assert!(err.contains("not finite"), "{err}");
    let smb = s.path("nan.smb");
    let err = refused(bin().arg("export").arg(&ckpt).arg("-o").arg(&smb));
    assert!(err.contains("not finite"), "{err}");
    assert!(!smb.exists());
}

/// Found by the `tokenizer_files` fuzz target: a syntax error inside the "decoder" object of
/// a checkpoint's tokenizer.json made the tokenizers crate panic instead of returning an error.
#[test]
fn a_tokenizer_json_with_a_broken_decoder_is_an_error_not_a_panic() {
    let s = Scratch::new("broken-decoder");
    let ckpt = checkpoint(&s, "ckpt");
    let path = ckpt.join("tokenizer.json");
    let json = std::fs::read_to_string(&path).unwrap();
    let at = json.find("\"decoder\"").expect("a decoder entry");
    let close = at + json[at..].find('}').unwrap();
    // A stray control byte before the decoder object's closing brace (what the fuzzer found).
    std::fs::write(&path, format!("{}\u{17}{}", &json[..close], &json[close..])).unwrap();
    for command in ["generate", "eval"] {
        let mut cmd = bin();
        cmd.arg(command).arg(&ckpt);
        if command == "eval" {
            let (train, valid) = small_text(&s);
            cmd.arg("--data").arg(train).arg("--valid").arg(valid);
        }
        let err = refused(&mut cmd);
        assert!(
            err.contains("tokenizer.json") && err.contains("not valid JSON"),
            "{command}: {err}"
        );
    }
}

#[test]
fn flash_and_bench_refuse_what_generate_refuses() {
    let s = Scratch::new("sampling");
    let uf2 = s.path("x.uf2");
    let cases: &[(&[&str], &str)] = &[
        (&["--temperature=-3"], "--temperature -3"),
        (&["--top-p", "5"], "--top-p 5"),
        (&["--top-p", "0"], "--top-p 0"),
    ];
    for (flags, expected) in cases {
        let err = refused(bin().arg("generate").arg(golden()).args(*flags));
        assert!(err.contains(expected), "generate {flags:?}: {err}");
        let err = refused(
            bin()
                .arg("flash")
                .arg(golden())
                .arg("--uf2")
                .arg(&uf2)
                .args(*flags),
        );
        assert!(err.contains(expected), "flash {flags:?}: {err}");
        let err = refused(bin().arg("bench").arg(golden()).arg("--host").args(*flags));
        assert!(err.contains(expected), "bench {flags:?}: {err}");
    }
    assert!(!uf2.exists());
    for n in ["600", "0"] {
        let err = refused(bin().arg("bench").arg(golden()).args(["--host", "-n", n]));
        assert!(err.contains(&format!("--tokens (-n) {n}")), "{err}");
    }
    let err = refused(
        bin()
            .arg("flash")
            .arg(golden())
            .args(["--mode", "bench", "-n", "513", "--uf2"])
            .arg(&uf2),
    );
    assert!(err.contains("at most 512"), "{err}");
    ok(bin()
        .arg("bench")
        .arg(golden())
        .args(["--host", "-n", "512"]));
}

#[test]
fn generate_with_the_default_prompt_stops_at_end_of_text_unless_no_stop() {
    // A model file whose stories end: trained on the bundled sample, whose stories are
    // separated by <|endoftext|>.
    let s = Scratch::new("story");
    let out = s.path("run");
    ok(bin()
        .args([
            "train",
            "--config",
            "story-1k",
            "--data",
            "sample:tinystories",
        ])
        .args(["--steps", "600", "--batch-size", "16", "--out"])
        .arg(&out));
    let smb = s.path("story.smb");
    ok(bin().arg("export").arg(&out).arg("-o").arg(&smb));
    let ids = |seed: &str, extra: &[&str]| -> Vec<u32> {
        let o = ok(bin()
            .arg("generate")
            .arg(&smb)
            .args(["--ids", "-n", "1500", "--seed", seed])
            .args(extra));
        text(&o.stdout)
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect()
    };
    // A tiny model ends a story in 1500 tokens for some draws, not all: the first seed whose
    // story ends.
    let (seed, all, first_end) = (1..=8)
        .map(|seed| seed.to_string())
        .find_map(|seed| {
            let all = ids(&seed, &["--no-stop"]);
            assert_eq!(all.len(), 1500);
            let end = all.iter().position(|&id| id == 0)?;
            Some((seed, all, end))
        })
        .expect("the model ends a story for one of 8 seeds");
    let stopped = ids(&seed, &[]);
    assert_eq!(
        stopped,
        all[..first_end],
        "stops right before the first end-of-text"
    );
    // Stories, not end-of-text over and over.
    let ends = all.iter().filter(|&&id| id == 0).count();
    assert!(
        ends * 10 < all.len(),
        "{ends} of {} tokens are <|endoftext|>",
        all.len()
    );
    let o = ok(bin()
        .arg("generate")
        .arg(&smb)
        .args(["--seed", seed.as_str(), "-n", "1500"]));
    let story = text(&o.stdout);
    assert!(!story.contains("<|endoftext|>"), "{story}");
    eprintln!("{first_end} tokens, {ends} ends; story: {story}");
}

// ---- Network ------------------------------------------------------------------------------

/// A server on 127.0.0.1 answering every request with `respond(request_line, headers)`; counts
/// the requests and keeps their header lines.
struct Server {
    endpoint: String,
    requests: Arc<AtomicUsize>,
    headers: Arc<std::sync::Mutex<Vec<String>>>,
}

fn serve(respond: impl Fn(&str) -> Option<Vec<u8>> + Send + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let headers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (count, seen) = (requests.clone(), headers.clone());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                seen.lock().unwrap().push(header.trim().to_string());
            }
            count.fetch_add(1, Ordering::SeqCst);
            match respond(&line) {
                Some(bytes) => {
                    let _ = stream.write_all(&bytes);
                }
                None => held.push(stream), // accept and never answer
            }
        }
    });
    Server {
        endpoint,
        requests,
        headers,
    }
}

fn hub_train(s: &Scratch, endpoint: &str, data: &str) -> Command {
    let mut cmd = bin();
    cmd.arg("train")
        .arg("--config")
        .arg(tiny_config(s, 3))
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(s.path("never"))
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", s.path("hf-home"))
        .env("STARMIND_HUB_TIMEOUT_S", "1");
    cmd
}

#[test]
fn hub_failures_are_told_apart_and_never_hang() {
    let s = Scratch::new("hub");
    // Accepts the connection and never answers: a timeout, not a hang.
    let silent = serve(|_| None);
    let started = Instant::now();
    let err = refused(&mut hub_train(
        &s,
        &silent.endpoint,
        "some/dataset:train.txt",
    ));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        err.contains("cannot reach the hub") && err.contains("timed out"),
        "{err}"
    );
    assert!(
        err.contains("--data <file>") && !err.contains("../shared"),
        "{err}"
    );

    // 404: not found, naming the repository and the file.
    let missing = serve(|_| {
        Some(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec())
    });
    let err = refused(&mut hub_train(
        &s,
        &missing.endpoint,
        "some/dataset:train.txt",
    ));
    assert!(
        err.contains("not found") && err.contains("some/dataset") && err.contains("train.txt"),
        "{err}"
    );
    assert!(!err.contains("unreachable"), "{err}");

    // A web server that is not the hub (no commit, no ETag), and one that does not speak HTTP.
    let web = serve(|_| {
        Some(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_vec())
    });
    let err = refused(&mut hub_train(&s, &web.endpoint, "some/dataset:train.txt"));
    assert!(
        err.contains("does not answer like the Hugging Face hub"),
        "{err}"
    );
    let garbage = serve(|_| Some(b"\x00\x01 this is not HTTP at all\r\n\r\n".to_vec()));
    let err = refused(&mut hub_train(
        &s,
        &garbage.endpoint,
        "some/dataset:train.txt",
    ));
    assert!(
        err.contains("does not answer like the Hugging Face hub"),
        "{err}"
    );
}

/// Generated TinyStories-like text of `bytes` bytes, stories separated by `<|endoftext|>`.
fn stories(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 200);
    let mut i = 0;
    while out.len() < bytes {
        out.extend(
            format!("Story {i}: once upon a time a bird sang a song.\n<|endoftext|>\n").bytes(),
        );
        i += 1;
    }
    out.truncate(bytes);
    out
}

#[test]
fn the_default_hub_data_is_a_cached_prefix_not_the_whole_corpus() {
    let s = Scratch::new("prefix");
    let train = Arc::new(stories(17 << 20)); // larger than the 16 MiB the default fetches
    let valid = Arc::new(stories(2 << 20));
    let hub = serve(move |line| {
        let path = line.split_whitespace().nth(1).unwrap_or("");
        let body = match path {
            "/datasets/roneneldan/TinyStories/resolve/main/TinyStories-train.txt" => &train,
            "/datasets/roneneldan/TinyStories/resolve/main/TinyStories-valid.txt" => &valid,
            _ => {
                return Some(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_vec(),
                )
            }
        };
        // The whole file whatever the Range says: the client must stop reading itself.
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\netag: \"abc\"\r\n\
             x-repo-commit: 0123456789abcdef0123456789abcdef01234567\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        Some(r)
    });
    let train_default = |out: &str| {
        let mut cmd = bin();
        cmd.arg("train")
            .arg("--config")
            .arg(tiny_config(&s, 3))
            .arg("--out")
            .arg(s.path(out))
            .env("HF_ENDPOINT", &hub.endpoint)
            .env("HF_HOME", s.path("hf-home"));
        cmd
    };
    let first = ok(&mut train_default("a"));
    let err = text(&first.stderr);
    assert!(err.contains("first 16777216 bytes"), "{err}");
    let snapshot = s.path("hf-home").join(
        "hub/datasets--roneneldan--TinyStories/snapshots/0123456789abcdef0123456789abcdef01234567",
    );
    let cached = snapshot.join("TinyStories-train.txt.first-16777216-bytes");
    assert_eq!(std::fs::metadata(&cached).unwrap().len(), 16 << 20);
    assert!(hub
        .headers
        .lock()
        .unwrap()
        .iter()
        .any(|h| h.eq_ignore_ascii_case("range: bytes=0-16777215")));
    // Cached: a second run asks the hub nothing.
    let before = hub.requests.load(Ordering::SeqCst);
    ok(&mut train_default("b"));
    assert_eq!(hub.requests.load(Ordering::SeqCst), before);
}

// ---- First run ----------------------------------------------------------------------------

#[test]
fn train_without_data_or_network_uses_the_bundled_sample_and_says_so() {
    let s = Scratch::new("sample");
    let out = s.path("run");
    let o = ok(bin()
        .args(["train", "--config"])
        .arg(tiny_config(&s, 3))
        .arg("--out")
        .arg(&out)
        .env("HF_HOME", s.path("hf-home"))
        .env("HF_HUB_OFFLINE", "1"));
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("bundled")).collect();
    assert!(
        !lines.is_empty() && lines[0].contains("offline") && lines[0].contains("--data <file>"),
        "{err}"
    );
    assert!(!err.contains("../shared"), "{err}");
    assert!(out.join("model.safetensors").is_file());
    // --resume reads the same text (the recorded source is the sample, not "the default").
    ok(bin()
        .args(["train", "--resume", "--steps", "4", "--out"])
        .arg(&out)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", s.path("hf-home")));
}

#[test]
fn flash_without_a_probe_writes_onto_a_mounted_bootsel_drive() {
    let s = Scratch::new("bootsel");
    let drive = s.path("RPI-RP2");
    std::fs::create_dir_all(&drive).unwrap();
    std::fs::write(
        drive.join("INFO_UF2.TXT"),
        "UF2 Bootloader v3.0\r\nModel: Raspberry Pi RP2\r\nBoard-ID: RPI-RP2\r\n",
    )
    .unwrap();
    let not_a_pico = s.path("USBSTICK");
    std::fs::create_dir_all(&not_a_pico).unwrap();
    let dirs = std::env::join_paths([&not_a_pico, &drive]).unwrap();
    let o = ok(bin()
        .arg("flash")
        .arg(golden())
        .env("STARMIND_BOOTSEL_DIRS", &dirs));
    assert!(text(&o.stderr).contains("BOOTSEL"), "{}", text(&o.stderr));
    let written = std::fs::read(drive.join("starmind.uf2")).unwrap();
    let file = s.path("same.uf2");
    ok(bin().arg("flash").arg(golden()).arg("--uf2").arg(&file));
    assert_eq!(written, std::fs::read(&file).unwrap());
    assert_eq!(std::fs::read_dir(&not_a_pico).unwrap().count(), 0);
}

#[test]
fn setup_is_quiet_and_skips_npm_when_nothing_changed() {
    let s = Scratch::new("setup");
    // A stand-in npm that records its calls and installs nothing but the marker npm writes.
    let bin_dir = s.path("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let log = s.path("npm.log");
    let npm = bin_dir.join("npm");
    std::fs::write(
        &npm,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nmkdir -p \"$3/node_modules\"\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&npm, std::fs::Permissions::from_mode(0o755)).unwrap();
    let emu = s.path("emulator");
    std::fs::create_dir_all(&emu).unwrap();
    std::fs::copy(
        repo("scripts/emulator/package-lock.json"),
        emu.join("package-lock.json"),
    )
    .unwrap();
    let setup = || {
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
        let o = Command::new("bash")
            .arg(repo("scripts/setup.sh"))
            .env("PATH", path)
            .env("STARMIND_EMULATOR_DIR", &emu)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        format!("{}{}", text(&o.stdout), text(&o.stderr))
    };
    let first = setup();
    assert!(first.contains("npm ci"), "{first}");
    let second = setup();
    assert_eq!(second, "", "nothing to do, nothing said");
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(calls.lines().count(), 1, "{calls}");
    // A changed lockfile installs again.
    let mut lock = std::fs::read_to_string(emu.join("package-lock.json")).unwrap();
    lock.push('\n');
    std::fs::write(emu.join("package-lock.json"), lock).unwrap();
    assert!(setup().contains("npm ci"));
}
