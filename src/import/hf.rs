//! Hugging Face Llama models (`LlamaForCausalLM`): `config.json`, `model.safetensors` (or its
//! shards), `tokenizer.json`, from a local directory or the hub through hf-hub (its cache,
//! `HF_HOME`, `HF_ENDPOINT`, `HF_HUB_OFFLINE`).
//!
//! Tensor names map one to one (`model.layers.{l}.self_attn.q_proj` → `layers.{l}.attention.wq`,
//! `mlp.gate_proj` → `w1`, `mlp.up_proj` → `w3`, `mlp.down_proj` → `w2`, …). One transform:
//! Hugging Face's Llama rotates each head's two halves (`rotate_half`: element j pairs with
//! j + head_size/2), starmind and llama2.c rotate interleaved pairs (2j with 2j+1), at the
//! same frequency for pair j. Permuting the rows of `q_proj` and `k_proj` within each head,
//! new row 2j + k = old row k·head_size/2 + j (k ∈ {0, 1}), makes the imported model compute the
//! same function: q·k is a sum over pairs, so the order of the pairs does not matter.
//!
//! What starmind's block cannot express is refused, naming the setting: `rope_scaling`, a
//! `rope_theta` other than 10000, an `rms_norm_eps` other than 1e-5, an activation other than
//! SiLU, biases, a `head_dim` other than hidden_size / num_attention_heads.

use super::{write_checkpoint, Imported};
use crate::config::{Ffn, ModelConfig, NamedConfig, TokenizerKind, TrainConfig};
use crate::tokenizer::Tokenizer;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Arguments of `starmind import hf`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A Hugging Face model id (`owner/name`) or a local directory holding its files.
    pub source: String,
    /// The checkpoint directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Branch, tag or commit on the hub.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Context length of the imported model (default: config.json's max_position_embeddings,
    /// which must then be at most 4096, the engine's limit).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Import without tokenizer.json: the checkpoint then runs on token ids.
    #[arg(long)]
    pub no_tokenizer: bool,
}

/// `starmind import hf`.
pub fn run(args: Args) -> Result<()> {
    let files = Files::new(&args.source, &args.revision);
    let imported = import(&files, args.seq_len, !args.no_tokenizer)?;
    write_checkpoint(&args.out, &imported)
}

/// The longest context the engine's RoPE table covers (`format::MAX_DIM`).
const MAX_SEQ_LEN: usize = starmind_engine::format::MAX_DIM;
/// starmind's RMSNorm epsilon and RoPE base (model.rs and the engine).
const RMS_NORM_EPS: f64 = crate::model::RMS_NORM_EPS;
const ROPE_THETA: f64 = 10000.0;

/// Where a model's files come from.
pub enum Files {
    Local(PathBuf),
    Hub { id: String, revision: String },
}

