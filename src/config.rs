//! Named model configurations (`configs/<name>.json`): architecture plus training hyper-parameters.
//!
//! The architecture section is the contract between trainer, checkpoint and exporter; it is written
//! verbatim as `config.json` next to every checkpoint.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use starmind_engine::format::{self, FfnKind, Quant, NO_TOKEN};
use starmind_engine::Config as EngineConfig;
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
    /// SentencePiece-style BPE with byte fallback (llama2.c's `tokenizer.bin`, Hugging Face
    /// Llama `tokenizer.json`): imported, never trained here.
    Sentencepiece,
    /// No tokenizer: the model runs on token ids (an import without its tokenizer file).
    None,
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
    /// Width of one attention head; absent means `dim / n_heads`. Set where `n_heads` does not
    /// divide `dim` (seed variants, `configs/README.md`): the attention is then `n_heads ×
    /// head_size` wide and `wo` projects it back to `dim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_size: Option<usize>,
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
    /// Batches whose gradients are averaged per optimizer step (gradient accumulation). Left
    /// out of config files at its default, so that older readers still take them.
    #[serde(skip_serializing_if = "is_one")]
    pub accumulate: usize,
}

fn is_one(n: &usize) -> bool {
    *n == 1
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
            accumulate: 1,
        }
    }
}

impl TrainConfig {
    /// Checks every field (named as in the config file) before a run allocates anything.
    pub fn validate(&self) -> Result<()> {
        let at_least_one = [
            ("train.steps (--steps)", self.steps),
            ("train.batch_size (--batch-size)", self.batch_size),
            ("train.eval_every", self.eval_every),
            (
                "train.checkpoint_every (--checkpoint-every)",
                self.checkpoint_every,
            ),
        ];
        for (name, value) in at_least_one {
            if value == 0 {
                bail!("{name} is 0: must be at least 1");
            }
        }
        let lr = self.learning_rate;
        if !(lr.is_finite() && lr > 0.0) {
            bail!("train.learning_rate (--learning-rate) {lr}: must be a finite number > 0");
        }
        let min_lr = self.min_learning_rate;
        if !(min_lr.is_finite() && (0.0..=lr).contains(&min_lr)) {
            bail!("train.min_learning_rate {min_lr}: must be in [0, learning_rate {lr}]");
        }
        for (name, value) in [
            ("train.weight_decay", self.weight_decay),
            ("train.grad_clip", self.grad_clip),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                bail!("{name} {value}: must be a finite number ≥ 0");
            }
        }
        if self.batch_size > MAX_BATCH {
            bail!(
                "train.batch_size (--batch-size) {}: must be at most {MAX_BATCH}",
                self.batch_size
            );
        }
        Ok(())
    }
}

/// Largest batch (sequences per step) accepted; the memory check ([`crate::budget`]) usually
/// refuses far smaller ones.
pub const MAX_BATCH: usize = 1 << 20;

/// A study of the seed experiment that a config belongs to (`starmind configs --family`): a
/// parameter scale of seeds 000/001, or one of seed 001's extreme phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
pub enum Family {
    #[serde(rename = "1k")]
    #[value(name = "1k")]
    K1,
    #[serde(rename = "3k")]
    #[value(name = "3k")]
    K3,
    #[serde(rename = "5k")]
    #[value(name = "5k")]
    K5,
    #[serde(rename = "7k")]
    #[value(name = "7k")]
    K7,
    #[serde(rename = "10k")]
    #[value(name = "10k")]
    K10,
    /// 1–3 dimensions (story-ultra-*).
    #[serde(rename = "ultra")]
    Ultra,
    /// 128×–2048× FFN ratios (story-ffn-*).
    #[serde(rename = "ffn")]
    Ffn,
    /// 32–64 heads on 16 dimensions (story-heads-*).
    #[serde(rename = "heads")]
    Heads,
    /// 32–128 attention heads (story-attn-*).
    #[serde(rename = "attn")]
    Attn,
    /// 10–30 layers (story-deep-*).
    #[serde(rename = "deep")]
    Deep,
    /// Fat FFN with many heads, optionally deep (story-hybrid-*).
    #[serde(rename = "hybrid")]
    Hybrid,
}

