//! The inner loops of the fused ops: plain f32 loops over fixed lanes of 8 that the compiler turns
//! into vector instructions, and a vectorizable `exp`.
//!
//! Every op runs its kernel through [`dispatch!`]: on x86-64 with AVX2 the same code compiled for
//! 256-bit registers, elsewhere for the baseline target. Neither path contracts `a·b + c` into a
//! fused multiply-add, so both give the same bits.

/// Lanes of one vector register (AVX2: 8 × f32).
pub const LANES: usize = 8;

/// Runs `$body` (an expression calling `#[inline(always)]` kernels) compiled for AVX2 when the
/// processor has it, else for the baseline target.
macro_rules! dispatch {
    ($body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the processor supports AVX2 (checked on the line above).
                // The closure must be inlined into `avx2` to be compiled for it: a large body
                // (the attention backward) was otherwise left a plain call, on SSE (measured).
                unsafe {
                    avx2(
                        #[inline(always)]
                        || $body,
                    )
                }
            } else {
                $body
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $body
        }
    }};
}
pub(crate) use dispatch;

/// `Σ a[i]·b[i]`, two vectors of partial sums (so that consecutive additions do not wait on
/// each other); lengths a multiple of [`LANES`] go without a scalar tail.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (mut acc0, mut acc1) = ([0f32; LANES], [0f32; LANES]);
    let mut i = 0;
    while i + 2 * LANES <= n {
        let (x0, y0) = (lanes(a, i), lanes(b, i));
        let (x1, y1) = (lanes(a, i + LANES), lanes(b, i + LANES));
        for l in 0..LANES {
            acc0[l] += x0[l] * y0[l];
            acc1[l] += x1[l] * y1[l];
        }
        i += 2 * LANES;
    }
    if i + LANES <= n {
        let (x0, y0) = (lanes(a, i), lanes(b, i));
        for l in 0..LANES {
            acc0[l] += x0[l] * y0[l];
        }
        i += LANES;
    }
    let mut tail = 0f32;
    for j in i..n {
        tail += a[j] * b[j];
    }
    for l in 0..LANES {
        acc0[l] += acc1[l];
    }
    horizontal_sum(acc0) + tail
}

/// The vector `x[i..i + LANES]`.
#[inline(always)]
fn lanes(x: &[f32], i: usize) -> &[f32; LANES] {
    x[i..i + LANES].try_into().expect("a whole vector")
}

/// `Σ x[i]`, one vector of partial sums.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    horizontal_sum(acc) + chunks.remainder().iter().sum::<f32>()
}

