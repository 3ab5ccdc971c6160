//! `starmind flash` without a debug probe, and with a bad model file: a clear error, a non-zero
//! exit, no panic and no file written.

mod bench_common;
use bench_common::*;

fn listing(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
}

#[test]
fn no_probe_fails_cleanly_and_suggests_uf2() {
    let dir = scratch("flash_no_probe");
    let model = tiny_model(&dir);
    let before = listing(&dir);
    let output = run_in(&dir, &["flash", model.to_str().unwrap()]);
    let err = stderr(&output);
    assert!(!output.status.success(), "flash without a probe must fail");
    assert_eq!(
        output.status.code(),
        Some(1),
        "a clean error, not a panic: {err}"
    );
    assert!(err.contains("no debug probe found"), "{err}");
    assert!(
        err.contains("--uf2"),
        "the message should suggest --uf2: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(listing(&dir), before, "nothing may be written");
}

#[test]
fn a_probe_that_is_not_there_is_a_clean_error() {
    let dir = scratch("flash_wrong_probe");
    let model = tiny_model(&dir);
    let output = run_in(
        &dir,
        &["flash", model.to_str().unwrap(), "--probe", "2e8a:000c"],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no debug probe matches --probe 2e8a:000c"),
        "{err}"
    );
}

#[test]
fn a_corrupt_model_is_refused_before_anything_is_written() {
    let dir = scratch("flash_bad_model");
    let model = dir.join("bad.smb");
    let mut bytes = model_file(64, 16, 32, 1, 2, 64);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&model, bytes).unwrap();
    let output = run_in(&dir, &["flash", "bad.smb", "--uf2", "out.uf2"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("reading model file bad.smb") && err.contains("checksum"),
        "{err}"
    );
    assert!(!dir.join("out.uf2").exists());
}

#[test]
fn uf2_drive_must_be_a_bootloader_drive() {
    let dir = scratch("flash_uf2_drive");
    let model = tiny_model(&dir);
    let drive = dir.join("not-a-pico");
    std::fs::create_dir(&drive).unwrap();
    let output = run_in(
        &dir,
        &[
            "flash",
            model.to_str().unwrap(),
            "--uf2-drive",
            drive.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("INFO_UF2.TXT"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read_dir(&drive).unwrap().count(), 0);

    std::fs::write(
        drive.join("INFO_UF2.TXT"),
        "UF2 Bootloader v3.0\nBoard-ID: RPI-RP2\n",
    )
    .unwrap();
    let output = run_in(
        &dir,
        &[
            "flash",
            model.to_str().unwrap(),
            "--uf2-drive",
            drive.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let image = std::fs::read(drive.join("starmind.uf2")).unwrap();
    assert!(!decode_uf2(&image).is_empty());
}
