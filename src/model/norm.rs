//! RMSNorm as one candle op with its own backward: `y = x / sqrt(mean(x²) + eps) · g` over the
//! last dimension (the composition of seven tensor ops, and their backward graph, before).

use super::kernels::{self, dispatch};
use super::RMS_NORM_EPS;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use std::sync::Mutex;

/// RMSNorm of `x: [.., dim]` with gain `weight: [dim]`, differentiable in both.
pub fn rms_norm(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(
        &weight.contiguous()?,
        RmsNormOp {
            inv_rms: Mutex::new(None),
        },
    )
}

/// One call; keeps each row's `1 / rms` for the backward.
struct RmsNormOp {
    inv_rms: Mutex<Option<Vec<f32>>>,
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("rms-norm: inputs must be contiguous"),
    }
}

#[inline(always)]
fn forward_kernel(x: &[f32], g: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let dim = g.len();
    let mut y = vec![0f32; x.len()];
    let mut inv = Vec::with_capacity(x.len() / dim);
    for (xr, yr) in x.chunks_exact(dim).zip(y.chunks_exact_mut(dim)) {
        let s = 1.0 / (kernels::dot(xr, xr) / dim as f32 + RMS_NORM_EPS as f32).sqrt();
        for ((y, &x), &g) in yr.iter_mut().zip(xr).zip(g) {
            *y = x * s * g;
        }
        inv.push(s);
    }
    (y, inv)
}

/// `dx = s·(dy⊙g − x̂·mean(dy⊙g⊙x̂))`, `dg = Σ_rows dy⊙x̂`, with `x̂ = x·s`.
#[inline(always)]
fn backward_kernel(x: &[f32], g: &[f32], inv: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let dim = g.len();
    let mut dx = vec![0f32; x.len()];
    let mut dg = vec![0f32; dim];
    let mut dyg = vec![0f32; dim];
    for (((xr, dyr), dxr), &s) in x
        .chunks_exact(dim)
        .zip(dy.chunks_exact(dim))
        .zip(dx.chunks_exact_mut(dim))
        .zip(inv)
    {
        for i in 0..dim {
            dyg[i] = dyr[i] * g[i];
            dg[i] += dyr[i] * xr[i] * s;
        }
        // mean(dy⊙g⊙x̂) = s · (dy⊙g)·x / dim
        let c = s * s * kernels::dot(&dyg, xr) / dim as f32;
        for i in 0..dim {
            dxr[i] = s * (dyg[i] - xr[i] * c);
        }
    }
    (dx, dg)
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (slice(sx, lx)?, slice(sg, lg)?);
        if lx.shape().dims().last() != Some(&g.len()) || lg.shape().rank() != 1 {
            candle_core::bail!("rms-norm: x {:?} and gain {:?}", lx.shape(), lg.shape());
        }
        let (y, inv) = dispatch!(forward_kernel(x, g));
        *self.inv_rms.lock().expect("rms-norm state") = Some(inv);
        Ok((CpuStorage::F32(y), lx.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let (xv, gv, dyv) = (flat(x)?, flat(g)?, flat(dy)?);
        let guard = self.inv_rms.lock().expect("rms-norm state");
        let Some(inv) = guard.as_ref() else {
            candle_core::bail!("rms-norm: backward before forward");
        };
        let (dx, dg) = dispatch!(backward_kernel(&xv, &gv, inv, &dyv));
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dg, g.shape(), g.device())?),
        ))
    }
}
