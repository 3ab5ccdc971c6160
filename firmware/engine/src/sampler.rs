//! Next-token sampling in integers: greedy, temperature, top-k, top-p, with a seeded xorshift
//! PRNG, so the host and the device draw the same tokens from the same logits.

#[cfg(target_arch = "arm")]
use crate::kernels::EXP2_Q30;
use crate::kernels::{argmax, div_rem_u32, exp_q16, mul_wide_u32};

/// Top-k and top-p look at no more than this many candidates (a fixed array on the stack).
pub const MAX_CANDIDATES: usize = 64;

/// Sampling settings. `temperature_q8 = 0` is greedy (argmax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplerConfig {
    /// Temperature × 256 (256 = 1.0, 0 = greedy).
    pub temperature_q8: u32,
    /// Keep the `top_k` most likely tokens (0 = no limit; at most [`MAX_CANDIDATES`]).
    pub top_k: u32,
    /// Nucleus: keep the most likely tokens until their mass reaches `top_p_q16 / 65536`
    /// (≥ 65536 = off). When on, candidates are limited to [`MAX_CANDIDATES`].
    pub top_p_q16: u32,
    /// PRNG seed (0 is replaced by a fixed non-zero constant).
    pub seed: u64,
}

impl SamplerConfig {
    /// Argmax, no randomness.
    pub const GREEDY: SamplerConfig = SamplerConfig {
        temperature_q8: 0,
        top_k: 0,
        top_p_q16: 1 << 16,
        seed: 0,
    };
}

/// A sampler: its settings, PRNG state, and what it derives from the settings once.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    rng: u64,
    /// 1/T in Q16 (when sampling with a temperature).
    inv_temperature_q16: u32,
    /// [`top_k_near`]'s window, when the temperature allows it.
    near: Option<Near>,
    /// Candidate buffers, reused by every draw (no per-token initialisation).
    scratch: Scratch,
}

/// The candidates of one draw and [`top_k_near`]'s sort keys.
#[derive(Debug, Clone)]
struct Scratch {
    ids: [u32; MAX_CANDIDATES],
    vals: [i32; MAX_CANDIDATES],
    weights: [u32; MAX_CANDIDATES],
    /// [`near_keys`]' buckets, then its sort keys.
    near: [u32; NEAR_WORDS],
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Sampler {
        let rng = if config.seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            config.seed
        };
        let inv_temperature_q16 = div_rem_u32(256u32 << 16, config.temperature_q8)
            .0
            .min(i32::MAX as u32);
        Sampler {
            config,
            rng,
            inv_temperature_q16,
            near: Near::for_temperature(inv_temperature_q16),
            scratch: Scratch {
                ids: [0; MAX_CANDIDATES],
                vals: [0; MAX_CANDIDATES],
                weights: [0; MAX_CANDIDATES],
                near: [0; NEAR_WORDS],
            },
        }
    }

    /// xorshift64* (as llama2.c's `random_u32`).
    pub fn next_u32(&mut self) -> u32 {
        next_u32(&mut self.rng)
    }

    /// Draws a token id from Q16.16 logits.
    #[cfg_attr(
        all(target_arch = "arm", feature = "rp2040"),
        link_section = ".data.ramfunc"
    )]
    pub fn sample(&mut self, logits: &[i32]) -> u32 {
        let c = self.config;
        if c.temperature_q8 == 0 || logits.len() <= 1 {
            return argmax(logits).0 as u32;
        }
        let limited = c.top_k > 0 || c.top_p_q16 < (1 << 16);
        if !limited {
            let (best, max) = argmax(logits);
            return self.sample_whole(logits, best, max);
        }
        // The k most likely tokens, sorted descending (ties: lower id first): all of them, or
        // (top_k_near) those of them whose weight is not 0, which draw the same token.
        let k = match c.top_k {
            0 => MAX_CANDIDATES,
            k => (k as usize).min(MAX_CANDIDATES),
        };
        let Sampler {
            rng,
            near,
            scratch,
            inv_temperature_q16,
            ..
        } = self;
        let Scratch {
            ids,
            vals,
            weights,
            near: near_buffer,
        } = scratch;
        if let Some(near) = *near {
            if logits.len() <= NEAR_VOCAB {
                // The keys (distance · 2⁸ + id) stand in for ids and values: the weights from
                // their distances, the draw over them, the drawn key's id.
                let (_, placed) = near_keys(logits, k, near, near_buffer);
                let (_, keys) = near_buffer.split_at(NEAR_BUCKETS);
                let n = k.min(placed).min(keys.len());
                let keys = &keys[..n];
                let weights = &mut weights[..n];
                let total = key_weights(keys, *inv_temperature_q16, weights);
                return draw_nucleus_from(rng, c.top_p_q16, keys, weights, total) & 0xFF;
            }
        }
        let (_, max) = argmax(logits);
        let n = top_k(logits, max, k, ids, vals);
        temperature_weights(&vals[..n], max, *inv_temperature_q16, &mut weights[..n]);
        draw_nucleus(rng, c.top_p_q16, &ids[..n], &weights[..n])
    }

    /// [`Sampler::sample`] the plain way: every candidate by [`top_k_reference`], their weights
    /// by [`temperature_weights_reference`], the sums in `u64` ([`draw_nucleus_reference`]).
    /// The same token and PRNG steps as `sample`.
    pub fn sample_reference(&mut self, logits: &[i32]) -> u32 {
        let c = self.config;
        let (best, max) = argmax(logits);
        if c.temperature_q8 == 0 || logits.len() <= 1 {
            return best as u32;
        }
        if c.top_k == 0 && c.top_p_q16 >= (1 << 16) {
            return self.sample_whole(logits, best, max);
        }
        let k = match c.top_k {
            0 => MAX_CANDIDATES,
            k => (k as usize).min(MAX_CANDIDATES),
        };
        let mut ids = [0u32; MAX_CANDIDATES];
        let mut vals = [i32::MIN; MAX_CANDIDATES];
        let n = top_k_reference(logits, k, &mut ids, &mut vals);
        let mut weights = [0u32; MAX_CANDIDATES];
        temperature_weights_reference(&vals[..n], max, self.inv_temperature_q16, &mut weights[..n]);
        draw_nucleus_reference(&mut self.rng, c.top_p_q16, &ids[..n], &weights[..n])
    }

    /// Temperature over the whole vocabulary: two passes, no buffer.
    fn sample_whole(&mut self, logits: &[i32], best: usize, max: i32) -> u32 {
        let inv_temperature_q16 = self.inv_temperature_q16;
        let weight = |l: i32| temperature_weight(max.wrapping_sub(l) as u32, inv_temperature_q16);
        let total: u64 = logits.iter().map(|&l| weight(l) as u64).sum();
        let mut r = draw(&mut self.rng, total);
        for (i, &l) in logits.iter().enumerate() {
            let w = weight(l) as u64;
            if r < w {
                return i as u32;
            }
            r -= w;
        }
        best as u32
    }

    /// Top-p over candidates sorted most likely first (`weights[i]` is `ids[i]`'s weight), then
    /// one draw among those kept (the streamed sampler ends here).
    fn draw_nucleus(&mut self, ids: &[u32], weights: &[u32]) -> u32 {
        draw_nucleus(&mut self.rng, self.config.top_p_q16, ids, weights)
    }

    /// A uniform draw in `0..total` (0 when total is 0).
    fn draw(&mut self, total: u64) -> u64 {
        draw(&mut self.rng, total)
    }
}

