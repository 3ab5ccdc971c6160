//! Small integer kernels: fixed-point multipliers, matrix-vector products, exp, sqrt, sigmoid.
//!
//! Number formats (names carry them): `_q16` is a signed value × 2¹⁶ in an `i32` (Q16.16), `_q30`
//! is × 2³⁰. All arithmetic here is total: it saturates or clamps rather than overflowing, so a
//! corrupt-but-well-formed model file yields garbage tokens, never a panic.
//!
//! The Cortex-M0+ has a 32×32→32 multiply and nothing wider; an `i64` multiply is a ~20-cycle
//! library call, so the hot loops (the dot products) stay in `i32` and the wide multiplies happen
//! once per output row.

/// One in Q16.16.
pub const ONE_Q16: i32 = 1 << 16;

/// `a · b` exactly, from four 16×16→32 `MULS` (~15 cycles on the M0+, against ~40 for the
/// `__aeabi_lmul` call a `u64` multiply compiles to).
#[inline]
pub fn mul_wide_u32(a: u32, b: u32) -> u64 {
    let (a_lo, a_hi) = (a & 0xFFFF, a >> 16);
    let (b_lo, b_hi) = (b & 0xFFFF, b >> 16);
    let lo = a_lo * b_lo;
    let (mid, mid_carry) = (a_hi * b_lo).overflowing_add(a_lo * b_hi);
    let (low_word, low_carry) = lo.overflowing_add(mid << 16);
    let high_word = (a_hi * b_hi)
        .wrapping_add(mid >> 16)
        .wrapping_add((mid_carry as u32) << 16)
        .wrapping_add(low_carry as u32);
    ((high_word as u64) << 32) | low_word as u64
}

/// `a · b` exactly for a signed `a` (|a·b| < 2⁶³), through [`mul_wide_u32`].
#[inline]
pub fn mul_wide_i32_u32(a: i32, b: u32) -> i64 {
    let magnitude = mul_wide_u32(a.unsigned_abs(), b) as i64;
    if a < 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// `a · b` exactly for two signed values, through [`mul_wide_u32`].
#[inline]
pub fn mul_wide_i32(a: i32, b: i32) -> i64 {
    let magnitude = mul_wide_u32(a.unsigned_abs(), b.unsigned_abs()) as i64;
    if (a < 0) != (b < 0) {
        -magnitude
    } else {
        magnitude
    }
}

/// `v.leading_zeros()`. The M0+ has no CLZ: on thumbv6m a five-step binary search inline
/// (~15 cycles), not a call of compiler-builtins' `__clzsi2` (~40 with the long-branch thunk
/// from SRAM code to flash).
#[inline(always)]
pub fn leading_zeros(v: u32) -> u32 {
    #[cfg(target_arch = "arm")]
    return leading_zeros_search(v);
    #[cfg(not(target_arch = "arm"))]
    v.leading_zeros()
}

/// The binary search of [`leading_zeros`]. On thumbv6m in inline assembly: each step tests
/// the top bits with a flag-setting shift (the compiled form compares with constants it keeps
/// on the stack).
#[inline(always)]
pub fn leading_zeros_search(v: u32) -> u32 {
    if v == 0 {
        return 32;
    }
    #[cfg(target_arch = "arm")]
    {
        let n: u32;
        // SAFETY: register arithmetic only.
        unsafe {
            core::arch::asm!(
                "movs {n}, #0",
                "lsrs {t}, {x}, #16",
                "bne 1f",
                "adds {n}, #16",
                "lsls {x}, {x}, #16",
                "1:",
                "lsrs {t}, {x}, #24",
                "bne 1f",
                "adds {n}, #8",
                "lsls {x}, {x}, #8",
                "1:",
                "lsrs {t}, {x}, #28",
                "bne 1f",
                "adds {n}, #4",
                "lsls {x}, {x}, #4",
                "1:",
                "lsrs {t}, {x}, #30",
                "bne 1f",
                "adds {n}, #2",
                "lsls {x}, {x}, #2",
                "1:",
                "lsrs {t}, {x}, #31",
                "bne 1f",
                "adds {n}, #1",
                "1:",
                x = inout(reg) v => _,
                t = out(reg) _,
                n = out(reg) n,
                options(pure, nomem, nostack),
            );
        }
        return n;
    }
    #[cfg(not(target_arch = "arm"))]
    leading_zeros_steps(v)
}

/// The steps of [`leading_zeros_search`] in Rust (`v ≠ 0`).
#[cfg_attr(target_arch = "arm", allow(dead_code))]
#[inline(always)]
fn leading_zeros_steps(v: u32) -> u32 {
    let (mut n, mut x) = (0, v);
    if x >> 16 == 0 {
        n += 16;
        x <<= 16;
    }
    if x >> 24 == 0 {
        n += 8;
        x <<= 8;
    }
    if x >> 28 == 0 {
        n += 4;
        x <<= 4;
    }
    if x >> 30 == 0 {
        n += 2;
        x <<= 2;
    }
    n + (x >> 31 == 0) as u32
}

/// A positive real number `mant · 2^-shift`, `mant < 2³¹` (usually normalised to `[2³⁰, 2³¹)`).
///
/// Weight row scales are stored in the file in this form, so the device never converts floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Multiplier {
    pub mant: u32,
    pub shift: i32,
}

/// The bits of a file multiplier's mantissa the engine keeps ([`Multiplier::from_le_bytes`]).
pub const FILE_MANTISSA_MASK: u32 = 0x7FFF_0000;

impl Multiplier {
    /// Zero (a zero row, or an all-zero activation vector).
    pub const ZERO: Multiplier = Multiplier { mant: 0, shift: 0 };

    /// Reads the 8-byte little-endian form (`mant u32`, `shift i32`) used by the file, keeping
    /// the mantissa's top 15 of its 31 bits (`mant & 0x7FFF_0000`: a relative error below 2⁻¹⁴
    /// for the exporter's mantissas in [2³⁰, 2³¹), far under an int8 weight's; a row rescale
    /// then takes two 16×16 products instead of four, [`rescale_rows_pow2_thumb`]), so that
    /// later products cannot overflow either. Until issue #11 all 31 bits were kept.
    pub fn from_le_bytes(bytes: &[u8]) -> Multiplier {
        let word = |i: usize| -> u32 {
            match bytes.get(i..i + 4) {
                Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                None => 0,
            }
        };
        Multiplier {
            mant: word(0) & FILE_MANTISSA_MASK,
            shift: word(4) as i32,
        }
    }

    /// The file's 8-byte form, as [`Multiplier::from_le_bytes`] reads it (the exporter's encoder).
    pub fn to_le_bytes(self) -> [u8; 8] {
        let mut out = [0; 8];
        out[..4].copy_from_slice(&self.mant.to_le_bytes());
        out[4..].copy_from_slice(&self.shift.to_le_bytes());
        out
    }

    /// `v / 2^frac_bits` as a multiplier normalised to `mant ∈ [2³⁰, 2³¹)`.
    #[cfg_attr(
        all(target_arch = "arm", feature = "rp2040"),
        link_section = ".data.ramfunc"
    )]
    pub fn from_fixed(v: u64, frac_bits: i32) -> Multiplier {
        if v == 0 {
            return Multiplier::ZERO;
        }
        let mant;
        let down;
        if let Ok(v) = u32::try_from(v) {
            // 32-bit shifts: a u64 shift by a variable amount is a library call on the M0+.
            let top = 31 - leading_zeros(v) as i32; // index of the top set bit
            down = top - 30; // move it to bit 30
            mant = if down >= 0 { v >> down } else { v << -down };
        } else {
            let top = 63 - leading_zeros((v >> 32) as u32) as i32; // v ≥ 2³²
            down = top - 30;
            mant = (v >> down) as u32; // top ≥ 32, so down > 0
        }
        Multiplier {
            mant,
            shift: frac_bits.saturating_sub(down),
        }
    }

    /// `from_fixed((1 << 62) / d, frac_bits)` (`d ≥ 1`) without the 64-bit division: the mantissa
    /// keeps only the quotient's top 31 bits, which 31 steps of shift-and-subtract in `u32` give
    /// exactly (~250 cycles on the M0+, against ~1,500 for `__aeabi_uldivmod`).
    #[cfg_attr(
        all(target_arch = "arm", feature = "rp2040"),
        link_section = ".data.ramfunc"
    )]
    pub fn reciprocal(d: u32, frac_bits: i32) -> Multiplier {
        if d == 0 {
            return Multiplier::ZERO;
        }
        let top = 31 - leading_zeros(d) as i32; // d ∈ [2^top, 2^(top+1))
        if d.is_power_of_two() {
            // 2⁶²/d = 2^(62-top) exactly.
            return Multiplier {
                mant: 1 << 30,
                shift: frac_bits.saturating_sub(32 - top),
            };
        }
        // floor(2^(31+top) / d) ∈ (2³⁰, 2³¹): the remainder starts at 2^top < d.
        let mut rem = 1u32 << top;
        let mut quotient = 0u32;
        for _ in 0..31 {
            let carry = rem >> 31;
            rem <<= 1;
            quotient <<= 1;
            if carry != 0 || rem >= d {
                rem = rem.wrapping_sub(d);
                quotient |= 1;
            }
        }
        Multiplier {
            mant: quotient,
            shift: frac_bits.saturating_sub(31 - top),
        }
    }

    /// `self · 2^-bits`.
    pub fn shifted(self, bits: i32) -> Multiplier {
        Multiplier {
            mant: self.mant,
            shift: self.shift.saturating_add(bits),
        }
    }

    /// The product of two multipliers (one 32×32→64 multiply).
    #[cfg_attr(
        all(target_arch = "arm", feature = "rp2040"),
        link_section = ".data.ramfunc"
    )]
    pub fn times(self, other: Multiplier) -> Multiplier {
        let product = mul_wide_u32(self.mant, other.mant) >> 31; // < 2³¹
        Multiplier {
            mant: product as u32,
            shift: self.shift.saturating_add(other.shift).saturating_sub(31),
        }
    }

    /// [`Multiplier::apply`] of an `i32` (every caller but the int4 row sums): the same result.
    /// Inlined: it runs once per matrix row and per (head, position).
    #[inline(always)]
    pub fn apply_i32(self, v: i32) -> i32 {
        let magnitude = mul_wide_u32(v.unsigned_abs(), self.mant) as i64;
        self.round_shift(if v < 0 { -magnitude } else { magnitude })
    }

    /// `round(v · self)`, saturated to `i32`.
    #[cfg_attr(
        all(target_arch = "arm", feature = "rp2040"),
        link_section = ".data.ramfunc"
    )]
    pub fn apply(self, v: i64) -> i32 {
        let v = v.clamp(-(1 << 31), 1 << 31); // |v·mant| < 2⁶² below
        let magnitude = mul_wide_u32(v.unsigned_abs() as u32, self.mant) as i64;
        self.round_shift(if v < 0 { -magnitude } else { magnitude })
    }

    /// `(product + 2^(shift-1)) >> shift` saturated to `i32`, for |product| < 2⁶². The usual
    /// shifts (1..=62) work on the two 32-bit halves: a 64-bit shift by a variable amount is a
    /// library call on the M0+.
    #[inline]
    fn round_shift(self, product: i64) -> i32 {
        let s = self.shift;
        if (33..=62).contains(&s) {
            // Rounding only touches the high word (|high| < 2³⁰, so the sum stays in range).
            let high = (product >> 32) as i32;
            (high + (1 << (s - 33))) >> (s - 32)
        } else if s == 32 {
            ((product + (1i64 << 31)) >> 32) as i32
        } else if (1..=31).contains(&s) {
            let rounded = product + (1i32 << (s - 1)) as i64; // a 32-bit shift: s - 1 ≤ 30
            let (high, low) = ((rounded >> 32) as i32, rounded as u32);
            let top = high >> (s - 1); // 0 or -1 exactly when the result fits i32
            if top == 0 || top == -1 {
                (((high as u32) << (32 - s)) | (low >> s)) as i32
            } else if high < 0 {
                i32::MIN
            } else {
                i32::MAX
            }
        } else if s <= 0 {
            let left = (-(s as i64)).min(62) as u32;
            product
                .checked_shl(left)
                .filter(|p| p >> left == product)
                .unwrap_or(if product < 0 { i64::MIN } else { i64::MAX })
                .clamp(i32::MIN as i64, i32::MAX as i64) as i32
        } else {
            0 // s ≥ 63
        }
    }
}

/// Largest magnitude of a quantised activation (12-bit range): matrix inputs are quantised to
/// `±ACT_LEVELS`, 16× finer than int8 at the same cost on the M0+ (the dot product reads `i32`
/// words either way), while `4096 · 128 · 2047 < 2³¹` keeps the int8-weight sums exact.
pub const ACT_LEVELS: i32 = 2047;
/// Largest magnitude of a KV-cache entry (12 bits kept in `i16`).
pub const KV_LEVELS: i32 = 2047;
/// Largest magnitude of an int8 quantised value.
pub const I8_LEVELS: i32 = 127;

/// The step (Q16.16 per unit) of a vector with max-abs `max_abs_q16` mapped to `±levels`:
/// `max_abs / levels`. `levels` is 2047 ([`ACT_LEVELS`], [`KV_LEVELS`]) or 127 ([`I8_LEVELS`]).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn step_q16(max_abs_q16: i32, levels: i32) -> Multiplier {
    // 1/levels as a multiplier (one multiply instead of a divide).
    const ONE_OVER_127: Multiplier = Multiplier {
        mant: 1_082_196_484,
        shift: 37,
    };
    const ONE_OVER_2047: Multiplier = Multiplier {
        mant: 1_074_266_368,
        shift: 41,
    };
    let reciprocal = if levels == ACT_LEVELS {
        ONE_OVER_2047
    } else {
        ONE_OVER_127
    };
    Multiplier::from_fixed(max_abs_q16.unsigned_abs() as u64, 0).times(reciprocal)
}

/// The power of two `k` of a matrix input's step (Q16.16 per unit, `2^k`): the smallest `k`
/// with `max_abs ≤ ACT_LEVELS · 2^k`, so the quantised values fill ±1024..=±2047 (11 to 12
/// bits). `max_abs` is in 1..=`i32::MAX`; `k` is in −10..=21.
#[inline(always)]
pub fn act_shift(max_abs: u32) -> i32 {
    // 2047 · 2^k has the bit length of max_abs at k = 21 − lz, or one more at k + 1.
    let k = 21 - leading_zeros(max_abs.max(1)) as i32;
    let (top, v) = if k >= 0 {
        ((ACT_LEVELS as u32) << k, max_abs)
    } else {
        (ACT_LEVELS as u32, max_abs << -k)
    };
    k + (top < v) as i32
}

/// The step of a matrix input quantised by [`quantize_act`], from its `max|x|`: `2^k`
/// ([`act_shift`]) as a multiplier (mantissa 2³⁰, so that a product with it is a shift of the
/// other mantissa: [`Multiplier::times`] gives `mant >> 1` exactly). An all-zero vector gets
/// 1.0 (its values are all 0 whatever the step).
#[inline(always)]
pub fn act_step(max_abs: i32) -> Multiplier {
    let k = if max_abs == 0 {
        0
    } else {
        act_shift(max_abs.unsigned_abs())
    };
    Multiplier {
        mant: 1 << 30,
        shift: 30 - k,
    }
}

/// Quantises a matrix input to `±ACT_LEVELS` (kept in `i32`) with a power-of-two step
/// ([`act_step`]: `x / 2^k` rounded half up), returning `max|x|`: [`quantize_act_reference`]
/// bit for bit, by shifts (`((x >> (k−1)) + 1) >> 1`, or `x << −k` for a small vector) instead
/// of a reciprocal and a 32×32→64 multiply per element (~31 cycles an element and ~250 a call
/// before; the quantised values keep 11 to 12 bits instead of exactly 12: docs/quantization.md).
/// Out of line: inlined into its dozen callers it took 2 KiB more of SRAM.
#[inline(never)]
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn quantize_act(x_q16: &[i32], out: &mut [i32]) -> i32 {
    quantize_pow2(x_q16, out, |q| q)
}

/// [`quantize_act`] of four values (a query head of 4) inline: the max of the four magnitudes
/// and the four shifts in registers, without [`quantize_act`]'s call, its length checks and its
/// call of `max_abs_thumb` (together ~250 cycles for four values on the M0+). Bit for bit
/// [`quantize_act_reference`].
#[inline(always)]
pub fn quantize_act4(x: &[i32; 4], out: &mut [i32; 4]) -> i32 {
    let max_abs = x
        .iter()
        .fold(0u32, |m, v| m.max(v.unsigned_abs()))
        .min(i32::MAX as u32);
    shift_by_max(x, out, max_abs, |q| q)
}

/// [`quantize_act`]'s and [`quantize_kv`]'s shifts, each value stored through `narrow` (within
/// ±2047, so `i16` holds it).
#[inline(always)]
fn quantize_pow2<T>(x_q16: &[i32], out: &mut [T], narrow: impl Fn(i32) -> T) -> i32 {
    let n = x_q16.len().min(out.len());
    let (x, out) = (&x_q16[..n], &mut out[..n]);
    shift_by_max(x, out, max_abs_of(x), narrow)
}

/// [`quantize_pow2`] given `max|x|` (as [`max_abs_of`] finds it; `out` as long as `x`).
#[inline(always)]
fn shift_by_max<T>(x: &[i32], out: &mut [T], max_abs: u32, narrow: impl Fn(i32) -> T) -> i32 {
    if max_abs == 0 {
        out.iter_mut().for_each(|o| *o = narrow(0));
        return 0;
    }
    let k = act_shift(max_abs);
    if k >= 1 {
        let s = (k - 1) as u32;
        for (o, &v) in out.iter_mut().zip(x) {
            *o = narrow(((v >> s) + 1) >> 1);
        }
    } else {
        let up = (-k) as u32;
        for (o, &v) in out.iter_mut().zip(x) {
            *o = narrow(v << up);
        }
    }
    max_abs as i32
}