impl Family {
    /// The name used in config files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::K1 => "1k",
            Family::K3 => "3k",
            Family::K5 => "5k",
            Family::K7 => "7k",
            Family::K10 => "10k",
            Family::Ultra => "ultra",
            Family::Ffn => "ffn",
            Family::Heads => "heads",
            Family::Attn => "attn",
            Family::Deep => "deep",
            Family::Hybrid => "hybrid",
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
    /// [`ModelConfig::seed_param_count`]); `None` for our own models. Some logs' figures are
    /// inconsistent with the dimensions they give; the description says so.
    #[serde(default)]
    pub seed_params: Option<usize>,
    /// The seed studies this model belongs to (its scale and, for seed 001's extreme phases,
    /// the phase); empty for models outside them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<Family>,
    pub model: ModelConfig,
    #[serde(default)]
    pub train: TrainConfig,
    /// The id a story starts after and ends with, when it is not starmind's `<|endoftext|>` (0):
    /// llama2.c models use BOS (1) for both. See [`NamedConfig::eot_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eot_id: Option<u32>,
    /// Further ids that end a story when the float model draws them (a Hugging Face model's
    /// `eos_token_id`, `</s>`); empty for starmind's and llama2.c's models. See
    /// [`NamedConfig::stop_ids`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eos_ids: Vec<u32>,
}

impl NamedConfig {
    /// The id a story starts after and ends with (`<|endoftext|>` = 0 unless the config says).
    pub fn eot_id(&self) -> u32 {
        self.eot_id.unwrap_or(0)
    }

    /// The ids that end a story: [`NamedConfig::eot_id`] (a new story begins), then
    /// [`NamedConfig::eos_ids`].
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids = vec![self.eot_id()];
        ids.extend(self.eos_ids.iter().filter(|&&id| id != self.eot_id()));
        ids
    }
}

/// Old names the seed renamed (seed 000, "Model Naming System Fixed"), accepted by [`load`].
pub const ALIASES: &[(&str, &str)] = &[("chat-5k", "chat-8k"), ("assistant-20k", "assistant-45k")];

impl ModelConfig {
    /// The engine's configuration of this shape (the model file header) with the tokenizer's
    /// special ids: the one conversion between the two. Quantisation is int8 here; the
    /// quantiser sets the scheme it uses.
    pub fn engine_config(&self, eot_id: u32, unk_id: Option<u32>) -> EngineConfig {
        EngineConfig {
            vocab_size: self.vocab_size,
            dim: self.dim,
            hidden_dim: self.hidden_dim,
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            seq_len: self.seq_len,
            ffn: match self.ffn {
                Ffn::Plain => FfnKind::Plain,
                Ffn::Swiglu => FfnKind::Swiglu,
            },
            tied_embeddings: self.tied_embeddings,
            tokenizer: match self.tokenizer {
                TokenizerKind::Char => format::TokenizerKind::Char,
                TokenizerKind::Bpe => format::TokenizerKind::Bpe,
                // The engine has no SentencePiece encoder yet: such a model file shows its
                // tokens' text but takes no text prompt.
                TokenizerKind::Sentencepiece | TokenizerKind::None => format::TokenizerKind::None,
            },
            quant: Quant::Int8,
            group_size: 0,
            eot_id,
            unk_id: unk_id.unwrap_or(NO_TOKEN),
        }
    }

    /// The shape alone (no special ids): what the derived sizes and the checks read.
    fn shape(&self) -> EngineConfig {
        self.engine_config(0, None)
    }

    /// Elements per attention head: the config's explicit `head_size` when set, else the
    /// engine's derivation (`dim / n_heads`).
    pub fn head_size(&self) -> usize {
        self.head_size.unwrap_or_else(|| self.shape().head_size())
    }

    /// Width of the query (and attention output) vectors: `n_heads · head_size`.
    pub fn q_dim(&self) -> usize {
        self.head_size() * self.n_heads
    }

