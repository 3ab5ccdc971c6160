//! The optimizer: AdamW with its moments saved and restored exactly, and the learning-rate
//! schedule.

use crate::config::TrainConfig;
use anyhow::{bail, Context, Result};
use candle_core::{CpuStorage, Device, InplaceOp1, Layout, Storage, Tensor, Var};
use candle_nn::VarMap;
use std::collections::HashMap;

const ADAM_BETA1: f32 = 0.9;
const ADAM_BETA2: f32 = 0.95;
const ADAM_EPS: f32 = 1e-8;

/// The gradients of one batch as the backward passes left them: per shard, its weight in the
/// batch mean and one tensor per variable (in [`AdamW::vars`] order).
pub type ShardGradients = Vec<(f32, Vec<Tensor>)>;

/// AdamW over the variables of a [`VarMap`], in plain f32 loops so that its moments can be saved
/// and restored exactly (candle-nn's `AdamW` keeps them private). Same update as candle-nn's,
/// with decoupled weight decay on matrices only (not on RMSNorm gains).
///
/// No step allocates: the gradients are summed straight from the storage of the tensors
/// backward produced into buffers the optimizer keeps, the update runs over those buffers, and
/// the new weights are written into the variables' own storage ([`WriteWeights`], a candle
/// in-place op) — no gradient, weight or moment goes through a `Vec` made for the step.
pub struct AdamW {
    names: Vec<String>,
    vars: Vec<Var>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// The moments and weights a step computes, committed once every new weight is known
    /// finite (the moments by a swap, the weights copied into the variables).
    next_m: Vec<Vec<f32>>,
    next_v: Vec<Vec<f32>>,
    next_theta: Vec<Vec<f32>>,
    /// This step's gradient (the mean over its batches), one buffer per variable, reused.
    grad: Vec<Vec<f32>>,
    /// Batches added to `grad` since the last step (0: the next one overwrites it).
    batches: usize,
    step: usize,
    weight_decay: f32,
}

impl AdamW {
    /// An optimizer over every variable of `varmap`, moments zero.
    pub fn new(varmap: &VarMap, weight_decay: f64) -> Result<Self> {
        let data = varmap.data().lock().expect("VarMap lock");
        let mut names: Vec<String> = data.keys().cloned().collect();
        names.sort();
        let vars: Vec<Var> = names.iter().map(|n| data[n].clone()).collect();
        let zeros = || vars.iter().map(|v| vec![0f32; v.elem_count()]).collect();
        Ok(AdamW {
            m: zeros(),
            v: zeros(),
            next_m: zeros(),
            next_v: zeros(),
            next_theta: zeros(),
            grad: zeros(),
            batches: 0,
            names,
            vars,
            step: 0,
            weight_decay: weight_decay as f32,
        })
    }

