//! `starmind import llama2c` end to end through the real binary: the real stories260K.bin
//! against the ids llama2.c's own run.c prints, the tensors of synthetic checkpoints (shared
//! and separate classifier, grouped-query attention), a tokenizer.bin, the pipeline after the
//! import (generate, export, the engine), and bad input.

mod bench_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_starmind"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "starmind-import-llama2c-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str]) -> Output {
    bin()
        .args(args)
        .current_dir(repo("."))
        .output()
        .expect("starting starmind")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "starmind {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The stderr of a command that must fail.
fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        !out.status.success(),
        "starmind {args:?} should fail: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

fn ids(s: &str) -> Vec<u32> {
    s.split_whitespace().map(|w| w.parse().unwrap()).collect()
}

fn config_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

const STORIES: &str = "../shared/anchors/stories260K.bin";

/// Tokens of `run.c`'s greedy output checked here (of the 512 in the data file; each float step
/// reruns the whole context, so the test keeps to a length that is quick on CI).
const ORACLE_TOKENS: usize = 128;

#[test]
fn stories260k_greedy_ids_from_bos_equal_run_c() {
    let dir = scratch("oracle");
    let out = dir.join("ckpt");
    ok(&["import", "llama2c", STORIES, "--out", out.to_str().unwrap()]);
    let n = ORACLE_TOKENS.to_string();
    let got = ids(&ok(&[
        "generate",
        out.to_str().unwrap(),
        "--temperature",
        "0",
        "-n",
        &n,
        "--ids",
    ]));
    let want =
        ids(&std::fs::read_to_string(repo("tests/data/stories260K-greedy-ids.txt")).unwrap());
    assert_eq!(want.len(), 512);
    assert_eq!(got, want[..ORACLE_TOKENS]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sampled_story_ends_when_the_model_draws_bos_again() {
    let dir = scratch("stop");
    let out = dir.join("ckpt");
    let c = out.to_str().unwrap();
    ok(&["import", "llama2c", STORIES, "--out", c]);
    // A sampled story stops where the model draws BOS (run.c's end of a story). Where that is
    // depends on the float model's last bits, so it is found with --no-stop first, and the
    // stopped story must be exactly the tokens before it.
    let mut checked = 0;
    for seed in ["1", "2", "3", "4"] {
        let sampled = ["generate", c, "--temperature", "1", "--seed", seed, "--ids"];
        let on = ids(&ok(&[&sampled[..], &["-n", "400", "--no-stop"]].concat()));
        assert_eq!(on.len(), 400, "--no-stop passes BOS on and goes on");
        let Some(end) = on.iter().position(|&id| id == 1) else {
            continue;
        };
        let story = ids(&ok(&[&sampled[..], &["-n", "400"]].concat()));
        assert_eq!(story, on[..end], "seed {seed}");
        checked += 1;
        break;
    }
    assert!(checked > 0, "no seed drew BOS within 400 tokens");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stories260k_without_tokenizer_runs_on_ids_through_the_pipeline() {
    let dir = scratch("pipeline");
    let ckpt = dir.join("ckpt");
    let c = ckpt.to_str().unwrap();
    let summary = ok(&["import", "llama2c", STORIES, "--out", c]);
    assert!(summary.contains("260032 parameters"), "{summary}");
    let config = config_json(&ckpt);
    assert_eq!(config["model"]["tokenizer"], "none");
    assert_eq!(config["model"]["tied_embeddings"], true);
    assert_eq!(config["model"]["n_kv_heads"], 4);
    assert_eq!(
        config["eot_id"], 1,
        "llama2.c's BOS starts and ends stories"
    );
    assert!(!ckpt.join("tokenizer.json").exists());

    // A model without a tokenizer takes no text and has no text to print.
    assert!(fails(&["generate", c, "--prompt", "Once", "--ids"]).contains("no tokenizer"));
    assert!(fails(&["generate", c, "-n", "4"]).contains("use --ids"));
    let valid = repo("../shared/datasets/tinystories/valid.txt");
    let e = fails(&[
        "eval",
        c,
        "--valid",
        valid.to_str().unwrap(),
        "--data",
        valid.to_str().unwrap(),
    ]);
    assert!(e.contains("has no tokenizer"), "{e}");

    // Export: the engine file records "no tokenizer" and refuses a text prompt too.
    let smb = dir.join("s.smb");
    let s = smb.to_str().unwrap();
    ok(&["export", c, "-o", s, "--context", "256"]);
    let engine = ids(&ok(&[
        "generate",
        s,
        "--temperature",
        "0",
        "-n",
        "16",
        "--ids",
        "--no-stop",
    ]));
    assert_eq!(engine.len(), 16);
    assert!(engine.iter().all(|&id| id < 512));
    let e = fails(&["generate", s, "--prompt", "Once", "--ids"]);
    assert!(e.contains("no tokenizer"), "{e}");
    assert!(fails(&["generate", s, "-n", "4"]).contains("use --ids"));

    // Float against int8 on the float model's own greedy ids.
    let greedy = ok(&["generate", c, "--temperature", "0", "-n", "40", "--ids"]);
    let ids_file = dir.join("ids.txt");
    std::fs::write(&ids_file, format!("1 {greedy}")).unwrap();
    let json = ok(&[
        "export",
        c,
        "-o",
        s,
        "--context",
        "256",
        "--json",
        "--force",
        "--compare-ids",
        ids_file.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
    assert_eq!(report["positions"], 40);
    let agreement = report["greedy_agreement"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&agreement));
    assert!(report["float_bits_per_token"].as_f64().unwrap() > 0.0);
    std::fs::write(&ids_file, "1 2 512").unwrap();
    let e = fails(&[
        "export",
        c,
        "-o",
        s,
        "--context",
        "256",
        "--force",
        "--compare-ids",
        ids_file.to_str().unwrap(),
    ]);
    assert!(e.contains("token id 512 is outside"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A llama2.c `model.bin` whose weights are all different: the file and the floats after the
/// header.
struct Synthetic {
    header: [i32; 7],
    floats: Vec<f32>,
}

impl Synthetic {
    fn new(
        dim: i32,
        hidden: i32,
        layers: i32,
        heads: i32,
        kv_heads: i32,
        vocab: i32,
        seq_len: i32,
    ) -> Synthetic {
        let header = [dim, hidden, layers, heads, kv_heads, vocab, seq_len];
        let n = Self::blocks(&header).iter().map(|b| b.1).sum::<usize>();
        let floats = (0..n).map(|i| ((i as f32) * 0.618).sin() * 0.8).collect();
        Synthetic { header, floats }
    }

    /// run.c's `memory_map_weights`: (name, float count) in file order.
    fn blocks(h: &[i32; 7]) -> Vec<(&'static str, usize)> {
        let [d, hd, l, nh, nkv, v, s] = h.map(|x| x.unsigned_abs() as usize);
        let kv = d / nh * nkv;
        let mut b = vec![
            ("emb", v * d),
            ("rms_att", l * d),
            ("wq", l * d * d),
            ("wk", l * d * kv),
            ("wv", l * d * kv),
            ("wo", l * d * d),
            ("rms_ffn", l * d),
            ("w1", l * d * hd),
            ("w2", l * hd * d),
            ("w3", l * d * hd),
            ("rms_final", d),
            ("freq_real", s * (d / nh) / 2),
            ("freq_imag", s * (d / nh) / 2),
        ];
        if h[5] < 0 {
            b.push(("wcls", v * d));
        }
        b
    }

    /// The floats of block `name`, layer `l` (of `per_layer` values each).
    fn slice(&self, name: &str, l: usize, per_layer: usize) -> &[f32] {
        let mut at = 0;
        for (n, len) in Self::blocks(&self.header) {
            if n == name {
                return &self.floats[at + l * per_layer..at + (l + 1) * per_layer];
            }
            at += len;
        }
        panic!("no block {name}")
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.header.iter().flat_map(|v| v.to_le_bytes()).collect();
        out.extend(self.floats.iter().flat_map(|v| v.to_le_bytes()));
        out
    }
}

fn read_safetensors(path: &Path) -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

#[test]
fn synthetic_checkpoints_land_in_the_right_tensors() {
    let dir = scratch("synthetic");
    // (shared classifier, GQA 4 query / 2 kv heads) and (separate classifier, 2 / 2 heads).
    for (vocab, heads, kv_heads) in [(20, 4, 2), (-20, 2, 2)] {
        let m = Synthetic::new(8, 12, 2, heads, kv_heads, vocab, 6);
        let file = dir.join(format!("m{vocab}.bin"));
        std::fs::write(&file, m.bytes()).unwrap();
        let out = dir.join(format!("ckpt{vocab}"));
        ok(&[
            "import",
            "llama2c",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let config = config_json(&out);
        assert_eq!(config["model"]["tied_embeddings"], vocab > 0);
        assert_eq!(config["model"]["n_heads"], heads);
        assert_eq!(config["model"]["n_kv_heads"], kv_heads);
        assert_eq!(config["model"]["ffn"], "swiglu");
        let tensors = read_safetensors(&out.join("model.safetensors"));
        let (d, hd, v) = (8usize, 12usize, 20usize);
        let kv = d / heads as usize * kv_heads as usize;
        let mut expected: Vec<(String, Vec<usize>, &[f32])> = vec![(
            "tok_embeddings.weight".into(),
            vec![v, d],
            m.slice("emb", 0, v * d),
        )];
        for l in 0..2 {
            let p = |s: &str| format!("layers.{l}.{s}.weight");
            expected.extend([
                (p("attention_norm"), vec![d], m.slice("rms_att", l, d)),
                (p("attention.wq"), vec![d, d], m.slice("wq", l, d * d)),
                (p("attention.wk"), vec![kv, d], m.slice("wk", l, kv * d)),
                (p("attention.wv"), vec![kv, d], m.slice("wv", l, kv * d)),
                (p("attention.wo"), vec![d, d], m.slice("wo", l, d * d)),
                (p("ffn_norm"), vec![d], m.slice("rms_ffn", l, d)),
                (p("feed_forward.w1"), vec![hd, d], m.slice("w1", l, hd * d)),
                (p("feed_forward.w2"), vec![d, hd], m.slice("w2", l, d * hd)),
                (p("feed_forward.w3"), vec![hd, d], m.slice("w3", l, hd * d)),
            ]);
        }
        expected.push(("norm.weight".into(), vec![d], m.slice("rms_final", 0, d)));
        if vocab < 0 {
            expected.push((
                "output.weight".into(),
                vec![v, d],
                m.slice("wcls", 0, v * d),
            ));
        }
        assert_eq!(tensors.len(), expected.len(), "{:?}", tensors.keys());
        for (name, shape, values) in expected {
            let (got_shape, got) = &tensors[&name];
            assert_eq!(got_shape, &shape, "{name}");
            assert_eq!(got.as_slice(), values, "{name}");
        }
        // The import generates from BOS (float) and exports (int8).
        let g = ids(&ok(&[
            "generate",
            out.to_str().unwrap(),
            "--temperature",
            "0",
            "-n",
            "10",
            "--ids",
        ]));
        assert_eq!(g.len(), 10, "the context of 6 slides");
        let smb = dir.join(format!("m{vocab}.smb"));
        ok(&["export", out.to_str().unwrap(), "-o", smb.to_str().unwrap()]);
        assert_eq!(
            ids(&ok(&[
                "generate",
                smb.to_str().unwrap(),
                "-n",
                "5",
                "--ids",
                "--no-stop"
            ]))
            .len(),
            5
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_checkpoints_fail_with_the_file_and_the_reason() {
    let dir = scratch("bad");
    let good = Synthetic::new(8, 12, 1, 2, 1, 20, 4).bytes();
    let header = |w: [i32; 7]| -> Vec<u8> { w.iter().flat_map(|v| v.to_le_bytes()).collect() };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "shorter than the 28-byte header"),
        ("cut", good[..good.len() - 4].to_vec(), "truncated"),
        (
            "long",
            [good.clone(), vec![0; 8]].concat(),
            "longer than its header says",
        ),
        (
            "zero",
            [header([8, 12, 1, 0, 1, 20, 4]), good[28..].to_vec()].concat(),
            "n_heads is 0",
        ),
        // The largest shape the engine allows asks for ~31 GB: refused from the file length,
        // nothing allocated.
        (
            "huge",
            [header([4096, 4096, 64, 16, 16, 65535, 4096]), vec![0; 64]].concat(),
            "needs",
        ),
        (
            "v1",
            [header([0x616b_3432, 1, 0, 0, 0, 0, 0]), vec![0; 64]].concat(),
            "version 0",
        ),
    ];
    for (name, bytes, expected) in cases {
        let file = dir.join(format!("{name}.bin"));
        std::fs::write(&file, bytes).unwrap();
        let out = dir.join(format!("out-{name}"));
        let e = fails(&[
            "import",
            "llama2c",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(e.contains(expected), "{name}: {e}");
        assert!(
            e.contains(file.to_str().unwrap()),
            "{name}: the error names the file: {e}"
        );
        assert!(!e.contains("panicked"), "{name}: {e}");
        assert!(!out.exists(), "{name}: nothing written");
    }
    let missing = dir.join("missing.bin");
    let e = fails(&[
        "import",
        "llama2c",
        missing.to_str().unwrap(),
        "--out",
        dir.join("o").to_str().unwrap(),
    ]);
    assert!(e.contains("missing.bin"), "{e}");

    // An existing checkpoint is never overwritten.
    let file = dir.join("good.bin");
    std::fs::write(&file, &good).unwrap();
    let out = dir.join("ckpt");
    ok(&[
        "import",
        "llama2c",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let other = dir.join("other.bin");
    std::fs::write(&other, Synthetic::new(8, 12, 2, 2, 1, 20, 4).bytes()).unwrap();
    let e = fails(&[
        "import",
        "llama2c",
        other.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("already holds a checkpoint"), "{e}");
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run.c `tokenizer.bin`: `<unk>`, BOS, EOS, the byte tokens, then `pieces`.
fn tokenizer_bin(pieces: &[(&str, f32)]) -> Vec<u8> {
    let mut all: Vec<(String, f32)> = vec![
        ("<unk>".into(), 0.0),
        ("\n<s>\n".into(), 0.0),
        ("\n</s>\n".into(), 0.0),
    ];
    all.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0)));
    all.extend(pieces.iter().map(|(s, score)| (s.to_string(), *score)));
    let mut out = 16i32.to_le_bytes().to_vec();
    for (s, score) in &all {
        out.extend(score.to_le_bytes());
        out.extend((s.len() as i32).to_le_bytes());
        out.extend(s.as_bytes());
    }
    out
}

#[test]
fn a_tokenizer_bin_comes_along_as_a_sentencepiece_tokenizer() {
    let dir = scratch("tokenizer");
    let pieces = [
        (" ", -1.0),
        ("a", -2.0),
        ("b", -3.0),
        (" a", -4.0),
        ("ab", -5.0),
        (" ab", -6.0),
        ("c", -7.0),
    ];
    let vocab = 259 + pieces.len() as i32;
    let model = dir.join("m.bin");
    std::fs::write(&model, Synthetic::new(8, 12, 1, 2, 1, vocab, 16).bytes()).unwrap();
    let tok = dir.join("tokenizer.bin");
    let bin = tokenizer_bin(&pieces);
    std::fs::write(&tok, &bin).unwrap();
    let out = dir.join("ckpt");
    let c = out.to_str().unwrap();
    ok(&[
        "import",
        "llama2c",
        model.to_str().unwrap(),
        "--tokenizer",
        tok.to_str().unwrap(),
        "--out",
        c,
    ]);
    assert_eq!(config_json(&out)["model"]["tokenizer"], "sentencepiece");
    assert_eq!(config_json(&out)["eot_id"], 1);
    let hf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer.json")).unwrap())
            .unwrap();
    assert_eq!(hf["model"]["byte_fallback"], true);
    assert_eq!(hf["model"]["vocab"]["▁ab"], 264);

    // Text in, text out (the float model); greedy is deterministic.
    let story = ok(&[
        "generate",
        c,
        "--prompt",
        "ab ab",
        "--temperature",
        "0",
        "-n",
        "6",
    ]);
    assert!(story.starts_with("ab ab"), "{story:?}");
    assert_eq!(
        story,
        ok(&[
            "generate",
            c,
            "--prompt",
            "ab ab",
            "--temperature",
            "0",
            "-n",
            "6"
        ])
    );
    assert_eq!(
        ids(&ok(&["generate", c, "--prompt", "ab", "-n", "6", "--ids"])).len(),
        6
    );
    // The engine file keeps the tokens' text but has no SentencePiece encoder yet.
    let smb = dir.join("m.smb");
    ok(&["export", c, "-o", smb.to_str().unwrap()]);
    ok(&["generate", smb.to_str().unwrap(), "-n", "6"]);
    assert!(fails(&["generate", smb.to_str().unwrap(), "--prompt", "ab"]).contains("no tokenizer"));

    // Broken tokenizer files name themselves.
    for (name, bytes, expected) in [
        ("cut.bin", bin[..bin.len() - 3].to_vec(), "truncated"),
        (
            "long.bin",
            [bin.clone(), vec![1, 2, 3]].concat(),
            "follow the model's",
        ),
        ("short.bin", tokenizer_bin(&pieces[..2]), "truncated"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = dir.join(format!("out-{name}"));
        let e = fails(&[
            "import",
            "llama2c",
            model.to_str().unwrap(),
            "--tokenizer",
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(e.contains(expected) && e.contains(name), "{name}: {e}");
        assert!(!out.exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stories260k_int8_runs_bit_exact_in_the_emulator() {
    if !bench_common::emulator_available() {
        return;
    }
    let dir = scratch("emulator");
    let ckpt = dir.join("ckpt");
    let smb = dir.join("s.smb");
    ok(&[
        "import",
        "llama2c",
        STORIES,
        "--out",
        ckpt.to_str().unwrap(),
    ]);
    ok(&[
        "export",
        ckpt.to_str().unwrap(),
        "-o",
        smb.to_str().unwrap(),
        "--context",
        "256",
    ]);
    let json = ok(&[
        "bench",
        smb.to_str().unwrap(),
        "--emulator",
        "--check",
        "--json",
        "--prompt",
        "",
        "-n",
        "16",
    ]);
    let report: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(report["bit_exact"], true, "{json}");
    assert_eq!(report["tokens"], 16);
    std::fs::remove_dir_all(&dir).unwrap();
}
