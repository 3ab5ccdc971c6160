//! Kernel micro-benchmarks (`starmind bench --kernels`): each kernel of the forward pass and the
//! sampler, at the shapes the benched models use, on PRNG data in RAM, timed by a caller's cycle
//! clock. The firmware runs them in its `kernels` mode and prints one `STARMIND-KERNEL` line per
//! case; the host parses the lines (src/bench/kernels.rs).
//!
//! The data lie in the arena (SRAM), so the numbers are the kernels' own cycles; where the
//! weights live (flash, XIP cache) is the model bench's business.

use crate::forward::{
    attention, attention_reference, normalized, put_step, rope, rope_reference, scale_scores,
    scale_scores_reference, score_scale, softmax, softmax_u32, weigh_by_value_steps,
    weigh_by_value_steps_reference, weigh_exps, AttentionShape, KvView, StepBounds, STEP_WORDS,
};
use crate::kernels::{
    act_step, argmax, div_rem_u32, exp_q16, isqrt_u64, isqrt_u64_reference, leading_zeros,
    matvec_i4, matvec_i8, matvec_i8_reference, matvec_i8_x4, max_abs_of, max_abs_reference,
    quad_rows, quantize_act, quantize_act4, quantize_act_reference, quantize_kv,
    quantize_kv_reference, rmsnorm, rmsnorm_reference, silu_gate_in_place, silu_gate_reference,
    silu_in_place, silu_q16, silu_q16_reference, step_q16, sum_squares, sum_squares_reference,
    Multiplier, ACT_LEVELS, ONE_Q16,
};
use crate::sampler::{
    key_weights, key_weights_reference, near_keys, near_keys_reference, temperature_weights,
    temperature_weights_reference, top_k, top_k_reference, Near, Sampler, SamplerConfig,
    MAX_CANDIDATES, NEAR_BUCKETS, NEAR_VOCAB, NEAR_WORDS,
};

/// What one case measured: `calls` calls took `cycles`; each call does `macs` multiply-adds
/// (elements, for the element-wise kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelTiming {
    pub name: &'static str,
    pub rows: u32,
    pub cols: u32,
    pub calls: u32,
    pub cycles: u64,
    pub macs: u32,
}

/// A fast kernel compared with its plain reference on PRNG inputs: `mismatches` of `cases`
/// outputs differed (0 = bit-identical).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelCheck {
    pub name: &'static str,
    pub cases: u32,
    pub mismatches: u32,
}

/// Compares every fast kernel with its reference on PRNG data in `words` (≥ 8,192 of them), at
/// the shapes the engine meets and a few odd ones (an odd row count, 4 columns, full-scale
/// values).
pub fn check(words: &mut [i32], report: &mut dyn FnMut(KernelCheck)) {
    let mut rng = Rng(0x1234_5679);
    let (x, rest) = words.split_at_mut(512);
    let (out, rest) = rest.split_at_mut(512);
    let (want, rest) = rest.split_at_mut(512);
    let (scale_words, rest) = rest.split_at_mut(2 * 64);
    let (weight_words, rest) = rest.split_at_mut(64 * 172 / 4);
    let quad_words = &mut rest[..64 * 172 / 4];
    let mut outputs = 0u32;
    let mut mismatches = 0u32;
    let mut quad_mismatches = 0u32;
    for (round, (rows, cols)) in [
        (64, 64),
        (172, 64),
        (64, 172),
        (33, 12),
        (7, 4),
        (5, 100),
        (2, 8),
        (9, 14),
        (6, 30),
    ]
    .into_iter()
    .enumerate()
    {
        for v in x.iter_mut() {
            *v = if round == 0 {
                ACT_LEVELS
            } else {
                rng.signed(ACT_LEVELS)
            };
        }
        for w in weight_words.iter_mut() {
            *w = if round == 0 {
                i32::MIN >> 7
            } else {
                rng.next() as i32
            }; // 0x80 bytes: -128
        }
        for pair in scale_words.chunks_exact_mut(2) {
            pair[0] = ((1 << 30) | (rng.next() >> 2)) as i32;
            // Round 3 also has shifts the fast rescale hands back to the general path.
            pair[1] = if round == 3 {
                (rng.next() % 100) as i32 - 20
            } else {
                38 + (rng.next() % 8) as i32
            };
        }
        // SAFETY: initialised i32 words read as bytes (alignment 1, same memory).
        let weights: &[u8] = unsafe {
            core::slice::from_raw_parts(weight_words.as_ptr().cast::<u8>(), weight_words.len() * 4)
        };
        // SAFETY: as above.
        let scales: &[u8] = unsafe {
            core::slice::from_raw_parts(scale_words.as_ptr().cast::<u8>(), scale_words.len() * 4)
        };
        let rows = rows.min(scales.len() / 8);
        // Both kinds of input step: a matrix input's power of two, and any multiplier.
        let max = (rng.next() >> 8) as i32 + 1;
        let step = if rng.next() & 1 == 0 {
            act_step(max)
        } else {
            step_q16(max, ACT_LEVELS)
        };
        matvec_i8(&mut out[..rows], scales, weights, cols, &x[..cols], step);
        matvec_i8_reference(&mut want[..rows], scales, weights, cols, &x[..cols], step);
        outputs += rows as u32;
        mismatches += differing(&out[..rows], &want[..rows]);
        // The same matrix in row quads.
        // SAFETY: as above, mutably (the words are not otherwise borrowed meanwhile).
        let quads: &mut [u8] = unsafe {
            core::slice::from_raw_parts_mut(
                quad_words.as_mut_ptr().cast::<u8>(),
                quad_words.len() * 4,
            )
        };
        quad_rows(weights, rows, cols, quads);
        matvec_i8_x4(&mut out[..rows], scales, quads, cols, &x[..cols], step);
        quad_mismatches += differing(&out[..rows], &want[..rows]);
    }
    report(KernelCheck {
        name: "matvec_i8",
        cases: outputs,
        mismatches,
    });
    report(KernelCheck {
        name: "matvec_i8_x4",
        cases: outputs,
        mismatches: quad_mismatches,
    });
    // The (hardware, on the device) divider against the compiler's software `/` and `%`.
    let mut mismatches = 0;
    let cases = 2000;
    for i in 0..cases {
        let n = core::hint::black_box(rng.next());
        let d = core::hint::black_box(match i % 3 {
            0 => rng.next() >> (rng.next() % 32),
            1 => rng.next() % 70_000 + 1,
            _ => rng.next(),
        })
        .max(1);
        if div_rem_u32(n, d) != (n / d, n % d) {
            mismatches += 1;
        }
    }
    report(KernelCheck {
        name: "div_rem_u32",
        cases,
        mismatches,
    });
    check_attention(words, &mut rng, report);
}