    /// Adds `scale` × one batch's gradient (its shards' weighted sum, in shard order) to this
    /// step's gradient, reading the gradient tensors' storage in place.
    pub fn add_gradients(&mut self, shards: &ShardGradients, scale: f32) -> Result<()> {
        let first = self.batches == 0;
        for (i, var) in self.vars.iter().enumerate() {
            // Backward may hand a gradient over as a strided view: those (rare) are made
            // contiguous first; the rest are read where they are.
            let tensors = shards
                .iter()
                .map(|(weight, grads)| {
                    let g = grads.get(i).context("a weight got no gradient")?;
                    if g.elem_count() != var.elem_count() {
                        bail!(
                            "gradient of {} has {} elements, the weight {}",
                            self.names[i],
                            g.elem_count(),
                            var.elem_count()
                        );
                    }
                    Ok((
                        *weight,
                        if g.is_contiguous() {
                            g.clone()
                        } else {
                            g.contiguous()?
                        },
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let guards: Vec<_> = tensors
                .iter()
                .map(|(w, t)| (*w, t.storage_and_layout()))
                .collect();
            let slices = guards
                .iter()
                .map(|(w, (storage, layout))| Ok((*w, f32_slice(storage, layout, "a gradient")?)))
                .collect::<Result<Vec<_>>>()?;
            let acc = &mut self.grad[i];
            let add = |a: &mut f32, batch: f32| {
                *a = if first {
                    batch * scale
                } else {
                    *a + batch * scale
                };
            };
            // The usual one or two shards as zipped slices (no bounds checks, vectorized).
            match slices.as_slice() {
                [(w0, s0)] => acc.iter_mut().zip(*s0).for_each(|(a, &x0)| add(a, x0 * w0)),
                [(w0, s0), (w1, s1)] => acc
                    .iter_mut()
                    .zip(*s0)
                    .zip(*s1)
                    .for_each(|((a, &x0), &x1)| add(a, x0 * w0 + x1 * w1)),
                _ => {
                    for (j, a) in acc.iter_mut().enumerate() {
                        let mut batch = slices[0].1[j] * slices[0].0;
                        for (w, s) in &slices[1..] {
                            batch += s[j] * w;
                        }
                        add(a, batch);
                    }
                }
            }
        }
        self.batches += 1;
        Ok(())
    }

    /// Clips this step's gradient (the batches given to [`AdamW::add_gradients`]) to global norm
    /// `clip`, then applies one update; returns the norm before clipping, and whether every
    /// updated weight is finite (if not, nothing changes).
    pub fn step(&mut self, lr: f64, clip: f64) -> Result<(f64, bool)> {
        if self.batches == 0 {
            bail!("an optimizer step without gradients");
        }
        self.batches = 0;
        let norm = self
            .grad
            .iter()
            .flatten()
            .map(|&g| (g as f64) * (g as f64))
            .sum::<f64>()
            .sqrt();
        let scale = if clip > 0.0 && norm > clip {
            (clip / norm) as f32
        } else {
            1.0
        };
        let t = (self.step + 1) as i32;
        let (b1, b2) = (ADAM_BETA1, ADAM_BETA2);
        let update = Update {
            lr: lr as f32,
            correction1: 1.0 - b1.powi(t),
            correction2: 1.0 - b2.powi(t),
        };
        // Pass 1: the new moments and weights into the optimizer's own buffers (the variables
        // untouched), and whether every new weight is finite.
        let mut finite = true;
        for (i, var) in self.vars.iter().enumerate() {
            let decay = decay(var, update.lr, self.weight_decay);
            let (storage, layout) = var.as_tensor().storage_and_layout();
            let theta = f32_slice(&storage, layout, "a weight")?;
            let n = theta.len();
            let (g, m, v) = (&self.grad[i][..n], &self.m[i][..n], &self.v[i][..n]);
            let next_m = &mut self.next_m[i][..n];
            let next_v = &mut self.next_v[i][..n];
            let next_theta = &mut self.next_theta[i][..n];
            for j in 0..n {
                let g = g[j] * scale;
                next_m[j] = b1 * m[j] + (1.0 - b1) * g;
                next_v[j] = b2 * v[j] + (1.0 - b2) * g * g;
                let step = (next_m[j] / update.correction1)
                    / ((next_v[j] / update.correction2).sqrt() + ADAM_EPS);
                next_theta[j] = theta[j] * decay - update.lr * step;
                finite &= next_theta[j].is_finite();
            }
        }
        if !finite {
            return Ok((norm, false));
        }
        // Pass 2: commit the moments (a swap) and copy the new weights into the variables'
        // own storage.
        std::mem::swap(&mut self.m, &mut self.next_m);
        std::mem::swap(&mut self.v, &mut self.next_v);
        self.step += 1;
        for (var, weights) in self.vars.iter().zip(&self.next_theta) {
            var.as_tensor().inplace_op1(&WriteWeights(weights))?;
        }
        Ok((norm, true))
    }

    /// Weights and moments (`param.*`, `adam_m.*`, `adam_v.*`) for `state.safetensors`.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (i, (name, var)) in self.names.iter().zip(&self.vars).enumerate() {
            out.push((format!("param.{name}"), var.as_tensor().copy()?));
            out.push((
                format!("adam_m.{name}"),
                Tensor::from_vec(self.m[i].clone(), var.shape(), &Device::Cpu)?,
            ));
            out.push((
                format!("adam_v.{name}"),
                Tensor::from_vec(self.v[i].clone(), var.shape(), &Device::Cpu)?,
            ));
        }
        Ok(out)
    }

    /// Restores weights and moments from the `state.safetensors` tensors of step `step`.
    pub fn restore(&mut self, tensors: &HashMap<String, Tensor>, step: usize) -> Result<()> {
        for (i, (name, var)) in self.names.iter().zip(&self.vars).enumerate() {
            let get = |prefix: &str| {
                tensors
                    .get(&format!("{prefix}.{name}"))
                    .with_context(|| format!("state has no {prefix}.{name}"))
            };
            var.set(get("param")?)?;
            self.m[i] = get("adam_m")?.flatten_all()?.to_vec1()?;
            self.v[i] = get("adam_v")?.flatten_all()?.to_vec1()?;
        }
        self.step = step;
        Ok(())
    }

    /// The trained variables, sorted by checkpoint name (the order of gradients in [`AdamW::step`]).
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Every weight by checkpoint name, for `model.safetensors`.
    pub fn weights(&self) -> Vec<(String, Tensor)> {
        self.names
            .iter()
            .zip(&self.vars)
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect()
    }
}

/// The scalars of one AdamW update.
#[derive(Clone, Copy)]
struct Update {
    lr: f32,
    correction1: f32,
    correction2: f32,
}

/// Copies a step's new weights into a variable's own storage (a candle in-place op: no new
/// tensor, no allocation).
struct WriteWeights<'a>(&'a [f32]);

impl InplaceOp1 for WriteWeights<'_> {
    fn name(&self) -> &'static str {
        "adamw-write-weights"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("AdamW: weights must be f32");
        };
        let Some((lo, hi)) = layout.contiguous_offsets() else {
            candle_core::bail!("AdamW: weights must be contiguous");
        };
        if hi - lo != self.0.len() {
            candle_core::bail!("AdamW: {} weights, {} new values", hi - lo, self.0.len());
        }
        data[lo..hi].copy_from_slice(self.0);
        Ok(())
    }
}

