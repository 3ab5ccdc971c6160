//! UF2 images for the RP2040's USB mass-storage bootloader (drag and drop onto `RPI-RP2`).
//!
//! Format (github.com/microsoft/uf2): 512-byte blocks, each carrying 256 payload bytes for one
//! flash address, with the RP2040 family id so the bootloader accepts them. One image holds the
//! whole flash map of docs/memory-map.md: firmware at 0x10000000, the config block at 0x1003F000
//! and the model file at 0x10040000.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context as _};

pub use starmind_engine::run_config::{CONFIG_ADDR, CONFIG_BYTES, FLASH_BASE, MODEL_ADDR};

const MAGIC_START0: u32 = 0x0A32_4655;
const MAGIC_START1: u32 = 0x9E5D_5157;
const MAGIC_END: u32 = 0x0AB1_6F30;
/// Flag: the `file_size` word holds a family id.
const FLAG_FAMILY_ID_PRESENT: u32 = 0x0000_2000;
/// The RP2040's UF2 family id.
pub const RP2040_FAMILY_ID: u32 = 0xE48B_FF56;
/// Bytes of one UF2 block.
pub const BLOCK_BYTES: usize = 512;
/// Payload bytes per block (the RP2040 bootloader wants 256).
pub const PAYLOAD_BYTES: usize = 256;

/// The board, which fixes the flash size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Board {
    /// Raspberry Pi Pico: 2 MiB flash.
    Pico,
    /// RP2040 boards with 16 MiB flash (e.g. Pimoroni Pico LiPo 16MB).
    #[value(name = "pico-16mb")]
    Pico16Mb,
}

impl Board {
    /// Flash size in bytes.
    pub fn flash_bytes(self) -> u32 {
        match self {
            Board::Pico => 2 * 1024 * 1024,
            Board::Pico16Mb => 16 * 1024 * 1024,
        }
    }

    /// Bytes available to the model file.
    pub fn model_capacity_bytes(self) -> u32 {
        FLASH_BASE + self.flash_bytes() - MODEL_ADDR
    }
}

/// One contiguous piece of the flash image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// XIP address of the first byte.
    pub addr: u32,
    /// The bytes.
    pub data: Vec<u8>,
}

/// The three segments of the flash map, checked to fit their regions on `board`.
pub fn flash_segments(
    firmware: &[u8],
    config: &[u8; CONFIG_BYTES],
    model: &[u8],
    board: Board,
) -> anyhow::Result<Vec<Segment>> {
    let firmware_room = (CONFIG_ADDR - FLASH_BASE) as usize;
    ensure!(
        firmware.len() <= firmware_room,
        "firmware image is {} bytes, more than the {firmware_room} bytes before the config block",
        firmware.len()
    );
    let capacity = board.model_capacity_bytes() as usize;
    if model.len() > capacity {
        bail!(
            "model file is {} bytes but the {} has room for {capacity} bytes at {MODEL_ADDR:#010x} \
             ({} MiB flash); use a smaller model{}",
            model.len(),
            board_name(board),
            board.flash_bytes() >> 20,
            if board == Board::Pico { " or --board pico-16mb" } else { "" }
        );
    }
    Ok(vec![
        Segment {
            addr: FLASH_BASE,
            data: firmware.to_vec(),
        },
        Segment {
            addr: CONFIG_ADDR,
            data: config.to_vec(),
        },
        Segment {
            addr: MODEL_ADDR,
            data: model.to_vec(),
        },
    ])
}

fn board_name(board: Board) -> &'static str {
    match board {
        Board::Pico => "Pico",
        Board::Pico16Mb => "16 MiB board",
    }
}