/// The 1/T (Q16) of the sampler-weight checks: at the edges of weights_thumb's halves (1/T ≤
/// 2²⁴ takes its one-word product) and past them (the plain form).
const WEIGHT_INV_TS: [u32; 7] = [
    1,
    1 << 16,
    81_840,
    0x1_FFFF,
    (1 << 24) - 1,
    1 << 24,
    i32::MAX as u32,
];

/// [`attention`] against [`attention_reference`] (head sizes 2, 3, 4, 8, grouped and plain
/// heads, 1 to 64 positions, narrow and wide value steps, queries up to 2¹³ in Q16), and
/// [`scale_scores`] against its reference on full-range dot products and steps: the device
/// runs their thumbv6m assembly, which the host tests never reach.
fn check_attention(words: &mut [i32], rng: &mut Rng, report: &mut dyn FnMut(KernelCheck)) {
    let mut free = &mut words[..];
    let kv_words = take(&mut free, 2048);
    let steps = take(&mut free, 4 * 64 * STEP_WORDS);
    let q = take(&mut free, 64);
    let out = take(&mut free, 64);
    let want = take(&mut free, 64);
    let att = take(&mut free, 64);
    let att_ref = take(&mut free, 64);
    let xq = take(&mut free, 16);
    // SAFETY: the kv words as i16 (alignment 2 ≤ 4, twice as many elements, same memory).
    let kv: &mut [i16] = unsafe {
        core::slice::from_raw_parts_mut(kv_words.as_mut_ptr().cast::<i16>(), kv_words.len() * 2)
    };
    let (mut cases, mut mismatches) = (0u32, 0u32);
    for round in 0..80usize {
        let hs = [2, 3, 4, 6, 8][round % 5];
        let (n_kv, kv_per_q) = [(1, 1), (2, 1), (4, 2), (2, 4)][(round / 5) % 4];
        let n_heads = n_kv * kv_per_q;
        let kv_dim = n_kv * hs;
        let n = [1, 5, 17, 64][(round / 16) % 4].min(2048 / kv_dim);
        for v in kv.iter_mut() {
            *v = rng.signed(2047) as i16;
        }
        let (keys, values) = kv.split_at(kv.len() / 2);
        let (key_steps, value_steps) = steps.split_at_mut(2 * 64 * STEP_WORDS);
        for slot in 0..n {
            // Keys up to 2³¹ in Q16.16, or (every other round, with the engine's scale) below
            // 2¹⁹, where scores of queries below 2¹⁸ keep their shifts in range (scores4).
            let key_max = if round % 2 == 0 {
                (rng.next() >> (13 + rng.next() % 14)) as i32
            } else {
                (rng.next() >> (rng.next() % 24)) as i32 & i32::MAX
            };
            let value_max = (rng.next() >> (8 + rng.next() % 20)) as i32;
            // The engine's power-of-two steps (act_step) mostly, any multiplier at times.
            if round % 4 == 3 {
                put_step(key_steps, slot, step_q16(key_max, 2047));
                put_step(value_steps, slot, step_q16(value_max, 2047).shifted(8));
            } else {
                put_step(key_steps, slot, act_step(key_max));
                put_step(value_steps, slot, act_step(value_max).shifted(8));
            }
        }
        let q_range = [1 << 10, 4 << 16, 1 << 29][round % 3];
        for v in q[..n_heads * hs].iter_mut() {
            *v = rng.signed(q_range);
        }
        let cache = KvView {
            keys,
            values,
            key_steps,
            value_steps,
            bounds: StepBounds::scan(key_steps, value_steps, n),
        };
        let shape = AttentionShape {
            head_size: hs,
            kv_dim,
            kv_per_q,
        };
        // The engine's scale every other round (a power of two at head size 4: the one-pass
        // scores of scores4), any other at times.
        let score_scale = if round % 2 == 0 {
            score_scale(hs)
        } else {
            Multiplier::from_fixed(23_170 + rng.next() as u64 % 40_000, 32)
        };
        let m = n_heads * hs;
        attention(
            &mut out[..m],
            &q[..m],
            &cache,
            &mut att[..n],
            &mut xq[..],
            shape,
            score_scale,
        );
        attention_reference(
            &mut want[..m],
            &q[..m],
            &cache,
            &mut att_ref[..n],
            &mut xq[..],
            shape,
            score_scale,
        );
        cases += m as u32;
        mismatches += differing(&out[..m], &want[..m]);
    }
    report(KernelCheck {
        name: "attention",
        cases,
        mismatches,
    });
    let (mut cases, mut mismatches) = (0u32, 0u32);
    for round in 0..200u32 {
        for (i, (a, b)) in att.iter_mut().zip(att_ref.iter_mut()).enumerate() {
            let v = match (round as usize + i) % 9 {
                0 => i32::MIN,
                1 => i32::MAX,
                2 => 0,
                3 => -1,
                _ => (rng.next() as i32) >> (rng.next() % 31),
            };
            (*a, *b) = (v, v);
        }
        for pair in steps[..2 * 64].chunks_exact_mut(2) {
            pair[0] = (rng.next() >> 1 >> (rng.next() % 8)) as i32;
            pair[1] = (rng.next() % 70) as i32;
        }
        let q_scale = Multiplier {
            mant: rng.next() >> 1 >> (rng.next() % 8),
            shift: (rng.next() % 60) as i32 - 10,
        };
        let max = scale_scores(att, &steps[..2 * 64], q_scale);
        scale_scores_reference(att_ref, &steps[..2 * 64], q_scale);
        cases += 64;
        mismatches += differing(att, att_ref);
        // The max it tracks as it stores.
        mismatches += (Some(max) != att_ref.iter().copied().max()) as u32;
    }
    report(KernelCheck {
        name: "scale_scores",
        cases,
        mismatches,
    });
    let (mut cases, mut mismatches) = (0u32, 0u32);
    for round in 0..100usize {
        let n = 1 + round % 64;
        let range = [0, 1 << 12, 1 << 18, 20 << 16, i32::MAX >> 1][round % 5];
        for (i, (a, b)) in att[..n].iter_mut().zip(att_ref.iter_mut()).enumerate() {
            let v = match (round + i) % 13 {
                0 => i32::MIN,
                1 => i32::MAX,
                _ => rng.signed(range),
            };
            (*a, *b) = (v, v);
        }
        softmax_u32(&mut att[..n]);
        softmax(&mut att_ref[..n]);
        cases += n as u32;
        mismatches += differing(&att[..n], &att_ref[..n]);
    }
    report(KernelCheck {
        name: "softmax",
        cases,
        mismatches,
    });
    let (mut cases, mut mismatches) = (0u32, 0u32);
    for round in 0..200usize {
        let n = 1 + round % 64;
        let range = [1 << 12, (1 << 13) + 7, 1 << 16, 1 << 20, i32::MAX >> 1][round % 5];
        for (i, v) in q[..n].iter_mut().enumerate() {
            *v = match (round + i) % 17 {
                0 => i32::MIN,
                1 => i32::MAX,
                2..=4 => rng.signed(64) << 13,
                _ => rng.signed(range),
            };
        }
        if round % 7 == 0 {
            // A power-of-two max and multiples of 2^13 below it: products whose low word is 0.
            for v in q[..n].iter_mut() {
                *v = rng.signed(64) << (7 + round % 12);
            }
            q[0] = 1 << (13 + round % 12);
        }
        if round % 7 == 3 {
            // Small vectors (max|x| < 2⁻³): quantize_act's up-shifted path.
            for v in q[..n].iter_mut() {
                *v = rng.signed(2 << (round % 14));
            }
        }
        let (a, b) = (
            quantize_act(&q[..n], &mut out[..n]),
            quantize_act_reference(&q[..n], &mut want[..n]),
        );
        cases += n as u32 + 1;
        mismatches += (a != b) as u32;
        mismatches += differing(&out[..n], &want[..n]);
        // quantize_act4 (heads of 4) on the first four values (zero-padded), inline.
        let mut x4 = [0i32; 4];
        x4[..n.min(4)].copy_from_slice(&q[..n.min(4)]);
        let mut got4 = [7i32; 4];
        let (a, b) = (
            quantize_act4(&x4, &mut got4),
            quantize_act_reference(&x4, &mut want[..4]),
        );
        cases += 5;
        mismatches += (a != b) as u32;
        mismatches += differing(&got4, &want[..4]);
    }
    report(KernelCheck {
        name: "quantize_act",
        cases,
        mismatches,
    });
    let (mut cases, mut mismatches) = (0u32, 0u32);
    for round in 0..200usize {
        let n = 1 + round % 64;
        for (i, (a, b)) in att[..n].iter_mut().zip(att_ref.iter_mut()).enumerate() {
            let v = match (round + i) % 11 {
                0 => 1 << 16,
                1 => 0,
                2 if round % 5 == 0 => rng.next() as i32, // outside a probability's range
                _ => (rng.next() % (1 << 16)) as i32,
            };
            (*a, *b) = (v, v);
        }
        for pair in steps[..2 * 64].chunks_exact_mut(2) {
            pair[0] = (rng.next() >> 1 >> (rng.next() % 8)) as i32;
            pair[1] = (rng.next() % 72) as i32 - 4;
        }
        let total = weigh_by_value_steps(&mut att[..n], &steps[..2 * n]);
        let want = weigh_by_value_steps_reference(&mut att_ref[..n], &steps[..2 * n]);
        cases += n as u32 + 1;
        mismatches += (total != want) as u32;
        mismatches += differing(&att[..n], &att_ref[..n]);
    }
    report(KernelCheck {
        name: "weigh_by_value_steps",
        cases,
        mismatches,
    });
    let (mut cases, mut mismatches) = (0u32, 0u32);
    for round in 0..200usize {
        let n = 1 + round % 64;
        for (i, (a, b)) in att[..n].iter_mut().zip(att_ref.iter_mut()).enumerate() {
            let v = match (round + i) % 11 {
                0 => 1 << 16,
                1 => 0,
                _ => (rng.next() % (1 << 16)) as i32,
            };
            (*a, *b) = (v, v);
        }
        for pair in steps[..2 * 64].chunks_exact_mut(2) {
            pair[0] = (rng.next() >> 1 >> (rng.next() % 8)) as i32;
            pair[1] = (rng.next() % 72) as i32 - 4;
        }
        let inv = 1 + rng.next() % (1 << 16);
        let total = weigh_exps(&mut att[..n], inv, &steps[..2 * n]);
        for b in att_ref[..n].iter_mut() {
            *b = normalized(*b, inv);
        }
        let want = weigh_by_value_steps_reference(&mut att_ref[..n], &steps[..2 * n]);
        cases += n as u32 + 1;
        mismatches += (total != want) as u32;
        mismatches += differing(&att[..n], &att_ref[..n]);
    }
    report(KernelCheck {
        name: "weigh_exps",
        cases,
        mismatches,
    });
    let (mut cases, mut mismatches) = (0u32, 0u32);
    for round in 0..200usize {
        let n = 1 + round % 64;
        let range = [1 << 10, 1 << 16, 8 << 16, 1 << 28, i32::MAX >> 1][round % 5];
        let gain_range = [1 << 16, 1 << 20, i32::MAX >> 1][round % 3];
        for (i, (v, g)) in q[..n].iter_mut().zip(att.iter_mut()).enumerate() {
            *v = match (round + i) % 19 {
                0 => i32::MIN,
                1 => i32::MAX,
                _ => rng.signed(range),
            };
            *g = match (round + i) % 23 {
                0 => i32::MIN,
                1 => i32::MAX,
                _ => rng.signed(gain_range),
            };
        }
        if round % 4 == 0 {
            // Products that end in exactly half a Q16 unit (odd · 2^15 · odd): the rounding tie.
            for (v, g) in q[..n].iter_mut().zip(att.iter_mut()) {
                *v = (rng.signed(64) | 1) << 15;
                *g = rng.signed(64) | 1;
            }
        }
        // SAFETY: initialised words read as bytes (alignment 1, same memory).
        let gain: &[u8] = unsafe { core::slice::from_raw_parts(att.as_ptr().cast::<u8>(), 4 * n) };
        rmsnorm(&mut out[..n], &q[..n], gain);
        rmsnorm_reference(&mut want[..n], &q[..n], gain);
        cases += n as u32;
        mismatches += differing(&out[..n], &want[..n]);
    }
    report(KernelCheck {
        name: "rmsnorm",
        cases,
        mismatches,
    });
    // The max|x| and Σx² passes (quantize_act's and rmsnorm's first pass) on their own.
    let (mut cases, mut mismatches) = (0u32, [0u32; 2]);
    for round in 0..300usize {
        let n = 1 + round % 64;
        let range = [1 << 10, 1 << 16, 1 << 28, i32::MAX >> 1][round % 4];
        for (i, v) in q[..n].iter_mut().enumerate() {
            *v = match (round + i) % (5 + round % 29) {
                0 => i32::MIN,
                1 => i32::MAX,
                2 => 0,
                3 => -1,
                _ => rng.signed(range),
            };
        }
        if round % 3 == 0 {
            // No full-scale values: sums below saturation and maxima of the random values.
            for v in q[..n].iter_mut() {
                *v = rng.signed(range >> (round % 5));
            }
        }
        cases += 1;
        mismatches[0] += (max_abs_of(&q[..n]) != max_abs_reference(&q[..n])) as u32;
        mismatches[1] += (sum_squares(&q[..n]) != sum_squares_reference(&q[..n])) as u32;
    }
    for (name, mismatches) in [
        ("max_abs_of", mismatches[0]),
        ("sum_squares", mismatches[1]),
    ] {
        report(KernelCheck {
            name,
            cases,
            mismatches,
        });
    }
    let (mut cases, mut mismatches) = (0u32, 0u32);
    for round in 0..100usize {
        let range = [1 << 8, 1 << 16, 8 << 16, 20 << 16, i32::MAX >> 1][round % 5];
        for (i, (v, w)) in out[..64].iter_mut().zip(want[..64].iter_mut()).enumerate() {
            *v = match (round + i) % 29 {
                0 => i32::MIN,
                1 => i32::MAX,
                2 => 0,
                3 => -1,
                4 => 1,
                _ => rng.signed(range),
            };
            *w = *v;
        }
        silu_in_place(&mut out[..64]);
        cases += 64;
        mismatches += out[..64]
            .iter()
            .zip(&want[..64])
            .filter(|(&o, &w)| o != silu_q16_reference(w))
            .count() as u32;
    }
    report(KernelCheck {
        name: "silu_in_place",
        cases,
        mismatches,
    });
    // SwiGLU's gated activation (the split silu and the gate multiply) against its plain form.
    let (mut cases, mut mismatches) = (0u32, 0u32);
    for round in 0..60usize {
        let range = [1 << 8, 1 << 16, 8 << 16, 20 << 16, i32::MAX >> 1][round % 5];
        let gate_range = [1 << 16, 1 << 20, i32::MAX >> 1, 1 << 8][round % 4];
        for (i, ((v, w), g)) in out[..64]
            .iter_mut()
            .zip(want[..64].iter_mut())
            .zip(att[..64].iter_mut())
            .enumerate()
        {
            *v = match (round + i) % 31 {
                0 => i32::MIN,
                1 => i32::MAX,
                2 => 0,
                3 => -1,
                _ => rng.signed(range),
            };
            *g = match (round + i) % 37 {
                0 => i32::MIN,
                1 => i32::MAX,
                2 => 0,
                _ => rng.signed(gate_range),
            };
            *w = *v;
        }
        silu_gate_in_place(&mut out[..64], &att[..64]);
        silu_gate_reference(&mut want[..64], &att[..64]);
        cases += 64;
        mismatches += differing(&out[..64], &want[..64]);
    }
    report(KernelCheck {
        name: "silu_gate_in_place",
        cases,
        mismatches,
    });
    // The leading-zero count (inline assembly on the device) against a bit loop.
    let (mut cases, mut mismatches) = (0u32, 0u32);
    for i in 0..2000u32 {
        let v = match i % 3 {
            0 => rng.next() >> (rng.next() % 33).min(31),
            1 => 1 << (i % 32),
            _ => (u32::MAX >> (i % 32)).wrapping_sub(i % 2),
        };
        let want = (0..32).find(|&b| v & (1 << (31 - b)) != 0).unwrap_or(32);
        cases += 1;
        mismatches += (leading_zeros(v) != want) as u32;
    }
    mismatches += (leading_zeros(0) != 32) as u32;
    report(KernelCheck {
        name: "leading_zeros",
        cases,
        mismatches,
    });
    let (mut cases, mut mismatches) = (0u32, 0u32);
    for round in 0..100usize {
        let hs = [2, 4, 8, 6][round % 4];
        let range = [1 << 16, 8 << 16, i32::MAX >> 1, i32::MAX][round % 4];
        for (i, (v, w)) in out[..64].iter_mut().zip(want[..64].iter_mut()).enumerate() {
            *v = match (round + i) % 17 {
                0 => i32::MIN,
                1 => i32::MAX,
                _ => rng.signed(range >> 1) * 2,
            };
            *w = *v;
        }
        // (cos, sin) words in Q30, a few at ±1.0 exactly and some out of range.
        for (i, c) in att[..64].iter_mut().enumerate() {
            *c = match (round + i) % 13 {
                0 => 1 << 30,
                1 => -(1 << 30),
                2 => i32::MIN,
                _ => rng.signed(1 << 30),
            };
        }
        // SAFETY: initialised words read as bytes (alignment 1, same memory).
        let table: &[u8] =
            unsafe { core::slice::from_raw_parts(att.as_ptr().cast::<u8>(), 4 * hs) };
        rope(&mut out[..64], hs, table);
        rope_reference(&mut want[..64], hs, table);
        cases += 64;
        mismatches += differing(&out[..64], &want[..64]);
    }
    report(KernelCheck {
        name: "rope",
        cases,
        mismatches,
    });
    // quantize_kv (shifts into i16) against its plain form, vectors of up to 64 elements.
    let (mut cases, mut mismatches) = (0u32, 0u32);
    for round in 0..100usize {
        let n = 1 + round % 64;
        let range = [1 << 12, 1 << 16, 1 << 20, i32::MAX >> 1][round % 4];
        for (i, v) in q[..n].iter_mut().enumerate() {
            *v = match (round + i) % 13 {
                0 => i32::MIN,
                1 => i32::MAX,
                _ => rng.signed(range),
            };
        }
        let (mut got, mut want_kv) = ([0i16; 64], [0i16; 64]);
        let max = quantize_kv(&q[..n], &mut got[..n]);
        let want_max = quantize_kv_reference(&q[..n], &mut want_kv[..n]);
        cases += n as u32 + 1;
        mismatches += (max != want_max) as u32;
        mismatches += differing(&got[..n], &want_kv[..n]);
    }
    report(KernelCheck {
        name: "quantize_kv",
        cases,
        mismatches,
    });
    // The divider-based integer square root against the bit-by-bit loop.
    let (mut cases, mut mismatches) = (0u32, 0u32);
    for i in 0..1000u32 {
        let v = ((rng.next() as u64) << 32 | rng.next() as u64) >> (i % 64);
        let root = (v >> 32).max(1);
        for v in [v, root * root, root * root - 1] {
            cases += 1;
            mismatches += (isqrt_u64(v) != isqrt_u64_reference(v)) as u32;
        }
    }
    report(KernelCheck {
        name: "isqrt_u64",
        cases,
        mismatches,
    });
    // The histogram top-k against the insertion reference: wide, narrow and tied logits.
    let (mut cases, mut mismatches) = (0u32, 0u32);
    let logits = take(&mut free, 512);
    for round in 0..40usize {
        let n = [1, 40, 64, 128, 144, 512][round % 6];
        let span = [1 << 12, 1 << 18, 40 << 16, i32::MAX >> 1][(round / 6) % 4];
        for (i, l) in logits[..n].iter_mut().enumerate() {
            *l = rng.signed(span);
            if (round + i) % 3 == 0 {
                *l &= !0xFFFF; // ties
            }
        }
        let (_, max) = argmax(&logits[..n]);
        for k in [1, 40, 64] {
            let (mut ids, mut vals) = ([0; MAX_CANDIDATES], [i32::MIN; MAX_CANDIDATES]);
            let (mut ref_ids, mut ref_vals) = ([0; MAX_CANDIDATES], [i32::MIN; MAX_CANDIDATES]);
            let got = top_k(&logits[..n], max, k, &mut ids, &mut vals);
            let want = top_k_reference(&logits[..n], k, &mut ref_ids, &mut ref_vals);
            cases += 1;
            mismatches += (got != want
                || ids[..got] != ref_ids[..want]
                || vals[..got] != ref_vals[..want]) as u32;
            // The near candidates' keys (near_thumb on the device) against the plain passes.
            if n <= NEAR_VOCAB {
                let near = Near::for_temperature([81_840, 1 << 13, 1 << 20][round % 3]);
                let near = near.unwrap_or(Near::for_temperature(1 << 16).unwrap());
                let (mut got, mut want) = ([0u32; NEAR_WORDS], [0u32; NEAR_WORDS]);
                let (got_max, got_placed) = near_keys(&logits[..n], k, near, &mut got);
                let (want_max, want_placed) = near_keys_reference(&logits[..n], k, near, &mut want);
                cases += 1;
                mismatches += (got_max != want_max
                    || got_placed != want_placed
                    || got[NEAR_BUCKETS..][..got_placed] != want[NEAR_BUCKETS..][..want_placed])
                    as u32;
            }
        }
        // The whole draw: the same token from the fast and the plain sampler.
        for temperature_q8 in [205, 64, 4000] {
            let config = SamplerConfig {
                temperature_q8,
                top_k: 40,
                top_p_q16: 58_982,
                seed: round as u64 + 1,
            };
            let (mut fast, mut plain) = (Sampler::new(config), Sampler::new(config));
            cases += 1;
            mismatches +=
                (fast.sample(&logits[..n]) != plain.sample_reference(&logits[..n])) as u32;
        }
    }
    report(KernelCheck {
        name: "top_k",
        cases,
        mismatches,
    });
    // The sampler's candidate weights (weights_thumb on the device) against the plain loop.
    let (mut cases, mut mismatches) = (0u32, 0u32);
    let (vals, rest) = logits.split_at_mut(64);
    let (got, want) = rest.split_at_mut(64);
    for round in 0..200usize {
        let n = 1 + round % 64;
        let span = [1 << 12, 1 << 18, 20 << 16, i32::MAX >> 1][round % 4];
        for v in vals[..n].iter_mut() {
            *v = rng.signed(span);
        }
        let max = if round % 5 == 0 {
            i32::MAX
        } else {
            argmax(&vals[..n]).1
        };
        let inv_t = WEIGHT_INV_TS[round % WEIGHT_INV_TS.len()] >> (round % 3);
        // SAFETY: initialised i32 words read as u32 (same size and alignment).
        let (got, want): (&mut [u32], &mut [u32]) = unsafe {
            (
                core::slice::from_raw_parts_mut(got.as_mut_ptr().cast::<u32>(), n),
                core::slice::from_raw_parts_mut(want.as_mut_ptr().cast::<u32>(), n),
            )
        };
        temperature_weights(&vals[..n], max, inv_t, got);
        temperature_weights_reference(&vals[..n], max, inv_t, want);
        cases += n as u32;
        mismatches += differing(got, want);
    }
    report(KernelCheck {
        name: "temperature_weights",
        cases,
        mismatches,
    });
    // The weights from near keys (key_weights_thumb on the device) and their sum.
    let (mut cases, mut mismatches) = (0u32, 0u32);
    for round in 0..200usize {
        let n = 1 + round % 64;
        let below = [1u32 << 12, 1 << 18, 20 << 16, (1 << 24) - 1][round % 4];
        for (i, v) in vals[..n].iter_mut().enumerate() {
            *v = (((rng.next() % below) << 8) | i as u32) as i32;
        }
        let inv_t = WEIGHT_INV_TS[round % WEIGHT_INV_TS.len()] >> (round % 3);
        // SAFETY: initialised i32 words read as u32 (same size and alignment).
        let (keys, got, want): (&[u32], &mut [u32], &mut [u32]) = unsafe {
            (
                core::slice::from_raw_parts(vals.as_ptr().cast::<u32>(), n),
                core::slice::from_raw_parts_mut(got.as_mut_ptr().cast::<u32>(), n),
                core::slice::from_raw_parts_mut(want.as_mut_ptr().cast::<u32>(), n),
            )
        };
        let got_total = key_weights(keys, inv_t, got);
        let want_total = key_weights_reference(keys, inv_t, want);
        cases += n as u32 + 1;
        mismatches += differing(got, want) + (got_total != want_total) as u32;
    }
    report(KernelCheck {
        name: "key_weights",
        cases,
        mismatches,
    });
}