    /// Rows of the key and value projections: `n_kv_heads · head_size`.
    pub fn kv_dim(&self) -> usize {
        self.head_size() * self.n_kv_heads
    }

    /// Checks the rules every config file meets, including shapes the trainer and the integer
    /// engine cannot run yet (an attention width other than `dim`, see [`Self::validate`]).
    pub fn validate_shape(&self) -> Result<()> {
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
        // Far above any model this project trains or imports: keeps every size computed from a
        // config exact (no overflow), and a shape that could never be allocated a clear refusal.
        let limits = [
            ("vocab_size", self.vocab_size, 1 << 20),
            ("dim", self.dim, 1 << 16),
            ("hidden_dim", self.hidden_dim, 1 << 20),
            ("n_layers", self.n_layers, 1024),
            ("n_heads", self.n_heads, 1 << 12),
            ("n_kv_heads", self.n_kv_heads, 1 << 12),
            ("seq_len", self.seq_len, 1 << 20),
            ("head_size", self.head_size.unwrap_or(1), 1 << 16),
        ];
        for (name, value, limit) in limits {
            if value > limit {
                bail!("{name} {value} is too large: must be at most {limit}");
            }
        }
        match self.head_size {
            Some(0) => bail!("head_size must be positive"),
            Some(_) => {}
            None if !self.dim.is_multiple_of(self.n_heads) => bail!(
                "dim {} is not a multiple of n_heads {} (set head_size for an attention of width n_heads·head_size)",
                self.dim,
                self.n_heads
            ),
            None => {}
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            bail!(
                "n_heads {} is not a multiple of n_kv_heads {}",
                self.n_heads,
                self.n_kv_heads
            );
        }
        Ok(())
    }

    /// Checks the shape rules the trainer and the integer engine rely on: [`Self::validate_shape`],
    /// and an attention exactly `dim` wide (`n_heads · head_size = dim`).
    pub fn validate(&self) -> Result<()> {
        self.validate_shape()?;
        if self.q_dim() != self.dim {
            bail!(
                "attention width n_heads·head_size = {}·{} = {} differs from dim {}: the trainer and the integer engine do not support that yet",
                self.n_heads,
                self.head_size(),
                self.q_dim(),
                self.dim
            );
        }
        // Then the engine's own rules, so a config that trains is one the device runs.
        Ok(self.shape().validate_shape()?)
    }

    /// Parameters as the seed experiment counted them: embedding (`vocab·dim`), per layer the
    /// attention (`wq`, `wo`: `dim·q_dim` each; `wk`, `wv`: `dim·kv_dim` each, so `4·dim²` for
    /// plain multi-head attention) and `2·dim·hidden` FFN (3 for SwiGLU), an untied head
    /// (`vocab·dim`); RMSNorm gains are not counted.
    pub fn seed_param_count(&self) -> usize {
        let attention = 2 * self.dim * self.q_dim() + 2 * self.dim * self.kv_dim();
        let ffn_matrices = match self.ffn {
            Ffn::Plain => 2,
            Ffn::Swiglu => 3,
        };
        let ffn = ffn_matrices * self.dim * self.hidden_dim;
        let head = if self.tied_embeddings {
            0
        } else {
            self.vocab_size * self.dim
        };
        self.vocab_size * self.dim + self.n_layers * (attention + ffn) + head
    }

    /// Every trainable parameter, RMSNorm gains included.
    pub fn param_count(&self) -> usize {
        self.seed_param_count() + (2 * self.n_layers + 1) * self.dim
    }
}

impl From<&EngineConfig> for ModelConfig {
    /// The architecture of a model file.
    fn from(c: &EngineConfig) -> ModelConfig {
        ModelConfig {
            vocab_size: c.vocab_size,
            dim: c.dim,
            hidden_dim: c.hidden_dim,
            n_layers: c.n_layers,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            seq_len: c.seq_len,
            ffn: match c.ffn {
                FfnKind::Plain => Ffn::Plain,
                FfnKind::Swiglu => Ffn::Swiglu,
            },
            tied_embeddings: c.tied_embeddings,
            tokenizer: match c.tokenizer {
                format::TokenizerKind::Char => TokenizerKind::Char,
                format::TokenizerKind::Bpe => TokenizerKind::Bpe,
                format::TokenizerKind::None => TokenizerKind::None,
            },
            head_size: None,
        }
    }
}

