//! Checkpoint directories: written atomically, loaded by tensor name.
//!
//! A checkpoint directory holds
//! - `model.safetensors`: the weights, f32, named as in docs/ARCHITECTURE.md (metadata: `step`);
//! - `state.safetensors`: everything `--resume` needs to continue bit for bit: the weights again,
//!   the AdamW moments (`adam_m.<name>`, `adam_v.<name>`) and, as metadata, the step, the sampler
//!   RNG state and the data sources;
//! - `config.json` (the named config with the training section actually used), `tokenizer.json`
//!   (Hugging Face format), `metrics.csv`; at the end of training also `loss.svg` and `sample.txt`.
//!
//! An imported checkpoint (`starmind import`) has only `model.safetensors`, `config.json` and,
//! unless the model came without one (config tokenizer `none`), `tokenizer.json`.
//!
//! Every file is replaced by write-to-temp + fsync + rename ([`crate::fsio::write_atomic`]), so
//! each is complete at every instant.
//! `state.safetensors` is self-contained (resume reads nothing else that changes during a run);
//! it is renamed into place before `model.safetensors`, so a kill between the two leaves the
//! previous complete model file next to a newer resume state, never a torn file.

use crate::config::{NamedConfig, TokenizerKind};
use crate::model::Transformer;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "model.safetensors";
pub const STATE_FILE: &str = "state.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const METRICS_FILE: &str = "metrics.csv";
/// Every file a checkpoint directory may hold (what `train` writes), for the checks that keep a
/// command from writing over its own checkpoint.
pub const FILES: &[&str] = &[
    MODEL_FILE,
    STATE_FILE,
    CONFIG_FILE,
    TOKENIZER_FILE,
    METRICS_FILE,
    "loss.svg",
    "sample.txt",
    "eval.json",
];

/// What `train --out <dir>` may do with `dir`: refuses a directory that holds a checkpoint
/// unless `resume` (continue it) or `force` (replace it), and a non-empty directory that is not
/// a checkpoint (a user's own folder) always. Our own stale temp files and token caches do not
/// count (a run stopped before its first checkpoint leaves only its cache). Returns
/// whether `dir` holds a checkpoint.
pub fn check_train_dir(dir: &Path, resume: bool, force: bool) -> Result<bool> {
    let entries: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with(crate::fsio::TEMP_PREFIX))
            .filter(|name| !crate::data::token_cache::is_cache_file(name))
            .collect(),
        Err(_) if !dir.exists() => {
            if resume {
                bail!(
                    "--resume: {} does not exist (no checkpoint to continue)",
                    dir.display()
                );
            }
            return Ok(false);
        }
        Err(err) => {
            return Err(err).with_context(|| format!("--out {}: not a directory", dir.display()))
        }
    };
    let is_checkpoint = [MODEL_FILE, STATE_FILE, CONFIG_FILE]
        .iter()
        .any(|f| entries.iter().any(|e| e == f));
    if entries.is_empty() {
        if resume {
            bail!(
                "--resume: {} is empty (no checkpoint to continue)",
                dir.display()
            );
        }
        return Ok(false);
    }
    if !is_checkpoint {
        let mut shown: Vec<&str> = entries.iter().map(String::as_str).take(3).collect();
        if entries.len() > 3 {
            shown.push("…");
        }
        bail!(
            "--out {} is a non-empty directory that is not a starmind checkpoint ({}): refusing to write into it; choose a new or empty directory",
            dir.display(),
            shown.join(", ")
        );
    }
    if !resume && !force {
        let step = std::fs::File::open(dir.join(MODEL_FILE))
            .ok()
            .and_then(|f| {
                let mut head = Vec::new();
                std::io::Read::read_to_end(&mut std::io::Read::take(f, 1 << 20), &mut head).ok()?;
                metadata(&head).ok()?.get("step").cloned()
            });
        let what = match step {
            Some(step) => format!("a checkpoint (step {step})"),
            None => "a checkpoint".to_string(),
        };
        bail!(
            "--out {} already holds {what}: pass --resume to continue it, --force to replace it, or choose another --out",
            dir.display()
        );
    }
    Ok(true)
}

/// The paths of [`FILES`] in `dir`.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    FILES.iter().map(|f| dir.join(f)).collect()
}

/// A finished (or intermediate) checkpoint, loaded for evaluation or export.
pub struct Checkpoint {
    /// The named config, its `train` section as used for this run.
    pub config: NamedConfig,
    /// The float model, ready for `forward`.
    pub model: Transformer,
    pub tokenizer: Tokenizer,
    /// Every weight by checkpoint name (`tok_embeddings.weight`, `layers.0.attention.wq.weight`, …).
    pub tensors: HashMap<String, Tensor>,
    /// Optimizer steps taken.
    pub step: usize,
}

