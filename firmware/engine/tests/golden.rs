//! Golden outputs of the checked-in model file `tests/golden/story-1k.smb` (story-1k trained by
//! `starmind train`, exported int8), and the int4 export of the same checkpoint; each also as
//! format version 1 wrote it (`*-v1.smb`), which must give the same outputs. Any change to the
//! integer arithmetic, the sampler or the tokenizer changes these token ids or the logits hash.
//!
//! Regenerate the pinned outputs (after an intended arithmetic change) with
//! `UPDATE_GOLDEN=1 cargo test -p starmind-engine --features std --test golden`; regenerate the
//! model files themselves as described in tests/golden/README.md.

use starmind_engine::{format, Model, Sampler, SamplerConfig, Session};
use std::fmt::Write;
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

/// FNV-1a over the little-endian bytes of every logit seen.
fn fnv(hash: &mut u64, logits: &[i32]) {
    for l in logits {
        for b in l.to_le_bytes() {
            *hash = (*hash ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// Runs the pinned scenarios and renders them as text.
fn outputs(file: &[u8]) -> String {
    let model = Model::parse(file).expect("golden file parses");
    let ctx = model.config().seq_len;
    let mut arena = vec![0u8; Model::arena_bytes(&model.config(), ctx)];
    let mut out = String::new();
    let prompt = b"Once upon a time";
    let mut prompt_ids = [0u32; 64];
    let n = model.encode(prompt, &mut prompt_ids).unwrap();
    writeln!(out, "prompt_ids {:?}", &prompt_ids[..n]).unwrap();
    let scenarios = [
        ("greedy", SamplerConfig::GREEDY),
        (
            "t0.8_seed42",
            SamplerConfig {
                temperature_q8: 205,
                top_k: 0,
                top_p_q16: 1 << 16,
                seed: 42,
            },
        ),
        (
            "t1.0_k10_p0.9_seed7",
            SamplerConfig {
                temperature_q8: 256,
                top_k: 10,
                top_p_q16: 58_982,
                seed: 7,
            },
        ),
    ];
    for (name, sampler_config) in scenarios {
        let mut session = Session::new(&model, ctx, &mut arena).unwrap();
        let mut sampler = Sampler::new(sampler_config);
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        let mut logits = session.prefill(&prompt_ids[..n]).unwrap().to_vec();
        fnv(&mut hash, &logits);
        let mut ids = Vec::new();
        while !session.is_full() {
            let next = sampler.sample(&logits);
            ids.push(next);
            logits = session.feed(next).unwrap().to_vec();
            fnv(&mut hash, &logits);
        }
        let text: Vec<u8> = ids
            .iter()
            .flat_map(|&id| model.token_bytes(id).to_vec())
            .collect();
        writeln!(out, "{name} ids {ids:?}").unwrap();
        writeln!(out, "{name} text {:?}", String::from_utf8_lossy(&text)).unwrap();
        writeln!(out, "{name} logits_fnv1a {hash:016x}").unwrap();
    }
    out
}

/// `{model_name}.smb` is `{model_name}-v1.smb` (the file as format version 1 wrote it)
/// upgraded to the current version ([`format::upgrade`]); both give the pinned outputs.
fn check(model_name: &str) {
    let dir = golden_dir();
    let v1 = std::fs::read(dir.join(format!("{model_name}-v1.smb"))).unwrap();
    assert_eq!(Model::parse(&v1).unwrap().version(), 1);
    let upgraded = format::upgrade(&v1).unwrap();
    let current_path = dir.join(format!("{model_name}.smb"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&current_path, &upgraded).unwrap();
    }
    let file = std::fs::read(&current_path).unwrap();
    assert!(
        file == upgraded,
        "{model_name}.smb is not {model_name}-v1.smb upgraded (UPDATE_GOLDEN=1 to rewrite it)"
    );
    assert_eq!(Model::parse(&file).unwrap().version(), format::VERSION);
    let got = outputs(&file);
    assert_eq!(
        outputs(&v1),
        got,
        "version 1 of {model_name} and its upgrade give different outputs"
    );
    let expected_path = dir.join(format!("{model_name}.expected.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&expected_path)
        .expect("pinned outputs (UPDATE_GOLDEN=1 to create)");
    assert_eq!(got, want, "golden outputs of {model_name} changed");
}

#[test]
fn story_1k_int8_outputs_are_pinned() {
    check("story-1k");
}

#[test]
fn story_1k_int4_outputs_are_pinned() {
    check("story-1k-int4");
}
