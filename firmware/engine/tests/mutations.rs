//! Damaged model files: every one must give a clean typed error (or, where the damage is only in
//! weight values, a model that runs) — never a panic.

use starmind_engine::format::{self, fix_crc, FormatError, HEADER_BYTES, SECTION_ENTRY_BYTES};
use starmind_engine::{Model, Sampler, SamplerConfig, Session};
use std::path::PathBuf;

fn golden(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden")
        .join(name);
    std::fs::read(path).unwrap()
}

fn set_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Parses, and if that succeeds exercises what the firmware would do with the model.
fn exercise(bytes: &[u8]) -> Result<(), FormatError> {
    let model = Model::parse(bytes)?;
    let config = model.config();
    let mut ids = [0u32; 32];
    let _ = model.encode(b"Once upon a time, <|endoftext|> \xff\xfe zebra", &mut ids);
    for id in 0..config.vocab_size as u32 + 3 {
        let _ = model.token_bytes(id);
    }
    let ctx = config.seq_len.min(8);
    let mut arena = vec![0u8; Model::arena_bytes(&config, ctx)];
    let mut session = Session::new(&model, ctx, &mut arena).unwrap();
    let mut sampler = Sampler::new(SamplerConfig {
        temperature_q8: 256,
        top_k: 5,
        top_p_q16: 50_000,
        seed: 3,
    });
    let mut token = config.eot_id;
    while !session.is_full() {
        token = sampler.sample(session.feed(token).unwrap());
    }
    Ok(())
}

#[test]
fn the_golden_files_run() {
    for name in ["story-1k.smb", "story-1k-int4.smb"] {
        exercise(&golden(name)).unwrap();
    }
}

#[test]
fn every_truncation_is_refused() {
    let file = golden("story-1k.smb");
    for len in 0..file.len() {
        let err = Model::parse(&file[..len]).expect_err("a truncated file must not parse");
        assert!(
            matches!(err, FormatError::Truncated { .. } | FormatError::BadMagic),
            "len {len}: {err:?}"
        );
    }
}

#[test]
fn extra_bytes_and_bad_header_fields_are_refused() {
    let file = golden("story-1k.smb");
    let mut longer = file.clone();
    longer.push(0);
    assert!(matches!(
        Model::parse(&longer),
        Err(FormatError::LengthMismatch { .. })
    ));

    let mut bad_magic = file.clone();
    bad_magic[0] ^= 1;
    assert_eq!(Model::parse(&bad_magic).unwrap_err(), FormatError::BadMagic);

    let mut bad_version = file.clone();
    for v in [0, format::VERSION + 1] {
        set_u32(&mut bad_version, 4, v);
        assert_eq!(
            Model::parse(&bad_version).unwrap_err(),
            FormatError::UnsupportedVersion(v)
        );
    }

    let mut bad_crc = file.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x40;
    assert!(matches!(
        Model::parse(&bad_crc),
        Err(FormatError::ChecksumMismatch { .. })
    ));
}

#[test]
fn bad_configurations_are_refused() {
    let file = golden("story-1k.smb");
    // (header offset, value): vocab 0, dim 0, hidden 0, layers 0, heads 0, kv heads 0, seq_len 0,
    // huge dims, heads not dividing dim, unknown enums, eot out of range, wrong section count,
    // a head size the sections do not have.
    let cases = [
        (16, 0),
        (20, 0),
        (24, 0),
        (28, 0),
        (32, 0),
        (36, 0),
        (40, 0),
        (16, 70_000),
        (20, 1 << 20),
        (28, 1000),
        (32, 3),
        (36, 3),
        (44, 9),
        (48, 2),
        (52, 7),
        (56, 0),
        (60, 32),
        (64, 10_000),
        (68, 64),
        (72, 1000),
        (72, u32::MAX),
        (20, 16),
        (40, 65),
        // head_size: too large, or another width than the sections have.
        (76, 257),
        (76, u32::MAX),
        (76, 3),
    ];
    for (at, value) in cases {
        let mut bytes = file.clone();
        set_u32(&mut bytes, at, value);
        fix_crc(&mut bytes);
        let err = Model::parse(&bytes).expect_err("a bad configuration must not parse");
        eprintln!("header[{at}] = {value}: {err}");
    }
}

