//! Next-token sampling in integers: greedy, temperature, top-k, top-p, with a seeded xorshift
//! PRNG, so the host and the device draw the same tokens from the same logits.

use crate::kernels::{argmax, exp_q16, mul_wide_u32};

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

/// A sampler: its settings and PRNG state.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    rng: u64,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Sampler {
        let rng = if config.seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            config.seed
        };
        Sampler { config, rng }
    }

    /// xorshift64* (as llama2.c's `random_u32`).
    pub fn next_u32(&mut self) -> u32 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }

    /// Draws a token id from Q16.16 logits.
    pub fn sample(&mut self, logits: &[i32]) -> u32 {
        let c = self.config;
        let (best, max) = argmax(logits);
        if c.temperature_q8 == 0 || logits.len() <= 1 {
            return best as u32;
        }
        // Weight of a logit: exp((l - max) / T) in Q16, with 1/T as a Q16 factor.
        let inv_temperature_q16 = ((256u32 << 16) / c.temperature_q8).min(i32::MAX as u32);
        let weight = |l: i32| -> u32 {
            // (l - max)·(1/T) from one exact u32×u32 product: max - l < 2³², 1/T < 2³¹.
            let below_max = (max as i64 - l as i64) as u32;
            let z = -(mul_wide_u32(below_max, inv_temperature_q16) as i64) >> 16;
            exp_q16(z.max(i32::MIN as i64) as i32) as u32
        };
        let limited = c.top_k > 0 || c.top_p_q16 < (1 << 16);
        if !limited {
            // Whole vocabulary: two passes, no buffer.
            let total: u64 = logits.iter().map(|&l| weight(l) as u64).sum();
            let mut r = self.draw(total);
            for (i, &l) in logits.iter().enumerate() {
                let w = weight(l) as u64;
                if r < w {
                    return i as u32;
                }
                r -= w;
            }
            return best as u32;
        }
        // The k most likely tokens, sorted descending (ties: lower id first).
        let k = match c.top_k {
            0 => MAX_CANDIDATES,
            k => (k as usize).min(MAX_CANDIDATES),
        };
        let mut ids = [0u32; MAX_CANDIDATES];
        let mut vals = [i32::MIN; MAX_CANDIDATES];
        let mut n = 0usize;
        for (i, &l) in logits.iter().enumerate() {
            if n == k && l <= vals[k - 1] {
                continue;
            }
            // Insertion: find the slot, shift the tail down by one.
            let mut j = if n < k { n } else { k - 1 };
            while j > 0 && vals[j - 1] < l {
                vals[j] = vals[j - 1];
                ids[j] = ids[j - 1];
                j -= 1;
            }
            vals[j] = l;
            ids[j] = i as u32;
            n = (n + 1).min(k);
        }
        let mut weights = [0u32; MAX_CANDIDATES];
        for (w, &v) in weights.iter_mut().zip(&vals[..n]) {
            *w = weight(v);
        }
        let total: u64 = weights[..n].iter().map(|&w| w as u64).sum();
        // Nucleus: the shortest prefix whose mass reaches top_p of the candidates' mass.
        let mut kept = n;
        if c.top_p_q16 < (1 << 16) {
            let target = (total * c.top_p_q16 as u64) >> 16;
            let mut cumulative = 0u64;
            for (i, &w) in weights[..n].iter().enumerate() {
                cumulative += w as u64;
                if cumulative >= target {
                    kept = i + 1;
                    break;
                }
            }
        }
        let kept_total: u64 = weights[..kept].iter().map(|&w| w as u64).sum();
        let mut r = self.draw(kept_total);
        for (&id, &w) in ids[..kept].iter().zip(&weights[..kept]) {
            if r < w as u64 {
                return id;
            }
            r -= w as u64;
        }
        ids[0]
    }

    /// A uniform draw in `0..total` (0 when total is 0).
    fn draw(&mut self, total: u64) -> u64 {
        if total == 0 {
            return 0;
        }
        let (high, low) = (self.next_u32(), self.next_u32());
        if let Ok(total) = u32::try_from(total) {
            if total < 1 << 23 {
                // (high·2³² + low) mod total by u32 steps, 8 bits at a time (each partial
                // remainder < 2²³, so remainder·2⁸ + byte fits u32): no u64 division.
                let mut rem = high % total;
                for byte_shift in [24, 16, 8, 0] {
                    rem = ((rem << 8) | ((low >> byte_shift) & 0xFF)) % total;
                }
                return rem as u64;
            }
        }
        (((high as u64) << 32) | low as u64) % total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
