//! The forward pass cut between two cores ([`starmind_engine::cores`]) gives the bits of one
//! core: logits and sampled tokens, on two host threads and cut on one thread, for the golden
//! model and random models of several shapes (GQA, SwiGLU, int4, row counts that are not a
//! multiple of 8, a single row quad, a streamed vocabulary).

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use starmind_engine::cores::{Part, Serial, Threads};
use starmind_engine::format::{write_model, Quant};
use starmind_engine::quantize::quantize_model;
use starmind_engine::{Config, Cores, Model, Session};
use support::{random_model, random_token_logits, sampled_story};

/// [`Serial`], counting its joins and the joins whose two parts both did work.
#[derive(Default)]
struct Counting {
    joins: AtomicUsize,
}

impl Cores for Counting {
    fn join(&self, first: Part, second: Part) {
        self.joins.fetch_add(1, Ordering::Relaxed);
        Serial.join(first, second)
    }
}

/// Every logit of `steps` random tokens (the whole context at most) with `cores`.
fn logits_with(model: &Model, cores: Option<&dyn Cores>, steps: usize, seed: u64) -> Vec<i32> {
    let c = model.config();
    let mut arena = vec![0u8; Model::arena_bytes(&c, c.seq_len)];
    let mut session = Session::new(model, c.seq_len, &mut arena).unwrap();
    session.set_cores(cores);
    random_token_logits(&mut session, steps, seed)
}

/// The ids of one sampled story (temperature, top-k and top-p; the context slides) with `cores`.
fn story_with(model: &Model, cores: Option<&dyn Cores>, tokens: usize) -> Vec<u32> {
    let c = model.config();
    let mut arena = vec![0u8; Model::arena_bytes(&c, c.seq_len)];
    let mut session = Session::new(model, c.seq_len, &mut arena).unwrap();
    session.set_cores(cores);
    sampled_story(model, &mut session, tokens)
}

/// Two threads, and the cut on one thread, against one core; returns the joins of one pass
/// over `steps` tokens.
fn check_model(name: &str, file: &[u8], steps: usize) -> usize {
    let model = Model::parse(file).unwrap();
    let one = logits_with(&model, None, steps, 7);
    assert_eq!(
        logits_with(&model, Some(&Threads), steps, 7),
        one,
        "{name}: two threads' logits"
    );
    let counting = Counting::default();
    assert_eq!(
        logits_with(&model, Some(&counting), steps, 7),
        one,
        "{name}: the cut pass on one thread"
    );
    let tokens = 2 * model.config().seq_len + 3;
    let ids = story_with(&model, None, tokens);
    assert_eq!(ids.len(), tokens);
    assert_eq!(
        story_with(&model, Some(&Threads), tokens),
        ids,
        "{name}: two threads' sampled tokens"
    );
    counting.joins.load(Ordering::Relaxed)
}

fn model_file(cfg: Config, quant: Quant, seed: u64) -> Vec<u8> {
    write_model(&quantize_model(&random_model(cfg, seed), quant, 32)).unwrap()
}

#[test]
fn two_threads_give_the_golden_models_bits() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden");
    for name in ["story-1k.smb", "story-1k-int4.smb"] {
        let file = std::fs::read(dir.join(name)).unwrap();
        let joins = check_model(name, &file, 64);
        assert!(joins > 0, "{name}: nothing was cut");
    }
}

#[test]
fn two_threads_give_one_cores_bits_on_random_models() {
    let shapes = support::shapes();
    for (seed, (name, cfg, quant)) in shapes.into_iter().enumerate() {
        let file = model_file(cfg, quant, 100 + seed as u64);
        let joins = check_model(name, &file, cfg.seq_len);
        assert!(joins > 0, "{name}: nothing was cut");
    }
}

#[test]
fn two_threads_give_one_cores_bits_on_a_streamed_vocabulary() {
    let cfg = support::streamed_vocab_config();
    let file = model_file(cfg, Quant::Int8, 9);
    check_model("streamed", &file, cfg.seq_len);
}