/// Arena bytes [`run`] needs.
pub const ARENA_BYTES: usize = 96 * 1024;

struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
    /// Uniform in `-range..=range`.
    fn signed(&mut self, range: i32) -> i32 {
        (self.next() % (2 * range as u32 + 1)) as i32 - range
    }
}

fn take<'a, T>(buf: &mut &'a mut [T], n: usize) -> &'a mut [T] {
    let all = core::mem::take(buf);
    let n = n.min(all.len());
    let (head, tail) = all.split_at_mut(n);
    *buf = tail;
    head
}

/// Times `calls` calls of `f`.
fn time(clock: &dyn Fn() -> u64, calls: u32, mut f: impl FnMut()) -> u64 {
    let start = clock();
    for _ in 0..calls {
        f();
    }
    clock() - start
}

/// Runs every case and hands each timing to `report`. `arena` needs [`ARENA_BYTES`] bytes
/// (any alignment); returns false (and runs nothing) when it is smaller.
pub fn run(
    arena: &mut [u8],
    clock: &dyn Fn() -> u64,
    checked: &mut dyn FnMut(KernelCheck),
    report: &mut dyn FnMut(KernelTiming),
) -> bool {
    if arena.len() < ARENA_BYTES {
        return false;
    }
    let skip = arena.as_ptr().align_offset(4).min(3);
    let words_len = (ARENA_BYTES - 4) / 4;
    // SAFETY: `skip` makes the start 4-byte aligned and `words_len` words fit in what remains
    // (ARENA_BYTES - 4 ≥ 4·words_len); every bit pattern is a valid i32.
    let words: &mut [i32] = unsafe {
        core::slice::from_raw_parts_mut(arena[skip..].as_mut_ptr().cast::<i32>(), words_len)
    };
    check(words, checked);
    let mut rng = Rng(0x2545_F491);
    let mut free = words;
    let x = take(&mut free, 512);
    let out = take(&mut free, 512);
    let scratch = take(&mut free, 512);
    for v in x.iter_mut() {
        *v = rng.signed(ACT_LEVELS);
    }
    // Weights and row scales as bytes, carved from the rest.
    let weight_words = take(&mut free, 512 * 64 / 4);
    let scale_words = take(&mut free, 512 * 2);
    let kv_words = take(&mut free, 64 * 64); // 2 × 64 positions × 64 i16
    let mut seed = rng.next();
    let bytes_of = |w: &mut [i32], seed: &mut u32| {
        for v in w.iter_mut() {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 17;
            *seed ^= *seed << 5;
            *v = *seed as i32;
        }
    };
    bytes_of(weight_words, &mut seed);
    for pair in scale_words.chunks_exact_mut(2) {
        let m = Multiplier {
            mant: (1 << 30) | (rng.next() >> 2),
            shift: 40,
        };
        pair[0] = m.mant as i32;
        pair[1] = m.shift;
    }
    // SAFETY: reinterpreting initialised i32 words as bytes (alignment 1, same memory).
    let weights: &[u8] = unsafe {
        core::slice::from_raw_parts(weight_words.as_ptr().cast::<u8>(), weight_words.len() * 4)
    };
    // SAFETY: as above.
    let scales: &[u8] = unsafe {
        core::slice::from_raw_parts(scale_words.as_ptr().cast::<u8>(), scale_words.len() * 4)
    };
    let x_step = act_step(3 << 16);

    for (rows, cols, calls) in [(64, 64, 40), (172, 64, 16), (64, 172, 16), (512, 64, 6)] {
        let cycles = time(clock, calls, || {
            matvec_i8(&mut out[..rows], scales, weights, cols, &x[..cols], x_step)
        });
        report(KernelTiming {
            name: "matvec_i8",
            rows: rows as u32,
            cols: cols as u32,
            calls,
            cycles,
            macs: (rows * cols) as u32,
        });
    }
    // The row-quad kernel on the same bytes (its speed does not depend on the values).
    for (rows, cols, calls) in [(64, 64, 40), (172, 64, 16), (64, 172, 16), (512, 64, 6)] {
        let cycles = time(clock, calls, || {
            matvec_i8_x4(&mut out[..rows], scales, weights, cols, &x[..cols], x_step)
        });
        report(KernelTiming {
            name: "matvec_i8_x4",
            rows: rows as u32,
            cols: cols as u32,
            calls,
            cycles,
            macs: (rows * cols) as u32,
        });
    }
    {
        let (rows, cols, group) = (64, 64, 32);
        let cycles = time(clock, 16, || {
            matvec_i4(
                &mut out[..rows],
                scales,
                weights,
                weights,
                cols,
                group,
                &x[..cols],
                x_step,
            )
        });
        report(KernelTiming {
            name: "matvec_i4",
            rows: rows as u32,
            cols: cols as u32,
            calls: 16,
            cycles,
            macs: (rows * cols) as u32,
        });
    }

    // Attention of one layer: 8 query heads over 4 key/value heads of 8 (the stories260k shape),
    // at 16 and 64 cached positions.
    {
        // SAFETY: the kv words as i16 (alignment 2 ≤ 4, twice as many elements, same memory).
        let kv: &mut [i16] = unsafe {
            core::slice::from_raw_parts_mut(kv_words.as_mut_ptr().cast::<i16>(), kv_words.len() * 2)
        };
        for v in kv.iter_mut() {
            *v = rng.signed(2047) as i16;
        }
        let (keys, values) = kv.split_at(kv.len() / 2);
        // Key steps as the engine stores them; value steps × 2⁻⁸ as well (forward.rs).
        let steps = take(&mut free, 2 * 64 * STEP_WORDS);
        for slot in 0..64 {
            let max = (rng.next() >> 12) as i32 + ONE_Q16;
            put_step(steps, slot, act_step(max));
            put_step(steps, 64 + slot, act_step(max).shifted(8));
        }
        let (key_steps, value_steps) = steps.split_at(64 * STEP_WORDS);
        let q = take(&mut free, 64);
        for v in q.iter_mut() {
            *v = rng.signed(4 << 16);
        }
        let shape = AttentionShape {
            head_size: 8,
            kv_dim: 32,
            kv_per_q: 2,
        };
        let score_scale = Multiplier::from_fixed(23_170, 16 + 16); // ≈ 1/√8 / 2¹⁶
        for positions in [16usize, 64] {
            let cache = KvView {
                keys,
                values,
                key_steps: &key_steps[..positions * STEP_WORDS],
                value_steps: &value_steps[..positions * STEP_WORDS],
                bounds: StepBounds::scan(key_steps, value_steps, positions),
            };
            let calls = 4;
            let cycles = time(clock, calls, || {
                attention(
                    &mut out[..64],
                    q,
                    &cache,
                    &mut scratch[..positions],
                    &mut x[256..512],
                    shape,
                    score_scale,
                )
            });
            // Two head_size-long dot products per (head, position): q·k and p·v.
            report(KernelTiming {
                name: "attention",
                rows: 8,
                cols: positions as u32,
                calls,
                cycles,
                macs: (2 * 8 * 8 * positions) as u32,
            });
        }
    }
    for v in x[256..].iter_mut() {
        *v = rng.signed(3 << 16);
    }

    let gains = take(&mut free, 172);
    for g in gains.iter_mut() {
        *g = ONE_Q16 + rng.signed(1 << 14);
    }
    // SAFETY: as above (initialised words read as bytes).
    let gain_bytes: &[u8] =
        unsafe { core::slice::from_raw_parts(gains.as_ptr().cast::<u8>(), gains.len() * 4) };
    {
        let cycles = time(clock, 20, || {
            rmsnorm(&mut out[..64], &x[256..320], gain_bytes)
        });
        report(elementwise("rmsnorm", 64, 20, cycles));
        let cycles = time(clock, 20, || {
            quantize_act(&x[256..320], &mut scratch[..64]);
        });
        report(elementwise("quantize_act", 64, 20, cycles));
        let cycles = time(clock, 4, || {
            for (o, &v) in out[..172].iter_mut().zip(&x[256..428]) {
                *o = silu_q16(v);
            }
        });
        report(elementwise("silu_q16", 172, 4, cycles));
        let cycles = time(clock, 4, || {
            out[..172].copy_from_slice(&x[256..428]);
            silu_in_place(&mut out[..172]);
        });
        report(elementwise("silu_in_place", 172, 4, cycles));
        let cycles = time(clock, 4, || {
            out[..172].copy_from_slice(&x[256..428]);
            silu_gate_in_place(&mut out[..172], &x[..172]);
        });
        report(elementwise("silu_gate_in_place", 172, 4, cycles));
        let cycles = time(clock, 4, || {
            for (o, &v) in out[..256].iter_mut().zip(&x[256..512]) {
                *o = exp_q16(-(v.unsigned_abs() as i32 & 0x7_FFFF));
            }
        });
        report(elementwise("exp_q16", 256, 4, cycles));
    }

    // The sampler over a vocabulary of logits (temperature 0.8, top-k 40, top-p 0.9: the
    // bench's settings).
    for vocab in [512usize, 1024] {
        let logits = take(&mut free, vocab);
        for l in logits.iter_mut() {
            *l = rng.signed(6 << 16);
        }
        let mut sampler = Sampler::new(SamplerConfig {
            temperature_q8: 205,
            top_k: 40,
            top_p_q16: 58_982,
            seed: 42,
        });
        let calls = 4;
        let cycles = time(clock, calls, || {
            sampler.sample(logits);
        });
        report(elementwise("sample_top_k", vocab as u32, calls, cycles));
    }
    true
}