/// xorshift64* (as llama2.c's `random_u32`) of the state `rng` ([`next_u32_reference`] bit for
/// bit) in 32-bit halves: the M0+ has no 64-bit shift or multiply, and the library calls
/// (`__aeabi_llsl`, `__aeabi_llsr`, `__aeabi_lmul`, through long-branch thunks from SRAM) cost
/// ~320 cycles a step against ~50. The product's bits 32..63 are the high word of lo·c_lo plus
/// the low words of hi·c_lo and lo·c_hi.
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn next_u32(rng: &mut u64) -> u32 {
    const C_LO: u32 = 0x4F6C_DD1D;
    const C_HI: u32 = 0x2545_F491;
    let (mut hi, mut lo) = ((*rng >> 32) as u32, *rng as u32);
    // x ^= x >> 12
    lo ^= (lo >> 12) | (hi << 20);
    hi ^= hi >> 12;
    // x ^= x << 25
    hi ^= (hi << 25) | (lo >> 7);
    lo ^= lo << 25;
    // x ^= x >> 27
    lo ^= (lo >> 27) | (hi << 5);
    hi ^= hi >> 27;
    *rng = ((hi as u64) << 32) | lo as u64;
    ((mul_wide_u32(lo, C_LO) >> 32) as u32)
        .wrapping_add(hi.wrapping_mul(C_LO))
        .wrapping_add(lo.wrapping_mul(C_HI))
}

/// The plain form of [`next_u32`].
#[allow(dead_code)] // the host tests' oracle
fn next_u32_reference(rng: &mut u64) -> u32 {
    *rng ^= *rng >> 12;
    *rng ^= *rng << 25;
    *rng ^= *rng >> 27;
    (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
}

/// Top-p over at most [`MAX_CANDIDATES`] candidates sorted most likely first (`weights[i]`,
/// each ≤ 2¹⁶, is `ids[i]`'s weight), then one draw among those kept
/// ([`draw_nucleus_reference`] bit for bit: the sums stay below 64 · 2¹⁶ = 2²², so they run in
/// `u32`, and the mass the nucleus keeps is the running sum where it stops).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn draw_nucleus(rng: &mut u64, top_p_q16: u32, ids: &[u32], weights: &[u32]) -> u32 {
    let n = ids.len().min(weights.len());
    if n > MAX_CANDIDATES {
        return draw_nucleus_reference(rng, top_p_q16, ids, weights);
    }
    let (ids, weights) = (&ids[..n], &weights[..n]);
    let total: u64 = weights.iter().map(|&w| w as u64).sum();
    let Ok(total) = u32::try_from(total) else {
        // Not from temperature weights (each ≤ 2¹⁶).
        return draw_nucleus_reference(rng, top_p_q16, ids, weights);
    };
    draw_nucleus_from(rng, top_p_q16, ids, weights, total)
}

/// [`draw_nucleus`] given the weights' sum `total` (≤ 64 weights of ≤ 2¹⁶ each, as
/// [`key_weights`] returns it with them). Inlined into both callers.
#[inline(always)]
fn draw_nucleus_from(
    rng: &mut u64,
    top_p_q16: u32,
    ids: &[u32],
    weights: &[u32],
    total: u32,
) -> u32 {
    let n = ids.len().min(weights.len());
    let (ids, weights) = (&ids[..n], &weights[..n]);
    // Nucleus: the shortest prefix whose mass reaches top_p of the candidates' mass.
    let mut kept_total = total;
    let mut kept = n;
    if top_p_q16 < (1 << 16) {
        let target = (mul_wide_u32(total, top_p_q16) >> 16) as u32;
        let mut cumulative = 0u32;
        for (i, &w) in weights.iter().enumerate() {
            cumulative += w;
            if cumulative >= target {
                kept = i + 1;
                kept_total = cumulative;
                break;
            }
        }
    }
    let mut r = draw(rng, kept_total as u64) as u32;
    for (&id, &w) in ids[..kept].iter().zip(&weights[..kept]) {
        if r < w {
            return id;
        }
        r -= w;
    }
    ids.first().copied().unwrap_or(0)
}

/// The plain form of [`draw_nucleus`] (sums in `u64`).
fn draw_nucleus_reference(rng: &mut u64, top_p_q16: u32, ids: &[u32], weights: &[u32]) -> u32 {
    let total: u64 = weights.iter().map(|&w| w as u64).sum();
    let mut kept = weights.len();
    if top_p_q16 < (1 << 16) {
        let target = (total * top_p_q16 as u64) >> 16;
        let mut cumulative = 0u64;
        for (i, &w) in weights.iter().enumerate() {
            cumulative += w as u64;
            if cumulative >= target {
                kept = i + 1;
                break;
            }
        }
    }
    let kept_total: u64 = weights[..kept].iter().map(|&w| w as u64).sum();
    let mut r = draw(rng, kept_total);
    for (&id, &w) in ids[..kept].iter().zip(&weights[..kept]) {
        if r < w as u64 {
            return id;
        }
        r -= w as u64;
    }
    ids[0]
}

/// A uniform draw in `0..total` (0 when total is 0) from two PRNG steps of `rng`.
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn draw(rng: &mut u64, total: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    let (high, low) = (next_u32(rng), next_u32(rng));
    if let Ok(total) = u32::try_from(total) {
        if total < 1 << 23 {
            // (high·2³² + low) mod total by u32 steps, 8 bits at a time (each partial
            // remainder < 2²³, so remainder·2⁸ + byte fits u32): no u64 division.
            let mut rem = div_rem_u32(high, total).1;
            for byte_shift in [24, 16, 8, 0] {
                rem = div_rem_u32((rem << 8) | ((low >> byte_shift) & 0xFF), total).1;
            }
            return rem as u64;
        }
    }
    (((high as u64) << 32) | low as u64) % total
}

/// The weight of a logit `below_max` under the max: exp((l − max) / T) in Q16, with 1/T as a
/// Q16 factor. The exponent is floor((l − max)·(1/T) / 2¹⁶) from one exact u32×u32 product
/// (max − l < 2³², 1/T < 2³¹); beyond −16 the weight rounds to 0.
#[inline(always)]
pub fn temperature_weight(below_max: u32, inv_temperature_q16: u32) -> u32 {
    let product = mul_wide_u32(below_max, inv_temperature_q16);
    if product > 1 << 36 {
        return 0; // the exponent is below −2²⁰ = −16 in Q16: exp_q16 gives 0
    }
    // floor(−p / 2¹⁶) = −ceil(p / 2¹⁶), which fits i32 here.
    let magnitude = ((product + 0xFFFF) >> 16) as i32;
    exp_q16(-magnitude) as u32
}

/// `weights[i] = temperature_weight(max − vals[i], 1/T)` for every candidate
/// ([`temperature_weights_reference`] bit for bit; on thumbv6m through [`weights_thumb`]:
/// ~60 cycles a candidate against ~118 for the inlined Rust, which spills).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn temperature_weights(vals: &[i32], max: i32, inv_temperature_q16: u32, weights: &mut [u32]) {
    let n = vals.len().min(weights.len());
    #[cfg(target_arch = "arm")]
    if n > 0 && inv_temperature_q16 <= 1 << 24 {
        let params = [max as u32, inv_temperature_q16, EXP2_Q30.as_ptr() as u32];
        // SAFETY: vals and weights hold ≥ n ≥ 1 words; the routine reads vals[..n], the three
        // words of `params` and EXP2_Q30 at indices ≤ 256, and writes weights[..n].
        unsafe { weights_thumb(vals.as_ptr(), n, weights.as_mut_ptr(), params.as_ptr()) };
        return;
    }
    temperature_weights_reference(&vals[..n], max, inv_temperature_q16, &mut weights[..n]);
}