/// Encodes segments as UF2: 256-byte payloads (the last one of each segment zero-padded),
/// numbered in address order.
pub fn write(segments: &[Segment]) -> Vec<u8> {
    let chunks: Vec<(u32, &[u8])> = segments
        .iter()
        .flat_map(|s| {
            s.data
                .chunks(PAYLOAD_BYTES)
                .enumerate()
                .map(move |(i, c)| (s.addr + (i * PAYLOAD_BYTES) as u32, c))
        })
        .collect();
    let total = chunks.len() as u32;
    let mut out = Vec::with_capacity(chunks.len() * BLOCK_BYTES);
    for (number, (addr, payload)) in chunks.into_iter().enumerate() {
        let mut block = [0u8; BLOCK_BYTES];
        let words = [
            MAGIC_START0,
            MAGIC_START1,
            FLAG_FAMILY_ID_PRESENT,
            addr,
            PAYLOAD_BYTES as u32,
            number as u32,
            total,
            RP2040_FAMILY_ID,
        ];
        for (i, word) in words.iter().enumerate() {
            block[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
        }
        block[32..32 + payload.len()].copy_from_slice(payload);
        block[BLOCK_BYTES - 4..].copy_from_slice(&MAGIC_END.to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}

/// One decoded UF2 block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub flags: u32,
    pub target_addr: u32,
    pub block_no: u32,
    pub num_blocks: u32,
    pub family_id: u32,
    pub payload: Vec<u8>,
}

/// Decodes every block, checking magics, payload size and numbering.
pub fn read(bytes: &[u8]) -> anyhow::Result<Vec<Block>> {
    ensure!(
        bytes.len().is_multiple_of(BLOCK_BYTES),
        "UF2 length {} is not a multiple of 512",
        bytes.len()
    );
    let mut blocks = Vec::new();
    for (index, raw) in bytes.chunks_exact(BLOCK_BYTES).enumerate() {
        let word = |i: usize| u32::from_le_bytes(raw[i * 4..i * 4 + 4].try_into().unwrap());
        ensure!(
            word(0) == MAGIC_START0 && word(1) == MAGIC_START1 && word(127) == MAGIC_END,
            "block {index}: bad magic"
        );
        let payload_size = word(4) as usize;
        ensure!(
            payload_size <= 476,
            "block {index}: payload size {payload_size}"
        );
        let block = Block {
            flags: word(2),
            target_addr: word(3),
            block_no: word(5),
            num_blocks: word(6),
            family_id: word(7),
            payload: raw[32..32 + payload_size].to_vec(),
        };
        ensure!(
            block.block_no == index as u32,
            "block {index}: numbered {}",
            block.block_no
        );
        blocks.push(block);
    }
    let total = blocks.len() as u32;
    ensure!(
        blocks.iter().all(|b| b.num_blocks == total),
        "block count does not match numBlocks"
    );
    Ok(blocks)
}

/// Flash contents a UF2 file describes: address → byte (sparse).
pub fn to_flash(bytes: &[u8]) -> anyhow::Result<BTreeMap<u32, u8>> {
    let mut flash = BTreeMap::new();
    for block in read(bytes).context("reading UF2")? {
        for (i, &byte) in block.payload.iter().enumerate() {
            flash.insert(block.target_addr + i as u32, byte);
        }
    }
    Ok(flash)
}

/// Checks that `image` decodes to exactly `segments` (a self-check after writing).
pub fn check(image: &[u8], segments: &[Segment]) -> anyhow::Result<()> {
    let flash = to_flash(image)?;
    let expected: usize = segments
        .iter()
        .map(|s| s.data.len().div_ceil(PAYLOAD_BYTES) * PAYLOAD_BYTES)
        .sum();
    ensure!(
        flash.len() == expected,
        "UF2 covers {} bytes, expected {expected}",
        flash.len()
    );
    for segment in segments {
        for (i, &byte) in segment.data.iter().enumerate() {
            ensure!(
                flash.get(&(segment.addr + i as u32)) == Some(&byte),
                "UF2 differs at {:#010x}",
                segment.addr + i as u32
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> [u8; 256] {
        let mut c = [0u8; 256];
        c[0] = 7;
        c
    }

    #[test]
    fn blocks_are_numbered_addressed_and_tagged() {
        let firmware = vec![0xAB; 600];
        let model: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let image = write(&flash_segments(&firmware, &config(), &model, Board::Pico).unwrap());
        let blocks = read(&image).unwrap();
        // 600 → 3 blocks, 256 → 1, 1000 → 4.
        assert_eq!(blocks.len(), 8);
        let addrs: Vec<u32> = blocks.iter().map(|b| b.target_addr).collect();
        assert_eq!(
            addrs,
            [
                0x1000_0000,
                0x1000_0100,
                0x1000_0200,
                0x1003_F000,
                0x1004_0000,
                0x1004_0100,
                0x1004_0200,
                0x1004_0300
            ]
        );
        for block in &blocks {
            assert_eq!(block.flags, FLAG_FAMILY_ID_PRESENT);
            assert_eq!(block.family_id, RP2040_FAMILY_ID);
            assert_eq!(block.num_blocks, 8);
            assert_eq!(block.payload.len(), 256);
        }
        assert_eq!(
            u32::from_le_bytes(image[0..4].try_into().unwrap()),
            0x0A32_4655
        );
        assert_eq!(
            u32::from_le_bytes(image[508..512].try_into().unwrap()),
            0x0AB1_6F30
        );
    }

    #[test]
    fn round_trips_to_the_flash_image() {
        let firmware: Vec<u8> = (0..777u32).map(|i| (i * 7) as u8).collect();
        let model: Vec<u8> = (0..3000u32).map(|i| (i * 13) as u8).collect();
        let flash = to_flash(&write(
            &flash_segments(&firmware, &config(), &model, Board::Pico).unwrap(),
        ))
        .unwrap();
        for (i, &b) in firmware.iter().enumerate() {
            assert_eq!(flash[&(FLASH_BASE + i as u32)], b);
        }
        for (i, &b) in config().iter().enumerate() {
            assert_eq!(flash[&(CONFIG_ADDR + i as u32)], b);
        }
        for (i, &b) in model.iter().enumerate() {
            assert_eq!(flash[&(MODEL_ADDR + i as u32)], b);
        }
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let fits = vec![0u8; Board::Pico.model_capacity_bytes() as usize];
        assert!(flash_segments(&[0; 512], &config(), &fits, Board::Pico).is_ok());
        let too_big = vec![0u8; fits.len() + 1];
        let err = flash_segments(&[0; 512], &config(), &too_big, Board::Pico)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pico-16mb"), "{err}");
        assert!(flash_segments(&[0; 512], &config(), &too_big, Board::Pico16Mb).is_ok());
        let firmware = vec![0u8; 0x3F001];
        assert!(flash_segments(&firmware, &config(), &[], Board::Pico).is_err());
    }

    #[test]
    fn rejects_corrupt_images() {
        let mut image =
            write(&flash_segments(&[1; 300], &config(), &[2; 10], Board::Pico).unwrap());
        image[512] ^= 0xFF; // block 1's magic
        assert!(read(&image).is_err());
    }
}
