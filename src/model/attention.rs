//! Causal self-attention with RoPE and grouped key/value heads as one candle op with its own
//! backward pass ([`causal_attention`]).
//!
//! Per (sequence, head) and query row `i`: rotate, score against keys `0..=i`, softmax, weight
//! the values. Rows go in blocks of `BLOCK` (4), so that each key and value loaded serves
//! several rows. Only one block's rows of scores exist at a time (no `[b, h, t, t]` tensor, no
//! mask): the forward keeps each row's log-sum-exp, and the backward recomputes the row's
//! probabilities from it (as flash attention does). Keys and values are held transposed
//! (`[head_size][t]`) so that every inner loop runs over positions, contiguous in memory.
//! Results do not depend on how many threads call the op: each op call is one thread's work, in
//! a fixed order.

use super::kernels::{self, dispatch, LANES};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use std::sync::{Arc, Mutex};

/// RoPE base (docs/ARCHITECTURE.md).
const ROPE_THETA: f32 = 10000.0;

/// RoPE rotation angles per position and pair: pairs `(2j, 2j+1)` of each head turn by
/// `pos · 10000^(−2j/head_size)` (llama2.c, computed in f32); an odd head size leaves its last
/// element alone.
#[derive(Debug, Clone)]
pub struct RopeTable {
    head_size: usize,
    seq_len: usize,
    /// `[seq_len][head_size / 2]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    pub fn new(head_size: usize, seq_len: usize) -> Self {
        let half = head_size / 2;
        let (mut cos, mut sin) = (vec![0f32; seq_len * half], vec![0f32; seq_len * half]);
        for pos in 0..seq_len {
            for j in 0..half {
                let freq = 1.0 / ROPE_THETA.powf((2 * j) as f32 / head_size as f32);
                let angle = pos as f32 * freq;
                cos[pos * half + j] = angle.cos();
                sin[pos * half + j] = angle.sin();
            }
        }
        RopeTable {
            head_size,
            seq_len,
            cos,
            sin,
        }
    }

    /// Turns the pairs of one head vector at `pos` by +angle (`forward`) or −angle (the backward).
    #[inline(always)]
    fn turn(&self, x: &mut [f32], pos: usize, forward: bool) {
        let half = self.head_size / 2;
        let (cos, sin) = (
            &self.cos[pos * half..][..half],
            &self.sin[pos * half..][..half],
        );
        for j in 0..half {
            let (a, b) = (x[2 * j], x[2 * j + 1]);
            let s = if forward { sin[j] } else { -sin[j] };
            x[2 * j] = a * cos[j] - b * s;
            x[2 * j + 1] = b * cos[j] + a * s;
        }
    }
}

/// Head counts of an attention layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_size: usize,
}

/// Causal attention of `q: [b, t, n_heads·hs]`, `k, v: [b, t, n_kv_heads·hs]` (RoPE applied to
/// q and k inside, positions `0..t`) → `[b, t, n_heads·hs]`, differentiable in all three.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: Heads,
    rope: &Arc<RopeTable>,
) -> Result<Tensor> {
    let op = AttentionOp {
        heads,
        rope: rope.clone(),
        log_sum_exp: Mutex::new(None),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// One call of the op; it keeps the forward's per-row log-sum-exp for its backward.
struct AttentionOp {
    heads: Heads,
    rope: Arc<RopeTable>,
    /// `[b][n_heads][t]`, set by the forward.
    log_sum_exp: Mutex<Option<Vec<f32>>>,
}

/// Shapes of one call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    heads: Heads,
}

impl Dims {
    fn q_width(&self) -> usize {
        self.heads.n_heads * self.heads.head_size
    }
    fn kv_width(&self) -> usize {
        self.heads.n_kv_heads * self.heads.head_size
    }
    fn group(&self) -> usize {
        self.heads.n_heads / self.heads.n_kv_heads
    }
    fn scale(&self) -> f32 {
        1.0 / (self.heads.head_size as f32).sqrt()
    }
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("causal attention: {what} must be contiguous"),
    }
}