/// The plain form of [`temperature_weights`].
pub fn temperature_weights_reference(
    vals: &[i32],
    max: i32,
    inv_temperature_q16: u32,
    weights: &mut [u32],
) {
    for (w, &v) in weights.iter_mut().zip(vals) {
        *w = temperature_weight(max.wrapping_sub(v) as u32, inv_temperature_q16);
    }
}

/// `weights[i] = temperature_weight(keys[i] >> 8, 1/T)` for [`near_keys`]' keys (a key's high
/// 24 bits are its logit's distance below the max, so no `vals` and no max are needed), and
/// their sum ([`key_weights_reference`] bit for bit; on thumbv6m through [`key_weights_thumb`],
/// [`weights_thumb`]'s loop with the sum in a register).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn key_weights(keys: &[u32], inv_temperature_q16: u32, weights: &mut [u32]) -> u32 {
    let n = keys.len().min(weights.len());
    #[cfg(target_arch = "arm")]
    if n > 0 && inv_temperature_q16 <= 1 << 24 {
        let params = [0, inv_temperature_q16, EXP2_Q30.as_ptr() as u32];
        // SAFETY: keys and weights hold ≥ n ≥ 1 words; the routine reads keys[..n], the three
        // words of `params` and EXP2_Q30 at indices ≤ 256, and writes weights[..n].
        return unsafe {
            key_weights_thumb(keys.as_ptr(), n, weights.as_mut_ptr(), params.as_ptr())
        };
    }
    key_weights_reference(&keys[..n], inv_temperature_q16, &mut weights[..n])
}

/// The plain form of [`key_weights`] (the sum wraps: at most 256 weights of ≤ 2¹⁶ never do).
pub fn key_weights_reference(keys: &[u32], inv_temperature_q16: u32, weights: &mut [u32]) -> u32 {
    let mut total = 0u32;
    for (w, &key) in weights.iter_mut().zip(keys) {
        *w = temperature_weight(key >> 8, inv_temperature_q16);
        total = total.wrapping_add(*w);
    }
    total
}

#[cfg(target_arch = "arm")]
extern "C" {
    /// [`temperature_weights_reference`] of `n ≥ 1` values, `params = [max, 1/T (≤ 2²⁴: T ≥
    /// 1/256, as every Q8 temperature), EXP2_Q30]`.
    fn weights_thumb(vals: *const i32, n: usize, weights: *mut u32, params: *const u32);
    /// [`key_weights_reference`] of `n ≥ 1` keys, `params = [unused, 1/T (≤ 2²⁴), EXP2_Q30]`;
    /// returns the sum.
    fn key_weights_thumb(keys: *const u32, n: usize, weights: *mut u32, params: *const u32) -> u32;
}

/// Where [`weights_thumb`] lives: SRAM on the RP2040, flash elsewhere.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! WEIGHTS_SECTION {
    () => {
        ".section .data.ramfunc.weights_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! WEIGHTS_SECTION {
    () => {
        ".section .text.weights_thumb,\"ax\",%progbits"
    };
}

// Per value, as temperature_weight: d = max − v (u32); for d < 2²¹ (every weight that is not 0
// at T ≥ 0.5, and most at any T) a = ceil(p / 2¹⁶) of p = d · (1/T) straight from three MULS,
// d·th + dh·tl + ceil(dl·tl / 2¹⁶) (th, tl, dh, dl the halves; with 1/T ≤ 2²⁴ no term or sum
// wraps), ~10 cycles fewer; otherwise p as two words from four MULS (the middle sum's carry is
// 2⁴⁸); 0 when p > 2³⁶ (a > 2²⁰), else a ≤ 2²⁰ and
// exp_q16(−a) (exp_sum_thumb's steps: a = 0 → 2¹⁶; t = a·log₂e, 2^−frac(t) interpolated in the
// table, rounded and shifted by 14 + whole(t), ≥ 32 → 0). r0 vals, r1 weights (both advancing),
// r2–r7 scratch, r8 max, r9 / r10 the low / high half of 1/T, r11 the end of vals, r12 the
// table, lr 29012 (log₂e − 1 in Q16).
#[cfg(target_arch = "arm")]
macro_rules! weights_routine {
    ($name:literal, [$($setup:literal),*], [$($load:literal),*], [$($sum:literal),*], [$($result:literal),*]) => {
core::arch::global_asm!(
    WEIGHTS_SECTION!(),
    concat!(".global ", $name),
    concat!(".type ", $name, ",%function"),
    ".thumb_func",
    ".p2align 2",
    concat!($name, ":"),
    "push {{r4-r7, lr}}",
    "mov r4, r8",
    "mov r5, r9",
    "mov r6, r10",
    "mov r7, r11",
    "push {{r4-r7}}",
    "lsls r1, r1, #2",
    "adds r1, r0, r1",
    "mov r11, r1",
    "mov r1, r2",
    $($setup,)*
    "ldr r4, [r3, #4]",
    "uxth r5, r4",
    "mov r9, r5",
    "lsrs r4, r4, #16",
    "mov r10, r4",
    "ldr r4, [r3, #8]",
    "mov r12, r4",
    "ldr r4, =29012",
    "mov lr, r4",
    "1:",
    "ldm r0!, {{r4}}",
    $($load,)*
    "lsrs r5, r4, #21",
    "bne 20f", // d ≥ 2^21: the 64-bit product
    // d < 2^21 and 1/T ≤ 2^24: a = d·th + dh·tl + ceil(dl·tl / 2^16) in one word.
    "uxth r5, r4",      // dl
    "lsrs r6, r4, #16", // dh
    "mov r7, r9",
    "muls r5, r7, r5", // dl·tl < 2^32
    "muls r6, r7, r6", // dh·tl < 2^21
    "mov r7, r10",
    "muls r4, r7, r4", // d·th ≤ 2^29
    "adds r4, r4, r6",
    "lsrs r6, r5, #16",
    "adds r4, r4, r6", // floor(p / 2^16)
    "lsls r5, r5, #16",
    "beq 21f",
    "adds r4, #1", // a = ceil(p / 2^16)
    "21:",
    "cmp r4, #0",
    "beq 7f",
    "subs r5, r4, #1",
    "lsrs r5, r5, #20",
    "beq 5f", // a ≤ 2^20 (p ≤ 2^36)
    "b 8f",
    "20:",
    "uxth r5, r4",      // d lo
    "lsrs r4, r4, #16", // d hi
    "mov r6, r9",
    "mov r7, r10",
    "mov r2, r5",
    "muls r2, r6, r2", // lo·lo
    "muls r5, r7, r5", // d lo · t hi < 2^31
    "muls r6, r4, r6", // d hi · t lo < 2^32
    "muls r4, r7, r4", // hi·hi
    "adds r5, r5, r6", // mid; a carry is 2^48
    "bcc 2f",
    "movs r6, #1",
    "lsls r6, r6, #16",
    "adds r4, r4, r6",
    "2:",
    "lsls r6, r5, #16",
    "lsrs r5, r5, #16",
    "adds r2, r2, r6",
    "adcs r4, r5", // p = r4:r2
    "cmp r4, #16",
    "bhi 8f", // p ≥ 2^36 + 2^32
    "bne 3f",
    "cmp r2, #0",
    "bne 8f", // p > 2^36
    "3:",
    "lsls r4, r4, #16",
    "lsrs r5, r2, #16",
    "orrs r4, r5",
    "uxth r2, r2",
    "cmp r2, #0",
    "beq 4f",
    "adds r4, #1", // a = ceil(p / 2^16)
    "4:",
    "cmp r4, #0",
    "beq 7f",
    "5:",
    "mov r5, lr",
    "lsrs r6, r4, #16",
    "muls r6, r5, r6",
    "uxth r7, r4",
    "muls r7, r5, r7",
    "lsrs r7, r7, #16",
    "adds r4, r4, r6",
    "adds r4, r4, r7",  // t
    "lsrs r5, r4, #16", // whole
    "uxth r4, r4",      // frac
    "lsrs r6, r4, #8",
    "lsls r6, r6, #2",
    "mov r3, r12",
    "ldr r7, [r3, r6]", // lo
    "adds r6, #4",
    "ldr r6, [r3, r6]", // hi
    "subs r6, r7, r6",
    "uxtb r4, r4", // between
    "muls r6, r4, r6",
    "lsrs r6, r6, #8",
    "subs r7, r7, r6", // 2^-frac in Q30
    "adds r5, #13", // shift − 1
    "cmp r5, #31",
    "bhs 8f",
    "lsrs r7, r5", // ((p >> (shift−1)) + 1) >> 1 = (p + 2^(shift−1)) >> shift
    "adds r7, #1",
    "lsrs r7, r7, #1",
    "b 9f",
    "7:",
    "movs r7, #1",
    "lsls r7, r7, #16",
    "b 9f",
    "8:",
    "movs r7, #0",
    "9:",
    "stm r1!, {{r7}}",
    $($sum,)*
    "cmp r0, r11",
    "bne 1b",
    $($result,)*
    "pop {{r4-r7}}",
    "mov r8, r4",
    "mov r9, r5",
    "mov r10, r6",
    "mov r11, r7",
    "pop {{r4-r7, pc}}",
    ".ltorg",
    concat!(".size ", $name, ", . - ", $name),
);
    };
}