/// Directory holding the named configs: `$STARMIND_CONFIGS`, else `configs/` of this source tree.
pub fn configs_dir() -> PathBuf {
    std::env::var_os("STARMIND_CONFIGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("configs"))
}

/// Loads `--config`: a name (or [`ALIASES`] entry) from [`configs_dir`] or a path to a JSON file,
/// checked with [`ModelConfig::validate`] (shapes the trainer and engine can run).
pub fn load(name_or_path: &str) -> Result<NamedConfig> {
    let config = read(name_or_path)?;
    config
        .model
        .validate()
        .with_context(|| format!("config {name_or_path}"))?;
    Ok(config)
}

/// Reads a config like [`load`], checked only with [`ModelConfig::validate_shape`].
pub fn read(name_or_path: &str) -> Result<NamedConfig> {
    let as_path = Path::new(name_or_path);
    let path = if as_path.extension().is_some_and(|e| e == "json") || as_path.is_file() {
        as_path.to_path_buf()
    } else {
        let name = ALIASES
            .iter()
            .find(|(old, _)| *old == name_or_path)
            .map_or(name_or_path, |(_, new)| new);
        configs_dir().join(format!("{name}.json"))
    };
    if !path.is_file() {
        bail!(
            "unknown config '{name_or_path}': {} does not exist (run `starmind configs` for the list)",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("config {}", path.display()))
}

/// A config file's text: parsed, then checked with [`ModelConfig::validate_shape`] and
/// [`TrainConfig::validate`]. Never panics on any text (fuzzed: `fuzz/fuzz_targets/config_json.rs`).
pub fn parse(text: &str) -> Result<NamedConfig> {
    let config: NamedConfig = serde_json::from_str(text).context("parsing the JSON")?;
    config.model.validate_shape()?;
    config.train.validate()?;
    Ok(config)
}

/// Every named config, sorted by parameter count then name (including those [`load`] rejects
/// because the trainer cannot run their shape yet).
pub fn all() -> Result<Vec<NamedConfig>> {
    let dir = configs_dir();
    let mut configs = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            configs.push(read(path.to_str().context("non-UTF-8 config path")?)?);
        }
    }
    configs.sort_by(|a, b| {
        (a.model.seed_param_count(), &a.name).cmp(&(b.model.seed_param_count(), &b.name))
    });
    Ok(configs)
}

#[cfg(test)]
mod seed_logs;

#[cfg(test)]
mod tests {
    use super::*;

    fn model(
        vocab_size: usize,
        dim: usize,
        hidden_dim: usize,
        n_layers: usize,
        n_heads: usize,
        n_kv_heads: usize,
    ) -> ModelConfig {
        ModelConfig {
            vocab_size,
            dim,
            hidden_dim,
            n_layers,
            n_heads,
            n_kv_heads,
            head_size: None,
            seq_len: 64,
            ffn: Ffn::Plain,
            tied_embeddings: true,
            tokenizer: TokenizerKind::Char,
        }
    }

    /// The families a seed model's name puts it in: its scale segment (`1k` … `10k`) and, for
    /// seed 001's extreme phases (`story-<phase>-…`), the phase.
    pub(super) fn families_by_name(name: &str) -> Vec<Family> {
        let segments: Vec<&str> = name.split('-').collect();
        let scale = segments.iter().find_map(|s| match *s {
            "1k" => Some(Family::K1),
            "3k" => Some(Family::K3),
            "5k" => Some(Family::K5),
            "7k" => Some(Family::K7),
            "10k" => Some(Family::K10),
            _ => None,
        });
        let phase = match segments.get(1).copied() {
            Some("ultra") => Some(Family::Ultra),
            Some("ffn") => Some(Family::Ffn),
            Some("heads") => Some(Family::Heads),
            Some("attn") => Some(Family::Attn),
            Some("deep") => Some(Family::Deep),
            Some("hybrid") => Some(Family::Hybrid),
            _ => None,
        };
        scale.into_iter().chain(phase).collect()
    }

