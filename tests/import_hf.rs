//! `starmind import hf` end to end through the real binary: a tiny Llama the test writes in
//! Hugging Face layout (config.json, model.safetensors, a Llama-style tokenizer.json), imported
//! from a local directory and from a fake hub on 127.0.0.1 (cache, offline mode, not found,
//! server error, unreachable), and the settings it must refuse. The logits of an import against
//! a Hugging Face-convention forward pass are checked in `src/import/hf.rs`'s tests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("starmind-import-hf-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `starmind args…` with a private hf-hub cache and no proxies or endpoint from the caller.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_starmind"));
    cmd.args(args).current_dir(repo("."));
    for var in [
        "HF_ENDPOINT",
        "HF_HUB_OFFLINE",
        "HF_HOME",
        "http_proxy",
        "HTTP_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("starting starmind")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(args, env);
    assert!(
        out.status.success(),
        "starmind {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(args, env);
    assert!(
        !out.status.success(),
        "starmind {args:?} should fail: {}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    err
}

const DIM: usize = 16;
const HIDDEN: usize = 24;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const VOCAB: usize = 270;

fn config_json() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": DIM,
        "intermediate_size": HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "vocab_size": VOCAB,
        "max_position_embeddings": 32,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": false,
        "bos_token_id": 1,
        "eos_token_id": 2
    })
}

/// Named tensors: (name, shape, values).
type Weights = Vec<(String, Vec<usize>, Vec<f32>)>;
/// A model's files by name.
type Files = HashMap<String, Vec<u8>>;

/// HF-named weights of the tiny Llama (values from a fixed formula).
fn weights() -> Weights {
    let kv = DIM / HEADS * KV_HEADS;
    let mut shapes = vec![("model.embed_tokens.weight".to_string(), vec![VOCAB, DIM])];
    for l in 0..2 {
        let p = |s: &str| format!("model.layers.{l}.{s}.weight");
        shapes.extend([
            (p("input_layernorm"), vec![DIM]),
            (p("self_attn.q_proj"), vec![DIM, DIM]),
            (p("self_attn.k_proj"), vec![kv, DIM]),
            (p("self_attn.v_proj"), vec![kv, DIM]),
            (p("self_attn.o_proj"), vec![DIM, DIM]),
            (p("post_attention_layernorm"), vec![DIM]),
            (p("mlp.gate_proj"), vec![HIDDEN, DIM]),
            (p("mlp.up_proj"), vec![HIDDEN, DIM]),
            (p("mlp.down_proj"), vec![DIM, HIDDEN]),
        ]);
    }
    shapes.push(("model.norm.weight".into(), vec![DIM]));
    shapes.push(("lm_head.weight".into(), vec![VOCAB, DIM]));
    shapes
        .into_iter()
        .enumerate()
        .map(|(k, (name, shape))| {
            let n: usize = shape.iter().product();
            let norm = name.ends_with("norm.weight");
            let values = (0..n)
                .map(|i| {
                    let r = ((i * 31 + k * 7) as f32 * 0.37).sin();
                    if norm {
                        1.0 + 0.2 * r
                    } else {
                        0.4 * r
                    }
                })
                .collect();
            (name, shape, values)
        })
        .collect()
}

fn safetensors_bytes(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            (
                n.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize(views, None).unwrap()
}

/// A Llama-style tokenizer.json (BPE with byte fallback, Metaspace pre-tokenizer): `<unk>`,
/// `<s>`, `</s>`, 256 byte tokens, then a few pieces.
fn tokenizer_json() -> serde_json::Value {
    let mut vocab = serde_json::Map::new();
    for (id, name) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        vocab.insert(name.to_string(), id.into());
    }
    for b in 0..=255u32 {
        vocab.insert(format!("<0x{b:02X}>"), (3 + b).into());
    }
    for (i, piece) in ["▁", "a", "b", "▁a", "ab", "▁ab"].iter().enumerate() {
        vocab.insert(piece.to_string(), (259 + i).into());
    }
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": [["▁", "a"], ["a", "b"], ["▁a", "b"]]}
    })
}

/// The model's files by name.
fn files() -> Files {
    HashMap::from([
        (
            "config.json".to_string(),
            config_json().to_string().into_bytes(),
        ),
        (
            "model.safetensors".to_string(),
            safetensors_bytes(&weights()),
        ),
        (
            "tokenizer.json".to_string(),
            tokenizer_json().to_string().into_bytes(),
        ),
    ])
}

