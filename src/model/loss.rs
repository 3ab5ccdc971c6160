//! Mean cross-entropy over logits as one candle op with its own backward: the log-softmax,
//! the pick of each target and the mean in one pass over `[n, vocab]`, and a backward that
//! writes `(softmax − onehot) / n` directly (no `[n, vocab]` intermediates kept for autograd).

use super::kernels::{self, dispatch};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use std::sync::Mutex;

/// Mean over rows of `−log softmax(logits)[target]`; `logits: [n, vocab]` f32, `targets: [n]`
/// u32. Differentiable in the logits.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    logits.contiguous()?.apply_op2(
        &targets.contiguous()?,
        CrossEntropyOp {
            log_sum_exp: Mutex::new(None),
        },
    )
}

/// One call; keeps each row's log-sum-exp for the backward.
struct CrossEntropyOp {
    log_sum_exp: Mutex<Option<Vec<f32>>>,
}

#[inline(always)]
fn forward_kernel(logits: &[f32], targets: &[u32], vocab: usize) -> Result<(f64, Vec<f32>)> {
    let mut row = vec![0f32; vocab];
    let mut lse = Vec::with_capacity(targets.len());
    let mut total = 0f64;
    for (r, &target) in logits.chunks_exact(vocab).zip(targets) {
        if target as usize >= vocab {
            candle_core::bail!("cross-entropy: target {target} outside the vocabulary of {vocab}");
        }
        row.copy_from_slice(r);
        let m = kernels::max(&row);
        let l = m + kernels::exp_shifted_sum(&mut row, m).ln();
        total += (l - r[target as usize]) as f64;
        lse.push(l);
    }
    Ok((total / targets.len().max(1) as f64, lse))
}

#[inline(always)]
fn backward_kernel(
    logits: &[f32],
    targets: &[u32],
    lse: &[f32],
    vocab: usize,
    scale: f32,
) -> Vec<f32> {
    let mut d = vec![0f32; logits.len()];
    for ((r, dr), (&target, &l)) in logits
        .chunks_exact(vocab)
        .zip(d.chunks_exact_mut(vocab))
        .zip(targets.iter().zip(lse))
    {
        for (d, &x) in dr.iter_mut().zip(r) {
            *d = kernels::exp(x - l) * scale;
        }
        dr[target as usize] -= scale;
    }
    d
}

impl CustomOp2 for CrossEntropyOp {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(
        &self,
        sl: &CpuStorage,
        ll: &Layout,
        st: &CpuStorage,
        lt: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, vocab) = ll.shape().dims2()?;
        if lt.shape().dims() != [n] {
            candle_core::bail!(
                "cross-entropy: {n} rows of logits, targets {:?}",
                lt.shape()
            );
        }
        let (Some((l0, l1)), Some((t0, t1))) = (ll.contiguous_offsets(), lt.contiguous_offsets())
        else {
            candle_core::bail!("cross-entropy: inputs must be contiguous");
        };
        let logits = &sl.as_slice::<f32>()?[l0..l1];
        let targets = &st.as_slice::<u32>()?[t0..t1];
        let (mean, lse) = dispatch!(forward_kernel(logits, targets, vocab))?;
        *self.log_sum_exp.lock().expect("cross-entropy state") = Some(lse);
        Ok((CpuStorage::F32(vec![mean as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _loss: &Tensor,
        d_loss: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, vocab) = logits.dims2()?;
        let lv = logits.flatten_all()?.to_vec1::<f32>()?;
        let tv = targets.to_vec1::<u32>()?;
        let scale = d_loss.to_scalar::<f32>()? / n.max(1) as f32;
        let guard = self.log_sum_exp.lock().expect("cross-entropy state");
        let Some(lse) = guard.as_ref() else {
            candle_core::bail!("cross-entropy: backward before forward");
        };
        let d = dispatch!(backward_kernel(&lv, &tv, lse, vocab, scale));
        Ok((
            Some(Tensor::from_vec(d, (n, vocab), logits.device())?),
            None,
        ))
    }
}
