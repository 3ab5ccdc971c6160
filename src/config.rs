//! Named model configurations (`configs/<name>.json`): architecture plus training hyper-parameters.
//!
//! The architecture section is the contract between trainer, checkpoint and exporter; it is written
//! verbatim as `config.json` next to every checkpoint.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Feed-forward block shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ffn {
    /// `w2 · silu(w1 · x)`: two matrices, as the seed counted parameters.
    Plain,
    /// `w2 · (silu(w1 · x) ⊙ (w3 · x))`: Llama-style, three matrices.
    Swiglu,
}

/// Tokenizer family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// One token per character (the seed's ≤ 256 vocabularies), plus special tokens.
    Char,
    /// Byte-level BPE trained with the `tokenizers` crate.
    Bpe,
}

/// Transformer architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub dim: usize,
    pub hidden_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention); equals `n_heads` for plain multi-head attention.
    pub n_kv_heads: usize,
    /// Maximum context length in tokens (also the KV-cache length on the device).
    pub seq_len: usize,
    pub ffn: Ffn,
    /// The output head reuses the token embedding matrix.
    pub tied_embeddings: bool,
    pub tokenizer: TokenizerKind,
}

/// Training hyper-parameters (every field has a default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Sequences per step.
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Floor of the cosine schedule.
    pub min_learning_rate: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    pub grad_clip: f64,
    /// Evaluate on the validation split every this many steps.
    pub eval_every: usize,
    /// Validation sequences per periodic evaluation (the final evaluation uses the whole split).
    pub eval_sequences: usize,
    /// Write a checkpoint every this many steps.
    pub checkpoint_every: usize,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 2000,
            batch_size: 64,
            learning_rate: 3e-3,
            min_learning_rate: 3e-4,
            warmup_steps: 100,
            weight_decay: 0.01,
            grad_clip: 1.0,
            eval_every: 250,
            eval_sequences: 256,
            checkpoint_every: 500,
            seed: 1337,
        }
    }
}

/// One named configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedConfig {
    pub name: String,
    /// What the seed experiment called this model and why (free text).
    #[serde(default)]
    pub description: String,
    /// Parameter count the seed logs state for this model (seed convention, see
    /// [`ModelConfig::seed_param_count`]); `None` for our own models.
    #[serde(default)]
    pub seed_params: Option<usize>,
    pub model: ModelConfig,
    #[serde(default)]
    pub train: TrainConfig,
}

impl ModelConfig {
    pub fn head_size(&self) -> usize {
        self.dim / self.n_heads
    }

    pub fn kv_dim(&self) -> usize {
        self.head_size() * self.n_kv_heads
    }

    /// Checks the shape rules the trainer and the integer engine rely on.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("dim", self.dim),
            ("hidden_dim", self.hidden_dim),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("seq_len", self.seq_len),
        ];
        for (name, value) in positive {
            if value == 0 {
                bail!("{name} must be positive");
            }
        }
        if self.dim % self.n_heads != 0 {
            bail!("dim {} is not a multiple of n_heads {}", self.dim, self.n_heads);
        }
        if self.n_heads % self.n_kv_heads != 0 {
            bail!("n_heads {} is not a multiple of n_kv_heads {}", self.n_heads, self.n_kv_heads);
        }
        Ok(())
    }

    /// Parameters as the seed experiment counted them: embedding (`vocab·dim`), per layer
    /// `4·dim²` attention and `2·dim·hidden` FFN (3 for SwiGLU), an untied head (`vocab·dim`);
    /// RMSNorm gains are not counted. For grouped-query attention the K and V matrices are
    /// `dim·kv_dim`.
    pub fn seed_param_count(&self) -> usize {
        let attention = 2 * self.dim * self.dim + 2 * self.dim * self.kv_dim();
        let ffn_matrices = match self.ffn {
            Ffn::Plain => 2,
            Ffn::Swiglu => 3,
        };
        let ffn = ffn_matrices * self.dim * self.hidden_dim;
        let head = if self.tied_embeddings { 0 } else { self.vocab_size * self.dim };
        self.vocab_size * self.dim + self.n_layers * (attention + ffn) + head
    }

    /// Every trainable parameter, RMSNorm gains included.
    pub fn param_count(&self) -> usize {
        self.seed_param_count() + (2 * self.n_layers + 1) * self.dim
    }
}

/// Directory holding the named configs: `$STARMIND_CONFIGS`, else `configs/` of this source tree.
pub fn configs_dir() -> PathBuf {
    std::env::var_os("STARMIND_CONFIGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("configs"))
}

/// Loads `--config`: a name from [`configs_dir`] or a path to a JSON file.
pub fn load(name_or_path: &str) -> Result<NamedConfig> {
    let as_path = Path::new(name_or_path);
    let path = if as_path.extension().is_some_and(|e| e == "json") || as_path.is_file() {
        as_path.to_path_buf()
    } else {
        configs_dir().join(format!("{name_or_path}.json"))
    };
    if !path.is_file() {
        bail!(
            "unknown config '{name_or_path}': {} does not exist (run `starmind configs` for the list)",
            path.display()
        );
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let config: NamedConfig =
        serde_json::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
    config.model.validate().with_context(|| format!("config {}", path.display()))?;
    Ok(config)
}

/// Every named config, sorted by parameter count then name.
pub fn all() -> Result<Vec<NamedConfig>> {
    let dir = configs_dir();
    let mut configs = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            configs.push(load(path.to_str().context("non-UTF-8 config path")?)?);
        }
    }
    configs.sort_by(|a, b| (a.model.seed_param_count(), &a.name).cmp(&(b.model.seed_param_count(), &b.name)));
    Ok(configs)
}
