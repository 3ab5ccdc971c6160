//! The config block: what the board program should do with the model in flash.
//!
//! One 256-byte record at [`CONFIG_ADDR`] (its own 4 KiB flash sector), written by the host
//! (`starmind flash`, `starmind bench`) and read by the firmware at boot. This file has no
//! dependencies so that the host CLI compiles the very same code (`#[path]` include): writer and
//! reader cannot drift. Layout (all little-endian), see docs/memory-map.md:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SMCF` |
//! | 4 | 2 | version (1) |
//! | 6 | 1 | mode: 0 bench, 1 story, 2 interactive |
//! | 7 | 1 | prompt length in bytes (≤ 200) |
//! | 8 | 4 | tokens to generate (bench: exactly; story/interactive: at most) |
//! | 12 | 8 | sampler seed |
//! | 20 | 2 | sampler temperature, Q8 (256 = 1.0; 0 = greedy) |
//! | 22 | 2 | sampler top-k (0 = off) |
//! | 24 | 4 | sampler top-p, Q16 (65536 = off) |
//! | 28 | 4 | model file length in bytes (the model starts at [`MODEL_ADDR`]) |
//! | 32 | 200 | prompt bytes (UTF-8), zero padded |
//! | 232 | 20 | reserved, 0 |
//! | 252 | 4 | CRC-32 (IEEE) of bytes 0..252 |

/// Flash address of the config block (XIP view).
pub const CONFIG_ADDR: u32 = 0x1003_F000;
/// Flash address where the model file starts (XIP view).
pub const MODEL_ADDR: u32 = 0x1004_0000;
/// Start of the XIP flash window; the firmware image is placed here.
pub const FLASH_BASE: u32 = 0x1000_0000;
/// Size of the encoded block in bytes.
pub const CONFIG_BYTES: usize = 256;
/// Longest prompt the block can hold.
pub const MAX_PROMPT_BYTES: usize = 200;

const MAGIC: [u8; 4] = *b"SMCF";
const VERSION: u16 = 1;
const PROMPT_OFFSET: usize = 32;
const CRC_OFFSET: usize = 252;

/// What the firmware does after boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Generate a fixed number of tokens and print one `STARMIND-BENCH` line.
    Bench = 0,
    /// Tell stories forever, each from the prompt with the next seed.
    Story = 1,
    /// Read a prompt line over serial, stream a story, repeat.
    Interactive = 2,
}

impl Mode {
    fn from_byte(byte: u8) -> Option<Mode> {
        match byte {
            0 => Some(Mode::Bench),
            1 => Some(Mode::Story),
            2 => Some(Mode::Interactive),
            _ => None,
        }
    }

    /// The lowercase name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Bench => "bench",
            Mode::Story => "story",
            Mode::Interactive => "interactive",
        }
    }
}

/// Sampler parameters, as the engine's `SamplerConfig` takes them (the seed is separate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamplerSettings {
    /// Temperature in Q8 (256 = 1.0); 0 = greedy.
    pub temperature_q8: u16,
    /// Keep only the k most likely tokens; 0 = all.
    pub top_k: u16,
    /// Nucleus threshold in Q16; 65536 = off.
    pub top_p_q16: u32,
}

/// A decoded config block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunConfig {
    /// What to do.
    pub mode: Mode,
    /// Tokens to generate after the prompt.
    pub tokens: u32,
    /// Sampler seed.
    pub seed: u64,
    /// How to pick tokens from the logits.
    pub sampler: SamplerSettings,
    /// Length of the model file at [`MODEL_ADDR`].
    pub model_bytes: u32,
    prompt_len: u8,
    prompt: [u8; MAX_PROMPT_BYTES],
}

/// Why a config block was rejected.
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
    /// Prompt longer than [`MAX_PROMPT_BYTES`] (also returned by [`RunConfig::new`]).
    PromptTooLong,
}

impl ConfigError {
    /// A one-line description for serial output and host errors.
    pub fn message(self) -> &'static str {
        match self {
            ConfigError::NoBlock => "no config block (flash it with `starmind flash`)",
            ConfigError::Checksum => "config block checksum mismatch",
            ConfigError::Version(_) => "config block version not supported by this firmware",
            ConfigError::Mode(_) => "config block has an unknown mode",
            ConfigError::PromptTooLong => "prompt longer than 200 bytes",
        }
    }
}

