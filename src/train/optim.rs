//! The optimizer: AdamW with its moments saved and restored exactly, and the learning-rate
//! schedule.

use crate::config::TrainConfig;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use std::collections::HashMap;

const ADAM_BETA1: f32 = 0.9;
const ADAM_BETA2: f32 = 0.95;
const ADAM_EPS: f32 = 1e-8;

/// AdamW over the variables of a [`VarMap`], in plain f32 loops so that its moments can be saved
/// and restored exactly (candle-nn's `AdamW` keeps them private). Same update as candle-nn's,
/// with decoupled weight decay on matrices only (not on RMSNorm gains).
pub struct AdamW {
    names: Vec<String>,
    vars: Vec<Var>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
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
        let m = vars.iter().map(|v| vec![0f32; v.elem_count()]).collect();
        let v = vars.iter().map(|v| vec![0f32; v.elem_count()]).collect();
        Ok(AdamW {
            names,
            vars,
            m,
            v,
            step: 0,
            weight_decay: weight_decay as f32,
        })
    }

    /// Clips the gradients to global norm `clip`, then applies one update; returns the norm
    /// before clipping, and whether every updated weight is finite (if not, nothing changes).
    pub fn step(&mut self, flat: &[Vec<f32>], lr: f64, clip: f64) -> Result<(f64, bool)> {
        let norm = flat
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
        let (lr, b1, b2) = (lr as f32, ADAM_BETA1, ADAM_BETA2);
        let (correction1, correction2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let (mut new_m, mut new_v, mut new_theta) = (self.m.clone(), self.v.clone(), Vec::new());
        for (i, var) in self.vars.iter().enumerate() {
            let decay = if var.rank() >= 2 {
                1.0 - lr * self.weight_decay
            } else {
                1.0
            };
            let mut theta = var.flatten_all()?.to_vec1::<f32>()?;
            let (m, v) = (&mut new_m[i], &mut new_v[i]);
            for (j, g) in flat[i].iter().enumerate() {
                let g = g * scale;
                m[j] = b1 * m[j] + (1.0 - b1) * g;
                v[j] = b2 * v[j] + (1.0 - b2) * g * g;
                let update = (m[j] / correction1) / ((v[j] / correction2).sqrt() + ADAM_EPS);
                theta[j] = theta[j] * decay - lr * update;
            }
            new_theta.push(theta);
        }
        if !new_theta.iter().flatten().all(|w| w.is_finite()) {
            return Ok((norm, false));
        }
        self.step += 1;
        (self.m, self.v) = (new_m, new_v);
        for (var, theta) in self.vars.iter().zip(new_theta) {
            var.set(&Tensor::from_vec(theta, var.shape(), var.device())?)?;
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