/// Loads `dir/{config.json, tokenizer.json, model.safetensors}` on the CPU (no tokenizer.json
/// when the config's tokenizer is `none`).
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let config = read_config(dir)?;
    let tokenizer = match config.model.tokenizer {
        TokenizerKind::None => Tokenizer::ids_only(config.model.vocab_size, config.eot_id()),
        _ => Tokenizer::load(&dir.join(TOKENIZER_FILE))?,
    };
    if (tokenizer.kind(), tokenizer.eot_id()) != (config.model.tokenizer, config.eot_id()) {
        bail!(
            "checkpoint {}: {TOKENIZER_FILE} is a {:?} tokenizer with end-of-text id {}, but {CONFIG_FILE} says {:?} with id {}",
            dir.display(),
            tokenizer.kind(),
            tokenizer.eot_id(),
            config.model.tokenizer,
            config.eot_id()
        );
    }
    let model_path = dir.join(MODEL_FILE);
    // f32 weights plus a safetensors header: anything far larger is not this config's checkpoint
    // (and must not be read into memory whole).
    let expected_bytes = 4 * config.model.param_count() as u64;
    let bytes =
        crate::budget::read_bounded(&model_path, expected_bytes + expected_bytes / 8 + (1 << 20))?;
    let step = metadata(&bytes)
        .with_context(|| format!("reading {}", model_path.display()))?
        .get("step")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .with_context(|| format!("reading {}", model_path.display()))?;
    check_finite(&tensors).with_context(|| format!("checkpoint {}", dir.display()))?;
    let model = model_from_tensors(&tensors, &config).with_context(|| {
        format!(
            "checkpoint {}: weights do not match {CONFIG_FILE}",
            dir.display()
        )
    })?;
    Ok(Checkpoint {
        config,
        model,
        tokenizer,
        tensors,
        step,
    })
}

/// Refuses weights holding NaN or an infinity (a run that diverged, a damaged file): evaluating or
/// exporting them would print NaN or write a model of garbage.
pub fn check_finite(tensors: &HashMap<String, Tensor>) -> Result<()> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let values = tensors[name]
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            bail!(
                "tensor {name} holds {} at element {i}: the weights are not finite (training diverged or the file is damaged)",
                values[i]
            );
        }
    }
    Ok(())
}

/// The model over fixed tensors (no gradients).
pub fn model_from_tensors(
    tensors: &HashMap<String, Tensor>,
    config: &NamedConfig,
) -> Result<Transformer> {
    let expected = crate::model::tensor_shapes(&config.model);
    for (name, shape) in &expected {
        let tensor = tensors
            .get(name)
            .with_context(|| format!("missing tensor {name}"))?;
        if tensor.dims() != shape.as_slice() {
            bail!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                tensor.dims()
            );
        }
    }
    if tensors.len() != expected.len() {
        bail!("{} tensors, expected {}", tensors.len(), expected.len());
    }
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    Ok(Transformer::new(vb, &config.model)?)
}

/// The `--data` and `--valid` sources a training run recorded in `dir/state.safetensors`.
pub fn recorded_data_sources(dir: &Path) -> Option<(Vec<String>, Option<PathBuf>)> {
    let bytes = std::fs::read(dir.join(STATE_FILE)).ok()?;
    let meta = metadata(&bytes).ok()?;
    let data: Vec<String> = serde_json::from_str(meta.get("data")?).ok()?;
    let valid: Option<String> = serde_json::from_str(meta.get("valid")?).ok()?;
    Some((data, valid.map(PathBuf::from)))
}

/// `dir/config.json`.
pub fn read_config(dir: &Path) -> Result<NamedConfig> {
    let path = dir.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let config: NamedConfig =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    config
        .model
        .validate()
        .with_context(|| format!("{}", path.display()))?;
    if let Some(id) = config
        .stop_ids()
        .into_iter()
        .find(|&id| id as usize >= config.model.vocab_size)
    {
        bail!(
            "{}: end-of-text id {id} (eot_id, eos_ids) is outside the vocabulary ({} ids)",
            path.display(),
            config.model.vocab_size
        );
    }
    Ok(config)
}

/// Writes `dir/config.json` atomically.
pub fn write_config(dir: &Path, config: &NamedConfig) -> Result<()> {
    let json = serde_json::to_string_pretty(config)? + "\n";
    crate::fsio::write_atomic(&dir.join(CONFIG_FILE), json.as_bytes())
}

/// Metadata key under which our fields are stored, as one JSON object: safetensors keeps its
/// metadata in a `HashMap`, whose order would make identical checkpoints differ byte-wise.
const METADATA_KEY: &str = "starmind";

/// Serializes named tensors (sorted by name) and string metadata into safetensors bytes;
/// identical inputs give identical bytes.
pub fn serialize_tensors(
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().map(|(n, t)| (n, t)).collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let info = HashMap::from([(METADATA_KEY.to_string(), serde_json::to_string(metadata)?)]);
    Ok(safetensors::serialize(sorted, Some(info))?)
}

/// The metadata [`serialize_tensors`] stored in a safetensors buffer (empty if none).
pub fn metadata(bytes: &[u8]) -> Result<BTreeMap<String, String>> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)?;
    match meta.metadata().as_ref().and_then(|m| m.get(METADATA_KEY)) {
        Some(json) => Ok(serde_json::from_str(json)?),
        None => Ok(BTreeMap::new()),
    }
}