impl RunConfig {
    /// A config; fails when the prompt does not fit.
    pub fn new(
        mode: Mode,
        prompt: &[u8],
        tokens: u32,
        seed: u64,
        sampler: SamplerSettings,
        model_bytes: u32,
    ) -> Result<RunConfig, ConfigError> {
        if prompt.len() > MAX_PROMPT_BYTES {
            return Err(ConfigError::PromptTooLong);
        }
        let mut stored = [0u8; MAX_PROMPT_BYTES];
        stored[..prompt.len()].copy_from_slice(prompt);
        Ok(RunConfig {
            mode,
            tokens,
            seed,
            sampler,
            model_bytes,
            prompt_len: prompt.len() as u8,
            prompt: stored,
        })
    }

    /// The prompt bytes.
    pub fn prompt(&self) -> &[u8] {
        &self.prompt[..self.prompt_len as usize]
    }

    /// The 256 bytes written to flash at [`CONFIG_ADDR`].
    pub fn encode(&self) -> [u8; CONFIG_BYTES] {
        let mut out = [0u8; CONFIG_BYTES];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        out[6] = self.mode as u8;
        out[7] = self.prompt_len;
        out[8..12].copy_from_slice(&self.tokens.to_le_bytes());
        out[12..20].copy_from_slice(&self.seed.to_le_bytes());
        out[20..22].copy_from_slice(&self.sampler.temperature_q8.to_le_bytes());
        out[22..24].copy_from_slice(&self.sampler.top_k.to_le_bytes());
        out[24..28].copy_from_slice(&self.sampler.top_p_q16.to_le_bytes());
        out[28..32].copy_from_slice(&self.model_bytes.to_le_bytes());
        out[PROMPT_OFFSET..PROMPT_OFFSET + MAX_PROMPT_BYTES].copy_from_slice(&self.prompt);
        let crc = crc32(&out[..CRC_OFFSET]);
        out[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses the block; never panics on any input.
    pub fn decode(bytes: &[u8; CONFIG_BYTES]) -> Result<RunConfig, ConfigError> {
        if bytes[0..4] != MAGIC {
            return Err(ConfigError::NoBlock);
        }
        let stored_crc = u32::from_le_bytes([bytes[252], bytes[253], bytes[254], bytes[255]]);
        if crc32(&bytes[..CRC_OFFSET]) != stored_crc {
            return Err(ConfigError::Checksum);
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != VERSION {
            return Err(ConfigError::Version(version));
        }
        let mode = Mode::from_byte(bytes[6]).ok_or(ConfigError::Mode(bytes[6]))?;
        let prompt_len = bytes[7];
        if prompt_len as usize > MAX_PROMPT_BYTES {
            return Err(ConfigError::PromptTooLong);
        }
        let mut prompt = [0u8; MAX_PROMPT_BYTES];
        prompt.copy_from_slice(&bytes[PROMPT_OFFSET..PROMPT_OFFSET + MAX_PROMPT_BYTES]);
        Ok(RunConfig {
            mode,
            tokens: u32_at(8),
            seed: u32_at(12) as u64 | (u32_at(16) as u64) << 32,
            sampler: SamplerSettings {
                temperature_q8: u16::from_le_bytes([bytes[20], bytes[21]]),
                top_k: u16::from_le_bytes([bytes[22], bytes[23]]),
                top_p_q16: u32_at(24),
            },
            model_bytes: u32_at(28),
            prompt_len,
            prompt,
        })
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib); bitwise, small code rather than a 1 KiB table.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= byte as u32;
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLER: SamplerSettings = SamplerSettings {
        temperature_q8: 205,
        top_k: 40,
        top_p_q16: 58982,
    };

    #[test]
    fn round_trip() {
        let config =
            RunConfig::new(Mode::Story, b"Once upon a time", 64, 42, SAMPLER, 12345).unwrap();
        assert_eq!(RunConfig::decode(&config.encode()), Ok(config));
        assert_eq!(config.prompt(), b"Once upon a time");
    }

    #[test]
    fn rejects_erased_and_corrupt() {
        assert_eq!(
            RunConfig::decode(&[0xFF; CONFIG_BYTES]),
            Err(ConfigError::NoBlock)
        );
        let mut bytes = RunConfig::new(Mode::Bench, b"x", 1, 1, SAMPLER, 1)
            .unwrap()
            .encode();
        bytes[40] ^= 1;
        assert_eq!(RunConfig::decode(&bytes), Err(ConfigError::Checksum));
    }

    #[test]
    fn crc_matches_zlib() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