/// `s[r·stride + j] = Σ_d x[r·hs + d] · mt[d·tp + j]` for the `R` rows of `x` (`hs` each) and
/// `j < n` (a multiple of [`LANES`]). A vector of positions at a time, its `R` sums in
/// registers over all `d`: each load of `mt` serves `R` rows, and no partial sum goes through
/// memory. Per element the terms are added in order of `d`, as one row at a time would.
#[inline(always)]
pub fn block_products<const R: usize>(
    x: &[f32],
    hs: usize,
    mt: &[f32],
    tp: usize,
    n: usize,
    s: &mut [f32],
    stride: usize,
) {
    let x = &x[..R * hs];
    for c in (0..n).step_by(LANES) {
        // (`std::array::from_fn` here and below was not inlined: a call per vector, measured.)
        let m = lanes(mt, c);
        let mut acc = [[0f32; LANES]; R];
        for (r, a) in acc.iter_mut().enumerate() {
            let xr = x[r * hs];
            for l in 0..LANES {
                a[l] = xr * m[l];
            }
        }
        for d in 1..hs {
            let m = lanes(mt, d * tp + c);
            for (r, a) in acc.iter_mut().enumerate() {
                let xr = x[r * hs + d];
                for l in 0..LANES {
                    a[l] += xr * m[l];
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            s[r * stride + c..][..LANES].copy_from_slice(a);
        }
    }
}

/// `out[r·hs + d] = Σ_j p[r·stride + j] · mt[d·tp + j]` for `R` rows of `p`, every row `d <
/// hs` of `mt` and `j < n` (a multiple of [`LANES`]): row pairs of `mt` at a time (a single
/// last one for odd `hs`), so each load of `p` serves two rows of `mt` and each load of `mt`
/// serves `R` rows of `p`.
#[inline(always)]
pub fn block_rows_dot<const R: usize>(
    p: &[f32],
    stride: usize,
    n: usize,
    mt: &[f32],
    tp: usize,
    hs: usize,
    out: &mut [f32],
) {
    let mut d = 0;
    while d + 2 <= hs {
        dims_dot::<R, 2>(p, stride, n, mt, tp, d, hs, out);
        d += 2;
    }
    if d < hs {
        dims_dot::<R, 1>(p, stride, n, mt, tp, d, hs, out);
    }
}

/// [`block_rows_dot`] for rows `d0..d0 + D` of `mt`: one vector of partial sums per (row of
/// `p`, row of `mt`), `R·D` of them in registers, added vector after vector, then across
/// lanes. Each element's order is fixed: vectors in order of `j`, then [`horizontal_sum`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dims_dot<const R: usize, const D: usize>(
    p: &[f32],
    stride: usize,
    n: usize,
    mt: &[f32],
    tp: usize,
    d0: usize,
    hs: usize,
    out: &mut [f32],
) {
    let mut acc = [[[0f32; LANES]; D]; R];
    for c in (0..n).step_by(LANES) {
        let (mut pr, mut m) = ([[0f32; LANES]; R], [[0f32; LANES]; D]);
        for (r, pr) in pr.iter_mut().enumerate() {
            *pr = *lanes(p, r * stride + c);
        }
        for (e, m) in m.iter_mut().enumerate() {
            *m = *lanes(mt, (d0 + e) * tp + c);
        }
        for (a, pr) in acc.iter_mut().zip(&pr) {
            for (a, m) in a.iter_mut().zip(&m) {
                for l in 0..LANES {
                    a[l] += pr[l] * m[l];
                }
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        for (e, a) in a.iter().enumerate() {
            out[r * hs + d0 + e] = horizontal_sum(*a);
        }
    }
}

/// `yt[d·tp + j] += Σ_r x[r·hs + d] · w[r·stride + j]` for `d < hs` and `j < n` (a multiple
/// of [`LANES`]): every vector of `yt` is loaded and stored once for all `R` rows (with the
/// `R` factors of row `d` in registers). The rows are added in order `r = 0, 1, …`, so each
/// element gets the same sum as from `R` updates one row at a time.
#[inline(always)]
pub fn block_outer_add<const R: usize>(
    yt: &mut [f32],
    tp: usize,
    x: &[f32],
    hs: usize,
    w: &[f32],
    stride: usize,
    n: usize,
) {
    let x = &x[..R * hs];
    let mut w_rows = [&w[..0]; R];
    for (r, row) in w_rows.iter_mut().enumerate() {
        *row = &w[r * stride..][..n];
    }
    for d in 0..hs {
        let mut xd = [0f32; R];
        for (r, xd) in xd.iter_mut().enumerate() {
            *xd = x[r * hs + d];
        }
        for (c, y) in yt[d * tp..][..n].chunks_exact_mut(LANES).enumerate() {
            let y: &mut [f32; LANES] = y.try_into().expect("a whole vector");
            let mut v = *y;
            for (&xr, row) in xd.iter().zip(&w_rows) {
                let wr = lanes(row, c * LANES);
                for l in 0..LANES {
                    v[l] += xr * wr[l];
                }
            }
            *y = v;
        }
    }
}

/// The lanes of a vector added pairwise (a fixed order).
#[inline(always)]
fn horizontal_sum(acc: [f32; LANES]) -> f32 {
    let quad = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (quad[0] + quad[2]) + (quad[1] + quad[3])
}

/// `e^x` to about 2 ulp for x ≤ 88 (values below −87 give ≈ 1e-38 rather than smaller): the
/// exponent by rounding `x·log2 e`, a degree-6 polynomial for the rest. Plain arithmetic and bit
/// casts, so a loop of it vectorizes (the library `exp` is a call per element).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n·LN2_HI is exact for |n| < 2^10.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let rounded = x * LOG2_E + ROUND;
    let n = rounded - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // n as an integer is in the low mantissa bits of `rounded` (integer arithmetic, where a
    // float-to-int cast would check for saturation element by element).
    let n_int = rounded.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    p * scale
}

/// `x[i] = e^(x[i] − shift)`; returns `Σ x[i]` (after).
#[inline(always)]
pub fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for l in 0..LANES {
            chunk[l] = exp(chunk[l] - shift);
            acc[l] += chunk[l];
        }
    }
    let mut tail = 0f32;
    for v in chunks.into_remainder() {
        *v = exp(*v - shift);
        tail += *v;
    }
    horizontal_sum(acc) + tail
}

/// Largest element (−∞ for an empty slice).
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(chunk[l]);
        }
    }
    let m = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    acc.iter().fold(m, |a, &b| a.max(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_close_to_the_library_exp() {
        let mut worst = 0f32;
        for i in -86_990..88_000 {
            let x = i as f32 * 1e-3;
            let (a, b) = (exp(x), x.exp());
            worst = worst.max((a - b).abs() / b);
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert!(exp(-1e30) < 1e-37 && exp(-1e30) >= 0.0);
    }

    #[test]
    fn reductions_match_plain_loops() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dispatch!(dot(&a, &b)) - plain).abs() < 1e-5);
        assert_eq!(max(&a), a.iter().cloned().fold(f32::MIN, f32::max));
        let mut e = a.clone();
        let sum = exp_shifted_sum(&mut e, 0.5);
        let plain: f32 = a.iter().map(|x| (x - 0.5).exp()).sum();
        assert!((sum - plain).abs() < 1e-5 * plain);
    }
}
