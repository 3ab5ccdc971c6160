//! The run config block: what the board program does with the model in flash.
//!
//! One 256-byte record at [`CONFIG_ADDR`] (its own 4 KiB flash sector), written by the host
//! (`starmind flash`, `starmind bench`) and read by the firmware at boot; both use this module,
//! so writer and reader cannot drift. Layout (all little-endian; flash map: docs/memory-map.md):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SMCF` |
//! | 4 | 2 | version (1) |
//! | 6 | 1 | mode: 0 bench, 1 story, 2 interactive, 3 kernels, 4 bench-split |
//! | 7 | 1 | prompt length in bytes (≤ 200) |
//! | 8 | 4 | tokens to generate (bench: exactly, at most [`MAX_BENCH_TOKENS`]; story/interactive: at most) |
//! | 12 | 8 | sampler seed |
//! | 20 | 2 | sampler temperature, Q8 (256 = 1.0; 0 = greedy) |
//! | 22 | 2 | sampler top-k (0 = off) |
//! | 24 | 4 | sampler top-p, Q16 (65536 = off) |
//! | 28 | 4 | model file length in bytes (the model starts at [`MODEL_ADDR`]) |
//! | 32 | 200 | prompt bytes (UTF-8), zero padded |
//! | 232 | 20 | reserved, 0 |
//! | 252 | 4 | CRC-32 (zlib's, [`crate::checksum::crc32`]) of bytes 0..252 |

use core::fmt;

use crate::checksum::crc32;
use crate::sampler::SamplerConfig;
use crate::story::{Start, StoryConfig, WhenFull};

/// Start of the XIP flash window; the firmware image is placed here.
pub const FLASH_BASE: u32 = 0x1000_0000;
/// Flash address of the config block (XIP view).
pub const CONFIG_ADDR: u32 = 0x1003_F000;
/// Flash address where the model file starts (XIP view).
pub const MODEL_ADDR: u32 = 0x1004_0000;
/// Size of the encoded block in bytes.
pub const CONFIG_BYTES: usize = 256;
/// Longest prompt the block can hold.
pub const MAX_PROMPT_BYTES: usize = 200;
/// Most tokens one bench run generates (the firmware keeps their ids for its report line).
pub const MAX_BENCH_TOKENS: usize = 512;

const MAGIC: [u8; 4] = *b"SMCF";
const VERSION: u16 = 1;

/// Byte offsets of the fields (the table above).
mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const MODE: usize = 6;
    pub const PROMPT_LEN: usize = 7;
    pub const TOKENS: usize = 8;
    pub const SEED: usize = 12;
    pub const TEMPERATURE_Q8: usize = 20;
    pub const TOP_K: usize = 22;
    pub const TOP_P_Q16: usize = 24;
    pub const MODEL_BYTES: usize = 28;
    pub const PROMPT: usize = 32;
    pub const CRC: usize = 252;
}

/// What the firmware does after boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Generate a fixed number of tokens and print one `STARMIND-BENCH` line.
    Bench = 0,
    /// Tell stories forever, each from the prompt with the next seed.
    Story = 1,
    /// Read a prompt line over serial, stream a story, repeat.
    Interactive = 2,
    /// Time each kernel on synthetic data ([`crate::kernel_bench`]); the model is not used.
    Kernels = 3,
    /// As [`Mode::Bench`], with every step the forward pass cuts between two cores run as its
    /// two parts one after the other on core 0, each timed ([`crate::cores`]): the per-core
    /// cycle counts of the dual-core estimate. Slower than a bench by the timing itself.
    BenchSplit = 4,
}

impl Mode {
    fn from_byte(byte: u8) -> Option<Mode> {
        match byte {
            0 => Some(Mode::Bench),
            1 => Some(Mode::Story),
            2 => Some(Mode::Interactive),
            3 => Some(Mode::Kernels),
            4 => Some(Mode::BenchSplit),
            _ => None,
        }
    }

    /// The lowercase name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Bench => "bench",
            Mode::Story => "story",
            Mode::Interactive => "interactive",
            Mode::Kernels => "kernels",
            Mode::BenchSplit => "bench-split",
        }
    }
}

/// A config block's contents, checked to fit the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunConfig {
    mode: Mode,
    tokens: u32,
    sampler: SamplerConfig,
    model_bytes: u32,
    prompt_len: u8,
    prompt: [u8; MAX_PROMPT_BYTES],
}