    #[test]
    fn every_config_reads_under_its_file_name_with_its_families() {
        let configs = all().expect("configs/ reads and validates");
        for config in &configs {
            let path = configs_dir().join(format!("{}.json", config.name));
            assert!(
                path.is_file(),
                "config name '{}' differs from its file name",
                config.name
            );
            assert_eq!(
                config.families,
                families_by_name(&config.name),
                "{}: families",
                config.name
            );
        }
        let family = |f: &str| -> Family {
            serde_json::from_value(serde_json::Value::String(f.into())).unwrap()
        };
        for name in [
            "1k", "3k", "5k", "7k", "10k", "ultra", "ffn", "heads", "attn", "deep", "hybrid",
        ] {
            assert_eq!(family(name).as_str(), name);
            assert!(
                configs.iter().any(|c| c.families.contains(&family(name))),
                "no config of family {name}"
            );
        }
        assert_eq!(
            families_by_name("story-hybrid-256x-32h-10l-1k"),
            [Family::K1, Family::Hybrid]
        );
        assert_eq!(families_by_name("chat-10k-ultra-deep"), [Family::K10]);
        assert!(families_by_name("chat-8k").is_empty());
    }

    #[test]
    fn required_configs_exist() {
        let names: Vec<String> = all().unwrap().into_iter().map(|c| c.name).collect();
        let required = [
            "story-1k",
            "story-3k",
            "story-4k",
            "chat-8k",
            "chat-10k",
            "chat-13k",
            "chat-18k",
            "assistant-45k",
            "stories260k",
        ];
        for name in required {
            assert!(
                names.iter().any(|n| n == name),
                "configs/{name}.json is missing"
            );
        }
        let ours = load("stories260k").unwrap();
        assert_eq!(ours.seed_params, None);
        assert_eq!((ours.model.ffn, ours.model.n_kv_heads), (Ffn::Swiglu, 4));
    }

    #[test]
    fn aliases_load_the_renamed_configs() {
        for (old, new) in ALIASES {
            assert_eq!(load(old).unwrap().name, *new);
            assert!(
                !configs_dir().join(format!("{old}.json")).exists(),
                "{old} is an alias and must not also be a file"
            );
        }
        let err = format!("{:#}", load("chat-6k").unwrap_err());
        assert!(err.contains("unknown config 'chat-6k'"), "{err}");
    }

    #[test]
    fn seed_param_count_by_hand() {
        let mut swiglu_gqa = model(512, 64, 172, 5, 8, 4);
        swiglu_gqa.ffn = Ffn::Swiglu;
        let mut untied = model(10, 4, 8, 1, 2, 2);
        untied.tied_embeddings = false;
        // The seed's story-1k-fibonacci: 3 heads of 2 → wq, wk, wv 6×8, wo 8×6.
        let mut narrow_heads = model(55, 8, 21, 1, 3, 3);
        narrow_heads.head_size = Some(2);
        // The seed's story-5k-attention-monster: 32 heads of 1 on 16 dims → 32×16 and 16×32.
        let mut wide_heads = model(48, 16, 64, 1, 32, 32);
        wide_heads.head_size = Some(1);
        // (what, shape, seed count, count with RMSNorm gains)
        let cases = [
            // 64·8 + 4·8² + 2·8·32
            (
                "plain story-1k",
                model(64, 8, 32, 1, 2, 2),
                1_280,
                1_280 + 3 * 8,
            ),
            // 128·16 + 2·(4·16² + 2·16·64)
            (
                "plain, 2 layers (chat-8k)",
                model(128, 16, 64, 2, 4, 4),
                8_192,
                8_192 + 5 * 16,
            ),
            // kv_dim 4: 16·8 + 2·8² + 2·8·4 + 2·8·16
            (
                "plain GQA 4q/2kv",
                model(16, 8, 16, 1, 4, 2),
                576,
                576 + 3 * 8,
            ),
            // 10·4 + 4·4² + 2·4·8 + 10·4 (head)
            ("plain untied", untied, 208, 208 + 3 * 4),
            // stories260K: 512·64 + 5·(2·64² + 2·64·32 + 3·64·172); with gains it is the
            // checkpoint's 264,128 floats less 2·512·4 freq_cis values.
            ("swiglu GQA stories260k", swiglu_gqa, 259_328, 260_032),
            // 55·8 + 4·8·6 + 2·8·21
            (
                "head_size 2 of 3 heads on 8",
                narrow_heads,
                968,
                968 + 3 * 8,
            ),
            // 48·16 + 4·16·32 + 2·16·64
            (
                "head_size 1 of 32 heads on 16",
                wide_heads,
                4_864,
                4_864 + 3 * 16,
            ),
        ];
        for (what, shape, seed, all) in cases {
            assert_eq!(shape.seed_param_count(), seed, "{what}: seed count");
            assert_eq!(shape.param_count(), all, "{what}: full count");
            shape.validate_shape().unwrap();
            if shape.head_size.is_some() {
                continue; // the engine has no explicit head_size yet (validate refuses these)
            }
            shape.validate().unwrap();
            let engine = shape.engine_config(0, Some(1));
            assert_eq!(ModelConfig::from(&engine), shape, "{what}: round trip");
            assert_eq!(
                (engine.head_size(), engine.kv_dim()),
                (shape.head_size(), shape.kv_dim())
            );
        }
    }

