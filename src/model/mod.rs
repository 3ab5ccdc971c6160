//! The float decoder-only transformer (candle), exactly the numerics of docs/ARCHITECTURE.md.
//!
//! One struct per block, each built from a [`VarBuilder`] whose paths are the checkpoint tensor
//! names (`layers.0.attention.wq.weight`, …). The matrix products are candle's; attention
//! (with RoPE and the causal mask), RMSNorm, SwiGLU and the training loss are fused ops with
//! their own backward ([`attention`], [`norm`], [`activation`], [`loss`]; inner loops in
//! [`kernels`]): as compositions of small tensor ops they kept a `[b, h, t, t]` score tensor per
//! layer and cost more in op overhead than in arithmetic (candle's own fused kernels have no
//! backward pass). Each fused op's tests compare it with the plain composition, forward and
//! backward.

use crate::config::{Ffn, ModelConfig};
use crate::data::Rng;
use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use std::sync::Arc;

pub mod activation;
pub mod attention;
pub mod kernels;
pub mod loss;
pub mod norm;

use attention::{Heads, RopeTable};

/// RMSNorm epsilon (ARCHITECTURE.md).
pub const RMS_NORM_EPS: f64 = 1e-5;

/// A bias-free linear layer with a `[out, in]` weight, applied to the last dimension.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
}

impl Linear {
    fn new(vb: VarBuilder, out_dim: usize, in_dim: usize) -> Result<Self> {
        Ok(Linear {
            weight: vb.get((out_dim, in_dim), "weight")?,
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Flatten the leading dims: one 2-D matmul is much cheaper than a batched one here.
        let (out_dim, in_dim) = self.weight.dims2()?;
        let mut shape = x.dims().to_vec();
        let rows = x.elem_count() / in_dim;
        let y = x.reshape((rows, in_dim))?.matmul(&self.weight.t()?)?;
        *shape.last_mut().expect("rank ≥ 1") = out_dim;
        y.reshape(shape)
    }
}

/// `y = x / sqrt(mean(x²) + eps) · g` ([`norm::rms_norm`]).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
}

impl RmsNorm {
    fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        Ok(RmsNorm {
            weight: vb.get(dim, "weight")?,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        norm::rms_norm(x, &self.weight)
    }
}

/// Causal multi-head attention with RoPE and grouped key/value heads
/// ([`attention::causal_attention`]).
#[derive(Debug, Clone)]
pub struct Attention {
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    heads: Heads,
}

impl Attention {
    fn new(vb: VarBuilder, c: &ModelConfig) -> Result<Self> {
        Ok(Attention {
            wq: Linear::new(vb.pp("wq"), c.q_dim(), c.dim)?,
            wk: Linear::new(vb.pp("wk"), c.kv_dim(), c.dim)?,
            wv: Linear::new(vb.pp("wv"), c.kv_dim(), c.dim)?,
            wo: Linear::new(vb.pp("wo"), c.dim, c.q_dim())?,
            heads: Heads {
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                head_size: c.head_size(),
            },
        })
    }