#[cfg(target_arch = "arm")]
weights_routine!(
    "weights_thumb",
    ["ldr r4, [r3]", "mov r8, r4"],
    ["mov r5, r8", "subs r4, r5, r4"], // d = max − v
    [],
    []
);

// weights_thumb over near_thumb's keys: d = key >> 8 (no max), r8 the running total (returned).
#[cfg(target_arch = "arm")]
weights_routine!(
    "key_weights_thumb",
    ["movs r4, #0", "mov r8, r4"],
    ["lsrs r4, r4, #8"], // d
    ["add r8, r7"],
    ["mov r0, r8"]
);

/// The longest vocabulary [`top_k_near`] takes (ids in the low 8 bits of its sort keys).
pub const NEAR_VOCAB: usize = 256;
/// [`top_k_near`]'s buckets of distance below the max.
pub const NEAR_BUCKETS: usize = 64;

/// The logits that can weigh anything under a temperature: a logit more than `below` under the
/// max gets weight 0 ([`temperature_weight`]: `(max − l) · (1/T) > 2³⁶`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Near {
    below: u32,
}

impl Near {
    /// The window of `1/T` (Q16): `below = floor(2³⁶ / (1/T))`, or `None` when that is 2²⁴ or
    /// more (T ≥ 16: the distance and an 8-bit id would not share a `u32` key).
    pub fn for_temperature(inv_temperature_q16: u32) -> Option<Near> {
        if inv_temperature_q16 == 0 {
            return None;
        }
        let below = (1u64 << 36) / inv_temperature_q16 as u64;
        if below >= 1 << 24 {
            return None;
        }
        Some(Near {
            below: below as u32,
        })
    }
}

/// Words of [`near_keys`]' buffer: the buckets' counts, then the keys.
pub const NEAR_WORDS: usize = NEAR_BUCKETS + NEAR_VOCAB;

/// The `k` (≤ [`MAX_CANDIDATES`]) largest of `logits` (1 to [`NEAR_VOCAB`] of them) **among
/// those within `near.below` of the max** into `ids`/`vals`, sorted by value descending, ties
/// lower id first; returns the max and how many (`min(k, that many)`). Every logit left out
/// weighs 0 at this temperature, so the candidates that weigh anything, in their order, are
/// [`top_k`]'s, and the draw over them is the same (zero weights add nothing to a sum and are
/// never drawn). `buffer` is scratch ([`near_keys`]).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn top_k_near(
    logits: &[i32],
    k: usize,
    near: Near,
    buffer: &mut [u32; NEAR_WORDS],
    ids: &mut [u32; MAX_CANDIDATES],
    vals: &mut [i32; MAX_CANDIDATES],
) -> (i32, usize) {
    let k = k.min(MAX_CANDIDATES);
    if k == 0 || logits.is_empty() || logits.len() > NEAR_VOCAB {
        let (_, max) = argmax(logits);
        return (max, top_k(logits, max, k, ids, vals));
    }
    let (max, placed) = near_keys(logits, k, near, buffer);
    let n = k.min(placed);
    let keys = &buffer[NEAR_BUCKETS..][..n];
    for ((id, v), &key) in ids.iter_mut().zip(vals.iter_mut()).zip(keys) {
        *id = key & 0xFF;
        *v = max.wrapping_sub((key >> 8) as i32);
    }
    (max, n)
}

/// The max of `logits` (1 to [`NEAR_VOCAB`] of them) and, sorted ascending in
/// `buffer[NEAR_BUCKETS..][..placed]`, the keys `(max − l) · 2⁸ + id` of at least the `k`
/// (≥ 1) largest logits within `near.below` of the max (all of them when fewer): returns
/// `(max, placed)` ([`near_keys_reference`] bit for bit; on thumbv6m one Thumb routine,
/// [`near_thumb`]).
///
/// A counting sort of the distances `max − l` into [`NEAR_BUCKETS`] buckets that span the
/// logits' own range (at most `near.below`: distances bunch up when the logits are narrow), in
/// id order within each bucket, only up to the bucket where the k-th lies; then an insertion
/// sort of those keys (each moves only within its bucket).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn near_keys(
    logits: &[i32],
    k: usize,
    near: Near,
    buffer: &mut [u32; NEAR_WORDS],
) -> (i32, usize) {
    #[cfg(target_arch = "arm")]
    if !logits.is_empty() && logits.len() <= NEAR_VOCAB && k > 0 {
        let mut params = [near.below, k.min(NEAR_VOCAB) as u32];
        // SAFETY: logits holds n ∈ 1..=256 words, buffer NEAR_BUCKETS + NEAR_VOCAB words,
        // params two; the routine reads logits[..n] and params, writes buffer (the counts and
        // at most n keys after them) and params.
        let placed = unsafe {
            near_thumb(
                logits.as_ptr(),
                logits.len(),
                buffer.as_mut_ptr(),
                params.as_mut_ptr(),
            )
        };
        return (params[0] as i32, placed);
    }
    near_keys_reference(logits, k, near, buffer)
}