impl AttentionOp {
    fn dims(&self, q: &Layout, k: &Layout, v: &Layout) -> Result<Dims> {
        let (b, t, qw) = q.shape().dims3()?;
        let (kb, kt, kw) = k.shape().dims3()?;
        let h = self.heads;
        if h.n_kv_heads == 0 || !h.n_heads.is_multiple_of(h.n_kv_heads) {
            candle_core::bail!("causal attention: {h:?} is not a grouping of heads");
        }
        if qw != h.n_heads * h.head_size
            || (kb, kt, kw) != (b, t, h.n_kv_heads * h.head_size)
            || v.shape().dims() != k.shape().dims()
        {
            candle_core::bail!(
                "causal attention: shapes q {:?}, k {:?}, v {:?} do not fit {h:?}",
                q.shape(),
                k.shape(),
                v.shape()
            );
        }
        if t > self.rope.seq_len {
            candle_core::bail!(
                "causal attention: {t} positions, RoPE table has {}",
                self.rope.seq_len
            );
        }
        Ok(Dims { b, t, heads: h })
    }
}

/// `n` rounded up to whole vectors: rows of scores and transposed keys/values are padded to it
/// (with zero probabilities), so no inner loop has a scalar remainder.
fn padded(n: usize) -> usize {
    n.div_ceil(LANES) * LANES
}

/// One kv head of one sequence, rotated keys and values transposed: `kt[d·tp + j]`, zero
/// beyond `t`.
struct KvHead {
    kt: Vec<f32>,
    vt: Vec<f32>,
    tp: usize,
}

impl KvHead {
    fn new(dims: Dims) -> Self {
        let tp = padded(dims.t);
        let n = dims.heads.head_size * tp;
        KvHead {
            kt: vec![0f32; n],
            vt: vec![0f32; n],
            tp,
        }
    }

    /// Loads kv head `g` of sequence `bi`.
    #[inline(always)]
    fn load(&mut self, rope: &RopeTable, k: &[f32], v: &[f32], dims: Dims, bi: usize, g: usize) {
        let (t, hs, kw, tp) = (dims.t, dims.heads.head_size, dims.kv_width(), self.tp);
        let mut row = vec![0f32; hs];
        for j in 0..t {
            let at = (bi * t + j) * kw + g * hs;
            row.copy_from_slice(&k[at..at + hs]);
            rope.turn(&mut row, j, true);
            for d in 0..hs {
                self.kt[d * tp + j] = row[d];
                self.vt[d * tp + j] = v[at + d];
            }
        }
    }
}

/// Rotated, scaled queries of head `h` of sequence `bi`: `qh[i·hs + d]`.
#[inline(always)]
fn gather_q(rope: &RopeTable, q: &[f32], dims: Dims, bi: usize, h: usize, qh: &mut [f32]) {
    let (t, hs, qw, scale) = (dims.t, dims.heads.head_size, dims.q_width(), dims.scale());
    for i in 0..t {
        let at = (bi * t + i) * qw + h * hs;
        let row = &mut qh[i * hs..(i + 1) * hs];
        row.copy_from_slice(&q[at..at + hs]);
        rope.turn(row, i, true);
        row.iter_mut().for_each(|x| *x *= scale);
    }
}

/// Rows of head `h` of sequence `bi` of a `[b, t, n_heads·hs]` tensor, as they are: `xh[i·hs + d]`.
#[inline(always)]
fn gather_rows(x: &[f32], dims: Dims, bi: usize, h: usize, xh: &mut [f32]) {
    let (t, hs, qw) = (dims.t, dims.heads.head_size, dims.q_width());
    for (i, row) in xh.chunks_exact_mut(hs).take(t).enumerate() {
        row.copy_from_slice(&x[(bi * t + i) * qw + h * hs..][..hs]);
    }
}

/// Query rows scored together: each key and value loaded from memory then serves this many rows.
/// With head size 8 one row's passes over the keys are bound by loads and stores, not by
/// arithmetic. Rows after the last whole block go one at a time.
const BLOCK: usize = 4;

/// Scratch rows of one block, allocated once per call: scores (then probabilities) and, in the
/// backward, dP (then dS), `[BLOCK][tp]`; weighted sums `[BLOCK][hs]`.
struct Scratch {
    p: Vec<f32>,
    dp: Vec<f32>,
    sums: Vec<f32>,
}

impl Scratch {
    fn new(dims: Dims, tp: usize) -> Self {
        Scratch {
            p: vec![0f32; BLOCK * tp],
            dp: vec![0f32; BLOCK * tp],
            sums: vec![0f32; BLOCK * dims.heads.head_size],
        }
    }
}