#[test]
fn bad_section_tables_are_refused() {
    let file = golden("story-1k.smb");
    let n_sections = u32::from_le_bytes(file[72..76].try_into().unwrap()) as usize;
    for index in 0..n_sections {
        let entry = HEADER_BYTES + index * SECTION_ENTRY_BYTES;
        for (field, value) in [
            (0, 99),
            (4, 7),
            (8, u32::MAX - 3),
            (8, 0x7FFF_FFF0),
            (8, 2),
            (8, 0),
            (12, u32::MAX),
            (12, 1 << 30),
        ] {
            let mut bytes = file.clone();
            set_u32(&mut bytes, entry + field, value);
            fix_crc(&mut bytes);
            match exercise(&bytes) {
                Err(e) => eprintln!("section {index} field {field} = {value:#x}: {e}"),
                // Only an empty section may move (offset 0 and a length of 0 still lie inside).
                Ok(()) => assert!(
                    u32::from_le_bytes(file[entry + 12..entry + 16].try_into().unwrap()) == 0
                        || field == 12,
                    "section {index} field {field} = {value:#x} parsed"
                ),
            }
        }
    }
}

#[test]
fn vocabulary_damage_is_refused() {
    let file = golden("story-1k.smb");
    let offsets_at = u32::from_le_bytes(
        file[HEADER_BYTES + 8..HEADER_BYTES + 12]
            .try_into()
            .unwrap(),
    ) as usize;
    for (i, value) in [(0, 1), (1, u32::MAX), (5, 0), (64, 0), (64, 100_000)] {
        let mut bytes = file.clone();
        set_u32(&mut bytes, offsets_at + 4 * i, value);
        fix_crc(&mut bytes);
        assert_eq!(
            Model::parse(&bytes).unwrap_err(),
            FormatError::BadVocab,
            "offset {i} = {value}"
        );
    }
}

#[test]
fn random_bit_flips_never_panic() {
    for name in ["story-1k.smb", "story-1k-int4.smb"] {
        let file = golden(name);
        let mut rng = 0x5EED_u64;
        let (mut refused, mut ran) = (0, 0);
        for round in 0..3000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mut bytes = file.clone();
            for k in 0..1 + round % 4 {
                let bit = (rng >> (8 * k)) as usize % (bytes.len() * 8);
                bytes[bit / 8] ^= 1 << (bit % 8);
            }
            assert!(
                Model::parse(&bytes).is_err(),
                "a bit flip must break the CRC"
            );
            fix_crc(&mut bytes);
            match exercise(&bytes) {
                Ok(()) => ran += 1,
                Err(_) => refused += 1,
            }
        }
        eprintln!("{name}: {refused} refused, {ran} ran (flips in weight values)");
    }
}

#[test]
fn a_multiplier_shift_outside_the_spec_is_refused() {
    for name in ["story-1k.smb", "story-1k-int4.smb"] {
        let good = golden(name);
        let model = Model::parse(&good).unwrap();
        // Byte offsets (in the file) of the first row multiplier of the embedding, layer 0's wq
        // and the last layer's w2.
        let at = |scales: &[u8]| scales.as_ptr() as usize - good.as_ptr() as usize;
        let last = model.config().n_layers - 1;
        let places = [
            at(model.token_embedding().row_scales),
            at(model.layer(0).wq.row_scales),
            at(model.layer(last).w2.row_scales) + 8,
        ];
        for place in places {
            for shift in [-1i32, -62, 63, i32::MIN, i32::MAX] {
                let mut bad = good.clone();
                set_u32(&mut bad, place + 4, shift as u32);
                fix_crc(&mut bad);
                match Model::parse(&bad) {
                    Err(FormatError::BadMultiplier { shift: s, .. }) => assert_eq!(s, shift),
                    other => panic!("{name} at {place}, shift {shift}: {other:?}"),
                }
            }
            // The bounds themselves are fine.
            for shift in [0, 62] {
                let mut edge = good.clone();
                set_u32(&mut edge, place + 4, shift);
                fix_crc(&mut edge);
                assert!(Model::parse(&edge).is_ok(), "{name} shift {shift}");
            }
        }
    }
}