fn elementwise(name: &'static str, n: u32, calls: u32, cycles: u64) -> KernelTiming {
    KernelTiming {
        name,
        rows: 1,
        cols: n,
        calls,
        cycles,
        macs: n,
    }
}

/// How many places two equal-length results differ in (a device check's mismatches).
fn differing<T: PartialEq>(got: &[T], want: &[T]) -> u32 {
    got.iter().zip(want).filter(|(a, b)| a != b).count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn every_case_runs_on_the_host() {
        let mut arena = vec![0u8; ARENA_BYTES + 1];
        let ticks = core::cell::Cell::new(0u64);
        let clock = || {
            ticks.set(ticks.get() + 1000);
            ticks.get()
        };
        let mut seen = Vec::new();
        let mut checks = Vec::new();
        assert!(run(
            &mut arena[1..],
            &clock,
            &mut |c| checks.push(c),
            &mut |t| seen.push(t)
        ));
        assert!(seen.len() >= 12, "{seen:?}");
        assert!(seen.iter().all(|t| t.cycles == 1000 && t.macs > 0));
        assert_eq!(checks.len(), 21);
        assert!(checks[0].cases > 200, "{checks:?}");
        assert!(checks.iter().all(|c| c.mismatches == 0), "{checks:?}");
        assert!(!run(&mut arena[..100], &clock, &mut |_| {}, &mut |_| {}));
    }
}
