//! `starmind flash <model> --uf2 out.uf2`: the image holds the committed firmware at 0x10000000,
//! the config block at 0x1003F000 and the model at 0x10040000, in valid RP2040 UF2 blocks; a
//! model too big for the board's flash is refused.

mod bench_common;
use bench_common::*;

use std::collections::BTreeMap;

/// The committed firmware image, as the CLI embeds it.
const FIRMWARE: &[u8] = starmind::flash::FIRMWARE_IMAGE;

use starmind_engine::run_config::{Mode, RunConfig};

fn flash_of(image: &[u8]) -> BTreeMap<u32, u8> {
    let mut flash = BTreeMap::new();
    for (addr, payload) in decode_uf2(image) {
        assert_eq!(addr % 256, 0, "payloads are 256-byte aligned");
        for (i, byte) in payload.into_iter().enumerate() {
            assert!(
                flash.insert(addr + i as u32, byte).is_none(),
                "overlapping blocks at {addr:#x}"
            );
        }
    }
    flash
}

fn region(flash: &BTreeMap<u32, u8>, addr: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| {
            *flash
                .get(&(addr + i))
                .unwrap_or_else(|| panic!("missing {:#x}", addr + i))
        })
        .collect()
}

#[test]
fn uf2_holds_firmware_config_and_model() {
    let dir = scratch("uf2_image");
    let model_path = tiny_model(&dir);
    let model = std::fs::read(&model_path).unwrap();
    let output = run_in(
        &dir,
        &[
            "flash", "tiny.smb", "--uf2", "out.uf2", "--mode", "bench", "-n", "17", "--prompt",
            "Tom ran", "--seed", "7",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let image = std::fs::read(dir.join("out.uf2")).unwrap();
    let expected_blocks = FIRMWARE.len().div_ceil(256) + 1 + model.len().div_ceil(256);
    assert_eq!(image.len(), expected_blocks * 512);

    let flash = flash_of(&image);
    assert_eq!(region(&flash, 0x1000_0000, FIRMWARE.len()), FIRMWARE);
    assert_eq!(region(&flash, 0x1004_0000, model.len()), model);
    let block: [u8; 256] = region(&flash, 0x1003_F000, 256).try_into().unwrap();
    let config = RunConfig::decode(&block).expect("a valid config block");
    assert_eq!(config.mode(), Mode::Bench);
    assert_eq!(config.tokens(), 17);
    assert_eq!(config.sampler().seed, 7);
    assert_eq!(config.prompt(), b"Tom ran");
    assert_eq!(config.model_bytes() as usize, model.len());
    // Nothing outside the three regions.
    let end_of_model = 0x1004_0000 + model.len().div_ceil(256) as u32 * 256;
    assert!(flash
        .keys()
        .all(|&a| a < 0x1003_F100 || (0x1004_0000..end_of_model).contains(&a)));
}

#[test]
fn boot2_checksum_and_vector_table_are_in_place() {
    // The bootrom only runs boot2 whose CRC-32 (poly 0x04C11DB7, MSB first, no reflection) matches.
    let boot2 = &FIRMWARE[..256];
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in &boot2[..252] {
        crc ^= (byte as u32) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    assert_eq!(crc, u32::from_le_bytes(boot2[252..256].try_into().unwrap()));
    let sp = u32::from_le_bytes(FIRMWARE[256..260].try_into().unwrap());
    let reset = u32::from_le_bytes(FIRMWARE[260..264].try_into().unwrap());
    assert_eq!(sp, 0x2004_2000, "initial SP = top of the 264 KiB RAM");
    assert!(
        reset & 1 == 1 && (0x1000_0100..0x1003_F000).contains(&(reset & !1)),
        "reset vector {reset:#x}"
    );
}

#[test]
fn a_model_bigger_than_flash_is_refused() {
    let dir = scratch("uf2_oversize");
    // vocab 4000 × dim 512 int8 embedding ≈ 2 MB: more than the Pico's 1.75 MiB model region.
    std::fs::write(dir.join("big.smb"), model_file(4000, 512, 8, 1, 4, 8)).unwrap();
    let output = run_in(&dir, &["flash", "big.smb", "--uf2", "big.uf2"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("has room for 1835008 bytes") && err.contains("--board pico-16mb"),
        "{err}"
    );
    assert!(!dir.join("big.uf2").exists());

    let output = run_in(
        &dir,
        &[
            "flash",
            "big.smb",
            "--uf2",
            "big.uf2",
            "--board",
            "pico-16mb",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!decode_uf2(&std::fs::read(dir.join("big.uf2")).unwrap()).is_empty());
}

#[test]
fn the_cli_image_is_the_library_flash_map() {
    use starmind::flash::{self, ModeArg, RunArgs};
    use starmind::sampling::{SamplingArgs, StoryArgs};
    use starmind::uf2::{self, Board};

    let dir = scratch("uf2_library");
    let model = std::fs::read(tiny_model(&dir)).unwrap();
    let output = run_in(
        &dir,
        &[
            "flash", "tiny.smb", "--uf2", "cli.uf2", "--mode", "story", "--prompt", "A cat",
            "--seed", "3", "--top-k", "5",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let run = RunArgs {
        mode: ModeArg::Story,
        sampling: SamplingArgs {
            prompt: "A cat".into(),
            story: StoryArgs {
                tokens: None,
                seed: 3,
                temperature: 0.8,
                top_k: 5,
                top_p: 0.9,
            },
        },
    };
    let segments = flash::segments(&model, &run, Board::Pico).unwrap();
    let image = uf2::write(&segments);
    uf2::check(&image, &segments).unwrap();
    assert_eq!(std::fs::read(dir.join("cli.uf2")).unwrap(), image);
    let block: [u8; 256] = segments[1].data.clone().try_into().unwrap();
    let config = RunConfig::decode(&block).unwrap();
    assert_eq!(
        (config.mode(), config.tokens(), config.prompt()),
        (Mode::Story, 1024, &b"A cat"[..])
    );
    assert_eq!(config.sampler().top_k, 5);
}