/// `max|x|`, capped at `i32::MAX` (as [`quantize_act`] takes it): [`max_abs_reference`] bit
/// for bit; on the device through [`max_abs_thumb`], four elements a load (~8 cycles each,
/// against ~11 for the compiled loop).
#[inline(always)]
pub fn max_abs_of(x_q16: &[i32]) -> u32 {
    #[cfg(all(target_arch = "arm", feature = "rp2040"))]
    if !x_q16.is_empty() {
        // SAFETY: x_q16 holds len ≥ 1 words; the routine reads x_q16[..len] only.
        return unsafe { max_abs_thumb(x_q16.as_ptr(), x_q16.len()) };
    }
    max_abs_reference(x_q16)
}

/// The plain form of [`max_abs_of`].
pub fn max_abs_reference(x_q16: &[i32]) -> u32 {
    x_q16
        .iter()
        .map(|v| v.unsigned_abs())
        .max()
        .unwrap_or(0)
        .min(i32::MAX as u32)
}

/// `Σ x²` (each square exact in `u64`, the sum saturating): [`sum_squares_reference`] bit for
/// bit; on the device through [`sum_squares_thumb`] (~21 cycles an element, against ~28 or
/// more for the compiled loop with its saturating 64-bit adds).
#[inline(always)]
pub fn sum_squares(x: &[i32]) -> u64 {
    #[cfg(all(target_arch = "arm", feature = "rp2040"))]
    if !x.is_empty() {
        // SAFETY: x holds len ≥ 1 words; the routine reads x[..len] only.
        return unsafe { sum_squares_thumb(x.as_ptr(), x.len()) };
    }
    sum_squares_reference(x)
}

/// The plain form of [`sum_squares`].
pub fn sum_squares_reference(x: &[i32]) -> u64 {
    x.iter().fold(0u64, |acc, &v| {
        let v = v.unsigned_abs();
        acc.saturating_add(mul_wide_u32(v, v))
    })
}

#[cfg(all(target_arch = "arm", feature = "rp2040"))]
extern "C" {
    /// [`max_abs_of`] of `n ≥ 1` words at `x`.
    fn max_abs_thumb(x: *const i32, n: usize) -> u32;
    /// [`sum_squares`] of `n ≥ 1` words at `x` (the `u64` in r0:r1).
    fn sum_squares_thumb(x: *const i32, n: usize) -> u64;
}

// Four words a load (LDM of r3–r6), each |x| compared with the max in r2 (a taken branch when it
// is no larger); then the n % 4 tail one word at a time; i32::MIN's 2^31 capped to i32::MAX.
// r0 x (advancing), r1 n (then the tail count), r12 the end of the whole quads, r7 the sign.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
core::arch::global_asm!(
    ".section .data.ramfunc.max_abs_thumb,\"ax\",%progbits",
    ".global max_abs_thumb",
    ".type max_abs_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "max_abs_thumb:",
    "push {{r4-r7, lr}}",
    "movs r2, #0",
    "lsrs r3, r1, #2",
    "beq 5f",
    "lsls r3, r3, #4",
    "adds r3, r0, r3",
    "mov r12, r3",
    "1:",
    "ldm r0!, {{r3-r6}}",
    "asrs r7, r3, #31",
    "eors r3, r7",
    "subs r3, r3, r7",
    "cmp r3, r2",
    "bls 2f",
    "mov r2, r3",
    "2:",
    "asrs r7, r4, #31",
    "eors r4, r7",
    "subs r4, r4, r7",
    "cmp r4, r2",
    "bls 2f",
    "mov r2, r4",
    "2:",
    "asrs r7, r5, #31",
    "eors r5, r7",
    "subs r5, r5, r7",
    "cmp r5, r2",
    "bls 2f",
    "mov r2, r5",
    "2:",
    "asrs r7, r6, #31",
    "eors r6, r7",
    "subs r6, r6, r7",
    "cmp r6, r2",
    "bls 2f",
    "mov r2, r6",
    "2:",
    "cmp r0, r12",
    "bne 1b",
    "5:",
    "movs r3, #3",
    "ands r1, r3",
    "beq 7f",
    "6:",
    "ldm r0!, {{r3}}",
    "asrs r7, r3, #31",
    "eors r3, r7",
    "subs r3, r3, r7",
    "cmp r3, r2",
    "bls 2f",
    "mov r2, r3",
    "2:",
    "subs r1, r1, #1",
    "bne 6b",
    "7:",
    "lsrs r3, r2, #31",
    "subs r0, r2, r3", // 2^31 (from i32::MIN) → i32::MAX
    "pop {{r4-r7, pc}}",
    ".size max_abs_thumb, . - max_abs_thumb",
);

// Per element: |x| split in 16-bit halves, x² = hi²·2^32 + 2·lo·hi·2^16 + lo² from three MULS
// (2·lo·hi < 2^33 split across the words by shifts), added to the sum in r3:r2; a carry out
// saturates it to u64::MAX and ends the loop (every later term would keep it there).
// r0 x (advancing), r1 the end, r4–r7 scratch.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
core::arch::global_asm!(
    ".section .data.ramfunc.sum_squares_thumb,\"ax\",%progbits",
    ".global sum_squares_thumb",
    ".type sum_squares_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "sum_squares_thumb:",
    "push {{r4-r7, lr}}",
    "lsls r1, r1, #2",
    "adds r1, r0, r1",
    "movs r2, #0",
    "movs r3, #0",
    "1:",
    "ldm r0!, {{r4}}",
    "asrs r5, r4, #31",
    "eors r4, r5",
    "subs r4, r4, r5", // |x|
    "uxth r5, r4",
    "lsrs r4, r4, #16",
    "mov r6, r5",
    "muls r6, r4, r6", // lo·hi
    "muls r5, r5, r5", // lo²
    "muls r4, r4, r4", // hi²
    "lsrs r7, r6, #15",
    "lsls r6, r6, #17",
    "adds r5, r5, r6",
    "adcs r4, r7", // r4:r5 = x²
    "adds r2, r2, r5",
    "adcs r3, r4",
    "bcs 2f",
    "cmp r0, r1",
    "bne 1b",
    "mov r0, r2",
    "mov r1, r3",
    "pop {{r4-r7, pc}}",
    "2:",
    "movs r0, #0",
    "mvns r0, r0",
    "mov r1, r0",
    "pop {{r4-r7, pc}}",
    ".size sum_squares_thumb, . - sum_squares_thumb",
);

/// The plain form of [`quantize_act`]: every element times the reciprocal of its step
/// (`2^−k` as a [`Multiplier`]) through [`Multiplier::apply_i32`], clamped to `±ACT_LEVELS`.
pub fn quantize_act_reference(x_q16: &[i32], out: &mut [i32]) -> i32 {
    quantize_pow2_reference(x_q16, out, |q| q)
}

/// [`quantize_act_reference`] and [`quantize_kv_reference`], each value through `narrow`.
fn quantize_pow2_reference<T>(x_q16: &[i32], out: &mut [T], narrow: impl Fn(i32) -> T) -> i32 {
    let max_abs = max_abs_reference(x_q16);
    let inv = Multiplier {
        mant: 1 << 30,
        shift: 30 + if max_abs == 0 { 0 } else { act_shift(max_abs) },
    };
    for (o, &v) in out.iter_mut().zip(x_q16) {
        *o = narrow(inv.apply_i32(v).clamp(-ACT_LEVELS, ACT_LEVELS));
    }
    max_abs as i32
}

/// Quantises a key or value vector to `±KV_LEVELS` in `i16` with a power-of-two step, as
/// [`quantize_act`] does a matrix input (its step is [`act_step`] of the returned `max|x|`):
/// [`quantize_kv_reference`] bit for bit, by shifts. A key step of mantissa 2³⁰ makes the
/// attention score's multiplier a constant per query head ([`crate::forward`]'s
/// `scores_pow2_thumb` path).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn quantize_kv(x_q16: &[i32], out: &mut [i16]) -> i32 {
    quantize_pow2(x_q16, out, |q| q as i16)
}

// quantize_kv shares quantize_act's power-of-two steps, so the two ranges must be one.
const _: () = assert!(KV_LEVELS == ACT_LEVELS);

/// The plain form of [`quantize_kv`]: [`quantize_act_reference`], narrowed.
pub fn quantize_kv_reference(x_q16: &[i32], out: &mut [i16]) -> i32 {
    quantize_pow2_reference(x_q16, out, |q| q as i16)
}

/// Dot product of int8 weights and a quantised activation, accumulated in `i32`. Lengths are
/// capped by the format (≤ 4096), so `4096 · 128 · 2047 < 2³¹` and the sum cannot overflow.
#[inline]
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn dot_w8(w: &[u8], x: &[i32]) -> i32 {
    // Four products per iteration (LDRSB, LDR, MULS, ADDS each): ~5 cycles per weight on the M0+.
    let n = w.len().min(x.len());
    let (w, x) = (&w[..n], &x[..n]);
    let mut acc = 0i32;
    let mut w4 = w.chunks_exact(4);
    let mut x4 = x.chunks_exact(4);
    for (w, x) in (&mut w4).zip(&mut x4) {
        acc += (w[0] as i8 as i32) * x[0]
            + (w[1] as i8 as i32) * x[1]
            + (w[2] as i8 as i32) * x[2]
            + (w[3] as i8 as i32) * x[3];
    }
    for (&w, &x) in w4.remainder().iter().zip(x4.remainder()) {
        acc += (w as i8 as i32) * x;
    }
    acc
}

/// `out[r] = Σ_c W[r,c]·x[c]` for an int8 matrix with one multiplier per row (scheme 1).
///
/// `scales` holds 8 bytes per row, `weights` `cols` bytes per row; `x` is the quantised input
/// with step `x_step` (Q16.16 per unit); `out` is Q16.16. Rows go in pairs through
/// [`dot2_w8`] (thumbv6m assembly on the device) when the rows are whole 32-bit words, then
/// [`rescale_rows`] scales every sum; the result equals [`matvec_i8_reference`] bit for bit
/// (integer sums, any order). rp2040js: 6.54 cycles/MAC at 64×64, 6.47 at 172×64
/// (`starmind bench --kernels --emulator`).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn matvec_i8(
    out: &mut [i32],
    scales: &[u8],
    weights: &[u8],
    cols: usize,
    x: &[i32],
    x_step: Multiplier,
) {
    let aligned = |p: *const u8| (p as usize).is_multiple_of(4);
    if cols == 0 || !aligned(scales.as_ptr()) || x.len() < cols {
        return matvec_i8_reference(out, scales, weights, cols, x, x_step);
    }
    let rows = out.len().min(scales.len() / 8);
    let out = &mut out[..rows];
    if !cols.is_multiple_of(4) || !aligned(weights.as_ptr()) {
        // Rows that are not whole words (a width like 18): one row at a time in Rust, the
        // rescale still the fast one.
        let mut done = 0;
        for (o, row) in out.iter_mut().zip(weights.chunks_exact(cols)) {
            *o = dot_w8(row, x);
            done += 1;
        }
        return rescale_rows(&mut out[..done], scales, x_step);
    }
    let mut outs = out.chunks_exact_mut(2);
    let mut pairs = 0;
    for (o, rows) in (&mut outs).zip(weights.chunks_exact(2 * cols)) {
        (o[0], o[1]) = dot2_w8(rows, &x[..cols]);
        pairs += 1;
    }
    // An odd last row.
    let last = 2 * pairs;
    let mut done = last;
    if let ([o, ..], Some(row)) = (
        outs.into_remainder(),
        weights.get(last * cols..(last + 1) * cols),
    ) {
        *o = dot_w8(row, x);
        done += 1;
    }
    rescale_rows(&mut out[..done], scales, x_step);
}

/// [`Multiplier::from_le_bytes`] of a row scale that starts on a 4-byte boundary, from two word
/// loads (the byte-wise read costs ~30 cycles a row on the M0+).
#[inline(always)]
fn row_multiplier(scale: &[u8]) -> Multiplier {
    match scale.get(..8) {
        Some(bytes) => {
            // SAFETY: 8 readable bytes from a 4-byte aligned start (`matvec_i8` checks the
            // section's alignment; rows are 8 bytes).
            let (mant, shift) = unsafe {
                let p = bytes.as_ptr().cast::<u32>();
                (p.read(), p.add(1).read())
            };
            Multiplier {
                mant: u32::from_le(mant) & FILE_MANTISSA_MASK,
                shift: u32::from_le(shift) as i32,
            }
        }
        None => Multiplier::ZERO,
    }
}

/// `(high, low)` words of `a · b` for `a ≤ 2³¹`, `b < 2³¹`: four 16×16 `MULS`, and the two
/// middle products cannot overflow their `u32` sum (`2¹⁵·(2¹⁶−1) + (2¹⁶−1)·(2¹⁵−1) < 2³²`), so
/// only the low word's carry is propagated.
#[inline(always)]
fn mul_wide_31(a: u32, b: u32) -> (u32, u32) {
    let (a_lo, a_hi) = (a & 0xFFFF, a >> 16);
    let (b_lo, b_hi) = (b & 0xFFFF, b >> 16);
    let mid = a_hi * b_lo + a_lo * b_hi;
    let (low, carry) = (a_lo * b_lo).overflowing_add(mid << 16);
    (a_hi * b_hi + (mid >> 16) + carry as u32, low)
}

/// The per-row rescale of the int8 matrix kernels, in place: `out[r]` holds row `r`'s integer
/// sum and becomes `row_multiplier(scale_r).times(x_step).apply_i32(sum)`, bit for bit.
/// `scales` starts on a 4-byte boundary (8 bytes per row); rows without a scale are left alone.
///
/// On thumbv6m: [`rescale_rows_thumb`], 51.5 cycles a row when the combined shift is ≥ 32 (two
/// 32×32→64 products from four `MULS` each, against ~170 for the [`Multiplier`] calls;
/// stories260k's profile: 51.0 a row over the whole run, was 54.5); rows whose combined shift
/// falls outside 1..=62 (none from the exporter) are finished here in Rust.
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
fn rescale_rows(out: &mut [i32], scales: &[u8], x_step: Multiplier) {
    let rows = out.len().min(scales.len() / 8);
    let out = &mut out[..rows];
    let rescale = RowRescale { x_step };
    #[cfg(target_arch = "arm")]
    {
        if rescale.word_path() {
            // A matrix input's power-of-two step (act_step) skips the first product.
            let routine = if x_step.mant == 1 << 30 {
                rescale_rows_pow2_thumb
            } else {
                rescale_rows_thumb
            };
            // SAFETY: `out` has `rows` words, `scales` 8·rows bytes from a 4-byte aligned start
            // (checked by `matvec_i8`), and the word path holds.
            return unsafe { rescale_rows_by(routine, out, scales, x_step) };
        }
    }
    for (o, scale) in out.iter_mut().zip(scales.chunks_exact(8)) {
        *o = rescale.apply(scale, *o);
    }
}

/// One of the row-rescale routines over all of `out` (it reads and writes exactly `out.len()`
/// words and `8 · out.len()` bytes of `scales`), then the rows it left ([`rescale_rows_left`]).
///
/// # Safety
/// `scales` holds at least 8·`out.len()` bytes from a 4-byte aligned start, and `x_step` takes
/// the word path (`RowRescale::word_path`; `x_mant` = 2³⁰ for the pow2 routine).
#[cfg(target_arch = "arm")]
#[inline(always)]
unsafe fn rescale_rows_by(
    routine: unsafe extern "C" fn(*mut i32, *const u8, usize, u32, i32) -> usize,
    out: &mut [i32],
    scales: &[u8],
    x_step: Multiplier,
) {
    // SAFETY: as the caller promises.
    let left = unsafe {
        routine(
            out.as_mut_ptr(),
            scales.as_ptr(),
            out.len(),
            x_step.mant,
            x_step.shift - 32,
        )
    };
    if left > 0 {
        rescale_rows_left(out, scales, x_step);
    }
}

/// The rows [`rescale_rows_thumb`] / [`rescale_rows_pow2_thumb`] left as sums (their combined
/// shift outside 1..=62: none from the exporter), rescaled the general way.
#[cfg(target_arch = "arm")]
#[inline(never)]
#[cold]
fn rescale_rows_left(out: &mut [i32], scales: &[u8], x_step: Multiplier) {
    let rescale = RowRescale { x_step };
    for (o, scale) in out.iter_mut().zip(scales.chunks_exact(8)) {
        if rescale.shift_of(scale).is_none() {
            *o = rescale.apply(scale, *o);
        }
    }
}

#[cfg(target_arch = "arm")]
extern "C" {
    /// [`RowRescale::apply`] in place for each of `rows` sums at `out` whose combined shift
    /// `shift + x_shift_minus_32 + 1` lies in 1..=62; the other rows are left as sums and
    /// counted in the result. Needs `x_mant < 2³¹` and `|x_shift| < 2²⁴` ([`RowRescale::word_path`]).
    fn rescale_rows_thumb(
        out: *mut i32,
        scales: *const u8,
        rows: usize,
        x_mant: u32,
        x_shift_minus_32: i32,
    ) -> usize;
    /// [`rescale_rows_thumb`] for `x_mant` = 2³⁰ only (a power-of-two step: [`act_step`]),
    /// whose product with a row's mantissa is a shift.
    fn rescale_rows_pow2_thumb(
        out: *mut i32,
        scales: *const u8,
        rows: usize,
        x_mant: u32,
        x_shift_minus_32: i32,
    ) -> usize;
}

/// The per-row rescale of [`rescale_rows`]: `row_multiplier(scale).times(x_step).apply_i32(acc)`
/// bit for bit, in 32-bit words as [`rescale_rows_thumb`] does it (this is its host model). Rows
/// whose combined shift lies outside 1..=62 take the general [`Multiplier`] path.
#[derive(Clone, Copy)]
struct RowRescale {
    x_step: Multiplier,
}