/// One query head of one sequence against its kv head: the rotated, scaled queries `qh`, the
/// head's `[b, t, n_heads·hs]` columns starting at `first` with rows `stride` apart.
struct Head<'a> {
    kv: &'a KvHead,
    qh: &'a [f32],
    hs: usize,
    /// `1/√hs`, which scaled the queries (and so scales dq).
    scale: f32,
    first: usize,
    stride: usize,
}

impl<'a> Head<'a> {
    /// Query head `h` of sequence `bi`: its rotated queries `qh` against the loaded `kv` head.
    fn new(kv: &'a KvHead, qh: &'a [f32], dims: Dims, bi: usize, h: usize) -> Head<'a> {
        let (hs, qw) = (dims.heads.head_size, dims.q_width());
        Head {
            kv,
            qh,
            hs,
            scale: dims.scale(),
            first: bi * dims.t * qw + h * hs,
            stride: qw,
        }
    }

    /// Offset of row `i` of this head in a `[b, t, n_heads·hs]` tensor.
    fn at(&self, i: usize) -> usize {
        self.first + i * self.stride
    }

    /// Softmax numerators of query rows `i..i + R` into the rows of `p` (`tp` apart), over
    /// `np = padded(i + R)` positions: row `r` over keys `0..=i + r`, zero after. The shift is
    /// each row's maximum, or its log-sum-exp from `lse` (then the rows are the softmax).
    /// Returns (shift, `Σ p`) per row.
    #[inline(always)]
    fn probabilities<const R: usize>(
        &self,
        i: usize,
        np: usize,
        p: &mut [f32],
        lse: Option<&[f32]>,
    ) -> [(f32, f32); R] {
        let (hs, tp) = (self.hs, self.kv.tp);
        kernels::block_products::<R>(&self.qh[i * hs..], hs, &self.kv.kt, tp, np, p, tp);
        let mut shifts = [(0f32, 0f32); R];
        for (r, shift) in shifts.iter_mut().enumerate() {
            let row = &mut p[r * tp..][..np];
            *shift = exp_row(row, i + r + 1, lse.map(|l| l[i + r]));
        }
        shifts
    }
}

/// `e^(score − shift)` of one row of scores over keys `0..n`, zero from `n` to its end, with the
/// shift the row's maximum or the given log-sum-exp. Returns (the shift, `Σ`). Only the row's
/// own vectors (`padded(n)`) are exponentiated: those after it in the block are zeros.
#[inline(always)]
fn exp_row(p: &mut [f32], n: usize, lse: Option<f32>) -> (f32, f32) {
    let own = padded(n);
    p[n..own].fill(f32::NEG_INFINITY);
    let shift = lse.unwrap_or_else(|| kernels::max(&p[..own]));
    kernels::exp_shifted_sum(&mut p[..own], shift);
    p[n..].fill(0.0);
    (shift, kernels::sum(&p[..own]))
}

/// Output rows `i..i + R` of one head, and their log-sum-exps into `lse` (the head's `t`).
#[inline(always)]
fn forward_rows<const R: usize>(
    head: &Head,
    i: usize,
    s: &mut Scratch,
    out: &mut [f32],
    lse: &mut [f32],
) {
    let (hs, tp, np) = (head.hs, head.kv.tp, padded(i + R));
    let shifts = head.probabilities::<R>(i, np, &mut s.p, None);
    kernels::block_rows_dot::<R>(&s.p, tp, np, &head.kv.vt, tp, hs, &mut s.sums);
    for (r, (shift, sum)) in shifts.into_iter().enumerate() {
        lse[i + r] = shift + sum.ln();
        let inv = 1.0 / sum;
        let o = &mut out[head.at(i + r)..][..hs];
        for (o, &x) in o.iter_mut().zip(&s.sums[r * hs..][..hs]) {
            *o = x * inv;
        }
    }
}

#[inline(always)]
fn forward_kernel(
    rope: &RopeTable,
    dims: Dims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let (b, t, hs, nh) = (dims.b, dims.t, dims.heads.head_size, dims.heads.n_heads);
    let qw = dims.q_width();
    let mut out = vec![0f32; b * t * qw];
    let mut lse = vec![0f32; b * nh * t];
    let mut kv = KvHead::new(dims);
    let mut s = Scratch::new(dims, kv.tp);
    let mut qh = vec![0f32; t * hs];
    let whole = t - t % BLOCK;
    for bi in 0..b {
        for g in 0..dims.heads.n_kv_heads {
            kv.load(rope, k, v, dims, bi, g);
            for h in g * dims.group()..(g + 1) * dims.group() {
                gather_q(rope, q, dims, bi, h, &mut qh);
                let head = Head::new(&kv, &qh, dims, bi, h);
                let lse = &mut lse[(bi * nh + h) * t..][..t];
                for i in (0..whole).step_by(BLOCK) {
                    forward_rows::<BLOCK>(&head, i, &mut s, &mut out, lse);
                }
                for i in whole..t {
                    forward_rows::<1>(&head, i, &mut s, &mut out, lse);
                }
            }
        }
    }
    (out, lse)
}

