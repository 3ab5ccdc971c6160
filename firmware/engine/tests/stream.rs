//! Weights fetched through a [`WeightStream`] ([`starmind_engine::stream`]) give the bits of
//! weights read in place: logits and sampled tokens, for the golden models and random models of
//! several shapes, under cuts that make blocks and lead runs of one unit, of several, of a tail
//! quad, blocks larger than a whole matrix and leads that take all of it. The test stream only moves a block's bytes
//! in at its `wait` (the buffer holds 0xA5 before), so the engine reading a block early, or
//! restarting a buffer still in use, shows up as different logits.

mod support;

use std::path::PathBuf;

use starmind_engine::format::{write_model, FfnKind, Quant};
use starmind_engine::quantize::quantize_model;
use starmind_engine::stream::{CopyAtWait, StreamPlan, WeightStream};
use starmind_engine::{Config, Model, Session};
use support::{config, random_model, random_token_logits, sampled_story};

/// Every logit of `steps` random tokens with `stream`.
fn logits_with(model: &Model, stream: Option<&mut CopyAtWait>, steps: usize) -> Vec<i32> {
    let c = model.config();
    let mut arena = vec![0u8; Model::arena_bytes(&c, c.seq_len)];
    let mut session = Session::new(model, c.seq_len, &mut arena).unwrap();
    session.set_stream(stream.map(|s| s as &mut dyn WeightStream));
    random_token_logits(&mut session, steps, 7)
}

/// The ids of one sampled story (the context slides) with `stream`.
fn story_with(model: &Model, stream: Option<&mut CopyAtWait>, tokens: usize) -> Vec<u32> {
    let c = model.config();
    let mut arena = vec![0u8; Model::arena_bytes(&c, c.seq_len)];
    let mut session = Session::new(model, c.seq_len, &mut arena).unwrap();
    session.set_stream(stream.map(|s| s as &mut dyn WeightStream));
    sampled_story(model, &mut session, tokens)
}

/// Cuts in bytes: (streamed block, lead read in place). `unit` is the model's `4 · dim` (one
/// row quad of the `dim`-wide matrices).
fn plans(unit: usize) -> [StreamPlan; 5] {
    let plan = |block_bytes, lead_bytes| StreamPlan {
        block_bytes,
        lead_bytes,
    };
    [
        // One quad in place, then blocks of one quad.
        plan(unit, unit),
        // Everything streamed, in blocks of three quads and a bit (the bit is never used).
        plan(3 * unit + 5, 0),
        // Two quads in place, then blocks of two.
        plan(2 * unit, 2 * unit + 3),
        // A block larger than any matrix: the lead in place, then one block.
        plan(1 << 20, unit),
        // A lead longer than most matrices: those matrices are read in place whole.
        plan(unit, 1 << 16),
    ]
}

/// Every plan against no stream, on logits and on a sampled story; returns the copies started.
fn check_model(name: &str, file: &[u8], steps: usize) -> usize {
    let model = Model::parse(file).unwrap();
    let c = model.config();
    let in_place = logits_with(&model, None, steps);
    let tokens = 2 * c.seq_len + 3;
    let ids = story_with(&model, None, tokens);
    let mut starts = 0;
    for plan in plans(4 * c.dim) {
        let mut stream = CopyAtWait::new(plan);
        assert_eq!(
            logits_with(&model, Some(&mut stream), steps),
            in_place,
            "{name}: logits with {plan:?}"
        );
        assert!(
            stream
                .starts
                .iter()
                .all(|&(_, len)| len <= plan.block_bytes),
            "{name}: a block over {plan:?}"
        );
        starts += stream.starts.len();
        let mut stream = CopyAtWait::new(plan);
        assert_eq!(
            story_with(&model, Some(&mut stream), tokens),
            ids,
            "{name}: sampled tokens with {plan:?}"
        );
    }
    starts
}

fn model_file(cfg: Config, quant: Quant, seed: u64) -> Vec<u8> {
    write_model(&quantize_model(&random_model(cfg, seed), quant, 32)).unwrap()
}

#[test]
fn streamed_weights_give_the_golden_models_bits() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden");
    for name in ["story-1k.smb", "story-1k-int4.smb"] {
        let file = std::fs::read(dir.join(name)).unwrap();
        assert!(check_model(name, &file, 64) > 0, "{name}: nothing streamed");
    }
}

#[test]
fn streamed_weights_give_in_place_bits_on_random_models() {
    let shapes = support::shapes();
    for (seed, (name, cfg, quant)) in shapes.into_iter().enumerate() {
        let file = model_file(cfg, quant, 300 + seed as u64);
        assert!(
            check_model(name, &file, cfg.seq_len) > 0,
            "{name}: nothing streamed"
        );
    }
}

/// The cut itself: in a layer of dim 16 (units of 4 rows, 64 bytes) with a lead of 3 units and
/// blocks of 3. wq (4 units) reads its lead in place and streams unit 3 into buffer 0; during
/// that last block wk's first block (units 0..3) is copied ahead into buffer 1, and so on: wk,
/// wv and wo (4 units each) stream their last unit after the block copied ahead, and w1 (86 rows:
/// 21 quads and a 2-row tail quad) streams 3 units at a time from unit 0, alternating buffers.
#[test]
fn the_cut_streams_blocks_and_copies_the_next_matrix_ahead() {
    let cfg = config(40, 16, 86, 1, 2, 2, 8, FfnKind::Plain, true);
    let file = model_file(cfg, Quant::Int8, 11);
    let model = Model::parse(&file).unwrap();
    let unit = 4 * cfg.dim;
    let mut stream = CopyAtWait::new(StreamPlan {
        block_bytes: 3 * unit,
        lead_bytes: 3 * unit,
    });
    let mut arena = vec![0u8; Model::arena_bytes(&cfg, cfg.seq_len)];
    {
        let mut session = Session::new(&model, cfg.seq_len, &mut arena).unwrap();
        session.set_stream(Some(&mut stream));
        session.feed_token(3).unwrap();
    }
    // wq's block, then (for wk, wv, wo, w1) the next first block ahead and, but for w1, the
    // last unit.
    let mut want = vec![(0, unit)];
    for _ in 0..3 {
        want.extend([(1, 3 * unit), (0, unit)]);
    }
    // w1's units 0..3 ahead in buffer 1, then 3..6 in 0, …, 18..21 in 1, the tail (21) in 0.
    for slot in [1, 0, 1, 0, 1, 0, 1] {
        want.push((slot, 3 * unit));
    }
    want.push((0, 2 * cfg.dim));
    assert_eq!(&stream.starts[..want.len()], &want[..]);
}

#[test]
fn a_streamed_vocabulary_streams_its_classifier_chunks_and_keeps_its_bits() {
    let cfg = support::streamed_vocab_config();
    let file = model_file(cfg, Quant::Int8, 9);
    assert!(check_model("streamed vocabulary", &file, cfg.seq_len) > 0);
    // The sampled story's chunks went through the stream: a block per 256-row chunk, 33 a
    // draw (one pass each with top-k/top-p), beside the few that the layers' small matrices make.
    let model = Model::parse(&file).unwrap();
    let unit = 4 * cfg.dim;
    let mut with_chunks = CopyAtWait::new(StreamPlan {
        block_bytes: 64 * unit,
        lead_bytes: 0,
    });
    story_with(&model, Some(&mut with_chunks), 2);
    let chunk_blocks = (cfg.vocab_size / 4).div_ceil(64);
    assert!(
        with_chunks.starts.len() >= 2 * chunk_blocks,
        "{} copies",
        with_chunks.starts.len()
    );
}