impl RowRescale {
    /// Whether the 32-bit word path applies to this `x_step` at all (always, for the steps
    /// [`step_q16`] makes): then a row's combined shift computed in wrapping `i32` arithmetic is in
    /// 1..=62 exactly when the saturating one is.
    #[inline(always)]
    fn word_path(self) -> bool {
        self.x_step.mant <= 0x7FFF_FFFF && self.x_step.shift.unsigned_abs() < 1 << 24
    }

    /// The combined shift of a row when the word path takes it.
    #[inline(always)]
    fn shift_of(self, scale: &[u8]) -> Option<i32> {
        let shift = row_multiplier(scale)
            .shift
            .saturating_add(self.x_step.shift)
            .saturating_sub(31);
        ((1..=62).contains(&shift) && self.word_path()).then_some(shift)
    }

    #[inline(always)]
    fn apply(self, scale: &[u8], acc: i32) -> i32 {
        let row = row_multiplier(scale);
        let Some(s) = self.shift_of(scale) else {
            return row.times(self.x_step).apply_i32(acc);
        };
        // Multiplier::times: the top 31 bits of the 62-bit product, m; doubled (2m < 2³²), so
        // that the high word of the product below is floor(acc · m / 2³¹).
        let (high, low) = mul_wide_31(row.mant, self.x_step.mant);
        let m2 = ((high << 1) | (low >> 31)) << 1;
        // The signed product acc · 2m from acc's signed high half and unsigned low half (each
        // partial product fits its 32-bit word, |acc · 2m| < 2⁶³).
        let (a_hi, a_lo) = (acc >> 16, (acc as u32) & 0xFFFF);
        let (m_hi, m_lo) = (m2 >> 16, m2 & 0xFFFF);
        let mut high = a_hi.wrapping_mul(m_hi as i32) as u32;
        let mut low = a_lo * m_lo;
        for (part, signed) in [
            (a_hi.wrapping_mul(m_lo as i32) as u32, true),
            (a_lo * m_hi, false),
        ] {
            let (sum, carry) = low.overflowing_add(part << 16);
            let top = if signed {
                ((part as i32) >> 16) as u32
            } else {
                part >> 16
            };
            low = sum;
            high = high.wrapping_add(top).wrapping_add(carry as u32);
        }
        // Multiplier::round_shift by s: for s ≥ 32 from floor(acc · m / 2³¹) alone (no
        // saturation there: |acc · m| < 2⁶²).
        if s >= 32 {
            return (((high as i32) >> (s - 32)) + 1) >> 1;
        }
        // s ≤ 31: halve back to acc · m.
        let (high, low) = ((high as i32 >> 1) as u32, (low >> 1) | (high << 31));
        let (rounded_low, carry) = low.overflowing_add(1 << (s - 1));
        let high = high.wrapping_add(carry as u32) as i32;
        let top = high >> (s - 1);
        if top != 0 && top != -1 {
            return if high < 0 { i32::MIN } else { i32::MAX };
        }
        let joined = ((high as u32) << (32 - s)) | rounded_low.checked_shr(s as u32).unwrap_or(0);
        joined as i32
    }
}

/// The plain form of [`matvec_i8`]: one row at a time through [`dot_w8`].
pub fn matvec_i8_reference(
    out: &mut [i32],
    scales: &[u8],
    weights: &[u8],
    cols: usize,
    x: &[i32],
    x_step: Multiplier,
) {
    if cols == 0 {
        return;
    }
    for ((o, row), scale) in out
        .iter_mut()
        .zip(weights.chunks_exact(cols))
        .zip(scales.chunks_exact(8))
    {
        let acc = dot_w8(row, x);
        *o = Multiplier::from_le_bytes(scale)
            .times(x_step)
            .apply_i32(acc);
    }
}

/// Rows per group of the row-quad layout ([`quad_rows`], [`matvec_i8_x4`]).
pub const QUAD_ROWS: usize = 4;

/// Rearranges a row-major int8 matrix (`plain`, `rows × cols` bytes) into the row-quad layout
/// that [`matvec_i8_x4`] reads, in `out` (the same length): for each group of 4 rows, column by
/// column, one 32-bit word holding the 4 rows' weights at that column, row `4g + i` in byte `i`,
/// each stored offset-binary (`q + 128`, i.e. `q ^ 0x80`); the last `rows % 4` rows follow
/// row-major as plain two's-complement bytes. Only whole rows are written.
pub fn quad_rows(plain: &[u8], rows: usize, cols: usize, out: &mut [u8]) {
    let rows = rows
        .min(plain.len() / cols.max(1))
        .min(out.len() / cols.max(1));
    let grouped = rows - rows % QUAD_ROWS;
    for g in 0..grouped / QUAD_ROWS {
        for c in 0..cols {
            for i in 0..QUAD_ROWS {
                out[(g * cols + c) * QUAD_ROWS + i] = plain[(g * QUAD_ROWS + i) * cols + c] ^ 0x80;
            }
        }
    }
    out[grouped * cols..rows * cols].copy_from_slice(&plain[grouped * cols..rows * cols]);
}

/// The weight `q[r][c]` of a row-quad matrix ([`quad_rows`]) of `rows × cols`.
#[inline]
pub(crate) fn quad_weight(weights: &[u8], rows: usize, cols: usize, r: usize, c: usize) -> i32 {
    let grouped = rows - rows % QUAD_ROWS;
    let byte = if r < grouped {
        weights
            .get(((r / QUAD_ROWS) * cols + c) * QUAD_ROWS + r % QUAD_ROWS)
            .map(|b| b ^ 0x80)
    } else {
        weights.get(r * cols + c).copied()
    };
    byte.unwrap_or(0) as i8 as i32
}

/// The plain form of [`matvec_i8_x4`]: each weight read back from the row-quad layout, one row
/// at a time, then the row multiplier as in [`matvec_i8_reference`].
pub fn matvec_i8_x4_reference(
    out: &mut [i32],
    scales: &[u8],
    weights: &[u8],
    cols: usize,
    x: &[i32],
    x_step: Multiplier,
) {
    let rows = out.len().min(scales.len() / 8);
    if cols == 0 || weights.len() < rows * cols || x.len() < cols {
        return;
    }
    for (r, (o, scale)) in out.iter_mut().zip(scales.chunks_exact(8)).enumerate() {
        let acc = (0..cols).fold(0i32, |acc, c| {
            acc.wrapping_add(quad_weight(weights, rows, cols, r, c).wrapping_mul(x[c]))
        });
        *o = Multiplier::from_le_bytes(scale)
            .times(x_step)
            .apply_i32(acc);
    }
}

/// [`matvec_i8_x4`] on thumbv6m for the shape the forward pass always has: whole row quads
/// (`out.len()` rows, a multiple of 4, every one with its scale), even `cols`, word-aligned
/// weights and scales, and a power-of-two input step ([`act_step`]). [`dot4_rows_thumb`] then
/// [`rescale_rows_pow2_thumb`] straight away, so a call costs ~110 cycles fewer than the
/// general path's checks and the [`rescale_rows`] call (~290 a call on the M0+, seven calls a
/// token for story-1k). Returns false (nothing done) for any other shape; then
/// [`matvec_i8_x4`] takes it. The same bits: the same two routines on the same words.
#[cfg(target_arch = "arm")]
#[inline(always)]
pub(crate) fn matvec_i8_x4_pow2(
    out: &mut [i32],
    scales: &[u8],
    weights: &[u8],
    cols: usize,
    x: &[i32],
    x_step: Multiplier,
) -> bool {
    let rows = out.len();
    let fits = rows.is_multiple_of(QUAD_ROWS)
        && rows > 0
        && cols.is_multiple_of(2)
        && cols > 0
        && x.len() >= cols
        && scales.len() >= 8 * rows
        && (rows | cols) < 1 << 16 // so that rows · cols cannot wrap
        && weights.len() >= rows * cols
        && ((weights.as_ptr() as usize) | (scales.as_ptr() as usize)).is_multiple_of(4)
        && x_step.mant == 1 << 30
        && x_step.shift.unsigned_abs() < 1 << 24;
    if !fits {
        return false;
    }
    // SAFETY: `weights` holds rows·cols bytes (rows/4 quads of 4·cols) from a 4-byte aligned
    // start, `x` cols (even, > 0) words, `out` rows words and `scales` 8·rows bytes from a
    // 4-byte aligned start: the routines read and write only those (as in `matvec_i8_x4` and
    // `rescale_rows`, whose conditions these are: rows = out.len() ≤ scales.len() / 8, and
    // x_mant = 2³⁰ with |x_shift| < 2²⁴ is `RowRescale::word_path`).
    unsafe {
        dot4_rows_thumb(
            weights.as_ptr(),
            x.as_ptr(),
            cols,
            out.as_mut_ptr(),
            rows / QUAD_ROWS,
        );
        rescale_rows_by(rescale_rows_pow2_thumb, out, scales, x_step);
    }
    true
}

/// `out[r] = Σ_c W[r,c]·x[c]` for an int8 matrix in the row-quad layout ([`quad_rows`]), one
/// multiplier per row (as [`matvec_i8`]; `out.len()` rows). Equal bit for bit to
/// [`matvec_i8_x4_reference`], and to [`matvec_i8_reference`] of the row-major matrix.
///
/// Each activation load serves 4 rows, and each weight word gives its 4 products with one
/// shift apiece: with `w` the word, the wrapping sums of `x·w`, `x·(w >> 8)`, `x·(w >> 16)`
/// and `x·(w >> 24)` (logical shifts) are `F`, `E`, `B`, `D`, and the offset-binary rows are
/// `U0 = F − 256E`, `U1 = E − 256B`, `U2 = B − 256D`, `U3 = D` (exact mod 2³², and the true
/// sums fit `i32`), so row `4g + i` is `Ui − 128·Σx`. On thumbv6m: [`dot4_rows_thumb`], 3.5
/// cycles/MAC in the loop (per pair of columns: two LDM of 2, then per column 3 × (LSRS, MULS,
/// ADD) + MULS, ADD), then [`rescale_rows`]. rp2040js: 4.64 cycles/MAC at 64×64, 4.53 at
/// 172×64, 3.98 at 64×172 (`starmind bench --kernels --emulator`).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn matvec_i8_x4(
    out: &mut [i32],
    scales: &[u8],
    weights: &[u8],
    cols: usize,
    x: &[i32],
    x_step: Multiplier,
) {
    #[cfg(target_arch = "arm")]
    if matvec_i8_x4_pow2(out, scales, weights, cols, x, x_step) {
        return;
    }
    let rows = out.len().min(scales.len() / 8);
    let aligned = |p: *const u8| (p as usize).is_multiple_of(4);
    let words = cols.is_multiple_of(2) && aligned(weights.as_ptr()) && aligned(scales.as_ptr());
    if cols == 0 || !words || x.len() < cols || weights.len() < rows * cols {
        return matvec_i8_x4_reference(out, scales, weights, cols, x, x_step);
    }
    let out = &mut out[..rows];
    let x = &x[..cols];
    let groups = rows / QUAD_ROWS;
    let grouped = groups * QUAD_ROWS;
    let (quads, tail) = weights.split_at(grouped * cols);
    #[cfg(target_arch = "arm")]
    if groups > 0 {
        // SAFETY: `quads` holds groups·4·cols bytes from a 4-byte aligned start, `x` cols (even,
        // > 0) words, `out` at least 4·groups words; the routine reads and writes only those.
        unsafe { dot4_rows_thumb(quads.as_ptr(), x.as_ptr(), cols, out.as_mut_ptr(), groups) };
    }
    #[cfg(not(target_arch = "arm"))]
    let offset = x
        .iter()
        .fold(0i32, |s, &v| s.wrapping_add(v))
        .wrapping_mul(128); // 128·Σx: the offset of the offset-binary weights
    #[cfg(not(target_arch = "arm"))]
    for (o, quad) in out
        .chunks_exact_mut(QUAD_ROWS)
        .zip(quads.chunks_exact(QUAD_ROWS * cols))
    {
        o.copy_from_slice(&dot4_rows(quad, x, offset));
    }
    // The rows past the last whole quad, if any (building `chunks_exact` costs a software
    // divide on the M0+, so whole quads skip it).
    if grouped < rows {
        for (o, row) in out[grouped..].iter_mut().zip(tail.chunks_exact(cols)) {
            *o = dot_w8(row, x);
        }
    }
    rescale_rows(out, scales, x_step);
}

/// The four row sums of one row quad (`quad` = 4·`x.len()` bytes) in Rust, as
/// [`dot4_rows_thumb`] forms them (`offset` = 128·Σx).
#[cfg(any(test, not(target_arch = "arm")))]
fn dot4_rows(quad: &[u8], x: &[i32], offset: i32) -> [i32; 4] {
    let (mut f, mut e, mut b, mut d) = (0u32, 0u32, 0u32, 0u32);
    for (w, &v) in quad.chunks_exact(4).zip(x) {
        let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        let v = v as u32;
        f = f.wrapping_add(w.wrapping_mul(v));
        e = e.wrapping_add((w >> 8).wrapping_mul(v));
        b = b.wrapping_add((w >> 16).wrapping_mul(v));
        d = d.wrapping_add((w >> 24).wrapping_mul(v));
    }
    [
        f.wrapping_sub(e << 8),
        e.wrapping_sub(b << 8),
        b.wrapping_sub(d << 8),
        d,
    ]
    .map(|u| (u as i32).wrapping_sub(offset))
}

#[cfg(target_arch = "arm")]
extern "C" {
    /// The raw row sums of `groups` row quads ([`quad_rows`]; `w` 4·cols bytes per quad, 4-byte
    /// aligned) with `cols` (even, > 0) `i32` activations, into `out[0..4·groups]` (the offset
    /// 128·Σx, wrapping, taken off). The sums are not yet scaled (see [`rescale_rows`]).
    fn dot4_rows_thumb(w: *const u8, x: *const i32, cols: usize, out: *mut i32, groups: usize);
}

/// One column of [`dot4_rows_thumb`]: activation in `$x`, weight word in `$w` (consumed).
#[cfg(target_arch = "arm")]
macro_rules! DOT4_COLUMN {
    ($x:literal, $w:literal) => {
        concat!(
            "lsrs r2, ",
            $w,
            ", #8\n",
            "muls r2, ",
            $x,
            ", r2\n",
            "add r9, r2\n",
            "lsrs r2, ",
            $w,
            ", #16\n",
            "muls r2, ",
            $x,
            ", r2\n",
            "add r10, r2\n",
            "lsrs r2, ",
            $w,
            ", #24\n",
            "muls r2, ",
            $x,
            ", r2\n",
            "add r11, r2\n",
            "muls ",
            $w,
            ", ",
            $x,
            ", ",
            $w,
            "\n",
            "add r8, ",
            $w,
            "\n",
        )
    };
}

/// Two columns of [`dot4_rows_thumb`]: 24 instructions, 48 bytes, 28 cycles for 8 MACs.
#[cfg(target_arch = "arm")]
macro_rules! DOT4_PAIR {
    () => {
        concat!(
            "ldm r1!, {{r4, r5}}\n",
            "ldm r0!, {{r6, r7}}\n",
            DOT4_COLUMN!("r4", "r6"),
            DOT4_COLUMN!("r5", "r7"),
        )
    };
}