/// The forward's tensors a backward pass reads.
struct Saved<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    out: &'a [f32],
    lse: &'a [f32],
}

/// Gradients of one kv head, transposed like its keys and values (`[hs][tp]`).
struct KvGrads {
    dkt: Vec<f32>,
    dvt: Vec<f32>,
}

/// dq rows `i..i + R` of one head (into `dq`) and their terms of dk, dv (into `grads`).
/// `doh` holds the head's `d_out` rows (`[t][hs]`), `out` and `lse` the forward's output and
/// this head's log-sum-exps.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_rows<const R: usize>(
    head: &Head,
    rope: &RopeTable,
    doh: &[f32],
    out: &[f32],
    lse: &[f32],
    i: usize,
    s: &mut Scratch,
    grads: &mut KvGrads,
    dq: &mut [f32],
) {
    let (hs, kv, np) = (head.hs, head.kv, padded(i + R));
    let tp = kv.tp;
    head.probabilities::<R>(i, np, &mut s.p, Some(lse));
    let do_rows = &doh[i * hs..(i + R) * hs];
    kernels::block_products::<R>(do_rows, hs, &kv.vt, tp, np, &mut s.dp, tp);
    for r in 0..R {
        // D_i = Σ_d dO·O = Σ_j P·dP: the softmax backward's row term.
        let d_i = kernels::dot(&do_rows[r * hs..][..hs], &out[head.at(i + r)..][..hs]);
        // dS = P ⊙ (dP − D_i), kept in dp (zero where P is).
        let (p, dp) = (&s.p[r * tp..][..np], &mut s.dp[r * tp..][..np]);
        for (ds, &pj) in dp.iter_mut().zip(p) {
            *ds = pj * (*ds - d_i);
        }
    }
    kernels::block_rows_dot::<R>(&s.dp, tp, np, &kv.kt, tp, hs, &mut s.sums);
    for r in 0..R {
        let row = &mut s.sums[r * hs..][..hs];
        row.iter_mut().for_each(|x| *x *= head.scale);
        rope.turn(row, i + r, false);
        dq[head.at(i + r)..][..hs].copy_from_slice(row);
    }
    let q_rows = &head.qh[i * hs..];
    kernels::block_outer_add::<R>(&mut grads.dkt, tp, q_rows, hs, &s.dp, tp, np);
    kernels::block_outer_add::<R>(&mut grads.dvt, tp, do_rows, hs, &s.p, tp, np);
}