/// The f32 elements of a contiguous CPU tensor's storage.
fn f32_slice<'a>(storage: &'a Storage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let Storage::Cpu(cpu) = storage else {
        bail!("AdamW: {what} is not on the CPU");
    };
    let data = cpu.as_slice::<f32>()?;
    let (lo, hi) = layout
        .contiguous_offsets()
        .with_context(|| format!("AdamW: {what} is not contiguous"))?;
    Ok(&data[lo..hi])
}

/// Decoupled weight decay factor of one variable: matrices decay, RMSNorm gains do not.
fn decay(var: &Var, lr: f32, weight_decay: f32) -> f32 {
    if var.rank() >= 2 {
        1.0 - lr * weight_decay
    } else {
        1.0
    }
}

/// Learning rate for the update that takes the model from `step` to `step + 1`: linear warmup
/// to the peak, then cosine down to the floor at the last step.
pub fn learning_rate(train: &TrainConfig, step: usize) -> f64 {
    learning_rate_in_budget(train, step, 0.0)
}

/// [`learning_rate`] under a wall-clock budget of which the share `budget_used` (0..1) is
/// spent: the cosine follows whichever of the steps and the budget is further along, so it
/// reaches the floor when the budget ends.
pub fn learning_rate_in_budget(train: &TrainConfig, step: usize, budget_used: f64) -> f64 {
    if step < train.warmup_steps {
        return train.learning_rate * (step + 1) as f64 / train.warmup_steps as f64;
    }
    let span = train.steps.saturating_sub(train.warmup_steps).max(1) as f64;
    let progress = ((step - train.warmup_steps) as f64 / span)
        .max(budget_used)
        .min(1.0);
    train.min_learning_rate
        + 0.5
            * (train.learning_rate - train.min_learning_rate)
            * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A matrix and a gain vector in a VarMap, and an optimizer over them.
    fn setup() -> (VarMap, AdamW) {
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().unwrap();
            let w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.0) * 0.1).collect();
            let w = Tensor::from_vec(w, (3, 4), &Device::Cpu).unwrap();
            data.insert("a.weight".into(), Var::from_tensor(&w).unwrap());
            let g = Tensor::from_vec(vec![1f32, 0.5, -0.25], 3, &Device::Cpu).unwrap();
            data.insert("b.gain".into(), Var::from_tensor(&g).unwrap());
        }
        let optimizer = AdamW::new(&varmap, 0.1).unwrap();
        (varmap, optimizer)
    }

    /// Two shards' gradients for step `k`, one non-contiguous (a transposed view).
    fn shards(k: usize) -> ShardGradients {
        let f = |scale: f32, n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 7 + k * 3) % 11) as f32 * scale - 0.3)
                .collect()
        };
        let dev = &Device::Cpu;
        let a0 = Tensor::from_vec(f(0.2, 12), (3, 4), dev).unwrap();
        let a1 = Tensor::from_vec(f(-0.1, 12), (4, 3), dev)
            .unwrap()
            .t()
            .unwrap();
        let b0 = Tensor::from_vec(f(0.05, 3), 3, dev).unwrap();
        let b1 = Tensor::from_vec(f(0.3, 3), 3, dev).unwrap();
        vec![(0.25, vec![a0, b0]), (0.75, vec![a1, b1])]
    }

    /// The update written as plain loops over copies (the optimizer before it ran in place).
    #[allow(clippy::type_complexity)]
    fn reference(steps: usize, lr: f32, clip: f64) -> Vec<Vec<f32>> {
        let (_, optimizer) = setup();
        let mut theta: Vec<Vec<f32>> = optimizer
            .vars
            .iter()
            .map(|v| v.flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        let mut m: Vec<Vec<f32>> = theta.iter().map(|t| vec![0.0; t.len()]).collect();
        let mut v = m.clone();
        for k in 0..steps {
            let shards = shards(k);
            let mut grads: Vec<Vec<f32>> = Vec::new();
            for (w, g) in &shards {
                let g: Vec<Vec<f32>> = g
                    .iter()
                    .map(|t| t.flatten_all().unwrap().to_vec1().unwrap())
                    .collect();
                if grads.is_empty() {
                    grads = g
                        .iter()
                        .map(|g| g.iter().map(|x| x * w).collect())
                        .collect();
                } else {
                    for (a, g) in grads.iter_mut().zip(g) {
                        a.iter_mut().zip(g).for_each(|(a, x)| *a += x * w);
                    }
                }
            }
            let norm = grads
                .iter()
                .flatten()
                .map(|&g| (g as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            let scale = if norm > clip {
                (clip / norm) as f32
            } else {
                1.0
            };
            let t = (k + 1) as i32;
            let (c1, c2) = (1.0 - ADAM_BETA1.powi(t), 1.0 - ADAM_BETA2.powi(t));
            for i in 0..theta.len() {
                let decay = if i == 0 { 1.0 - lr * 0.1 } else { 1.0 };
                for j in 0..theta[i].len() {
                    let g = grads[i][j] * scale;
                    m[i][j] = ADAM_BETA1 * m[i][j] + (1.0 - ADAM_BETA1) * g;
                    v[i][j] = ADAM_BETA2 * v[i][j] + (1.0 - ADAM_BETA2) * g * g;
                    let update = (m[i][j] / c1) / ((v[i][j] / c2).sqrt() + ADAM_EPS);
                    theta[i][j] = theta[i][j] * decay - lr * update;
                }
            }
        }
        theta
    }

    fn weights(optimizer: &AdamW) -> Vec<Vec<f32>> {
        optimizer
            .vars
            .iter()
            .map(|v| v.flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    }

    #[test]
    fn the_in_place_update_equals_plain_loops_bit_for_bit() {
        let (varmap, mut optimizer) = setup();
        for k in 0..5 {
            optimizer.add_gradients(&shards(k), 1.0).unwrap();
            let (norm, finite) = optimizer.step(0.01, 0.5).unwrap();
            assert!(finite && norm > 0.5, "clipping is exercised: {norm}");
        }
        assert_eq!(weights(&optimizer), reference(5, 0.01, 0.5));
        // The VarMap (what the model reads) holds the same storage.
        let w = varmap.data().lock().unwrap()["a.weight"]
            .flatten_all()
            .unwrap();
        assert_eq!(w.to_vec1::<f32>().unwrap(), weights(&optimizer)[0]);
    }

    #[test]
    fn accumulated_batches_average_and_a_non_finite_update_changes_nothing() {
        // Two batches of the same gradients at weight 1/2 each = one batch.
        let (_, mut a) = setup();
        let (_, mut b) = setup();
        a.add_gradients(&shards(0), 1.0).unwrap();
        b.add_gradients(&shards(0), 0.5).unwrap();
        b.add_gradients(&shards(0), 0.5).unwrap();
        assert_eq!(a.step(0.01, 0.0).unwrap().0, b.step(0.01, 0.0).unwrap().0);
        assert_eq!(weights(&a), weights(&b));

        // A NaN gradient: reported, and the weights, moments and step stay as they were.
        let (_, mut optimizer) = setup();
        let before = weights(&optimizer);
        let mut bad = shards(0);
        bad[0].1[1] = Tensor::from_vec(vec![f32::NAN, 0.0, 0.0], 3, &Device::Cpu).unwrap();
        optimizer.add_gradients(&bad, 1.0).unwrap();
        assert!(!optimizer.step(0.01, 0.5).unwrap().1);
        assert_eq!(weights(&optimizer), before);
        optimizer.add_gradients(&shards(0), 1.0).unwrap();
        optimizer.step(0.01, 0.5).unwrap();
        assert_eq!(weights(&optimizer), reference(1, 0.01, 0.5));
        // A step without gradients is an error, not a silent no-op.
        assert!(optimizer.step(0.01, 0.5).is_err());
    }

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let t = TrainConfig {
            steps: 100,
            warmup_steps: 10,
            learning_rate: 1.0,
            min_learning_rate: 0.1,
            ..TrainConfig::default()
        };
        assert!((learning_rate(&t, 0) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&t, 9) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&t, 10) - 1.0).abs() < 1e-12);
        assert!(learning_rate(&t, 50) < 1.0 && learning_rate(&t, 50) > 0.1);
        assert!((learning_rate(&t, 100) - 0.1).abs() < 1e-12);
        // A budget further along than the steps takes over; one behind them does not.
        assert!((learning_rate_in_budget(&t, 20, 1.0) - 0.1).abs() < 1e-12);
        assert!(learning_rate_in_budget(&t, 20, 0.5) < learning_rate(&t, 20));
        assert_eq!(learning_rate_in_budget(&t, 60, 0.1), learning_rate(&t, 60));
    }
}