/// Where [`dot4_rows_thumb`] lives (as [`DOT2_SECTION`]).
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! DOT4_SECTION {
    () => {
        ".section .data.ramfunc.dot4_rows_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! DOT4_SECTION {
    () => {
        ".section .text.dot4_rows_thumb,\"ax\",%progbits"
    };
}

// r0 weights (advancing through all quads), r1 x (advancing), r2 scratch, r3 out (advancing),
// r4/r5 two activations, r6/r7 two weight words, r8–r11 the sums F, E, B, D of the current quad,
// r12 end of x, lr the entry into the 16-pair body (so the first pass runs (cols/2) mod 16
// pairs, every later one 16: 4 cycles a pass to go round). Stack: [sp] x start, [sp, #4] end of the weights, [sp, #12] offset =
// 128·Σx (summed first, 3 cycles a column).
// Per quad ~40 cycles outside the loop by the rp2040js cycle model, was ~46 (zeroing, the jump,
// U0..U3 and the offset, the store).
#[cfg(target_arch = "arm")]
core::arch::global_asm!(
    DOT4_SECTION!(),
    ".global dot4_rows_thumb",
    ".type dot4_rows_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "dot4_rows_thumb:",
    "push {{r4-r7, lr}}",
    "mov r4, r8",
    "mov r5, r9",
    "mov r6, r10",
    "mov r7, r11",
    "push {{r4-r7}}",
    "ldr r4, [sp, #36]", // groups (fifth argument, above the nine saved registers)
    "sub sp, #16",
    "str r1, [sp]",
    "lsls r5, r2, #2",
    "muls r4, r5, r4",
    "adds r4, r0",
    "str r4, [sp, #4]", // end of the weights: w + groups·4·cols
    // entry = body + ((-(cols/2)) mod 16) · 48, with the Thumb bit
    "lsrs r4, r2, #1",
    "rsbs r4, r4, #0",
    "movs r5, #15",
    "ands r4, r5",
    "movs r5, #48",
    "muls r4, r5, r4",
    "adr r5, 5f",
    "adds r4, r5",
    "adds r4, #1",
    "mov lr, r4",
    "lsls r5, r2, #2",
    "adds r5, r1",
    "mov r12, r5", // end of x
    // offset = 128·Σx (a first pair when cols/2 is odd, then 3 cycles a column)
    "movs r6, #0",
    "lsls r2, r2, #30", // bit 1 of cols (even) into N
    "bpl 8f",
    "ldm r1!, {{r4, r7}}",
    "adds r6, r6, r4",
    "adds r6, r6, r7",
    "8:",
    "cmp r1, r12",
    "bhs 9f",
    "8:",
    "ldm r1!, {{r2, r4, r5, r7}}",
    "adds r6, r6, r2",
    "adds r6, r6, r4",
    "adds r6, r6, r5",
    "adds r6, r6, r7",
    "cmp r1, r12",
    "blo 8b",
    "9:",
    "lsls r6, r6, #7",
    "str r6, [sp, #12]",
    "4:",
    "movs r2, #0",
    "mov r8, r2",
    "mov r9, r2",
    "mov r10, r2",
    "mov r11, r2",
    "ldr r1, [sp]",
    "bx lr",
    ".p2align 2",
    "5:",
    DOT4_PAIR!(),
    DOT4_PAIR!(),
    DOT4_PAIR!(),
    DOT4_PAIR!(),
    DOT4_PAIR!(),
    DOT4_PAIR!(),
    DOT4_PAIR!(),
    DOT4_PAIR!(),
    DOT4_PAIR!(),
    DOT4_PAIR!(),
    DOT4_PAIR!(),
    DOT4_PAIR!(),
    DOT4_PAIR!(),
    DOT4_PAIR!(),
    DOT4_PAIR!(),
    DOT4_PAIR!(),
    "cmp r1, r12",
    "bhs 6f",
    "b 5b", // the body is beyond a conditional branch's reach
    "6:",
    // U0 = F − 256E, U1 = E − 256B, U2 = B − 256D, U3 = D, each − offset
    "mov r4, r8",
    "mov r5, r9",
    "mov r6, r10",
    "mov r7, r11",
    "lsls r2, r5, #8",
    "subs r4, r4, r2",
    "lsls r2, r6, #8",
    "subs r5, r5, r2",
    "lsls r2, r7, #8",
    "subs r6, r6, r2",
    "ldr r2, [sp, #12]",
    "subs r4, r4, r2",
    "subs r5, r5, r2",
    "subs r6, r6, r2",
    "subs r7, r7, r2",
    "stm r3!, {{r4, r5, r6, r7}}",
    "ldr r2, [sp, #4]",
    "cmp r0, r2",
    "bhs 7f",
    "b 4b",
    "7:",
    "add sp, #16",
    "pop {{r4-r7}}",
    "mov r8, r4",
    "mov r9, r5",
    "mov r10, r6",
    "mov r11, r7",
    "pop {{r4-r7, pc}}",
    ".size dot4_rows_thumb, . - dot4_rows_thumb",
);

/// The dot products of two consecutive int8 rows (`rows` = 2 × `x.len()` bytes, 4-byte aligned,
/// `x.len()` a positive multiple of 4) with `x`, sharing each load of four activations.
///
/// On thumbv6m: [`dot2_w8_thumb`], 4.94 cycles/MAC in the loop (rp2040js: LDM of 4 activations
/// 5, each weight word 2–3, then per weight extract 1–2 + MULS 1 + ADD 1). Elsewhere the
/// same sums in Rust.
#[inline]
pub fn dot2_w8(rows: &[u8], x: &[i32]) -> (i32, i32) {
    let cols = x.len();
    debug_assert!(cols > 0 && cols.is_multiple_of(4) && rows.len() >= 2 * cols);
    #[cfg(target_arch = "arm")]
    {
        if rows.len() >= 2 * cols && cols >= 4 && cols.is_multiple_of(4) {
            let mut acc = [0i32; 2];
            // SAFETY: `rows` holds 2·cols bytes from a 4-byte aligned start (checked by the
            // caller, `matvec_i8`), `x` cols words; the routine reads exactly those and writes the
            // two words of `acc`.
            unsafe { dot2_w8_thumb(rows.as_ptr(), x.as_ptr(), cols, acc.as_mut_ptr()) };
            return (acc[0], acc[1]);
        }
    }
    let (a, b) = rows.split_at(cols.min(rows.len()));
    (dot_w8(a, x), dot_w8(b, x))
}

#[cfg(target_arch = "arm")]
extern "C" {
    /// `acc[0] = Σ a[c]·x[c]`, `acc[1] = Σ a[cols + c]·x[c]` for int8 `a` (2·cols bytes, 4-byte
    /// aligned) and `cols` (a positive multiple of 4) `i32` activations. Wrapping `i32` sums.
    fn dot2_w8_thumb(a: *const u8, x: *const i32, cols: usize, acc: *mut i32);
}

/// One block of [`dot2_w8_thumb`]: four activations, one weight word of each row.
#[cfg(target_arch = "arm")]
macro_rules! DOT2_BLOCK {
    () => {
        concat!(
            "ldm r1!, {{r4, r5, r6, r7}}\n",
            "ldm r0!, {{r3}}\n",
            "sxtb r2, r3\n",
            "muls r2, r4, r2\n",
            "add r12, r2\n",
            "lsls r2, r3, #16\n",
            "asrs r2, r2, #24\n",
            "muls r2, r5, r2\n",
            "add r12, r2\n",
            "lsls r2, r3, #8\n",
            "asrs r2, r2, #24\n",
            "muls r2, r6, r2\n",
            "add r12, r2\n",
            "asrs r2, r3, #24\n",
            "muls r2, r7, r2\n",
            "add r12, r2\n",
            "mov r2, r10\n",
            "ldr r3, [r0, r2]\n",
            "sxtb r2, r3\n",
            "muls r2, r4, r2\n",
            "add lr, r2\n",
            "lsls r2, r3, #16\n",
            "asrs r2, r2, #24\n",
            "muls r2, r5, r2\n",
            "add lr, r2\n",
            "lsls r2, r3, #8\n",
            "asrs r2, r2, #24\n",
            "muls r2, r6, r2\n",
            "add lr, r2\n",
            "asrs r2, r3, #24\n",
            "muls r2, r7, r2\n",
            "add lr, r2\n",
        )
    };
}

/// Where [`dot2_w8_thumb`] lives: SRAM on the RP2040 (see [`crate::forward`]'s note on code
/// placement), flash elsewhere.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! DOT2_SECTION {
    () => {
        ".section .data.ramfunc.dot2_w8_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! DOT2_SECTION {
    () => {
        ".section .text.dot2_w8_thumb,\"ax\",%progbits"
    };
}

// r0 row A (advancing), r1 x (advancing), r2 scratch, r3 weight word, r4–r7 four activations,
// r12 / lr the sums of rows A / B, r10 = cols − 4 (row B's word, after r0 has moved past row A's),
// r11 end of x. One block = 4 columns × 2 rows = 8 MACs in 38 cycles; two blocks per loop trip
// (+3 for CMP/BLO), entered at the second when cols/4 is odd.
#[cfg(target_arch = "arm")]
core::arch::global_asm!(
    DOT2_SECTION!(),
    ".global dot2_w8_thumb",
    ".type dot2_w8_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "dot2_w8_thumb:",
    "push {{r4-r7, lr}}",
    "mov r4, r8",
    "mov r5, r9",
    "mov r6, r10",
    "mov r7, r11",
    "push {{r3-r7}}",
    "subs r3, r2, #4",
    "mov r10, r3",
    "lsls r3, r2, #2",
    "adds r3, r1",
    "mov r11, r3",
    "movs r3, #0",
    "mov r12, r3",
    "mov lr, r3",
    "lsls r2, r2, #29", // bit 2 of cols (cols/4 odd) into the sign
    "bmi 2f",
    "1:",
    DOT2_BLOCK!(),
    "2:",
    DOT2_BLOCK!(),
    "cmp r1, r11",
    "blo 1b",
    "pop {{r3-r7}}",
    "mov r2, r12",
    "str r2, [r3]",
    "mov r2, lr",
    "str r2, [r3, #4]",
    "mov r8, r4",
    "mov r9, r5",
    "mov r10, r6",
    "mov r11, r7",
    "pop {{r4-r7, pc}}",
    ".size dot2_w8_thumb, . - dot2_w8_thumb",
);

/// Where [`rescale_rows_thumb`] lives (as [`DOT2_SECTION`]).
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! RESCALE_SECTION {
    () => {
        ".section .data.ramfunc.rescale_rows_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! RESCALE_SECTION {
    () => {
        ".section .text.rescale_rows_thumb,\"ax\",%progbits"
    };
}
/// Where [`rescale_rows_pow2_thumb`] lives (as [`RESCALE_SECTION`]).
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! RESCALE_POW2_SECTION {
    () => {
        ".section .data.ramfunc.rescale_rows_pow2_thumb,\"ax\",%progbits"
    };
}
#[cfg(all(target_arch = "arm", not(feature = "rp2040")))]
macro_rules! RESCALE_POW2_SECTION {
    () => {
        ".section .text.rescale_rows_pow2_thumb,\"ax\",%progbits"
    };
}

/// [`RESCALE_ROW`]'s product for any input step: 2m = (((mant & 0x7FFF_0000) · x_mant) >> 31) << 1
/// into r7 (the row mantissa's top 15 bits, as [`Multiplier::from_le_bytes`] reads it: its low
/// half is 0, so two of the four MULS with x_mant's halves in r8 / r9 give 0), then (r6:r2) =
/// sum · 2m, signed, from four more (each partial product fits its word).
#[cfg(target_arch = "arm")]
macro_rules! RESCALE_PRODUCT_ANY {
    () => {
        concat!(
            "lsls r6, r4, #1\n",
            "lsrs r6, r6, #17\n",
            "movs r4, #0\n",
            "mov r2, r8\n",
            "mov r3, r9\n",
            "mov r7, r6\n",
            "muls r7, r3\n",
            "muls r6, r2\n",
            "muls r3, r4\n",
            "muls r4, r2\n",
            "adds r6, r3\n",
            "lsls r3, r6, #16\n",
            "lsrs r6, r6, #16\n",
            "adds r4, r3\n",
            "adcs r7, r6\n",
            "lsrs r4, r4, #31\n",
            "lsls r7, r7, #1\n",
            "orrs r7, r4\n",
            "lsls r7, r7, #1\n",
            "ldr r2, [r0]\n",
            "asrs r3, r2, #16\n",
            "uxth r2, r2\n",
            "lsrs r4, r7, #16\n",
            "uxth r7, r7\n",
            "mov r6, r3\n",
            "muls r6, r4\n",
            "muls r3, r7\n",
            "muls r4, r2\n",
            "muls r2, r7\n",
            "lsls r7, r3, #16\n",
            "asrs r3, r3, #16\n",
            "adds r2, r7\n",
            "adcs r6, r3\n",
            "lsls r7, r4, #16\n",
            "lsrs r4, r4, #16\n",
            "adds r2, r7\n",
            "adcs r6, r4\n",
        )
    };
}

/// [`RESCALE_ROW`]'s product for a power-of-two input step (x_mant = 2³⁰, [`act_step`]): m =
/// (M · 2³⁰) >> 31 with M = mant & 0x7FFF_0000, so 2m = M = m15 · 2¹⁶ (m15 the mantissa's top 15
/// bits) and sum · 2m = (sum · m15) · 2¹⁶ with sum · m15 = A · 2¹⁶ + B, A = (sum >> 16) · m15
/// (signed), B = (sum & 0xFFFF) · m15 (< 2³¹): the high word is A + (B >> 16), the low word
/// B << 16, formed only on the way to the slow path ([`RESCALE_POW2_TO_SLOW`]: the straight one
/// needs the high word alone). Two MULS (11 cycles, against 39 for [`RESCALE_PRODUCT_ANY`]).
#[cfg(target_arch = "arm")]
macro_rules! RESCALE_PRODUCT_POW2 {
    () => {
        concat!(
            "lsls r7, r4, #1\n",
            "lsrs r7, r7, #17\n", // m15
            "ldr r2, [r0]\n",
            "asrs r3, r2, #16\n",
            "uxth r2, r2\n",
            "muls r3, r7\n", // A
            "muls r2, r7\n", // B
            "lsrs r6, r2, #16\n",
            "adds r6, r3\n",
        )
    };
}

/// [`RESCALE_PRODUCT_POW2`]'s low word (B << 16), before its rows take the slow path.
#[cfg(target_arch = "arm")]
macro_rules! RESCALE_POW2_TO_SLOW {
    () => {
        "lsls r2, r2, #16\n"
    };
}

/// One row of [`rescale_rows_thumb`] / [`rescale_rows_pow2_thumb`] at r0 (scale at r1; both
/// advance): `$product` forms the sum times 2m as the signed 64-bit (r6:r2), so the high word is
/// floor(sum · m / 2³¹); for the usual shifts (s − 32 = shift + x_shift − 63 in 0..=30)
/// round_shift is ((high >> (s − 32)) + 1) >> 1 (no saturation: |sum · m| < 2⁶²), else the
/// out-of-line `$slow` hands back to `$back` with the result in r6.
#[cfg(target_arch = "arm")]
macro_rules! RESCALE_ROW {
    ($product:expr, $slow:literal, $back:literal) => {
        concat!(
            "ldm r1!, {{r4, r5}}\n",
            "add r5, r10\n", // s − 32, wrapping (|x_shift| < 2^24: a wrapped sum is far off)
            $product,        // (r6:r2) = sum · 2m
            "cmp r5, #30\n",
            "bhi ",
            $slow,
            "f\n",
            // s in 32..=62: ((high >> (s − 32)) + 1) >> 1
            "asrs r6, r5\n",
            "adds r6, #1\n",
            "asrs r6, r6, #1\n",
            $back,
            ":\n",
            "stm r0!, {{r6}}\n",
        )
    };
}

// r0 out (advancing), r1 scales (advancing), r8 / r9 low / high half of x_mant, r10 x_shift − 63,
// r11 end of out, r12 rows left as sums. Two rows a pass ([`RESCALE_ROW`]; an odd count enters at
// the second): 51.5 cycles a row on the straight path (s ≥ 32). Any other shift goes through
// the shared tail at 50 (BL, so lr is free): for s ≤ 31 (t = s − 1 in 0..=30) halve the
// product back to sum · m, add 2^(s−1) over both words, saturate unless high >> (s−1) is 0 or
// −1, and join high << (32−s) | low >> s; outside 1..=62 the sum stays (r6 reloaded), counted.
#[cfg(target_arch = "arm")]
macro_rules! RESCALE_FUNCTION {
    ($name:literal, $section:expr, $product:expr, $to_slow:expr) => {
        core::arch::global_asm!(
            $section,
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
            "ldr r4, [sp, #36]", // the fifth argument (x_shift − 32), above the nine saved registers
            "subs r4, #31",
            "mov r10, r4",
            "uxth r4, r3",
            "mov r8, r4",
            "lsrs r4, r3, #16",
            "mov r9, r4",
            "movs r4, #0",
            "mov r12, r4",
            "lsls r3, r2, #2",
            "adds r3, r0",
            "mov r11, r3",
            "cmp r0, r11",
            "bne 1f",
            "b 6f",
            "1:",
            "lsrs r2, r2, #1",
            "bcs 2f", // an odd count: the first row is a second one
            "1:",
            RESCALE_ROW!($product, "40", "41"),
            "2:",
            RESCALE_ROW!($product, "42", "43"),
            "cmp r0, r11",
            "blo 1b",
            "6:",
            "mov r0, r12",
            "pop {{r4-r7}}",
            "mov r8, r4",
            "mov r9, r5",
            "mov r10, r6",
            "mov r11, r7",
            "pop {{r4-r7, pc}}",
            "40:",
            $to_slow,
            "bl 50f",
            "b 41b",
            "42:",
            $to_slow,
            "bl 50f",
            "b 43b",
            // r5 = s − 32 (wrapping), (r6:r2) = sum · 2m; the result into r6, back by lr
            "50:",
            "adds r5, #31", // t = s − 1
            "cmp r5, #30",
            "bhi 52f",
            "lsls r7, r6, #31", // (r6:r2) >>= 1 (arithmetic): sum · m
            "lsrs r2, r2, #1",
            "orrs r2, r7",
            "asrs r6, r6, #1",
            "movs r4, #1",
            "lsls r4, r5",
            "movs r7, #0",
            "adds r2, r4",
            "adcs r6, r7",
            "mov r4, r6",
            "asrs r4, r5",
            "adds r4, #1",
            "cmp r4, #1",
            "bhi 51f",
            "movs r4, #31",
            "subs r4, r4, r5",
            "lsls r6, r4",
            "adds r5, #1",
            "lsrs r2, r5",
            "orrs r6, r2",
            "bx lr",
            // saturated: i32::MAX, or i32::MIN for a negative high word
            "51:",
            "asrs r6, r6, #31",
            "movs r4, #1",
            "lsls r4, r4, #31",
            "mvns r4, r4",
            "eors r6, r4",
            "bx lr",
            // a row for the general path: the sum stays
            "52:",
            "ldr r6, [r0]",
            "movs r4, #1",
            "add r12, r4",
            "bx lr",
            concat!(".size ", $name, ", . - ", $name),
        );
    };
}

#[cfg(target_arch = "arm")]
RESCALE_FUNCTION!(
    "rescale_rows_thumb",
    RESCALE_SECTION!(),
    RESCALE_PRODUCT_ANY!(),
    ""
);
#[cfg(target_arch = "arm")]
RESCALE_FUNCTION!(
    "rescale_rows_pow2_thumb",
    RESCALE_POW2_SECTION!(),
    RESCALE_PRODUCT_POW2!(),
    RESCALE_POW2_TO_SLOW!()
);

/// `out[r] = Σ_c W[r,c]·x[c]` for a grouped int4 matrix (scheme 2): `W = q4 · g · s_row` with a
/// `u8` group multiplier `g` per `group` columns and one row multiplier `s_row`.
///
/// Nibbles are packed low-first, each row padded to a whole byte. A group sum (≤ 256·8·2047)
/// fits `i32`; the row sum of group sums times `g` is kept in `i64`.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn matvec_i4(
    out: &mut [i32],
    scales: &[u8],
    group_scales: &[u8],
    weights: &[u8],
    cols: usize,
    group: usize,
    x: &[i32],
    x_step: Multiplier,
) {
    if cols == 0 || group == 0 {
        return;
    }
    let row_bytes = cols.div_ceil(2);
    let groups = cols.div_ceil(group);
    let rows = out
        .iter_mut()
        .zip(weights.chunks_exact(row_bytes))
        .zip(scales.chunks_exact(8))
        .zip(group_scales.chunks_exact(groups));
    for (((o, row), scale), gscales) in rows {
        let mut acc = 0i64;
        for ((&gscale, x_group), start) in gscales
            .iter()
            .zip(x.chunks(group))
            .zip((0..cols).step_by(group))
        {
            let mut group_acc = 0i32;
            for (c, &xv) in (start..).zip(x_group) {
                let byte = row.get(c / 2).copied().unwrap_or(0);
                let nibble = if c % 2 == 0 { byte & 0x0F } else { byte >> 4 };
                let w = ((nibble << 4) as i8 >> 4) as i32; // sign-extend 4 bits
                group_acc += w * xv;
            }
            acc += group_acc as i64 * gscale as i64;
        }
        *o = Multiplier::from_le_bytes(scale).times(x_step).apply(acc);
    }
}

/// Integer square root: the largest `r` with `r² ≤ v` ([`isqrt_u64_reference`] exactly, by
/// another road). `v` scaled by an even power of two to `n ∈ [2⁶², 2⁶⁴)`: the root's top 16 bits
/// `s` are the 32-bit root of n's top word; one Newton step from `s·2¹⁶` (the quotient
/// `n / (s·2¹⁶)` from two 32-bit divisions, on the SIO divider on the device) lands on the root
/// or one above it, which one product checks. ~250 cycles on the M0+ against ~850 for the
/// bit-by-bit loop in 64-bit words.
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn isqrt_u64(v: u64) -> u64 {
    let high = (v >> 32) as u32;
    if high == 0 {
        return isqrt_u32(v as u32) as u64;
    }
    let e = leading_zeros(high) / 2;
    let n = v << (2 * e);
    let top = (n >> 32) as u32; // ≥ 2³⁰
                                // floor(√n) ∈ [s·2¹⁶, (s + 1)·2¹⁶) with s ∈ [2¹⁵, 2¹⁶).
    let s = isqrt_u32(top);
    // floor(n / (s·2¹⁶)) = floor(floor(n / 2¹⁶) / s), n / 2¹⁶ = top·2¹⁶ + (low word >> 16).
    let (q_high, rem) = div_rem_u32(top, s);
    let (q_low, _) = div_rem_u32((rem << 16) | (n as u32 >> 16), s);
    let quotient = ((q_high as u64) << 16) + q_low as u64;
    // Integer Newton never lands below floor(√n), and from 2¹⁶ below it lands at most 1 above.
    let mut root = ((((s as u64) << 16) + quotient) >> 1).min(u32::MAX as u64) as u32;
    while mul_wide_u32(root, root) > n {
        root -= 1;
    }
    (root >> e) as u64
}

/// The 32-bit integer square root, bit by bit (16 steps of shifts and compares).
#[inline]
fn isqrt_u32(v: u32) -> u32 {
    if v == 0 {
        return 0;
    }
    let mut rem = v;
    let mut root = 0u32;
    let mut bit = 1u32 << ((31 - leading_zeros(v)) & !1);
    while bit != 0 {
        if rem >= root + bit {
            rem -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    root
}

/// The plain form of [`isqrt_u64`]: the largest `r` with `r² ≤ v`, bit by bit.
pub fn isqrt_u64_reference(v: u64) -> u64 {
    if v == 0 {
        return 0;
    }
    // Bit-by-bit method: 32 iterations of shifts and adds, no divides.
    let mut rem = v;
    let mut root = 0u64;
    let mut bit = 1u64 << ((63 - v.leading_zeros()) & !1);
    while bit != 0 {
        if rem >= root + bit {
            rem -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    root
}

/// `exp(x)` for `x ≤ 0` in Q16.16, result in Q16.16 (`exp(0) = 65536`); 0 below -16.
///
/// `e^x = 2^-t` with `t = |x|·log₂e` (Q16, from two 16×16 products), then `2^-frac(t)` from
/// [`EXP2_Q30`] with linear interpolation between its 256 steps (error < 10⁻⁶ before the final
/// rounding) and a shift by the whole part. ~30 cycles on the M0+ (the degree-5 polynomial
/// it replaces, [`exp_q16_polynomial`], took ~215).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn exp_q16(x_q16: i32) -> i32 {
    if x_q16 >= 0 {
        return ONE_Q16;
    }
    if x_q16 < -(16 << 16) {
        return 0; // e^-16 < 2^-23: rounds to 0 in Q16
    }
    // t = floor(|x| · 94548 / 2¹⁶) (log₂e = 94548.46 / 2¹⁶), with 94548 = 2¹⁶ + 29012 and
    // |x| = hi·2¹⁶ + lo split so that no product passes 2³¹.
    let a = x_q16.unsigned_abs(); // < 2²⁰
    let t = a + (a >> 16) * 29_012 + (((a & 0xFFFF) * 29_012) >> 16);
    let (whole, frac) = (t >> 16, t & 0xFFFF); // whole ≤ 23
    let (at, between) = ((frac >> 8) as usize, frac & 0xFF);
    let (lo, hi) = (EXP2_Q30[at], EXP2_Q30[at + 1]);
    let p = lo - (((lo - hi) * between) >> 8); // 2^-frac in Q30, ≤ 2³⁰
    let shift = 14 + whole;
    if shift >= 32 {
        return 0;
    }
    ((p + (1 << (shift - 1))) >> shift) as i32
}

/// `round(2^(-i/256) · 2³⁰)` for `i = 0..=256`: [`exp_q16`]'s table (1 KiB).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub static EXP2_Q30: [u32; 257] = [
    1_073_741_824,
    1_070_838_486,
    1_067_942_999,
    1_065_055_341,
    1_062_175_491,
    1_059_303_428,
    1_056_439_131,
    1_053_582_579,
    1_050_733_751,
    1_047_892_626,
    1_045_059_183,
    1_042_233_401,
    1_039_415_261,
    1_036_604_740,
    1_033_801_819,
    1_031_006_477,
    1_028_218_693,
    1_025_438_448,
    1_022_665_720,
    1_019_900_489,
    1_017_142_735,
    1_014_392_438,
    1_011_649_578,
    1_008_914_134,
    1_006_186_087,
    1_003_465_416,
    1_000_752_102,
    998_046_124,
    995_347_464,
    992_656_100,
    989_972_014,
    987_295_185,
    984_625_594,
    981_963_222,
    979_308_048,
    976_660_054,
    974_019_220,
    971_385_527,
    968_758_955,
    966_139_485,
    963_527_098,
    960_921_775,
    958_323_496,
    955_732_243,
    953_147_997,
    950_570_738,
    948_000_448,
    945_437_108,
    942_880_699,
    940_331_203,
    937_788_600,
    935_252_872,
    932_724_001,
    930_201_967,
    927_686_753,
    925_178_340,
    922_676_710,
    920_181_844,
    917_693_724,
    915_212_331,
    912_737_649,
    910_269_657,
    907_808_339,
    905_353_676,
    902_905_651,
    900_464_244,
    898_029_440,
    895_601_218,
    893_179_563,
    890_764_456,
    888_355_878,
    885_953_814,
    883_558_244,
    881_169_153,
    878_786_521,
    876_410_331,
    874_040_567,
    871_677_210,
    869_320_244,
    866_969_651,
    864_625_413,
    862_287_515,
    859_955_938,
    857_630_665,
    855_311_680,
    852_998_965,
    850_692_504,
    848_392_279,
    846_098_274,
    843_810_471,
    841_528_855,
    839_253_408,
    836_984_114,
    834_720_956,
    832_463_917,
    830_212_982,
    827_968_132,
    825_729_353,
    823_496_627,
    821_269_938,
    819_049_271,
    816_834_607,
    814_625_932,
    812_423_229,
    810_226_483,
    808_035_676,
    805_850_792,
    803_671_817,
    801_498_734,
    799_331_526,
    797_170_178,
    795_014_675,
    792_865_000,
    790_721_137,
    788_583_072,
    786_450_787,
    784_324_269,
    782_203_500,
    780_088_465,
    777_979_150,
    775_875_538,
    773_777_614,
    771_685_363,
    769_598_769,
    767_517_817,
    765_442_492,
    763_372_778,
    761_308_661,
    759_250_125,
    757_197_155,
    755_149_737,
    753_107_854,
    751_071_493,
    749_040_637,
    747_015_274,
    744_995_386,
    742_980_960,
    740_971_982,
    738_968_435,
    736_970_306,
    734_977_579,
    732_990_241,
    731_008_277,
    729_031_671,
    727_060_411,
    725_094_480,
    723_133_865,
    721_178_552,
    719_228_525,
    717_283_772,
    715_344_277,
    713_410_026,
    711_481_005,
    709_557_200,
    707_638_598,
    705_725_183,
    703_816_941,
    701_913_860,
    700_015_924,
    698_123_120,
    696_235_434,
    694_352_853,
    692_475_362,
    690_602_947,
    688_735_596,
    686_873_293,
    685_016_026,
    683_163_781,
    681_316_545,
    679_474_303,
    677_637_043,
    675_804_750,
    673_977_412,
    672_155_015,
    670_337_545,
    668_524_990,
    666_717_336,
    664_914_570,
    663_116_678,
    661_323_648,
    659_535_466,
    657_752_119,
    655_973_594,
    654_199_878,
    652_430_958,
    650_666_822,
    648_907_455,
    647_152_846,
    645_402_981,
    643_657_847,
    641_917_433,
    640_181_724,
    638_450_708,
    636_724_373,
    635_002_706,
    633_285_695,
    631_573_326,
    629_865_587,
    628_162_466,
    626_463_950,
    624_770_026,
    623_080_683,
    621_395_908,
    619_715_688,
    618_040_012,
    616_368_866,
    614_702_239,
    613_040_119,
    611_382_493,
    609_729_349,
    608_080_675,
    606_436_459,
    604_796_689,
    603_161_352,
    601_530_438,
    599_903_933,
    598_281_827,
    596_664_106,
    595_050_760,
    593_441_776,
    591_837_143,
    590_236_848,
    588_640_881,
    587_049_229,
    585_461_881,
    583_878_825,
    582_300_049,
    580_725_543,
    579_155_293,
    577_589_290,
    576_027_521,
    574_469_975,
    572_916_640,
    571_367_506,
    569_822_560,
    568_281_792,
    566_745_190,
    565_212_742,
    563_684_439,
    562_160_268,
    560_640_218,
    559_124_278,
    557_612_438,
    556_104_685,
    554_601_009,
    553_101_399,
    551_605_844,
    550_114_332,
    548_626_854,
    547_143_398,
    545_663_953,
    544_188_508,
    542_717_053,
    541_249_576,
    539_786_068,
    538_326_517,
    536_870_912,
];

/// The engine's `exp` before [`exp_q16`]'s table: range reduction `e^x = 2^-n · 2^f`, then a
/// degree-5 polynomial for `2^f` in Q30 (max error 1.1·10⁻⁷ before the final rounding). Kept
/// for comparison (its accuracy is the bar the table meets).
pub fn exp_q16_polynomial(x_q16: i32) -> i32 {
    if x_q16 >= 0 {
        return ONE_Q16;
    }
    // y = x·log2(e) in Q16 (log2(e) = 1.4426950409 = 94548.46 / 2^16).
    let y = mul_wide_i32_u32(x_q16, 94_548) >> 16;
    if y < -(31 << 16) {
        return 0;
    }
    let n = (-y) >> 16; // whole powers of two to divide by... y = -n - r, so
    let r = (-y) & 0xFFFF; // e^x = 2^-n · 2^-r with r ∈ [0, 1) in Q16
    let (n, f) = if r == 0 {
        (n, 0)
    } else {
        (n + 1, (1 << 16) - r)
    }; // 2^-r = 2^-1 · 2^(1-r)
       // 2^f, f ∈ [0,1), Q30 coefficients of a minimax fit.
    let f = f << 14; // Q30
    const C: [u32; 6] = [
        1_073_741_715,
        744_268_966,
        257_850_314,
        59_979_580,
        9_609_550,
        2_033_403,
    ];
    // p < 2³¹ and f < 2³⁰ stay non-negative: each step is floor(p·f / 2³⁰) exactly.
    let f = f as u32;
    let mut p = C[5];
    for &c in C[..5].iter().rev() {
        p = mul_q30(p, f) + c;
    }
    // p is 2^f in Q30; to Q16 and divide by 2^n.
    // p < 2³¹, so p + 2^(shift-1) fits u32 and rounds to 0 once shift ≥ 32.
    let shift = 14 + n as u32;
    if shift >= 32 {
        return 0;
    }
    ((p + (1 << (shift - 1))) >> shift) as i32
}

/// `floor(p · f / 2³⁰)` for `p < 2³¹`, `f < 2³⁰`, from four 32-bit products (~15 cycles on the
/// M0+): with p = ph·2¹⁶ + pl and f = fh·2¹⁵ + fl every partial product is below 2³¹, and
/// 2·ph·fl + pl·fh + (pl·fl >> 15) < 2³² (ph, fh, fl < 2¹⁵, pl < 2¹⁶), so no sum overflows.
#[inline]
fn mul_q30(p: u32, f: u32) -> u32 {
    let (ph, pl) = (p >> 16, p & 0xFFFF);
    let (fh, fl) = (f >> 15, f & 0x7FFF);
    let middle = 2 * (ph * fl) + pl * fh + ((pl * fl) >> 15);
    2 * (ph * fh) + (middle >> 15)
}

/// `(n / d, n % d)` for `d ≠ 0` (`(u32::MAX, n)` for `d = 0`). With the `rp2040` feature on the
/// device: the core's SIO hardware divider (8 cycles; ~16 with the register traffic), against
/// ~220 for compiler-builtins' software division (rp2040-hal's divider intrinsics are off:
/// `disable-intrinsics`). Exact either way, so host and device agree.
#[inline(always)]
pub fn div_rem_u32(n: u32, d: u32) -> (u32, u32) {
    #[cfg(all(target_arch = "arm", feature = "rp2040"))]
    {
        let (quotient, remainder): (u32, u32);
        // SAFETY: the SIO divider of the running core (SIO base 0xd0000000: UDIVIDEND 0x60,
        // UDIVISOR 0x64, QUOTIENT 0x70, REMAINDER 0x74). Writing the divisor starts it; the
        // result is ready 8 cycles later (four taken branches); reading the quotient last marks
        // it consumed. No interrupt handler of the firmware uses the divider.
        unsafe {
            core::arch::asm!(
                "str {n}, [{sio}, #0x60]",
                "str {d}, [{sio}, #0x64]",
                "b 1f",
                "1: b 1f",
                "1: b 1f",
                "1: b 1f",
                "1: ldr {r}, [{sio}, #0x74]",
                "ldr {q}, [{sio}, #0x70]",
                sio = in(reg) 0xd000_0000u32,
                n = in(reg) n,
                d = in(reg) d,
                q = lateout(reg) quotient,
                r = out(reg) remainder,
                options(nostack, preserves_flags),
            );
        }
        (quotient, remainder)
    }
    #[cfg(not(all(target_arch = "arm", feature = "rp2040")))]
    {
        match (n.checked_div(d), n.checked_rem(d)) {
            (Some(q), Some(r)) => (q, r),
            _ => (u32::MAX, n),
        }
    }
}

/// `round(σ(i/16) · 2¹⁶)` for `i = 0..=256` (x from 0 to 16 in steps of 1/16): [`sigmoid_q16`]'s
/// table (1 KiB; generated with Python's `math.exp`).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub static SIGMOID_Q16: [u32; 257] = [
    32_768, 33_792, 34_813, 35_831, 36_843, 37_847, 38_841, 39_824, 40_793, 41_748, 42_687, 43_608,
    44_511, 45_393, 46_254, 47_094, 47_911, 48_704, 49_474, 50_220, 50_941, 51_638, 52_310, 52_957,
    53_581, 54_179, 54_754, 55_306, 55_834, 56_339, 56_822, 57_284, 57_724, 58_144, 58_544, 58_925,
    59_287, 59_632, 59_959, 60_270, 60_565, 60_844, 61_109, 61_360, 61_598, 61_823, 62_036, 62_238,
    62_428, 62_608, 62_778, 62_938, 63_090, 63_233, 63_368, 63_495, 63_615, 63_728, 63_835, 63_935,
    64_030, 64_119, 64_203, 64_283, 64_357, 64_427, 64_494, 64_556, 64_614, 64_669, 64_721, 64_770,
    64_816, 64_859, 64_900, 64_938, 64_974, 65_008, 65_039, 65_069, 65_097, 65_124, 65_149, 65_172,
    65_194, 65_215, 65_234, 65_252, 65_269, 65_285, 65_300, 65_315, 65_328, 65_341, 65_352, 65_364,
    65_374, 65_384, 65_393, 65_402, 65_410, 65_417, 65_425, 65_431, 65_438, 65_444, 65_449, 65_454,
    65_459, 65_464, 65_468, 65_472, 65_476, 65_480, 65_483, 65_486, 65_489, 65_492, 65_495, 65_497,
    65_500, 65_502, 65_504, 65_506, 65_508, 65_509, 65_511, 65_513, 65_514, 65_515, 65_517, 65_518,
    65_519, 65_520, 65_521, 65_522, 65_523, 65_523, 65_524, 65_525, 65_526, 65_526, 65_527, 65_527,
    65_528, 65_528, 65_529, 65_529, 65_530, 65_530, 65_530, 65_531, 65_531, 65_531, 65_532, 65_532,
    65_532, 65_532, 65_533, 65_533, 65_533, 65_533, 65_533, 65_534, 65_534, 65_534, 65_534, 65_534,
    65_534, 65_534, 65_534, 65_535, 65_535, 65_535, 65_535, 65_535, 65_535, 65_535, 65_535, 65_535,
    65_535, 65_535, 65_535, 65_535, 65_535, 65_535, 65_535, 65_535, 65_535, 65_536, 65_536, 65_536,
    65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536,
    65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536,
    65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536,
    65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536,
    65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536,
    65_536, 65_536, 65_536, 65_536, 65_536,
];

/// The logistic sigmoid of a Q16.16 value, in Q16.16: [`SIGMOID_Q16`] interpolated linearly
/// between its two entries around `|x|` (error < 6·10⁻⁵ in σ: the step is 1/16 and
/// `|σ''| < 0.1`), 1.0 from 16 on, `σ(−x) = 1 − σ(x)`. No divide (until issue #11 it was
/// `e/(1 + e)` from the `exp` table and one divide, ~90 cycles an element on the M0+).
#[inline(always)]
pub fn sigmoid_q16(x_q16: i32) -> i32 {
    let a = x_q16.unsigned_abs();
    let s = if a >= 16 << 16 {
        ONE_Q16 as u32
    } else {
        let (i, f) = ((a >> 12) as usize, a & 0xFFF);
        let (lo, hi) = (SIGMOID_Q16[i], SIGMOID_Q16[i + 1]);
        lo + (((hi - lo) * f + (1 << 11)) >> 12) // hi − lo ≤ 1024
    };
    if x_q16 >= 0 {
        s as i32
    } else {
        ONE_Q16 - s as i32
    }
}

/// `silu(x) = x · σ(x)` in Q16.16, `floor(x · σ / 2¹⁶)` exactly: with `x = xh · 2¹⁶ + xl`
/// that is `xh · σ + (xl · σ) >> 16` (σ ≤ 2¹⁶, so both products fit their words: two MULS).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
#[inline(always)]
pub fn silu_q16(x_q16: i32) -> i32 {
    let s = sigmoid_q16(x_q16);
    let (xh, xl) = (x_q16 >> 16, (x_q16 as u32) & 0xFFFF);
    xh.wrapping_mul(s)
        .wrapping_add((xl.wrapping_mul(s as u32) >> 16) as i32)
}

/// `v[i] = silu_q16(v[i])` for every element ([`silu_q16_reference`] bit for bit: a table and
/// two multiplies each, no divide).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn silu_in_place(v: &mut [i32]) {
    #[cfg(all(target_arch = "arm", feature = "rp2040"))]
    if !v.is_empty() {
        // SAFETY: v holds v.len() ≥ 1 words, read and written once each; the routine reads
        // SIGMOID_Q16 at indices ≤ 256.
        unsafe { silu_thumb(v.as_mut_ptr(), v.len(), SIGMOID_Q16.as_ptr()) };
        return;
    }
    v.iter_mut().for_each(|h| *h = silu_q16(*h));
}

/// `v[i] = mul_q16(silu_q16(v[i]), gate[i])`: SwiGLU's gated activation, in place
/// ([`silu_gate_reference`] bit for bit). Elements beyond `gate` are left alone.
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn silu_gate_in_place(v: &mut [i32], gate: &[i32]) {
    let n = v.len().min(gate.len());
    let v = &mut v[..n];
    #[cfg(all(target_arch = "arm", feature = "rp2040"))]
    if n > 0 {
        // SAFETY: v and gate hold n ≥ 1 words each; the routine reads gate[..n], reads and
        // writes v[..n] once each and reads SIGMOID_Q16 at indices ≤ 256.
        unsafe { silu_gate_thumb(v.as_mut_ptr(), n, SIGMOID_Q16.as_ptr(), gate.as_ptr()) };
        return;
    }
    for (h, &g) in v.iter_mut().zip(gate) {
        *h = mul_q16(silu_q16(*h), g);
    }
}

#[cfg(all(target_arch = "arm", feature = "rp2040"))]
extern "C" {
    /// [`silu_in_place`] of `n ≥ 1` values at `v`, with `table` = [`SIGMOID_Q16`].
    fn silu_thumb(v: *mut i32, n: usize, table: *const u32);
    /// [`silu_gate_in_place`] of `n ≥ 1` values at `v` and `gate`, with `table` =
    /// [`SIGMOID_Q16`].
    fn silu_gate_thumb(v: *mut i32, n: usize, table: *const u32, gate: *const i32);
}

/// One element of [`silu_thumb`] / [`silu_gate_thumb`], as [`silu_q16`]: x at r0 (not
/// advanced) to silu(x) in r6, r3 the table; r2, r4, r5, r7 scratch. σ(|x|) is the table's
/// two entries around |x| interpolated ((d·f >> 11) + 1) >> 1 = (d·f + 2^11) >> 12), 1.0 from
/// 16 on; 1 − that for a negative x; then xh·σ + (xl·σ) >> 16.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! SILU_ELEMENT {
    () => {
        concat!(
            "ldr r2, [r0]\n",
            "asrs r7, r2, #31\n", // 0, or −1 for a negative x
            "mov r4, r2\n",
            "eors r4, r7\n",
            "subs r4, r4, r7\n", // |x| (2^31 for i32::MIN)
            "lsrs r5, r4, #20\n",
            "bne 5f\n", // |x| ≥ 16: σ = 1.0
            "lsrs r5, r4, #12\n",
            "lsls r5, r5, #2\n",
            "adds r5, r3, r5\n",
            "ldm r5, {{r5, r6}}\n", // lo, hi
            "subs r6, r6, r5\n",
            "lsls r4, r4, #20\n",
            "lsrs r4, r4, #20\n", // f = |x| & 0xFFF
            "muls r6, r4, r6\n",
            "lsrs r6, r6, #11\n",
            "adds r6, #1\n",
            "lsrs r6, r6, #1\n",
            "adds r6, r5, r6\n", // σ(|x|)
            "6:\n",
            "cmp r7, #0\n",
            "beq 7f\n",
            "movs r5, #1\n",
            "lsls r5, r5, #16\n",
            "subs r6, r5, r6\n", // σ(x) = 1 − σ(|x|)
            "7:\n",
            "asrs r5, r2, #16\n", // x hi, signed
            "uxth r2, r2\n",      // x lo
            "muls r5, r6, r5\n",
            "muls r2, r6, r2\n",
            "lsrs r2, r2, #16\n",
            "adds r6, r5, r2\n",
        )
    };
}

