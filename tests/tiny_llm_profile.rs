//! The 16 MB profile at Tiny-LLM scale (`arnir0/Tiny-LLM`: hidden 192, 1 layer, 2 query / 1
//! key-value heads, SwiGLU 1024, vocabulary 32000, untied): a model of exactly that shape,
//! written by the test in Hugging Face layout with formula weights, imported (`import hf
//! --no-tokenizer`), exported for `--board pico-16mb` (and refused for the 2 MB Pico), then run
//! in the emulator bit-exact with the host engine. Its vocabulary is streamed: the classifier
//! runs in chunks from flash (starmind_engine::forward::STREAMED_VOCAB).

mod bench_common;

use std::path::Path;

use bench_common::{emulator_available, run_in, scratch, stderr};

const DIM: usize = 192;
const HIDDEN: usize = 1024;
const HEADS: usize = 2;
const KV_HEADS: usize = 1;
const VOCAB: usize = 32000;
const SEQ_LEN: usize = 1024;

/// Writes the Tiny-LLM-shaped model (config.json, model.safetensors) into `dir`.
fn write_tiny_llm(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": DIM,
        "intermediate_size": HIDDEN,
        "num_hidden_layers": 1,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "vocab_size": VOCAB,
        "max_position_embeddings": SEQ_LEN,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": false,
        "bos_token_id": 1,
        "eos_token_id": 2
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let kv = DIM / HEADS * KV_HEADS;
    let p = |s: &str| format!("model.layers.0.{s}.weight");
    let shapes = [
        ("model.embed_tokens.weight".to_string(), vec![VOCAB, DIM]),
        (p("input_layernorm"), vec![DIM]),
        (p("self_attn.q_proj"), vec![DIM, DIM]),
        (p("self_attn.k_proj"), vec![kv, DIM]),
        (p("self_attn.v_proj"), vec![kv, DIM]),
        (p("self_attn.o_proj"), vec![DIM, DIM]),
        (p("post_attention_layernorm"), vec![DIM]),
        (p("mlp.gate_proj"), vec![HIDDEN, DIM]),
        (p("mlp.up_proj"), vec![HIDDEN, DIM]),
        (p("mlp.down_proj"), vec![DIM, HIDDEN]),
        ("model.norm.weight".into(), vec![DIM]),
        ("lm_head.weight".into(), vec![VOCAB, DIM]),
    ];
    // Weights from an xorshift PRNG (uniform ±0.1), norms 1: the speed depends on the shape only.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let norm = name.ends_with("norm.weight");
            let bytes = (0..n)
                .flat_map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let r = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                    let v = if norm { 1.0 } else { 0.2 * r };
                    v.to_le_bytes()
                })
                .collect();
            (name, shape, bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
            (n.clone(), view.unwrap())
        })
        .collect();
    let bytes = safetensors::tensor::serialize(views, None).unwrap();
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
}

#[test]
fn a_tiny_llm_shaped_model_fits_the_16mb_board_and_runs_bit_exact() {
    let dir = scratch("tiny_llm_profile");
    write_tiny_llm(&dir.join("hf"));
    let ok = |args: &[&str]| {
        let out = run_in(&dir, args);
        assert!(out.status.success(), "starmind {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&["import", "hf", "hf", "--no-tokenizer", "--out", "ckpt"]);

    // The 2 MB Pico cannot hold 13 MB of weights; the 16 MB board can, with a 512-token KV cache
    // in SRAM next to one chunk of logits.
    let refused = run_in(
        &dir,
        &["export", "ckpt", "-o", "pico.smb", "--context", "512"],
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("does not fit the pico board"),
        "{}",
        stderr(&refused)
    );
    assert!(!dir.join("pico.smb").exists());
    let budget = ok(&[
        "export",
        "ckpt",
        "-o",
        "tiny-llm.smb",
        "--board",
        "pico-16mb",
        "--context",
        "512",
    ]);
    eprintln!("{budget}");
    let smb = std::fs::metadata(dir.join("tiny-llm.smb")).unwrap().len();
    assert!((12_000_000..15_000_000).contains(&smb), "{smb} bytes");

    // The host engine tells a story on ids (greedy, from BOS).
    let ids = ok(&[
        "generate",
        "tiny-llm.smb",
        "--temperature",
        "0",
        "-n",
        "4",
        "--ids",
    ]);
    let ids: Vec<u32> = ids.split_whitespace().map(|w| w.parse().unwrap()).collect();
    assert_eq!(ids.len(), 4);
    assert!(ids.iter().all(|&id| (id as usize) < VOCAB));

    // The float checkpoint against the model file on those ids: the host scores every chunk of
    // the streamed vocabulary (quantisation of random weights, so only sanity is checked).
    let ids_file = dir.join("ids.txt");
    let ids_text: Vec<String> = std::iter::once(1)
        .chain(ids)
        .map(|i| i.to_string())
        .collect();
    std::fs::write(&ids_file, ids_text.join(" ")).unwrap();
    let compare = ok(&[
        "export",
        "ckpt",
        "-o",
        "compared.smb",
        "--board",
        "pico-16mb",
        "--context",
        "512",
        "--compare-ids",
        ids_file.to_str().unwrap(),
        "--json",
    ]);
    let compare: serde_json::Value = serde_json::from_str(compare.lines().last().unwrap()).unwrap();
    let float_bits = compare["float_bits_per_token"].as_f64().unwrap();
    let int_bits = compare["int_bits_per_token"].as_f64().unwrap();
    assert!(
        float_bits > 0.0 && (int_bits - float_bits).abs() < 0.1 * float_bits,
        "{compare}"
    );

    if !emulator_available() {
        return;
    }
    let bench = ok(&[
        "bench",
        "tiny-llm.smb",
        "--emulator",
        "--check",
        "--json",
        "-n",
        "2",
        "--prompt",
        "",
    ]);
    let json: serde_json::Value = serde_json::from_str(&bench).expect("one JSON object");
    assert_eq!(json["bit_exact"], true, "{json}");
    assert_eq!(json["tokens"], 2);
    assert!(
        json["decode_tok_per_s"].as_f64().is_some_and(|v| v > 0.0),
        "{json}"
    );
    eprintln!("{json}");
}