impl Files {
    /// A directory that exists is local; anything else is a hub id.
    pub fn new(source: &str, revision: &str) -> Files {
        if Path::new(source).is_dir() {
            Files::Local(PathBuf::from(source))
        } else {
            Files::Hub {
                id: source.to_string(),
                revision: revision.to_string(),
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Files::Local(dir) => dir.display().to_string(),
            Files::Hub { id, revision } => format!("{id} (revision {revision})"),
        }
    }

    /// The local path of `name`; `Ok(None)` when the model has no such file.
    pub fn get(&self, name: &str) -> Result<Option<PathBuf>> {
        match self {
            Files::Local(dir) => {
                let path = dir.join(name);
                Ok(path.is_file().then_some(path))
            }
            Files::Hub { id, revision } => hub_get(id, revision, name),
        }
    }

    fn require(&self, name: &str) -> Result<PathBuf> {
        self.get(name)?.with_context(|| match self {
            Files::Local(_) => format!("{} has no {name}", self.describe()),
            Files::Hub { .. } => format!(
                "{} has no {name} on {} (not found: no such repository or file, or a private or gated one)",
                self.describe(),
                crate::hub::endpoint()
            ),
        })
    }
}

/// `name` of hub model `id` from the hf-hub cache, else downloaded into it ([`crate::hub`]: with
/// timeouts). Not found (404 or 401, which the hub answers for a missing or private repository)
/// is `Ok(None)`; offline with no cached copy, an unreachable hub and a bad answer are errors
/// that say which.
fn hub_get(id: &str, revision: &str, name: &str) -> Result<Option<PathBuf>> {
    match crate::hub::HubFile::model(id, revision, name).get() {
        Ok(path) => Ok(Some(path)),
        Err(crate::hub::HubError::NotFound { .. }) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// The Llama settings of `config.json` that shape the model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: u32,
    /// `eos_token_id`: one id or a list (transformers' default 2).
    pub eos_token_ids: Vec<u32>,
}

impl LlamaConfig {
    /// Reads `config.json`, refusing what starmind's block does not compute.
    pub fn parse(json: &serde_json::Value) -> Result<LlamaConfig> {
        let archs: Vec<&str> = json["architectures"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let llama = archs.contains(&"LlamaForCausalLM")
            || (archs.is_empty() && json["model_type"] == "llama");
        if !llama {
            bail!(
                "architectures {archs:?} (model_type {}): only LlamaForCausalLM is supported",
                json["model_type"]
            );
        }
        let size = |key: &str, default: Option<usize>| -> Result<usize> {
            match &json[key] {
                serde_json::Value::Null => {
                    default.with_context(|| format!("config.json has no {key}"))
                }
                v => v
                    .as_u64()
                    .filter(|&n| n > 0)
                    .map(|n| n as usize)
                    .with_context(|| format!("{key} is {v}, expected a positive integer")),
            }
        };
        let heads = size("num_attention_heads", None)?;
        let hidden = size("hidden_size", None)?;
        let config = LlamaConfig {
            hidden_size: hidden,
            intermediate_size: size("intermediate_size", None)?,
            num_hidden_layers: size("num_hidden_layers", None)?,
            num_attention_heads: heads,
            num_key_value_heads: size("num_key_value_heads", Some(heads))?,
            vocab_size: size("vocab_size", None)?,
            // transformers' LlamaConfig defaults.
            max_position_embeddings: size("max_position_embeddings", Some(2048))?,
            tie_word_embeddings: json["tie_word_embeddings"].as_bool().unwrap_or(false),
            bos_token_id: match &json["bos_token_id"] {
                serde_json::Value::Null => 1,
                v => token_id(v).with_context(|| format!("bos_token_id is {v}"))?,
            },
            eos_token_ids: match &json["eos_token_id"] {
                serde_json::Value::Null => Some(vec![2]),
                serde_json::Value::Array(ids) => ids.iter().map(token_id).collect::<Option<_>>(),
                v => token_id(v).map(|id| vec![id]),
            }
            .with_context(|| format!("eos_token_id is {}", json["eos_token_id"]))?,
        };
        let number = |key: &str, default: f64| json[key].as_f64().unwrap_or(default);
        if !json["rope_scaling"].is_null() {
            bail!(
                "rope_scaling {} is not supported (starmind's RoPE is plain, base 10000)",
                json["rope_scaling"]
            );
        }
        let theta = number("rope_theta", ROPE_THETA);
        if theta != ROPE_THETA {
            bail!("rope_theta {theta} is not supported (starmind's RoPE base is 10000)");
        }
        let eps = number("rms_norm_eps", 1e-6);
        if (eps - RMS_NORM_EPS).abs() > 1e-12 {
            bail!("rms_norm_eps {eps:e} is not supported (starmind's RMSNorm uses 1e-5)");
        }
        let act = json["hidden_act"].as_str().unwrap_or("silu");
        if act != "silu" {
            bail!("hidden_act {act:?} is not supported (starmind's SwiGLU uses silu)");
        }
        for flag in ["attention_bias", "mlp_bias"] {
            if json[flag].as_bool() == Some(true) {
                bail!("{flag} is true: starmind's Llama block has no biases");
            }
        }
        if !hidden.is_multiple_of(heads) {
            bail!("hidden_size {hidden} is not a multiple of num_attention_heads {heads}");
        }
        if let Some(head_dim) = json["head_dim"].as_u64() {
            if head_dim as usize != hidden / heads {
                bail!(
                    "head_dim {head_dim} differs from hidden_size / num_attention_heads = {}: not supported",
                    hidden / heads
                );
            }
        }
        if !(hidden / heads).is_multiple_of(2) {
            bail!(
                "head size {} is odd: rotate_half needs an even one",
                hidden / heads
            );
        }
        Ok(config)
    }

    fn head_size(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// A token id in `config.json`.
fn token_id(v: &serde_json::Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// Reads a Llama model into an [`Imported`] checkpoint.
pub fn import(files: &Files, seq_len: Option<usize>, with_tokenizer: bool) -> Result<Imported> {
    let what = files.describe();
    let config_path = files.require("config.json")?;
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .with_context(|| format!("parsing {}", config_path.display()))?;
    let llama = LlamaConfig::parse(&json).with_context(|| format!("{}", config_path.display()))?;
    let seq_len = match seq_len {
        Some(n) if (1..=MAX_SEQ_LEN).contains(&n) => n,
        Some(n) => bail!("--seq-len {n} must be in 1..={MAX_SEQ_LEN}"),
        None if llama.max_position_embeddings <= MAX_SEQ_LEN => llama.max_position_embeddings,
        None => bail!(
            "{}: max_position_embeddings {} exceeds {MAX_SEQ_LEN}, the engine's limit: pass --seq-len",
            config_path.display(),
            llama.max_position_embeddings
        ),
    };

    let tokenizer = if with_tokenizer {
        let path = files.get("tokenizer.json")?.with_context(|| {
            format!(
                "{what} has no tokenizer.json: pass --no-tokenizer to import it for token ids only"
            )
        })?;
        let tok = Tokenizer::load(&path)?;
        if tok.eot_id() != llama.bos_token_id {
            bail!(
                "{}: the story separator (<s>) is id {}, but config.json's bos_token_id is {}",
                path.display(),
                tok.eot_id(),
                llama.bos_token_id
            );
        }
        Some(tok)
    } else {
        None
    };
    let model = ModelConfig {
        vocab_size: llama.vocab_size,
        dim: llama.hidden_size,
        hidden_dim: llama.intermediate_size,
        n_layers: llama.num_hidden_layers,
        n_heads: llama.num_attention_heads,
        n_kv_heads: llama.num_key_value_heads,
        seq_len,
        ffn: Ffn::Swiglu,
        tied_embeddings: llama.tie_word_embeddings,
        tokenizer: tokenizer
            .as_ref()
            .map_or(TokenizerKind::None, Tokenizer::kind),
        head_size: None,
    };
    model
        .validate()
        .with_context(|| format!("{}", config_path.display()))?;
    let hf_tensors = read_weights(files)?;
    let tensors =
        convert(&llama, &model, hf_tensors).with_context(|| format!("the weights of {what}"))?;
    let name = match files {
        Files::Local(dir) => dir
            .file_name()
            .map_or("hf".into(), |n| n.to_string_lossy().into_owned()),
        Files::Hub { id, .. } => id.replace('/', "--"),
    };
    Ok(Imported {
        config: NamedConfig {
            name,
            description: format!("imported from the Hugging Face Llama model {what}"),
            seed_params: None,
            families: Vec::new(),
            model,
            train: TrainConfig::default(),
            eot_id: Some(llama.bos_token_id),
            eos_ids: llama.eos_token_ids.clone(),
        },
        tensors,
        tokenizer,
        source: format!("hf:{what}"),
    })
}

/// Every tensor of `model.safetensors`, or of the shards `model.safetensors.index.json` names.
fn read_weights(files: &Files) -> Result<HashMap<String, Tensor>> {
    let shards: Vec<PathBuf> = match files.get("model.safetensors")? {
        Some(path) => vec![path],
        None => {
            let index = files
                .get("model.safetensors.index.json")?
                .with_context(|| {
                    format!(
                        "{} has neither model.safetensors nor model.safetensors.index.json",
                        files.describe()
                    )
                })?;
            let json: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(&index)
                    .with_context(|| format!("reading {}", index.display()))?,
            )
            .with_context(|| format!("parsing {}", index.display()))?;
            let names: BTreeSet<&str> = json["weight_map"]
                .as_object()
                .with_context(|| format!("{}: no weight_map", index.display()))?
                .values()
                .filter_map(|v| v.as_str())
                .collect();
            names
                .into_iter()
                .map(|n| files.require(n))
                .collect::<Result<_>>()?
        }
    };
    let mut tensors = HashMap::new();
    for shard in shards {
        let loaded = candle_core::safetensors::load(&shard, &Device::Cpu)
            .with_context(|| format!("reading {}", shard.display()))?;
        for (name, t) in loaded {
            if !matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) {
                bail!(
                    "{}: tensor {name} is {:?}; only f32, f16 and bf16 weights are supported (no quantized checkpoints)",
                    shard.display(),
                    t.dtype()
                );
            }
            tensors.insert(name, t.to_dtype(DType::F32)?);
        }
    }
    Ok(tensors)
}

/// The permutation of one projection's rows from `rotate_half` order to interleaved pairs:
/// new row `h·hs + 2j + k` is old row `h·hs + k·hs/2 + j`.
pub fn rotate_half_to_interleaved(heads: usize, head_size: usize) -> Vec<u32> {
    let half = head_size / 2;
    (0..heads * head_size)
        .map(|row| {
            let (h, i) = (row / head_size, row % head_size);
            let (j, k) = (i / 2, i % 2);
            (h * head_size + k * half + j) as u32
        })
        .collect()
}

/// Hugging Face names → checkpoint names, q/k rows permuted, every name and shape checked.
fn convert(
    llama: &LlamaConfig,
    model: &ModelConfig,
    mut hf: HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>> {
    let hs = llama.head_size();
    let expected: HashMap<String, Vec<usize>> =
        crate::model::tensor_shapes(model).into_iter().collect();
    let mut out = HashMap::new();
    let mut take = |theirs: &str, ours: &str, rope_heads: Option<usize>| -> Result<()> {
        let t = hf
            .remove(theirs)
            .with_context(|| format!("missing tensor {theirs}"))?;
        let shape = &expected[ours];
        if t.dims() != shape.as_slice() {
            bail!(
                "tensor {theirs} has shape {:?}, expected {shape:?}",
                t.dims()
            );
        }
        let t = match rope_heads {
            Some(heads) => {
                let index = Tensor::new(rotate_half_to_interleaved(heads, hs), &Device::Cpu)?;
                t.index_select(&index, 0)?
            }
            None => t,
        };
        out.insert(ours.to_string(), t);
        Ok(())
    };
    take("model.embed_tokens.weight", "tok_embeddings.weight", None)?;
    for l in 0..llama.num_hidden_layers {
        let theirs = |s: &str| format!("model.layers.{l}.{s}.weight");
        let ours = |s: &str| format!("layers.{l}.{s}.weight");
        take(&theirs("input_layernorm"), &ours("attention_norm"), None)?;
        take(
            &theirs("self_attn.q_proj"),
            &ours("attention.wq"),
            Some(llama.num_attention_heads),
        )?;
        take(
            &theirs("self_attn.k_proj"),
            &ours("attention.wk"),
            Some(llama.num_key_value_heads),
        )?;
        take(&theirs("self_attn.v_proj"), &ours("attention.wv"), None)?;
        take(&theirs("self_attn.o_proj"), &ours("attention.wo"), None)?;
        take(&theirs("post_attention_layernorm"), &ours("ffn_norm"), None)?;
        take(&theirs("mlp.gate_proj"), &ours("feed_forward.w1"), None)?;
        take(&theirs("mlp.down_proj"), &ours("feed_forward.w2"), None)?;
        take(&theirs("mlp.up_proj"), &ours("feed_forward.w3"), None)?;
    }
    take("model.norm.weight", "norm.weight", None)?;
    if llama.tie_word_embeddings {
        if let Some(head) = hf.remove("lm_head.weight") {
            let same = head
                .sub(&out["tok_embeddings.weight"])
                .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
                .map_err(|e| anyhow!("comparing lm_head.weight with the embedding: {e}"))?;
            if same != 0.0 {
                bail!("tie_word_embeddings is true but lm_head.weight differs from model.embed_tokens.weight");
            }
        }
    } else {
        take("lm_head.weight", "output.weight", None).map_err(|e| {
            anyhow!(
                "{e} (config.json says tie_word_embeddings false: the model needs its own lm_head)"
            )
        })?;
    }
    // Rotary inverse frequencies are a buffer some old checkpoints saved; they are recomputed.
    hf.retain(|name, _| !name.ends_with("rotary_emb.inv_freq"));
    let mut left: Vec<&String> = hf.keys().collect();
    left.sort();
    if let Some(bias) = left.iter().find(|n| n.ends_with(".bias")) {
        bail!("tensor {bias}: starmind's Llama block has no biases");
    }
    if !left.is_empty() {
        bail!("unexpected tensors {left:?}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Rng;

    /// A tiny Llama in Hugging Face layout: config.json values and HF-named f32 weights.
    struct TinyLlama {
        dim: usize,
        hidden: usize,
        layers: usize,
        heads: usize,
        kv_heads: usize,
        vocab: usize,
        tied: bool,
        weights: HashMap<String, (Vec<usize>, Vec<f32>)>,
    }

    impl TinyLlama {
        fn new(heads: usize, kv_heads: usize, tied: bool, seed: u64) -> TinyLlama {
            let (dim, hidden, layers, vocab) = (24, 20, 2, 40);
            let kv = dim / heads * kv_heads;
            let mut rng = Rng::new(seed);
            let mut weights = HashMap::new();
            let mut add = |name: String, shape: Vec<usize>, norm: bool| {
                let n = shape.iter().product();
                let values = (0..n)
                    .map(|_| {
                        let r = rng.normal() as f32;
                        if norm {
                            1.0 + 0.3 * r
                        } else {
                            0.5 * r
                        }
                    })
                    .collect();
                weights.insert(name, (shape, values));
            };
            add("model.embed_tokens.weight".into(), vec![vocab, dim], false);
            for l in 0..layers {
                let p = |s: &str| format!("model.layers.{l}.{s}.weight");
                add(p("input_layernorm"), vec![dim], true);
                add(p("self_attn.q_proj"), vec![dim, dim], false);
                add(p("self_attn.k_proj"), vec![kv, dim], false);
                add(p("self_attn.v_proj"), vec![kv, dim], false);
                add(p("self_attn.o_proj"), vec![dim, dim], false);
                add(p("post_attention_layernorm"), vec![dim], true);
                add(p("mlp.gate_proj"), vec![hidden, dim], false);
                add(p("mlp.up_proj"), vec![hidden, dim], false);
                add(p("mlp.down_proj"), vec![dim, hidden], false);
            }
            add("model.norm.weight".into(), vec![dim], true);
            if !tied {
                add("lm_head.weight".into(), vec![vocab, dim], false);
            }
            TinyLlama {
                dim,
                hidden,
                layers,
                heads,
                kv_heads,
                vocab,
                tied,
                weights,
            }
        }

        fn config_json(&self) -> serde_json::Value {
            serde_json::json!({
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_size": self.dim,
                "intermediate_size": self.hidden,
                "num_hidden_layers": self.layers,
                "num_attention_heads": self.heads,
                "num_key_value_heads": self.kv_heads,
                "vocab_size": self.vocab,
                "max_position_embeddings": 16,
                "rms_norm_eps": 1e-5,
                "rope_theta": 10000.0,
                "rope_scaling": null,
                "hidden_act": "silu",
                "tie_word_embeddings": self.tied,
                "bos_token_id": 1,
                "eos_token_id": 2,
                "torch_dtype": "float32"
            })
        }

        /// Writes config.json and model.safetensors (in `dtype`) to a fresh directory.
        fn write(&self, name: &str, dtype: DType) -> PathBuf {
            let dir =
                std::env::temp_dir().join(format!("starmind-hf-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("config.json"), self.config_json().to_string()).unwrap();
            let tensors: HashMap<String, Tensor> = self
                .weights
                .iter()
                .map(|(n, (shape, v))| {
                    let t = Tensor::from_slice(v, shape.as_slice(), &Device::Cpu).unwrap();
                    (n.clone(), t.to_dtype(dtype).unwrap())
                })
                .collect();
            candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
            dir
        }

        /// The weights as the file holds them (rounded through `dtype`).
        fn rounded(&self, dtype: DType) -> HashMap<String, Vec<f32>> {
            self.weights
                .iter()
                .map(|(n, (shape, v))| {
                    let t = Tensor::from_slice(v, shape.as_slice(), &Device::Cpu).unwrap();
                    let t = t.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
                    (n.clone(), t.flatten_all().unwrap().to_vec1().unwrap())
                })
                .collect()
        }
    }

    /// Hugging Face's `LlamaForCausalLM` forward written out for one sequence: `rotate_half`
    /// RoPE over each head's two halves, HF tensor names, grouped KV heads, SwiGLU MLP.
    fn hf_reference_logits(
        m: &TinyLlama,
        w: &HashMap<String, Vec<f32>>,
        ids: &[u32],
    ) -> Vec<Vec<f32>> {
        let (dim, hs) = (m.dim, m.dim / m.heads);
        let kv_dim = hs * m.kv_heads;
        let linear = |name: &str, x: &[f32]| -> Vec<f32> {
            let wt = &w[name];
            (0..wt.len() / x.len())
                .map(|r| {
                    x.iter()
                        .enumerate()
                        .map(|(i, v)| wt[r * x.len() + i] * v)
                        .sum()
                })
                .collect()
        };
        let rms = |name: &str, x: &[f32]| -> Vec<f32> {
            let var = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
            let s = 1.0 / (var + 1e-5).sqrt();
            x.iter().zip(&w[name]).map(|(v, g)| g * (v * s)).collect()
        };
        // q·cos + rotate_half(q)·sin, cos/sin = cat(freqs, freqs) per head.
        let rope = |x: &mut [f32], pos: usize| {
            let half = hs / 2;
            for head in x.chunks_mut(hs) {
                let orig = head.to_vec();
                for i in 0..hs {
                    let j = i % half;
                    let inv_freq = 1.0 / 10000f32.powf((2 * j) as f32 / hs as f32);
                    let (sin, cos) = (pos as f32 * inv_freq).sin_cos();
                    let rotated = if i < half {
                        -orig[i + half]
                    } else {
                        orig[i - half]
                    };
                    head[i] = orig[i] * cos + rotated * sin;
                }
            }
        };
        let mut keys: Vec<Vec<Vec<f32>>> = vec![vec![]; m.layers];
        let mut values: Vec<Vec<Vec<f32>>> = vec![vec![]; m.layers];
        let mut logits = vec![];
        for (pos, &id) in ids.iter().enumerate() {
            let emb = &w["model.embed_tokens.weight"];
            let mut x = emb[id as usize * dim..(id as usize + 1) * dim].to_vec();
            for l in 0..m.layers {
                let p = |s: &str| format!("model.layers.{l}.{s}.weight");
                let h = rms(&p("input_layernorm"), &x);
                let mut q = linear(&p("self_attn.q_proj"), &h);
                let mut k = linear(&p("self_attn.k_proj"), &h);
                let v = linear(&p("self_attn.v_proj"), &h);
                assert_eq!(k.len(), kv_dim);
                rope(&mut q, pos);
                rope(&mut k, pos);
                keys[l].push(k);
                values[l].push(v);
                let mut att = vec![0f32; dim];
                for head in 0..m.heads {
                    let g = head / (m.heads / m.kv_heads);
                    let qh = &q[head * hs..(head + 1) * hs];
                    let scores: Vec<f32> = keys[l]
                        .iter()
                        .map(|k| {
                            qh.iter()
                                .zip(&k[g * hs..(g + 1) * hs])
                                .map(|(a, b)| a * b)
                                .sum::<f32>()
                                / (hs as f32).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f32 = e.iter().sum();
                    for (t, p) in e.iter().enumerate() {
                        for i in 0..hs {
                            att[head * hs + i] += p / total * values[l][t][g * hs + i];
                        }
                    }
                }
                let o = linear(&p("self_attn.o_proj"), &att);
                x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
                let h = rms(&p("post_attention_layernorm"), &x);
                let gate = linear(&p("mlp.gate_proj"), &h);
                let up = linear(&p("mlp.up_proj"), &h);
                let act: Vec<f32> = gate
                    .iter()
                    .zip(&up)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                let down = linear(&p("mlp.down_proj"), &act);
                x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
            }
            let h = rms("model.norm.weight", &x);
            let head = if m.tied {
                "model.embed_tokens.weight"
            } else {
                "lm_head.weight"
            };
            logits.push(linear(head, &h));
        }
        logits
    }

    fn starmind_logits(
        tensors: &HashMap<String, Tensor>,
        config: &NamedConfig,
        ids: &[u32],
    ) -> Vec<Vec<f32>> {
        let model = crate::checkpoint::model_from_tensors(tensors, config).unwrap();
        let input = Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        model
            .forward(&input)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap()
    }

    fn max_error(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0, f32::max)
    }

    #[test]
    fn imported_logits_equal_the_hugging_face_forward() {
        let ids: Vec<u32> = (0..16).map(|i| (i * 7 + 3) % 40).collect();
        // (query heads, kv heads, tied, file dtype)
        for (heads, kv_heads, tied, dtype) in [
            (4, 2, false, DType::F32), // GQA, separate lm_head, head size 6
            (2, 2, true, DType::BF16), // multi-head, tied, head size 12, bf16 file
            (4, 1, false, DType::F16), // one kv head
        ] {
            let tiny = TinyLlama::new(heads, kv_heads, tied, 11);
            let dir = tiny.write(&format!("{heads}-{kv_heads}-{tied}"), dtype);
            let imported = import(&Files::Local(dir.clone()), None, false).unwrap();
            assert_eq!(imported.config.model.tokenizer, TokenizerKind::None);
            assert_eq!(imported.config.model.tied_embeddings, tied);
            assert_eq!(imported.config.eot_id(), 1);
            let got = starmind_logits(&imported.tensors, &imported.config, &ids);
            let want = hf_reference_logits(&tiny, &tiny.rounded(dtype), &ids);
            let err = max_error(&got, &want);
            assert!(
                err < 1e-4,
                "{heads}/{kv_heads} heads, tied {tied}: error {err}"
            );

            // The permutation matters: the same weights without it compute something else.
            let mut unpermuted = imported.tensors.clone();
            let raw = tiny.rounded(dtype);
            for l in 0..tiny.layers {
                for (hf, ours, rows) in [
                    ("q_proj", "wq", tiny.dim),
                    ("k_proj", "wk", tiny.dim / heads * kv_heads),
                ] {
                    let w = &raw[&format!("model.layers.{l}.self_attn.{hf}.weight")];
                    let t = Tensor::from_slice(w, (rows, tiny.dim), &Device::Cpu).unwrap();
                    unpermuted.insert(format!("layers.{l}.attention.{ours}.weight"), t);
                }
            }
            let wrong = starmind_logits(&unpermuted, &imported.config, &ids);
            assert!(
                max_error(&wrong, &want) > 1e-2,
                "without the permutation the test must fail"
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn permutation_interleaves_each_heads_halves() {
        // head size 6: rows (0 1 2 | 3 4 5) → pairs (0,3) (1,4) (2,5); second head offset 6.
        assert_eq!(
            rotate_half_to_interleaved(2, 6),
            vec![0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11]
        );
    }

    #[test]
    fn unsupported_settings_are_refused_by_name() {
        let tiny = TinyLlama::new(4, 2, false, 3);
        let base = tiny.config_json();
        let cases: [(&str, serde_json::Value, &str); 9] = [
            (
                "rope_scaling",
                serde_json::json!({"type": "linear", "factor": 2.0}),
                "rope_scaling",
            ),
            ("rope_theta", serde_json::json!(500000.0), "rope_theta"),
            ("rms_norm_eps", serde_json::json!(1e-6), "rms_norm_eps"),
            ("hidden_act", serde_json::json!("gelu"), "hidden_act"),
            ("attention_bias", serde_json::json!(true), "attention_bias"),
            ("mlp_bias", serde_json::json!(true), "mlp_bias"),
            ("head_dim", serde_json::json!(8), "head_dim"),
            (
                "architectures",
                serde_json::json!(["MistralForCausalLM"]),
                "LlamaForCausalLM",
            ),
            ("num_attention_heads", serde_json::json!(5), "multiple"),
        ];
        for (key, value, expected) in cases {
            let mut json = base.clone();
            json[key] = value;
            let err = LlamaConfig::parse(&json).unwrap_err().to_string();
            assert!(err.contains(expected), "{key}: {err}");
        }
        assert!(LlamaConfig::parse(&base).is_ok());
    }

    #[test]
    fn end_of_story_ids_follow_the_config() {
        let tiny = TinyLlama::new(4, 2, false, 3);
        let mut json = tiny.config_json();
        let parse = |json: &serde_json::Value| LlamaConfig::parse(json).map(|c| c.eos_token_ids);
        json["eos_token_id"] = serde_json::json!(2);
        assert_eq!(parse(&json).unwrap(), [2]);
        json["eos_token_id"] = serde_json::json!([2, 5]);
        assert_eq!(parse(&json).unwrap(), [2, 5]);
        json["eos_token_id"] = serde_json::Value::Null;
        assert_eq!(parse(&json).unwrap(), [2], "transformers' default");
        json["eos_token_id"] = serde_json::json!("</s>");
        assert!(parse(&json)
            .unwrap_err()
            .to_string()
            .contains("eos_token_id"));
        json["eos_token_id"] = serde_json::json!([2, -1]);
        assert!(parse(&json).is_err());
    }
}