/// Why a config block was rejected (or could not be made).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The first four bytes are not `SMCF` (erased flash reads 0xFF).
    NoBlock,
    /// The stored CRC does not match the contents.
    Checksum,
    /// A version this firmware does not know.
    Version(u16),
    /// Mode byte out of range.
    Mode(u8),
    /// Prompt longer than [`MAX_PROMPT_BYTES`].
    PromptTooLong,
    /// A temperature or top-k the block's 16-bit fields cannot hold.
    SamplerOutOfRange,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigError::NoBlock => "no config block (flash it with `starmind flash`)",
            ConfigError::Checksum => "config block checksum mismatch",
            ConfigError::Version(_) => "config block version not supported by this firmware",
            ConfigError::Mode(_) => "config block has an unknown mode",
            ConfigError::PromptTooLong => "prompt longer than 200 bytes",
            ConfigError::SamplerOutOfRange => "temperature or top-k too large for the config block",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ConfigError {}

impl RunConfig {
    /// A config; fails when the prompt or the sampler settings do not fit the block.
    pub fn new(
        mode: Mode,
        prompt: &[u8],
        tokens: u32,
        sampler: SamplerConfig,
        model_bytes: u32,
    ) -> Result<RunConfig, ConfigError> {
        if prompt.len() > MAX_PROMPT_BYTES {
            return Err(ConfigError::PromptTooLong);
        }
        if sampler.temperature_q8 > u16::MAX as u32 || sampler.top_k > u16::MAX as u32 {
            return Err(ConfigError::SamplerOutOfRange);
        }
        let mut stored = [0u8; MAX_PROMPT_BYTES];
        stored[..prompt.len()].copy_from_slice(prompt);
        Ok(RunConfig {
            mode,
            tokens,
            sampler,
            model_bytes,
            prompt_len: prompt.len() as u8,
            prompt: stored,
        })
    }

    /// What to do.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Tokens to generate after the prompt.
    pub fn tokens(&self) -> u32 {
        self.tokens
    }

    /// How to pick tokens from the logits, seed included.
    pub fn sampler(&self) -> SamplerConfig {
        self.sampler
    }

    /// Length of the model file at [`MODEL_ADDR`].
    pub fn model_bytes(&self) -> u32 {
        self.model_bytes
    }

    /// The prompt bytes.
    pub fn prompt(&self) -> &[u8] {
        &self.prompt[..self.prompt_len as usize]
    }

    /// The story loop this block asks for. Every story starts after `<|endoftext|>` and ends when
    /// the context is full. A bench generates exactly `tokens` (at most [`MAX_BENCH_TOKENS`]) and
    /// runs on past `<|endoftext|>`, so that every run does the same work; stories stop there.
    pub fn story(&self) -> StoryConfig {
        let (max_tokens, stop_at_end_of_text) = match self.mode {
            Mode::Bench | Mode::BenchSplit | Mode::Kernels => {
                ((self.tokens as usize).min(MAX_BENCH_TOKENS), false)
            }
            Mode::Story | Mode::Interactive => (self.tokens as usize, true),
        };
        StoryConfig {
            sampler: self.sampler,
            max_tokens,
            stop_at_end_of_text,
            start: Start::AfterEndOfText,
            when_full: WhenFull::Stop,
        }
    }