/// The plain form of [`near_keys`].
pub fn near_keys_reference(
    logits: &[i32],
    k: usize,
    near: Near,
    buffer: &mut [u32; NEAR_WORDS],
) -> (i32, usize) {
    let (counts, keys) = buffer.split_at_mut(NEAR_BUCKETS);
    let max = logits.iter().copied().max().unwrap_or(0);
    let min = logits.iter().copied().min().unwrap_or(max);
    let below = near.below.min(max.wrapping_sub(min) as u32);
    let mut shift = 0;
    while below >> shift >= NEAR_BUCKETS as u32 {
        shift += 1;
    }
    let buckets = (below >> shift) as usize + 1;
    counts[..buckets].fill(0);
    for &l in logits {
        let d = max.wrapping_sub(l) as u32;
        if d <= below {
            counts[(d >> shift) as usize] += 1;
        }
    }
    // Counts into first slots, up to the bucket where the running count reaches k (the edge).
    let mut placed = 0;
    let mut past_edge = buckets;
    for (b, count) in counts[..buckets].iter_mut().enumerate() {
        let n = *count;
        *count = placed;
        placed += n;
        if placed as usize >= k {
            past_edge = b + 1;
            break;
        }
    }
    let limit = below.min(((past_edge as u32) << shift) - 1);
    for (i, &l) in logits.iter().take(NEAR_VOCAB).enumerate() {
        let d = max.wrapping_sub(l) as u32;
        if d <= limit {
            let b = (d >> shift) as usize;
            keys[counts[b] as usize] = (d << 8) | i as u32;
            counts[b] += 1;
        }
    }
    let placed = placed as usize;
    keys[..placed].sort_unstable();
    (max, placed)
}

#[cfg(target_arch = "arm")]
extern "C" {
    /// [`near_keys_reference`] of `n` ∈ 1..=256 logits into `buffer`, `params = [near.below,
    /// k (≥ 1)]`; returns `placed` and leaves the max in `params[0]`.
    fn near_thumb(logits: *const i32, n: usize, buffer: *mut u32, params: *mut u32) -> usize;
}

/// Where [`near_thumb`] lives: SRAM on the RP2040, flash elsewhere.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! NEAR_SECTION {
    () => {
        ".section .data.ramfunc.near_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! NEAR_SECTION {
    () => {
        ".section .text.near_thumb,\"ax\",%progbits"
    };
}

// Five passes, as near_keys_reference: (1) max and min; below = min(cap, max − min) and the
// shift that brings it under 64; (2) the used buckets zeroed, four words a store; (3) counts;
// (4) counts into slot pointers up to the edge bucket, limit = min(below, (edge + 1) << shift
// − 1); (5) each logit within the limit stored as its key through its bucket's pointer;
// (6) insertion sort of the keys. r8 logits, r9 their end, r10 buffer (counts, keys at +256
// bytes), r11 params; the passes' registers are named at each.
#[cfg(target_arch = "arm")]
core::arch::global_asm!(
    NEAR_SECTION!(),
    ".global near_thumb",
    ".type near_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "near_thumb:",
    "push {{r4-r7, lr}}",
    "mov r4, r8",
    "mov r5, r9",
    "mov r6, r10",
    "mov r7, r11",
    "push {{r4-r7}}",
    "lsls r1, r1, #2",
    "adds r1, r0, r1",
    "mov r8, r0",
    "mov r9, r1",
    "mov r10, r2",
    "mov r11, r3",
    // (1) r0 logits, r1 end, r2 max, r3 min.
    "ldr r2, [r0]",
    "mov r3, r2",
    "1:",
    "ldm r0!, {{r5}}",
    "cmp r5, r2",
    "ble 2f",
    "mov r2, r5",
    "2:",
    "cmp r5, r3",
    "bge 3f",
    "mov r3, r5",
    "3:",
    "cmp r0, r1",
    "bne 1b",
    // below (r3) = min(cap, max − min); params[0] = max.
    "subs r3, r2, r3",
    "mov r4, r11",
    "ldr r5, [r4]",
    "str r2, [r4]",
    "cmp r3, r5",
    "bls 4f",
    "mov r3, r5",
    "4:",
    // shift (r4): the least with below >> shift < 64 (by 4 while ≥ 1024, then by 1); r5 =
    // below >> shift.
    "movs r4, #0",
    "mov r5, r3",
    "5:",
    "lsrs r6, r5, #10",
    "beq 6f",
    "lsrs r5, r5, #4",
    "adds r4, #4",
    "b 5b",
    "6:",
    "cmp r5, #63",
    "bls 7f",
    "lsrs r5, r5, #1",
    "adds r4, #1",
    "b 6b",
    "7:",
    // (2) r12 = the end of the used counts ((below >> shift) + 1 of them); zeroed by four
    // (≤ 64 words).
    "adds r5, #1",
    "lsls r5, r5, #2",
    "mov r6, r10",
    "adds r5, r6, r5",
    "mov r12, r5",
    "movs r0, #0",
    "movs r1, #0",
    "movs r5, #0",
    "movs r7, #0",
    "8:",
    "stm r6!, {{r0, r1, r5, r7}}",
    "cmp r6, r12",
    "blo 8b",
    // (3) r0 logits, r5 counts, r6 d then its bucket's offset, r7 count.
    "mov r0, r8",
    "mov r5, r10",
    "9:",
    "ldm r0!, {{r6}}",
    "subs r6, r2, r6",
    "cmp r6, r3",
    "bhi 10f",
    "lsrs r6, r4",
    "lsls r6, r6, #2",
    "ldr r7, [r5, r6]",
    "adds r7, #1",
    "str r7, [r5, r6]",
    "10:",
    "cmp r0, r9",
    "bne 9b",
    // (4) r5 the bucket, r1 its first slot (keys at buffer + 256 bytes), r6 the running count,
    // r7 k.
    "mov r0, r11",
    "ldr r7, [r0, #4]",
    "movs r6, #0",
    "mov r1, r5",
    "adds r1, #255",
    "adds r1, #1",
    "11:",
    "ldr r0, [r5]",
    "str r1, [r5]",
    "adds r6, r6, r0",
    "lsls r0, r0, #2",
    "adds r1, r1, r0",
    "adds r5, #4",
    "cmp r6, r7",
    "bhs 12f",
    "cmp r5, r12",
    "blo 11b",
    "12:",
    // limit = min(below, ((edge + 1) << shift) − 1); params[1] = placed.
    "mov r0, r10",
    "subs r0, r5, r0",
    "lsrs r0, r0, #2",
    "lsls r0, r4",
    "subs r0, #1",
    "cmp r0, r3",
    "bhs 13f",
    "mov r3, r0",
    "13:",
    "mov r0, r11",
    "str r6, [r0, #4]",
    // (5) r0 logits, r1 id, r2 max, r3 shift, r4 counts, r5 d then the key, r6 the bucket's
    // offset, r7 its slot; r12 limit.
    "mov r12, r3",
    "mov r3, r4",
    "mov r4, r10",
    "mov r0, r8",
    "movs r1, #0",
    "14:",
    "ldm r0!, {{r5}}",
    "subs r5, r2, r5",
    "cmp r5, r12",
    "bhi 15f",
    "mov r6, r5",
    "lsrs r6, r3",
    "lsls r6, r6, #2",
    "ldr r7, [r4, r6]",
    "lsls r5, r5, #8",
    "orrs r5, r1",
    "stm r7!, {{r5}}",
    "str r7, [r4, r6]",
    "15:",
    "adds r1, #1",
    "cmp r0, r9",
    "bne 14b",
    // (6) r0 keys, r1 the next key's address, r2 their end, r3 the key, r4 the hole, r5 the
    // key before it.
    "mov r0, r4",
    "adds r0, #255",
    "adds r0, #1",
    "mov r6, r11",
    "ldr r2, [r6, #4]",
    "lsls r2, r2, #2",
    "adds r2, r0, r2",
    "adds r1, r0, #4",
    "b 20f",
    "16:",
    "ldm r1!, {{r3}}",
    "subs r4, r1, #4",
    "17:",
    "cmp r4, r0",
    "beq 19f",
    "subs r4, #4",
    "ldr r5, [r4]",
    "cmp r5, r3",
    "bls 18f",
    "str r5, [r4, #4]",
    "b 17b",
    "18:",
    "adds r4, #4",
    "19:",
    "str r3, [r4]",
    "20:",
    "cmp r1, r2",
    "blo 16b",
    "ldr r0, [r6, #4]",
    "pop {{r4-r7}}",
    "mov r8, r4",
    "mov r9, r5",
    "mov r10, r6",
    "mov r11, r7",
    "pop {{r4-r7, pc}}",
    ".size near_thumb, . - near_thumb",
);