    #[test]
    fn validate_rejects_bad_shapes() {
        let good = model(64, 8, 32, 1, 2, 2);
        good.validate().unwrap();
        let zeroed: [fn(&mut ModelConfig); 8] = [
            |m| m.vocab_size = 0,
            |m| m.dim = 0,
            |m| m.hidden_dim = 0,
            |m| m.n_layers = 0,
            |m| m.n_heads = 0,
            |m| m.n_kv_heads = 0,
            |m| m.seq_len = 0,
            |m| m.head_size = Some(0),
        ];
        for zero in zeroed {
            let mut bad = good.clone();
            zero(&mut bad);
            let err = bad.validate_shape().unwrap_err().to_string();
            assert!(err.contains("must be positive"), "{bad:?}: {err}");
        }
        // The seed's story-1k-fibonacci: 8d with 3 heads needs an explicit head_size ...
        let mut fibonacci = model(55, 8, 21, 1, 3, 3);
        let err = fibonacci.validate_shape().unwrap_err().to_string();
        assert!(
            err.contains("not a multiple of n_heads") && err.contains("head_size"),
            "{err}"
        );
        // ... and with one it is a valid config that the trainer cannot run yet.
        fibonacci.head_size = Some(2);
        fibonacci.validate_shape().unwrap();
        let err = fibonacci.validate().unwrap_err().to_string();
        assert!(
            err.contains("n_heads·head_size = 3·2 = 6 differs from dim 8"),
            "{err}"
        );
        // An explicit head_size equal to dim / n_heads is the plain shape.
        let mut explicit = good.clone();
        explicit.head_size = Some(4);
        explicit.validate().unwrap();
        assert_eq!(explicit.seed_param_count(), good.seed_param_count());
        // The seed's story-5k-attention-monster: more heads (32) than dimensions (16).
        assert!(model(48, 16, 64, 1, 32, 32).validate().is_err());
        // Beyond what the engine runs.
        let err = model(64, 8192, 32, 1, 2, 2)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 4096"), "{err}");
        // Query heads must be a multiple of key/value heads.
        let err = model(64, 12, 32, 1, 4, 3)
            .validate_shape()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a multiple of n_kv_heads"), "{err}");
    }

    #[test]
    fn head_size_is_omitted_from_json_unless_set() {
        let plain = serde_json::to_value(model(64, 8, 32, 1, 2, 2)).unwrap();
        assert!(plain.get("head_size").is_none());
        let mut set = model(55, 8, 21, 1, 3, 3);
        set.head_size = Some(2);
        let json = serde_json::to_string(&set).unwrap();
        assert!(json.contains("\"head_size\":2"), "{json}");
        assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), set);
    }
}
