//! What a model costs on the board: flash for the file, RAM for activations and the KV cache.

use crate::format::Config;
use crate::forward::arena_layout_bytes;

/// Flash and RAM a model needs with a given context length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The model file (stored as-is in XIP flash).
    pub flash_bytes: usize,
    /// Activation buffers (`i32` vectors and the int8 input buffer), alignment slack included.
    pub activation_bytes: usize,
    /// KV cache: `i16` keys and values plus one 8-byte step per (layer, position) each.
    pub kv_cache_bytes: usize,
    /// The arena a [`crate::Session`] needs: activations + KV cache.
    pub arena_bytes: usize,
    /// The context length these numbers are for.
    pub context_len: usize,
}

impl Budget {
    /// The budget of a model file of `file_bytes` with configuration `config`, run with a
    /// `context_len`-position KV cache.
    pub fn new(config: &Config, file_bytes: usize, context_len: usize) -> Budget {
        let arena_bytes = arena_layout_bytes(config, context_len);
        let kv_positions = config.n_layers * context_len;
        let kv_cache_bytes = 2 * 2 * kv_positions * config.kv_dim() + 2 * 8 * kv_positions;
        Budget {
            flash_bytes: file_bytes,
            activation_bytes: arena_bytes - kv_cache_bytes,
            kv_cache_bytes,
            arena_bytes,
            context_len,
        }
    }
}

/// Whether the firmware copies a model into SRAM at boot and runs it from there (no XIP cache
/// misses on its weights) instead of reading it in place from flash: when the file, 4 bytes of
/// alignment and the arena of the model's *full* context fit the free RAM together. The
/// firmware decides with the free RAM it measures at boot; `starmind export` reports the same
/// rule against [`Board::arena_ram_bytes`].
pub fn model_runs_from_sram(
    model_bytes: usize,
    full_context_arena_bytes: usize,
    free_ram_bytes: usize,
) -> bool {
    model_bytes
        .saturating_add(4)
        .saturating_add(full_context_arena_bytes)
        <= free_ram_bytes
}

/// Each of the two SRAM buffers through which the firmware streams the weights of a model left
/// in flash, where flash is slow (a board: [`crate::stream`]).
pub const STREAM_BLOCK_BYTES: usize = 1024;
/// Both stream buffers: taken from the free RAM before the weight copy and the arena (they may
/// shorten the context where RAM is short).
pub const STREAM_BUFFER_BYTES: usize = 2 * STREAM_BLOCK_BYTES;

/// RAM a model left in flash may fill with a copy of its weights ([`crate::Model::copy_range`]):
/// what the arena of its full context and 4 bytes of alignment leave of the free RAM (0 when
/// they do not fit: the context is never shortened for the copy). The firmware's rule at boot;
/// `starmind export` reports it against [`Board::arena_ram_bytes`].
pub fn weight_copy_room(full_context_arena_bytes: usize, free_ram_bytes: usize) -> usize {
    free_ram_bytes.saturating_sub(full_context_arena_bytes.saturating_add(4))
}

/// A board's memory as the firmware leaves it to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Board {
    pub name: &'static str,
    /// Total flash.
    pub flash_bytes: usize,
    /// Flash reserved for the firmware before the model (the model region starts at
    /// `0x1000_0000 + firmware_flash_bytes`).
    pub firmware_flash_bytes: usize,
    /// Total SRAM.
    pub ram_bytes: usize,
    /// SRAM the firmware itself uses (statics, stack, UART buffers).
    pub firmware_ram_bytes: usize,
}

impl Board {
    /// Raspberry Pi Pico: 2 MB flash, 264 KB SRAM; 256 KB flash and ~32 KB RAM for the firmware.
    pub const PICO: Board = Board {
        name: "pico",
        flash_bytes: 2 * 1024 * 1024,
        firmware_flash_bytes: 256 * 1024,
        ram_bytes: 264 * 1024,
        firmware_ram_bytes: 24 * 1024 + 8 * 1024,
    };
    /// An RP2040 board with 16 MB flash.
    pub const PICO_16MB: Board = Board {
        name: "pico-16mb",
        flash_bytes: 16 * 1024 * 1024,
        ..Board::PICO
    };

    /// Flash left for the model file.
    pub fn model_flash_bytes(&self) -> usize {
        self.flash_bytes - self.firmware_flash_bytes
    }
    /// RAM left for the arena.
    pub fn arena_ram_bytes(&self) -> usize {
        self.ram_bytes - self.firmware_ram_bytes
    }
    /// Whether `budget` fits.
    pub fn fits(&self, budget: &Budget) -> bool {
        budget.flash_bytes <= self.model_flash_bytes()
            && budget.arena_bytes <= self.arena_ram_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{FfnKind, Quant, TokenizerKind};

    fn config(n_layers: usize, dim: usize, seq_len: usize) -> Config {
        Config {
            vocab_size: 512,
            dim,
            hidden_dim: 172,
            n_layers,
            n_heads: 8,
            n_kv_heads: 4,
            seq_len,
            ffn: FfnKind::Swiglu,
            tied_embeddings: true,
            tokenizer: TokenizerKind::Bpe,
            quant: Quant::Int8,
            group_size: 0,
            eot_id: 0,
            unk_id: crate::format::NO_TOKEN,
            head_size: None,
        }
    }

    #[test]
    fn a_model_runs_from_sram_only_when_it_fits_beside_its_full_arena() {
        let free = Board::PICO.arena_ram_bytes();
        assert!(model_runs_from_sram(4_184, 3_651, free), "story-1k-sized");
        assert!(
            !model_runs_from_sram(687_472, 128_707, free),
            "the flagship"
        );
        assert!(
            model_runs_from_sram(free - 1_004, 1_000, free),
            "exactly full"
        );
        assert!(
            !model_runs_from_sram(free - 1_003, 1_000, free),
            "one byte over"
        );
        assert!(!model_runs_from_sram(usize::MAX, 1, free), "no overflow");
    }

    #[test]
    fn stories260k_fits_the_pico_at_256_not_512() {
        let c = config(5, 64, 512);
        let short = Budget::new(&c, 300_000, 256);
        let long = Budget::new(&c, 300_000, 512);
        assert_eq!(long.kv_cache_bytes, 5 * 512 * (2 * 2 * 32 + 16));
        assert!(Board::PICO.fits(&short), "{short:?}");
        assert!(!Board::PICO.fits(&long), "{long:?}");
        assert!(!Board::PICO.fits(&Budget::new(&c, 3_000_000, 64)), "flash");
        assert!(Board::PICO_16MB.fits(&Budget::new(&c, 3_000_000, 64)));
    }
}