    /// `x: [b, t, dim]` → `[b, t, dim]`, positions `0..t`; the heads are `n_heads · head_size`
    /// wide, which `wo` projects back to `dim`.
    fn forward(&self, x: &Tensor, rope: &Arc<RopeTable>) -> Result<Tensor> {
        let q = self.wq.forward(x)?;
        let k = self.wk.forward(x)?;
        let v = self.wv.forward(x)?;
        let y = attention::causal_attention(&q, &k, &v, self.heads, rope)?;
        self.wo.forward(&y)
    }
}

/// `w2·silu(w1·x)` (plain) or `w2·(silu(w1·x) ⊙ w3·x)` (SwiGLU).
#[derive(Debug, Clone)]
pub struct FeedForward {
    w1: Linear,
    w2: Linear,
    w3: Option<Linear>,
}

impl FeedForward {
    fn new(vb: VarBuilder, c: &ModelConfig) -> Result<Self> {
        Ok(FeedForward {
            w1: Linear::new(vb.pp("w1"), c.hidden_dim, c.dim)?,
            w2: Linear::new(vb.pp("w2"), c.dim, c.hidden_dim)?,
            w3: match c.ffn {
                Ffn::Plain => None,
                Ffn::Swiglu => Some(Linear::new(vb.pp("w3"), c.hidden_dim, c.dim)?),
            },
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let hidden = match &self.w3 {
            None => self.w1.forward(x)?.silu()?,
            Some(w3) => activation::swiglu(&self.w1.forward(x)?, &w3.forward(x)?)?,
        };
        self.w2.forward(&hidden)
    }
}

/// One pre-norm decoder layer.
#[derive(Debug, Clone)]
pub struct Block {
    attention_norm: RmsNorm,
    attention: Attention,
    ffn_norm: RmsNorm,
    feed_forward: FeedForward,
}

impl Block {
    fn new(vb: VarBuilder, c: &ModelConfig) -> Result<Self> {
        Ok(Block {
            attention_norm: RmsNorm::new(vb.pp("attention_norm"), c.dim)?,
            attention: Attention::new(vb.pp("attention"), c)?,
            ffn_norm: RmsNorm::new(vb.pp("ffn_norm"), c.dim)?,
            feed_forward: FeedForward::new(vb.pp("feed_forward"), c)?,
        })
    }

    fn forward(&self, x: &Tensor, rope: &Arc<RopeTable>) -> Result<Tensor> {
        let x = (x + self
            .attention
            .forward(&self.attention_norm.forward(x)?, rope)?)?;
        &x + self.feed_forward.forward(&self.ffn_norm.forward(&x)?)?
    }
}

/// The whole decoder.
#[derive(Debug, Clone)]
pub struct Transformer {
    config: ModelConfig,
    tok_embeddings: Tensor,
    layers: Vec<Block>,
    norm: RmsNorm,
    /// `None` when tied to `tok_embeddings`.
    output: Option<Tensor>,
    rope: Arc<RopeTable>,
}

impl Transformer {
    /// Builds the model from tensors named as in the checkpoint (see [`init_varmap`]).
    pub fn new(vb: VarBuilder, config: &ModelConfig) -> Result<Self> {
        let c = config;
        let layers = (0..c.n_layers)
            .map(|l| Block::new(vb.pp(format!("layers.{l}")), c))
            .collect::<Result<Vec<_>>>()?;
        let output = if c.tied_embeddings {
            None
        } else {
            Some(vb.get((c.vocab_size, c.dim), "output.weight")?)
        };
        Ok(Transformer {
            config: c.clone(),
            tok_embeddings: vb.get((c.vocab_size, c.dim), "tok_embeddings.weight")?,
            layers,
            norm: RmsNorm::new(vb.pp("norm"), c.dim)?,
            output,
            rope: Arc::new(RopeTable::new(c.head_size(), c.seq_len)),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Logits `[b, t, vocab]` for token ids `[b, t]` (u32), positions `0..t`, `t ≤ seq_len`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.config.seq_len {
            candle_core::bail!(
                "sequence of {t} tokens is longer than seq_len {}",
                self.config.seq_len
            );
        }
        let mut x = self
            .tok_embeddings
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.config.dim))?;
        for layer in &self.layers {
            x = layer.forward(&x, &self.rope)?;
        }
        let h = self.norm.forward(&x)?.reshape((b * t, self.config.dim))?;
        let head = self.output.as_ref().unwrap_or(&self.tok_embeddings);
        h.matmul(&head.t()?)?
            .reshape((b, t, self.config.vocab_size))
    }
}

/// Every checkpoint tensor name of `config` with its shape, in file order.
pub fn tensor_shapes(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let mut shapes = vec![(
        "tok_embeddings.weight".to_string(),
        vec![c.vocab_size, c.dim],
    )];
    for l in 0..c.n_layers {
        let p = format!("layers.{l}");
        shapes.push((format!("{p}.attention_norm.weight"), vec![c.dim]));
        shapes.push((format!("{p}.attention.wq.weight"), vec![c.q_dim(), c.dim]));
        shapes.push((format!("{p}.attention.wk.weight"), vec![c.kv_dim(), c.dim]));
        shapes.push((format!("{p}.attention.wv.weight"), vec![c.kv_dim(), c.dim]));
        shapes.push((format!("{p}.attention.wo.weight"), vec![c.dim, c.q_dim()]));
        shapes.push((format!("{p}.ffn_norm.weight"), vec![c.dim]));
        shapes.push((
            format!("{p}.feed_forward.w1.weight"),
            vec![c.hidden_dim, c.dim],
        ));
        shapes.push((
            format!("{p}.feed_forward.w2.weight"),
            vec![c.dim, c.hidden_dim],
        ));
        if c.ffn == Ffn::Swiglu {
            shapes.push((
                format!("{p}.feed_forward.w3.weight"),
                vec![c.hidden_dim, c.dim],
            ));
        }
    }
    shapes.push(("norm.weight".to_string(), vec![c.dim]));
    if !c.tied_embeddings {
        shapes.push(("output.weight".to_string(), vec![c.vocab_size, c.dim]));
    }
    shapes
}

/// A fresh [`VarMap`] with seeded initial weights: norms 1, other matrices normal with std
/// 0.02 (llama2.c), residual projections (`wo`, `w2`) scaled by `1/sqrt(2·n_layers)`.
pub fn init_varmap(config: &ModelConfig, rng: &mut Rng, device: &Device) -> Result<VarMap> {
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().expect("fresh VarMap");
        for (name, shape) in tensor_shapes(config) {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name.ends_with("norm.weight") {
                vec![1.0; n]
            } else {
                let residual = name.ends_with("wo.weight") || name.ends_with("w2.weight");
                let std = if residual {
                    0.02 / (2.0 * config.n_layers as f64).sqrt()
                } else {
                    0.02
                };
                (0..n).map(|_| (rng.normal() * std) as f32).collect()
            };
            let tensor = Tensor::from_vec(values, shape, device)?;
            data.insert(name, Var::from_tensor(&tensor)?);
        }
    }
    Ok(varmap)
}

/// Builds the model over the variables of `varmap` (trainable: gradients flow into them).
pub fn from_varmap(varmap: &VarMap, config: &ModelConfig, device: &Device) -> Result<Transformer> {
    Transformer::new(VarBuilder::from_varmap(varmap, DType::F32, device), config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenizerKind;

    fn config(dim: usize, n_heads: usize, n_kv_heads: usize, ffn: Ffn, tied: bool) -> ModelConfig {
        ModelConfig {
            vocab_size: 11,
            dim,
            hidden_dim: 7,
            n_layers: 2,
            n_heads,
            n_kv_heads,
            head_size: None,
            seq_len: 9,
            ffn,
            tied_embeddings: tied,
            tokenizer: TokenizerKind::Char,
        }
    }

    /// The architecture written as plain loops over f32 (llama2.c `forward`), one token at a time
    /// with a KV cache: the reference the candle model must match.
    fn reference_logits(
        c: &ModelConfig,
        w: &std::collections::HashMap<String, Vec<f32>>,
        ids: &[u32],
    ) -> Vec<Vec<f32>> {
        let hs = c.head_size();
        let matvec = |m: &[f32], x: &[f32], rows: usize| -> Vec<f32> {
            (0..rows)
                .map(|r| (0..x.len()).map(|i| m[r * x.len() + i] * x[i]).sum())
                .collect()
        };
        let rmsnorm = |x: &[f32], g: &[f32]| -> Vec<f32> {
            let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
            let s = 1.0 / (ms + 1e-5).sqrt();
            x.iter().zip(g).map(|(v, g)| v * s * g).collect()
        };
        let rope = |v: &mut [f32], pos: usize| {
            // Per head, pairs (2j, 2j+1); an odd head size leaves its last element alone.
            for head in 0..v.len() / hs {
                for j in 0..hs / 2 {
                    let i = head * hs + 2 * j;
                    let freq = 1.0 / 10000f32.powf((2 * j) as f32 / hs as f32);
                    let angle = pos as f32 * freq;
                    let (s, co) = (angle.sin(), angle.cos());
                    let (a, b) = (v[i], v[i + 1]);
                    v[i] = a * co - b * s;
                    v[i + 1] = a * s + b * co;
                }
            }
        };
        let mut kcache: Vec<Vec<Vec<f32>>> = vec![vec![]; c.n_layers];
        let mut vcache: Vec<Vec<Vec<f32>>> = vec![vec![]; c.n_layers];
        let mut out = vec![];
        for (pos, &tok) in ids.iter().enumerate() {
            let emb = &w["tok_embeddings.weight"];
            let mut x: Vec<f32> = emb[tok as usize * c.dim..(tok as usize + 1) * c.dim].to_vec();
            for l in 0..c.n_layers {
                let p = |n: &str| &w[&format!("layers.{l}.{n}.weight")];
                let h = rmsnorm(&x, p("attention_norm"));
                let mut q = matvec(p("attention.wq"), &h, c.q_dim());
                let mut k = matvec(p("attention.wk"), &h, c.kv_dim());
                let v = matvec(p("attention.wv"), &h, c.kv_dim());
                rope(&mut q, pos);
                rope(&mut k, pos);
                kcache[l].push(k);
                vcache[l].push(v);
                let mut att_out = vec![0f32; c.q_dim()];
                for head in 0..c.n_heads {
                    let kvh = head / (c.n_heads / c.n_kv_heads);
                    let qh = &q[head * hs..(head + 1) * hs];
                    let scores: Vec<f32> = (0..=pos)
                        .map(|t| {
                            let kh = &kcache[l][t][kvh * hs..(kvh + 1) * hs];
                            qh.iter().zip(kh).map(|(a, b)| a * b).sum::<f32>() / (hs as f32).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f32::MIN, f32::max);
                    let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f32 = e.iter().sum();
                    for t in 0..=pos {
                        for i in 0..hs {
                            att_out[head * hs + i] += e[t] / sum * vcache[l][t][kvh * hs + i];
                        }
                    }
                }
                let o = matvec(p("attention.wo"), &att_out, c.dim);
                x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
                let h = rmsnorm(&x, p("ffn_norm"));
                let mut h1 = matvec(p("feed_forward.w1"), &h, c.hidden_dim);
                h1.iter_mut().for_each(|v| *v /= 1.0 + (-*v).exp());
                if c.ffn == Ffn::Swiglu {
                    let h3 = matvec(p("feed_forward.w3"), &h, c.hidden_dim);
                    h1.iter_mut().zip(&h3).for_each(|(a, b)| *a *= b);
                }
                let f = matvec(p("feed_forward.w2"), &h1, c.dim);
                x.iter_mut().zip(&f).for_each(|(a, b)| *a += b);
            }
            let h = rmsnorm(&x, &w["norm.weight"]);
            let head = if c.tied_embeddings {
                emb
            } else {
                &w["output.weight"]
            };
            out.push(matvec(head, &h, c.vocab_size));
        }
        out
    }

    fn check_against_reference(c: ModelConfig) {
        let device = Device::Cpu;
        let mut rng = Rng::new(7);
        let varmap = init_varmap(&c, &mut rng, &device).unwrap();
        // Larger weights than the init so that attention and RoPE visibly matter.
        let mut weights = std::collections::HashMap::new();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let values: Vec<f32> = (0..var.elem_count())
                .map(|_| rng.normal() as f32 * 0.7)
                .collect();
            var.set(&Tensor::from_vec(values.clone(), var.shape(), &device).unwrap())
                .unwrap();
            weights.insert(name.clone(), values);
        }
        let model = from_varmap(&varmap, &c, &device).unwrap();
        let ids: Vec<u32> = (0..c.seq_len as u32)
            .map(|i| (i * 7 + 3) % c.vocab_size as u32)
            .collect();
        let logits = model
            .forward(
                &Tensor::new(ids.as_slice(), &device)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
            )
            .unwrap();
        let logits = logits.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        let expected = reference_logits(&c, &weights, &ids);
        for (pos, (a, b)) in logits.iter().zip(&expected).enumerate() {
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() < 1e-4 * (1.0 + y.abs()),
                    "{c:?} pos {pos}: {x} vs {y}"
                );
            }
        }
    }