    /// The 256 bytes written to flash at [`CONFIG_ADDR`].
    pub fn encode(&self) -> [u8; CONFIG_BYTES] {
        let mut out = [0u8; CONFIG_BYTES];
        let s = &self.sampler;
        // `new` checked that the sampler fields fit 16 bits.
        out[field::MAGIC..][..4].copy_from_slice(&MAGIC);
        out[field::VERSION..][..2].copy_from_slice(&VERSION.to_le_bytes());
        out[field::MODE] = self.mode as u8;
        out[field::PROMPT_LEN] = self.prompt_len;
        out[field::TOKENS..][..4].copy_from_slice(&self.tokens.to_le_bytes());
        out[field::SEED..][..8].copy_from_slice(&s.seed.to_le_bytes());
        out[field::TEMPERATURE_Q8..][..2].copy_from_slice(&(s.temperature_q8 as u16).to_le_bytes());
        out[field::TOP_K..][..2].copy_from_slice(&(s.top_k as u16).to_le_bytes());
        out[field::TOP_P_Q16..][..4].copy_from_slice(&s.top_p_q16.to_le_bytes());
        out[field::MODEL_BYTES..][..4].copy_from_slice(&self.model_bytes.to_le_bytes());
        out[field::PROMPT..][..MAX_PROMPT_BYTES].copy_from_slice(&self.prompt);
        let crc = crc32(&out[..field::CRC]);
        out[field::CRC..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses the block; never panics on any input.
    pub fn decode(bytes: &[u8; CONFIG_BYTES]) -> Result<RunConfig, ConfigError> {
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        if bytes[field::MAGIC..][..4] != MAGIC {
            return Err(ConfigError::NoBlock);
        }
        if crc32(&bytes[..field::CRC]) != u32_at(field::CRC) {
            return Err(ConfigError::Checksum);
        }
        let version = u16_at(field::VERSION);
        if version != VERSION {
            return Err(ConfigError::Version(version));
        }
        let mode =
            Mode::from_byte(bytes[field::MODE]).ok_or(ConfigError::Mode(bytes[field::MODE]))?;
        let prompt_len = bytes[field::PROMPT_LEN];
        if prompt_len as usize > MAX_PROMPT_BYTES {
            return Err(ConfigError::PromptTooLong);
        }
        let mut prompt = [0u8; MAX_PROMPT_BYTES];
        prompt.copy_from_slice(&bytes[field::PROMPT..][..MAX_PROMPT_BYTES]);
        Ok(RunConfig {
            mode,
            tokens: u32_at(field::TOKENS),
            sampler: SamplerConfig {
                temperature_q8: u16_at(field::TEMPERATURE_Q8) as u32,
                top_k: u16_at(field::TOP_K) as u32,
                top_p_q16: u32_at(field::TOP_P_Q16),
                seed: u32_at(field::SEED) as u64 | (u32_at(field::SEED + 4) as u64) << 32,
            },
            model_bytes: u32_at(field::MODEL_BYTES),
            prompt_len,
            prompt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLER: SamplerConfig = SamplerConfig {
        temperature_q8: 205,
        top_k: 40,
        top_p_q16: 58982,
        seed: 42,
    };

    #[test]
    fn round_trip() {
        let config = RunConfig::new(Mode::Story, b"Once upon a time", 64, SAMPLER, 12345).unwrap();
        assert_eq!(RunConfig::decode(&config.encode()), Ok(config));
        assert_eq!(config.prompt(), b"Once upon a time");
        assert_eq!(config.sampler(), SAMPLER);
    }

    #[test]
    fn fields_sit_where_the_table_says() {
        let sampler = SamplerConfig {
            seed: 0x0102_0304_0506_0708,
            ..SAMPLER
        };
        let bytes = RunConfig::new(Mode::Interactive, b"Hi", 7, sampler, 999)
            .unwrap()
            .encode();
        assert_eq!(&bytes[0..4], b"SMCF");
        assert_eq!(bytes[6], 2);
        assert_eq!(bytes[7], 2);
        assert_eq!(&bytes[8..12], &7u32.to_le_bytes());
        assert_eq!(&bytes[12..20], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&bytes[20..22], &205u16.to_le_bytes());
        assert_eq!(&bytes[22..24], &40u16.to_le_bytes());
        assert_eq!(&bytes[24..28], &58982u32.to_le_bytes());
        assert_eq!(&bytes[28..32], &999u32.to_le_bytes());
        assert_eq!(&bytes[32..34], b"Hi");
        assert!(bytes[34..252].iter().all(|&b| b == 0));
    }

    #[test]
    fn rejects_erased_and_corrupt() {
        assert_eq!(
            RunConfig::decode(&[0xFF; CONFIG_BYTES]),
            Err(ConfigError::NoBlock)
        );
        let mut bytes = RunConfig::new(Mode::Bench, b"x", 1, SAMPLER, 1)
            .unwrap()
            .encode();
        bytes[40] ^= 1;
        assert_eq!(RunConfig::decode(&bytes), Err(ConfigError::Checksum));
    }

    #[test]
    fn refuses_what_the_block_cannot_hold() {
        let long = [b'a'; MAX_PROMPT_BYTES + 1];
        assert_eq!(
            RunConfig::new(Mode::Story, &long, 1, SAMPLER, 1),
            Err(ConfigError::PromptTooLong)
        );
        let hot = SamplerConfig {
            temperature_q8: 1 << 16,
            ..SAMPLER
        };
        assert_eq!(
            RunConfig::new(Mode::Story, b"x", 1, hot, 1),
            Err(ConfigError::SamplerOutOfRange)
        );
    }

    #[test]
    fn bench_caps_tokens_and_runs_past_end_of_text() {
        let bench = RunConfig::new(Mode::Bench, b"x", 10_000, SAMPLER, 1).unwrap();
        let story = bench.story();
        assert_eq!(story.max_tokens, MAX_BENCH_TOKENS);
        assert!(!story.stop_at_end_of_text);
        let stories = RunConfig::new(Mode::Story, b"x", 10_000, SAMPLER, 1).unwrap();
        assert_eq!(stories.story().max_tokens, 10_000);
        assert!(stories.story().stop_at_end_of_text);
    }
}
