//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the same code the
//! fuzz targets run (`fuzz/fuzz_targets/bodies.rs`), so what fuzzing found stays fixed on every
//! `cargo test`, without nightly or libFuzzer.

#[allow(dead_code)]
mod bodies {
    include!("../fuzz/fuzz_targets/bodies.rs");
}

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{}: a committed corpus", dir.display());
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "{} panics", file.display());
    }
}

#[test]
fn config_json_corpus() {
    replay("config_json", bodies::config_json);
}

#[test]
fn tokenizer_files_corpus() {
    replay("tokenizer_files", bodies::tokenizer_files);
}