    #[test]
    fn matches_reference_loops() {
        check_against_reference(config(8, 2, 2, Ffn::Plain, true));
        check_against_reference(config(12, 4, 2, Ffn::Swiglu, false)); // GQA, untied
        check_against_reference(config(9, 3, 3, Ffn::Plain, true)); // odd head size 3
        check_against_reference(config(4, 4, 4, Ffn::Plain, true)); // head size 1: no rotation
        check_against_reference(config(18, 3, 3, Ffn::Plain, true)); // chat-10k's shape
                                                                     // Explicit head sizes: an attention narrower (3·2 on 8) and wider (8·3 on 4) than dim.
        let mut narrow = config(8, 3, 3, Ffn::Plain, true);
        narrow.head_size = Some(2);
        check_against_reference(narrow);
        let mut wide = config(4, 8, 4, Ffn::Swiglu, false);
        wide.head_size = Some(3);
        check_against_reference(wide);
    }

    #[test]
    fn gradients_reach_every_tensor() {
        let c = config(8, 2, 1, Ffn::Swiglu, false);
        let device = Device::Cpu;
        let varmap = init_varmap(&c, &mut Rng::new(1), &device).unwrap();
        let model = from_varmap(&varmap, &c, &device).unwrap();
        let ids = Tensor::new(&[[1u32, 2, 3, 4], [5, 6, 7, 8]], &device).unwrap();
        let loss = model
            .forward(&ids)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let g = grads
                .get(var)
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0 && norm.is_finite(), "{name}: {norm}");
        }
    }
}
