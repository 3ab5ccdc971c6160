//! The sampler flags of `generate`, `flash` and `bench`: checked and converted to the engine's
//! fixed-point units in one place ([`sampler_config`]), so that the host and the device draw
//! with the same numbers.

use anyhow::{bail, Result};
use starmind_engine::run_config::{MAX_BENCH_TOKENS, MAX_PROMPT_BYTES};
use starmind_engine::SamplerConfig;

/// The engine's sampler settings from the command-line values: temperature × 256 (Q8) and
/// top-p × 65536 (Q16), rounded to nearest. Temperature must be in 0..=100 (0 = greedy), top-p
/// in (0, 1] (1 = off), top-k 0 (off) or more.
pub fn sampler_config(
    temperature: f64,
    top_k: u32,
    top_p: f64,
    seed: u64,
) -> Result<SamplerConfig> {
    if !(0.0..=100.0).contains(&temperature) {
        bail!("--temperature {temperature}: must be in 0..=100");
    }
    if !(0.0..=1.0).contains(&top_p) || top_p == 0.0 {
        bail!("--top-p {top_p}: must be in (0, 1]");
    }
    Ok(SamplerConfig {
        temperature_q8: (temperature * 256.0).round() as u32,
        top_k,
        top_p_q16: (top_p * 65536.0).round() as u32,
        seed,
    })
}

/// Prompt, length and sampler of a story on the board: shared by `flash` and `bench`.
#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Prompt the stories start from (at most 200 bytes).
    #[arg(long, default_value = "Once upon a time")]
    pub prompt: String,
    #[command(flatten)]
    pub story: StoryArgs,
}

/// Length and sampler of a story on the board, whatever its prompt: [`SamplingArgs`] less the
/// prompt (`chat` takes its prompts from the user).
#[derive(clap::Args, Clone, Debug)]
pub struct StoryArgs {
    /// Tokens to generate: bench exactly this many (default 64, at most 512); story and
    /// interactive at most this many per story (default 1024; a story also ends at
    /// `<|endoftext|>` or when the model's context is full).
    #[arg(long = "tokens", short = 'n')]
    pub tokens: Option<u32>,
    /// Sampler seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: u16,
    /// Top-p nucleus (1 = off).
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
}

impl SamplingArgs {
    /// Tokens a bench generates.
    pub fn bench_tokens(&self) -> u32 {
        self.story.tokens.unwrap_or(64)
    }

    /// Tokens a story or interactive answer generates at most.
    pub fn story_tokens(&self) -> u32 {
        self.story.tokens.unwrap_or(1024)
    }

    /// Checks every flag before anything is read or run: the sampler ([`sampler_config`]), the
    /// prompt's length and `-n` (a bench: 1..=512, the most the firmware reports; a story: ≥ 1).
    /// `flash` and `bench` refuse what they cannot do, as `generate` does, rather than clamp it.
    pub fn validate(&self, bench: bool) -> Result<()> {
        self.sampler()?;
        if self.prompt.len() > MAX_PROMPT_BYTES {
            bail!(
                "--prompt is {} bytes: must be at most {MAX_PROMPT_BYTES}",
                self.prompt.len()
            );
        }
        match (bench, self.story.tokens) {
            (_, Some(0)) => bail!("--tokens (-n) 0: must be at least 1"),
            (true, Some(n)) if n as usize > MAX_BENCH_TOKENS => {
                bail!("--tokens (-n) {n}: a bench generates at most {MAX_BENCH_TOKENS} tokens")
            }
            _ => Ok(()),
        }
    }

    /// The sampler settings in the engine's units ([`sampler_config`]).
    pub fn sampler(&self) -> Result<SamplerConfig> {
        let s = &self.story;
        sampler_config(s.temperature, s.top_k as u32, s.top_p, s.seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bounds() {
        let s = sampler_config(0.8, 40, 0.9, 7).unwrap();
        assert_eq!(
            (s.temperature_q8, s.top_k, s.top_p_q16, s.seed),
            (205, 40, 58_982, 7)
        );
        assert_eq!(sampler_config(0.0, 0, 1.0, 0).unwrap().temperature_q8, 0);
        assert_eq!(sampler_config(1.0, 0, 1.0, 0).unwrap().top_p_q16, 65_536);
        for (t, p) in [
            (-0.1, 0.9),
            (100.5, 0.9),
            (0.8, 0.0),
            (0.8, 1.01),
            (f64::NAN, 0.9),
        ] {
            assert!(sampler_config(t, 0, p, 0).is_err(), "{t} {p}");
        }
    }
}
