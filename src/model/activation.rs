//! SwiGLU's gate `silu(a) ⊙ b` as one candle op with its own backward (two ops and a kept
//! `silu(a)` tensor before).

use super::kernels::{self, dispatch};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// `silu(a) ⊙ b` for tensors of one shape, differentiable in both.
pub fn swiglu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, SwigluOp)
}

struct SwigluOp;

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + kernels::exp(-x))
}

#[inline(always)]
fn forward_kernel(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(&a, &b)| a * sigmoid(a) * b).collect()
}

/// `da = dy·b·σ(a)·(1 + a·(1 − σ(a)))`, `db = dy·silu(a)`.
#[inline(always)]
fn backward_kernel(a: &[f32], b: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (mut da, mut db) = (vec![0f32; a.len()], vec![0f32; a.len()]);
    for i in 0..a.len() {
        let s = sigmoid(a[i]);
        db[i] = dy[i] * a[i] * s;
        da[i] = dy[i] * b[i] * s * (1.0 + a[i] * (1.0 - s));
    }
    (da, db)
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((x, y)) => Ok(&data[x..y]),
        None => candle_core::bail!("swiglu: inputs must be contiguous"),
    }
}

impl CustomOp2 for SwigluOp {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if la.shape() != lb.shape() {
            candle_core::bail!("swiglu: shapes {:?} and {:?}", la.shape(), lb.shape());
        }
        let (a, b) = (slice(sa, la)?, slice(sb, lb)?);
        let y = dispatch!(forward_kernel(a, b));
        Ok((CpuStorage::F32(y), la.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let (av, bv, dyv) = (flat(a)?, flat(b)?, flat(dy)?);
        let (da, db) = dispatch!(backward_kernel(&av, &bv, &dyv));
        Ok((
            Some(Tensor::from_vec(da, a.shape(), a.device())?),
            Some(Tensor::from_vec(db, b.shape(), b.device())?),
        ))
    }
}