/// [`SILU_ELEMENT`]'s σ = 1.0 for |x| ≥ 16, back at its label 6.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
macro_rules! SILU_SATURATED {
    () => {
        concat!("5:\n", "movs r6, #1\n", "lsls r6, r6, #16\n", "b 6b\n",)
    };
}

// r0 v (advancing), r3 the table, r9 the end. rp2040js: see kernels in docs/benchmarks.md.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
core::arch::global_asm!(
    ".section .data.ramfunc.silu_thumb,\"ax\",%progbits",
    ".global silu_thumb",
    ".type silu_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "silu_thumb:",
    "push {{r4-r7, lr}}",
    "mov r4, r9",
    "push {{r4}}",
    "mov r3, r2",
    "lsls r1, r1, #2",
    "adds r1, r0, r1",
    "mov r9, r1",
    "1:",
    SILU_ELEMENT!(),
    "stm r0!, {{r6}}",
    "cmp r0, r9",
    "bne 1b",
    "pop {{r4}}",
    "mov r9, r4",
    "pop {{r4-r7, pc}}",
    SILU_SATURATED!(),
    ".size silu_thumb, . - silu_thumb",
);

// silu_thumb's element, then mul_q16 by the gate word at the same index (r10 = gate − v in
// bytes): the signed 64-bit product from both values' signed high and unsigned low halves (four
// MULS, two signed middle products), + 2^15, >> 16 across the words, saturated unless the high
// word is in −2^15..2^15.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
core::arch::global_asm!(
    ".section .data.ramfunc.silu_gate_thumb,\"ax\",%progbits",
    ".global silu_gate_thumb",
    ".type silu_gate_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "silu_gate_thumb:",
    "push {{r4-r7, lr}}",
    "mov r4, r9",
    "mov r5, r10",
    "push {{r4, r5}}",
    "subs r3, r3, r0",
    "mov r10, r3", // gate − v
    "mov r3, r2",
    "lsls r1, r1, #2",
    "adds r1, r0, r1",
    "mov r9, r1",
    "1:",
    SILU_ELEMENT!(),
    // r6 = silu(x); mul_q16(r6, gate)
    "mov r2, r10",
    "ldr r5, [r0, r2]",
    "asrs r4, r6, #16", // a hi, signed
    "uxth r6, r6",      // a lo
    "asrs r7, r5, #16", // g hi, signed
    "uxth r5, r5",      // g lo
    "mov r2, r4",
    "muls r2, r7", // hi·hi
    "muls r4, r5", // a hi · g lo (signed)
    "muls r7, r6", // g hi · a lo (signed)
    "muls r6, r5", // lo·lo
    "lsls r5, r4, #16",
    "asrs r4, r4, #16",
    "adds r6, r6, r5",
    "adcs r2, r4",
    "lsls r5, r7, #16",
    "asrs r7, r7, #16",
    "adds r6, r6, r5",
    "adcs r2, r7", // (r2:r6) = a · g
    "movs r5, #1",
    "lsls r5, r5, #15",
    "adds r6, r6, r5",
    "movs r5, #0",
    "adcs r2, r5", // + 2^15
    "asrs r5, r2, #15",
    "adds r5, #1",
    "cmp r5, #1",
    "bhi 2f", // (a·g + 2^15) >> 16 outside i32
    "lsls r2, r2, #16",
    "lsrs r6, r6, #16",
    "orrs r6, r2",
    "3:",
    "stm r0!, {{r6}}",
    "cmp r0, r9",
    "beq 4f",
    "b 1b", // beyond a conditional branch's reach
    // saturated: i32::MAX, or i32::MIN for a negative product
    "2:",
    "asrs r6, r2, #31",
    "movs r5, #1",
    "lsls r5, r5, #31",
    "mvns r5, r5",
    "eors r6, r5",
    "b 3b",
    "4:",
    "pop {{r4, r5}}",
    "mov r9, r4",
    "mov r10, r5",
    "pop {{r4-r7, pc}}",
    SILU_SATURATED!(),
    ".size silu_gate_thumb, . - silu_gate_thumb",
);