/// Logit buckets of [`top_k`]'s histogram: `(max − l) >> BUCKET_SHIFT`, the last one open.
const BUCKETS: usize = 256;
/// 1/16 of a logit per bucket (Q16.16 logits): 255 buckets span 16 logits below the max.
const BUCKET_SHIFT: u32 = 12;

/// The `k` (≤ [`MAX_CANDIDATES`]) largest of `logits` into `ids`/`vals`, sorted by value
/// descending, ties lower id first; returns how many (`min(k, len)`). `max` is the largest logit.
///
/// Without sorting the vocabulary: a histogram of each logit's distance below the max finds the
/// bucket where the k-th largest lies; the logits above it (fewer than k) are placed bucket by
/// bucket (a counting sort on the histogram) and each bucket's few sorted by insertion, and the
/// k-th bucket's are inserted into the remaining slots in id order. The same result as
/// [`top_k_reference`] (one insertion pass over everything).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn top_k(
    logits: &[i32],
    max: i32,
    k: usize,
    ids: &mut [u32; MAX_CANDIDATES],
    vals: &mut [i32; MAX_CANDIDATES],
) -> usize {
    let k = k.min(MAX_CANDIDATES).min(logits.len());
    if k == 0 {
        return 0;
    }
    if logits.len() > u16::MAX as usize {
        // The histogram's u16 counts would saturate.
        return top_k_reference(logits, k, ids, vals);
    }
    let bucket = |l: i32| -> usize {
        let below = (max as i64 - l as i64) as u32 >> BUCKET_SHIFT;
        (below as usize).min(BUCKETS - 1)
    };
    let mut counts = [0u16; BUCKETS];
    for &l in logits {
        let b = bucket(l);
        counts[b] = counts[b].saturating_add(1);
    }
    // The first bucket whose running count reaches k; `above` logits lie in the buckets before.
    let (mut edge, mut above) = (0, 0usize);
    for (b, &count) in counts.iter().enumerate() {
        if above + count as usize >= k {
            edge = b;
            break;
        }
        above += count as usize;
    }
    // Logits above the edge bucket are strictly larger than any in it: they come first, bucket
    // by bucket (counting sort: each bucket's slots start where the buckets before it end, and
    // fill in id order), then the best k − above of the edge bucket.
    let mut start = 0u16;
    for count in counts[..edge].iter_mut() {
        let n = *count;
        *count = start; // from now on: the next free slot of this bucket
        start += n;
    }
    let mut n_edge = 0;
    let (head_ids, tail_ids) = ids.split_at_mut(above);
    let (head_vals, tail_vals) = vals.split_at_mut(above);
    let slots = k - above;
    for (i, &l) in logits.iter().enumerate() {
        let b = bucket(l);
        if b < edge {
            let slot = counts[b] as usize;
            if let (Some(id), Some(v)) = (head_ids.get_mut(slot), head_vals.get_mut(slot)) {
                *id = i as u32;
                *v = l;
            }
            counts[b] += 1;
        } else if b == edge && (n_edge < slots || l > tail_vals[slots - 1]) {
            insert(tail_ids, tail_vals, &mut n_edge, slots, i as u32, l);
        }
    }
    // Each bucket's run (ids ascending) sorted by value, descending; a stable insertion sort
    // keeps equal values in id order. Runs are short: a bucket is 1/16 of a logit wide.
    let mut run_start = 0;
    for &run_end in &counts[..edge] {
        let run_end = run_end as usize;
        for j in run_start + 1..run_end {
            let (id, l) = (head_ids[j], head_vals[j]);
            let mut at = j;
            while at > run_start && head_vals[at - 1] < l {
                head_vals[at] = head_vals[at - 1];
                head_ids[at] = head_ids[at - 1];
                at -= 1;
            }
            head_vals[at] = l;
            head_ids[at] = id;
        }
        run_start = run_end;
    }
    above + n_edge
}

/// Inserts `(id, l)` into the sorted `ids`/`vals` holding `n` of at most `cap`: after its equals
/// (ids arrive ascending), dropping the last when full.
#[inline]
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn insert(ids: &mut [u32], vals: &mut [i32], n: &mut usize, cap: usize, id: u32, l: i32) {
    if cap == 0 {
        return;
    }
    let mut j = if *n < cap { *n } else { cap - 1 };
    while j > 0 && vals[j - 1] < l {
        vals[j] = vals[j - 1];
        ids[j] = ids[j - 1];
        j -= 1;
    }
    vals[j] = l;
    ids[j] = id;
    *n = (*n + 1).min(cap);
}

/// The plain form of [`top_k`]: every logit through one sorted insertion.
pub fn top_k_reference(
    logits: &[i32],
    k: usize,
    ids: &mut [u32; MAX_CANDIDATES],
    vals: &mut [i32; MAX_CANDIDATES],
) -> usize {
    let k = k.min(MAX_CANDIDATES);
    let mut n = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if k == 0 || (n == k && l <= vals[k - 1]) {
            continue;
        }
        insert(ids, vals, &mut n, k, i as u32, l);
    }
    n
}

/// What a [`Stream`] keeps per pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamMode {
    /// Argmax: one pass.
    Greedy,
    /// Top-k / top-p over the `limit` most likely tokens: one pass.
    Candidates { limit: usize },
    /// Temperature over the whole vocabulary: the max, then the total weight, then the drawn
    /// token (three passes: the logits are never all in RAM).
    Whole,
}

/// One draw over logits that arrive in chunks, in id order ([`Sampler::stream`]): call
/// [`Stream::push`] for each chunk of a pass over the vocabulary, then [`Stream::end_pass`];
/// repeat the pass (the same logits again) while it returns `None`.
#[derive(Debug, Clone)]
pub struct Stream {
    mode: StreamMode,
    /// 1/T in Q16 (as `Sampler::sample`).
    inv_temperature_q16: u32,
    pass: u8,
    /// Logits pushed in this pass (the id of the next one).
    seen: usize,
    /// First maximum (id, value): pass 0.
    best: (u32, i32),
    /// Top candidates, sorted descending (ties: lower id first): pass 0, `Candidates`.
    candidates: usize,
    ids: [u32; MAX_CANDIDATES],
    vals: [i32; MAX_CANDIDATES],
    /// `Whole`: the total weight (pass 1), then what is left of the draw (pass 2).
    total: u64,
    remaining: u64,
    chosen: Option<u32>,
}

impl Sampler {
    /// A draw over logits that arrive in chunks ([`Stream`]): the token [`Sampler::sample`]
    /// would draw from the whole vector, with the same PRNG steps.
    pub fn stream(&self) -> Stream {
        let c = self.config;
        let mode = if c.temperature_q8 == 0 {
            StreamMode::Greedy
        } else if c.top_k > 0 || c.top_p_q16 < (1 << 16) {
            let limit = match c.top_k {
                0 => MAX_CANDIDATES,
                k => (k as usize).min(MAX_CANDIDATES),
            };
            StreamMode::Candidates { limit }
        } else {
            StreamMode::Whole
        };
        Stream {
            mode,
            inv_temperature_q16: ((256u32 << 16) / c.temperature_q8.max(1)).min(i32::MAX as u32),
            pass: 0,
            seen: 0,
            best: (0, i32::MIN),
            candidates: 0,
            ids: [0; MAX_CANDIDATES],
            vals: [i32::MIN; MAX_CANDIDATES],
            total: 0,
            remaining: 0,
            chosen: None,
        }
    }
}