/// Gradients of q, k, v given the forward's inputs, output, log-sum-exp and `d_out`.
#[inline(always)]
fn backward_kernel(
    rope: &RopeTable,
    dims: Dims,
    saved: &Saved,
    d_out: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (b, t, hs, nh) = (dims.b, dims.t, dims.heads.head_size, dims.heads.n_heads);
    let (qw, kw) = (dims.q_width(), dims.kv_width());
    let mut dq = vec![0f32; b * t * qw];
    let (mut dk, mut dv) = (vec![0f32; b * t * kw], vec![0f32; b * t * kw]);
    let mut kv = KvHead::new(dims);
    let tp = kv.tp;
    let mut grads = KvGrads {
        dkt: vec![0f32; hs * tp],
        dvt: vec![0f32; hs * tp],
    };
    let mut s = Scratch::new(dims, tp);
    let (mut qh, mut doh) = (vec![0f32; t * hs], vec![0f32; t * hs]);
    let mut row = vec![0f32; hs];
    let whole = t - t % BLOCK;
    for bi in 0..b {
        for g in 0..dims.heads.n_kv_heads {
            kv.load(rope, saved.k, saved.v, dims, bi, g);
            grads.dkt.fill(0.0);
            grads.dvt.fill(0.0);
            for h in g * dims.group()..(g + 1) * dims.group() {
                gather_q(rope, saved.q, dims, bi, h, &mut qh);
                gather_rows(d_out, dims, bi, h, &mut doh);
                let head = Head::new(&kv, &qh, dims, bi, h);
                let lse = &saved.lse[(bi * nh + h) * t..][..t];
                let (out, grads, dq) = (saved.out, &mut grads, &mut dq);
                for i in (0..whole).step_by(BLOCK) {
                    backward_rows::<BLOCK>(&head, rope, &doh, out, lse, i, &mut s, grads, dq);
                }
                for i in whole..t {
                    backward_rows::<1>(&head, rope, &doh, out, lse, i, &mut s, grads, dq);
                }
            }
            for j in 0..t {
                let at = (bi * t + j) * kw + g * hs;
                for d in 0..hs {
                    row[d] = grads.dkt[d * tp + j];
                    dv[at + d] = grads.dvt[d * tp + j];
                }
                rope.turn(&mut row, j, false);
                dk[at..at + hs].copy_from_slice(&row);
            }
        }
    }
    (dq, dk, dv)
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = self.dims(lq, lk, lv)?;
        let (q, k, v) = (
            contiguous(sq, lq, "q")?,
            contiguous(sk, lk, "k")?,
            contiguous(sv, lv, "v")?,
        );
        let rope = &*self.rope;
        let (out, lse) = dispatch!(forward_kernel(rope, dims, q, k, v));
        *self.log_sum_exp.lock().expect("attention state") = Some(lse);
        Ok((CpuStorage::F32(out), lq.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        d_out: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = self.dims(q.layout(), k.layout(), v.layout())?;
        let flat = |x: &Tensor| x.flatten_all()?.to_vec1::<f32>();
        let (qv, kv, vv, ov, dov) = (flat(q)?, flat(k)?, flat(v)?, flat(out)?, flat(d_out)?);
        let guard = self.log_sum_exp.lock().expect("attention state");
        let Some(lse) = guard.as_ref() else {
            candle_core::bail!("causal attention: backward before forward");
        };
        let rope = &*self.rope;
        let saved = Saved {
            q: &qv,
            k: &kv,
            v: &vv,
            out: &ov,
            lse,
        };
        let (dq, dk, dv) = dispatch!(backward_kernel(rope, dims, &saved, &dov));
        let device = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), device)?),
            Some(Tensor::from_vec(dk, k.shape(), device)?),
            Some(Tensor::from_vec(dv, v.shape(), device)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Rng;
    use candle_core::{Device, Var, D};

    fn random(shape: &[usize], rng: &mut Rng) -> Var {
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// RoPE as plain tensor ops on `[b, t, heads·hs]`: pairs rotated by narrow/cat.
    fn plain_rope(x: &Tensor, hs: usize, rope: &RopeTable) -> Result<Tensor> {
        let (b, t, w) = x.dims3()?;
        let heads = w / hs;
        let half = hs / 2;
        let x = x.reshape((b, t, heads, hs))?;
        let cos = Tensor::from_slice(&rope.cos[..t * half], (1, t, 1, half), &Device::Cpu)?;
        let sin = Tensor::from_slice(&rope.sin[..t * half], (1, t, 1, half), &Device::Cpu)?;
        let pairs = x.narrow(3, 0, 2 * half)?.reshape((b, t, heads, half, 2))?;
        let a = pairs.narrow(4, 0, 1)?.squeeze(4)?;
        let c = pairs.narrow(4, 1, 1)?.squeeze(4)?;
        let ra = (a.broadcast_mul(&cos)? - c.broadcast_mul(&sin)?)?;
        let rc = (c.broadcast_mul(&cos)? + a.broadcast_mul(&sin)?)?;
        let mut rotated = Tensor::stack(&[ra, rc], 4)?.reshape((b, t, heads, 2 * half))?;
        if hs % 2 == 1 {
            rotated = Tensor::cat(&[rotated, x.narrow(3, hs - 1, 1)?], 3)?;
        }
        rotated.reshape((b, t, w))
    }

    /// The attention the fused op replaces: scores, mask, softmax, weighted values.
    fn plain_attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        h: Heads,
        rope: &RopeTable,
    ) -> Result<Tensor> {
        let (b, t, _) = q.dims3()?;
        let hs = h.head_size;
        let split = |x: Tensor, n: usize| x.reshape((b, t, n, hs))?.transpose(1, 2)?.contiguous();
        let q = split(plain_rope(q, hs, rope)?, h.n_heads)?;
        let expand = |x: Tensor| -> Result<Tensor> {
            let r = h.n_heads / h.n_kv_heads;
            x.unsqueeze(2)?
                .expand((b, h.n_kv_heads, r, t, hs))?
                .reshape((b, h.n_heads, t, hs))
        };
        let k = expand(split(plain_rope(k, hs, rope)?, h.n_kv_heads)?)?;
        let v = expand(split(v.clone(), h.n_kv_heads)?)?;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu)?;
        let scores = (q.matmul(&k.t()?)? / (hs as f64).sqrt())?.broadcast_add(&mask)?;
        let att = candle_nn::ops::softmax(&scores, D::Minus1)?;
        att.matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, t, h.n_heads * hs))
    }

    fn close(a: &Tensor, b: &Tensor, what: &str) {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    /// Fused attention against the plain one on random inputs, forward and the gradients of
    /// a random weighting of its output.
    fn check_fused_equals_plain(b: usize, t: usize, nh: usize, nkv: usize, hs: usize) {
        let mut rng = Rng::new((b * 1000 + t * 10 + hs) as u64);
        let heads = Heads {
            n_heads: nh,
            n_kv_heads: nkv,
            head_size: hs,
        };
        let rope = Arc::new(RopeTable::new(hs, t + 3));
        let q = random(&[b, t, nh * hs], &mut rng);
        let k = random(&[b, t, nkv * hs], &mut rng);
        let v = random(&[b, t, nkv * hs], &mut rng);
        let w = Tensor::from_vec(
            (0..b * t * nh * hs)
                .map(|_| rng.normal() as f32)
                .collect::<Vec<_>>(),
            (b, t, nh * hs),
            &Device::Cpu,
        )
        .unwrap();
        let fused = causal_attention(&q, &k, &v, heads, &rope).unwrap();
        let plain = plain_attention(&q, &k, &v, heads, &rope).unwrap();
        close(&fused, &plain, "output");
        let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gp = (plain * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, var) in [("dq", &q), ("dk", &k), ("dv", &v)] {
            close(gf.get(var).unwrap(), gp.get(var).unwrap(), name);
        }
    }

    #[test]
    fn fused_equals_plain_forward_and_backward() {
        // (b, t, heads, kv heads, head size): GQA, odd head size, head size 1, more rows than
        // a vector, and t below the table's length.
        for (b, t, nh, nkv, hs) in [
            (2, 9, 4, 2, 4),
            (1, 13, 3, 3, 3),
            (2, 5, 2, 1, 1),
            (1, 21, 2, 2, 8),
        ] {
            check_fused_equals_plain(b, t, nh, nkv, hs);
        }
    }

    #[test]
    fn row_blocks_and_their_tail_equal_plain_attention() {
        // Every remainder of t by BLOCK (fewer rows than one block too), with blocks that
        // straddle a vector of positions; even and odd head sizes, from 4 to 32 (odd ones
        // leave a single row of keys after the pairs); GQA groups 1 and 2.
        assert_eq!(BLOCK, 4, "the shapes below assume blocks of 4 rows");
        for (t, hs) in [(3, 4), (7, 5), (10, 8), (17, 7), (30, 16), (19, 32)] {
            assert_ne!(t % BLOCK, 0);
            for (nh, nkv) in [(2, 2), (4, 2)] {
                check_fused_equals_plain(2, t, nh, nkv, hs);
            }
        }
    }

    /// Timing of one stories260k layer's attention, forward and backward, for profiling:
    /// `cargo test --release attention_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn attention_timing() {
        let (b, t) = (16, 512);
        let heads = Heads {
            n_heads: 8,
            n_kv_heads: 4,
            head_size: 8,
        };
        let mut rng = Rng::new(1);
        let rope = Arc::new(RopeTable::new(8, t));
        let q = random(&[b, t, 64], &mut rng);
        let k = random(&[b, t, 32], &mut rng);
        let v = random(&[b, t, 32], &mut rng);
        // This thread's CPU time, which a loaded machine inflates less than wall time.
        let cpu_ms = || {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes the timespec it is given.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 * 1e-6
        };
        for _ in 0..3 {
            let t0 = cpu_ms();
            let y = causal_attention(&q, &k, &v, heads, &rope).unwrap();
            let t1 = cpu_ms();
            let _ = y.sum_all().unwrap().backward().unwrap();
            eprintln!(
                "forward {:.1} ms, backward {:.1} ms (thread CPU time)",
                t1 - t0,
                cpu_ms() - t1
            );
        }
    }
}