/// The plain form of [`silu_q16`]: the 64-bit product `x · σ(x)`, floored.
pub fn silu_q16_reference(x_q16: i32) -> i32 {
    (mul_wide_i32(x_q16, sigmoid_q16(x_q16)) >> 16) as i32
}

/// The plain form of [`silu_gate_in_place`]: [`mul_q16`] of [`silu_q16_reference`] per element.
pub fn silu_gate_reference(v: &mut [i32], gate: &[i32]) {
    for (h, &g) in v.iter_mut().zip(gate) {
        *h = mul_q16(silu_q16_reference(*h), g);
    }
}

/// `a · b` of two Q16.16 values, saturated.
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn mul_q16(a: i32, b: i32) -> i32 {
    let prod = (mul_wide_i32(a, b) + (1 << 15)) >> 16;
    prod.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// RMSNorm in place of `out`: `out = x / sqrt(mean(x²) + eps) · g`, all Q16.16; `gain` holds one
/// little-endian `i32` Q16.16 per element. eps = 1e-5 as in the float model.
/// ([`rmsnorm_reference`] bit for bit, the gains read as words when they are word-aligned.)
///
/// Per element `x · (g · 1/rms)` ([`GainPlan`]): the gain times `1/rms`'s top 15 bits in one
/// `MULS` (to 16 bits), then `x` times that from `x`'s two halves (two `MULS`) and a shift:
/// within about 2⁻¹³ of each output (and a few Q16 units), against two 32×32→64 products
/// until issue #11 (`Multiplier::apply_i32(mul_q16(x, g))`, ~100 cycles an element on the M0+).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn rmsnorm(out: &mut [i32], x: &[i32], gain: &[u8]) {
    let inv = rmsnorm_multiplier(x.len(), sum_squares(x));
    let n = out.len().min(x.len()).min(gain.len() / 4);
    let (out, x) = (&mut out[..n], &x[..n]);
    if (gain.as_ptr() as usize).is_multiple_of(4) {
        // SAFETY: gain holds ≥ 4n bytes from a 4-byte aligned start: n little-endian words
        // (as i32::from_le_bytes reads them: every target here is little-endian).
        let words = unsafe { core::slice::from_raw_parts(gain.as_ptr().cast::<i32>(), n) };
        let plan = GainPlan::new(inv, max_abs_of(x), max_abs_of(words));
        #[cfg(all(target_arch = "arm", feature = "rp2040"))]
        if plan.e < 0 && n > 0 {
            // The usual case (outputs of a few units want e ≈ −14): GainPlan::apply's rounding
            // branch in Thumb, ~31 cycles an element against ~52 compiled (it spills).
            let params = [plan.xu, plan.gs, plan.inv15, plan.down()];
            // SAFETY: out, x and words hold n ≥ 1 words each; the routine reads x[..n],
            // words[..n] and the four words of params, and writes out[..n].
            unsafe {
                rmsnorm_gain_thumb(
                    out.as_mut_ptr(),
                    x.as_ptr(),
                    words.as_ptr(),
                    n,
                    params.as_ptr(),
                )
            };
            return;
        }
        for ((o, &v), &g) in out.iter_mut().zip(x).zip(words) {
            *o = plan.apply(v, g);
        }
        return;
    }
    rmsnorm_with(inv, out, x, gain);
}

/// The plain form of [`rmsnorm`].
pub fn rmsnorm_reference(out: &mut [i32], x: &[i32], gain: &[u8]) {
    let inv = rmsnorm_multiplier(x.len(), sum_squares_reference(x));
    let n = out.len().min(x.len()).min(gain.len() / 4);
    rmsnorm_with(inv, &mut out[..n], &x[..n], gain);
}

/// [`rmsnorm`]'s elements with `1/rms` = `inv`, the gains read byte by byte.
fn rmsnorm_with(inv: Multiplier, out: &mut [i32], x: &[i32], gain: &[u8]) {
    let g = |c: &[u8]| i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    let max_g = gain
        .chunks_exact(4)
        .take(x.len())
        .map(|c| g(c).unsigned_abs())
        .max()
        .unwrap_or(0)
        .min(i32::MAX as u32);
    let plan = GainPlan::new(inv, max_abs_reference(x), max_g);
    for ((o, &v), c) in out.iter_mut().zip(x).zip(gain.chunks_exact(4)) {
        *o = plan.apply(v, g(c));
    }
}

/// How [`rmsnorm`] forms `x · g · inv` for one call: `G = ((|g| >> gs) · inv15) >> 16` (< 2¹⁶:
/// `|g| >> gs` < 2¹⁷ for the vector's largest gain, `inv15` = `inv.mant`'s top 15 bits, rounded,
/// ≤ 2¹⁵); `x' = x << xu`, the vector's largest magnitude brought to 31 bits; `P = floor(x' · G
/// / 2¹⁶)` = `(x' >> 16) · G + ((x' & 0xFFFF) · G) >> 16` (each product fits its word), and the
/// output `P · 2^e`, `e = 32 + gs − xu − inv.shift` (rounded when `e < 0`, saturated when `e >
/// 0`), negated for a negative gain.
#[derive(Clone, Copy, Debug)]
struct GainPlan {
    gs: u32,
    xu: u32,
    inv15: u32,
    e: i32,
}

impl GainPlan {
    #[inline(always)]
    fn new(inv: Multiplier, max_x: u32, max_g: u32) -> GainPlan {
        let gs = (32 - leading_zeros(max_g)).saturating_sub(17);
        let xu = leading_zeros(max_x).saturating_sub(1).min(30);
        GainPlan {
            gs,
            xu,
            inv15: ((inv.mant & 0x7FFF_FFFF) + (1 << 15)) >> 16,
            e: (32 + gs as i32 - xu as i32).saturating_sub(inv.shift),
        }
    }

    /// The rounding shift less one of `e < 0`: `P · 2^e` rounded is `((P >> down) + 1) >> 1`.
    #[inline(always)]
    fn down(self) -> u32 {
        (-self.e - 1).clamp(0, 31) as u32
    }

    #[inline(always)]
    fn apply(self, v: i32, g: i32) -> i32 {
        // P, from |g|: the sign comes after.
        let big = ((g.unsigned_abs() >> self.gs) * self.inv15) >> 16;
        let v = v << self.xu;
        let (xh, xl) = (v >> 16, (v as u32) & 0xFFFF);
        let p = xh * big as i32 + ((xl * big) >> 16) as i32;
        let y = if self.e >= 0 {
            ((p as i64) << self.e.min(32)).clamp(i32::MIN as i64, i32::MAX as i64) as i32
        } else {
            ((p >> self.down()) + 1) >> 1
        };
        if g < 0 {
            y.saturating_neg()
        } else {
            y
        }
    }
}

#[cfg(all(target_arch = "arm", feature = "rp2040"))]
extern "C" {
    /// [`GainPlan::apply`] for `e < 0` of `n ≥ 1` elements: `out[i] = apply(x[i], g[i])` with
    /// `params = [xu, gs, inv15, down]` (xu, gs, down ≤ 31).
    fn rmsnorm_gain_thumb(
        out: *mut i32,
        x: *const i32,
        g: *const i32,
        n: usize,
        params: *const u32,
    );
}

// Per element, as GainPlan::apply: x' = x << xu; big = ((|g| >> gs) · inv15) >> 16; P = xh·big +
// ((xl·big) >> 16) of x' = xh·2^16 + xl; ((P >> down) + 1) >> 1, then negated when g < 0 (the
// sign mask of g: y ^ m − m; y ≥ −2^30, so no saturation). r0 out, r1 x, r2 g (advancing),
// r3–r7 scratch (r7 the mask), r8 xu, r9 gs, r10 inv15, r11 down, r12 the end of x. ~31 cycles
// an element.
#[cfg(all(target_arch = "arm", feature = "rp2040"))]
core::arch::global_asm!(
    ".section .data.ramfunc.rmsnorm_gain_thumb,\"ax\",%progbits",
    ".global rmsnorm_gain_thumb",
    ".type rmsnorm_gain_thumb,%function",
    ".thumb_func",
    ".p2align 2",
    "rmsnorm_gain_thumb:",
    "push {{r4-r7, lr}}",
    "mov r4, r8",
    "mov r5, r9",
    "mov r6, r10",
    "mov r7, r11",
    "push {{r4-r7}}",
    "ldr r4, [sp, #36]", // params: the fifth argument, above the nine saved registers
    "ldm r4!, {{r5, r6, r7}}",
    "mov r8, r5",
    "mov r9, r6",
    "mov r10, r7",
    "ldr r5, [r4]",
    "mov r11, r5",
    "lsls r3, r3, #2",
    "adds r3, r1, r3",
    "mov r12, r3",
    "1:",
    "ldm r1!, {{r4}}",
    "mov r6, r8",
    "lsls r4, r6", // x'
    "ldm r2!, {{r5}}",
    "asrs r7, r5, #31",
    "eors r5, r7",
    "subs r5, r5, r7", // |g|
    "mov r6, r9",
    "lsrs r5, r6",
    "mov r6, r10",
    "muls r5, r6, r5",
    "lsrs r5, r5, #16", // big
    "asrs r3, r4, #16", // xh
    "uxth r4, r4",      // xl
    "muls r3, r5, r3",
    "muls r4, r5, r4",
    "lsrs r4, r4, #16",
    "adds r3, r3, r4", // P
    "mov r6, r11",
    "asrs r3, r6",
    "adds r3, #1",
    "asrs r3, r3, #1",
    "eors r3, r7",
    "subs r3, r3, r7",
    "stm r0!, {{r3}}",
    "cmp r1, r12",
    "bne 1b",
    "pop {{r4-r7}}",
    "mov r8, r4",
    "mov r9, r5",
    "mov r10, r6",
    "mov r11, r7",
    "pop {{r4-r7, pc}}",
    ".size rmsnorm_gain_thumb, . - rmsnorm_gain_thumb",
);