impl Stream {
    /// The next chunk of logits (Q16.16), in id order.
    pub fn push(&mut self, logits: &[i32]) {
        let first = self.seen;
        self.seen += logits.len();
        match (self.mode, self.pass) {
            (StreamMode::Greedy, _) | (StreamMode::Whole, 0) => {
                for (i, &l) in logits.iter().enumerate() {
                    if l > self.best.1 {
                        self.best = ((first + i) as u32, l);
                    }
                }
            }
            (StreamMode::Candidates { limit }, _) => {
                for (i, &l) in logits.iter().enumerate() {
                    let id = (first + i) as u32;
                    if l > self.best.1 {
                        self.best = (id, l);
                    }
                    self.insert(limit, id, l);
                }
            }
            (StreamMode::Whole, 1) => {
                for &l in logits {
                    self.total += self.weight(l) as u64;
                }
            }
            (StreamMode::Whole, _) => {
                for (i, &l) in logits.iter().enumerate() {
                    if self.chosen.is_some() {
                        break;
                    }
                    let w = self.weight(l) as u64;
                    if self.remaining < w {
                        self.chosen = Some((first + i) as u32);
                    } else {
                        self.remaining -= w;
                    }
                }
            }
        }
    }

    /// Ends a pass over the vocabulary: the drawn token, or `None` when the logits are needed
    /// once more (push them again from the first id).
    pub fn end_pass(&mut self, sampler: &mut Sampler) -> Option<u32> {
        let vocab = self.seen;
        self.seen = 0;
        self.pass += 1;
        if vocab <= 1 {
            return Some(self.best.0);
        }
        match (self.mode, self.pass) {
            (StreamMode::Greedy, _) => Some(self.best.0),
            (StreamMode::Candidates { .. }, _) => Some(self.draw_candidate(sampler)),
            (StreamMode::Whole, 1) => None,
            (StreamMode::Whole, 2) => {
                self.remaining = sampler.draw(self.total);
                None
            }
            (StreamMode::Whole, _) => Some(self.chosen.unwrap_or(self.best.0)),
        }
    }

    /// exp((l − max) / T) in Q16, as `Sampler::sample` weighs a logit.
    fn weight(&self, l: i32) -> u32 {
        temperature_weight(self.best.1.wrapping_sub(l) as u32, self.inv_temperature_q16)
    }

    /// Keeps `(id, l)` when it is among the `limit` largest so far (insertion, as
    /// `Sampler::sample`).
    fn insert(&mut self, limit: usize, id: u32, l: i32) {
        let n = self.candidates;
        if n == limit && l <= self.vals[limit - 1] {
            return;
        }
        let mut j = if n < limit { n } else { limit - 1 };
        while j > 0 && self.vals[j - 1] < l {
            self.vals[j] = self.vals[j - 1];
            self.ids[j] = self.ids[j - 1];
            j -= 1;
        }
        self.vals[j] = l;
        self.ids[j] = id;
        self.candidates = (n + 1).min(limit);
    }