fn write_dir(dir: &Path, files: &Files) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn a_local_llama_imports_and_runs() {
    let dir = scratch("local");
    let model = dir.join("tiny-llama");
    write_dir(&model, &files());
    let out = dir.join("ckpt");
    let c = out.to_str().unwrap();
    let summary = ok(&["import", "hf", model.to_str().unwrap(), "--out", c], &[]);
    assert!(summary.contains("separate classifier"), "{summary}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["tokenizer"], "sentencepiece");
    assert_eq!(config["model"]["n_kv_heads"], KV_HEADS);
    assert_eq!(config["model"]["seq_len"], 32);
    assert_eq!(config["eot_id"], 1, "a story starts after <s>");
    assert_eq!(
        config["eos_ids"],
        serde_json::json!([2]),
        "and ends at </s> (or <s>)"
    );
    let story = ok(
        &[
            "generate",
            c,
            "--prompt",
            "ab a",
            "--temperature",
            "0",
            "-n",
            "5",
        ],
        &[],
    );
    assert!(story.starts_with("ab a"), "{story:?}");
    let ids: Vec<u32> = ok(
        &[
            "generate",
            c,
            "--temperature",
            "0",
            "-n",
            "40",
            "--ids",
            "--no-stop",
        ],
        &[],
    )
    .split_whitespace()
    .map(|w| w.parse().unwrap())
    .collect();
    assert_eq!(ids.len(), 40, "the 32-token context slides");
    assert!(ids.iter().all(|&id| (id as usize) < VOCAB));
    let smb = dir.join("m.smb");
    ok(&["export", c, "-o", smb.to_str().unwrap()], &[]);

    // Without its tokenizer, for ids only.
    let bare = dir.join("bare");
    ok(
        &[
            "import",
            "hf",
            model.to_str().unwrap(),
            "--no-tokenizer",
            "--out",
            bare.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!bare.join("tokenizer.json").exists());
    let ids_only = ok(
        &[
            "generate",
            bare.to_str().unwrap(),
            "--temperature",
            "0",
            "-n",
            "40",
            "--ids",
            "--no-stop",
        ],
        &[],
    );
    let ids_only: Vec<u32> = ids_only
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    assert_eq!(ids_only, ids, "the tokenizer does not change the model");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn what_starmind_cannot_compute_is_refused() {
    let dir = scratch("refuse");
    let with_config = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut f = files();
        let mut config = config_json();
        edit(&mut config);
        f.insert("config.json".into(), config.to_string().into_bytes());
        f
    };
    let with_weights = |edit: &dyn Fn(&mut Weights)| {
        let mut f = files();
        let mut w = weights();
        edit(&mut w);
        f.insert("model.safetensors".into(), safetensors_bytes(&w));
        f
    };
    let cases: Vec<(&str, Files, &str)> = vec![
        (
            "scaling",
            with_config(&|c| {
                c["rope_scaling"] = serde_json::json!({"type": "dynamic", "factor": 2.0})
            }),
            "rope_scaling",
        ),
        (
            "theta",
            with_config(&|c| c["rope_theta"] = 1e6.into()),
            "rope_theta",
        ),
        (
            "act",
            with_config(&|c| c["hidden_act"] = "gelu".into()),
            "hidden_act",
        ),
        (
            "arch",
            with_config(&|c| c["architectures"] = serde_json::json!(["GPT2LMHeadModel"])),
            "LlamaForCausalLM",
        ),
        (
            "long",
            with_config(&|c| c["max_position_embeddings"] = 8192.into()),
            "--seq-len",
        ),
        (
            "bos",
            with_config(&|c| c["bos_token_id"] = 0.into()),
            "bos_token_id",
        ),
        (
            "bias",
            with_weights(&|w| {
                w.push((
                    "model.layers.0.self_attn.q_proj.bias".into(),
                    vec![DIM],
                    vec![0.0; DIM],
                ))
            }),
            "no biases",
        ),
        (
            "head",
            with_weights(&|w| w.retain(|t| t.0 != "lm_head.weight")),
            "lm_head",
        ),
        (
            "shape",
            with_weights(&|w| w[1].1 = vec![DIM / 2, 2]),
            "shape",
        ),
        (
            "extra",
            with_weights(&|w| {
                w.push((
                    "model.layers.0.adapter.weight".into(),
                    vec![2],
                    vec![0.0; 2],
                ))
            }),
            "unexpected tensors",
        ),
        (
            "no-tokenizer",
            {
                let mut f = files();
                f.remove("tokenizer.json");
                f
            },
            "--no-tokenizer",
        ),
        (
            "no-weights",
            {
                let mut f = files();
                f.remove("model.safetensors");
                f
            },
            "neither model.safetensors nor",
        ),
    ];
    for (name, model_files, expected) in cases {
        let model = dir.join(name);
        write_dir(&model, &model_files);
        let out = dir.join(format!("out-{name}"));
        let e = fails(
            &[
                "import",
                "hf",
                model.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &[],
        );
        assert!(e.contains(expected), "{name}: {e}");
        assert!(!out.join("config.json").exists(), "{name}: nothing written");
    }
    // A long context is fine once it is cut to what the engine holds.
    let model = dir.join("long");
    let out = dir.join("long-ckpt");
    ok(
        &[
            "import",
            "hf",
            model.to_str().unwrap(),
            "--seq-len",
            "64",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fake Hugging Face hub on 127.0.0.1: `/{repo}/resolve/main/{file}` serves the files of
/// `repos` with the headers hf-hub reads (etag, x-repo-commit, content-range); a repo named
/// `broken/server` answers 500, anything else 404. Counts the requests it answers.
struct FakeHub {
    endpoint: String,
    requests: Arc<AtomicUsize>,
}

impl FakeHub {
    fn start(repos: HashMap<String, Files>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                let found = path.split_once("/resolve/main/").and_then(|(repo, file)| {
                    repos
                        .get(repo.trim_start_matches('/'))
                        .and_then(|f| f.get(file))
                });
                let response = match found {
                    Some(body) => {
                        let etag: u64 = body.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\netag: \"{etag:016x}\"\r\n\
                             x-repo-commit: 0123456789abcdef0123456789abcdef01234567\r\n\
                             content-range: bytes 0-{}/{}\r\nConnection: close\r\n\r\n",
                            body.len(),
                            body.len().saturating_sub(1),
                            body.len()
                        )
                        .into_bytes();
                        r.extend(body);
                        r
                    }
                    None if path.starts_with("/broken/server/") => {
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
                    }
                    None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                };
                let _ = stream.write_all(&response);
            }
        });
        FakeHub { endpoint, requests }
    }
}

#[test]
fn the_hub_path_caches_works_offline_and_tells_failures_apart() {
    let dir = scratch("hub");
    let hub = FakeHub::start(HashMap::from([("tiny/llama".to_string(), files())]));
    let home = dir.join("hf-home");
    let home = home.to_str().unwrap();
    let online = [("HF_ENDPOINT", hub.endpoint.as_str()), ("HF_HOME", home)];
    let out = |n: &str| dir.join(n).to_str().unwrap().to_string();

    let first = out("first");
    ok(&["import", "hf", "tiny/llama", "--out", &first], &online);
    assert!(hub.requests.load(Ordering::SeqCst) > 0);
    let cached = Path::new(home)
        .join("hub/models--tiny--llama/snapshots/0123456789abcdef0123456789abcdef01234567");
    assert!(
        cached.join("model.safetensors").is_file(),
        "{}",
        cached.display()
    );

    // Offline: from the cache, without a single request.
    let before = hub.requests.load(Ordering::SeqCst);
    let offline = [
        ("HF_ENDPOINT", hub.endpoint.as_str()),
        ("HF_HOME", home),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let second = out("second");
    ok(&["import", "hf", "tiny/llama", "--out", &second], &offline);
    assert_eq!(hub.requests.load(Ordering::SeqCst), before);
    assert_eq!(
        std::fs::read(Path::new(&first).join("model.safetensors")).unwrap(),
        std::fs::read(Path::new(&second).join("model.safetensors")).unwrap()
    );
    let e = fails(
        &["import", "hf", "other/model", "--out", &out("x1")],
        &offline,
    );
    assert!(
        e.contains("offline") && e.contains("not in the hf-hub cache"),
        "{e}"
    );

    let e = fails(
        &["import", "hf", "missing/model", "--out", &out("x2")],
        &online,
    );
    assert!(
        e.contains("missing/model") && e.contains("has no config.json"),
        "{e}"
    );
    let e = fails(
        &["import", "hf", "broken/server", "--out", &out("x3")],
        &online,
    );
    assert!(e.contains("answered HTTP 500"), "{e}");

    // Nothing listens on a port we just released.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let unreachable = format!("http://{closed}");
    let e = fails(
        &["import", "hf", "tiny/other", "--out", &out("x4")],
        &[("HF_ENDPOINT", unreachable.as_str()), ("HF_HOME", home)],
    );
    assert!(e.contains("cannot reach the hub"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