/// RMSNorm's `1 / sqrt(mean(x²) + eps)` as a multiplier of Q16.16 values, from the width `len`
/// and `sum_sq` = Σx² in Q32 ([`sum_squares`]: u64, each term ≤ 2⁶², at most 4096 of them would
/// overflow only for |x| > 2¹⁵ everywhere; the sum saturates): [`rsqrt_multiplier`].
#[inline(always)]
fn rmsnorm_multiplier(len: usize, sum_sq: u64) -> Multiplier {
    let n = len.max(1) as u64;
    // eps = 1e-5 in Q32 is 42950. A power-of-two width (the usual) divides by a shift, any other
    // by three 32-bit divisions, not __aeabi_uldivmod.
    let mean = if n.is_power_of_two() {
        shr_u64(sum_sq, n.trailing_zeros())
    } else if n < 1 << 16 {
        div_u64_by_u16(sum_sq, n as u32)
    } else {
        sum_sq / n
    };
    rsqrt_multiplier(mean.saturating_add(42_950))
}

/// `v >> s` (`s < 64`) from 32-bit shifts (a u64 shift by a variable amount is a library call
/// on the M0+).
#[inline(always)]
fn shr_u64(v: u64, s: u32) -> u64 {
    let (hi, lo) = ((v >> 32) as u32, v as u32);
    let (hi, lo) = match s {
        0 => (hi, lo),
        1..=31 => (hi >> s, (lo >> s) | (hi << (32 - s))),
        32..=63 => (0, hi >> (s - 32)),
        _ => (0, 0),
    };
    ((hi as u64) << 32) | lo as u64
}

/// `round(2³⁰ / √(1 + i/64))` for `i = 0..=192` (1 ≤ u ≤ 4): [`rsqrt_multiplier`]'s table
/// (772 bytes; generated with Python's `math.sqrt`).
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub static RSQRT_Q30: [u32; 193] = [
    1_073_741_824,
    1_065_450_257,
    1_057_347_856,
    1_049_427_536,
    1_041_682_578,
    1_034_106_604,
    1_026_693_558,
    1_019_437_682,
    1_012_333_500,
    1_005_375_799,
    998_559_613,
    991_880_210,
    985_333_074,
    978_913_898,
    972_618_566,
    966_443_148,
    960_383_883,
    954_437_177,
    948_599_586,
    942_867_814,
    937_238_702,
    931_709_222,
    926_276_469,
    920_937_655,
    915_690_104,
    910_531_246,
    905_458_609,
    900_469_818,
    895_562_589,
    890_734_723,
    885_984_104,
    881_308_694,
    876_706_528,
    872_175_715,
    867_714_429,
    863_320_910,
    858_993_459,
    854_730_438,
    850_530_263,
    846_391_405,
    842_312_387,
    838_291_779,
    834_328_203,
    830_420_321,
    826_566_842,
    822_766_514,
    819_018_128,
    815_320_510,
    811_672_525,
    808_073_073,
    804_521_086,
    801_015_531,
    797_555_404,
    794_139_734,
    790_767_575,
    787_438_013,
    784_150_157,
    780_903_145,
    777_696_137,
    774_528_319,
    771_398_898,
    768_307_107,
    765_252_196,
    762_233_438,
    759_250_125,
    756_301_570,
    753_387_102,
    750_506_070,
    747_657_839,
    744_841_792,
    742_057_327,
    739_303_858,
    736_580_814,
    733_887_640,
    731_223_792,
    728_588_743,
    725_981_977,
    723_402_992,
    720_851_298,
    718_326_417,
    715_827_883,
    713_355_240,
    710_908_045,
    708_485_864,
    706_088_274,
    703_714_861,
    701_365_222,
    699_038_963,
    696_735_698,
    694_455_052,
    692_196_655,
    689_960_150,
    687_745_184,
    685_551_414,
    683_378_504,
    681_226_125,
    679_093_957,
    676_981_684,
    674_889_000,
    672_815_603,
    670_761_200,
    668_725_501,
    666_708_225,
    664_709_095,
    662_727_842,
    660_764_199,
    658_817_909,
    656_888_716,
    654_976_372,
    653_080_633,
    651_201_261,
    649_338_020,
    647_490_682,
    645_659_022,
    643_842_818,
    642_041_856,
    640_255_922,
    638_484_810,
    636_728_315,
    634_986_237,
    633_258_380,
    631_544_551,
    629_844_563,
    628_158_229,
    626_485_368,
    624_825_801,
    623_179_354,
    621_545_853,
    619_925_131,
    618_317_022,
    616_721_362,
    615_137_993,
    613_566_757,
    612_007_499,
    610_460_069,
    608_924_318,
    607_400_100,
    605_887_270,
    604_385_689,
    602_895_216,
    601_415_717,
    599_947_056,
    598_489_102,
    597_041_726,
    595_604_800,
    594_178_200,
    592_761_802,
    591_355_485,
    589_959_130,
    588_572_620,
    587_195_840,
    585_828_677,
    584_471_019,
    583_122_756,
    581_783_781,
    580_453_988,
    579_133_272,
    577_821_530,
    576_518_662,
    575_224_566,
    573_939_147,
    572_662_306,
    571_393_950,
    570_133_983,
    568_882_316,
    567_638_856,
    566_403_514,
    565_176_202,
    563_956_835,
    562_745_326,
    561_541_591,
    560_345_548,
    559_157_115,
    557_976_212,
    556_802_759,
    555_636_678,
    554_477_894,
    553_326_329,
    552_181_909,
    551_044_561,
    549_914_212,
    548_790_791,
    547_674_226,
    546_564_450,
    545_461_392,
    544_364_986,
    543_275_165,
    542_191_864,
    541_115_017,
    540_044_561,
    538_980_433,
    537_922_570,
    536_870_912,
];

/// `2¹⁶ / √v` for `v` ≥ 1 in Q32 (the multiplier that takes a Q16.16 value `x` to `x / √v` in
/// Q16.16, with a 31-bit mantissa): `v` normalised by an even shift to `m = u · 2²⁸`, `1 ≤ u <
/// 4`, and [`RSQRT_Q30`] interpolated at `u` (relative error < 6·10⁻⁵: it scales a whole
/// vector, which the quantiser that follows divides out). Until issue #11 this was an integer
/// square root and a reciprocal (~500 cycles on the M0+, against ~60).
#[inline(always)]
pub fn rsqrt_multiplier(v: u64) -> Multiplier {
    let v = v.max(1);
    let (hi, lo) = ((v >> 32) as u32, v as u32);
    let bits = if hi != 0 {
        64 - leading_zeros(hi)
    } else {
        32 - leading_zeros(lo)
    } as i32;
    // The even shift that brings v to 29 or 30 bits.
    let sh = (bits - 29) & !1;
    let m = if sh >= 0 {
        shr_u64(v, sh as u32) as u32
    } else {
        lo << -sh
    };
    let i = ((m >> 22) - 64) as usize;
    let f = (m >> 14) & 0xFF;
    let (a, b) = (RSQRT_Q30[i], RSQRT_Q30[i + 1]);
    let t = a - (((a - b) * f) >> 8); // in (2²⁹, 2³⁰]; (a − b) < 2²³
    let shift = 28 + sh / 2;
    if t < 1 << 30 {
        Multiplier {
            mant: t << 1,
            shift: shift + 1,
        }
    } else {
        Multiplier { mant: t, shift }
    }
}

/// `v / d` for `1 ≤ d < 2¹⁶` from three 32-bit divisions ([`div_rem_u32`]: the SIO divider on
/// the device), each partial remainder `< d` so that `remainder·2¹⁶ + 16 bits` fits `u32`
/// (~60 cycles on the M0+, against ~1,000 for `__aeabi_uldivmod`).
#[inline]
fn div_u64_by_u16(v: u64, d: u32) -> u64 {
    let (q_high, rem) = div_rem_u32((v >> 32) as u32, d);
    let low = v as u32;
    let (q_mid, rem) = div_rem_u32((rem << 16) | (low >> 16), d);
    let (q_low, _) = div_rem_u32((rem << 16) | (low & 0xFFFF), d);
    ((q_high as u64) << 32) | ((q_mid as u64) << 16) | q_low as u64
}