    /// Top-p over the candidates, then one draw among those kept (as `Sampler::sample`).
    fn draw_candidate(&self, sampler: &mut Sampler) -> u32 {
        let n = self.candidates;
        let mut weights = [0u32; MAX_CANDIDATES];
        for (w, &v) in weights.iter_mut().zip(&self.vals[..n]) {
            *w = self.weight(v);
        }
        sampler.draw_nucleus(&self.ids[..n], &weights[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_u32_is_xorshift64_star() {
        let (mut a, mut b) = (0x2545_F491_4F6C_DD1Du64, 0x2545_F491_4F6C_DD1Du64);
        for seed in [1u64, 42, 7, u64::MAX, 1 << 63, 0x8000_0001, 0xFFFF_FFFF] {
            let (mut x, mut y) = (seed, seed);
            for _ in 0..1000 {
                assert_eq!(next_u32(&mut x), next_u32_reference(&mut y));
                assert_eq!(x, y);
            }
        }
        for _ in 0..100_000 {
            assert_eq!(next_u32(&mut a), next_u32_reference(&mut b));
        }
        assert_eq!(a, b);
    }

    #[test]
    fn draw_matches_u64_remainder() {
        for total in [
            1u64,
            2,
            3,
            1000,
            65_536,
            4_194_303,
            (1 << 23) - 1,
            1 << 23,
            1 << 40,
        ] {
            let mut a = Sampler::new(SamplerConfig::GREEDY);
            let mut b = a.clone();
            for _ in 0..200 {
                let r = ((b.next_u32() as u64) << 32) | b.next_u32() as u64;
                assert_eq!(a.draw(total), r % total);
            }
        }
    }

    /// The stream over chunks of any size draws what `sample` draws from the whole vector, and
    /// leaves the PRNG in the same state.
    #[test]
    fn a_stream_of_chunks_draws_what_the_whole_vector_draws() {
        let mut rng = Sampler::new(SamplerConfig {
            seed: 42,
            ..SamplerConfig::GREEDY
        });
        let configs = [
            SamplerConfig::GREEDY,
            SamplerConfig {
                temperature_q8: 256,
                top_k: 0,
                top_p_q16: 1 << 16,
                seed: 9,
            },
            SamplerConfig {
                temperature_q8: 128,
                top_k: 5,
                top_p_q16: 1 << 16,
                seed: 8,
            },
            SamplerConfig {
                temperature_q8: 400,
                top_k: 0,
                top_p_q16: 50_000,
                seed: 7,
            },
            SamplerConfig {
                temperature_q8: 256,
                top_k: 200,
                top_p_q16: 60_000,
                seed: 6,
            },
        ];
        for config in configs {
            let (mut whole, mut streamed) = (Sampler::new(config), Sampler::new(config));
            let mut distinct = std::collections::BTreeSet::new();
            for round in 0..200 {
                let len = 1 + (rng.next_u32() % 700) as usize;
                // Ties on purpose: values from a small set, scaled to a few nats.
                let logits: std::vec::Vec<i32> = (0..len)
                    .map(|_| (rng.next_u32() % 64) as i32 * 6000 - 100_000)
                    .collect();
                let want = whole.sample(&logits);
                let chunk = [1, 7, 256, 1000][round % 4];
                let mut stream = streamed.stream();
                let got = loop {
                    logits.chunks(chunk).for_each(|c| stream.push(c));
                    if let Some(t) = stream.end_pass(&mut streamed) {
                        break t;
                    }
                };
                assert_eq!(got, want, "{config:?} round {round}");
                distinct.insert(want);
            }
            assert_eq!(whole.next_u32(), streamed.next_u32(), "{config:?}");
            assert!(
                config.temperature_q8 == 0 || distinct.len() > 20,
                "{config:?}"
            );
        }
    }

    #[test]
    fn top_k_equals_the_insertion_reference() {
        let mut r = 0x2545_F491_4F6C_DD1Du64;
        for case in 0..400 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            let n = [1, 3, 40, 64, 65, 128, 512, 1024][case % 8];
            // Wide, narrow and tied logits: spans beyond the 16-logit histogram, and many equals.
            let span = [1i64 << 12, 1 << 18, 40 << 16, 1 << 31][(case / 8) % 4];
            let logits: std::vec::Vec<i32> = (0..n)
                .map(|i| {
                    let v = (r.wrapping_mul(i as u64 + 1) >> 20) as i64 % span - span / 2;
                    let v = if case % 3 == 0 { v & !0xFFFF } else { v };
                    v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
                })
                .collect();
            let (_, max) = argmax(&logits);
            for k in [1, 2, 40, 64] {
                let (mut ids, mut vals) = ([0; MAX_CANDIDATES], [i32::MIN; MAX_CANDIDATES]);
                let (mut ref_ids, mut ref_vals) = ([0; MAX_CANDIDATES], [i32::MIN; MAX_CANDIDATES]);
                let got = top_k(&logits, max, k, &mut ids, &mut vals);
                let want = top_k_reference(&logits, k, &mut ref_ids, &mut ref_vals);
                assert_eq!(got, want, "case {case} k {k}");
                assert_eq!(ids[..got], ref_ids[..want], "case {case} k {k}");
                assert_eq!(vals[..got], ref_vals[..want], "case {case} k {k}");
            }
        }
    }

    /// The fast sampler draws what the plain one draws (the same PRNG steps), at vocabularies
    /// below and above NEAR_VOCAB, with ties, wide and narrow logits, at several temperatures.
    #[test]
    fn sample_equals_sample_reference() {
        let mut rng = Sampler::new(SamplerConfig {
            seed: 11,
            ..SamplerConfig::GREEDY
        });
        for (temperature_q8, top_k, top_p_q16) in [
            (205, 40, 58_982),
            (205, 40, 1 << 16),
            (256, 0, 50_000),
            (64, 64, 60_000),
            (1, 5, 30_000),
            (4000, 40, 58_982),
            (20_000, 40, 58_982),
            (205, 1, 0),
        ] {
            let config = SamplerConfig {
                temperature_q8,
                top_k,
                top_p_q16,
                seed: 5,
            };
            let (mut fast, mut plain) = (Sampler::new(config), Sampler::new(config));
            for round in 0..600 {
                let len = [2, 40, 64, 100, 128, 255, 256, 257, 512][round % 9];
                let span = [1i32 << 12, 1 << 18, 6 << 16, 20 << 16, i32::MAX][(round / 9) % 5];
                let logits: std::vec::Vec<i32> = (0..len)
                    .map(|i| {
                        let v = (rng.next_u32() % span as u32) as i32 - span / 2;
                        if (round + i) % 3 == 0 {
                            v & !0xFFFF // ties
                        } else {
                            v
                        }
                    })
                    .collect();
                let want = plain.sample_reference(&logits);
                assert_eq!(fast.sample(&logits), want, "{config:?} round {round}");
            }
            assert_eq!(fast.next_u32(), plain.next_u32(), "{config:?}");
        }
    }

    /// top_k_near's candidates are top_k_reference's, as far as they weigh anything.
    #[test]
    fn top_k_near_keeps_every_candidate_that_weighs() {
        let mut rng = Sampler::new(SamplerConfig {
            seed: 12,
            ..SamplerConfig::GREEDY
        });
        let mut buffer = [0; NEAR_WORDS];
        for round in 0..2000 {
            let len = 1 + (rng.next_u32() as usize % NEAR_VOCAB);
            let span = [1i32 << 12, 1 << 18, 6 << 16, 40 << 16][round % 4];
            let logits: std::vec::Vec<i32> = (0..len)
                .map(|_| {
                    ((rng.next_u32() % span as u32) as i32 - span / 2) & !(round as i32 % 2 * 0xFFF)
                })
                .collect();
            let (_, max) = argmax(&logits);
            let inv_t = [81_840u32, 1 << 16, 1 << 13, 1 << 20][round % 4 / 2 + round % 2 * 2];
            let near = Near::for_temperature(inv_t).unwrap();
            for k in [1, 7, 40, 64] {
                let (mut ids, mut vals) = ([0; MAX_CANDIDATES], [0; MAX_CANDIDATES]);
                let (mut ref_ids, mut ref_vals) = ([0; MAX_CANDIDATES], [0; MAX_CANDIDATES]);
                let (got_max, got) = top_k_near(&logits, k, near, &mut buffer, &mut ids, &mut vals);
                assert_eq!(got_max, max);
                let want = top_k_reference(&logits, k, &mut ref_ids, &mut ref_vals);
                let weighs = ref_vals[..want]
                    .iter()
                    .filter(|&&v| temperature_weight(max.wrapping_sub(v) as u32, inv_t) > 0)
                    .count();
                assert!(got >= weighs && got <= want, "round {round} k {k}");
                assert_eq!(ids[..got], ref_ids[..got], "round {round} k {k}");
                assert_eq!(vals[..got], ref_vals[..got], "round {round} k {k}");
            }
        }
    }

    /// The weights from near keys are those of the values the keys stand for, and their sum.
    #[test]
    fn key_weights_equal_the_weights_of_the_values() {
        let mut rng = Sampler::new(SamplerConfig {
            seed: 13,
            ..SamplerConfig::GREEDY
        });
        for round in 0..2000usize {
            let n = 1 + round % 64;
            let max = rng.next_u32() as i32;
            let below = [1u32 << 12, 1 << 18, 20 << 16, (1 << 24) - 1][round % 4];
            let keys: std::vec::Vec<u32> = (0..n)
                .map(|i| ((rng.next_u32() % below) << 8) | i as u32)
                .collect();
            let vals: std::vec::Vec<i32> = keys
                .iter()
                .map(|&k| max.wrapping_sub((k >> 8) as i32))
                .collect();
            let inv_t = [1, 1 << 16, 81_840, 1 << 24, i32::MAX as u32][round % 5] >> (round % 3);
            let (mut got, mut want) = (std::vec![0; n], std::vec![0; n]);
            let total = key_weights(&keys, inv_t, &mut got);
            temperature_weights_reference(&vals, max, inv_t, &mut want);
            assert_eq!(got, want, "round {round}");
            assert_eq!(total, want.iter().sum::<u32>(), "round {round}");
        }
    }

    #[test]
    fn temperature_weight_is_the_wide_formula() {
        let mut rng = Sampler::new(SamplerConfig {
            seed: 3,
            ..SamplerConfig::GREEDY
        });
        for i in 0..50_000u32 {
            let below = rng.next_u32() >> (i % 32);
            let inv_t = (rng.next_u32() >> 1 >> (i % 31)).max(1);
            let z = -(mul_wide_u32(below, inv_t) as i64) >> 16;
            let want = exp_q16(z.max(i32::MIN as i64) as i32) as u32;
            assert_eq!(temperature_weight(below, inv_t), want, "{below} {inv_t}");
        }
    }

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(SamplerConfig::GREEDY);
        assert_eq!(s.sample(&[1, 5, 3, 5]), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplerConfig {
            temperature_q8: 256,
            top_k: 1,
            top_p_q16: 1 << 16,
            seed: 7,
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&[0, 9 << 16, 3 << 16, -(2 << 16)]), 1);
        }
    }

    #[test]
    fn temperature_follows_the_distribution() {
        // logits ln(1), ln(3): expect ~25% / 75%.
        let logits = [0, (1.0986123f64 * 65536.0) as i32];
        let mut s = Sampler::new(SamplerConfig {
            temperature_q8: 256,
            top_k: 0,
            top_p_q16: 1 << 16,
            seed: 1,
        });
        let ones = (0..10_000).filter(|_| s.sample(&logits) == 1).count();
        assert!((7_200..7_800).contains(&ones), "{ones}");
        let mut p = Sampler::new(SamplerConfig {
            temperature_q8: 256,
            top_k: 0,
            top_p_q16: 40_000,
            seed: 1,
        });
        assert!((0..100).all(|_| p.sample(&logits) == 1));
    }
}
