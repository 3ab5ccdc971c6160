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
                unsafe { avx2(|| $body) }
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

/// `Σ a[i]·b[i]`, one vector of partial sums; lengths a multiple of [`LANES`] go without a
/// scalar tail.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let mut chunks_a = a.chunks_exact(LANES);
    let mut chunks_b = b.chunks_exact(LANES);
    for (x, y) in (&mut chunks_a).zip(&mut chunks_b) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in chunks_a.remainder().iter().zip(chunks_b.remainder()) {
        tail += x * y;
    }
    horizontal_sum(acc) + tail
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

/// `y[i] += c · x[i]`.
#[inline(always)]
pub fn axpy(y: &mut [f32], c: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += c * x;
    }
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
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) << 23) as u32);
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