/// Index and value of the largest element (the first on ties); `(0, i32::MIN)` when empty.
#[cfg_attr(
    all(target_arch = "arm", feature = "rp2040"),
    link_section = ".data.ramfunc"
)]
pub fn argmax(values: &[i32]) -> (usize, i32) {
    let mut best = (0, i32::MIN);
    for (i, &v) in values.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_multiplies_are_exact() {
        let mut r = 0x1234_5678_9ABC_DEF0u64;
        let edges = [
            0u32,
            1,
            0xFFFF,
            0x1_0000,
            0x7FFF_FFFF,
            0x8000_0000,
            u32::MAX,
        ];
        for i in 0..20_000 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            let (a, b) = if i < 49 {
                (edges[i % 7], edges[i / 7])
            } else {
                (r as u32, (r >> 32) as u32)
            };
            assert_eq!(mul_wide_u32(a, b), a as u64 * b as u64);
            assert_eq!(
                mul_wide_i32(a as i32, b as i32),
                a as i32 as i64 * b as i32 as i64
            );
            let m = Multiplier {
                mant: b & 0x7FFF_FFFF,
                shift: (a % 70) as i32 - 4,
            };
            let v = a as i32 as i64;
            let product = v * m.mant as i64;
            let want = if m.shift <= 0 {
                (product << -m.shift).clamp(i32::MIN as i64, i32::MAX as i64) as i32
            } else if m.shift >= 63 {
                0
            } else {
                ((product + (1i64 << (m.shift - 1))) >> m.shift)
                    .clamp(i32::MIN as i64, i32::MAX as i64) as i32
            };
            if m.shift > 0 || product.unsigned_abs() < 1 << 40 {
                assert_eq!(m.apply(v), want, "{v} {m:?}");
                assert_eq!(m.apply_i32(a as i32), want, "{v} {m:?}");
            }
        }
    }

    /// act_shift is the smallest k with max ≤ 2047 · 2^k, for every bit length and its edges.
    #[test]
    fn act_shift_is_the_smallest_power_that_holds_the_max() {
        let holds = |max: u32, k: i32| (max as u64) <= (2047u64 << (k + 11)) >> 11;
        for bits in 1..=31 {
            let top = if bits == 31 {
                i32::MAX as u32
            } else {
                (1u32 << bits) - 1
            };
            for max in [
                1u32 << (bits - 1),
                (1 << (bits - 1)) + 1,
                top,
                top - top / 3,
            ] {
                let max = max.clamp(1, i32::MAX as u32);
                let k = act_shift(max);
                assert!((-10..=21).contains(&k), "{max} {k}");
                assert!(holds(max, k) && !holds(max, k - 1), "{max} {k}");
            }
        }
        for max in [
            2046,
            2047,
            2048,
            4094,
            4095,
            4096,
            2047 << 20,
            (2047 << 20) + 1,
        ] {
            let k = act_shift(max);
            assert!(holds(max, k) && !holds(max, k - 1), "{max} {k}");
        }
    }

    /// quantize_act (shifts) equals its reference (a multiplier of 2^−k through apply_i32) on
    /// random vectors of every magnitude, the extremes and all-zero vectors included; the
    /// values fill 1024..=2047 at the max.
    #[test]
    fn quantize_act_is_its_reference() {
        let mut r = 0x0DDB_1A5E_5BAD_5EEDu64;
        for case in 0..6000usize {
            let n = 1 + case % 37;
            let bits = 1 + (case / 37) % 32;
            let mut x: std::vec::Vec<i32> = (0..n)
                .map(|_| {
                    r ^= r << 13;
                    r ^= r >> 7;
                    r ^= r << 17;
                    if bits == 32 {
                        r as i32
                    } else {
                        (r as i32) >> (32 - bits)
                    }
                })
                .collect();
            match case % 11 {
                0 => x[0] = i32::MIN,
                1 => x[n - 1] = i32::MAX,
                2 => x.iter_mut().for_each(|v| *v = 0),
                _ => {}
            }
            let (mut got, mut want) = (std::vec![7; n], std::vec![-7; n]);
            let max = quantize_act(&x, &mut got);
            assert_eq!(max, quantize_act_reference(&x, &mut want), "case {case}");
            assert_eq!(got, want, "case {case}: {x:?}");
            if let Ok(x4) = <&[i32; 4]>::try_from(&x[..n.min(4)]) {
                let (mut got4, mut want4) = ([7; 4], [-7; 4]);
                let max4 = quantize_act_reference(x4, &mut want4);
                assert_eq!(quantize_act4(x4, &mut got4), max4, "case {case}");
                assert_eq!(got4, want4, "case {case}: {x4:?}");
            }
            let peak = got.iter().map(|v| v.unsigned_abs()).max().unwrap();
            if max != 0 {
                assert!((1023..=2047).contains(&peak), "case {case}: {peak}");
            } else {
                assert_eq!(peak, 0);
            }
            // The step reconstructs the vector to within half a step.
            let step = act_step(max);
            for (&v, &q) in x.iter().zip(&got) {
                let back = step.apply(q as i64) as i64;
                let half = (1i64 << (30 - step.shift).max(0)) / 2 + 1;
                assert!(
                    (back - v as i64).abs() <= half,
                    "case {case}: {v} {q} {step:?}"
                );
            }
        }
    }

    /// quantize_kv (shifts into i16) equals its reference and quantize_act's values narrowed.
    #[test]
    fn quantize_kv_is_its_reference() {
        let mut r = 0x05EE_D0FC_AC4E_u64;
        for case in 0..4000usize {
            let n = 1 + case % 70;
            let bits = 1 + (case / 70) % 32;
            let mut x: std::vec::Vec<i32> = (0..n)
                .map(|_| {
                    r ^= r << 13;
                    r ^= r >> 7;
                    r ^= r << 17;
                    if bits == 32 {
                        r as i32
                    } else {
                        (r as i32) >> (32 - bits)
                    }
                })
                .collect();
            if case % 13 == 0 {
                x[0] = i32::MIN;
            }
            let (mut got, mut want) = (std::vec![5i16; n], std::vec![-5i16; n]);
            let mut wide = std::vec![0i32; n];
            let max = quantize_kv(&x, &mut got);
            assert_eq!(max, quantize_kv_reference(&x, &mut want), "case {case}");
            assert_eq!(got, want, "case {case}");
            assert_eq!(max, quantize_act(&x, &mut wide));
            assert!(
                got.iter().zip(&wide).all(|(&a, &b)| a as i32 == b),
                "case {case}"
            );
        }
    }

    /// The embedding row's dequantisation: apply_i32 of w·2¹⁶ is apply's result.
    #[test]
    fn apply_i32_of_an_int8_weight_is_apply() {
        let mut r = 0x2545_F491u32;
        for case in 0..2000i32 {
            r ^= r << 13;
            r ^= r >> 17;
            r ^= r << 5;
            let m = Multiplier {
                mant: r >> 1,
                shift: case % 70 - 4,
            };
            for w in -128i32..=127 {
                assert_eq!(m.apply_i32(w << 16), m.apply((w as i64) << 16), "{m:?} {w}");
            }
        }
    }

    #[test]
    fn leading_zeros_search_is_leading_zeros() {
        for shift in 0..32 {
            for v in [
                1u32 << shift,
                (1 << shift) | 1,
                u32::MAX >> shift,
                0x9E37_79B9 >> shift,
            ] {
                assert_eq!(leading_zeros_search(v), v.leading_zeros(), "{v:#x}");
            }
        }
        assert_eq!(leading_zeros_search(0), 32);
    }

    #[test]
    fn reciprocal_matches_the_u64_division() {
        let mut d = 1u32;
        let mut step = 1u32;
        while let Some(next) = d.checked_add(step) {
            for v in [d, d - 1, d + 1, d.wrapping_neg()] {
                if v != 0 {
                    let want = Multiplier::from_fixed((1u64 << 62) / v as u64, 40);
                    assert_eq!(Multiplier::reciprocal(v, 40), want, "{v}");
                }
            }
            d = next;
            step = step + step / 7 + 1;
        }
        assert_eq!(
            Multiplier::reciprocal(u32::MAX, 62),
            Multiplier::from_fixed((1u64 << 62) / u32::MAX as u64, 62)
        );
    }

    #[test]
    fn mul_q30_is_exact() {
        let mut r = 0x9E37_79B9_7F4A_7C15u64;
        let edges = [0u32, 1, 0x7FFF, 0x8000, 0xFFFF, 0x1_0000, (1 << 30) - 1];
        for i in 0..50_000 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            let (p, f) = if i < 49 {
                (edges[i % 7] | (edges[i % 7] << 1), edges[i / 7])
            } else {
                ((r as u32) >> 1, ((r >> 32) as u32) >> 2)
            };
            let p = p.min(i32::MAX as u32);
            assert_eq!(mul_q30(p, f) as u64, (p as u64 * f as u64) >> 30, "{p} {f}");
        }
    }

    #[test]
    fn matvec_i8_equals_its_reference() {
        let mut words = std::vec![0i32; 8192];
        let mut checks = std::vec::Vec::new();
        crate::kernel_bench::check(&mut words, &mut |c| checks.push(c));
        assert_eq!(checks.len(), 21);
        assert!(checks[0].cases > 200, "{checks:?}");
        assert!(checks.iter().all(|c| c.mismatches == 0), "{checks:?}");
    }

    #[test]
    fn row_rescale_equals_the_multiplier_path() {
        let mut r = 0x2545_F491_4F6C_DD1Du64;
        let edge_accs = [
            0,
            1,
            -1,
            i32::MAX,
            i32::MIN,
            i32::MIN + 1,
            1 << 24,
            -(1 << 24),
        ];
        for i in 0..200_000 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            let acc = if i < 64 {
                edge_accs[i % 8]
            } else {
                (r as i32) >> (r >> 59)
            };
            let x_step = Multiplier {
                mant: match i % 5 {
                    0 => 0x7FFF_FFFF,
                    1 => 1 << 30,
                    _ => ((r >> 32) as u32) >> 1,
                },
                shift: ((r >> 40) % 90) as i32 - 10,
            };
            let mut scale = [0u8; 8];
            scale[..4].copy_from_slice(&((r >> 16) as u32).to_le_bytes());
            scale[4..].copy_from_slice(&(((r >> 48) % 80) as i32 - 8).to_le_bytes());
            let want = Multiplier::from_le_bytes(&scale)
                .times(x_step)
                .apply_i32(acc);
            // A 4-byte aligned copy, as matvec_i8 hands over.
            let words = [
                u32::from_ne_bytes(scale[..4].try_into().unwrap()),
                u32::from_ne_bytes(scale[4..].try_into().unwrap()),
            ];
            // SAFETY: two initialised words read as their 8 bytes.
            let aligned = unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), 8) };
            let got = RowRescale { x_step }.apply(aligned, acc);
            assert_eq!(got, want, "{acc} {x_step:?} {scale:?}");
        }
    }

    /// [`silu_gate_thumb`]'s multiply, in 32-bit words: the signed product from both values'
    /// signed high and unsigned low halves, + 2¹⁵, >> 16 across the words, saturated.
    fn mul_q16_words(a: i32, g: i32) -> i32 {
        let (a_hi, a_lo) = (a >> 16, (a as u32) & 0xFFFF);
        let (g_hi, g_lo) = (g >> 16, (g as u32) & 0xFFFF);
        let mut high = a_hi.wrapping_mul(g_hi) as u32;
        let mut low = a_lo * g_lo;
        for part in [
            a_hi.wrapping_mul(g_lo as i32),
            g_hi.wrapping_mul(a_lo as i32),
        ] {
            let (sum, carry) = low.overflowing_add((part as u32) << 16);
            low = sum;
            high = high
                .wrapping_add((part >> 16) as u32)
                .wrapping_add(carry as u32);
        }
        let (low, carry) = low.overflowing_add(1 << 15);
        let high = high.wrapping_add(carry as u32) as i32;
        let top = high >> 15;
        if top != 0 && top != -1 {
            return if high < 0 { i32::MIN } else { i32::MAX };
        }
        (((high as u32) << 16) | (low >> 16)) as i32
    }

    #[test]
    fn gate_multiply_in_words_equals_mul_q16() {
        let edges = [
            0,
            1,
            -1,
            ONE_Q16,
            -ONE_Q16,
            i32::MAX,
            i32::MIN,
            i32::MIN + 1,
            1 << 15,
            -(1 << 15),
            (1 << 15) - 1,
            0xFFFF,
            -0xFFFF,
            0x1_0000 * 181,
        ];
        for &a in &edges {
            for &g in &edges {
                assert_eq!(mul_q16_words(a, g), mul_q16(a, g), "{a} {g}");
            }
        }
        let mut r = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..300_000 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            let a = (r as i32) >> (r >> 59);
            let g = ((r >> 32) as i32) >> ((r >> 54) & 31);
            assert_eq!(mul_q16_words(a, g), mul_q16(a, g), "{a} {g}");
        }
        // The gated activation's plain form is silu, then the multiply.
        let mut v = [3 << 16, -(5 << 15), 7, i32::MIN, i32::MAX];
        let gate = [1 << 16, 3 << 16, -(1 << 20), i32::MAX, i32::MIN];
        let mut want = v;
        for (w, &g) in want.iter_mut().zip(&gate) {
            *w = mul_q16(silu_q16(*w), g);
        }
        silu_gate_in_place(&mut v, &gate);
        assert_eq!(v, want);
    }

    #[test]
    fn row_quads_equal_the_row_major_matrix() {
        let mut r = 0x9E37_79B9u32;
        let mut next = || {
            r ^= r << 13;
            r ^= r >> 17;
            r ^= r << 5;
            r
        };
        for (rows, cols) in [
            (64, 64),
            (172, 64),
            (64, 172),
            (33, 12),
            (7, 4),
            (5, 100),
            (2, 8),
            (3, 6),
            (9, 2),
        ] {
            for round in 0..3 {
                let plain: std::vec::Vec<u8> = (0..rows * cols)
                    .map(|_| if round == 0 { 0x80 } else { next() as u8 })
                    .collect();
                let x: std::vec::Vec<i32> = (0..cols)
                    .map(|_| {
                        if round == 0 {
                            -ACT_LEVELS
                        } else {
                            (next() % 4095) as i32 - 2047
                        }
                    })
                    .collect();
                let scale_words: std::vec::Vec<u32> = (0..2 * rows)
                    .map(|i| {
                        if i % 2 == 0 {
                            (1 << 30) | (next() >> 2)
                        } else {
                            30 + next() % 20
                        }
                    })
                    .collect();
                // SAFETY: initialised words read as bytes (4-byte aligned, as the file's sections).
                let scales = unsafe {
                    core::slice::from_raw_parts(scale_words.as_ptr().cast::<u8>(), 8 * rows)
                };
                let mut quad_words = std::vec![0u32; (rows * cols).div_ceil(4)];
                // SAFETY: as above, mutably.
                let quads = unsafe {
                    core::slice::from_raw_parts_mut(
                        quad_words.as_mut_ptr().cast::<u8>(),
                        rows * cols,
                    )
                };
                quad_rows(&plain, rows, cols, quads);
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(
                            quad_weight(quads, rows, cols, r, c),
                            plain[r * cols + c] as i8 as i32
                        );
                    }
                }
                let step = step_q16((next() >> 8) as i32 + 1, ACT_LEVELS);
                let mut want = std::vec![0; rows];
                let mut got = std::vec![0; rows];
                let mut plain_ref = std::vec![0; rows];
                matvec_i8_x4_reference(&mut want, scales, quads, cols, &x, step);
                matvec_i8_x4(&mut got, scales, quads, cols, &x, step);
                matvec_i8_reference(&mut plain_ref, scales, &plain, cols, &x, step);
                assert_eq!(got, want, "{rows}×{cols} round {round}");
                assert_eq!(want, plain_ref, "{rows}×{cols} round {round}");
                // The word trick itself, quad by quad, against the plain sums.
                for g in 0..rows / 4 {
                    let sums = dot4_rows(
                        &quads[g * 4 * cols..(g + 1) * 4 * cols],
                        &x,
                        x.iter().sum::<i32>() * 128,
                    );
                    for (i, &sum) in sums.iter().enumerate() {
                        assert_eq!(
                            sum,
                            dot_w8(&plain[(4 * g + i) * cols..(4 * g + i + 1) * cols], &x)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn isqrt_is_floor_sqrt() {
        for v in [
            0u64,
            1,
            2,
            3,
            4,
            15,
            16,
            17,
            1 << 40,
            u64::MAX,
            999_999_999_999,
        ] {
            let r = isqrt_u64(v);
            assert!(r * r <= v);
            assert!((r + 1).checked_mul(r + 1).is_none_or(|s| s > v));
        }
    }

    #[test]
    fn u64_by_u16_division_is_exact() {
        let mut r = 0x2545_F491_4F6C_DD1Du64;
        for i in 0..20_000u64 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            let v = r >> (i % 64);
            for d in [1, 3, 18, 172, 4095, 65_535, 1 + (r as u32 >> 17)] {
                assert_eq!(div_u64_by_u16(v, d), v / d as u64, "{v} / {d}");
            }
        }
    }

    #[test]
    fn isqrt_equals_the_bit_by_bit_reference() {
        let mut r = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..20_000u64 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            // Every magnitude, and squares and their neighbours.
            let v = r >> (i % 64);
            let root = (v >> 32).max(1);
            for v in [
                v,
                root * root,
                root * root - 1,
                root * root + 1,
                u64::MAX - i,
            ] {
                assert_eq!(isqrt_u64(v), isqrt_u64_reference(v), "{v}");
            }
        }
        for v in (0..70_000u64).chain((1u64 << 32) - 5..(1 << 32) + 5) {
            assert_eq!(isqrt_u64(v), isqrt_u64_reference(v), "{v}");
        }
    }

    #[test]
    fn exp2_table_is_the_rounded_powers() {
        for (i, &v) in EXP2_Q30.iter().enumerate() {
            assert_eq!(
                v as f64,
                (2f64.powf(-(i as f64) / 256.0) * (1u64 << 30) as f64).round()
            );
        }
    }

    #[test]
    fn exp_is_accurate() {
        for i in 0..2000 {
            let x = -(i as f64) / 100.0;
            for exp in [exp_q16, exp_q16_polynomial] {
                let got = exp((x * 65536.0).round() as i32) as f64 / 65536.0;
                assert!(
                    (got - x.exp()).abs() < 3e-5,
                    "exp({x}) = {got}, want {}",
                    x.exp()
                );
            }
        }
        // Every input near the ends of the table's range and each step boundary.
        let mut worst = 0f64;
        for x in (-(16 << 16)..=0).step_by(7) {
            let want = (x as f64 / 65536.0).exp() * 65536.0;
            worst = worst.max((exp_q16(x) as f64 - want).abs());
        }
        assert!(worst < 1.5, "worst error {worst} Q16 units");
        assert_eq!(exp_q16(-(16 << 16) - 1), 0);
        assert_eq!(exp_q16(0), ONE_Q16);
        assert_eq!(exp_q16(i32::MIN), 0);
    }

    #[test]
    fn sigmoid_and_silu() {
        let mut worst = 0f64;
        for i in -2000..2000 {
            let x = i as f64 / 100.0;
            let s = sigmoid_q16((x * 65536.0) as i32) as f64 / 65536.0;
            worst = worst.max((s - 1.0 / (1.0 + (-x).exp())).abs());
        }
        assert!(worst < 6e-5, "worst σ error {worst}");
        assert_eq!(silu_q16(0), 0);
        assert_eq!(sigmoid_q16(0), 1 << 15);
        assert_eq!(sigmoid_q16(i32::MAX), 1 << 16);
        assert_eq!(sigmoid_q16(i32::MIN), 0);
    }

    /// The table is σ(i/16) rounded to Q16, increasing (the interpolation's difference is ≥ 0).
    #[test]
    fn the_sigmoid_table_is_sigma() {
        for (i, w) in SIGMOID_Q16.windows(2).enumerate() {
            let want = (65536.0 / (1.0 + (-(i as f64) / 16.0).exp())).round() as u32;
            assert_eq!(w[0], want, "entry {i}");
            assert!(w[1] >= w[0] && w[1] - w[0] <= 1024);
        }
        assert_eq!(SIGMOID_Q16[256], 65536);
    }

    /// silu_q16's two-word product equals the 64-bit one on every kind of input, and stays
    /// within a Q16 unit (plus σ's error) of x · σ(x) in f64.
    #[test]
    fn silu_split_is_the_wide_product() {
        let mut r = 0x511C_0DE5_u64;
        for i in 0..200_000u32 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            let x = match i % 7 {
                0 => (r as i32) >> (r % 31),
                1 => [i32::MIN, i32::MAX, -1, 0, 1, 16 << 16, -(16 << 16)][(i / 7) as usize % 7],
                _ => (r as i32) >> 8,
            };
            assert_eq!(silu_q16(x), silu_q16_reference(x), "{x}");
            let xf = x as f64 / 65536.0;
            let want = xf / (1.0 + (-xf).exp());
            let got = silu_q16(x) as f64 / 65536.0;
            assert!(
                (got - want).abs() <= 2.0 / 65536.0 + 6e-5 * xf.abs(),
                "{x}: {got} {want}"
            );
        }
    }

    #[test]
    fn multiplier_bytes_round_trip() {
        let m = Multiplier {
            mant: 0x4321_0000,
            shift: -3,
        };
        assert_eq!(Multiplier::from_le_bytes(&m.to_le_bytes()), m);
        // The engine keeps a file mantissa's top 15 bits (bit 31 and the low half go).
        let full = Multiplier {
            mant: 0xC321_ABCD,
            shift: 40,
        };
        assert_eq!(
            Multiplier::from_le_bytes(&full.to_le_bytes()),
            m_with(0x4321_0000, 40)
        );
    }

    fn m_with(mant: u32, shift: i32) -> Multiplier {
        Multiplier { mant, shift }
    }

    #[test]
    fn multiplier_round_trip() {
        let m = Multiplier::from_fixed(3 << 16, 16); // 3.0
        assert_eq!(m.apply(1000), 3000);
        let half = Multiplier::from_fixed(1, 1);
        assert_eq!(half.times(m).apply(1000), 1500);
        assert_eq!(step_q16(127 << 16, I8_LEVELS).apply(1), 1 << 16);
        assert_eq!(step_q16(2047 << 16, ACT_LEVELS).apply(1), 1 << 16);
    }

    #[test]
    fn rsqrt_is_within_six_in_a_hundred_thousand() {
        let mut r = 0x0123_4567_89AB_CDEFu64;
        let mut worst = 0f64;
        for i in 0..100_000u32 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            let v = (r >> (i % 64)).max(1);
            let m = rsqrt_multiplier(v);
            assert!((1 << 30..1 << 31).contains(&m.mant) && (1..=62).contains(&m.shift));
            let got = m.mant as f64 * 2f64.powi(-m.shift);
            let want = 65536.0 / (v as f64).sqrt();
            worst = worst.max((got / want - 1.0).abs());
        }
        assert!(worst < 6e-5, "worst relative error {worst}");
        for (v, s) in [
            (1u64, 0u32),
            (u64::MAX, 63),
            (1 << 40, 8),
            (12345, 0),
            (7 << 50, 31),
        ] {
            assert_eq!(shr_u64(v, s), v >> s);
        }
    }

    /// rmsnorm equals rmsnorm_reference and stays within 2.5·10⁻⁴ of each output of the f64
    /// RMSNorm (+ 8·2^gs Q16 units per unit of normalised input, + 2 per unit of 1/rms, + 4),
    /// over every scale of input and gains up to 2⁸.
    #[test]
    fn rmsnorm_is_its_reference_and_close_to_float() {
        let mut r = 0x0BAD_5EED_1234_5678u64;
        let mut next = move || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r
        };
        for case in 0..3000usize {
            let n = [1, 2, 8, 16, 64, 96, 172, 288][case % 8];
            // |x| < 2²⁶ (1024.0): Σx² of 288 of them stays in u64 (it saturates beyond).
            let x_bits = 8 + (case / 8) % 19;
            let g_bits = 10 + (case / 3) % 14;
            let x: std::vec::Vec<i32> = (0..n).map(|_| (next() as i32) >> (32 - x_bits)).collect();
            let g: std::vec::Vec<i32> = (0..n)
                .map(|_| ((next() as i32) >> (32 - g_bits)) | 1)
                .collect();
            let gain: std::vec::Vec<u8> = g.iter().flat_map(|v| v.to_le_bytes()).collect();
            let max_g = g.iter().map(|v| v.unsigned_abs()).max().unwrap();
            let (mut fast, mut plain) = (std::vec![0; n], std::vec![0; n]);
            rmsnorm(&mut fast, &x, &gain);
            rmsnorm_reference(&mut plain, &x, &gain);
            assert_eq!(fast, plain, "case {case}");
            let ms = x.iter().map(|&v| (v as f64 / 65536.0).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (ms + 1e-5).sqrt();
            let want: std::vec::Vec<f64> = x
                .iter()
                .zip(&g)
                .map(|(&v, &g)| v as f64 * inv * g as f64 / 65536.0)
                .collect();
            let largest = want.iter().fold(0f64, |m, w| m.max(w.abs()));
            if largest > 2e9 {
                continue; // beyond i32: saturated
            }
            for (i, (&o, &w)) in fast.iter().zip(&want).enumerate() {
                // G = (|g| >> gs)·inv15 >> 16 is within a unit: 4·2^gs Q16 units per unit of
                // normalised input; the rest is 1/rms's and x's rounding.
                let xn = (x[i] as f64 / 65536.0 * inv).abs();
                let gs = (32 - max_g.leading_zeros()).saturating_sub(17);
                assert!(
                    (o as f64 - w).abs()
                        <= w.abs() * 2.5e-4 + 8.0 * (1u32 << gs) as f64 * xn + 2.0 * inv + 4.0,
                    "case {case} [{i}]: {o} against {w} (largest {largest})"
                );
            }
        }
    }

    #[test]
    fn rmsnorm_unit_gain() {
        let x = [3 << 16, -(4 << 16)];
        let g = [ONE_Q16.to_le_bytes(), ONE_Q16.to_le_bytes()].concat();
        let mut out = [0; 2];
        rmsnorm(&mut out, &x, &g);
        // rms = sqrt(12.5) = 3.5355
        let want = [3.0 / 12.5f64.sqrt(), -4.0 / 12.5f64.sqrt()];
        for (o, w) in out.iter().zip(want) {
            assert!((*o as f64 / 65536.0 - w).abs() < 1e-4);
        }
    }
}
