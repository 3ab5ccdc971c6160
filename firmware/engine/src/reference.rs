//! A float (f64) forward pass over a [`FloatModel`], written like llama2.c's `run.c` (host only,
//! feature `std`). It is the yardstick for the integer pass in tests: same architecture
//! (docs/ARCHITECTURE.md), no quantisation.

use crate::format::FfnKind;
use crate::quantize::{rope_angle, FloatModel};
use std::vec::Vec;

/// A float decoding context with its KV cache.
pub struct FloatSession<'m> {
    model: &'m FloatModel,
    key_cache: Vec<Vec<f64>>,   // [layer][pos·kv_dim]
    value_cache: Vec<Vec<f64>>, // [layer][pos·kv_dim]
    pos: usize,
}

fn matmul(w: &[f32], x: &[f64], rows: usize) -> Vec<f64> {
    let cols = x.len();
    (0..rows)
        .map(|r| {
            w[r * cols..(r + 1) * cols]
                .iter()
                .zip(x)
                .map(|(&w, &x)| w as f64 * x)
                .sum()
        })
        .collect()
}

fn rmsnorm(x: &[f64], g: &[f32]) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + 1e-5).sqrt();
    x.iter().zip(g).map(|(&v, &g)| v * inv * g as f64).collect()
}

fn rope(v: &mut [f64], head_size: usize, pos: usize) {
    for head in v.chunks_exact_mut(head_size) {
        for j in 0..head_size / 2 {
            let (s, c) = rope_angle(pos, j, head_size).sin_cos();
            let (a, b) = (head[2 * j], head[2 * j + 1]);
            head[2 * j] = a * c - b * s;
            head[2 * j + 1] = a * s + b * c;
        }
    }
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

impl<'m> FloatSession<'m> {
    pub fn new(model: &'m FloatModel) -> FloatSession<'m> {
        let n = model.config.n_layers;
        FloatSession {
            model,
            key_cache: std::vec![Vec::new(); n],
            value_cache: std::vec![Vec::new(); n],
            pos: 0,
        }
    }

    pub fn reset(&mut self) {
        self.pos = 0;
        self.key_cache
            .iter_mut()
            .chain(self.value_cache.iter_mut())
            .for_each(Vec::clear);
    }

    /// Logits (natural units) after feeding `token` at the next position.
    pub fn feed(&mut self, token: u32) -> Vec<f64> {
        let m = self.model;
        let c = &m.config;
        let (dim, hs, kv_dim) = (c.dim, c.head_size(), c.kv_dim());
        let pos = self.pos;
        let t = token as usize;
        let mut x: Vec<f64> = m.tok_embeddings[t * dim..(t + 1) * dim]
            .iter()
            .map(|&v| v as f64)
            .collect();
        for (l, w) in m.layers.iter().enumerate() {
            let h = rmsnorm(&x, &w.attention_norm);
            let mut q = matmul(&w.wq, &h, c.q_dim());
            let mut k = matmul(&w.wk, &h, kv_dim);
            let v = matmul(&w.wv, &h, kv_dim);
            rope(&mut q, hs, pos);
            rope(&mut k, hs, pos);
            self.key_cache[l].extend_from_slice(&k);
            self.value_cache[l].extend_from_slice(&v);
            let mut out = std::vec![0f64; c.q_dim()];
            let kv_per_q = c.n_heads / c.n_kv_heads;
            for h in 0..c.n_heads {
                let qh = &q[h * hs..(h + 1) * hs];
                let kvo = (h / kv_per_q) * hs;
                let mut att: Vec<f64> = (0..=pos)
                    .map(|t| {
                        let kt = &self.key_cache[l][t * kv_dim + kvo..t * kv_dim + kvo + hs];
                        qh.iter().zip(kt).map(|(a, b)| a * b).sum::<f64>() / (hs as f64).sqrt()
                    })
                    .collect();
                let max = att.iter().copied().fold(f64::MIN, f64::max);
                att.iter_mut().for_each(|a| *a = (*a - max).exp());
                let sum: f64 = att.iter().sum();
                for (t, a) in att.iter().enumerate() {
                    let vt = &self.value_cache[l][t * kv_dim + kvo..t * kv_dim + kvo + hs];
                    for (o, &v) in out[h * hs..(h + 1) * hs].iter_mut().zip(vt) {
                        *o += a / sum * v;
                    }
                }
            }
            let o = matmul(&w.wo, &out, dim);
            x.iter_mut().zip(&o).for_each(|(x, d)| *x += d);
            let h = rmsnorm(&x, &w.ffn_norm);
            let mut hb = matmul(&w.w1, &h, c.hidden_dim);
            match c.ffn {
                FfnKind::Plain => hb.iter_mut().for_each(|v| *v = silu(*v)),
                FfnKind::Swiglu => {
                    let g = matmul(&w.w3, &h, c.hidden_dim);
                    hb.iter_mut().zip(&g).for_each(|(v, g)| *v = silu(*v) * g);
                }
            }
            let d = matmul(&w.w2, &hb, dim);
            x.iter_mut().zip(&d).for_each(|(x, d)| *x += d);
        }
        let h = rmsnorm(&x, &m.norm);
        self.pos += 1;
        matmul(
            m.output.as_deref().unwrap_or(&m.tok_embeddings),
            &h,
            c.vocab_size,
        )
    }
}
